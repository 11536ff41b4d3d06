//! Spreading a state to more capacities. A state just read on one capacity is offered to the
//! next capacity in its rendezvous order that lacks it; the planner takes the copy only when
//! the chance it is used there within that cache's horizon pays for its link time and what
//! it displaces. Uses of a state are shared among its holders, so one more copy gets
//! `1 / (holders + 1)` of the uses expected in the horizon (from the next-use estimate).
//!
//! That estimate assumes uses land evenly on holders, which placement does not promise
//! (an event that names or is predicted to need a state goes to a holder that already has
//! it). So the chances are calibrated online: each copy taken is remembered with its
//! chance; a read of it on that capacity counts as used, a copy offered again (it was
//! evicted unread) or forgotten counts as unused, and the chances are scaled by
//! `(used + 1) / (expected + 1)` over everything resolved so far.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use prewarm_core::{CapacityId, ResourceId};

use crate::nextuse::NextUse;

/// Copies remembered until they resolve (the oldest count as unused beyond).
const OUTSTANDING: usize = 1 << 16;

/// The chance one more copy of a state with next-use estimate `nu` is used within
/// `horizon` when `holders` capacities hold it already.
pub fn chance(nu: &NextUse<'_>, horizon: f64, holders: usize) -> f64 {
    let any = nu.within(0.0, horizon);
    let gap = nu.mean_gap();
    if any <= 0.0 || !gap.is_finite() || gap <= 0.0 {
        return 0.0;
    }
    let uses = (horizon.min(1e9) / gap).max(1.0);
    let share = 1.0 / (holders + 1) as f64;
    any * (1.0 - (1.0 - share).powf(uses))
}

/// The copies taken and how they turned out.
#[derive(Debug, Default)]
pub struct Spreads {
    outstanding: HashMap<(CapacityId, ResourceId), f64>,
    order: VecDeque<(CapacityId, ResourceId)>,
    expected: f64,
    used: f64,
}

impl Spreads {
    /// A new book.
    pub fn new() -> Self {
        Self {
            outstanding: HashMap::new(),
            ..Self::default()
        }
    }

    /// `raw` scaled by how often copies were used against how often they were expected to be.
    pub fn calibrated(&self, raw: f64) -> f64 {
        (raw * (self.used + 1.0) / (self.expected + 1.0)).clamp(0.0, 1.0)
    }

    /// A copy of `r` on `c` was taken with (raw) chance `p`.
    pub fn taken(&mut self, c: &CapacityId, r: &ResourceId, p: f64) {
        let k = (c.clone(), r.clone());
        match self.outstanding.insert(k.clone(), p) {
            // Taken again: the earlier copy left unread.
            Some(old) => self.expected += old,
            None => {
                self.order.push_back(k);
                while self.order.len() > OUTSTANDING {
                    if let Some(old) = self.order.pop_front()
                        && let Some(p) = self.outstanding.remove(&old)
                    {
                        self.expected += p;
                    }
                }
            }
        }
    }

    /// `r` was read on `c`.
    pub fn read(&mut self, c: &CapacityId, r: &ResourceId) {
        if self.outstanding.is_empty() {
            return;
        }
        if let Some(p) = self.outstanding.remove(&(c.clone(), r.clone())) {
            self.expected += p;
            self.used += 1.0;
        }
    }

    /// (copies used, copies expected to be used) over those resolved.
    pub fn outcomes(&self) -> (f64, f64) {
        (self.used, self.expected)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn copies_that_are_never_read_lower_the_chances_and_read_ones_keep_them() {
        let c = CapacityId::new("c1").unwrap();
        let mut s = Spreads::new();
        assert!(
            (s.calibrated(0.8) - 0.8).abs() < 1e-12,
            "uncalibrated at first"
        );
        for i in 0..20 {
            let r = ResourceId::new(format!("r{i}")).unwrap();
            s.taken(&c, &r, 0.8);
            s.taken(&c, &r, 0.8); // offered again: the first copy went unread
        }
        assert!(s.calibrated(0.8) < 0.1, "{}", s.calibrated(0.8));
        let mut t = Spreads::new();
        for i in 0..20 {
            let r = ResourceId::new(format!("r{i}")).unwrap();
            t.taken(&c, &r, 0.5);
            t.read(&c, &r);
        }
        assert!(t.calibrated(0.5) > 0.9, "{}", t.calibrated(0.5));
        assert_eq!(t.outcomes(), (20.0, 10.0));
    }
}
