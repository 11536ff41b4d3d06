//! Property tests of the store's decoders (the CI part of issue 13 §3): random, truncated
//! and bit-flipped inputs to the envelope, manifest, index, pack-trailer and chunk decoders
//! never panic and never allocate by an untrusted length; a damaged checksummed object is
//! always refused; what is encoded decodes to itself.

use proptest::collection::vec;
use proptest::prelude::*;

use prewarm_core::{ChunkHash, ResourceId, StateRef, Version};

use crate::manifest::{ChunkRef, ChunkerParams, SourceKind};
use crate::pack::{PackBuilder, read_trailer};
use crate::{ChunkIndex, Codec, Manifest, codec, envelope};

const M: &[u8; 4] = b"PROP";

/// A buffer manifest of `lens.len()` chunks of those lengths.
fn manifest(version: u64, lens: &[u32]) -> Manifest {
    let mut offset = 0;
    let chunks = lens
        .iter()
        .enumerate()
        .map(|(i, len)| {
            let c = ChunkRef {
                hash: ChunkHash::of(&(i as u64).to_le_bytes()),
                offset,
                length: *len,
                stored_length: *len,
                codec: Codec::Raw,
                fingerprint: i as u64,
            };
            offset += u64::from(*len);
            c
        })
        .collect();
    Manifest {
        state: StateRef {
            resource: ResourceId::new("prop/state").expect("valid id"),
            version: Version::new(version).expect("non-zero"),
        },
        parent: None,
        created_unix_ms: 1,
        logical_size: offset,
        kind: SourceKind::Buffer,
        chunks,
        tree: Vec::new(),
        chunker: ChunkerParams::with_avg(4096).expect("valid chunker"),
        delta_base: None,
        chain_depth: 0,
    }
}

/// A sealed pack of `chunks` (some compressible) and its trailer's blob count.
fn pack(chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut b = PackBuilder::new(1 << 16);
    for c in chunks {
        let (codec, stored) = match codec::encode_level(3, c) {
            Some(z) => (Codec::Zstd, z),
            None => (Codec::Raw, c.clone()),
        };
        b.push(ChunkHash::of(c), codec, c.len() as u32, &stored);
    }
    b.finish().1
}

/// `data` with one bit flipped at `at` (a position anywhere in it).
fn flipped(data: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut v = data.to_vec();
    let i = at % v.len();
    v[i] ^= 1 << (bit % 8);
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_any_decoder(data in vec(any::<u8>(), 0..2048)) {
        let _ = envelope::open(M, &data, 1 << 20);
        let _ = Manifest::decode(&data);
        let _ = ChunkIndex::decode(&data);
        let _ = read_trailer(&data);
        let _ = codec::decode(Codec::Zstd, &data, 4096);
        let _ = codec::decode(Codec::Raw, &data, data.len());
    }

    #[test]
    fn an_envelope_opens_to_its_body_and_refuses_any_flip(
        body in vec(any::<u8>(), 0..6000),
        repeat in 1usize..4,
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let body = body.repeat(repeat); // repeated bodies are compressed
        let sealed = envelope::seal(M, &body);
        prop_assert_eq!(&envelope::open(M, &sealed, 1 << 20).unwrap()[..], &body[..]);
        prop_assert!(envelope::open(M, &flipped(&sealed, at, bit), 1 << 20).is_err());
        let cut = at % sealed.len();
        prop_assert!(envelope::open(M, &sealed[..cut], 1 << 20).is_err());
    }

    #[test]
    fn a_manifest_round_trips_and_damage_is_refused(
        lens in vec(1u32..100_000, 1..64),
        version in 1u64..1_000_000,
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let m = manifest(version, &lens);
        let bytes = m.encode();
        prop_assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        prop_assert!(Manifest::decode(&flipped(&bytes, at, bit)).is_err());
        prop_assert!(Manifest::decode(&bytes[..at % bytes.len()]).is_err());
    }

    #[test]
    fn a_pack_trailer_reads_back_and_damage_never_panics(
        chunks in vec(vec(0u8..4, 1..3000), 1..16),
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let p = pack(&chunks);
        let blobs = read_trailer(&p).unwrap();
        prop_assert_eq!(blobs.len(), chunks.len());
        for (b, c) in blobs.iter().zip(&chunks) {
            let stored = &p[b.offset as usize..(b.offset + u64::from(b.stored_length)) as usize];
            prop_assert_eq!(&codec::decode(b.codec, stored, b.raw_length as usize).unwrap(), c);
        }
        // A damaged trailer either fails to read or names blobs inside the pack; what such a
        // blob decodes to is then refused by its hash (the chunk reader checks every one).
        let bad = flipped(&p, at, bit);
        if let Ok(blobs) = read_trailer(&bad) {
            for b in blobs {
                prop_assert!(b.offset + u64::from(b.stored_length) <= bad.len() as u64);
                prop_assert!(b.raw_length <= crate::MAX_CHUNK_LEN);
            }
        }
    }

    #[test]
    fn a_chunk_decodes_only_to_its_length(
        raw in vec(0u8..3, 0..20_000),
        claimed in any::<u32>(),
        at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let Some(z) = codec::encode_level(3, &raw) else { return Ok(()) };
        prop_assert_eq!(codec::decode(Codec::Zstd, &z, raw.len()).unwrap(), raw.clone());
        // Any other length is refused, and a claimed length over the chunk limit allocates
        // nothing (a decompression bomb by its header).
        if claimed as usize != raw.len() {
            prop_assert!(codec::decode(Codec::Zstd, &z, claimed as usize).is_err());
        }
        if let Ok(out) = codec::decode(Codec::Zstd, &flipped(&z, at, bit), raw.len()) {
            prop_assert_eq!(out.len(), raw.len()); // the hash check then decides
        }
    }
}

/// A trailer naming a blob at the very end of the offset range is refused, not overflowed.
#[test]
fn a_blob_offset_near_the_end_of_the_range_is_refused() {
    use prewarm_proto::{Message, store as pb};
    for (offset, len) in [(u64::MAX, 1), (u64::MAX - 4, 100), (9, u32::MAX)] {
        let trailer = pb::PackEntries {
            pack_id: Default::default(),
            blobs: vec![pb::BlobEntry {
                hash: vec![7; 32].into(),
                offset,
                stored_length: len,
                raw_length: 1,
                codec: Codec::Raw.to_pb(),
            }],
        }
        .encode_to_vec();
        let mut p = b"PWPK\x01\x00\x00\x00".to_vec();
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&trailer);
        p.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        p.extend_from_slice(b"PWPK");
        assert!(read_trailer(&p).is_err(), "offset {offset}, length {len}");
    }
}
