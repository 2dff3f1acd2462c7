//! A thin wrapper over the `git` command line, used by [`crate::version`].
//!
//! Every call runs `git -C DIR ARGS…` directly (never through a shell) with
//! `GIT_TERMINAL_PROMPT=0` (a missing credential fails instead of waiting for input),
//! `LC_ALL=C` (messages we match on are in English) and stdin closed. `GIT_DIR` and
//! `GIT_WORK_TREE` are removed from the environment so that the repository is always the one
//! given as `DIR`. Everything else (the user's and system's git configuration, credential
//! helpers, SSH settings) is left alone: pushing a tag from CI relies on it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The result of a git command that ran (whatever its exit status).
#[derive(Clone, Debug)]
pub struct Output {
    /// True when git exited with status 0.
    pub success: bool,
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
}

/// A git working copy (or bare repository), addressed by its directory.
#[derive(Clone, Debug)]
pub struct Git {
    dir: PathBuf,
}

impl Git {
    /// The repository at (or above) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Git { dir: dir.into() }
    }

    /// The directory given to `git -C`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `git -c K=V… ARGS…` and returns its output whatever the exit status; fails only
    /// when git cannot be started.
    pub fn output_with<S: AsRef<OsStr>>(
        &self,
        config: &[(&str, &str)],
        args: &[S],
    ) -> Result<Output> {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&self.dir);
        for (k, v) in config {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().map_err(|e| {
            let help = if e.kind() == std::io::ErrorKind::NotFound {
                "install git (`apt-get install git`, or the build image's git package) and make sure it is on `PATH`"
            } else {
                "check that `git` can be run by this user"
            };
            Error::other(format!("cannot run `git`: {e}"), help)
        })?;
        Ok(Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `git ARGS…` and returns its output whatever the exit status.
    pub fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        self.output_with(&[], args)
    }

    /// Runs `git -c K=V… ARGS…`; a non-zero exit status is an error quoting git's message.
    pub fn run_with<S: AsRef<OsStr>>(&self, config: &[(&str, &str)], args: &[S]) -> Result<String> {
        let out = self.output_with(config, args)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(self.failure(args, &out.stderr))
        }
    }

    /// Runs `git ARGS…`; a non-zero exit status is an error quoting git's message.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        self.run_with(&[], args)
    }

    /// The error for a failed `git ARGS…`. Only the subcommand is named, never the other
    /// arguments (a remote given as a URL may carry a token).
    pub fn failure<S: AsRef<OsStr>>(&self, args: &[S], stderr: &str) -> Error {
        let sub = args
            .first()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .unwrap_or_default();
        Error::other(
            format!(
                "`git {sub}` failed in `{}`: {}",
                self.dir.display(),
                git_message(stderr)
            ),
            help_for(stderr, &self.dir),
        )
    }
}

/// Git's own message, on one line: its `fatal:`/`error:` lines when there are any, else the
/// whole trimmed text.
pub fn git_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let important: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .collect();
    let chosen = if important.is_empty() {
        lines
    } else {
        important
    };
    if chosen.is_empty() {
        "no message".to_owned()
    } else {
        chosen.join("; ")
    }
}

/// A hint for the usual ways git fails in a pipeline.
fn help_for(stderr: &str, dir: &Path) -> String {
    if stderr.contains("cannot change to") {
        format!(
            "`{}` is not a directory; pass `--repo DIR` with the checkout",
            dir.display()
        )
    } else if stderr.contains("not a git repository") {
        format!(
            "`{}` is not inside a git checkout; pass `--repo DIR` with the checkout, and build from a full clone (CodePipeline source output `CODEBUILD_CLONE_REF`), not a source zip",
            dir.display()
        )
    } else if stderr.contains("dubious ownership") {
        format!(
            "git refuses a repository owned by another user; run `git config --global --add safe.directory {}` first",
            dir.display()
        )
    } else if stderr.contains("terminal prompts disabled")
        || stderr.contains("Authentication failed")
        || stderr.contains("could not read Username")
        || stderr.contains("Permission denied")
    {
        "the remote needs credentials that git could not find; configure a credential helper or an SSH key for the remote".to_owned()
    } else {
        "run the same git command by hand in the checkout to see the whole message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_message_keeps_fatal_lines() {
        let text = "hint: something\nfatal: not a git repository (or any of the parent directories): .git\n";
        assert_eq!(
            git_message(text),
            "fatal: not a git repository (or any of the parent directories): .git"
        );
        assert_eq!(git_message("  plain text \n"), "plain text");
        assert_eq!(git_message(""), "no message");
    }

    #[test]
    fn hints_name_the_directory() {
        let h = help_for(
            "fatal: detected dubious ownership in repository",
            Path::new("/src"),
        );
        assert!(h.contains("safe.directory /src"), "{h}");
        let h = help_for("fatal: not a git repository", Path::new("/x"));
        assert!(h.contains("--repo"), "{h}");
    }
}
