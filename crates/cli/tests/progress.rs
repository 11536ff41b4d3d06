//! Progress on stderr (`--progress`): plain lines when stderr is not a terminal (the lines a
//! log or CI keeps), a redrawn bar on a real pseudo-terminal (util-linux `script`), nothing
//! with `off`.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};

use support::*;

/// Runs the binary with plain lines every tick (`PREWARM_PROGRESS_EVERY=0`).
fn run_plain(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env("PREWARM_PROGRESS_EVERY", "0")
        .env_remove("PREWARM_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A source of 24 MiB in 24 files (enough for the writer to report more than once).
fn source(root: &std::path::Path) -> std::path::PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        std::fs::write(src.join(format!("f{i:02}")), noise(1 << 20, i)).unwrap();
    }
    src
}

#[test]
fn plain_lines_count_a_snapshot_and_a_restore_up_to_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let store = dir.path().join("store");
    let (s, sp) = (store.to_str().unwrap(), src.to_str().unwrap());
    let snap = run_plain(&[
        "--progress",
        "plain",
        "snapshot",
        "--store",
        s,
        "--resource",
        "p/tree",
        sp,
    ]);
    let err = stderr(&snap);
    assert!(err.contains("snapshot p/tree: "), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("snapshot p/tree: 100% (24.00 MiB of 24.00 MiB, "),
        "the last line reports the whole source: {err}"
    );
    let dest = dir.path().join("back");
    let back = run_plain(&[
        "--progress",
        "plain",
        "restore",
        "--store",
        s,
        "--resource",
        "p/tree",
        dest.to_str().unwrap(),
    ]);
    let err = stderr(&back);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("restore p/tree@1: 100% (24.00 MiB of 24.00 MiB, "),
        "{err}"
    );
    // Off prints nothing but errors; the default on a pipe prints nothing for work this short.
    let quiet = run_plain(&["--progress", "off", "versions", "--store", s]);
    assert_eq!(stderr(&quiet), "");
    let dest2 = dir.path().join("back2");
    let auto = run(&[
        "restore",
        "--store",
        s,
        "--resource",
        "p/tree",
        dest2.to_str().unwrap(),
    ]);
    assert!(auto.status.success());
    assert_eq!(stderr(&auto), "", "no line before the first 5 s");
}

#[test]
fn plain_lines_count_a_replay_per_policy() {
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("h.jsonl");
    let mut s = String::new();
    for i in 0..3_000 {
        s.push_str(&format!(
            "{{\"ts\": {i}, \"event\": {{\"type\": \"http\", \"key\": \"k{}\"}}, \"reads\": [{{\"resource\": \"r/{}\", \"bytes\": 1000}}], \"duration_s\": 0.5}}\n",
            i % 7,
            (i * 7 + i / 5) % 40
        ));
    }
    std::fs::write(&h, s).unwrap();
    let out = run_plain(&[
        "--progress",
        "plain",
        "replay",
        "--history",
        h.to_str().unwrap(),
        "--policies",
        "lru,markov",
    ]);
    let err = stderr(&out);
    for p in ["lru", "markov"] {
        assert!(
            err.contains(&format!(
                "replay {p}: 100% (3000 executions of 3000 executions"
            )),
            "{err}"
        );
    }
}

#[test]
fn a_terminal_gets_a_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed to give the binary a terminal");
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let store = dir.path().join("store");
    let cmd = format!(
        "{BIN} snapshot --store {} --resource p/bar {}",
        store.display(),
        src.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env_remove("PREWARM_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // What the terminal received: the bar's redraws (label, brackets, a share) before the
    // result line.
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("snapshot p/bar"), "{tty:?}");
    assert!(tty.contains("committed p/bar@1"), "{tty:?}");
}
