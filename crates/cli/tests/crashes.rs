//! Real crashes, many of them: an agent process is killed with SIGKILL at random moments —
//! while starting, while resuming an interrupted transfer, mid-transfer, while evicting to
//! make room — 20 times in one test (`PREWARM_KILLS=100` for the long run; `PREWARM_SEED`
//! replays one sequence of moments). After every kill, every state the killed agent left at
//! its path is byte-identical to the committed version; at the end a restarted agent serves
//! every state complete, on demand (taking the space of any resumed predictive transfer),
//! within its budget. A coordinator killed while events flow in from NATS JetStream: every
//! event the stream acknowledged to its publisher is handled, none acknowledged by the
//! coordinator is lost. And a cache whose disk (a small tmpfs) fills before its budget.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

mod support;

use support::*;

/// xorshift64*: the kill moments and the states asked for, from one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every state at its path under `cache` is the committed bytes (a missing one is fine).
fn check_states(cache: &Path, states: &[(String, Vec<u8>)], kill: usize) -> usize {
    let mut present = 0;
    for (r, data) in states {
        let p = cache.join("states").join(r).join("v1");
        if let Ok(got) = std::fs::read(&p) {
            assert!(
                got == *data,
                "after kill {kill}: {r} at its path is not the committed bytes ({} of {} bytes)",
                got.len(),
                data.len()
            );
            present += 1;
        }
    }
    present
}

/// Whether an install is under way (its staged manifest exists) under `dir`.
fn staged_any(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| {
        d.flatten().any(|e| {
            std::fs::read_dir(e.path()).is_ok_and(|d| {
                d.flatten()
                    .any(|f| f.path().extension().is_some_and(|x| x == "manifest"))
            })
        })
    })
}

#[test]
fn an_agent_killed_at_random_moments_never_shows_a_wrong_or_partial_state() {
    let kills: usize = env_or("PREWARM_KILLS", 20);
    let seed: u64 = std::env::var("PREWARM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005E_ED0F_C4A5);
    eprintln!("kills {kills}, PREWARM_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let c = Cluster::start();
    // Five 6 MiB states, a 16 MiB budget: two fit, so transfers evict; 8 MiB/s of predictive
    // bandwidth makes each take ~¾ s, so kills land in every phase.
    let states: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("crash/s{i}"), noise(6 << 20, 100 + i)))
        .collect();
    for (r, data) in &states {
        let f = c.path("src.bin");
        std::fs::write(&f, data).unwrap();
        c.snapshot(r, &f);
    }
    let api = format!("127.0.0.1:{}", free_port());
    let args = ["--cache-size", "16MiB", "--predictive-rate", "8MiB"];
    let cache = c.path("cap-x");
    let (mut mid_transfer, mut seen_present) = (0, 0);
    for kill in 1..=kills {
        let agent = c.agent("cap-x", &api, &args);
        let (r, _) = &states[rng.below(states.len() as u64) as usize];
        let transfer = {
            let (url, r) = (c.url.clone(), r.clone());
            std::thread::spawn(move || {
                run(&[
                    "transfer",
                    "--coordinator",
                    &url,
                    "--capacity",
                    "cap-x",
                    "--resource",
                    &r,
                    "--json",
                ])
            })
        };
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        mid_transfer += usize::from(staged_any(&cache.join("staging").join("crash")));
        drop(agent); // SIGKILL
        let _ = transfer.join().unwrap();
        seen_present += check_states(&cache, &states, kill);
    }
    eprintln!(
        "{kills} kills, {mid_transfer} with a transfer staged, {seen_present} states found intact"
    );
    assert!(
        mid_transfer >= kills / 4,
        "only {mid_transfer} of {kills} kills landed mid-transfer: the test lost its point"
    );
    // Restarted: it opens with a verified cache and serves every state complete.
    let _agent = c.agent("cap-x", &api, &args);
    for (r, data) in &states {
        let (code, body) = http_get(&api, &format!("/v1/states/{r}?timeout_ms=30000&lease_ms=1"));
        assert_eq!(code, 200, "{r}: {body}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            std::fs::read(e["path"].as_str().unwrap()).unwrap(),
            *data,
            "{r}"
        );
        std::thread::sleep(Duration::from_millis(5)); // its 1 ms lease has ended
    }
    let (_, inv) = http_get(&api, "/v1/inventory");
    let inv: serde_json::Value = serde_json::from_str(&inv).unwrap();
    assert!(
        inv["cache_used"].as_u64().unwrap() <= 16 << 20,
        "within the budget: {inv}"
    );
    check_states(&cache, &states, kills + 1);
}

/// The stream and consumer the coordinator binds by default.
const STREAM: &str = "PREWARM_EVENTS";
const DURABLE: &str = "prewarm-coordinator";

fn floor_and_pending(info: &serde_json::Value) -> (u64, u64, u64) {
    (
        info["ack_floor"]["stream_seq"].as_u64().unwrap(),
        info["num_ack_pending"].as_u64().unwrap(),
        info["num_pending"].as_u64().unwrap(),
    )
}

/// A JetStream message of `PER` events, numbered from `first`.
fn message(first: u64) -> String {
    let events: Vec<String> = (first..first + PER)
        .map(|i| format!(r#"{{"event": {{"type": "flow", "key": "k{i}"}}}}"#))
        .collect();
    format!("[{}]", events.join(","))
}

const PER: u64 = 250;

#[test]
fn a_coordinator_killed_while_events_flow_from_nats_loses_no_event() {
    // A backlog of messages of many events each, so that the coordinator is killed busy,
    // with messages delivered but not yet acknowledged; more arrive while it is down.
    const BACKLOG: u64 = 1_000;
    const LATER: u64 = 20;
    let tmp = tempfile::tempdir().unwrap();
    let Some((_nats, port)) = nats_server(tmp.path()) else {
        return;
    };
    let url = format!("nats://127.0.0.1:{port}");
    let mut c = Cluster::start_with(&["--nats", &url, "--subject", "flow.events"]);
    let coord = c.url.trim_start_matches("http://").to_owned();
    wait_until("the JetStream consumer", 20, || {
        std::fs::read_to_string(c.path("coordinator.log"))
            .unwrap()
            .contains("consuming events from NATS")
    });
    drop(c.coord.take());
    let mut p = Nats::connect(port);
    let backlog: Vec<String> = (0..BACKLOG).map(|m| message(m * PER)).collect();
    let mut seqs = p.js_publish_all("flow.events", &backlog);
    // Started without waiting for it to answer (it may be through the backlog by then);
    // the consumer's state is watched instead.
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    c.coord = Some(spawn(&args, &c.path("coordinator.log")));
    let mut q = Nats::connect(port);
    let t0 = std::time::Instant::now();
    while floor_and_pending(&q.consumer_info(STREAM, DURABLE)).0 < 4 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no message handled");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SIGKILL mid-stream. The stream's acknowledged floor is what the dead coordinator
    // handled (it acknowledges a message after handling its events, in order).
    drop(c.coord.take());
    let later = std::thread::spawn(move || {
        (BACKLOG..BACKLOG + LATER)
            .map(|m| {
                std::thread::sleep(Duration::from_millis(50));
                p.js_publish("flow.events", &message(m * PER))
            })
            .collect::<Vec<u64>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (acked_at_kill, unacked_at_kill, _) = floor_and_pending(&q.consumer_info(STREAM, DURABLE));
    assert!(
        (4..BACKLOG).contains(&acked_at_kill),
        "killed mid-stream: {acked_at_kill} of {BACKLOG} messages acknowledged"
    );
    c.start_coordinator();
    seqs.extend(later.join().unwrap());
    let total = BACKLOG + LATER;
    assert_eq!(
        seqs.len() as u64,
        total,
        "the stream acknowledged every message"
    );
    let last = *seqs.last().unwrap();
    // The restarted coordinator gets what the dead one had not acknowledged (redelivered
    // once the consumer's ack wait has passed) and everything published after the kill.
    wait_until("every message acknowledged", 120, || {
        let (floor, ack_pending, pending) = floor_and_pending(&q.consumer_info(STREAM, DURABLE));
        floor == last && ack_pending == 0 && pending == 0
    });
    let (_, m) = http_get(&coord, "/metrics");
    let handled_after = metric(&m, "prewarm_coordinator_events_total") as u64;
    assert_eq!(
        handled_after,
        (total - acked_at_kill) * PER,
        "the restarted coordinator handles exactly the events not acknowledged before the kill"
    );
    eprintln!(
        "killed with {acked_at_kill} of {total} messages acknowledged and {unacked_at_kill} \
         delivered but not acknowledged; the restarted coordinator handled {handled_after} \
         events"
    );
    let log = std::fs::read_to_string(c.path("coordinator.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// A size-limited tmpfs at `at`, unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The bytes of state `r` as the agent installed it (a file state), if there.
fn installed(cache: &Path, r: &str) -> Option<Vec<u8>> {
    std::fs::read(cache.join("states").join(r).join("v1")).ok()
}

#[test]
fn a_full_disk_is_relieved_by_eviction_or_fails_cleanly_and_the_agent_keeps_serving() {
    let c = Cluster::start();
    // The cache's disk (12 MiB) is smaller than its budget (64 MiB): the disk fills first.
    let cache = c.path("cap-a");
    let Some(_fs) = Tmpfs::mount(&cache, 12 << 20) else {
        eprintln!("cannot mount a tmpfs here (needs root): skipping");
        return;
    };
    let api = format!("127.0.0.1:{}", free_port());
    let _a = c.agent("cap-a", &api, &["--cache-size", "64MiB"]);
    let mut data = std::collections::HashMap::new();
    for (i, (r, n)) in [("d/a", 4), ("d/b", 4), ("d/c", 6), ("d/d", 9)]
        .into_iter()
        .enumerate()
    {
        let f = c.path(&format!("src{i}"));
        let bytes = noise(n << 20, 40 + i as u64);
        std::fs::write(&f, &bytes).unwrap();
        c.snapshot(r, &f);
        data.insert(r, bytes);
    }
    let ensure = |r: &str, lease_ms: u64| {
        http_get(&api, &format!("/v1/states/{r}?key=k&lease_ms={lease_ms}"))
    };
    for r in ["d/a", "d/b"] {
        let (code, body) = ensure(r, 1);
        assert_eq!(code, 200, "{body}");
    }
    std::thread::sleep(Duration::from_millis(50));
    // c does not fit beside a and b on the disk: the agent evicts by its rule (a, least
    // recently used) and installs c whole.
    let (code, body) = ensure("d/c", 3_000);
    assert_eq!(
        code,
        200,
        "{body}\n{}",
        std::fs::read_to_string(c.path("cap-a.log")).unwrap()
    );
    assert_eq!(installed(&cache, "d/c").as_ref(), data.get("d/c"));
    assert_eq!(installed(&cache, "d/a"), None, "a made room");
    let (code, body) = ensure("d/b", 3_000);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"hit\":true"), "{body}");
    // d cannot fit while b and c are leased: a clean 507 naming no path, nothing of d left
    // on the disk, b and c still served whole.
    let (code, body) = ensure("d/d", 1);
    assert_eq!(code, 507, "{body}");
    assert!(body.contains("\"error\":\"disk_full\""), "{body}");
    assert!(!body.contains(cache.to_str().unwrap()), "{body}");
    let staged = cache.join("staging/d/d");
    assert!(
        !staged.join("v1").exists() && !staged.join("v1.manifest").exists(),
        "nothing of d stays staged"
    );
    assert_eq!(installed(&cache, "d/d"), None);
    for r in ["d/b", "d/c"] {
        assert_eq!(installed(&cache, r).as_ref(), data.get(r));
        let (code, body) = ensure(r, 1);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"hit\":true"), "{body}");
    }
    // Once the leases run out, d makes its room.
    std::thread::sleep(Duration::from_millis(3_100));
    let (code, body) = ensure("d/d", 1);
    assert_eq!(code, 200, "{body}");
    assert_eq!(installed(&cache, "d/d").as_ref(), data.get("d/d"));
    let (_, m) = http_get(&api, "/metrics");
    assert_eq!(
        metric(&m, "prewarm_agent_failures_total{reason=\"disk_full\"}"),
        1.0,
        "{m}"
    );
}
