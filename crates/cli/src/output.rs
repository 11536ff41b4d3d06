//! Printing results: a human line or table ([`prewarm_report::text`]), or one JSON document
//! with `--json`.

use serde::Serialize;

pub use prewarm_report::text::{bytes, rate, table};

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
