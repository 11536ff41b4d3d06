//! The bounds against real sockets: silent, dribbling and over-the-cap clients are let go or
//! held back; a slow handler is not.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use super::*;

fn limits() -> Limits {
    Limits {
        max_connections: 64,
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    }
}

async fn start(l: Limits) -> SocketAddr {
    let router = axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                sleep(Duration::from_millis(2500)).await;
                "slow"
            }),
        )
        .route(
            "/echo",
            post(|b: bytes::Bytes| async move { b.len().to_string() }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, router, l));
    addr
}

/// Reads until the server closes (or `within` passes: `None`); what it sent.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + within;
    loop {
        match timeout(
            end.saturating_duration_since(Instant::now()),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let addr = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let got = until_closed(&mut s, Duration::from_secs(8)).await;
    assert_eq!(got.as_deref(), Some(""), "still open after 8 s");
}

#[tokio::test]
async fn headers_trickled_in_are_cut_off_at_the_header_timeout() {
    let addr = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    // A header line every 300 ms: never idle, never done.
    let mut closed = false;
    while t0.elapsed() < Duration::from_secs(8) {
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        match timeout(Duration::from_millis(300), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    assert!(closed, "trickled headers kept the connection for 8 s");
}

#[tokio::test]
async fn a_body_trickled_in_is_refused_at_the_body_timeout() {
    let addr = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut answer = Vec::new();
    while t0.elapsed() < Duration::from_secs(8) {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        let mut b = [0u8; 256];
        match timeout(Duration::from_millis(300), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
        if answer.ends_with(b"\r\n\r\n") || answer.len() > 12 {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "after {:?}: {answer:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn a_handler_slower_than_the_idle_timeout_still_answers_and_a_whole_body_passes() {
    let addr = start(limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut s, Duration::from_secs(10)).await.unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("slow"),
        "{got:?}"
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let got = until_closed(&mut s, Duration::from_secs(10)).await.unwrap();
    assert!(got.ends_with("\r\n\r\n5"), "{got:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let addr = start(Limits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    sleep(Duration::from_millis(200)).await;
    let mut c = TcpStream::connect(addr).await.unwrap(); // in the backlog, not served
    c.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        until_closed(&mut c, Duration::from_millis(700)).await,
        None,
        "a third connection was served beyond the cap of 2"
    );
    drop(a);
    let got = until_closed(&mut c, Duration::from_secs(5)).await.unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
        "{got:?}"
    );
}

#[tokio::test]
async fn over_mutual_tls_only_verified_clients_get_http_and_a_silent_handshake_is_cut_off() {
    use prewarm_tls::testing::Pki;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let acceptor = prewarm_tls::Acceptor::load(&pki.server(&pki.issue("api"), true)).unwrap();
    let registry = prewarm_metrics::Registry::default();
    let tls = Tls::new(acceptor, &registry, "api");
    let router = axum::Router::new().route("/ok", get(|| async { "ok" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(listener, router, limits(), Some(tls.clone())));

    // A client with a certificate the CA signed: served.
    let c = prewarm_tls::Connector::load(&pki.client(Some(&pki.issue("app")))).unwrap();
    let mut tls = c
        .connect("127.0.0.1", TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    tls.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("ok"),
        "{out}"
    );

    // Without one: the handshake fails, no HTTP is served.
    let c = prewarm_tls::Connector::load(&pki.client(None)).unwrap();
    let refused = async {
        let mut tls = c
            .connect("127.0.0.1", TcpStream::connect(addr).await?)
            .await?;
        tls.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await.map(|_| out)
    };
    let r = refused.await;
    assert!(r.is_err(), "served without a client certificate: {r:?}");

    // Plain HTTP on the TLS port: closed with no HTTP answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let out = until_closed(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(!out.contains("HTTP/1.1"), "{out}");

    // Connected and silent: let go at the header timeout (1 s here), not held.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(until_closed(&mut s, Duration::from_secs(5)).await.is_some());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
}
