//! A nats-server for the process tests, and the plain NATS protocol by hand: publish (core
//! or JetStream, waiting for the stream's acknowledgement) and ask a consumer's state.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Proc, free_port, wait_until};

/// A nats-server with JetStream on a free port, or `None` (with a note) when none is
/// installed — except under CI, where `.ci/run` installs one and its absence is a failure.
pub fn nats_server(dir: &Path) -> Option<(Proc, u16)> {
    nats_server_installed()?;
    let port = free_port();
    let store = dir.join("nats");
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("nats-server", 20, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((Proc(child), port))
}

/// `Some` when a nats-server is on PATH; else `None` with a note (a failure under CI).
pub fn nats_server_installed() -> Option<()> {
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide nats-server (.ci/run installs it)"
        );
        eprintln!("no nats-server on PATH: skipping");
        return None;
    }
    Some(())
}

/// Publishes `payload` on `subject` with the plain NATS protocol (the stream captures it).
pub fn nats_publish(port: u16, subject: &str, payload: &str) {
    let mut c = Nats::connect(port);
    write!(
        c.out,
        "PUB {subject} {}\r\n{payload}\r\nPING\r\n",
        payload.len()
    )
    .unwrap();
    c.until_pong();
}

/// One NATS connection spoken by hand.
pub struct Nats {
    out: TcpStream,
    inp: BufReader<TcpStream>,
    next_inbox: u64,
}

impl Nats {
    /// Connects and subscribes to its own inbox (`_INBOX.t.>`).
    pub fn connect(port: u16) -> Self {
        let out = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut inp = BufReader::new(out.try_clone().unwrap());
        let mut line = String::new();
        inp.read_line(&mut line).unwrap();
        assert!(line.starts_with("INFO"), "{line}");
        let mut c = Self {
            out,
            inp,
            next_inbox: 0,
        };
        write!(
            c.out,
            "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.t.> 1\r\nPING\r\n"
        )
        .unwrap();
        c.until_pong();
        c
    }

    /// The server's next protocol line (an `-ERR` fails the test).
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.inp.read_line(&mut line).unwrap();
        assert!(n > 0, "the NATS server closed the connection");
        assert!(!line.starts_with("-ERR"), "{line}");
        line
    }

    fn until_pong(&mut self) {
        while !self.line().starts_with("PONG") {}
    }

    /// Sends `payload` to `subject` with a reply inbox and returns the reply's body.
    pub fn request(&mut self, subject: &str, payload: &str) -> String {
        let inbox = self.send(subject, payload);
        self.reply(&inbox)
    }

    /// Sends `payload` to `subject` with a new reply inbox, returned.
    fn send(&mut self, subject: &str, payload: &str) -> String {
        self.next_inbox += 1;
        let inbox = format!("_INBOX.t.{}", self.next_inbox);
        write!(
            self.out,
            "PUB {subject} {inbox} {}\r\n{payload}\r\n",
            payload.len()
        )
        .unwrap();
        inbox
    }

    /// The body of the reply to `inbox` (replies to other inboxes are skipped).
    fn reply(&mut self, inbox: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with("PING") {
                write!(self.out, "PONG\r\n").unwrap();
                continue;
            }
            // MSG <subject> <sid> <bytes>
            let Some(rest) = line.strip_prefix("MSG ") else {
                continue;
            };
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let len: usize = parts.last().unwrap().parse().unwrap();
            let mut body = vec![0; len + 2];
            self.inp.read_exact(&mut body).unwrap();
            body.truncate(len);
            if parts[0] == inbox {
                return String::from_utf8(body).unwrap();
            }
        }
    }

    /// Publishes through JetStream: returns the stream sequence the stream acknowledged.
    pub fn js_publish(&mut self, subject: &str, payload: &str) -> u64 {
        let inbox = self.send(subject, payload);
        self.js_ack(&inbox)
    }

    /// [`Nats::js_publish`] of many messages, sent before their acknowledgements are read.
    pub fn js_publish_all(&mut self, subject: &str, payloads: &[String]) -> Vec<u64> {
        let inboxes: Vec<String> = payloads.iter().map(|p| self.send(subject, p)).collect();
        inboxes.iter().map(|i| self.js_ack(i)).collect()
    }

    fn js_ack(&mut self, inbox: &str) -> u64 {
        let ack: serde_json::Value = serde_json::from_str(&self.reply(inbox)).unwrap();
        assert!(ack.get("error").is_none(), "{ack}");
        ack["seq"].as_u64().unwrap()
    }

    /// A consumer's state (`$JS.API.CONSUMER.INFO`).
    pub fn consumer_info(&mut self, stream: &str, durable: &str) -> serde_json::Value {
        let info: serde_json::Value = serde_json::from_str(
            &self.request(&format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"), ""),
        )
        .unwrap();
        assert!(info.get("error").is_none(), "{info}");
        info
    }
}
