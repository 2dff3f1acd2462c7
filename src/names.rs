//! Names of what pipeforge creates in AWS: typed, validated against AWS's rules, derived in one
//! place.
//!
//! Every generated name is a newtype whose `FromStr` enforces the service's length limit and
//! character set, so a name that AWS would reject can never reach a template. [`PipelineNames`]
//! derives every name of one pipeline from the org prefix, the pipeline name and the gate or
//! environment; a name that is too long fails the render with an [`Error::Quota`] that names the
//! limit and what to shorten. CloudFormation logical ids ([`LogicalId`]) are derived from gate and
//! environment names, so they are stable across renders.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};

/// Why a string is not a valid name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    /// What kind of name (e.g. "IAM role name").
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
    /// The length limit, when the value is too long.
    pub max_len: Option<usize>,
    /// The rule that is broken.
    pub rule: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}` is invalid: {}",
            self.kind, self.value, self.rule
        )
    }
}

impl std::error::Error for NameError {}

fn check_name(
    kind: &'static str,
    value: &str,
    min: usize,
    max: usize,
    chars: &str,
    ok: impl Fn(char) -> bool,
) -> std::result::Result<(), NameError> {
    let err = |max_len: Option<usize>, rule: String| NameError {
        kind,
        value: value.to_owned(),
        max_len,
        rule,
    };
    let len = value.chars().count();
    if len > max {
        return Err(err(
            Some(max),
            format!("it is {len} characters long; the limit is {max}"),
        ));
    }
    if len < min {
        return Err(err(None, format!("it needs at least {min} characters")));
    }
    if let Some(c) = value.chars().find(|c| !ok(*c)) {
        return Err(err(None, format!("{c:?} is not allowed; use {chars}")));
    }
    Ok(())
}

macro_rules! name_type {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal, $min:expr, $max:expr, $chars:literal, $ok:expr
        $(, extra = $extra:expr)?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest valid name.
            pub const MAX_LEN: usize = $max;

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> std::result::Result<Self, NameError> {
                check_name($kind, s, $min, $max, $chars, $ok)?;
                $(
                    let extra: fn(&str) -> std::result::Result<(), String> = $extra;
                    extra(s).map_err(|rule| NameError {
                        kind: $kind,
                        value: s.to_owned(),
                        max_len: None,
                        rule,
                    })?;
                )?
                Ok($name(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn iam_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

fn starts_with_letter(s: &str) -> std::result::Result<(), String> {
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Ok(())
    } else {
        Err("it must start with a letter".to_owned())
    }
}

fn starts_with_alnum(s: &str) -> std::result::Result<(), String> {
    if s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("it must start with a letter or digit".to_owned())
    }
}

name_type!(
    /// A CloudFormation logical id: letters and digits, at most 255.
    LogicalId, "logical id", 1, 255, "letters and digits", alnum
);
name_type!(
    /// A CloudFormation stack (or change set) name: a letter, then letters, digits and `-`, at
    /// most 128.
    StackName, "stack name", 1, 128, "letters, digits and `-`",
    |c: char| c.is_ascii_alphanumeric() || c == '-',
    extra = starts_with_letter
);
name_type!(
    /// An IAM role name: letters, digits and `+=,.@_-`, at most 64.
    RoleName, "IAM role name", 1, 64, "letters, digits and `+=,.@_-`", iam_char
);
name_type!(
    /// An IAM managed policy name: letters, digits and `+=,.@_-`, at most 128.
    PolicyName, "IAM policy name", 1, 128, "letters, digits and `+=,.@_-`", iam_char
);
name_type!(
    /// A CodeBuild project name: a letter or digit, then letters, digits, `-` and `_`, 2 to 255.
    ProjectName, "CodeBuild project name", 2, 255, "letters, digits, `-` and `_`",
    |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_',
    extra = starts_with_alnum
);
name_type!(
    /// A CodeBuild report group name: a letter or digit, then letters, digits, `-` and `_`, 2 to
    /// 128.
    ReportGroupName, "CodeBuild report group name", 2, 128, "letters, digits, `-` and `_`",
    |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_',
    extra = starts_with_alnum
);
name_type!(
    /// A CodePipeline pipeline, stage, action, artifact or namespace name: letters, digits and
    /// `.@-_`, at most 100.
    PipelineName, "CodePipeline name", 1, 100, "letters, digits and `.@-_`",
    |c: char| c.is_ascii_alphanumeric() || ".@-_".contains(c)
);
name_type!(
    /// A CloudWatch Logs log group name: letters, digits and `._-/#`, at most 512.
    LogGroupName, "log group name", 1, 512, "letters, digits and `._-/#`",
    |c: char| c.is_ascii_alphanumeric() || "._-/#".contains(c)
);
name_type!(
    /// A KMS alias: `alias/` then letters, digits and `/_-`, at most 256, not under `alias/aws/`.
    AliasName, "KMS alias", 7, 256, "letters, digits and `/_-` after `alias/`",
    |c: char| c.is_ascii_alphanumeric() || "/_-".contains(c),
    extra = |s| {
        if !s.starts_with("alias/") {
            Err("it must start with `alias/`".to_owned())
        } else if s.starts_with("alias/aws/") {
            Err("`alias/aws/` is reserved for AWS managed keys".to_owned())
        } else {
            Ok(())
        }
    }
);
name_type!(
    /// An SNS topic name: letters, digits, `-` and `_`, at most 256.
    TopicName, "SNS topic name", 1, 256, "letters, digits, `-` and `_`",
    |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_'
);
name_type!(
    /// A CodeStar Notifications rule name: letters, digits, `-`, `_` and spaces, at most 64.
    NotificationRuleName, "notification rule name", 1, 64, "letters, digits, `-`, `_` and spaces",
    |c: char| c.is_ascii_alphanumeric() || "-_ ".contains(c)
);

/// An S3 bucket name (general purpose): 3 to 63 lower-case letters, digits, `.` and `-`,
/// starting and ending with a letter or digit, not shaped like an IP address, without reserved
/// prefixes and suffixes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BucketName(String);

impl BucketName {
    /// The longest valid name.
    pub const MAX_LEN: usize = 63;

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BucketName {
    type Err = NameError;

    fn from_str(s: &str) -> std::result::Result<Self, NameError> {
        const KIND: &str = "S3 bucket name";
        check_name(
            KIND,
            s,
            3,
            Self::MAX_LEN,
            "lower-case letters, digits, `.` and `-`",
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-',
        )?;
        let bad = |rule: &str| NameError {
            kind: KIND,
            value: s.to_owned(),
            max_len: None,
            rule: rule.to_owned(),
        };
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
            return Err(bad("it must start and end with a letter or digit"));
        }
        if s.contains("..") || s.contains(".-") || s.contains("-.") {
            return Err(bad("dots may not be next to each other or to a dash"));
        }
        if s.split('.').count() == 4 && s.split('.').all(|p| p.parse::<u8>().is_ok()) {
            return Err(bad("it must not look like an IP address"));
        }
        for p in ["xn--", "sthree-", "amzn-s3-demo-"] {
            if s.starts_with(p) {
                return Err(bad(&format!("the prefix `{p}` is reserved")));
            }
        }
        for p in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
            if s.ends_with(p) {
                return Err(bad(&format!("the suffix `{p}` is reserved")));
            }
        }
        Ok(BucketName(s.to_owned()))
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BucketName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl LogicalId {
    /// `prefix` followed by the words of `name` in PascalCase: (`Project`, `static-analysis`) →
    /// `ProjectStaticAnalysis`. Names are `[a-z][a-z0-9-]*` by the manifest and policy schemas;
    /// any other character is dropped.
    pub fn derive(prefix: &str, name: &str) -> std::result::Result<LogicalId, NameError> {
        let mut s = String::with_capacity(prefix.len() + name.len());
        s.push_str(prefix);
        for word in name.split(|c: char| !c.is_ascii_alphanumeric()) {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                s.push(first.to_ascii_uppercase());
                s.extend(chars);
            }
        }
        s.parse()
    }
}

/// Parses a derived name, turning a violation into an [`Error::Quota`] (for lengths) or an
/// [`Error::Other`] (for characters), with `what` naming the inputs it was derived from.
pub fn derived<T: FromStr<Err = NameError>>(pipeline: &str, value: &str, what: &str) -> Result<T> {
    value.parse::<T>().map_err(|e| match e.max_len {
        Some(limit) => {
            let len = value.chars().count();
            Error::Quota {
                pipeline: pipeline.to_owned(),
                limit: format!("the {} limit of {limit} characters", e.kind),
                message: format!("{} `{value}` is {len} characters long", e.kind),
                help: format!(
                    "it is derived from {what}; shorten them by at least {} characters",
                    len - limit
                ),
            }
        }
        None => Error::other(
            format!("generated {} `{value}` is invalid: {}", e.kind, e.rule),
            format!("it is derived from {what}; change them"),
        ),
    })
}

/// Names of one gate's resources.
#[derive(Clone, Debug, Serialize)]
pub struct GateNames {
    /// Gate name.
    pub gate: String,
    /// Logical id stem (`Gate<Name>`).
    pub logical_id: LogicalId,
    /// CodeBuild project.
    pub project: ProjectName,
    /// The project's service role.
    pub role: RoleName,
    /// The project's log group (`/aws/codebuild/<project>`).
    pub log_group: LogGroupName,
    /// Report groups by report name (`<project>-<report>`).
    pub report_groups: BTreeMap<String, ReportGroupName>,
}

/// Names of one environment's resources.
#[derive(Clone, Debug, Serialize)]
pub struct EnvironmentNames {
    /// Environment name.
    pub environment: String,
    /// Logical id stem (`Env<Name>`).
    pub logical_id: LogicalId,
    /// Pipeline stage (`Deploy-<env>`).
    pub stage: PipelineName,
    /// The target stack, in the environment's account.
    pub target_stack: StackName,
    /// Role the pipeline assumes there to drive CloudFormation.
    pub deploy_role: RoleName,
    /// Role CloudFormation uses for the application's stack.
    pub execution_role: RoleName,
    /// Change set name.
    pub change_set: StackName,
    /// The production guard policy (production environments only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_policy: Option<PolicyName>,
}

/// Names of a cross-region artifact store.
#[derive(Clone, Debug, Serialize)]
pub struct RegionNames {
    /// Region.
    pub region: String,
    /// Support stack (in the tooling account, in that region).
    pub stack: StackName,
    /// Artifact bucket in that region.
    pub bucket: BucketName,
}

/// Every name of one pipeline's resources.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineNames {
    /// The CodePipeline.
    pub pipeline: PipelineName,
    /// The pipeline stack (tooling account).
    pub pipeline_stack: StackName,
    /// CodePipeline service role.
    pub pipeline_role: RoleName,
    /// Alias of the artifact key (the same in every region).
    pub key_alias: AliasName,
    /// Artifact bucket in the tooling region.
    pub artifact_bucket: BucketName,
    /// Notification topic.
    pub topic: TopicName,
    /// CodeStar notification rule.
    pub notification_rule: NotificationRuleName,
    /// The team's access policy.
    pub team_policy: PolicyName,
    /// Per gate, in plan order.
    pub gates: Vec<GateNames>,
    /// Per environment, in promotion order.
    pub environments: Vec<EnvironmentNames>,
    /// Per other region with environments, sorted.
    pub regions: Vec<RegionNames>,
}

/// What a name derivation needs.
pub struct NameInputs<'a> {
    /// Org prefix.
    pub prefix: &'a str,
    /// Manifest (pipeline) name.
    pub name: &'a str,
    /// Tooling account.
    pub account: &'a str,
    /// Tooling region.
    pub region: &'a str,
    /// Gate names with their report names.
    pub gates: Vec<(&'a str, Vec<&'a str>)>,
    /// Environment names with whether they are production.
    pub environments: Vec<(&'a str, bool)>,
    /// Other regions that need an artifact store.
    pub regions: Vec<&'a str>,
    /// Deploy role pattern (`{prefix}`, `{pipeline}`, `{env}`).
    pub deploy_role: &'a str,
    /// Execution role pattern.
    pub execution_role: &'a str,
}

/// The kinds of stack pipeforge deploys, by the form of their names: `<prefix>-<pipeline>-pipeline`
/// (tooling account), `<prefix>-<pipeline>-artifacts-<region>` (tooling account, another region)
/// and `<prefix>-<pipeline>-<environment>-target` (each environment's account). The bootstrap's
/// roles may drive CloudFormation on these patterns only ([`OWN_STACK_PATTERNS`]).
pub fn pipeline_stack_name(prefix: &str, pipeline: &str) -> String {
    format!("{prefix}-{pipeline}-pipeline")
}

/// See [`pipeline_stack_name`].
pub fn region_stack_name(prefix: &str, pipeline: &str, region: &str) -> String {
    format!("{prefix}-{pipeline}-artifacts-{region}")
}

/// See [`pipeline_stack_name`].
pub fn target_stack_name(prefix: &str, pipeline: &str, env: &str) -> String {
    format!("{prefix}-{pipeline}-{env}-target")
}

/// The patterns of pipeforge's own stack names (`{prefix}` replaced by the org prefix): what the
/// bootstrap's worker and bootstrap roles may deploy, and what no application stack may match.
pub const OWN_STACK_PATTERNS: [&str; 3] = [
    "{prefix}-*-pipeline",
    "{prefix}-*-artifacts-*",
    "{prefix}-*-target",
];

/// Words that end pipeforge's own stack names (see [`OWN_STACK_PATTERNS`]); an environment name
/// may not contain them.
pub const STACK_NAME_WORDS: [&str; 3] = ["pipeline", "artifacts", "target"];

/// Expands `{prefix}`, `{pipeline}` and `{env}` in an org naming pattern.
pub fn expand(pattern: &str, prefix: &str, pipeline: &str, env: &str) -> String {
    pattern
        .replace("{prefix}", prefix)
        .replace("{pipeline}", pipeline)
        .replace("{env}", env)
}

/// The names of the pipeforge installation (`pipeforge bootstrap`) that stacks and deploys refer
/// to. The tooling account's are built from the org prefix (`<prefix>-pipeforge-…`, like the
/// webhook and worker); the target accounts' from the bootstrap role's name, so that an account
/// that is both the tooling account and a target account holds both sets without a clash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallNames {
    /// The worker function and its role (tooling account).
    pub worker: String,
    /// The webhook function and its role (tooling account).
    pub webhook: String,
    /// The CloudFormation execution role of the pipeline and region stacks (tooling account).
    pub tooling_execution_role: String,
    /// The permissions boundary of every role the pipeline stacks create (tooling account).
    pub tooling_roles_boundary: String,
    /// The role pipeforge assumes in target accounts (`deploy.bootstrap_role`).
    pub bootstrap_role: String,
    /// The CloudFormation execution role of the target stacks (every target account).
    pub target_execution_role: String,
    /// The permissions boundary of the deploy roles the target stacks create.
    pub target_roles_boundary: String,
    /// The role `pipeforge recover` assumes in target accounts: it may only delete stacks
    /// through [`InstallNames::recovery_execution_role`].
    pub recovery_role: String,
    /// The CloudFormation role a recovery deletes with: it holds no permissions, so it can
    /// delete a stack that has no resources left (a failed first create) and nothing else.
    pub recovery_execution_role: String,
    /// The managed policy another tooling account's bootstrap stack attaches to the bootstrap
    /// role there (`tooling-<account>.json`): what deploys placed in that account need.
    pub tooling_deployer_policy: String,
}

impl InstallNames {
    /// The installation's names for an org prefix and bootstrap role.
    pub fn new(prefix: &str, bootstrap_role: &str) -> InstallNames {
        InstallNames {
            worker: format!("{prefix}-pipeforge-worker"),
            webhook: format!("{prefix}-pipeforge-webhook"),
            tooling_execution_role: format!("{prefix}-pipeforge-cfn-exec"),
            tooling_roles_boundary: format!("{prefix}-pipeforge-roles-boundary"),
            bootstrap_role: bootstrap_role.to_owned(),
            target_execution_role: format!("{bootstrap_role}-cfn-exec"),
            target_roles_boundary: format!("{bootstrap_role}-roles-boundary"),
            recovery_role: format!("{bootstrap_role}-recovery"),
            recovery_execution_role: format!("{bootstrap_role}-recovery-exec"),
            tooling_deployer_policy: format!("{prefix}-pipeforge-tooling-deployer"),
        }
    }

    /// The execution role CloudFormation deploys a stack with: the target accounts' for target
    /// stacks, the tooling account's for the others.
    pub fn execution_role(&self, target_stack: bool) -> &str {
        if target_stack {
            &self.target_execution_role
        } else {
            &self.tooling_execution_role
        }
    }

    /// The boundary the roles of a stack carry (as [`InstallNames::execution_role`]).
    pub fn roles_boundary(&self, target_stack: bool) -> &str {
        if target_stack {
            &self.target_roles_boundary
        } else {
            &self.tooling_roles_boundary
        }
    }

    /// The first name over IAM's 64-character limit for role and policy names, if any.
    pub fn too_long(&self) -> Option<&str> {
        [
            &self.worker,
            &self.webhook,
            &self.tooling_execution_role,
            &self.tooling_roles_boundary,
            &self.target_execution_role,
            &self.target_roles_boundary,
            &self.recovery_role,
            &self.recovery_execution_role,
        ]
        .into_iter()
        .find(|n| n.len() > 64)
        .map(String::as_str)
    }
}

/// The pipeline stack's parameter carrying the ARN of the artifact key in another region:
/// `ArtifactKey` and the region in PascalCase (`eu-west-1` → `ArtifactKeyEuWest1`). CodePipeline
/// names the key of a cross-account artifact store by key ARN (an alias is not resolved in the
/// target account), and a key's ARN is only known once its region stack exists.
pub fn region_key_parameter(region: &str) -> String {
    let mut out = "ArtifactKey".to_owned();
    for part in region.split('-') {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

/// The artifact bucket of a pipeline in a region: `<prefix>-<pipeline>-<account>-<region>`.
pub fn artifact_bucket_name(prefix: &str, name: &str, account: &str, region: &str) -> String {
    format!("{prefix}-{name}-{account}-{region}")
}

impl PipelineNames {
    /// Derives every name; the first one that breaks an AWS rule is the error.
    pub fn derive(i: &NameInputs<'_>) -> Result<PipelineNames> {
        let mut d = Deriver {
            i,
            base: format!("{}-{}", i.prefix, i.name),
            seen_ids: BTreeMap::new(),
        };
        let mut gates = Vec::new();
        for (gate, reports) in &i.gates {
            gates.push(d.gate(gate, reports)?);
        }
        let mut environments = Vec::new();
        for (env, production) in &i.environments {
            environments.push(d.environment(env, *production)?);
        }
        let mut regions = Vec::new();
        for r in &i.regions {
            regions.push(d.region(r)?);
        }
        let (p, n, base) = (i.prefix, i.name, &d.base);
        Ok(PipelineNames {
            pipeline: d.make(base.clone(), "")?,
            pipeline_stack: d.make(pipeline_stack_name(p, n), "")?,
            pipeline_role: d.make(format!("{base}-pipeline"), "")?,
            key_alias: d.make(format!("alias/{base}-artifacts"), "")?,
            artifact_bucket: d.make(
                artifact_bucket_name(p, n, i.account, i.region),
                &format!(
                    "the tooling account `{}` and region `{}`",
                    i.account, i.region
                ),
            )?,
            topic: d.make(format!("{base}-notifications"), "")?,
            notification_rule: d.make(format!("{base}-events"), "")?,
            team_policy: d.make(format!("{base}-team-access"), "")?,
            gates,
            environments,
            regions,
        })
    }

    /// The names of a gate.
    pub fn gate(&self, gate: &str) -> Option<&GateNames> {
        self.gates.iter().find(|g| g.gate == gate)
    }

    /// The names of an environment.
    pub fn environment(&self, env: &str) -> Option<&EnvironmentNames> {
        self.environments.iter().find(|e| e.environment == env)
    }

    /// The artifact bucket of a region (the tooling bucket for the tooling region).
    pub fn bucket_for(&self, region: &str) -> &BucketName {
        self.regions
            .iter()
            .find(|r| r.region == region)
            .map_or(&self.artifact_bucket, |r| &r.bucket)
    }
}

/// [`PipelineNames::derive`] under way: its inputs, and the logical ids given so far.
struct Deriver<'a> {
    i: &'a NameInputs<'a>,
    /// `<prefix>-<pipeline>`.
    base: String,
    /// Each logical id given (lower-cased), with what it was given to.
    seen_ids: BTreeMap<String, String>,
}

impl Deriver<'_> {
    /// What a name is derived from: the prefix, the pipeline name and `extra`.
    fn by(&self, extra: &str) -> String {
        let (p, n) = (self.i.prefix, self.i.name);
        if extra.is_empty() {
            format!("the org prefix `{p}` and the pipeline name `{n}`")
        } else {
            format!("the org prefix `{p}`, the pipeline name `{n}` and {extra}")
        }
    }

    /// The name `value`, derived from the prefix, the pipeline name and `extra`.
    fn make<T: FromStr<Err = NameError>>(&self, value: String, extra: &str) -> Result<T> {
        derived::<T>(self.i.name, &value, &self.by(extra))
    }

    /// `id`, unless another gate or environment has it already (ids compare without case).
    fn unique_id(&mut self, id: LogicalId, what: String) -> Result<LogicalId> {
        let key = id.as_str().to_ascii_lowercase();
        if let Some(first) = self.seen_ids.insert(key, what.clone()) {
            return Err(Error::other(
                format!("{what} and {first} map to the same CloudFormation logical id `{id}`"),
                "rename one of them so that they differ in more than dashes",
            ));
        }
        Ok(id)
    }

    /// The names of gate `gate` with its reports.
    fn gate(&mut self, gate: &str, reports: &[&str]) -> Result<GateNames> {
        let base = &self.base;
        let what = format!("the gate `{gate}`");
        let project: ProjectName = self.make(format!("{base}-{gate}"), &what)?;
        let mut report_groups = BTreeMap::new();
        for r in reports {
            let extra = format!("the gate `{gate}` and its report `{r}`");
            let group = self.make(format!("{project}-{r}"), &extra)?;
            report_groups.insert((*r).to_owned(), group);
        }
        let lid = LogicalId::derive("Gate", gate).map_err(|e| {
            Error::other(e.to_string(), "gate names are letters, digits and dashes")
        })?;
        Ok(GateNames {
            gate: gate.to_owned(),
            logical_id: self.unique_id(lid, format!("gate `{gate}`"))?,
            role: self.make(format!("{project}-role"), &what)?,
            log_group: self.make(format!("/aws/codebuild/{project}"), &what)?,
            project,
            report_groups,
        })
    }

    /// The names of environment `env`: its stage, target stack, roles and change set, and the
    /// deploy guard of a production one.
    fn environment(&mut self, env: &str, production: bool) -> Result<EnvironmentNames> {
        let (i, base) = (self.i, &self.base);
        let (p, n) = (i.prefix, i.name);
        let what = format!("the environment `{env}`");
        let lid = LogicalId::derive("Env", env).map_err(|e| {
            Error::other(
                e.to_string(),
                "environment names are letters, digits and dashes",
            )
        })?;
        let deploy_role = expand(i.deploy_role, p, n, env);
        let execution_role = expand(i.execution_role, p, n, env);
        if deploy_role == execution_role {
            return Err(Error::other(
                format!(
                    "the deploy and execution roles of `{env}` would both be named `{deploy_role}`"
                ),
                "give `deploy.deploy_role` and `deploy.execution_role` different patterns in org.yaml",
            ));
        }
        let from_pattern = |key: &str| format!("the org pattern `{key}`, {}", self.by(&what));
        let (deploy_by, execution_by) = (
            from_pattern("deploy.deploy_role"),
            from_pattern("deploy.execution_role"),
        );
        let change_set = format!("{base}-{env}");
        let guard = format!("{base}-{env}-deploy-guard");
        Ok(EnvironmentNames {
            environment: env.to_owned(),
            logical_id: self.unique_id(lid, format!("environment `{env}`"))?,
            stage: self.make(format!("Deploy-{env}"), &what)?,
            target_stack: self.make(target_stack_name(p, n, env), &what)?,
            deploy_role: derived(n, &deploy_role, &deploy_by)?,
            execution_role: derived(n, &execution_role, &execution_by)?,
            change_set: self.make(change_set, &what)?,
            guard_policy: if production {
                Some(self.make(guard, &what)?)
            } else {
                None
            },
        })
    }

    /// The names of the artifact store in region `r`.
    fn region(&self, r: &str) -> Result<RegionNames> {
        let i = self.i;
        let what = format!("the tooling account `{}` and the region `{r}`", i.account);
        Ok(RegionNames {
            region: r.to_owned(),
            stack: self.make(
                region_stack_name(i.prefix, i.name, r),
                &format!("the region `{r}`"),
            )?,
            bucket: self.make(artifact_bucket_name(i.prefix, i.name, i.account, r), &what)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_follow_iam_rules() {
        assert!("pf-orders-api-dev-deploy".parse::<RoleName>().is_ok());
        let long = "r".repeat(65);
        let e = long.parse::<RoleName>().expect_err("too long");
        assert_eq!(e.max_len, Some(64));
        assert!("a b".parse::<RoleName>().is_err());
        assert!("a/b".parse::<RoleName>().is_err());
        assert!("r".repeat(64).parse::<RoleName>().is_ok());
    }

    #[test]
    fn stack_names_start_with_a_letter() {
        assert!("pf-orders-api-pipeline".parse::<StackName>().is_ok());
        assert!("1abc".parse::<StackName>().is_err());
        assert!("a_b".parse::<StackName>().is_err());
        assert_eq!(
            "s".repeat(129)
                .parse::<StackName>()
                .expect_err("long")
                .max_len,
            Some(128)
        );
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(
            "pf-orders-api-123456789012-us-east-1"
                .parse::<BucketName>()
                .is_ok()
        );
        for bad in [
            "ab",
            "Upper-case",
            "-dash-first",
            "dash-last-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "xn--abc",
            "sthree-abc",
            "abc-s3alias",
            "abc--ol-s3",
            "a_b",
        ] {
            assert!(bad.parse::<BucketName>().is_err(), "{bad}");
        }
        let e = "b".repeat(64).parse::<BucketName>().expect_err("long");
        assert_eq!(e.max_len, Some(63));
    }

    #[test]
    fn logical_ids_are_pascal_case_and_alphanumeric() {
        assert_eq!(
            LogicalId::derive("Gate", "static-analysis")
                .expect("id")
                .as_str(),
            "GateStaticAnalysis"
        );
        assert_eq!(
            LogicalId::derive("Env", "prod-eu-1").expect("id").as_str(),
            "EnvProdEu1"
        );
        assert!("Has-Dash".parse::<LogicalId>().is_err());
    }

    #[test]
    fn aliases_are_not_aws_reserved() {
        assert!("alias/pf-x-artifacts".parse::<AliasName>().is_ok());
        assert!("alias/aws/s3".parse::<AliasName>().is_err());
        assert!("pf-x".parse::<AliasName>().is_err());
    }

    fn inputs<'a>(name: &'a str, envs: Vec<(&'a str, bool)>) -> NameInputs<'a> {
        NameInputs {
            prefix: "pf",
            name,
            account: "123456789012",
            region: "us-east-1",
            gates: vec![("lint", vec![]), ("test", vec!["junit"])],
            environments: envs,
            regions: vec![],
            deploy_role: "{prefix}-{pipeline}-{env}-deploy",
            execution_role: "{prefix}-{pipeline}-{env}-exec",
        }
    }

    #[test]
    fn derives_every_name() {
        let n = PipelineNames::derive(&inputs("orders-api", vec![("prod", true)])).expect("names");
        assert_eq!(n.pipeline.as_str(), "pf-orders-api");
        assert_eq!(
            n.artifact_bucket.as_str(),
            "pf-orders-api-123456789012-us-east-1"
        );
        let g = n.gate("test").expect("gate");
        assert_eq!(g.project.as_str(), "pf-orders-api-test");
        assert_eq!(
            g.report_groups["junit"].as_str(),
            "pf-orders-api-test-junit"
        );
        assert_eq!(g.log_group.as_str(), "/aws/codebuild/pf-orders-api-test");
        let e = n.environment("prod").expect("env");
        assert_eq!(e.deploy_role.as_str(), "pf-orders-api-prod-deploy");
        assert_eq!(e.logical_id.as_str(), "EnvProd");
        assert!(e.guard_policy.is_some());
    }

    #[test]
    fn too_long_names_are_quota_errors_naming_the_limit() {
        let name = "a".repeat(40);
        let env = "e".repeat(20);
        let e = PipelineNames::derive(&inputs(&name, vec![(&env, false)])).expect_err("long");
        let text = e.to_string();
        assert!(matches!(e, Error::Quota { .. }), "{text}");
        assert!(text.contains("limit of"), "{text}");
        assert!(text.contains("shorten"), "{text}");
    }

    #[test]
    fn colliding_logical_ids_are_rejected() {
        let mut i = inputs("orders-api", vec![]);
        i.gates = vec![("a-1", vec![]), ("a1", vec![])];
        let e = PipelineNames::derive(&i).expect_err("collision");
        assert!(
            e.to_string().contains("same CloudFormation logical id"),
            "{e}"
        );
    }

    #[test]
    fn derived_stack_names_always_fit() {
        // The longest prefix (20), pipeline name (40) and environment name (20) the schemas allow.
        let prefix = "p".repeat(20);
        let name = "n".repeat(40);
        let env = "e".repeat(20);
        for candidate in [
            format!("{prefix}-{name}-pipeline"),
            format!("{prefix}-{name}-{env}-target"),
            format!("{prefix}-{name}-artifacts-ap-southeast-5"),
            format!("{prefix}-{name}-{env}"),
        ] {
            assert!(
                candidate.len() <= StackName::MAX_LEN,
                "{candidate} is {} long",
                candidate.len()
            );
            assert!(candidate.parse::<StackName>().is_ok());
        }
    }
}
