//! Gates proven by running them: sample repositories under `tests/gates/<language>/` run with
//! `pipeforge run`, as CodeBuild would run the rendered buildspecs. `good/` passes every gate;
//! every other directory is laid over `good/` and must fail one gate, for the reason asserted
//! on the gate's output.
//!
//! The tools come from PyPI, npm, the Go module proxy and Maven Central, pinned as the catalog
//! pins them, and are cached under `target/` (pip, npm, Go and Maven caches in
//! `target/tmp/gate-cache`, the binaries `ci/gate-tools` builds in `target/gate-tools`). Tools
//! the buildspecs download from GitHub releases are given with `--tool`: gitleaks,
//! golangci-lint and OSV-Scanner built from their Go modules at the pinned version (OSV-Scanner
//! with the Go 1.27 toolchain the go command takes from the Go module proxy), and a stand-in for
//! syft (`tests/gates/standins/syft`, named in the output). Node.js 22 and Maven 3.9 (the build
//! image's) come from npm and Maven Central when the machine's are older.
//!
//! The advisory databases are offline fixtures: `tests/gates/advisory-server.py` answers npm
//! audit and the OSV query API pip-audit uses, `tests/gates/go-vulndb/` is a Go vulnerability
//! database govulncheck reads from a `file://` URL, and `tests/gates/osv-db/` holds the
//! advisories the Java tests zip into an offline OSV database for OSV-Scanner
//! (`PF_OSV_LOCAL_DB`). Each holds one abridged real advisory.
//!
//! .NET's gates are not run: the machine has no .NET SDK and no NuGet.
//!
//! These tests install tools and take minutes: they are `#[ignore]`d, and `ci/test` runs them
//! (`cargo test --test gates -- --ignored`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("sample dir").flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// A committed repository: `good/` of the language, then each overlay laid over it.
fn sample(lang: &str, overlays: &[&str]) -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    let base = Path::new(ROOT).join("tests/gates").join(lang);
    for dir in std::iter::once("good").chain(overlays.iter().copied()) {
        copy_tree(&base.join(dir), t.path());
    }
    git(t.path(), &["init", "-q", "-b", "main"]);
    git(t.path(), &["add", "-A"]);
    git(t.path(), &["commit", "-qm", "feat: first version"]);
    t
}

/// `ci/gate-tools`' binaries, built once.
fn tools() -> &'static BTreeMap<String, String> {
    static TOOLS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new(Path::new(ROOT).join("ci/gate-tools"))
            .output()
            .expect("ci/gate-tools");
        assert!(
            out.status.success(),
            "ci/gate-tools: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

struct Run {
    code: i32,
    output: String,
}

impl Run {
    fn passed(&self) -> &Self {
        assert_eq!(self.code, 0, "the gate should pass:\n{}", self.output);
        self
    }

    fn failed(&self) -> &Self {
        assert_eq!(self.code, 1, "the gate should fail:\n{}", self.output);
        self
    }

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
}

/// `pipeforge run GATE --repo REPO` with the tool stand-ins, the shared caches and `extra`.
fn run(repo: &Path, gate: &str, extra: &[&str]) -> Run {
    let tools = tools();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gate-cache");
    let work = tempfile::tempdir().expect("tempdir");
    let mut path = std::env::var("PATH").unwrap_or_default();
    for runtime in ["node", "maven"] {
        if let Some(dir) = tools.get(runtime) {
            path = format!("{dir}:{path}");
        }
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeforge"));
    cmd.args(["run", gate, "--repo"])
        .arg(repo)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--work-dir")
        .arg(work.path())
        .env("PATH", path)
        .env_remove("PIPEFORGE_RUN_CACHE");
    for name in ["gitleaks", "syft", "golangci-lint", "osv-scanner"] {
        if let Some(p) = tools.get(name) {
            cmd.arg("--tool").arg(format!("{name}={p}"));
        }
    }
    cmd.args(extra);
    let out = cmd.output().expect("pipeforge run");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        output,
    }
}

/// The good samples that run every CI gate in one `pipeforge run all`: the longest tests.
/// libtest starts tests in the order of their names, so this module's name starts them first
/// and the shorter tests fill the other threads around them.
mod all_gates {
    use super::*;

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_python_good_sample_passes_every_ci_gate() {
        let repo = sample("python", &[]);
        let advisories = AdvisoryServer::start();
        let osv = format!("PF_OSV_API_URL={}v1/query", advisories.url);
        run(repo.path(), "all", &["--env", &osv])
            .passed()
            .says("No known vulnerabilities found")
            .says("report coverage (COBERTURAXML): line coverage 100.00%")
            .says("report junit (JUNITXML): 2 tests: 2 passed, 0 failed")
            .says("no leaks found")
            .says("   iac-scan         passed");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_node_good_sample_passes_every_ci_gate_and_builds_its_version() {
        let repo = sample("node", &[]);
        let advisories = AdvisoryServer::start();
        let registry = format!("PF_NPM_AUDIT_REGISTRY={}", advisories.url);
        run(repo.path(), "all", &["--env", &registry])
            .passed()
            .says("found 0 vulnerabilities")
            .says("report coverage (COBERTURAXML): line coverage 100.00%")
            .says("report junit (JUNITXML): 2 tests: 2 passed, 0 failed");
        run(repo.path(), "build", &[])
            .passed()
            .says("1 package(s) carry version 0.1.0")
            .says("step `publish` not run locally");
    }
}

mod python {
    use super::*;

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_lint_error_fails_lint() {
        let repo = sample("python", &["lint-error"]);
        run(repo.path(), "lint", &[]).failed().says("F401");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn noqa_and_the_projects_ruff_settings_cannot_silence_the_org_rules() {
        let repo = sample("python", &["noqa"]);
        run(repo.path(), "lint", &[])
            .failed()
            .says("F401")
            .says("--isolated --ignore-noqa");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn eval_fails_static_analysis() {
        let repo = sample("python", &["sast"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("B307");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn nosec_and_a_bandit_file_cannot_hide_a_finding() {
        let repo = sample("python", &["nosec"]);
        assert!(repo.path().join(".bandit").is_file());
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("B307");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_committed_secret_fails_security_scan_even_when_removed_later() {
        let repo = sample("python", &["secret"]);
        git(repo.path(), &["rm", "-q", "settings.py"]);
        git(repo.path(), &["commit", "-qm", "fix: remove settings"]);
        run(repo.path(), "security-scan", &[])
            .failed()
            .says("leaks found")
            .never_says("q8Zr5v2Lw9XbT4nKs7Yd1Hc6Jm3Pf0Ge8Ua2Vo5R");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn gitleaks_allowlists_ignore_files_and_allow_comments_of_the_repository_are_ignored() {
        let repo = sample("python", &["secret-allowlisted"]);
        run(repo.path(), "security-scan", &[])
            .failed()
            .says("leaks found")
            .says("gitleaks` is ")
            .never_says("AKIAZ3MSJV4WX7LQ2P5N");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_failing_test_fails_the_test_gate() {
        let repo = sample("python", &["failing-test"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("test_an_empty_basket_costs_one_cent")
            .says("3 tests: 2 passed, 1 failed");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn coverage_below_the_floor_fails_the_test_gate() {
        let repo = sample("python", &["below-floor"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("is below the required 80%");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn tests_do_not_count_as_covered_code_and_a_coveragerc_cannot_omit_code() {
        let repo = sample("python", &["inflated"]);
        assert!(repo.path().join(".coveragerc").is_file());
        run(repo.path(), "test", &[])
            .failed()
            .says("src/shop/discount.py")
            .never_says("tests/test_many.py  ")
            .says("is below the required 80%");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_module_no_test_imports_counts_as_uncovered() {
        let repo = sample("python", &["untested-module"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("src/shop/report.py")
            .says("is below the required 80%");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_second_release_builds_the_next_version_from_the_tag_the_pipeline_pushed() {
        let released = released_once("python");
        run(released.repo.path(), "build", &[])
            .passed()
            .says("version 0.1.1: ")
            .says("replaced with 0.1.1")
            .says("2 package(s) carry version 0.1.1")
            .says("dist/gate_sample_py-0.1.1-py3-none-any.whl")
            .says("exported VERSION=0.1.1")
            .says("syft STAND-IN")
            .says("; aws s3 cp dist/ \"s3://$PF_ARTIFACT_BUCKET/")
            .never_says("git push");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_vulnerable_dependency_fails_security_scan_whatever_pip_audit_variables_say() {
        let repo = sample("python", &["vulnerable-dependency"]);
        // The manifest points pip-audit elsewhere with its own variables: the options the gate
        // passes win, and the organisation's source (here the offline fixture) answers.
        let text = std::fs::read_to_string(repo.path().join("pipeline.yml")).expect("read");
        assert!(text.contains("PIP_AUDIT_OSV_URL"), "{text}");
        let advisories = AdvisoryServer::start();
        let osv = format!("PF_OSV_API_URL={}v1/query", advisories.url);
        run(repo.path(), "security-scan", &["--env", &osv])
            .failed()
            .says("Found 1 known vulnerability in 1 package")
            .says("idna 3.6     PYSEC-2024-60 3.7");
    }
}

/// A sample repository whose first release the pipeline tagged (`v0.1.0`, pushed to its
/// remote from the pipeline's own clone), with one more commit; the checkout never fetched
/// the tag.
struct Released {
    repo: tempfile::TempDir,
    _remote: tempfile::TempDir,
}

fn released_once(lang: &str) -> Released {
    let repo = sample(lang, &[]);
    let remote = tempfile::tempdir().expect("tempdir");
    git(remote.path(), &["init", "-q", "--bare", "-b", "main"]);
    let url = remote.path().display().to_string();
    git(repo.path(), &["remote", "add", "origin", &url]);
    git(repo.path(), &["push", "-q", "origin", "main"]);
    let ci = tempfile::tempdir().expect("tempdir");
    git(ci.path(), &["clone", "-q", &url, "."]);
    git(ci.path(), &["tag", "-a", "-m", "release 0.1.0", "v0.1.0"]);
    git(ci.path(), &["push", "-q", "origin", "v0.1.0"]);
    std::fs::write(repo.path().join("CHANGES.md"), "- totals\n").expect("write");
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-qm", "fix: document totals"]);
    assert_eq!(git(repo.path(), &["tag", "--list"]), "");
    Released {
        repo,
        _remote: remote,
    }
}

/// The offline advisory source for `npm audit` and pip-audit (`tests/gates/advisory-server.py`);
/// it stops when this value is dropped (its stdin closes).
struct AdvisoryServer {
    child: std::process::Child,
    url: String,
}

impl AdvisoryServer {
    fn start() -> AdvisoryServer {
        use std::io::BufRead as _;
        let mut child = Command::new("python3")
            .arg(Path::new(ROOT).join("tests/gates/advisory-server.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port: u16 = line.trim().parse().expect("a port");
        AdvisoryServer {
            child,
            url: format!("http://127.0.0.1:{port}/"),
        }
    }
}

impl Drop for AdvisoryServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

mod node {
    use super::*;

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn eslint_disable_comments_cannot_switch_the_org_rules_off() {
        let repo = sample("node", &["sast-disabled"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("no-eval")
            .says("--no-inline-config");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_module_no_test_imports_counts_even_when_the_c8_settings_exclude_it() {
        let repo = sample("node", &["untested-module"]);
        assert!(repo.path().join(".c8rc.json").is_file());
        run(repo.path(), "test", &[])
            .failed()
            .says("report.js")
            .says("is below the required 80%");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_vulnerable_dependency_fails_security_scan_whatever_the_npmrc_and_the_manifest_say() {
        let repo = sample("node", &["vulnerable-dependency"]);
        assert!(repo.path().join(".npmrc").is_file());
        let manifest = std::fs::read_to_string(repo.path().join("pipeline.yml")).expect("read");
        assert!(manifest.contains("NPM_CONFIG_REGISTRY"), "{manifest}");
        let advisories = AdvisoryServer::start();
        let registry = format!("PF_NPM_AUDIT_REGISTRY={}", advisories.url);
        run(repo.path(), "security-scan", &["--env", &registry])
            .failed()
            .says("left-pad")
            .says("1 high severity vulnerability");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_lint_error_fails_lint() {
        let repo = sample("node", &["lint-error"]);
        run(repo.path(), "lint", &[])
            .failed()
            .says("'unusedCount' is assigned a value but never used");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_failing_test_fails_the_test_gate() {
        let repo = sample("node", &["failing-test"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("an empty basket costs one cent")
            .says("3 tests: 2 passed, 1 failed");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_committed_secret_fails_security_scan() {
        let repo = sample("node", &["secret"]);
        let advisories = AdvisoryServer::start();
        let registry = format!("PF_NPM_AUDIT_REGISTRY={}", advisories.url);
        run(repo.path(), "security-scan", &["--env", &registry])
            .failed()
            .says("found 0 vulnerabilities")
            .says("leaks found")
            .never_says("q8Zr5v2Lw9XbT4nKs7Yd1Hc6Jm3Pf0Ge8Ua2Vo5R");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_runtime_the_machine_lacks_is_a_clear_error() {
        let repo = sample("node", &[]);
        let manifest = repo.path().join("pipeline.yml");
        let text = std::fs::read_to_string(&manifest).expect("read");
        std::fs::write(
            &manifest,
            text.replace("runtime: \"22\"", "runtime: \"26\""),
        )
        .expect("write");
        git(repo.path(), &["commit", "-qam", "chore: node 26"]);
        let r = run(repo.path(), "lint", &[]);
        assert_eq!(r.code, 2, "{}", r.output);
        r.says("the gate needs Node.js 26 (`phases.install.runtime-versions.nodejs`), but")
            .says("help: install Node.js 26");
    }
}

mod go {
    use super::*;

    /// `PF_GO_VULNDB` for the offline vulnerability database `tests/gates/go-vulndb`.
    fn vulndb() -> String {
        format!("PF_GO_VULNDB=file://{ROOT}/tests/gates/go-vulndb")
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_good_sample_passes_every_gate() {
        let repo = sample("go", &[]);
        for gate in ["lint", "static-analysis"] {
            run(repo.path(), gate, &[]).passed();
        }
        run(repo.path(), "security-scan", &["--env", &vulndb()])
            .passed()
            .says("all modules verified")
            .says("No vulnerabilities found.")
            .says("no leaks found");
        run(repo.path(), "test", &[])
            .passed()
            .says("report junit (JUNITXML): 2 tests: 2 passed, 0 failed");
        run(repo.path(), "build", &[])
            .passed()
            .says("artifacts: dist/gatesample")
            .says("exported VERSION=0.1.0");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_vulnerable_dependency_the_code_calls_fails_security_scan() {
        let repo = sample("go", &["vulnerable-dependency"]);
        run(repo.path(), "security-scan", &["--env", &vulndb()])
            .failed()
            .says("GO-2022-1059")
            .says("lang.Preferred calls language.ParseAcceptLanguage");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn nolint_and_the_projects_golangci_settings_cannot_hide_a_vet_error() {
        let repo = sample("go", &["nolint"]);
        run(repo.path(), "lint", &[])
            .failed()
            .says("$ go vet ./...")
            .says("Printf format %d has arg \"total\" of wrong type string");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_nosec_comment_cannot_hide_a_gosec_finding() {
        let repo = sample("go", &["nosec"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("G204");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_package_no_test_exercises_counts_as_uncovered() {
        let repo = sample("go", &["untested-package"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("is below the required 80%");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_failing_test_fails_the_test_gate() {
        let repo = sample("go", &["failing-test"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("TestEmptyBasketCostsOneCent")
            .says("3 tests: 2 passed, 1 failed");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_committed_secret_fails_security_scan() {
        let repo = sample("go", &["secret"]);
        run(repo.path(), "security-scan", &["--env", &vulndb()])
            .failed()
            .says("leaks found")
            .never_says("q8Zr5v2Lw9XbT4nKs7Yd1Hc6Jm3Pf0Ge8Ua2Vo5R");
    }
}

/// Java with Maven.
mod java {
    use super::*;

    /// OSV's offline database for Maven, made from `tests/gates/osv-db/Maven/*.json` in the
    /// layout OSV-Scanner reads (`osv-scalibr/Maven/all.zip`), and the `PF_OSV_LOCAL_DB`
    /// setting that points the gate at it. The directory goes when the value is dropped.
    struct OsvDatabase {
        dir: tempfile::TempDir,
    }

    impl OsvDatabase {
        fn new() -> OsvDatabase {
            use std::io::Write as _;
            // The name says what it is in the scan's output ("Loaded Maven local db from …").
            let dir = tempfile::Builder::new()
                .prefix("osv-db-fixture-")
                .tempdir()
                .expect("tempdir");
            let maven = dir.path().join("osv-scalibr/Maven");
            std::fs::create_dir_all(&maven).expect("mkdir");
            let file = std::fs::File::create(maven.join("all.zip")).expect("create");
            let mut zip = zip::ZipWriter::new(file);
            let fixtures = Path::new(ROOT).join("tests/gates/osv-db/Maven");
            let mut names: Vec<_> = std::fs::read_dir(&fixtures)
                .expect("fixtures")
                .flatten()
                .map(|e| e.path())
                .collect();
            names.sort();
            for path in names {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                zip.start_file(name, zip::write::SimpleFileOptions::default())
                    .expect("zip entry");
                zip.write_all(&std::fs::read(&path).expect("read"))
                    .expect("zip write");
            }
            zip.finish().expect("zip");
            OsvDatabase { dir }
        }

        fn env(&self) -> String {
            format!("PF_OSV_LOCAL_DB={}", self.dir.path().display())
        }
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_good_sample_passes_security_scan() {
        let repo = sample("java", &[]);
        let db = OsvDatabase::new();
        run(repo.path(), "security-scan", &["--env", &db.env()])
            .passed()
            .says("`osv-scanner` is ")
            .says("Loaded Maven local db from ")
            .says("/osv-db-fixture-")
            .says("No issues found")
            .says("no leaks found");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_vulnerable_dependency_fails_security_scan() {
        let repo = sample("java", &["vulnerable-dependency"]);
        let db = OsvDatabase::new();
        run(repo.path(), "security-scan", &["--env", &db.env()])
            .failed()
            .says("GHSA-jfh8-c2jp-5v3q")
            .says("org.apache.logging.log4j:log4j-core")
            .says("2.14.1");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn an_exception_with_its_reason_is_the_teams() {
        let repo = sample("java", &["vulnerable-dependency", "exception-with-reason"]);
        let db = OsvDatabase::new();
        run(repo.path(), "security-scan", &["--env", &db.env()])
            .passed()
            .says("filtered out because: JNDI lookups are disabled");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn an_exception_without_a_reason_fails_security_scan() {
        let repo = sample(
            "java",
            &["vulnerable-dependency", "exception-without-reason"],
        );
        let db = OsvDatabase::new();
        run(repo.path(), "security-scan", &["--env", &db.env()])
            .failed()
            .says("(no reason given)")
            .says("an exception in osv-scanner.toml has no reason");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn package_overrides_behind_a_symbolic_link_are_found() {
        // `git grep` would read the link's target name; OSV-Scanner reads the file it names.
        let repo = sample("java", &["vulnerable-dependency"]);
        let rules = Path::new(ROOT).join("tests/gates/java/ignore-everything/osv-scanner.toml");
        std::fs::create_dir_all(repo.path().join("docs")).expect("mkdir");
        std::fs::copy(&rules, repo.path().join("docs/exceptions.txt")).expect("copy");
        std::os::unix::fs::symlink("docs/exceptions.txt", repo.path().join("osv-scanner.toml"))
            .expect("symlink");
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-qm", "chore: exceptions"]);
        let db = OsvDatabase::new();
        run(repo.path(), "security-scan", &["--env", &db.env()])
            .failed()
            .says("osv-scanner.toml switches whole packages off");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn package_overrides_cannot_switch_the_scan_off_however_they_are_spelt() {
        for overlay in ["ignore-everything", "ignore-lowercase", "ignore-escaped"] {
            let repo = sample("java", &["vulnerable-dependency", overlay]);
            let db = OsvDatabase::new();
            run(repo.path(), "security-scan", &["--env", &db.env()])
                .failed()
                .says("osv-scanner.toml switches whole packages off")
                .never_says("No issues found");
        }
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_good_sample_passes_lint_static_analysis_test_and_builds_the_pipelines_version() {
        let repo = sample("java", &[]);
        run(repo.path(), "lint", &[])
            .passed()
            .says("You have 0 Checkstyle violations.");
        run(repo.path(), "static-analysis", &[])
            .passed()
            .says("BugInstance size is 0");
        run(repo.path(), "test", &[])
            .passed()
            .says("report coverage (JACOCOXML): line coverage 100.00%")
            .says("report junit (JUNITXML): 2 tests: 2 passed, 0 failed");
        // The POM says 0.0.0-SNAPSHOT; the gate builds the pipeline's version.
        run(repo.path(), "build", &[])
            .passed()
            .says("dist/gate-sample-java-0.1.0.jar")
            .says("1 package(s) carry version 0.1.0")
            .says("exported VERSION=0.1.0")
            .says("; aws s3 cp dist/ \"s3://$PF_ARTIFACT_BUCKET/")
            .says("tagged `v0.1.0`");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_style_error_fails_lint() {
        let repo = sample("java", &["lint-error"]);
        run(repo.path(), "lint", &[])
            .failed()
            .says("Labels.java:[3,17] (imports) AvoidStarImport")
            .says("You have 9 Checkstyle violations.");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn command_injection_fails_static_analysis() {
        let repo = sample("java", &["sast"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("COMMAND_INJECTION");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn suppress_fb_warnings_cannot_hide_a_finding() {
        let repo = sample("java", &["suppressed"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("Archive.java:17:  @SuppressFBWarnings")
            .says("suppressing security findings is not allowed");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_projects_own_suppress_warnings_annotation_cannot_hide_a_finding() {
        // SpotBugs honours any annotation kept in the class files whose name ends in
        // `SuppressWarnings`; the source never says `SuppressFBWarnings`.
        let repo = sample("java", &["suppressed-by-name"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("Lcom/example/shop/SuppressWarnings;")
            .says("an annotation SpotBugs takes as a suppression");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_pom_cannot_configure_spotbugs() {
        let repo = sample("java", &["pom-spotbugs"]);
        run(repo.path(), "static-analysis", &[])
            .failed()
            .says("the POM configures spotbugs-maven-plugin");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_failing_test_fails_the_test_gate() {
        let repo = sample("java", &["failing-test"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("anEmptyBasketCostsOneCent")
            .says("Tests run: 3, Failures: 1");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_pom_cannot_ignore_failing_tests() {
        let repo = sample("java", &["failures-ignored"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("<testFailureIgnore>true</testFailureIgnore>")
            .says("the build is set to ignore failing tests");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_class_no_test_exercises_counts_as_uncovered() {
        let repo = sample("java", &["untested-class"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("is below the required 80%");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn a_pom_cannot_exclude_classes_from_coverage() {
        let repo = sample("java", &["jacoco-excluded"]);
        run(repo.path(), "test", &[])
            .failed()
            .says("the POM configures jacoco-maven-plugin");
    }

    #[test]
    #[ignore = "installs tools; ci/test runs it"]
    fn the_second_release_builds_the_next_version_from_the_tag_the_pipeline_pushed() {
        let released = released_once("java");
        run(released.repo.path(), "build", &[])
            .passed()
            .says("version 0.1.1: ")
            .says("dist/gate-sample-java-0.1.1.jar")
            .says("1 package(s) carry version 0.1.1")
            .says("exported VERSION=0.1.1");
    }
}
