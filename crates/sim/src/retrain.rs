//! Retraining rounds during a replay: the coordinator's champion/challenger rounds
//! ([`crate::tune::challenge`], the same function) run on the
//! history the replay has observed so far, on a schedule of history growth instead of wall
//! time. A round trains a challenger on all but the newest fifth of that history, scores it
//! and the serving model prequentially on that fifth and (with [`Schedule::judge`], as the
//! coordinator's `--retrain-judge replay`) by the warm starts of a replay of that fifth,
//! and swaps when the challenger wins; the new model then serves with its per-key state
//! rebuilt from the history, as in production.
//!
//! **Schedule.** Rounds run when the observed history has grown by `growth` since the model
//! serving was trained (`first · growth^k` records), so the number of rounds grows with the
//! logarithm of the trace's length and nothing depends on its time scale. A history is the
//! same whatever the cache size, so one [`Rounds`] book keeps each round's outcome per
//! architecture and every replay of a run (each policy, each cache size) serves the same
//! models: the rounds are trained once.

use std::sync::{Arc, Mutex};

use foldhash::HashMap;
use prewarm_core::{HistoryRecord, Predictor};
use prewarm_predict::MAX_KEYS;
use prewarm_predict::neural::retrain::{RetrainConfig, Round, copy_model};
use prewarm_predict::neural::{Learned, Model};
use serde::Serialize;

use crate::Retrainer;

/// When rounds run and how.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Records the first model was trained on (the warm-up).
    pub first: usize,
    /// Growth of the history between rounds (> 1).
    pub growth: f64,
    /// The round's settings (hold-out share, training budget, …).
    pub round: RetrainConfig,
    /// The fleet a round's replay judge runs on (`None`: log-loss alone). One book serves
    /// every cache size of a run, so this is one size's (the run's base size).
    pub judge: Option<crate::SimConfig>,
}

impl Schedule {
    /// History length at which round `k` (0-based) runs.
    pub fn due(&self, k: usize) -> usize {
        let at = self.first.max(1) as f64 * self.growth.powi(k as i32 + 1);
        at.ceil().min(usize::MAX as f64) as usize
    }
}

/// One round as the book recorded it.
#[derive(Clone, Debug, Serialize)]
pub struct RoundLog {
    /// The architecture (`gru`, `transformer`).
    pub arch: String,
    /// The round (0-based).
    pub k: usize,
    /// History records observed when it ran.
    pub history: usize,
    /// Its figures (`None`: it did not run).
    pub round: Option<Round>,
    /// Why it did not run.
    pub error: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// Per architecture, each round's winner (`None`: the serving model was kept).
    outcomes: HashMap<String, Vec<Option<Model>>>,
    log: Vec<RoundLog>,
}

/// The rounds of one run, shared by every replay in it.
#[derive(Clone)]
pub struct Rounds {
    schedule: Arc<Schedule>,
    inner: Arc<Mutex<Inner>>,
}

impl Rounds {
    /// A book for `schedule`.
    pub fn new(schedule: Schedule) -> Self {
        Self {
            schedule: Arc::new(schedule),
            inner: Arc::default(),
        }
    }

    /// Every round run so far, in order.
    pub fn log(&self) -> Vec<RoundLog> {
        self.inner.lock().expect("rounds lock poisoned").log.clone()
    }

    /// A retrainer for a policy serving `champion` of architecture `arch` (alone, or as a
    /// mixture's member, which the mixture then swaps: [`Predictor::adopt`]).
    pub fn retrainer(&self, arch: &str, champion: Model) -> Box<dyn Retrainer> {
        Box::new(PolicyRounds {
            book: self.clone(),
            arch: arch.to_owned(),
            serving: champion,
            next: 0,
        })
    }

    /// Round `k` of `arch` against `serving` on `history`: its winner, trained the first
    /// time a replay of the run reaches it.
    fn outcome(
        &self,
        arch: &str,
        k: usize,
        serving: &Model,
        history: &[HistoryRecord],
    ) -> Option<Model> {
        let mut inner = self.inner.lock().expect("rounds lock poisoned");
        if let Some(done) = inner.outcomes.get(arch).and_then(|v| v.get(k)) {
            return done.as_ref().and_then(|m| copy_model(m).ok());
        }
        let judge = self.schedule.judge.clone();
        let (won, round, error) =
            match crate::tune::challenge(serving, history, &self.schedule.round, judge) {
                Ok((r, won)) => (won, Some(r), None),
                Err(e) => (None, None, Some(e.to_string())),
            };
        inner.log.push(RoundLog {
            arch: arch.to_owned(),
            k,
            history: history.len(),
            round,
            error,
        });
        let copy = won.as_ref().and_then(|m| copy_model(m).ok());
        let rounds = inner.outcomes.entry(arch.to_owned()).or_default();
        rounds.resize_with(k, || None);
        rounds.push(won);
        copy
    }
}

/// One policy's view of the book.
struct PolicyRounds {
    book: Rounds,
    arch: String,
    serving: Model,
    next: usize,
}

impl Retrainer for PolicyRounds {
    fn after(&mut self, history: &[HistoryRecord]) -> Option<Box<dyn Predictor>> {
        if history.len() < self.book.schedule.due(self.next) {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let won = self.book.outcome(&self.arch, k, &self.serving, history)?;
        let mut learned = Learned::new(copy_model(&won).ok()?, MAX_KEYS);
        self.serving = won;
        learned.observe_batch(history);
        Some(Box::new(learned))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{Policy, PolicyKind, SimConfig, replay};
    use prewarm_predict::neural::{Arch, TrainOptions, train};

    fn tiny() -> TrainOptions {
        let mut o = TrainOptions::new(Arch::Gru {
            embed: 8,
            hidden: 8,
        });
        (o.max_epochs, o.patience, o.seq_len, o.batch) = (2, 2, 8, 16);
        o.time_budget = None;
        o
    }

    #[test]
    fn rounds_train_once_per_run_and_every_replay_of_it_is_served_the_same_models() {
        let h = crate::tests::cyclic();
        let first = h.len() / 5;
        let champion = train(&h[..first], &tiny(), &mut |_| {}).unwrap();
        let book = Rounds::new(Schedule {
            first,
            growth: 2.0,
            round: RetrainConfig {
                min_records: 100,
                options: Some(tiny()),
                ..RetrainConfig::default()
            },
            judge: Some(crate::SimConfig::default()),
        });
        let policy = |champion: &Model| {
            let serving = Learned::new(copy_model(champion).unwrap(), MAX_KEYS);
            Policy::new("gru", PolicyKind::Predictive(Box::new(serving)))
                .with_retrainer(book.retrainer("gru", copy_model(champion).unwrap()))
        };
        let cfg = SimConfig::default();
        let a = replay(&h, policy(&champion), &cfg);
        let log = book.log();
        // Rounds at 800 and 1,600 of the 2,000 records, each run on the history so far.
        let at: Vec<usize> = log.iter().map(|r| r.history).collect();
        assert_eq!(at, vec![800, 1_600]);
        assert!(log.iter().all(|r| r.round.is_some()), "{log:?}");
        // Judged by a replay of the held-back part, as the coordinator's rounds are.
        assert!(
            log.iter()
                .flat_map(|r| &r.round)
                .all(|r| r.champion.warm_rate.is_some() && r.challenger.warm_rate.is_some()),
            "{log:?}"
        );
        let b = replay(&h, policy(&champion), &cfg);
        assert_eq!(book.log().len(), 2, "the second replay trained nothing");
        assert_eq!(a, b, "and was served the same models");
    }

    #[test]
    fn rounds_run_at_geometric_history_lengths() {
        let s = Schedule {
            first: 2_000,
            growth: 1.5,
            round: RetrainConfig::default(),
            judge: None,
        };
        let at: Vec<usize> = (0..3).map(|k| s.due(k)).collect();
        assert_eq!(at, vec![3_000, 4_500, 6_750]);
    }
}
