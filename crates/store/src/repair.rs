//! Rebuilding the chunk index from the packs themselves. Every pack lists its blobs in its
//! trailer ([`crate::pack`]), so the index objects are a cache: when one is damaged, the
//! store opens with an index rebuilt from the trailers of every pack (nothing becomes
//! unreadable, nothing is written), `verify` reports the damage (exit 1), and
//! [`Store::repair`] (`prewarm repair`) publishes the rebuilt index and removes the damaged
//! objects. `verify` also reads every pack's trailer and checks it against the index, so a
//! damaged trailer is found before the day it would be needed.

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::index::ChunkIndex;
use crate::pack::{HEAD_LEN, PackId, PackedBlob, decode_trailer, trailer_start};
use crate::store::{Store, pack_id_of};

/// Packs whose trailers are read at once.
const PARALLEL: usize = 8;

/// What [`Store::repair`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Index objects that could not be decoded (removed).
    pub damaged_index_objects: Vec<String>,
    /// Packs whose trailers were read into the new index.
    pub packs_indexed: u64,
    /// Packs whose trailers are damaged (their chunks are not in the new index).
    pub damaged_packs: Vec<String>,
    /// The index object published (`None`: nothing was damaged, nothing written).
    pub published: Option<String>,
}

/// Why a repair could not run.
#[derive(Debug, thiserror::Error)]
#[error("store backend: {0}")]
pub struct RepairError(String);

/// The trailers of every pack in a store: what they list, and the packs whose trailer is
/// damaged (with why).
pub(crate) struct Scan {
    pub index: ChunkIndex,
    pub damaged: Vec<(PackId, String)>,
}

impl Store {
    /// Reads the trailer of the pack at `path` (`size` bytes) with ranged reads.
    pub(crate) async fn pack_trailer(
        &self,
        path: &Path,
        size: u64,
    ) -> Result<Vec<PackedBlob>, String> {
        if size < HEAD_LEN + 8 {
            return Err("not a pack (truncated)".into());
        }
        let got = self
            .os
            .get_ranges(path, &[0..HEAD_LEN, size - 8..size])
            .await
            .map_err(|e| e.to_string())?;
        let start = trailer_start(&got[0], &got[1], size)?;
        let trailer = self
            .os
            .get_range(path, start..size - 8)
            .await
            .map_err(|e| e.to_string())?;
        decode_trailer(&trailer, start)
    }

    /// Reads every pack's trailer.
    pub(crate) async fn scan_packs(&self) -> Result<Scan, object_store::Error> {
        let metas: Vec<_> = self
            .os
            .list(Some(&Path::from("data")))
            .try_collect()
            .await?;
        let mut reads = futures::stream::iter(
            metas
                .into_iter()
                .filter_map(|m| pack_id_of(&m.location).map(|id| (id, m.location, m.size))),
        )
        .map(|(id, path, size)| async move { (id, self.pack_trailer(&path, size).await) })
        .buffer_unordered(PARALLEL);
        let mut scan = Scan {
            index: ChunkIndex::default(),
            damaged: Vec::new(),
        };
        while let Some((id, got)) = reads.next().await {
            match got {
                Ok(blobs) => scan.index.add_pack(id, blobs),
                Err(e) => scan.damaged.push((id, e)),
            }
        }
        scan.damaged.sort_by_key(|d| d.0);
        Ok(scan)
    }

    /// Publishes an index rebuilt from every pack's trailer when an index object is damaged,
    /// then removes the damaged ones (packs are never touched). Nothing is written when
    /// every index object decodes.
    pub async fn repair(&self) -> Result<RepairReport, RepairError> {
        let be = |e: object_store::Error| RepairError(e.to_string());
        let (_, damaged) = self
            .load_index_parts()
            .await
            .map_err(|e| RepairError(e.to_string()))?;
        let mut report = RepairReport {
            damaged_index_objects: damaged.iter().map(|(p, _)| p.to_string()).collect(),
            ..RepairReport::default()
        };
        if damaged.is_empty() {
            return Ok(report);
        }
        let scan = self.scan_packs().await.map_err(be)?;
        report.packs_indexed = scan.index.packs().len() as u64;
        report.damaged_packs = scan
            .damaged
            .iter()
            .map(|(id, e)| format!("{id}: {e}"))
            .collect();
        let body = ChunkIndex::encode(scan.index.packs().iter());
        let name = blake3::hash(&body).to_hex().to_string();
        let path = Path::from_iter(["index", &name]);
        self.os
            .put(&path, PutPayload::from(body))
            .await
            .map_err(be)?;
        for (p, _) in damaged.iter().filter(|(p, _)| *p != path) {
            self.os.delete(p).await.map_err(be)?;
        }
        report.published = Some(path.to_string());
        self.refresh_index()
            .await
            .map_err(|e| RepairError(e.to_string()))?;
        Ok(report)
    }
}
