//! Refreshes racing each other: a refresh that read its objects slowly must not replace the
//! index a later refresh published (the later one's objects would stay "seen" but absent:
//! chunks "not in the store" for good; the fault simulation found it, seed 837369).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use prewarm_core::{ResourceId, StateRef};

use crate::{ChunkerParams, Segment, SourceKind, Store, StoreConfig};

/// A local file system whose next read of an index object takes `delay` longer.
#[derive(Debug)]
struct Slow {
    inner: LocalFileSystem,
    delay: Mutex<Option<Duration>>,
}

impl std::fmt::Display for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slow({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Slow {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
        let delay = match l.as_ref().starts_with("index/") {
            true => self.delay.lock().unwrap().take(),
            false => None,
        };
        let got = self.inner.get_opts(l, o).await;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        got
    }
    async fn get_ranges(&self, l: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(l, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

async fn commit(writer: &Store, name: &str, seed: u8) -> StateRef {
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    let staged = writer
        .write(
            vec![Segment::bytes(bytes.into())],
            ChunkerParams::with_avg(16 << 10).unwrap(),
        )
        .await
        .unwrap();
    let r = ResourceId::new(name).unwrap();
    let c = writer.commit(staged, &r, SourceKind::Buffer, Vec::new());
    c.await.unwrap().state
}

async fn locates(reader: &Store, state: &StateRef) -> bool {
    let m = reader.manifest(state).await.unwrap();
    let hashes: Vec<_> = m.chunks.iter().map(|c| c.hash).collect();
    reader.locate(&hashes).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_does_not_undo_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let writer = Store::open_or_create(root.to_str().unwrap()).await.unwrap();
    let slow = Arc::new(Slow {
        inner: LocalFileSystem::new_with_prefix(&root).unwrap(),
        delay: Mutex::new(None),
    });
    let reader = Arc::new(
        Store::open_over(slow.clone(), "slow", StoreConfig::default(), false)
            .await
            .unwrap(),
    );
    let one = commit(&writer, "m/one", 1).await;
    // Refresh A lists `one`'s index object and reads it slowly…
    *slow.delay.lock().unwrap() = Some(Duration::from_millis(300));
    let a = tokio::spawn({
        let reader = reader.clone();
        async move { reader.refresh_index().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // …while `two` is committed and refresh B loads both objects and finishes first.
    let two = commit(&writer, "m/two", 2).await;
    reader.refresh_index().await.unwrap();
    a.await.unwrap();
    reader.refresh_index().await.unwrap();
    assert!(locates(&reader, &one).await, "one");
    assert!(
        locates(&reader, &two).await,
        "two: lost by the slow refresh"
    );
    assert_eq!(reader.index().len(), writer.index().len());
}
