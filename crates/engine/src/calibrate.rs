//! Online calibration of the model's probabilities: the planner prices every prefetch with
//! `p`, so a model that says 0.9 for what is read one time in ten over-prefetches, and one
//! that says 0.1 for what is read nine times in ten under-prefetches (the GRU's failure on a
//! web log: better recall than Markov, fewer warm starts). The engine keeps, per probability
//! bin, how often a predicted state was in fact read by the event's key within the scoring
//! window, and hands the planner that measured frequency instead of the raw number.
//!
//! - **Outcomes.** Each decided event leaves its predictions pending under its key; a
//!   completed execution of that key marks the pending predictions it read as hits (every
//!   pending one made at most `window` before it: a prediction is "read soon", not "read by
//!   exactly this execution", so the coordinator's one record per `ensure` and the replay's
//!   one record per execution score alike). A pending event older than the window, or
//!   pushed out by newer ones of its key, is scored: each prediction a hit or a miss.
//! - **Map.** Per bin with scored predictions a Beta posterior centred on the bin's mean
//!   raw probability (`PRIOR` pseudo-observations, so a few outcomes move it little),
//!   counts halved when a bin exceeds `MAX_WEIGHT` (it follows drift), made monotone by
//!   pooling adjacent violators, interpolated between bin means and flat beyond them (an
//!   unscored model passes through unchanged).

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use prewarm_core::{HistoryRecord, ResourceId};

/// Upper edges of the probability bins (top-k probabilities crowd near 0).
const EDGES: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
];
/// Pseudo-observations at the raw probability in every bin.
const PRIOR: f64 = 20.0;
/// A bin's weight beyond which its counts are halved.
const MAX_WEIGHT: f64 = 20_000.0;
/// Pending events kept per key.
const PER_KEY: usize = 8;
/// Keys with pending events beyond which the oldest half is scored and dropped.
const MAX_KEYS: usize = 1 << 17;

#[derive(Clone, Copy, Debug, Default)]
struct Bin {
    /// Scored predictions (weight).
    n: f64,
    /// Of which read.
    hits: f64,
    /// Sum of their raw probabilities.
    raw: f64,
}

#[derive(Clone, Debug)]
struct Pending {
    ts: f64,
    preds: Vec<(ResourceId, f64, bool)>,
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Calibration {
    bins: [Bin; EDGES.len()],
    window: f64,
    pending: HashMap<String, (u64, VecDeque<Pending>)>,
    tick: u64,
    /// (mean raw probability, calibrated) per bin, monotone; rebuilt when stale.
    points: Vec<(f64, f64)>,
    stale: bool,
    scored: u64,
}

fn bin_of(p: f64) -> usize {
    EDGES
        .iter()
        .position(|e| p <= *e)
        .unwrap_or(EDGES.len() - 1)
}

impl Calibration {
    /// Scores predictions against the key's reads within `window` seconds.
    pub fn new(window: f64) -> Self {
        Self {
            bins: [Bin::default(); EDGES.len()],
            window: window.max(1e-3),
            pending: HashMap::new(),
            tick: 0,
            points: Vec::new(),
            stale: true,
            scored: 0,
        }
    }

    /// Predictions scored so far.
    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// Records the predictions made for an event of `key` at `ts`.
    pub fn predicted(&mut self, key: &str, ts: f64, preds: &[(ResourceId, f64)]) {
        if preds.is_empty() {
            return;
        }
        if self.pending.len() >= MAX_KEYS && !self.pending.contains_key(key) {
            self.score_oldest_keys();
        }
        self.tick += 1;
        let tick = self.tick;
        let (seen, queue) = self.pending.entry(key.to_owned()).or_default();
        *seen = tick;
        queue.push_back(Pending {
            ts,
            preds: preds.iter().map(|(r, p)| (r.clone(), *p, false)).collect(),
        });
        let mut out = Vec::new();
        while queue.len() > PER_KEY {
            out.extend(queue.pop_front());
        }
        for p in out {
            self.score(p);
        }
    }

    /// A completed execution: its reads are hits for its key's pending predictions.
    pub fn observe(&mut self, rec: &HistoryRecord) {
        let Some((_, queue)) = self.pending.get_mut(&rec.event.key) else {
            return;
        };
        let mut done = Vec::new();
        while queue.front().is_some_and(|p| p.ts < rec.ts - self.window) {
            done.extend(queue.pop_front());
        }
        for p in queue.iter_mut().filter(|p| p.ts <= rec.ts) {
            for (r, _, hit) in &mut p.preds {
                *hit |= rec.reads.iter().any(|rd| rd.resource == *r);
            }
        }
        if queue.is_empty() {
            self.pending.remove(&rec.event.key);
        }
        for p in done {
            self.score(p);
        }
    }

    fn score_oldest_keys(&mut self) {
        let mut ticks: Vec<u64> = self.pending.values().map(|(t, _)| *t).collect();
        let mid = ticks.len() / 2;
        ticks.select_nth_unstable(mid);
        let cut = ticks[mid];
        let old: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (t, _))| *t <= cut)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            if let Some((_, queue)) = self.pending.remove(&k) {
                for p in queue {
                    self.score(p);
                }
            }
        }
    }

    fn score(&mut self, p: Pending) {
        for (_, raw, hit) in p.preds {
            let b = &mut self.bins[bin_of(raw)];
            b.n += 1.0;
            b.raw += raw;
            b.hits += f64::from(u8::from(hit));
            if b.n > MAX_WEIGHT {
                b.n *= 0.5;
                b.raw *= 0.5;
                b.hits *= 0.5;
            }
            self.scored += 1;
        }
        self.stale = true;
    }

    /// The calibrated probability for a raw one.
    pub fn map(&mut self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        if self.scored == 0 {
            return p;
        }
        if self.stale {
            self.rebuild();
        }
        interpolate(&self.points, p)
    }

    /// Beta posteriors per bin, pooled until monotone.
    fn rebuild(&mut self) {
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new(); // (weight, Σ value·w, Σ raw·w)
        // Bins without scored predictions say nothing: the map is flat beyond the data.
        for b in self.bins.iter().filter(|b| b.n > 0.0) {
            let centre = b.raw / b.n;
            let value = (b.hits + PRIOR * centre) / (b.n + PRIOR);
            let w = b.n + PRIOR;
            blocks.push((w, value * w, centre * w));
            // Pool adjacent violators.
            while blocks.len() >= 2 {
                let (w2, v2, _) = blocks[blocks.len() - 1];
                let (w1, v1, _) = blocks[blocks.len() - 2];
                if v1 / w1 <= v2 / w2 {
                    break;
                }
                let (b2, b1) = (blocks.pop().expect("two"), blocks.pop().expect("two"));
                blocks.push((b1.0 + b2.0, b1.1 + b2.1, b1.2 + b2.2));
            }
        }
        self.points = blocks
            .iter()
            .map(|(w, v, c)| (c / w, (v / w).clamp(0.0, 1.0)))
            .collect();
        self.stale = false;
    }
}

/// Piecewise-linear through `points` (sorted by x), flat beyond the ends.
fn interpolate(points: &[(f64, f64)], x: f64) -> f64 {
    let Some(first) = points.first() else {
        return x;
    };
    if x <= first.0 {
        return first.1 * if first.0 > 0.0 { x / first.0 } else { 1.0 };
    }
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            let t = if x1 > x0 { (x - x0) / (x1 - x0) } else { 1.0 };
            return y0 + t * (y1 - y0);
        }
    }
    points.last().map_or(x, |l| l.1)
}

#[cfg(test)]
mod tests;
