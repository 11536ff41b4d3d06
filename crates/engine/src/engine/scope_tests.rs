//! An event's scope (its sender's resource prefixes) bounds what the engine moves for it.

#![allow(clippy::unwrap_used)]

use super::*;

/// One empty capacity with room for anything.
struct OneCap(Vec<CapacityId>);

struct Empty;

impl Target for Empty {
    fn held(&self, _: &ResourceId) -> Option<Version> {
        None
    }
    fn in_flight(&self, _: &ResourceId) -> bool {
        false
    }
    fn free_bytes(&self) -> u64 {
        1 << 40
    }
    fn displaced(&self, _: u64) -> Option<f64> {
        Some(0.0)
    }
    fn displaced_within(&self, _: u64, _: f64) -> Option<f64> {
        Some(0.0)
    }
    fn predictive_in_flight(&self) -> u64 {
        0
    }
    fn horizon(&self) -> Option<f64> {
        Some(600.0)
    }
}

impl Fleet for OneCap {
    fn capacities(&self) -> &[CapacityId] {
        &self.0
    }
    fn holders_into(&self, _: &ResourceId, _: Version, _: &mut Vec<usize>) {}
    fn target(&self, _: &CapacityId, _: f64) -> Option<Box<dyn Target + '_>> {
        Some(Box::new(Empty))
    }
    fn holding(&self, _: &CapacityId, _: &ResourceId) -> Option<Holding> {
        None
    }
}

fn id(s: &str) -> ResourceId {
    ResourceId::new(s).unwrap()
}

#[test]
fn a_scoped_event_moves_and_keeps_only_states_inside_its_scope() {
    let fleet = OneCap(vec![CapacityId::new("cap").unwrap()]);
    let mut catalog = std::collections::HashMap::new();
    for r in ["tenants/acme/x", "tenants/beta/y", "tenants/acme-evil/z"] {
        catalog.insert(id(r), (Version::FIRST, 1 << 20));
    }
    let preds: Vec<Prediction> = ["tenants/beta/y", "tenants/acme/x", "tenants/acme-evil/z"]
        .iter()
        .map(|r| Prediction {
            resource: id(r),
            version: VersionPolicy::Latest,
            probability: 0.9,
        })
        .collect();
    let event = Event {
        kind: "http".into(),
        key: "s1".into(),
        attrs: Default::default(),
        needs: Vec::new(),
    };
    let acme = Scope::parse(&["tenants/acme/"]).unwrap();
    let moved = |scope: Option<&Scope>| {
        let mut engine = Engine::new(EngineConfig::default(), None);
        let ev = EventView {
            ts: 100.0,
            event: &event,
            capacity: None,
            scope,
        };
        let d = engine.decide(&ev, &preds, &catalog, &fleet, 100.0);
        let mut moved: Vec<String> = d.transfers.iter().map(|t| t.resource.to_string()).collect();
        moved.sort();
        let mut kept: Vec<String> = d.hints.iter().map(|h| h.resource.to_string()).collect();
        kept.sort();
        (moved, kept)
    };
    // Unscoped (the replay, the shared token): every prediction worth it moves.
    let (all, _) = moved(None);
    assert_eq!(
        all,
        ["tenants/acme-evil/z", "tenants/acme/x", "tenants/beta/y"],
        "the planner moves all three when nothing filters them"
    );
    // acme's event: only acme's state moves, and only it is kept for the execution.
    let (moved, kept) = moved(Some(&acme));
    assert_eq!(moved, ["tenants/acme/x"]);
    assert_eq!(kept, ["tenants/acme/x"]);
}
