//! Helpers shared by the predictors; the trait itself is `prewarm_core`'s (the decision
//! engine needs it without the models).

use prewarm_core::ResourceId;
#[cfg(test)]
use prewarm_core::{Event, HistoryRecord};

pub use prewarm_core::{Context, Prediction, Predictor, VersionPolicy};

pub(crate) fn latest(resource: ResourceId, probability: f64) -> Prediction {
    Prediction {
        resource,
        version: VersionPolicy::Latest,
        probability: probability.clamp(0.0, 1.0),
    }
}

/// A one-read history record, for tests.
#[cfg(test)]
pub(crate) fn test_record(ts: f64, key: &str, resource: &str) -> HistoryRecord {
    HistoryRecord {
        ts,
        event: Event {
            kind: "t".into(),
            key: key.into(),
            attrs: Default::default(),
            needs: Vec::new(),
        },
        capacity: None,
        reads: vec![prewarm_core::ReadAccess {
            resource: ResourceId::new(resource).expect("valid test id"),
            version: None,
            bytes: 1,
        }],
        writes: vec![],
        duration_s: 0.0,
    }
}
