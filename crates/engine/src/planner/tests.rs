//! The planner's rule on hand-made cases.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use super::*;

struct T {
    held: HashMap<ResourceId, Version>,
    moving: Vec<ResourceId>,
    free: u64,
    /// Evictable states, in eviction order: (bytes, value in seconds).
    victims: Vec<(u64, f64)>,
    in_flight: u64,
}

impl Target for T {
    fn held(&self, r: &ResourceId) -> Option<Version> {
        self.held.get(r).copied()
    }
    fn in_flight(&self, r: &ResourceId) -> bool {
        self.moving.contains(r)
    }
    fn free_bytes(&self) -> u64 {
        self.free
    }
    fn displaced(&self, need: u64) -> Option<f64> {
        let (mut freed, mut value) = (0, 0.0);
        for (b, v) in &self.victims {
            if freed >= need {
                break;
            }
            freed += b;
            value += v;
        }
        (freed >= need).then_some(value)
    }
    fn displaced_within(&self, need: u64, window: f64) -> Option<f64> {
        // Hand-made victims are each used once, `value` seconds of fetch, at a time given
        // by their order: victim i at i + 1 seconds from now.
        let (mut freed, mut value) = (0, 0.0);
        for (i, (b, v)) in self.victims.iter().enumerate() {
            if freed >= need {
                break;
            }
            freed += b;
            if (i + 1) as f64 <= window {
                value += v;
            }
        }
        (freed >= need).then_some(value)
    }
    fn predictive_in_flight(&self) -> u64 {
        self.in_flight
    }
    fn horizon(&self) -> Option<f64> {
        Some(600.0)
    }
}

fn t(free: u64, victims: &[(u64, f64)]) -> T {
    T {
        held: HashMap::new(),
        moving: vec![],
        free,
        victims: victims.to_vec(),
        in_flight: 0,
    }
}

fn want(name: &str, p: f64, latest: u64, bytes: u64) -> Want {
    Want {
        resource: ResourceId::new(name).unwrap(),
        probability: p,
        version: VersionPolicy::Latest,
        latest: Version::new(latest).unwrap(),
        bytes,
        reuse: 0.0,
        lead_s: None,
    }
}

fn names(d: &[Decision]) -> Vec<&str> {
    d.iter().map(|d| d.resource.as_str()).collect()
}

/// 100 MB/s, no latency, a 2 s lead: 100 MB takes 1 s and is on time. Link time is free
/// (its price has a test of its own).
fn planner() -> Planner {
    Planner::new(PlannerConfig {
        bandwidth: 100e6,
        latency_s: 0.0,
        lead_s: 2.0,
        link_price: LinkPrice::Fixed(0.0),
        ..Default::default()
    })
}

#[test]
fn a_prefetch_that_evicts_a_state_needed_sooner_is_refused() {
    // p = 0.3 of saving 1 s, against evicting a state worth 0.9 s: 0.3 − 0.7·0.9 < 0.
    let w = [want("x", 0.3, 1, 100_000_000)];
    assert!(planner().plan(&w, &t(0, &[(100_000_000, 0.9)])).is_empty());
    // The same prefetch displacing a state never needed again is taken.
    let d = planner().plan(&w, &t(0, &[(100_000_000, 0.0)]));
    assert_eq!(names(&d), ["x"]);
    assert!((d[0].score - 0.3).abs() < 1e-9, "{d:?}");
    // Into free room it is taken at any chance; a sure one is taken whatever it displaces.
    assert_eq!(
        names(&planner().plan(&[want("x", 0.01, 1, 100_000_000)], &t(1 << 30, &[]))),
        ["x"]
    );
    assert_eq!(
        names(&planner().plan(
            &[want("x", 1.0, 1, 100_000_000)],
            &t(0, &[(100_000_000, 5.0)])
        )),
        ["x"]
    );
}

#[test]
fn skips_held_moving_and_unfitting_and_ranks_the_rest() {
    let v = |n| Version::new(n).unwrap();
    let mut target = t(1000, &[(500, 0.0)]);
    target.held = [
        (ResourceId::new("held").unwrap(), v(2)),
        (ResourceId::new("old").unwrap(), v(1)),
    ]
    .into();
    target.moving = vec![ResourceId::new("moving").unwrap()];
    let wants = [
        want("held", 0.9, 2, 100),    // held at the latest version
        want("old", 0.9, 2, 100),     // held, but too old: refresh
        want("moving", 0.9, 1, 100),  // already on its way
        want("huge", 0.9, 1, 2000),   // cannot fit even after evicting
        want("likely", 0.95, 1, 400), // the best
    ];
    let d = planner().plan(&wants, &target);
    assert_eq!(names(&d), vec!["likely", "old"]);
    assert_eq!(d[1].version, v(2));
    // The cap on bytes in flight holds back what does not fit under it.
    let capped = Planner::new(PlannerConfig {
        max_in_flight: 450,
        ..planner().cfg
    });
    assert_eq!(names(&capped.plan(&wants, &target)), vec!["likely"]);
    target.in_flight = 400;
    assert!(capped.plan(&wants, &target).is_empty());
}

#[test]
fn later_choices_pay_for_the_room_earlier_ones_took_and_late_ones_save_less() {
    // Room for one; the second must evict a valuable state: at p = 0.4 it is not worth it.
    let target = t(100_000_000, &[(100_000_000, 0.9)]);
    let wants = [
        want("a", 0.5, 1, 100_000_000),
        want("b", 0.4, 1, 100_000_000),
    ];
    assert_eq!(names(&planner().plan(&wants, &target)), ["a"]);
    // With 3 s of transfers queued ahead and a 2 s lead, a 1 s transfer is 2 s late: it
    // saves nothing.
    let mut busy = t(1 << 30, &[]);
    busy.in_flight = 300_000_000;
    let d = planner().plan(&[want("a", 0.9, 1, 100_000_000)], &busy);
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn reuse_and_memory_price_enter_the_same_sum() {
    let mut w = want("x", 0.2, 1, 100_000_000);
    let target = t(0, &[(100_000_000, 0.5)]);
    // 0.2 + 0.8·(0 − 0.5) < 0; with a 90% chance of reuse: 0.2 + 0.8·(0.9 − 0.5) > 0.
    assert!(planner().plan(std::slice::from_ref(&w), &target).is_empty());
    w.reuse = 0.9;
    assert_eq!(
        names(&planner().plan(std::slice::from_ref(&w), &target)),
        ["x"]
    );
    // Memory at 1 s per GB·s over a 600 s horizon: 0.1 GB costs 60 s when unused.
    let dear = Planner::new(PlannerConfig {
        memory_price: 1.0,
        ..planner().cfg
    });
    assert!(dear.plan(&[w], &t(1 << 30, &[])).is_empty());
}

#[test]
fn link_time_priced_like_waiting() {
    // Into free room, with link time at a fixed price of 1: worth it when more likely read
    // than not (p · 1 s > (1 − p) · 1 s), or when it will likely be reused anyway.
    let p = Planner::new(PlannerConfig {
        link_price: LinkPrice::Fixed(1.0),
        ..planner().cfg
    });
    let room = t(1 << 30, &[]);
    assert!(p.plan(&[want("x", 0.4, 1, 100_000_000)], &room).is_empty());
    assert_eq!(
        names(&p.plan(&[want("x", 0.6, 1, 100_000_000)], &room)),
        ["x"]
    );
    let mut w = want("x", 0.2, 1, 100_000_000);
    w.reuse = 0.9;
    assert_eq!(names(&p.plan(&[w], &room)), ["x"]);
}

#[test]
fn a_prewarm_ahead_is_refused_when_it_evicts_a_state_needed_before_its_own_use() {
    // Sure to be read 30 s from now (an ahead pre-warm); the victim (1 s of fetch) is next
    // used 1 s from now: taking it now trades its use for one that would have been
    // fetched on demand in time anyway. At the event (no lead of its own) it is taken.
    let ahead = Want {
        lead_s: Some(30.0),
        ..want("x", 1.0, 1, 100_000_000)
    };
    let full = t(0, &[(100_000_000, 1.0)]);
    assert!(
        planner()
            .plan(std::slice::from_ref(&ahead), &full)
            .is_empty()
    );
    assert_eq!(
        names(&planner().plan(&[want("x", 1.0, 1, 100_000_000)], &full)),
        ["x"]
    );
    // Needed only 0.5 s from now, the victim's use (1 s away) is after the pre-warmed
    // state's: taken.
    let soon = Want {
        lead_s: Some(0.5),
        ..ahead.clone()
    };
    assert_eq!(names(&planner().plan(&[soon], &full)), ["x"]);
    // Into free room, nothing is displaced early: taken.
    assert_eq!(names(&planner().plan(&[ahead], &t(1 << 30, &[]))), ["x"]);
}

#[test]
fn link_time_priced_by_the_queue_is_free_on_an_idle_link_and_full_once_the_lead_is_taken() {
    // Lead 2 s, 100 MB at 100 MB/s: a 1 s fetch. Idle link: a 0.2 chance is worth it (the
    // on-demand fetch would go ahead of it anyway). With 2 s of prefetches queued ahead it
    // is late, and its link time is priced like waiting: refused, as at a fixed price of 1.
    let p = Planner::new(PlannerConfig {
        link_price: LinkPrice::Queue,
        max_in_flight: 1 << 40,
        ..planner().cfg
    });
    let idle = t(1 << 30, &[]);
    assert_eq!(
        names(&p.plan(&[want("x", 0.2, 1, 100_000_000)], &idle)),
        ["x"]
    );
    let mut busy = t(1 << 30, &[]);
    busy.in_flight = 200_000_000;
    assert!(p.plan(&[want("x", 0.2, 1, 100_000_000)], &busy).is_empty());
    assert_eq!(LinkPrice::Queue.at(0.0, 2.0), 0.0);
    assert_eq!(LinkPrice::Queue.at(1.0, 2.0), 0.5);
    assert_eq!(LinkPrice::Queue.at(5.0, 2.0), 1.0);
    assert_eq!(LinkPrice::Fixed(0.7).at(5.0, 2.0), 0.7);
}

#[test]
fn link_prices_parse_and_print() {
    assert_eq!("queue".parse::<LinkPrice>(), Ok(LinkPrice::Queue));
    assert_eq!("0.5".parse::<LinkPrice>(), Ok(LinkPrice::Fixed(0.5)));
    for bad in ["-1", "nan", "inf", "fast"] {
        let e = bad.parse::<LinkPrice>().unwrap_err();
        assert!(e.contains("neither `queue`"), "{e}");
    }
    assert_eq!(LinkPrice::Queue.to_string(), "queue");
    assert_eq!(LinkPrice::Fixed(1.0).to_string(), "1");
}
