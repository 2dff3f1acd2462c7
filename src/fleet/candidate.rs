//! A rollout's candidate set (org policy, language files, template overrides) as one
//! content-addressed object in the org source bucket: `fleet/candidates/<hex>.json`, where
//! `<hex>` is the candidate's hash ([`super::rollout::candidate_hash`]). A rollout on AWS stores
//! it before it sends any job; the worker loads it by the hash the job names and checks that the
//! files it read hash to that name, so a job message carries a reference, never a template or
//! a policy. The source bucket's policy lets platform engineers write `fleet/`, never the
//! worker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Inputs;
use crate::error::{Error, Result};

/// Schema identifier of a stored candidate.
pub const CANDIDATE_SCHEMA: &str = "pipeforge/candidate/v1";

/// Where candidates live in the source bucket.
pub const CANDIDATES_PREFIX: &str = "fleet/candidates/";

/// Largest candidate object read or written.
pub const MAX_CANDIDATE_BYTES: usize = 8 * 1024 * 1024;

/// The files of a candidate set, as the CLI read them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateFiles {
    /// [`CANDIDATE_SCHEMA`].
    pub schema: String,
    /// The org policy's text (`None`: the embedded one).
    pub org: Option<String>,
    /// Language files (`python.yaml` → text); empty: the embedded catalog only.
    #[serde(default)]
    pub languages: Option<BTreeMap<String, String>>,
    /// The template override directory: its name (the set's label) and its `.tera` files by
    /// path inside it.
    #[serde(default)]
    pub templates: Option<(String, BTreeMap<String, String>)>,
}

/// The key of the candidate with hash `hash` (`sha256:<hex>`).
pub fn key_of(hash: &str) -> Result<String> {
    let hex = hash.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Refused {
            message: format!("`{hash}` is not a candidate hash"),
            help: "a rollout job names its candidate as `sha256:<64 hex digits>`".to_owned(),
        });
    }
    Ok(format!("{CANDIDATES_PREFIX}{hex}.json"))
}

impl CandidateFiles {
    /// Reads the files the CLI's `--org`, `--languages` and `--templates` name.
    pub fn read(
        org: Option<&Path>,
        languages: Option<&Path>,
        templates: Option<&Path>,
    ) -> Result<CandidateFiles> {
        let org = org.map(|p| std::fs::read_to_string(p).map_err(|e| Error::read(p, e)));
        let languages = languages.map(|d| files_of(d, d, ".yaml", false));
        let templates = templates
            .map(|d| -> Result<(String, BTreeMap<String, String>)> {
                let name = d
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "templates".to_owned());
                Ok((name, files_of(d, d, ".tera", true)?))
            })
            .transpose()?;
        Ok(CandidateFiles {
            schema: CANDIDATE_SCHEMA.to_owned(),
            org: org.transpose()?,
            languages: languages.transpose()?,
            templates,
        })
    }

    /// The stored object's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(self).map_err(|e| {
            Error::other(format!("cannot write the candidate: {e}"), "this is a bug")
        })?;
        if bytes.len() > MAX_CANDIDATE_BYTES {
            return Err(Error::other(
                format!(
                    "the candidate set is {} bytes; at most {MAX_CANDIDATE_BYTES} are stored",
                    bytes.len()
                ),
                "keep only templates and language files that differ from the embedded ones",
            ));
        }
        Ok(bytes)
    }

    /// Parses a stored object.
    pub fn parse(bytes: &[u8], url: &str) -> Result<CandidateFiles> {
        let refused = |why: String| Error::Refused {
            message: format!("the candidate `{url}` {why}"),
            help: "run the rollout again from the platform's checkout: it stores the candidate"
                .to_owned(),
        };
        if bytes.len() > MAX_CANDIDATE_BYTES {
            return Err(refused(format!(
                "is larger than {MAX_CANDIDATE_BYTES} bytes"
            )));
        }
        let c: CandidateFiles =
            serde_json::from_slice(bytes).map_err(|e| refused(format!("is not valid ({e})")))?;
        if c.schema != CANDIDATE_SCHEMA {
            return Err(refused(format!("has schema `{}`", c.schema)));
        }
        Ok(c)
    }

    /// Writes the files under `dir` and loads them as [`Inputs`], with the loaders the CLI
    /// uses.
    pub fn load(&self, dir: &Path) -> Result<Inputs> {
        let write = |path: &Path, text: &str| -> Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::read(parent, e))?;
            }
            std::fs::write(path, text).map_err(|e| Error::read(path, e))
        };
        let org = match &self.org {
            Some(text) => {
                let p = dir.join("org.yaml");
                write(&p, text)?;
                Some(p)
            }
            None => None,
        };
        let languages = match &self.languages {
            Some(files) => {
                let d = dir.join("languages");
                std::fs::create_dir_all(&d).map_err(|e| Error::read(&d, e))?;
                for (name, text) in files {
                    write(&d.join(safe_relative(name)?), text)?;
                }
                Some(d)
            }
            None => None,
        };
        let templates = match &self.templates {
            Some((name, files)) => {
                let d = dir.join("templates").join(safe_relative(name)?);
                std::fs::create_dir_all(&d).map_err(|e| Error::read(&d, e))?;
                for (path, text) in files {
                    write(&d.join(safe_relative(path)?), text)?;
                }
                Some(d)
            }
            None => None,
        };
        Inputs::load(org.as_deref(), languages.as_deref(), templates.as_deref())
    }
}

/// A stored relative path, refused unless it stays inside the directory it is written to.
fn safe_relative(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    let plain = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(p.to_path_buf())
    } else {
        Err(Error::Refused {
            message: format!("the candidate names the file `{path}`, outside its directory"),
            help: "a candidate holds plain relative paths only".to_owned(),
        })
    }
}

/// Every regular file ending in `ext` under `dir` (recursively when `deep`), by its path
/// relative to `root`; hidden entries are skipped, as the loaders skip them.
fn files_of(root: &Path, dir: &Path, ext: &str, deep: bool) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
    for entry in entries {
        let p = entry.map_err(|e| Error::read(dir, e))?.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().is_none_or(|n| n.starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            if deep {
                out.extend(files_of(root, &p, ext, deep)?);
            }
        } else if name.as_deref().is_some_and(|n| n.ends_with(ext)) {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).map_err(|e| Error::read(&p, e))?;
            out.insert(rel, text);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_round_trips_through_its_object_and_keeps_its_hash() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let src = tempfile::tempdir().expect("tmp");
        let t = src.path().join("org-templates/buildspec");
        std::fs::create_dir_all(&t).expect("mkdir");
        let gate =
            std::fs::read_to_string(root.join("templates/buildspec/gate.yml.tera")).expect("gate");
        std::fs::write(t.join("gate.yml.tera"), format!("{gate}\n")).expect("write");
        let org = root.join("examples/org.yaml");
        let dir = src.path().join("org-templates");
        let files = CandidateFiles::read(Some(&org), None, Some(&dir)).expect("read");
        let direct = Inputs::load(Some(&org), None, Some(&dir)).expect("inputs");
        let bytes = files.to_bytes().expect("bytes");
        let back = CandidateFiles::parse(&bytes, "s3://b/k").expect("parse");
        let out = tempfile::tempdir().expect("tmp");
        let loaded = back.load(out.path()).expect("load");
        assert_eq!(
            super::super::rollout::candidate_hash(&loaded),
            super::super::rollout::candidate_hash(&direct)
        );
        assert_eq!(loaded.templates.set_name(), direct.templates.set_name());
        // Paths that leave their directory are refused before anything is written.
        let mut evil = back.clone();
        evil.templates = Some((
            "t".to_owned(),
            [("../../escape.tera".to_owned(), String::new())].into(),
        ));
        let e = evil.load(out.path()).expect_err("escape");
        assert!(e.to_string().contains("outside its directory"), "{e}");
        assert!(key_of("sha256:12").is_err());
        assert!(key_of(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
