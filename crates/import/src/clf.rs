//! Web server logs. Three layouts, told apart by the first line that is not blank:
//!
//! - Common/Combined Log Format, as Apache and NCSA servers write it and as NASA's and the
//!   other Internet Traffic Archive logs are published:
//!   `host ident user [01/Jul/1995:00:00:01 -0400] "GET /history/apollo/ HTTP/1.0" 200 6245`,
//!   optionally followed by `"referer" "agent"`. A request without a protocol
//!   (`"GET /a.gif"`) reads; a request holding a `"` ends at the quote that is followed by the
//!   status.
//! - W3C Extended Log Format (IIS and others), when the first line is a directive (`#…`):
//!   `#Fields: date time c-ip cs-method cs-uri-stem cs-uri-query sc-status sc-bytes …` names
//!   the space-separated fields of the lines after it (a later `#Fields:` changes them; other
//!   directives are skipped). Time is `date` + `time` in UTC (`date` may come from a `#Date:`
//!   directive instead); the host is `c-ip`, else `c-dns`; the URL `cs-uri-stem` with
//!   `?cs-uri-query` when there is one, else `cs-uri`; status `sc-status`; size `sc-bytes`.
//! - NASA's tab-separated variant with a header: `host logname time method url response bytes`,
//!   `time` in Unix seconds.
//!
//! Lines are handled as bytes: URLs that are not UTF-8 still import. The key is the host, the
//! resource `url/<path>`, `bytes` the response size (`-` counts as 0); method and status go to
//! the event's attributes.

use std::path::Path;

use prewarm_core::HistoryRecord;

use super::{ImportError, Sink, read_file, record, resource_for};

/// The layouts this module reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Clf,
    Elf,
    NasaTsv,
}

fn blank(l: &[u8]) -> bool {
    l.iter().all(u8::is_ascii_whitespace)
}

pub fn import(path: &Path, sink: &mut Sink) -> Result<(), ImportError> {
    let data = read_file(path)?;
    let lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.clone().find(|l| !blank(l)).unwrap_or_default();
    let layout = if first.starts_with(b"host\t") {
        Layout::NasaTsv
    } else if first.starts_with(b"#") {
        Layout::Elf
    } else {
        Layout::Clf
    };
    let mut elf = ElfState::default();
    let mut header_seen = false;
    for (i, raw) in lines.enumerate() {
        let line = i as u64 + 1;
        if blank(raw) {
            continue;
        }
        let parsed = match layout {
            Layout::NasaTsv if !header_seen => {
                header_seen = true;
                continue;
            }
            Layout::NasaTsv => parse_nasa(raw),
            Layout::Clf => parse_clf(raw),
            Layout::Elf => match elf.line(raw) {
                None => continue,
                Some(r) => r,
            },
        };
        match parsed {
            Ok(r) => sink.push_parsed(path, line, r)?,
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

/// The quote that closes the request opened at `q1`: the first one followed by a status
/// (` 200`, ` -`), else the first one at all.
fn request_end(rest: &[u8], q1: usize) -> Option<usize> {
    let quotes = || {
        rest.iter()
            .enumerate()
            .skip(q1 + 1)
            .filter(|&(_, &b)| b == b'"')
            .map(|(i, _)| i)
    };
    let status_follows = |i: usize| {
        let after = &rest[i + 1..];
        let after = after.strip_prefix(b" ").unwrap_or(b"x");
        let word = after.split(|&b| b == b' ').next().unwrap_or_default();
        word == b"-" || (word.len() == 3 && word.iter().all(u8::is_ascii_digit))
    };
    quotes()
        .find(|&i| status_follows(i))
        .or_else(|| quotes().next())
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
    let q2 = request_end(rest, q1).ok_or("unterminated request")?;
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

/// The W3C Extended Log Format's fields, as the last `#Fields:` directive named them.
#[derive(Default)]
struct ElfState {
    /// Field name → position, from the last `#Fields:`.
    fields: Option<Vec<String>>,
    /// The date of the last `#Date:` directive, for lines without a `date` field.
    date: Option<String>,
}

impl ElfState {
    /// A directive updates the state and yields `None`; a line yields its record.
    fn line(&mut self, raw: &[u8]) -> Option<Result<HistoryRecord, String>> {
        if let Some(d) = raw.strip_prefix(b"#") {
            let d = String::from_utf8_lossy(d);
            if let Some(f) = d.strip_prefix("Fields:") {
                self.fields = Some(f.split_whitespace().map(str::to_owned).collect());
            } else if let Some(date) = d.strip_prefix("Date:") {
                self.date = date.split_whitespace().next().map(str::to_owned);
            }
            return None;
        }
        Some(self.record(raw))
    }

    fn record(&self, raw: &[u8]) -> Result<HistoryRecord, String> {
        let names = self
            .fields
            .as_ref()
            .ok_or("no #Fields: directive before this line")?;
        let values = elf_tokens(raw);
        if values.len() != names.len() {
            return Err(format!(
                "{} fields, the #Fields: directive names {}",
                values.len(),
                names.len()
            ));
        }
        let get = |name: &str| -> Option<&[u8]> {
            let i = names.iter().position(|n| n == name)?;
            Some(values[i].as_slice()).filter(|v| *v != b"-")
        };
        let time = get("time").ok_or("no time field")?;
        let date = match get("date") {
            Some(d) => String::from_utf8_lossy(d).into_owned(),
            None => self
                .date
                .clone()
                .ok_or("no date field and no #Date: directive")?,
        };
        let when = format!("{date} {}", String::from_utf8_lossy(time));
        let ts = chrono::NaiveDateTime::parse_from_str(&when, "%Y-%m-%d %H:%M:%S%.f")
            .map_err(|e| format!("time {when:?}: {e}"))?
            .and_utc()
            .timestamp_millis() as f64
            / 1000.0;
        if ts < 0.0 {
            return Err(format!("time {when:?} is before 1970"));
        }
        let host = get("c-ip")
            .or_else(|| get("c-dns"))
            .ok_or("no c-ip or c-dns field")?;
        let url = match (get("cs-uri-stem"), get("cs-uri-query")) {
            (Some(stem), Some(q)) => [stem, b"?", q].concat(),
            (Some(stem), None) => stem.to_vec(),
            (None, _) => get("cs-uri")
                .ok_or("no cs-uri-stem or cs-uri field")?
                .to_vec(),
        };
        let method = get("cs-method").unwrap_or(b"-");
        let status = get("sc-status").unwrap_or_default();
        let size = get("sc-bytes").unwrap_or(b"-");
        http(ts, host, method, &url, status, size)
    }
}

/// A W3C extended log line's fields: separated by spaces or tabs; a field in double quotes
/// may hold spaces, and `""` inside it is one quote.
fn elf_tokens(line: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i] == b' ' || line[i] == b'\t' {
            i += 1;
            continue;
        }
        let mut tok = Vec::new();
        if line[i] == b'"' {
            i += 1;
            while i < line.len() {
                match (line[i], line.get(i + 1)) {
                    (b'"', Some(b'"')) => {
                        tok.push(b'"');
                        i += 2;
                    }
                    (b'"', _) => {
                        i += 1;
                        break;
                    }
                    (b, _) => {
                        tok.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                tok.push(line[i]);
                i += 1;
            }
        }
        out.push(tok);
    }
    out
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
    fn nasa_original_lines() {
        let r = parse_clf(br#"199.72.81.55 - - [01/Jul/1995:00:00:01 -0400] "GET /history/apollo/ HTTP/1.0" 200 6245"#).unwrap();
        assert_eq!((r.ts, r.reads[0].bytes), (804571201.0, 6245));
        assert_eq!(r.reads[0].resource.as_str(), "url/history/apollo/_index");
        assert_eq!(r.event.attrs["method"], "GET");
        let r =
            parse_clf(br#"h - - [01/Jul/1995:00:00:09 -0400] "GET /shuttle/countdown/" 200 3985"#)
                .unwrap();
        assert_eq!(r.reads[0].resource.as_str(), "url/shuttle/countdown/_index");
        let r = parse_clf(br#"h - - [01/Jul/1995:00:00:09 -0400] "GET /a"b.html HTTP/1.0" 404 -"#)
            .unwrap();
        assert_eq!(r.event.attrs["status"], 404);
        assert!(r.reads[0].resource.as_str().starts_with("url/a_b.html-h"));
    }

    #[test]
    fn w3c_extended() {
        let mut st = ElfState::default();
        assert!(
            st.line(b"#Software: Microsoft Internet Information Services 10.0")
                .is_none()
        );
        let early = st
            .line(b"2024-01-02 03:04:05 1.2.3.4 GET /x 200 5")
            .unwrap();
        assert!(early.unwrap_err().contains("#Fields"));
        assert!(st.line(b"#Fields: date time c-ip cs-method cs-uri-stem cs-uri-query sc-status sc-bytes cs(User-Agent)").is_none());
        let r = st
            .line(b"2024-01-02 03:04:05 10.0.0.7 GET /img/a.png q=1 200 512 \"Mozilla 5.0\"")
            .unwrap()
            .unwrap();
        assert_eq!(r.ts, 1_704_164_645.0);
        assert_eq!(r.event.key, "10.0.0.7");
        assert!(
            r.reads[0]
                .resource
                .as_str()
                .starts_with("url/img/a.png_q_1-h")
        );
        assert_eq!(r.reads[0].bytes, 512);
        let r = st
            .line(b"2024-01-02 03:04:06 10.0.0.7 GET /b.css - 304 - -")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.reads[0].resource.as_str(), r.reads[0].bytes),
            ("url/b.css", 0)
        );
        assert!(
            st.line(b"2024-01-02 03:04:06 10.0.0.7 GET")
                .unwrap()
                .is_err()
        );
        assert!(st.line(b"#Date: 2024-02-01 00:00:00").is_none());
        assert!(st.line(b"#Fields: time c-ip cs-uri").is_none());
        let r = st.line(b"00:00:01.5 h /c").unwrap().unwrap();
        assert_eq!(r.ts, 1_706_745_601.5);
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
