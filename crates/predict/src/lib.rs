//! The predictive side of prewarm: predictors behind one trait ([`Predictor`]: baselines and
//! learned models) and online evaluation ([`eval`]). Traces become history records in
//! `prewarm-import`.

pub mod baselines;
pub mod eval;
pub mod histogram;
pub mod mixture;
pub mod neural;
mod predictor;
mod spec;

pub use predictor::{Context, Prediction, Predictor, VersionPolicy};
pub use spec::{MAX_KEYS, Options, SpecError, by_name, by_name_with};
