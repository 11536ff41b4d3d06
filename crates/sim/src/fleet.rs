//! The simulated fleet as the engine reads it ([`Fleet`]): the capacities' caches, with an
//! index of which capacities hold (or are receiving) each resource, so placement never scans
//! the fleet; and the store as the engine reads it ([`Catalog`]): versions bumped by the
//! trace's writes, sizes from its reads.

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{CapacityId, HistoryRecord, ResourceId, Version};
use prewarm_engine::{Catalog, Engine, Fleet, Holding, Rule, Target};

use crate::cache::{Entry, SimCache, SimTarget};

pub(crate) struct SimFleet {
    pub caps: Vec<SimCache>,
    pub ids: Vec<CapacityId>,
    index: HashMap<CapacityId, usize>,
    /// Per resource, the capacities holding or receiving it with the version each has (so
    /// a holder query reads no cache's entries).
    holders: HashMap<ResourceId, Vec<(usize, u64)>>,
    /// The fleet's clock: the latest event time. A capacity's own memory integral is
    /// brought up to it only when the capacity is touched (or at [`SimFleet::finish`]), so
    /// an event costs nothing per capacity it does not touch.
    now: f64,
}

impl SimFleet {
    pub fn new(caps: Vec<SimCache>, ids: Vec<CapacityId>) -> Self {
        let index = ids.iter().cloned().zip(0..).collect();
        Self {
            caps,
            ids,
            index,
            holders: HashMap::new(),
            now: f64::NEG_INFINITY,
        }
    }

    pub fn index(&self, c: &CapacityId) -> usize {
        self.index.get(c).copied().unwrap_or(0)
    }

    /// Moves the fleet's clock to `t` (O(1): see `now`).
    pub fn advance(&mut self, t: f64) {
        self.now = self.now.max(t);
    }

    /// Integrates capacity `cap`'s memory up to `t` (and at least the fleet's clock).
    pub fn advance_one(&mut self, cap: usize, t: f64) {
        self.caps[cap].advance(t.max(self.now));
    }

    /// Integrates every capacity's memory up to `t`: at the end of a replay.
    pub fn finish(&mut self, t: f64) {
        self.advance(t);
        let now = self.now;
        for c in &mut self.caps {
            c.advance(now);
        }
    }

    /// Inserts into `cap` (evicting by its rule), keeping the holder index.
    pub fn insert(&mut self, cap: usize, r: ResourceId, e: Entry) -> Result<Vec<ResourceId>, ()> {
        let now = e.started_at.min(e.ready_at);
        self.advance_one(cap, now);
        let version = e.version;
        let Ok(evicted) = self.caps[cap].insert(r.clone(), e, now) else {
            // Refused: any older version it held was dropped first.
            self.forget(cap, &r);
            return Err(());
        };
        for v in &evicted {
            self.forget(cap, v);
        }
        let h = self.holders.entry(r).or_default();
        match h.iter_mut().find(|(c, _)| *c == cap) {
            Some(x) => x.1 = version,
            None => h.push((cap, version)),
        }
        Ok(evicted)
    }

    /// Removes `r` from `cap`.
    pub fn remove(&mut self, cap: usize, r: &ResourceId) {
        self.advance_one(cap, self.now);
        self.caps[cap].remove(r);
        self.forget(cap, r);
    }

    /// Drops `cap` from `r`'s holders.
    pub fn forget(&mut self, cap: usize, r: &ResourceId) {
        if let Some(h) = self.holders.get_mut(r) {
            h.retain(|(c, _)| *c != cap);
            if h.is_empty() {
                self.holders.remove(r);
            }
        }
    }

    /// Whether the oracle leaves `r` out of `cap`'s cache: making room would evict only
    /// states needed sooner than `r` (Belady's bypass).
    pub fn bypass(&self, cap: usize, r: &ResourceId, bytes: u64, engine: &Engine, t: f64) -> bool {
        let c = &self.caps[cap];
        if c.book.rule() != Rule::Belady {
            return false;
        }
        let room = c.budget.saturating_sub(c.used);
        if bytes <= room {
            return false;
        }
        let Some(next) = engine.model().and_then(|m| m.known_next_use(r, t)) else {
            return false;
        };
        match c.book.peek_victims(bytes - room, t, &|k| c.evictable(k, t)) {
            Ok((victims, _)) => victims.iter().all(|v| {
                c.book
                    .hint_of(v)
                    .and_then(|h| h.next_at)
                    .is_some_and(|n| n < next)
            }),
            Err(_) => true,
        }
    }
}

impl SimFleet {
    /// Indices of the capacities holding (or receiving) `r` at `min` or newer.
    fn holding_at<'a>(
        &'a self,
        r: &'a ResourceId,
        min: Version,
    ) -> impl Iterator<Item = usize> + 'a {
        self.holders
            .get(r)
            .into_iter()
            .flatten()
            .filter(move |(_, v)| *v >= min.get())
            .map(|(c, _)| *c)
    }
}

impl Fleet for SimFleet {
    fn capacities(&self) -> &[CapacityId] {
        &self.ids
    }

    fn capacities_epoch(&self) -> Option<u64> {
        // A replay's fleet never changes.
        Some(0)
    }

    fn holders_into(&self, r: &ResourceId, min: Version, out: &mut Vec<usize>) {
        if let Some(h) = self.holders.get(r) {
            out.reserve(h.len()); // a shared state's thousands of holders, without regrowing
            out.extend(h.iter().filter(|(_, v)| *v >= min.get()).map(|(c, _)| *c));
        }
    }

    fn holder_count(&self, r: &ResourceId, min: Version) -> usize {
        self.holding_at(r, min).count()
    }

    fn target(&self, c: &CapacityId, now: f64) -> Option<Box<dyn Target + '_>> {
        let i = *self.index.get(c)?;
        Some(Box::new(SimTarget(&self.caps[i], now)))
    }

    fn holding(&self, c: &CapacityId, r: &ResourceId) -> Option<Holding> {
        let i = *self.index.get(c)?;
        let e = self.caps[i].entries.get(r)?;
        Some(Holding {
            version: Version::new(e.version)?,
            ready: e.ready_at <= self.caps[i].clock().max(self.now),
        })
    }
}

/// The store as the replay knows it.
pub(crate) struct SimCatalog {
    latest: HashMap<ResourceId, u64>,
    sizes: HashMap<ResourceId, u64>,
    default_bytes: u64,
}

impl SimCatalog {
    pub fn new(records: &[HistoryRecord], default_bytes: u64) -> Self {
        Self {
            latest: HashMap::new(),
            sizes: crate::run::sizes(records),
            default_bytes,
        }
    }

    pub fn bytes_of(&self, r: &ResourceId) -> u64 {
        self.sizes.get(r).copied().unwrap_or(self.default_bytes)
    }

    pub fn latest_of(&self, r: &ResourceId) -> u64 {
        self.latest.get(r).copied().unwrap_or(1)
    }

    /// A write committed a new version of `r`.
    pub fn bump(&mut self, r: &ResourceId) {
        *self.latest.entry(r.clone()).or_insert(1) += 1;
    }
}

impl Catalog for SimCatalog {
    fn latest(&self, r: &ResourceId) -> Option<(Version, u64)> {
        Some((Version::new(self.latest_of(r))?, self.bytes_of(r)))
    }
}
