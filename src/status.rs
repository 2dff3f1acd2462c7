//! `pipeforge status NAME`: a deployed pipeline's owner, its stacks, their status and last
//! update.
//!
//! The owner comes from the owner record (`pipelines/<name>/owner.json` in the org source
//! bucket, with every transfer); without one, from the pipeline stack's metadata.
//!
//! The pipeline stack (`<prefix>-<name>-pipeline` in the tooling account the owner record's
//! placement names; the home one without a record) is the entry point:
//! its deployed template lists every stack of the pipeline (`Metadata.pipeforge.deployment`,
//! written by `deploy`), with account and region; each is then described where it lives (target
//! accounts through the org's bootstrap role).

use serde::Serialize;

use crate::aws::AwsContext;
use crate::deploy::api::{Location, StackApi};
use crate::deploy::sdk::SdkStackApi;
use crate::error::{Error, Result};
use crate::org::OrgPolicy;
use crate::owner::{OwnerRecord, read_record};
use crate::publish::templates::{StackRef, deployed_hash, deployed_stacks};

/// One stack's state.
#[derive(Clone, Debug, Serialize)]
pub struct StackState {
    /// Stack name.
    pub name: String,
    /// `target`, `region` or `pipeline`.
    pub kind: String,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// The environment, for target stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// CloudFormation status; `None` when the stack does not exist.
    pub status: Option<String>,
    /// Status reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Last update (or creation) time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// The content hash of the deployed template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Why the stack could not be read (e.g. the bootstrap role could not be assumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StackState {
    /// True when the stack exists and is in a settled, successful state.
    pub fn healthy(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| matches!(s, "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE"))
    }
}

/// A pipeline's stacks.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// Pipeline (manifest name).
    pub pipeline: String,
    /// Team: the owner record's, else as the pipeline stack records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The owner record (who owns the pipeline, how it was claimed, every transfer); `None`
    /// for a pipeline deployed before owner records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRecord>,
    /// Why the owner record could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_error: Option<String>,
    /// Every stack, in deploy order.
    pub stacks: Vec<StackState>,
}

impl StatusReport {
    /// True when every stack exists and is settled.
    pub fn healthy(&self) -> bool {
        self.stacks.iter().all(StackState::healthy)
    }
}

/// Looks up pipeline `name` (optionally checking that it belongs to `team`) under `org`.
pub async fn status(
    name: &str,
    team: Option<&str>,
    org: &OrgPolicy,
    aws: &AwsContext,
) -> Result<StatusReport> {
    let o = &org.org;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(Error::other(
            format!("`{name}` is not a pipeline name"),
            "pass the `name` of the pipeline's manifest (lower-case letters, digits and dashes)",
        ));
    }
    let stack = format!("{}-{name}-pipeline", o.naming.prefix);
    // The owner record (home account) says where the pipeline lives.
    let (owner, owner_error) = match owner_record(aws, org, name).await {
        Ok(r) => (r, None),
        Err(e) => (
            None,
            Some(e.to_string().lines().next().unwrap_or_default().to_owned()),
        ),
    };
    let placed = match &owner {
        Some(r) => crate::deploy::placement::recorded(org, r)?.0,
        None => org.home(),
    };
    let tooling = Location {
        account: placed.account,
        region: placed.region,
    };
    let api = SdkStackApi::new(aws, &o.deploy.bootstrap_role, &format!("pipeforge-{name}"));
    api.connect(&tooling).await?;
    let api_err = |what: &str, e: crate::deploy::api::ApiError| {
        Error::Aws {
        action: format!(
            "{what} stack `{stack}` (account {}, {})",
            tooling.account, tooling.region
        ),
        code: e.code.clone(),
        message: e.text(),
        help: "check the credentials: they must be able to read CloudFormation stacks in the tooling account".to_owned(),
    }
    };
    let info = api
        .describe_stack(&tooling, &stack)
        .await
        .map_err(|e| api_err("describe", e))?
        .ok_or_else(|| {
            Error::other(
                format!(
                    "pipeline `{name}` is not deployed: there is no stack `{stack}` in account {} ({})",
                    tooling.account, tooling.region
                ),
                "check the name (the manifest's `name`) and `--org`; deploy it with `pipeforge deploy`",
            )
        })?;
    let template: Option<serde_json::Value> = api
        .get_template(&tooling, &stack)
        .await
        .map_err(|e| api_err("read the template of", e))?
        .and_then(|t| serde_json::from_str(&t).ok());
    let recorded_team = owner.as_ref().map(|r| r.team.clone()).or_else(|| {
        template
            .as_ref()
            .and_then(|t| t.get("Metadata")?.get("pipeforge")?.get("team")?.as_str())
            .map(str::to_owned)
    });
    if let (Some(want), Some(got)) = (team, recorded_team.as_deref())
        && want != got
    {
        return Err(Error::other(
            format!("pipeline `{name}` belongs to team `{got}`, not `{want}`"),
            "check `--team` (or leave it out)",
        ));
    }
    let refs = template
        .as_ref()
        .and_then(deployed_stacks)
        .unwrap_or_else(|| {
            vec![StackRef {
                name: stack.clone(),
                kind: "pipeline".to_owned(),
                account: tooling.account.clone(),
                region: tooling.region.clone(),
                environment: None,
            }]
        });
    let mut stacks = Vec::new();
    for r in refs {
        let at = Location {
            account: r.account.clone(),
            region: r.region.clone(),
        };
        let mut state = StackState {
            name: r.name.clone(),
            kind: r.kind.clone(),
            account: r.account.clone(),
            region: r.region.clone(),
            environment: r.environment.clone(),
            status: None,
            reason: None,
            last_updated: None,
            content_hash: None,
            error: None,
        };
        let found = if r.name == stack {
            Ok(Some(info.clone()))
        } else {
            match api.connect(&at).await {
                Ok(()) => api.describe_stack(&at, &r.name).await.map_err(|e| e.text()),
                Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_owned()),
            }
        };
        match found {
            Ok(Some(i)) => {
                state.status = Some(i.status);
                state.reason = i.reason;
                state.last_updated = i.updated.or(i.created);
                let t = if r.name == stack {
                    template.clone()
                } else {
                    api.get_template(&at, &r.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|t| serde_json::from_str(&t).ok())
                };
                state.content_hash = t.as_ref().and_then(deployed_hash);
            }
            Ok(None) => {}
            Err(e) => state.error = Some(e),
        }
        stacks.push(state);
    }
    Ok(StatusReport {
        pipeline: name.to_owned(),
        team: recorded_team,
        owner,
        owner_error,
        stacks,
    })
}

/// The owner record of pipeline `name`, read from the home tooling account's bucket.
async fn owner_record(
    aws: &AwsContext,
    org: &OrgPolicy,
    name: &str,
) -> Result<Option<OwnerRecord>> {
    let role = &org.org.deploy.bootstrap_role;
    let store = crate::deploy::placement::records_store(aws, org, name, role).await?;
    Ok(read_record(&store).await?.map(|(_, r)| r))
}
