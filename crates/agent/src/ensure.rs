//! `ensure`: what the application calls before it reads a state. A hit (a recent-enough
//! version is installed) answers at once; a miss fetches on demand, ahead of predictive
//! transfers, and answers when the state is installed or the timeout passes (the fetch then
//! carries on, so the next call hits). Every call becomes a history record. An answer holds
//! its state from eviction for a lease (the agent's `--lease`, or the caller's), which the
//! application may renew or release by its id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId, Version};

use crate::agent::{Agent, LoadError, Priority, VersionReq};

/// An `ensure` call.
#[derive(Clone, Debug)]
pub struct EnsureRequest {
    /// The state.
    pub resource: ResourceId,
    /// Oldest acceptable version.
    pub min_version: Option<Version>,
    /// How long to wait on a miss.
    pub timeout: Duration,
    /// The execution's sequence key (function, tenant, session), for the history.
    pub key: Option<String>,
    /// The type of the event that started the execution (`http`, `timer`…), for the history
    /// (`ensure` when not given).
    pub kind: Option<String>,
    /// How long a superseded version may still be served (default: forever, or never for
    /// `mark_stale` resources).
    pub max_stale: Option<Duration>,
}

pub use prewarm_api::Ensured;

/// Why `ensure` failed.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The on-demand fetch did not finish in time (it carries on in the background).
    #[error("{resource} not ready within {timeout_ms} ms (the fetch continues)")]
    Timeout {
        /// The state.
        resource: ResourceId,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The fetch failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The agent holds as many leases as it may (`--max-leases`): nothing was leased.
    #[error(
        "the agent holds {held} leases, its limit (--max-leases): retry in {retry_after_s} s, or \
         release leases or ask for shorter ones"
    )]
    Overloaded {
        /// Leases held.
        held: usize,
        /// Seconds until the earliest lease ends (at least 1).
        retry_after_s: u64,
    },
}

impl Agent {
    /// See the module docs; the answer's lease lasts the agent's `lease`.
    pub async fn ensure(self: &Arc<Self>, req: EnsureRequest) -> Result<Ensured, EnsureError> {
        let lease = self.config().lease;
        self.ensure_leased(req, lease).await
    }

    /// [`Agent::ensure`] with a lease of `lease_for` instead of the agent's default.
    pub async fn ensure_leased(
        self: &Arc<Self>,
        req: EnsureRequest,
        lease_for: Duration,
    ) -> Result<Ensured, EnsureError> {
        let t0 = Instant::now();
        let ts = self.config().clock.now();
        let result = self.ensure_inner(&req, t0, lease_for).await;
        let elapsed = t0.elapsed();
        let outcome = match &result {
            Ok((e, _)) if e.hit => "hit",
            Ok(_) => "miss",
            Err(_) => "error",
        };
        self.metrics.ensure(outcome, elapsed);
        let mut attrs = BTreeMap::new();
        attrs.insert("hit".to_owned(), serde_json::Value::Bool(outcome == "hit"));
        attrs.insert(
            "wait_ms".into(),
            serde_json::json!(elapsed.as_secs_f64() * 1e3),
        );
        if let Err(e) = &result {
            attrs.insert("error".into(), serde_json::Value::String(e.to_string()));
        }
        let (version, bytes) = match &result {
            Ok((e, bytes)) => (Version::new(e.version), *bytes),
            Err(_) => (None, 0),
        };
        let record = HistoryRecord {
            ts,
            event: Event {
                kind: req.kind.clone().unwrap_or_else(|| "ensure".into()),
                key: req
                    .key
                    .clone()
                    .unwrap_or_else(|| self.config().name.as_str().to_owned()),
                attrs,
                needs: Vec::new(),
            },
            capacity: Some(self.config().name.clone()),
            reads: vec![ReadAccess {
                resource: req.resource.clone(),
                version,
                bytes,
            }],
            writes: vec![],
            duration_s: 0.0,
        };
        self.history().log(record);
        result.map(|(e, _)| e)
    }

    async fn ensure_inner(
        self: &Arc<Self>,
        req: &EnsureRequest,
        t0: Instant,
        lease_for: Duration,
    ) -> Result<(Ensured, u64), EnsureError> {
        let lease_ms = lease_for.as_millis() as u64;
        if let Some((held, lease)) = self.hit(&req.resource, req.min_version, req.max_stale) {
            let lease = Some(self.hold(lease, &req.resource, lease_for)?);
            let bytes = held.bytes;
            let e = Ensured {
                resource: held.resource.to_string(),
                version: held.version.get(),
                path: held.path,
                hit: true,
                wait_ms: t0.elapsed().as_millis() as u64,
                lease,
                lease_ms,
                miss_reason: None,
            };
            return Ok((e, bytes));
        }
        let miss_reason = Some(self.why_missing(&req.resource, req.min_version));
        // Miss: fetch on demand in a task of its own, so a timeout does not cancel it.
        let me = self.clone();
        let resource = req.resource.clone();
        let min = req.min_version;
        let task = tokio::spawn(async move {
            me.load(&resource, VersionReq::AtLeast(min), Priority::OnDemand)
                .await
        });
        let loaded = match tokio::time::timeout(req.timeout, task).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => {
                return Err(EnsureError::Load(LoadError::Publish {
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                }));
            }
            Err(_) => {
                return Err(EnsureError::Timeout {
                    resource: req.resource.clone(),
                    timeout_ms: req.timeout.as_millis() as u64,
                });
            }
        };
        // Lease what was installed like a hit would (its arrival was its use: not counted
        // again, as the replay counts it).
        // Past the lease cap the state stays installed (the next call is a hit) but unleased.
        let lease = self
            .lease_exact(&req.resource, loaded.held.version)
            .map(|l| self.hold(l, &req.resource, lease_for))
            .transpose()?;
        let bytes = loaded.held.bytes;
        let e = Ensured {
            resource: loaded.held.resource.to_string(),
            version: loaded.held.version.get(),
            path: loaded.held.path,
            hit: false,
            wait_ms: t0.elapsed().as_millis() as u64,
            lease,
            lease_ms,
            miss_reason,
        };
        Ok((e, bytes))
    }
}
