//! The state manager of one compute capacity. So far: its local state space
//! ([`space::StateSpace`]): which resource versions are installed under the cache directory,
//! a byte budget with least-recently-used eviction that never evicts a leased state, and an
//! index that survives restarts. The transfer protocol, the ensure API and the process around
//! them are issue 3's remaining work.

pub mod space;

pub use space::{Held, Lease, Slot, SpaceError, StateSpace};
