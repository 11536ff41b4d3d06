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

/// A body of `n` events over a fixed set of `keys` keys named `{prefix}{i}` (per-key tables
/// stay at their size).
fn body_of(prefix: &str, keys: usize, n: usize, seed: usize) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"event": {{"type": "http", "key": "{prefix}{}"}}}}"#,
                (seed * 7919 + i) % keys
            )
        })
        .collect();
    format!("[{}]", events.join(",")).into_bytes()
}

/// Events over 5,000 keys the coordinator knows nothing of: placement only.
fn body(n: usize, seed: usize) -> Vec<u8> {
    body_of("k", 5_000, n, seed)
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    shed: AtomicU64,
    other: AtomicU64,
}

/// Posts bodies of `per` events (made by `make(per, seed)`) from `clients` threads until
/// `stop`, tallying the answers; `check` sees each accepted answer.
fn drive(
    coord: &str,
    clients: usize,
    per: usize,
    stop: &Arc<AtomicBool>,
    make: fn(usize, usize) -> Vec<u8>,
    check: fn(&str),
) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (coord, stop, tally) = (coord.to_owned(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                // Bodies made once: the clients must not be what limits the rate.
                let bodies: Vec<Vec<u8>> = (0..4).map(|n| make(per, t * 4 + n)).collect();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (code, head, answer) =
                        http_post_full(&coord, "/v1/events", &bodies[n % bodies.len()]);
                    n += 1;
                    match code {
                        200 => {
                            // One outcome per event (each names its placement).
                            assert_eq!(answer.matches("\"placement\"").count(), per, "{answer}");
                            check(&answer);
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

/// What a flood measured.
struct Flood {
    /// Events/s one client got through alone.
    capacity: f64,
    /// Events/s the clients offered (accepted + shed bodies).
    offered: f64,
    accepted: u64,
    rss_before_kib: u64,
    peak_kib: u64,
}

/// Measures what one client gets through `coord` in 2 s (its capacity), then drives it with
/// `clients` clients that never back off for `secs`, sampling the coordinator's RSS; checks
/// that every answer is 200 or 503 `overloaded` and the shed count matches the metric.
fn flood(
    coord: &str,
    pid: u32,
    (per, clients, secs): (usize, usize, u64),
    make: fn(usize, usize) -> Vec<u8>,
    check: fn(&str),
) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let alone = drive(coord, 1, per, &stop, make, check);
    timer.join().unwrap();
    let capacity = alone.accepted.load(Ordering::Relaxed) as f64 * per as f64 / 2.0;
    assert_eq!(
        alone.shed.load(Ordering::Relaxed),
        0,
        "one client is not shed"
    );
    let (rss_before_kib, _) = rss_kib(pid);
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
    let tally = drive(coord, clients, per, &stop, make, check);
    let elapsed = t0.elapsed().as_secs_f64();
    let peak_kib = sampler.join().unwrap();
    let (accepted, shed, other) = (
        tally.accepted.load(Ordering::Relaxed),
        tally.shed.load(Ordering::Relaxed),
        tally.other.load(Ordering::Relaxed),
    );
    let offered = (accepted + shed) as f64 * per as f64 / elapsed;
    eprintln!(
        "capacity alone {capacity:.0} events/s; under {clients} clients for {elapsed:.1} s: \
         offered {offered:.0} events/s ({:.1}x), accepted {accepted} bodies ({:.0} events/s), \
         shed {shed}; RSS {} MiB before, peak {} MiB",
        offered / capacity,
        accepted as f64 * per as f64 / elapsed,
        rss_before_kib / 1024,
        peak_kib / 1024
    );
    assert_eq!(other, 0, "every answer is 200 or 503");
    assert!(shed > 0, "past its capacity it sheds");
    // And keeps handling at its capacity: overload costs it no throughput (shed requests
    // wait unread; none is parsed or decided).
    let goodput = accepted as f64 * per as f64 / elapsed;
    assert!(
        goodput >= 0.5 * capacity,
        "{goodput:.0} events/s handled under load against {capacity:.0} alone"
    );
    let (_, m) = http_get(coord, "/metrics");
    assert_eq!(
        metric(&m, "prewarm_coordinator_requests_shed_total"),
        shed as f64
    );
    Flood {
        capacity,
        offered,
        accepted,
        rss_before_kib,
        peak_kib,
    }
}

/// The flood's length: `PREWARM_OVERLOAD_SECS` (60 for the long run), else 5.
fn secs() -> u64 {
    env_or("PREWARM_OVERLOAD_SECS", 5)
}

/// Memory stayed bounded (one body in progress, the rest waiting unread) and, the load
/// gone, a body is answered at once.
fn bounded_and_recovered(coord: &str, f: &Flood, body: &[u8]) {
    assert!(
        f.peak_kib < f.rss_before_kib + 256 * 1024,
        "RSS {} MiB → peak {} MiB",
        f.rss_before_kib / 1024,
        f.peak_kib / 1024
    );
    let t = Instant::now();
    let (code, answer) = http_post(coord, "/v1/events", body);
    assert_eq!(code, 200, "{answer}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn an_overloaded_coordinator_sheds_what_it_cannot_handle_and_recovers() {
    // One body at a time, a request waits at most 20 ms for its turn; two agents to place
    // on (placement and planning per event).
    let c = Cluster::start_with(&["--events-concurrency", "1", "--events-queue-wait", "20ms"]);
    let coord = c.url.trim_start_matches("http://").to_owned();
    let _a = c.agent("cap-a", &format!("127.0.0.1:{}", free_port()), &[]);
    let _b = c.agent("cap-b", &format!("127.0.0.1:{}", free_port()), &[]);
    let pid = c.coord.as_ref().unwrap().0.id();
    // 32 clients, none waiting for the answers of others, never backing off.
    let f = flood(&coord, pid, (1_000, 32, secs()), body, |_| {});
    assert!(
        f.offered > f.capacity,
        "{:.0} vs {:.0}",
        f.offered,
        f.capacity
    );
    bounded_and_recovered(&coord, &f, &body(1_000, 0));
}

/// Events of the generated workload's tenants (`tenant-N`, which the model learned).
fn tenant_body(n: usize, seed: usize) -> Vec<u8> {
    body_of("tenant-", 2_000, n, seed)
}

/// Every outcome is placed on one of the two agents and moves states only there.
fn coherent(answer: &str) {
    let outcomes: serde_json::Value = serde_json::from_str(answer).unwrap();
    for o in outcomes.as_array().unwrap() {
        let cap = o["placement"]["capacity"].as_str().unwrap();
        assert!(cap == "cap-a" || cap == "cap-b", "{o}");
        for t in o["transfers"].as_array().unwrap() {
            assert_eq!(t["capacity"], cap, "{o}");
        }
    }
}

#[test]
fn a_coordinator_deciding_with_a_learned_model_sheds_ten_times_its_capacity() {
    // Heavy events: each is predicted by a GRU trained on the workload (here, a debug
    // build's), placed and planned; the clients' cost per event is a copy of a body made
    // once, so they can offer many times what the coordinator decides.
    let dir = tempfile::tempdir().unwrap();
    let (hist, model) = (dir.path().join("h.jsonl"), dir.path().join("gru"));
    let p = |x: &std::path::Path| x.to_str().unwrap().to_owned();
    let gen_out = run(&["generate", "--records", "5000", "-o", &p(&hist)]);
    assert!(gen_out.status.success(), "{gen_out:?}");
    let trained = run(&[
        "train",
        "--history",
        &p(&hist),
        "--model",
        "gru",
        "--epochs",
        "2",
        "--out",
        &p(&model),
    ]);
    assert!(trained.status.success(), "{trained:?}");
    let spec = format!("gru:{}", model.display());
    let c = Cluster::start_with(&[
        "--model",
        &spec,
        "--events-concurrency",
        "1",
        "--events-queue-wait",
        "20ms",
    ]);
    // The states the workload reads most, in the store: predictions of them plan transfers.
    for (i, r) in ["models/m0", "models/m1", "models/m2", "tenants/t0/profile"]
        .iter()
        .enumerate()
    {
        let f = dir.path().join(format!("s{i}"));
        std::fs::write(&f, vec![i as u8; 4096]).unwrap();
        c.snapshot(r, &f);
    }
    let coord = c.url.trim_start_matches("http://").to_owned();
    let _a = c.agent("cap-a", &format!("127.0.0.1:{}", free_port()), &[]);
    let _b = c.agent("cap-b", &format!("127.0.0.1:{}", free_port()), &[]);
    let pid = c.coord.as_ref().unwrap().0.id();
    let f = flood(&coord, pid, (200, 32, secs()), tenant_body, coherent);
    assert!(
        f.offered >= 10.0 * f.capacity,
        "offered {:.0} events/s against a capacity of {:.0}",
        f.offered,
        f.capacity
    );
    bounded_and_recovered(&coord, &f, &tenant_body(200, 0));
    let (_, m) = http_get(&coord, "/metrics");
    assert!(metric(&m, "prewarm_coordinator_events_total") >= (f.accepted * 200) as f64);
}
