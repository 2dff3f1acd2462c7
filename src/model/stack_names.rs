//! Stack names that cannot collide: the application stack (`deploy.stack_name`, by default the
//! pipeline's name) never takes the form of pipeforge's own stacks, and environment names never
//! hold the words those names end with; across manifests validated together, no two pipelines
//! claim the same stack or role.
//!
//! Why: the bootstrap's roles drive CloudFormation on every stack named like pipeforge's
//! (`<prefix>-*-pipeline`, `<prefix>-*-artifacts-*`, `<prefix>-*-target`), and a pipeline's
//! deploy role changes whatever stack bears its application stack's name. An application stack
//! named `pf-billing-prod-target` would let one team's pipeline replace another pipeline's
//! deploy roles, and pipeforge's next deploy of `billing` would replace the application. Names
//! are joined with `-`, so `orders` + `api-target` and `orders-api` + `target` both make
//! `pf-orders-api-target-target`: a single manifest cannot see the other pipeline, so the words
//! are reserved here and [`collisions`] compares the manifests given together (`validate` and
//! `render` with several manifests).

use std::collections::BTreeMap;

use super::{Ctx, Deploy, Environment, Model, Origin};
use crate::error::Diagnostic;
use crate::names::{
    OWN_STACK_PATTERNS, STACK_NAME_WORDS, expand, pipeline_stack_name, region_stack_name,
    target_stack_name,
};
use crate::org::{OrgPolicy, glob_match};

/// The pattern of pipeforge's own stack names that `stack` matches, if any (ignoring case:
/// CloudFormation compares stack names without it in some APIs, and no name should rely on it).
pub fn own_stack_pattern(prefix: &str, stack: &str) -> Option<String> {
    let lower = stack.to_ascii_lowercase();
    OWN_STACK_PATTERNS
        .iter()
        .map(|p| p.replace("{prefix}", &prefix.to_ascii_lowercase()))
        .find(|p| glob_match(p, &lower))
}

/// Checks the application stack's name and the environment names of one manifest.
pub(super) fn check(
    cx: &mut Ctx<'_>,
    pipeline: Option<&str>,
    deploy: Option<&Deploy>,
    environments: &[Environment],
) {
    let prefix = cx.org.org.naming.prefix.clone();
    if let Some(d) = deploy {
        let stack = &d.stack_name.value;
        if let Some(pattern) = own_stack_pattern(&prefix, stack) {
            let (path, help) = if d.stack_name.from == Origin::Team {
                (
                    "deploy.stack_name",
                    format!(
                        "choose another `deploy.stack_name`: names of the form `{pattern}` belong to pipeforge's own stacks, which the deploy roles of this pipeline must never change"
                    ),
                )
            } else {
                (
                    "name",
                    format!(
                        "the application stack is named after the pipeline; set `deploy.stack_name` to a name that is not of the form `{pattern}` (pipeforge's own stacks)"
                    ),
                )
            };
            cx.err(
                path,
                format!("application stack `{stack}` would be named like pipeforge's own stacks (`{pattern}`)"),
                help,
            );
        }
    }
    for (i, e) in environments.iter().enumerate() {
        let words: Vec<&str> = e
            .name
            .split('-')
            .filter(|w| STACK_NAME_WORDS.contains(w))
            .collect();
        if let Some(word) = words.first() {
            cx.err(
                &format!("environments[{i}].name"),
                format!(
                    "environment name `{}` holds `{word}`, a word that ends pipeforge's stack names",
                    e.name
                ),
                format!(
                    "rename the environment without `pipeline`, `artifacts` or `target`: its target stack `{}` would read as another stack's name (pipeline `orders` with environment `api-target` and pipeline `orders-api` with environment `target` would share one)",
                    target_stack_name(&prefix, pipeline.unwrap_or("<pipeline>"), &e.name)
                ),
            );
        }
    }
}

/// What a pipeline claims: stacks by (account, region, name), roles by (account, name).
fn claims(model: &Model, org: &OrgPolicy) -> Vec<(String, String)> {
    let o = &org.org;
    let (p, n) = (o.naming.prefix.as_str(), model.name.as_str());
    let mut out = vec![(
        format!(
            "stack `{}` in account {} ({})",
            pipeline_stack_name(p, n),
            o.tooling.account,
            o.tooling.region
        ),
        "its pipeline stack".to_owned(),
    )];
    for e in &model.environments {
        let (a, r) = (&e.account, &e.region.value);
        out.push((
            format!(
                "stack `{}` in account {a} ({r})",
                target_stack_name(p, n, &e.name)
            ),
            format!("the target stack of environment `{}`", e.name),
        ));
        out.push((
            format!(
                "stack `{}` in account {a} ({r})",
                model.deploy.stack_name.value
            ),
            format!("the application stack of environment `{}`", e.name),
        ));
        for (what, pattern) in [
            ("deploy role", &o.deploy.deploy_role),
            ("execution role", &o.deploy.execution_role),
        ] {
            out.push((
                format!("role `{}` in account {a}", expand(pattern, p, n, &e.name)),
                format!("the {what} of environment `{}`", e.name),
            ));
        }
        if *r != o.tooling.region {
            out.push((
                format!(
                    "stack `{}` in account {} ({r})",
                    region_stack_name(p, n, r),
                    o.tooling.account
                ),
                format!("its artifact store in {r}"),
            ));
        }
    }
    out
}

/// The stacks and roles that two of `models` (manifests validated or rendered together) would
/// both claim, one problem per claim, reported at the later manifest.
pub fn collisions(models: &[&Model], org: &OrgPolicy) -> Vec<Diagnostic> {
    let mut owner: BTreeMap<String, (&Model, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for m in models {
        for (claim, what) in claims(m, org) {
            match owner.get(&claim) {
                Some((first, first_what)) if first.name != m.name => {
                    out.push(Diagnostic::file_level(
                        m.file.clone(),
                        format!(
                            "pipelines `{}` and `{}` ({}) would both use {claim}: {what} of `{}`, {first_what} of `{}`",
                            m.name, first.name, first.file, m.name, first.name
                        ),
                        "rename a pipeline, an environment or `deploy.stack_name`: pipeforge's names join the pipeline and environment names with `-`, so e.g. `orders` + `api-dev` and `orders-api` + `dev` make the same name",
                    ));
                }
                Some(_) => {}
                None => {
                    owner.insert(claim, (m, what));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stack_patterns_match_whatever_the_case() {
        for (name, hit) in [
            ("pf-billing-pipeline", Some("pf-*-pipeline")),
            ("PF-Billing-Prod-Target", Some("pf-*-target")),
            ("pf-billing-artifacts-eu-west-1", Some("pf-*-artifacts-*")),
            ("pf--target", Some("pf-*-target")),
            ("pf-billing", None),
            ("billing-pipeline", None),
            ("acme-billing-pipeline", None),
            ("orders-api", None),
        ] {
            assert_eq!(own_stack_pattern("pf", name).as_deref(), hit, "{name}");
        }
        assert_eq!(
            own_stack_pattern("acme", "acme-x-target").as_deref(),
            Some("acme-*-target")
        );
    }
}
