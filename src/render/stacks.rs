//! CloudFormation stacks: the typed template contexts, and the path every stack takes before it
//! joins the outputs — render (Tera, YAML with short-form intrinsics) → parse → JSON → canonical
//! → checked (structure against the plan, AWS quotas, org policy rules).
//!
//! Three templates: `stacks/target.yml.tera` (one per environment, in its account),
//! `stacks/region.yml.tera` (one per extra region, in the tooling account) and
//! `stacks/pipeline.yml.tera` (the tooling account). Templates see only these contexts, never
//! the manifest. Fields documented "validated" hold names, accounts, regions or numbers that the
//! code has checked against a pattern: templates may print them with `| safe` (inside `!Sub`
//! strings). Every other field is free text and is always escaped.

use serde::Serialize;
use serde_json::Value as Json;

use super::JSON_HEADER;
use super::templates::{
    TEMPLATE_PIPELINE_STACK, TEMPLATE_REGION_STACK, TEMPLATE_TARGET_STACK, Templates,
};
use crate::error::{Error, Result, SourceFile};
use crate::manifest::ArtifactKind;
use crate::model::Secret;
use crate::names::{
    BucketName, EnvironmentNames, GateNames, LogicalId, PipelineNames, PolicyName, RoleName,
};
use crate::org::{OrgPolicy, Stage};
use crate::outputs::Outputs;
use crate::plan::{ActionKind, GatePlan, Plan, StackKind, StackPlan};
use crate::policy::{self, Facts, StackDoc};
use crate::quota::{self, artifact_name, deploy_artifact, parameter_overrides};
use crate::yaml::{ParseOptions, parse};

/// The longest CodeBuild project description.
const PROJECT_DESCRIPTION_CHARS: usize = 255;

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

/// The org source bucket and object.
#[derive(Debug, Serialize)]
pub struct SourceContext<'a> {
    /// Bucket; validated (S3 bucket pattern of the org schema).
    pub bucket: &'a str,
    /// Object key `<team>/<name>/source.zip`; validated (built from validated names).
    pub key: &'a str,
    /// The upload key when `org.yaml` gives a key ARN; escaped.
    pub key_arn: Option<&'a str>,
    /// The upload key's alias (`alias/...`) otherwise; escaped.
    pub key_alias: Option<String>,
}

/// A CodeBuild report group of a gate.
#[derive(Debug, Serialize)]
pub struct ReportContext<'a> {
    /// Logical id suffix (`Report<Name>`); validated.
    pub logical_id: LogicalId,
    /// Report group name; validated.
    pub name: &'a str,
    /// `TEST` or `CODE_COVERAGE`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// What the build gate publishes, and where.
#[derive(Debug, Serialize)]
pub struct PublishContext<'a> {
    /// `codeartifact`, `ecr` or `s3`.
    pub kind: &'static str,
    /// CodeArtifact domain (owned by the tooling account); validated.
    pub domain: &'a str,
    /// Repository; validated (repository pattern of the manifest schema).
    pub repository: &'a str,
}

/// One gate: a CodeBuild project, its role, log group and report groups.
#[derive(Debug, Serialize)]
pub struct GateContext<'a> {
    /// Gate name; validated.
    pub name: &'a str,
    /// Logical id stem (`Gate<Name>`); validated.
    pub logical_id: &'a LogicalId,
    /// Project name; validated.
    pub project: &'a str,
    /// Service role name; validated.
    pub role: &'a RoleName,
    /// Log group name; validated.
    pub log_group: &'a str,
    /// Project description (the gate's description from the org policy, at most 255
    /// characters); escaped.
    pub description: String,
    /// The rendered buildspec, inline; escaped.
    pub buildspec: &'a str,
    /// Build image; escaped.
    pub image: &'a str,
    /// `LINUX_CONTAINER` or `ARM_CONTAINER`.
    pub environment_type: &'static str,
    /// CodeBuild compute type (an enum value).
    pub compute_type: &'static str,
    /// Timeout in minutes; a number.
    pub timeout_minutes: i64,
    /// Docker-in-Docker: only for a build gate that publishes images to ECR.
    pub privileged: bool,
    /// Report groups.
    pub reports: Vec<ReportContext<'a>>,
    /// True when the gate passes files on (writes its output artifact).
    pub writes_artifacts: bool,
    /// SSM parameter names the gate reads, without the leading `/`; validated.
    pub ssm_parameters: Vec<&'a str>,
    /// Secrets Manager secret names the gate reads; validated.
    pub secret_names: Vec<&'a str>,
    /// Secrets Manager secret ARNs the gate reads; escaped.
    pub secret_arns: Vec<&'a str>,
    /// `bucket/key` of the pipeforge binary, when the gate downloads it; escaped.
    pub tools_object: Option<String>,
    /// What the gate publishes (the last build gate only).
    pub publish: Option<PublishContext<'a>>,
}

/// An environment as the pipeline stack sees it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvContext<'a> {
    /// Name; validated.
    pub name: &'a str,
    /// Account; validated.
    pub account: &'a str,
    /// Region; validated.
    pub region: &'a str,
    /// True when the region is not the tooling region (the action then names its region).
    pub cross_region: bool,
    /// Production, by org policy.
    pub production: bool,
    /// Deploy role name; validated.
    pub deploy_role: &'a RoleName,
    /// Execution role name; validated.
    pub execution_role: &'a RoleName,
    /// The application's stack; validated (stack name pattern of the manifest schema).
    pub app_stack: &'a str,
    /// Change set name; validated.
    pub change_set: &'a str,
}

/// One pipeline action.
#[derive(Debug, Serialize)]
pub struct ActionContext<'a> {
    /// Action name; validated.
    pub name: &'a str,
    /// `source`, `gate`, `approval`, `create-change-set` or `execute-change-set`.
    pub kind: &'static str,
    /// Run order; a number.
    pub run_order: u32,
    /// For gates: the gate's logical id stem; validated.
    pub gate_id: Option<&'a LogicalId>,
    /// Input artifact name; validated.
    pub input: Option<String>,
    /// Output artifact name; validated.
    pub output: Option<String>,
    /// Variable namespace of a gate with exported variables; validated.
    pub namespace: Option<String>,
    /// For approval and deploy actions: the environment.
    pub env: Option<EnvContext<'a>>,
    /// `<artifact>::<template path>`; escaped.
    pub template_path: Option<String>,
    /// The environment's parameters as a JSON object; escaped.
    pub parameter_overrides: Option<String>,
    /// The approval's message; escaped.
    pub custom_data: Option<String>,
}

/// One pipeline stage.
#[derive(Debug, Serialize)]
pub struct StageContext<'a> {
    /// Stage name; validated.
    pub name: &'a str,
    /// Actions in order.
    pub actions: Vec<ActionContext<'a>>,
}

/// A cross-region artifact store.
#[derive(Debug, Serialize)]
pub struct StoreContext<'a> {
    /// Region; validated.
    pub region: &'a str,
    /// Bucket; validated.
    pub bucket: &'a BucketName,
    /// The stack parameter carrying the region's key ARN; validated (letters and digits).
    pub key_parameter: String,
    /// The region stack whose `ArtifactKeyArn` output pipeforge passes as that parameter.
    pub stack: &'a str,
}

/// Everything `stacks/pipeline.yml.tera` sees.
#[derive(Debug, Serialize)]
pub struct PipelineStackContext<'a> {
    /// Description and metadata.
    pub header: StackHeader<'a>,
    /// Tags of every taggable resource: `team`, `pipeline` and the manifest's.
    pub tags: Vec<Tag<'a>>,
    /// Tooling account; validated.
    pub account: &'a str,
    /// Tooling region; validated.
    pub region: &'a str,
    /// Every generated name; validated.
    pub names: &'a PipelineNames,
    /// The source snapshot.
    pub source: SourceContext<'a>,
    /// Deploy roles that read the tooling-region artifact store (environments in that region).
    pub readers: Vec<Reader<'a>>,
    /// Their accounts, sorted, without duplicates; validated.
    pub reader_accounts: Vec<&'a str>,
    /// Gates in plan order.
    pub gates: Vec<GateContext<'a>>,
    /// Stages in order.
    pub stages: Vec<StageContext<'a>>,
    /// Artifact stores in other regions (empty when every environment is in the tooling region).
    pub artifact_stores: Vec<StoreContext<'a>>,
    /// Environments in promotion order.
    pub environments: Vec<EnvContext<'a>>,
    /// The production environments.
    pub production: Vec<EnvContext<'a>>,
    /// E-mail subscribers; escaped.
    pub emails: &'a [String],
    /// CodeStar Notifications event type ids (constants).
    pub event_type_ids: &'a [&'static str],
    /// Log retention in days; a number from the CloudWatch Logs list.
    pub log_retention_days: i64,
    /// The permissions boundary every role of the stack carries (the tooling account's, from
    /// `pipeforge bootstrap`); validated.
    pub roles_boundary: String,
    /// The org's bucket for S3 access logs (org `logging.access_log_bucket`); validated.
    pub access_log_bucket: Option<&'a str>,
}

/// A managed policy reference: an ARN, or a name in the target account.
#[derive(Debug, Serialize)]
pub struct PolicyRef<'a> {
    /// The ARN; validated (org schema pattern).
    pub arn: Option<&'a str>,
    /// The name (with optional path); validated (org schema pattern).
    pub name: Option<&'a str>,
}

impl<'a> PolicyRef<'a> {
    /// An ARN or a name, told apart by the `arn:` prefix.
    pub fn new(r: &'a str) -> Self {
        if r.starts_with("arn:") {
            PolicyRef {
                arn: Some(r),
                name: None,
            }
        } else {
            PolicyRef {
                arn: None,
                name: Some(r),
            }
        }
    }
}

/// Everything `stacks/target.yml.tera` sees.
#[derive(Debug, Serialize)]
pub struct TargetStackContext<'a> {
    /// Description and metadata.
    pub header: StackHeader<'a>,
    /// Tags.
    pub tags: Vec<Tag<'a>>,
    /// The CodePipeline name; validated.
    pub pipeline: &'a str,
    /// Environment name; validated.
    pub environment: &'a str,
    /// Tooling account; validated.
    pub tooling_account: &'a str,
    /// The pipeline's service role, the only principal that may assume the deploy role;
    /// validated.
    pub pipeline_role: &'a RoleName,
    /// Deploy role name; validated.
    pub deploy_role: &'a RoleName,
    /// Execution role name; validated.
    pub execution_role: &'a RoleName,
    /// The production guard policy's name (production environments only); validated.
    pub guard_policy: Option<&'a PolicyName>,
    /// The artifact bucket of the environment's region; validated.
    pub artifact_bucket: &'a BucketName,
    /// The region of that bucket and its key; validated.
    pub artifact_region: &'a str,
    /// The application's stack; validated.
    pub app_stack: &'a str,
    /// Managed policies of the execution role (org policy).
    pub execution_policies: Vec<PolicyRef<'a>>,
    /// Permissions boundary of the execution role (org policy).
    pub permissions_boundary: Option<PolicyRef<'a>>,
    /// The permissions boundary of the deploy role (the target accounts', from
    /// `pipeforge bootstrap`); validated.
    pub roles_boundary: String,
}

/// Everything `stacks/region.yml.tera` sees.
#[derive(Debug, Serialize)]
pub struct RegionStackContext<'a> {
    /// Description and metadata.
    pub header: StackHeader<'a>,
    /// Tags.
    pub tags: Vec<Tag<'a>>,
    /// The CodePipeline name; validated.
    pub pipeline: &'a str,
    /// Region; validated.
    pub region: &'a str,
    /// Bucket; validated.
    pub bucket: &'a BucketName,
    /// Key alias (the same in every region); validated.
    pub key_alias: &'a str,
    /// The pipeline's service role; validated.
    pub pipeline_role: &'a RoleName,
    /// Deploy roles of the environments in this region.
    pub readers: Vec<Reader<'a>>,
    /// Their accounts; validated.
    pub reader_accounts: Vec<&'a str>,
}

fn header<'a>(plan: &'a Plan, templates: &'a Templates, what: String) -> StackHeader<'a> {
    StackHeader {
        description: format!("{JSON_HEADER}: {what}"),
        pipeline: &plan.pipeline.name,
        team: &plan.pipeline.team,
        template_set: templates.set_name(),
    }
}

fn tags(plan: &Plan) -> Vec<Tag<'_>> {
    plan.pipeline
        .tags
        .iter()
        .map(|(k, v)| Tag { key: k, value: v })
        .collect()
}

fn missing(plan: &Plan, what: &str) -> Error {
    Error::other(
        format!(
            "pipeline `{}`: {what} is missing from the plan",
            plan.pipeline.name
        ),
        "this is a pipeforge bug; please report it",
    )
}

fn env_names<'a>(plan: &'a Plan, env: &str) -> Result<&'a EnvironmentNames> {
    plan.names
        .environment(env)
        .ok_or_else(|| missing(plan, &format!("the names of environment `{env}`")))
}

fn gate_names<'a>(plan: &'a Plan, gate: &str) -> Result<&'a GateNames> {
    plan.names
        .gate(gate)
        .ok_or_else(|| missing(plan, &format!("the names of gate `{gate}`")))
}

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

fn env_context<'a>(plan: &'a Plan, e: &'a crate::model::Environment) -> Result<EnvContext<'a>> {
    let n = env_names(plan, &e.name)?;
    Ok(EnvContext {
        name: &e.name,
        account: &e.account,
        region: &e.region.value,
        cross_region: e.region.value != plan.pipeline.region,
        production: e.production,
        deploy_role: &n.deploy_role,
        execution_role: &n.execution_role,
        app_stack: &plan.deploy.stack_name.value,
        change_set: n.change_set.as_str(),
    })
}

/// The context of `stacks/pipeline.yml.tera`. `buildspecs` holds the rendered buildspecs.
pub fn pipeline_context<'a>(
    plan: &'a Plan,
    org: &'a OrgPolicy,
    templates: &'a Templates,
    buildspecs: &'a Outputs,
) -> Result<PipelineStackContext<'a>> {
    let o = &org.org;
    let names = &plan.names;
    let last_build_gate = plan
        .gates
        .iter()
        .rev()
        .find(|g| g.stage == Stage::Build)
        .map(|g| g.name.as_str());
    let mut gates = Vec::new();
    for g in &plan.gates {
        let n = gate_names(plan, &g.name)?;
        gates.push(gate_context(plan, org, g, n, buildspecs, last_build_gate)?);
    }
    let mut environments = Vec::new();
    for e in &plan.environments {
        environments.push(env_context(plan, e)?);
    }
    let production = environments
        .iter()
        .filter(|e| e.production)
        .cloned()
        .collect();
    let (readers, reader_accounts) = readers_in(plan, &plan.pipeline.region)?;
    let source_key = &o.source.kms_key;
    let (key_arn, key_alias) = if source_key.starts_with("arn:") && source_key.contains(":key/") {
        (Some(source_key.as_str()), None)
    } else {
        let alias = source_key
            .find("alias/")
            .map_or(source_key.as_str(), |i| &source_key[i..]);
        (None, Some(alias.to_owned()))
    };
    Ok(PipelineStackContext {
        header: header(
            plan,
            templates,
            format!(
                "pipeline stack of `{}` (team `{}`)",
                plan.pipeline.name, plan.pipeline.team
            ),
        ),
        tags: tags(plan),
        account: &plan.pipeline.tooling_account,
        region: &plan.pipeline.region,
        names,
        source: SourceContext {
            bucket: &plan.source.bucket.value,
            key: &plan.source.key,
            key_arn,
            key_alias,
        },
        readers,
        reader_accounts,
        stages: stage_contexts(plan, &environments)?,
        gates,
        artifact_stores: names
            .regions
            .iter()
            .map(|r| StoreContext {
                region: &r.region,
                bucket: &r.bucket,
                key_parameter: crate::names::region_key_parameter(&r.region),
                stack: r.stack.as_str(),
            })
            .collect(),
        environments,
        production,
        emails: &plan.notifications.email,
        event_type_ids: &plan.notifications.event_type_ids,
        log_retention_days: o.build.log_retention_days,
        roles_boundary: crate::names::InstallNames::new(&o.naming.prefix, &o.deploy.bootstrap_role)
            .tooling_roles_boundary,
        access_log_bucket: o.logging.access_log_bucket.as_deref(),
    })
}

fn gate_context<'a>(
    plan: &'a Plan,
    org: &'a OrgPolicy,
    g: &'a GatePlan,
    n: &'a GateNames,
    buildspecs: &'a Outputs,
    last_build_gate: Option<&str>,
) -> Result<GateContext<'a>> {
    let o = &org.org;
    let buildspec = buildspecs
        .text(&g.buildspec)
        .ok_or_else(|| missing(plan, &format!("the buildspec of gate `{}`", g.name)))?;
    quota::check_buildspec(plan, g, buildspec)?;
    let mut reports = Vec::new();
    for r in &g.reports {
        let name = n
            .report_groups
            .get(&r.name)
            .ok_or_else(|| missing(plan, &format!("report group `{}`", r.name)))?;
        reports.push(ReportContext {
            logical_id: LogicalId::derive("Report", &r.name).map_err(|e| {
                Error::other(e.to_string(), "report names are letters, digits and dashes")
            })?,
            name: name.as_str(),
            kind: if r.kind == "coverage" {
                "CODE_COVERAGE"
            } else {
                "TEST"
            },
        });
    }
    let mut ssm_parameters = Vec::new();
    let mut secret_names = Vec::new();
    let mut secret_arns = Vec::new();
    for s in &g.secrets {
        match &s.secret {
            Secret::ParameterStore { name } => {
                ssm_parameters.push(name.strip_prefix('/').unwrap_or(name))
            }
            Secret::SecretsManager { secret_id, .. } if secret_id.starts_with("arn:") => {
                secret_arns.push(secret_id.as_str())
            }
            Secret::SecretsManager { secret_id, .. } => secret_names.push(secret_id.as_str()),
        }
    }
    ssm_parameters.sort_unstable();
    ssm_parameters.dedup();
    secret_names.sort_unstable();
    secret_names.dedup();
    secret_arns.sort_unstable();
    secret_arns.dedup();
    let uses_tools = g
        .phases
        .iter()
        .flat_map(|p| &p.steps)
        .flat_map(|s| &s.commands)
        .any(|c| c.contains("PF_PIPEFORGE_URI"));
    let tools_object = uses_tools
        .then(|| o.tools.pipeforge.strip_prefix("s3://").map(str::to_owned))
        .flatten();
    let kind = plan.artifact.kind.value;
    let is_publisher = last_build_gate == Some(g.name.as_str());
    let publish = match kind {
        ArtifactKind::None => None,
        _ if !is_publisher => None,
        k => {
            let repository = plan.artifact.repository.as_ref().map_or_else(
                || match k {
                    ArtifactKind::Ecr => plan.pipeline.name.as_str(),
                    _ => plan.pipeline.team.as_str(),
                },
                |r| r.value.as_str(),
            );
            Some(PublishContext {
                kind: k.as_str(),
                domain: &o.artifacts.codeartifact_domain,
                repository,
            })
        }
    };
    let description: String = g
        .description
        .chars()
        .take(PROJECT_DESCRIPTION_CHARS)
        .collect();
    Ok(GateContext {
        name: &g.name,
        logical_id: &n.logical_id,
        project: n.project.as_str(),
        role: &n.role,
        log_group: n.log_group.as_str(),
        description,
        buildspec,
        image: &g.image.value,
        environment_type: if g.image.value.contains("aarch64") || g.image.value.contains("arm64") {
            "ARM_CONTAINER"
        } else {
            "LINUX_CONTAINER"
        },
        compute_type: g.compute.value.codebuild(),
        timeout_minutes: g.timeout_minutes.value,
        privileged: is_publisher && kind == ArtifactKind::Ecr,
        reports,
        writes_artifacts: !g.artifacts.is_empty(),
        ssm_parameters,
        secret_names,
        secret_arns,
        tools_object,
        publish,
    })
}

fn stage_contexts<'a>(plan: &'a Plan, envs: &[EnvContext<'a>]) -> Result<Vec<StageContext<'a>>> {
    let deploy_input = deploy_artifact(plan);
    let mut out = Vec::new();
    for s in &plan.stages {
        let mut actions = Vec::new();
        for a in &s.actions {
            let env = match &a.environment {
                Some(name) => Some(
                    envs.iter()
                        .find(|e| e.name == name)
                        .cloned()
                        .ok_or_else(|| missing(plan, &format!("environment `{name}`")))?,
                ),
                None => None,
            };
            let gate = match &a.gate {
                Some(name) => Some(
                    plan.gate(name)
                        .ok_or_else(|| missing(plan, &format!("gate `{name}`")))?,
                ),
                None => None,
            };
            let mut ctx = ActionContext {
                name: &a.name,
                kind: match a.kind {
                    ActionKind::Source => "source",
                    ActionKind::Gate => "gate",
                    ActionKind::Approval => "approval",
                    ActionKind::CreateChangeSet => "create-change-set",
                    ActionKind::ExecuteChangeSet => "execute-change-set",
                },
                run_order: a.run_order,
                gate_id: None,
                input: None,
                output: None,
                namespace: None,
                env: None,
                template_path: None,
                parameter_overrides: None,
                custom_data: None,
            };
            match a.kind {
                ActionKind::Source => ctx.output = Some("Source".to_owned()),
                ActionKind::Gate => {
                    let g = gate.ok_or_else(|| missing(plan, "the gate of a gate action"))?;
                    ctx.gate_id = Some(&gate_names(plan, &g.name)?.logical_id);
                    ctx.input = Some("Source".to_owned());
                    if !g.artifacts.is_empty() {
                        ctx.output = Some(artifact_name(g));
                    }
                    if !g.exports.is_empty() {
                        ctx.namespace = Some(namespace(g));
                    }
                }
                ActionKind::Approval => {
                    let e = env
                        .as_ref()
                        .ok_or_else(|| missing(plan, "the environment of an approval"))?;
                    ctx.custom_data = Some(custom_data(plan, e));
                }
                ActionKind::CreateChangeSet => {
                    let e = env
                        .as_ref()
                        .ok_or_else(|| missing(plan, "the environment of a deploy"))?;
                    ctx.input = Some(deploy_input.clone());
                    ctx.template_path = Some(format!("{deploy_input}::{}", plan.deploy.template));
                    let params = &plan
                        .environments
                        .iter()
                        .find(|x| x.name == e.name)
                        .ok_or_else(|| missing(plan, "an environment"))?
                        .parameters;
                    if !params.is_empty() {
                        ctx.parameter_overrides = Some(parameter_overrides(params));
                    }
                }
                ActionKind::ExecuteChangeSet => {}
            }
            ctx.env = env;
            actions.push(ctx);
        }
        out.push(StageContext {
            name: &s.name,
            actions,
        });
    }
    Ok(out)
}

/// The variable namespace of a gate that exports variables (`<Gate>Vars`).
fn namespace(g: &GatePlan) -> String {
    artifact_name(g).trim_end_matches("Output").to_owned() + "Vars"
}

/// The approval message: what is about to change, where, and with which version.
fn custom_data(plan: &Plan, e: &EnvContext<'_>) -> String {
    let version = plan
        .gates
        .iter()
        .rev()
        .find(|g| g.exports.iter().any(|x| x == "VERSION"))
        .map(|g| format!(" version #{{{}.VERSION}}", namespace(g)))
        .unwrap_or_default();
    format!(
        "Deploy{version} of {} to {}{} (account {}, {}): review change set {} of stack {} there, then approve or reject.",
        plan.pipeline.name,
        e.name,
        if e.production { " (production)" } else { "" },
        e.account,
        e.region,
        e.change_set,
        e.app_stack
    )
}

/// The context of `stacks/target.yml.tera` for one environment.
pub fn target_context<'a>(
    plan: &'a Plan,
    org: &'a OrgPolicy,
    templates: &'a Templates,
    env: &'a crate::model::Environment,
) -> Result<TargetStackContext<'a>> {
    let n = env_names(plan, &env.name)?;
    let d = &org.org.deploy;
    Ok(TargetStackContext {
        header: header(
            plan,
            templates,
            format!(
                "target stack of `{}` (team `{}`) for environment `{}`",
                plan.pipeline.name, plan.pipeline.team, env.name
            ),
        ),
        tags: tags(plan),
        pipeline: plan.names.pipeline.as_str(),
        environment: &env.name,
        tooling_account: &plan.pipeline.tooling_account,
        pipeline_role: &plan.names.pipeline_role,
        deploy_role: &n.deploy_role,
        execution_role: &n.execution_role,
        guard_policy: n.guard_policy.as_ref(),
        artifact_bucket: plan.names.bucket_for(&env.region.value),
        artifact_region: &env.region.value,
        app_stack: &plan.deploy.stack_name.value,
        execution_policies: d
            .execution_policy_arns
            .iter()
            .map(|p| PolicyRef::new(p))
            .collect(),
        permissions_boundary: d.permissions_boundary.as_deref().map(PolicyRef::new),
        roles_boundary: crate::names::InstallNames::new(&org.org.naming.prefix, &d.bootstrap_role)
            .target_roles_boundary,
    })
}

/// The context of `stacks/region.yml.tera` for one extra region.
pub fn region_context<'a>(
    plan: &'a Plan,
    templates: &'a Templates,
    region: &'a crate::names::RegionNames,
) -> Result<RegionStackContext<'a>> {
    let (readers, reader_accounts) = readers_in(plan, &region.region)?;
    Ok(RegionStackContext {
        header: header(
            plan,
            templates,
            format!(
                "artifact store of `{}` (team `{}`) in {}",
                plan.pipeline.name, plan.pipeline.team, region.region
            ),
        ),
        tags: tags(plan),
        pipeline: plan.names.pipeline.as_str(),
        region: &region.region,
        bucket: &region.bucket,
        key_alias: plan.names.key_alias.as_str(),
        pipeline_role: &plan.names.pipeline_role,
        readers,
        reader_accounts,
    })
}

fn fail(plan: &Plan, file: &str, message: impl Into<String>, help: impl Into<String>) -> Error {
    Error::OutputCheck {
        pipeline: plan.pipeline.name.clone(),
        file: file.to_owned(),
        message: message.into(),
        help: help.into(),
    }
}

const HELP_TEMPLATE: &str =
    "fix the stack template; `pipeforge templates check` shows which golden outputs change";

/// Parses rendered template text (YAML with short-form intrinsics) into canonical JSON: the
/// fast path for the template subset, else the general YAML parser (which also reports errors
/// with their line).
pub fn to_json(plan: &Plan, file: &str, text: &str) -> Result<Json> {
    if let Some(fast) = super::fastyaml::parse(text) {
        // Debug builds (the tests) check every fast parse against the general parser. (The
        // general parser caps documents at 200,000 nodes, counted per nesting level, so very
        // large stacks are only compared when it accepts them.)
        #[cfg(debug_assertions)]
        if let Ok(general) = general_to_json(plan, file, text)
            && general != fast
        {
            return Err(fail(
                plan,
                file,
                "the fast YAML path disagrees with the general parser on the rendered template",
                "this is a pipeforge bug; please report it with the template that triggers it",
            ));
        }
        return Ok(super::ensure_sorted(fast));
    }
    general_to_json(plan, file, text)
}

fn general_to_json(plan: &Plan, file: &str, text: &str) -> Result<Json> {
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
    let json = super::cfn::to_json(&node, file).map_err(|d| {
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
    })?;
    Ok(super::ensure_sorted(json))
}

/// Checks the shape every stack must have: format version, the pipeforge header in
/// `Description`, the `Metadata.pipeforge` block, and resources.
fn check_shape(plan: &Plan, file: &str, t: &Json, kind: &str) -> Result<()> {
    if t.get("AWSTemplateFormatVersion").and_then(Json::as_str) != Some("2010-09-09") {
        return Err(fail(
            plan,
            file,
            "`AWSTemplateFormatVersion` must be \"2010-09-09\"",
            HELP_TEMPLATE,
        ));
    }
    let desc = t.get("Description").and_then(Json::as_str).unwrap_or("");
    if !desc.starts_with(JSON_HEADER) {
        return Err(fail(
            plan,
            file,
            "`Description` does not start with the pipeforge header",
            format!("start `Description` with \"{JSON_HEADER}\""),
        ));
    }
    let meta = t.get("Metadata").and_then(|m| m.get("pipeforge"));
    let meta_ok = meta.and_then(|m| m.get("pipeline")).and_then(Json::as_str)
        == Some(plan.pipeline.name.as_str())
        && meta.and_then(|m| m.get("team")).and_then(Json::as_str)
            == Some(plan.pipeline.team.as_str())
        && meta.and_then(|m| m.get("stack")).and_then(Json::as_str) == Some(kind);
    if !meta_ok {
        return Err(fail(
            plan,
            file,
            format!("`Metadata.pipeforge` must name the pipeline, the team and `stack: {kind}`"),
            HELP_TEMPLATE,
        ));
    }
    if !t.get("Resources").is_some_and(Json::is_object) {
        return Err(fail(plan, file, "`Resources` is missing", HELP_TEMPLATE));
    }
    Ok(())
}

/// The pipeline stack runs exactly the plan: every stage and action in order, every gate in
/// its own CodeBuild project with the rendered buildspec, the deploys through the right roles.
fn check_pipeline(plan: &Plan, file: &str, t: &Json, buildspecs: &Outputs) -> Result<()> {
    let res = t.get("Resources").and_then(Json::as_object);
    let mut pipelines = res.into_iter().flatten().filter(|(_, r)| {
        r.get("Type").and_then(Json::as_str) == Some("AWS::CodePipeline::Pipeline")
    });
    let (Some((_, pipeline)), None) = (pipelines.next(), pipelines.next()) else {
        return Err(fail(
            plan,
            file,
            "the stack must declare exactly one AWS::CodePipeline::Pipeline",
            HELP_TEMPLATE,
        ));
    };
    let props = pipeline.get("Properties").unwrap_or(&Json::Null);
    if props.get("Name").and_then(Json::as_str) != Some(plan.names.pipeline.as_str()) {
        return Err(fail(
            plan,
            file,
            format!("the pipeline must be named `{}`", plan.names.pipeline),
            HELP_TEMPLATE,
        ));
    }
    let stages = props
        .get("Stages")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let got: Vec<&str> = stages
        .iter()
        .map(|s| s.get("Name").and_then(Json::as_str).unwrap_or("?"))
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
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let got: Vec<(&str, i64)> = actions
            .iter()
            .map(|a| {
                (
                    a.get("Name").and_then(Json::as_str).unwrap_or("?"),
                    a.get("RunOrder").and_then(Json::as_i64).unwrap_or(0),
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
                .and_then(Json::as_str)
                .unwrap_or("");
            let project = res.and_then(|r| r.get(project_ref)).unwrap_or(&Json::Null);
            let pp = project.get("Properties").unwrap_or(&Json::Null);
            let spec = pp
                .get("Source")
                .and_then(|s| s.get("BuildSpec"))
                .and_then(Json::as_str);
            let ok = project.get("Type").and_then(Json::as_str) == Some("AWS::CodeBuild::Project")
                && pp.get("Name").and_then(Json::as_str) == Some(gate.project.as_str())
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
fn check_target(plan: &Plan, file: &str, t: &Json, env: &str) -> Result<()> {
    let n = env_names(plan, env)?;
    let res = t.get("Resources").and_then(Json::as_object);
    let role_names: Vec<&str> = res
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.get("Type").and_then(Json::as_str) == Some("AWS::IAM::Role"))
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

/// A rendered stack: its file, its plan entry and its parsed template.
struct Rendered<'a> {
    stack: &'a StackPlan,
    template: Json,
}

/// Renders every stack of the plan, checks them all, and returns `(file, canonical JSON)` in
/// deploy order. `buildspecs` holds the rendered buildspecs (inlined in the pipeline stack).
pub fn render(
    plan: &Plan,
    templates: &Templates,
    org: &OrgPolicy,
    buildspecs: &Outputs,
) -> Result<Vec<(String, String)>> {
    let mut rendered: Vec<Rendered<'_>> = Vec::with_capacity(plan.stacks.len());
    for stack in &plan.stacks {
        let (text, kind) = match stack.kind {
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
                let ctx = target_context(plan, org, templates, env)?;
                (templates.render(TEMPLATE_TARGET_STACK, &ctx)?, "target")
            }
            StackKind::Region => {
                let region = plan
                    .names
                    .regions
                    .iter()
                    .find(|r| r.region == stack.region)
                    .ok_or_else(|| missing(plan, &format!("region `{}`", stack.region)))?;
                let ctx = region_context(plan, templates, region)?;
                (templates.render(TEMPLATE_REGION_STACK, &ctx)?, "region")
            }
            StackKind::Pipeline => {
                let ctx = pipeline_context(plan, org, templates, buildspecs)?;
                (templates.render(TEMPLATE_PIPELINE_STACK, &ctx)?, "pipeline")
            }
        };
        let template = to_json(plan, &stack.file, &text)?;
        check_shape(plan, &stack.file, &template, kind)?;
        match stack.kind {
            StackKind::Pipeline => check_pipeline(plan, &stack.file, &template, buildspecs)?,
            StackKind::Target => check_target(
                plan,
                &stack.file,
                &template,
                stack.environment.as_deref().unwrap_or_default(),
            )?,
            StackKind::Region => {}
        }
        quota::check_stack(plan, &stack.file, &template, &stack.account, &stack.region)?;
        rendered.push(Rendered { stack, template });
    }
    let docs: Vec<StackDoc<'_>> = rendered
        .iter()
        .map(|r| StackDoc {
            file: &r.stack.file,
            kind: r.stack.kind,
            template: &r.template,
        })
        .collect();
    policy::check(&docs, &Facts { plan, org })?;
    let mut out = Vec::with_capacity(rendered.len());
    for r in rendered {
        let mut buf = Vec::with_capacity(128 * 1024);
        let bug = |e: &dyn std::fmt::Display| {
            Error::other(
                format!("cannot serialize `{}`: {e}", r.stack.file),
                "this is a pipeforge bug; please report it",
            )
        };
        serde_json::to_writer_pretty(&mut buf, &r.template).map_err(|e| bug(&e))?;
        buf.push(b'\n');
        let text = String::from_utf8(buf).map_err(|e| bug(&e))?;
        quota::check_template_size(plan, &r.stack.file, text.len())?;
        out.push((r.stack.file.clone(), text));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::Catalog;
    use crate::probe;

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

    fn render_with(
        templates: &Templates,
        manifest: &str,
        org: &OrgPolicy,
    ) -> Result<crate::Bundle> {
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
        let base =
            probe::render_probe("python", &benign, &org, catalog, templates).expect("benign");
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
        let e = render_with(Templates::embedded().expect("t"), MANIFEST, &org)
            .expect_err("no permissions");
        let text = e.to_string();
        assert!(text.contains("deploy.execution_policy_arns"), "{text}");
        assert!(text.contains("never grants AdministratorAccess"), "{text}");
        let boundary_only = org_text.replace(
            "execution_policy_arns: [pipeforge-app-deploy]",
            "execution_policy_arns: []",
        );
        let org = crate::org::load(&SourceFile::new("org.yaml", boundary_only)).expect("org");
        let e = render_with(Templates::embedded().expect("t"), MANIFEST, &org)
            .expect_err("boundary only");
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
}
