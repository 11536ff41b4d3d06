//! The same-host pack channel's messages (`prewarm_transfer::fds`), read by both sides over
//! real Unix sockets, descriptors included.
//!
//! First byte: what the rest is.
//! - 0: a server's script to the real client (`PackChannel::connect`, then `fetch` of the
//!   fixture state's chunks): segments of `[descriptors to attach (low 2 bits; the fixture's
//!   pack file)] [length u16 LE] [bytes]`, one `sendmsg` each;
//! - 1: a client's byte stream to the real server (`DataServer::serve_fds` over a
//!   local-directory store holding the fixture state).
//!
//! Properties:
//! - the client's fetch succeeds only with every chunk asked for, once each, in order, and
//!   whatever it hands on that verifies is the state's true chunk;
//! - the server answers a hello as its rule says, then every request it read, in order,
//!   with `PACK_FDS`* and a `LOCATED` naming, for each hash asked for, exactly where the
//!   store holds it, in a pack slot already passed; or with one `ERROR`; a malformed or
//!   oversize frame gets one `ERROR` and the end of the connection; output is whole frames.

#![no_main]

use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prewarm_core::ChunkHash;
use prewarm_fuzz::{DirFixture, check_delivery, chunk_bytes, read_frames, segments};
use prewarm_metrics::Registry;
use prewarm_transfer::frame::{self, Code, FrameError, Kind, MAGIC, MAX_HELLO};
use prewarm_transfer::{DataServer, PackChannel};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

struct Fx {
    rt: tokio::runtime::Runtime,
    dir: DirFixture,
    chunks: Vec<Vec<u8>>,
    /// Where the fake server listens (client side).
    fake: PathBuf,
    scripts: Mutex<mpsc::Sender<Vec<u8>>>,
    done: Mutex<mpsc::Receiver<()>>,
    /// Where the real server listens (server side).
    real: PathBuf,
    pack_len: u64,
}

/// Sends all of `bytes` without `SIGPIPE`; false when the peer is gone.
fn send_all(s: &UnixStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match rustix::net::send(s, bytes, SendFlags::NOSIGNAL) {
            Ok(0) | Err(_) => return false,
            Ok(n) => bytes = &bytes[n..],
        }
    }
    true
}

/// The fake server: one connection per script.
fn fake_server(
    l: UnixListener,
    pack: std::fs::File,
    rx: mpsc::Receiver<Vec<u8>>,
    done: mpsc::Sender<()>,
) {
    for script in rx {
        let Ok((mut s, _)) = l.accept() else {
            let _ = done.send(());
            continue;
        };
        let mut passed = 0;
        for (n, bytes) in segments(&script) {
            let n = n.min(64 - passed);
            if n == 0 || bytes.is_empty() {
                if !send_all(&s, bytes) {
                    break;
                }
                continue;
            }
            let fds = vec![pack.as_fd(); n];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut cmsg = SendAncillaryBuffer::new(&mut space);
            assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
            match rustix::net::sendmsg(&s, &[IoSlice::new(bytes)], &mut cmsg, SendFlags::NOSIGNAL) {
                Ok(sent) => {
                    passed += n;
                    if !send_all(&s, &bytes[sent..]) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = vec![0u8; 64 << 10];
        while let Ok(n) = s.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
        let _ = done.send(());
    }
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        prewarm_fuzz::ignore_sigpipe();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = DirFixture::new(&rt);
        let fake = dir.dir.path().join("fake.sock");
        let real = dir.dir.path().join("real.sock");
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let l = UnixListener::bind(&fake).expect("bind");
        let pack = std::fs::File::open(&dir.pack_path).expect("pack file");
        let pack_len = pack.metadata().expect("metadata").len();
        std::thread::spawn(move || fake_server(l, pack, rx, done_tx));
        let srv = Arc::new(DataServer::new(
            dir.store.clone(),
            None,
            "fuzz".into(),
            &Registry::default(),
        ));
        {
            let _g = rt.enter();
            let l = tokio::net::UnixListener::bind(&real).expect("bind");
            rt.spawn(srv.serve_fds(l));
        }
        let chunks = chunk_bytes(&dir.manifest);
        Fx {
            rt,
            dir,
            chunks,
            fake,
            scripts: Mutex::new(tx),
            done: Mutex::new(done_rx),
            real,
            pack_len,
        }
    })
}

fn client(script: &[u8]) {
    let f = fx();
    f.scripts
        .lock()
        .expect("not poisoned")
        .send(script.to_vec())
        .expect("fake server alive");
    let refs = f.dir.manifest.chunks.clone();
    if let Ok(ch) = PackChannel::connect(&f.fake, None) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let (ch, got) = f.rt.block_on(ch.fetch(&refs, None, &tx));
        drop(ch);
        drop(tx);
        let mut batches = Vec::new();
        while let Some(batch) = rx.blocking_recv() {
            batches.push(batch);
        }
        check_delivery(&refs, &f.chunks, batches, got.ok().map(|s| s.chunks));
    }
    f.done
        .lock()
        .expect("not poisoned")
        .recv_timeout(Duration::from_secs(30))
        .expect("the fake server finished");
}

fn server(data: &[u8]) {
    let f = fx();
    let mut s = UnixStream::connect(&f.real).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let _ = send_all(&s, data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server must answer and close: {e}"),
    }
    let (frames, end) = read_frames(&f.rt, &out);
    assert!(end.is_none(), "the server wrote a partial frame: {end:?}");
    // What the server reads, as it reads it (its reads fill whole frames or fail).
    let (hello, reqs, malformed) = f.rt.block_on(async {
        let mut s = data;
        let hello = frame::read_frame_limited(&mut s, MAX_HELLO).await;
        let mut reqs = Vec::new();
        let malformed = loop {
            match frame::read_frame(&mut s).await {
                Ok(fr) => reqs.push(fr),
                Err(FrameError::Closed | FrameError::Io(_)) => break false,
                Err(_) => break true,
            }
        };
        (hello, reqs, malformed)
    });
    let accept = hello
        .as_ref()
        .is_ok_and(|h| h.kind == Kind::Hello && h.body.starts_with(MAGIC));
    let first = frames.first().expect("the server answers every hello");
    if !accept {
        assert_eq!(first.kind, Kind::Error, "a bad hello is refused");
        assert_eq!(frame::parse_error(&first.body).0, Code::Unauthorized);
        assert_eq!(frames.len(), 1, "and nothing else is sent");
        return;
    }
    assert_eq!(first.kind, Kind::HelloOk, "a good hello is accepted");
    let mut answers = frames[1..].iter();
    let mut slots = 0u32;
    for req in &reqs {
        let mut a = answers
            .next()
            .unwrap_or_else(|| panic!("request {} unanswered", req.request));
        while a.kind == Kind::PackFds {
            assert_eq!(a.request, req.request);
            let n = u32::from_le_bytes(a.body[..4].try_into().expect("4 bytes"));
            assert!(n >= 1, "descriptors announced");
            slots += n;
            a = answers.next().expect("LOCATED follows PACK_FDS");
        }
        assert_eq!(a.request, req.request, "answers come in request order");
        match a.kind {
            Kind::Error => {}
            Kind::Located => {
                assert_eq!(req.kind, Kind::Locate);
                assert_eq!(a.body.len(), req.body.len() / 32 * 21, "one entry per hash");
                for (h, e) in req.body.chunks_exact(32).zip(a.body.chunks_exact(21)) {
                    let hash = ChunkHash::from_slice(h).expect("32 bytes");
                    let loc = f.dir.store.locate(&[hash]).expect("located chunks exist")[0];
                    let slot = u32::from_le_bytes(e[..4].try_into().expect("4"));
                    let offset = u64::from_le_bytes(e[4..12].try_into().expect("8"));
                    let stored = u32::from_le_bytes(e[12..16].try_into().expect("4"));
                    let raw = u32::from_le_bytes(e[17..21].try_into().expect("4"));
                    assert!(slot < slots, "a slot already passed");
                    assert_eq!(
                        (offset, stored, e[16], raw),
                        (
                            loc.offset,
                            loc.stored_length,
                            loc.codec.to_u8(),
                            loc.raw_length
                        ),
                        "where the store holds it"
                    );
                    assert!(offset + u64::from(stored) <= f.pack_len);
                }
            }
            k => panic!("{:?} answered with {k:?}", req.kind),
        }
    }
    if malformed {
        let a = answers.next().expect("a malformed frame is answered");
        assert_eq!((a.kind, a.request), (Kind::Error, 0));
    }
    assert!(answers.next().is_none(), "nothing more is sent");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 2 {
        0 => client(rest),
        _ => server(rest),
    }
});
