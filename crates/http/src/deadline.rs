//! The body bound: a request body must arrive whole within its deadline from the first
//! read, however slowly it trickles ([`DeadlineBody`]; a per-frame timeout would let a
//! byte every few seconds through). gRPC request streams are exempt: they are meant to
//! stay open, and HTTP/2 flow control and keep-alive pings bound them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

pin_project_lite::pin_project! {
    /// A body that fails once `limit` has passed since it was first read.
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        limit: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> DeadlineBody<B> {
    /// Bounds `inner` to `limit`.
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            sleep: None,
        }
    }
}

/// The error a [`DeadlineBody`] fails with.
#[derive(Debug)]
pub struct BodyTimeout {
    limit: Duration,
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request body not received within {} s",
            self.limit.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// Whether `e` (or what caused it) is a [`BodyTimeout`]: a handler answers 408 for it.
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.is::<BodyTimeout>() {
            return true;
        }
        cur = x.source();
    }
    false
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.project();
        let limit = *this.limit;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout { limit })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `req` is a gRPC call.
fn grpc(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `req` with its body bounded to `limit` (gRPC calls unchanged).
pub fn limit(req: Request, limit: Duration) -> Request {
    if grpc(&req) {
        return req;
    }
    req.map(|b| axum::body::Body::new(DeadlineBody::new(b, limit)))
}
