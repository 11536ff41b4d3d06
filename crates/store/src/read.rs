//! Reading chunks back: located through the index, fetched pack by pack with ranged reads,
//! decompressed and verified against their BLAKE3 address on all cores. A chunk that fails
//! verification is an error, never data.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use prewarm_core::ChunkHash;
use rayon::prelude::*;

use crate::codec;
use crate::manifest::{ChunkRef, Codec};
use crate::pack::{BlobLoc, PackId};
use crate::store::{Store, pack_path};

/// Why chunks could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No pack holds this chunk.
    #[error("chunk {0} is not in the store")]
    Missing(ChunkHash),
    /// The pack is shorter than its index says.
    #[error("pack {pack} is truncated: {have} bytes, but chunk {chunk} needs bytes up to {need}")]
    Truncated {
        /// The pack.
        pack: PackId,
        /// The chunk.
        chunk: ChunkHash,
        /// Its real size.
        have: u64,
        /// The size needed.
        need: u64,
    },
    /// The chunk's bytes do not decode or do not match its hash.
    #[error("chunk {chunk} in pack {pack} is corrupt: {why}")]
    Corrupt {
        /// The chunk.
        chunk: ChunkHash,
        /// The pack.
        pack: PackId,
        /// What is wrong.
        why: String,
    },
    /// The source failed (backend error, dead peer…).
    #[error("chunk source failed: {0}")]
    Source(String),
}

/// Anything that yields verified chunk bytes: the store itself, or (for agents) a remote peer
/// with a local cache in front.
pub trait ChunkSource: Sync {
    /// Returns the raw bytes of each chunk, in the order asked, each verified against its hash.
    fn fetch(
        &self,
        refs: &[ChunkRef],
    ) -> impl Future<Output = Result<Vec<Bytes>, FetchError>> + Send;
}

impl ChunkSource for Store {
    fn fetch(
        &self,
        refs: &[ChunkRef],
    ) -> impl Future<Output = Result<Vec<Bytes>, FetchError>> + Send {
        self.fetch_chunks(refs)
    }
}

/// Packs read concurrently.
const PACKS_IN_FLIGHT: usize = 4;

impl Store {
    /// Fetches and verifies chunks, returned in the order given.
    pub async fn fetch_chunks(&self, refs: &[ChunkRef]) -> Result<Vec<Bytes>, FetchError> {
        let index = self.index();
        let mut by_pack: BTreeMap<PackId, Vec<(usize, ChunkHash, BlobLoc)>> = BTreeMap::new();
        for (i, r) in refs.iter().enumerate() {
            let loc = *index.get(&r.hash).ok_or(FetchError::Missing(r.hash))?;
            by_pack.entry(loc.pack).or_default().push((i, r.hash, loc));
        }
        let mut out: Vec<Option<Bytes>> = vec![None; refs.len()];
        let mut results = futures::stream::iter(by_pack)
            .map(|(pack, wants)| async move {
                let got = self.read_pack_blobs(pack, &wants).await;
                (wants, got)
            })
            .buffer_unordered(PACKS_IN_FLIGHT);
        while let Some((wants, got)) = results.next().await {
            for ((i, _, _), r) in wants.iter().zip(got?) {
                out[*i] = Some(r?);
            }
        }
        Ok(out
            .into_iter()
            .map(|b| b.expect("every chunk was fetched"))
            .collect())
    }

    /// The stored (possibly compressed, unverified) bytes of each chunk with its location, in
    /// the order given: what a data-plane server sends; the receiver decodes and verifies
    /// with [`decode_verified`].
    pub async fn read_stored(
        &self,
        hashes: &[ChunkHash],
    ) -> Result<Vec<(BlobLoc, Bytes)>, FetchError> {
        let index = self.index();
        let mut by_pack: BTreeMap<PackId, Vec<(usize, BlobLoc)>> = BTreeMap::new();
        for (i, h) in hashes.iter().enumerate() {
            let loc = *index.get(h).ok_or(FetchError::Missing(*h))?;
            by_pack.entry(loc.pack).or_default().push((i, loc));
        }
        let mut out: Vec<Option<(BlobLoc, Bytes)>> = vec![None; hashes.len()];
        let mut results = futures::stream::iter(by_pack)
            .map(|(pack, wants)| async move {
                let ranges: Vec<Range<u64>> = wants
                    .iter()
                    .map(|(_, l)| l.offset..l.offset + u64::from(l.stored_length))
                    .collect();
                let got = self.os.get_ranges(&pack_path(&pack), &ranges).await;
                (pack, wants, got)
            })
            .buffer_unordered(PACKS_IN_FLIGHT);
        while let Some((pack, wants, got)) = results.next().await {
            let got = match got {
                Ok(v) => v,
                Err(e) => {
                    let w: Vec<_> = wants.iter().map(|(i, l)| (*i, hashes[*i], *l)).collect();
                    return Err(self.explain_read_error(pack, &w, e).await);
                }
            };
            for ((i, loc), b) in wants.into_iter().zip(got) {
                out[i] = Some((loc, b));
            }
        }
        Ok(out
            .into_iter()
            .map(|b| b.expect("every chunk was read"))
            .collect())
    }

    /// Reads some blobs of one pack; the outer error is for the pack, the inner per blob.
    pub(crate) async fn read_pack_blobs(
        &self,
        pack: PackId,
        wants: &[(usize, ChunkHash, BlobLoc)],
    ) -> Result<Vec<Result<Bytes, FetchError>>, FetchError> {
        let path = pack_path(&pack);
        let ranges: Vec<Range<u64>> = wants
            .iter()
            .map(|(_, _, l)| l.offset..l.offset + u64::from(l.stored_length))
            .collect();
        let stored = match self.os.get_ranges(&path, &ranges).await {
            Ok(v) => v,
            Err(e) => return Err(self.explain_read_error(pack, wants, e).await),
        };
        let items: Vec<(ChunkHash, BlobLoc, Bytes)> = wants
            .iter()
            .zip(stored)
            .map(|((_, h, l), b)| (*h, *l, b))
            .collect();
        let decoded = tokio::task::spawn_blocking(move || {
            items
                .par_iter()
                .map(|(hash, loc, stored)| decode_verified(*hash, loc, stored))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| FetchError::Source(e.to_string()))?;
        Ok(decoded)
    }

    async fn explain_read_error(
        &self,
        pack: PackId,
        wants: &[(usize, ChunkHash, BlobLoc)],
        e: object_store::Error,
    ) -> FetchError {
        match self.os.head(&pack_path(&pack)).await {
            Ok(meta) => {
                for (_, h, l) in wants {
                    let need = l.offset + u64::from(l.stored_length);
                    if need > meta.size {
                        return FetchError::Truncated {
                            pack,
                            chunk: *h,
                            have: meta.size,
                            need,
                        };
                    }
                }
                FetchError::Source(format!("pack {pack}: {e}"))
            }
            Err(object_store::Error::NotFound { .. }) => {
                FetchError::Source(format!("pack {pack} is missing from the store"))
            }
            Err(_) => FetchError::Source(format!("pack {pack}: {e}")),
        }
    }
}

/// Decompresses a stored chunk and checks its length and hash.
pub fn decode_verified(hash: ChunkHash, loc: &BlobLoc, stored: &[u8]) -> Result<Bytes, FetchError> {
    let corrupt = |why: String| FetchError::Corrupt {
        chunk: hash,
        pack: loc.pack,
        why,
    };
    let raw = codec::decode(loc.codec, stored, loc.raw_length as usize)
        .map_err(|e| corrupt(e.to_string()))?;
    if ChunkHash::of(&raw) != hash {
        return Err(corrupt("BLAKE3 hash mismatch".into()));
    }
    Ok(Bytes::from(raw))
}

/// Why a received chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyChunkError {
    /// The bytes do not decompress to the announced length.
    #[error("chunk {0} does not decode: {1}")]
    Decode(ChunkHash, String),
    /// The bytes do not hash to the chunk's address.
    #[error("chunk {0} fails verification: BLAKE3 mismatch")]
    Mismatch(ChunkHash),
}

/// Decodes stored chunk bytes received from elsewhere (a data-plane peer) and checks them
/// against `hash`; raw chunks are verified in place, without a copy.
pub fn verify_stored(
    hash: ChunkHash,
    codec: Codec,
    raw_len: u32,
    stored: Bytes,
) -> Result<Bytes, VerifyChunkError> {
    let raw = match codec {
        Codec::Raw if stored.len() == raw_len as usize => stored,
        Codec::Raw => {
            return Err(VerifyChunkError::Decode(
                hash,
                format!("raw chunk of {} bytes, announced {raw_len}", stored.len()),
            ));
        }
        Codec::Zstd => Bytes::from(
            codec::decode(codec, &stored, raw_len as usize)
                .map_err(|e| VerifyChunkError::Decode(hash, e.to_string()))?,
        ),
    };
    if ChunkHash::of(&raw) != hash {
        return Err(VerifyChunkError::Mismatch(hash));
    }
    Ok(raw)
}
