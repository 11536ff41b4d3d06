//! When to take a snapshot: a pure state machine over explicit time, so it is tested without
//! sleeping and driven the same way by `prewarm watch`, the coordinator and the simulator.
//!
//! - time-based: every `interval` since the resource's last snapshot;
//! - event-based: when bytes marked dirty since the last snapshot reach `dirty_threshold`;
//! - on demand: [`Triggers::request`] (the coordinator's predictive trigger uses this).
//!
//! A snapshot of an unchanged source creates no version (see `Snapshotter`), so the time
//! trigger fires unconditionally and stays correct even when change notifications are lost.

use std::collections::BTreeMap;
use std::time::Duration;

use prewarm_core::ResourceId;

/// When snapshots are due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TriggerPolicy {
    /// Snapshot at least this often.
    pub interval: Option<Duration>,
    /// Snapshot once this many bytes were modified.
    pub dirty_threshold: Option<u64>,
}

/// Why a snapshot is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    /// The interval elapsed.
    Interval,
    /// Modified bytes passed the threshold.
    Dirty {
        /// Bytes marked dirty.
        bytes: u64,
    },
    /// Someone asked.
    OnDemand,
}

#[derive(Clone, Debug)]
struct ResourceState {
    dirty: u64,
    last: Duration,
    requested: bool,
}

/// Trigger state for a set of resources. `now` is any monotonic clock's reading.
#[derive(Clone, Debug)]
pub struct Triggers {
    policy: TriggerPolicy,
    resources: BTreeMap<ResourceId, ResourceState>,
}

impl Triggers {
    /// No resources tracked yet.
    pub fn new(policy: TriggerPolicy) -> Self {
        Self {
            policy,
            resources: BTreeMap::new(),
        }
    }

    /// Starts tracking `resource`, as if snapshotted at `now`.
    pub fn track(&mut self, resource: ResourceId, now: Duration) {
        self.resources.entry(resource).or_insert(ResourceState {
            dirty: 0,
            last: now,
            requested: false,
        });
    }

    /// Records `bytes` modified. Tracks the resource if it was not tracked.
    pub fn mark_dirty(&mut self, resource: &ResourceId, bytes: u64, now: Duration) {
        self.track(resource.clone(), now);
        if let Some(s) = self.resources.get_mut(resource) {
            s.dirty = s.dirty.saturating_add(bytes);
        }
    }

    /// Bytes marked dirty since `resource`'s last snapshot.
    pub fn dirty_bytes(&self, resource: &ResourceId) -> u64 {
        self.resources.get(resource).map_or(0, |s| s.dirty)
    }

    /// Asks for a snapshot of `resource` at the next [`Triggers::due`].
    pub fn request(&mut self, resource: &ResourceId, now: Duration) {
        self.track(resource.clone(), now);
        if let Some(s) = self.resources.get_mut(resource) {
            s.requested = true;
        }
    }

    /// The resources due at `now`, with the reason (on demand first, then dirty, then time).
    pub fn due(&self, now: Duration) -> Vec<(ResourceId, Reason)> {
        self.resources
            .iter()
            .filter_map(|(r, s)| {
                let reason = if s.requested {
                    Reason::OnDemand
                } else if self
                    .policy
                    .dirty_threshold
                    .is_some_and(|t| s.dirty >= t && s.dirty > 0)
                {
                    Reason::Dirty { bytes: s.dirty }
                } else if self
                    .policy
                    .interval
                    .is_some_and(|i| now.saturating_sub(s.last) >= i)
                {
                    Reason::Interval
                } else {
                    return None;
                };
                Some((r.clone(), reason))
            })
            .collect()
    }

    /// Records a snapshot of `resource` taken at `now`: resets its dirt, request and timer.
    pub fn snapshotted(&mut self, resource: &ResourceId, now: Duration) {
        if let Some(s) = self.resources.get_mut(resource) {
            s.dirty = 0;
            s.requested = false;
            s.last = now;
        }
    }

    /// When the next time-based snapshot falls due, if any.
    pub fn next_deadline(&self) -> Option<Duration> {
        let i = self.policy.interval?;
        self.resources.values().map(|s| s.last + i).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn interval_fires_after_each_period() {
        let mut t = Triggers::new(TriggerPolicy {
            interval: Some(ms(100)),
            dirty_threshold: None,
        });
        t.track(r("a"), ms(0));
        assert!(t.due(ms(99)).is_empty());
        assert_eq!(t.due(ms(100)), vec![(r("a"), Reason::Interval)]);
        t.snapshotted(&r("a"), ms(100));
        assert!(t.due(ms(150)).is_empty());
        assert_eq!(t.next_deadline(), Some(ms(200)));
    }

    #[test]
    fn dirty_threshold_accumulates() {
        let mut t = Triggers::new(TriggerPolicy {
            interval: None,
            dirty_threshold: Some(1000),
        });
        t.mark_dirty(&r("a"), 600, ms(0));
        assert!(t.due(ms(1)).is_empty());
        t.mark_dirty(&r("a"), 400, ms(2));
        assert_eq!(t.due(ms(3)), vec![(r("a"), Reason::Dirty { bytes: 1000 })]);
        t.snapshotted(&r("a"), ms(3));
        assert_eq!(t.dirty_bytes(&r("a")), 0);
        assert!(t.due(ms(4)).is_empty());
    }

    #[test]
    fn on_demand_wins_and_is_one_shot() {
        let mut t = Triggers::new(TriggerPolicy::default());
        t.track(r("a"), ms(0));
        t.track(r("b"), ms(0));
        assert!(
            t.due(ms(10_000)).is_empty(),
            "no policy, no request: never due"
        );
        t.request(&r("b"), ms(5));
        assert_eq!(t.due(ms(6)), vec![(r("b"), Reason::OnDemand)]);
        t.snapshotted(&r("b"), ms(6));
        assert!(t.due(ms(7)).is_empty());
    }
}
