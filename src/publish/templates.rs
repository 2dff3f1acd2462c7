//! The stack templates exactly as they are deployed: each rendered stack with
//! `Metadata.pipeforge.deployment` added — the stack's content hash and, in the pipeline stack,
//! the list of the pipeline's stacks (which `pipeforge status` reads back) and the pipeline's
//! owner (team and repository, which the owner check reads back when the owner record is
//! missing).
//!
//! The content hash covers everything a deploy sends for the stack: the template, its
//! capabilities, stack tags and the deployment metadata itself (parameters read from other
//! stacks at deploy time are compared with the deployed stack's separately). A
//! deployed stack whose template carries the same hash is up to date, and is skipped without
//! creating a change set. Keeping the hash in the template (not in a stack tag) matters: stack
//! tags propagate to every resource, so a tag that changed on every deploy would modify every
//! resource.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::outputs::{Outputs, sha256};
use crate::plan::{Plan, StackKind, StackPlan};

/// Version of the deployment format; part of every content hash.
pub const DEPLOY_FORMAT: &str = "pipeforge/deploy/v1";

/// Directory of the deployed templates inside a bundle.
pub const DEPLOY_DIR: &str = "deploy";

/// The largest `TemplateBody` CloudFormation accepts; larger templates go by `TemplateURL`.
pub const TEMPLATE_BODY_LIMIT: usize = 51_200;

/// One stack of the pipeline, as `Metadata.pipeforge.deployment.stacks` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRef {
    /// Stack name.
    pub name: String,
    /// `target`, `region` or `pipeline`.
    pub kind: String,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// The environment, for target stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// A parameter whose value is another stack's output, read at deploy time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterSource {
    /// The parameter.
    pub key: String,
    /// The stack with the output.
    pub stack: String,
    /// Its account.
    pub account: String,
    /// Its region.
    pub region: String,
    /// The output.
    pub output: String,
}

/// A stack ready to deploy.
#[derive(Clone, Debug)]
pub struct DeployTemplate {
    /// The stack as planned.
    pub stack: StackPlan,
    /// The template body.
    pub body: String,
    /// `sha256:<hex>` of everything deployed for the stack.
    pub content_hash: String,
    /// Its path in the bundle (`deploy/<stack>.json`).
    pub bundle_path: String,
    /// Stack tags (the pipeline's tags: `team`, `pipeline` and the manifest's).
    pub tags: Vec<(String, String)>,
    /// Capabilities to acknowledge.
    pub capabilities: Vec<String>,
    /// Parameters, from other stacks' outputs (the pipeline stack's regional artifact keys).
    pub parameters: Vec<ParameterSource>,
}

impl DeployTemplate {
    /// True when the body is too large for `TemplateBody`.
    pub fn needs_url(&self) -> bool {
        self.body.len() > TEMPLATE_BODY_LIMIT
    }
}

fn bug(message: String) -> Error {
    Error::other(message, "this is a pipeforge bug; please report it")
}

/// `target`, `region` or `pipeline`.
pub fn kind_name(kind: StackKind) -> &'static str {
    match kind {
        StackKind::Target => "target",
        StackKind::Region => "region",
        StackKind::Pipeline => "pipeline",
    }
}

/// The pipeline's stacks as the pipeline stack records them.
pub fn stack_refs(plan: &Plan) -> Vec<StackRef> {
    plan.stacks
        .iter()
        .map(|s| StackRef {
            name: s.name.clone(),
            kind: kind_name(s.kind).to_owned(),
            account: s.account.clone(),
            region: s.region.clone(),
            environment: s.environment.clone(),
        })
        .collect()
}

/// Every stack of the plan, in deploy order, ready to deploy; the pipeline stack records
/// `owner` (the team and repository the deploy comes from).
pub fn deploy_templates(
    plan: &Plan,
    outputs: &Outputs,
    owner: &crate::owner::Owner,
) -> Result<Vec<DeployTemplate>> {
    let tags: Vec<(String, String)> = plan
        .pipeline
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let refs = stack_refs(plan);
    let mut out = Vec::with_capacity(plan.stacks.len());
    for stack in &plan.stacks {
        let text = outputs
            .text(&stack.file)
            .ok_or_else(|| bug(format!("`{}` is missing from the bundle", stack.file)))?;
        let mut template: Json = serde_json::from_str(text)
            .map_err(|e| bug(format!("`{}` is not JSON: {e}", stack.file)))?;
        let mut deployment = serde_json::Map::new();
        deployment.insert("format".to_owned(), Json::from(DEPLOY_FORMAT));
        if stack.kind == StackKind::Pipeline {
            deployment.insert(
                "stacks".to_owned(),
                serde_json::to_value(&refs).map_err(|e| bug(e.to_string()))?,
            );
            deployment.insert(
                "owner".to_owned(),
                serde_json::to_value(owner).map_err(|e| bug(e.to_string()))?,
            );
        }
        let capabilities: Vec<String> = stack.capabilities.iter().map(|c| c.to_string()).collect();
        let meta = template
            .as_object_mut()
            .ok_or_else(|| bug(format!("`{}` is not a JSON object", stack.file)))?
            .entry("Metadata")
            .or_insert_with(|| Json::Object(Default::default()));
        let pf = meta
            .as_object_mut()
            .ok_or_else(|| bug(format!("`{}`: `Metadata` is not an object", stack.file)))?
            .entry("pipeforge")
            .or_insert_with(|| Json::Object(Default::default()));
        let pf = pf.as_object_mut().ok_or_else(|| {
            bug(format!(
                "`{}`: `Metadata.pipeforge` is not an object",
                stack.file
            ))
        })?;
        pf.insert("deployment".to_owned(), Json::Object(deployment.clone()));
        // The hash of what is sent (template with the deployment block, capabilities, tags),
        // before the hash itself is added.
        let hashed = serde_json::json!({
            "format": DEPLOY_FORMAT,
            "template": template,
            "parameters": {},
            "capabilities": capabilities,
            "tags": tags,
        });
        let content_hash = sha256(
            serde_json::to_string(&hashed)
                .map_err(|e| bug(e.to_string()))?
                .as_bytes(),
        );
        deployment.insert("content_hash".to_owned(), Json::from(content_hash.clone()));
        if let Some(pf) = template
            .get_mut("Metadata")
            .and_then(|m| m.get_mut("pipeforge"))
            .and_then(Json::as_object_mut)
        {
            pf.insert("deployment".to_owned(), Json::Object(deployment));
        }
        let mut body = serde_json::to_string_pretty(&template).map_err(|e| bug(e.to_string()))?;
        body.push('\n');
        out.push(DeployTemplate {
            stack: stack.clone(),
            body,
            content_hash,
            bundle_path: format!("{DEPLOY_DIR}/{}.json", stack.name),
            tags: tags.clone(),
            capabilities,
            parameters: if stack.kind == StackKind::Pipeline {
                plan.stacks
                    .iter()
                    .filter(|s| s.kind == StackKind::Region)
                    .map(|s| ParameterSource {
                        key: crate::names::region_key_parameter(&s.region),
                        stack: s.name.clone(),
                        account: s.account.clone(),
                        region: s.region.clone(),
                        output: "ArtifactKeyArn".to_owned(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        });
    }
    Ok(out)
}

/// `Metadata.pipeforge.deployment` of a deployed template, if it has one.
fn deployment(template: &Json) -> Option<&Json> {
    template
        .get("Metadata")?
        .get("pipeforge")?
        .get("deployment")
}

/// The content hash recorded in a deployed template.
pub fn deployed_hash(template: &Json) -> Option<String> {
    deployment(template)?
        .get("content_hash")?
        .as_str()
        .map(str::to_owned)
}

/// The stacks a deployed pipeline stack lists.
pub fn deployed_stacks(template: &Json) -> Option<Vec<StackRef>> {
    serde_json::from_value(deployment(template)?.get("stacks")?.clone()).ok()
}

/// A template as pipeforge compares it: parsed, without the deployment block, keys sorted,
/// printed like pretty JSON except that multi-line strings (inline buildspecs) are shown as
/// indented `|` blocks, one line per line, so that a diff points at the changed line. `None`
/// when the text is not JSON (a stack not deployed by pipeforge).
pub fn comparable(text: &str) -> Option<String> {
    let mut v: Json = serde_json::from_str(text).ok()?;
    if let Some(pf) = v
        .get_mut("Metadata")
        .and_then(|m| m.get_mut("pipeforge"))
        .and_then(Json::as_object_mut)
    {
        pf.remove("deployment");
    }
    let v = crate::outputs::sort_keys(v);
    let mut s = String::new();
    view(&v, 0, &mut s);
    s.push('\n');
    Some(s)
}

fn view(v: &Json, indent: usize, out: &mut String) {
    let pad = |n: usize| " ".repeat(n);
    match v {
        Json::Object(m) if !m.is_empty() => {
            out.push_str("{\n");
            let n = m.len();
            for (i, (k, x)) in m.iter().enumerate() {
                out.push_str(&pad(indent + 2));
                out.push_str(&Json::from(k.as_str()).to_string());
                out.push_str(": ");
                view(x, indent + 2, out);
                out.push_str(if i + 1 < n { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        Json::Array(a) if !a.is_empty() => {
            out.push_str("[\n");
            let n = a.len();
            for (i, x) in a.iter().enumerate() {
                out.push_str(&pad(indent + 2));
                view(x, indent + 2, out);
                out.push_str(if i + 1 < n { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Json::String(text) if text.contains('\n') => {
            out.push('|');
            for line in text.lines() {
                out.push('\n');
                out.push_str(&pad(indent + 2));
                out.push_str(line);
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparable_templates_show_multi_line_strings_line_by_line() {
        let t = r#"{"Resources": {"P": {"Properties": {"BuildSpec": "version: 0.2\nphases:\n  build: x\n", "N": 1}}},
                   "Metadata": {"pipeforge": {"team": "t", "deployment": {"content_hash": "sha256:1"}}}}"#;
        let c = comparable(t).expect("json");
        assert!(!c.contains("content_hash"), "{c}");
        assert!(
            c.contains(
                "\"BuildSpec\": |\n          version: 0.2\n          phases:\n            build: x"
            ),
            "{c}"
        );
        assert!(c.contains("\"N\": 1"), "{c}");
        assert_eq!(comparable("not json"), None);
    }
}
