//! One served run of the demo: a coordinator and `capacities` agents in this process (each
//! with its own cache directory and HTTP API, talking gRPC and moving chunks over loopback
//! TCP like separate processes would), a copy of the prepared store, and a driver that plays
//! the workload's served part in real time: each event is POSTed to the coordinator's
//! `/v1/events` `lead` before its execution, the execution then runs where the coordinator
//! placed it and calls `ensure` for each state it reads; uploads commit new versions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use prewarm_agent::client::EnsureClient;
use prewarm_agent::{Agent, AgentConfig, DataPath};
use prewarm_coordinator::{Brain, CoordinatorConfig};
use prewarm_core::{CapacityId, ResourceId};
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;

use super::workload::{Exec, Workload};
use crate::output;

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

/// A few kept-alive connections to one HTTP endpoint (an `EnsureClient` serves one call at
/// a time; executions run concurrently).
struct Pool {
    addr: String,
    idle: Mutex<Vec<EnsureClient>>,
}

impl Pool {
    fn new(addr: String) -> Self {
        Self {
            addr,
            idle: Mutex::default(),
        }
    }

    async fn call(&self, post: Option<Bytes>, path: &str) -> anyhow::Result<Bytes> {
        let c = self
            .idle
            .lock()
            .expect("pool lock poisoned")
            .pop()
            .unwrap_or_else(|| EnsureClient::new(self.addr.clone(), None));
        let r = match post {
            Some(body) => c.post_json(path, body).await,
            None => c.get(path).await,
        };
        self.idle.lock().expect("pool lock poisoned").push(c);
        Ok(r?)
    }
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
pub fn run(s: Setup) -> anyhow::Result<PhaseResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("a runtime for the cluster")?;
    rt.block_on(serve(s))
}

/// (capacity, state) → (time, version needed) of each read, seconds since the start.
type Reads = HashMap<(usize, usize), Vec<(f64, u64)>>;

/// What every execution of a run shares.
struct Driver {
    work: Arc<Workload>,
    /// The served part's start.
    start: tokio::time::Instant,
    coordinator: Pool,
    apis: Vec<Pool>,
    /// Capacity name → index into `apis`.
    names: HashMap<String, usize>,
    /// State id → index into the workload's states.
    index: HashMap<ResourceId, usize>,
    shared: Shared,
}

struct Shared {
    versions: Mutex<HashMap<usize, u64>>,
    /// (capacity, state) → times it was read, seconds since the start.
    reads: Mutex<Reads>,
    cold: Mutex<ColdCauses>,
    /// (capacity, state, bytes, when).
    prefetched: Mutex<Vec<(usize, usize, u64, f64)>>,
    done: Mutex<Vec<ExecResult>>,
}

async fn serve(s: Setup) -> anyhow::Result<PhaseResult> {
    let store_dir = s.dir.join("store");
    copy_tree(&s.base_store, &store_dir).context("copying the prepared store")?;
    let store = Arc::new(Store::open_or_create(store_dir.to_str().context("utf-8 path")?).await?);
    let running = prewarm_coordinator::start(
        store.clone(),
        CoordinatorConfig {
            listen: "127.0.0.1:0".parse()?,
            data_listen: "127.0.0.1:0".parse()?,
            data_unix: None,
            token: None,
            poll: Duration::from_millis(100),
            clock: prewarm_core::Clock::system(),
        },
        s.brain,
    )
    .await
    .context("starting the coordinator")?;
    let coordinator_url = format!("http://{}", running.grpc);
    let mut agents = Vec::new();
    let mut apis = Vec::new();
    let mut names = HashMap::new();
    for i in 0..s.capacities {
        let name = CapacityId::new(format!("cap-{i}"))?;
        names.insert(name.as_str().to_owned(), i);
        let cache_dir = s.dir.join(name.as_str());
        std::fs::create_dir_all(&cache_dir)?;
        let agent = Agent::open(AgentConfig {
            name,
            cache_dir,
            cache_size: s.cache_size,
            predictive_rate: None,
            mark_stale: Vec::new(),
            token: None,
            lease: Duration::from_secs(1),
            data_path: DataPath::Tcp,
            clock: prewarm_core::Clock::system(),
        })
        .context("opening an agent's cache")?;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?.to_string();
        let l = axum::serve::ListenerExt::tap_io(l, |s| {
            let _ = s.set_nodelay(true);
        });
        let router = prewarm_agent::http::router(agent.clone(), None);
        tokio::spawn(async move { axum::serve(l, router).await });
        tokio::spawn(prewarm_agent::control::run(
            agent.clone(),
            coordinator_url.clone(),
            addr.clone(),
        ));
        apis.push(Pool::new(addr));
        agents.push(agent);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running
        .coordinator
        .status()
        .capacities
        .iter()
        .filter(|c| c.connected)
        .count()
        < s.capacities
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agents did not attach within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let work = s.work.clone();
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let driver = Arc::new(Driver {
        work: work.clone(),
        start,
        coordinator: Pool::new(running.grpc.to_string()),
        apis,
        names,
        index: work
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect(),
        shared: Shared {
            versions: Mutex::new((0..work.states.len()).map(|i| (i, 1)).collect()),
            reads: Mutex::default(),
            cold: Mutex::default(),
            prefetched: Mutex::default(),
            done: Mutex::default(),
        },
    });
    let split = work.split;
    let at = move |t: f64| start + Duration::from_secs_f64((t - split).max(0.0));
    let served = work.served();
    let mut tasks = Vec::with_capacity(served.len());
    for e in served {
        let d = driver.clone();
        let (event_at, exec_at) = (at(e.t).checked_sub(s.lead).unwrap_or(start), at(e.t));
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(event_at).await;
            if let Err(err) = d.execute(&e, exec_at).await {
                tracing::warn!("execution at {:.1}s failed: {err:#}", e.t);
                d.shared.done.lock().expect("lock").push(ExecResult {
                    t: e.t - d.work.split,
                    warm: false,
                    ready_ms: 0.0,
                    failed: true,
                });
            }
        }));
    }
    let writer = {
        let (work, d, store) = (work.clone(), driver.clone(), store.clone());
        let mut contents = s.contents;
        tokio::spawn(async move {
            let snap = Snapshotter::new(store);
            let mut rng = crate::dataset::Rng::new(99);
            let mut n = 0u64;
            for u in &work.uploads {
                tokio::time::sleep_until(at(u.t)).await;
                let Some(buf) = contents.get_mut(&u.state) else {
                    continue;
                };
                // Rewrite 2% of the state in 4 KiB pages: a delta, not a new blob.
                let pages = buf.len() / 4096;
                for _ in 0..pages.div_ceil(50) {
                    let p = rng.below(pages as u64) as usize * 4096;
                    rng.fill(&mut buf[p..p + 4096]);
                }
                let id = &work.states[u.state].id;
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
    };
    let ticker = s.progress.then(|| {
        let (d, label, total) = (driver.clone(), s.label, work.end - work.split);
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
                    output::millis(percentile(&done, 0.5)),
                );
            }
        })
    });
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

    let mut r = PhaseResult {
        label: s.label.to_owned(),
        uploads,
        seconds,
        ..Default::default()
    };
    for a in &agents {
        r.wire_bytes += a.metrics.wire_bytes.get();
        r.reused_bytes += a.metrics.reused_bytes.get();
        r.evictions += a.metrics.evictions.get();
    }
    let shared = &driver.shared;
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
    Ok(r)
}

/// Mean time-to-ready, milliseconds.
pub fn mean(done: &[ExecResult]) -> f64 {
    let ok: Vec<f64> = done
        .iter()
        .filter(|d| !d.failed)
        .map(|d| d.ready_ms)
        .collect();
    ok.iter().sum::<f64>() / ok.len().max(1) as f64
}

/// Time-to-ready at quantile `q` over `done`, milliseconds.
pub fn percentile(done: &[ExecResult], q: f64) -> f64 {
    let mut v: Vec<f64> = done
        .iter()
        .filter(|d| !d.failed)
        .map(|d| d.ready_ms)
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

impl Driver {
    /// Counts why the read of `state` (needing `version`) on `cap` at `t` was not a hit.
    fn count_cold(&self, cap: usize, state: usize, version: u64, t: f64) {
        let prev = self
            .shared
            .reads
            .lock()
            .expect("lock")
            .get(&(cap, state))
            .and_then(|v| {
                v.iter()
                    .copied()
                    .filter(|p| p.0 < t)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
            });
        let since = prev.map_or(f64::NEG_INFINITY, |p| p.0);
        let prefetched = self
            .shared
            .prefetched
            .lock()
            .expect("lock")
            .iter()
            .any(|&(c, s, _, w)| c == cap && s == state && w >= since && w <= t);
        let mut cold = self.shared.cold.lock().expect("lock");
        match prev {
            _ if prefetched => cold.late += 1,
            None => cold.first_use += 1,
            Some((_, v)) if version > v => cold.new_version += 1,
            Some(_) => cold.evicted += 1,
        }
    }

    /// Posts `e`'s event, waits for its start, runs it where the coordinator placed it.
    async fn execute(&self, e: &Exec, exec_at: tokio::time::Instant) -> anyhow::Result<()> {
        let (work, start, shared) = (&self.work, self.start, &self.shared);
        let body = serde_json::json!({"event": {"type": e.kind, "key": e.key}});
        let answer = self
            .coordinator
            .call(Some(Bytes::from(body.to_string())), "/v1/events")
            .await
            .context("POST /v1/events")?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        let cap = answer["placement"]["capacity"]
            .as_str()
            .and_then(|c| self.names.get(c).copied())
            .context("the coordinator placed the event on no known capacity")?;
        let now = start.elapsed().as_secs_f64();
        for t in answer["transfers"].as_array().into_iter().flatten() {
            let state = t["resource"]
                .as_str()
                .and_then(|r| ResourceId::new(r).ok())
                .and_then(|r| self.index.get(&r).copied());
            if let (Some(state), Some(bytes)) = (state, t["bytes"].as_u64()) {
                shared
                    .prefetched
                    .lock()
                    .expect("lock")
                    .push((cap, state, bytes, now));
            }
        }
        tokio::time::sleep_until(exec_at).await;
        let t = start.elapsed().as_secs_f64();
        let began = Instant::now();
        let versions: Vec<u64> = {
            let v = shared.versions.lock().expect("lock");
            e.reads.iter().map(|r| v[r]).collect()
        };
        let calls = e.reads.iter().zip(&versions).map(|(&r, version)| {
            let path = format!(
                "/v1/states/{}?min_version={version}&key={}&type={}&timeout_ms=30000",
                work.states[r].id, e.key, e.kind
            );
            async move {
                let body = self.apis[cap].call(None, &path).await?;
                let v: serde_json::Value = serde_json::from_slice(&body)?;
                anyhow::Ok(v["hit"].as_bool().unwrap_or(false))
            }
        });
        let hits = futures::future::join_all(calls).await;
        let ready_ms = began.elapsed().as_secs_f64() * 1e3;
        for ((&r, &version), hit) in e.reads.iter().zip(&versions).zip(&hits) {
            if matches!(hit, Ok(false)) {
                self.count_cold(cap, r, version, t);
            }
        }
        {
            let mut reads = shared.reads.lock().expect("lock");
            for (&r, &version) in e.reads.iter().zip(&versions) {
                reads.entry((cap, r)).or_default().push((t, version));
            }
        }
        let failed = hits.iter().any(|h| h.is_err());
        shared.done.lock().expect("lock").push(ExecResult {
            t: e.t - work.split,
            warm: !failed && hits.iter().all(|h| matches!(h, Ok(true))),
            ready_ms,
            failed,
        });
        Ok(())
    }
}
