//! The JSON of the HTTP APIs, typed once for the servers (the agent's ensure API, the
//! coordinator's event API) and the Rust clients (`prewarm_agent::client`), so neither side
//! spells the other's fields by hand. The Python client (`clients/python`) reads the same
//! shapes; its tests run against the real servers.

use std::path::PathBuf;

use prewarm_core::{CapacityId, Event};
use prewarm_engine::{Decision, Placement};
use serde::{Deserialize, Serialize};

/// Every error answer of both HTTP APIs: `{"error": kind, "message": …}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The kind (`unauthorized`, `timeout`, `unknown_state`, `cache_full`, `bad_events`…).
    #[serde(default)]
    pub error: String,
    /// An explanation for people.
    #[serde(default)]
    pub message: String,
}

impl ApiError {
    /// An error of kind `error`.
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
        }
    }
}

/// The agent's answer to `GET /v1/states/{resource}` (ensure).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ensured {
    /// The state.
    pub resource: String,
    /// The version installed.
    pub version: u64,
    /// Where the application reads it.
    pub path: PathBuf,
    /// Whether it was already there.
    pub hit: bool,
    /// Time waited, milliseconds.
    pub wait_ms: u64,
    /// The lease keeping the state from eviction (renew or release it by this id); `None`
    /// when the state was evicted again before it could be leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    /// How long the lease lasts from the answer, milliseconds.
    #[serde(default)]
    pub lease_ms: u64,
    /// On a miss, why the state was not here ("never fetched here", "v3 was evicted 12.0 s
    /// ago to make room for models/b", "the last fetch failed …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miss_reason: Option<String>,
}

/// The agent's answer to `PUT /v1/leases/{id}` (renewed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease.
    pub lease: u64,
    /// How long it lasts from the answer, milliseconds.
    pub lease_ms: u64,
}

/// One installed state in the agent's `GET /v1/inventory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldState {
    /// The state.
    pub resource: String,
    /// Its version.
    pub version: u64,
    /// Its logical size.
    pub bytes: u64,
    /// Where it is installed.
    pub path: PathBuf,
    /// Superseded by a newer version in the store.
    pub stale: bool,
    /// Held for an application by a lease (not evictable).
    pub leased: bool,
}

/// The agent's answer to `GET /v1/inventory`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryAnswer {
    /// The capacity's name.
    pub capacity: String,
    /// Bytes its states take.
    pub cache_used: u64,
    /// Its cache budget.
    pub cache_budget: u64,
    /// What it holds.
    pub states: Vec<HeldState>,
    /// Why the latest states that are not here left or never arrived, newest first.
    #[serde(default)]
    pub departed: Vec<DepartedState>,
}

/// A state that is not on the capacity, and why (in `GET /v1/inventory`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepartedState {
    /// The state.
    pub resource: String,
    /// The version that left (none: a fetch that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `evicted`, `expired` or `failed`.
    pub kind: String,
    /// What happened ("to make room for models/b", a fetch's error).
    pub reason: String,
    /// When, Unix ms.
    pub unix_ms: u64,
}

/// One event as `POST /v1/events` takes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// When it happened, Unix seconds (default: on arrival).
    #[serde(default)]
    pub ts: Option<f64>,
    /// The event.
    pub event: Event,
    /// The capacity that will run it, when the sender knows.
    #[serde(default)]
    pub capacity: Option<CapacityId>,
}

/// What the coordinator did with one event (the answer of `POST /v1/events` and of
/// `GET /v1/placement`).
#[derive(Clone, Debug, Serialize)]
pub struct EventOutcome {
    /// Where the execution should run (`None`: no capacity attached).
    pub placement: Option<Placement>,
    /// The predictive transfers requested.
    pub transfers: Vec<Decision>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn error_answers_and_events_round_trip_and_unknown_event_fields_are_refused() {
        let e = ApiError::new("timeout", "m/a not ready within 5 ms");
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"error":"timeout","message":"m/a not ready within 5 ms"}"#
        );
        assert_eq!(serde_json::from_str::<ApiError>(&text).unwrap(), e);
        let ev: EventIn =
            serde_json::from_str(r#"{"event":{"type":"http","key":"k","needs":["m/a"]}}"#).unwrap();
        assert_eq!(ev.event.needs.len(), 1);
        assert!(ev.ts.is_none() && ev.capacity.is_none());
        let bad =
            serde_json::from_str::<EventIn>(r#"{"event":{"type":"http","key":"k"},"colour":1}"#);
        assert!(bad.is_err());
    }
}
