//! Stage 3: the plan — the effective pipeline, computed before anything is rendered.
//!
//! The plan says everything the pipeline will be: every gate with its steps and commands in
//! buildspec phases (each tagged with where it came from: org, language or team), the
//! pipeline's stages and actions, the environments, the S3 keys. It is pure data: it is what
//! `pipeforge explain` prints, what the templates render from, and what the output checks verify
//! the rendered files against. `plan.json` is this value plus the content hash of the outputs.
//!
//! This file holds the plan's types and [`plan`]; each part is computed by its own file:
//! `gates.rs` (steps per phase, variables, reports, artifacts), `stages.rs` (stages and
//! actions) and `stacks.rs` (names and stacks in deploy order).

mod gates;
mod stacks;
mod stages;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{Catalog, Phase};
use crate::error::{Error, Result};
use crate::manifest::{Compute, NotificationEvent};
use crate::model::{Artifact, Deploy, Environment, Model, Origin, Secret, Sourced, Versioning};
use crate::names::PipelineNames;
use crate::org::{OrgPolicy, Stage, ToolingAccount};
pub use stacks::stack_file;

/// CodePipeline: actions in one stage. The plan splits the gates of a larger stage over
/// consecutive stages.
pub const ACTIONS_PER_STAGE: usize = 50;

/// The plan's schema identifier.
pub const PLAN_SCHEMA: &str = "pipeforge/plan/v1";

/// Where the source bucket keeps what belongs to a pipeline itself rather than to its team:
/// `pipelines/<name>/owner.json` (who owns it) and `pipelines/<name>/deploy.lock`. Keyed by the
/// pipeline's name, which names its stacks, so that every deploy of one pipeline (whatever
/// team or repository it claims) meets the same lock and the same owner. The team name
/// `pipelines` is reserved so that no team's prefix can be this one.
pub const RECORDS_PREFIX: &str = "pipelines/";

/// The effective pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Schema identifier of `plan.json`.
    pub schema: &'static str,
    /// Who and what.
    pub pipeline: PipelineInfo,
    /// Where the pipeline's source comes from.
    pub source: SourcePlan,
    /// Every enabled gate, in org order.
    pub gates: Vec<GatePlan>,
    /// Gates the manifest turned off (optional ones only).
    pub disabled_gates: Vec<crate::model::DisabledGate>,
    /// The pipeline's stages, in order.
    pub stages: Vec<StagePlan>,
    /// Deployment environments, in promotion order.
    pub environments: Vec<Environment>,
    /// The package.
    pub artifact: Artifact,
    /// Coverage threshold.
    pub coverage_min: Sourced<i64>,
    /// The application's deployment.
    pub deploy: Deploy,
    /// Notifications.
    pub notifications: NotificationsPlan,
    /// Versioning.
    pub versioning: Versioning,
    /// Every generated AWS resource name.
    pub names: PipelineNames,
    /// The CloudFormation stacks, in deploy order: target stacks (one per environment), then
    /// cross-region artifact stores, then the pipeline stack.
    pub stacks: Vec<StackPlan>,
    /// Org rules this pipeline breaks without failing: not enforced yet, or waived.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<crate::model::Notice>,
    /// Indexes of `commands.forbidden` the team's commands may match (see
    /// [`crate::model::Model::relaxed_commands`]).
    #[serde(skip)]
    pub relaxed_commands: std::collections::BTreeSet<usize>,
}

/// What a stack is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackKind {
    /// Deploy and execution roles in an environment's account.
    Target,
    /// An artifact bucket and key in another region of the tooling account.
    Region,
    /// The pipeline, its builds, key, bucket and notifications in the tooling account.
    Pipeline,
}

/// One CloudFormation stack of the bundle.
#[derive(Clone, Debug, Serialize)]
pub struct StackPlan {
    /// Position in the deploy order, from 1.
    pub order: usize,
    /// What the stack is for.
    pub kind: StackKind,
    /// Stack name.
    pub name: String,
    /// Template file in the bundle.
    pub file: String,
    /// Account it is deployed in.
    pub account: String,
    /// Region it is deployed in.
    pub region: String,
    /// The environment, for target stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Capabilities the deploy must acknowledge.
    pub capabilities: Vec<&'static str>,
    /// Size of the rendered template in bytes (filled in `plan.json`; over 51,200 bytes it must
    /// be deployed from S3 with a `TemplateURL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_bytes: Option<usize>,
}

/// Identity of the pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineInfo {
    /// Manifest name.
    pub name: String,
    /// Owning team.
    pub team: String,
    /// The CodePipeline name (`<prefix>-<name>`).
    pub pipeline_name: String,
    /// Organisation.
    pub org: String,
    /// Tooling account.
    pub tooling_account: String,
    /// Tooling region.
    pub region: String,
    /// Language.
    pub language: String,
    /// Runtime version.
    pub runtime: Sourced<String>,
    /// Tags on every resource: `team`, `pipeline` and the manifest's.
    pub tags: BTreeMap<String, String>,
}

/// Source location.
#[derive(Clone, Debug, Serialize)]
pub struct SourcePlan {
    /// The org source bucket.
    pub bucket: Sourced<String>,
    /// Object key of the repository snapshot.
    pub key: String,
    /// Prefix of the rendered bundle (`<team>/<name>/bundle/`).
    pub bundle_prefix: String,
    /// KMS key for uploads.
    pub kms_key: Sourced<String>,
    /// The pipeline's owner record (`pipelines/<name>/owner.json`): the repository and team it
    /// belongs to, written by its first deploy, changed only by `pipeforge transfer`.
    pub owner_key: String,
    /// The pipeline's deploy lock (`pipelines/<name>/deploy.lock`).
    pub lock_key: String,
}

/// An environment variable of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Origin.
    pub from: Origin,
}

/// A secret of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct SecretVar {
    /// Environment variable name (`variable` in `plan.json`: a flattened SSM secret has a
    /// `name` of its own).
    #[serde(rename = "variable")]
    pub name: String,
    /// The secret.
    #[serde(flatten)]
    pub secret: Secret,
}

/// One step of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct StepPlan {
    /// Step name.
    pub name: String,
    /// Origin of the commands.
    pub from: Origin,
    /// True when the step is enforced: its commands must appear verbatim in the buildspec.
    pub enforced: bool,
    /// Commands.
    pub commands: Vec<String>,
}

/// The steps of one buildspec phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhasePlan {
    /// Phase.
    pub phase: Phase,
    /// Steps in order.
    pub steps: Vec<StepPlan>,
}

/// A report group of a gate.
#[derive(Clone, Debug, Serialize)]
pub struct ReportPlan {
    /// Report name (the group is `<project>-<name>`).
    pub name: String,
    /// Files.
    pub files: Vec<String>,
    /// Base directory.
    pub base_directory: Option<String>,
    /// CodeBuild file format.
    pub format: String,
    /// `test` or `coverage`.
    pub kind: &'static str,
}

/// One gate: one CodeBuild project, one buildspec.
#[derive(Clone, Debug, Serialize)]
pub struct GatePlan {
    /// Gate name.
    pub name: String,
    /// Stage.
    pub stage: Stage,
    /// Mandatory by org policy.
    pub mandatory: Sourced<bool>,
    /// What it checks.
    pub description: String,
    /// CodeBuild project name.
    pub project: String,
    /// Buildspec path in the bundle.
    pub buildspec: String,
    /// Build image.
    pub image: Sourced<String>,
    /// Compute size.
    pub compute: Sourced<Compute>,
    /// Timeout.
    pub timeout_minutes: Sourced<i64>,
    /// `runtime-versions` key.
    pub runtime_key: String,
    /// Runtime version.
    pub runtime_version: String,
    /// Plain variables.
    pub env: Vec<EnvVar>,
    /// Secrets.
    pub secrets: Vec<SecretVar>,
    /// Phases with their steps (only phases with commands, plus `install`).
    pub phases: Vec<PhasePlan>,
    /// Report groups.
    pub reports: Vec<ReportPlan>,
    /// Cache paths.
    pub cache: Vec<String>,
    /// Files passed on to later stages (build-stage gates only).
    pub artifacts: Vec<String>,
    /// Exported variables.
    pub exports: Vec<String>,
    /// True when one of the gate's steps needs a Docker daemon: its CodeBuild project must run
    /// in privileged mode.
    pub privileged: bool,
    /// Whose rules the gate applies (org configuration, repository files ignored); its flags
    /// are checked in the rendered buildspec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub governance: Option<crate::catalog::Governance>,
}

/// What kind of action a pipeline action is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// S3 source.
    Source,
    /// A CodeBuild gate.
    Gate,
    /// Manual approval.
    Approval,
    /// CloudFormation change set creation.
    CreateChangeSet,
    /// CloudFormation change set execution.
    ExecuteChangeSet,
}

/// One action of a stage.
#[derive(Clone, Debug, Serialize)]
pub struct ActionPlan {
    /// Action name.
    pub name: String,
    /// Kind.
    pub kind: ActionKind,
    /// Run order within the stage (same order = parallel).
    pub run_order: u32,
    /// The gate, for gate actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// The environment, for approval and deploy actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// One stage of the pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct StagePlan {
    /// Stage name.
    pub name: String,
    /// Actions.
    pub actions: Vec<ActionPlan>,
}

/// Notification settings.
#[derive(Clone, Debug, Serialize)]
pub struct NotificationsPlan {
    /// E-mail subscribers.
    pub email: Vec<String>,
    /// Events.
    pub events: Sourced<Vec<NotificationEvent>>,
    /// CodeStar Notifications event type ids.
    pub event_type_ids: Vec<&'static str>,
}

impl Plan {
    /// The gate by name.
    pub fn gate(&self, name: &str) -> Option<&GatePlan> {
        self.gates.iter().find(|g| g.name == name)
    }

    /// The artifact that carries the application's template to the deploy stages.
    pub fn deploy_artifact(&self) -> String {
        self.gates
            .iter()
            .rev()
            .find(|g| !g.artifacts.is_empty())
            .map_or_else(|| "Source".to_owned(), GatePlan::artifact_name)
    }
}

impl GatePlan {
    /// The output artifact name of a gate that passes files on.
    pub fn artifact_name(&self) -> String {
        let mut s = String::new();
        for w in self.name.split('-') {
            let mut c = w.chars();
            if let Some(f) = c.next() {
                s.push(f.to_ascii_uppercase());
                s.extend(c);
            }
        }
        s.push_str("Output");
        s
    }
}

/// Computes the plan of a validated manifest whose pipeline lives in the tooling account
/// `tooling` (its placement: see [`crate::capacity::placement`]).
pub fn plan(
    model: &Model,
    org: &OrgPolicy,
    catalog: &Catalog,
    tooling: &ToolingAccount,
) -> Result<Plan> {
    let o = &org.org;
    let lang = catalog.language(&model.language).ok_or_else(|| {
        Error::other(
            format!("language `{}` vanished from the catalog", model.language),
            "this is a pipeforge bug; please report it",
        )
    })?;
    let prefix = &o.naming.prefix;
    let pipeline_name = format!("{prefix}-{}", model.name);

    let mut tags = model.tags.clone();
    tags.insert("team".to_owned(), model.team.clone());
    tags.insert("pipeline".to_owned(), model.name.clone());

    let gates = gates::gates(model, org, lang, &pipeline_name, &tooling.account);
    let stages = stages::stages(model, &gates);
    let base_key = format!("{}/{}", model.team, model.name);
    let (names, stacks) = stacks::stacks(model, org, &gates, tooling)?;
    Ok(Plan {
        schema: PLAN_SCHEMA,
        pipeline: PipelineInfo {
            name: model.name.clone(),
            team: model.team.clone(),
            pipeline_name,
            org: o.org.clone(),
            tooling_account: tooling.account.clone(),
            region: tooling.region.clone(),
            language: model.language.clone(),
            runtime: model.runtime.clone(),
            tags,
        },
        source: SourcePlan {
            bucket: Sourced::new(tooling.bucket.clone(), Origin::Org),
            key: format!("{base_key}/source.zip"),
            bundle_prefix: format!("{base_key}/bundle/"),
            kms_key: Sourced::new(tooling.kms_key.clone(), Origin::Org),
            owner_key: format!("{RECORDS_PREFIX}{}/owner.json", model.name),
            lock_key: format!("{RECORDS_PREFIX}{}/deploy.lock", model.name),
        },
        gates,
        disabled_gates: model.disabled_gates.clone(),
        stages,
        environments: model.environments.clone(),
        artifact: model.artifact.clone(),
        coverage_min: model.coverage_min.clone(),
        deploy: model.deploy.clone(),
        notifications: notifications(model),
        versioning: model.versioning.clone(),
        names,
        stacks,
        notices: model.notices.clone(),
        relaxed_commands: model.relaxed_commands.clone(),
    })
}

/// Notification settings, with the CodeStar Notifications event type ids.
fn notifications(model: &Model) -> NotificationsPlan {
    NotificationsPlan {
        email: model.notifications.email.clone(),
        events: model.notifications.events.clone(),
        event_type_ids: model
            .notifications
            .events
            .value
            .iter()
            .map(|e| e.event_type_id())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::SourceFile;

    /// A language implementing the default policy's five gates, with language variables and a
    /// Docker step that only runs for container images.
    const LANGUAGE: &str = r#"
description: test language
image: aws/codebuild/amazonlinux-x86_64-standard:6.0
runtime: {name: python, versions: ["3.13"], default: "3.13"}
env: {TOOL_OPTS: from-language, CI: "true"}
artifact: {kind: s3, paths: ["dist/**/*"]}
gates:
  lint: {steps: [{name: lint, phase: build, commands: [lint .]}]}
  static-analysis: {steps: [{name: sast, phase: build, commands: [sast .]}]}
  security-scan: {steps: [{name: sca, phase: build, commands: [sca .]}]}
  test: {steps: [{name: unit-tests, phase: build, team: test_commands, commands: [run-tests]}]}
  build:
    steps:
      - {name: team-build, phase: build, team: build_commands}
      - {name: package, phase: build, commands: [package]}
      - {name: image, phase: post_build, artifact: [ecr], privileged: true, commands: [docker build .]}
"#;

    fn plan_of(manifest_tail: &str) -> Plan {
        let mut files = BTreeMap::new();
        files.insert(
            "python.yaml".to_owned(),
            SourceFile::new("python.yaml", LANGUAGE),
        );
        let catalog = Catalog::from_files(&files).expect("catalog");
        let org = crate::org::embedded().expect("org");
        let manifest = format!(
            "version: 1\nname: tiny-service\nteam: core\nlanguage: python\n\
             deploy: {{template: template.yml}}\n\
             environments: [{{name: dev, account: \"111111111111\"}}]\n{manifest_tail}"
        );
        let model = crate::validate(&SourceFile::new("pipeline.yml", manifest), &org, &catalog)
            .expect("valid manifest");
        plan(&model, &org, &catalog, &org.home()).expect("plan")
    }

    fn var<'a>(plan: &'a Plan, gate: &str, name: &str) -> Vec<&'a EnvVar> {
        let gate = plan.gate(gate).expect("gate");
        gate.env.iter().filter(|v| v.name == name).collect()
    }

    #[test]
    fn pipeline_records_live_under_the_reserved_team_prefix() {
        assert_eq!(
            RECORDS_PREFIX,
            format!("{}/", crate::manifest::RESERVED_TEAM)
        );
        let p = plan_of("");
        assert_eq!(p.source.owner_key, "pipelines/tiny-service/owner.json");
        assert_eq!(p.source.lock_key, "pipelines/tiny-service/deploy.lock");
        assert_eq!(p.source.key, "core/tiny-service/source.zip");
    }

    #[test]
    fn only_gates_running_a_docker_step_are_privileged() {
        let ecr = plan_of("artifact: {kind: ecr}\n");
        let privileged: Vec<&str> = ecr
            .gates
            .iter()
            .filter(|g| g.privileged)
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(privileged, ["build"]);

        let s3 = plan_of("artifact: {kind: s3}\n");
        assert!(s3.gates.iter().all(|g| !g.privileged));
        let build = s3.gate("build").expect("build gate");
        assert!(
            build
                .phases
                .iter()
                .flat_map(|p| &p.steps)
                .all(|s| s.name != "image"),
            "the ECR-only step must not run for S3 artifacts"
        );
    }

    #[test]
    fn language_variables_reach_every_gate_and_team_values_replace_them() {
        let plan = plan_of(
            "build:\n  commands: [make]\n  env: {TOOL_OPTS: from-team}\n  \
             secrets: {CI: \"ssm:/core/ci\"}\n",
        );
        // Gates without team commands keep the language's values.
        for gate in ["lint", "static-analysis", "security-scan"] {
            let v = var(&plan, gate, "TOOL_OPTS");
            assert_eq!(v.len(), 1, "gate {gate}");
            assert_eq!(
                (v[0].value.as_str(), v[0].from),
                ("from-language", Origin::Language)
            );
            assert_eq!(var(&plan, gate, "CI").len(), 1, "gate {gate}");
        }
        // Gates with team commands take the team's variable and secret instead, once.
        for gate in ["test", "build"] {
            let v = var(&plan, gate, "TOOL_OPTS");
            assert_eq!(v.len(), 1, "gate {gate}");
            assert_eq!(
                (v[0].value.as_str(), v[0].from),
                ("from-team", Origin::Team)
            );
            assert!(var(&plan, gate, "CI").is_empty(), "gate {gate}");
            let g = plan.gate(gate).expect("gate");
            assert!(g.secrets.iter().any(|s| s.name == "CI"), "gate {gate}");
        }
        // Every gate's variables stay sorted, so the buildspec is deterministic.
        for g in &plan.gates {
            let names: Vec<&str> = g.env.iter().map(|v| v.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "gate {}", g.name);
        }
    }
}
