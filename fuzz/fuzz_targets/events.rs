//! The event JSON: `parse_events`, the parser of `POST /v1/events` bodies (one event object
//! or an array of them).
//!
//! Properties: any body is answered without a panic; an accepted body is a batch exactly
//! when it starts with `[`, holds at most `MAX_BATCH` events, each with a finite,
//! non-negative time (or none) and a valid event; what was accepted, written back as JSON,
//! parses to the same events (all or nothing: a batch is never half taken).

#![no_main]

use libfuzzer_sys::fuzz_target;
use prewarm_coordinator::{EventIn, MAX_BATCH, parse_events};

fn same(a: &[EventIn], b: &[EventIn]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.ts == y.ts && x.event == y.event && x.capacity == y.capacity)
}

fuzz_target!(|data: &[u8]| {
    let Ok((events, batch)) = parse_events(data) else {
        return;
    };
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    assert_eq!(batch, first == Some(&b'['), "a batch is an array");
    assert!(batch || events.len() == 1, "a single event is one");
    assert!(events.len() <= MAX_BATCH);
    for e in &events {
        assert!(
            e.ts.is_none_or(|t| t.is_finite() && t >= 0.0),
            "time {:?}",
            e.ts
        );
        assert!(e.event.validate().is_ok());
    }
    let again = if batch {
        serde_json::to_vec(&events)
    } else {
        serde_json::to_vec(&events[0])
    }
    .expect("accepted events serialise");
    let (back, batch2) = parse_events(&again).expect("accepted events, written back, parse");
    assert_eq!(batch, batch2);
    assert!(
        same(&events, &back),
        "written back, they parse to themselves"
    );
});
