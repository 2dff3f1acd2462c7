//! `environments`: unique names, approvals (never off in production), regions the org allows,
//! and accounts that can use the org's execution policies; parameters on top of the deploy's.

use std::collections::BTreeMap;

use super::{Ctx, Environment, Origin, Sourced, backticks};
use crate::manifest::RawManifest;

/// The environments in promotion order (those without a name or an account are left out; the
/// schema check reported them). `deploy_params` are the parameters every environment starts
/// from.
pub(super) fn environments(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    deploy_params: &BTreeMap<String, String>,
) -> Vec<Environment> {
    let mut environments = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in raw
        .environments
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let base = format!("environments[{i}]");
        if let Some(name) = &e.name
            && let Some(first) = names.insert(name.clone(), i)
        {
            cx.err(&format!("{base}.name"), format!("environment `{name}` is listed twice"), format!("environment names must be unique; `environments[{first}]` already uses `{name}`"));
        }
        let (Some(name), Some(account)) = (e.name.clone(), e.account.clone()) else {
            continue;
        };
        let production = cx.org.is_production(&name);
        let approval = approval(cx, &base, &name, production, e.approval);
        let region = region(cx, &base, e.region);
        check_execution_policies(cx, &base, &account);
        let mut parameters = deploy_params.clone();
        for (k, v) in e.parameters.unwrap_or_default() {
            parameters.insert(k, v.0);
        }
        environments.push(Environment {
            name,
            account,
            region,
            production,
            approval,
            parameters,
        });
    }
    environments
}

/// Whether a manual approval precedes the deployment: always in production.
fn approval(
    cx: &mut Ctx<'_>,
    base: &str,
    name: &str,
    production: bool,
    approval: Option<bool>,
) -> Sourced<bool> {
    match approval {
        Some(false) if production => {
            let rule = cx.org.cite("environments.production");
            cx.err(&format!("{base}.approval"), format!("`{name}` is a production environment; its approval cannot be turned off"), format!("remove `approval: false`; production deploys always wait for a manual approval (org rule {rule})"));
            Sourced::new(true, Origin::Org)
        }
        Some(a) => Sourced::new(
            a || production,
            if production {
                Origin::Org
            } else {
                Origin::Team
            },
        ),
        None if production => Sourced::new(true, Origin::Org),
        None => Sourced::new(false, Origin::Default),
    }
}

/// The environment's region (else the tooling region), which the org must allow.
fn region(cx: &mut Ctx<'_>, base: &str, region: Option<String>) -> Sourced<String> {
    let org = &cx.org.org;
    let region = match region {
        Some(r) => Sourced::new(r, Origin::Team),
        None => Sourced::new(org.tooling.region.clone(), Origin::Org),
    };
    if !org.environments.allowed_regions.is_empty()
        && !org.environments.allowed_regions.contains(&region.value)
    {
        let rule = cx.org.cite("environments.allowed_regions");
        let path = if region.from == Origin::Team {
            format!("{base}.region")
        } else {
            base.to_owned()
        };
        cx.err(
            &path,
            format!(
                "region `{}` is not allowed by the organisation",
                region.value
            ),
            format!(
                "use one of {} (org rule {rule})",
                backticks(&org.environments.allowed_regions)
            ),
        );
    }
    region
}

/// The execution role in `account` can use every execution policy of the org.
fn check_execution_policies(cx: &mut Ctx<'_>, base: &str, account: &str) {
    let org = &cx.org.org;
    // The execution role in this account can only attach AWS managed policies, policies of
    // this account, or policies given by name (which must exist in every target account).
    let dep = &org.deploy;
    let policies = dep
        .execution_policy_arns
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("deploy.execution_policy_arns[{i}]"), p))
        .chain(
            dep.permissions_boundary
                .iter()
                .map(|p| ("deploy.permissions_boundary".to_owned(), p)),
        );
    for (rule_path, policy) in policies {
        let owner = policy
            .strip_prefix("arn:")
            .and_then(|r| r.split(':').nth(3))
            .filter(|o| *o != "aws");
        if let Some(owner) = owner
            && owner != account
        {
            let rule = cx.org.cite(&rule_path);
            cx.err(
                &format!("{base}.account"),
                format!("the organisation's execution policy `{policy}` belongs to account {owner}, so no role in {account} can use it"),
                format!("in the org policy, name the policy instead (it must exist in every target account) or use an AWS managed policy (org rule {rule})"),
            );
        }
    }
}
