//! IAM sufficiency and escalation: every stack of every golden case is deployable by the
//! CloudFormation execution role of its org's bootstrap (handler permissions, on the resources
//! they act on), every role the stacks create has what it needs at run time, removing any one
//! granted action breaks a check, and nothing pipeforge renders can create a role without the
//! boundary or change a boundary.

use std::path::{Path, PathBuf};

use pipeforge::iam::eval::{Context, Decision, Request, RolePolicies};
use pipeforge::iam::resolve::{Env, Template};
use pipeforge::iam::{self, Missing};
use pipeforge::outputs::Outputs;
use pipeforge::render::Templates;
use serde_json::Value as Json;

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
    pipeforge::golden::cases(&root().join("golden"))
        .expect("cases")
        .iter()
        .map(|case| {
            let name = case
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let (bundle, bootstrap) = render(case);
            (name, bundle, bootstrap)
        })
        .collect()
}

/// One golden case (`golden/<name>`): its rendered bundle and its org's bootstrap stacks.
fn case(name: &str) -> (Outputs, Outputs) {
    render(&root().join("golden").join(name))
}

fn render(case: &Path) -> (Outputs, Outputs) {
    let templates = Templates::embedded().expect("templates");
    let catalog = pipeforge::catalog::Catalog::embedded().expect("catalog");
    let bundle = pipeforge::golden::render_case(case, catalog, templates)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    let bootstrap = pipeforge::webhook::bootstrap::render(&org_of(case), templates)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    (bundle, bootstrap)
}

/// The bootstrap stacks of `org` with `edit` applied to the embedded tooling template (which
/// must change it).
fn bootstrap_with_tooling(
    org: &pipeforge::org::OrgPolicy,
    edit: &dyn Fn(&str) -> String,
) -> Outputs {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "bootstrap/tooling.yml.tera";
    let src = pipeforge::assets::get(&format!("templates/{name}")).expect("embedded");
    let edited = edit(src);
    assert_ne!(edited, src, "the edit did not apply; update the test");
    std::fs::create_dir_all(dir.path().join("bootstrap")).expect("mkdir");
    std::fs::write(dir.path().join(name), edited).expect("write");
    let templates = Templates::load(Some(dir.path())).expect("templates");
    pipeforge::webhook::bootstrap::render(org, &templates).expect("bootstrap")
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
        for m in iam::resource_check(bundle, bootstrap).unwrap_or_else(|e| panic!("{name}: {e}")) {
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

fn bootstrap_role(bootstrap: &Outputs, file: &str, id: &str, env: &Env) -> RolePolicies {
    let t: Json = serde_json::from_str(bootstrap.text(file).expect(file)).expect("json");
    Template::new(&t, env.clone())
        .role_policies(id)
        .unwrap_or_else(|e| panic!("{file} {id}: {e}"))
}

/// Every role of every rendered stack (golden and bootstrap), with its policies and boundary.
fn every_role(cases: &[(String, Outputs, Outputs)]) -> Vec<(String, RolePolicies)> {
    let mut out = Vec::new();
    for (name, bundle, bootstrap) in cases {
        let mut templates: Vec<(String, Json, Env)> = iam::bundle_stacks(bundle)
            .expect("stacks")
            .into_iter()
            .map(|s| {
                let env = Env::new(&s.account, &s.region);
                (s.name, s.template, env)
            })
            .collect();
        for f in ["tooling.json", "target.json"] {
            let t: Json = serde_json::from_str(bootstrap.text(f).expect(f)).expect("json");
            templates.push((f.to_owned(), t, Env::new("111111111111", "us-east-1")));
        }
        let externals: Vec<_> = ["tooling.json", "target.json"]
            .iter()
            .map(|f| {
                let t: Json = serde_json::from_str(bootstrap.text(f).expect(f)).expect("json");
                Template::new(&t, Env::new("111111111111", "us-east-1")).managed_policies()
            })
            .collect();
        for (stack, t, _) in &templates {
            // Every stack seen from one account, so that bootstrap boundaries resolve.
            let tpl = Template::new(t, Env::new("111111111111", "us-east-1"));
            for (id, r) in tpl.resources() {
                if r["Type"] != "AWS::IAM::Role" {
                    continue;
                }
                let mut ext = externals[0].clone();
                ext.extend(externals[1].clone());
                match tpl.role_policies_with(id, &ext) {
                    Ok(role) => out.push((format!("{name}: {stack}: {id}"), role)),
                    // AWS managed policies (an org's choice, e.g. PowerUserAccess) cannot be
                    // read here; nothing else may be missing.
                    Err(e) if e.contains(":iam::aws:policy/") => {}
                    Err(e) => panic!("{name} {stack} {id}: {e}"),
                }
            }
        }
    }
    out
}

fn request(action: &str, resource: &str, ctx: Context) -> Request {
    Request {
        action: action.to_owned(),
        resource: resource.to_owned(),
        context: ctx,
    }
}

#[test]
fn no_rendered_role_can_create_an_unbounded_role_or_change_a_boundary() {
    let cases = cases();
    let roles = every_role(&cases);
    assert!(roles.len() > 100, "{}", roles.len());
    let acct = "111111111111";
    let targets = [
        format!("arn:aws:iam::{acct}:role/pf-anything"),
        format!("arn:aws:iam::{acct}:role/app/anything"),
        format!("arn:aws:iam::{acct}:role/acme-anything"),
        format!("arn:aws:iam::{acct}:role/pipeforge-bootstrap"),
    ];
    let boundaries = [
        format!("arn:aws:iam::{acct}:policy/pf-pipeforge-roles-boundary"),
        format!("arn:aws:iam::{acct}:policy/pipeforge-bootstrap-roles-boundary"),
        format!("arn:aws:iam::{acct}:policy/pipeforge-app-boundary"),
        format!("arn:aws:iam::{acct}:policy/acme-pipeforge-roles-boundary"),
        format!("arn:aws:iam::{acct}:policy/acme-workload-boundary"),
    ];
    let iam = || Context::knowing(&["iam:"]);
    let mut allowed = Vec::new();
    for (who, role) in &roles {
        for t in &targets {
            // A role without a boundary, or with one of the attacker's choosing.
            for ctx in [
                iam(),
                iam().with(
                    "iam:PermissionsBoundary",
                    format!("arn:aws:iam::{acct}:policy/mine"),
                ),
            ] {
                for a in ["iam:CreateRole", "iam:PutRolePermissionsBoundary"] {
                    if role.decide(&request(a, t, ctx.clone())) == Decision::Allow {
                        allowed.push(format!("{who}: {a} on {t} with `{}`", ctx.describe()));
                    }
                }
            }
            if role.decide(&request("iam:DeleteRolePermissionsBoundary", t, iam()))
                == Decision::Allow
            {
                allowed.push(format!("{who}: iam:DeleteRolePermissionsBoundary on {t}"));
            }
        }
        for b in &boundaries {
            for a in [
                "iam:CreatePolicyVersion",
                "iam:DeletePolicy",
                "iam:DeletePolicyVersion",
                "iam:SetDefaultPolicyVersion",
            ] {
                if role.decide(&request(a, b, iam())) == Decision::Allow {
                    allowed.push(format!("{who}: {a} on {b}"));
                }
            }
        }
    }
    assert!(
        allowed.is_empty(),
        "escalation paths:\n{}",
        allowed.join("\n")
    );
}

#[test]
fn the_execution_roles_create_roles_only_with_the_org_boundary() {
    let (_, bootstrap) = &case("python-full");
    let env = Env::new("111111111111", "us-east-1");
    let iam = || Context::knowing(&["iam:"]);
    let role = "arn:aws:iam::111111111111:role/pf-x-dev-deploy";
    for (file, boundary) in [
        ("target.json", "pipeforge-bootstrap-roles-boundary"),
        ("target.json", "pipeforge-app-boundary"),
        ("tooling.json", "pf-pipeforge-roles-boundary"),
    ] {
        let exec = bootstrap_role(bootstrap, file, iam::EXECUTION_ROLE_ID, &env);
        let b = format!("arn:aws:iam::111111111111:policy/{boundary}");
        assert_eq!(
            exec.decide(&request(
                "iam:CreateRole",
                role,
                iam().with("iam:PermissionsBoundary", &b)
            )),
            Decision::Allow,
            "{file} {boundary}"
        );
        assert!(
            matches!(
                exec.decide(&request("iam:CreateRole", role, iam())),
                Decision::ExplicitDeny(_)
            ),
            "{file}: a role without a boundary"
        );
    }
    // The application boundary: an application role created without it is refused.
    let app = {
        let t: Json =
            serde_json::from_str(bootstrap.text("target.json").expect("target")).expect("json");
        let tpl = Template::new(&t, env.clone());
        let managed = tpl.managed_policies();
        let (n, d) = managed
            .get("arn:aws:iam::111111111111:policy/pipeforge-app-deploy")
            .expect("app policy");
        let (bn, bd) = managed
            .get("arn:aws:iam::111111111111:policy/pipeforge-app-boundary")
            .expect("app boundary");
        RolePolicies {
            role: "pf-x-dev-exec".to_owned(),
            identity: vec![pipeforge::iam::eval::Policy::parse(n, d).expect("policy")],
            boundary: Some(pipeforge::iam::eval::Policy::parse(bn, bd).expect("boundary")),
        }
    };
    let app_role = "arn:aws:iam::111111111111:role/app/orders-fn";
    let app_boundary = "arn:aws:iam::111111111111:policy/pipeforge-app-boundary";
    assert_eq!(
        app.decide(&request(
            "iam:CreateRole",
            app_role,
            iam().with("iam:PermissionsBoundary", app_boundary)
        )),
        Decision::Allow
    );
    assert!(matches!(
        app.decide(&request("iam:CreateRole", app_role, iam())),
        Decision::ExplicitDeny(_)
    ));
    assert_ne!(
        app.decide(&request(
            "iam:PassRole",
            "arn:aws:iam::111111111111:role/pf-x-dev-deploy",
            iam()
        )),
        Decision::Allow,
        "application stacks pass application roles only"
    );
}

/// Removing any one action from an `Allow` of an execution role makes the sufficiency check
/// fail: every action they hold is needed, and the check notices each one.
#[test]
fn every_action_of_the_execution_roles_is_needed() {
    let cases = cases();
    let mut unneeded = Vec::new();
    for file in ["tooling.json", "target.json"] {
        for (name, bundle, bootstrap) in &cases {
            if name != "multi-region" && name != "org-custom" && name != "python-full" {
                continue;
            }
            let stacks = iam::bundle_stacks(bundle).expect("stacks");
            let kind_matches = |k: &str| (k == "target") == (file == "target.json");
            let mut reqs = Vec::new();
            let mut role = None;
            for s in stacks.iter().filter(|s| kind_matches(&s.kind)) {
                let env = Env::new(&s.account, &s.region);
                role.get_or_insert_with(|| {
                    iam::execution_role(bootstrap, &s.kind, &env).expect("role")
                });
                reqs.push((
                    env.clone(),
                    pipeforge::iam::handlers::stack_requirements(
                        &Template::new(&s.template, env),
                        &s.name,
                    )
                    .expect("requirements"),
                ));
            }
            let role = role.expect("a stack");
            let kind = if file == "target.json" {
                "target"
            } else {
                "pipeline"
            };
            let per_env: Vec<(RolePolicies, &Vec<pipeforge::iam::handlers::Requirement>)> = reqs
                .iter()
                .map(|(env, r)| (iam::execution_role(bootstrap, kind, env).expect("role"), r))
                .collect();
            for (pi, p) in role.identity.iter().enumerate() {
                for (si, st) in p.statements.iter().enumerate() {
                    if st.effect != pipeforge::iam::eval::Effect::Allow {
                        continue;
                    }
                    for ai in 0..st.actions.values.len() {
                        let removed = &st.actions.values[ai];
                        let caught = per_env.iter().any(|(real, r)| {
                            let mut m = real.clone();
                            m.identity[pi].statements[si].actions.values.remove(ai);
                            !iam::check(&m, r).is_empty()
                        });
                        if !caught {
                            unneeded.push(format!(
                                "{name} {file} `{}` statement `{}`: `{removed}`",
                                p.name, st.sid
                            ));
                        }
                    }
                }
            }
        }
    }
    // An action is unneeded only if no case needs it.
    let mut by_action: std::collections::BTreeMap<String, usize> = Default::default();
    for u in &unneeded {
        let key = u.split_once(' ').map_or(u.as_str(), |(_, k)| k).to_owned();
        *by_action.entry(key).or_default() += 1;
    }
    let never: Vec<&String> = by_action
        .iter()
        .filter(|(_, n)| **n == 3)
        .map(|(k, _)| k)
        .collect();
    assert!(
        never.is_empty(),
        "actions no golden stack needs (remove them):\n{never:#?}"
    );
}

/// Removing any one `Allow` of a key, bucket or topic policy (pipeline, region and bootstrap
/// stacks) makes the resource check fail: every statement is needed, and the check notices.
#[test]
fn every_allow_of_the_resource_policies_is_needed() {
    let cases = cases();
    let mut seen: std::collections::BTreeMap<String, bool> = Default::default();
    for (name, bundle, bootstrap) in &cases {
        if ![
            "python-full",
            "multi-region",
            "org-custom",
            "stacks-multi-region",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        let index = iam::resource_policies(bundle, bootstrap).expect("policies");
        let needs = iam::principal_needs(bundle, bootstrap).expect("needs");
        assert!(
            iam::resource_missing(&index, &needs).is_empty(),
            "{name}: the rendered policies must pass first"
        );
        let arns: Vec<String> = index
            .clone()
            .policies_mut()
            .map(|(a, _)| a.clone())
            .collect();
        for arn in arns {
            let statements = {
                let mut i = index.clone();
                let (_, p) = i.policies_mut().find(|(a, _)| **a == arn).expect("policy");
                p.statements.clone()
            };
            for (si, st) in statements.iter().enumerate() {
                if st.effect != pipeforge::iam::eval::Effect::Allow {
                    continue;
                }
                let mut m = index.clone();
                let (_, p) = m.policies_mut().find(|(a, _)| **a == arn).expect("policy");
                let (policy, stack) = p.name.split_once(" of `").unwrap_or_default();
                let kind = if stack.ends_with("-pipeline`") {
                    "pipeline stack"
                } else if stack.contains("-artifacts-") {
                    "region stack"
                } else {
                    stack.trim_end_matches('`')
                };
                let policy = format!("{kind}: {policy}");
                p.statements.remove(si);
                let caught = !iam::resource_missing(&m, &needs).is_empty();
                let key = format!("{policy} `{}`", st.sid);
                *seen.entry(key).or_default() |= caught;
            }
        }
    }
    let never: Vec<&String> = seen.iter().filter(|(_, c)| !**c).map(|(k, _)| k).collect();
    assert!(seen.len() >= 12, "{seen:#?}");
    assert!(
        never.is_empty(),
        "resource-policy statements no request needs (remove them, or add the need):\n{never:#?}"
    );
}

/// The resource check names what a key or bucket policy lacks: here the deploy roles of other
/// accounts lose the artifact key and the artifact bucket.
#[test]
fn a_resource_policy_without_the_deploy_roles_fails_naming_them() {
    let (bundle, bootstrap) = &case("python-full");
    let index = iam::resource_policies(bundle, bootstrap).expect("policies");
    let needs = iam::principal_needs(bundle, bootstrap).expect("needs");
    for sid in ["DeployRolesDecryptArtifacts", "DeployRolesReadArtifacts"] {
        let mut m = index.clone();
        for (_, p) in m.policies_mut() {
            p.statements.retain(|s| s.sid != sid);
        }
        let report = iam::report(&iam::resource_missing(&m, &needs));
        let action = if sid.contains("Decrypt") {
            "kms:Decrypt"
        } else {
            "s3:GetObject"
        };
        assert!(
            report.contains("role `arn:aws:iam::333333333333:role/pf-orders-api-prod-deploy`")
                && report.contains(&format!("cannot `{action}`"))
                && report.contains("of `pf-orders-api-pipeline`"),
            "{sid}:\n{report}"
        );
    }
}

/// Every gate's role reads the secrets and parameters its buildspec names, and nothing else:
/// not another gate's, not a parameter below or beside its own, not another secret whose name
/// starts like its own, not another team's.
#[test]
fn each_gate_reads_its_own_secrets_and_nothing_else() {
    use pipeforge::iam::gates;
    let cases = cases();
    let (mut granted, mut refused) = (0, 0);
    for (name, bundle, bootstrap) in &cases {
        let tooling: Json =
            serde_json::from_str(bootstrap.text("tooling.json").expect("tooling")).expect("json");
        for s in iam::bundle_stacks(bundle).expect("stacks") {
            if s.kind != "pipeline" {
                continue;
            }
            let env = Env::new(&s.account, &s.region);
            let tpl = Template::new(&s.template, env.clone());
            let external = Template::new(&tooling, env.clone()).managed_policies();
            let mut gates_reads = Vec::new();
            for (id, r) in tpl.resources() {
                if r["Type"] != "AWS::CodeBuild::Project" {
                    continue;
                }
                let spec = r["Properties"]["Source"]["BuildSpec"]
                    .as_str()
                    .and_then(gates::parse)
                    .expect("buildspec");
                let role_id = r["Properties"]["ServiceRole"]["Fn::GetAtt"][0]
                    .as_str()
                    .expect("role")
                    .to_owned();
                let role = tpl.role_policies_with(&role_id, &external).expect("role");
                gates_reads.push((id.to_owned(), role, gates::secret_reads(&spec, &env)));
            }
            for (gate, role, own) in &gates_reads {
                let mut probes: Vec<(String, String)> = Vec::new();
                for (other, _, theirs) in &gates_reads {
                    if other != gate {
                        probes.extend(theirs.iter().map(|r| (r.action.to_owned(), r.arn.clone())));
                    }
                }
                for r in own {
                    assert_eq!(
                        role.decide(&request(r.action, &r.arn, Context::default())),
                        Decision::Allow,
                        "{name} {gate}: its own `{}`",
                        r.arn
                    );
                    granted += 1;
                    if r.action.starts_with("ssm:") {
                        probes.push((r.action.to_owned(), format!("{}/child", r.arn)));
                        probes.push((r.action.to_owned(), format!("{}x", r.arn)));
                        let parent = r.arn.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
                        probes.push(("ssm:GetParametersByPath".to_owned(), parent.to_owned()));
                        probes.push(("ssm:GetParameter".to_owned(), r.arn.clone()));
                    } else {
                        let stem = r.arn.rsplit_once('-').map(|(s, _)| s).unwrap_or_default();
                        probes.push((r.action.to_owned(), format!("{stem}x-AbCdEf")));
                        probes.push((r.action.to_owned(), format!("{stem}/x-AbCdEf")));
                    }
                }
                probes.push((
                    "ssm:GetParameters".to_owned(),
                    gates::parameter_arn("/other-team/db/password", &env),
                ));
                probes.push((
                    "secretsmanager:GetSecretValue".to_owned(),
                    format!(
                        "arn:aws:secretsmanager:{}:{}:secret:other-team/token-AbCdEf",
                        env.region, env.account
                    ),
                ));
                for (action, arn) in probes {
                    if own.iter().any(|r| r.action == action && r.arn == arn) {
                        continue;
                    }
                    assert_ne!(
                        role.decide(&request(&action, &arn, Context::default())),
                        Decision::Allow,
                        "{name} {gate}: `{action}` on `{arn}` is not its own"
                    );
                    refused += 1;
                }
            }
        }
    }
    assert!(granted >= 10 && refused >= 100, "{granted} {refused}");
}

/// The README's table of runtime needs is [`iam::rules_table`], and every row cites an AWS
/// documentation page (`UPDATE_GOLDEN=1` rewrites the table).
#[test]
fn the_readme_lists_every_runtime_need_with_its_source() {
    for r in iam::rules() {
        assert!(
            r.source.starts_with("https://docs.aws.amazon.com/"),
            "{}: {}",
            r.role,
            r.source
        );
        assert!(
            !r.actions.is_empty() && !r.resource.is_empty(),
            "{}",
            r.role
        );
    }
    let (begin, end) = (
        "<!-- runtime-needs:begin -->\n",
        "<!-- runtime-needs:end -->",
    );
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README");
    let (head, rest) = readme
        .split_once(begin)
        .expect("README has the table's begin marker");
    let (old, tail) = rest
        .split_once(end)
        .expect("README has the table's end marker");
    let table = iam::rules_table();
    if old != table {
        if std::env::var_os("UPDATE_GOLDEN").is_some() && std::env::var_os("CI").is_none() {
            std::fs::write(&path, format!("{head}{begin}{table}{end}{tail}")).expect("write");
        } else {
            panic!("README's runtime table is stale; run `UPDATE_GOLDEN=1 cargo test --test iam`");
        }
    }
}

/// `pipeforge recover` deletes an application stack only through the recovery execution role,
/// which holds no permission (so CloudFormation can delete a stack only when nothing is left in
/// it), never one of pipeforge's own stacks; the worker's bootstrap role and the pipeline's
/// deploy roles cannot delete application stacks at all.
#[test]
fn only_the_recovery_role_deletes_stacks_and_only_through_a_role_without_permissions() {
    let (bundle, bootstrap) = &case("python-full");
    let env = Env::new("333333333333", "us-east-1");
    let recovery = bootstrap_role(bootstrap, "target.json", "RecoveryRole", &env);
    let exec = bootstrap_role(bootstrap, "target.json", "RecoveryExecutionRole", &env);
    let recovery_exec = "arn:aws:iam::333333333333:role/pipeforge-bootstrap-recovery-exec";
    let app = "arn:aws:cloudformation:us-east-1:333333333333:stack/orders-api/00000000-0000-4000-8000-000000000000";
    let through = |role: &str| {
        Context::knowing(&["cloudformation:"]).with("cloudformation:RoleArn", role.to_owned())
    };
    let delete = |ctx: Context, stack: &str| request("cloudformation:DeleteStack", stack, ctx);
    assert_eq!(
        recovery.decide(&delete(through(recovery_exec), app)),
        Decision::Allow
    );
    // Not with the stack's own role, an application execution role or the bootstrap's.
    for other in [
        "arn:aws:iam::333333333333:role/pf-orders-api-prod-exec",
        "arn:aws:iam::333333333333:role/pipeforge-bootstrap-cfn-exec",
    ] {
        assert_ne!(
            recovery.decide(&delete(through(other), app)),
            Decision::Allow,
            "{other}"
        );
    }
    assert_ne!(
        recovery.decide(&delete(Context::knowing(&["cloudformation:"]), app)),
        Decision::Allow,
        "without naming a role"
    );
    for own in [
        "pf-orders-api-prod-target",
        "pf-orders-api-pipeline",
        "pf-x-artifacts-eu-west-1",
    ] {
        let stack = format!(
            "arn:aws:cloudformation:us-east-1:333333333333:stack/{own}/00000000-0000-4000-8000-000000000000"
        );
        assert!(
            matches!(
                recovery.decide(&delete(through(recovery_exec), &stack)),
                Decision::ExplicitDeny(_)
            ),
            "{own}"
        );
    }
    // The role CloudFormation deletes with can do nothing.
    assert!(exec.identity.is_empty(), "{:?}", exec.identity);
    for (action, resource) in [
        ("s3:DeleteBucket", "arn:aws:s3:::orders-data"),
        (
            "dynamodb:DeleteTable",
            "arn:aws:dynamodb:us-east-1:333333333333:table/orders",
        ),
        (
            "lambda:DeleteFunction",
            "arn:aws:lambda:us-east-1:333333333333:function:orders",
        ),
    ] {
        assert_eq!(
            exec.decide(&request(action, resource, Context::default())),
            Decision::ImplicitDeny
        );
    }
    // Nobody else may delete application stacks.
    let mut others = vec![bootstrap_role(
        bootstrap,
        "target.json",
        "BootstrapRole",
        &env,
    )];
    for s in iam::bundle_stacks(bundle).expect("stacks") {
        if s.kind == "target" && s.account == "333333333333" {
            let t = Template::new(&s.template, env.clone());
            let ext: std::collections::BTreeMap<String, (String, Json)> = {
                let tj: Json = serde_json::from_str(bootstrap.text("target.json").expect("target"))
                    .expect("json");
                Template::new(&tj, env.clone()).managed_policies()
            };
            others.push(
                t.role_policies_with("DeployRole", &ext)
                    .expect("deploy role"),
            );
        }
    }
    assert_eq!(others.len(), 2);
    for r in &others {
        for ctx in [
            through(recovery_exec),
            Context::knowing(&["cloudformation:"]),
        ] {
            assert_ne!(r.decide(&delete(ctx, app)), Decision::Allow, "{}", r.role);
        }
    }
}

/// The webhook worker's role (the runtime role that needs `need` in the source bucket) and
/// the bucket's policy: what it may do to a key of the bucket, the identity and the resource
/// sides together.
struct WorkerAccess {
    worker: iam::runtime::RoleNeeds,
    bucket: String,
    index: iam::resource::ResourcePolicies,
}

impl WorkerAccess {
    fn of(bundle: &Outputs, bootstrap: &Outputs, need: &str) -> WorkerAccess {
        let roles = iam::runtime_roles(bundle, bootstrap).expect("roles");
        let worker = roles
            .into_iter()
            .find(|r| r.needs.iter().any(|n| n.request.resource.ends_with(need)))
            .unwrap_or_else(|| panic!("no runtime role needs `{need}`"));
        assert!(worker.arn.ends_with("-worker"), "{}", worker.arn);
        let bucket = worker
            .needs
            .iter()
            .find_map(|n| n.request.resource.strip_suffix(need))
            .expect("source bucket")
            .to_owned();
        let index = iam::resource_policies(bundle, bootstrap).expect("policies");
        WorkerAccess {
            worker,
            bucket,
            index,
        }
    }

    fn allowed(&self, action: &str, key: &str, ctx: Context) -> bool {
        let who = pipeforge::iam::eval::Who::role(&self.worker.arn);
        let req = request(action, &format!("{}/{key}", self.bucket), ctx);
        let (resource_side, _) = self
            .index
            .decide(&who, &req)
            .expect("the source bucket has a policy");
        self.worker.policies.decide(&req) == Decision::Allow && resource_side == Decision::Allow
    }
}

/// What the webhook worker may do to owner records (and, beside them, the deploy lock): create
/// a record, replace it, delete it, write the lock.
fn worker_owner_rights(bundle: &Outputs, bootstrap: &Outputs) -> [bool; 4] {
    let access = WorkerAccess::of(bundle, bootstrap, "/pipelines/pipeline/owner.json");
    let s3 = || Context::knowing(&["s3:"]);
    let record = "pipelines/orders-api/owner.json";
    [
        access.allowed("s3:PutObject", record, s3().with("s3:if-none-match", "*")),
        access.allowed("s3:PutObject", record, s3()),
        access.allowed("s3:DeleteObject", record, s3()),
        access.allowed("s3:PutObject", "pipelines/orders-api/deploy.lock", s3()),
    ]
}

/// The worker's role must not be able to take a pipeline over: it creates a pipeline's owner
/// record (`If-None-Match: *`), never replaces or deletes one; and a bootstrap template edit
/// that lets it (or that stops the create) is caught.
#[test]
fn the_worker_creates_owner_records_and_never_replaces_or_deletes_them() {
    let (bundle, _) = &case("python-full");
    let org = org_of(&root().join("golden/python-full"));
    let with_tooling = |edit: &dyn Fn(&str) -> String| {
        worker_owner_rights(bundle, &bootstrap_with_tooling(&org, edit))
    };
    let bootstrap =
        pipeforge::webhook::bootstrap::render(&org, Templates::embedded().expect("templates"))
            .expect("bootstrap");
    assert_eq!(
        worker_owner_rights(bundle, &bootstrap),
        [true, false, false, true],
        "create, replace, delete, lock"
    );
    let deny = |sid: &str, s: &str| {
        let at = s.find(&format!("- Sid: {sid}")).expect("statement");
        let key = "/pipelines/*/owner.json\"";
        let i = at + s[at..].find(key).expect("resource");
        format!(
            "{}/pipelines/*/other.json\"{}",
            &s[..i],
            &s[i + key.len()..]
        )
    };
    // The replace deny aimed elsewhere: the worker could replace another team's record.
    assert_eq!(
        with_tooling(&|s| deny("WorkerOnlyCreatesOwnerRecords", s)),
        [true, true, false, true]
    );
    // The delete deny aimed elsewhere: it could delete one (and then create its own).
    assert_eq!(
        with_tooling(&|s| deny("WorkerNeverDeletesOwnerRecords", s)),
        [true, false, true, true]
    );
    // The create exception dropped: a first deploy could no longer record its owner.
    assert_eq!(
        with_tooling(&|s| s.replacen(
            "              \"Null\":\n                \"s3:if-none-match\": \"true\"\n",
            "",
            1
        )),
        [false, false, false, true]
    );
}

/// What the webhook worker may do under `fleet/` (rollout states and candidate sets): read a
/// candidate, write one, delete one, write a rollout state.
fn worker_fleet_rights(bundle: &Outputs, bootstrap: &Outputs) -> [bool; 4] {
    let access = WorkerAccess::of(bundle, bootstrap, "/fleet/candidates/candidate.json");
    let allowed = |action: &str, key: &str| access.allowed(action, key, Context::knowing(&["s3:"]));
    let candidate = format!("fleet/candidates/{}.json", "ab".repeat(32));
    [
        allowed("s3:GetObject", &candidate),
        allowed("s3:PutObject", &candidate),
        allowed("s3:DeleteObject", &candidate),
        allowed("s3:PutObject", "fleet/rollouts/r1.json"),
    ]
}

/// A rollout job names its candidate set by hash; the worker must be able to read it and
/// never to write one (or a rollout's state), or a forged job could bring its own templates.
/// Aiming the bootstrap's deny elsewhere is caught.
#[test]
fn the_worker_reads_rollout_candidates_and_never_writes_them() {
    let (bundle, _) = &case("python-full");
    let org = org_of(&root().join("golden/python-full"));
    let bootstrap =
        pipeforge::webhook::bootstrap::render(&org, Templates::embedded().expect("templates"))
            .expect("bootstrap");
    assert_eq!(
        worker_fleet_rights(bundle, &bootstrap),
        [true, false, false, false],
        "read, write, delete, write a state"
    );
    let edited = bootstrap_with_tooling(&org, &|s| {
        s.replacen(
            "Resource: !Sub \"${SourceBucket.Arn}/fleet/*\"",
            "Resource: !Sub \"${SourceBucket.Arn}/elsewhere/*\"",
            1,
        )
    });
    assert_eq!(
        worker_fleet_rights(bundle, &edited),
        [true, true, true, true]
    );
}

/// Pull-request previews: the bootstrap lets the worker read the vendor credentials of
/// `webhook.pull_requests` (and decrypt them with their key, only through Secrets Manager and
/// for those secrets) and no other secret; without those statements the runtime check names
/// what the worker lacks. An org without previews grants no secret read at all.
#[test]
fn the_worker_reads_the_vendor_credentials_and_no_other_secret() {
    let (bundle, bootstrap) = &case("org-custom");
    let tooling: Json =
        serde_json::from_str(bootstrap.text("tooling.json").expect("tooling")).expect("json");
    assert_eq!(
        tooling["Metadata"]["pipeforge"]["vendor_credentials"]["secrets"],
        serde_json::json!(["acme/github-token"])
    );
    assert!(
        iam::runtime_check(bundle, bootstrap)
            .expect("check")
            .is_empty()
    );

    let env = Env::new("210987654321", "eu-west-1");
    let worker = bootstrap_role(bootstrap, "tooling.json", "WorkerRole", &env);
    let arn = |name: &str| format!("arn:aws:secretsmanager:eu-west-1:210987654321:secret:{name}");
    let own = arn("acme/github-token-AbCdEf");
    let read = |resource: &str| {
        worker.decide(&request(
            "secretsmanager:GetSecretValue",
            resource,
            Context::default(),
        ))
    };
    assert_eq!(read(&own), Decision::Allow);
    for other in [
        arn("acme/github-tokenx-AbCdEf"),
        arn("acme/github-token/x-AbCdEf"),
        arn("acme/github-token-AbCdEf-x"),
        arn("acme/github-AbCdEf"),
        arn("prefix/pipeforge/webhook-secret-AbCdEf"),
        arn("payments/api-AbCdEf"),
        "arn:aws:secretsmanager:eu-west-1:999999999999:secret:acme/github-token-AbCdEf".to_owned(),
    ] {
        assert_ne!(
            read(&other),
            Decision::Allow,
            "`{other}` is not a vendor credential"
        );
    }
    let key = "arn:aws:kms:eu-west-1:210987654321:key/11111111-2222-3333-4444-555555555555";
    let decrypt = |via: Option<&str>, secret: &str| {
        let mut ctx = Context::knowing(&["kms:"]).with("kms:EncryptionContext:SecretARN", secret);
        if let Some(v) = via {
            ctx = ctx.with("kms:ViaService", v);
        }
        worker.decide(&request("kms:Decrypt", key, ctx))
    };
    let sm = Some("secretsmanager.eu-west-1.amazonaws.com");
    assert_eq!(decrypt(sm, &own), Decision::Allow);
    assert_ne!(
        decrypt(None, &own),
        Decision::Allow,
        "only through Secrets Manager"
    );
    assert_ne!(
        decrypt(Some("s3.eu-west-1.amazonaws.com"), &own),
        Decision::Allow
    );
    assert_ne!(
        decrypt(sm, &arn("payments/api-AbCdEf")),
        Decision::Allow,
        "only for the vendor credentials"
    );

    // Without the statements, the existing check names both missing permissions.
    for sid in ["ReadVendorCredentials", "DecryptVendorCredentials"] {
        let mut t = tooling.clone();
        let statements = t
            .pointer_mut("/Resources/WorkerRole/Properties/Policies/0/PolicyDocument/Statement")
            .and_then(Json::as_array_mut)
            .expect("worker statements");
        let before = statements.len();
        statements.retain(|s| s["Sid"] != sid);
        assert_eq!(statements.len(), before - 1, "{sid}");
        let mut broken = bootstrap.clone();
        broken.insert("tooling.json", serde_json::to_string(&t).expect("json"));
        let missing = iam::runtime_check(bundle, &broken).expect("check");
        let action = if sid.starts_with("Read") {
            "secretsmanager:GetSecretValue"
        } else {
            "kms:Decrypt"
        };
        assert!(
            !missing.is_empty()
                && missing.iter().all(|m| m.role == "acme-pipeforge-worker"
                    && m.request.action == action
                    && m.why.contains("webhook.pull_requests")),
            "{sid}: {}",
            iam::report(&missing)
        );
    }

    // Previews off (the embedded org): no vendor credential, no secret read by the worker.
    let (_, plain) = &case("python-full");
    let t: Json = serde_json::from_str(plain.text("tooling.json").expect("tooling")).expect("json");
    assert!(
        t.pointer("/Metadata/pipeforge/vendor_credentials")
            .is_none()
    );
    let worker = bootstrap_role(
        plain,
        "tooling.json",
        "WorkerRole",
        &Env::new("111111111111", "us-east-1"),
    );
    assert_ne!(
        worker.decide(&request(
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:us-east-1:111111111111:secret:pipeforge/github-token-AbCdEf",
            Context::default()
        )),
        Decision::Allow
    );
}

/// The org of `golden-bootstrap/tooling-accounts` (two more tooling accounts), its bootstrap,
/// and a golden manifest rendered for each of those accounts.
fn placed_elsewhere(case: &str) -> Vec<(String, Outputs, Outputs)> {
    let org = org_of(&root().join("golden-bootstrap/tooling-accounts"));
    assert!(org.org.tooling_accounts.len() >= 2);
    let templates = Templates::embedded().expect("templates");
    let catalog = pipeforge::catalog::Catalog::embedded().expect("catalog");
    let bootstrap = pipeforge::webhook::bootstrap::render(&org, templates).expect("bootstrap");
    let path = root().join(format!("golden/{case}/pipeline.yml"));
    let text = std::fs::read_to_string(&path).expect("manifest");
    let manifest = pipeforge::SourceFile::new(path.display().to_string(), text);
    org.org
        .tooling_accounts
        .iter()
        .map(|extra| {
            let bundle = pipeforge::generate_placed(
                &manifest,
                &org,
                catalog,
                templates,
                &Default::default(),
                Some(extra),
            )
            .unwrap_or_else(|e| panic!("{case} in {}: {e}", extra.account))
            .outputs;
            // The stacks that account has: its own tooling stack, and the target stack (its
            // bootstrap role).
            let file = pipeforge::webhook::bootstrap::extra_tooling_file(&extra.account);
            let mut seen = Outputs::default();
            seen.insert(
                "tooling.json",
                bootstrap.get(&file).expect("rendered").to_vec(),
            );
            seen.insert(
                "target.json",
                bootstrap.get("target.json").expect("target").to_vec(),
            );
            (format!("{case} in {}", extra.account), bundle, seen)
        })
        .collect()
}

/// A pipeline placed in another tooling account is deployed there by the execution role of that
/// account's `tooling-<account>.json` (every handler permission of its stacks), its roles have
/// what they need at run time against that account's source bucket and key, and the resource
/// policies (that bucket's among them) allow it: the same checks as the home account's.
#[test]
fn a_pipeline_placed_in_another_tooling_account_deploys_with_that_accounts_bootstrap() {
    for case in ["python-full", "multi-region"] {
        let placed = placed_elsewhere(case);
        for (_, bundle, _) in &placed {
            let stacks = iam::bundle_stacks(bundle).expect("stacks");
            let pipeline = stacks
                .iter()
                .find(|s| s.kind == "pipeline")
                .expect("pipeline");
            assert_ne!(
                pipeline.account, "123456789012",
                "rendered for the other account"
            );
        }
        let missing = all_missing(&placed);
        assert!(
            missing.is_empty(),
            "{}",
            missing
                .iter()
                .map(|(c, m)| format!("{c}: {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// What the bootstrap role of another tooling account may do: `target.json`'s role with the
/// `ToolingAccountDeployer` policy of `tooling-<account>.json` attached.
fn deployer_in(bootstrap: &Outputs, file: &str, env: &Env) -> RolePolicies {
    let mut role = bootstrap_role(bootstrap, "target.json", "BootstrapRole", env);
    let t: Json = serde_json::from_str(bootstrap.text(file).expect(file)).expect("json");
    let tpl = Template::new(&t, env.clone());
    let doc = tpl
        .resolve(&t["Resources"]["ToolingAccountDeployer"]["Properties"]["PolicyDocument"])
        .expect("resolves");
    let roles = &t["Resources"]["ToolingAccountDeployer"]["Properties"]["Roles"];
    assert_eq!(
        roles,
        &serde_json::json!([role.role]),
        "attached to the bootstrap role"
    );
    role.identity
        .push(pipeforge::iam::eval::Policy::parse("ToolingAccountDeployer", &doc).expect("policy"));
    role
}

/// The home account's worker reaches another tooling account through the bootstrap role there
/// (`target.json`), which `tooling-<account>.json` gives exactly what a deploy, a status, a
/// `doctor`, a `move --retire-old` and a `fleet drift` there need: each request below is
/// allowed, each one a step beyond it is refused, and without any one of the policy's `Allow`
/// statements some needed request is refused.
#[test]
fn the_bootstrap_role_of_another_tooling_account_can_deploy_there_and_no_more() {
    let org = org_of(&root().join("golden-bootstrap/tooling-accounts"));
    let bootstrap = pipeforge::webhook::bootstrap::render(&org, Templates::embedded().expect("t"))
        .expect("bootstrap");
    let extra = &org.org.tooling_accounts[0];
    let (a, r) = (extra.account.as_str(), extra.region.as_str());
    let env = Env::new(a, r);
    let file = pipeforge::webhook::bootstrap::extra_tooling_file(a);
    let t: Json = serde_json::from_str(bootstrap.text(&file).expect("file")).expect("json");
    let tpl = Template::new(&t, env.clone());
    let exec = tpl.arn_of("CloudFormationExecutionRole").expect("exec");
    let key = tpl.arn_of("SourceKey").expect("key");
    let bucket = format!("arn:aws:s3:::{}", extra.bucket);
    let stack = |name: &str| format!("arn:aws:cloudformation:{r}:{a}:stack/{name}/1");
    let none = Context::default;
    let with_role = |role: &str| {
        Context::knowing(&["cloudformation:RoleArn"]).with("cloudformation:RoleArn", role)
    };
    let change_set = |n: &str| {
        Context::knowing(&["cloudformation:ChangeSetName"]).with("cloudformation:ChangeSetName", n)
    };
    let pass = |service: &str| Context::knowing(&["iam:"]).with("iam:PassedToService", service);
    let s3 = || Context::knowing(&["s3:"]).with("aws:SecureTransport", "true");
    let artifacts = format!("arn:aws:s3:::pf-orders-api-{a}-{r}");
    let needed: Vec<Request> = vec![
        request(
            "cloudformation:DescribeStacks",
            &stack("pf-orders-api-pipeline"),
            none(),
        ),
        request(
            "cloudformation:DescribeStackResource",
            &stack("pf-orders-api-pipeline"),
            none(),
        ),
        request(
            "cloudformation:CreateChangeSet",
            &stack("pf-orders-api-pipeline"),
            with_role(&exec),
        ),
        request(
            "cloudformation:CreateChangeSet",
            &stack("pf-orders-api-artifacts-us-west-2"),
            with_role(&exec),
        ),
        request(
            "cloudformation:ExecuteChangeSet",
            &stack("pf-orders-api-pipeline"),
            change_set("pipeforge-deploy-abc-0"),
        ),
        request(
            "cloudformation:DeleteStack",
            &stack("pf-orders-api-pipeline"),
            with_role(&exec),
        ),
        request("iam:PassRole", &exec, pass("cloudformation.amazonaws.com")),
        request(
            "s3:PutObject",
            &format!("{bucket}/payments/orders-api/source.zip"),
            s3(),
        ),
        request(
            "s3:GetObject",
            &format!("{bucket}/pipelines/orders-api/deployed.json"),
            s3(),
        ),
        // A deploy writes the record, then its listing key, and deletes the older keys (a
        // move deletes both).
        request(
            "s3:PutObject",
            &format!("{bucket}/pipelines/orders-api/deployed.json"),
            s3(),
        ),
        request(
            "s3:PutObject",
            &format!(
                "{bucket}/pipelines/orders-api/set/{}",
                pipeforge::iam::runtime::LISTING_KEY_EXAMPLE
            ),
            s3(),
        ),
        request(
            "s3:DeleteObject",
            &format!(
                "{bucket}/pipelines/orders-api/set/{}",
                pipeforge::iam::runtime::LISTING_KEY_EXAMPLE
            ),
            s3(),
        ),
        request(
            "s3:DeleteObject",
            &format!("{bucket}/pipelines/orders-api/deployed.json"),
            s3(),
        ),
        request("s3:ListBucket", &bucket, s3()),
        request("kms:GenerateDataKey", &key, none()),
        request("kms:Decrypt", &key, none()),
        request(
            "codepipeline:StartPipelineExecution",
            &format!("arn:aws:codepipeline:{r}:{a}:pf-orders-api"),
            none(),
        ),
        request("codepipeline:ListPipelines", "*", none()),
        request("codebuild:ListProjects", "*", none()),
        request("s3:ListAllMyBuckets", "*", none()),
        request("iam:GetAccountSummary", "*", none()),
        request("iam:GetRole", &exec, none()),
        request(
            "iam:GetPolicy",
            &tpl.arn_of("RolesBoundary").expect("boundary"),
            none(),
        ),
        request("s3:GetEncryptionConfiguration", &bucket, s3()),
        request("s3:GetBucketPolicy", &bucket, s3()),
        request("s3:GetBucketVersioning", &bucket, s3()),
        request("s3:ListBucketVersions", &artifacts, s3()),
        request("s3:DeleteObjectVersion", &format!("{artifacts}/x/y"), s3()),
        // `fleet drift`: drift detection of the pipeline and region stacks, which reads each
        // resource with this role's rights.
        request(
            "cloudformation:DetectStackDrift",
            &stack("pf-orders-api-pipeline"),
            none(),
        ),
        request(
            "cloudformation:DescribeStackResourceDrifts",
            &stack("pf-orders-api-artifacts-us-west-2"),
            none(),
        ),
        request(
            "cloudformation:DescribeStackDriftDetectionStatus",
            "*",
            none(),
        ),
        request(
            "iam:GetRolePolicy",
            &format!("arn:aws:iam::{a}:role/pf-orders-api-build"),
            none(),
        ),
        request(
            "codebuild:BatchGetProjects",
            &format!("arn:aws:codebuild:{r}:{a}:project/pf-orders-api-build"),
            none(),
        ),
        request(
            "codepipeline:GetPipeline",
            &format!("arn:aws:codepipeline:{r}:{a}:pf-orders-api"),
            none(),
        ),
        request(
            "iam:GetPolicyVersion",
            &format!("arn:aws:iam::{a}:policy/pf-orders-api-team-access"),
            none(),
        ),
        request("s3:GetBucketTagging", &artifacts, s3()),
        request(
            "kms:GetKeyPolicy",
            &format!("arn:aws:kms:{r}:{a}:key/1234"),
            none(),
        ),
        request(
            "logs:ListTagsForResource",
            &format!("arn:aws:logs:{r}:{a}:log-group:/aws/codebuild/pf-orders-api-build"),
            none(),
        ),
        request(
            "sns:GetTopicAttributes",
            &format!("arn:aws:sns:{r}:{a}:pf-orders-api-notifications"),
            none(),
        ),
        request(
            "codestar-notifications:DescribeNotificationRule",
            &format!("arn:aws:codestar-notifications:{r}:{a}:notificationrule/abc"),
            none(),
        ),
        request("logs:DescribeLogGroups", "*", none()),
    ];
    let refused: Vec<Request> = vec![
        // Drift detection of a stack that is not pipeforge's; reading another team's project.
        request(
            "cloudformation:DetectStackDrift",
            &stack("orders-prod"),
            none(),
        ),
        request(
            "codebuild:BatchGetProjects",
            &format!("arn:aws:codebuild:{r}:{a}:project/someone-elses"),
            none(),
        ),
        request("s3:GetBucketTagging", "arn:aws:s3:::another-bucket", s3()),
        // Drift reads are reads: no key use, no edit of what it reads.
        request(
            "kms:Decrypt",
            &format!("arn:aws:kms:{r}:{a}:key/1234"),
            none(),
        ),
        request(
            "codebuild:UpdateProject",
            &format!("arn:aws:codebuild:{r}:{a}:project/pf-orders-api-build"),
            none(),
        ),
        // Another role, or none: CloudFormation would run with the caller's or another's rights.
        request(
            "cloudformation:CreateChangeSet",
            &stack("pf-orders-api-pipeline"),
            with_role(&format!("arn:aws:iam::{a}:role/admin")),
        ),
        request(
            "cloudformation:CreateChangeSet",
            &stack("pf-orders-api-pipeline"),
            Context::knowing(&["cloudformation:RoleArn"]),
        ),
        // Another team's application stack, or a change set that is not pipeforge's.
        request(
            "cloudformation:CreateChangeSet",
            &stack("orders-prod"),
            with_role(&exec),
        ),
        request(
            "cloudformation:ExecuteChangeSet",
            &stack("pf-orders-api-pipeline"),
            change_set("evil"),
        ),
        request("iam:PassRole", &exec, pass("lambda.amazonaws.com")),
        request(
            "iam:PassRole",
            &format!("arn:aws:iam::{a}:role/admin"),
            pass("cloudformation.amazonaws.com"),
        ),
        request("s3:PutObject", "arn:aws:s3:::another-bucket/x", s3()),
        request(
            "kms:Decrypt",
            &format!("arn:aws:kms:{r}:{a}:key/other"),
            none(),
        ),
        request(
            "codepipeline:StartPipelineExecution",
            &format!("arn:aws:codepipeline:{r}:{a}:someone-elses"),
            none(),
        ),
        // The source bucket is never emptied; no other bucket either.
        request(
            "s3:DeleteObjectVersion",
            &format!("{bucket}/payments/orders-api/source.zip"),
            s3(),
        ),
        request("s3:ListBucketVersions", &bucket, s3()),
        request(
            "s3:DeleteObjectVersion",
            "arn:aws:s3:::other-bucket/x",
            s3(),
        ),
        request(
            "iam:CreateRole",
            &format!("arn:aws:iam::{a}:role/pf-x"),
            none(),
        ),
    ];
    let bucket_policy = {
        let doc = tpl
            .resolve(&t["Resources"]["SourceBucketPolicy"]["Properties"]["PolicyDocument"])
            .expect("bucket policy");
        pipeforge::iam::eval::Policy::parse("SourceBucketPolicy", &doc).expect("policy")
    };
    let role = deployer_in(&bootstrap, &file, &env);
    let who = pipeforge::iam::eval::Who::role(&format!("arn:aws:iam::{a}:role/{}", role.role));
    let allowed = |role: &RolePolicies, q: &Request| {
        let identity = role.decide(q) == Decision::Allow;
        let resource = !q.resource.starts_with(&bucket)
            || !matches!(
                pipeforge::iam::eval::evaluate_resource(&bucket_policy, &who, q),
                pipeforge::iam::eval::ResourceDecision::ExplicitDeny(_)
            );
        identity && resource
    };
    for q in &needed {
        assert!(allowed(&role, q), "needed, refused: {}", q.action);
    }
    for q in &refused {
        assert!(
            !allowed(&role, q),
            "allowed beyond the need: {} on {}",
            q.action,
            q.resource
        );
    }
    // Owner records and locks are the home account's: nobody writes one here.
    let record = request(
        "s3:PutObject",
        &format!("{bucket}/pipelines/orders-api/owner.json"),
        s3(),
    );
    assert!(!allowed(&role, &record));
    let deployer = &t["Resources"]["ToolingAccountDeployer"]["Properties"]["PolicyDocument"];
    // IAM's limit of a managed policy (6,144 characters without white space), with room for a
    // prefix of the longest length the org schema allows (20, here 2; 18 names carry it).
    let resolved = tpl.resolve(deployer).expect("resolves");
    let chars = serde_json::to_string(&resolved).expect("json").len();
    assert!(
        chars + 18 * 18 <= 6_144,
        "the deployer policy is {chars} characters"
    );
    // Every Allow statement is needed.
    let statements = deployer["Statement"].as_array().expect("statements");
    for (i, st) in statements.iter().enumerate() {
        if st["Effect"] != "Allow" {
            continue;
        }
        let mut doc = deployer.clone();
        doc["Statement"].as_array_mut().expect("array").remove(i);
        let mut without = bootstrap_role(&bootstrap, "target.json", "BootstrapRole", &env);
        let resolved = tpl.resolve(&doc).expect("resolves");
        without
            .identity
            .push(pipeforge::iam::eval::Policy::parse("without", &resolved).expect("policy"));
        assert!(
            needed.iter().any(|q| !allowed(&without, q)),
            "statement `{}` is not needed by any request",
            st["Sid"]
        );
    }
}
