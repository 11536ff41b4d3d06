//! What a run did, counted: steps, crashes, answers checked (and against which promise),
//! installs compared with the committed bytes, faults injected. Printed at the end of a run
//! and recorded in RELIABILITY.md.

/// Counts over the run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Steps taken.
    pub steps: u64,
    /// Agent crashes.
    pub agent_crashes: u64,
    /// Coordinator crashes.
    pub coordinator_crashes: u64,
    /// `ensure` answers checked, and failures (reported errors).
    pub ensured: u64,
    /// `ensure` calls that reported an error.
    pub ensure_errors: u64,
    /// `ensure` answers checked against a minimum version, and against a newer version the
    /// agent had been told of (no stale answer promised).
    pub promises: [u64; 2],
    /// Duplicate steps checked.
    pub duplicates: u64,
    /// Transfers requested and how many succeeded.
    pub transfers: u64,
    /// Of those, succeeded.
    pub transfers_ok: u64,
    /// Versions committed during the run.
    pub commits: u64,
    /// States found at their path and compared with the committed bytes.
    pub compared: u64,
    /// Store reads failed, corrupted, truncated; control messages dropped, duplicated,
    /// delayed.
    pub faults: [u64; 6],
    /// Seeds summed.
    pub seeds: u64,
}

impl Tally {
    /// Adds one seed's counts (and its store's injected faults).
    pub fn add(&mut self, t: &Tally, inj: &crate::faulty::Injected) {
        use std::sync::atomic::Ordering::Relaxed;
        self.seeds += 1;
        self.steps += t.steps;
        self.agent_crashes += t.agent_crashes;
        self.coordinator_crashes += t.coordinator_crashes;
        self.ensured += t.ensured;
        self.ensure_errors += t.ensure_errors;
        self.promises[0] += t.promises[0];
        self.promises[1] += t.promises[1];
        self.duplicates += t.duplicates;
        self.transfers += t.transfers;
        self.transfers_ok += t.transfers_ok;
        self.commits += t.commits;
        self.compared += t.compared;
        let store = [&inj.errors, &inj.corrupted, &inj.truncated].map(|c| c.load(Relaxed));
        for (i, n) in store
            .into_iter()
            .chain(t.faults[3..].iter().copied())
            .enumerate()
        {
            self.faults[i] += n;
        }
    }
}
