//! `prewarm replay`: the trace-replay simulator (see `prewarm_sim`) over a history, one run
//! per policy (and per cache size with `--sweep`), as a table, JSON and an HTML report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use prewarm_core::{ByteSize, HistoryRecord};
use prewarm_predict::histogram::Histogram;
use prewarm_predict::neural::{Arch, TrainOptions, train};
use prewarm_predict::{Options, SpecError, by_name_with};
use prewarm_report::Replay;
use prewarm_sim::retrain::{Rounds, Schedule};
use prewarm_sim::retune::Retuner;
use prewarm_sim::tune::{Tuned, tune};
use prewarm_sim::{Policy, PolicyKind, SimConfig, SimReport, replay_metered, replay_retuned};

use super::{parse_duration, read_history};
use crate::{output, progress};
use prewarm_report::replay_text as text;

/// Arguments of `prewarm replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// History file (JSON Lines), e.g. from `prewarm import`.
    #[arg(long)]
    history: PathBuf,
    /// Policies: none, lru, s3fifo, gdsf, histogram, frequency, markov, gru, transformer,
    /// mixture (the GRU, Markov and frequency mixed by online weights; `mixture:SPEC+SPEC`
    /// names other members),
    /// auto (of markov, gru, transformer and mixture, the model and settings whose replay of
    /// the warm-up part started the most executions warm), oracle; gru, transformer and
    /// mixture train in-process on the warm-up share, or load gru:DIR / transformer:DIR.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,lru,s3fifo,gdsf,histogram,frequency,markov,oracle"
    )]
    policies: Vec<String>,
    /// Compute capacities.
    #[arg(long, default_value_t = 4)]
    capacities: usize,
    /// Cache size per capacity.
    #[arg(long, default_value = "4GiB")]
    cache_size: ByteSize,
    /// Link bandwidth per capacity, bytes per second.
    #[arg(long, default_value = "125MB")]
    bandwidth: ByteSize,
    /// Fixed cost of one transfer.
    #[arg(long, value_parser = parse_duration, default_value = "2ms")]
    latency: Duration,
    /// Time between an event and the start of its execution.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    lead: Duration,
    /// Fixed keep-alive after use for lru, s3fifo and gdsf (default: until pressure).
    #[arg(long, value_parser = parse_duration)]
    keep_alive: Option<Duration>,
    /// Price of cache memory for the model-driven policies, in seconds of cold start per
    /// GB·s held (default 0: kept until pressure).
    #[arg(long, default_value_t = 0.0)]
    memory_price: f64,
    /// Price of the link time a prefetch nobody reads takes, for the model-driven policies:
    /// seconds of cold start per second of link time, or `queue` (by how busy the link is:
    /// free when idle, a cold start's worth once queued prefetches fill the lead).
    #[arg(long, default_value = "1")]
    link_price: prewarm_engine::LinkPrice,
    /// Plan with the models' probabilities calibrated online against how often such
    /// predictions came true, not as the models state them.
    #[arg(long)]
    calibrate: bool,
    /// Offer each state just read to one more capacity, taken when the calibrated chance it
    /// is used there pays for its link time and what it displaces (model-driven policies).
    #[arg(long)]
    spread: bool,
    /// After each execution, pre-warm what the model expects the key to read next on the
    /// capacity that ran it, each taken when the planner prices it positive with the
    /// model's probability (model-driven policies; for histories whose events name their
    /// states, `import --named`, and for `--lead 0`).
    #[arg(long)]
    ahead: bool,
    /// Size of a state whose history records carry none (default: the median of the sizes
    /// the history does give, else 64 MiB).
    #[arg(long)]
    default_size: Option<ByteSize>,
    /// Share of the history replayed before counting (predictors learn; models train on it).
    #[arg(long, default_value_t = 0.2)]
    warmup: f64,
    /// Predictions per event.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// The planner's probability threshold (0: the priced costs alone decide).
    #[arg(long, default_value_t = 0.0)]
    threshold: f64,
    /// Time budget for training each in-process model (and each retraining round).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    train_budget: Duration,
    /// Retrain the in-process gru, transformer and mixture during the replay, as the
    /// coordinator's `--retrain-every` does live (champion/challenger rounds), each time the
    /// history observed has grown by this factor since the last round (> 1, e.g. 1.5; 0:
    /// never, the warm-up model serves throughout). Off by default, like retraining in the
    /// coordinator: on the shared traces it moved warm starts by −0.5 to +0.6 points at 2.5×
    /// the replay time (BENCHMARKS.md, "Retraining during the replay").
    #[arg(long, default_value_t = 0.0)]
    retrain_growth: f64,
    /// Learn the link price (`1` or `queue`) and spreading for each model-driven policy and
    /// cache size from the warm-up part: each candidate is replayed over it and the given
    /// setting is replaced only by one whose gain passes a significance test
    /// (`prewarm_sim::tune`). Prints the chosen settings as the coordinator's flags.
    #[arg(long)]
    tune: bool,
    /// Re-learn the tuned policies' settings while replaying (`auto`, and every model-driven
    /// policy under `--tune`): every warm-up's length of executions, the newest such window
    /// replayed under each setting with the serving model, switched only on evidence
    /// (`prewarm_sim::retune`), as the coordinator does between retraining rounds.
    #[arg(long)]
    retune: bool,
    /// Also replay at these cache sizes (comma-separated) for the warm-start vs memory plot.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<ByteSize>,
    /// Write an HTML report (opens offline) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Models trained in this run, saved once and loaded for every replay that needs them.
struct Trained {
    dir: tempfile::TempDir,
    budget: Duration,
    /// Retraining rounds during the replays (`None`: off).
    rounds: Option<Rounds>,
}

/// Trains the model `arch` on `train_on` into the run's model directory the first time it is
/// needed; returns the directory.
fn trained_dir(
    arch_name: &str,
    train_on: &[HistoryRecord],
    trained: &Trained,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = trained.dir.path().join(arch_name);
    if !dir.exists() {
        let arch = if arch_name == "gru" {
            Arch::GRU
        } else {
            Arch::TRANSFORMER
        };
        let mut o = TrainOptions::new(arch);
        o.time_budget = Some(trained.budget);
        eprintln!(
            "training a {arch_name} on the first {} records (≤ {:?})…",
            train_on.len(),
            trained.budget
        );
        let meter = std::sync::Arc::new(progress::Meter::new());
        let shown = progress::show(
            format!("train {arch_name}"),
            meter.clone(),
            progress::Unit::Count("batches"),
        );
        let trained = tokio::task::block_in_place(|| {
            train(train_on, &o, &mut |p| progress::training(&meter, p))
        });
        shown.finish();
        let mut model = trained.with_context(|| format!("training the {arch_name}"))?;
        model
            .save(&dir)
            .with_context(|| format!("saving the {arch_name}"))?;
    }
    Ok(dir)
}

/// Builds the policy `name`: the simulator's own kinds here, predictors through
/// [`prewarm_predict::by_name_with`] (bare `gru`, `transformer` and `mixture` train on
/// `train_on` the first time they are needed; a model trained on scored records is refused).
fn policy(
    name: &str,
    train_on: &[HistoryRecord],
    scored_from: Option<f64>,
    trained: &Trained,
) -> anyhow::Result<Policy> {
    let kind = match name {
        "none" => PolicyKind::None,
        "lru" => PolicyKind::Lru,
        "s3fifo" => PolicyKind::S3Fifo,
        "gdsf" => PolicyKind::Gdsf,
        "histogram" => PolicyKind::Histogram(Histogram::new()),
        "oracle" => PolicyKind::Oracle,
        "belady" => PolicyKind::Belady,
        spec => {
            let spec = match spec {
                "gru" | "transformer" => {
                    format!("{spec}:{}", trained_dir(spec, train_on, trained)?.display())
                }
                "mixture" => format!(
                    "mixture:gru:{}",
                    trained_dir("gru", train_on, trained)?.display()
                ),
                other => other.to_owned(),
            };
            let o = Options {
                scored_from,
                ..Options::default()
            };
            match by_name_with(&spec, &o) {
                Ok(p) => PolicyKind::Predictive(p),
                Err(SpecError::Unknown(_)) => bail!(
                    "unknown policy {name:?} (none, lru, s3fifo, gdsf, histogram, frequency, markov, gru, \
                     transformer, mixture, auto, oracle, belady, gru:DIR, transformer:DIR, mixture:SPEC)"
                ),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let policy = Policy::new(name.split(':').next().unwrap_or(name), kind);
    let arch = match name {
        "gru" | "mixture" => "gru",
        "transformer" => "transformer",
        _ => return Ok(policy),
    };
    let Some(rounds) = trained.rounds.as_ref() else {
        return Ok(policy);
    };
    let dir = trained_dir(arch, train_on, trained)?;
    let champion = prewarm_predict::neural::Model::load(&dir)
        .with_context(|| format!("loading the {arch} for retraining"))?;
    Ok(policy.with_retrainer(rounds.retrainer(arch, champion)))
}

/// Whether `--tune` learns settings for the policy called `name` (those the planner prices
/// with a model's predictions: not the model-free baselines, Azure's windows or the oracle).
fn tunable(name: &str) -> bool {
    !prewarm_engine::model_free(name) && !matches!(name, "histogram" | "oracle" | "belady")
}

/// The models the `auto` policy chooses among, the one kept without evidence first.
const AUTO_MODELS: [&str; 4] = ["markov", "gru", "transformer", "mixture"];

/// What tuning keeps across replays: the choices made, the models trained for the trials
/// (on the warm-up's first half only), and whether every model-driven policy is tuned
/// (`--tune`) or only `auto`.
struct Tuning<'a> {
    log: &'a mut Vec<(u64, Tuned)>,
    trained: &'a Trained,
    all: bool,
    retune: bool,
}

/// The settings (and, for `auto`, the model) learned for `name` from the warm-up part and
/// logged in `tuning`, when it is tuned; else `cfg` and `name`.
fn tuned_cfg(
    name: &str,
    records: &[HistoryRecord],
    cfg: &SimConfig,
    tuning: &mut Tuning<'_>,
) -> anyhow::Result<(SimConfig, String)> {
    let models: &[&str] = match name {
        "auto" => &AUTO_MODELS,
        n if tuning.all && tunable(n) => &[n],
        _ => return Ok((cfg.clone(), name.to_owned())),
    };
    let start = ((records.len() as f64) * cfg.warmup) as usize;
    let warmup = &records[..start];
    // The trials count the warm-up's second half: a model trained for them sees only the
    // first half (trained on all of it, its trials would be in-sample and favour settings
    // that trust it).
    let half = start / 2;
    let scored_from = records.get(half).map(|r| r.ts);
    let t0 = std::time::Instant::now();
    let trained = tuning.trained;
    let tuned = tokio::task::block_in_place(|| {
        tune(name, warmup, cfg, models, |m| {
            policy(m, &records[..half.max(1)], scored_from, trained)
        })
    })?;
    eprintln!(
        "  {} ({:.1} s)",
        text::tuned_line(cfg.cache_bytes, &tuned),
        t0.elapsed().as_secs_f64()
    );
    let out = (tuned.chosen.apply(cfg), tuned.model.clone());
    tuning.log.push((cfg.cache_bytes, tuned));
    Ok(out)
}

/// Replays one policy, its settings re-learned while it runs when `name` was tuned and
/// `--retune` asks for it (the rounds logged with its tuning).
fn replay_one(
    name: &str,
    model: &str,
    records: &[HistoryRecord],
    cfg: &SimConfig,
    trained: &Trained,
    tuning: &mut Tuning<'_>,
    meter: &progress::Meter,
) -> anyhow::Result<SimReport> {
    let start = ((records.len() as f64) * cfg.warmup) as usize;
    let scored_from = records.get(start).map(|r| r.ts);
    let train_on = &records[..start.max(1)];
    let mut p = policy(model, train_on, scored_from, trained)?;
    if name == "auto" {
        p.name = name.to_owned();
    }
    let tuned = tuning.log.last_mut().filter(|t| t.1.policy == name);
    let Some(tuned) = tuned.filter(|_| tuning.retune) else {
        return Ok(tokio::task::block_in_place(|| {
            replay_metered(records, p, cfg, meter)
        }));
    };
    let mut retuner = Retuner::new(start, cfg, model, || {
        let mut p = policy(model, train_on, scored_from, trained).ok()?;
        p.retrainer = None;
        Some(p)
    });
    let r = tokio::task::block_in_place(|| replay_retuned(records, p, cfg, meter, &mut retuner));
    for x in &retuner.log {
        eprintln!("  {}", text::retuned_line(name, x));
    }
    tuned.1.rounds = retuner.log;
    Ok(r)
}

/// Replays every policy at `cfg`, filling in the oracle share; tuned policies (`auto`, and
/// with `--tune` every model-driven one) run with what was learned from the warm-up part,
/// logged in `tuning`.
fn run_all(
    records: &[HistoryRecord],
    names: &[String],
    cfg: &SimConfig,
    trained: &Trained,
    tuning: &mut Tuning<'_>,
) -> anyhow::Result<Vec<SimReport>> {
    let mut rows = Vec::new();
    for name in names {
        let (cfg, model) = &tuned_cfg(name, records, cfg, tuning)?;
        let t0 = std::time::Instant::now();
        let logged = trained.rounds.as_ref().map_or(0, |r| r.log().len());
        let meter = std::sync::Arc::new(progress::Meter::new());
        let shown = progress::show(
            format!("replay {name}"),
            meter.clone(),
            progress::Unit::Count("executions"),
        );
        let r = replay_one(name, model, records, cfg, trained, tuning, &meter)?;
        shown.finish();
        for x in trained.rounds.iter().flat_map(|r| r.log()).skip(logged) {
            eprintln!("  {}", text::round_line(&x));
        }
        eprintln!(
            "  {:<12} cache {:>9}: warm {:.1}%  ({:.1} s)",
            r.policy,
            output::bytes(cfg.cache_bytes),
            100.0 * r.warm_rate,
            t0.elapsed().as_secs_f64()
        );
        rows.push(r);
    }
    if let Some(o) = rows.iter().find(|r| r.policy == "oracle").map(|r| r.warm) {
        for r in &mut rows {
            r.oracle_share = (o > 0).then(|| r.warm as f64 / o as f64);
        }
    }
    Ok(rows)
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    if !(0.0..1.0).contains(&a.warmup) {
        bail!("--warmup must be in [0, 1), got {}", a.warmup);
    }
    if a.capacities == 0 || a.bandwidth.0 == 0 {
        bail!("--capacities and --bandwidth must be positive");
    }
    let records = read_history(&a.history)?;
    let mut cfg = SimConfig {
        capacities: a.capacities,
        cache_bytes: a.cache_size.0,
        bandwidth: a.bandwidth.0 as f64,
        latency_s: a.latency.as_secs_f64(),
        lead_s: a.lead.as_secs_f64(),
        keep_alive_s: a.keep_alive.map_or(f64::INFINITY, |d| d.as_secs_f64()),
        memory_price: a.memory_price,
        default_bytes: a
            .default_size
            .map_or_else(|| median_size(&records), |b| b.0),
        top_k: a.top_k,
        warmup: a.warmup,
        calibrate: a.calibrate,
        spread: a.spread,
        ahead: a.ahead,
        ..SimConfig::default()
    };
    cfg.planner.threshold = a.threshold;
    cfg.planner.link_price = a.link_price;
    eprintln!(
        "replaying {} records of {} under {} policies…",
        records.len(),
        a.history.display(),
        a.policies.len()
    );
    if a.retrain_growth != 0.0 && (a.retrain_growth.is_nan() || a.retrain_growth <= 1.0) {
        bail!(
            "--retrain-growth must be above 1 (or 0: never), got {}",
            a.retrain_growth
        );
    }
    let trained = Trained {
        dir: tempfile::tempdir().context("a temporary directory for trained models")?,
        budget: a.train_budget,
        rounds: (a.retrain_growth > 1.0).then(|| {
            Rounds::new(Schedule {
                first: ((records.len() as f64) * cfg.warmup) as usize,
                growth: a.retrain_growth,
                round: prewarm_predict::neural::retrain::RetrainConfig {
                    budget: a.train_budget,
                    ..Default::default()
                },
                // Judged by a replay at the base cache size, as the coordinator's rounds
                // are by default (`--retrain-judge replay`).
                judge: Some(cfg.clone()),
            })
        }),
    };
    let mut log = Vec::new();
    let for_trials = Trained {
        dir: tempfile::tempdir().context("a temporary directory for trained models")?,
        budget: a.train_budget,
        rounds: None,
    };
    let mut tuning = Tuning {
        log: &mut log,
        trained: &for_trials,
        all: a.tune,
        retune: a.retune,
    };
    let rows = run_all(&records, &a.policies, &cfg, &trained, &mut tuning)?;
    let mut sweep = Vec::new();
    for size in &a.sweep {
        let c = SimConfig {
            cache_bytes: size.0,
            ..cfg.clone()
        };
        let rows = run_all(&records, &a.policies, &c, &trained, &mut tuning)?;
        sweep.push((size.0, rows));
    }
    let mut all = vec![(cfg.cache_bytes, rows.clone())];
    all.extend(sweep.iter().cloned());
    all.sort_by_key(|r| r.0);
    let ceiling = prewarm_sim::ceiling::ceiling(&records, cfg.warmup);
    let standings = prewarm_sim::pareto::standings(&all, Some(ceiling.warm_rate));
    let out = Replay {
        history: a.history.display().to_string(),
        records: records.len(),
        config: cfg,
        rows,
        sweep,
        standings,
        ceiling,
        retraining: trained.rounds.as_ref().map(Rounds::log).unwrap_or_default(),
        tuning: log,
    };
    emit(&a, &out)?;
    Ok(0)
}

/// Writes the report and prints the tables (or the JSON).
fn emit(a: &Args, out: &Replay) -> anyhow::Result<()> {
    if let Some(path) = &a.report {
        std::fs::write(path, prewarm_report::replay::html(out))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if a.json {
        return output::json(out);
    }
    println!("{}", text::table(&out.rows));
    println!("\n{}", text::ceiling_line(&out.ceiling));
    for (cache, t) in &out.tuning {
        println!("{}", text::tuned_line(*cache, t));
    }
    if !out.standings.is_empty() {
        println!("\n{}", text::standings_table(&out.standings));
    }
    Ok(())
}

/// The median of the sizes the history gives (per resource, largest seen), else 64 MiB.
fn median_size(records: &[HistoryRecord]) -> u64 {
    let mut sizes: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for r in records.iter().flat_map(|r| &r.reads) {
        let s = sizes.entry(r.resource.as_str()).or_default();
        *s = (*s).max(r.bytes);
    }
    let mut v: Vec<u64> = sizes.into_values().filter(|b| *b > 0).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(64 << 20)
}
