//! [`Meter`]: how far a long piece of work is, shared between the work and whoever shows it.
//!
//! The work (a snapshot's writer, a restore, a replay's event loop) adds what it finished with
//! relaxed atomic stores; a display (the CLI's progress bar or periodic lines) reads it from
//! another thread. Nothing here draws or blocks on the display; counting allocates nothing.
//! Work with stages also leaves notes (a stage begun, a result) that the display prints above
//! its bar; unread notes beyond the newest [`MAX_NOTES`] are dropped.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Notes kept until a display takes them.
pub const MAX_NOTES: usize = 64;

/// Work done out of a total (bytes, records, runs: the reader knows the unit).
#[derive(Debug, Default)]
pub struct Meter {
    done: AtomicU64,
    total: AtomicU64,
    notes: Mutex<VecDeque<String>>,
}

impl Meter {
    /// A meter at 0 of 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the total (0: unknown).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Adds `n` to the work done.
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the work done to `n` (for work that knows its position).
    pub fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }

    /// The work done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The total (0: unknown).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Leaves a line for the display (a stage begun, a figure measured).
    pub fn note(&self, line: impl Into<String>) {
        let mut q = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == MAX_NOTES {
            q.pop_front();
        }
        q.push_back(line.into());
    }

    /// The notes left since the last call, oldest first.
    pub fn take_notes(&self) -> Vec<String> {
        let mut q = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        q.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_several_threads() {
        let m = std::sync::Arc::new(Meter::new());
        m.set_total(4_000);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || (0..1_000).for_each(|_| m.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!((m.done(), m.total()), (4_000, 4_000));
        m.set(10);
        assert_eq!(m.done(), 10);
    }

    #[test]
    fn notes_are_taken_once_and_bounded() {
        let m = Meter::new();
        for i in 0..MAX_NOTES + 3 {
            m.note(format!("n{i}"));
        }
        let notes = m.take_notes();
        assert_eq!(notes.len(), MAX_NOTES);
        assert_eq!(notes[0], "n3");
        assert!(m.take_notes().is_empty());
    }
}
