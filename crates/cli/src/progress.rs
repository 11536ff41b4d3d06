//! Progress of long work on stderr (`--progress auto|bar|plain|off`): a redrawn `indicatif`
//! bar when stderr is a terminal, one plain line every few seconds otherwise (logs, CI), and
//! nothing with `off`. The work reports on a [`Meter`]; a display thread reads it every
//! 100 ms, so the work never waits on the terminal.
//!
//! Plain lines come every [`PLAIN_EVERY`] (`PREWARM_PROGRESS_EVERY=<seconds>` changes it), a
//! final line when at least one came before, and every note the work leaves, at once.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
pub use prewarm_core::Meter;

use crate::output;

/// How progress is shown (the global `--progress` flag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always the bar (drawn only on a terminal).
    Bar,
    /// Always plain lines.
    Plain,
    /// Nothing.
    Off,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the mode for the process (the first call wins).
pub fn set_mode(m: Mode) {
    let _ = MODE.set(m);
}

/// The mode in effect, `auto` resolved.
fn mode() -> Mode {
    match MODE.get().copied().unwrap_or_default() {
        Mode::Auto if std::io::stderr().is_terminal() => Mode::Bar,
        Mode::Auto => Mode::Plain,
        m => m,
    }
}

/// Plain lines' default period.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

fn plain_every() -> Duration {
    std::env::var("PREWARM_PROGRESS_EVERY")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(PLAIN_EVERY, Duration::from_secs_f64)
}

/// What a meter counts.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// Bytes (shown with binary prefixes and a rate).
    Bytes,
    /// Things of this name ("executions", "batches").
    Count(&'static str),
    /// Nothing countable: a wait for an answer (shown as time waited).
    Wait,
}

impl Unit {
    fn amount(self, n: u64) -> String {
        match self {
            Unit::Bytes => output::bytes(n),
            Unit::Count(what) => format!("{n} {what}"),
            Unit::Wait => String::new(),
        }
    }

    fn style(self, total: u64) -> ProgressStyle {
        let t = match (self, total) {
            (Unit::Bytes, 0) => "{spinner} {msg} {bytes} ({binary_bytes_per_sec}), {elapsed}",
            (Unit::Bytes, _) => {
                "{msg} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} ({binary_bytes_per_sec}), eta {eta}"
            }
            (Unit::Wait, _) => "{spinner} {msg}, waiting {elapsed}",
            (Unit::Count(_), 0) => "{spinner} {msg} {pos} ({per_sec}), {elapsed}",
            (Unit::Count(_), _) => {
                "{msg} [{bar:30}] {percent:>3}% {pos}/{len} ({per_sec}), eta {eta}"
            }
        };
        ProgressStyle::with_template(t)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

/// A display of one meter; stops (clearing its bar) when finished or dropped.
pub struct Shown {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Shows `meter`'s progress under `label` until the returned display is finished.
pub fn show(label: impl Into<String>, meter: Arc<Meter>, unit: Unit) -> Shown {
    let stop = Arc::new(AtomicBool::new(false));
    let label = label.into();
    let thread = match mode() {
        Mode::Off => None,
        Mode::Bar => {
            let s = stop.clone();
            Some(std::thread::spawn(move || {
                draw_bar(&label, &meter, unit, &s)
            }))
        }
        _ => {
            let s = stop.clone();
            let every = plain_every();
            Some(std::thread::spawn(move || {
                draw_lines(&label, &meter, unit, every, &s)
            }))
        }
    };
    Shown { stop, thread }
}

impl Shown {
    /// Stops the display (prints what is left to print; clears the bar).
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.end();
    }
}

/// Counts a model's training on `meter`: batches of all epochs, a note per finished epoch.
pub fn training(meter: &Meter, p: &prewarm_predict::neural::Progress) {
    let batches = p.batches as u64;
    meter.set_total(u64::from(p.epochs) * batches);
    meter.set(u64::from(p.epoch.saturating_sub(1)) * batches + p.batch as u64);
    if let Some(v) = p.validation_loss {
        meter.note(format!(
            "epoch {}/{}: loss {:.4}, validation {:.4}, {:.0} steps/s",
            p.epoch, p.epochs, p.loss, v, p.steps_per_s
        ));
    }
}

const TICK: Duration = Duration::from_millis(100);

fn draw_bar(label: &str, meter: &Meter, unit: Unit, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    // The style before the first draw (setting the message draws), so that no frame of
    // indicatif's default style appears.
    let mut total = meter.total();
    bar.set_style(unit.style(total));
    bar.set_length(total);
    bar.set_message(label.to_owned());
    loop {
        let done = stop.load(Ordering::Relaxed);
        for n in meter.take_notes() {
            bar.println(&n);
            bar.set_message(format!("{label}: {n}"));
        }
        if meter.total() != total {
            total = meter.total();
            bar.set_style(unit.style(total));
            bar.set_length(total);
        }
        bar.set_position(meter.done());
        if total == 0 {
            bar.tick();
        }
        if done {
            bar.finish_and_clear();
            return;
        }
        std::thread::sleep(TICK);
    }
}

fn draw_lines(label: &str, meter: &Meter, unit: Unit, every: Duration, stop: &AtomicBool) {
    let started = Instant::now();
    let mut last = started;
    let mut printed = false;
    loop {
        let done = stop.load(Ordering::Relaxed);
        let mut err = std::io::stderr().lock();
        for n in meter.take_notes() {
            let _ = writeln!(err, "{label}: {n}");
        }
        if last.elapsed() >= every || (done && printed) {
            let _ = writeln!(err, "{}", line(label, meter, unit, started.elapsed()));
            last = Instant::now();
            printed = true;
        }
        drop(err);
        if done {
            return;
        }
        std::thread::sleep(TICK.min(every.max(Duration::from_millis(10))));
    }
}

/// One plain progress line: `label: 42% (1.2 GiB of 2.9 GiB, 310 MiB/s), 4 s`.
fn line(label: &str, meter: &Meter, unit: Unit, elapsed: Duration) -> String {
    let (done, total) = (meter.done(), meter.total());
    let secs = elapsed.as_secs_f64();
    let rate = match unit {
        Unit::Bytes => output::rate(done, secs),
        Unit::Count(what) => format!("{:.0} {what}/s", done as f64 / secs.max(1e-9)),
        Unit::Wait => return format!("{label}: waiting, {secs:.0} s"),
    };
    if total == 0 {
        return format!("{label}: {} ({rate}), {secs:.0} s", unit.amount(done));
    }
    format!(
        "{label}: {:.0}% ({} of {}, {rate}), {secs:.0} s",
        100.0 * done as f64 / total as f64,
        unit.amount(done),
        unit.amount(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_how_far_and_how_fast() {
        let m = Meter::new();
        m.set_total(4 << 30);
        m.add(1 << 30);
        let l = line("restore a@1", &m, Unit::Bytes, Duration::from_secs(2));
        assert!(
            l.starts_with("restore a@1: 25% (1.00 GiB of 4.00 GiB, "),
            "{l}"
        );
        assert!(l.ends_with(", 2 s"), "{l}");
        let c = Meter::new();
        c.add(30);
        let l = line(
            "replay",
            &c,
            Unit::Count("executions"),
            Duration::from_secs(3),
        );
        assert_eq!(l, "replay: 30 executions (10 executions/s), 3 s");
    }
}
