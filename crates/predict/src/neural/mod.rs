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
pub mod retrain;
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
    /// Executions folded into `state`.
    steps: u64,
    used: u64,
}

/// What moves a key's state on by one execution in `observe_batch`.
enum Input {
    /// The state `predict` computed from the key's current state.
    Computed(State),
    /// The step to run.
    Step(features::Step),
}

/// A state computed by `predict`, waiting for its execution's `observe`.
struct Pending {
    ts: f64,
    /// The key's `steps` when it was computed: it is valid only on that state.
    base: u64,
    state: State,
}

/// Batches at least this long are inferred on all cores.
const PARALLEL_BATCH: usize = 16;

/// The network's step for one event and its `want` most probable output tokens with their
/// probabilities (softmax at the calibrated temperature over every token but "none").
fn infer(m: &Model, state: &State, step: &features::Step, want: usize) -> (State, Vec<(u32, f32)>) {
    let next = m.kernel.step(state, step);
    let mut logits = Vec::new();
    m.kernel.logits(&next, step, &mut logits);
    logits[0] = f32::NEG_INFINITY;
    let inv_t = (1.0 / m.config.temperature) as f32;
    // Eight lanes for the maximum and the normaliser, so both vectorise.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    let max = tail
        .iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0f32; 8];
    let chunks = logits.chunks_exact(8);
    for c in chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += kernel::exp_f32((v - max) * inv_t);
        }
    }
    let z = sums.iter().sum::<f32>()
        + tail
            .iter()
            .map(|&v| kernel::exp_f32((v - max) * inv_t))
            .sum::<f32>();
    // The order of logits is the order of probabilities: pick first, normalise after.
    let top = top_tokens(&logits, want.min(logits.len() - 1));
    let top = top
        .into_iter()
        .map(|t| (t, kernel::exp_f32((logits[t as usize] - max) * inv_t) / z))
        .collect();
    (next, top)
}

/// A trained model as a predictor.
pub struct Learned {
    name: String,
    model: Model,
    keys: HashMap<String, KeyState>,
    max_keys: usize,
    tick: u64,
    /// Per key, the state its latest prediction computed.
    pending: HashMap<String, Pending>,
    /// Per hash bucket, the latest unnamed resource seen in it: what a bucket token means.
    bucket_latest: Vec<Option<ResourceId>>,
    recent: VecDeque<HistoryRecord>,
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
            pending: HashMap::new(),
            bucket_latest: vec![None; buckets],
            recent: VecDeque::new(),
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
        self.observe_batch(&recent);
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
/// buffer: cheaper than sorting the vocabulary for the few a prediction needs. Once the
/// buffer is full, blocks of eight whose best cannot enter it are skipped with one compare.
fn top_tokens(probs: &[f32], want: usize) -> Vec<u32> {
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(want + 1);
    let offer = |top: &mut Vec<(f32, u32)>, t: usize, p: f32| {
        if top.len() == want && top.last().is_some_and(|l| l.0 >= p) {
            return;
        }
        let at = top.partition_point(|x| x.0 >= p);
        top.insert(at, (p, t as u32));
        top.truncate(want);
    };
    for (b, block) in probs.chunks(8).enumerate() {
        let best = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if top.len() == want && top.last().is_some_and(|l| l.0 >= best) {
            continue;
        }
        for (i, &p) in block.iter().enumerate() {
            let t = b * 8 + i;
            if t > 0 {
                offer(&mut top, t, p);
            }
        }
    }
    top.into_iter().map(|(_, t)| t).collect()
}

impl Predictor for Learned {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, r: &HistoryRecord) {
        self.observe_batch(std::slice::from_ref(r));
    }

    fn observe_batch(&mut self, records: &[HistoryRecord]) {
        // Sequential: each record's input (its key's tail and the online hints as they are
        // when it arrives), or the state its prediction already computed from the key's
        // current state.
        let m = &self.model;
        let mut keys: Vec<(&str, KeyTail, u64, Vec<Input>)> = Vec::new();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        for r in records {
            let key = r.event.key.as_str();
            let i = *slot.entry(key).or_insert_with(|| {
                let (tail, steps) = self
                    .keys
                    .get(key)
                    .map_or((KeyTail::default(), 0), |k| (k.tail, k.steps));
                keys.push((key, tail, steps, Vec::new()));
                keys.len() - 1
            });
            let (_, tail, steps, inputs) = &mut keys[i];
            let pending = self
                .pending
                .remove(key)
                .filter(|p| p.ts == r.ts && p.base == *steps);
            inputs.push(match pending {
                Some(p) => Input::Computed(p.state),
                None => {
                    let ctx = Context {
                        ts: r.ts,
                        event: &r.event,
                    };
                    Input::Step(
                        tail.step(&m.config.vocab, &r.event.kind, key, r.ts)
                            .with_hints(&m.config.vocab, &self.hints, &ctx),
                    )
                }
            });
            tail.advance(&m.config.vocab, r);
            *steps += 1;
            if !self.replaying {
                self.hints.observe(r);
            }
        }
        // Parallel across keys (in order within one): the network's steps.
        let zero = m.kernel.zero_state();
        let run = |(key, _, _, inputs): &(&str, KeyTail, u64, Vec<Input>)| {
            let mut state = self.keys.get(*key).map_or(&zero, |k| &k.state).clone();
            for input in inputs {
                state = match input {
                    Input::Computed(s) => s.clone(),
                    Input::Step(step) => m.kernel.step(&state, step),
                };
            }
            state
        };
        let states: Vec<State> = if records.len() >= PARALLEL_BATCH && keys.len() > 1 {
            use rayon::prelude::*;
            keys.par_iter().map(run).collect()
        } else {
            keys.iter().map(run).collect()
        };
        // Sequential: commit.
        self.tick += 1;
        let tick = self.tick;
        for ((key, tail, steps, _), state) in keys.into_iter().zip(states) {
            self.keys.insert(
                key.to_owned(),
                KeyState {
                    state,
                    tail,
                    steps,
                    used: tick,
                },
            );
        }
        for r in records {
            for x in &r.reads {
                let v = &self.model.config.vocab;
                if !v.is_named(&x.resource)
                    && let Some(b) = self.bucket_of(v.resource(&x.resource))
                {
                    self.bucket_latest[b] = Some(x.resource.clone());
                }
            }
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(r.clone());
        }
        self.evict();
    }

    fn predict(&mut self, ctx: &Context<'_>, k: usize) -> Vec<Prediction> {
        self.predict_batch(std::slice::from_ref(ctx), k)
            .pop()
            .unwrap_or_default()
    }

    fn predict_batch(&mut self, ctxs: &[Context<'_>], k: usize) -> Vec<Vec<Prediction>> {
        // Each event on its own (in parallel for a batch): its input step (the key's tail and
        // the online hints), the network's step and output distribution, the resources its
        // most probable tokens stand for. Nothing is modified until all are done.
        let zero = self.model.kernel.zero_state();
        let one = |ctx: &Context<'_>| {
            let m = &self.model;
            let key = ctx.event.key.as_str();
            let ks = self.keys.get(key);
            let step = ks
                .map(|k| k.tail)
                .unwrap_or_default()
                .step(&m.config.vocab, &ctx.event.kind, key, ctx.ts)
                .with_hints(&m.config.vocab, &self.hints, ctx);
            let state = ks.map_or(&zero, |k| &k.state);
            let (next, top) = infer(m, state, &step, 2 * k + 8);
            let mut cands: Vec<(ResourceId, f64)> = top
                .into_iter()
                .filter_map(|(t, p)| self.resource_of(t).map(|r| (r, f64::from(p))))
                .collect();
            cands.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let mut preds: Vec<Prediction> = Vec::with_capacity(k);
            for (r, p) in cands {
                if preds.len() == k {
                    break;
                }
                if !preds.iter().any(|x| x.resource == r) {
                    preds.push(latest(r, p));
                }
            }
            let pending = Pending {
                ts: ctx.ts,
                base: ks.map_or(0, |k| k.steps),
                state: next,
            };
            (pending, preds)
        };
        let done: Vec<(Pending, Vec<Prediction>)> = if ctxs.len() >= PARALLEL_BATCH {
            use rayon::prelude::*;
            ctxs.par_iter().map(one).collect()
        } else {
            ctxs.iter().map(one).collect()
        };
        // Keep each state for its execution's `observe`.
        let mut out = Vec::with_capacity(ctxs.len());
        for (ctx, (pending, preds)) in ctxs.iter().zip(done) {
            if self.pending.len() > self.max_keys {
                self.pending.clear();
            }
            self.pending.insert(ctx.event.key.clone(), pending);
            out.push(preds);
        }
        out
    }

    fn memory_bytes(&self) -> u64 {
        (self.model.kernel.weight_bytes()
            + self.keys.len() * (self.model.kernel.state_bytes() + 64)
            + self.recent.len() * 256) as u64
            + self.hints.memory_bytes()
    }
}
