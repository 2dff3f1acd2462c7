//! What one pipeline consumes in each account: its rendered stacks' resources counted by the
//! kinds the account quotas count ([`Resource`]), per account and region. Computed from the
//! rendered templates themselves, so a template override that adds or drops a resource shows up.

use std::collections::BTreeMap;

use crate::render::tree::Node;
use serde::Serialize;

use super::quotas::Resource;
use crate::error::{Error, Result};
use crate::outputs::Outputs;
use crate::plan::{Plan, StackKind, StackPlan};

/// Resources by kind.
pub type Counts = BTreeMap<Resource, u64>;

/// The resources one template creates, plus the stack itself (absent kinds are left out).
pub fn count(template: &Node) -> Counts {
    let mut out = Counts::new();
    out.insert(Resource::Stack, 1);
    if let Some(resources) = template.get("Resources").and_then(Node::as_object) {
        for r in resources.values() {
            if let Some(kind) = r
                .get("Type")
                .and_then(Node::as_str)
                .and_then(Resource::of_type)
            {
                *out.entry(kind).or_default() += 1;
            }
        }
    }
    out
}

/// Adds `b` to `a`.
pub fn add(a: &mut Counts, b: &Counts) {
    for (k, v) in b {
        *a.entry(*k).or_default() += v;
    }
}

/// What one pipeline puts in one account and region.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountFootprint {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// `tooling` (pipeline and region stacks) or `target` (an environment's stack).
    pub role: &'static str,
    /// The environments whose target stacks are here (none for the tooling account).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub environments: Vec<String>,
    /// Resources by kind.
    pub resources: Counts,
}

/// What one pipeline consumes, per account and region, in deploy order of first appearance.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Footprint {
    /// One entry per account and region.
    pub places: Vec<AccountFootprint>,
}

impl Footprint {
    /// The footprint of rendered stacks (each with its plan entry).
    pub fn of<'a>(stacks: impl IntoIterator<Item = (&'a StackPlan, &'a Node<'a>)>) -> Footprint {
        let mut f = Footprint::default();
        for (stack, template) in stacks {
            let role = if stack.kind == StackKind::Target {
                "target"
            } else {
                "tooling"
            };
            let i = match f
                .places
                .iter()
                .position(|p| p.account == stack.account && p.region == stack.region)
            {
                Some(i) => i,
                None => {
                    f.places.push(AccountFootprint {
                        account: stack.account.clone(),
                        region: stack.region.clone(),
                        role,
                        environments: Vec::new(),
                        resources: Counts::new(),
                    });
                    f.places.len() - 1
                }
            };
            let place = &mut f.places[i];
            if role == "tooling" {
                place.role = "tooling";
            }
            if let Some(env) = &stack.environment {
                place.environments.push(env.clone());
            }
            add(&mut place.resources, &count(template));
        }
        f
    }

    /// The footprint of stacks read back as JSON (each with its plan entry).
    pub fn of_json(stacks: &[(&StackPlan, serde_json::Value)]) -> Footprint {
        let trees: Vec<(&StackPlan, Node<'_>)> =
            stacks.iter().map(|(s, t)| (*s, Node::from(t))).collect();
        Footprint::of(trees.iter().map(|(s, t)| (*s, t)))
    }

    /// The footprint of a rendered bundle: its stack files parsed back.
    pub fn of_outputs(plan: &Plan, outputs: &Outputs) -> Result<Footprint> {
        let mut parsed = Vec::with_capacity(plan.stacks.len());
        for s in &plan.stacks {
            let text = outputs.text(&s.file).ok_or_else(|| {
                Error::other(
                    format!("the bundle has no `{}`", s.file),
                    "this is a pipeforge bug; please report it",
                )
            })?;
            let t: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                Error::other(
                    format!("`{}` is not JSON: {e}", s.file),
                    "this is a pipeforge bug; please report it",
                )
            })?;
            parsed.push((s, t));
        }
        Ok(Footprint::of_json(&parsed))
    }

    /// Everything in `account`, all regions together.
    pub fn in_account(&self, account: &str) -> Counts {
        let mut out = Counts::new();
        for p in self.places.iter().filter(|p| p.account == account) {
            add(&mut out, &p.resources);
        }
        out
    }

    /// The accounts, each once, in order of first appearance.
    pub fn accounts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.places {
            if !out.contains(&p.account.as_str()) {
                out.push(&p.account);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(kind: StackKind, account: &str, region: &str, env: Option<&str>) -> StackPlan {
        StackPlan {
            order: 1,
            kind,
            name: "s".to_owned(),
            file: "f".to_owned(),
            account: account.to_owned(),
            region: region.to_owned(),
            environment: env.map(str::to_owned),
            capabilities: Vec::new(),
            template_bytes: None,
        }
    }

    #[test]
    fn resources_are_counted_by_kind_per_account_and_region() {
        let pipeline = serde_json::json!({"Resources": {
            "A": {"Type": "AWS::IAM::Role"}, "B": {"Type": "AWS::IAM::Role"},
            "C": {"Type": "AWS::IAM::Policy"}, "D": {"Type": "AWS::CodeBuild::Project"},
            "E": {"Type": "AWS::CodePipeline::Pipeline"}}});
        let region = serde_json::json!({"Resources": {"K": {"Type": "AWS::KMS::Key"},
            "B": {"Type": "AWS::S3::Bucket"}}});
        let target = serde_json::json!({"Resources": {"R": {"Type": "AWS::IAM::Role"}}});
        let s = [
            stack(StackKind::Target, "111111111111", "us-east-1", Some("dev")),
            stack(StackKind::Target, "111111111111", "us-east-1", Some("qa")),
            stack(StackKind::Region, "123456789012", "eu-west-1", None),
            stack(StackKind::Pipeline, "123456789012", "us-east-1", None),
        ];
        let f = Footprint::of_json(&[
            (&s[0], target.clone()),
            (&s[1], target),
            (&s[2], region),
            (&s[3], pipeline),
        ]);
        assert_eq!(f.places.len(), 3);
        assert_eq!(f.places[0].environments, ["dev", "qa"]);
        assert_eq!(f.places[0].resources[&Resource::IamRole], 2);
        assert_eq!(f.places[0].resources[&Resource::Stack], 2);
        let tooling = f.in_account("123456789012");
        assert_eq!(tooling[&Resource::IamRole], 2);
        assert_eq!(tooling[&Resource::Stack], 2);
        assert_eq!(tooling[&Resource::KmsKey], 1);
        assert_eq!(tooling.get(&Resource::EventRule), None);
        assert_eq!(f.accounts(), ["111111111111", "123456789012"]);
        let json = serde_json::to_value(&f).expect("json");
        assert_eq!(json[2]["resources"]["iam-roles"], 2);
        assert_eq!(json[2]["role"], "tooling");
    }
}
