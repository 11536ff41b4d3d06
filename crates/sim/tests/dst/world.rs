//! The simulated fleet of one seed: a real coordinator (its engine, book, transfers and data
//! plane over loopback TCP) on a store whose object store injects faults, and three real
//! agents with small byte budgets, each in a cache directory of its own. Each process-like
//! part runs on a tokio runtime of its own, so a crash is that runtime shut down: its tasks
//! are dropped at their next await point (in flight: installs, evictions, acknowledgements),
//! its sockets close, its blocking work runs to its end; a restart opens the same directory
//! again. What a crash cannot do in-process: stop a thread between two instructions (the
//! process tests in `crates/cli/tests/crashes.rs` SIGKILL real agents for that).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prewarm_agent::{Agent, AgentConfig, DataPath};
use prewarm_coordinator::{Brain, Coordinator, CoordinatorConfig, Running, Service};
use prewarm_core::{CapacityId, Clock, ResourceId, Version};
use prewarm_engine::{EngineConfig, PlannerConfig, rules_for};
use prewarm_store::{Store, StoreConfig};
use tokio::runtime::Runtime;

use crate::catalog::{Catalog, Digest};
use crate::faulty::{Faults, Faulty};
use crate::link::{Link, Rates, Reach};
use crate::ops::Op;
use crate::rng::{Rng, mix};
use crate::tally::Tally;

/// Simulated time at the start (Unix seconds).
const T0: f64 = 1_900_000_000.0;

/// A lease the harness holds, as `ensure` answered it.
pub struct Kept {
    /// The state.
    pub resource: ResourceId,
    /// Its version.
    pub version: Version,
    /// The lease's id.
    pub id: u64,
}

/// A running agent.
pub struct Up {
    rt: Runtime,
    /// The agent.
    pub agent: Arc<Agent>,
    /// Its control plane.
    pub link: Arc<Link>,
    /// Leases held on it.
    pub leases: Vec<Kept>,
}

impl Up {
    /// The agent's runtime.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.handle()
    }
}

/// One capacity: its configuration and, while it runs, its agent.
pub struct Node {
    /// How it starts.
    pub cfg: AgentConfig,
    /// While running.
    pub up: Option<Up>,
    /// Starts so far (a crash ends one).
    pub incarnation: u32,
}

/// Everything of one seed.
pub struct World {
    /// The seed.
    pub seed: u64,
    /// The schedule's randomness.
    pub rng: Rng,
    /// What happened, step by step (printed when the seed fails).
    pub log: Vec<String>,
    /// The committed truth.
    pub cat: Catalog,
    /// The store's faults.
    pub faults: Arc<Faults>,
    /// The clock coordinator and agents share.
    pub clock: Clock,
    /// How agents reach the coordinator.
    pub reach: Reach,
    coord: Option<(Runtime, Running)>,
    engine: EngineConfig,
    /// The capacities.
    pub nodes: Vec<Node>,
    /// Message faults of the links.
    pub rates: Rates,
    /// Message faults off for now (a step that counts messages).
    pub quiet: bool,
    /// Wire bytes of the answers to transfer requests so far.
    pub answered_wire: u64,
    /// Work in flight (ensures, transfers, events).
    pub ops: Vec<Op>,
    /// Counts.
    pub tally: Tally,
    /// Digests of installed states already compared, by (path, inode, mtime).
    pub seen: HashMap<(PathBuf, u64, i64), Digest>,
    dir: tempfile::TempDir,
}

fn runtime(name: &str) -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Shuts a runtime down as a crash would end a process (blocking work may finish).
async fn shut(rt: Runtime) {
    let _ = tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(10))).await;
}

impl World {
    /// The store, resources, coordinator and agents of `seed`, started (agents attach on
    /// their own, as after any start).
    pub async fn build(seed: u64) -> Result<World, String> {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cat = Catalog::build(dir.path(), &mut rng).await?;
        let policy = ["lru", "s3fifo", "gdsf", "value"][rng.index(4)];
        let keep_alive = [60.0, 600.0, f64::INFINITY][rng.index(3)];
        let (rule, keep) = rules_for(policy, keep_alive);
        let planner = PlannerConfig {
            bandwidth: 1e12,
            latency_s: 0.0,
            ..PlannerConfig::default()
        };
        let engine = EngineConfig {
            planner,
            top_k: 3,
            rule,
            keep,
            ..EngineConfig::default()
        };
        let pick = |rng: &mut Rng, v: &[u32]| v[rng.index(v.len())];
        let rates = Rates {
            drop: pick(&mut rng, &[0, 10, 40]),
            dup: pick(&mut rng, &[0, 30, 80]),
            delay: pick(&mut rng, &[0, 50, 150]),
        };
        let big = cat.res.iter().any(|r| r.id.as_str() == "s/big");
        let clock = Clock::manual(T0);
        let nodes = (0..3)
            .map(|i| {
                let budget = if i == 0 && big {
                    6_000_000
                } else {
                    [250_000, 400_000, 700_000, 1_200_000][rng.index(4)]
                };
                Node {
                    cfg: AgentConfig {
                        name: CapacityId::new(format!("c{i}")).expect("valid id"),
                        cache_dir: dir.path().join(format!("c{i}")),
                        cache_size: budget,
                        predictive_rate: None,
                        mark_stale: vec!["m/".into()],
                        token: None,
                        tls: None,
                        lease: Duration::from_secs(300),
                        max_leases: prewarm_agent::DEFAULT_MAX_LEASES,
                        data_path: DataPath::Tcp,
                        data_source: prewarm_agent::DataSource::Coordinator,
                        clock: clock.clone(),
                    },
                    up: None,
                    incarnation: 0,
                }
            })
            .collect();
        let mut w = World {
            seed,
            faults: Arc::new(Faults::new(rng.next_u64())),
            rng,
            log: Vec::new(),
            cat,
            clock,
            reach: Arc::new(Mutex::new(None)),
            coord: None,
            engine,
            nodes,
            rates,
            quiet: false,
            answered_wire: 0,
            ops: Vec::new(),
            tally: Tally::default(),
            seen: HashMap::new(),
            dir,
        };
        w.note(format!(
            "seed {seed}: policy {policy}, keep-alive {keep_alive} s, message faults {rates:?}"
        ));
        w.start_coordinator().await?;
        for i in 0..w.nodes.len() {
            w.start_agent(i).await?;
        }
        Ok(w)
    }

    /// Appends a line to the step log.
    pub fn note(&mut self, line: String) {
        self.log.push(line);
    }

    /// The running coordinator.
    pub fn coordinator(&self) -> Option<(Arc<Coordinator>, tokio::runtime::Handle)> {
        self.coord
            .as_ref()
            .map(|(rt, r)| (r.coordinator.clone(), rt.handle().clone()))
    }

    /// Starts a coordinator (a fresh process: new instance, new ports, empty book).
    pub async fn start_coordinator(&mut self) -> Result<(), String> {
        let rt = runtime("coordinator")?;
        let local =
            object_store::local::LocalFileSystem::new_with_prefix(self.dir.path().join("store"))
                .map_err(|e| e.to_string())?;
        let os: Arc<dyn object_store::ObjectStore> =
            Arc::new(Faulty::new(local, self.faults.clone()));
        let cfg = CoordinatorConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_listen: "127.0.0.1:0".parse().expect("address"),
            data_unix: None,
            token: None,
            poll: Duration::from_millis(50),
            clock: self.clock.clone(),
            http: prewarm_http::Limits::default(),
            events_rate: None,
            ingest: Default::default(),
            tls: None,
        };
        let brain = Brain::new(self.engine.clone(), None);
        let started = rt.spawn(async move {
            let store = Store::open_over(os, "faulty", StoreConfig::default(), false).await;
            let store = Arc::new(store.map_err(|e| e.to_string())?);
            let r = prewarm_coordinator::start(store, cfg, Some(brain)).await;
            r.map_err(|e| e.to_string())
        });
        let running = started.await.map_err(|e| e.to_string())??;
        *self.reach.lock().expect("reach lock") =
            Some((Service(running.coordinator.clone()), rt.handle().clone()));
        self.coord = Some((rt, running));
        Ok(())
    }

    /// Crashes the coordinator: its runtime shut down, its streams and sockets gone.
    pub async fn crash_coordinator(&mut self) {
        *self.reach.lock().expect("reach lock") = None;
        if let Some((rt, running)) = self.coord.take() {
            drop(running);
            shut(rt).await;
            self.tally.coordinator_crashes += 1;
        }
    }

    /// Starts agent `i` on its cache directory (which it checks, as at any start).
    pub async fn start_agent(&mut self, i: usize) -> Result<(), String> {
        let rt = runtime(&format!("agent-{i}"))?;
        let node = &mut self.nodes[i];
        let agent = {
            let _in = rt.enter();
            Agent::open(node.cfg.clone()).map_err(|e| format!("c{i} does not start: {e}"))?
        };
        node.incarnation += 1;
        let rng = Rng::new(mix(self.seed, u64::from(node.incarnation) << 8 | i as u64));
        let link = Link::start(
            agent.clone(),
            self.reach.clone(),
            rt.handle().clone(),
            rng,
            self.rates,
        );
        node.up = Some(Up {
            rt,
            agent,
            link,
            leases: Vec::new(),
        });
        Ok(())
    }

    /// Crashes agent `i`: its runtime shut down; what it held in memory (leases, the
    /// versions it was told of) is gone, its directory stays.
    pub async fn crash_agent(&mut self, i: usize) {
        if let Some(up) = self.nodes[i].up.take() {
            let Up {
                rt,
                agent,
                link,
                leases,
            } = up;
            {
                let s = link.stats();
                for (i, n) in [s.dropped, s.duplicated, s.delayed].into_iter().enumerate() {
                    self.tally.faults[3 + i] += n;
                }
            }
            drop((agent, link, leases));
            shut(rt).await;
            self.tally.agent_crashes += 1;
        }
    }

    /// Stops everything (the end of a seed; not counted as crashes).
    pub async fn teardown(&mut self) {
        let counted = (self.tally.agent_crashes, self.tally.coordinator_crashes);
        for i in 0..self.nodes.len() {
            self.crash_agent(i).await;
        }
        self.crash_coordinator().await;
        (self.tally.agent_crashes, self.tally.coordinator_crashes) = counted;
    }
}

impl Drop for World {
    fn drop(&mut self) {
        *self.reach.lock().expect("reach lock") = None;
        for n in &mut self.nodes {
            if let Some(up) = n.up.take() {
                up.rt.shutdown_background();
            }
        }
        if let Some((rt, running)) = self.coord.take() {
            drop(running);
            rt.shutdown_background();
        }
    }
}
