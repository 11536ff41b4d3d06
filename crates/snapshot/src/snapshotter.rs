//! [`Snapshotter`]: turns a file, a directory tree or an in-memory buffer into a new version.
//!
//! A directory is walked in sorted order (deterministic manifests); directories, regular files
//! and symlinks are recorded with their modes, and anything else (sockets, FIFOs, devices) is
//! refused with an error naming it. File contents form one logical stream, each file chunked
//! on its own so it starts on a chunk boundary.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prewarm_core::{Meter, ResourceId};
use prewarm_store::{
    ChunkerParams, CommitError, Committed, EntryKind, Manifest, Segment, Source, SourceKind, Store,
    TreeEntry, WriteError,
};

/// Why a snapshot failed. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The source does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Source {
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A special file (socket, FIFO, device) cannot be snapshotted.
    #[error("{path} is a {what}; only regular files, directories and symlinks can be snapshotted")]
    SpecialFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// Storing chunks failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Publishing failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// The result of a snapshot: a new version, or the latest one when nothing changed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotOutcome {
    /// The version committed (or the unchanged latest one).
    pub committed: Committed,
    /// True when the source matched the latest version and no version was created.
    pub unchanged: bool,
}

/// Takes snapshots into a store.
#[derive(Clone)]
pub struct Snapshotter {
    store: Arc<Store>,
    chunker: ChunkerParams,
    skip_unchanged: bool,
    /// Reuse files whose size and mtime did not change without reading them.
    trust_mtime: bool,
    /// Logical bytes stored so far, out of the source's size (for a progress display).
    meter: Option<Arc<Meter>>,
}

impl Snapshotter {
    /// A snapshotter with the default chunk size that skips unchanged sources.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            chunker: ChunkerParams::default(),
            skip_unchanged: true,
            trust_mtime: true,
            meter: None,
        }
    }

    /// Sets the chunking parameters (the state-granularity knob).
    pub fn with_chunker(mut self, chunker: ChunkerParams) -> Self {
        self.chunker = chunker;
        self
    }

    /// Whether a source identical to the latest version creates a new version anyway.
    pub fn always_commit(mut self) -> Self {
        self.skip_unchanged = false;
        self
    }

    /// Reads every file, even those whose size and mtime say they did not change (for
    /// sources whose tools restore mtimes after editing).
    pub fn reread_all(mut self) -> Self {
        self.trust_mtime = false;
        self
    }

    /// Reports progress on `meter`: its total is set to the source's size and its count to
    /// the logical bytes stored so far.
    pub fn with_meter(mut self, meter: Arc<Meter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Commits an in-memory buffer as the next version of `resource`.
    pub async fn commit_bytes(
        &self,
        resource: &ResourceId,
        bytes: Bytes,
    ) -> Result<SnapshotOutcome, SnapshotError> {
        self.run(
            resource,
            SourceKind::Buffer,
            vec![Segment::bytes(bytes)],
            Vec::new(),
        )
        .await
    }

    /// Snapshots a file or a directory tree as the next version of `resource`.
    pub async fn snapshot_path(
        &self,
        resource: &ResourceId,
        path: &Path,
    ) -> Result<SnapshotOutcome, SnapshotError> {
        let root = path.to_owned();
        let walked = tokio::task::spawn_blocking(move || walk_source(&root))
            .await
            .map_err(|e| SnapshotError::Source {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })??;
        match walked {
            Walked::File(p) => {
                self.run(
                    resource,
                    SourceKind::File,
                    vec![Segment::file(p)],
                    Vec::new(),
                )
                .await
            }
            Walked::Tree(tree, files) => {
                let segments = files.into_iter().map(Segment::file).collect();
                self.run(resource, SourceKind::Directory, segments, tree)
                    .await
            }
        }
    }

    async fn run(
        &self,
        resource: &ResourceId,
        kind: SourceKind,
        segments: Vec<Segment>,
        mut tree: Vec<TreeEntry>,
    ) -> Result<SnapshotOutcome, SnapshotError> {
        // The latest version, when cut the same way, tells the writer which regions to check
        // by fingerprint instead of re-hashing and re-chunking them.
        let t0 = std::time::Instant::now();
        let latest = match self
            .store
            .latest(resource)
            .await
            .map_err(CommitError::from)?
        {
            Some(v) => self.store.resolve(resource, Some(v)).await.ok(),
            None => None,
        };
        let mut segments = segments;
        if let Some(m) = latest
            .as_ref()
            .filter(|m| m.chunker == self.chunker && m.kind == kind)
        {
            let trust = (kind == SourceKind::Directory && self.trust_mtime)
                .then(|| prewarm_core::Clock::system().now_ms() as i64 - RACY_MS);
            attach_previous(m, &tree, &mut segments, &self.store.index(), trust);
        }
        let t1 = std::time::Instant::now();
        let meter = self.meter.clone().unwrap_or_default();
        meter.set_total(source_size(&segments, &tree));
        let mut staged = self
            .store
            .write_metered(segments, self.chunker, &meter)
            .await?;
        let t2 = std::time::Instant::now();
        // Files may have changed size while being read: record what was actually read.
        let mut offset = 0;
        let mut lens = staged.segment_lens.iter();
        for e in tree.iter_mut().filter(|e| e.kind == EntryKind::File) {
            e.offset = offset;
            e.size = *lens.next().expect("one segment per file");
            offset += e.size;
        }
        if let Some(m) = latest.as_ref().filter(|_| self.skip_unchanged) {
            let same = m.kind == kind
                && m.chunks.len() == staged.chunks.len()
                && m.chunks
                    .iter()
                    .zip(&staged.chunks)
                    .all(|(a, b)| a.hash == b.hash && a.length == b.length)
                && m.tree == tree;
            if same {
                let mut stats = staged.stats;
                stats.new_stored_bytes = 0;
                return Ok(SnapshotOutcome {
                    committed: Committed {
                        state: m.state.clone(),
                        parent: m.parent,
                        stats,
                        manifest_bytes: 0,
                    },
                    unchanged: true,
                });
            }
        }
        if let Some(m) = latest {
            staged.set_parent_hint(m);
        }
        let committed = self.store.commit(staged, resource, kind, tree).await?;
        tracing::debug!(
            %resource,
            latest_ms = (t1 - t0).as_secs_f64() * 1e3,
            write_ms = (t2 - t1).as_secs_f64() * 1e3,
            commit_ms = t2.elapsed().as_secs_f64() * 1e3,
            "snapshot phases"
        );
        Ok(SnapshotOutcome {
            committed,
            unchanged: false,
        })
    }
}

/// The bytes a snapshot will read: the tree's files, else the one file's or buffer's size
/// (0 when it cannot be told; the display then shows a count without a total).
fn source_size(segments: &[Segment], tree: &[TreeEntry]) -> u64 {
    if !tree.is_empty() {
        return tree
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum();
    }
    segments
        .iter()
        .map(|s| match &s.source {
            Source::File(p) => std::fs::metadata(p).map_or(0, |m| m.len()),
            Source::Bytes(b) => b.len() as u64,
        })
        .sum()
}

/// Gives each segment the chunks its counterpart (same path) had in `m`.
/// Files modified this close to the walk may change again within the same mtime tick
/// ("racily clean", as git calls it): they are always read.
const RACY_MS: i64 = 2_000;

/// Gives each segment the chunks its counterpart (same path) had in `m`. With
/// `trust_before_ms`, a file whose size and mtime match its old entry, whose mtime is older
/// than that instant, and whose chunks the store still holds is marked unchanged: it will not
/// be read at all.
fn attach_previous(
    m: &Manifest,
    tree: &[TreeEntry],
    segments: &mut [Segment],
    index: &prewarm_store::ChunkIndex,
    trust_before_ms: Option<i64>,
) {
    match m.kind {
        SourceKind::File | SourceKind::Buffer => {
            if let Some(seg) = segments.first_mut() {
                seg.previous = m.chunks.clone();
            }
        }
        SourceKind::Directory => {
            let old: HashMap<&[u8], &TreeEntry> = m
                .tree
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| (e.path.as_slice(), e))
                .collect();
            let files = tree.iter().filter(|e| e.kind == EntryKind::File);
            for (seg, e) in segments.iter_mut().zip(files) {
                if let Some(o) = old.get(e.path.as_slice()) {
                    seg.previous = m.chunks_in(o.offset, o.size).to_vec();
                    seg.unchanged = trust_before_ms.is_some_and(|t| e.mtime_unix_ms < t)
                        && o.size == e.size
                        && o.mtime_unix_ms == e.mtime_unix_ms
                        && seg.previous.iter().all(|c| index.contains(&c.hash));
                }
            }
        }
    }
}

enum Walked {
    File(PathBuf),
    Tree(Vec<TreeEntry>, Vec<PathBuf>),
}

fn walk_source(root: &Path) -> Result<Walked, SnapshotError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Source { path, source }
    };
    let meta = std::fs::metadata(root).map_err(err(root))?;
    if meta.is_file() {
        // Open it now so an unreadable file fails before any work.
        std::fs::File::open(root).map_err(err(root))?;
        return Ok(Walked::File(root.to_owned()));
    }
    if !meta.is_dir() {
        return Err(SnapshotError::SpecialFile {
            path: root.to_owned(),
            what: special_kind(&meta.file_type()),
        });
    }
    let mut tree = Vec::new();
    let mut files = Vec::new();
    walk_dir(root, &[], &mut tree, &mut files)?;
    Ok(Walked::Tree(tree, files))
}

fn walk_dir(
    dir: &Path,
    rel: &[u8],
    tree: &mut Vec<TreeEntry>,
    files: &mut Vec<PathBuf>,
) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError::Source {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in entries {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|source| SnapshotError::Source {
            path: path.clone(),
            source,
        })?;
        let mut rel_path = rel.to_vec();
        if !rel_path.is_empty() {
            rel_path.push(b'/');
        }
        rel_path.extend_from_slice(entry.file_name().as_bytes());
        let ft = meta.file_type();
        let mut e = TreeEntry {
            path: rel_path.clone(),
            kind: EntryKind::File,
            mode: meta.permissions().mode() & 0o7777,
            size: 0,
            offset: 0,
            symlink_target: Vec::new(),
            mtime_unix_ms: meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
        };
        if ft.is_dir() {
            e.kind = EntryKind::Dir;
            tree.push(e);
            walk_dir(&path, &rel_path, tree, files)?;
        } else if ft.is_file() {
            e.size = meta.len();
            tree.push(e);
            files.push(path);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|source| SnapshotError::Source {
                path: path.clone(),
                source,
            })?;
            e.kind = EntryKind::Symlink;
            e.symlink_target = target.as_os_str().as_bytes().to_vec();
            tree.push(e);
        } else {
            return Err(SnapshotError::SpecialFile {
                path,
                what: special_kind(&ft),
            });
        }
    }
    Ok(())
}

fn special_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}
