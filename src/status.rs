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
use crate::deploy::api::{ApiError, Location, StackApi, StackInfo};
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
    check_name(name)?;
    let (owner, owner_error) = owner_or_error(aws, org, name).await;
    // The owner record (home account) says where the pipeline lives.
    let placed = match &owner {
        Some(r) => crate::deploy::placement::recorded(org, r)?.0,
        None => org.home(),
    };
    let tooling = Location {
        account: placed.account,
        region: placed.region,
    };
    let o = &org.org;
    let api = SdkStackApi::new(aws, &o.deploy.bootstrap_role, &format!("pipeforge-{name}"));
    api.connect(&tooling).await?;
    let stack = format!("{}-{name}-pipeline", o.naming.prefix);
    let pipeline = PipelineStack::read(&api, tooling, stack, name).await?;
    let recorded_team = owner
        .as_ref()
        .map(|r| r.team.clone())
        .or_else(|| pipeline.team());
    if let (Some(want), Some(got)) = (team, recorded_team.as_deref())
        && want != got
    {
        return Err(Error::other(
            format!("pipeline `{name}` belongs to team `{got}`, not `{want}`"),
            "check `--team` (or leave it out)",
        ));
    }
    let mut stacks = Vec::new();
    for r in pipeline.refs() {
        stacks.push(pipeline.state_of(&api, r).await);
    }
    Ok(StatusReport {
        pipeline: name.to_owned(),
        team: recorded_team,
        owner,
        owner_error,
        stacks,
    })
}

/// Refuses a `name` that is not a pipeline name (before it goes into a stack name).
fn check_name(name: &str) -> Result<()> {
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
    Ok(())
}

/// The owner record, or the first line of why it could not be read (the status is still
/// reported, from the home account).
async fn owner_or_error(
    aws: &AwsContext,
    org: &OrgPolicy,
    name: &str,
) -> (Option<OwnerRecord>, Option<String>) {
    match owner_record(aws, org, name).await {
        Ok(r) => (r, None),
        Err(e) => (None, Some(first_line(&e.to_string()))),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// The pipeline stack as deployed in its tooling account: the entry point of a status.
struct PipelineStack {
    tooling: Location,
    name: String,
    info: StackInfo,
    /// Its deployed template (`None` when it is not JSON).
    template: Option<serde_json::Value>,
}

impl PipelineStack {
    /// Describes the stack and reads its template; an error when it does not exist (the
    /// pipeline `pipeline` is not deployed) or cannot be read.
    async fn read(
        api: &SdkStackApi<'_>,
        tooling: Location,
        name: String,
        pipeline: &str,
    ) -> Result<PipelineStack> {
        let api_err = |what: &str, e: ApiError| {
            Error::Aws {
            action: format!(
                "{what} stack `{name}` (account {}, {})",
                tooling.account, tooling.region
            ),
            code: e.code.clone(),
            message: e.text(),
            help: "check the credentials: they must be able to read CloudFormation stacks in the tooling account".to_owned(),
        }
        };
        let info = api
            .describe_stack(&tooling, &name)
            .await
            .map_err(|e| api_err("describe", e))?
            .ok_or_else(|| {
                Error::other(
                    format!(
                        "pipeline `{pipeline}` is not deployed: there is no stack `{name}` in account {} ({})",
                        tooling.account, tooling.region
                    ),
                    "check the name (the manifest's `name`) and `--org`; deploy it with `pipeforge deploy`",
                )
            })?;
        let template = api
            .get_template(&tooling, &name)
            .await
            .map_err(|e| api_err("read the template of", e))?
            .and_then(|t| serde_json::from_str(&t).ok());
        Ok(PipelineStack {
            tooling,
            name,
            info,
            template,
        })
    }

    /// The team its template records.
    fn team(&self) -> Option<String> {
        let t = self.template.as_ref()?;
        let team = t.get("Metadata")?.get("pipeforge")?.get("team")?.as_str()?;
        Some(team.to_owned())
    }

    /// Every stack of the pipeline, as its template lists them (itself alone when it lists
    /// none).
    fn refs(&self) -> Vec<StackRef> {
        self.template
            .as_ref()
            .and_then(deployed_stacks)
            .unwrap_or_else(|| {
                vec![StackRef {
                    name: self.name.clone(),
                    kind: "pipeline".to_owned(),
                    account: self.tooling.account.clone(),
                    region: self.tooling.region.clone(),
                    environment: None,
                }]
            })
    }

    /// The state of stack `r`, described where it lives (the pipeline stack itself as already
    /// read); what could not be read is the state's `error`.
    async fn state_of(&self, api: &SdkStackApi<'_>, r: StackRef) -> StackState {
        let at = Location {
            account: r.account.clone(),
            region: r.region.clone(),
        };
        let itself = r.name == self.name;
        let mut state = StackState {
            name: r.name,
            kind: r.kind,
            account: r.account,
            region: r.region,
            environment: r.environment,
            status: None,
            reason: None,
            last_updated: None,
            content_hash: None,
            error: None,
        };
        let found = if itself {
            Ok(Some(self.info.clone()))
        } else {
            match api.connect(&at).await {
                Ok(()) => api
                    .describe_stack(&at, &state.name)
                    .await
                    .map_err(|e| e.text()),
                Err(e) => Err(first_line(&e.to_string())),
            }
        };
        match found {
            Ok(Some(i)) => {
                state.status = Some(i.status);
                state.reason = i.reason;
                state.last_updated = i.updated.or(i.created);
                let template = if itself {
                    self.template.clone()
                } else {
                    api.get_template(&at, &state.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|t| serde_json::from_str(&t).ok())
                };
                state.content_hash = template.as_ref().and_then(deployed_hash);
            }
            Ok(None) => {}
            Err(e) => state.error = Some(e),
        }
        state
    }
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
