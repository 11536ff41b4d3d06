//! The simulated fleet without the clockwork: a [`Fleet`] and [`Catalog`] whose transfers
//! land at once, for measuring the decision engine's own cost (`prewarm bench coordinator`)
//! on the same fleet model the replay uses.

use prewarm_core::{CapacityId, HistoryRecord};
use prewarm_engine::{Catalog, Decided, Fleet, HintFor, Rule};

use crate::cache::{Entry, SimCache};
use crate::fleet::{SimCatalog, SimFleet};

/// See the module docs.
pub struct BenchFleet {
    fleet: SimFleet,
    catalog: SimCatalog,
}

impl BenchFleet {
    /// `capacities` caches of `cache_bytes` evicting by `rule`, over the sizes `records`
    /// give (`default_bytes` where they give none).
    pub fn new(
        records: &[HistoryRecord],
        capacities: usize,
        cache_bytes: u64,
        rule: Rule,
        default_bytes: u64,
    ) -> Self {
        let n = capacities.max(1);
        let caps = (0..n)
            .map(|_| SimCache::new(cache_bytes, 0.0, rule))
            .collect();
        let ids = (0..n)
            .map(|i| CapacityId::new(format!("cap-{i}")).expect("valid id"))
            .collect();
        Self {
            fleet: SimFleet::new(caps, ids),
            catalog: SimCatalog::new(records, default_bytes),
        }
    }

    /// The fleet, for the engine.
    pub fn fleet(&self) -> &dyn Fleet {
        &self.fleet
    }

    /// The catalog, for the engine.
    pub fn catalog(&self) -> &dyn Catalog {
        &self.catalog
    }

    /// Installs a decision's transfers at once and applies its hints; returns the transfers
    /// that found room.
    pub fn apply(&mut self, d: &Decided, now: f64) -> usize {
        let Some(p) = &d.placement else {
            return 0;
        };
        let cap = self.fleet.index(&p.capacity);
        let mut n = 0;
        for t in &d.transfers {
            let e = Entry {
                version: t.version.get(),
                bytes: t.bytes,
                started_at: now,
                ready_at: now,
                read: false,
                leases: 0,
                predictive: true,
            };
            n += usize::from(self.fleet.insert(cap, t.resource.clone(), e).is_ok());
        }
        self.hints(&d.hints);
        n
    }

    /// Applies retention hints.
    pub fn hints(&mut self, hints: &[HintFor]) {
        for h in hints {
            let cap = self.fleet.index(&h.capacity);
            self.fleet.caps[cap].hint(&h.resource, h.hint.clone());
        }
    }
}
