//! The check pass: every parsed stack is checked as data before it joins the outputs, in this
//! order: its shape, its structure against the plan (the pipeline stack runs exactly the plan,
//! a target stack creates the roles the pipeline uses), the AWS quotas; then the org policy
//! rules over all stacks together.

use crate::render::tree::Node;

use super::context::env_names;
use super::{HELP_TEMPLATE, Rendered, fail, missing};
use crate::error::Result;
use crate::org::OrgPolicy;
use crate::outputs::Outputs;
use crate::plan::{Plan, StackKind, StackPlan};
use crate::policy::{self, Facts, StackDoc};
use crate::quota;
use crate::render::JSON_HEADER;

/// Checks one parsed stack: its shape, its structure against the plan, then the quotas (for the
/// pipeline stack, first those of the buildspecs it inlines).
pub(super) fn stack(plan: &Plan, stack: &StackPlan, t: &Node, buildspecs: &Outputs) -> Result<()> {
    let file = &stack.file;
    check_shape(plan, file, t, kind_name(stack.kind))?;
    match stack.kind {
        StackKind::Pipeline => {
            check_pipeline(plan, file, t, buildspecs)?;
            check_inline_buildspecs(plan, buildspecs)?;
        }
        StackKind::Target => {
            let env = stack.environment.as_deref().unwrap_or_default();
            check_target(plan, file, t, env)?;
        }
        StackKind::Region => {}
    }
    quota::check_stack(plan, file, t, &stack.account, &stack.region)
}

/// Checks the org policy rules over every stack of the plan together.
pub(super) fn policy(plan: &Plan, org: &OrgPolicy, rendered: &[Rendered<'_>]) -> Result<()> {
    let docs: Vec<StackDoc<'_>> = rendered
        .iter()
        .map(|r| StackDoc::new(&r.stack.file, r.stack.kind, &r.template))
        .collect();
    policy::check(&docs, &Facts { plan, org })
}

/// The `stack` value of a stack's `Metadata.pipeforge`.
fn kind_name(kind: StackKind) -> &'static str {
    match kind {
        StackKind::Target => "target",
        StackKind::Region => "region",
        StackKind::Pipeline => "pipeline",
    }
}

/// The CodeBuild quota of every buildspec the pipeline stack inlines.
fn check_inline_buildspecs(plan: &Plan, buildspecs: &Outputs) -> Result<()> {
    for g in &plan.gates {
        let text = buildspecs
            .text(&g.buildspec)
            .ok_or_else(|| missing(plan, &format!("the buildspec of gate `{}`", g.name)))?;
        quota::check_buildspec(plan, g, text)?;
    }
    Ok(())
}

/// Checks the shape every stack must have: format version, the pipeforge header in
/// `Description`, the `Metadata.pipeforge` block, and resources.
fn check_shape(plan: &Plan, file: &str, t: &Node, kind: &str) -> Result<()> {
    if t.get("AWSTemplateFormatVersion").and_then(Node::as_str) != Some("2010-09-09") {
        return Err(fail(
            plan,
            file,
            "`AWSTemplateFormatVersion` must be \"2010-09-09\"",
            HELP_TEMPLATE,
        ));
    }
    let desc = t.get("Description").and_then(Node::as_str).unwrap_or("");
    if !desc.starts_with(JSON_HEADER) {
        return Err(fail(
            plan,
            file,
            "`Description` does not start with the pipeforge header",
            format!("start `Description` with \"{JSON_HEADER}\""),
        ));
    }
    let meta = t.get("Metadata").and_then(|m| m.get("pipeforge"));
    let meta_ok = meta.and_then(|m| m.get("pipeline")).and_then(Node::as_str)
        == Some(plan.pipeline.name.as_str())
        && meta.and_then(|m| m.get("team")).and_then(Node::as_str)
            == Some(plan.pipeline.team.as_str())
        && meta.and_then(|m| m.get("stack")).and_then(Node::as_str) == Some(kind);
    if !meta_ok {
        return Err(fail(
            plan,
            file,
            format!("`Metadata.pipeforge` must name the pipeline, the team and `stack: {kind}`"),
            HELP_TEMPLATE,
        ));
    }
    if !t.get("Resources").is_some_and(Node::is_object) {
        return Err(fail(plan, file, "`Resources` is missing", HELP_TEMPLATE));
    }
    Ok(())
}

/// The pipeline stack runs exactly the plan: every stage and action in order, every gate in
/// its own CodeBuild project with the rendered buildspec, the deploys through the right roles.
fn check_pipeline(plan: &Plan, file: &str, t: &Node, buildspecs: &Outputs) -> Result<()> {
    let res = t.get("Resources").and_then(Node::as_object);
    let mut pipelines = res.into_iter().flatten().filter(|(_, r)| {
        r.get("Type").and_then(Node::as_str) == Some("AWS::CodePipeline::Pipeline")
    });
    let (Some((_, pipeline)), None) = (pipelines.next(), pipelines.next()) else {
        return Err(fail(
            plan,
            file,
            "the stack must declare exactly one AWS::CodePipeline::Pipeline",
            HELP_TEMPLATE,
        ));
    };
    let props = pipeline.get("Properties").unwrap_or(&Node::Null);
    if props.get("Name").and_then(Node::as_str) != Some(plan.names.pipeline.as_str()) {
        return Err(fail(
            plan,
            file,
            format!("the pipeline must be named `{}`", plan.names.pipeline),
            HELP_TEMPLATE,
        ));
    }
    let stages = props
        .get("Stages")
        .and_then(Node::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let got: Vec<&str> = stages
        .iter()
        .map(|s| s.get("Name").and_then(Node::as_str).unwrap_or("?"))
        .collect();
    let want: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    if got != want {
        return Err(fail(
            plan,
            file,
            format!("the pipeline's stages are {got:?}; the plan has {want:?}"),
            HELP_TEMPLATE,
        ));
    }
    for (ps, js) in plan.stages.iter().zip(stages) {
        let actions = js
            .get("Actions")
            .and_then(Node::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let got: Vec<(&str, i64)> = actions
            .iter()
            .map(|a| {
                (
                    a.get("Name").and_then(Node::as_str).unwrap_or("?"),
                    a.get("RunOrder").and_then(Node::as_i64).unwrap_or(0),
                )
            })
            .collect();
        let want: Vec<(&str, i64)> = ps
            .actions
            .iter()
            .map(|a| (a.name.as_str(), i64::from(a.run_order)))
            .collect();
        if got != want {
            return Err(fail(
                plan,
                file,
                format!(
                    "stage `{}` has actions {got:?}; the plan has {want:?} (name, run order)",
                    ps.name
                ),
                HELP_TEMPLATE,
            ));
        }
        for (pa, ja) in ps.actions.iter().zip(actions) {
            let Some(gate) = pa.gate.as_deref().and_then(|g| plan.gate(g)) else {
                continue;
            };
            // The gate action runs the gate's own project, with the gate's buildspec.
            let project_ref = ja
                .get("Configuration")
                .and_then(|c| c.get("ProjectName"))
                .and_then(|p| p.get("Ref"))
                .and_then(Node::as_str)
                .unwrap_or("");
            let project = res.and_then(|r| r.get(project_ref)).unwrap_or(&Node::Null);
            let pp = project.get("Properties").unwrap_or(&Node::Null);
            let spec = pp
                .get("Source")
                .and_then(|s| s.get("BuildSpec"))
                .and_then(Node::as_str);
            let ok = project.get("Type").and_then(Node::as_str) == Some("AWS::CodeBuild::Project")
                && pp.get("Name").and_then(Node::as_str) == Some(gate.project.as_str())
                && spec.is_some()
                && spec == buildspecs.text(&gate.buildspec);
            if !ok {
                return Err(fail(
                    plan,
                    file,
                    format!(
                        "action `{}.{}` must run CodeBuild project `{}` with the buildspec of gate `{}` inline",
                        ps.name, pa.name, gate.project, gate.name
                    ),
                    HELP_TEMPLATE,
                ));
            }
        }
    }
    Ok(())
}

/// The target stack creates the deploy and execution roles the pipeline stack uses.
fn check_target(plan: &Plan, file: &str, t: &Node, env: &str) -> Result<()> {
    let n = env_names(plan, env)?;
    let res = t.get("Resources").and_then(Node::as_object);
    let role_names: Vec<&str> = res
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.get("Type").and_then(Node::as_str) == Some("AWS::IAM::Role"))
        .filter_map(|(_, r)| r.get("Properties")?.get("RoleName")?.as_str())
        .collect();
    for want in [&n.deploy_role, &n.execution_role] {
        if !role_names.contains(&want.as_str()) {
            return Err(fail(
                plan,
                file,
                format!("the stack must create role `{want}`, which the pipeline uses"),
                HELP_TEMPLATE,
            ));
        }
    }
    Ok(())
}
