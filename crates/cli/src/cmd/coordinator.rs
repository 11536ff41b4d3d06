//! `prewarm coordinator`: serves a store to agents (control plane, data plane, invalidations,
//! `/metrics`) until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use prewarm_coordinator::CoordinatorConfig;

use super::{HttpLimitsArg, StoreArg, TlsArg, TokenArg, TokensArg, parse_duration};

/// Arguments of `prewarm coordinator`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    #[allow(dead_code)] // acted on by crate::config around parsing
    config: super::ConfigArg,
    #[command(flatten)]
    store: StoreArg,
    /// gRPC (and /metrics) address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Data-plane TCP address (default: the --listen host, port + 1).
    #[arg(long)]
    data_listen: Option<SocketAddr>,
    /// Unix socket for agents on this host (default: prewarm-<port>.sock in the temp dir;
    /// "none" to disable).
    #[arg(long, value_name = "PATH|none")]
    data_unix: Option<String>,
    /// How often to check the store for new versions of held resources.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    poll: Duration,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tokens: TokensArg,
    #[command(flatten)]
    http: HttpLimitsArg,
    #[command(flatten)]
    tls: TlsArg,
    /// Events per second each token may post to /v1/events (bursts up to one batch of
    /// 10,000); over it: 429 with Retry-After (default: no limit).
    #[arg(long, value_name = "N")]
    events_rate: Option<std::num::NonZeroU32>,
    /// Event bodies (POST /v1/events) read and handled at once; a request beyond waits for
    /// a slot (its body unread) up to --events-queue-wait, then gets 503 `overloaded`.
    #[arg(long, default_value_t = 16, value_name = "N")]
    events_concurrency: usize,
    /// How long a POST /v1/events waits for a slot before it is shed.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    events_queue_wait: Duration,
    /// The policy of the decision engine: a model (markov, frequency, histogram, gru:DIR,
    /// transformer:DIR from `prewarm train`; SIGHUP reloads DIR), a model-free baseline
    /// (lru, s3fifo, gdsf: placement, eviction rule and keep-alive only), or none (no engine:
    /// transfers by request only).
    #[arg(long, default_value = "markov")]
    model: String,
    /// Smallest predicted probability the planner acts on (0: the priced costs alone
    /// decide).
    #[arg(long, default_value_t = 0.0)]
    threshold: f64,
    /// Price of cache memory, in seconds of cold start per GB·s held (0: states are kept
    /// until pressure evicts them).
    #[arg(long, default_value_t = 0.0)]
    memory_price: f64,
    /// Price of the link time a prefetch nobody reads takes: seconds of cold start per
    /// second of link time, or `queue` (by how busy the link is: free when idle, a cold
    /// start's worth once queued prefetches fill the lead).
    #[arg(long, default_value = "1")]
    link_price: prewarm_engine::LinkPrice,
    /// Fixed keep-alive after use for lru, s3fifo and gdsf (default: until pressure).
    #[arg(long, value_parser = parse_duration)]
    keep_alive: Option<Duration>,
    /// Typical time from an event to the start of its execution (how late a prefetch may
    /// start).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    lead: Duration,
    /// Cap on predictive bytes in flight to one capacity.
    #[arg(long, default_value = "1GiB")]
    max_in_flight: prewarm_core::ByteSize,
    /// Also consume events from this NATS server (JetStream; durable consumer, each message
    /// acknowledged after its events were handled). A cluster's servers separated by commas
    /// (`nats://a:4222,nats://b:4222`): any one of them reachable is enough.
    #[arg(long, value_name = "URL[,URL…]")]
    nats: Option<String>,
    /// Replicas of the events stream when the coordinator creates it (3 on a three-node
    /// cluster: the stream survives the loss of one node).
    #[arg(long, default_value_t = 1, value_name = "N")]
    nats_replicas: usize,
    /// The NATS subject events are published on.
    #[arg(long, default_value = "prewarm.events")]
    subject: String,
    /// The JetStream stream holding the subject (created if missing).
    #[arg(long, default_value = "PREWARM_EVENTS")]
    nats_stream: String,
    /// The durable consumer's name (keep it across restarts: no event is lost).
    #[arg(long, default_value = "prewarm-coordinator")]
    nats_durable: String,
    /// How long NATS waits for a delivered message's acknowledgement before it delivers it
    /// again: after a coordinator dies, the events it had taken but not handled come back
    /// to its successor this much later (set when the consumer is created or updated).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    nats_ack_wait: Duration,
    /// Also feed the events of this history file (JSON Lines) through the predictive loop.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Replay speed: 1 = as recorded, 60 = a minute per second, 0 = as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    replay_speed: f64,
    /// Link bandwidth to a capacity, bytes/s (prices the time a transfer saves).
    #[arg(long, default_value = "125MB")]
    bandwidth: prewarm_core::ByteSize,
    /// Retrain a gru:DIR or transformer:DIR model (alone or a mixture's member) in the background this often from the
    /// agents' history; the challenger serves (and is saved to DIR) only when it does better
    /// than the serving model on the newest held-back history (see --retrain-judge).
    #[arg(long, value_parser = parse_duration)]
    retrain_every: Option<Duration>,
    /// Wall-clock training budget of one retraining round.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    retrain_budget: Duration,
    /// History records kept for retraining (the newest).
    #[arg(long, default_value_t = 200_000)]
    retrain_history: usize,
    /// How a retraining round compares the challenger with the serving model on the
    /// held-back history: `replay` (the share of executions each one's decisions start warm
    /// in a replay of it through the decision engine, on a fleet of the attached capacities'
    /// count and median budget; log-loss breaks ties) or `log-loss`.
    #[arg(long, value_enum, default_value = "replay")]
    retrain_judge: RetrainJudge,
}

/// See `--retrain-judge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RetrainJudge {
    /// The replayed warm-start rate, then log-loss.
    Replay,
    /// Log-loss alone.
    LogLoss,
}

/// The retraining settings `a` asks for (`None`: no retraining).
fn retraining(a: &Args) -> anyhow::Result<Option<prewarm_coordinator::RetrainSettings>> {
    let Some(every) = a.retrain_every else {
        return Ok(None);
    };
    // A mixture's learned member is retrained and swapped inside the mixture (its other
    // members and weights stay).
    let learned = a.model.strip_prefix("mixture:").unwrap_or(&a.model);
    let dir = match learned.split_once(':') {
        Some(("gru" | "transformer", dir)) => PathBuf::from(dir),
        _ => anyhow::bail!(
            "--retrain-every needs a learned model (--model gru:DIR, transformer:DIR or \
             mixture:gru:DIR), not {:?}",
            a.model
        ),
    };
    if every.is_zero() || a.retrain_history < 100 {
        anyhow::bail!("--retrain-every must be positive and --retrain-history at least 100");
    }
    Ok(Some(prewarm_coordinator::RetrainSettings {
        every,
        dir,
        history: a.retrain_history,
        round: prewarm_predict::neural::retrain::RetrainConfig {
            budget: a.retrain_budget,
            ..Default::default()
        },
        replay_judge: a.retrain_judge == RetrainJudge::Replay,
    }))
}

/// The predictor `spec` names (`None` for a model-free policy).
fn model(spec: &str) -> anyhow::Result<Option<Box<dyn prewarm_predict::Predictor>>> {
    if prewarm_engine::model_free(spec) {
        return Ok(None);
    }
    prewarm_predict::by_name(spec)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--model: {e} (or lru, s3fifo, gdsf, none)"))
}

/// The engine of policy `a.model` (`None` for "none").
fn engine(a: &Args) -> anyhow::Result<Option<prewarm_coordinator::Brain>> {
    if a.model == "none" {
        return Ok(None);
    }
    let family = a.model.split(':').next().unwrap_or(&a.model);
    let keep = a.keep_alive.map_or(f64::INFINITY, |d| d.as_secs_f64());
    let (rule, keep) = prewarm_engine::rules_for(family, keep);
    let cfg = prewarm_engine::EngineConfig {
        planner: prewarm_engine::PlannerConfig {
            threshold: a.threshold,
            max_in_flight: a.max_in_flight.0,
            bandwidth: a.bandwidth.0 as f64,
            lead_s: a.lead.as_secs_f64(),
            memory_price: a.memory_price,
            link_price: a.link_price,
            ..Default::default()
        },
        rule,
        keep,
        ..Default::default()
    };
    Ok(Some(prewarm_coordinator::Brain::new(cfg, model(&a.model)?)))
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let tls = a.tls.server()?; // a bad file stops the start before the store is touched
    let store = a.store.open_or_create().await?;
    let data_listen = a
        .data_listen
        .unwrap_or_else(|| SocketAddr::new(a.listen.ip(), a.listen.port().wrapping_add(1)));
    let data_unix = match a.data_unix.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => Some(std::env::temp_dir().join(format!("prewarm-{}.sock", a.listen.port()))),
    };
    let cfg = CoordinatorConfig {
        listen: a.listen,
        data_listen,
        data_unix,
        token: a.token.load()?,
        poll: a.poll,
        clock: prewarm_core::Clock::system(),
        http: a.http.limits()?,
        events_rate: a.events_rate,
        ingest: prewarm_coordinator::limits::Ingest {
            concurrent: a.events_concurrency,
            wait: a.events_queue_wait,
        },
        tls,
    };
    let tls = TlsArg::label(cfg.tls.as_ref());
    let tokens = a.tokens.load()?;
    let brain = engine(&a)?;
    let retrain = retraining(&a)?;
    let running = prewarm_coordinator::start_with(store, cfg, brain, tokens)
        .await
        .context("starting the coordinator")?;
    if let Some(r) = retrain {
        tokio::spawn(prewarm_coordinator::run_retraining(
            running.coordinator.clone(),
            r,
        ));
    }
    eprintln!(
        "prewarm coordinator {}: gRPC and /metrics on {}{tls}, data plane on {}{tls}{}",
        running.coordinator.instance,
        running.grpc,
        running.data_tcp,
        running
            .data_unix
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    if let Some(url) = &a.nats {
        let cfg = prewarm_coordinator::NatsConfig {
            url: url.clone(),
            subject: a.subject.clone(),
            stream: a.nats_stream.clone(),
            durable: a.nats_durable.clone(),
            ack_wait: a.nats_ack_wait,
            replicas: a.nats_replicas,
        };
        tokio::spawn(prewarm_coordinator::run_nats(
            running.coordinator.clone(),
            cfg,
        ));
    }
    if let Some(path) = &a.replay {
        let records = super::read_history(path)?;
        let (c, speed, name) = (
            running.coordinator.clone(),
            a.replay_speed,
            path.display().to_string(),
        );
        tokio::spawn(async move {
            let n = prewarm_coordinator::replay_events(&c, &records, speed).await;
            eprintln!("prewarm coordinator: replayed {n} events from {name}");
        });
    }
    let reload = async {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return std::future::pending().await;
        };
        while hup.recv().await.is_some() {
            match (model(&a.model), running.coordinator.brain.as_ref()) {
                (Ok(Some(p)), Some(b)) => {
                    b.replace(p);
                    eprintln!("prewarm coordinator: model {} reloaded", a.model);
                }
                (Err(e), _) => eprintln!("prewarm coordinator: reload failed: {e:#}"),
                _ => {}
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("prewarm coordinator: interrupted, stopping"),
        _ = terminate() => eprintln!("prewarm coordinator: terminated, stopping"),
        () = reload => {}
    }
    drop(running);
    Ok(0)
}

/// Resolves on SIGTERM.
pub async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
