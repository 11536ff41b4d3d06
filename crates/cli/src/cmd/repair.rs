//! `prewarm repair`: when an index object is damaged, publish an index rebuilt from every
//! pack's trailer and remove the damaged objects (packs and manifests are never touched).

use super::StoreArg;
use crate::output;

/// Arguments of `prewarm repair`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command: 0 when the index is whole (repaired or never damaged), 1 when packs
/// with damaged trailers were left out of it.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.open().await?;
    let rep = store.repair().await?;
    if a.json {
        output::json(&rep)?;
    } else if rep.damaged_index_objects.is_empty() {
        println!("ok: every index object is whole; nothing written");
    } else {
        for o in &rep.damaged_index_objects {
            println!("removed damaged index object {o}");
        }
        for p in &rep.damaged_packs {
            println!("DAMAGED: pack {p} (its chunks are not in the new index)");
        }
        println!(
            "published {} from the trailers of {} packs",
            rep.published.as_deref().unwrap_or("-"),
            rep.packs_indexed
        );
    }
    Ok(if rep.damaged_packs.is_empty() { 0 } else { 1 })
}
