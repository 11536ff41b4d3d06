//! The simulator on a real trace (NASA-HTTP, 1 July 1995, from `../shared/traces`): the
//! policies order as they must, the oracle bounds every one of them, and a replay is
//! repeatable.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use prewarm_import::{Format, ImportOptions, import};
use prewarm_predict::baselines::Markov;
use prewarm_predict::histogram::Histogram;
use prewarm_sim::{Policy, PolicyKind, SimConfig, replay};

fn traces() -> Option<PathBuf> {
    prewarm_import::shared_traces(Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn nasa_replay_orders_the_policies_and_repeats() {
    let Some(t) = traces() else { return };
    let (records, _) = import(
        Format::Clf,
        &[t.join("nasa1995/nasa_19950701.tsv")],
        &ImportOptions::default(),
    )
    .unwrap();
    let cfg = SimConfig {
        cache_bytes: 4 << 20,
        bandwidth: 12.5e6,
        default_bytes: 4_000,
        ..SimConfig::default()
    };
    let policies = || {
        vec![
            Policy::new("none", PolicyKind::None),
            Policy::new("lru", PolicyKind::Lru),
            Policy::new("s3fifo", PolicyKind::S3Fifo),
            Policy::new("gdsf", PolicyKind::Gdsf),
            Policy::new("histogram", PolicyKind::Histogram(Histogram::new())),
            Policy::new(
                "mixture",
                PolicyKind::Predictive(prewarm_predict::by_name("mixture").unwrap()),
            ),
            Policy::new(
                "markov",
                PolicyKind::Predictive(Box::new(Markov::new(2, 3600.0))),
            ),
            Policy::new("oracle", PolicyKind::Oracle),
        ]
    };
    let rows: Vec<_> = policies()
        .into_iter()
        .map(|p| replay(&records, p, &cfg))
        .collect();
    let again: Vec<_> = policies()
        .into_iter()
        .map(|p| replay(&records, p, &cfg))
        .collect();
    assert_eq!(rows, again, "the same inputs give the same numbers");
    let warm = |name: &str| rows.iter().find(|r| r.policy == name).unwrap().warm_rate;
    assert_eq!(warm("none"), 0.0);
    assert!(warm("lru") > 0.3, "{rows:?}");
    assert!(
        warm("markov") > warm("lru"),
        "prediction beats keep-alive alone"
    );
    assert!(
        warm("gdsf") > warm("lru"),
        "size-aware eviction pays on a web log"
    );
    for r in &rows {
        assert!(
            r.warm_rate <= warm("oracle"),
            "{} beat the oracle",
            r.policy
        );
        assert_eq!(r.executions, 8_000);
    }
    assert!(warm("oracle") > 0.95);
}
