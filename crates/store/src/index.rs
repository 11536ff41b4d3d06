//! The chunk index: which chunk lives in which pack. Stored as framed `PackIndex` objects
//! under `index/`; loaded and merged in memory when a store is opened.

use std::collections::HashMap;

use prewarm_core::ChunkHash;
use prewarm_proto::{Message, store as pb};

use crate::envelope::{self, EnvelopeError};
use crate::pack::{BlobLoc, PackId, PackedBlob, blob_from_pb, blob_to_pb};

/// Magic of index objects.
pub const INDEX_MAGIC: &[u8; 4] = b"PWIX";
/// Largest index body accepted.
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Chunk hash → location, merged from every index object.
#[derive(Default, Clone)]
pub struct ChunkIndex {
    map: HashMap<ChunkHash, BlobLoc>,
    packs: HashMap<PackId, Vec<PackedBlob>>,
}

/// Why an index object could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum IndexDecodeError {
    /// Damaged frame.
    #[error("index frame: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Bad protobuf.
    #[error("index body: {0}")]
    Protobuf(#[from] prewarm_proto::DecodeError),
    /// Bad content.
    #[error("index content: {0}")]
    Invalid(String),
}

impl ChunkIndex {
    /// Where `hash` is stored, if anywhere.
    pub fn get(&self, hash: &ChunkHash) -> Option<&BlobLoc> {
        self.map.get(hash)
    }

    /// True if the store holds `hash`.
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.map.contains_key(hash)
    }

    /// Number of distinct chunks.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every pack and its blobs.
    pub fn packs(&self) -> &HashMap<PackId, Vec<PackedBlob>> {
        &self.packs
    }

    /// Adds one pack's blobs.
    pub fn add_pack(&mut self, pack: PackId, blobs: Vec<PackedBlob>) {
        for b in &blobs {
            self.map.entry(b.hash).or_insert(BlobLoc {
                pack,
                offset: b.offset,
                stored_length: b.stored_length,
                raw_length: b.raw_length,
                codec: b.codec,
            });
        }
        self.packs.insert(pack, blobs);
    }

    /// Merges a decoded index object.
    pub fn merge(&mut self, other: ChunkIndex) {
        for (pack, blobs) in other.packs {
            self.add_pack(pack, blobs);
        }
    }

    /// Encodes packs into a framed index object.
    pub fn encode<'a>(
        packs: impl IntoIterator<Item = (&'a PackId, &'a Vec<PackedBlob>)>,
    ) -> Vec<u8> {
        let msg = pb::PackIndex {
            packs: packs
                .into_iter()
                .map(|(id, blobs)| pb::PackEntries {
                    pack_id: id.0.to_vec().into(),
                    blobs: blobs.iter().map(blob_to_pb).collect(),
                })
                .collect(),
        };
        envelope::seal(INDEX_MAGIC, &msg.encode_to_vec())
    }

    /// Decodes a framed index object.
    pub fn decode(data: &[u8]) -> Result<Self, IndexDecodeError> {
        let body = envelope::open(INDEX_MAGIC, data, MAX_INDEX_BYTES)?;
        let msg = pb::PackIndex::decode(body)?;
        let mut idx = ChunkIndex::default();
        for p in msg.packs {
            let id = PackId::from_slice(&p.pack_id)
                .ok_or_else(|| IndexDecodeError::Invalid("pack id is not 32 bytes".into()))?;
            let blobs = p
                .blobs
                .iter()
                .map(blob_from_pb)
                .collect::<Result<Vec<_>, _>>()
                .map_err(IndexDecodeError::Invalid)?;
            // A pack listed twice would leave the first listing's chunks pointing into it.
            if idx.packs.contains_key(&id) {
                return Err(IndexDecodeError::Invalid(format!(
                    "pack {id} is listed twice"
                )));
            }
            idx.add_pack(id, blobs);
        }
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `envelope_manifest` fuzz target: an index object listing one pack twice
    /// (with other blobs the second time) decoded to an index that answered for chunks its
    /// pack list no longer held. Such an object is damaged or forged: refused.
    #[test]
    fn an_index_listing_a_pack_twice_is_refused() {
        let entry = |seed: u8| pb::BlobEntry {
            hash: vec![seed; 32].into(),
            offset: 8,
            stored_length: 1,
            raw_length: 1,
            codec: crate::Codec::Raw.to_pb(),
        };
        let pack = |seed: u8| pb::PackEntries {
            pack_id: vec![1; 32].into(),
            blobs: vec![entry(seed)],
        };
        let body = pb::PackIndex {
            packs: vec![pack(2), pack(3)],
        }
        .encode_to_vec();
        let err = ChunkIndex::decode(&envelope::seal(INDEX_MAGIC, &body))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("twice"), "{err}");
        // Listed once, it decodes.
        let once = pb::PackIndex {
            packs: vec![pack(2)],
        }
        .encode_to_vec();
        let idx = ChunkIndex::decode(&envelope::seal(INDEX_MAGIC, &once)).expect("decodes");
        assert_eq!(idx.len(), 1);
    }
}
