//! `prewarm verify`: exit 0 only if every referenced chunk re-hashes correctly.

use prewarm_core::ResourceId;

use super::{StoreArg, parse_resource};
use crate::output;

/// Arguments of `prewarm verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Only this resource's versions (default: every manifest).
    #[arg(long, value_parser = parse_resource)]
    resource: Option<ResourceId>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command: 0 when clean, 1 when damage was found.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.open().await?;
    let rep = store.verify(a.resource.as_ref()).await?;
    if a.json {
        output::json(&serde_json::json!({ "ok": rep.ok(), "report": rep }))?;
    } else {
        for p in &rep.problems {
            println!("DAMAGED: {p}");
        }
        println!(
            "{}: {} manifests, {} chunks, {} verified; {} problems",
            if rep.ok() { "ok" } else { "FAILED" },
            rep.manifests,
            rep.chunks,
            output::bytes(rep.bytes),
            rep.problems.len()
        );
    }
    Ok(if rep.ok() { 0 } else { 1 })
}
