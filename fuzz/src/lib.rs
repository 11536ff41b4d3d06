//! Shared pieces of prewarm's fuzz targets (issue 13 §3): a small committed state in a store
//! (in memory, or in a local directory for the pack channel), envelopes sealed with a valid
//! checksum around fuzzer-chosen bodies, an in-memory byte stream for the data-plane server,
//! frame helpers, and the seeds each target's corpus started from (`gen_seeds`).
//!
//! The targets call the crates' public decoding entry points; nothing here re-implements a
//! decoder, except where a target needs an independent reference to compare against (the
//! envelope's checksum, so that fuzzed headers and bodies get past it; a plain zstd stream
//! decoder, so that the chunk decoder's answer can be checked).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a harness fails loudly by design

use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use prewarm_core::{ChunkHash, ResourceId};
use prewarm_store::{BlobLoc, ChunkRef, ChunkerParams, Manifest, Store};
use prewarm_transfer::frame::{self, Frame, Kind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The resource every fixture store holds (version 1).
pub const RESOURCE: &str = "fuzz/state";
/// The token of the fixtures' token-protected servers.
pub const TOKEN: &str = "0123456789abcdef0123";
/// Manifest and index magics (as the store writes them).
pub const MANIFEST_MAGIC: &[u8; 4] = b"PWMF";
/// See [`MANIFEST_MAGIC`].
pub const INDEX_MAGIC: &[u8; 4] = b"PWIX";
/// Bytes before an envelope's body.
pub const ENVELOPE_HEADER: usize = 48;

/// The fixture state: text (compressible chunks) then noise (raw chunks), ~1.5 KB, cut with
/// a 256-byte average chunk so it spans several chunks of both codecs.
pub fn state_bytes() -> Vec<u8> {
    let mut v = b"prewarm fuzz fixture: the quick brown fox jumps over the lazy dog. ".repeat(12);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..700 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// The fixture's chunker (small chunks, so the state has several).
pub fn chunker() -> ChunkerParams {
    ChunkerParams::with_avg(256).expect("valid chunker")
}

/// The fixture resource id.
pub fn resource() -> ResourceId {
    ResourceId::new(RESOURCE).expect("valid id")
}

/// Commits the fixture state into `store` and returns its manifest.
pub async fn commit_state(store: &Arc<Store>) -> Manifest {
    let out = prewarm_snapshot::Snapshotter::new(store.clone())
        .with_chunker(chunker())
        .commit_bytes(&resource(), Bytes::from(state_bytes()))
        .await
        .expect("fixture commit");
    store
        .manifest(&out.committed.state)
        .await
        .expect("fixture manifest")
}

/// A store (in memory) holding the fixture state.
pub struct MemFixture {
    /// The store.
    pub store: Arc<Store>,
    /// The state's manifest.
    pub manifest: Manifest,
}

impl MemFixture {
    /// Builds it on `rt`.
    pub fn new(rt: &tokio::runtime::Runtime) -> Self {
        rt.block_on(async {
            let store = Arc::new(Store::memory().await);
            let manifest = commit_state(&store).await;
            MemFixture { store, manifest }
        })
    }
}

/// A local-directory store holding the fixture state (the pack channel needs pack files).
pub struct DirFixture {
    /// Keeps the directory.
    pub dir: tempfile::TempDir,
    /// The store.
    pub store: Arc<Store>,
    /// The state's manifest.
    pub manifest: Manifest,
    /// Where each chunk of the manifest lies.
    pub locs: Vec<BlobLoc>,
    /// The pack file holding them (the state fits one pack).
    pub pack_path: PathBuf,
}

impl DirFixture {
    /// Builds it on `rt`.
    pub fn new(rt: &tokio::runtime::Runtime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        rt.block_on(async {
            let store = Arc::new(
                Store::open_or_create(root.to_str().expect("utf-8 path"))
                    .await
                    .expect("local store"),
            );
            let manifest = commit_state(&store).await;
            let hashes: Vec<ChunkHash> = manifest.chunks.iter().map(|c| c.hash).collect();
            let locs = store
                .locate(&hashes)
                .expect("fixture chunks are in the store");
            assert!(
                locs.iter().all(|l| l.pack == locs[0].pack),
                "the fixture state fits one pack"
            );
            let pack_path = store.pack_file(&locs[0].pack).expect("local pack file");
            DirFixture {
                dir,
                store,
                manifest,
                locs,
                pack_path,
            }
        })
    }
}

/// The raw bytes of each chunk of `m` (the fixture state cut as `m` says).
pub fn chunk_bytes(m: &Manifest) -> Vec<Vec<u8>> {
    let data = state_bytes();
    m.chunks
        .iter()
        .map(|c| data[c.offset as usize..(c.offset + u64::from(c.length)) as usize].to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Envelopes

/// The checksum an envelope of format `version` keeps over its first 16 header bytes and
/// its payload (format 1: the payload only), as `prewarm-store/src/envelope.rs` documents.
pub fn envelope_checksum(version: u16, head: &[u8], payload: &[u8]) -> [u8; 32] {
    if version == 1 {
        return *blake3::hash(payload).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.update(&head[..16]);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// An envelope around `payload` with the given header fields and a valid checksum.
pub fn seal(magic: &[u8; 4], version: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEADER + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = envelope_checksum(version, &out, payload);
    out.extend_from_slice(&sum);
    out.extend_from_slice(payload);
    out
}

/// Recomputes the checksum field of an envelope-shaped buffer (when it is long enough), so
/// that a fuzzed header and body reach the checks after the checksum.
pub fn fix_checksum(data: &mut [u8]) {
    if data.len() < ENVELOPE_HEADER {
        return;
    }
    let version = u16::from_le_bytes([data[4], data[5]]);
    let sum = envelope_checksum(version, &data[..16], &data[ENVELOPE_HEADER..]);
    data[16..48].copy_from_slice(&sum);
}

/// The protobuf body of a sealed, uncompressed envelope (`None` when compressed).
pub fn plain_body(sealed: &[u8]) -> Option<&[u8]> {
    (sealed.len() >= ENVELOPE_HEADER && sealed[6] & 1 == 0).then(|| &sealed[ENVELOPE_HEADER..])
}

// ---------------------------------------------------------------------------------------
// Chunks

/// Largest chunk the store accepts.
pub const MAX_CHUNK: u32 = prewarm_store::MAX_CHUNK_LEN;

/// What an independent decoder (the zstd crate's streaming decoder, reading at most
/// `raw_len + 1` bytes) makes of a stored chunk: `Some(bytes)` exactly when it decodes to
/// exactly `raw_len` bytes within the chunk limit.
pub fn reference_decode(zstd_frame: &[u8], raw_len: u32) -> Option<Vec<u8>> {
    if raw_len > MAX_CHUNK {
        return None;
    }
    // zstd's one-shot decoder (the store's) reads zero frames as empty output; the streaming
    // one calls empty input an error. The store's reading is the contract (the chunk's hash
    // then decides), so the reference follows it.
    if zstd_frame.is_empty() {
        return (raw_len == 0).then(Vec::new);
    }
    let dec = zstd::stream::read::Decoder::with_buffer(zstd_frame).ok()?;
    let mut out = Vec::new();
    dec.take(u64::from(raw_len) + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() == raw_len as usize).then_some(out)
}

// ---------------------------------------------------------------------------------------
// Streams and frames

/// A byte stream for the data-plane server: reads come from a script (at most `step` bytes
/// each, so partial reads are exercised), writes are kept.
pub struct Script {
    input: Bytes,
    step: usize,
    /// Everything the server wrote.
    pub out: Arc<Mutex<Vec<u8>>>,
}

impl Script {
    /// A stream that reads `input` in pieces of at most `step` bytes (0: all at once).
    pub fn new(input: &[u8], step: u8) -> Self {
        Script {
            input: Bytes::copy_from_slice(input),
            step: if step == 0 { usize::MAX } else { step as usize },
            out: Arc::default(),
        }
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.input.len().min(buf.remaining()).min(self.step);
        let piece = self.input.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.out
            .lock()
            .expect("not poisoned")
            .extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One frame's bytes.
pub fn frame_bytes(kind: Kind, request: u32, body: &[u8]) -> Vec<u8> {
    let mut v = frame::header(kind, request, body.len()).to_vec();
    v.extend_from_slice(body);
    v
}

/// Every whole frame in `data` and how the reading ended (`None`: cleanly, between frames).
pub fn read_frames(
    rt: &tokio::runtime::Runtime,
    data: &[u8],
) -> (Vec<Frame>, Option<frame::FrameError>) {
    rt.block_on(async {
        let mut r = frame::FrameReader::new(data);
        let mut v = Vec::new();
        loop {
            match r.next().await {
                Ok(f) => v.push(f),
                Err(frame::FrameError::Closed) => return (v, None),
                Err(e) => return (v, Some(e)),
            }
        }
    })
}

/// A `CHUNKS`/`LOCATE` body naming `refs`.
pub fn hashes_body(refs: &[ChunkRef]) -> Vec<u8> {
    refs.iter().flat_map(|r| *r.hash.as_bytes()).collect()
}

/// A `LOCATED` body for `locs`, all in pack slot `slot`.
pub fn located_body(locs: &[BlobLoc], slot: u32) -> Vec<u8> {
    let mut body = Vec::new();
    for l in locs {
        body.extend_from_slice(&slot.to_le_bytes());
        body.extend_from_slice(&l.offset.to_le_bytes());
        body.extend_from_slice(&l.stored_length.to_le_bytes());
        body.push(l.codec.to_u8());
        body.extend_from_slice(&l.raw_length.to_le_bytes());
    }
    body
}

/// A pack-channel server script: segments of `[descriptors to attach (low 2 bits)] [length
/// u16 LE] [bytes]`, sent one `sendmsg` each.
pub fn segment(fds: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![fds];
    v.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

/// Splits a pack-channel server script into (descriptors, bytes) segments.
pub fn segments(mut script: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    while script.len() >= 3 {
        let fds = (script[0] & 3) as usize;
        let len = (u16::from_le_bytes([script[1], script[2]]) as usize).min(script.len() - 3);
        out.push((fds, &script[3..3 + len]));
        script = &script[3 + len..];
    }
    out
}

/// Ignores `SIGPIPE`, as a Rust `main` does (libFuzzer's `main` does not): a write to a
/// socket its peer closed must fail, not kill the fuzzer.
/// What a client's fetch of `refs` handed on, as its batches arrived: whatever verifies is
/// the true chunk (`chunks[i]`), every index is handed on once, in order, and a fetch that
/// succeeded (`fetched`: its chunk count) handed on every chunk.
pub fn check_delivery(
    refs: &[ChunkRef],
    chunks: &[Vec<u8>],
    batches: Vec<Vec<prewarm_transfer::Received>>,
    fetched: Option<u64>,
) {
    let mut seen = Vec::new();
    for batch in batches {
        seen.extend(batch.iter().map(|r| r.index));
        for (i, v) in prewarm_transfer::verify_batch(refs, batch) {
            if let Ok(bytes) = v {
                assert_eq!(&bytes[..], &chunks[i][..], "a verified chunk is true");
            }
        }
    }
    assert!(
        seen.iter().enumerate().all(|(k, i)| k == *i),
        "chunks handed on once each, in order"
    );
    if let Some(n) = fetched {
        assert_eq!(n as usize, refs.len());
        assert_eq!(seen.len(), refs.len(), "a fetch succeeds with every chunk");
    }
}

pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Writes `seeds` as files `name` under `dir`.
pub fn write_seeds(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
}
