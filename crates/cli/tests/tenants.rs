//! Tenant-scoped tokens across real processes (issue 13 §4): a coordinator and two agents
//! started with `--tokens FILE` (entries made by `prewarm token new`) beside the shared
//! token. Two tenants each ensure their own states and get 403 on the other's; an events
//! body naming the other tenant's state is refused whole; a prediction made for one
//! tenant's event never moves the other's state although the model predicts it (the same
//! event sent with the shared token moves it); status is filtered to a tenant's prefixes;
//! `/metrics` and the dashboard need `admin`; a malformed tokens file stops the start.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod support;

use support::*;

const SHARED: &str = "shared-secret-0123456789";

/// `prewarm token new`: appends the entry to `tokens` and returns the secret's file.
fn new_token(dir: &Path, tokens: &Path, name: &str, prefix: &str, caps: &str) -> PathBuf {
    let secret = dir.join(format!("{name}.secret"));
    let out = run(&[
        "token",
        "new",
        "--name",
        name,
        "--prefix",
        prefix,
        "--cap",
        caps,
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = String::from_utf8(out.stdout).unwrap();
    let s = std::fs::read_to_string(&secret).unwrap();
    assert!(
        !entry.contains(s.trim()),
        "the entry holds the hash, never the secret"
    );
    assert!(entry.contains(&format!("name = \"{name}\"")), "{entry}");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tokens)
        .unwrap();
    f.write_all(entry.as_bytes()).unwrap();
    secret
}

fn secret(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

/// A request with `Authorization: Bearer <token>` (none when empty): status and body.
fn http(addr: &str, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

fn get(addr: &str, path: &str, token: &str) -> (u16, String) {
    http(addr, "GET", path, token, b"")
}

fn post(addr: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    http(addr, "POST", path, token, body.as_bytes())
}

fn status_as(url: &str, token_file: &Path) -> serde_json::Value {
    let out = run(&[
        "status",
        "--coordinator",
        url,
        "--json",
        "--token-file",
        token_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `cap` holds, as `status` shows it to the holder of `token_file`.
fn held_as(url: &str, token_file: &Path, cap: &str) -> Vec<String> {
    let s = status_as(url, token_file);
    let mut v: Vec<String> = s["capacities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["capacity"] == cap && c["connected"] == true)
        .flat_map(|c| c["held"].as_array().unwrap().clone())
        .map(|h| h["resource"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn transfer_as(url: &str, token_file: &Path, cap: &str, resource: &str) -> Output {
    run(&[
        "transfer",
        "--coordinator",
        url,
        "--capacity",
        cap,
        "--resource",
        resource,
        "--json",
        "--token-file",
        token_file.to_str().unwrap(),
    ])
}

struct Tenants {
    dir: tempfile::TempDir,
    url: String,
    coord: String,
    store: String,
    api_a: String,
    api_b: String,
    shared: PathBuf,
    acme: PathBuf,
    beta: PathBuf,
    acme_transfer: PathBuf,
    ops: PathBuf,
    _procs: Vec<Proc>,
}

/// A coordinator with the shared token and a tokens file; cap-a presents the fleet's
/// transfer token, cap-b the shared one; both agents' APIs take the tokens file too.
fn start() -> Tenants {
    start_with(&[("cap-a", "agents"), ("cap-b", "shared")])
}

/// [`start`] with the agents named in `fleet`, each presenting the token of the entry named
/// beside it (`agents`: every resource; `acme-agents`, `beta-agents`: a tenant's prefix
/// only; `shared`: the shared token).
fn start_with(fleet: &[(&str, &str)]) -> Tenants {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokens = d.join("tokens.toml");
    let acme = new_token(d, &tokens, "acme", "tenants/acme/", "ensure,events");
    let beta = new_token(d, &tokens, "beta", "tenants/beta/", "ensure,events");
    let agents = new_token(d, &tokens, "agents", "*", "transfer");
    let acme_transfer = new_token(d, &tokens, "acme-ops", "tenants/acme", "transfer");
    let acme_agents = new_token(d, &tokens, "acme-agents", "tenants/acme/", "transfer");
    let beta_agents = new_token(d, &tokens, "beta-agents", "tenants/beta/", "transfer");
    let ops = new_token(d, &tokens, "ops", "*", "admin");
    let shared = d.join("shared.secret");
    std::fs::write(&shared, format!("{SHARED}\n")).unwrap();
    let token_of = |entry: &str| match entry {
        "agents" => agents.clone(),
        "acme-agents" => acme_agents.clone(),
        "beta-agents" => beta_agents.clone(),
        _ => shared.clone(),
    };
    let store = d.join("store").display().to_string();
    let (port, data) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{port}");
    let t = |p: &Path| p.to_str().unwrap().to_owned();
    let sock = t(&d.join("data.sock"));
    let coordinator = spawn(
        &[
            "coordinator",
            "--store",
            &store,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-listen",
            &format!("127.0.0.1:{data}"),
            "--data-unix",
            &sock,
            "--poll",
            "200ms",
            "--token-file",
            &t(&shared),
            "--tokens",
            &t(&tokens),
        ],
        &d.join("coordinator.log"),
    );
    wait_until("the coordinator", 30, || {
        run(&["status", "--coordinator", &url, "--token-file", &t(&shared)])
            .status
            .success()
    });
    let mut procs = vec![coordinator];
    let apis: Vec<String> = fleet
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    for ((name, entry), api) in fleet.iter().zip(&apis) {
        let (name, token) = (*name, &token_of(entry));
        let cache = t(&d.join(name));
        procs.push(spawn(
            &[
                "agent",
                "--coordinator",
                &url,
                "--name",
                name,
                "--cache-dir",
                &cache,
                "--cache-size",
                "1GiB",
                "--listen",
                api,
                "--token-file",
                &t(token),
                "--tokens",
                &t(&tokens),
            ],
            &d.join(format!("{name}.log")),
        ));
        wait_until("the agent to attach", 30, || {
            status_as(&url, &shared)["capacities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["capacity"] == name && c["connected"] == true)
        });
    }
    Tenants {
        coord: url.trim_start_matches("http://").to_owned(),
        url,
        store,
        api_a: apis[0].clone(),
        api_b: apis.get(1).cloned().unwrap_or_default(),
        shared,
        acme,
        beta,
        acme_transfer,
        ops,
        dir,
        _procs: procs,
    }
}

impl Tenants {
    fn snapshot(&self, resource: &str, seed: u64) {
        let f = self.dir.path().join(resource.replace('/', "_"));
        std::fs::write(&f, noise(1 << 20, seed)).unwrap();
        let out = run(&[
            "snapshot",
            "--store",
            &self.store,
            "--resource",
            resource,
            f.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn metric(&self, name: &str) -> f64 {
        let (code, m) = get(&self.coord, "/metrics", SHARED);
        assert_eq!(code, 200, "{m}");
        metric(&m, name)
    }
}

#[test]
fn tenants_reach_their_own_states_only_and_predictions_stay_inside_their_prefixes() {
    let t = start();
    let (acme, beta) = (secret(&t.acme), secret(&t.beta));
    t.snapshot("tenants/acme/x", 1);
    t.snapshot("tenants/beta/y", 2);

    // Each tenant ensures its own state on cap-b; the other's is 403, the same answer
    // whether the state exists or not.
    for (tok, r) in [(&acme, "tenants/acme/x"), (&beta, "tenants/beta/y")] {
        let (code, body) = get(&t.api_b, &format!("/v1/states/{r}?timeout_ms=20000"), tok);
        assert_eq!(code, 200, "{body}");
    }
    let mut refusals = Vec::new();
    for (tok, r) in [
        (&acme, "tenants/beta/y"),
        (&acme, "tenants/beta/never-was"),
        (&beta, "tenants/acme/x"),
    ] {
        let (code, body) = get(&t.api_b, &format!("/v1/states/{r}?timeout_ms=2000"), tok);
        assert_eq!(code, 403, "{r}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "forbidden", "{body}");
        refusals.push(v["message"].as_str().unwrap().replace(r, "R"));
    }
    assert_eq!(refusals[0], refusals[1], "no existence oracle");
    // The fleet's transfer token is no application token on cap-a's API.
    let (code, _) = get(
        &t.api_a,
        "/v1/states/tenants/acme/x",
        &secret(&t.acme_transfer),
    );
    assert_eq!(code, 403);

    // The model learns, from cap-b's history (the shared token may ensure anything), that
    // session s1 reads acme's x then beta's y; the last read is x, so y comes next.
    for i in 0..9 {
        let r = ["tenants/acme/x", "tenants/beta/y"][i % 2];
        let (code, body) = get(&t.api_b, &format!("/v1/states/{r}?key=s1"), SHARED);
        assert_eq!(code, 200, "{body}");
    }
    wait_until("history to reach the model", 20, || {
        t.metric("prewarm_coordinator_history_records_total") >= 11.0
    });
    assert!(held_as(&t.url, &t.shared, "cap-a").is_empty());

    // acme's event for s1 on cap-a: the model's prediction (beta's y) is not acme's to move.
    let event = r#"{"event": {"type": "http", "key": "s1"}, "capacity": "cap-a"}"#;
    let (code, body) = post(&t.coord, "/v1/events", &acme, event);
    assert_eq!(code, 200, "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(out["placement"]["capacity"], "cap-a", "{out}");
    let acme_only = |out: &serde_json::Value| {
        out["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["resource"].as_str().unwrap().starts_with("tenants/acme/"))
    };
    assert!(acme_only(&out), "{out}");
    let (_, preview) = get(&t.coord, "/v1/placement?key=s1&capacity=cap-a", &acme);
    let preview: serde_json::Value = serde_json::from_str(&preview).unwrap();
    assert!(acme_only(&preview), "{preview}");
    std::thread::sleep(Duration::from_millis(1500));
    let beta_on_a = || {
        held_as(&t.url, &t.shared, "cap-a")
            .iter()
            .any(|r| r.starts_with("tenants/beta/"))
    };
    assert!(!beta_on_a(), "nothing of beta's moved for acme's event");
    // The same event with the shared token: the model does predict beta's y, and it moves.
    let (code, body) = post(&t.coord, "/v1/events", SHARED, event);
    assert_eq!(code, 200, "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        out["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["resource"] == "tenants/beta/y"),
        "{out}"
    );
    wait_until("beta's y on cap-a", 20, beta_on_a);

    // Events naming another tenant's state: refused whole (a batch with one of acme's own
    // included), nothing handled.
    let handled = t.metric("prewarm_coordinator_events_total");
    for body in [
        r#"{"event": {"type": "t", "key": "k", "needs": ["tenants/beta/y"]}}"#,
        r#"[{"event": {"type": "t", "key": "k", "needs": ["tenants/acme/x"]}, "capacity": "cap-a"},
            {"event": {"type": "t", "key": "k", "needs": ["tenants/beta/none"]}}]"#,
    ] {
        let (code, text) = post(&t.coord, "/v1/events", &acme, body);
        assert_eq!(code, 403, "{text}");
        assert!(text.contains("\"error\":\"forbidden\""), "{text}");
    }
    assert_eq!(t.metric("prewarm_coordinator_events_total"), handled);
    assert!(t.metric("prewarm_coordinator_forbidden_total{route=\"events\"}") >= 2.0);
    // Its own: handled and moved.
    let (code, body) = post(
        &t.coord,
        "/v1/events",
        &acme,
        r#"{"event": {"type": "t", "key": "k", "needs": ["tenants/acme/x"]}, "capacity": "cap-a"}"#,
    );
    assert_eq!(code, 200, "{body}");
    wait_until("acme's x on cap-a", 20, || {
        held_as(&t.url, &t.shared, "cap-a") == ["tenants/acme/x", "tenants/beta/y"]
    });

    // Status: each tenant sees its own states and transfers; the shared token all of them.
    assert_eq!(held_as(&t.url, &t.acme, "cap-a"), ["tenants/acme/x"]);
    assert_eq!(held_as(&t.url, &t.beta, "cap-a"), ["tenants/beta/y"]);
    let s = status_as(&t.url, &t.acme);
    let recent = s["recent"].as_array().unwrap();
    assert!(!recent.is_empty(), "{s}");
    assert!(
        recent.iter().all(|r| r["resource"] == "tenants/acme/x"),
        "{s}"
    );
    assert!(s["model"].is_null(), "{s}");

    // Transfers by hand need the transfer capability and the resource inside the prefixes.
    let out = transfer_as(&t.url, &t.acme_transfer, "cap-b", "tenants/beta/y");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("outside the token's prefixes"), "{err}");
    let out = transfer_as(&t.url, &t.acme, "cap-b", "tenants/acme/x");
    assert!(String::from_utf8_lossy(&out.stderr).contains("transfer capability"));
    let out = transfer_as(&t.url, &t.acme_transfer, "cap-a", "tenants/acme/x");
    assert_eq!(ack(&out)["ok"], true);

    // /metrics and the dashboard: admin only (the ops token, the shared one).
    for tok in [&acme, &secret(&t.acme_transfer)] {
        let (code, body) = get(&t.coord, "/metrics", tok);
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("admin capability"), "{body}");
        assert_eq!(get(&t.coord, "/v1/dashboard", tok).0, 403);
    }
    assert_eq!(get(&t.coord, "/metrics", "").0, 401);
    let (code, m) = get(&t.coord, "/metrics", &secret(&t.ops));
    assert_eq!(code, 200);
    assert!(
        metric(&m, "prewarm_coordinator_forbidden_total{route=\"admin\"}") >= 2.0,
        "{m}"
    );
    assert_eq!(get(&t.coord, "/v1/dashboard", &secret(&t.ops)).0, 200);
    assert_eq!(get(&t.api_b, "/metrics", &acme).0, 403);
    assert_eq!(get(&t.api_b, "/metrics", SHARED).0, 200);
    // The admin-only token may not post events.
    assert_eq!(post(&t.coord, "/v1/events", &secret(&t.ops), event).0, 403);
}

/// Where each event ran, from `POST /v1/events` answers sent with the shared token.
fn placed(t: &Tenants, needs: &str, keys: std::ops::Range<u32>) -> Vec<String> {
    keys.map(|k| {
        let body = format!(r#"{{"event": {{"type": "t", "key": "k{k}", "needs": ["{needs}"]}}}}"#);
        let (code, text) = post(&t.coord, "/v1/events", SHARED, &body);
        assert_eq!(code, 200, "{text}");
        let out: serde_json::Value = serde_json::from_str(&text).unwrap();
        out["placement"]["capacity"]
            .as_str()
            .unwrap_or("none")
            .to_owned()
    })
    .collect()
}

/// Capacities whose agents present a tenant's `transfer` token are that tenant's: the
/// coordinator places an event only where every state it names may be held, moves nothing
/// else there (a prediction, a transfer by hand), and says why a transfer was refused.
#[test]
fn scoped_agents_receive_only_their_tenants_states() {
    let t = start_with(&[
        ("cap-acme", "acme-agents"),
        ("cap-beta", "beta-agents"),
        ("cap-all", "shared"),
    ]);
    t.snapshot("tenants/acme/x", 1);
    t.snapshot("tenants/beta/y", 2);
    // Sent with the shared token (every resource): acme's executions never land on beta's
    // capacity, beta's never on acme's, through the load bound's spill-over too.
    let acme_runs = placed(&t, "tenants/acme/x", 0..24);
    assert!(
        acme_runs.iter().all(|c| c == "cap-acme" || c == "cap-all"),
        "{acme_runs:?}"
    );
    let beta_runs = placed(&t, "tenants/beta/y", 24..48);
    assert!(
        beta_runs.iter().all(|c| c == "cap-beta" || c == "cap-all"),
        "{beta_runs:?}"
    );
    for (runs, own) in [(&acme_runs, "cap-acme"), (&beta_runs, "cap-beta")] {
        assert!(runs.iter().any(|c| c == own), "{own} took none: {runs:?}");
    }
    // Each tenant's capacity holds its own state, and only it.
    wait_until("the named states on their capacities", 20, || {
        held_as(&t.url, &t.shared, "cap-acme") == ["tenants/acme/x"]
            && held_as(&t.url, &t.shared, "cap-beta") == ["tenants/beta/y"]
    });
    // A transfer by hand to a capacity outside the state's tenant: refused by the
    // coordinator with the reason, nothing sent to the agent.
    let out = transfer_as(&t.url, &t.shared, "cap-acme", "tenants/beta/y");
    assert_eq!(out.status.code(), Some(1));
    let a = ack(&out);
    assert_eq!(a["failure"], "OUT_OF_SCOPE", "{a}");
    assert!(a["error"].as_str().unwrap().contains("may not hold"), "{a}");
    let out = transfer_as(&t.url, &t.shared, "cap-all", "tenants/beta/y");
    assert_eq!(ack(&out)["ok"], true);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(held_as(&t.url, &t.shared, "cap-acme"), ["tenants/acme/x"]);
    assert_eq!(held_as(&t.url, &t.shared, "cap-beta"), ["tenants/beta/y"]);
}

#[test]
fn a_malformed_tokens_file_stops_the_start_with_the_entry_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let cases = [
        (
            "[[token]]\nname = \"acme\"\nhash = \"0000000000000000000000000000000000000000000000000000000000000000\"\nprefixes = [\"tenants/acme/\"]\ncaps = [\"ensure\", \"read\"]\n",
            "entry 1 (\"acme\"): unknown capability \"read\"",
        ),
        (
            "[[token]]\nname = \"acme\"\nhash = \"pw_not-a-hash-but-a-secret\"\nprefixes = [\"*\"]\ncaps = [\"events\"]\n",
            "not the secret",
        ),
        (
            "[[token]]\nname = \"acme\"\nprefixes = [\"*\"]\ncaps = [\"events\"]\n",
            "missing field `hash`",
        ),
        (
            "[[token]]\nname = \"acme\"\nhash = \"0000000000000000000000000000000000000000000000000000000000000000\"\nprefixes = [\"../x\"]\ncaps = [\"events\"]\n",
            "prefixes: prefix \"../x\"",
        ),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        let port = free_port();
        for args in [
            vec![
                "coordinator",
                "--store",
                &store,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tokens",
                p,
            ],
            vec![
                "agent",
                "--name",
                "cap-x",
                "--cache-dir",
                dir.path().join("cache").to_str().unwrap(),
                "--tokens",
                p,
            ],
        ]
        .iter()
        .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(says) && err.contains(p), "{args:?}: {err}");
        }
    }
    // `token new` checks what it makes the same way.
    let out = run(&[
        "token", "new", "--name", "a", "--prefix", "../x", "--cap", "ensure",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "token", "new", "--name", "a", "--prefix", "t/a/", "--cap", "admin",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin needs prefixes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
