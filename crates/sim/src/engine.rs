//! The event loop: a min-heap of timed events, ties broken by insertion order, so a replay
//! is a pure function of its records, policy and settings.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use prewarm_core::{CapacityId, HistoryRecord, ResourceId, Version};
use prewarm_engine::planner::Want;
use prewarm_engine::{Planner, PlannerConfig, place};
use prewarm_predict::{Context, Prediction, Predictor, VersionPolicy};

use crate::cache::{Entry, SimCache};
use crate::{Policy, PolicyKind, SimConfig, SimReport};

enum Ev {
    /// Record `i`'s event arrives.
    Event(usize),
    /// Record `i`'s execution starts.
    Exec(usize),
    /// An execution on `cap` finished using `r`.
    Release(usize, ResourceId),
    /// `r`'s keep-alive on `cap` may have run out.
    Expire(usize, ResourceId),
    /// The histogram policy's pre-warm of `r` on `cap` is due.
    Prewarm(usize, ResourceId, f64),
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

struct Sim<'a> {
    cfg: &'a SimConfig,
    records: &'a [HistoryRecord],
    caps: Vec<SimCache>,
    cap_ids: Vec<CapacityId>,
    placed: Vec<usize>,
    planner: Planner,
    latest: HashMap<ResourceId, u64>,
    sizes: HashMap<ResourceId, u64>,
    /// Use times per resource (the oracle's knowledge of the future).
    uses: HashMap<ResourceId, Vec<f64>>,
    heap: BinaryHeap<Item>,
    seq: u64,
    start: usize,
    count_from: f64,
    // Accounting.
    ttr_ms: Vec<f64>,
    warm: u64,
    bytes_on_demand: u64,
    bytes_predictive: u64,
    over_time: Vec<(u64, u64)>,
    t0: f64,
    span: f64,
}

const BUCKETS: usize = 24;

impl Sim<'_> {
    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn bytes_of(&self, r: &ResourceId) -> u64 {
        self.sizes.get(r).copied().unwrap_or(self.cfg.default_bytes)
    }

    fn link_time(&self, bytes: u64) -> f64 {
        self.cfg.latency_s + bytes as f64 / self.cfg.bandwidth.max(1.0)
    }

    /// Queues a predictive transfer of `r` to `cap` at `t`; kept `keep` seconds after arrival.
    fn prefetch(
        &mut self,
        cap: usize,
        r: &ResourceId,
        version: u64,
        t: f64,
        keep: f64,
        oracle: bool,
    ) {
        let bytes = self.bytes_of(r);
        let start = self.caps[cap].link_free.max(t);
        let done = start + self.link_time(bytes);
        let e = Entry {
            version,
            bytes,
            started_at: start,
            ready_at: done,
            last_used: t,
            expires: done + keep,
            read: false,
            leases: 0,
            predictive: true,
        };
        let fits = self.caps[cap].insert(r.clone(), e, &rank_fn(&self.uses, oracle, t));
        if fits {
            self.caps[cap].link_free = done;
            if start >= self.count_from {
                self.bytes_predictive += bytes;
            }
            if (done + keep).is_finite() {
                self.push(done + keep, Ev::Expire(cap, r.clone()));
            }
        }
    }
}

fn next_use(uses: &HashMap<ResourceId, Vec<f64>>, r: &ResourceId, after: f64) -> f64 {
    let Some(ts) = uses.get(r) else {
        return f64::INFINITY;
    };
    let i = ts.partition_point(|t| *t <= after);
    ts.get(i).copied().unwrap_or(f64::INFINITY)
}

/// The eviction rank of a policy: least recently used, or (oracle) furthest next use.
fn rank_fn(
    uses: &HashMap<ResourceId, Vec<f64>>,
    oracle: bool,
    now: f64,
) -> impl Fn(&ResourceId, &Entry) -> f64 + '_ {
    move |r, e| {
        if oracle {
            -next_use(uses, r, now)
        } else {
            e.last_used
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Replays `records` (time-ordered) under `policy`.
pub fn replay(records: &[HistoryRecord], policy: &mut Policy, cfg: &SimConfig) -> SimReport {
    let start = ((records.len() as f64) * cfg.warmup.clamp(0.0, 0.99)) as usize;
    let count_from = records
        .get(start)
        .map_or(f64::INFINITY, |r| r.ts - cfg.lead_s);
    let mut sizes: HashMap<ResourceId, u64> = HashMap::new();
    let mut uses: HashMap<ResourceId, Vec<f64>> = HashMap::new();
    for rec in records {
        for rd in &rec.reads {
            let s = sizes.entry(rd.resource.clone()).or_default();
            *s = (*s).max(rd.bytes);
            uses.entry(rd.resource.clone()).or_default().push(rec.ts);
        }
    }
    sizes.retain(|_, b| *b > 0);
    let t0 = records.get(start).map_or(0.0, |r| r.ts);
    let span = records.last().map_or(0.0, |r| r.ts) - t0;
    let planner = Planner::new(PlannerConfig {
        bandwidth: cfg.bandwidth,
        latency_s: cfg.latency_s,
        ..cfg.planner.clone()
    });
    let mut sim = Sim {
        cfg,
        records,
        caps: (0..cfg.capacities.max(1))
            .map(|_| SimCache::new(cfg.cache_bytes, count_from))
            .collect(),
        cap_ids: (0..cfg.capacities.max(1))
            .map(|i| CapacityId::new(format!("c{i}")).expect("valid id"))
            .collect(),
        placed: vec![0; records.len()],
        planner,
        latest: HashMap::new(),
        sizes,
        uses,
        heap: BinaryHeap::new(),
        seq: 0,
        start,
        count_from,
        ttr_ms: Vec::new(),
        warm: 0,
        bytes_on_demand: 0,
        bytes_predictive: 0,
        over_time: vec![(0, 0); BUCKETS],
        t0,
        span,
    };
    // Events are pushed lazily (one ahead) to keep the heap small.
    if !records.is_empty() {
        sim.push(records[0].ts - cfg.lead_s, Ev::Event(0));
    }
    let oracle = matches!(policy.kind, PolicyKind::Oracle);
    while let Some(Item { t, ev, .. }) = sim.heap.pop() {
        match ev {
            Ev::Event(i) => {
                if i + 1 < records.len() {
                    sim.push(records[i + 1].ts - cfg.lead_s, Ev::Event(i + 1));
                }
                on_event(&mut sim, policy, i, t);
                sim.push(records[i].ts.max(t), Ev::Exec(i));
            }
            Ev::Exec(i) => on_exec(&mut sim, policy, i, t),
            Ev::Release(cap, r) => {
                sim.caps[cap].advance(t);
                let keep = keep_for(&sim, policy, &r, t);
                let mut prewarm = None;
                if let Some(e) = sim.caps[cap].entries.get_mut(&r) {
                    e.leases = e.leases.saturating_sub(1);
                    if e.leases == 0 {
                        e.expires = t + keep.0;
                        prewarm = keep.1;
                    }
                }
                if sim.caps[cap].entries.get(&r).is_some_and(|e| e.leases == 0) {
                    if keep.0.is_finite() {
                        sim.push(t + keep.0, Ev::Expire(cap, r.clone()));
                    }
                    if let Some((at, hold)) = prewarm {
                        sim.push(t + at, Ev::Prewarm(cap, r, hold));
                    }
                }
            }
            Ev::Expire(cap, r) => {
                sim.caps[cap].advance(t);
                let c = &sim.caps[cap];
                if c.entries
                    .get(&r)
                    .is_some_and(|e| e.leases == 0 && e.expires <= t && e.ready_at <= t)
                {
                    sim.caps[cap].remove(&r);
                }
            }
            Ev::Prewarm(cap, r, hold) => {
                sim.caps[cap].advance(t);
                if !sim.caps[cap].entries.contains_key(&r) {
                    let v = sim.latest.get(&r).copied().unwrap_or(1);
                    sim.prefetch(cap, &r, v, t, hold, oracle);
                }
            }
        }
    }
    let end = records.last().map_or(0.0, |r| r.ts);
    for c in &mut sim.caps {
        c.advance(end);
    }
    let executions = sim.ttr_ms.len() as u64;
    let mean = if executions == 0 {
        0.0
    } else {
        sim.ttr_ms.iter().sum::<f64>() / executions as f64
    };
    let mut sorted = sim.ttr_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let width = (span / BUCKETS as f64).max(1e-9);
    SimReport {
        policy: policy.name.clone(),
        executions,
        warm: sim.warm,
        warm_rate: if executions == 0 {
            0.0
        } else {
            sim.warm as f64 / executions as f64
        },
        ttr_p50_ms: percentile(&sorted, 0.5),
        ttr_p99_ms: percentile(&sorted, 0.99),
        ttr_mean_ms: mean,
        bytes: sim.bytes_on_demand + sim.bytes_predictive,
        bytes_on_demand: sim.bytes_on_demand,
        bytes_predictive: sim.bytes_predictive,
        wasted_bytes: sim.caps.iter().map(|c| c.wasted).sum::<u64>()
            + sim
                .caps
                .iter()
                .flat_map(|c| c.entries.values())
                .filter(|e| e.predictive && !e.read)
                .map(|e| e.bytes)
                .sum::<u64>(),
        memory_gb_s: sim.caps.iter().map(|c| c.mem_byte_s).sum::<f64>() / 1e9,
        oracle_share: None,
        over_time: sim
            .over_time
            .iter()
            .enumerate()
            .map(|(i, (n, w))| {
                let rate = if *n == 0 { 0.0 } else { *w as f64 / *n as f64 };
                (sim.t0 + i as f64 * width, rate, *n)
            })
            .collect(),
        ttr_percentiles_ms: (0..=100)
            .map(|q| percentile(&sorted, f64::from(q) / 100.0))
            .collect(),
    }
}

/// (keep-alive after release, optional (pre-warm delay, hold)) for `r` under the policy.
fn keep_for(sim: &Sim<'_>, policy: &Policy, r: &ResourceId, t: f64) -> (f64, Option<(f64, f64)>) {
    match &policy.kind {
        PolicyKind::None => (0.0, None),
        PolicyKind::Lru | PolicyKind::Predictive(_) => (sim.cfg.keep_alive_s, None),
        PolicyKind::Histogram(h) => match h.windows(r) {
            Some((pre, keep)) if pre > 0.0 => (0.0, Some((pre, (keep - pre).max(0.0)))),
            Some((_, keep)) => (keep, None),
            None => (sim.cfg.keep_alive_s, None),
        },
        PolicyKind::Oracle => {
            // Belady: kept until pressure evicts it (furthest next use first), except a state
            // never used again, which is dropped at once.
            let next = next_use(&sim.uses, r, t);
            if next.is_finite() {
                (f64::INFINITY, None)
            } else {
                (0.0, None)
            }
        }
    }
}

fn on_event(sim: &mut Sim<'_>, policy: &mut Policy, i: usize, t: f64) {
    let records = sim.records;
    let rec = &records[i];
    for c in &mut sim.caps {
        c.advance(t);
    }
    let ctx = Context {
        ts: t,
        event: &rec.event,
    };
    let preds: Vec<Prediction> = match &mut policy.kind {
        PolicyKind::None | PolicyKind::Lru => Vec::new(),
        PolicyKind::Histogram(h) => h.predict(&ctx, sim.cfg.top_k),
        PolicyKind::Predictive(p) => p.predict(&ctx, sim.cfg.top_k),
        PolicyKind::Oracle => rec
            .reads
            .iter()
            .map(|r| Prediction {
                resource: r.resource.clone(),
                version: r
                    .version
                    .map_or(VersionPolicy::Latest, VersionPolicy::AtLeast),
                probability: 1.0,
            })
            .collect(),
    };
    let predicted: Vec<(ResourceId, f64)> = preds
        .iter()
        .map(|p| (p.resource.clone(), p.probability))
        .collect();
    let named = rec.capacity.as_ref();
    let caps = &sim.caps;
    let ids = &sim.cap_ids;
    let idx = |c: &CapacityId| ids.iter().position(|x| x == c).unwrap_or(0);
    let placement = place(
        &rec.event.key,
        named,
        ids,
        |c, r| caps[idx(c)].entries.contains_key(r),
        &predicted,
    );
    let cap = placement.map_or(0, |p| idx(&p.capacity));
    sim.placed[i] = cap;
    if preds.is_empty() {
        return;
    }
    let wants: Vec<Want> = preds
        .iter()
        .map(|p| Want {
            resource: p.resource.clone(),
            probability: p.probability,
            version: p.version,
            latest: Version::new(sim.latest.get(&p.resource).copied().unwrap_or(1))
                .expect("versions start at 1"),
            bytes: sim.bytes_of(&p.resource),
        })
        .collect();
    let in_flight = sim.caps[cap].predictive_in_flight();
    let decisions = sim.planner.plan(&wants, &sim.caps[cap], in_flight);
    let oracle = matches!(policy.kind, PolicyKind::Oracle);
    let keep = if oracle {
        f64::INFINITY
    } else {
        sim.cfg.keep_alive_s
    };
    for d in decisions {
        sim.prefetch(cap, &d.resource, d.version.get(), t, keep, oracle);
    }
}

fn on_exec(sim: &mut Sim<'_>, policy: &mut Policy, i: usize, t: f64) {
    let records = sim.records;
    let rec = &records[i];
    let cap = sim.placed[i];
    sim.caps[cap].advance(t);
    let oracle = matches!(policy.kind, PolicyKind::Oracle);
    let mut wait = 0.0f64;
    for rd in &rec.reads {
        let need = rd.version.map_or_else(
            || sim.latest.get(&rd.resource).copied().unwrap_or(1),
            Version::get,
        );
        let mut have = sim.caps[cap].entries.get(&rd.resource).cloned();
        if let Some(e) = have.as_ref().filter(|e| e.predictive && e.started_at > t) {
            // Still queued behind other transfers: the on-demand fetch goes ahead instead and
            // the queued one is dropped (its bytes never move).
            if e.started_at >= sim.count_from {
                sim.bytes_predictive -= e.bytes;
            }
            let c = &mut sim.caps[cap];
            if let Some(x) = c.entries.remove(&rd.resource) {
                c.used -= x.bytes;
            }
            have = None;
        }
        let ready = match have {
            Some(e) if e.version >= need => {
                let x = sim.caps[cap].entries.get_mut(&rd.resource).expect("held");
                x.read = true;
                x.last_used = t;
                x.leases += 1;
                e.ready_at.max(t)
            }
            _ => {
                // A miss: fetched on demand, ahead of queued predictive transfers.
                let bytes = sim.bytes_of(&rd.resource);
                let done = t + sim.link_time(bytes);
                let c = &mut sim.caps[cap];
                c.link_free = c.link_free.max(t) + bytes as f64 / sim.cfg.bandwidth.max(1.0);
                if t >= sim.count_from {
                    sim.bytes_on_demand += bytes;
                }
                let e = Entry {
                    version: need,
                    bytes,
                    started_at: t,
                    ready_at: done,
                    last_used: t,
                    expires: f64::INFINITY,
                    read: true,
                    leases: 1,
                    predictive: false,
                };
                // Not kept when it cannot fit (too large, or everything leased).
                let _cached =
                    sim.caps[cap].insert(rd.resource.clone(), e, &rank_fn(&sim.uses, oracle, t));
                done
            }
        };
        wait = wait.max(ready - t);
    }
    let end = t + wait + rec.duration_s.max(0.0);
    for rd in &rec.reads {
        if sim.caps[cap].entries.contains_key(&rd.resource) {
            sim.push(end, Ev::Release(cap, rd.resource.clone()));
        }
    }
    // Writes make new versions: older copies anywhere are now stale.
    for w in &rec.writes {
        *sim.latest.entry(w.resource.clone()).or_insert(1) += 1;
    }
    if i >= sim.start && !rec.reads.is_empty() {
        let warm = wait <= 0.0;

        sim.ttr_ms.push(wait * 1e3);
        if warm {
            sim.warm += 1;
        }
        let b = (((rec.ts - sim.t0) / sim.span.max(1e-9)) * BUCKETS as f64) as usize;
        let slot = &mut sim.over_time[b.min(BUCKETS - 1)];
        slot.0 += 1;
        slot.1 += u64::from(warm);
    }
    match &mut policy.kind {
        PolicyKind::Histogram(h) => h.observe(rec),
        PolicyKind::Predictive(p) => p.observe(rec),
        PolicyKind::None | PolicyKind::Lru | PolicyKind::Oracle => {}
    }
}
