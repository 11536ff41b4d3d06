//! Victim choice: the one eviction policy of prewarm. The agent's state space and the
//! simulator's caches describe what they hold as [`Candidate`]s and evict what
//! [`choose_victims`] returns.
//!
//! Order: states outside any keep-alive window before states inside one, then by `rank`
//! ascending (the last-use time gives least-recently-used; the simulator's oracle passes the
//! negated time of next use, giving Belady's furthest-in-future). Leased states are never
//! chosen. When the unleased states cannot free enough, nothing is chosen.

/// A held state that might be evicted.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate<K> {
    /// What the caller calls it.
    pub key: K,
    /// Bytes freed by evicting it.
    pub bytes: u64,
    /// In use by an execution: never evicted.
    pub leased: bool,
    /// Inside a keep-alive window (a predictor's hint): evicted only after the others.
    pub kept_alive: bool,
    /// Lower goes first.
    pub rank: f64,
}

/// Not enough can be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Bytes the unleased states hold.
    pub freeable: u64,
    /// Bytes held by leased states.
    pub leased: u64,
}

/// The states to evict to free at least `need` bytes, in eviction order.
pub fn choose_victims<K: Clone>(
    candidates: &[Candidate<K>],
    need: u64,
) -> Result<Vec<K>, Shortfall> {
    if need == 0 {
        return Ok(Vec::new());
    }
    let mut order: Vec<&Candidate<K>> = candidates.iter().filter(|c| !c.leased).collect();
    let freeable: u64 = order.iter().map(|c| c.bytes).sum();
    if freeable < need {
        return Err(Shortfall {
            freeable,
            leased: candidates
                .iter()
                .filter(|c| c.leased)
                .map(|c| c.bytes)
                .sum(),
        });
    }
    order.sort_by(|a, b| {
        a.kept_alive
            .cmp(&b.kept_alive)
            .then(a.rank.total_cmp(&b.rank))
    });
    let mut freed = 0;
    let mut out = Vec::new();
    for c in order {
        if freed >= need {
            break;
        }
        freed += c.bytes;
        out.push(c.key.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn c(key: u32, bytes: u64, rank: f64, leased: bool, kept_alive: bool) -> Candidate<u32> {
        Candidate {
            key,
            bytes,
            leased,
            kept_alive,
            rank,
        }
    }

    #[test]
    fn least_recent_first_never_leased_kept_alive_last() {
        let cs = [
            c(1, 10, 5.0, false, false),
            c(2, 10, 1.0, true, false), // oldest, but leased
            c(3, 10, 2.0, false, true), // old, but kept alive
            c(4, 10, 3.0, false, false),
        ];
        assert_eq!(choose_victims(&cs, 15).unwrap(), vec![4, 1]);
        assert_eq!(choose_victims(&cs, 25).unwrap(), vec![4, 1, 3]);
        assert_eq!(choose_victims(&cs, 0).unwrap(), Vec::<u32>::new());
        assert_eq!(
            choose_victims(&cs, 31),
            Err(Shortfall {
                freeable: 30,
                leased: 10
            })
        );
    }
}
