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
use crate::{ChunkerParams, Codec, codec};

/// One independently chunked piece of a logical stream. Chunks never span segments, so a
/// directory snapshot's files each start on a chunk boundary.
#[derive(Clone, Debug)]
pub enum Segment {
    /// A file read from disk.
    File(std::path::PathBuf),
    /// Bytes already in memory.
    Bytes(Bytes),
}

/// A chunk after hashing (and compression, when new).
pub(crate) struct Processed {
    pub hash: ChunkHash,
    pub length: u32,
    pub stored_length: u32,
    pub codec: Codec,
    /// Stored bytes, when this is the first time the store sees the chunk.
    pub new_data: Option<Vec<u8>>,
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

pub(crate) struct Producer {
    pub params: ChunkerParams,
    pub known: Arc<ChunkIndex>,
    pub level: i32,
    /// Chunks new in this write: hash → (stored length, codec).
    pub seen: HashMap<ChunkHash, (u32, Codec)>,
}

impl Producer {
    /// Cuts all segments, calling `emit` per batch in stream order; returns each segment's
    /// length as actually read (a file may change size while being read).
    pub fn run(
        &mut self,
        segments: &[Segment],
        emit: &mut dyn FnMut(Vec<Processed>) -> bool,
    ) -> Result<Vec<u64>, SegmentReadError> {
        let window = (BATCH_BYTES).max(2 * self.params.max_size as usize);
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + window);
        let mut cuts: Vec<(usize, usize)> = Vec::new();
        let mut lens = Vec::with_capacity(segments.len());
        for seg in segments {
            let mut len = 0u64;
            match seg {
                Segment::Bytes(b) => {
                    len = b.len() as u64;
                    // Cut in windows too, so batches stay bounded for huge buffers.
                    let mut rest: &[u8] = b;
                    self.cut_reader(&mut rest, "buffer", window, &mut buf, &mut cuts, emit)?;
                }
                Segment::File(path) => {
                    let name = path.display().to_string();
                    let err = |source| SegmentReadError {
                        path: name.clone(),
                        source,
                    };
                    let mut f = std::fs::File::open(path).map_err(err)?;
                    let mut counting = CountingReader {
                        inner: &mut f,
                        n: &mut len,
                    };
                    self.cut_reader(&mut counting, &name, window, &mut buf, &mut cuts, emit)?;
                }
            }
            lens.push(len);
        }
        if !cuts.is_empty() {
            let out = self.process(&buf, &cuts);
            emit(out);
        }
        Ok(lens)
    }

    fn cut_reader(
        &mut self,
        r: &mut dyn Read,
        name: &str,
        window: usize,
        buf: &mut Vec<u8>,
        cuts: &mut Vec<(usize, usize)>,
        emit: &mut dyn FnMut(Vec<Processed>) -> bool,
    ) -> Result<(), SegmentReadError> {
        let p = self.params;
        let mut pending = buf.len();
        let mut eof = false;
        while !eof {
            // Fill until a full window lies past the first uncut byte, or EOF.
            while buf.len() - pending < window {
                let old = buf.len();
                buf.resize(old + (window - (old - pending)).max(64 << 10), 0);
                let n = read_full(r, &mut buf[old..]).map_err(|source| SegmentReadError {
                    path: name.to_owned(),
                    source,
                })?;
                buf.truncate(old + n);
                if n == 0 {
                    eof = true;
                    break;
                }
            }
            let data = &buf[pending..];
            if data.is_empty() {
                break;
            }
            let mut last_end = 0;
            let cdc = fastcdc::v2020::FastCDC::new(
                data,
                p.min_size as usize,
                p.avg_size as usize,
                p.max_size as usize,
            );
            for c in cdc {
                let end = c.offset + c.length;
                if !eof && end == data.len() {
                    break; // cut short by the window, not by content: cut again after more data
                }
                cuts.push((pending + c.offset, c.length));
                last_end = end;
            }
            pending += last_end;
            if pending >= BATCH_BYTES {
                let out = self.process(buf, cuts);
                cuts.clear();
                buf.drain(..pending);
                pending = 0;
                if !emit(out) {
                    return Ok(()); // the consumer is gone; it reports why
                }
            }
        }
        Ok(())
    }

    /// Hashes a batch in parallel, then compresses the chunks nobody has stored yet.
    fn process(&mut self, buf: &[u8], cuts: &[(usize, usize)]) -> Vec<Processed> {
        let hashes: Vec<ChunkHash> = cuts
            .par_iter()
            .map(|&(s, l)| ChunkHash::of(&buf[s..s + l]))
            .collect();
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
        let encoded: Vec<(Codec, Vec<u8>)> = todo
            .par_iter()
            .map_init(
                || zstd::bulk::Compressor::new(level).expect("zstd compressor for a valid level"),
                |c, &i| {
                    let (s, l) = cuts[i];
                    codec::encode(c, &buf[s..s + l])
                },
            )
            .collect();
        let mut new_data: HashMap<usize, Vec<u8>> = HashMap::with_capacity(todo.len());
        for (&i, (codec, data)) in todo.iter().zip(encoded) {
            self.seen.insert(hashes[i], (data.len() as u32, codec));
            new_data.insert(i, data);
        }
        cuts.iter()
            .zip(hashes)
            .enumerate()
            .map(|(i, (&(_, l), hash))| {
                let (stored_length, codec) = match self.known.get(&hash) {
                    Some(loc) => (loc.stored_length, loc.codec),
                    None => self.seen[&hash],
                };
                Processed {
                    hash,
                    length: l as u32,
                    stored_length,
                    codec,
                    new_data: new_data.remove(&i),
                }
            })
            .collect()
    }
}

fn read_full(r: &mut dyn Read, mut out: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while !out.is_empty() {
        match r.read(out) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                out = &mut out[k..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    n: &'a mut u64,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        *self.n += k as u64;
        Ok(k)
    }
}
