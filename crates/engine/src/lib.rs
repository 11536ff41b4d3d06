//! prewarm's pure decision core, shared by the coordinator, the agent and the replay
//! simulator so that simulated numbers come from production code:
//!
//! - [`evict`]: which held states to evict to make room (least recently used first, or by
//!   any rank, never a leased state, keep-alive hints respected while possible);
//! - [`planner`]: given the predictions for an event and what the target capacity holds,
//!   which transfers to request — probability × time saved weighed against bytes, the link's
//!   bandwidth, cache pressure and a cap on bytes in flight;
//! - [`placement`]: which capacity should run an event — one that already holds the predicted
//!   states, else a consistent (rendezvous) hash of the event's key.
//!
//! Nothing here does IO or knows a runtime; time is passed in as seconds.

pub mod evict;
pub mod placement;
pub mod planner;

pub use evict::{Candidate, Shortfall, choose_victims};
pub use placement::{CHOICES, Placement, PlacementReason, place};
pub use planner::{Decision, Planner, PlannerConfig, Target};
