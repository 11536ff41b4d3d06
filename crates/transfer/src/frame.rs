//! The data-plane wire format. Every frame, both ways:
//!
//! ```text
//! len: u32 LE (bytes after this field) | kind: u8 | request: u32 LE | body (len - 5 bytes)
//! ```
//!
//! Client → server: `HELLO` (body: magic `PWD1` + the shared token, possibly empty) first,
//! then any number of `MANIFEST` (body: version u64 LE, 0 = latest | resource id) and
//! `CHUNKS` (body: up to [`MAX_HASHES`] 32-byte BLAKE3 hashes) requests, without waiting for
//! answers (pipelining). Server → client: `HELLO_OK` (body: the server's instance id), then
//! per request, in request order, either `MANIFEST_OK` (an encoded, checksummed manifest) or
//! one `CHUNK` per hash (hash | codec u8 | raw length u32 LE | stored bytes) and `DONE`, or
//! `ERROR` (code u8 | UTF-8 message). `CHUNK_RUNS` and `RUN`: see [`crate::runs`]. A frame over [`MAX_FRAME`] is refused before its body
//! is read: the peer is misbehaving and the connection is closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Magic at the start of `HELLO`.
pub const MAGIC: &[u8; 4] = b"PWD1";
/// Largest frame accepted (a 16 MiB chunk, or a manifest of ~1M chunks).
pub const MAX_FRAME: u32 = 64 << 20;
/// Largest `HELLO` accepted (the magic and a token).
pub const MAX_HELLO: u32 = 4096;
/// Most hashes in one `CHUNKS` request.
pub const MAX_HASHES: usize = 8192;
/// Bytes of `kind` + `request`.
pub const HEADER: usize = 5;

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client greeting with the token.
    Hello = 1,
    /// Client asks for a manifest.
    Manifest = 2,
    /// Client asks for chunks.
    Chunks = 3,
    /// Client asks where chunks are (same-host pack channel, see [`crate::fds`]).
    Locate = 4,
    /// Client asks for chunks and accepts `RUN` answers (see [`crate::runs`]).
    ChunkRuns = 5,
    /// Server accepts the greeting.
    HelloOk = 0x81,
    /// Server sends a manifest.
    ManifestOk = 0x82,
    /// Server sends one chunk.
    Chunk = 0x83,
    /// Server finished a `CHUNKS` request.
    Done = 0x84,
    /// Server passes pack file descriptors (same-host pack channel).
    PackFds = 0x85,
    /// Server says where chunks are (same-host pack channel).
    Located = 0x86,
    /// Server sends chunks that lie back to back in a pack (see [`crate::runs`]).
    Run = 0x87,
    /// Server refuses a request (or the connection).
    Error = 0x8f,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Manifest,
            3 => Kind::Chunks,
            4 => Kind::Locate,
            5 => Kind::ChunkRuns,
            0x81 => Kind::HelloOk,
            0x82 => Kind::ManifestOk,
            0x83 => Kind::Chunk,
            0x84 => Kind::Done,
            0x85 => Kind::PackFds,
            0x86 => Kind::Located,
            0x87 => Kind::Run,
            0x8f => Kind::Error,
            _ => return None,
        })
    }
}

/// Error codes in `ERROR` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Missing or wrong token.
    Unauthorized = 1,
    /// The request is malformed.
    BadRequest = 2,
    /// No such resource or version.
    UnknownState = 3,
    /// A chunk is not in the store.
    UnknownChunk = 4,
    /// The store failed.
    Store = 5,
    /// A frame was too large.
    Oversize = 6,
}

impl Code {
    /// Decodes a code byte (unknown codes read as `Store`).
    pub fn from_u8(b: u8) -> Self {
        match b {
            1 => Code::Unauthorized,
            2 => Code::BadRequest,
            3 => Code::UnknownState,
            4 => Code::UnknownChunk,
            6 => Code::Oversize,
            _ => Code::Store,
        }
    }
}

/// One frame.
#[derive(Debug)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// The request it belongs to.
    pub request: u32,
    /// The body.
    pub body: Bytes,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed mid-frame.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between frames.
    #[error("the peer closed the connection")]
    Closed,
    /// A frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    Oversize(u32),
    /// A frame too short for its header, or of an unknown kind.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Reads one frame.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    read_frame_limited(r, MAX_FRAME).await
}

/// Reads one frame of at most `max` bytes: a longer one is refused from its length field,
/// before anything is allocated for it (a `HELLO` is read this way: nothing large is
/// buffered for a client that has not shown its token).
pub async fn read_frame_limited<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]).await? {
            // Only an end between frames is a close; inside the length prefix it is a break.
            0 if got == 0 => return Err(FrameError::Closed),
            0 => return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            n => got += n,
        }
    }
    let len = check_len(u32::from_le_bytes(len))?;
    if len > max {
        return Err(FrameError::Oversize(len));
    }
    // Read straight into uninitialised capacity: no zeroing pass over every chunk.
    let mut buf = BytesMut::with_capacity(len as usize);
    while buf.len() < len as usize {
        let want = len as u64 - buf.len() as u64;
        if (&mut *r).take(want).read_buf(&mut buf).await? == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    split(buf)
}

/// Checks a frame's length field: within [`MAX_FRAME`] and long enough for the header.
pub(crate) fn check_len(len: u32) -> Result<u32, FrameError> {
    if len > MAX_FRAME {
        return Err(FrameError::Oversize(len));
    }
    if (len as usize) < HEADER {
        return Err(FrameError::Malformed(format!("length {len} < header")));
    }
    Ok(len)
}

/// A frame from its bytes after the length field (kind, request, body).
pub(crate) fn split(mut buf: BytesMut) -> Result<Frame, FrameError> {
    let kind = Kind::from_u8(buf[0])
        .ok_or_else(|| FrameError::Malformed(format!("unknown kind {:#x}", buf[0])))?;
    let request = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    buf.advance(HEADER);
    Ok(Frame {
        kind,
        request,
        body: buf.freeze(),
    })
}

/// Reads frames out of one receive buffer: the socket is read in large pieces and each frame's
/// body is a zero-copy slice of it (no copy per frame, no zeroing).
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

/// Bytes asked of the socket per read.
const READ_AHEAD: usize = 2 << 20;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::new(),
        }
    }

    async fn fill(&mut self, need: usize) -> Result<(), FrameError> {
        while self.buf.len() < need {
            if self.buf.capacity() - self.buf.len() < need - self.buf.len() {
                self.buf.reserve(READ_AHEAD.max(need));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    FrameError::Closed
                } else {
                    FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())
                });
            }
        }
        Ok(())
    }

    /// The next frame.
    pub async fn next(&mut self) -> Result<Frame, FrameError> {
        self.fill(4).await?;
        let len = check_len(u32::from_le_bytes([
            self.buf[0],
            self.buf[1],
            self.buf[2],
            self.buf[3],
        ]))?;
        self.fill(4 + len as usize).await?;
        self.buf.advance(4);
        split(self.buf.split_to(len as usize))
    }
}

/// The 9-byte prefix of a frame whose body is `body_len` bytes.
pub fn header(kind: Kind, request: u32, body_len: usize) -> [u8; 9] {
    let mut h = [0u8; 9];
    let len = u32::try_from(body_len + HEADER).unwrap_or(u32::MAX);
    h[..4].copy_from_slice(&len.to_le_bytes());
    h[4] = kind as u8;
    h[5..].copy_from_slice(&request.to_le_bytes());
    h
}

/// Writes one frame (not flushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    request: u32,
    body: &[u8],
) -> std::io::Result<()> {
    w.write_all(&header(kind, request, body.len())).await?;
    w.write_all(body).await
}

/// Body of an `ERROR` frame.
pub fn error_body(code: Code, msg: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + msg.len());
    b.put_u8(code as u8);
    b.extend_from_slice(msg.as_bytes());
    b
}

/// Splits an `ERROR` body.
pub fn parse_error(body: &[u8]) -> (Code, String) {
    match body.split_first() {
        Some((c, m)) => (Code::from_u8(*c), String::from_utf8_lossy(m).into_owned()),
        None => (Code::Store, "empty error".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_oversize_and_truncation() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Chunks, 7, b"abc")
            .await
            .unwrap();
        let f = read_frame(&mut buf.as_slice()).await.unwrap();
        assert_eq!(
            (f.kind, f.request, &f.body[..]),
            (Kind::Chunks, 7, &b"abc"[..])
        );

        let mut big = (MAX_FRAME + 1).to_le_bytes().to_vec();
        big.extend_from_slice(&[1, 0, 0, 0, 0]);
        assert!(matches!(
            read_frame(&mut big.as_slice()).await,
            Err(FrameError::Oversize(_))
        ));
        let cut = &buf[..buf.len() - 1];
        assert!(matches!(
            read_frame(&mut &cut[..]).await,
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut &[][..]).await,
            Err(FrameError::Closed)
        ));
        let bad = [5u8, 0, 0, 0, 0x55, 0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut &bad[..]).await,
            Err(FrameError::Malformed(_))
        ));

        // The buffered reader agrees, frame by frame, and on every error.
        let mut two = buf.clone();
        write_frame(&mut two, Kind::Done, 8, b"").await.unwrap();
        let mut r = FrameReader::new(two.as_slice());
        let f = r.next().await.unwrap();
        assert_eq!(
            (f.kind, f.request, &f.body[..]),
            (Kind::Chunks, 7, &b"abc"[..])
        );
        let f = r.next().await.unwrap();
        assert_eq!((f.kind, f.request, f.body.len()), (Kind::Done, 8, 0));
        assert!(matches!(r.next().await, Err(FrameError::Closed)));
        assert!(matches!(
            FrameReader::new(big.as_slice()).next().await,
            Err(FrameError::Oversize(_))
        ));
        assert!(matches!(
            FrameReader::new(cut).next().await,
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            FrameReader::new(&bad[..]).next().await,
            Err(FrameError::Malformed(_))
        ));
    }

    /// Found by the `data_plane` fuzz target: a stream ending inside a length prefix (1 to 3
    /// bytes of it) read as a clean close through `read_frame`, as a broken one through
    /// `FrameReader`; the server took such a client for one that had finished. Both readers
    /// now call it a broken connection; only an end between frames is a close.
    #[tokio::test]
    async fn a_stream_cut_inside_a_length_prefix_is_not_a_clean_close() {
        for cut in 1..4 {
            let data = vec![9u8; cut];
            assert!(
                matches!(
                    read_frame(&mut data.as_slice()).await,
                    Err(FrameError::Io(_))
                ),
                "read_frame, {cut} bytes"
            );
            assert!(
                matches!(
                    FrameReader::new(data.as_slice()).next().await,
                    Err(FrameError::Io(_))
                ),
                "FrameReader, {cut} bytes"
            );
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A frame as (kind, request, body).
    type Plain = (u8, u32, Vec<u8>);

    /// Every frame a stream holds, through both readers, until the first error.
    fn frames(data: &[u8]) -> (Vec<Plain>, Vec<Plain>) {
        block_on(async {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut s = data;
            while let Ok(f) = read_frame(&mut s).await {
                a.push((f.kind as u8, f.request, f.body.to_vec()));
            }
            let mut r = FrameReader::new(data);
            while let Ok(f) = r.next().await {
                b.push((f.kind as u8, f.request, f.body.to_vec()));
            }
            (a, b)
        })
    }

    const KINDS: [Kind; 5] = [
        Kind::Hello,
        Kind::Chunks,
        Kind::Chunk,
        Kind::Done,
        Kind::Error,
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random bytes: both readers agree and neither panics; error bodies of any bytes
        /// parse to some code and message.
        #[test]
        fn random_streams_read_alike_and_never_panic(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let (a, b) = frames(&data);
            proptest::prop_assert_eq!(a, b);
            let _ = parse_error(&data);
        }

        /// Written frames read back exactly; a stream cut anywhere yields the whole frames
        /// before the cut and nothing made up.
        #[test]
        fn written_frames_read_back_and_a_cut_loses_only_the_tail(
            sent in proptest::collection::vec(
                (0usize..5, proptest::prelude::any::<u32>(),
                 proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                0..8,
            ),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let mut buf = Vec::new();
            let mut ends = Vec::new();
            block_on(async {
                for (k, req, body) in &sent {
                    write_frame(&mut buf, KINDS[*k], *req, body).await.unwrap();
                    ends.push(buf.len());
                }
            });
            let want: Vec<Plain> =
                sent.iter().map(|(k, r, b)| (KINDS[*k] as u8, *r, b.clone())).collect();
            proptest::prop_assert_eq!(&frames(&buf).0, &want);
            let at = if buf.is_empty() { 0 } else { cut % buf.len() };
            let whole = ends.iter().filter(|e| **e <= at).count();
            let (a, b) = frames(&buf[..at]);
            proptest::prop_assert_eq!(&a, &want[..whole].to_vec());
            proptest::prop_assert_eq!(a, b);
        }
    }
}
