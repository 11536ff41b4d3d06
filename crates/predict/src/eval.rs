//! Online evaluation: replay a history in time order; the first part only trains, then every
//! execution is first predicted (from what came before it) and then observed. This matches
//! how the coordinator uses a predictor, and never lets the future leak into the past.

use std::time::Instant;

use prewarm_core::HistoryRecord;
use serde::Serialize;

use crate::predictor::{Context, Predictor};

/// Probabilities below this count as this when scoring log-loss (a resource outside the
/// top-k list gets it too), so one miss cannot dominate the mean.
const LOG_LOSS_FLOOR: f64 = 1e-4;

/// Scores of one predictor on one history.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRow {
    /// Predictor name.
    pub model: String,
    /// Executions scored (after the warm-up part).
    pub events: u64,
    /// Share whose first read was the top prediction.
    pub top1: f64,
    /// Share whose first read was among the top 5.
    pub top5: f64,
    /// Mean negative log-likelihood of the first read (floored at 1e-4).
    pub log_loss: f64,
    /// Median prediction time, microseconds.
    pub p50_us: f64,
    /// 99th-percentile prediction time, microseconds.
    pub p99_us: f64,
}

/// Evaluates `p` on `records` (time-ordered): the first `warmup` share only trains.
pub fn evaluate(p: &mut dyn Predictor, records: &[HistoryRecord], warmup: f64) -> EvalRow {
    let start = ((records.len() as f64) * warmup.clamp(0.0, 1.0)) as usize;
    let (mut n, mut hit1, mut hit5, mut loss) = (0u64, 0u64, 0u64, 0.0);
    let mut times: Vec<f64> = Vec::with_capacity(records.len() - start);
    for (i, r) in records.iter().enumerate() {
        if i >= start {
            if let Some(truth) = r.reads.first() {
                let t = Instant::now();
                let preds = p.predict(
                    &Context {
                        ts: r.ts,
                        event: &r.event,
                    },
                    5,
                );
                times.push(t.elapsed().as_secs_f64() * 1e6);
                n += 1;
                let pos = preds.iter().position(|x| x.resource == truth.resource);
                hit1 += u64::from(pos == Some(0));
                hit5 += u64::from(pos.is_some());
                let prob = pos.map_or(0.0, |i| preds[i].probability);
                loss -= prob.max(LOG_LOSS_FLOOR).ln();
            }
        }
        p.observe(r);
    }
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let d = n.max(1) as f64;
    EvalRow {
        model: p.name().to_owned(),
        events: n,
        top1: hit1 as f64 / d,
        top5: hit5 as f64 / d,
        log_loss: loss / d,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}
