//! The rules on small hand-made caches whose right answers are known.

#![allow(clippy::unwrap_used)]

use super::*;

fn all(_: &u32) -> bool {
    true
}

fn hint(fetch_s: f64) -> Hint {
    Hint {
        keep_until: f64::INFINITY,
        fetch_s,
        share: 1.0,
        curve: None,
        expected: None,
        next_at: None,
    }
}

#[test]
fn lru_takes_the_least_recent_never_a_leased_one_and_nothing_when_short() {
    let mut b = CacheBook::new(Rule::Lru, 300);
    for (k, t) in [(1, 1.0), (2, 2.0), (3, 3.0)] {
        b.admit(k, 100, t);
    }
    b.touch(&1, 4.0);
    let not_two = |k: &u32| *k != 2;
    assert_eq!(b.victims(150, 5.0, &not_two).unwrap(), vec![3, 1]);
    assert_eq!(b.victims(100, 5.0, &all).unwrap(), vec![2]);
    assert_eq!(
        b.victims(250, 5.0, &not_two),
        Err(Shortfall {
            freeable: 200,
            leased: 100
        })
    );
    assert!(b.remove(&2));
    assert!(!b.remove(&2));
    assert_eq!(b.len(), 2);
}

#[test]
fn s3fifo_drops_one_hit_wonders_first_and_readmits_ghosts_to_main() {
    // Budget of ten 10-byte states: the small queue holds one.
    let mut b = CacheBook::new(Rule::S3Fifo, 100);
    for k in 0..10 {
        b.admit(k, 10, f64::from(k));
    }
    // 0..5 are used again: promoted to main when their turn comes.
    for k in 0..5 {
        b.touch(&k, 20.0);
    }
    let v = b.victims(50, 30.0, &all).unwrap();
    assert_eq!(v, vec![5, 6, 7, 8, 9], "the unused ones go, in FIFO order");
    for k in &v {
        b.remove(k);
    }
    // 5 comes back: it is a ghost, so it goes straight to main; 20 and 21 are new and go
    // to the small queue, which then holds more than its 10% share and is evicted first.
    b.admit(5, 10, 40.0);
    b.admit(20, 10, 41.0);
    b.admit(21, 10, 42.0);
    let v = b.victims(10, 50.0, &all).unwrap();
    assert_eq!(
        v,
        vec![20],
        "the newcomer on probation goes before the returning ghost"
    );
    b.remove(&20);
    // Within its share again, the small queue is left alone: main's oldest unused goes.
    assert_eq!(b.victims(10, 50.0, &all).unwrap(), vec![0]);
}

#[test]
fn gdsf_keeps_small_frequent_states_over_large_rare_ones() {
    let mut b = CacheBook::new(Rule::Gdsf, 1000);
    b.admit(1, 500, 0.0);
    b.hint(&1, hint(5.0));
    b.admit(2, 10, 0.0);
    b.hint(&2, hint(0.1));
    for t in 1..5 {
        b.touch(&2, f64::from(t));
    }
    // 2: 5 uses × 0.1 s / 10 B = 0.05; 1: 1 × 5 s / 500 B = 0.01.
    assert_eq!(b.victims(1, 10.0, &all).unwrap(), vec![1]);
}

#[test]
fn value_keeps_what_is_planned_and_frequent_and_learns_its_horizon() {
    let mut b = CacheBook::new(Rule::Value, 300);
    for k in 1..=3 {
        b.admit(k, 100, 0.0);
        b.hint(&k, hint(1.0));
    }
    // 2: an execution placed here is expected to read it; 3: used twice more.
    b.hint(
        &2,
        Hint {
            expected: Some(Expected {
                p: 0.9,
                until: 20.0,
            }),
            ..hint(1.0)
        },
    );
    b.touch(&3, 1.0);
    b.touch(&3, 2.0);
    assert_eq!(b.victims(100, 5.0, &all).unwrap(), vec![1]);
    b.remove(&1);
    assert_eq!(b.horizon(), Some(5.0), "1 had been idle 5 s");
    assert_eq!(
        b.victims(100, 6.0, &all).unwrap(),
        vec![2],
        "three uses beat one planned"
    );
    // The peek names the same victim and what it is worth, and moves nothing.
    let (v, loss) = b.peek_victims(100, 6.0, &all).unwrap();
    assert_eq!(v, vec![2]);
    assert!(
        (loss - b.value(&2, 6.0)).abs() < 1e-12 && loss > 0.8,
        "{loss}"
    );
    // What arrives later starts above what was evicted (GreedyDual's inflation).
    b.admit(4, 100, 7.0);
    b.hint(&4, hint(1.0));
    assert_eq!(b.victims(100, 8.0, &all).unwrap(), vec![2]);
}

#[test]
fn belady_evicts_the_furthest_next_use_and_never_used_again_first() {
    let mut b = CacheBook::new(Rule::Belady, 300);
    for (k, next) in [(1, Some(50.0)), (2, None), (3, Some(20.0))] {
        b.admit(k, 100, 0.0);
        b.hint(
            &k,
            Hint {
                next_at: Some(next.unwrap_or(f64::INFINITY)),
                ..hint(1.0)
            },
        );
    }
    assert_eq!(b.victims(200, 1.0, &all).unwrap(), vec![2, 1]);
}

#[test]
fn keep_alive_expiry_lists_only_unleased_states_past_their_time() {
    let mut b = CacheBook::new(Rule::Lru, 300);
    for k in 1..=3 {
        b.admit(k, 10, 0.0);
        b.hint(
            &k,
            Hint {
                keep_until: f64::from(k) * 10.0,
                ..hint(1.0)
            },
        );
    }
    let not_one = |k: &u32| *k != 1;
    assert_eq!(b.expired(25.0, &not_one), vec![2]);
    assert_eq!(b.expired(35.0, &all), vec![1, 2, 3]);
}

#[test]
fn value_within_a_window_counts_only_uses_inside_it() {
    let mut b = CacheBook::new(Rule::Belady, 300);
    // Known next uses: 2 s of fetch needed at 10 s, another at 100 s, one never again.
    for (k, next) in [(1, 10.0), (2, 100.0), (3, f64::INFINITY)] {
        b.admit(k, 100, 0.0);
        b.hint(
            &k,
            Hint {
                next_at: Some(next),
                ..hint(2.0)
            },
        );
    }
    assert_eq!(
        b.value_within(&1, 0.0, 30.0),
        2.0,
        "needed inside the window"
    );
    assert_eq!(b.value_within(&2, 0.0, 30.0), 0.0, "needed after it");
    assert_eq!(b.value_within(&3, 0.0, 1e9), 0.0, "never needed again");
    assert_eq!(b.value_within(&4, 0.0, 30.0), 0.0, "not held");
    // A planned use without a known time counts pro rata of the window it falls in.
    let mut v = CacheBook::new(Rule::Value, 300);
    v.admit(7_u32, 100, 0.0);
    v.hint(
        &7,
        Hint {
            expected: Some(Expected {
                p: 0.8,
                until: 40.0,
            }),
            ..hint(1.0)
        },
    );
    assert!((v.value_within(&7, 0.0, 10.0) - 0.2).abs() < 1e-12);
    assert!((v.value_within(&7, 0.0, 60.0) - 0.8).abs() < 1e-12);
}
