//! Not a fuzz target: writes the seed corpora of every target (real objects made through the
//! crates' own encoders, real server answers, the first rows of the shared traces) under
//! `$PREWARM_FUZZ_SEEDS` (default `corpus/`), one directory per target, then exits.
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build -a gen_seeds
//! PREWARM_FUZZ_SEEDS=corpus target/x86_64-unknown-linux-gnu/release/gen_seeds -runs=1
//! ```

#![no_main]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use prewarm_core::{ChunkHash, Version};
use prewarm_fuzz::{
    DirFixture, INDEX_MAGIC, MANIFEST_MAGIC, MemFixture, Script, TOKEN, frame_bytes, hashes_body,
    located_body, plain_body, resource, seal, segment, write_seeds,
};
use prewarm_store::{ChunkIndex, Manifest};
use prewarm_transfer::frame::{Kind, MAGIC};

type Seeds = Vec<(String, Vec<u8>)>;

fn with(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(body);
    v
}

fn manifest_seeds(rt: &tokio::runtime::Runtime, mem: &MemFixture) -> Seeds {
    let m = &mem.manifest;
    let full = m.encode();
    let body = plain_body(&full)
        .expect("a small manifest is stored plain")
        .to_vec();
    // A next version, stored as a delta against the fixture (its last chunk replaced).
    let mut next = m.clone();
    next.state.version = Version::new(2).expect("non-zero");
    next.parent = Some(m.state.version);
    let last = next.chunks.last_mut().expect("chunks");
    last.hash = ChunkHash::of(b"replaced");
    let delta = next
        .encode_delta(m)
        .expect("a one-chunk change is stored as a delta");
    // A directory snapshot (a tree with a file, a subdirectory and a symlink).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("a.txt"), b"alpha ".repeat(50)).expect("write");
    std::fs::write(dir.path().join("sub/b.bin"), [7u8; 300]).expect("write");
    std::os::unix::fs::symlink("a.txt", dir.path().join("link")).expect("symlink");
    let tree = rt.block_on(async {
        let store = mem.store.clone();
        let r = prewarm_core::ResourceId::new("fuzz/tree").expect("id");
        let out = prewarm_snapshot::Snapshotter::new(store.clone())
            .with_chunker(prewarm_fuzz::chunker())
            .snapshot_path(&r, dir.path())
            .await
            .expect("directory snapshot");
        store
            .manifest(&out.committed.state)
            .await
            .expect("manifest")
    });
    let tree_bytes = tree.encode();
    // A manifest large enough to be stored compressed (one chunk repeated).
    let mut big = m.clone();
    let c = big.chunks[0];
    big.chunks = (0..120)
        .map(|i| {
            let mut x = c;
            x.offset = i * u64::from(c.length);
            x
        })
        .collect();
    big.logical_size = 120 * u64::from(c.length);
    let big_bytes = big.encode();
    assert_eq!(big_bytes[6] & 1, 1, "stored compressed");
    assert_eq!(Manifest::decode(&big_bytes).expect("decodes"), big);
    let index = ChunkIndex::encode(mem.store.index().packs());
    let index_body = plain_body(&index)
        .expect("a small index is stored plain")
        .to_vec();
    vec![
        ("full".into(), with(&[0], &full)),
        ("full_fixed".into(), with(&[1], &full)),
        ("body_plain".into(), with(&[2], &body)),
        ("body_zstd".into(), with(&[3], &body)),
        ("delta".into(), with(&[0], &delta)),
        ("delta_fixed".into(), with(&[1], &delta)),
        ("tree".into(), with(&[0], &tree_bytes)),
        (
            "tree_body".into(),
            with(&[2], plain_body(&tree_bytes).expect("plain")),
        ),
        ("compressed".into(), with(&[1], &big_bytes)),
        (
            "format1".into(),
            with(&[0], &seal(MANIFEST_MAGIC, 1, 0, &body)),
        ),
        ("index".into(), with(&[0], &index)),
        ("index_fixed".into(), with(&[1], &index)),
        ("index_body".into(), with(&[4], &index_body)),
        (
            "index_v1".into(),
            with(&[1], &seal(INDEX_MAGIC, 1, 0, &index_body)),
        ),
    ]
}

fn chunk_seed(codec: u8, raw_len: u32, stored: &[u8]) -> Vec<u8> {
    let mut v = vec![2, codec];
    v.extend_from_slice(&raw_len.to_le_bytes());
    v.extend_from_slice(stored);
    v
}

fn pack_seeds(dir: &DirFixture) -> Seeds {
    let pack = std::fs::read(&dir.pack_path).expect("pack file");
    let n = pack.len();
    let tlen = u32::from_le_bytes(pack[n - 8..n - 4].try_into().expect("4")) as usize;
    let start = n - 8 - tlen;
    let mut wrapped = vec![1];
    wrapped.extend_from_slice(&((start - 8) as u16).to_le_bytes());
    wrapped.extend_from_slice(&pack[8..start]);
    wrapped.extend_from_slice(&pack[start..n - 8]);
    let mut seeds: Seeds = vec![
        ("pack".into(), with(&[0], &pack)),
        ("pack_wrapped".into(), wrapped),
    ];
    for (i, l) in dir.locs.iter().enumerate() {
        let stored = &pack[l.offset as usize..(l.offset + u64::from(l.stored_length)) as usize];
        seeds.push((
            format!("chunk_{i}"),
            chunk_seed(l.codec.to_u8(), l.raw_length, stored),
        ));
    }
    // Decompression bombs: frames far larger than the length recorded for them, one past
    // the 16 MiB chunk limit; and a legitimate 1 MiB chunk.
    let zeros = |n: usize| zstd::bulk::compress(&vec![0u8; n], 19).expect("zstd");
    seeds.push((
        "bomb_1mib_as_4k".into(),
        chunk_seed(1, 4096, &zeros(1 << 20)),
    ));
    seeds.push((
        "bomb_17mib_as_16mib".into(),
        chunk_seed(1, 16 << 20, &zeros(17 << 20)),
    ));
    seeds.push(("zeros_1mib".into(), chunk_seed(1, 1 << 20, &zeros(1 << 20))));
    seeds
}

/// The stream a client sends to fetch the fixture state: hello, the manifest (request 1),
/// every chunk (request 2).
fn client_stream(mem: &MemFixture, token: Option<&str>) -> Vec<u8> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(token.unwrap_or("").as_bytes());
    let mut v = frame_bytes(Kind::Hello, 0, &hello);
    let mut req = 0u64.to_le_bytes().to_vec();
    req.extend_from_slice(resource().as_str().as_bytes());
    v.extend(frame_bytes(Kind::Manifest, 1, &req));
    v.extend(frame_bytes(
        Kind::Chunks,
        2,
        &hashes_body(&mem.manifest.chunks),
    ));
    v
}

fn data_plane_seeds(rt: &tokio::runtime::Runtime, mem: &MemFixture) -> Seeds {
    let stream = client_stream(mem, None);
    // The real server's answer to it: what the client mode starts from.
    let srv = Arc::new(prewarm_transfer::DataServer::new(
        mem.store.clone(),
        None,
        "fuzz".into(),
        &prewarm_metrics::Registry::default(),
    ));
    let script = Script::new(&stream, 0);
    let out = script.out.clone();
    rt.block_on(srv.handle(prewarm_transfer::runs::Plain(script), "seed"));
    let answer = out.lock().expect("not poisoned").clone();
    assert!(answer.len() > 200, "the server answered");
    let mut other = frame_bytes(Kind::Hello, 0, MAGIC);
    let mut req = 1u64.to_le_bytes().to_vec();
    req.extend_from_slice(b"fuzz/none");
    other.extend(frame_bytes(Kind::Manifest, 5, &req));
    other.extend(frame_bytes(Kind::Chunks, 6, &[9u8; 32]));
    other.extend(frame_bytes(Kind::Locate, 7, b""));
    vec![
        ("readers_client".into(), with(&[0, 0], &stream)),
        ("readers_server".into(), with(&[0, 5], &answer)),
        ("server".into(), with(&[1, 0], &stream)),
        ("server_partial_reads".into(), with(&[1, 7], &stream)),
        ("server_unknown".into(), with(&[1, 0], &other)),
        (
            "server_token".into(),
            with(&[2, 0], &client_stream(mem, Some(TOKEN))),
        ),
        ("client".into(), with(&[3, 0], &answer)),
    ]
}

fn pack_channel_seeds(dir: &DirFixture) -> Seeds {
    let mut script = vec![0];
    script.extend(segment(0, &frame_bytes(Kind::HelloOk, 0, b"fuzz")));
    script.extend(segment(
        1,
        &frame_bytes(Kind::PackFds, 1, &1u32.to_le_bytes()),
    ));
    script.extend(segment(
        0,
        &frame_bytes(Kind::Located, 1, &located_body(&dir.locs, 0)),
    ));
    let all = hashes_body(&dir.manifest.chunks);
    let mut stream = vec![1];
    stream.extend(frame_bytes(Kind::Hello, 0, MAGIC));
    stream.extend(frame_bytes(Kind::Locate, 1, &all));
    stream.extend(frame_bytes(Kind::Locate, 2, &all[..64]));
    stream.extend(frame_bytes(Kind::Locate, 3, &[5u8; 32]));
    vec![("client".into(), script), ("server".into(), stream)]
}

fn event_seeds() -> Seeds {
    let one = r#"{"event":{"type":"http","key":"tenant-1"}}"#;
    let full = r#"{"ts":1700000000.25,"event":{"type":"invoke","key":"app-7","attrs":{"method":"GET","status":200,"path":"/v1/x"},"needs":["fn/app-7/f","model/code"]},"capacity":"pod-3"}"#;
    let batch = format!(r#"[{one},{full},{{"ts":0,"event":{{"type":"timer","key":""}}}}]"#);
    vec![
        ("one".into(), one.into()),
        ("full".into(), full.into()),
        ("batch".into(), batch.into_bytes()),
        ("empty_batch".into(), b"  []".to_vec()),
    ]
}

fn history_seeds() -> Seeds {
    let lines = [
        r#"{"ts":1.5,"event":{"type":"http","key":"tenant-1","attrs":{"method":"GET"}},"capacity":"pod-1","reads":[{"resource":"m/a","version":3,"bytes":10}],"writes":[{"resource":"c/b","bytes":5}],"duration_s":0.25}"#,
        r#"{"ts":2,"event":{"type":"invoke","key":"app","needs":["fn/x"]},"reads":[{"resource":"fn/x"}],"duration_s":0}"#,
        r#"{"ts":2.000001,"event":{"type":"timer","key":""},"duration_s":1e-3}"#,
    ];
    let text = lines.join("\n") + "\n";
    vec![
        ("three".into(), text.clone().into_bytes()),
        (
            "blank_lines".into(),
            format!("\n{}\n\n{}\n", lines[0], lines[2]).into_bytes(),
        ),
        (
            "unordered".into(),
            format!("{}\n{}\n", lines[1], lines[0]).into_bytes(),
        ),
    ]
}

/// The first `rows` lines of `path`, each cut to its first `cols` comma-separated fields.
fn head(path: &Path, rows: usize, cols: usize) -> Vec<u8> {
    let data = std::fs::read(path).expect("trace file");
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n').take(rows) {
        let fields: Vec<&[u8]> = line.split(|b| *b == b',').take(cols).collect();
        out.extend_from_slice(&fields.join(&b',')[..]);
        out.push(b'\n');
    }
    out
}

fn importer_seeds() -> Seeds {
    let traces = std::env::var_os("PREWARM_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"));
    let t = |p: &str| traces.join(p);
    let inv = head(&t("azure2019/1350_inv.csv"), 8, 33);
    let run = head(&t("azure2019/1350_run.csv"), 8, 100);
    let mem = head(&t("azure2019/1350_mem.csv"), 8, 100);
    let mut joined = inv.clone();
    joined.push(0);
    joined.extend_from_slice(&run);
    joined.push(0);
    joined.extend_from_slice(&mem);
    let clf = "199.72.81.55 - - [01/Jul/1995:00:00:01 -0400] \"GET /history/apollo/ HTTP/1.0\" 200 6245\n\
               unicomp6.unicomp.net - - [01/Jul/1995:00:00:06 -0400] \"GET /shuttle/countdown/ HTTP/1.0\" 200 3985\n\
               burger.letters.com - - [01/Jul/1995:00:00:11 -0400] \"GET /shuttle/countdown/liftoff.html HTTP/1.0\" 304 0 \"-\" \"Mozilla/4.0\"\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(clf.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "azure2019",
            0,
            b"HashOwner,HashApp,HashFunction,Trigger,1,2,3\no1,a1,f1,http,1,0,2\no2,a2,f2,timer,0,3,0\n".to_vec(),
        ),
        ("azure2019_vhive", 1, joined),
        ("azure2021", 2, head(&t("azure2021/Azure2021_30.csv"), 16, 10)),
        (
            "azure_llm",
            3,
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n".to_vec(),
        ),
        (
            "azure_lmm",
            3,
            b"TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\n2025-01-02 00:00:00.100000,2,1000,20\n2025-01-02 00:00:01.5,0,300,7\n".to_vec(),
        ),
        ("clf", 4, clf.as_bytes().to_vec()),
        ("clf_gzip", 4, gz),
        ("nasa_tsv", 4, head(&t("nasa1995/nasa_19950701.tsv"), 16, 10)),
        (
            "w3c_elf",
            4,
            b"#Version: 1.0\n#Fields: date time c-ip cs-method cs-uri-stem sc-status sc-bytes\n2024-01-01 00:00:01 10.0.0.1 GET /index.html 200 512\n2024-01-01 00:00:02 10.0.0.2 GET /a.png 200 1024\n".to_vec(),
        ),
        ("csv_names", 5, b"t,job,reads\n1.5,j1,a;b\n2.0,j2,b\n3.25,j1,c;a;b\n".to_vec()),
        ("csv_worldcup", 6, head(&t("worldcup98/wc_day6_1_sample.csv"), 16, 10)),
        (
            "csv_json",
            7,
            b"ms|who|reads|bytes|dur|kind\n1700000000000|u1|[\"a\",\"b\"]|[10,20]|0.5|get\n1700000000500|u2|[\"c\"]|7|1|put\n".to_vec(),
        ),
    ];
    seeds
        .into_iter()
        .flat_map(|(n, which, bytes)| {
            [
                (n.to_string(), with(&[which, 0], &bytes)),
                (format!("{n}_strict_named"), with(&[which, 3], &bytes)),
            ]
        })
        .collect()
}

fuzz_target!(|_data: &[u8]| {
    let out = PathBuf::from(std::env::var_os("PREWARM_FUZZ_SEEDS").unwrap_or("corpus".into()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mem = MemFixture::new(&rt);
    let dir = DirFixture::new(&rt);
    write_seeds(&out.join("envelope_manifest"), &manifest_seeds(&rt, &mem));
    write_seeds(&out.join("pack_chunk"), &pack_seeds(&dir));
    write_seeds(&out.join("data_plane"), &data_plane_seeds(&rt, &mem));
    write_seeds(&out.join("pack_channel"), &pack_channel_seeds(&dir));
    write_seeds(&out.join("events"), &event_seeds());
    write_seeds(&out.join("history"), &history_seeds());
    write_seeds(&out.join("importers"), &importer_seeds());
    eprintln!("seeds written under {}", out.display());
    // SAFETY: ends the process at once: libFuzzer counts a plain `exit` as a crash.
    unsafe { libc::_exit(0) }
});
