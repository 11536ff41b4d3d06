//! The idle bound: a connection's IO ([`IdleIo`]) fails its read once it has been quiet for
//! the idle timeout while no request on it is in flight ([`Counted`] keeps that count), so
//! a client that connects and says nothing, or stops after a response, is let go, and a
//! handler that takes minutes is not cut off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in flight on one connection.
pub type InFlight = Arc<AtomicUsize>;

/// A stream that times out reads after `idle` of silence with nothing in flight.
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
    in_flight: InFlight,
}

impl<T> IdleIo<T> {
    /// Wraps `inner`; the returned counter is the connection's requests in flight.
    pub fn new(inner: T, idle: Duration) -> (Self, InFlight) {
        let in_flight = InFlight::default();
        let io = Self {
            inner,
            idle,
            last: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(idle)),
            in_flight: in_flight.clone(),
        };
        (io, in_flight)
    }

    /// `Ready(Err)` once the connection is idle past its bound; else the timer is armed.
    /// The timer is moved only when it fires early (traffic since it was set), not on
    /// every read: re-registering a timer per request cost the API's p99.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                self.last = Instant::now();
                return Poll::Pending;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle past its limit",
                )));
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, b);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A service that counts its calls in flight (until each response is ready).
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    in_flight: InFlight,
}

impl<S> Counted<S> {
    /// Counts `inner`'s calls in `in_flight`.
    pub fn new(inner: S, in_flight: InFlight) -> Self {
        Self { inner, in_flight }
    }
}

struct Guard(InFlight);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, R> tower::Service<R> for Counted<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = Guard(self.in_flight.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}
