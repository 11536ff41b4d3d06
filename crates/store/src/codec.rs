//! Per-chunk compression: zstd where it pays, raw where it does not.

use std::io::Read;

use crate::Codec;

/// Compression must save at least 1/32 (~3%) of a chunk, or the chunk is stored raw:
/// decompressing costs time on every restore, so a marginal saving is not worth it.
const MIN_SAVING_DIVISOR: usize = 32;

/// Bytes sampled by the incompressibility test; chunks smaller than this are always tried.
const SAMPLE: usize = 1024;

/// `c · log2(c)` for every count a sample can produce, so the entropy needs no logarithms.
fn c_log2_c() -> &'static [f64; SAMPLE + 1] {
    static TABLE: std::sync::OnceLock<[f64; SAMPLE + 1]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0.0; SAMPLE + 1];
        for (c, v) in t.iter_mut().enumerate().skip(1) {
            *v = c as f64 * (c as f64).log2();
        }
        t
    })
}

/// True when a 1 KiB sample of `raw` has the byte statistics of random (or already
/// compressed or encrypted) data, so trying zstd on it would waste CPU.
///
/// The empirical order-0 entropy of n uniformly random bytes is about
/// 8 − 255 / (2 n ln 2) bits (7.82 for n = 1024); a sample within 0.1 bit of that is called
/// random. Text and most binaries measure far lower (text ≈ 4.5–6).
pub fn looks_incompressible(raw: &[u8]) -> bool {
    if raw.len() < SAMPLE {
        return false;
    }
    let start = (raw.len() - SAMPLE) / 2;
    let mut hist = [0u16; 256];
    for &b in &raw[start..start + SAMPLE] {
        hist[b as usize] += 1;
    }
    let table = c_log2_c();
    let n = SAMPLE as f64;
    // H = log2(n) − (1/n) Σ c log2 c
    let sum: f64 = hist.iter().map(|&c| table[c as usize]).sum();
    let entropy = n.log2() - sum / n;
    let expected_random = 8.0 - 255.0 / (2.0 * n * std::f64::consts::LN_2);
    entropy > expected_random - 0.1
}

thread_local! {
    /// One compression context per thread (and level), reused across chunks.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses one chunk at `level` with this thread's reusable context; `None` means "store
/// raw" (random-looking, or compression saves under ~3%).
pub fn encode_level(level: i32, raw: &[u8]) -> Option<Vec<u8>> {
    if looks_incompressible(raw) {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        encode(c, raw)
    })
}

/// Compresses one chunk with a reusable compressor; returns the codec, or `None` for "store
/// raw", with the compressed bytes.
pub fn encode(compressor: &mut zstd::bulk::Compressor<'_>, raw: &[u8]) -> Option<Vec<u8>> {
    if looks_incompressible(raw) {
        return None;
    }
    let bound = raw.len() - raw.len() / MIN_SAVING_DIVISOR;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    match compressor.compress_to_buffer(raw, &mut out) {
        Ok(n) if n < bound => Some(out),
        _ => None,
    }
}

/// Why a stored chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// zstd rejected the frame.
    #[error("zstd frame is corrupt: {0}")]
    Zstd(std::io::Error),
    /// The recorded length is over the chunk limit (nothing is decoded).
    #[error("a chunk of {0} bytes exceeds the limit of {limit}", limit = crate::MAX_CHUNK_LEN)]
    TooLong(usize),
    /// The decoded length differs from the recorded one.
    #[error("decoded to {got} bytes, expected {want}")]
    Length {
        /// Bytes decoded.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
}

/// Decodes a stored chunk into exactly `raw_len` bytes.
pub fn decode(codec: Codec, stored: &[u8], raw_len: usize) -> Result<Vec<u8>, DecodeError> {
    // The length comes from a trailer, an index or a peer: never allocate by it unchecked.
    if raw_len > crate::MAX_CHUNK_LEN as usize {
        return Err(DecodeError::TooLong(raw_len));
    }
    let out = match codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => {
            // Capacity raw_len + 1 so an overlong frame is detected rather than truncated.
            let mut out = Vec::with_capacity(raw_len + 1);
            // One context per thread: creating one per chunk (~100 KiB, initialised) cost
            // more than decompressing an 8 KiB chunk.
            thread_local! {
                static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            DCTX.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(zstd::bulk::Decompressor::new()?);
                }
                slot.as_mut()
                    .expect("set above")
                    .decompress_to_buffer(stored, &mut out)
            })
            .map_err(DecodeError::Zstd)?;
            out
        }
    };
    if out.len() != raw_len {
        return Err(DecodeError::Length {
            got: out.len(),
            want: raw_len,
        });
    }
    Ok(out)
}

/// Why a bounded decompression failed.
#[derive(Debug)]
pub enum LimitedError {
    /// The output would exceed the limit.
    TooLarge,
    /// The frame is corrupt.
    Io(std::io::Error),
}

/// Decompresses a zstd frame, refusing to produce more than `limit` bytes.
pub fn decompress_limited(frame: &[u8], limit: u64) -> Result<Vec<u8>, LimitedError> {
    let dec = zstd::stream::read::Decoder::new(frame).map_err(LimitedError::Io)?;
    let mut out = Vec::new();
    dec.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(LimitedError::Io)?;
    if out.len() as u64 > limit {
        return Err(LimitedError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_incompressible() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let text = b"the quick brown fox ".repeat(500);
        let stored = encode(&mut c, &text).expect("text compresses");
        assert!(stored.len() < text.len() / 10);
        assert_eq!(decode(Codec::Zstd, &stored, text.len()).unwrap(), text);

        let noise: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(encode(&mut c, &noise).is_none());
    }

    #[test]
    fn entropy_test_tells_random_from_structured() {
        let mut x = 88172645463325252u64;
        let random: Vec<u8> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        let text = b"the quick brown fox jumps over the lazy dog 0123456789 ".repeat(400);
        assert!(!looks_incompressible(&text));
        assert!(!looks_incompressible(&[0u8; 20_000]));
        assert!(
            !looks_incompressible(&random[..100]),
            "short chunks are always tried"
        );
    }

    #[test]
    fn decode_rejects_wrong_length_and_garbage() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let text = b"abcabcabc".repeat(100);
        let stored = encode(&mut c, &text).unwrap();
        assert!(decode(Codec::Zstd, &stored, text.len() - 1).is_err());
        assert!(decode(Codec::Zstd, b"garbage!", 8).is_err());
        assert!(decode(Codec::Raw, b"abc", 4).is_err());
    }
}
