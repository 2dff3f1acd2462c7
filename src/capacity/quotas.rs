//! The account quotas a pipeline's resources count against: the one table of them, each with
//! its AWS default, how far it can be raised, where pipeforge reads its usage and value, and
//! the AWS page that documents it.
//!
//! Per-stack quotas (resources per stack, policy sizes, ...) are in [`crate::quota`]; these are
//! the per-account (or per-account-and-region) ones, which a deploy checks against the live
//! account before it changes anything ([`super::fit`]).

use serde::Serialize;

/// A kind of resource the stacks create, as the account quotas count them (serialized as its
/// [`Resource::key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `AWS::IAM::Role`.
    IamRole,
    /// `AWS::IAM::ManagedPolicy` (customer managed policies).
    IamPolicy,
    /// A CloudFormation stack itself.
    Stack,
    /// `AWS::CodePipeline::Pipeline`.
    Pipeline,
    /// `AWS::CodeBuild::Project`.
    BuildProject,
    /// `AWS::CodeBuild::ReportGroup`.
    ReportGroup,
    /// `AWS::Logs::LogGroup`.
    LogGroup,
    /// `AWS::S3::Bucket`.
    Bucket,
    /// `AWS::KMS::Key`.
    KmsKey,
    /// `AWS::SNS::Topic`.
    Topic,
    /// `AWS::Events::Rule` (on the default event bus).
    EventRule,
    /// `AWS::CodeStarNotifications::NotificationRule`.
    NotificationRule,
}

impl Resource {
    /// Every kind, in display order.
    pub const ALL: [Resource; 12] = [
        Resource::IamRole,
        Resource::IamPolicy,
        Resource::Stack,
        Resource::Pipeline,
        Resource::BuildProject,
        Resource::ReportGroup,
        Resource::LogGroup,
        Resource::Bucket,
        Resource::KmsKey,
        Resource::Topic,
        Resource::EventRule,
        Resource::NotificationRule,
    ];

    /// The kind of a CloudFormation resource type, if the account quotas count it.
    pub fn of_type(cfn_type: &str) -> Option<Resource> {
        Some(match cfn_type {
            "AWS::IAM::Role" => Resource::IamRole,
            "AWS::IAM::ManagedPolicy" => Resource::IamPolicy,
            "AWS::CodePipeline::Pipeline" => Resource::Pipeline,
            "AWS::CodeBuild::Project" => Resource::BuildProject,
            "AWS::CodeBuild::ReportGroup" => Resource::ReportGroup,
            "AWS::Logs::LogGroup" => Resource::LogGroup,
            "AWS::S3::Bucket" => Resource::Bucket,
            "AWS::KMS::Key" => Resource::KmsKey,
            "AWS::SNS::Topic" => Resource::Topic,
            "AWS::Events::Rule" => Resource::EventRule,
            "AWS::CodeStarNotifications::NotificationRule" => Resource::NotificationRule,
            _ => return None,
        })
    }

    /// `roles`, `projects`, ...: the short plural used in tables and JSON.
    pub fn key(self) -> &'static str {
        match self {
            Resource::IamRole => "iam-roles",
            Resource::IamPolicy => "iam-policies",
            Resource::Stack => "stacks",
            Resource::Pipeline => "pipelines",
            Resource::BuildProject => "build-projects",
            Resource::ReportGroup => "report-groups",
            Resource::LogGroup => "log-groups",
            Resource::Bucket => "buckets",
            Resource::KmsKey => "kms-keys",
            Resource::Topic => "sns-topics",
            Resource::EventRule => "event-rules",
            Resource::NotificationRule => "notification-rules",
        }
    }

    /// `IAM roles`, ...: the plural in sentences.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::IamRole => "IAM roles",
            Resource::IamPolicy => "customer managed IAM policies",
            Resource::Stack => "CloudFormation stacks",
            Resource::Pipeline => "pipelines",
            Resource::BuildProject => "CodeBuild projects",
            Resource::ReportGroup => "CodeBuild report groups",
            Resource::LogGroup => "log groups",
            Resource::Bucket => "S3 buckets",
            Resource::KmsKey => "KMS keys",
            Resource::Topic => "SNS topics",
            Resource::EventRule => "EventBridge rules",
            Resource::NotificationRule => "notification rules",
        }
    }
}

impl Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.key())
    }
}

/// Whether a quota counts per account or per account and region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The whole account (IAM is global; S3 bucket and notification rule quotas are per account).
    Account,
    /// Each region of the account.
    Region,
}

/// Where a deploy reads how much of a quota is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    /// A key of IAM `GetAccountSummary`.
    IamSummary(&'static str),
    /// Counted from a list call (the API action named here), every page.
    Count(&'static str),
    /// Not read: the reason (it cannot bind before a quota that is read).
    NotRead(&'static str),
}

/// Where a deploy reads a quota's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// A key of IAM `GetAccountSummary`.
    IamSummary(&'static str),
    /// Service Quotas `GetServiceQuota` (service code, quota code); the default when the
    /// account has no applied value.
    ServiceQuota(&'static str, &'static str),
    /// Not reported by any API: the documented default, or the org's `capacity.quotas` value.
    Documented,
}

/// One account quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AccountQuota {
    /// Stable id (`iam-roles`, ...); the keys of the org's `capacity.quotas`.
    pub id: &'static str,
    /// What it counts.
    pub resource: Resource,
    /// AWS's name for it.
    pub name: &'static str,
    /// Per account, or per account and region.
    pub scope: Scope,
    /// AWS's default value.
    pub default: u64,
    /// The highest value AWS grants on request, when it documents one (`None`: not
    /// adjustable, or no documented maximum).
    pub raisable_to: Option<u64>,
    /// Where its usage is read.
    pub usage: Usage,
    /// Where its value is read.
    pub limit: Limit,
    /// The AWS documentation page it comes from.
    pub source: &'static str,
}

impl AccountQuota {
    /// True when a deploy reads this quota (its usage can be read).
    pub fn checked(&self) -> bool {
        !matches!(self.usage, Usage::NotRead(_))
    }
}

/// Every account quota a pipeline's resources count against, in the order they bind for
/// pipeforge's own stacks (IAM roles first). The `id`s of the checked ones are
/// [`crate::org::QUOTA_IDS`].
pub const QUOTAS: [AccountQuota; 11] = [
    AccountQuota {
        id: "iam-roles",
        resource: Resource::IamRole,
        name: "Roles per account",
        scope: Scope::Account,
        default: 1_000,
        raisable_to: Some(5_000),
        usage: Usage::IamSummary("Roles"),
        limit: Limit::IamSummary("RolesQuota"),
        source: "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html",
    },
    AccountQuota {
        id: "iam-policies",
        resource: Resource::IamPolicy,
        name: "Customer managed policies per account",
        scope: Scope::Account,
        default: 1_500,
        raisable_to: Some(5_000),
        usage: Usage::IamSummary("Policies"),
        limit: Limit::IamSummary("PoliciesQuota"),
        source: "https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html",
    },
    AccountQuota {
        id: "codepipeline-pipelines",
        resource: Resource::Pipeline,
        name: "Maximum number of pipelines per Region in an AWS account",
        scope: Scope::Region,
        default: 1_000,
        raisable_to: None,
        usage: Usage::Count("codepipeline:ListPipelines"),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/limits.html",
    },
    AccountQuota {
        id: "cloudformation-stacks",
        resource: Resource::Stack,
        name: "Stack count",
        scope: Scope::Region,
        default: 2_000,
        raisable_to: None,
        usage: Usage::Count("cloudformation:ListStacks"),
        limit: Limit::ServiceQuota("cloudformation", "L-0485CB21"),
        source: "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html",
    },
    AccountQuota {
        id: "codebuild-projects",
        resource: Resource::BuildProject,
        name: "Build projects per Region",
        scope: Scope::Region,
        default: 5_000,
        raisable_to: None,
        usage: Usage::Count("codebuild:ListProjects"),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/limits.html",
    },
    AccountQuota {
        id: "s3-buckets",
        resource: Resource::Bucket,
        name: "General purpose buckets",
        scope: Scope::Account,
        default: 10_000,
        raisable_to: Some(1_000_000),
        usage: Usage::Count("s3:ListAllMyBuckets"),
        limit: Limit::ServiceQuota("s3", "L-DC2B2D3D"),
        source: "https://docs.aws.amazon.com/AmazonS3/latest/userguide/BucketRestrictions.html",
    },
    AccountQuota {
        id: "notification-rules",
        resource: Resource::NotificationRule,
        name: "Maximum number of notification rules in an AWS account",
        scope: Scope::Account,
        default: 1_000,
        raisable_to: None,
        usage: Usage::NotRead(
            "one per pipeline, like the pipelines quota of the same value; IAM roles bind first",
        ),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/dtconsole/latest/userguide/limits.html",
    },
    AccountQuota {
        id: "eventbridge-rules",
        resource: Resource::EventRule,
        name: "Rules per event bus",
        scope: Scope::Region,
        default: 300,
        raisable_to: None,
        usage: Usage::NotRead(
            "pipeforge's stacks create none: pipeforge starts each pipeline after its source upload",
        ),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html",
    },
    AccountQuota {
        id: "kms-keys",
        resource: Resource::KmsKey,
        name: "Customer managed keys",
        scope: Scope::Region,
        default: 100_000,
        raisable_to: None,
        usage: Usage::NotRead("one per pipeline and region; IAM roles bind long before"),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/kms/latest/developerguide/resource-limits.html",
    },
    AccountQuota {
        id: "sns-topics",
        resource: Resource::Topic,
        name: "Topics",
        scope: Scope::Region,
        default: 100_000,
        raisable_to: None,
        usage: Usage::NotRead("one per pipeline; IAM roles bind long before"),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/general/latest/gr/sns.html",
    },
    AccountQuota {
        id: "log-groups",
        resource: Resource::LogGroup,
        name: "Log groups",
        scope: Scope::Region,
        default: 1_000_000,
        raisable_to: None,
        usage: Usage::NotRead("one per gate; IAM roles bind long before"),
        limit: Limit::Documented,
        source: "https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html",
    },
];

/// The quota of `id`.
pub fn quota(id: &str) -> Option<&'static AccountQuota> {
    QUOTAS.iter().find(|q| q.id == id)
}

/// The quota that counts `resource`, if any.
pub fn quota_of(resource: Resource) -> Option<&'static AccountQuota> {
    QUOTAS.iter().find(|q| q.resource == resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_quotas_are_the_ids_the_org_policy_accepts() {
        let checked: Vec<&str> = QUOTAS
            .iter()
            .filter(|q| q.checked())
            .map(|q| q.id)
            .collect();
        let mut want = crate::org::QUOTA_IDS.to_vec();
        let mut got = checked.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn every_quota_is_sourced_once_and_raisable_above_its_default() {
        for (i, q) in QUOTAS.iter().enumerate() {
            assert!(
                q.source.starts_with("https://docs.aws.amazon.com/"),
                "{}",
                q.id
            );
            assert!(
                QUOTAS[..i]
                    .iter()
                    .all(|o| o.id != q.id && o.resource != q.resource),
                "{} twice",
                q.id
            );
            assert!(q.raisable_to.is_none_or(|m| m > q.default), "{}", q.id);
            if matches!(q.limit, Limit::IamSummary(_)) {
                assert!(matches!(q.usage, Usage::IamSummary(_)), "{}", q.id);
            }
        }
        assert_eq!(
            Resource::of_type("AWS::IAM::Role")
                .and_then(quota_of)
                .map(|q| q.id),
            Some("iam-roles")
        );
        assert_eq!(Resource::of_type("AWS::IAM::Policy"), None);
    }
}
