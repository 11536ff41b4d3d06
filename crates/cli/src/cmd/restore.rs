//! `prewarm restore`: a version → a new file or directory, verified and renamed into place.

use std::path::PathBuf;

use anyhow::Context;
use prewarm_core::{ResourceId, Version};

use super::{StoreArg, parse_resource};
use crate::output;
use crate::progress::{self, Meter};

/// Arguments of `prewarm restore`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Resource id.
    #[arg(long, value_parser = parse_resource)]
    resource: ResourceId,
    /// Version to restore (default: the latest).
    #[arg(long)]
    version: Option<Version>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Destination path; must not exist.
    dest: PathBuf,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.open().await?;
    let m = store.resolve(&a.resource, a.version).await?;
    let meter = std::sync::Arc::new(Meter::new());
    let shown = progress::show(
        format!("restore {}", m.state),
        meter.clone(),
        progress::Unit::Bytes,
    );
    let t = std::time::Instant::now();
    let rep = prewarm_snapshot::restore_metered(store.as_ref(), &m, &a.dest, &meter).await;
    shown.finish();
    let rep = rep.with_context(|| format!("restore of {} to {}", m.state, a.dest.display()))?;
    let secs = t.elapsed().as_secs_f64();
    if a.json {
        output::json(&serde_json::json!({
            "resource": m.state.resource, "version": m.state.version, "dest": a.dest,
            "bytes": rep.bytes, "chunks": rep.chunks, "files": rep.files, "seconds": secs,
        }))?;
    } else {
        println!(
            "restored {} to {} — {} in {} files, {} chunks verified, {:.2}s ({})",
            m.state,
            a.dest.display(),
            output::bytes(rep.bytes),
            rep.files,
            rep.chunks,
            secs,
            output::rate(rep.bytes, secs)
        );
    }
    Ok(0)
}
