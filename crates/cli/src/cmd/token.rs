//! `prewarm token new`: a fresh tenant-scoped token. The secret is shown once (or written
//! to `--secret-file`, mode 0600) and never stored; stdout is the `[[token]]` entry for the
//! tokens file (`--tokens`), holding only the secret's BLAKE3 hash, so
//! `prewarm token new … >> tokens.toml` appends exactly the entry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use prewarm_transfer::tokens::{new_secret, token_hash};

/// Arguments of `prewarm token`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Make a token: print its tokens-file entry (the secret goes to stderr, once, or to
    /// --secret-file).
    New(NewArgs),
}

/// Arguments of `prewarm token new`.
#[derive(clap::Args, Debug)]
struct NewArgs {
    /// The tenant (or client) the token is for: 1 to 64 letters, digits, '.', '_' or '-'.
    #[arg(long)]
    name: String,
    /// A resource-id prefix it may name, matched by whole segments (`tenants/acme/`; `*`:
    /// every resource). Repeatable, or comma-separated.
    #[arg(
        long = "prefix",
        value_name = "PREFIX",
        value_delimiter = ',',
        required = true
    )]
    prefixes: Vec<String>,
    /// Its capabilities: ensure, events, transfer, admin (comma-separated or repeated).
    #[arg(
        long = "cap",
        value_name = "CAP",
        value_delimiter = ',',
        required = true
    )]
    caps: Vec<String>,
    /// Write the secret to this new file (mode 0600) instead of stderr; the file is what
    /// the client passes as --token-file.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<i32> {
    match a.command {
        TokenCommand::New(n) => new(n),
    }
}

fn new(a: NewArgs) -> anyhow::Result<i32> {
    let secret = new_secret().context("reading the kernel's random source")?;
    let list = |v: &[String]| {
        let quoted: Vec<String> = v.iter().map(|s| format!("{:?}", s.trim())).collect();
        format!("[{}]", quoted.join(", "))
    };
    let entry = format!(
        "[[token]]\nname = {:?}\nhash = {:?}\nprefixes = {}\ncaps = {}\n",
        a.name,
        token_hash(&secret),
        list(&a.prefixes),
        list(&a.caps)
    );
    // The entry must load as the servers will load it.
    prewarm_transfer::Tokens::parse(&entry, "the new entry".as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match &a.secret_file {
        Some(path) => write_secret(path, &secret)?,
        None => eprintln!(
            "secret for {:?} (shown once, not stored anywhere; give it to the client as its \
             --token-file or PREWARM_TOKEN):\n{secret}",
            a.name
        ),
    }
    print!("{entry}");
    Ok(0)
}

/// Writes `secret` to a new file only its owner can read.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
