//! HTTP serving for the agent's application API and the coordinator's port (gRPC, JSON,
//! `/metrics` on one listener), bounded against clients that connect and then go slow or
//! silent (issue 13 §0 item 2: 600 slowloris connections stayed open for 70 s on both):
//!
//! - at most [`Limits::max_connections`] connections are served; beyond, the listener is not
//!   read (the kernel's backlog holds the rest);
//! - a request's headers must arrive within [`Limits::header_timeout`] (hyper's HTTP/1
//!   header timer, which needs a timer the stock servers did not give it);
//! - a request body (other than a gRPC stream) must arrive whole within
//!   [`Limits::body_timeout`] of its first read ([`deadline`]);
//! - a connection with no request in flight and no bytes either way for
//!   [`Limits::idle_timeout`] is closed ([`idle`]); HTTP/2 connections are pinged so a
//!   quiet but live gRPC stream is never idle.
//!
//! With [`serve_tls`] every connection is TLS (mutual TLS when the acceptor has a client CA),
//! its handshake bounded like the headers.
//!
//! Handlers may take as long as they need (an `ensure` that waits for a large transfer):
//! only waiting on the client is bounded.

pub mod deadline;
pub mod idle;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The bounds (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's headers, from its first byte.
    pub header_timeout: Duration,
    /// Time for a whole request body, from its first read.
    pub body_timeout: Duration,
    /// Time a connection may sit without a request in flight and without traffic.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `router` on `listener` under `limits` until the listener fails.
pub async fn serve(listener: TcpListener, router: axum::Router, limits: Limits) -> std::io::Error {
    serve_tls(listener, router, limits, None).await
}

/// TLS on a port: the acceptor, and the counter of handshakes refused or timed out.
#[derive(Clone, Debug)]
pub struct Tls {
    /// Runs the handshakes.
    pub acceptor: prewarm_tls::Acceptor,
    /// Counts connections closed for a failed or late handshake.
    pub refused: prewarm_metrics::Counter,
}

impl Tls {
    /// `acceptor`, its refusals counted in `registry` as
    /// `prewarm_http_tls_refused_total{port}`.
    pub fn new(
        acceptor: prewarm_tls::Acceptor,
        registry: &prewarm_metrics::Registry,
        port: &str,
    ) -> Self {
        let refused = registry.counter(
            "prewarm_http_tls_refused_total",
            "Connections closed because their TLS handshake failed (no, or an unverified, \
             client certificate; not TLS) or did not finish within the header timeout.",
            &[("port", port)],
        );
        Self { acceptor, refused }
    }
}

/// [`serve`], over TLS when `tls` is given: the handshake (and with mutual TLS the client's
/// certificate) must complete within [`Limits::header_timeout`] on a connection slot, and a
/// connection that fails it is closed before any HTTP is read (and counted).
pub async fn serve_tls(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    tls: Option<Tls>,
) -> std::io::Error {
    let router = router.layer(axum::middleware::map_request(
        move |req: axum::extract::Request| async move { deadline::limit(req, limits.body_timeout) },
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = match slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return std::io::Error::other("connection slots closed"),
        };
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) if transient(&e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return e,
        };
        // Small JSON answers: without TCP_NODELAY each would wait on the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return connection(stream, router, limits).await;
            };
            let shake = tokio::time::timeout(limits.header_timeout, tls.acceptor.accept(stream));
            match shake.await {
                Ok(Ok(s)) => return connection(s, router, limits).await,
                Ok(Err(e)) => tracing::debug!("TLS handshake refused: {e}"),
                Err(_) => tracing::debug!("TLS handshake not done within the header timeout"),
            }
            tls.refused.inc();
        });
    }
}

/// Errors after which accepting goes on (out of descriptors, a peer reset in the queue).
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 23 || c == 24) // ENFILE, EMFILE
}

async fn connection<IO>(stream: IO, router: axum::Router, limits: Limits)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (io, in_flight) = idle::IdleIo::new(stream, limits.idle_timeout);
    let svc = idle::Counted::new(router, in_flight);
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 3)
        .keep_alive_timeout(limits.idle_timeout / 3);
    if let Err(e) = b.serve_connection(TokioIo::new(io), svc).await {
        tracing::debug!("connection closed: {e}");
    }
}

#[cfg(test)]
mod tests;
