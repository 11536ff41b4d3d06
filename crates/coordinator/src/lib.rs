//! The coordinator. In this crate: the control plane (gRPC: agents attach and report, take
//! `Load` commands and acknowledge them; `transfer`, `resolve` and `status` for operators),
//! the data plane serving the store's chunks and manifests (TCP, plus a Unix socket for
//! agents on the same host), invalidation of held versions when newer ones are committed,
//! `/metrics` on the gRPC port, and the predictive loop (`POST /v1/events`, a NATS
//! JetStream consumer or a replayed history file → model →
//! placement → planner → predictive loads; `GET /v1/placement`; history from the agents
//! teaches the model): see [`predictive`]; snapshot watchers asked for a fresh snapshot
//! before a dirty predicted state moves: see [`watchers`].

mod fleet;
mod http;
mod metrics;
mod nats;
mod predictive;
mod retrain;
mod service;
mod state;
mod watchers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prewarm_core::{CapacityId, ResourceId, Version};
use prewarm_metrics::Registry;
use prewarm_proto::wire::{
    CapacityStatus, Command, FailureKind, Invalidate, StatusReply, TransferAck, command,
    coordinator_server::CoordinatorServer,
};
use prewarm_store::Store;
use prewarm_transfer::{DataServer, Token, TokenError, auth};

pub use metrics::CoordinatorMetrics;
pub use nats::{NatsConfig, NatsError};
pub use predictive::{Brain, EventIn, EventOutcome, EventsError, MAX_BATCH, parse_events};
pub use retrain::{ModelReport, RetrainSettings};
pub use service::{ResolveFailure, Service};
use state::Book;
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
    /// The shared token (required on non-loopback listeners).
    pub token: Option<Token>,
    /// How often the store is checked for new versions of held resources.
    pub poll: Duration,
    /// The clock of decisions (the system's, or a test's).
    pub clock: prewarm_core::Clock,
    /// Bounds of the gRPC + JSON port against slow, idle and too many clients.
    pub http: prewarm_http::Limits,
}

/// The coordinator's shared state.
pub struct Coordinator {
    store: Arc<Store>,
    /// Random id of this process.
    pub instance: String,
    data_tcp: String,
    data_unix: String,
    data_fds: String,
    book: Mutex<Book>,
    next_id: AtomicU64,
    /// Metrics handles.
    pub metrics: CoordinatorMetrics,
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// The model and planner (`None`: no predictive loop, transfers by request only).
    pub brain: Option<Brain>,
    /// Registered snapshot watchers (the predictive snapshot trigger).
    pub watchers: Watchers,
    /// The clock of decisions.
    pub clock: prewarm_core::Clock,
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
    let grpc_token = auth::listener_policy(cfg.listen, cfg.token.as_ref())?;
    let data_token = auth::listener_policy(cfg.data_listen, cfg.token.as_ref())?;
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
        store: store.clone(),
        instance: instance.clone(),
        data_tcp: data_tcp.to_string(),
        data_unix: cfg
            .data_unix
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        data_fds: fds_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        book: Mutex::default(),
        next_id: AtomicU64::new(1),
        registry: registry.clone(),
        brain,
        watchers: Watchers::default(),
        clock: cfg.clock.clone(),
    });
    let mut tasks = Vec::new();
    let data = Arc::new(DataServer::new(
        store.clone(),
        data_token,
        instance.clone(),
        &registry,
    ));
    tasks.push(tokio::spawn(data.clone().serve_tcp(data_l)));
    let local = Arc::new(DataServer::new(
        store,
        cfg.token.clone(),
        instance,
        &registry,
    ));
    if let Some(l) = unix_l {
        tasks.push(tokio::spawn(local.clone().serve_unix(l)));
    }
    if let Some(l) = fds_l {
        tasks.push(tokio::spawn(local.serve_fds(l)));
    }
    tasks.push(tokio::spawn(coordinator.clone().watch_versions(cfg.poll)));
    tasks.push(tokio::spawn(serve_grpc(
        coordinator.clone(),
        grpc_l,
        grpc_token,
        cfg.http,
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
    token: Option<Token>,
    limits: prewarm_http::Limits,
) {
    use axum::routing::get;
    static GRPC_REFUSALS: std::sync::LazyLock<prewarm_transfer::Throttle> =
        std::sync::LazyLock::new(prewarm_transfer::Throttle::default);
    let check = move |req: tonic::Request<()>| match &token {
        Some(t) if !t.matches_bearer(req.metadata().get("authorization").map(|v| v.as_bytes())) => {
            prewarm_transfer::warn_throttled!(
                GRPC_REFUSALS,
                "gRPC call without a valid token refused"
            );
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token",
            ))
        }
        _ => Ok(req),
    };
    let svc = tonic::service::interceptor::InterceptedService::new(
        CoordinatorServer::new(Service(c.clone())).max_decoding_message_size(64 << 20),
        check.clone(),
    );
    let reg = c.registry.clone();
    let metrics_token = check.clone();
    let router = tonic::service::Routes::new(svc)
        .into_axum_router()
        .merge(http::routes(c.clone(), check.clone()))
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let reg = reg.clone();
                let mut req = tonic::Request::new(());
                if let Some(v) = headers.get("authorization")
                    && let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes())
                {
                    req.metadata_mut().insert("authorization", v);
                }
                let allowed = metrics_token(req).is_ok();
                async move {
                    if allowed {
                        (axum::http::StatusCode::OK, reg.render())
                    } else {
                        (
                            axum::http::StatusCode::UNAUTHORIZED,
                            "missing or wrong bearer token\n".to_owned(),
                        )
                    }
                }
            }),
        )
        .fallback_service(http::fallback(check));
    // gRPC (HTTP/2) and the JSON API (HTTP/1) on one port, bounded against slow and idle
    // clients; quiet control streams are kept by HTTP/2 pings.
    let e = prewarm_http::serve(l, router, limits).await;
    tracing::error!("coordinator port: {e}");
}

impl Coordinator {
    fn detach(&self, capacity: &CapacityId, session: u64) {
        let mut book = self.book.lock().expect("book lock poisoned");
        let Some(cap) = book.caps.get_mut(capacity) else {
            return;
        };
        if cap.session != session {
            return; // a newer attach replaced this stream
        }
        cap.tx = None;
        book.refresh_attached();
        let gone: Vec<u64> = book
            .pending
            .iter()
            .filter(|(_, (c, _))| c == capacity)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some((_, waiter)) = book.pending.remove(&id) {
                let _ = waiter.send(TransferAck {
                    transfer_id: id,
                    capacity: capacity.as_str().to_owned(),
                    failure: FailureKind::CapacityGone as i32,
                    error: format!("capacity {capacity} disconnected during the transfer"),
                    ..Default::default()
                });
            }
        }
        drop(book);
        tracing::warn!("capacity {capacity} detached");
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let book = self.book.lock().expect("book lock poisoned");
        let connected = book.caps.values().filter(|c| c.tx.is_some()).count();
        drop(book);
        self.metrics.capacities.set(connected as u64);
        let (watchers, dirty) = self.watchers.totals();
        self.metrics.watchers.set(watchers);
        self.metrics.dirty_bytes.set(dirty);
    }

    /// Whether no transfer is waiting for its acknowledgement and no predictive transfer is
    /// under way (tests wait for this between the steps of a history).
    pub fn settled(&self) -> bool {
        let book = self.book.lock().expect("book lock poisoned");
        book.pending.is_empty() && book.moving.is_empty()
    }

    /// Capacities, inventories, recent transfers.
    pub fn status(&self) -> StatusReply {
        // The engine's lock is taken before the book's everywhere (`observe`); the model's
        // status takes it, so it is read before the book is locked.
        let model = self.brain.as_ref().map(model_status);
        let book = self.book.lock().expect("book lock poisoned");
        StatusReply {
            coordinator_instance: self.instance.clone(),
            capacities: book
                .caps
                .iter()
                .map(|(id, c)| CapacityStatus {
                    capacity: id.as_str().to_owned(),
                    connected: c.tx.is_some(),
                    ensure_addr: c.ensure_addr.clone(),
                    inventory: Some(c.inventory.clone()),
                    attached_unix_ms: c.attached_unix_ms,
                })
                .collect(),
            recent: book.recent.iter().rev().cloned().collect(),
            model,
        }
    }

    /// Checks the store every `poll` for versions newer than what agents hold and tells the
    /// holders (`Invalidate`); each refreshes or marks stale by its own policy.
    async fn watch_versions(self: Arc<Self>, poll: Duration) {
        loop {
            tokio::time::sleep(poll).await;
            let held: Vec<ResourceId> = {
                let book = self.book.lock().expect("book lock poisoned");
                let mut v: Vec<ResourceId> = book
                    .caps
                    .values()
                    .flat_map(|c| c.inventory.held.iter())
                    .filter_map(|h| ResourceId::new(h.resource.clone()).ok())
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            for r in held {
                match self.store.latest(&r).await {
                    Ok(Some(newest)) => self.announce(&r, newest).await,
                    Ok(None) => {}
                    Err(e) => tracing::warn!("version check of {r}: {e}"),
                }
            }
        }
    }

    async fn announce(&self, resource: &ResourceId, newest: Version) {
        let targets: Vec<_> = {
            let mut book = self.book.lock().expect("book lock poisoned");
            let first_seen = book.announced.get(resource).is_none_or(|v| *v < newest);
            let targets = book
                .caps
                .iter()
                .filter(|(_, c)| c.newest(resource).is_some_and(|v| v < newest))
                .filter_map(|(_, c)| c.tx.clone())
                .collect();
            book.announced.insert(resource.clone(), newest);
            if let Some(b) = &self.brain {
                b.forget(resource);
            }
            if !first_seen {
                return;
            }
            targets
        };
        if targets.is_empty() {
            return;
        }
        let _ = self.store.refresh_index().await;
        tracing::info!(
            "{resource}@{newest} committed: invalidating {} holder(s)",
            targets.len()
        );
        for tx in targets {
            self.metrics.invalidations.inc();
            let _ = tx
                .send(Ok(Command {
                    command: Some(command::Command::Invalidate(Invalidate {
                        resource: resource.as_str().to_owned(),
                        new_version: newest.get(),
                        transfer_id: 0,
                    })),
                }))
                .await;
        }
    }
}
