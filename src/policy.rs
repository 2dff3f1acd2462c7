//! The organisation's rules for generated stacks, checked as data on the parsed templates before
//! anything is written.
//!
//! Each rule is a plain function over the rendered CloudFormation JSON (and the plan, for facts
//! such as which environments are production); [`RULES`] lists them with an id and a one-line
//! description. The checks run on every render, so a template edited by a platform engineer (an
//! override in `--templates DIR`) cannot weaken what the rules guarantee: every bucket encrypted
//! with the pipeline's own key and closed to the public, no `*` principal, no `*` action (nor
//! `service:*` on every resource), an approval before every production deploy, every taggable
//! resource tagged, CodeBuild projects encrypted and unprivileged unless they build images.
//!
//! Why Rust and not CloudFormation Guard rule files: see ARCHITECTURE.md ("Policy rules").

use crate::render::tree::Node;

use crate::error::{Error, Result};
use crate::manifest::ArtifactKind;
use crate::org::{OrgPolicy, Stage};
use crate::plan::{Plan, StackKind};

/// A rendered stack, parsed, with what it is.
#[derive(Clone, Debug)]
pub struct StackDoc<'a> {
    /// File in the bundle.
    pub file: &'a str,
    /// What the stack is for.
    pub kind: StackKind,
    /// The template.
    pub template: &'a Node<'a>,
    /// Its resources (logical id, type, properties), found once for every rule.
    resources: Vec<(&'a str, &'a str, &'a Node<'a>)>,
    /// Its policy documents, found once for the rules that read them.
    policy_docs: Vec<PolicyDoc<'a>>,
}

impl<'a> StackDoc<'a> {
    /// A stack for the rules to read.
    pub fn new(file: &'a str, kind: StackKind, template: &'a Node<'a>) -> Self {
        StackDoc {
            file,
            kind,
            template,
            resources: resources(template).collect(),
            policy_docs: policy_docs(template),
        }
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Rule id.
    pub rule: &'static str,
    /// File in the bundle.
    pub file: String,
    /// Logical id of the resource (or `Outputs`, ...).
    pub resource: String,
    /// What is wrong.
    pub message: String,
}

/// What the rules may consult besides the template.
pub struct Facts<'a> {
    /// The plan the stacks were rendered from.
    pub plan: &'a Plan,
    /// The org policy.
    pub org: &'a OrgPolicy,
}

/// A rule: an id, what it guarantees, and its check.
pub struct Rule {
    /// Stable id, used in messages and tests.
    pub id: &'static str,
    /// What the rule guarantees.
    pub description: &'static str,
    check: fn(&StackDoc<'_>, &Facts<'_>, &mut Vec<Violation>),
}

/// Every rule, in the order they are reported.
pub static RULES: &[Rule] = &[
    Rule {
        id: "bucket-encrypted-with-pipeline-key",
        description: "every S3 bucket uses SSE-KMS with the KMS key of its own stack",
        check: bucket_encrypted,
    },
    Rule {
        id: "bucket-private",
        description: "every S3 bucket blocks public access, is versioned and only accepts TLS and SSE-KMS uploads",
        check: bucket_private,
    },
    Rule {
        id: "kms-rotation",
        description: "every KMS key rotates",
        check: kms_rotation,
    },
    Rule {
        id: "no-wildcard-principal",
        description: "no policy allows the `*` principal or uses `NotPrincipal` in an Allow",
        check: no_wildcard_principal,
    },
    Rule {
        id: "no-wildcard-action",
        description: "no policy allows `*`, `NotAction`, or `service:*` on every resource",
        check: no_wildcard_action,
    },
    Rule {
        id: "cross-account-trust-pinned",
        description: "a role that trusts another account names the exact principal (`aws:PrincipalArn`)",
        check: cross_account_trust_pinned,
    },
    Rule {
        id: "policy-charset",
        description: "IAM policy documents only contain the characters IAM accepts",
        check: policy_charset,
    },
    Rule {
        id: "approval-before-production",
        description: "a manual approval with a notification topic precedes every change to a production environment (production by its name or by its account)",
        check: approval_before_production,
    },
    Rule {
        id: "resources-tagged",
        description: "every taggable resource carries `team`, `pipeline` and the manifest's tags",
        check: resources_tagged,
    },
    Rule {
        id: "codebuild-locked-down",
        description: "CodeBuild projects are encrypted with the pipeline key, log to CloudWatch, and are privileged only to build images for ECR",
        check: codebuild_locked_down,
    },
    Rule {
        id: "encrypted-at-rest",
        description: "pipeline artifact stores, SNS topics and log groups are encrypted with KMS; log groups expire",
        check: encrypted_at_rest,
    },
    Rule {
        id: "no-default-admin",
        description: "no role gets AdministratorAccess unless the org policy lists it explicitly",
        check: no_default_admin,
    },
];

/// Resource types that accept tags, and whether as a `{key: value}` map (else `[{Key, Value}]`).
pub const TAGGABLE: &[(&str, bool)] = &[
    ("AWS::CodeBuild::Project", false),
    ("AWS::CodeBuild::ReportGroup", false),
    ("AWS::CodePipeline::Pipeline", false),
    ("AWS::CodeStarNotifications::NotificationRule", true),
    ("AWS::Events::Rule", false),
    ("AWS::IAM::Role", false),
    ("AWS::KMS::Key", false),
    ("AWS::Logs::LogGroup", false),
    ("AWS::S3::Bucket", false),
    ("AWS::SNS::Topic", false),
];

/// Runs every rule on every stack; all violations, in rule order.
pub fn violations(stacks: &[StackDoc<'_>], facts: &Facts<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for rule in RULES {
        for s in stacks {
            (rule.check)(s, facts, &mut out);
        }
    }
    out
}

/// Runs every rule; the first violation (with a count of the others) is the error.
pub fn check(stacks: &[StackDoc<'_>], facts: &Facts<'_>) -> Result<()> {
    let v = violations(stacks, facts);
    let Some(first) = v.first() else {
        return Ok(());
    };
    let more = if v.len() > 1 {
        format!(" (and {} more violations)", v.len() - 1)
    } else {
        String::new()
    };
    let description = RULES
        .iter()
        .find(|r| r.id == first.rule)
        .map_or("", |r| r.description);
    Err(Error::OutputCheck {
        pipeline: facts.plan.pipeline.name.clone(),
        file: first.file.clone(),
        message: format!(
            "policy rule `{}` is broken by `{}`: {}{more}",
            first.rule, first.resource, first.message
        ),
        help: format!(
            "the rule requires that {description}; fix the stack template (templates/stacks/ or the --templates override)"
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers over the template JSON.

fn resources<'t>(t: &'t Node<'t>) -> impl Iterator<Item = (&'t str, &'t str, &'t Node<'t>)> {
    t.get("Resources")
        .and_then(Node::as_object)
        .into_iter()
        .flatten()
        .map(|(id, r)| {
            (
                id,
                r.get("Type").and_then(Node::as_str).unwrap_or(""),
                r.get("Properties").unwrap_or(&Node::Null),
            )
        })
}

fn push(out: &mut Vec<Violation>, rule: &'static str, s: &StackDoc<'_>, id: &str, message: String) {
    out.push(Violation {
        rule,
        file: s.file.to_owned(),
        resource: id.to_owned(),
        message,
    });
}

/// `v` as a list (a single value becomes a list of one).
fn list<'t>(v: Option<&'t Node<'t>>) -> Vec<&'t Node<'t>> {
    match v {
        None => Vec::new(),
        Some(Node::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
    }
}

/// Logical ids of the stack's KMS keys.
fn keys<'t>(t: &'t Node<'t>) -> Vec<&'t str> {
    resources(t)
        .filter(|(_, ty, _)| *ty == "AWS::KMS::Key")
        .map(|(id, _, _)| id)
        .collect()
}

/// True when `v` is `{"Ref": id}` or `{"Fn::GetAtt": [id, "Arn"]}` for one of `ids`.
fn refers_to_any(v: &Node, ids: &[&str]) -> bool {
    let Some(m) = v.as_object() else {
        return false;
    };
    if let Some(r) = m.get("Ref").and_then(Node::as_str) {
        return ids.contains(&r);
    }
    if let Some(Node::Array(a)) = m.get("Fn::GetAtt") {
        return a.len() == 2
            && a[0].as_str().is_some_and(|r| ids.contains(&r))
            && a[1].as_str() == Some("Arn");
    }
    false
}

/// A policy document in the template.
#[derive(Clone, Debug)]
struct PolicyDoc<'a> {
    resource: &'a str,
    kind: DocKind,
    doc: &'a Node<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DocKind {
    /// Attached to a principal (`AWS::IAM::Policy`, managed policy, role `Policies`).
    Identity,
    /// Attached to a resource (key, bucket, topic policy).
    Resource,
    /// A role trust policy.
    Trust,
}

fn policy_docs<'t>(t: &'t Node<'t>) -> Vec<PolicyDoc<'t>> {
    let mut out = Vec::new();
    for (id, ty, p) in resources(t) {
        let mut add = |kind, doc: Option<&'static str>| {
            if let Some(d) = doc.and_then(|k| p.get(k)) {
                out.push(PolicyDoc {
                    resource: id,
                    kind,
                    doc: d,
                });
            }
        };
        match ty {
            "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => {
                add(DocKind::Identity, Some("PolicyDocument"))
            }
            "AWS::IAM::Role" => {
                add(DocKind::Trust, Some("AssumeRolePolicyDocument"));
                for pol in list(p.get("Policies")) {
                    if let Some(d) = pol.get("PolicyDocument") {
                        out.push(PolicyDoc {
                            resource: id,
                            kind: DocKind::Identity,
                            doc: d,
                        });
                    }
                }
            }
            "AWS::KMS::Key" => add(DocKind::Resource, Some("KeyPolicy")),
            "AWS::S3::BucketPolicy" | "AWS::SNS::TopicPolicy" => {
                add(DocKind::Resource, Some("PolicyDocument"))
            }
            _ => {}
        }
    }
    out
}

fn statements<'t>(doc: &'t Node<'t>) -> Vec<&'t Node<'t>> {
    list(doc.get("Statement"))
}

fn is_allow(st: &Node) -> bool {
    st.get("Effect").and_then(Node::as_str) == Some("Allow")
}

/// The principals of a statement: (`AWS` / `Service` / ..., value); a bare `"*"` has kind `""`.
fn principals<'t>(st: &'t Node<'t>) -> Vec<(&'t str, &'t Node<'t>)> {
    match st.get("Principal") {
        Some(p @ Node::String(_)) => vec![("", p)],
        Some(Node::Object(m)) => m
            .iter()
            .flat_map(|(k, v)| list(Some(v)).into_iter().map(move |x| (k, x)))
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Rules.

fn bucket_encrypted(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    const ID: &str = "bucket-encrypted-with-pipeline-key";
    let keys = keys(s.template);
    for &(id, ty, p) in &s.resources {
        if ty != "AWS::S3::Bucket" {
            continue;
        }
        let rules = list(
            p.get("BucketEncryption")
                .and_then(|e| e.get("ServerSideEncryptionConfiguration")),
        );
        let ok = !rules.is_empty()
            && rules.iter().all(|r| {
                let d = r.get("ServerSideEncryptionByDefault");
                d.and_then(|d| d.get("SSEAlgorithm")).and_then(Node::as_str) == Some("aws:kms")
                    && d.and_then(|d| d.get("KMSMasterKeyID"))
                        .is_some_and(|k| refers_to_any(k, &keys))
            });
        if !ok {
            push(
                out,
                ID,
                s,
                id,
                "the bucket is not encrypted with SSE-KMS using this stack's KMS key".to_owned(),
            );
        }
    }
}

fn bucket_private(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    const ID: &str = "bucket-private";
    for &(id, ty, p) in &s.resources {
        if ty != "AWS::S3::Bucket" {
            continue;
        }
        let pab = p.get("PublicAccessBlockConfiguration");
        let blocked = [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ]
        .iter()
        .all(|k| pab.and_then(|x| x.get(k)) == Some(&Node::Bool(true)));
        if !blocked {
            push(
                out,
                ID,
                s,
                id,
                "public access is not fully blocked".to_owned(),
            );
        }
        let versioned = p
            .get("VersioningConfiguration")
            .and_then(|v| v.get("Status"))
            .and_then(Node::as_str)
            == Some("Enabled");
        if !versioned {
            push(out, ID, s, id, "versioning is not enabled".to_owned());
        }
        // The bucket policy of this bucket must deny plain HTTP and unencrypted uploads.
        let policy = s.resources.iter().copied().find(|(_, t, bp)| {
            *t == "AWS::S3::BucketPolicy"
                && bp.get("Bucket").is_some_and(|b| refers_to_any(b, &[id]))
        });
        let denies = |pred: &dyn Fn(&Node) -> bool| {
            policy.is_some_and(|(_, _, bp)| {
                bp.get("PolicyDocument").is_some_and(|d| {
                    statements(d).iter().any(|st| {
                        st.get("Effect").and_then(Node::as_str) == Some("Deny")
                            && st.get("Principal") == Some(&Node::String("*".into()))
                            && pred(st)
                    })
                })
            })
        };
        let tls = denies(&|st| {
            st.get("Condition")
                .and_then(|c| c.get("Bool"))
                .and_then(|b| b.get("aws:SecureTransport"))
                .is_some_and(|v| v == "false" || v == &Node::Bool(false))
                && list(st.get("Action"))
                    .iter()
                    .any(|a| a.as_str() == Some("s3:*"))
        });
        if !tls {
            push(
                out,
                ID,
                s,
                id,
                "no bucket policy denies requests without TLS (`aws:SecureTransport`)".to_owned(),
            );
        }
        let sse = denies(&|st| {
            st.get("Condition")
                .and_then(|c| c.get("StringNotEquals"))
                .and_then(|b| b.get("s3:x-amz-server-side-encryption"))
                .is_some_and(|v| v == "aws:kms")
                && list(st.get("Action"))
                    .iter()
                    .any(|a| a.as_str() == Some("s3:PutObject"))
        });
        if !sse {
            push(
                out,
                ID,
                s,
                id,
                "no bucket policy denies uploads without SSE-KMS".to_owned(),
            );
        }
    }
}

fn kms_rotation(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    for &(id, ty, p) in &s.resources {
        if ty == "AWS::KMS::Key" && p.get("EnableKeyRotation") != Some(&Node::Bool(true)) {
            push(
                out,
                "kms-rotation",
                s,
                id,
                "`EnableKeyRotation` is not `true`".to_owned(),
            );
        }
    }
}

fn no_wildcard_principal(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    for d in &s.policy_docs {
        for st in statements(d.doc) {
            if !is_allow(st) {
                continue;
            }
            if st.get("NotPrincipal").is_some() {
                push(
                    out,
                    "no-wildcard-principal",
                    s,
                    d.resource,
                    "an Allow statement uses `NotPrincipal`".to_owned(),
                );
            }
            if principals(st).iter().any(|(_, p)| p.as_str() == Some("*")) {
                push(
                    out,
                    "no-wildcard-principal",
                    s,
                    d.resource,
                    "an Allow statement grants the `*` principal".to_owned(),
                );
            }
        }
    }
}

fn no_wildcard_action(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    const ID: &str = "no-wildcard-action";
    for d in &s.policy_docs {
        if d.kind == DocKind::Trust {
            continue;
        }
        for st in statements(d.doc) {
            if !is_allow(st) {
                continue;
            }
            if st.get("NotAction").is_some() {
                push(
                    out,
                    ID,
                    s,
                    d.resource,
                    "an Allow statement uses `NotAction`".to_owned(),
                );
            }
            // In a key policy `Resource: "*"` means the key itself, so `kms:*` there is caught
            // by this rule too: key administrators get the administrative actions by name.
            let all_resources = st.get("NotResource").is_some()
                || list(st.get("Resource"))
                    .iter()
                    .any(|r| r.as_str() == Some("*"));
            for a in list(st.get("Action")) {
                let Some(a) = a.as_str() else { continue };
                if a == "*" {
                    push(
                        out,
                        ID,
                        s,
                        d.resource,
                        "an Allow statement grants `*`".to_owned(),
                    );
                } else if a.ends_with(":*") && all_resources {
                    push(
                        out,
                        ID,
                        s,
                        d.resource,
                        format!("an Allow statement grants `{a}` on every resource"),
                    );
                }
            }
        }
    }
}

fn cross_account_trust_pinned(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    for d in &s.policy_docs {
        if d.kind != DocKind::Trust {
            continue;
        }
        for st in statements(d.doc) {
            let trusts_account = principals(st).iter().any(|(k, _)| *k == "AWS");
            if !is_allow(st) || !trusts_account {
                continue;
            }
            let pinned = st
                .get("Condition")
                .and_then(Node::as_object)
                .is_some_and(|c| {
                    c.iter().any(|(op, kv)| {
                        op.starts_with("Arn")
                            && !op.contains("Not")
                            && kv.get("aws:PrincipalArn").is_some()
                    })
                });
            if !pinned {
                push(
                    out,
                    "cross-account-trust-pinned",
                    s,
                    d.resource,
                    "the role trusts an AWS account without an `aws:PrincipalArn` condition"
                        .to_owned(),
                );
            }
        }
    }
}

fn policy_charset(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    fn bad_in(s: &str) -> Option<char> {
        let plain = |b: u8| (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r');
        // Each chunk is tested whole, without stopping at the first other byte, so the test
        // takes many bytes per step; only a text with another byte is read by character.
        if s.as_bytes()
            .chunks(32)
            .all(|c| c.iter().fold(true, |all, &b| all & plain(b)))
        {
            return None;
        }
        s.chars()
            .find(|c| !(matches!(*c, '\t' | '\n' | '\r') || ('\u{20}'..='\u{ff}').contains(c)))
    }
    fn bad_char(v: &Node) -> Option<char> {
        match v {
            Node::String(x) => bad_in(x),
            Node::Array(a) => a.iter().find_map(bad_char),
            Node::Object(m) => m
                .iter()
                .find_map(|(k, v)| bad_in(k).or_else(|| bad_char(v))),
            _ => None,
        }
    }
    for d in &s.policy_docs {
        if let Some(c) = bad_char(d.doc) {
            push(
                out,
                "policy-charset",
                s,
                d.resource,
                format!(
                    "the policy contains {c:?}; IAM accepts only tab, line breaks and U+0020 to U+00FF"
                ),
            );
        }
    }
}

fn approval_before_production(s: &StackDoc<'_>, f: &Facts<'_>, out: &mut Vec<Violation>) {
    const ID: &str = "approval-before-production";
    if s.kind != StackKind::Pipeline {
        return;
    }
    let plan = f.plan;
    // Production as the org decides it, not only as the plan says: by name or by account.
    let prod_roles: Vec<String> = plan
        .environments
        .iter()
        .filter(|e| {
            e.production || f.org.is_production(&e.name) || f.org.is_production_account(&e.account)
        })
        .filter_map(|e| {
            plan.names
                .environment(&e.name)
                .map(|n| format!(":{}:role/{}", e.account, n.deploy_role))
        })
        .collect();
    let mut pipelines = 0;
    for &(id, ty, p) in &s.resources {
        if ty != "AWS::CodePipeline::Pipeline" {
            continue;
        }
        pipelines += 1;
        let mut deployed_prod = vec![false; prod_roles.len()];
        for stage in list(p.get("Stages")) {
            let sname = stage.get("Name").and_then(Node::as_str).unwrap_or("?");
            let actions = list(stage.get("Actions"));
            let approvals: Vec<i64> = actions
                .iter()
                .filter(|a| {
                    let t = a.get("ActionTypeId");
                    t.and_then(|t| t.get("Category")).and_then(Node::as_str) == Some("Approval")
                        && a.get("Configuration")
                            .and_then(|c| c.get("NotificationArn"))
                            .is_some()
                })
                .map(|a| a.get("RunOrder").and_then(Node::as_i64).unwrap_or(1))
                .collect();
            for a in &actions {
                let t = a.get("ActionTypeId");
                if t.and_then(|t| t.get("Category")).and_then(Node::as_str) != Some("Deploy") {
                    continue;
                }
                let mode = a
                    .get("Configuration")
                    .and_then(|c| c.get("ActionMode"))
                    .and_then(Node::as_str)
                    .unwrap_or("");
                let role = a.get("RoleArn").map(Node::to_string).unwrap_or_default();
                for (i, pr) in prod_roles.iter().enumerate() {
                    if !role.contains(pr.as_str()) {
                        continue;
                    }
                    // Creating a change set changes nothing; everything else does.
                    if mode == "CHANGE_SET_REPLACE" {
                        continue;
                    }
                    deployed_prod[i] = true;
                    let order = a.get("RunOrder").and_then(Node::as_i64).unwrap_or(1);
                    if !approvals.iter().any(|o| *o < order) {
                        let aname = a.get("Name").and_then(Node::as_str).unwrap_or("?");
                        push(
                            out,
                            ID,
                            s,
                            id,
                            format!(
                                "action `{sname}.{aname}` changes a production environment without a manual approval (with a notification topic) before it in its stage"
                            ),
                        );
                    }
                }
            }
        }
        for (i, done) in deployed_prod.iter().enumerate() {
            if !done {
                push(
                    out,
                    ID,
                    s,
                    id,
                    format!(
                        "no action deploys through the production deploy role `{}`",
                        prod_roles[i].trim_start_matches(':')
                    ),
                );
            }
        }
    }
    if pipelines == 0 {
        push(
            out,
            ID,
            s,
            "Resources",
            "the pipeline stack declares no AWS::CodePipeline::Pipeline".to_owned(),
        );
    }
}

fn resources_tagged(s: &StackDoc<'_>, f: &Facts<'_>, out: &mut Vec<Violation>) {
    let want = &f.plan.pipeline.tags;
    for &(id, ty, p) in &s.resources {
        let Some((_, map_form)) = TAGGABLE.iter().find(|(t, _)| *t == ty) else {
            continue;
        };
        let tags = p.get("Tags");
        let value_of = |key: &str| -> Option<&Node> {
            if *map_form {
                tags.and_then(|t| t.get(key))
            } else {
                list(tags)
                    .into_iter()
                    .find(|t| t.get("Key").and_then(Node::as_str) == Some(key))
                    .and_then(|t| t.get("Value"))
            }
        };
        for (k, v) in want {
            if value_of(k).and_then(Node::as_str) != Some(v.as_str()) {
                push(
                    out,
                    "resources-tagged",
                    s,
                    id,
                    format!(
                        "tag `{k}` is missing or is not {}",
                        crate::yaml::quote_short(v)
                    ),
                );
            }
        }
    }
}

fn codebuild_locked_down(s: &StackDoc<'_>, f: &Facts<'_>, out: &mut Vec<Violation>) {
    const ID: &str = "codebuild-locked-down";
    let keys = keys(s.template);
    let plan = f.plan;
    let image_builders: Vec<&str> = if plan.artifact.kind.value == ArtifactKind::Ecr {
        plan.gates
            .iter()
            .filter(|g| g.stage == Stage::Build)
            .map(|g| g.project.as_str())
            .collect()
    } else {
        Vec::new()
    };
    for &(id, ty, p) in &s.resources {
        if ty != "AWS::CodeBuild::Project" {
            continue;
        }
        if !p
            .get("EncryptionKey")
            .is_some_and(|k| refers_to_any(k, &keys))
        {
            push(
                out,
                ID,
                s,
                id,
                "`EncryptionKey` is not this stack's KMS key".to_owned(),
            );
        }
        let logs = p
            .get("LogsConfig")
            .and_then(|l| l.get("CloudWatchLogs"))
            .and_then(|c| c.get("Status"))
            .and_then(Node::as_str);
        if logs != Some("ENABLED") {
            push(out, ID, s, id, "CloudWatch logs are not enabled".to_owned());
        }
        let privileged =
            p.get("Environment").and_then(|e| e.get("PrivilegedMode")) == Some(&Node::Bool(true));
        let name = p.get("Name").and_then(Node::as_str).unwrap_or("");
        if privileged && !image_builders.contains(&name) {
            push(
                out,
                ID,
                s,
                id,
                "the project runs privileged although it does not build an image for ECR"
                    .to_owned(),
            );
        }
    }
}

fn encrypted_at_rest(s: &StackDoc<'_>, _: &Facts<'_>, out: &mut Vec<Violation>) {
    const ID: &str = "encrypted-at-rest";
    for &(id, ty, p) in &s.resources {
        match ty {
            "AWS::CodePipeline::Pipeline" => {
                let mut stores: Vec<&Node> = list(p.get("ArtifactStore"));
                stores.extend(
                    list(p.get("ArtifactStores"))
                        .into_iter()
                        .filter_map(|x| x.get("ArtifactStore")),
                );
                if stores.is_empty()
                    || stores.iter().any(|st| {
                        st.get("EncryptionKey")
                            .and_then(|k| k.get("Type"))
                            .and_then(Node::as_str)
                            != Some("KMS")
                    })
                {
                    push(
                        out,
                        ID,
                        s,
                        id,
                        "an artifact store is not encrypted with a KMS key".to_owned(),
                    );
                }
            }
            "AWS::SNS::Topic" if p.get("KmsMasterKeyId").is_none() => push(
                out,
                ID,
                s,
                id,
                "the topic is not encrypted with KMS".to_owned(),
            ),
            "AWS::Logs::LogGroup" => {
                if p.get("KmsKeyId").is_none() {
                    push(
                        out,
                        ID,
                        s,
                        id,
                        "the log group is not encrypted with KMS".to_owned(),
                    );
                }
                if p.get("RetentionInDays").is_none() {
                    push(out, ID, s, id, "the log group never expires".to_owned());
                }
            }
            _ => {}
        }
    }
}

fn no_default_admin(s: &StackDoc<'_>, f: &Facts<'_>, out: &mut Vec<Violation>) {
    let allowed = &f.org.org.deploy.execution_policy_arns;
    for &(id, ty, p) in &s.resources {
        if ty != "AWS::IAM::Role" {
            continue;
        }
        for arn in list(p.get("ManagedPolicyArns")) {
            let text = arn.to_string();
            let admin = text.contains(":iam::aws:policy/AdministratorAccess\"");
            if admin
                && !allowed
                    .iter()
                    .any(|a| a.ends_with(":iam::aws:policy/AdministratorAccess"))
            {
                push(
                    out,
                    "no-default-admin",
                    s,
                    id,
                    "the role gets AdministratorAccess, which the org policy does not list"
                        .to_owned(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;
    use crate::outputs::Outputs;
    use serde_json::Value as Json;

    const MANIFEST: &str = r#"
version: 1
name: rules-app
team: rules
language: python
artifact: {kind: ecr}
deploy: {template: infra/app.yml}
environments:
  - {name: dev, account: "111111111111"}
  - {name: prod, account: "222222222222", region: eu-west-1}
tags: {owner: platform}
"#;

    struct Case {
        plan: Plan,
        org: OrgPolicy,
        outputs: Outputs,
    }

    fn case() -> Case {
        let org = crate::org::embedded().expect("org");
        let catalog = crate::catalog::Catalog::embedded().expect("catalog");
        let templates = crate::render::Templates::embedded().expect("templates");
        let file = SourceFile::new("pipeline.yml", MANIFEST);
        let b = crate::generate_with(&file, &org, catalog, templates).expect("renders");
        Case {
            plan: b.plan,
            org,
            outputs: b.outputs,
        }
    }

    /// The rule ids that fire after `mutate` changes the stack `file`.
    fn fired(file: &str, mutate: impl FnOnce(&mut Json)) -> Vec<&'static str> {
        let c = case();
        let mut stacks: Vec<(String, StackKind, Json)> = c
            .plan
            .stacks
            .iter()
            .map(|s| {
                let text = c.outputs.text(&s.file).expect("stack file");
                (
                    s.file.clone(),
                    s.kind,
                    serde_json::from_str(text).expect("json"),
                )
            })
            .collect();
        let target = stacks
            .iter_mut()
            .find(|(f, _, _)| f == file)
            .expect("stack to mutate");
        mutate(&mut target.2);
        let trees: Vec<Node<'_>> = stacks.iter().map(|(_, _, t)| Node::from(t)).collect();
        let docs: Vec<StackDoc<'_>> = stacks
            .iter()
            .zip(&trees)
            .map(|((f, k, _), t)| StackDoc::new(f, *k, t))
            .collect();
        let mut ids: Vec<&'static str> = violations(
            &docs,
            &Facts {
                plan: &c.plan,
                org: &c.org,
            },
        )
        .into_iter()
        .map(|v| v.rule)
        .collect();
        ids.dedup();
        ids
    }

    const PIPELINE: &str = "stacks/pipeline.json";
    const PROD: &str = "stacks/target-prod.json";
    const REGION: &str = "stacks/region-eu-west-1.json";

    fn res<'a>(t: &'a mut Json, id: &str) -> &'a mut Json {
        &mut t["Resources"][id]["Properties"]
    }

    fn statements_of(doc: &mut Json) -> &mut Vec<Json> {
        doc["Statement"].as_array_mut().expect("statements")
    }

    #[test]
    fn the_rendered_stacks_pass_every_rule() {
        assert_eq!(fired(PIPELINE, |_| {}), Vec::<&str>::new());
        assert!(RULES.len() >= 12);
    }

    #[test]
    fn bucket_encryption_with_the_pipeline_key() {
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
                ["ServerSideEncryptionByDefault"] = serde_json::json!({"SSEAlgorithm": "AES256"});
        });
        assert_eq!(f, ["bucket-encrypted-with-pipeline-key"]);
        let f = fired(REGION, |t| {
            res(t, "ArtifactBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
                ["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] =
                Json::String("alias/aws/s3".into());
        });
        assert_eq!(f, ["bucket-encrypted-with-pipeline-key"]);
    }

    #[test]
    fn buckets_stay_private_versioned_and_tls_only() {
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactBucket")["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] =
                Json::Bool(false);
        });
        assert_eq!(f, ["bucket-private"]);
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactBucket")["VersioningConfiguration"]["Status"] =
                Json::String("Suspended".into());
        });
        assert_eq!(f, ["bucket-private"]);
        let f = fired(REGION, |t| {
            statements_of(&mut res(t, "ArtifactBucketPolicy")["PolicyDocument"])
                .retain(|s| s["Sid"] != "DenyInsecureTransport");
        });
        assert_eq!(f, ["bucket-private"]);
        let f = fired(PIPELINE, |t| {
            statements_of(&mut res(t, "ArtifactBucketPolicy")["PolicyDocument"])
                .retain(|s| s["Sid"] != "DenyUnencryptedUploads");
        });
        assert_eq!(f, ["bucket-private"]);
    }

    #[test]
    fn keys_rotate() {
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactKey")["EnableKeyRotation"] = Json::Bool(false);
        });
        assert_eq!(f, ["kms-rotation"]);
    }

    #[test]
    fn no_wildcard_principal() {
        for principal in [serde_json::json!("*"), serde_json::json!({"AWS": ["*"]})] {
            let f = fired(PIPELINE, |t| {
                statements_of(&mut res(t, "ArtifactBucketPolicy")["PolicyDocument"]).push(
                    serde_json::json!({"Effect": "Allow", "Principal": principal, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}),
                );
            });
            assert_eq!(f, ["no-wildcard-principal"]);
        }
        let f = fired(PIPELINE, |t| {
            statements_of(&mut res(t, "ArtifactKey")["KeyPolicy"]).push(serde_json::json!(
                {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::1:root"}, "Action": "kms:Decrypt", "Resource": "*"}
            ));
        });
        assert_eq!(f, ["no-wildcard-principal"]);
    }

    #[test]
    fn no_wildcard_action() {
        for (action, resource) in [("*", "arn:aws:s3:::b"), ("s3:*", "*"), ("kms:*", "*")] {
            let f = fired(PIPELINE, |t| {
                statements_of(&mut res(t, "PipelinePolicy")["PolicyDocument"]).push(
                    serde_json::json!({"Effect": "Allow", "Action": action, "Resource": resource}),
                );
            });
            assert_eq!(f, ["no-wildcard-action"], "{action} on {resource}");
        }
        let f = fired(PROD, |t| {
            statements_of(&mut res(t, "DeployPolicy")["PolicyDocument"]).push(
                serde_json::json!({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}),
            );
        });
        assert_eq!(f, ["no-wildcard-action"]);
        // A service wildcard on one named resource is allowed; so is a Deny with `s3:*`.
        let f = fired(PIPELINE, |t| {
            statements_of(&mut res(t, "PipelinePolicy")["PolicyDocument"]).push(
                serde_json::json!({"Effect": "Allow", "Action": "logs:*", "Resource": "arn:aws:logs:us-east-1:1:log-group:x"}),
            );
        });
        assert_eq!(f, Vec::<&str>::new());
    }

    #[test]
    fn cross_account_trust_names_the_pipeline_role() {
        let f = fired(PROD, |t| {
            let st = &mut res(t, "DeployRole")["AssumeRolePolicyDocument"]["Statement"][0];
            st.as_object_mut().expect("statement").remove("Condition");
        });
        assert_eq!(f, ["cross-account-trust-pinned"]);
    }

    #[test]
    fn a_negated_condition_does_not_pin_a_trust() {
        // `ArnNotEquals` on the principal lets every role of the account but the pipeline's in.
        for op in ["ArnNotEquals", "ArnNotLike"] {
            let f = fired(PROD, |t| {
                let cond = &mut res(t, "DeployRole")["AssumeRolePolicyDocument"]["Statement"][0]["Condition"];
                let pin = cond
                    .as_object_mut()
                    .expect("condition")
                    .remove("ArnEquals")
                    .expect("the trust is pinned with ArnEquals");
                cond[op] = pin;
            });
            assert_eq!(f, ["cross-account-trust-pinned"], "{op}");
        }
        // A condition on another key does not pin it either.
        let f = fired(PROD, |t| {
            let cond =
                &mut res(t, "DeployRole")["AssumeRolePolicyDocument"]["Statement"][0]["Condition"];
            let pin = cond
                .as_object_mut()
                .expect("condition")
                .remove("ArnEquals")
                .expect("pinned");
            cond["ArnEquals"] = serde_json::json!({"aws:SourceArn": pin["aws:PrincipalArn"]});
        });
        assert_eq!(f, ["cross-account-trust-pinned"]);
    }

    #[test]
    fn a_service_wildcard_with_not_resource_is_every_resource() {
        let f = fired(PIPELINE, |t| {
            statements_of(&mut res(t, "PipelinePolicy")["PolicyDocument"]).push(
                serde_json::json!({"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::b"}),
            );
        });
        assert_eq!(f, ["no-wildcard-action"]);
        // The same statement as a Deny is a restriction, not a grant.
        let f = fired(PIPELINE, |t| {
            statements_of(&mut res(t, "PipelinePolicy")["PolicyDocument"]).push(
                serde_json::json!({"Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::b"}),
            );
        });
        assert_eq!(f, Vec::<&str>::new());
    }

    #[test]
    fn an_approval_in_parallel_with_the_production_deploy_is_not_before_it() {
        let run_orders = |t: &mut Json, approve: i64| {
            let stages = res(t, "Pipeline")["Stages"].as_array_mut().expect("stages");
            let s = stages
                .iter_mut()
                .find(|s| s["Name"] == "Deploy-prod")
                .expect("prod stage");
            let actions = s["Actions"].as_array_mut().expect("actions");
            let exec = actions
                .iter()
                .find(|x| x["Name"] == "ExecuteChangeSet")
                .and_then(|x| x["RunOrder"].as_i64())
                .expect("execute action");
            for x in actions.iter_mut() {
                if x["Name"] == "Approve" {
                    x["RunOrder"] = Json::from(exec + approve);
                }
            }
        };
        // Same run order as the execution: both start together.
        assert_eq!(
            fired(PIPELINE, |t| run_orders(t, 0)),
            ["approval-before-production"]
        );
        // One before it: the rendered order, accepted.
        assert_eq!(fired(PIPELINE, |t| run_orders(t, -1)), Vec::<&str>::new());
    }

    #[test]
    fn policies_use_characters_iam_accepts() {
        let f = fired(PIPELINE, |t| {
            res(t, "PipelinePolicy")["PolicyDocument"]["Statement"][0]["Sid"] =
                Json::String("Read\u{2713}".into());
        });
        assert_eq!(f, ["policy-charset"]);
    }

    #[test]
    fn latin_1_passes_and_only_the_character_iam_refuses_is_named() {
        let sid = |t: &mut Json, s: &str| {
            res(t, "PipelinePolicy")["PolicyDocument"]["Statement"][0]["Sid"] =
                Json::String(s.into());
        };
        // Beyond ASCII but within U+00FF, with tab and line breaks: IAM accepts all of it.
        for ok in ["Caf\u{e9}", "\u{ff}\t\r\nx\u{7f}", "\u{a0}"] {
            assert_eq!(
                fired(PIPELINE, |t| sid(t, ok)),
                Vec::<&str>::new(),
                "{ok:?}"
            );
        }
        // A control character, or one past U+00FF after accepted ones, is named in the message.
        let long = format!("{}\u{1b}{}", "x".repeat(45), "y".repeat(20));
        for (bad, c) in [
            ("Read\u{7}", '\u{7}'),
            ("Caf\u{e9}\u{100}", '\u{100}'),
            (long.as_str(), '\u{1b}'),
        ] {
            let c_ = case();
            let mut t: Json =
                serde_json::from_str(c_.outputs.text(PIPELINE).expect("stack")).expect("json");
            sid(&mut t, bad);
            let tree = Node::from(&t);
            let doc = StackDoc::new(PIPELINE, StackKind::Pipeline, &tree);
            let mut out = Vec::new();
            policy_charset(
                &doc,
                &Facts {
                    plan: &c_.plan,
                    org: &c_.org,
                },
                &mut out,
            );
            assert_eq!(out.len(), 1, "{bad:?}");
            assert!(
                out[0].message.contains(&format!("{c:?}")),
                "{}",
                out[0].message
            );
        }
    }

    #[test]
    fn approval_precedes_production() {
        let prod_stage = |t: &mut Json| -> Vec<Json> {
            let stages = res(t, "Pipeline")["Stages"].as_array_mut().expect("stages");
            let s = stages
                .iter_mut()
                .find(|s| s["Name"] == "Deploy-prod")
                .expect("prod stage");
            s["Actions"].as_array().expect("actions").clone()
        };
        let set_prod = |t: &mut Json, actions: Vec<Json>| {
            let stages = res(t, "Pipeline")["Stages"].as_array_mut().expect("stages");
            let s = stages
                .iter_mut()
                .find(|s| s["Name"] == "Deploy-prod")
                .expect("prod stage");
            s["Actions"] = Json::Array(actions);
        };
        // No approval.
        let f = fired(PIPELINE, |t| {
            let mut a = prod_stage(t);
            a.retain(|x| x["Name"] != "Approve");
            set_prod(t, a);
        });
        assert_eq!(f, ["approval-before-production"]);
        // Approval after the execution.
        let f = fired(PIPELINE, |t| {
            let mut a = prod_stage(t);
            for x in &mut a {
                if x["Name"] == "Approve" {
                    x["RunOrder"] = Json::from(9);
                }
            }
            set_prod(t, a);
        });
        assert_eq!(f, ["approval-before-production"]);
        // Approval nobody hears about.
        let f = fired(PIPELINE, |t| {
            let mut a = prod_stage(t);
            for x in &mut a {
                if x["Name"] == "Approve" {
                    x["Configuration"]
                        .as_object_mut()
                        .expect("config")
                        .remove("NotificationArn");
                }
            }
            set_prod(t, a);
        });
        assert_eq!(f, ["approval-before-production"]);
    }

    #[test]
    fn approval_precedes_every_deploy_to_a_production_account_whatever_its_name() {
        let org = crate::org::embedded().expect("org");
        let catalog = crate::catalog::Catalog::embedded().expect("catalog");
        let templates = crate::render::Templates::embedded().expect("templates");
        let manifest = MANIFEST.replace(
            "  - {name: prod, account: \"222222222222\", region: eu-west-1}",
            "  - {name: live, account: \"333333333333\", region: eu-west-1}",
        );
        let file = SourceFile::new("pipeline.yml", manifest);
        let b = crate::generate_with(&file, &org, catalog, templates).expect("renders");
        let mut plan = b.plan;
        let mut pipeline: Json = serde_json::from_str(
            b.outputs
                .text("stacks/pipeline.json")
                .expect("pipeline stack"),
        )
        .expect("json");
        let stages = pipeline["Resources"]["Pipeline"]["Properties"]["Stages"]
            .as_array_mut()
            .expect("stages");
        let live = stages
            .iter_mut()
            .find(|s| s["Name"] == "Deploy-live")
            .expect("live stage");
        let before = live["Actions"].as_array().expect("actions").len();
        live["Actions"]
            .as_array_mut()
            .expect("actions")
            .retain(|a| a["Name"] != "Approve");
        assert_eq!(before, 3, "the plan has an approval for `live`");
        // Even with the plan's own flag cleared, the rule asks the org: the account is
        // production.
        for e in &mut plan.environments {
            e.production = false;
        }
        let tree = Node::from(&pipeline);
        let docs = [StackDoc::new(
            "stacks/pipeline.json",
            StackKind::Pipeline,
            &tree,
        )];
        let fired: Vec<&str> = violations(
            &docs,
            &Facts {
                plan: &plan,
                org: &org,
            },
        )
        .into_iter()
        .map(|v| v.rule)
        .collect();
        assert_eq!(fired, ["approval-before-production"]);
    }

    #[test]
    fn the_plans_own_production_flag_counts_too() {
        // `dev` is production for neither the org's names nor its accounts; a plan that marks it
        // production (whatever the reason) still needs an approval before it is changed.
        let mut c = case();
        let pipeline: Json = serde_json::from_str(
            c.outputs
                .text("stacks/pipeline.json")
                .expect("pipeline stack"),
        )
        .expect("json");
        let dev = c
            .plan
            .environments
            .iter_mut()
            .find(|e| e.name == "dev")
            .expect("dev");
        assert!(!c.org.is_production(&dev.name) && !c.org.is_production_account(&dev.account));
        dev.production = true;
        let tree = Node::from(&pipeline);
        let docs = [StackDoc::new(PIPELINE, StackKind::Pipeline, &tree)];
        let v = violations(
            &docs,
            &Facts {
                plan: &c.plan,
                org: &c.org,
            },
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, "approval-before-production");
        assert!(v[0].message.contains("Deploy-dev"), "{}", v[0].message);
    }

    #[test]
    fn taggable_resources_carry_the_tags() {
        let f = fired(PIPELINE, |t| {
            let tags = res(t, "PipelineRole")["Tags"].as_array_mut().expect("tags");
            tags.retain(|x| x["Key"] != "team");
        });
        assert_eq!(f, ["resources-tagged"]);
        let f = fired(PROD, |t| {
            res(t, "ExecutionRole")["Tags"] = serde_json::json!([]);
        });
        assert_eq!(f, ["resources-tagged"]);
        let f = fired(PIPELINE, |t| {
            res(t, "PipelineNotifications")["Tags"]["owner"] = Json::String("someone".into());
        });
        assert_eq!(f, ["resources-tagged"]);
    }

    #[test]
    fn codebuild_projects_are_encrypted_logged_and_unprivileged() {
        let f = fired(PIPELINE, |t| {
            res(t, "GateLintProject")["Environment"]["PrivilegedMode"] = Json::Bool(true);
        });
        assert_eq!(f, ["codebuild-locked-down"]);
        // The image builder may be privileged (the manifest publishes to ECR).
        let f = fired(PIPELINE, |t| {
            res(t, "GateBuildProject")["Environment"]["PrivilegedMode"] = Json::Bool(true);
        });
        assert_eq!(f, Vec::<&str>::new());
        let f = fired(PIPELINE, |t| {
            res(t, "GateTestProject")
                .as_object_mut()
                .expect("props")
                .remove("EncryptionKey");
        });
        assert_eq!(f, ["codebuild-locked-down"]);
        let f = fired(PIPELINE, |t| {
            res(t, "GateTestProject")["LogsConfig"]["CloudWatchLogs"]["Status"] =
                Json::String("DISABLED".into());
        });
        assert_eq!(f, ["codebuild-locked-down"]);
    }

    #[test]
    fn artifact_stores_topics_and_logs_are_encrypted() {
        let f = fired(PIPELINE, |t| {
            res(t, "Pipeline")["ArtifactStores"][1]["ArtifactStore"]
                .as_object_mut()
                .expect("store")
                .remove("EncryptionKey");
        });
        assert_eq!(f, ["encrypted-at-rest"]);
        let f = fired(PIPELINE, |t| {
            res(t, "NotificationTopic")
                .as_object_mut()
                .expect("props")
                .remove("KmsMasterKeyId");
        });
        assert_eq!(f, ["encrypted-at-rest"]);
        let f = fired(PIPELINE, |t| {
            res(t, "GateLintLogs")
                .as_object_mut()
                .expect("props")
                .remove("RetentionInDays");
        });
        assert_eq!(f, ["encrypted-at-rest"]);
    }

    #[test]
    fn no_administrator_access_unless_the_org_lists_it() {
        let f = fired(PROD, |t| {
            res(t, "ExecutionRole")["ManagedPolicyArns"] =
                serde_json::json!(["arn:aws:iam::aws:policy/AdministratorAccess"]);
        });
        assert_eq!(f, ["no-default-admin"]);
    }

    #[test]
    fn the_error_names_the_rule_the_resource_and_how_many_more() {
        let c = case();
        let mut t: Json =
            serde_json::from_str(c.outputs.text(PIPELINE).expect("file")).expect("json");
        res(&mut t, "ArtifactKey")["EnableKeyRotation"] = Json::Bool(false);
        res(&mut t, "GateLintProject")["Environment"]["PrivilegedMode"] = Json::Bool(true);
        let tree = Node::from(&t);
        let docs = [StackDoc::new(PIPELINE, StackKind::Pipeline, &tree)];
        let e = check(
            &docs,
            &Facts {
                plan: &c.plan,
                org: &c.org,
            },
        )
        .expect_err("two violations");
        let text = e.to_string();
        assert!(text.contains("`kms-rotation`"), "{text}");
        assert!(text.contains("`ArtifactKey`"), "{text}");
        assert!(text.contains("and 1 more"), "{text}");
        assert!(
            text.contains("help: the rule requires that every KMS key rotates"),
            "{text}"
        );
    }

    /// The statement of the pipeline bucket's policy with `sid`.
    fn bucket_statement<'a>(t: &'a mut Json, sid: &str) -> &'a mut Json {
        statements_of(&mut res(t, "ArtifactBucketPolicy")["PolicyDocument"])
            .iter_mut()
            .find(|s| s["Sid"] == sid)
            .expect("statement")
    }

    #[test]
    fn only_a_deny_to_everyone_of_the_right_requests_keeps_a_bucket_private() {
        let tls = "DenyInsecureTransport";
        let sse = "DenyUnencryptedUploads";
        type Change = fn(&mut Json);
        let cases: [(&str, Change); 9] = [
            (tls, |st| st["Effect"] = "Allow".into()),
            (tls, |st| {
                st["Principal"] = serde_json::json!({"AWS": "arn:aws:iam::1:root"})
            }),
            (tls, |st| st["Action"] = "s3:GetObject".into()),
            (tls, |st| {
                st["Condition"]["Bool"]["aws:SecureTransport"] = "true".into()
            }),
            (
                tls,
                |st| st["Condition"] = serde_json::json!({"Bool": {"aws:ViaAWSService": "false"}}),
            ),
            (sse, |st| st["Effect"] = "Allow".into()),
            (sse, |st| st["Action"] = "s3:GetObject".into()),
            (sse, |st| {
                st["Condition"]["StringNotEquals"]["s3:x-amz-server-side-encryption"] =
                    "AES256".into();
            }),
            (
                sse,
                |st| st["Condition"] = serde_json::json!({"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}),
            ),
        ];
        for (i, (sid, change)) in cases.into_iter().enumerate() {
            let f = fired(PIPELINE, |t| change(bucket_statement(t, sid)));
            // (An Allow to everyone breaks `no-wildcard-principal` as well.)
            assert_eq!(
                f.first(),
                Some(&"bucket-private"),
                "case {i} of {sid}: {f:?}"
            );
        }
        // The boolean `false` and a list of actions count as well.
        let f = fired(PIPELINE, |t| {
            let st = bucket_statement(t, tls);
            st["Condition"]["Bool"]["aws:SecureTransport"] = Json::Bool(false);
            st["Action"] = serde_json::json!(["s3:GetObject", "s3:*"]);
        });
        assert_eq!(f, Vec::<&str>::new());
        // A policy of another bucket does not count for this one.
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactBucketPolicy")["Bucket"] = serde_json::json!({"Ref": "OtherBucket"});
        });
        assert_eq!(f, ["bucket-private"]);
    }

    #[test]
    fn a_bucket_without_encryption_rules_is_not_encrypted() {
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactBucket")
                .as_object_mut()
                .expect("props")
                .remove("BucketEncryption");
        });
        assert_eq!(f, ["bucket-encrypted-with-pipeline-key"]);
        let f = fired(PIPELINE, |t| {
            res(t, "ArtifactBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"] =
                serde_json::json!([]);
        });
        assert_eq!(f, ["bucket-encrypted-with-pipeline-key"]);
    }

    #[test]
    fn a_pipeline_without_artifact_stores_or_a_log_group_without_a_key_is_unencrypted() {
        let f = fired(PIPELINE, |t| {
            let p = res(t, "Pipeline").as_object_mut().expect("props");
            p.remove("ArtifactStores");
            p.remove("ArtifactStore");
        });
        assert_eq!(f, ["encrypted-at-rest"]);
        let f = fired(PIPELINE, |t| {
            res(t, "GateLintLogs")
                .as_object_mut()
                .expect("props")
                .remove("KmsKeyId");
        });
        assert_eq!(f, ["encrypted-at-rest"]);
    }

    #[test]
    fn only_this_stacks_own_key_counts_as_the_pipeline_key() {
        // The key by `Ref` (its id) or by its `Arn`: accepted.
        for key in [
            serde_json::json!({"Ref": "ArtifactKey"}),
            serde_json::json!({"Fn::GetAtt": ["ArtifactKey", "Arn"]}),
        ] {
            let f = fired(PIPELINE, |t| {
                res(t, "ArtifactBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    [0]["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] = key.clone();
                res(t, "GateTestProject")["EncryptionKey"] = key.clone();
            });
            assert_eq!(f, Vec::<&str>::new(), "{key}");
        }
        // Another resource's ARN, another attribute of the key, a malformed `Fn::GetAtt` or a
        // reference to something that is not a key: not the pipeline key.
        for key in [
            serde_json::json!({"Fn::GetAtt": ["PipelineRole", "Arn"]}),
            serde_json::json!({"Fn::GetAtt": ["ArtifactKey", "KeyId"]}),
            serde_json::json!({"Fn::GetAtt": ["ArtifactKey"]}),
            serde_json::json!({"Fn::GetAtt": "ArtifactKey.Arn"}),
            serde_json::json!({"Ref": "ArtifactBucket"}),
        ] {
            let f = fired(PIPELINE, |t| {
                res(t, "ArtifactBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    [0]["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] = key.clone();
            });
            assert_eq!(f, ["bucket-encrypted-with-pipeline-key"], "{key}");
            let f = fired(PIPELINE, |t| {
                res(t, "GateTestProject")["EncryptionKey"] = key.clone();
            });
            assert_eq!(f, ["codebuild-locked-down"], "{key}");
        }
    }

    #[test]
    fn a_single_violation_mentions_no_others() {
        let c = case();
        let mut t: Json =
            serde_json::from_str(c.outputs.text(PIPELINE).expect("file")).expect("json");
        res(&mut t, "ArtifactKey")["EnableKeyRotation"] = Json::Bool(false);
        let tree = Node::from(&t);
        let docs = [StackDoc::new(PIPELINE, StackKind::Pipeline, &tree)];
        let facts = Facts {
            plan: &c.plan,
            org: &c.org,
        };
        let text = check(&docs, &facts).expect_err("one violation").to_string();
        assert!(text.contains("`EnableKeyRotation` is not `true`"), "{text}");
        assert!(!text.contains("more violations"), "{text}");
    }
}
