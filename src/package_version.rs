//! The build gate's version guarantees: `pipeforge version stamp` writes the pipeline's version
//! into a project whose version is written in a file (Python's `pyproject.toml`), and
//! `pipeforge version verify` checks that every built package carries exactly that version, in
//! the spelling of its ecosystem (PEP 440 for Python, SemVer for npm, Maven and NuGet).
//!
//! Pure functions over text and file names; `main.rs` reads and writes the files.

use crate::error::{Error, Result};

/// A package ecosystem whose file names carry the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ecosystem {
    /// Wheels (`name-1.2.3-py3-none-any.whl`) and sdists (`name-1.2.3.tar.gz`), PEP 440.
    Python,
    /// `npm pack` tarballs (`name-1.2.3.tgz`, `scope-name-1.2.3-rc.1.tgz`).
    Npm,
    /// Jars (`artifact-1.2.3.jar`, `artifact-1.2.3-classifier.jar`).
    Maven,
    /// NuGet packages (`Name.1.2.3.nupkg`).
    Nuget,
}

impl Ecosystem {
    /// Parses the `--ecosystem` value.
    pub fn parse(s: &str) -> Result<Ecosystem> {
        match s {
            "python" => Ok(Ecosystem::Python),
            "npm" => Ok(Ecosystem::Npm),
            "maven" => Ok(Ecosystem::Maven),
            "nuget" => Ok(Ecosystem::Nuget),
            other => Err(Error::other(
                format!("unknown ecosystem `{other}`"),
                "use `python`, `npm`, `maven` or `nuget`",
            )),
        }
    }
}

fn parse_semver(version: &str) -> Result<semver::Version> {
    semver::Version::parse(version.trim()).map_err(|e| {
        Error::other(
            format!("`{version}` is not a semantic version: {e}"),
            "pass the version `pipeforge version next` printed (`$VERSION`)",
        )
    })
}

/// The PEP 440 spelling of a semantic version: `1.2.3-rc.4` → `1.2.3rc4`, `1.2.3-alpha.1` →
/// `1.2.3a1`, `1.2.3-beta.2` → `1.2.3b2`, any other pre-release `X.N` → `1.2.3.devN`; build
/// metadata becomes a local version (`+abc1234`).
pub fn pep440(version: &str) -> Result<String> {
    let v = parse_semver(version)?;
    let mut out = format!("{}.{}.{}", v.major, v.minor, v.patch);
    if !v.pre.is_empty() {
        let pre = v.pre.as_str();
        let (label, number) = match pre.split_once('.') {
            Some((l, n)) => (l, n),
            None => (pre, "0"),
        };
        if !number.chars().all(|c| c.is_ascii_digit()) || number.is_empty() {
            return Err(Error::other(
                format!("pre-release `{pre}` of `{version}` has no PEP 440 spelling"),
                "use a pre-release identifier followed by a number, e.g. `rc.1`",
            ));
        }
        let number = number.trim_start_matches('0');
        let number = if number.is_empty() { "0" } else { number };
        match label.to_ascii_lowercase().as_str() {
            "a" | "alpha" => out.push_str(&format!("a{number}")),
            "b" | "beta" => out.push_str(&format!("b{number}")),
            "rc" | "c" | "pre" | "preview" => out.push_str(&format!("rc{number}")),
            _ => out.push_str(&format!(".dev{number}")),
        }
    }
    if !v.build.is_empty() {
        out.push('+');
        out.push_str(&v.build.as_str().replace('-', "."));
    }
    Ok(out)
}

/// What `stamp_pyproject` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The static version was replaced; the new file text.
    Replaced {
        /// The version that was written before.
        previous: String,
        /// The new file.
        text: String,
    },
    /// The version is dynamic (from git, e.g. setuptools-scm or hatch-vcs): the build gets
    /// it from the environment; nothing to write.
    Dynamic,
}

/// The table header of a TOML line (`[project]` → `project`), if it is one.
fn table_header(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?;
    let inner = inner.split('#').next()?.trim_end();
    let inner = inner.strip_suffix(']')?;
    (!inner.starts_with('[')).then(|| inner.trim())
}

/// Writes `version` (PEP 440) into the `version = "…"` of `[project]` (or of `[tool.poetry]`).
/// A version listed in `[project] dynamic` is left alone; a project with neither is an error
/// that says why.
pub fn stamp_pyproject(text: &str, version: &str) -> Result<Stamp> {
    let want = pep440(version)?;
    let mut table = "";
    let mut dynamic = false;
    let mut hit: Option<(usize, String)> = None;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(t) = table_header(line) {
            table = t;
            continue;
        }
        if table != "project" && table != "tool.poetry" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key == "dynamic" && table == "project" {
            // The array may span lines: read up to its closing bracket.
            let rest: String = std::iter::once(value)
                .chain(lines[i + 1..].iter().copied())
                .collect();
            let array = rest.split(']').next().unwrap_or_default();
            dynamic |= array.contains("\"version\"") || array.contains("'version'");
        }
        if key == "version" && hit.is_none() {
            let v = value.trim();
            let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'');
            let Some(q) = quote else { continue };
            let Some(end) = v[1..].find(q) else { continue };
            hit = Some((i, v[1..=end].to_owned()));
        }
    }
    if dynamic {
        return Ok(Stamp::Dynamic);
    }
    let Some((line_no, previous)) = hit else {
        return Err(Error::other(
            "`pyproject.toml` has neither a static `version` in `[project]` nor `version` in `[project] dynamic`",
            "write `version = \"0.0.0\"` in `[project]` (the build replaces it), or take the version from git with setuptools-scm or hatch-vcs",
        ));
    };
    let line = lines[line_no];
    let replaced = line.replacen(&previous, &want, 1);
    let mut out = String::with_capacity(text.len() + want.len());
    for (i, l) in lines.iter().enumerate() {
        out.push_str(if i == line_no { &replaced } else { l });
    }
    Ok(Stamp::Replaced {
        previous,
        text: out,
    })
}

/// The version a built file's name carries, if the name has the ecosystem's shape.
fn version_in_name(eco: Ecosystem, name: &str) -> Option<String> {
    match eco {
        Ecosystem::Python => {
            if let Some(stem) = name.strip_suffix(".whl") {
                stem.split('-').nth(1).map(str::to_owned)
            } else {
                let stem = name
                    .strip_suffix(".tar.gz")
                    .or_else(|| name.strip_suffix(".zip"))?;
                stem.rsplit_once('-').map(|(_, v)| v.to_owned())
            }
        }
        _ => None,
    }
}

/// Checks that every file carries exactly `version`. `names` are file names (no directories).
pub fn verify(eco: Ecosystem, version: &str, names: &[String]) -> Result<()> {
    let v = parse_semver(version)?;
    if names.is_empty() {
        return Err(Error::other(
            "no package was built",
            "check the package step's output above; the build must leave its packages where the gate expects them",
        ));
    }
    let no_build = {
        let mut v = v.clone();
        v.build = semver::BuildMetadata::EMPTY;
        v.to_string()
    };
    let mut wrong = Vec::new();
    for name in names {
        let ok = match eco {
            Ecosystem::Python => {
                let want = pep440(version)?.to_ascii_lowercase().replace('+', "_");
                version_in_name(eco, name).is_some_and(|got| {
                    let got = got.to_ascii_lowercase().replace('+', "_");
                    got == want || got == want.replace('_', "+")
                })
            }
            Ecosystem::Npm => name.ends_with(&format!("-{no_build}.tgz")),
            Ecosystem::Maven => {
                name.contains(&format!("-{version}.")) || name.contains(&format!("-{version}-"))
            }
            Ecosystem::Nuget => name
                .to_ascii_lowercase()
                .ends_with(&format!(".{}.nupkg", no_build.to_ascii_lowercase())),
        };
        if !ok {
            wrong.push(format!("`{name}`"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::other(
            format!(
                "{} not carry the version `{version}` of this build: {}",
                if wrong.len() == 1 {
                    "this package does"
                } else {
                    "these packages do"
                },
                wrong.join(", ")
            ),
            "the build must package exactly `$VERSION` (a second release would otherwise rebuild, and fail to upload, the first); set the version from the pipeline instead of a file (Python: `version` in `[project]` is replaced, or use `dynamic` with setuptools-scm)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantic_versions_get_their_pep_440_spelling() {
        for (semver, pep) in [
            ("1.2.3", "1.2.3"),
            ("1.2.3-rc.4", "1.2.3rc4"),
            ("0.1.0-alpha.1", "0.1.0a1"),
            ("2.0.0-beta.10", "2.0.0b10"),
            ("1.0.0-snapshot.3", "1.0.0.dev3"),
            ("1.0.0-rc.2+abc1234", "1.0.0rc2+abc1234"),
        ] {
            assert_eq!(pep440(semver).expect(semver), pep, "{semver}");
        }
        assert!(pep440("1.2").is_err());
    }

    #[test]
    fn a_static_project_version_is_replaced_and_nothing_else() {
        let text = "[build-system]\nrequires = [\"setuptools\"]\n\n[project]\nname = \"svc\"\nversion = \"0.1.0\"  # bumped by hand\n\n[tool.x]\nversion = \"9\"\n";
        let Stamp::Replaced {
            previous,
            text: out,
        } = stamp_pyproject(text, "0.2.0-rc.3").expect("stamp")
        else {
            panic!("expected a replacement");
        };
        assert_eq!(previous, "0.1.0");
        assert!(
            out.contains("version = \"0.2.0rc3\"  # bumped by hand\n"),
            "{out}"
        );
        assert!(out.contains("[tool.x]\nversion = \"9\"\n"), "{out}");
        assert_eq!(out.len(), text.len() + 3);
    }

    #[test]
    fn a_dynamic_version_is_left_to_the_build_and_a_missing_one_is_an_error() {
        let dynamic = "[project]\nname = \"svc\"\ndynamic = [\n  \"readme\",\n  \"version\",\n]\n";
        assert_eq!(
            stamp_pyproject(dynamic, "1.0.0").expect("dynamic"),
            Stamp::Dynamic
        );
        let err = stamp_pyproject("[project]\nname = \"svc\"\n", "1.0.0")
            .expect_err("no version")
            .to_string();
        assert!(err.contains("neither a static `version`"), "{err}");
    }

    #[test]
    fn built_files_must_carry_the_version() {
        let py = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
            verify(Ecosystem::Python, "0.2.0-rc.1", &names)
        };
        py(&["svc-0.2.0rc1-py3-none-any.whl", "svc-0.2.0rc1.tar.gz"]).expect("matching");
        let err = py(&["svc-0.1.0-py3-none-any.whl"])
            .expect_err("old version")
            .to_string();
        assert!(err.contains("svc-0.1.0-py3-none-any.whl"), "{err}");
        assert!(py(&[]).is_err(), "nothing built");
        let one = |eco, v: &str, n: &str| verify(eco, v, &[n.to_owned()]).is_ok();
        assert!(one(Ecosystem::Npm, "1.2.3", "svc-1.2.3.tgz"));
        assert!(!one(Ecosystem::Npm, "1.2.4", "svc-1.2.3.tgz"));
        assert!(one(Ecosystem::Maven, "1.2.3", "app-1.2.3.jar"));
        assert!(one(Ecosystem::Maven, "1.2.3", "app-1.2.3-all.jar"));
        assert!(!one(Ecosystem::Maven, "1.2.3", "app-1.2.30.jar"));
        assert!(one(Ecosystem::Nuget, "1.2.3-rc.1", "Svc.1.2.3-rc.1.nupkg"));
        assert!(!one(Ecosystem::Nuget, "1.2.3", "Svc.1.2.2.nupkg"));
    }
}
