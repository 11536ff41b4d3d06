//! Capacities scoped to a tenant's prefixes (an agent presenting a scoped `transfer` token):
//! an event runs only where every state it names may be held, and no prediction, spread or
//! pre-warm moves a state to a capacity outside its scope. Unscoped fleets (the replay, a
//! fleet of `["*"]` agents) skip all of it: [`Fleet::scoped`] is `false`.

use super::{EventView, Fleet};

/// For a scoped fleet, per capacity, whether its scope admits every state the event names;
/// `None` for an unscoped fleet (every capacity is eligible, nothing is asked).
pub(super) fn eligible(ev: &EventView<'_>, fleet: &dyn Fleet) -> Option<Vec<bool>> {
    if !fleet.scoped() {
        return None;
    }
    let named: Vec<_> = ev.event.needs.iter().filter(|r| ev.admits(r)).collect();
    Some(
        (0..fleet.capacities().len())
            .map(|c| named.iter().all(|r| fleet.admits(c, r)))
            .collect(),
    )
}

/// Keeps the entries of `out` from `from` on that `keep` admits (the holder lists share one
/// buffer: earlier candidates' entries are left alone).
pub(super) fn retain_from(out: &mut Vec<usize>, from: usize, keep: impl Fn(usize) -> bool) {
    let mut w = from;
    for i in from..out.len() {
        if keep(out[i]) {
            out[w] = out[i];
            w += 1;
        }
    }
    out.truncate(w);
}
