//! The coordinator against fake agents in-process, under tokio's paused clock: each fake
//! attaches through the gRPC service's own handler, reads its command stream, and answers
//! (or does not) as a test scripts it. No processes, no sleeps in wall time: a 10-minute
//! acknowledgement timeout or a version poll passes in microseconds, and every step is
//! deterministic. Covered: placement on the holder of a named state and planning of what is
//! missing, acknowledgement timeouts, invalidation when a new version lands, and a capacity
//! that disconnects mid-transfer and reattaches.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prewarm_coordinator::{Brain, Coordinator, CoordinatorConfig, EventIn, Running, Service};
use prewarm_core::{CapacityId, Event, ResourceId};
use prewarm_engine::EngineConfig;
use prewarm_engine::placement::PlacementReason;
use prewarm_proto::wire::{
    AttachRequest, Command, FailureKind, Inventory, StateVersion, TransferAck, TransferRequest,
    command, coordinator_server::Coordinator as _,
};
use prewarm_snapshot::Snapshotter;
use prewarm_store::Store;
use tokio_stream::StreamExt;
use tonic::Request;

/// Version poll of the coordinators under test.
const POLL: Duration = Duration::from_secs(5);

async fn coordinator(store: Arc<Store>) -> Running {
    let cfg = CoordinatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_listen: "127.0.0.1:0".parse().unwrap(),
        data_unix: None,
        token: None,
        poll: POLL,
        clock: prewarm_core::Clock::system(),
        http: prewarm_http::Limits::default(),
        events_rate: None,
        ingest: Default::default(),
        tls: None,
    };
    let brain = Brain::new(EngineConfig::default(), None);
    prewarm_coordinator::start(store, cfg, Some(brain))
        .await
        .unwrap()
}

fn id(s: &str) -> ResourceId {
    ResourceId::new(s).unwrap()
}

async fn commit(store: &Arc<Store>, r: &str, fill: u8) {
    Snapshotter::new(store.clone())
        .commit_bytes(&id(r), Bytes::from(vec![fill; 100_000]))
        .await
        .unwrap();
}

fn inventory(capacity: &str, held: &[(&str, u64)]) -> Inventory {
    Inventory {
        capacity: capacity.into(),
        held: held
            .iter()
            .map(|(r, v)| StateVersion {
                resource: (*r).into(),
                version: *v,
                bytes: 100_000,
                ..Default::default()
            })
            .collect(),
        cache_used: 100_000 * held.len() as u64,
        cache_budget: 1 << 30,
        horizon_s: None,
        departed: Vec::new(),
    }
}

/// How a fake agent answers a `Load`.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// Acknowledges it as installed and reports the new inventory.
    Install,
    /// Never answers (a hung agent).
    Silent,
}

/// A fake agent: what it was sent, and the task answering its stream.
struct Fake {
    seen: Arc<Mutex<Vec<Command>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    /// Attaches `capacity` holding `held`, answering loads by `answer`.
    async fn attach(
        c: &Arc<Coordinator>,
        capacity: &str,
        held: &[(&str, u64)],
        answer: Answer,
    ) -> Fake {
        let svc = Service(c.clone());
        let stream = svc
            .attach(Request::new(AttachRequest {
                capacity: capacity.into(),
                ensure_addr: String::new(),
                inventory: Some(inventory(capacity, held)),
            }))
            .await
            .unwrap()
            .into_inner();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, name) = (seen.clone(), capacity.to_owned());
        let mut holds: Vec<(String, u64)> =
            held.iter().map(|(r, v)| ((*r).to_owned(), *v)).collect();
        let task = tokio::spawn(async move {
            let mut stream = stream;
            while let Some(Ok(cmd)) = stream.next().await {
                log.lock().unwrap().push(cmd.clone());
                let Some(command::Command::Load(l)) = cmd.command else {
                    continue;
                };
                if answer == Answer::Silent {
                    continue;
                }
                holds.push((l.resource.clone(), l.version));
                let held: Vec<(&str, u64)> = holds.iter().map(|(r, v)| (r.as_str(), *v)).collect();
                svc.report(Request::new(inventory(&name, &held)))
                    .await
                    .unwrap();
                svc.ack(Request::new(TransferAck {
                    transfer_id: l.transfer_id,
                    capacity: name.clone(),
                    resource: l.resource,
                    version: l.version,
                    ok: true,
                    state_bytes: 100_000,
                    priority: l.priority,
                    ..Default::default()
                }))
                .await
                .unwrap();
            }
        });
        Fake { seen, task }
    }

    fn loads(&self) -> Vec<(String, u64)> {
        self.load_commands()
            .into_iter()
            .map(|l| (l.resource, l.version))
            .collect()
    }

    fn load_commands(&self) -> Vec<prewarm_proto::wire::Load> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match &c.command {
                Some(command::Command::Load(l)) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    fn invalidations(&self) -> Vec<(String, u64)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match &c.command {
                Some(command::Command::Invalidate(i)) => Some((i.resource.clone(), i.new_version)),
                _ => None,
            })
            .collect()
    }
}

fn event(key: &str, needs: &[&str]) -> EventIn {
    EventIn {
        ts: None,
        event: Event {
            kind: "request".into(),
            key: key.into(),
            attrs: Default::default(),
            needs: needs.iter().map(|r| id(r)).collect(),
        },
        capacity: None,
    }
}

/// Lets the fakes' tasks run what is queued for them.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn an_event_is_placed_on_the_holder_of_what_it_names_and_what_is_missing_is_moved() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    commit(&store, "m/y", 2).await;
    let run = coordinator(store).await;
    let c = &run.coordinator;
    let a = Fake::attach(c, "a", &[], Answer::Install).await;
    let b = Fake::attach(c, "b", &[("m/x", 1)], Answer::Install).await;
    // Named and held: it goes to the holder, and nothing moves.
    let out = c.handle_event(&event("k1", &["m/x"]), true).await;
    let p = out.placement.unwrap();
    assert_eq!(
        (p.capacity.as_str(), p.reason),
        ("b", PlacementReason::Holds)
    );
    assert!(out.transfers.is_empty(), "{:?}", out.transfers);
    // Named and held nowhere: placed on its home, and the planner moves it there.
    let out = c.handle_event(&event("k2", &["m/y"]), true).await;
    let home = out.placement.unwrap().capacity;
    assert_eq!(out.transfers.len(), 1, "{:?}", out.transfers);
    assert_eq!(out.transfers[0].resource, id("m/y"));
    settle().await;
    let loaded = if home.as_str() == "a" { &a } else { &b };
    assert_eq!(loaded.loads(), vec![("m/y".to_owned(), 1)]);
    // An event bound to the other capacity keeps the two within the load bound; then,
    // the load acknowledged, the next event naming m/y goes where it now is, and nothing moves.
    let other = if home.as_str() == "a" { "b" } else { "a" };
    let mut bound = event("k3", &[]);
    bound.capacity = Some(CapacityId::new(other).unwrap());
    let out = c.handle_event(&bound, true).await;
    assert_eq!(out.placement.unwrap().reason, PlacementReason::Named);
    let out = c.handle_event(&event("k4", &["m/y"]), true).await;
    let p = out.placement.unwrap();
    assert_eq!((&p.capacity, p.reason), (&home, PlacementReason::Holds));
    assert!(out.transfers.is_empty(), "{:?}", out.transfers);
    assert_eq!(a.loads().len() + b.loads().len(), 1, "one transfer in all");
}

#[tokio::test(start_paused = true)]
async fn a_hot_state_spills_over_to_a_second_capacity_under_the_load_bound() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    let run = coordinator(store).await;
    let c = &run.coordinator;
    let a = Fake::attach(c, "a", &[], Answer::Install).await;
    let b = Fake::attach(c, "b", &[("m/x", 1)], Answer::Install).await;
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..8 {
        let out = c
            .handle_event(&event(&format!("k{i}"), &["m/x"]), true)
            .await;
        *on.entry(out.placement.unwrap().capacity.as_str().to_owned())
            .or_default() += 1;
        settle().await;
    }
    // At most (1 + 0.25) × the fair share on the holder; the rest on a, which receives m/x
    // once and holds it from then on.
    assert!(on["b"] <= 5 && on["a"] >= 3, "{on:?}");
    assert_eq!(a.loads(), vec![("m/x".to_owned(), 1)]);
    assert!(b.loads().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_silent_capacity_fails_the_transfer_at_its_timeout_not_before() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    let run = coordinator(store).await;
    let c = &run.coordinator;
    let hung = Fake::attach(c, "hung", &[], Answer::Silent).await;
    let started = tokio::time::Instant::now();
    let ack = c
        .transfer(TransferRequest {
            capacity: "hung".into(),
            resource: "m/x".into(),
            timeout_ms: 600_000,
            ..Default::default()
        })
        .await;
    let waited = started.elapsed();
    assert!(!ack.ok);
    assert_eq!(ack.failure, FailureKind::Timeout as i32, "{}", ack.error);
    assert!(
        waited >= Duration::from_secs(600) && waited < Duration::from_secs(601),
        "{waited:?}"
    );
    assert_eq!(
        hung.loads(),
        vec![("m/x".to_owned(), 1)],
        "the load was sent"
    );
    // The late acknowledgement of a timed-out transfer is accepted and changes nothing.
    Service(c.clone())
        .ack(Request::new(TransferAck {
            transfer_id: hung.load_commands()[0].transfer_id,
            capacity: "hung".into(),
            resource: "m/x".into(),
            version: 1,
            ok: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let status = c.status();
    let inv = status.capacities[0].inventory.as_ref().unwrap();
    assert!(
        inv.held.is_empty(),
        "an acknowledgement is not an inventory: {inv:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_version_is_announced_to_its_holders_only_and_once() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    let run = coordinator(store.clone()).await;
    let c = &run.coordinator;
    let holder = Fake::attach(c, "holder", &[("m/x", 1)], Answer::Install).await;
    let other = Fake::attach(c, "other", &[], Answer::Install).await;
    tokio::time::sleep(2 * POLL).await;
    assert!(holder.invalidations().is_empty(), "nothing new yet");
    commit(&store, "m/x", 9).await;
    tokio::time::sleep(POLL + Duration::from_millis(10)).await;
    assert_eq!(holder.invalidations(), vec![("m/x".to_owned(), 2)]);
    tokio::time::sleep(3 * POLL).await;
    assert_eq!(
        holder.invalidations().len(),
        1,
        "announced once per version"
    );
    assert!(other.invalidations().is_empty(), "only holders are told");
}

#[tokio::test(start_paused = true)]
async fn a_capacity_that_disconnects_fails_its_transfers_and_is_placed_on_again_after_reattaching()
{
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    commit(&store, "m/z", 3).await;
    let run = coordinator(store).await;
    let c = run.coordinator.clone();
    let gone = Fake::attach(&c, "cap", &[], Answer::Silent).await;
    let _peer = Fake::attach(&c, "peer", &[], Answer::Install).await;
    let waiting = tokio::spawn({
        let c = c.clone();
        async move {
            c.transfer(TransferRequest {
                capacity: "cap".into(),
                resource: "m/x".into(),
                timeout_ms: 600_000,
                ..Default::default()
            })
            .await
        }
    });
    settle().await;
    assert_eq!(gone.loads().len(), 1);
    let started = tokio::time::Instant::now();
    gone.task.abort(); // its stream is dropped: the capacity went away
    let ack = waiting.await.unwrap();
    assert_eq!(
        ack.failure,
        FailureKind::CapacityGone as i32,
        "{}",
        ack.error
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failed at once, not at the timeout"
    );
    let status = c.status();
    let cap = status
        .capacities
        .iter()
        .find(|s| s.capacity == "cap")
        .unwrap();
    assert!(!cap.connected);
    // Back with a state it installed meanwhile: its inventory counts again for placement.
    let _back = Fake::attach(&c, "cap", &[("m/z", 1)], Answer::Install).await;
    let out = c.handle_event(&event("k", &["m/z"]), true).await;
    assert_eq!(
        out.placement.unwrap().capacity,
        CapacityId::new("cap").unwrap()
    );
    assert!(out.transfers.is_empty());
    assert!(c.status().capacities.iter().all(|s| s.connected));
}

/// `GET path` on `addr` over HTTP/1.1 by hand: the status and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pages_and_filters_a_thousand_capacities_with_totals_over_all() {
    let store = Arc::new(Store::memory().await);
    let running = coordinator(store).await;
    let c = running.coordinator.clone();
    let mut fakes = Vec::new();
    for i in 0..1000 {
        let name = format!("pod-{i:04}");
        fakes.push(Fake::attach(&c, &name, &[("m/a", 1)], Answer::Install).await);
    }
    let (code, body) = get(running.grpc, "/v1/dashboard?offset=980&limit=50").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["matched"], 1000);
    let page = v["capacities"].as_array().unwrap();
    assert_eq!(page.len(), 20, "the last page");
    assert_eq!(page[0]["name"], "pod-0980");
    assert_eq!(page[0]["states"][0]["resource"], "m/a");
    assert_eq!(v["totals"]["capacities"], 1000);
    assert_eq!(v["totals"]["connected"], 1000);
    assert_eq!(v["totals"]["states"], 1000);
    assert!(
        body.len() < 64 << 10,
        "a page, not the fleet: {} bytes",
        body.len()
    );
    let (_, body) = get(running.grpc, "/v1/dashboard?filter=pod-09").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["matched"].as_u64(), v["limit"].as_u64()),
        (Some(100), Some(50))
    );
    let (code, _) = get(running.grpc, "/v1/dashboard?limit=lots").await;
    assert_eq!(code, 400);
    let (code, page) = get(running.grpc, "/ui").await;
    assert_eq!(code, 200);
    assert!(page.contains("/v1/dashboard"));
    for f in fakes {
        f.task.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_delivered_twice_counts_its_delivery_once() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    let run = coordinator(store).await;
    let c = run.coordinator.clone();
    let fake = Fake::attach(&c, "a", &[], Answer::Silent).await;
    let req = TransferRequest {
        capacity: "a".into(),
        resource: "m/x".into(),
        priority: prewarm_proto::wire::Priority::Predictive as i32,
        ..Default::default()
    };
    let transfer = tokio::spawn({
        let c = c.clone();
        async move { c.transfer(req).await }
    });
    settle().await;
    let load = fake.load_commands()[0].clone();
    let ack = TransferAck {
        transfer_id: load.transfer_id,
        capacity: "a".into(),
        resource: "m/x".into(),
        version: 1,
        ok: true,
        state_bytes: 100_000,
        wire_bytes: 60_000,
        priority: load.priority,
        ..Default::default()
    };
    // The agent's acknowledgement arrives twice (a retried call, a repeated message).
    for _ in 0..2 {
        Service(c.clone())
            .ack(Request::new(ack.clone()))
            .await
            .unwrap();
    }
    assert!(transfer.await.unwrap().ok);
    // So does the acknowledgement of a refresh the agent started itself (transfer id 0).
    let refresh = TransferAck {
        transfer_id: 0,
        duration_us: 1234,
        ..ack
    };
    for _ in 0..2 {
        Service(c.clone())
            .ack(Request::new(refresh.clone()))
            .await
            .unwrap();
    }
    let (_, prefetch) = c.pulse.read();
    assert_eq!(
        (prefetch.delivered, prefetch.delivered_bytes),
        (2, 200_000),
        "two deliveries of 100 kB"
    );
    assert_eq!(c.metrics.wire_bytes.get(), 60_000);
    assert_eq!(c.status().recent.len(), 2, "each recorded once");
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_of_another_state_does_not_answer_a_transfer_of_the_same_number() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    let run = coordinator(store).await;
    let c = run.coordinator.clone();
    let fake = Fake::attach(&c, "a", &[], Answer::Silent).await;
    let transfer = tokio::spawn({
        let c = c.clone();
        async move {
            c.transfer(TransferRequest {
                capacity: "a".into(),
                resource: "m/x".into(),
                ..Default::default()
            })
            .await
        }
    });
    settle().await;
    let id = fake.load_commands()[0].transfer_id;
    // A restarted coordinator numbers transfers from 1 again: the agent's acknowledgement
    // of a load its predecessor sent, finishing now, can carry the same number.
    let stale = TransferAck {
        transfer_id: id,
        capacity: "a".into(),
        resource: "m/old".into(),
        version: 3,
        ok: true,
        ..Default::default()
    };
    Service(c.clone()).ack(Request::new(stale)).await.unwrap();
    settle().await;
    assert!(
        !transfer.is_finished(),
        "answered by another state's acknowledgement"
    );
    let ack = TransferAck {
        transfer_id: id,
        capacity: "a".into(),
        resource: "m/x".into(),
        version: 1,
        ok: true,
        ..Default::default()
    };
    Service(c.clone()).ack(Request::new(ack)).await.unwrap();
    let got = transfer.await.unwrap();
    assert!(
        got.ok && got.resource == "m/x" && got.version == 1,
        "{got:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_attaches_again_after_an_announcement_is_told_again() {
    let store = Arc::new(Store::memory().await);
    commit(&store, "m/x", 1).await;
    let run = coordinator(store.clone()).await;
    let c = &run.coordinator;
    let first = Fake::attach(c, "holder", &[("m/x", 1)], Answer::Install).await;
    commit(&store, "m/x", 9).await;
    tokio::time::sleep(POLL + Duration::from_millis(10)).await;
    assert_eq!(first.invalidations(), vec![("m/x".to_owned(), 2)]);
    // The agent restarts (what it was told is gone) and attaches again, still holding v1.
    first.task.abort();
    let again = Fake::attach(c, "holder", &[("m/x", 1)], Answer::Install).await;
    tokio::time::sleep(POLL + Duration::from_millis(10)).await;
    assert_eq!(
        again.invalidations(),
        vec![("m/x".to_owned(), 2)],
        "told again on its new stream"
    );
    tokio::time::sleep(3 * POLL).await;
    assert_eq!(again.invalidations().len(), 1, "once per stream");
}
