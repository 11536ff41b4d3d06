//! Runs (`CHUNK_RUNS` answered by `RUN` frames sent with `sendfile`) over real loopback
//! sockets from a local store: every chunk arrives and verifies, zero-copy is counted, a
//! damaged pack byte is caught by the receiver, a truncated pack falls back to the store's
//! read and its error; and malformed `RUN` frames are refused.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use prewarm_metrics::Registry;
use prewarm_store::{ChunkRef, Codec, Store};
use tokio::sync::mpsc;

use crate::frame::Code;
use crate::tests::{failing, fetch_all, flip_stored_byte, same_content, setup_local};
use crate::{Connection, DataAddr, DataError, DataServer};

/// A TCP data plane over `store`, and its metrics.
async fn tcp_server(store: Arc<Store>) -> (DataAddr, Registry) {
    let reg = Registry::default();
    let s = Arc::new(DataServer::new(store, None, "t".into(), &reg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = DataAddr::Tcp(l.local_addr().unwrap().to_string());
    tokio::spawn(s.serve_tcp(l));
    (addr, reg)
}

fn counter(reg: &Registry, name: &str) -> u64 {
    let text = reg.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

#[tokio::test]
async fn runs_carry_every_chunk_without_a_copy_over_tcp_and_unix_sockets() {
    let (dir, _, store, states, _) = setup_local(None).await;
    let (tcp, reg) = tcp_server(store.clone()).await;
    let unix = DataAddr::Unix(dir.path().join("d.sock"));
    for addr in [tcp, unix] {
        let mut c = Connection::connect(&addr, None).await.unwrap();
        for (r, data) in &states {
            let m = c.manifest(r, None).await.unwrap();
            assert_eq!(&fetch_all(&mut c, &m.chunks).await, data, "{addr}");
        }
    }
    // Everything the TCP server sent went by sendfile.
    let sent = counter(&reg, "prewarm_data_sent_bytes_total");
    assert!(sent > 5_000_000, "{sent}");
    assert_eq!(
        counter(&reg, "prewarm_data_sent_zero_copy_bytes_total"),
        sent
    );
}

#[tokio::test]
async fn a_damaged_pack_byte_sent_in_a_run_fails_verification_of_that_chunk_only() {
    let (_dir, _, store, states, _) = setup_local(None).await;
    let (addr, _) = tcp_server(store.clone()).await;
    let mut c = Connection::connect(&addr, None).await.unwrap();
    let m = c.manifest(&states[0].0, None).await.unwrap();
    flip_stored_byte(&store, m.chunks[5].hash, 3, 0x10);
    let bad = failing(&mut c, &m.chunks).await;
    let want = same_content(&m.chunks, 5);
    assert_eq!(bad, want);
}

#[tokio::test]
async fn a_truncated_pack_is_read_through_the_store_and_reported_not_sent_short() {
    let (_dir, _, store, states, _) = setup_local(None).await;
    let (addr, reg) = tcp_server(store.clone()).await;
    let mut c = Connection::connect(&addr, None).await.unwrap();
    let m = c.manifest(&states[1].0, None).await.unwrap();
    let last = m.chunks.last().unwrap();
    let loc = store.locate(&[last.hash]).unwrap()[0];
    let path = store.pack_file(&loc.pack).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(loc.offset + 1).unwrap();
    let (tx, _rx) = mpsc::channel(64);
    match c.fetch(&m.chunks, None, &tx).await {
        Err(DataError::Refused {
            code: Code::Store, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(counter(&reg, "prewarm_data_sent_zero_copy_bytes_total"), 0);
}

fn refs(lengths: &[u32]) -> Vec<ChunkRef> {
    let mut off = 0;
    lengths
        .iter()
        .map(|&l| {
            let r = ChunkRef {
                hash: prewarm_core::ChunkHash::of(&l.to_le_bytes()),
                offset: off,
                length: l,
                stored_length: l,
                codec: Codec::Raw,
                fingerprint: 0,
            };
            off += u64::from(l);
            r
        })
        .collect()
}

fn body(entries: &[(u8, u32, u32)], payload: usize) -> Bytes {
    let mut b = (entries.len() as u32).to_le_bytes().to_vec();
    for (codec, raw, stored) in entries {
        b.push(*codec);
        b.extend_from_slice(&raw.to_le_bytes());
        b.extend_from_slice(&stored.to_le_bytes());
    }
    b.extend(std::iter::repeat_n(7u8, payload));
    Bytes::from(b)
}

#[test]
fn run_frames_are_sliced_by_their_table_and_malformed_ones_refused() {
    let refs = refs(&[4, 6, 5]);
    let raw = Codec::Raw.to_u8();
    // Two chunks of three, then the third.
    let mut want = 0..3;
    let got = crate::runs::parse(body(&[(raw, 4, 4), (raw, 6, 6)], 10), &mut want, &refs).unwrap();
    assert_eq!(
        got.iter()
            .map(|r| (r.index, r.stored.len()))
            .collect::<Vec<_>>(),
        [(0, 4), (1, 6)]
    );
    assert_eq!(want, 2..3);
    let bad = [
        (body(&[(raw, 4, 4)], 4), 0..0, "chunks where 0 are due"),
        (body(&[], 0), 0..3, "0 chunks"),
        (Bytes::from_static(&[1, 0]), 0..3, "shorter than its count"),
        (body(&[(raw, 4, 4)], 3), 0..3, "shorter than its chunks"),
        (body(&[(raw, 4, 4)], 5), 0..3, "after its chunks"),
        (body(&[(raw, 9, 4)], 4), 0..3, "the manifest says 4"),
        (body(&[(99, 4, 4)], 4), 0..3, "unknown codec"),
        (
            body(&[(raw, 4, 4), (raw, 6, 6)], 10).slice(..8),
            0..3,
            "table",
        ),
    ];
    for (b, mut want, why) in bad {
        match crate::runs::parse(b, &mut want, &refs) {
            Err(DataError::Protocol(m)) => assert!(m.contains(why), "{m} ≠ {why}"),
            other => panic!("{why}: {:?}", other.map(|v| v.len())),
        }
    }
}
