//! `prewarm agent`: the state manager of one compute capacity, until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prewarm_agent::{Agent, AgentConfig, DataPath, DataSource};
use prewarm_core::CapacityId;

use super::{HttpLimitsArg, TlsArg, TokenArg, TokensArg, parse_duration, parse_size};

/// Arguments of `prewarm agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    #[allow(dead_code)] // acted on by crate::config around parsing
    config: super::ConfigArg,
    /// The coordinator's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:7100")]
    coordinator: String,
    /// This capacity's id.
    #[arg(long)]
    name: String,
    /// Where installed states (and staging, manifests, history.jsonl) live.
    #[arg(long)]
    cache_dir: PathBuf,
    /// Byte budget of installed states.
    #[arg(long, value_parser = parse_size, default_value = "10GiB")]
    cache_size: u64,
    /// The application API's address.
    #[arg(long, default_value = "127.0.0.1:7200")]
    listen: SocketAddr,
    /// Bandwidth limit of predictive transfers, per second (e.g. 200MiB; default: none).
    #[arg(long, value_parser = parse_size)]
    predictive_rate: Option<u64>,
    /// Resource-id prefix whose invalidations mark held versions stale instead of refreshing
    /// them (repeatable).
    #[arg(long, value_name = "PREFIX")]
    mark_stale: Vec<String>,
    /// How long an ensure answer protects its state from eviction.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    lease: Duration,
    /// Leases held at once at most; an ensure past it answers 503 overloaded with
    /// Retry-After (when the next lease ends), counted in prewarm_agent_ensure_shed_total.
    #[arg(long, default_value_t = prewarm_agent::DEFAULT_MAX_LEASES)]
    max_leases: usize,
    /// Data-plane channel: auto (on the coordinator's host the pack channel, where pack files
    /// are passed by descriptor, else the Unix socket; TCP elsewhere), tcp, unix, fds.
    #[arg(long, default_value = "auto")]
    data_path: String,
    /// Where chunks come from: auto (the coordinator's object store when it names one — an
    /// S3 store, say — and this agent can open it with its own environment's credentials,
    /// else the coordinator), store (always the object store; loads fail without one),
    /// coordinator (always the coordinator's data plane).
    #[arg(long, default_value = "auto")]
    data_source: String,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tokens: TokensArg,
    #[command(flatten)]
    http: HttpLimitsArg,
    #[command(flatten)]
    tls: TlsArg,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    let name = CapacityId::new(a.name.clone()).context("--name")?;
    let data_path = match a.data_path.as_str() {
        "auto" => DataPath::Auto,
        "tcp" => DataPath::Tcp,
        "unix" => DataPath::Unix,
        "fds" => DataPath::Fds,
        other => anyhow::bail!("--data-path {other}: expected auto, tcp, unix or fds"),
    };
    let data_source = match a.data_source.as_str() {
        "auto" => DataSource::Auto,
        "store" => DataSource::Store,
        "coordinator" => DataSource::Coordinator,
        other => anyhow::bail!("--data-source {other}: expected auto, store or coordinator"),
    };
    // The token this agent presents to the coordinator; its own API accepts it (every
    // right, unless the tokens file lists it with fewer) and the file's tenant tokens.
    let token = a.token.load()?;
    // Bad TLS files stop the start before the cache directory is touched.
    let (tls_server, tls_client) = (a.tls.server()?, a.tls.client()?);
    let keys = prewarm_transfer::Keys::new(token.clone(), a.tokens.load()?);
    keys.require_for(a.listen)?;
    std::fs::create_dir_all(&a.cache_dir)
        .with_context(|| format!("creating {}", a.cache_dir.display()))?;
    let agent: Arc<Agent> = Agent::open(AgentConfig {
        name,
        cache_dir: a.cache_dir.clone(),
        cache_size: a.cache_size,
        predictive_rate: a.predictive_rate,
        mark_stale: a.mark_stale,
        token,
        tls: tls_client,
        lease: a.lease,
        max_leases: a.max_leases,
        data_path,
        data_source,
        clock: prewarm_core::Clock::system(),
    })
    .context("opening the cache")?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let local = listener.local_addr()?;
    let router = prewarm_agent::http::router(agent.clone(), Arc::new(keys));
    // Bounded against slow and idle clients (connection cap, header, body and idle
    // deadlines); TCP_NODELAY for the small JSON answers.
    let tls = tls_server.map(|a| prewarm_http::Tls::new(a, &agent.registry, "agent"));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mode = TlsArg::label(tls.as_ref().map(|t| &t.acceptor));
    let http = tokio::spawn(prewarm_http::serve_tls(
        listener,
        router,
        a.http.limits()?,
        tls,
    ));
    let control = tokio::spawn(prewarm_agent::control::run(
        agent.clone(),
        a.coordinator.clone(),
        local.to_string(),
    ));
    eprintln!(
        "prewarm agent {}: application API on {scheme}://{local}{mode}, cache {} (budget {}), coordinator {}",
        a.name,
        a.cache_dir.display(),
        prewarm_core::ByteSize(a.cache_size),
        a.coordinator
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => eprintln!("prewarm agent: interrupted, stopping"),
        _ = super::coordinator::terminate() => eprintln!("prewarm agent: terminated, stopping"),
        r = http => anyhow::bail!("the application API stopped: {r:?}"),
    }
    control.abort();
    Ok(0)
}
