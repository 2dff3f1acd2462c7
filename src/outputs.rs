//! Stage 4's result: the rendered files of one pipeline, in memory, and the one step that writes
//! them (or compares them with what is on disk).
//!
//! Writing, diffing and uploading all take an `&Outputs`; nothing renders while writing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The path of the plan inside a bundle.
pub const PLAN_FILE: &str = "plan.json";

/// Rendered files of one pipeline: bundle-relative path → bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    files: BTreeMap<String, Vec<u8>>,
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// The per-file hashes and the bundle hash recorded in `plan.json`.
#[derive(Clone, Debug, Serialize)]
pub struct OutputsSummary {
    /// Hash of every file except `plan.json`, in path order.
    pub hash: String,
    /// Hash per file.
    pub files: BTreeMap<String, String>,
}

impl Outputs {
    /// Adds a file.
    pub fn insert(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.files.insert(path.into(), bytes.into());
    }

    /// A file's bytes.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// A file as text.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Every file, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Every file, in path order, by value.
    pub fn into_files(self) -> impl Iterator<Item = (String, Vec<u8>)> {
        self.files.into_iter()
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when there are no files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Hashes of every file but the plan, and their combined hash.
    pub fn summary(&self) -> OutputsSummary {
        let mut all = Sha256::new();
        let mut files = BTreeMap::new();
        for (path, bytes) in self.files.iter().filter(|(p, _)| p.as_str() != PLAN_FILE) {
            let h = sha256(bytes);
            // The bundle hash covers every path and file hash (each file is hashed once).
            all.update(path.as_bytes());
            all.update(b"\0");
            all.update(h.as_bytes());
            all.update(b"\n");
            files.insert(path.clone(), h);
        }
        OutputsSummary {
            hash: format!("sha256:{}", hex(&all.finalize())),
            files,
        }
    }

    /// The bundle hash (as recorded in the plan).
    pub fn content_hash(&self) -> String {
        self.summary().hash
    }

    /// True when `dir` is a real directory (not a symlink) holding exactly these files, byte
    /// for byte, in real subdirectories, and nothing else, every one of them owned by the user
    /// this process runs as and not writable by others: writing the bundle there again would
    /// change nothing a rewrite would. Any doubt (a symlink, another file type, an extra or
    /// missing entry, an empty directory, another owner, a world-writable entry, an error
    /// reading) is `false`, so the caller rewrites.
    pub fn matches_dir(&self, dir: &Path) -> bool {
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && ours(&m)) {
            return false;
        }
        let mut found = 0;
        // One buffer for every file, a chunk at a time: the pages it touches are the same for
        // each file, where reading each file whole touched the largest one's size of fresh
        // memory (each page a fault).
        let mut buf = vec![0; COMPARE_CHUNK];
        self.tree_matches(dir, "", &mut found, &mut buf) && found == self.files.len()
    }

    /// One directory of [`Outputs::matches_dir`]: `prefix` is its bundle-relative path with a
    /// trailing `/` (empty at the root); `found` counts the matching files seen.
    fn tree_matches(&self, dir: &Path, prefix: &str, found: &mut usize, buf: &mut [u8]) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut any = false;
        for entry in entries {
            let Ok(entry) = entry else { return false };
            let (Ok(kind), Some(name)) = (
                entry.file_type(),
                entry.file_name().to_str().map(str::to_owned),
            ) else {
                return false;
            };
            any = true;
            let rel = format!("{prefix}{name}");
            let ok = if kind.is_dir() {
                let sub = format!("{rel}/");
                // A directory no file of the bundle lives in (would be left empty) differs.
                self.files.keys().any(|k| k.starts_with(&sub))
                    && std::fs::symlink_metadata(entry.path()).is_ok_and(|m| ours(&m))
                    && self.tree_matches(&entry.path(), &sub, found, buf)
            } else if kind.is_file() {
                self.files
                    .get(&rel)
                    .is_some_and(|want| file_is(&entry.path(), want, buf))
                    && {
                        *found += 1;
                        true
                    }
            } else {
                false
            };
            if !ok {
                return false;
            }
        }
        any
    }
}

/// The user this process runs as: the owner of `/proc/self` (Linux; `None` without it, and
/// then no bundle on disk counts as unchanged).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    static UID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UID.get_or_init(|| std::fs::metadata("/proc/self").ok().map(|m| m.uid()))
}

/// True when an entry is owned by the user this process runs as and not world-writable: left
/// in place, it is no more open to others than the file a rewrite would make.
fn ours(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    own_uid().is_some_and(|uid| m.uid() == uid) && m.mode() & 0o002 == 0
}

/// How much of a file [`Outputs::matches_dir`] reads at a time.
const COMPARE_CHUNK: usize = 32 * 1024;

/// True when the file at `path` is ours and holds exactly `want` (its size checked before its
/// bytes). The bytes are read through `buf`, a chunk at a time, to the end of the file, so a
/// file that grew since its size was read differs too.
fn file_is(path: &Path, want: &[u8], buf: &mut [u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if !f
        .metadata()
        .is_ok_and(|m| ours(&m) && m.len() == want.len() as u64)
    {
        return false;
    }
    let mut rest = want;
    loop {
        match f.read(buf) {
            Ok(0) => return rest.is_empty(),
            Ok(n) => match rest.split_at_checked(n) {
                Some((head, tail)) if head == &buf[..n] => rest = tail,
                _ => return false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Every regular file under `dir`, relative, `/`-separated (symlinks are listed, not followed).
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::read(&d, e))?;
        for e in entries {
            let e = e.map_err(|e| Error::read(&d, e))?;
            let ft = e.file_type().map_err(|err| Error::read(e.path(), err))?;
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
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

/// Writes each pipeline's files under `dir/<name>/`, and removes files there that the render no
/// longer produces. Files are written to a temporary name and renamed into place.
pub fn write_bundles(dir: &Path, bundles: &[(&str, &Outputs)]) -> Result<()> {
    for (name, outputs) in bundles {
        let root = dir.join(name);
        for stale in list_files(&root)? {
            if outputs.get(&stale).is_none() {
                let p = root.join(&stale);
                std::fs::remove_file(&p).map_err(|e| Error::write(&p, e))?;
            }
        }
        for (path, bytes) in outputs.iter() {
            let target: PathBuf = root.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                    action: "create directory",
                    path: parent.to_path_buf(),
                    source: e,
                    help: "check that the output directory is writable".to_owned(),
                })?;
            }
            if std::fs::read(&target).ok().as_deref() == Some(bytes) {
                continue;
            }
            let tmp = target.with_extension("pipeforge-tmp");
            std::fs::write(&tmp, bytes).map_err(|e| Error::write(&tmp, e))?;
            std::fs::rename(&tmp, &target).map_err(|e| Error::write(&target, e))?;
        }
        remove_empty_dirs(&root);
    }
    Ok(())
}

fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

/// A unified diff between `old` and `new` text, labelled with `path`.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// Compares each pipeline's files with `dir/<name>/`: a unified diff of every difference
/// (missing, changed and stale files), or `None` when the directory is up to date.
pub fn diff_bundles(dir: &Path, bundles: &[(&str, &Outputs)]) -> Result<Option<String>> {
    let mut out = String::new();
    for (name, outputs) in bundles {
        let root = dir.join(name);
        let on_disk = list_files(&root)?;
        for (path, bytes) in outputs.iter() {
            let shown = format!("{name}/{path}");
            let target = root.join(path);
            let old = match std::fs::read(&target) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Error::read(&target, e)),
            };
            if old != bytes {
                out.push_str(&unified_diff(
                    &shown,
                    &String::from_utf8_lossy(&old),
                    &String::from_utf8_lossy(bytes),
                ));
            }
        }
        for stale in on_disk.iter().filter(|p| outputs.get(p).is_none()) {
            let shown = format!("{name}/{stale}");
            let old = std::fs::read(root.join(stale)).unwrap_or_default();
            out.push_str(&unified_diff(&shown, &String::from_utf8_lossy(&old), ""));
        }
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Serializes a value as canonical JSON: keys sorted at every level, two-space indent, one
/// trailing newline.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<String> {
    let v = serde_json::to_value(value).map_err(|e| {
        Error::other(
            format!("cannot serialize: {e}"),
            "this is a pipeforge bug; please report it",
        )
    })?;
    let sorted = if maps_are_sorted() { v } else { sort_keys(v) };
    let mut s = serde_json::to_string_pretty(&sorted).map_err(|e| {
        Error::other(
            format!("cannot serialize: {e}"),
            "this is a pipeforge bug; please report it",
        )
    })?;
    s.push('\n');
    Ok(s)
}

/// True when `serde_json::Map` keeps keys sorted (it does unless some crate in the build
/// enables serde_json's `preserve_order` feature); checked once.
pub fn maps_are_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = serde_json::Map::new();
        m.insert("b".to_owned(), serde_json::Value::Null);
        m.insert("a".to_owned(), serde_json::Value::Null);
        m.keys().next().is_some_and(|k| k == "a")
    })
}

/// Recursively sorts object keys (independent of serde_json's `preserve_order` feature).
pub fn sort_keys(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_check_and_remove_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Outputs::default();
        o.insert("a.yml", "one\n");
        o.insert("sub/b.yml", "two\n");
        write_bundles(dir.path(), &[("p", &o)]).expect("write");
        assert_eq!(diff_bundles(dir.path(), &[("p", &o)]).expect("diff"), None);
        std::fs::write(dir.path().join("p/stale.txt"), "x").expect("stale");
        let mut o2 = o.clone();
        o2.insert("a.yml", "uno\n");
        let d = diff_bundles(dir.path(), &[("p", &o2)])
            .expect("diff")
            .expect("some");
        assert!(
            d.contains("-one") && d.contains("+uno") && d.contains("a/p/stale.txt"),
            "{d}"
        );
        write_bundles(dir.path(), &[("p", &o2)]).expect("write");
        assert!(!dir.path().join("p/stale.txt").exists());
        assert_eq!(diff_bundles(dir.path(), &[("p", &o2)]).expect("diff"), None);
    }

    /// A file is compared a chunk at a time: one byte changed in its last chunk, or one byte
    /// more, differs; the same bytes match again.
    #[test]
    fn matches_dir_compares_files_larger_than_a_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: String = (0..COMPARE_CHUNK * 2 + 100)
            .map(|i| char::from(b'a' + u8::try_from(i % 26).expect("small")))
            .collect();
        let mut o = Outputs::default();
        o.insert("big.json", big.clone());
        o.insert("sub/small.yml", "x\n");
        write_bundles(dir.path(), &[("p", &o)]).expect("write");
        let p = dir.path().join("p");
        assert!(o.matches_dir(&p));
        let file = p.join("big.json");
        let mut changed = big.clone().into_bytes();
        let last = changed.len() - 1;
        changed[last] = b'#';
        std::fs::write(&file, &changed).expect("write");
        assert!(!o.matches_dir(&p), "a byte changed in the last chunk");
        std::fs::write(&file, format!("{big}!")).expect("write");
        assert!(!o.matches_dir(&p), "one byte more");
        std::fs::write(&file, &big).expect("write");
        assert!(o.matches_dir(&p));
    }

    #[test]
    fn summary_ignores_plan_and_changes_with_content() {
        let mut o = Outputs::default();
        o.insert("a", "1");
        let h1 = o.content_hash();
        o.insert(PLAN_FILE, "{}");
        assert_eq!(h1, o.content_hash());
        o.insert("a", "2");
        assert_ne!(h1, o.content_hash());
    }
}
