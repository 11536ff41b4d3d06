//! Mapping raw names from traces (URLs, function hashes) to valid resource ids.

use prewarm_core::{MAX_RESOURCE_ID_LEN, MAX_SEGMENT_LEN, ResourceId};

/// Maps raw bytes to a resource id under `namespace` (empty: none), deterministically.
///
/// Allowed bytes (`[A-Za-z0-9._-]` and `/`) are kept; others become `_`; empty, `.` and `..`
/// segments become `_`, `_.`, `_..`; a trailing `/` becomes a final `_index` segment. When
/// anything was changed (or the id, or a segment, had to be shortened to fit 256 and 200
/// bytes), `~` is not
/// available, so a `-h` + 12 hex digits of the raw name's BLAKE3 is appended to keep distinct
/// names distinct.
pub fn resource_for(namespace: &str, raw: &[u8]) -> ResourceId {
    let mut changed = false;
    let trimmed = raw.strip_prefix(b"/").unwrap_or(raw);
    let mut segments: Vec<String> = Vec::new();
    let parts: Vec<&[u8]> = trimmed.split(|&b| b == b'/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() && i == last && i > 0 {
            segments.push("_index".into());
            continue;
        }
        let mut seg: String = part
            .iter()
            .map(|&b| {
                let c = b as char;
                if b.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    changed = true;
                    '_'
                }
            })
            .collect();
        if seg.is_empty() || seg == "." || seg == ".." {
            seg.insert(0, '_');
            changed = true;
        }
        let suffix_len = 15;
        if seg.len() > MAX_SEGMENT_LEN - suffix_len {
            seg.truncate(MAX_SEGMENT_LEN - suffix_len);
            changed = true;
        }
        segments.push(seg);
    }
    let mut id = if namespace.is_empty() {
        segments.join("/")
    } else {
        format!("{namespace}/{}", segments.join("/"))
    };
    let suffix_len = 15;
    if id.len() > MAX_RESOURCE_ID_LEN {
        id.truncate(MAX_RESOURCE_ID_LEN - suffix_len);
        while id.ends_with('/') || id.ends_with('.') {
            id.pop();
        }
        changed = true;
    }
    if changed {
        let h = blake3::hash(raw).to_hex();
        id.push_str("-h");
        id.push_str(&h[..12]);
    }
    // A namespace that is not itself a valid id (a library caller's; the CLI checks its
    // own) still gets a valid, deterministic id: the raw name's hash alone.
    ResourceId::new(id).unwrap_or_else(|_| {
        let h = blake3::hash(raw).to_hex();
        ResourceId::new(format!("h{}", &h[..24])).expect("hex digits are a valid id")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &[u8], want: &str) {
        assert_eq!(
            resource_for("url", raw).as_str(),
            want,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }

    #[test]
    fn clean_names_pass_through() {
        check(
            b"/images/ksclogo-medium.gif",
            "url/images/ksclogo-medium.gif",
        );
        check(b"fn/abc123", "url/fn/abc123");
    }

    #[test]
    fn unsafe_names_are_mapped_and_tagged() {
        check(b"/history/apollo/", "url/history/apollo/_index");
        let q = resource_for("url", b"/cgi-bin/imagemap/countdown?320,274");
        assert!(
            q.as_str()
                .starts_with("url/cgi-bin/imagemap/countdown_320_274-h"),
            "{q}"
        );
        let dots = resource_for("url", b"/a/../b//c");
        assert!(dots.as_str().starts_with("url/a/_../b/_/c-h"), "{dots}");
        let bin = resource_for("url", b"/caf\xe9.html");
        assert!(bin.as_str().starts_with("url/caf_.html-h"), "{bin}");
        assert_ne!(
            resource_for("url", b"/a?b"),
            resource_for("url", b"/a&b"),
            "distinct raw names stay distinct"
        );
        let long = resource_for("url", &[b'x'; 1000]);
        assert!(long.as_str().len() <= MAX_RESOURCE_ID_LEN);
        let segs = resource_for(
            "url",
            format!("/{}/{}", "a".repeat(300), "b".repeat(30)).as_bytes(),
        );
        assert!(
            segs.segments().all(|s| s.len() <= MAX_SEGMENT_LEN),
            "{segs}"
        );
    }
}
