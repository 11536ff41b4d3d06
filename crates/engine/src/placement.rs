//! Placement: which capacity runs an event. An event may name its capacity. Otherwise the
//! event's key ranks the capacities by rendezvous hash; the first choice runs it unless
//! another of the first [`CHOICES`] holds at least [`SWITCH_MASS`] more of the predicted
//! probability mass (state-aware). So a key keeps landing on the same one or two
//! capacities while the set is stable (only ~1/n of the keys move when one joins or leaves),
//! and popular states cannot pull every event onto the one capacity that holds them.

use prewarm_core::{CapacityId, ResourceId};
use serde::Serialize;

/// Why a capacity was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementReason {
    /// The event named it.
    Named,
    /// It holds predicted states.
    Holds,
    /// Consistent hashing of the event's key.
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

/// Capacities considered per key (the "power of two choices").
pub const CHOICES: usize = 2;

/// Predicted probability mass another choice must hold beyond the first choice's to win.
pub const SWITCH_MASS: f64 = 0.5;

/// Rendezvous weight of `capacity` for `key`.
fn weight(key: &str, capacity: &CapacityId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(key.as_bytes());
    h.update(&[0]);
    h.update(capacity.as_str().as_bytes());
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Places an event with sequence key `key` among `capacities` (`None` when there are none).
/// `holds(c, r)` says whether capacity `c` holds a recent-enough version of `r`; `predicted`
/// are the predicted resources with their probabilities.
pub fn place(
    key: &str,
    named: Option<&CapacityId>,
    capacities: &[CapacityId],
    holds: impl Fn(&CapacityId, &ResourceId) -> bool,
    predicted: &[(ResourceId, f64)],
) -> Option<Placement> {
    if let Some(c) = named.filter(|c| capacities.contains(c)) {
        let held_probability = predicted
            .iter()
            .filter(|(r, _)| holds(c, r))
            .fold(0.0, |a, (_, p)| a + p);
        return Some(Placement {
            capacity: c.clone(),
            reason: PlacementReason::Named,
            held_probability,
        });
    }
    let mut ranked: Vec<(u64, &CapacityId)> =
        capacities.iter().map(|c| (weight(key, c), c)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let scored: Vec<(f64, &CapacityId)> = ranked
        .into_iter()
        .take(CHOICES)
        .map(|(_, c)| {
            let mass: f64 = predicted
                .iter()
                .filter(|(r, _)| holds(c, r))
                .fold(0.0, |a, (_, p)| a + p);
            (mass, c)
        })
        .collect();
    let first = *scored.first()?;
    // Leave the key's first choice only for clearly more of what is predicted: a weak
    // prediction must not split a key's executions (and their warm states) over two places.
    let best = scored
        .iter()
        .copied()
        .filter(|(m, _)| *m >= first.0 + SWITCH_MASS)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or(first);
    Some(Placement {
        capacity: best.1.clone(),
        reason: if best.0 > 0.0 {
            PlacementReason::Holds
        } else {
            PlacementReason::Hash
        },
        held_probability: best.0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn named_then_holder_then_stable_hash() {
        let caps: Vec<CapacityId> = (0..4)
            .map(|i| CapacityId::new(format!("c{i}")).unwrap())
            .collect();
        let r = ResourceId::new("m/a").unwrap();
        let pred = [(r.clone(), 0.8)];
        let holds = |c: &CapacityId, x: &ResourceId| c.as_str() == "c2" && *x == r;
        let p = place("k", Some(&caps[1]), &caps, holds, &pred).unwrap();
        assert_eq!(
            (p.capacity.as_str(), p.reason),
            ("c1", PlacementReason::Named)
        );
        // A key whose two choices include the holder goes to it; one whose choices do not
        // stays on its own first choice (popular states do not pull every key over).
        let mut held_by_choice = 0;
        for k in 0..100 {
            let key = format!("k{k}");
            let p = place(&key, None, &caps, holds, &pred).unwrap();
            let first = place(&key, None, &caps, |_, _| false, &pred).unwrap();
            if p.reason == PlacementReason::Holds {
                assert_eq!(p.capacity.as_str(), "c2");
                assert!((p.held_probability - 0.8).abs() < 1e-12);
                held_by_choice += 1;
            } else {
                assert_eq!(p.capacity, first.capacity);
                assert_ne!(first.capacity.as_str(), "c2");
            }
        }
        assert!((30..70).contains(&held_by_choice), "{held_by_choice}");
        // Nobody holds anything: a hash, the same every time; removing another capacity moves
        // few keys.
        let none = |_: &CapacityId, _: &ResourceId| false;
        let mut moved = 0;
        for k in 0..1000 {
            let key = format!("key-{k}");
            let a = place(&key, None, &caps, none, &pred).unwrap();
            assert_eq!(a.reason, PlacementReason::Hash);
            assert_eq!(a, place(&key, None, &caps, none, &pred).unwrap());
            let b = place(&key, None, &caps[..3], none, &pred).unwrap();
            if a.capacity != b.capacity {
                moved += 1;
                assert_eq!(a.capacity.as_str(), "c3");
            }
        }
        assert!((150..350).contains(&moved), "{moved} of 1000 moved");
        assert!(place("k", None, &[], none, &pred).is_none());
    }
}
