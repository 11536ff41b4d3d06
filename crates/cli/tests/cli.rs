//! The `prewarm` binary as a user runs it: real processes, real directories, exit codes,
//! one-line errors and `--json` output.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn prewarm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(args)
        .output()
        .expect("prewarm runs")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

/// Asserts exit code 2 and a single-line error that mentions `want`.
fn bad_input(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(want), "{err:?} should mention {want:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), "hello world\n".repeat(10_000)).unwrap();
    std::fs::write(
        root.join("sub/b.bin"),
        (0..200_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
}

#[test]
fn snapshot_versions_restore_verify_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (src, store) = (dir.path().join("src"), dir.path().join("store"));
    make_tree(&src);
    let s = store.to_str().unwrap();
    let v1 = json(&prewarm(&[
        "snapshot",
        "--store",
        s,
        "--resource",
        "app/state",
        "--json",
        src.to_str().unwrap(),
    ]));
    assert_eq!(v1["version"], 1);
    assert!(v1["stats"]["new_stored_bytes"].as_u64().unwrap() > 0);
    std::fs::write(src.join("a.txt"), "hello there\n".repeat(10_000)).unwrap();
    let v2 = json(&prewarm(&[
        "snapshot",
        "--store",
        s,
        "--resource",
        "app/state",
        "--json",
        src.to_str().unwrap(),
    ]));
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["parent"], 1);
    let same = json(&prewarm(&[
        "snapshot",
        "--store",
        s,
        "--resource",
        "app/state",
        "--json",
        src.to_str().unwrap(),
    ]));
    assert_eq!(same["unchanged"], true);

    let versions = json(&prewarm(&[
        "versions",
        "--store",
        s,
        "--resource",
        "app/state",
        "--json",
    ]));
    assert_eq!(versions.as_array().unwrap().len(), 2);

    let dest = dir.path().join("restored");
    let r = json(&prewarm(&[
        "restore",
        "--store",
        s,
        "--resource",
        "app/state",
        "--version",
        "1",
        "--json",
        dest.to_str().unwrap(),
    ]));
    assert_eq!(r["version"], 1);
    assert_eq!(
        std::fs::read(dest.join("a.txt")).unwrap(),
        "hello world\n".repeat(10_000).into_bytes()
    );
    assert_eq!(
        std::fs::read(dest.join("sub/b.bin")).unwrap(),
        std::fs::read(src.join("sub/b.bin")).unwrap()
    );

    let v = json(&prewarm(&["verify", "--store", s, "--json"]));
    assert_eq!(v["ok"], true);
    let g = json(&prewarm(&[
        "gc", "--store", s, "--keep", "1", "--grace", "0s", "--json",
    ]));
    assert_eq!(g["manifests_deleted"], 1);
    let v = json(&prewarm(&[
        "verify",
        "--store",
        s,
        "--resource",
        "app/state",
        "--json",
    ]));
    assert_eq!(v["report"]["manifests"], 1);
}

#[test]
fn invalid_resource_ids_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    let long = "a".repeat(300);
    for (id, want) in [
        ("../x", "invalid segment"),
        ("/abs", "invalid segment"),
        ("a//b", "invalid segment"),
        ("", "empty"),
        (long.as_str(), "300 bytes"),
    ] {
        let out = prewarm(&[
            "snapshot",
            "--store",
            s.to_str().unwrap(),
            "--resource",
            id,
            dir.path().to_str().unwrap(),
        ]);
        bad_input(&out, want);
    }
    // Non-UTF-8 arguments are refused by the argument parser with exit 2 too.
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args(["versions", "--store", s.to_str().unwrap(), "--resource"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .output()
        .unwrap();
    bad_input(&out, "UTF-8");
    assert!(!s.exists(), "nothing was created for bad input");
}

#[test]
fn store_and_version_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    bad_input(
        &prewarm(&["versions", "--store", missing.to_str().unwrap()]),
        "not a prewarm store",
    );
    bad_input(
        &prewarm(&["verify", "--store", "ftp://host/x"]),
        "unknown scheme",
    );
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"some state").unwrap();
    json(&prewarm(&[
        "snapshot",
        "--store",
        s,
        "--resource",
        "r",
        "--json",
        file.to_str().unwrap(),
    ]));
    bad_input(
        &prewarm(&[
            "restore",
            "--store",
            s,
            "--resource",
            "r",
            "--version",
            "7",
            "/tmp/x-never",
        ]),
        "r@7 does not exist",
    );
    bad_input(
        &prewarm(&[
            "restore",
            "--store",
            s,
            "--resource",
            "r",
            "--version",
            "0",
            "/tmp/x-never",
        ]),
        "version 0",
    );
    bad_input(
        &prewarm(&[
            "restore",
            "--store",
            s,
            "--resource",
            "other",
            "/tmp/x-never",
        ]),
        "no versions",
    );
    bad_input(
        &prewarm(&[
            "restore",
            "--store",
            s,
            "--resource",
            "r",
            file.to_str().unwrap(),
        ]),
        "already exists",
    );
    bad_input(
        &prewarm(&[
            "snapshot",
            "--store",
            s,
            "--resource",
            "r",
            "/definitely/missing",
        ]),
        "cannot read",
    );
    bad_input(&prewarm(&["gc", "--store", s, "--keep", "0"]), "at least 1");
    std::fs::write(store.join("prewarm-store.json"), b"{\"format\": 99}").unwrap();
    bad_input(&prewarm(&["versions", "--store", s]), "format");
}

#[test]
fn verify_exits_1_on_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("f");
    std::fs::write(&file, "abc".repeat(100_000)).unwrap();
    let s = store.to_str().unwrap();
    json(&prewarm(&[
        "snapshot",
        "--store",
        s,
        "--resource",
        "r",
        "--json",
        file.to_str().unwrap(),
    ]));
    let sub = std::fs::read_dir(store.join("data"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pack = std::fs::read_dir(sub)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = std::fs::read(&pack).unwrap();
    b[20] ^= 0x10;
    std::fs::write(&pack, b).unwrap();
    let out = prewarm(&["verify", "--store", s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED"));
    let dest = dir.path().join("out");
    bad_input(
        &prewarm(&[
            "restore",
            "--store",
            s,
            "--resource",
            "r",
            dest.to_str().unwrap(),
        ]),
        "corrupt",
    );
    assert!(!dest.exists());
}

/// The one file under `dir/<one subdirectory>/` (a pack), or `dir/` itself (an index object).
fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
    let first = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    if first.is_dir() {
        only_file(&first)
    } else {
        first
    }
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_packs_and_a_damaged_trailer_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("f");
    std::fs::write(&file, "abc".repeat(100_000)).unwrap();
    let s = store.to_str().unwrap();
    let snap = [
        "snapshot",
        "--store",
        s,
        "--resource",
        "r",
        "--json",
        file.to_str().unwrap(),
    ];
    json(&prewarm(&snap));
    let index = only_file(&store.join("index"));
    std::fs::write(&index, b"not an index").unwrap();
    // Open still works (the index comes from the packs' trailers) and restores are whole.
    let dest = dir.path().join("out");
    let out = prewarm(&[
        "restore",
        "--store",
        s,
        "--resource",
        "r",
        dest.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());
    // verify: damage found (exit 1), naming the index object.
    let out = prewarm(&["verify", "--store", s]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is damaged"),
        "{out:?}"
    );
    // repair publishes a rebuilt index; then verify is clean.
    let out = prewarm(&["repair", "--store", s]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed damaged index object"));
    // Removed, or rewritten whole (an index is named by the hash of its body).
    assert_ne!(
        std::fs::read(&index).ok().as_deref(),
        Some(&b"not an index"[..])
    );
    let out = prewarm(&["verify", "--store", s]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = prewarm(&["repair", "--store", s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing written"));
    // A flipped byte in a pack's trailer (no chunk touched): verify finds it.
    let pack = only_file(&store.join("data"));
    let mut b = std::fs::read(&pack).unwrap();
    let n = b.len();
    let len = u32::from_le_bytes(b[n - 8..n - 4].try_into().unwrap()) as usize;
    b[n - 8 - len + 3] ^= 0x5a;
    std::fs::write(&pack, b).unwrap();
    let out = prewarm(&["verify", "--store", s]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("trailer"),
        "{out:?}"
    );
}

#[test]
fn watch_commits_on_interval_after_a_change_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (src, store) = (dir.path().join("src"), dir.path().join("store"));
    make_tree(&src);
    let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args([
            "watch",
            "--store",
            store.to_str().unwrap(),
            "--resource",
            "w",
            "--interval",
            "200ms",
            "--json",
            src.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["version"], 1);
    std::fs::write(src.join("new.txt"), b"fresh state").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got_v2 = false;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["version"] == 2 && v["unchanged"] == false {
            got_v2 = true;
            break;
        }
    }
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(got_v2, "a second version was committed after the change");
    assert!(status.success(), "watch exits cleanly on SIGTERM: {status}");
}

#[test]
fn import_and_eval_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.csv");
    std::fs::write(&log, "t,user,item\n1,a,x\nnoon,b,y\n2,a,z\n").unwrap();
    let out = dir.path().join("h.jsonl");
    let args = |strict: bool| {
        let mut v = vec![
            "import",
            "--format",
            "csv",
            "--time-col",
            "t",
            "--key-col",
            "user",
            "--resource-col",
            "item",
            "-o",
            out.to_str().unwrap(),
            log.to_str().unwrap(),
        ];
        if strict {
            v.push("--strict");
        }
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_prewarm"))
            .args(a)
            .output()
            .unwrap()
    };
    bad_input(&run(args(true)), "line 3");
    assert!(!out.exists(), "a failed import writes nothing");
    // A file with no valid row is an error, not "imported 0 records".
    let junk = dir.path().join("junk.log");
    std::fs::write(&junk, "junk\nmore junk\n").unwrap();
    let junk_args = [
        "import",
        "--format",
        "clf",
        "-o",
        out.to_str().unwrap(),
        junk.to_str().unwrap(),
    ];
    bad_input(
        &run(junk_args.iter().map(|s| s.to_string()).collect()),
        "no valid rows",
    );
    assert!(!out.exists(), "a failed import writes nothing");
    let ok = run(args(false));
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("imported 2 records"));
    let e = prewarm(&["eval", "--history", out.to_str().unwrap(), "--json"]);
    let rows = json(&e);
    assert_eq!(
        rows.as_array().unwrap().len(),
        4,
        "frequency, markov, histogram, oracle"
    );

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    bad_input(
        &prewarm(&["eval", "--history", empty.to_str().unwrap()]),
        "no history records",
    );
    let unordered = dir.path().join("u.jsonl");
    std::fs::write(&unordered, "{\"ts\": 5, \"event\": {\"type\": \"t\", \"key\": \"k\"}}\n{\"ts\": 1, \"event\": {\"type\": \"t\", \"key\": \"k\"}}\n").unwrap();
    bad_input(
        &prewarm(&["eval", "--history", unordered.to_str().unwrap()]),
        "out of time order",
    );
    let broken = dir.path().join("b.jsonl");
    std::fs::write(&broken, "{\"ts\": NaN}\n").unwrap();
    bad_input(
        &prewarm(&["eval", "--history", broken.to_str().unwrap()]),
        "line 1",
    );
    bad_input(
        &prewarm(&[
            "eval",
            "--history",
            out.to_str().unwrap(),
            "--models",
            "crystal-ball",
        ]),
        "unknown model",
    );
}

/// A history where each of 8 keys cycles through its own 3 resources.
fn cyclic_history(path: &Path, n: usize) {
    let loops = [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["a", "e", "c"],
        ["f", "b", "d"],
    ];
    let mut s = String::new();
    for i in 0..n {
        let key = i % 8;
        let res = loops[key % 4][(i / 8) % 3];
        s.push_str(&format!(
            "{{\"ts\": {i}, \"event\": {{\"type\": \"http\", \"key\": \"k{key}\"}}, \"reads\": [{{\"resource\": \"r/{res}\", \"bytes\": 100}}], \"duration_s\": 0.01}}\n"
        ));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn train_then_eval_learned_models_and_refuse_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("h.jsonl");
    cyclic_history(&h, 1600);
    let hs = h.to_str().unwrap();
    for kind in ["gru", "transformer"] {
        let m = dir.path().join(kind);
        let summary = json(&prewarm(&[
            "train",
            "--history",
            hs,
            "--model",
            kind,
            "--until",
            "0.5",
            "--embed",
            "16",
            "--hidden",
            "24",
            "--window",
            "4",
            "--heads",
            "2",
            "--seq-len",
            "8",
            "--lr",
            "0.03",
            "--epochs",
            "12",
            "--out",
            m.to_str().unwrap(),
            "--json",
        ]));
        assert_eq!(summary["records"], 800);
        assert!(m.join("config.json").exists() && m.join("model.safetensors").exists());
    }
    let rows = json(&prewarm(&[
        "eval",
        "--history",
        hs,
        "--json",
        "--models",
        &format!(
            "frequency,gru:{},transformer:{}",
            dir.path().join("gru").display(),
            dir.path().join("transformer").display()
        ),
    ]));
    let rows = rows.as_array().unwrap();
    let top1 = |i: usize| rows[i]["top1"].as_f64().unwrap();
    assert_eq!(rows[1]["model"], "gru");
    assert!(top1(1) > 0.75 && top1(2) > 0.75, "{rows:?}");
    assert!(
        top1(1) > top1(0) + 0.3,
        "the models use each key's past: {rows:?}"
    );
    assert!(rows[1]["memory_bytes"].as_u64().unwrap() > 0);

    // A model scored on records it was trained on is refused.
    bad_input(
        &prewarm(&[
            "eval",
            "--history",
            hs,
            "--warmup",
            "0.2",
            "--models",
            &format!("gru:{}", dir.path().join("gru").display()),
        ]),
        "trained on records up to",
    );
    // The wrong kind, a missing directory, an empty history.
    bad_input(
        &prewarm(&[
            "eval",
            "--history",
            hs,
            "--models",
            &format!("transformer:{}", dir.path().join("gru").display()),
        ]),
        "holds a gru model",
    );
    bad_input(
        &prewarm(&[
            "eval",
            "--history",
            hs,
            "--models",
            "gru:/nonexistent/model",
        ]),
        "missing",
    );
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    bad_input(
        &prewarm(&[
            "train",
            "--history",
            empty.to_str().unwrap(),
            "--model",
            "gru",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ]),
        "no history records",
    );
    let noreads = dir.path().join("noreads.jsonl");
    std::fs::write(
        &noreads,
        "{\"ts\": 1, \"event\": {\"type\": \"t\", \"key\": \"k\"}}\n",
    )
    .unwrap();
    bad_input(
        &prewarm(&[
            "train",
            "--history",
            noreads.to_str().unwrap(),
            "--model",
            "gru",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ]),
        "no record reads a resource",
    );

    // The inference benchmark runs against the trained model.
    let bench = json(&prewarm(&[
        "bench",
        "predict",
        "--model",
        dir.path().join("gru").to_str().unwrap(),
        "--history",
        hs,
        "--events",
        "500",
        "--json",
    ]));
    assert!(bench.as_array().unwrap().len() >= 5, "{bench:?}");
    assert!(bench[0]["p50_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn replay_compares_policies_deterministically_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("h.jsonl");
    cyclic_history(&h, 3_000);
    let report = dir.path().join("report.html");
    let h = h.to_str().unwrap();
    let args = [
        "replay",
        "--history",
        h,
        "--policies",
        "none,lru,markov,oracle",
        "--cache-size",
        "1KiB",
        "--sweep",
        "300B,4KiB",
        "--lead",
        "1s",
        "--keep-alive",
        "2s",
        "--json",
    ];
    let mut with_report = args.to_vec();
    with_report.extend(["--report", report.to_str().unwrap()]);
    let a = json(&prewarm(&with_report));
    let b = json(&prewarm(&args));
    assert_eq!(
        a["rows"], b["rows"],
        "the same inputs give the same numbers"
    );
    let rows = a["rows"].as_array().unwrap();
    let warm = |p: &str| {
        rows.iter().find(|r| r["policy"] == p).unwrap()["warm_rate"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(warm("none"), 0.0);
    assert!(warm("markov") > warm("lru"), "{rows:?}");
    assert!(warm("oracle") >= warm("markov"), "{rows:?}");
    assert_eq!(rows[3]["oracle_share"].as_f64(), Some(1.0));
    assert_eq!(a["sweep"].as_array().unwrap().len(), 2);
    // A cyclic history names every state in its warm-up: nothing is unforeseeable.
    assert_eq!(
        a["ceiling"]["unforeseeable"].as_u64(),
        Some(0),
        "{}",
        a["ceiling"]
    );
    assert!(a["ceiling"]["executions"].as_u64().unwrap() > 2_000);
    let html = std::fs::read_to_string(&report).unwrap();
    for want in [
        "<svg",
        "warm starts vs memory",
        "time-to-ready",
        "over the replay",
        "markov",
        "Causal ceiling 100.0%",
    ] {
        assert!(html.contains(want), "report lacks {want}");
    }
    assert!(
        !html.contains("<script"),
        "the report must open offline, without scripts"
    );
    // Bad input: an unknown policy and a history that is not one.
    let out = prewarm(&["replay", "--history", h, "--policies", "lru,psychic"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown policy \"psychic\""));
    let bogus = dir.path().join("bogus.jsonl");
    std::fs::write(
        &bogus,
        "{\"ts\": 1, \"event\": {\"type\": \"x\", \"key\": \"k\"}, \"colour\": 1}\n",
    )
    .unwrap();
    let out = prewarm(&["replay", "--history", bogus.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{out:?}"
    );
}

#[test]
fn demo_serves_a_short_workload_on_demand_and_predictive_and_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("demo.html");
    let out = json(&prewarm(&[
        "demo",
        "--history",
        "240s",
        "--serve",
        "8s",
        "--tenants",
        "4",
        "--train-budget",
        "5s",
        "--report",
        report.to_str().unwrap(),
        "--json",
    ]));
    let phases = out["phases"].as_array().unwrap();
    assert_eq!(
        phases.len(),
        3,
        "on-demand, the best baseline, the learned policy: {out}"
    );
    let (cold, warm) = (&phases[0], &phases[2]);
    assert_eq!(phases[1]["policy"], "markov");
    let n = cold["executions"].as_u64().unwrap();
    assert!(n > 10, "{out}");
    assert_eq!(warm["executions"].as_u64(), Some(n), "the same executions");
    for p in phases {
        assert_eq!(p["failed"].as_u64(), Some(0), "{out}");
        assert!(
            p["wire_bytes"].as_u64().unwrap() > 1 << 20,
            "real bytes moved"
        );
        // Every cold execution has at least one cold read, with a cause.
        let cold_execs = n - (p["warm_start_rate"].as_f64().unwrap() * n as f64).round() as u64;
        let causes: u64 = ["first_use", "new_version", "evicted", "late"]
            .iter()
            .map(|c| p["cold_reads"][c].as_u64().unwrap())
            .sum();
        assert!(causes >= cold_execs, "{out}");
    }
    // Both runs start from empty caches.
    assert!(
        cold["cold_reads"]["first_use"].as_u64().unwrap() > 0,
        "{out}"
    );
    // On-demand moves nothing ahead of time; the predictive policies do and what they move
    // is read. With the Markov baseline, states read for the first time on a capacity were
    // there before they were needed more often than on demand. The learned phase is not
    // held to that here: on this 8-second serve with a 5-second training budget it is not
    // reliably better than on demand on a loaded 2-core machine (22 and 24 first-use cold
    // reads against 20 in two CI runs; the open target of the prediction issue), so this
    // test checks only that it runs, moves read bytes and fails nothing.
    assert_eq!(cold["predictive_transfers"].as_u64(), Some(0));
    for p in &phases[1..] {
        assert!(p["predictive_transfers"].as_u64().unwrap() > 0, "{out}");
        assert!(
            p["predictive_unread_bytes"].as_u64().unwrap()
                < p["predictive_bytes"].as_u64().unwrap(),
            "{out}"
        );
    }
    assert!(
        phases[1]["cold_reads"]["first_use"].as_u64().unwrap()
            < cold["cold_reads"]["first_use"].as_u64().unwrap(),
        "{out}"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    for want in [
        "<svg",
        "on-demand",
        "markov",
        "learned (GRU mixture)",
        "time-to-ready",
    ] {
        assert!(html.contains(want), "report lacks {want}");
    }
    // Bad arguments: a clear error, nothing run.
    bad_input(&prewarm(&["demo", "--capacities", "0"]), "--capacities");
}
