//! The context pass: one typed context per stack template, built from the plan (and, for the
//! pipeline stack, the rendered buildspecs it inlines).
//!
//! Templates see only these contexts, never the manifest. Fields documented "validated" hold
//! names, accounts, regions or numbers that the code has checked against a pattern: templates
//! may print them with `| safe` (inside `!Sub` strings). Every other field is free text and is
//! always escaped.

mod pipeline;
mod region;
mod target;

use serde::Serialize;

pub use pipeline::{
    ActionContext, EnvContext, GateContext, PipelineStackContext, PublishContext, ReportContext,
    SourceContext, StageContext, StoreContext, pipeline_context,
};
pub use region::{RegionStackContext, region_context};
pub use target::{PolicyRef, TargetStackContext, target_context};

use super::missing;
use crate::error::Result;
use crate::names::{EnvironmentNames, GateNames, RoleName};
use crate::org::OrgPolicy;
use crate::outputs::Outputs;
use crate::plan::{Plan, StackKind, StackPlan};
use crate::render::JSON_HEADER;
use crate::render::templates::Templates;

/// The context of one stack of the plan.
pub(super) enum StackContext<'a> {
    /// `stacks/target.yml.tera`.
    Target(TargetStackContext<'a>),
    /// `stacks/region.yml.tera`.
    Region(RegionStackContext<'a>),
    /// `stacks/pipeline.yml.tera`.
    Pipeline(PipelineStackContext<'a>),
}

/// The context of `stack`. `buildspecs` holds the rendered buildspecs.
pub(super) fn for_stack<'a>(
    plan: &'a Plan,
    org: &'a OrgPolicy,
    templates: &'a Templates,
    buildspecs: &'a Outputs,
    stack: &StackPlan,
) -> Result<StackContext<'a>> {
    Ok(match stack.kind {
        StackKind::Target => {
            let env_name = stack
                .environment
                .as_deref()
                .ok_or_else(|| missing(plan, "the environment of a target stack"))?;
            let env = plan
                .environments
                .iter()
                .find(|e| e.name == env_name)
                .ok_or_else(|| missing(plan, &format!("environment `{env_name}`")))?;
            StackContext::Target(target_context(plan, org, templates, env)?)
        }
        StackKind::Region => {
            let region = plan
                .names
                .regions
                .iter()
                .find(|r| r.region == stack.region)
                .ok_or_else(|| missing(plan, &format!("region `{}`", stack.region)))?;
            StackContext::Region(region_context(plan, templates, region)?)
        }
        StackKind::Pipeline => {
            StackContext::Pipeline(pipeline_context(plan, org, templates, buildspecs)?)
        }
    })
}

/// Who, what and which template set: the `Description` and `Metadata.pipeforge` of a stack.
#[derive(Debug, Serialize)]
pub struct StackHeader<'a> {
    /// The stack's `Description`; starts with the pipeforge header. Built from validated names;
    /// escaped.
    pub description: String,
    /// Manifest (pipeline) name; validated.
    pub pipeline: &'a str,
    /// Owning team; validated.
    pub team: &'a str,
    /// Name of the template set (`pipeforge`, or `pipeforge+<dir>` with overrides); escaped.
    pub template_set: &'a str,
}

/// A resource tag.
#[derive(Debug, Serialize)]
pub struct Tag<'a> {
    /// Key; escaped.
    pub key: &'a str,
    /// Value; escaped.
    pub value: &'a str,
}

/// A deploy role that reads an artifact store.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reader<'a> {
    /// Its account; validated.
    pub account: &'a str,
    /// Its name; validated.
    pub role: &'a RoleName,
}

/// The header of a stack; `what` ends its `Description`.
fn header<'a>(plan: &'a Plan, templates: &'a Templates, what: String) -> StackHeader<'a> {
    StackHeader {
        description: format!("{JSON_HEADER}: {what}"),
        pipeline: &plan.pipeline.name,
        team: &plan.pipeline.team,
        template_set: templates.set_name(),
    }
}

/// The tags of every taggable resource.
fn tags(plan: &Plan) -> Vec<Tag<'_>> {
    plan.pipeline
        .tags
        .iter()
        .map(|(k, v)| Tag { key: k, value: v })
        .collect()
}

/// The generated names of an environment.
pub(super) fn env_names<'a>(plan: &'a Plan, env: &str) -> Result<&'a EnvironmentNames> {
    plan.names
        .environment(env)
        .ok_or_else(|| missing(plan, &format!("the names of environment `{env}`")))
}

/// The generated names of a gate.
fn gate_names<'a>(plan: &'a Plan, gate: &str) -> Result<&'a GateNames> {
    plan.names
        .gate(gate)
        .ok_or_else(|| missing(plan, &format!("the names of gate `{gate}`")))
}

/// The deploy roles (and their accounts) that read the artifact store of `region`.
fn readers_in<'a>(plan: &'a Plan, region: &str) -> Result<(Vec<Reader<'a>>, Vec<&'a str>)> {
    let mut readers = Vec::new();
    for e in plan
        .environments
        .iter()
        .filter(|e| e.region.value == region)
    {
        readers.push(Reader {
            account: &e.account,
            role: &env_names(plan, &e.name)?.deploy_role,
        });
    }
    readers.sort();
    readers.dedup();
    let mut accounts: Vec<&str> = readers.iter().map(|r| r.account).collect();
    accounts.dedup();
    Ok((readers, accounts))
}
