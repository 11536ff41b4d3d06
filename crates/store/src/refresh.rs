//! Keeping a long-running handle's chunk index current: other processes commit packs and
//! their index objects while a server runs. A refresh loads only the index objects it has not
//! seen and merges them into the index it holds; when objects it loaded are gone (`gc`
//! consolidated them, `repair` rewrote them) or a new one is damaged, it reloads everything,
//! as at open.

use std::collections::HashSet;
use std::sync::Arc;

use object_store::path::Path;

use crate::index::ChunkIndex;
use crate::store::{OpenError, Store};

impl Store {
    /// Every index object merged, with the objects it was loaded from; an index rebuilt from
    /// the packs' trailers when an object is damaged (with a warning).
    pub(crate) async fn load_index_seen(&self) -> Result<(ChunkIndex, HashSet<Path>), OpenError> {
        let paths = self
            .index_objects()
            .await
            .map_err(|e| self.backend_err(e))?;
        let (idx, damaged) = self.load_objects(ChunkIndex::default(), &paths).await?;
        if damaged.is_empty() {
            return Ok((idx, paths.into_iter().collect()));
        }
        for (path, e) in &damaged {
            tracing::warn!(store = %self.location(), object = %path, error = %e,
                "index object damaged; using an index rebuilt from the packs (run `prewarm repair`)");
        }
        let scan = self.scan_packs().await.map_err(|e| self.backend_err(e))?;
        Ok((scan.index, paths.into_iter().collect()))
    }

    /// Picks up packs committed by other processes since this handle was opened or last
    /// refreshed (a long-running server calls it when it meets a version or chunk it does not
    /// know): only index objects not seen yet are read. Refreshes run one at a time, and what
    /// one loads is merged into the index as it is then (a commit by this handle may have
    /// added to it meanwhile), never put in place of it.
    pub async fn refresh_index(&self) -> Result<(), OpenError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let paths = self
            .index_objects()
            .await
            .map_err(|e| self.backend_err(e))?;
        let listed: HashSet<&Path> = paths.iter().collect();
        let seen = self.index_seen.lock().expect("index lock poisoned").clone();
        if seen.iter().all(|p| listed.contains(p)) {
            let fresh: Vec<Path> = paths
                .iter()
                .filter(|p| !seen.contains(*p))
                .cloned()
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            let (part, damaged) = self.load_objects(ChunkIndex::default(), &fresh).await?;
            if damaged.is_empty() {
                let mut guard = self.index.write().expect("index lock poisoned");
                Arc::make_mut(&mut guard).merge(part);
                self.index_seen
                    .lock()
                    .expect("index lock poisoned")
                    .extend(fresh);
                return Ok(());
            }
        }
        let (idx, seen) = self.load_index_seen().await?;
        *self.index.write().expect("index lock poisoned") = Arc::new(idx);
        *self.index_seen.lock().expect("index lock poisoned") = seen;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
