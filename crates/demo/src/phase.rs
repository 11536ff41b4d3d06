//! One served run of the demo: a coordinator and `capacities` agents in this process (each
//! with its own cache directory and HTTP API, talking gRPC and moving chunks over loopback
//! TCP like separate processes would), a copy of the prepared store, and a driver that plays
//! the workload's served part in real time: each event is POSTed to the coordinator's
//! `/v1/events` `lead` before its execution, the execution then runs where the coordinator
//! placed it and calls `ensure` for each state it reads; uploads commit new versions.
//!
//! [`serve`] runs in stages: [`start_cluster`], the executions, the uploads and the progress
//! ticker as tasks, then [`tally`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prewarm_agent::{Agent, AgentConfig, DataPath};
use prewarm_coordinator::{Brain, CoordinatorConfig, Running};
use prewarm_core::CapacityId;
use prewarm_report::text;
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;
use tokio::task::JoinHandle;

use crate::driver::{Driver, Pool, Shared};
use crate::workload::Workload;

/// How one run is set up.
pub struct Setup {
    /// Label in progress lines and the report.
    pub label: &'static str,
    /// The workload.
    pub work: Arc<Workload>,
    /// Initial contents of the states uploads rewrite.
    pub contents: HashMap<usize, Vec<u8>>,
    /// The prepared store, copied for this run.
    pub base_store: PathBuf,
    /// This run's directory.
    pub dir: PathBuf,
    /// Number of agents.
    pub capacities: usize,
    /// Each agent's cache budget.
    pub cache_size: u64,
    /// Time between an event and its execution.
    pub lead: Duration,
    /// The model (`None`: on-demand only).
    pub brain: Option<Brain>,
    /// Print progress.
    pub progress: bool,
}

/// One execution's outcome.
#[derive(Clone, Debug)]
pub struct ExecResult {
    /// Seconds since the served part began.
    pub t: f64,
    /// Every read was installed (at a recent-enough version) when it started.
    pub warm: bool,
    /// Time from its start until every state it reads was ready, milliseconds.
    pub ready_ms: f64,
    /// An ensure failed.
    pub failed: bool,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct PhaseResult {
    /// Its label.
    pub label: String,
    /// Every execution.
    pub execs: Vec<ExecResult>,
    /// Bytes the agents received over the data plane.
    pub wire_bytes: u64,
    /// Bytes copied from held states instead (delta).
    pub reused_bytes: u64,
    /// Predictive transfers the coordinator requested.
    pub prefetches: u64,
    /// Their sizes.
    pub prefetched_bytes: u64,
    /// Sizes of those no later execution on that capacity read in this run.
    pub prefetched_unread_bytes: u64,
    /// States evicted.
    pub evictions: u64,
    /// New versions committed.
    pub uploads: u64,
    /// Wall time of the served part, seconds.
    pub seconds: f64,
    /// Why reads were not hits.
    pub cold: ColdCauses,
}

impl PhaseResult {
    /// Warm-start share, percent.
    pub fn warm_rate(&self) -> f64 {
        100.0 * self.execs.iter().filter(|e| e.warm).count() as f64 / self.execs.len().max(1) as f64
    }

    /// Time-to-ready at quantile `q` of the executions that did not fail, milliseconds.
    pub fn ready_ms(&self, q: f64) -> f64 {
        ready_quantile(&self.execs, q)
    }

    /// Mean time-to-ready of the executions that did not fail, milliseconds.
    pub fn mean_ready_ms(&self) -> f64 {
        let ok = ready_times(&self.execs);
        ok.iter().sum::<f64>() / ok.len().max(1) as f64
    }

    /// Executions that failed.
    pub fn failed(&self) -> usize {
        self.execs.iter().filter(|e| e.failed).count()
    }
}

/// Why reads found their state missing, counted per read.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ColdCauses {
    /// No earlier execution on that capacity read the state, and nothing was prefetched.
    pub first_use: u64,
    /// Read before, but a newer version is needed now.
    pub new_version: u64,
    /// Read before at this version, gone since (evicted).
    pub evicted: u64,
    /// Prefetched for this execution, not installed when it started.
    pub late: u64,
}

/// Why a run could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    /// A file, directory, socket or runtime could not be made.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The run's store could not be opened.
    #[error(transparent)]
    Store(#[from] prewarm_store::OpenError),
    /// The coordinator did not start.
    #[error("starting the coordinator")]
    Coordinator(#[source] prewarm_coordinator::StartError),
    /// An agent did not start.
    #[error("opening an agent's cache")]
    Agent(#[source] prewarm_agent::agent::StartError),
    /// A generated name is not a valid id.
    #[error(transparent)]
    Id(#[from] prewarm_core::IdError),
    /// The agents did not attach to the coordinator in time.
    #[error("the agents did not attach within 10 s")]
    Attach,
    /// A task of the run panicked.
    #[error("a task of the run failed")]
    Task(#[from] tokio::task::JoinError),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> PhaseError {
    move |source| PhaseError::Io { what, source }
}

fn ready_times(done: &[ExecResult]) -> Vec<f64> {
    done.iter()
        .filter(|d| !d.failed)
        .map(|d| d.ready_ms)
        .collect()
}

/// Time-to-ready at quantile `q` over `done` (failed executions left out), milliseconds.
fn ready_quantile(done: &[ExecResult], q: f64) -> f64 {
    let mut v = ready_times(done);
    v.sort_by(f64::total_cmp);
    prewarm_core::percentile(&v, q)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Runs `s` on a runtime of its own (dropped at the end, which stops every task it started).
pub fn run(s: Setup) -> Result<PhaseResult, PhaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io("a runtime for the cluster"))?;
    rt.block_on(serve(s))
}

/// The coordinator and agents of one run.
struct Cluster {
    running: Running,
    store: Arc<Store>,
    agents: Vec<Arc<Agent>>,
    /// Each agent's HTTP API.
    apis: Vec<Pool>,
    /// Capacity name → index into `agents`.
    names: HashMap<String, usize>,
}

/// Copies the prepared store, starts the coordinator and the agents, waits for them to attach.
async fn start_cluster(s: &Setup, brain: Option<Brain>) -> Result<Cluster, PhaseError> {
    let store_dir = s.dir.join("store");
    copy_tree(&s.base_store, &store_dir).map_err(io("copying the prepared store"))?;
    let location = store_dir.to_str().ok_or(PhaseError::Io {
        what: "a UTF-8 store path",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let store = Arc::new(Store::open_or_create(location).await?);
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let running = prewarm_coordinator::start(
        store.clone(),
        CoordinatorConfig {
            listen: loopback,
            data_listen: loopback,
            data_unix: None,
            token: None,
            poll: Duration::from_millis(100),
            clock: prewarm_core::Clock::system(),
            http: prewarm_http::Limits::default(),
            events_rate: None,
            ingest: Default::default(),
            tls: None,
        },
        brain,
    )
    .await
    .map_err(PhaseError::Coordinator)?;
    let mut cluster = Cluster {
        running,
        store,
        agents: Vec::new(),
        apis: Vec::new(),
        names: HashMap::new(),
    };
    let url = format!("http://{}", cluster.running.grpc);
    for i in 0..s.capacities {
        start_agent(s, i, &url, &mut cluster).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected(&cluster.running) < s.capacities {
        if Instant::now() >= deadline {
            return Err(PhaseError::Attach);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(cluster)
}

fn connected(r: &Running) -> usize {
    let status = r.coordinator.status();
    status.capacities.iter().filter(|c| c.connected).count()
}

/// Opens agent `i` with its cache and HTTP API and attaches it to the coordinator at `url`.
async fn start_agent(s: &Setup, i: usize, url: &str, c: &mut Cluster) -> Result<(), PhaseError> {
    let name = CapacityId::new(format!("cap-{i}"))?;
    c.names.insert(name.as_str().to_owned(), i);
    let cache_dir = s.dir.join(name.as_str());
    std::fs::create_dir_all(&cache_dir).map_err(io("creating an agent's cache directory"))?;
    let agent = Agent::open(AgentConfig {
        name,
        cache_dir,
        cache_size: s.cache_size,
        predictive_rate: None,
        mark_stale: Vec::new(),
        token: None,
        tls: None,
        lease: Duration::from_secs(1),
        max_leases: prewarm_agent::DEFAULT_MAX_LEASES,
        data_path: DataPath::Tcp,
        data_source: prewarm_agent::DataSource::Coordinator,
        clock: prewarm_core::Clock::system(),
    })
    .map_err(PhaseError::Agent)?;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding an agent's API"))?;
    let addr = l
        .local_addr()
        .map_err(io("an agent's API address"))?
        .to_string();
    // Served as `prewarm agent` serves it.
    let router = prewarm_agent::http::router(agent.clone(), Default::default());
    tokio::spawn(prewarm_http::serve(
        l,
        router,
        prewarm_http::Limits::default(),
    ));
    tokio::spawn(prewarm_agent::control::run(
        agent.clone(),
        url.to_owned(),
        addr.clone(),
    ));
    c.apis.push(Pool::new(addr));
    c.agents.push(agent);
    Ok(())
}

async fn serve(mut s: Setup) -> Result<PhaseResult, PhaseError> {
    let brain = s.brain.take();
    let mut cluster = start_cluster(&s, brain).await?;
    let work = s.work.clone();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let driver = Arc::new(Driver {
        work: work.clone(),
        start,
        coordinator: Pool::new(cluster.running.grpc.to_string()),
        apis: std::mem::take(&mut cluster.apis),
        names: std::mem::take(&mut cluster.names),
        index: work
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect(),
        shared: Shared::new(work.states.len()),
    });
    let tasks = spawn_executions(&driver, s.lead);
    let writer = spawn_uploads(&driver, cluster.store.clone(), s.contents);
    let ticker = s.progress.then(|| spawn_ticker(&driver, s.label));
    let t0 = Instant::now();
    for t in tasks {
        t.await?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    let uploads = writer.await?;
    // Let the last predictive transfers finish before counting bytes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = PhaseResult {
        label: s.label.to_owned(),
        uploads,
        seconds,
        ..Default::default()
    };
    Ok(tally(r, &cluster.agents, &driver.shared))
}

/// One task per served execution: its event `lead` ahead, then the execution.
fn spawn_executions(driver: &Arc<Driver>, lead: Duration) -> Vec<JoinHandle<()>> {
    let served = driver.work.served();
    let mut tasks = Vec::with_capacity(served.len());
    for e in served {
        let d = driver.clone();
        let exec_at = d.at(e.t);
        let event_at = exec_at.checked_sub(lead).unwrap_or(d.start);
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(event_at).await;
            if let Err(err) = d.execute(&e, exec_at).await {
                tracing::warn!("execution at {:.1}s failed: {err}", e.t);
                d.shared.done.lock().expect("lock").push(ExecResult {
                    t: e.t - d.work.split,
                    warm: false,
                    ready_ms: 0.0,
                    failed: true,
                });
            }
        }));
    }
    tasks
}

/// The uploads as one task: each rewrites 2% of its state and commits a new version; the
/// task returns how many committed.
fn spawn_uploads(
    driver: &Arc<Driver>,
    store: Arc<Store>,
    mut contents: HashMap<usize, Vec<u8>>,
) -> JoinHandle<u64> {
    let d = driver.clone();
    tokio::spawn(async move {
        let snap = Snapshotter::new(store);
        let mut rng = crate::dataset::Rng::new(99);
        let mut n = 0u64;
        for u in &d.work.uploads {
            tokio::time::sleep_until(d.at(u.t)).await;
            let Some(buf) = contents.get_mut(&u.state) else {
                continue;
            };
            // Rewrite 2% of the state in 4 KiB pages: a delta, not a new blob.
            let pages = buf.len() / 4096;
            for _ in 0..pages.div_ceil(50) {
                let p = rng.below(pages as u64) as usize * 4096;
                rng.fill(&mut buf[p..p + 4096]);
            }
            let id = &d.work.states[u.state].id;
            match snap.commit_bytes(id, Bytes::from(buf.clone())).await {
                Ok(o) => {
                    d.shared
                        .versions
                        .lock()
                        .expect("lock")
                        .insert(u.state, o.committed.state.version.get());
                    n += 1;
                }
                Err(e) => tracing::warn!("upload of {id}: {e}"),
            }
        }
        n
    })
}

/// A progress line every 5 seconds.
fn spawn_ticker(driver: &Arc<Driver>, label: &'static str) -> JoinHandle<()> {
    let d = driver.clone();
    let (start, total) = (d.start, d.work.end - d.work.split);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(start, Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let done = d.shared.done.lock().expect("lock").clone();
            let warm = done.iter().filter(|d| d.warm).count();
            println!(
                "  [{label}] {:>4.0}s of {total:.0}s · {} executions · warm {:.1}% · time-to-ready p50 {}",
                start.elapsed().as_secs_f64(),
                done.len(),
                100.0 * warm as f64 / done.len().max(1) as f64,
                text::millis(ready_quantile(&done, 0.5)),
            );
        }
    })
}

/// Fills in `r` from the agents' counters and what the driver recorded.
fn tally(mut r: PhaseResult, agents: &[Arc<Agent>], shared: &Shared) -> PhaseResult {
    for a in agents {
        r.wire_bytes += a.metrics.wire_bytes.get();
        r.reused_bytes += a.metrics.reused_bytes.get();
        r.evictions += a.metrics.evictions.get();
    }
    let reads = shared.reads.lock().expect("lock");
    for &(cap, state, bytes, when) in shared.prefetched.lock().expect("lock").iter() {
        r.prefetches += 1;
        r.prefetched_bytes += bytes;
        let read = reads
            .get(&(cap, state))
            .is_some_and(|ts| ts.iter().any(|&(t, _)| t >= when));
        if !read {
            r.prefetched_unread_bytes += bytes;
        }
    }
    r.cold = *shared.cold.lock().expect("lock");
    r.execs = std::mem::take(&mut *shared.done.lock().expect("lock"));
    r.execs.sort_by(|a, b| a.t.total_cmp(&b.t));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(ready_ms: f64, failed: bool, warm: bool) -> ExecResult {
        ExecResult {
            t: 0.0,
            warm,
            ready_ms,
            failed,
        }
    }

    #[test]
    fn figures_leave_failed_executions_out_of_time_to_ready() {
        let p = PhaseResult {
            execs: vec![
                exec(1.0, false, true),
                exec(3.0, false, false),
                exec(100.0, true, false),
            ],
            ..Default::default()
        };
        assert_eq!(p.ready_ms(0.0), 1.0);
        assert_eq!(p.ready_ms(1.0), 3.0);
        assert_eq!(p.mean_ready_ms(), 2.0);
        assert_eq!(p.failed(), 1);
        assert!((p.warm_rate() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(PhaseResult::default().ready_ms(0.5), 0.0);
    }
}
