//! The data plane over real loopback sockets: tokens, oversize and malformed frames, invalid
//! ids, a pipelined fetch; the same-host pack channel (descriptors passed over a Unix socket).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use prewarm_core::ResourceId;
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{self, Code, Kind, MAGIC, MAX_FRAME};
use prewarm_metrics::Registry;

use crate::{Connection, DataAddr, DataError, DataServer, Token, verify_batch};

/// A memory store holding `m/one`, 3 MB of incompressible bytes (returned).
pub(crate) async fn committed_store() -> (Arc<Store>, ResourceId, Vec<u8>) {
    let store = Arc::new(Store::memory().await);
    let r = ResourceId::new("m/one").unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    Snapshotter::new(store.clone())
        .commit_bytes(&r, Bytes::from(data.clone()))
        .await
        .unwrap();
    (store, r, data)
}

async fn setup(token: Option<Token>) -> (DataAddr, ResourceId, Vec<u8>) {
    let (store, r, data) = committed_store().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = DataAddr::Tcp(l.local_addr().unwrap().to_string());
    let s = Arc::new(DataServer::new(
        store,
        token,
        "t".into(),
        &Registry::default(),
    ));
    tokio::spawn(s.serve_tcp(l));
    (addr, r, data)
}

#[tokio::test]
async fn a_token_is_required_when_set() {
    let t = Token::new("0123456789abcdef0123").unwrap();
    let (addr, r, _) = setup(Some(t.clone())).await;
    for presented in [None, Some(Token::new("0123456789abcdef9999").unwrap())] {
        match Connection::connect(&addr, presented.as_ref()).await {
            Err(DataError::Refused {
                code: Code::Unauthorized,
                ..
            }) => {}
            other => panic!("{:?}", other.err()),
        }
    }
    let mut c = Connection::connect(&addr, Some(&t)).await.unwrap();
    assert_eq!(c.manifest(&r, None).await.unwrap().state.resource, r);
}

#[tokio::test]
async fn pipelined_fetch_returns_every_chunk_verified_in_order() {
    let (addr, r, data) = setup(None).await;
    let mut c = Connection::connect(&addr, None).await.unwrap();
    let m = c.manifest(&r, None).await.unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let refs = m.chunks.clone();
    let stats = c.fetch(&refs, None, &tx).await.unwrap();
    drop(tx);
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        for (i, v) in verify_batch(&refs, b) {
            out.push((i, v.unwrap()));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    let joined: Vec<u8> = out.into_iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(joined, data);
    assert_eq!(stats.chunks as usize, refs.len());
    // The connection stays usable, and an unknown resource is named as such.
    match c.manifest(&ResourceId::new("m/other").unwrap(), None).await {
        Err(DataError::UnknownState(m)) => assert!(m.contains("m/other"), "{m}"),
        other => panic!("{:?}", other.err()),
    }
}

async fn raw(addr: &DataAddr) -> tokio::net::TcpStream {
    let DataAddr::Tcp(a) = addr else {
        unreachable!()
    };
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    frame::write_frame(&mut s, Kind::Hello, 0, MAGIC)
        .await
        .unwrap();
    let f = frame::read_frame(&mut s).await.unwrap();
    assert_eq!(f.kind, Kind::HelloOk);
    s
}

#[tokio::test]
async fn oversize_and_malformed_requests_are_refused() {
    let (addr, _, _) = setup(None).await;
    // A chunk request that is not n × 32 bytes, and an invalid resource id: refused, and
    // the connection carries on.
    let mut s = raw(&addr).await;
    frame::write_frame(&mut s, Kind::Chunks, 1, &[0u8; 33])
        .await
        .unwrap();
    let mut body = 0u64.to_le_bytes().to_vec();
    body.extend_from_slice(b"../etc/passwd");
    frame::write_frame(&mut s, Kind::Manifest, 2, &body)
        .await
        .unwrap();
    for want in [1, 2] {
        let f = frame::read_frame(&mut s).await.unwrap();
        assert_eq!((f.kind, f.request), (Kind::Error, want));
        assert_eq!(frame::parse_error(&f.body).0, Code::BadRequest);
    }
    // A frame announcing more than the limit: refused before its body is read, then closed.
    let mut s = raw(&addr).await;
    s.write_all(&(MAX_FRAME + 1).to_le_bytes()).await.unwrap();
    s.write_all(&[3, 0, 0, 0, 0]).await.unwrap();
    let f = frame::read_frame(&mut s).await.unwrap();
    assert_eq!(f.kind, Kind::Error);
    assert_eq!(frame::parse_error(&f.body).0, Code::Oversize);
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest).await {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection must be closed: {other:?}"),
    }
    // Not a prewarm client at all.
    let DataAddr::Tcp(a) = &addr else {
        unreachable!()
    };
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let f = frame::read_frame(&mut s).await.unwrap();
    assert_eq!(frame::parse_error(&f.body).0, Code::Unauthorized);
}

/// An authenticated connection that stops asking is closed after the idle timeout (not
/// before: a request just under it is still answered), and counted.
#[tokio::test(start_paused = true)]
async fn an_idle_authenticated_connection_is_closed_after_the_idle_timeout() {
    let store = Arc::new(Store::memory().await);
    let registry = Registry::default();
    let server = Arc::new(DataServer::new(store, None, "t".into(), &registry));
    let (mut s, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(server.handle(theirs, "duplex"));
    frame::write_frame(&mut s, Kind::Hello, 0, MAGIC)
        .await
        .unwrap();
    assert_eq!(frame::read_frame(&mut s).await.unwrap().kind, Kind::HelloOk);
    let almost = crate::server::IDLE_TIMEOUT - std::time::Duration::from_secs(1);
    tokio::time::sleep(almost).await;
    let mut body = 0u64.to_le_bytes().to_vec();
    body.extend_from_slice(b"m/none");
    frame::write_frame(&mut s, Kind::Manifest, 7, &body)
        .await
        .unwrap();
    let f = frame::read_frame(&mut s).await.unwrap();
    assert_eq!((f.kind, f.request), (Kind::Error, 7), "still served");
    tokio::time::sleep(almost).await;
    assert!(
        !registry
            .render()
            .contains("prewarm_data_idle_closed_total 1")
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).await.unwrap(),
        0,
        "closed: {rest:?}"
    );
    assert!(
        registry
            .render()
            .contains("prewarm_data_idle_closed_total 1"),
        "{}",
        registry.render()
    );
}

#[tokio::test]
async fn an_oversize_hello_is_refused_before_anything_is_buffered() {
    let t = Token::new("0123456789abcdef0123").unwrap();
    let (addr, _, _) = setup(Some(t)).await;
    let DataAddr::Tcp(a) = &addr else {
        unreachable!()
    };
    // A hello announcing 60 MiB: refused from its length field (the server reads nothing
    // more and answers at once), not after 60 MiB were buffered for an unauthenticated peer.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(&(60u32 << 20).to_le_bytes()).await.unwrap();
    s.write_all(&[Kind::Hello as u8, 0, 0, 0, 0]).await.unwrap();
    s.write_all(MAGIC).await.unwrap();
    let f = tokio::time::timeout(std::time::Duration::from_secs(5), frame::read_frame(&mut s))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    assert_eq!(f.kind, Kind::Error);
    let (code, msg) = frame::parse_error(&f.body);
    assert_eq!(code, Code::Unauthorized);
    assert!(msg.contains("limit"), "{msg}");
}

#[tokio::test]
async fn a_client_pipelining_without_reading_is_held_to_its_budget_and_then_served() {
    let (addr, r, data) = setup(None).await;
    let mut c = Connection::connect(&addr, None).await.unwrap();
    let m = c.manifest(&r, None).await.unwrap();
    let hashes: Vec<u8> = m.chunks.iter().flat_map(|c| *c.hash.as_bytes()).collect();
    // 40 requests for the whole state, none of it read yet: the server reads ahead only as
    // far as the connection's budget allows, and every answer still arrives, whole.
    let mut s = raw(&addr).await;
    for i in 0..40 {
        frame::write_frame(&mut s, Kind::Chunks, i, &hashes)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut rd = frame::FrameReader::new(s);
    let mut got = 0usize;
    let mut done = 0;
    while done < 40 {
        let f = rd.next().await.unwrap();
        match f.kind {
            Kind::Chunk => got += f.body.len(),
            Kind::Done => done += 1,
            k => panic!("{k:?}"),
        }
    }
    assert!(got >= 40 * m.chunks.len() * 37, "every chunk frame arrived");
    assert!(!data.is_empty());
}

/// A local-directory store with two resources (so two packs), served on a Unix socket and a
/// pack channel.
pub(crate) async fn setup_local(
    token: Option<Token>,
) -> (
    tempfile::TempDir,
    DataAddr,
    Arc<Store>,
    Vec<(ResourceId, Vec<u8>)>,
    Registry,
) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Arc::new(Store::open_or_create(root.to_str().unwrap()).await.unwrap());
    let mut states = Vec::new();
    for (name, seed) in [("m/one", 7u32), ("m/two", 11)] {
        let r = ResourceId::new(name).unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect();
        Snapshotter::new(store.clone())
            .commit_bytes(&r, Bytes::from(data.clone()))
            .await
            .unwrap();
        states.push((r, data));
    }
    let reg = Registry::default();
    let s = Arc::new(DataServer::new(store.clone(), token, "t".into(), &reg));
    let (stream, packs) = (dir.path().join("d.sock"), dir.path().join("d.sock.fds"));
    let l = tokio::net::UnixListener::bind(&stream).unwrap();
    tokio::spawn(s.clone().serve_unix(l));
    let l = tokio::net::UnixListener::bind(&packs).unwrap();
    tokio::spawn(s.serve_fds(l));
    (dir, DataAddr::UnixFds { stream, packs }, store, states, reg)
}

pub(crate) async fn fetch_all(c: &mut Connection, refs: &[prewarm_store::ChunkRef]) -> Vec<u8> {
    let (tx, mut rx) = mpsc::channel(64);
    let stats = c.fetch(refs, None, &tx).await.unwrap();
    drop(tx);
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        for (i, v) in verify_batch(refs, b) {
            out.push((i, v.unwrap()));
        }
    }
    assert_eq!(stats.chunks as usize, refs.len());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().flat_map(|(_, b)| b.to_vec()).collect()
}

#[tokio::test]
async fn pack_channel_passes_packs_and_every_chunk_verifies() {
    let t = Token::new("0123456789abcdef0123").unwrap();
    let (_dir, addr, _store, states, reg) = setup_local(Some(t.clone())).await;
    // Without the token, or with a wrong one: refused.
    for presented in [None, Some(Token::new("0123456789abcdef9999").unwrap())] {
        match Connection::connect(&addr, presented.as_ref()).await {
            Err(DataError::Refused {
                code: Code::Unauthorized,
                ..
            }) => {}
            other => panic!("{:?}", other.err()),
        }
    }
    let mut c = Connection::connect(&addr, Some(&t)).await.unwrap();
    // Two fetches on one connection: the second needs a pack passed later (slot 1).
    for (r, data) in &states {
        let m = c.manifest(r, None).await.unwrap();
        assert_eq!(&fetch_all(&mut c, &m.chunks).await, data);
    }
    let text = reg.render();
    assert!(text.contains("prewarm_data_fds_passed_total 2"), "{text}");
    // A chunk the store does not hold: named as unknown, and the channel carries on.
    let m = c.manifest(&states[0].0, None).await.unwrap();
    let mut bogus = m.chunks[0];
    bogus.hash = prewarm_core::ChunkHash::of(b"nowhere");
    let (tx, _rx) = mpsc::channel(4);
    match c.fetch(&[bogus], None, &tx).await {
        Err(DataError::UnknownState(m)) => assert!(m.contains("not in the store"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(&fetch_all(&mut c, &m.chunks).await, &states[0].1);
}

/// Flips bits `mask` of byte `at` of `hash`'s stored bytes in its pack file; the file.
pub(crate) fn flip_stored_byte(
    store: &Store,
    hash: prewarm_core::ChunkHash,
    at: usize,
    mask: u8,
) -> std::path::PathBuf {
    let loc = store.locate(&[hash]).unwrap()[0];
    let path = store.pack_file(&loc.pack).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[loc.offset as usize + at] ^= mask;
    std::fs::write(&path, &bytes).unwrap();
    path
}

/// Fetches `refs` (the fetch itself succeeds); the indexes that fail verification, sorted.
pub(crate) async fn failing(c: &mut Connection, refs: &[prewarm_store::ChunkRef]) -> Vec<usize> {
    let (tx, mut rx) = mpsc::channel(64);
    c.fetch(refs, None, &tx).await.unwrap();
    drop(tx);
    let mut bad = Vec::new();
    while let Some(b) = rx.recv().await {
        bad.extend(
            verify_batch(refs, b)
                .into_iter()
                .filter_map(|(i, v)| v.is_err().then_some(i)),
        );
    }
    bad.sort_unstable();
    bad
}

/// The indexes of the chunks with the same content as chunk `i`.
pub(crate) fn same_content(refs: &[prewarm_store::ChunkRef], i: usize) -> Vec<usize> {
    (0..refs.len())
        .filter(|&j| refs[j].hash == refs[i].hash)
        .collect()
}

#[tokio::test]
async fn a_damaged_pack_fails_verification_through_the_pack_channel() {
    let (dir, addr, store, states, _) = setup_local(None).await;
    let mut c = Connection::connect(&addr, None).await.unwrap();
    let m = c.manifest(&states[0].0, None).await.unwrap();
    // Flip one byte of the third chunk's stored bytes in its pack file.
    let path = flip_stored_byte(&store, m.chunks[2].hash, 1, 0x40);
    assert!(path.starts_with(dir.path()));
    let got = failing(&mut c, &m.chunks).await;
    // Exactly the chunks with that content (the test data repeats every 2 MiB).
    let want = same_content(&m.chunks, 2);
    assert_eq!(got, want);
}

#[tokio::test]
async fn pack_channel_refuses_bad_frames_and_remote_stores() {
    let (_dir, addr, _, _, _) = setup_local(None).await;
    let DataAddr::UnixFds { packs, .. } = &addr else {
        unreachable!()
    };
    // Oversize: refused before the body is read, then closed.
    let mut s = tokio::net::UnixStream::connect(packs).await.unwrap();
    frame::write_frame(&mut s, Kind::Hello, 0, MAGIC)
        .await
        .unwrap();
    assert_eq!(frame::read_frame(&mut s).await.unwrap().kind, Kind::HelloOk);
    frame::write_frame(&mut s, Kind::Locate, 1, &[0u8; 33])
        .await
        .unwrap();
    let f = frame::read_frame(&mut s).await.unwrap();
    assert_eq!((f.kind, f.request), (Kind::Error, 1));
    assert_eq!(frame::parse_error(&f.body).0, Code::BadRequest);
    let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
    huge.extend_from_slice(&[4, 0, 0, 0, 0]);
    s.write_all(&huge).await.unwrap();
    let f = frame::read_frame(&mut s).await.unwrap();
    assert_eq!(frame::parse_error(&f.body).0, Code::Oversize);
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest).await {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the connection must be closed: {other:?}"),
    }
    // A store that is not a local directory has no pack files to pass.
    let mem = Arc::new(Store::memory().await);
    let r = ResourceId::new("m/one").unwrap();
    Snapshotter::new(mem.clone())
        .commit_bytes(&r, Bytes::from(vec![1u8; 100_000]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let srv = Arc::new(DataServer::new(mem, None, "m".into(), &Registry::default()));
    let (stream, packs) = (dir.path().join("s"), dir.path().join("s.fds"));
    tokio::spawn(
        srv.clone()
            .serve_unix(tokio::net::UnixListener::bind(&stream).unwrap()),
    );
    tokio::spawn(srv.serve_fds(tokio::net::UnixListener::bind(&packs).unwrap()));
    let mut c = Connection::connect(&DataAddr::UnixFds { stream, packs }, None)
        .await
        .unwrap();
    let m = c.manifest(&r, None).await.unwrap();
    let (tx, _rx) = mpsc::channel(4);
    match c.fetch(&m.chunks, None, &tx).await {
        Err(DataError::Refused { code, msg }) => {
            assert_eq!(code, Code::BadRequest);
            assert!(msg.contains("not a local directory"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

/// Keys with three tenant entries: acme's agent (transfer, acme only), acme's application
/// (ensure, acme only) and the fleet's agents (transfer, every prefix).
fn tenant_keys() -> Arc<crate::Keys> {
    let entry = |name: &str, secret: &str, prefixes: &str, caps: &str| {
        format!(
            "[[token]]\nname = {name:?}\nhash = {:?}\nprefixes = {prefixes}\ncaps = {caps}\n",
            crate::tokens::token_hash(secret)
        )
    };
    let text = [
        entry(
            "acme",
            "acme-transfer-0123456789",
            r#"["tenants/acme/"]"#,
            r#"["transfer"]"#,
        ),
        entry(
            "acme-app",
            "acme-ensure-0123456789",
            r#"["tenants/acme/"]"#,
            r#"["ensure"]"#,
        ),
        entry(
            "agents",
            "agents-transfer-0123456789",
            r#"["*"]"#,
            r#"["transfer"]"#,
        ),
    ]
    .concat();
    let tokens = crate::Tokens::parse(&text, std::path::Path::new("t.toml")).unwrap();
    Arc::new(crate::Keys::new(None, Some(tokens)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_transfer_tokens_get_their_own_manifests_and_never_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open_or_create(dir.path().join("store").to_str().unwrap())
            .await
            .unwrap(),
    );
    let (acme, beta) = (
        ResourceId::new("tenants/acme/x").unwrap(),
        ResourceId::new("tenants/beta/y").unwrap(),
    );
    for (r, seed) in [(&acme, 3u8), (&beta, 5)] {
        Snapshotter::new(store.clone())
            .commit_bytes(r, Bytes::from(vec![seed; 200_000]))
            .await
            .unwrap();
    }
    let s = Arc::new(
        DataServer::new(store, None, "t".into(), &Registry::default()).with_keys(tenant_keys()),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = DataAddr::Tcp(l.local_addr().unwrap().to_string());
    tokio::spawn(s.clone().serve_tcp(l));
    let (stream, packs) = (dir.path().join("d.sock"), dir.path().join("d.sock.fds"));
    tokio::spawn(
        s.clone()
            .serve_unix(tokio::net::UnixListener::bind(&stream).unwrap()),
    );
    let pack_l = tokio::net::UnixListener::bind(&packs).unwrap();
    tokio::spawn(s.serve_fds(pack_l));
    let tok = |s: &str| Token::new(s).unwrap();

    // An ensure-only token, no token, an unknown one: refused at hello.
    for presented in [
        None,
        Some(tok("acme-ensure-0123456789")),
        Some(tok("nobody-0123456789abc")),
    ] {
        match Connection::connect(&tcp, presented.as_ref()).await {
            Err(DataError::Refused {
                code: Code::Unauthorized,
                msg,
            }) => assert!(
                presented.is_none() || msg.contains("transfer") || msg.contains("wrong"),
                "{msg}"
            ),
            other => panic!("{:?}", other.err()),
        }
    }
    // acme's agent: its own state, and the same refusal for beta's whether it exists or not.
    let acme_t = tok("acme-transfer-0123456789");
    let mut c = Connection::connect(&tcp, Some(&acme_t)).await.unwrap();
    assert_eq!(c.manifest(&acme, None).await.unwrap().state.resource, acme);
    let mut refusals = Vec::new();
    for r in [&beta, &ResourceId::new("tenants/beta/none").unwrap()] {
        match c.manifest(r, None).await {
            Err(DataError::Refused {
                code: Code::Unauthorized,
                msg,
            }) => refusals.push(msg.replace(r.as_str(), "R")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refusals[0], refusals[1], "no existence oracle");
    assert!(
        refusals[0].contains("outside the token's prefixes"),
        "{}",
        refusals[0]
    );
    // On the same host: the pack channel refuses a scoped token (packs mix tenants), and the
    // client falls back to the stream, which serves it its own state only.
    let fds = DataAddr::UnixFds {
        stream: stream.clone(),
        packs: packs.clone(),
    };
    match crate::PackChannel::connect(&packs, Some(&acme_t)) {
        Err(DataError::Refused {
            code: Code::Unauthorized,
            msg,
        }) => assert!(msg.contains("every prefix"), "{msg}"),
        other => panic!("{:?}", other.err()),
    }
    let mut c = Connection::connect(&fds, Some(&acme_t)).await.unwrap();
    let m = c.manifest(&acme, None).await.unwrap();
    assert_eq!(fetch_all(&mut c, &m.chunks).await, vec![3u8; 200_000]);
    assert!(c.manifest(&beta, None).await.is_err());
    // The fleet's agents' token: every state, the pack channel too.
    let agents = tok("agents-transfer-0123456789");
    assert!(crate::PackChannel::connect(&packs, Some(&agents)).is_ok());
    let mut c = Connection::connect(&fds, Some(&agents)).await.unwrap();
    let m = c.manifest(&beta, None).await.unwrap();
    assert_eq!(fetch_all(&mut c, &m.chunks).await, vec![5u8; 200_000]);
}
