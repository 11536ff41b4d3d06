//! The gRPC service (see `proto/prewarm.proto` for the protocol's documentation).
//!
//! Each call is checked against its token's principal (put in the request's extensions by
//! the listener's interceptor; a call made in-process, without one, is trusted): agents'
//! calls (attach, report, ack, history) need `transfer`; `transfer`, `watch` and its
//! reports need `transfer` and the resource inside the token's prefixes; `resolve` needs
//! `transfer` or `ensure` and the resource inside; `status` is whole for `admin` tokens
//! and, for any other, filtered to the token's prefixes (its inventories, departures and
//! recent transfers; no model). Refusals are `PERMISSION_DENIED`, the same whether the
//! resource exists or not.

use std::sync::Arc;

use prewarm_core::{CapacityId, ResourceId, Scope};
use prewarm_proto::wire::{
    AckReply, AttachRequest, Command, Inventory, ReportReply, ResolveReply, ResolveRequest,
    SnapshotCommand, StatusReply, StatusRequest, TransferAck, TransferRequest, WatcherHello,
    WatcherReply, WatcherReport, Welcome, command, coordinator_server,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use prewarm_transfer::{Capability, Denied, Principal};

use crate::Coordinator;
use crate::state::Cap;
use crate::transfers::ResolveFailure;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The service: a handle on the coordinator.
#[derive(Clone)]
pub struct Service(pub Arc<Coordinator>);

/// The principal of a call (the interceptor's), or every right for a call made in-process.
fn who<T>(req: &Request<T>) -> Arc<Principal> {
    req.extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Principal::full("in-process")))
}

impl Service {
    /// The call's principal if it holds `cap`, else `PERMISSION_DENIED` (counted).
    fn may<T>(&self, req: &Request<T>, cap: Capability) -> Result<Arc<Principal>, Status> {
        let p = who(req);
        p.may(cap).map_err(|e| self.denied(cap, &e))?;
        Ok(p)
    }

    /// `e` as the gRPC refusal, counted like the HTTP routes' 403s.
    fn denied(&self, cap: Capability, e: &Denied) -> Status {
        crate::http::count_forbidden(&self.0, cap);
        Status::permission_denied(e.to_string())
    }
}

/// `reply` as `scope` may see it: its inventories, departures and recent transfers inside
/// the scope, and no model.
fn narrowed(mut reply: StatusReply, scope: &Scope) -> StatusReply {
    let admits = |r: &str| ResourceId::new(r).is_ok_and(|r| scope.admits(&r));
    for c in &mut reply.capacities {
        if let Some(inv) = c.inventory.as_mut() {
            inv.held.retain(|h| admits(&h.resource));
            inv.departed.retain(|d| admits(&d.resource));
        }
    }
    reply.recent.retain(|t| admits(&t.resource));
    reply.model = None;
    reply
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for Service {
    type AttachStream = ReceiverStream<Result<Command, Status>>;
    type WatchStream = ReceiverStream<Result<SnapshotCommand, Status>>;

    async fn watch(
        &self,
        request: Request<WatcherHello>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let p = self.may(&request, Capability::Transfer)?;
        let hello = request.into_inner();
        let resource = ResourceId::new(&hello.resource)
            .map_err(|e| Status::invalid_argument(format!("invalid resource id: {e}")))?;
        p.may_name(Capability::Transfer, &resource)
            .map_err(|e| self.denied(Capability::Transfer, &e))?;
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
        let p = self.may(&request, Capability::Transfer)?;
        let r = request.into_inner();
        if let Ok(res) = ResourceId::new(&r.resource) {
            p.may_name(Capability::Transfer, &res)
                .map_err(|e| self.denied(Capability::Transfer, &e))?;
        } else if !p.scope.is_all() {
            return Err(Status::invalid_argument("invalid resource id"));
        }
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
        let who = self.may(&request, Capability::Transfer)?;
        let req = request.into_inner();
        let capacity = CapacityId::new(req.capacity.clone())
            .map_err(|e| Status::invalid_argument(format!("invalid capacity id: {e}")))?;
        let c = &self.0;
        let (tx, rx) = mpsc::channel(256);
        let welcome = Command {
            command: Some(command::Command::Welcome(Welcome {
                coordinator_instance: c.instance.clone(),
                data_tcp: c.data.tcp.clone(),
                data_unix: c.data.unix.clone(),
                data_fds: c.data.fds.clone(),
                store: c.data.store.clone(),
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
        let session = c.transfers.next_id();
        let rule = c
            .brain
            .as_ref()
            .map_or(prewarm_engine::Rule::Lru, |b| b.rule());
        let mut cap = Cap::new(tx.clone(), session, req.ensure_addr, rule, now_ms());
        // Only states its token may name are placed, moved or kept there.
        cap.scope = who.scope.clone();
        c.capacities.attach(
            &capacity,
            cap,
            req.inventory.unwrap_or_default(),
            c.clock.now(),
        );
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
        self.may(&request, Capability::Transfer)?;
        let inv = request.into_inner();
        let capacity = CapacityId::new(inv.capacity.clone())
            .map_err(|e| Status::invalid_argument(format!("invalid capacity id: {e}")))?;
        let held = crate::dashboard::held_set(&inv);
        if !self.0.capacities.report(&capacity, inv, self.0.clock.now()) {
            return Err(Status::not_found(format!(
                "capacity {capacity} has not attached"
            )));
        }
        self.0.pulse.holds(&capacity, &held);
        Ok(Response::new(ReportReply {}))
    }

    async fn ack(&self, request: Request<TransferAck>) -> Result<Response<AckReply>, Status> {
        self.may(&request, Capability::Transfer)?;
        let ack = request.into_inner();
        match self.0.capacities.ack(ack.clone()) {
            Ok(first) => {
                if first {
                    self.0.pulse.acked(&ack);
                }
                Ok(Response::new(AckReply {}))
            }
            Err(_) => Err(Status::permission_denied(
                "acknowledgement from another capacity",
            )),
        }
    }

    async fn transfer(
        &self,
        request: Request<TransferRequest>,
    ) -> Result<Response<TransferAck>, Status> {
        let p = self.may(&request, Capability::Transfer)?;
        // An invalid id is answered by the transfer itself (INVALID_REQUEST).
        if let Ok(r) = ResourceId::new(&request.get_ref().resource) {
            p.may_name(Capability::Transfer, &r)
                .map_err(|e| self.denied(Capability::Transfer, &e))?;
        }
        Ok(Response::new(self.0.transfer(request.into_inner()).await))
    }

    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveReply>, Status> {
        let p = who(&request);
        let req = request.into_inner();
        let resource =
            ResourceId::new(req.resource).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Err(e) = p.may_name(Capability::Transfer, &resource) {
            p.may_name(Capability::Ensure, &resource)
                .map_err(|_| self.denied(Capability::Transfer, &e))?;
        }
        match self
            .0
            .transfers
            .resolve(&resource, req.version.as_ref())
            .await
        {
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
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let p = who(&request);
        let reply = self.0.status();
        Ok(Response::new(if p.sees_all() {
            reply
        } else {
            narrowed(reply, &p.scope)
        }))
    }

    async fn history(
        &self,
        request: Request<prewarm_proto::wire::HistoryBatch>,
    ) -> Result<Response<prewarm_proto::wire::HistoryReply>, Status> {
        self.may(&request, Capability::Transfer)?;
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
        let now = self.0.clock.now();
        self.0.pulse.executions(&sender, &records, now);
        if let Some(inv) = b.inventory {
            let held = crate::dashboard::held_set(&inv);
            if self.0.capacities.report(&sender, inv, now) {
                self.0.pulse.holds(&sender, &held);
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
