//! One-step inference without candle: the serving path. The trained weights are copied into
//! plain `f32` matrices and each event costs one recurrent step (GRU) or one cached attention
//! step (Transformer), single-threaded, with no allocation beyond the state it returns and no
//! thread pool to wake (candle's default pool makes such small products 5–7× slower on two
//! cores). Tests check it against the candle graph to 1e-4.

use std::collections::HashMap;

use candle_core::Tensor;

use super::features::{CONFIDENCE_TOKENS, DURATION_TOKENS, GAP_TOKENS, HINTS, STEP_TOKENS, Step};
use super::net::{Arch, Dims, LN_EPS, alibi_slope};

/// A weight tensor that is missing or has the wrong shape.
#[derive(Debug, thiserror::Error)]
#[error("weights: {0}")]
pub struct ShapeError(pub String);

/// A dense row-major matrix with an optional bias: `y = W x + b`.
#[derive(Clone, Debug)]
pub struct Mat {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

/// Dot product in eight independent lanes, which the compiler vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `out = W x + b`, portable: eight-lane partial sums the compiler vectorises.
fn matvec_portable(w: &[f32], cols: usize, x: &[f32], b: &[f32], out: &mut [f32]) {
    for ((row, bias), o) in w.chunks_exact(cols).zip(b).zip(out.iter_mut()) {
        *o = dot(row, x) + bias;
    }
}

/// `out = W x + b` with AVX2 FMA intrinsics: four 8-lane accumulators per row.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `w` holds `out.len()` rows of `cols` = `x.len()` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn matvec_avx2(w: &[f32], cols: usize, x: &[f32], b: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_add_ps, _mm256_castps256_ps128,
        _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
    };
    assert!(x.len() == cols && w.len() >= out.len() * cols && b.len() >= out.len());
    let full32 = cols / 32 * 32;
    let full8 = cols / 8 * 8;
    let xp = x.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        let row = &w[r * cols..(r + 1) * cols];
        let rp = row.as_ptr();
        // SAFETY: every load reads 8 floats at offsets c..c+8 with c + 8 <= cols, inside both
        // `row` and `x` (checked lengths above); the target features are enabled.
        let s = unsafe {
            let mut acc: [__m256; 4] = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < full32 {
                for (k, a) in acc.iter_mut().enumerate() {
                    let at = c + 8 * k;
                    *a = _mm256_fmadd_ps(
                        _mm256_loadu_ps(rp.add(at)),
                        _mm256_loadu_ps(xp.add(at)),
                        *a,
                    );
                }
                c += 32;
            }
            while c < full8 {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(rp.add(c)),
                    _mm256_loadu_ps(xp.add(c)),
                    acc[0],
                );
                c += 8;
            }
            let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let h = _mm_hadd_ps(h, h);
            _mm_cvtss_f32(_mm_hadd_ps(h, h))
        };
        let tail: f32 = row[full8..]
            .iter()
            .zip(&x[full8..])
            .map(|(a, b)| a * b)
            .sum();
        *o = s + tail + b[r];
    }
}

/// `out = W x + b`, with AVX2 and FMA when the CPU has them.
fn matvec(w: &[f32], cols: usize, x: &[f32], b: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU was just checked to support AVX2 and FMA, the only requirement of
        // this target-feature function.
        unsafe {
            matvec_avx2(w, cols, x, b, out);
        }
        return;
    }
    matvec_portable(w, cols, x, b, out);
}

impl Mat {
    /// `out = W x + b`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), self.cols);
        matvec(&self.w, self.cols, x, &self.b, out);
    }

    /// Row `i` (an embedding lookup).
    fn row(&self, i: usize) -> &[f32] {
        let i = i.min(self.rows - 1);
        &self.w[i * self.cols..(i + 1) * self.cols]
    }

    /// Number of output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn bytes(&self) -> usize {
        4 * (self.w.len() + self.b.len())
    }
}

/// Reads named tensors into matrices, checking every shape.
struct Loader<'a>(&'a HashMap<String, Tensor>);

impl Loader<'_> {
    fn vec(&self, name: &str, len: usize) -> Result<Vec<f32>, ShapeError> {
        let t = self
            .0
            .get(name)
            .ok_or_else(|| ShapeError(format!("tensor {name} is missing")))?;
        if t.dims() != [len] {
            return Err(ShapeError(format!(
                "{name} has shape {:?}, the config says [{len}] (a vocabulary or size mismatch)",
                t.dims()
            )));
        }
        t.to_vec1::<f32>()
            .map_err(|e| ShapeError(format!("{name}: {e}")))
    }

    /// A `[rows, cols]` tensor by its exact name, with a zero bias.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Mat, ShapeError> {
        let t = self
            .0
            .get(name)
            .ok_or_else(|| ShapeError(format!("tensor {name} is missing")))?;
        if t.dims() != [rows, cols] {
            return Err(ShapeError(format!(
                "{name} has shape {:?}, the config says [{rows}, {cols}] (a vocabulary or size mismatch)",
                t.dims()
            )));
        }
        let w = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| ShapeError(format!("{name}: {e}")))?;
        Ok(Mat {
            rows,
            cols,
            w,
            b: vec![0.0; rows],
        })
    }

    /// `{name}.weight`, and `{name}.bias` when `bias`.
    fn mat(&self, name: &str, rows: usize, cols: usize, bias: bool) -> Result<Mat, ShapeError> {
        let mut m = self.matrix(&format!("{name}.weight"), rows, cols)?;
        if bias {
            m.b = self.vec(&format!("{name}.bias"), rows)?;
        }
        Ok(m)
    }
}

struct Gru {
    ih: Mat,
    hh: Mat,
    hidden: usize,
}

struct Block {
    ln1: (Vec<f32>, Vec<f32>),
    q: Mat,
    k: Mat,
    v: Mat,
    o: Mat,
    ln2: (Vec<f32>, Vec<f32>),
    ff1: Mat,
    ff2: Mat,
}

enum Body {
    Gru(Gru),
    Transformer {
        blocks: Vec<Block>,
        ln_f: (Vec<f32>, Vec<f32>),
        heads: usize,
        window: usize,
        slopes: Vec<f32>,
    },
}

/// The weights of a trained model, ready for one-step inference.
pub struct Kernel {
    emb: [Mat; STEP_TOKENS],
    hint: Mat,
    body: Body,
    out: Mat,
    copy: Mat,
    dim: usize,
}

/// Per-key recurrent state.
#[derive(Clone, Debug)]
pub enum State {
    /// GRU hidden state.
    Gru(Vec<f32>),
    /// Transformer key/value ring per layer, plus the last output vector.
    Transformer {
        /// Per layer, `window × dim` keys then values, oldest overwritten first.
        kv: Vec<(Vec<f32>, Vec<f32>)>,
        /// Steps cached (at most the window).
        len: usize,
        /// Slot the next step writes.
        next: usize,
        /// Output of the latest step.
        last: Vec<f32>,
    },
}

fn layer_norm(x: &[f32], (g, b): &(Vec<f32>, Vec<f32>), out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LN_EPS as f32).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv * g[i] + b[i];
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (what candle's `gelu` computes).
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
}

impl Kernel {
    /// Copies the weights out of candle tensors, checking every name and shape.
    pub fn new(
        arch: Arch,
        dims: Dims,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self, ShapeError> {
        let l = Loader(tensors);
        let e = arch.embed();
        let emb = [
            l.mat("emb.kind", dims.types, e, false)?,
            l.mat("emb.key", dims.keys, e, false)?,
            l.mat("emb.gap", GAP_TOKENS, e, false)?,
            l.mat("emb.read", dims.resources, e, false)?,
            l.mat("emb.write", dims.resources, e, false)?,
            l.mat("emb.dur", DURATION_TOKENS, e, false)?,
            l.mat("emb.conf", CONFIDENCE_TOKENS, e, false)?,
        ];
        let hint = l.mat("emb.hint", dims.resources, e, false)?;
        let ln = |n: &str, d: usize| -> Result<(Vec<f32>, Vec<f32>), ShapeError> {
            Ok((
                l.vec(&format!("{n}.weight"), d)?,
                l.vec(&format!("{n}.bias"), d)?,
            ))
        };
        let body = match arch {
            Arch::Gru { embed, hidden } => {
                let ih = l.matrix("gru.weight_ih_l0", 3 * hidden, embed)?;
                let hh = l.matrix("gru.weight_hh_l0", 3 * hidden, hidden)?;
                let (bi, bh) = (
                    l.vec("gru.bias_ih_l0", 3 * hidden)?,
                    l.vec("gru.bias_hh_l0", 3 * hidden)?,
                );
                Body::Gru(Gru {
                    ih: Mat { b: bi, ..ih },
                    hh: Mat { b: bh, ..hh },
                    hidden,
                })
            }
            Arch::Transformer {
                dim,
                layers,
                heads,
                window,
            } => Body::Transformer {
                blocks: (0..layers)
                    .map(|i| {
                        let p = format!("blk{i}");
                        Ok(Block {
                            ln1: ln(&format!("{p}.ln1"), dim)?,
                            q: l.mat(&format!("{p}.q"), dim, dim, true)?,
                            k: l.mat(&format!("{p}.k"), dim, dim, true)?,
                            v: l.mat(&format!("{p}.v"), dim, dim, true)?,
                            o: l.mat(&format!("{p}.o"), dim, dim, true)?,
                            ln2: ln(&format!("{p}.ln2"), dim)?,
                            ff1: l.mat(&format!("{p}.ff1"), 4 * dim, dim, true)?,
                            ff2: l.mat(&format!("{p}.ff2"), dim, 4 * dim, true)?,
                        })
                    })
                    .collect::<Result<_, ShapeError>>()?,
                ln_f: ln("ln_f", dim)?,
                heads,
                window,
                slopes: (0..heads).map(|h| alibi_slope(h, heads)).collect(),
            },
        };
        let out = l.mat("out", dims.resources, arch.out_in(), true)?;
        let copy = l.mat("copy", HINTS, arch.out_in(), true)?;
        Ok(Self {
            emb,
            hint,
            body,
            out,
            copy,
            dim: e,
        })
    }

    /// The state of a key with no history.
    pub fn zero_state(&self) -> State {
        match &self.body {
            Body::Gru(g) => State::Gru(vec![0.0; g.hidden]),
            Body::Transformer { blocks, window, .. } => State::Transformer {
                kv: blocks
                    .iter()
                    .map(|_| (vec![0.0; window * self.dim], vec![0.0; window * self.dim]))
                    .collect(),
                len: 0,
                next: 0,
                last: vec![0.0; self.dim],
            },
        }
    }

    /// Bytes of weights.
    pub fn weight_bytes(&self) -> usize {
        let body = match &self.body {
            Body::Gru(g) => g.ih.bytes() + g.hh.bytes(),
            Body::Transformer { blocks, .. } => blocks
                .iter()
                .map(|b| {
                    [&b.q, &b.k, &b.v, &b.o, &b.ff1, &b.ff2]
                        .iter()
                        .map(|m| m.bytes())
                        .sum::<usize>()
                        + 16 * self.dim
                })
                .sum(),
        };
        self.emb.iter().map(Mat::bytes).sum::<usize>()
            + self.hint.bytes()
            + body
            + self.out.bytes()
            + self.copy.bytes()
    }

    /// Bytes one key's state takes.
    pub fn state_bytes(&self) -> usize {
        match self.zero_state() {
            State::Gru(h) => 4 * h.len(),
            State::Transformer { kv, last, .. } => {
                4 * (last.len() + kv.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
            }
        }
    }

    /// Number of output tokens.
    pub fn outputs(&self) -> usize {
        self.out.rows()
    }

    fn embed(&self, s: &Step) -> Vec<f32> {
        let mut x = vec![0f32; self.dim];
        for (m, t) in self.emb.iter().zip(s.tokens()) {
            for (a, b) in x.iter_mut().zip(m.row(t as usize)) {
                *a += b;
            }
        }
        for &h in &s.hints {
            for (a, b) in x.iter_mut().zip(self.hint.row(h as usize)) {
                *a += b;
            }
        }
        x
    }

    /// The state after one more step.
    pub fn step(&self, state: &State, s: &Step) -> State {
        let x = self.embed(s);
        match (&self.body, state) {
            (Body::Gru(g), State::Gru(h)) => State::Gru(gru_step(g, &x, h)),
            (
                Body::Transformer {
                    blocks,
                    ln_f,
                    heads,
                    window,
                    slopes,
                },
                State::Transformer { kv, len, next, .. },
            ) => {
                let mut kv = kv.clone();
                let mut x = x;
                let d = self.dim;
                let dh = d / heads;
                let len = (len + 1).min(*window);
                let mut h = vec![0f32; d];
                let (mut q, mut a, mut o) = (vec![0f32; d], vec![0f32; d], vec![0f32; d]);
                let mut f = vec![0f32; 4 * d];
                let mut scores = vec![0f32; *window];
                for (blk, (ks, vs)) in blocks.iter().zip(kv.iter_mut()) {
                    layer_norm(&x, &blk.ln1, &mut h);
                    blk.q.apply(&h, &mut q);
                    blk.k.apply(&h, &mut ks[next * d..(next + 1) * d]);
                    blk.v.apply(&h, &mut vs[next * d..(next + 1) * d]);
                    // Slot of the step `back` steps ago.
                    let slot = |back: usize| (next + window - back) % window;
                    for (hd, slope) in slopes.iter().enumerate() {
                        let r = hd * dh..(hd + 1) * dh;
                        let scale = 1.0 / (dh as f32).sqrt();
                        let mut max = f32::NEG_INFINITY;
                        for (back, sc) in scores.iter_mut().enumerate().take(len) {
                            let s = slot(back) * d;
                            *sc = dot(&q[r.clone()], &ks[s + r.start..s + r.end]) * scale
                                - slope * back as f32;
                            max = max.max(*sc);
                        }
                        let mut z = 0.0;
                        for sc in scores.iter_mut().take(len) {
                            *sc = (*sc - max).exp();
                            z += *sc;
                        }
                        a[r.clone()].fill(0.0);
                        for (back, sc) in scores.iter().enumerate().take(len) {
                            let s = slot(back) * d;
                            let p = sc / z;
                            for (ai, vi) in a[r.clone()].iter_mut().zip(&vs[s + r.start..s + r.end])
                            {
                                *ai += p * vi;
                            }
                        }
                    }
                    blk.o.apply(&a, &mut o);
                    for (xi, oi) in x.iter_mut().zip(&o) {
                        *xi += oi;
                    }
                    layer_norm(&x, &blk.ln2, &mut h);
                    blk.ff1.apply(&h, &mut f);
                    for v in &mut f {
                        *v = gelu(*v);
                    }
                    blk.ff2.apply(&f, &mut o);
                    for (xi, oi) in x.iter_mut().zip(&o) {
                        *xi += oi;
                    }
                }
                let mut last = vec![0f32; d];
                layer_norm(&x, ln_f, &mut last);
                State::Transformer {
                    kv,
                    len,
                    next: (next + 1) % window,
                    last,
                }
            }
            // A state from another model (after a reload): start the key afresh.
            _ => self.step(&self.zero_state(), s),
        }
    }

    /// Output logits after `state`'s latest step, whose input was `s`.
    pub fn logits(&self, state: &State, s: &Step, out: &mut Vec<f32>) {
        out.resize(self.out.rows(), 0.0);
        let v = match state {
            State::Gru(h) => h,
            State::Transformer { last, .. } => last,
        };
        if v.len() != self.out.cols {
            out.fill(0.0);
            return;
        }
        self.out.apply(v, out);
        let mut copy = [0f32; HINTS];
        self.copy.apply(v, &mut copy);
        for (&h, c) in s.hints.iter().zip(copy) {
            if let Some(o) = out.get_mut(h as usize) {
                *o += c;
            }
        }
    }
}

fn gru_step(g: &Gru, x: &[f32], h: &[f32]) -> Vec<f32> {
    let n = g.hidden;
    let mut gi = vec![0f32; 3 * n];
    let mut gh = vec![0f32; 3 * n];
    g.ih.apply(x, &mut gi);
    if h.len() == n {
        g.hh.apply(h, &mut gh);
    } else {
        gh.copy_from_slice(&g.hh.b);
    }
    (0..n)
        .map(|i| {
            let r = sigmoid(gi[i] + gh[i]);
            let z = sigmoid(gi[n + i] + gh[n + i]);
            let c = (gi[2 * n + i] + r * gh[2 * n + i]).tanh();
            let hp = h.get(i).copied().unwrap_or(0.0);
            z * hp + (1.0 - z) * c
        })
        .collect()
}
