//! The predictive side of prewarm: predictors behind one trait ([`Predictor`]: baselines and
//! learned models) and online evaluation ([`eval`]). Traces become history records in
//! `prewarm-import`.

pub mod baselines;
pub mod eval;
pub mod histogram;
pub mod mixture;
pub mod neural;
mod predictor;

pub use predictor::{Context, Prediction, Predictor, VersionPolicy};

/// Why a predictor spec could not be turned into a predictor.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not a name this crate knows.
    #[error(
        "unknown model {0:?} (frequency, markov, histogram, gru:DIR, transformer:DIR, mixture[:SPEC])"
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
}

/// Per-key state a learned model keeps at most (least recently seen keys forgotten).
pub const MAX_KEYS: usize = 1 << 20;

/// The one table of predictors: `frequency`, `markov`, `histogram`, a saved learned model
/// `gru:DIR` / `transformer:DIR` (from `prewarm train`), or `mixture[:SPEC]` — the online
/// mixture ([`mixture::Mixture`]) of SPEC (when given), Markov and frequency. The
/// coordinator, `eval`, `replay` and the benchmarks all build their models here.
pub fn by_name(spec: &str) -> Result<Box<dyn Predictor>, SpecError> {
    let tau = 3600.0;
    if let Some(rest) = spec.strip_prefix("mixture") {
        let mut members: Vec<Box<dyn Predictor>> = Vec::new();
        match rest.strip_prefix(':') {
            Some(inner) => members.push(by_name(inner)?),
            None if rest.is_empty() => {}
            None => return Err(SpecError::Unknown(spec.to_owned())),
        }
        members.push(Box::new(baselines::Markov::new(2, tau)));
        members.push(Box::new(baselines::Frequency::new(tau)));
        return Ok(Box::new(mixture::Mixture::new("mixture", members)));
    }
    Ok(match spec {
        "frequency" => Box::new(baselines::Frequency::new(tau)),
        "markov" => Box::new(baselines::Markov::new(2, tau)),
        "histogram" => Box::new(histogram::Histogram::new()),
        s => match s.split_once(':') {
            Some(("gru" | "transformer", dir)) => Box::new(
                neural::Learned::load(std::path::Path::new(dir), MAX_KEYS).map_err(|source| {
                    SpecError::Load {
                        spec: s.to_owned(),
                        source,
                    }
                })?,
            ),
            _ => return Err(SpecError::Unknown(s.to_owned())),
        },
    })
}
