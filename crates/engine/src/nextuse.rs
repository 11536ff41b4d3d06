//! When is a state needed next? Per resource, the engine learns the distribution of the idle
//! time between consecutive uses (a log-binned histogram that forgets slowly), backed off to
//! the distribution pooled over every resource while a resource has few samples. From it:
//!
//! - the chance of a use within a horizon given the time already idle (the hazard view that
//!   eviction and admission price in seconds), and
//! - the keep-alive that maximises `fetch · P(reuse before T) − price · bytes · E[time held]`
//!   (optimal stopping over the bin edges; a price of 0 keeps until pressure).
//!
//! This is Azure's hybrid histogram (ATC'20) generalised from one keep/pre-warm window to a
//! full conditional distribution, as LRB (NSDI'20) uses next-request times for eviction.

use foldhash::HashMap;

use prewarm_core::ResourceId;

/// Bins: `[0, BASE)`, then `[BASE·2^(k-1), BASE·2^k)` for k = 1..BINS-2, then a tail.
pub const BINS: usize = 28;
/// Width of the first bin, seconds.
const BASE: f64 = 0.05;
/// Samples a distribution holds before it halves them all (it forgets slowly).
const WINDOW: f32 = 256.0;
/// Weight of the pooled distribution in a resource's estimate (pseudo-samples).
const PRIOR: f64 = 2.0;

/// Lower edge of bin `k`, seconds.
pub fn edge(k: usize) -> f64 {
    match k {
        0 => 0.0,
        k if k >= BINS => f64::INFINITY,
        k => BASE * f64::powi(2.0, k as i32 - 1),
    }
}

fn bin_of(gap: f64) -> usize {
    if gap < BASE {
        return 0; // and NaN
    }
    let x = gap / BASE; // ≥ 1, normal or infinite
    if !x.is_finite() {
        return BINS - 1;
    }
    // ⌊log₂ x⌋ is the binary exponent of a normal number: no logarithm needed.
    let exp = ((x.to_bits() >> 52) & 0x7ff) as usize - 1023;
    (exp + 1).min(BINS - 1)
}

/// Where an idle time falls: its bin and the share of that bin above it (log-uniform
/// inside a bin, uniform in the first; the tail bin is all "later than anything seen").
/// The same for every distribution, so computed once per query (it costs a logarithm).
#[derive(Clone, Copy, Debug)]
struct Position {
    bin: usize,
    frac_above: f64,
}

impl Position {
    fn of(a: f64) -> Self {
        let bin = bin_of(a.max(0.0));
        let frac_above = if bin == BINS - 1 {
            1.0
        } else if bin == 0 {
            1.0 - a.max(0.0) / BASE
        } else {
            // Edges double from bin 1 on: the share of [lo, 2·lo) above `a` is 1 − log₂(a/lo).
            1.0 - (a / edge(bin)).log2()
        };
        Self {
            bin,
            frac_above: frac_above.clamp(0.0, 1.0),
        }
    }
}

/// A histogram of idle times, kept as suffix sums: `above[k]` is the weight of bins `k..`
/// (so `above[0]` is the total), which is what survival queries read — one lookup, not a
/// sum over the later bins.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IdleDist {
    above: [f32; BINS],
}

impl IdleDist {
    /// Counts one idle time.
    pub fn observe(&mut self, gap_s: f64) {
        if !gap_s.is_finite() || gap_s < 0.0 {
            return;
        }
        if self.above[0] >= WINDOW {
            for c in &mut self.above {
                *c *= 0.5;
            }
        }
        for c in &mut self.above[..=bin_of(gap_s)] {
            *c += 1.0;
        }
    }

    /// Samples (decayed).
    pub fn samples(&self) -> f64 {
        f64::from(self.above[0])
    }

    /// Weight of bins `k..` (0 past the last).
    fn weight_from(&self, k: usize) -> f64 {
        self.above.get(k).map_or(0.0, |c| f64::from(*c))
    }

    /// Weight of bin `k`.
    fn count(&self, k: usize) -> f64 {
        self.weight_from(k) - self.weight_from(k + 1)
    }

    /// Unnormalised survival: the weight of idle times above the position's (computed once
    /// for several distributions).
    fn above_at(&self, at: Position) -> f64 {
        if self.above[0] == 0.0 {
            return 0.0;
        }
        self.weight_from(at.bin + 1) + self.count(at.bin) * at.frac_above
    }

    /// The mean of the idle times seen (bin midpoints; the tail bin, "later than anything
    /// seen", left out), with the weight it rests on; `None` when there are none.
    fn mean(&self) -> Option<(f64, f64)> {
        let (mut sum, mut n) = (0.0, 0.0);
        for k in 0..BINS - 1 {
            let mid = if k == 0 {
                BASE / 2.0
            } else {
                (edge(k) * edge(k + 1)).sqrt()
            };
            let c = self.count(k);
            sum += c * mid;
            n += c;
        }
        (n > 0.0).then(|| (sum / n, n))
    }

    /// `P(idle > a)`.
    pub fn survival(&self, a: f64) -> f64 {
        self.survival_at(Position::of(a))
    }

    fn survival_at(&self, at: Position) -> f64 {
        if self.above[0] == 0.0 {
            return 1.0;
        }
        self.above_at(at) / f64::from(self.above[0])
    }

    /// `P(idle > edge(k))` for every k at once.
    fn survival_at_edges(&self) -> [f64; BINS] {
        if self.above[0] == 0.0 {
            return [1.0; BINS];
        }
        let total = f64::from(self.above[0]);
        std::array::from_fn(|k| f64::from(self.above[k]) / total)
    }
}

/// A resource's estimate: its own histogram backed off to the pooled one.
#[derive(Clone, Copy, Debug)]
pub struct NextUse<'a> {
    own: Option<&'a IdleDist>,
    pooled: &'a IdleDist,
}

impl NextUse<'_> {
    /// `P(idle > a)`, the blend of own and pooled by their sample weights.
    pub fn survival(&self, a: f64) -> f64 {
        let at = Position::of(a);
        let n = self.own.map_or(0.0, IdleDist::samples);
        let own = self.own.map_or(1.0, |d| d.survival_at(at));
        let pooled = self.pooled.survival_at(at);
        (n * own + PRIOR * pooled) / (n + PRIOR)
    }

    /// [`NextUse::survival`] at every bin edge (what a [`crate::nextuse_curve::Curve`]
    /// holds), in one pass.
    pub fn survival_at_edges(&self) -> [f64; BINS] {
        let n = self.own.map_or(0.0, IdleDist::samples);
        let own = self.own.map_or([1.0; BINS], IdleDist::survival_at_edges);
        let pooled = self.pooled.survival_at_edges();
        std::array::from_fn(|k| (n * own[k] + PRIOR * pooled[k]) / (n + PRIOR))
    }

    /// The mean idle time between uses, own and pooled blended by their sample weights
    /// (`INFINITY` when neither saw a finite one).
    pub fn mean_gap(&self) -> f64 {
        let own = self.own.and_then(IdleDist::mean);
        let pooled = self.pooled.mean();
        match (own, pooled) {
            (Some((o, n)), Some((p, _))) => (n * o + PRIOR * p) / (n + PRIOR),
            (Some((o, _)), None) => o,
            (None, Some((p, _))) => p,
            (None, None) => f64::INFINITY,
        }
    }

    /// Chance of a use within `h` seconds, given `idle` seconds without one.
    pub fn within(&self, idle: f64, h: f64) -> f64 {
        let s = self.survival(idle.max(0.0));
        if s <= 1e-12 {
            return 0.0;
        }
        (1.0 - self.survival(idle.max(0.0) + h.max(0.0)) / s).clamp(0.0, 1.0)
    }

    /// How long after a use keeping pays: the `T` maximising
    /// `fetch · P(reuse ≤ T) − cost_per_s · E[min(idle, T)]`, over the bin edges
    /// (`INFINITY` when the price is 0 or keeping always pays).
    pub fn keep_for(&self, fetch_s: f64, cost_per_s: f64) -> f64 {
        if cost_per_s <= 0.0 {
            return f64::INFINITY;
        }
        let (mut best_t, mut best) = (0.0, 0.0);
        let mut held = 0.0; // E[min(idle, T)], built bin by bin
        let mut prev_t = 0.0;
        let mut prev_s = 1.0;
        let at_edges = self.survival_at_edges();
        for (k, s) in at_edges.iter().copied().enumerate().skip(1) {
            let t = edge(k);
            held += (t - prev_t) * 0.5 * (prev_s + s);
            let gain = fetch_s * (1.0 - s) - cost_per_s * held;
            if gain > best {
                (best_t, best) = (t, gain);
            }
            prev_t = t;
            prev_s = s;
        }
        best_t
    }
}

#[derive(Clone, Debug, Default)]
struct Stat {
    last_use: f64,
    dist: IdleDist,
}

/// What the engine knows of each resource's uses.
#[derive(Clone, Debug, Default)]
pub struct Demand {
    stats: HashMap<ResourceId, Stat>,
    pooled: IdleDist,
    /// Most resources tracked; beyond it the least recently used half is forgotten.
    cap: usize,
}

impl Demand {
    /// Tracks at most `cap` resources.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(16),
            ..Self::default()
        }
    }

    /// Records a use of `r` at `t`.
    pub fn used(&mut self, r: &ResourceId, t: f64) {
        if !self.stats.contains_key(r) {
            if self.stats.len() >= self.cap {
                self.forget_oldest();
            }
            self.stats.insert(
                r.clone(),
                Stat {
                    last_use: f64::NAN,
                    dist: IdleDist::default(),
                },
            );
        }
        let Some(s) = self.stats.get_mut(r) else {
            return;
        };
        if s.last_use.is_finite() && t >= s.last_use {
            let gap = t - s.last_use;
            s.dist.observe(gap);
            self.pooled.observe(gap);
        }
        if !s.last_use.is_finite() || t > s.last_use {
            s.last_use = t;
        }
    }

    fn forget_oldest(&mut self) {
        let mut ages: Vec<f64> = self.stats.values().map(|s| s.last_use).collect();
        let mid = ages.len() / 2;
        ages.select_nth_unstable_by(mid, f64::total_cmp);
        let cut = ages[mid];
        self.stats.retain(|_, s| s.last_use > cut);
    }

    /// The last use of `r`, if any.
    pub fn last_use(&self, r: &ResourceId) -> Option<f64> {
        self.stats
            .get(r)
            .map(|s| s.last_use)
            .filter(|t| t.is_finite())
    }

    /// `r`'s next-use estimate.
    pub fn next_use(&self, r: &ResourceId) -> NextUse<'_> {
        NextUse {
            own: self.stats.get(r).map(|s| &s.dist),
            pooled: &self.pooled,
        }
    }

    /// The pooled distribution.
    pub fn pooled(&self) -> &IdleDist {
        &self.pooled
    }

    /// Resources tracked.
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bin_from_the_exponent_is_the_logarithms() {
        let by_log = |gap: f64| {
            if gap < BASE {
                return 0;
            }
            let k = (gap / BASE).log2().floor() + 1.0;
            if k.is_finite() {
                (k as usize).min(BINS - 1)
            } else {
                BINS - 1
            }
        };
        let mut gap = 1e-6;
        while gap < 1e12 {
            assert_eq!(bin_of(gap), by_log(gap), "{gap}");
            gap *= 1.013;
        }
        for k in 0..BINS + 2 {
            let e = edge(k);
            assert_eq!(bin_of(e), by_log(e), "edge {k}");
        }
        for x in [f64::NAN, -1.0, 0.0, f64::INFINITY, f64::MAX] {
            assert_eq!(bin_of(x), by_log(x), "{x}");
        }
    }

    #[test]
    fn survival_at_the_edges_in_one_pass_equals_the_pointwise_one() {
        let (mut own, mut pooled) = (IdleDist::default(), IdleDist::default());
        for i in 0..500 {
            own.observe(f64::from(i % 37) * 0.7);
            pooled.observe(f64::from(i) * 3.1);
        }
        for n in [
            NextUse {
                own: Some(&own),
                pooled: &pooled,
            },
            NextUse {
                own: None,
                pooled: &pooled,
            },
        ] {
            let fast = n.survival_at_edges();
            for (k, f) in fast.iter().enumerate() {
                let slow = n.survival(edge(k));
                assert!((f - slow).abs() < 1e-9, "edge {k}: {f} vs {slow}");
            }
        }
    }

    #[test]
    fn survival_and_hazard_follow_the_idle_times_seen() {
        let mut d = IdleDist::default();
        for _ in 0..50 {
            d.observe(10.0);
        }
        assert!((d.survival(0.0) - 1.0).abs() < 1e-9);
        assert!(d.survival(5.0) > 0.99 && d.survival(20.0) < 1e-9);
        let pooled = IdleDist::default();
        let n = NextUse {
            own: Some(&d),
            pooled: &pooled,
        };
        // Idle 1 s: the use comes within 20 s almost surely; idle 30 s: the pattern broke
        // and only the prior is left.
        assert!(n.within(1.0, 20.0) > 0.9, "{}", n.within(1.0, 20.0));
        assert!(n.within(1.0, 2.0) < 0.1);
    }

    #[test]
    fn keep_alive_is_priced_and_free_memory_keeps_forever() {
        let mut d = IdleDist::default();
        for _ in 0..100 {
            d.observe(60.0);
        }
        let pooled = IdleDist::default();
        let n = NextUse {
            own: Some(&d),
            pooled: &pooled,
        };
        assert_eq!(n.keep_for(1.0, 0.0), f64::INFINITY);
        // Cheap memory: keep past the 60 s idle time; dear memory: not worth keeping at all.
        let t = n.keep_for(10.0, 0.001);
        assert!((60.0..200.0).contains(&t), "{t}");
        assert_eq!(n.keep_for(1.0, 1.0), 0.0);
    }

    #[test]
    fn demand_learns_gaps_and_forgets_beyond_its_cap() {
        let mut dm = Demand::new(16);
        let r = ResourceId::new("a").unwrap();
        for i in 0..10 {
            dm.used(&r, f64::from(i) * 5.0);
        }
        assert_eq!(dm.last_use(&r), Some(45.0));
        assert!(dm.next_use(&r).within(0.0, 6.0) > 0.7);
        for i in 0..40 {
            dm.used(
                &ResourceId::new(format!("x{i}")).unwrap(),
                100.0 + f64::from(i),
            );
        }
        assert!(dm.len() <= 16, "{}", dm.len());
    }
}
