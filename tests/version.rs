//! `pipeforge version next` and `pipeforge version tag` on real git repositories made in
//! temporary directories, through the real binary.
//!
//! Every git process (ours and the binary's) runs with `GIT_CONFIG_GLOBAL=/dev/null`, no system
//! configuration, a fixed author and committer and fixed dates, so that the tests do not depend
//! on the machine and commit ids are the same on every run.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_pipeforge");
/// 2024-01-01T00:00:00Z.
const EPOCH: u64 = 1_704_067_200;

/// A clean environment for git: the caller's `GIT_*`, `PF_*` and CodeBuild variables removed,
/// no global or system configuration.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("GIT_") || k.starts_with("PF_") || k.starts_with("CODEBUILD_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Author")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Cy Committer")
        .env("GIT_COMMITTER_EMAIL", "cy@example.com")
        .env("LC_ALL", "C");
}

/// What a command printed.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts exit status 0 and returns stdout, trimmed.
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self.stdout.trim().to_owned()
    }

    /// Asserts exit status 2 and returns stderr.
    fn fails(self) -> String {
        assert_eq!(self.code, 2, "expected exit status 2, got {self:#?}");
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout on error: {self:#?}"
        );
        assert!(
            self.stderr.contains("help:"),
            "errors carry a hint: {self:#?}"
        );
        self.stderr
    }
}

/// A repository in a temporary directory, with a clock that advances one minute per commit.
struct Repo {
    dir: PathBuf,
    clock: Cell<u64>,
}

impl Repo {
    /// `git init -b main` in a new directory under `root`.
    fn init(root: &TempDir, name: &str) -> Repo {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let r = Repo::at(dir);
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    /// An existing repository.
    fn at(dir: PathBuf) -> Repo {
        Repo {
            dir,
            clock: Cell::new(0),
        }
    }

    fn now(&self) -> String {
        format!("{} +0000", EPOCH + self.clock.get() * 60)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        clean_env(&mut cmd);
        let now = self.now();
        cmd.current_dir(&self.dir)
            .env("GIT_AUTHOR_DATE", &now)
            .env("GIT_COMMITTER_DATE", &now);
        cmd
    }

    /// Runs git in the repository; panics on failure.
    fn git(&self, args: &[&str]) -> String {
        let out = self.command("git").args(args).output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// An empty commit with `message`; returns its id.
    fn commit(&self, message: &str) -> String {
        self.clock.set(self.clock.get() + 1);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// An annotated tag on HEAD.
    fn tag(&self, name: &str) {
        self.git(&["tag", "-a", "-m", name, name]);
    }

    /// The commit a tag points at, if it exists.
    fn tag_commit(&self, name: &str) -> Option<String> {
        let out = self
            .command("git")
            .args([
                "rev-parse",
                "-q",
                "--verify",
                &format!("refs/tags/{name}^{{commit}}"),
            ])
            .output()
            .expect("git runs");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `pipeforge ARGS… --repo DIR` with `env` added.
    fn pf_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = self.command(BIN);
        cmd.args(args).arg("--repo").arg(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("pipeforge runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn pf(&self, args: &[&str]) -> Out {
        self.pf_env(args, &[])
    }

    /// `pipeforge version next`, which must succeed; the version printed.
    fn next(&self) -> String {
        self.pf(&["version", "next"]).ok()
    }

    /// `pipeforge version next --format json`, parsed.
    fn next_json(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["version", "next", "--format", "json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.pf(&args).ok()).expect("json")
    }
}

/// A repository on `main` with `v{base}` on its first commit.
fn tagged(root: &TempDir, base: &str) -> Repo {
    let r = Repo::init(root, "repo");
    r.commit("chore: initial commit");
    r.tag(&format!("v{base}"));
    r
}

/// `git clone ARGS… SRC DEST` (run from `root`), as a [`Repo`].
fn clone(root: &TempDir, args: &[&str], src: &str, dest: &str) -> Repo {
    let helper = Repo::at(root.path().to_path_buf());
    let mut all = vec!["clone", "-q"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[src, dest]);
    helper.git(&all);
    Repo::at(root.path().join(dest))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn without_a_tag_the_initial_version_is_used() {
    let root = TempDir::new().expect("tmp");
    let r = Repo::init(&root, "repo");
    r.commit("feat: first");
    r.commit("feat!: second");
    assert_eq!(r.next(), "0.1.0");
    assert_eq!(
        r.pf(&["version", "next", "--initial", "2.0.0"]).ok(),
        "2.0.0"
    );
    assert_eq!(
        r.pf_env(&["version", "next"], &[("PF_VERSION_INITIAL", "1.0.0")])
            .ok(),
        "1.0.0"
    );
    // Empty variables (a pipeline may render them empty) count as unset.
    assert_eq!(
        r.pf_env(
            &["version", "next"],
            &[
                ("PF_VERSION_INITIAL", ""),
                ("PF_VERSION_PRERELEASE", ""),
                ("PF_BRANCH", ""),
                ("PF_RELEASE_BRANCHES", "")
            ]
        )
        .ok(),
        "0.1.0"
    );
    let j = r.next_json(&[]);
    assert_eq!(j["bump"], "none");
    assert_eq!(j["previous"], serde_json::Value::Null);
    assert!(
        j["reason"]
            .as_str()
            .expect("reason")
            .contains("no `vMAJOR.MINOR.PATCH` tag is reachable from HEAD"),
        "{j}"
    );
    assert_eq!(j["commit_count"], 2);
}

#[test]
fn each_kind_of_commit_bumps_its_number() {
    let cases = [
        ("fix: handle empty input", "1.2.4", "patch"),
        ("feat(api): add search", "1.3.0", "minor"),
        ("feat!: drop the v1 endpoints", "2.0.0", "major"),
        ("refactor(core)!: rename", "2.0.0", "major"),
        (
            "feat: new config format\n\nBREAKING CHANGE: `old.yml` is no longer read",
            "2.0.0",
            "major",
        ),
        ("fix: x\n\nBREAKING-CHANGE: y", "2.0.0", "major"),
        ("chore: bump dependencies", "1.2.4", "patch"),
        ("Update the README", "1.2.4", "patch"),
    ];
    for (message, expected, bump) in cases {
        let root = TempDir::new().expect("tmp");
        let r = tagged(&root, "1.2.3");
        let sha = r.commit(message);
        assert_eq!(r.next(), expected, "{message:?}");
        let j = r.next_json(&[]);
        assert_eq!(j["bump"], bump, "{message:?}");
        assert_eq!(j["previous"], "1.2.3");
        assert_eq!(j["base_tag"], "v1.2.3");
        assert_eq!(j["commits"][0]["sha"], sha.as_str());
        assert_eq!(
            j["commits"][0]["subject"],
            message.lines().next().expect("subject")
        );
    }
}

#[test]
fn before_one_point_zero_the_rules_shift_down() {
    for (message, expected) in [
        ("fix: x", "0.3.2"),
        ("feat: x", "0.3.2"),
        ("feat!: x", "0.4.0"),
        ("perf: x\n\nBREAKING CHANGE: y", "0.4.0"),
    ] {
        let root = TempDir::new().expect("tmp");
        let r = tagged(&root, "0.3.1");
        r.commit(message);
        assert_eq!(r.next(), expected, "{message:?}");
    }
}

#[test]
fn the_largest_bump_wins_and_every_commit_is_listed() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("fix: a");
    let feat = r.commit("feat: b");
    r.commit("docs: c");
    let j = r.next_json(&[]);
    assert_eq!(j["version"], "1.1.0");
    assert_eq!(j["commit_count"], 3);
    let subjects: Vec<&str> = j["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|c| c["subject"].as_str().expect("subject"))
        .collect();
    assert_eq!(subjects, ["docs: c", "feat: b", "fix: a"]);
    let reason = j["reason"].as_str().expect("reason");
    assert!(reason.contains(&feat[..7]), "{reason}");
    assert!(reason.contains("3 commits since `v1.0.0`"), "{reason}");
}

#[test]
fn commits_of_merged_branches_count() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.git(&["checkout", "-q", "-b", "feature"]);
    r.commit("feat: from the branch");
    r.git(&["checkout", "-q", "main"]);
    r.commit("fix: on main");
    r.clock.set(r.clock.get() + 1);
    r.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge branch 'feature'",
        "feature",
    ]);
    let j = r.next_json(&[]);
    assert_eq!(j["version"], "1.1.0", "{j}");
    let subjects: Vec<&str> = j["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|c| c["subject"].as_str().expect("subject"))
        .collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!(subjects.contains(&"feat: from the branch"), "{subjects:?}");
    assert!(subjects.contains(&"Merge branch 'feature'"), "{subjects:?}");
}

#[test]
fn a_tag_on_another_branch_is_not_used() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.git(&["checkout", "-q", "-b", "experiment"]);
    r.commit("feat!: rewrite");
    r.tag("v2.0.0");
    r.git(&["checkout", "-q", "main"]);
    r.commit("fix: small");
    assert_eq!(r.next(), "1.0.1");
}

#[test]
fn a_tagged_head_keeps_its_version() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("feat: x");
    r.tag("v1.4.0");
    let j = r.next_json(&[]);
    assert_eq!(j["version"], "1.4.0");
    assert_eq!(j["bump"], "none");
    assert_eq!(j["tagged"], true);
    assert_eq!(j["reason"], "HEAD is already tagged `v1.4.0`");
    // On any branch: the commit is a release.
    assert_eq!(
        r.pf(&["version", "next", "--branch", "feature/x"]).ok(),
        "1.4.0"
    );
}

#[test]
fn prerelease_tags_are_never_a_base() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("feat: x");
    r.tag("v1.1.0-rc.1");
    r.commit("fix: y");
    assert_eq!(r.next(), "1.1.0");
}

#[test]
fn malformed_tags_are_ignored_with_a_warning() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("fix: a");
    for t in ["v1.2", "vfoo", "release-1.0", "v01.2.3", "v9.9.9+build"] {
        r.git(&["tag", t]);
    }
    r.git(&["tag", "latest"]);
    let out = r.pf(&["version", "next"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "1.0.1\n", "stdout carries only the version");
    assert!(
        out.stderr.contains("warning: ignored 5 tags"),
        "{}",
        out.stderr
    );
    for t in [
        "`v1.2`",
        "`vfoo`",
        "`release-1.0`",
        "`v01.2.3`",
        "`v9.9.9+build`",
    ] {
        assert!(out.stderr.contains(t), "{t} in {}", out.stderr);
    }
    assert!(!out.stderr.contains("`latest`"), "{}", out.stderr);
}

#[test]
fn other_branches_get_prereleases() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.git(&["checkout", "-q", "-b", "feature/login"]);
    r.commit("feat: login");
    let head = r.commit("fix: typo");
    assert_eq!(r.next(), "1.1.0-rc.2");
    let j = r.next_json(&[]);
    assert_eq!(j["prerelease"], true);
    assert_eq!(j["branch"], "feature/login");
    assert_eq!(j["tag"], serde_json::Value::Null);
    assert_eq!(
        r.pf(&["version", "next", "--prerelease", "beta"]).ok(),
        "1.1.0-beta.2"
    );
    assert_eq!(
        r.pf_env(&["version", "next"], &[("PF_VERSION_PRERELEASE", "dev")])
            .ok(),
        "1.1.0-dev.2"
    );
    assert_eq!(
        r.pf(&["version", "next", "--build-metadata"]).ok(),
        format!("1.1.0-rc.2+{}", &head[..7])
    );
    // The branch given wins over the one checked out.
    assert_eq!(
        r.pf_env(&["version", "next"], &[("PF_BRANCH", "main")])
            .ok(),
        "1.1.0"
    );
    assert_eq!(r.pf(&["version", "next", "--branch", "main"]).ok(), "1.1.0");
    // Release branches come from the org policy, with `*` patterns.
    assert_eq!(
        r.pf_env(
            &["version", "next"],
            &[("PF_RELEASE_BRANCHES", "main,feature/*")]
        )
        .ok(),
        "1.1.0"
    );
    // A detached HEAD with no branch given is a release build.
    r.git(&["checkout", "-q", "--detach"]);
    let j = r.next_json(&[]);
    assert_eq!(j["version"], "1.1.0");
    assert_eq!(j["branch"], serde_json::Value::Null);
}

#[test]
fn a_prerelease_without_any_tag_counts_every_commit() {
    let root = TempDir::new().expect("tmp");
    let r = Repo::init(&root, "repo");
    r.commit("chore: a");
    r.git(&["checkout", "-q", "-b", "topic"]);
    r.commit("feat: b");
    r.commit("feat: c");
    assert_eq!(r.next(), "0.1.0-rc.3");
}

#[test]
fn a_shallow_clone_is_refused_unless_fetching_is_allowed() {
    let root = TempDir::new().expect("tmp");
    let origin = tagged(&root, "1.0.0");
    origin.commit("feat: a");
    origin.commit("fix: b");
    assert_eq!(origin.next(), "1.1.0");
    let url = format!("file://{}", path_str(&origin.dir));
    let shallow = clone(&root, &["--depth", "1"], &url, "shallow");
    assert_eq!(
        shallow.git(&["rev-parse", "--is-shallow-repository"]),
        "true"
    );

    let err = shallow.pf(&["version", "next"]).fails();
    assert!(err.contains("is a shallow clone"), "{err}");
    assert!(err.contains("git fetch --unshallow --tags"), "{err}");
    assert!(err.contains("--fetch"), "{err}");

    assert_eq!(shallow.pf(&["version", "next", "--fetch"]).ok(), "1.1.0");
    assert_eq!(
        shallow.git(&["rev-parse", "--is-shallow-repository"]),
        "false"
    );
    assert_eq!(shallow.next(), "1.1.0");
}

#[test]
fn errors_say_what_to_do() {
    let root = TempDir::new().expect("tmp");
    let plain = root.path().join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let err = Repo::at(plain).pf(&["version", "next"]).fails();
    assert!(err.contains("not a git repository"), "{err}");
    assert!(err.contains("--repo DIR"), "{err}");

    let empty = Repo::init(&root, "empty");
    let err = empty.pf(&["version", "next"]).fails();
    assert!(err.contains("has no commits"), "{err}");

    empty.commit("chore: a");
    let err = empty.pf(&["version", "next", "--initial", "1.0"]).fails();
    assert!(err.contains("initial version `1.0`"), "{err}");
    let err = empty
        .pf(&["version", "next", "--prerelease", "r.c"])
        .fails();
    assert!(err.contains("pre-release identifier `r.c`"), "{err}");
}

#[test]
fn tag_creates_an_annotated_tag_once() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    let head = r.commit("feat: x");
    let env = [
        ("PF_PIPELINE", "payments-api"),
        ("CODEBUILD_BUILD_ID", "payments-api-build:0b1c"),
        ("PF_EXECUTION_ID", "3f2a-77"),
    ];
    let out = r.pf_env(&["version", "tag"], &env);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "1.1.0\n");
    assert!(out.stderr.contains("tagged `v1.1.0`"), "{}", out.stderr);
    assert_eq!(r.git(&["cat-file", "-t", "v1.1.0"]), "tag");
    assert_eq!(r.tag_commit("v1.1.0").as_deref(), Some(head.as_str()));
    let message = r.git(&["tag", "-l", "--format=%(contents)", "v1.1.0"]);
    assert!(message.starts_with("release 1.1.0"), "{message}");
    assert!(message.contains("pipeline: payments-api"), "{message}");
    assert!(
        message.contains("build: payments-api-build:0b1c"),
        "{message}"
    );
    assert!(message.contains("execution: 3f2a-77"), "{message}");
    assert!(message.contains("previous: v1.0.0"), "{message}");
    let object = r.git(&["rev-parse", "refs/tags/v1.1.0"]);

    // Again: nothing happens.
    let out = r.pf_env(&["version", "tag"], &env);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "1.1.0\n");
    assert!(out.stderr.contains("nothing to do"), "{}", out.stderr);
    assert_eq!(r.git(&["rev-parse", "refs/tags/v1.1.0"]), object);
    assert_eq!(r.next(), "1.1.0");
}

#[test]
fn tag_identity_comes_from_the_environment_or_defaults() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("fix: a");
    // No identity anywhere, as in CodeBuild.
    let mut cmd = r.command(BIN);
    cmd.env_remove("GIT_COMMITTER_NAME")
        .env_remove("GIT_COMMITTER_EMAIL")
        .args(["version", "tag", "--repo"])
        .arg(&r.dir);
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        r.git(&[
            "tag",
            "-l",
            "--format=%(taggername) %(taggeremail)",
            "v1.0.1"
        ]),
        "pipeforge <pipeforge@localhost>"
    );

    r.commit("fix: b");
    let mut cmd = r.command(BIN);
    cmd.env_remove("GIT_COMMITTER_NAME")
        .env_remove("GIT_COMMITTER_EMAIL")
        .env("PF_GIT_USER_NAME", "Release Bot")
        .env("PF_GIT_USER_EMAIL", "release@example.com")
        .args(["version", "tag", "--repo"])
        .arg(&r.dir);
    let out = cmd.output().expect("runs");
    assert!(out.status.success());
    assert_eq!(
        r.git(&[
            "tag",
            "-l",
            "--format=%(taggername) %(taggeremail)",
            "v1.0.2"
        ]),
        "Release Bot <release@example.com>"
    );
}

#[test]
fn tag_never_moves_a_tag() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.git(&["checkout", "-q", "-b", "other"]);
    let other = r.commit("feat: elsewhere");
    r.tag("v1.1.0");
    r.git(&["checkout", "-q", "main"]);
    r.commit("feat: here");
    assert_eq!(r.next(), "1.1.0");
    let err = r.pf(&["version", "tag"]).fails();
    assert!(
        err.contains("tag `v1.1.0` already exists on commit"),
        "{err}"
    );
    assert!(err.contains(&other[..7]), "{err}");
    assert!(err.contains("never moved"), "{err}");
    assert_eq!(r.tag_commit("v1.1.0").as_deref(), Some(other.as_str()));
}

#[test]
fn tag_skips_prereleases_and_checks_the_expected_version() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.git(&["checkout", "-q", "-b", "feature/x"]);
    r.commit("feat: x");
    let out = r.pf(&["version", "tag"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout, "1.1.0-rc.1\n");
    assert!(out.stderr.contains("not tagged"), "{}", out.stderr);
    assert_eq!(r.git(&["tag", "-l", "v1.1*"]), "");

    r.git(&["checkout", "-q", "main"]);
    r.git(&["merge", "-q", "--ff-only", "feature/x"]);
    let err = r.pf(&["version", "tag", "--expect", "1.0.1"]).fails();
    assert!(
        err.contains("computed now is `1.1.0`, not `1.0.1`"),
        "{err}"
    );
    assert_eq!(r.tag_commit("v1.1.0"), None);
    assert_eq!(r.pf(&["version", "tag", "--expect", "1.1.0"]).ok(), "1.1.0");
    assert!(r.tag_commit("v1.1.0").is_some());
}

/// A bare `origin.git` holding `v1.0.0`, and a clone of it named `name`.
fn origin_and_clone(root: &TempDir) -> (Repo, Repo) {
    let seed = tagged(root, "1.0.0");
    let bare = clone(root, &["--bare"], path_str(&seed.dir), "origin.git");
    let work = clone(root, &[], path_str(&bare.dir), "a");
    (bare, work)
}

#[test]
fn tag_push_sends_only_the_tag_and_is_idempotent() {
    let root = TempDir::new().expect("tmp");
    let (origin, a) = origin_and_clone(&root);
    let head = a.commit("feat: x");
    let out = a.pf(&["version", "tag", "--push"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("pushed `v1.1.0` to `origin`"),
        "{}",
        out.stderr
    );
    assert_eq!(origin.tag_commit("v1.1.0").as_deref(), Some(head.as_str()));
    assert_eq!(origin.git(&["cat-file", "-t", "v1.1.0"]), "tag");
    // Only the tag: the branch commit reached origin through the tag, not `main`.
    assert_ne!(origin.git(&["rev-parse", "main"]), head);

    let out = a.pf(&["version", "tag", "--push"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("nothing to do"), "{}", out.stderr);
    assert!(
        out.stderr.contains("already has `v1.1.0`"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_second_of_two_racing_runs_fails_cleanly() {
    let root = TempDir::new().expect("tmp");
    let (origin, a) = origin_and_clone(&root);
    let b = clone(&root, &[], path_str(&origin.dir), "b");
    let a_head = a.commit("feat: from run a");
    b.clock.set(5);
    let b_head = b.commit("feat: from run b");

    assert_eq!(a.pf(&["version", "tag", "--push"]).ok(), "1.1.0");
    let err = b.pf(&["version", "tag", "--push"]).fails();
    assert!(
        err.contains("remote `origin` already has tag `v1.1.0` on commit"),
        "{err}"
    );
    assert!(err.contains(&a_head[..7]), "{err}");
    assert!(err.contains("nothing was overwritten"), "{err}");
    assert_eq!(
        b.tag_commit("v1.1.0"),
        None,
        "the local tag is removed again"
    );
    assert_eq!(
        origin.tag_commit("v1.1.0").as_deref(),
        Some(a_head.as_str())
    );

    // With the remote's tags fetched, the collision is found before tagging.
    let err = b.pf(&["version", "tag", "--push", "--fetch"]).fails();
    assert!(err.contains("already exists on commit"), "{err}");
    // Once b contains a's release, it gets the next version.
    // (the fetch above brought a's commit along with its tag)
    b.clock.set(9);
    b.git(&["merge", "-q", "--no-ff", "-m", "Merge run a", &a_head]);
    assert_eq!(b.pf(&["version", "tag", "--push"]).ok(), "1.2.0");
    assert!(b.tag_commit("v1.2.0").is_some());
    assert_ne!(b.head(), b_head);
}

#[test]
fn racing_runs_of_the_same_commit_both_succeed() {
    let root = TempDir::new().expect("tmp");
    let (origin, a) = origin_and_clone(&root);
    let head = a.commit("fix: shared");
    a.git(&["push", "-q", "origin", "main"]);
    let b = clone(&root, &[], path_str(&origin.dir), "b");
    // Different pipelines, so the two tag objects differ; both name the same commit.
    assert_eq!(
        a.pf_env(&["version", "tag", "--push"], &[("PF_PIPELINE", "one")])
            .ok(),
        "1.0.1"
    );
    let out = b.pf_env(&["version", "tag", "--push"], &[("PF_PIPELINE", "two")]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains("already has `v1.0.1`"),
        "{}",
        out.stderr
    );
    assert_eq!(origin.tag_commit("v1.0.1").as_deref(), Some(head.as_str()));
    let message = origin.git(&["tag", "-l", "--format=%(contents)", "v1.0.1"]);
    assert!(message.contains("pipeline: one"), "{message}");
}

#[test]
fn a_push_without_a_reachable_remote_fails_and_leaves_no_tag() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("fix: a");
    let err = r.pf(&["version", "tag", "--push"]).fails();
    assert!(
        err.contains("cannot push tag `v1.0.1` to remote `origin`"),
        "{err}"
    );
    assert_eq!(r.tag_commit("v1.0.1"), None);
    let err = r
        .pf(&["version", "tag", "--push", "--remote=--upload-pack=x"])
        .fails();
    assert!(err.contains("is not a git remote"), "{err}");
}

#[test]
fn a_rerun_that_fetches_tags_continues_after_the_winner() {
    let root = TempDir::new().expect("tmp");
    let (origin, a) = origin_and_clone(&root);
    let first = a.commit("feat: first");
    a.git(&["push", "-q", "origin", "main"]);
    // Run b starts from a later commit, cloned before run a pushed its tag.
    let b = clone(&root, &[], path_str(&origin.dir), "b");
    b.clock.set(3);
    b.commit("fix: second");
    assert_eq!(a.pf(&["version", "tag", "--push"]).ok(), "1.1.0");
    assert_eq!(b.next(), "1.1.0", "b cannot see a's tag yet");
    let err = b.pf(&["version", "tag", "--push"]).fails();
    assert!(err.contains("already has tag `v1.1.0`"), "{err}");
    assert!(err.contains(&first[..7]), "{err}");
    assert_eq!(b.pf(&["version", "next", "--fetch"]).ok(), "1.1.1");
    assert_eq!(b.pf(&["version", "tag", "--push", "--fetch"]).ok(), "1.1.1");
    assert_eq!(origin.tag_commit("v1.1.1"), Some(b.head()));
    assert_eq!(origin.tag_commit("v1.1.0").as_deref(), Some(first.as_str()));
}

#[test]
fn a_failing_codebuild_build_is_never_tagged() {
    let root = TempDir::new().expect("tmp");
    let r = tagged(&root, "1.0.0");
    r.commit("feat: x");
    let err = r
        .pf_env(&["version", "tag"], &[("CODEBUILD_BUILD_SUCCEEDING", "0")])
        .fails();
    assert!(err.contains("the build is failing"), "{err}");
    assert_eq!(r.tag_commit("v1.1.0"), None);
    assert_eq!(
        r.pf_env(&["version", "tag"], &[("CODEBUILD_BUILD_SUCCEEDING", "1")])
            .ok(),
        "1.1.0"
    );
    assert!(r.tag_commit("v1.1.0").is_some());
}
