//! Deterministic trace replay. A discrete-event simulation with a virtual clock drives
//! prewarm's production decision code — the predictors (`prewarm-predict`), the planner,
//! placement and eviction (`prewarm-engine`) — over a history, with a transfer-time model
//! (`latency + bytes / bandwidth` per capacity link, sizes from the history) and a lead time
//! between an event and the start of its execution:
//!
//! ```text
//! t = ts - lead   event: predict, place, plan → predictive transfers queue on the link
//! t = ts          execution starts on its capacity: each read is a hit (installed, recent
//!                 enough), a wait (still moving) or a miss (fetched on demand, ahead of
//!                 the queue); the predictor observes the record
//! t = ts + wait + duration   leases end; keep-alive windows start
//! ```
//!
//! Policies: `none` (on demand only, nothing kept), `lru` (keep what was used for a fixed
//! keep-alive, least recently used out under pressure), `histogram` (Azure's hybrid
//! histogram: per-resource pre-warm and keep-alive windows, plus its predictions),
//! any predictor through the planner (kept like `lru`), and `oracle` (knows each execution's
//! reads at its event, keeps a state only while its next use is near, evicts the one needed
//! furthest ahead): the upper bound. Same records and settings give the same numbers.

mod cache;
mod engine;

use prewarm_engine::PlannerConfig;
use prewarm_predict::Predictor;
use prewarm_predict::histogram::Histogram;
use serde::Serialize;

pub use engine::replay;

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
    /// Keep-alive after use for `lru` and predictive policies, seconds.
    pub keep_alive_s: f64,
    /// Size of a state whose reads carry no size.
    pub default_bytes: u64,
    /// Predictions asked per event.
    pub top_k: usize,
    /// Share of the records replayed before counting starts (predictors learn meanwhile).
    pub warmup: f64,
    /// The planner's settings (its bandwidth and latency are set from the above).
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
            keep_alive_s: 600.0,
            default_bytes: 64 << 20,
            top_k: 5,
            warmup: 0.2,
            planner: PlannerConfig::default(),
        }
    }
}

/// What a policy does.
pub enum PolicyKind {
    /// Fetch on demand; keep nothing after the execution.
    None,
    /// Fetch on demand; keep for the keep-alive.
    Lru,
    /// Azure's hybrid histogram windows, plus its predictions through the planner.
    Histogram(Histogram),
    /// A predictor through the planner; kept like `lru`.
    Predictive(Box<dyn Predictor>),
    /// Knows the future.
    Oracle,
}

/// A named policy.
pub struct Policy {
    /// Its name in tables.
    pub name: String,
    /// What it does.
    pub kind: PolicyKind,
}

impl Policy {
    /// A policy of kind `kind` called `name`.
    pub fn new(name: &str, kind: PolicyKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
        }
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
    /// Share of the oracle's warm starts reached (filled in by the caller).
    pub oracle_share: Option<f64>,
    /// Warm-start rate over time: (bucket start, Unix s; rate; executions).
    pub over_time: Vec<(f64, f64, u64)>,
    /// Time-to-ready percentiles 0..=100, ms (for the distribution plot).
    pub ttr_percentiles_ms: Vec<f64>,
}

#[cfg(test)]
mod tests;
