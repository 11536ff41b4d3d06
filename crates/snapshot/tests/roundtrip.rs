//! Snapshot → store → restore round trips on real files, and every damaged-input case the
//! store must refuse without writing anything partial.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
mod common;
use common::noise;
use prewarm_core::{ResourceId, StateRef, Version};
use prewarm_snapshot::{RestoreError, SnapshotError, Snapshotter, restore, restore_to_bytes};
use prewarm_store::{ChunkerParams, OpenError, ReadManifestError, Store};

fn rid(s: &str) -> ResourceId {
    ResourceId::new(s).unwrap()
}

fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "record {i}: user=u{} status=ok latency_ms={}\n",
                i % 97,
                i % 13
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.txt"), text(300_000)).unwrap();
    std::fs::write(root.join("sub/b.bin"), noise(7, 200_000)).unwrap();
    std::fs::write(root.join("sub/deeper/empty"), b"").unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"latin-1 name",
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    std::fs::set_permissions(
        root.join("sub/b.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// Compares two trees: names, kinds, contents, modes, link targets.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut ea: Vec<_> = std::fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut eb: Vec<_> = std::fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    ea.sort();
    eb.sort();
    assert_eq!(ea, eb, "entries of {a:?}");
    for name in ea {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{pa:?}");
        if ma.is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap()
            );
        } else if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{pa:?}"
            );
            assert_eq!(
                ma.permissions().mode() & 0o7777,
                mb.permissions().mode() & 0o7777,
                "{pa:?}"
            );
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    snap: Snapshotter,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open_or_create(dir.path().join("store").to_str().unwrap())
            .await
            .unwrap(),
    );
    let snap = Snapshotter::new(store.clone()).with_chunker(ChunkerParams::with_avg(4096).unwrap());
    Fixture { dir, store, snap }
}

fn packs(store_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(store_dir.join("data")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn directory_round_trip_preserves_everything() {
    let f = fixture().await;
    let src = f.dir.path().join("src");
    make_tree(&src);
    let out = f.snap.snapshot_path(&rid("trees/t"), &src).await.unwrap();
    assert_eq!(out.committed.state.version, Version::FIRST);
    assert_eq!(out.committed.stats.logical_bytes, 300_000 + 200_000 + 12);
    let m = f.store.resolve(&rid("trees/t"), None).await.unwrap();
    let dest = f.dir.path().join("restored");
    let rep = restore(f.store.as_ref(), &m, &dest).await.unwrap();
    assert_eq!(rep.bytes, m.logical_size);
    assert_same_tree(&src, &dest);
    // A fresh handle (new process) reads the same store.
    let again = Store::open(f.dir.path().join("store").to_str().unwrap())
        .await
        .unwrap();
    assert!(again.verify(None).await.unwrap().ok());
}

#[tokio::test]
async fn file_and_buffer_round_trip() {
    let f = fixture().await;
    let path = f.dir.path().join("weights.bin");
    let data = [text(100_000), noise(3, 100_000)].concat();
    std::fs::write(&path, &data).unwrap();
    f.snap.snapshot_path(&rid("m/w"), &path).await.unwrap();
    let m = f.store.resolve(&rid("m/w"), None).await.unwrap();
    let dest = f.dir.path().join("w2");
    restore(f.store.as_ref(), &m, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    let out = f
        .snap
        .commit_bytes(&rid("buf/x"), Bytes::from(data.clone()))
        .await
        .unwrap();
    assert!(
        out.committed.stats.new_chunks == 0,
        "identical bytes dedup across resources"
    );
    let m = f.store.resolve(&rid("buf/x"), None).await.unwrap();
    assert_eq!(
        restore_to_bytes(f.store.as_ref(), &m, 1 << 30)
            .await
            .unwrap(),
        data
    );
    let e = restore_to_bytes(f.store.as_ref(), &m, 10)
        .await
        .unwrap_err();
    assert!(matches!(e, RestoreError::TooLarge { .. }));

    let empty = f
        .snap
        .commit_bytes(&rid("buf/empty"), Bytes::new())
        .await
        .unwrap();
    let m = f.store.manifest(&empty.committed.state).await.unwrap();
    assert_eq!(
        restore_to_bytes(f.store.as_ref(), &m, 10)
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn incremental_stores_only_changed_chunks_and_unchanged_makes_no_version() {
    let f = fixture().await;
    let path = f.dir.path().join("big");
    let mut data = noise(11, 2_000_000);
    std::fs::write(&path, &data).unwrap();
    let first = f
        .snap
        .snapshot_path(&rid("big"), &path)
        .await
        .unwrap()
        .committed;
    let unchanged = f.snap.snapshot_path(&rid("big"), &path).await.unwrap();
    assert!(unchanged.unchanged);
    assert_eq!(f.store.versions(&rid("big")).await.unwrap().len(), 1);

    for off in [100_000, 900_000, 1_500_000] {
        data[off..off + 100].copy_from_slice(&[0xAB; 100]);
    }
    std::fs::write(&path, &data).unwrap();
    let second = f
        .snap
        .snapshot_path(&rid("big"), &path)
        .await
        .unwrap()
        .committed;
    assert_eq!(second.state.version.get(), 2);
    assert_eq!(second.parent, Some(Version::FIRST));
    assert!(
        second.stats.new_raw_bytes < first.stats.new_raw_bytes / 20,
        "{} new bytes of {}",
        second.stats.new_raw_bytes,
        first.stats.new_raw_bytes
    );
    let m = f
        .store
        .resolve(&rid("big"), Some(Version::new(2).unwrap()))
        .await
        .unwrap();
    let back = restore_to_bytes(f.store.as_ref(), &m, u64::MAX)
        .await
        .unwrap();
    assert_eq!(back, data);
}

#[tokio::test]
async fn flipped_byte_fails_verify_and_restore_writes_nothing() {
    let f = fixture().await;
    let path = f.dir.path().join("f");
    std::fs::write(&path, text(500_000)).unwrap();
    f.snap.snapshot_path(&rid("r"), &path).await.unwrap();
    let pack = packs(&f.dir.path().join("store")).remove(0);
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let report = f.store.verify(None).await.unwrap();
    assert!(!report.ok());
    assert!(
        report.problems.iter().any(|p| p.contains("corrupt")),
        "{:?}",
        report.problems
    );

    let m = f.store.resolve(&rid("r"), None).await.unwrap();
    let dest = f.dir.path().join("out");
    let e = restore(f.store.as_ref(), &m, &dest).await.unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
    assert!(!dest.exists());
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("prewarm-tmp")
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary restore path was cleaned up"
    );
}

#[tokio::test]
async fn truncated_pack_is_named() {
    let f = fixture().await;
    let path = f.dir.path().join("f");
    std::fs::write(&path, noise(5, 300_000)).unwrap();
    f.snap.snapshot_path(&rid("r"), &path).await.unwrap();
    let pack = packs(&f.dir.path().join("store")).remove(0);
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let m = f.store.resolve(&rid("r"), None).await.unwrap();
    let e = restore_to_bytes(f.store.as_ref(), &m, u64::MAX)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    assert!(!f.store.verify(Some(&rid("r"))).await.unwrap().ok());
}

fn manifest_file(store_dir: &Path, resource: &str, v: u64) -> PathBuf {
    store_dir
        .join("manifests")
        .join(resource)
        .join("@v")
        .join(format!("{v:020}"))
}

#[tokio::test]
async fn damaged_manifests_are_refused_with_reasons() {
    let f = fixture().await;
    f.snap
        .commit_bytes(&rid("r"), Bytes::from(text(50_000)))
        .await
        .unwrap();
    let mf = manifest_file(&f.dir.path().join("store"), "r", 1);
    let good = std::fs::read(&mf).unwrap();
    let state = StateRef {
        resource: rid("r"),
        version: Version::FIRST,
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..good.len() / 2].to_vec(), "truncated"),
        (
            b"{\"this\": \"is json, not a manifest\"}\n and some padding to pass the header"
                .to_vec(),
            "foreign",
        ),
        (
            {
                let mut v = good.clone();
                v[4] = 9;
                v
            },
            "unknown format version 9",
        ),
        (
            {
                let mut v = good.clone();
                let n = v.len();
                v[n - 3] ^= 0x40;
                v
            },
            "checksum",
        ),
    ];
    for (bytes, want) in cases {
        std::fs::write(&mf, &bytes).unwrap();
        let e = f.store.manifest(&state).await.unwrap_err();
        assert!(matches!(e, ReadManifestError::Corrupt { .. }));
        assert!(e.to_string().contains(want), "{e} should mention {want}");
    }
}

#[tokio::test]
async fn unknown_versions_resources_and_stores() {
    let f = fixture().await;
    f.snap
        .commit_bytes(&rid("r"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let e = f
        .store
        .resolve(&rid("r"), Version::new(9))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("r@9 does not exist") && e.contains("latest version: 1"),
        "{e}"
    );
    let e = f
        .store
        .resolve(&rid("nope"), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no versions"), "{e}");

    let missing = f.dir.path().join("no-store-here");
    let e = Store::open(missing.to_str().unwrap()).await.err().unwrap();
    assert!(matches!(e, OpenError::NotAStore { .. }), "{e}");
    let plain = f.dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let e = Store::open(plain.to_str().unwrap()).await.err().unwrap();
    assert!(e.to_string().contains("not a prewarm store"), "{e}");
    // S3 is built in by default; Azure only on request.
    let e = Store::open("az://container/x").await.err().unwrap();
    assert!(e.to_string().contains("--features azure"), "{e}");
    let e = Store::open("ftp://x").await.err().unwrap();
    assert!(e.to_string().contains("unknown scheme"), "{e}");
}

#[tokio::test]
async fn restore_refuses_existing_destination_and_missing_parent() {
    let f = fixture().await;
    f.snap
        .commit_bytes(&rid("r"), Bytes::from_static(b"data"))
        .await
        .unwrap();
    let m = f.store.resolve(&rid("r"), None).await.unwrap();
    let dest = f.dir.path().join("exists");
    std::fs::write(&dest, b"precious").unwrap();
    let e = restore(f.store.as_ref(), &m, &dest).await.unwrap_err();
    assert!(matches!(e, RestoreError::DestinationExists(_)), "{e}");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"precious",
        "never overwritten"
    );
    let e = restore(f.store.as_ref(), &m, &f.dir.path().join("no/such/dir/x"))
        .await
        .unwrap_err();
    assert!(matches!(e, RestoreError::Parent { .. }), "{e}");
}

#[tokio::test]
async fn special_files_and_missing_sources_are_refused() {
    let f = fixture().await;
    let src = f.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let e = f.snap.snapshot_path(&rid("s"), &src).await.unwrap_err();
    assert!(matches!(e, SnapshotError::SpecialFile { .. }));
    assert!(e.to_string().contains("socket"), "{e}");
    drop(sock);
    let e = f
        .snap
        .snapshot_path(&rid("s"), &f.dir.path().join("missing"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    assert!(
        f.store.versions(&rid("s")).await.unwrap().is_empty(),
        "nothing published"
    );
}

/// Every path under `root`, relative, sorted.
fn listing(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(root).unwrap().to_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn links_restore_inside_their_destination_and_devices_and_fifos_are_refused() {
    use std::os::unix::fs::MetadataExt;
    let f = fixture().await;
    let src = f.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data = noise(3, 100_000);
    std::fs::write(src.join("a.bin"), &data).unwrap();
    std::fs::hard_link(src.join("a.bin"), src.join("b.bin")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../outside", src.join("up")).unwrap();
    let m = f
        .snap
        .snapshot_path(&rid("links/t"), &src)
        .await
        .unwrap()
        .committed
        .state;
    let m = f.store.resolve(&m.resource, Some(m.version)).await.unwrap();
    let before = listing(f.dir.path());
    let dest = f.dir.path().join("restored");
    restore(f.store.as_ref(), &m, &dest).await.unwrap();
    // Only the destination appeared; hard links came back as two independent files; the
    // symlinks are links with their targets as stored, nothing written through them.
    let mut after = listing(f.dir.path());
    after.retain(|p| !p.starts_with("restored"));
    assert_eq!(before, after, "nothing outside the destination changed");
    let (a, b) = (dest.join("a.bin"), dest.join("b.bin"));
    assert_eq!(std::fs::read(&a).unwrap(), data);
    assert_eq!(std::fs::read(&b).unwrap(), data);
    assert_ne!(
        std::fs::metadata(&a).unwrap().ino(),
        std::fs::metadata(&b).unwrap().ino()
    );
    for (name, target) in [("abs", "/etc/passwd"), ("up", "../../outside")] {
        let p = dest.join(name);
        assert!(std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(target));
    }
    assert!(!f.dir.path().join("outside").exists());
    // A FIFO (and, where mknod is allowed, a character device) in a tree is refused
    // before anything is published.
    let special = f.dir.path().join("special");
    std::fs::create_dir(&special).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(special.join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let e = f
        .snap
        .snapshot_path(&rid("links/s"), &special)
        .await
        .unwrap_err();
    assert!(matches!(e, SnapshotError::SpecialFile { .. }), "{e}");
    assert!(e.to_string().contains("FIFO"), "{e}");
    std::fs::remove_file(special.join("pipe")).unwrap();
    let dev = std::process::Command::new("mknod")
        .arg(special.join("null"))
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if dev {
        let e = f
            .snap
            .snapshot_path(&rid("links/s"), &special)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }
    assert!(f.store.versions(&rid("links/s")).await.unwrap().is_empty());
}

#[tokio::test]
async fn gc_keeps_newest_versions_and_reclaims_space() {
    let f = fixture().await;
    for i in 0..4u64 {
        f.snap
            .commit_bytes(&rid("r"), Bytes::from(noise(100 + 2 * i, 200_000)))
            .await
            .unwrap();
    }
    f.snap
        .commit_bytes(&rid("other"), Bytes::from(noise(999, 50_000)))
        .await
        .unwrap();
    let store_dir = f.dir.path().join("store");
    let before: u64 = packs(&store_dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // Young packs are protected by the grace period.
    let rep = f.store.gc(1, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(rep.manifests_deleted, 3);
    assert_eq!(rep.packs_deleted, 0);
    let rep = f.store.gc(1, Duration::ZERO).await.unwrap();
    assert!(rep.bytes_freed >= 500_000, "{rep:?}");
    let after: u64 = packs(&store_dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(after < before / 2, "{after} vs {before}");
    assert_eq!(
        f.store.versions(&rid("r")).await.unwrap(),
        vec![Version::new(4).unwrap()]
    );
    let reopened = Store::open(store_dir.to_str().unwrap()).await.unwrap();
    let v = reopened.verify(None).await.unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.manifests, 2);
    let m = reopened.resolve(&rid("r"), None).await.unwrap();
    assert_eq!(
        restore_to_bytes(&reopened, &m, u64::MAX).await.unwrap(),
        noise(106, 200_000)
    );
    assert!(
        f.store.gc(0, Duration::ZERO).await.is_err(),
        "keep 0 is refused"
    );
}

#[tokio::test]
async fn concurrent_writers_get_distinct_versions() {
    let f = fixture().await;
    let tasks: Vec<_> = (0..4u64)
        .map(|i| {
            let snap = f.snap.clone().always_commit();
            tokio::spawn(async move {
                snap.commit_bytes(&rid("hot"), Bytes::from(noise(i, 10_000)))
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap().unwrap().committed.state.version.get());
    }
    versions.sort();
    assert_eq!(versions, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn small_changes_store_delta_manifests_and_gc_rewrites_them() {
    let f = fixture().await;
    let mut data = noise(5, 400_000);
    let r = rid("chain");
    for i in 0..5 {
        data[i * 50_000..i * 50_000 + 10].fill(i as u8);
        f.snap
            .commit_bytes(&r, Bytes::from(data.clone()))
            .await
            .unwrap();
    }
    let latest = f.store.resolve(&r, None).await.unwrap();
    assert_eq!(latest.chain_depth, 4, "versions 2..5 were stored as deltas");
    let mf = f
        .dir
        .path()
        .join("store/manifests/chain/@v")
        .join(format!("{:020}", 5));
    let v1 = f
        .dir
        .path()
        .join("store/manifests/chain/@v")
        .join(format!("{:020}", 1));
    assert!(std::fs::metadata(&mf).unwrap().len() * 5 < std::fs::metadata(&v1).unwrap().len());

    let rep = f.store.gc(2, Duration::ZERO).await.unwrap();
    assert_eq!((rep.manifests_deleted, rep.manifests_rewritten), (3, 1));
    let reopened = Store::open(f.dir.path().join("store").to_str().unwrap())
        .await
        .unwrap();
    let m4 = reopened.resolve(&r, Version::new(4)).await.unwrap();
    assert_eq!(
        m4.chain_depth, 0,
        "the oldest kept version is now stored in full"
    );
    let m5 = reopened.resolve(&r, None).await.unwrap();
    assert_eq!(
        restore_to_bytes(&reopened, &m5, u64::MAX).await.unwrap(),
        data
    );
    assert!(reopened.verify(None).await.unwrap().ok());
}
