//! Shell completions and man pages come from the clap definitions: the bash script loads in
//! a real bash and completes the commands and their flags; every command gets a page that
//! names its flags.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_prewarm");

#[test]
fn bash_completes_commands_and_flags() {
    let script = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prewarm.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    // Load the script in bash and ask its completion function what follows
    // `prewarm rep` and `prewarm replay --cache`.
    let ask = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _prewarm prewarm \
             \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let commands = ask("prewarm rep");
    assert!(commands.lines().any(|l| l == "replay"), "{commands}");
    assert!(commands.lines().any(|l| l == "repair"), "{commands}");
    let flags = ask("prewarm replay --cache");
    assert!(flags.lines().any(|l| l == "--cache-size"), "{flags}");
    for shell in ["zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn every_command_gets_a_man_page_naming_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert!(page("prewarm.1").contains("prewarm\\-coordinator"));
    let coordinator = page("prewarm-coordinator.1");
    assert!(
        coordinator.contains(".TH prewarm-coordinator"),
        "{coordinator}"
    );
    assert!(
        coordinator.contains("\\-\\-retrain\\-every"),
        "{coordinator}"
    );
    assert!(page("prewarm-bench-coordinator.1").contains("\\-\\-capacities"));
}
