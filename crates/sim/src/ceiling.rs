//! The causal ceiling of a replay: an execution that reads a state no earlier record read or
//! wrote cannot start warm under any policy that learns only from the past (nothing could
//! have named that state before it was needed). The oracle, which reads the trace's future,
//! starts those warm too, so the gap between the best baseline and the oracle includes them;
//! this is the share no predictor can close.

use std::collections::HashSet;

use prewarm_core::{HistoryRecord, ResourceId};
use serde::Serialize;

/// What bounds every causal policy over the counted part of a history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Ceiling {
    /// Executions counted (those after the warm-up with at least one read).
    pub executions: u64,
    /// Of those, executions reading a state no earlier record named.
    pub unforeseeable: u64,
    /// `1 − unforeseeable / executions`: the best warm-start rate a causal policy can reach.
    pub warm_rate: f64,
}

/// The ceiling of `records` when the first `warmup` share is replayed but not counted (the
/// simulator's rule).
pub fn ceiling(records: &[HistoryRecord], warmup: f64) -> Ceiling {
    let start = ((records.len() as f64) * warmup.clamp(0.0, 0.99)) as usize;
    let mut named: HashSet<&ResourceId> = HashSet::new();
    let (mut executions, mut unforeseeable) = (0u64, 0u64);
    for (i, r) in records.iter().enumerate() {
        if i >= start && !r.reads.is_empty() {
            executions += 1;
            if r.reads.iter().any(|rd| !named.contains(&rd.resource)) {
                unforeseeable += 1;
            }
        }
        named.extend(r.reads.iter().map(|rd| &rd.resource));
        named.extend(r.writes.iter().map(|w| &w.resource));
    }
    Ceiling {
        executions,
        unforeseeable,
        warm_rate: if executions == 0 {
            1.0
        } else {
            1.0 - unforeseeable as f64 / executions as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::rec;

    #[test]
    fn first_reads_after_the_warm_up_bound_every_causal_policy() {
        // Warm-up: a (not counted). Counted: a (seen), b (new), b (seen), c (new).
        let h = [
            rec(1.0, "k", &["a"], &[]),
            rec(2.0, "k", &["a"], &[]),
            rec(3.0, "k", &["b"], &[]),
            rec(4.0, "j", &["b"], &[]),
            rec(5.0, "k", &["c"], &[]),
        ];
        let c = ceiling(&h, 0.2);
        assert_eq!((c.executions, c.unforeseeable), (4, 2));
        assert!((c.warm_rate - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_state_written_before_it_is_read_could_have_been_foreseen() {
        let h = [
            rec(1.0, "k", &["a"], &["z"]),
            rec(2.0, "k", &["z"], &[]),
            rec(3.0, "k", &[], &[]),
        ];
        let c = ceiling(&h, 0.5);
        assert_eq!((c.executions, c.unforeseeable), (1, 0));
    }
}
