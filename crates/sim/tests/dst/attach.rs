//! The agent's side of the attach loop, as `control.rs` runs it: attach with the inventory,
//! take the `Welcome` (data-plane address, eviction rule), resume interrupted transfers
//! once per start, then hand every command to the link; reattach whenever the stream ends
//! (a coordinator restart, a cut). Inventory reports follow every change; loads the agent
//! started itself (refreshes, resumes) are acknowledged like commanded ones.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prewarm_agent::agent::{Finished, Loaded, Source};
use prewarm_agent::{Priority, VersionReq};
use prewarm_core::{ResourceId, Version};
use prewarm_proto::wire::coordinator_server::Coordinator as _;
use prewarm_proto::wire::{self, AttachRequest, Command, FailureKind, TransferAck, command};
use prewarm_transfer::DataAddr;
use tonic::Request;

use crate::link::{Fate, Link};

/// Attaches, reattaches after every end of the stream, and reports the inventory.
pub async fn run(link: Arc<Link>) {
    if let Some(rx) = link.agent.take_finished() {
        tokio::spawn(forward_finished(link.clone(), rx));
    }
    tokio::spawn(report_changes(link.clone()));
    let mut resumed = false;
    loop {
        let _ = session(&link, &mut resumed).await;
        link.agent.set_source(None);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One attach session: Welcome, then commands until the stream ends or is broken.
async fn session(link: &Arc<Link>, resumed: &mut bool) -> Result<(), String> {
    let (svc, h) = link.coordinator().ok_or("no coordinator")?;
    let req = AttachRequest {
        capacity: link.agent.config().name.as_str().to_owned(),
        ensure_addr: String::new(),
        inventory: Some(prewarm_agent::control::inventory(&link.agent)),
    };
    let attach = h.spawn(async move { svc.attach(Request::new(req)).await });
    let mut stream = match attach.await {
        Ok(Ok(s)) => s.into_inner(),
        _ => return Err("attach failed".into()),
    };
    let Some(Ok(Command {
        command: Some(command::Command::Welcome(w)),
    })) = stream.next().await
    else {
        return Err("no welcome".into());
    };
    if let Some(rule) = prewarm_api::rule_of(&w.eviction_rule) {
        link.agent.set_rule(rule);
    }
    link.agent.set_source(Some(Source {
        addr: DataAddr::Tcp(w.data_tcp.clone()),
        instance: w.coordinator_instance.clone(),
        store: None,
    }));
    if !std::mem::replace(resumed, true) {
        link.agent.resume_staged();
    }
    link.stats().sessions += 1;
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(c)) => link.receive(c),
                _ => return Ok(()),
            },
            () = link.brk.notified() => return Ok(()),
        }
    }
}

/// Reports the inventory whenever it changes (a report may be lost like any message).
async fn report_changes(link: Arc<Link>) {
    loop {
        link.agent.changed.notified().await;
        if link.fate() == Fate::Drop {
            continue;
        }
        let inv = prewarm_agent::control::inventory(&link.agent);
        if let Some((svc, h)) = link.coordinator() {
            let call = h.spawn(async move { svc.report(Request::new(inv)).await.is_ok() });
            let _ = tokio::time::timeout(Duration::from_secs(10), call).await;
        }
    }
}

/// Acknowledges the loads the agent started itself (refreshes, resumed transfers).
async fn forward_finished(link: Arc<Link>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Finished>) {
    while let Some(f) = rx.recv().await {
        let mut ack = TransferAck {
            capacity: link.agent.config().name.as_str().to_owned(),
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
        link.send_ack(ack).await;
    }
}

fn fill_ok(ack: &mut TransferAck, loaded: Loaded) {
    ack.ok = true;
    ack.version = loaded.held.version.get();
    ack.state_bytes = loaded.held.bytes;
    match loaded.report {
        Some(rep) => {
            ack.wire_bytes = rep.wire_bytes;
            ack.reused_bytes = rep.reused_bytes;
            ack.resumed_bytes = rep.resumed_bytes;
            ack.duration_us = rep.micros;
        }
        None => ack.already_held = true,
    }
}

/// A `Load`: the exact version, installed, then acknowledged.
pub async fn carry_out(link: Arc<Link>, l: wire::Load) {
    let mut ack = TransferAck {
        transfer_id: l.transfer_id,
        capacity: link.agent.config().name.as_str().to_owned(),
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
        (Ok(r), Some(v)) => match link.agent.load(&r, VersionReq::Exact(v), priority).await {
            Ok(loaded) => fill_ok(&mut ack, loaded),
            Err(e) => {
                ack.failure = FailureKind::from(&e) as i32;
                ack.error = e.to_string();
            }
        },
        _ => ack.failure = FailureKind::InvalidRequest as i32,
    }
    link.send_ack(ack).await;
    link.stats().finished += 1;
}
