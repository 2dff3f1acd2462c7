//! Runs buildspec commands the way CodeBuild does: each command in `bash`, one after the other,
//! with the shell's state (variables, exported or not, functions, the working directory) carried
//! from one command to the next and across phases. Output streams line by line, with secret
//! values masked; stdin is closed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Names the state dump leaves out: bash's own, read-only or per-process variables.
const BASH_OWN: &str = "BASH*|SHELLOPTS|EUID|UID|PPID|GROUPS|FUNCNAME|PIPESTATUS|RANDOM|SRANDOM|SECONDS|LINENO|HISTCMD|DIRSTACK|SHLVL|_|__pf_*|COMP_*|EPOCHREALTIME|EPOCHSECONDS|PWD|OLDPWD|OPTIND|OPTARG|OPTERR|IFS|PS1|PS2|PS4|HOSTNAME|HOSTTYPE|MACHTYPE|OSTYPE";

/// The processes below `pid` (children, their children, ...), from `/proc` (empty elsewhere).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u32>().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parent_of {
            if *parent == p && !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    if status.success() {
        Exit::Ok
    } else {
        Exit::Failed(status.code())
    }
}

/// A shell session: the environment it starts with and the files that carry its state.
pub struct Shell {
    env: BTreeMap<String, String>,
    state: PathBuf,
    cwd: PathBuf,
    start_dir: PathBuf,
    secrets: Vec<String>,
    deadline: Instant,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exit status 0.
    Ok,
    /// Another exit status (or a signal: `None`).
    Failed(Option<i32>),
    /// The gate's timeout passed; the command was killed.
    TimedOut,
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

impl Shell {
    /// A session in `dir` (the source root), keeping its state under `state_dir`.
    pub fn new(
        env: BTreeMap<String, String>,
        dir: &Path,
        state_dir: &Path,
        secrets: Vec<String>,
        deadline: Instant,
    ) -> Shell {
        Shell {
            env,
            state: state_dir.join("shell-state.sh"),
            cwd: state_dir.join("shell-cwd"),
            start_dir: dir.to_path_buf(),
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
            deadline,
        }
    }

    /// Sets a variable for the commands that follow.
    pub fn set(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    /// The value of a variable after the commands so far.
    pub fn value(&self, name: &str) -> Option<String> {
        let mut script = self.prologue();
        script.push_str(&format!("printf '%s' \"${{{name}-}}\"\n"));
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-c", &script])
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.start_dir)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn prologue(&self) -> String {
        format!(
            "[ -f {state} ] && . {state}\ncd \"$(cat {cwd} 2>/dev/null || printf %s {start})\" || exit 97\n",
            state = quote(&self.state),
            cwd = quote(&self.cwd),
            start = quote(&self.start_dir),
        )
    }

    /// Replaces secret values with `***`.
    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// Runs one command; every output line goes to `line`.
    pub fn run(&mut self, command: &str, line: &mut dyn FnMut(&str)) -> Result<Exit> {
        let save = format!(
            "__pf_save() {{ __pf_rc=$?; {{ declare -f; for __pf_v in $(compgen -v); do case \"$__pf_v\" in {BASH_OWN}) continue;; esac; declare -p \"$__pf_v\" 2>/dev/null; done; }} > {state}.new && mv -f {state}.new {state}; pwd > {cwd}; exit $__pf_rc; }}\ntrap __pf_save EXIT\n",
            state = quote(&self.state),
            cwd = quote(&self.cwd),
        );
        let script = format!("{}{save}{command}\n", self.prologue());
        let mut child = Command::new("bash");
        child
            .args(["--noprofile", "--norc", "-c", &script])
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.start_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = child.spawn().map_err(|e| {
            Error::other(
                format!("cannot run `bash`: {e}"),
                "install bash; buildspecs run their commands with it",
            )
        })?;
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut buf = Vec::new();
                while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                    let text = String::from_utf8_lossy(&buf);
                    let _ = tx.send(text.trim_end_matches(['\n', '\r']).to_owned());
                    buf.clear();
                }
            });
        }
        drop(tx);
        let mut ended: Option<(Exit, Instant)> = None;
        let exit = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => line(&self.mask(&l)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some((exit, _)) = ended {
                        break exit;
                    }
                    let status = child.wait().map_err(|e| {
                        Error::other(format!("the command did not finish: {e}"), "run it again")
                    })?;
                    break exit_of(status);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some((exit, at)) = &ended {
                        // The shell ended but something it started in the background still
                        // holds the output open: go on, as CodeBuild does.
                        if at.elapsed() > Duration::from_secs(2) {
                            break exit.clone();
                        }
                    } else if let Ok(Some(status)) = child.try_wait() {
                        ended = Some((exit_of(status), Instant::now()));
                    } else if Instant::now() >= self.deadline {
                        // Everything the command started, by process id, then the shell.
                        let pids: Vec<String> =
                            descendants(child.id()).iter().map(u32::to_string).collect();
                        if !pids.is_empty() {
                            let _ = Command::new("kill")
                                .arg("-KILL")
                                .args(&pids)
                                .stderr(Stdio::null())
                                .status();
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        break Exit::TimedOut;
                    }
                }
            }
        };
        Ok(exit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(dir: &Path) -> Shell {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_owned(), std::env::var("PATH").unwrap_or_default());
        Shell::new(
            env,
            dir,
            dir,
            vec!["s3cr3t-value".to_owned()],
            Instant::now() + Duration::from_secs(60),
        )
    }

    #[test]
    fn state_carries_from_one_command_to_the_next() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("sub")).expect("mkdir");
        let mut sh = shell(t.path());
        let mut lines = Vec::new();
        let mut sink = |l: &str| lines.push(l.to_owned());
        assert_eq!(
            sh.run("VERSION=\"$(echo 1.2.3)\"", &mut sink).expect("run"),
            Exit::Ok
        );
        assert_eq!(sh.run("export VERSION", &mut sink).expect("run"), Exit::Ok);
        assert_eq!(
            sh.run("greet() { echo \"hi $1\"; }; cd sub", &mut sink)
                .expect("run"),
            Exit::Ok
        );
        assert_eq!(
            sh.run("greet \"$VERSION\"; pwd; echo s3cr3t-value", &mut sink)
                .expect("run"),
            Exit::Ok
        );
        assert_eq!(
            sh.run("exit 3", &mut sink).expect("run"),
            Exit::Failed(Some(3))
        );
        assert_eq!(
            sh.run("false", &mut sink).expect("run"),
            Exit::Failed(Some(1))
        );
        assert_eq!(lines[0], "hi 1.2.3");
        assert!(lines[1].ends_with("/sub"), "{lines:?}");
        assert_eq!(lines[2], "***", "secret values are masked");
        assert_eq!(sh.value("VERSION").as_deref(), Some("1.2.3"));
    }

    #[test]
    fn the_gate_timeout_kills_a_command() {
        let t = tempfile::tempdir().expect("tempdir");
        let mut sh = shell(t.path());
        sh.deadline = Instant::now() + Duration::from_millis(300);
        let started = Instant::now();
        let exit = sh.run("sleep 30", &mut |_| {}).expect("run");
        assert_eq!(exit, Exit::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
