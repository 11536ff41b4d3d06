//! One capacity's cache as the eviction and keep rules see it: which states it holds, their
//! sizes, uses and the engine's retention hints. The agent's state space and the simulator's
//! caches each own a [`CacheBook`] and evict what [`CacheBook::victims`] names, so production
//! and replay evict by the same code.
//!
//! Rules ([`Rule`]):
//! - `Lru`: least recently used first.
//! - `S3Fifo`: S3-FIFO (Yang et al., SOSP'23): a small FIFO (10% of the bytes) filtering
//!   one-hit wonders, a main FIFO with reinsertion, a ghost FIFO of recent small-queue
//!   victims whose return goes straight to main.
//! - `Gdsf`: GreedyDual-Size-Frequency: `L + uses · fetch / bytes`, smallest first.
//! - `Value`: the next-use-aware rule: each state's expected cold-start seconds saved by
//!   holding it — `fetch · share · P(use within the cache's horizon | idle)` combined with a
//!   planned use — per byte, smallest first (relaxed Belady, priced). The horizon is the
//!   cache's own characteristic time (how long evicted states had been idle), learned as it
//!   runs.
//! - `Belady`: the oracle's: the furthest known next use first.
//!
//! Every rule keeps a state at least until its hint's `keep_until` only while there is room;
//! [`CacheBook::expired`] lists the unleased states whose `keep_until` passed (the keep-alive
//! rule). Leased states are never chosen; when the rest cannot free enough, nothing is.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::evict::Shortfall;
use crate::nextuse_curve::Curve;

/// An eviction rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Least recently used.
    Lru,
    /// S3-FIFO.
    S3Fifo,
    /// GreedyDual-Size-Frequency.
    Gdsf,
    /// Expected seconds saved per byte, from the engine's next-use estimates.
    Value,
    /// Furthest known next use (the oracle).
    Belady,
}

impl Rule {
    /// By name (`lru`, `s3fifo`, `gdsf`, `value`, `belady`).
    pub fn by_name(s: &str) -> Option<Self> {
        Some(match s {
            "lru" => Rule::Lru,
            "s3fifo" => Rule::S3Fifo,
            "gdsf" => Rule::Gdsf,
            "value" => Rule::Value,
            "belady" => Rule::Belady,
            _ => return None,
        })
    }
}

/// A planned use of a state: an execution the engine placed expects it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// Chance it is read.
    pub p: f64,
    /// The plan counts until this time (Unix s).
    pub until: f64,
}

/// The engine's retention hint for one held state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hint {
    /// Keep (when unleased) until this time, Unix s; `INFINITY`: until pressure.
    pub keep_until: f64,
    /// Seconds a cold fetch of it costs.
    pub fetch_s: f64,
    /// Share of its uses expected here (1 / holders).
    pub share: f64,
    /// Its next-use estimate, from its last use.
    pub curve: Option<Curve>,
    /// A planned use.
    pub expected: Option<Expected>,
    /// Its exact next use (the oracle only), Unix s; `INFINITY`: never.
    pub next_at: Option<f64>,
}

#[derive(Clone, Debug)]
struct Meta {
    bytes: u64,
    last_use: f64,
    uses: u32,
    seq: u64,
    hint: Option<Hint>,
    /// GDSF priority, or the LRU/Belady rank, as indexed in `order`.
    key_rank: f64,
    /// S3-FIFO: in the main queue; accessed since queued (capped at 3).
    main: bool,
    freq: u8,
}

/// Totally ordered f64 for the rank index.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rank(f64);
impl Eq for Rank {}
impl PartialOrd for Rank {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Rank {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Sampled entries per victim choice under the `Value` rule when the cache holds many.
const SAMPLE: usize = 64;
/// Weight of each new eviction in the horizon's moving average.
const HORIZON_ALPHA: f64 = 0.05;
/// S3-FIFO: the small queue's share of the budget.
const SMALL_SHARE: f64 = 0.1;

/// A capacity's cache book (see the module docs).
#[derive(Clone, Debug)]
pub struct CacheBook<K: Clone + Eq + Hash + Ord> {
    rule: Rule,
    budget: u64,
    entries: HashMap<K, Meta>,
    /// Rank index (Lru, Gdsf, Belady): smallest goes first.
    order: BTreeSet<(Rank, u64, K)>,
    /// All keys, for sampling (Value).
    keys: Vec<K>,
    slot: HashMap<K, usize>,
    /// S3-FIFO queues (front = oldest) and ghost.
    small: VecDeque<K>,
    main: VecDeque<K>,
    small_bytes: u64,
    ghost: VecDeque<K>,
    ghost_set: HashSet<K>,
    gdsf_l: f64,
    seq: u64,
    rng: u64,
    /// How long evicted states had been idle (moving average), seconds.
    horizon: Option<f64>,
}

impl<K: Clone + Eq + Hash + Ord> CacheBook<K> {
    /// An empty book under `rule` for a cache of `budget` bytes.
    pub fn new(rule: Rule, budget: u64) -> Self {
        Self {
            rule,
            budget,
            entries: HashMap::new(),
            order: BTreeSet::new(),
            keys: Vec::new(),
            slot: HashMap::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_bytes: 0,
            ghost: VecDeque::new(),
            ghost_set: HashSet::new(),
            gdsf_l: 0.0,
            seq: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            horizon: None,
        }
    }

    /// The rule.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// States held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The cache's horizon (how long its victims had been idle), seconds.
    pub fn horizon(&self) -> Option<f64> {
        self.horizon
    }

    /// Takes the horizon a mirrored cache reported (the coordinator mirrors each agent's).
    pub fn set_horizon(&mut self, h: Option<f64>) {
        self.horizon = h.filter(|x| x.is_finite() && *x >= 0.0);
    }

    /// Its hint, if any.
    pub fn hint_of(&self, key: &K) -> Option<&Hint> {
        self.entries.get(key).and_then(|m| m.hint.as_ref())
    }

    /// Its last use, if held.
    pub fn last_use(&self, key: &K) -> Option<f64> {
        self.entries.get(key).map(|m| m.last_use)
    }

    fn index_rank(&self, m: &Meta) -> f64 {
        match self.rule {
            Rule::Lru | Rule::Value | Rule::S3Fifo => m.last_use,
            Rule::Gdsf => m.key_rank,
            Rule::Belady => {
                // Never again first, then the furthest next use.
                match m.hint.as_ref().and_then(|h| h.next_at) {
                    Some(t) if t.is_finite() => -t,
                    _ => f64::NEG_INFINITY,
                }
            }
        }
    }

    fn reindex(&mut self, key: &K, update: impl FnOnce(&mut Meta)) {
        let Some(mut m) = self.entries.remove(key) else {
            return;
        };
        self.order
            .remove(&(Rank(self.index_rank(&m)), m.seq, key.clone()));
        update(&mut m);
        if self.rule == Rule::Gdsf {
            let fetch = m.hint.as_ref().map_or(1.0, |h| h.fetch_s);
            m.key_rank = self.gdsf_l + f64::from(m.uses) * fetch / m.bytes.max(1) as f64;
        }
        self.order
            .insert((Rank(self.index_rank(&m)), m.seq, key.clone()));
        self.entries.insert(key.clone(), m);
    }

    /// A state arrived (or started arriving) at `now`.
    pub fn admit(&mut self, key: K, bytes: u64, now: f64) {
        self.remove(&key);
        self.seq += 1;
        let m = Meta {
            bytes,
            last_use: now,
            uses: 1,
            seq: self.seq,
            hint: None,
            key_rank: 0.0,
            main: false,
            freq: 0,
        };
        self.slot.insert(key.clone(), self.keys.len());
        self.keys.push(key.clone());
        if self.rule == Rule::S3Fifo {
            let to_main = self.ghost_set.remove(&key);
            if to_main {
                self.main.push_back(key.clone());
            } else {
                self.small.push_back(key.clone());
                self.small_bytes += bytes;
            }
            self.entries
                .insert(key.clone(), Meta { main: to_main, ..m });
        } else {
            self.entries.insert(key.clone(), m);
        }
        self.reindex(&key, |_| {});
    }

    /// `key` was used at `now`.
    pub fn touch(&mut self, key: &K, now: f64) {
        self.reindex(key, |m| {
            m.last_use = m.last_use.max(now);
            m.uses = m.uses.saturating_add(1);
            m.freq = (m.freq + 1).min(3);
        });
    }

    /// The engine's hint for `key` (ignored when not held).
    pub fn hint(&mut self, key: &K, hint: Hint) {
        self.reindex(key, |m| m.hint = Some(hint));
    }

    /// Forgets `key` (evicted, expired, dropped or replaced).
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(m) = self.entries.remove(key) else {
            return false;
        };
        self.order
            .remove(&(Rank(self.index_rank(&m)), m.seq, key.clone()));
        if let Some(i) = self.slot.remove(key) {
            self.keys.swap_remove(i);
            if let Some(moved) = self.keys.get(i) {
                self.slot.insert(moved.clone(), i);
            }
        }
        if self.rule == Rule::S3Fifo {
            let q = if m.main {
                &mut self.main
            } else {
                &mut self.small
            };
            if let Some(i) = q.iter().position(|k| k == key) {
                q.remove(i);
            }
            if !m.main {
                self.small_bytes -= m.bytes;
            }
        }
        true
    }

    /// Expected cold-start seconds holding `key` saves (the `Value` rule's numerator).
    pub fn value(&self, key: &K, now: f64) -> f64 {
        self.entries.get(key).map_or(0.0, |m| self.value_of(m, now))
    }

    fn value_of(&self, m: &Meta, now: f64) -> f64 {
        let Some(h) = &m.hint else {
            return 0.0;
        };
        let horizon = self.horizon.unwrap_or(f64::INFINITY);
        let reuse = h
            .curve
            .as_ref()
            .map_or(0.0, |c| c.within(now - m.last_use, horizon));
        let planned = h
            .expected
            .filter(|e| now <= e.until)
            .map_or(0.0, |e| e.p.clamp(0.0, 1.0));
        let p = 1.0 - (1.0 - planned) * (1.0 - reuse * h.share.clamp(0.0, 1.0));
        p * h.fetch_s
    }

    fn density(&self, m: &Meta, now: f64) -> f64 {
        self.value_of(m, now) / m.bytes.max(1) as f64
    }

    /// Unleased states whose keep-alive ran out by `now`.
    pub fn expired(&self, now: f64, evictable: &dyn Fn(&K) -> bool) -> Vec<K> {
        let mut out: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, m)| m.hint.as_ref().is_some_and(|h| h.keep_until <= now))
            .map(|(k, _)| k.clone())
            .filter(|k| evictable(k))
            .collect();
        out.sort();
        out
    }

    /// The states to evict to free `need` bytes at `now`, in order, skipping those
    /// `evictable` refuses; the caller removes them. Under S3-FIFO choosing moves queue
    /// entries (as the algorithm does); the other rules only read.
    pub fn victims(
        &mut self,
        need: u64,
        now: f64,
        evictable: &dyn Fn(&K) -> bool,
    ) -> Result<Vec<K>, Shortfall> {
        if need == 0 {
            return Ok(Vec::new());
        }
        let (freeable, leased) = self.freeable(evictable);
        if freeable < need {
            return Err(Shortfall { freeable, leased });
        }
        let out = match self.rule {
            Rule::Lru | Rule::Gdsf | Rule::Belady => self.by_order(need, evictable),
            Rule::Value => {
                let mut rng = self.rng;
                let v = self.by_value(need, now, evictable, &mut rng);
                self.rng = rng;
                v
            }
            Rule::S3Fifo => self.by_s3fifo(need, evictable),
        };
        self.learn_horizon(&out, now);
        if self.rule == Rule::Gdsf
            && let Some(last) = out.last().and_then(|k| self.entries.get(k))
        {
            self.gdsf_l = self.gdsf_l.max(last.key_rank);
        }
        Ok(out)
    }

    /// [`CacheBook::victims`] without moving anything, with the value they hold (seconds):
    /// what the planner prices a prefetch's displacement with.
    pub fn peek_victims(
        &self,
        need: u64,
        now: f64,
        evictable: &dyn Fn(&K) -> bool,
    ) -> Result<(Vec<K>, f64), Shortfall> {
        let (freeable, leased) = self.freeable(evictable);
        if freeable < need {
            return Err(Shortfall { freeable, leased });
        }
        let v = match self.rule {
            // S3-FIFO's choice moves its queues; its recency order stands in for a peek.
            Rule::Lru | Rule::Gdsf | Rule::Belady | Rule::S3Fifo => self.by_order(need, evictable),
            Rule::Value => self.by_value(need, now, evictable, &mut self.rng.clone()),
        };
        let loss = v.iter().map(|k| self.value(k, now)).sum();
        Ok((v, loss))
    }

    fn freeable(&self, evictable: &dyn Fn(&K) -> bool) -> (u64, u64) {
        self.entries.iter().fold((0, 0), |(f, l), (k, m)| {
            if evictable(k) {
                (f + m.bytes, l)
            } else {
                (f, l + m.bytes)
            }
        })
    }

    fn learn_horizon(&mut self, victims: &[K], now: f64) {
        for k in victims {
            if let Some(m) = self.entries.get(k) {
                let age = (now - m.last_use).max(0.0);
                self.horizon = Some(match self.horizon {
                    None => age,
                    Some(h) => h + HORIZON_ALPHA * (age - h),
                });
            }
        }
    }

    fn by_order(&self, need: u64, evictable: &dyn Fn(&K) -> bool) -> Vec<K> {
        let mut freed = 0;
        let mut out = Vec::new();
        for (_, _, k) in &self.order {
            if freed >= need {
                break;
            }
            if evictable(k) {
                freed += self.entries[k].bytes;
                out.push(k.clone());
            }
        }
        out
    }

    fn by_value(
        &self,
        need: u64,
        now: f64,
        evictable: &dyn Fn(&K) -> bool,
        rng: &mut u64,
    ) -> Vec<K> {
        let mut freed = 0;
        let mut out: Vec<K> = Vec::new();
        let mut taken: HashSet<K> = HashSet::new();
        while freed < need {
            let pool: Vec<K> = if self.keys.len() <= SAMPLE * 2 {
                self.keys.clone()
            } else {
                let mut s: Vec<K> = (0..SAMPLE)
                    .map(|_| self.keys[(next_rand(rng) % self.keys.len() as u64) as usize].clone())
                    .collect();
                // The least recently used state is always a candidate (so a state nobody
                // hinted cannot hide from every sample).
                s.extend(
                    self.order
                        .iter()
                        .map(|x| &x.2)
                        .find(|k| !taken.contains(*k))
                        .cloned(),
                );
                s
            };
            let best = pool
                .iter()
                .filter(|k| !taken.contains(*k) && evictable(k))
                .map(|k| {
                    let m = &self.entries[k];
                    ((self.density(m, now), m.last_use, m.seq), k)
                })
                .min_by(|a, b| {
                    a.0.0
                        .total_cmp(&b.0.0)
                        .then(a.0.1.total_cmp(&b.0.1))
                        .then(a.0.2.cmp(&b.0.2))
                })
                .map(|(_, k)| k.clone());
            let Some(k) = best.or_else(|| {
                // The sample held only unevictable or taken states: take the oldest other.
                self.order
                    .iter()
                    .map(|x| &x.2)
                    .find(|k| !taken.contains(*k) && evictable(k))
                    .cloned()
            }) else {
                break;
            };
            freed += self.entries[&k].bytes;
            taken.insert(k.clone());
            out.push(k);
        }
        out
    }

    fn by_s3fifo(&mut self, need: u64, evictable: &dyn Fn(&K) -> bool) -> Vec<K> {
        let mut freed = 0;
        let mut out = Vec::new();
        let mut pinned = 0usize; // consecutive unevictable entries seen
        let small_target = (self.budget as f64 * SMALL_SHARE) as u64;
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
            let m = self.entries.get_mut(&k).expect("queued keys are held");
            if !evictable(&k) {
                pinned += 1;
                q.push_back(k);
                continue;
            }
            pinned = 0;
            if m.freq >= 1 {
                // Accessed since queued: a small-queue state is promoted to main (bits
                // cleared), a main-queue one reinserted with one use fewer.
                if from_small {
                    m.freq = 0;
                    m.main = true;
                    self.small_bytes -= m.bytes;
                } else {
                    m.freq -= 1;
                }
                self.main.push_back(k);
                continue;
            }
            // Evicted: out of its queue now (`remove` then finds it in no queue).
            if from_small {
                self.ghost.push_back(k.clone());
                self.ghost_set.insert(k.clone());
                let ghost_cap = self.main.len().max(16);
                while self.ghost.len() > ghost_cap {
                    if let Some(g) = self.ghost.pop_front() {
                        self.ghost_set.remove(&g);
                    }
                }
            }
            freed += m.bytes;
            out.push(k);
        }
        if freed < need {
            // Only states outside the queues are left (a caller that did not remove earlier
            // victims): least recently used among them.
            let taken: HashSet<&K> = out.iter().collect();
            let rest: Vec<K> = self
                .order
                .iter()
                .map(|x| &x.2)
                .filter(|k| !taken.contains(k) && evictable(k))
                .cloned()
                .collect();
            for k in rest {
                if freed >= need {
                    break;
                }
                freed += self.entries[&k].bytes;
                out.push(k);
            }
        }
        out
    }
}

/// splitmix64: deterministic, so a replay is a pure function of its inputs.
fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
