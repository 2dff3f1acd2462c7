//! The resource side of access: KMS key policies, S3 bucket policies and SNS topic policies of
//! the rendered stacks, evaluated with the same evaluator as the identity side.
//!
//! How AWS combines the two sides, as implemented by [`ResourcePolicies::decide`]:
//!
//! - **KMS**: the key policy must allow the principal, always. A statement naming the
//!   principal's account (`arn:…:root`) delegates to the account's IAM policies, which the
//!   identity check covers; a `Deny` in the key policy denies
//!   (<https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html>,
//!   <https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-modifying-external-accounts.html>).
//! - **S3 and SNS**: within the resource's account an identity policy is enough and the
//!   resource policy only matters by its `Deny`s; another account's principal, or a service
//!   principal, needs an `Allow` of the resource policy as well
//!   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic-cross-account.html>).
//!
//! Every request reaches the resource policy over TLS (`aws:SecureTransport` is `true`: the
//! SDKs, CodePipeline, CodeBuild and CloudFormation use HTTPS). Service principals' needs are
//! rows of [`SERVICE_RULES`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::eval::{Context, Decision, Policy, Request, ResourceDecision, Who, evaluate_resource};
use super::handlers::Requirement;
use super::resolve::Template;
use super::runtime::Rule;

/// What service principals need from the resource policies of pipeforge's stacks.
pub const SERVICE_RULES: &[Rule] = &[
    Rule {
        role: "CloudWatch Logs (`logs.<region>.amazonaws.com`), in the key policy",
        actions: &[
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:ReEncryptFrom",
            "kms:GenerateDataKey",
            "kms:DescribeKey",
        ],
        resource: "the `KmsKeyId` of every log group, with the log group's ARN as `kms:EncryptionContext:aws:logs:arn`",
        source: "https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html",
    },
    Rule {
        role: "CodeStar Notifications (`codestar-notifications.amazonaws.com`)",
        actions: &["sns:Publish", "kms:GenerateDataKey", "kms:Decrypt"],
        resource: "every SNS target of a notification rule (topic policy, `aws:SourceAccount`) and the topic's key (key policy, `kms:ViaService` SNS)",
        source: "https://docs.aws.amazon.com/dtconsole/latest/userguide/set-up-sns.html",
    },
];

/// The service whose rules decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Kms,
    S3,
    Sns,
}

#[derive(Clone, Debug)]
struct Entry {
    service: Service,
    account: String,
    policy: Policy,
}

/// The resource policies of a set of templates, by the ARN of the resource they protect.
#[derive(Clone, Debug, Default)]
pub struct ResourcePolicies {
    by_arn: BTreeMap<String, Entry>,
}

impl ResourcePolicies {
    /// Adds the key, bucket and topic policies of `tpl` (the stack `stack`).
    pub fn add(&mut self, tpl: &Template<'_>, stack: &str) -> Result<(), String> {
        for (id, res) in tpl.resources() {
            let (service, arns, doc) = match res["Type"].as_str().unwrap_or_default() {
                "AWS::KMS::Key" => (
                    Service::Kms,
                    tpl.arn_of(id).into_iter().collect(),
                    &res["Properties"]["KeyPolicy"],
                ),
                "AWS::S3::BucketPolicy" => (
                    Service::S3,
                    tpl.resolve(&res["Properties"]["Bucket"])
                        .and_then(|b| {
                            b.as_str()
                                .map(|b| format!("arn:{}:s3:::{b}", tpl.env.partition))
                        })
                        .into_iter()
                        .collect(),
                    &res["Properties"]["PolicyDocument"],
                ),
                "AWS::SNS::TopicPolicy" => (
                    Service::Sns,
                    tpl.resolve(&res["Properties"]["Topics"])
                        .and_then(|t| t.as_array().cloned())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect::<Vec<_>>(),
                    &res["Properties"]["PolicyDocument"],
                ),
                _ => continue,
            };
            let doc = tpl.resolve(doc).unwrap_or(Json::Null);
            let what = match service {
                Service::Kms => "key policy",
                Service::S3 => "bucket policy",
                Service::Sns => "topic policy",
            };
            let policy = Policy::parse(&format!("{what} `{id}` of `{stack}`"), &doc)?;
            for arn in arns {
                self.by_arn.insert(
                    arn,
                    Entry {
                        service,
                        account: tpl.env.account.clone(),
                        policy: policy.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    fn entry(&self, resource: &str) -> Option<&Entry> {
        if let Some(rest) = resource.split_once(":s3:::").map(|(_, r)| r) {
            let bucket = rest.split('/').next().unwrap_or_default();
            let arn = &resource[..resource.len() - rest.len()];
            return self
                .by_arn
                .get(&format!("{arn}{bucket}"))
                .filter(|e| e.service == Service::S3);
        }
        self.by_arn.get(resource)
    }

    /// The resource side of a request by `who`: `None` when no known resource policy protects
    /// the resource (an org's own key, a service's resource), else whether it lets the request
    /// through, and the policy's name.
    pub fn decide(&self, who: &Who, request: &Request) -> Option<(Decision, String)> {
        let e = self.entry(&request.resource)?;
        let mut req = request.clone();
        req.context = req.context.with("aws:SecureTransport", "true");
        let r = evaluate_resource(&e.policy, who, &req);
        let own_account = who.account() == Some(e.account.as_str());
        let d = match r {
            ResourceDecision::ExplicitDeny(s) => Decision::ExplicitDeny(s),
            ResourceDecision::Allow(_) => Decision::Allow,
            ResourceDecision::ImplicitDeny if e.service != Service::Kms && own_account => {
                Decision::Allow
            }
            ResourceDecision::ImplicitDeny => Decision::ImplicitDeny,
        };
        Some((d, e.policy.name.clone()))
    }

    /// The policies known, by resource ARN, for the tests' mutations.
    pub fn policies_mut(&mut self) -> impl Iterator<Item = (&String, &mut Policy)> {
        self.by_arn.iter_mut().map(|(k, e)| (k, &mut e.policy))
    }
}

fn props(tpl: &Template<'_>, id: &str) -> Json {
    tpl.json
        .pointer(&format!("/Resources/{id}/Properties"))
        .and_then(|p| tpl.resolve(p))
        .unwrap_or(Json::Null)
}

fn need(action: &str, resource: &str, context: Context, why: &str) -> Requirement {
    Requirement {
        request: Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context,
        },
        why: why.to_owned(),
    }
}

/// What service principals need from the resource policies of `tpl` ([`SERVICE_RULES`]).
pub fn service_needs(tpl: &Template<'_>, stack: &str) -> Vec<(Who, Requirement)> {
    let mut out = Vec::new();
    let (r, a) = (&tpl.env.region, &tpl.env.account);
    let resources = tpl.resources();
    for (id, res) in &resources {
        match res["Type"].as_str().unwrap_or_default() {
            "AWS::Logs::LogGroup" => {
                let p = props(tpl, id);
                let (Some(key), Some(group)) = (p["KmsKeyId"].as_str(), tpl.arn_of(id)) else {
                    continue;
                };
                let ctx = Context::knowing(&["kms:"])
                    .with("kms:EncryptionContext:aws:logs:arn", group.as_str());
                let who = Who::Service(format!("logs.{r}.amazonaws.com"));
                for action in SERVICE_RULES[0].actions {
                    out.push((
                        who.clone(),
                        need(
                            action,
                            key,
                            ctx.clone(),
                            &format!("{stack}: log group `{id}`"),
                        ),
                    ));
                }
            }
            "AWS::CodeStarNotifications::NotificationRule" => {
                let p = props(tpl, id);
                let who = Who::Service("codestar-notifications.amazonaws.com".to_owned());
                let why = format!("{stack}: notification rule `{id}`");
                for t in p["Targets"].as_array().into_iter().flatten() {
                    let Some(topic) = t["TargetAddress"].as_str() else {
                        continue;
                    };
                    out.push((
                        who.clone(),
                        need(
                            "sns:Publish",
                            topic,
                            Context::knowing(&["aws:Source"]).with("aws:SourceAccount", a.as_str()),
                            &why,
                        ),
                    ));
                    let key = resources
                        .iter()
                        .find(|(tid, tr)| {
                            tr["Type"] == "AWS::SNS::Topic"
                                && tpl.arn_of(tid).as_deref() == Some(topic)
                        })
                        .and_then(|(tid, _)| {
                            props(tpl, tid)["KmsMasterKeyId"]
                                .as_str()
                                .map(str::to_owned)
                        });
                    if let Some(key) = key {
                        let ctx = Context::knowing(&["kms:"])
                            .with("kms:ViaService", format!("sns.{r}.amazonaws.com"));
                        for action in ["kms:GenerateDataKey", "kms:Decrypt"] {
                            out.push((who.clone(), need(action, &key, ctx.clone(), &why)));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The aliases of every key of `tpl`: key ARN → alias names (`kms:ResourceAliases`).
pub fn key_aliases(tpl: &Template<'_>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, res) in tpl.resources() {
        if res["Type"] != "AWS::KMS::Alias" {
            continue;
        }
        let mut refs = BTreeSet::new();
        tpl.references(&res["Properties"]["TargetKeyId"], &mut refs);
        let Some(key) = refs.iter().find_map(|k| tpl.arn_of(k)) else {
            continue;
        };
        if let Some(alias) = tpl.prop_str(id, "AliasName") {
            out.entry(key).or_default().insert(alias);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::resolve::Env;
    use serde_json::json;

    fn req(action: &str, resource: &str) -> Request {
        Request {
            action: action.to_owned(),
            resource: resource.to_owned(),
            context: Context::default(),
        }
    }

    #[test]
    fn kms_needs_the_key_policy_s3_only_across_accounts() {
        let j = json!({"Resources": {
            "Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Statement": [
                {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
                 "Action": "kms:*", "Resource": "*",
                 "Condition": {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::111111111111:role/in"}}}]}}},
            "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "b"}},
            "Policy": {"Type": "AWS::S3::BucketPolicy", "Properties": {"Bucket": {"Ref": "Bucket"},
                "PolicyDocument": {"Statement": [
                    {"Sid": "Reader", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
                     "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}}}
        }});
        let tpl = Template::new(&j, Env::new("111111111111", "us-east-1"));
        let mut index = ResourcePolicies::default();
        index.add(&tpl, "s").expect("policies");
        let key = tpl.arn_of("Key").expect("key");
        let inside = Who::role("arn:aws:iam::111111111111:role/in");
        let other = Who::role("arn:aws:iam::111111111111:role/other");
        let reader = Who::role("arn:aws:iam::222222222222:role/r");
        let stranger = Who::role("arn:aws:iam::333333333333:role/r");
        let d = |who: &Who, r: &Request| index.decide(who, r).map(|(d, _)| d);
        assert_eq!(d(&inside, &req("kms:Decrypt", &key)), Some(Decision::Allow));
        // Same account, but the key policy does not let it use the key.
        assert_eq!(
            d(&other, &req("kms:Decrypt", &key)),
            Some(Decision::ImplicitDeny)
        );
        // S3 within the account: the identity policy decides.
        assert_eq!(
            d(&other, &req("s3:PutObject", "arn:aws:s3:::b/x")),
            Some(Decision::Allow)
        );
        assert_eq!(
            d(&reader, &req("s3:GetObject", "arn:aws:s3:::b/x")),
            Some(Decision::Allow)
        );
        assert_eq!(
            d(&stranger, &req("s3:GetObject", "arn:aws:s3:::b/x")),
            Some(Decision::ImplicitDeny)
        );
        // Resources without a known policy are not decided here.
        assert_eq!(
            d(&inside, &req("s3:GetObject", "arn:aws:s3:::other/x")),
            None
        );
    }
}
