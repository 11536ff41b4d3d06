//! Victim choice, one function per rule (the book's indexes make each a walk from the
//! cheapest end).

use foldhash::HashSet;
use std::hash::Hash;

use super::CacheBook;

impl<K: Clone + Eq + Hash + Ord> CacheBook<K> {
    fn walk<'a>(
        &'a self,
        index: impl Iterator<Item = &'a K>,
        need: u64,
        evictable: &dyn Fn(&K) -> bool,
        taken: &HashSet<K>,
    ) -> (Vec<K>, u64) {
        let mut freed = 0;
        let mut out = Vec::new();
        for k in index {
            if freed >= need {
                break;
            }
            if !taken.contains(k) && evictable(k) {
                freed += self.entries[k].bytes;
                out.push(k.clone());
            }
        }
        (out, freed)
    }

    /// Least recently used first, and the bytes they free (less than `need` only when
    /// every evictable state was taken).
    pub(super) fn by_recency(
        &self,
        need: u64,
        evictable: &dyn Fn(&K) -> bool,
        taken: &HashSet<K>,
    ) -> (Vec<K>, u64) {
        self.walk(self.recency.iter().map(|x| &x.2), need, evictable, taken)
    }

    /// Smallest priority first, and the bytes they free.
    pub(super) fn by_priority(
        &self,
        need: u64,
        evictable: &dyn Fn(&K) -> bool,
        taken: &HashSet<K>,
    ) -> (Vec<K>, u64) {
        self.walk(self.prio.iter().map(|x| &x.2), need, evictable, taken)
    }

    /// S3-FIFO's queues, then (for states outside them) least recently used.
    pub(super) fn by_s3fifo(&mut self, need: u64, evictable: &dyn Fn(&K) -> bool) -> Vec<K> {
        let (mut out, freed) = self
            .s3
            .choose(need, self.budget, &mut self.entries, evictable);
        if freed < need {
            // Only states outside the queues are left (a caller that did not remove earlier
            // victims): least recently used among them.
            let taken: HashSet<K> = out.iter().cloned().collect();
            out.extend(self.by_recency(need - freed, evictable, &taken).0);
        }
        out
    }
}
