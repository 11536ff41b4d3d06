//! `prewarm bench …`: the flags of each benchmark in `prewarm_bench`, the call, and the
//! printing (a table, or JSON with `--json`). Results are recorded in BENCHMARKS.md with the
//! command that produced them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prewarm_bench::{coordinator, predict, raw, snapshot, transfer};

use super::parse_size;
use crate::output;
use crate::progress::{self, Meter};

/// Arguments of `prewarm bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand, Debug)]
enum Which {
    /// Full and incremental snapshot and verified restore vs `tar | zstd` and restic.
    Snapshot(SnapshotArgs),
    /// Events per second through ingest, prediction, placement and planning.
    Coordinator(CoordinatorArgs),
    /// Inference cost per event of a learned model vs candle and the Markov baseline.
    Predict(PredictArgs),
    /// Coordinator-to-agent transfer (cold, delta, ensure hits) vs raw TCP, iperf3, rsync.
    Transfer(TransferArgs),
    /// The raw TCP receiver `bench transfer` starts as its peer.
    #[command(hide = true)]
    RawRecv(RawArgs),
}

/// Arguments of `prewarm bench snapshot`.
#[derive(clap::Args, Debug)]
struct SnapshotArgs {
    /// Data set size.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    size: u64,
    /// Share of bytes overwritten before the incremental snapshot.
    #[arg(long, default_value_t = 0.01)]
    edit_fraction: f64,
    /// Size of each in-place edit.
    #[arg(long, value_parser = parse_size, default_value = "4KiB")]
    edit_size: u64,
    /// Average chunk sizes for the granularity sweep (empty to skip).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "4KiB,8KiB,16KiB,32KiB,64KiB")]
    sweep: Vec<u64>,
    /// Repetitions of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Skip the granularity sweep.
    #[arg(long)]
    no_sweep: bool,
    /// Skip the peer tools.
    #[arg(long)]
    no_peers: bool,
    /// Working directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `prewarm bench coordinator`.
#[derive(clap::Args, Debug)]
struct CoordinatorArgs {
    /// A trained GRU or Transformer directory (default: an untrained GRU 64/128).
    #[arg(long)]
    model: Option<PathBuf>,
    /// History whose events are replayed (default: a generated one, 64 keys over 512
    /// resources).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Events to time per pipeline.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Capacities to place on.
    #[arg(long, default_value_t = 16)]
    capacities: usize,
    /// Cache per capacity.
    #[arg(long, default_value = "64GiB")]
    cache_size: prewarm_core::ByteSize,
    /// Events per `POST /v1/events` body.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `prewarm bench predict`.
#[derive(clap::Args, Debug)]
struct PredictArgs {
    /// A trained model directory (default: an untrained GRU, embeddings 64, hidden 128, over
    /// 512 resources — the size the target names).
    #[arg(long)]
    model: Option<PathBuf>,
    /// History to replay (default: a generated one, 64 keys over 512 resources).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Events to time.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `prewarm bench transfer`.
#[derive(clap::Args, Debug)]
struct TransferArgs {
    /// State size.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    size: u64,
    /// Repetitions of each cold measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// `ensure` calls timed for the hit latency.
    #[arg(long, default_value_t = 20_000)]
    ensure_calls: usize,
    /// Data paths measured (cold transfers and the data plane alone); the peers, the delta
    /// and `ensure` hits always run. Measuring one path is how to profile it.
    #[arg(long, value_delimiter = ',', default_values_t = [DataPath::Tcp, DataPath::Unix, DataPath::Fds])]
    paths: Vec<DataPath>,
    /// Work directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A data path of `bench transfer`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DataPath {
    /// TCP over loopback (the cross-host path).
    Tcp,
    /// The same-host Unix socket stream.
    Unix,
    /// The same-host pack channel (pack files passed by descriptor).
    Fds,
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl DataPath {
    fn name(self) -> &'static str {
        match self {
            DataPath::Tcp => "tcp",
            DataPath::Unix => "unix",
            DataPath::Fds => "fds",
        }
    }
}

/// Arguments of the hidden `prewarm bench raw-recv`.
#[derive(clap::Args, Debug)]
struct RawArgs {
    /// Where to listen (one connection per run, until killed).
    #[arg(long)]
    listen: SocketAddr,
    /// Directory to write each received stream into (none: discard).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the chosen benchmark.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    match a.which {
        Which::Snapshot(a) => run_snapshot(a).await,
        Which::Coordinator(a) => {
            let s = coordinator::Settings {
                model: a.model,
                history: a.history,
                events: a.events,
                capacities: a.capacities,
                cache_bytes: a.cache_size.0,
                batch: a.batch,
                meter: Arc::new(Meter::new()),
            };
            let shown = progress::show(
                "bench coordinator",
                s.meter.clone(),
                progress::Unit::Count("events"),
            );
            let r = tokio::task::block_in_place(|| coordinator::run(&s));
            shown.finish();
            let r = r?;
            print(a.json, &r.rows, || r.text())
        }
        Which::Predict(a) => {
            let s = predict::Settings {
                model: a.model,
                history: a.history,
                events: a.events,
            };
            let shown = progress::show(
                "bench predict",
                Arc::new(Meter::new()),
                progress::Unit::Wait,
            );
            let r = tokio::task::block_in_place(|| predict::run(&s));
            shown.finish();
            let r = r?;
            print(a.json, &r.rows, || r.text())
        }
        Which::Transfer(a) => {
            let s = transfer::Settings {
                size: a.size,
                reps: a.reps,
                ensure_calls: a.ensure_calls,
                paths: a.paths.iter().map(|p| p.name()).collect(),
                workdir: a.workdir,
                exe: std::env::current_exe()?,
                meter: Arc::new(Meter::new()),
            };
            let shown = progress::show(
                "bench transfer",
                s.meter.clone(),
                progress::Unit::Count("stages"),
            );
            let r = transfer::run(&s).await;
            shown.finish();
            let r = r?;
            if a.json {
                output::json(&r)?;
            } else {
                print!("{}", r.text());
            }
            Ok(0)
        }
        Which::RawRecv(a) => match raw::recv(a.listen, a.out.as_deref())? {},
    }
}

async fn run_snapshot(a: SnapshotArgs) -> anyhow::Result<i32> {
    let s = snapshot::Settings {
        size: a.size,
        edit_fraction: a.edit_fraction,
        edit_size: a.edit_size,
        sweep: if a.no_sweep { Vec::new() } else { a.sweep },
        reps: a.reps,
        peers: !a.no_peers,
        workdir: a.workdir,
        meter: Arc::new(Meter::new()),
    };
    let shown = progress::show(
        "bench snapshot",
        s.meter.clone(),
        progress::Unit::Count("stages"),
    );
    let r = snapshot::run(&s).await;
    shown.finish();
    let r = r?;
    if a.json {
        output::json(&r)?;
    } else {
        print!("{}", r.text());
    }
    Ok(if r.restore_verified { 0 } else { 1 })
}

/// Prints `rows` as JSON, or `text()` and a newline.
fn print<T: serde::Serialize>(
    json: bool,
    rows: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<i32> {
    if json {
        output::json(rows)?;
    } else {
        println!("{}", text());
    }
    Ok(0)
}
