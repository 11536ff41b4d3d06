//! `prewarm demo`: the README's main command — the whole system on one machine. It generates
//! a workload (tenant sessions with sequential patterns, periodic timers, Zipf popularity,
//! bursts, states that change version; see [`workload`]), snapshots its states into a store
//! in a temporary directory, trains a small GRU on the first part, then serves the rest for
//! real three times — on-demand only, with the best baseline (Markov) driving the engine, and
//! with the learned policy (the GRU mixed with Markov and frequency by online weights) —
//! each time with a coordinator and four agents moving real bytes over loopback
//! ([`phase`]). It reports warm starts, time-to-ready and bytes side by side ([`Outcome`]),
//! and writes `report.html` ([`page`]). [`dataset`] holds the generated data the benchmarks
//! share with it.

pub mod dataset;
mod driver;
mod outcome;
pub mod page;
pub mod phase;
mod prepare;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prewarm_coordinator::Brain;
use prewarm_predict::baselines::{Frequency, Markov};
use prewarm_predict::mixture::Mixture;
use prewarm_predict::neural::{Learned, Model};
use prewarm_report::text;

pub use outcome::Outcome;
pub use phase::{ColdCauses, ExecResult, PhaseError, PhaseResult};
use workload::{Shape, Workload};

/// What the demo runs (the defaults of `prewarm demo` are the README's run).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seed of the generated workload.
    pub seed: u64,
    /// Tenants in the workload.
    pub tenants: usize,
    /// History the model trains on (generated, not served).
    pub history: Duration,
    /// Length of the served part.
    pub serve: Duration,
    /// Session arrivals per second.
    pub sessions_per_s: f64,
    /// Agents (compute capacities), 1 to 64.
    pub capacities: usize,
    /// Cache budget of each agent, bytes.
    pub cache_size: u64,
    /// Time between an event and its execution's start.
    pub lead: Duration,
    /// Price of link time for the predictive policies.
    pub link_price: prewarm_engine::LinkPrice,
    /// Time budget for training the GRU.
    pub train_budget: Duration,
    /// Where to write the HTML report.
    pub report: PathBuf,
    /// Print progress on stdout.
    pub progress: bool,
}

/// Why the demo failed. Settings are named by their `prewarm demo` flags.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A setting is out of range.
    #[error("{0}")]
    Settings(&'static str),
    /// A file or directory could not be made or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The prepared store could not be made.
    #[error(transparent)]
    Store(#[from] prewarm_store::OpenError),
    /// A state could not be snapshotted.
    #[error("snapshotting {id}")]
    Snapshot {
        /// The state.
        id: prewarm_core::ResourceId,
        /// Why (boxed: it is large).
        source: Box<prewarm_snapshot::SnapshotError>,
    },
    /// The GRU did not train.
    #[error("training the GRU")]
    Train(#[source] prewarm_predict::neural::TrainError),
    /// A served run failed.
    #[error(transparent)]
    Phase(#[from] PhaseError),
    /// A task of the demo panicked.
    #[error("a task of the demo failed")]
    Task(#[from] tokio::task::JoinError),
}

impl Settings {
    fn check(&self) -> Result<(), DemoError> {
        if !(1..=64).contains(&self.capacities) {
            return Err(DemoError::Settings("--capacities must be 1 to 64"));
        }
        if self.tenants < 1 || self.sessions_per_s <= 0.0 || self.sessions_per_s.is_nan() {
            return Err(DemoError::Settings(
                "--tenants and --sessions-per-s must be positive",
            ));
        }
        Ok(())
    }

    /// Prints `s` when progress is on.
    fn say(&self, s: String) {
        if self.progress {
            println!("{s}");
        }
    }
}

/// Runs the demo: prepares the store and the model, serves three times, writes the report.
pub async fn run(a: &Settings) -> Result<Outcome, DemoError> {
    let started = Instant::now();
    a.check()?;
    let tmp = tempfile::Builder::new()
        .prefix("prewarm-demo-")
        .tempdir()
        .map_err(|source| DemoError::Io {
            what: "creating the demo's directory".into(),
            source,
        })?;
    let shape = Shape {
        seed: a.seed,
        tenants: a.tenants,
        history_s: a.history.as_secs_f64(),
        serve_s: a.serve.as_secs_f64(),
        sessions_per_s: a.sessions_per_s,
    };
    let work = Arc::new(Workload::generate(&shape));
    announce(a, &tmp, &shape, &work);
    let prepared = prepare::store(a, &work, tmp.path()).await?;
    let model = prepare::model(a, &work).await?;
    let phases = serve_three(a, &work, prepared, tmp.path(), model).await?;
    let seconds = started.elapsed().as_secs_f64();
    let outcome = Outcome {
        phases,
        seconds,
        report: a.report.clone(),
    };
    std::fs::write(
        &a.report,
        page::html(&outcome.phases, &setup_summary(a, &work), seconds),
    )
    .map_err(|source| DemoError::Io {
        what: format!("writing {}", a.report.display()),
        source,
    })?;
    Ok(outcome)
}

fn announce(a: &Settings, tmp: &tempfile::TempDir, shape: &Shape, work: &Workload) {
    let served = work.served().len();
    a.say(format!(
        "prewarm demo in {} — {} states ({}), {} executions: {} in {:.0} s of history, {} served in {:.0} s, {} uploads",
        tmp.path().display(),
        work.states.len(),
        text::bytes(work.total_bytes()),
        work.execs.len(),
        work.execs.len() - served,
        shape.history_s,
        served,
        shape.serve_s,
        work.uploads.len()
    ));
}

/// Serves the workload on demand, with Markov, and with the learned mixture.
async fn serve_three(
    a: &Settings,
    work: &Arc<Workload>,
    prepared: prepare::Prepared,
    dir: &std::path::Path,
    model: Model,
) -> Result<Vec<PhaseResult>, DemoError> {
    let served = work.served().len();
    let setup = |label: &'static str, name: &str, brain: Option<Brain>| phase::Setup {
        label,
        work: work.clone(),
        contents: prepared.contents.clone(),
        base_store: prepared.store.clone(),
        dir: dir.join(name),
        capacities: a.capacities,
        cache_size: a.cache_size,
        lead: a.lead,
        brain,
        progress: a.progress,
    };
    a.say(format!(
        "[3/5] serving {served} executions on-demand only: coordinator + {} agents (cache {} each), events {} ahead",
        a.capacities,
        text::bytes(a.cache_size),
        text::millis(a.lead.as_secs_f64() * 1e3)
    ));
    let s = setup("on-demand", "on-demand", None);
    let cold = tokio::task::spawn_blocking(move || phase::run(s)).await??;

    // What the coordinator would have learned from its agents before now: each key's recent
    // states (the model's context), with times ending where serving begins.
    let before = work.history(prewarm_core::Clock::system().now());
    a.say(format!(
        "[4/5] serving the same {served} executions with the best baseline, Markov, through the same engine (fresh agents and store)"
    ));
    let markov = brain(a, Box::new(Markov::new(2, 3600.0)));
    markov.learn(&before);
    let s = setup("markov", "markov", Some(markov));
    let base = tokio::task::spawn_blocking(move || phase::run(s)).await??;

    a.say(format!(
        "[5/5] serving the same {served} executions with the learned policy: the GRU mixed with Markov and frequency by online weights"
    ));
    let learned = brain(
        a,
        Box::new(Mixture::new(
            "learned",
            vec![
                Box::new(Learned::new(model, 1 << 16)),
                Box::new(Markov::new(2, 3600.0)),
                Box::new(Frequency::new(3600.0)),
            ],
        )),
    );
    learned.learn(&before);
    let s = setup("learned (GRU mixture)", "learned", Some(learned));
    let warm = tokio::task::spawn_blocking(move || phase::run(s)).await??;
    Ok(vec![cold, base, warm])
}

/// The coordinator's engine for a model (the priced planner at the demo's loopback
/// bandwidth, next-use eviction, priced keep-alive).
fn brain(a: &Settings, model: Box<dyn prewarm_core::Predictor>) -> Brain {
    let (rule, keep) = prewarm_engine::rules_for("model", f64::INFINITY);
    Brain::new(
        prewarm_engine::EngineConfig {
            planner: prewarm_engine::PlannerConfig {
                bandwidth: 500e6,
                lead_s: a.lead.as_secs_f64(),
                link_price: a.link_price,
                ..Default::default()
            },
            rule,
            keep,
            ..Default::default()
        },
        Some(model),
    )
}

fn setup_summary(a: &Settings, w: &Workload) -> String {
    format!(
        "seed {}, {} tenants, {} states ({}), {} capacities with {} caches, events {} ahead of their executions, {} served executions, {} uploads",
        a.seed,
        a.tenants,
        w.states.len(),
        text::bytes(w.total_bytes()),
        a.capacities,
        text::bytes(a.cache_size),
        text::millis(a.lead.as_secs_f64() * 1e3),
        w.served().len(),
        w.uploads.len()
    )
}
