//! `prewarm bench predict`: inference cost per event of a learned model, single-threaded —
//! the serving kernel's one step (hot, one key), full `predict` + `observe` over a history
//! (many keys), and in the same run the same weights through candle (one step, batch 1, its
//! default thread pool) and the Markov baseline as peers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId};
use prewarm_predict::baselines::Markov;
use prewarm_predict::eval::percentile;
use prewarm_predict::neural::features::KeyTail;
use prewarm_predict::neural::kernel::Precision;
use prewarm_predict::neural::net::{Batch, Dims, Net};
use prewarm_predict::neural::train::untrained;
use prewarm_predict::neural::{Arch, Learned, Model};
use prewarm_predict::{Context, Predictor};
use serde::Serialize;

use crate::cmd::read_history;
use crate::output;

/// Arguments of `prewarm bench predict`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A trained model directory (default: an untrained GRU, embeddings 64, hidden 128, over
    /// 512 resources — the size the target names).
    #[arg(long)]
    model: Option<PathBuf>,
    /// History to replay (default: a generated one, 64 keys over 512 resources).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Events to time.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    what: String,
    events: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
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

pub(super) fn generated(n: usize) -> anyhow::Result<Vec<HistoryRecord>> {
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

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let records = match &a.history {
        Some(h) => read_history(h)?,
        None => generated(a.events.max(1024))?,
    };
    let model = match &a.model {
        Some(dir) => Model::load(dir).with_context(|| format!("loading {}", dir.display()))?,
        None => untrained(&records, Arch::GRU, 1).context("building the model")?,
    };
    let cfg = model.config.clone();
    let tensors = model.tensors.clone();
    let rows = tokio::task::block_in_place(|| measure(&a, &records, model, &cfg, tensors))?;
    if a.json {
        output::json(&rows)?;
    } else {
        println!(
            "{} over {} resource tokens ({:?}); {} events",
            cfg.arch.name(),
            cfg.dims.resources,
            cfg.arch,
            a.events
        );
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
        println!(
            "{}",
            output::table(
                &["per event", "p50 µs", "p99 µs", "mean µs", "vs kernel"],
                &table
            )
        );
    }
    Ok(0)
}

fn measure(
    a: &Args,
    records: &[HistoryRecord],
    model: Model,
    cfg: &prewarm_predict::neural::model::ModelConfig,
    tensors: std::collections::HashMap<String, Tensor>,
) -> anyhow::Result<Vec<Row>> {
    let n = a.events.min(records.len());
    let timed = &records[records.len() - n..];
    let mut rows = Vec::new();

    // 1. The kernel alone: one step and the output layer, one key, hot caches; with the
    //    default arithmetic (f16 weights where the CPU has F16C) and with f32 weights.
    let tail = KeyTail::default();
    let r0 = &timed[0];
    let step = tail.step(&cfg.vocab, &r0.event.kind, &r0.event.key, r0.ts);
    let mut model = model;
    let default = model.kernel.precision();
    for precision in [default, Precision::F32] {
        model.kernel.set_precision(precision);
        let mut state = model.kernel.zero_state();
        let mut logits = Vec::new();
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            let s = Instant::now();
            state = model.kernel.step(&state, &step);
            model.kernel.logits(&state, &step, &mut logits);
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

    // 2. The predictor: predict top 5, then observe, across keys.
    let mut p = Learned::new(model, 1 << 20);
    for r in &records[..records.len() - n] {
        p.observe(r);
    }
    let (mut tp, mut to) = (Vec::with_capacity(n), Vec::with_capacity(n));
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
    rows.push(row(&format!("{} predict (top 5)", cfg.arch.name()), tp));
    rows.push(row(&format!("{} predict + observe", cfg.arch.name()), both));

    // 3. Peer: the same weights through candle, one step of batch 1.
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
    rows.push(row("candle one step, batch 1 (default threads)", t));

    // 4. Peer: the Markov baseline on the same events.
    let mut m = Markov::new(2, 3600.0);
    for r in &records[..records.len() - n] {
        m.observe(r);
    }
    let mut t = Vec::with_capacity(n);
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
    rows.push(row("markov predict + observe", t));
    Ok(rows)
}
