//! Which files of a held state are provably unchanged since their chunks were verified, so
//! that patching a newer version into them in place (see `Agent::adopt_older`) need not hash
//! those bytes again.
//!
//! At install, after the state is renamed into place and before any `ensure` can name it,
//! each large file's identity is recorded: inode, size, modification and change times. The
//! change time (`ctime`) cannot be set by a process; the kernel moves it on any write, `chmod`,
//! `utimes` or rename. Its clock is coarse (one tick, 1–10 ms), so a write in the same tick
//! as the install's own last change would leave it as it was: the record is taken only once
//! the coarse clock has passed every file's `ctime` ([`settle`]), so any later change shows.
//! A file whose record still matches when a newer version is patched in is trusted; any
//! other is re-verified chunk by chunk. Records live in memory only: after a restart every
//! held file is re-verified before it is patched.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use rustix::time::{ClockId, clock_gettime};

use crate::layout::Layout;

/// Files smaller than this are re-verified rather than recorded (cheap, and small states then
/// pay no wait at install).
pub const MIN_TRUSTED: u64 = 1 << 20;

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileSig {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileSig {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::symlink_metadata(path).ok()?;
        m.is_file().then(|| FileSig {
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The records of one held state's large files, by their path relative to the state's root
/// (empty for a file state).
#[derive(Clone, Debug, Default)]
pub struct Sigs(HashMap<Vec<u8>, FileSig>);

/// The large files of `lay`, relative to its root, and their full paths.
fn large(lay: &Layout) -> impl Iterator<Item = (Vec<u8>, &Path)> {
    (0..lay.file_count())
        .filter(move |&i| lay.file_size(i) >= MIN_TRUSTED)
        .map(move |i| (lay.rel(i).to_vec(), lay.file(i)))
}

/// Waits (a tick at most) until the coarse clock that stamps `ctime` has passed the `ctime`
/// of every large file of `lay`, so that any later change gives a later one.
pub fn settle(lay: &Layout) {
    let newest = large(lay)
        .filter_map(|(_, p)| FileSig::of(p))
        .map(|s| s.ctime)
        .max();
    let Some(newest) = newest else {
        return;
    };
    for _ in 0..100 {
        let now = clock_gettime(ClockId::RealtimeCoarse);
        if (now.tv_sec, now.tv_nsec) > newest {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Records the large files of the installed state `lay` (after [`settle`]).
pub fn record(lay: &Layout) -> Sigs {
    Sigs(
        large(lay)
            .filter_map(|(rel, p)| Some((rel, FileSig::of(p)?)))
            .collect(),
    )
}

/// An older version handed over to be patched in place: its manifest and the files (by
/// relative path) found unchanged since it was verified.
#[derive(Clone, Debug)]
pub struct Adopted {
    /// The older version's manifest.
    pub old: std::sync::Arc<prewarm_store::Manifest>,
    /// Its files whose record matched.
    pub trusted: std::collections::HashSet<Vec<u8>>,
}

impl Adopted {
    /// Per chunk of `m` laid out by `lay` (the staging tree it was moved to): whether the
    /// older version holds that very chunk at that very place in a trusted file, so its
    /// bytes are known without reading them.
    pub fn in_place(&self, m: &prewarm_store::Manifest, lay: &Layout) -> Vec<bool> {
        let old = Layout::new(&self.old, lay.root());
        // The new layout's file index of each trusted old file (paths compared once each).
        let new_index: HashMap<&[u8], usize> =
            (0..lay.file_count()).map(|j| (lay.rel(j), j)).collect();
        let to_new: Vec<Option<usize>> = (0..old.file_count())
            .map(|i| {
                let rel = old.rel(i);
                self.trusted
                    .contains(rel)
                    .then(|| new_index.get(rel).copied())
                    .flatten()
            })
            .collect();
        let mut at: HashMap<(usize, u64), prewarm_core::ChunkHash, foldhash::fast::RandomState> =
            HashMap::default();
        for c in &self.old.chunks {
            if let Some((i, off)) = old.single(c.offset, u64::from(c.length))
                && let Some(j) = to_new[i]
            {
                at.insert((j, off), c.hash);
            }
        }
        m.chunks
            .iter()
            .map(|c| {
                lay.single(c.offset, u64::from(c.length))
                    .is_some_and(|k| at.get(&k) == Some(&c.hash))
            })
            .collect()
    }
}

impl Sigs {
    /// The files of `lay` (the held state, before it is moved) whose record still matches:
    /// their bytes are those verified at install.
    pub fn unchanged(&self, lay: &Layout) -> std::collections::HashSet<Vec<u8>> {
        large(lay)
            .filter(|(rel, p)| self.0.get(rel).is_some_and(|s| FileSig::of(p) == Some(*s)))
            .map(|(rel, _)| rel)
            .collect()
    }
}
