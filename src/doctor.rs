//! `pipeforge doctor`: a read-only check, with real credentials, that the org's bootstrap is in
//! place — in the tooling account the source bucket and key, the CloudFormation execution role
//! and the roles boundary, the webhook and worker roles, the CodeStar Notifications
//! service-linked role; in each other tooling account (`tooling_accounts`, through the
//! bootstrap role there) its source bucket and key, execution role, boundary and the bootstrap
//! role's deploy policy; in every tooling account the capacity headroom (each quota a deploy
//! reads, and the org's `capacity`); in each target account the bootstrap role (by assuming
//! it), its execution role, the deploy roles' boundary and the org's application policies.
//! Every finding names its account.
//!
//! Only `Get`/`Head`/`Describe` calls and `sts:AssumeRole`; nothing is created or changed.

use serde::Serialize;

use crate::aws::{AwsContext, AwsFailure, partition};
use crate::capacity::fit::Need;
use crate::capacity::quotas::QUOTAS;
use crate::deploy::capacity::QuotaReader;
use crate::error::{Error, Result};
use crate::names::InstallNames;
use crate::org::{OrgPolicy, ToolingAccount};

/// How one item fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// In place.
    Ok,
    /// Missing or wrong: the bootstrap is incomplete.
    Missing,
    /// Worth knowing, not a fault.
    Note,
}

/// One checked item.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The account.
    pub account: String,
    /// What was checked (`role pf-pipeforge-cfn-exec`).
    pub item: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do, when not ok.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub help: String,
}

/// Everything `doctor` found.
#[derive(Clone, Debug, Serialize)]
pub struct DoctorReport {
    /// The caller (ARN).
    pub caller: String,
    /// Every item, tooling account first.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// True when nothing is missing.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Missing)
    }
}

struct Acc<'a> {
    account: &'a str,
    checks: Vec<Check>,
}

/// Assumes the org's bootstrap role in `acc`'s account and records the check; `None` (checked
/// as missing, the error prefixed with `context` and the account) when it cannot be assumed.
async fn assume_bootstrap(
    acc: &mut Acc<'_>,
    aws: &AwsContext,
    names: &InstallNames,
    region: &str,
    help: &str,
    context: &str,
) -> Option<aws_config::SdkConfig> {
    let item = format!("bootstrap role `{}`", names.bootstrap_role);
    match aws
        .account(
            acc.account,
            region,
            &names.bootstrap_role,
            "pipeforge-doctor",
        )
        .await
    {
        Ok(c) => {
            acc.push(item, Verdict::Ok, "assumed".to_owned(), "");
            Some(c)
        }
        Err(e) => {
            let detail = if context.is_empty() {
                e.to_string()
            } else {
                format!("{context}{}: {e}", acc.account)
            };
            acc.push(item, Verdict::Missing, detail, help);
            None
        }
    }
}

impl Acc<'_> {
    fn push(&mut self, item: String, verdict: Verdict, detail: String, help: &str) {
        self.checks.push(Check {
            account: self.account.to_owned(),
            item,
            verdict,
            detail,
            help: if verdict == Verdict::Ok {
                String::new()
            } else {
                help.to_owned()
            },
        });
    }
}

fn failure<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> AwsFailure
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
    aws_sdk_s3::error::SdkError<E, R>: std::error::Error + 'static,
{
    AwsFailure::of(e)
}

/// True when a role's trust policy lets `service` assume it.
fn trusts(document: Option<&str>, service: &str) -> bool {
    let decoded = document.map(percent_decode).unwrap_or_default();
    decoded.contains(service)
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn role(
    acc: &mut Acc<'_>,
    iam: &aws_sdk_iam::Client,
    name: &str,
    service: Option<&str>,
    help: &str,
) {
    let item = format!("role `{name}`");
    match iam.get_role().role_name(name).send().await {
        Ok(out) => {
            let doc = out.role().and_then(|r| r.assume_role_policy_document());
            match service {
                Some(s) if !trusts(doc, s) => acc.push(
                    item,
                    Verdict::Missing,
                    format!("exists, but `{s}` may not assume it"),
                    help,
                ),
                _ => acc.push(item, Verdict::Ok, "exists".to_owned(), help),
            }
        }
        Err(e) => {
            let f = failure(&e);
            acc.push(item, Verdict::Missing, f.text(), help);
        }
    }
}

async fn policy(acc: &mut Acc<'_>, iam: &aws_sdk_iam::Client, arn: &str, help: &str) {
    let item = format!("policy `{arn}`");
    match iam.get_policy().policy_arn(arn).send().await {
        Ok(_) => acc.push(item, Verdict::Ok, "exists".to_owned(), help),
        Err(e) => {
            let f = failure(&e);
            acc.push(item, Verdict::Missing, f.text(), help);
        }
    }
}

fn policy_arn(p: &str, account: &str, reference: &str) -> String {
    if reference.starts_with("arn:") {
        reference.to_owned()
    } else {
        format!("arn:{p}:iam::{account}:policy/{reference}")
    }
}

/// The source bucket (exists, versioned) and its key (enabled) of a tooling account.
async fn source(
    acc: &mut Acc<'_>,
    aws: &AwsContext,
    conf: &aws_config::SdkConfig,
    region: &str,
    (bucket, key): (&str, &str),
    bootstrap_help: &str,
) {
    let s3 = aws.s3(conf, region);
    let item = format!("source bucket `{bucket}`");
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => match s3.get_bucket_versioning().bucket(bucket).send().await {
            Ok(v) if v.status().map(|s| s.as_str()) == Some("Enabled") => {
                acc.push(item, Verdict::Ok, "exists, versioned".to_owned(), "")
            }
            Ok(_) => acc.push(
                item,
                Verdict::Missing,
                "exists, but versioning is off (the S3 source action needs it)".to_owned(),
                bootstrap_help,
            ),
            Err(e) => acc.push(item, Verdict::Missing, failure(&e).text(), bootstrap_help),
        },
        Err(e) => acc.push(item, Verdict::Missing, failure(&e).text(), bootstrap_help),
    }
    let kms = aws.kms(conf, region);
    let item = format!("source key `{key}`");
    match kms.describe_key().key_id(key).send().await {
        Ok(k) if k.key_metadata().is_some_and(|m| m.enabled()) => {
            acc.push(item, Verdict::Ok, "enabled".to_owned(), "")
        }
        Ok(_) => acc.push(
            item,
            Verdict::Missing,
            "exists, but is disabled".to_owned(),
            "enable the key (`aws kms enable-key`)",
        ),
        Err(e) => acc.push(item, Verdict::Missing, failure(&e).text(), bootstrap_help),
    }
}

async fn tooling(aws: &AwsContext, org: &OrgPolicy, names: &InstallNames) -> Vec<Check> {
    let o = &org.org;
    let (account, region) = (o.tooling.account.as_str(), o.tooling.region.as_str());
    let p = partition(region);
    let conf = aws.base().clone();
    let mut acc = Acc {
        account,
        checks: Vec::new(),
    };
    let bootstrap_help = "deploy `tooling.json` from `pipeforge bootstrap` in the tooling account (see README, \"Real AWS\")";
    source(
        &mut acc,
        aws,
        &conf,
        region,
        (&o.source.bucket, &o.source.kms_key),
        bootstrap_help,
    )
    .await;
    let iam = aws.iam(&conf, region);
    role(
        &mut acc,
        &iam,
        &names.tooling_execution_role,
        Some("cloudformation.amazonaws.com"),
        bootstrap_help,
    )
    .await;
    policy(
        &mut acc,
        &iam,
        &format!(
            "arn:{p}:iam::{account}:policy/{}",
            names.tooling_roles_boundary
        ),
        bootstrap_help,
    )
    .await;
    // The functions are optional (teams may deploy from the CLI only).
    for r in [&names.worker, &names.webhook] {
        let item = format!("role `{r}`");
        match iam.get_role().role_name(r).send().await {
            Ok(_) => acc.push(item, Verdict::Ok, "exists".to_owned(), ""),
            Err(e) => acc.push(
                item,
                Verdict::Note,
                format!("{} (the webhook is not installed)", failure(&e).text()),
                "deploys on merge need the functions of `tooling.json`; the CLI works without them",
            ),
        }
    }
    let slr = "AWSServiceRoleForCodeStarNotifications";
    match iam.get_role().role_name(slr).send().await {
        Ok(_) => acc.push(
            format!("service-linked role `{slr}`"),
            Verdict::Ok,
            "exists".to_owned(),
            "",
        ),
        Err(_) => acc.push(
            format!("service-linked role `{slr}`"),
            Verdict::Note,
            "does not exist yet".to_owned(),
            "the first notification rule creates it (the execution role may); or create it once with `aws iam create-service-linked-role --aws-service-name codestar-notifications.amazonaws.com`",
        ),
    }
    acc.checks
}

/// Another tooling account (`tooling_accounts`), through the bootstrap role there: its source
/// bucket and key, the execution role and boundary of the pipeline stacks, and the policy that
/// lets the bootstrap role deploy there (all from its `tooling-<account>.json`).
async fn extra_tooling(aws: &AwsContext, names: &InstallNames, t: &ToolingAccount) -> Vec<Check> {
    let (account, region) = (t.account.as_str(), t.region.as_str());
    let p = partition(region);
    let mut acc = Acc {
        account,
        checks: Vec::new(),
    };
    let file = crate::webhook::bootstrap::extra_tooling_file(account);
    let help = format!(
        "deploy `target.json`, then `{file}`, from `pipeforge bootstrap` in tooling account {account} ({region}) (see README, \"Running at scale\")"
    );
    let Some(conf) =
        assume_bootstrap(&mut acc, aws, names, region, &help, "tooling account ").await
    else {
        return acc.checks;
    };
    source(&mut acc, aws, &conf, region, (&t.bucket, &t.kms_key), &help).await;
    let iam = aws.iam(&conf, region);
    role(
        &mut acc,
        &iam,
        &names.tooling_execution_role,
        Some("cloudformation.amazonaws.com"),
        &help,
    )
    .await;
    for name in [
        &names.tooling_roles_boundary,
        &names.tooling_deployer_policy,
    ] {
        policy(
            &mut acc,
            &iam,
            &format!("arn:{p}:iam::{account}:policy/{name}"),
            &help,
        )
        .await;
    }
    acc.checks
}

/// The capacity headroom of a tooling account: each quota a deploy reads, against its value
/// (a note at or above the org's `capacity.warn_at_percent`, or when full), and its pipelines
/// against its `capacity` in the org policy.
async fn headroom(
    aws: &AwsContext,
    org: &OrgPolicy,
    names: &InstallNames,
    t: &ToolingAccount,
) -> Vec<Check> {
    let mut acc = Acc {
        account: &t.account,
        checks: Vec::new(),
    };
    let warn = org.org.capacity.warn_at_percent;
    let help = crate::capacity::fit::refusal_help(true);
    let mut reader = QuotaReader::new(aws, &names.bootstrap_role, "pipeforge-doctor", org);
    for quota in QUOTAS.iter().filter(|q| q.checked()) {
        let need = Need {
            account: t.account.clone(),
            region: t.region.clone(),
            tooling: true,
            quota,
            more: 0,
        };
        let item = format!("quota `{}`", quota.id);
        match reader.reading(&need).await {
            Ok(r) => {
                let (verdict, detail) = judge_headroom(r.used, r.limit, warn);
                acc.push(item, verdict, format!("{detail} ({})", r.limit_from), &help);
            }
            Err(e) => acc.push(item, Verdict::Missing, e.to_string(), &help),
        }
    }
    if let Some(capacity) = t.capacity {
        let item = "capacity in the org policy".to_owned();
        match crate::deploy::capacity::pipelines_in(
            aws,
            &names.bootstrap_role,
            "pipeforge-doctor",
            &t.account,
            &t.region,
        )
        .await
        {
            Ok(n) => {
                let (verdict, detail) = judge_headroom(n, u64::from(capacity), warn);
                acc.push(item, verdict, format!("{detail} pipelines"), &help);
            }
            Err(e) => acc.push(item, Verdict::Missing, e.to_string(), &help),
        }
    }
    acc.checks
}

/// `used` of `limit`: ok below `warn` percent, a note from there, a note that it is full.
fn judge_headroom(used: u64, limit: u64, warn: i64) -> (Verdict, String) {
    let percent = used.saturating_mul(100).checked_div(limit).unwrap_or(100);
    let text = format!("holds {used} of {limit} ({percent}%)");
    if used >= limit {
        (
            Verdict::Note,
            format!("{text}: full, a deploy that adds to it is refused"),
        )
    } else if i64::try_from(percent).unwrap_or(i64::MAX) >= warn {
        (Verdict::Note, format!("{text}: at or above {warn}%"))
    } else {
        (Verdict::Ok, text)
    }
}

async fn target(
    aws: &AwsContext,
    org: &OrgPolicy,
    names: &InstallNames,
    account: &str,
) -> Vec<Check> {
    let o = &org.org;
    let region = o.tooling.region.as_str();
    let p = partition(region);
    let mut acc = Acc {
        account,
        checks: Vec::new(),
    };
    let help = "deploy `target.json` from `pipeforge bootstrap` in this account (see README, \"Real AWS\")";
    let Some(conf) = assume_bootstrap(&mut acc, aws, names, region, help, "").await else {
        return acc.checks;
    };
    let iam = aws.iam(&conf, region);
    role(
        &mut acc,
        &iam,
        &names.target_execution_role,
        Some("cloudformation.amazonaws.com"),
        help,
    )
    .await;
    policy(
        &mut acc,
        &iam,
        &format!(
            "arn:{p}:iam::{account}:policy/{}",
            names.target_roles_boundary
        ),
        help,
    )
    .await;
    // Optional: `pipeforge recover` only (target.json creates them with `AdditionalTrustedRoleArn`).
    let recover_help = "`pipeforge recover` needs it: deploy `target.json` with `AdditionalTrustedRoleArn` set to the platform engineers' role";
    match iam
        .get_role()
        .role_name(&names.recovery_execution_role)
        .send()
        .await
    {
        Ok(out)
            if trusts(
                out.role().and_then(|r| r.assume_role_policy_document()),
                "cloudformation.amazonaws.com",
            ) =>
        {
            acc.push(
                format!("role `{}`", names.recovery_execution_role),
                Verdict::Ok,
                "exists".to_owned(),
                "",
            )
        }
        Ok(_) => acc.push(
            format!("role `{}`", names.recovery_execution_role),
            Verdict::Missing,
            "exists, but `cloudformation.amazonaws.com` may not assume it".to_owned(),
            recover_help,
        ),
        Err(e) => acc.push(
            format!("role `{}`", names.recovery_execution_role),
            Verdict::Note,
            failure(&e).text(),
            recover_help,
        ),
    }
    let d = &o.deploy;
    for r in d
        .execution_policy_arns
        .iter()
        .chain(d.permissions_boundary.iter())
    {
        if r.contains(":iam::aws:policy/") {
            continue; // AWS managed: always there
        }
        policy(&mut acc, &iam, &policy_arn(p, account, r), help).await;
    }
    acc.checks
}

/// Checks the org's bootstrap in the tooling account and in `accounts` (target accounts).
pub async fn doctor(
    aws: &AwsContext,
    org: &OrgPolicy,
    accounts: &[String],
) -> Result<DoctorReport> {
    let o = &org.org;
    let caller = aws.caller(&o.tooling.region).await?.clone();
    if caller.account != o.tooling.account {
        return Err(Error::other(
            format!(
                "the credentials belong to account {}, not the tooling account {}",
                caller.account, o.tooling.account
            ),
            "run `pipeforge doctor` with credentials of the tooling account (`AWS_PROFILE`)",
        ));
    }
    let names = InstallNames::new(&o.naming.prefix, &o.deploy.bootstrap_role);
    // Per account, in order: the home tooling account, the others, the target accounts.
    let mut checks = tooling(aws, org, &names).await;
    checks.extend(headroom(aws, org, &names, &org.home()).await);
    for t in &o.tooling_accounts {
        let found = extra_tooling(aws, &names, t).await;
        let reached = found.first().is_some_and(|c| c.verdict == Verdict::Ok);
        checks.extend(found);
        if reached {
            checks.extend(headroom(aws, org, &names, t).await);
        }
    }
    for a in accounts {
        checks.extend(target(aws, org, &names, a).await);
    }
    Ok(DoctorReport {
        caller: caller.arn,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_documents_are_url_decoded() {
        let doc =
            "%7B%22Principal%22%3A%7B%22Service%22%3A%22cloudformation.amazonaws.com%22%7D%7D";
        assert!(trusts(Some(doc), "cloudformation.amazonaws.com"));
        assert!(!trusts(Some(doc), "lambda.amazonaws.com"));
        assert!(!trusts(None, "lambda.amazonaws.com"));
        assert_eq!(policy_arn("aws", "1", "p"), "arn:aws:iam::1:policy/p");
        assert_eq!(
            policy_arn("aws", "1", "arn:aws:iam::2:policy/q"),
            "arn:aws:iam::2:policy/q"
        );
    }

    #[test]
    fn headroom_is_ok_below_the_threshold_then_a_note() {
        assert_eq!(judge_headroom(10, 1000, 80).0, Verdict::Ok);
        let (v, text) = judge_headroom(800, 1000, 80);
        assert_eq!(v, Verdict::Note);
        assert!(
            text.contains("holds 800 of 1000 (80%): at or above 80%"),
            "{text}"
        );
        let (v, text) = judge_headroom(1000, 1000, 80);
        assert_eq!(v, Verdict::Note);
        assert!(text.contains("full"), "{text}");
        assert_eq!(judge_headroom(0, 0, 80).0, Verdict::Note);
    }
}
