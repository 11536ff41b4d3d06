//! One capacity's cache as the eviction and keep rules see it: which states it holds, their
//! sizes, uses and the engine's retention hints. The agent's state space and the simulator's
//! caches each own a [`CacheBook`] and evict what [`CacheBook::victims`] names, so production
//! and replay evict by the same code (the coordinator keeps a mirror per agent to price
//! displacement).
//!
//! Rules ([`Rule`]):
//! - `Lru`: least recently used first.
//! - `S3Fifo`: S3-FIFO (Yang et al., SOSP'23), see [`s3fifo`].
//! - `Gdsf`: GreedyDual-Size-Frequency: `L + uses · fetch / bytes`, smallest first.
//! - `Value`: GreedyDual with the model's plans: `L + (uses + p) · fetch / bytes`, where `p`
//!   is the chance the engine gave a planned execution of reading the state (cost- and
//!   size-aware frequency with aging, plus what is about to be read). Measured against
//!   ranking by the next-use curves directly (the expected wait for the next use per byte,
//!   or the chance of a use within the cache's horizon) and against a regret-weighted
//!   mixture of LRU, GDSF and that ranking (LeCaR): this kept more warm starts on every
//!   trace tried (see BENCHMARKS.md).
//! - `Belady`: the oracle's: the furthest known next use first.
//!
//! Every rule keeps a state at least until its hint's `keep_until` only while there is room;
//! [`CacheBook::expired`] lists the unleased states whose `keep_until` passed (the keep-alive
//! rule). Leased states are never chosen; when the rest cannot free enough, nothing is.

mod choose;
mod s3fifo;

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt};
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
    /// GreedyDual with the engine's planned uses.
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

    /// The name [`Rule::by_name`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Lru => "lru",
            Rule::S3Fifo => "s3fifo",
            Rule::Gdsf => "gdsf",
            Rule::Value => "value",
            Rule::Belady => "belady",
        }
    }

    fn keeps_priority(self) -> bool {
        matches!(self, Rule::Gdsf | Rule::Belady | Rule::Value)
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
    /// The rule's priority (GDSF's `H`, Belady's negated next use), as indexed in `prio`.
    prio: f64,
    /// S3-FIFO: in the main queue; use bits since queued (capped at 3).
    main: bool,
    freq: u8,
}

impl s3fifo::Entry for Meta {
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn set_main(&mut self, main: bool) {
        self.main = main;
    }
    fn freq(&self) -> u8 {
        self.freq
    }
    fn set_freq(&mut self, f: u8) {
        self.freq = f;
    }
}

/// Totally ordered f64 for the indexes.
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

/// The rule's priority of `m` with GreedyDual's inflation `l` (see [`CacheBook`]).
fn priority_of(rule: Rule, l: f64, m: &Meta) -> f64 {
    match rule {
        Rule::Belady => match m.hint.as_ref().and_then(|h| h.next_at) {
            // Never again first, then the furthest next use.
            Some(t) if t.is_finite() => -t,
            _ => f64::NEG_INFINITY,
        },
        _ => {
            // GreedyDual: L + (uses, plus a planned use's chance under `Value`) · fetch
            // per byte.
            let fetch = m.hint.as_ref().map_or(1.0, |h| h.fetch_s);
            let planned = match rule {
                Rule::Value => m
                    .hint
                    .as_ref()
                    .and_then(|h| h.expected)
                    .map_or(0.0, |e| e.p.clamp(0.0, 1.0)),
                _ => 0.0,
            };
            l + (f64::from(m.uses) + planned) * fetch / m.bytes.max(1) as f64
        }
    }
}

/// Weight of each new eviction in the horizon's moving average.
const HORIZON_ALPHA: f64 = 0.05;

/// A capacity's cache book (see the module docs).
#[derive(Clone, Debug)]
pub struct CacheBook<K: Clone + Eq + Hash + Ord> {
    rule: Rule,
    budget: u64,
    entries: HashMap<K, Meta>,
    /// Least recently used first (every rule).
    recency: BTreeSet<(Rank, u64, K)>,
    /// Smallest priority first (rules that keep one).
    prio: BTreeSet<(Rank, u64, K)>,
    s3: s3fifo::S3Fifo<K>,
    gdsf_l: f64,
    seq: u64,
    /// How long evicted states had been idle (moving average), seconds.
    horizon: Option<f64>,
    /// Bytes admitted since the first admission, and when that was (the fill rate that
    /// stands in for the horizon before the first eviction).
    admitted: u64,
    first_admit: Option<f64>,
}

impl<K: Clone + Eq + Hash + Ord> CacheBook<K> {
    /// An empty book under `rule` for a cache of `budget` bytes.
    pub fn new(rule: Rule, budget: u64) -> Self {
        Self {
            rule,
            budget,
            entries: HashMap::new(),
            recency: BTreeSet::new(),
            prio: BTreeSet::new(),
            s3: s3fifo::S3Fifo::default(),
            gdsf_l: 0.0,
            seq: 0,
            horizon: None,
            admitted: 0,
            first_admit: None,
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

    /// The cache's measured horizon: how long its victims had been idle (moving average),
    /// seconds; `None` before its first eviction.
    pub fn horizon(&self) -> Option<f64> {
        self.horizon
    }

    /// The horizon at `now`: the measured one, else (no eviction yet) how long the cache
    /// takes to fill at the rate states have been arriving — how long a state admitted now
    /// would stay. `None` when nothing arrived yet.
    pub fn horizon_at(&self, now: f64) -> Option<f64> {
        if self.horizon.is_some() {
            return self.horizon;
        }
        let first = self.first_admit?;
        (self.admitted > 0 && self.budget > 0)
            .then(|| self.budget as f64 * (now - first).max(1e-3) / self.admitted as f64)
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

    fn priority(&self, m: &Meta) -> f64 {
        priority_of(self.rule, self.gdsf_l, m)
    }

    fn unindex(&mut self, key: &K, m: &Meta) {
        self.recency.remove(&(Rank(m.last_use), m.seq, key.clone()));
        if self.rule.keeps_priority() {
            self.prio.remove(&(Rank(m.prio), m.seq, key.clone()));
        }
    }

    fn index(&mut self, key: &K, m: &mut Meta) {
        self.recency.insert((Rank(m.last_use), m.seq, key.clone()));
        if self.rule.keeps_priority() {
            m.prio = self.priority(m);
            self.prio.insert((Rank(m.prio), m.seq, key.clone()));
        }
    }

    /// Changes `key`'s meta in place and moves it in the indexes whose order key changed
    /// (a hint leaves its recency alone; a touch under LRU its priority).
    fn update(&mut self, key: &K, f: impl FnOnce(&mut Meta)) {
        let (rule, l) = (self.rule, self.gdsf_l);
        let Some(m) = self.entries.get_mut(key) else {
            return;
        };
        let (old_use, old_prio) = (m.last_use, m.prio);
        f(m);
        if m.last_use.to_bits() != old_use.to_bits() {
            self.recency.remove(&(Rank(old_use), m.seq, key.clone()));
            self.recency.insert((Rank(m.last_use), m.seq, key.clone()));
        }
        if rule.keeps_priority() {
            m.prio = priority_of(rule, l, m);
            if m.prio.to_bits() != old_prio.to_bits() {
                self.prio.remove(&(Rank(old_prio), m.seq, key.clone()));
                self.prio.insert((Rank(m.prio), m.seq, key.clone()));
            }
        }
    }

    /// A state arrived (or started arriving) at `now`.
    pub fn admit(&mut self, key: K, bytes: u64, now: f64) {
        self.remove(&key);
        self.seq += 1;
        self.admitted += bytes;
        self.first_admit.get_or_insert(now);
        let main = self.rule == Rule::S3Fifo && self.s3.admit(&key, bytes);
        let mut m = Meta {
            bytes,
            last_use: now,
            uses: 1,
            seq: self.seq,
            hint: None,
            prio: 0.0,
            main,
            freq: 0,
        };
        self.index(&key, &mut m);
        self.entries.insert(key, m);
    }

    /// `key` was used at `now`.
    pub fn touch(&mut self, key: &K, now: f64) {
        self.update(key, |m| {
            m.last_use = m.last_use.max(now);
            m.uses = m.uses.saturating_add(1);
            m.freq = (m.freq + 1).min(3);
        });
    }

    /// The engine's hint for `key` (ignored when not held).
    pub fn hint(&mut self, key: &K, hint: Hint) {
        self.update(key, |m| m.hint = Some(hint));
    }

    /// Forgets `key` (evicted, expired, dropped or replaced).
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(m) = self.entries.remove(key) else {
            return false;
        };
        self.unindex(key, &m);
        if self.rule == Rule::S3Fifo {
            self.s3.remove(key, m.main, m.bytes);
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
        let horizon = self.horizon_at(now).unwrap_or(f64::INFINITY);
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

    /// Expected cold-start seconds holding `key` saves within `window` seconds of `now`:
    /// what evicting it costs a pre-warm that arrives that long before its own use (the
    /// victim would have been evicted at that use anyway). Its exact next use when the
    /// hint knows it, else its next-use estimate over the window and its planned use
    /// pro rata when planned for later.
    pub fn value_within(&self, key: &K, now: f64, window: f64) -> f64 {
        self.entries
            .get(key)
            .map_or(0.0, |m| self.value_within_of(m, now, window.max(0.0)))
    }

    fn value_within_of(&self, m: &Meta, now: f64, window: f64) -> f64 {
        let Some(h) = &m.hint else {
            return 0.0;
        };
        let share = h.share.clamp(0.0, 1.0);
        if let Some(t) = h.next_at {
            return if t - now <= window {
                h.fetch_s * share
            } else {
                0.0
            };
        }
        let horizon = self.horizon_at(now).unwrap_or(f64::INFINITY).min(window);
        let reuse = h
            .curve
            .as_ref()
            .map_or(0.0, |c| c.within(now - m.last_use, horizon));
        let planned = h.expected.filter(|e| now <= e.until).map_or(0.0, |e| {
            let left = e.until - now;
            let by = if left <= window { 1.0 } else { window / left };
            e.p.clamp(0.0, 1.0) * by
        });
        let p = 1.0 - (1.0 - planned) * (1.0 - reuse * share);
        p * h.fetch_s
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
    /// entries, as the algorithm does; the other rules only read.
    pub fn victims(
        &mut self,
        need: u64,
        now: f64,
        evictable: &dyn Fn(&K) -> bool,
    ) -> Result<Vec<K>, Shortfall> {
        if need == 0 {
            return Ok(Vec::new());
        }
        let none = Default::default();
        let (out, freed) = match self.rule {
            Rule::Lru => self.by_recency(need, evictable, &none),
            Rule::Gdsf | Rule::Belady | Rule::Value => self.by_priority(need, evictable, &none),
            Rule::S3Fifo => {
                // Its choice moves its queues: refuse before moving anything.
                self.enough(need, evictable)?;
                let out = self.by_s3fifo(need, evictable);
                (out, need)
            }
        };
        if freed < need {
            return Err(self.shortfall(evictable));
        }
        self.learn_horizon(&out, now);
        if matches!(self.rule, Rule::Gdsf | Rule::Value)
            && let Some(top) = out
                .iter()
                .filter_map(|k| self.entries.get(k))
                .map(|m| m.prio)
                .max_by(f64::total_cmp)
        {
            // GreedyDual's inflation: later arrivals start above what was evicted.
            self.gdsf_l = self.gdsf_l.max(top);
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
        let none = Default::default();
        let (v, freed) = match self.rule {
            // S3-FIFO's choice moves its queues; its recency order stands in for a peek.
            Rule::Lru | Rule::S3Fifo => self.by_recency(need, evictable, &none),
            Rule::Gdsf | Rule::Belady | Rule::Value => self.by_priority(need, evictable, &none),
        };
        // The walks stop once `need` is freed; short of it, every evictable state was
        // walked, and only then is the whole book summed (for the error).
        if freed < need {
            return Err(self.shortfall(evictable));
        }
        let loss = v.iter().map(|k| self.value(k, now)).sum();
        Ok((v, loss))
    }

    /// What can and cannot be freed (a scan of the book: the error path only).
    fn shortfall(&self, evictable: &dyn Fn(&K) -> bool) -> Shortfall {
        let (freeable, leased) = self.entries.iter().fold((0, 0), |(f, l), (k, m)| {
            if evictable(k) {
                (f + m.bytes, l)
            } else {
                (f, l + m.bytes)
            }
        });
        Shortfall { freeable, leased }
    }

    /// `Ok` when `need` bytes can be freed.
    fn enough(&self, need: u64, evictable: &dyn Fn(&K) -> bool) -> Result<(), Shortfall> {
        let s = self.shortfall(evictable);
        if s.freeable < need { Err(s) } else { Ok(()) }
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
}

#[cfg(test)]
mod tests;
