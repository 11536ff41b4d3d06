//! Rendezvous homes without a fleet scan per event. An event no holder can take goes to the
//! first capacity under the load bound in its anchor's rendezvous order (see
//! [`crate::placement`]); ranking every capacity for every such event costs O(capacities),
//! which at 10,000 capacities was most of the replay's time. The order only changes when the
//! capacity list does, so each anchor's first [`TOP`] capacities are ranked once and kept
//! until the fleet reports a different list (its epoch); the answer is the first of them
//! under the bound, or — when all of them are over it — a full scan, so it is exactly what
//! ranking all of them gives.

use foldhash::{HashMap, HashMapExt};

use prewarm_core::CapacityId;

use crate::placement::{id_hash, weight_from, weight_of};

/// Capacities remembered per anchor.
pub const TOP: usize = 8;

/// Anchors remembered before the memory is cleared (each costs ~80 bytes).
const MAX_ANCHORS: usize = 1 << 20;

/// Each anchor's best-ranked capacities, valid for one capacity list.
#[derive(Clone, Debug, Default)]
pub struct Homes {
    /// The fleet's epoch the ranks are for (`None`: the fleet gives none; no memory).
    epoch: Option<u64>,
    len: usize,
    top: HashMap<u64, Vec<u32>>,
    /// Each capacity's id hashed once per epoch (its rendezvous weight for any anchor is then
    /// one multiply-mix, not a pass over its bytes).
    hashes: Vec<u64>,
    /// Holder scoring's per-capacity slots (all `u32::MAX` between decisions).
    scratch: Vec<u32>,
    /// The epoch's capacities by id, and each capacity's placements in the load bound's
    /// window by index: the bound asked of thousands of holders per event reads an array,
    /// not a map keyed by id strings. Valid when `counts_ready` (see
    /// [`crate::placement::Loads::sync`]); the map in `Loads` stays the reference.
    index: HashMap<CapacityId, u32>,
    pub(crate) counts: Vec<u32>,
    pub(crate) counts_ready: bool,
}

impl Homes {
    /// Forgets the ranks when the capacity list changed (`epoch` or its length differ).
    pub fn sync(&mut self, epoch: Option<u64>, capacities: &[CapacityId]) {
        let len = capacities.len();
        if epoch.is_none() || self.epoch != epoch || self.len != len {
            self.top = HashMap::new();
            self.epoch = epoch;
            self.len = len;
            self.hashes = match epoch {
                Some(_) => capacities.iter().map(id_hash).collect(),
                None => Vec::new(),
            };
            // Indexed counts only with an epoch (rebuilt by `Loads::sync`).
            self.index = match epoch {
                Some(_) => capacities.iter().cloned().zip(0..).collect(),
                None => HashMap::new(),
            };
            self.counts = vec![0; self.index.len()];
            self.counts_ready = false;
        }
    }

    /// Capacity `id`'s index in the epoch's list (when indexed counts are kept).
    pub(crate) fn index_of(&self, id: &CapacityId) -> Option<usize> {
        self.index.get(id).map(|&i| i as usize)
    }

    /// Whether the indexed counts can be kept for this epoch.
    pub(crate) fn indexed(&self) -> bool {
        !self.index.is_empty()
    }

    /// Holder scoring's per-capacity slots, kept between decisions (see `crate::scoring`).
    pub fn scratch(&mut self) -> &mut Vec<u32> {
        &mut self.scratch
    }

    /// Capacity `c`'s rendezvous weight for `anchor` (= `weight_of(anchor, &capacities[c])`).
    pub fn weight(&self, anchor: u64, capacities: &[CapacityId], c: usize) -> u64 {
        match self.hashes.get(c) {
            Some(&h) if self.hashes.len() == capacities.len() => weight_from(anchor, h),
            _ => weight_of(anchor, &capacities[c]),
        }
    }

    /// The first [`TOP`] capacities of `anchor`'s rendezvous order (indices), remembered;
    /// none when the fleet gives no epoch (nothing is remembered then).
    pub fn ranked(&mut self, anchor: u64, capacities: &[CapacityId]) -> Vec<u32> {
        if self.epoch.is_none() || capacities.len() != self.len {
            return Vec::new();
        }
        if self.top.len() >= MAX_ANCHORS && !self.top.contains_key(&anchor) {
            self.top.clear();
        }
        let hashes = &self.hashes;
        self.top
            .entry(anchor)
            .or_insert_with(|| ranked(anchor, capacities, hashes))
            .clone()
    }

    /// The first capacity in `anchor`'s rendezvous order that `allows` (else the first of
    /// all); `None` when there are none.
    pub fn home<'c>(
        &mut self,
        anchor: u64,
        capacities: &'c [CapacityId],
        allows: impl Fn(&CapacityId) -> bool,
    ) -> Option<&'c CapacityId> {
        self.ranked(anchor, capacities)
            .iter()
            .map(|&i| &capacities[i as usize])
            .find(|c| allows(c))
            .or_else(|| scan(anchor, capacities, allows))
    }
}

/// Whether `a` comes before `b` in the rendezvous order: higher weight, ties by id.
fn before(a: (u64, &CapacityId), b: (u64, &CapacityId)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// The first [`TOP`] capacities of `anchor`'s rendezvous order, as indices (`hashes`: the
/// capacities' [`id_hash`]es).
fn ranked(anchor: u64, capacities: &[CapacityId], hashes: &[u64]) -> Vec<u32> {
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(TOP + 1);
    for (i, (c, &h)) in capacities.iter().zip(hashes).enumerate() {
        let x = (weight_from(anchor, h), c);
        if best.len() == TOP && !before(x, (best[TOP - 1].0, &capacities[best[TOP - 1].1])) {
            continue;
        }
        let at = best
            .iter()
            .position(|&(w, j)| before(x, (w, &capacities[j])))
            .unwrap_or(best.len());
        best.insert(at, (x.0, i));
        best.truncate(TOP);
    }
    best.into_iter().map(|(_, i)| i as u32).collect()
}

/// [`Homes::home`] by ranking every capacity: one pass, no sort.
pub fn scan(
    anchor: u64,
    capacities: &[CapacityId],
    allows: impl Fn(&CapacityId) -> bool,
) -> Option<&CapacityId> {
    let mut first: Option<(u64, &CapacityId)> = None;
    let mut allowed: Option<(u64, &CapacityId)> = None;
    for c in capacities {
        let x = (weight_of(anchor, c), c);
        if first.is_none_or(|f| before(x, f)) {
            first = Some(x);
        }
        if allows(c) && allowed.is_none_or(|a| before(x, a)) {
            allowed = Some(x);
        }
    }
    allowed.or(first).map(|x| x.1)
}

/// [`Homes`] behind a lock, so that placement reads it through the engine's shared borrow;
/// a copy of an engine (the tuner's) copies what it remembers.
#[derive(Debug, Default)]
pub struct Shared(std::sync::Mutex<Homes>);

impl Shared {
    /// The homes (a poisoned lock still holds valid ranks: nothing panics while writing them
    /// half-way).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Homes> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Self(std::sync::Mutex::new(self.lock().clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn caps(n: usize) -> Vec<CapacityId> {
        (0..n)
            .map(|i| CapacityId::new(format!("cap-{i}")).unwrap())
            .collect()
    }

    #[test]
    fn remembered_homes_are_exactly_the_full_ranking_under_any_load_bound() {
        let caps = caps(300);
        let mut homes = Homes::default();
        homes.sync(Some(1), &caps);
        for anchor in 0..2_000u64 {
            let anchor = anchor.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            // Bounds that refuse none, some, most (past the remembered ones) and all.
            for refuse in [0u64, 3, 50, 100] {
                let allows = |c: &CapacityId| weight_of(anchor ^ 1, c) % 100 >= refuse;
                assert_eq!(
                    homes.home(anchor, &caps, allows),
                    scan(anchor, &caps, allows),
                    "anchor {anchor}, refusing {refuse}%"
                );
            }
        }
    }

    #[test]
    fn a_new_capacity_list_is_ranked_again() {
        let all = caps(50);
        let mut homes = Homes::default();
        homes.sync(Some(1), &all[..40]);
        let before = homes.home(7, &all[..40], |_| true).cloned();
        // Same length, other capacities, a new epoch: the ranks are recomputed.
        homes.sync(Some(2), &all[10..]);
        let after = homes.home(7, &all[10..], |_| true).cloned();
        assert_eq!(before.as_ref(), scan(7, &all[..40], |_| true));
        assert_eq!(after.as_ref(), scan(7, &all[10..], |_| true));
        // Without an epoch nothing is remembered, and the answer is still the ranking's.
        homes.sync(None, &all);
        assert_eq!(homes.home(7, &all, |_| true), scan(7, &all, |_| true));
        assert!(homes.home(7, &[], |_| true).is_none());
    }
}
