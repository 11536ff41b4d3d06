//! Deterministic trace replay. A discrete-event simulation with a virtual clock drives
//! prewarm's decision engine (`prewarm-engine`: predictors, placement, the priced planner,
//! the eviction and keep-alive rules) over a history, exactly as the coordinator drives it
//! live, with a transfer-time model (`latency + bytes / bandwidth` per capacity link, sizes
//! from the history) and a lead time between an event and the start of its execution:
//!
//! ```text
//! t = ts - lead   event: engine.predict + engine.decide → placement, predictive transfers
//!                 queued on the link, retention hints
//! t = ts          execution starts on its capacity: each read is a hit (installed, recent
//!                 enough), a wait (still moving) or a miss (fetched on demand, ahead of
//!                 the queue; evicting by the capacity's rule); engine.observe learns from
//!                 the execution as its agent would report it
//! t = ts + wait + duration   leases end; keep-alive timers from the hints run
//! ```
//!
//! Policies are configurations of the one engine ([`PolicyKind`]). Same records and
//! settings give the same numbers.

mod bench_fleet;
mod cache;
pub mod ceiling;
mod fleet;
mod oracle;
pub mod pareto;
mod replay;
pub mod retrain;
pub mod retune;
mod run;
pub mod tune;
pub mod workload;

use prewarm_core::{Predictor, ResourceId};
use prewarm_engine::{EngineConfig, PlannerConfig, rules_for};
use prewarm_predict::histogram::Histogram;
use serde::Serialize;

pub use bench_fleet::BenchFleet;
pub use oracle::{Clairvoyant, Future};
pub use prewarm_engine::Rule;
pub use replay::{replay, replay_logged, replay_metered, replay_paired, replay_retuned};

/// Simulation settings.
#[derive(Clone, Debug, Serialize)]
pub struct SimConfig {
    /// Compute capacities.
    pub capacities: usize,
    /// Cache bytes per capacity.
    pub cache_bytes: u64,
    /// Link bandwidth per capacity, bytes/s.
    pub bandwidth: f64,
    /// Fixed cost of a transfer, seconds.
    pub latency_s: f64,
    /// Time between an event and the start of its execution, seconds.
    pub lead_s: f64,
    /// Fixed keep-alive after use for the recency baselines (`lru`, `s3fifo`, `gdsf`),
    /// seconds; `INFINITY`: until pressure.
    pub keep_alive_s: f64,
    /// Price of cache memory for the value-based policies, seconds of cold start per GB·s
    /// (0: kept until pressure).
    pub memory_price: f64,
    /// Size of a state whose reads carry no size.
    pub default_bytes: u64,
    /// Predictions asked per event.
    pub top_k: usize,
    /// Share of the records replayed before counting starts (predictors learn meanwhile).
    pub warmup: f64,
    /// Models' probabilities calibrated online by the engine (the oracle's never are).
    pub calibrate: bool,
    /// States just read are offered to one more capacity (the engine's `spread`).
    pub spread: bool,
    /// After each execution, what the model expects the key to read next is pre-warmed on
    /// the capacity that ran it (the engine's `ahead`).
    pub ahead: bool,
    /// The planner's settings (its bandwidth, latency, lead and price are set from the
    /// above).
    pub planner: PlannerConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            capacities: 4,
            cache_bytes: 4 << 30,
            bandwidth: 125e6,
            latency_s: 0.002,
            lead_s: 1.0,
            keep_alive_s: f64::INFINITY,
            memory_price: 0.0,
            default_bytes: 64 << 20,
            top_k: 5,
            warmup: 0.2,
            calibrate: false,
            spread: false,
            ahead: false,
            planner: PlannerConfig::default(),
        }
    }
}

/// What a policy is: a configuration of the engine.
pub enum PolicyKind {
    /// Fetch on demand; keep nothing after the execution.
    None,
    /// Fetch on demand; least recently used out; the fixed keep-alive.
    Lru,
    /// Fetch on demand; S3-FIFO eviction; the fixed keep-alive.
    S3Fifo,
    /// Fetch on demand; GreedyDual-Size-Frequency eviction; the fixed keep-alive.
    Gdsf,
    /// Azure's hybrid histogram windows, plus its predictions through the planner.
    Histogram(Histogram),
    /// A predictor through the planner; next-use-aware eviction; the priced keep-alive.
    Predictive(Box<dyn Predictor>),
    /// Knows the future.
    Oracle,
    /// Knows the future only when evicting: Belady's eviction with the causal placement
    /// and on-demand fetches of `lru` (what eviction alone can reach; [`Clairvoyant`]).
    Belady,
}

/// Retraining during a replay, as the coordinator retrains in production (`--retrain-every`:
/// a challenger trained on the history so far, swapped in only when it scores better on the
/// newest held-back part). The replay asks after every execution it has observed; what it
/// returns replaces the engine's model ([`prewarm_engine::Engine::replace_model`]).
pub trait Retrainer {
    /// `history` holds every record whose execution the engine has observed, in order (the
    /// history agents would have reported by now). A new model to serve, when a round swapped.
    fn after(&mut self, history: &[prewarm_core::HistoryRecord]) -> Option<Box<dyn Predictor>>;
}

/// A named policy.
pub struct Policy {
    /// Its name in tables.
    pub name: String,
    /// What it does.
    pub kind: PolicyKind,
    /// Retraining rounds during the replay (model-driven policies; `None`: the model it
    /// starts with serves throughout).
    pub retrainer: Option<Box<dyn Retrainer>>,
}

impl Policy {
    /// A policy of kind `kind` called `name`.
    pub fn new(name: &str, kind: PolicyKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            retrainer: None,
        }
    }

    /// This policy with `r` retraining its model during the replay.
    pub fn with_retrainer(mut self, r: Box<dyn Retrainer>) -> Self {
        self.retrainer = Some(r);
        self
    }

    /// The engine settings and model of this policy under `cfg`.
    pub fn engine_parts(
        self,
        cfg: &SimConfig,
        records: &[prewarm_core::HistoryRecord],
    ) -> (EngineConfig, Option<Box<dyn Predictor>>) {
        let planner = PlannerConfig {
            bandwidth: cfg.bandwidth,
            latency_s: cfg.latency_s,
            lead_s: cfg.lead_s,
            memory_price: cfg.memory_price,
            ..cfg.planner.clone()
        };
        let (family, model): (&str, Option<Box<dyn Predictor>>) = match self.kind {
            PolicyKind::None => ("none", None),
            PolicyKind::Lru => ("lru", None),
            PolicyKind::S3Fifo => ("s3fifo", None),
            PolicyKind::Gdsf => ("gdsf", None),
            PolicyKind::Histogram(h) => ("histogram", Some(Box::new(h))),
            PolicyKind::Predictive(p) => ("model", Some(p)),
            PolicyKind::Oracle => ("oracle", Some(Box::new(Future::new(records, cfg.lead_s)))),
            PolicyKind::Belady => (
                "belady",
                Some(Box::new(Clairvoyant(Future::new(records, cfg.lead_s)))),
            ),
        };
        let (rule, keep) = rules_for(family, cfg.keep_alive_s);
        let ec = EngineConfig {
            planner,
            top_k: cfg.top_k,
            rule,
            keep,
            calibrate: cfg.calibrate && !matches!(family, "oracle" | "belady"),
            spread: cfg.spread,
            ahead: cfg.ahead,
            ..EngineConfig::default()
        };
        (ec, model)
    }
}

/// The numbers of one policy over one replay (executions after the warm-up).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SimReport {
    /// The policy.
    pub policy: String,
    /// Executions counted (those with at least one read).
    pub executions: u64,
    /// Executions whose every read was installed, recent enough, at their start.
    pub warm: u64,
    /// `warm / executions`.
    pub warm_rate: f64,
    /// Bytes of the reads that were ready at their execution's start / bytes read.
    pub ready_byte_share: f64,
    /// Time from execution start until every read was ready, median, ms.
    pub ttr_p50_ms: f64,
    /// … 99th percentile, ms.
    pub ttr_p99_ms: f64,
    /// … mean, ms.
    pub ttr_mean_ms: f64,
    /// Bytes moved (on demand + predictive).
    pub bytes: u64,
    /// Bytes moved on demand.
    pub bytes_on_demand: u64,
    /// Bytes moved by prediction (pre-warming).
    pub bytes_predictive: u64,
    /// Bytes moved and never read before eviction, expiry or supersession.
    pub wasted_bytes: u64,
    /// Cache memory held over time, GB·s.
    pub memory_gb_s: f64,
    /// Evictions made.
    pub evictions: u64,
    /// Share of the oracle's warm starts reached (filled in by the caller).
    pub oracle_share: Option<f64>,
    /// Warm-start rate over time: (bucket start, Unix s; rate; executions).
    pub over_time: Vec<(f64, f64, u64)>,
    /// Time-to-ready percentiles 0..=100, ms (for the distribution plot).
    pub ttr_percentiles_ms: Vec<f64>,
}

/// Which half of a record a decision belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Its event arrived (placement, predictive transfers).
    #[default]
    Event,
    /// Its execution ran (on-demand fetches) and reported back.
    Exec,
}

/// One decision of a replay, for comparing it with a live run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decision {
    /// The record's execution placed on `capacity`.
    Placed {
        /// Capacity index.
        capacity: usize,
    },
    /// A transfer started.
    Transfer {
        /// Capacity index.
        capacity: usize,
        /// What.
        resource: ResourceId,
        /// Which version.
        version: u64,
        /// Predictive (else on demand).
        predictive: bool,
    },
    /// A state evicted to make room.
    Evicted {
        /// Capacity index.
        capacity: usize,
        /// What.
        resource: ResourceId,
    },
    /// A state dropped when its keep-alive ran out.
    Expired {
        /// Capacity index.
        capacity: usize,
        /// What.
        resource: ResourceId,
    },
}

/// The decisions of a replay, in order, each with the record and phase it came in (timers
/// between records count towards the last one).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DecisionLog {
    /// (record index, phase, decision).
    pub entries: Vec<(usize, Phase, Decision)>,
    #[serde(skip)]
    at: (usize, Phase),
}

impl DecisionLog {
    pub(crate) fn step(&mut self, record: usize, phase: Phase) {
        self.at = (record, phase);
    }

    fn push(&mut self, d: Decision) {
        self.entries.push((self.at.0, self.at.1, d));
    }

    pub(crate) fn placed(&mut self, capacity: usize) {
        self.push(Decision::Placed { capacity });
    }

    pub(crate) fn transfer(&mut self, cap: usize, r: &ResourceId, v: u64, predictive: bool) {
        self.push(Decision::Transfer {
            capacity: cap,
            resource: r.clone(),
            version: v,
            predictive,
        });
    }

    pub(crate) fn evicted(&mut self, cap: usize, rs: &[ResourceId]) {
        for r in rs {
            self.push(Decision::Evicted {
                capacity: cap,
                resource: r.clone(),
            });
        }
    }

    pub(crate) fn expired(&mut self, cap: usize, r: &ResourceId) {
        self.push(Decision::Expired {
            capacity: cap,
            resource: r.clone(),
        });
    }
}

#[cfg(test)]
mod tests;
