//! Settings re-learned while running. The tuner ([`crate::tune`]) learns the link price and
//! spreading from a history's warm-up part; a workload that drifts may later want others
//! (on World Cup 98 at 4 MiB the first fifth of the day favours `queue` pricing with
//! spreading, and the later parts favour neither: BENCHMARKS.md, "Settings re-learned while
//! running"). A [`Retuner`] repeats the tuning every `every` executions observed, over the
//! newest `every` records, with the serving model, the setting in force as the one kept
//! without evidence: the same trials, the same significance test and byte rule. The replay
//! calls it after each execution ([`crate::replay_retuned`]); the coordinator runs one
//! round per retraining round on the history agents reported.

use prewarm_core::HistoryRecord;
use serde::Serialize;

use crate::tune::{Setting, tune};
use crate::{Policy, SimConfig};

/// One re-tuning round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Retuned {
    /// Executions observed when it ran.
    pub at: usize,
    /// The setting in force before.
    pub from: Setting,
    /// The setting in force after (`from` when kept).
    pub to: Setting,
    /// Of the window's counted executions, warm under `to` and cold under `from`.
    pub gained: u64,
    /// And the reverse.
    pub lost: u64,
}

/// Re-learns the settings of one policy every `every` executions (see the module docs).
pub struct Retuner<'a> {
    every: usize,
    cfg: SimConfig,
    model: String,
    make: Box<dyn FnMut() -> Option<Policy> + 'a>,
    /// Every round, in order.
    pub log: Vec<Retuned>,
}

impl<'a> Retuner<'a> {
    /// A retuner for the policy `model` (a fresh copy from `make` per trial) starting with
    /// the setting `cfg` carries, re-tuning every `every` executions after the first `every`
    /// (the warm-up, tuned before the run); 0: never.
    pub fn new(
        every: usize,
        cfg: &SimConfig,
        model: &str,
        make: impl FnMut() -> Option<Policy> + 'a,
    ) -> Self {
        Self {
            every,
            cfg: cfg.clone(),
            model: model.to_owned(),
            make: Box::new(make),
            log: Vec::new(),
        }
    }

    /// The setting in force.
    pub fn setting(&self) -> Setting {
        Setting::of(&self.cfg)
    }

    /// Called with the history observed so far: a new setting when a round ran and changed
    /// it.
    pub fn after(&mut self, history: &[HistoryRecord]) -> Option<Setting> {
        let n = history.len();
        if self.every == 0 || n < 2 * self.every || !n.is_multiple_of(self.every) {
            return None;
        }
        self.round(n, &history[n - self.every..])
    }

    /// One round over `window`: its outcome logged, the new setting when it changed.
    fn round(&mut self, at: usize, window: &[HistoryRecord]) -> Option<Setting> {
        let make = &mut self.make;
        let tuned = tune(&self.model, window, &self.cfg, &[&self.model], |_| {
            make().ok_or(())
        })
        .ok()?;
        let from = Setting::of(&self.cfg);
        let chosen = tuned.trials.iter().find(|t| tuned.is_chosen(t));
        self.log.push(Retuned {
            at,
            from,
            to: tuned.chosen,
            gained: chosen.map_or(0, |t| t.gained),
            lost: chosen.map_or(0, |t| t.lost),
        });
        if tuned.chosen == from {
            return None;
        }
        self.cfg = tuned.chosen.apply(&self.cfg);
        Some(tuned.chosen)
    }
}
