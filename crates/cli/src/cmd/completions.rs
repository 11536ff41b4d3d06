//! `prewarm completions` and `prewarm man`: shell completions and man pages generated from
//! the clap definitions, so they never drift from the flags.

use std::path::PathBuf;

use anyhow::Context as _;
use clap_complete::Shell;

/// `prewarm completions`.
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// `prewarm man`.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory for the pages: prewarm.1 and prewarm-<command>.1 for each command.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Prints the completion script for `a.shell` to stdout.
pub fn completions(a: &CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<i32> {
    clap_complete::generate(a.shell, &mut cmd, "prewarm", &mut std::io::stdout());
    Ok(0)
}

/// Writes one man page for the binary and one per command (and nested command) to `a.out`.
pub fn man(a: &ManArgs, cmd: clap::Command) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = 0;
    write_pages(&a.out, cmd, "prewarm", &mut written)?;
    eprintln!("{written} man pages written to {}", a.out.display());
    Ok(0)
}

fn write_pages(
    dir: &std::path::Path,
    cmd: clap::Command,
    name: &str,
    written: &mut usize,
) -> anyhow::Result<()> {
    let cmd = cmd.name(name.to_owned());
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("rendering the page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(dir, sub.clone(), &sub_name, written)?;
    }
    Ok(())
}
