//! Stage 2: the validated model — a manifest checked against the org policy and the language
//! catalog, with every default applied and every value's origin recorded.
//!
//! [`validate`] reports *all* problems at once: the structural ones found by the schema check
//! and the semantic ones found here (unknown language or runtime, reserved tags, duplicate
//! environments, paths escaping the repository, attempts to weaken the org policy, ...), each
//! with its location, manifest path and a hint. The model has no `Option` where a default
//! exists.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::catalog::{Catalog, Language, TeamSlot};
use crate::error::{Diagnostic, SourceFile};
use crate::input::Loaded;
use crate::manifest::{
    ArtifactKind, Compute, NotificationEvent, RESERVED_ENV_PREFIXES, RawManifest,
};
use crate::org::{OrgPolicy, Stage};
use crate::schema::{Checked, did_you_mean, join_key};

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
    /// Whether the org policy treats it as production.
    pub production: bool,
    /// Whether a manual approval precedes its deployment.
    pub approval: Sourced<bool>,
    /// Effective template parameters (deploy parameters overridden by the environment's).
    pub parameters: BTreeMap<String, String>,
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

fn parse_secret(reference: &str) -> Result<Secret, &'static str> {
    if let Some(name) = reference.strip_prefix("ssm:") {
        let ok = !name.is_empty()
            && name.len() <= 1011
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
            && !name.contains("//")
            && !name.ends_with('/');
        return if ok {
            Ok(Secret::ParameterStore {
                name: name.to_owned(),
            })
        } else {
            Err(
                "an SSM parameter name is letters, digits and `_.-/`, e.g. `ssm:/payments/db/password`",
            )
        };
    }
    if let Some(rest) = reference.strip_prefix("secretsmanager:") {
        let (secret_id, tail) = if rest.starts_with("arn:") {
            // arn:partition:secretsmanager:region:account:secret:name-suffix[:json-key...]
            let parts: Vec<&str> = rest.splitn(8, ':').collect();
            if parts.len() < 7 || parts[2] != "secretsmanager" || parts[5] != "secret" {
                return Err(
                    "a Secrets Manager ARN looks like `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`",
                );
            }
            (parts[..7].join(":"), parts.get(7).copied())
        } else {
            match rest.split_once(':') {
                Some((id, tail)) => (id.to_owned(), Some(tail)),
                None => (rest.to_owned(), None),
            }
        };
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 512
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
        };
        let id_ok = match secret_id.strip_prefix("arn:") {
            // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX
            Some(arn) => {
                let p: Vec<&str> = arn.split(':').collect();
                p.len() == 6
                    && p[0].starts_with("aws")
                    && p[0].chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && !p[2].is_empty()
                    && p[2]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && p[3].len() == 12
                    && p[3].chars().all(|c| c.is_ascii_digit())
                    && name_ok(p[5])
            }
            None => name_ok(&secret_id),
        };
        let tail_ok =
            tail.is_none_or(|t| t.split(':').count() <= 3 && !t.chars().any(char::is_whitespace));
        return if id_ok && tail_ok {
            Ok(Secret::SecretsManager {
                secret_id,
                reference: rest.to_owned(),
            })
        } else {
            Err(
                "write `secretsmanager:secret-name[:json-key[:version-stage[:version-id]]]`; names are letters, digits and `/_+=.@-`",
            )
        };
    }
    Err("a secret is `ssm:/parameter/name` or `secretsmanager:secret-name[:json-key]`")
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

fn build_model(cx: &mut Ctx<'_>, raw: &RawManifest, catalog: &Catalog) -> Option<Model> {
    let org = &cx.org.org;
    if cx.checked.value.is_null() && cx.checked.diagnostics.is_empty() {
        cx.diags.push(Diagnostic::file_level(
            cx.file.name.clone(),
            "the manifest is empty",
            "start from `examples/pipeline.yml`, or run `pipeforge schema` for every key",
        ));
        return None;
    }

    // Language and runtime.
    let language: Option<&Language> = match raw.language.as_deref() {
        Some(l) => match catalog.languages.get(l) {
            Some(lang) => {
                if !org.languages.allowed.is_empty()
                    && !org.languages.allowed.iter().any(|a| a == l)
                {
                    let rule = cx.org.cite("languages.allowed");
                    cx.err(
                        "language",
                        format!("language `{l}` is not allowed by the organisation"),
                        format!(
                            "allowed languages are {} (org rule {rule})",
                            backticks(&org.languages.allowed)
                        ),
                    );
                    None
                } else {
                    Some(lang)
                }
            }
            None => {
                let names: Vec<&str> = catalog.languages.keys().map(String::as_str).collect();
                let help = match did_you_mean(l, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("known languages are {}", backticks(&names)),
                };
                cx.err("language", format!("unknown language `{l}`"), help);
                None
            }
        },
        None => None,
    };
    let runtime = match (language, raw.runtime.as_deref()) {
        (Some(lang), Some(r)) => {
            if lang.runtime.versions.iter().any(|v| v == r) {
                Some(Sourced::new(r.to_owned(), Origin::Team))
            } else {
                cx.err(
                    "runtime",
                    format!(
                        "runtime `{r}` is not offered for `{}`",
                        raw.language.as_deref().unwrap_or_default()
                    ),
                    format!(
                        "choose one of {} (default `{}`)",
                        backticks(&lang.runtime.versions),
                        lang.runtime.default
                    ),
                );
                None
            }
        }
        (Some(lang), None) => Some(Sourced::new(lang.runtime.default.clone(), Origin::Language)),
        _ => None,
    };

    // Build settings.
    let rb = raw.build.clone().unwrap_or_default();
    let commands: Vec<String> = rb
        .commands
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.0)
        .collect();
    let test_commands: Option<Vec<String>> = rb
        .test_commands
        .map(|v| v.into_iter().map(|c| c.0).collect());
    let forbidden: Vec<(usize, std::sync::Arc<regex_lite::Regex>)> = org
        .commands
        .forbidden
        .iter()
        .enumerate()
        .filter_map(|(i, f)| crate::schema::cached_regex(&f.pattern).ok().map(|r| (i, r)))
        .collect();
    let check_commands = |cx: &mut Ctx<'_>, field: &str, cmds: &[String]| {
        for (i, c) in cmds.iter().enumerate() {
            let path = format!("build.{field}[{i}]");
            if has_control_chars(c) {
                cx.err(
                    &path,
                    "command contains a control character",
                    "remove control characters; use `\\n` only to separate lines of a script",
                );
                continue;
            }
            if c.trim().is_empty() {
                cx.err(&path, "command is empty", "remove the empty item");
                continue;
            }
            for (fi, re) in &forbidden {
                if re.is_match(c) {
                    let rule = cx.org.cite(&format!("commands.forbidden[{fi}]"));
                    let reason = &cx.org.org.commands.forbidden[*fi].reason;
                    cx.err(
                        &path,
                        format!("command would weaken a gate: {reason}"),
                        format!("let the command fail on its own; forbidden by org rule {rule}"),
                    );
                    break;
                }
            }
        }
    };
    check_commands(cx, "commands", &commands);
    if let Some(tc) = &test_commands {
        check_commands(cx, "test_commands", tc);
    }

    let mut env = BTreeMap::new();
    for (k, v) in rb.env.unwrap_or_default() {
        let path = join_key("build.env", &k);
        if let Some(p) = RESERVED_ENV_PREFIXES.iter().find(|p| k.starts_with(*p)) {
            cx.err_key(&path, format!("`{k}` uses the reserved prefix `{p}`"), "rename the variable; `CODEBUILD_`, `AWS_` and `PF_` belong to CodeBuild, AWS and pipeforge");
            continue;
        }
        if has_control_chars(&v.0) {
            cx.err(
                &path,
                "value contains a control character",
                "remove control characters from the value",
            );
            continue;
        }
        env.insert(k, v.0);
    }
    let mut secrets = BTreeMap::new();
    for (k, v) in rb.secrets.unwrap_or_default() {
        let path = join_key("build.secrets", &k);
        if let Some(p) = RESERVED_ENV_PREFIXES.iter().find(|p| k.starts_with(*p)) {
            cx.err_key(&path, format!("`{k}` uses the reserved prefix `{p}`"), "rename the variable; `CODEBUILD_`, `AWS_` and `PF_` belong to CodeBuild, AWS and pipeforge");
            continue;
        }
        if env.contains_key(&k) {
            cx.err_key(
                &path,
                format!("`{k}` is both a plain variable and a secret"),
                format!("remove `build.env.{k}`; a secret must not also be set in plain text"),
            );
            continue;
        }
        match parse_secret(&v.0) {
            Ok(s) => {
                secrets.insert(k, s);
            }
            Err(help) => cx.err(
                &path,
                format!(
                    "invalid secret reference {}",
                    crate::yaml::quote_short(&v.0)
                ),
                help,
            ),
        }
    }
    let compute = match rb.compute {
        Some(c) => {
            if !org.build.allowed_compute.contains(&c) {
                let rule = cx.org.cite("build.allowed_compute");
                cx.err(
                    "build.compute",
                    format!(
                        "compute `{}` is not allowed by the organisation",
                        c.as_str()
                    ),
                    format!(
                        "allowed sizes are {} (org rule {rule})",
                        backticks(
                            &org.build
                                .allowed_compute
                                .iter()
                                .map(|c| c.as_str())
                                .collect::<Vec<_>>()
                        )
                    ),
                );
            }
            Sourced::new(c, Origin::Team)
        }
        None => Sourced::new(org.build.default_compute, Origin::Org),
    };
    let timeout = match rb.timeout_minutes {
        Some(t) => {
            if t > org.build.max_timeout_minutes {
                let rule = cx.org.cite("build.max_timeout_minutes");
                cx.err(
                    "build.timeout_minutes",
                    format!("timeout {t} is longer than the organisation allows"),
                    format!(
                        "use at most {} minutes (org rule {rule})",
                        org.build.max_timeout_minutes
                    ),
                );
            }
            Sourced::new(t, Origin::Team)
        }
        None => Sourced::new(org.build.default_timeout_minutes, Origin::Org),
    };

    // Artifact.
    let ra = raw.artifact.clone().unwrap_or_default();
    let kind = match (ra.kind, language) {
        (Some(k), _) => Some(Sourced::new(k, Origin::Team)),
        (None, Some(l)) => Some(Sourced::new(l.artifact.kind, Origin::Language)),
        (None, None) => None,
    };
    // CodeArtifact repositories default to the team's, ECR repositories to the pipeline's name.
    let repository = match (&kind, ra.repository) {
        (_, Some(r)) => Some(Sourced::new(r, Origin::Team)),
        (Some(k), None) if k.value == ArtifactKind::Codeartifact => {
            raw.team.clone().map(|t| Sourced::new(t, Origin::Default))
        }
        (Some(k), None) if k.value == ArtifactKind::Ecr => {
            raw.name.clone().map(|n| Sourced::new(n, Origin::Default))
        }
        _ => None,
    };
    let paths = match (ra.paths, language) {
        (Some(p), _) => {
            let p: Vec<String> = p.into_iter().map(|g| g.0).collect();
            for (i, g) in p.iter().enumerate() {
                if !is_repo_relative(g) {
                    cx.err(
                        &format!("artifact.paths[{i}]"),
                        format!("path `{g}` leaves the repository"),
                        "use a path relative to the repository root, without `..`, e.g. `dist/**`",
                    );
                }
            }
            Some(Sourced::new(p, Origin::Team))
        }
        (None, Some(l)) => Some(Sourced::new(l.artifact.paths.clone(), Origin::Language)),
        (None, None) => None,
    };

    // Quality.
    let floor = org.quality.coverage_floor;
    let coverage = match raw.quality.as_ref().and_then(|q| q.coverage_min) {
        Some(c) => {
            if c < floor {
                let rule = cx.org.cite("quality.coverage_floor");
                cx.err(
                    "quality.coverage_min",
                    format!("coverage {c}% is below the organisation's floor of {floor}%"),
                    format!(
                        "use at least {floor}, or leave it out to get {floor} (org rule {rule})"
                    ),
                );
            }
            Sourced::new(c, Origin::Team)
        }
        None => Sourced::new(floor, Origin::Org),
    };

    // Deploy.
    let rd = raw.deploy.clone().unwrap_or_default();
    if let Some(t) = &rd.template {
        if !is_repo_relative(t) {
            cx.err(
                "deploy.template",
                format!("template path `{t}` leaves the repository"),
                "use a path relative to the repository root, without `..`, e.g. `infra/app.yml`",
            );
        } else if t.contains(['*', '?', '[']) {
            cx.err(
                "deploy.template",
                format!("template path `{t}` is a pattern"),
                "name one file, e.g. `infra/app.yml`",
            );
        }
    }
    let deploy_params: BTreeMap<String, String> = rd
        .parameters
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let stack_name = match (&rd.stack_name, &raw.name) {
        (Some(s), _) => Some(Sourced::new(s.clone(), Origin::Team)),
        (None, Some(n)) => Some(Sourced::new(n.clone(), Origin::Default)),
        _ => None,
    };

    // Environments.
    let mut environments = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in raw
        .environments
        .clone()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let base = format!("environments[{i}]");
        if let Some(name) = &e.name
            && let Some(first) = names.insert(name.clone(), i)
        {
            cx.err(&format!("{base}.name"), format!("environment `{name}` is listed twice"), format!("environment names must be unique; `environments[{first}]` already uses `{name}`"));
        }
        let (Some(name), Some(account)) = (e.name.clone(), e.account.clone()) else {
            continue;
        };
        let production = cx.org.is_production(&name);
        let approval = match e.approval {
            Some(false) if production => {
                let rule = cx.org.cite("environments.production");
                cx.err(&format!("{base}.approval"), format!("`{name}` is a production environment; its approval cannot be turned off"), format!("remove `approval: false`; production deploys always wait for a manual approval (org rule {rule})"));
                Sourced::new(true, Origin::Org)
            }
            Some(a) => Sourced::new(
                a || production,
                if production {
                    Origin::Org
                } else {
                    Origin::Team
                },
            ),
            None if production => Sourced::new(true, Origin::Org),
            None => Sourced::new(false, Origin::Default),
        };
        let region = match e.region {
            Some(r) => Sourced::new(r, Origin::Team),
            None => Sourced::new(org.tooling.region.clone(), Origin::Org),
        };
        if !org.environments.allowed_regions.is_empty()
            && !org.environments.allowed_regions.contains(&region.value)
        {
            let rule = cx.org.cite("environments.allowed_regions");
            let path = if region.from == Origin::Team {
                format!("{base}.region")
            } else {
                base.clone()
            };
            cx.err(
                &path,
                format!(
                    "region `{}` is not allowed by the organisation",
                    region.value
                ),
                format!(
                    "use one of {} (org rule {rule})",
                    backticks(&org.environments.allowed_regions)
                ),
            );
        }
        // The execution role in this account can only attach AWS managed policies, policies of
        // this account, or policies given by name (which must exist in every target account).
        let dep = &org.deploy;
        let policies = dep
            .execution_policy_arns
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("deploy.execution_policy_arns[{i}]"), p))
            .chain(
                dep.permissions_boundary
                    .iter()
                    .map(|p| ("deploy.permissions_boundary".to_owned(), p)),
            );
        for (rule_path, policy) in policies {
            let owner = policy
                .strip_prefix("arn:")
                .and_then(|r| r.split(':').nth(3))
                .filter(|o| *o != "aws");
            if let Some(owner) = owner
                && owner != account
            {
                let rule = cx.org.cite(&rule_path);
                cx.err(
                    &format!("{base}.account"),
                    format!("the organisation's execution policy `{policy}` belongs to account {owner}, so no role in {account} can use it"),
                    format!("in the org policy, name the policy instead (it must exist in every target account) or use an AWS managed policy (org rule {rule})"),
                );
            }
        }
        let mut parameters = deploy_params.clone();
        for (k, v) in e.parameters.unwrap_or_default() {
            parameters.insert(k, v.0);
        }
        environments.push(Environment {
            name,
            account,
            region,
            production,
            approval,
            parameters,
        });
    }

    // Tags.
    let mut tags = BTreeMap::new();
    for (k, v) in raw.tags.clone().unwrap_or_default() {
        let path = join_key("tags", &k);
        let lower = k.to_ascii_lowercase();
        if lower == "team" || lower == "pipeline" || lower.starts_with("aws:") {
            cx.err_key(&path, format!("tag key `{k}` is reserved"), "pipeforge sets `team` and `pipeline` itself, and `aws:` tags belong to AWS; choose another key");
            continue;
        }
        if let Some(bad) = v.0.chars().find(|c| !is_tag_value_char(*c)) {
            cx.err(
                &path,
                format!("tag value contains {bad:?}, which AWS does not allow in tags"),
                "use letters, digits, spaces and `_ . : / = + - @` only",
            );
            continue;
        }
        tags.insert(k, v.0);
    }
    for (i, req) in org.tags.required.iter().enumerate() {
        if !tags.contains_key(req) {
            let rule = cx.org.cite(&format!("tags.required[{i}]"));
            let path = if cx.checked.spans.contains("tags") {
                "tags"
            } else {
                ""
            };
            if path.is_empty() {
                cx.diags.push(Diagnostic::file_level(
                    cx.file.name.clone(),
                    format!("missing required tag `{req}`"),
                    format!("add `tags: {{{req}: ...}}` (org rule {rule})"),
                ));
            } else {
                cx.err_key(
                    path,
                    format!("missing required tag `{req}`"),
                    format!("add `{req}: ...` under `tags` (org rule {rule})"),
                );
            }
        }
    }
    if tags.len() + 2 > 50 {
        cx.err_key(
            "tags",
            format!(
                "{} tags plus `team` and `pipeline` exceed the AWS limit of 50",
                tags.len()
            ),
            "remove tags until there are at most 48",
        );
    }

    // Notifications.
    let rn = raw.notifications.clone().unwrap_or_default();
    let events = match rn.events {
        Some(ev) => Sourced::new(ev, Origin::Team),
        None => Sourced::new(org.notifications.default_events.clone(), Origin::Org),
    };

    // Gates.
    let settings = raw.gates.clone().unwrap_or_default();
    let org_gate_names: Vec<&str> = org.gates.iter().map(|g| g.name.as_str()).collect();
    for key in settings.keys() {
        if !org_gate_names.contains(&key.as_str()) {
            let help = match did_you_mean(key, org_gate_names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "the organisation's gates are {}",
                    backticks(&org_gate_names)
                ),
            };
            cx.err_key(
                &format!("gates.{key}"),
                format!("unknown gate `{key}`"),
                help,
            );
        }
    }
    let mut gates = Vec::new();
    let mut disabled = Vec::new();
    for (i, g) in org.gates.iter().enumerate() {
        let s = settings.get(&g.name).cloned().unwrap_or_default();
        let path = join_key("gates", &g.name);
        if s.enabled == Some(false) {
            if g.mandatory {
                let rule = cx.org.cite(&format!("gates[{i}].mandatory"));
                cx.err(&format!("{path}.enabled"), format!("gate `{}` is mandatory and cannot be turned off", g.name), format!("remove `enabled: false`; the organisation requires this gate (org rule {rule})"));
            } else {
                disabled.push(DisabledGate {
                    name: g.name.clone(),
                    reason: "turned off by the manifest",
                });
                continue;
            }
        }
        if let Some(lang) = language
            && !lang.gates.contains_key(&g.name)
        {
            if !g.mandatory {
                // An optional gate the language cannot run is left out, visibly (plan.json,
                // `explain`); a mandatory one is an error, never a silent no-op.
                disabled.push(DisabledGate {
                    name: g.name.clone(),
                    reason: "not implemented by the language",
                });
                continue;
            }
            let lname = raw.language.clone().unwrap_or_default();
            let src = catalog.sources.get(&lname).cloned().unwrap_or_default();
            cx.err("language", format!("language `{lname}` does not implement gate `{}`", g.name), format!("the platform team must add `gates.{}` to {src} before `{lname}` pipelines can run", g.name));
        }
        let gcompute = match s.compute {
            Some(c) => {
                if !org.build.allowed_compute.contains(&c) {
                    let rule = cx.org.cite("build.allowed_compute");
                    cx.err(
                        &format!("{path}.compute"),
                        format!(
                            "compute `{}` is not allowed by the organisation",
                            c.as_str()
                        ),
                        format!("allowed sizes are listed in org rule {rule}"),
                    );
                }
                Sourced::new(c, Origin::Team)
            }
            None => compute.clone(),
        };
        let gtimeout = match s.timeout_minutes {
            Some(t) => {
                if t > org.build.max_timeout_minutes {
                    let rule = cx.org.cite("build.max_timeout_minutes");
                    cx.err(
                        &format!("{path}.timeout_minutes"),
                        format!("timeout {t} is longer than the organisation allows"),
                        format!(
                            "use at most {} minutes (org rule {rule})",
                            org.build.max_timeout_minutes
                        ),
                    );
                }
                Sourced::new(t, Origin::Team)
            }
            None => timeout.clone(),
        };
        gates.push(Gate {
            name: g.name.clone(),
            stage: g.stage,
            mandatory: g.mandatory,
            description: g.description.clone(),
            compute: gcompute,
            timeout_minutes: gtimeout,
        });
    }
    if let Some(lang) = language {
        let slots: BTreeSet<TeamSlot> = gates
            .iter()
            .filter_map(|g| lang.gates.get(&g.name))
            .flat_map(|gi| gi.steps.iter().filter_map(|s| s.team))
            .collect();
        if !commands.is_empty() && !slots.contains(&TeamSlot::BuildCommands) {
            cx.err("build.commands", "no enabled gate of this language runs team build commands", "remove `build.commands`, or ask the platform team to add a `team: build_commands` step");
        }
        if test_commands.is_some() && !slots.contains(&TeamSlot::TestCommands) {
            cx.err("build.test_commands", "no enabled gate of this language runs team test commands", "remove `build.test_commands`, or ask the platform team to add a `team: test_commands` step");
        }
    }

    // Versioning.
    let rv = raw.versioning.clone().unwrap_or_default();
    let initial = match rv.initial {
        Some(v) => Sourced::new(v, Origin::Team),
        None => Sourced::new("0.1.0".to_owned(), Origin::Default),
    };
    let prerelease = match rv.prerelease {
        Some(p) => Sourced::new(p, Origin::Team),
        None => Sourced::new(org.versioning.prerelease.clone(), Origin::Org),
    };

    Some(Model {
        file: cx.file.name.clone(),
        name: raw.name.clone()?,
        team: raw.team.clone()?,
        language: raw.language.clone()?,
        runtime: runtime?,
        build: Build {
            commands,
            test_commands,
            env,
            secrets,
            compute,
            timeout_minutes: timeout,
        },
        artifact: Artifact {
            kind: kind?,
            repository,
            paths: paths?,
        },
        coverage_min: coverage,
        deploy: Deploy {
            template: rd.template?,
            stack_name: stack_name?,
            parameters: deploy_params,
        },
        environments,
        notifications: Notifications {
            email: rn.email.unwrap_or_default(),
            events,
        },
        tags,
        gates,
        disabled_gates: disabled,
        versioning: Versioning {
            initial,
            prerelease,
        },
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

    #[test]
    fn secrets_parse() {
        assert_eq!(
            parse_secret("ssm:/a/b"),
            Ok(Secret::ParameterStore {
                name: "/a/b".into()
            })
        );
        assert!(parse_secret("ssm:/a b").is_err());
        assert_eq!(
            parse_secret("secretsmanager:payments/api:key"),
            Ok(Secret::SecretsManager {
                secret_id: "payments/api".into(),
                reference: "payments/api:key".into()
            })
        );
        let arn = "secretsmanager:arn:aws:secretsmanager:us-east-1:111111111111:secret:db-AbCdEf:password";
        assert_eq!(
            parse_secret(arn),
            Ok(Secret::SecretsManager {
                secret_id: "arn:aws:secretsmanager:us-east-1:111111111111:secret:db-AbCdEf".into(),
                reference:
                    "arn:aws:secretsmanager:us-east-1:111111111111:secret:db-AbCdEf:password".into()
            })
        );
        assert!(parse_secret("vault:x").is_err());
        assert!(
            parse_secret("secretsmanager:arn:aws:secretsmanager:us-east-1:111111111111:secret:d b")
                .is_err()
        );
        assert!(
            parse_secret("secretsmanager:arn:aws:secretsmanager:us-east-1:1111:secret:db").is_err()
        );
        assert!(parse_secret("secretsmanager:a b").is_err());
    }
}
