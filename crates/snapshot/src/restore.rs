//! Restoring a version: to a file, a directory, or a buffer. Every chunk is verified by the
//! [`ChunkSource`]; bytes go to a temporary path beside the destination, which is renamed
//! into place only when everything was written. A failed restore leaves nothing at the
//! destination (and removes its temporary path).
//!
//! Fetching the next window of chunks overlaps with writing the current one.

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prewarm_core::Meter;
use prewarm_store::{ChunkRef, ChunkSource, EntryKind, FetchError, Manifest, SourceKind};

/// Raw bytes fetched per window.
const WINDOW_BYTES: u64 = 32 << 20;

/// Why a restore failed. The destination was not created.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The destination already exists; prewarm never overwrites.
    #[error("destination {0} already exists; choose a new path")]
    DestinationExists(PathBuf),
    /// The destination's parent directory is missing or unusable.
    #[error("cannot restore into {path}: {source}")]
    Parent {
        /// The parent directory.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A chunk could not be fetched or failed verification.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A buffer restore would exceed the caller's limit.
    #[error("state is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The state's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// What a restore wrote.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// Bytes written.
    pub bytes: u64,
    /// Chunks verified.
    pub chunks: u64,
    /// Files written.
    pub files: u64,
}

/// Removes a temporary path on drop unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
}

fn temp_beside(dest: &Path) -> Result<PathBuf, RestoreError> {
    let name = dest.file_name().ok_or_else(|| RestoreError::Parent {
        path: dest.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "destination has no file name",
        ),
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(RestoreError::Parent {
            path: parent,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".prewarm-tmp-{}-{nanos}", std::process::id()));
    Ok(parent.join(tmp_name))
}

/// Restores `manifest` to `dest` (a file for file and buffer snapshots, a directory for
/// directory snapshots). `dest` must not exist.
pub async fn restore<S: ChunkSource>(
    source: &S,
    manifest: &Manifest,
    dest: &Path,
) -> Result<RestoreReport, RestoreError> {
    restore_metered(source, manifest, dest, &Meter::new()).await
}

/// [`restore`], counting on `meter` the bytes written and verified out of the state's size.
pub async fn restore_metered<S: ChunkSource>(
    source: &S,
    manifest: &Manifest,
    dest: &Path,
    meter: &Meter,
) -> Result<RestoreReport, RestoreError> {
    meter.set_total(manifest.logical_size);
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(RestoreError::DestinationExists(dest.to_owned()));
    }
    let tmp = temp_beside(dest)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Io { path, source }
    };
    let files: Vec<OutFile> = match manifest.kind {
        SourceKind::Directory => {
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            for e in manifest.tree.iter().filter(|e| e.kind == EntryKind::Dir) {
                let p = tmp.join(std::ffi::OsStr::from_bytes(&e.path));
                std::fs::create_dir(&p).map_err(io(&p))?;
            }
            manifest
                .tree
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| OutFile {
                    path: tmp.join(std::ffi::OsStr::from_bytes(&e.path)),
                    offset: e.offset,
                    size: e.size,
                    meta: Some((e.mode, e.mtime_unix_ms)),
                })
                .collect()
        }
        SourceKind::File | SourceKind::Buffer => vec![OutFile {
            path: tmp.clone(),
            offset: 0,
            size: manifest.logical_size,
            meta: None,
        }],
    };
    let mut writer = StreamWriter {
        files,
        pos: 0,
        cur: None,
        report: RestoreReport::default(),
    };
    let windows = windows(&manifest.chunks);
    let mut pending = match windows.first() {
        Some(w) => Some(source.fetch(w).await?),
        None => None,
    };
    for i in 0..windows.len() {
        let data = pending.take().expect("the current window was fetched");
        let refs = windows[i].to_vec();
        let write = tokio::task::spawn_blocking(move || {
            let r = writer.write_window(&refs, &data);
            (writer, r)
        });
        let next = async {
            match windows.get(i + 1) {
                Some(w) => source.fetch(w).await.map(Some),
                None => Ok(None),
            }
        };
        let (written, fetched) = tokio::join!(write, next);
        let (w, r) = written.map_err(|e| RestoreError::Io {
            path: tmp.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        writer = w;
        r?;
        meter.add(windows[i].iter().map(|c| u64::from(c.length)).sum());
        pending = fetched?;
    }
    let report = writer.finish()?;
    if manifest.kind == SourceKind::Directory {
        finish_tree(manifest, &tmp)?;
    }
    // Nothing partial is ever visible at dest: one rename publishes the whole state.
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(RestoreError::DestinationExists(dest.to_owned()));
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    guard.0 = None;
    Ok(report)
}

/// Restores a version into memory, refusing states over `limit` bytes.
pub async fn restore_to_bytes<S: ChunkSource>(
    source: &S,
    manifest: &Manifest,
    limit: u64,
) -> Result<Bytes, RestoreError> {
    if manifest.logical_size > limit {
        return Err(RestoreError::TooLarge {
            size: manifest.logical_size,
            limit,
        });
    }
    let mut out = Vec::with_capacity(manifest.logical_size as usize);
    for w in windows(&manifest.chunks) {
        for b in source.fetch(w).await? {
            out.extend_from_slice(&b);
        }
    }
    Ok(Bytes::from(out))
}

fn windows(chunks: &[ChunkRef]) -> Vec<&[ChunkRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut acc = 0u64;
    for (i, c) in chunks.iter().enumerate() {
        acc += u64::from(c.length);
        if acc >= WINDOW_BYTES {
            out.push(&chunks[start..=i]);
            start = i + 1;
            acc = 0;
        }
    }
    if start < chunks.len() {
        out.push(&chunks[start..]);
    }
    out
}

/// One file to write: where, which bytes of the stream, and its mode and mtime.
struct OutFile {
    path: PathBuf,
    offset: u64,
    size: u64,
    /// Mode and modification time (Unix ms) to set on close; none for single-file states.
    meta: Option<(u32, i64)>,
}

/// Writes the logical stream into the files that tile it, in order.
struct StreamWriter {
    /// (path, offset in stream, size), in stream order.
    files: Vec<OutFile>,
    /// The file being written or next to write.
    pos: usize,
    cur: Option<std::io::BufWriter<File>>,
    report: RestoreReport,
}

impl StreamWriter {
    fn write_window(&mut self, refs: &[ChunkRef], data: &[Bytes]) -> Result<(), RestoreError> {
        for (r, bytes) in refs.iter().zip(data) {
            // Close files that end at or before this chunk (including empty ones).
            while self.pos < self.files.len() {
                let (off, size) = (self.files[self.pos].offset, self.files[self.pos].size);
                if off + size > r.offset {
                    break;
                }
                self.close_current()?;
            }
            if self.cur.is_none() {
                let path = &self.files[self.pos].path;
                let f = File::create(path).map_err(|source| RestoreError::Io {
                    path: path.clone(),
                    source,
                })?;
                self.cur = Some(std::io::BufWriter::with_capacity(1 << 20, f));
            }
            let path = &self.files[self.pos].path;
            self.cur
                .as_mut()
                .expect("opened above")
                .write_all(bytes)
                .map_err(|source| RestoreError::Io {
                    path: path.clone(),
                    source,
                })?;
            self.report.bytes += bytes.len() as u64;
            self.report.chunks += 1;
        }
        Ok(())
    }

    /// Flushes the current file (creating it if empty) and moves to the next.
    fn close_current(&mut self) -> Result<(), RestoreError> {
        use std::os::unix::fs::PermissionsExt;
        let out = &self.files[self.pos];
        let err = |source| RestoreError::Io {
            path: out.path.clone(),
            source,
        };
        let file = match self.cur.take() {
            Some(w) => w.into_inner().map_err(|e| err(e.into_error()))?,
            None => File::create(&out.path).map_err(err)?,
        };
        // Set on the open handle: no second path lookup per file.
        if let Some((mode, mtime_ms)) = out.meta {
            if let Ok(ms) = u64::try_from(mtime_ms) {
                file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                    .map_err(err)?;
            }
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(err)?;
        }
        self.report.files += 1;
        self.pos += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<RestoreReport, RestoreError> {
        while self.pos < self.files.len() {
            self.close_current()?;
        }
        Ok(self.report)
    }
}

/// Completes a restored directory tree at `root`: symlinks, then directory modes deepest first (a read-only
/// directory must not block writing its children).
pub fn finish_tree(manifest: &Manifest, root: &Path) -> Result<(), RestoreError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| RestoreError::Io { path, source }
    };
    for e in &manifest.tree {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.path));
        match e.kind {
            EntryKind::Symlink => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&e.symlink_target), &p)
                    .map_err(io(&p))?;
            }
            EntryKind::File => {} // mode and mtime were set when the file was closed
            EntryKind::Dir => {}
        }
    }
    for e in manifest
        .tree
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Dir)
    {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.path));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.mode)).map_err(io(&p))?;
    }
    Ok(())
}
