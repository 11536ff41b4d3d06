//! The snapshot store: content-defined chunking (FastCDC), BLAKE3 chunk addresses, per-chunk
//! zstd (raw where compression does not pay), chunks grouped into packs, framed and
//! checksummed protobuf manifests and indexes, all over the `object_store` crate (local
//! directory by default, in-memory for tests, S3/GCS/Azure behind cargo features).
//!
//! Writes: [`Store::write`] then [`Store::commit`] (see `write.rs` for why the order makes
//! crashes safe). Reads: [`Store::fetch_chunks`] verifies every chunk. Maintenance:
//! [`Store::verify`], [`Store::gc`].

mod chunker;
mod codec;
mod envelope;
mod gc;
mod index;
mod manifest;
mod pack;
#[cfg(test)]
mod props;
mod read;
mod refresh;
mod repair;
mod store;
mod verify;
mod write;

pub use chunker::{Segment, SegmentReadError, Source};
pub use envelope::EnvelopeError;
pub use gc::{GcError, GcReport};
pub use index::ChunkIndex;
pub use manifest::{
    ChunkRef, ChunkerParams, Codec, EntryKind, MAX_CHUNK_LEN, Manifest, ManifestError, SourceKind,
    TreeEntry, check_rel_path,
};
pub use pack::{BlobLoc, PackId, read_trailer as read_pack_trailer};
pub use read::{ChunkSource, FetchError, VerifyChunkError, decode_verified, verify_stored};
pub use repair::{RepairError, RepairReport};
pub use store::{OpenError, ReadManifestError, Store, StoreConfig};
pub use verify::{VerifyError, VerifyReport};
pub use write::{CommitError, Committed, Staged, WriteError, WriteStats};

/// Default average chunk size: the state-granularity knob (see BENCHMARKS.md for the table
/// it was chosen from).
pub const DEFAULT_AVG_CHUNK: u32 = 8 << 10;
/// Default zstd level for chunks.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Chunks are only stored compressed when that is smaller, so stored ≤ raw.
pub(crate) fn max_stored_len(raw: u32) -> u64 {
    u64::from(raw)
}
