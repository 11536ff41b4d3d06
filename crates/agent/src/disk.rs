//! The cache's disk, not only its budget: a budget may promise more bytes than the file
//! system under the cache dir has left (a shared disk, a small volume). When an install
//! runs out of space ([`std::io::ErrorKind::StorageFull`]), the agent frees what the state
//! still needs on the disk by evicting by its rule, deleted at once, and tries once more
//! (resuming from what is staged). When that cannot be had, the staged part is removed (it
//! would keep the disk full for every other load) and the load fails as
//! [`crate::LoadError::DiskFull`]; nothing half-written is ever visible.

use std::path::Path;

use crate::agent::LoadError;
use crate::install::InstallError;
use crate::space::SpaceError;

/// Headroom kept free beside a state (its manifest, the index, history lines).
const MARGIN: u64 = 1 << 20;

/// Whether `e` is the file system running out of space.
pub fn storage_full(e: &LoadError) -> bool {
    let source = match e {
        LoadError::Install(InstallError::Io { source, .. })
        | LoadError::Publish { source, .. }
        | LoadError::Space(SpaceError::Io { source, .. }) => source,
        _ => return false,
    };
    source.kind() == std::io::ErrorKind::StorageFull
}

/// Bytes of the file system under `dir` an unprivileged writer may still use.
pub fn available(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Disk bytes the regular files under `p` occupy (a staged file or tree, whose files are
/// sized in advance and filled as chunks arrive: blocks, not lengths; 0 when absent).
pub fn bytes_under(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return if m.is_file() { m.blocks() * 512 } else { 0 };
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| bytes_under(&e.path())).sum())
        .unwrap_or(0)
}

/// What the disk lacks for a state of `size` bytes of which `staged` are written: the rest
/// and the margin, beyond what is `free`.
pub fn shortfall(size: u64, staged: u64, free: u64) -> u64 {
    (size.saturating_sub(staged) + MARGIN).saturating_sub(free)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_shortfall_counts_what_is_staged_and_keeps_a_margin() {
        assert_eq!(shortfall(10 << 20, 4 << 20, 2 << 20), (5 << 20));
        assert_eq!(shortfall(10 << 20, 4 << 20, 64 << 20), 0);
        assert_eq!(shortfall(1 << 20, 2 << 20, 0), MARGIN);
    }

    #[test]
    fn bytes_under_a_tree_and_a_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/x"), [1; 10_000]).unwrap();
        std::fs::write(d.path().join("a/b/y"), [1; 5_000]).unwrap();
        // A file sized in advance but not written takes no blocks.
        std::fs::File::create(d.path().join("a/sparse"))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let (all, x) = (
            bytes_under(&d.path().join("a")),
            bytes_under(&d.path().join("a/x")),
        );
        assert!((15_000..64_000).contains(&all), "{all}");
        assert!((10_000..32_000).contains(&x), "{x}");
        assert_eq!(bytes_under(&d.path().join("none")), 0);
        assert!(available(d.path()).is_some_and(|n| n > 0));
    }
}
