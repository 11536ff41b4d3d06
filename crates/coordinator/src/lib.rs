//! The coordinator. In this crate: the control plane (gRPC: agents attach and report, take
//! `Load` commands and acknowledge them; `transfer`, `resolve` and `status` for operators),
//! the data plane serving the store's chunks and manifests (TCP, plus a Unix socket for
//! agents on the same host), invalidation of held versions when newer ones are committed,
//! `/metrics` on the gRPC port, and the predictive loop (`POST /v1/events`, a NATS
//! JetStream consumer or a replayed history file → model →
//! placement → planner → predictive loads; `GET /v1/placement`; history from the agents
//! teaches the model): see [`predictive`]; snapshot watchers asked for a fresh snapshot
//! before a dirty predicted state moves: see [`watchers`].

mod capacities;
mod dashboard;
mod fleet;
mod http;
mod invalidate;
pub mod limits;
mod metrics;
mod nats;
mod predictive;
mod pulse;
mod replay;
mod retrain;
mod service;
mod state;
mod transfers;
mod watchers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prewarm_core::CapacityId;
use prewarm_metrics::Registry;
use prewarm_proto::wire::{
    StatusReply, TransferAck, TransferRequest, coordinator_server::CoordinatorServer,
};
use prewarm_store::Store;
use prewarm_transfer::{Capability, DataServer, Keys, Token, TokenError, Tokens};

pub use capacities::Capacities;
pub use metrics::{CoordinatorMetrics, RoundScores};
pub use nats::{NatsConfig, NatsError, consume_nats, run_nats};
pub use predictive::{Brain, EventIn, EventOutcome, EventsError, MAX_BATCH, parse_events};
pub use replay::replay_events;
pub use retrain::{ModelReport, RetrainSettings, run_retraining};
pub use service::Service;
use transfers::TypedTransfer;
pub use transfers::{ResolveFailure, Transfers};
pub use watchers::{Fresh, Watchers};

/// How a coordinator is set up.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// gRPC (and `/metrics`) listener.
    pub listen: SocketAddr,
    /// Data-plane TCP listener (port 0: any free port, announced to agents).
    pub data_listen: SocketAddr,
    /// Data-plane Unix socket for agents on this host (`None`: no same-host channel).
    pub data_unix: Option<PathBuf>,
    /// The shared token (required on non-loopback listeners; every capability over every
    /// resource). Tenant-scoped tokens come with [`start_with`].
    pub token: Option<Token>,
    /// How often the store is checked for new versions of held resources.
    pub poll: Duration,
    /// The clock of decisions (the system's, or a test's).
    pub clock: prewarm_core::Clock,
    /// Bounds of the gRPC + JSON port against slow, idle and too many clients.
    pub http: prewarm_http::Limits,
    /// Events per second each token may post (`None`: no limit).
    pub events_rate: Option<std::num::NonZeroU32>,
    /// Admission of event bodies under overload.
    pub ingest: limits::Ingest,
    /// TLS (mutual TLS with a client CA) on the gRPC + JSON port and the data plane's TCP
    /// listener (`None`: plain; the Unix socket and the pack channel stay local and plain).
    pub tls: Option<prewarm_tls::Acceptor>,
}

/// The coordinator: its parts, each with one job.
pub struct Coordinator {
    /// Random id of this process.
    pub instance: String,
    /// Where agents fetch chunks (announced in `Welcome`).
    data: DataAddrs,
    /// Who is attached and what each holds.
    pub capacities: Capacities,
    /// Loads on capacities and their acknowledgements.
    pub transfers: Transfers,
    /// The decision engine (`None`: no predictive loop, transfers by request only).
    pub brain: Option<Brain>,
    /// Registered snapshot watchers (the predictive snapshot trigger).
    pub watchers: Watchers,
    /// The per-token events rate limit.
    events_limit: Option<limits::EventsLimit>,
    /// Slots for event bodies in progress, and how long a request waits for one.
    ingest: (tokio::sync::Semaphore, Duration),
    /// Warm starts, events and prefetch outcomes over time, for the dashboard.
    pub pulse: pulse::Pulse,
    /// The tokens every listener checks: the shared one and tenant-scoped ones.
    keys: Arc<Keys>,
    /// Metrics handles.
    pub metrics: CoordinatorMetrics,
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// The clock of decisions.
    pub clock: prewarm_core::Clock,
}

/// The data plane's addresses as agents are told them (empty: not served).
struct DataAddrs {
    tcp: String,
    unix: String,
    fds: String,
    /// The object store agents may read directly ("" for a local store).
    store: String,
}

/// The serving model's status, on the wire.
fn model_status(b: &Brain) -> prewarm_proto::wire::ModelStatus {
    let name = b.model_name();
    let m = b.model.lock().expect("model lock poisoned").clone();
    let (champion, challenger, held_out) = m
        .last
        .as_ref()
        .map(|r| (r.champion, r.challenger, r.held_out as u64))
        .unwrap_or_default();
    prewarm_proto::wire::ModelStatus {
        name,
        retraining: m.retraining,
        rounds: m.rounds,
        swaps: m.swaps,
        failures: m.failures,
        champion_log_loss: champion.log_loss,
        challenger_log_loss: challenger.log_loss,
        champion_top5: champion.top5,
        challenger_top5: challenger.top5,
        held_out,
        last_round_unix_ms: m.last_unix_ms,
        last_error: m.last_error,
        champion_warm_rate: champion.warm_rate.unwrap_or(-1.0),
        challenger_warm_rate: challenger.warm_rate.unwrap_or(-1.0),
    }
}

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A token is required and missing (or weak).
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A started coordinator.
pub struct Running {
    /// The shared state.
    pub coordinator: Arc<Coordinator>,
    /// Where gRPC and `/metrics` listen.
    pub grpc: SocketAddr,
    /// Where the data plane listens.
    pub data_tcp: SocketAddr,
    /// The same-host data-plane socket.
    pub data_unix: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Serves until the process ends (or a listener task fails).
    pub async fn wait(mut self) {
        if let Some(t) = self.tasks.pop() {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(p) = &self.data_unix {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(fds_socket(p));
        }
    }
}

/// The pack channel's socket, beside the data plane's Unix socket.
fn fds_socket(unix: &std::path::Path) -> PathBuf {
    let mut p = unix.as_os_str().to_owned();
    p.push(".fds");
    PathBuf::from(p)
}

fn random_instance() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        ^ u128::from(std::process::id()) << 64;
    blake3::hash(&seed.to_le_bytes()).to_hex()[..16].to_owned()
}

/// The coordinator's bound listeners.
struct Listeners {
    grpc_l: tokio::net::TcpListener,
    data_l: tokio::net::TcpListener,
    grpc: SocketAddr,
    data_tcp: SocketAddr,
    unix_l: Option<tokio::net::UnixListener>,
    /// The pack channel's socket (same host, local store only) and its listener.
    fds: Option<(PathBuf, tokio::net::UnixListener)>,
}

/// Binds every listener `cfg` names (the pack channel only for a store of local files).
async fn bind(cfg: &CoordinatorConfig, store: &Store) -> Result<Listeners, StartError> {
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })
    };
    let grpc_l = bind(cfg.listen).await?;
    let data_l = bind(cfg.data_listen).await?;
    let local_addr = |l: &tokio::net::TcpListener, asked: SocketAddr| {
        l.local_addr().map_err(|source| StartError::Bind {
            addr: asked.to_string(),
            source,
        })
    };
    let grpc = local_addr(&grpc_l, cfg.listen)?;
    let data_tcp = local_addr(&data_l, cfg.data_listen)?;
    let bind_unix = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p); // a socket left by a dead coordinator
        tokio::net::UnixListener::bind(p).map_err(|source| StartError::Bind {
            addr: p.display().to_string(),
            source,
        })
    };
    let unix_l = cfg.data_unix.as_deref().map(bind_unix).transpose()?;
    // Pack files can be passed only when they are files on this host.
    let fds = match cfg
        .data_unix
        .as_deref()
        .filter(|_| store.local_dir().is_some())
    {
        Some(unix) => {
            let p = fds_socket(unix);
            let l = bind_unix(&p)?;
            Some((p, l))
        }
        None => None,
    };
    Ok(Listeners {
        grpc_l,
        data_l,
        grpc,
        data_tcp,
        unix_l,
        fds,
    })
}

/// Binds the listeners and starts serving `store`.
pub async fn start(
    store: Arc<Store>,
    cfg: CoordinatorConfig,
    brain: Option<Brain>,
) -> Result<Running, StartError> {
    start_with(store, cfg, brain, None).await
}

/// [`start`] accepting, beside `cfg.token`, the tenant-scoped tokens of a tokens file
/// (`--tokens`): each request is then served as its token's principal (see
/// `prewarm_transfer::tokens`), and checked against its capabilities and prefixes.
pub async fn start_with(
    store: Arc<Store>,
    cfg: CoordinatorConfig,
    brain: Option<Brain>,
    tokens: Option<Tokens>,
) -> Result<Running, StartError> {
    let keys = Arc::new(Keys::new(cfg.token.clone(), tokens));
    keys.require_for(cfg.listen)?;
    keys.require_for(cfg.data_listen)?;
    let Listeners {
        grpc_l,
        data_l,
        grpc,
        data_tcp,
        unix_l,
        fds,
    } = bind(&cfg, &store).await?;
    let (fds_path, fds_l) = fds.unzip();
    let registry = Registry::default();
    let instance = random_instance();
    let coordinator = Arc::new(Coordinator {
        metrics: CoordinatorMetrics::new(&registry),
        instance: instance.clone(),
        data: DataAddrs {
            tcp: data_tcp.to_string(),
            unix: cfg
                .data_unix
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            fds: fds_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            store: store.remote_location().unwrap_or_default().to_owned(),
        },
        capacities: Capacities::default(),
        pulse: pulse::Pulse::default(),
        transfers: Transfers::new(store.clone()),
        registry: registry.clone(),
        brain,
        watchers: Watchers::default(),
        events_limit: cfg
            .events_rate
            .map(|r| limits::EventsLimit::new(r, keys.required())),
        ingest: (
            tokio::sync::Semaphore::new(cfg.ingest.concurrent.max(1)),
            cfg.ingest.wait,
        ),
        clock: cfg.clock.clone(),
        keys: keys.clone(),
    });
    let mut tasks = Vec::new();
    let mut data =
        DataServer::new(store.clone(), None, instance.clone(), &registry).with_keys(keys.clone());
    if let Some(tls) = cfg.tls.clone() {
        data = data.with_tls(tls);
    }
    let data = Arc::new(data);
    tasks.push(tokio::spawn(data.clone().serve_tcp(data_l)));
    let local = Arc::new(DataServer::new(store, None, instance, &registry).with_keys(keys.clone()));
    if let Some(l) = unix_l {
        tasks.push(tokio::spawn(local.clone().serve_unix(l)));
    }
    if let Some(l) = fds_l {
        tasks.push(tokio::spawn(local.serve_fds(l)));
    }
    tasks.push(tokio::spawn(invalidate::watch_versions(
        coordinator.clone(),
        cfg.poll,
    )));
    tasks.push(tokio::spawn(serve_grpc(
        coordinator.clone(),
        grpc_l,
        cfg.http,
        cfg.tls.clone(),
    )));
    tracing::info!(
        "coordinator {}: gRPC on {grpc}, data plane on {data_tcp}",
        coordinator.instance
    );
    Ok(Running {
        coordinator,
        grpc,
        data_tcp,
        data_unix: cfg.data_unix,
        tasks,
    })
}

async fn serve_grpc(
    c: Arc<Coordinator>,
    l: tokio::net::TcpListener,
    limits: prewarm_http::Limits,
    tls: Option<prewarm_tls::Acceptor>,
) {
    use axum::response::IntoResponse;
    use axum::routing::get;
    static GRPC_REFUSALS: std::sync::LazyLock<prewarm_transfer::Throttle> =
        std::sync::LazyLock::new(prewarm_transfer::Throttle::default);
    // Every gRPC call carries its principal (the token's entry) to the handlers, which
    // check its capabilities and prefixes (see `service.rs`).
    let keys = c.keys.clone();
    let check = move |mut req: tonic::Request<()>| {
        let presented = req.metadata().get("authorization").map(|v| v.as_bytes());
        match keys.authenticate_bearer(presented) {
            Ok(who) => {
                req.extensions_mut().insert(who);
                Ok(req)
            }
            Err(e) => {
                prewarm_transfer::warn_throttled!(
                    GRPC_REFUSALS,
                    "gRPC call without a valid token refused"
                );
                Err(tonic::Status::unauthenticated(e.to_string()))
            }
        }
    };
    let svc = tonic::service::interceptor::InterceptedService::new(
        CoordinatorServer::new(Service(c.clone())).max_decoding_message_size(64 << 20),
        check,
    );
    let me = c.clone();
    let router = tonic::service::Routes::new(svc)
        .into_axum_router()
        .merge(http::routes(c.clone()))
        .merge(dashboard::routes(c.clone()))
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let c = me.clone();
                async move {
                    // Counters and gauges of the whole fleet: the operator's (admin) view.
                    match http::allowed(&c, &headers, Capability::Admin) {
                        Ok(_) => (axum::http::StatusCode::OK, c.registry.render()).into_response(),
                        Err(r) => *r,
                    }
                }
            }),
        )
        .fallback_service(http::fallback(c.clone()));
    // gRPC (HTTP/2) and the JSON API (HTTP/1) on one port, bounded against slow and idle
    // clients; quiet control streams are kept by HTTP/2 pings.
    let tls = tls.map(|a| prewarm_http::Tls::new(a, &c.registry, "coordinator"));
    let e = prewarm_http::serve_tls(l, router, limits, tls).await;
    tracing::error!("coordinator port: {e}");
}

impl Coordinator {
    /// The stream of `session` ended: `capacity` is gone (unless a newer stream replaced it).
    fn detach(&self, capacity: &CapacityId, session: u64) {
        if self.capacities.detach(capacity, session) {
            tracing::warn!("capacity {capacity} detached");
            self.update_gauges();
        }
    }

    fn update_gauges(&self) {
        self.metrics
            .capacities
            .set(self.capacities.connected() as u64);
        let (watchers, dirty) = self.watchers.totals();
        self.metrics.watchers.set(watchers);
        self.metrics.dirty_bytes.set(dirty);
    }

    /// Whether no transfer is waiting for its acknowledgement and no predictive transfer is
    /// under way (tests wait for this between the steps of a history).
    pub fn settled(&self) -> bool {
        self.capacities.settled()
    }

    /// Capacities, inventories, recent transfers.
    pub fn status(&self) -> StatusReply {
        // The engine's lock is taken before the book's everywhere (`observe`); the model's
        // status takes it, so it is read before the book is locked.
        let model = self.brain.as_ref().map(model_status);
        let (capacities, recent) = self.capacities.status();
        StatusReply {
            coordinator_instance: self.instance.clone(),
            capacities,
            recent,
            model,
        }
    }

    /// Has capacity `req.capacity` load the state and waits for its acknowledgement.
    pub async fn transfer(&self, req: TransferRequest) -> TransferAck {
        let t0 = Instant::now();
        let ack = self.transfers.request(&self.capacities, &req).await;
        self.count_transfer(&ack, t0);
        ack
    }

    /// [`Self::transfer`] of a typed request whose version is already known (the engine's
    /// predictive transfers: no id parsing, no store lookup).
    pub(crate) async fn transfer_typed(&self, t: &TypedTransfer) -> TransferAck {
        let t0 = Instant::now();
        let ack = self.transfers.send(&self.capacities, t).await;
        self.count_transfer(&ack, t0);
        ack
    }

    fn count_transfer(&self, ack: &TransferAck, t0: Instant) {
        let result = if ack.ok { "ok" } else { "failed" };
        self.metrics
            .transfer(&self.registry, result, ack, t0.elapsed());
    }
}
