//! `prewarm snapshot`: a file or directory → the resource's next version.

use std::path::PathBuf;

use anyhow::Context;
use prewarm_core::ResourceId;
use prewarm_snapshot::Snapshotter;

use super::{ChunkArg, StoreArg, parse_resource};
use crate::output;
use crate::progress::{self, Meter};

/// Arguments of `prewarm snapshot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Resource id: 1-256 bytes of [A-Za-z0-9._/-], '/'-separated, no '.', '..' or empty segment.
    #[arg(long, value_parser = parse_resource)]
    resource: ResourceId,
    #[command(flatten)]
    chunk: ChunkArg,
    /// Commit a new version even if nothing changed since the latest one.
    #[arg(long)]
    always: bool,
    /// Read every file, even those whose size and mtime match the latest version (for
    /// sources edited by tools that restore mtimes).
    #[arg(long)]
    reread: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The file or directory to snapshot.
    path: PathBuf,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let chunker = a.chunk.params()?;
    let store = a.store.open_or_create().await?;
    let mut snap = Snapshotter::new(store).with_chunker(chunker);
    if a.always {
        snap = snap.always_commit();
    }
    if a.reread {
        snap = snap.reread_all();
    }
    let meter = std::sync::Arc::new(Meter::new());
    snap = snap.with_meter(meter.clone());
    let shown = progress::show(
        format!("snapshot {}", a.resource),
        meter,
        progress::Unit::Bytes,
    );
    let t = std::time::Instant::now();
    let out = snap.snapshot_path(&a.resource, &a.path).await;
    shown.finish();
    let out = out.with_context(|| format!("snapshot of {}", a.path.display()))?;
    let secs = t.elapsed().as_secs_f64();
    if a.json {
        output::json(&serde_json::json!({
            "resource": out.committed.state.resource,
            "version": out.committed.state.version,
            "parent": out.committed.parent,
            "unchanged": out.unchanged,
            "seconds": secs,
            "stats": out.committed.stats,
        }))?;
    } else {
        let s = out.committed.stats;
        let what = if out.unchanged {
            "unchanged, still"
        } else {
            "committed"
        };
        println!(
            "{what} {} — {} logical, {} newly stored ({} of {} chunks new), {:.2}s ({})",
            out.committed.state,
            output::bytes(s.logical_bytes),
            output::bytes(s.new_stored_bytes),
            s.new_chunks,
            s.chunks,
            secs,
            output::rate(s.logical_bytes, secs)
        );
    }
    Ok(0)
}
