//! One simulated capacity: its cache (what it holds, in flight or installed, within a byte
//! budget, evicted by [`prewarm_engine::choose_victims`], the agent's own policy), its link
//! (one transfer at a time, on-demand fetches ahead of queued predictive ones), and the
//! accounting of memory-time and wasted bytes.

use std::collections::BTreeMap;

use prewarm_core::{ResourceId, Version};
use prewarm_engine::{Candidate, Target, choose_victims};

/// A state held or on its way.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub version: u64,
    pub bytes: u64,
    /// When the transfer starts on the link (queued until then).
    pub started_at: f64,
    /// When the transfer completes (installed from then on).
    pub ready_at: f64,
    pub last_used: f64,
    /// When the keep-alive runs out (`INFINITY`: none).
    pub expires: f64,
    /// Read since it was installed.
    pub read: bool,
    /// Executions using it now.
    pub leases: u32,
    /// Moved by prediction (not on demand).
    pub predictive: bool,
}

pub(crate) struct SimCache {
    pub budget: u64,
    pub entries: BTreeMap<ResourceId, Entry>,
    pub used: u64,
    /// When the link is next free for predictive transfers.
    pub link_free: f64,
    last_t: f64,
    /// Accounting starts here (the end of the warm-up).
    pub count_from: f64,
    pub mem_byte_s: f64,
    pub wasted: u64,
    pub now: f64,
}

impl SimCache {
    pub fn new(budget: u64, count_from: f64) -> Self {
        Self {
            budget,
            entries: BTreeMap::new(),
            used: 0,
            link_free: 0.0,
            last_t: f64::NEG_INFINITY,
            count_from,
            mem_byte_s: 0.0,
            wasted: 0,
            now: 0.0,
        }
    }

    /// Moves the clock to `t`, integrating memory held since the last change.
    pub fn advance(&mut self, t: f64) {
        let from = self.last_t.max(self.count_from);
        if t > from {
            self.mem_byte_s += self.used as f64 * (t - from);
        }
        self.last_t = self.last_t.max(t);
        self.now = t;
    }

    /// Drops `r` (evicted, expired or superseded); unread bytes count as wasted.
    pub fn remove(&mut self, r: &ResourceId) -> Option<Entry> {
        let e = self.entries.remove(r)?;
        self.used -= e.bytes;
        if !e.read && e.ready_at >= self.count_from {
            self.wasted += e.bytes;
        }
        Some(e)
    }

    /// Makes room for and records `e` under `r`; `rank` orders eviction (lower first).
    /// `false` (and nothing evicted) when it cannot fit.
    pub fn insert(
        &mut self,
        r: ResourceId,
        e: Entry,
        rank: &dyn Fn(&ResourceId, &Entry) -> f64,
    ) -> bool {
        if let Some(old) = self.remove(&r) {
            // A superseded version: gone either way.
            let _ = old;
        }
        let room = self.budget.saturating_sub(self.used);
        if e.bytes > room {
            let now = self.now;
            let candidates: Vec<Candidate<ResourceId>> = self
                .entries
                .iter()
                .map(|(k, x)| Candidate {
                    key: k.clone(),
                    bytes: x.bytes,
                    leased: x.leases > 0 || x.ready_at > now,
                    kept_alive: false,
                    rank: rank(k, x),
                })
                .collect();
            match choose_victims(&candidates, e.bytes - room) {
                Ok(victims) => {
                    for v in victims {
                        self.remove(&v);
                    }
                }
                Err(_) => return false,
            }
        }
        self.used += e.bytes;
        self.entries.insert(r, e);
        true
    }

    /// Predictive bytes still moving.
    pub fn predictive_in_flight(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| e.predictive && e.ready_at > self.now)
            .map(|e| e.bytes)
            .sum()
    }
}

impl Target for SimCache {
    fn held(&self, resource: &ResourceId) -> Option<Version> {
        self.entries
            .get(resource)
            .filter(|e| e.ready_at <= self.now)
            .and_then(|e| Version::new(e.version))
    }

    fn in_flight(&self, resource: &ResourceId) -> bool {
        self.entries
            .get(resource)
            .is_some_and(|e| e.ready_at > self.now)
    }

    fn free_bytes(&self) -> u64 {
        self.budget.saturating_sub(self.used)
    }

    fn evictable_bytes(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| e.leases == 0 && e.ready_at <= self.now)
            .map(|e| e.bytes)
            .sum()
    }
}
