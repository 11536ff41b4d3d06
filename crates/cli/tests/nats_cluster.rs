//! Events on a three-node NATS JetStream cluster (issue 17 §2): the coordinator creates the
//! events stream with three replicas and consumes it; publishers publish with
//! `Nats-Msg-Id` and retry until the stream acknowledges. The node the coordinator is
//! connected to is killed mid-stream: events keep flowing (the client fails over to the
//! servers the cluster announced, the stream and its consumer to their other replicas),
//! every acknowledged event is handled, none twice — a publish repeated with its id is
//! stored once, and a message delivered again after it was handled is acknowledged, not
//! handled again. Then the node comes back and catches up.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

mod support;

use support::*;

const SUBJECT: &str = "fleet.events";

/// Publishes events `range` (one per message, distinct keys) through `ports`.
fn publish(ports: &[u16], range: std::ops::Range<u32>) -> Vec<u64> {
    range
        .map(|i| {
            let body = format!(r#"{{"event": {{"type": "bus", "key": "k{i}"}}}}"#);
            let (seq, dup) = publish_acked(ports, SUBJECT, &format!("ev-{i}"), &body);
            assert!(!dup, "event {i} stored twice");
            seq
        })
        .collect()
}

fn handled(coord: &str) -> f64 {
    let (_, m) = http_get(coord, "/metrics");
    metric(&m, "prewarm_coordinator_events_total")
}

#[test]
fn events_on_a_three_node_cluster_survive_a_node_and_are_handled_once() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut nodes) = nats_cluster(tmp.path()) else {
        return;
    };
    // The coordinator is given the first node only: that is the one to die.
    let first = format!("nats://127.0.0.1:{}", nodes[0].port);
    let c = Cluster::start_with(&[
        "--nats",
        &first,
        "--nats-replicas",
        "3",
        "--subject",
        SUBJECT,
        "--nats-ack-wait",
        "2s",
    ]);
    let coord = c.url.trim_start_matches("http://").to_owned();
    wait_until("the JetStream consumer on the cluster", 60, || {
        std::fs::read_to_string(c.path("coordinator.log"))
            .unwrap()
            .contains("consuming events from NATS")
    });
    let all: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let mut seqs = publish(&all[1..], 0..10);
    wait_until("the first 10 events", 30, || handled(&coord) >= 10.0);
    // The coordinator stalls (SIGSTOP) while 20 more are delivered to it: their ack wait
    // runs out and NATS delivers them again; once it resumes it handles the first copies
    // and acknowledges the second ones without handling them again.
    let pid = c.coord.as_ref().unwrap().0.id().to_string();
    let signal = |s: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    seqs.extend(publish(&all[1..], 10..30));
    std::thread::sleep(Duration::from_secs(5));
    signal("-CONT");
    wait_until("the 20 events published during the stall", 30, || {
        handled(&coord) >= 30.0
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        handled(&coord),
        30.0,
        "a redelivered message was handled again"
    );
    // The coordinator's node dies; publishers carry on through the other two.
    nodes[0].kill();
    seqs.extend(publish(&all[1..], 30..60));
    // A publisher that did not see its acknowledgement publishes again: stored once.
    let body = r#"{"event": {"type": "bus", "key": "k40"}}"#;
    let (seq, dup) = publish_acked(&all[1..], SUBJECT, "ev-40", body);
    assert!(
        dup && seq == seqs[40],
        "the repeat is the stored message: {seq} {dup}"
    );
    wait_until("every acknowledged event handled", 60, || {
        handled(&coord) >= 60.0
    });
    // Nothing more comes: no event handled twice (past two ack waits).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(handled(&coord), 60.0);
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 60, "60 distinct stream sequences");
    // The node comes back and catches up; more events flow.
    nodes[0].restart();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    publish(&ports, 60..70);
    wait_until("the events after the node's return", 60, || {
        handled(&coord) >= 70.0
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(handled(&coord), 70.0);
    let log = std::fs::read_to_string(c.path("coordinator.log")).unwrap();
    assert!(!log.contains("fewer than the 3 asked"), "{log}");
    let (_, m) = http_get(&coord, "/metrics");
    eprintln!(
        "messages delivered again after handling (acknowledged, not handled): {}",
        metric(&m, "prewarm_coordinator_nats_redelivered_total")
    );
}
