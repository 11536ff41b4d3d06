//! The envelope and manifest decoders (and the index, which shares the envelope):
//! `Manifest::decode`, `Manifest::decode_raw` + `RawManifest::resolve` (deltas, against a
//! fixed base), `ChunkIndex::decode`.
//!
//! First byte: how the rest is presented.
//! - 0: as a whole object, as read from a store or a peer;
//! - 1: as a whole object with its checksum field recomputed, so fuzzed header fields
//!   (version, flags, length) and bodies get past the checksum;
//! - 2, 3: as a manifest's protobuf body, sealed plain (2) or zstd-compressed (3);
//! - 4: as an index's protobuf body, sealed plain.
//!
//! Properties: nothing panics; a decoded manifest re-encodes to an object that decodes to
//! itself, and encoding is canonical (encode ∘ decode ∘ encode = encode); a delta resolved
//! against the base equals its full re-encoding; a decoded index re-encodes to the same
//! packs and blobs.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prewarm_fuzz::{INDEX_MAGIC, MANIFEST_MAGIC, fix_checksum, seal};
use prewarm_store::{ChunkIndex, Manifest};

/// The fixture state's manifest (version 1): the base any delta is resolved against.
fn base() -> &'static Manifest {
    static BASE: OnceLock<Manifest> = OnceLock::new();
    BASE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        prewarm_fuzz::MemFixture::new(&rt).manifest
    })
}

/// Full re-encoding round trip and canonical form.
fn check_manifest(m: &Manifest) {
    let bytes = m.encode();
    let back = Manifest::decode(&bytes).expect("a decoded manifest re-encodes to a valid one");
    let mut full = m.clone();
    full.delta_base = None;
    full.chain_depth = 0;
    assert_eq!(back, full, "re-encoded manifest decodes to itself");
    assert_eq!(back.encode(), bytes, "encoding is canonical");
    let covered: u64 = m.chunks.iter().map(|c| u64::from(c.length)).sum();
    assert_eq!(covered, m.logical_size, "chunks tile the logical size");
}

fn check_index(data: &[u8]) {
    let Ok(idx) = ChunkIndex::decode(data) else {
        return;
    };
    // Every chunk the index answers for lies in a pack it lists, where that pack says.
    let mut distinct = std::collections::HashSet::new();
    for blobs in idx.packs().values() {
        for b in blobs {
            distinct.insert(b.hash);
            let loc = idx.get(&b.hash).expect("a listed blob is indexed");
            let listed = idx.packs().get(&loc.pack).expect("its pack is listed");
            assert!(
                listed
                    .iter()
                    .any(|x| x.hash == b.hash && x.offset == loc.offset),
                "the index points where its pack lists the blob"
            );
        }
    }
    assert_eq!(
        idx.len(),
        distinct.len(),
        "the index holds only listed chunks"
    );
    let again = ChunkIndex::encode(idx.packs());
    let back = ChunkIndex::decode(&again).expect("a decoded index re-encodes to a valid one");
    assert_eq!(back.packs().len(), idx.packs().len());
    for (id, blobs) in idx.packs() {
        let other = back.packs().get(id).expect("same packs");
        assert_eq!(format!("{blobs:?}"), format!("{other:?}"), "same blobs");
    }
}

fn decode_all(obj: &[u8]) {
    if let Ok(m) = Manifest::decode(obj) {
        check_manifest(&m);
    }
    if let Ok(raw) = Manifest::decode_raw(obj) {
        let wants_base = raw.base();
        if let Ok(m) = raw.resolve(Some(base())) {
            if m.delta_base.is_some() {
                assert_eq!(wants_base.map(|s| s.version), m.delta_base);
            }
            check_manifest(&m);
        }
    }
    check_index(obj);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => decode_all(rest),
        1 => {
            let mut obj = rest.to_vec();
            fix_checksum(&mut obj);
            decode_all(&obj);
        }
        2 => decode_all(&seal(MANIFEST_MAGIC, 2, 0, rest)),
        3 => {
            let z = zstd::bulk::compress(rest, 1).expect("zstd compresses anything");
            decode_all(&seal(MANIFEST_MAGIC, 2, 1, &z));
        }
        _ => check_index(&seal(INDEX_MAGIC, 2, 0, rest)),
    }
});
