//! End-to-end tests of the `pipeforge` binary: exit codes, messages, files written.
//!
//! Invalid manifests live in `tests/invalid/<case>.yaml` (with an optional
//! `<case>.org.yaml`) next to `<case>.stderr`, the exact expected output of `validate`.
//! `UPDATE_GOLDEN=1 cargo test` rewrites the `.stderr` files and the help snapshots.

use std::path::{Path, PathBuf};
use std::process::Command;

use pretty_assertions::assert_eq;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn update_requested() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") && std::env::var_os("CI").is_none()
}

/// The result of one run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A small builder over the real binary, run from the repository root.
struct Pf {
    cmd: Command,
}

impl Pf {
    fn new(args: &[&str]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeforge"));
        cmd.current_dir(root())
            .env_remove("NO_COLOR")
            .args(["--color", "never"])
            .args(args);
        Pf { cmd }
    }

    fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    fn run(mut self) -> Run {
        let out = self.cmd.output().expect("run pipeforge");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }
}

fn compare_or_update(path: &Path, actual: &str) {
    if update_requested() {
        std::fs::write(path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {} (UPDATE_GOLDEN=1 cargo test creates it)",
            path.display()
        )
    });
    assert_eq!(
        expected,
        actual,
        "snapshot {} (UPDATE_GOLDEN=1 cargo test rewrites it)",
        path.display()
    );
}

#[test]
fn invalid_manifests_report_every_problem_exactly() {
    let dir = root().join("tests/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.to_string_lossy().ends_with(".org.yaml")
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected at least 15 invalid cases, found {}",
        cases.len()
    );
    for case in cases {
        let rel = case
            .strip_prefix(root())
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let org = case.with_extension("org.yaml");
        let mut pf = Pf::new(&["validate"]).arg(&rel);
        if org.is_file() {
            pf = pf
                .arg("--org")
                .arg(org.strip_prefix(root()).expect("under root"));
        }
        let r = pf.run();
        assert_eq!(
            r.code, 2,
            "{rel} must be rejected with exit code 2; stderr:\n{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{rel}: nothing on stdout");
        assert!(
            r.stderr
                .lines()
                .last()
                .is_some_and(|l| l.contains("problem")),
            "{rel}: ends with a count"
        );
        for block in r.stderr.split("\n\n").filter(|b| {
            b.starts_with("error: `")
                || b.starts_with("error: unknown")
                || b.starts_with("error: missing")
        }) {
            assert!(
                block.contains("help: "),
                "{rel}: every diagnostic has a help line:\n{block}"
            );
            assert!(
                block.contains("--> tests/invalid/"),
                "{rel}: every diagnostic has a location:\n{block}"
            );
        }
        compare_or_update(&case.with_extension("stderr"), &r.stderr);
    }
}

#[test]
fn valid_manifest_validates_with_exit_zero() {
    let r = Pf::new(&["validate", "examples/pipeline.yml"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "ok: examples/pipeline.yml (pipeline `orders-api`)\n"
    );
}

#[test]
fn validate_reports_problems_of_several_manifests() {
    let r = Pf::new(&[
        "validate",
        "examples/pipeline.yml",
        "tests/invalid/reserved-tags.yaml",
        "tests/invalid/duplicate-environments.yaml",
    ])
    .run();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--> tests/invalid/reserved-tags.yaml:"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("--> tests/invalid/duplicate-environments.yaml:"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_manifest_is_a_clear_error() {
    let r = Pf::new(&["validate", "nope/pipeline.yml"]).run();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .starts_with("error: cannot read `nope/pipeline.yml`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("help: "), "{}", r.stderr);
}

#[test]
fn oversized_manifests_are_refused_before_they_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("pipeline.yml");
    std::fs::write(&big, vec![b'#'; 300 * 1024]).expect("write");
    let r = Pf::new(&["validate"]).arg(&big).run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("over the limit of 262144 bytes"),
        "{}",
        r.stderr
    );
}

#[test]
fn publish_deploy_and_diff_never_read_a_manifest_through_a_symlink_or_outside_the_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "token: FAKE-SECRET-93b1\n").expect("write");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    std::os::unix::fs::symlink(&secret, repo.join("pipeline.yml")).expect("symlink");
    // No AWS call may happen: the manifest is refused first.
    let pf = |args: &[&str]| {
        let mut p = Pf::new(args).arg("--repo").arg(&repo);
        p.cmd
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        p
    };
    for command in ["publish", "deploy", "diff"] {
        let r = pf(&[command]).run();
        assert_eq!(r.code, 2, "{command}: {}", r.stderr);
        assert!(r.stderr.contains("is a symlink"), "{command}: {}", r.stderr);
        assert!(!r.stderr.contains("FAKE-SECRET"), "{command}: {}", r.stderr);
        let r = pf(&[command]).arg(&secret).run();
        assert_eq!(r.code, 2, "{command}: {}", r.stderr);
        assert!(
            r.stderr.contains("is not inside the repository"),
            "{command}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("FAKE-SECRET"), "{command}: {}", r.stderr);
    }
}

#[test]
fn help_is_stable() {
    for (args, snap) in [
        (vec!["--help"], "help.txt"),
        (vec!["render", "--help"], "help-render.txt"),
        (
            vec!["templates", "check", "--help"],
            "help-templates-check.txt",
        ),
    ] {
        let r = Pf::new(&args).run();
        assert_eq!(r.code, 0, "{}", r.stderr);
        compare_or_update(&root().join("tests/snapshots").join(snap), &r.stdout);
    }
}

#[test]
fn render_writes_then_check_detects_drift_and_stale_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let r = Pf::new(&["render", "examples/pipeline.yml", "--out"])
        .arg(&out)
        .run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bundle = out.join("orders-api");
    for f in [
        "plan.json",
        "buildspecs/lint.yml",
        "buildspecs/static-analysis.yml",
        "buildspecs/security-scan.yml",
        "buildspecs/test.yml",
        "buildspecs/build.yml",
    ] {
        let text =
            std::fs::read_to_string(bundle.join(f)).unwrap_or_else(|_| panic!("{f} written"));
        assert!(
            text.starts_with("# generated by pipeforge — do not edit")
                || text.contains("\"//\": \"generated by pipeforge — do not edit\""),
            "{f} has the header"
        );
    }

    let r = Pf::new(&["render", "examples/pipeline.yml", "--check", "--out"])
        .arg(&out)
        .run();
    assert_eq!(r.code, 0, "up to date: {}", r.stderr);
    assert!(r.stdout.is_empty());

    std::fs::write(bundle.join("buildspecs/lint.yml"), "tampered\n").expect("tamper");
    std::fs::write(bundle.join("buildspecs/old.yml"), "stale\n").expect("stale");
    let r = Pf::new(&["render", "examples/pipeline.yml", "--check", "--out"])
        .arg(&out)
        .run();
    assert_eq!(r.code, 1, "drift: {}", r.stderr);
    assert!(
        r.stdout.contains("--- a/orders-api/buildspecs/lint.yml") && r.stdout.contains("-tampered"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("--- a/orders-api/buildspecs/old.yml") && r.stdout.contains("-stale"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("buildspecs/lint.yml")).expect("read"),
        "tampered\n",
        "--check writes nothing"
    );

    let r = Pf::new(&["render", "examples/pipeline.yml", "--out"])
        .arg(&out)
        .run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !bundle.join("buildspecs/old.yml").exists(),
        "stale files are removed"
    );
    let r = Pf::new(&["render", "examples/pipeline.yml", "--check", "--out"])
        .arg(&out)
        .run();
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn render_writes_nothing_when_any_manifest_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let r = Pf::new(&[
        "render",
        "examples/pipeline.yml",
        "tests/invalid/reserved-tags.yaml",
        "--out",
    ])
    .arg(&out)
    .run();
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("reserved"), "{}", r.stderr);
    assert!(!out.exists(), "nothing written");
}

#[test]
fn render_rejects_two_manifests_with_one_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("copy.yml");
    std::fs::copy(root().join("examples/pipeline.yml"), &copy).expect("copy");
    let r = Pf::new(&["render", "examples/pipeline.yml"])
        .arg(&copy)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .run();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("two manifests are both named `orders-api`"),
        "{}",
        r.stderr
    );
}

/// Two pipelines whose names join into the same stack and role names, and a pipeline whose
/// application stack is another pipeline's, are refused when validated or rendered together,
/// naming both; each alone is valid.
#[test]
fn manifests_whose_stacks_collide_are_refused_together() {
    for m in ["orders", "orders-api", "billing"] {
        let r = Pf::new(&["validate"])
            .arg(format!("tests/collisions/{m}.yaml"))
            .run();
        assert_eq!(r.code, 0, "{m} alone: {}", r.stderr);
    }
    let r = Pf::new(&[
        "validate",
        "tests/collisions/orders.yaml",
        "tests/collisions/orders-api.yaml",
        "tests/collisions/billing.yaml",
    ])
    .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    for needle in [
        "pipelines `orders-api` and `orders` (tests/collisions/orders.yaml) would both use stack `pf-orders-api-dev-target` in account 111111111111 (us-east-1): the target stack of environment `dev` of `orders-api`, the target stack of environment `api-dev` of `orders`",
        "would both use role `pf-orders-api-dev-deploy` in account 111111111111",
        "would both use role `pf-orders-api-dev-exec` in account 111111111111",
        "pipelines `billing` and `orders-api` (tests/collisions/orders-api.yaml) would both use stack `orders-api` in account 111111111111 (us-east-1): the application stack of environment `dev` of `billing`, the application stack of environment `dev` of `orders-api`",
        "--> tests/collisions/billing.yaml",
        "help: rename a pipeline, an environment or `deploy.stack_name`",
    ] {
        assert!(r.stderr.contains(needle), "{needle}:\n{}", r.stderr);
    }
    assert!(
        !r.stderr.contains("ok: tests/collisions/billing.yaml")
            && r.stderr.contains("ok: tests/collisions/orders.yaml"),
        "{}",
        r.stderr
    );
    // `render` refuses them the same way and writes nothing.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let r = Pf::new(&[
        "render",
        "tests/collisions/orders.yaml",
        "tests/collisions/orders-api.yaml",
        "--out",
    ])
    .arg(&out)
    .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("would both use stack `pf-orders-api-dev-target`"),
        "{}",
        r.stderr
    );
    assert!(!out.exists(), "nothing written");
    // The environment name of the other spelling (`orders` + `api-target` against `orders-api`
    // + `target`) is refused on its own.
    let r = Pf::new(&["validate", "tests/invalid/stack-names.yaml"]).run();
    assert!(
        r.stderr
            .contains("environment name `api-target` holds `target`"),
        "{}",
        r.stderr
    );
}

#[test]
fn preview_prints_buildspecs_and_one_gate() {
    let r = Pf::new(&["preview", "examples/pipeline.yml"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    // One buildspec per gate of the embedded org policy (five mandatory gates and `iac-scan`).
    assert_eq!(
        r.stdout
            .matches("# generated by pipeforge — do not edit")
            .count(),
        6
    );
    assert!(r.stdout.contains("# file: buildspecs/security-scan.yml"));

    let r = Pf::new(&["preview", "examples/pipeline.yml", "--gate", "test"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with(
            "# generated by pipeforge — do not edit\n# pipeline orders-api, gate test"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("DB_PASSWORD: \"/payments/db/password\""));

    let r = Pf::new(&["preview", "examples/pipeline.yml", "--gate", "tset"]).run();
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no gate `tset`") && r.stderr.contains("did you mean `test`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn explain_names_the_origin_of_values() {
    let r = Pf::new(&["explain", "examples/pipeline.yml"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("coverage_min      85% [team]"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("mandatory [org]"), "{}", r.stdout);
    assert!(r.stdout.contains("approval required [org]"), "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "4. stack pf-orders-api-pipeline     account 123456789012 us-east-1      stacks/pipeline.json"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("source   s3://example-pipeforge-source/payments/orders-api/source.zip"),
        "{}",
        r.stdout
    );
    let r = Pf::new(&["explain", "examples/pipeline.yml", "--format", "json"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["coverage_min"]["from"], "team");
    assert_eq!(v["environments"][2]["approval"]["from"], "org");
}

#[test]
fn committed_schema_is_current() {
    let r = Pf::new(&["schema"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    compare_or_update(&root().join("schema/pipeline.schema.json"), &r.stdout);
    let r = Pf::new(&["schema", "--kind", "org"]).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    compare_or_update(&root().join("schema/org.schema.json"), &r.stdout);
}

#[test]
fn coverage_check_passes_fails_and_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = tmp.path().join("coverage.xml");
    std::fs::write(&report, r#"<?xml version="1.0"?><coverage lines-valid="10" lines-covered="8" line-rate="0.8"></coverage>"#).expect("write");
    let r = Pf::new(&["coverage", "check", "--min", "80"])
        .arg(&report)
        .run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("80.00% (8 of 10 lines) meets the required 80%"),
        "{}",
        r.stdout
    );
    let r = Pf::new(&["coverage", "check", "--min", "85"])
        .arg(&report)
        .run();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("is below the required 85%"),
        "{}",
        r.stderr
    );
    std::fs::write(&report, "<testsuites/>").expect("write");
    let r = Pf::new(&["coverage", "check", "--min", "85"])
        .arg(&report)
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown coverage report format"),
        "{}",
        r.stderr
    );
}

#[test]
fn templates_check_reports_changes_errors_and_unsafe_templates() {
    let r = Pf::new(&["templates", "check"]).run();
    assert_eq!(
        r.code, 0,
        "embedded templates match the goldens: {}",
        r.stderr
    );
    assert!(r.stderr.contains("injection probe passed"), "{}", r.stderr);

    let embedded = std::fs::read_to_string(root().join("templates/buildspec/gate.yml.tera"))
        .expect("template");
    let tmp = tempfile::tempdir().expect("tempdir");
    let write = |text: &str| {
        let d = tmp.path().join("buildspec");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("gate.yml.tera"), text).expect("write");
    };

    // A harmless edit: every golden buildspec changes, exit 1 with a diff.
    write(&embedded.replace(
        "  shell: bash\n",
        "  shell: bash\n  git-credential-helper: yes\n",
    ));
    let r = Pf::new(&["templates", "check", "--templates"])
        .arg(tmp.path())
        .run();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains("+  git-credential-helper: yes"),
        "{}",
        r.stdout
    );

    // Unescaped commands: the injection probe must catch it.
    write(&embedded.replace("      - {{ c }}", "      - {{ c | safe }}"));
    let r = Pf::new(&["templates", "check", "--templates"])
        .arg(tmp.path())
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("injection probe"), "{}", r.stderr);

    // A template that drops the gate's enforcement.
    write(&embedded.replace("    on-failure: ABORT\n", "    on-failure: CONTINUE\n"));
    let r = Pf::new(&["templates", "check", "--templates"])
        .arg(tmp.path())
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("on-failure: CONTINUE"), "{}", r.stderr);

    // A syntax error names the template.
    write("{% for x in %}");
    let r = Pf::new(&["templates", "check", "--templates"])
        .arg(tmp.path())
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("gate.yml.tera"), "{}", r.stderr);
}

#[test]
fn colour_only_when_asked() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipeforge"));
    let out = cmd
        .current_dir(root())
        .args([
            "--color",
            "always",
            "validate",
            "tests/invalid/reserved-tags.yaml",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.contains("\x1b[1;31merror:"), "{stderr}");
    let r = Pf::new(&["validate", "tests/invalid/reserved-tags.yaml"]).run();
    assert!(!r.stderr.contains('\x1b'), "no colour with --color never");
}

/// A manifest in a temporary directory: `examples/pipeline.yml` with its environments replaced.
fn manifest_with(dir: &Path, environments: &str, team: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/pipeline.yml")).expect("example");
    let start = text.find("environments:\n").expect("environments");
    let end = text.find("notifications:\n").expect("notifications");
    let edited = format!(
        "{}environments:\n{environments}{}",
        &text[..start],
        &text[end..]
    )
    .replace("team: payments\n", &format!("team: {team}\n"));
    let path = dir.join("pipeline.yml");
    std::fs::write(&path, edited).expect("write manifest");
    path
}

/// Reproduction: an environment named `live` on the production account deployed without an
/// approval, because only environment names made deploys production.
#[test]
fn a_production_account_gets_an_approval_whatever_the_environment_is_called() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = manifest_with(
        tmp.path(),
        "  - {name: live, account: \"333333333333\"}\n",
        "payments",
    );
    let out = tmp.path().join("out");
    let r = Pf::new(&["render", "--out"]).arg(&out).arg(&m).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stack: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("orders-api/stacks/pipeline.json")).expect("stack"),
    )
    .expect("json");
    let stage = stack["Resources"]["Pipeline"]["Properties"]["Stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["Name"] == "Deploy-live")
        .expect("Deploy-live")
        .clone();
    let actions: Vec<(&str, &str, i64)> = stage["Actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            (
                a["Name"].as_str().unwrap_or_default(),
                a["ActionTypeId"]["Category"].as_str().unwrap_or_default(),
                a["RunOrder"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("CreateChangeSet", "Deploy", 1),
            ("Approve", "Approval", 2),
            ("ExecuteChangeSet", "Deploy", 3)
        ]
    );
    let r = Pf::new(&["explain"]).arg(&m).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "live         account 333333333333 (shared-prod) region us-east-1 [org]  production [org: account]  approval required [org]"
        ),
        "{}",
        r.stdout
    );
}

/// Reproduction: a team could name any account id, including another team's production
/// account.
#[test]
fn only_the_organisations_accounts_open_to_the_team_can_be_used() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (environments, team, want) in [
        (
            "  - {name: dev, account: \"999999999999\"}\n",
            "payments",
            "account `999999999999` is not one of the organisation's accounts",
        ),
        (
            "  - {name: prod, account: \"444444444444\"}\n",
            "billing",
            "account `444444444444` (`payments-prod`) is not open to team `billing`",
        ),
    ] {
        let m = manifest_with(tmp.path(), environments, team);
        let r = Pf::new(&["validate"]).arg(&m).run();
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{}", r.stderr);
        assert!(
            r.stderr.contains("`environments[0].account`"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&format!(
                "team `{team}` may deploy to `111111111111` (`shared-dev`)"
            )),
            "the help lists the accounts the team may use: {}",
            r.stderr
        );
        let out = tmp.path().join("out");
        let r = Pf::new(&["render", "--out"]).arg(&out).arg(&m).run();
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(!out.exists(), "nothing rendered");
    }
    let m = manifest_with(
        tmp.path(),
        "  - {name: prod, account: \"444444444444\"}\n",
        "payments",
    );
    let r = Pf::new(&["validate"]).arg(&m).run();
    assert_eq!(r.code, 0, "the team's own account: {}", r.stderr);
}

/// Reproduction: two environments on one account and region rendered fine, and the staging
/// stage, without an approval, replaced what production ran.
#[test]
fn two_environments_on_one_account_and_region_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = manifest_with(
        tmp.path(),
        "  - {name: staging, account: \"333333333333\", region: eu-west-1}\n  \
         - {name: prod, account: \"333333333333\", region: eu-west-1}\n",
        "payments",
    );
    let r = Pf::new(&["render", "--out"])
        .arg(tmp.path().join("out"))
        .arg(&m)
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "`environments[1].account`: environment `prod` deploys to the same account and region as `staging`"
        ),
        "{}",
        r.stderr
    );
}

/// Older org policies (no `accounts`, no `teams`) keep working, with a loud warning.
#[test]
fn older_policies_are_warned_about_in_validate_and_explain() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(root().join("examples/org.yaml")).expect("org");
    let cut = text
        .find("\n# Every account a pipeline may deploy to")
        .expect("accounts section");
    let org = tmp.path().join("org.yaml");
    std::fs::write(&org, &text[..=cut]).expect("write org");
    let m = manifest_with(
        tmp.path(),
        "  - {name: live, account: \"999999999999\"}\n",
        "billing",
    );
    for command in ["validate", "explain"] {
        let r = Pf::new(&[command, "--org"]).arg(&org).arg(&m).run();
        assert_eq!(r.code, 0, "{command}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("lists no `accounts`: manifests may deploy to any account id"),
            "{command}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains(
                "lists no `teams`: a pipeline of any team may be deployed from any repository"
            ),
            "{command}: {}",
            r.stderr
        );
    }
    // The embedded policy lists both: no warning.
    let r = Pf::new(&["validate", "examples/pipeline.yml"]).run();
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

/// A template override that drops a permission the deploys need is refused, naming the role and
/// the permission (the IAM sufficiency check runs on the stacks the override renders).
#[test]
fn templates_check_runs_the_iam_check_on_overrides() {
    let embedded = std::fs::read_to_string(root().join("templates/bootstrap/tooling.yml.tera"))
        .expect("template");
    let line = "                  - kms:UntagResource\n                  - kms:UpdateAlias\n";
    assert!(embedded.contains(line));
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("bootstrap");
    std::fs::create_dir_all(&d).expect("dir");
    std::fs::write(
        d.join("tooling.yml.tera"),
        embedded.replace(line, "                  - kms:UpdateAlias\n"),
    )
    .expect("write");
    let r = Pf::new(&["templates", "check", "--templates"])
        .arg(tmp.path())
        .run();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("failed: IAM check of python-full")
            && r.stderr.contains("cannot `kms:UntagResource`"),
        "{}",
        r.stderr
    );
}

/// With Checkov, the findings an override adds are listed (a key without rotation), and only
/// those; `--fail-on-findings` makes them fail.
#[test]
fn templates_check_lists_the_checkov_findings_an_override_adds() {
    let venv = std::process::Command::new(root().join("ci/checkov-scan"))
        .arg("--venv")
        .output()
        .expect("ci/checkov-scan --venv");
    assert!(
        venv.status.success(),
        "{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let checkov = PathBuf::from(String::from_utf8_lossy(&venv.stdout).trim()).join("bin/checkov");
    let golden = tempfile::tempdir().expect("tempdir");
    let case = golden.path().join("python-minimal");
    std::fs::create_dir_all(&case).expect("dir");
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(root().join("golden/python-minimal/."))
        .arg(&case)
        .status()
        .expect("cp");
    assert!(copy.success());
    let embedded = std::fs::read_to_string(root().join("templates/stacks/pipeline.yml.tera"))
        .expect("template");
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("stacks");
    std::fs::create_dir_all(&d).expect("dir");
    // The pipeline role may write any object: Checkov's CKV_AWS_111 (write access without
    // constraints), which pipeforge's own rules leave to reviewers.
    let anchor = "          - Sid: NotifyApprovers\n";
    assert!(embedded.contains(anchor));
    let extra = "          - Sid: WriteAnything\n            Effect: Allow\n            Action: s3:PutObject\n            Resource: \"*\"\n";
    std::fs::write(
        d.join("pipeline.yml.tera"),
        embedded.replacen(anchor, &format!("{extra}{anchor}"), 1),
    )
    .expect("write");
    let run = |extra: &[&str]| {
        let mut pf = Pf::new(&["templates", "check", "--templates"])
            .arg(tmp.path())
            .arg("--golden")
            .arg(golden.path())
            .arg("--checkov")
            .arg(&checkov);
        for a in extra {
            pf = pf.arg(a);
        }
        pf.run()
    };
    let r = run(&[]);
    let findings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("new Checkov finding:"))
        .collect();
    assert_eq!(findings.len(), 1, "{}", r.stderr);
    assert!(
        findings[0]
            .contains("python-minimal/pipeline.json: AWS::IAM::Policy.PipelinePolicy: CKV_AWS_111"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.code, 1,
        "a list, and the changed golden files: {}",
        r.stderr
    );
    let strict = run(&["--fail-on-findings"]);
    assert_eq!(strict.code, 2, "{}", strict.stderr);
    assert!(
        strict.stderr.contains("adds 1 Checkov finding")
            || strict.stderr.contains("add 1 Checkov finding"),
        "{}",
        strict.stderr
    );
}
