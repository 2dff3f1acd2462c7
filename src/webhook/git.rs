//! Cloning a repository at a merge commit for the worker: shallow first where the server allows
//! it, then with the history and the release tags (`v*`) the version gate needs, bounded in
//! size and time, never interactive, limited to the transports the policy allows.
//!
//! `git` runs directly (no shell) with `GIT_TERMINAL_PROMPT=0` (a missing credential fails at
//! once), `GIT_ALLOW_PROTOCOL=https:ssh` (plus `file` only for a local path the policy admits
//! via `webhook.allow_local_prefix`), SSH in batch mode, no hooks, no LFS downloads, and stdin
//! closed. The user's git configuration stays (credential helpers, SSH keys). A watchdog kills
//! git when the checkout grows past the size limit or the deadline passes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// Limits of one clone.
#[derive(Clone, Debug)]
pub struct CloneLimits {
    /// Largest size of the directory (`.git` included), in bytes.
    pub max_bytes: u64,
    /// Longest the whole clone may take.
    pub timeout: Duration,
    /// Allow git's `file` transport (local paths admitted by the policy).
    pub allow_file: bool,
}

/// Why a clone failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneError {
    /// Will fail again: missing repository or commit, limit exceeded, bad branch name.
    Permanent(String),
    /// May pass later: network, server, credentials.
    Transient(String),
}

impl CloneError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            CloneError::Permanent(m) | CloneError::Transient(m) => m,
        }
    }
}

/// True for a branch name git accepts and that cannot be read as an option or a refspec trick.
pub fn plain_branch(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= 255
        && !b.starts_with(['-', '/', '.'])
        && !b.ends_with(['/', '.'])
        && !b.ends_with(".lock")
        && !b.contains("..")
        && !b.contains("//")
        && !b.contains("@{")
        && !b
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Reads a child's pipe to the end in the background, keeping the first 64 KiB (the rest is
/// drained, so the child never blocks on a full pipe).
fn read_capped<R>(pipe: Option<R>) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(mut s) = pipe {
            let _ = (&mut s).take(64 * 1024).read_to_end(&mut buf).await;
            let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs one git command under the watchdog; returns (success, stderr).
async fn git(
    dir: &Path,
    args: &[&str],
    limits: &CloneLimits,
    deadline: Instant,
) -> Result<(bool, String), CloneError> {
    git_out(dir, args, limits, deadline)
        .await
        .map(|(ok, _, err)| (ok, err))
}

/// Runs one git command under the watchdog; returns (success, stdout, stderr), each output
/// capped at 64 KiB.
async fn git_out(
    dir: &Path,
    args: &[&str],
    limits: &CloneLimits,
    deadline: Instant,
) -> Result<(bool, String, String), CloneError> {
    let protocols = if limits.allow_file {
        "https:ssh:file"
    } else {
        "https:ssh"
    };
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "protocol.version=2",
            "-c",
            "submodule.recurse=false",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", protocols)
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_CONFIG_PARAMETERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o ConnectTimeout=20",
        );
    }
    let mut child = cmd.spawn().map_err(|e| {
        CloneError::Transient(format!(
            "cannot run `git`: {e} (install git and put it on PATH)"
        ))
    })?;
    let reader = read_capped(child.stderr.take());
    let out_reader = read_capped(child.stdout.take());
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if Instant::now() >= deadline {
                    let _ = child.kill().await;
                    return Err(CloneError::Transient(format!(
                        "the clone took longer than {} s (`webhook.clone_timeout_seconds`)",
                        limits.timeout.as_secs()
                    )));
                }
                if dir_size(dir) > limits.max_bytes {
                    let _ = child.kill().await;
                    return Err(CloneError::Permanent(format!(
                        "the checkout is larger than {} MiB (`webhook.max_clone_mib`)",
                        limits.max_bytes / (1024 * 1024)
                    )));
                }
            }
        }
    };
    let status = status.map_err(|e| CloneError::Transient(format!("git did not finish: {e}")))?;
    let text = reader.await.unwrap_or_default();
    let out = out_reader.await.unwrap_or_default();
    Ok((status.success(), out, crate::git::git_message(&text)))
}

fn classify(stderr: &str) -> CloneError {
    let permanent = [
        "not found",
        "does not appear to be a git repository",
        "does not exist",
        "not our ref",
        "couldn't find remote ref",
        "no such remote ref",
        "unsupported",
        "transport '",
    ];
    if permanent
        .iter()
        .any(|p| stderr.to_ascii_lowercase().contains(p))
    {
        CloneError::Permanent(format!("cannot fetch the repository: {stderr}"))
    } else {
        CloneError::Transient(format!("cannot fetch the repository: {stderr}"))
    }
}

/// Clones `url` into the new directory `dir`, checked out (detached) at `commit`, which is on
/// `branch`. Tries a depth-1 fetch of the commit itself; when the server refuses (or the hash
/// is abbreviated, as Bitbucket Cloud sends it), fetches the branch's recent history and looks
/// for the commit there.
pub async fn clone_at(
    url: &str,
    commit: &str,
    branch: &str,
    dir: &Path,
    limits: &CloneLimits,
) -> Result<PathBuf, CloneError> {
    if !plain_branch(branch) {
        return Err(CloneError::Permanent(format!(
            "branch `{}` is not a plain branch name",
            branch.escape_debug()
        )));
    }
    clone_ref(url, commit, &format!("refs/heads/{branch}"), dir, limits).await
}

/// [`clone_at`] for a commit that `git_ref` (`refs/...`, e.g. a pull request's
/// `refs/pull/N/head`) holds, fetched through that ref when the server does not serve the
/// commit by its hash.
pub async fn clone_ref(
    url: &str,
    commit: &str,
    git_ref: &str,
    dir: &Path,
    limits: &CloneLimits,
) -> Result<PathBuf, CloneError> {
    let deadline = Instant::now() + limits.timeout;
    if url.starts_with('-') {
        return Err(CloneError::Permanent(
            "the clone URL looks like an option".to_owned(),
        ));
    }
    let Some(branch) = git_ref.strip_prefix("refs/").filter(|r| plain_branch(r)) else {
        return Err(CloneError::Permanent(format!(
            "`{}` is not a plain ref",
            git_ref.escape_debug()
        )));
    };
    if !(7..=64).contains(&commit.len()) || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CloneError::Permanent(format!(
            "`{}` is not a commit hash",
            commit.escape_debug()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CloneError::Transient(format!("cannot create `{}`: {e}", dir.display())))?;
    let run = |args: Vec<String>| {
        let dir = dir.to_path_buf();
        let limits = limits.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            git(&dir, &refs, &limits, deadline).await
        }
    };
    let owned = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (ok, err) = run(owned(&["init", "-q", "--template=", "."])).await?;
    if !ok {
        return Err(CloneError::Transient(format!("`git init` failed: {err}")));
    }
    let (ok, err) = run(owned(&["remote", "add", "origin", "--", url])).await?;
    if !ok {
        return Err(CloneError::Permanent(format!(
            "`git remote add` refused the URL: {err}"
        )));
    }
    let base = [
        "fetch",
        "-q",
        "--no-tags",
        "--no-recurse-submodules",
        "--no-write-fetch-head",
    ];
    let mut found = false;
    let mut last_err = String::new();
    if commit.len() == 40 {
        let mut args = owned(&base);
        args.extend(owned(&["--depth=1", "origin", commit]));
        let (ok, err) = run(args).await?;
        found = ok;
        last_err = err;
    }
    if !found {
        for depth in ["--depth=50", "--deepen=1000"] {
            let mut args = owned(&base);
            args.push(depth.to_owned());
            args.push("origin".to_owned());
            args.push(format!("+refs/{branch}:refs/remotes/origin/{branch}"));
            let (ok, err) = run(args).await?;
            if !ok {
                return Err(classify(&err));
            }
            let (ok, _) = run(owned(&[
                "rev-parse",
                "-q",
                "--verify",
                &format!("{commit}^{{commit}}"),
            ]))
            .await?;
            if ok {
                found = true;
                break;
            }
            last_err = format!("commit {commit} is not in the last 1,050 commits of `{git_ref}`");
        }
    }
    if !found {
        return Err(
            if last_err.contains("commit ") && last_err.contains(" is not in ") {
                CloneError::Permanent(last_err)
            } else {
                classify(&last_err)
            },
        );
    }
    let (ok, err) = run(owned(&["checkout", "-q", "--detach", commit])).await?;
    if !ok {
        return Err(CloneError::Permanent(format!(
            "cannot check out {commit}: {err}"
        )));
    }
    // The version gate needs the release tags the pipeline pushed and the history back to
    // them: fetch the remote's `v*` tags, and the rest of the history of a shallow clone.
    let mut args = owned(&base);
    args.push("--unshallow".to_owned());
    args.push("origin".to_owned());
    args.push("refs/tags/v*:refs/tags/v*".to_owned());
    let (ok, _) = run(args.clone()).await?;
    if !ok {
        // Not shallow after all (the branch fetch reached the root): tags only.
        args.retain(|a| a != "--unshallow");
        let (ok, err) = run(args).await?;
        if !ok {
            return Err(classify(&format!("cannot fetch the release tags: {err}")));
        }
    }
    if dir_size(dir) > limits.max_bytes {
        return Err(CloneError::Permanent(format!(
            "the checkout is larger than {} MiB (`webhook.max_clone_mib`)",
            limits.max_bytes / (1024 * 1024)
        )));
    }
    Ok(dir.to_path_buf())
}

/// Fetches the tip of `branch` into the clone in `dir` (one commit) and checks it out; its full
/// hash. For comparing a pull request with the branch it targets.
pub async fn checkout_branch_tip(
    dir: &Path,
    branch: &str,
    limits: &CloneLimits,
) -> Result<String, CloneError> {
    if !plain_branch(branch) {
        return Err(CloneError::Permanent(format!(
            "branch `{}` is not a plain branch name",
            branch.escape_debug()
        )));
    }
    let deadline = Instant::now() + limits.timeout;
    let remote = format!("refs/remotes/origin/{branch}");
    let fetch = [
        "fetch",
        "-q",
        "--no-tags",
        "--no-recurse-submodules",
        "--no-write-fetch-head",
        "--depth=1",
        "origin",
        &format!("+refs/heads/{branch}:{remote}"),
    ];
    let (ok, err) = git(dir, &fetch, limits, deadline).await?;
    if !ok {
        return Err(classify(&err));
    }
    let (ok, err) = git(
        dir,
        &["checkout", "-q", "--detach", &remote],
        limits,
        deadline,
    )
    .await?;
    if !ok {
        return Err(CloneError::Permanent(format!(
            "cannot check out `{branch}`: {err}"
        )));
    }
    if dir_size(dir) > limits.max_bytes {
        return Err(CloneError::Permanent(format!(
            "the checkout is larger than {} MiB (`webhook.max_clone_mib`)",
            limits.max_bytes / (1024 * 1024)
        )));
    }
    head(dir, limits).await
}

/// The full hash of the commit checked out in `dir` (detached by [`clone_at`], so `.git/HEAD`
/// holds it; else `git rev-parse`).
pub async fn head(dir: &Path, limits: &CloneLimits) -> Result<String, CloneError> {
    if let Ok(text) = crate::publish::checkout::read_text(dir, Path::new(".git/HEAD"), 256)
        && is_full_hash(text.trim())
    {
        return Ok(text.trim().to_ascii_lowercase());
    }
    let deadline = Instant::now() + limits.timeout;
    let (ok, out, err) = git_out(dir, &["rev-parse", "--verify", "HEAD"], limits, deadline).await?;
    let hash = out.trim();
    if ok && is_full_hash(hash) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(CloneError::Transient(format!(
            "cannot read the checked-out commit: {err}"
        )))
    }
}

fn is_full_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// How a merge commit relates to the commit its pipeline was last deployed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The same commit: deploying it again changes nothing.
    Same,
    /// An ancestor of the deployed commit: an older merge; deploying it would roll back.
    Ancestor,
    /// Anything else: a newer merge (the usual case), another line of history, or a deployed
    /// commit the origin does not have.
    Other,
}

/// How `head` (the full hash of the commit checked out in `dir`, see [`head`]) relates to
/// `deployed`. The deployed commit is fetched from `origin`, then both histories are deepened
/// (50 commits, 1,000, then all of it, within the clone's size and time limits) until one is
/// found in the other's history, or neither is.
pub async fn relation(
    dir: &Path,
    head: &str,
    deployed: &str,
    limits: &CloneLimits,
) -> Result<Relation, CloneError> {
    if !is_full_hash(deployed) {
        return Ok(Relation::Other);
    }
    let deadline = Instant::now() + limits.timeout;
    let run = |args: Vec<String>| {
        let dir = dir.to_path_buf();
        let limits = limits.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            git(&dir, &refs, &limits, deadline).await
        }
    };
    if head.eq_ignore_ascii_case(deployed) {
        return Ok(Relation::Same);
    }
    let fetch = |what: &[&str]| {
        let mut args: Vec<String> = [
            "fetch",
            "-q",
            "--no-tags",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
        ]
        .iter()
        .chain(what)
        .map(|s| (*s).to_owned())
        .collect();
        args.push("origin".to_owned());
        args
    };
    // A deployed commit this origin cannot give (another repository's, or force-pushed away)
    // says nothing about this merge.
    let mut first = fetch(&["--depth=1"]);
    first.push(deployed.to_owned());
    let (ok, err) = run(first).await?;
    if !ok {
        return match classify(&err) {
            CloneError::Permanent(_) => Ok(Relation::Other),
            transient => Err(transient),
        };
    }
    for deeper in [
        None,
        Some("--depth=50"),
        Some("--depth=1000"),
        Some("--unshallow"),
    ] {
        if let Some(depth) = deeper {
            if !dir.join(".git/shallow").exists() {
                break; // the whole history is here: nothing more to learn
            }
            let mut args = fetch(&[depth]);
            args.extend([deployed.to_owned(), head.to_owned()]);
            let (ok, err) = run(args).await?;
            if !ok {
                return Err(classify(&err));
            }
        }
        let is = |a: &str, b: &str| {
            let args = ["merge-base", "--is-ancestor", a, b].map(str::to_owned);
            let run = &run;
            async move { run(args.to_vec()).await.map(|(ok, _)| ok) }
        };
        match (is(deployed, head).await?, is(head, deployed).await?) {
            (true, true) => return Ok(Relation::Same),
            (false, true) => return Ok(Relation::Ancestor),
            (true, false) => return Ok(Relation::Other),
            (false, false) => {}
        }
    }
    Ok(Relation::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_that_could_be_options_or_refspecs_are_refused() {
        for ok in ["main", "release/2.x", "feature/JIRA-12_x"] {
            assert!(plain_branch(ok), "{ok}");
        }
        for bad in [
            "-delete",
            "a..b",
            "x:y",
            "a b",
            "refs/*",
            "main.lock",
            "",
            "a\\b",
            "@{-1}",
            "/x",
        ] {
            assert!(!plain_branch(bad), "{bad}");
        }
    }

    fn git_sync(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "C")
            .env("GIT_COMMITTER_EMAIL", "c@example.com")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[tokio::test]
    async fn the_clone_has_the_history_and_the_release_tags_the_version_gate_needs() {
        let t = tempfile::tempdir().expect("tempdir");
        let work = t.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        git_sync(&work, &["init", "-q", "-b", "main"]);
        for (i, msg) in ["feat: first", "fix: second", "fix: third"]
            .iter()
            .enumerate()
        {
            std::fs::write(work.join("a.txt"), format!("{i}\n")).expect("write");
            git_sync(&work, &["add", "-A"]);
            git_sync(&work, &["commit", "-qm", msg]);
            if i == 0 {
                git_sync(&work, &["tag", "-a", "-m", "release", "v0.1.0"]);
                git_sync(&work, &["tag", "not-a-release"]);
            }
        }
        let bare = t.path().join("origin.git");
        git_sync(t.path(), &["clone", "-q", "--bare", "work", "origin.git"]);
        let head = git_sync(&work, &["rev-parse", "HEAD"]);
        let limits = CloneLimits {
            max_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            allow_file: true,
        };
        let url = format!("file://{}", bare.display());
        let dir = t.path().join("clone");
        clone_at(&url, &head, "main", &dir, &limits)
            .await
            .expect("clone");
        assert_eq!(
            git_sync(&dir, &["rev-parse", "--is-shallow-repository"]),
            "false"
        );
        assert_eq!(
            git_sync(&dir, &["describe", "--tags"]),
            format!("v0.1.0-2-g{}", &head[..7])
        );
        assert_eq!(
            git_sync(&dir, &["tag", "--list"]),
            "v0.1.0",
            "only release tags"
        );
    }
}
