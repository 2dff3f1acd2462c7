//! The repository snapshot the pipeline builds: a deterministic zip of the tracked files at the
//! checked-out commit, plus the `.git` data the version gate reads.
//!
//! What goes in:
//! - every file `git ls-files` lists, read from the working tree (so Git LFS files are their
//!   content), in byte order of their paths, dated 1980-01-01 00:00, mode 0644 or 0755 (the
//!   executable bit as git records it), symlinks as symlink entries;
//! - from the git directory: `HEAD`, `objects/**`, `refs/**`, `packed-refs`, `shallow` (and
//!   `reftable/**` for reftable repositories), and a freshly written minimal `config` that keeps the
//!   object format and the remotes' URLs with any credentials removed.
//!
//! What never goes in: untracked or ignored files, hooks, the index, logs, the original config
//! (credential helpers, `http.extraHeader`, `insteadOf` rewrites), `FETCH_HEAD`, submodules
//! (reported), and anything a symlink could reach outside the repository: a tracked symlink is
//! stored as a link (never followed, its target never read) when, resolved through every
//! symlink on its way ([`checkout::resolve_link`]), it stays inside the repository and out of
//! `.git`; any other symlink is an error. Files are read with [`checkout::read_file`] (regular
//! files only, no symlinked directory on the way). A dirty working tree is refused unless
//! `allow_dirty` is set.

use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::checkout;
use crate::error::{Error, Result};
use crate::git::Git;
use crate::outputs::hex;

/// Default limit on the bytes read into the snapshot (files plus git data).
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// How to take the snapshot.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Publish a working tree with uncommitted changes (as it is on disk).
    pub allow_dirty: bool,
    /// Refuse snapshots that read more than this many bytes.
    pub max_bytes: u64,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            allow_dirty: false,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A repository snapshot, ready to upload.
#[derive(Clone, Debug)]
pub struct SourceZip {
    /// The zip.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of the zip.
    pub sha256: String,
    /// The commit it was taken at.
    pub commit: String,
    /// The branch checked out (`None` for a detached HEAD).
    pub branch: Option<String>,
    /// Repository files (without `.git`).
    pub files: usize,
    /// Of those, symlinks.
    pub symlinks: usize,
    /// Entries under `.git/`.
    pub git_entries: usize,
    /// True when the working tree had uncommitted changes (only with `allow_dirty`).
    pub dirty: bool,
    /// Things the user should know: submodules left out, untracked files, missing files.
    pub warnings: Vec<String>,
}

/// An entry of the zip before it is written.
enum Entry {
    File { data: Vec<u8>, executable: bool },
    Symlink(String),
    Dir,
}

fn fail(message: impl Into<String>, help: impl Into<String>) -> Error {
    Error::other(message, help)
}

/// Where a repository's files and git data are.
struct RepoDirs {
    /// The top directory of the working tree.
    root: PathBuf,
    /// Git, run in `root`.
    git: Git,
    /// The working tree's git directory (its `HEAD`).
    git_dir: PathBuf,
    /// The git directory its objects and refs are in (shared by linked worktrees).
    common_dir: PathBuf,
}

/// The tracked files of the snapshot.
struct Tracked {
    /// Path and content, in `git ls-files` order.
    entries: Vec<(String, Entry)>,
    /// Files, symlinks included.
    files: usize,
    /// Of those, symlinks.
    symlinks: usize,
}

/// A regular file of the zip (mode 0644).
fn plain(data: Vec<u8>) -> Entry {
    Entry::File {
        data,
        executable: false,
    }
}

/// Takes the snapshot of the repository at (or above) `repo`.
pub fn source_zip(repo: &Path, opts: &SourceOptions) -> Result<SourceZip> {
    let dirs = locate(repo)?;
    let (commit, branch) = head(&dirs)?;
    let (dirty, mut warnings) = check_tree(&dirs, opts.allow_dirty)?;
    let mut total: u64 = 0;
    let tracked = tracked_files(&dirs, opts.max_bytes, &mut total, &mut warnings)?;
    let git_entries = git_data(
        &dirs,
        &commit,
        branch.as_deref(),
        opts.max_bytes,
        &mut total,
    )?;
    let git_count = git_entries.len();
    let mut entries = tracked.entries;
    entries.extend(git_entries);
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);

    let bytes = write_zip(&entries)?;
    // The zip itself stays within the limit too (its headers come on top of the content), so a
    // reader of `source.zip` (`pipeforge move`) can refuse anything larger.
    check_size(bytes.len() as u64, opts.max_bytes, &dirs.root)?;
    Ok(SourceZip {
        sha256: format!("sha256:{}", hex(&Sha256::digest(&bytes))),
        bytes,
        commit,
        branch,
        files: tracked.files,
        symlinks: tracked.symlinks,
        git_entries: git_count,
        dirty,
        warnings,
    })
}

/// The working tree's top directory and its git directories.
fn locate(repo: &Path) -> Result<RepoDirs> {
    let git = Git::new(repo);
    let root = PathBuf::from(
        git.run(&["rev-parse", "--show-toplevel"])?
            .trim_end_matches('\n'),
    );
    let git = Git::new(&root);
    let dirs = git.run(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-dir",
        "--git-common-dir",
    ])?;
    let mut dirs = dirs.lines();
    let (Some(git_dir), Some(common_dir)) = (dirs.next(), dirs.next()) else {
        return Err(fail(
            format!("cannot locate the git directory of `{}`", root.display()),
            "check that `git rev-parse --git-dir` works in the repository",
        ));
    };
    let (git_dir, common_dir) = (PathBuf::from(git_dir), PathBuf::from(common_dir));
    Ok(RepoDirs {
        root,
        git,
        git_dir,
        common_dir,
    })
}

/// The commit checked out, and its branch (`None` for a detached HEAD).
fn head(dirs: &RepoDirs) -> Result<(String, Option<String>)> {
    let git = &dirs.git;
    let head = git.output(&["rev-parse", "--verify", "-q", "HEAD^{commit}"])?;
    if !head.success {
        return Err(fail(
            format!("`{}` has no commit to publish", dirs.root.display()),
            "commit the repository's files first (`git add -A && git commit`)",
        ));
    }
    let commit = head.stdout.trim().to_owned();
    let branch = git
        .output(&["symbolic-ref", "-q", "--short", "HEAD"])?
        .stdout
        .trim()
        .to_owned();
    let branch = (!branch.is_empty()).then_some(branch);
    Ok((commit, branch))
}

/// Whether the working tree has uncommitted changes to tracked files (an error unless
/// `allow_dirty`: the snapshot would differ from the commit), and a warning for untracked files.
fn check_tree(dirs: &RepoDirs, allow_dirty: bool) -> Result<(bool, Vec<String>)> {
    let status = dirs.git.run(&[
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=normal",
        "--ignore-submodules=all",
    ])?;
    let mut changed = Vec::new();
    let mut untracked = 0usize;
    let mut fields = status.split('\0').filter(|s| !s.is_empty());
    while let Some(entry) = fields.next() {
        let (code, path) = entry.split_at(entry.len().min(3));
        if code.starts_with("??") {
            untracked += 1;
            continue;
        }
        if code.starts_with('R') || code.starts_with('C') {
            fields.next(); // the original path of a rename or copy
        }
        changed.push(path.to_owned());
    }
    let dirty = !changed.is_empty();
    if dirty && !allow_dirty {
        let shown: Vec<String> = changed.iter().take(10).map(|p| format!("`{p}`")).collect();
        let more = if changed.len() > 10 {
            format!(" and {} more", changed.len() - 10)
        } else {
            String::new()
        };
        return Err(fail(
            format!(
                "the working tree of `{}` has uncommitted changes: {}{more}",
                dirs.root.display(),
                shown.join(", ")
            ),
            "commit or stash them so that the pipeline builds a commit, or pass `--allow-dirty` to publish the files as they are on disk",
        ));
    }
    let mut warnings = Vec::new();
    if untracked > 0 {
        warnings.push(format!(
            "{untracked} untracked file(s) are not published (only tracked files are); `git status` lists them"
        ));
    }
    Ok((dirty, warnings))
}

/// The tracked files, with their mode as git records it; submodules and missing files are
/// left out with a warning. `total` counts the bytes read.
fn tracked_files(
    dirs: &RepoDirs,
    max_bytes: u64,
    total: &mut u64,
    warnings: &mut Vec<String>,
) -> Result<Tracked> {
    let listing = dirs.git.run(&["ls-files", "-z", "-s"])?;
    let mut tracked = Tracked {
        entries: Vec::new(),
        files: 0,
        symlinks: 0,
    };
    let mut seen_conflict = std::collections::BTreeSet::new();
    for rec in listing.split('\0').filter(|s| !s.is_empty()) {
        let Some((meta, path)) = rec.split_once('\t') else {
            continue;
        };
        let mut m = meta.split(' ');
        let (mode, object, stage) = (m.next().unwrap_or(""), m.next().unwrap_or(""), m.next());
        if stage.is_some_and(|s| s != "0") && !seen_conflict.insert(path.to_owned()) {
            continue; // an unmerged path is listed once per stage
        }
        if mode == "160000" {
            warnings.push(format!(
                "submodule `{path}` (commit {}) is not included; the pipeline sees an empty directory there",
                &object[..object.len().min(12)]
            ));
            continue;
        }
        if path == ".git" || path.starts_with(".git/") {
            continue;
        }
        let Some(entry) = read_tracked(&dirs.root, path, mode, max_bytes, total, warnings)? else {
            continue;
        };
        if matches!(entry, Entry::Symlink(_)) {
            tracked.symlinks += 1;
        }
        tracked.files += 1;
        tracked.entries.push((path.to_owned(), entry));
    }
    Ok(tracked)
}

/// One tracked path as the working tree has it: a file, a symlink that stays inside the
/// repository, or nothing (missing, with a warning; or a directory where git has a file).
fn read_tracked(
    root: &Path,
    path: &str,
    mode: &str,
    max_bytes: u64,
    total: &mut u64,
    warnings: &mut Vec<String>,
) -> Result<Option<Entry>> {
    let full = root.join(path);
    let meta = match std::fs::symlink_metadata(&full) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            warnings.push(format!(
                "tracked file `{path}` is missing from the working tree and is not published"
            ));
            return Ok(None);
        }
        Err(e) => return Err(Error::read(&full, e)),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&full).map_err(|e| Error::read(&full, e))?;
        let target_text = target.to_str().ok_or_else(|| {
            fail(
                format!("tracked symlink `{path}` has a target that is not UTF-8"),
                "replace the symlink with a copy of the file",
            )
        })?;
        check_symlink(root, path, &target)?;
        return Ok(Some(Entry::Symlink(target_text.to_owned())));
    }
    if !meta.is_file() {
        return Ok(None); // a directory where git has a file (dirty tree): nothing to take
    }
    *total += meta.len();
    check_size(*total, max_bytes, root)?;
    let data = checkout::read_file(root, Path::new(path), max_bytes)?;
    Ok(Some(Entry::File {
        data,
        executable: mode == "100755",
    }))
}

/// The git data the version gate needs: `HEAD`, `packed-refs`, `shallow`, the objects and refs,
/// the directories a repository needs, HEAD's branch as a loose ref, and a minimal `config`.
fn git_data(
    dirs: &RepoDirs,
    commit: &str,
    branch: Option<&str>,
    max_bytes: u64,
    total: &mut u64,
) -> Result<Vec<(String, Entry)>> {
    let (git_dir, common_dir) = (&dirs.git_dir, &dirs.common_dir);
    let mut git_entries: Vec<(String, Entry)> = Vec::new();
    if common_dir.join("objects/info/alternates").exists() {
        return Err(fail(
            format!(
                "the repository `{}` borrows objects from another repository (`objects/info/alternates`), so its history cannot be published on its own",
                dirs.root.display()
            ),
            "run `git repack -a -d` and then delete `.git/objects/info/alternates`, or publish from a full clone",
        ));
    }
    let head_file = git_dir.join("HEAD");
    let head_bytes = std::fs::read(&head_file).map_err(|e| Error::read(&head_file, e))?;
    git_entries.push((".git/HEAD".to_owned(), plain(head_bytes)));
    for name in ["packed-refs", "shallow"] {
        let p = common_dir.join(name);
        if p.is_file() {
            let data = std::fs::read(&p).map_err(|e| Error::read(&p, e))?;
            *total += data.len() as u64;
            git_entries.push((format!(".git/{name}"), plain(data)));
        }
    }
    git_entries.extend(objects_and_refs(dirs, max_bytes, total)?);
    // A repository needs `objects/` and `refs/`; all refs may be packed, so the directories are
    // listed, and HEAD's branch is also written as a loose ref (what `packed-refs` says, or newer).
    for d in [
        ".git/objects/",
        ".git/refs/",
        ".git/refs/heads/",
        ".git/refs/tags/",
    ] {
        git_entries.push((d.to_owned(), Entry::Dir));
    }
    if let Some(b) = branch {
        let name = format!(".git/refs/heads/{b}");
        if !git_entries.iter().any(|(n, _)| *n == name) {
            git_entries.push((name, plain(format!("{commit}\n").into_bytes())));
        }
    }
    git_entries.push((
        ".git/config".to_owned(),
        plain(minimal_config(&dirs.git)?.into_bytes()),
    ));
    Ok(git_entries)
}

/// Every file under `objects/`, `refs/` and `reftable/` of the common git directory, but git's
/// lock and temporary files.
fn objects_and_refs(
    dirs: &RepoDirs,
    max_bytes: u64,
    total: &mut u64,
) -> Result<Vec<(String, Entry)>> {
    let mut entries = Vec::new();
    for dir in ["objects", "refs", "reftable"] {
        let base = dirs.common_dir.join(dir);
        if !base.is_dir() {
            continue;
        }
        for rel in walk(&base)? {
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            if name.ends_with(".lock")
                || name.ends_with(".tmp")
                || name.starts_with("tmp_")
                || name.starts_with("incoming-")
            {
                continue;
            }
            let p = base.join(&rel);
            let len = std::fs::metadata(&p).map_err(|e| Error::read(&p, e))?.len();
            *total += len;
            check_size(*total, max_bytes, &dirs.root)?;
            let data = std::fs::read(&p).map_err(|e| Error::read(&p, e))?;
            entries.push((format!(".git/{dir}/{rel}"), plain(data)));
        }
    }
    Ok(entries)
}

/// Fetches the remote's `v*` tags into the repository before a snapshot, so that the snapshot
/// holds the tags the pipeline pushed (the version gate would otherwise compute a version that
/// is already released). The remote is `origin`, else the only remote. Never moves a local tag.
/// Returns warnings: no remote, or a fetch that failed (the snapshot then has the local tags).
pub fn fetch_version_tags(repo: &Path) -> Vec<String> {
    let git = Git::new(repo);
    let remotes = match git.output(&["remote"]) {
        Ok(o) if o.success => o.stdout,
        _ => return Vec::new(), // not a repository: `source_zip` says so
    };
    let remotes: Vec<&str> = remotes.lines().map(str::trim).collect();
    let remote = if remotes.contains(&"origin") {
        "origin"
    } else if remotes.len() == 1 {
        remotes[0]
    } else {
        return vec![format!(
            "the repository has {} remotes and none is `origin`, so the release tags (`v*`) of the remote are not fetched: the snapshot has the local tags only, and the build may compute a version that is already released",
            if remotes.is_empty() {
                "no".to_owned()
            } else {
                remotes.len().to_string()
            }
        )];
    };
    let out = git.output_with(
        &[
            (
                "core.sshCommand",
                "ssh -o BatchMode=yes -o ConnectTimeout=20",
            ),
            ("http.lowSpeedLimit", "1000"),
            ("http.lowSpeedTime", "30"),
        ],
        &[
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--no-tags",
            remote,
            "refs/tags/v*:refs/tags/v*",
        ],
    );
    match out {
        Ok(o) if o.success => Vec::new(),
        Ok(o) => vec![format!(
            "cannot fetch the release tags (`v*`) of remote `{remote}`: {}; the snapshot has the local tags only, and the build may compute a version that is already released (run `git fetch {remote} --tags` and try again)",
            crate::git::git_message(&o.stderr)
        )],
        Err(e) => vec![format!(
            "cannot fetch the release tags of remote `{remote}`: {e}"
        )],
    }
}

fn check_size(total: u64, max: u64, root: &Path) -> Result<()> {
    if total > max {
        return Err(fail(
            format!(
                "the snapshot of `{}` would exceed {} MiB (files and git history)",
                root.display(),
                max / (1024 * 1024)
            ),
            "keep large binaries out of the repository (or in Git LFS), and `git gc` to pack the history",
        ));
    }
    Ok(())
}

/// Rejects a tracked symlink that leaves the repository or points into `.git`, resolved with
/// every symlink on its way ([`checkout::resolve_link`]); the link is stored as a link.
fn check_symlink(root: &Path, path: &str, target: &Path) -> Result<()> {
    checkout::resolve_link(root, path).map(|_| ()).map_err(|why| {
        fail(
            format!(
                "tracked symlink `{path}` points {why} (`{}`)",
                target.display()
            ),
            "replace the symlink with a copy of what it points to, or remove it from the repository",
        )
    })
}

/// Every file under `base`, relative, `/`-separated, sorted (symlinks are not followed).
fn walk(base: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|e| Error::read(&d, e))?;
        for e in rd {
            let e = e.map_err(|e| Error::read(&d, e))?;
            let ft = e.file_type().map_err(|err| Error::read(e.path(), err))?;
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p
                    .strip_prefix(base)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A remote URL without credentials: `https://user:token@host/x` → `https://host/x`; the user
/// of `ssh://git@host/x` and `git@host:x` is kept (it is not a secret), a password is not.
pub fn strip_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let keep_user = !scheme.starts_with("http") && !userinfo.contains(':');
    if keep_user {
        format!("{scheme}://{userinfo}@{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// The `.git/config` of the snapshot: repository format (and extensions such as the object
/// format), and each remote's URL without credentials.
fn minimal_config(git: &Git) -> Result<String> {
    let out = git.output(&[
        "config",
        "--local",
        "-z",
        "--get-regexp",
        r"^(core\.repositoryformatversion|extensions\..*|remote\..*\.url)$",
    ])?;
    let mut version = "0".to_owned();
    let mut extensions = Vec::new();
    let mut remotes: Vec<(String, String)> = Vec::new();
    for rec in out.stdout.split('\0').filter(|s| !s.is_empty()) {
        let (key, value) = rec.split_once('\n').unwrap_or((rec, ""));
        let lower = key.to_ascii_lowercase();
        if lower == "core.repositoryformatversion" {
            version = value.trim().to_owned();
        } else if let Some(ext) = lower.strip_prefix("extensions.") {
            // Per-worktree configuration is not part of the snapshot.
            if ext != "worktreeconfig" {
                extensions.push((ext.to_owned(), value.trim().to_owned()));
            }
        } else if let Some(name) = key
            .strip_prefix("remote.")
            .and_then(|k| k.strip_suffix(".url"))
            && !name.contains(['"', '\n', '\\'])
            && !value.contains('\n')
        {
            remotes.push((name.to_owned(), strip_credentials(value.trim())));
        }
    }
    let mut s = String::from("[core]\n");
    s.push_str(&format!("\trepositoryformatversion = {version}\n"));
    s.push_str("\tfilemode = true\n\tbare = false\n\tlogallrefupdates = false\n");
    if !extensions.is_empty() {
        s.push_str("[extensions]\n");
        for (k, v) in &extensions {
            s.push_str(&format!("\t{k} = {v}\n"));
        }
    }
    remotes.sort();
    remotes.dedup_by(|a, b| a.0 == b.0);
    for (name, url) in remotes {
        let quoted = url.replace('\\', "\\\\").replace('"', "\\\"");
        s.push_str(&format!(
            "[remote \"{name}\"]\n\turl = \"{quoted}\"\n\tfetch = +refs/heads/*:refs/remotes/{name}/*\n"
        ));
    }
    Ok(s)
}

fn zip_error(e: impl std::fmt::Display) -> Error {
    fail(
        format!("cannot build the source zip: {e}"),
        "this is a pipeforge bug; please report it",
    )
}

/// Writes the entries (already sorted) as a zip with fixed dates and normalised modes.
fn write_zip(entries: &[(String, Entry)]) -> Result<Vec<u8>> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let base = SimpleFileOptions::default()
        .last_modified_time(DateTime::default())
        .compression_method(CompressionMethod::Deflated);
    for (name, entry) in entries {
        match entry {
            Entry::File { data, executable } => {
                // Git objects and packs are compressed already.
                let method = if name.starts_with(".git/objects/") {
                    CompressionMethod::Stored
                } else {
                    CompressionMethod::Deflated
                };
                let o = base
                    .compression_method(method)
                    .unix_permissions(if *executable { 0o755 } else { 0o644 })
                    .large_file(data.len() as u64 >= u64::from(u32::MAX));
                zip.start_file(name.as_str(), o).map_err(zip_error)?;
                zip.write_all(data).map_err(zip_error)?;
            }
            Entry::Symlink(target) => {
                zip.add_symlink(name.as_str(), target.as_str(), base.unix_permissions(0o777))
                    .map_err(zip_error)?;
            }
            Entry::Dir => {
                zip.add_directory(name.as_str(), base.unix_permissions(0o755))
                    .map_err(zip_error)?;
            }
        }
    }
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "C")
            .env("GIT_COMMITTER_EMAIL", "c@example.com")
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A repository with a file, an executable, an inner symlink, an ignored file, a tag, a
    /// remote with a token in its URL, and a hook.
    fn repo() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        git(d, &["init", "-q", "-b", "main"]);
        std::fs::write(d.join("pipeline.yml"), "name: x\n").expect("write");
        std::fs::create_dir_all(d.join("bin")).expect("mkdir");
        std::fs::write(d.join("bin/run.sh"), "#!/bin/sh\necho hi\n").expect("write");
        std::fs::write(d.join(".gitignore"), "build/\n").expect("write");
        std::fs::create_dir_all(d.join("build")).expect("mkdir");
        std::fs::write(d.join("build/out.bin"), "ignored").expect("write");
        std::os::unix::fs::symlink("../pipeline.yml", d.join("bin/manifest")).expect("symlink");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(d.join("bin/run.sh"), std::fs::Permissions::from_mode(0o775))
            .expect("chmod");
        git(d, &["add", "-A"]);
        git(d, &["commit", "-qm", "feat: first"]);
        git(d, &["tag", "v1.2.3"]);
        git(
            d,
            &[
                "remote",
                "add",
                "origin",
                "https://x-access-token:ghp_SECRET@example.com/org/repo.git",
            ],
        );
        std::fs::write(d.join(".git/hooks/post-checkout"), "#!/bin/sh\nexit 1\n").expect("hook");
        t
    }

    fn entries(zip: &SourceZip) -> Vec<(String, u32, Vec<u8>, zip::DateTime)> {
        let mut a = zip::ZipArchive::new(Cursor::new(zip.bytes.clone())).expect("zip");
        let mut out = Vec::new();
        for i in 0..a.len() {
            let mut f = a.by_index(i).expect("entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("read");
            out.push((
                f.name().expect("utf-8 name").into_owned(),
                f.unix_mode().unwrap_or(0),
                data,
                f.last_modified().unwrap_or_default(),
            ));
        }
        out
    }

    #[test]
    fn the_snapshot_is_deterministic_sorted_dated_and_normalised() {
        let t = repo();
        let a = source_zip(t.path(), &SourceOptions::default()).expect("zip");
        let b = source_zip(t.path(), &SourceOptions::default()).expect("zip again");
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(
            a.files, 4,
            "pipeline.yml, bin/run.sh, bin/manifest, .gitignore"
        );
        assert_eq!(a.symlinks, 1);
        assert_eq!(a.branch.as_deref(), Some("main"));
        let e = entries(&a);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(
            e.iter().all(|x| x.3 == zip::DateTime::default()),
            "1980-01-01"
        );
        let mode = |n: &str| e.iter().find(|x| x.0 == n).map(|x| x.1 & 0o170777);
        assert_eq!(mode("pipeline.yml"), Some(0o100644));
        assert_eq!(mode("bin/run.sh"), Some(0o100755));
        assert_eq!(mode("bin/manifest"), Some(0o120777));
        let link = e.iter().find(|x| x.0 == "bin/manifest").expect("symlink");
        assert_eq!(link.2, b"../pipeline.yml");
        assert!(
            !names.iter().any(|n| n.starts_with("build/")),
            "ignored files stay out"
        );
        // The git data the version gate needs, and nothing else of .git.
        for want in [".git/HEAD", ".git/config", ".git/refs/tags/v1.2.3"] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        assert!(names.iter().any(|n| n.starts_with(".git/objects/")));
        for n in &names {
            assert!(
                !n.starts_with(".git/hooks") && *n != ".git/index" && !n.starts_with(".git/logs"),
                "{n} must not be published"
            );
        }
        let config = e.iter().find(|x| x.0 == ".git/config").expect("config");
        let config = String::from_utf8_lossy(&config.2);
        assert!(!config.contains("SECRET"), "{config}");
        assert!(
            config.contains("https://example.com/org/repo.git"),
            "{config}"
        );
    }

    #[test]
    fn the_extracted_snapshot_is_a_repository_the_version_gate_can_read() {
        let t = repo();
        let z = source_zip(t.path(), &SourceOptions::default()).expect("zip");
        let out = tempfile::tempdir().expect("tempdir");
        for (name, mode, data, _) in entries(&z) {
            let p = out.path().join(&name);
            if name.ends_with('/') {
                std::fs::create_dir_all(&p).expect("dir");
                continue;
            }
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            if mode & 0o170000 == 0o120000 {
                std::os::unix::fs::symlink(String::from_utf8_lossy(&data).as_ref(), &p)
                    .expect("symlink");
            } else {
                std::fs::write(&p, data).expect("write");
            }
        }
        assert_eq!(git(out.path(), &["describe", "--tags"]).trim(), "v1.2.3");
        assert_eq!(
            git(out.path(), &["rev-parse", "HEAD"]).trim(),
            z.commit,
            "HEAD is the published commit"
        );
        assert_eq!(
            git(out.path(), &["symbolic-ref", "--short", "HEAD"]).trim(),
            "main"
        );
    }

    #[test]
    fn a_dirty_tree_is_refused_unless_allowed() {
        let t = repo();
        std::fs::write(t.path().join("pipeline.yml"), "name: changed\n").expect("write");
        std::fs::write(t.path().join("notes.txt"), "untracked").expect("write");
        let e = source_zip(t.path(), &SourceOptions::default()).expect_err("dirty");
        let text = e.to_string();
        assert!(
            text.contains("`pipeline.yml`") && text.contains("--allow-dirty"),
            "{text}"
        );
        let z = source_zip(
            t.path(),
            &SourceOptions {
                allow_dirty: true,
                ..SourceOptions::default()
            },
        )
        .expect("allowed");
        assert!(z.dirty);
        let e = entries(&z);
        let manifest = e.iter().find(|x| x.0 == "pipeline.yml").expect("manifest");
        assert_eq!(
            manifest.2, b"name: changed\n",
            "the files as they are on disk"
        );
        assert!(
            !e.iter().any(|x| x.0 == "notes.txt"),
            "untracked files stay out"
        );
        assert!(
            z.warnings.iter().any(|w| w.contains("1 untracked")),
            "{:?}",
            z.warnings
        );
    }

    #[test]
    fn symlinks_out_of_the_repository_are_refused_and_submodules_reported() {
        let t = repo();
        std::os::unix::fs::symlink("../../etc/passwd", t.path().join("bin/evil")).expect("link");
        git(t.path(), &["add", "bin/evil"]);
        git(t.path(), &["commit", "-qm", "chore: link"]);
        let e = source_zip(t.path(), &SourceOptions::default()).expect_err("escape");
        assert!(e.to_string().contains("`bin/evil` points outside"), "{e}");

        let t = repo();
        let head = git(t.path(), &["rev-parse", "HEAD"]);
        git(
            t.path(),
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{},vendor/lib", head.trim()),
            ],
        );
        git(t.path(), &["commit", "-qm", "chore: submodule"]);
        let z = source_zip(t.path(), &SourceOptions::default()).expect("zip");
        assert!(
            z.warnings
                .iter()
                .any(|w| w.contains("submodule `vendor/lib`")),
            "{:?}",
            z.warnings
        );
    }

    #[test]
    fn the_size_bound_holds() {
        let t = repo();
        let e = source_zip(
            t.path(),
            &SourceOptions {
                allow_dirty: false,
                max_bytes: 10,
            },
        )
        .expect_err("too big");
        assert!(e.to_string().contains("would exceed"), "{e}");
    }

    /// The zip's own size is bounded too (its headers come on top of the files): a snapshot
    /// of exactly the zip's size is taken, one byte less is refused, though the files and git
    /// data alone fit (this repository's many small entries make the zip the larger).
    #[test]
    fn the_zip_itself_stays_within_the_bound() {
        let t = repo();
        let zip = source_zip(t.path(), &SourceOptions::default()).expect("zip");
        let at = |max_bytes| {
            source_zip(
                t.path(),
                &SourceOptions {
                    allow_dirty: false,
                    max_bytes,
                },
            )
        };
        let size = zip.bytes.len() as u64;
        at(size).expect("the zip's own size is allowed");
        let e = at(size - 1).expect_err("one byte less");
        assert!(e.to_string().contains("would exceed"), "{e}");
    }

    #[test]
    fn credentials_are_stripped_from_remote_urls() {
        for (url, want) in [
            (
                "https://x-access-token:ghp_secret@github.com/org/repo.git",
                "https://github.com/org/repo.git",
            ),
            (
                "https://ghp_secret@github.com/org/repo.git",
                "https://github.com/org/repo.git",
            ),
            (
                "ssh://git@github.com/org/repo.git",
                "ssh://git@github.com/org/repo.git",
            ),
            (
                "ssh://git:pw@github.com/org/repo.git",
                "ssh://github.com/org/repo.git",
            ),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            ("/srv/git/repo.git", "/srv/git/repo.git"),
            ("https://host", "https://host"),
        ] {
            assert_eq!(strip_credentials(url), want, "{url}");
        }
    }

    #[test]
    fn symlinks_must_stay_inside_the_repository() {
        let t = repo();
        let d = t.path();
        std::os::unix::fs::symlink(".", d.join("here")).expect("link");
        std::os::unix::fs::symlink("here/pipeline.yml", d.join("again")).expect("link");
        git(d, &["add", "here", "again"]);
        git(d, &["commit", "-qm", "chore: inner links"]);
        let z = source_zip(d, &SourceOptions::default()).expect("links inside are kept");
        assert_eq!(z.symlinks, 3);
        for (name, target) in [
            ("outside", "../outside"),
            ("absolute", "/etc/passwd"),
            ("gitdir", ".git/config"),
            ("hooks", "bin/../.git/hooks"),
            // Lexically inside, really the parent of the repository: `here` is `.`.
            ("parent", "here/.."),
        ] {
            let t = repo();
            let d = t.path();
            std::os::unix::fs::symlink(".", d.join("here")).expect("link");
            std::os::unix::fs::symlink(target, d.join(name)).expect("link");
            git(d, &["add", "-A"]);
            git(d, &["commit", "-qm", "chore: link"]);
            let e = source_zip(d, &SourceOptions::default()).expect_err(target);
            assert!(e.to_string().contains(&format!("`{name}` points")), "{e}");
        }
    }

    #[test]
    fn the_remotes_release_tags_are_fetched_into_the_snapshot_and_local_tags_never_move() {
        let remote = tempfile::tempdir().expect("tempdir");
        git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
        let work = tempfile::tempdir().expect("tempdir");
        let w = work.path();
        git(w, &["init", "-q", "-b", "main"]);
        std::fs::write(w.join("a.txt"), "a\n").expect("write");
        git(w, &["add", "-A"]);
        git(w, &["commit", "-qm", "feat: first"]);
        let url = remote.path().display().to_string();
        git(w, &["remote", "add", "origin", &url]);
        git(w, &["push", "-q", "origin", "main"]);
        // The pipeline tagged the release on the server (from its own clone).
        let ci = tempfile::tempdir().expect("tempdir");
        git(ci.path(), &["clone", "-q", &url, "."]);
        git(ci.path(), &["tag", "-a", "-m", "release", "v0.1.0"]);
        git(ci.path(), &["tag", "other-tag"]);
        git(ci.path(), &["push", "-q", "origin", "--tags"]);

        let before = source_zip(w, &SourceOptions::default()).expect("snapshot");
        assert!(!names(&before).contains(&".git/refs/tags/v0.1.0".to_owned()));
        assert_eq!(fetch_version_tags(w), Vec::<String>::new());
        let after = source_zip(w, &SourceOptions::default()).expect("snapshot");
        let listed = names(&after);
        assert!(
            listed.contains(&".git/refs/tags/v0.1.0".to_owned()),
            "{listed:?}"
        );
        assert!(
            !listed.iter().any(|n| n.contains("other-tag")),
            "only `v*` tags"
        );

        // A local tag of the same name on another commit is kept, and reported.
        git(w, &["tag", "-d", "v0.1.0"]);
        std::fs::write(w.join("a.txt"), "b\n").expect("write");
        git(w, &["commit", "-qam", "fix: second"]);
        git(w, &["tag", "v0.1.0"]);
        let local = git(w, &["rev-parse", "v0.1.0^{commit}"]);
        let warnings = fetch_version_tags(w);
        assert!(
            warnings.len() == 1 && warnings[0].contains("cannot fetch the release tags"),
            "{warnings:?}"
        );
        assert_eq!(git(w, &["rev-parse", "v0.1.0^{commit}"]), local);

        // No remote: a warning, and the snapshot still works.
        git(w, &["remote", "remove", "origin"]);
        let warnings = fetch_version_tags(w);
        assert!(warnings[0].contains("local tags only"), "{warnings:?}");
    }

    fn names(zip: &SourceZip) -> Vec<String> {
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(zip.bytes.clone())).expect("zip");
        (0..a.len())
            .map(|i| {
                a.by_index(i)
                    .expect("entry")
                    .name()
                    .expect("name")
                    .into_owned()
            })
            .collect()
    }
}
