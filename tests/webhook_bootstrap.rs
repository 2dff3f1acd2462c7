//! Golden tests of `pipeforge bootstrap`: every case under `golden-bootstrap/` renders exactly its
//! `expected/` files (`UPDATE_GOLDEN=1 cargo test --test webhook_bootstrap` rewrites them), and
//! the command writes and checks them through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use pipeforge::SourceFile;
use pipeforge::render::Templates;
use pretty_assertions::assert_eq;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn update_requested() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") && std::env::var_os("CI").is_none()
}

fn org_of(case: &Path) -> pipeforge::org::OrgPolicy {
    let file = case.join("org.yaml");
    if file.is_file() {
        let text = std::fs::read_to_string(&file).expect("org.yaml");
        pipeforge::org::load(&SourceFile::new(file.display().to_string(), text)).expect("valid org")
    } else {
        pipeforge::org::embedded().expect("embedded org")
    }
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("golden-bootstrap"))
        .expect("golden-bootstrap")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn every_case_renders_its_expected_stacks() {
    let cases = cases();
    assert!(cases.len() >= 2, "{cases:?}");
    for case in cases {
        let out = pipeforge::webhook::bootstrap::render(
            &org_of(&case),
            Templates::embedded().expect("templates"),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let expected = case.join("expected");
        let names: Vec<&str> = out.iter().map(|(p, _)| p).collect();
        let org = org_of(&case);
        let mut want = vec!["target.json".to_owned()];
        want.extend(
            org.org
                .tooling_accounts
                .iter()
                .map(|t| format!("tooling-{}.json", t.account)),
        );
        want.push("tooling.json".to_owned());
        assert_eq!(names, want);
        for (name, bytes) in out.iter() {
            let path = expected.join(name);
            let text = std::str::from_utf8(bytes).expect("utf-8");
            if update_requested() {
                std::fs::create_dir_all(&expected).expect("mkdir");
                std::fs::write(&path, text).expect("write");
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!(
                    "missing {} (UPDATE_GOLDEN=1 cargo test --test webhook_bootstrap)",
                    path.display()
                )
            });
            assert_eq!(
                want,
                text,
                "{} (UPDATE_GOLDEN=1 rewrites it)",
                path.display()
            );
        }
    }
}

#[test]
fn the_command_writes_then_checks_the_stacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bootstrap");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pipeforge"))
            .current_dir(root())
            .args(["--color", "never", "bootstrap", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .expect("run pipeforge")
    };
    let first = run(&[]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let written = std::fs::read_to_string(out.join("tooling.json")).expect("tooling.json");
    let golden =
        std::fs::read_to_string(root().join("golden-bootstrap/default/expected/tooling.json"))
            .expect("golden");
    assert_eq!(written, golden);
    assert_eq!(run(&["--check"]).status.code(), Some(0));
    std::fs::write(out.join("target.json"), "{}\n").expect("edit");
    let changed = run(&["--check"]);
    assert_eq!(changed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&changed.stdout).contains("+++ b//target.json")
            || String::from_utf8_lossy(&changed.stdout).contains("target.json")
    );
}
