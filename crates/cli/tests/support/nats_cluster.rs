//! A three-node NATS cluster with JetStream on loopback, and a publisher that retries until
//! the stream acknowledges (with `Nats-Msg-Id`, so a retried publish is stored once).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Proc, free_port, wait_until};

/// One node: its process (`None` once killed), client port and start command.
pub struct Node {
    pub proc: Option<Proc>,
    pub port: u16,
    args: Vec<String>,
}

impl Node {
    /// SIGKILL.
    pub fn kill(&mut self) {
        self.proc.take();
    }

    /// Starts it again on the same ports and storage.
    pub fn restart(&mut self) {
        self.proc = Some(start(&self.args));
    }
}

fn start(args: &[String]) -> Proc {
    let child = Command::new("nats-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Three nodes routed to each other (cluster `prewarm`), or `None` without a nats-server
/// (a failure under CI, where `.ci/run` installs one).
pub fn nats_cluster(dir: &Path) -> Option<Vec<Node>> {
    super::nats_server_installed()?;
    let (ports, routes): (Vec<u16>, Vec<u16>) = (0..3).map(|_| (free_port(), free_port())).unzip();
    let all_routes: Vec<String> = routes
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let args: Vec<String> = [
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &ports[i].to_string(),
                "-n",
                &format!("n{i}"),
                "--cluster_name",
                "prewarm",
                "--cluster",
                &all_routes[i],
                "--routes",
                &all_routes.join(","),
                "-sd",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([dir.join(format!("n{i}")).display().to_string()])
            .collect();
            Node {
                proc: Some(start(&args)),
                port: ports[i],
                args,
            }
        })
        .collect();
    for n in &nodes {
        wait_until("a NATS node", 20, || {
            TcpStream::connect(("127.0.0.1", n.port)).is_ok()
        });
    }
    Some(nodes)
}

/// The stream's acknowledgement of one publish: (sequence, whether it was a duplicate).
fn publish_once(port: u16, subject: &str, id: &str, payload: &str) -> Option<(u64, bool)> {
    let out = TcpStream::connect(("127.0.0.1", port)).ok()?;
    out.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut inp = BufReader::new(out.try_clone().ok()?);
    let mut out = out;
    let mut line = String::new();
    inp.read_line(&mut line).ok()?;
    let headers = format!("NATS/1.0\r\nNats-Msg-Id: {id}\r\n\r\n");
    write!(
        out,
        "CONNECT {{\"verbose\":false,\"headers\":true,\"no_responders\":true}}\r\n\
         SUB _INBOX.p 1\r\nHPUB {subject} _INBOX.p {} {}\r\n{headers}{payload}\r\n",
        headers.len(),
        headers.len() + payload.len()
    )
    .ok()?;
    loop {
        line.clear();
        inp.read_line(&mut line).ok()?;
        if line.starts_with("PING") {
            out.write_all(b"PONG\r\n").ok()?;
        } else if line.starts_with("HMSG") {
            return None; // a status (503: no stream leader yet): try again
        } else if let Some(rest) = line.strip_prefix("MSG ") {
            let len: usize = rest.split_whitespace().last()?.parse().ok()?;
            let mut body = vec![0; len + 2];
            inp.read_exact(&mut body).ok()?;
            let ack: serde_json::Value = serde_json::from_slice(&body[..len]).ok()?;
            let seq = ack.get("seq")?.as_u64()?;
            return Some((seq, ack["duplicate"].as_bool().unwrap_or(false)));
        } else if line.starts_with("-ERR") {
            return None;
        }
    }
}

/// Publishes until one of `ports` returns the stream's acknowledgement (30 s at most).
pub fn publish_acked(ports: &[u16], subject: &str, id: &str, payload: &str) -> (u64, bool) {
    let t0 = Instant::now();
    for attempt in 0.. {
        let port = ports[attempt % ports.len()];
        if let Some(ack) = publish_once(port, subject, id, payload) {
            return ack;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{id}: no acknowledgement in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}
