//! `prewarm eval`: online evaluation of predictors on a history (see `prewarm_predict::eval`).

use std::path::PathBuf;

use anyhow::bail;
use prewarm_predict::eval::evaluate;
use prewarm_predict::{Options, by_name_with};

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
    let options = Options {
        tau: a.tau.as_secs_f64(),
        order: a.order,
        future: Some((&records, a.horizon.as_secs_f64())),
        scored_from: records.get(start).map(|r| r.ts),
    };
    let mut rows = Vec::new();
    for name in &a.models {
        let mut p = by_name_with(name, &options)?;
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
