//! What the benchmarks share: shell commands and peer tools, flushing dirty pages between
//! measurements, medians, the work directory, and child processes killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

/// Why a shell command failed.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// It could not be started.
    #[error("running `{cmd}`")]
    Spawn {
        /// The command.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("`{cmd}` failed with {status}")]
    Failed {
        /// The command.
        cmd: String,
        /// How it exited.
        status: ExitStatus,
    },
}

/// Runs `cmd` under `sh -c` with `env`.
pub fn sh(cmd: &str, env: &[(&str, &str)]) -> Result<(), ShellError> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().copied())
        .status()
        .map_err(|source| ShellError::Spawn {
            cmd: cmd.to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(ShellError::Failed {
            cmd: cmd.to_owned(),
            status,
        });
    }
    Ok(())
}

/// Flushes dirty pages so one measurement does not pay for the previous step's writeback.
pub fn settle() -> Result<(), ShellError> {
    sh("sync", &[])
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

/// The median (upper middle) of `xs`; 0 when empty.
pub fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// The benchmark's work directory: `dir` (created) or a temporary one, removed when the
/// returned guard drops.
pub fn workdir(dir: Option<&Path>) -> std::io::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match dir {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            Ok((None, w.to_owned()))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("prewarm-bench-")
                .tempdir()?;
            let p = tmp.path().to_owned();
            Ok((Some(tmp), p))
        }
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `path` as UTF-8 (store locations and child arguments are strings).
pub fn utf8(path: &Path) -> std::io::Result<&str> {
    path.to_str().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not UTF-8", path.display()),
        )
    })
}

/// A benchmark stage begun or a figure measured: counted on `meter` and left as its note
/// (the CLI shows notes above its bar, or as lines).
pub(crate) fn stage(meter: &prewarm_core::Meter, line: impl Into<String>) {
    meter.add(1);
    meter.note(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_shell_failures() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median(std::iter::empty()), 0.0);
        assert!(sh("true", &[]).is_ok());
        let e = sh("exit 3", &[]).unwrap_err();
        assert!(e.to_string().starts_with("`exit 3` failed"), "{e}");
        assert!(have("sh"));
        let (guard, dir) = workdir(None).unwrap();
        assert!(dir.is_dir() && guard.is_some());
    }
}
