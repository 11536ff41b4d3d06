//! Which holder takes an event (placement's first choice), without touching every holder of
//! a hot state. Each holder scores (Σ p, Σ p · fetch, rendezvous weight) over the event's
//! candidates it holds, and the best one under the load bound wins. A state read by much of
//! the traffic (a shared model) is held by a good part of a large fleet, so scoring every
//! holder made an event cost O(holders) hashes and a sort of them. When exactly one
//! candidate has many holders, its holders that hold nothing else all score the same
//! (Σ p, Σ p · fetch), so the best of them is the first of them in the anchor's rendezvous
//! order under the bound: looked up in the anchor's remembered first capacities
//! ([`crate::homes`]), with the full pass only when none of those qualifies. The holders of
//! the other candidates are scored exactly as before; the answer is the same.

use prewarm_core::CapacityId;

use crate::placement::{Candidate, Holders, Loads};

/// Holder lists longer than this take the remembered-rank path.
const MANY: usize = 64;

/// Per holder of any candidate (index, Σ p · fetch, Σ p), in the order first met; with
/// `skip`, the holders of candidate `skip.0` count only where `skip.1` says so. One pass in
/// candidate order (so each capacity's sums add up in that order); `slot` (one entry per
/// capacity, all `u32::MAX` between calls) says where a capacity's entry is: no sort, no
/// hashing.
fn scores(
    n: usize,
    candidates: &[Candidate<'_>],
    holders: &Holders,
    skip: Option<(usize, &[bool])>,
    slot: &mut Vec<u32>,
) -> Vec<(usize, f64, f64)> {
    if slot.len() < n {
        slot.resize(n, u32::MAX);
    }
    let total: usize = (0..candidates.len()).map(|i| holders.of(i).len()).sum();
    let mut score: Vec<(usize, f64, f64)> = Vec::with_capacity(total);
    for (i, &(_, p, fetch)) in candidates.iter().enumerate() {
        let only = match skip {
            Some((s, only)) if s == i => Some(only),
            _ => None,
        };
        let saved = p * fetch.max(1e-9);
        for &c in holders.of(i) {
            if c >= n || only.is_some_and(|o| !o[c]) {
                continue;
            }
            let k = match slot[c] {
                u32::MAX => {
                    slot[c] = score.len() as u32;
                    score.push((c, 0.0, 0.0));
                    score.len() - 1
                }
                k => k as usize,
            };
            score[k].1 += saved;
            score[k].2 += p;
        }
    }
    for s in &score {
        slot[s.0] = u32::MAX;
    }
    score
}

/// The event's holders as placement weighs them.
pub(crate) struct Scored {
    /// Holders scored one by one: (index, Σ p · fetch, Σ p).
    exact: Vec<(usize, f64, f64)>,
    /// The one candidate with many holders (its index), membership of its holders, and
    /// which capacities hold another candidate too.
    many: Option<Many>,
}

/// The one candidate with many holders: its index, its holders (indices and membership),
/// and which capacities hold another candidate too.
struct Many {
    candidate: usize,
    list: Vec<usize>,
    member: Vec<bool>,
    other: Vec<bool>,
}

impl Scored {
    /// Scores the holders of `candidates`.
    pub fn new(n: usize, candidates: &[Candidate<'_>], holders: &Holders, loads: &Loads) -> Self {
        let mut homes = loads.homes.lock();
        let slot = homes.scratch();
        let mut big = (0..candidates.len()).filter(|&i| holders.of(i).len() > MANY);
        let (Some(b), None) = (big.next(), big.next()) else {
            return Self {
                exact: scores(n, candidates, holders, None, slot),
                many: None,
            };
        };
        let list: Vec<usize> = holders.of(b).iter().copied().filter(|&c| c < n).collect();
        let mut member = vec![false; n];
        for &c in &list {
            member[c] = true;
        }
        let mut other = vec![false; n];
        for i in (0..candidates.len()).filter(|&i| i != b) {
            for &c in holders.of(i).iter().filter(|&&c| c < n) {
                other[c] = true;
            }
        }
        // The many holders count one by one only where they hold another candidate too.
        let both: Vec<bool> = member.iter().zip(&other).map(|(m, o)| *m && *o).collect();
        Self {
            exact: scores(n, candidates, holders, Some((b, &both)), slot),
            many: Some(Many {
                candidate: b,
                list,
                member,
                other,
            }),
        }
    }

    /// Σ p of the candidates capacity `c` holds.
    pub fn mass_of(&self, c: usize, candidates: &[Candidate<'_>]) -> f64 {
        if let Some(s) = self.exact.iter().find(|s| s.0 == c) {
            return s.2;
        }
        match &self.many {
            Some(m) if m.member.get(c).copied().unwrap_or(false) => candidates[m.candidate].1,
            _ => 0.0,
        }
    }

    /// The best holder under the load bound: (index, Σ p).
    pub fn best(
        &self,
        candidates: &[Candidate<'_>],
        capacities: &[CapacityId],
        anchor: u64,
        loads: &Loads,
    ) -> Option<(usize, f64)> {
        let mut homes = loads.homes.lock();
        let ranked = match &self.many {
            Some(_) => homes.ranked(anchor, capacities),
            None => Vec::new(),
        };
        let homes = &*homes;
        let allows = |c: usize| loads.allows_at(homes, capacities, c);
        let mut best = best_allowed(
            self.exact.iter().copied(),
            |c| homes.weight(anchor, capacities, c),
            allows,
        );
        if let Some(m) = &self.many {
            let (_, p, fetch) = candidates[m.candidate];
            let only = |c: usize| m.member[c] && !m.other[c] && allows(c);
            let saved = p * fetch.max(1e-9);
            let first = match ranked.iter().map(|&c| c as usize).find(|&c| only(c)) {
                Some(c) => Some(c),
                // None of the remembered first capacities qualifies: every holder's weight
                // (one mix each), the bound checked where a holder would win.
                None => {
                    let pool = m.list.iter().filter(|&&c| !m.other[c]);
                    let pool = pool.map(|&c| (c, saved, p));
                    best_allowed(pool, |c| homes.weight(anchor, capacities, c), allows).map(|x| x.0)
                }
            };
            if let Some(c) = first {
                let x = (
                    c,
                    p * fetch.max(1e-9),
                    p,
                    homes.weight(anchor, capacities, c),
                );
                best = [best, Some(x)].into_iter().flatten().max_by(better);
            }
        }
        best.map(|(c, _, mass, _)| (c, mass))
    }
}

/// The best of `pool` (index, Σ p · fetch, Σ p) by [`better`] that `allows` takes, with its
/// rendezvous weight, in one pass: the weight is computed only where the sums do not
/// already lose, and the load bound asked only of a holder that would win (the bound is a
/// map lookup, the pool thousands of holders of a shared state).
fn best_allowed(
    pool: impl Iterator<Item = (usize, f64, f64)>,
    mut weight: impl FnMut(usize) -> u64,
    allows: impl Fn(usize) -> bool,
) -> Option<(usize, f64, f64, u64)> {
    let mut best: Option<(usize, f64, f64, u64)> = None;
    for (c, saved, mass) in pool {
        if let Some(b) = best
            && mass.total_cmp(&b.2).then(saved.total_cmp(&b.1)).is_lt()
        {
            continue;
        }
        let x = (c, saved, mass, weight(c));
        if best.is_none_or(|b| better(&x, &b).is_gt()) && allows(c) {
            best = Some(x);
        }
    }
    best
}

/// Placement's order of holders: more probability held, then more seconds saved, then the
/// higher rendezvous weight.
fn better(a: &(usize, f64, f64, u64), b: &(usize, f64, f64, u64)) -> std::cmp::Ordering {
    a.2.total_cmp(&b.2)
        .then(a.1.total_cmp(&b.1))
        .then(a.3.cmp(&b.3))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prewarm_core::ResourceId;

    use super::*;
    use crate::placement::weight_of;

    /// Every holder scored one by one: what placement did before this module.
    fn brute(
        candidates: &[Candidate<'_>],
        holders: &Holders,
        caps: &[CapacityId],
        anchor: u64,
        loads: &Loads,
    ) -> Option<(usize, f64)> {
        scores(caps.len(), candidates, holders, None, &mut Vec::new())
            .iter()
            .filter(|s| loads.allows(&caps[s.0], caps.len()))
            .map(|&(c, saved, mass)| (c, saved, mass, weight_of(anchor, &caps[c])))
            .max_by(better)
            .map(|(c, _, mass, _)| (c, mass))
    }

    #[test]
    fn the_best_holder_is_the_one_scoring_every_holder_finds() {
        let n = 400;
        let caps: Vec<CapacityId> = (0..n)
            .map(|i| CapacityId::new(format!("cap-{i:03}")).unwrap())
            .collect();
        let ids: Vec<ResourceId> = (0..3)
            .map(|i| ResourceId::new(format!("r/{i}")).unwrap())
            .collect();
        let mut x = 0x1234_5678_u64;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for round in 0..300 {
            let loads = Loads::default();
            loads.sync(Some(round), &caps);
            let mut loads = loads;
            // Load some capacities past the bound (more of them in later rounds).
            for _ in 0..(round * 7) {
                let c = &caps[next(40) as usize];
                loads.placed(c, n);
            }
            let anchor = next(u64::MAX);
            // In the last rounds none of the anchor's remembered first capacities holds the
            // hot state: the full pass decides.
            let top = loads.homes.lock().ranked(anchor, &caps);
            let big: Vec<usize> = (0..n)
                .filter(|_| next(3) > 0)
                .filter(|c| round < 200 || !top.contains(&(*c as u32)))
                .collect();
            let small: Vec<usize> = (0..6).map(|_| next(n as u64) as usize).collect();
            let tiny: Vec<usize> = big.iter().copied().filter(|_| next(50) == 0).collect();
            let lists = [big, small, tiny];
            let k = 1 + (round % 3) as usize;
            let candidates: Vec<Candidate<'_>> = (0..k)
                .map(|i| (&ids[i], 0.1 + next(9) as f64 / 10.0, 1.0 + next(5) as f64))
                .collect();
            let holders = Holders::from_lists(&lists[..k]);
            let got = Scored::new(n, &candidates, &holders, &loads).best(
                &candidates,
                &caps,
                anchor,
                &loads,
            );
            assert_eq!(
                got,
                brute(&candidates, &holders, &caps, anchor, &loads),
                "round {round}"
            );
        }
    }
}
