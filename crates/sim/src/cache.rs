//! One simulated capacity: what it holds, in flight or installed, within a byte budget; its
//! [`CacheBook`] (the engine's eviction and keep rules, the same the agent runs); its link
//! (one transfer at a time, on-demand fetches ahead of queued predictive ones); and the
//! accounting of memory-time and wasted bytes.

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{ResourceId, Version};
use prewarm_engine::{CacheBook, Hint, Rule, Target};

/// A state held or on its way.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub version: u64,
    pub bytes: u64,
    /// When the transfer starts on the link (queued until then).
    pub started_at: f64,
    /// When the transfer completes (installed from then on).
    pub ready_at: f64,
    /// Read since it was installed.
    pub read: bool,
    /// Executions using it now.
    pub leases: u32,
    /// Moved by prediction (not on demand).
    pub predictive: bool,
}

pub(crate) struct SimCache {
    pub budget: u64,
    pub entries: HashMap<ResourceId, Entry>,
    pub book: CacheBook<ResourceId>,
    pub used: u64,
    /// When the link is next free for predictive transfers.
    pub link_free: f64,
    last_t: f64,
    /// Accounting starts here (the end of the warm-up).
    pub count_from: f64,
    pub mem_byte_s: f64,
    pub wasted: u64,
    /// Evictions made.
    pub evictions: u64,
    /// Predictive transfers not yet complete at the last clock (resource, ready at):
    /// `predictive_in_flight` sums these instead of scanning every entry per event.
    moving: Vec<(ResourceId, f64)>,
}

impl SimCache {
    pub fn new(budget: u64, count_from: f64, rule: Rule) -> Self {
        Self {
            budget,
            entries: HashMap::new(),
            book: CacheBook::new(rule, budget),
            used: 0,
            link_free: 0.0,
            last_t: f64::NEG_INFINITY,
            count_from,
            mem_byte_s: 0.0,
            wasted: 0,
            evictions: 0,
            moving: Vec::new(),
        }
    }

    /// Moves the clock to `t`, integrating memory held since the last change.
    pub fn advance(&mut self, t: f64) {
        let from = self.last_t.max(self.count_from);
        if t > from {
            self.mem_byte_s += self.used as f64 * (t - from);
        }
        self.last_t = self.last_t.max(t);
        let now = self.last_t;
        self.moving.retain(|(_, ready)| *ready > now);
    }

    /// The latest time the cache was advanced to.
    pub fn clock(&self) -> f64 {
        self.last_t
    }

    /// Drops `r` (evicted, expired or superseded); unread bytes count as wasted.
    pub fn remove(&mut self, r: &ResourceId) -> Option<Entry> {
        let e = self.entries.remove(r)?;
        self.book.remove(r);
        self.used -= e.bytes;
        if !e.read && e.ready_at >= self.count_from {
            self.wasted += e.bytes;
        }
        Some(e)
    }

    /// Whether `r` may be evicted at `now` (not in use, not still moving).
    pub fn evictable(&self, r: &ResourceId, now: f64) -> bool {
        self.entries
            .get(r)
            .is_some_and(|e| e.leases == 0 && e.ready_at <= now)
    }

    /// Makes room for `e` under `r` at `now` by the book's rule and records it; `Err` (and
    /// nothing evicted) when it cannot fit. Returns the evicted states.
    pub fn insert(&mut self, r: ResourceId, e: Entry, now: f64) -> Result<Vec<ResourceId>, ()> {
        // A superseded version: gone either way.
        self.remove(&r);
        let room = self.budget.saturating_sub(self.used);
        let mut evicted = Vec::new();
        if e.bytes > self.budget {
            return Err(());
        }
        if e.bytes > room {
            let victims = {
                let entries = &self.entries;
                let ok = |k: &ResourceId| {
                    entries
                        .get(k)
                        .is_some_and(|x| x.leases == 0 && x.ready_at <= now)
                };
                self.book
                    .victims(e.bytes - room, now, &ok)
                    .map_err(|_| ())?
            };
            for v in victims {
                self.remove(&v);
                self.evictions += 1;
                evicted.push(v);
            }
        }
        self.used += e.bytes;
        if e.predictive && e.ready_at > now {
            self.moving.push((r.clone(), e.ready_at));
        }
        self.book.admit(r.clone(), e.bytes, now);
        self.entries.insert(r, e);
        Ok(evicted)
    }

    /// Applies a hint; returns its keep-until when it is finite (for the expiry timer).
    pub fn hint(&mut self, r: &ResourceId, h: Hint) -> Option<f64> {
        if !self.entries.contains_key(r) {
            return None;
        }
        let until = h.keep_until;
        self.book.hint(r, h);
        until.is_finite().then_some(until)
    }

    /// Whether `r`'s keep-alive has run out at `t` (and it may go).
    pub fn expired(&self, r: &ResourceId, t: f64) -> bool {
        self.evictable(r, t) && self.book.hint_of(r).is_some_and(|h| h.keep_until <= t)
    }

    /// Predictive bytes still moving at `now`.
    pub fn predictive_in_flight(&self, now: f64) -> u64 {
        // An entry counts once, while it is the one that was queued (not dropped, superseded
        // or replaced since).
        self.moving
            .iter()
            .filter(|(_, ready)| *ready > now)
            .filter_map(|(r, ready)| {
                self.entries
                    .get(r)
                    .filter(|e| e.predictive && e.ready_at == *ready)
            })
            .map(|e| e.bytes)
            .sum()
    }
}

/// A capacity as the planner sees it at a time.
pub(crate) struct SimTarget<'a>(pub &'a SimCache, pub f64);

impl Target for SimTarget<'_> {
    fn held(&self, resource: &ResourceId) -> Option<Version> {
        let SimTarget(c, now) = *self;
        c.entries
            .get(resource)
            .filter(|e| e.ready_at <= now)
            .and_then(|e| Version::new(e.version))
    }

    fn in_flight(&self, resource: &ResourceId) -> bool {
        let SimTarget(c, now) = *self;
        c.entries.get(resource).is_some_and(|e| e.ready_at > now)
    }

    fn free_bytes(&self) -> u64 {
        self.0.budget.saturating_sub(self.0.used)
    }

    fn displaced(&self, need: u64) -> Option<f64> {
        if need == 0 {
            return Some(0.0);
        }
        let SimTarget(c, now) = *self;
        c.book
            .peek_victims(need, now, &|k| c.evictable(k, now))
            .ok()
            .map(|(_, loss)| loss)
    }

    fn displaced_within(&self, need: u64, window: f64) -> Option<f64> {
        if need == 0 {
            return Some(0.0);
        }
        let SimTarget(c, now) = *self;
        let (victims, _) = c
            .book
            .peek_victims(need, now, &|k| c.evictable(k, now))
            .ok()?;
        Some(
            victims
                .iter()
                .map(|k| c.book.value_within(k, now, window))
                .sum(),
        )
    }

    fn predictive_in_flight(&self) -> u64 {
        self.0.predictive_in_flight(self.1)
    }

    fn horizon(&self) -> Option<f64> {
        self.0.book.horizon_at(self.1)
    }
}
