//! Overload of the agent's `ensure` API: many clients pipelining hits far faster than the
//! agent answers them. Memory stays bounded (every hit hands out a lease, held for the
//! lease's time: they are capped, and a call past the cap is shed with 503 `overloaded`,
//! counted), the agent keeps answering at its capacity, and it answers at once when the
//! flood ends. `PREWARM_OVERLOAD_SECS=60` for the long run (CI: 5).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::*;

/// Requests written per batch on one connection.
const PIPELINE: usize = 64;

#[derive(Default)]
struct Tally {
    hits: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
}

impl Tally {
    fn get(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.shed.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

/// Reads one response: (status, body).
fn response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn count(t: &Tally, (status, body): (u16, String)) {
    match status {
        200 => {
            assert!(body.contains("\"hit\":true"), "{body}");
            t.hits.fetch_add(1, Ordering::Relaxed);
        }
        503 => {
            assert!(body.contains("\"error\":\"overloaded\""), "{body}");
            t.shed.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            eprintln!("{status} {body}");
            t.other.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `clients` connections, each writing `depth` requests for `path` at a time and reading
/// their answers, until `stop`.
fn drive(
    api: &str,
    path: &str,
    clients: usize,
    depth: usize,
    stop: &Arc<AtomicBool>,
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let req = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\n\r\n").repeat(depth);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (api, stop, tally, req) =
                (api.to_owned(), stop.clone(), tally.clone(), req.clone());
            std::thread::spawn(move || {
                let s = TcpStream::connect(&api).unwrap();
                s.set_nodelay(true).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                while !stop.load(Ordering::Relaxed) {
                    w.write_all(req.as_bytes()).unwrap();
                    for _ in 0..depth {
                        count(&tally, response(&mut r));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    tally
}

fn for_secs(secs: u64) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        s.store(true, Ordering::Relaxed);
    });
    stop
}

/// The agent's lease settings: `--lease 2s --max-leases 2000` (it grants at most 1,000
/// leases a second, sustained), or the defaults (60 s, 262,144) with
/// `PREWARM_OVERLOAD_DEFAULTS=1`.
fn lease_settings() -> (f64, usize, Vec<&'static str>) {
    if std::env::var_os("PREWARM_OVERLOAD_DEFAULTS").is_some() {
        (60.0, 262_144, vec![])
    } else {
        (2.0, 2_000, vec!["--lease", "2s", "--max-leases", "2000"])
    }
}

#[test]
fn an_agent_flooded_with_ensure_calls_sheds_past_its_leases_and_keeps_its_memory_bounded() {
    let secs: u64 = env_or("PREWARM_OVERLOAD_SECS", 5);
    let c = Cluster::start();
    let f = c.path("x");
    std::fs::write(&f, vec![7u8; 4096]).unwrap();
    c.snapshot("s/x", &f);
    let api = format!("127.0.0.1:{}", free_port());
    let (lease_s, max_leases, args) = lease_settings();
    let agent = c.agent("cap-a", &api, &args);
    let pid = agent.0.id();
    let path = "/v1/states/s/x?key=k";
    // The first call fetches; every later one is a hit, and each hands out a lease.
    let (code, body) = http_get(&api, path);
    assert_eq!(code, 200, "{body}");
    // Its capacity: the leases it may grant per second, sustained.
    let capacity = max_leases as f64 / lease_s;
    let rss_before = rss_kib(pid).0;
    let sampler = std::thread::spawn(move || {
        let (mut peak, t0) = (0, Instant::now());
        while t0.elapsed() < Duration::from_secs(secs) {
            peak = peak.max(rss_kib(pid).0);
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    });
    let t0 = Instant::now();
    let tally = drive(&api, path, 16, PIPELINE, &for_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let peak = sampler.join().unwrap();
    let (hits, shed, other) = tally.get();
    let offered = (hits + shed + other) as f64 / elapsed;
    eprintln!(
        "capacity {capacity:.0} leases/s ({max_leases} for {lease_s} s); under 16 pipelining \
         clients for {elapsed:.1} s: offered {offered:.0} requests/s ({:.1}x), {hits} hits \
         ({:.0}/s), {shed} shed; RSS {} MiB before, peak {} MiB",
        offered / capacity,
        hits as f64 / elapsed,
        rss_before / 1024,
        peak / 1024
    );
    assert_eq!(other, 0, "every answer is a hit or 503 overloaded");
    assert!(offered >= 10.0 * capacity, "{offered:.0} vs {capacity:.0}");
    assert!(shed > 0, "past its leases it sheds");
    // It keeps granting at its capacity: the leases that end make room (the first seconds'
    // hits fill the cap at once).
    assert!(
        hits as f64 >= 0.5 * capacity * elapsed,
        "{hits} hits in {elapsed:.1} s"
    );
    assert!(
        peak < rss_before + 128 * 1024,
        "RSS {rss_before} → {peak} KiB"
    );
    let (_, m) = http_get(&api, "/metrics");
    assert_eq!(metric(&m, "prewarm_agent_ensure_shed_total"), shed as f64);
    // Recovered once its leases end.
    std::thread::sleep(Duration::from_secs_f64(lease_s));
    let t = Instant::now();
    let (code, body) = http_get(&api, path);
    assert_eq!(code, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(2));
}
