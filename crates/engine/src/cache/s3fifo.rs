//! S3-FIFO (Yang et al., SOSP'23): a small FIFO (10% of the bytes) that filters one-hit
//! wonders, a main FIFO with reinsertion (two use bits), and a ghost FIFO of recent
//! small-queue victims whose return goes straight to main.

use std::collections::VecDeque;

use foldhash::{HashSet, HashSetExt};
use std::hash::Hash;

/// The small queue's share of the budget.
const SMALL_SHARE: f64 = 0.1;

/// The queues (front = oldest).
#[derive(Clone, Debug)]
pub(super) struct S3Fifo<K: Clone + Eq + Hash> {
    small: VecDeque<K>,
    main: VecDeque<K>,
    small_bytes: u64,
    ghost: VecDeque<K>,
    ghost_set: HashSet<K>,
}

impl<K: Clone + Eq + Hash> Default for S3Fifo<K> {
    fn default() -> Self {
        Self {
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_bytes: 0,
            ghost: VecDeque::new(),
            ghost_set: HashSet::new(),
        }
    }
}

/// What the queues need to know of an entry.
pub(super) trait Entry {
    fn bytes(&self) -> u64;
    fn set_main(&mut self, main: bool);
    /// Use bits since queued (0..=3).
    fn freq(&self) -> u8;
    fn set_freq(&mut self, f: u8);
}

impl<K: Clone + Eq + Hash> S3Fifo<K> {
    /// A state arrived: to main when it is a recent ghost, else on probation. Returns
    /// whether it went to main.
    pub fn admit(&mut self, key: &K, bytes: u64) -> bool {
        if self.ghost_set.remove(key) {
            self.main.push_back(key.clone());
            true
        } else {
            self.small.push_back(key.clone());
            self.small_bytes += bytes;
            false
        }
    }

    /// A state left (it may already be out of its queue, as a chosen victim is).
    pub fn remove(&mut self, key: &K, in_main: bool, bytes: u64) {
        let q = if in_main {
            &mut self.main
        } else {
            &mut self.small
        };
        if let Some(i) = q.iter().position(|k| k == key) {
            q.remove(i);
        }
        if !in_main {
            self.small_bytes -= bytes;
        }
    }

    /// Chooses victims for `need` bytes, moving entries between queues as the algorithm
    /// does; the victims leave their queues (the caller removes them from the book).
    pub fn choose<E: Entry>(
        &mut self,
        need: u64,
        budget: u64,
        entries: &mut foldhash::HashMap<K, E>,
        evictable: &dyn Fn(&K) -> bool,
    ) -> (Vec<K>, u64) {
        let mut freed = 0;
        let mut out = Vec::new();
        let mut pinned = 0usize; // consecutive unevictable entries seen
        let small_target = (budget as f64 * SMALL_SHARE) as u64;
        while freed < need && pinned <= self.small.len() + self.main.len() {
            let from_small =
                !self.small.is_empty() && (self.small_bytes > small_target || self.main.is_empty());
            let q = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let Some(k) = q.pop_front() else {
                break;
            };
            let m = entries.get_mut(&k).expect("queued keys are held");
            if !evictable(&k) {
                pinned += 1;
                q.push_back(k);
                continue;
            }
            pinned = 0;
            if m.freq() >= 1 {
                // Used since queued: a probation state is promoted to main (bits cleared),
                // a main one reinserted with one use fewer.
                if from_small {
                    m.set_freq(0);
                    m.set_main(true);
                    self.small_bytes -= m.bytes();
                } else {
                    m.set_freq(m.freq() - 1);
                }
                self.main.push_back(k);
                continue;
            }
            if from_small {
                self.ghost.push_back(k.clone());
                self.ghost_set.insert(k.clone());
                let cap = self.main.len().max(16);
                while self.ghost.len() > cap {
                    if let Some(g) = self.ghost.pop_front() {
                        self.ghost_set.remove(&g);
                    }
                }
            }
            freed += m.bytes();
            out.push(k);
        }
        (out, freed)
    }
}
