//! `prewarm train`: trains a GRU or Transformer on a history (see `prewarm_predict::neural`).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use prewarm_predict::neural::Arch;
use prewarm_predict::neural::train::{TrainOptions, train};

use super::{parse_duration, read_history};
use crate::{output, progress};

/// Which model to train.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Kind {
    /// One GRU layer over per-key sequences.
    Gru,
    /// A small causal Transformer (sliding-window attention).
    Transformer,
}

/// Arguments of `prewarm train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// History file (JSON Lines), e.g. from `prewarm import`.
    #[arg(long)]
    history: PathBuf,
    /// Model architecture.
    #[arg(long)]
    model: Kind,
    /// Directory to write `model.safetensors` and `config.json` into.
    #[arg(long)]
    out: PathBuf,
    /// Train on the earliest share of the history only (e.g. 0.5 to keep the rest for
    /// `prewarm eval --warmup 0.5`).
    #[arg(long, default_value_t = 1.0)]
    until: f64,
    /// Share of the training records (the latest) held back for early stopping.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Maximum epochs.
    #[arg(long, default_value_t = 20)]
    epochs: u32,
    /// Stop after this many epochs without a better validation loss.
    #[arg(long, default_value_t = 2)]
    patience: u32,
    /// Start no epoch likely to end after this much wall time.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    time_budget: std::time::Duration,
    /// Random seed (initialisation and batch order).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Learning rate (default: 3e-3).
    #[arg(long)]
    lr: Option<f64>,
    /// Windows per batch (0: between 8 and 64, so each epoch has ~100 optimiser steps).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Steps per training window (default: 32 for the GRU, twice the window for the
    /// Transformer).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Embedding width (GRU) or model width (Transformer).
    #[arg(long, default_value_t = 64)]
    embed: usize,
    /// GRU hidden width.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Transformer attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Transformer attention window (steps of the key's past).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// At most this many resources get their own token; the rest share hash buckets.
    #[arg(long, default_value_t = 4096)]
    max_resources: usize,
    /// Look-ahead of the horizon target: each step also learns what its key reads this soon.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    horizon: std::time::Duration,
    /// Share of each step's target spread over the horizon's reads (0: next read only).
    #[arg(long, default_value_t = 0.5)]
    horizon_weight: f64,
    /// Print the training summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    if !(a.until > 0.0 && a.until <= 1.0) {
        bail!("--until must be in (0, 1], got {}", a.until);
    }
    let records = read_history(&a.history)?;
    let n = ((records.len() as f64) * a.until).round() as usize;
    let records = &records[..n.max(1)];
    let arch = match a.model {
        Kind::Gru => Arch::Gru {
            embed: a.embed,
            hidden: a.hidden,
        },
        Kind::Transformer => Arch::Transformer {
            dim: a.embed,
            layers: a.layers,
            heads: a.heads,
            window: a.window,
        },
    };
    let mut o = TrainOptions::new(arch);
    o.validation = a.validation;
    o.max_epochs = a.epochs;
    o.patience = a.patience;
    o.time_budget = Some(a.time_budget);
    o.seed = a.seed;
    o.batch = a.batch;
    o.limits.max_resources = a.max_resources;
    o.horizon_s = a.horizon.as_secs_f64();
    o.horizon_weight = a.horizon_weight;
    if let Some(lr) = a.lr {
        o.lr = lr;
    }
    if let Some(t) = a.seq_len {
        o.seq_len = t;
    }
    eprintln!(
        "training a {} on {} records of {} ({} keys' sequences)…",
        arch.name(),
        records.len(),
        a.history.display(),
        records
            .iter()
            .map(|r| r.event.key.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    let meter = std::sync::Arc::new(progress::Meter::new());
    let shown = progress::show(
        format!("train {}", arch.name()),
        meter.clone(),
        progress::Unit::Count("batches"),
    );
    let trained =
        tokio::task::block_in_place(|| train(records, &o, &mut |p| progress::training(&meter, p)));
    shown.finish();
    let mut model = trained.context("training failed")?;
    model
        .save(&a.out)
        .with_context(|| format!("saving the model to {}", a.out.display()))?;
    let s = &model.config.training;
    if a.json {
        output::json(&model.config.training)?;
    } else {
        println!(
            "{} saved to {}: {} records ({} for validation), {} resources ({} named tokens), best epoch {}/{}, \
validation loss {:.4}; on {} validation executions: loss {:.4} → {:.4} calibrated (temperature {:.1}), top-1 {:.3}, top-5 {:.3}; {:.1} s ({:.0} steps/s)",
            arch.name(),
            a.out.display(),
            s.records,
            s.validation_records,
            s.resources,
            model.config.vocab.resources.len(),
            s.best_epoch,
            s.epochs,
            s.validation_loss,
            s.calibration_sample,
            s.sample_loss,
            s.calibrated_loss,
            model.config.temperature,
            s.validation_top1,
            s.validation_top5,
            s.seconds,
            s.steps_per_s
        );
    }
    Ok(0)
}
