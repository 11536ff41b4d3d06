//! `verify`: re-read and re-hash every chunk that any (or one resource's) manifest references,
//! like `restic check --read-data`. Problems are collected, not fatal, so one run lists them all.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use prewarm_core::{ChunkHash, ResourceId, StateRef};
use serde::Serialize;

use crate::index::ChunkIndex;
use crate::pack::{BlobLoc, PackId, PackedBlob};
use crate::repair::Scan;
use crate::store::Store;

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Manifests read.
    pub manifests: u64,
    /// Distinct chunks checked.
    pub chunks: u64,
    /// Their uncompressed bytes.
    pub bytes: u64,
    /// Everything wrong, one line each.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The resource has no versions.
    #[error("resource {0} has no versions in this store")]
    UnknownResource(ResourceId),
    /// Listing or reading the index failed.
    #[error("store backend: {0}")]
    Backend(String),
}

impl Store {
    /// Verifies every chunk referenced by `resource`'s versions, or by every manifest.
    pub async fn verify(&self, resource: Option<&ResourceId>) -> Result<VerifyReport, VerifyError> {
        let backend = |e: object_store::Error| VerifyError::Backend(e.to_string());
        let resources = match resource {
            Some(r) => vec![r.clone()],
            None => self.resources().await.map_err(backend)?,
        };
        // Read the index afresh: other writers may have committed since this handle opened.
        let (index, damaged) = self
            .load_index_parts()
            .await
            .map_err(|e| VerifyError::Backend(e.to_string()))?;
        let mut report = VerifyReport::default();
        for (path, e) in &damaged {
            report.problems.push(format!(
                "index object {path} is damaged: {e} (the store reads an index rebuilt from \
                 the packs' trailers; `prewarm repair` publishes it)"
            ));
        }
        let scan = self.scan_packs().await.map_err(backend)?;
        report
            .problems
            .extend(trailer_problems(&index, &scan, damaged.is_empty()));
        let index = if damaged.is_empty() {
            index
        } else {
            scan.index
        };
        let mut wanted: HashMap<ChunkHash, (u32, StateRef)> = HashMap::new();
        for r in &resources {
            let versions = self.versions(r).await.map_err(backend)?;
            if versions.is_empty() && resource.is_some() {
                return Err(VerifyError::UnknownResource(r.clone()));
            }
            for v in versions {
                let state = StateRef {
                    resource: r.clone(),
                    version: v,
                };
                match self.manifest(&state).await {
                    Ok(m) => {
                        report.manifests += 1;
                        for c in &m.chunks {
                            wanted.entry(c.hash).or_insert((c.length, state.clone()));
                        }
                    }
                    Err(e) => report.problems.push(e.to_string()),
                }
            }
        }
        let mut by_pack: BTreeMap<PackId, Vec<(usize, ChunkHash, BlobLoc)>> = BTreeMap::new();
        for (hash, (len, state)) in &wanted {
            match index.get(hash) {
                Some(loc) if loc.raw_length == *len => {
                    by_pack.entry(loc.pack).or_default().push((0, *hash, *loc))
                }
                Some(loc) => report.problems.push(format!(
                    "chunk {hash} of {state}: index says {} bytes, manifest says {len}",
                    loc.raw_length
                )),
                None => report
                    .problems
                    .push(format!("chunk {hash} of {state} is not in any pack")),
            }
        }
        let mut reads = futures::stream::iter(by_pack)
            .map(|(pack, wants)| async move { (self.read_pack_blobs(pack, &wants).await, wants) })
            .buffer_unordered(4);
        while let Some((got, wants)) = reads.next().await {
            match got {
                Err(e) => report.problems.push(e.to_string()),
                Ok(results) => {
                    for (r, (_, _, loc)) in results.into_iter().zip(&wants) {
                        match r {
                            Ok(_) => {
                                report.chunks += 1;
                                report.bytes += u64::from(loc.raw_length);
                            }
                            Err(e) => report.problems.push(e.to_string()),
                        }
                    }
                }
            }
        }
        report.problems.sort();
        Ok(report)
    }
}

/// Packs whose trailer is damaged or disagrees with the index (`compare`: the index was
/// read whole, not rebuilt from these trailers).
fn trailer_problems(index: &ChunkIndex, scan: &Scan, compare: bool) -> Vec<String> {
    let mut out: Vec<String> = scan
        .damaged
        .iter()
        .map(|(id, e)| format!("pack {id}: trailer damaged: {e}"))
        .collect();
    if !compare {
        return out;
    }
    let key = |b: &PackedBlob| (b.hash, b.offset, b.stored_length, b.raw_length);
    for (id, blobs) in scan.index.packs() {
        // A pack no index names is a writer's uncommitted leftover (gc reclaims it).
        match index.packs().get(id) {
            None => {}
            Some(listed) => {
                let mut a: Vec<_> = blobs.iter().map(key).collect();
                let mut b: Vec<_> = listed.iter().map(key).collect();
                a.sort_unstable();
                b.sort_unstable();
                if a != b {
                    out.push(format!(
                        "pack {id}: its trailer lists {} blobs, the index {} (they differ)",
                        a.len(),
                        b.len()
                    ));
                }
            }
        }
    }
    out
}
