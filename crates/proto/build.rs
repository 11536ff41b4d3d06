//! Compiles `proto/*.proto` with protox (pure Rust), so no system `protoc` is needed. The
//! control-plane service (`prewarm.proto`) is generated only with the `grpc` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let store = root.join("store.proto");
    let wire = root.join("prewarm.proto");
    for f in [&store, &wire] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(protox::compile([&store], [&root])?)?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(protox::compile([&wire], [&root])?)?;
    }
    Ok(())
}
