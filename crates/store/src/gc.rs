//! Retention and garbage collection.
//!
//! 1. Retention: per resource, delete all but the newest `keep` manifests.
//! 2. Mark: every chunk named by a remaining manifest is live. If any manifest cannot be
//!    read, gc stops: it cannot know what that manifest needs.
//! 3. Sweep, for packs older than the grace period (younger ones may belong to a writer that
//!    has not committed yet): a pack with no live chunk is deleted; a pack that is mostly dead
//!    is repacked (live chunks verified and copied into new packs). Orphan packs that no index
//!    names (a writer crashed) are deleted too.
//! 4. Publish a consolidated index, then delete the old index objects, then the dead packs.
//!    A crash at any point leaves every manifest's chunks reachable.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use prewarm_core::{ChunkHash, StateRef, Version};
use serde::Serialize;

use crate::index::ChunkIndex;
use crate::pack::{PackBuilder, PackId, PackedBlob};
use crate::store::{Store, manifest_path, pack_id_of, pack_path};

/// Repack a pack when at least this share of its stored bytes is dead.
const REPACK_DEAD_SHARE: f64 = 0.25;

/// What gc did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    /// Manifests removed by retention.
    pub manifests_deleted: u64,
    /// Kept manifests rewritten in full because their delta base was removed.
    pub manifests_rewritten: u64,
    /// Packs deleted (dead, orphaned or repacked).
    pub packs_deleted: u64,
    /// Packs whose live chunks were copied into new packs.
    pub packs_repacked: u64,
    /// Chunks no longer stored.
    pub chunks_deleted: u64,
    /// Stored bytes freed (net of repacking).
    pub bytes_freed: u64,
    /// Packs left alone because they are younger than the grace period.
    pub packs_in_grace: u64,
}

/// Why gc stopped. Whatever it had not yet deleted is intact.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// `keep` must be at least 1.
    #[error("--keep must be at least 1 (gc never deletes a resource's newest version)")]
    KeepZero,
    /// A manifest could not be read, so liveness is unknown.
    #[error("cannot read manifest of {state}: {why}; gc stopped without deleting chunks")]
    UnreadableManifest {
        /// Which one.
        state: StateRef,
        /// Why.
        why: String,
    },
    /// A live chunk failed verification while repacking.
    #[error("live chunk {0} is corrupt; gc stopped (run `prewarm verify`)")]
    CorruptLive(ChunkHash),
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(String),
}

fn be<E: std::fmt::Display>(e: E) -> GcError {
    GcError::Backend(e.to_string())
}

impl Store {
    /// Keeps the newest `keep` versions of each resource and reclaims unreferenced chunks in
    /// packs older than `grace`.
    pub async fn gc(&self, keep: usize, grace: Duration) -> Result<GcReport, GcError> {
        if keep == 0 {
            return Err(GcError::KeepZero);
        }
        let mut report = GcReport::default();
        let live = self.retain_and_mark(keep, &mut report).await?;
        let old_index_objects = self.index_objects().await.map_err(be)?;
        let index = self.load_index().await.map_err(be)?;
        let ages = self.pack_ages().await?;
        let mut sweep = Sweep::classify(&index, &ages, &live, grace, &mut report);
        let new_packs = self.repack(&index, &live, &mut sweep, &mut report).await?;
        let consolidated = self
            .publish_index(sweep.keep_packs, &new_packs, &old_index_objects)
            .await?;
        let before: u64 = sweep
            .doomed
            .iter()
            .filter_map(|id| ages.get(id))
            .map(|(_, s)| s)
            .sum();
        let added: u64 = new_packs
            .iter()
            .map(|(_, b)| b.iter().map(|x| u64::from(x.stored_length)).sum::<u64>())
            .sum();
        for id in &sweep.doomed {
            match self.os.delete(&pack_path(id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(be(e)),
            }
            report.packs_deleted += 1;
        }
        report.bytes_freed = before.saturating_sub(added);
        report.chunks_deleted = index.len().saturating_sub(consolidated.len()) as u64;
        *self.index.write().expect("index lock poisoned") = std::sync::Arc::new(consolidated);
        Ok(report)
    }

    /// Retention and mark, resource by resource: rewrites kept deltas whose base goes, deletes
    /// all but the newest `keep` manifests, and returns every chunk a kept manifest names.
    async fn retain_and_mark(
        &self,
        keep: usize,
        report: &mut GcReport,
    ) -> Result<HashSet<ChunkHash>, GcError> {
        let mut live: HashSet<ChunkHash> = HashSet::new();
        for r in self.resources().await.map_err(be)? {
            let versions = self.versions(&r).await.map_err(be)?;
            let cut = versions.len().saturating_sub(keep);
            let state = |v: Version| StateRef {
                resource: r.clone(),
                version: v,
            };
            // Read the kept versions first: a kept delta may need a base about to go.
            for &v in &versions[cut..] {
                let m =
                    self.manifest(&state(v))
                        .await
                        .map_err(|e| GcError::UnreadableManifest {
                            state: state(v),
                            why: e.to_string(),
                        })?;
                if cut > 0 && m.delta_base.is_some_and(|b| b < versions[cut]) {
                    // Rewritten in full (same content, atomically) before its base is deleted.
                    self.os
                        .put(&manifest_path(&state(v)), PutPayload::from(m.encode()))
                        .await
                        .map_err(be)?;
                    report.manifests_rewritten += 1;
                }
                live.extend(m.chunks.iter().map(|c| c.hash));
            }
            for &v in &versions[..cut] {
                self.os
                    .delete(&manifest_path(&state(v)))
                    .await
                    .map_err(be)?;
                report.manifests_deleted += 1;
            }
        }
        Ok(live)
    }

    /// Age and size of every pack object in the store, listed or not.
    async fn pack_ages(&self) -> Result<HashMap<PackId, (Duration, u64)>, GcError> {
        let now = std::time::SystemTime::now();
        let mut ages: HashMap<PackId, (Duration, u64)> = HashMap::new();
        let metas: Vec<_> = self
            .os
            .list(Some(&Path::from("data")))
            .try_collect()
            .await
            .map_err(be)?;
        for m in &metas {
            if let Some(id) = pack_id_of(&m.location) {
                let age = now
                    .duration_since(m.last_modified.into())
                    .unwrap_or_default();
                ages.insert(id, (age, m.size));
            }
        }
        Ok(ages)
    }

    /// Repack: copies the live chunks (verified) of the packs to repack that are not already
    /// placed elsewhere into new packs, and dooms the old ones; returns the new packs.
    async fn repack(
        &self,
        index: &ChunkIndex,
        live: &HashSet<ChunkHash>,
        sweep: &mut Sweep,
        report: &mut GcReport,
    ) -> Result<Vec<(PackId, Vec<PackedBlob>)>, GcError> {
        let mut builder = PackBuilder::new(self.config.pack_target);
        let mut new_packs: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
        for (id, blobs) in &sweep.to_repack {
            let wants: Vec<_> = blobs
                .iter()
                .filter(|b| live.contains(&b.hash) && !sweep.placed.contains(&b.hash))
                .filter_map(|b| {
                    index
                        .get(&b.hash)
                        .filter(|l| l.pack == *id)
                        .map(|l| (0usize, b.hash, *l))
                })
                .collect();
            let stored = self
                .os
                .get_ranges(
                    &pack_path(id),
                    &wants
                        .iter()
                        .map(|(_, _, l)| l.offset..l.offset + u64::from(l.stored_length))
                        .collect::<Vec<_>>(),
                )
                .await
                .map_err(be)?;
            for ((_, hash, loc), bytes) in wants.iter().zip(stored) {
                crate::read::decode_verified(*hash, loc, &bytes)
                    .map_err(|_| GcError::CorruptLive(*hash))?;
                builder.push(*hash, loc.codec, loc.raw_length, &bytes);
                sweep.placed.insert(*hash);
                if builder.len() >= self.config.pack_target {
                    let full =
                        std::mem::replace(&mut builder, PackBuilder::new(self.config.pack_target));
                    new_packs.push(self.put_pack(full).await?);
                }
            }
            sweep.doomed.push(*id);
            report.packs_repacked += 1;
        }
        if !builder.is_empty() {
            new_packs.push(self.put_pack(builder).await?);
        }
        Ok(new_packs)
    }

    /// Publishes the consolidated index (kept and new packs) before removing anything it no
    /// longer names, then deletes the other index objects; returns the new index.
    async fn publish_index(
        &self,
        keep_packs: Vec<(PackId, Vec<PackedBlob>)>,
        new_packs: &[(PackId, Vec<PackedBlob>)],
        old_index_objects: &[Path],
    ) -> Result<ChunkIndex, GcError> {
        let mut consolidated = ChunkIndex::default();
        for (id, blobs) in keep_packs.into_iter().chain(new_packs.iter().cloned()) {
            consolidated.add_pack(id, blobs);
        }
        let body = ChunkIndex::encode(consolidated.packs().iter());
        let name = blake3::hash(&body).to_hex().to_string();
        let new_index = Path::from_iter(["index", &name]);
        self.os
            .put(&new_index, PutPayload::from(body))
            .await
            .map_err(be)?;
        for p in old_index_objects.iter().filter(|p| **p != new_index) {
            self.os.delete(p).await.map_err(be)?;
        }
        Ok(consolidated)
    }

    async fn put_pack(&self, b: PackBuilder) -> Result<(PackId, Vec<PackedBlob>), GcError> {
        let (id, bytes, blobs) = b.finish();
        crate::store::put_pack(&self.os, &id, bytes, self.remote)
            .await
            .map_err(be)?;
        Ok((id, blobs))
    }
}

/// The sweep's verdict on each indexed pack, and the chunks the new index places.
struct Sweep {
    /// Packs kept as they are (young, or with little dead).
    keep_packs: Vec<(PackId, Vec<PackedBlob>)>,
    /// Packs to delete once the new index is published.
    doomed: Vec<PackId>,
    /// Packs whose live chunks move into new packs.
    to_repack: Vec<(PackId, Vec<PackedBlob>)>,
    /// Chunks the new index already has a place for.
    placed: HashSet<ChunkHash>,
}

impl Sweep {
    /// Sorts packs into kept (in grace, or no dead chunk), doomed (all dead, or orphans no
    /// index names, past grace) and to repack (mostly dead, past grace).
    fn classify(
        index: &ChunkIndex,
        ages: &HashMap<PackId, (Duration, u64)>,
        live: &HashSet<ChunkHash>,
        grace: Duration,
        report: &mut GcReport,
    ) -> Self {
        let old_enough = |id: &PackId| ages.get(id).is_some_and(|(age, _)| *age >= grace);
        let mut keep_packs: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
        let mut doomed: Vec<PackId> = Vec::new();
        let mut to_repack: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
        let mut placed: HashSet<ChunkHash> = HashSet::new();
        for (id, blobs) in index.packs() {
            if !ages.contains_key(id) {
                continue; // listed in an index but gone: drop it from the new index
            }
            let total: u64 = blobs.iter().map(|b| u64::from(b.stored_length)).sum();
            let dead: u64 = blobs
                .iter()
                .filter(|b| !live.contains(&b.hash))
                .map(|b| u64::from(b.stored_length))
                .sum();
            if !old_enough(id) || dead == 0 {
                if !old_enough(id) {
                    report.packs_in_grace += 1;
                }
                placed.extend(blobs.iter().map(|b| b.hash));
                keep_packs.push((*id, blobs.clone()));
            } else if dead == total {
                doomed.push(*id);
            } else if dead as f64 >= REPACK_DEAD_SHARE * total as f64 {
                to_repack.push((*id, blobs.clone()));
            } else {
                placed.extend(blobs.iter().map(|b| b.hash));
                keep_packs.push((*id, blobs.clone()));
            }
        }
        for id in ages.keys() {
            if !index.packs().contains_key(id) && old_enough(id) {
                doomed.push(*id); // orphan: a writer died before publishing its index
            }
        }
        Self {
            keep_packs,
            doomed,
            to_repack,
            placed,
        }
    }
}
