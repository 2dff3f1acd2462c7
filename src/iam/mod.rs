//! IAM sufficiency and escalation checks over rendered stacks, as data (no AWS call).
//!
//! - [`eval`]: a small, conservative IAM policy evaluator (identity policies and boundaries).
//! - [`resolve`]: a template seen from an account and region (intrinsics, ARNs, role policies).
//! - [`handlers`]: the CloudFormation handler permissions each resource needs
//!   (`ci/iam/handler-permissions.json`, generated from the provider schemas).
//! - [`runtime`]: what the roles need when they run (CodeBuild, CodePipeline, EventBridge,
//!   the deploy roles, the Lambda functions), from AWS documentation; [`gates`]: what each
//!   gate's buildspec makes its role call (secrets, parameters, registries).
//! - [`resource`]: the key, bucket and topic policies, and what service principals need.
//!
//! [`deploy_check`] proves that the CloudFormation execution role of the org's bootstrap allows
//! every handler permission of every stack a pipeline deploys, on the resources it acts on;
//! [`runtime_check`] does the same for the roles the stacks create; [`resource_check`] proves
//! that the resource policies let all of them (and the service principals) through. Each
//! prints what is missing per role.

pub mod eval;
pub mod gates;
pub mod handlers;
pub mod resolve;
pub mod resource;
pub mod runtime;

use serde_json::Value as Json;

use std::collections::{BTreeMap, BTreeSet};

use crate::outputs::Outputs;
use eval::{Decision, Request, RolePolicies, Who};
use handlers::Requirement;
use resolve::{Env, Template};
use resource::ResourcePolicies;
use runtime::RoleNeeds;

/// Every documented need the checks implement, with its source: the runtime table.
pub fn rules() -> Vec<&'static runtime::Rule> {
    runtime::RULES
        .iter()
        .chain(gates::RULES)
        .chain(runtime::LAMBDA_RULES)
        .chain(runtime::INSTALL_RULES)
        .chain(resource::SERVICE_RULES)
        .collect()
}

/// [`rules`] as a Markdown table (the README shows it; a test keeps it current).
pub fn rules_table() -> String {
    let mut out = String::from("| who | actions | on what | source |\n|---|---|---|---|\n");
    for r in rules() {
        let actions: Vec<String> = r.actions.iter().map(|a| format!("`{a}`")).collect();
        let page = r
            .source
            .trim_start_matches("https://docs.aws.amazon.com/")
            .split(['#', '.'])
            .next()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | [{page}]({}) |\n",
            r.role,
            actions.join(", "),
            r.resource.replace('|', "\\|"),
            r.source
        ));
    }
    out
}

/// Logical id of the CloudFormation execution role in both bootstrap stacks.
pub const EXECUTION_ROLE_ID: &str = "CloudFormationExecutionRole";

/// A request a role needs and does not get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The role.
    pub role: String,
    /// What it asks.
    pub request: Request,
    /// Why it is refused.
    pub decision: Decision,
    /// Who needs it.
    pub why: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ctx = self.request.context.describe();
        write!(
            f,
            "role `{}` cannot `{}` on `{}`{} ({}; needed by {})",
            self.role,
            self.request.action,
            self.request.resource,
            if ctx.is_empty() {
                String::new()
            } else {
                format!(" with {ctx}")
            },
            match &self.decision {
                Decision::ExplicitDeny(s) => format!("denied by {s}"),
                Decision::ImplicitDeny => "not allowed".to_owned(),
                Decision::Allow => "allowed".to_owned(),
            },
            self.why
        )
    }
}

/// Evaluates every requirement against a role.
pub fn check(role: &RolePolicies, requirements: &[Requirement]) -> Vec<Missing> {
    requirements
        .iter()
        .filter_map(|r| {
            let d = role.decide(&r.request);
            (d != Decision::Allow).then(|| Missing {
                role: role.role.clone(),
                request: r.request.clone(),
                decision: d,
                why: r.why.clone(),
            })
        })
        .collect()
}

/// What is missing, grouped by role, one line each.
pub fn report(missing: &[Missing]) -> String {
    let mut by_role: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for m in missing {
        by_role.entry(&m.role).or_default().push(m.to_string());
    }
    let mut out = String::new();
    for (role, lines) in by_role {
        out.push_str(&format!(
            "role `{role}` lacks {} permission(s):\n",
            lines.len()
        ));
        for l in lines {
            out.push_str(&format!("  - {l}\n"));
        }
    }
    out
}

/// A stack of a rendered bundle, as its `plan.json` lists it.
#[derive(Clone, Debug)]
pub struct BundleStack {
    /// Stack name.
    pub name: String,
    /// `target`, `region` or `pipeline`.
    pub kind: String,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// The template.
    pub template: Json,
}

/// The stacks of a rendered bundle (one pipeline's outputs), from its `plan.json`.
pub fn bundle_stacks(bundle: &Outputs) -> Result<Vec<BundleStack>, String> {
    let (plan_path, plan) = bundle
        .iter()
        .find(|(p, _)| p.ends_with("plan.json"))
        .ok_or("the bundle has no plan.json")?;
    let dir = plan_path.strip_suffix("plan.json").unwrap_or_default();
    let plan: Json = serde_json::from_slice(plan).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for s in plan["stacks"].as_array().ok_or("plan.json has no stacks")? {
        let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
        let file = format!("{dir}{}", field("file"));
        let text = bundle
            .text(&file)
            .ok_or_else(|| format!("`{file}` is missing from the bundle"))?;
        out.push(BundleStack {
            name: field("name"),
            kind: field("kind"),
            account: field("account"),
            region: field("region"),
            template: serde_json::from_str(text).map_err(|e| e.to_string())?,
        });
    }
    Ok(out)
}

fn bootstrap_template(bootstrap: &Outputs, file: &str) -> Result<Json, String> {
    let text = bootstrap
        .text(file)
        .ok_or_else(|| format!("the bootstrap has no `{file}`"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// The execution role CloudFormation deploys a stack of `kind` with, seen from `env`: the one
/// of `target.json` for target stacks, of `tooling.json` for the others.
pub fn execution_role(bootstrap: &Outputs, kind: &str, env: &Env) -> Result<RolePolicies, String> {
    let file = if kind == "target" {
        "target.json"
    } else {
        "tooling.json"
    };
    let t = bootstrap_template(bootstrap, file)?;
    Template::new(&t, env.clone())
        .role_policies(EXECUTION_ROLE_ID)
        .map_err(|e| format!("{file}: {e}"))
}

/// Every handler permission of every stack of `bundle` against the execution role that deploys
/// it (from `bootstrap`, the org's `pipeforge bootstrap` output): what is missing.
pub fn deploy_check(bundle: &Outputs, bootstrap: &Outputs) -> Result<Vec<Missing>, String> {
    let mut out = Vec::new();
    for s in bundle_stacks(bundle)? {
        let env = Env::new(&s.account, &s.region);
        let role = execution_role(bootstrap, &s.kind, &env)?;
        let reqs = handlers::stack_requirements(&Template::new(&s.template, env), &s.name)?;
        out.extend(check(&role, &reqs));
    }
    Ok(out)
}

/// The stacks of a bundle as templates in their accounts, with the pipeline stack's regional
/// key parameters set to the keys of the region stacks.
fn templates(stacks: &[BundleStack]) -> Vec<(&BundleStack, Template<'_>)> {
    let region_keys: BTreeMap<String, String> = stacks
        .iter()
        .filter(|s| s.kind == "region")
        .filter_map(|s| {
            let t = Template::new(&s.template, Env::new(&s.account, &s.region));
            Some((
                crate::names::region_key_parameter(&s.region),
                t.arn_of("ArtifactKey")?,
            ))
        })
        .collect();
    stacks
        .iter()
        .map(|s| {
            let t = Template::new(&s.template, Env::new(&s.account, &s.region));
            let t = if s.kind == "pipeline" {
                t.with_params(region_keys.clone())
            } else {
                t
            };
            (s, t)
        })
        .collect()
}

/// The bootstrap stacks seen from the bundle's tooling account and a target account.
struct Bootstrap {
    tooling: Json,
    target: Json,
    tooling_env: Env,
    target_env: Env,
}

impl Bootstrap {
    fn of(bundle: &[BundleStack], bootstrap: &Outputs) -> Result<Bootstrap, String> {
        let tooling_env = bundle
            .iter()
            .find(|s| s.kind == "pipeline")
            .map(|s| Env::new(&s.account, &s.region))
            .ok_or("the bundle has no pipeline stack")?;
        let target_env = bundle
            .iter()
            .find(|s| s.kind == "target")
            .map_or_else(|| tooling_env.clone(), |s| Env::new(&s.account, &s.region));
        Ok(Bootstrap {
            tooling: bootstrap_template(bootstrap, "tooling.json")?,
            target: bootstrap_template(bootstrap, "target.json")?,
            tooling_env,
            target_env,
        })
    }

    fn tooling(&self) -> Template<'_> {
        Template::new(&self.tooling, self.tooling_env.clone())
    }

    /// The key of the source bucket, as `tooling.json` sets it.
    fn source_key(&self) -> Option<String> {
        let t = self.tooling();
        let enc = t
            .json
            .pointer("/Resources/SourceBucket/Properties/BucketEncryption")?;
        let enc = t.resolve(enc)?;
        enc.pointer(
            "/ServerSideEncryptionConfiguration/0/ServerSideEncryptionByDefault/KMSMasterKeyID",
        )?
        .as_str()
        .map(str::to_owned)
    }
}

/// Every role the stacks of `bundle` create, and the installation's, with what it needs at run
/// time ([`runtime`], [`gates`]). KMS requests carry the key's aliases (`kms:ResourceAliases`),
/// as KMS sends them.
pub fn runtime_roles(bundle: &Outputs, bootstrap: &Outputs) -> Result<Vec<RoleNeeds>, String> {
    let stacks = bundle_stacks(bundle)?;
    let boot = Bootstrap::of(&stacks, bootstrap)?;
    let external = |t: &Json, env: &Env| Template::new(t, env.clone()).managed_policies();
    let source_key = boot.source_key();
    let tpls = templates(&stacks);
    let targets: Vec<Template<'_>> = tpls
        .iter()
        .filter(|(s, _)| s.kind == "target")
        .map(|(_, t)| Template::new(t.json, t.env.clone()))
        .collect();
    let mut out = Vec::new();
    for (s, tpl) in tpls.iter().filter(|(s, _)| s.kind == "pipeline") {
        out.extend(runtime::stack_roles(
            tpl,
            &s.name,
            &external(&boot.tooling, &tpl.env),
            source_key.as_deref(),
        )?);
        let of_target = |t: &Template<'_>| external(&boot.target, &t.env);
        out.extend(runtime::target_roles(tpl, &s.name, &targets, &of_target)?);
    }
    // The installation's roles, the tooling stack seen from the pipeline's tooling account.
    for (t, env) in [
        (&boot.tooling, &boot.tooling_env),
        (&boot.target, &boot.target_env),
    ] {
        let tpl = Template::new(t, env.clone());
        out.extend(runtime::install_roles(&tpl, &boot.target_env.account)?);
    }
    let mut aliases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, t) in &tpls {
        aliases.extend(resource::key_aliases(t));
    }
    aliases.extend(resource::key_aliases(&boot.tooling()));
    for r in &mut out {
        for n in &mut r.needs {
            let q = &mut n.request;
            if let Some(names) = aliases.get(&q.resource)
                && q.action.starts_with("kms:")
            {
                for a in names {
                    q.context = q.context.clone().with("kms:ResourceAliases", a.as_str());
                }
            }
        }
    }
    Ok(out)
}

/// The roles the stacks of `bundle` create (and the installation's), against what they need at
/// run time: what is missing.
pub fn runtime_check(bundle: &Outputs, bootstrap: &Outputs) -> Result<Vec<Missing>, String> {
    Ok(runtime_roles(bundle, bootstrap)?
        .iter()
        .flat_map(|r| check(&r.policies, &r.needs))
        .collect())
}

/// The resource policies of `bundle`'s stacks and of the bootstrap's tooling stack.
pub fn resource_policies(
    bundle: &Outputs,
    bootstrap: &Outputs,
) -> Result<ResourcePolicies, String> {
    let stacks = bundle_stacks(bundle)?;
    let boot = Bootstrap::of(&stacks, bootstrap)?;
    let mut index = ResourcePolicies::default();
    for (s, t) in templates(&stacks) {
        index.add(&t, &s.name)?;
    }
    index.add(&boot.tooling(), "tooling.json")?;
    Ok(index)
}

/// Whose requests reach which resources: every runtime role's needs, the execution roles'
/// handler permissions, and the service principals' needs, each with its principal.
pub fn principal_needs(
    bundle: &Outputs,
    bootstrap: &Outputs,
) -> Result<Vec<(Who, Requirement)>, String> {
    let mut out = Vec::new();
    for r in runtime_roles(bundle, bootstrap)? {
        let who = Who::role(&r.arn);
        out.extend(r.needs.into_iter().map(|n| (who.clone(), n)));
    }
    let stacks = bundle_stacks(bundle)?;
    let boot = Bootstrap::of(&stacks, bootstrap)?;
    for (s, t) in templates(&stacks) {
        let exec = execution_role_arn(bootstrap, &s.kind, &t.env)?;
        let who = Who::role(&exec);
        for n in handlers::stack_requirements(&t, &s.name)? {
            out.push((who.clone(), n));
        }
        out.extend(resource::service_needs(&t, &s.name));
    }
    out.extend(resource::service_needs(&boot.tooling(), "tooling.json"));
    Ok(out)
}

/// The ARN of the execution role that deploys a stack of `kind` at `env`.
fn execution_role_arn(bootstrap: &Outputs, kind: &str, env: &Env) -> Result<String, String> {
    let file = if kind == "target" {
        "target.json"
    } else {
        "tooling.json"
    };
    let t = bootstrap_template(bootstrap, file)?;
    Template::new(&t, env.clone())
        .arn_of(EXECUTION_ROLE_ID)
        .ok_or_else(|| format!("{file} has no `{EXECUTION_ROLE_ID}`"))
}

/// What the resource policies of `index` refuse of `needs`.
pub fn resource_missing(index: &ResourcePolicies, needs: &[(Who, Requirement)]) -> Vec<Missing> {
    needs
        .iter()
        .filter_map(|(who, n)| {
            let (d, policy) = index.decide(who, &n.request)?;
            (d != Decision::Allow).then(|| Missing {
                role: who.name().to_owned(),
                request: n.request.clone(),
                decision: d,
                why: format!("{}; checked against the {policy}", n.why),
            })
        })
        .collect()
}

/// The resource side: every key, bucket and topic policy of the stacks (and of the bootstrap's
/// tooling stack) against every request that reaches it — what is missing.
pub fn resource_check(bundle: &Outputs, bootstrap: &Outputs) -> Result<Vec<Missing>, String> {
    let index = resource_policies(bundle, bootstrap)?;
    Ok(resource_missing(
        &index,
        &principal_needs(bundle, bootstrap)?,
    ))
}
