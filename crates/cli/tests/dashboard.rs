//! The coordinator's dashboard (`/ui`) in headless Chromium: a coordinator and two agents as
//! real processes move state (a predictive transfer an event caused, transfers by hand, an
//! execution's hit), the page is loaded in the browser, and its DOM — after the page's own
//! script fetched and drew `/v1/dashboard` — shows the capacities, their states, the
//! transfers and the rates, and shows new work on the next load. With
//! `PREWARM_SCREENSHOT=path` the test also saves a screenshot there (how `docs/dashboard.png`
//! is made).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

mod support;

use support::*;

/// Headless Chromium's binary, or `None` (with a note) when none is installed — except under
/// CI, where `.ci/run` installs it and its absence is a failure.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide chromium (.ci/run installs it)"
        );
        eprintln!("no chromium on PATH: skipping");
    }
    found
}

fn headless(browser: &str, profile: &std::path::Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox", // the tests may run as root (CI)
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1100",
        // The page polls every second: 3.5 s of its time is three or four refreshes.
        "--virtual-time-budget=3500",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM of `url` once the page's script ran for a while, up to the script.
fn dom(browser: &str, profile: &std::path::Path, url: &str) -> String {
    let out = headless(browser, profile)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    // The drawn document, without the script's source (which spells the same markup).
    dom.split("<script>").next().unwrap().to_owned()
}

/// The text of the element with `id` in `dom` (up to its first tag).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

fn refreshes(dom: &str) -> u64 {
    let at = dom.find("data-refreshes=\"").unwrap() + "data-refreshes=\"".len();
    dom[at..].split('"').next().unwrap().parse().unwrap()
}

#[test]
fn the_dashboard_shows_capacities_transfers_and_rates_and_updates_itself() {
    let Some(browser) = chromium() else {
        return;
    };
    let c = Cluster::start();
    let profile = c.path("chromium");
    let Pair {
        coord,
        api_b,
        _a,
        _b,
    } = taught_pair(&c, 1 << 20, 3);
    // A predictive transfer (the model learned x → y), not read yet.
    let (code, body) = http_post(
        &coord,
        "/v1/events",
        br#"{"event": {"type": "http", "key": "s1"}, "capacity": "cap-b"}"#,
    );
    assert_eq!(code, 200, "{body}");
    wait_until("the predicted state on cap-b", 20, || {
        held(&c.url, "cap-b").contains(&("shop/x".to_owned(), 1))
    });
    let url = format!("{}/ui", c.url);
    let first = dom(browser, &profile, &url);
    assert!(first.contains(r#"data-capacity="cap-a""#), "{first}");
    assert!(first.contains(r#"data-capacity="cap-b""#), "{first}");
    assert!(first.contains(r#"data-state="shop/x""#), "{first}");
    assert!(first.contains("predicted, unread"), "{first}");
    assert!(
        first.contains(r#"data-resource="shop/x""#),
        "a recent transfer: {first}"
    );
    assert!(first.contains(">predictive<"), "{first}");
    assert_eq!(text_of(&first, "caps"), "2 / 2");
    // cap-a's ten executions were cold the first time of each state, warm after.
    let warm = text_of(&first, "warm-rate");
    assert!(warm.ends_with('%') && warm != "0.0%", "{warm}");
    assert!(text_of(&first, "events-rate") != "—");
    assert!(refreshes(&first) >= 2, "the page refreshes itself");
    assert_eq!(text_of(&first, "error"), "");
    // The prefetch is read: it is no longer "unread", and counts as read.
    let (code, body) = http_get(&api_b, "/v1/states/shop/x?key=s1");
    assert_eq!(code, 200, "{body}");
    let t = ack(&c.transfer("cap-b", "shop/y", &["--on-demand"]));
    assert_eq!(t["ok"], true, "{t}");
    wait_until("cap-b's history", 20, || {
        let (_, m) = http_get(&coord, "/metrics");
        metric(&m, "prewarm_coordinator_history_records_total") >= 11.0
    });
    let second = dom(browser, &profile, &url);
    assert!(second.contains(r#"data-state="shop/y""#), "{second}");
    assert!(!second.contains("predicted, unread"), "{second}");
    assert!(second.contains(">on demand<"), "{second}");
    assert_eq!(text_of(&second, "precision"), "100.0%");
    if let Some(path) = std::env::var_os("PREWARM_SCREENSHOT") {
        let path = std::path::absolute(path).unwrap();
        let out = headless(browser, &profile)
            .arg(format!("--screenshot={}", path.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(std::fs::metadata(&path).unwrap().len() > 10_000);
    }
}
