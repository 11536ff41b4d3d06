//! A Rust client for the agent's ensure API (and, with [`EnsureClient::post_json`], the
//! coordinator's event API): one kept-alive HTTP/1.1 connection (re-opened when it breaks),
//! typed answers and errors.
//!
//! ```no_run
//! # async fn f() -> Result<(), prewarm_agent::client::ClientError> {
//! let agent = prewarm_agent::client::EnsureClient::new("127.0.0.1:7200", None);
//! let r = prewarm_core::ResourceId::new("models/llama").expect("valid id");
//! let state = agent.ensure(&r, None, Some(5_000)).await?;
//! println!("read it at {}", state.path.display());
//! # Ok(()) }
//! ```

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use prewarm_core::ResourceId;
use prewarm_transfer::Token;

use crate::ensure::Ensured;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached.
    #[error("cannot reach the agent at {addr}: {why}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        why: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The agent answered with an error.
    #[error("{status} {kind}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error kind (`timeout`, `unknown_state`, `cache_full`…).
        kind: String,
        /// Explanation.
        message: String,
    },
    /// The answer was not the expected JSON.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// HTTP/1.1 on `io`, its connection driven by a task.
async fn handshake<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// A client of one agent.
pub struct EnsureClient {
    addr: String,
    auth: Option<String>,
    tls: Option<prewarm_tls::Connector>,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl EnsureClient {
    /// A client of the agent listening at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>, token: Option<&Token>) -> Self {
        EnsureClient {
            addr: addr.into(),
            auth: token.map(|t| format!("Bearer {}", t.expose())),
            tls: None,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Speaks HTTPS with `tls` (an agent started with `--tls-cert`; the connector's client
    /// certificate is presented where it requires one).
    pub fn with_tls(mut self, tls: prewarm_tls::Connector) -> Self {
        self.tls = Some(tls);
        self
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let err = |why: String| ClientError::Connect {
            addr: self.addr.clone(),
            why,
        };
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some(c) => {
                let tls = c.connect(prewarm_tls::host_of(&self.addr), tcp).await;
                handshake(tls.map_err(|e| err(format!("TLS: {e}")))?).await
            }
        }
        .map_err(|e| err(e.to_string()))
    }

    /// GETs `path` and returns the body of a 2xx answer.
    pub async fn get(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(hyper::Method::GET, path, Bytes::new()).await
    }

    /// POSTs a JSON `body` to `path` (the coordinator's `/v1/events`, say) and returns the
    /// body of a 2xx answer.
    pub async fn post_json(&self, path: &str, body: Bytes) -> Result<Bytes, ClientError> {
        self.call(hyper::Method::POST, path, body).await
    }

    /// PUTs `path` (a lease renewal) and returns the body of a 2xx answer.
    pub async fn put(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(hyper::Method::PUT, path, Bytes::new()).await
    }

    /// DELETEs `path` (a lease release) and returns the body of a 2xx answer.
    pub async fn delete(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(hyper::Method::DELETE, path, Bytes::new()).await
    }

    async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let mut guard = self.conn.lock().await;
        for attempt in 0..2 {
            let mut send = match guard.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.open().await?,
            };
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, &self.addr);
            if method == hyper::Method::POST {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            if let Some(a) = &self.auth {
                req = req.header(hyper::header::AUTHORIZATION, a);
            }
            let req = req
                .body(Full::new(body.clone()))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let resp = match send.send_request(req).await {
                Ok(r) => r,
                // A kept-alive connection the server closed: retry once on a fresh one.
                Err(e) if attempt == 0 && (e.is_closed() || e.is_canceled()) => continue,
                Err(e) => return Err(ClientError::Http(e.to_string())),
            };
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            *guard = Some(send);
            if status.is_success() {
                return Ok(body);
            }
            let e: prewarm_api::ApiError = serde_json::from_slice(&body).unwrap_or_default();
            return Err(ClientError::Api {
                status: status.as_u16(),
                kind: e.error,
                message: e.message,
            });
        }
        Err(ClientError::Http("connection closed twice".into()))
    }

    /// Ensures `resource` (at least `min_version`) is installed; waits up to `timeout_ms` on a
    /// miss (the agent's default when `None`).
    pub async fn ensure(
        &self,
        resource: &ResourceId,
        min_version: Option<u64>,
        timeout_ms: Option<u64>,
    ) -> Result<Ensured, ClientError> {
        let mut path = format!("/v1/states/{}", resource.as_str());
        let mut sep = '?';
        for (k, v) in [("min_version", min_version), ("timeout_ms", timeout_ms)] {
            if let Some(v) = v {
                path.push_str(&format!("{sep}{k}={v}"));
                sep = '&';
            }
        }
        let body = self.get(&path).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Releases lease `id` (its state may be evicted from then on).
    pub async fn release(&self, id: u64) -> Result<(), ClientError> {
        self.delete(&format!("/v1/leases/{id}")).await.map(|_| ())
    }

    /// What the agent holds, and why the latest states it does not hold left.
    pub async fn inventory(&self) -> Result<prewarm_api::InventoryAnswer, ClientError> {
        let body = self.get("/v1/inventory").await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
