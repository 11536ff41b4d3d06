//! Writing a snapshot: [`Store::write`] stores the chunks of a stream (packs uploaded while
//! the CPU keeps cutting and compressing), then [`Store::commit`] publishes it.
//!
//! Commit order is the crash-safety argument: packs → index → manifest. A manifest is only
//! written after every chunk it names is durable, so a crash leaves at worst unreferenced
//! packs (collected by `gc`), never a manifest pointing at a missing chunk. The manifest put
//! is conditional (`PutMode::Create`), so two writers racing for the same version number
//! cannot overwrite each other: the loser takes the next number.

use std::collections::HashSet;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutPayload};
use prewarm_core::{Meter, ResourceId, StateRef, Version};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::chunker::{ChunkMeta, CutBatch, Cutter, Hashed, Hasher, Segment, SegmentReadError};
use crate::index::ChunkIndex;
use crate::manifest::{ChunkRef, ChunkerParams, Manifest, SourceKind, TreeEntry};
use crate::pack::{PackBuilder, PackId, PackedBlob};
use crate::store::{Store, manifest_path, pack_path};

/// Counters of one write.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct WriteStats {
    /// Bytes in the logical stream.
    pub logical_bytes: u64,
    /// Chunks in the stream.
    pub chunks: u64,
    /// Chunks the store did not have.
    pub new_chunks: u64,
    /// Their uncompressed bytes.
    pub new_raw_bytes: u64,
    /// Their stored (compressed) bytes: what this write added to the store.
    pub new_stored_bytes: u64,
    /// Chunks already stored (any version, any resource) and reused.
    pub reused_chunks: u64,
    /// Their uncompressed bytes.
    pub reused_bytes: u64,
    /// Pack objects uploaded.
    pub packs_written: u64,
}

/// Chunks stored, not yet published under a version.
pub struct Staged {
    /// The stream's chunks in order.
    pub chunks: Vec<ChunkRef>,
    /// Each segment's length as read.
    pub segment_lens: Vec<u64>,
    /// Counters.
    pub stats: WriteStats,
    chunker: ChunkerParams,
    new_packs: Vec<(PackId, Vec<PackedBlob>)>,
    reused_packs: HashSet<PackId>,
    /// The parent manifest, when the caller already holds it (saves re-reading its chain).
    parent_hint: Option<Manifest>,
}

impl Staged {
    /// Hands `commit` the latest manifest the caller already read; used only if it is still
    /// the latest version when the commit claims its number.
    pub fn set_parent_hint(&mut self, parent: Manifest) {
        self.parent_hint = Some(parent);
    }
}

/// Why storing chunks failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A source could not be read.
    #[error(transparent)]
    Read(#[from] SegmentReadError),
    /// Invalid chunker parameters.
    #[error("{0}")]
    Params(String),
    /// Uploading a pack failed.
    #[error("cannot upload pack {pack}: {source}")]
    Upload {
        /// The pack.
        pack: PackId,
        /// The backend's error.
        source: object_store::Error,
    },
    /// The chunking thread died.
    #[error("chunking worker failed: {0}")]
    Worker(String),
    /// A chunk of a file reused as unchanged is no longer in the store (a concurrent gc).
    #[error(
        "chunk {0} of an unchanged file left the store during the snapshot (concurrent gc?); retry"
    )]
    Vanished(prewarm_core::ChunkHash),
}

/// Why publishing a snapshot failed. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A pack holding reused chunks disappeared (a concurrent `gc`); retry the snapshot.
    #[error("pack {0} vanished while this snapshot was written (concurrent gc?); retry")]
    PackVanished(PackId),
    /// Racing writers kept taking the next version number.
    #[error("gave up after {0} attempts to claim a version number")]
    Contended(u32),
    /// The manifest built does not validate (a bug; nothing was written).
    #[error("refusing to write an invalid manifest: {0}")]
    Invalid(String),
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(#[from] object_store::Error),
}

/// A published snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Committed {
    /// Resource and new version.
    pub state: StateRef,
    /// The version it follows.
    pub parent: Option<Version>,
    /// Counters, including the manifest's own bytes in `new_stored_bytes`.
    pub stats: WriteStats,
    /// The manifest's size.
    pub manifest_bytes: u64,
}

impl Staged {
    /// Appends one batch of hashed chunks at `offset` (advanced past them) and counts them
    /// as new or reused (and the packs that reused ones live in).
    fn record(&mut self, metas: Vec<ChunkMeta>, offset: &mut u64, known: &ChunkIndex) {
        for p in metas {
            self.chunks.push(ChunkRef {
                hash: p.hash,
                offset: *offset,
                length: p.length,
                stored_length: p.stored_length,
                codec: p.codec,
                fingerprint: p.fingerprint,
            });
            *offset += u64::from(p.length);
            self.stats.chunks += 1;
            if p.new {
                self.stats.new_chunks += 1;
                self.stats.new_raw_bytes += u64::from(p.length);
                self.stats.new_stored_bytes += u64::from(p.stored_length);
            } else {
                self.stats.reused_chunks += 1;
                self.stats.reused_bytes += u64::from(p.length);
                if let Some(loc) = known.get(&p.hash) {
                    self.reused_packs.insert(loc.pack);
                }
            }
        }
    }
}

/// Packs being uploaded at once while the CPU works on the next ones.
const PUTS_IN_FLIGHT: usize = 4;

impl Store {
    /// Chunks, hashes, compresses and stores `segments` as one logical stream.
    pub async fn write(
        &self,
        segments: Vec<Segment>,
        chunker: ChunkerParams,
    ) -> Result<Staged, WriteError> {
        self.write_metered(segments, chunker, &Meter::new()).await
    }

    /// [`Store::write`], setting `meter` to the logical bytes stored so far (the caller sets
    /// its total).
    pub async fn write_metered(
        &self,
        segments: Vec<Segment>,
        chunker: ChunkerParams,
        meter: &Meter,
    ) -> Result<Staged, WriteError> {
        chunker.check().map_err(WriteError::Params)?;
        // Three stages overlap: cutting (one thread) → hashing, compressing and packing
        // (rayon, all cores) → uploading (async, below).
        let (cut_tx, cut_rx) = std::sync::mpsc::sync_channel::<CutBatch>(1);
        let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Hashed>(4);
        let mut cutter = Cutter {
            params: chunker,
            spare: spare_rx,
        };
        let worker = tokio::task::spawn_blocking(move || {
            cutter.run(&segments, &mut |batch| cut_tx.send(batch).is_ok())
        });
        let mut hasher = Hasher {
            known: self.index(),
            level: self.config.zstd_level,
            seen: Default::default(),
            pack: PackBuilder::new(self.config.pack_target),
            pack_target: self.config.pack_target,
            vanished: None,
        };
        let hashing = tokio::task::spawn_blocking(move || {
            let mut emit = |h| tx.blocking_send(h).is_ok();
            while let Ok(batch) = cut_rx.recv() {
                if !hasher.process(&batch, &mut emit) {
                    return hasher.vanished;
                }
                let _ = spare_tx.try_send(batch.data);
            }
            hasher.flush(&mut emit);
            None
        });

        let mut st = Staged {
            chunks: Vec::new(),
            segment_lens: Vec::new(),
            stats: WriteStats::default(),
            chunker,
            new_packs: Vec::new(),
            reused_packs: HashSet::new(),
            parent_hint: None,
        };
        let known = self.index();
        let mut puts: JoinSet<Result<(), WriteError>> = JoinSet::new();
        let mut offset = 0u64;
        while let Some(h) = rx.recv().await {
            match h {
                Hashed::Chunks(metas) => {
                    st.record(metas, &mut offset, &known);
                    meter.set(offset);
                }
                Hashed::Pack(id, bytes, blobs) => {
                    self.upload(id, bytes, blobs, &mut st, &mut puts).await?
                }
            }
        }
        st.segment_lens = worker
            .await
            .map_err(|e| WriteError::Worker(e.to_string()))??;
        if let Some(hash) = hashing
            .await
            .map_err(|e| WriteError::Worker(e.to_string()))?
        {
            return Err(WriteError::Vanished(hash));
        }
        while let Some(r) = puts.join_next().await {
            r.map_err(|e| WriteError::Worker(e.to_string()))??;
        }
        let ids: Vec<PackId> = st.new_packs.iter().map(|(id, _)| *id).collect();
        if let Some(first) = ids.first().copied() {
            self.sync_pack_dirs(&ids)
                .await
                .map_err(|source| WriteError::Upload {
                    pack: first,
                    source,
                })?;
        }
        st.stats.logical_bytes = offset;
        Ok(st)
    }

    async fn upload(
        &self,
        id: PackId,
        bytes: Vec<u8>,
        blobs: Vec<PackedBlob>,
        st: &mut Staged,
        puts: &mut JoinSet<Result<(), WriteError>>,
    ) -> Result<(), WriteError> {
        while puts.len() >= PUTS_IN_FLIGHT {
            if let Some(r) = puts.join_next().await {
                r.map_err(|e| WriteError::Worker(e.to_string()))??;
            }
        }
        st.new_packs.push((id, blobs));
        st.stats.packs_written += 1;
        let os = self.bulk.clone();
        let sync_root = self.pack_sync_root();
        let multipart = self.remote;
        puts.spawn(async move {
            let upload = |source| WriteError::Upload { pack: id, source };
            crate::store::put_pack(&os, &id, bytes, multipart)
                .await
                .map_err(upload)?;
            crate::store::sync_pack(sync_root, id).await.map_err(upload)
        });
        Ok(())
    }

    /// Publishes staged chunks as the next version of `resource`.
    pub async fn commit(
        &self,
        staged: Staged,
        resource: &ResourceId,
        kind: SourceKind,
        tree: Vec<TreeEntry>,
    ) -> Result<Committed, CommitError> {
        // Reused chunks must still be there: a concurrent gc may have removed their pack.
        for pack in &staged.reused_packs {
            match self.os.head(&pack_path(pack)).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(CommitError::PackVanished(*pack));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !staged.new_packs.is_empty() {
            let body = ChunkIndex::encode(staged.new_packs.iter().map(|(id, b)| (id, b)));
            let name = blake3::hash(&body).to_hex().to_string();
            self.os
                .put(&Path::from_iter(["index", &name]), PutPayload::from(body))
                .await?;
        }
        let created_unix_ms = prewarm_core::Clock::system().now_ms() as i64;
        const ATTEMPTS: u32 = 16;
        for _ in 0..ATTEMPTS {
            let parent = self.latest(resource).await?;
            let version = parent.map_or(Version::FIRST, Version::next);
            let manifest = Manifest {
                state: StateRef {
                    resource: resource.clone(),
                    version,
                },
                parent,
                created_unix_ms,
                logical_size: staged.stats.logical_bytes,
                kind,
                chunks: staged.chunks.clone(),
                tree: tree.clone(),
                chunker: staged.chunker,
                delta_base: None,
                chain_depth: 0,
            };
            // Store the chunk list as a delta of the parent's when that is much smaller.
            let hint = staged
                .parent_hint
                .as_ref()
                .filter(|m| Some(m.state.version) == parent && &m.state.resource == resource);
            let loaded = match (parent, hint) {
                (Some(p), None) => self
                    .manifest(&StateRef {
                        resource: resource.clone(),
                        version: p,
                    })
                    .await
                    .ok(),
                _ => None,
            };
            let base: Option<&Manifest> = hint.or(loaded.as_ref());
            let delta = base.and_then(|b| manifest.encode_delta(b));
            let bytes = delta.unwrap_or_else(|| manifest.encode());
            // Never write what cannot be read back.
            let check = Manifest::decode_raw(&bytes).and_then(|raw| raw.resolve(base));
            match check {
                Ok(back) if back.chunks == manifest.chunks && back.tree == manifest.tree => {}
                Ok(_) => {
                    return Err(CommitError::Invalid(
                        "manifest does not read back as written".into(),
                    ));
                }
                Err(e) => return Err(CommitError::Invalid(e.to_string())),
            }
            let manifest_bytes = bytes.len() as u64;
            let put = self
                .os
                .put_opts(
                    &manifest_path(&manifest.state),
                    PutPayload::from(bytes),
                    PutMode::Create.into(),
                )
                .await;
            match put {
                Ok(_) => {
                    self.absorb(&staged.new_packs);
                    let mut stats = staged.stats;
                    stats.new_stored_bytes += manifest_bytes;
                    return Ok(Committed {
                        state: manifest.state,
                        parent,
                        stats,
                        manifest_bytes,
                    });
                }
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommitError::Contended(ATTEMPTS))
    }

    fn absorb(&self, packs: &[(PackId, Vec<PackedBlob>)]) {
        let mut guard = self.index.write().expect("index lock poisoned");
        // Copies the index only if a reader still holds the old snapshot.
        let idx = std::sync::Arc::make_mut(&mut guard);
        for (id, blobs) in packs {
            idx.add_pack(*id, blobs.clone());
        }
    }
}
