//! Coordinator and agents as separate real processes over real sockets, driven by the CLI:
//! transfer, ensure, refresh on a new version, bad input, tokens, and an agent killed with
//! SIGKILL in the middle of a large transfer.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::*;

#[test]
fn transfer_ensure_refresh_metrics_and_bad_input_across_processes() {
    let c = Cluster::start();
    let (api_a, api_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _a = c.agent("cap-a", &api_a, &["--data-path", "tcp"]);
    let _b = c.agent("cap-b", &api_b, &[]);
    let file = c.path("weights.bin");
    let mut data = noise(8 << 20, 1);
    std::fs::write(&file, &data).unwrap();
    c.snapshot("models/w", &file);

    // Transfer by hand, then the application's call hits.
    for cap in ["cap-a", "cap-b"] {
        let out = c.transfer(cap, "models/w", &[]);
        let a = ack(&out);
        assert!(out.status.success() && a["ok"] == true, "{a}");
        assert_eq!(a["version"], 1);
        assert!(a["wire_bytes"].as_u64().unwrap() >= 8 << 20, "{a}");
    }
    let again = ack(&c.transfer("cap-a", "models/w", &["--version", "1"]));
    assert_eq!(again["already_held"], true);
    let (code, body) = http_get(&api_a, "/v1/states/models/w?min_version=1&timeout_ms=2000");
    assert_eq!(code, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (e["hit"].as_bool(), e["version"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(std::fs::read(e["path"].as_str().unwrap()).unwrap(), data);

    // A new version lands: holders are told and refresh by delta transfer.
    for i in (0..data.len()).step_by(1 << 20) {
        data[i..i + 256].copy_from_slice(&noise(256, i as u64));
    }
    std::fs::write(&file, &data).unwrap();
    c.snapshot("models/w", &file);
    for cap in ["cap-a", "cap-b"] {
        wait_until("the refresh", 30, || {
            held(&c.url, cap).contains(&("models/w".into(), 2))
        });
    }
    // The refreshes are reported like commanded transfers.
    wait_until("the refresh acknowledgements", 10, || {
        status_json(&c.url)["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| {
                t["capacity"] == "cap-a"
                    && t["version"] == 2
                    && t["ok"] == true
                    && t["reused_bytes"].as_u64().unwrap() > 7 << 20
            })
    });
    let (code, body) = http_get(&api_b, "/v1/states/models/w?min_version=2");
    assert_eq!(code, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(std::fs::read(e["path"].as_str().unwrap()).unwrap(), data);
    let (_, metrics) = http_get(&api_b, "/metrics");
    let reused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("prewarm_agent_reused_bytes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reused > 7 << 20,
        "the refresh reused held chunks: {metrics}"
    );
    let (code, cm) = http_get(c.url.trim_start_matches("http://"), "/metrics");
    assert_eq!(code, 200);
    assert!(
        cm.contains("prewarm_coordinator_transfers_total{result=\"ok\"}"),
        "{cm}"
    );
    // cap-a moved its bytes over TCP; cap-b, on the coordinator's host, read them from pack
    // files passed to it by descriptor.
    let value = |name: &str| -> f64 {
        cm.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {cm}"))
    };
    assert!(value("prewarm_data_sent_bytes_total") > 8e6, "{cm}");
    assert!(value("prewarm_data_fds_passed_total") >= 1.0, "{cm}");
    assert!(value("prewarm_data_located_bytes_total") > 8e6, "{cm}");

    // Bad input: each refused with its reason, nothing else disturbed.
    for (cap, res, extra, want) in [
        ("cap-zzz", "models/w", vec![], "UNKNOWN_CAPACITY"),
        ("cap-a", "models/none", vec![], "UNKNOWN_STATE"),
        ("cap-a", "models/w", vec!["--version", "7"], "UNKNOWN_STATE"),
        (
            "cap-a",
            "models/w",
            vec!["--at-least", "3"],
            "UNKNOWN_STATE",
        ),
        ("cap-a", "../etc", vec![], "INVALID_REQUEST"),
        ("bad name!", "models/w", vec![], "INVALID_REQUEST"),
    ] {
        let out = c.transfer(cap, res, &extra);
        assert_eq!(out.status.code(), Some(1), "{cap} {res} {extra:?}");
        assert_eq!(ack(&out)["failure"], want, "{cap} {res} {extra:?}");
    }
    let (code, body) = http_get(&api_a, "/v1/states/models/none?timeout_ms=2000");
    assert_eq!(code, 404, "{body}");
    let (code, _) = http_get(&api_a, "/v1/states/a%20b");
    assert_eq!(code, 400);
    assert!(held(&c.url, "cap-a").contains(&("models/w".into(), 2)));
}

#[test]
fn non_loopback_listeners_require_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = run(&["coordinator", "--store", &store, "--listen", &listen]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));

    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-s3cret-s3cret\n").unwrap();
    let tok = token.to_str().unwrap();
    let _c = spawn(
        &[
            "coordinator",
            "--store",
            &store,
            "--listen",
            &listen,
            // Its own free port: the default (the --listen port + 1) may be another
            // test's, and the coordinator then never starts.
            "--data-listen",
            &format!("0.0.0.0:{}", free_port()),
            "--data-unix",
            "none",
            "--token-file",
            tok,
            "--http-idle-timeout",
            "1s",
        ],
        &dir.path().join("c.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_until("the coordinator", 60, || {
        run(&["status", "--coordinator", &url, "--token-file", tok])
            .status
            .success()
    });
    let out = run(&["status", "--coordinator", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token-at-all").unwrap();
    let out = run(&[
        "status",
        "--coordinator",
        &url,
        "--token-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let addr = format!("127.0.0.1:{port}");
    let (code, _) = http_get(&addr, "/metrics");
    assert_eq!(code, 401);
    // Unknown paths answer 401 without the token; a body is refused before it is read.
    let (code, text) = http_get(&addr, "/nothing/here");
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("\"error\":\"unauthorized\""), "{text}");
    let (code, text) = http_post(&addr, "/v1/events", &vec![b' '; 3 << 20]);
    assert_eq!(code, 401, "{text}");
    // The dashboard: the page with the token in its query (a browser cannot send the
    // header when it opens a URL), its data with the header, neither without.
    assert_eq!(http_get(&addr, "/ui").0, 401);
    assert_eq!(http_get(&addr, "/ui?token=not-the-token-at-all").0, 401);
    let (code, page) = http_get(&addr, "/ui?token=s3cret-s3cret-s3cret");
    assert_eq!(code, 200);
    assert!(page.contains("/v1/dashboard"), "{page}");
    assert_eq!(http_get(&addr, "/v1/dashboard").0, 401);
    let (code, view) = http_get_auth(&addr, "/v1/dashboard?limit=5", "s3cret-s3cret-s3cret");
    assert_eq!(code, 200, "{view}");
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(
        (view["limit"].as_u64(), view["matched"].as_u64()),
        (Some(5), Some(0))
    );
    // Many refusals make a few log lines, not one each.
    for _ in 0..300 {
        let _ = http_get(&addr, "/metrics");
    }
    let log = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
    assert!(log.contains("refused"), "refusals are logged: {log}");
    let lines = log.lines().filter(|l| l.contains("refused")).count();
    assert!(lines < 60, "{lines} refusal lines for ~300 refusals");
    // --http-idle-timeout 1s: a silent connection is closed in seconds, not the default 60.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 1];
    let got = std::io::Read::read(&mut silent, &mut buf);
    assert!(matches!(got, Ok(0)), "closed by the server: {got:?}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn an_agent_killed_mid_transfer_resumes_and_never_shows_a_partial_state() {
    let c = Cluster::start();
    let api = format!("127.0.0.1:{}", free_port());
    // A predictive bandwidth limit makes the 48 MiB transfer take ~3 s: time to kill it.
    let agent_args = ["--predictive-rate", "16MiB"];
    let agent = c.agent("cap-k", &api, &agent_args);
    let file = c.path("big.bin");
    let data = noise(48 << 20, 9);
    std::fs::write(&file, &data).unwrap();
    c.snapshot("data/big", &file);
    let state = c.path("cap-k/states/data/big/v1");

    // Watch the state's path the whole time: it is either absent or complete.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, state) = (stop.clone(), state.clone());
        std::thread::spawn(move || {
            let mut seen_complete = false;
            while !stop.load(Ordering::Acquire) {
                if let Ok(m) = std::fs::metadata(&state) {
                    assert_eq!(m.len(), 48 << 20, "a partial state was visible at its path");
                    seen_complete = true;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen_complete
        })
    };
    let transfer = {
        let url = c.url.clone();
        std::thread::spawn(move || {
            run(&[
                "transfer",
                "--coordinator",
                &url,
                "--capacity",
                "cap-k",
                "--resource",
                "data/big",
                "--json",
            ])
        })
    };
    // Kill once the install is under way (its staged manifest exists) and ~1 s of it ran.
    let staged = c.path("cap-k/staging/data/big/v1.manifest");
    wait_until("the transfer to start", 30, || staged.exists());
    std::thread::sleep(Duration::from_millis(1000));
    drop(agent); // SIGKILL
    let out = transfer.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(ack(&out)["failure"], "CAPACITY_GONE");
    assert!(!state.exists());

    // Restarted, the agent finds the interrupted transfer and finishes it, moving only the rest.
    let _agent = c.agent("cap-k", &api, &agent_args);
    wait_until("the resumed install", 60, || {
        held(&c.url, "cap-k").contains(&("data/big".into(), 1))
    });
    stop.store(true, Ordering::Release);
    assert!(
        watcher.join().unwrap(),
        "the watcher saw the complete state"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        data,
        "installed once, verified, complete"
    );
    let (_, metrics) = http_get(&api, "/metrics");
    let get = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (resumed, wire) = (
        get("prewarm_agent_resumed_bytes_total "),
        get("prewarm_agent_wire_bytes_total "),
    );
    assert!(
        resumed > 4 << 20,
        "kept what was received before the kill: {metrics}"
    );
    assert!(
        wire < (48 << 20) - resumed + (2 << 20),
        "moved only the rest: {resumed} resumed, {wire} wire"
    );
    assert!(
        !c.path("cap-k/staging/data/big/v1").exists(),
        "staging cleaned up"
    );
    // A transfer request now finds it held.
    assert_eq!(
        ack(&c.transfer("cap-k", "data/big", &[]))["already_held"],
        true
    );
}

/// Files under `root` (not directories); what vanishes while counting is not counted.
fn count_files(root: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(root) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type().is_ok_and(|t| t.is_dir()) {
            true => count_files(&e.path()),
            false => 1,
        })
        .sum()
}

#[test]
fn an_agent_killed_while_evicting_never_serves_a_partial_state() {
    // The reliability issue's reproduction: a state of 300 directories x 100 empty files plus
    // 1 MiB, a 30 MiB second state, a 30 MiB budget; the second evicts the first, and the
    // agent is killed while the first is being deleted. The restarted agent must not serve
    // the first as a hit with files missing.
    let c = Cluster::start();
    let tree = c.path("tree");
    for d in 0..300 {
        let sub = tree.join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            std::fs::write(sub.join(format!("f{f:03}")), b"").unwrap();
        }
    }
    std::fs::write(tree.join("weights.bin"), noise(1 << 20, 31)).unwrap();
    c.snapshot("tree/a", &tree);
    let big = c.path("big.bin");
    std::fs::write(&big, noise(30 << 20, 32)).unwrap();
    c.snapshot("data/b", &big);
    let mut caught_mid_delete = 0;
    for attempt in 0..3 {
        let name = format!("cap-e{attempt}");
        let api = format!("127.0.0.1:{}", free_port());
        let args = ["--cache-size", "30MiB"];
        let agent = c.agent(&name, &api, &args);
        let out = c.transfer(&name, "tree/a", &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let second = {
            let (url, name) = (c.url.clone(), name.clone());
            std::thread::spawn(move || {
                run(&[
                    "transfer",
                    "--coordinator",
                    &url,
                    "--capacity",
                    &name,
                    "--resource",
                    "data/b",
                ])
            })
        };
        // Kill as soon as the first state is no longer whole at its path (its deletion is
        // under way).
        let (state, trash) = (
            c.path(&format!("{name}/states/tree/a/v1")),
            c.path(&format!("{name}/trash")),
        );
        let t0 = Instant::now();
        while state.exists() && count_files(&state) == 30_001 {
            assert!(t0.elapsed() < Duration::from_secs(30), "no eviction");
        }
        let deleting = std::fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some());
        drop(agent); // SIGKILL
        caught_mid_delete += usize::from(deleting);
        let _ = second.join();

        let _agent = c.agent(&name, &api, &args);
        let (code, body) = http_get(&api, "/v1/states/tree/a?timeout_ms=60000");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let path = Path::new(v["path"].as_str().unwrap());
        assert_eq!(
            count_files(path),
            30_001,
            "attempt {attempt}: ensure answered hit={} with files missing",
            v["hit"]
        );
        assert_eq!(
            v["hit"], false,
            "the evicted state was fetched again, not served as held"
        );
    }
    assert!(
        caught_mid_delete > 0,
        "no attempt killed the agent mid-deletion"
    );
}

#[test]
fn agents_keep_serving_through_a_coordinator_restart_and_reattach_with_their_inventory() {
    let mut c = Cluster::start();
    let api = format!("127.0.0.1:{}", free_port());
    let _a = c.agent("cap-r", &api, &[]);
    let file = c.path("w.bin");
    std::fs::write(&file, noise(2 << 20, 5)).unwrap();
    c.snapshot("models/r", &file);
    assert_eq!(ack(&c.transfer("cap-r", "models/r", &[]))["ok"], true);

    drop(c.coord.take()); // SIGKILL: nothing was persisted by the coordinator
    let (code, body) = http_get(&api, "/v1/states/models/r");
    assert_eq!(
        code, 200,
        "held states are served without a coordinator: {body}"
    );
    let (code, body) = http_get(&api, "/v1/states/models/other?timeout_ms=500");
    assert!(code == 503 || code == 502 || code == 504, "{code} {body}");

    // A new coordinator process learns the inventory from the agent's reattach.
    c.start_coordinator();
    wait_until("the reattach", 30, || {
        held(&c.url, "cap-r").contains(&("models/r".into(), 1))
    });
    assert_eq!(
        ack(&c.transfer("cap-r", "models/r", &[]))["already_held"],
        true
    );
}

#[test]
fn events_drive_predictive_transfers_learned_from_agent_history() {
    let c = Cluster::start();
    // Executions of session "s1" on cap-a alternate x, y: the agent logs them and sends the
    // history to the coordinator's model (markov, the default).
    let Pair {
        coord,
        api_b,
        _a,
        _b,
    } = taught_pair(&c, 2 << 20, 7);
    assert!(held(&c.url, "cap-b").is_empty());
    // s1's next event, bound for cap-b: after y comes x. The coordinator moves it there
    // before the execution asks.
    let (code, body) = http_post(
        &coord,
        "/v1/events",
        br#"{"event": {"type": "http", "key": "s1"}, "capacity": "cap-b"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(out["placement"]["capacity"], "cap-b", "{out}");
    assert_eq!(out["placement"]["reason"], "named", "{out}");
    assert_eq!(out["transfers"][0]["resource"], "shop/x", "{out}");
    wait_until("the predicted state on cap-b", 20, || {
        held(&c.url, "cap-b").contains(&("shop/x".to_owned(), 1))
    });
    let (code, body) = http_get(&api_b, "/v1/states/shop/x?key=s1");
    assert_eq!(code, 200, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["hit"], true, "the prefetched state is a hit: {got}");
    // The same event again: held already, nothing moves.
    let (_, body) = http_post(
        &coord,
        "/v1/events",
        br#"[{"event": {"type": "http", "key": "s1"}, "capacity": "cap-b"}]"#,
    );
    let out: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        out[0]["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["resource"] != "shop/x"),
        "{out}"
    );
    // Placement for a scheduler, without moving anything.
    let (code, body) = http_get(&coord, "/v1/placement?key=s9&type=http");
    assert_eq!(code, 200, "{body}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        ["cap-a", "cap-b"].contains(&p["placement"]["capacity"].as_str().unwrap()),
        "{p}"
    );
    // Bad input: refused with a message; other events are unaffected.
    let huge = vec![b' '; 5 << 20];
    let many = format!(
        "[{}]",
        vec![r#"{"event": {"type": "t", "key": "k"}}"#; 10_001].join(",")
    );
    for (body, want, says) in [
        (&b"{not json"[..], 400, "key must be a string"),
        (
            br#"{"event": {"type": "t", "key": "k"}, "colour": 1}"#,
            400,
            "unknown field",
        ),
        (
            br#"{"event": {"type": "t", "key": "k"}, "capacity": "../x"}"#,
            400,
            "capacity",
        ),
        (
            br#"{"ts": -1, "event": {"type": "t", "key": "k"}}"#,
            400,
            "ts must be finite",
        ),
        (&huge[..], 413, "\"error\":\"too_large\""),
        (many.as_bytes(), 413, "at most 10000"),
        (
            format!(
                r#"{{"event": {{"type": "t", "key": "{}"}}}}"#,
                "k".repeat(2000)
            )
            .as_bytes(),
            400,
            "at most 1024",
        ),
    ] {
        let (code, text) = http_post(&coord, "/v1/events", body);
        assert_eq!(code, want, "{text}");
        assert!(text.contains(says), "{text:?} should mention {says:?}");
    }
    let (code, _) = http_get(&coord, "/v1/placement?colour=red");
    assert_eq!(code, 400);
    // A path the coordinator does not serve: a plain 404 with a message, not a gRPC answer.
    let (code, text) = http_get(&coord, "/nothing/here");
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("\"error\":\"not_found\""), "{text}");
    let (code, body) = http_post(
        &coord,
        "/v1/events",
        br#"{"event": {"type": "http", "key": "s2"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (_, m) = http_get(&coord, "/metrics");
    assert!(metric(&m, "prewarm_coordinator_events_total") >= 3.0, "{m}");
    assert!(
        metric(&m, "prewarm_coordinator_events_refused_total") >= 4.0,
        "{m}"
    );
}

#[test]
fn a_history_file_replayed_as_events_prefetches() {
    // Recorded: session s1 alternates x and y on cap-a (the model learns it as the records
    // are replayed), then s1's next event is bound for cap-b: after x comes y.
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("h.jsonl");
    let mut lines = vec![r#"{"ts": 0, "event": {"type": "timer", "key": "start"}}"#.to_owned()];
    for i in 0..9 {
        let r = ["x", "y"][i % 2];
        lines.push(format!(
            r#"{{"ts": {}, "event": {{"type": "http", "key": "s1"}}, "capacity": "cap-a", "reads": [{{"resource": "shop/{r}", "bytes": 1048576}}]}}"#,
            4.0 + 0.1 * i as f64
        ));
    }
    lines.push(
        r#"{"ts": 5.5, "event": {"type": "http", "key": "s1"}, "capacity": "cap-b"}"#.to_owned(),
    );
    std::fs::write(&h, lines.join("\n") + "\n").unwrap();
    let c = Cluster::start_with(&["--replay", h.to_str().unwrap(), "--replay-speed", "1"]);
    for (i, r) in ["x", "y"].iter().enumerate() {
        let f = c.path(r);
        std::fs::write(&f, noise(1 << 20, i as u64 + 3)).unwrap();
        c.snapshot(&format!("shop/{r}"), &f);
    }
    let _a = c.agent("cap-a", &format!("127.0.0.1:{}", free_port()), &[]);
    let _b = c.agent("cap-b", &format!("127.0.0.1:{}", free_port()), &[]);
    wait_until("the replayed prediction on cap-b", 30, || {
        held(&c.url, "cap-b").contains(&("shop/y".to_owned(), 1))
    });
    assert!(
        !held(&c.url, "cap-b").contains(&("shop/x".to_owned(), 1)),
        "only what was predicted moved to cap-b"
    );
    wait_until("the replay to end", 10, || {
        std::fs::read_to_string(c.path("coordinator.log"))
            .unwrap()
            .contains("replayed 11 events")
    });
}

#[test]
fn events_from_nats_jetstream_prefetch_and_survive_a_coordinator_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_nats, port)) = nats_server(tmp.path()) else {
        return;
    };
    let url = format!("nats://127.0.0.1:{port}");
    let mut c = Cluster::start_with(&["--nats", &url, "--subject", "shop.events"]);
    let Pair {
        coord,
        api_b,
        _a,
        _b,
    } = taught_pair(&c, 1 << 20, 11);
    // The consumer is bound once the stream exists.
    wait_until("the JetStream consumer", 20, || {
        std::fs::read_to_string(c.path("coordinator.log"))
            .unwrap()
            .contains("consuming events from NATS")
    });
    nats_publish(
        port,
        "shop.events",
        r#"{"event": {"type": "bus", "key": "s1"}, "capacity": "cap-b"}"#,
    );
    wait_until("the prefetch the NATS event asked for", 20, || {
        held(&c.url, "cap-b").contains(&("shop/x".to_owned(), 1))
    });
    let (code, body) = http_get(&api_b, "/v1/states/shop/x?key=s1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"hit\":true"), "{body}");
    // A bad message is dropped, not redelivered; the consumer carries on.
    nats_publish(port, "shop.events", "{not json");
    // The coordinator dies; events published meanwhile wait in the stream and are handled
    // (and acknowledged) by the restarted one.
    drop(c.coord.take());
    nats_publish(
        port,
        "shop.events",
        r#"[{"event": {"type": "bus", "key": "s7"}}, {"event": {"type": "bus", "key": "s8"}}]"#,
    );
    c.start_coordinator();
    wait_until("the events published while it was down", 30, || {
        let (_, m) = http_get(&coord, "/metrics");
        metric(&m, "prewarm_coordinator_events_total") >= 2.0
    });
    let (_, m) = http_get(&coord, "/metrics");
    assert_eq!(metric(&m, "prewarm_coordinator_events_total"), 2.0, "{m}");
}

#[test]
fn the_engines_keep_alive_expires_used_states_on_the_agent() {
    // A fixed keep-alive of 2 s (the lru policy): the engine answers each execution's history
    // with a retention hint, and the agent drops the state once it ran out; a state no
    // execution used has no hint and stays until pressure.
    let c = Cluster::start_with(&["--model", "lru", "--keep-alive", "2s"]);
    let coord = c.url.trim_start_matches("http://").to_owned();
    let api = format!("127.0.0.1:{}", free_port());
    let _a = c.agent("cap-a", &api, &["--lease", "1s"]);
    for (i, r) in ["a", "b"].iter().enumerate() {
        let f = c.path(r);
        std::fs::write(&f, noise(1 << 20, i as u64 + 21)).unwrap();
        c.snapshot(&format!("k/{r}"), &f);
    }
    let (code, body) = http_get(&api, "/v1/states/k/a?key=s1");
    assert_eq!(code, 200, "{body}");
    let out = c.transfer("cap-a", "k/b", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_until("a's history at the engine", 20, || {
        let (_, m) = http_get(&coord, "/metrics");
        metric(&m, "prewarm_coordinator_hints_total") >= 1.0
    });
    wait_until("the keep-alive to run out", 20, || {
        let held: Vec<String> = held(&c.url, "cap-a").into_iter().map(|h| h.0).collect();
        held == ["k/b"]
    });
    let (_, m) = http_get(&api, "/metrics");
    assert_eq!(metric(&m, "prewarm_agent_expirations_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "prewarm_agent_hints_total"), 1.0, "{m}");
}

#[test]
fn a_dirty_watched_source_is_snapshotted_before_its_predicted_transfer() {
    let c = Cluster::start();
    let Pair {
        coord,
        api_b,
        _a,
        _b,
    } = taught_pair(&c, 2 << 20, 11);
    // A watcher of shop/x's source that would not snapshot by itself for an hour.
    let x = c.path("x");
    let _w = spawn(
        &[
            "watch",
            "--store",
            &c.store,
            "--resource",
            "shop/x",
            "--coordinator",
            &c.url,
            "--interval",
            "1h",
            "--dirty-threshold",
            "1GiB",
            "--json",
            x.to_str().unwrap(),
        ],
        &c.path("watch.log"),
    );
    wait_until("the watcher to register", 20, || {
        let (_, m) = http_get(&coord, "/metrics");
        metric(&m, "prewarm_coordinator_watchers") == 1.0
    });
    // The source changes; the watcher reports dirty bytes but commits nothing.
    let mut changed = noise(2 << 20, 11);
    changed[..4096].copy_from_slice(&noise(4096, 99));
    std::fs::write(&x, &changed).unwrap();
    wait_until("the dirty bytes to reach the coordinator", 20, || {
        let (_, m) = http_get(&coord, "/metrics");
        metric(&m, "prewarm_coordinator_dirty_bytes") > 0.0
    });
    assert_eq!(
        held(&c.url, "cap-a"),
        vec![("shop/x".into(), 1), ("shop/y".into(), 1)]
    );
    // s1's next event predicts shop/x for cap-b: the coordinator has the watcher snapshot
    // first and moves the new version, which holds the change.
    let (code, body) = http_post(
        &coord,
        "/v1/events",
        br#"{"event": {"type": "http", "key": "s1"}, "capacity": "cap-b"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("shop/x"), "{body}");
    wait_until("the fresh version on cap-b", 20, || {
        held(&c.url, "cap-b").contains(&("shop/x".to_owned(), 2))
    });
    let (code, body) = http_get(&api_b, "/v1/states/shop/x?min_version=2&key=s1");
    assert_eq!(code, 200, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["hit"], true, "{got}");
    assert_eq!(
        std::fs::read(got["path"].as_str().unwrap()).unwrap(),
        changed,
        "the transferred state holds the un-snapshotted change"
    );
    let (_, m) = http_get(&coord, "/metrics");
    assert_eq!(
        metric(
            &m,
            "prewarm_coordinator_snapshot_requests_total{result=\"snapshotted\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "prewarm_coordinator_dirty_bytes"), 0.0, "{m}");
    let log = std::fs::read_to_string(c.path("watch.log")).unwrap();
    assert!(
        log.contains("registered shop/x with the coordinator"),
        "{log}"
    );
    // cap-a held version 1: the new version's invalidation refreshed it there too.
    wait_until("cap-a refreshed", 20, || {
        held(&c.url, "cap-a").contains(&("shop/x".to_owned(), 2))
    });
}

/// `n` history records of keys cycling through loops of `prefix/` resources.
fn cycles(n: usize, prefix: &str) -> String {
    let loops = [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["a", "e", "c"],
        ["f", "b", "d"],
    ];
    (0..n)
        .map(|i| {
            let key = i % 8;
            let res = loops[key % 4][(i / 8) % 3];
            format!(
                "{{\"ts\": {i}, \"event\": {{\"type\": \"http\", \"key\": \"k{key}\"}}, \"reads\": [{{\"resource\": \"{prefix}/{res}\", \"bytes\": 100}}], \"duration_s\": 0.01}}\n"
            )
        })
        .collect()
}

#[test]
fn a_coordinator_retrains_its_model_from_history_and_serves_the_better_one() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.jsonl"), dir.path().join("new.jsonl"));
    std::fs::write(&old, cycles(1_200, "r")).unwrap();
    // What executions read now: states the serving model never saw.
    std::fs::write(&new, cycles(2_000, "s")).unwrap();
    let model = dir.path().join("gru");
    let trained = run(&[
        "train",
        "--history",
        old.to_str().unwrap(),
        "--model",
        "gru",
        "--embed",
        "16",
        "--hidden",
        "24",
        "--seq-len",
        "8",
        "--lr",
        "0.03",
        "--epochs",
        "6",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(trained.status.success(), "{trained:?}");
    let before = std::fs::read_to_string(model.join("config.json")).unwrap();
    let spec = format!("gru:{}", model.display());
    let c = Cluster::start_with(&[
        "--model",
        &spec,
        "--replay",
        new.to_str().unwrap(),
        "--replay-speed",
        "0",
        "--retrain-every",
        "2s",
        "--retrain-budget",
        "3s",
    ]);
    let mut last = serde_json::Value::Null;
    wait_until("a retraining round", 120, || {
        last = status_json(&c.url)["model"].clone();
        last["rounds"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(last["retraining"], true, "{last}");
    assert_eq!(last["failures"], 0, "{last}");
    assert!(last["held_out"].as_u64().unwrap() >= 100, "{last}");
    // The stale model cannot predict states it never saw; the challenger trained on them
    // scores better and serves, and is saved where a restart finds it.
    assert!(
        last["challenger_log_loss"].as_f64().unwrap() < last["champion_log_loss"].as_f64().unwrap(),
        "{last}"
    );
    assert!(last["swaps"].as_u64().unwrap() >= 1, "{last}");
    let after = std::fs::read_to_string(model.join("config.json")).unwrap();
    assert_ne!(before, after, "the winner was saved to the model directory");
    let (_, metrics) = http_get(&c.url.replace("http://", ""), "/metrics");
    assert!(
        metric(
            &metrics,
            "prewarm_coordinator_retrains_total{result=\"swapped\"}"
        ) >= 1.0
    );
    assert!(metrics.contains("prewarm_coordinator_model_log_loss{model=\"challenger\"}"));
    // The round replayed the window with each model deciding (--retrain-judge replay, the
    // default): both warm-start rates are reported, and the challenger's is not lower.
    let (champ, chall) = (
        last["champion_warm_rate"].as_f64().unwrap(),
        last["challenger_warm_rate"].as_f64().unwrap(),
    );
    assert!((0.0..=1.0).contains(&champ) && chall >= champ, "{last}");
    assert!(metrics.contains("prewarm_coordinator_model_warm_rate{model=\"challenger\"}"));

    // Retraining needs a learned model: a clear error, nothing started.
    let out = run(&[
        "coordinator",
        "--store",
        &c.store,
        "--model",
        "markov",
        "--retrain-every",
        "1m",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--retrain-every needs a learned model"));
}

#[test]
fn an_agent_runs_from_its_config_file_and_prints_what_it_runs_with() {
    let c = Cluster::start();
    let (api, cache) = (
        format!("127.0.0.1:{}", free_port()),
        c.path("from-config").display().to_string(),
    );
    let file = c.path("agent.toml");
    std::fs::write(
        &file,
        format!(
            "coordinator = \"{}\"\nname = \"cap-file\"\ncache-dir = \"{cache}\"\n\
             listen = \"{api}\"\ncache_size = \"3MiB\"\nmark-stale = [\"tenants/\"]\n",
            c.url
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    // What it would run with: the file's values, a flag over the file's, defaults.
    let printed = run(&[
        "agent",
        "--config",
        &file,
        "--cache-size",
        "5MiB",
        "--print-config",
    ]);
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(text.contains("name = \"cap-file\""), "{text}");
    assert!(text.contains("cache-size = \"5MiB\""), "{text}");
    assert!(text.contains("lease = \"60s\""), "{text}");
    // The printed configuration is itself a config file that reproduces it.
    let again_file = c.path("again.toml");
    std::fs::write(&again_file, &text).unwrap();
    let again = run(&[
        "agent",
        "--config",
        again_file.to_str().unwrap(),
        "--print-config",
    ]);
    // (the same settings; only the comments saying where each came from differ)
    let settings = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split(" #").next().unwrap().trim_end().to_owned())
            .collect()
    };
    assert_eq!(
        settings(&String::from_utf8(again.stdout).unwrap()),
        settings(&text)
    );
    // A misspelt setting is refused with the list of settings.
    let bad = c.path("bad.toml");
    std::fs::write(&bad, "cache-sise = \"1GiB\"\n").unwrap();
    let refused = run(&["agent", "--config", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8(refused.stderr).unwrap();
    assert!(
        err.contains("unknown setting \"cache-sise\"") && err.contains("cache-size"),
        "{err}"
    );
    // The agent started from the file alone attaches under its name with its budget.
    let _agent = spawn(&["agent", "--config", &file], &c.path("cap-file.log"));
    wait_until("the configured agent to attach", 20, || {
        status_json(&c.url)["capacities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["capacity"] == "cap-file" && x["connected"] == true)
    });
    let status = status_json(&c.url);
    let cap = status["capacities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["capacity"] == "cap-file")
        .unwrap()
        .clone();
    wait_until("its first inventory report", 20, || {
        status_json(&c.url)["capacities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["capacity"] == "cap-file" && x["cache_budget"] == 3 << 20)
    });
    assert_eq!(cap["ensure_addr"], api.as_str(), "{cap}");
}

#[test]
fn events_over_the_rate_limit_get_429_with_retry_after_and_are_counted() {
    let c = Cluster::start_with(&["--model", "markov", "--events-rate", "50"]);
    let addr = c.url.trim_start_matches("http://").to_owned();
    let batch = |n: usize| {
        let events: Vec<String> = (0..n)
            .map(|i| format!("{{\"event\":{{\"type\":\"http\",\"key\":\"k{i}\"}}}}"))
            .collect();
        format!("[{}]", events.join(","))
    };
    // One full batch fits the burst; the next body does not until the bucket refills.
    let (ok, _, _) = http_post_full(&addr, "/v1/events", batch(10_000).as_bytes());
    assert_eq!(ok, 200);
    let (status, head, body) = http_post_full(&addr, "/v1/events", batch(100).as_bytes());
    assert_eq!(status, 429, "{head}\n{body}");
    let retry: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no Retry-After in {head}"))
        .trim()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "retry after {retry} s");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"], "rate_limited", "{e}");
    let (_, metrics) = http_get(&addr, "/metrics");
    assert_eq!(
        metric(&metrics, "prewarm_coordinator_events_rate_limited_total"),
        100.0
    );
    assert_eq!(
        metric(&metrics, "prewarm_coordinator_events_total"),
        10_000.0
    );
}
