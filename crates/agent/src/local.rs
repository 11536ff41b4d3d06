//! The manifests of the states this capacity holds (saved beside the state space, at
//! `<cache>/manifests/<resource>/v<N>`, in the store's checksummed encoding) and the chunk map
//! built from them: which chunk lives where locally, for delta transfers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prewarm_core::{ChunkHash, ResourceId, Version};
use prewarm_store::Manifest;

use crate::install::LocalCopy;
use crate::layout::Layout;

/// Held manifests and the chunk map.
#[derive(Default)]
pub struct LocalChunks {
    dir: PathBuf,
    manifests: HashMap<(ResourceId, Version), (Arc<Manifest>, Arc<Layout>)>,
    /// Chunk → (state holding it, offset in that state's stream).
    chunks: HashMap<ChunkHash, ((ResourceId, Version), u64)>,
    /// Records of held states' large files (see [`crate::trust`]).
    sigs: HashMap<(ResourceId, Version), crate::trust::Sigs>,
}

/// Where the manifest of `resource@version` is kept under `dir`.
pub fn manifest_path(dir: &Path, resource: &ResourceId, version: Version) -> PathBuf {
    dir.join(resource.as_str())
        .join(format!("v{}", version.get()))
}

impl LocalChunks {
    /// An empty map whose manifests live in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        LocalChunks {
            dir,
            ..Default::default()
        }
    }

    /// Loads the saved manifest of a held state (at `state_path`) after checking the state's
    /// tree is complete for it; `false` when the manifest is missing or damaged or the tree is
    /// incomplete (the caller then drops the state: it cannot be served, verified or reused).
    pub fn load(&mut self, resource: &ResourceId, version: Version, state_path: &Path) -> bool {
        let p = manifest_path(&self.dir, resource, version);
        let m = match std::fs::read(&p).map(|b| Manifest::decode(&b)) {
            Ok(Ok(m)) if &m.state.resource == resource && m.state.version == version => m,
            Ok(Ok(_)) => {
                tracing::warn!("{}: manifest of another state", p.display());
                return false;
            }
            Ok(Err(e)) => {
                tracing::warn!("{}: damaged manifest: {e}", p.display());
                return false;
            }
            Err(e) => {
                tracing::warn!("{}: {e}", p.display());
                return false;
            }
        };
        if let Err(why) = crate::layout::check_complete(&m, state_path) {
            tracing::warn!("{resource}@{version}: incomplete: {why}");
            return false;
        }
        self.add(Arc::new(m), state_path);
        true
    }

    /// Saves `m` (installed at `state_path`) and maps its chunks.
    pub fn save(&mut self, m: Arc<Manifest>, state_path: &Path) -> std::io::Result<()> {
        let p = manifest_path(&self.dir, &m.state.resource, m.state.version);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, m.encode())?;
        std::fs::rename(&tmp, &p)?;
        self.add(m, state_path);
        Ok(())
    }

    fn add(&mut self, m: Arc<Manifest>, state_path: &Path) {
        let key = (m.state.resource.clone(), m.state.version);
        for c in &m.chunks {
            self.chunks.entry(c.hash).or_insert((key.clone(), c.offset));
        }
        let layout = Arc::new(Layout::new(&m, state_path));
        self.manifests.insert(key, (m, layout));
    }

    /// Keeps the records of the installed `resource@version`'s large files.
    pub fn set_sigs(&mut self, resource: &ResourceId, version: Version, s: crate::trust::Sigs) {
        self.sigs.insert((resource.clone(), version), s);
    }

    /// The held `resource@version` as the older version of a patch in place: its manifest
    /// and its files unchanged since install (none when no record was kept).
    pub fn adoptable(
        &self,
        resource: &ResourceId,
        version: Version,
    ) -> Option<crate::trust::Adopted> {
        let key = (resource.clone(), version);
        let (m, lay) = self.manifests.get(&key)?;
        let trusted = self
            .sigs
            .get(&key)
            .map(|s| s.unchanged(lay))
            .unwrap_or_default();
        Some(crate::trust::Adopted {
            old: m.clone(),
            trusted,
        })
    }

    /// Forgets an evicted state (and deletes its saved manifest).
    pub fn remove(&mut self, resource: &ResourceId, version: Version) {
        let key = (resource.clone(), version);
        self.sigs.remove(&key);
        if let Some((m, _)) = self.manifests.remove(&key) {
            for c in &m.chunks {
                if self.chunks.get(&c.hash).is_some_and(|(k, _)| *k == key) {
                    self.chunks.remove(&c.hash);
                }
            }
            // Another held state may hold the same chunks: map them again.
            let others: Vec<_> = self.manifests.values().map(|(m, _)| m.clone()).collect();
            for o in others {
                let k = (o.state.resource.clone(), o.state.version);
                for c in &o.chunks {
                    self.chunks.entry(c.hash).or_insert((k.clone(), c.offset));
                }
            }
        }
        let _ = std::fs::remove_file(manifest_path(&self.dir, resource, version));
    }

    /// Where each of `m`'s chunks can be copied from locally, with the states involved (the
    /// caller leases them for the install's duration).
    pub fn sources_for(
        &self,
        m: &Manifest,
    ) -> (HashMap<ChunkHash, LocalCopy>, Vec<(ResourceId, Version)>) {
        let mut out = HashMap::new();
        let mut states = Vec::new();
        for c in &m.chunks {
            if let Some((key, offset)) = self.chunks.get(&c.hash) {
                if *key == (m.state.resource.clone(), m.state.version) {
                    continue;
                }
                let (_, layout) = &self.manifests[key];
                if !states.contains(key) {
                    states.push(key.clone());
                }
                out.insert(
                    c.hash,
                    LocalCopy {
                        layout: layout.clone(),
                        offset: *offset,
                    },
                );
            }
        }
        (out, states)
    }

    /// States whose manifests are loaded.
    pub fn held(&self) -> impl Iterator<Item = &(ResourceId, Version)> {
        self.manifests.keys()
    }
}
