//! `prewarm gc`: retention plus reclaiming unreferenced chunks.

use std::time::Duration;

use super::{StoreArg, parse_duration};
use crate::output;

/// Arguments of `prewarm gc`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Versions to keep per resource (at least 1).
    #[arg(long)]
    keep: usize,
    /// Leave packs younger than this alone (they may belong to a snapshot in progress).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    grace: Duration,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.open().await?;
    let rep = store.gc(a.keep, a.grace).await?;
    if a.json {
        output::json(&rep)?;
    } else {
        println!(
            "gc: {} manifests deleted, {} packs deleted ({} repacked), {} chunks dropped, {} freed; {} packs within the grace period",
            rep.manifests_deleted,
            rep.packs_deleted,
            rep.packs_repacked,
            rep.chunks_deleted,
            output::bytes(rep.bytes_freed),
            rep.packs_in_grace
        );
    }
    Ok(0)
}
