//! `prewarm eval`: online evaluation of predictors on a history (see `prewarm_predict::eval`).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use prewarm_predict::Predictor;
use prewarm_predict::baselines::{Frequency, Markov, Oracle};
use prewarm_predict::eval::evaluate;
use prewarm_predict::histogram::Histogram;
use prewarm_predict::neural::Learned;

use super::{parse_duration, read_history};
use crate::output;

/// Arguments of `prewarm eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// History file (JSON Lines), e.g. from `prewarm import`.
    #[arg(long)]
    history: PathBuf,
    /// Predictors to compare: frequency, markov, histogram, oracle, and trained models as
    /// gru:DIR or transformer:DIR (from `prewarm train`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "frequency,markov,histogram,oracle"
    )]
    models: Vec<String>,
    /// Share of the history (the earliest part) used only for training.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Time constant of recency weighting.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    tau: std::time::Duration,
    /// Look-ahead horizon for the recall and precision figures.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    horizon: std::time::Duration,
    /// Markov order.
    #[arg(long, default_value_t = 2)]
    order: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    if !(0.0..1.0).contains(&a.warmup) {
        bail!("--warmup must be in [0, 1), got {}", a.warmup);
    }
    let records = read_history(&a.history)?;
    let start = ((records.len() as f64) * a.warmup) as usize;
    let tau = a.tau.as_secs_f64();
    let mut rows = Vec::new();
    for name in &a.models {
        let mut p: Box<dyn Predictor> = match name.as_str() {
            "frequency" => Box::new(Frequency::new(tau)),
            "markov" => Box::new(Markov::new(a.order, tau)),
            "histogram" => Box::new(Histogram::new()),
            "oracle" => Box::new(Oracle::new(&records, a.horizon.as_secs_f64())),
            spec => learned(spec, &records, start)?,
        };
        let recs = &records;
        let (warmup, horizon) = (a.warmup, a.horizon.as_secs_f64());
        rows.push(tokio::task::block_in_place(|| {
            evaluate(p.as_mut(), recs, warmup, horizon)
        }));
    }
    if a.json {
        output::json(&rows)?;
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.model.clone(),
                    r.events.to_string(),
                    format!("{:.3}", r.top1),
                    format!("{:.3}", r.top5),
                    format!("{:.3}", r.log_loss),
                    format!("{:.3}", r.recall5_horizon),
                    format!("{:.3}", r.recall5_key_horizon),
                    format!("{:.3}", r.precision_p50_horizon),
                    format!("{:.3}", r.calibration_error),
                    format!("{:.1}", r.p50_us),
                    format!("{:.1}", r.p99_us),
                    format!("{:.1}", r.memory_bytes as f64 / (1u64 << 20) as f64),
                ]
            })
            .collect();
        let h = format!("{:.0}s", a.horizon.as_secs_f64());
        let (r, rk) = (format!("recall@5 {h}"), format!("key recall@5 {h}"));
        let header = [
            "model",
            "events",
            "top-1",
            "top-5",
            "log-loss",
            &r,
            &rk,
            "prec. p≥.5",
            "calib. err",
            "p50 µs",
            "p99 µs",
            "mem MiB",
        ];
        println!("{}", output::table(&header, &table));
    }
    Ok(0)
}

/// Loads `gru:DIR` or `transformer:DIR`, refusing a model trained on the records it would be
/// scored on.
fn learned(
    spec: &str,
    records: &[prewarm_core::HistoryRecord],
    start: usize,
) -> anyhow::Result<Box<dyn Predictor>> {
    let Some((kind, dir)) = spec.split_once(':') else {
        bail!(
            "unknown model {spec:?} (frequency, markov, histogram, oracle, gru:DIR, transformer:DIR)"
        );
    };
    if kind != "gru" && kind != "transformer" {
        bail!("unknown model kind {kind:?} in {spec:?} (gru:DIR or transformer:DIR)");
    }
    let p = Learned::load(std::path::Path::new(dir), 1 << 20)
        .with_context(|| format!("loading model {spec}"))?;
    let cfg = &p.model().config;
    if cfg.arch.name() != kind {
        bail!("{dir} holds a {} model, not a {kind}", cfg.arch.name());
    }
    if let Some(first) = records.get(start)
        && first.ts < cfg.training.last_ts
    {
        bail!(
            "{spec} was trained on records up to t={} but the scored part starts at t={}: \
                 train with --until no larger than --warmup, so the model is scored on the future",
            cfg.training.last_ts,
            first.ts
        );
    }
    Ok(Box::new(p))
}
