//! `pipeforge bootstrap`: the stacks that install pipeforge itself, rendered through the same
//! template set as the pipeline stacks (`templates/bootstrap/*.yml.tera`, overridable with
//! `--templates DIR`), parsed back into canonical JSON and checked as data before anything is
//! written.
//!
//! - `tooling.json` (the home tooling account): source bucket and KMS key, job status bucket,
//!   FIFO job queue and dead-letter queue, webhook secret, HTTP API, webhook and worker
//!   functions with least-privilege roles.
//! - `tooling-<account>.json` (each other tooling account of `tooling_accounts`, the same
//!   template with `home` false): its source bucket and key, the execution role of the
//!   pipeline and region stacks and its boundary, and the policy the bootstrap role there gets
//!   for deploys placed in it (`ToolingAccountDeployer`).
//! - `target.json` (every target account): the bootstrap role pipeforge assumes there
//!   (`deploy.bootstrap_role`), and the managed policies the target stacks reference
//!   (`deploy.execution_policy_arns` and `deploy.permissions_boundary` given by name).

use serde::Serialize;
use serde_json::Value as Json;

use crate::error::{Error, Result, SourceFile};
use crate::org::{OrgPolicy, ToolingAccount};
use crate::outputs::Outputs;
use crate::render::{JSON_HEADER, Templates, cfn, ensure_sorted};
use crate::yaml::{ParseOptions, parse};

/// The tooling account's template.
pub const TEMPLATE_BOOTSTRAP_TOOLING: &str = "bootstrap/tooling.yml.tera";
/// The per-target-account template.
pub const TEMPLATE_BOOTSTRAP_TARGET: &str = "bootstrap/target.yml.tera";
/// `Metadata.pipeforge.stack` of the home tooling account's stack.
pub const KIND_TOOLING: &str = "bootstrap-tooling";
/// `Metadata.pipeforge.stack` of another tooling account's stack.
pub const KIND_TOOLING_ACCOUNT: &str = "bootstrap-tooling-account";

/// The file of another tooling account's stack: `tooling-<account>.json`.
pub fn extra_tooling_file(account: &str) -> String {
    format!("tooling-{account}.json")
}
/// The worker function's timeout, in seconds (the Lambda maximum).
pub const WORKER_TIMEOUT_SECONDS: u32 = 900;
/// Receives of a job before it is dead-lettered.
pub const MAX_RECEIVES: u32 = 5;

/// An API route.
#[derive(Debug, Serialize)]
pub struct Route {
    /// Logical id; validated (letters only).
    pub logical_id: &'static str,
    /// Route key, e.g. `POST /webhook`; escaped.
    pub key: &'static str,
}

/// The routes of the HTTP API (those of `pipeforge serve`).
pub const ROUTES: [Route; 4] = [
    Route {
        logical_id: "RouteWebhook",
        key: "POST /webhook",
    },
    Route {
        logical_id: "RouteVendorWebhook",
        key: "POST /webhook/{vendor}",
    },
    Route {
        logical_id: "RouteJobStatus",
        key: "GET /jobs/{id}/{capability}",
    },
    Route {
        logical_id: "RouteHealth",
        key: "GET /healthz",
    },
];

/// Everything `bootstrap/tooling.yml.tera` sees. Names are built from the org policy's
/// validated `naming.prefix`.
#[derive(Debug, Serialize)]
pub struct ToolingContext<'a> {
    /// `Description`; escaped.
    pub description: String,
    /// The home tooling account's installation (webhook, worker, queues, status bucket), or
    /// another tooling account's (`tooling_accounts`: its source bucket and key, its execution
    /// role and boundary, and what the bootstrap role there may do for deploys placed in it).
    pub home: bool,
    /// `Metadata.pipeforge.stack`: `bootstrap-tooling` or `bootstrap-tooling-account`.
    pub stack_kind: &'static str,
    /// The tooling account this stack installs; validated.
    pub account: &'a str,
    /// Organisation name; validated.
    pub org: &'a str,
    /// Template set name; escaped.
    pub template_set: &'a str,
    /// Naming prefix; validated.
    pub prefix: &'a str,
    /// Source bucket (of this tooling account); validated.
    pub source_bucket: &'a str,
    /// Alias of the source key to create (`alias/...`), when the policy names an alias.
    pub source_key_alias: Option<&'a str>,
    /// The existing source key, when the policy gives a key ARN; escaped.
    pub source_key_arn: Option<&'a str>,
    /// The bootstrap role name in target accounts; validated.
    pub bootstrap_role: &'a str,
    /// FIFO queue name; validated.
    pub queue: String,
    /// Dead-letter queue name; validated.
    pub dead_letter_queue: String,
    /// Receives before dead-lettering; a number.
    pub max_receives: u32,
    /// Webhook secret name; validated.
    pub secret_name: String,
    /// HTTP API name; validated.
    pub api: String,
    /// Webhook function (and role) name; validated.
    pub webhook_function: String,
    /// Worker function (and role) name; validated.
    pub worker_function: String,
    /// Worker timeout, seconds; a number.
    pub worker_timeout: u32,
    /// Log retention, days; a number from the CloudWatch Logs list.
    pub log_retention_days: i64,
    /// API routes.
    pub routes: &'a [Route],
    /// The CloudFormation execution role of the pipeline and region stacks; validated.
    pub cfn_execution_role: String,
    /// The boundary of the roles the pipeline stacks create; validated.
    pub roles_boundary: String,
    /// The policy another tooling account's stack attaches to the bootstrap role there;
    /// validated.
    pub deployer_policy: String,
    /// The target accounts' execution role (for target stacks in this account); validated.
    pub target_execution_role: String,
    /// The target accounts' boundary (kept intact where an account is both); validated.
    pub target_roles_boundary: String,
    /// What the execution role may do to the artifact buckets (constants).
    pub bucket_actions: &'a [&'static str],
    /// What the roles of the pipeline stacks may ever do (their boundary; constants).
    pub pipeline_role_actions: &'a [&'static str],
    /// The org's bucket for S3 access logs; validated.
    pub access_log_bucket: Option<&'a str>,
    /// Reserved concurrency of the webhook function; a number.
    pub webhook_concurrency: i64,
    /// Reserved concurrency of the worker function; a number.
    pub worker_concurrency: i64,
    /// Subnets and security groups of the functions; validated.
    pub vpc: Option<&'a crate::org::OrgVpc>,
    /// The secrets holding the vendor API credentials of `webhook.pull_requests` (names or
    /// ARNs as the org policy writes them; escaped), when previews are on.
    pub vendor_secrets: Vec<&'a str>,
    /// The worker's resource patterns for those secrets, as YAML values: `!Sub` of a validated
    /// name, or escaped ARNs.
    pub vendor_secret_arns: Vec<String>,
    /// The customer managed keys of those secrets; escaped.
    pub vendor_keys: Vec<&'a str>,
}

/// The resource patterns that grant `secret` (a name, or an ARN) and nothing else: a name is a
/// secret of the tooling account and region, whose ARN ends with `-` and six random characters;
/// an ARN may be complete or lack that suffix.
pub fn secret_arn_patterns(secret: &str) -> Vec<String> {
    if secret.starts_with("arn:") {
        vec![
            crate::render::escape::quote(secret),
            crate::render::escape::quote(&format!("{secret}-??????")),
        ]
    } else {
        vec![format!(
            "!Sub \"arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{secret}-??????\""
        )]
    }
}

/// The handler permissions of `AWS::S3::Bucket` and `AWS::S3::BucketPolicy` on bucket ARNs
/// (ci/iam/handler-permissions.json, without the exclusions and with the S3 API names mapped to
/// their IAM actions, as `iam::handlers` does).
pub const BUCKET_ACTIONS: [&str; 54] = [
    "s3:CreateBucket",
    "s3:CreateBucketMetadataTableConfiguration",
    "s3:DeleteBucket",
    "s3:DeleteBucketMetadataTableConfiguration",
    "s3:DeleteBucketPolicy",
    "s3:DeleteBucketWebsite",
    "s3:GetAccelerateConfiguration",
    "s3:GetAnalyticsConfiguration",
    "s3:GetBucketAbac",
    "s3:GetBucketAcl",
    "s3:GetBucketCORS",
    "s3:GetBucketLogging",
    "s3:GetBucketMetadataTableConfiguration",
    "s3:GetBucketNotification",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketPolicy",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketWebsite",
    "s3:GetEncryptionConfiguration",
    "s3:GetIntelligentTieringConfiguration",
    "s3:GetInventoryConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:GetMetricsConfiguration",
    "s3:GetReplicationConfiguration",
    "s3:ListBucket",
    "s3:ListTagsForResource",
    "s3:PutAccelerateConfiguration",
    "s3:PutAnalyticsConfiguration",
    "s3:PutBucketAbac",
    "s3:PutBucketAcl",
    "s3:PutBucketCORS",
    "s3:PutBucketLogging",
    "s3:PutBucketNotification",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketOwnershipControls",
    "s3:PutBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketTagging",
    "s3:PutBucketVersioning",
    "s3:PutBucketWebsite",
    "s3:PutEncryptionConfiguration",
    "s3:PutIntelligentTieringConfiguration",
    "s3:PutInventoryConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:PutMetricsConfiguration",
    "s3:PutReplicationConfiguration",
    "s3:TagResource",
    "s3:UntagResource",
    "s3:UpdateBucketMetadataAnnotationTableConfiguration",
    "s3:UpdateBucketMetadataInventoryTableConfiguration",
    "s3:UpdateBucketMetadataJournalTableConfiguration",
];

/// Everything a role of a pipeline stack may ever do (the roles' boundary): CodeBuild (logs,
/// reports, artifacts, parameters, secrets, CodeArtifact and ECR publishing), CodePipeline
/// (builds, artifacts, deploy roles, approvals).
pub const PIPELINE_ROLE_ACTIONS: [&str; 38] = [
    "codeartifact:GetAuthorizationToken",
    "codeartifact:GetRepositoryEndpoint",
    "codeartifact:PublishPackageVersion",
    "codeartifact:PutPackageMetadata",
    "codeartifact:ReadFromRepository",
    "codebuild:BatchGetBuilds",
    "codebuild:BatchPutCodeCoverages",
    "codebuild:BatchPutTestCases",
    "codebuild:CreateReport",
    "codebuild:StartBuild",
    "codebuild:StopBuild",
    "codebuild:UpdateReport",
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:GetAuthorizationToken",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:Encrypt",
    "kms:GenerateDataKey*",
    "kms:ReEncrypt*",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "s3:GetBucketAcl",
    "s3:GetBucketLocation",
    "s3:GetBucketVersioning",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "secretsmanager:GetSecretValue",
    "sns:Publish",
    "ssm:GetParameters",
    "sts:AssumeRole",
    "sts:GetServiceBearerToken",
];

pub use crate::render::stacks::PolicyRef;

/// A managed policy the target bootstrap creates.
#[derive(Debug, Serialize)]
pub struct CreatedPolicy<'a> {
    /// Logical id (`AppDeployPolicy`, `AppDeployPolicy2`, ...); validated.
    pub logical_id: String,
    /// Policy name (with optional path); validated.
    pub name: &'a str,
}

/// Everything `bootstrap/target.yml.tera` sees.
#[derive(Debug, Serialize)]
pub struct TargetContext<'a> {
    /// `Description`; escaped.
    pub description: String,
    /// Organisation name; validated.
    pub org: &'a str,
    /// Template set name; escaped.
    pub template_set: &'a str,
    /// Naming prefix; validated.
    pub prefix: &'a str,
    /// Tooling account; validated.
    pub tooling_account: &'a str,
    /// Every tooling account, the home one first (`tooling_accounts`); validated.
    pub tooling_accounts: Vec<String>,
    /// Bootstrap role name; validated.
    pub bootstrap_role: &'a str,
    /// The worker's role in the tooling account; validated.
    pub worker_role: String,
    /// The execution policies the target stacks attach.
    pub execution_policies: Vec<PolicyRef<'a>>,
    /// The permissions boundary of execution roles.
    pub boundary: Option<PolicyRef<'a>>,
    /// Execution policies given by name: created here.
    pub created_policies: Vec<CreatedPolicy<'a>>,
    /// The boundary, when given by name: created here; validated.
    pub created_boundary: Option<&'a str>,
    /// Service actions an application stack may use (constants).
    pub app_actions: &'a [&'static str],
    /// The CloudFormation execution role of the target stacks; validated.
    pub cfn_execution_role: String,
    /// The boundary of the roles the target stacks create; validated.
    pub roles_boundary: String,
    /// The tooling account's boundary (kept intact where an account is both); validated.
    pub tooling_roles_boundary: String,
    /// The role `pipeforge recover` assumes (only the additional trusted role may); validated.
    pub recovery_role: String,
    /// The permission-less role a recovery deletes with; validated.
    pub recovery_execution_role: String,
    /// The patterns of pipeforge's own stack names (`names::OWN_STACK_PATTERNS`); validated.
    pub own_stacks: Vec<String>,
    /// The application boundary's ARN as a YAML value: an escaped ARN, or a `!Sub` of a
    /// validated name.
    pub app_boundary_arn: String,
}

/// What an application's CloudFormation stack may do by default: the serverless and messaging
/// services most applications are made of, keys and buckets managed but not read (no KMS or S3
/// data-plane actions). Platform teams tailor it by overriding the template.
pub const APP_ACTIONS: [&str; 48] = [
    "apigateway:*",
    "cloudformation:*",
    "cloudwatch:*",
    "dynamodb:*",
    "ec2:Describe*",
    "ecr:*",
    "ecs:*",
    "events:*",
    "kms:CreateAlias",
    "kms:CreateKey",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
    "lambda:*",
    "logs:*",
    "s3:CreateBucket",
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:GetBucket*",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:ListBucket",
    "s3:ListTagsForResource",
    "s3:PutBucket*",
    "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:TagResource",
    "sns:*",
    "sqs:*",
    "ssm:GetParameter*",
    "states:*",
    "xray:PutTelemetryRecords",
    "xray:PutTraceSegments",
];

fn names(prefix: &str) -> (String, String, String, String, String, String) {
    (
        format!("{prefix}-pipeforge-jobs.fifo"),
        format!("{prefix}-pipeforge-jobs-dead.fifo"),
        format!("{prefix}/pipeforge/webhook-secret"),
        format!("{prefix}-pipeforge"),
        format!("{prefix}-pipeforge-webhook"),
        format!("{prefix}-pipeforge-worker"),
    )
}

/// The tooling template's context, for the home tooling account.
pub fn tooling_context<'a>(org: &'a OrgPolicy, templates: &'a Templates) -> ToolingContext<'a> {
    let o = &org.org;
    account_context(
        org,
        templates,
        &o.tooling.account,
        &o.source.bucket,
        &o.source.kms_key,
    )
}

/// The tooling template's context for another tooling account of `tooling_accounts`.
pub fn extra_tooling_context<'a>(
    org: &'a OrgPolicy,
    templates: &'a Templates,
    extra: &'a ToolingAccount,
) -> ToolingContext<'a> {
    let mut c = account_context(
        org,
        templates,
        &extra.account,
        &extra.bucket,
        &extra.kms_key,
    );
    c.home = false;
    c.stack_kind = KIND_TOOLING_ACCOUNT;
    c.vendor_secrets.clear();
    c.vendor_secret_arns.clear();
    c.vendor_keys.clear();
    c.description = format!(
        "{JSON_HEADER}: pipeforge installation of organisation `{}` (tooling account {})",
        org.org.org, extra.account
    );
    c
}

fn account_context<'a>(
    org: &'a OrgPolicy,
    templates: &'a Templates,
    account: &'a str,
    bucket: &'a str,
    key: &'a str,
) -> ToolingContext<'a> {
    let o = &org.org;
    let (queue, dead_letter_queue, secret_name, api, webhook_function, worker_function) =
        names(&o.naming.prefix);
    let install = crate::names::InstallNames::new(&o.naming.prefix, &o.deploy.bootstrap_role);
    let (source_key_alias, source_key_arn) = if key.starts_with("alias/") {
        (Some(key), None)
    } else {
        (None, Some(key))
    };
    ToolingContext {
        description: format!(
            "{JSON_HEADER}: pipeforge installation of organisation `{}` (tooling account)",
            o.org
        ),
        home: true,
        stack_kind: KIND_TOOLING,
        account,
        org: &o.org,
        template_set: templates.set_name(),
        prefix: &o.naming.prefix,
        source_bucket: bucket,
        source_key_alias,
        source_key_arn,
        bootstrap_role: &o.deploy.bootstrap_role,
        queue,
        dead_letter_queue,
        max_receives: MAX_RECEIVES,
        secret_name,
        api,
        webhook_function,
        worker_function,
        worker_timeout: WORKER_TIMEOUT_SECONDS,
        log_retention_days: o.build.log_retention_days,
        routes: &ROUTES,
        cfn_execution_role: install.tooling_execution_role.clone(),
        roles_boundary: install.tooling_roles_boundary.clone(),
        deployer_policy: install.tooling_deployer_policy.clone(),
        target_execution_role: install.target_execution_role.clone(),
        target_roles_boundary: install.target_roles_boundary.clone(),
        bucket_actions: &BUCKET_ACTIONS,
        pipeline_role_actions: &PIPELINE_ROLE_ACTIONS,
        access_log_bucket: o.logging.access_log_bucket.as_deref(),
        webhook_concurrency: o.webhook.webhook_concurrency,
        worker_concurrency: o.webhook.worker_concurrency,
        vpc: o.webhook.vpc.as_ref(),
        vendor_secrets: vendor_secrets(o),
        vendor_secret_arns: vendor_secrets(o)
            .into_iter()
            .flat_map(secret_arn_patterns)
            .collect(),
        vendor_keys: vendor_keys(o),
    }
}

/// The vendor credential secrets the worker reads (previews on), each once.
fn vendor_secrets(o: &crate::org::Org) -> Vec<&str> {
    let pr = &o.webhook.pull_requests;
    if !pr.enabled {
        return Vec::new();
    }
    let set: std::collections::BTreeSet<&str> =
        pr.apis().into_iter().flat_map(|a| a.secrets()).collect();
    set.into_iter().collect()
}

/// The customer managed keys of the vendor credential secrets (previews on), each once.
fn vendor_keys(o: &crate::org::Org) -> Vec<&str> {
    let pr = &o.webhook.pull_requests;
    if !pr.enabled {
        return Vec::new();
    }
    let set: std::collections::BTreeSet<&str> = pr
        .apis()
        .into_iter()
        .filter_map(|a| a.token_key.as_deref())
        .collect();
    set.into_iter().collect()
}

/// The target template's context.
pub fn target_context<'a>(org: &'a OrgPolicy, templates: &'a Templates) -> TargetContext<'a> {
    let o = &org.org;
    let d = &o.deploy;
    let (.., worker_role) = names(&o.naming.prefix);
    let install = crate::names::InstallNames::new(&o.naming.prefix, &d.bootstrap_role);
    let created_policies = d
        .execution_policy_arns
        .iter()
        .filter(|p| !p.starts_with("arn:"))
        .enumerate()
        .map(|(i, name)| CreatedPolicy {
            logical_id: if i == 0 {
                "AppDeployPolicy".to_owned()
            } else {
                format!("AppDeployPolicy{}", i + 1)
            },
            name,
        })
        .collect();
    TargetContext {
        description: format!(
            "{JSON_HEADER}: pipeforge bootstrap of a target account of organisation `{}`",
            o.org
        ),
        org: &o.org,
        template_set: templates.set_name(),
        prefix: &o.naming.prefix,
        tooling_account: &o.tooling.account,
        tooling_accounts: org
            .tooling_accounts()
            .into_iter()
            .map(|t| t.account)
            .collect(),
        bootstrap_role: &d.bootstrap_role,
        worker_role,
        execution_policies: d
            .execution_policy_arns
            .iter()
            .map(|p| PolicyRef::new(p))
            .collect(),
        boundary: d.permissions_boundary.as_deref().map(PolicyRef::new),
        created_policies,
        created_boundary: d
            .permissions_boundary
            .as_deref()
            .filter(|b| !b.starts_with("arn:")),
        app_actions: &APP_ACTIONS,
        cfn_execution_role: install.target_execution_role.clone(),
        roles_boundary: install.target_roles_boundary.clone(),
        tooling_roles_boundary: install.tooling_roles_boundary.clone(),
        recovery_role: install.recovery_role.clone(),
        recovery_execution_role: install.recovery_execution_role.clone(),
        own_stacks: crate::names::OWN_STACK_PATTERNS
            .iter()
            .map(|p| p.replace("{prefix}", &o.naming.prefix))
            .collect(),
        app_boundary_arn: match d.permissions_boundary.as_deref() {
            Some(b) if b.starts_with("arn:") => crate::render::escape::quote(b),
            Some(b) => {
                format!("!Sub \"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:policy/{b}\"")
            }
            None => String::new(),
        },
    }
}

fn fail(file: &str, message: impl Into<String>) -> Error {
    Error::OutputCheck {
        pipeline: "bootstrap".to_owned(),
        file: file.to_owned(),
        message: message.into(),
        help: "fix templates/bootstrap/*.tera (or the override); `pipeforge bootstrap --check` compares with what is committed".to_owned(),
    }
}

fn to_json(file: &str, text: &str) -> Result<Json> {
    let source = SourceFile::new(file, text);
    let node = parse(&source, ParseOptions { allow_tags: true }).map_err(|d| {
        fail(
            file,
            format!(
                "the rendered template is not valid YAML: {} at line {}",
                d.message,
                d.span.map_or(0, |s| s.start.line)
            ),
        )
    })?;
    let json = cfn::to_json(&node, file).map_err(|d| {
        fail(
            file,
            format!(
                "{} at line {} of the rendered template",
                d.message,
                d.span.map_or(0, |s| s.start.line)
            ),
        )
    })?;
    Ok(ensure_sorted(json))
}

fn as_list(v: Option<&Json>) -> Vec<&Json> {
    match v {
        Some(Json::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
        None => Vec::new(),
    }
}

/// Every IAM policy statement in a template (inline policies, managed policies, key, bucket and
/// queue policies), with where it is.
fn statements(t: &Json) -> Vec<(String, &Json)> {
    fn walk<'a>(v: &'a Json, path: &str, out: &mut Vec<(String, &'a Json)>) {
        match v {
            Json::Object(m) => {
                if let Some(s) = m.get("Statement") {
                    for (i, st) in as_list(Some(s)).into_iter().enumerate() {
                        out.push((format!("{path}.Statement[{i}]"), st));
                    }
                }
                for (k, x) in m {
                    walk(x, &format!("{path}.{k}"), out);
                }
            }
            Json::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        t.get("Resources").unwrap_or(&Json::Null),
        "Resources",
        &mut out,
    );
    out
}

/// The checks every bootstrap stack passes: the shape (format version, header, metadata,
/// resources), and least privilege: no `Allow` of every action, no `Allow` of every IAM or STS
/// action, no `Allow` of `*` actions on `*` outside the org's application policies and the key
/// policy's account delegation.
fn check(file: &str, t: &Json, kind: &str) -> Result<()> {
    if t.get("AWSTemplateFormatVersion").and_then(Json::as_str) != Some("2010-09-09") {
        return Err(fail(
            file,
            "`AWSTemplateFormatVersion` must be \"2010-09-09\"",
        ));
    }
    if !t
        .get("Description")
        .and_then(Json::as_str)
        .is_some_and(|d| d.starts_with(JSON_HEADER))
    {
        return Err(fail(
            file,
            "`Description` does not start with the pipeforge header",
        ));
    }
    if t.pointer("/Metadata/pipeforge/stack")
        .and_then(Json::as_str)
        != Some(kind)
    {
        return Err(fail(
            file,
            format!("`Metadata.pipeforge.stack` must be `{kind}`"),
        ));
    }
    if !t.get("Resources").is_some_and(Json::is_object) {
        return Err(fail(file, "`Resources` is missing"));
    }
    for (path, st) in statements(t) {
        if st.get("Effect").and_then(Json::as_str) != Some("Allow") {
            continue;
        }
        let actions: Vec<&str> = as_list(st.get("Action"))
            .into_iter()
            .filter_map(Json::as_str)
            .collect();
        let sid = st.get("Sid").and_then(Json::as_str).unwrap_or_default();
        for a in &actions {
            let delegation = *a == "kms:*" && sid == "AccountAdministersAndDelegatesToIam";
            if *a == "*" || ((*a == "iam:*" || *a == "sts:*") && !delegation) {
                return Err(fail(
                    file,
                    format!("`{path}` allows `{a}`: bootstrap roles must list their actions"),
                ));
            }
            let everywhere = as_list(st.get("Resource"))
                .iter()
                .any(|r| r.as_str() == Some("*"));
            if a.ends_with(":*") && everywhere && sid != "ApplicationServices" && !delegation {
                return Err(fail(
                    file,
                    format!(
                        "`{path}` allows `{a}` on every resource: scope it to pipeforge's names"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn canonical(file: &str, t: &Json) -> Result<String> {
    let mut text = serde_json::to_string_pretty(t).map_err(|e| fail(file, e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Renders and checks the bootstrap stacks: `tooling.json` (the home tooling account),
/// `tooling-<account>.json` for each other tooling account of `tooling_accounts`, and
/// `target.json` (every target account, and every other tooling account: its bootstrap role).
pub fn render(org: &OrgPolicy, templates: &Templates) -> Result<Outputs> {
    let d = &org.org.deploy;
    if d.permissions_boundary.is_none() {
        return Err(Error::other(
            format!(
                "the org policy names no permissions boundary for the applications' execution roles ({})",
                org.cite("deploy.deploy_role")
            ),
            "set `deploy.permissions_boundary` (a policy name the bootstrap creates, or an ARN): the CloudFormation execution role only creates roles that carry an org boundary",
        ));
    }
    let install = crate::names::InstallNames::new(&org.org.naming.prefix, &d.bootstrap_role);
    if let Some(n) = install.too_long() {
        return Err(Error::other(
            format!("the installation name `{n}` is longer than IAM's 64 characters"),
            "shorten `naming.prefix` or `deploy.bootstrap_role` in the org policy",
        ));
    }
    let mut out = Outputs::default();
    let tooling = templates.render(TEMPLATE_BOOTSTRAP_TOOLING, &tooling_context(org, templates))?;
    let t = to_json("tooling.json", &tooling)?;
    check("tooling.json", &t, KIND_TOOLING)?;
    out.insert("tooling.json", canonical("tooling.json", &t)?);
    for extra in &org.org.tooling_accounts {
        let file = extra_tooling_file(&extra.account);
        let text = templates.render(
            TEMPLATE_BOOTSTRAP_TOOLING,
            &extra_tooling_context(org, templates, extra),
        )?;
        let t = to_json(&file, &text)?;
        check(&file, &t, KIND_TOOLING_ACCOUNT)?;
        out.insert(&file, canonical(&file, &t)?);
    }
    let target = templates.render(TEMPLATE_BOOTSTRAP_TARGET, &target_context(org, templates))?;
    let t = to_json("target.json", &target)?;
    check("target.json", &t, "bootstrap-target")?;
    out.insert("target.json", canonical("target.json", &t)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> Outputs {
        let org = crate::org::embedded().expect("org");
        render(&org, Templates::embedded().expect("templates")).expect("renders")
    }

    fn json(o: &Outputs, f: &str) -> Json {
        serde_json::from_str(o.text(f).expect("file")).expect("json")
    }

    #[test]
    fn tooling_stack_has_the_queue_pair_api_and_both_functions() {
        let o = rendered();
        let t = json(&o, "tooling.json");
        let r = &t["Resources"];
        assert_eq!(r["JobQueue"]["Properties"]["FifoQueue"], true);
        assert_eq!(
            r["JobQueue"]["Properties"]["QueueName"],
            "pf-pipeforge-jobs.fifo"
        );
        assert_eq!(
            r["JobQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"],
            MAX_RECEIVES
        );
        assert_eq!(r["DeadLetterQueue"]["Properties"]["FifoQueue"], true);
        assert_eq!(
            r["SourceBucket"]["Properties"]["BucketName"],
            "example-pipeforge-source"
        );
        assert_eq!(
            r["SourceBucket"]["Properties"]["NotificationConfiguration"]["EventBridgeConfiguration"]
                ["EventBridgeEnabled"],
            true
        );
        assert_eq!(
            r["SourceKeyAlias"]["Properties"]["AliasName"],
            "alias/pipeforge-source"
        );
        assert_eq!(r["WorkerJobs"]["Properties"]["BatchSize"], 1);
        let routes: Vec<&str> = r
            .as_object()
            .expect("resources")
            .values()
            .filter(|v| v["Type"] == "AWS::ApiGatewayV2::Route")
            .filter_map(|v| v["Properties"]["RouteKey"].as_str())
            .collect();
        assert_eq!(routes.len(), 4, "{routes:?}");
        assert!(routes.contains(&"GET /jobs/{id}/{capability}"));
    }

    #[test]
    fn the_worker_only_creates_owner_records() {
        let o = rendered();
        let t = json(&o, "tooling.json");
        let statements =
            t["Resources"]["SourceBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
                .as_array()
                .expect("statements")
                .clone();
        let find = |sid: &str| {
            statements
                .iter()
                .find(|s| s["Sid"] == sid)
                .unwrap_or_else(|| panic!("statement {sid}"))
                .clone()
        };
        let put = find("WorkerOnlyCreatesOwnerRecords");
        assert_eq!(put["Effect"], "Deny");
        assert_eq!(put["Action"], "s3:PutObject");
        assert_eq!(put["Condition"]["Null"]["s3:if-none-match"], "true");
        assert_eq!(
            put["Condition"]["ArnEquals"]["aws:PrincipalArn"]["Fn::GetAtt"],
            serde_json::json!(["WorkerRole", "Arn"])
        );
        let delete = find("WorkerNeverDeletesOwnerRecords");
        assert_eq!(delete["Effect"], "Deny");
        assert_eq!(delete["Action"], "s3:DeleteObject");
        for s in [&put, &delete] {
            assert_eq!(
                s["Resource"]["Fn::Sub"],
                "${SourceBucket.Arn}/pipelines/*/owner.json"
            );
        }
    }

    #[test]
    fn target_stack_creates_the_org_policies_the_target_stacks_reference() {
        let o = rendered();
        let t = json(&o, "target.json");
        let r = &t["Resources"];
        assert_eq!(
            r["BootstrapRole"]["Properties"]["RoleName"],
            "pipeforge-bootstrap"
        );
        assert_eq!(
            r["AppDeployPolicy"]["Properties"]["ManagedPolicyName"],
            "pipeforge-app-deploy"
        );
        assert_eq!(
            r["AppBoundary"]["Properties"]["ManagedPolicyName"],
            "pipeforge-app-boundary"
        );
        let trust = r["BootstrapRole"]["Properties"]["AssumeRolePolicyDocument"].to_string();
        assert!(trust.contains("role/pf-pipeforge-worker"), "{trust}");
    }

    #[test]
    fn policies_given_as_arns_are_referenced_not_created() {
        let text = crate::assets::get("examples/org.yaml").expect("embedded");
        let edited = text
            .replace(
                "execution_policy_arns: [pipeforge-app-deploy]",
                "execution_policy_arns: [\"arn:aws:iam::aws:policy/PowerUserAccess\"]",
            )
            .replace("kms_key: alias/pipeforge-source", "kms_key: \"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\"");
        assert_ne!(edited, text);
        let org = crate::org::load(&SourceFile::new("org.yaml", edited)).expect("org");
        let o = render(&org, Templates::embedded().expect("templates")).expect("renders");
        let t = json(&o, "target.json");
        assert!(t["Resources"].get("AppDeployPolicy").is_none());
        assert!(
            t.to_string()
                .contains("arn:aws:iam::aws:policy/PowerUserAccess")
        );
        let tooling = json(&o, "tooling.json");
        assert!(tooling["Resources"].get("SourceKey").is_none());
        assert!(
            tooling
                .to_string()
                .contains("key/1234abcd-12ab-34cd-56ef-1234567890ab")
        );
    }

    #[test]
    fn an_allow_of_everything_fails_the_check() {
        let t: Json = serde_json::json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": format!("{JSON_HEADER}: x"),
            "Metadata": {"pipeforge": {"stack": "bootstrap-target"}},
            "Resources": {"P": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}}}}
        });
        let e = check("t.json", &t, "bootstrap-target").expect_err("too broad");
        assert!(e.to_string().contains("on every resource"), "{e}");
    }
}
