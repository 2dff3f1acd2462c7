//! `pipeforge doctor`: a read-only check, with real credentials, that the org's bootstrap is in
//! place — in the tooling account the source bucket and key, the CloudFormation execution role
//! and the roles boundary, the webhook and worker roles, the CodeStar Notifications
//! service-linked role; in each target account the bootstrap role (by assuming it), its
//! execution role, the deploy roles' boundary and the org's application policies.
//!
//! Only `Get`/`Head`/`Describe` calls and `sts:AssumeRole`; nothing is created or changed.

use serde::Serialize;

use crate::aws::{AwsContext, AwsFailure, partition};
use crate::error::{Error, Result};
use crate::names::InstallNames;
use crate::org::OrgPolicy;

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
    let s3 = aws.s3(&conf, region);
    let bucket = &o.source.bucket;
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
    let kms = aws.kms(&conf, region);
    let key = &o.source.kms_key;
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
    let conf = match aws
        .account(account, region, &names.bootstrap_role, "pipeforge-doctor")
        .await
    {
        Ok(c) => {
            acc.push(
                format!("bootstrap role `{}`", names.bootstrap_role),
                Verdict::Ok,
                "assumed".to_owned(),
                "",
            );
            c
        }
        Err(e) => {
            acc.push(
                format!("bootstrap role `{}`", names.bootstrap_role),
                Verdict::Missing,
                e.to_string(),
                help,
            );
            return acc.checks;
        }
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
    let mut checks = tooling(aws, org, &names).await;
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
}
