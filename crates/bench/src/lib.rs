//! `prewarm bench …`: benchmarks that measure prewarm and its peers in the same run and
//! report ratios. Results are recorded in BENCHMARKS.md with the command that produced them.

mod coordinator;
mod predict;
mod raw;
mod snapshot;
mod transfer;

/// Arguments of `prewarm bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand, Debug)]
enum Which {
    /// Full and incremental snapshot and verified restore vs `tar | zstd` and restic.
    Snapshot(snapshot::Args),
    /// Events per second through ingest, prediction, placement and planning.
    Coordinator(coordinator::Args),
    /// Inference cost per event of a learned model vs candle and the Markov baseline.
    Predict(predict::Args),
    /// Coordinator-to-agent transfer (cold, delta, ensure hits) vs raw TCP, iperf3, rsync.
    Transfer(transfer::Args),
    /// The raw TCP receiver `bench transfer` starts as its peer.
    #[command(hide = true)]
    RawRecv(raw::Args),
}

/// Runs the chosen benchmark.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    match a.which {
        Which::Snapshot(a) => snapshot::run(a).await,
        Which::Coordinator(a) => coordinator::run(a).await,
        Which::Predict(a) => predict::run(a).await,
        Which::Transfer(a) => transfer::run(a).await,
        Which::RawRecv(a) => raw::run(a),
    }
}
