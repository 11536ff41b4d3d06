//! `prewarm bench …`: benchmarks that measure prewarm and its peers in the same run and
//! report ratios. Results are recorded in BENCHMARKS.md with the command that produced them.
//!
//! Each benchmark takes its settings, reports progress on stderr and returns a report that
//! serializes to the JSON `--json` prints and renders as the terminal text:
//! [`snapshot`] (snapshot and restore vs `tar | zstd` and restic), [`coordinator`] (events
//! per second through the decision pipeline), [`predict`] (inference cost per event),
//! [`transfer`] (coordinator-to-agent transfer vs raw TCP, iperf3, rsync; its raw TCP peer
//! is [`raw`]).

pub mod coordinator;
pub mod predict;
pub mod raw;
pub mod snapshot;
mod support;
pub mod transfer;

pub use support::ShellError;
