//! Stage 2: the validated model — a manifest checked against the org policy and the language
//! catalog, with every default applied and every value's origin recorded.
//!
//! [`validate`] reports *all* problems at once: the structural ones found by the schema check
//! and the semantic ones found here (unknown language or runtime, reserved tags, duplicate
//! environments, paths escaping the repository, attempts to weaken the org policy, ...), each
//! with its location, manifest path and a hint. The model has no `Option` where a default
//! exists.
//!
//! This file holds the model's types, [`validate`] and the context every check reports into;
//! each manifest section is validated by its own file (`language.rs`, `build.rs`,
//! `secrets.rs`, `artifact.rs`, `quality.rs`, `deploy.rs`, `environments.rs`, `tags.rs`,
//! `notifications.rs`, `gates.rs`, `versioning.rs`), in the order the manifest lists them.

mod artifact;
mod build;
mod deploy;
mod environments;
mod gates;
mod language;
mod notifications;
mod quality;
mod secrets;
pub mod stack_names;
mod tags;
mod versioning;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::error::{Diagnostic, SourceFile};
use crate::input::Loaded;
use crate::manifest::{ArtifactKind, Compute, NotificationEvent, RESERVED_TEAM, RawManifest};
use crate::org::{OrgPolicy, Stage};
use crate::schema::Checked;

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The organisation's policy (`org.yaml`).
    Org,
    /// The language catalog (`languages/<name>.yaml`).
    Language,
    /// The team's manifest (`pipeline.yml`).
    Team,
    /// A pipeforge built-in default.
    Default,
}

impl Origin {
    /// The name used in `plan.json` and `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Org => "org",
            Origin::Language => "language",
            Origin::Team => "team",
            Origin::Default => "default",
        }
    }
}

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub from: Origin,
}

impl<T> Sourced<T> {
    /// Wraps a value with its origin.
    pub fn new(value: T, from: Origin) -> Self {
        Self { value, from }
    }
}

/// A secret reference, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "store", rename_all = "kebab-case")]
pub enum Secret {
    /// An SSM Parameter Store parameter.
    ParameterStore {
        /// Parameter name, e.g. `/payments/db/password`.
        name: String,
    },
    /// A Secrets Manager secret.
    SecretsManager {
        /// Secret name or ARN.
        secret_id: String,
        /// The whole reference as CodeBuild takes it: `secret-id[:json-key[:stage[:version]]]`.
        reference: String,
    },
}

/// The validated build settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Build {
    /// Team commands run inside the build gate.
    pub commands: Vec<String>,
    /// Team test commands replacing the language's, if any.
    pub test_commands: Option<Vec<String>>,
    /// Plain environment variables.
    pub env: BTreeMap<String, String>,
    /// Secrets by environment variable name.
    pub secrets: BTreeMap<String, Secret>,
    /// Compute size.
    pub compute: Sourced<Compute>,
    /// Timeout in minutes.
    pub timeout_minutes: Sourced<i64>,
}

/// The validated artifact settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Artifact {
    /// Kind.
    pub kind: Sourced<ArtifactKind>,
    /// Repository, for CodeArtifact (default: the team) and ECR (default: the pipeline name).
    pub repository: Option<Sourced<String>>,
    /// Package paths.
    pub paths: Sourced<Vec<String>>,
}

/// The validated deployment settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Deploy {
    /// Template path in the repository.
    pub template: String,
    /// Application stack name.
    pub stack_name: Sourced<String>,
    /// Parameters for every environment.
    pub parameters: BTreeMap<String, String>,
}

/// A validated environment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Environment {
    /// Name.
    pub name: String,
    /// Account id.
    pub account: String,
    /// Region.
    pub region: Sourced<String>,
    /// Whether the org policy treats it as production (by its name, its account, or both).
    pub production: bool,
    /// Why it is production: its name is one of `environments.production`, its account is a
    /// production account, or both; empty when it is not production.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub production_by: Vec<ProductionBy>,
    /// The account's name in the org policy's `accounts` (none when the policy lists none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// Whether a manual approval precedes its deployment.
    pub approval: Sourced<bool>,
    /// Effective template parameters (deploy parameters overridden by the environment's).
    pub parameters: BTreeMap<String, String>,
}

/// What makes an environment production.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductionBy {
    /// Its name is one of the org policy's `environments.production`.
    Name,
    /// Its account is a `production: true` account of the org policy.
    Account,
}

/// Notification settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notifications {
    /// E-mail subscribers.
    pub email: Vec<String>,
    /// Events.
    pub events: Sourced<Vec<NotificationEvent>>,
}

/// An enabled gate with its effective settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gate {
    /// Gate name.
    pub name: String,
    /// Stage.
    pub stage: Stage,
    /// Whether the org makes it mandatory.
    pub mandatory: bool,
    /// What it checks.
    pub description: String,
    /// Compute size.
    pub compute: Sourced<Compute>,
    /// Timeout.
    pub timeout_minutes: Sourced<i64>,
}

/// An optional gate that does not run, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DisabledGate {
    /// Gate name.
    pub name: String,
    /// Why it does not run.
    pub reason: &'static str,
}

/// Versioning settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Versioning {
    /// First version when no tag exists.
    pub initial: Sourced<String>,
    /// Pre-release identifier.
    pub prerelease: Sourced<String>,
}

/// A validated manifest: the team's choices, with defaults applied and origins recorded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Model {
    /// The manifest file, as named by the user.
    #[serde(skip)]
    pub file: String,
    /// Pipeline name.
    pub name: String,
    /// Owning team.
    pub team: String,
    /// Language name.
    pub language: String,
    /// Runtime version.
    pub runtime: Sourced<String>,
    /// Build settings.
    pub build: Build,
    /// Artifact settings.
    pub artifact: Artifact,
    /// Coverage threshold.
    pub coverage_min: Sourced<i64>,
    /// Deployment.
    pub deploy: Deploy,
    /// Environments in promotion order.
    pub environments: Vec<Environment>,
    /// Notifications.
    pub notifications: Notifications,
    /// Extra tags.
    pub tags: BTreeMap<String, String>,
    /// Enabled gates in org order.
    pub gates: Vec<Gate>,
    /// Gates turned off by the manifest (optional ones only).
    pub disabled_gates: Vec<DisabledGate>,
    /// Versioning.
    pub versioning: Versioning,
}

/// What every section check reports into: the manifest, its structural check (spans, invalid
/// paths) and the org policy.
struct Ctx<'a> {
    file: &'a SourceFile,
    checked: &'a Checked,
    org: &'a OrgPolicy,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>, help: impl Into<String>) {
        if self.checked.is_invalid(path) {
            return;
        }
        let span = self.checked.spans.value(path);
        self.diags
            .push(self.file.diag(span, Some(path), message, help));
    }

    fn err_key(&mut self, path: &str, message: impl Into<String>, help: impl Into<String>) {
        if self.checked.is_invalid(path) {
            return;
        }
        let span = self.checked.spans.key(path);
        self.diags
            .push(self.file.diag(span, Some(path), message, help));
    }
}

/// True when `path` is relative, `/`-separated and stays inside the repository.
pub fn is_repo_relative(path: &str) -> bool {
    let absolute = path.starts_with('/')
        || path.starts_with('~')
        || (path.len() >= 2 && path.as_bytes()[1] == b':');
    !(path.is_empty() || absolute || path.contains('\\') || path.contains('\0'))
        && path.split('/').all(|c| c != "..")
}

/// True for characters AWS allows in tag values (letters, digits, spaces and `_.:/=+-@`).
pub fn is_tag_value_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

fn has_control_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// Validates a loaded manifest. On success the model has every default applied; on failure
/// every problem (structural and semantic) is returned, sorted by position.
pub fn validate(
    loaded: &Loaded<RawManifest>,
    file: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
) -> Result<Model, Vec<Diagnostic>> {
    let mut cx = Ctx {
        file,
        checked: &loaded.checked,
        org,
        diags: loaded.checked.diagnostics.clone(),
    };
    let empty = RawManifest::default();
    let raw = loaded.value.as_ref().unwrap_or(&empty);
    let model = build_model(&mut cx, raw, catalog);
    let mut diags = cx.diags;
    let empty_document = loaded.checked.spans.contains("")
        && file
            .text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if empty_document {
        diags = vec![Diagnostic::file_level(
            file.name.clone(),
            "the manifest is empty",
            "start from `examples/pipeline.yml`, or run `pipeforge schema` for every key",
        )];
    }
    if diags.is_empty() {
        if let Some(m) = model {
            return Ok(m);
        }
        diags.push(Diagnostic::file_level(
            file.name.clone(),
            "the manifest could not be read",
            "check that it is a YAML mapping with the keys of `pipeforge schema`",
        ));
    }
    diags.sort_by_key(|d| (d.span.is_none(), d.span.map(|s| s.start)));
    Err(diags)
}

/// The model from each manifest section in turn; `None` when a required value is missing (its
/// problem is in `cx.diags`).
fn build_model(cx: &mut Ctx<'_>, raw: &RawManifest, catalog: &Catalog) -> Option<Model> {
    if cx.checked.value.is_null() && cx.checked.diagnostics.is_empty() {
        cx.diags.push(Diagnostic::file_level(
            cx.file.name.clone(),
            "the manifest is empty",
            "start from `examples/pipeline.yml`, or run `pipeforge schema` for every key",
        ));
        return None;
    }
    let language = language::language(cx, raw, catalog);
    let runtime = language::runtime(cx, raw, language);
    let build = build::build(cx, raw);
    let artifact = artifact::artifact(cx, raw, language);
    let coverage_min = quality::coverage_min(cx, raw);
    let deploy_params = deploy::parameters(raw);
    let deploy = deploy::deploy(cx, raw, &deploy_params);
    let environments = environments::environments(cx, raw, &deploy_params);
    stack_names::check(cx, raw.name.as_deref(), deploy.as_ref(), &environments);
    let tags = tags::tags(cx, raw);
    let notifications = notifications::notifications(cx, raw);
    let (gates, disabled_gates) = gates::gates(cx, raw, catalog, language, &build);
    let versioning = versioning::versioning(cx, raw);
    if raw.team.as_deref() == Some(RESERVED_TEAM) {
        cx.err(
            "team",
            format!("the team name `{RESERVED_TEAM}` is reserved"),
            "pipeforge keeps every pipeline's owner record under `pipelines/` in the source bucket; choose another team name",
        );
    }
    Some(Model {
        file: cx.file.name.clone(),
        name: raw.name.clone()?,
        team: raw.team.clone()?,
        language: raw.language.clone()?,
        runtime: runtime?,
        build,
        artifact: artifact?,
        coverage_min,
        deploy: deploy?,
        environments,
        notifications,
        tags,
        gates,
        disabled_gates,
        versioning,
    })
}

/// `a`, `b`, `c` in backticks.
pub fn backticks<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_relative_paths() {
        assert!(is_repo_relative("infra/app.yml"));
        assert!(is_repo_relative("dist/**"));
        assert!(!is_repo_relative("../secret"));
        assert!(!is_repo_relative("a/../../b"));
        assert!(!is_repo_relative("/etc/passwd"));
        assert!(!is_repo_relative("C:/x"));
        assert!(!is_repo_relative("a\\b"));
        assert!(!is_repo_relative(""));
    }
}
