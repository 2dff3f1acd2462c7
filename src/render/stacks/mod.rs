//! CloudFormation stacks: the path every stack takes before it joins the outputs, as separate
//! passes, one file each:
//!
//! 1. `context/` — one typed context per stack template ([`PipelineStackContext`],
//!    [`TargetStackContext`], [`RegionStackContext`]), built from the plan;
//! 2. render — through its Tera template (YAML with short-form intrinsics);
//! 3. parse back — to canonical long-form JSON as a tree borrowing the text (`to_tree`,
//!    reusing `fastyaml.rs` and `cfn.rs`);
//! 4. `check.rs` — shape, structure against the plan, AWS quotas; then the org policy rules over
//!    all stacks together;
//! 5. outputs — serialized, template size checked.
//!
//! Three templates: `stacks/target.yml.tera` (one per environment, in its account),
//! `stacks/region.yml.tera` (one per extra region, in the tooling account) and
//! `stacks/pipeline.yml.tera` (the tooling account).

mod check;
mod context;

use std::cell::OnceCell;

use super::tree::Node;

pub use context::{
    ActionContext, EnvContext, GateContext, PipelineStackContext, PolicyRef, PublishContext,
    Reader, RegionStackContext, ReportContext, SourceContext, StackHeader, StageContext,
    StoreContext, Tag, TargetStackContext, pipeline_context, region_context, target_context,
};

use super::templates::{
    TEMPLATE_PIPELINE_STACK, TEMPLATE_REGION_STACK, TEMPLATE_TARGET_STACK, Templates,
};
use crate::capacity::Footprint;
use crate::error::{Error, Result, SourceFile};
use crate::org::OrgPolicy;
use crate::outputs::Outputs;
use crate::plan::{Plan, StackPlan};
use crate::quota;
use crate::yaml::{ParseOptions, parse};
use context::StackContext;

/// A rendered stack: its plan entry and its parsed template (borrowing the rendered text).
struct Rendered<'a> {
    stack: &'a StackPlan,
    template: Node<'a>,
}

/// Renders every stack of the plan, checks them all, and returns `(file, canonical JSON)` in
/// deploy order, with what the stacks consume in each account (their footprint).
/// `buildspecs` holds the rendered buildspecs (inlined in the pipeline stack).
pub fn render(
    plan: &Plan,
    templates: &Templates,
    org: &OrgPolicy,
    buildspecs: &Outputs,
) -> Result<(Vec<(String, String)>, Footprint)> {
    // The rendered texts, one slot per stack, live as long as the trees that borrow them.
    let texts: Vec<OnceCell<String>> = plan.stacks.iter().map(|_| OnceCell::new()).collect();
    let mut rendered: Vec<Rendered<'_>> = Vec::with_capacity(plan.stacks.len());
    for (stack, slot) in plan.stacks.iter().zip(&texts) {
        let ctx = context::for_stack(plan, org, templates, buildspecs, stack)?;
        let rendered_text = render_text(templates, &ctx)?;
        let text = slot.get_or_init(|| rendered_text);
        let template = to_tree(plan, &stack.file, text)?;
        check::stack(plan, stack, &template, buildspecs)?;
        rendered.push(Rendered { stack, template });
    }
    check::policy(plan, org, &rendered)?;
    let footprint = Footprint::of(rendered.iter().map(|r| (r.stack, &r.template)));
    let files = rendered
        .into_iter()
        .map(|r| output(plan, r))
        .collect::<Result<Vec<_>>>()?;
    Ok((files, footprint))
}

/// Renders a context through its template.
fn render_text(templates: &Templates, ctx: &StackContext<'_>) -> Result<String> {
    match ctx {
        StackContext::Target(c) => templates.render(TEMPLATE_TARGET_STACK, c),
        StackContext::Region(c) => templates.render(TEMPLATE_REGION_STACK, c),
        StackContext::Pipeline(c) => templates.render(TEMPLATE_PIPELINE_STACK, c),
    }
}

/// A checked stack as its output file: pretty canonical JSON, within the template size quota.
fn output(plan: &Plan, r: Rendered<'_>) -> Result<(String, String)> {
    let mut text = String::with_capacity(128 * 1024);
    super::pretty::write_pretty(&r.template, &mut text);
    text.push('\n');
    quota::check_template_size(plan, &r.stack.file, text.len())?;
    Ok((r.stack.file.clone(), text))
}

/// An internal inconsistency: the plan lacks something it always has.
fn missing(plan: &Plan, what: &str) -> Error {
    Error::other(
        format!(
            "pipeline `{}`: {what} is missing from the plan",
            plan.pipeline.name
        ),
        "this is a pipeforge bug; please report it",
    )
}

/// A rendered stack that fails a check.
fn fail(plan: &Plan, file: &str, message: impl Into<String>, help: impl Into<String>) -> Error {
    Error::OutputCheck {
        pipeline: plan.pipeline.name.clone(),
        file: file.to_owned(),
        message: message.into(),
        help: help.into(),
    }
}

/// The help line of a check that only a template edit can fail.
const HELP_TEMPLATE: &str =
    "fix the stack template; `pipeforge templates check` shows which golden outputs change";

/// Parses rendered template text (YAML with short-form intrinsics) into the canonical JSON
/// tree: the fast path for the template subset (borrowing `text`), else the general YAML parser
/// (which also reports errors with their line).
fn to_tree<'t>(plan: &Plan, file: &str, text: &'t str) -> Result<Node<'t>> {
    if let Some(fast) = super::fastyaml::parse(text) {
        // Debug builds (the tests) check every fast parse against the general parser. (The
        // general parser caps documents at 200,000 nodes, counted per nesting level, so very
        // large stacks are only compared when it accepts them.)
        #[cfg(debug_assertions)]
        if let Ok(general) = general_to_json(plan, file, text)
            && Node::from(&general) != fast
        {
            return Err(fail(
                plan,
                file,
                "the fast YAML path disagrees with the general parser on the rendered template",
                "this is a pipeforge bug; please report it with the template that triggers it",
            ));
        }
        return Ok(fast);
    }
    general_to_json(plan, file, text).map(Node::from_json)
}

fn general_to_json(plan: &Plan, file: &str, text: &str) -> Result<serde_json::Value> {
    let source = SourceFile::new(file, text);
    let node = parse(&source, ParseOptions { allow_tags: true }).map_err(|d| {
        fail(
            plan,
            file,
            format!(
                "the rendered template is not valid YAML: {} at line {}",
                d.message,
                d.span.map_or(0, |s| s.start.line)
            ),
            HELP_TEMPLATE,
        )
    })?;
    // (In key order or not: the tree made of it sorts every mapping.)
    super::cfn::to_json(&node, file).map_err(|d| {
        fail(
            plan,
            file,
            format!(
                "{} at line {} of the rendered template",
                d.message,
                d.span.map_or(0, |s| s.start.line)
            ),
            d.help.unwrap_or_else(|| HELP_TEMPLATE.to_owned()),
        )
    })
}

#[cfg(test)]
mod tests;
