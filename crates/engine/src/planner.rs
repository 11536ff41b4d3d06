//! The planner: for one event, which predicted states to move to the capacity that will run
//! it. A transfer is worth it when the wait it saves, weighted by the chance the state is
//! read, beats the link time it wastes when it is not:
//!
//! ```text
//! fetch  = latency + bytes / bandwidth                      (the cold wait avoided)
//! score  = p · fetch − w · (1 − p) · fetch · (1 + pressure)
//! pressure = bytes that must be evicted to make room / bytes (0 when it fits)
//! ```
//!
//! Candidates under the probability threshold, already held at a recent-enough version,
//! already on their way, or that cannot fit even after evicting every unleased state are
//! skipped. The rest go out best score first while the predictive bytes in flight stay under
//! the cap and the event's transfer count under its limit. On-demand fetches do not pass
//! through here: they are never capped.

use prewarm_core::{ResourceId, Version};
use prewarm_core::VersionPolicy;
use serde::Serialize;

/// Planner settings.
#[derive(Clone, Debug, Serialize)]
pub struct PlannerConfig {
    /// Smallest probability acted on.
    pub threshold: f64,
    /// Cap on predictive bytes in flight to one capacity.
    pub max_in_flight: u64,
    /// The link's bandwidth to a capacity, bytes/s (prices time saved and wasted).
    pub bandwidth: f64,
    /// Fixed cost of one transfer, seconds.
    pub latency_s: f64,
    /// Weight of a wasted link-second against a saved second of waiting.
    pub waste_weight: f64,
    /// Most transfers requested for one event.
    pub max_per_event: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            threshold: 0.05,
            max_in_flight: 1 << 30,
            bandwidth: 100e6,
            latency_s: 0.005,
            waste_weight: 0.5,
            max_per_event: 4,
        }
    }
}

/// A predicted state, resolved against the store by the caller.
#[derive(Clone, Debug)]
pub struct Want {
    /// The resource.
    pub resource: ResourceId,
    /// Chance the coming execution reads it.
    pub probability: f64,
    /// Which versions would do.
    pub version: VersionPolicy,
    /// The newest committed version.
    pub latest: Version,
    /// Its size.
    pub bytes: u64,
}

/// What the planner needs to know about the target capacity.
pub trait Target {
    /// The newest version of `resource` held.
    fn held(&self, resource: &ResourceId) -> Option<Version>;
    /// A transfer of `resource` is already under way.
    fn in_flight(&self, resource: &ResourceId) -> bool;
    /// Budget minus bytes held and reserved.
    fn free_bytes(&self) -> u64;
    /// Bytes of held states that could be evicted (not leased).
    fn evictable_bytes(&self) -> u64;
}

/// A transfer to request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The resource.
    pub resource: ResourceId,
    /// The version to load.
    pub version: Version,
    /// Its size.
    pub bytes: u64,
    /// The prediction's probability.
    pub probability: f64,
    /// Its score (expected seconds saved, net).
    pub score: f64,
}

/// The planner (stateless apart from its settings).
#[derive(Clone, Debug, Default)]
pub struct Planner {
    /// Settings.
    pub cfg: PlannerConfig,
}

impl Planner {
    /// A planner with `cfg`.
    pub fn new(cfg: PlannerConfig) -> Self {
        Self { cfg }
    }

    /// The transfers to request for `wants` on `target`, given `in_flight` predictive bytes
    /// already moving to it; best first.
    pub fn plan(&self, wants: &[Want], target: &dyn Target, in_flight: u64) -> Vec<Decision> {
        let c = &self.cfg;
        let mut free = target.free_bytes();
        let evictable = target.evictable_bytes();
        let mut scored: Vec<Decision> = wants
            .iter()
            .filter(|w| w.probability >= c.threshold && w.probability > 0.0)
            .filter_map(|w| {
                let need = match w.version {
                    VersionPolicy::Latest => w.latest,
                    VersionPolicy::AtLeast(v) => v.min(w.latest),
                };
                if target.held(&w.resource).is_some_and(|h| h >= need)
                    || target.in_flight(&w.resource)
                    || w.bytes > free + evictable
                {
                    return None;
                }
                let p = w.probability.min(1.0);
                let fetch = c.latency_s + w.bytes as f64 / c.bandwidth.max(1.0);
                let pressure = w.bytes.saturating_sub(free) as f64 / w.bytes.max(1) as f64;
                let score = p * fetch - c.waste_weight * (1.0 - p) * fetch * (1.0 + pressure);
                (score > 0.0).then(|| Decision {
                    resource: w.resource.clone(),
                    version: w.latest,
                    bytes: w.bytes,
                    probability: p,
                    score,
                })
            })
            .collect();
        scored.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.resource.cmp(&b.resource))
        });
        let mut out = Vec::new();
        let mut moving = in_flight;
        for d in scored {
            if out.len() >= c.max_per_event {
                break;
            }
            if moving + d.bytes > c.max_in_flight {
                continue;
            }
            moving += d.bytes;
            free = free.saturating_sub(d.bytes);
            out.push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    struct T {
        held: HashMap<ResourceId, Version>,
        moving: Vec<ResourceId>,
        free: u64,
        evictable: u64,
    }

    impl Target for T {
        fn held(&self, r: &ResourceId) -> Option<Version> {
            self.held.get(r).copied()
        }
        fn in_flight(&self, r: &ResourceId) -> bool {
            self.moving.contains(r)
        }
        fn free_bytes(&self) -> u64 {
            self.free
        }
        fn evictable_bytes(&self) -> u64 {
            self.evictable
        }
    }

    fn want(name: &str, p: f64, latest: u64, bytes: u64) -> Want {
        Want {
            resource: ResourceId::new(name).unwrap(),
            probability: p,
            version: VersionPolicy::Latest,
            latest: Version::new(latest).unwrap(),
            bytes,
        }
    }

    fn names(d: &[Decision]) -> Vec<&str> {
        d.iter().map(|d| d.resource.as_str()).collect()
    }

    #[test]
    fn skips_held_unlikely_moving_and_unfitting_and_ranks_the_rest() {
        let v = |n| Version::new(n).unwrap();
        let t = T {
            held: [
                (ResourceId::new("held").unwrap(), v(2)),
                (ResourceId::new("old").unwrap(), v(1)),
            ]
            .into(),
            moving: vec![ResourceId::new("moving").unwrap()],
            free: 1000,
            evictable: 500,
        };
        let p = Planner::default();
        let wants = [
            want("held", 0.9, 2, 100),    // held at the latest version
            want("old", 0.9, 2, 100),     // held, but too old: refresh
            want("rare", 0.01, 1, 100),   // under the threshold
            want("coin", 0.3, 1, 100),    // 0.3 - 0.5·0.7 < 0: not worth it
            want("moving", 0.9, 1, 100),  // already on its way
            want("huge", 0.9, 1, 2000),   // cannot fit even after evicting
            want("likely", 0.95, 1, 400), // the best
        ];
        let d = p.plan(&wants, &t, 0);
        assert_eq!(names(&d), vec!["likely", "old"]);
        assert_eq!(d[1].version, v(2));
        // The cap on bytes in flight holds back what does not fit under it.
        let capped = Planner::new(PlannerConfig {
            max_in_flight: 450,
            ..Default::default()
        });
        assert_eq!(names(&capped.plan(&wants, &t, 0)), vec!["likely"]);
        assert_eq!(names(&capped.plan(&wants, &t, 400)), Vec::<&str>::new());
    }

    #[test]
    fn cache_pressure_raises_the_bar() {
        let full = || T {
            held: HashMap::new(),
            moving: vec![],
            free: 0,
            evictable: 10_000,
        };
        let roomy = T {
            free: 10_000,
            ..full()
        };
        let t = full();
        let w = [want("x", 0.4, 1, 1000)];
        let p = Planner::default();
        // p = 0.4: worth it with room (0.4 > 0.5·0.6), not when everything must be evicted
        // (0.4 < 0.5·0.6·2).
        assert_eq!(p.plan(&w, &roomy, 0).len(), 1);
        assert!(p.plan(&w, &t, 0).is_empty());
    }
}
