//! Comparing policies as cost/benefit curves, never one number (SPES and RainbowCake report
//! cold starts and wasted memory together): each replay is a point (cache memory-time or
//! bytes moved, warm-start rate); a baseline's frontier is the best warm-start rate any
//! baseline reached at that cost or less; a policy is on or above it when no baseline did
//! better for less; and the share of the gap to the oracle a policy closes is measured at
//! matched cost.

use serde::Serialize;

use crate::SimReport;

/// Policies that learn a model of the workload (everything else is a baseline, the oracle
/// aside).
pub fn is_learned(policy: &str) -> bool {
    matches!(
        policy,
        "gru" | "transformer" | "mixture" | "auto" | "learned"
    ) || policy.starts_with("gru:")
        || policy.starts_with("transformer:")
}

/// Whether `policy` reads the trace's future (the oracle, and Belady's eviction alone): a
/// reference line, never a baseline.
pub fn clairvoyant(policy: &str) -> bool {
    matches!(policy, "oracle" | "belady")
}

/// The cost axis of a frontier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    /// Cache memory held over time, GB·s.
    Memory,
    /// Bytes moved.
    Bytes,
}

impl Cost {
    /// The cost of `r` on this axis.
    pub fn of(self, r: &SimReport) -> f64 {
        match self {
            Cost::Memory => r.memory_gb_s,
            Cost::Bytes => r.bytes as f64,
        }
    }
}

/// One point: a policy at a cache size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// The policy.
    pub policy: String,
    /// Cache bytes per capacity.
    pub cache_bytes: u64,
    /// The cost.
    pub cost: f64,
    /// Warm-start rate.
    pub warm_rate: f64,
}

/// The best warm-start rate among `points` at cost `at` or less (`None`: none that cheap).
pub fn best_at(points: &[Point], at: f64) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.cost <= at * (1.0 + 1e-9))
        .map(|p| p.warm_rate)
        .max_by(f64::total_cmp)
}

/// How a policy fares against the baselines at one cache size: against every baseline at the
/// same size, and every baseline point (any size) that used no more memory-time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Standing {
    /// The policy.
    pub policy: String,
    /// Cache bytes per capacity.
    pub cache_bytes: u64,
    /// Its warm-start rate.
    pub warm_rate: f64,
    /// The best baseline's at the same cache size, or at no more memory-time at any size
    /// swept.
    pub baseline_at_cost: Option<f64>,
    /// The oracle's at this size.
    pub oracle: Option<f64>,
    /// No baseline did better for less memory-time.
    pub on_frontier: bool,
    /// `(policy − baseline) / (oracle − baseline)` at matched memory-time.
    pub gap_closed: Option<f64>,
    /// `(policy − baseline) / (ceiling − baseline)`: the same against the causal ceiling
    /// (see [`crate::ceiling`]), the part of the gap a policy that learns only from the past
    /// can close at all.
    pub causal_gap_closed: Option<f64>,
    /// Its bytes moved over the oracle's at this size.
    pub bytes_vs_oracle: Option<f64>,
}

/// The standings of every learned policy at every size: `runs` is (cache bytes, rows);
/// `ceiling` the history's causal ceiling (a warm-start rate), when known.
pub fn standings(runs: &[(u64, Vec<SimReport>)], ceiling: Option<f64>) -> Vec<Standing> {
    let baselines: Vec<Point> = points(runs, Cost::Memory, |p| !is_learned(p) && !clairvoyant(p));
    let mut out = Vec::new();
    for (size, rows) in runs {
        let oracle = rows.iter().find(|r| r.policy == "oracle");
        let same_size = rows
            .iter()
            .filter(|b| !is_learned(&b.policy) && !clairvoyant(&b.policy))
            .map(|b| b.warm_rate)
            .max_by(f64::total_cmp);
        for r in rows.iter().filter(|r| is_learned(&r.policy)) {
            let base = match (best_at(&baselines, r.memory_gb_s), same_size) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let o = oracle.map(|o| o.warm_rate);
            let gap_closed = match (base, o) {
                (Some(b), Some(o)) if o > b + 1e-12 => Some((r.warm_rate - b) / (o - b)),
                _ => None,
            };
            let causal_gap_closed = match (base, ceiling) {
                (Some(b), Some(c)) if c > b + 1e-12 => Some((r.warm_rate - b) / (c - b)),
                _ => None,
            };
            out.push(Standing {
                policy: r.policy.clone(),
                cache_bytes: *size,
                warm_rate: r.warm_rate,
                baseline_at_cost: base,
                oracle: o,
                on_frontier: base.is_none_or(|b| r.warm_rate + 1e-12 >= b),
                gap_closed,
                causal_gap_closed,
                bytes_vs_oracle: oracle
                    .filter(|o| o.bytes > 0)
                    .map(|o| r.bytes as f64 / o.bytes as f64),
            });
        }
    }
    out
}

/// Every run of the policies `keep` accepts as a point on the `cost` axis.
pub fn points(
    runs: &[(u64, Vec<SimReport>)],
    cost: Cost,
    keep: impl Fn(&str) -> bool,
) -> Vec<Point> {
    runs.iter()
        .flat_map(|(size, rows)| {
            rows.iter().filter(|r| keep(&r.policy)).map(move |r| Point {
                policy: r.policy.clone(),
                cache_bytes: *size,
                cost: cost.of(r),
                warm_rate: r.warm_rate,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(policy: &str, warm: f64, mem: f64, bytes: u64) -> SimReport {
        SimReport {
            policy: policy.into(),
            executions: 100,
            warm: (warm * 100.0) as u64,
            warm_rate: warm,
            ready_byte_share: warm,
            ttr_p50_ms: 0.0,
            ttr_p99_ms: 0.0,
            ttr_mean_ms: 0.0,
            bytes,
            bytes_on_demand: bytes,
            bytes_predictive: 0,
            wasted_bytes: 0,
            memory_gb_s: mem,
            evictions: 0,
            oracle_share: None,
            over_time: vec![],
            ttr_percentiles_ms: vec![],
        }
    }

    #[test]
    fn frontiers_are_judged_at_matched_memory_time() {
        let runs = vec![
            (
                1,
                vec![
                    row("lru", 0.50, 10.0, 100),
                    row("gru", 0.60, 10.0, 150),
                    row("oracle", 0.90, 9.0, 50),
                ],
            ),
            (
                2,
                vec![
                    row("lru", 0.70, 20.0, 80),
                    // More memory than lru used at size 2, less warm: below the frontier.
                    row("gru", 0.65, 25.0, 90),
                    row("oracle", 0.95, 18.0, 40),
                ],
            ),
        ];
        let s = standings(&runs, Some(0.8));
        assert_eq!(s.len(), 2);
        assert!(s[0].on_frontier);
        assert!((s[0].gap_closed.unwrap() - 0.25).abs() < 1e-9); // (0.6-0.5)/(0.9-0.5)
        assert!((s[0].causal_gap_closed.unwrap() - 1.0 / 3.0).abs() < 1e-9); // (0.6-0.5)/(0.8-0.5)
        assert!((s[0].bytes_vs_oracle.unwrap() - 3.0).abs() < 1e-9);
        assert!(!s[1].on_frontier);
        assert_eq!(s[1].baseline_at_cost, Some(0.70));
        assert!(s[1].gap_closed.unwrap() < 0.0);
        assert!(is_learned("gru:models/x") && !is_learned("markov"));
    }
}
