//! The handles callers keep: thin wrappers over `prometheus-client`'s metrics (an `Arc` to
//! atomics for counters and gauges, so a hot path pays one atomic operation), with the
//! getters the tests and the conformance checks read.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter as PcCounter;
use prometheus_client::metrics::gauge::Gauge as PcGauge;
use prometheus_client::metrics::histogram::Histogram as PcHistogram;

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(pub(crate) PcCounter<u64, AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(pub(crate) PcGauge<u64, AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.set(v);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A gauge holding a real number (a score, a loss).
#[derive(Clone, Debug, Default)]
pub struct FloatGauge(pub(crate) PcGauge<f64, AtomicU64>);

impl FloatGauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.set(v);
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A latency histogram (seconds).
#[derive(Clone, Debug)]
pub struct Histogram(pub(crate) PcHistogram);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}
