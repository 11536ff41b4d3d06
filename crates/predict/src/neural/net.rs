//! The two sequence models as candle graphs, used for training: a GRU and a small causal
//! Transformer (pre-norm blocks, sliding-window attention with ALiBi distance biases, so that
//! one-step inference with a bounded key/value cache computes exactly what training saw).
//!
//! Both read the same summed token embeddings (`features::Step`) and end in a linear layer over
//! the resource tokens, plus a copy head: one learned score per suggestion of the online
//! Markov model, added to that suggestion's logit (a pointer, so the network can follow the
//! online model for resources it never saw and learn when not to). Parameter names are the contract with [`super::kernel`], which runs the
//! same weights one step at a time without candle.

use candle_core::{D, DType, Device, Module, Result, Tensor};
use candle_nn::rnn::{GRU, GRUConfig, RNN};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::features::{CONFIDENCE_TOKENS, DURATION_TOKENS, GAP_TOKENS, HINTS};

/// Layer-norm epsilon (the kernel uses the same).
pub const LN_EPS: f64 = 1e-5;

/// Architecture and size of a model.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arch {
    /// One GRU layer.
    Gru {
        /// Embedding width.
        embed: usize,
        /// Hidden state width.
        hidden: usize,
    },
    /// A causal Transformer encoder.
    Transformer {
        /// Model width.
        dim: usize,
        /// Blocks.
        layers: usize,
        /// Attention heads (divide `dim`).
        heads: usize,
        /// Each step attends to itself and the `window - 1` steps before it.
        window: usize,
    },
}

impl Arch {
    /// The default GRU: embeddings 64, hidden 128.
    pub const GRU: Arch = Arch::Gru {
        embed: 64,
        hidden: 128,
    };
    /// The default Transformer: width 64, 2 blocks, 4 heads, window 32.
    pub const TRANSFORMER: Arch = Arch::Transformer {
        dim: 64,
        layers: 2,
        heads: 4,
        window: 32,
    };

    /// Embedding width.
    pub fn embed(&self) -> usize {
        match *self {
            Arch::Gru { embed, .. } => embed,
            Arch::Transformer { dim, .. } => dim,
        }
    }

    /// Width of the vector the output layer reads.
    pub fn out_in(&self) -> usize {
        match *self {
            Arch::Gru { hidden, .. } => hidden,
            Arch::Transformer { dim, .. } => dim,
        }
    }

    /// Short name: `gru` or `transformer`.
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Gru { .. } => "gru",
            Arch::Transformer { .. } => "transformer",
        }
    }

    /// Checks the sizes make sense.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ok = match *self {
            Arch::Gru { embed, hidden } => {
                (1..=4096).contains(&embed) && (1..=4096).contains(&hidden)
            }
            Arch::Transformer {
                dim,
                layers,
                heads,
                window,
            } => {
                (1..=4096).contains(&dim)
                    && (1..=16).contains(&layers)
                    && heads >= 1
                    && dim % heads == 0
                    && (1..=4096).contains(&window)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("invalid model size {self:?}"))
        }
    }
}

/// Token-space sizes, from the vocabulary.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dims {
    /// Resource tokens (input and output).
    pub resources: usize,
    /// Event type tokens.
    pub types: usize,
    /// Key tokens.
    pub keys: usize,
}

/// A batch of steps: each tensor is `[batch, time]` of u32 tokens.
pub struct Batch {
    /// Event types.
    pub kind: Tensor,
    /// Keys.
    pub key: Tensor,
    /// Time gaps.
    pub gap: Tensor,
    /// Previous reads.
    pub prev_read: Tensor,
    /// Previous writes.
    pub prev_write: Tensor,
    /// Previous execution times.
    pub prev_duration: Tensor,
    /// Suggestions `[batch, time, HINTS]`.
    pub hints: Tensor,
    /// Confidence of the first suggestion.
    pub confidence: Tensor,
}

/// The embedding tables shared by both models.
struct Embeddings {
    kind: Embedding,
    key: Embedding,
    gap: Embedding,
    read: Embedding,
    write: Embedding,
    duration: Embedding,
    hint: Embedding,
    confidence: Embedding,
}

impl Embeddings {
    fn new(d: Dims, e: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("emb");
        Ok(Self {
            kind: candle_nn::embedding(d.types, e, vb.pp("kind"))?,
            key: candle_nn::embedding(d.keys, e, vb.pp("key"))?,
            gap: candle_nn::embedding(GAP_TOKENS, e, vb.pp("gap"))?,
            read: candle_nn::embedding(d.resources, e, vb.pp("read"))?,
            write: candle_nn::embedding(d.resources, e, vb.pp("write"))?,
            duration: candle_nn::embedding(DURATION_TOKENS, e, vb.pp("dur"))?,
            hint: candle_nn::embedding(d.resources, e, vb.pp("hint"))?,
            confidence: candle_nn::embedding(CONFIDENCE_TOKENS, e, vb.pp("conf"))?,
        })
    }

    fn forward(&self, b: &Batch) -> Result<Tensor> {
        let x = (self.kind.forward(&b.kind)? + self.key.forward(&b.key)?)?;
        let x = (x + self.gap.forward(&b.gap)?)?;
        let x = (x + self.read.forward(&b.prev_read)?)?;
        let x = (x + self.write.forward(&b.prev_write)?)?;
        let x = (x + self.duration.forward(&b.prev_duration)?)?;
        let x = (x + self.hint.forward(&b.hints)?.sum(2)?)?;
        x + self.confidence.forward(&b.confidence)?
    }
}

struct Block {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

impl Block {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln1: candle_nn::layer_norm(dim, LN_EPS, vb.pp("ln1"))?,
            q: candle_nn::linear(dim, dim, vb.pp("q"))?,
            k: candle_nn::linear(dim, dim, vb.pp("k"))?,
            v: candle_nn::linear(dim, dim, vb.pp("v"))?,
            o: candle_nn::linear(dim, dim, vb.pp("o"))?,
            ln2: candle_nn::layer_norm(dim, LN_EPS, vb.pp("ln2"))?,
            ff1: candle_nn::linear(dim, 4 * dim, vb.pp("ff1"))?,
            ff2: candle_nn::linear(4 * dim, dim, vb.pp("ff2"))?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, bias: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let dh = d / heads;
        let h = self.ln1.forward(x)?;
        let split = |l: &Linear| -> Result<Tensor> {
            l.forward(&h)?
                .reshape((b, t, heads, dh))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(&self.q)?, split(&self.k)?, split(&self.v)?);
        let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?;
        let p = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(bias)?)?;
        let a = p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + self.o.forward(&a)?)?;
        let f = self
            .ff2
            .forward(&self.ff1.forward(&self.ln2.forward(&x)?)?.gelu()?)?;
        x + f
    }
}

/// ALiBi slope of head `h` of `heads`.
pub fn alibi_slope(h: usize, heads: usize) -> f32 {
    2f32.powf(-8.0 * (h as f32 + 1.0) / heads as f32)
}

/// Attention bias `[heads, t, t]`: `-slope × distance` inside the causal window, a large
/// negative number outside it.
fn attention_bias(heads: usize, t: usize, window: usize, dev: &Device) -> Result<Tensor> {
    let mut v = Vec::with_capacity(heads * t * t);
    for h in 0..heads {
        let s = alibi_slope(h, heads);
        for i in 0..t {
            for j in 0..t {
                v.push(if j > i || i - j >= window {
                    -1e9
                } else {
                    -s * (i - j) as f32
                });
            }
        }
    }
    Tensor::from_vec(v, (heads, t, t), dev)
}

enum Body {
    Gru(GRU),
    Transformer {
        blocks: Vec<Block>,
        ln_f: LayerNorm,
        heads: usize,
        window: usize,
    },
}

/// A model as a differentiable candle graph.
pub struct Net {
    emb: Embeddings,
    body: Body,
    out: Linear,
    copy: Linear,
}

impl Net {
    /// Declares the model's parameters in `vb`.
    pub fn new(arch: Arch, dims: Dims, vb: VarBuilder) -> Result<Self> {
        let emb = Embeddings::new(dims, arch.embed(), vb.clone())?;
        let body = match arch {
            Arch::Gru { embed, hidden } => Body::Gru(candle_nn::rnn::gru(
                embed,
                hidden,
                GRUConfig::default(),
                vb.pp("gru"),
            )?),
            Arch::Transformer {
                dim,
                layers,
                heads,
                window,
            } => Body::Transformer {
                blocks: (0..layers)
                    .map(|i| Block::new(dim, vb.pp(format!("blk{i}"))))
                    .collect::<Result<_>>()?,
                ln_f: candle_nn::layer_norm(dim, LN_EPS, vb.pp("ln_f"))?,
                heads,
                window,
            },
        };
        let out = candle_nn::linear(arch.out_in(), dims.resources, vb.pp("out"))?;
        let copy = candle_nn::linear(arch.out_in(), HINTS, vb.pp("copy"))?;
        Ok(Self {
            emb,
            body,
            out,
            copy,
        })
    }

    /// Logits `[batch, time, resources]` for a batch of sequences (each starting from an
    /// empty state).
    pub fn forward(&self, b: &Batch) -> Result<Tensor> {
        let x = self.emb.forward(b)?;
        let h = match &self.body {
            Body::Gru(g) => {
                let states = g.seq(&x)?;
                let hs: Vec<Tensor> = states.into_iter().map(|s| s.h).collect();
                Tensor::stack(&hs, 1)?
            }
            Body::Transformer {
                blocks,
                ln_f,
                heads,
                window,
            } => {
                let t = x.dim(1)?;
                let bias = attention_bias(*heads, t, *window, x.device())?;
                let mut x = x;
                for blk in blocks {
                    x = blk.forward(&x, *heads, &bias)?;
                }
                ln_f.forward(&x)?
            }
        };
        let logits = self.out.forward(&h)?;
        // Copy head: add each suggestion's score to its logit, via flat indexes.
        let (bs, t, r) = logits.dims3()?;
        let scores = self.copy.forward(&h)?.flatten_all()?;
        let base: Vec<u32> = (0..(bs * t) as u32).map(|i| i * r as u32).collect();
        let base = Tensor::from_vec(base, (bs, t, 1), h.device())?;
        let idx = b.hints.broadcast_add(&base)?.flatten_all()?;
        logits
            .flatten_all()?
            .index_add(&idx, &scores, 0)?
            .reshape((bs, t, r))
    }
}

/// Mean cross-entropy of the logits at flat positions `idx` of `[b, t, r]` against `targets`.
pub fn loss_at(logits: &Tensor, idx: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, t, r) = logits.dims3()?;
    let flat = logits.reshape((b * t, r))?.index_select(idx, 0)?;
    candle_nn::loss::cross_entropy(&flat, targets)
}

/// Rows `idx` of the logits, flattened to `[n, r]`.
pub fn rows_at(logits: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let (b, t, r) = logits.dims3()?;
    logits.reshape((b * t, r))?.index_select(idx, 0)
}

/// Mean cross-entropy of `[n, r]` logits divided by a temperature.
pub fn tempered_loss(rows: &Tensor, targets: &Tensor, temperature: f64) -> Result<f64> {
    let ls = candle_nn::ops::log_softmax(&(rows / temperature)?, D::Minus1)?;
    candle_nn::loss::nll(&ls, targets)?
        .to_dtype(DType::F64)?
        .to_scalar()
}

/// Mean soft-label cross-entropy at flat positions `idx`: `targets` `[n, m]` tokens with
/// `weights` `[n, m]` (each row sums to 1; padding has weight 0).
pub fn soft_loss_at(
    logits: &Tensor,
    idx: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let rows = rows_at(logits, idx)?;
    let n = rows.dim(0)?;
    let lp = candle_nn::ops::log_softmax(&rows, D::Minus1)?.gather(targets, 1)?;
    (lp * weights)?.sum_all()? / -(n as f64)
}
