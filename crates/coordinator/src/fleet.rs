//! The coordinator's book as the decision engine reads it ([`Fleet`], [`Target`]): the same
//! questions the replay's fleet answers, from the agents' reports, the predictive transfers
//! under way and the mirror of each agent's eviction book.

use prewarm_core::{CapacityId, ResourceId, Version};
use prewarm_engine::{Fleet, Holding, Target};

use crate::state::{Book, Cap};

/// The fleet view of a locked book.
pub struct BookFleet<'a>(pub &'a Book);

impl BookFleet<'_> {
    /// [`Fleet::holders_into`]'s list, ascending.
    fn sorted_holders(&self, r: &ResourceId, min: Version) -> Vec<usize> {
        let book = self.0;
        // `attached` is sorted: a holder's index is its place there.
        let at = |c: &CapacityId| book.attached.binary_search(c).ok();
        let mut out: Vec<usize> = book
            .holders
            .get(r)
            .into_iter()
            .flatten()
            .filter(|c| {
                book.caps
                    .get(*c)
                    .is_some_and(|cap| cap.tx.is_some() && cap.newest(r).is_some_and(|v| v >= min))
            })
            .filter_map(at)
            .collect();
        for ((c, res), (v, _)) in &book.moving {
            if res == r
                && *v >= min
                && let Some(i) = at(c)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
        out.sort_unstable();
        out
    }
}

impl Fleet for BookFleet<'_> {
    fn capacities(&self) -> &[CapacityId] {
        &self.0.attached
    }

    fn capacities_epoch(&self) -> Option<u64> {
        Some(self.0.attached_epoch)
    }

    fn holders_into(&self, r: &ResourceId, min: Version, out: &mut Vec<usize>) {
        out.extend(self.sorted_holders(r, min));
    }

    fn target(&self, c: &CapacityId, now: f64) -> Option<Box<dyn Target + '_>> {
        let cap = self.0.caps.get(c)?;
        Some(Box::new(BookTarget {
            cap,
            id: c.clone(),
            book: self.0,
            now,
        }))
    }

    fn scoped(&self) -> bool {
        self.0.any_scoped
    }

    fn admits(&self, c: usize, r: &ResourceId) -> bool {
        let book = self.0;
        book.attached
            .get(c)
            .and_then(|id| book.caps.get(id))
            .is_some_and(|cap| cap.scope.admits(r))
    }

    fn holding(&self, c: &CapacityId, r: &ResourceId) -> Option<Holding> {
        let cap = self.0.caps.get(c)?;
        if let Some(v) = cap.newest(r) {
            return Some(Holding {
                version: v,
                ready: true,
            });
        }
        self.0
            .moving
            .get(&(c.clone(), r.clone()))
            .map(|(v, _)| Holding {
                version: *v,
                ready: false,
            })
    }
}

/// One capacity as the planner sees it.
struct BookTarget<'a> {
    cap: &'a Cap,
    id: CapacityId,
    book: &'a Book,
    now: f64,
}

impl Target for BookTarget<'_> {
    fn held(&self, resource: &ResourceId) -> Option<Version> {
        self.cap.newest(resource)
    }

    fn in_flight(&self, resource: &ResourceId) -> bool {
        self.book
            .moving
            .contains_key(&(self.id.clone(), resource.clone()))
    }

    fn free_bytes(&self) -> u64 {
        let reserved: u64 = self.reserved();
        self.cap
            .budget
            .saturating_sub(self.cap.used)
            .saturating_sub(reserved)
    }

    fn displaced(&self, need: u64) -> Option<f64> {
        if need == 0 {
            return Some(0.0);
        }
        self.cap
            .cache
            .peek_victims(need, self.now, &|r| self.cap.evictable(r))
            .ok()
            .map(|(_, loss)| loss)
    }

    fn displaced_within(&self, need: u64, window: f64) -> Option<f64> {
        if need == 0 {
            return Some(0.0);
        }
        let (victims, _) = self
            .cap
            .cache
            .peek_victims(need, self.now, &|r| self.cap.evictable(r))
            .ok()?;
        Some(
            victims
                .iter()
                .map(|r| self.cap.cache.value_within(r, self.now, window))
                .sum(),
        )
    }

    fn predictive_in_flight(&self) -> u64 {
        self.reserved()
    }

    fn horizon(&self) -> Option<f64> {
        self.cap.cache.horizon_at(self.now)
    }
}

impl BookTarget<'_> {
    /// Predictive bytes moving to this capacity (reserved there once they start).
    fn reserved(&self) -> u64 {
        self.book
            .moving
            .iter()
            .filter(|((c, _), _)| *c == self.id)
            .map(|(_, (_, b))| *b)
            .sum()
    }
}
