//! The one trait every predictor implements — baselines, learned models and the oracle — so
//! the decision engine (and through it the coordinator and the replay simulator) uses them
//! interchangeably. Vocabulary only: the models live in `prewarm-predict`.

use crate::{Event, HistoryRecord, ResourceId, Version};
use serde::Serialize;

/// What a prediction is about: the event that just arrived.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Event time, Unix seconds.
    pub ts: f64,
    /// The event.
    pub event: &'a Event,
}

/// Which versions of a predicted resource would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionPolicy {
    /// The newest committed version.
    Latest,
    /// Any version at least this recent.
    AtLeast(Version),
}

/// One predicted state and how likely the coming execution reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The resource.
    pub resource: ResourceId,
    /// Which versions would do.
    pub version: VersionPolicy,
    /// Probability in [0, 1].
    pub probability: f64,
}

/// A predictor: learns online from completed executions, predicts for arriving events.
pub trait Predictor: Send {
    /// A short name for tables (`frequency`, `markov`, …).
    fn name(&self) -> &str;

    /// Learns from one completed execution; O(1) amortised.
    fn observe(&mut self, record: &HistoryRecord);

    /// [`Predictor::observe`] for each of `records` in order, with the same result; learned
    /// models spread the work over the cores.
    fn observe_batch(&mut self, records: &[HistoryRecord]) {
        for r in records {
            self.observe(r);
        }
    }

    /// Takes `retrained` (a retrained model, already warmed on the history) in place of
    /// the part of this predictor it retrains, keeping what the rest learned; a mixture
    /// swaps the member of that name and keeps its other members and weights. Gives it back
    /// when this predictor has no such part: the caller then serves `retrained` alone.
    fn adopt(&mut self, retrained: Box<dyn Predictor>) -> Result<(), Box<dyn Predictor>> {
        Err(retrained)
    }

    /// The `k` most likely resources the execution triggered by `ctx` reads, most likely
    /// first.
    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction>;

    /// The `k` most likely reads of the next execution of `record`'s key, asked after
    /// `record` was observed (what comes *next*, for pre-warming ahead of the next event).
    /// Default: [`Predictor::predict`] for the record's own event at its end, which a
    /// sequence model answers from the key's history including `record`.
    fn predict_next(&mut self, record: &HistoryRecord, k: usize) -> Vec<Prediction> {
        let ctx = Context {
            ts: record.ts + record.duration_s.max(0.0),
            event: &record.event,
        };
        self.predict(&ctx, k)
    }

    /// [`Predictor::predict`] for each of `ctxs` in order, with the same answers (no
    /// `observe` in between); learned models spread the work over the cores.
    fn predict_batch(&mut self, ctxs: &[Context<'_>], k: usize) -> Vec<Vec<Prediction>> {
        ctxs.iter().map(|c| self.predict(c, k)).collect()
    }

    /// Approximate bytes of memory the predictor holds (weights, tables, per-key state).
    fn memory_bytes(&self) -> u64;

    /// How long after its last use `resource` is worth keeping, seconds — a hint for
    /// eviction (`None`: no opinion).
    fn keep_alive(&self, _resource: &ResourceId) -> Option<f64> {
        None
    }

    /// Azure-style windows for `resource`, seconds after its last use: (load again after,
    /// keep until). A pre-warm delay of 0 means keep from the use on. `None`: no opinion.
    fn windows(&self, _resource: &ResourceId) -> Option<(f64, f64)> {
        None
    }

    /// The exact time of `resource`'s next use after `after` (`INFINITY`: never), for a
    /// predictor that knows the future (the replay's oracle); `None` for every real model.
    fn known_next_use(&self, _resource: &ResourceId, _after: f64) -> Option<f64> {
        None
    }
}
