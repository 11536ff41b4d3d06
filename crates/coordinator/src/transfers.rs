//! The transfers part of the coordinator: a request to load a state on a capacity (from an
//! operator over gRPC, or a predictive one from the engine) is checked, its version resolved
//! against the store, sent to the capacity as a `Load` command and answered by the
//! capacity's acknowledgement, or by a failure when the capacity is unknown, already holds
//! it, goes away or does not answer in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prewarm_core::{CapacityId, ResourceId, Version};
use prewarm_proto::wire::{
    Command, FailureKind, Priority, TransferAck, TransferRequest, VersionSpec, command,
    version_spec,
};
use prewarm_store::Store;
use tokio::sync::oneshot;

use crate::capacities::Capacities;
use crate::state::CommandSender;

/// Default wait for an acknowledgement.
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

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

/// Why a version spec could not be resolved.
pub enum ResolveFailure {
    /// No such resource or version.
    Unknown(String),
    /// The store failed.
    Store(String),
}

/// Transfers and the ids they (and attach sessions) are numbered by.
pub struct Transfers {
    store: Arc<Store>,
    next_id: AtomicU64,
}

impl Transfers {
    /// Transfers of states in `store`.
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            next_id: AtomicU64::new(1),
        }
    }

    /// The store the states come from.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// A fresh id (for a transfer or an attach session).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

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

    /// Has capacity `req.capacity` load the state and waits for its acknowledgement: the
    /// wire request checked and resolved against the store, then [`Self::send`].
    pub(crate) async fn request(&self, caps: &Capacities, req: &TransferRequest) -> TransferAck {
        match self.typed(req).await {
            Ok(t) => self.send(caps, &t).await,
            Err(ack) => ack,
        }
    }

    /// Sends the `Load` of a typed transfer (its version known) and waits for its
    /// acknowledgement.
    pub(crate) async fn send(&self, caps: &Capacities, t: &TypedTransfer) -> TransferAck {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let cmd_tx = match Self::register(caps, t, id, tx) {
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
            caps.forget_pending(id);
            return t.failed(
                FailureKind::CapacityGone,
                format!("capacity {} went away", t.capacity),
            );
        }
        Self::await_ack(caps, t, id, rx).await
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
        caps: &Capacities,
        t: &TypedTransfer,
        id: u64,
        waiter: oneshot::Sender<TransferAck>,
    ) -> Result<CommandSender, Box<TransferAck>> {
        let mut book = caps.lock();
        let Some(cap) = book.caps.get(&t.capacity) else {
            return Err(Box::new(t.failed(
                FailureKind::UnknownCapacity,
                format!("no capacity named {} has attached", t.capacity),
            )));
        };
        if !cap.scope.admits(&t.resource) {
            return Err(Box::new(t.failed(
                FailureKind::OutOfScope,
                format!(
                    "capacity {}'s token may not hold {} (outside its prefixes)",
                    t.capacity, t.resource
                ),
            )));
        }
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
        Capacities::await_ack(&mut book, id, &t.capacity, (&t.resource, t.version), waiter);
        Ok(cmd_tx)
    }

    /// The acknowledgement of transfer `id`, or a failure when the capacity goes away or the
    /// request's timeout passes first.
    async fn await_ack(
        caps: &Capacities,
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
                caps.forget_pending(id);
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
