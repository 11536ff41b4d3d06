//! Snapshots of shared state — a file, a directory tree, or an in-memory buffer — into the
//! store; restores from any [`prewarm_store::ChunkSource`] with atomic rename; and the
//! triggers that decide when to snapshot (interval, dirty bytes, on demand).
//!
//! Unix only: file modes, symlinks and raw (non-UTF-8) file names are recorded.

mod restore;
mod snapshotter;
pub mod trigger;
pub mod watch;

pub use restore::{
    RestoreError, RestoreReport, finish_tree, restore, restore_metered, restore_to_bytes,
};
pub use snapshotter::{SnapshotError, SnapshotOutcome, Snapshotter};
pub use trigger::{Reason, TriggerPolicy, Triggers};
