//! Calibration on hand-made streams.

#![allow(clippy::unwrap_used)]

use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId};

use super::*;

fn r(s: &str) -> ResourceId {
    ResourceId::new(s).unwrap()
}

fn rec(key: &str, ts: f64, reads: &[&str]) -> HistoryRecord {
    HistoryRecord {
        ts,
        event: Event {
            kind: "t".into(),
            key: key.into(),
            attrs: Default::default(),
            needs: Vec::new(),
        },
        capacity: None,
        reads: reads
            .iter()
            .map(|x| ReadAccess {
                resource: r(x),
                version: None,
                bytes: 1,
            })
            .collect(),
        writes: Vec::new(),
        duration_s: 0.0,
    }
}

/// `n` events of key `k`: the model says `p` for "a", which is read one time in `every`.
fn stream(c: &mut Calibration, n: usize, p: f64, every: usize) {
    for i in 0..n {
        let t = i as f64 * 10.0;
        c.predicted("k", t, &[(r("a"), p)]);
        let read = if i % every == 0 { "a" } else { "b" };
        c.observe(&rec("k", t + 1.0, &[read]));
    }
    // A late record scores what is still pending.
    c.observe(&rec("k", 1e9, &[]));
}

#[test]
fn an_unscored_model_passes_through() {
    let mut c = Calibration::new(2.0);
    for p in [0.0, 0.03, 0.5, 0.97, 1.0] {
        assert_eq!(c.map(p), p);
    }
}

#[test]
fn an_over_confident_model_is_brought_down_to_its_hit_rate() {
    let mut c = Calibration::new(2.0);
    stream(&mut c, 2_000, 0.9, 10);
    assert_eq!(c.scored(), 2_000);
    let m = c.map(0.9);
    assert!(
        (m - 0.1).abs() < 0.03,
        "0.9 read 10% of the time maps to {m}"
    );
}

#[test]
fn an_under_confident_model_is_raised_to_its_hit_rate() {
    let mut c = Calibration::new(2.0);
    stream(&mut c, 2_000, 0.1, 1);
    let m = c.map(0.1);
    assert!(m > 0.9, "0.1 read every time maps to {m}");
}

#[test]
fn a_calibrated_model_is_left_alone_and_the_map_is_monotone() {
    let mut c = Calibration::new(2.0);
    // Probability 0.5 read every other time, 0.2 one time in five.
    stream(&mut c, 2_000, 0.5, 2);
    stream(&mut c, 2_000, 0.2, 5);
    assert!((c.map(0.5) - 0.5).abs() < 0.05, "{}", c.map(0.5));
    assert!((c.map(0.2) - 0.2).abs() < 0.05, "{}", c.map(0.2));
    let mut last = 0.0;
    for i in 0..=100 {
        let m = c.map(f64::from(i) / 100.0);
        assert!(m + 1e-12 >= last, "not monotone at {i}: {m} < {last}");
        last = m;
    }
}

#[test]
fn a_read_after_the_window_is_a_miss_and_one_within_it_a_hit() {
    let mut c = Calibration::new(2.0);
    for i in 0..500 {
        let t = f64::from(i) * 100.0;
        c.predicted("k", t, &[(r("a"), 0.5)]);
        // Read, but 5 s later: outside the 2 s window.
        c.observe(&rec("k", t + 5.0, &["a"]));
    }
    c.observe(&rec("k", 1e9, &[]));
    assert!(c.map(0.5) < 0.1, "late reads counted: {}", c.map(0.5));
}

#[test]
fn several_records_of_one_execution_all_count() {
    // The coordinator gets one record per `ensure`: an execution reading two states
    // reports twice, and both predictions are hits.
    let mut c = Calibration::new(2.0);
    for i in 0..500 {
        let t = f64::from(i) * 100.0;
        c.predicted("k", t, &[(r("a"), 0.5), (r("b"), 0.5)]);
        c.observe(&rec("k", t + 1.0, &["a"]));
        c.observe(&rec("k", t + 1.1, &["b"]));
    }
    c.observe(&rec("k", 1e9, &[]));
    assert!(c.map(0.5) > 0.9, "{}", c.map(0.5));
}

#[test]
fn pending_state_stays_bounded() {
    let mut c = Calibration::new(2.0);
    for i in 0..(MAX_KEYS + 10) {
        c.predicted(&format!("k{i}"), 0.0, &[(r("a"), 0.5)]);
    }
    assert!(c.pending.len() <= MAX_KEYS);
    assert!(c.scored() > 0);
}
