//! A next-use estimate frozen into a compact curve (`P(idle > edge_k)` at the bin edges), the
//! form a retention hint carries to an agent, so that the agent's eviction and the engine's
//! pricing evaluate the same function of the same numbers.

use serde::{Deserialize, Serialize};

use crate::nextuse::{BINS, NextUse, edge};

/// `P(idle > edge(k))` for k in 0..BINS (non-increasing, starts at 1). A fixed array: a
/// hint is made per read answered, and a curve on the heap cost an allocation each.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve(pub [f32; BINS]);

impl Curve {
    /// Freezes `n`.
    pub fn of(n: &NextUse<'_>) -> Self {
        let s = n.survival_at_edges();
        Curve(std::array::from_fn(|k| s[k] as f32))
    }

    /// A use at exactly `gap` seconds after the last (the oracle's knowledge), or never.
    pub fn point(gap: Option<f64>) -> Self {
        Curve(std::array::from_fn(|k| match gap {
            Some(g) if edge(k) < g => 1.0,
            Some(_) => 0.0,
            None => 1.0,
        }))
    }

    /// `P(idle > a)`, log-linear between edges.
    pub fn survival(&self, a: f64) -> f64 {
        let s = &self.0;
        if a <= 0.0 {
            return 1.0;
        }
        let k = (1..BINS).rfind(|k| edge(*k) <= a).unwrap_or(0);
        if k + 1 >= BINS {
            return f64::from(s[BINS - 1]);
        }
        let (lo, hi) = (edge(k), edge(k + 1));
        let f = if k == 0 {
            a / hi
        } else {
            (a / lo).ln() / (hi / lo).ln()
        };
        let (a0, a1) = (f64::from(s[k]), f64::from(s[k + 1]));
        a0 + (a1 - a0) * f.clamp(0.0, 1.0)
    }

    /// Chance of a use within `h` seconds after `idle` seconds without one.
    pub fn within(&self, idle: f64, h: f64) -> f64 {
        let s = self.survival(idle.max(0.0));
        if s <= 1e-9 {
            return 0.0;
        }
        (1.0 - self.survival(idle.max(0.0) + h.max(0.0)) / s).clamp(0.0, 1.0)
    }

    /// Expected time to the next use after `idle` seconds without one, seconds: the area
    /// under the conditional survival curve (trapezoids between edges; what survives the
    /// last edge counts as used that long again).
    pub fn expected_remaining(&self, idle: f64) -> f64 {
        let idle = idle.max(0.0);
        let s0 = self.survival(idle);
        if s0 <= 1e-9 {
            return f64::INFINITY;
        }
        let last = edge(BINS - 1);
        let mut area = 0.0;
        let (mut x, mut sx) = (idle, s0);
        for k in 1..BINS {
            let e = edge(k);
            if e <= x {
                continue;
            }
            let se = self.survival(e);
            area += (e - x) * 0.5 * (sx + se);
            (x, sx) = (e, se);
        }
        if x < last {
            area += (last - x) * sx;
        }
        (area + sx * last) / s0
    }

    /// The curve as bytes (little-endian f32s), for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// The curve from [`Curve::to_bytes`]; `None` unless it is exactly `BINS` finite values
    /// in [0, 1].
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != BINS * 4 {
            return None;
        }
        let v: [f32; BINS] = std::array::from_fn(|k| {
            let c = &b[4 * k..4 * k + 4];
            f32::from_le_bytes([c[0], c[1], c[2], c[3]])
        });
        v.iter()
            .all(|x| x.is_finite() && (0.0..=1.0).contains(x))
            .then_some(Curve(v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn point_curves_and_the_wire_round_trip() {
        let c = Curve::point(Some(10.0));
        assert!(c.within(0.0, 20.0) > 0.99);
        assert!(c.within(0.0, 3.0) < 0.01);
        assert_eq!(Curve::point(None).within(0.0, 1e9), 0.0);
        let r = c.expected_remaining(2.0);
        assert!((r - 8.0).abs() < 3.0, "about 10 - 2: {r}");
        assert!(c.expected_remaining(9.0) < r);
        assert!(
            Curve::point(None).expected_remaining(5.0) > 1e6,
            "never: further than all"
        );
        assert_eq!(Curve::from_bytes(&c.to_bytes()), Some(c));
        assert!(Curve::from_bytes(&[0; 7]).is_none());
        let mut bad = Curve::point(None).to_bytes();
        bad[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Curve::from_bytes(&bad).is_none());
    }
}
