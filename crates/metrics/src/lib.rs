//! The metrics of one prewarm process, over `prometheus-client` (the Prometheus project's
//! Rust client): counters, gauges and latency histograms, each a family keyed by its labels,
//! rendered in the Prometheus text format (0.0.4) for `/metrics`.
//!
//! Handles are created once and kept, so a hot path pays one atomic add. Asking again for a
//! name gives the same series; asking for a name already registered as another type logs a
//! warning and returns a handle that is counted but not exported (the first type wins), so a
//! mistake never takes the process down nor renders a name twice.
//!
//! Names are the ones scraped: a counter is named with its `_total` suffix (`prometheus-client`
//! appends the suffix itself, so the registry strips it before registering), and help texts end
//! with a full stop (the client adds one; the registry strips a trailing one).

mod handles;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram as PcHistogram;

pub use handles::{Counter, FloatGauge, Gauge, Histogram};

/// The `Content-Type` of [`Registry::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Buckets for request latencies: 50 µs to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A series' labels, in the order given.
type Labels = Vec<(String, String)>;

/// Makes a family's histograms, all with the bucket bounds the family was registered with.
#[derive(Clone, Debug)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<PcHistogram> for Buckets {
    fn new_metric(&self) -> PcHistogram {
        PcHistogram::new(self.0.iter().copied())
    }
}

type CounterFamily = Family<Labels, prometheus_client::metrics::counter::Counter<u64, AtomicU64>>;
type GaugeFamily = Family<Labels, prometheus_client::metrics::gauge::Gauge<u64, AtomicU64>>;
type FloatGaugeFamily = Family<Labels, prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>>;
type HistogramFamily = Family<Labels, PcHistogram, Buckets>;

/// One registered name.
enum Registered {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    FloatGauge(FloatGaugeFamily),
    Histogram(HistogramFamily),
}

impl Registered {
    fn kind(&self) -> &'static str {
        match self {
            Registered::Counter(_) => "counter",
            Registered::Gauge(_) => "gauge",
            Registered::FloatGauge(_) => "float gauge",
            Registered::Histogram(_) => "histogram",
        }
    }
}

#[derive(Default)]
struct Inner {
    registry: prometheus_client::registry::Registry,
    /// Scraped name → its family.
    names: HashMap<&'static str, Registered>,
}

/// The metrics of one process. Clones share the registry.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Inner>>);

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `help` without the full stop `prometheus-client` adds.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

impl Registry {
    /// The family registered as `name`, registering `make()` under `registered_as` if the name
    /// is new; `None` (after a warning) if the name belongs to another type.
    fn family<T>(
        &self,
        name: &'static str,
        registered_as: &str,
        help: &str,
        make: impl FnOnce() -> Registered,
        pick: impl Fn(&Registered) -> Option<T>,
    ) -> Option<T> {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = inner.names.get(name) {
            let found = pick(r);
            if found.is_none() {
                tracing::warn!(
                    "metric {name} is a {}: not exporting a second type for it",
                    r.kind()
                );
            }
            return found;
        }
        let r = make();
        let found = pick(&r);
        let help = help_text(help);
        match &r {
            Registered::Counter(f) => inner.registry.register(registered_as, help, f.clone()),
            Registered::Gauge(f) => inner.registry.register(registered_as, help, f.clone()),
            Registered::FloatGauge(f) => inner.registry.register(registered_as, help, f.clone()),
            Registered::Histogram(f) => inner.registry.register(registered_as, help, f.clone()),
        }
        inner.names.insert(name, r);
        found
    }

    /// The counter `name{labels}` (created on first use). `name` ends in `_total`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let family = self.family(
            name,
            base,
            help,
            || Registered::Counter(CounterFamily::default()),
            |r| match r {
                Registered::Counter(f) => Some(f.clone()),
                _ => None,
            },
        );
        Counter(family.map_or_else(Default::default, |f| f.get_or_create_owned(&owned(labels))))
    }

    /// The gauge `name{labels}` (created on first use).
    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        let family = self.family(
            name,
            name,
            help,
            || Registered::Gauge(GaugeFamily::default()),
            |r| match r {
                Registered::Gauge(f) => Some(f.clone()),
                _ => None,
            },
        );
        Gauge(family.map_or_else(Default::default, |f| f.get_or_create_owned(&owned(labels))))
    }

    /// The real-valued gauge `name{labels}` (created on first use).
    pub fn float_gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> FloatGauge {
        let family = self.family(
            name,
            name,
            help,
            || Registered::FloatGauge(FloatGaugeFamily::default()),
            |r| match r {
                Registered::FloatGauge(f) => Some(f.clone()),
                _ => None,
            },
        );
        FloatGauge(family.map_or_else(Default::default, |f| f.get_or_create_owned(&owned(labels))))
    }

    /// The histogram `name{labels}` (created on first use) with `bounds` (seconds, ascending;
    /// the first registration of `name` fixes them for all its series).
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Histogram {
        let buckets = Buckets(bounds.into());
        let family = self.family(
            name,
            name,
            help,
            || Registered::Histogram(HistogramFamily::new_with_constructor(buckets.clone())),
            |r| match r {
                Registered::Histogram(f) => Some(f.clone()),
                _ => None,
            },
        );
        Histogram(family.map_or_else(
            || buckets.new_metric(),
            |f| f.get_or_create_owned(&owned(labels)),
        ))
    }

    /// The text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &inner.registry) {
            tracing::warn!("rendering metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests;
