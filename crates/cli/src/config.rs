//! `--config FILE` (TOML) and `--print-config` for `prewarm coordinator` and `prewarm agent`.
//!
//! Every flag of the command can be set in the file under its long name
//! (`cache-size = "10GiB"`, `no-fsync = true`, lists as arrays). Precedence, highest first:
//! the command line, the environment (`PREWARM_<FLAG>`, e.g. `PREWARM_CACHE_SIZE`), the
//! file, the built-in defaults. The file and the environment become flags placed before the
//! command line's own, and the command parses with later occurrences overriding earlier
//! ones, so the one parser checks every value wherever it came from (repeatable flags such
//! as `--mark-stale` collect from all three). `--print-config` prints the effective
//! configuration as a file that `--config` reads back.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgAction, ArgMatches, Command, parser::ValueSource};

/// The commands that take `--config`.
pub const CONFIGURABLE: [&str; 2] = ["coordinator", "agent"];

/// Flags that configure the configuration, never set from a file.
const NOT_CONFIG: [&str; 3] = ["config", "print-config", "help"];

/// Marks `cmd`'s configurable commands so that a later flag overrides an earlier one.
pub fn overridable(cmd: Command) -> Command {
    CONFIGURABLE.iter().fold(cmd, |cmd, name| {
        if cmd.find_subcommand(name).is_some() {
            cmd.mut_subcommand(*name, |c| c.args_override_self(true))
        } else {
            cmd
        }
    })
}

/// `argv` with the file's and the environment's flags inserted after the command's name,
/// when the command is configurable (else `argv` as given).
pub fn expand(argv: Vec<OsString>, cli: &Command) -> anyhow::Result<Vec<OsString>> {
    let Some((at, name)) = command_at(&argv) else {
        return Ok(argv);
    };
    let sub = cli
        .find_subcommand(&name)
        .expect("configurable commands exist");
    let mut flags = Vec::new();
    if let Some(path) = config_path(&argv[at + 1..]) {
        flags.extend(from_file(&path, sub)?);
    }
    flags.extend(from_env(sub, |k| std::env::var_os(k))?);
    let mut out = argv[..=at].to_vec();
    out.extend(flags);
    out.extend_from_slice(&argv[at + 1..]);
    Ok(out)
}

/// Where the configurable command's name is in `argv`, and which it is.
fn command_at(argv: &[OsString]) -> Option<(usize, String)> {
    let mut i = 1;
    while let Some(a) = argv.get(i) {
        let a = a.to_str()?;
        if a == "--log" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        return CONFIGURABLE.contains(&a).then(|| (i, a.to_owned()));
    }
    None
}

/// The value of `--config` among a command's arguments.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The flags a config file sets, checked against `cmd`'s.
fn from_file(path: &Path, cmd: &Command) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = flag(cmd, &long) else {
            bail!(
                "config file {}: unknown setting {key:?} for `prewarm {}` (settings: {})",
                path.display(),
                cmd.get_name(),
                settings(cmd).join(", ")
            );
        };
        let why = |e: String| anyhow::anyhow!("config file {}: {key}: {e}", path.display());
        out.extend(values(arg, &long, value).map_err(why)?);
    }
    Ok(out)
}

/// The flags `PREWARM_<FLAG>` variables set (read through `var`).
fn from_env(
    cmd: &Command,
    var: impl Fn(&str) -> Option<OsString>,
) -> anyhow::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for long in settings(cmd) {
        let name = format!("PREWARM_{}", long.replace('-', "_").to_uppercase());
        let Some(v) = var(&name) else { continue };
        let arg = flag(cmd, &long).expect("listed above");
        if arg.get_action().takes_values() {
            out.push(OsString::from(format!("--{long}")));
            out.push(v);
        } else {
            match v.to_str() {
                Some("1" | "true") => out.push(OsString::from(format!("--{long}"))),
                Some("0" | "false" | "") => {}
                _ => bail!("{name}: expected true or false, got {v:?}"),
            }
        }
    }
    Ok(out)
}

fn flag<'c>(cmd: &'c Command, long: &str) -> Option<&'c clap::Arg> {
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long) && !NOT_CONFIG.contains(&long))
}

/// The long names of the settings `cmd` takes.
fn settings(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_CONFIG.contains(l))
        .map(str::to_owned)
        .collect()
}

/// The command-line form of one setting.
fn values(arg: &clap::Arg, long: &str, v: &toml::Value) -> Result<Vec<OsString>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string or a number, got {}",
            other.type_str()
        )),
    };
    if !arg.get_action().takes_values() {
        return match v {
            toml::Value::Boolean(true) => Ok(vec![format!("--{long}").into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!("expected true or false, got {}", other.type_str())),
        };
    }
    let items: Vec<String> = match v {
        toml::Value::Array(a) if matches!(arg.get_action(), ArgAction::Append) => {
            a.iter().map(scalar).collect::<Result<_, _>>()?
        }
        toml::Value::Array(_) => return Err("takes one value, not a list".into()),
        v => vec![scalar(v)?],
    };
    Ok(items
        .into_iter()
        .map(|s| OsString::from(format!("--{long}={s}")))
        .collect())
}

/// The effective configuration of a parsed configurable command, as a config file.
pub fn render(name: &str, cmd: &Command, m: &ArgMatches) -> String {
    let mut out = format!(
        "# effective configuration of `prewarm {name}`\n\
         # (precedence: command line > PREWARM_* environment > --config file > default;\n\
         #  \"set\": by one of the first three)\n"
    );
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long().filter(|l| !NOT_CONFIG.contains(l)) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let source = match m.value_source(id) {
            Some(ValueSource::DefaultValue) => "default",
            Some(ValueSource::EnvVariable) => "environment",
            Some(_) => "set",
            None => "unset",
        };
        let line = if arg.get_action().takes_values() {
            match m.get_raw(id) {
                Some(vals) => {
                    let vals: Vec<String> =
                        vals.map(|v| format!("{:?}", v.to_string_lossy())).collect();
                    if matches!(arg.get_action(), ArgAction::Append) {
                        format!("{long} = [{}]", vals.join(", "))
                    } else {
                        format!("{long} = {}", vals.join(", "))
                    }
                }
                None => format!("# {long} ="),
            }
        } else {
            format!("{long} = {}", m.get_flag(id))
        };
        out.push_str(&format!("{line:<60} # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("prewarm").subcommand(
            Command::new("agent")
                .arg(clap::Arg::new("name").long("name").required(true))
                .arg(
                    clap::Arg::new("cache_size")
                        .long("cache-size")
                        .default_value("10GiB"),
                )
                .arg(
                    clap::Arg::new("mark_stale")
                        .long("mark-stale")
                        .action(ArgAction::Append),
                )
                .arg(
                    clap::Arg::new("no_fsync")
                        .long("no-fsync")
                        .action(ArgAction::SetTrue),
                )
                .arg(clap::Arg::new("config").long("config"))
                .arg(
                    clap::Arg::new("print_config")
                        .long("print-config")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_then_environment_then_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\ncache_size = \"1GiB\"\nmark-stale = [\"a/\", \"b/\"]\nno-fsync = true\n",
        )
        .unwrap();
        let cmd = overridable(cli());
        let f = file.to_str().unwrap();
        let sub = cmd.find_subcommand("agent").unwrap();
        let mut args = argv(&["prewarm", "agent", "--config", f, "--name", "cli"]);
        let mut injected = from_file(&file, sub).unwrap();
        injected
            .extend(from_env(sub, |k| (k == "PREWARM_CACHE_SIZE").then(|| "2GiB".into())).unwrap());
        args.splice(2..2, injected);
        let m = cmd.clone().try_get_matches_from(args).unwrap();
        let (_, m) = m.subcommand().unwrap();
        assert_eq!(m.get_one::<String>("name").unwrap(), "cli");
        assert_eq!(m.get_one::<String>("cache_size").unwrap(), "2GiB");
        let stale: Vec<&String> = m.get_many("mark_stale").unwrap().collect();
        assert_eq!(stale, ["a/", "b/"]);
        assert!(m.get_flag("no_fsync"));
        let text = render("agent", sub, m);
        assert!(text.contains("cache-size = \"2GiB\""), "{text}");
        assert!(text.contains("mark-stale = [\"a/\", \"b/\"]"), "{text}");
    }

    #[test]
    fn unknown_settings_and_wrong_types_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let sub = cli();
        let sub = sub.find_subcommand("agent").unwrap();
        for (text, want) in [
            ("cache_sise = \"1GiB\"", "unknown setting \"cache_sise\""),
            ("no-fsync = \"yes\"", "no-fsync: expected true or false"),
            ("name = [\"a\", \"b\"]", "name: takes one value"),
            ("name = ", "config file"),
        ] {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, text).unwrap();
            let e = format!("{:#}", from_file(&file, sub).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = from_env(sub, |k| (k == "PREWARM_NO_FSYNC").then(|| "maybe".into()));
        assert!(e.unwrap_err().to_string().contains("PREWARM_NO_FSYNC"));
    }

    #[test]
    fn only_configurable_commands_are_expanded() {
        let cmd = cli();
        let same = argv(&["prewarm", "--log", "agent", "status"]);
        assert_eq!(expand(same.clone(), &cmd).unwrap(), same);
        assert_eq!(
            command_at(&argv(&["prewarm", "--log", "info", "agent"])),
            Some((3, "agent".into()))
        );
        assert_eq!(
            config_path(&argv(&["--name", "x", "--config=a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
    }
}
