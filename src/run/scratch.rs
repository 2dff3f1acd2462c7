//! The scratch directory a local gate run works in: the repository snapshot (exactly what
//! `source.zip` would hold), its own HOME, tool directories and temporary directory, the tool
//! caches, and the runtime check against the local toolchain.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The directories of one run.
#[derive(Clone, Debug)]
pub struct Scratch {
    /// The scratch root.
    pub root: PathBuf,
    /// The source root (`CODEBUILD_SRC_DIR`).
    pub src: PathBuf,
    /// HOME.
    pub home: PathBuf,
    /// Where `/usr/local/bin` of the build image is mapped (first on PATH).
    pub bin: PathBuf,
    /// Where `/tmp` of the build image is mapped (also TMPDIR).
    pub tmp: PathBuf,
    /// npm's global prefix (`npm install --global`).
    pub npm_prefix: PathBuf,
    /// The Python virtual environment, when the language is Python.
    pub venv: PathBuf,
    /// Runner files (shell state).
    pub state: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::other(
        format!("cannot {what} `{}`: {e}", path.display()),
        "check the permissions and free space of the scratch directory (`--work-dir`)",
    )
}

impl Scratch {
    /// Creates a fresh scratch directory under `parent`.
    pub fn create(parent: &Path, gate: &str) -> Result<Scratch> {
        std::fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let root = parent.join(format!("pf-run-{gate}-{}-{nanos:08x}", std::process::id()));
        let s = Scratch {
            src: root.join("src"),
            home: root.join("home"),
            bin: root.join("bin"),
            tmp: root.join("tmp"),
            npm_prefix: root.join("npm-global"),
            venv: root.join("venv"),
            state: root.join("state"),
            root,
        };
        for d in [&s.src, &s.home, &s.bin, &s.tmp, &s.npm_prefix, &s.state] {
            std::fs::create_dir_all(d).map_err(|e| io_err("create", d, e))?;
        }
        Ok(s)
    }

    /// Maps the build image's absolute tool paths into the scratch directory, so that nothing
    /// is installed outside it: `/usr/local/bin` and `/tmp/`.
    pub fn localize(&self, command: &str) -> String {
        let mut out = String::with_capacity(command.len());
        let bytes = command.as_bytes();
        let mut i = 0;
        while i < command.len() {
            let boundary = i == 0
                || matches!(
                    bytes[i - 1],
                    b' ' | b'\'' | b'"' | b'=' | b':' | b'(' | b'\t'
                );
            let rest = &command[i..];
            if boundary && rest.starts_with("/usr/local/bin") {
                out.push_str(&self.bin.display().to_string());
                i += "/usr/local/bin".len();
            } else if boundary && rest.starts_with("/tmp/") {
                out.push_str(&self.tmp.display().to_string());
                out.push('/');
                i += "/tmp/".len();
            } else {
                let ch = rest.chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        out
    }

    /// Writes the snapshot's entries into `src`.
    pub fn extract(&self, zip_bytes: &[u8]) -> Result<usize> {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).map_err(|e| {
            Error::other(
                format!("cannot read the snapshot: {e}"),
                "this is a pipeforge bug",
            )
        })?;
        let mut files = 0;
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(|e| {
                Error::other(
                    format!("cannot read the snapshot: {e}"),
                    "this is a pipeforge bug",
                )
            })?;
            let Some(rel) = entry.enclosed_name() else {
                continue;
            };
            let dest = self.src.join(&rel);
            if entry.is_dir() {
                std::fs::create_dir_all(&dest).map_err(|e| io_err("create", &dest, e))?;
                continue;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
            }
            let mode = entry.unix_mode().unwrap_or(0o644);
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| io_err("read the snapshot entry for", &dest, e))?;
            if mode & 0o170000 == 0o120000 {
                let target = String::from_utf8_lossy(&data).into_owned();
                std::os::unix::fs::symlink(&target, &dest)
                    .map_err(|e| io_err("create the symlink", &dest, e))?;
            } else {
                std::fs::write(&dest, &data).map_err(|e| io_err("write", &dest, e))?;
                if mode & 0o111 != 0 {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
                        .map_err(|e| io_err("chmod", &dest, e))?;
                }
            }
            if !rel.starts_with(".git") {
                files += 1;
            }
        }
        Ok(files)
    }
}

/// Host variables a local run keeps (the toolchain's PATH, locale, proxies, certificates and
/// package mirrors); everything else comes from the buildspec and the runner.
const PASS_ENV: &[&str] = &[
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_CERT",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_FIND_LINKS",
    "GOPROXY",
    "GOSUMDB",
    "GONOSUMDB",
    "GOPRIVATE",
    "GOFLAGS",
    "GOTOOLCHAIN",
    "JAVA_HOME",
];

/// The tool caches shared between runs (`--cache-dir`): pip, npm, Go modules and builds, Maven.
pub fn cache_env(cache: &Path) -> Vec<(String, String)> {
    let p = |s: &str| cache.join(s).display().to_string();
    vec![
        ("PIP_CACHE_DIR".into(), p("pip")),
        ("npm_config_cache".into(), p("npm")),
        ("GOMODCACHE".into(), p("go-mod")),
        ("GOCACHE".into(), p("go-build")),
        (
            "MAVEN_OPTS".into(),
            format!("-Dmaven.repo.local={}", p("m2")),
        ),
        ("NUGET_PACKAGES".into(), p("nuget")),
    ]
}

/// The environment every command starts with: kept host variables, the scratch directories,
/// the caches and CodeBuild's own variables. The buildspec's variables are added by the caller.
pub fn base_env(
    s: &Scratch,
    cache: &Path,
    pass: &[String],
    codebuild: &[(&str, String)],
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for name in PASS_ENV
        .iter()
        .copied()
        .chain(pass.iter().map(String::as_str))
    {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.to_owned(), v);
        }
    }
    let host_path = std::env::var("PATH").unwrap_or_default();
    let mut path = vec![
        s.bin.display().to_string(),
        s.npm_prefix.join("bin").display().to_string(),
    ];
    if s.venv.is_dir() {
        path.insert(0, s.venv.join("bin").display().to_string());
    }
    path.push(host_path);
    env.insert("PATH".into(), path.join(":"));
    env.insert("HOME".into(), s.home.display().to_string());
    env.insert("TMPDIR".into(), s.tmp.display().to_string());
    env.insert(
        "NPM_CONFIG_PREFIX".into(),
        s.npm_prefix.display().to_string(),
    );
    env.insert("GOBIN".into(), s.bin.display().to_string());
    env.insert("GOPATH".into(), s.root.join("go").display().to_string());
    env.insert("DOTNET_CLI_HOME".into(), s.home.display().to_string());
    for (k, v) in cache_env(cache) {
        env.insert(k, v);
    }
    for (k, v) in codebuild {
        env.insert((*k).to_owned(), v.clone());
    }
    env
}

/// What `runtime-versions` asks for, and the local command that answers it.
struct Probe {
    program: &'static str,
    args: &'static [&'static str],
    label: &'static str,
}

fn probe(key: &str) -> Option<Probe> {
    Some(match key {
        "python" => Probe {
            program: "python3",
            args: &["--version"],
            label: "Python",
        },
        "nodejs" => Probe {
            program: "node",
            args: &["--version"],
            label: "Node.js",
        },
        "golang" => Probe {
            program: "go",
            args: &["version"],
            label: "Go",
        },
        "java" => Probe {
            program: "java",
            args: &["-version"],
            label: "Java",
        },
        "dotnet" => Probe {
            program: "dotnet",
            args: &["--version"],
            label: ".NET SDK",
        },
        _ => return None,
    })
}

/// The first `x.y.z`-like number in a version banner (`Python 3.11.7`, `v22.3.0`,
/// `go version go1.26.8 linux/amd64`, `openjdk version "17.0.15"`).
fn banner_version(text: &str) -> Option<String> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let v: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(v.trim_end_matches('.').to_owned())
}

/// True when the local version satisfies the wanted one: `3.11` ≤ `3.11.7`, `22` ≤ `22.3.0`,
/// `corretto17` ≤ `17.0.15` (the vendor is not checked).
fn satisfies(wanted: &str, local: &str) -> bool {
    let digits = wanted.trim_start_matches(|c: char| !c.is_ascii_digit());
    !digits.is_empty() && (local == digits || local.starts_with(&format!("{digits}.")))
}

/// The local toolchain's version for a `runtime-versions` entry, checked. `program` is the
/// executable found, for the Python virtual environment.
pub fn check_runtime(key: &str, wanted: &str, path: &str) -> Result<(String, PathBuf)> {
    let Some(p) = probe(key) else {
        return Err(Error::other(
            format!("`pipeforge run` does not know the runtime `{key}`"),
            "run the gate in CodeBuild, or pass `--ignore-runtime` to run with whatever is on PATH",
        ));
    };
    // Python: prefer `python3.X` when it exists (several Pythons side by side).
    let digits = wanted.trim_start_matches(|c: char| !c.is_ascii_digit());
    let mut candidates = Vec::new();
    if key == "python" {
        candidates.push(format!("python{digits}"));
    }
    candidates.push(p.program.to_owned());
    let mut seen = Vec::new();
    for program in &candidates {
        let Some(exe) = which(program, path) else {
            continue;
        };
        let out = Command::new(&exe)
            .args(p.args)
            .stdin(Stdio::null())
            .output();
        let Ok(out) = out else { continue };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let Some(v) = banner_version(&text) else {
            continue;
        };
        if satisfies(wanted, &v) {
            return Ok((v, exe));
        }
        seen.push(format!("`{}` is {} {v}", exe.display(), p.label));
    }
    let found = if seen.is_empty() {
        format!("no `{}` is on PATH", p.program)
    } else {
        seen.join(", ")
    };
    Err(Error::other(
        format!(
            "the gate needs {} {wanted} (`phases.install.runtime-versions.{key}`), but {found}",
            p.label
        ),
        format!(
            "install {} {wanted} and put it first on PATH, or choose a runtime this machine has with `runtime:` in pipeline.yml; `--ignore-runtime` runs with the local version anyway",
            p.label
        ),
    ))
}

/// The executable `program` on `path`.
pub fn which(program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_versions_match_the_local_banner() {
        assert_eq!(banner_version("Python 3.11.7\n").as_deref(), Some("3.11.7"));
        assert_eq!(banner_version("v22.23.5").as_deref(), Some("22.23.5"));
        assert_eq!(
            banner_version("go version go1.26.8 linux/amd64").as_deref(),
            Some("1.26.8")
        );
        assert_eq!(
            banner_version("openjdk version \"17.0.15\" 2025-04-15").as_deref(),
            Some("17.0.15")
        );
        assert!(satisfies("3.11", "3.11.7"));
        assert!(!satisfies("3.1", "3.11.7"));
        assert!(satisfies("22", "22.23.5"));
        assert!(!satisfies("22", "20.20.2"));
        assert!(satisfies("corretto17", "17.0.15"));
        assert!(satisfies("1.26", "1.26.8"));
        assert!(satisfies("10.0", "10.0.100"));
    }

    #[test]
    fn image_paths_are_mapped_into_the_scratch_directory() {
        let t = tempfile::tempdir().expect("tempdir");
        let s = Scratch::create(t.path(), "lint").expect("scratch");
        let bin = s.bin.display().to_string();
        let tmp = s.tmp.display().to_string();
        assert_eq!(
            s.localize("tar -xzf /tmp/pf-x/a.tgz -C /usr/local/bin gitleaks"),
            format!("tar -xzf {tmp}/pf-x/a.tgz -C {bin} gitleaks")
        );
        assert_eq!(
            s.localize("cp \"$X\" /usr/local/bin/pipeforge"),
            format!("cp \"$X\" {bin}/pipeforge")
        );
        assert_eq!(s.localize("echo a/tmp/b /tmpfile"), "echo a/tmp/b /tmpfile");
    }
}
