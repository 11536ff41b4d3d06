//! The one table of predictors: a spec (`markov`, `gru:DIR`, `mixture:gru:DIR`, …) to a
//! predictor. The coordinator, `eval`, `replay` and the benchmarks all build their models
//! here; [`Options`] carries what only some callers set (recency, Markov order, the oracle's
//! view of the future, and where scoring begins, so a model is never scored on what it
//! trained on).

use prewarm_core::HistoryRecord;

use crate::{Predictor, baselines, histogram, mixture, neural};

/// Per-key state a learned model keeps at most (least recently seen keys forgotten).
pub const MAX_KEYS: usize = 1 << 20;

/// Why a predictor spec could not be turned into a predictor.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not a name this crate knows.
    #[error(
        "unknown model {0:?} (frequency, markov, histogram, oracle, gru:DIR, transformer:DIR, mixture[:SPEC])"
    )]
    Unknown(String),
    /// A saved model could not be loaded.
    #[error("loading model {spec}: {source}")]
    Load {
        /// The spec.
        spec: String,
        /// Why.
        source: neural::ModelError,
    },
    /// `gru:DIR` names a directory holding a transformer, or the reverse.
    #[error("{dir} holds a {holds} model, not a {kind}")]
    WrongKind {
        /// The directory.
        dir: String,
        /// The architecture the spec names.
        kind: String,
        /// The one the directory holds.
        holds: &'static str,
    },
    /// The model trained on records the caller scores.
    #[error(
        "{spec} was trained on records up to t={last_ts} but the scored part starts at t={scored_from}: \
         train with --until no larger than --warmup, so the model is scored on the future"
    )]
    Leak {
        /// The spec.
        spec: String,
        /// Its last training record's time.
        last_ts: f64,
        /// The first scored record's time.
        scored_from: f64,
    },
    /// `oracle` asked for where no future is known.
    #[error("the oracle needs the history it predicts (eval and replay only)")]
    NoFuture,
}

/// What some callers set; [`Options::default`] is the coordinator's.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// Time constant of recency weighting, seconds.
    pub tau: f64,
    /// Markov order.
    pub order: usize,
    /// The records and horizon (seconds) the `oracle` reads ahead in.
    pub future: Option<(&'a [HistoryRecord], f64)>,
    /// Time of the first scored record: a learned model trained past it is refused.
    pub scored_from: Option<f64>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            tau: 3600.0,
            order: 2,
            future: None,
            scored_from: None,
        }
    }
}

/// `frequency`, `markov`, `histogram`, a saved learned model `gru:DIR` / `transformer:DIR`
/// (from `prewarm train`), or `mixture[:SPEC[+SPEC…]]` — the online mixture
/// ([`mixture::Mixture`]) of the SPECs (when given), Markov and frequency — with the default
/// [`Options`].
pub fn by_name(spec: &str) -> Result<Box<dyn Predictor>, SpecError> {
    by_name_with(spec, &Options::default())
}

/// [`by_name`] with `o`; also `oracle` when `o` gives the future.
pub fn by_name_with(spec: &str, o: &Options<'_>) -> Result<Box<dyn Predictor>, SpecError> {
    if let Some(rest) = spec.strip_prefix("mixture") {
        let learned = match rest.strip_prefix(':') {
            Some(inner) => inner
                .split('+')
                .map(|m| by_name_with(m, o))
                .collect::<Result<Vec<_>, _>>()?,
            None if rest.is_empty() => Vec::new(),
            None => return Err(SpecError::Unknown(spec.to_owned())),
        };
        return Ok(mixture_of(learned, o));
    }
    Ok(match spec {
        "frequency" => Box::new(baselines::Frequency::new(o.tau)),
        "markov" => Box::new(baselines::Markov::new(o.order, o.tau)),
        "histogram" => Box::new(histogram::Histogram::new()),
        "oracle" => {
            let (records, horizon) = o.future.ok_or(SpecError::NoFuture)?;
            Box::new(baselines::Oracle::new(records, horizon))
        }
        s => match s.split_once(':') {
            Some((kind @ ("gru" | "transformer"), dir)) => Box::new(learned(s, kind, dir, o)?),
            _ => return Err(SpecError::Unknown(s.to_owned())),
        },
    })
}

/// The mixture `mixture[:SPEC[+SPEC…]]` names: the `learned` members (when given), Markov
/// and frequency, mixed by online weights.
fn mixture_of(learned: Vec<Box<dyn Predictor>>, o: &Options<'_>) -> Box<dyn Predictor> {
    let mut members = learned;
    members.push(Box::new(baselines::Markov::new(o.order, o.tau)));
    members.push(Box::new(baselines::Frequency::new(o.tau)));
    Box::new(mixture::Mixture::new("mixture", members))
}

/// Loads `kind:dir`, checking its architecture and that it trained before `o.scored_from`.
fn learned(
    spec: &str,
    kind: &str,
    dir: &str,
    o: &Options<'_>,
) -> Result<neural::Learned, SpecError> {
    let p = neural::Learned::load(std::path::Path::new(dir), MAX_KEYS).map_err(|source| {
        SpecError::Load {
            spec: spec.to_owned(),
            source,
        }
    })?;
    let cfg = &p.model().config;
    if cfg.arch.name() != kind {
        return Err(SpecError::WrongKind {
            dir: dir.to_owned(),
            kind: kind.to_owned(),
            holds: cfg.arch.name(),
        });
    }
    if let Some(from) = o.scored_from
        && cfg.training.last_ts > from
    {
        return Err(SpecError::Leak {
            spec: spec.to_owned(),
            last_ts: cfg.training.last_ts,
            scored_from: from,
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_build_their_predictors_and_unknown_ones_are_refused() {
        for spec in ["frequency", "markov", "histogram", "mixture"] {
            assert!(by_name(spec).is_ok(), "{spec}");
        }
        assert!(matches!(by_name("psychic"), Err(SpecError::Unknown(_))));
        assert!(matches!(by_name("mixturex"), Err(SpecError::Unknown(_))));
        assert!(matches!(by_name("oracle"), Err(SpecError::NoFuture)));
        let future = Options {
            future: Some((&[], 60.0)),
            ..Options::default()
        };
        assert!(by_name_with("oracle", &future).is_ok());
        assert!(matches!(
            by_name("gru:/nonexistent/model"),
            Err(SpecError::Load { .. })
        ));
        // A mixture takes several members joined by `+`; a bad one fails the whole spec.
        assert!(by_name("mixture:markov+frequency").is_ok());
        assert!(matches!(
            by_name("mixture:markov+gru:/nonexistent/model"),
            Err(SpecError::Load { .. })
        ));
        assert!(matches!(
            by_name("mixture:markov+"),
            Err(SpecError::Unknown(_))
        ));
    }
}
