//! Events from a NATS JetStream stream: the coordinator binds a durable pull consumer on the
//! stream holding the events subject (creating both if missing, with `replicas` copies on a
//! cluster), feeds each message's events (one JSON event or an array, as `POST /v1/events`
//! takes them) through the predictive loop, and acknowledges the message only after that,
//! so a coordinator that dies mid-way gets it again after its restart. A message that is
//! not valid events is terminated (never redelivered) and counted as refused.
//!
//! JetStream delivers at least once. A message whose acknowledgement was lost (a node died
//! between the handling and the ack) comes again: the stream sequences handled recently are
//! remembered ([`Handled`]), so such a message is acknowledged, counted, and not handled
//! twice. Publishers that may repeat a publish set `Nats-Msg-Id`: the stream keeps one copy
//! per id within its duplicate window (2 minutes by default).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message, consumer};
use futures::StreamExt;

use crate::Coordinator;
use crate::predictive::parse_events;

/// Where the events come from.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `nats://host:port`, or a cluster's servers separated by commas.
    pub url: String,
    /// The events subject (wildcards allowed).
    pub subject: String,
    /// The JetStream stream holding it.
    pub stream: String,
    /// The durable consumer's name: one per coordinator deployment.
    pub durable: String,
    /// How long a delivered message waits for its acknowledgement before it is delivered
    /// again (what a coordinator that died mid-message costs its successor).
    pub ack_wait: Duration,
    /// Copies of the stream (and its consumer) when the coordinator creates it.
    pub replicas: usize,
}

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {why}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        why: String,
    },
    /// A JetStream call failed.
    #[error("JetStream: {0}")]
    JetStream(String),
}

fn js(e: impl std::fmt::Display) -> NatsError {
    NatsError::JetStream(e.to_string())
}

/// Stream sequences handled recently (the newest [`Handled::CAP`]), across reconnections.
#[derive(Debug, Default)]
pub struct Handled {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Handled {
    /// Sequences remembered: far more than a consumer has unacknowledged at once (1,000 by
    /// default), so a redelivery finds its first delivery here.
    pub const CAP: usize = 1 << 16;

    /// Whether `seq` was handled.
    pub fn contains(&self, seq: u64) -> bool {
        self.set.contains(&seq)
    }

    /// Records `seq` as handled.
    pub fn insert(&mut self, seq: u64) {
        if self.set.insert(seq) {
            self.order.push_back(seq);
        }
        while self.order.len() > Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// The durable consumer, the stream and consumer created or updated to `cfg`.
async fn bind(cfg: &NatsConfig) -> Result<consumer::PullConsumer, NatsError> {
    let servers: Vec<&str> = cfg.url.split(',').map(str::trim).collect();
    let client = async_nats::connect(servers.as_slice())
        .await
        .map_err(|e| NatsError::Connect {
            url: cfg.url.clone(),
            why: e.to_string(),
        })?;
    let ctx = jetstream::new(client);
    let mut stream = ctx
        .get_or_create_stream(jetstream::stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![cfg.subject.clone()],
            num_replicas: cfg.replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(js)?;
    let have = stream.info().await.map_err(js)?.config.num_replicas;
    if have < cfg.replicas {
        tracing::warn!(
            "NATS stream {} has {have} replica(s), fewer than the {} asked: it was created \
             before (`nats stream edit {} --replicas {}` raises it)",
            cfg.stream,
            cfg.replicas,
            cfg.stream,
            cfg.replicas
        );
    }
    // Created, or updated to these settings (the ack wait may change between releases).
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(cfg.durable.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            filter_subject: cfg.subject.clone(),
            ..Default::default()
        })
        .await
        .map_err(js)
}

/// Handles one message's events (unless a delivery of it was handled before) and
/// acknowledges it.
async fn take(c: &Arc<Coordinator>, m: Message, handled: &mut Handled) {
    let seq = m.info().ok().map(|i| i.stream_sequence);
    if seq.is_some_and(|s| handled.contains(s)) {
        c.metrics.nats_redelivered.inc();
        if let Err(e) = m.ack().await {
            tracing::warn!("NATS: ack of a redelivered message failed: {e}");
        }
        return;
    }
    match parse_events(&m.payload) {
        Ok((events, _)) => {
            for e in &events {
                c.handle_event(e, true).await;
            }
            if let Some(s) = seq {
                handled.insert(s);
            }
            if let Err(e) = m.ack().await {
                tracing::warn!("NATS: ack failed (the message will come again): {e}");
            }
        }
        Err(e) => {
            tracing::warn!("NATS message on {}: {e}; dropped", m.subject);
            c.metrics.events_refused.inc();
            let _ = m.ack_with(AckKind::Term).await;
        }
    }
}

/// Consumes events until the connection is lost for good.
pub async fn consume_nats(
    c: &Arc<Coordinator>,
    cfg: &NatsConfig,
    handled: &mut Handled,
) -> Result<(), NatsError> {
    let consumer = bind(cfg).await?;
    tracing::info!(
        "consuming events from NATS {} ({} in stream {}, consumer {})",
        cfg.url,
        cfg.subject,
        cfg.stream,
        cfg.durable
    );
    let mut messages = consumer.messages().await.map_err(js)?;
    while let Some(m) = messages.next().await {
        match m {
            Ok(m) => take(c, m, handled).await,
            Err(e) => tracing::warn!("NATS: {e}"),
        }
    }
    Ok(())
}

/// Consumes events forever, reconnecting after failures.
pub async fn run_nats(c: Arc<Coordinator>, cfg: NatsConfig) {
    let mut handled = Handled::default();
    loop {
        match consume_nats(&c, &cfg, &mut handled).await {
            Ok(()) => tracing::warn!("NATS: the message stream ended; reconnecting"),
            Err(e) => tracing::warn!("{e}; retrying in 1 s"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Handled;

    #[test]
    fn handled_sequences_are_remembered_up_to_the_cap() {
        let mut h = Handled::default();
        for s in 1..=(Handled::CAP as u64 + 10) {
            h.insert(s);
        }
        h.insert(20); // again: no second entry
        assert!(!h.contains(10) && h.contains(11) && h.contains(Handled::CAP as u64 + 10));
        assert_eq!(h.order.len(), Handled::CAP);
    }
}
