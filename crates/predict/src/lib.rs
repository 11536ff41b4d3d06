//! The predictive side of prewarm: real traces into history records ([`import`]), predictors
//! behind one trait ([`Predictor`]: baselines now, learned models as issue 4 lands), and
//! online evaluation ([`eval`]).

pub mod baselines;
pub mod eval;
pub mod histogram;
pub mod import;
pub mod neural;
mod predictor;

pub use predictor::{Context, Prediction, Predictor, VersionPolicy};
