//! The application's HTTP API on the agent:
//!
//! - `GET /v1/states/{resource}?min_version=N&timeout_ms=T&key=K&type=E&max_stale_ms=S&lease_ms=L`
//!   → `{resource, version, path, hit, wait_ms, lease, lease_ms}`; errors are
//!   `{error, message}` with 400 (invalid id or parameter), 401 (token), 404 (unknown
//!   resource or version), 504 (not ready in time; the fetch continues), 507 (cache full of
//!   leased states), 502/503 (source), 503 `overloaded` with `Retry-After` (the agent holds
//!   `--max-leases` leases: nothing was leased; counted in `prewarm_agent_ensure_shed_total`). The answer's state is leased (kept from eviction) for
//!   `lease_ms` (default: the agent's `--lease`; at most [`MAX_LEASE_MS`]); `lease` is the
//!   lease's id.
//! - `PUT /v1/leases/{id}?lease_ms=L` → `{lease, lease_ms}`: the lease now ends `L` ms from
//!   now (default: `--lease`). `DELETE /v1/leases/{id}` → 204: released now. Both answer
//!   404 `unknown_lease` once the lease expired or was released.
//! - `GET /v1/inventory` → what the capacity holds (`{capacity, cache_used, cache_budget,
//!   states: [{resource, version, bytes, path, stale, leased}]}`).
//! - `GET /metrics` → Prometheus text.
//!
//! On a non-loopback listener every request needs `authorization: Bearer <token>` (401
//! without one that the agent's keys know). A tenant-scoped token (`--tokens FILE`, see
//! `prewarm_transfer::tokens`) needs the `ensure` capability for states, leases and the
//! inventory, and `admin` for `/metrics`; it may name only resources inside its prefixes:
//! any other answers 403 `forbidden`, the same whether the state exists or not; a lease on
//! another tenant's state answers 404 like an unknown one, and the inventory lists its own
//! states only. Refusals are counted in `prewarm_agent_forbidden_total{route}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use prewarm_core::{ResourceId, Version};
use prewarm_transfer::{Capability, DataError, Denied, Keys, Principal};
use serde::Deserialize;

use crate::agent::{Agent, LoadError};
use crate::ensure::{EnsureError, EnsureRequest};
use crate::space::SpaceError;

/// Longest `timeout_ms` accepted (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest `lease_ms` accepted (1 hour; renew for longer).
pub const MAX_LEASE_MS: u64 = 3_600_000;

#[derive(Clone)]
struct Ctx {
    agent: Arc<Agent>,
    keys: Arc<Keys>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnsureQuery {
    min_version: Option<u64>,
    timeout_ms: Option<u64>,
    key: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    max_stale_ms: Option<u64>,
    lease_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseQuery {
    lease_ms: Option<u64>,
}

/// The router; requests are checked with `keys` (the shared token and tenant-scoped ones;
/// [`Keys::open`]: no check, for loopback listeners).
pub fn router(agent: Arc<Agent>, keys: Arc<Keys>) -> Router {
    Router::new()
        .route("/v1/states/{*resource}", get(ensure))
        .route("/v1/leases/{id}", put(renew).delete(release))
        .route("/v1/inventory", get(inventory))
        .route("/metrics", get(metrics))
        .with_state(Ctx { agent, keys })
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(prewarm_api::ApiError::new(kind, message)),
    )
        .into_response()
}

/// Who sent the request, or a 401.
fn authorized(ctx: &Ctx, headers: &HeaderMap) -> Result<Arc<Principal>, Box<Response>> {
    let presented = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    ctx.keys.authenticate_bearer(presented).map_err(|e| {
        tracing::warn!("ensure API: request without a valid token refused");
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            e.to_string(),
        ))
    })
}

/// Who sent the request if it holds `cap`; else a 401 or 403.
fn allowed(
    ctx: &Ctx,
    headers: &HeaderMap,
    cap: Capability,
) -> Result<Arc<Principal>, Box<Response>> {
    let who = authorized(ctx, headers)?;
    who.may(cap).map_err(|e| forbidden(ctx, cap, &e))?;
    Ok(who)
}

/// A 403 for `e`, counted by the capability the route needs.
fn forbidden(ctx: &Ctx, cap: Capability, e: &Denied) -> Box<Response> {
    ctx.agent
        .registry
        .counter(
            "prewarm_agent_forbidden_total",
            "Requests refused for a token's capabilities or resource prefixes, by the capability the route needs.",
            &[("route", cap.name())],
        )
        .inc();
    tracing::info!("ensure API: {e}");
    Box::new(error(StatusCode::FORBIDDEN, "forbidden", e.to_string()))
}

async fn ensure(
    State(ctx): State<Ctx>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EnsureQuery>, QueryRejection>,
) -> Response {
    let who = match allowed(&ctx, &headers, Capability::Ensure) {
        Ok(who) => who,
        Err(r) => return *r,
    };
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    let resource = match ResourceId::new(resource) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_resource", e.to_string()),
    };
    // Before anything looks at the state: the answer is the same whether it exists or not.
    if let Err(e) = who.may_name(Capability::Ensure, &resource) {
        return *forbidden(&ctx, Capability::Ensure, &e);
    }
    let min_version = match q.min_version {
        None => None,
        Some(n) => match Version::new(n) {
            Some(v) => Some(v),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "min_version must be ≥ 1".into(),
                );
            }
        },
    };
    for (what, v) in [("key", &q.key), ("type", &q.kind)] {
        if v.as_ref()
            .is_some_and(|v| v.len() > prewarm_core::MAX_KEY_LEN)
        {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{what} is over {} bytes", prewarm_core::MAX_KEY_LEN),
            );
        }
    }
    let lease = match lease_for(&ctx, q.lease_ms) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let timeout_ms = q.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms > MAX_TIMEOUT_MS {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("timeout_ms {timeout_ms} is over the limit of {MAX_TIMEOUT_MS}"),
        );
    }
    let req = EnsureRequest {
        resource,
        min_version,
        timeout: Duration::from_millis(timeout_ms),
        key: q.key,
        kind: q.kind,
        max_stale: q.max_stale_ms.map(Duration::from_millis),
    };
    match ctx.agent.ensure_leased(req, lease).await {
        Ok(e) => axum::Json(e).into_response(),
        Err(e) => {
            let (status, kind) = match &e {
                EnsureError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                EnsureError::Overloaded { retry_after_s, .. } => {
                    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string());
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, (*retry_after_s).into());
                    return r;
                }
                EnsureError::Load(l) => match l {
                    LoadError::Data(DataError::UnknownState(_)) | LoadError::TooOld { .. } => {
                        (StatusCode::NOT_FOUND, "unknown_state")
                    }
                    LoadError::Space(SpaceError::Full { .. }) => {
                        (StatusCode::INSUFFICIENT_STORAGE, "cache_full")
                    }
                    LoadError::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
                    LoadError::NoSource => (StatusCode::SERVICE_UNAVAILABLE, "no_source"),
                    other => (StatusCode::BAD_GATEWAY, other.reason()),
                },
            };
            // A local file error names the agent's paths: the log has it, the client a summary.
            let message = if kind == "io" {
                "the agent could not write the state to its cache (its log says why)".to_owned()
            } else {
                e.to_string()
            };
            error(status, kind, message)
        }
    }
}

/// The lease `lease_ms` asks for (the agent's default when `None`), or a 400.
fn lease_for(ctx: &Ctx, lease_ms: Option<u64>) -> Result<Duration, Box<Response>> {
    match lease_ms {
        None => Ok(ctx.agent.config().lease),
        Some(ms @ 1..=MAX_LEASE_MS) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("lease_ms {ms} is not within 1..={MAX_LEASE_MS}"),
        ))),
    }
}

/// A lease id from the path, or a 400.
fn lease_id(id: &str) -> Result<u64, Box<Response>> {
    id.parse().map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{id:?} is not a lease id"),
        ))
    })
}

fn unknown_lease(id: u64) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "unknown_lease",
        format!("lease {id} expired or was released"),
    )
}

async fn renew(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<LeaseQuery>, QueryRejection>,
) -> Response {
    let checked = allowed(&ctx, &headers, Capability::Ensure).and_then(|who| {
        let id = lease_id(&id)?;
        match query {
            Ok(Query(q)) => lease_for(&ctx, q.lease_ms).map(|d| (who, id, d)),
            Err(e) => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.body_text(),
            ))),
        }
    });
    let (who, id, d) = match checked {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !ctx.agent.renew_lease_within(id, d, who.narrowing()) {
        return unknown_lease(id);
    }
    axum::Json(prewarm_api::Lease {
        lease: id,
        lease_ms: d.as_millis() as u64,
    })
    .into_response()
}

async fn release(State(ctx): State<Ctx>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let checked = allowed(&ctx, &headers, Capability::Ensure)
        .and_then(|who| lease_id(&id).map(|id| (who, id)));
    let (who, id) = match checked {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !ctx.agent.release_lease_within(id, who.narrowing()) {
        return unknown_lease(id);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn inventory(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    // The application's tokens (ensure) see their own states; an operator's (admin) all.
    let who = match authorized(&ctx, &headers).and_then(|who| match who.may(Capability::Admin) {
        Ok(()) => Ok(who),
        Err(_) => allowed(&ctx, &headers, Capability::Ensure),
    }) {
        Ok(who) => who,
        Err(r) => return *r,
    };
    let (held, used, budget) = ctx.agent.inventory();
    let states = held
        .iter()
        .filter(|(h, _)| who.scope.admits(&h.resource))
        .map(|(h, stale)| prewarm_api::HeldState {
            resource: h.resource.as_str().to_owned(),
            version: h.version.get(),
            bytes: h.bytes,
            path: h.path.clone(),
            stale: *stale,
            leased: ctx.agent.leased(&h.resource, h.version),
        })
        .collect();
    axum::Json(prewarm_api::InventoryAnswer {
        capacity: ctx.agent.config().name.as_str().to_owned(),
        cache_used: used,
        cache_budget: budget,
        states,
        departed: ctx
            .agent
            .departures(64)
            .into_iter()
            .filter(|(r, _)| who.scope.admits(r))
            .map(|(r, d)| prewarm_api::DepartedState {
                resource: r.as_str().to_owned(),
                version: d.version().map(prewarm_core::Version::get),
                kind: d.kind().to_owned(),
                reason: d.cause(),
                unix_ms: d.unix_ms,
            })
            .collect(),
    })
    .into_response()
}

async fn metrics(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(r) = allowed(&ctx, &headers, Capability::Admin) {
        return *r;
    }
    (
        [(header::CONTENT_TYPE, prewarm_metrics::CONTENT_TYPE)],
        ctx.agent.registry.render(),
    )
        .into_response()
}
