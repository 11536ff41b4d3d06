//! Online evaluation: replay a history in time order; the first part only trains, then every
//! execution is first predicted (from what came before it) and then observed. This matches
//! how the coordinator uses a predictor, and never lets the future leak into the past.

use std::collections::HashMap;
use std::time::Instant;

use prewarm_core::{HistoryRecord, ResourceId};
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
    /// The look-ahead horizon of the next three figures, seconds.
    pub horizon_s: f64,
    /// Share of the resources read by any execution within the horizon that the top 5 held.
    pub recall5_horizon: f64,
    /// The same for the executions of the event's own key.
    pub recall5_key_horizon: f64,
    /// Of the predictions with probability ≥ 0.5, the share read within the horizon.
    pub precision_p50_horizon: f64,
    /// Memory the predictor held at the end, bytes.
    pub memory_bytes: u64,
    /// Expected calibration error of the top-5 probabilities against the next read
    /// (10 equal-width bins): 0 when probabilities mean what they say.
    pub calibration_error: f64,
}

/// Resources read in a sliding window of records.
#[derive(Default)]
struct Window {
    counts: HashMap<ResourceId, u32>,
    /// Exclusive end, as an index into the window's list of records.
    end: usize,
}

impl Window {
    fn add(&mut self, r: &HistoryRecord) {
        for x in &r.reads {
            *self.counts.entry(x.resource.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, r: &HistoryRecord) {
        for x in &r.reads {
            if let Some(c) = self.counts.get_mut(&x.resource) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&x.resource);
                }
            }
        }
    }

    /// Extends the window over `list` (indexes into `records`) up to time `until`.
    fn extend(&mut self, records: &[HistoryRecord], list: &[usize], until: f64) {
        while self.end < list.len() && records[list[self.end]].ts <= until {
            self.add(&records[list[self.end]]);
            self.end += 1;
        }
    }

    fn recall(&self, preds: &[crate::Prediction]) -> Option<f64> {
        if self.counts.is_empty() {
            return None;
        }
        let hit = preds
            .iter()
            .filter(|p| self.counts.contains_key(&p.resource))
            .count();
        Some(hit as f64 / self.counts.len() as f64)
    }
}

/// Running sums for the horizon and calibration figures.
#[derive(Default)]
struct Horizon {
    recall: (f64, u64),
    recall_key: (f64, u64),
    precise: (u64, u64),
    /// Per probability bin: (sum of probabilities, hits, count).
    bins: [(f64, u64, u64); 10],
}

/// Evaluates `p` on `records` (time-ordered): the first `warmup` share only trains. Horizon
/// figures look `horizon_s` seconds ahead of each scored event (the event's own execution
/// included).
pub fn evaluate(
    p: &mut dyn Predictor,
    records: &[HistoryRecord],
    warmup: f64,
    horizon_s: f64,
) -> EvalRow {
    let start = ((records.len() as f64) * warmup.clamp(0.0, 1.0)) as usize;
    let (mut n, mut hit1, mut hit5, mut loss) = (0u64, 0u64, 0u64, 0.0);
    let mut times: Vec<f64> = Vec::with_capacity(records.len() - start);
    let all: Vec<usize> = (0..records.len()).collect();
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        by_key.entry(r.event.key.as_str()).or_default().push(i);
    }
    let mut overall = Window::default();
    let mut per_key: HashMap<&str, Window> = HashMap::new();
    let mut h = Horizon::default();
    for (i, r) in records.iter().enumerate() {
        let until = r.ts + horizon_s;
        overall.extend(records, &all, until);
        let kw = per_key.entry(r.event.key.as_str()).or_default();
        kw.extend(records, &by_key[r.event.key.as_str()], until);
        if i >= start
            && let Some(truth) = r.reads.first()
        {
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
            if let Some(x) = overall.recall(&preds) {
                h.recall = (h.recall.0 + x, h.recall.1 + 1);
            }
            if let Some(x) = kw.recall(&preds) {
                h.recall_key = (h.recall_key.0 + x, h.recall_key.1 + 1);
            }
            for (j, pr) in preds.iter().enumerate() {
                if pr.probability >= 0.5 {
                    h.precise.1 += 1;
                    h.precise.0 += u64::from(overall.counts.contains_key(&pr.resource));
                }
                let b = &mut h.bins[((pr.probability * 10.0) as usize).min(9)];
                b.0 += pr.probability;
                b.1 += u64::from(pos == Some(j));
                b.2 += 1;
            }
        }
        p.observe(r);
        overall.remove(r);
        kw.remove(r);
    }
    let total: u64 = h.bins.iter().map(|b| b.2).sum();
    let calibration_error = h
        .bins
        .iter()
        .filter(|b| b.2 > 0)
        .map(|&(sp, hits, c)| {
            (c as f64 / total as f64) * (sp / c as f64 - hits as f64 / c as f64).abs()
        })
        .sum();
    let ratio = |(s, c): (f64, u64)| if c == 0 { 0.0 } else { s / c as f64 };
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| prewarm_core::percentile(&times, q);
    let d = n.max(1) as f64;
    EvalRow {
        model: p.name().to_owned(),
        events: n,
        top1: hit1 as f64 / d,
        top5: hit5 as f64 / d,
        log_loss: loss / d,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        horizon_s,
        recall5_horizon: ratio(h.recall),
        recall5_key_horizon: ratio(h.recall_key),
        precision_p50_horizon: ratio((h.precise.0 as f64, h.precise.1)),
        calibration_error,
        memory_bytes: p.memory_bytes(),
    }
}
