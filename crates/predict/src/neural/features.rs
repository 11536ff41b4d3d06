//! What the sequence models see: each execution becomes a handful of integer tokens, built
//! from the event and from what the same key's previous execution did. Training and inference
//! share this code, so they cannot disagree.
//!
//! Step `t` of a key's sequence predicts the first resource execution `t` reads, from:
//! the event type, the key, the time since the key's previous event (log-bucketed), the
//! previous execution's first read, first write and execution time (log-bucketed), and the
//! top suggestions of an online Markov model that keeps learning while the network is frozen
//! (with how confident it is): the network learns when to copy them (see `net`). The
//! vocabulary holds the resources seen often enough in training; the rest hash into buckets,
//! so a resource never seen in training still gets a token and never breaks the model.

use std::collections::HashMap;

use prewarm_core::{HistoryRecord, ResourceId};
use serde::{Deserialize, Serialize};

use crate::baselines::Markov;
use crate::predictor::{Context, Predictor};

/// The online model whose suggestions the network sees (the same in training and serving).
pub fn hint_source() -> Markov {
    Markov::new(2, 3600.0)
}

/// Token of "no resource" (a first execution, or one that read or wrote nothing).
pub const NONE: u32 = 0;
/// Number of time-gap tokens (0 = the key's first event).
pub const GAP_TOKENS: usize = 40;
/// Number of execution-time tokens (0 = unknown).
pub const DURATION_TOKENS: usize = 32;
/// Suggestions of the online Markov model each step sees.
pub const HINTS: usize = 5;
/// Confidence tokens of the first suggestion (0 = none, then tenths of probability).
pub const CONFIDENCE_TOKENS: usize = 12;

/// Token vocabularies, fixed at training time and stored with the model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Vocab {
    /// Resources with their own token (`1..=len`).
    pub resources: Vec<ResourceId>,
    /// Hash buckets for every other resource (tokens after the named ones).
    pub resource_buckets: u32,
    /// Event types with their own token (`1..=len`; 0 = unknown type).
    pub types: Vec<String>,
    /// Keys with their own token (`0..len`).
    pub keys: Vec<String>,
    /// Hash buckets for every other key.
    pub key_buckets: u32,
    #[serde(skip)]
    index: Index,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Index {
    resources: HashMap<ResourceId, u32>,
    types: HashMap<String, u32>,
    keys: HashMap<String, u32>,
}

/// How a vocabulary is chosen from training data.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct VocabLimits {
    /// At most this many named resources (the most read).
    pub max_resources: usize,
    /// A resource needs this many reads in training to be named.
    pub min_count: u32,
    /// Hash buckets for the others.
    pub resource_buckets: u32,
    /// At most this many named keys (the most active).
    pub max_keys: usize,
    /// Hash buckets for the other keys.
    pub key_buckets: u32,
}

impl Default for VocabLimits {
    fn default() -> Self {
        Self {
            max_resources: 4096,
            min_count: 2,
            resource_buckets: 256,
            max_keys: 4096,
            key_buckets: 64,
        }
    }
}

fn top<K: Clone + Ord + std::hash::Hash>(counts: HashMap<K, u32>, min: u32, max: usize) -> Vec<K> {
    let mut v: Vec<(K, u32)> = counts.into_iter().filter(|(_, c)| *c >= min).collect();
    // Most frequent first; ties by name so the vocabulary is reproducible.
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(max);
    v.into_iter().map(|(k, _)| k).collect()
}

fn bucket(s: &str, n: u32) -> u32 {
    let h = blake3::hash(s.as_bytes());
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % n.max(1)
}

impl Vocab {
    /// Builds the vocabulary from training records.
    pub fn build(records: &[HistoryRecord], limits: VocabLimits) -> Self {
        let (mut res, mut types, mut keys) = (HashMap::new(), HashMap::new(), HashMap::new());
        for r in records {
            for x in r.reads.iter().take(1) {
                *res.entry(x.resource.clone()).or_insert(0u32) += 1;
            }
            for w in r.writes.iter().take(1) {
                *res.entry(w.resource.clone()).or_insert(0u32) += 1;
            }
            *types.entry(r.event.kind.clone()).or_insert(0u32) += 1;
            *keys.entry(r.event.key.clone()).or_insert(0u32) += 1;
        }
        let mut v = Self {
            resources: top(res, limits.min_count, limits.max_resources),
            resource_buckets: limits.resource_buckets.max(1),
            types: top(types, 1, 256),
            keys: top(keys, 2, limits.max_keys),
            key_buckets: limits.key_buckets.max(1),
            index: Index::default(),
        };
        v.reindex();
        v
    }

    /// Rebuilds the lookup tables (after deserialising).
    pub fn reindex(&mut self) {
        self.index = Index {
            resources: (1..)
                .zip(&self.resources)
                .map(|(i, r)| (r.clone(), i))
                .collect(),
            types: (1..)
                .zip(&self.types)
                .map(|(i, t)| (t.clone(), i))
                .collect(),
            keys: (0..).zip(&self.keys).map(|(i, k)| (k.clone(), i)).collect(),
        };
    }

    /// Size of the resource token space (none + named + buckets).
    pub fn resource_tokens(&self) -> usize {
        1 + self.resources.len() + self.resource_buckets as usize
    }

    /// Size of the type token space.
    pub fn type_tokens(&self) -> usize {
        1 + self.types.len()
    }

    /// Size of the key token space.
    pub fn key_tokens(&self) -> usize {
        self.keys.len() + self.key_buckets as usize
    }

    /// The token of a resource: its own, or its hash bucket's.
    pub fn resource(&self, r: &ResourceId) -> u32 {
        match self.index.resources.get(r) {
            Some(&t) => t,
            None => self.bucket_token(r),
        }
    }

    /// The hash-bucket token of a resource (whether or not it is named).
    fn bucket_token(&self, r: &ResourceId) -> u32 {
        1 + self.resources.len() as u32 + bucket(r.as_str(), self.resource_buckets)
    }

    /// Whether a resource has its own token.
    pub fn is_named(&self, r: &ResourceId) -> bool {
        self.index.resources.contains_key(r)
    }

    /// The named resource of a token, if it is one.
    pub fn named(&self, token: u32) -> Option<&ResourceId> {
        (token as usize)
            .checked_sub(1)
            .and_then(|i| self.resources.get(i))
    }

    /// The token of an event type (0 when unseen in training).
    pub fn kind(&self, t: &str) -> u32 {
        self.index.types.get(t).copied().unwrap_or(0)
    }

    /// The token of a key: its own, or its hash bucket's.
    pub fn key(&self, k: &str) -> u32 {
        match self.index.keys.get(k) {
            Some(&t) => t,
            None => self.keys.len() as u32 + bucket(k, self.key_buckets),
        }
    }
}

/// Log-scale bucket of a non-negative quantity: half-octaves, clamped to `1..n`.
fn log_bucket(x: f64, n: usize) -> u32 {
    if !x.is_finite() || x < 0.0 {
        return 0;
    }
    let b = 1.0 + 2.0 * (1.0 + x).log2();
    (b as usize).clamp(1, n - 1) as u32
}

/// Time-gap token: 0 for a key's first event, else half-octaves of seconds.
pub fn gap_token(gap_s: Option<f64>) -> u32 {
    gap_s.map_or(0, |g| log_bucket(g, GAP_TOKENS))
}

/// Execution-time token: half-octaves of milliseconds.
pub fn duration_token(d_s: f64) -> u32 {
    if d_s <= 0.0 {
        return 0;
    }
    log_bucket(d_s * 1000.0, DURATION_TOKENS)
}

/// The model input of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Event type token.
    pub kind: u32,
    /// Key token.
    pub key: u32,
    /// Time since the key's previous event.
    pub gap: u32,
    /// The key's previous first read.
    pub prev_read: u32,
    /// The key's previous first write.
    pub prev_write: u32,
    /// The key's previous execution time.
    pub prev_duration: u32,
    /// The online model's top suggestions (`NONE` where it has fewer).
    pub hints: [u32; HINTS],
    /// Confidence token of the first suggestion.
    pub confidence: u32,
}

/// Single-token inputs per step, in the order of [`Step::tokens`].
pub const STEP_TOKENS: usize = 7;

impl Step {
    /// The single-token inputs: kind, key, gap, previous read, write and execution time,
    /// confidence (the hints are separate: they share one embedding table).
    pub fn tokens(&self) -> [u32; STEP_TOKENS] {
        [
            self.kind,
            self.key,
            self.gap,
            self.prev_read,
            self.prev_write,
            self.prev_duration,
            self.confidence,
        ]
    }

    /// Sets the suggestions from the hint source's prediction for this event.
    pub fn with_hints(mut self, v: &Vocab, src: &Markov, ctx: &Context<'_>) -> Self {
        let preds = src.scores(ctx, HINTS);
        for (h, p) in self.hints.iter_mut().zip(&preds) {
            *h = v.resource(&p.resource);
        }
        self.confidence = preds.first().map_or(0, |p| {
            1 + ((p.probability * 10.0) as u32).min(CONFIDENCE_TOKENS as u32 - 2)
        });
        self
    }
}

/// What a key's previous execution left for the next step's input.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyTail {
    /// When the previous event of the key arrived.
    pub last_ts: Option<f64>,
    /// Its first read's token.
    pub read: u32,
    /// Its first write's token.
    pub write: u32,
    /// Its execution-time token.
    pub duration: u32,
}

impl KeyTail {
    /// The input of the step for an event of `kind` by `key` at `ts`.
    pub fn step(&self, v: &Vocab, kind: &str, key: &str, ts: f64) -> Step {
        Step {
            kind: v.kind(kind),
            key: v.key(key),
            gap: gap_token(self.last_ts.map(|t| (ts - t).max(0.0))),
            prev_read: self.read,
            prev_write: self.write,
            prev_duration: self.duration,
            hints: [NONE; HINTS],
            confidence: 0,
        }
    }

    /// Records what execution `r` did.
    pub fn advance(&mut self, v: &Vocab, r: &HistoryRecord) {
        self.last_ts = Some(r.ts);
        self.read = r.reads.first().map_or(NONE, |x| v.resource(&x.resource));
        self.write = r.writes.first().map_or(NONE, |x| v.resource(&x.resource));
        self.duration = duration_token(r.duration_s);
    }
}

/// At most this many distinct resources make up a step's horizon target.
pub const HORIZON_TARGETS: usize = 8;

/// Every record as (key sequence number, step input, target token): the training view.
pub struct Encoded {
    /// Per key, the indexes of its records in time order.
    pub sequences: Vec<Vec<usize>>,
    /// Step input of each record.
    pub steps: Vec<Step>,
    /// Target token of each record (`NONE` when it read nothing).
    pub targets: Vec<u32>,
    /// Per record, the distinct tokens its key reads within the horizon (its own read first,
    /// `NONE`-padded).
    pub horizon: Vec<[u32; HORIZON_TARGETS]>,
}

/// Fills `e.horizon`: for each record, what the same key reads from its start until
/// `horizon_s` later.
fn horizon_targets(e: &mut Encoded, records: &[HistoryRecord], horizon_s: f64) {
    e.horizon = vec![[NONE; HORIZON_TARGETS]; records.len()];
    for seq in &e.sequences {
        for (a, &i) in seq.iter().enumerate() {
            let mut set = [NONE; HORIZON_TARGETS];
            let mut n = 0;
            for &j in seq[a..].iter().take(64) {
                if records[j].ts > records[i].ts + horizon_s || n == HORIZON_TARGETS {
                    break;
                }
                let t = e.targets[j];
                if t != NONE && !set[..n].contains(&t) {
                    set[n] = t;
                    n += 1;
                }
            }
            e.horizon[i] = set;
        }
    }
}

/// Encodes time-ordered records, with horizon targets `horizon_s` seconds ahead.
pub fn encode(v: &Vocab, records: &[HistoryRecord], horizon_s: f64) -> Encoded {
    let mut tails: HashMap<&str, (usize, KeyTail)> = HashMap::new();
    let mut sequences: Vec<Vec<usize>> = Vec::new();
    let mut steps = Vec::with_capacity(records.len());
    let mut targets = Vec::with_capacity(records.len());
    let mut src = hint_source();
    for (i, r) in records.iter().enumerate() {
        let n = sequences.len();
        let (seq, tail) = tails
            .entry(r.event.key.as_str())
            .or_insert_with(|| (n, KeyTail::default()));
        if *seq == n {
            sequences.push(Vec::new());
        }
        sequences[*seq].push(i);
        let ctx = Context {
            ts: r.ts,
            event: &r.event,
        };
        steps.push(
            tail.step(v, &r.event.kind, &r.event.key, r.ts)
                .with_hints(v, &src, &ctx),
        );
        src.observe(r);
        targets.push(r.reads.first().map_or(NONE, |x| v.resource(&x.resource)));
        tail.advance(v, r);
    }
    let mut e = Encoded {
        sequences,
        steps,
        targets,
        horizon: Vec::new(),
    };
    horizon_targets(&mut e, records, horizon_s);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predictor::test_record;

    #[test]
    fn unseen_resources_and_keys_get_bucket_tokens() {
        let recs: Vec<_> = (0..10)
            .map(|i| test_record(f64::from(i), "k", if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        let v = Vocab::build(&recs, VocabLimits::default());
        assert_eq!(v.resources.len(), 2);
        let new = ResourceId::new("never/seen").unwrap();
        let t = v.resource(&new);
        assert!(t as usize >= 3 && (t as usize) < v.resource_tokens());
        assert!(v.named(t).is_none());
        assert_eq!(
            v.named(v.resource(&recs[0].reads[0].resource)),
            Some(&recs[0].reads[0].resource)
        );
        assert!((v.key("other") as usize) < v.key_tokens());
        assert_eq!(v.kind("unknown-type"), 0);
    }

    #[test]
    fn steps_see_only_the_keys_past() {
        let recs = vec![
            test_record(0.0, "x", "a"),
            test_record(1.0, "y", "b"),
            test_record(9.0, "x", "c"),
        ];
        let v = Vocab::build(
            &recs,
            VocabLimits {
                min_count: 1,
                ..Default::default()
            },
        );
        let e = encode(&v, &recs, 60.0);
        assert_eq!(e.sequences, vec![vec![0, 2], vec![1]]);
        assert_eq!(e.steps[0].prev_read, NONE);
        assert_eq!(e.steps[0].gap, 0);
        assert_eq!(e.steps[2].prev_read, e.targets[0]);
        assert!(e.steps[2].gap > 0);
        // Key x reads a at 0 and c at 9: both within 60 s of the first.
        assert_eq!(&e.horizon[0][..3], &[e.targets[0], e.targets[2], NONE]);
        assert_eq!(&e.horizon[2][..2], &[e.targets[2], NONE]);
        assert_eq!(e.steps[1].prev_read, NONE);
    }

    #[test]
    fn buckets_are_monotone_and_bounded() {
        let mut last = 0;
        for g in [0.0, 0.5, 1.0, 10.0, 100.0, 1e4, 1e9, 1e300] {
            let b = gap_token(Some(g));
            assert!(b >= last && (b as usize) < GAP_TOKENS);
            last = b;
        }
        assert_eq!(gap_token(Some(f64::NAN)), 0);
        assert_eq!(duration_token(-1.0), 0);
    }
}
