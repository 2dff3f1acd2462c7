//! AWS quotas, checked before anything is written or deployed.
//!
//! Two passes: [`check_plan`] on the plan (stages and actions per stage, action configuration
//! sizes; run by [`crate::render::render`] before any file is rendered) and [`check_stack`] /
//! [`check_buildspec`] on every rendered file (inline buildspec size, IAM policy sizes, KMS key
//! policy size, resources per stack, template size). Each failure is an [`Error::Quota`] naming
//! the limit, what crosses it and by how much, and what to do. Where CodePipeline allows it, the
//! plan splits instead of failing (more than 50 gates in a stage become several stages; see
//! [`crate::plan::ACTIONS_PER_STAGE`]). This module only checks: the names it measures
//! (artifacts, parameter overrides) come from the plan and the renderer.
//!
//! Policy sizes are computed the way IAM counts them (JSON without white space) after replacing
//! CloudFormation intrinsics by their value where it is known (pseudo parameters) and by a
//! 128-character stand-in where it is not (`Ref`/`GetAtt` of resources), so the estimate errs on
//! the side of failing early.

use std::collections::{BTreeMap, BTreeSet};

use crate::render::tree::{Node, Object};

use crate::error::{Error, Result};
use crate::org::OrgPolicy;
use crate::plan::{ActionKind, GatePlan, Plan};
use crate::render::escape::json_object;

/// CodePipeline: actions in one stage (the plan splits larger stages, so it owns the number).
pub use crate::plan::ACTIONS_PER_STAGE;
/// CodePipeline: stages in one pipeline.
pub const STAGES_PER_PIPELINE: usize = 50;
/// CodePipeline: characters of one action configuration value.
pub const ACTION_CONFIGURATION_CHARS: usize = 1_000;
/// CodePipeline: characters of a manual approval's `CustomData`.
pub const APPROVAL_CUSTOM_DATA_CHARS: usize = 500;
/// CodeBuild: characters of an inline buildspec.
pub const BUILDSPEC_CHARS: usize = 25_600;
/// IAM: characters of all inline policies of one role (white space not counted).
pub const ROLE_INLINE_POLICY_CHARS: usize = 10_240;
/// IAM: characters of one managed policy (white space not counted).
pub const MANAGED_POLICY_CHARS: usize = 6_144;
/// IAM: characters of a role trust policy (the default quota; white space not counted).
pub const TRUST_POLICY_CHARS: usize = 2_048;
/// IAM: managed policies attached to one role (the default quota).
pub const MANAGED_POLICIES_PER_ROLE: usize = 10;
/// KMS: bytes of a key policy.
pub const KEY_POLICY_BYTES: usize = 32_768;
/// S3: bytes of a bucket policy.
pub const BUCKET_POLICY_BYTES: usize = 20_480;
/// CloudFormation: bytes of a template passed as `TemplateBody`; larger templates are deployed
/// from S3 (`TemplateURL`). Not an error: recorded per stack in `plan.json`.
pub const TEMPLATE_BODY_BYTES: usize = 51_200;
/// CloudFormation: bytes of a template passed as `TemplateURL`.
pub const TEMPLATE_URL_BYTES: usize = 1_000_000;
/// CloudFormation: resources in one stack.
pub const RESOURCES_PER_STACK: usize = 500;
/// CloudFormation: outputs of one stack.
pub const OUTPUTS_PER_STACK: usize = 200;

/// Length of the stand-in for a value only known at deploy time (an ARN or a name).
const UNKNOWN_VALUE_CHARS: usize = 128;

/// The stand-in itself: `UNKNOWN_VALUE_CHARS` times `x`.
const UNKNOWN_VALUE: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const _: () = assert!(UNKNOWN_VALUE.len() == UNKNOWN_VALUE_CHARS);

/// `12345` → `12,345`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn quota(
    plan: &Plan,
    limit: impl Into<String>,
    message: impl Into<String>,
    help: impl Into<String>,
) -> Error {
    Error::Quota {
        pipeline: plan.pipeline.name.clone(),
        limit: limit.into(),
        message: message.into(),
        help: help.into(),
    }
}

/// Checks the plan against the CodePipeline quotas.
pub fn check_plan(plan: &Plan, _org: &OrgPolicy) -> Result<()> {
    if plan.stages.len() > STAGES_PER_PIPELINE {
        let fixed = plan.stages.len() - plan.environments.len();
        return Err(quota(
            plan,
            format!("the CodePipeline limit of {STAGES_PER_PIPELINE} stages per pipeline"),
            format!(
                "the pipeline would have {} stages ({fixed} for source and gates, one per environment for {} environments)",
                plan.stages.len(),
                plan.environments.len()
            ),
            format!(
                "deploy to at most {} environments from one pipeline; split the rest into a second manifest",
                STAGES_PER_PIPELINE.saturating_sub(fixed)
            ),
        ));
    }
    for s in &plan.stages {
        if s.actions.len() > ACTIONS_PER_STAGE {
            return Err(quota(
                plan,
                format!("the CodePipeline limit of {ACTIONS_PER_STAGE} actions per stage"),
                format!("stage `{}` has {} actions", s.name, s.actions.len()),
                "this is a pipeforge bug: stages with more gates are split; please report it",
            ));
        }
    }
    let artifact = plan.deploy_artifact();
    let template_path = format!("{artifact}::{}", plan.deploy.template);
    if template_path.chars().count() > ACTION_CONFIGURATION_CHARS {
        return Err(quota(
            plan,
            format!(
                "the CodePipeline limit of {} characters per action configuration value",
                thousands(ACTION_CONFIGURATION_CHARS)
            ),
            format!(
                "the deploy actions' `TemplatePath` would be {} characters",
                template_path.chars().count()
            ),
            "move the application template to a shorter path and update `deploy.template`",
        ));
    }
    for e in &plan.environments {
        let po = json_object(&e.parameters);
        let n = po.chars().count();
        if n > ACTION_CONFIGURATION_CHARS {
            return Err(quota(
                plan,
                format!(
                    "the CodePipeline limit of {} characters for `ParameterOverrides`",
                    thousands(ACTION_CONFIGURATION_CHARS)
                ),
                format!(
                    "the template parameters of environment `{}` are {} characters as JSON ({} too many)",
                    e.name,
                    thousands(n),
                    thousands(n - ACTION_CONFIGURATION_CHARS)
                ),
                "pass fewer or shorter values in `deploy.parameters` / `environments[].parameters`, e.g. read large values from SSM parameters in the application template",
            ));
        }
    }
    debug_assert!(
        plan.stages
            .iter()
            .flat_map(|s| &s.actions)
            .filter(|a| a.kind == ActionKind::Source)
            .count()
            == 1
    );
    Ok(())
}

/// Checks an inline buildspec against the CodeBuild limit.
pub fn check_buildspec(plan: &Plan, gate: &GatePlan, text: &str) -> Result<()> {
    let n = text.chars().count();
    if n > BUILDSPEC_CHARS {
        return Err(quota(
            plan,
            format!(
                "the CodeBuild limit of {} characters for an inline buildspec",
                thousands(BUILDSPEC_CHARS)
            ),
            format!(
                "the buildspec of gate `{}` ({}) is {} characters ({} too many)",
                gate.name,
                gate.buildspec,
                thousands(n),
                thousands(n - BUILDSPEC_CHARS)
            ),
            "move long command lists into a script in the repository (e.g. `make build`) and call it from `build.commands`",
        ));
    }
    Ok(())
}

/// What the size estimate substitutes for intrinsics.
struct Resolve<'a> {
    account: &'a str,
    region: &'a str,
}

impl Resolve<'_> {
    fn sub(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        self.sub_pieces(s, |piece| out.push_str(piece));
        out
    }

    /// The pieces of [`Resolve::sub`]'s result, in order (measured without joining them).
    fn sub_pieces(&self, s: &str, mut piece: impl FnMut(&str)) {
        let mut rest = s;
        while let Some(i) = find_sub_open(rest) {
            piece(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(j) = after.find('}') else {
                piece(&rest[i..]);
                return;
            };
            piece(self.pseudo(&after[..j]));
            rest = &after[j + 1..];
        }
        piece(rest);
    }

    fn pseudo(&self, name: &str) -> &str {
        match name {
            "AWS::AccountId" => self.account,
            "AWS::Region" => self.region,
            "AWS::Partition" => "aws",
            "AWS::URLSuffix" => "amazonaws.com",
            _ => UNKNOWN_VALUE,
        }
    }

    /// The value with intrinsics replaced (strings for scalars).
    fn value<'v>(&self, v: &Node<'v>) -> Node<'v> {
        match v {
            Node::Object(m) if m.len() == 1 => {
                let (k, x) = m.iter().next().expect("one entry");
                match (k, x) {
                    ("Ref", Node::String(name)) => Node::from(self.pseudo(name).to_owned()),
                    ("Fn::Sub", Node::String(s)) => Node::from(self.sub(s)),
                    ("Fn::GetAtt", _) | ("Fn::ImportValue", _) | ("Fn::Sub", _) => {
                        Node::from(UNKNOWN_VALUE)
                    }
                    ("Fn::Join", Node::Array(a)) if a.len() == 2 => {
                        let sep = a[0].as_str().unwrap_or("");
                        let parts: Vec<String> = a[1]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .map(|p| match self.value(p) {
                                        Node::String(s) => s.into_owned(),
                                        other => serde_json::to_string(&other).unwrap_or_default(),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        Node::from(parts.join(sep))
                    }
                    _ => Node::Object(m.map_values(|v| self.value(v))),
                }
            }
            Node::Object(m) => Node::Object(m.map_values(|v| self.value(v))),
            Node::Array(a) => Node::Array(a.iter().map(|v| self.value(v)).collect()),
            other => other.clone(),
        }
    }

    /// Characters of a policy document as IAM counts them (compact JSON).
    fn chars(&self, doc: &Node) -> usize {
        self.measure(doc, true)
    }

    /// Bytes of a resource policy (compact JSON).
    fn bytes(&self, doc: &Node) -> usize {
        self.measure(doc, false)
    }

    /// Length of `v` as compact JSON with intrinsics resolved, without building it.
    fn measure(&self, v: &Node, chars: bool) -> usize {
        // Byte by byte (every escaped character is ASCII): a character is counted at its
        // first byte, or at each of its bytes when measuring bytes.
        fn str_len(s: &str, chars: bool) -> usize {
            2 + body_len(s, chars)
        }
        // Without the quotes: a resolved `Fn::Sub` is measured piece by piece.
        // Eight bytes at a time: a word of ASCII without control characters, `"` or `\`
        // counts eight either way; any other word is counted byte by byte.
        fn body_len(s: &str, chars: bool) -> usize {
            let byte_len = |b: &u8| match *b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..0x20 => 6,
                0x80..0xc0 if chars => 0,
                _ => 1,
            };
            let words = s.as_bytes().chunks_exact(8);
            let tail = words.remainder().iter().map(byte_len).sum::<usize>();
            words
                .map(|w| {
                    let word = u64::from_le_bytes(w.try_into().unwrap_or_default());
                    if crate::render::escape::json_special(word) | (word & 0x8080_8080_8080_8080)
                        == 0
                    {
                        8
                    } else {
                        w.iter().map(byte_len).sum()
                    }
                })
                .sum::<usize>()
                + tail
        }
        match v {
            Node::Null => 4,
            Node::Bool(b) => {
                if *b {
                    4
                } else {
                    5
                }
            }
            Node::Number(n) => n.to_string().len(),
            Node::String(s) => str_len(s, chars),
            Node::Array(a) => {
                2 + a.len().saturating_sub(1)
                    + a.iter().map(|x| self.measure(x, chars)).sum::<usize>()
            }
            Node::Object(m) => {
                if m.len() == 1 {
                    let (k, x) = m.iter().next().expect("one entry");
                    // What `value` resolves these to, measured without building it.
                    match (k, x) {
                        ("Ref", Node::String(name)) => return str_len(self.pseudo(name), chars),
                        ("Fn::Sub", Node::String(text)) => {
                            let mut n = 2;
                            self.sub_pieces(text, |p| n += body_len(p, chars));
                            return n;
                        }
                        ("Fn::GetAtt" | "Fn::ImportValue" | "Fn::Sub", _) => {
                            return str_len(UNKNOWN_VALUE, chars);
                        }
                        // Only the shape `value` resolves; any other is measured as written.
                        ("Fn::Join", Node::Array(a)) if a.len() == 2 => {
                            return str_len(self.value(v).as_str().unwrap_or_default(), chars);
                        }
                        _ => {}
                    }
                }
                2 + m.len().saturating_sub(1)
                    + m.iter()
                        .map(|(k, x)| str_len(k, chars) + 1 + self.measure(x, chars))
                        .sum::<usize>()
            }
        }
    }
}

/// Where `${` first occurs in `s` (what `s.find("${")` gives): `memchr` to each `$`, where the
/// substring search set itself up anew for every string the quota measured.
fn find_sub_open(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut from = 0;
    while let Some(j) = memchr::memchr(b'$', b.get(from..)?) {
        let i = from + j;
        if b.get(i + 1) == Some(&b'{') {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// The logical id a `{"Ref": id}` names.
fn ref_target<'t>(v: &'t Node<'t>) -> Option<&'t str> {
    v.as_object()?.get("Ref")?.as_str()
}

/// For each logical id that some `AWS::IAM::Policy` of the stack names in its `Roles` (as a
/// `Ref`), the characters of the policy documents naming it. Each document is measured once,
/// however many roles it names; a policy naming a role twice counts once for it.
fn policy_chars_by_role<'t>(
    r: &Resolve<'_>,
    resources: &'t Object<'t>,
) -> BTreeMap<&'t str, usize> {
    let mut by_role: BTreeMap<&str, usize> = BTreeMap::new();
    for res in resources.values() {
        if res.get("Type").and_then(Node::as_str) != Some("AWS::IAM::Policy") {
            continue;
        }
        let props = res.get("Properties").unwrap_or(&Node::Null);
        let (Some(doc), Some(roles)) = (
            props.get("PolicyDocument"),
            props.get("Roles").and_then(Node::as_array),
        ) else {
            continue;
        };
        let names: BTreeSet<&str> = roles.iter().filter_map(ref_target).collect();
        if names.is_empty() {
            continue;
        }
        let n = r.chars(doc);
        for name in names {
            *by_role.entry(name).or_default() += n;
        }
    }
    by_role
}

/// Checks a rendered stack (parsed) against the CloudFormation, IAM, KMS and S3 quotas.
/// `account` and `region` are where the stack is deployed.
pub fn check_stack(plan: &Plan, file: &str, t: &Node, account: &str, region: &str) -> Result<()> {
    let q = StackQuotas {
        plan,
        file,
        r: Resolve { account, region },
    };
    let empty = Object::default();
    let resources = t
        .get("Resources")
        .and_then(Node::as_object)
        .unwrap_or(&empty);
    q.counts(t, resources)?;
    let attached_chars = policy_chars_by_role(&q.r, resources);
    for (id, res) in resources {
        let ty = res.get("Type").and_then(Node::as_str).unwrap_or("");
        let props = res.get("Properties").unwrap_or(&Node::Null);
        match ty {
            "AWS::IAM::Role" => {
                let attached = attached_chars.get(id).copied().unwrap_or(0);
                q.role(id, props, attached)?;
            }
            "AWS::IAM::ManagedPolicy" => q.managed_policy(id, props)?,
            "AWS::KMS::Key" => q.key_policy(id, props)?,
            "AWS::S3::BucketPolicy" => q.bucket_policy(id, props)?,
            "AWS::CodePipeline::Pipeline" => q.action_configurations(props)?,
            _ => {}
        }
    }
    Ok(())
}

/// One rendered stack under [`check_stack`]: what its errors name, and how its intrinsics
/// resolve.
struct StackQuotas<'a> {
    plan: &'a Plan,
    file: &'a str,
    r: Resolve<'a>,
}

impl StackQuotas<'_> {
    /// CloudFormation: resources and outputs per stack.
    fn counts(&self, t: &Node, resources: &Object<'_>) -> Result<()> {
        let (plan, file) = (self.plan, self.file);
        if resources.len() > RESOURCES_PER_STACK {
            return Err(quota(
                plan,
                format!("the CloudFormation limit of {RESOURCES_PER_STACK} resources per stack"),
                format!("`{file}` has {} resources", resources.len()),
                "reduce the number of gates or environments",
            ));
        }
        let outputs = t
            .get("Outputs")
            .and_then(Node::as_object)
            .map_or(0, |o| o.len());
        if outputs > OUTPUTS_PER_STACK {
            return Err(quota(
                plan,
                format!("the CloudFormation limit of {OUTPUTS_PER_STACK} outputs per stack"),
                format!("`{file}` has {outputs} outputs"),
                "fix the stack template: it declares too many outputs",
            ));
        }
        Ok(())
    }

    /// IAM, for the role `id`: its trust policy, its managed policies, and its inline policies
    /// (its own `Policies` plus `attached_chars`, those of every AWS::IAM::Policy naming it).
    fn role(&self, id: &str, props: &Node, attached_chars: usize) -> Result<()> {
        let (plan, file, r) = (self.plan, self.file, &self.r);
        if let Some(doc) = props.get("AssumeRolePolicyDocument") {
            let n = r.chars(doc);
            if n > TRUST_POLICY_CHARS {
                return Err(quota(
                    plan,
                    format!(
                        "the IAM limit of {} characters for a role trust policy",
                        thousands(TRUST_POLICY_CHARS)
                    ),
                    format!(
                        "the trust policy of `{id}` in `{file}` is about {} characters",
                        thousands(n)
                    ),
                    "ask AWS to raise the `Role trust policy length` quota (up to 8,192), or trust fewer principals",
                ));
            }
        }
        let attached = props
            .get("ManagedPolicyArns")
            .and_then(Node::as_array)
            .map_or(0, Vec::len);
        if attached > MANAGED_POLICIES_PER_ROLE {
            return Err(quota(
                plan,
                format!("the IAM limit of {MANAGED_POLICIES_PER_ROLE} managed policies per role"),
                format!("`{id}` in `{file}` attaches {attached} managed policies"),
                "list fewer policies in `deploy.execution_policy_arns` (org.yaml), or ask AWS to raise the quota (up to 20)",
            ));
        }
        let mut total: usize = props
            .get("Policies")
            .and_then(Node::as_array)
            .map_or(0, |ps| {
                ps.iter()
                    .filter_map(|p| p.get("PolicyDocument"))
                    .map(|d| r.chars(d))
                    .sum()
            });
        total += attached_chars;
        if total > ROLE_INLINE_POLICY_CHARS {
            return Err(quota(
                plan,
                format!(
                    "the IAM limit of {} characters for a role's inline policies",
                    thousands(ROLE_INLINE_POLICY_CHARS)
                ),
                format!(
                    "the inline policies of `{id}` in `{file}` are about {} characters ({} too many)",
                    thousands(total),
                    thousands(total - ROLE_INLINE_POLICY_CHARS)
                ),
                "reference fewer secrets and parameters (e.g. one Secrets Manager secret holding a JSON document instead of many)",
            ));
        }
        Ok(())
    }

    /// IAM: the size of the managed policy `id`.
    fn managed_policy(&self, id: &str, props: &Node) -> Result<()> {
        let Some(doc) = props.get("PolicyDocument") else {
            return Ok(());
        };
        let n = self.r.chars(doc);
        if n <= MANAGED_POLICY_CHARS {
            return Ok(());
        }
        Err(quota(
            self.plan,
            format!(
                "the IAM limit of {} characters for a managed policy",
                thousands(MANAGED_POLICY_CHARS)
            ),
            format!(
                "managed policy `{id}` in `{}` is about {} characters ({} too many)",
                self.file,
                thousands(n),
                thousands(n - MANAGED_POLICY_CHARS)
            ),
            "it grows with the production environments of the pipeline; deploy to fewer production environments from one pipeline",
        ))
    }

    /// KMS: the size of the policy of key `id`.
    fn key_policy(&self, id: &str, props: &Node) -> Result<()> {
        let Some(doc) = props.get("KeyPolicy") else {
            return Ok(());
        };
        let n = self.r.bytes(doc);
        if n <= KEY_POLICY_BYTES {
            return Ok(());
        }
        Err(quota(
            self.plan,
            format!(
                "the KMS limit of {} bytes for a key policy",
                thousands(KEY_POLICY_BYTES)
            ),
            format!(
                "the policy of key `{id}` in `{}` is about {} bytes ({} too many)",
                self.file,
                thousands(n),
                thousands(n - KEY_POLICY_BYTES)
            ),
            "it grows with the gates and target accounts of the pipeline; deploy to fewer accounts from one pipeline",
        ))
    }

    /// S3: the size of the bucket policy `id`.
    fn bucket_policy(&self, id: &str, props: &Node) -> Result<()> {
        let Some(doc) = props.get("PolicyDocument") else {
            return Ok(());
        };
        let n = self.r.bytes(doc);
        if n <= BUCKET_POLICY_BYTES {
            return Ok(());
        }
        Err(quota(
            self.plan,
            format!(
                "the S3 limit of {} bytes for a bucket policy",
                thousands(BUCKET_POLICY_BYTES)
            ),
            format!(
                "the policy `{id}` in `{}` is about {} bytes",
                self.file,
                thousands(n)
            ),
            "it grows with the target accounts of the pipeline; deploy to fewer accounts from one pipeline",
        ))
    }

    /// CodePipeline: the length of every action configuration value (`CustomData` has its
    /// own, lower limit).
    fn action_configurations(&self, props: &Node) -> Result<()> {
        fn list<'t>(v: Option<&'t Node<'t>>) -> impl Iterator<Item = &'t Node<'t>> {
            v.and_then(Node::as_array).into_iter().flatten()
        }
        for stage in list(props.get("Stages")) {
            for action in list(stage.get("Actions")) {
                let config = action.get("Configuration").and_then(Node::as_object);
                for (k, v) in config.into_iter().flatten() {
                    self.configuration_value(stage, action, k, v)?;
                }
            }
        }
        Ok(())
    }

    /// The value `v` of configuration key `k` of `action` in `stage`.
    fn configuration_value(&self, stage: &Node, action: &Node, k: &str, v: &Node) -> Result<()> {
        let text = match self.r.value(v) {
            Node::String(s) => s,
            other => other.to_string().into(),
        };
        let n = text.chars().count();
        let limit = if k == "CustomData" {
            APPROVAL_CUSTOM_DATA_CHARS
        } else {
            ACTION_CONFIGURATION_CHARS
        };
        if n <= limit {
            return Ok(());
        }
        let aname = action.get("Name").and_then(Node::as_str).unwrap_or("?");
        let sname = stage.get("Name").and_then(Node::as_str).unwrap_or("?");
        Err(quota(
            self.plan,
            format!(
                "the CodePipeline limit of {} characters for `{k}`",
                thousands(limit)
            ),
            format!(
                "action `{sname}.{aname}` in `{}` has a `{k}` of about {} characters",
                self.file,
                thousands(n)
            ),
            "fix the stack template, or shorten the values it is built from",
        ))
    }
}

/// Checks the size of a rendered template; returns it in bytes.
pub fn check_template_size(plan: &Plan, file: &str, bytes: usize) -> Result<usize> {
    if bytes > TEMPLATE_URL_BYTES {
        return Err(quota(
            plan,
            format!(
                "the CloudFormation limit of {} bytes per template",
                thousands(TEMPLATE_URL_BYTES)
            ),
            format!("`{file}` is {} bytes", thousands(bytes)),
            "reduce the number of gates or the size of their buildspecs",
        ));
    }
    Ok(bytes)
}

/// The tests' measures of values built as `serde_json::Value`.
#[cfg(test)]
impl Resolve<'_> {
    fn chars_json(&self, v: &serde_json::Value) -> usize {
        self.chars(&Node::from(v))
    }

    fn bytes_json(&self, v: &serde_json::Value) -> usize {
        self.bytes(&Node::from(v))
    }

    fn value_json(&self, v: &serde_json::Value) -> serde_json::Value {
        self.value(&Node::from(v)).to_json()
    }
}

/// [`policy_chars_by_role`] of resources built as `serde_json::Value`.
#[cfg(test)]
fn policy_chars_by_role_json(
    r: &Resolve<'_>,
    resources: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, usize> {
    let json = serde_json::Value::Object(resources.clone());
    let tree = Node::from(&json);
    let empty = Object::default();
    let resources = tree.as_object().unwrap_or(&empty);
    policy_chars_by_role(r, resources)
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
}

/// [`check_stack`] of a template built or edited as `serde_json::Value` (the tests').
#[cfg(test)]
fn check_stack_json(
    plan: &Plan,
    file: &str,
    t: &serde_json::Value,
    account: &str,
    region: &str,
) -> Result<()> {
    check_stack(plan, file, &Node::from(t), account, region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    proptest::proptest! {
        /// Strings of every length (whole words and a tail) with every kind of byte: as long
        /// as their compact JSON, in bytes and in characters.
        #[test]
        fn strings_measure_as_their_compact_json(s in "[a\"\\\\\n\u{1}\u{7f}é😀 ~]{0,40}") {
            let r = Resolve { account: "123456789012", region: "eu-west-1" };
            let v = Json::String(s);
            let compact = serde_json::to_string(&v).expect("json");
            proptest::prop_assert_eq!(r.bytes_json(&v), compact.len());
            proptest::prop_assert_eq!(r.chars_json(&v), compact.chars().count());
        }

        #[test]
        fn sub_openings_are_found_where_str_find_finds_them(s in "[${}a\u{e9}]{0,12}") {
            proptest::prop_assert_eq!(find_sub_open(&s), s.find("${"));
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(25_600), "25,600");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn sizes_resolve_intrinsics() {
        let r = Resolve {
            account: "123456789012",
            region: "eu-west-1",
        };
        let doc = serde_json::json!({
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b-${AWS::AccountId}-${AWS::Region}/*"},
            "Other": {"Fn::GetAtt": ["Key", "Arn"]},
        });
        let v = r.value_json(&doc);
        assert_eq!(v["Resource"], "arn:aws:s3:::b-123456789012-eu-west-1/*");
        assert_eq!(v["Other"].as_str().map(str::len), Some(UNKNOWN_VALUE_CHARS));
        // Compact JSON: no white space counted; measured without building it.
        assert_eq!(
            r.chars_json(&serde_json::json!({"a": "b"})),
            "{\"a\":\"b\"}".len()
        );
        let tricky = serde_json::json!({
            "Statement": [{"Sid": "é\"\n\u{1}😀\u{2028}\u{7f}\\\t\r\u{8}\u{c}\u{1f}", "N": 12, "B": false, "Z": null, "E": [], "O": {}},
                          {"R": {"Ref": "AWS::Region"}, "J": {"Fn::Join": ["-", ["a", {"Ref": "X"}]]}}],
            "Arn": {"Fn::Sub": "arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}:${Key.Arn}"},
            "Stand-ins": [{"Fn::GetAtt": ["Key", "Arn"]}, {"Fn::ImportValue": "e"},
                          {"Fn::Sub": ["${A}", {"A": "b"}]}, {"Fn::Join": "not a list"},
                          {"Fn::Sub": "é\"${AWS::URLSuffix}\n${open"}],
        });
        let compact = serde_json::to_string(&r.value_json(&tricky)).expect("json");
        assert_eq!(r.chars_json(&tricky), compact.chars().count());
        assert_eq!(r.bytes_json(&tricky), compact.len());
    }

    #[test]
    fn each_intrinsic_has_its_stand_in() {
        let r = Resolve {
            account: "123456789012",
            region: "eu-west-1",
        };
        let x = "x".repeat(UNKNOWN_VALUE_CHARS);
        assert_eq!(
            r.sub("s3.${AWS::URLSuffix}/${Bucket}/${AWS::AccountId}"),
            format!("s3.amazonaws.com/{x}/123456789012")
        );
        assert_eq!(r.sub("a ${AWS::Region} ${open"), "a eu-west-1 ${open");
        assert_eq!(r.sub("no variables"), "no variables");
        let cases = [
            (
                serde_json::json!({"Fn::ImportValue": "e"}),
                serde_json::json!(x),
            ),
            (
                serde_json::json!({"Fn::Sub": ["${A}", {"A": "b"}]}),
                serde_json::json!(x),
            ),
            (
                serde_json::json!({"Fn::Join": [",", ["a", {"Ref": "AWS::Partition"}, 1]]}),
                serde_json::json!("a,aws,1"),
            ),
            // Not an intrinsic: kept, its values resolved.
            (
                serde_json::json!({"Ref": "AWS::Region", "N": {"Ref": "AWS::AccountId"}}),
                serde_json::json!({"Ref": "AWS::Region", "N": "123456789012"}),
            ),
            (
                serde_json::json!([true, null, 1.5, {"Ref": "Key"}]),
                serde_json::json!([true, null, 1.5, x]),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(r.value_json(&v), want, "{v}");
            // Measured without building it: as long as the resolved value's compact JSON.
            let compact = serde_json::to_string(&want).expect("json");
            assert_eq!(r.bytes_json(&v), compact.len(), "{v}");
            assert_eq!(r.chars_json(&v), compact.chars().count(), "{v}");
        }
        // A `Fn::Join` without its list (CloudFormation refuses it) is kept as it is.
        let join = serde_json::json!({"Fn::Join": ["-"]});
        assert_eq!(r.value_json(&join), join);
    }

    #[test]
    fn a_string_fn_sub_measures_as_its_substitution() {
        let r = Resolve {
            account: "123456789012",
            region: "eu-west-1",
        };
        // Pseudo parameters, an unknown variable (the stand-in), an unterminated `${`, a
        // literal `${!…}`, nothing to substitute, and characters JSON escapes or IAM counts
        // as one though they take several bytes.
        let cases = [
            "",
            "plain",
            "arn:${AWS::Partition}:s3:::b-${AWS::AccountId}-${AWS::Region}/*",
            "${Bucket.Arn}/*",
            "s3.${AWS::URLSuffix}",
            "a ${AWS::Region} ${open",
            "${!Literal}",
            "${}",
            "é\"\n\u{1}😀\\${AWS::Region}",
        ];
        for t in cases {
            let v = serde_json::json!({"Fn::Sub": t});
            let compact = serde_json::to_string(&Json::String(r.sub(t))).expect("json");
            assert_eq!(r.bytes_json(&v), compact.len(), "{t}");
            assert_eq!(r.chars_json(&v), compact.chars().count(), "{t}");
            // The same as measuring what `value` makes of it.
            assert_eq!(r.bytes_json(&v), r.bytes_json(&r.value_json(&v)), "{t}");
            assert_eq!(r.chars_json(&v), r.chars_json(&r.value_json(&v)), "{t}");
        }
    }
}

/// Each limit crossed by a manifest (and, where a manifest alone cannot, an org policy).
#[cfg(test)]
mod limit_tests {
    use std::collections::BTreeMap;

    use crate::catalog::Catalog;
    use crate::error::{Error, SourceFile};
    use crate::render::Templates;

    /// The embedded policy, with the accounts these tests deploy to (`100000000000` and up,
    /// one per environment) listed as well.
    fn embedded_org_text() -> String {
        let text = crate::assets::get("examples/org.yaml").expect("embedded org");
        let more: String = (0..60)
            .map(|i| {
                format!(
                    "  - {{id: \"{:012}\", name: test-{i}, production: false, teams: [\"*\"]}}\n",
                    100_000_000_000u64 + i
                )
            })
            .collect();
        let edited = text.replacen("accounts:\n", &format!("accounts:\n{more}"), 1);
        assert_ne!(edited, text, "examples/org.yaml lists accounts");
        edited
    }

    fn render_with(manifest: &str, org: &str, catalog: &Catalog) -> crate::Result<crate::Bundle> {
        let org = crate::org::load(&SourceFile::new("org.yaml", org))?;
        let templates = Templates::embedded()?;
        crate::generate_with(
            &SourceFile::new("pipeline.yml", manifest),
            &org,
            catalog,
            templates,
        )
    }

    fn render(manifest: &str) -> crate::Result<crate::Bundle> {
        render_with(
            manifest,
            &embedded_org_text(),
            Catalog::embedded().expect("catalog"),
        )
    }

    /// The error must be a quota error naming `limit` (its number as printed).
    fn assert_quota(r: crate::Result<crate::Bundle>, limit: &str) -> String {
        match r {
            Err(e @ Error::Quota { .. }) => {
                let text = e.to_string();
                assert!(text.contains(limit), "expected the limit {limit}: {text}");
                assert!(text.contains("help: "), "{text}");
                text
            }
            Err(e) => panic!("expected a quota error naming {limit}, got: {e}"),
            Ok(_) => panic!("expected a quota error naming {limit}, but it rendered"),
        }
    }

    fn manifest(name: &str, environments: &str, extra: &str) -> String {
        format!(
            "version: 1\nname: {name}\nteam: t\nlanguage: python\ndeploy: {{template: app.yml}}\n\
             environments:\n{environments}{extra}"
        )
    }

    fn envs(names: impl IntoIterator<Item = String>) -> String {
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "  - {{name: {n}, account: \"{:012}\"}}\n",
                    100_000_000_000u64 + i as u64
                )
            })
            .collect()
    }

    #[test]
    fn stages_per_pipeline() {
        // Source, CI and Build, plus one stage per environment.
        let m = manifest("many-envs", &envs((0..48).map(|i| format!("e{i}"))), "");
        let text = assert_quota(render(&m), "50 stages per pipeline");
        assert!(text.contains("51 stages"), "{text}");
        assert!(text.contains("at most 47 environments"), "{text}");
        let ok = manifest("many-envs", &envs((0..47).map(|i| format!("e{i}"))), "");
        assert!(render(&ok).is_ok());
    }

    #[test]
    fn inline_buildspec_size() {
        let long = format!("\"echo {}\"", "x".repeat(4000));
        let cmds = vec![long; 7].join(", ");
        let m = manifest(
            "big-build",
            &envs(["dev".to_owned()]),
            &format!("build:\n  commands: [{cmds}]\n"),
        );
        let text = assert_quota(render(&m), "25,600 characters");
        assert!(text.contains("gate `build`"), "{text}");
    }

    #[test]
    fn role_inline_policy_size() {
        // Every named parameter is an ARN in the policy of the gates that read it.
        let secrets: Vec<String> = (0..70)
            .map(|i| {
                format!(
                    "S{i}: \"ssm:/very/long/parameter/path/{}/{i}\"",
                    "p".repeat(100)
                )
            })
            .collect();
        let m = manifest(
            "many-secrets",
            &envs(["dev".to_owned()]),
            &format!("build:\n  secrets: {{{}}}\n", secrets.join(", ")),
        );
        assert_quota(render(&m), "10,240 characters");
    }

    #[test]
    fn managed_policy_size() {
        // A template override that grows the team policy past the limit.
        let m = manifest("big-team", &envs(["dev".to_owned()]), "");
        let bundle = render(&m).expect("renders");
        let file = bundle
            .outputs
            .iter()
            .find(|(p, _)| p.ends_with("stacks/pipeline.json"))
            .map(|(p, _)| p.to_owned())
            .expect("pipeline stack");
        let mut t: serde_json::Value =
            serde_json::from_str(bundle.outputs.text(&file).expect("text")).expect("json");
        let statements =
            t["Resources"]["TeamAccessPolicy"]["Properties"]["PolicyDocument"]["Statement"]
                .as_array_mut()
                .expect("statements");
        for i in 0..60 {
            statements.push(serde_json::json!({"Sid": format!("Extra{i}"), "Effect": "Allow",
                "Action": "codepipeline:GetPipeline",
                "Resource": format!("arn:aws:codepipeline:us-east-1:123456789012:pipeline-{i:04}")}));
        }
        let p = &bundle.plan;
        let e = super::check_stack_json(
            p,
            &file,
            &t,
            &p.pipeline.tooling_account,
            &p.pipeline.region,
        )
        .expect_err("too large");
        assert!(e.to_string().contains("6,144 characters"), "{e}");
    }

    #[test]
    fn role_name_length() {
        let name = "a".repeat(40);
        let m = manifest(&name, &envs(["e".repeat(20)]), "");
        let text = assert_quota(render(&m), "IAM role name limit of 64 characters");
        assert!(text.contains("shorten"), "{text}");
    }

    #[test]
    fn bucket_name_length() {
        let name = "b".repeat(40);
        let m = manifest(&name, &envs(["dev".to_owned()]), "");
        let text = assert_quota(render(&m), "S3 bucket name limit of 63 characters");
        assert!(text.contains("by at least 3 characters"), "{text}");
    }

    #[test]
    fn parameter_overrides_size() {
        let m = format!(
            "version: 1\nname: big-params\nteam: t\nlanguage: python\n\
             deploy: {{template: app.yml, parameters: {{Big: \"{}\"}}}}\n\
             environments:\n  - {{name: dev, account: \"111111111111\"}}\n",
            "v".repeat(1000)
        );
        let text = assert_quota(render(&m), "1,000 characters for `ParameterOverrides`");
        assert!(text.contains("environment `dev`"), "{text}");
    }

    /// A language implementing `n` CI gates plus a build gate, and an org policy requiring them.
    fn many_gates(n: usize) -> (String, Catalog) {
        let mut lang = String::from(
            "description: test\nimage: aws/codebuild/amazonlinux-x86_64-standard:5.0\n\
             runtime: {name: python, versions: [\"3.12\"], default: \"3.12\"}\n\
             artifact: {kind: none, paths: [dist/**]}\ngates:\n",
        );
        let mut gates = String::from("gates:\n");
        for i in 0..=n {
            let (name, stage) = if i == n {
                ("build".to_owned(), "build")
            } else {
                (format!("g{i:03}"), "ci")
            };
            lang.push_str(&format!(
                "  {name}:\n    steps: [{{name: run, phase: build, commands: [\"echo {name}\"]}}]\n"
            ));
            gates.push_str(&format!(
                "  - {{name: {name}, stage: {stage}, mandatory: true}}\n"
            ));
        }
        let org_text = embedded_org_text();
        let start = org_text.find("\ngates:\n").expect("gates") + 1;
        let end = org_text.find("\nquality:").expect("quality") + 1;
        let org = format!("{}{}{}", &org_text[..start], gates, &org_text[end..])
            .replace("allowed: [python, node, java, go, dotnet]", "allowed: []");
        let mut files = BTreeMap::new();
        files.insert("tiny.yaml".to_owned(), SourceFile::new("tiny.yaml", lang));
        (org, Catalog::from_files(&files).expect("catalog"))
    }

    fn tiny_manifest() -> String {
        "version: 1\nname: gates-app\nteam: t\nlanguage: tiny\ndeploy: {template: app.yml}\n\
         environments:\n  - {name: dev, account: \"111111111111\"}\n"
            .to_owned()
    }

    #[test]
    fn more_than_fifty_parallel_gates_are_split_over_stages() {
        let (org, catalog) = many_gates(51);
        let b = render_with(&tiny_manifest(), &org, &catalog).expect("renders");
        let stages: Vec<(&str, usize)> = b
            .plan
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.actions.len()))
            .collect();
        assert_eq!(
            &stages[..4],
            &[("Source", 1), ("CI-1", 50), ("CI-2", 1), ("Build", 1)]
        );
        let t: serde_json::Value =
            serde_json::from_str(b.outputs.text("stacks/pipeline.json").expect("stack"))
                .expect("json");
        let rendered = t["Resources"]["Pipeline"]["Properties"]["Stages"]
            .as_array()
            .expect("stages");
        assert_eq!(rendered[1]["Actions"].as_array().map(Vec::len), Some(50));
        assert_eq!(rendered[2]["Name"], "CI-2");
    }

    #[test]
    fn resources_per_stack() {
        // Four resources per gate: role, policy, log group, project.
        let (org, catalog) = many_gates(125);
        let text = assert_quota(
            render_with(&tiny_manifest(), &org, &catalog),
            "500 resources per stack",
        );
        assert!(text.contains("stacks/pipeline.json"), "{text}");
    }

    #[test]
    fn key_policy_size() {
        // No manifest reaches it before the resource and stage limits; check the rule itself.
        let b = render(&manifest("key-app", &envs(["dev".to_owned()]), "")).expect("renders");
        let mut t: serde_json::Value =
            serde_json::from_str(b.outputs.text("stacks/pipeline.json").expect("stack"))
                .expect("json");
        let statements = t["Resources"]["ArtifactKey"]["Properties"]["KeyPolicy"]["Statement"]
            .as_array_mut()
            .expect("statements");
        let padding = serde_json::json!({"Sid": "x".repeat(40_000), "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"});
        statements.push(padding);
        let e = super::check_stack_json(
            &b.plan,
            "stacks/pipeline.json",
            &t,
            "123456789012",
            "us-east-1",
        )
        .expect_err("too big");
        assert!(e.to_string().contains("32,768 bytes"), "{e}");
    }

    #[test]
    fn template_size_beyond_template_url() {
        let b = render(&manifest("size-app", &envs(["dev".to_owned()]), "")).expect("renders");
        assert!(super::check_template_size(&b.plan, "f", 1_000_000).is_ok());
        let e = super::check_template_size(&b.plan, "f", 1_000_001).expect_err("too big");
        assert!(e.to_string().contains("1,000,000 bytes"), "{e}");
    }

    /// The example pipeline (with a production environment) and its pipeline stack, parsed.
    fn pipeline_case() -> (crate::Bundle, serde_json::Value) {
        let m = manifest(
            "cross-app",
            "  - {name: dev, account: \"100000000000\"}\n  - {name: prod, account: \"100000000001\"}\n",
            "",
        );
        let b = render(&m).expect("renders");
        let t = serde_json::from_str(b.outputs.text("stacks/pipeline.json").expect("stack"))
            .expect("json");
        (b, t)
    }

    fn check(b: &crate::Bundle, t: &serde_json::Value) -> crate::Result<()> {
        let p = &b.plan;
        super::check_stack_json(
            p,
            "stacks/pipeline.json",
            t,
            &p.pipeline.tooling_account,
            &p.pipeline.region,
        )
    }

    /// Pads the `Sid` of a statement added to `doc` so that `measure(doc)` is exactly `size`.
    fn pad_to(
        doc: &mut serde_json::Value,
        size: usize,
        measure: impl Fn(&serde_json::Value) -> usize,
    ) {
        let statements = doc["Statement"].as_array_mut().expect("statements");
        statements.push(serde_json::json!({"Sid": "", "Effect": "Deny", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}));
        let now = measure(doc);
        assert!(now <= size, "already {now} of {size}");
        let last = doc["Statement"]
            .as_array_mut()
            .and_then(|s| s.last_mut())
            .expect("added");
        last["Sid"] = serde_json::Value::String("P".repeat(size - now));
        assert_eq!(measure(doc), size);
    }

    fn resolve(b: &crate::Bundle) -> super::Resolve<'_> {
        super::Resolve {
            account: &b.plan.pipeline.tooling_account,
            region: &b.plan.pipeline.region,
        }
    }

    /// `edit(t, limit)` passes the check; `edit(t, limit + 1)` crosses `limit_text`.
    fn crossing(limit: usize, limit_text: &str, edit: impl Fn(&mut serde_json::Value, usize)) {
        let (b, t) = pipeline_case();
        let mut at = t.clone();
        edit(&mut at, limit);
        check(&b, &at).unwrap_or_else(|e| panic!("exactly at the limit passes: {e}"));
        let mut over = t;
        edit(&mut over, limit + 1);
        let text = check(&b, &over).expect_err("one over fails").to_string();
        assert!(text.contains(limit_text), "{text}");
        assert!(text.contains("help: "), "{text}");
    }

    #[test]
    fn shared_inline_policy_counts_for_each_role_it_names() {
        // `Extra` names both roles (and `RoleA` twice): measured once, counted once for each.
        let (b, _) = pipeline_case();
        let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "s3:GetObject", "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/*"}}]});
        let n = resolve(&b).chars_json(&doc);
        let policy = |roles: serde_json::Value| {
            serde_json::json!({"Type": "AWS::IAM::Policy",
                "Properties": {"PolicyName": "p", "PolicyDocument": doc.clone(), "Roles": roles}})
        };
        let resources: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
            serde_json::json!({
                "Extra": policy(serde_json::json!([{"Ref": "RoleA"}, {"Ref": "RoleB"}, {"Ref": "RoleA"}])),
                "OnlyB": policy(serde_json::json!([{"Ref": "RoleB"}])),
                "Named": policy(serde_json::json!(["literal-role-name"])),
                "NotAPolicy": {"Type": "AWS::IAM::ManagedPolicy",
                    "Properties": {"PolicyDocument": doc.clone(), "Roles": [{"Ref": "RoleA"}]}},
            }),
        )
        .expect("object");
        let by_role = super::policy_chars_by_role_json(&resolve(&b), &resources);
        assert_eq!(
            by_role.into_iter().collect::<Vec<_>>(),
            vec![("RoleA".to_owned(), n), ("RoleB".to_owned(), 2 * n)]
        );
    }

    #[test]
    fn inline_policy_naming_two_roles_crosses_for_the_second() {
        // A policy attached to the pipeline role and to another role counts in full for both.
        let (b, _) = pipeline_case();
        crossing(
            super::ROLE_INLINE_POLICY_CHARS,
            "characters for a role's inline policies",
            |t, n| {
                let roles = t["Resources"]
                    .as_object()
                    .expect("resources")
                    .iter()
                    .filter(|(_, r)| r["Type"] == "AWS::IAM::Role")
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>();
                let res = t["Resources"].as_object_mut().expect("resources");
                // Give every role its own padding policy, then make one policy shared.
                let base: std::collections::BTreeMap<String, usize> = roles
                    .iter()
                    .map(|id| {
                        let mut one = serde_json::Map::new();
                        one.insert(id.clone(), res[id].clone());
                        for (k, v) in res.iter() {
                            if v["Type"] == "AWS::IAM::Policy" {
                                one.insert(k.clone(), v.clone());
                            }
                        }
                        let sums = super::policy_chars_by_role_json(&resolve(&b), &one);
                        let own = res[id]["Properties"]["Policies"]
                            .as_array()
                            .map_or(0, |ps| {
                                ps.iter()
                                    .map(|p| resolve(&b).chars_json(&p["PolicyDocument"]))
                                    .sum()
                            });
                        (
                            id.clone(),
                            own + sums.get(id.as_str()).copied().unwrap_or(0),
                        )
                    })
                    .collect();
                let (big, used) = base
                    .iter()
                    .max_by_key(|(_, u)| **u)
                    .map(|(id, u)| (id.clone(), *u))
                    .expect("a role");
                let other = roles
                    .iter()
                    .find(|r| **r != big)
                    .expect("two roles")
                    .clone();
                let mut doc = serde_json::json!({"Version": "2012-10-17", "Statement": []});
                pad_to(&mut doc, n - used, |d| resolve(&b).chars_json(d));
                res.insert(
                    "SharedPad".to_owned(),
                    serde_json::json!({"Type": "AWS::IAM::Policy", "Properties": {
                        "PolicyName": "pad", "PolicyDocument": doc,
                        "Roles": [{"Ref": other}, {"Ref": big}]}}),
                );
            },
        );
    }

    #[test]
    fn trust_policy_size_crossing() {
        let (b, _) = pipeline_case();
        crossing(
            super::TRUST_POLICY_CHARS,
            "2,048 characters for a role trust policy",
            |t, n| {
                let doc =
                    &mut t["Resources"]["PipelineRole"]["Properties"]["AssumeRolePolicyDocument"];
                pad_to(doc, n, |d| resolve(&b).chars_json(d));
            },
        );
    }

    #[test]
    fn managed_policies_per_role_crossing() {
        crossing(
            super::MANAGED_POLICIES_PER_ROLE,
            "10 managed policies per role",
            |t, n| {
                t["Resources"]["PipelineRole"]["Properties"]["ManagedPolicyArns"] = (0..n)
                    .map(|i| format!("arn:aws:iam::aws:policy/P{i}"))
                    .collect();
            },
        );
    }

    #[test]
    fn outputs_per_stack_crossing() {
        crossing(super::OUTPUTS_PER_STACK, "200 outputs per stack", |t, n| {
            t["Outputs"] = (0..n)
                .map(|i| (format!("O{i}"), serde_json::json!({"Value": "v"})))
                .collect::<serde_json::Map<_, _>>()
                .into();
        });
    }

    #[test]
    fn bucket_policy_size_crossing() {
        let (b, _) = pipeline_case();
        crossing(
            super::BUCKET_POLICY_BYTES,
            "20,480 bytes for a bucket policy",
            |t, n| {
                let doc =
                    &mut t["Resources"]["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"];
                pad_to(doc, n, |d| resolve(&b).bytes_json(d));
            },
        );
    }

    fn approval(t: &mut serde_json::Value) -> &mut serde_json::Value {
        t["Resources"]["Pipeline"]["Properties"]["Stages"]
            .as_array_mut()
            .expect("stages")
            .iter_mut()
            .flat_map(|s| s["Actions"].as_array_mut().expect("actions").iter_mut())
            .find(|a| a["ActionTypeId"]["Category"] == "Approval")
            .expect("an approval")
    }

    #[test]
    fn approval_custom_data_crossing() {
        crossing(
            super::APPROVAL_CUSTOM_DATA_CHARS,
            "500 characters for `CustomData`",
            |t, n| {
                approval(t)["Configuration"]["CustomData"] = "é".repeat(n).into();
            },
        );
        // Other configuration values have the general limit.
        crossing(
            super::ACTION_CONFIGURATION_CHARS,
            "1,000 characters for `TemplatePath`",
            |t, n| {
                let deploy = t["Resources"]["Pipeline"]["Properties"]["Stages"]
                    .as_array_mut()
                    .expect("stages")
                    .iter_mut()
                    .flat_map(|s| s["Actions"].as_array_mut().expect("actions").iter_mut())
                    .find(|a| a["Configuration"]["TemplatePath"].is_string())
                    .expect("a create-change-set action");
                deploy["Configuration"]["TemplatePath"] = "t".repeat(n).into();
            },
        );
    }

    #[test]
    fn template_path_crossing_in_the_plan() {
        let (b, _) = pipeline_case();
        let org = crate::org::embedded().expect("org");
        let mut plan = b.plan;
        let prefix = format!("{}::", plan.deploy_artifact()).chars().count();
        plan.deploy.template = "a".repeat(super::ACTION_CONFIGURATION_CHARS - prefix);
        super::check_plan(&plan, &org).expect("exactly at the limit passes");
        plan.deploy.template.push('a');
        let text = super::check_plan(&plan, &org)
            .expect_err("one over fails")
            .to_string();
        assert!(
            text.contains("`TemplatePath` would be 1001 characters"),
            "{text}"
        );
    }

    /// A policy document that `measure` finds exactly `size` long, padded with `fill` (a
    /// character of more than one byte tells characters from bytes).
    fn doc_of(
        size: usize,
        fill: &str,
        measure: impl Fn(&serde_json::Value) -> usize,
    ) -> serde_json::Value {
        let mut doc = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Sid": ""}]});
        let missing = size - measure(&doc);
        let unit = measure(&serde_json::json!(fill)) - 2;
        doc["Statement"][0]["Sid"] = format!(
            "{}{}",
            fill.repeat(missing / unit),
            "P".repeat(missing % unit)
        )
        .into();
        assert_eq!(measure(&doc), size);
        doc
    }

    const AT: super::Resolve<'static> = super::Resolve {
        account: "123456789012",
        region: "us-east-1",
    };

    /// `resources(limit)` passes `check_stack`; one over fails naming `limit_text`; two over
    /// says by how much (`too_many`).
    fn crossing_alone(
        limit: usize,
        limit_text: &str,
        too_many: Option<&str>,
        resources: impl Fn(usize) -> serde_json::Value,
    ) {
        let (b, _) = pipeline_case();
        let check = |n: usize| {
            let t = serde_json::json!({"Resources": resources(n)});
            super::check_stack_json(&b.plan, "stacks/t.json", &t, AT.account, AT.region)
        };
        check(limit).unwrap_or_else(|e| panic!("exactly at the limit passes: {e}"));
        let text = check(limit + 1).expect_err("one over fails").to_string();
        assert!(text.contains(limit_text), "{text}");
        if let Some(too_many) = too_many {
            let text = check(limit + 2).expect_err("two over fails").to_string();
            assert!(text.contains(too_many), "{text}");
        }
    }

    #[test]
    fn resources_per_stack_crossing() {
        crossing_alone(
            super::RESOURCES_PER_STACK,
            "500 resources per stack",
            None,
            |n| {
                (0..n)
                    .map(|i| {
                        (
                            format!("T{i}"),
                            serde_json::json!({"Type": "AWS::SNS::Topic"}),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            },
        );
    }

    #[test]
    fn role_inline_policies_crossing_counts_every_policy_naming_the_role() {
        // The role's own policy and an AWS::IAM::Policy naming it count; a policy of another
        // role does not.
        let own = 4_000;
        crossing_alone(
            super::ROLE_INLINE_POLICY_CHARS,
            "10,240 characters for a role's inline policies",
            Some("are about 10,242 characters (2 too many)"),
            |n| {
                serde_json::json!({
                    "Role": {"Type": "AWS::IAM::Role", "Properties": {
                        "Policies": [{"PolicyName": "own", "PolicyDocument": doc_of(own, "é", |d| AT.chars_json(d))}]}},
                    "Attached": {"Type": "AWS::IAM::Policy", "Properties": {
                        "Roles": [{"Ref": "Role"}],
                        "PolicyDocument": doc_of(n - own, "é", |d| AT.chars_json(d))}},
                    "Elsewhere": {"Type": "AWS::IAM::Policy", "Properties": {
                        "Roles": [{"Ref": "OtherRole"}],
                        "PolicyDocument": doc_of(5_000, "é", |d| AT.chars_json(d))}},
                })
            },
        );
    }

    #[test]
    fn managed_policy_size_crossing() {
        crossing_alone(
            super::MANAGED_POLICY_CHARS,
            "6,144 characters for a managed policy",
            Some("is about 6,146 characters (2 too many)"),
            |n| {
                serde_json::json!({"Team": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
                    "PolicyDocument": doc_of(n, "é", |d| AT.chars_json(d))}}})
            },
        );
    }

    #[test]
    fn key_policy_size_crossing() {
        crossing_alone(
            super::KEY_POLICY_BYTES,
            "32,768 bytes for a key policy",
            Some("is about 32,770 bytes (2 too many)"),
            |n| {
                serde_json::json!({"Key": {"Type": "AWS::KMS::Key", "Properties": {
                    "KeyPolicy": doc_of(n, "é", |d| AT.bytes_json(d))}}})
            },
        );
    }

    #[test]
    fn inline_buildspec_crossing() {
        let (b, _) = pipeline_case();
        let gate = &b.plan.gates[0];
        let at = "é".repeat(super::BUILDSPEC_CHARS);
        super::check_buildspec(&b.plan, gate, &at).expect("exactly at the limit passes");
        let e = super::check_buildspec(&b.plan, gate, &format!("{at}é")).expect_err("one over");
        assert!(e.to_string().contains("25,600 characters"), "{e}");
        let e = super::check_buildspec(&b.plan, gate, &format!("{at}éé")).expect_err("two over");
        assert!(
            e.to_string().contains("is 25,602 characters (2 too many)"),
            "{e}"
        );
    }

    #[test]
    fn parameter_overrides_crossing() {
        let (b, _) = pipeline_case();
        let org = crate::org::embedded().expect("org");
        let mut plan = b.plan;
        let sized = |plan: &mut crate::plan::Plan, n: usize| {
            let env = &mut plan.environments[0];
            env.parameters = [("Big".to_owned(), String::new())].into();
            let empty = super::json_object(&env.parameters).chars().count();
            env.parameters
                .insert("Big".to_owned(), "v".repeat(n - empty));
        };
        sized(&mut plan, super::ACTION_CONFIGURATION_CHARS);
        super::check_plan(&plan, &org).expect("exactly at the limit passes");
        sized(&mut plan, super::ACTION_CONFIGURATION_CHARS + 1);
        let text = super::check_plan(&plan, &org)
            .expect_err("one over fails")
            .to_string();
        assert!(
            text.contains("1,000 characters for `ParameterOverrides`"),
            "{text}"
        );
        sized(&mut plan, super::ACTION_CONFIGURATION_CHARS + 2);
        let text = super::check_plan(&plan, &org)
            .expect_err("two over fails")
            .to_string();
        assert!(
            text.contains("are 1,002 characters as JSON (2 too many)"),
            "{text}"
        );
    }
}
