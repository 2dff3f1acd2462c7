//! The context of `stacks/pipeline.yml.tera`: the pipeline, its gates (CodeBuild projects with
//! their inline buildspecs), stages and actions, artifact stores and notifications.

use serde::Serialize;

use super::{Reader, StackHeader, Tag, env_names, gate_names, header, readers_in, tags};
use crate::error::{Error, Result};
use crate::manifest::ArtifactKind;
use crate::model::Secret;
use crate::names::{BucketName, GateNames, LogicalId, PipelineNames, RoleName};
use crate::org::{OrgPolicy, Stage};
use crate::outputs::Outputs;
use crate::plan::{ActionKind, GatePlan, Plan};
use crate::render::escape::json_object;
use crate::render::stacks::missing;
use crate::render::templates::Templates;

/// The longest CodeBuild project description.
const PROJECT_DESCRIPTION_CHARS: usize = 255;

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
    let (readers, reader_accounts) = readers_in(plan, &plan.pipeline.region)?;
    let source_key = &plan.source.kms_key.value;
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
    let deploy_input = plan.deploy_artifact();
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
                        ctx.output = Some(g.artifact_name());
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
                        ctx.parameter_overrides = Some(json_object(params));
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
    g.artifact_name().trim_end_matches("Output").to_owned() + "Vars"
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
