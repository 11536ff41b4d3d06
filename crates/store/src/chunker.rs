//! The CPU side of a write: read segments, cut them with FastCDC, hash every chunk with
//! BLAKE3 and compress the chunks the store lacks — hashing and compression spread over all
//! cores with rayon. Runs on a plain thread and hands batches to the async packer.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use prewarm_core::ChunkHash;
use rayon::prelude::*;

use crate::index::ChunkIndex;
use crate::pack::{PackBuilder, PackId, PackedBlob};
use crate::{ChunkRef, ChunkerParams, Codec, codec};

/// Where a segment's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file read from disk.
    File(std::path::PathBuf),
    /// Bytes already in memory.
    Bytes(Bytes),
}

/// One independently chunked piece of a logical stream. Chunks never span segments, so a
/// directory snapshot's files each start on a chunk boundary.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The bytes.
    pub source: Source,
    /// The same segment's chunks in the previous version, if known and cut with the same
    /// parameters: regions whose fingerprint is unchanged are reused without BLAKE3 or CDC.
    pub previous: Vec<ChunkRef>,
    /// The caller vouches that the bytes equal `previous` (a file whose size and mtime did not
    /// change): its chunks are reused without reading the file at all.
    pub unchanged: bool,
}

impl Segment {
    /// A file.
    pub fn file(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            source: Source::File(path.into()),
            previous: Vec::new(),
            unchanged: false,
        }
    }

    /// An in-memory buffer.
    pub fn bytes(b: Bytes) -> Self {
        Self {
            source: Source::Bytes(b),
            previous: Vec::new(),
            unchanged: false,
        }
    }

    /// Adds the previous version's chunks of this segment.
    pub fn with_previous(mut self, previous: Vec<ChunkRef>) -> Self {
        self.previous = previous;
        self
    }
}

/// One cut: where the chunk lies in its batch and, when its fingerprint matched the previous
/// version, the address and fingerprint it had there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cut {
    pub start: usize,
    pub len: usize,
    pub known: Option<(ChunkHash, u64)>,
    /// Reused from an unchanged segment: no bytes in the batch (`known` is set).
    pub unread: bool,
}

/// A chunk after hashing: what the manifest needs to know about it.
pub(crate) struct ChunkMeta {
    pub hash: ChunkHash,
    pub length: u32,
    pub stored_length: u32,
    pub codec: Codec,
    /// XXH3-64 of the bytes.
    pub fingerprint: u64,
    /// True when this write stored it (first time the store sees it).
    pub new: bool,
}

/// What the hashing stage hands to the uploader, in stream order.
pub(crate) enum Hashed {
    /// Chunks of one batch.
    Chunks(Vec<ChunkMeta>),
    /// A sealed pack, ready to upload.
    Pack(PackId, Vec<u8>, Vec<PackedBlob>),
}

/// Why reading a segment failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct SegmentReadError {
    /// The segment (a path, or "buffer").
    pub path: String,
    /// The IO error.
    pub source: std::io::Error,
}

/// Bytes cut per batch before hashing and compressing it in parallel.
const BATCH_BYTES: usize = 8 << 20;
/// Bytes read per system call (at least).
const READ_STEP: usize = 256 << 10;

/// A batch of cut chunks: the bytes and the (start, length) of each chunk in them.
pub(crate) struct CutBatch {
    pub data: Vec<u8>,
    pub cuts: Vec<Cut>,
}

/// Stage 1 of the write pipeline: reads segments and cuts them into chunks.
pub(crate) struct Cutter {
    pub params: ChunkerParams,
    /// Batch buffers handed back by the hashing stage, reused to avoid fresh page faults.
    pub spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// Stage 2 of the write pipeline: hashes chunks, compresses the new ones (on all cores) and
/// packs them.
pub(crate) struct Hasher {
    pub known: Arc<ChunkIndex>,
    pub level: i32,
    /// Chunks new in this write: hash → (stored length, codec).
    pub seen: HashMap<ChunkHash, (u32, Codec)>,
    pub pack: PackBuilder,
    pub pack_target: usize,
    /// A chunk of an unchanged segment that the store no longer holds (a concurrent gc):
    /// the write must fail rather than name it.
    pub vanished: Option<ChunkHash>,
}

impl Cutter {
    /// Cuts all segments, calling `emit` per batch in stream order; returns each segment's
    /// length as actually read (a file may change size while being read).
    pub fn run(
        &mut self,
        segments: &[Segment],
        emit: &mut dyn FnMut(CutBatch) -> bool,
    ) -> Result<Vec<u64>, SegmentReadError> {
        // Look-ahead past the first uncut byte: two maximal chunks decide the next cut. Kept
        // small, because the look-ahead is what gets copied into the next batch's buffer.
        let window = 2 * self.params.max_size as usize + 1;
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + window + READ_STEP);
        let mut cuts: Vec<Cut> = Vec::new();
        let mut lens = Vec::with_capacity(segments.len());
        for seg in segments {
            if seg.unchanged {
                for c in &seg.previous {
                    cuts.push(Cut {
                        start: 0,
                        len: c.length as usize,
                        known: Some((c.hash, c.fingerprint)),
                        unread: true,
                    });
                }
                lens.push(seg.previous.iter().map(|c| u64::from(c.length)).sum());
                continue;
            }
            let mut cursor = CutCursor::new(&seg.previous);
            let (alive, len) = match &seg.source {
                Source::Bytes(b) => {
                    let mut rest: &[u8] = b;
                    self.cut_reader(
                        &mut rest,
                        "buffer",
                        window,
                        &mut buf,
                        &mut cuts,
                        &mut cursor,
                        emit,
                    )?
                }
                Source::File(path) => {
                    let name = path.display().to_string();
                    let err = |source| SegmentReadError {
                        path: name.clone(),
                        source,
                    };
                    // Passed as is: File reads into uninitialised spare capacity; a wrapper
                    // without `read_buf` would make std zero every buffer before each read.
                    let mut f = std::fs::File::open(path).map_err(err)?;
                    self.cut_reader(
                        &mut f,
                        &name,
                        window,
                        &mut buf,
                        &mut cuts,
                        &mut cursor,
                        emit,
                    )?
                }
            };
            if !alive {
                return Ok(lens); // the consumer is gone; it reports why
            }
            lens.push(len);
        }
        if !cuts.is_empty() {
            emit(CutBatch { data: buf, cuts });
        }
        Ok(lens)
    }

    /// Cuts one segment. In step with the previous version's boundaries, a chunk whose
    /// fingerprint still matches is taken whole; elsewhere FastCDC cuts one chunk at a time
    /// until a cut lands on a previous boundary again. CDC is deterministic from any cut
    /// point, so the result equals cutting the whole segment afresh.
    #[allow(clippy::too_many_arguments)]
    fn cut_reader(
        &mut self,
        r: &mut dyn Read,
        name: &str,
        window: usize,
        buf: &mut Vec<u8>,
        cuts: &mut Vec<Cut>,
        cursor: &mut CutCursor<'_>,
        emit: &mut dyn FnMut(CutBatch) -> bool,
    ) -> Result<(bool, u64), SegmentReadError> {
        let p = self.params;
        let mut pending = buf.len();
        let mut eof = false;
        let mut total = 0u64;
        loop {
            // Keep a full window past the first uncut byte, or everything up to EOF.
            while !eof && buf.len() - pending < window {
                let want = (window - (buf.len() - pending)).max(READ_STEP);
                // read_to_end fills spare capacity without zeroing it first.
                let n =
                    r.take(want as u64)
                        .read_to_end(buf)
                        .map_err(|source| SegmentReadError {
                            path: name.to_owned(),
                            source,
                        })?;
                eof = n == 0;
                total += n as u64;
            }
            let data = &buf[pending..];
            if data.is_empty() {
                return Ok((true, total));
            }
            let cut = match cursor.matching(data, eof) {
                Some(known) => known,
                None => {
                    let c = fastcdc::v2020::FastCDC::new(
                        data,
                        p.min_size as usize,
                        p.avg_size as usize,
                        p.max_size as usize,
                    )
                    .next()
                    .expect("FastCDC yields a chunk for non-empty input");
                    Cut {
                        start: 0,
                        len: c.length,
                        known: None,
                        unread: false,
                    }
                }
            };
            cuts.push(Cut {
                start: pending,
                ..cut
            });
            pending += cut.len;
            cursor.advance(cut.len as u64);
            if pending >= BATCH_BYTES {
                // Hand the cut bytes over; keep only the uncut tail.
                let mut next = self.spare.try_recv().unwrap_or_default();
                next.clear();
                next.reserve(BATCH_BYTES + window + READ_STEP);
                next.extend_from_slice(&buf[pending..]);
                buf.truncate(pending);
                let batch = CutBatch {
                    data: std::mem::replace(buf, next),
                    cuts: std::mem::take(cuts),
                };
                pending = 0;
                if !emit(batch) {
                    return Ok((false, total));
                }
            }
        }
    }
}

/// Walks the previous version's chunk boundaries alongside the new stream.
pub(crate) struct CutCursor<'a> {
    previous: &'a [ChunkRef],
    /// Index of the first previous chunk starting at or after `pos`.
    next: usize,
    /// Segment-relative start of `previous[next]`.
    next_start: u64,
    /// Segment-relative position of the next byte to cut.
    pos: u64,
}

impl<'a> CutCursor<'a> {
    fn new(previous: &'a [ChunkRef]) -> Self {
        Self {
            previous,
            next: 0,
            next_start: 0,
            pos: 0,
        }
    }

    /// If the stream is on a previous boundary and the previous chunk there has the same
    /// fingerprint as the bytes at hand, that chunk, known.
    fn matching(&self, data: &[u8], eof: bool) -> Option<Cut> {
        let old = self.previous.get(self.next)?;
        let len = old.length as usize;
        if self.pos != self.next_start || old.fingerprint == 0 || data.len() < len {
            return None;
        }
        // The previous last chunk was cut by the end of the stream, not by its content:
        // it only stands if the stream still ends there.
        if self.next + 1 == self.previous.len() && !(eof && data.len() == len) {
            return None;
        }
        (xxhash_rust::xxh3::xxh3_64(&data[..len]) == old.fingerprint).then_some(Cut {
            start: 0,
            len,
            known: Some((old.hash, old.fingerprint)),
            unread: false,
        })
    }

    fn advance(&mut self, by: u64) {
        self.pos += by;
        while self.next < self.previous.len() && self.next_start < self.pos {
            self.next_start += u64::from(self.previous[self.next].length);
            self.next += 1;
        }
    }
}

impl Hasher {
    /// Hashes a batch in parallel, compresses the chunks nobody has stored yet, appends them
    /// to the current pack and emits the batch's chunks (and any pack that filled up).
    pub fn process(&mut self, batch: &CutBatch, emit: &mut dyn FnMut(Hashed) -> bool) -> bool {
        let (buf, cuts) = (&batch.data[..], &batch.cuts[..]);
        if let Some(c) = cuts
            .iter()
            .find(|c| c.unread && c.known.is_none_or(|k| !self.known.contains(&k.0)))
        {
            self.vanished = Some(c.known.map_or(ChunkHash::from_array([0; 32]), |k| k.0));
            return false;
        }
        // Known chunks (fingerprint matched the previous version) skip BLAKE3, unless the
        // store lost them: then they are hashed and stored like new ones.
        let ids: Vec<(ChunkHash, u64)> = cuts
            .par_iter()
            .map(|c| match c.known {
                Some(k) if c.unread || self.known.contains(&k.0) => k,
                _ => {
                    let d = &buf[c.start..c.start + c.len];
                    (ChunkHash::of(d), xxhash_rust::xxh3::xxh3_64(d))
                }
            })
            .collect();
        let hashes: Vec<ChunkHash> = ids.iter().map(|&(h, _)| h).collect();
        let mut todo = Vec::new();
        let mut first_in_batch: HashMap<ChunkHash, usize> = HashMap::new();
        for (i, h) in hashes.iter().enumerate() {
            if !self.known.contains(h)
                && !self.seen.contains_key(h)
                && !first_in_batch.contains_key(h)
            {
                first_in_batch.insert(*h, i);
                todo.push(i);
            }
        }
        let level = self.level;
        let encoded: Vec<Option<Vec<u8>>> = todo
            .par_iter()
            .map(|&i| codec::encode_level(level, &buf[cuts[i].start..cuts[i].start + cuts[i].len]))
            .collect();
        let mut is_new = vec![false; cuts.len()];
        for (&i, compressed) in todo.iter().zip(encoded) {
            let (s, l) = (cuts[i].start, cuts[i].len);
            let (codec, stored): (Codec, &[u8]) = match &compressed {
                Some(c) => (Codec::Zstd, c),
                None => (Codec::Raw, &buf[s..s + l]),
            };
            self.seen.insert(hashes[i], (stored.len() as u32, codec));
            self.pack.push(hashes[i], codec, l as u32, stored);
            is_new[i] = true;
            if self.pack.len() >= self.pack_target && !self.flush(emit) {
                return false;
            }
        }
        let metas = cuts
            .iter()
            .zip(ids)
            .zip(is_new)
            .map(|((c, (hash, fingerprint)), new)| {
                let (stored_length, codec) = match self.known.get(&hash) {
                    Some(loc) => (loc.stored_length, loc.codec),
                    None => self.seen[&hash],
                };
                ChunkMeta {
                    hash,
                    length: c.len as u32,
                    stored_length,
                    codec,
                    fingerprint,
                    new,
                }
            })
            .collect();
        emit(Hashed::Chunks(metas))
    }

    /// Seals the current pack (if it holds anything) and emits it.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Hashed) -> bool) -> bool {
        if self.pack.is_empty() {
            return true;
        }
        let full = std::mem::replace(&mut self.pack, PackBuilder::new(self.pack_target));
        let (id, bytes, blobs) = full.finish();
        emit(Hashed::Pack(id, bytes, blobs))
    }
}
