//! The state manager of one compute capacity:
//!
//! - [`space`]: the local state space (installed versions under the cache dir, byte budget,
//!   eviction by the decision engine's rule and hints sparing leased states, keep-alive
//!   expiry, an index that survives restarts);
//! - [`install`] + [`layout`] + [`local`]: delta, resumable, verified installs into a staging
//!   path, published by one rename;
//! - [`disk`]: an install that finds the disk full makes room on it by the rule, or fails
//!   cleanly;
//! - [`agent`]: loads (dedup'd per state, on-demand ahead of predictive), invalidation,
//!   staleness; [`ensure`]: the application's call, with its leases (renewed or released
//!   by id); [`history`]: every call logged as training data;
//! - [`http`]: the application's HTTP API and `/metrics`; [`client`]: a Rust client for it;
//! - [`control`]: the gRPC side (attach, commands, acknowledgements, inventory reports).

pub mod agent;
pub mod client;
pub mod control;
pub mod departures;
pub mod direct;
pub mod disk;
pub mod ensure;
pub mod history;
pub mod http;
pub mod install;
pub mod layout;
mod leases;
pub mod local;
pub mod metrics;
pub mod space;
pub mod trust;

pub use agent::{
    Agent, AgentConfig, DEFAULT_MAX_LEASES, DataPath, DataSource, LoadError, Priority, VersionReq,
};
pub use ensure::{EnsureError, EnsureRequest, Ensured};
pub use space::{Held, Lease, Slot, SpaceError, StateSpace};

#[cfg(test)]
mod proxy_tests;
#[cfg(test)]
mod tenant_tests;
#[cfg(test)]
mod tests;
