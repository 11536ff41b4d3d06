//! The event loop: a min-heap of timed events, ties broken by insertion order, so a replay
//! is a pure function of its records, policy and settings. Every decision is the engine's
//! ([`prewarm_engine::Engine`]); this file only moves the virtual clock, models the links and
//! counts.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{CapacityId, HistoryRecord, ResourceId, Version};
use prewarm_engine::{Decision, Engine, EventView, HintFor, Prewarm, Rule};

use crate::cache::{Entry, SimCache};
use crate::fleet::{SimCatalog, SimFleet};
use crate::{DecisionLog, Phase, SimConfig};

pub(crate) enum Ev {
    /// Record `i`'s event arrives.
    Event(usize),
    /// Record `i`'s execution starts.
    Exec(usize),
    /// An execution on `cap` finished using `r`.
    Release(usize, ResourceId),
    /// `r`'s keep-alive on `cap` may have run out.
    Expire(usize, ResourceId),
    /// A pre-warm the keep rule asked for.
    Prewarm(Prewarm),
}

struct Item {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    /// Reversed: the heap pops the earliest.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

/// Counters of one replay (executions after the warm-up).
#[derive(Default)]
pub(crate) struct Tally {
    pub ttr_ms: Vec<f64>,
    pub warm: u64,
    pub bytes_on_demand: u64,
    pub bytes_predictive: u64,
    pub read_bytes: u64,
    pub ready_bytes: u64,
    pub over_time: Vec<(u64, u64)>,
}

pub(crate) struct Sim<'a> {
    pub cfg: &'a SimConfig,
    pub records: &'a [HistoryRecord],
    pub fleet: SimFleet,
    pub catalog: SimCatalog,
    pub placed: Vec<usize>,
    heap: BinaryHeap<Item>,
    seq: u64,
    pub start: usize,
    pub count_from: f64,
    pub tally: Tally,
    pub t0: f64,
    pub span: f64,
    pub log: Option<DecisionLog>,
}

pub(crate) const BUCKETS: usize = 24;

impl<'a> Sim<'a> {
    pub fn new(records: &'a [HistoryRecord], cfg: &'a SimConfig, rule: Rule) -> Self {
        let start = ((records.len() as f64) * cfg.warmup.clamp(0.0, 0.99)) as usize;
        let count_from = records
            .get(start)
            .map_or(f64::INFINITY, |r| r.ts - cfg.lead_s);
        let t0 = records.get(start).map_or(0.0, |r| r.ts);
        let span = records.last().map_or(0.0, |r| r.ts) - t0;
        let n = cfg.capacities.max(1);
        let caps: Vec<SimCache> = (0..n)
            .map(|_| SimCache::new(cfg.cache_bytes, count_from, rule))
            .collect();
        let ids: Vec<CapacityId> = (0..n)
            .map(|i| CapacityId::new(format!("c{i}")).expect("valid id"))
            .collect();
        Sim {
            cfg,
            records,
            fleet: SimFleet::new(caps, ids),
            catalog: SimCatalog::new(records, cfg.default_bytes),
            placed: vec![0; records.len()],
            heap: BinaryHeap::new(),
            seq: 0,
            start,
            count_from,
            tally: Tally {
                over_time: vec![(0, 0); BUCKETS],
                ..Tally::default()
            },
            t0,
            span,
            log: None,
        }
    }

    pub fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            t,
            seq: self.seq,
            ev,
        });
    }

    pub fn pop(&mut self) -> Option<(f64, Ev)> {
        self.heap.pop().map(|i| (i.t, i.ev))
    }

    fn link_time(&self, bytes: u64) -> f64 {
        self.cfg.latency_s + bytes as f64 / self.cfg.bandwidth.max(1.0)
    }

    /// Applies the engine's hints (expiry timers for finite keep-alives).
    pub fn apply_hints(&mut self, hints: Vec<HintFor>) {
        for h in hints {
            let cap = self.fleet.index(&h.capacity);
            if let Some(until) = self.fleet.caps[cap].hint(&h.resource, h.hint) {
                self.push(until, Ev::Expire(cap, h.resource));
            }
        }
    }

    /// Queues a predictive transfer decided by the engine.
    pub fn prefetch(&mut self, cap: usize, d: &Decision, t: f64) {
        let start = self.fleet.caps[cap].link_free.max(t);
        let done = start + self.link_time(d.bytes);
        let e = Entry {
            version: d.version.get(),
            bytes: d.bytes,
            started_at: start,
            ready_at: done,
            read: false,
            leases: 0,
            predictive: true,
        };
        if let Ok(evicted) = self.fleet.insert(cap, d.resource.clone(), e) {
            self.fleet.caps[cap].link_free = done;
            if start >= self.count_from {
                self.tally.bytes_predictive += d.bytes;
            }
            if let Some(log) = self.log.as_mut() {
                log.transfer(cap, &d.resource, d.version.get(), true);
                log.evicted(cap, &evicted);
            }
        }
    }

    /// The event of record `i` at `t`: predict, place, plan; queue the transfers.
    pub fn on_event(&mut self, engine: &mut Engine, i: usize, t: f64) {
        let rec = &self.records[i];
        self.fleet.advance(t);
        if let Some(log) = self.log.as_mut() {
            log.step(i, Phase::Event);
        }
        let ev = EventView {
            ts: t,
            event: &rec.event,
            capacity: rec.capacity.as_ref(),
            scope: None,
        };
        let preds = engine
            .predict(std::slice::from_ref(&ev))
            .pop()
            .unwrap_or_default();
        let d = engine.decide(&ev, &preds, &self.catalog, &self.fleet, t);
        let cap = d
            .placement
            .as_ref()
            .map_or(0, |p| self.fleet.index(&p.capacity));
        self.placed[i] = cap;
        if let Some(log) = self.log.as_mut() {
            log.placed(cap);
        }
        // The hints first (what the execution will read is kept for it while its prefetches
        // make room), then again for the states those prefetches bring.
        self.apply_hints(d.hints.clone());
        for x in &d.transfers {
            self.prefetch(cap, x, t);
        }
        let arrived: Vec<HintFor> = d
            .hints
            .into_iter()
            .filter(|h| d.transfers.iter().any(|x| x.resource == h.resource))
            .collect();
        self.apply_hints(arrived);
    }

    /// Record `i`'s execution starts at `t` on its capacity: hits, waits and on-demand misses;
    /// then the engine learns from it.
    pub fn on_exec(&mut self, engine: &mut Engine, i: usize, t: f64) {
        let rec = &self.records[i];
        let cap = self.placed[i];
        self.fleet.advance_one(cap, t);
        if let Some(log) = self.log.as_mut() {
            log.step(i, Phase::Exec);
        }
        let mut wait = 0.0f64;
        let (mut read_bytes, mut ready_bytes) = (0u64, 0u64);
        for rd in &rec.reads {
            let need = rd
                .version
                .map_or_else(|| self.catalog.latest_of(&rd.resource), Version::get);
            let bytes = self.catalog.bytes_of(&rd.resource);
            read_bytes += bytes;
            let ready = self.read(engine, cap, &rd.resource, need, t);
            if ready <= t {
                ready_bytes += bytes;
            }
            wait = wait.max(ready - t);
        }
        let end = t + wait + rec.duration_s.max(0.0);
        for rd in &rec.reads {
            if self.fleet.caps[cap].entries.contains_key(&rd.resource) {
                self.push(end, Ev::Release(cap, rd.resource.clone()));
            }
        }
        // Writes make new versions: older copies anywhere are now stale.
        for w in &rec.writes {
            self.catalog.bump(&w.resource);
        }
        if i >= self.start && !rec.reads.is_empty() {
            self.count(rec.ts, wait, read_bytes, ready_bytes);
        }
        // What an agent reports: the execution, on the capacity that ran it.
        let mut reported = rec.clone();
        reported.capacity = Some(self.fleet.ids[cap].clone());
        let obs = engine.observe(std::slice::from_ref(&reported), &self.fleet);
        self.apply_hints(obs.hints);
        for pw in obs.prewarms {
            self.push(pw.at, Ev::Prewarm(pw));
        }
    }

    fn count(&mut self, ts: f64, wait: f64, read_bytes: u64, ready_bytes: u64) {
        let warm = wait <= 0.0;
        let tl = &mut self.tally;
        tl.ttr_ms.push(wait * 1e3);
        tl.warm += u64::from(warm);
        tl.read_bytes += read_bytes;
        tl.ready_bytes += ready_bytes;
        let b = (((ts - self.t0) / self.span.max(1e-9)) * BUCKETS as f64) as usize;
        let slot = &mut tl.over_time[b.min(BUCKETS - 1)];
        slot.0 += 1;
        slot.1 += u64::from(warm);
    }

    /// One read of `r` (version ≥ `need`) on `cap` at `t`: when it is ready.
    fn read(&mut self, engine: &Engine, cap: usize, r: &ResourceId, need: u64, t: f64) -> f64 {
        let mut have = self.fleet.caps[cap].entries.get(r).cloned();
        if let Some(e) = have.as_ref().filter(|e| e.predictive && e.started_at > t) {
            // Still queued behind other transfers: the on-demand fetch goes ahead instead and
            // the queued one is dropped (its bytes never move).
            if e.started_at >= self.count_from {
                self.tally.bytes_predictive -= e.bytes;
            }
            let c = &mut self.fleet.caps[cap];
            if let Some(x) = c.entries.remove(r) {
                c.used -= x.bytes;
                c.book.remove(r);
            }
            self.fleet.forget(cap, r);
            have = None;
        }
        match have {
            Some(e) if e.version >= need => {
                let c = &mut self.fleet.caps[cap];
                let x = c.entries.get_mut(r).expect("held");
                x.read = true;
                x.leases += 1;
                c.book.touch(r, t);
                e.ready_at.max(t)
            }
            _ => self.miss(engine, cap, r, need, t),
        }
    }

    /// A miss: fetched on demand, ahead of queued predictive transfers.
    fn miss(&mut self, engine: &Engine, cap: usize, r: &ResourceId, need: u64, t: f64) -> f64 {
        let bytes = self.catalog.bytes_of(r);
        let done = t + self.link_time(bytes);
        let bw = self.cfg.bandwidth.max(1.0);
        let c = &mut self.fleet.caps[cap];
        c.link_free = c.link_free.max(t) + bytes as f64 / bw;
        if t >= self.count_from {
            self.tally.bytes_on_demand += bytes;
        }
        if let Some(log) = self.log.as_mut() {
            log.transfer(cap, r, need, false);
        }
        if self.fleet.bypass(cap, r, bytes, engine, t) {
            return done;
        }
        let e = Entry {
            version: need,
            bytes,
            started_at: t,
            ready_at: done,
            read: true,
            leases: 1,
            predictive: false,
        };
        // Not kept when it cannot fit (too large, or everything leased).
        if let Ok(evicted) = self.fleet.insert(cap, r.clone(), e)
            && let Some(log) = self.log.as_mut()
        {
            log.evicted(cap, &evicted);
        }
        done
    }

    /// An execution on `cap` stopped using `r` at `t`.
    pub fn on_release(&mut self, cap: usize, r: ResourceId, t: f64) {
        self.fleet.advance_one(cap, t);
        let c = &mut self.fleet.caps[cap];
        let free = match c.entries.get_mut(&r) {
            Some(e) => {
                e.leases = e.leases.saturating_sub(1);
                e.leases == 0
            }
            None => false,
        };
        if free && c.expired(&r, t) {
            self.fleet.remove(cap, &r);
        }
    }

    /// `r`'s keep-alive timer on `cap` fired at `t`.
    pub fn on_expire(&mut self, cap: usize, r: ResourceId, t: f64) {
        self.fleet.advance_one(cap, t);
        if self.fleet.caps[cap].expired(&r, t) {
            self.fleet.remove(cap, &r);
            if let Some(log) = self.log.as_mut() {
                log.expired(cap, &r);
            }
        }
    }

    /// A pre-warm is due at `t`.
    pub fn on_prewarm(&mut self, engine: &mut Engine, pw: Prewarm, t: f64) {
        let cap = self.fleet.index(&pw.capacity);
        self.fleet.advance_one(cap, t);
        if let Some((d, h)) = engine.prewarm(&pw, &self.catalog, &self.fleet, t) {
            self.prefetch(cap, &d, t);
            self.apply_hints(vec![h]);
        }
    }
}

/// Resources read, largest size seen per resource; missing sizes are `None`.
pub(crate) fn sizes(records: &[HistoryRecord]) -> HashMap<ResourceId, u64> {
    let mut sizes: HashMap<ResourceId, u64> = HashMap::new();
    for rec in records {
        for rd in &rec.reads {
            let s = sizes.entry(rd.resource.clone()).or_default();
            *s = (*s).max(rd.bytes);
        }
    }
    sizes.retain(|_, b| *b > 0);
    sizes
}
