//! Where each byte of a state's logical stream lives on disk: one file for file and buffer
//! states, the files of the tree for directory states. Lets the installer write verified
//! chunks at their place in any order (so an interrupted transfer keeps what it wrote) and
//! read chunks back out of installed states (delta reuse) and staging (resume).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prewarm_store::{EntryKind, Manifest, SourceKind};

/// Open files kept per [`Files`].
const MAX_OPEN: usize = 128;
/// Most bytes in one vectored write.
const RUN_BYTES: u64 = 8 << 20;
/// Most pieces in one vectored write (the kernel's `IOV_MAX`).
const RUN_PIECES: usize = 1024;

/// Contiguous pieces of one file, written with one `pwritev`.
#[derive(Default)]
struct Run {
    file: usize,
    start: u64,
    len: u64,
    bufs: Vec<bytes::Bytes>,
}

impl Run {
    /// Whether `len` bytes at `at` of file `file` continue this run within its bounds.
    fn joins(&self, file: usize, at: u64, len: usize) -> bool {
        !self.bufs.is_empty()
            && self.file == file
            && self.start + self.len == at
            && self.bufs.len() < RUN_PIECES
            && self.len + len as u64 <= RUN_BYTES
    }
}

/// The files tiling a manifest's logical stream under `root`.
#[derive(Clone, Debug)]
pub struct Layout {
    kind: SourceKind,
    root: PathBuf,
    /// Non-empty files: (path, offset in the stream, size), by offset.
    files: Vec<(PathBuf, u64, u64)>,
}

impl Layout {
    /// The layout of `m` rooted at `root` (the state's file, or its directory).
    pub fn new(m: &Manifest, root: &Path) -> Self {
        let files = match m.kind {
            SourceKind::Directory => {
                let mut v: Vec<_> = m
                    .tree
                    .iter()
                    .filter(|e| e.kind == EntryKind::File && e.size > 0)
                    .map(|e| {
                        (
                            root.join(std::ffi::OsStr::from_bytes(&e.path)),
                            e.offset,
                            e.size,
                        )
                    })
                    .collect();
                v.sort_by_key(|f| f.1);
                v
            }
            SourceKind::File | SourceKind::Buffer => vec![(root.to_owned(), 0, m.logical_size)],
        };
        Layout {
            kind: m.kind,
            root: root.to_owned(),
            files,
        }
    }

    /// Creates the tree and its files at their final sizes, keeping whatever already exists
    /// (a resumed transfer). Returns whether the root already existed.
    pub fn prepare(&self, m: &Manifest) -> std::io::Result<bool> {
        let existed = match std::fs::symlink_metadata(&self.root) {
            Ok(meta) => {
                self.prune(m, &meta)?;
                std::fs::symlink_metadata(&self.root).is_ok()
            }
            Err(_) => false,
        };
        if self.kind == SourceKind::Directory {
            std::fs::create_dir_all(&self.root)?;
            for e in m.tree.iter().filter(|e| e.kind == EntryKind::Dir) {
                std::fs::create_dir_all(self.root.join(std::ffi::OsStr::from_bytes(&e.path)))?;
            }
            for e in m.tree.iter().filter(|e| e.kind == EntryKind::File) {
                let p = self.root.join(std::ffi::OsStr::from_bytes(&e.path));
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&p)?;
                if f.metadata()?.len() != e.size {
                    f.set_len(e.size)?;
                }
            }
        } else {
            if let Some(parent) = self.root.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.root)?;
            if f.metadata()?.len() != m.logical_size {
                f.set_len(m.logical_size)?;
            }
        }
        Ok(existed)
    }

    /// Removes from an existing tree at the root whatever `m` does not list with the same
    /// kind (left by an older version handed over to be patched in place), never following
    /// a link, and lets the owner write what stays (an older version's modes; the final
    /// ones are set when the tree is finished).
    fn prune(&self, m: &Manifest, root: &std::fs::Metadata) -> std::io::Result<()> {
        let want_dir = self.kind == SourceKind::Directory;
        if root.is_dir() != want_dir || root.file_type().is_symlink() {
            return remove_entry(&self.root, root.file_type());
        }
        writable(&self.root, root)?;
        if !want_dir {
            return Ok(());
        }
        let kinds: HashMap<&[u8], EntryKind> =
            m.tree.iter().map(|e| (e.path.as_slice(), e.kind)).collect();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)? {
                let p = e?.path();
                let meta = std::fs::symlink_metadata(&p)?;
                let rel = p
                    .strip_prefix(&self.root)
                    .map_or(&[][..], |r| r.as_os_str().as_bytes());
                let same = match kinds.get(rel) {
                    Some(EntryKind::Dir) => meta.is_dir(),
                    Some(EntryKind::File) => meta.is_file(),
                    Some(EntryKind::Symlink) => meta.file_type().is_symlink(),
                    None => false,
                };
                if !same {
                    remove_entry(&p, meta.file_type())?;
                } else if meta.is_dir() {
                    writable(&p, &meta)?;
                    stack.push(p);
                } else if meta.is_file() {
                    writable(&p, &meta)?;
                }
            }
        }
        Ok(())
    }

    /// The pieces of stream range `offset..offset+len`: (file index, offset in the file,
    /// range within the requested bytes).
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<(usize, u64, Range<usize>)> {
        let end = offset + len;
        let mut out = Vec::new();
        let mut i = self.files.partition_point(|f| f.1 + f.2 <= offset);
        while i < self.files.len() && self.files[i].1 < end {
            let (_, f_off, f_size) = &self.files[i];
            let s = offset.max(*f_off);
            let e = end.min(f_off + f_size);
            out.push((i, s - f_off, (s - offset) as usize..(e - offset) as usize));
            i += 1;
        }
        out
    }

    /// Path of file `i`.
    pub fn file(&self, i: usize) -> &Path {
        &self.files[i].0
    }

    /// How many non-empty files tile the stream.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Size of file `i`.
    pub fn file_size(&self, i: usize) -> u64 {
        self.files[i].2
    }

    /// The state's root (its file, or its directory).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of file `i` relative to the root, raw bytes (empty for a file state).
    pub fn rel(&self, i: usize) -> &[u8] {
        self.files[i]
            .0
            .strip_prefix(&self.root)
            .map_or(&[][..], |r| r.as_os_str().as_bytes())
    }

    /// The file and the offset in it of a chunk at stream `offset`, when the chunk lies
    /// within one file.
    pub fn single(&self, offset: u64, len: u64) -> Option<(usize, u64)> {
        let i = self.files.partition_point(|f| f.1 + f.2 <= offset);
        let (_, f_off, f_size) = self.files.get(i)?;
        (*f_off <= offset && offset + len <= f_off + f_size).then(|| (i, offset - f_off))
    }
}

/// Removes a file, link or whole directory.
fn remove_entry(p: &Path, t: std::fs::FileType) -> std::io::Result<()> {
    if t.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// Lets the owner write `p` (and, for a directory, enter it).
fn writable(p: &Path, meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    let want = mode | if meta.is_dir() { 0o700 } else { 0o200 };
    if want != mode {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(want))?;
    }
    Ok(())
}

/// Open handles on a layout's files.
pub struct Files<'a> {
    layout: &'a Layout,
    write: bool,
    open: HashMap<usize, File>,
}

impl<'a> Files<'a> {
    /// Handles for reading, or for writing too.
    pub fn new(layout: &'a Layout, write: bool) -> Self {
        Files {
            layout,
            write,
            open: HashMap::new(),
        }
    }

    fn get(&mut self, i: usize) -> std::io::Result<&File> {
        if !self.open.contains_key(&i) {
            if self.open.len() >= MAX_OPEN {
                self.open.clear();
            }
            let f = OpenOptions::new()
                .read(true)
                .write(self.write)
                .open(self.layout.file(i))?;
            self.open.insert(i, f);
        }
        Ok(self.open.get(&i).expect("inserted above"))
    }

    /// Writes `data` at stream offset `offset`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        for (i, at, r) in self.layout.pieces(offset, data.len() as u64) {
            self.get(i)?.write_all_at(&data[r], at)?;
        }
        Ok(())
    }

    /// Writes many pieces (stream offset, bytes), coalescing contiguous ones into vectored
    /// writes (`pwritev`) of up to 8 MiB and 1,024 pieces: one system call per run instead of
    /// one per chunk (small writes into a fresh file's pages cost the kernel a zeroing pass
    /// each, measured at a fifth of the agent's CPU time), and no copy into a run buffer.
    pub fn write_pieces(&mut self, mut pieces: Vec<(u64, bytes::Bytes)>) -> std::io::Result<()> {
        pieces.sort_by_key(|p| p.0);
        let mut run = Run::default();
        for (off, b) in pieces {
            for (i, at, r) in self.layout.pieces(off, b.len() as u64) {
                let seg = b.slice(r);
                if !run.joins(i, at, seg.len()) {
                    self.write_run(&mut run)?;
                    run.file = i;
                    run.start = at;
                }
                run.len += seg.len() as u64;
                run.bufs.push(seg);
            }
        }
        self.write_run(&mut run)
    }

    /// Writes `run` with `pwritev` (however many calls it takes) and empties it.
    fn write_run(&mut self, run: &mut Run) -> std::io::Result<()> {
        if run.bufs.is_empty() {
            return Ok(());
        }
        let f = self.get(run.file)?;
        let mut slices: Vec<IoSlice<'_>> = run.bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        let mut at = run.start;
        while !rest.is_empty() {
            let n = rustix::io::pwritev(f, rest, at)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            at += n as u64;
            IoSlice::advance_slices(&mut rest, n);
        }
        *run = Run::default();
        Ok(())
    }

    /// Reads `len` bytes at stream offset `offset`.
    pub fn read_at(&mut self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the bytes at stream offset `offset`.
    pub fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let mut covered = 0;
        for (i, at, r) in self.layout.pieces(offset, buf.len() as u64) {
            covered += r.len();
            self.get(i)?.read_exact_at(&mut buf[r], at)?;
        }
        if covered != buf.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "range beyond the state's files",
            ));
        }
        Ok(())
    }
}

/// Checks that the installed tree at `root` is complete for `m`: the root has the right kind,
/// and every entry of a directory state exists with its kind, its size (files) and its target
/// (symlinks). Run on every held state when the agent opens its cache, so a state damaged
/// behind the agent's back (or by a crash) is dropped instead of served. Bytes are not
/// hashed here: delta reuse re-hashes whatever it reads.
pub fn check_complete(m: &Manifest, root: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if m.kind != SourceKind::Directory {
        return match meta.is_file() && meta.len() == m.logical_size {
            true => Ok(()),
            false => Err(format!(
                "{}: {} bytes, {} expected",
                root.display(),
                meta.len(),
                m.logical_size
            )),
        };
    }
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", root.display()));
    }
    for e in &m.tree {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.path));
        let found = std::fs::symlink_metadata(&p).map_err(|err| format!("{}: {err}", p.display()));
        let ok = match e.kind {
            EntryKind::Dir => found?.is_dir(),
            EntryKind::File => found.map(|f| f.is_file() && f.len() == e.size)?,
            EntryKind::Symlink => {
                found?.is_symlink()
                    && std::fs::read_link(&p)
                        .is_ok_and(|t| t.as_os_str().as_bytes() == e.symlink_target)
            }
        };
        if !ok {
            return Err(format!("{}: differs from its manifest", p.display()));
        }
    }
    Ok(())
}

/// Gives the files their modes and times and completes the tree (symlinks, directory modes).
pub fn finish(m: &Manifest, root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if m.kind != SourceKind::Directory {
        return Ok(());
    }
    for e in m.tree.iter().filter(|e| e.kind == EntryKind::File) {
        let p = root.join(std::ffi::OsStr::from_bytes(&e.path));
        let f = OpenOptions::new().write(true).open(&p)?;
        if let Ok(ms) = u64::try_from(e.mtime_unix_ms) {
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(e.mode))?;
    }
    for e in m.tree.iter().filter(|e| e.kind == EntryKind::Symlink) {
        // Left by an interrupted earlier attempt?
        let _ = std::fs::remove_file(root.join(std::ffi::OsStr::from_bytes(&e.path)));
    }
    prewarm_snapshot::finish_tree(m, root).map_err(std::io::Error::other)
}
