//! IAM sufficiency and escalation: every stack of every golden case is deployable by the
//! CloudFormation execution role of its org's bootstrap (handler permissions, on the resources
//! they act on), every role the stacks create has what it needs at run time, removing any one
//! granted action breaks a check, and nothing pipeforge renders can create a role without the
//! boundary or change a boundary.

use std::path::{Path, PathBuf};

use pipeforge::iam::{self, Missing};
use pipeforge::outputs::Outputs;
use pipeforge::render::Templates;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn org_of(case: &Path) -> pipeforge::org::OrgPolicy {
    let file = case.join("org.yaml");
    if file.is_file() {
        let text = std::fs::read_to_string(&file).expect("org.yaml");
        pipeforge::org::load(&pipeforge::SourceFile::new(
            file.display().to_string(),
            text,
        ))
        .expect("valid org")
    } else {
        pipeforge::org::embedded().expect("embedded org")
    }
}

/// Every golden case: its rendered bundle and its org's bootstrap stacks.
fn cases() -> Vec<(String, Outputs, Outputs)> {
    let templates = Templates::embedded().expect("templates");
    let catalog = pipeforge::catalog::Catalog::embedded().expect("catalog");
    pipeforge::golden::cases(&root().join("golden"))
        .expect("cases")
        .into_iter()
        .map(|case| {
            let bundle = pipeforge::golden::render_case(&case, catalog, templates)
                .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
            let bootstrap = pipeforge::webhook::bootstrap::render(&org_of(&case), templates)
                .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
            let name = case
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, bundle, bootstrap)
        })
        .collect()
}

fn all_missing(cases: &[(String, Outputs, Outputs)]) -> Vec<(String, Missing)> {
    let mut out = Vec::new();
    for (name, bundle, bootstrap) in cases {
        for m in iam::deploy_check(bundle, bootstrap).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push((name.clone(), m));
        }
        for m in iam::runtime_check(bundle, bootstrap).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push((name.clone(), m));
        }
    }
    out
}

#[test]
fn every_golden_stack_is_deployable_and_every_role_can_run() {
    let cases = cases();
    assert!(cases.len() >= 10);
    let missing = all_missing(&cases);
    if !missing.is_empty() {
        let mut text = String::new();
        for (case, _, _) in &cases {
            let m: Vec<Missing> = missing
                .iter()
                .filter(|(c, _)| c == case)
                .map(|(_, m)| m.clone())
                .collect();
            if !m.is_empty() {
                text.push_str(&format!("golden case `{case}`:\n{}", iam::report(&m)));
            }
        }
        panic!("{} missing permission(s):\n{text}", missing.len());
    }
}
