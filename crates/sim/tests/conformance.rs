//! Conformance: one history through the replay simulator and through a live coordinator with
//! three real agents (in one process, over loopback sockets, on a manual clock both share)
//! must give the same decisions — placements, predictive and on-demand transfers, evictions —
//! record by record. The engine is the same code in both; this checks that the coordinator's
//! view of the fleet (inventories, in-flight transfers, the mirror of each agent's eviction
//! book, the horizon agents report), the agents' eviction by the engine's rule and hints, and
//! the history agents report all agree with the simulator's.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prewarm_agent::agent::{Agent, AgentConfig, DataPath};
use prewarm_agent::ensure::EnsureRequest;
use prewarm_coordinator::{Brain, Coordinator, CoordinatorConfig, EventIn};
use prewarm_core::{CapacityId, Clock, Event, HistoryRecord, ReadAccess, ResourceId};
use prewarm_engine::{EngineConfig, PlannerConfig, rules_for};
use prewarm_predict::baselines::Markov;
use prewarm_sim::{Decision, Phase, Policy, PolicyKind, SimConfig, replay_logged};

const CAPS: usize = 3;
const BUDGET: u64 = 64_000;
const LEAD: f64 = 1.0;
const T0: f64 = 1_800_000_000.0;

/// Four keys walking fixed cycles over eight states of distinct sizes (two or three fit a
/// capacity), one read per execution, every 10 s.
fn trace() -> (Vec<HistoryRecord>, BTreeMap<ResourceId, u64>) {
    let sizes: BTreeMap<ResourceId, u64> = (0..8)
        .map(|k| {
            (
                ResourceId::new(format!("s/r{k}")).unwrap(),
                20_000 + 3_331 * k,
            )
        })
        .collect();
    let names: Vec<&ResourceId> = sizes.keys().collect();
    let records = (0..40usize)
        .map(|i| {
            let key = i % 4;
            let base = if key < 2 { 0 } else { 4 };
            let r = names[base + (key + i / 4) % 4].clone();
            HistoryRecord {
                ts: T0 + 10.0 * i as f64,
                event: Event {
                    kind: "http".into(),
                    key: format!("k{key}"),
                    attrs: Default::default(),
                    needs: Vec::new(),
                },
                capacity: None,
                reads: vec![ReadAccess {
                    bytes: sizes[&r],
                    resource: r,
                    version: None,
                }],
                writes: vec![],
                duration_s: 0.0,
            }
        })
        .collect();
    (records, sizes)
}

fn planner() -> PlannerConfig {
    PlannerConfig {
        bandwidth: 1e12,
        latency_s: 0.0,
        lead_s: LEAD,
        max_per_event: 1, // one install per event: the agents' order is then fixed
        ..PlannerConfig::default()
    }
}

fn sim_decisions(records: &[HistoryRecord]) -> Vec<(usize, Phase, Decision)> {
    let cfg = SimConfig {
        capacities: CAPS,
        cache_bytes: BUDGET,
        bandwidth: 1e12,
        latency_s: 0.0,
        lead_s: LEAD,
        warmup: 0.0,
        top_k: 3,
        planner: planner(),
        ..SimConfig::default()
    };
    let markov = Policy::new(
        "markov",
        PolicyKind::Predictive(Box::new(Markov::new(2, 3600.0))),
    );
    replay_logged(records, markov, &cfg).1.entries
}

struct Live {
    coordinator: Arc<Coordinator>,
    agents: Vec<Arc<Agent>>,
    clock: Clock,
    _running: prewarm_coordinator::Running,
    _dir: tempfile::TempDir,
}

async fn live(sizes: &BTreeMap<ResourceId, u64>) -> Live {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        prewarm_store::Store::open_or_create(dir.path().join("store").to_str().unwrap())
            .await
            .unwrap(),
    );
    let snap = prewarm_snapshot::Snapshotter::new(store.clone());
    for (i, (r, n)) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*n)
            .map(|j| (j as u8) ^ (i as u8).wrapping_mul(37))
            .collect();
        snap.commit_bytes(r, Bytes::from(data)).await.unwrap();
    }
    let clock = Clock::manual(T0 - 100.0);
    let (rule, keep) = rules_for("markov", f64::INFINITY);
    let brain = Brain::new(
        EngineConfig {
            planner: planner(),
            top_k: 3,
            rule,
            keep,
            ..EngineConfig::default()
        },
        Some(Box::new(Markov::new(2, 3600.0))),
    );
    let running = prewarm_coordinator::start(
        store,
        CoordinatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_listen: "127.0.0.1:0".parse().unwrap(),
            data_unix: None,
            token: None,
            poll: Duration::from_secs(3600),
            clock: clock.clone(),
            http: prewarm_http::Limits::default(),
            events_rate: None,
            ingest: Default::default(),
            tls: None,
        },
        Some(brain),
    )
    .await
    .unwrap();
    let url = format!("http://{}", running.grpc);
    let mut agents = Vec::new();
    for i in 0..CAPS {
        let agent = Agent::open(AgentConfig {
            name: CapacityId::new(format!("c{i}")).unwrap(),
            cache_dir: dir.path().join(format!("c{i}")),
            cache_size: BUDGET,
            predictive_rate: None,
            mark_stale: vec![],
            token: None,
            tls: None,
            lease: Duration::from_secs(60), // released when each execution ends
            max_leases: prewarm_agent::DEFAULT_MAX_LEASES,
            data_path: DataPath::Tcp,
            data_source: prewarm_agent::DataSource::Coordinator,
            clock: clock.clone(),
        })
        .unwrap();
        tokio::spawn(prewarm_agent::control::run(
            agent.clone(),
            url.clone(),
            format!("127.0.0.1:{}", 9000 + i),
        ));
        agents.push(agent);
    }
    let live = Live {
        coordinator: running.coordinator.clone(),
        agents,
        clock,
        _running: running,
        _dir: dir,
    };
    wait(&live, "the agents to attach", |l| {
        l.coordinator
            .status()
            .capacities
            .iter()
            .filter(|c| c.connected)
            .count()
            == CAPS
    })
    .await;
    live
}

async fn wait(l: &Live, what: &str, f: impl Fn(&Live) -> bool) {
    let t0 = Instant::now();
    while !f(l) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What each agent holds: resource names.
fn holdings(l: &Live) -> Vec<BTreeSet<ResourceId>> {
    l.agents
        .iter()
        .map(|a| {
            a.inventory()
                .0
                .into_iter()
                .map(|(h, _)| h.resource)
                .collect()
        })
        .collect()
}

/// Every transfer acknowledged, every agent's inventory (and eviction horizon) known to the
/// coordinator as the agent has it, `records` history records observed, every hint applied.
fn settled(l: &Live, records: u64) -> bool {
    if !l.coordinator.settled() || l.coordinator.metrics.history_records.get() < records {
        return false;
    }
    let status = l.coordinator.status();
    let views: HashMap<String, _> = status
        .capacities
        .iter()
        .map(|c| (c.capacity.clone(), c.inventory.clone().unwrap_or_default()))
        .collect();
    let agents_agree = l.agents.iter().all(|a| {
        let (held, used, _) = a.inventory();
        let Some(v) = views.get(a.config().name.as_str()) else {
            return false;
        };
        // Leases too: the coordinator's eviction book spares leased states.
        let mine: BTreeSet<(String, u64, bool)> = held
            .iter()
            .map(|(h, _)| {
                let leased = a.leased(&h.resource, h.version);
                (h.resource.as_str().to_owned(), h.version.get(), leased)
            })
            .collect();
        let theirs: BTreeSet<(String, u64, bool)> = v
            .held
            .iter()
            .map(|h| (h.resource.clone(), h.version, h.leased))
            .collect();
        mine == theirs && v.cache_used == used && v.horizon_s == a.horizon()
    });
    let applied: u64 = l.agents.iter().map(|a| a.metrics.hints.get()).sum();
    agents_agree && applied == l.coordinator.metrics.hints.get()
}

fn evictions(
    before: &[BTreeSet<ResourceId>],
    after: &[BTreeSet<ResourceId>],
    rec: usize,
    phase: Phase,
    out: &mut Vec<(usize, Phase, Decision)>,
) {
    for (cap, (b, a)) in before.iter().zip(after).enumerate() {
        for r in b.difference(a) {
            out.push((
                rec,
                phase,
                Decision::Evicted {
                    capacity: cap,
                    resource: r.clone(),
                },
            ));
        }
    }
}

async fn live_decisions(l: &Live, records: &[HistoryRecord]) -> Vec<(usize, Phase, Decision)> {
    let mut out = Vec::new();
    let index = |name: &str| name.trim_start_matches('c').parse::<usize>().unwrap();
    for (i, rec) in records.iter().enumerate() {
        // The event, `LEAD` ahead of its execution.
        l.clock.set(rec.ts - LEAD);
        let before = holdings(l);
        let e = EventIn {
            ts: Some(rec.ts - LEAD),
            event: rec.event.clone(),
            capacity: None,
        };
        let outcome = l.coordinator.handle_event(&e, true).await;
        let cap = index(outcome.placement.as_ref().unwrap().capacity.as_str());
        out.push((i, Phase::Event, Decision::Placed { capacity: cap }));
        for t in &outcome.transfers {
            out.push((
                i,
                Phase::Event,
                Decision::Transfer {
                    capacity: cap,
                    resource: t.resource.clone(),
                    version: t.version.get(),
                    predictive: true,
                },
            ));
        }
        wait(l, "the predictive transfers", |l| settled(l, i as u64)).await;
        let mid = holdings(l);
        evictions(&before, &mid, i, Phase::Event, &mut out);
        // The execution, on the capacity it was placed on.
        l.clock.set(rec.ts);
        for rd in &rec.reads {
            let got = l.agents[cap]
                .ensure(EnsureRequest {
                    resource: rd.resource.clone(),
                    min_version: None,
                    timeout: Duration::from_secs(30),
                    key: Some(rec.event.key.clone()),
                    kind: Some(rec.event.kind.clone()),
                    max_stale: None,
                })
                .await
                .unwrap();
            // The execution is over (it lasts no time in the trace): it releases its lease,
            // as the replay's executions do when they end, rather than leave it to expire.
            if let Some(id) = got.lease {
                l.agents[cap].release_lease(id);
            }
            if !got.hit {
                out.push((
                    i,
                    Phase::Exec,
                    Decision::Transfer {
                        capacity: cap,
                        resource: rd.resource.clone(),
                        version: got.version,
                        predictive: false,
                    },
                ));
            }
        }
        wait(l, "the execution's history", |l| settled(l, i as u64 + 1)).await;
        evictions(&mid, &holdings(l), i, Phase::Exec, &mut out);
    }
    out
}

/// The decisions grouped by record and phase, each group sorted (the order inside one phase
/// is not a decision).
fn grouped(v: Vec<(usize, Phase, Decision)>) -> BTreeMap<(usize, Phase), Vec<Decision>> {
    let mut m: BTreeMap<(usize, Phase), Vec<Decision>> = BTreeMap::new();
    for (r, p, d) in v {
        m.entry((r, p)).or_default().push(d);
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_and_a_live_coordinator_with_agents_decide_alike() {
    let (records, sizes) = trace();
    let sim = grouped(sim_decisions(&records));
    let l = live(&sizes).await;
    let live = grouped(live_decisions(&l, &records).await);
    let count = |m: &BTreeMap<(usize, Phase), Vec<Decision>>, f: fn(&Decision) -> bool| {
        m.values().flatten().filter(|d| f(d)).count()
    };
    // The history exercises every kind of decision.
    assert!(
        count(&sim, |d| matches!(d, Decision::Evicted { .. })) >= 5,
        "{sim:#?}"
    );
    assert!(
        count(&sim, |d| matches!(
            d,
            Decision::Transfer {
                predictive: true,
                ..
            }
        )) >= 5
    );
    assert!(
        count(&sim, |d| matches!(
            d,
            Decision::Transfer {
                predictive: false,
                ..
            }
        )) >= 3
    );
    let placed: BTreeSet<_> = sim
        .values()
        .flatten()
        .filter_map(|d| match d {
            Decision::Placed { capacity } => Some(*capacity),
            _ => None,
        })
        .collect();
    assert!(
        placed.len() >= 2,
        "executions spread over capacities: {placed:?}"
    );
    for (step, want) in &sim {
        assert_eq!(
            live.get(step),
            Some(want),
            "record {} ({:?}) decided differently live",
            step.0,
            step.1
        );
    }
    assert_eq!(
        live.len(),
        sim.len(),
        "live made decisions the replay did not"
    );
}
