//! The predictive loop: an event arrives (`POST /v1/events`), the model predicts the states
//! the coming execution reads, placement picks the capacity (the event's own, else
//! state-aware among its key's two rendezvous choices), the planner weighs each prediction
//! against what that capacity holds and what is already moving to it, and the chosen states
//! are loaded there as predictive transfers (below on-demand ones, within the agent's
//! predictive bandwidth limit). A predicted state whose source has un-snapshotted changes
//! is snapshotted first by its watcher (see [`crate::watchers`]). The model learns from the
//! history records agents send back (`History` over gRPC) and can be replaced without a
//! restart ([`Brain::replace`]).
//!
//! The decision code is `prewarm-engine`'s, the same the replay simulator runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prewarm_core::{CapacityId, Event, HistoryRecord, ResourceId, Version};
use prewarm_engine::planner::{Target, Want};
use prewarm_engine::{Decision, Placement, Planner, PlannerConfig, place};
use prewarm_predict::{Context, Prediction, Predictor};
use prewarm_proto::wire::{Priority, TransferRequest, VersionSpec, version_spec};
use serde::{Deserialize, Serialize};

use crate::state::Cap;
use crate::{Coordinator, Fresh};

/// Predictions asked per event.
const TOP_K: usize = 5;

/// Longest wait for a watcher's snapshot before a predictive transfer of a dirty source.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One event as `POST /v1/events` takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// When it happened, Unix seconds (default: on arrival).
    #[serde(default)]
    pub ts: Option<f64>,
    /// The event.
    pub event: Event,
    /// The capacity that will run it, when the sender knows.
    #[serde(default)]
    pub capacity: Option<CapacityId>,
}

/// What the coordinator did with one event.
#[derive(Clone, Debug, Serialize)]
pub struct EventOutcome {
    /// Where the execution should run (`None`: no capacity attached).
    pub placement: Option<Placement>,
    /// The predictive transfers requested.
    pub transfers: Vec<Decision>,
}

/// The model and the planner.
pub struct Brain {
    predictor: Mutex<Box<dyn Predictor>>,
    planner: Planner,
    /// Latest version and size per resource (dropped when a new version is announced).
    sizes: Mutex<HashMap<ResourceId, (Version, u64)>>,
}

impl Brain {
    /// A brain around `predictor`.
    pub fn new(predictor: Box<dyn Predictor>, planner: PlannerConfig) -> Self {
        Self {
            predictor: Mutex::new(predictor),
            planner: Planner::new(planner),
            sizes: Mutex::default(),
        }
    }

    /// Swaps the model (a retrained one) without stopping.
    pub fn replace(&self, predictor: Box<dyn Predictor>) {
        *self.predictor.lock().expect("model lock poisoned") = predictor;
    }

    /// The model's name.
    pub fn model_name(&self) -> String {
        self.predictor
            .lock()
            .expect("model lock poisoned")
            .name()
            .to_owned()
    }

    /// Learns from completed executions.
    pub fn observe(&self, records: &[HistoryRecord]) {
        let mut p = self.predictor.lock().expect("model lock poisoned");
        p.observe_batch(records);
    }

    /// Keep-alive hints for the resources `records` read: resource → until (Unix ms).
    pub fn hints(&self, records: &[HistoryRecord]) -> HashMap<ResourceId, u64> {
        let p = self.predictor.lock().expect("model lock poisoned");
        let mut out: HashMap<ResourceId, u64> = HashMap::new();
        for r in records {
            for read in &r.reads {
                if let Some(k) = p.keep_alive(&read.resource) {
                    let until = ((r.ts + k.max(0.0)) * 1e3) as u64;
                    let e = out.entry(read.resource.clone()).or_default();
                    *e = (*e).max(until);
                }
            }
        }
        out
    }

    /// Forgets the cached version of `resource` (a new one was committed).
    pub fn forget(&self, resource: &ResourceId) {
        self.sizes
            .lock()
            .expect("sizes lock poisoned")
            .remove(resource);
    }
}

/// A capacity as the planner sees it.
struct View<'a> {
    cap: &'a Cap,
    moving: Vec<ResourceId>,
}

impl Target for View<'_> {
    fn held(&self, resource: &ResourceId) -> Option<Version> {
        self.cap.newest(resource)
    }
    fn in_flight(&self, resource: &ResourceId) -> bool {
        self.moving.contains(resource)
    }
    fn free_bytes(&self) -> u64 {
        let i = &self.cap.inventory;
        i.cache_budget.saturating_sub(i.cache_used)
    }
    fn evictable_bytes(&self) -> u64 {
        // Leases are the agent's to know; it refuses (and says so) when everything is leased.
        self.cap.inventory.cache_used
    }
}

impl Coordinator {
    /// Latest version and logical size of `resource` (from the store, then cached).
    async fn size_of(&self, brain: &Brain, resource: &ResourceId) -> Option<(Version, u64)> {
        if let Some(x) = brain
            .sizes
            .lock()
            .expect("sizes lock poisoned")
            .get(resource)
        {
            return Some(*x);
        }
        let m = self.store.resolve(resource, None).await.ok()?;
        let x = (m.state.version, m.logical_size);
        brain
            .sizes
            .lock()
            .expect("sizes lock poisoned")
            .insert(resource.clone(), x);
        Some(x)
    }

    /// Handles one event: predict, place, plan, and (when `dispatch`) start the transfers,
    /// not waiting for them. Without `dispatch` it only answers where the event would run
    /// and what would move (`GET /v1/placement`).
    pub async fn handle_event(self: &Arc<Self>, e: &EventIn, dispatch: bool) -> EventOutcome {
        self.handle_events(std::slice::from_ref(e), dispatch)
            .await
            .pop()
            .expect("one outcome per event")
    }

    /// [`Coordinator::handle_event`] for a batch, in order: the model predicts for all of
    /// them at once (a learned model on all cores), then each is placed and planned.
    pub async fn handle_events(
        self: &Arc<Self>,
        events: &[EventIn],
        dispatch: bool,
    ) -> Vec<EventOutcome> {
        let Some(brain) = self.brain.as_ref() else {
            return events
                .iter()
                .map(|e| EventOutcome {
                    placement: self.place_only(e),
                    transfers: Vec::new(),
                })
                .collect();
        };
        let now = prewarm_core::unix_now();
        let ctxs: Vec<Context<'_>> = events
            .iter()
            .map(|e| Context {
                ts: e.ts.unwrap_or(now),
                event: &e.event,
            })
            .collect();
        let all = {
            let mut p = brain.predictor.lock().expect("model lock poisoned");
            p.predict_batch(&ctxs, TOP_K)
        };
        let mut out = Vec::with_capacity(events.len());
        for (e, preds) in events.iter().zip(all) {
            out.push(self.decide(brain, e, preds, dispatch).await);
        }
        out
    }

    /// Places one predicted event and plans (and, with `dispatch`, starts) its transfers.
    async fn decide(
        self: &Arc<Self>,
        brain: &Brain,
        e: &EventIn,
        preds: Vec<Prediction>,
        dispatch: bool,
    ) -> EventOutcome {
        let mut wants = Vec::with_capacity(preds.len());
        for p in &preds {
            if let Some((latest, bytes)) = self.size_of(brain, &p.resource).await {
                wants.push(Want {
                    resource: p.resource.clone(),
                    probability: p.probability,
                    version: p.version,
                    latest,
                    bytes,
                });
            }
        }
        let predicted: Vec<(ResourceId, f64)> = wants
            .iter()
            .map(|w| (w.resource.clone(), w.probability))
            .collect();
        let (placement, decisions) = {
            let book = self.book.lock().expect("book lock poisoned");
            let attached = book.attached();
            let placement = place(
                &e.event.key,
                e.capacity.as_ref(),
                &attached,
                |c, r| book.caps.get(c).is_some_and(|c| c.newest(r).is_some()),
                &predicted,
            );
            let decisions = match placement.as_ref().and_then(|p| book.caps.get(&p.capacity)) {
                Some(cap) => {
                    let name = &placement.as_ref().expect("placed").capacity;
                    let moving: Vec<ResourceId> = book
                        .moving
                        .iter()
                        .filter(|((c, _), _)| c == name)
                        .map(|((_, r), _)| r.clone())
                        .collect();
                    let in_flight = book
                        .moving
                        .iter()
                        .filter(|((c, _), _)| c == name)
                        .map(|(_, b)| *b)
                        .sum();
                    brain.planner.plan(&wants, &View { cap, moving }, in_flight)
                }
                None => Vec::new(),
            };
            (placement, decisions)
        };
        if !dispatch {
            return EventOutcome {
                placement,
                transfers: decisions,
            };
        }
        if let Some(p) = &placement {
            for d in &decisions {
                self.start_predictive(&p.capacity, d);
            }
        }
        // Likely states whose source has changes not yet snapshotted (and that nothing moves
        // now, being held at the newest committed version): ask for a snapshot, so that the
        // new version reaches the holders (invalidation → delta refresh) before the execution.
        for w in &wants {
            let moving = decisions.iter().any(|d| d.resource == w.resource);
            if !moving
                && w.probability >= brain.planner.cfg.threshold
                && self.watchers.dirty(&w.resource) > 0
            {
                let (me, r) = (self.clone(), w.resource.clone());
                tokio::spawn(async move {
                    let f = me.watchers.fresh(&r, SNAPSHOT_WAIT).await;
                    me.metrics.snapshot_request(&me.registry, f.label());
                });
            }
        }
        self.metrics.events.inc();
        EventOutcome {
            placement,
            transfers: decisions,
        }
    }

    /// Placement alone (no model, or `GET /v1/placement`).
    pub fn place_only(&self, e: &EventIn) -> Option<Placement> {
        let attached = self.book.lock().expect("book lock poisoned").attached();
        place(
            &e.event.key,
            e.capacity.as_ref(),
            &attached,
            |_, _| false,
            &[],
        )
    }

    fn start_predictive(self: &Arc<Self>, capacity: &CapacityId, d: &Decision) {
        let key = (capacity.clone(), d.resource.clone());
        self.book
            .lock()
            .expect("book lock poisoned")
            .moving
            .insert(key.clone(), d.bytes);
        let req = TransferRequest {
            capacity: capacity.as_str().to_owned(),
            resource: d.resource.as_str().to_owned(),
            version: Some(VersionSpec {
                spec: Some(version_spec::Spec::Exact(d.version.get())),
            }),
            priority: Priority::Predictive as i32,
            timeout_ms: 0,
        };
        let me = self.clone();
        let (resource, planned) = (d.resource.clone(), d.version);
        tokio::spawn(async move {
            let mut req = req;
            // The source changed since its last snapshot: have its watcher take one and move
            // that version (on a timeout or a departed watcher, the newest committed one).
            if me.watchers.dirty(&resource) > 0 {
                let f = me.watchers.fresh(&resource, SNAPSHOT_WAIT).await;
                me.metrics.snapshot_request(&me.registry, f.label());
                if let Fresh::Snapshotted(v) = f
                    && v > planned
                {
                    req.version = Some(VersionSpec {
                        spec: Some(version_spec::Spec::Exact(v.get())),
                    });
                }
            }
            let ack = me.transfer(req).await;
            if !ack.ok {
                tracing::info!(
                    "predictive transfer of {} to {} failed: {}",
                    ack.resource,
                    ack.capacity,
                    ack.error
                );
            }
            me.book
                .lock()
                .expect("book lock poisoned")
                .moving
                .remove(&key);
        });
    }
}

/// Largest `POST /v1/events` body.
pub const MAX_EVENTS_BODY: usize = 4 << 20;
/// Most events in one batch.
pub const MAX_BATCH: usize = 10_000;

/// Why a `POST /v1/events` body was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Not JSON, an unknown field, an invalid id…
    #[error("{0}")]
    Malformed(String),
    /// More events than [`MAX_BATCH`].
    #[error("{0} events in one batch: at most {MAX_BATCH}")]
    TooMany(usize),
    /// A time that is not a finite, non-negative number.
    #[error("event {0}: ts must be finite and non-negative")]
    BadTime(usize),
}

/// Parses a body holding one event object or an array of them; all or nothing.
pub fn parse_events(body: &[u8]) -> Result<(Vec<EventIn>, bool), EventsError> {
    let batch = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    let events: Vec<EventIn> = if batch {
        serde_json::from_slice(body).map_err(|e| EventsError::Malformed(e.to_string()))?
    } else {
        vec![serde_json::from_slice(body).map_err(|e| EventsError::Malformed(e.to_string()))?]
    };
    if events.len() > MAX_BATCH {
        return Err(EventsError::TooMany(events.len()));
    }
    if let Some(i) = events
        .iter()
        .position(|e| e.ts.is_some_and(|t| !t.is_finite() || t < 0.0))
    {
        return Err(EventsError::BadTime(i));
    }
    Ok((events, batch))
}

impl Coordinator {
    /// Feeds the events of `records` (a history, time-ordered) through the predictive loop,
    /// `speed` times faster than recorded (0: as fast as possible), and lets the model
    /// observe each record after its event (as if its execution then reported back).
    /// Returns the events fed.
    pub async fn replay_events(self: &Arc<Self>, records: &[HistoryRecord], speed: f64) -> u64 {
        let Some(first) = records.first() else {
            return 0;
        };
        let t0 = tokio::time::Instant::now();
        let mut n = 0;
        for r in records {
            if speed > 0.0 {
                let at = (r.ts - first.ts).max(0.0) / speed;
                tokio::time::sleep_until(t0 + std::time::Duration::from_secs_f64(at)).await;
            }
            let e = EventIn {
                ts: Some(r.ts),
                event: r.event.clone(),
                capacity: r.capacity.clone(),
            };
            self.handle_event(&e, true).await;
            if let Some(b) = &self.brain {
                b.observe(std::slice::from_ref(r));
            }
            n += 1;
        }
        n
    }
}
