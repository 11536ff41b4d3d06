//! The leases `ensure` hands out: each answer keeps its state from eviction until its lease
//! expires, unless the application renews it (`PUT /v1/leases/{id}`) or releases it early
//! (`DELETE /v1/leases/{id}`). Expiry is checked on each call (no timer task per lease)
//! through a min-heap of deadlines; a renewal pushes a new deadline and the old one is
//! skipped when it comes up (the heap is rebuilt when such leftovers pile up).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use prewarm_core::ResourceId;

use crate::space::Lease;

/// A lease refused: this many are held, the cap; the earliest ends at `next_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full {
    pub held: usize,
    pub next_end: Option<Instant>,
}

/// The held leases by id.
#[derive(Debug)]
pub(crate) struct Leases {
    /// Held at once at most.
    max: usize,
    next: u64,
    /// Each lease's expiry, the lease, and its state (a tenant may touch its own only).
    held: HashMap<u64, (Instant, Lease, ResourceId)>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Default for Leases {
    fn default() -> Self {
        Self::with_max(usize::MAX)
    }
}

impl Leases {
    /// No lease held; at most `max` at once.
    pub(crate) fn with_max(max: usize) -> Self {
        Self {
            max,
            next: 0,
            held: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// Holds `lease` on `resource` until `until`; returns its id (never 0, never reused), or
    /// [`Full`] when `max` are held (the lease is dropped: its state is not kept).
    pub(crate) fn hold(
        &mut self,
        lease: Lease,
        resource: ResourceId,
        until: Instant,
    ) -> Result<u64, Full> {
        if self.held.len() >= self.max {
            return Err(Full {
                held: self.held.len(),
                next_end: self.next_end(),
            });
        }
        self.next += 1;
        let id = self.next;
        self.held.insert(id, (until, lease, resource));
        self.deadlines.push(Reverse((until, id)));
        Ok(id)
    }

    /// When the earliest held lease ends, or earlier: the heap's first deadline (a renewed or
    /// released lease's leftover may come first; a hint for a retry, so O(1) matters more).
    fn next_end(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Moves lease `id`'s expiry to `until`; false when it is not held (expired, released).
    pub(crate) fn renew(&mut self, id: u64, until: Instant) -> bool {
        let Some((at, _, _)) = self.held.get_mut(&id) else {
            return false;
        };
        *at = until;
        self.deadlines.push(Reverse((until, id)));
        if self.deadlines.len() > 2 * self.held.len() + 64 {
            self.deadlines = self
                .held
                .iter()
                .map(|(id, (at, _, _))| Reverse((*at, *id)))
                .collect();
        }
        true
    }

    /// The state lease `id` is on, while it is held.
    pub(crate) fn resource(&self, id: u64) -> Option<&ResourceId> {
        self.held.get(&id).map(|(_, _, r)| r)
    }

    /// Drops lease `id` now; false when it is not held.
    pub(crate) fn release(&mut self, id: u64) -> bool {
        self.held.remove(&id).is_some()
    }

    /// Drops the leases whose expiry is at or before `now`; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let before = self.held.len();
        while let Some(Reverse((at, id))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            // A renewed lease has a later expiry than this leftover deadline.
            if self
                .held
                .get(&id)
                .is_some_and(|(until, _, _)| *until <= now)
            {
                self.held.remove(&id);
            }
        }
        before - self.held.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn leases_expire_renew_and_release_by_id() {
        // Leases are plain counters; the table only decides when to drop them.
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = Leases::default();
        let counter = Arc::new(AtomicUsize::new(0));
        let lease = || {
            counter.fetch_add(1, Ordering::AcqRel);
            Lease::counted(counter.clone())
        };
        let r = || ResourceId::new("m/x").unwrap();
        let count = || counter.load(Ordering::Acquire);
        let a = l.hold(lease(), r(), ms(100)).unwrap();
        let b = l.hold(lease(), r(), ms(200)).unwrap();
        let c = l.hold(lease(), r(), ms(300)).unwrap();
        assert_eq!((a, b, c, count()), (1, 2, 3, 3));
        assert!(l.renew(a, ms(1_000)));
        assert_eq!(l.expire(ms(150)), 0);
        assert_eq!(count(), 3, "a was renewed past 150 ms");
        assert_eq!(l.expire(ms(250)), 1);
        assert_eq!(count(), 2, "b expired");
        assert!(!l.renew(b, ms(2_000)), "an expired lease cannot be renewed");
        assert_eq!(l.resource(c), Some(&r()));
        assert_eq!(l.resource(b), None);
        assert!(l.release(c));
        assert!(!l.release(c));
        assert_eq!(count(), 1);
        assert_eq!(l.expire(ms(1_000)), 1);
        assert_eq!(count(), 0);
        // Renewals spammed on one lease do not grow the heap without bound.
        let d = l.hold(lease(), r(), ms(5_000)).unwrap();
        for i in 0..10_000 {
            assert!(l.renew(d, ms(5_000 + i)));
        }
        assert!(
            l.deadlines.len() <= 2 * l.held.len() + 65,
            "{}",
            l.deadlines.len()
        );
        assert_eq!(l.expire(ms(20_000)), 1);
        assert_eq!((count(), l.held.len(), l.deadlines.len()), (0, 0, 0));
    }

    #[test]
    fn past_the_cap_a_lease_is_refused_and_its_state_not_kept() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = Leases::with_max(2);
        let counter = Arc::new(AtomicUsize::new(0));
        let lease = || {
            counter.fetch_add(1, Ordering::AcqRel);
            Lease::counted(counter.clone())
        };
        let r = || ResourceId::new("m/x").unwrap();
        let a = l.hold(lease(), r(), ms(100)).unwrap();
        l.hold(lease(), r(), ms(200)).unwrap();
        let full = l.hold(lease(), r(), ms(300)).unwrap_err();
        assert_eq!(
            full,
            Full {
                held: 2,
                next_end: Some(ms(100))
            }
        );
        assert_eq!(
            counter.load(Ordering::Acquire),
            2,
            "the refused lease was dropped"
        );
        assert!(l.release(a));
        assert!(l.hold(lease(), r(), ms(300)).is_ok(), "room again");
    }
}
