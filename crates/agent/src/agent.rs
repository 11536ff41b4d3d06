//! The agent's core, independent of how it is reached: load a state version (dedup'd per
//! state, delta + resumable + verified, atomically installed), answer `ensure` (hit at once,
//! on-demand fetch on a miss), react to invalidations, report inventory, log history.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prewarm_core::{CapacityId, ChunkHash, Clock, ResourceId, Scope, Version};
use prewarm_engine::{Hint, Rule};
use prewarm_metrics::Registry;
use prewarm_store::Manifest;
use prewarm_transfer::{Connection, DataAddr, DataError, Pacer, Priorities, Token};
use tokio::sync::{Notify, watch};

use crate::departures::{Departed, Departures, Why};
use crate::history::HistoryLog;
use crate::install::{self, InstallError, InstallReport, LocalCopy};
use crate::local::LocalChunks;
use crate::metrics::AgentMetrics;
use crate::space::{Held, Slot, SpaceError, StateSpace};

/// How an agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The capacity's id.
    pub name: CapacityId,
    /// Root of the state space, staging, manifests and history.
    pub cache_dir: PathBuf,
    /// Byte budget of installed states.
    pub cache_size: u64,
    /// Bandwidth limit for predictive transfers, bytes/s (`None`: unlimited).
    pub predictive_rate: Option<u64>,
    /// Resource-id prefixes whose invalidations mark held versions stale instead of refreshing
    /// them by delta transfer (the default).
    pub mark_stale: Vec<String>,
    /// Sent to the coordinator (gRPC and data plane) when set.
    pub token: Option<Token>,
    /// TLS to the coordinator (gRPC and the data plane's TCP; `None`: plain).
    pub tls: Option<prewarm_tls::Connector>,
    /// How long an `ensure` answer keeps its state from eviction.
    pub lease: Duration,
    /// Leases held at once at most (each costs memory until it ends): an `ensure` past it is
    /// refused with [`crate::EnsureError::Overloaded`] ([`DEFAULT_MAX_LEASES`] by default).
    pub max_leases: usize,
    /// Which data-plane channel to use.
    pub data_path: DataPath,
    /// Where chunks come from: the coordinator's data plane or its object store.
    pub data_source: DataSource,
    /// The clock of history records, uses and keep-alives (the system's, or a test's).
    pub clock: Clock,
}

/// Default of [`AgentConfig::max_leases`]: at the cap the agent's RSS was 90 MiB above idle
/// (the lease records and the history queue of the calls; RELIABILITY.md, "Overload");
/// applications calling `ensure` 4,000 times a second with the default lease of 60 s stay
/// under it (releasing leases, or asking for shorter ones, leaves more room).
pub const DEFAULT_MAX_LEASES: usize = 262_144;

/// Data-plane channel choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPath {
    /// On the coordinator's host the pack channel (else the Unix socket), elsewhere TCP.
    Auto,
    /// Always TCP.
    Tcp,
    /// Always the Unix socket's stream (fails when there is none).
    Unix,
    /// Always the pack channel: pack files passed by descriptor (fails when there is none).
    Fds,
}

/// Where an agent reads chunks from (see [`crate::direct`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// The object store when the coordinator names one and it opens, else the coordinator.
    Auto,
    /// Always the coordinator's data plane.
    Coordinator,
    /// Always the object store: loads fail when the coordinator names none or it cannot be
    /// opened.
    Store,
}

/// Which version a load wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionReq {
    /// Exactly this one.
    Exact(Version),
    /// The newest, which must be at least this (any when `None`).
    AtLeast(Option<Version>),
}

/// Transfer priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// An execution waits.
    OnDemand,
    /// A prediction.
    Predictive,
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The agent does not know a data plane yet (not attached to a coordinator).
    #[error("not attached to a coordinator yet: no source for state")]
    NoSource,
    /// `--data-source store`, but the object store cannot be read.
    #[error("the data source is the object store, but {0}")]
    NoStore(String),
    /// The data plane failed or refused.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The newest version is older than required.
    #[error("{resource}: newest version is {newest}, {wanted} or newer was asked for")]
    TooOld {
        /// The resource.
        resource: ResourceId,
        /// Newest in the store.
        newest: Version,
        /// Asked for.
        wanted: Version,
    },
    /// The state space refused (full, …).
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The install failed (verification, disk…).
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The cache's disk has no room for the state, even after evicting every unleased one
    /// ([`crate::disk`]); nothing of it is left staged.
    #[error(
        "no room on the cache's disk for {resource}@{version}: {short} more bytes are needed than eviction can free"
    )]
    DiskFull {
        /// The resource.
        resource: ResourceId,
        /// Its version.
        version: Version,
        /// Bytes the disk still lacked.
        short: u64,
    },
    /// Publishing the state failed.
    #[error("cannot publish {path}: {source}")]
    Publish {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl LoadError {
    /// A short reason, for metrics and acknowledgements.
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::NoSource => "no_source",
            LoadError::NoStore(_) => "source",
            LoadError::Data(DataError::UnknownState(_)) | LoadError::TooOld { .. } => {
                "unknown_state"
            }
            LoadError::Data(DataError::Refused { .. }) => "refused",
            LoadError::Data(_) => "source",
            LoadError::Space(SpaceError::Full { .. }) => "cache_full",
            LoadError::DiskFull { .. } => "disk_full",
            LoadError::Space(SpaceError::Preempted(..)) => "preempted",
            LoadError::Space(_) => "io",
            LoadError::Install(InstallError::Verification { .. }) => "verification",
            LoadError::Install(InstallError::Data(_) | InstallError::Direct(_)) => "source",
            LoadError::Install(InstallError::Io { .. }) | LoadError::Publish { .. } => "io",
        }
    }
}

/// The acknowledgement's failure kind of a load error (the coordinator's view of it).
impl From<&LoadError> for prewarm_proto::wire::FailureKind {
    fn from(e: &LoadError) -> Self {
        use prewarm_proto::wire::FailureKind as K;
        match e {
            LoadError::Data(DataError::UnknownState(_)) | LoadError::TooOld { .. } => {
                K::UnknownState
            }
            LoadError::NoSource
            | LoadError::NoStore(_)
            | LoadError::Data(_)
            | LoadError::Install(InstallError::Data(_) | InstallError::Direct(_)) => K::Source,
            // Space went to an on-demand load: to the coordinator, the state did not fit.
            LoadError::Space(SpaceError::Full { .. } | SpaceError::Preempted(..))
            | LoadError::DiskFull { .. } => K::CacheFull,
            LoadError::Install(InstallError::Verification { .. }) => K::Verification,
            LoadError::Space(_)
            | LoadError::Install(InstallError::Io { .. })
            | LoadError::Publish { .. } => K::Io,
        }
    }
}

/// A finished load.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The state now held.
    pub held: Held,
    /// What moved (`None` when it was already held).
    pub report: Option<InstallReport>,
}

/// The current data-plane source.
#[derive(Clone, Debug)]
pub struct Source {
    /// Where.
    pub addr: DataAddr,
    /// The coordinator process it belongs to.
    pub instance: String,
    /// The coordinator's object store, which agents may read chunks from directly (`None`:
    /// a local store, or none advertised).
    pub store: Option<String>,
}

struct Local {
    space: StateSpace,
    chunks: LocalChunks,
    /// Why states that are not here left (or never arrived).
    departures: Departures,
}

/// An install's reservation (which leases the held states it copies from) and the chunks it
/// can copy from them.
type Reserved = (Slot, HashMap<ChunkHash, LocalCopy>);

#[derive(Default)]
struct InFlight {
    lock: tokio::sync::Mutex<()>,
    boosted: Arc<AtomicBool>,
}

/// One capacity's state manager.
pub struct Agent {
    cfg: AgentConfig,
    local: Mutex<Local>,
    source: watch::Sender<Option<Source>>,
    inflight: Mutex<HashMap<(ResourceId, Version), Arc<InFlight>>>,
    /// Per resource: the newest version announced and since when (staleness).
    superseded: Mutex<HashMap<ResourceId, (Version, Instant)>>,
    priorities: Arc<Priorities>,
    next_free: Arc<Mutex<tokio::time::Instant>>,
    /// Metrics.
    pub metrics: AgentMetrics,
    /// The registry the metrics live in.
    pub registry: Registry,
    history: HistoryLog,
    /// Signalled whenever the inventory changes.
    pub changed: Notify,
    /// Leases handed out by `ensure`, released when they expire, or early by the application
    /// (see [`crate::leases`]).
    leases: Mutex<crate::leases::Leases>,
    /// Loads the agent started itself (refreshes, resumes), for the control loop to report.
    finished_tx: tokio::sync::mpsc::UnboundedSender<Finished>,
    finished_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Finished>>>,
    /// The object store read directly, once opened.
    direct: crate::direct::DirectStore,
}

/// A load the agent started on its own (a refresh after an invalidation, or a resumed
/// transfer), reported to the coordinator like a commanded one.
#[derive(Debug)]
pub struct Finished {
    /// The resource.
    pub resource: ResourceId,
    /// The version.
    pub version: Version,
    /// What happened: the state loaded, or the failure's kind on the wire and its message.
    pub result: Result<Loaded, (prewarm_proto::wire::FailureKind, String)>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state space could not be opened.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The cache directory is unusable.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Agent {
    /// Opens the cache (checking every held state's tree against its saved manifest) and
    /// starts the history log. Must run inside a tokio runtime.
    pub fn open(mut cfg: AgentConfig) -> Result<Arc<Self>, StartError> {
        // Paths handed to applications must not depend on the agent's working directory.
        std::fs::create_dir_all(&cfg.cache_dir)
            .and_then(|_| std::fs::canonicalize(&cfg.cache_dir))
            .map(|p| cfg.cache_dir = p)
            .map_err(|source| StartError::Io {
                path: cfg.cache_dir.clone(),
                source,
            })?;
        // Least recently used until the coordinator names its engine's rule.
        let mut space = StateSpace::open(&cfg.cache_dir, cfg.cache_size, Rule::Lru)?;
        let mut chunks = LocalChunks::new(cfg.cache_dir.join("manifests"));
        for h in space.inventory() {
            if !chunks.load(&h.resource, h.version, &h.path) {
                tracing::warn!("{}@{}: unverifiable, dropped", h.resource, h.version);
                chunks.remove(&h.resource, h.version);
                space.remove(&h.resource, h.version)?;
            }
        }
        let registry = Registry::default();
        let metrics = AgentMetrics::new(&registry);
        let history = HistoryLog::start(
            cfg.cache_dir.join("history.jsonl"),
            crate::history::MAX_HISTORY_BYTES,
        )
        .map_err(|source| StartError::Io {
            path: cfg.cache_dir.join("history.jsonl"),
            source,
        })?;
        let (finished_tx, finished_rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = Arc::new(Agent {
            local: Mutex::new(Local {
                space,
                chunks,
                departures: Departures::default(),
            }),
            source: watch::channel(None).0,
            inflight: Mutex::default(),
            superseded: Mutex::default(),
            priorities: Arc::default(),
            next_free: Arc::new(Mutex::new(tokio::time::Instant::now())),
            metrics,
            registry,
            history,
            changed: Notify::new(),
            leases: Mutex::new(crate::leases::Leases::with_max(cfg.max_leases)),
            finished_tx,
            finished_rx: Mutex::new(Some(finished_rx)),
            direct: Default::default(),
            cfg,
        });
        agent.update_gauges();
        tokio::spawn(expire_loop(Arc::downgrade(&agent)));
        Ok(agent)
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Sets (or clears) the data-plane source; waiting loads proceed.
    pub fn set_source(&self, s: Option<Source>) {
        self.source.send_replace(s);
    }

    /// The object store to read chunks from, by `--data-source` and what the coordinator
    /// advertised (`None`: its data plane).
    async fn direct_store(&self) -> Result<Option<Arc<prewarm_store::Store>>, LoadError> {
        let advertised = self.source.borrow().as_ref().and_then(|s| s.store.clone());
        let mode = self.cfg.data_source;
        let url = match (mode, advertised) {
            (DataSource::Coordinator, _) | (DataSource::Auto, None) => return Ok(None),
            (DataSource::Store, None) => {
                return Err(LoadError::NoStore(
                    "the coordinator names none (its store is a local directory)".into(),
                ));
            }
            (_, Some(url)) => url,
        };
        match self.direct.get(&url).await {
            Ok(store) => Ok(Some(store)),
            Err(_) if mode == DataSource::Auto => Ok(None),
            Err(e) => Err(LoadError::NoStore(format!("{url} cannot be opened: {e}"))),
        }
    }

    async fn connect(&self) -> Result<Connection, LoadError> {
        let mut rx = self.source.subscribe();
        let current = rx.borrow_and_update().clone();
        let src = match current {
            Some(s) => s,
            None => {
                // Attaching may be in progress (e.g. right after start): wait a little.
                let wait =
                    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some))
                        .await;
                match wait {
                    Ok(Ok(s)) => s.clone().expect("waited for Some"),
                    _ => return Err(LoadError::NoSource),
                }
            }
        };
        Ok(
            Connection::connect_tls(&src.addr, self.cfg.token.as_ref(), self.cfg.tls.as_ref())
                .await?,
        )
    }

    /// A retention hint from the coordinator's engine for `resource`.
    pub fn retain(&self, resource: &ResourceId, hint: &Hint) {
        self.local
            .lock()
            .expect("agent lock poisoned")
            .space
            .hint(resource, hint);
    }

    /// Evicts by `rule` from now on (the coordinator's engine prices with it).
    pub fn set_rule(&self, rule: Rule) {
        self.local
            .lock()
            .expect("agent lock poisoned")
            .space
            .set_rule(rule);
    }

    /// The eviction book's horizon, seconds (see [`prewarm_engine::CacheBook::horizon`]).
    pub fn horizon(&self) -> Option<f64> {
        self.local
            .lock()
            .expect("agent lock poisoned")
            .space
            .horizon()
    }

    /// Whether `resource@version` is leased by an execution now.
    pub fn leased(&self, resource: &ResourceId, version: Version) -> bool {
        self.local
            .lock()
            .expect("agent lock poisoned")
            .space
            .leased(resource, version)
    }

    /// Drops the unleased states whose keep-alive ran out (run every second, and callable
    /// by tests driving a manual clock).
    pub fn expire_now(&self) {
        self.release_expired();
        let now = self.cfg.clock.now();
        let gone = {
            let mut local = self.local.lock().expect("agent lock poisoned");
            match local.space.expire(now) {
                Ok(g) => {
                    let now_ms = self.cfg.clock.now_ms();
                    for (r, v) in &g {
                        local.chunks.remove(r, *v);
                        let why = Why::Expired { version: *v };
                        local.departures.record(
                            r,
                            Departed {
                                why,
                                unix_ms: now_ms,
                            },
                        );
                    }
                    g
                }
                Err(e) => {
                    tracing::warn!("keep-alive expiry: {e}");
                    Vec::new()
                }
            }
        };
        if !gone.is_empty() {
            self.metrics.expirations.add(gone.len() as u64);
            self.update_gauges();
            self.changed.notify_one();
        }
    }

    /// Everything held, with staleness.
    pub fn inventory(&self) -> (Vec<(Held, bool)>, u64, u64) {
        self.release_expired();
        let local = self.local.lock().expect("agent lock poisoned");
        let sup = self.superseded.lock().expect("agent lock poisoned");
        let held = local
            .space
            .inventory()
            .into_iter()
            .map(|h| {
                let stale = sup.get(&h.resource).is_some_and(|(v, _)| *v > h.version);
                (h, stale)
            })
            .collect();
        (held, local.space.used(), local.space.budget())
    }

    fn update_gauges(&self) {
        let local = self.local.lock().expect("agent lock poisoned");
        self.metrics.cache_bytes.set(local.space.used());
        self.metrics.cache_budget.set(local.space.budget());
        self.metrics
            .states
            .set(local.space.inventory().len() as u64);
    }

    fn held_at_least(&self, resource: &ResourceId, min: Option<Version>) -> Option<Held> {
        let local = self.local.lock().expect("agent lock poisoned");
        local
            .space
            .inventory()
            .into_iter()
            .rfind(|h| &h.resource == resource && min.is_none_or(|m| h.version >= m))
    }

    /// Loads a state (see the module docs). Concurrent loads of one state share the work.
    pub async fn load(
        self: &Arc<Self>,
        resource: &ResourceId,
        want: VersionReq,
        priority: Priority,
    ) -> Result<Loaded, LoadError> {
        let min = match want {
            VersionReq::Exact(v) => Some(v),
            VersionReq::AtLeast(m) => m,
        };
        if let (VersionReq::Exact(_), Some(held)) = (want, self.held_at_least(resource, min)) {
            return Ok(Loaded { held, report: None });
        }
        let t0 = Instant::now();
        let _urgent = (priority == Priority::OnDemand).then(|| self.priorities.on_demand());
        let result = self.load_inner(resource, want, priority).await;
        let prio = match priority {
            Priority::OnDemand => "on_demand",
            Priority::Predictive => "predictive",
        };
        match &result {
            Ok(Loaded {
                report: Some(r), ..
            }) => {
                self.metrics.wire_bytes.add(r.wire_bytes);
                self.metrics.store_bytes.add(r.store_bytes);
                self.metrics.reused_bytes.add(r.reused_bytes);
                self.metrics.resumed_bytes.add(r.resumed_bytes);
                self.metrics.transfer_seconds.observe(t0.elapsed());
                self.registry
                    .counter(
                        "prewarm_agent_transfers_total",
                        "Transfers completed, by priority.",
                        &[("priority", prio)],
                    )
                    .inc();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("load {resource} ({want:?}): {e}");
                self.metrics.failure(&self.registry, e.reason());
            }
        }
        self.note_arrival(resource, &result);
        result
    }

    /// Remembers a failed load (a state that is not here says why), forgets the departure
    /// of one that arrived.
    fn note_arrival(&self, resource: &ResourceId, result: &Result<Loaded, LoadError>) {
        let mut local = self.local.lock().expect("agent lock poisoned");
        match result {
            Ok(_) => local.departures.arrived(resource),
            Err(e) => {
                let why = Why::Failed {
                    error: e.to_string(),
                };
                let unix_ms = self.cfg.clock.now_ms();
                local.departures.record(resource, Departed { why, unix_ms });
                drop(local);
                self.changed.notify_one(); // the next inventory report says why
            }
        }
    }

    /// Why no version of `resource` at or above `min` is here (for a miss's answer).
    pub fn why_missing(&self, resource: &ResourceId, min: Option<Version>) -> String {
        let local = self.local.lock().expect("agent lock poisoned");
        let newest = local
            .space
            .inventory()
            .into_iter()
            .filter(|h| &h.resource == resource)
            .map(|h| h.version)
            .max();
        match (newest, min, local.departures.get(resource)) {
            (Some(v), Some(m), _) if v < m => format!("v{v} is here, below the v{m} asked for"),
            (Some(v), _, _) => format!("v{v} is here but staler than allowed"),
            (None, _, Some(d)) => d.describe(self.cfg.clock.now_ms()),
            (None, _, None) => "never fetched here".to_owned(),
        }
    }

    /// The newest `n` departures, newest first (for the inventory).
    pub fn departures(&self, n: usize) -> Vec<(ResourceId, Departed)> {
        self.local
            .lock()
            .expect("agent lock poisoned")
            .departures
            .recent(n)
    }

    async fn load_inner(
        self: &Arc<Self>,
        resource: &ResourceId,
        want: VersionReq,
        priority: Priority,
    ) -> Result<Loaded, LoadError> {
        let mut conn = self.connect().await?;
        let m = match want {
            VersionReq::Exact(v) => conn.manifest(resource, Some(v)).await?,
            VersionReq::AtLeast(min) => {
                let m = conn.manifest(resource, None).await?;
                if let Some(wanted) = min.filter(|w| m.state.version < *w) {
                    return Err(LoadError::TooOld {
                        resource: resource.clone(),
                        newest: m.state.version,
                        wanted,
                    });
                }
                m
            }
        };
        let version = m.state.version;
        let flight = {
            let mut map = self.inflight.lock().expect("agent lock poisoned");
            map.entry((resource.clone(), version)).or_default().clone()
        };
        if priority == Priority::OnDemand {
            flight.boosted.store(true, Ordering::Release);
        }
        let _guard = flight.lock.lock().await;
        let m = Arc::new(m);
        let mut out = self
            .install_locked(conn, m.clone(), priority, &flight)
            .await;
        if out.as_ref().is_err_and(crate::disk::storage_full) {
            out = self.install_on_a_full_disk(&m, priority, &flight).await;
        }
        self.inflight
            .lock()
            .expect("agent lock poisoned")
            .remove(&(resource.clone(), version));
        out
    }

    /// An install that ran out of disk: frees what the state still needs on the disk by the
    /// eviction rule and tries once more (resuming from what is staged); failing that,
    /// removes what is staged and answers [`LoadError::DiskFull`] (see [`crate::disk`]).
    async fn install_on_a_full_disk(
        self: &Arc<Self>,
        m: &Arc<Manifest>,
        priority: Priority,
        flight: &InFlight,
    ) -> Result<Loaded, LoadError> {
        let (resource, version) = (m.state.resource.clone(), m.state.version);
        let staging = self.staging_path(&resource, version);
        let short = || {
            let free = crate::disk::available(&self.cfg.cache_dir).unwrap_or(0);
            crate::disk::shortfall(m.logical_size, crate::disk::bytes_under(&staging), free)
        };
        let need = short();
        let relieved = {
            let mut local = self.local.lock().expect("agent lock poisoned");
            let r = local.space.relieve_disk(need, self.cfg.clock.now());
            self.note_evicted(&mut local, &resource);
            r
        };
        tracing::warn!(
            "the cache's disk is full installing {resource}@{version}: {need} B lacking; {}",
            match &relieved {
                Ok(()) => "evicted by the rule to make room, trying again".to_owned(),
                Err(e) => format!("cannot make room ({e})"),
            }
        );
        if relieved.is_ok() {
            let retry = match self.connect().await {
                Ok(conn) => self.install_locked(conn, m.clone(), priority, flight).await,
                Err(e) => Err(e),
            };
            if !retry.as_ref().is_err_and(crate::disk::storage_full) {
                return retry;
            }
        }
        let short = short();
        let _ = std::fs::remove_dir_all(&staging).or_else(|_| std::fs::remove_file(&staging));
        let _ = std::fs::remove_file(staging.with_extension("manifest"));
        Err(LoadError::DiskFull {
            resource,
            version,
            short,
        })
    }

    async fn install_locked(
        self: &Arc<Self>,
        mut conn: Connection,
        m: Arc<Manifest>,
        priority: Priority,
        flight: &InFlight,
    ) -> Result<Loaded, LoadError> {
        let (resource, version) = (m.state.resource.clone(), m.state.version);
        // Finished by another load while this one waited?
        if let Some(held) = self
            .held_at_least(&resource, Some(version))
            .filter(|h| h.version == version)
        {
            return Ok(Loaded { held, report: None });
        }
        let staging = self.staging_path(&resource, version);
        let staged_manifest = staging.with_extension("manifest");
        self.release_expired();
        let adopted = self.adopt_older(&m, &staging, &staged_manifest)?;
        let (slot, sources) = self.reserve(&m, flight)?;
        if let Some(parent) = staging.parent() {
            std::fs::create_dir_all(parent).map_err(publish_err(parent))?;
        }
        std::fs::write(&staged_manifest, m.encode()).map_err(publish_err(&staged_manifest))?;
        let pacer = (priority == Priority::Predictive).then(|| {
            Pacer::new(
                self.cfg.predictive_rate,
                self.next_free.clone(),
                self.priorities.clone(),
                flight.boosted.clone(),
            )
        });
        // A background install stops as soon as one an execution waits for takes its space
        // (what it fetched stays staged: a later load of it resumes there).
        let direct = self.direct_store().await?;
        let mut from = match &direct {
            Some(store) => crate::direct::ChunkFrom::Store(store),
            None => crate::direct::ChunkFrom::Plane(&mut conn),
        };
        let report = tokio::select! {
            r = install::install(m.clone(), &staging, sources, &mut from, pacer.as_ref(), adopted) => r?,
            () = slot.preempted() => {
                return Err(SpaceError::Preempted(resource, version).into());
            }
        };
        if slot.is_preempted() {
            return Err(SpaceError::Preempted(resource, version).into());
        }
        // Publish: one rename makes the whole, verified state visible.
        std::fs::rename(&staging, slot.path()).map_err(publish_err(slot.path()))?;
        // Its large files recorded before any ensure can name it (see crate::trust).
        let lay = crate::layout::Layout::new(&m, slot.path());
        let sigs = tokio::task::spawn_blocking(move || {
            crate::trust::settle(&lay);
            crate::trust::record(&lay)
        })
        .await
        .unwrap_or_default();
        let held = {
            let mut local = self.local.lock().expect("agent lock poisoned");
            let held = local.space.commit(slot, self.cfg.clock.now())?;
            local
                .chunks
                .save(m.clone(), &held.path)
                .map_err(publish_err(&held.path))?;
            local.chunks.set_sigs(&resource, version, sigs);
            held
        };
        let _ = std::fs::remove_file(&staged_manifest);
        self.update_gauges();
        self.changed.notify_one();
        tracing::info!(
            "installed {resource}@{version}: {} B, {} B on the wire, {} B reused, {} B resumed, {:.1} ms",
            report.state_bytes,
            report.wire_bytes,
            report.reused_bytes,
            report.resumed_bytes,
            report.micros as f64 / 1e3
        );
        Ok(Loaded {
            held,
            report: Some(report),
        })
    }

    /// Install stage 0: when nothing is staged for `m` yet and this capacity holds an older
    /// version of its resource that no one leases, that version's tree becomes the staging
    /// tree, patched in place (the installer verifies every chunk it keeps there and writes
    /// the rest), instead of being copied chunk by chunk. The version adopted, if any.
    fn adopt_older(
        &self,
        m: &Manifest,
        staging: &std::path::Path,
        staged_manifest: &std::path::Path,
    ) -> Result<Option<crate::trust::Adopted>, LoadError> {
        if std::fs::symlink_metadata(staging).is_ok() {
            return Ok(None); // an interrupted attempt: resumed as it is
        }
        let (resource, version) = (&m.state.resource, m.state.version);
        let mut local = self.local.lock().expect("agent lock poisoned");
        let older = local
            .space
            .inventory()
            .into_iter()
            .rfind(|h| &h.resource == resource && h.version < version);
        let Some(old) = older.filter(|h| !local.space.leased(resource, h.version)) else {
            return Ok(None);
        };
        // Which of its files are unchanged since install: checked before the move (a file
        // state's rename moves its change time). No lease can start meanwhile: leases are
        // taken under this lock.
        let Some(adopted) = local.chunks.adoptable(resource, old.version) else {
            return Ok(None);
        };
        // The staged manifest first: a crash after the rename leaves an install to resume.
        if let Some(parent) = staged_manifest.parent() {
            std::fs::create_dir_all(parent).map_err(publish_err(parent))?;
        }
        std::fs::write(staged_manifest, m.encode()).map_err(publish_err(staged_manifest))?;
        if !local.space.adopt(resource, old.version, staging)? {
            return Ok(None);
        }
        local.chunks.remove(resource, old.version);
        tracing::debug!(
            "{resource}@{version}: patching v{} in place ({} large files unchanged)",
            old.version,
            adopted.trusted.len()
        );
        Ok(Some(adopted))
    }

    /// Install stage 1: reserves the budget for `m` (evicting by the rule, noting why each
    /// victim left), and finds the chunks held states already have, leased while they are
    /// copied.
    fn reserve(&self, m: &Manifest, flight: &InFlight) -> Result<Reserved, LoadError> {
        let (resource, version) = (&m.state.resource, m.state.version);
        let mut local = self.local.lock().expect("agent lock poisoned");
        let slot = local.space.begin_with(
            resource,
            version,
            m.logical_size,
            self.cfg.clock.now(),
            flight.boosted.clone(),
        )?;
        self.note_evicted(&mut local, resource);
        let (sources, states) = local.chunks.sources_for(m);
        // Leased while the install copies from them, by its reservation: an install that
        // gives its space to one an execution waits for lets them go at once.
        for (r, v) in &states {
            local.space.lease_source(&slot, r, *v);
        }
        Ok((slot, sources))
    }

    /// Forgets the chunks of the states the space just evicted for `for_resource`, counts
    /// them, and notes why each left.
    fn note_evicted(&self, local: &mut Local, for_resource: &ResourceId) {
        let now_ms = self.cfg.clock.now_ms();
        for (r, v) in local.space.take_evicted() {
            local.chunks.remove(&r, v);
            self.metrics.evictions.inc();
            let why = Why::Evicted {
                version: v,
                for_resource: for_resource.clone(),
            };
            local.departures.record(
                &r,
                Departed {
                    why,
                    unix_ms: now_ms,
                },
            );
        }
    }

    fn staging_path(&self, resource: &ResourceId, version: Version) -> PathBuf {
        self.cfg
            .cache_dir
            .join("staging")
            .join(resource.as_str())
            .join(format!("v{}", version.get()))
    }

    /// Interrupted transfers found in staging: (resource, version).
    pub fn staged(&self) -> Vec<(ResourceId, Version)> {
        let root = self.cfg.cache_dir.join("staging");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if p.extension().is_none() && !p.with_extension("manifest").exists() {
                        stack.push(p);
                    }
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(v) = name
                    .strip_prefix('v')
                    .and_then(|n| n.strip_suffix(".manifest"))
                    .and_then(|n| n.parse().ok())
                    .and_then(Version::new)
                else {
                    continue;
                };
                let rel = dir
                    .strip_prefix(&root)
                    .ok()
                    .and_then(|r| r.to_str())
                    .map(str::to_owned);
                if let Some(r) = rel.and_then(|r| ResourceId::new(r).ok()) {
                    out.push((r, v));
                }
            }
        }
        out
    }

    /// Resumes interrupted transfers (predictive priority), in the background.
    pub fn resume_staged(self: &Arc<Self>) {
        for (r, v) in self.staged() {
            let me = self.clone();
            tokio::spawn(async move {
                tracing::info!("resuming interrupted transfer of {r}@{v}");
                let result = me
                    .load(&r, VersionReq::Exact(v), Priority::Predictive)
                    .await;
                if let Err(LoadError::Data(DataError::UnknownState(_))) = &result {
                    let p = me.staging_path(&r, v);
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                    let _ = std::fs::remove_file(p.with_extension("manifest"));
                }
                me.report(r, v, result);
            });
        }
    }

    /// A newer version of `resource` was committed: refresh held older versions by delta
    /// transfer, or (for `mark_stale` resources) mark them stale.
    pub fn invalidate(self: &Arc<Self>, resource: ResourceId, newest: Version) {
        {
            let mut sup = self.superseded.lock().expect("agent lock poisoned");
            let e = sup
                .entry(resource.clone())
                .or_insert((newest, Instant::now()));
            if newest > e.0 {
                *e = (newest, Instant::now());
            }
        }
        let holds_older = self
            .held_at_least(&resource, None)
            .is_some_and(|h| h.version < newest);
        if !holds_older {
            return;
        }
        self.metrics.invalidations.inc();
        self.changed.notify_one();
        if self
            .cfg
            .mark_stale
            .iter()
            .any(|p| resource.as_str().starts_with(p.as_str()))
        {
            tracing::info!("{resource}: v{newest} committed; held versions marked stale");
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            tracing::info!("{resource}: v{newest} committed; refreshing by delta transfer");
            let result = me
                .load(&resource, VersionReq::Exact(newest), Priority::Predictive)
                .await;
            if result.is_ok() {
                me.drop_older(&resource, newest);
            }
            me.report(resource, newest, result);
        });
    }

    fn report(&self, resource: ResourceId, version: Version, result: Result<Loaded, LoadError>) {
        let result = result.map_err(|e| ((&e).into(), e.to_string()));
        let _ = self.finished_tx.send(Finished {
            resource,
            version,
            result,
        });
    }

    /// The stream of loads the agent started on its own (taken once, by the control loop).
    pub fn take_finished(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Finished>> {
        self.finished_rx.lock().expect("agent lock poisoned").take()
    }

    /// Removes versions of `resource` older than `version` that no one leases (a refresh
    /// replaced them).
    fn drop_older(&self, resource: &ResourceId, version: Version) {
        let mut local = self.local.lock().expect("agent lock poisoned");
        let old: Vec<Version> = local
            .space
            .inventory()
            .into_iter()
            .filter(|h| &h.resource == resource && h.version < version)
            .map(|h| h.version)
            .collect();
        for v in old {
            if let Ok(true) = local.space.remove(resource, v) {
                local.chunks.remove(resource, v);
            }
        }
        drop(local);
        self.update_gauges();
        self.changed.notify_one();
    }

    /// Whether `held` may be served under a staleness bound.
    fn fresh_enough(&self, held: &Held, max_stale: Option<Duration>) -> bool {
        let sup = self.superseded.lock().expect("agent lock poisoned");
        match sup.get(&held.resource) {
            Some((newest, since)) if *newest > held.version => {
                let marked = self
                    .cfg
                    .mark_stale
                    .iter()
                    .any(|p| held.resource.as_str().starts_with(p.as_str()));
                let bound = max_stale.unwrap_or(if marked {
                    Duration::ZERO
                } else {
                    Duration::MAX
                });
                since.elapsed() <= bound
            }
            _ => true,
        }
    }

    /// Drops `ensure` leases that have expired (before eviction decisions, and on each call).
    /// Drops the expired leases; when some were, the next inventory report tells the
    /// coordinator their states may be evicted again (its eviction book spares leased ones).
    fn release_expired(&self) {
        let now = Instant::now();
        let dropped = self.leases.lock().expect("agent lock poisoned").expire(now);
        if dropped > 0 {
            self.changed.notify_one();
        }
    }

    /// Keeps `lease` on `resource` for `d`, releases expired ones, and returns the lease's id;
    /// [`EnsureError::Overloaded`] when [`AgentConfig::max_leases`] are held (counted).
    pub(crate) fn hold(
        &self,
        lease: crate::space::Lease,
        resource: &ResourceId,
        d: Duration,
    ) -> Result<u64, crate::EnsureError> {
        self.release_expired();
        let now = Instant::now();
        let held =
            self.leases
                .lock()
                .expect("agent lock poisoned")
                .hold(lease, resource.clone(), now + d);
        held.map_err(|full| {
            self.metrics.shed.inc();
            crate::EnsureError::Overloaded {
                held: full.held,
                retry_after_s: full
                    .next_end
                    .map_or(1, |t| {
                        t.saturating_duration_since(now).as_secs_f64().ceil() as u64
                    })
                    .max(1),
            }
        })
    }

    /// Extends `ensure` lease `id` to `d` from now; false when it has expired or was released.
    pub fn renew_lease(&self, id: u64, d: Duration) -> bool {
        self.renew_lease_within(id, d, None)
    }

    /// [`Agent::renew_lease`] for a caller that may name `scope`'s states only (`None`:
    /// every state): a lease on another state answers false, like an unknown one.
    pub fn renew_lease_within(&self, id: u64, d: Duration, scope: Option<&Scope>) -> bool {
        self.release_expired();
        let until = Instant::now() + d;
        let mut leases = self.leases.lock().expect("agent lock poisoned");
        let visible = |r: Option<&ResourceId>| scope.is_none_or(|s| r.is_some_and(|r| s.admits(r)));
        visible(leases.resource(id)) && leases.renew(id, until)
    }

    /// Releases `ensure` lease `id` now (its state may be evicted from then on); false when
    /// it had expired or was released already.
    pub fn release_lease(&self, id: u64) -> bool {
        self.release_lease_within(id, None)
    }

    /// [`Agent::release_lease`] for a caller that may name `scope`'s states only (`None`:
    /// every state): a lease on another state answers false, like an unknown one.
    pub fn release_lease_within(&self, id: u64, scope: Option<&Scope>) -> bool {
        self.release_expired();
        let released = {
            let mut leases = self.leases.lock().expect("agent lock poisoned");
            let r = leases.resource(id);
            scope.is_none_or(|s| r.is_some_and(|r| s.admits(r))) && leases.release(id)
        };
        if released {
            self.changed.notify_one(); // its state is evictable again: say so
        }
        released
    }

    /// A lease on exactly `resource@version` without counting a use.
    pub(crate) fn lease_exact(
        &self,
        resource: &ResourceId,
        version: Version,
    ) -> Option<crate::space::Lease> {
        self.local
            .lock()
            .expect("agent lock poisoned")
            .space
            .lease(resource, version)
    }

    pub(crate) fn history(&self) -> &HistoryLog {
        &self.history
    }

    pub(crate) fn hit(
        &self,
        resource: &ResourceId,
        min: Option<Version>,
        max_stale: Option<Duration>,
    ) -> Option<(Held, crate::space::Lease)> {
        let got = self.local.lock().expect("agent lock poisoned").space.get(
            resource,
            min,
            self.cfg.clock.now(),
        )?;
        self.fresh_enough(&got.0, max_stale).then_some(got)
    }
}

/// The error of a failed step publishing a state at `path` (or staging it).
fn publish_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Publish {
        path: path.to_owned(),
        source,
    }
}

/// Runs [`Agent::expire_now`] every second while the agent lives.
async fn expire_loop(agent: std::sync::Weak<Agent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match agent.upgrade() {
            Some(a) => a.expire_now(),
            None => return,
        }
    }
}
