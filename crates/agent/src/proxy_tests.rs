//! The network failing between the agent and the data plane, not the server: a small TCP
//! proxy in the test forwards both ways and, once it has passed a given number of the
//! server's bytes on a connection, cuts it (both sides closed) or stalls it (both sides
//! kept open, nothing more forwarded — a partition or a hung middlebox). Either way the
//! load fails clearly within the client's read timeout, nothing partial is visible, and a
//! load over a healthy path resumes from what was staged.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prewarm_core::Version;
use prewarm_transfer::{DataAddr, DataError, Faults, READ_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::{LoadError, Priority, VersionReq};
use crate::install::InstallError;
use crate::tests::{agent, env, id, noise, resume_over, serve};

/// What the proxy does once a connection has carried its share of the server's bytes.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Close both sides.
    Cut,
    /// Keep both sides open and forward nothing more.
    Stall,
}

/// A proxy to `upstream` on a fresh loopback port; `passed` counts the server's bytes it
/// forwarded over all connections.
async fn proxy(upstream: &DataAddr, after: u64, fault: Fault, passed: Arc<AtomicU64>) -> DataAddr {
    let DataAddr::Tcp(up) = upstream.clone() else {
        panic!("a TCP upstream");
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = l.accept().await {
            let server = TcpStream::connect(&up).await.unwrap();
            tokio::spawn(relay(client, server, after, fault, passed.clone()));
        }
    });
    DataAddr::Tcp(addr)
}

/// One proxied connection: requests pass freely, answers until `after` bytes.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    after: u64,
    fault: Fault,
    passed: Arc<AtomicU64>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        let room = usize::try_from(after - sent)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if room == 0 {
            break;
        }
        match sr.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if cw.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                sent += n as u64;
                passed.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    match fault {
        Fault::Cut => {
            up.abort();
            // Dropping both halves of both sockets closes them.
        }
        Fault::Stall => {
            // Hold the sockets (and the upstream copy) open until the test ends.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop((sr, cw, up));
        }
    }
}

/// Commits a 24 MiB incompressible state and loads it through a proxy that fails after
/// 10 MiB of answers: the load fails with the peer gone, nothing is installed, the fetched
/// chunks stay staged; loaded again over a healthy path it resumes and is byte-exact.
/// Returns how long the failing load took.
async fn fails_then_resumes(fault: Fault) -> Duration {
    let e = env().await;
    let r = id("m/proxied");
    let data = noise(24 << 20, 11);
    e.snap
        .commit_bytes(&r, Bytes::from(data.clone()))
        .await
        .unwrap();
    let direct = serve(&e.store, Faults::default()).await;
    let passed = Arc::new(AtomicU64::new(0));
    let through = proxy(&direct, 10 << 20, fault, passed.clone()).await;
    let a = agent(&e.cache, 1 << 30, through);

    let t = Instant::now();
    let bound = READ_TIMEOUT + Duration::from_secs(30);
    let err = tokio::time::timeout(
        bound,
        a.load(&r, VersionReq::AtLeast(None), Priority::OnDemand),
    )
    .await
    .unwrap_or_else(|_| panic!("{fault:?}: the load hung for {bound:?}"))
    .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(
            err,
            LoadError::Install(InstallError::Data(DataError::PeerGone(_)))
        ),
        "{fault:?}: {err}"
    );
    assert!(
        passed.load(Ordering::Relaxed) >= 10 << 20,
        "the fault came mid-stream"
    );
    assert!(a.inventory().0.is_empty(), "{fault:?}: nothing installed");
    assert!(
        !e.cache.join("states/m/proxied/v1").exists(),
        "nothing partial is visible"
    );
    assert_eq!(a.staged(), vec![(r.clone(), Version::new(1).unwrap())]);

    let rep = resume_over(&a, &r, direct, &data).await;
    assert!(rep.resumed_bytes >= 6 << 20, "{fault:?}: {rep:?}");
    assert!(rep.wire_bytes <= (18 << 20), "{fault:?}: {rep:?}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_stream_fails_at_once_and_the_next_load_resumes() {
    let took = fails_then_resumes(Fault::Cut).await;
    assert!(
        took < READ_TIMEOUT,
        "a cut is seen when it happens: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stalled_mid_stream_fails_after_the_read_timeout_and_the_next_load_resumes() {
    let took = fails_then_resumes(Fault::Stall).await;
    // A silent peer is declared gone after the read timeout, not before, and not never.
    assert!(took >= READ_TIMEOUT, "{took:?}");
    assert!(took < READ_TIMEOUT + Duration::from_secs(15), "{took:?}");
}
