//! Learned sequence models: a GRU and a small causal Transformer, trained in candle
//! ([`train`]), stored as safetensors plus a JSON config ([`model`]), and served one step per
//! event by a plain-`f32` kernel ([`kernel`]) behind the [`Predictor`] trait ([`Learned`]).
//!
//! Each key (session, tenant, client, app) has its own recurrent state. `predict` runs the
//! step for the arriving event and keeps the result; `observe` of that execution commits it
//! and remembers what it read, wrote and how long it ran, for the key's next step. An online
//! Markov model keeps learning from every execution while the network is frozen; its top
//! suggestions are inputs of the network, which has learned when to copy them.

pub mod features;
pub mod kernel;
pub mod model;
pub mod net;
pub mod train;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use prewarm_core::{HistoryRecord, ResourceId};

use crate::predictor::{Context, Prediction, Predictor, latest};
use features::KeyTail;
use kernel::State;
pub use model::{Model, ModelError};
pub use net::Arch;
pub use train::{Progress, TrainError, TrainOptions, train};

/// Executions kept to rebuild key states after a model reload.
const RECENT: usize = 2048;

struct KeyState {
    state: State,
    tail: KeyTail,
    used: u64,
}

/// A state computed by `predict`, waiting for its execution's `observe`.
struct Pending {
    key: String,
    ts: f64,
    state: State,
}

/// A trained model as a predictor.
pub struct Learned {
    name: String,
    model: Model,
    keys: HashMap<String, KeyState>,
    max_keys: usize,
    tick: u64,
    pending: Option<Pending>,
    /// Per hash bucket, the latest unnamed resource seen in it: what a bucket token means.
    bucket_latest: Vec<Option<ResourceId>>,
    recent: VecDeque<HistoryRecord>,
    logits: Vec<f32>,
    /// The online model whose suggestions the network reads (it keeps learning).
    hints: crate::baselines::Markov,
    /// Rebuilding key states after a reload: the hint source is not fed again.
    replaying: bool,
}

impl Learned {
    /// Wraps a loaded model; at most `max_keys` keys keep a state (least recently active
    /// forgotten first).
    pub fn new(model: Model, max_keys: usize) -> Self {
        let buckets = model.config.vocab.resource_buckets as usize;
        Self {
            name: model.config.arch.name().to_owned(),
            model,
            keys: HashMap::new(),
            max_keys: max_keys.max(1),
            tick: 0,
            pending: None,
            bucket_latest: vec![None; buckets],
            recent: VecDeque::new(),
            logits: Vec::new(),
            hints: features::hint_source(),
            replaying: false,
        }
    }

    /// The resource a token stands for now.
    fn resource_of(&self, token: u32) -> Option<ResourceId> {
        match self.model.config.vocab.named(token) {
            Some(r) => Some(r.clone()),
            None => self
                .bucket_of(token)
                .and_then(|b| self.bucket_latest[b].clone()),
        }
    }

    /// Loads a model directory.
    pub fn load(dir: &Path, max_keys: usize) -> Result<Self, ModelError> {
        Ok(Self::new(Model::load(dir)?, max_keys))
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Swaps in a retrained model without restarting: key states are rebuilt by replaying
    /// the most recent executions through the new model. On error the old model stays.
    pub fn reload(&mut self, dir: &Path) -> Result<(), ModelError> {
        let model = Model::load(dir)?;
        let recent: Vec<HistoryRecord> = self.recent.drain(..).collect();
        // The online model carries over (it has seen everything); only the network changed.
        let hints = std::mem::replace(&mut self.hints, features::hint_source());
        *self = Self::new(model, self.max_keys);
        self.replaying = true;
        for r in &recent {
            self.observe(r);
        }
        self.replaying = false;
        self.hints = hints;
        Ok(())
    }

    fn evict(&mut self) {
        if self.keys.len() <= self.max_keys + self.max_keys / 8 {
            return;
        }
        let mut ages: Vec<u64> = self.keys.values().map(|k| k.used).collect();
        let drop = self.keys.len() - self.max_keys;
        ages.select_nth_unstable(drop - 1);
        let cut = ages[drop - 1];
        self.keys.retain(|_, k| k.used > cut);
    }

    fn bucket_of(&self, token: u32) -> Option<usize> {
        let v = &self.model.config.vocab;
        (token as usize)
            .checked_sub(1 + v.resources.len())
            .filter(|&b| b < self.bucket_latest.len())
    }
}

/// The `want` most probable tokens (never token 0, "none"), in one pass with a small sorted
/// buffer: cheaper than sorting the vocabulary for the few a prediction needs.
fn top_tokens(probs: &[f32], want: usize) -> Vec<u32> {
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(want + 1);
    for (t, &p) in probs.iter().enumerate().skip(1) {
        if top.len() == want && top.last().is_some_and(|l| l.0 >= p) {
            continue;
        }
        let at = top.partition_point(|x| x.0 >= p);
        top.insert(at, (p, t as u32));
        top.truncate(want);
    }
    top.into_iter().map(|(_, t)| t).collect()
}

impl Predictor for Learned {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, r: &HistoryRecord) {
        self.tick += 1;
        let key = r.event.key.as_str();
        let pending = self.pending.take().filter(|p| p.key == key && p.ts == r.ts);
        let m = &self.model;
        let tick = self.tick;
        let ks = self.keys.entry(key.to_owned()).or_insert_with(|| KeyState {
            state: m.kernel.zero_state(),
            tail: KeyTail::default(),
            used: tick,
        });
        ks.state = match pending {
            Some(p) => p.state,
            None => {
                let ctx = Context {
                    ts: r.ts,
                    event: &r.event,
                };
                let step = ks
                    .tail
                    .step(&m.config.vocab, &r.event.kind, key, r.ts)
                    .with_hints(&m.config.vocab, &mut self.hints, &ctx);
                m.kernel.step(&ks.state, &step)
            }
        };
        ks.tail.advance(&m.config.vocab, r);
        ks.used = tick;
        for x in &r.reads {
            let v = &self.model.config.vocab;
            if !v.is_named(&x.resource)
                && let Some(b) = self.bucket_of(v.resource(&x.resource))
            {
                self.bucket_latest[b] = Some(x.resource.clone());
            }
        }
        if !self.replaying {
            self.hints.observe(r);
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(r.clone());
        self.evict();
    }

    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        let m = &self.model;
        let key = ctx.event.key.as_str();
        let fresh;
        let (state, tail) = match self.keys.get(key) {
            Some(ks) => (&ks.state, ks.tail),
            None => {
                fresh = m.kernel.zero_state();
                (&fresh, KeyTail::default())
            }
        };
        let step = tail
            .step(&m.config.vocab, &ctx.event.kind, key, ctx.ts)
            .with_hints(&m.config.vocab, &mut self.hints, ctx);
        let next = m.kernel.step(state, &step);
        let mut probs = std::mem::take(&mut self.logits);
        m.kernel.logits(&next, &step, &mut probs);
        // Softmax (with the calibrated temperature) over every token but "none".
        probs[0] = f32::NEG_INFINITY;
        let inv_t = (1.0 / m.config.temperature) as f32;
        let max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0f32;
        for v in probs.iter_mut() {
            *v = ((*v - max) * inv_t).exp();
            z += *v;
        }
        for v in probs.iter_mut() {
            *v /= z;
        }
        // Candidates: a few more than k, since an empty bucket names no resource.
        let want = (2 * k + 8).min(probs.len() - 1);
        let order = top_tokens(&probs, want);
        let mut cands: Vec<(ResourceId, f64)> = Vec::with_capacity(want);
        for token in order {
            if let Some(r) = self.resource_of(token) {
                cands.push((r, f64::from(probs[token as usize])));
            }
        }
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut out: Vec<Prediction> = Vec::with_capacity(k);
        for (r, p) in cands {
            if out.len() == k {
                break;
            }
            if !out.iter().any(|x| x.resource == r) {
                out.push(latest(r, p));
            }
        }
        self.pending = Some(Pending {
            key: key.to_owned(),
            ts: ctx.ts,
            state: next,
        });
        self.logits = probs;
        out
    }

    fn memory_bytes(&self) -> u64 {
        (self.model.kernel.weight_bytes()
            + self.keys.len() * (self.model.kernel.state_bytes() + 64)
            + self.recent.len() * 256) as u64
            + self.hints.memory_bytes()
    }
}
