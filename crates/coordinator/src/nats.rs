//! Events from a NATS JetStream stream: the coordinator binds a durable pull consumer on the
//! stream holding the events subject (creating both if missing), feeds each message's events
//! (one JSON event or an array, as `POST /v1/events` takes them) through the predictive
//! loop, and acknowledges the message only after that, so a coordinator that dies mid-way
//! gets it again after its restart. A message that is not valid events is terminated (never
//! redelivered) and counted as refused.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;

use crate::Coordinator;
use crate::predictive::parse_events;

/// Where the events come from.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `nats://host:port`.
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

/// Consumes events until the connection is lost for good.
pub async fn consume_nats(c: &Arc<Coordinator>, cfg: &NatsConfig) -> Result<(), NatsError> {
    let client = async_nats::connect(&cfg.url)
        .await
        .map_err(|e| NatsError::Connect {
            url: cfg.url.clone(),
            why: e.to_string(),
        })?;
    let ctx = jetstream::new(client);
    let stream = ctx
        .get_or_create_stream(jetstream::stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![cfg.subject.clone()],
            ..Default::default()
        })
        .await
        .map_err(js)?;
    // Created, or updated to these settings (the ack wait may change between releases).
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(cfg.durable.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: cfg.ack_wait,
            filter_subject: cfg.subject.clone(),
            ..Default::default()
        })
        .await
        .map_err(js)?;
    tracing::info!(
        "consuming events from NATS {} ({} in stream {}, consumer {})",
        cfg.url,
        cfg.subject,
        cfg.stream,
        cfg.durable
    );
    let mut messages = consumer.messages().await.map_err(js)?;
    while let Some(m) = messages.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("NATS: {e}");
                continue;
            }
        };
        match parse_events(&m.payload) {
            Ok((events, _)) => {
                for e in &events {
                    c.handle_event(e, true).await;
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
    Ok(())
}

/// Consumes events forever, reconnecting after failures.
pub async fn run_nats(c: Arc<Coordinator>, cfg: NatsConfig) {
    loop {
        match consume_nats(&c, &cfg).await {
            Ok(()) => tracing::warn!("NATS: the message stream ended; reconnecting"),
            Err(e) => tracing::warn!("{e}; retrying in 1 s"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
