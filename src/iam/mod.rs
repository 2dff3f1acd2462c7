//! IAM sufficiency and escalation checks over rendered stacks, as data (no AWS call).
//!
//! - [`eval`]: a small, conservative IAM policy evaluator (identity policies and boundaries).
//! - [`resolve`]: a template seen from an account and region (intrinsics, ARNs, role policies).
//! - [`handlers`]: the CloudFormation handler permissions each resource needs
//!   (`ci/iam/handler-permissions.json`, generated from the provider schemas).
//! - [`runtime`]: what the roles need when they run (CodeBuild, CodePipeline, EventBridge,
//!   the deploy roles, the Lambda functions), from AWS documentation.
//!
//! [`deploy_check`] proves that the CloudFormation execution role of the org's bootstrap allows
//! every handler permission of every stack a pipeline deploys, on the resources it acts on;
//! [`runtime_check`] does the same for the roles the stacks create. Both print what is missing
//! per role.

pub mod eval;
pub mod handlers;
pub mod resolve;
pub mod runtime;

use serde_json::Value as Json;

use crate::outputs::Outputs;
use eval::{Decision, Request, RolePolicies};
use handlers::Requirement;
use resolve::{Env, Template};

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
                _ => "not allowed".to_owned(),
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

/// The roles the stacks of `bundle` create, against what they need at run time ([`runtime`]):
/// what is missing.
pub fn runtime_check(bundle: &Outputs, bootstrap: &Outputs) -> Result<Vec<Missing>, String> {
    let tooling = bootstrap_template(bootstrap, "tooling.json")?;
    let target = bootstrap_template(bootstrap, "target.json")?;
    let external = |t: &Json, env: &Env| Template::new(t, env.clone()).managed_policies();
    let stacks = bundle_stacks(bundle)?;
    let mut out = Vec::new();
    let targets: Vec<Template<'_>> = stacks
        .iter()
        .filter(|s| s.kind == "target")
        .map(|s| Template::new(&s.template, Env::new(&s.account, &s.region)))
        .collect();
    for s in stacks.iter().filter(|s| s.kind == "pipeline") {
        let tpl = Template::new(&s.template, Env::new(&s.account, &s.region));
        for (role, reqs) in runtime::stack_roles(&tpl, &s.name, &external(&tooling, &tpl.env))? {
            out.extend(check(&role, &reqs));
        }
        let of_target = |t: &Template<'_>| external(&target, &t.env);
        for (role, reqs) in runtime::target_roles(&tpl, &s.name, &targets, &of_target)? {
            out.extend(check(&role, &reqs));
        }
    }
    // The installation's roles, the tooling stack seen from the pipeline's tooling account.
    let tooling_env = stacks
        .iter()
        .find(|s| s.kind == "pipeline")
        .map(|s| Env::new(&s.account, &s.region))
        .ok_or("the bundle has no pipeline stack")?;
    let target_env = stacks
        .iter()
        .find(|s| s.kind == "target")
        .map_or_else(|| tooling_env.clone(), |s| Env::new(&s.account, &s.region));
    for (t, env) in [(&tooling, &tooling_env), (&target, &target_env)] {
        let tpl = Template::new(t, env.clone());
        for (role, reqs) in runtime::install_roles(&tpl, &target_env.account)? {
            out.extend(check(&role, &reqs));
        }
    }
    Ok(out)
}
