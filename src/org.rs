//! The organisation's policy (`org.yaml`), owned by the platform team.
//!
//! The policy fixes what a team manifest cannot change: the gates and which are mandatory, the
//! coverage floor, which environments are production (approval forced on), which languages are
//! allowed, where sources go and how resources are named. It also says who may do what: the
//! accounts pipelines may deploy to (which are production, which teams may use each) and the
//! repositories each team's pipelines may come from. When no policy file is given, the embedded
//! `examples/org.yaml` is used; that file documents every key.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::assets;
use crate::date::{DATE_PATTERN, Date};
use crate::error::{Diagnostic, Error, Result, SourceFile, Span};
use crate::input::load_document;
use crate::manifest::{ACCOUNT_PATTERN, Compute, NotificationEvent, REGION_PATTERN, TEAM_PATTERN};
use crate::schema::SpanIndex;

/// Name under which the embedded default policy is shown in messages.
pub const DEFAULT_ORG_NAME: &str = "<embedded org.yaml>";

/// The organisation's policy, as written in `org.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pipeforge organisation policy")]
pub struct Org {
    /// Policy schema version; always `1`.
    #[schemars(range(min = 1, max = 1))]
    pub version: i64,
    /// Short name of the organisation (used in descriptions).
    #[schemars(regex(pattern = "^[a-z][a-z0-9-]{0,30}$"))]
    pub org: String,
    /// The home tooling account: it holds the owner records and deploy locks of every pipeline
    /// (in its source bucket), runs the webhook, and takes pipelines like every tooling account.
    pub tooling: Tooling,
    /// The home tooling account's source bucket, which receives repository snapshots (and the
    /// owner records and locks of every pipeline).
    pub source: SourceBucket,
    /// More tooling accounts pipelines may be placed in, besides the home one (`tooling`), each
    /// with its region, source bucket and key. Empty: every pipeline lives in the home account.
    #[serde(default)]
    pub tooling_accounts: Vec<ToolingAccount>,
    /// Where new pipelines go when there are several tooling accounts: by pipeline, by team,
    /// else by a stable hash of the pipeline's name weighted by each account's `capacity`. The
    /// first deploy records where a pipeline was placed in its owner record.
    #[serde(default)]
    pub placement: OrgPlacement,
    /// Account quotas: when a deploy warns, and quota values AWS does not report.
    #[serde(default)]
    pub capacity: OrgCapacity,
    /// How resources are named.
    pub naming: Naming,
    /// The gates every pipeline runs, in order. `ci` gates run in parallel, then `build` gates.
    #[serde(default = "default_gates")]
    #[schemars(length(min = 1))]
    pub gates: Vec<GateDef>,
    /// Quality floors.
    #[serde(default)]
    pub quality: OrgQuality,
    /// Environment rules.
    #[serde(default)]
    pub environments: OrgEnvironments,
    /// Language rules.
    #[serde(default)]
    pub languages: OrgLanguages,
    /// Build defaults and limits.
    #[serde(default)]
    pub build: OrgBuild,
    /// Cross-account deployment settings.
    #[serde(default)]
    pub deploy: OrgDeploy,
    /// Tag rules.
    #[serde(default)]
    pub tags: OrgTags,
    /// Command rules for team-supplied commands.
    #[serde(default)]
    pub commands: OrgCommands,
    /// Where packages are published.
    #[serde(default)]
    pub artifacts: OrgArtifacts,
    /// Where pipelines get pipeforge itself (used by the version gate).
    #[serde(default)]
    pub tools: OrgTools,
    /// Notification defaults.
    #[serde(default)]
    pub notifications: OrgNotifications,
    /// Versioning rules.
    #[serde(default)]
    pub versioning: OrgVersioning,
    /// Which merged pull requests the webhook turns into deploys.
    #[serde(default)]
    pub webhook: OrgWebhook,
    /// Where pipeforge's buckets send their access logs.
    #[serde(default)]
    pub logging: OrgLogging,
    /// Every account a pipeline may deploy to: whether it is production (a manual approval then
    /// always precedes its deploys) and which teams may use it. Without this key (older
    /// policies) any account id is accepted and only environment names decide what is
    /// production; `validate` and `explain` warn about it.
    #[serde(default)]
    pub accounts: Option<Vec<Account>>,
    /// The teams, each with the repositories its pipelines may come from. Without this key
    /// (older policies) a pipeline of any team may be deployed from any repository;
    /// `validate` and `explain` warn about it.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": TEAM_PATTERN }))]
    pub teams: Option<BTreeMap<String, TeamDef>>,
    /// Exceptions to a mandatory gate or a rule, for some pipelines, until they expire. Each
    /// names the pipelines (or repositories), the gate or rule, a reason, an approver and an
    /// expiry date; an expired waiver no longer covers anything. `explain` and `fleet list`
    /// show the active ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waivers: Vec<Waiver>,
}

/// Access logging of the buckets pipeforge creates (source, job status, artifact buckets).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgLogging {
    /// An existing bucket of the org that receives S3 server access logs (in the same account
    /// and region as each logged bucket, as S3 requires); logs go under `<bucket name>/`.
    /// Unset: no access logs (the stacks record why for scanners).
    #[schemars(regex(pattern = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub access_log_bucket: Option<String>,
}

/// A VPC for the webhook and worker functions.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgVpc {
    /// Subnets (private, with a route to the git hosts and AWS APIs, e.g. through a NAT gateway).
    #[schemars(
        length(min = 1, max = 16),
        inner(regex(pattern = "^subnet-[0-9a-f]{8,17}$"))
    )]
    pub subnet_ids: Vec<String>,
    /// Security groups of the functions' network interfaces.
    #[schemars(
        length(min = 1, max = 5),
        inner(regex(pattern = "^sg-[0-9a-f]{8,17}$"))
    )]
    pub security_group_ids: Vec<String>,
}

/// An account pipelines may deploy to.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The 12-digit account id.
    #[schemars(regex(pattern = ACCOUNT_PATTERN))]
    pub id: String,
    /// A short name, shown in messages and `explain`.
    #[schemars(regex(pattern = ACCOUNT_NAME_PATTERN))]
    pub name: String,
    /// A production account: every deploy to it waits for a manual approval, whatever the
    /// environment is called.
    pub production: bool,
    /// The teams that may deploy to it: team names or globs (`*` matches every team).
    #[schemars(inner(regex(pattern = "^[a-z*][a-z0-9*-]{0,62}$")))]
    pub teams: Vec<String>,
}

/// Pattern of an account's name in the org policy.
pub const ACCOUNT_NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._+=@-]{0,63}$";

/// Pattern of a repository glob in `teams.<team>.repositories`: `owner/repository`, where `*`
/// matches any characters.
pub const REPOSITORY_GLOB_PATTERN: &str = "^[A-Za-z0-9_.*-]+/[A-Za-z0-9_.*-]+$";

impl Account {
    /// True when `team` may deploy to this account.
    pub fn open_to(&self, team: &str) -> bool {
        self.teams.iter().any(|g| glob_match(g, team))
    }

    /// `111111111111 (shared-dev)`, in backticks.
    pub fn label(&self) -> String {
        format!("`{}` (`{}`)", self.id, self.name)
    }
}

/// `owner/*` for `owner/name`: the glob that names every repository of the same owner.
fn repository_owner_glob(repository: &str) -> String {
    match repository.split_once('/') {
        Some((owner, _)) => format!("{owner}/*"),
        None => repository.to_owned(),
    }
}

/// A team of the organisation.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamDef {
    /// The repositories the team's pipelines may come from, as globs over `owner/repository`
    /// (GitHub owner, Bitbucket Cloud workspace or Bitbucket Data Center project key), compared
    /// case-insensitively; `*` matches any characters, e.g. `payments/*`.
    #[schemars(inner(regex(pattern = REPOSITORY_GLOB_PATTERN)))]
    pub repositories: Vec<String>,
}

/// The tooling account.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tooling {
    /// The 12-digit account id.
    #[schemars(regex(pattern = ACCOUNT_PATTERN))]
    pub account: String,
    /// Default region, for the pipelines and for environments that do not name one.
    #[schemars(regex(pattern = REGION_PATTERN))]
    pub region: String,
    /// The most pipelines placed in this account (and the weight of its share of the hash
    /// placement); unset: as many as its quotas allow.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000))]
    pub capacity: Option<u32>,
}

/// A tooling account besides the home one.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolingAccount {
    /// The 12-digit account id.
    #[schemars(regex(pattern = ACCOUNT_PATTERN))]
    pub account: String,
    /// The region its pipelines live in.
    #[schemars(regex(pattern = REGION_PATTERN))]
    pub region: String,
    /// Its source bucket (in that account and region), created by its bootstrap stack.
    #[schemars(regex(pattern = BUCKET_PATTERN))]
    pub bucket: String,
    /// The KMS key of its uploads: an alias (`alias/...`) or a key ARN.
    #[schemars(regex(pattern = KMS_KEY_PATTERN))]
    pub kms_key: String,
    /// The most pipelines placed in this account (and the weight of its share of the hash
    /// placement); unset: as many as its quotas allow.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000))]
    pub capacity: Option<u32>,
}

/// Pattern of a bucket name.
pub const BUCKET_PATTERN: &str = "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";

/// Pattern of a KMS key reference: an alias or a key (or alias) ARN.
pub const KMS_KEY_PATTERN: &str =
    "^(alias/[A-Za-z0-9/_-]{1,250}|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+)$";

/// Where new pipelines are placed when the org has several tooling accounts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgPlacement {
    /// Pipeline name → tooling account: these pipelines go there (checked first).
    #[schemars(extend("propertyNames" = { "pattern": crate::manifest::NAME_PATTERN }))]
    #[schemars(inner(regex(pattern = ACCOUNT_PATTERN)))]
    pub pipelines: BTreeMap<String, String>,
    /// Team → tooling account: the team's new pipelines go there.
    #[schemars(extend("propertyNames" = { "pattern": TEAM_PATTERN }))]
    #[schemars(inner(regex(pattern = ACCOUNT_PATTERN)))]
    pub teams: BTreeMap<String, String>,
}

/// The account quotas pipeforge reads before a deploy can be given a value here when AWS does
/// not report it (see `pipeforge explain` and the README's "Running at scale").
pub const QUOTA_IDS: [&str; 6] = [
    "iam-roles",
    "iam-policies",
    "cloudformation-stacks",
    "codepipeline-pipelines",
    "codebuild-projects",
    "s3-buckets",
];

/// Account quotas.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgCapacity {
    /// A deploy warns when it leaves an account quota this full, in percent.
    #[schemars(range(min = 1, max = 100))]
    pub warn_at_percent: i64,
    /// Quota id → value in every tooling account, for quotas raised where AWS does not report
    /// the value through an API (CodePipeline pipelines, CodeBuild projects); ids:
    /// `iam-roles`, `iam-policies`, `cloudformation-stacks`, `codepipeline-pipelines`,
    /// `codebuild-projects`, `s3-buckets`.
    #[schemars(extend("propertyNames" = { "enum": QUOTA_IDS }))]
    #[schemars(inner(range(min = 1, max = 1000000)))]
    pub quotas: BTreeMap<String, i64>,
}

impl Default for OrgCapacity {
    fn default() -> Self {
        Self {
            warn_at_percent: 80,
            quotas: BTreeMap::new(),
        }
    }
}

/// The KMS-encrypted source bucket.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceBucket {
    /// Bucket name (in the tooling account).
    #[schemars(regex(pattern = BUCKET_PATTERN))]
    pub bucket: String,
    /// KMS key used for uploads: an alias (`alias/...`) or a key ARN.
    #[schemars(regex(pattern = KMS_KEY_PATTERN))]
    pub kms_key: String,
}

/// Naming rules.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Naming {
    /// Prefix of every generated name (`<prefix>-<pipeline>-...`).
    #[schemars(regex(pattern = "^[a-z][a-z0-9-]{0,19}$"))]
    pub prefix: String,
}

/// Where a gate runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The CI stage: gates run in parallel on the source.
    Ci,
    /// The build stage: gates run in order after CI, and produce the deployable artifact.
    Build,
}

impl Stage {
    /// The name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ci => "ci",
            Stage::Build => "build",
        }
    }
}

/// A gate of the organisation.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateDef {
    /// Gate name; languages implement gates by this name, and it names the buildspec.
    #[schemars(regex(pattern = "^[a-z][a-z0-9-]{0,24}$"))]
    pub name: String,
    /// Where the gate runs.
    pub stage: Stage,
    /// A mandatory gate cannot be turned off by a manifest.
    pub mandatory: bool,
    /// What the gate checks (shown by `pipeforge explain`).
    #[serde(default)]
    pub description: String,
    /// A mandatory gate introduced gradually: before this day (`YYYY-MM-DD`, UTC), a manifest
    /// that turns it off, or whose language lacks it, gets a warning (the gate does not run);
    /// from this day on, an error. Only for mandatory gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_PATTERN))]
    pub enforce_from: Option<String>,
}

fn default_gates() -> Vec<GateDef> {
    let g = |name: &str, stage, description: &str| GateDef {
        name: name.to_owned(),
        stage,
        mandatory: true,
        description: description.to_owned(),
        enforce_from: None,
    };
    vec![
        g("lint", Stage::Ci, "style and correctness linting"),
        g(
            "static-analysis",
            Stage::Ci,
            "static application security testing",
        ),
        g(
            "security-scan",
            Stage::Ci,
            "dependency vulnerabilities and leaked secrets",
        ),
        GateDef {
            mandatory: false,
            ..g(
                "iac-scan",
                Stage::Ci,
                "the application's CloudFormation template, linted and policy-checked",
            )
        },
        g(
            "test",
            Stage::Ci,
            "unit tests with JUnit and coverage reports",
        ),
        g(
            "build",
            Stage::Build,
            "semantic version, package, SBOM, publish, tag",
        ),
    ]
}

/// Quality floors.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgQuality {
    /// Lowest coverage a manifest may ask for, in percent.
    #[schemars(range(min = 0, max = 100))]
    pub coverage_floor: i64,
}

impl Default for OrgQuality {
    fn default() -> Self {
        Self { coverage_floor: 80 }
    }
}

/// Environment rules.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgEnvironments {
    /// Environment names that are production: a manual approval always precedes them.
    pub production: Vec<String>,
    /// Regions environments may use; empty allows every region.
    pub allowed_regions: Vec<String>,
}

impl Default for OrgEnvironments {
    fn default() -> Self {
        Self {
            production: vec!["prod".to_owned(), "production".to_owned()],
            allowed_regions: Vec::new(),
        }
    }
}

/// Language rules.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgLanguages {
    /// Languages teams may use; empty allows every language of the catalog.
    pub allowed: Vec<String>,
}

/// Build defaults and limits.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgBuild {
    /// Compute size when the manifest names none.
    pub default_compute: Compute,
    /// Compute sizes a manifest may ask for.
    pub allowed_compute: Vec<Compute>,
    /// Timeout when the manifest names none, in minutes.
    #[schemars(range(min = 5, max = 480))]
    pub default_timeout_minutes: i64,
    /// Longest timeout a manifest may ask for, in minutes.
    #[schemars(range(min = 5, max = 480))]
    pub max_timeout_minutes: i64,
    /// How long CloudWatch Logs keeps build logs, in days (one of the values CloudWatch Logs
    /// accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
    /// 2557, 2922, 3288, 3653).
    pub log_retention_days: i64,
}

/// The retention periods CloudWatch Logs accepts, in days.
pub const LOG_RETENTION_DAYS: [i64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

impl Default for OrgBuild {
    fn default() -> Self {
        Self {
            default_compute: Compute::Small,
            allowed_compute: vec![Compute::Small, Compute::Medium, Compute::Large],
            default_timeout_minutes: 60,
            max_timeout_minutes: 480,
            log_retention_days: 90,
        }
    }
}

/// Pattern of a managed policy reference in `org.yaml`: a policy ARN, or the name (with an
/// optional path) of a customer managed policy that exists in every target account.
pub const POLICY_REF_PATTERN: &str = r"^(arn:aws[a-z-]*:iam::(aws|[0-9]{12}):policy/[A-Za-z0-9+=,.@_/-]{1,512}|[A-Za-z0-9+=,.@_-][A-Za-z0-9+=,.@_/-]{0,511})$";

/// Pattern of a role name pattern (`{prefix}`, `{pipeline}` and `{env}` are replaced).
pub const ROLE_PATTERN_PATTERN: &str = r"^[A-Za-z0-9+=,.@_{}-]{1,128}$";

/// Cross-account deployment settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgDeploy {
    /// Role that pipeforge assumes in each target account to deploy the target stacks.
    #[schemars(regex(pattern = "^[A-Za-z0-9+=,.@_-]{1,64}$"))]
    pub bootstrap_role: String,
    /// Name of the role the pipeline assumes in each environment's account to create and execute
    /// change sets; `{prefix}`, `{pipeline}` and `{env}` are replaced (at most 64 characters
    /// after replacement).
    #[schemars(regex(pattern = ROLE_PATTERN_PATTERN))]
    pub deploy_role: String,
    /// Name of the role CloudFormation uses for the application's stack in each environment;
    /// same placeholders as `deploy_role`.
    #[schemars(regex(pattern = ROLE_PATTERN_PATTERN))]
    pub execution_role: String,
    /// Managed policies attached to each application's CloudFormation execution role: policy
    /// ARNs, or names of customer managed policies that exist in every target account. pipeforge
    /// never grants AdministratorAccess by default; with neither this nor a permissions
    /// boundary, rendering fails.
    #[schemars(inner(regex(pattern = POLICY_REF_PATTERN)))]
    pub execution_policy_arns: Vec<String>,
    /// Permissions boundary of each application's CloudFormation execution role: a policy ARN or
    /// the name of a customer managed policy that exists in every target account.
    #[schemars(regex(pattern = POLICY_REF_PATTERN))]
    pub permissions_boundary: Option<String>,
}

impl Default for OrgDeploy {
    fn default() -> Self {
        Self {
            bootstrap_role: "pipeforge-bootstrap".to_owned(),
            deploy_role: "{prefix}-{pipeline}-{env}-deploy".to_owned(),
            execution_role: "{prefix}-{pipeline}-{env}-exec".to_owned(),
            execution_policy_arns: vec!["pipeforge-app-deploy".to_owned()],
            permissions_boundary: None,
        }
    }
}

/// Tag rules.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgTags {
    /// Tag keys every manifest must set.
    pub required: Vec<String>,
}

/// A pattern that team commands must not contain.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForbiddenCommand {
    /// A regular expression matched against each team command.
    pub pattern: String,
    /// Why it is forbidden (shown in the error).
    pub reason: String,
    /// A name for the rule, so that waivers can name it (`rule: ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RULE_ID_PATTERN))]
    pub id: Option<String>,
    /// A rule introduced gradually: before this day (`YYYY-MM-DD`, UTC), a team command that
    /// matches it gets a warning; from this day on, an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATE_PATTERN))]
    pub enforce_from: Option<String>,
}

/// `re.is_match(text)`, remembered on this thread for the texts it was asked about: a team's
/// commands are matched against the org's forbidden patterns when the model is built and again,
/// verbatim, when the rendered buildspec is checked, and regex-lite's matcher takes ~20,000
/// instructions for each pair. The answer is a pure function of the pattern and the text, so
/// the memory (keyed by both) answers exactly what the matcher would. The key is the pattern's
/// text, which is all a [`crate::pattern::Pattern`] is compiled from. It holds at most
/// [`MATCH_MEMO_BYTES`] of texts (then it starts over), so no input makes it grow beyond that.
pub fn is_match_remembered(re: &crate::pattern::Pattern, text: &str) -> bool {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Memo {
        bytes: usize,
        answers: BTreeMap<String, BTreeMap<String, bool>>,
    }
    thread_local! {
        static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
    }
    let known = MEMO.with(|m| {
        m.borrow()
            .answers
            .get(re.as_str())
            .and_then(|a| a.get(text).copied())
    });
    if let Some(answer) = known {
        return answer;
    }
    let answer = re.is_match(text);
    let size = re.as_str().len() + text.len();
    if size <= MATCH_MEMO_BYTES {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.bytes + size > MATCH_MEMO_BYTES {
                *m = Memo::default();
            }
            m.bytes += size;
            m.answers
                .entry(re.as_str().to_owned())
                .or_default()
                .insert(text.to_owned(), answer);
        });
    }
    answer
}

/// The most text [`is_match_remembered`] keeps per thread.
pub const MATCH_MEMO_BYTES: usize = 64 * 1024;

/// Pattern of a rule id (`commands.forbidden[].id`, `waivers[].rule`).
pub const RULE_ID_PATTERN: &str = "^[a-z][a-z0-9-]{0,40}$";

/// The rule id of the coverage floor (`quality.coverage_floor`), for waivers.
pub const COVERAGE_FLOOR_RULE: &str = "coverage-floor";

/// An exception to a rule for some pipelines: a mandatory gate they may turn off, or a rule they
/// may break, until the waiver expires. Accounts, approvals, ownership and the teams'
/// repositories are never waived.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// The pipelines it covers: a pipeline name, or a glob (`legacy-*`). Give this or
    /// `repository`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9*][a-z0-9*-]{0,39}$"))]
    pub pipeline: Option<String>,
    /// The repositories it covers: a glob over `owner/repository`, compared case-insensitively.
    /// Give this or `pipeline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REPOSITORY_GLOB_PATTERN))]
    pub repository: Option<String>,
    /// The mandatory gate the pipelines may turn off (or lack). Give this or `rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z][a-z0-9-]{0,24}$"))]
    pub gate: Option<String>,
    /// The rule the pipelines may break: `coverage-floor`, or the `id` of a
    /// `commands.forbidden` entry. Give this or `gate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RULE_ID_PATTERN))]
    pub rule: Option<String>,
    /// Why the exception is granted.
    #[schemars(length(min = 1, max = 500))]
    pub reason: String,
    /// Who approved it.
    #[schemars(length(min = 1, max = 200))]
    pub approver: String,
    /// The last day (`YYYY-MM-DD`, UTC) it applies; from the next day on, the pipelines it
    /// covers fail validation if they still break the rule.
    #[schemars(regex(pattern = DATE_PATTERN))]
    pub expires: String,
}

impl Waiver {
    /// `gate `x`` or `rule `y``.
    pub fn subject(&self) -> String {
        match (&self.gate, &self.rule) {
            (Some(g), _) => format!("gate `{g}`"),
            (None, Some(r)) => format!("rule `{r}`"),
            (None, None) => "nothing".to_owned(),
        }
    }

    /// True when the waiver covers pipeline `name` from `repository` (when known).
    pub fn covers(&self, name: &str, repository: Option<&str>) -> bool {
        match (&self.pipeline, &self.repository) {
            (Some(p), _) => glob_match(p, name),
            (None, Some(r)) => repository.is_some_and(|repo| {
                glob_match(&r.to_ascii_lowercase(), &repo.to_ascii_lowercase())
            }),
            (None, None) => false,
        }
    }

    /// The expiry date (checked when the policy is loaded).
    pub fn expiry(&self) -> Option<Date> {
        Date::parse(&self.expires)
    }
}

/// Command rules.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgCommands {
    /// Patterns that would neutralise a gate; team commands containing one are rejected, and
    /// generated buildspecs are checked for them.
    pub forbidden: Vec<ForbiddenCommand>,
}

impl Default for OrgCommands {
    fn default() -> Self {
        let f = |pattern: &str, reason: &str| ForbiddenCommand {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
            id: None,
            enforce_from: None,
        };
        Self {
            forbidden: vec![
                f(
                    r"\|\|\s*(true|:)(\s|;|$)",
                    "`|| true` hides the failure of the command before it",
                ),
                f(
                    r"\|\|\s*exit\s+0",
                    "`|| exit 0` hides the failure of the command before it",
                ),
                f(
                    r"(^|[;&|\s])exit\s+0(\s|;|$)",
                    "`exit 0` ends the phase early and skips the gate commands after it",
                ),
                f(
                    r"set\s+\+e|set\s+\+o\s+errexit",
                    "`set +e` lets failing commands pass",
                ),
                f(
                    r"trap\s+.*\b(ERR|EXIT)\b",
                    "traps on ERR or EXIT can swallow failures",
                ),
            ],
        }
    }
}

/// Where packages are published.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgArtifacts {
    /// The CodeArtifact domain (owned by the tooling account) that holds team repositories.
    #[schemars(regex(pattern = "^[a-z][a-z0-9-]{1,49}$"))]
    pub codeartifact_domain: String,
}

impl Default for OrgArtifacts {
    fn default() -> Self {
        Self {
            codeartifact_domain: "example".to_owned(),
        }
    }
}

/// Where pipelines get tools from.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgTools {
    /// S3 URI of the pipeforge Linux binary that the version gate downloads.
    #[schemars(regex(pattern = "^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$"))]
    pub pipeforge: String,
}

impl Default for OrgTools {
    fn default() -> Self {
        Self {
            pipeforge: "s3://pipeforge-tools/pipeforge/latest/pipeforge-x86_64-linux".to_owned(),
        }
    }
}

/// Notification defaults.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgNotifications {
    /// Events sent when a manifest names none.
    pub default_events: Vec<NotificationEvent>,
}

impl Default for OrgNotifications {
    fn default() -> Self {
        Self {
            default_events: vec![NotificationEvent::Failed, NotificationEvent::ApprovalNeeded],
        }
    }
}

/// Versioning rules.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgVersioning {
    /// Pre-release identifier for builds of other branches (`1.4.0-rc.3`).
    #[schemars(regex(pattern = "^[A-Za-z][0-9A-Za-z-]{0,19}$"))]
    pub prerelease: String,
    /// Branches that produce release versions; others produce pre-releases.
    pub release_branches: Vec<String>,
}

impl Default for OrgVersioning {
    fn default() -> Self {
        Self {
            prerelease: "rc".to_owned(),
            release_branches: vec!["main".to_owned(), "master".to_owned()],
        }
    }
}

/// Which merged pull requests the webhook (`pipeforge serve`, the Lambda functions) turns into
/// deploys, and how repositories are cloned.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgWebhook {
    /// Hosts that clone URLs may point at (`github.com`, `bitbucket.example.com`, or
    /// `host:port` to allow one port only). Compared case-insensitively. Empty allows none.
    pub allowed_hosts: Vec<String>,
    /// Repositories that may deploy, as globs over `owner/repository` (GitHub owner, Bitbucket
    /// Cloud workspace, or Bitbucket Data Center project key), compared case-insensitively;
    /// `*` matches any characters, e.g. `payments/*`. Empty allows none.
    pub allowed_repositories: Vec<String>,
    /// Branches whose merges deploy, besides the repository's default branch as the event names
    /// it (Bitbucket Data Center events do not name it, so list it here). `*` matches any
    /// characters.
    pub branches: Vec<String>,
    /// Which clone URL of the event to use: `https` (a credential helper supplies access) or
    /// `ssh` (a deploy key).
    pub clone_via: CloneVia,
    /// Path of the manifest inside each repository.
    #[schemars(regex(pattern = "^[A-Za-z0-9_.-][A-Za-z0-9_./-]{0,200}$"))]
    pub manifest: String,
    /// Largest checkout (`.git` included) a clone may write, in MiB.
    #[schemars(range(min = 1, max = 10240))]
    pub max_clone_mib: i64,
    /// Longest a clone may take, in seconds.
    #[schemars(range(min = 5, max = 3600))]
    pub clone_timeout_seconds: i64,
    /// Test setups only: clone URLs that are local absolute paths under this prefix are
    /// accepted (and git may use its `file` transport). Leave unset in production.
    #[schemars(regex(pattern = "^/.*$"))]
    pub allow_local_prefix: Option<String>,
    /// Reserved concurrency of the webhook function (`pipeforge bootstrap`).
    #[schemars(range(min = 1, max = 1000))]
    pub webhook_concurrency: i64,
    /// Reserved concurrency of the worker function: at most this many deploys at once.
    #[schemars(range(min = 1, max = 1000))]
    pub worker_concurrency: i64,
    /// Place both functions in a VPC (`pipeforge bootstrap`); unset: Lambda's own network.
    pub vpc: Option<OrgVpc>,
    /// Feedback on open pull requests: one comment kept up to date and a `pipeforge` commit
    /// status. Never deploys.
    pub pull_requests: OrgPullRequests,
}

/// Pull-request feedback: which vendor APIs pipeforge comments through, and with which token.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OrgPullRequests {
    /// Handle pull-request opened and updated events (repositories and target branches as for
    /// merges). Off: those events are answered `ignored`.
    pub enabled: bool,
    /// GitHub (github.com: `https://api.github.com`; Enterprise Server: `https://HOST/api/v3`).
    pub github: Option<OrgVendorApi>,
    /// Bitbucket Data Center (`https://HOST`, the REST API is under `/rest`).
    pub bitbucket_server: Option<OrgVendorApi>,
    /// Bitbucket Cloud (`https://api.bitbucket.org/2.0`).
    pub bitbucket_cloud: Option<OrgVendorApi>,
}

/// One vendor's REST API and the credential pipeforge uses there.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgVendorApi {
    /// Base URL of the REST API: `https://` (plain `http://` only to a loopback address, for
    /// tests).
    #[schemars(regex(pattern = "^https?://[^\\s?#]+$"))]
    pub api_url: String,
    /// The account pipeforge comments as; only a comment with pipeforge's marker **and** this
    /// author is ever updated (anyone can write the marker). GitHub: the login (a GitHub App
    /// comments as `<app-slug>[bot]`); Bitbucket Data Center: the user's name (slug);
    /// Bitbucket Cloud: the account's UUID (`{…}`) or account id, never a nickname (nicknames
    /// are not unique).
    #[schemars(regex(pattern = AUTHOR_PATTERN))]
    pub author: String,
    /// Secrets Manager secret (name in the tooling account and region, or ARN) holding a token
    /// (GitHub: a fine-grained token with pull requests and commit statuses write; Bitbucket: an
    /// HTTP access token with repository write). `pipeforge bootstrap` lets the worker read
    /// this secret and no other.
    #[schemars(regex(pattern = SECRET_REF_PATTERN))]
    pub token_secret: Option<String>,
    /// GitHub only: a GitHub App's id; with `app_key_secret`, pipeforge mints an installation
    /// token for the installation the event names instead of using `token_secret`.
    #[schemars(range(min = 1))]
    pub app_id: Option<i64>,
    /// GitHub only: Secrets Manager secret (name or ARN) holding the GitHub App's private key
    /// (PEM).
    #[schemars(regex(pattern = SECRET_REF_PATTERN))]
    pub app_key_secret: Option<String>,
    /// The customer managed KMS key (ARN) the secrets above are encrypted with; unset when they
    /// use Secrets Manager's own `aws/secretsmanager` key. The worker may decrypt with it only
    /// through Secrets Manager and only for those secrets.
    #[schemars(regex(pattern = KMS_KEY_ARN_PATTERN))]
    pub token_key: Option<String>,
}

impl OrgVendorApi {
    /// The Secrets Manager secrets this API's credential is read from (names or ARNs).
    pub fn secrets(&self) -> Vec<&str> {
        [&self.token_secret, &self.app_key_secret]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

impl OrgPullRequests {
    /// The vendor APIs configured, whether or not previews are enabled.
    pub fn apis(&self) -> Vec<&OrgVendorApi> {
        [&self.github, &self.bitbucket_server, &self.bitbucket_cloud]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Pattern of the comment author of a vendor API (a login, user slug, UUID or account id).
pub const AUTHOR_PATTERN: &str = r"^[A-Za-z0-9{}\[\]@._:-]{1,128}$";

/// Pattern of a Secrets Manager secret reference: a name, or an ARN.
pub const SECRET_REF_PATTERN: &str =
    r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$";

/// Pattern of a KMS key ARN (a key, not an alias).
pub const KMS_KEY_ARN_PATTERN: &str =
    r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]{1,128}$";

/// How the webhook worker clones repositories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CloneVia {
    /// The `https://` clone URL.
    Https,
    /// The SSH clone URL.
    Ssh,
}

impl Default for OrgWebhook {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allowed_repositories: Vec::new(),
            branches: Vec::new(),
            clone_via: CloneVia::Https,
            manifest: "pipeline.yml".to_owned(),
            max_clone_mib: 512,
            clone_timeout_seconds: 120,
            allow_local_prefix: None,
            webhook_concurrency: 20,
            worker_concurrency: 5,
            vpc: None,
            pull_requests: OrgPullRequests::default(),
        }
    }
}

/// Matches `name` against an org policy pattern, where `*` matches any run of characters
/// (release branches, webhook branches and repositories).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A loaded policy, with where each rule is written (to cite it in errors).
#[derive(Clone, Debug)]
pub struct OrgPolicy {
    /// The policy.
    pub org: Org,
    /// The file name as shown in messages.
    pub file: String,
    spans: Spans,
}

/// Where each rule of a policy is written.
#[derive(Clone, Debug)]
enum Spans {
    /// Found while the policy file was read and checked.
    Loaded(SpanIndex),
    /// The embedded policy's, kept as the prebuilt file's text and read the first time a rule
    /// is cited: most runs cite none, and they are nine tenths of that file.
    Prebuilt {
        text: &'static str,
        index: OnceLock<SpanIndex>,
    },
}

impl Spans {
    fn index(&self) -> &SpanIndex {
        match self {
            Spans::Loaded(index) => index,
            Spans::Prebuilt { text, index } => index.get_or_init(|| {
                serde_json::from_str(text)
                    .ok()
                    .or_else(|| load_embedded().ok().map(|p| p.spans.index().clone()))
                    .unwrap_or_default()
            }),
        }
    }
}

impl OrgPolicy {
    /// `org.yaml:12:5` for the rule at `path` (e.g. `gates[0].mandatory`).
    pub fn cite(&self, path: &str) -> String {
        let spans = self.spans.index();
        if spans.contains(path) {
            let s: Span = spans.value(path);
            format!("{}:{}:{} (`{path}`)", self.file, s.start.line, s.start.col)
        } else {
            format!("{} (`{path}`, pipeforge default)", self.file)
        }
    }

    /// True when `env` is a production environment name.
    pub fn is_production(&self, env: &str) -> bool {
        self.org.environments.production.iter().any(|p| p == env)
    }

    /// The account `id` of `accounts`, with its index; `None` when it is not listed (or the
    /// policy lists no accounts).
    pub fn account(&self, id: &str) -> Option<(usize, &Account)> {
        self.org
            .accounts
            .as_deref()?
            .iter()
            .enumerate()
            .find(|(_, a)| a.id == id)
    }

    /// True when `account` is a production account of the policy.
    pub fn is_production_account(&self, account: &str) -> bool {
        self.account(account).is_some_and(|(_, a)| a.production)
    }

    /// The accounts `team` may deploy to (every listed account whose `teams` match it).
    pub fn accounts_for_team(&self, team: &str) -> Vec<&Account> {
        self.org
            .accounts
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|a| a.open_to(team))
            .collect()
    }

    /// Checks that `repository` (`owner/name`) may deploy pipelines of `team`: the team must
    /// list it in `teams.<team>.repositories`. Policies without `teams` allow every repository.
    pub fn check_repository(&self, team: &str, repository: &str) -> Result<()> {
        let Some(teams) = &self.org.teams else {
            return Ok(());
        };
        let Some(def) = teams.get(team) else {
            return Err(Error::Refused {
                message: format!(
                    "team `{team}` is not one of the organisation's `teams`, so no repository may deploy its pipelines"
                ),
                help: format!(
                    "a platform engineer adds it to the org policy, e.g. `{team}: {{repositories: [\"{}\"]}}` under `teams` ({})",
                    repository_owner_glob(repository),
                    self.cite("teams")
                ),
            });
        };
        let lower = repository.to_ascii_lowercase();
        if def
            .repositories
            .iter()
            .any(|g| glob_match(&g.to_ascii_lowercase(), &lower))
        {
            return Ok(());
        }
        Err(Error::Refused {
            message: format!("repository `{repository}` may not deploy pipelines of team `{team}`"),
            help: format!(
                "team `{team}` deploys from {} (org rule {}); deploy from one of them, or a platform engineer adds this repository to `teams.{team}.repositories`",
                if def.repositories.is_empty() {
                    "no repository".to_owned()
                } else {
                    def.repositories
                        .iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                self.cite(&format!("teams.{team}.repositories"))
            ),
        })
    }

    /// What this policy leaves open because it predates `accounts` and `teams`: one warning
    /// (message, help) per missing section. Empty for a policy that has both.
    pub fn warnings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.org.accounts.is_none() {
            out.push((
                format!(
                    "the org policy {} lists no `accounts`: manifests may deploy to any account id, any team may use any account, and only environment names (`environments.production`) decide which deploys wait for an approval",
                    self.file
                ),
                "list every account pipelines may deploy to under `accounts` (`id`, `name`, `production`, `teams`), as examples/org.yaml does".to_owned(),
            ));
        }
        if self.org.teams.is_none() {
            out.push((
                format!(
                    "the org policy {} lists no `teams`: a pipeline of any team may be deployed from any repository",
                    self.file
                ),
                "list each team with the repositories its pipelines may come from under `teams` (e.g. `payments: {repositories: [\"payments/*\"]}`), as examples/org.yaml does".to_owned(),
            ));
        }
        out
    }

    /// The home tooling account (`tooling` and `source`), as a [`ToolingAccount`].
    pub fn home(&self) -> ToolingAccount {
        ToolingAccount {
            account: self.org.tooling.account.clone(),
            region: self.org.tooling.region.clone(),
            bucket: self.org.source.bucket.clone(),
            kms_key: self.org.source.kms_key.clone(),
            capacity: self.org.tooling.capacity,
        }
    }

    /// Every tooling account, the home one first, then `tooling_accounts` in order.
    pub fn tooling_accounts(&self) -> Vec<ToolingAccount> {
        let mut out = vec![self.home()];
        out.extend(self.org.tooling_accounts.iter().cloned());
        out
    }

    /// The tooling account `id`, if the policy lists it (the home one included).
    pub fn tooling_account(&self, id: &str) -> Option<ToolingAccount> {
        self.tooling_accounts()
            .into_iter()
            .find(|t| t.account == id)
    }

    /// The index of a gate definition by name.
    pub fn gate_index(&self, name: &str) -> Option<usize> {
        self.org.gates.iter().position(|g| g.name == name)
    }

    /// The waivers of `subject` (`Waiver::subject`) that cover pipeline `name` (from
    /// `repository`, when known), with their index in `waivers`.
    pub fn waivers_for(
        &self,
        subject: &str,
        name: &str,
        repository: Option<&str>,
    ) -> Vec<(usize, &Waiver)> {
        self.org
            .waivers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.subject() == subject && w.covers(name, repository))
            .collect()
    }
}

/// The org policy's JSON Schema.
pub fn json_schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::to_value(schemars::schema_for!(Org)).unwrap_or(Json::Null))
}

/// Reads and checks a policy file.
pub fn load(file: &SourceFile) -> Result<OrgPolicy> {
    let loaded = load_document::<Org>(file, json_schema());
    let spans = Spans::Loaded(loaded.checked.spans.clone());
    let org = loaded.into_clean()?;
    let policy = OrgPolicy {
        org,
        file: file.name.clone(),
        spans,
    };
    let problems = check(&policy, file);
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(Error::from(problems))
    }
}

/// The embedded default policy: from its prebuilt form (checked when it was made) unless
/// `examples/org.yaml` changed since.
pub fn embedded() -> Result<OrgPolicy> {
    match from_prebuilt() {
        Some(policy) => Ok(policy),
        None => load_embedded(),
    }
}

/// The embedded default policy, read and checked from its YAML source.
fn load_embedded() -> Result<OrgPolicy> {
    let text = assets::get("examples/org.yaml").ok_or_else(|| {
        Error::other(
            "the embedded org policy is missing",
            "this is a pipeforge build problem; rebuild it",
        )
    })?;
    load(&SourceFile::new(DEFAULT_ORG_NAME, text))
}

/// The embedded policy as `assets/prebuilt/org.json` holds it: loaded and checked, with where
/// each rule is written, and the digest of the files it came from (read by
/// [`parse_prebuilt`]).
#[derive(Serialize)]
struct Prebuilt<'a> {
    digest: &'a str,
    org: Org,
    spans: &'a SpanIndex,
}

/// The embedded policy from its prebuilt form, when that was made from these very files.
fn from_prebuilt() -> Option<OrgPolicy> {
    parse_prebuilt(assets::PREBUILT_ORG?, assets::INPUTS_DIGEST)
}

/// A prebuilt policy `text`, if it is in the layout its writer gives (`crate::members`),
/// deserializes and was made from sources of `digest`. Its spans are not read here.
fn parse_prebuilt(text: &'static str, digest: &str) -> Option<OrgPolicy> {
    let top = crate::members::document(text)?;
    if serde_json::from_str::<&str>(top.get("digest")?).ok()? != digest {
        return None;
    }
    Some(OrgPolicy {
        org: serde_json::from_str(top.get("org")?).ok()?,
        file: DEFAULT_ORG_NAME.to_owned(),
        spans: Spans::Prebuilt {
            text: top.get("spans")?,
            index: OnceLock::new(),
        },
    })
}

/// The text of `assets/prebuilt/org.json`: the embedded policy loaded and checked as [`load`]
/// does (an error if it fails).
pub fn prebuilt_json() -> Result<String> {
    let policy = load_embedded()?;
    let p = Prebuilt {
        digest: assets::INPUTS_DIGEST,
        org: policy.org,
        spans: policy.spans.index(),
    };
    let mut text = serde_json::to_string_pretty(&p).map_err(|e| {
        Error::other(
            format!("cannot serialize the org policy: {e}"),
            "this is a pipeforge bug; please report it",
        )
    })?;
    text.push('\n');
    Ok(text)
}

fn check(p: &OrgPolicy, file: &SourceFile) -> Vec<Diagnostic> {
    let spans = p.spans.index();
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, g) in p.org.gates.iter().enumerate() {
        let path = format!("gates[{i}].name");
        if let Some(first) = seen.insert(&g.name, i) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("gate `{}` is defined twice", g.name),
                format!("remove one of `gates[{first}]` and `gates[{i}]`"),
            ));
        }
    }
    let mut regexes = Vec::new();
    for (i, f) in p.org.commands.forbidden.iter().enumerate() {
        let path = format!("commands.forbidden[{i}].pattern");
        if let Err(e) = crate::pattern::cached(&f.pattern) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("invalid regular expression: {e}"),
                "fix the pattern; it is matched against every team command",
            ));
        } else {
            regexes.push(&f.pattern);
        }
    }
    if p.org.build.default_timeout_minutes > p.org.build.max_timeout_minutes {
        let path = "build.default_timeout_minutes";
        out.push(file.diag(
            spans.value(path),
            Some(path),
            "the default timeout is longer than the maximum".to_owned(),
            "make `build.default_timeout_minutes` at most `build.max_timeout_minutes`",
        ));
    }
    if !p
        .org
        .build
        .allowed_compute
        .contains(&p.org.build.default_compute)
    {
        let path = "build.default_compute";
        out.push(file.diag(
            spans.value(path),
            Some(path),
            "the default compute size is not in `build.allowed_compute`".to_owned(),
            "add it to `build.allowed_compute` or choose an allowed size",
        ));
    }
    if !LOG_RETENTION_DAYS.contains(&p.org.build.log_retention_days) {
        let path = "build.log_retention_days";
        out.push(file.diag(
            spans.value(path),
            Some(path),
            format!(
                "CloudWatch Logs cannot keep logs for {} days",
                p.org.build.log_retention_days
            ),
            format!(
                "use one of {}",
                LOG_RETENTION_DAYS.map(|d| d.to_string()).join(", ")
            ),
        ));
    }
    for key in ["deploy_role", "execution_role"] {
        let pattern = if key == "deploy_role" {
            &p.org.deploy.deploy_role
        } else {
            &p.org.deploy.execution_role
        };
        let path = format!("deploy.{key}");
        let rest = ["{prefix}", "{pipeline}", "{env}"]
            .iter()
            .fold(pattern.clone(), |acc, ph| acc.replace(ph, ""));
        if !pattern.contains("{pipeline}") || !pattern.contains("{env}") {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("role name pattern `{pattern}` does not contain both `{{pipeline}}` and `{{env}}`"),
                "role names must be unique per pipeline and environment, e.g. `{prefix}-{pipeline}-{env}-deploy`",
            ));
        } else if rest.contains(['{', '}']) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("role name pattern `{pattern}` has an unknown placeholder"),
                "the placeholders are `{prefix}`, `{pipeline}` and `{env}`",
            ));
        }
    }
    out.extend(check_accounts(p, file));
    out.extend(check_dated(p, file));
    out.extend(check_waivers(p, file));
    out.extend(check_tooling_accounts(p, file));
    let w = &p.org.webhook;
    if w.manifest
        .split('/')
        .any(|c| c == ".." || c == "." || c.is_empty())
    {
        let path = "webhook.manifest";
        out.push(file.diag(
            spans.value(path),
            Some(path),
            format!("`{}` is not a plain relative path", w.manifest),
            "name the manifest relative to the repository root, e.g. `pipeline.yml` or `ci/pipeline.yml`",
        ));
    }
    if let Some(prefix) = &w.allow_local_prefix
        && (prefix.split('/').any(|c| c == ".." || c == ".") || prefix == "/")
    {
        let path = "webhook.allow_local_prefix";
        out.push(file.diag(
            spans.value(path),
            Some(path),
            format!("`{prefix}` is not a normalised directory below `/`"),
            "give an absolute directory without `.` or `..`, used only by tests; or remove the key",
        ));
    }
    for (i, h) in w.allowed_hosts.iter().enumerate() {
        let (host, port) = h.split_once(':').unwrap_or((h.as_str(), ""));
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        let port_ok = port.is_empty() || port.parse::<u16>().is_ok();
        if !host_ok || !port_ok {
            let path = format!("webhook.allowed_hosts[{i}]");
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("`{h}` is not a host name"),
                "write a host such as `github.com` or `bitbucket.example.com:7999`, without a scheme or path",
            ));
        }
    }
    out
}

/// `enforce_from` dates: real days, on mandatory gates only; forbidden-command ids unique.
fn check_dated(p: &OrgPolicy, file: &SourceFile) -> Vec<Diagnostic> {
    let spans = p.spans.index();
    let mut out = Vec::new();
    let mut bad_date = |path: String, text: &str| {
        if Date::parse(text).is_none() {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("`{text}` is not a day of the calendar"),
                "write the date as YYYY-MM-DD, e.g. `2026-09-01`",
            ));
        }
    };
    for (i, g) in p.org.gates.iter().enumerate() {
        if let Some(d) = &g.enforce_from {
            bad_date(format!("gates[{i}].enforce_from"), d);
        }
    }
    for (i, f) in p.org.commands.forbidden.iter().enumerate() {
        if let Some(d) = &f.enforce_from {
            bad_date(format!("commands.forbidden[{i}].enforce_from"), d);
        }
    }
    for (i, w) in p.org.waivers.iter().enumerate() {
        bad_date(format!("waivers[{i}].expires"), &w.expires);
    }
    for (i, g) in p.org.gates.iter().enumerate() {
        if g.enforce_from.is_some() && !g.mandatory {
            let path = format!("gates[{i}].enforce_from");
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("gate `{}` is optional, so there is nothing to enforce from a date", g.name),
                "set `mandatory: true` to introduce the gate as mandatory from that day, or remove `enforce_from`",
            ));
        }
    }
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, f) in p.org.commands.forbidden.iter().enumerate() {
        let Some(id) = &f.id else { continue };
        let path = format!("commands.forbidden[{i}].id");
        if id == COVERAGE_FLOOR_RULE {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("the rule id `{id}` is reserved for `quality.coverage_floor`"),
                "choose another id",
            ));
        } else if let Some(first) = ids.insert(id, i) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("rule id `{id}` is used twice"),
                format!(
                    "give `commands.forbidden[{first}]` and `commands.forbidden[{i}]` different ids"
                ),
            ));
        }
    }
    out
}

/// `waivers`: each covers pipelines or repositories and names a mandatory gate or a known rule.
fn check_waivers(p: &OrgPolicy, file: &SourceFile) -> Vec<Diagnostic> {
    let spans = p.spans.index();
    let mut out = Vec::new();
    let mut push = |path: String, message: String, help: String| {
        out.push(file.diag(spans.value(&path), Some(&path), message, help));
    };
    for (i, w) in p.org.waivers.iter().enumerate() {
        if w.pipeline.is_some() == w.repository.is_some() {
            push(
                format!("waivers[{i}]"),
                "a waiver covers either `pipeline` or `repository`".to_owned(),
                "give exactly one: a pipeline name (or glob) or a repository glob".to_owned(),
            );
        }
        match (&w.gate, &w.rule) {
            (Some(g), None) => match p.org.gates.iter().find(|d| &d.name == g) {
                None => push(
                    format!("waivers[{i}].gate"),
                    format!("the org has no gate `{g}`"),
                    format!(
                        "name one of the mandatory gates: {}",
                        backticks(
                            &p.org.gates.iter().filter(|d| d.mandatory).map(|d| d.name.as_str()).collect::<Vec<_>>()
                        )
                    ),
                ),
                Some(d) if !d.mandatory => push(
                    format!("waivers[{i}].gate"),
                    format!("gate `{g}` is optional: pipelines may turn it off without a waiver"),
                    "remove the waiver".to_owned(),
                ),
                Some(_) => {}
            },
            (None, Some(r)) => {
                let known = r == COVERAGE_FLOOR_RULE
                    || p.org.commands.forbidden.iter().any(|f| f.id.as_deref() == Some(r.as_str()));
                if !known {
                    let mut rules = vec![COVERAGE_FLOOR_RULE.to_owned()];
                    rules.extend(p.org.commands.forbidden.iter().filter_map(|f| f.id.clone()));
                    push(
                        format!("waivers[{i}].rule"),
                        format!("there is no rule `{r}` to waive"),
                        format!(
                            "name {} (give a `commands.forbidden` entry an `id` to waive it); accounts, approvals, ownership and team repositories cannot be waived",
                            backticks(&rules)
                        ),
                    );
                }
            }
            _ => push(
                format!("waivers[{i}]"),
                "a waiver names either a `gate` or a `rule`".to_owned(),
                "give exactly one: the mandatory gate the pipelines may turn off, or the rule they may break".to_owned(),
            ),
        }
    }
    out
}

/// `tooling_accounts`: each account and bucket once (the home one included); placement rules
/// name listed tooling accounts.
fn check_tooling_accounts(p: &OrgPolicy, file: &SourceFile) -> Vec<Diagnostic> {
    let spans = p.spans.index();
    let mut out = Vec::new();
    let o = &p.org;
    let mut accounts: BTreeMap<&str, String> = BTreeMap::new();
    let mut buckets: BTreeMap<&str, String> = BTreeMap::new();
    accounts.insert(&o.tooling.account, "tooling.account".to_owned());
    buckets.insert(&o.source.bucket, "source.bucket".to_owned());
    for (i, t) in o.tooling_accounts.iter().enumerate() {
        let path = format!("tooling_accounts[{i}].account");
        if let Some(first) = accounts.insert(&t.account, path.clone()) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("tooling account `{}` is listed twice", t.account),
                format!("keep one of `{first}` and `{path}`"),
            ));
        }
        let path = format!("tooling_accounts[{i}].bucket");
        if let Some(first) = buckets.insert(&t.bucket, path.clone()) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("source bucket `{}` is used twice", t.bucket),
                format!("give each tooling account its own bucket (`{first}` names it too); bucket names are global"),
            ));
        }
    }
    let known = |a: &str| accounts.contains_key(a);
    for (kind, map) in [
        ("pipelines", &o.placement.pipelines),
        ("teams", &o.placement.teams),
    ] {
        for (key, account) in map {
            if !known(account) {
                let path = format!("placement.{kind}.{key}");
                out.push(file.diag(
                    spans.value(&path),
                    Some(&path),
                    format!("`{account}` is not one of the tooling accounts"),
                    format!(
                        "name `tooling.account` or one of `tooling_accounts`: {}",
                        accounts.keys().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    out
}

/// `accounts`: each id once; a team an account names (not a glob) must be one of `teams`.
fn check_accounts(p: &OrgPolicy, file: &SourceFile) -> Vec<Diagnostic> {
    let spans = p.spans.index();
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, a) in p
        .org
        .accounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = format!("accounts[{i}].id");
        if let Some(first) = seen.insert(&a.id, i) {
            out.push(file.diag(
                spans.value(&path),
                Some(&path),
                format!("account `{}` is listed twice", a.id),
                format!("keep one of `accounts[{first}]` and `accounts[{i}]`"),
            ));
        }
        let Some(teams) = &p.org.teams else {
            continue;
        };
        for (j, t) in a.teams.iter().enumerate() {
            if !t.contains('*') && !teams.contains_key(t) {
                let path = format!("accounts[{i}].teams[{j}]");
                out.push(file.diag(
                    spans.value(&path),
                    Some(&path),
                    format!(
                        "account `{}` is open to team `{t}`, which `teams` does not list",
                        a.id
                    ),
                    "fix the team's name, or add the team under `teams` with its repositories",
                ));
            }
        }
    }
    out
}

/// `` `a`, `b` `` (the org policy's own copy: `org` comes before `model`).
fn backticks<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob_match("payments/*", "payments/orders-api"));
        assert!(glob_match("*", "anything/at-all"));
        assert!(glob_match("release/*-lts", "release/2-lts"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("payments/*", "paymentsx/orders"));
        assert!(!glob_match("main", "main2"));
        assert!(!glob_match("a*b*c", "acb"));
    }

    #[test]
    fn a_star_matches_the_empty_run_and_every_part_is_used_once() {
        assert!(glob_match("main", "main"));
        assert!(glob_match("release/*", "release/"));
        assert!(glob_match("payments/*", "payments/orders-api"));
        // The prefix and the suffix may not share characters of the name.
        assert!(!glob_match("a*a", "a"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("ab*ba", "abba"));
        // Each middle part is found after the one before it.
        assert!(!glob_match("release/*.*.*", "release/1.2"));
        assert!(glob_match("release/*.*.*", "release/1.2.3"));
        assert!(!glob_match("*-api-*-api", "x-api-api"));
        // The suffix must match even when the prefix does and the name is long enough.
        assert!(!glob_match("payments/*-api", "payments/orders-app"));
        assert!(glob_match("payments/*-api", "payments/orders-api"));
    }

    use super::*;

    /// The remembered answer is the matcher's, for the same text asked again, for another
    /// pattern on the same text, and after the memory filled up and started over.
    #[test]
    fn remembered_matches_are_the_matchers_answers() {
        let exit = crate::pattern::Pattern::new(r"(^|[;&|\s])exit\s+0(\s|;|$)").expect("a pattern");
        let trap = crate::pattern::Pattern::new(r"trap\s+.*\b(ERR|EXIT)\b").expect("a pattern");
        let texts = ["make build", "true; exit 0", "trap 'x' ERR", "exit 0"];
        for _ in 0..2 {
            for t in texts {
                assert_eq!(is_match_remembered(&exit, t), exit.is_match(t), "{t}");
                assert_eq!(is_match_remembered(&trap, t), trap.is_match(t), "{t}");
            }
        }
        // Texts that fill the memory several times over, then the first ones again.
        let long = "x".repeat(MATCH_MEMO_BYTES / 3);
        for i in 0..10 {
            let t = format!("{long} {i}; exit 0");
            assert!(is_match_remembered(&exit, &t));
            assert!(!is_match_remembered(&trap, &t));
        }
        assert!(!is_match_remembered(
            &exit,
            &"y".repeat(MATCH_MEMO_BYTES + 1)
        ));
        assert!(is_match_remembered(&exit, "true; exit 0"));
        assert!(!is_match_remembered(&exit, "make build"));
        // A forbidden pattern anchored at both ends is matched without regex-lite, and
        // answers as regex-lite does.
        let whole = crate::pattern::Pattern::new("^rm -rf /[a-z]*$").expect("a pattern");
        let re = regex_lite::Regex::new(whole.as_str()).expect("regex");
        assert!(whole.is_simple());
        for t in [
            "rm -rf /",
            "rm -rf /tmp",
            "rm -rf /tmp ",
            "sudo rm -rf /",
            "rm -rf",
        ] {
            for _ in 0..2 {
                assert_eq!(is_match_remembered(&whole, t), re.is_match(t), "{t}");
            }
        }
        assert!(is_match_remembered(&whole, "rm -rf /tmp"));
    }

    /// The prebuilt policy is current and is exactly the policy the YAML file loads into,
    /// with every rule at the same place.
    #[test]
    fn prebuilt_policy_is_the_yaml_policy() {
        let prebuilt = from_prebuilt().expect(
            "assets/prebuilt/org.json is stale: run `UPDATE_GOLDEN=1 cargo test --test golden`",
        );
        let loaded = load_embedded().expect("embedded policy");
        assert_eq!(prebuilt.org, loaded.org);
        assert_eq!(prebuilt.spans.index(), loaded.spans.index());
        assert_eq!(prebuilt.file, loaded.file);
        assert_eq!(
            prebuilt.cite("environments.production"),
            loaded.cite("environments.production")
        );
    }

    /// A prebuilt policy made from other sources, or that no longer deserializes, is not used
    /// (the YAML is loaded and checked instead).
    #[test]
    fn a_stale_or_broken_prebuilt_policy_is_not_used() {
        let text = assets::PREBUILT_ORG.expect("committed");
        assert!(parse_prebuilt(text, assets::INPUTS_DIGEST).is_some());
        assert!(parse_prebuilt(text, "fnv1a64:0000000000000000").is_none());
        let broken = text.replacen("\"spans\"", "\"places\"", 1);
        assert!(parse_prebuilt(leak(broken), assets::INPUTS_DIGEST).is_none());
        let compact = serde_json::from_str::<Json>(text)
            .expect("json")
            .to_string();
        assert!(parse_prebuilt(leak(compact), assets::INPUTS_DIGEST).is_none());
    }

    fn leak(text: String) -> &'static str {
        Box::leak(text.into_boxed_str())
    }

    /// The prebuilt spans are read when a rule is first cited, not before; spans that no
    /// longer read as spans are taken from the YAML, so a citation is never lost.
    #[test]
    fn prebuilt_spans_are_read_when_a_rule_is_cited() {
        let loaded = load_embedded().expect("embedded policy");
        let want = loaded.cite("environments.production");
        assert!(want.contains("org.yaml>:"), "{want}");
        let text = assets::PREBUILT_ORG.expect("committed");
        let p = parse_prebuilt(text, assets::INPUTS_DIGEST).expect("current");
        let Spans::Prebuilt { index, .. } = &p.spans else {
            panic!("the prebuilt policy keeps its spans as text");
        };
        assert!(index.get().is_none());
        assert_eq!(p.cite("environments.production"), want);
        assert_eq!(index.get(), Some(loaded.spans.index()));

        let at = text.find("\"spans\"").expect("spans");
        let broken = format!("{}\"spans\": [1, 2]\n}}\n", &text[..at]);
        let p = parse_prebuilt(leak(broken), assets::INPUTS_DIGEST).expect("reads");
        assert_eq!(p.cite("environments.production"), want);
    }

    fn with(edit: impl FnOnce(&str) -> String) -> Result<OrgPolicy> {
        let text = assets::get("examples/org.yaml").expect("embedded");
        load(&SourceFile::new("org.yaml", edit(text)))
    }

    #[test]
    fn the_example_documents_every_stack_setting() {
        let p = embedded().expect("embedded policy");
        assert_eq!(p.org.build.log_retention_days, 90);
        assert_eq!(p.org.deploy.deploy_role, "{prefix}-{pipeline}-{env}-deploy");
        assert_eq!(p.org.deploy.execution_policy_arns, ["pipeforge-app-deploy"]);
        assert_eq!(
            p.org.deploy.permissions_boundary.as_deref(),
            Some("pipeforge-app-boundary")
        );
    }

    #[test]
    fn a_team_deploys_only_from_its_repositories() {
        let p = embedded().expect("embedded policy");
        p.check_repository("payments", "payments/orders-api")
            .expect("the team's repository");
        p.check_repository("payments", "Payments/Orders-API")
            .expect("compared case-insensitively");
        let e = p
            .check_repository("payments", "intruders/orders-api")
            .expect_err("another owner");
        assert!(matches!(e, Error::Refused { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(
                "repository `intruders/orders-api` may not deploy pipelines of team `payments`"
            ),
            "{text}"
        );
        assert!(text.contains("`payments/*`"), "{text}");
        assert!(text.contains("(`teams.payments.repositories`)"), "{text}");
        let e = p
            .check_repository("billing", "billing/ledger")
            .expect_err("a team the policy does not list");
        assert!(
            e.to_string()
                .contains("team `billing` is not one of the organisation's `teams`"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("billing: {repositories: [\"billing/*\"]}"),
            "{e}"
        );
    }

    #[test]
    fn accounts_are_listed_once_and_name_known_teams() {
        let e = with(|t| {
            t.replace(
                "  - {id: \"222222222222\", name: shared-test,",
                "  - {id: \"111111111111\", name: shared-test,",
            )
        })
        .expect_err("twice");
        assert!(
            e.to_string()
                .contains("account `111111111111` is listed twice"),
            "{e}"
        );
        let e = with(|t| t.replace("teams: [payments]}", "teams: [paymnts]}"))
            .expect_err("unknown team");
        assert!(
            e.to_string()
                .contains("is open to team `paymnts`, which `teams` does not list"),
            "{e}"
        );
        let e = with(|t| t.replace("repositories: [\"payments/*\"]", "repositories: [\"*\"]"))
            .expect_err("not owner/name");
        assert!(
            e.to_string().contains("teams.payments.repositories[0]"),
            "{e}"
        );
    }

    #[test]
    fn log_retention_must_be_a_cloudwatch_value() {
        let e = with(|t| t.replace("log_retention_days: 90", "log_retention_days: 100"))
            .expect_err("invalid retention");
        let text = e.to_string();
        assert!(text.contains("cannot keep logs for 100 days"), "{text}");
        assert!(text.contains("org.yaml:"), "{text}");
    }

    #[test]
    fn role_patterns_name_pipeline_and_environment() {
        let e = with(|t| {
            t.replace(
                "deploy_role: \"{prefix}-{pipeline}-{env}-deploy\"",
                "deploy_role: \"{prefix}-{pipeline}-deploy\"",
            )
        })
        .expect_err("no env");
        assert!(e.to_string().contains("does not contain both"), "{e}");
        let e = with(|t| {
            t.replace(
                "execution_role: \"{prefix}-{pipeline}-{env}-exec\"",
                "execution_role: \"{team}-{pipeline}-{env}-exec\"",
            )
        })
        .expect_err("unknown placeholder");
        assert!(e.to_string().contains("unknown placeholder"), "{e}");
    }

    #[test]
    fn execution_policies_are_arns_or_names() {
        assert!(
            with(|t| {
                t.replace(
            "execution_policy_arns: [pipeforge-app-deploy]",
            "execution_policy_arns: [\"arn:aws:iam::aws:policy/PowerUserAccess\", \"path/name\"]"
        )
            })
            .is_ok()
        );
        let e = with(|t| {
            t.replace(
                "execution_policy_arns: [pipeforge-app-deploy]",
                "execution_policy_arns: [\"not a policy\"]",
            )
        })
        .expect_err("invalid");
        assert!(e.to_string().contains("execution_policy_arns"), "{e}");
    }

    /// The policy with `extra` (YAML keys) appended.
    fn plus(extra: &str) -> Result<OrgPolicy> {
        with(|t| format!("{t}{extra}"))
    }

    /// `edit` must make the example refused with `message`, or accepted when it is `None`.
    fn expect(what: &str, r: Result<OrgPolicy>, message: Option<&str>) {
        match (r, message) {
            (Ok(_), None) => {}
            (Ok(_), Some(m)) => panic!("{what}: accepted, expected `{m}`"),
            (Err(e), None) => panic!("{what}: refused: {e}"),
            (Err(e), Some(m)) => assert!(e.to_string().contains(m), "{what}: {e}"),
        }
    }

    #[test]
    fn build_defaults_stay_within_the_allowed_values() {
        let timeout = |d: u32, m: u32| {
            with(|t| {
                t.replace(
                    "default_timeout_minutes: 60\n  max_timeout_minutes: 480",
                    &format!("default_timeout_minutes: {d}\n  max_timeout_minutes: {m}"),
                )
            })
        };
        let longer = Some("the default timeout is longer than the maximum");
        expect("default above max", timeout(61, 60), longer);
        expect("default equal to max", timeout(60, 60), None);
        expect("default below max", timeout(59, 60), None);
        expect(
            "default compute not allowed",
            with(|t| {
                t.replace("default_compute: small", "default_compute: large")
                    .replace("[small, medium, large]", "[small, medium]")
            }),
            Some("the default compute size is not in `build.allowed_compute`"),
        );
    }

    #[test]
    fn each_role_pattern_is_reported_under_its_own_key() {
        let e = with(|t| {
            t.replace(
                "deploy_role: \"{prefix}-{pipeline}-{env}-deploy\"",
                "deploy_role: \"{prefix}-{pipeline}-deploy\"",
            )
        })
        .expect_err("no env");
        let text = e.to_string();
        assert!(text.contains("`deploy.deploy_role`"), "{text}");
        assert!(!text.contains("deploy.execution_role"), "{text}");
        assert!(text.contains("`{prefix}-{pipeline}-deploy`"), "{text}");
        let e = with(|t| {
            t.replace(
                "execution_role: \"{prefix}-{pipeline}-{env}-exec\"",
                "execution_role: \"{prefix}-{env}-exec\"",
            )
        })
        .expect_err("no pipeline");
        let text = e.to_string();
        assert!(text.contains("`deploy.execution_role`"), "{text}");
        assert!(!text.contains("deploy.deploy_role"), "{text}");
    }

    #[test]
    fn the_webhook_manifest_path_stays_inside_the_repository() {
        let manifest =
            |m: &str| with(|t| t.replace("manifest: pipeline.yml", &format!("manifest: {m}")));
        let refused = Some("is not a plain relative path");
        for m in [
            "../pipeline.yml",
            "ci/../../pipeline.yml",
            "./pipeline.yml",
            "ci//pipeline.yml",
            "ci/",
        ] {
            expect(m, manifest(m), refused);
        }
        for m in ["ci/pipeline.yml", "..pipeline.yml", ".ci/pipeline.yml"] {
            expect(m, manifest(m), None);
        }
    }

    #[test]
    fn the_local_clone_prefix_is_a_normalised_directory() {
        let prefix = |p: &str| {
            with(|t| {
                t.replace(
                    "  # allow_local_prefix: /tmp/pipeforge-tests",
                    &format!("  allow_local_prefix: \"{p}\""),
                )
            })
        };
        let refused = Some("is not a normalised directory below `/`");
        for p in ["/", "/tmp/..", "/tmp/../etc", "/tmp/.", "/./tmp"] {
            expect(p, prefix(p), refused);
        }
        for p in ["/tmp/pipeforge-tests", "/tmp/..x", "/tmp/.cache"] {
            expect(p, prefix(p), None);
        }
    }

    #[test]
    fn allowed_hosts_are_host_names_with_an_optional_port() {
        let hosts = |h: &str| {
            with(|t| {
                t.replace(
                    "allowed_hosts: [github.com, bitbucket.org, bitbucket.example.com]",
                    &format!("allowed_hosts: [\"{h}\"]"),
                )
            })
        };
        let refused = Some("is not a host name");
        for h in [
            ":7999",
            "git_hub.com",
            "github.com/org",
            "https://github.com",
            "git hub.com",
            "github.com:99999",
            "github.com:ssh",
        ] {
            expect(h, hosts(h), refused);
        }
        for h in [
            "git-hub.example.com",
            "bitbucket.example.com:7999",
            "GitHub.com",
        ] {
            expect(h, hosts(h), None);
        }
    }

    #[test]
    fn enforcement_dates_apply_to_mandatory_gates_and_rule_ids_are_unique() {
        let gate = |name: &str, date: &str| {
            with(|t| {
                t.replace(
                    &format!("  - name: {name}\n"),
                    &format!("  - name: {name}\n    enforce_from: \"{date}\"\n"),
                )
            })
        };
        expect(
            "a mandatory gate from a day",
            gate("lint", "2026-09-01"),
            None,
        );
        expect(
            "an optional gate from a day",
            gate("iac-scan", "2026-09-01"),
            Some("gate `iac-scan` is optional, so there is nothing to enforce from a date"),
        );
        expect(
            "not a day",
            gate("lint", "2026-02-30"),
            Some("`2026-02-30` is not a day of the calendar"),
        );
        let ids = |a: &str, b: &str| {
            with(|t| {
                t.replacen(
                    "    - pattern: ",
                    &format!("    - id: {a}\n      pattern: "),
                    1,
                )
                .replacen(
                    "    - pattern: '\\|\\|\\s*exit",
                    &format!("    - id: {b}\n      pattern: '\\|\\|\\s*exit"),
                    1,
                )
            })
        };
        expect("two ids", ids("no-true", "no-exit"), None);
        expect(
            "an id twice",
            ids("no-true", "no-true"),
            Some("rule id `no-true` is used twice"),
        );
        expect(
            "the floor's id",
            ids("coverage-floor", "no-exit"),
            Some("the rule id `coverage-floor` is reserved for `quality.coverage_floor`"),
        );
    }

    #[test]
    fn waivers_name_one_subject_and_something_that_can_be_waived() {
        let waiver = |fields: &str| {
            plus(&format!(
                "waivers:\n  - {{{fields}, reason: r, approver: a, expires: \"2026-12-31\"}}\n"
            ))
        };
        let with_id = |fields: &str| {
            with(|t| {
                format!(
                    "{}waivers:\n  - {{{fields}, reason: r, approver: a, expires: \"2026-12-31\"}}\n",
                    t.replacen("    - pattern: ", "    - id: no-true\n      pattern: ", 1)
                )
            })
        };
        expect("a mandatory gate", waiver("pipeline: x, gate: lint"), None);
        expect(
            "a repository",
            waiver("repository: \"payments/*\", gate: test"),
            None,
        );
        expect(
            "the floor",
            waiver("pipeline: x, rule: coverage-floor"),
            None,
        );
        expect(
            "a forbidden id",
            with_id("pipeline: x, rule: no-true"),
            None,
        );
        expect(
            "an optional gate",
            waiver("pipeline: x, gate: iac-scan"),
            Some("gate `iac-scan` is optional: pipelines may turn it off without a waiver"),
        );
        expect(
            "an unknown gate",
            waiver("pipeline: x, gate: nosuch"),
            Some("the org has no gate `nosuch`"),
        );
        expect(
            "an unknown rule",
            with_id("pipeline: x, rule: no-exit"),
            Some("there is no rule `no-exit` to waive"),
        );
        expect(
            "both subjects",
            waiver("pipeline: x, repository: \"payments/*\", gate: lint"),
            Some("a waiver covers either `pipeline` or `repository`"),
        );
        expect(
            "no subject",
            waiver("gate: lint"),
            Some("a waiver covers either `pipeline` or `repository`"),
        );
        expect(
            "a gate and a rule",
            waiver("pipeline: x, gate: lint, rule: coverage-floor"),
            Some("a waiver names either a `gate` or a `rule`"),
        );
    }

    #[test]
    fn waivers_cover_their_pipelines_or_repositories_and_subject() {
        let p = plus(
            "waivers:\n  - {pipeline: \"orders-*\", gate: lint, reason: r, approver: a, expires: \"2026-12-31\"}\n  - {repository: \"Payments/*\", rule: coverage-floor, reason: r, approver: a, expires: \"2026-11-15\"}\n",
        )
        .expect("valid waivers");
        let w = &p.org.waivers;
        assert_eq!(w[0].subject(), "gate `lint`");
        assert_eq!(w[1].subject(), "rule `coverage-floor`");
        assert!(w[0].covers("orders-api", None));
        assert!(!w[0].covers("ledger", Some("orders/orders-api")));
        assert!(w[1].covers("ledger", Some("payments/LEDGER")));
        assert!(!w[1].covers("ledger", Some("billing/ledger")));
        assert!(!w[1].covers("ledger", None));
        assert_eq!(w[1].expiry(), Date::parse("2026-11-15"));
        let found = |subject: &str, name: &str, repo: Option<&str>| -> Vec<usize> {
            p.waivers_for(subject, name, repo)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(found("gate `lint`", "orders-api", None), [0]);
        assert_eq!(found("gate `lint`", "ledger", None), Vec::<usize>::new());
        assert_eq!(
            found("gate `test`", "orders-api", None),
            Vec::<usize>::new()
        );
        assert_eq!(
            found("rule `coverage-floor`", "ledger", Some("payments/ledger")),
            [1]
        );
    }

    #[test]
    fn tooling_accounts_and_buckets_are_listed_once_and_placements_name_them() {
        const SECOND: &str = "tooling_accounts:\n  - {account: \"555555555555\", region: eu-west-1, bucket: b-555, kms_key: alias/k}\n";
        let p = plus(&format!(
            "{SECOND}placement:\n  teams: {{payments: \"555555555555\"}}\n  pipelines: {{ledger: \"123456789012\"}}\n"
        ))
        .expect("placements on listed accounts");
        let ids: Vec<String> = p
            .tooling_accounts()
            .into_iter()
            .map(|t| t.account)
            .collect();
        assert_eq!(ids, ["123456789012", "555555555555"]);
        let home = p.tooling_account("123456789012").expect("home");
        assert_eq!(home, p.home());
        assert_eq!(home.bucket, "example-pipeforge-source");
        assert_eq!(home.region, "us-east-1");
        assert_eq!(home.kms_key, "alias/pipeforge-source");
        let second = p.tooling_account("555555555555").expect("second");
        assert_eq!(second.bucket, "b-555");
        assert_eq!(p.tooling_account("999999999999"), None);
        expect(
            "an unknown account",
            plus(&format!(
                "{SECOND}placement:\n  pipelines: {{ledger: \"999999999999\"}}\n"
            )),
            Some("`999999999999` is not one of the tooling accounts"),
        );
        expect(
            "the home account again",
            plus(
                "tooling_accounts:\n  - {account: \"123456789012\", region: eu-west-1, bucket: b-1, kms_key: alias/k}\n",
            ),
            Some("tooling account `123456789012` is listed twice"),
        );
        expect(
            "the home bucket again",
            plus(
                "tooling_accounts:\n  - {account: \"555555555555\", region: eu-west-1, bucket: example-pipeforge-source, kms_key: alias/k}\n",
            ),
            Some("source bucket `example-pipeforge-source` is used twice"),
        );
    }

    #[test]
    fn accounts_are_found_by_id_and_opened_to_their_teams() {
        let p = embedded().expect("embedded policy");
        let (i, a) = p.account("333333333333").expect("listed");
        assert_eq!((i, a.name.as_str()), (2, "shared-prod"));
        assert_eq!(a.label(), "`333333333333` (`shared-prod`)");
        assert!(p.account("999999999999").is_none());
        assert!(p.is_production_account("333333333333"));
        assert!(!p.is_production_account("111111111111"));
        assert!(!p.is_production_account("999999999999"));
        assert!(p.is_production("prod") && !p.is_production("dev"));
        let names = |team: &str| -> Vec<String> {
            p.accounts_for_team(team)
                .into_iter()
                .map(|a| a.name.clone())
                .collect()
        };
        assert_eq!(
            names("payments"),
            ["shared-dev", "shared-test", "shared-prod", "payments-prod"]
        );
        assert_eq!(
            names("billing"),
            ["shared-dev", "shared-test", "shared-prod"]
        );
        assert_eq!(p.gate_index("lint"), Some(0));
        assert_eq!(p.gate_index("test"), Some(4));
        assert_eq!(p.gate_index("nosuch"), None);
    }

    #[test]
    fn a_policy_without_accounts_or_teams_warns_about_each() {
        let p = embedded().expect("embedded policy");
        assert_eq!(p.warnings(), Vec::<(String, String)>::new());
        let mut old = p.clone();
        old.org.accounts = None;
        let w = old.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("lists no `accounts`"), "{w:?}");
        old.org.teams = None;
        let w = old.warnings();
        assert_eq!(w.len(), 2);
        assert!(w[1].0.contains("lists no `teams`"), "{w:?}");
        assert!(w[1].1.contains("under `teams`"), "{w:?}");
    }

    #[test]
    fn a_rule_is_cited_where_it_is_written_or_as_a_default() {
        let p = embedded().expect("embedded policy");
        let at = p.cite("environments.production");
        assert!(
            at.starts_with(&format!("{}:", p.file)) && at.ends_with("(`environments.production`)"),
            "{at}"
        );
        assert_eq!(
            p.cite("no.such.rule"),
            format!("{} (`no.such.rule`, pipeforge default)", p.file)
        );
    }

    /// A policy without `gates` gets the built-in gates, which are the gates the shipped example
    /// lists (names, stages and which are mandatory, in order).
    #[test]
    fn a_policy_without_gates_gets_the_example_gates() {
        let example = embedded().expect("embedded policy");
        let without = with(|t| {
            let mut out = String::new();
            let mut skipping = false;
            for line in t.lines() {
                if line.starts_with("gates:") {
                    skipping = true;
                    continue;
                }
                if skipping && !line.is_empty() && !line.starts_with([' ', '#']) {
                    skipping = false;
                }
                if !skipping {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out
        })
        .expect("the example without `gates` loads");
        let shape = |p: &OrgPolicy| -> Vec<(String, &'static str, bool)> {
            p.org
                .gates
                .iter()
                .map(|g| (g.name.clone(), g.stage.as_str(), g.mandatory))
                .collect()
        };
        assert!(!example.org.gates.is_empty());
        assert_eq!(shape(&without), shape(&example));
        assert!(without.org.gates.iter().all(|g| !g.description.is_empty()));
    }

    /// A stage's name in policies is its serialized name.
    #[test]
    fn stage_names_are_their_policy_names() {
        for (stage, name) in [(Stage::Ci, "ci"), (Stage::Build, "build")] {
            assert_eq!(stage.as_str(), name);
            assert_eq!(
                serde_json::to_value(stage).expect("serializes"),
                serde_json::Value::from(name)
            );
        }
    }

    /// The secrets of a vendor API are its token and its app key, in that order, when set; the
    /// APIs of the pull-request settings are those configured, in vendor order.
    #[test]
    fn vendor_apis_and_their_secrets_are_those_configured() {
        let api = |token: Option<&str>, key: Option<&str>| OrgVendorApi {
            api_url: "https://api.github.com".to_owned(),
            author: "pipeforge[bot]".to_owned(),
            token_secret: token.map(str::to_owned),
            app_id: None,
            app_key_secret: key.map(str::to_owned),
            token_key: None,
        };
        assert_eq!(api(Some("t"), Some("k")).secrets(), ["t", "k"]);
        assert_eq!(api(None, Some("k")).secrets(), ["k"]);
        assert_eq!(api(Some("t"), None).secrets(), ["t"]);
        assert!(api(None, None).secrets().is_empty());
        let prs = OrgPullRequests {
            enabled: false,
            github: Some(api(Some("gh"), None)),
            bitbucket_server: None,
            bitbucket_cloud: Some(api(Some("bbc"), None)),
        };
        let secrets: Vec<&str> = prs.apis().into_iter().flat_map(|a| a.secrets()).collect();
        assert_eq!(secrets, ["gh", "bbc"]);
        assert!(OrgPullRequests::default().apis().is_empty());
    }

    /// The text written to `assets/prebuilt/org.json` reads back as the policy it came from.
    #[test]
    fn the_prebuilt_text_reads_back_as_the_embedded_policy() {
        let text = prebuilt_json().expect("the embedded policy loads");
        let back = parse_prebuilt(leak(text.clone()), assets::INPUTS_DIGEST).expect("reads back");
        let loaded = load_embedded().expect("embedded policy");
        assert_eq!(back.org, loaded.org);
        assert_eq!(back.spans.index(), loaded.spans.index());
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn lists_in_messages_are_in_backticks() {
        assert_eq!(backticks(&["ci", "build"]), "`ci`, `build`");
        assert_eq!(backticks(&["one"]), "`one`");
        assert_eq!(backticks::<&str>(&[]), "");
    }
}
