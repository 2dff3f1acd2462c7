//! Reading a repository checkout: the one way pipeforge reads a file of a repository it
//! publishes or deploys (`publish`/`deploy`/`diff --repo DIR`, the webhook worker's clone), and
//! the one way it resolves a tracked symlink for the snapshot.
//!
//! A checkout is untrusted input: a merged `pipeline.yml` may be a symlink to
//! `/proc/self/environ`, `/etc/passwd` or `../../..`, and whatever is read ends up quoted in
//! diagnostics, job statuses and logs. So [`read_file`] reads a file only when
//!
//! - its path is relative to the checkout and has no `..` (nor a root or a prefix);
//! - every directory on the way is a real directory (`lstat`), never a symlink;
//! - the file itself is a regular file (`lstat`), no larger than its cap, checked before a byte
//!   is read;
//! - the file opened (`O_NOFOLLOW | O_NONBLOCK`: a symlink swapped in fails instead of being
//!   followed, a FIFO does not block) is the one checked (same device and inode);
//! - and, for [`read_text`], it is UTF-8.
//!
//! [`resolve_link`] follows a tracked symlink the way the kernel would, but inside the
//! checkout: every link on the way (a chain `a -> s/..`, `s -> .` included) is resolved, and the
//! result must stay inside the checkout and out of `.git`. Nothing is read through a link.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Component, Path, PathBuf};

use crate::MAX_MANIFEST_BYTES;
use crate::error::{Error, Result, SourceFile};

/// Most symlinks followed while resolving one link (as Linux's `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

fn refused(shown: &str, why: &str, help: &str) -> Error {
    Error::other(format!("`{shown}` {why}"), help)
}

/// `path` (absolute, or relative to the current directory) as a path relative to `root`, decided
/// lexically (no symlink is resolved); an error when it is not inside `root`.
pub fn relative_in(root: &Path, path: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::other(format!("cannot read the current directory: {e}"), "retry"))?;
    let absolute = |p: &Path| -> PathBuf {
        cwd.join(p)
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    };
    let (root_abs, path_abs) = (absolute(root), absolute(path));
    let rel = path_abs.strip_prefix(&root_abs).map_err(|_| {
        refused(
            &path.display().to_string(),
            &format!("is not inside the repository `{}`", root.display()),
            "give a manifest inside the repository given with `--repo` (the default is `DIR/pipeline.yml`)",
        )
    })?;
    check_relative(rel, &path.display().to_string())?;
    Ok(rel.to_path_buf())
}

fn check_relative(rel: &Path, shown: &str) -> Result<()> {
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain || rel.as_os_str().is_empty() {
        return Err(refused(
            shown,
            "is not a plain path inside the repository",
            "use a relative path without `..`, e.g. `pipeline.yml` or `deploy/pipeline.yml`",
        ));
    }
    Ok(())
}

/// Reads the regular file `rel` of the checkout at `root` (see the module documentation),
/// refusing it when it is larger than `max` bytes.
pub fn read_file(root: &Path, rel: &Path, max: u64) -> Result<Vec<u8>> {
    let shown = rel.display().to_string();
    check_relative(rel, &shown)?;
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Err(refused(
            &shown,
            "is not a file",
            "name a file of the repository",
        ));
    };
    for d in dirs {
        at.push(d);
        let meta = std::fs::symlink_metadata(&at).map_err(|e| Error::read(&at, e))?;
        if meta.file_type().is_symlink() {
            return Err(refused(
                &shown,
                "is reached through a symlinked directory of the repository, which pipeforge does not follow",
                "commit the directory itself instead of a symlink to it",
            ));
        }
        if !meta.is_dir() {
            return Err(refused(
                &shown,
                "is not inside a directory",
                "check the path",
            ));
        }
    }
    at.push(file);
    let before = std::fs::symlink_metadata(&at).map_err(|e| Error::read(&at, e))?;
    if before.file_type().is_symlink() {
        return Err(refused(
            &shown,
            "is a symlink; pipeforge reads only regular files of the repository",
            "commit the file itself instead of a symlink to it",
        ));
    }
    if !before.is_file() {
        return Err(refused(
            &shown,
            "is not a regular file",
            "commit a regular file at this path",
        ));
    }
    if before.len() > max {
        return Err(too_large(&shown, before.len(), max));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&at)
        .map_err(|e| Error::read(&at, e))?;
    let opened = f.metadata().map_err(|e| Error::read(&at, e))?;
    if !opened.is_file() || opened.dev() != before.dev() || opened.ino() != before.ino() {
        return Err(refused(
            &shown,
            "changed while it was being read",
            "retry; nothing else should write to the checkout",
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0));
    (&mut f)
        .take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| Error::read(&at, e))?;
    if data.len() as u64 > max {
        return Err(too_large(&shown, data.len() as u64, max));
    }
    Ok(data)
}

fn too_large(shown: &str, len: u64, max: u64) -> Error {
    refused(
        shown,
        &format!("is {len} bytes, over the limit of {max} bytes"),
        "keep the file smaller; a manifest is a few kilobytes",
    )
}

/// [`read_file`], as UTF-8 text.
pub fn read_text(root: &Path, rel: &Path, max: u64) -> Result<String> {
    let bytes = read_file(root, rel, max)?;
    String::from_utf8(bytes).map_err(|e| {
        refused(
            &rel.display().to_string(),
            &format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
            "save the file as UTF-8",
        )
    })
}

/// Reads the manifest `manifest` (absolute, or relative to the current directory) of the
/// checkout at `root`, capped at [`MAX_MANIFEST_BYTES`] (256 KiB); diagnostics name it as given.
pub fn read_manifest(root: &Path, manifest: &Path) -> Result<SourceFile> {
    let rel = relative_in(root, manifest)?;
    let text = read_text(root, &rel, MAX_MANIFEST_BYTES)?;
    Ok(SourceFile::new(manifest.display().to_string(), text))
}

/// Puts the components of `p` in front of `todo`, `..` included; refuses an absolute `p`.
fn push_front(todo: &mut VecDeque<OsString>, p: &Path) -> std::result::Result<(), String> {
    let mut front = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => front.push(s.to_os_string()),
            Component::ParentDir => front.push(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("to an absolute path (`{}`)", p.display()));
            }
        }
    }
    for s in front.into_iter().rev() {
        todo.push_front(s);
    }
    Ok(())
}

/// Resolves the symlink `link` (a `/`-separated path relative to `root`) inside the checkout:
/// every symlink on the way is followed from its own directory, up to 40 of them. Returns the
/// path it ends at, relative to `root` (it may not exist: a dangling link), or why it leaves the
/// checkout: an absolute target, `..` above `root`, `.git`, or too many links.
pub fn resolve_link(root: &Path, link: &str) -> std::result::Result<PathBuf, String> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, Path::new(link))?;
    let mut hops = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if done.pop().is_none() {
                return Err("outside the repository".to_owned());
            }
            continue;
        }
        let mut at = root.to_path_buf();
        at.extend(&done);
        at.push(&name);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err("through too many symlinks (a loop?)".to_owned());
                }
                let target = std::fs::read_link(&at)
                    .map_err(|e| format!("to an unreadable target ({e})"))?;
                push_front(&mut todo, &target)?;
            }
            _ => done.push(name),
        }
    }
    if done.first().is_some_and(|s| s == ".git") {
        return Err("into the git directory".to_owned());
    }
    Ok(done.iter().collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        let repo = t.path().join("repo");
        std::fs::create_dir_all(repo.join("deploy")).expect("mkdir");
        std::fs::write(repo.join("pipeline.yml"), "name: x\n").expect("write");
        std::fs::write(repo.join("deploy/app.yml"), "Resources: {}\n").expect("write");
        std::fs::write(t.path().join("secret.txt"), "token: FAKE-SECRET-123\n").expect("write");
        t
    }

    fn text(err: Result<impl std::fmt::Debug>) -> String {
        err.expect_err("refused").to_string()
    }

    #[test]
    fn regular_files_inside_the_checkout_are_read() {
        let t = tree();
        let repo = t.path().join("repo");
        assert_eq!(
            read_text(&repo, Path::new("pipeline.yml"), 100).expect("read"),
            "name: x\n"
        );
        assert_eq!(
            read_text(&repo, Path::new("./deploy/app.yml"), 100).expect("read"),
            "Resources: {}\n"
        );
    }

    #[test]
    fn symlinks_are_never_followed() {
        let t = tree();
        let repo = t.path().join("repo");
        symlink(t.path().join("secret.txt"), repo.join("abs.yml")).expect("link");
        symlink("../secret.txt", repo.join("rel.yml")).expect("link");
        symlink("pipeline.yml", repo.join("inside.yml")).expect("link");
        symlink("/proc/self/environ", repo.join("environ.yml")).expect("link");
        symlink(t.path(), repo.join("up")).expect("link");
        for p in ["abs.yml", "rel.yml", "inside.yml", "environ.yml"] {
            let e = text(read_file(&repo, Path::new(p), 1 << 20));
            assert!(e.contains("is a symlink"), "{p}: {e}");
            assert!(!e.contains("FAKE-SECRET"), "{e}");
        }
        let e = text(read_file(&repo, Path::new("up/secret.txt"), 1 << 20));
        assert!(e.contains("symlinked directory"), "{e}");
        for p in [
            "../secret.txt",
            "/etc/passwd",
            "deploy/../../secret.txt",
            "",
        ] {
            let e = text(read_file(&repo, Path::new(p), 1 << 20));
            assert!(e.contains("not a plain path"), "{p}: {e}");
        }
    }

    #[test]
    fn size_type_and_encoding_are_checked_before_use() {
        let t = tree();
        let repo = t.path().join("repo");
        let e = text(read_file(&repo, Path::new("pipeline.yml"), 3));
        assert!(e.contains("over the limit of 3 bytes"), "{e}");
        let e = text(read_file(&repo, Path::new("deploy"), 100));
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = repo.join("fifo.yml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let e = text(read_file(&repo, Path::new("fifo.yml"), 100));
            assert!(e.contains("not a regular file"), "{e}");
        }
        std::fs::write(repo.join("latin1.yml"), b"name: caf\xe9\n").expect("write");
        let e = text(read_text(&repo, Path::new("latin1.yml"), 100));
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn a_manifest_must_be_inside_the_repository() {
        let t = tree();
        let repo = t.path().join("repo");
        let m = read_manifest(&repo, &repo.join("pipeline.yml")).expect("inside");
        assert_eq!(m.text, "name: x\n");
        let e = text(read_manifest(&repo, &t.path().join("secret.txt")));
        assert!(e.contains("is not inside the repository"), "{e}");
        let e = text(read_manifest(&repo, &repo.join("../secret.txt")));
        assert!(e.contains("not a plain path"), "{e}");
        std::fs::write(repo.join("big.yml"), vec![b'#'; 300 * 1024]).expect("write");
        let e = text(read_manifest(&repo, &repo.join("big.yml")));
        assert!(e.contains("over the limit of 262144 bytes"), "{e}");
    }

    #[test]
    fn links_resolve_inside_the_checkout_or_are_refused() {
        let t = tree();
        let repo = t.path().join("repo");
        symlink("../pipeline.yml", repo.join("deploy/manifest")).expect("link");
        symlink(".", repo.join("here")).expect("link");
        symlink("here/deploy", repo.join("d")).expect("link");
        symlink("d/manifest", repo.join("chained")).expect("link");
        assert_eq!(
            resolve_link(&repo, "deploy/manifest"),
            Ok(PathBuf::from("pipeline.yml"))
        );
        assert_eq!(
            resolve_link(&repo, "chained"),
            Ok(PathBuf::from("pipeline.yml"))
        );
        // Lexically inside, really the parent: `here/..` is `./..`.
        symlink("here/..", repo.join("parent")).expect("link");
        symlink("here/../secret.txt", repo.join("sneaky")).expect("link");
        symlink("loop", repo.join("loop")).expect("link");
        symlink("/etc/passwd", repo.join("abs")).expect("link");
        symlink(".git/config", repo.join("gitdir")).expect("link");
        for (link, why) in [
            ("parent", "outside"),
            ("sneaky", "outside"),
            ("loop", "too many"),
            ("abs", "absolute"),
            ("gitdir", "git directory"),
        ] {
            let e = resolve_link(&repo, link).expect_err(link);
            assert!(e.contains(why), "{link}: {e}");
        }
        symlink("missing/../pipeline.yml", repo.join("dangling")).expect("link");
        assert_eq!(
            resolve_link(&repo, "dangling"),
            Ok(PathBuf::from("pipeline.yml"))
        );
    }
}
