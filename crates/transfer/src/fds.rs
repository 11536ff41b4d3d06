//! The same-host pack channel: when agent and coordinator share a host and the store is a
//! local directory, the coordinator passes the agent read-only descriptors of the pack files
//! (`SCM_RIGHTS` over a Unix socket) and says where each chunk lies in them; the agent reads
//! the stored bytes out of the page cache itself — no copy through a socket, no coordinator
//! CPU per byte — and verifies them exactly as it verifies chunks from the stream.
//!
//! ```text
//! client → HELLO (magic + token)              server → HELLO_OK | ERROR
//! client → LOCATE (≤ MAX_HASHES hashes)       server → PACK_FDS* then LOCATED, or ERROR
//! PACK_FDS body: count u32 LE; that many descriptors ride with the frame (≤ FDS_PER_FRAME)
//! LOCATED body:  per hash, in order: slot u32 | offset u64 | stored u32 | codec u8 | raw u32
//! ```
//! Slots number the packs passed on one connection, in the order passed, from 0. One request
//! is outstanding at a time: answers are small, the reads are the work.
//!
//! Trust: an agent given a pack can read all of it, other states' chunks included. The
//! socket lives on the coordinator's host, is checked with the same keys as the stream, and
//! is only offered to agents that share the host; an agent that holds the token can already
//! fetch any chunk whose hash it knows. A tenant-scoped token is refused here (a pack mixes
//! tenants' chunks): it must use the stream, which serves it its own manifests only.

use std::collections::{HashMap, VecDeque};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prewarm_core::ChunkHash;
use prewarm_store::{ChunkRef, Codec, FetchError, PackId};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::sync::mpsc;

use crate::auth::Token;
use crate::client::{DataError, FetchStats, READ_TIMEOUT, REQUEST_BYTES, Received};
use crate::frame::{self, Code, Frame, FrameError, Kind, MAGIC, MAX_HASHES};
use crate::pace::Pacer;
use crate::server::{DataServer, Refusal};

/// Most descriptors attached to one `PACK_FDS` frame (the kernel allows 253).
const FDS_PER_FRAME: usize = 64;
/// Bytes per chunk in a `LOCATED` body.
const ENTRY: usize = 21;
/// Largest single read of adjacent chunks.
const MAX_RUN: u64 = 8 << 20;
/// How long a pack-channel connection may sit idle before the server drops it.
const IDLE: Duration = Duration::from_secs(600);

/// Reads one frame of at most `max` bytes through `fill` (which must fill the buffer it is
/// given completely); a longer one is refused before anything is allocated for it.
fn read_frame_with(
    max: u32,
    mut fill: impl FnMut(&mut [u8]) -> Result<(), FrameError>,
) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    fill(&mut len)?;
    let len = frame::check_len(u32::from_le_bytes(len))?;
    if len > max {
        return Err(FrameError::Oversize(len));
    }
    let mut buf = bytes::BytesMut::zeroed(len as usize);
    fill(&mut buf)?;
    frame::split(buf)
}

fn write_frame_blocking(s: &mut UnixStream, kind: Kind, request: u32, body: &[u8]) -> bool {
    s.write_all(&frame::header(kind, request, body.len()))
        .is_ok()
        && s.write_all(body).is_ok()
}

// ---------------------------------------------------------------------------------------
// Server (coordinator side)

impl DataServer {
    /// Accepts pack-channel connections forever, one thread per connection. Only for a store
    /// in a local directory (see [`prewarm_store::Store::pack_file`]).
    pub async fn serve_fds(self: Arc<Self>, listener: tokio::net::UnixListener) {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    let Some(permit) = self.admit("pack channel") else {
                        continue;
                    };
                    let s = match s.into_std().and_then(|s| {
                        s.set_nonblocking(false)?;
                        Ok(s)
                    }) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("pack channel: {e}");
                            continue;
                        }
                    };
                    let (me, rt) = (self.clone(), tokio::runtime::Handle::current());
                    let spawned = std::thread::Builder::new()
                        .name("prewarm-packs".into())
                        .spawn(move || {
                            me.pack_channel(s, &rt);
                            drop(permit);
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("pack channel: cannot start a thread: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("pack channel accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn pack_channel(&self, mut s: UnixStream, rt: &tokio::runtime::Handle) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let hello = read_frame_with(frame::MAX_HELLO, |b| Ok(s.read_exact(b)?));
        // A pack holds chunks of many states: only a token over every prefix gets one.
        let refusal = match self.check_hello(hello) {
            Ok(who) if !who.scope.is_all() => Some(format!(
                "token {:?} is scoped to some prefixes; the pack channel passes whole pack \
                 files (other states' chunks included) and needs a token over every prefix",
                who.name
            )),
            Ok(_) => None,
            Err(why) => Some(why),
        };
        if let Some(why) = refusal {
            tracing::warn!("pack channel: refused connection: {why}");
            self.metrics.refused.inc();
            let _ = write_frame_blocking(
                &mut s,
                Kind::Error,
                0,
                &frame::error_body(Code::Unauthorized, &why),
            );
            return;
        }
        if !write_frame_blocking(&mut s, Kind::HelloOk, 0, self.instance.as_bytes()) {
            return;
        }
        let _ = s.set_read_timeout(Some(IDLE));
        let mut slots: HashMap<PackId, u32> = HashMap::new();
        loop {
            let f = match read_frame_with(frame::MAX_FRAME, |b| Ok(s.read_exact(b)?)) {
                Ok(f) => f,
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                Err(e) => {
                    tracing::warn!("pack channel: {e}; closing");
                    self.metrics.refused.inc();
                    let code = match e {
                        FrameError::Oversize(_) => Code::Oversize,
                        _ => Code::BadRequest,
                    };
                    let _ = write_frame_blocking(
                        &mut s,
                        Kind::Error,
                        0,
                        &frame::error_body(code, &e.to_string()),
                    );
                    return;
                }
            };
            self.metrics.requests.inc();
            let answered = match self.locate(&f, rt) {
                Ok(locs) => self.send_located(&mut s, f.request, &locs, &mut slots),
                Err((code, msg)) => {
                    if code != Code::UnknownChunk {
                        self.metrics.refused.inc();
                    }
                    Err(frame::error_body(code, &msg))
                }
            };
            let ok = match answered {
                Ok(()) => true,
                Err(body) => write_frame_blocking(&mut s, Kind::Error, f.request, &body),
            };
            if !ok {
                return;
            }
        }
    }

    fn locate(
        &self,
        f: &Frame,
        rt: &tokio::runtime::Handle,
    ) -> Result<Vec<prewarm_store::BlobLoc>, Refusal> {
        if f.kind != Kind::Locate {
            return Err((
                Code::BadRequest,
                format!("unexpected {:?} frame on the pack channel", f.kind),
            ));
        }
        let hashes = crate::server::parse_hashes(&f.body)?;
        let mut got = self.store.locate(&hashes);
        if matches!(got, Err(FetchError::Missing(_))) {
            // Committed by another process since the index was loaded?
            if rt.block_on(self.store.refresh_index()).is_ok() {
                got = self.store.locate(&hashes);
            }
        }
        got.map_err(|e| (Code::UnknownChunk, e.to_string()))
    }

    /// Passes the packs not passed yet, then the locations. `Err` carries an error body to
    /// send instead; an I/O failure on the socket ends the connection (`Ok` with nothing
    /// more to do is impossible to tell apart, so it closes the socket).
    fn send_located(
        &self,
        s: &mut UnixStream,
        request: u32,
        locs: &[prewarm_store::BlobLoc],
        slots: &mut HashMap<PackId, u32>,
    ) -> Result<(), Vec<u8>> {
        let mut new: Vec<PackId> = Vec::new();
        for l in locs {
            if !slots.contains_key(&l.pack) && !new.contains(&l.pack) {
                new.push(l.pack);
            }
        }
        let mut files = Vec::with_capacity(new.len());
        for id in &new {
            let path = self.store.pack_file(id).ok_or_else(|| {
                frame::error_body(
                    Code::BadRequest,
                    "the store is not a local directory: use the stream",
                )
            })?;
            let f = std::fs::File::open(&path).map_err(|e| {
                frame::error_body(Code::Store, &format!("pack {}: {e}", path.display()))
            })?;
            files.push(f);
        }
        for group in files.chunks(FDS_PER_FRAME) {
            let fds: Vec<BorrowedFd<'_>> = group.iter().map(AsFd::as_fd).collect();
            if send_with_fds(s, request, &fds).is_err() {
                let _ = s.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            self.metrics.fds_passed.add(fds.len() as u64);
        }
        for id in new {
            let n = slots.len() as u32;
            slots.insert(id, n);
        }
        let mut body = Vec::with_capacity(locs.len() * ENTRY);
        let mut bytes = 0u64;
        for l in locs {
            body.extend_from_slice(&slots[&l.pack].to_le_bytes());
            body.extend_from_slice(&l.offset.to_le_bytes());
            body.extend_from_slice(&l.stored_length.to_le_bytes());
            body.push(l.codec.to_u8());
            body.extend_from_slice(&l.raw_length.to_le_bytes());
            bytes += u64::from(l.stored_length);
        }
        if !write_frame_blocking(s, Kind::Located, request, &body) {
            let _ = s.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        self.metrics.located_bytes.add(bytes);
        self.metrics.chunks.add(locs.len() as u64);
        Ok(())
    }
}

/// Sends one `PACK_FDS` frame with `fds` attached.
fn send_with_fds(s: &mut UnixStream, request: u32, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut msg = frame::header(Kind::PackFds, request, 4).to_vec();
    msg.extend_from_slice(&(fds.len() as u32).to_le_bytes());
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_FRAME))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    let sent = rustix::net::sendmsg(&*s, &[IoSlice::new(&msg)], &mut cmsg, SendFlags::NOSIGNAL)?;
    // The descriptors went with the first byte; the rest, if any, is plain data.
    s.write_all(&msg[sent..])
}

// ---------------------------------------------------------------------------------------
// Client (agent side)

/// Where one chunk lies in a passed pack.
#[derive(Clone, Copy, Debug)]
struct Located {
    slot: u32,
    offset: u64,
    stored: u32,
    codec: Codec,
    raw: u32,
}

/// An open pack channel (blocking socket; [`PackChannel::fetch`] runs it off the runtime).
pub struct PackChannel {
    sock: UnixStream,
    packs: Vec<Arc<std::fs::File>>,
    /// Descriptors received and not yet claimed by a `PACK_FDS` frame.
    pending: VecDeque<OwnedFd>,
    next: u32,
}

fn gone(e: impl std::fmt::Display) -> DataError {
    DataError::PeerGone(e.to_string())
}

impl PackChannel {
    /// Connects and greets (blocking).
    pub fn connect(path: &Path, token: Option<&Token>) -> Result<Self, DataError> {
        let err = |why: String| DataError::Connect {
            addr: format!("unix+fds://{}", path.display()),
            why,
        };
        let sock = UnixStream::connect(path).map_err(|e| err(e.to_string()))?;
        sock.set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| err(e.to_string()))?;
        let mut ch = PackChannel {
            sock,
            packs: Vec::new(),
            pending: VecDeque::new(),
            next: 1,
        };
        let mut hello = MAGIC.to_vec();
        if let Some(t) = token {
            hello.extend_from_slice(t.expose().as_bytes());
        }
        if !write_frame_blocking(&mut ch.sock, Kind::Hello, 0, &hello) {
            return Err(err("the server closed the connection".into()));
        }
        let f = ch.read_frame()?;
        match f.kind {
            Kind::HelloOk => Ok(ch),
            Kind::Error => Err(crate::client::refused(&f.body)),
            k => Err(DataError::Protocol(format!("expected HELLO_OK, got {k:?}"))),
        }
    }

    /// Fills `buf` from the socket, keeping any descriptors that arrive.
    fn recv_exact(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        let mut got = 0;
        while got < buf.len() {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_FRAME))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let r = rustix::net::recvmsg(
                &self.sock,
                &mut [IoSliceMut::new(&mut buf[got..])],
                &mut cmsg,
                RecvFlags::CMSG_CLOEXEC,
            )
            .map_err(|e| match e {
                rustix::io::Errno::AGAIN => FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {READ_TIMEOUT:?}"),
                )),
                e => FrameError::Io(e.into()),
            })?;
            for m in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = m {
                    self.pending.extend(fds);
                }
            }
            if r.flags.contains(ReturnFlags::CTRUNC) {
                return Err(FrameError::Malformed(
                    "descriptors were cut off (too many in one message)".into(),
                ));
            }
            if r.bytes == 0 {
                return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += r.bytes;
        }
        Ok(())
    }

    fn read_frame(&mut self) -> Result<Frame, DataError> {
        Ok(read_frame_with(frame::MAX_FRAME, |b| self.recv_exact(b))?)
    }

    /// Where `hashes` lie (blocking): receives the packs passed on the way.
    fn locate(&mut self, hashes: &[ChunkHash]) -> Result<Vec<Located>, DataError> {
        let req = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        let body: Vec<u8> = hashes.iter().flat_map(|h| *h.as_bytes()).collect();
        if !write_frame_blocking(&mut self.sock, Kind::Locate, req, &body) {
            return Err(gone("the pack channel closed"));
        }
        loop {
            let f = self.read_frame()?;
            if f.request != req && f.kind != Kind::Error {
                return Err(DataError::Protocol(format!(
                    "answer to request {} while waiting for {req}",
                    f.request
                )));
            }
            match f.kind {
                Kind::PackFds => {
                    let n = f
                        .body
                        .get(..4)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                        as usize;
                    if n == 0 || n > self.pending.len() {
                        return Err(DataError::Protocol(format!(
                            "PACK_FDS announces {n} descriptors, {} arrived",
                            self.pending.len()
                        )));
                    }
                    for fd in self.pending.drain(..n) {
                        self.packs.push(Arc::new(std::fs::File::from(fd)));
                    }
                }
                Kind::Located => return self.parse_located(&f.body, hashes.len()),
                Kind::Error => return Err(crate::client::refused(&f.body)),
                k => return Err(DataError::Protocol(format!("unexpected {k:?}"))),
            }
        }
    }

    fn parse_located(&self, body: &[u8], n: usize) -> Result<Vec<Located>, DataError> {
        if body.len() != n * ENTRY {
            return Err(DataError::Protocol(format!(
                "LOCATED of {} bytes for {n} chunks",
                body.len()
            )));
        }
        body.chunks_exact(ENTRY)
            .map(|e| {
                let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().expect("4"));
                let l = Located {
                    slot: u32_at(0),
                    offset: u64::from_le_bytes(e[4..12].try_into().expect("8 bytes")),
                    stored: u32_at(12),
                    codec: Codec::from_u8(e[16])
                        .ok_or_else(|| DataError::Protocol(format!("unknown codec {}", e[16])))?,
                    raw: u32_at(17),
                };
                if l.offset.checked_add(u64::from(l.stored)).is_none() {
                    return Err(DataError::Protocol(format!(
                        "chunk at offset {} of {} bytes lies past any file",
                        l.offset, l.stored
                    )));
                }
                if l.slot as usize >= self.packs.len() {
                    return Err(DataError::Protocol(format!(
                        "chunk in pack slot {} of {} passed",
                        l.slot,
                        self.packs.len()
                    )));
                }
                Ok(l)
            })
            .collect()
    }

    /// Reads the stored bytes of `locs` (chunks `base..` of the fetch), adjacent chunks of
    /// a pack in one read. A short read (a truncated pack) hands on what is there: the
    /// chunk then fails verification like any other damaged chunk.
    fn read(&self, base: usize, locs: &[Located]) -> Result<(Vec<Received>, u64), DataError> {
        let mut order: Vec<usize> = (0..locs.len()).collect();
        order.sort_by_key(|&i| (locs[i].slot, locs[i].offset));
        let mut out: Vec<Option<Received>> = (0..locs.len()).map(|_| None).collect();
        let mut bytes = 0u64;
        let mut i = 0;
        while i < order.len() {
            let first = locs[order[i]];
            let mut end = first.offset + u64::from(first.stored);
            let mut j = i + 1;
            while let Some(&k) = order.get(j) {
                let l = locs[k];
                let l_end = l.offset + u64::from(l.stored);
                if l.slot != first.slot || l.offset > end || l_end - first.offset > MAX_RUN {
                    break;
                }
                end = end.max(l_end);
                j += 1;
            }
            let run = read_at(&self.packs[first.slot as usize], first.offset, end)?;
            bytes += run.len() as u64;
            for &k in &order[i..j] {
                let l = locs[k];
                let from = ((l.offset - first.offset) as usize).min(run.len());
                let to = (from + l.stored as usize).min(run.len());
                out[k] = Some(Received {
                    index: base + k,
                    codec: l.codec,
                    stored: run.slice(from..to),
                });
            }
            i = j;
        }
        Ok((
            out.into_iter()
                .map(|r| r.expect("every chunk was read"))
                .collect(),
            bytes,
        ))
    }

    /// Fetches `refs` like [`crate::Connection::fetch`]: batches of located, read (unverified)
    /// chunks go to `sink` in order; `pacer` bounds the rate.
    pub async fn fetch(
        mut self,
        refs: &[ChunkRef],
        pacer: Option<&Pacer>,
        sink: &mpsc::Sender<Vec<Received>>,
    ) -> (Self, Result<FetchStats, DataError>) {
        let mut stats = FetchStats::default();
        let mut start = 0;
        while start < refs.len() {
            let mut end = start;
            let mut acc = 0u64;
            while end < refs.len() && acc < REQUEST_BYTES && end - start < MAX_HASHES {
                acc += u64::from(refs[end].length);
                end += 1;
            }
            if let Some(p) = pacer {
                let stored: u64 = refs[start..end]
                    .iter()
                    .map(|r| u64::from(r.stored_length))
                    .sum();
                p.take(stored).await;
            }
            let hashes: Vec<ChunkHash> = refs[start..end].iter().map(|r| r.hash).collect();
            let want: Vec<u32> = refs[start..end].iter().map(|r| r.length).collect();
            let job = tokio::task::spawn_blocking(move || {
                let got = self.locate(&hashes).and_then(|locs| {
                    if let Some((l, w)) = locs.iter().zip(&want).find(|(l, w)| l.raw != **w) {
                        return Err(DataError::Protocol(format!(
                            "chunk announced with {} bytes, the manifest says {w}",
                            l.raw
                        )));
                    }
                    self.read(start, &locs)
                });
                (self, got)
            });
            let (ch, got) = match job.await {
                Ok(r) => r,
                Err(e) => panic!("pack channel task failed: {e}"),
            };
            self = ch;
            let (batch, bytes) = match got {
                Ok(v) => v,
                Err(e) => return (self, Err(e)),
            };
            stats.wire_bytes += bytes + (9 + 21 * batch.len()) as u64;
            stats.chunks += batch.len() as u64;
            if sink.send(batch).await.is_err() {
                return (self, Err(gone("the receiver stopped")));
            }
            start = end;
        }
        (self, Ok(stats))
    }
}

/// Reads `from..to` of `file` into a fresh buffer (no zeroing pass); shorter at end of file.
fn read_at(file: &std::fs::File, from: u64, to: u64) -> Result<Bytes, DataError> {
    let len = (to - from) as usize;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let at = from + buf.len() as u64;
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at);
        match n {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(DataError::Protocol(format!("reading a passed pack: {e}")));
            }
        }
    }
    buf.truncate(len);
    Ok(Bytes::from(buf))
}
