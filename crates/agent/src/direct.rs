//! Chunks read straight from the object store (`--data-source store|auto`): when the
//! coordinator's store is an object store (S3 and the like) it says where in its welcome, and
//! an agent that can reach it reads packs itself — ranged, coalesced reads through
//! `object_store`, several packs at once — instead of pulling every byte through the
//! coordinator's data plane, whose NIC and CPU would otherwise cap the fleet. The coordinator
//! stays the control plane (loads, manifests, acks). What is read is handed to the same
//! writer as the data plane's chunks: verified before it is written, resumable, never visible
//! before the install's rename.

use std::sync::Arc;

use prewarm_store::{ChunkRef, FetchError, Store};
use prewarm_transfer::{Connection, FetchStats, Pacer, Received};
use tokio::sync::mpsc;

/// Where an install's missing chunks come from.
pub enum ChunkFrom<'a> {
    /// The coordinator's data plane.
    Plane(&'a mut Connection),
    /// The object store, read directly.
    Store(&'a Store),
}

impl ChunkFrom<'_> {
    /// Fetches `refs`, handing received (unverified) chunks to `sink` in batches.
    pub async fn fetch(
        &mut self,
        refs: &[ChunkRef],
        pacer: Option<&Pacer>,
        sink: &mpsc::Sender<Vec<Received>>,
    ) -> Result<FetchStats, crate::install::InstallError> {
        match self {
            Self::Plane(conn) => Ok(conn.fetch(refs, pacer, sink).await?),
            Self::Store(store) => Ok(fetch_from_store(store, refs, pacer, sink).await?),
        }
    }
}

/// Chunks asked of the store at once (~4 MiB at the ~10 KiB average chunk): the store groups
/// them by pack and `object_store` coalesces nearby ranges into one read.
const BATCH: usize = 400;

/// Batches in flight: enough to keep a remote store's latency off the critical path.
const IN_FLIGHT: usize = 4;

/// Why a direct read failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The store could not be read, or lacks a chunk even after its index was refreshed.
    #[error("reading chunks from the object store: {0}")]
    Fetch(#[from] FetchError),
    /// The install stopped taking chunks (its writer failed).
    #[error("the install's writer stopped")]
    WriterGone,
}

/// Reads `refs` from `store` and hands them to `sink`: batches of [`BATCH`] chunks,
/// [`IN_FLIGHT`] at once; `pacer` bounds a predictive transfer's rate. A chunk the store's
/// index does not know (committed after this agent opened it) makes it refresh the index once.
pub async fn fetch_from_store(
    store: &Store,
    refs: &[ChunkRef],
    pacer: Option<&Pacer>,
    sink: &mpsc::Sender<Vec<Received>>,
) -> Result<FetchStats, DirectError> {
    use futures::StreamExt;
    let known = store.index();
    if refs.iter().any(|r| !known.contains(&r.hash)) {
        store
            .refresh_index()
            .await
            .map_err(|e| FetchError::Source(e.to_string()))?;
    }
    let batches = (0..refs.len()).step_by(BATCH).map(|start| {
        let end = (start + BATCH).min(refs.len());
        async move {
            if let Some(p) = pacer {
                p.take(
                    refs[start..end]
                        .iter()
                        .map(|r| u64::from(r.stored_length))
                        .sum(),
                )
                .await;
            }
            let hashes: Vec<_> = refs[start..end].iter().map(|r| r.hash).collect();
            store.read_stored(&hashes).await.map(|got| (start, got))
        }
    });
    let mut reads = futures::stream::iter(batches).buffer_unordered(IN_FLIGHT);
    let mut stats = FetchStats::default();
    while let Some(got) = reads.next().await {
        let (start, got) = got?;
        let batch: Vec<Received> = got
            .into_iter()
            .enumerate()
            .map(|(k, (loc, stored))| {
                stats.wire_bytes += stored.len() as u64;
                stats.chunks += 1;
                Received {
                    index: start + k,
                    codec: loc.codec,
                    stored,
                }
            })
            .collect();
        sink.send(batch)
            .await
            .map_err(|_| DirectError::WriterGone)?;
    }
    Ok(stats)
}

/// The store an agent reads directly, opened on first use and kept while the coordinator
/// advertises the same location.
#[derive(Default)]
pub struct DirectStore {
    open: tokio::sync::Mutex<Option<Opened>>,
}

/// A location and what opening it gave.
type Opened = (String, Result<Arc<Store>, String>);

impl DirectStore {
    /// The store at `location`, opened with this process's environment (credentials, the
    /// endpoint); the error (kept, not retried until the location changes) says why not.
    pub async fn get(&self, location: &str) -> Result<Arc<Store>, String> {
        let mut slot = self.open.lock().await;
        if let Some((_, got)) = slot.as_ref().filter(|(at, _)| at == location) {
            return got.clone();
        }
        let got = Store::open(location)
            .await
            .map(Arc::new)
            .map_err(|e| e.to_string());
        match &got {
            Ok(_) => tracing::info!(store = location, "reading chunks from the object store"),
            Err(e) => tracing::warn!(store = location, error = %e,
                "cannot open the coordinator's object store; chunks come through the coordinator"),
        }
        *slot = Some((location.to_owned(), got.clone()));
        got
    }
}
