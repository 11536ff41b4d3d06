//! Continuous learning in production: every `every`, the coordinator trains a challenger
//! from the newest history its agents reported (the brain keeps a bounded window), scores it
//! against the serving model on the newest held-back part of that window
//! ([`prewarm_predict::neural::retrain`]), and swaps only when the challenger's log-loss is
//! lower. A winner is saved to the model directory first (written beside it and renamed
//! into place, so a restart or SIGHUP loads it whole), then served with its per-key state
//! rebuilt from the window. Training runs on a blocking thread, one round at a time, within
//! its wall-clock budget; the event path keeps serving the old model meanwhile. Rounds,
//! swaps and both scores are in `status` and `/metrics`.
//!
//! With `--retrain-judge replay` (the default) the two are compared by what their decisions
//! do: each drives the decision engine over a replay of the window (`prewarm_sim`, the same
//! engine, on a simulated fleet of the attached capacities' count and median budget, with
//! the coordinator's settings), and the one that starts more executions warm serves; a tie
//! falls back to log-loss. A lower log-loss does not mean more warm starts (on Azure
//! Functions 2019 the GRU predicts better and the Transformer decides better).
//!
//! Records that arrive while a round runs reach the new model only through later rounds'
//! windows (its per-key state is rebuilt from the window the round took).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prewarm_core::{HistoryRecord, Predictor};
use prewarm_predict::neural::retrain::{RetrainConfig, RetrainError, Round, copy_model};
use prewarm_predict::neural::{Learned, Model};
use prewarm_sim::SimConfig;

use crate::{Brain, Coordinator, CoordinatorMetrics};

/// How the coordinator retrains.
#[derive(Clone, Debug)]
pub struct RetrainSettings {
    /// Time between rounds.
    pub every: Duration,
    /// The model directory (`gru:DIR`): the first champion, and where winners are saved.
    pub dir: PathBuf,
    /// History records kept for training (the newest).
    pub history: usize,
    /// One round's settings.
    pub round: RetrainConfig,
    /// Compare the two models by replaying the window through the decision engine over a
    /// fleet shaped like the attached one (`--retrain-judge replay`, the default), not by
    /// log-loss alone.
    pub replay_judge: bool,
}

/// What `status` shows of the serving model.
#[derive(Clone, Debug, Default)]
pub struct ModelReport {
    /// Whether background retraining runs.
    pub retraining: bool,
    /// Rounds completed.
    pub rounds: u64,
    /// Rounds whose challenger now serves.
    pub swaps: u64,
    /// Rounds that failed.
    pub failures: u64,
    /// The latest completed round.
    pub last: Option<Round>,
    /// When it completed, Unix milliseconds.
    pub last_unix_ms: i64,
    /// The latest failure, or why no round could run yet.
    pub last_error: String,
}

/// Writes `m` to `dir` whole: saved beside it, then renamed into place.
fn save_atomically(m: &mut Model, dir: &Path) -> Result<(), String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no file name", dir.display()))?;
    let parent = dir.parent().unwrap_or_else(|| Path::new("."));
    let (new, old) = (
        parent.join(format!(".{name}.new")),
        parent.join(format!(".{name}.old")),
    );
    let _ = std::fs::remove_dir_all(&new);
    let _ = std::fs::remove_dir_all(&old);
    m.save(&new).map_err(|e| e.to_string())?;
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| format!("moving the old model aside: {e}"))?;
    }
    std::fs::rename(&new, dir).map_err(|e| format!("renaming the new model into place: {e}"))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// A finished round: its figures and, when the challenger won, the predictor to serve.
type Outcome = Result<(Round, Option<Box<dyn Predictor>>), RetrainError>;

/// One round on a blocking thread's time: the champion comes back (replaced by the winner).
fn round(
    champion: Model,
    records: &[HistoryRecord],
    cfg: &RetrainConfig,
    dir: &Path,
    judge: Option<SimConfig>,
) -> (Model, Outcome, Option<String>) {
    match prewarm_sim::tune::challenge(&champion, records, cfg, judge) {
        Ok((r, Some(mut won))) => {
            let saved = save_atomically(&mut won, dir).err();
            match copy_model(&won) {
                Ok(copy) => {
                    let mut serving = Learned::new(copy, prewarm_predict::MAX_KEYS);
                    serving.observe_batch(records);
                    let serving: Box<dyn Predictor> = Box::new(serving);
                    (won, Ok((r, Some(serving))), saved)
                }
                Err(e) => (champion, Err(e), saved),
            }
        }
        Ok((r, None)) => (champion, Ok((r, None)), None),
        Err(e) => (champion, Err(e), None),
    }
}

/// Retrains in the background until the coordinator stops (see the module docs).
pub async fn run_retraining(c: Arc<Coordinator>, s: RetrainSettings) {
    let Some(brain) = c.brain.as_ref() else {
        return;
    };
    brain.keep_history(s.history);
    let mut champion = match Model::load(&s.dir) {
        Ok(m) => m,
        Err(e) => {
            note_round_error(
                brain,
                &c.metrics,
                format!("loading {}: {e}", s.dir.display()),
                true,
            );
            return;
        }
    };
    brain.model.lock().expect("model lock poisoned").retraining = true;
    let mut tick = tokio::time::interval(s.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let records = brain.recent_history();
        let (cfg, dir) = (s.round.clone(), s.dir.clone());
        let judge = s.replay_judge.then(|| judge_config(&c, brain));
        let joined = tokio::task::spawn_blocking(move || {
            let (m, out, save_error) = round(champion, &records, &cfg, &dir, judge);
            (m, out, save_error)
        })
        .await;
        let Ok((m, out, save_error)) = joined else {
            note_round_error(
                brain,
                &c.metrics,
                "the retraining thread panicked".into(),
                true,
            );
            return;
        };
        champion = m;
        if let Some(e) = save_error {
            tracing::warn!("retraining: the new model serves but was not saved: {e}");
        }
        note_round(brain, &c.metrics, out);
    }
}

fn note_round(brain: &Brain, metrics: &CoordinatorMetrics, out: Outcome) {
    match out {
        Ok((r, serving)) => {
            metrics.scores.champion_log_loss.set(r.champion.log_loss);
            metrics
                .scores
                .challenger_log_loss
                .set(r.challenger.log_loss);
            if let (Some(a), Some(b)) = (r.champion.warm_rate, r.challenger.warm_rate) {
                metrics.scores.champion_warm_rate.set(a);
                metrics.scores.challenger_warm_rate.set(b);
            }
            if let Some(p) = serving {
                brain.replace(p);
                metrics.retrains_swapped.inc();
            } else {
                metrics.retrains_kept.inc();
            }
            tracing::info!(
                "retraining: challenger {:.4} vs serving {:.4} nats, replayed {} vs {} warm, on {} \
                 held-back records: {}",
                r.challenger.log_loss,
                r.champion.log_loss,
                warm_text(r.challenger.warm_rate),
                warm_text(r.champion.warm_rate),
                r.held_out,
                if r.swapped { "swapped" } else { "kept" }
            );
            let mut m = brain.model.lock().expect("model lock poisoned");
            m.rounds += 1;
            m.swaps += u64::from(r.swapped);
            m.last = Some(r);
            m.last_unix_ms = (prewarm_core::unix_now() * 1e3) as i64;
            m.last_error.clear();
        }
        Err(e @ RetrainError::TooFew { .. }) => {
            note_round_error(brain, metrics, e.to_string(), false)
        }
        Err(e) => note_round_error(brain, metrics, e.to_string(), true),
    }
}

/// A replayed warm-start rate for the log.
fn warm_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", 100.0 * r))
}

/// The replay that judges a round: the coordinator's engine settings over a fleet of the
/// attached capacities' count and median budget (one capacity of 4 GiB when none is
/// attached).
fn judge_config(c: &Coordinator, brain: &Brain) -> SimConfig {
    let ec = brain.engine_config();
    let (count, budget) = c.capacities.shape();
    SimConfig {
        capacities: count.max(1),
        cache_bytes: if budget == 0 { 4 << 30 } else { budget },
        bandwidth: ec.planner.bandwidth,
        latency_s: ec.planner.latency_s,
        lead_s: ec.planner.lead_s,
        memory_price: ec.planner.memory_price,
        top_k: ec.top_k,
        calibrate: ec.calibrate,
        spread: ec.spread,
        ahead: ec.ahead,
        planner: ec.planner.clone(),
        ..SimConfig::default()
    }
}

fn note_round_error(brain: &Brain, metrics: &CoordinatorMetrics, e: String, failed: bool) {
    if failed {
        tracing::warn!("retraining: {e}");
        metrics.retrains_failed.inc();
    }
    let mut m = brain.model.lock().expect("model lock poisoned");
    m.failures += u64::from(failed);
    m.last_error = e;
}
