//! Shared by the process tests: the binary, processes killed on drop, a cluster of a
//! coordinator and agents on free ports, HTTP by hand, waiting with a deadline.

#![allow(dead_code)] // each test file uses its own share of these
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod nats;
mod nats_cluster;
mod s3;
#[allow(unused_imports)] // each test file uses its own share of these
pub use nats::*;
#[allow(unused_imports)]
pub use nats_cluster::*;
#[allow(unused_imports)]
pub use s3::*;

/// Variables every process this test binary starts gets (an S3 endpoint, say).
static CHILD_ENV: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Sets `vars` in the environment of every process started from now on by this binary.
pub fn set_child_env(vars: Vec<(String, String)>) {
    *CHILD_ENV.lock().unwrap() = vars;
}

fn child_env() -> Vec<(String, String)> {
    CHILD_ENV.lock().unwrap().clone()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_prewarm");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(args: &[&str], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(BIN)
            .args(args)
            .args(["--log", "info"])
            .env_remove("PREWARM_TOKEN")
            .envs(child_env())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

/// [`spawn`] with exactly `args` (no `--log` added: a manifest's own arguments).
pub fn spawn_as_is(args: &[&str], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    let child = Command::new(BIN)
        .args(args)
        .env_remove("PREWARM_TOKEN")
        .envs(child_env())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap();
    Proc(child)
}

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("PREWARM_TOKEN")
        .envs(child_env())
        .output()
        .unwrap()
}

pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_with(addr, path, "")
}

/// [`http_get`] with `Authorization: Bearer <token>`.
pub fn http_get_auth(addr: &str, path: &str, token: &str) -> (u16, String) {
    http_get_with(addr, path, &format!("Authorization: Bearer {token}\r\n"))
}

fn http_get_with(addr: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub fn status_json(url: &str) -> serde_json::Value {
    let out = run(&["status", "--coordinator", url, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn held(url: &str, cap: &str) -> Vec<(String, u64)> {
    let s = status_json(url);
    s["capacities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["capacity"] == cap && c["connected"] == true)
        .flat_map(|c| c["held"].as_array().unwrap().clone())
        .map(|h| {
            (
                h["resource"].as_str().unwrap().to_owned(),
                h["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub store: String,
    pub args: Vec<String>,
    pub coord: Option<Proc>,
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on(None, extra)
    }

    /// A coordinator over `store` (default: a directory in the cluster's temporary one).
    pub fn start_on(store: Option<&str>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = store.map_or_else(
            || dir.path().join("store").display().to_string(),
            str::to_owned,
        );
        let mut c = Cluster {
            url: String::new(),
            dir,
            store,
            args: Vec::new(),
            coord: None,
        };
        // A port found free may be taken (another test's outgoing connection) before the
        // coordinator binds it: then it exits, and it is started again on new ports.
        for attempt in 1..=3 {
            let (port, data) = (free_port(), free_port());
            let sock = c.dir.path().join("data.sock").display().to_string();
            c.args = [
                "coordinator",
                "--store",
                &c.store,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-listen",
                &format!("127.0.0.1:{data}"),
                "--data-unix",
                &sock,
                "--poll",
                "200ms",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
            c.url = format!("http://127.0.0.1:{port}");
            match c.try_start_coordinator() {
                Ok(()) => return c,
                Err(log) if attempt < 3 && log.contains("cannot listen") => continue,
                Err(log) => panic!("the coordinator did not start:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn start_coordinator(&mut self) {
        if let Err(log) = self.try_start_coordinator() {
            panic!("the coordinator did not start:\n{log}");
        }
    }

    /// Starts the coordinator and waits until it answers; its log when it exits or stays
    /// silent for 20 s.
    pub fn try_start_coordinator(&mut self) -> Result<(), String> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let log = self.dir.path().join("coordinator.log");
        self.coord = Some(spawn(&args, &log));
        let t0 = Instant::now();
        loop {
            if run(&["status", "--coordinator", &self.url])
                .status
                .success()
            {
                return Ok(());
            }
            let exited = self
                .coord
                .as_mut()
                .is_some_and(|p| p.0.try_wait().ok().flatten().is_some());
            if exited || t0.elapsed() > Duration::from_secs(20) {
                self.coord = None;
                return Err(std::fs::read_to_string(&log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn agent(&self, name: &str, api: &str, extra: &[&str]) -> Proc {
        let cache = self.dir.path().join(name).display().to_string();
        let mut args = vec![
            "agent",
            "--coordinator",
            &self.url,
            "--name",
            name,
            "--cache-dir",
            &cache,
            "--listen",
            api,
        ];
        if !extra.contains(&"--cache-size") {
            args.extend(["--cache-size", "1GiB"]);
        }
        args.extend_from_slice(extra);
        let p = spawn(&args, &self.dir.path().join(format!("{name}.log")));
        wait_until("the agent to attach", 20, || {
            status_json(&self.url)["capacities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["capacity"] == name && c["connected"] == true)
        });
        p
    }

    pub fn snapshot(&self, resource: &str, file: &Path) {
        let out = run(&[
            "snapshot",
            "--store",
            &self.store,
            "--resource",
            resource,
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn transfer(&self, cap: &str, resource: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "transfer",
            "--coordinator",
            &self.url,
            "--capacity",
            cap,
            "--resource",
            resource,
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

pub fn ack(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}

pub fn http_post(addr: &str, path: &str, body: &[u8]) -> (u16, String) {
    let (status, _, body) = http_post_full(addr, path, body);
    (status, body)
}

/// Status, head and body of a POST.
pub fn http_post_full(addr: &str, path: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server may answer (413) before reading a huge body, and close.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_owned(), body.to_owned())
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Snapshots shop/x and shop/y (`size` bytes of noise each), runs session s1's executions
/// x, y, x, y… (five of each) on the agent at `api`, and waits until their history reached
/// the coordinator's model.
pub fn teach_x_then_y(c: &Cluster, api: &str, coord: &str, size: usize, seed: u64) {
    for (i, r) in ["x", "y"].iter().enumerate() {
        let f = c.path(r);
        std::fs::write(&f, noise(size, i as u64 + seed)).unwrap();
        c.snapshot(&format!("shop/{r}"), &f);
    }
    for _ in 0..5 {
        for r in ["x", "y"] {
            let (code, body) = http_get(api, &format!("/v1/states/shop/{r}?key=s1"));
            assert_eq!(code, 200, "{body}");
        }
    }
    wait_until("history to reach the model", 20, || {
        let (_, m) = http_get(coord, "/metrics");
        metric(&m, "prewarm_coordinator_history_records_total") >= 10.0
    });
}

/// Agents cap-a and cap-b of a cluster, cap-b's API and the coordinator's HTTP address.
pub struct Pair {
    pub coord: String,
    pub api_b: String,
    pub _a: Proc,
    pub _b: Proc,
}

/// Starts cap-a and cap-b on free ports and teaches the model x → y through cap-a's history
/// ([`teach_x_then_y`], states of `size` bytes of noise from `seed`).
pub fn taught_pair(c: &Cluster, size: usize, seed: u64) -> Pair {
    let coord = c.url.trim_start_matches("http://").to_owned();
    let (api_a, api_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _a = c.agent("cap-a", &api_a, &[]);
    let _b = c.agent("cap-b", &api_b, &[]);
    teach_x_then_y(c, &api_a, &coord, size, seed);
    Pair {
        coord,
        api_b,
        _a,
        _b,
    }
}

/// A process's resident and peak resident memory, KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Environment variable `name` parsed, else `default` (the long variants' knobs).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
