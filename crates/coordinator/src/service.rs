//! The gRPC service (see `proto/prewarm.proto` for the protocol's documentation).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prewarm_core::{CapacityId, ResourceId, Version};
use prewarm_proto::wire::{
    AckReply, AttachRequest, Command, FailureKind, Inventory, Priority, ReportReply, ResolveReply,
    ResolveRequest, SnapshotCommand, StatusReply, StatusRequest, TransferAck, TransferRequest,
    VersionSpec, WatcherHello, WatcherReply, WatcherReport, Welcome, command, coordinator_server,
    version_spec,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Coordinator;
use crate::state::Cap;

/// Default wait for an acknowledgement.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn failed(req: &TransferRequest, kind: FailureKind, error: String) -> TransferAck {
    TransferAck {
        capacity: req.capacity.clone(),
        resource: req.resource.clone(),
        failure: kind as i32,
        error,
        priority: req.priority,
        ..Default::default()
    }
}

/// The service: a handle on the coordinator.
#[derive(Clone)]
pub struct Service(pub Arc<Coordinator>);

/// Why a version spec could not be resolved.
pub enum ResolveFailure {
    /// No such resource or version.
    Unknown(String),
    /// The store failed.
    Store(String),
}

impl Coordinator {
    /// The version of `resource` that `spec` names.
    pub async fn resolve(
        &self,
        resource: &ResourceId,
        spec: Option<&VersionSpec>,
    ) -> Result<Version, ResolveFailure> {
        let versions = self
            .store
            .versions(resource)
            .await
            .map_err(|e| ResolveFailure::Store(e.to_string()))?;
        let newest = *versions.last().ok_or_else(|| {
            ResolveFailure::Unknown(format!("resource {resource} has no versions"))
        })?;
        match spec.and_then(|s| s.spec.as_ref()) {
            None | Some(version_spec::Spec::Latest(_)) => Ok(newest),
            Some(version_spec::Spec::Exact(n)) => Version::new(*n)
                .filter(|v| versions.contains(v))
                .ok_or_else(|| {
                    ResolveFailure::Unknown(format!(
                        "{resource}@{n} does not exist (newest: {newest})"
                    ))
                }),
            Some(version_spec::Spec::AtLeast(n)) => {
                if newest.get() >= *n {
                    Ok(newest)
                } else {
                    Err(ResolveFailure::Unknown(format!(
                        "{resource}: newest version is {newest}, at least {n} was asked for"
                    )))
                }
            }
        }
    }

    /// Has capacity `req.capacity` load the state and waits for its acknowledgement (the
    /// wire request, checked and resolved against the store, then [`Self::transfer_typed`]).
    pub async fn transfer(&self, req: TransferRequest) -> TransferAck {
        let t0 = Instant::now();
        let ack = match self.typed(&req).await {
            Ok(t) => self.transfer_inner(&t).await,
            Err(ack) => ack,
        };
        self.count_transfer(&ack, t0);
        ack
    }

    /// [`Self::transfer`] of a typed request whose version is already known (the engine's
    /// predictive transfers: no id parsing, no store lookup).
    pub(crate) async fn transfer_typed(&self, t: &TypedTransfer) -> TransferAck {
        let t0 = Instant::now();
        let ack = self.transfer_inner(t).await;
        self.count_transfer(&ack, t0);
        ack
    }

    fn count_transfer(&self, ack: &TransferAck, t0: Instant) {
        let result = if ack.ok { "ok" } else { "failed" };
        self.metrics
            .transfer(&self.registry, result, ack, t0.elapsed());
    }

    async fn transfer_inner(&self, t: &TypedTransfer) -> TransferAck {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let cmd_tx = match self.register(t, id, tx) {
            Ok(cmd_tx) => cmd_tx,
            Err(ack) => return *ack,
        };
        let load = Command {
            command: Some(command::Command::Load(prewarm_proto::wire::Load {
                transfer_id: id,
                resource: t.resource.as_str().to_owned(),
                version: t.version.get(),
                priority: t.priority as i32,
            })),
        };
        if cmd_tx.send(Ok(load)).await.is_err() {
            self.forget_pending(id);
            return t.failed(
                FailureKind::CapacityGone,
                format!("capacity {} went away", t.capacity),
            );
        }
        self.await_ack(t, id, rx).await
    }

    /// The request's typed parts, the version resolved against the store.
    async fn typed(&self, req: &TransferRequest) -> Result<TypedTransfer, TransferAck> {
        let Ok(capacity) = CapacityId::new(req.capacity.clone()) else {
            return Err(failed(
                req,
                FailureKind::InvalidRequest,
                format!("invalid capacity id {:?}", req.capacity),
            ));
        };
        let resource = ResourceId::new(req.resource.clone())
            .map_err(|e| failed(req, FailureKind::InvalidRequest, e.to_string()))?;
        let version = match self.resolve(&resource, req.version.as_ref()).await {
            Ok(v) => v,
            Err(ResolveFailure::Unknown(m)) => {
                return Err(failed(req, FailureKind::UnknownState, m));
            }
            Err(ResolveFailure::Store(m)) => return Err(failed(req, FailureKind::Source, m)),
        };
        let exact = matches!(
            req.version.as_ref().and_then(|s| s.spec.as_ref()),
            Some(version_spec::Spec::Exact(_))
        );
        Ok(TypedTransfer {
            capacity,
            resource,
            version,
            exact,
            priority: Priority::try_from(req.priority).unwrap_or(Priority::Unspecified),
            timeout: match req.timeout_ms {
                0 => DEFAULT_TRANSFER_TIMEOUT,
                ms => Duration::from_millis(ms),
            },
        })
    }

    /// Registers transfer `id` as waiting for its acknowledgement and returns the capacity's
    /// command stream; the answer at once when the capacity already holds a version that
    /// does, is unknown or is disconnected.
    fn register(
        &self,
        t: &TypedTransfer,
        id: u64,
        waiter: oneshot::Sender<TransferAck>,
    ) -> Result<CommandSender, Box<TransferAck>> {
        let mut book = self.book.lock().expect("book lock poisoned");
        let Some(cap) = book.caps.get(&t.capacity) else {
            return Err(Box::new(t.failed(
                FailureKind::UnknownCapacity,
                format!("no capacity named {} has attached", t.capacity),
            )));
        };
        let newest = cap.newest(&t.resource);
        let held = if t.exact {
            cap.holds(&t.resource, t.version)
        } else {
            newest.is_some_and(|v| v >= t.version)
        };
        if held {
            let mut ack = t.failed(FailureKind::FailureNone, String::new());
            ack.ok = true;
            ack.already_held = true;
            ack.version = if t.exact {
                t.version.get()
            } else {
                newest.map_or(0, Version::get)
            };
            ack.transfer_id = id;
            book.remember(ack.clone());
            return Err(Box::new(ack));
        }
        let Some(cmd_tx) = cap.tx.clone() else {
            return Err(Box::new(t.failed(
                FailureKind::CapacityGone,
                format!("capacity {} is disconnected", t.capacity),
            )));
        };
        book.pending.insert(id, (t.capacity.clone(), waiter));
        Ok(cmd_tx)
    }

    fn forget_pending(&self, id: u64) {
        self.book
            .lock()
            .expect("book lock poisoned")
            .pending
            .remove(&id);
    }

    /// The acknowledgement of transfer `id`, or a failure when the capacity goes away or the
    /// request's timeout passes first.
    async fn await_ack(
        &self,
        t: &TypedTransfer,
        id: u64,
        rx: oneshot::Receiver<TransferAck>,
    ) -> TransferAck {
        let (capacity, timeout) = (&t.capacity, t.timeout);
        let (kind, error) = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(ack)) => return ack,
            Ok(Err(_)) => (
                FailureKind::CapacityGone,
                format!("capacity {capacity} disconnected during the transfer"),
            ),
            Err(_) => {
                self.forget_pending(id);
                (
                    FailureKind::Timeout,
                    format!("no acknowledgement within {timeout:?}"),
                )
            }
        };
        let mut a = t.failed(kind, error);
        a.transfer_id = id;
        a
    }
}

/// A transfer request in typed form.
pub(crate) struct TypedTransfer {
    pub(crate) capacity: CapacityId,
    pub(crate) resource: ResourceId,
    pub(crate) version: Version,
    /// Exactly `version` (else it or any newer).
    pub(crate) exact: bool,
    pub(crate) priority: Priority,
    /// How long to wait for the acknowledgement.
    pub(crate) timeout: Duration,
}

impl TypedTransfer {
    /// The failed acknowledgement of this transfer.
    fn failed(&self, kind: FailureKind, error: String) -> TransferAck {
        TransferAck {
            capacity: self.capacity.as_str().to_owned(),
            resource: self.resource.as_str().to_owned(),
            failure: kind as i32,
            error,
            priority: self.priority as i32,
            ..Default::default()
        }
    }
}

/// A capacity's command stream.
type CommandSender = mpsc::Sender<Result<Command, Status>>;

#[tonic::async_trait]
impl coordinator_server::Coordinator for Service {
    type AttachStream = ReceiverStream<Result<Command, Status>>;
    type WatchStream = ReceiverStream<Result<SnapshotCommand, Status>>;

    async fn watch(
        &self,
        request: Request<WatcherHello>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let hello = request.into_inner();
        let resource = ResourceId::new(&hello.resource)
            .map_err(|e| Status::invalid_argument(format!("invalid resource id: {e}")))?;
        let (tx, rx) = mpsc::channel(16);
        let c = &self.0;
        let session = c
            .watchers
            .register(&hello, tx.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!("watcher {} registered for {resource}", hello.watcher);
        c.update_gauges();
        let me = c.clone();
        tokio::spawn(async move {
            tx.closed().await;
            me.watchers.unregister(&resource, session);
            me.update_gauges();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn watch_report(
        &self,
        request: Request<WatcherReport>,
    ) -> Result<Response<WatcherReply>, Status> {
        let r = request.into_inner();
        let known = self.0.watchers.report(&r);
        if known && r.snapshotted {
            // A new version may exist: sizes and versions cached for the planner are stale.
            if let (Some(brain), Ok(res)) = (&self.0.brain, ResourceId::new(&r.resource)) {
                brain.forget(&res);
            }
        }
        self.0.update_gauges();
        Ok(Response::new(WatcherReply { known }))
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let req = request.into_inner();
        let capacity = CapacityId::new(req.capacity.clone())
            .map_err(|e| Status::invalid_argument(format!("invalid capacity id: {e}")))?;
        let c = &self.0;
        let (tx, rx) = mpsc::channel(256);
        let welcome = Command {
            command: Some(command::Command::Welcome(Welcome {
                coordinator_instance: c.instance.clone(),
                data_tcp: c.data_tcp.clone(),
                data_unix: c.data_unix.clone(),
                data_fds: c.data_fds.clone(),
                host_id: prewarm_transfer::host_id(),
                eviction_rule: c
                    .brain
                    .as_ref()
                    .map(|b| prewarm_api::rule_name(b.rule()).to_owned())
                    .unwrap_or_default(),
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::unavailable("stream closed"))?;
        let session = c.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let rule = c
                .brain
                .as_ref()
                .map_or(prewarm_engine::Rule::Lru, |b| b.rule());
            let mut book = c.book.lock().expect("book lock poisoned");
            book.unindex(&capacity);
            book.caps.insert(
                capacity.clone(),
                Cap::new(tx.clone(), session, req.ensure_addr, rule, now_ms()),
            );
            book.set_inventory(&capacity, req.inventory.unwrap_or_default(), c.clock.now());
            book.refresh_attached();
        }
        tracing::info!("capacity {capacity} attached");
        c.update_gauges();
        // The stream closing is the capacity going away.
        let me = c.clone();
        tokio::spawn(async move {
            tx.closed().await;
            me.detach(&capacity, session);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report(&self, request: Request<Inventory>) -> Result<Response<ReportReply>, Status> {
        let inv = request.into_inner();
        let capacity = CapacityId::new(inv.capacity.clone())
            .map_err(|e| Status::invalid_argument(format!("invalid capacity id: {e}")))?;
        let mut book = self.0.book.lock().expect("book lock poisoned");
        if !book.caps.contains_key(&capacity) {
            return Err(Status::not_found(format!(
                "capacity {capacity} has not attached"
            )));
        }
        book.set_inventory(&capacity, inv, self.0.clock.now());
        Ok(Response::new(ReportReply {}))
    }

    async fn ack(&self, request: Request<TransferAck>) -> Result<Response<AckReply>, Status> {
        let ack = request.into_inner();
        let mut book = self.0.book.lock().expect("book lock poisoned");
        book.remember(ack.clone());
        match book.pending.remove(&ack.transfer_id) {
            Some((cap, waiter)) if cap.as_str() == ack.capacity => {
                let _ = waiter.send(ack);
                Ok(Response::new(AckReply {}))
            }
            Some((cap, waiter)) => {
                // Not from the capacity it was sent to: put it back.
                book.pending.insert(ack.transfer_id, (cap, waiter));
                Err(Status::permission_denied(
                    "acknowledgement from another capacity",
                ))
            }
            None => Ok(Response::new(AckReply {})), // timed out or already answered
        }
    }

    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<TransferAck>, Status> {
        Ok(Response::new(self.0.transfer(request.into_inner()).await))
    }

    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveReply>, Status> {
        let req = request.into_inner();
        let resource =
            ResourceId::new(req.resource).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.0.resolve(&resource, req.version.as_ref()).await {
            Ok(v) => Ok(Response::new(ResolveReply {
                version: v.get(),
                bytes: 0,
            })),
            Err(ResolveFailure::Unknown(m)) => Err(Status::not_found(m)),
            Err(ResolveFailure::Store(m)) => Err(Status::unavailable(m)),
        }
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        Ok(Response::new(self.0.status()))
    }

    async fn history(
        &self,
        request: Request<prewarm_proto::wire::HistoryBatch>,
    ) -> Result<Response<prewarm_proto::wire::HistoryReply>, Status> {
        let b = request.into_inner();
        let mut records = Vec::new();
        for r in prewarm_core::HistoryReader::new(b.jsonl.as_slice()) {
            records.push(r.map_err(|e| {
                Status::invalid_argument(format!("history from {}: {e}", b.capacity))
            })?);
        }
        let sender = CapacityId::new(b.capacity.clone())
            .map_err(|e| Status::invalid_argument(format!("invalid capacity id: {e}")))?;
        // A capacity reports its own executions only.
        for r in &mut records {
            r.capacity = Some(sender.clone());
        }
        if let Some(inv) = b.inventory {
            let mut book = self.0.book.lock().expect("book lock poisoned");
            if book.caps.contains_key(&sender) {
                book.set_inventory(&sender, inv, self.0.clock.now());
            }
        }
        let accepted = match &self.0.brain {
            Some(brain) => {
                self.0.observe(brain, &records).await;
                self.0.metrics.history_records.add(records.len() as u64);
                records.len() as u64
            }
            None => 0,
        };
        Ok(Response::new(prewarm_proto::wire::HistoryReply {
            accepted,
        }))
    }
}
