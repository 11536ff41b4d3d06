//! The agent's side of the control plane: attach to the coordinator (gRPC), learn the data
//! plane's address from `Welcome`, carry out `Load` commands and acknowledge them, react to
//! `Invalidate`, report the inventory whenever it changes; reattach with backoff when the
//! coordinator goes away (held states keep being served meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prewarm_core::{ResourceId, Version};
use prewarm_proto::wire::{
    self, AttachRequest, FailureKind, Inventory, StateVersion, TransferAck, command,
    coordinator_client::CoordinatorClient,
};
use prewarm_transfer::{DataAddr, Token};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::agent::{Agent, DataPath, Priority, Source, VersionReq};

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A control-plane client.
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerAuth>>;

/// Connects to the coordinator at `url`: `http://host:port`, or `https://host:port` over TLS
/// with `tls` (the coordinator's certificate verified for `host`, the client's presented
/// when it has one).
pub async fn connect(
    url: &str,
    token: Option<&Token>,
    tls: Option<&prewarm_tls::Connector>,
) -> Result<Client, String> {
    let plain = match (url.strip_prefix("https://"), tls) {
        (Some(rest), Some(_)) => format!("http://{rest}"),
        (Some(_), None) => {
            return Err(format!(
                "{url}: https needs the CA that signed the coordinator's certificate (--tls-ca)"
            ));
        }
        (None, Some(_)) => {
            return Err(format!(
                "{url}: TLS is configured (--tls-ca), so the coordinator URL must be https://"
            ));
        }
        (None, None) => url.to_owned(),
    };
    let ep = Endpoint::from_shared(plain)
        .map_err(|e| format!("invalid coordinator URL {url}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let ch = match tls {
        None => ep.connect().await,
        Some(c) => ep.connect_with_connector(tls_connector(c.clone())).await,
    }
    .map_err(|e| format!("cannot reach the coordinator at {url}: {e}"))?;
    let auth = match token {
        Some(t) => Some(
            format!("Bearer {}", t.expose())
                .parse()
                .map_err(|_| "the token is not a valid header value".to_owned())?,
        ),
        None => None,
    };
    Ok(CoordinatorClient::with_interceptor(ch, BearerAuth(auth))
        .max_decoding_message_size(64 << 20))
}

/// [`connect`] with `agent`'s token and TLS settings.
async fn dial(agent: &Agent, url: &str) -> Result<Client, String> {
    let cfg = agent.config();
    connect(url, cfg.token.as_ref(), cfg.tls.as_ref()).await
}

/// Dials TCP and runs the TLS handshake (ALPN `h2`) for tonic's channel.
fn tls_connector(
    c: prewarm_tls::Connector,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<prewarm_tls::ClientStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let c = c.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let tcp =
                tokio::net::TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(443)))
                    .await?;
            let _ = tcp.set_nodelay(true);
            Ok(hyper_util::rt::TokioIo::new(
                c.connect_h2(&host, tcp).await?,
            ))
        }
    })
}

/// The inventory message of `agent`.
pub fn inventory(agent: &Agent) -> Inventory {
    let (held, used, budget) = agent.inventory();
    Inventory {
        capacity: agent.config().name.as_str().to_owned(),
        held: held
            .into_iter()
            .map(|(h, stale)| StateVersion {
                leased: agent.leased(&h.resource, h.version),
                resource: h.resource.as_str().to_owned(),
                version: h.version.get(),
                bytes: h.bytes,
                stale,
            })
            .collect(),
        cache_used: used,
        cache_budget: budget,
        horizon_s: agent.horizon(),
        departed: departed(agent, 16),
    }
}

/// The newest `n` departures of `agent` on the wire.
pub fn departed(agent: &Agent, n: usize) -> Vec<prewarm_proto::wire::Departed> {
    agent
        .departures(n)
        .into_iter()
        .map(|(r, d)| prewarm_proto::wire::Departed {
            resource: r.as_str().to_owned(),
            version: d.version().map_or(0, Version::get),
            kind: d.kind().to_owned(),
            reason: d.cause(),
            unix_ms: d.unix_ms,
        })
        .collect()
}

/// The receiver of loads the agent started itself, shared by successive attach sessions.
type Finishing =
    Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<crate::agent::Finished>>>;

/// Sends the agent's history batches to the coordinator's model, reconnecting as needed; a
/// batch that cannot be delivered is dropped with a warning (the file keeps it).
async fn send_history(agent: Arc<Agent>, url: String) {
    let Some(mut feed) = agent.history().take_feed() else {
        return;
    };
    let mut client: Option<Client> = None;
    while let Some(batch) = feed.recv().await {
        let mut jsonl = Vec::new();
        {
            let mut w = prewarm_core::HistoryWriter::new(&mut jsonl);
            if batch.iter().try_for_each(|r| w.write(r)).is_err() {
                continue;
            }
        }
        if client.is_none() {
            client = dial(&agent, &url).await.ok();
        }
        let Some(c) = client.as_mut() else {
            tracing::warn!(
                "history: coordinator unreachable, {} records not sent",
                batch.len()
            );
            continue;
        };
        let req = wire::HistoryBatch {
            capacity: agent.config().name.as_str().to_owned(),
            jsonl,
            inventory: Some(inventory(&agent)),
        };
        if let Err(e) = c.history(req).await {
            tracing::warn!("history: {} records not sent: {e}", batch.len());
            client = None;
        }
    }
}

/// Attaches forever (returns only if the runtime shuts down).
pub async fn run(agent: Arc<Agent>, url: String, ensure_addr: String) {
    tokio::spawn(send_history(agent.clone(), url.clone()));
    let mut backoff = Duration::from_millis(200);
    let resumed = AtomicBool::new(false);
    let finished = agent
        .take_finished()
        .map(|rx| Arc::new(tokio::sync::Mutex::new(rx)));
    loop {
        match attach_once(&agent, &url, &ensure_addr, &resumed, finished.as_ref()).await {
            Ok(()) => {
                tracing::warn!("the coordinator closed the attach stream; reattaching");
                backoff = Duration::from_millis(200);
            }
            Err(e) => tracing::warn!("attach: {e}; retrying in {backoff:?}"),
        }
        agent.set_source(None);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn pick_source(agent: &Agent, w: &wire::Welcome, url: &str) -> Source {
    let same_host = !w.data_unix.is_empty()
        && w.host_id == prewarm_transfer::host_id()
        && std::path::Path::new(&w.data_unix).exists();
    let fds_offered = same_host && !w.data_fds.is_empty();
    let path = match agent.config().data_path {
        DataPath::Auto if fds_offered => DataPath::Fds,
        DataPath::Auto if same_host => DataPath::Unix,
        DataPath::Auto => DataPath::Tcp,
        p => p,
    };
    let addr = if path == DataPath::Fds {
        DataAddr::UnixFds {
            stream: w.data_unix.clone().into(),
            packs: w.data_fds.clone().into(),
        }
    } else if path == DataPath::Unix {
        DataAddr::Unix(w.data_unix.clone().into())
    } else {
        // A wildcard bind address is reached at the host of the coordinator's URL.
        let tcp = match w.data_tcp.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_unspecified() => {
                let host = url
                    .split("://")
                    .nth(1)
                    .and_then(|r| r.rsplit_once(':'))
                    .map_or("127.0.0.1", |(h, _)| h);
                format!("{host}:{}", a.port())
            }
            _ => w.data_tcp.clone(),
        };
        DataAddr::Tcp(tcp)
    };
    Source {
        addr,
        instance: w.coordinator_instance.clone(),
        store: Some(w.store.clone()).filter(|s| !s.is_empty()),
    }
}

async fn attach_once(
    agent: &Arc<Agent>,
    url: &str,
    ensure_addr: &str,
    resumed: &AtomicBool,
    finished: Option<&Finishing>,
) -> Result<(), String> {
    let mut client = dial(agent, url).await?;
    let req = AttachRequest {
        capacity: agent.config().name.as_str().to_owned(),
        ensure_addr: ensure_addr.to_owned(),
        inventory: Some(inventory(agent)),
    };
    let mut stream = client
        .attach(req)
        .await
        .map_err(|s| format!("attach refused: {}", s.message()))?
        .into_inner();
    let first = stream.message().await.map_err(|s| s.message().to_owned())?;
    let Some(wire::Command {
        command: Some(command::Command::Welcome(w)),
    }) = first
    else {
        return Err("the coordinator did not welcome".into());
    };
    let source = pick_source(agent, &w, url);
    if let Some(rule) = prewarm_api::rule_of(&w.eviction_rule) {
        agent.set_rule(rule);
    }
    tracing::info!(
        "attached to coordinator {} (data plane {})",
        w.coordinator_instance,
        source.addr
    );
    agent.set_source(Some(source));
    if !resumed.swap(true, Ordering::AcqRel) {
        agent.resume_staged();
    }
    let finished = match finished {
        Some(rx) => {
            let (agent, mut client, rx) = (agent.clone(), client.clone(), rx.clone());
            Some(tokio::spawn(async move {
                let mut rx = rx.lock().await;
                while let Some(f) = rx.recv().await {
                    let ack = unsolicited_ack(&agent, f);
                    if let Err(s) = client.ack(ack).await {
                        tracing::warn!("ack: {}", s.message());
                    }
                }
            }))
        }
        None => None,
    };
    let reporter = {
        let (agent, mut client) = (agent.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                agent.changed.notified().await;
                if let Err(s) = client.report(inventory(&agent)).await {
                    tracing::warn!("inventory report: {}", s.message());
                }
            }
        })
    };
    let result = loop {
        match stream.message().await {
            Ok(Some(wire::Command { command: Some(c) })) => match c {
                command::Command::Load(l) => {
                    let (agent, client) = (agent.clone(), client.clone());
                    tokio::spawn(carry_out(agent, client, l));
                }
                command::Command::Invalidate(i) => {
                    match (ResourceId::new(i.resource), Version::new(i.new_version)) {
                        (Ok(r), Some(v)) => agent.invalidate(r, v),
                        _ => tracing::warn!("invalid invalidation ignored"),
                    }
                }
                command::Command::Retain(k) => match prewarm_api::hint_of(&k) {
                    Ok((r, hint)) => {
                        agent.retain(&r, &hint);
                        agent.metrics.hints.inc();
                    }
                    Err(e) => tracing::warn!("retention hint ignored: {e}"),
                },
                command::Command::Welcome(_) => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(s) => break Err(format!("attach stream: {}", s.message())),
        }
    };
    reporter.abort();
    if let Some(f) = finished {
        f.abort(); // releases the receiver for the next session
    }
    result
}

/// The acknowledgement of a load the agent started itself (transfer id 0).
fn unsolicited_ack(agent: &Agent, f: crate::agent::Finished) -> TransferAck {
    let mut ack = TransferAck {
        capacity: agent.config().name.as_str().to_owned(),
        resource: f.resource.as_str().to_owned(),
        version: f.version.get(),
        priority: wire::Priority::Predictive as i32,
        ..Default::default()
    };
    match f.result {
        Ok(loaded) => fill_ok(&mut ack, loaded),
        Err((kind, msg)) => {
            ack.failure = kind as i32;
            ack.error = msg;
        }
    }
    ack
}

fn fill_ok(ack: &mut TransferAck, loaded: crate::agent::Loaded) {
    ack.ok = true;
    ack.version = loaded.held.version.get();
    ack.state_bytes = loaded.held.bytes;
    match loaded.report {
        Some(rep) => {
            ack.wire_bytes = rep.wire_bytes;
            ack.store_bytes = rep.store_bytes;
            ack.reused_bytes = rep.reused_bytes;
            ack.resumed_bytes = rep.resumed_bytes;
            ack.duration_us = rep.micros;
        }
        None => ack.already_held = true,
    }
}

async fn carry_out(agent: Arc<Agent>, mut client: Client, l: wire::Load) {
    let mut ack = TransferAck {
        transfer_id: l.transfer_id,
        capacity: agent.config().name.as_str().to_owned(),
        resource: l.resource.clone(),
        version: l.version,
        priority: l.priority,
        ..Default::default()
    };
    let priority = if l.priority == wire::Priority::OnDemand as i32 {
        Priority::OnDemand
    } else {
        Priority::Predictive
    };
    match (ResourceId::new(l.resource), Version::new(l.version)) {
        (Ok(r), Some(v)) => match agent.load(&r, VersionReq::Exact(v), priority).await {
            Ok(loaded) => fill_ok(&mut ack, loaded),
            Err(e) => {
                ack.failure = FailureKind::from(&e) as i32;
                ack.error = e.to_string();
            }
        },
        _ => {
            ack.failure = FailureKind::InvalidRequest as i32;
            ack.error = "invalid resource id or version in the command".into();
        }
    }
    if let Err(s) = client.ack(ack).await {
        tracing::warn!("ack: {}", s.message());
    }
}
