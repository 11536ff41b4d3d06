//! The predictive side of prewarm: turning real traces into history records (`import`), and
//! (as issue 4 lands) predictors behind one trait, training and evaluation.

pub mod import;
