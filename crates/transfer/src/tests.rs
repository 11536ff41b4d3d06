//! The data plane over real loopback sockets: tokens, oversize and malformed frames, invalid
//! ids, a pipelined fetch.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use prewarm_core::ResourceId;
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::frame::{self, Code, Kind, MAGIC, MAX_FRAME};
use crate::{Connection, DataAddr, DataError, DataServer, Registry, Token, verify_batch};

async fn setup(token: Option<Token>) -> (DataAddr, ResourceId, Vec<u8>) {
    let store = Arc::new(Store::memory().await);
    let r = ResourceId::new("m/one").unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    Snapshotter::new(store.clone())
        .commit_bytes(&r, Bytes::from(data.clone()))
        .await
        .unwrap();
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
