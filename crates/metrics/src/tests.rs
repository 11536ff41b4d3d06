//! The registry's exposition text, shared series and name clashes.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

#[test]
fn renders_the_exposition_format() {
    let r = Registry::default();
    let c = r.counter("x_total", "Things.", &[("why", "a\"b")]);
    c.add(3);
    r.counter("x_total", "Things.", &[("why", "a\"b")]).inc();
    r.gauge("g_bytes", "Bytes.", &[]).set(42);
    r.float_gauge("loss", "Loss.", &[("model", "a")]).set(0.25);
    let h = r.histogram("lat_seconds", "Latency.", &[("op", "get")], &[0.001, 0.01]);
    h.observe(Duration::from_micros(500));
    h.observe(Duration::from_millis(5));
    h.observe(Duration::from_secs(1));
    let text = r.render();
    for want in [
        "# HELP x_total Things.\n# TYPE x_total counter\n",
        "x_total{why=\"a\\\"b\"} 4\n",
        "# HELP g_bytes Bytes.\n# TYPE g_bytes gauge\ng_bytes 42\n",
        "# TYPE loss gauge\nloss{model=\"a\"} 0.25\n",
        "# TYPE lat_seconds histogram\n",
        "lat_seconds_bucket{op=\"get\",le=\"0.001\"} 1\n",
        "lat_seconds_bucket{op=\"get\",le=\"0.01\"} 2\n",
        "lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n",
        "lat_seconds_sum{op=\"get\"} 1.0055\n",
        "lat_seconds_count{op=\"get\"} 3\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from\n{text}");
    }
    assert_eq!(c.get(), 4);
}

#[test]
fn series_created_on_the_fly_share_their_family() {
    let r = Registry::default();
    for prio in ["on_demand", "predictive", "on_demand"] {
        r.counter("t_total", "Transfers, by priority.", &[("priority", prio)])
            .inc();
    }
    let text = r.render();
    assert_eq!(text.matches("# TYPE t_total counter").count(), 1, "{text}");
    assert!(
        text.contains("t_total{priority=\"on_demand\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("t_total{priority=\"predictive\"} 1\n"),
        "{text}"
    );
    // Clones share the registry.
    r.clone().gauge("n", "N.", &[]).set(7);
    assert!(r.render().contains("\nn 7\n"));
}

#[test]
fn a_name_registered_twice_with_two_types_renders_once_and_does_not_panic() {
    let r = Registry::default();
    let c = r.counter("dup_total", "First, a counter.", &[]);
    let g = r.gauge("dup_total", "Then a gauge.", &[]);
    let h = r.histogram("dup_total", "Then a histogram.", &[], LATENCY_BUCKETS);
    c.add(5);
    g.set(9);
    h.observe(Duration::from_millis(1));
    let text = r.render();
    assert_eq!(text.matches("# TYPE dup_total").count(), 1, "{text}");
    assert!(
        text.contains("# TYPE dup_total counter\ndup_total 5\n"),
        "{text}"
    );
    assert!(!text.contains("dup_total_bucket"), "{text}");
    // The detached handles still work, unexported.
    assert_eq!(g.get(), 9);
    // The same clash the other way round: a gauge first.
    let r = Registry::default();
    r.gauge("g", "A gauge.", &[]).set(1);
    r.counter("g", "Not a counter.", &[]).inc();
    let text = r.render();
    assert_eq!(text.matches("# TYPE g").count(), 1, "{text}");
    assert!(text.contains("# TYPE g gauge\ng 1\n"), "{text}");
}
