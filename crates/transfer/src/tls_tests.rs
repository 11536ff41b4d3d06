//! The data plane over mutual TLS on real loopback sockets: a client whose certificate the
//! fleet's CA signed fetches and verifies a whole state; one without a certificate, and a
//! plain-text client, are refused before their hello is read, and counted.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use prewarm_metrics::Registry;
use prewarm_tls::testing::Pki;

use crate::tests::{committed_store, fetch_all};
use crate::{Connection, DataAddr, DataError, DataServer};

#[tokio::test]
async fn over_mutual_tls_only_clients_the_ca_signed_fetch_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let (store, r, data) = committed_store().await;
    let registry = Registry::default();
    let acceptor = prewarm_tls::Acceptor::load(&pki.server(&pki.issue("coord"), true)).unwrap();
    let s = Arc::new(DataServer::new(store, None, "t".into(), &registry).with_tls(acceptor));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = DataAddr::Tcp(l.local_addr().unwrap().to_string());
    tokio::spawn(s.serve_tcp(l));

    let agent = prewarm_tls::Connector::load(&pki.client(Some(&pki.issue("agent")))).unwrap();
    let mut c = Connection::connect_tls(&addr, None, Some(&agent))
        .await
        .unwrap();
    let m = c.manifest(&r, None).await.unwrap();
    assert_eq!(fetch_all(&mut c, &m.chunks).await, data);

    let anonymous = prewarm_tls::Connector::load(&pki.client(None)).unwrap();
    let e = Connection::connect_tls(&addr, None, Some(&anonymous))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(e, DataError::Connect { .. } | DataError::PeerGone(_)),
        "{e:?}"
    );
    let e = Connection::connect(&addr, None).await.err().unwrap();
    assert!(
        matches!(e, DataError::Connect { .. } | DataError::PeerGone(_)),
        "{e:?}"
    );
    // Both refusals counted (the server may still be counting the second).
    let refused = || {
        registry
            .render()
            .lines()
            .find(|l| l.starts_with("prewarm_data_refused_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for _ in 0..100 {
        if refused() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(refused(), 2);
}
