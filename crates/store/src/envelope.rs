//! The self-describing frame around every metadata object (manifests, indexes):
//!
//! ```text
//! magic [4] | format version u16 LE | flags u16 LE | body length u64 LE | BLAKE3 [32] | body
//! ```
//!
//! Flag bit 0: the body is one zstd frame. In version 2 the BLAKE3 covers the 16 header bytes
//! before it and the body, so a damaged flag (a compressed body read as plain, or the
//! reverse) is refused like damaged body bytes; version 1 (read, no longer written) hashed the
//! body alone. Opening checks magic, version, the declared length against the object's real
//! length and a caller-given limit, the checksum, and — for compressed bodies — caps the
//! decompressed size, so no decompression bomb gets through.

use bytes::Bytes;

/// Bytes before the body.
pub const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 32;
/// The format version written (version 1 is still read).
pub const FORMAT_VERSION: u16 = 2;
/// The first format: its checksum covers the body only.
const FORMAT_V1: u16 = 1;
const FLAG_ZSTD: u16 = 1;
/// Bodies smaller than this are stored uncompressed.
const COMPRESS_MIN: usize = 4096;

/// Why a framed object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the header, or shorter than the length it declares.
    #[error("truncated: {have} bytes, need {need}")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes required.
        need: usize,
    },
    /// Not one of ours, or not the kind of object expected.
    #[error("foreign object: magic {found:?}, expected {expected:?}")]
    BadMagic {
        /// Magic found.
        found: String,
        /// Magic expected.
        expected: String,
    },
    /// Written by a newer (or unknown) format.
    #[error("unknown format version {0} (this build reads versions 1 to {FORMAT_VERSION})")]
    UnknownVersion(u16),
    /// Flags this build does not understand.
    #[error("unknown flags {0:#06x}")]
    UnknownFlags(u16),
    /// Larger than the limit for this kind of object.
    #[error("body of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Declared or decompressed size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// Trailing bytes after the declared body.
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
    /// The body does not match its checksum.
    #[error("checksum mismatch: the object is corrupt")]
    Checksum,
    /// The compressed body does not decompress.
    #[error("body does not decompress: {0}")]
    Decompress(std::io::Error),
}

/// Frames `body` under `magic`, compressing it when that pays.
pub fn seal(magic: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let (flags, payload) = if body.len() >= COMPRESS_MIN {
        match zstd::bulk::compress(body, 3) {
            Ok(c) if c.len() < body.len() => (FLAG_ZSTD, c),
            _ => (0, body.to_vec()),
        }
    } else {
        (0, body.to_vec())
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = checksum(FORMAT_VERSION, &out, &payload);
    out.extend_from_slice(sum.as_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The checksum `version` keeps over a header's first 16 bytes and the payload.
fn checksum(version: u16, head: &[u8], payload: &[u8]) -> blake3::Hash {
    if version == FORMAT_V1 {
        return blake3::hash(payload);
    }
    let mut h = blake3::Hasher::new();
    h.update(&head[..16]);
    h.update(payload);
    h.finalize()
}

/// Opens a framed object, returning its (decompressed) body of at most `limit` bytes.
pub fn open(magic: &[u8; 4], data: &[u8], limit: u64) -> Result<Bytes, EnvelopeError> {
    if data.len() < HEADER_LEN {
        return Err(EnvelopeError::Truncated {
            have: data.len(),
            need: HEADER_LEN,
        });
    }
    if &data[..4] != magic {
        return Err(EnvelopeError::BadMagic {
            found: String::from_utf8_lossy(&data[..4]).into_owned(),
            expected: String::from_utf8_lossy(magic).into_owned(),
        });
    }
    let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
    let version = u16_at(4);
    if version != FORMAT_VERSION && version != FORMAT_V1 {
        return Err(EnvelopeError::UnknownVersion(version));
    }
    let flags = u16_at(6);
    if flags & !FLAG_ZSTD != 0 {
        return Err(EnvelopeError::UnknownFlags(flags));
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&data[8..16]);
    let len = u64::from_le_bytes(len8);
    if len > limit {
        return Err(EnvelopeError::TooLarge { len, limit });
    }
    let need = HEADER_LEN + len as usize;
    if data.len() < need {
        return Err(EnvelopeError::Truncated {
            have: data.len(),
            need,
        });
    }
    if data.len() > need {
        return Err(EnvelopeError::Trailing(data.len() - need));
    }
    let payload = &data[HEADER_LEN..];
    if checksum(version, data, payload).as_bytes() != &data[16..48] {
        return Err(EnvelopeError::Checksum);
    }
    if flags & FLAG_ZSTD == 0 {
        return Ok(Bytes::copy_from_slice(payload));
    }
    crate::codec::decompress_limited(payload, limit)
        .map(Bytes::from)
        .map_err(|e| match e {
            crate::codec::LimitedError::TooLarge => EnvelopeError::TooLarge {
                len: limit + 1,
                limit,
            },
            crate::codec::LimitedError::Io(e) => EnvelopeError::Decompress(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[u8; 4] = b"TEST";

    #[test]
    fn round_trip_small_and_compressed() {
        for body in [b"hi".to_vec(), vec![7u8; 100_000]] {
            let sealed = seal(M, &body);
            assert_eq!(&open(M, &sealed, 1 << 20).unwrap()[..], &body[..]);
        }
        assert!(
            seal(M, &vec![7u8; 100_000]).len() < 1000,
            "repetitive body is compressed"
        );
    }

    #[test]
    fn rejects_damage() {
        let sealed = seal(M, b"some body bytes");
        let check = |data: &[u8], want: &str| {
            let e = open(M, data, 1 << 20).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        };
        check(&sealed[..10], "truncated");
        check(&sealed[..sealed.len() - 1], "truncated");
        check(
            b"XXXX and more bytes than a header needs, really quite a lot more",
            "foreign",
        );
        let mut v = sealed.clone();
        v[4] = 9;
        check(&v, "unknown format version 9");
        let mut v = sealed.clone();
        *v.last_mut().unwrap() ^= 1;
        check(&v, "checksum");
        let mut v = sealed.clone();
        v.push(0);
        check(&v, "trailing");
        let e = open(M, &sealed, 3).unwrap_err().to_string();
        assert!(e.contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn decompression_bomb_is_refused() {
        let sealed = seal(M, &vec![0u8; 10 << 20]);
        assert!(sealed.len() < 10_000);
        let e = open(M, &sealed, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("exceeds the limit"), "{e}");
    }

    /// Every single-bit flip anywhere in an object, plain or compressed, is refused (the
    /// flags are under the checksum: a compressed body is never handed out as plain).
    #[test]
    fn every_bit_flip_is_refused() {
        let plain = b"a small manifest body".to_vec();
        let packed: Vec<u8> = (0..20_000_u32).map(|i| (i % 7) as u8).collect();
        for body in [plain, packed] {
            let sealed = seal(M, &body);
            for i in 0..sealed.len() {
                for bit in 0..8 {
                    let mut v = sealed.clone();
                    v[i] ^= 1 << bit;
                    assert!(
                        open(M, &v, 1 << 20).is_err(),
                        "flip of bit {bit} of byte {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn version_1_objects_still_open() {
        let body = b"written by an older build";
        let mut v1 = Vec::new();
        v1.extend_from_slice(M);
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&0u16.to_le_bytes());
        v1.extend_from_slice(&(body.len() as u64).to_le_bytes());
        v1.extend_from_slice(blake3::hash(body).as_bytes());
        v1.extend_from_slice(body);
        assert_eq!(&open(M, &v1, 1 << 20).unwrap()[..], body);
        *v1.last_mut().unwrap() ^= 1;
        assert!(open(M, &v1, 1 << 20).is_err());
    }
}
