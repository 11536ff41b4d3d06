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
//!
//! Tenant-scoped tokens (`prewarm_transfer::tokens`): both routes need the `events`
//! capability (403 `forbidden` before the body is read); a body whose events name in
//! `needs` a state outside the token's prefixes is refused whole with 403 (like any other
//! bad event: all or nothing), and the predictions made for the events it keeps are
//! filtered to those prefixes, so they never move or keep another tenant's state. Refusals
//! are counted in `prewarm_coordinator_forbidden_total{route}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prewarm_core::{CapacityId, Event};
use serde::Deserialize;

use prewarm_transfer::{Capability, Denied, Principal, Throttle, warn_throttled};

use crate::Coordinator;
use crate::predictive::{EventIn, EventsError, MAX_EVENTS_BODY, parse_events};

/// The log budget of refused HTTP requests.
static REFUSALS: std::sync::LazyLock<Throttle> = std::sync::LazyLock::new(Throttle::default);

/// Who presents `authorization` (the header's value, if any), or the 401 answer.
pub(crate) fn principal(
    c: &Coordinator,
    authorization: Option<&HeaderValue>,
) -> Result<Arc<Principal>, Box<Response>> {
    c.keys
        .authenticate_bearer(authorization.map(HeaderValue::as_bytes))
        .map_err(|_| Box::new(unauthorized()))
}

/// Who sent the request if it holds `cap`; else the 401 or 403 answer.
pub(crate) fn allowed(
    c: &Coordinator,
    headers: &HeaderMap,
    cap: Capability,
) -> Result<Arc<Principal>, Box<Response>> {
    let who = principal(c, headers.get(axum::http::header::AUTHORIZATION)).inspect_err(|_| {
        warn_throttled!(REFUSALS, "request refused: missing or wrong token");
    })?;
    who.may(cap).map_err(|e| Box::new(forbid(c, cap, &e)))?;
    Ok(who)
}

/// The 403 answer to `e`, counted by the capability the route needs.
pub(crate) fn forbid(c: &Coordinator, cap: Capability, e: &Denied) -> Response {
    count_forbidden(c, cap);
    warn_throttled!(REFUSALS, "refused: {e}");
    refuse(StatusCode::FORBIDDEN, "forbidden", e.to_string())
}

/// Counts one refusal for a token's capabilities or prefixes (HTTP and gRPC alike).
pub(crate) fn count_forbidden(c: &Coordinator, cap: Capability) {
    c.registry
        .counter(
            "prewarm_coordinator_forbidden_total",
            "Requests refused for a token's capabilities or resource prefixes, by the \
             capability the route needs.",
            &[("route", cap.name())],
        )
        .inc();
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

/// The routes, checked with the same keys as gRPC.
pub fn routes(c: Arc<Coordinator>) -> axum::Router {
    let c2 = c.clone();
    axum::Router::new()
        .route(
            "/v1/events",
            post(move |headers: HeaderMap, body: Body| {
                let c = c.clone();
                async move {
                    let who = match allowed(&c, &headers, Capability::Events) {
                        Ok(who) => who,
                        Err(r) => return *r,
                    };
                    let auth = headers.get(axum::http::header::AUTHORIZATION);
                    post_events(c, &who, auth.map(|v| v.as_bytes()), body).await
                }
            }),
        )
        .route(
            "/v1/placement",
            get(
                move |headers: HeaderMap, q: Result<Query<PlacementQuery>, _>| {
                    let c = c2.clone();
                    async move {
                        match allowed(&c, &headers, Capability::Events) {
                            Ok(who) => placement(c, &who, q).await,
                            Err(r) => *r,
                        }
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
async fn post_events(
    c: Arc<Coordinator>,
    who: &Principal,
    auth: Option<&[u8]>,
    body: Body,
) -> Response {
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
    post_body(c.clone(), who, auth, body).await
}

/// [`post_events`] holding a slot.
async fn post_body(
    c: Arc<Coordinator>,
    who: &Principal,
    auth: Option<&[u8]>,
    body: Body,
) -> Response {
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
    // A body naming another tenant's state is refused whole, before any of it is handled.
    if let Some(e) = events
        .iter()
        .flat_map(|e| &e.event.needs)
        .find_map(|r| who.may_name(Capability::Events, r).err())
    {
        c.metrics.events_refused.inc();
        return forbid(&c, Capability::Events, &e);
    }
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
    let mut out = c.handle_events_scoped(&events, true, who.narrowing()).await;
    if batch {
        Json(out).into_response()
    } else {
        Json(out.pop()).into_response()
    }
}

/// `GET /v1/placement` once authorized: where the event would run and what would move
/// (of the states `who` may name).
async fn placement(
    c: Arc<Coordinator>,
    who: &Principal,
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
    let mut out = c
        .handle_events_scoped(std::slice::from_ref(&e), false, who.narrowing())
        .await;
    Json(out.pop()).into_response()
}

/// The answer to any path the coordinator does not serve: 401 without the token, else 404.
pub fn fallback(c: Arc<Coordinator>) -> axum::routing::MethodRouter {
    axum::routing::any(move |headers: HeaderMap, uri: axum::http::Uri| {
        let c = c.clone();
        async move {
            if principal(&c, headers.get(axum::http::header::AUTHORIZATION)).is_err() {
                warn_throttled!(REFUSALS, "{} refused: missing or wrong token", uri.path());
                return unauthorized();
            }
            refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no such path: {}", uri.path()),
            )
        }
    })
}
