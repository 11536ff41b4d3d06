//! `prewarm demo`: the README's main command. Until the predictive demo lands (coordinator,
//! agents and a trained model), it runs the foundation end to end on generated data: a full
//! snapshot of a directory tree, 1% scattered edits, an incremental snapshot, a verified
//! restore compared byte for byte with the source, and a store-wide verify.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use prewarm_core::ResourceId;
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;

use crate::cmd::parse_size;
use crate::{dataset, output};

/// Arguments of `prewarm demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Size of the generated state.
    #[arg(long, value_parser = parse_size, default_value = "128MiB")]
    size: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the demo.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let tmp = tempfile::Builder::new().prefix("prewarm-demo-").tempdir()?;
    let data = tmp.path().join("state");
    let store_dir = tmp.path().join("store");
    let say = |s: String| {
        if !a.json {
            println!("{s}");
        }
    };
    say(format!(
        "prewarm demo (snapshot store round trip) in {}",
        tmp.path().display()
    ));
    say(format!(
        "[1/5] generating {} of mixed state (text records and random bytes) …",
        output::bytes(a.size)
    ));
    let files = dataset::generate(&data, a.size, 1)?;

    let store = Arc::new(Store::open_or_create(store_dir.to_str().context("utf-8 path")?).await?);
    let snap = Snapshotter::new(store.clone());
    let resource = ResourceId::new("demo/state")?;
    let t = Instant::now();
    let v1 = snap.snapshot_path(&resource, &data).await?.committed;
    let v1_s = t.elapsed().as_secs_f64();
    say(format!(
        "[2/5] full snapshot {}: {} in {} files → {} stored, {:.2}s ({})",
        v1.state,
        output::bytes(v1.stats.logical_bytes),
        files.len(),
        output::bytes(v1.stats.new_stored_bytes),
        v1_s,
        output::rate(v1.stats.logical_bytes, v1_s)
    ));

    let edits = dataset::apply_edits(&files, 0.01, 4096, 2)?;
    let t = Instant::now();
    let v2 = snap.snapshot_path(&resource, &data).await?.committed;
    let v2_s = t.elapsed().as_secs_f64();
    say(format!(
        "[3/5] {} scattered 4 KiB edits (1%) → incremental snapshot {}: {} newly stored ({:.1}% of full), {} reused, {:.2}s",
        edits.len(),
        v2.state,
        output::bytes(v2.stats.new_stored_bytes),
        100.0 * v2.stats.new_stored_bytes as f64 / v1.stats.new_stored_bytes as f64,
        output::bytes(v2.stats.reused_bytes),
        v2_s
    ));

    let dest = tmp.path().join("restored");
    let m = store.manifest(&v2.state).await?;
    let t = Instant::now();
    let rep = prewarm_snapshot::restore(store.as_ref(), &m, &dest).await?;
    let r_s = t.elapsed().as_secs_f64();
    let same = dataset::tree_digest(&dest)? == dataset::tree_digest(&data)?;
    ensure!(same, "restored tree differs from the source");
    say(format!(
        "[4/5] verified restore of {}: {} chunks checked, {:.2}s ({}), identical to the source: {same}",
        v2.state,
        rep.chunks,
        r_s,
        output::rate(rep.bytes, r_s)
    ));

    let ver = store.verify(None).await?;
    ensure!(ver.ok(), "verify found problems: {:?}", ver.problems);
    say(format!(
        "[5/5] verify: {} manifests, {} distinct chunks ({}) re-hashed, no problems",
        ver.manifests,
        ver.chunks,
        output::bytes(ver.bytes)
    ));
    say("The predictive parts (agents, coordinator, model, replay) join this demo as their issues land.".into());
    if a.json {
        output::json(&serde_json::json!({
            "full": {"stats": v1.stats, "seconds": v1_s},
            "incremental": {"stats": v2.stats, "seconds": v2_s, "edits": edits.len()},
            "restore": {"report": rep, "seconds": r_s, "identical": same},
            "verify": ver,
        }))?;
    }
    Ok(0)
}
