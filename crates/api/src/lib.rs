//! Typed values ⇄ the control plane's wire messages, in one place that the coordinator (the
//! sender) and the agent (the receiver) share, so neither parses the other's encoding by hand;
//! and ([`http`]) the JSON of both HTTP APIs, shared by their servers and the Rust clients.

pub mod http;

pub use http::{
    ApiError, DepartedState, Ensured, EventIn, EventOutcome, HeldState, InventoryAnswer, Lease,
};

use prewarm_core::ResourceId;
use prewarm_engine::{Curve, Expected, Hint, Rule};
use prewarm_proto::wire::Retain;

/// The wire form of `hint` for `resource`.
pub fn retain_of(resource: &ResourceId, hint: &Hint) -> Retain {
    Retain {
        resource: resource.as_str().to_owned(),
        keep_until: hint.keep_until,
        fetch_s: hint.fetch_s,
        share: hint.share,
        curve: hint.curve.as_ref().map(Curve::to_bytes).unwrap_or_default(),
        expected_p: hint.expected.map(|e| e.p),
        expected_until: hint.expected.map(|e| e.until),
        next_at: hint.next_at,
    }
}

/// Why a `Retain` message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetainError {
    /// The resource id is invalid.
    #[error("invalid resource id: {0}")]
    Resource(String),
    /// A number is out of range (negative, NaN, a share or chance outside [0, 1]).
    #[error("{0} is out of range")]
    Range(&'static str),
    /// The curve is not a valid survival curve.
    #[error("malformed next-use curve")]
    Curve,
}

/// The typed hint of a `Retain` message.
pub fn hint_of(r: &Retain) -> Result<(ResourceId, Hint), RetainError> {
    let resource =
        ResourceId::new(&r.resource).map_err(|e| RetainError::Resource(e.to_string()))?;
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    if r.keep_until.is_nan() {
        return Err(RetainError::Range("keep_until"));
    }
    if !(r.fetch_s.is_finite() && r.fetch_s >= 0.0) {
        return Err(RetainError::Range("fetch_s"));
    }
    if !unit(r.share) {
        return Err(RetainError::Range("share"));
    }
    let curve = match r.curve.is_empty() {
        true => None,
        false => Some(Curve::from_bytes(&r.curve).ok_or(RetainError::Curve)?),
    };
    let expected = match (r.expected_p, r.expected_until) {
        (Some(p), Some(until)) if unit(p) && !until.is_nan() => Some(Expected { p, until }),
        (None, None) => None,
        _ => return Err(RetainError::Range("expected")),
    };
    if r.next_at.is_some_and(f64::is_nan) {
        return Err(RetainError::Range("next_at"));
    }
    Ok((
        resource,
        Hint {
            keep_until: r.keep_until,
            fetch_s: r.fetch_s,
            share: r.share,
            curve,
            expected,
            next_at: r.next_at,
        },
    ))
}

/// The eviction rule named in a `Welcome` (`None` for an empty or unknown name).
pub fn rule_of(name: &str) -> Option<Rule> {
    Rule::by_name(name)
}

/// The wire name of `rule`.
pub fn rule_name(rule: Rule) -> &'static str {
    rule.name()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hints_round_trip_and_bad_ones_are_refused() {
        let r = ResourceId::new("m/a").unwrap();
        let h = Hint {
            keep_until: f64::INFINITY,
            fetch_s: 0.5,
            share: 0.25,
            curve: Some(Curve::point(Some(30.0))),
            expected: Some(Expected {
                p: 0.7,
                until: 100.0,
            }),
            next_at: None,
        };
        let w = retain_of(&r, &h);
        assert_eq!(hint_of(&w).unwrap(), (r.clone(), h));
        let bad = |f: &dyn Fn(&mut Retain)| {
            let mut w = w.clone();
            f(&mut w);
            hint_of(&w).unwrap_err()
        };
        assert_eq!(bad(&|w| w.share = 2.0), RetainError::Range("share"));
        assert_eq!(
            bad(&|w| w.fetch_s = f64::NAN),
            RetainError::Range("fetch_s")
        );
        assert_eq!(bad(&|w| w.curve = vec![1, 2, 3]), RetainError::Curve);
        assert_eq!(
            bad(&|w| w.expected_until = None),
            RetainError::Range("expected")
        );
        assert!(matches!(
            bad(&|w| w.resource = "../x".into()),
            RetainError::Resource(_)
        ));
        for rule in [
            Rule::Lru,
            Rule::S3Fifo,
            Rule::Gdsf,
            Rule::Value,
            Rule::Belady,
        ] {
            assert_eq!(rule_of(rule_name(rule)), Some(rule));
        }
        assert_eq!(rule_of(""), None);
    }
}
