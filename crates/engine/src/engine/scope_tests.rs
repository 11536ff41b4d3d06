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

/// Capacities scoped as agents presenting scoped `transfer` tokens: `a` to acme, `b` to
/// beta, `c` to everything; `b` holds acme's `x` (from before its token was rotated).
struct Scoped {
    ids: Vec<CapacityId>,
    scopes: Vec<Scope>,
}

impl Scoped {
    fn new(scopes: &[(&str, &[&str])]) -> Self {
        Self {
            ids: scopes
                .iter()
                .map(|(c, _)| CapacityId::new(*c).unwrap())
                .collect(),
            scopes: scopes
                .iter()
                .map(|(_, p)| Scope::parse(p).unwrap())
                .collect(),
        }
    }
}

impl Fleet for Scoped {
    fn capacities(&self) -> &[CapacityId] {
        &self.ids
    }
    fn holders_into(&self, r: &ResourceId, _: Version, out: &mut Vec<usize>) {
        if r.as_str() == "tenants/acme/x" {
            out.extend(self.ids.iter().position(|c| c.as_str() == "b"));
        }
    }
    fn target(&self, _: &CapacityId, _: f64) -> Option<Box<dyn Target + '_>> {
        Some(Box::new(Empty))
    }
    fn holding(&self, c: &CapacityId, r: &ResourceId) -> Option<Holding> {
        (c.as_str() == "b" && r.as_str() == "tenants/acme/x").then_some(Holding {
            version: Version::FIRST,
            ready: true,
        })
    }
    fn scoped(&self) -> bool {
        true
    }
    fn admits(&self, c: usize, r: &ResourceId) -> bool {
        self.scopes[c].admits(r)
    }
}

fn catalog() -> std::collections::HashMap<ResourceId, (Version, u64)> {
    ["tenants/acme/x", "tenants/acme/w", "tenants/beta/y"]
        .iter()
        .map(|r| (id(r), (Version::FIRST, 1 << 20)))
        .collect()
}

fn event(key: &str, needs: &[&str]) -> Event {
    Event {
        kind: "http".into(),
        key: key.into(),
        attrs: Default::default(),
        needs: needs.iter().map(|r| id(r)).collect(),
    }
}

fn predicted(rs: &[&str]) -> Vec<Prediction> {
    rs.iter()
        .map(|r| Prediction {
            resource: id(r),
            version: VersionPolicy::Latest,
            probability: 0.9,
        })
        .collect()
}

/// An event naming acme's state runs only where acme's states may be held — never on
/// beta's capacity, not even where it already holds the state — and what is predicted
/// beside it moves only where the capacity's scope admits it.
#[test]
fn events_run_and_states_move_only_inside_each_capacitys_scope() {
    let fleet = Scoped::new(&[
        ("a", &["tenants/acme/"]),
        ("b", &["tenants/beta/"]),
        ("c", &["*"]),
    ]);
    let cat = catalog();
    let preds = predicted(&["tenants/beta/y", "tenants/acme/w"]);
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    let mut engine = Engine::new(EngineConfig::default(), None);
    for k in 0..200 {
        let ev_owned = event(&format!("k{k}"), &["tenants/acme/x"]);
        let ev = EventView {
            ts: 100.0,
            event: &ev_owned,
            capacity: None,
            scope: None,
        };
        let d = engine.decide(&ev, &preds, &cat, &fleet, 100.0);
        let p = d.placement.expect("a and c may run it");
        *on.entry(p.capacity.to_string()).or_default() += 1;
        for t in &d.transfers {
            let ok = p.capacity.as_str() == "c" || t.resource.as_str().starts_with("tenants/acme/");
            assert!(ok, "{} moved to {}", t.resource, p.capacity);
        }
        for h in &d.hints {
            assert!(admits_id(&fleet, &h.capacity, &h.resource), "{h:?}");
        }
    }
    assert!(!on.contains_key("b"), "never on beta's capacity: {on:?}");
    assert!(on.len() == 2, "both eligible capacities used: {on:?}");
    // Only beta's capacity attached (in effect): nowhere to run acme's execution.
    let beta_only = Scoped::new(&[("b", &["tenants/beta/"])]);
    let ev_owned = event("k", &["tenants/acme/x"]);
    let ev = EventView {
        ts: 100.0,
        event: &ev_owned,
        capacity: None,
        scope: None,
    };
    let d = engine.decide(&ev, &preds, &cat, &beta_only, 100.0);
    assert!(d.placement.is_none() && d.transfers.is_empty(), "{d:?}");
    // Pre-warms (keep-alive windows, ahead, spread) go only where the scope admits them.
    let pw = |c: &str, r: &str| Prewarm {
        capacity: CapacityId::new(c).unwrap(),
        resource: id(r),
        at: 100.0,
        hold_until: 200.0,
        spread: false,
        ahead: None,
    };
    assert!(
        engine
            .prewarm(&pw("a", "tenants/beta/y"), &cat, &fleet, 100.0)
            .is_none()
    );
    assert!(
        engine
            .prewarm(&pw("b", "tenants/beta/y"), &cat, &fleet, 100.0)
            .is_some()
    );
    assert!(
        engine
            .prewarm(&pw("c", "tenants/beta/y"), &cat, &fleet, 100.0)
            .is_some()
    );
}
