//! Property tests of `POST /v1/events` parsing (the CI part of issue 13 §3): any body is
//! answered without a panic; a batch of valid events parses back to itself, all or nothing;
//! one bad time anywhere refuses the whole batch and names the event.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use proptest::collection::vec;
use proptest::prelude::*;

use prewarm_coordinator::{EventIn, EventsError, parse_events};
use prewarm_core::{Event, ResourceId};

fn event() -> impl Strategy<Value = EventIn> {
    (
        proptest::option::of(0.0f64..2e9),
        "[a-z]{1,8}",
        "[ -~]{0,30}",
        vec("[a-z0-9]{1,6}(/[a-z0-9][a-z0-9_-]{0,5}){0,2}", 0..3),
    )
        .prop_map(|(ts, kind, key, needs)| EventIn {
            ts,
            event: Event {
                kind,
                key,
                attrs: Default::default(),
                needs: needs
                    .into_iter()
                    .map(|r| ResourceId::new(r).unwrap())
                    .collect(),
            },
            capacity: None,
        })
}

fn same(a: &EventIn, b: &EventIn) -> bool {
    a.ts == b.ts && a.event == b.event && a.capacity == b.capacity
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_body_is_answered(body in vec(any::<u8>(), 0..1024)) {
        let _ = parse_events(&body);
    }

    #[test]
    fn a_batch_parses_back_and_one_bad_time_refuses_it(
        events in vec(event(), 1..20),
        bad in any::<usize>(),
        flip in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let body = serde_json::to_vec(&events).unwrap();
        let (back, batch) = parse_events(&body).unwrap();
        prop_assert!(batch);
        prop_assert_eq!(back.len(), events.len());
        prop_assert!(back.iter().zip(&events).all(|(a, b)| same(a, b)));
        let one = serde_json::to_vec(&events[0]).unwrap();
        let (back, batch) = parse_events(&one).unwrap();
        prop_assert!(!batch && same(&back[0], &events[0]));

        let mut worse = events.clone();
        let i = bad % worse.len();
        worse[i].ts = Some(-1.0);
        let body = serde_json::to_vec(&worse).unwrap();
        prop_assert!(matches!(parse_events(&body), Err(EventsError::BadTime(j)) if j == i));

        // A damaged body parses to valid events or is refused, never half.
        let mut damaged = serde_json::to_vec(&events).unwrap();
        let at = flip % damaged.len();
        damaged[at] = byte;
        if let Ok((back, _)) = parse_events(&damaged) {
            prop_assert!(back.iter().all(|e| e.ts.is_none_or(|t| t.is_finite() && t >= 0.0)));
            prop_assert!(back.iter().all(|e| e.event.validate().is_ok()));
        }
    }
}
