//! Tidy: the dependency rules of ARCHITECTURE.md, checked on `cargo metadata` (normal
//! dependencies, for this host, from the lock file and the local registry cache), and a `//!`
//! doc on the first line of every Rust file under `crates/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// Crates that know nothing of an async runtime or sockets, and what that rules out. The
/// report crate is among them: its pages and tables are built from plain data.
const PURE: &[&str] = &[
    "prewarm-core",
    "prewarm-engine",
    "prewarm-predict",
    "prewarm-report",
];
const RUNTIME: &[&str] = &["tokio", "tonic", "axum", "hyper", "async-nats"];
/// The decision engine leaves models and trace parsing to others.
const ENGINE: &str = "prewarm-engine";
const NOT_IN_ENGINE: &[&str] = &["candle-core", "candle-nn", "csv", "chrono"];
/// Only the binary knows these (directly).
const CLI: &str = "prewarm";
const CLI_ONLY: &[&str] = &["clap", "anyhow"];
/// The libraries the binary's heavier commands are thin over (they, too, are held to
/// `CLI_ONLY`, like every crate but the binary).
const COMMAND_LIBRARIES: &[&str] = &["prewarm-bench", "prewarm-demo", "prewarm-report"];

/// The resolved graph: package names by id, each package's dependencies with whether the
/// edge is a normal one and whether it is a non-dev one (normal or build).
struct Graph {
    names: HashMap<String, String>,
    deps: HashMap<String, Vec<(String, bool, bool)>>,
    members: Vec<String>,
}

fn graph(meta: &Value) -> Graph {
    let names = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (str_of(&p["id"]), str_of(&p["name"])))
        .collect();
    let mut deps = HashMap::new();
    for n in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let edges = n["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .map(|d| {
                let kinds: Vec<&Value> = d["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .collect();
                let normal = kinds.iter().any(|k| k["kind"].is_null());
                let non_dev = kinds.iter().any(|k| k["kind"] != "dev");
                (str_of(&d["pkg"]), normal, non_dev)
            })
            .collect();
        deps.insert(str_of(&n["id"]), edges);
    }
    let members = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .map(str_of)
        .collect();
    Graph {
        names,
        deps,
        members,
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().expect("a string").to_owned()
}

impl Graph {
    fn id_of(&self, name: &str) -> Option<&String> {
        self.members.iter().find(|id| self.names[*id] == name)
    }

    /// Names `id` uses directly, build dependencies included, dev-dependencies not.
    fn direct(&self, id: &str) -> BTreeSet<&str> {
        self.deps[id]
            .iter()
            .filter(|(_, _, non_dev)| *non_dev)
            .map(|(to, ..)| self.names[to].as_str())
            .collect()
    }

    /// Names reachable from `id` through normal dependencies.
    fn reachable(&self, id: &str) -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            for (to, normal, _) in &self.deps[x] {
                if *normal && seen.insert(to.as_str()) {
                    stack.push(to);
                }
            }
        }
        seen.into_iter().map(|id| self.names[id].as_str()).collect()
    }
}

fn forbid(out: &mut Vec<String>, krate: &str, banned: &[&str], deps: &BTreeSet<&str>, how: &str) {
    for b in banned.iter().filter(|b| deps.contains(*b)) {
        out.push(format!("{krate} depends on {b} ({how})"));
    }
}

/// Every broken rule, one line each.
fn violations(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for krate in PURE.iter().chain(&[ENGINE, CLI]).chain(COMMAND_LIBRARIES) {
        if g.id_of(krate).is_none() {
            out.push(format!(
                "{krate} is not a workspace member: rename it here too"
            ));
        }
    }
    let transitively = "directly or through normal dependencies";
    for id in &g.members {
        let name = g.names[id].as_str();
        let reachable = g.reachable(id);
        if PURE.contains(&name) {
            forbid(&mut out, name, RUNTIME, &reachable, transitively);
        }
        if name == ENGINE {
            forbid(&mut out, name, NOT_IN_ENGINE, &reachable, transitively);
        }
        if name != CLI {
            forbid(
                &mut out,
                name,
                CLI_ONLY,
                &g.direct(id),
                "only the binary may",
            );
        }
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// This host's target triple, from `rustc -vV`.
fn host() -> String {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("running rustc -vV");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host())
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
}

#[test]
fn dependencies_follow_the_architecture() {
    let v = violations(&graph(&metadata()));
    assert!(v.is_empty(), "dependency rules broken:\n{}", v.join("\n"));
}

/// A workspace of `members` (name → its dependencies as `(name, kind)`; kind `None` is normal)
/// in `cargo metadata`'s shape.
fn fake(members: &[&str], edges: &[(&str, &str, Option<&str>)]) -> Value {
    let mut all: BTreeSet<&str> = members.iter().copied().collect();
    all.extend(edges.iter().flat_map(|(a, b, _)| [*a, *b]));
    let id = |n: &str| format!("id-{n}");
    let nodes: Vec<Value> = all
        .iter()
        .map(|n| {
            let deps: Vec<Value> = edges
                .iter()
                .filter(|(from, ..)| from == n)
                .map(|(_, to, kind)| json!({"pkg": id(to), "dep_kinds": [{"kind": kind}]}))
                .collect();
            json!({"id": id(n), "deps": deps})
        })
        .collect();
    json!({
        "packages": all.iter().map(|n| json!({"id": id(n), "name": n})).collect::<Vec<_>>(),
        "resolve": {"nodes": nodes},
        "workspace_members": members.iter().map(|n| id(n)).collect::<Vec<_>>(),
    })
}

#[test]
fn the_rules_catch_what_they_forbid() {
    let members = [
        "prewarm-core",
        "prewarm-engine",
        "prewarm-predict",
        "prewarm-report",
        "prewarm-bench",
        "prewarm-demo",
        "prewarm",
        "prewarm-x",
    ];
    let ok = fake(
        &members,
        &[
            ("prewarm", "clap", None),
            ("prewarm", "tokio", None),
            ("prewarm-engine", "csv", Some("dev")),
            ("prewarm-x", "anyhow", Some("dev")),
            ("prewarm-predict", "candle-core", None),
        ],
    );
    assert_eq!(violations(&graph(&ok)), Vec::<String>::new());
    let bad = fake(
        &members,
        &[
            ("prewarm-engine", "helper", None),
            ("helper", "tokio", None),
            ("helper", "chrono", None),
            ("prewarm-core", "anyhow", Some("build")),
            ("prewarm-x", "clap", None),
            ("prewarm-predict", "devonly", Some("dev")),
            ("devonly", "hyper", None),
            ("prewarm-bench", "anyhow", None),
            ("prewarm-demo", "clap", None),
            ("prewarm-report", "tokio", None),
        ],
    );
    assert_eq!(
        violations(&graph(&bad)),
        [
            "prewarm-core depends on anyhow (only the binary may)",
            "prewarm-engine depends on tokio (directly or through normal dependencies)",
            "prewarm-engine depends on chrono (directly or through normal dependencies)",
            "prewarm-report depends on tokio (directly or through normal dependencies)",
            "prewarm-bench depends on anyhow (only the binary may)",
            "prewarm-demo depends on clap (only the binary may)",
            "prewarm-x depends on clap (only the binary may)",
        ]
    );
    let renamed = fake(
        &[
            "prewarm-core",
            "prewarm-engine",
            "prewarm-report",
            "prewarm-bench",
            "prewarm",
        ],
        &[],
    );
    assert_eq!(
        violations(&graph(&renamed)),
        [
            "prewarm-predict is not a workspace member: rename it here too",
            "prewarm-demo is not a workspace member: rename it here too",
        ]
    );
}

/// Rust files under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("readable") {
        let p = e.expect("an entry").path();
        if p.is_dir() && p.file_name() != Some("target".as_ref()) {
            rust_files(&p, out);
        } else if p.extension() == Some("rs".as_ref()) {
            out.push(p);
        }
    }
}

fn starts_with_doc(text: &str) -> bool {
    text.starts_with("//!")
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    assert!(!starts_with_doc("// a comment\n//! late doc\n"));
    assert!(!starts_with_doc("\n//! after a blank line\n"));
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|p| !starts_with_doc(&std::fs::read_to_string(p).expect("utf-8")))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files whose first line is not a `//!` doc:\n{}",
        missing.join("\n")
    );
}

/// Server calls that would bypass `prewarm-http`'s bounds if used outside it.
fn unbounded_server_calls(text: &str) -> Vec<&'static str> {
    ["axum::serve(", "Server::builder()", "serve_with_incoming("]
        .into_iter()
        .filter(|pat| text.contains(pat))
        .collect()
}

#[test]
fn every_listener_is_served_through_prewarm_http() {
    assert_eq!(
        unbounded_server_calls("tokio::spawn(axum::serve(l, r));"),
        ["axum::serve("]
    );
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    let http = workspace_root().join("crates/http");
    let found: Vec<String> = files
        .iter()
        // Tests may serve stubs however they like; production listeners may not.
        .filter(|p| !p.starts_with(&http) && !p.ends_with("tests.rs") && !p.ends_with("tidy.rs"))
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).expect("utf-8");
            let calls = unbounded_server_calls(&text);
            (!calls.is_empty()).then(|| format!("{}: {calls:?}", p.display()))
        })
        .collect();
    assert!(
        found.is_empty(),
        "HTTP served outside prewarm-http (no connection cap, header, body or idle bound):\n{}",
        found.join("\n")
    );
}

/// Longest a production function may be, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 100;

/// `text` with the contents of comments, string and char literals blanked (newlines kept),
/// so braces in them do not count.
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r'
            && (i == 0 || !ident(b[i - 1]) || (b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2]))))
            && matches!(b.get(i + 1), Some(b'"' | b'#'))
        {
            // A raw string: r"…", r#"…"#, ….
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i = (i + close.len()).min(b.len());
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}', '{'); otherwise a lifetime or label.
            let end = if b.get(i + 1) == Some(&b'\\') {
                let rest = b.get(i + 3..).unwrap_or_default();
                rest.iter().position(|&c| c == b'\'').map(|p| i + 3 + p)
            } else {
                let len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match end {
                Some(e) => i = e + 1,
                None => {
                    i += 1;
                    continue;
                }
            }
        } else {
            i += 1;
            continue;
        }
        blank(&mut out, start, i);
    }
    out
}

/// Where the item starting at `from` ends: the index of the brace closing its body, or of
/// the `;` ending a bodiless item (`None` at the end of the text).
fn item_end(code: &[u8], from: usize) -> Option<usize> {
    let mut nesting = 0i32; // parentheses and brackets in a signature or attribute
    let mut i = from;
    while i < code.len() {
        match code[i] {
            b'(' | b'[' => nesting += 1,
            b')' | b']' => nesting -= 1,
            b';' if nesting == 0 => return Some(i),
            b'{' if nesting == 0 => {
                let mut depth = 0;
                for (j, &c) in code.iter().enumerate().skip(i) {
                    match c {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j);
                            }
                        }
                        _ => {}
                    }
                }
                return None;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Functions of `text` longer than `max` lines, as `name (line N): L lines`; items under
/// `#[cfg(test)]` are skipped whole.
fn long_functions(text: &str, max: usize) -> Vec<String> {
    let code = code_only(text);
    let line_of = |i: usize| code[..i].iter().filter(|&&c| c == b'\n').count() + 1;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i..].starts_with(b"#[cfg(test)]") {
            match item_end(&code, i + b"#[cfg(test)]".len()) {
                Some(e) => i = e + 1,
                None => break,
            }
            continue;
        }
        let is_fn = code[i..].starts_with(b"fn")
            && (i == 0 || !ident(code[i - 1]))
            && code.get(i + 2).is_some_and(u8::is_ascii_whitespace);
        if is_fn && let Some(end) = item_end(&code, i) {
            let name: String = text[i + 2..]
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let lines = line_of(end) - line_of(i) + 1;
            if code[end] == b'}' && lines > max {
                out.push(format!("{name} (line {}): {lines} lines", line_of(i)));
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_production_function_is_too_long() {
    let sample = "fn short() {\n    let s = \"}}}\";\n}\n\
                  fn long<'a>(x: &'a [u8; 2]) -> char {\n    // }\n    let _ = r#\"{\"#;\n\
                  \n    '{'\n}\n\
                  #[cfg(test)]\nmod tests {\n    fn long_test() {\n\n\n\n\n    }\n}\n\
                  trait T { fn f(&self); }\n";
    assert_eq!(long_functions(sample, 3), ["long (line 4): 6 lines"]);
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    let mut found = Vec::new();
    for p in &files {
        let in_src = p
            .parent()
            .and_then(|d| {
                d.ancestors()
                    .find(|a| a.file_name() == Some("src".as_ref()))
            })
            .is_some();
        let test_file = p.ends_with("tests.rs")
            || p.components()
                .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "benches");
        if !in_src || test_file {
            continue;
        }
        let text = std::fs::read_to_string(p).expect("utf-8");
        for f in long_functions(&text, MAX_FN_LINES) {
            found.push(format!("{}: {f}", p.display()));
        }
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named stages):\n{}",
        found.join("\n")
    );
}
