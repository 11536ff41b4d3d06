//! The fingerprint fast path must be invisible: a snapshot taken with the previous version's
//! fingerprints yields exactly the chunks a from-scratch snapshot of the same bytes yields.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;

use bytes::Bytes;
mod common;
use common::noise;
use prewarm_core::ResourceId;
use prewarm_snapshot::Snapshotter;
use prewarm_store::{ChunkerParams, Store};

async fn chunks_of(store: &Store, r: &ResourceId) -> Vec<(prewarm_core::ChunkHash, u32, u64)> {
    let m = store.resolve(r, None).await.unwrap();
    m.chunks
        .iter()
        .map(|c| (c.hash, c.length, c.fingerprint))
        .collect()
}

/// Snapshots `before` then `after` into one store (the second uses fingerprints), and
/// `after` alone into a fresh store; the chunk lists must match.
async fn check(before: Vec<u8>, after: Vec<u8>) -> (u64, u64) {
    let params = ChunkerParams::with_avg(2048).unwrap();
    let r = ResourceId::new("x").unwrap();
    let a = Arc::new(Store::memory().await);
    let snap = Snapshotter::new(a.clone()).with_chunker(params);
    snap.commit_bytes(&r, Bytes::from(before)).await.unwrap();
    let out = snap
        .commit_bytes(&r, Bytes::from(after.clone()))
        .await
        .unwrap()
        .committed;
    let b = Arc::new(Store::memory().await);
    Snapshotter::new(b.clone())
        .with_chunker(params)
        .commit_bytes(&r, Bytes::from(after))
        .await
        .unwrap();
    assert_eq!(chunks_of(&a, &r).await, chunks_of(&b, &r).await);
    (out.stats.new_chunks, out.stats.chunks)
}

#[tokio::test]
async fn in_place_edits_match_a_fresh_cut() {
    let base = noise(1, 400_000);
    let mut edited = base.clone();
    for off in [0, 50_000, 123_456, 399_000] {
        edited[off..off + 500].fill(7);
    }
    let (new, total) = check(base, edited).await;
    assert!(new * 10 < total, "{new} of {total} chunks new");
}

#[tokio::test]
async fn insertions_deletions_appends_and_truncation_match_a_fresh_cut() {
    let base = noise(2, 300_000);
    let mut inserted = base.clone();
    inserted.splice(100_000..100_000, noise(3, 777));
    check(base.clone(), inserted).await;
    let mut deleted = base.clone();
    deleted.drain(200_000..201_234);
    check(base.clone(), deleted).await;
    let mut appended = base.clone();
    appended.extend(noise(4, 10_000));
    check(base.clone(), appended).await;
    check(base.clone(), base[..150_000].to_vec()).await;
    check(base.clone(), Vec::new()).await;
    check(Vec::new(), base).await;
}

#[tokio::test]
async fn directory_edits_use_per_file_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..5u64 {
        std::fs::write(src.join(format!("f{i}")), noise(10 + i, 200_000)).unwrap();
    }
    let r = ResourceId::new("tree").unwrap();
    let params = ChunkerParams::with_avg(4096).unwrap();
    let a = Arc::new(Store::memory().await);
    let snap = Snapshotter::new(a.clone()).with_chunker(params);
    snap.snapshot_path(&r, &src).await.unwrap();
    let mut f2 = std::fs::read(src.join("f2")).unwrap();
    f2[1000..1100].fill(0);
    std::fs::write(src.join("f2"), f2).unwrap();
    std::fs::remove_file(src.join("f4")).unwrap();
    std::fs::write(src.join("f5"), noise(99, 50_000)).unwrap();
    let out = snap.snapshot_path(&r, &src).await.unwrap().committed;
    let b = Arc::new(Store::memory().await);
    Snapshotter::new(b.clone())
        .with_chunker(params)
        .snapshot_path(&r, &src)
        .await
        .unwrap();
    assert_eq!(chunks_of(&a, &r).await, chunks_of(&b, &r).await);
    assert!(out.stats.new_raw_bytes < 70_000, "{:?}", out.stats);
}

#[tokio::test]
async fn files_with_unchanged_size_and_mtime_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for i in 0..3u64 {
        let p = src.join(format!("f{i}"));
        std::fs::write(&p, noise(20 + i, 100_000)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let r = ResourceId::new("tree").unwrap();
    let store = Arc::new(Store::memory().await);
    let snap = Snapshotter::new(store.clone());
    snap.snapshot_path(&r, &src).await.unwrap();

    // Same size, same (old) mtime, different bytes: trusted as unchanged, so not even read.
    let f0 = src.join("f0");
    std::fs::write(&f0, noise(99, 100_000)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f0)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = snap.snapshot_path(&r, &src).await.unwrap();
    assert!(
        out.unchanged,
        "the mtime-preserving edit is invisible without --reread"
    );
    let out = snap
        .clone()
        .reread_all()
        .snapshot_path(&r, &src)
        .await
        .unwrap();
    assert!(
        !out.unchanged && out.committed.stats.new_chunks > 0,
        "reread_all sees it"
    );

    // A normal edit moves the mtime and is always seen; untouched files are still reused.
    std::fs::write(src.join("f1"), noise(77, 100_000)).unwrap();
    let out = snap.snapshot_path(&r, &src).await.unwrap().committed;
    assert_eq!(out.state.version.get(), 3);
    let m = store.resolve(&r, None).await.unwrap();
    let back = prewarm_snapshot::restore_to_bytes(store.as_ref(), &m, u64::MAX)
        .await
        .unwrap();
    assert_eq!(back.len(), 300_000);
    let dest = dir.path().join("out");
    prewarm_snapshot::restore(store.as_ref(), &m, &dest)
        .await
        .unwrap();
    assert_eq!(std::fs::read(dest.join("f1")).unwrap(), noise(77, 100_000));
    assert_eq!(std::fs::read(dest.join("f0")).unwrap(), noise(99, 100_000));
}
