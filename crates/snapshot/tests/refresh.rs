//! A second handle on a local store picks up what another one commits: `refresh_index` reads
//! only the index objects it has not seen, and reloads everything when objects it loaded
//! are gone (gc consolidated them) or a new one is damaged (rebuilt from the packs).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prewarm_core::{ResourceId, StateRef};
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;

fn data(seed: u32) -> Bytes {
    (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Commits `name` through `writer`; its state.
async fn commit(writer: &Arc<Store>, name: &str, seed: u32) -> StateRef {
    let r = ResourceId::new(name).unwrap();
    let out = Snapshotter::new(writer.clone())
        .commit_bytes(&r, data(seed))
        .await
        .unwrap();
    out.committed.state
}

/// Whether `reader` locates every chunk of `state`.
async fn locates(reader: &Store, state: &StateRef) -> bool {
    let m = reader.manifest(state).await.unwrap();
    let hashes: Vec<_> = m.chunks.iter().map(|c| c.hash).collect();
    reader.locate(&hashes).is_ok()
}

#[tokio::test]
async fn a_reader_refreshes_what_a_writer_commits_through_gc_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let writer = Arc::new(Store::open_or_create(root.to_str().unwrap()).await.unwrap());
    let reader = Store::open_or_create(root.to_str().unwrap()).await.unwrap();
    let one = commit(&writer, "m/one", 1).await;
    assert!(!locates(&reader, &one).await, "not seen before a refresh");
    reader.refresh_index().await.unwrap();
    assert!(locates(&reader, &one).await);
    // New objects only: the second state arrives, the first stays.
    let two = commit(&writer, "m/two", 2).await;
    reader.refresh_index().await.unwrap();
    assert!(locates(&reader, &one).await && locates(&reader, &two).await);
    assert_eq!(reader.index().len(), writer.index().len());
    // A damaged new index object: everything is reloaded, rebuilt from the packs.
    std::fs::write(root.join("index").join("zz-damaged"), b"not an index").unwrap();
    let three = commit(&writer, "m/three", 3).await;
    reader.refresh_index().await.unwrap();
    for s in [&one, &two, &three] {
        assert!(locates(&reader, s).await, "{s}");
    }
    std::fs::remove_file(root.join("index").join("zz-damaged")).unwrap();
    // gc consolidates the index objects the reader loaded: a full reload, nothing lost.
    writer.gc(8, Duration::ZERO).await.unwrap();
    let four = commit(&writer, "m/four", 4).await;
    reader.refresh_index().await.unwrap();
    for s in [&one, &two, &three, &four] {
        assert!(locates(&reader, s).await, "{s}");
    }
    assert_eq!(reader.index().len(), writer.index().len());
}
