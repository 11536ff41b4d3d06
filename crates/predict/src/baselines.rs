//! Simple baselines: recency-weighted frequency, PPM-style per-key Markov, and the oracle.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt};

use prewarm_core::{HistoryRecord, ResourceId};

use crate::predictor::{Context, Prediction, Predictor, latest};

/// `ln(e^a + e^b)` without overflow.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// Totally ordered f64 for ordered sets.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Key(f64);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Key {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Recency-weighted popularity: every read adds `e^{t/τ}`, so older reads fade with time
/// constant τ. Scores are kept in log space, where the ranking never changes as time passes;
/// an ordered set gives the top k in O(k), an update costs O(log R).
pub struct Frequency {
    tau: f64,
    score: HashMap<ResourceId, f64>,
    ranked: BTreeSet<(Key, ResourceId)>,
    total: f64,
}

impl Frequency {
    /// Popularity with a fading time constant of `tau_s` seconds.
    pub fn new(tau_s: f64) -> Self {
        Self {
            tau: tau_s.max(1e-9),
            score: HashMap::new(),
            ranked: BTreeSet::new(),
            total: f64::NEG_INFINITY,
        }
    }

    fn bump(&mut self, r: &ResourceId, ts: f64) {
        let add = ts / self.tau;
        let old = self.score.get(r).copied().unwrap_or(f64::NEG_INFINITY);
        if old != f64::NEG_INFINITY {
            self.ranked.remove(&(Key(old), r.clone()));
        }
        let new = log_add(old, add);
        self.score.insert(r.clone(), new);
        self.ranked.insert((Key(new), r.clone()));
        self.total = log_add(self.total, add);
    }

    /// The k most popular resources with their shares.
    pub fn top(&self, k: usize) -> Vec<Prediction> {
        self.ranked
            .iter()
            .rev()
            .take(k)
            .map(|(s, r)| latest(r.clone(), (s.0 - self.total).exp()))
            .collect()
    }

    /// The k most popular resources with their shares, borrowed.
    fn top_ids(&self, k: usize) -> Vec<(&ResourceId, f64)> {
        self.ranked
            .iter()
            .rev()
            .take(k)
            .map(|(s, r)| (r, (s.0 - self.total).exp()))
            .collect()
    }

    /// The share of one resource (0 when never seen).
    pub fn share(&self, r: &ResourceId) -> f64 {
        self.score.get(r).map_or(0.0, |s| (s - self.total).exp())
    }
}

impl Predictor for Frequency {
    fn name(&self) -> &str {
        "frequency"
    }

    fn observe(&mut self, record: &HistoryRecord) {
        for read in &record.reads {
            self.bump(&read.resource, record.ts);
        }
    }

    fn predict(&mut self, _ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        self.top(k)
    }

    fn memory_bytes(&self) -> u64 {
        self.score.keys().map(|r| 2 * id_bytes(r) + 24).sum()
    }
}

/// Rough heap cost of one stored resource id (string plus map entry overhead).
pub(crate) fn id_bytes(r: &ResourceId) -> u64 {
    r.as_str().len() as u64 + 48
}

/// Counts of what followed one context.
#[derive(Default)]
struct Counts {
    next: HashMap<ResourceId, u32>,
    total: u32,
}

/// Order-k Markov over each key's own sequence of reads, with PPM-C style back-off: the
/// longest context seen predicts first; the mass it escapes (distinct / (total + distinct))
/// goes to shorter contexts, and finally to global recency-weighted frequency. Transition
/// tables are shared by all keys; the state (recent reads) is kept per key.
pub struct Markov {
    order: usize,
    tables: Vec<HashMap<Vec<ResourceId>, Counts>>,
    /// Per key: when it was last seen (a tick) and its last reads.
    history: HashMap<String, (u64, Vec<ResourceId>)>,
    tick: u64,
    fallback: Frequency,
}

/// Keys whose recent reads Markov keeps (the least recently seen half is forgotten beyond).
pub const MARKOV_MAX_KEYS: usize = 1 << 18;
/// Contexts per order it keeps (the rarest are forgotten beyond).
pub const MARKOV_MAX_CONTEXTS: usize = 1 << 20;

impl Markov {
    /// Markov of order `order` (≥ 1) backing off to frequency with time constant `tau_s`.
    pub fn new(order: usize, tau_s: f64) -> Self {
        let order = order.max(1);
        Self {
            order,
            tables: (0..order).map(|_| HashMap::new()).collect(),
            history: HashMap::new(),
            tick: 0,
            fallback: Frequency::new(tau_s),
        }
    }

    /// Its `k` most likely resources for `ctx` ([`Predictor::predict`], which needs no
    /// mutation: callers holding a shared reference, on several threads, use this).
    pub fn scores(&self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        // Borrowed ids while scoring; only the k kept are cloned.
        let mut probs: HashMap<&ResourceId, f64> = HashMap::new();
        let mut mass = 1.0;
        if let Some((_, hist)) = self.history.get(&ctx.event.key) {
            for n in (1..=self.order.min(hist.len())).rev() {
                let Some(c) = self.tables[n - 1].get(&hist[hist.len() - n..]) else {
                    continue;
                };
                let distinct = c.next.len() as f64;
                let denom = f64::from(c.total) + distinct;
                for (r, &cnt) in &c.next {
                    *probs.entry(r).or_default() += mass * f64::from(cnt) / denom;
                }
                mass *= distinct / denom;
            }
        }
        let fallback = self.fallback.top_ids(k.max(8));
        for (r, p) in &fallback {
            *probs.entry(r).or_default() += mass * p;
        }
        let mut scored: Vec<(&ResourceId, f64)> = probs.into_iter().collect();
        let order = |a: &(&ResourceId, f64), b: &(&ResourceId, f64)| {
            b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0))
        };
        if k > 0 && scored.len() > k {
            scored.select_nth_unstable_by(k - 1, order);
            scored.truncate(k);
        }
        scored.sort_by(order);
        scored
            .into_iter()
            .map(|(r, p)| latest(r.clone(), p))
            .collect()
    }
}

/// Drops the least recently seen half of the keys.
fn forget_oldest_keys(history: &mut HashMap<String, (u64, Vec<ResourceId>)>) {
    let mut ticks: Vec<u64> = history.values().map(|(t, _)| *t).collect();
    let mid = ticks.len() / 2;
    ticks.select_nth_unstable(mid);
    let cut = ticks[mid];
    history.retain(|_, (t, _)| *t > cut);
}

/// Drops the contexts seen least often until at most half the cap is left.
fn forget_rare_contexts(table: &mut HashMap<Vec<ResourceId>, Counts>) {
    let mut at_least = 2;
    while table.len() > MARKOV_MAX_CONTEXTS / 2 {
        table.retain(|_, c| c.total >= at_least);
        at_least *= 2;
    }
}

impl Predictor for Markov {
    fn name(&self) -> &str {
        "markov"
    }

    fn observe(&mut self, record: &HistoryRecord) {
        self.fallback.observe(record);
        self.tick += 1;
        if self.history.len() >= MARKOV_MAX_KEYS && !self.history.contains_key(&record.event.key) {
            forget_oldest_keys(&mut self.history);
        }
        let (seen, hist) = self.history.entry(record.event.key.clone()).or_default();
        *seen = self.tick;
        for read in &record.reads {
            for n in 1..=self.order.min(hist.len()) {
                let ctx = hist[hist.len() - n..].to_vec();
                let table = &mut self.tables[n - 1];
                if table.len() >= MARKOV_MAX_CONTEXTS && !table.contains_key(&ctx) {
                    forget_rare_contexts(table);
                }
                let c = table.entry(ctx).or_default();
                *c.next.entry(read.resource.clone()).or_default() += 1;
                c.total += 1;
            }
            hist.push(read.resource.clone());
            if hist.len() > self.order {
                hist.remove(0);
            }
        }
    }

    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        self.scores(ctx, k)
    }

    fn memory_bytes(&self) -> u64 {
        let tables: u64 = self
            .tables
            .iter()
            .flat_map(|t| t.iter())
            .map(|(ctx, c)| {
                64 + ctx.iter().map(id_bytes).sum::<u64>()
                    + c.next.keys().map(|r| id_bytes(r) + 8).sum::<u64>()
            })
            .sum();
        let hist: u64 = self
            .history
            .iter()
            .map(|(k, (_, h))| 64 + k.len() as u64 + h.iter().map(id_bytes).sum::<u64>())
            .sum();
        tables + hist + self.fallback.memory_bytes()
    }
}

/// Reads the future: predicts exactly what each execution will read, then fills the list with
/// what the same key and then anyone reads within the horizon, soonest first. Only for
/// bounding what any policy can reach; it must be given the same records, in order, that it
/// observes.
pub struct Oracle {
    future: Vec<(f64, String, Vec<ResourceId>)>,
    horizon_s: f64,
    pos: usize,
}

/// The oracle looks at most this many executions ahead for horizon reads.
const ORACLE_SCAN: usize = 10_000;

impl Oracle {
    /// An oracle over `records` (the same sequence that will be replayed), looking
    /// `horizon_s` seconds ahead.
    pub fn new(records: &[HistoryRecord], horizon_s: f64) -> Self {
        Self {
            future: records
                .iter()
                .map(|r| {
                    let reads = r.reads.iter().map(|x| x.resource.clone()).collect();
                    (r.ts, r.event.key.clone(), reads)
                })
                .collect(),
            horizon_s,
            pos: 0,
        }
    }
}

impl Predictor for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }

    fn observe(&mut self, _record: &HistoryRecord) {
        self.pos += 1;
    }

    fn predict(&mut self, _ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        let Some((ts, key, own)) = self.future.get(self.pos) else {
            return Vec::new();
        };
        let mut out: Vec<Prediction> = own.iter().take(k).map(|r| latest(r.clone(), 1.0)).collect();
        let ahead = || {
            self.future[self.pos + 1..]
                .iter()
                .take(ORACLE_SCAN)
                .take_while(|(t, _, _)| *t <= ts + self.horizon_s)
        };
        for same_key in [true, false] {
            for (_, kk, reads) in ahead() {
                if (kk == key) != same_key {
                    continue;
                }
                for r in reads {
                    if out.len() >= k {
                        return out;
                    }
                    if !out.iter().any(|p| &p.resource == r) {
                        out.push(latest(r.clone(), 1.0));
                    }
                }
            }
        }
        out
    }

    fn memory_bytes(&self) -> u64 {
        self.future
            .iter()
            .map(|(_, k, r)| 64 + k.len() as u64 + r.iter().map(id_bytes).sum::<u64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: f64, key: &str, res: &str) -> HistoryRecord {
        crate::predictor::test_record(ts, key, res)
    }

    fn top1(p: &mut dyn Predictor, r: &HistoryRecord) -> String {
        p.predict(
            &Context {
                ts: r.ts,
                event: &r.event,
            },
            1,
        )[0]
        .resource
        .to_string()
    }

    #[test]
    fn frequency_prefers_recent_popularity() {
        let mut f = Frequency::new(10.0);
        for i in 0..5 {
            f.observe(&rec(f64::from(i), "k", "old"));
        }
        for i in 0..3 {
            f.observe(&rec(100.0 + f64::from(i), "k", "new"));
        }
        let top = f.top(2);
        assert_eq!(top[0].resource.as_str(), "new");
        let sum: f64 = top.iter().map(|p| p.probability).sum();
        assert!((sum - 1.0).abs() < 1e-9, "shares sum to one: {sum}");
    }

    #[test]
    fn markov_learns_per_key_sequences() {
        let mut m = Markov::new(2, 3600.0);
        let seq = ["a", "b", "c", "a", "b", "c", "a", "b"];
        for (i, r) in seq.iter().enumerate() {
            m.observe(&rec(i as f64, "user1", r));
            // Another key's noise must not break user1's pattern.
            m.observe(&rec(i as f64 + 0.5, "user2", "z"));
        }
        let next = rec(9.0, "user1", "unknown");
        assert_eq!(top1(&mut m, &next), "c");
        let preds = m.predict(
            &Context {
                ts: 9.0,
                event: &next.event,
            },
            5,
        );
        let sum: f64 = preds.iter().map(|p| p.probability).sum();
        assert!(sum <= 1.0 + 1e-9 && preds[0].probability > 0.5, "{preds:?}");
        assert_eq!(
            top1(&mut m, &rec(9.0, "stranger", "unknown")),
            "z",
            "unknown keys back off to popularity"
        );
    }

    #[test]
    fn oracle_reads_the_future() {
        let recs = vec![rec(0.0, "k", "a"), rec(1.0, "k", "b")];
        let mut o = Oracle::new(&recs, 0.0);
        assert_eq!(top1(&mut o, &recs[0]), "a");
        o.observe(&recs[0]);
        assert_eq!(top1(&mut o, &recs[1]), "b");
        o.observe(&recs[1]);
        assert!(
            o.predict(
                &Context {
                    ts: 2.0,
                    event: &recs[1].event
                },
                1
            )
            .is_empty()
        );
    }

    #[test]
    fn markov_forgets_the_oldest_keys_beyond_its_cap() {
        let mut m = Markov::new(2, 3600.0);
        for i in 0..(MARKOV_MAX_KEYS + 1000) {
            m.observe(&crate::predictor::test_record(
                i as f64,
                &format!("key-{i}"),
                "r",
            ));
        }
        assert!(m.history.len() <= MARKOV_MAX_KEYS, "{}", m.history.len());
        assert!(
            m.history
                .contains_key(&format!("key-{}", MARKOV_MAX_KEYS + 999))
        );
        assert!(!m.history.contains_key("key-0"), "the oldest went first");
    }
}
