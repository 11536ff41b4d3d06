//! `prewarm versions`: a resource's versions, or every resource's latest.

use prewarm_core::{ResourceId, StateRef};
use serde::Serialize;

use super::{StoreArg, parse_resource};
use crate::output;

/// Arguments of `prewarm versions`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    store: StoreArg,
    /// Resource id (default: list every resource).
    #[arg(long, value_parser = parse_resource)]
    resource: Option<ResourceId>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    resource: ResourceId,
    version: u64,
    parent: Option<u64>,
    created_unix_ms: i64,
    logical_bytes: u64,
    chunks: usize,
    kind: String,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let store = a.store.open().await?;
    let mut states = Vec::new();
    match &a.resource {
        Some(r) => {
            let vs = store.versions(r).await?;
            if vs.is_empty() {
                anyhow::bail!("resource {r} has no versions in this store");
            }
            states.extend(vs.into_iter().map(|v| StateRef {
                resource: r.clone(),
                version: v,
            }));
        }
        None => {
            for r in store.resources().await? {
                if let Some(v) = store.latest(&r).await? {
                    states.push(StateRef {
                        resource: r,
                        version: v,
                    });
                }
            }
        }
    }
    let mut rows = Vec::new();
    for s in states {
        let m = store.manifest(&s).await?;
        rows.push(Row {
            resource: s.resource,
            version: s.version.get(),
            parent: m.parent.map(|p| p.get()),
            created_unix_ms: m.created_unix_ms,
            logical_bytes: m.logical_size,
            chunks: m.chunks.len(),
            kind: format!("{:?}", m.kind).to_lowercase(),
        });
    }
    if a.json {
        output::json(&rows)?;
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.resource.to_string(),
                    r.version.to_string(),
                    r.kind.clone(),
                    output::bytes(r.logical_bytes),
                    r.chunks.to_string(),
                    r.created_unix_ms.to_string(),
                ]
            })
            .collect();
        println!(
            "{}",
            output::table(
                &[
                    "resource",
                    "version",
                    "kind",
                    "size",
                    "chunks",
                    "created_unix_ms"
                ],
                &table
            )
        );
    }
    Ok(0)
}
