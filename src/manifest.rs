//! Stage 1: the team manifest (`pipeline.yml`) as written.
//!
//! [`RawManifest`] mirrors the file: every field is optional so that a manifest with errors can
//! still be read far enough to report all of them. Its JSON Schema (generated from these types,
//! doc comments included) is both what editors autocomplete against and what
//! [`crate::schema::check`] validates documents with. Defaults are *not* applied here; that
//! happens once, at the end of validation ([`crate::model`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::SourceFile;
use crate::input::{Loaded, load_document};

/// Pattern of a pipeline name.
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9-]{1,38}[a-z0-9]$";
/// Pattern of a team name.
pub const TEAM_PATTERN: &str = "^[a-z][a-z0-9-]{0,62}$";
/// The team name no manifest may use: the source bucket keeps every pipeline's owner record
/// and deploy lock under `pipelines/`, beside the teams' `<team>/` prefixes.
pub const RESERVED_TEAM: &str = "pipelines";
/// Pattern of an environment variable (and secret) name.
pub const ENV_KEY_PATTERN: &str = "^[A-Z_][A-Z0-9_]*$";
/// Environment variable prefixes reserved for CodeBuild, AWS and pipeforge.
pub const RESERVED_ENV_PREFIXES: [&str; 3] = ["CODEBUILD_", "AWS_", "PF_"];
/// Pattern of an AWS account id.
pub const ACCOUNT_PATTERN: &str = "^[0-9]{12}$";
/// Pattern of an AWS region name.
pub const REGION_PATTERN: &str = "^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$";
/// Pattern of an environment name.
pub const ENV_NAME_PATTERN: &str = "^[a-z][a-z0-9-]{0,19}$";
/// Pattern of a CloudFormation parameter name.
pub const PARAM_KEY_PATTERN: &str = "^[A-Za-z0-9]{1,255}$";
/// Pattern of a resource tag key (the characters AWS allows everywhere).
pub const TAG_KEY_PATTERN: &str = r"^[A-Za-z0-9 _.:/=+@-]{1,128}$";

/// A team's pipeline manifest, schema version 1.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "pipeforge pipeline manifest",
    description = "A team's `pipeline.yml`: what the pipeforge pipeline for this repository builds, tests and deploys. The gates themselves are fixed by the organisation's policy."
)]
pub struct RawManifest {
    /// Manifest schema version; always `1`.
    #[schemars(required, range(min = 1, max = 1), extend("x-hint" = "write `version: 1`"))]
    pub version: Option<i64>,

    /// Pipeline name: lower-case letters, digits and dashes, 3 to 40 characters, starting with a
    /// letter. Names the pipeline, its stacks and its resources.
    #[schemars(required, regex(pattern = NAME_PATTERN), extend("x-hint" = "use 3 to 40 lower-case letters, digits and dashes, starting with a letter and not ending with a dash, e.g. `orders-api`"))]
    pub name: Option<String>,

    /// The owning team. Becomes the `team` tag, which decides who may approve and retry.
    #[schemars(required, regex(pattern = TEAM_PATTERN), extend("x-hint" = "use lower-case letters, digits and dashes, starting with a letter, e.g. `payments`"))]
    pub team: Option<String>,

    /// Language of the repository: a file in the language catalog (`python`, `node`, `java`,
    /// `go`, `dotnet`, ...). Chooses the build image and the tools of every gate.
    #[schemars(required, length(min = 1), extend("x-hint" = "name a language of the catalog, e.g. `language: python`"))]
    pub language: Option<String>,

    /// Runtime version (e.g. `"3.12"`); one the language lists. Default: the language's default.
    #[schemars(length(min = 1))]
    pub runtime: Option<String>,

    /// Team build settings: extra commands, environment, secrets, compute size, timeout.
    pub build: Option<RawBuild>,

    /// What the build publishes.
    pub artifact: Option<RawArtifact>,

    /// Quality thresholds; they may only be stricter than the organisation's.
    pub quality: Option<RawQuality>,

    /// The application's own CloudFormation template, deployed to every environment.
    #[schemars(required, extend("x-hint" = "name the application's CloudFormation template, e.g. `deploy: {template: infra/app.yml}`"))]
    pub deploy: Option<RawDeploy>,

    /// Deployment environments, in promotion order; at least one.
    #[schemars(required, length(min = 1), extend("x-hint" = "list at least one environment, e.g. `- {name: dev, account: \"111111111111\"}`"))]
    pub environments: Option<Vec<RawEnvironment>>,

    /// Who hears about pipeline events, and which events.
    pub notifications: Option<RawNotifications>,

    /// Extra tags for every resource of the pipeline. `team`, `pipeline` and `aws:*` are reserved.
    #[schemars(extend("propertyNames" = { "pattern": TAG_KEY_PATTERN }))]
    pub tags: Option<BTreeMap<String, TagValue>>,

    /// Per-gate settings. Gates cannot be removed when the organisation makes them mandatory.
    pub gates: Option<BTreeMap<String, RawGateSettings>>,

    /// How the version gate numbers releases.
    pub versioning: Option<RawVersioning>,
}

/// A tag value: up to 256 characters.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(transparent)]
pub struct TagValue(#[schemars(length(max = 256))] pub String);

/// Team build settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    /// Extra commands run inside the build gate, after the install phase and before packaging.
    pub commands: Option<Vec<Command>>,

    /// Replaces the language's default test command. The test gate stays: its reports and the
    /// coverage threshold are still enforced.
    #[schemars(length(min = 1))]
    pub test_commands: Option<Vec<Command>>,

    /// Plain environment variables for the test and build gates (not for secrets).
    #[schemars(extend("propertyNames" = { "pattern": ENV_KEY_PATTERN, "x-hint": "environment variable names are upper-case letters, digits and `_`, e.g. `LOG_LEVEL`" }))]
    pub env: Option<BTreeMap<String, EnvValue>>,

    /// Secrets, by reference: `ssm:/path/to/parameter` or
    /// `secretsmanager:secret-id[:json-key[:version-stage[:version-id]]]`. Values never appear in
    /// the generated files.
    #[schemars(extend("propertyNames" = { "pattern": ENV_KEY_PATTERN, "x-hint": "environment variable names are upper-case letters, digits and `_`, e.g. `DB_PASSWORD`" }))]
    pub secrets: Option<BTreeMap<String, SecretRef>>,

    /// CodeBuild compute size.
    pub compute: Option<Compute>,

    /// Build timeout of each gate, in minutes (5 to 480).
    #[schemars(range(min = 5, max = 480))]
    pub timeout_minutes: Option<i64>,
}

/// A shell command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Command(#[schemars(length(min = 1, max = 4096))] pub String);

/// An environment variable value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct EnvValue(#[schemars(length(max = 4096))] pub String);

/// A secret reference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretRef(
    #[schemars(regex(pattern = "^(ssm|secretsmanager):.+$"), extend("x-hint" = "write `ssm:/path/to/parameter` or `secretsmanager:secret-id[:json-key]`"))]
    pub String,
);

/// CodeBuild compute size.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    /// 3 GB, 2 vCPUs (`BUILD_GENERAL1_SMALL`).
    Small,
    /// 7 GB, 4 vCPUs (`BUILD_GENERAL1_MEDIUM`).
    Medium,
    /// 15 GB, 8 vCPUs (`BUILD_GENERAL1_LARGE`).
    Large,
}

impl Compute {
    /// The CodeBuild compute type.
    pub fn codebuild(self) -> &'static str {
        match self {
            Compute::Small => "BUILD_GENERAL1_SMALL",
            Compute::Medium => "BUILD_GENERAL1_MEDIUM",
            Compute::Large => "BUILD_GENERAL1_LARGE",
        }
    }

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Compute::Small => "small",
            Compute::Medium => "medium",
            Compute::Large => "large",
        }
    }
}

/// What the build publishes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawArtifact {
    /// Where the package goes. Default: the language's.
    pub kind: Option<ArtifactKind>,
    /// The CodeArtifact repository (default: the team name) or ECR repository (default: the
    /// pipeline name).
    #[schemars(regex(pattern = "^[A-Za-z0-9][A-Za-z0-9._/-]{1,99}$"), extend("x-hint" = "a repository name: letters, digits, `.`, `_`, `-` and `/`, 2 to 100 characters"))]
    pub repository: Option<String>,
    /// Files that make up the package, as globs relative to the repository root.
    #[schemars(length(min = 1))]
    pub paths: Option<Vec<RepoGlob>>,
}

/// A glob relative to the repository root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct RepoGlob(#[schemars(length(min = 1, max = 1024))] pub String);

/// Where the build's package is published.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// Nothing is published (the deploy template is still passed on).
    None,
    /// Files go to the pipeline's artifact bucket.
    S3,
    /// A package goes to an AWS CodeArtifact repository.
    Codeartifact,
    /// A container image goes to an Amazon ECR repository.
    Ecr,
}

impl ArtifactKind {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::None => "none",
            ArtifactKind::S3 => "s3",
            ArtifactKind::Codeartifact => "codeartifact",
            ArtifactKind::Ecr => "ecr",
        }
    }
}

/// Quality thresholds.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuality {
    /// Minimum line coverage, in percent. May raise, never lower, the organisation's floor.
    #[schemars(range(min = 0, max = 100), extend("x-hint" = "a percentage from the organisation's floor up to 100"))]
    pub coverage_min: Option<i64>,
}

/// The application's deployment.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    /// Path of the application's CloudFormation template inside the repository.
    #[schemars(required, length(min = 1, max = 1024))]
    pub template: Option<String>,
    /// Name of the application stack in every environment. Default: the pipeline name.
    #[schemars(regex(pattern = "^[A-Za-z][A-Za-z0-9-]{0,127}$"), extend("x-hint" = "a stack name: letters, digits and dashes, starting with a letter, at most 128 characters"))]
    pub stack_name: Option<String>,
    /// Template parameters for every environment (environments may override them).
    #[schemars(extend("propertyNames" = { "pattern": PARAM_KEY_PATTERN, "x-hint": "CloudFormation parameter names are letters and digits only" }))]
    pub parameters: Option<BTreeMap<String, ParamValue>>,
}

/// A CloudFormation parameter value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ParamValue(#[schemars(length(max = 4096))] pub String);

/// A deployment environment.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    /// Environment name, e.g. `dev`, `test`, `prod`. The organisation decides which names are
    /// production.
    #[schemars(required, regex(pattern = ENV_NAME_PATTERN), extend("x-hint" = "use up to 20 lower-case letters, digits and dashes, starting with a letter, e.g. `prod`"))]
    pub name: Option<String>,
    /// The 12-digit AWS account the environment lives in (quote it).
    #[schemars(required, regex(pattern = ACCOUNT_PATTERN), extend("x-hint" = "an AWS account id is exactly 12 digits; quote it so leading zeros are kept, e.g. `account: \"012345678901\"`"))]
    pub account: Option<String>,
    /// AWS region. Default: the organisation's default region.
    #[schemars(regex(pattern = REGION_PATTERN), extend("x-hint" = "use an AWS region name such as `us-east-1` or `eu-west-1`"))]
    pub region: Option<String>,
    /// Require a manual approval before deploying here. Always on for production environments.
    pub approval: Option<bool>,
    /// Template parameters for this environment; override `deploy.parameters`.
    #[schemars(extend("propertyNames" = { "pattern": PARAM_KEY_PATTERN, "x-hint": "CloudFormation parameter names are letters and digits only" }))]
    pub parameters: Option<BTreeMap<String, ParamValue>>,
}

/// Who hears about pipeline events.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// E-mail addresses subscribed to the pipeline's notification topic.
    #[schemars(inner(regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$")), extend("uniqueItems" = true))]
    pub email: Option<Vec<String>>,
    /// Which events are sent. Default: `failed` and `approval-needed`.
    #[schemars(extend("uniqueItems" = true))]
    pub events: Option<Vec<NotificationEvent>>,
}

/// A pipeline event that can be notified.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationEvent {
    /// An execution started.
    Started,
    /// An execution failed.
    Failed,
    /// An execution succeeded.
    Succeeded,
    /// An execution was canceled.
    Canceled,
    /// An execution was superseded by a newer one.
    Superseded,
    /// A manual approval is waiting.
    ApprovalNeeded,
}

impl NotificationEvent {
    /// The CodeStar Notifications event type id.
    pub fn event_type_id(self) -> &'static str {
        match self {
            NotificationEvent::Started => "codepipeline-pipeline-pipeline-execution-started",
            NotificationEvent::Failed => "codepipeline-pipeline-pipeline-execution-failed",
            NotificationEvent::Succeeded => "codepipeline-pipeline-pipeline-execution-succeeded",
            NotificationEvent::Canceled => "codepipeline-pipeline-pipeline-execution-canceled",
            NotificationEvent::Superseded => "codepipeline-pipeline-pipeline-execution-superseded",
            NotificationEvent::ApprovalNeeded => "codepipeline-pipeline-manual-approval-needed",
        }
    }

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::Started => "started",
            NotificationEvent::Failed => "failed",
            NotificationEvent::Succeeded => "succeeded",
            NotificationEvent::Canceled => "canceled",
            NotificationEvent::Superseded => "superseded",
            NotificationEvent::ApprovalNeeded => "approval-needed",
        }
    }
}

/// Per-gate settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGateSettings {
    /// Run this gate. Only optional gates may be turned off.
    pub enabled: Option<bool>,
    /// Compute size for this gate only.
    pub compute: Option<Compute>,
    /// Timeout for this gate only, in minutes (5 to 480).
    #[schemars(range(min = 5, max = 480))]
    pub timeout_minutes: Option<i64>,
}

/// How releases are numbered.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVersioning {
    /// The first version, used while the repository has no `vMAJOR.MINOR.PATCH` tag.
    /// Default: `0.1.0`.
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"), extend("x-hint" = "a plain semantic version such as `1.0.0`"))]
    pub initial: Option<String>,
    /// Pre-release identifier for builds of other branches than the default one (e.g. `rc`).
    /// Default: the organisation's.
    #[schemars(regex(pattern = "^[A-Za-z][0-9A-Za-z-]{0,19}$"), extend("x-hint" = "a short word such as `rc` or `beta`"))]
    pub prerelease: Option<String>,
}

/// The manifest's JSON Schema, as published (`pipeforge schema`) and as used for validation:
/// the prebuilt one when it was made from these very sources, else generated.
pub fn json_schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        crate::assets::PREBUILT_MANIFEST_SCHEMA
            .and_then(|text| parse_prebuilt(text, crate::assets::MANIFEST_SCHEMA_DIGEST))
            .unwrap_or_else(generated_schema)
    })
}

/// The manifest's JSON Schema as `schemars` generates it from [`RawManifest`], tightened
/// ([`crate::schema::tighten`]).
pub fn generated_schema() -> Json {
    let mut s = serde_json::to_value(schemars::schema_for!(RawManifest)).unwrap_or(Json::Null);
    crate::schema::tighten(&mut s);
    s
}

/// `assets/prebuilt/manifest-schema.json` as the sources give it: [`generated_schema`] and
/// the digest of the sources it comes from.
#[derive(Deserialize, Serialize)]
struct PrebuiltSchema {
    digest: String,
    schema: Json,
}

/// A prebuilt schema `text`, if it parses and was made from sources of `digest`.
fn parse_prebuilt(text: &str, digest: &str) -> Option<Json> {
    let p: PrebuiltSchema = serde_json::from_str(text).ok()?;
    (p.digest == digest).then_some(p.schema)
}

/// The text of `assets/prebuilt/manifest-schema.json` for these sources.
pub fn prebuilt_schema_json() -> String {
    let p = PrebuiltSchema {
        digest: crate::assets::MANIFEST_SCHEMA_DIGEST.to_owned(),
        schema: generated_schema(),
    };
    let mut text = serde_json::to_string_pretty(&p).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads a manifest: every structural problem is in [`Loaded::checked`]; the value is as much
/// of the manifest as could be read.
pub fn load(file: &SourceFile) -> Loaded<RawManifest> {
    load_document(file, json_schema())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prebuilt_schema_is_the_generated_one() {
        let text = crate::assets::PREBUILT_MANIFEST_SCHEMA.expect("committed");
        let prebuilt =
            parse_prebuilt(text, crate::assets::MANIFEST_SCHEMA_DIGEST).expect("current");
        assert_eq!(prebuilt, generated_schema());
        assert_eq!(json_schema(), &generated_schema());
    }

    #[test]
    fn a_stale_or_broken_prebuilt_schema_is_ignored() {
        let text = crate::assets::PREBUILT_MANIFEST_SCHEMA.expect("committed");
        assert!(parse_prebuilt(text, "fnv1a64:0000000000000000").is_none());
        let broken = text.replacen('{', "[", 1);
        assert!(parse_prebuilt(&broken, crate::assets::MANIFEST_SCHEMA_DIGEST).is_none());
    }
}
