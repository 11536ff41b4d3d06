//! The data plane's frames, read by both sides.
//!
//! First byte: what the rest is. The second byte is the largest read the stream hands out
//! at once (0: everything), so partial reads are exercised.
//! - 0: a raw stream for the two frame readers (`read_frame`, `FrameReader`);
//! - 1, 2: a client's byte stream to the real server (`DataServer::handle` over an
//!   in-memory stream, a store holding the fixture state), without (1) and with (2) a token;
//! - 3: a server's byte stream to the real client (`Connection::connect`, `manifest`, then
//!   `fetch` of the fixture state's chunks) over a Unix socket.
//!
//! Properties:
//! - the readers agree frame by frame and on how the stream ended; the frames read
//!   re-encode to exactly the bytes they came from; error bodies re-encode to themselves;
//! - the server answers a hello exactly as its token rule says, then every request it read,
//!   in order, with one `MANIFEST_OK` (a manifest that decodes, of the state asked for), one
//!   `ERROR`, or one `CHUNK` per hash asked for, in order, each verifying, then `DONE`; a
//!   malformed frame gets one `ERROR` and the end of the connection; its output is whole
//!   frames only;
//! - the client's fetch succeeds only with every chunk asked for, once each, in order, and
//!   whatever it hands on that verifies is the state's true chunk.

#![no_main]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prewarm_core::ChunkHash;
use prewarm_fuzz::{MemFixture, Script, TOKEN, check_delivery, chunk_bytes, read_frames, resource};
use prewarm_metrics::Registry;
use prewarm_store::{Codec, Manifest, verify_stored};
use prewarm_transfer::frame::{
    self, Code, FrameError, FrameReader, Kind, MAGIC, MAX_HELLO, read_frame, read_frame_limited,
};
use prewarm_transfer::{Connection, DataAddr, DataServer, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fx {
    rt: tokio::runtime::Runtime,
    mem: MemFixture,
    open: Arc<DataServer>,
    guarded: Arc<DataServer>,
    chunks: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
    listener: tokio::net::UnixListener,
    addr: DataAddr,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        prewarm_fuzz::ignore_sigpipe();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mem = MemFixture::new(&rt);
        let server = |token: Option<Token>| {
            Arc::new(DataServer::new(
                mem.store.clone(),
                token,
                "fuzz".into(),
                &Registry::default(),
            ))
        };
        let open = server(None);
        let guarded = server(Some(Token::new(TOKEN).expect("valid token")));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.sock");
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(&path).expect("bind")
        };
        let chunks = chunk_bytes(&mem.manifest);
        Fx {
            rt,
            mem,
            open,
            guarded,
            chunks,
            _dir: dir,
            listener,
            addr: DataAddr::Unix(path),
        }
    })
}

fn end_class(e: &FrameError) -> u8 {
    match e {
        FrameError::Io(_) => 0,
        FrameError::Closed => 1,
        FrameError::Oversize(_) => 2,
        FrameError::Malformed(_) => 3,
    }
}

/// Both readers over `data`; their frames and ends must agree.
fn readers(data: &[u8], step: u8) {
    let f = fx();
    f.rt.block_on(async {
        let mut s = Script::new(data, step);
        let mut a = Vec::new();
        let end_a = loop {
            match read_frame(&mut s).await {
                Ok(fr) => a.push(fr),
                Err(e) => break e,
            }
        };
        let mut r = FrameReader::new(Script::new(data, step));
        let mut b = Vec::new();
        let end_b = loop {
            match r.next().await {
                Ok(fr) => b.push(fr),
                Err(e) => break e,
            }
        };
        assert_eq!(a.len(), b.len(), "both readers read as many frames");
        let mut re = Vec::new();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.kind, x.request, &x.body), (y.kind, y.request, &y.body));
            re.extend_from_slice(&frame::header(x.kind, x.request, x.body.len()));
            re.extend_from_slice(&x.body);
            if x.kind == Kind::Error {
                let (code, msg) = frame::parse_error(&x.body);
                if let Some((c, m)) = x.body.split_first()
                    && matches!(c, 1..=6)
                    && std::str::from_utf8(m).is_ok()
                {
                    assert_eq!(frame::error_body(code, &msg), &x.body[..]);
                }
            }
        }
        assert_eq!(end_class(&end_a), end_class(&end_b), "{end_a} vs {end_b}");
        assert_eq!(
            &re[..],
            &data[..re.len()],
            "frames re-encode to their bytes"
        );
        let _ = frame::parse_error(data);
    });
}

/// The requests the server reads after an accepted hello, as it reads them, and whether
/// the stream ended with a malformed or oversize frame.
fn requests(after_hello: &[u8]) -> (Vec<frame::Frame>, bool) {
    fx().rt.block_on(async {
        let mut s = after_hello;
        let mut v = Vec::new();
        loop {
            match read_frame(&mut s).await {
                Ok(f) => v.push(f),
                Err(FrameError::Closed) => return (v, false),
                // Cut mid-frame, oversize, malformed: answered with one ERROR, then closed.
                Err(_) => return (v, true),
            }
        }
    })
}

fn server(data: &[u8], step: u8, guarded: bool) {
    let f = fx();
    let srv = if guarded { &f.guarded } else { &f.open };
    let script = Script::new(data, step);
    let out = script.out.clone();
    f.rt.block_on(srv.clone().handle(prewarm_transfer::runs::Plain(script), "fuzz"));
    let out = out.lock().expect("not poisoned").clone();
    let (frames, end) = read_frames(&f.rt, &out);
    assert!(end.is_none(), "the server wrote a partial frame: {end:?}");
    // The hello, judged as the server must judge it.
    let (hello, rest) = f.rt.block_on(async {
        let mut s = data;
        let h = read_frame_limited(&mut s, MAX_HELLO).await;
        (h, s)
    });
    let accept = hello.as_ref().is_ok_and(|h| {
        h.kind == Kind::Hello
            && h.body.starts_with(MAGIC)
            && (!guarded || &h.body[MAGIC.len()..] == TOKEN.as_bytes())
    });
    let first = frames.first().expect("the server answers every hello");
    if !accept {
        assert_eq!(first.kind, Kind::Error, "a bad hello is refused");
        assert_eq!(frame::parse_error(&first.body).0, Code::Unauthorized);
        assert_eq!(frames.len(), 1, "and nothing else is sent");
        return;
    }
    assert_eq!(first.kind, Kind::HelloOk, "a good hello is accepted");
    let (reqs, malformed) = requests(rest);
    let mut answers = frames[1..].iter();
    for req in &reqs {
        let a = answers
            .next()
            .unwrap_or_else(|| panic!("request {} unanswered", req.request));
        assert_eq!(a.request, req.request, "answers come in request order");
        match (req.kind, a.kind) {
            (_, Kind::Error) => {}
            (Kind::Manifest, Kind::ManifestOk) => {
                let m = Manifest::decode(&a.body).expect("the server's manifest decodes");
                assert_eq!(m, f.mem.manifest, "the state asked for");
            }
            (Kind::Chunks | Kind::ChunkRuns, Kind::Chunk | Kind::Done) => {
                assert_eq!(req.body.len() % 32, 0);
                let mut a = a;
                for want in req.body.chunks_exact(32) {
                    assert_eq!(a.kind, Kind::Chunk, "one chunk per hash");
                    assert_eq!(a.request, req.request);
                    let b = &a.body;
                    assert_eq!(&b[..32], want, "the chunk asked for");
                    let codec = Codec::from_u8(b[32]).expect("a known codec");
                    let raw = u32::from_le_bytes(b[33..37].try_into().expect("4 bytes"));
                    let hash = ChunkHash::from_slice(want).expect("32 bytes");
                    verify_stored(hash, codec, raw, Bytes::copy_from_slice(&b[37..]))
                        .expect("the server's chunks verify");
                    a = answers.next().expect("DONE follows the chunks");
                }
                assert_eq!(a.kind, Kind::Done, "then DONE");
                assert_eq!(a.request, req.request);
            }
            (k, got) => panic!("{k:?} answered with {got:?}"),
        }
    }
    if malformed {
        let a = answers.next().expect("a malformed frame is answered");
        assert_eq!((a.kind, a.request), (Kind::Error, 0));
    }
    assert!(answers.next().is_none(), "nothing more is sent");
}

fn client(data: &[u8]) {
    let f = fx();
    let refs = f.mem.manifest.chunks.clone();
    f.rt.block_on(async {
        let serve = async {
            let (mut s, _) = f.listener.accept().await.expect("accept");
            let _ = s.write_all(data).await;
            let _ = s.shutdown().await;
            let mut sink = vec![0u8; 64 << 10];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let talk = async {
            let Ok(mut c) = Connection::connect(&f.addr, None).await else {
                return;
            };
            if let Ok(m) = c.manifest(&resource(), None).await {
                assert_eq!(m.state.resource, resource(), "the state asked for");
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let got = c.fetch(&refs, None, &tx).await;
            drop(tx);
            drop(c);
            let mut batches = Vec::new();
            while let Some(batch) = rx.recv().await {
                batches.push(batch);
            }
            check_delivery(&refs, &f.chunks, batches, got.ok().map(|s| s.chunks));
        };
        tokio::join!(serve, talk);
    });
}

fuzz_target!(|data: &[u8]| {
    let [mode, step, rest @ ..] = data else {
        return;
    };
    match mode % 4 {
        0 => readers(rest, *step),
        1 => server(rest, *step, false),
        2 => server(rest, *step, true),
        _ => client(rest),
    }
});
