//! Pack trailers (`read_pack_trailer`) and the chunk decoder (`verify_stored`, the path
//! every chunk from a pack, an index or a peer goes through), decompression bombs included.
//!
//! First byte: how the rest is presented.
//! - 0: a whole pack object;
//! - 1: `[blob area length u16 LE] [blob area] [trailer protobuf]`, wrapped into a pack with
//!   valid magics and trailer length, so the fuzzer works on the trailer itself;
//! - 2: one stored chunk: `[codec (low bit: 0 raw, 1 zstd)] [recorded raw length u32 LE]
//!   [stored bytes]`.
//!
//! Properties: a trailer read back names only blobs inside the pack's blob area, each within
//! the chunk limit; a stored chunk is accepted exactly when an independent decoder (the zstd
//! crate's streaming decoder) decodes it to exactly its recorded length (≤ 16 MiB), and then
//! to the same bytes; anything else — a bomb, a short or long frame, garbage — is refused as
//! undecodable, never handed on.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prewarm_core::ChunkHash;
use prewarm_fuzz::{MAX_CHUNK, reference_decode};
use prewarm_store::{Codec, VerifyChunkError, read_pack_trailer, verify_stored};

const MAGIC: &[u8; 4] = b"PWPK";

fn check_chunk(named: Option<ChunkHash>, codec: Codec, raw_len: u32, stored: &[u8]) {
    let expected = match codec {
        Codec::Raw => (stored.len() == raw_len as usize).then(|| stored.to_vec()),
        Codec::Zstd => reference_decode(stored, raw_len),
    };
    let stored_b = Bytes::copy_from_slice(stored);
    match &expected {
        Some(out) => {
            let got = verify_stored(ChunkHash::of(out), codec, raw_len, stored_b.clone())
                .unwrap_or_else(|e| panic!("a chunk that decodes to its length is refused: {e}"));
            assert_eq!(&got[..], &out[..], "decoded to the reference's bytes");
        }
        None => match verify_stored(ChunkHash::of(b"unused"), codec, raw_len, stored_b.clone()) {
            Err(VerifyChunkError::Decode(..)) => {}
            other => panic!(
                "a chunk that does not decode to {raw_len} bytes was not refused as such: {other:?}"
            ),
        },
    }
    if let Some(h) = named
        && let Ok(got) = verify_stored(h, codec, raw_len, stored_b)
    {
        assert_eq!(got.len(), raw_len as usize);
        assert_eq!(ChunkHash::of(&got), h);
    }
}

fn check_pack(pack: &[u8]) {
    let Ok(blobs) = read_pack_trailer(pack) else {
        return;
    };
    let n = pack.len() as u64;
    let tlen = u64::from(u32::from_le_bytes(
        pack[pack.len() - 8..pack.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ));
    let start = n - 8 - tlen;
    for b in &blobs {
        let end = b.offset + u64::from(b.stored_length);
        assert!(
            b.offset >= 8 && end <= start,
            "blob {}..{end} outside the blob area 8..{start}",
            b.offset
        );
        assert!(b.raw_length <= MAX_CHUNK, "blob over the chunk limit");
        check_chunk(
            Some(b.hash),
            b.codec,
            b.raw_length,
            &pack[b.offset as usize..end as usize],
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => check_pack(rest),
        1 => {
            if rest.len() < 2 {
                return;
            }
            let area = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
            let (blobs, trailer) = rest[2..].split_at(area);
            let mut pack = MAGIC.to_vec();
            pack.extend_from_slice(&[1, 0, 0, 0]);
            pack.extend_from_slice(blobs);
            pack.extend_from_slice(trailer);
            pack.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
            pack.extend_from_slice(MAGIC);
            check_pack(&pack);
        }
        _ => {
            if rest.len() < 5 {
                return;
            }
            let codec = if rest[0] & 1 == 0 {
                Codec::Raw
            } else {
                Codec::Zstd
            };
            let raw_len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes"));
            check_chunk(None, codec, raw_len, &rest[5..]);
        }
    }
});
