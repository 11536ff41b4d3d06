//! State in S3-compatible object storage, across real processes (issue 17 §1): moto's S3
//! server on loopback holds the store. `snapshot` (packs over one part go up as multipart
//! uploads), `versions`, `restore`, `verify`, `gc` and `repair` work on it; two snapshots of
//! one resource racing get distinct versions (conditional puts); a coordinator serves it, one
//! agent reads its chunks straight from the store (`--data-source store`) and another through
//! the coordinator, both install the same verified bytes; a damaged pack is reported by
//! `verify` and never installed.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashSet;
use std::path::Path;

mod support;

use support::*;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn snapshot(store: &str, resource: &str, file: &Path) -> std::process::Output {
    run(&[
        "snapshot",
        "--store",
        store,
        "--resource",
        resource,
        file.to_str().unwrap(),
    ])
}

fn ensure(api: &str, resource: &str, data: &[u8]) {
    let (code, body) = http_get(api, &format!("/v1/states/{resource}?timeout_ms=20000"));
    assert_eq!(code, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["hit"], true, "{e}");
    assert!(std::fs::read(e["path"].as_str().unwrap()).unwrap() == data);
}

#[test]
fn a_store_in_s3_round_trips_and_agents_read_it_directly_or_through_the_coordinator() {
    let Some(s3) = s3_server("prewarm") else {
        return;
    };
    set_child_env(s3.env());
    let store = "s3://prewarm/fleet";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weights.bin");
    let mut data = noise(40 << 20, 7);
    std::fs::write(&file, &data).unwrap();

    // Round trip: 40 MiB in 16 MiB packs, each uploaded in 8 MiB parts.
    ok(&snapshot(store, "models/w", &file));
    let packs = s3.keys("fleet/data/");
    assert!(packs.len() >= 2, "{packs:?}");
    let log = s3.requests();
    let parts = log
        .lines()
        .filter(|l| l.contains("PUT /prewarm/fleet/data/") && l.contains("partNumber="))
        .count();
    assert!(
        log.contains("?uploads") && parts >= 4,
        "packs went up in parts: {log}"
    );
    let back = dir.path().join("back.bin");
    let out = run(&["restore", "--store", store, "--resource", "models/w"])
        .status
        .success();
    assert!(!out, "restore without a destination is refused");
    ok(&run(&[
        "restore",
        "--store",
        store,
        "--resource",
        "models/w",
        back.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&back).unwrap() == data);

    // Two snapshots of the same resource at once: the manifest's conditional put makes one
    // of them take the next version.
    data[..4096].copy_from_slice(&noise(4096, 8));
    std::fs::write(&file, &data).unwrap();
    let other = dir.path().join("other.bin");
    std::fs::write(&other, noise(1 << 20, 9)).unwrap();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| snapshot(store, "models/w", &file));
        let b = s.spawn(|| snapshot(store, "models/w", &other));
        (a.join().unwrap(), b.join().unwrap())
    });
    ok(&a);
    ok(&b);
    let versions = json(&run(&[
        "versions",
        "--store",
        store,
        "--resource",
        "models/w",
        "--json",
    ]));
    let listed: Vec<u64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [1, 2, 3], "{versions}");
    // One more edit on top, as v4 (whichever of the two above took v3).
    data[8192..12288].copy_from_slice(&noise(4096, 10));
    std::fs::write(&file, &data).unwrap();
    ok(&snapshot(store, "models/w", &file));

    let v = json(&run(&["verify", "--store", store, "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    let gc = json(&run(&[
        "gc", "--store", store, "--keep", "1", "--grace", "0s", "--json",
    ]));
    assert!(gc["manifests_deleted"].as_u64().unwrap() >= 3, "{gc}");
    let v = json(&run(&["verify", "--store", store, "--json"]));
    assert_eq!(v["ok"], true, "{v}");

    agents_read_directly_or_through_the_coordinator(&s3, store, &data);
    damage_is_found_and_never_installed(&s3, store);
}

/// A coordinator over the S3 store; one agent reads chunks from the store itself, the other
/// through the coordinator's data plane.
fn agents_read_directly_or_through_the_coordinator(s3: &S3, store: &str, data: &[u8]) {
    let c = Cluster::start_on(Some(store), &[]);
    let (api_s, api_c) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _s = c.agent("cap-s", &api_s, &["--data-source", "store"]);
    let _c = c.agent("cap-c", &api_c, &["--data-source", "coordinator"]);
    let direct = ack(&c.transfer("cap-s", "models/w", &[]));
    assert_eq!(direct["ok"], true, "{direct}");
    assert!(
        direct["store_bytes"].as_u64().unwrap() >= 40 << 20,
        "{direct}"
    );
    assert_eq!(direct["wire_bytes"], 0, "{direct}");
    let relayed = ack(&c.transfer("cap-c", "models/w", &[]));
    assert_eq!(relayed["ok"], true, "{relayed}");
    assert_eq!(relayed["store_bytes"], 0, "{relayed}");
    assert!(
        relayed["wire_bytes"].as_u64().unwrap() >= 40 << 20,
        "{relayed}"
    );
    ensure(&api_s, "models/w", data);
    ensure(&api_c, "models/w", data);
    let (_, m) = http_get(&api_s, "/metrics");
    assert!(metric(&m, "prewarm_agent_store_bytes_total") >= (40 << 20) as f64);

    // A resource committed after the agent opened the store: its index is refreshed.
    let late = c.path("late.bin");
    let late_data = noise(3 << 20, 11);
    std::fs::write(&late, &late_data).unwrap();
    ok(&snapshot(store, "models/late", &late));
    let a = ack(&c.transfer("cap-s", "models/late", &[]));
    assert_eq!(a["ok"], true, "{a}");
    assert!(a["store_bytes"].as_u64().unwrap() >= 3 << 20, "{a}");
    ensure(&api_s, "models/late", &late_data);
    assert!(!s3.keys("fleet/index/").is_empty());
}

/// A pack overwritten behind the store's back: `verify` says so (exit 1), an agent reading
/// it directly refuses to install it and serves nothing.
fn damage_is_found_and_never_installed(s3: &S3, store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fragile.bin");
    std::fs::write(&file, noise(2 << 20, 12)).unwrap();
    let before: HashSet<String> = s3.keys("fleet/data/").into_iter().collect();
    ok(&snapshot(store, "models/fragile", &file));
    let new: Vec<String> = s3
        .keys("fleet/data/")
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(new.len(), 1, "one new pack: {new:?}");
    let c = Cluster::start_on(Some(store), &[]);
    let api = format!("127.0.0.1:{}", free_port());
    let _a = c.agent("cap-d", &api, &["--data-source", "store"]);
    // Same size, other bytes: only the checksums can tell.
    s3.put_raw(&new[0], &noise(s3.size(&new[0]), 13));
    let out = run(&["verify", "--store", store, "--json"]);
    assert_eq!(out.status.code(), Some(1), "damage found: exit 1");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    let failed = ack(&c.transfer("cap-d", "models/fragile", &[]));
    assert_eq!(failed["ok"], false, "{failed}");
    assert!(held(&c.url, "cap-d").is_empty());
    let (code, _) = http_get(&api, "/v1/states/models/fragile?timeout_ms=100");
    assert_ne!(code, 200, "a damaged state is never served");
}
