//! The data-plane server (runs in the coordinator): answers manifest and chunk requests from
//! the store. Requests on one connection are read ahead and their pack reads run while
//! earlier answers are still being written, so a pipelining client keeps the link busy.
//! Chunks go out as stored (compressed or raw) and are verified by the receiver.
//!
//! Bounded everywhere a client could make it allocate: at most [`MAX_CONNECTIONS`] at once,
//! of which [`MAX_HANDSHAKES`] may still be saying hello; the hello itself is read only up
//! to [`frame::MAX_HELLO`] bytes and within 10 s; once accepted, a connection's chunk reads
//! wait for room in its budget of [`CONN_BUDGET`] bytes read but not yet written, so a
//! client that pipelines requests without reading answers holds at most that much.
//! Store failures reach clients as a plain code and message, never a server path (the
//! detail goes to the log, throttled).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prewarm_core::{ChunkHash, ResourceId, StateRef, Version};
use prewarm_store::{BlobLoc, FetchError, ReadManifestError, Store};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::auth::Token;
use crate::frame::{self, Code, Frame, FrameError, Kind, MAGIC, MAX_HASHES};
use crate::runs::{self, Run, SendFile, Wire};
use crate::throttle::Throttle;
use crate::tokens::{Capability, Keys, Principal};
use crate::warn_throttled;
use prewarm_metrics::{Counter, Registry};

/// Answers computed ahead of the one being written, per connection.
const READ_AHEAD: usize = 4;
/// How long a client has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (more are closed at accept).
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections that may be in their hello at once.
pub const MAX_HANDSHAKES: usize = 64;
/// Bytes of chunk reads one connection may hold before they are written.
pub const CONN_BUDGET: usize = 64 << 20;
/// How long an authenticated connection may go without a request before it is closed. A
/// client with requests outstanding asks again as soon as one is answered, and gives up on a
/// silent server after [`crate::client::READ_TIMEOUT`] (30 s), so a connection quiet this
/// long is idle or abandoned: it holds a slot of [`MAX_CONNECTIONS`] for nothing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Deliberate faults, for tests of the receiving side.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Flip a bit in every n-th chunk sent for the first time (counted over the server's
    /// life); a chunk sent again goes out intact, like after a transient fault.
    pub corrupt_every: Option<u64>,
    /// Corrupt resends too: the source itself is bad.
    pub corrupt_always: bool,
    /// Close every connection abruptly once this many chunk bytes were sent on it.
    pub die_after_bytes: Option<u64>,
}

pub(crate) struct ServerMetrics {
    pub(crate) bytes: Counter,
    pub(crate) chunks: Counter,
    /// Of `bytes`, those sent from the pack files by `sendfile` (see [`runs`]).
    pub(crate) zero_copy_bytes: Counter,
    pub(crate) requests: Counter,
    pub(crate) refused: Counter,
    /// Connections closed after [`IDLE_TIMEOUT`] without a request.
    pub(crate) idle_closed: Counter,
    /// Stored bytes of chunks located for same-host readers (read by them from the packs).
    pub(crate) located_bytes: Counter,
    /// Pack file descriptors passed to same-host readers.
    pub(crate) fds_passed: Counter,
}

/// Serves one store to any number of connections.
pub struct DataServer {
    pub(crate) store: Arc<Store>,
    /// Checked in `HELLO`: the shared token and tenant-scoped ones (see [`Keys`]).
    pub(crate) keys: Arc<Keys>,
    /// Sent in `HELLO_OK`, so a client can tell which coordinator process it reached.
    pub(crate) instance: String,
    pub(crate) metrics: ServerMetrics,
    faults: Faults,
    sent_chunks: AtomicU64,
    /// Chunks already sent (only tracked with `corrupt_every`).
    seen: std::sync::Mutex<std::collections::HashSet<ChunkHash>>,
    /// Room for connections, and for connections still in their hello.
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    /// Log budgets of refusals and of store failures.
    refusals: Throttle,
    failures: Throttle,
    /// TLS on TCP connections (`None`: plain).
    tls: Option<prewarm_tls::Acceptor>,
}

/// A refusal: its code and message.
pub(crate) type Refusal = (Code, String);
/// Chunks read for one request: hash, location, stored bytes.
type ReadChunks = Vec<(ChunkHash, BlobLoc, Bytes)>;

enum Answer {
    Manifest(Result<Vec<u8>, Refusal>),
    /// The chunks read, and the room they hold in the connection's budget until written.
    Chunks(Result<ReadChunks, Refusal>, Option<OwnedSemaphorePermit>),
    /// Runs to send from the pack files (nothing read into memory).
    Runs(Vec<Run>),
    Error(Code, String),
}

impl DataServer {
    /// A server of `store`; `token` is required from clients when given (see
    /// [`DataServer::with_keys`] for tenant-scoped tokens).
    pub fn new(
        store: Arc<Store>,
        token: Option<Token>,
        instance: String,
        metrics: &Registry,
    ) -> Self {
        let m = ServerMetrics {
            bytes: metrics.counter(
                "prewarm_data_sent_bytes_total",
                "Chunk bytes sent on the data plane (as stored, i.e. compressed).",
                &[],
            ),
            chunks: metrics.counter("prewarm_data_sent_chunks_total", "Chunks sent.", &[]),
            zero_copy_bytes: metrics.counter(
                "prewarm_data_sent_zero_copy_bytes_total",
                "Of the chunk bytes sent, those that went from the pack files to the socket \
                 without a copy through the coordinator (runs of adjacent chunks, sendfile).",
                &[],
            ),
            requests: metrics.counter("prewarm_data_requests_total", "Data-plane requests.", &[]),
            refused: metrics.counter(
                "prewarm_data_refused_total",
                "Data-plane connections or requests refused (bad token, bad request, oversize).",
                &[],
            ),
            idle_closed: metrics.counter(
                "prewarm_data_idle_closed_total",
                "Authenticated data-plane connections closed after going without a request for \
                 the idle timeout.",
                &[],
            ),
            located_bytes: metrics.counter(
                "prewarm_data_located_bytes_total",
                "Stored bytes of chunks located for same-host agents, which read them from the \
                 pack files passed to them.",
                &[],
            ),
            fds_passed: metrics.counter(
                "prewarm_data_fds_passed_total",
                "Pack file descriptors passed to same-host agents.",
                &[],
            ),
        };
        DataServer {
            store,
            keys: Arc::new(Keys::from(token)),
            instance,
            metrics: m,
            faults: Faults::default(),
            sent_chunks: AtomicU64::new(0),
            seen: Default::default(),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            refusals: Throttle::default(),
            failures: Throttle::default(),
            tls: None,
        }
    }

    /// Checks hellos with `keys` (the shared token and a tokens file's entries) instead of
    /// the token given to [`DataServer::new`]: a client needs the `transfer` capability, and
    /// a scoped one gets manifests of states inside its prefixes only.
    pub fn with_keys(mut self, keys: Arc<Keys>) -> Self {
        self.keys = keys;
        self
    }

    /// Serves TCP connections over TLS (mutual TLS when `tls` has a client CA): the handshake
    /// must complete within the hello's 10 s, before the hello is read. Runs are then read
    /// and written through memory (`sendfile` cannot encrypt).
    pub fn with_tls(mut self, tls: prewarm_tls::Acceptor) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Injects faults (tests).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Accepts TCP connections forever.
    pub async fn serve_tcp(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((s, peer)) => {
                    let Some(permit) = self.admit(&peer.to_string()) else {
                        continue; // over the limit: the socket is dropped, closing it
                    };
                    let _ = s.set_nodelay(true);
                    let me = self.clone();
                    tokio::spawn(async move {
                        let peer = peer.to_string();
                        match me.tls.clone() {
                            None => me.handle(s, &peer).await,
                            Some(tls) => me.handle_tls(&tls, s, &peer).await,
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("data plane accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Accepts Unix-socket connections forever (the same-host channel).
    pub async fn serve_unix(self: Arc<Self>, listener: tokio::net::UnixListener) {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let Some(permit) = self.admit("unix") else {
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.handle(s, "unix").await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("data plane accept (unix): {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The TLS handshake, bounded by the hello's timeout, then [`DataServer::handle`].
    async fn handle_tls(
        self: Arc<Self>,
        tls: &prewarm_tls::Acceptor,
        s: tokio::net::TcpStream,
        peer: &str,
    ) {
        match tokio::time::timeout(HELLO_TIMEOUT, tls.accept(s)).await {
            Ok(Ok(s)) => self.handle(crate::runs::Plain(s), peer).await,
            Ok(Err(e)) => {
                self.metrics.refused.inc();
                warn_throttled!(
                    self.refusals,
                    "data plane: {peer} TLS handshake refused: {e}"
                );
            }
            Err(_) => {
                self.metrics.refused.inc();
                warn_throttled!(self.refusals, "data plane: {peer} TLS handshake timed out");
            }
        }
    }

    /// Room for one more connection, or `None` (counted, logged within its budget).
    pub(crate) fn admit(&self, peer: &str) -> Option<OwnedSemaphorePermit> {
        let permit = self.connections.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics.refused.inc();
            warn_throttled!(
                self.refusals,
                "data plane: {peer} refused: {MAX_CONNECTIONS} connections already open"
            );
        }
        permit
    }

    /// Serves one connection until the client closes it or misbehaves.
    pub async fn handle<S: Wire>(self: Arc<Self>, stream: S, peer: &str) {
        let (rd, wr) = stream.halves();
        let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
        let mut wr = BufWriter::with_capacity(1 << 20, wr);
        let hello = match self.handshakes.clone().try_acquire_owned() {
            Ok(_permit) => tokio::time::timeout(
                HELLO_TIMEOUT,
                frame::read_frame_limited(&mut rd, frame::MAX_HELLO),
            )
            .await
            .unwrap_or_else(|_| {
                Err(FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no hello within 10 s",
                )))
            }),
            Err(_) => Err(FrameError::Io(std::io::Error::other(format!(
                "{MAX_HANDSHAKES} connections already saying hello"
            )))),
        };
        let who = match self.check_hello(hello) {
            Ok(who) => who,
            Err(why) => {
                warn_throttled!(self.refusals, "data plane: refused {peer}: {why}");
                self.metrics.refused.inc();
                let _ = frame::write_frame(
                    &mut wr,
                    Kind::Error,
                    0,
                    &frame::error_body(Code::Unauthorized, &why),
                )
                .await;
                let _ = wr.flush().await;
                return;
            }
        };
        let hello_ok = format!("{}{}", self.instance, runs::FEATURE);
        if frame::write_frame(&mut wr, Kind::HelloOk, 0, hello_ok.as_bytes())
            .await
            .is_err()
            || wr.flush().await.is_err()
        {
            return;
        }
        let (tx, rx) = mpsc::channel::<(u32, JoinHandle<Answer>)>(READ_AHEAD);
        let writer = tokio::spawn(self.clone().write_answers(wr, rx));
        let budget = Arc::new(Semaphore::new(CONN_BUDGET >> 10));
        loop {
            let Ok(read) = tokio::time::timeout(IDLE_TIMEOUT, frame::read_frame(&mut rd)).await
            else {
                self.metrics.idle_closed.inc();
                tracing::debug!("data plane: {peer}: no request for {IDLE_TIMEOUT:?}; closing");
                break;
            };
            let f = match read {
                Ok(f) => f,
                Err(FrameError::Closed) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::Oversize(_) => Code::Oversize,
                        _ => Code::BadRequest,
                    };
                    warn_throttled!(self.refusals, "data plane: {peer}: {e}; closing");
                    self.metrics.refused.inc();
                    let msg = e.to_string();
                    let _ = tx
                        .send((0, tokio::spawn(async move { Answer::Error(code, msg) })))
                        .await;
                    break;
                }
            };
            self.metrics.requests.inc();
            let request = f.request;
            // Room for what this request will read, taken in request order (the writer frees
            // it in the same order, so waiting here cannot deadlock).
            let permit = match f.kind {
                Kind::Chunks | Kind::ChunkRuns => Some(self.room_for(&f.body, &budget).await),
                _ => None,
            };
            let job = self.clone().answer(f, permit, who.clone());
            if tx.send((request, tokio::spawn(job))).await.is_err() {
                break;
            }
        }
        drop(tx);
        let _ = writer.await;
    }

    /// Who a connection's first frame says the client is, or why it is refused (not a
    /// hello, a missing or wrong token, a token without the `transfer` capability).
    pub(crate) fn check_hello(
        &self,
        hello: Result<Frame, FrameError>,
    ) -> Result<Arc<Principal>, String> {
        let f = hello.map_err(|e| format!("bad hello: {e}"))?;
        if f.kind != Kind::Hello || !f.body.starts_with(MAGIC) {
            return Err("the first frame is not a prewarm data-plane hello".into());
        }
        let who = self
            .keys
            .authenticate(Some(&f.body[MAGIC.len()..]))
            .map_err(|_| "missing or wrong token".to_owned())?;
        who.may(Capability::Transfer).map_err(|e| e.to_string())?;
        Ok(who)
    }

    /// Waits for room in `budget` for the stored bytes `body`'s hashes name (all of it when
    /// one request is larger than the whole budget).
    async fn room_for(&self, body: &[u8], budget: &Arc<Semaphore>) -> OwnedSemaphorePermit {
        let bytes: u64 = parse_hashes(body)
            .ok()
            .and_then(|h| self.store.locate(&h).ok())
            .map_or(0, |locs| {
                locs.iter().map(|l| u64::from(l.stored_length)).sum()
            });
        let kib = ((bytes >> 10) + 1).min((CONN_BUDGET >> 10) as u64) as u32;
        budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the budget is never closed")
    }

    async fn answer(
        self: Arc<Self>,
        f: Frame,
        permit: Option<OwnedSemaphorePermit>,
        who: Arc<Principal>,
    ) -> Answer {
        match f.kind {
            Kind::Manifest => Answer::Manifest(self.manifest(&f.body, &who).await),
            Kind::Chunks => Answer::Chunks(self.chunks(&f.body).await, permit),
            Kind::ChunkRuns => match self.runs(&f.body).await {
                Some(runs) => Answer::Runs(runs),
                None => Answer::Chunks(self.chunks(&f.body).await, permit),
            },
            k => Answer::Error(Code::BadRequest, format!("unexpected {k:?} frame")),
        }
    }

    /// A store failure as a client sees it: the code, a plain message (the detail, which
    /// names server paths, goes to the log).
    fn store_failure(&self, what: &str, e: &dyn std::fmt::Display) -> Refusal {
        warn_throttled!(self.failures, "data plane: {what}: {e}");
        (
            Code::Store,
            format!("the coordinator's store failed to {what} (see its log)"),
        )
    }

    /// A manifest, for a client that may name its resource (else refused the same whether
    /// the state exists or not).
    async fn manifest(&self, body: &[u8], who: &Principal) -> Result<Vec<u8>, Refusal> {
        let bad = |m: String| (Code::BadRequest, m);
        if body.len() < 8 {
            return Err(bad("manifest request shorter than 8 bytes".into()));
        }
        let version = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let name =
            std::str::from_utf8(&body[8..]).map_err(|_| bad("resource id is not UTF-8".into()))?;
        let resource =
            ResourceId::new(name).map_err(|e| bad(format!("invalid resource id: {e}")))?;
        who.may_name(Capability::Transfer, &resource)
            .map_err(|e| (Code::Unauthorized, e.to_string()))?;
        let m = match Version::new(version) {
            Some(v) => {
                self.store
                    .manifest(&StateRef {
                        resource,
                        version: v,
                    })
                    .await
            }
            None => self.store.resolve(&resource, None).await,
        };
        match m {
            Ok(m) => Ok(m.encode()),
            Err(
                e @ (ReadManifestError::UnknownResource(_)
                | ReadManifestError::UnknownVersion { .. }),
            ) => Err((Code::UnknownState, e.to_string())),
            Err(e) => Err(self.store_failure("read a manifest", &e)),
        }
    }

    async fn chunks(
        &self,
        body: &[u8],
    ) -> Result<Vec<(ChunkHash, BlobLoc, Bytes)>, (Code, String)> {
        let hashes = parse_hashes(body)?;
        let mut got = self.store.read_stored(&hashes).await;
        if matches!(got, Err(FetchError::Missing(_))) {
            // Committed by another process since the index was loaded?
            if self.store.refresh_index().await.is_ok() {
                got = self.store.read_stored(&hashes).await;
            }
        }
        match got {
            Ok(v) => Ok(hashes
                .into_iter()
                .zip(v)
                .map(|(h, (l, b))| (h, l, b))
                .collect()),
            Err(e @ FetchError::Missing(_)) => Err((Code::UnknownChunk, e.to_string())),
            Err(e) => Err(self.store_failure("read chunks", &e)),
        }
    }

    /// The runs answering a `CHUNK_RUNS` request, or `None` to answer it with `CHUNK`
    /// frames read through the store (see [`runs`]).
    async fn runs(self: &Arc<Self>, body: &[u8]) -> Option<Vec<Run>> {
        if self.faults.corrupt_every.is_some() || self.faults.die_after_bytes.is_some() {
            return None;
        }
        let locs = self.store.locate(&parse_hashes(body).ok()?).ok()?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || runs::plan(&me.store, &locs))
            .await
            .ok()?
    }

    /// Sends one request's runs and its `DONE`.
    async fn write_runs<W: SendFile>(
        &self,
        wr: &mut BufWriter<W>,
        request: u32,
        runs: &[Run],
    ) -> std::io::Result<()> {
        for r in runs {
            let table = r.table();
            wr.write_all(&frame::header(
                Kind::Run,
                request,
                table.len() + r.len as usize,
            ))
            .await?;
            wr.write_all(&table).await?;
            wr.flush().await?;
            if wr.get_mut().send_file(&r.file, r.offset, r.len).await? {
                self.metrics.zero_copy_bytes.add(r.len);
            }
            self.metrics.bytes.add(r.len);
            self.metrics.chunks.add(r.entries.len() as u64);
        }
        frame::write_frame(wr, Kind::Done, request, &[]).await
    }

    async fn write_answers<W: SendFile>(
        self: Arc<Self>,
        mut wr: BufWriter<W>,
        mut rx: mpsc::Receiver<(u32, JoinHandle<Answer>)>,
    ) {
        let mut sent_here = 0u64;
        while let Some((request, job)) = rx.recv().await {
            let answer = job
                .await
                .unwrap_or_else(|e| Answer::Error(Code::Store, format!("server task failed: {e}")));
            let r = match answer {
                Answer::Manifest(Ok(m)) => {
                    frame::write_frame(&mut wr, Kind::ManifestOk, request, &m).await
                }
                Answer::Chunks(Ok(chunks), _permit) => {
                    // Frames of the whole request: headers built here, bodies sent from the
                    // pack reads as they are, with vectored writes (no copy into a buffer).
                    let mut frames = Vec::with_capacity(chunks.len());
                    for (hash, loc, stored) in chunks {
                        if let Some(limit) = self.faults.die_after_bytes
                            && sent_here >= limit
                        {
                            tracing::warn!("data plane: injected fault: dying mid-stream");
                            let _ = self.write_frames(&mut wr, &frames).await;
                            let _ = wr.flush().await;
                            let _ = wr.get_mut().shutdown().await;
                            return; // the connection ends without DONE
                        }
                        sent_here += u64::from(loc.stored_length);
                        frames.push(self.chunk_frame(request, hash, &loc, stored));
                    }
                    match self.write_frames(&mut wr, &frames).await {
                        Ok(()) => frame::write_frame(&mut wr, Kind::Done, request, &[]).await,
                        e => e,
                    }
                }
                Answer::Runs(runs) => self.write_runs(&mut wr, request, &runs).await,
                Answer::Manifest(Err((code, msg)))
                | Answer::Chunks(Err((code, msg)), _)
                | Answer::Error(code, msg) => {
                    if code != Code::UnknownState {
                        self.metrics.refused.inc();
                    }
                    frame::write_frame(
                        &mut wr,
                        Kind::Error,
                        request,
                        &frame::error_body(code, &msg),
                    )
                    .await
                }
            };
            if r.is_err() {
                return;
            }
            if rx.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
    }

    fn should_corrupt(&self, hash: ChunkHash, k: u64) -> bool {
        let first = self.seen.lock().expect("fault lock poisoned").insert(hash);
        if !first && !self.faults.corrupt_always {
            return false;
        }
        let n = self.sent_chunks.fetch_add(1, Ordering::Relaxed) + 1;
        n.is_multiple_of(k)
    }

    /// One `CHUNK` frame: its header and its body (corrupted when a fault says so).
    fn chunk_frame(
        &self,
        request: u32,
        hash: ChunkHash,
        loc: &BlobLoc,
        stored: Bytes,
    ) -> ([u8; 46], Bytes) {
        let stored = match self.faults.corrupt_every {
            Some(k) if k > 0 && !stored.is_empty() && self.should_corrupt(hash, k) => {
                let mut v = stored.to_vec();
                v[0] ^= 0x40;
                Bytes::from(v)
            }
            _ => stored,
        };
        let mut pre = [0u8; 9 + 37];
        pre[..9].copy_from_slice(&frame::header(Kind::Chunk, request, 37 + stored.len()));
        pre[9..41].copy_from_slice(hash.as_bytes());
        pre[41] = loc.codec.to_u8();
        pre[42..46].copy_from_slice(&loc.raw_length.to_le_bytes());
        (pre, stored)
    }

    /// Writes frames with vectored writes on the unbuffered stream (after flushing what the
    /// buffer holds), up to 1,024 slices per call.
    async fn write_frames<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut BufWriter<W>,
        frames: &[([u8; 46], Bytes)],
    ) -> std::io::Result<()> {
        use std::io::IoSlice;
        wr.flush().await?;
        let inner = wr.get_mut();
        for group in frames.chunks(512) {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(group.len() * 2);
            for (pre, body) in group {
                slices.push(IoSlice::new(pre));
                if !body.is_empty() {
                    slices.push(IoSlice::new(body));
                }
            }
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                let n = inner.write_vectored(rest).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut rest, n);
            }
            for (_, body) in group {
                self.metrics.bytes.add(body.len() as u64);
                self.metrics.chunks.inc();
            }
        }
        Ok(())
    }
}

/// The hashes of a `CHUNKS` or `LOCATE` request.
pub(crate) fn parse_hashes(body: &[u8]) -> Result<Vec<ChunkHash>, Refusal> {
    if !body.len().is_multiple_of(32) || body.len() / 32 > MAX_HASHES {
        return Err((
            Code::BadRequest,
            format!(
                "chunk request of {} bytes: want n × 32, n ≤ {MAX_HASHES}",
                body.len()
            ),
        ));
    }
    Ok(body
        .chunks_exact(32)
        .map(|h| ChunkHash::from_array(h.try_into().expect("32 bytes")))
        .collect())
}
