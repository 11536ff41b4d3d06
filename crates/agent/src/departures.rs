//! Why a state is not here: the agent remembers, per resource, the last time a state left
//! (evicted, and for what) or failed to arrive (and why), for the newest [`KEPT`]
//! resources. `ensure` names the reason on a miss, the inventory carries the latest ones to
//! the coordinator's `status`, and the application API's inventory lists them. A resource
//! with no entry was never fetched here (or not since the agent started).

use std::collections::{HashMap, VecDeque};

use prewarm_core::{ResourceId, Version};

/// Resources remembered (the oldest is forgotten first).
pub const KEPT: usize = 1024;

/// What happened to a state that is not here.
#[derive(Clone, Debug, PartialEq)]
pub enum Why {
    /// Evicted to make room for `for_resource`.
    Evicted {
        /// The version that left.
        version: Version,
        /// The state that needed the room.
        for_resource: ResourceId,
    },
    /// Its keep-alive ran out unused.
    Expired {
        /// The version that left.
        version: Version,
    },
    /// The last fetch failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// One departure, when it happened (Unix ms).
#[derive(Clone, Debug, PartialEq)]
pub struct Departed {
    /// What happened.
    pub why: Why,
    /// When, Unix ms.
    pub unix_ms: u64,
}

impl Departed {
    /// The version concerned, when one is known.
    pub fn version(&self) -> Option<Version> {
        match &self.why {
            Why::Evicted { version, .. } | Why::Expired { version } => Some(*version),
            Why::Failed { .. } => None,
        }
    }

    /// `evicted`, `expired` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self.why {
            Why::Evicted { .. } => "evicted",
            Why::Expired { .. } => "expired",
            Why::Failed { .. } => "failed",
        }
    }

    /// What happened, without when ("to make room for models/b", the fetch's error).
    pub fn cause(&self) -> String {
        match &self.why {
            Why::Evicted { for_resource, .. } => format!("to make room for {for_resource}"),
            Why::Expired { .. } => "its keep-alive ran out".to_owned(),
            Why::Failed { error } => error.clone(),
        }
    }

    /// One sentence for people, relative to `now_ms`.
    pub fn describe(&self, now_ms: u64) -> String {
        let ago = now_ms.saturating_sub(self.unix_ms) as f64 / 1e3;
        let cause = self.cause();
        match &self.why {
            Why::Evicted { version, .. } => {
                format!("v{version} was evicted {ago:.1} s ago {cause}")
            }
            Why::Expired { version } => {
                format!("v{version} was dropped {ago:.1} s ago: {cause}")
            }
            Why::Failed { .. } => format!("the last fetch failed {ago:.1} s ago: {cause}"),
        }
    }
}

/// The remembered departures.
#[derive(Default)]
pub struct Departures {
    map: HashMap<ResourceId, Departed>,
    order: VecDeque<ResourceId>,
}

impl Departures {
    /// Remembers that `resource` left or failed (replacing what was known).
    pub fn record(&mut self, resource: &ResourceId, d: Departed) {
        if self.map.insert(resource.clone(), d).is_some() {
            self.order.retain(|r| r != resource);
        }
        self.order.push_back(resource.clone());
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// `resource` arrived: nothing to explain any more.
    pub fn arrived(&mut self, resource: &ResourceId) {
        if self.map.remove(resource).is_some() {
            self.order.retain(|r| r != resource);
        }
    }

    /// What is known of `resource`.
    pub fn get(&self, resource: &ResourceId) -> Option<&Departed> {
        self.map.get(resource)
    }

    /// The newest `n`, newest first.
    pub fn recent(&self, n: usize) -> Vec<(ResourceId, Departed)> {
        self.order
            .iter()
            .rev()
            .take(n)
            .filter_map(|r| self.map.get(r).map(|d| (r.clone(), d.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    #[test]
    fn the_latest_reason_per_resource_bounded_and_cleared_on_arrival() {
        let mut d = Departures::default();
        let evicted = Departed {
            why: Why::Evicted {
                version: Version::new(3).unwrap(),
                for_resource: id("m/b"),
            },
            unix_ms: 1_000,
        };
        d.record(&id("m/a"), evicted.clone());
        assert_eq!(
            d.get(&id("m/a")).unwrap().describe(13_500),
            "v3 was evicted 12.5 s ago to make room for m/b"
        );
        let failed = Departed {
            why: Why::Failed {
                error: "store unreachable".into(),
            },
            unix_ms: 2_000,
        };
        d.record(&id("m/a"), failed.clone());
        assert_eq!(d.recent(10), vec![(id("m/a"), failed)]);
        d.arrived(&id("m/a"));
        assert!(d.get(&id("m/a")).is_none() && d.recent(10).is_empty());
        for i in 0..KEPT + 10 {
            d.record(&id(&format!("r/{i}")), evicted.clone());
        }
        assert_eq!(d.recent(usize::MAX).len(), KEPT);
        assert!(d.get(&id("r/0")).is_none() && d.get(&id(&format!("r/{}", KEPT + 9))).is_some());
        assert_eq!(d.recent(2)[0].0, id(&format!("r/{}", KEPT + 9)));
    }
}
