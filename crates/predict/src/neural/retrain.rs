//! Champion/challenger retraining. A challenger is trained on the history before the newest
//! held-back window; the serving model (the champion) and the challenger are each scored on
//! that window the way they would serve it — fresh per-key state, warmed on what came just
//! before, then predicting each execution before learning from it (prequential log-loss,
//! the proper scoring rule the mixture also uses) and, with a [`Judge`], driving the
//! decision engine over a replay of the window. The challenger replaces the champion when
//! its decisions start more of the window's executions warm, and where they tie (or nothing
//! was replayed) when its log-loss is lower. The window is newer than anything the champion
//! was trained on, so neither has seen it.

use std::time::{Duration, Instant};

use prewarm_core::HistoryRecord;
use serde::Serialize;

use super::{Learned, Model, TrainError, TrainOptions, train};
use crate::eval::evaluate;

/// Settings of one round.
#[derive(Clone, Debug)]
pub struct RetrainConfig {
    /// Share of the history (the newest) held back for the comparison.
    pub holdout: f64,
    /// Fewest records a round needs (fewer: no round).
    pub min_records: usize,
    /// Training wall-clock budget of the challenger.
    pub budget: Duration,
    /// Records before the window that warm each model's per-key state, at most.
    pub warm_records: usize,
    /// Training options of the challenger (default: the champion's architecture with
    /// [`TrainOptions::new`]'s settings and `budget`).
    pub options: Option<TrainOptions>,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self {
            holdout: 0.2,
            min_records: 1_000,
            budget: Duration::from_secs(60),
            warm_records: 20_000,
            options: None,
        }
    }
}

/// How a model did on the held-back window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    /// Mean log-loss of what was read (nats; lower is better).
    pub log_loss: f64,
    /// Share of executions whose read was among the top 5 predicted.
    pub top5: f64,
    /// Executions scored.
    pub events: u64,
    /// Share of the window's executions its decisions started warm, when a [`Judge`]
    /// replayed them.
    pub warm_rate: Option<f64>,
}

/// Replays a window of history with a model deciding (the decision engine over a simulated
/// fleet, `prewarm_sim::judge`): `(model, records, warm-up share)` → the share of the
/// executions after the warm-up share that started warm. Models are compared by it because
/// a lower log-loss does not mean more warm starts (BENCHMARKS.md, "Choosing the model and
/// the settings by replay").
pub type Judge<'a> =
    dyn Fn(Box<dyn crate::Predictor>, &[HistoryRecord], f64) -> f64 + Send + Sync + 'a;

/// What one round found.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// Records the challenger was trained on.
    pub trained_on: usize,
    /// Records in the held-back window.
    pub held_out: usize,
    /// The serving model on the window.
    pub champion: Score,
    /// The new model on the window.
    pub challenger: Score,
    /// Whether the challenger won.
    pub swapped: bool,
    /// Seconds the round took.
    pub seconds: f64,
}

/// Why no round ran.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// Not enough history yet.
    #[error("{have} history records, a round needs {need}")]
    TooFew {
        /// Records available.
        have: usize,
        /// Records needed.
        need: usize,
    },
    /// Training failed.
    #[error("training the challenger: {0}")]
    Train(#[from] TrainError),
    /// A model could not be copied for scoring.
    #[error("copying a model: {0}")]
    Copy(String),
}

/// A copy of `m` (the weights are shared, reference-counted tensors).
pub fn copy_model(m: &Model) -> Result<Model, RetrainError> {
    Model::new(m.config.clone(), m.tensors.clone()).map_err(|e| RetrainError::Copy(e.to_string()))
}

/// `m` scored on `history[split..]`, warmed on at most `warm` records before it; with a
/// `judge`, also replayed there.
fn score(
    m: &Model,
    history: &[HistoryRecord],
    split: usize,
    warm: usize,
    judge: Option<&Judge<'_>>,
) -> Result<Score, RetrainError> {
    let from = split.saturating_sub(warm);
    let part = &history[from..];
    let warmup = (split - from) as f64 / part.len().max(1) as f64;
    let mut p = Learned::new(copy_model(m)?, crate::MAX_KEYS);
    let row = evaluate(&mut p, part, warmup, 60.0);
    let warm_rate = match judge {
        Some(j) => Some(j(
            Box::new(Learned::new(copy_model(m)?, crate::MAX_KEYS)),
            part,
            warmup,
        )),
        None => None,
    };
    Ok(Score {
        log_loss: row.log_loss,
        top5: row.top5,
        events: row.events,
        warm_rate,
    })
}

/// Whether `challenger` beats `champion`: by the replay's warm starts when both were
/// replayed and differ, else by log-loss.
pub fn better(challenger: &Score, champion: &Score) -> bool {
    match (challenger.warm_rate, champion.warm_rate) {
        (Some(a), Some(b)) if a != b => a > b,
        _ => challenger.log_loss < champion.log_loss,
    }
}

/// One round against `champion` on `history` (time-ordered): the round's figures, and the
/// challenger when it won.
pub fn challenge(
    champion: &Model,
    history: &[HistoryRecord],
    cfg: &RetrainConfig,
) -> Result<(Round, Option<Model>), RetrainError> {
    challenge_judged(champion, history, cfg, None)
}

/// [`challenge`], the two compared by the warm starts `judge` finds when they differ.
pub fn challenge_judged(
    champion: &Model,
    history: &[HistoryRecord],
    cfg: &RetrainConfig,
    judge: Option<&Judge<'_>>,
) -> Result<(Round, Option<Model>), RetrainError> {
    let started = Instant::now();
    if history.len() < cfg.min_records.max(10) {
        return Err(RetrainError::TooFew {
            have: history.len(),
            need: cfg.min_records.max(10),
        });
    }
    let split = history.len() - ((history.len() as f64 * cfg.holdout.clamp(0.05, 0.5)) as usize);
    let mut opts = cfg.options.clone().unwrap_or_else(|| {
        let mut o = TrainOptions::new(champion.config.arch);
        o.time_budget = Some(cfg.budget);
        o
    });
    opts.seed = champion.config.training.seed.wrapping_add(1);
    let challenger = train(&history[..split], &opts, &mut |_| {})?;
    let champion_score = score(champion, history, split, cfg.warm_records, judge)?;
    let challenger_score = score(&challenger, history, split, cfg.warm_records, judge)?;
    let swapped = better(&challenger_score, &champion_score);
    let round = Round {
        trained_on: split,
        held_out: history.len() - split,
        champion: champion_score,
        challenger: challenger_score,
        swapped,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((round, swapped.then_some(challenger)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::neural::Arch;
    use crate::predictor::test_record;

    /// Keys cycling through loops of resources; `shift` changes which loop each key walks.
    fn cycles(n: usize, shift: usize) -> Vec<HistoryRecord> {
        let loops = [
            ["a", "b", "c"],
            ["d", "e", "f"],
            ["a", "e", "c"],
            ["f", "b", "d"],
        ];
        (0..n)
            .map(|i| {
                let key = i % 8;
                let res = loops[(key + shift) % loops.len()][(i / 8) % 3];
                test_record(i as f64, &format!("k{key}"), &format!("r/{res}"))
            })
            .collect()
    }

    fn options(lr: f64, epochs: u32) -> TrainOptions {
        let mut o = TrainOptions::new(Arch::Gru {
            embed: 16,
            hidden: 24,
        });
        (o.max_epochs, o.patience, o.seq_len, o.batch, o.lr) = (epochs, epochs, 8, 4, lr);
        o.time_budget = None;
        o
    }

    fn cfg(o: TrainOptions) -> RetrainConfig {
        RetrainConfig {
            min_records: 100,
            options: Some(o),
            ..RetrainConfig::default()
        }
    }

    #[test]
    fn a_challenger_trained_on_the_new_pattern_replaces_a_stale_champion() {
        let champion = train(&cycles(1_200, 0), &options(1e-2, 25), &mut |_| {}).unwrap();
        // The keys now walk other loops: the champion is stale.
        let now: Vec<_> = cycles(1_200, 1);
        let (round, won) = challenge(&champion, &now, &cfg(options(1e-2, 25))).unwrap();
        assert!(round.swapped, "{round:?}");
        assert!(won.is_some());
        assert!(
            round.challenger.log_loss < round.champion.log_loss,
            "{round:?}"
        );
        assert_eq!(round.held_out, 240);
        assert!(round.challenger.events > 100, "{round:?}");
    }

    #[test]
    fn the_replayed_warm_starts_decide_and_log_loss_breaks_their_ties() {
        let champion = train(&cycles(1_200, 0), &options(1e-2, 25), &mut |_| {}).unwrap();
        let now: Vec<_> = cycles(1_200, 1);
        // A judge whose replay starts more executions warm with the champion (asked first)
        // though the challenger predicts the new loops better.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let judge = |p: Box<dyn crate::Predictor>, records: &[HistoryRecord], warmup: f64| {
            assert_eq!(p.name(), "gru");
            assert!(records.len() > 240 && (0.0..1.0).contains(&warmup));
            match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => 0.9,
                _ => 0.5,
            }
        };
        let (round, won) =
            challenge_judged(&champion, &now, &cfg(options(1e-2, 25)), Some(&judge)).unwrap();
        assert!(
            round.challenger.log_loss < round.champion.log_loss,
            "{round:?}"
        );
        assert_eq!(round.champion.warm_rate, Some(0.9));
        assert_eq!(round.challenger.warm_rate, Some(0.5));
        assert!(!round.swapped && won.is_none(), "{round:?}");
        // Equal warm starts: the lower log-loss wins.
        let score = |log_loss, warm_rate| Score {
            log_loss,
            warm_rate,
            ..Score::default()
        };
        assert!(better(&score(1.0, Some(0.8)), &score(2.0, Some(0.8))));
        assert!(!better(&score(1.0, Some(0.7)), &score(2.0, Some(0.8))));
        assert!(better(&score(1.0, None), &score(2.0, Some(0.8))));
    }

    #[test]
    fn a_worse_challenger_is_not_served_and_too_little_history_is_refused() {
        let history = cycles(1_200, 0);
        let champion = train(&history, &options(1e-2, 25), &mut |_| {}).unwrap();
        // A challenger that barely trains (one epoch at a tiny rate) loses on the same pattern.
        let (round, won) = challenge(&champion, &history, &cfg(options(1e-6, 1))).unwrap();
        assert!(!round.swapped, "{round:?}");
        assert!(won.is_none());
        let e = challenge(&champion, &history[..50], &cfg(options(1e-2, 1)))
            .err()
            .unwrap();
        assert!(
            matches!(
                e,
                RetrainError::TooFew {
                    have: 50,
                    need: 100
                }
            ),
            "{e}"
        );
    }
}
