//! The data-plane client (runs in the agent): one connection per transfer, requests
//! pipelined (up to [`IN_FLIGHT`] chunk requests outstanding, no per-chunk round trips),
//! answers handed on in order as batches of stored bytes; the receiver verifies them
//! ([`verify_batch`]) off the network task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prewarm_core::{ChunkHash, ResourceId, Version};
use prewarm_store::{ChunkRef, Codec, Manifest, ManifestError, VerifyChunkError, verify_stored};
use rayon::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc};

use crate::auth::Token;
use crate::fds::PackChannel;
use crate::frame::{self, Code, FrameError, FrameReader, Kind, MAGIC, MAX_HASHES};
use crate::pace::Pacer;

/// Chunk requests outstanding on one connection.
pub const IN_FLIGHT: usize = 8;
/// Raw bytes asked for per chunk request.
pub const REQUEST_BYTES: u64 = 4 << 20;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence from the server while an answer is due: a peer that vanished without
/// closing the connection (host down, partition) is declared gone after this.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

async fn read_due<R: AsyncRead + Unpin>(r: &mut FrameReader<R>) -> Result<frame::Frame, DataError> {
    match tokio::time::timeout(READ_TIMEOUT, r.next()).await {
        Ok(f) => Ok(f?),
        Err(_) => Err(DataError::PeerGone(format!("no data for {READ_TIMEOUT:?}"))),
    }
}

/// Where a data plane listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataAddr {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket on this host.
    Unix(PathBuf),
    /// On this host: manifests over the Unix socket `stream`, chunks read from pack files
    /// passed over the socket `packs` (see [`crate::fds`]).
    UnixFds {
        /// The data plane's Unix socket.
        stream: PathBuf,
        /// The pack channel's socket.
        packs: PathBuf,
    },
}

impl std::fmt::Display for DataAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataAddr::Tcp(a) => write!(f, "tcp://{a}"),
            DataAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            DataAddr::UnixFds { packs, .. } => write!(f, "unix+fds://{}", packs.display()),
        }
    }
}

/// Why a data-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The server could not be reached.
    #[error("cannot connect to the data plane at {addr}: {why}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        why: String,
    },
    /// The server refused (bad token, bad request, oversize…).
    #[error("the data plane refused: {code:?}: {msg}")]
    Refused {
        /// Its code.
        code: Code,
        /// Its message.
        msg: String,
    },
    /// No such resource, version or chunk at the source.
    #[error("unknown state: {0}")]
    UnknownState(String),
    /// The connection broke mid-stream (the peer died or the network failed).
    #[error("the data plane connection broke: {0}")]
    PeerGone(String),
    /// The server broke the protocol.
    #[error("data plane protocol error: {0}")]
    Protocol(String),
    /// The manifest received does not decode or is not the one asked for.
    #[error("bad manifest from the data plane: {0}")]
    Manifest(String),
}

impl From<FrameError> for DataError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => DataError::PeerGone(e.to_string()),
            FrameError::Closed => DataError::PeerGone("closed by the peer".into()),
            e => DataError::Protocol(e.to_string()),
        }
    }
}

impl From<ManifestError> for DataError {
    fn from(e: ManifestError) -> Self {
        DataError::Manifest(e.to_string())
    }
}

pub(crate) fn refused(body: &[u8]) -> DataError {
    let (code, msg) = frame::parse_error(body);
    match code {
        Code::UnknownState | Code::UnknownChunk => DataError::UnknownState(msg),
        code => DataError::Refused { code, msg },
    }
}

/// A byte stream the data plane can run over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One received chunk, not yet verified.
#[derive(Debug)]
pub struct Received {
    /// Index into the refs given to [`Connection::fetch`].
    pub index: usize,
    /// How it is stored.
    pub codec: Codec,
    /// Its stored bytes.
    pub stored: Bytes,
}

/// What one fetch moved.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchStats {
    /// Bytes received, frame headers included.
    pub wire_bytes: u64,
    /// Chunks received.
    pub chunks: u64,
}

/// One open data-plane connection.
pub struct Connection {
    rd: FrameReader<ReadHalf<Box<dyn Io>>>,
    wr: BufWriter<WriteHalf<Box<dyn Io>>>,
    next: u32,
    /// Chunks come from passed pack files instead of the stream.
    packs: Option<PackChannel>,
    /// The server answers `CHUNK_RUNS` (see [`crate::runs`]).
    runs: bool,
    /// The server's instance id (from `HELLO_OK`).
    pub server_instance: String,
}

impl Connection {
    /// Connects and greets (with the token when given).
    pub async fn connect(addr: &DataAddr, token: Option<&Token>) -> Result<Self, DataError> {
        Self::connect_tls(addr, token, None).await
    }

    /// [`Connection::connect`], over TLS to a TCP address when `tls` is given (the server's
    /// certificate checked for the address's IP unless the connector names the server).
    /// Unix sockets and the pack channel stay plain: they are this host's own.
    pub async fn connect_tls(
        addr: &DataAddr,
        token: Option<&Token>,
        tls: Option<&prewarm_tls::Connector>,
    ) -> Result<Self, DataError> {
        let err = |why: String| DataError::Connect {
            addr: addr.to_string(),
            why,
        };
        let io: Box<dyn Io> = match addr {
            DataAddr::Tcp(a) => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(a))
                    .await
                    .map_err(|_| err("timed out".into()))?
                    .map_err(|e| err(e.to_string()))?;
                let _ = s.set_nodelay(true);
                match tls {
                    None => Box::new(s),
                    Some(c) => Box::new(
                        tokio::time::timeout(
                            CONNECT_TIMEOUT,
                            c.connect(prewarm_tls::host_of(a), s),
                        )
                        .await
                        .map_err(|_| err("TLS handshake timed out".into()))?
                        .map_err(|e| err(format!("TLS: {e}")))?,
                    ),
                }
            }
            DataAddr::Unix(p) | DataAddr::UnixFds { stream: p, .. } => Box::new(
                tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| err(e.to_string()))?,
            ),
        };
        let packs = match addr {
            DataAddr::UnixFds { packs, .. } => {
                let (p, t) = (packs.clone(), token.cloned());
                let ch = tokio::task::spawn_blocking(move || PackChannel::connect(&p, t.as_ref()))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                match ch {
                    Ok(ch) => Some(ch),
                    // A tenant-scoped token is refused the packs (they mix tenants' chunks):
                    // the stream serves it (a wrong token is refused there too).
                    Err(DataError::Refused {
                        code: Code::Unauthorized,
                        ..
                    }) => None,
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let (rd, wr) = tokio::io::split(io);
        // Frames are sliced out of large reads: no copy per frame.
        let mut rd = FrameReader::new(rd);
        let mut wr = BufWriter::with_capacity(256 << 10, wr);
        let mut hello = MAGIC.to_vec();
        if let Some(t) = token {
            hello.extend_from_slice(t.expose().as_bytes());
        }
        frame::write_frame(&mut wr, Kind::Hello, 0, &hello)
            .await
            .map_err(|e| err(e.to_string()))?;
        wr.flush().await.map_err(|e| err(e.to_string()))?;
        let f = tokio::time::timeout(CONNECT_TIMEOUT, rd.next())
            .await
            .map_err(|_| err("no answer to hello".into()))??;
        match f.kind {
            Kind::HelloOk => {
                let body = String::from_utf8_lossy(&f.body);
                let (instance, runs) = match body.strip_suffix(crate::runs::FEATURE) {
                    Some(i) => (i.to_owned(), true),
                    None => (body.into_owned(), false),
                };
                Ok(Connection {
                    rd,
                    wr,
                    next: 1,
                    packs,
                    runs,
                    server_instance: instance,
                })
            }
            Kind::Error => Err(refused(&f.body)),
            k => Err(DataError::Protocol(format!("expected HELLO_OK, got {k:?}"))),
        }
    }

    fn request_id(&mut self) -> u32 {
        let r = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        r
    }

    /// The manifest of `resource` at `version` (the newest when `None`), checked to be the
    /// state asked for.
    pub async fn manifest(
        &mut self,
        resource: &ResourceId,
        version: Option<Version>,
    ) -> Result<Manifest, DataError> {
        let req = self.request_id();
        let mut body = version.map_or(0, Version::get).to_le_bytes().to_vec();
        body.extend_from_slice(resource.as_str().as_bytes());
        frame::write_frame(&mut self.wr, Kind::Manifest, req, &body)
            .await
            .map_err(|e| DataError::PeerGone(e.to_string()))?;
        self.wr
            .flush()
            .await
            .map_err(|e| DataError::PeerGone(e.to_string()))?;
        let f = read_due(&mut self.rd).await?;
        if f.request != req {
            return Err(DataError::Protocol(format!(
                "answer to request {} while waiting for {req}",
                f.request
            )));
        }
        match f.kind {
            Kind::ManifestOk => {
                let m = Manifest::decode(&f.body)?;
                if &m.state.resource != resource || version.is_some_and(|v| v != m.state.version) {
                    return Err(DataError::Manifest(format!(
                        "asked for {resource}@{version:?}, got {}",
                        m.state
                    )));
                }
                Ok(m)
            }
            Kind::Error => Err(refused(&f.body)),
            k => Err(DataError::Protocol(format!(
                "expected MANIFEST_OK, got {k:?}"
            ))),
        }
    }

    /// The requests fetching `refs`: (request id, range of refs), each up to
    /// [`REQUEST_BYTES`] raw bytes and [`MAX_HASHES`] chunks.
    fn plan(&mut self, refs: &[ChunkRef]) -> Vec<(u32, std::ops::Range<usize>)> {
        let mut plan = Vec::new();
        let mut start = 0;
        let mut acc = 0u64;
        for (i, r) in refs.iter().enumerate() {
            acc += u64::from(r.length);
            if acc >= REQUEST_BYTES || i + 1 - start == MAX_HASHES {
                plan.push((self.request_id(), start..i + 1));
                start = i + 1;
                acc = 0;
            }
        }
        if start < refs.len() {
            plan.push((self.request_id(), start..refs.len()));
        }
        plan
    }

    /// Fetches `refs`, pipelined, handing batches of received (unverified) chunks to `sink`
    /// in order. `pacer` (predictive transfers) bounds the rate requests are issued at.
    pub async fn fetch(
        &mut self,
        refs: &[ChunkRef],
        pacer: Option<&Pacer>,
        sink: &mpsc::Sender<Vec<Received>>,
    ) -> Result<FetchStats, DataError> {
        if let Some(ch) = self.packs.take() {
            let (ch, got) = ch.fetch(refs, pacer, sink).await;
            self.packs = Some(ch);
            return got;
        }
        let plan = self.plan(refs);
        let window = Arc::new(Semaphore::new(IN_FLIGHT));
        let ask = match self.runs {
            true => Kind::ChunkRuns,
            false => Kind::Chunks,
        };
        let wr = &mut self.wr;
        let rd = &mut self.rd;
        let send = async {
            for (id, range) in &plan {
                let permit = window.clone().acquire_owned().await.expect("never closed");
                permit.forget();
                if let Some(p) = pacer {
                    let bytes: u64 = refs[range.clone()]
                        .iter()
                        .map(|r| u64::from(r.stored_length))
                        .sum();
                    p.take(bytes).await;
                }
                let mut body = Vec::with_capacity(range.len() * 32);
                for r in &refs[range.clone()] {
                    body.extend_from_slice(r.hash.as_bytes());
                }
                frame::write_frame(wr, ask, *id, &body)
                    .await
                    .map_err(|e| DataError::PeerGone(e.to_string()))?;
                wr.flush()
                    .await
                    .map_err(|e| DataError::PeerGone(e.to_string()))?;
            }
            Ok::<(), DataError>(())
        };
        let recv = async {
            let mut stats = FetchStats::default();
            for (id, range) in &plan {
                let mut batch = Vec::with_capacity(range.len());
                let mut want = range.clone();
                loop {
                    let f = read_due(rd).await?;
                    if f.request != *id {
                        return Err(DataError::Protocol(format!(
                            "answer to request {} while reading {id}",
                            f.request
                        )));
                    }
                    stats.wire_bytes += 9 + f.body.len() as u64;
                    match f.kind {
                        Kind::Chunk => {
                            let i = want.next().ok_or_else(|| {
                                DataError::Protocol("more chunks than asked for".into())
                            })?;
                            batch.push(parse_chunk(f.body, i, &refs[i])?);
                            stats.chunks += 1;
                        }
                        Kind::Run => {
                            let got = crate::runs::parse(f.body, &mut want, refs)?;
                            stats.chunks += got.len() as u64;
                            batch.extend(got);
                        }
                        Kind::Done if want.is_empty() => break,
                        Kind::Done => {
                            return Err(DataError::Protocol(format!(
                                "request {id} done with {} chunks missing",
                                want.len()
                            )));
                        }
                        Kind::Error => return Err(refused(&f.body)),
                        k => return Err(DataError::Protocol(format!("unexpected {k:?}"))),
                    }
                }
                window.add_permits(1);
                if sink.send(batch).await.is_err() {
                    return Err(DataError::PeerGone("the receiver stopped".into()));
                }
            }
            Ok(stats)
        };
        let (sent, got) = tokio::join!(send, recv);
        let stats = got?;
        sent?;
        Ok(stats)
    }
}

fn parse_chunk(body: Bytes, index: usize, want: &ChunkRef) -> Result<Received, DataError> {
    if body.len() < 37 {
        return Err(DataError::Protocol(
            "chunk frame shorter than its header".into(),
        ));
    }
    let hash = ChunkHash::from_slice(&body[..32]).expect("32 bytes");
    if hash != want.hash {
        return Err(DataError::Protocol(format!(
            "sent chunk {hash} where {} was asked for",
            want.hash
        )));
    }
    let codec = Codec::from_u8(body[32])
        .ok_or_else(|| DataError::Protocol(format!("unknown codec {}", body[32])))?;
    let raw_len = u32::from_le_bytes(body[33..37].try_into().expect("4 bytes"));
    if raw_len != want.length {
        return Err(DataError::Protocol(format!(
            "chunk {hash}: {raw_len} bytes announced, the manifest says {}",
            want.length
        )));
    }
    Ok(Received {
        index,
        codec,
        stored: body.slice(37..),
    })
}

/// Decodes and verifies a batch on all cores: each chunk's raw bytes, or why it was refused.
pub fn verify_batch(
    refs: &[ChunkRef],
    batch: Vec<Received>,
) -> Vec<(usize, Result<Bytes, VerifyChunkError>)> {
    batch
        .into_par_iter()
        .map(|r| {
            let want = &refs[r.index];
            (
                r.index,
                verify_stored(want.hash, r.codec, want.length, r.stored),
            )
        })
        .collect()
}
