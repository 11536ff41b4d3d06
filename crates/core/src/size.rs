//! Human-friendly byte sizes (`64MiB`, `1.5GB`, `4096`) and durations (`500ms`, `10s`, `2m`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A byte count that parses from and prints as a human-friendly size.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ByteSize(pub u64);

/// Why a size or duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {input:?} as a {what} (examples: {examples})")]
pub struct ParseSizeError {
    input: String,
    what: &'static str,
    examples: &'static str,
}

impl FromStr for ByteSize {
    type Err = ParseSizeError;
    fn from_str(s: &str) -> Result<Self, ParseSizeError> {
        let err = || ParseSizeError {
            input: s.to_owned(),
            what: "byte size",
            examples: "4096, 64KiB, 16MiB, 1.5GB",
        };
        let (n, unit) = number_and_unit(s).ok_or_else(err)?;
        let mult: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "kb" => 1e3,
            "m" | "mib" => 1024.0 * 1024.0,
            "mb" => 1e6,
            "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "gb" => 1e9,
            "t" | "tib" => 1024.0f64.powi(4),
            "tb" => 1e12,
            _ => return Err(err()),
        };
        let v = n * mult;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(v.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut i = 0;
        while v >= 1024.0 && i + 1 < UNITS.len() {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.2} {}", UNITS[i])
        }
    }
}

/// Splits `"1.5GiB"` into `(1.5, "GiB")`; the unit is trimmed, the number must parse.
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

/// Parses `500ms`, `10s`, `2m`, `1h`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ParseSizeError> {
    let err = || ParseSizeError {
        input: s.to_owned(),
        what: "duration",
        examples: "500ms, 10s, 2m, 1h",
    };
    let (n, unit) = number_and_unit(s).ok_or_else(err)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, v) in [
            ("4096", 4096),
            ("64KiB", 65536),
            ("16MiB", 16 << 20),
            ("1.5GB", 1_500_000_000),
            ("2g", 2 << 30),
        ] {
            assert_eq!(s.parse::<ByteSize>().unwrap().0, v, "{s}");
        }
        for bad in ["", "x", "10 parsecs", "-1", "1e999"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(1536).to_string(), "1.50 KiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
