//! Placement: which capacity runs an event. An event may name its capacity. Otherwise it goes
//! to the capacity that holds (or is receiving) the most of what it needs — the states the
//! event names, else the predicted ones by probability (ties by probability × fetch time),
//! with the key's own recent states for the probability the model left unassigned (see
//! [`crate::affinity`]) — among all holders, under a bounded load: no capacity takes more than `(1 + ε)` times its fair share
//! of the recent placements (consistent hashing with bounded loads, Mirrokni et al. 2018).
//! When no holder can take it, it goes to the first capacity under the bound in the
//! rendezvous order of its most valuable candidate state (so each state has a stable home,
//! and a hot state spills over to its next homes, which then hold it too), or of its key
//! when nothing is predicted. Ray Serve's model multiplexing and Dynamo's LoRA routing do the
//! first half of this; the spill-over spreads a state whose demand outgrows one capacity.

use std::collections::VecDeque;

use foldhash::HashMap;

use prewarm_core::{CapacityId, ResourceId};
use serde::Serialize;

/// Why a capacity was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementReason {
    /// The event named it.
    Named,
    /// It holds (or receives) what the event needs.
    Holds,
    /// The home of the event's most valuable candidate state.
    Home,
    /// Consistent hashing of the event's key (nothing predicted).
    Hash,
}

/// The choice.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Placement {
    /// The capacity.
    pub capacity: CapacityId,
    /// Why.
    pub reason: PlacementReason,
    /// Predicted probability mass it already holds.
    pub held_probability: f64,
}

/// A state an event may need: (resource, probability, seconds a cold fetch costs).
pub type Candidate<'a> = (&'a ResourceId, f64, f64);

/// Each candidate's holders, as indices into the capacities, in one buffer (a decision
/// asks the fleet for a few lists per event; one allocation holds them all).
#[derive(Clone, Debug, Default)]
pub struct Holders {
    flat: Vec<usize>,
    ends: Vec<usize>,
}

impl Holders {
    /// Lists given one per candidate.
    pub fn from_lists(lists: &[Vec<usize>]) -> Self {
        let mut h = Self::default();
        for l in lists {
            h.push_with(|out| out.extend_from_slice(l));
        }
        h
    }

    /// Appends the next candidate's list, written by `fill` onto the buffer's end.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut Vec<usize>)) {
        fill(&mut self.flat);
        self.ends.push(self.flat.len());
    }

    /// Empties the lists, keeping the buffers (the engine reuses one across decisions).
    pub fn clear(&mut self) {
        self.flat.clear();
        self.ends.clear();
    }

    /// Candidate `i`'s holders (none past the last list).
    pub fn of(&self, i: usize) -> &[usize] {
        let Some(&end) = self.ends.get(i) else {
            return &[];
        };
        let start = i.checked_sub(1).map_or(0, |j| self.ends[j]);
        &self.flat[start..end]
    }
}

/// Headroom over the fair share of recent placements.
pub const EPSILON: f64 = 0.25;

/// A stable 64-bit hash of `s` (FNV-1a, then SplitMix64's finalizer): rendezvous weights must
/// agree across processes and releases, so no seeded hasher.
fn stable_hash(s: &str) -> u64 {
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(h)
}

/// SplitMix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous weight of `capacity` for a key whose [`stable_hash`] is `key`.
pub(crate) fn weight_of(key: u64, capacity: &CapacityId) -> u64 {
    weight_from(key, id_hash(capacity))
}

/// A capacity id's [`stable_hash`] (what its rendezvous weights are made from).
pub(crate) fn id_hash(capacity: &CapacityId) -> u64 {
    stable_hash(capacity.as_str())
}

/// Rendezvous weight for key hash `key` of a capacity whose [`id_hash`] is `id`.
pub(crate) fn weight_from(key: u64, id: u64) -> u64 {
    mix(key ^ id.rotate_left(17))
}

/// Rendezvous weight of `capacity` for `key`.
pub fn weight(key: &str, capacity: &CapacityId) -> u64 {
    weight_of(stable_hash(key), capacity)
}

/// The engine's recent placements (a sliding window), for the load bound.
#[derive(Clone, Debug, Default)]
pub struct Loads {
    window: VecDeque<CapacityId>,
    counts: HashMap<CapacityId, usize>,
    /// Each anchor's first capacities in rendezvous order (see [`crate::homes`]).
    pub(crate) homes: crate::homes::Shared,
}

impl Loads {
    fn len_for(capacities: usize) -> usize {
        (16 * capacities).max(64)
    }

    /// Placements a capacity may have in the window among `n` capacities.
    fn bound(&self, n: usize) -> usize {
        let placed = self.window.len() + 1;
        let cap = ((1.0 + EPSILON) * placed as f64 / n.max(1) as f64).ceil() as usize;
        cap.max(1)
    }

    /// Whether `c` may take one more among `n` capacities.
    pub fn allows(&self, c: &CapacityId, n: usize) -> bool {
        self.counts.get(c).copied().unwrap_or(0) < self.bound(n)
    }

    /// [`Loads::allows`] for the capacity at index `i` of `capacities`, read from the
    /// indexed counts in `homes` (locked by the caller) when they are kept.
    pub(crate) fn allows_at(
        &self,
        homes: &crate::homes::Homes,
        capacities: &[CapacityId],
        i: usize,
    ) -> bool {
        let n = capacities.len();
        match homes.counts_ready && homes.counts.len() == n {
            true => (homes.counts[i] as usize) < self.bound(n),
            false => self.allows(&capacities[i], n),
        }
    }

    /// Follows the fleet's capacity list (see [`crate::homes::Homes::sync`]), rebuilding the
    /// indexed counts from the window when the list changed.
    pub fn sync(&self, epoch: Option<u64>, capacities: &[CapacityId]) {
        let mut h = self.homes.lock();
        h.sync(epoch, capacities);
        if h.counts_ready || !h.indexed() {
            return;
        }
        for (id, k) in &self.counts {
            if let Some(i) = h.index_of(id) {
                h.counts[i] = *k as u32;
            }
        }
        h.counts_ready = true;
    }

    /// Records a placement on `c` among `n` capacities.
    pub fn placed(&mut self, c: &CapacityId, n: usize) {
        self.window.push_back(c.clone());
        *self.counts.entry(c.clone()).or_default() += 1;
        let mut h = self.homes.lock();
        let indexed = h.counts_ready;
        if indexed && let Some(i) = h.index_of(c) {
            h.counts[i] += 1;
        }
        while self.window.len() > Self::len_for(n) {
            if let Some(old) = self.window.pop_front()
                && let Some(k) = self.counts.get_mut(&old)
            {
                *k -= 1;
                if *k == 0 {
                    self.counts.remove(&old);
                }
                if indexed && let Some(i) = h.index_of(&old) {
                    h.counts[i] = h.counts[i].saturating_sub(1);
                }
            }
        }
    }
}

/// Places an event with key `key` among `capacities` (`None` when there are none).
/// `holders[i]` lists (as indices into `capacities`) the capacities that hold a
/// recent-enough version of `candidates[i]` or are receiving one (missing: none; indices
/// past the end are ignored). With `by_key` the home (and the tie-break among
/// holders) is the key's rendezvous order rather than its most valuable candidate's: for
/// keys that keep reading their own states, which then live together.
pub fn place(
    key: &str,
    by_key: bool,
    named: Option<&CapacityId>,
    capacities: &[CapacityId],
    holders: &Holders,
    candidates: &[Candidate<'_>],
    loads: &Loads,
) -> Option<Placement> {
    place_within(
        key, by_key, named, capacities, holders, candidates, loads, None,
    )
}

/// [`place`] among the capacities `eligible` marks (by index; `None`: all), for a fleet of
/// scoped capacities: `holders` must list eligible ones only, the home is the first
/// eligible capacity in rendezvous order under the load bound (past the bound, the first
/// eligible one), and there is no placement when none is eligible. A capacity the sender
/// named is taken as named.
#[allow(clippy::too_many_arguments)]
pub fn place_within(
    key: &str,
    by_key: bool,
    named: Option<&CapacityId>,
    capacities: &[CapacityId],
    holders: &Holders,
    candidates: &[Candidate<'_>],
    loads: &Loads,
    eligible: Option<&[bool]>,
) -> Option<Placement> {
    let n = capacities.len();
    let held_by = |i: usize| holders.of(i);
    // Capacities come sorted; the linear search only where they do not.
    let find = |c: &CapacityId| {
        capacities
            .binary_search(c)
            .ok()
            .or_else(|| capacities.iter().position(|x| x == c))
    };
    if let Some(at) = named.and_then(find) {
        let held_probability = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| held_by(*i).contains(&at))
            .fold(0.0, |a, (_, (_, p, _))| a + p);
        return Some(Placement {
            capacity: capacities[at].clone(),
            reason: PlacementReason::Named,
            held_probability,
        });
    }
    let anchor = candidates
        .iter()
        .filter(|_| !by_key)
        .max_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then((a.1 * a.2).total_cmp(&(b.1 * b.2)))
                .then(b.0.cmp(a.0))
        })
        .map_or(key, |c| c.0.as_str());
    let anchor = stable_hash(anchor);
    // What each holder already has: the chance the execution finds its reads there (Σ p),
    // then the seconds that saves (Σ p · fetch) to break ties (see crate::scoring).
    let scored = crate::scoring::Scored::new(n, candidates, holders, loads);
    if let Some((c, mass)) = scored.best(candidates, capacities, anchor, loads) {
        return Some(Placement {
            capacity: capacities[c].clone(),
            reason: PlacementReason::Holds,
            held_probability: mass,
        });
    }
    let c = match eligible {
        None => loads
            .homes
            .lock()
            .home(anchor, capacities, |c| loads.allows(c, n))?,
        Some(ok) => {
            let ok = |c: &CapacityId| find(c).is_some_and(|i| ok[i]);
            let c = loads
                .homes
                .lock()
                .home(anchor, capacities, |c| ok(c) && loads.allows(c, n))?;
            match ok(c) {
                true => c,
                // Past the load bound everywhere eligible: the first eligible capacity.
                false => crate::homes::scan(anchor, capacities, ok).filter(|c| ok(c))?,
            }
        }
    };
    Some(Placement {
        capacity: c.clone(),
        reason: if candidates.is_empty() {
            PlacementReason::Hash
        } else {
            PlacementReason::Home
        },
        held_probability: find(c).map_or(0.0, |i| scored.mass_of(i, candidates)),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use foldhash::HashMapExt;

    fn caps(n: usize) -> Vec<CapacityId> {
        (0..n)
            .map(|i| CapacityId::new(format!("c{i}")).unwrap())
            .collect()
    }

    fn r(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    #[test]
    fn named_then_any_holder_then_the_states_home_then_the_keys_hash() {
        let caps = caps(4);
        let m = r("m/a");
        let holders = Holders::from_lists(&[vec![2]]);
        let loads = Loads::default();
        let cand = [(&m, 0.8, 1.0)];
        let p = place("k", false, Some(&caps[1]), &caps, &holders, &cand, &loads).unwrap();
        assert_eq!(
            (p.capacity.as_str(), p.reason),
            ("c1", PlacementReason::Named)
        );
        // Every key that needs m/a goes to its holder, whatever the key.
        for k in 0..50 {
            let p = place(
                &format!("k{k}"),
                false,
                None,
                &caps,
                &holders,
                &cand,
                &loads,
            )
            .unwrap();
            assert_eq!(
                (p.capacity.as_str(), p.reason),
                ("c2", PlacementReason::Holds)
            );
            assert!((p.held_probability - 0.8).abs() < 1e-12);
        }
        // Nobody holds m/b: every key goes to m/b's home, the same one each time.
        let mb = r("m/b");
        let cand = [(&mb, 0.6, 1.0)];
        let holders = Holders::from_lists(&[vec![]]);
        let homes: std::collections::HashSet<_> = (0..50)
            .map(|k| {
                place(
                    &format!("k{k}"),
                    false,
                    None,
                    &caps,
                    &holders,
                    &cand,
                    &loads,
                )
                .unwrap()
            })
            .map(|p| {
                assert_eq!(p.reason, PlacementReason::Home);
                p.capacity
            })
            .collect();
        assert_eq!(homes.len(), 1);
        // Nothing predicted: the key's hash, stable, moving ~1/n of keys when one leaves.
        let none = Holders::default();
        let mut moved = 0;
        for k in 0..1000 {
            let key = format!("key-{k}");
            let a = place(&key, false, None, &caps, &none, &[], &loads).unwrap();
            assert_eq!(a.reason, PlacementReason::Hash);
            let b = place(&key, false, None, &caps[..3], &none, &[], &loads).unwrap();
            if a.capacity != b.capacity {
                moved += 1;
                assert_eq!(a.capacity.as_str(), "c3");
            }
        }
        assert!((150..350).contains(&moved), "{moved} of 1000 moved");
        assert!(place("k", false, None, &[], &none, &[], &loads).is_none());
    }

    #[test]
    fn a_hot_state_spills_over_to_its_next_homes_under_the_load_bound() {
        let caps = caps(4);
        let mut loads = Loads::default();
        let hot = r("hot");
        let cand = [(&hot, 1.0, 1.0)];
        let mut holding: Vec<usize> = Vec::new();
        let mut per: HashMap<CapacityId, usize> = HashMap::new();
        for k in 0..400 {
            let p = place(
                &format!("k{k}"),
                false,
                None,
                &caps,
                &Holders::from_lists(std::slice::from_ref(&holding)),
                &cand,
                &loads,
            )
            .unwrap();
            loads.placed(&p.capacity, caps.len());
            let at = caps.iter().position(|c| *c == p.capacity).unwrap();
            if !holding.contains(&at) {
                holding.push(at);
            }
            *per.entry(p.capacity).or_default() += 1;
        }
        // Demand four times what one capacity may take: it is held everywhere, and no
        // holder takes much more than (1 + ε) of its fair share (100).
        assert_eq!(holding.len(), 4, "{per:?}");
        for n in per.values() {
            assert!(*n <= 135, "{per:?}");
        }
    }

    #[test]
    fn indexed_counts_follow_the_window_across_capacity_lists() {
        let all = caps(30);
        let mut loads = Loads::default();
        let check = |loads: &Loads, list: &[CapacityId]| {
            let h = loads.homes.lock();
            for (i, c) in list.iter().enumerate() {
                assert_eq!(
                    loads.allows_at(&h, list, i),
                    loads.allows(c, list.len()),
                    "{c}"
                );
                assert!(h.counts_ready);
            }
        };
        let mut x = 7u64;
        for (epoch, list) in [(1, &all[..]), (2, &all[5..25]), (3, &all[..])] {
            loads.sync(Some(epoch), list);
            for _ in 0..2000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let c = &list[((x >> 33) % 7) as usize]; // a few hot capacities
                loads.placed(c, list.len());
                if x.is_multiple_of(97) {
                    check(&loads, list);
                }
            }
            check(&loads, list);
        }
    }

    #[test]
    fn holders_keep_each_candidates_list_apart_in_one_buffer() {
        let h = Holders::from_lists(&[vec![3, 1], vec![], vec![0]]);
        assert_eq!(h.of(0), &[3, 1]);
        assert!(h.of(1).is_empty());
        assert_eq!(h.of(2), &[0]);
        assert!(h.of(3).is_empty(), "past the last list: none");
        assert!(Holders::default().of(0).is_empty());
    }

    #[test]
    fn the_home_is_the_first_allowed_capacity_in_rendezvous_order() {
        let caps = caps(9);
        for k in 0..200_u64 {
            let anchor = mix(k);
            let allowed =
                |c: &CapacityId| !weight_of(anchor, c).is_multiple_of(3) || k.is_multiple_of(7);
            let mut ranked: Vec<(u64, &CapacityId)> =
                caps.iter().map(|c| (weight_of(anchor, c), c)).collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let want = ranked
                .iter()
                .map(|x| x.1)
                .find(|c| allowed(c))
                .or(ranked.first().map(|x| x.1));
            assert_eq!(crate::homes::scan(anchor, &caps, allowed), want);
        }
        assert_eq!(
            crate::homes::scan(1, &caps, |_| false),
            crate::homes::scan(1, &caps, |_| true)
        );
        assert_eq!(crate::homes::scan(1, &[], |_| true), None);
    }
}
