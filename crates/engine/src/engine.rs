//! The decision engine: the one place where an event becomes decisions. The coordinator, the
//! replay simulator and `bench coordinator` each hold an [`Engine`] and call it the same way:
//!
//! 1. [`Engine::predict`] — the model's top-k for a batch of events (no-op without a model);
//! 2. [`Engine::decide`] — per event: the states it needs (named ones for certain, predicted
//!    ones with their probabilities), placement among all holders under a load bound, the
//!    priced prefetches for the chosen capacity, and retention hints marking the states the
//!    execution is expected to read there;
//! 3. [`Engine::observe`] — completed executions (the history agents report): the model and
//!    the next-use estimates learn, and every state read gets a retention hint (its keep-alive
//!    and next-use curve) on the capacity that read it; Azure-style windows may ask for a
//!    pre-warm later ([`Prewarm`], carried out through [`Engine::prewarm`]).
//!
//! The fleet is read through [`Fleet`] (holdings, in-flight transfers, budgets, each
//! capacity's eviction rule) and the store through [`Catalog`]; time is passed in. Nothing
//! here does IO, so a replay runs exactly what production runs.

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{
    CapacityId, Context, Event, HistoryRecord, Prediction, Predictor, ResourceId, Scope, Version,
    VersionPolicy,
};
use serde::Serialize;

use crate::affinity::Affinity;
use crate::cache::{Expected, Hint, Rule};
use crate::calibrate::Calibration;
use crate::nextuse::Demand;
use crate::nextuse_curve::Curve;
use crate::placement::{Holders, Loads, Placement, place_within};
use crate::planner::{Decision, Planner, PlannerConfig, Target, Want};

/// How long a held state is kept after a use while there is room.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// Dropped when its last use ends.
    Drop,
    /// This many seconds after each use (the classic fixed keep-alive); `INFINITY`: until
    /// pressure.
    Fixed(f64),
    /// While holding is worth its memory price (until pressure when the price is 0).
    Priced,
    /// The model's windows (Azure's hybrid histogram); this many seconds where it has none.
    Windows(f64),
    /// The known next use (the oracle): until pressure, dropped when never used again.
    Known,
}

/// The rules of the policy called `policy`: the recency baselines (`none`: dropped after
/// use; `lru`, `s3fifo`, `gdsf`: kept for `keep_alive_s`, `INFINITY` meaning until
/// pressure) fetch on demand; `histogram` keeps by Azure's windows; `oracle` and `belady`
/// (the oracle's eviction alone) by the known next uses; any other name is a model, evicting by next-use value and keeping while
/// holding is worth its memory price.
pub fn rules_for(policy: &str, keep_alive_s: f64) -> (Rule, Keep) {
    match policy {
        "none" => (Rule::Lru, Keep::Drop),
        "lru" => (Rule::Lru, Keep::Fixed(keep_alive_s)),
        "s3fifo" => (Rule::S3Fifo, Keep::Fixed(keep_alive_s)),
        "gdsf" => (Rule::Gdsf, Keep::Fixed(keep_alive_s)),
        "histogram" => (Rule::Lru, Keep::Windows(keep_alive_s)),
        "oracle" | "belady" => (Rule::Belady, Keep::Known),
        _ => (Rule::Value, Keep::Priced),
    }
}

/// Whether the policy called `policy` runs without a model.
pub fn model_free(policy: &str) -> bool {
    matches!(policy, "none" | "lru" | "s3fifo" | "gdsf")
}

/// Engine settings.
#[derive(Clone, Debug, Serialize)]
pub struct EngineConfig {
    /// The planner's settings.
    pub planner: PlannerConfig,
    /// Predictions asked per event.
    pub top_k: usize,
    /// The eviction rule capacities use (the engine prices displacement with it).
    pub rule: Rule,
    /// The keep-alive rule.
    pub keep: Keep,
    /// Resources whose use statistics are kept (least recently used forgotten beyond).
    pub max_tracked: usize,
    /// Plan with the model's probabilities calibrated online ([`crate::calibrate`]) rather
    /// than as the model states them. Off by default: on the shared traces it moved warm
    /// starts by −1.5 to +0.2 points (BENCHMARKS.md, "Calibration").
    pub calibrate: bool,
    /// Offer each state just read to one more capacity, priced by the planner with the
    /// calibrated chance it is used there ([`crate::spread`]); model-driven policies only.
    /// Off by default: it raised warm starts where caches have room (World Cup 64 MiB
    /// 98.0 → 99.1%) and lowered them under pressure, at up to 2× the bytes
    /// (BENCHMARKS.md, "Spreading").
    pub spread: bool,
    /// After each execution, pre-warm what the model expects the key's *next* execution to
    /// read ([`Predictor::predict_next`]) on the capacity that ran it, each priced by the
    /// planner with the model's probability when due ([`Engine::ahead`]): the lever when
    /// events name their states (placement routes by the name, so only what comes next is
    /// left to predict) or arrive with no lead. Off by default (BENCHMARKS.md, "Named
    /// states and pre-warming ahead").
    pub ahead: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            planner: PlannerConfig::default(),
            top_k: 5,
            rule: Rule::Value,
            keep: Keep::Priced,
            max_tracked: 1 << 20,
            calibrate: false,
            spread: false,
            ahead: false,
        }
    }
}

/// A state held by, or on its way to, a capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// Its version.
    pub version: Version,
    /// Installed (else still moving).
    pub ready: bool,
}

/// What the engine reads of the fleet.
pub trait Fleet {
    /// Attached capacities, sorted.
    fn capacities(&self) -> &[CapacityId];
    /// A number that changes whenever [`Fleet::capacities`] does (`None`: the fleet keeps
    /// none; placement then ranks every capacity for each event it homes).
    fn capacities_epoch(&self) -> Option<u64> {
        None
    }
    /// Appends to `out` the attached capacities holding or receiving a version of `r` at
    /// least `min`, as indices into [`Fleet::capacities`] (placement compares them as
    /// integers, not ids; one buffer serves all of a decision's candidates).
    fn holders_into(&self, r: &ResourceId, min: Version, out: &mut Vec<usize>);
    /// [`Fleet::holders_into`] as a list of its own.
    fn holders(&self, r: &ResourceId, min: Version) -> Vec<usize> {
        let mut out = Vec::new();
        self.holders_into(r, min, &mut out);
        out
    }
    /// How many [`Fleet::holders`] there are (a fleet may count without listing).
    fn holder_count(&self, r: &ResourceId, min: Version) -> usize {
        self.holders(r, min).len()
    }
    /// Capacity `c` as the planner sees it at `now`.
    fn target(&self, c: &CapacityId, now: f64) -> Option<Box<dyn Target + '_>>;
    /// What `c` holds of `r` (newest version), if anything.
    fn holding(&self, c: &CapacityId, r: &ResourceId) -> Option<Holding>;
    /// Whether any attached capacity may hold only some resources (an agent whose token is
    /// scoped to a tenant's prefixes). `false` (the default, and the replay's): the engine
    /// never asks [`Fleet::admits`].
    fn scoped(&self) -> bool {
        false
    }
    /// Whether capacity `c` (an index into [`Fleet::capacities`]) may hold `r`.
    fn admits(&self, c: usize, r: &ResourceId) -> bool {
        let _ = (c, r);
        true
    }
}

/// Whether capacity `c` may hold `r` (see [`Fleet::admits`]); an unknown capacity may not.
pub fn admits_id(fleet: &dyn Fleet, c: &CapacityId, r: &ResourceId) -> bool {
    if !fleet.scoped() {
        return true;
    }
    let caps = fleet.capacities();
    caps.binary_search(c)
        .ok()
        .or_else(|| caps.iter().position(|x| x == c))
        .is_some_and(|i| fleet.admits(i, r))
}

/// The newest committed version of a resource and its size.
pub trait Catalog {
    /// `None` for a resource the store does not have.
    fn latest(&self, r: &ResourceId) -> Option<(Version, u64)>;
}

impl<S: std::hash::BuildHasher> Catalog
    for std::collections::HashMap<ResourceId, (Version, u64), S>
{
    fn latest(&self, r: &ResourceId) -> Option<(Version, u64)> {
        self.get(r).copied()
    }
}

/// An event as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// When it happened, Unix s.
    pub ts: f64,
    /// The event.
    pub event: &'a Event,
    /// The capacity that will run it, when the sender decided.
    pub capacity: Option<&'a CapacityId>,
    /// The resources its sender may name (a tenant's prefixes): candidates outside are
    /// dropped before placement and planning, so no prediction for this event moves or
    /// keeps another tenant's state. `None`: every resource (the replay, an unscoped token).
    pub scope: Option<&'a Scope>,
}

impl EventView<'_> {
    /// Whether the event's sender may name `r`.
    pub fn admits(&self, r: &ResourceId) -> bool {
        self.scope.is_none_or(|s| s.admits(r))
    }
}

/// A retention hint for one state on one capacity.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HintFor {
    /// The capacity.
    pub capacity: CapacityId,
    /// The state.
    pub resource: ResourceId,
    /// The hint.
    pub hint: Hint,
}

/// A pre-warm the keep rule asks for: load `resource` on `capacity` at `at` and keep it
/// until `hold_until`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prewarm {
    /// Where.
    pub capacity: CapacityId,
    /// What.
    pub resource: ResourceId,
    /// When, Unix s.
    pub at: f64,
    /// Kept until, Unix s (unused when `spread`).
    pub hold_until: f64,
    /// A copy of a state just read elsewhere, taken only if the planner prices it positive
    /// when it is due (see [`Engine::prewarm`]); otherwise unconditional (Azure's windows).
    pub spread: bool,
    /// The model's chance that the key's next execution reads it ([`Engine::ahead`]):
    /// taken only if the planner prices it positive with that chance when it is due.
    pub ahead: Option<f64>,
}

/// What the engine decided for one event.
#[derive(Clone, Debug, Serialize)]
pub struct Decided {
    /// Where the execution should run (`None`: no capacity attached).
    pub placement: Option<Placement>,
    /// The predictive transfers to the placed capacity.
    pub transfers: Vec<Decision>,
    /// Retention hints for the placed capacity.
    pub hints: Vec<HintFor>,
}

/// What observing completed executions produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    /// Retention hints for the states read.
    pub hints: Vec<HintFor>,
    /// Pre-warms to carry out later.
    pub prewarms: Vec<Prewarm>,
}

/// What placement weighs for one event ([`Engine::decide`]'s third stage).
struct Placing<'a> {
    /// The wants and the key's own recent states: (resource, probability, fetch seconds).
    candidates: Vec<crate::placement::Candidate<'a>>,
    /// The oldest version of each that would do (parallel to `candidates`).
    needs: Vec<Version>,
    /// Home the event by its key rather than by its most likely state.
    by_key: bool,
}

/// The decision engine (see the module docs).
pub struct Engine {
    cfg: EngineConfig,
    planner: Planner,
    predictor: Option<Box<dyn Predictor>>,
    demand: Demand,
    loads: Loads,
    /// Last known size per resource (from records and the catalog), for hints.
    sizes: HashMap<ResourceId, u64>,
    /// Each key's recent states and how often keys repeat them (placement).
    affinity: Affinity,
    /// How often the model's predictions came true, by probability (`None`: raw numbers).
    calibration: Option<Calibration>,
    /// Copies offered to more capacities and how they turned out.
    spreads: crate::spread::Spreads,
    /// The holder lists' buffers, reused by every decision.
    scratch: Holders,
}

impl Engine {
    /// An engine deciding with `predictor` (none: placement, keep and eviction only).
    pub fn new(cfg: EngineConfig, predictor: Option<Box<dyn Predictor>>) -> Self {
        Self {
            planner: Planner::new(cfg.planner.clone()),
            demand: Demand::new(cfg.max_tracked),
            loads: Loads::default(),
            sizes: HashMap::new(),
            affinity: Affinity::default(),
            spreads: crate::spread::Spreads::new(),
            scratch: Holders::default(),
            calibration: cfg
                .calibrate
                .then(|| Calibration::new(2.0 * cfg.planner.lead_s.max(0.5))),
            predictor,
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Changes, while running, the two settings learned from the history
    /// (`prewarm_sim::tune`): how a prefetch's link time is priced and whether states just
    /// read are offered to one more capacity. Nothing the engine learned is lost.
    pub fn retune(&mut self, link_price: crate::LinkPrice, spread: bool) {
        self.cfg.planner.link_price = link_price;
        self.planner.cfg.link_price = link_price;
        self.cfg.spread = spread;
    }

    /// The model's name (`none` without one).
    pub fn model_name(&self) -> &str {
        self.predictor.as_ref().map_or("none", |p| p.name())
    }

    /// Swaps in a retrained model without losing what the engine learned: the serving
    /// predictor adopts it in place of its part of the same name (a mixture's member), or it
    /// replaces the serving predictor ([`Predictor::adopt`]).
    pub fn replace_model(&mut self, p: Box<dyn Predictor>) {
        let refused = match self.predictor.as_mut() {
            Some(serving) => serving.adopt(p).err(),
            None => Some(p),
        };
        if let Some(p) = refused {
            self.predictor = Some(p);
        }
    }

    /// The model, if any.
    pub fn model(&self) -> Option<&dyn Predictor> {
        self.predictor.as_deref()
    }

    /// The model's top-k for each event, in order (empty lists without a model).
    pub fn predict(&mut self, events: &[EventView<'_>]) -> Vec<Vec<Prediction>> {
        let k = self.cfg.top_k;
        match self.predictor.as_mut() {
            Some(p) => {
                let ctxs: Vec<Context<'_>> = events
                    .iter()
                    .map(|e| Context {
                        ts: e.ts,
                        event: e.event,
                    })
                    .collect();
                p.predict_batch(&ctxs, k)
            }
            None => vec![Vec::new(); events.len()],
        }
    }

    /// Decides one event at `now` given its predictions (see the module docs); the placement
    /// counts towards the load bound.
    pub fn decide(
        &mut self,
        ev: &EventView<'_>,
        preds: &[Prediction],
        catalog: &dyn Catalog,
        fleet: &dyn Fleet,
        now: f64,
    ) -> Decided {
        let d = self.decide_inner(ev, preds, catalog, fleet, now);
        if let Some(p) = &d.placement {
            self.loads.placed(&p.capacity, fleet.capacities().len());
        }
        if let Some(c) = self.calibration.as_mut() {
            let raw: Vec<(ResourceId, f64)> = preds
                .iter()
                .filter(|p| !ev.event.needs.contains(&p.resource))
                .map(|p| (p.resource.clone(), p.probability))
                .collect();
            c.predicted(&ev.event.key, ev.ts, &raw);
        }
        d
    }

    /// What [`Engine::decide`] would answer, changing nothing (a placement query).
    pub fn preview(
        &mut self,
        ev: &EventView<'_>,
        preds: &[Prediction],
        catalog: &dyn Catalog,
        fleet: &dyn Fleet,
        now: f64,
    ) -> Decided {
        self.decide_inner(ev, preds, catalog, fleet, now)
    }

    fn decide_inner(
        &mut self,
        ev: &EventView<'_>,
        preds: &[Prediction],
        catalog: &dyn Catalog,
        fleet: &dyn Fleet,
        now: f64,
    ) -> Decided {
        let mut holders = std::mem::take(&mut self.scratch);
        holders.clear();
        let d = self.decide_with(ev, preds, catalog, fleet, now, &mut holders);
        self.scratch = holders;
        d
    }

    /// [`Engine::decide_inner`] with the holder lists' buffers passed in.
    fn decide_with(
        &mut self,
        ev: &EventView<'_>,
        preds: &[Prediction],
        catalog: &dyn Catalog,
        fleet: &dyn Fleet,
        now: f64,
        holders: &mut Holders,
    ) -> Decided {
        self.loads
            .sync(fleet.capacities_epoch(), fleet.capacities());
        let preds = self.calibrated(preds);
        let mut wants = self.wants(ev, &preds, catalog);
        let Placing {
            candidates: placing,
            needs,
            by_key,
        } = self.placing(ev, &wants);
        // Capacities whose scope admits every state the event names (scoped fleets only).
        let eligible = scope::eligible(ev, fleet);
        // Each candidate's holders, asked of the fleet once (placement and pricing read them).
        for ((r, _, _), v) in placing.iter().zip(&needs) {
            holders.push_with(|out| {
                let from = out.len();
                fleet.holders_into(r, *v, out);
                if let Some(ok) = &eligible {
                    scope::retain_from(out, from, |c| ok[c] && fleet.admits(c, r));
                }
            });
        }
        let placement = place_within(
            &ev.event.key,
            by_key,
            ev.capacity,
            fleet.capacities(),
            holders,
            &placing,
            &self.loads,
            eligible.as_deref(),
        );
        let Some(p) = placement else {
            return Decided {
                placement: None,
                transfers: Vec::new(),
                hints: Vec::new(),
            };
        };
        let Some(target) = fleet.target(&p.capacity, now) else {
            return Decided {
                placement: Some(p),
                transfers: Vec::new(),
                hints: Vec::new(),
            };
        };
        let horizon = target.horizon().unwrap_or(f64::INFINITY);
        self.price_reuse(&mut wants, holders, horizon, now);
        if eligible.is_some() {
            // Nothing moves to, or is kept for, a capacity outside its scope.
            wants.retain(|w| admits_id(fleet, &p.capacity, &w.resource));
        }
        let transfers = self.planner.plan(&wants, target.as_ref());
        drop(target);
        let hints = self.expected_hints(&wants, &transfers, &p.capacity, fleet, now);
        Decided {
            placement: Some(p),
            transfers,
            hints,
        }
    }

    /// Stage 1: the model's predictions, calibrated when the engine calibrates and has
    /// scored any.
    fn calibrated<'p>(&mut self, preds: &'p [Prediction]) -> std::borrow::Cow<'p, [Prediction]> {
        match self.calibration.as_mut() {
            Some(c) if c.scored() > 0 => preds
                .iter()
                .map(|p| Prediction {
                    probability: c.map(p.probability),
                    ..p.clone()
                })
                .collect::<Vec<_>>()
                .into(),
            _ => preds.into(),
        }
    }

    /// Remembers `r`'s size (no key clone when it is known: this runs per candidate).
    fn note_size(&mut self, r: &ResourceId, bytes: u64) {
        match self.sizes.get_mut(r) {
            Some(b) => *b = bytes,
            None => {
                self.sizes.insert(r.clone(), bytes);
            }
        }
    }

    /// Stage 2: the event's candidate states the store has, as the planner's wants: named
    /// ones for certain, then predictions (the larger probability when both name one).
    fn wants(
        &mut self,
        ev: &EventView<'_>,
        preds: &[Prediction],
        catalog: &dyn Catalog,
    ) -> Vec<Want> {
        let named = ev
            .event
            .needs
            .iter()
            .map(|r| (r, VersionPolicy::Latest, 1.0));
        let predicted = preds
            .iter()
            .map(|p| (&p.resource, p.version, p.probability));
        let mut wants: Vec<Want> = Vec::with_capacity(ev.event.needs.len() + preds.len());
        let mut absent: Vec<&ResourceId> = Vec::new();
        for (r, version, probability) in named.chain(predicted) {
            if !ev.admits(r) {
                continue;
            }
            let probability = probability.clamp(0.0, 1.0);
            if let Some(w) = wants.iter_mut().find(|w| w.resource == *r) {
                w.probability = w.probability.max(probability);
                continue;
            }
            if absent.contains(&r) {
                continue;
            }
            let Some((latest, bytes)) = catalog.latest(r) else {
                absent.push(r);
                continue;
            };
            self.note_size(r, bytes);
            wants.push(Want {
                resource: r.clone(),
                probability,
                version,
                latest,
                bytes,
                reuse: 0.0,
                lead_s: None,
            });
        }
        wants
    }

    /// Stage 3: what placement weighs — the wants, plus the key's own recent states for the
    /// share of the probability the model left; the version each needs; and whether to
    /// home the event by its key (the key's states are a better bet than the model's top
    /// one, and the event names nothing).
    fn placing<'a>(&'a self, ev: &EventView<'_>, wants: &'a [Want]) -> Placing<'a> {
        let pc = &self.cfg.planner;
        let assigned: f64 = wants.iter().map(|w| w.probability).sum();
        let own = self.affinity.candidates(&ev.event.key, assigned);
        let mut placing: Vec<crate::placement::Candidate<'a>> =
            Vec::with_capacity(wants.len() + own.len());
        placing.extend(
            wants
                .iter()
                .map(|w| (&w.resource, w.probability, pc.fetch_s(w.bytes))),
        );
        let mut needs: Vec<Version> = Vec::with_capacity(placing.capacity());
        needs.extend(wants.iter().map(Want::need));
        let top = wants.iter().map(|w| w.probability).fold(0.0, f64::max);
        let by_key =
            ev.event.needs.is_empty() && !own.is_empty() && self.affinity.repeat_rate() > top;
        for (r, mass) in own {
            if mass <= 0.0 || !ev.admits(r) {
                continue;
            }
            match placing.iter_mut().find(|x| x.0 == r) {
                Some(x) => x.1 = x.1.max(mass),
                None => {
                    let bytes = self.sizes.get(r).copied().unwrap_or(0);
                    placing.push((r, mass, pc.fetch_s(bytes)));
                    needs.push(Version::FIRST);
                }
            }
        }
        Placing {
            candidates: placing,
            needs,
            by_key,
        }
    }

    /// Stage 4: each want's chance of a use within the target's horizon beyond this
    /// execution, shared among the capacities that hold it.
    fn price_reuse(&self, wants: &mut [Want], holders: &Holders, horizon: f64, now: f64) {
        // `holders[i]` holds `wants[i]`: placement's candidates start with the wants, in order.
        for (i, w) in wants.iter_mut().enumerate() {
            let others = holders.of(i).len();
            let idle = self
                .demand
                .last_use(&w.resource)
                .map_or(f64::INFINITY, |t| now - t);
            w.reuse = self.demand.next_use(&w.resource).within(idle, horizon) / (others + 1) as f64;
        }
    }

    /// Stage 5: the states the execution is expected to read on `cap` (held or on their
    /// way), kept for it.
    fn expected_hints(
        &self,
        wants: &[Want],
        transfers: &[Decision],
        cap: &CapacityId,
        fleet: &dyn Fleet,
        now: f64,
    ) -> Vec<HintFor> {
        let until = now + 2.0 * self.cfg.planner.lead_s.max(0.0);
        wants
            .iter()
            .filter(|w| {
                transfers.iter().any(|d| d.resource == w.resource)
                    || fleet.holding(cap, &w.resource).is_some()
            })
            .map(|w| HintFor {
                capacity: cap.clone(),
                resource: w.resource.clone(),
                hint: self.hint(
                    &w.resource,
                    fleet,
                    now,
                    Some(Expected {
                        p: w.probability,
                        until,
                    }),
                ),
            })
            .collect()
    }

    /// The retention hint for `r` last used (or arriving) at `at`.
    fn hint(&self, r: &ResourceId, fleet: &dyn Fleet, at: f64, expected: Option<Expected>) -> Hint {
        let pc = &self.cfg.planner;
        let bytes = self.sizes.get(r).copied().unwrap_or(0);
        let fetch_s = pc.fetch_s(bytes);
        let nu = self.demand.next_use(r);
        let known = self
            .predictor
            .as_ref()
            .and_then(|p| p.known_next_use(r, at));
        let keep_until = match self.cfg.keep {
            Keep::Drop => at,
            Keep::Fixed(s) => at + s,
            Keep::Priced => at + nu.keep_for(fetch_s, pc.cost_per_s(bytes)),
            Keep::Windows(fallback) => match self.predictor.as_ref().and_then(|p| p.windows(r)) {
                Some((pre, _)) if pre > 0.0 => at,
                Some((_, keep)) => at + keep,
                None => at + fallback,
            },
            Keep::Known => match known {
                Some(t) if t.is_finite() => f64::INFINITY,
                _ => at,
            },
        };
        let holders = fleet.holder_count(r, Version::FIRST).max(1);
        Hint {
            keep_until,
            fetch_s,
            share: 1.0 / holders as f64,
            curve: (self.cfg.rule == Rule::Value).then(|| Curve::of(&nu)),
            expected,
            next_at: known,
        }
    }

    /// Learns from completed executions (time-ordered) and returns the hints and pre-warms
    /// for the states they read, on the capacities that ran them: [`Engine::learn`] then
    /// [`Engine::hints_for`].
    pub fn observe(&mut self, records: &[HistoryRecord], fleet: &dyn Fleet) -> Observed {
        self.learn(records);
        let mut out = self.hints_for(records, fleet);
        out.prewarms.extend(self.ahead(records, fleet));
        out
    }

    /// With [`EngineConfig::ahead`], the pre-warms of what each record's key is expected to
    /// read next, on the capacity that ran it (after [`Engine::learn`]): skipped where that
    /// capacity holds it, and, for an event that names its states (placement then finds
    /// any holder), where any capacity does. Empty without it or without a model.
    pub fn ahead(&mut self, records: &[HistoryRecord], fleet: &dyn Fleet) -> Vec<Prewarm> {
        let k = self.cfg.top_k;
        let (true, Some(model)) = (self.cfg.ahead, self.predictor.as_mut()) else {
            return Vec::new();
        };
        let next: Vec<Vec<Prediction>> = records
            .iter()
            .map(|rec| match rec.capacity {
                Some(_) => model.predict_next(rec, k),
                None => Vec::new(),
            })
            .collect();
        let mut out = Vec::new();
        for (rec, preds) in records.iter().zip(next) {
            let Some(cap) = &rec.capacity else {
                continue;
            };
            let end = rec.ts + rec.duration_s.max(0.0);
            for p in preds {
                let held_here = fleet.holding(cap, &p.resource).is_some();
                let named = !rec.event.needs.is_empty();
                if p.probability <= 0.0
                    || held_here
                    || (named && fleet.holder_count(&p.resource, Version::FIRST) > 0)
                {
                    continue;
                }
                out.push(Prewarm {
                    capacity: cap.clone(),
                    resource: p.resource,
                    at: end,
                    hold_until: end,
                    spread: false,
                    ahead: Some(p.probability.clamp(0.0, 1.0)),
                });
            }
        }
        out
    }

    /// The model and the next-use estimates learn from completed executions.
    pub fn learn(&mut self, records: &[HistoryRecord]) {
        if let Some(p) = self.predictor.as_mut() {
            p.observe_batch(records);
        }
        for rec in records {
            self.affinity.observe(rec);
            if let Some(c) = &rec.capacity {
                for rd in &rec.reads {
                    self.spreads.read(c, &rd.resource);
                }
            }
            if let Some(c) = self.calibration.as_mut() {
                c.observe(rec);
            }
            for rd in &rec.reads {
                self.demand.used(&rd.resource, rec.ts);
                if rd.bytes > 0 {
                    self.note_size(&rd.resource, rd.bytes);
                }
            }
        }
    }

    /// The hints and pre-warms for the states `records` read (after [`Engine::learn`]).
    pub fn hints_for(&self, records: &[HistoryRecord], fleet: &dyn Fleet) -> Observed {
        let mut out = Observed::default();
        for rec in records {
            let Some(cap) = &rec.capacity else {
                continue;
            };
            let end = rec.ts + rec.duration_s.max(0.0);
            for rd in &rec.reads {
                let hint = self.hint(&rd.resource, fleet, end, None);
                if let Keep::Windows(_) = self.cfg.keep
                    && let Some((pre, keep)) = self
                        .predictor
                        .as_ref()
                        .and_then(|p| p.windows(&rd.resource))
                    && pre > 0.0
                {
                    out.prewarms.push(Prewarm {
                        capacity: cap.clone(),
                        resource: rd.resource.clone(),
                        at: end + pre,
                        hold_until: end + keep.max(pre),
                        spread: false,
                        ahead: None,
                    });
                }
                out.prewarms
                    .extend(self.spread(&rd.resource, cap, fleet, end));
                if self.cfg.rule == Rule::Belady {
                    // A known next use is the resource's, wherever it runs: every copy's
                    // hint moves on with it (else a copy elsewhere keeps a next use already
                    // past, which Belady's order keeps forever).
                    out.hints.extend(
                        fleet
                            .holders(&rd.resource, Version::FIRST)
                            .into_iter()
                            .map(|i| &fleet.capacities()[i])
                            .filter(|c| *c != cap)
                            .map(|c| HintFor {
                                capacity: c.clone(),
                                resource: rd.resource.clone(),
                                hint: hint.clone(),
                            }),
                    );
                }
                out.hints.push(HintFor {
                    capacity: cap.clone(),
                    resource: rd.resource.clone(),
                    hint,
                });
            }
        }
        out
    }

    /// A copy of `r`, just read on `cap`, for the next capacity in its rendezvous order that
    /// lacks it (model-driven policies only): a state read often spreads to more capacities
    /// one copy per use, while what it would displace there is worth less.
    fn spread(
        &self,
        r: &ResourceId,
        cap: &CapacityId,
        fleet: &dyn Fleet,
        at: f64,
    ) -> Option<Prewarm> {
        if !self.cfg.spread || self.cfg.keep != Keep::Priced {
            return None;
        }
        fleet
            .capacities()
            .iter()
            .filter(|c| *c != cap && fleet.holding(c, r).is_none())
            .max_by_key(|c| crate::placement::weight(r.as_str(), c))
            .map(|c| Prewarm {
                capacity: c.clone(),
                resource: r.clone(),
                at,
                hold_until: at,
                spread: true,
                ahead: None,
            })
    }

    /// Seconds from `now` to `r`'s next use: known (the oracle), else the state's mean gap
    /// between uses (the engine's estimate); `None` when neither is finite.
    fn until_use(&self, r: &ResourceId, now: f64) -> Option<f64> {
        let known = self
            .predictor
            .as_ref()
            .and_then(|p| p.known_next_use(r, now));
        let wait = known.map_or_else(|| self.demand.next_use(r).mean_gap(), |t| t - now);
        (wait.is_finite() && wait >= 0.0).then_some(wait)
    }

    /// A spread or ahead pre-warm, priced by the planner against `pw.capacity`'s cache (a
    /// spread with the calibrated chance of a use there, an ahead one with the model's).
    fn priced_decision(
        &mut self,
        pw: &Prewarm,
        latest: Version,
        bytes: u64,
        fleet: &dyn Fleet,
        now: f64,
    ) -> Option<Decision> {
        let target = fleet.target(&pw.capacity, now)?;
        let horizon = target.horizon().unwrap_or(f64::INFINITY);
        let holders = fleet.holder_count(&pw.resource, Version::FIRST);
        let raw = crate::spread::chance(&self.demand.next_use(&pw.resource), horizon, holders);
        let want = Want {
            resource: pw.resource.clone(),
            probability: pw.ahead.unwrap_or_else(|| self.spreads.calibrated(raw)),
            version: VersionPolicy::Latest,
            latest,
            bytes,
            reuse: 0.0,
            lead_s: pw.ahead.and_then(|_| self.until_use(&pw.resource, now)),
        };
        let d = self
            .planner
            .plan(&[want], target.as_ref())
            .into_iter()
            .next()?;
        if pw.spread {
            self.spreads.taken(&pw.capacity, &pw.resource, raw);
        }
        Some(d)
    }

    /// Carries out a pre-warm at `now`: the transfer (when `c` lacks the state) and its hint.
    pub fn prewarm(
        &mut self,
        pw: &Prewarm,
        catalog: &dyn Catalog,
        fleet: &dyn Fleet,
        now: f64,
    ) -> Option<(Decision, HintFor)> {
        let (latest, bytes) = catalog.latest(&pw.resource)?;
        if !admits_id(fleet, &pw.capacity, &pw.resource) {
            return None;
        }
        if fleet
            .holding(&pw.capacity, &pw.resource)
            .is_some_and(|h| h.version >= latest)
        {
            return None;
        }
        self.note_size(&pw.resource, bytes);
        // An ahead pre-warm is expected to be read with the model's chance by its expected
        // next use.
        let expected = pw.ahead.and_then(|p| {
            let wait = self.until_use(&pw.resource, now)?;
            Some(Expected {
                p,
                until: now + wait,
            })
        });
        let mut hint = self.hint(&pw.resource, fleet, now, expected);
        let d = if pw.spread || pw.ahead.is_some() {
            // Priced by the planner; kept by the usual rule when taken.
            self.priced_decision(pw, latest, bytes, fleet, now)?
        } else {
            hint.keep_until = pw.hold_until;
            Decision {
                resource: pw.resource.clone(),
                version: latest,
                bytes,
                probability: 1.0,
                score: 0.0,
            }
        };
        Some((
            d,
            HintFor {
                capacity: pw.capacity.clone(),
                resource: pw.resource.clone(),
                hint,
            },
        ))
    }

    /// Resources whose use statistics are held.
    pub fn tracked(&self) -> usize {
        self.demand.len()
    }
}

mod scope;
#[cfg(test)]
mod scope_tests;
