//! The operator's dashboard on the coordinator's HTTP port: `GET /ui` is one page (HTML,
//! CSS and script embedded in the binary: no CDN, works offline) that polls
//! `GET /v1/dashboard?offset=&limit=&filter=` every second and redraws: every capacity (paged,
//! 50 a page, filtered by name, with totals over all of them) with its states — version,
//! size, stale, leased, predicted and not yet read — transfers under way and recent ones
//! (predictive or on demand, bytes, duration, failures), warm-start rate, time-to-ready and
//! events per second over the last ten minutes ([`crate::pulse`]), the model with its live
//! prefetch precision and its champion/challenger rounds, and the watchers with their dirty
//! bytes.
//!
//! Same token rules as every other route: with a token, `/v1/dashboard` needs
//! `Authorization: Bearer <token>`; a browser opens `/ui?token=<token>` (or sends the header)
//! and the page passes the token on to its requests. Both need the `admin` capability (403
//! `forbidden` otherwise): the page names every tenant's states.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prewarm_core::{CapacityId, ResourceId};
use prewarm_proto::wire::{CapacityStatus, Inventory, Priority, TransferAck};
use serde::{Deserialize, Serialize};

use prewarm_transfer::Capability;

use crate::Coordinator;
use crate::http::{allowed, forbid, principal, refuse};
use crate::pulse::BUCKET_S;

/// The page.
const PAGE: &str = include_str!("ui/index.html");
/// Capacities per page by default, and at most.
const PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 500;

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        String::from("missing or wrong bearer token (open /ui?token=…)"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    filter: Option<String>,
}

/// `GET /ui` and `GET /v1/dashboard`, for `admin` tokens.
pub fn routes(c: Arc<Coordinator>) -> axum::Router {
    let c2 = c.clone();
    axum::Router::new()
        .route(
            "/ui",
            get(
                move |headers: HeaderMap, q: Result<Query<PageQuery>, QueryRejection>| {
                    let c = c.clone();
                    async move {
                        let from_query = q
                            .ok()
                            .and_then(|Query(q)| q.token)
                            .and_then(|t| HeaderValue::try_from(format!("Bearer {t}")).ok());
                        let auth = headers.get(header::AUTHORIZATION).cloned().or(from_query);
                        let Ok(who) = principal(&c, auth.as_ref()) else {
                            return unauthorized();
                        };
                        if let Err(e) = who.may(Capability::Admin) {
                            return forbid(&c, Capability::Admin, &e);
                        }
                        ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
                    }
                },
            ),
        )
        .route(
            "/v1/dashboard",
            get(
                move |headers: HeaderMap, q: Result<Query<ViewQuery>, QueryRejection>| {
                    let c = c2.clone();
                    async move {
                        if let Err(r) = allowed(&c, &headers, Capability::Admin) {
                            return *r;
                        }
                        match q {
                            Ok(Query(q)) => axum::Json(view(&c, &q)).into_response(),
                            Err(e) => refuse(StatusCode::BAD_REQUEST, "bad_query", e.body_text()),
                        }
                    }
                },
            ),
        )
}

/// What the page draws.
#[derive(Serialize)]
struct View {
    instance: String,
    now_unix_ms: u64,
    model: Option<ModelView>,
    totals: Totals,
    /// Capacities matching the filter (this page of them).
    capacities: Vec<CapView>,
    offset: usize,
    limit: usize,
    matched: usize,
    moving: Vec<MovingView>,
    recent: Vec<AckView>,
    bucket_s: f64,
    series: Vec<PointView>,
    prefetch: PrefetchView,
    watchers: Vec<WatcherView>,
}

#[derive(Serialize)]
struct ModelView {
    name: String,
    retraining: bool,
    rounds: u64,
    swaps: u64,
    champion_top5: f64,
    challenger_top5: f64,
    champion_log_loss: f64,
    challenger_log_loss: f64,
    last_error: String,
}

#[derive(Serialize, Default)]
struct Totals {
    capacities: usize,
    connected: usize,
    states: usize,
    bytes_held: u64,
    budget: u64,
}

#[derive(Serialize)]
struct CapView {
    name: String,
    connected: bool,
    used: u64,
    budget: u64,
    horizon_s: Option<f64>,
    states: Vec<StateView>,
    departed: Vec<String>,
}

#[derive(Serialize)]
struct StateView {
    resource: String,
    version: u64,
    bytes: u64,
    stale: bool,
    leased: bool,
    unread: bool,
}

#[derive(Serialize)]
struct MovingView {
    capacity: String,
    resource: String,
    version: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct AckView {
    capacity: String,
    resource: String,
    version: u64,
    ok: bool,
    predictive: bool,
    already_held: bool,
    state_bytes: u64,
    wire_bytes: u64,
    duration_ms: f64,
    error: String,
}

#[derive(Serialize)]
struct PointView {
    start_unix_s: f64,
    events_per_s: f64,
    executions: u64,
    warm_rate: Option<f64>,
    ttr_mean_ms: Option<f64>,
    ttr_max_ms: f64,
}

#[derive(Serialize)]
struct PrefetchView {
    delivered: u64,
    delivered_bytes: u64,
    used: u64,
    wasted: u64,
    wasted_bytes: u64,
    /// Of the delivered ones that were read or left, the share read.
    precision: Option<f64>,
}

#[derive(Serialize)]
struct WatcherView {
    resource: String,
    watcher: String,
    dirty_bytes: u64,
    version: u64,
}

fn view(c: &Coordinator, q: &ViewQuery) -> View {
    let status = c.status();
    let limit = q.limit.unwrap_or(PAGE_SIZE).clamp(1, MAX_PAGE_SIZE);
    let filter = q.filter.as_deref().unwrap_or("");
    let matching: Vec<&CapacityStatus> = status
        .capacities
        .iter()
        .filter(|s| s.capacity.contains(filter))
        .collect();
    let (buckets, prefetch) = c.pulse.read();
    View {
        instance: status.coordinator_instance.clone(),
        now_unix_ms: c.clock.now_ms(),
        model: status.model.as_ref().map(|m| ModelView {
            name: m.name.clone(),
            retraining: m.retraining,
            rounds: m.rounds,
            swaps: m.swaps,
            champion_top5: m.champion_top5,
            challenger_top5: m.challenger_top5,
            champion_log_loss: m.champion_log_loss,
            challenger_log_loss: m.challenger_log_loss,
            last_error: m.last_error.clone(),
        }),
        totals: totals(&status.capacities),
        capacities: matching
            .iter()
            .skip(q.offset)
            .take(limit)
            .map(|s| cap_view(c, s))
            .collect(),
        offset: q.offset,
        limit,
        matched: matching.len(),
        moving: c
            .capacities
            .under_way()
            .into_iter()
            .map(|(cap, r, v, bytes)| MovingView {
                capacity: cap.as_str().to_owned(),
                resource: r.as_str().to_owned(),
                version: v.get(),
                bytes,
            })
            .collect(),
        recent: status.recent.iter().take(50).map(ack_view).collect(),
        bucket_s: BUCKET_S,
        series: buckets
            .iter()
            .map(|b| PointView {
                start_unix_s: b.start,
                events_per_s: b.events as f64 / BUCKET_S,
                executions: b.executions,
                warm_rate: (b.executions > 0).then(|| b.warm as f64 / b.executions as f64),
                ttr_mean_ms: (b.executions > 0).then(|| b.ttr_ms_sum / b.executions as f64),
                ttr_max_ms: b.ttr_ms_max,
            })
            .collect(),
        prefetch: PrefetchView {
            delivered: prefetch.delivered,
            delivered_bytes: prefetch.delivered_bytes,
            used: prefetch.used,
            wasted: prefetch.wasted,
            wasted_bytes: prefetch.wasted_bytes,
            precision: (prefetch.used + prefetch.wasted > 0)
                .then(|| prefetch.used as f64 / (prefetch.used + prefetch.wasted) as f64),
        },
        watchers: c
            .watchers
            .list()
            .into_iter()
            .map(|(r, w, dirty_bytes, version)| WatcherView {
                resource: r.as_str().to_owned(),
                watcher: w,
                dirty_bytes,
                version,
            })
            .collect(),
    }
}

fn totals(caps: &[CapacityStatus]) -> Totals {
    let mut t = Totals {
        capacities: caps.len(),
        ..Totals::default()
    };
    for s in caps {
        t.connected += usize::from(s.connected);
        if let Some(inv) = &s.inventory {
            t.states += inv.held.len();
            t.bytes_held += inv.cache_used;
            t.budget += inv.cache_budget;
        }
    }
    t
}

fn cap_view(c: &Coordinator, s: &CapacityStatus) -> CapView {
    let inv = s.inventory.clone().unwrap_or_default();
    let cap = CapacityId::new(s.capacity.clone()).ok();
    CapView {
        name: s.capacity.clone(),
        connected: s.connected,
        used: inv.cache_used,
        budget: inv.cache_budget,
        horizon_s: inv.horizon_s,
        states: inv
            .held
            .iter()
            .map(|h| StateView {
                unread: match (&cap, ResourceId::new(h.resource.clone())) {
                    (Some(cap), Ok(r)) => c.pulse.unread(cap, &r),
                    _ => false,
                },
                resource: h.resource.clone(),
                version: h.version,
                bytes: h.bytes,
                stale: h.stale,
                leased: h.leased,
            })
            .collect(),
        departed: inv
            .departed
            .iter()
            .take(5)
            .map(|d| format!("{}: {}", d.resource, d.reason))
            .collect(),
    }
}

fn ack_view(a: &TransferAck) -> AckView {
    AckView {
        capacity: a.capacity.clone(),
        resource: a.resource.clone(),
        version: a.version,
        ok: a.ok,
        predictive: a.priority == Priority::Predictive as i32,
        already_held: a.already_held,
        state_bytes: a.state_bytes,
        wire_bytes: a.wire_bytes,
        duration_ms: a.duration_us as f64 / 1e3,
        error: a.error.clone(),
    }
}

/// The resources an inventory holds (for [`crate::pulse::Pulse::holds`]).
pub(crate) fn held_set(inv: &Inventory) -> HashSet<ResourceId> {
    inv.held
        .iter()
        .filter_map(|h| ResourceId::new(h.resource.clone()).ok())
        .collect()
}
