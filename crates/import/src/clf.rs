//! Web server logs. Two layouts, told apart by the first line:
//!
//! - NASA's tab-separated variant with a header: `host logname time method url response bytes`,
//!   `time` in Unix seconds;
//! - Common/Combined Log Format:
//!   `host ident user [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 ["ref" "agent"]`.
//!
//! Lines are handled as bytes: URLs that are not UTF-8 still import. The key is the host, the
//! resource `url/<path>`, `bytes` the response size (`-` counts as 0); method and status go to
//! the event's attributes.

use std::path::Path;

use prewarm_core::HistoryRecord;

use super::{ImportError, Sink, read_file, record, resource_for};

pub fn import(path: &Path, sink: &mut Sink) -> Result<(), ImportError> {
    let data = read_file(path)?;
    let mut lines = data.split(|&b| b == b'\n').enumerate().peekable();
    let nasa = lines.peek().is_some_and(|(_, l)| l.starts_with(b"host\t"));
    if nasa {
        lines.next();
    }
    for (i, raw) in lines {
        let line = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = if nasa {
            parse_nasa(raw)
        } else {
            parse_clf(raw)
        };
        match parsed {
            Ok(r) => sink.push(r),
            Err(why) => sink.malformed(path, line, why)?,
        }
    }
    Ok(())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn http(
    ts: f64,
    host: &[u8],
    method: &[u8],
    url: &[u8],
    status: &[u8],
    bytes: &[u8],
) -> Result<HistoryRecord, String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if url.is_empty() {
        return Err("empty URL".into());
    }
    let bytes: u64 = match bytes {
        b"-" | b"" => 0,
        b => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("size is not a number")?,
    };
    let mut r = record(ts, "http", text(host), resource_for("url", url), bytes, 0.0);
    r.event
        .attrs
        .insert("method".into(), serde_json::Value::String(text(method)));
    if let Some(code) = std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        r.event.attrs.insert("status".into(), code.into());
    }
    Ok(r)
}

fn parse_nasa(line: &[u8]) -> Result<HistoryRecord, String> {
    let f: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
    if f.len() < 7 {
        return Err(format!("{} tab-separated fields, expected 7", f.len()));
    }
    let ts: f64 = std::str::from_utf8(f[2])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("time is not Unix seconds")?;
    if !ts.is_finite() || ts < 0.0 {
        return Err("time is negative or not finite".into());
    }
    http(ts, f[0], f[3], f[4], f[5], f[6])
}

fn parse_clf(line: &[u8]) -> Result<HistoryRecord, String> {
    let host_end = line.iter().position(|&b| b == b' ').ok_or("no fields")?;
    let open = line.iter().position(|&b| b == b'[').ok_or("no [time]")?;
    let close = open
        + line[open..]
            .iter()
            .position(|&b| b == b']')
            .ok_or("no closing ]")?;
    let when = std::str::from_utf8(&line[open + 1..close]).map_err(|_| "time is not text")?;
    let ts = chrono::DateTime::parse_from_str(when, "%d/%b/%Y:%H:%M:%S %z")
        .map_err(|e| format!("time {when:?}: {e}"))?
        .timestamp() as f64;
    let rest = &line[close + 1..];
    let q1 = rest.iter().position(|&b| b == b'"').ok_or("no request")?;
    let q2 = q1
        + 1
        + rest[q1 + 1..]
            .iter()
            .position(|&b| b == b'"')
            .ok_or("unterminated request")?;
    let request = &rest[q1 + 1..q2];
    let mut parts = request.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts.next().ok_or("empty request")?;
    let url = parts.next().ok_or("request has no URL")?;
    let mut tail = rest[q2 + 1..]
        .split(|&b| b == b' ')
        .filter(|p| !p.is_empty());
    let status = tail.next().ok_or("no status")?;
    let size = tail.next().unwrap_or(b"-");
    http(ts, &line[..host_end], method, url, status, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_log_format() {
        let r = parse_clf(br#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://x/" "Mozilla""#).unwrap();
        assert_eq!(r.ts, 971211336.0);
        assert_eq!(r.event.key, "127.0.0.1");
        assert_eq!(r.reads[0].resource.as_str(), "url/apache_pb.gif");
        assert_eq!(r.reads[0].bytes, 2326);
        assert_eq!(r.event.attrs["status"], 200);
        let r = parse_clf(b"h - - [01/Jul/1995:00:00:01 -0400] \"GET /caf\xe9 HTTP/1.0\" 304 -")
            .unwrap();
        assert_eq!(r.reads[0].bytes, 0);
        assert!(parse_clf(b"garbage line").is_err());
        assert!(parse_clf(b"h - - [not a time] \"GET / HTTP/1.0\" 200 1").is_err());
    }

    #[test]
    fn nasa_tabs() {
        let r = parse_nasa(b"199.72.81.55\t-\t804571201\tGET\t/history/apollo/\t200\t6245\t\t")
            .unwrap();
        assert_eq!((r.ts, r.reads[0].bytes), (804571201.0, 6245));
        assert_eq!(r.reads[0].resource.as_str(), "url/history/apollo/_index");
        assert!(parse_nasa(b"a\tb").is_err());
        assert!(parse_nasa(b"h\t-\tnoon\tGET\t/\t200\t1").is_err());
    }
}
