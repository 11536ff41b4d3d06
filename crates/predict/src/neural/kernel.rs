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
    /// The weights as IEEE half floats, when the half-precision path is on: half the bytes
    /// to stream per step (a GRU's weights then fit in a 512 KiB L2 cache).
    h: Vec<u16>,
    b: Vec<f32>,
}

/// Arithmetic of the serving kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Weights in f32: equal to the candle graph to rounding.
    F32,
    /// Weights stored as f16 and widened in registers (AVX2 + F16C), sums in f32: the
    /// default where the CPU has them; logits within ~1e-2 of f32.
    F16,
}

/// Whether this CPU runs the half-precision path.
pub fn f16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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

/// Defines an AVX2 matrix-vector product over rows of `$elem`, loaded 8 at a time by
/// `$load`: four rows at once with two accumulators each (eight independent FMA chains), the
/// four row sums reduced together (one horizontal reduction per four rows, not per row).
#[cfg(target_arch = "x86_64")]
macro_rules! avx_matvec {
    ($(#[$doc:meta])* $name:ident, $elem:ty, $features:literal, $load:expr, $widen:expr) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        #[allow(unsafe_code)]
        unsafe fn $name(w: &[$elem], cols: usize, x: &[f32], b: &[f32], out: &mut [f32]) {
            use std::arch::x86_64::{
                __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm_loadu_ps, _mm_storeu_ps,
                _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps,
                _mm256_hadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
            };
            assert!(x.len() == cols && w.len() >= out.len() * cols && b.len() >= out.len());
            let full16 = cols / 16 * 16;
            let full8 = cols / 8 * 8;
            let xp = x.as_ptr();
            let rows = out.len();
            let widen = $widen;
            let tail = |r: usize| -> f32 {
                w[r * cols + full8..(r + 1) * cols]
                    .iter()
                    .zip(&x[full8..])
                    .map(|(a, b)| widen(*a) * b)
                    .sum()
            };
            let mut r = 0;
            // SAFETY (whole block): every load reads 8 elements at offsets c..c+8 with
            // c + 8 <= cols, inside row r < rows (so inside `w`, checked above) and inside
            // `x`; the bias load reads b[r..r+4] with r + 4 <= rows; the features are on.
            unsafe {
                let load = $load;
                while r + 4 <= rows {
                    let p: [*const $elem; 4] =
                        std::array::from_fn(|k| w.as_ptr().add((r + k) * cols));
                    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                    let mut c = 0;
                    while c < full16 {
                        let x0 = _mm256_loadu_ps(xp.add(c));
                        let x1 = _mm256_loadu_ps(xp.add(c + 8));
                        for k in 0..4 {
                            acc[k][0] = _mm256_fmadd_ps(load(p[k].add(c)), x0, acc[k][0]);
                            acc[k][1] = _mm256_fmadd_ps(load(p[k].add(c + 8)), x1, acc[k][1]);
                        }
                        c += 16;
                    }
                    if c < full8 {
                        let x0 = _mm256_loadu_ps(xp.add(c));
                        for k in 0..4 {
                            acc[k][0] = _mm256_fmadd_ps(load(p[k].add(c)), x0, acc[k][0]);
                        }
                    }
                    let a: [__m256; 4] =
                        std::array::from_fn(|k| _mm256_add_ps(acc[k][0], acc[k][1]));
                    // Pairwise sums give [r0 r0 r1 r1 | …], then [r0 r1 r2 r3 | r0 r1 r2 r3].
                    let t = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
                    let sums =
                        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
                    let mut v = [0f32; 4];
                    _mm_storeu_ps(
                        v.as_mut_ptr(),
                        _mm_add_ps(sums, _mm_loadu_ps(b.as_ptr().add(r))),
                    );
                    for (k, s) in v.into_iter().enumerate() {
                        out[r + k] = s + if full8 < cols { tail(r + k) } else { 0.0 };
                    }
                    r += 4;
                }
                while r < rows {
                    let p = w.as_ptr().add(r * cols);
                    let mut acc = _mm256_setzero_ps();
                    let mut c = 0;
                    while c < full8 {
                        acc = _mm256_fmadd_ps(load(p.add(c)), _mm256_loadu_ps(xp.add(c)), acc);
                        c += 8;
                    }
                    let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
                    let h = _mm_hadd_ps(h, h);
                    out[r] = _mm_cvtss_f32(_mm_hadd_ps(h, h)) + tail(r) + b[r];
                    r += 1;
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
avx_matvec!(
    /// `out = W x + b`, f32 weights, AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    matvec_avx2,
    f32,
    "avx2,fma",
    |p: *const f32| std::arch::x86_64::_mm256_loadu_ps(p),
    |v: f32| v
);

#[cfg(target_arch = "x86_64")]
avx_matvec!(
    /// `out = W x + b`, f16 weights widened by F16C, f32 sums.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    matvec_f16,
    u16,
    "avx2,fma,f16c",
    |p: *const u16| std::arch::x86_64::_mm256_cvtph_ps(std::arch::x86_64::_mm_loadu_si128(
        p.cast::<std::arch::x86_64::__m128i>()
    )),
    |v: u16| half::f16::from_bits(v).to_f32()
);

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
        #[cfg(target_arch = "x86_64")]
        if !self.h.is_empty() {
            #[allow(unsafe_code)]
            // SAFETY: `h` is only filled by `set_precision(F16)` after `f16_supported()`
            // confirmed AVX2, FMA and F16C; its shape is `w`'s.
            unsafe {
                matvec_f16(&self.h, self.cols, x, &self.b, out);
            }
            return;
        }
        matvec(&self.w, self.cols, x, &self.b, out);
    }

    fn set_precision(&mut self, p: Precision) {
        self.h = if p == Precision::F16 && f16_supported() {
            self.w
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect()
        } else {
            Vec::new()
        };
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
        4 * (self.w.len() + self.b.len()) + 2 * self.h.len()
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
            h: Vec::new(),
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

/// e^x without a libm call, so that loops over it vectorise: e^x = 2^n · e^f with n the
/// integer nearest x·log2 e (written into the exponent bits) and f = x − n·ln 2 in
/// [−½ ln 2, ½ ln 2] (degree-6 Taylor polynomial; relative error about 1e-6 at worst). Saturates below −87 (to the
/// smallest normal) and above 88.7 (to +∞).
#[inline]
pub fn exp_f32(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits (no `round`,
    // which is a libm call without SSE4.1).
    const MAGIC: f32 = 12_582_912.0;
    // ln 2 in two parts (Cody–Waite): n·LN2_HI is exact, so x − n·ln 2 keeps its precision.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.7);
    let r = x * std::f32::consts::LOG2_E + MAGIC;
    let n = r - MAGIC;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    let e = (r.to_bits() as i32).wrapping_sub(0x4B40_0000);
    f32::from_bits((e.wrapping_add(127) << 23) as u32) * p
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// tanh through the logistic function: absolute error about 1e-7.
fn tanh(x: f32) -> f32 {
    2.0 * sigmoid(2.0 * x) - 1.0
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
        let mut k = Self {
            emb,
            hint,
            body,
            out,
            copy,
            dim: e,
        };
        k.set_precision(Precision::F16);
        Ok(k)
    }

    /// Chooses the arithmetic of the matrix products (embeddings stay f32). `F16` falls back
    /// to `F32` on CPUs without AVX2, FMA and F16C.
    pub fn set_precision(&mut self, p: Precision) {
        let mut mats: Vec<&mut Mat> = vec![&mut self.out, &mut self.copy];
        match &mut self.body {
            Body::Gru(g) => mats.extend([&mut g.ih, &mut g.hh]),
            Body::Transformer { blocks, .. } => {
                for b in blocks {
                    mats.extend([
                        &mut b.q, &mut b.k, &mut b.v, &mut b.o, &mut b.ff1, &mut b.ff2,
                    ]);
                }
            }
        }
        for m in mats {
            m.set_precision(p);
        }
    }

    /// The arithmetic in use.
    pub fn precision(&self) -> Precision {
        if self.out.h.is_empty() {
            Precision::F32
        } else {
            Precision::F16
        }
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
                            *sc = exp_f32(*sc - max);
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
    let zeros;
    let h = if h.len() == n {
        g.hh.apply(h, &mut gh);
        h
    } else {
        gh.copy_from_slice(&g.hh.b);
        zeros = vec![0f32; n];
        &zeros
    };
    // Slices of one length and branch-free gates: the loop vectorises.
    let (gi_r, rest) = gi.split_at(n);
    let (gi_z, gi_n) = rest.split_at(n);
    let (gh_r, rest) = gh.split_at(n);
    let (gh_z, gh_n) = rest.split_at(n);
    let mut out = vec![0f32; n];
    for i in 0..n {
        let r = sigmoid(gi_r[i] + gh_r[i]);
        let z = sigmoid(gi_z[i] + gh_z[i]);
        let c = tanh(gi_n[i] + r * gh_n[i]);
        out[i] = z * h[i] + (1.0 - z) * c;
    }
    out
}
