//! Tests of the stacks pass: shapes under hostile values, deploy order, metadata, cross-region
//! stores, execution-role policies, and overrides that try to weaken a stack.

use std::collections::BTreeMap;

use super::*;
use crate::catalog::Catalog;
use crate::plan::StackKind;
use crate::probe;
use crate::render::JSON_HEADER;
use serde_json::Value as Json;

const MANIFEST: &str = r#"
version: 1
name: stack-app
team: core
language: python
deploy: {template: infra/app.yml, parameters: {Level: info}}
environments:
  - {name: dev, account: "111111111111"}
  - {name: prod, account: "222222222222", region: eu-west-1}
notifications: {email: [a@example.com]}
"#;

fn org() -> OrgPolicy {
    crate::org::embedded().expect("org")
}

fn render_with(templates: &Templates, manifest: &str, org: &OrgPolicy) -> Result<crate::Bundle> {
    crate::generate_with(
        &SourceFile::new("pipeline.yml", manifest),
        org,
        Catalog::embedded().expect("catalog"),
        templates,
    )
}

fn render(manifest: &str) -> Result<crate::Bundle> {
    render_with(Templates::embedded().expect("templates"), manifest, &org())
}

/// A template set with one embedded stack template edited.
fn overridden(name: &str, edit: impl FnOnce(&str) -> String) -> (tempfile::TempDir, Templates) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = crate::assets::get(&format!("templates/{name}")).expect("embedded template");
    let edited = edit(src);
    assert_ne!(edited, src, "the edit did not apply; update the test");
    let path = dir.path().join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, edited).expect("write");
    let t = Templates::load(Some(dir.path())).expect("templates");
    (dir, t)
}

fn stack(b: &crate::Bundle, file: &str) -> Json {
    serde_json::from_str(b.outputs.text(file).expect("stack file")).expect("json")
}

/// Resource ids, policy statement counts, and every key path of a template.
fn shape(t: &Json) -> (Vec<String>, Vec<(String, usize)>, Vec<String>) {
    fn keys(v: &Json, path: &str, out: &mut Vec<String>) {
        match v {
            Json::Object(m) => {
                for (k, x) in m {
                    let p = format!("{path}.{k}");
                    out.push(p.clone());
                    keys(x, &p, out);
                }
            }
            Json::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    keys(x, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    fn statements(v: &Json, path: &str, out: &mut Vec<(String, usize)>) {
        match v {
            Json::Object(m) => {
                if let Some(Json::Array(s)) = m.get("Statement") {
                    out.push((path.to_owned(), s.len()));
                }
                for (k, x) in m {
                    statements(x, &format!("{path}.{k}"), out);
                }
            }
            Json::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    statements(x, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let resources = t["Resources"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut st = Vec::new();
    statements(t, "", &mut st);
    let mut k = Vec::new();
    keys(t, "", &mut k);
    (resources, st, k)
}

#[test]
fn hostile_values_in_free_text_fields_add_no_resource_statement_or_property() {
    let org = org();
    let catalog = Catalog::embedded().expect("catalog");
    let templates = Templates::embedded().expect("templates");
    let benign: Vec<String> = (0..probe::SLOTS)
        .map(|i| probe::fit_to_slot(i, &probe::placeholder(i)))
        .collect();
    let base = probe::render_probe("python", &benign, &org, catalog, templates).expect("benign");
    let stack_files: Vec<&str> = base
        .iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("stacks/"))
        .collect();
    assert!(stack_files.len() >= 3, "{stack_files:?}");
    let mut accepted = 0;
    for h in probe::HOSTILE {
        let values: Vec<String> = (0..probe::SLOTS)
            .map(|i| probe::fit_to_slot(i, h))
            .collect();
        let Ok(out) = probe::render_probe("python", &values, &org, catalog, templates) else {
            continue;
        };
        accepted += 1;
        for f in &stack_files {
            let a: Json = serde_json::from_str(base.text(f).expect("benign")).expect("json");
            let b: Json = serde_json::from_str(out.text(f).expect("hostile")).expect("json");
            assert_eq!(shape(&a), shape(&b), "{f} changed shape with {h:?}");
        }
    }
    assert!(
        accepted * 2 >= probe::HOSTILE.len(),
        "only {accepted} hostile manifests rendered"
    );
}

#[test]
fn stacks_are_listed_in_deploy_order_with_their_sizes() {
    let b = render(MANIFEST).expect("renders");
    let kinds: Vec<(StackKind, &str)> = b
        .plan
        .stacks
        .iter()
        .map(|s| (s.kind, s.file.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (StackKind::Target, "stacks/target-dev.json"),
            (StackKind::Target, "stacks/target-prod.json"),
            (StackKind::Region, "stacks/region-eu-west-1.json"),
            (StackKind::Pipeline, "stacks/pipeline.json"),
        ]
    );
    let plan: Json =
        serde_json::from_str(b.outputs.text("plan.json").expect("plan")).expect("json");
    for s in plan["stacks"].as_array().expect("stacks") {
        let file = s["file"].as_str().expect("file");
        assert_eq!(
            s["template_bytes"].as_u64(),
            b.outputs.get(file).map(|x| x.len() as u64),
            "{file}"
        );
    }
    let files: Vec<&str> = b.outputs.iter().map(|(p, _)| p).collect();
    assert_eq!(files.last(), Some(&"stacks/target-prod.json"));
    assert!(files.contains(&"plan.json"));
}

#[test]
fn every_stack_says_what_it_is_and_nothing_volatile() {
    let b = render(MANIFEST).expect("renders");
    for s in &b.plan.stacks {
        let t = stack(&b, &s.file);
        let d = t["Description"].as_str().expect("description");
        assert!(d.starts_with(JSON_HEADER), "{d}");
        let meta = t["Metadata"]["pipeforge"].as_object().expect("metadata");
        assert_eq!(meta["pipeline"], "stack-app");
        assert_eq!(meta["team"], "core");
        assert_eq!(meta["template_set"], "pipeforge");
        // No tool version, no timestamp: only content changes a stack.
        let keys: Vec<&str> = meta.keys().map(String::as_str).collect();
        let extra = match s.kind {
            StackKind::Target => Some("environment"),
            StackKind::Region => Some("region"),
            StackKind::Pipeline => None,
        };
        let mut want = vec!["pipeline", "stack", "team", "template_set"];
        want.extend(extra);
        want.sort_unstable();
        assert_eq!(keys, want, "{}", s.file);
    }
    // A second render is byte for byte the same.
    assert_eq!(render(MANIFEST).expect("renders").outputs, b.outputs);
}

#[test]
fn cross_region_environments_get_an_artifact_store_per_region() {
    let b = render(MANIFEST).expect("renders");
    let p = stack(&b, "stacks/pipeline.json");
    let stores = p["Resources"]["Pipeline"]["Properties"]["ArtifactStores"]
        .as_array()
        .expect("stores");
    let regions: Vec<&str> = stores.iter().filter_map(|s| s["Region"].as_str()).collect();
    assert_eq!(regions, ["us-east-1", "eu-west-1"]);
    assert_eq!(
        stores[1]["ArtifactStore"]["Location"],
        "pf-stack-app-123456789012-eu-west-1"
    );
    let r = stack(&b, "stacks/region-eu-west-1.json");
    assert_eq!(
        r["Resources"]["ArtifactBucket"]["Properties"]["BucketName"],
        "pf-stack-app-123456789012-eu-west-1"
    );
    // The prod deploy role reads the eu-west-1 store.
    let t = stack(&b, "stacks/target-prod.json");
    let read = &t["Resources"]["DeployPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert!(
        read["Resource"]["Fn::Sub"]
            .as_str()
            .is_some_and(|s| s.contains("pf-stack-app-123456789012-eu-west-1/*"))
    );
    // One region: a single store, no region stack.
    let single = MANIFEST.replace(", region: eu-west-1", "");
    let b = render(&single).expect("renders");
    let p = stack(&b, "stacks/pipeline.json");
    assert!(p["Resources"]["Pipeline"]["Properties"]["ArtifactStore"].is_object());
    assert!(b.outputs.get("stacks/region-eu-west-1.json").is_none());
}

#[test]
fn the_execution_role_needs_an_org_policy() {
    let org_text = crate::assets::get("examples/org.yaml").expect("org");
    let none = org_text
        .replace(
            "execution_policy_arns: [pipeforge-app-deploy]",
            "execution_policy_arns: []",
        )
        .replace(
            "permissions_boundary: pipeforge-app-boundary",
            "permissions_boundary: null",
        );
    let org = crate::org::load(&SourceFile::new("org.yaml", none)).expect("org");
    let e =
        render_with(Templates::embedded().expect("t"), MANIFEST, &org).expect_err("no permissions");
    let text = e.to_string();
    assert!(text.contains("deploy.execution_policy_arns"), "{text}");
    assert!(text.contains("never grants AdministratorAccess"), "{text}");
    let boundary_only = org_text.replace(
        "execution_policy_arns: [pipeforge-app-deploy]",
        "execution_policy_arns: []",
    );
    let org = crate::org::load(&SourceFile::new("org.yaml", boundary_only)).expect("org");
    let e =
        render_with(Templates::embedded().expect("t"), MANIFEST, &org).expect_err("boundary only");
    assert!(e.to_string().contains("only limits permissions"), "{e}");
}

#[test]
fn execution_role_policies_are_arns_or_names_in_the_target_account() {
    let b = render(MANIFEST).expect("renders");
    let t = stack(&b, "stacks/target-dev.json");
    let role = &t["Resources"]["ExecutionRole"]["Properties"];
    assert_eq!(
        role["ManagedPolicyArns"][0]["Fn::Sub"],
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/pipeforge-app-deploy"
    );
    assert_eq!(
        role["PermissionsBoundary"]["Fn::Sub"],
        "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy/pipeforge-app-boundary"
    );
    // Production only: the guard policy.
    assert!(t["Resources"].get("ProductionDeployGuard").is_none());
    let p = stack(&b, "stacks/target-prod.json");
    assert!(p["Resources"].get("ProductionDeployGuard").is_some());
}

#[test]
fn an_override_that_privileges_every_build_is_refused() {
    let (_dir, t) = overridden(TEMPLATE_PIPELINE_STACK, |s| {
        s.replace(
            "PrivilegedMode: {{ g.privileged | safe }}",
            "PrivilegedMode: true",
        )
    });
    let e = render_with(&t, MANIFEST, &org()).expect_err("policy");
    let text = e.to_string();
    assert!(text.contains("`codebuild-locked-down`"), "{text}");
    assert!(text.contains("stacks/pipeline.json"), "{text}");
}

#[test]
fn an_override_that_swaps_a_gate_buildspec_is_refused() {
    let (_dir, t) = overridden(TEMPLATE_PIPELINE_STACK, |s| {
        s.replace(
            "BuildSpec: {{ g.buildspec }}",
            "BuildSpec: \"version: 0.2\"",
        )
    });
    let e = render_with(&t, MANIFEST, &org()).expect_err("structure");
    assert!(e.to_string().contains("with the buildspec of gate"), "{e}");
}

#[test]
fn an_override_that_skips_the_prod_approval_is_refused() {
    let (_dir, t) = overridden(TEMPLATE_PIPELINE_STACK, |s| {
        s.replace(
            "{%- elif a.kind == \"approval\" %}",
            "{%- elif a.kind == \"approval-disabled\" %}",
        )
    });
    // The action still exists by name but is no longer an approval.
    let e = render_with(&t, MANIFEST, &org()).expect_err("policy");
    assert!(
        e.to_string().contains("`approval-before-production`"),
        "{e}"
    );
}

#[test]
fn an_override_cannot_drop_the_approval_of_a_production_account() {
    // `live` is production only because its account is: the plan still has its approval, and
    // both the structure check and the policy rule hold the rendered pipeline to it.
    let manifest = MANIFEST.replace(
        "  - {name: prod, account: \"222222222222\", region: eu-west-1}",
        "  - {name: live, account: \"333333333333\", region: eu-west-1}",
    );
    let b = render(&manifest).expect("renders");
    let live = b
        .plan
        .stages
        .iter()
        .find(|s| s.name == "Deploy-live")
        .expect("stage");
    let names: Vec<&str> = live.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["CreateChangeSet", "Approve", "ExecuteChangeSet"]);
    let (_dir, t) = overridden(TEMPLATE_PIPELINE_STACK, |s| {
        s.replace(
            "{%- elif a.kind == \"approval\" %}",
            "{%- elif a.kind == \"approval-disabled\" %}",
        )
    });
    let e = render_with(&t, &manifest, &org()).expect_err("policy");
    assert!(
        e.to_string().contains("`approval-before-production`"),
        "{e}"
    );
    assert!(e.to_string().contains("Deploy-live"), "{e}");
}

#[test]
fn template_errors_point_at_the_rendered_line() {
    let (_dir, t) = overridden(TEMPLATE_TARGET_STACK, |s| {
        s.replace("  DeployRole:\n", "  DeployRole:\n   bad: [\n")
    });
    let e = render_with(&t, MANIFEST, &org()).expect_err("yaml");
    let text = e.to_string();
    assert!(text.contains("stacks/target-dev.json"), "{text}");
    assert!(text.contains("not valid YAML"), "{text}");
    assert!(text.contains("at line"), "{text}");
    let (_dir, t) = overridden(TEMPLATE_TARGET_STACK, |s| {
        s.replace("AWS: !Sub", "AWS: !Evil")
    });
    let e = render_with(&t, MANIFEST, &org()).expect_err("tag");
    assert!(e.to_string().contains("unknown YAML tag `!Evil`"), "{e}");
}

#[test]
fn the_override_directory_names_the_template_set() {
    let (dir, t) = overridden(TEMPLATE_REGION_STACK, |s| {
        s.replace("expire-old-versions", "expire-versions")
    });
    let b = render_with(&t, MANIFEST, &org()).expect("renders");
    let r = stack(&b, "stacks/region-eu-west-1.json");
    let name = dir
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        r["Metadata"]["pipeforge"]["template_set"],
        format!("pipeforge+{name}")
    );
}

#[test]
fn gates_get_only_the_secrets_and_publish_rights_they_use() {
    let m = MANIFEST.replace(
        "deploy:",
        "build:\n  secrets: {DB: \"ssm:/core/db\", API: \"secretsmanager:core/api:key\"}\nartifact: {kind: codeartifact, repository: core-pkgs}\ndeploy:",
    );
    let b = render(&m).expect("renders");
    let p = stack(&b, "stacks/pipeline.json");
    let sids = |id: &str| -> BTreeMap<String, Json> {
        p["Resources"][id]["Properties"]["PolicyDocument"]["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .map(|s| (s["Sid"].as_str().unwrap_or("").to_owned(), s.clone()))
            .collect()
    };
    let lint = sids("GateLintPolicy");
    assert!(!lint.contains_key("ReadNamedParameters"));
    assert!(!lint.contains_key("WriteArtifacts"));
    assert!(!lint.contains_key("CodeArtifactPublish"));
    let test = sids("GateTestPolicy");
    assert_eq!(
        test["ReadNamedParameters"]["Resource"][0]["Fn::Sub"],
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/core/db"
    );
    assert_eq!(
        test["ReadNamedSecrets"]["Resource"][0]["Fn::Sub"],
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:core/api-??????"
    );
    assert!(test.contains_key("PublishReports"));
    assert!(!test.contains_key("CodeArtifactPublish"));
    let build = sids("GateBuildPolicy");
    assert!(build.contains_key("WriteArtifacts"));
    assert!(
        build["CodeArtifactPublish"]["Resource"]["Fn::Sub"]
            .as_str()
            .is_some_and(|s| s.ends_with("package/example/core-pkgs/*"))
    );
    assert!(build.contains_key("DownloadPipeforge"));
    assert!(!build.contains_key("EcrPush"));
    assert_eq!(
        p["Resources"]["GateBuildProject"]["Properties"]["Environment"]["PrivilegedMode"],
        false
    );
}

#[test]
fn an_override_that_drops_a_gate_action_from_a_stage_is_refused() {
    // The last gate action of every stage goes; its CodeBuild project stays, unused.
    let (_dir, t) = overridden(TEMPLATE_PIPELINE_STACK, |s| {
        s.replace(
            "{%- for a in stage.actions %}\n            - Name:",
            "{%- for a in stage.actions %}{%- if a.kind != \"gate\" or not loop.last %}\n            - Name:",
        )
        .replace(
            "{%- endif %}\n{%- endif %}\n{%- endfor %}\n{%- endfor %}\n      Tags:",
            "{%- endif %}\n{%- endif %}\n{%- endif %}\n{%- endfor %}\n{%- endfor %}\n      Tags:",
        )
    });
    let Err(e) = render_with(&t, MANIFEST, &org()) else {
        panic!("the override must be refused");
    };
    let text = e.to_string();
    assert!(text.contains("stacks/pipeline.json"), "{text}");
    assert!(text.contains("has actions"), "{text}");
    assert!(text.contains("(name, run order)"), "{text}");
}

#[test]
fn an_override_that_runs_gates_in_parallel_is_refused() {
    let (_dir, t) = overridden(TEMPLATE_PIPELINE_STACK, |s| {
        s.replace(
            "              RunOrder: {{ a.run_order | safe }}",
            "              RunOrder: 1",
        )
    });
    let Err(e) = render_with(&t, MANIFEST, &org()) else {
        panic!("the override must be refused");
    };
    assert!(e.to_string().contains("(name, run order)"), "{e}");
}

#[test]
fn an_override_that_breaks_a_stacks_shape_is_refused() {
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            TEMPLATE_PIPELINE_STACK,
            "AWSTemplateFormatVersion: \"2010-09-09\"",
            "AWSTemplateFormatVersion: \"2010-09-10\"",
            "`AWSTemplateFormatVersion` must be",
        ),
        (
            TEMPLATE_PIPELINE_STACK,
            "Description: {{ header.description }}",
            "Description: \"hand-made pipeline\"",
            "does not start with the pipeforge header",
        ),
        (
            TEMPLATE_PIPELINE_STACK,
            "    pipeline: {{ header.pipeline }}",
            "    pipeline: other-app",
            "`Metadata.pipeforge` must name",
        ),
        (
            TEMPLATE_PIPELINE_STACK,
            "    team: {{ header.team }}",
            "    team: other-team",
            "`Metadata.pipeforge` must name",
        ),
        (
            TEMPLATE_PIPELINE_STACK,
            "    stack: pipeline",
            "    stack: target",
            "`stack: pipeline`",
        ),
        (
            TEMPLATE_TARGET_STACK,
            "    stack: target",
            "    stack: pipeline",
            "`stack: target`",
        ),
    ];
    for (template, from, to, want) in cases {
        let (_dir, t) = overridden(template, |s| s.replacen(from, to, 1));
        let Err(e) = render_with(&t, MANIFEST, &org()) else {
            panic!("{from:?} → {to:?} must be refused");
        };
        assert!(e.to_string().contains(want), "{from:?}: {e}");
    }
}

#[test]
fn an_override_whose_target_stack_lacks_a_role_the_pipeline_uses_is_refused() {
    for (var, role) in [("deploy_role", "deploy"), ("execution_role", "exec")] {
        let (_dir, t) = overridden(TEMPLATE_TARGET_STACK, |s| {
            s.replacen(
                &format!("      RoleName: {{{{ {var} }}}}"),
                &format!("      RoleName: {{{{ {var} ~ \"-renamed\" }}}}"),
                1,
            )
        });
        let Err(e) = render_with(&t, MANIFEST, &org()) else {
            panic!("a target stack without its {role} role must be refused");
        };
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "the stack must create role `pf-stack-app-dev-{role}`"
            )),
            "{text}"
        );
    }
}
