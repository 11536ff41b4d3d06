//! Baselines on a real trace (NASA 1995, in `../shared/traces` beside the checkout, as in CI):
//! they must reach the levels an independent reference script measured.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use prewarm_import::{Format, ImportOptions, import};
use prewarm_predict::baselines::{Frequency, Markov, Oracle};
use prewarm_predict::eval::evaluate;

/// The shared traces, or `None` (with a note) when this checkout has none beside it.
fn traces() -> Option<PathBuf> {
    prewarm_import::shared_traces(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn baselines_reach_the_reference_level_on_nasa() {
    let Some(t) = traces() else { return };
    let (recs, _) = import(
        Format::Clf,
        &[t.join("nasa1995/nasa_19950701.tsv")],
        &ImportOptions::default(),
    )
    .unwrap();
    // Reference (guide, independent script): per-key first-order Markov top-1 0.371, top-5
    // 0.561; global frequency top-5 0.225.
    let markov = evaluate(&mut Markov::new(2, 3600.0), &recs, 0.5, 60.0);
    assert!(markov.top1 > 0.35 && markov.top5 > 0.55, "{markov:?}");
    // Per-key sequences are what Markov models; its probabilities should mean what they say.
    assert!(markov.recall5_key_horizon > 0.3, "{markov:?}");
    assert!(markov.calibration_error < 0.1, "{markov:?}");
    assert!(markov.precision_p50_horizon > 0.7, "{markov:?}");
    let freq = evaluate(&mut Frequency::new(3600.0), &recs, 0.5, 60.0);
    assert!((0.18..0.27).contains(&freq.top5), "{freq:?}");
    assert!(
        markov.recall5_key_horizon > freq.recall5_key_horizon,
        "{markov:?} vs {freq:?}"
    );
    let oracle = evaluate(&mut Oracle::new(&recs, 60.0), &recs, 0.5, 60.0);
    assert_eq!((oracle.top1, oracle.events), (1.0, 5000));
}
