//! prewarm's shared vocabulary: strong ids, state references, the history record and the
//! [`Predictor`] trait the decision engine asks.
//!
//! Everything here is pure data. The only IO is reading and writing history records
//! (JSON Lines) through `std::io` traits, so every other crate — store, agent, coordinator,
//! predictor, simulator — speaks the same types without pulling in a runtime.

mod clock;
mod history;
mod ids;
mod meter;
mod predictor;
mod scope;
mod size;
mod stats;

pub use clock::Clock;
pub use history::{
    Event, HistoryError, HistoryErrorKind, HistoryReader, HistoryRecord, HistoryWriter,
    MAX_KEY_LEN, ReadAccess, WriteAccess, parse_history_bytes, parse_history_line, unix_now,
};
pub use ids::{
    CapacityId, ChunkHash, IdError, MAX_CAPACITY_ID_LEN, MAX_RESOURCE_ID_LEN, MAX_SEGMENT_LEN,
    ResourceId, StateRef, Version,
};
pub use meter::Meter;
pub use predictor::{Context, Prediction, Predictor, VersionPolicy};
pub use scope::{Scope, ScopeError};
pub use size::{ByteSize, ParseSizeError, parse_duration};
pub use stats::percentile;
