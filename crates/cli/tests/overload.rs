//! Overload: a coordinator driven by many clients at once, far past what it handles. Its
//! event slots stay full, requests beyond them wait a bounded time and are shed with 503
//! `overloaded` (counted), memory stays bounded, what it accepts is answered in full, and it
//! serves normally once the load drops. `PREWARM_OVERLOAD_SECS=60` for the long run (CI: 5).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::*;

/// A body of `n` events over a fixed set of keys (per-key tables stay at their size).
fn body(n: usize, seed: usize) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"event": {{"type": "load", "key": "k{}"}}}}"#,
                (seed * 7919 + i) % 5_000
            )
        })
        .collect();
    format!("[{}]", events.join(",")).into_bytes()
}

/// A process's resident and peak resident memory, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
}

/// Posts bodies of `per` events from `clients` threads until `stop`, tallying the answers.
fn drive(coord: &str, clients: usize, per: usize, stop: &Arc<AtomicBool>) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (coord, stop, tally) = (coord.to_owned(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                // Bodies made once: the clients must not be what limits the rate.
                let bodies: Vec<Vec<u8>> = (0..4).map(|n| body(per, t * 4 + n)).collect();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (code, head, answer) =
                        http_post_full(&coord, "/v1/events", &bodies[n % bodies.len()]);
                    n += 1;
                    match code {
                        200 => {
                            // One outcome per event (each names its placement).
                            assert_eq!(answer.matches("\"placement\"").count(), per, "{answer}");
                            tally.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        503 => {
                            assert!(answer.contains("\"error\":\"overloaded\""), "{answer}");
                            assert!(
                                head.to_ascii_lowercase().contains("retry-after: 1"),
                                "{head}"
                            );
                            tally.shed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            eprintln!("{code} {answer}");
                            tally.other.fetch_add(1, Ordering::Relaxed);
                        }
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

#[test]
fn an_overloaded_coordinator_sheds_what_it_cannot_handle_and_recovers() {
    let secs: u64 = std::env::var("PREWARM_OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // One body at a time, a request waits at most 20 ms for its turn; two agents to place
    // on (placement and planning per event).
    let c = Cluster::start_with(&["--events-concurrency", "1", "--events-queue-wait", "20ms"]);
    let coord = c.url.trim_start_matches("http://").to_owned();
    let _a = c.agent("cap-a", &format!("127.0.0.1:{}", free_port()), &[]);
    let _b = c.agent("cap-b", &format!("127.0.0.1:{}", free_port()), &[]);
    let pid = c.coord.as_ref().unwrap().0.id();
    const PER: usize = 1_000;
    // What one client gets through in 2 s: the coordinator's capacity here.
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let alone = drive(&coord, 1, PER, &stop);
    timer.join().unwrap();
    let capacity = alone.accepted.load(Ordering::Relaxed) as f64 * PER as f64 / 2.0;
    assert_eq!(
        alone.shed.load(Ordering::Relaxed),
        0,
        "one client is not shed"
    );
    let (rss_before, _) = rss_kib(pid);
    // 32 clients, none waiting for the answers of others, never backing off.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(secs) {
                peak = peak.max(rss_kib(pid).0);
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::Relaxed);
            peak
        })
    };
    let t0 = Instant::now();
    let tally = drive(&coord, 32, PER, &stop);
    let elapsed = t0.elapsed().as_secs_f64();
    let peak = sampler.join().unwrap();
    let (accepted, shed, other) = (
        tally.accepted.load(Ordering::Relaxed),
        tally.shed.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    let offered = (accepted + shed) as f64 * PER as f64 / elapsed;
    eprintln!(
        "capacity alone {capacity:.0} events/s; under 32 clients for {elapsed:.1} s: offered \
         {offered:.0} events/s ({:.1}x), accepted {accepted} bodies ({:.0} events/s), shed \
         {shed}; RSS {} MiB before, peak {} MiB",
        offered / capacity,
        accepted as f64 * PER as f64 / elapsed,
        rss_before / 1024,
        peak / 1024
    );
    assert_eq!(other, 0, "every answer is 200 or 503");
    assert!(shed > 0, "past its capacity it sheds");
    assert!(accepted > 0, "and keeps handling");
    // Bounded memory: one body in progress, the rest waiting unread.
    assert!(
        peak < rss_before + 256 * 1024,
        "RSS {} MiB → peak {} MiB",
        rss_before / 1024,
        peak / 1024
    );
    let (_, m) = http_get(&coord, "/metrics");
    assert_eq!(
        metric(&m, "prewarm_coordinator_requests_shed_total"),
        shed as f64
    );
    // Recovered: a body is answered at once.
    let t = Instant::now();
    let (code, answer) = http_post(&coord, "/v1/events", &body(PER, 0));
    assert_eq!(code, 200, "{answer}");
    assert!(t.elapsed() < Duration::from_secs(2));
}
