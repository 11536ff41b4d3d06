//! Azure Functions' hybrid histogram policy (Shahrad et al., "Serverless in the Wild",
//! USENIX ATC'20), as a predictor.
//!
//! Per resource, the idle times between consecutive reads go into a histogram of 1-minute
//! bins over 4 hours (longer ones are counted as out of bounds). When the histogram is
//! representative (enough samples, few out of bounds, and a concentrated pattern: coefficient
//! of variation of the bin counts above 2), the resource should be loaded from the 5th
//! percentile of its idle time (minus a 10% margin) after its last use and kept until the
//! 99th percentile (plus 10%). Otherwise the fallback keeps it for the whole 4-hour range
//! with no pre-warming. [`Histogram::windows`] exposes those windows as keep-alive hints.
//!
//! As a predictor, a resource's score at time t is the histogram's hazard at its current
//! idle time — the chance that its next use falls in the current minute, given it has not
//! come yet — inside its window, and 0 outside. Scores are normalised into a distribution.

use std::collections::HashMap;

use prewarm_core::{HistoryRecord, ResourceId};

use crate::predictor::{Context, Prediction, Predictor, latest};

/// Bin width, seconds.
const BIN_S: f64 = 60.0;
/// Bins: 4 hours of minutes.
const BINS: usize = 240;
/// Samples needed before a histogram is trusted.
const MIN_SAMPLES: u32 = 5;
/// Out-of-bounds share above which a histogram is not representative.
const MAX_OOB_SHARE: f64 = 0.5;
/// Coefficient of variation of bin counts above which the pattern counts as concentrated.
const MIN_CV: f64 = 2.0;
/// Margins on the percentiles.
const MARGIN: f64 = 0.1;

#[derive(Clone)]
struct IdleHistogram {
    counts: Vec<u32>,
    total: u32,
    oob: u32,
    last: f64,
    /// `window()` as of the last observation (it only changes when the histogram does).
    cached: (f64, f64),
    /// `before[b]`: samples in bins below `b` (kept with `counts`, so `hazard` is O(1)).
    before: Vec<u32>,
}

impl IdleHistogram {
    fn percentile_s(&self, q: f64) -> f64 {
        let target = (q * f64::from(self.total)).ceil().max(1.0) as u32;
        let mut acc = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= target {
                return (i + 1) as f64 * BIN_S;
            }
        }
        BINS as f64 * BIN_S
    }

    fn representative(&self) -> bool {
        if self.total < MIN_SAMPLES || f64::from(self.oob) > MAX_OOB_SHARE * f64::from(self.total) {
            return false;
        }
        let n = BINS as f64;
        let mean = self.counts.iter().map(|&c| f64::from(c)).sum::<f64>() / n;
        if mean == 0.0 {
            return false;
        }
        let var = self
            .counts
            .iter()
            .map(|&c| (f64::from(c) - mean).powi(2))
            .sum::<f64>()
            / n;
        var.sqrt() / mean > MIN_CV
    }

    /// (pre-warm after last use, keep alive until), seconds since the last use.
    fn window(&self) -> (f64, f64) {
        if self.representative() {
            let head = self.percentile_s(0.05) * (1.0 - MARGIN);
            // The 5th percentile's bin starts one bin earlier than its upper edge.
            let prewarm = (head - BIN_S).max(0.0);
            (prewarm, self.percentile_s(0.99) * (1.0 + MARGIN))
        } else {
            (0.0, BINS as f64 * BIN_S)
        }
    }

    fn hazard(&self, idle_s: f64) -> f64 {
        let b = (idle_s / BIN_S) as usize;
        if b >= BINS || self.total == 0 {
            return 0.0;
        }
        let left = self.total - self.before[b];
        if left == 0 {
            0.0
        } else {
            f64::from(self.counts[b]) / f64::from(left)
        }
    }
}

/// The hybrid histogram policy.
#[derive(Default)]
pub struct Histogram {
    per: HashMap<ResourceId, IdleHistogram>,
}

impl Histogram {
    /// An empty policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keep-alive hint for `resource`: load it `.0` seconds after its last use and keep it
    /// until `.1` seconds after. `None` for a resource never seen.
    pub fn windows(&self, resource: &ResourceId) -> Option<(f64, f64)> {
        self.per.get(resource).map(|h| h.cached)
    }
}

impl Predictor for Histogram {
    fn name(&self) -> &str {
        "histogram"
    }

    fn observe(&mut self, record: &HistoryRecord) {
        for read in &record.reads {
            match self.per.get_mut(&read.resource) {
                Some(h) => {
                    let idle = (record.ts - h.last).max(0.0);
                    let b = (idle / BIN_S) as usize;
                    if b < BINS {
                        h.counts[b] += 1;
                        for x in &mut h.before[b + 1..] {
                            *x += 1;
                        }
                    } else {
                        h.oob += 1;
                    }
                    h.total += 1;
                    h.last = record.ts;
                    h.cached = h.window();
                }
                None => {
                    self.per.insert(
                        read.resource.clone(),
                        IdleHistogram {
                            counts: vec![0; BINS],
                            total: 0,
                            oob: 0,
                            last: record.ts,
                            cached: (0.0, BINS as f64 * BIN_S),
                            before: vec![0; BINS],
                        },
                    );
                }
            }
        }
    }

    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        let mut scored: Vec<(f64, &ResourceId)> = self
            .per
            .iter()
            .filter_map(|(r, h)| {
                let idle = (ctx.ts - h.last).max(0.0);
                let (from, until) = h.cached;
                if idle < from || idle > until {
                    return None;
                }
                // A small floor keeps resources inside their window ranked above nothing.
                Some((h.hazard(idle).max(1e-6), r))
            })
            .collect();
        let sum: f64 = scored.iter().map(|(s, _)| s).sum();
        let order = |a: &(f64, &ResourceId), b: &(f64, &ResourceId)| {
            b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1))
        };
        // Only the top k are wanted: select them first (thousands of resources may be inside
        // their windows), then order those.
        if k > 0 && scored.len() > k {
            scored.select_nth_unstable_by(k - 1, order);
            scored.truncate(k);
        }
        scored.sort_by(order);
        scored
            .into_iter()
            .take(k)
            .map(|(s, r)| latest(r.clone(), s / sum))
            .collect()
    }

    fn keep_alive(&self, resource: &ResourceId) -> Option<f64> {
        self.windows(resource).map(|(_, keep)| keep)
    }

    fn windows(&self, resource: &ResourceId) -> Option<(f64, f64)> {
        Histogram::windows(self, resource)
    }

    fn memory_bytes(&self) -> u64 {
        self.per
            .keys()
            .map(|r| crate::baselines::id_bytes(r) + 4 * BINS as u64 + 64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: f64, res: &str) -> HistoryRecord {
        crate::predictor::test_record(ts, "app", res)
    }

    #[test]
    fn periodic_function_gets_a_tight_window() {
        let mut h = Histogram::new();
        // Every 10 minutes, 30 times.
        for i in 0..30 {
            h.observe(&rec(f64::from(i) * 600.0, "fn/timer"));
        }
        let (from, until) = h.windows(&ResourceId::new("fn/timer").unwrap()).unwrap();
        assert!((480.0..=600.0).contains(&from), "pre-warm from {from}");
        // 600 s idles fall in the bin ending at 660 s; +10% margin.
        assert!((600.0..=730.0).contains(&until), "keep until {until}");
        let last = 29.0 * 600.0;
        let ev = rec(0.0, "x").event;
        assert!(
            h.predict(
                &Context {
                    ts: last + 60.0,
                    event: &ev
                },
                5
            )
            .is_empty(),
            "too early: unloaded"
        );
        let p = h.predict(
            &Context {
                ts: last + 590.0,
                event: &ev,
            },
            5,
        );
        assert_eq!(p[0].resource.as_str(), "fn/timer");
    }

    #[test]
    fn erratic_or_rare_functions_fall_back_to_keep_alive() {
        let mut h = Histogram::new();
        for t in [0.0, 5.0, 4000.0, 4100.0, 9000.0, 9001.0, 13000.0] {
            h.observe(&rec(t, "fn/erratic"));
        }
        h.observe(&rec(0.0, "fn/once"));
        assert_eq!(
            h.windows(&ResourceId::new("fn/once").unwrap()),
            Some((0.0, 14_400.0))
        );
        let (from, _) = h.windows(&ResourceId::new("fn/erratic").unwrap()).unwrap();
        assert_eq!(from, 0.0);
        assert!(h.windows(&ResourceId::new("fn/unknown").unwrap()).is_none());
    }
}
