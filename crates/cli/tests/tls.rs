//! Mutual TLS across real processes (issue 13 §4): a coordinator and an agent started with
//! `--tls-cert/--tls-key/--tls-client-ca` from one test CA. The agent attaches over TLS
//! (gRPC and the data plane's TCP), `prewarm transfer` and `status` reach the coordinator
//! with an operator's certificate, and the state arrives whole and is ensured over HTTPS. A
//! client without a certificate, with another CA's, or speaking plain HTTP is refused on
//! both ports, and the chunks went through TLS (none by `sendfile`).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;

use prewarm_tls::testing::{Identity, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::*;

fn tls_args<'a>(ca: &'a Path, id: &'a Identity) -> Vec<&'a str> {
    vec![
        "--tls-ca",
        ca.to_str().unwrap(),
        "--tls-cert",
        id.cert.to_str().unwrap(),
        "--tls-key",
        id.key.to_str().unwrap(),
    ]
}

/// `GET path` over TLS with `c` (status and body), or the error of the exchange.
fn https_get(addr: &str, c: &prewarm_tls::Connector, path: &str) -> std::io::Result<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut s = c.connect("127.0.0.1", tcp).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let out = String::from_utf8_lossy(&out).into_owned();
        let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((code, body))
    })
}

#[test]
fn mutual_tls_carries_control_data_and_api_and_refuses_clients_without_a_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let rogue = Pki::new(dir.path(), "rogue");
    let (coord, agent, operator) = (
        pki.issue("coordinator"),
        pki.issue("agent"),
        pki.issue("op"),
    );
    let ca = pki.ca();
    let store = dir.path().join("store");
    let file = dir.path().join("weights.bin");
    let data = noise(6 << 20, 7);
    std::fs::write(&file, &data).unwrap();
    let out = run(&[
        "snapshot",
        "--store",
        store.to_str().unwrap(),
        "--resource",
        "models/w",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (port, data_port) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{port}");
    let server = |id: &Identity| -> Vec<String> {
        [
            "--tls-cert",
            id.cert.to_str().unwrap(),
            "--tls-key",
            id.key.to_str().unwrap(),
            "--tls-client-ca",
            ca.to_str().unwrap(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut args: Vec<String> = [
        "coordinator",
        "--store",
        store.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-listen",
        &format!("127.0.0.1:{data_port}"),
        "--data-unix",
        "none",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(server(&coord));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _coordinator = spawn(&args, &dir.path().join("coordinator.log"));
    let op = tls_args(&ca, &operator);
    let status =
        |extra: &[&str]| run(&[&["status", "--coordinator", &url, "--json"], extra].concat());
    wait_until("the coordinator to answer over TLS", 20, || {
        status(&op).status.success()
    });

    // Refused at the coordinator: no client certificate, another CA's, plain HTTP, and a
    // client that does not trust the coordinator's CA.
    let refused = |extra: &[&str], url: &str| {
        let out = run(&[&["status", "--coordinator", url], extra].concat());
        assert!(!out.status.success(), "{extra:?} {url}: served");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    refused(&["--tls-ca", ca.to_str().unwrap()], &url);
    let stranger = rogue.issue("stranger");
    refused(&tls_args(&ca, &stranger), &url);
    refused(&[], &format!("http://127.0.0.1:{port}"));
    let e = refused(&tls_args(&rogue.ca(), &operator), &url);
    assert!(e.contains("cannot reach the coordinator"), "{e}");
    let e = refused(&[], &url);
    assert!(e.contains("--tls-ca"), "{e}");

    // The agent: attaches over TLS, serves its API over mutual TLS.
    let api = format!("127.0.0.1:{}", free_port());
    let cache = dir.path().join("cap-a");
    let mut args: Vec<String> = [
        "agent",
        "--coordinator",
        &url,
        "--name",
        "cap-a",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--listen",
        &api,
        "--data-path",
        "tcp",
        "--tls-ca",
        ca.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(server(&agent));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _agent = spawn(&args, &dir.path().join("agent.log"));
    wait_until("the agent to attach over TLS", 20, || {
        let out = status(&op);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"connected\":true")
    });

    let out = run(&[
        &[
            "transfer",
            "--coordinator",
            &url,
            "--capacity",
            "cap-a",
            "--resource",
            "models/w",
            "--json",
        ],
        op.as_slice(),
    ]
    .concat());
    let a = ack(&out);
    assert!(out.status.success() && a["ok"] == true, "{a}");

    let client = prewarm_tls::Connector::load(&pki.client(Some(&operator))).unwrap();
    let (code, body) = https_get(
        &api,
        &client,
        "/v1/states/models/w?min_version=1&timeout_ms=5000",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["hit"], true, "{e}");
    assert_eq!(std::fs::read(e["path"].as_str().unwrap()).unwrap(), data);

    // The Rust client over TLS: the same state, hit.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = prewarm_core::ResourceId::new("models/w").unwrap();
    let rust = prewarm_agent::client::EnsureClient::new(api.clone(), None).with_tls(client.clone());
    let e = rt.block_on(rust.ensure(&r, Some(1), Some(5000))).unwrap();
    assert!(e.hit && std::fs::read(&e.path).unwrap() == data);
    let bare = prewarm_agent::client::EnsureClient::new(api.clone(), None)
        .with_tls(prewarm_tls::Connector::load(&pki.client(None)).unwrap());
    assert!(rt.block_on(bare.ensure(&r, None, Some(1000))).is_err());

    // The agent's API refuses a client without a certificate and plain HTTP.
    let anonymous = prewarm_tls::Connector::load(&pki.client(None)).unwrap();
    assert!(https_get(&api, &anonymous, "/v1/states/models/w").is_err());
    let (code, _) = http_get_or_zero(&api);
    assert_eq!(code, 0, "plain HTTP answered on a TLS port");

    // The chunks went over TLS: sent, and none by sendfile (it cannot encrypt).
    let (code, metrics) = https_get(&format!("127.0.0.1:{port}"), &client, "/metrics").unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metric(&metrics, "prewarm_data_sent_bytes_total") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "prewarm_data_sent_zero_copy_bytes_total"),
        0.0
    );
}

/// A plain HTTP GET's status, 0 when the server closed without an HTTP answer.
fn http_get_or_zero(addr: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let _ = write!(
        s,
        "GET /v1/states/models/w HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let code = out
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3)?.parse().ok())
        .unwrap_or(0);
    (code, out)
}
