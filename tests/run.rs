//! `pipeforge run` itself, without any gate tool: a language file of plain shell commands
//! (`tests/run/go.yaml`, given with `--languages`) on real git repositories in temp dirs. The
//! gates proper are proven in `tests/gates.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SECRET: &str = "s3cr3t-value-7d41c";

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A committed repository with a manifest whose build reads one secret.
fn repo() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let manifest = "version: 1\nname: run-sample\nteam: core\nlanguage: go\n\
        artifact: {kind: s3}\ndeploy: {template: template.yml}\n\
        environments:\n  - {name: dev, account: \"111111111111\"}\n\
        build:\n  secrets:\n    DEMO_TOKEN: \"ssm:/run-sample/token\"\n";
    std::fs::write(t.path().join("pipeline.yml"), manifest).expect("write");
    std::fs::copy(
        Path::new(ROOT).join("tests/gates/go/good/template.yml"),
        t.path().join("template.yml"),
    )
    .expect("copy");
    std::fs::write(t.path().join("notes.txt"), "committed\n").expect("write");
    git(t.path(), &["init", "-q", "-b", "main"]);
    git(t.path(), &["add", "-A"]);
    git(t.path(), &["commit", "-qm", "feat: first version"]);
    t
}

struct Run {
    code: i32,
    output: String,
}

impl Run {
    fn says(&self, text: &str) -> &Self {
        assert!(
            self.output.contains(text),
            "the output should say `{text}`:\n{}",
            self.output
        );
        self
    }

    fn never_says(&self, text: &str) -> &Self {
        assert!(
            !self.output.contains(text),
            "the output should not say `{text}`:\n{}",
            self.output
        );
        self
    }

    fn exits(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit status:\n{}", self.output);
        self
    }
}

/// `pipeforge run GATE` on `repo` with the shell-command language, scratch directories in
/// `work`, and the caller's variables.
fn run(repo: &Path, work: &Path, gate: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeforge"));
    cmd.args(["run", gate, "--ignore-runtime", "--languages"])
        .arg(Path::new(ROOT).join("tests/run"))
        .arg("--repo")
        .arg(repo)
        .arg("--work-dir")
        .arg(work)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(extra)
        .env_remove("DEMO_TOKEN")
        .env_remove("PIPEFORGE_RUN_CACHE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("pipeforge run");
    Run {
        code: out.status.code().unwrap_or(-1),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect()
}

#[test]
fn a_secret_from_the_environment_reaches_the_commands_and_is_never_printed() {
    let repo = repo();
    let work = tempfile::tempdir().expect("tempdir");
    let r = run(
        repo.path(),
        work.path(),
        "test",
        &["--keep"],
        &[("DEMO_TOKEN", SECRET)],
    );
    r.exits(0)
        .says("secret DEMO_TOKEN (/run-sample/token): value from the local environment, never printed")
        .says("token is ***")
        .never_says(SECRET);
    // The command saw the real value: it wrote it to a file of the kept scratch directory.
    let kept = entries(work.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    let token = std::fs::read_to_string(kept[0].join("src/token.txt")).expect("token.txt");
    assert_eq!(token.trim(), SECRET);
}

#[test]
fn a_secret_missing_from_the_environment_is_a_placeholder_and_never_printed() {
    let repo = repo();
    let work = tempfile::tempdir().expect("tempdir");
    run(repo.path(), work.path(), "test", &[], &[])
        .exits(0)
        .says("value from a placeholder, never printed")
        .says("token is ***")
        .never_says("pipeforge-run-placeholder");
    assert!(
        entries(work.path()).is_empty(),
        "without --keep the scratch directory is removed"
    );
}

#[test]
fn the_gate_runs_on_the_tracked_files_and_a_failing_command_stops_its_phase() {
    let repo = repo();
    std::fs::write(repo.path().join("untracked.txt"), "x\n").expect("write");
    let work = tempfile::tempdir().expect("tempdir");
    let r = run(repo.path(), work.path(), "lint", &[], &[]);
    r.exits(0)
        .says("1 untracked file(s) are not published")
        .says("after-21")
        .says("post-42");
    // A short run of pipeforge turns transparent huge pages off for itself alone: the commands
    // `run` starts have them as its caller has (the setting is inherited by child processes).
    if let Some(line) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("THP_enabled:"))
                .map(str::to_owned)
        })
    {
        r.says(&line);
    }

    std::fs::write(repo.path().join("notes.txt"), "edited, not committed\n").expect("write");
    run(repo.path(), work.path(), "lint", &[], &[])
        .exits(2)
        .says("has uncommitted changes: `notes.txt`")
        .never_says("after-21");
    // `--allow-dirty` snapshots the edited file: the phase stops at the failing check, and the
    // gate fails.
    run(repo.path(), work.path(), "lint", &["--allow-dirty"], &[])
        .exits(1)
        .says("grep -qx committed notes.txt")
        .never_says("after-21");
}
