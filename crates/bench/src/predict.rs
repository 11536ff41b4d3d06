//! `prewarm bench predict`: inference cost per event of a learned model, single-threaded —
//! the serving kernel's one step (hot, one key), full `predict` + `observe` over a history
//! (many keys), and in the same run the same weights through candle (one step, batch 1, its
//! default thread pool) and the Markov baseline as peers.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId, percentile};
use prewarm_predict::baselines::Markov;
use prewarm_predict::neural::features::{KeyTail, Step};
use prewarm_predict::neural::kernel::Precision;
use prewarm_predict::neural::model::ModelConfig;
use prewarm_predict::neural::net::{Batch, Dims, Net};
use prewarm_predict::neural::train::untrained;
use prewarm_predict::neural::{Arch, Learned, Model, ModelError, TrainError};
use prewarm_predict::{Context, Predictor};
use prewarm_report::text;
use serde::Serialize;

/// What `prewarm bench predict` measures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A trained model directory (default: an untrained GRU, embeddings 64, hidden 128, over
    /// 512 resources — the size the target names).
    pub model: Option<PathBuf>,
    /// History to replay (default: a generated one, 64 keys over 512 resources).
    pub history: Option<PathBuf>,
    /// Events to time.
    pub events: usize,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictBenchError {
    /// The history could not be read.
    #[error(transparent)]
    History(#[from] prewarm_import::ReadHistoryError),
    /// A generated resource id is invalid.
    #[error(transparent)]
    Id(#[from] prewarm_core::IdError),
    /// The model could not be loaded.
    #[error("loading {}", dir.display())]
    Load {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        source: ModelError,
    },
    /// The untrained model could not be built.
    #[error("building the model")]
    Build(#[source] TrainError),
    /// The candle peer failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// One measured path.
#[derive(Serialize)]
pub struct Row {
    what: String,
    events: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

/// What the benchmark measured.
pub struct Report {
    /// One row per path, the kernel first.
    pub rows: Vec<Row>,
    arch: Arch,
    resources: usize,
    events: usize,
}

fn row(what: &str, mut t: Vec<f64>) -> Row {
    let n = t.len();
    let mean = t.iter().sum::<f64>() / n.max(1) as f64;
    t.sort_by(f64::total_cmp);
    Row {
        what: what.into(),
        events: n,
        p50_us: percentile(&t, 0.5),
        p99_us: percentile(&t, 0.99),
        mean_us: mean,
    }
}

/// `n` generated history records: 64 keys, each walking 8 of 512 resources.
pub fn generated(n: usize) -> Result<Vec<HistoryRecord>, prewarm_core::IdError> {
    (0..n)
        .map(|i| {
            let key = i % 64;
            let step = i / 64;
            Ok(HistoryRecord {
                ts: i as f64 * 0.01,
                event: Event {
                    kind: ["http", "timer", "upload"][i % 3].into(),
                    key: format!("tenant-{key}"),
                    attrs: Default::default(),
                    needs: Vec::new(),
                },
                capacity: None,
                reads: vec![ReadAccess {
                    resource: ResourceId::new(format!("state/{}", (key * 8 + step % 8) % 512))?,
                    version: None,
                    bytes: 1 << 20,
                }],
                writes: vec![],
                duration_s: 0.05,
            })
        })
        .collect()
}

/// `dir`'s model, or an untrained GRU over `records`.
pub(crate) fn model_or_untrained(
    dir: Option<&std::path::Path>,
    records: &[HistoryRecord],
) -> Result<Model, PredictBenchError> {
    match dir {
        Some(dir) => Model::load(dir).map_err(|source| PredictBenchError::Load {
            dir: dir.to_owned(),
            source,
        }),
        None => untrained(records, Arch::GRU, 1).map_err(PredictBenchError::Build),
    }
}

/// Runs the benchmark.
pub fn run(a: &Settings) -> Result<Report, PredictBenchError> {
    let records = match &a.history {
        Some(h) => prewarm_import::read_history(h)?,
        None => generated(a.events.max(1024))?,
    };
    let model = model_or_untrained(a.model.as_deref(), &records)?;
    let cfg = model.config.clone();
    let tensors = model.tensors.clone();
    let rows = measure(a, &records, model, &cfg, tensors)?;
    Ok(Report {
        rows,
        arch: cfg.arch,
        resources: cfg.dims.resources,
        events: a.events,
    })
}

impl Report {
    /// The terminal text.
    pub fn text(&self) -> String {
        let rows = &self.rows;
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.what.clone(),
                    format!("{:.2}", r.p50_us),
                    format!("{:.2}", r.p99_us),
                    format!("{:.2}", r.mean_us),
                    format!("{:.2}×", r.p50_us / rows[0].p50_us.max(1e-9)),
                ]
            })
            .collect();
        format!(
            "{} over {} resource tokens ({:?}); {} events\n{}",
            self.arch.name(),
            self.resources,
            self.arch,
            self.events,
            text::table(
                &["per event", "p50 µs", "p99 µs", "mean µs", "vs kernel"],
                &table
            )
        )
    }
}

/// The four measurements, in order: the kernel, the predictor, candle, Markov.
fn measure(
    a: &Settings,
    records: &[HistoryRecord],
    mut model: Model,
    cfg: &ModelConfig,
    tensors: std::collections::HashMap<String, Tensor>,
) -> Result<Vec<Row>, PredictBenchError> {
    let n = a.events.min(records.len());
    let (warm, timed) = records.split_at(records.len() - n);
    let r0 = &timed[0];
    let step = KeyTail::default().step(&cfg.vocab, &r0.event.kind, &r0.event.key, r0.ts);
    let mut rows = kernel_rows(&mut model, &step, n);
    rows.extend(predictor_rows(model, cfg, warm, timed));
    rows.push(candle_row(cfg, tensors, &step, n)?);
    rows.push(markov_row(warm, timed));
    Ok(rows)
}

/// The kernel alone: one step and the output layer, one key, hot caches; with the default
/// arithmetic (f16 weights where the CPU has F16C) and with f32 weights.
fn kernel_rows(model: &mut Model, step: &Step, n: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let default = model.kernel.precision();
    for precision in [default, Precision::F32] {
        model.kernel.set_precision(precision);
        let mut state = model.kernel.zero_state();
        let mut logits = Vec::new();
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            let s = Instant::now();
            state = model.kernel.step(&state, step);
            model.kernel.logits(&state, step, &mut logits);
            t.push(s.elapsed().as_secs_f64() * 1e6);
        }
        rows.push(row(
            &format!("kernel step + output layer ({precision:?})"),
            t,
        ));
        if default == Precision::F32 {
            break;
        }
    }
    model.kernel.set_precision(default);
    rows
}

/// The predictor: predict top 5, then observe, across keys.
fn predictor_rows(
    model: Model,
    cfg: &ModelConfig,
    warm: &[HistoryRecord],
    timed: &[HistoryRecord],
) -> [Row; 2] {
    let mut p = Learned::new(model, 1 << 20);
    for r in warm {
        p.observe(r);
    }
    let (mut tp, mut to) = (
        Vec::with_capacity(timed.len()),
        Vec::with_capacity(timed.len()),
    );
    for r in timed {
        let s = Instant::now();
        let out = p.predict(
            &Context {
                ts: r.ts,
                event: &r.event,
            },
            5,
        );
        tp.push(s.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
        let s = Instant::now();
        p.observe(r);
        to.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let both: Vec<f64> = tp.iter().zip(&to).map(|(a, b)| a + b).collect();
    [
        row(&format!("{} predict (top 5)", cfg.arch.name()), tp),
        row(&format!("{} predict + observe", cfg.arch.name()), both),
    ]
}

/// Peer: the same weights through candle, one step of batch 1.
fn candle_row(
    cfg: &ModelConfig,
    tensors: std::collections::HashMap<String, Tensor>,
    step: &Step,
    n: usize,
) -> Result<Row, PredictBenchError> {
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let dims = Dims {
        resources: cfg.dims.resources,
        types: cfg.dims.types,
        keys: cfg.dims.keys,
    };
    let net = Net::new(cfg.arch, dims, vb)?;
    let one = |v: u32| Tensor::from_vec(vec![v], (1, 1), &Device::Cpu);
    let batch = Batch {
        kind: one(step.kind)?,
        key: one(step.key)?,
        gap: one(step.gap)?,
        prev_read: one(step.prev_read)?,
        prev_write: one(step.prev_write)?,
        prev_duration: one(step.prev_duration)?,
        hints: Tensor::from_vec(step.hints.to_vec(), (1, 1, step.hints.len()), &Device::Cpu)?,
        confidence: one(step.confidence)?,
    };
    let mut t = Vec::with_capacity(n);
    for _ in 0..n.min(5000) {
        let s = Instant::now();
        let out = net.forward(&batch)?;
        std::hint::black_box(out.to_vec3::<f32>()?);
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    Ok(row("candle one step, batch 1 (default threads)", t))
}

/// Peer: the Markov baseline on the same events.
fn markov_row(warm: &[HistoryRecord], timed: &[HistoryRecord]) -> Row {
    let mut m = Markov::new(2, 3600.0);
    for r in warm {
        m.observe(r);
    }
    let mut t = Vec::with_capacity(timed.len());
    for r in timed {
        let s = Instant::now();
        std::hint::black_box(m.predict(
            &Context {
                ts: r.ts,
                event: &r.event,
            },
            5,
        ));
        m.observe(r);
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    row("markov predict + observe", t)
}
