//! The parts of prewarm's transfer protocol that the agent and the coordinator share: the
//! data plane (a length-prefixed, pipelined chunk stream over TCP or, on one host, a Unix
//! socket; see [`frame`] for the format; on one host, pack files passed by descriptor, see
//! [`fds`]), pacing of predictive transfers, the shared token and tenant-scoped tokens ([`tokens`]). The control plane (gRPC)
//! lives in `prewarm-proto`; the metrics registry in `prewarm-metrics`.

pub mod auth;
pub mod client;
pub mod fds;
pub mod frame;
pub mod pace;
pub mod runs;
pub mod server;
pub mod throttle;
pub mod tokens;

pub use auth::{Token, TokenError};
pub use client::{
    Connection, DataAddr, DataError, FetchStats, READ_TIMEOUT, Received, verify_batch,
};
pub use fds::PackChannel;
pub use pace::{Pacer, Priorities};
pub use server::{DataServer, Faults};
pub use throttle::Throttle;
pub use tokens::{
    Capabilities, Capability, Denied, Keys, Principal, Tokens, TokensError, Unauthenticated,
};

/// An id of this host, equal for processes on one machine (boot): `/proc/sys/kernel/random/boot_id`
/// plus the host name. Decides whether the same-host channel can be used.
pub fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("{}/{}", boot.trim(), name.trim())
}

#[cfg(test)]
mod runs_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
