//! The predictive loop: an event arrives (`POST /v1/events`, NATS or a replayed history), and
//! the decision engine (`prewarm-engine`, the same the replay simulator runs) predicts the
//! states the coming execution reads, places it (among all holders, bounded load), prices
//! the prefetches for that capacity and names the states it expects to be read there. The
//! chosen states are loaded as predictive transfers (below on-demand ones, within the agent's
//! predictive bandwidth limit) and the expectations go to the agent as retention hints. A
//! predicted state whose source has un-snapshotted changes is snapshotted first by its
//! watcher (see [`crate::watchers`]). The engine learns from the history records agents send
//! back (`History` over gRPC), answers them with retention hints (keep-alive, next-use
//! curve) and may ask for pre-warms; the model can be replaced without a restart
//! ([`Brain::replace`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use prewarm_core::{CapacityId, HistoryRecord, ResourceId, Scope, Version};
use prewarm_engine::{
    Decided, Decision, Engine, EngineConfig, EventView, HintFor, Placement, Prewarm, Rule,
};
use prewarm_proto::wire::{Command, Priority, command};

use crate::fleet::BookFleet;
use crate::{Capacities, Coordinator, Fresh};

/// Longest wait for a watcher's snapshot before a predictive transfer of a dirty source.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub use prewarm_api::{EventIn, EventOutcome};

/// The decision engine and what the coordinator caches for it.
pub struct Brain {
    engine: Mutex<Engine>,
    /// Latest version and size per resource (dropped when a new version is announced).
    sizes: Mutex<HashMap<ResourceId, (Version, u64)>>,
    /// The newest history records, for retraining (at most `keep`; 0: none kept).
    recent: Mutex<(usize, VecDeque<HistoryRecord>)>,
    /// The serving model's retraining rounds (see [`crate::retrain`]).
    pub(crate) model: Mutex<crate::retrain::ModelReport>,
}

impl Brain {
    /// A brain around an engine configured by `cfg`, with `predictor` (none: placement,
    /// eviction and keep-alive only).
    pub fn new(cfg: EngineConfig, predictor: Option<Box<dyn prewarm_core::Predictor>>) -> Self {
        Self {
            engine: Mutex::new(Engine::new(cfg, predictor)),
            sizes: Mutex::default(),
            recent: Mutex::default(),
            model: Mutex::default(),
        }
    }

    /// Keeps the newest `records` history records for retraining.
    pub fn keep_history(&self, records: usize) {
        let mut r = self.recent.lock().expect("history lock poisoned");
        r.0 = records;
        let over = r.1.len().saturating_sub(records);
        r.1.drain(..over);
    }

    /// The kept history, oldest first.
    pub fn recent_history(&self) -> Vec<HistoryRecord> {
        let r = self.recent.lock().expect("history lock poisoned");
        r.1.iter().cloned().collect()
    }

    fn remember(&self, records: &[HistoryRecord]) {
        let mut r = self.recent.lock().expect("history lock poisoned");
        if r.0 == 0 {
            return;
        }
        r.1.extend(records.iter().cloned());
        let over = r.1.len().saturating_sub(r.0);
        r.1.drain(..over);
    }

    /// Swaps the model (a retrained one) without stopping.
    pub fn replace(&self, predictor: Box<dyn prewarm_core::Predictor>) {
        self.engine
            .lock()
            .expect("engine lock poisoned")
            .replace_model(predictor);
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        self.engine
            .lock()
            .expect("engine lock poisoned")
            .config()
            .clone()
    }

    /// The model's name.
    pub fn model_name(&self) -> String {
        self.engine
            .lock()
            .expect("engine lock poisoned")
            .model_name()
            .to_owned()
    }

    /// The eviction rule agents are told to use.
    pub fn rule(&self) -> Rule {
        self.engine
            .lock()
            .expect("engine lock poisoned")
            .config()
            .rule
    }

    /// Learns from history with no capacity to answer (what came before this process).
    pub fn learn(&self, records: &[HistoryRecord]) {
        self.engine
            .lock()
            .expect("engine lock poisoned")
            .learn(records);
        self.remember(records);
    }

    /// Latest version and logical size of `resource` (from the store, then cached).
    async fn size_of(
        &self,
        store: &prewarm_store::Store,
        resource: &ResourceId,
    ) -> Option<(Version, u64)> {
        if let Some(x) = self
            .sizes
            .lock()
            .expect("sizes lock poisoned")
            .get(resource)
        {
            return Some(*x);
        }
        let m = store.resolve(resource, None).await.ok()?;
        let x = (m.state.version, m.logical_size);
        self.sizes
            .lock()
            .expect("sizes lock poisoned")
            .insert(resource.clone(), x);
        Some(x)
    }

    /// Forgets the cached version of `resource` (a new one was committed).
    pub fn forget(&self, resource: &ResourceId) {
        self.sizes
            .lock()
            .expect("sizes lock poisoned")
            .remove(resource);
    }
}

/// A retention hint as the command that carries it.
fn retain_command(h: &HintFor) -> Command {
    Command {
        command: Some(command::Command::Retain(prewarm_api::retain_of(
            &h.resource,
            &h.hint,
        ))),
    }
}

impl Coordinator {
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
        self.handle_events_scoped(events, dispatch, None).await
    }

    /// [`Coordinator::handle_events`] for a sender that may name `scope`'s states only (a
    /// tenant's token): predictions outside it are dropped before anything is placed,
    /// planned, kept or snapshotted for these events (`None`: every state).
    pub async fn handle_events_scoped(
        self: &Arc<Self>,
        events: &[EventIn],
        dispatch: bool,
        scope: Option<&Scope>,
    ) -> Vec<EventOutcome> {
        if dispatch {
            self.pulse.events(events.len(), self.clock.now());
        }
        let Some(brain) = self.brain.as_ref() else {
            return events
                .iter()
                .map(|e| EventOutcome {
                    placement: self.place_only(e),
                    transfers: Vec::new(),
                })
                .collect();
        };
        let now = self.clock.now();
        let views: Vec<EventView<'_>> = events
            .iter()
            .map(|e| EventView {
                ts: e.ts.unwrap_or(now),
                event: &e.event,
                capacity: e.capacity.as_ref(),
                scope,
            })
            .collect();
        let all = brain
            .engine
            .lock()
            .expect("engine lock poisoned")
            .predict(&views);
        let mut out = Vec::with_capacity(events.len());
        for (v, mut preds) in views.iter().zip(all) {
            preds.retain(|p| v.admits(&p.resource));
            out.push(self.decide(brain, v, &preds, dispatch).await);
        }
        out
    }

    /// Places one predicted event and plans (and, with `dispatch`, starts) its transfers.
    async fn decide(
        self: &Arc<Self>,
        brain: &Brain,
        v: &EventView<'_>,
        preds: &[prewarm_core::Prediction],
        dispatch: bool,
    ) -> EventOutcome {
        let mut catalog: HashMap<ResourceId, (Version, u64)> = HashMap::new();
        for r in v
            .event
            .needs
            .iter()
            .chain(preds.iter().map(|p| &p.resource))
        {
            if let Some(x) = brain.size_of(self.transfers.store(), r).await {
                catalog.insert(r.clone(), x);
            }
        }
        let d: Decided = {
            let mut engine = brain.engine.lock().expect("engine lock poisoned");
            let mut book = self.capacities.lock();
            let d = if dispatch {
                engine.decide(v, preds, &catalog, &BookFleet(&book), v.ts)
            } else {
                engine.preview(v, preds, &catalog, &BookFleet(&book), v.ts)
            };
            if dispatch {
                Capacities::note_hints(&mut book, &d.hints);
            }
            d
        };
        if !dispatch {
            return EventOutcome {
                placement: d.placement,
                transfers: d.transfers,
            };
        }
        // Hints before loads: the agent applies them in order, so what the execution will
        // read is kept for it while the prefetches make room (as the engine decided).
        self.send_hints(&d.hints).await;
        if let Some(p) = &d.placement {
            for t in &d.transfers {
                self.start_predictive(&p.capacity, t);
            }
        }
        // Likely states whose source has changes not yet snapshotted (and that nothing moves
        // now, being held at the newest committed version): ask for a snapshot, so that the
        // new version reaches the holders (invalidation → delta refresh) before the execution.
        for p in preds {
            let moving = d.transfers.iter().any(|t| t.resource == p.resource);
            if !moving && p.probability > 0.0 && self.watchers.dirty(&p.resource) > 0 {
                let (me, r) = (self.clone(), p.resource.clone());
                tokio::spawn(async move {
                    let f = me.watchers.fresh(&r, SNAPSHOT_WAIT).await;
                    me.metrics.snapshot_request(&me.registry, f.label());
                });
            }
        }
        self.metrics.events.inc();
        EventOutcome {
            placement: d.placement,
            transfers: d.transfers,
        }
    }

    /// Sends retention hints to their capacities (dropped for a departed one).
    pub(crate) async fn send_hints(&self, hints: &[HintFor]) {
        for h in hints {
            if let Some(tx) = self.capacities.command_tx(&h.capacity) {
                let _ = tx.send(Ok(retain_command(h))).await;
                self.metrics.hints.inc();
            }
        }
    }

    /// Learns from records a capacity reported: the engine observes them, the mirror of that
    /// capacity's eviction book sees the uses, and the hints (and any pre-warms) go out.
    pub(crate) async fn observe(self: &Arc<Self>, brain: &Brain, records: &[HistoryRecord]) {
        brain.remember(records);
        let obs = {
            let mut engine = brain.engine.lock().expect("engine lock poisoned");
            engine.learn(records);
            let mut book = self.capacities.lock();
            for r in records {
                // A miss's state arrived for that use (the agent counted it then); a hit is
                // one more use.
                let missed = r.event.attrs.get("hit") == Some(&serde_json::Value::Bool(false));
                if let Some(cap) = r.capacity.as_ref().and_then(|c| book.caps.get_mut(c))
                    && !missed
                {
                    for rd in &r.reads {
                        cap.cache.touch(&rd.resource, r.ts);
                    }
                }
            }
            let mut obs = engine.hints_for(records, &BookFleet(&book));
            obs.prewarms
                .extend(engine.ahead(records, &BookFleet(&book)));
            Capacities::note_hints(&mut book, &obs.hints);
            obs
        };
        self.send_hints(&obs.hints).await;
        for pw in obs.prewarms {
            let me = self.clone();
            tokio::spawn(async move { me.prewarm_later(pw).await });
        }
    }

    /// Carries out a pre-warm when it is due.
    async fn prewarm_later(self: Arc<Self>, pw: Prewarm) {
        let wait = (pw.at - self.clock.now()).max(0.0);
        tokio::time::sleep(std::time::Duration::from_secs_f64(wait.min(1e7))).await;
        let Some(brain) = self.brain.as_ref() else {
            return;
        };
        let mut catalog = HashMap::new();
        if let Some(x) = brain.size_of(self.transfers.store(), &pw.resource).await {
            catalog.insert(pw.resource.clone(), x);
        }
        let done = {
            let mut engine = brain.engine.lock().expect("engine lock poisoned");
            let book = self.capacities.lock();
            engine.prewarm(&pw, &catalog, &BookFleet(&book), self.clock.now())
        };
        if let Some((d, h)) = done {
            self.start_predictive(&pw.capacity, &d);
            self.send_hints(&[h]).await;
        }
    }

    /// Placement alone (no engine, or `GET /v1/placement`).
    pub fn place_only(&self, e: &EventIn) -> Option<Placement> {
        let attached = self.capacities.attached();
        prewarm_engine::place(
            &e.event.key,
            true,
            e.capacity.as_ref(),
            &attached,
            &prewarm_engine::Holders::default(),
            &[],
            &prewarm_engine::Loads::default(),
        )
    }

    fn start_predictive(self: &Arc<Self>, capacity: &CapacityId, d: &Decision) {
        self.capacities
            .moving(capacity, &d.resource, d.version, d.bytes);
        let mut t = crate::transfers::TypedTransfer {
            capacity: capacity.clone(),
            resource: d.resource.clone(),
            version: d.version,
            exact: true,
            priority: Priority::Predictive,
            timeout: crate::transfers::DEFAULT_TRANSFER_TIMEOUT,
        };
        let me = self.clone();
        tokio::spawn(async move {
            // The source changed since its last snapshot: have its watcher take one and move
            // that version (on a timeout or a departed watcher, the newest committed one).
            if me.watchers.dirty(&t.resource) > 0 {
                let f = me.watchers.fresh(&t.resource, SNAPSHOT_WAIT).await;
                me.metrics.snapshot_request(&me.registry, f.label());
                if let Fresh::Snapshotted(v) = f
                    && v > t.version
                {
                    t.version = v;
                }
            }
            let ack = me.transfer_typed(&t).await;
            if !ack.ok {
                tracing::info!(
                    "predictive transfer of {} to {} failed: {}",
                    ack.resource,
                    ack.capacity,
                    ack.error
                );
            }
            me.capacities.moved(&t.capacity, &t.resource);
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
    /// A key or type too long, or another invalid field.
    #[error("event {0}: {1}")]
    Invalid(usize, String),
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
    if let Some((i, e)) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| e.event.validate().err().map(|e| (i, e)))
    {
        return Err(EventsError::Invalid(i, e.to_string()));
    }
    Ok((events, batch))
}
