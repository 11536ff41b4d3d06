//! Packs: many stored chunks in one object, so a 1 GiB snapshot of ~64k chunks is ~64 puts,
//! not 64k. A pack describes itself (its trailer lists its blobs), so indexes can be rebuilt
//! from packs alone.
//!
//! ```text
//! "PWPK" | version u16 LE | 0u16 | blob… | trailer (PackEntries, protobuf) | trailer len u32 LE | "PWPK"
//! ```
//! A pack's id is the BLAKE3 of the whole object.

use std::fmt;

use prewarm_core::ChunkHash;
use prewarm_proto::{Message, store as pb};

use crate::Codec;

const MAGIC: &[u8; 4] = b"PWPK";
/// Bytes before the first blob.
const HEADER_LEN: usize = 8;

/// The address of a pack: BLAKE3 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackId(pub(crate) [u8; 32]);

impl PackId {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    pub(crate) fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", &self.to_hex()[..16])
    }
}

/// Where a chunk's stored bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLoc {
    /// The pack.
    pub pack: PackId,
    /// Offset of the stored bytes in the pack object.
    pub offset: u64,
    /// Stored length.
    pub stored_length: u32,
    /// Uncompressed length.
    pub raw_length: u32,
    /// How it is stored.
    pub codec: Codec,
}

/// A blob inside a pack being built.
#[derive(Clone, Copy, Debug)]
pub struct PackedBlob {
    /// Chunk hash.
    pub hash: ChunkHash,
    /// Offset in the pack.
    pub offset: u64,
    /// Stored length.
    pub stored_length: u32,
    /// Uncompressed length.
    pub raw_length: u32,
    /// Codec.
    pub codec: Codec,
}

/// Accumulates stored chunks into one pack object.
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<PackedBlob>,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 4096);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&1u16.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes());
        Self {
            buf,
            blobs: Vec::new(),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Appends a stored chunk.
    pub fn push(&mut self, hash: ChunkHash, codec: Codec, raw_length: u32, stored: &[u8]) {
        self.blobs.push(PackedBlob {
            hash,
            offset: self.buf.len() as u64,
            stored_length: stored.len() as u32,
            raw_length,
            codec,
        });
        self.buf.extend_from_slice(stored);
    }

    /// Seals the pack: appends the trailer and returns its id, bytes and blobs.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<PackedBlob>) {
        let trailer = pb::PackEntries {
            pack_id: Default::default(),
            blobs: self.blobs.iter().map(blob_to_pb).collect(),
        }
        .encode_to_vec();
        self.buf.extend_from_slice(&trailer);
        self.buf
            .extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        let id = PackId(*blake3::hash(&self.buf).as_bytes());
        (id, self.buf, self.blobs)
    }
}

pub(crate) fn blob_to_pb(b: &PackedBlob) -> pb::BlobEntry {
    pb::BlobEntry {
        hash: b.hash.as_bytes().to_vec().into(),
        offset: b.offset,
        stored_length: b.stored_length,
        raw_length: b.raw_length,
        codec: b.codec.to_pb(),
    }
}

pub(crate) fn blob_from_pb(b: &pb::BlobEntry) -> Result<PackedBlob, String> {
    if b.offset.checked_add(u64::from(b.stored_length)).is_none() {
        return Err("blob offset out of range".into());
    }
    if b.raw_length > crate::MAX_CHUNK_LEN {
        return Err(format!(
            "blob of {} raw bytes exceeds the chunk limit of {}",
            b.raw_length,
            crate::MAX_CHUNK_LEN
        ));
    }
    Ok(PackedBlob {
        hash: ChunkHash::from_slice(&b.hash).ok_or("blob hash is not 32 bytes")?,
        offset: b.offset,
        stored_length: b.stored_length,
        raw_length: b.raw_length,
        codec: Codec::from_pb(b.codec).ok_or("unknown codec")?,
    })
}

/// Reads a whole pack's trailer: the blobs it claims to hold, checked against its size.
pub fn read_trailer(data: &[u8]) -> Result<Vec<PackedBlob>, String> {
    let n = data.len();
    if n < HEADER_LEN + 8 {
        return Err("not a pack (truncated)".into());
    }
    let start = trailer_start(&data[..HEADER_LEN], &data[n - 8..], n as u64)?;
    decode_trailer(&data[start as usize..n - 8], start)
}

/// Where a pack of `size` bytes keeps its trailer, from its first [`HEADER_LEN`] and last
/// 8 bytes (both checked).
pub(crate) fn trailer_start(head: &[u8], end: &[u8], size: u64) -> Result<u64, String> {
    if size < (HEADER_LEN + 8) as u64
        || head.get(..4) != Some(MAGIC.as_slice())
        || end.get(4..8) != Some(MAGIC.as_slice())
    {
        return Err("not a pack (bad magic or truncated)".into());
    }
    let len = u32::from_le_bytes(end[..4].try_into().expect("4 bytes"));
    (size - 8)
        .checked_sub(u64::from(len))
        .filter(|&s| s >= HEADER_LEN as u64)
        .ok_or_else(|| "trailer length out of range".into())
}

/// The blobs a trailer starting at `start` lists, each checked to lie before it.
pub(crate) fn decode_trailer(trailer: &[u8], start: u64) -> Result<Vec<PackedBlob>, String> {
    let entries = pb::PackEntries::decode(trailer).map_err(|e| format!("trailer: {e}"))?;
    let blobs = entries
        .blobs
        .iter()
        .map(blob_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    for b in &blobs {
        let end = b.offset.checked_add(u64::from(b.stored_length));
        if b.offset < HEADER_LEN as u64 || end.is_none_or(|e| e > start) {
            return Err("blob outside the pack's blob area".into());
        }
    }
    Ok(blobs)
}

/// Bytes before the first blob (the header a trailer check reads).
pub(crate) const HEAD_LEN: u64 = HEADER_LEN as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read_back() {
        let mut p = PackBuilder::new(1024);
        p.push(ChunkHash::of(b"a"), Codec::Raw, 1, b"a");
        p.push(ChunkHash::of(b"bb"), Codec::Raw, 2, b"bb");
        let (id, bytes, blobs) = p.finish();
        assert_eq!(id.0, *blake3::hash(&bytes).as_bytes());
        let back = read_trailer(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(&bytes[back[1].offset as usize..][..2], b"bb");
        assert_eq!(blobs[1].offset, back[1].offset);
        assert!(read_trailer(&bytes[..bytes.len() - 1]).is_err());
    }
}
