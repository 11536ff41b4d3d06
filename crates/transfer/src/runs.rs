//! Runs: chunks that lie back to back in one pack file, sent as one `RUN` frame whose stored
//! bytes go from the pack file to the socket with `sendfile(2)` — no read into the server's
//! memory, no copy through user space, one system call per run instead of two per chunk.
//!
//! ```text
//! client → CHUNK_RUNS (same body as CHUNKS)   only to a server whose HELLO_OK offers "runs"
//! server → RUN* and CHUNK* in request order, then DONE (or ERROR)
//! RUN body: count u32 LE | count × (codec u8 | raw length u32 LE | stored length u32 LE)
//!           | the stored bytes of those chunks, back to back
//! ```
//! A `RUN` names no hashes: the chunks are the next `count` of the request, in order, and the
//! receiver verifies each against the hash it asked for, exactly as it verifies a `CHUNK`. A
//! server falls back to `CHUNK` frames (read through the store) for a request whose packs are
//! not local files, are shorter than the index says (the read then reports the damage), or
//! while faults are injected. Older servers do not offer "runs" and older clients never ask.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use prewarm_store::{BlobLoc, ChunkRef, Codec, PackId, Store};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::client::{DataError, Received};

/// What a server appends to its instance id in `HELLO_OK` when it answers `CHUNK_RUNS`.
pub const FEATURE: &str = "\0runs";
/// Longest run, stored bytes.
const MAX_RUN: u64 = 8 << 20;
/// Bytes per chunk in a `RUN` table.
const ENTRY: usize = 9;

/// Chunks back to back in one pack, sent as one frame.
pub(crate) struct Run {
    pub(crate) file: Arc<File>,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    /// Codec, raw length and stored length of each chunk, in order.
    pub(crate) entries: Vec<(Codec, u32, u32)>,
}

impl Run {
    /// The frame body before the stored bytes.
    pub(crate) fn table(&self) -> Vec<u8> {
        let mut t = Vec::with_capacity(4 + ENTRY * self.entries.len());
        t.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (codec, raw, stored) in &self.entries {
            t.push(codec.to_u8());
            t.extend_from_slice(&raw.to_le_bytes());
            t.extend_from_slice(&stored.to_le_bytes());
        }
        t
    }
}

/// Groups `locs` (a request's chunks, in order) into runs read straight from the local pack
/// files; `None` when a pack is not a local file or is shorter than the index says (the
/// caller then reads through the store, which reports the damage). Blocking: opens the packs
/// and asks the kernel to read the runs ahead, so sending them does not wait for the disk.
pub(crate) fn plan(store: &Store, locs: &[BlobLoc]) -> Option<Vec<Run>> {
    let mut files: HashMap<PackId, (Arc<File>, u64)> = HashMap::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut last: Option<PackId> = None;
    for l in locs {
        let (file, size) = match files.entry(l.pack) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let f = File::open(store.pack_file(&l.pack)?).ok()?;
                let size = f.metadata().ok()?.len();
                e.insert((Arc::new(f), size))
            }
        };
        let stored = u64::from(l.stored_length);
        if l.offset + stored > *size {
            return None;
        }
        let entry = (l.codec, l.raw_length, l.stored_length);
        match runs.last_mut() {
            Some(r)
                if last == Some(l.pack)
                    && r.offset + r.len == l.offset
                    && r.len + stored <= MAX_RUN =>
            {
                r.len += stored;
                r.entries.push(entry);
            }
            _ => runs.push(Run {
                file: file.clone(),
                offset: l.offset,
                len: stored,
                entries: vec![entry],
            }),
        }
        last = Some(l.pack);
    }
    for r in &runs {
        if let Some(len) = NonZeroU64::new(r.len) {
            let _ =
                rustix::fs::fadvise(&*r.file, r.offset, Some(len), rustix::fs::Advice::WillNeed);
        }
    }
    Some(runs)
}

/// The chunks of one `RUN` frame: the next entries of `want` (indexes into `refs`), checked
/// against the manifest's lengths and sliced out of the body without a copy.
pub(crate) fn parse(
    body: Bytes,
    want: &mut Range<usize>,
    refs: &[ChunkRef],
) -> Result<Vec<Received>, DataError> {
    let bad = |why: String| DataError::Protocol(format!("RUN frame: {why}"));
    if body.len() < 4 {
        return Err(bad("shorter than its count".into()));
    }
    let n = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
    if n == 0 || n > want.len() {
        return Err(bad(format!("{n} chunks where {} are due", want.len())));
    }
    let table_end = 4 + n * ENTRY;
    if body.len() < table_end {
        return Err(bad("shorter than its table".into()));
    }
    let mut at = table_end;
    let mut out = Vec::with_capacity(n);
    for e in body[4..table_end].chunks_exact(ENTRY) {
        let i = want.next().expect("n <= want.len()");
        let codec = Codec::from_u8(e[0]).ok_or_else(|| bad(format!("unknown codec {}", e[0])))?;
        let raw = u32::from_le_bytes(e[1..5].try_into().expect("4 bytes"));
        let stored = u32::from_le_bytes(e[5..9].try_into().expect("4 bytes")) as usize;
        if raw != refs[i].length {
            return Err(bad(format!(
                "chunk {}: {raw} bytes announced, the manifest says {}",
                refs[i].hash, refs[i].length
            )));
        }
        if body.len() - at < stored {
            return Err(bad("shorter than its chunks".into()));
        }
        out.push(Received {
            index: i,
            codec,
            stored: body.slice(at..at + stored),
        });
        at += stored;
    }
    if at != body.len() {
        return Err(bad(format!("{} bytes after its chunks", body.len() - at)));
    }
    Ok(out)
}

/// The write side of a data-plane connection: sends a file range, without copying it
/// through this process where the stream allows (`sendfile(2)` on TCP and Unix sockets).
pub trait SendFile: AsyncWrite + Unpin + Send {
    /// Writes `len` bytes of `file` at `offset`; true when they went without a copy through
    /// this process. The default reads them and writes them.
    fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = std::io::Result<bool>> + Send {
        async move {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset)?;
            self.write_all(&buf).await?;
            Ok(false)
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Send> SendFile for tokio::io::WriteHalf<T> {}

/// `sendfile(2)` from `file` into the non-blocking socket `sock`, waiting for room.
macro_rules! send_file_to_socket {
    ($sock:expr, $file:expr, $offset:expr, $len:expr) => {{
        let (sock, file) = ($sock, $file);
        let mut offset = $offset;
        let end = offset + $len;
        while offset < end {
            sock.writable().await?;
            let sent = sock.try_io(tokio::io::Interest::WRITABLE, || {
                let n = (end - offset).min(1 << 30) as usize;
                rustix::fs::sendfile(sock, file, Some(&mut offset), n).map_err(std::io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the pack file ended inside a run",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }};
}

impl SendFile for tokio::net::tcp::OwnedWriteHalf {
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
        let sock: &tokio::net::TcpStream = self.as_ref();
        send_file_to_socket!(sock, file, offset, len)
    }
}

impl SendFile for tokio::net::unix::OwnedWriteHalf {
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
        let sock: &tokio::net::UnixStream = self.as_ref();
        send_file_to_socket!(sock, file, offset, len)
    }
}

/// A stream the data-plane server serves: how it splits into a read and a write side.
pub trait Wire: Send + 'static {
    /// The read side.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// The write side.
    type Write: SendFile + 'static;
    /// Splits the stream.
    fn halves(self) -> (Self::Read, Self::Write);
}

impl Wire for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Wire for tokio::net::UnixStream {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = tokio::net::unix::OwnedWriteHalf;
    fn halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Wire for tokio::io::DuplexStream {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// Any other stream (in-memory ones in tests and fuzzing): runs are read and written
/// through memory.
pub struct Plain<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Send + 'static> Wire for Plain<T> {
    type Read = tokio::io::ReadHalf<T>;
    type Write = tokio::io::WriteHalf<T>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self.0)
    }
}
