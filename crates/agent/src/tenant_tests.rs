//! Tenant-scoped tokens on the agent's HTTP API over a real loopback socket: each tenant
//! ensures its own states and gets 403 on the other's (the same whether the state exists or
//! not, and before anything is fetched), leases and the inventory are the tenant's own,
//! `/metrics` needs `admin`, and the shared token keeps every right.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use prewarm_transfer::tokens::token_hash;
use prewarm_transfer::{Faults, Keys, Token, Tokens};

use crate::client::{ClientError, EnsureClient};
use crate::tests::{agent, env, id, noise, serve, serve_api};

const ACME: &str = "acme-secret-0123456789";
const BETA: &str = "beta-secret-0123456789";
const EVENTS_ONLY: &str = "acme-events-0123456789";
const SHARED: &str = "shared-secret-0123456789";

fn keys() -> Arc<Keys> {
    let entry = |name: &str, secret: &str, prefixes: &str, caps: &str| {
        format!(
            "[[token]]\nname = {name:?}\nhash = {:?}\nprefixes = {prefixes}\ncaps = {caps}\n",
            token_hash(secret)
        )
    };
    let text = [
        entry("acme", ACME, r#"["tenants/acme/"]"#, r#"["ensure"]"#),
        entry(
            "beta",
            BETA,
            r#"["tenants/beta"]"#,
            r#"["ensure", "events"]"#,
        ),
        entry(
            "acme-events",
            EVENTS_ONLY,
            r#"["tenants/acme/"]"#,
            r#"["events"]"#,
        ),
    ]
    .concat();
    let tokens = Tokens::parse(&text, std::path::Path::new("tokens.toml")).unwrap();
    Arc::new(Keys::new(Some(Token::new(SHARED).unwrap()), Some(tokens)))
}

/// An `{error, message}` answer's status, kind and message.
fn refusal<T: std::fmt::Debug>(got: Result<T, ClientError>) -> (u16, String, String) {
    match got {
        Err(ClientError::Api {
            status,
            kind,
            message,
        }) => (status, kind, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The other tenant's states: 403 whether they exist, are held here, or never existed — the
/// same kind and message but for the name; no ensure capability: 403; no or a wrong token: 401.
async fn refusals_name_nothing_of_the_other(
    acme: &EnsureClient,
    beta: &EnsureClient,
    events_only: &EnsureClient,
    client: &impl Fn(Option<&str>) -> EnsureClient,
) {
    // The other's: 403 whether it exists, is held here, or never existed — same kind and
    // the same message but for the name.
    let mut messages = Vec::new();
    for (c, r) in [
        (acme, "tenants/beta/y"),
        (acme, "tenants/beta/none"),
        (acme, "tenants/acme-evil/x"),
        (beta, "tenants/acme/x"),
        (beta, "tenants/acme/none"),
    ] {
        let (status, kind, message) = refusal(c.ensure(&id(r), None, Some(1_000)).await);
        assert_eq!(
            (status, kind.as_str()),
            (403, "forbidden"),
            "{r}: {message}"
        );
        messages.push(
            message
                .replace(r, "R")
                .replace("acme", "T")
                .replace("beta", "T"),
        );
    }
    assert!(messages.iter().all(|m| *m == messages[0]), "{messages:?}");
    // A token without the ensure capability, none, a wrong one.
    let (status, kind, message) =
        refusal(events_only.ensure(&id("tenants/acme/x"), None, None).await);
    assert_eq!((status, kind.as_str()), (403, "forbidden"));
    assert!(message.contains("ensure capability"), "{message}");
    for c in [client(None), client(Some("wrong-secret-0123456789"))] {
        let (status, ..) = refusal(c.ensure(&id("tenants/acme/x"), None, None).await);
        assert_eq!(status, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_ensures_its_own_states_and_nothing_of_the_others() {
    let e = env().await;
    for (r, seed) in [("tenants/acme/x", 1), ("tenants/beta/y", 2)] {
        e.snap
            .commit_bytes(&id(r), Bytes::from(noise(1 << 20, seed)))
            .await
            .unwrap();
    }
    let a = agent(&e.cache, 1 << 30, serve(&e.store, Faults::default()).await);
    let addr = serve_api(&a, keys()).await;
    let client = |secret: Option<&str>| {
        EnsureClient::new(
            addr.clone(),
            secret.map(|s| Token::new(s).unwrap()).as_ref(),
        )
    };
    let (acme, beta, events_only, shared) = (
        client(Some(ACME)),
        client(Some(BETA)),
        client(Some(EVENTS_ONLY)),
        client(Some(SHARED)),
    );

    // Each tenant its own state.
    let x = acme
        .ensure(&id("tenants/acme/x"), None, Some(10_000))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&x.path).unwrap(), noise(1 << 20, 1));
    let y = beta
        .ensure(&id("tenants/beta/y"), None, Some(10_000))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&y.path).unwrap(), noise(1 << 20, 2));

    refusals_name_nothing_of_the_other(&acme, &beta, &events_only, &client).await;

    // Leases: the other tenant's lease id reads as unknown; the owner's works.
    let acme_lease = x.lease.unwrap();
    let (status, kind, _) = refusal(beta.put(&format!("/v1/leases/{acme_lease}")).await);
    assert_eq!((status, kind.as_str()), (404, "unknown_lease"));
    let (status, ..) = refusal(beta.delete(&format!("/v1/leases/{acme_lease}")).await);
    assert_eq!(status, 404);
    acme.put(&format!("/v1/leases/{acme_lease}")).await.unwrap();

    // The inventory: each tenant sees its own states; the shared token all.
    let names = |inv: prewarm_api::InventoryAnswer| {
        let mut v: Vec<String> = inv.states.into_iter().map(|s| s.resource).collect();
        v.sort();
        v
    };
    assert_eq!(names(acme.inventory().await.unwrap()), ["tenants/acme/x"]);
    assert_eq!(names(beta.inventory().await.unwrap()), ["tenants/beta/y"]);
    assert_eq!(
        names(shared.inventory().await.unwrap()),
        ["tenants/acme/x", "tenants/beta/y"]
    );

    // /metrics needs admin (the shared token has every capability).
    let (status, _, message) = refusal(acme.get("/metrics").await);
    assert_eq!(status, 403);
    assert!(message.contains("admin"), "{message}");
    let text = String::from_utf8(shared.get("/metrics").await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains("prewarm_agent_forbidden_total{route=\"ensure\"} 6"),
        "five out-of-scope ensures and one without the capability: {text}"
    );
    assert!(
        text.contains("prewarm_agent_forbidden_total{route=\"admin\"} 1"),
        "{text}"
    );
    // Nothing of another tenant was fetched by a refused call.
    assert!(
        !a.inventory()
            .0
            .iter()
            .any(|(h, _)| h.resource.as_str().contains("none"))
    );
    // The shared token ensures anything.
    let again = shared
        .ensure(&id("tenants/acme/x"), None, None)
        .await
        .unwrap();
    assert!(again.hit);
}
