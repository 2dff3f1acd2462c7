//! `pipeforge fleet drift`: whether each pipeline's deployed stacks still hold what pipeforge
//! deployed, compared with its deploy record and bundle: a stack gone, a stack in a failed
//! state, a stack whose `Metadata` content hash is not the recorded one (deployed by something
//! else since), or a template edited outside pipeforge (its resources differ from the bundle's
//! `deploy/<stack>.json`, the template exactly as deployed), or, when the template is still
//! pipeforge's, a resource changed behind the stack's back (a CodeBuild project or a role edited
//! in the console), found by CloudFormation drift detection (`DetectStackDrift`, then
//! `DescribeStackResourceDrifts`). Results are grouped by cause. `--fix` redeploys through the
//! rollout path with drift-aware change sets (`REVERT_DRIFT`), which put such resources back
//! even though the template does not change.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{Entry, Reader};
use crate::aws::AwsContext;
use crate::deploy::api::{Location, ResourceDrift, StackApi};
use crate::deploy::sdk::SdkStackApi;
use crate::publish::templates::deployed_hash;

/// Why a stack drifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The stack does not exist.
    Missing,
    /// The stack is not in a settled, successful state.
    Failed,
    /// Its content hash is not the recorded one: something else deployed it.
    Replaced,
    /// Its resources differ from the template pipeforge deployed.
    Edited,
    /// A resource was changed outside CloudFormation (drift detection).
    ResourceDrift,
    /// The stack could not be read.
    Unreadable,
}

/// One drifted stack.
#[derive(Clone, Debug, Serialize)]
pub struct StackDrift {
    /// The stack.
    pub stack: String,
    /// Account.
    pub account: String,
    /// Why.
    pub cause: Cause,
    /// Details: the status, or the logical ids that differ.
    pub detail: String,
}

/// One pipeline's drift.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineDrift {
    /// The pipeline.
    pub pipeline: String,
    /// Its team.
    pub team: String,
    /// Drifted stacks (empty: in sync).
    pub stacks: Vec<StackDrift>,
    /// Why it could not be checked (no deploy record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
}

/// Checks each pipeline's stacks ([`super::Visit`] for `fleet drift`).
#[derive(Debug)]
pub struct Drifter {
    /// The AWS connection.
    pub aws: Arc<AwsContext>,
    /// The org's bootstrap role (assumed in target accounts).
    pub role: String,
}

impl super::Visit for Drifter {
    type Out = PipelineDrift;

    async fn visit(self: Arc<Self>, reader: Reader, pipeline: String) -> PipelineDrift {
        let record = match reader.record(&pipeline).await {
            Entry::Record(r) => r,
            Entry::Missing { pipeline } => {
                return PipelineDrift {
                    pipeline,
                    team: String::new(),
                    stacks: Vec::new(),
                    unchecked: Some("no deploy record".to_owned()),
                };
            }
            Entry::Unreadable { pipeline, error } => {
                return PipelineDrift {
                    pipeline,
                    team: String::new(),
                    stacks: Vec::new(),
                    unchecked: Some(error),
                };
            }
        };
        let api = SdkStackApi::new(&self.aws, &self.role, "pipeforge-fleet-drift");
        let mut stacks = Vec::new();
        for s in &record.stacks {
            let at = Location {
                account: s.account.clone(),
                region: s.region.clone(),
            };
            let drift = |cause, detail: String| StackDrift {
                stack: s.name.clone(),
                account: s.account.clone(),
                cause,
                detail,
            };
            if let Err(e) = api.connect(&at).await {
                stacks.push(drift(Cause::Unreadable, super::first_line(&e)));
                continue;
            }
            let info = match api.describe_stack(&at, &s.name).await {
                Ok(Some(i)) => i,
                Ok(None) => {
                    stacks.push(drift(Cause::Missing, "the stack does not exist".to_owned()));
                    continue;
                }
                Err(e) => {
                    stacks.push(drift(Cause::Unreadable, e.text()));
                    continue;
                }
            };
            if !matches!(
                info.status.as_str(),
                "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE"
            ) {
                stacks.push(drift(Cause::Failed, info.status.clone()));
                continue;
            }
            let deployed: Option<serde_json::Value> = match api.get_template(&at, &s.name).await {
                Ok(t) => t.and_then(|t| serde_json::from_str(&t).ok()),
                Err(e) => {
                    stacks.push(drift(Cause::Unreadable, e.text()));
                    continue;
                }
            };
            let hash = deployed.as_ref().and_then(deployed_hash);
            if hash.as_deref() != Some(s.content_hash.as_str()) {
                stacks.push(drift(
                    Cause::Replaced,
                    format!(
                        "content hash {} (recorded {})",
                        hash.as_deref().unwrap_or("none"),
                        s.content_hash
                    ),
                ));
                continue;
            }
            let key = format!("{}deploy/{}.json", record.bundle, s.name);
            let ours: Option<serde_json::Value> = reader
                .object(&key, crate::publish::archive::MAX_ENTRY as usize)
                .await
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let (Some(ours), Some(theirs)) = (ours, deployed) {
                let edited = edited_resources(&ours, &theirs);
                if !edited.is_empty() {
                    stacks.push(drift(Cause::Edited, edited.join(", ")));
                    continue;
                }
            }
            match api
                .resource_drifts(&at, &s.name, DETECTION_POLL, DETECTION_ATTEMPTS)
                .await
            {
                Ok(d) if d.is_empty() => {}
                Ok(d) => stacks.push(drift(Cause::ResourceDrift, resource_detail(&d))),
                Err(e) => stacks.push(drift(Cause::Unreadable, e.text())),
            }
        }
        PipelineDrift {
            pipeline: record.pipeline.clone(),
            team: record.team.clone(),
            stacks,
            unchecked: None,
        }
    }
}

/// How often a drift detection's status is read, and how many times.
const DETECTION_POLL: std::time::Duration = std::time::Duration::from_secs(2);
const DETECTION_ATTEMPTS: u32 = 150;

/// `BuildProject (/Source/BuildSpec), DeployRole (deleted)`.
pub fn resource_detail(drifts: &[ResourceDrift]) -> String {
    drifts
        .iter()
        .map(|d| {
            let what = if d.status == "DELETED" {
                "deleted".to_owned()
            } else {
                d.properties.join(" ")
            };
            format!("{} ({what})", d.logical_id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The logical ids whose definition differs between two templates (added or removed too).
pub fn edited_resources(ours: &serde_json::Value, theirs: &serde_json::Value) -> Vec<String> {
    let res = |t: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        t.get("Resources")
            .and_then(|r| r.as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (a, b) = (res(ours), res(theirs));
    let mut ids: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Drifted pipelines per cause.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DriftSummary {
    /// Pipelines checked.
    pub checked: usize,
    /// Pipelines in sync.
    pub in_sync: usize,
    /// Pipelines not checked (no record).
    pub unchecked: usize,
    /// Drifted pipelines per cause.
    pub causes: BTreeMap<Cause, Vec<String>>,
}

impl DriftSummary {
    /// Counts one pipeline.
    pub fn add(&mut self, d: &PipelineDrift) {
        self.checked += 1;
        if d.unchecked.is_some() {
            self.unchecked += 1;
        } else if d.stacks.is_empty() {
            self.in_sync += 1;
        }
        for s in &d.stacks {
            let v = self.causes.entry(s.cause).or_default();
            if v.last() != Some(&d.pipeline) {
                v.push(d.pipeline.clone());
            }
        }
    }

    /// True when anything drifted.
    pub fn drifted(&self) -> bool {
        !self.causes.is_empty()
    }

    /// The pipelines a redeploy can fix (stacks missing, replaced or edited), in name order.
    pub fn fixable(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            Cause::Missing,
            Cause::Replaced,
            Cause::Edited,
            Cause::ResourceDrift,
        ]
        .iter()
        .filter_map(|c| self.causes.get(c))
        .flatten()
        .cloned()
        .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::edited_resources;

    #[test]
    fn edited_resources_name_what_differs() {
        let a = serde_json::json!({"Resources": {"A": {"Type": "X"}, "B": {"Type": "Y"}}});
        let b = serde_json::json!({"Resources": {"A": {"Type": "X", "Properties": {"T": 9}}, "C": {"Type": "Z"}}});
        assert_eq!(edited_resources(&a, &b), ["A", "B", "C"]);
        assert!(edited_resources(&a, &a).is_empty());
    }
}
