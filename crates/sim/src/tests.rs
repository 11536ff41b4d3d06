//! Replays of small synthetic histories whose right answers are known.

#![allow(clippy::unwrap_used)]

use prewarm_core::{Event, HistoryRecord, ReadAccess, ResourceId, WriteAccess};
use prewarm_predict::baselines::Markov;
use prewarm_predict::{Context, Prediction, Predictor, VersionPolicy};

use crate::{Policy, PolicyKind, SimConfig, replay};

pub(crate) fn rec(ts: f64, key: &str, reads: &[&str], writes: &[&str]) -> HistoryRecord {
    HistoryRecord {
        ts,
        event: Event {
            kind: "http".into(),
            key: key.into(),
            attrs: Default::default(),
            needs: vec![],
        },
        capacity: None,
        reads: reads
            .iter()
            .map(|r| ReadAccess {
                resource: ResourceId::new(*r).unwrap(),
                version: None,
                bytes: 10_000_000,
            })
            .collect(),
        writes: writes
            .iter()
            .map(|r| WriteAccess {
                resource: ResourceId::new(*r).unwrap(),
                bytes: 1,
            })
            .collect(),
        duration_s: 0.1,
    }
}

/// Sessions walking a fixed cycle a → b → c → d, one step every 30 s, spread over keys,
/// with a long gap (beyond any keep-alive) every few steps.
pub(crate) fn cyclic() -> Vec<HistoryRecord> {
    let cycle = ["s/a", "s/b", "s/c", "s/d"];
    let mut out = Vec::new();
    let mut t = 1_000.0;
    for i in 0..2_000usize {
        let key = format!("k{}", i % 3);
        out.push(rec(t, &key, &[cycle[(i / 3) % 4]], &[]));
        t += if i % 40 == 39 { 5_000.0 } else { 10.0 };
    }
    out
}

fn cfg() -> SimConfig {
    SimConfig {
        capacities: 2,
        cache_bytes: 25_000_000,
        bandwidth: 100e6,
        lead_s: 1.0,
        keep_alive_s: 60.0,
        // Holding 10 MB for the 5,000 s gaps (0.5 s at this price) is not worth its 0.1 s
        // fetch; for the 10 s steps it is.
        memory_price: 0.01,
        ..SimConfig::default()
    }
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::new("none", PolicyKind::None),
        Policy::new("lru", PolicyKind::Lru),
        Policy::new(
            "markov",
            PolicyKind::Predictive(Box::new(Markov::new(1, 3600.0))),
        ),
        Policy::new("oracle", PolicyKind::Oracle),
    ]
}

#[test]
fn the_same_inputs_give_the_same_numbers() {
    let h = cyclic();
    for (a, b) in policies().into_iter().zip(policies()) {
        assert_eq!(replay(&h, a, &cfg()), replay(&h, b, &cfg()));
    }
}

#[test]
fn prediction_beats_keep_alive_and_the_oracle_bounds_everyone() {
    let h = cyclic();
    let rows: Vec<_> = policies()
        .into_iter()
        .map(|p| replay(&h, p, &cfg()))
        .collect();
    let (none, lru, markov, oracle) = (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert_eq!(none.warm, 0, "nothing is kept: every execution starts cold");
    assert!(none.ttr_p50_ms >= 100.0, "{none:?}"); // 10 MB at 100 MB/s
    assert!(lru.warm_rate > 0.2, "{lru:?}");
    // The cycle is learnable: the next state arrives within the 1 s lead (0.1 s transfer),
    // including after the gaps that empty the keep-alive caches.
    assert!(markov.warm_rate > lru.warm_rate, "{markov:?} vs {lru:?}");
    assert!(markov.bytes_predictive > 0);
    assert!(oracle.warm_rate > 0.99, "{oracle:?}");
    for r in &rows {
        assert!(r.warm <= oracle.warm, "{} beat the oracle", r.policy);
        assert_eq!(r.executions, 1_600); // the warm-up (20%) is not counted
        assert_eq!(r.ttr_percentiles_ms.len(), 101);
    }
    // Without lead time nothing can arrive before its execution: what starts warm was kept
    // (the oracle's knowledge still places each event where its state is): the oracle keeps
    // the whole cycle (two states per capacity) by Belady's order and bounds the others.
    let c = SimConfig {
        lead_s: 0.0,
        ..cfg()
    };
    let at0 = |p: Policy| replay(&h, p, &c);
    let o = at0(Policy::new("oracle", PolicyKind::Oracle));
    let b = at0(Policy::new("belady", PolicyKind::Belady));
    let l = at0(Policy::new("lru", PolicyKind::Lru));
    assert_eq!(o.bytes_predictive, 0, "{o:?}");
    assert!(
        o.warm_rate > 0.99,
        "kept for its own execution, not dropped: {o:?}"
    );
    assert!(o.warm >= b.warm && o.warm >= l.warm, "{o:?} {b:?} {l:?}");
}

#[test]
fn ahead_prewarms_pay_without_lead_and_the_oracle_still_bounds() {
    // No lead: a state can only be ready if it moved before its event, i.e. after the key's
    // previous execution (what `ahead` pre-warms).
    let h = cyclic();
    let run = |ahead: bool| -> Vec<_> {
        let c = SimConfig {
            lead_s: 0.0,
            ahead,
            ..cfg()
        };
        policies().into_iter().map(|p| replay(&h, p, &c)).collect()
    };
    let (off, on) = (run(false), run(true));
    let (lru_off, markov_off, oracle_off) = (&off[1], &off[2], &off[3]);
    let (lru_on, markov_on, oracle_on) = (&on[1], &on[2], &on[3]);
    assert_eq!(
        lru_on, lru_off,
        "model-free policies have nothing to pre-warm"
    );
    assert!(
        markov_on.warm_rate > markov_off.warm_rate,
        "{markov_on:?} vs {markov_off:?}"
    );
    // The oracle keeps every copy's next use current, so it holds the cycle without
    // pre-warming; pre-warming ahead does not take it below what a learned policy reaches.
    assert!(oracle_off.warm_rate > 0.99, "{oracle_off:?}");
    assert!(oracle_on.warm_rate > 0.95, "{oracle_on:?}");
    for (rows, oracle) in [(&off, oracle_off), (&on, oracle_on)] {
        for r in rows.iter() {
            assert!(r.warm <= oracle.warm, "{} beat the oracle", r.policy);
        }
    }
}

/// Predicts, with certainty, a state nobody reads.
struct Wrong;

impl Predictor for Wrong {
    fn name(&self) -> &str {
        "wrong"
    }
    fn observe(&mut self, _: &HistoryRecord) {}
    fn predict(&mut self, _: &Context<'_>, _: usize) -> Vec<Prediction> {
        vec![Prediction {
            resource: ResourceId::new("never/read").unwrap(),
            version: VersionPolicy::Latest,
            probability: 1.0,
        }]
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

#[test]
fn bytes_moved_and_never_read_are_wasted() {
    let h = cyclic();
    let p = Policy::new("wrong", PolicyKind::Predictive(Box::new(Wrong)));
    let c = SimConfig {
        default_bytes: 1_000_000, // the unread state's size (no record names it)
        warmup: 0.0,              // it is moved early, then held
        ..cfg()
    };
    let r = replay(&h, p, &c);
    assert!(r.bytes_predictive > 0);
    assert_eq!(r.wasted_bytes, r.bytes_predictive);
    assert!(r.memory_gb_s > 0.0);
}

#[test]
fn a_write_makes_held_copies_stale() {
    // Read a, write a (new version), read a again soon: the second read cannot be warm under
    // keep-alive alone; without the write it is.
    let mut h = Vec::new();
    for i in 0..100 {
        let t = 1_000.0 + 100.0 * f64::from(i);
        h.push(rec(t, "k", &["v/a"], &[]));
        h.push(rec(
            t + 10.0,
            "k",
            &["v/b"],
            if i % 2 == 0 { &["v/a"] } else { &[] },
        ));
    }
    let lru = Policy::new("lru", PolicyKind::Lru);
    let c = SimConfig {
        capacities: 1,
        cache_bytes: 1 << 30,
        keep_alive_s: 1_000.0,
        warmup: 0.0,
        ..cfg()
    };
    let r = replay(&h, lru, &c);
    // Cold: the first a, the first b, and a after each of the 50 writes (rounds 1, 3, …, 99).
    assert_eq!(r.executions, 200);
    assert_eq!(r.warm, 200 - 2 - 50);
}

/// Predicts `x` with probability `px` and `y` with `1 - px`, whatever the event.
struct Fixed {
    px: f64,
}

impl Predictor for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn observe(&mut self, _: &HistoryRecord) {}
    fn predict(&mut self, _: &Context<'_>, _: usize) -> Vec<Prediction> {
        let p = |r: &str, probability: f64| Prediction {
            resource: ResourceId::new(r).unwrap(),
            version: VersionPolicy::Latest,
            probability,
        };
        vec![p("c/x", self.px), p("c/y", 1.0 - self.px)]
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

#[test]
fn a_calibrated_model_keeps_what_an_over_confident_one_gives_away() {
    // One capacity holding one 10 MB state; seven executions in ten read y, three read x.
    // Told honestly (x at 0.3), the planner keeps y rather than trade it for a likely miss;
    // told x at 0.9, it keeps swapping y out for x and loses y's hits.
    let h: Vec<HistoryRecord> = (0..500)
        .map(|i| {
            let r = if i % 10 < 3 { "c/x" } else { "c/y" };
            rec(1_000.0 + 10.0 * f64::from(i), "k", &[r], &[])
        })
        .collect();
    let c = SimConfig {
        capacities: 1,
        cache_bytes: 10_000_000,
        warmup: 0.1,
        ..cfg()
    };
    let run = |px: f64| {
        replay(
            &h,
            Policy::new("m", PolicyKind::Predictive(Box::new(Fixed { px }))),
            &c,
        )
    };
    let (honest, bold) = (run(0.3), run(0.9));
    assert!(honest.warm_rate >= 0.65, "{honest:?}");
    assert!(
        honest.warm_rate > bold.warm_rate + 0.1,
        "calibrated {} vs over-confident {}",
        honest.warm_rate,
        bold.warm_rate
    );
    assert!(honest.bytes < bold.bytes, "and moves less");
}

/// Clients that each send one request, for one of forty states in a scrambled order: no
/// client repeats and no sequence repeats, so neither placement nor a model can follow a
/// key, and a state is warm only where a copy already is.
fn one_shot_clients() -> Vec<HistoryRecord> {
    let states: Vec<String> = (0..40).map(|i| format!("p/{i}")).collect();
    (0..400usize)
        .map(|i| {
            let s = &states[(i * 17 + i / 40) % 40];
            rec(1_000.0 + 5.0 * i as f64, &format!("client{i}"), &[s], &[])
        })
        .collect()
}

#[test]
fn spreading_copies_a_popular_state_to_the_capacities_that_lack_it() {
    let h = one_shot_clients();
    let run = |spread: bool| {
        let c = SimConfig {
            capacities: 4,
            cache_bytes: 1_000_000_000,
            memory_price: 0.0,
            keep_alive_s: f64::INFINITY,
            spread,
            ..cfg()
        };
        let markov = Policy::new(
            "markov",
            PolicyKind::Predictive(Box::new(Markov::new(1, 3600.0))),
        );
        replay(&h, markov, &c)
    };
    let (off, on) = (run(false), run(true));
    assert!(on.warm > off.warm, "spread {} vs not {}", on.warm, off.warm);
    assert!(on.bytes_predictive > off.bytes_predictive, "{on:?}");
    // Forty states on four capacities: never more than 160 copies in all.
    assert!(on.bytes <= 160 * 10_000_000, "{on:?}");
}

/// Hands over a Markov model, warmed on the history so far, once the history holds `at`
/// records; remembers every history length it was shown.
struct SwapAt {
    at: usize,
    seen: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl crate::Retrainer for SwapAt {
    fn after(&mut self, history: &[HistoryRecord]) -> Option<Box<dyn Predictor>> {
        self.seen.lock().unwrap().push(history.len());
        (history.len() == self.at).then(|| {
            let mut m = Markov::new(1, 600.0);
            m.observe_batch(history);
            Box::new(m) as Box<dyn Predictor>
        })
    }
}

#[test]
fn a_retrained_model_serves_from_the_round_on_and_each_round_sees_only_the_past() {
    let h = cyclic();
    let c = SimConfig {
        warmup: 0.5,
        ..cfg()
    };
    let stale = replay(
        &h,
        Policy::new("m", PolicyKind::Predictive(Box::new(Wrong))),
        &c,
    );
    let seen = std::sync::Arc::default();
    let retrained = Policy::new("m", PolicyKind::Predictive(Box::new(Wrong))).with_retrainer(
        Box::new(SwapAt {
            at: 1_000,
            seen: std::sync::Arc::clone(&seen),
        }),
    );
    let swapped = replay(&h, retrained, &c);
    assert!(
        swapped.warm > stale.warm + 100,
        "retrained {} vs stale {}",
        swapped.warm,
        stale.warm
    );
    // Asked once per execution, in order, with exactly the executions observed so far.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, (1..=h.len()).collect::<Vec<_>>());
}

#[test]
fn the_engine_hands_a_retrained_member_to_its_mixture_and_replaces_anything_else() {
    use prewarm_engine::{Engine, EngineConfig};
    let mixture = prewarm_predict::by_name("mixture").unwrap();
    let mut e = Engine::new(EngineConfig::default(), Some(mixture));
    e.replace_model(Box::new(Markov::new(1, 600.0)));
    assert_eq!(
        e.model_name(),
        "mixture",
        "adopted as the mixture's markov member"
    );
    e.replace_model(Box::new(Wrong));
    assert_eq!(
        e.model_name(),
        "wrong",
        "no member of that name: it serves alone"
    );
}

#[test]
fn the_tuner_learns_from_the_warm_up_what_pays_and_keeps_the_given_setting_without_evidence() {
    let h = one_shot_clients();
    let c = SimConfig {
        capacities: 4,
        cache_bytes: 1_000_000_000,
        memory_price: 0.0,
        keep_alive_s: f64::INFINITY,
        warmup: 0.5,
        ..cfg()
    };
    let markov = |_: &str| {
        Ok::<_, std::convert::Infallible>(Policy::new(
            "markov",
            PolicyKind::Predictive(Box::new(Markov::new(1, 3600.0))),
        ))
    };
    let warmup = &h[..h.len() / 2];
    let tuned = crate::tune::tune("markov", warmup, &c, &["markov"], markov).unwrap();
    assert_eq!(tuned.policy, "markov");
    assert_eq!(tuned.trials.len(), 4);
    assert!(tuned.chosen.spread, "{tuned:#?}");
    assert!(!tuned.kept());
    assert!(!tuned.flags().contains("--model"), "{}", tuned.flags());
    // The chosen setting pays on the scored half too, which the tuner never saw.
    let given = replay(&h, markov("").unwrap(), &c);
    let chosen = replay(&h, markov("").unwrap(), &tuned.chosen.apply(&c));
    assert!(
        chosen.warm > given.warm,
        "{} vs {}",
        chosen.warm,
        given.warm
    );
    // Twenty records are too few discordant executions to switch on.
    let short = crate::tune::tune("markov", &h[..20], &c, &["markov"], markov).unwrap();
    assert!(short.kept(), "{short:#?}");
}

/// Predicts, for every event, one fixed state (a model that is always wrong about sessions).
struct Stuck(ResourceId);

impl Predictor for Stuck {
    fn name(&self) -> &str {
        "fixed"
    }
    fn observe(&mut self, _: &HistoryRecord) {}
    fn predict(&mut self, _: &Context<'_>, _: usize) -> Vec<Prediction> {
        vec![Prediction {
            resource: self.0.clone(),
            version: VersionPolicy::Latest,
            probability: 0.9,
        }]
    }
    fn memory_bytes(&self) -> u64 {
        0
    }
}

#[test]
fn the_tuner_chooses_the_model_whose_decisions_start_more_executions_warm() {
    let h = cyclic();
    let c = cfg();
    let make = |m: &str| {
        Ok::<_, std::convert::Infallible>(match m {
            "fixed" => Policy::new(
                "fixed",
                PolicyKind::Predictive(Box::new(Stuck(ResourceId::new("s/a").unwrap()))),
            ),
            _ => Policy::new(
                "markov",
                PolicyKind::Predictive(Box::new(Markov::new(1, 3600.0))),
            ),
        })
    };
    let warmup = &h[..h.len() / 2];
    let tuned = crate::tune::tune("auto", warmup, &c, &["fixed", "markov"], make).unwrap();
    assert_eq!(tuned.policy, "auto");
    assert_eq!(tuned.trials.len(), 8);
    assert_eq!(tuned.model, "markov", "{tuned:#?}");
    assert!(
        tuned.flags().starts_with("--model markov "),
        "{}",
        tuned.flags()
    );
    let fixed = replay(&h, make("fixed").unwrap(), &c);
    let chosen = replay(&h, make("markov").unwrap(), &tuned.chosen.apply(&c));
    assert!(
        chosen.warm > fixed.warm,
        "{} vs {}",
        chosen.warm,
        fixed.warm
    );
}

#[test]
fn settings_are_re_learned_while_running_when_the_workload_changes() {
    // 200 executions that spreading cannot help (one client, one state), then the one-shot
    // clients, whom it helps: tuned on the first part, the setting stays; re-tuned every
    // 200 executions, it switches once the newest window holds the new workload.
    let calm: Vec<HistoryRecord> = (0..200usize)
        .map(|i| rec(5.0 * i as f64, "one", &["p/0"], &[]))
        .collect();
    let h: Vec<HistoryRecord> = calm.into_iter().chain(one_shot_clients()).collect();
    let c = SimConfig {
        capacities: 4,
        cache_bytes: 1_000_000_000,
        memory_price: 0.0,
        keep_alive_s: f64::INFINITY,
        warmup: 1.0 / 3.0,
        ..cfg()
    };
    let markov = || {
        Policy::new(
            "markov",
            PolicyKind::Predictive(Box::new(Markov::new(1, 3600.0))),
        )
    };
    let tuned = crate::tune::tune("markov", &h[..200], &c, &["markov"], |_| {
        Ok::<_, std::convert::Infallible>(markov())
    })
    .unwrap();
    assert!(
        tuned.kept(),
        "nothing to learn from the calm part: {tuned:#?}"
    );
    let mut retuner = crate::retune::Retuner::new(200, &c, "markov", || Some(markov()));
    let meter = prewarm_core::Meter::new();
    let retuned = crate::replay_retuned(&h, markov(), &c, &meter, &mut retuner);
    let fixed = replay(&h, markov(), &c);
    // Rounds after 400 and 600 executions (not after the first 200: tuned before the run).
    assert_eq!(
        retuner.log.iter().map(|r| r.at).collect::<Vec<_>>(),
        [400, 600],
        "{:#?}",
        retuner.log
    );
    let first = &retuner.log[0];
    assert!(first.to.spread && !first.from.spread, "{first:#?}");
    assert!(first.gained > first.lost);
    assert!(retuner.setting().spread);
    assert!(
        retuned.warm > fixed.warm,
        "re-tuned {} vs fixed {}",
        retuned.warm,
        fixed.warm
    );
}

#[test]
fn belady_evicts_by_the_future_and_moves_only_on_demand() {
    // One capacity holding two of three states read in a loop: LRU evicts each state just
    // before it is read again (every read misses); Belady keeps one of the two for its
    // next use, so about every other read hits. Nothing is pre-warmed: the oracle, which
    // also knows each execution's reads before it runs, still starts every one warm.
    let loop3 = ["s/a", "s/b", "s/c"];
    let h: Vec<_> = (0..600usize)
        .map(|i| rec(1_000.0 + 10.0 * i as f64, "k", &[loop3[i % 3]], &[]))
        .collect();
    let c = SimConfig {
        capacities: 1,
        keep_alive_s: f64::INFINITY,
        memory_price: 0.0,
        ..cfg()
    };
    let lru = replay(&h, Policy::new("lru", PolicyKind::Lru), &c);
    let belady = replay(&h, Policy::new("belady", PolicyKind::Belady), &c);
    let oracle = replay(&h, Policy::new("oracle", PolicyKind::Oracle), &c);
    assert_eq!(lru.warm, 0, "{lru:?}");
    assert!(belady.warm_rate > 0.45, "{belady:?}");
    assert_eq!(belady.bytes_predictive, 0, "{belady:?}");
    assert!(belady.bytes < lru.bytes, "{belady:?} vs {lru:?}");
    assert!(
        oracle.warm_rate > 0.99 && oracle.warm >= belady.warm,
        "{oracle:?}"
    );
}

#[test]
fn without_lead_a_state_kept_for_its_last_use_is_read_before_it_is_dropped() {
    // Each state is read twice, 10 s apart, the second time for the last time. With no
    // lead the decision for the second read comes at the read's own start and says "keep
    // until now" (nothing follows): the read must still find the state, not a timer that
    // dropped it first.
    let h: Vec<_> = (0..400usize)
        .map(|i| {
            let s = format!("s/{}", i / 2);
            rec(1_000.0 + 5.0 * i as f64, "k", &[s.as_str()], &[])
        })
        .collect();
    let c = SimConfig {
        capacities: 1,
        lead_s: 0.0,
        keep_alive_s: f64::INFINITY,
        memory_price: 0.0,
        ..cfg()
    };
    for p in [
        Policy::new("oracle", PolicyKind::Oracle),
        Policy::new("belady", PolicyKind::Belady),
        Policy::new("lru", PolicyKind::Lru),
    ] {
        let r = replay(&h, p, &c);
        assert_eq!(r.warm * 2, r.executions, "every second read is warm: {r:?}");
    }
}
