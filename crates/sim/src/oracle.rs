//! The replay's oracle: a [`Predictor`] that knows the trace. For an event it names exactly
//! what the coming execution reads, with certainty; for any state it knows the next use.
//! Through the engine (Belady eviction, kept until pressure unless never used again,
//! bypassing the cache for a state needed later than everything it would evict) it bounds
//! what any policy can reach with the same placement, planner and transfer model.

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{Context, HistoryRecord, Prediction, Predictor, ResourceId, VersionPolicy};

/// See the module docs.
pub struct Future {
    /// (event time bits, key) → the reads of that execution.
    reads: HashMap<(u64, String), Vec<Prediction>>,
    /// Use times per resource, sorted.
    uses: HashMap<ResourceId, Vec<f64>>,
    /// Per key: its executions' start times, sorted, and the event time bits of each (the
    /// key into `reads`), for what comes next.
    by_key: HashMap<String, Vec<(f64, u64)>>,
}

impl Future {
    /// The oracle over `records`, whose events arrive `lead_s` before their executions.
    pub fn new(records: &[HistoryRecord], lead_s: f64) -> Self {
        let mut reads: HashMap<(u64, String), Vec<Prediction>> = HashMap::new();
        let mut uses: HashMap<ResourceId, Vec<f64>> = HashMap::new();
        let mut by_key: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
        for r in records {
            let at = (r.ts - lead_s).to_bits();
            by_key
                .entry(r.event.key.clone())
                .or_default()
                .push((r.ts, at));
            let e = reads.entry((at, r.event.key.clone())).or_default();
            for rd in &r.reads {
                if !e.iter().any(|p| p.resource == rd.resource) {
                    e.push(Prediction {
                        resource: rd.resource.clone(),
                        version: rd
                            .version
                            .map_or(VersionPolicy::Latest, VersionPolicy::AtLeast),
                        probability: 1.0,
                    });
                }
                uses.entry(rd.resource.clone()).or_default().push(r.ts);
            }
        }
        for v in uses.values_mut() {
            v.sort_by(f64::total_cmp);
        }
        for v in by_key.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Self {
            reads,
            uses,
            by_key,
        }
    }
}

impl Predictor for Future {
    fn name(&self) -> &str {
        "oracle"
    }

    fn observe(&mut self, _record: &HistoryRecord) {}

    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        let mut v = self
            .reads
            .get(&(ctx.ts.to_bits(), ctx.event.key.clone()))
            .cloned()
            .unwrap_or_default();
        v.truncate(k.max(v.len().min(64)));
        v
    }

    fn predict_next(&mut self, record: &HistoryRecord, k: usize) -> Vec<Prediction> {
        let Some(runs) = self.by_key.get(&record.event.key) else {
            return Vec::new();
        };
        let i = runs.partition_point(|(ts, _)| *ts <= record.ts);
        let Some((_, at)) = runs.get(i) else {
            return Vec::new();
        };
        let mut v = self
            .reads
            .get(&(*at, record.event.key.clone()))
            .cloned()
            .unwrap_or_default();
        v.truncate(k.max(v.len().min(64)));
        v
    }

    fn memory_bytes(&self) -> u64 {
        0
    }

    fn known_next_use(&self, resource: &ResourceId, after: f64) -> Option<f64> {
        let ts = self.uses.get(resource)?;
        let i = ts.partition_point(|t| *t <= after);
        Some(ts.get(i).copied().unwrap_or(f64::INFINITY))
    }
}

/// The oracle's knowledge used for eviction only (the `belady` reference policy): it names
/// nothing for an event and nothing ahead, so placement is `lru`'s (the key's recent states)
/// and every state is fetched on demand, but the engine evicts by the exact next use
/// (Belady), keeps a state until pressure unless it is never used again, and bypasses the
/// cache for a state needed later than everything it would evict. Between `lru` and it lies
/// what eviction can win; between it and the oracle, what only knowing each event's reads
/// before it runs (placement and pre-warming) can.
pub struct Clairvoyant(pub Future);

impl Predictor for Clairvoyant {
    fn name(&self) -> &str {
        "belady"
    }

    fn observe(&mut self, _record: &HistoryRecord) {}

    fn predict(&mut self, _ctx: &Context<'_>, _k: usize) -> Vec<Prediction> {
        Vec::new()
    }

    fn memory_bytes(&self) -> u64 {
        0
    }

    fn known_next_use(&self, resource: &ResourceId, after: f64) -> Option<f64> {
        self.0.known_next_use(resource, after)
    }
}
