//! The `prewarm` binary: one file per subcommand under `cmd/`, `anyhow` at the top.
//!
//! Errors print as one line on stderr with exit code 2; `verify` exits 1 when it finds damage.

mod cmd;
mod config;
mod output;
mod progress;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// prewarm: predictive state transfer for compute capacities.
#[derive(Parser)]
#[command(name = "prewarm", version, about, long_about = None)]
struct Cli {
    /// Log verbosity for stderr (error, warn, info, debug, trace); default warn (error for
    /// `demo`, which reports failures itself).
    #[arg(long, global = true)]
    log: Option<String>,
    /// Progress of long work on stderr: a bar on a terminal, a line every 5 s otherwise
    /// (`auto`), or always one of them, or nothing.
    #[arg(long, global = true, value_enum, default_value_t = progress::Mode::Auto)]
    progress: progress::Mode,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot a file or directory into the store as the resource's next version.
    Snapshot(cmd::snapshot::Args),
    /// Restore a version of a resource to a new path.
    Restore(cmd::restore::Args),
    /// List a resource's versions (or every resource's latest version).
    Versions(cmd::versions::Args),
    /// Re-read and re-hash every referenced chunk; exit 1 if anything is damaged.
    Verify(cmd::verify::Args),
    /// Rebuild a damaged chunk index from the packs' trailers and publish it.
    Repair(cmd::repair::Args),
    /// Keep the newest N versions per resource and reclaim unreferenced chunks.
    Gc(cmd::gc::Args),
    /// Import a real trace (Azure Functions, Azure LLM inference, web logs, any CSV) as history records.
    Import(cmd::import::Args),
    /// Evaluate predictors online on a history (top-1/top-5, log-loss, latency).
    Eval(cmd::eval::Args),
    /// Train a GRU or Transformer on a history (safetensors + JSON config).
    Train(cmd::train::Args),
    /// Watch a file or directory and snapshot it on an interval and when it changes.
    Watch(cmd::watch::Args),
    /// Run the coordinator: control plane (gRPC), data plane, invalidations, /metrics.
    Coordinator(Box<cmd::coordinator::Args>),
    /// Run the state manager of one compute capacity.
    Agent(cmd::agent::Args),
    /// Have a capacity load a state; returns when the agent acknowledges.
    Transfer(cmd::transfer::Args),
    /// Capacities, their inventories and recent transfers.
    Status(cmd::status::Args),
    /// Make a tenant-scoped token (its tokens-file entry; the secret shown once).
    Token(cmd::token::Args),
    /// Benchmarks against peer tools, measured in the same run.
    Bench(cmd::bench::Args),
    /// The main job: a self-contained demonstration on generated data.
    Demo(cmd::demo::Args),
    /// Generate a fleet-scale synthetic history (tenants, sessions, Zipf popularity, diurnal load, bursts, versions).
    Generate(cmd::generate::Args),
    /// Replay a history through the simulator under several policies (table, JSON, HTML report)
    Replay(cmd::replay::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::CompletionsArgs),
    /// Write man pages for prewarm and each of its commands.
    Man(cmd::completions::ManArgs),
}

/// Keeps large freed blocks in the process instead of returning them to the kernel: model
/// training allocates and frees tensors of tens of MiB per batch, and with glibc's defaults
/// each one is a fresh `mmap` whose pages fault in zeroed — a third of training time, measured.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists, and a failure (return 0) just leaves the defaults.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() {
    tune_allocator();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("prewarm: internal error (a bug, please report it): {info}");
    }));
    let cli = parse();
    progress::set_mode(cli.progress);
    let quiet = matches!(cli.command, Command::Demo(_));
    init_logging(
        cli.log
            .as_deref()
            .unwrap_or(if quiet { "error" } else { "warn" }),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("prewarm: error: {}", one_line(&e));
            std::process::exit(2);
        }
    }
}

/// The command line, with `--config` files and PREWARM_* variables folded in
/// ([`config`]); `--print-config` prints and exits here.
fn parse() -> Cli {
    let fail = |e: clap::Error| -> ! {
        let code = if e.use_stderr() { 2 } else { 0 };
        let _ = e.print();
        std::process::exit(code);
    };
    let cmd = config::overridable(Cli::command());
    let argv = config::expand(std::env::args_os().collect(), &cmd).unwrap_or_else(|e| {
        eprintln!("prewarm: error: {}", one_line(&e));
        std::process::exit(2);
    });
    let matches = cmd
        .clone()
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| fail(e));
    if let Some((name, sub)) = matches.subcommand()
        && config::CONFIGURABLE.contains(&name)
        && sub.get_flag("print_config")
    {
        let def = cmd.find_subcommand(name).expect("parsed from it");
        print!("{}", config::render(name, def, sub));
        std::process::exit(0);
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| fail(e))
}

async fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Snapshot(a) => cmd::snapshot::run(a).await,
        Command::Restore(a) => cmd::restore::run(a).await,
        Command::Versions(a) => cmd::versions::run(a).await,
        Command::Verify(a) => cmd::verify::run(a).await,
        Command::Repair(a) => cmd::repair::run(a).await,
        Command::Gc(a) => cmd::gc::run(a).await,
        Command::Import(a) => cmd::import::run(a).await,
        Command::Eval(a) => cmd::eval::run(a).await,
        Command::Train(a) => cmd::train::run(a).await,
        Command::Watch(a) => cmd::watch::run(a).await,
        Command::Coordinator(a) => cmd::coordinator::run(*a).await,
        Command::Agent(a) => cmd::agent::run(a).await,
        Command::Transfer(a) => cmd::transfer::run(a).await,
        Command::Status(a) => cmd::status::run(a).await,
        Command::Token(a) => cmd::token::run(a).await,
        Command::Bench(a) => cmd::bench::run(a).await,
        Command::Demo(a) => cmd::demo::run(a).await,
        Command::Generate(a) => cmd::generate::run(a).await,
        Command::Replay(a) => cmd::replay::run(a).await,
        Command::Completions(a) => cmd::completions::completions(&a, Cli::command()),
        Command::Man(a) => cmd::completions::man(&a, Cli::command()),
    }
}

/// The error chain on one line: "outer: inner: root cause".
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
