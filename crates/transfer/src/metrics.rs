//! A small Prometheus registry: counters, gauges and histograms created once (handles are
//! cheap `Arc`s to atomics, so hot paths pay one atomic add), rendered in the text exposition
//! format for `/metrics`. No dependency: the whole format is a few lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct HistInner {
    /// Upper bounds, seconds, ascending.
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), plus one for +Inf.
    counts: Vec<AtomicU64>,
    /// Sum in nanoseconds.
    sum_ns: AtomicU64,
}

/// A latency histogram (seconds).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistInner>);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = self.0.bounds.partition_point(|b| *b < s);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Buckets for request latencies: 50 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

struct Family {
    help: &'static str,
    kind: &'static str,
    /// Label set (rendered) → metric.
    series: BTreeMap<String, Metric>,
}

/// The metrics of one process.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<&'static str, Family>>>);

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl Registry {
    fn get_or(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Metric,
    ) -> Metric {
        let mut fams = self.0.lock().expect("metrics lock poisoned");
        let fam = fams.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        let m = fam.series.entry(render_labels(labels)).or_insert_with(make);
        match m {
            Metric::Counter(c) => Metric::Counter(c.clone()),
            Metric::Gauge(g) => Metric::Gauge(g.clone()),
            Metric::Histogram(h) => Metric::Histogram(h.clone()),
        }
    }

    /// The counter `name{labels}` (created on first use).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        match self.get_or(name, help, "counter", labels, || {
            Metric::Counter(Counter::default())
        }) {
            Metric::Counter(c) => c,
            _ => panic!("metric {name} registered with another type"),
        }
    }

    /// The gauge `name{labels}`.
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        match self.get_or(name, help, "gauge", labels, || {
            Metric::Gauge(Gauge::default())
        }) {
            Metric::Gauge(g) => g,
            _ => panic!("metric {name} registered with another type"),
        }
    }

    /// The histogram `name{labels}` with `bounds` (seconds).
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Histogram {
        let make = || {
            Metric::Histogram(Histogram(Arc::new(HistInner {
                bounds: bounds.to_vec(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
            })))
        };
        match self.get_or(name, help, "histogram", labels, make) {
            Metric::Histogram(h) => h,
            _ => panic!("metric {name} registered with another type"),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let fams = self.0.lock().expect("metrics lock poisoned");
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, m) in &fam.series {
                match m {
                    Metric::Counter(c) => {
                        let _ = writeln!(out, "{name}{labels} {}", c.get());
                    }
                    Metric::Gauge(g) => {
                        let _ = writeln!(out, "{name}{labels} {}", g.get());
                    }
                    Metric::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let inner = labels.trim_start_matches('{').trim_end_matches('}');
    let with_le = |le: &str| {
        if inner.is_empty() {
            format!("{{le=\"{le}\"}}")
        } else {
            format!("{{{inner},le=\"{le}\"}}")
        }
    };
    let mut cum = 0;
    for (i, b) in h.0.bounds.iter().enumerate() {
        cum += h.0.counts[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{} {cum}", with_le(&b.to_string()));
    }
    cum += h.0.counts[h.0.bounds.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{} {cum}", with_le("+Inf"));
    let sum = h.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "{name}_sum{labels} {sum}");
    let _ = writeln!(out, "{name}_count{labels} {cum}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_the_exposition_format() {
        let r = Registry::default();
        let c = r.counter("x_total", "things", &[("why", "a\"b")]);
        c.add(3);
        r.counter("x_total", "things", &[("why", "a\"b")]).inc();
        r.gauge("g_bytes", "bytes", &[]).set(42);
        let h = r.histogram("lat_seconds", "latency", &[("op", "get")], &[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let text = r.render();
        assert!(text.contains("x_total{why=\"a\\\"b\"} 4"), "{text}");
        assert!(text.contains("# TYPE g_bytes gauge\ng_bytes 42"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"0.01\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_count{op=\"get\"} 3"), "{text}");
        assert_eq!(h.count(), 3);
    }
}
