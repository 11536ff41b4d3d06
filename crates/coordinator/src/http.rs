//! The coordinator's HTTP routes beside gRPC (same port): `POST /v1/events` (one event
//! object or an array; all or nothing; 400/401/413 with `{error, message}`, 429 with
//! `Retry-After` over the token's events rate, see [`crate::limits`]) and
//! `GET /v1/placement?key=K&type=T[&capacity=C]` (where an event would run and what would
//! move, without moving anything). Any other path: 401 without the token, else 404, both as
//! `{error, message}`.
//!
//! The token is checked from the headers before a body is read, so an unauthenticated
//! client cannot make the coordinator buffer anything; a body is then read up to its limit
//! and refused with 413 beyond it. Refusals are logged within a budget ([`Throttle`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prewarm_core::{CapacityId, Event};
use serde::Deserialize;

use prewarm_transfer::Throttle;
use prewarm_transfer::warn_throttled;

use crate::Coordinator;
use crate::predictive::{EventIn, EventsError, MAX_EVENTS_BODY, parse_events};

/// The log budget of refused HTTP requests.
static REFUSALS: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(Throttle::default);

pub(crate) type Check =
    dyn Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync;

fn authorized(check: &Check, headers: &HeaderMap) -> bool {
    token_allowed(check, headers.get(axum::http::header::AUTHORIZATION))
}

/// Whether `authorization` (the header's value, if any) passes `check`.
pub(crate) fn token_allowed(check: &Check, authorization: Option<&HeaderValue>) -> bool {
    let mut req = tonic::Request::new(());
    if let Some(v) = authorization
        && let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes())
    {
        req.metadata_mut().insert("authorization", v);
    }
    check(req).is_ok()
}

/// An `{error, message}` answer.
pub(crate) fn refuse(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(prewarm_api::ApiError::new(error, message))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementQuery {
    key: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    capacity: Option<String>,
}

/// The routes, checked with the same token policy as gRPC.
pub fn routes<F>(c: Arc<Coordinator>, check: F) -> axum::Router
where
    F: Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let (c2, check2) = (c.clone(), check.clone());
    axum::Router::new()
        .route(
            "/v1/events",
            post(move |headers: HeaderMap, body: Body| {
                let (c, check) = (c.clone(), check.clone());
                async move {
                    if !authorized(&check, &headers) {
                        warn_throttled!(
                            REFUSALS,
                            "POST /v1/events refused: missing or wrong token"
                        );
                        return unauthorized();
                    }
                    let auth = headers.get(axum::http::header::AUTHORIZATION);
                    post_events(c, auth.map(|v| v.as_bytes()), body).await
                }
            }),
        )
        .route(
            "/v1/placement",
            get(
                move |headers: HeaderMap, q: Result<Query<PlacementQuery>, _>| {
                    let (c, check) = (c2.clone(), check2.clone());
                    async move {
                        if !authorized(&check, &headers) {
                            return unauthorized();
                        }
                        placement(c, q).await
                    }
                },
            ),
        )
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token".into(),
    )
}

/// `POST /v1/events` once authorized: a slot taken (or the request shed, see
/// [`crate::limits::Ingest`]), the body read within its limit, parsed, handled.
async fn post_events(c: Arc<Coordinator>, auth: Option<&[u8]>, body: Body) -> Response {
    let (slots, wait) = &c.ingest;
    let Ok(Ok(_slot)) = tokio::time::timeout(*wait, slots.acquire()).await else {
        c.metrics.requests_shed.inc();
        warn_throttled!(REFUSALS, "POST /v1/events shed: overloaded");
        let mut r = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "every event slot stayed busy for {:.1} s; retry after 1 s",
                wait.as_secs_f64()
            ),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        );
        return r;
    };
    post_body(c.clone(), auth, body).await
}

/// [`post_events`] holding a slot.
async fn post_body(c: Arc<Coordinator>, auth: Option<&[u8]>, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_EVENTS_BODY).await {
        Ok(b) => b,
        Err(e) => {
            c.metrics.events_refused.inc();
            if prewarm_http::deadline::timed_out(&e) {
                return refuse(StatusCode::REQUEST_TIMEOUT, "timeout", e.to_string());
            }
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is over {MAX_EVENTS_BODY} bytes"),
            );
        }
    };
    let (events, batch) = match parse_events(&body) {
        Ok(x) => x,
        Err(e) => {
            c.metrics.events_refused.inc();
            let status = match e {
                EventsError::TooMany(_) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return refuse(status, "bad_events", e.to_string());
        }
    };
    if let Some(Err(l)) = c.events_limit.as_ref().map(|l| l.take(auth, events.len())) {
        c.metrics.events_rate_limited.add(events.len() as u64);
        warn_throttled!(REFUSALS, "POST /v1/events refused: over the rate limit");
        let secs = l.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{} events over this token's limit of {} per second; retry after {secs} s",
                events.len(),
                l.rate
            ),
        );
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
        return r;
    }
    let mut out = c.handle_events(&events, true).await;
    if batch {
        Json(out).into_response()
    } else {
        Json(out.pop()).into_response()
    }
}

/// `GET /v1/placement` once authorized: where the event would run and what would move.
async fn placement(
    c: Arc<Coordinator>,
    q: Result<Query<PlacementQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q: PlacementQuery = match q {
        Ok(Query(q)) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
    };
    let capacity = match q.capacity.map(CapacityId::new).transpose() {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("capacity: {e}"),
            );
        }
    };
    let e = EventIn {
        ts: None,
        event: Event {
            kind: q.kind.unwrap_or_else(|| "http".into()),
            key: q.key,
            attrs: Default::default(),
            needs: Vec::new(),
        },
        capacity,
    };
    Json(c.handle_event(&e, false).await).into_response()
}

/// The answer to any path the coordinator does not serve: 401 without the token, else 404.
pub fn fallback<F>(check: F) -> axum::routing::MethodRouter
where
    F: Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>
        + Clone
        + Send
        + Sync
        + 'static,
{
    axum::routing::any(move |headers: HeaderMap, uri: axum::http::Uri| {
        let check = check.clone();
        async move {
            if !authorized(&check, &headers) {
                warn_throttled!(REFUSALS, "{} refused: missing or wrong token", uri.path());
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token".into(),
                );
            }
            refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such path: {}", uri.path()),
            )
        }
    })
}
