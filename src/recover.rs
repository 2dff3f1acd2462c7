//! `pipeforge recover NAME --env ENV`: clears an application stack whose first create failed.
//!
//! A failed first create leaves the application stack in `ROLLBACK_COMPLETE`: empty, and
//! neither updatable nor deletable by the pipeline (`CHANGE_SET_REPLACE` fails on it, and the
//! deploy roles hold no `DeleteStack`). This command is the governed way out, run by a platform
//! engineer, never by a pipeline or the webhook worker:
//!
//! 1. the environment's account, region and application stack come from the *deployed*
//!    pipeline stack (its CloudFormation action of stage `Deploy-<env>`), not from a manifest;
//! 2. under the pipeline's deploy lock, the stack is described through the org's recovery
//!    role (`<bootstrap_role>-recovery`, which only the bootstrap's additional trusted role may
//!    assume);
//! 3. only `ROLLBACK_COMPLETE` is deleted, by **stack id** (a stack created again under the same
//!    name meanwhile is another id, never touched), through the recovery execution role, which
//!    holds no permissions: CloudFormation can remove a stack through it only when no resource
//!    is left in it. Every other status is refused with what to do instead.
//!
//! Why not the CloudFormation action's `REPLACE_ON_FAILURE` mode: it deploys without a change
//! set (no review before an approval), and it deletes stacks in `ROLLBACK_FAILED`,
//! `DELETE_FAILED` and `UPDATE_ROLLBACK_FAILED` too — a production stack whose update failed to
//! roll back would lose its resources; AWS recommends it for testing only. Why not a recovery
//! step in the pipeline: every run would then hold `DeleteStack` on the application stack,
//! which IAM cannot limit to a stack status.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value as Json;

use crate::aws::AwsContext;
use crate::deploy::api::{ApiErrorKind, Location, StackApi, StackInfo};
use crate::deploy::sdk::SdkStackApi;
use crate::error::{Error, Result};
use crate::names::{InstallNames, pipeline_stack_name};
use crate::org::OrgPolicy;
use crate::publish::progress::{Event, Progress};
use crate::publish::store::SourceStore;

/// The one status `recover` deletes.
pub const RECOVERABLE: &str = "ROLLBACK_COMPLETE";

/// How long to wait.
#[derive(Clone, Copy, Debug)]
pub struct RecoverOptions {
    /// Longest wait for the deploy lock, and for the delete.
    pub timeout: Duration,
    /// First poll interval (grows by half up to `max_poll`).
    pub poll: Duration,
    /// Largest poll interval.
    pub max_poll: Duration,
    /// How long the lock stays valid without renewal.
    pub lock_lease: Duration,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            timeout: Duration::from_secs(1800),
            poll: Duration::from_secs(2),
            max_poll: Duration::from_secs(15),
            lock_lease: Duration::from_secs(300),
        }
    }
}

/// What `recover` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The stack was in `ROLLBACK_COMPLETE` and is deleted.
    Deleted,
    /// There is no such stack: the pipeline's next run creates it.
    NothingToRecover,
}

/// The report of a recovery.
#[derive(Clone, Debug, Serialize)]
pub struct RecoverReport {
    /// Pipeline.
    pub pipeline: String,
    /// Environment.
    pub environment: String,
    /// The application stack.
    pub stack: String,
    /// Its account.
    pub account: String,
    /// Its region.
    pub region: String,
    /// Its status before (none when missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its id, when it existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    /// What happened.
    pub outcome: Outcome,
}

/// Where an environment's application stack is, as the deployed pipeline says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStack {
    /// The application stack's name.
    pub stack: String,
    /// Account and region.
    pub at: Location,
}

/// The application stack of environment `env` in a deployed pipeline stack's template: the
/// `CHANGE_SET_REPLACE` action of stage `Deploy-<env>` (its `StackName`, the account of its
/// `RoleArn`, its `Region` or the pipeline's).
pub fn app_stack(template: &Json, env: &str, tooling_region: &str) -> Result<AppStack> {
    let stages: Vec<&Json> = template
        .get("Resources")
        .and_then(Json::as_object)
        .into_iter()
        .flat_map(|r| r.values())
        .filter(|r| r["Type"] == "AWS::CodePipeline::Pipeline")
        .flat_map(|r| r["Properties"]["Stages"].as_array().into_iter().flatten())
        .collect();
    let stage_name = format!("Deploy-{env}");
    let Some(stage) = stages.iter().find(|s| s["Name"] == stage_name.as_str()) else {
        let envs: Vec<String> = stages
            .iter()
            .filter_map(|s| s["Name"].as_str()?.strip_prefix("Deploy-"))
            .map(|e| format!("`{e}`"))
            .collect();
        return Err(Error::other(
            format!("the deployed pipeline has no environment `{env}`"),
            format!("its environments are {}", envs.join(", ")),
        ));
    };
    let action = stage["Actions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["Configuration"]["ActionMode"] == "CHANGE_SET_REPLACE")
        .ok_or_else(|| {
            Error::other(
                format!("stage `{stage_name}` of the deployed pipeline creates no change set"),
                "deploy the pipeline again with `pipeforge deploy`",
            )
        })?;
    let role = action["RoleArn"]
        .as_str()
        .or_else(|| action["RoleArn"]["Fn::Sub"].as_str())
        .unwrap_or_default();
    // `arn:${AWS::Partition}:iam::<account>:role/...` (the partition variable has colons).
    let account = role
        .split_once(":iam::")
        .and_then(|(_, r)| r.split(':').next())
        .unwrap_or_default();
    let stack = action["Configuration"]["StackName"]
        .as_str()
        .unwrap_or_default();
    let well_formed = account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && !stack.is_empty()
        && stack.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !well_formed {
        return Err(Error::other(
            format!(
                "the action of stage `{stage_name}` names no account or stack pipeforge can read"
            ),
            "deploy the pipeline again with `pipeforge deploy`",
        ));
    }
    Ok(AppStack {
        stack: stack.to_owned(),
        at: Location {
            account: account.to_owned(),
            region: action["Region"]
                .as_str()
                .unwrap_or(tooling_region)
                .to_owned(),
        },
    })
}

/// Why a stack in `status` is not deleted, and what to do instead.
fn refusal(app: &AppStack, info: &StackInfo) -> Error {
    let (stack, account, region) = (&app.stack, &app.at.account, &app.at.region);
    let help = match info.status.as_str() {
        s if s.ends_with("_IN_PROGRESS") => {
            "an operation is running on it; wait for it to finish and look again".to_owned()
        }
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE" | "UPDATE_ROLLBACK_COMPLETE" => {
            "it is healthy: the pipeline's next run updates it with a change set; retry the failed stage (`aws codepipeline retry-stage-execution`) or start the pipeline".to_owned()
        }
        "UPDATE_ROLLBACK_FAILED" => format!(
            "fix the cause named in its events, then `aws cloudformation continue-update-rollback --stack-name {stack} --region {region}` in account {account}; its resources stay"
        ),
        "CREATE_FAILED" | "ROLLBACK_FAILED" | "DELETE_FAILED" | "UPDATE_FAILED" => format!(
            "resources may be left in it: look at its events in account {account} ({region}) and clean it up by hand; pipeforge deletes only stacks with nothing left in them"
        ),
        _ => format!("look at the stack in the CloudFormation console (account {account}, {region})"),
    };
    Error::other(
        format!(
            "stack `{stack}` (account {account}, {region}) is {}; `pipeforge recover` deletes only a stack whose first create failed ({RECOVERABLE})",
            info.status
        ),
        help,
    )
}

/// The recovery itself, on a stack API: describe, refuse anything but [`RECOVERABLE`], delete by
/// id through `exec_role`, wait until it is gone.
pub async fn recover_stack<A: StackApi>(
    api: &A,
    app: &AppStack,
    exec_role: &str,
    options: &RecoverOptions,
    progress: &dyn Progress,
) -> Result<(Option<StackInfo>, Outcome)> {
    let aws_err = |what: &str, e: crate::deploy::api::ApiError| {
        Error::Aws {
        action: format!(
            "{what} stack `{}` (account {}, {})",
            app.stack, app.at.account, app.at.region
        ),
        code: e.code.clone(),
        message: e.text(),
        help: "the recovery role must be able to describe and delete (through the recovery execution role) stacks in that account; deploy the org's target.json with `AdditionalTrustedRoleArn` set to your role".to_owned(),
    }
    };
    let Some(info) = api
        .describe_stack(&app.at, &app.stack)
        .await
        .map_err(|e| aws_err("describe", e))?
    else {
        return Ok((None, Outcome::NothingToRecover));
    };
    if info.status != RECOVERABLE {
        return Err(refusal(app, &info));
    }
    progress.event(&Event::Warning {
        message: format!(
            "stack `{}` is {RECOVERABLE} (its first create failed, nothing is left in it): deleting stack {}",
            app.stack, info.id
        ),
    });
    match api.delete_stack(&app.at, &info.id, Some(exec_role)).await {
        Ok(()) => {}
        // Someone deleted it meanwhile: the wait below sees it gone.
        Err(e) if e.kind == ApiErrorKind::StackNotFound => {}
        Err(e) => return Err(aws_err("delete", e)),
    }
    let deadline = Instant::now() + options.timeout;
    let mut delay = options.poll;
    loop {
        let now = api
            .describe_stack(&app.at, &info.id)
            .await
            .map_err(|e| aws_err("describe", e))?;
        match now.as_ref().map(|s| s.status.as_str()) {
            None | Some("DELETE_COMPLETE") => return Ok((Some(info), Outcome::Deleted)),
            Some("DELETE_IN_PROGRESS") | Some(RECOVERABLE) => {}
            Some(other) => {
                return Err(Error::other(
                    format!("deleting stack `{}` ended {other}", app.stack),
                    format!(
                        "look at its events in account {} ({}); a stack with resources left cannot be deleted through the recovery role",
                        app.at.account, app.at.region
                    ),
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::other(
                format!(
                    "gave up waiting for stack `{}` to be deleted after {} s",
                    app.stack,
                    options.timeout.as_secs()
                ),
                "CloudFormation keeps going on its own; run `pipeforge recover` again later",
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(options.max_poll);
    }
}

/// Recovers the application stack of environment `env` of pipeline `name` (see the module
/// docs), holding the pipeline's deploy lock.
pub async fn recover(
    name: &str,
    env: &str,
    org: &OrgPolicy,
    aws: &AwsContext,
    options: &RecoverOptions,
    progress: &dyn Progress,
) -> Result<RecoverReport> {
    let o = &org.org;
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !valid(name) || !valid(env) {
        return Err(Error::other(
            format!("`{name}` / `{env}` is not a pipeline and environment name"),
            "pass the manifest's `name` and an environment's `name` (lower-case letters, digits and dashes)",
        ));
    }
    let install = InstallNames::new(&o.naming.prefix, &o.deploy.bootstrap_role);
    // The tooling account the owner record places the pipeline in (records: home account).
    let placed =
        crate::deploy::placement::deployed_account(aws, org, name, &install.recovery_role).await?;
    let tooling = Location {
        account: placed.account,
        region: placed.region,
    };
    let session = format!("pipeforge-recover-{name}");
    let api = SdkStackApi::new(aws, &install.recovery_role, &session);
    let stack = pipeline_stack_name(&o.naming.prefix, name);
    let read_err = |e: crate::deploy::api::ApiError| Error::Aws {
        action: format!(
            "read stack `{stack}` (account {}, {})",
            tooling.account, tooling.region
        ),
        code: e.code.clone(),
        message: e.text(),
        help: "run it with credentials of the tooling account that may read pipeforge's stacks"
            .to_owned(),
    };
    let template: Json = api
        .get_template(&tooling, &stack)
        .await
        .map_err(read_err)?
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            Error::other(
                format!(
                    "pipeline `{name}` is not deployed: there is no stack `{stack}` in account {} ({})",
                    tooling.account, tooling.region
                ),
                "check the name (the manifest's `name`) and `--org`",
            )
        })?;
    let team = template
        .pointer("/Metadata/pipeforge/team")
        .and_then(Json::as_str)
        .filter(|t| valid(t))
        .ok_or_else(|| {
            Error::other(
                format!("stack `{stack}` does not say which team owns pipeline `{name}`"),
                "deploy the pipeline again with `pipeforge deploy`",
            )
        })?
        .to_owned();
    let app = app_stack(&template, env, &tooling.region)?;
    // The deploy lock is with the owner record, in the home account's bucket.
    let conf = aws
        .account(
            &o.tooling.account,
            &o.tooling.region,
            &install.recovery_role,
            &session,
        )
        .await?;
    let store = SourceStore::new(
        aws.s3(&conf, &o.tooling.region),
        &o.source.bucket,
        &o.tooling.region,
        &o.source.kms_key,
        &format!("{team}/{name}/"),
        &format!("{}{name}/", crate::plan::RECORDS_PREFIX),
    );
    let holder = format!("{} (recover {env})", crate::publish::default_holder());
    let lock = store
        .lock(&holder, options.lock_lease, options.timeout, progress)
        .await?;
    let exec_role = format!(
        "arn:{}:iam::{}:role/{}",
        crate::aws::partition(&app.at.region),
        app.at.account,
        install.recovery_execution_role
    );
    let result = async {
        api.connect(&app.at).await?;
        recover_stack(&api, &app, &exec_role, options, progress).await
    }
    .await;
    let released = lock.release().await;
    let (info, outcome) = result?;
    released?;
    Ok(RecoverReport {
        pipeline: name.to_owned(),
        environment: env.to_owned(),
        stack: app.stack,
        account: app.at.account,
        region: app.at.region,
        status: info.as_ref().map(|i| i.status.clone()),
        stack_id: info.map(|i| i.id),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline() -> Json {
        json!({"Resources": {"Pipeline": {"Type": "AWS::CodePipeline::Pipeline", "Properties": {
        "Stages": [
            {"Name": "Source", "Actions": []},
            {"Name": "Deploy-dev", "Actions": [{
                "RoleArn": {"Fn::Sub": "arn:${AWS::Partition}:iam::111111111111:role/pf-o-dev-deploy"},
                "Configuration": {"ActionMode": "CHANGE_SET_REPLACE", "StackName": "orders-api"}}]},
            {"Name": "Deploy-prod", "Actions": [{
                "RoleArn": {"Fn::Sub": "arn:${AWS::Partition}:iam::333333333333:role/pf-o-prod-deploy"},
                "Region": "eu-west-1",
                "Configuration": {"ActionMode": "CHANGE_SET_REPLACE", "StackName": "orders-api"}}]}
        ]}}}})
    }

    #[test]
    fn finds_each_environments_application_stack_in_the_deployed_pipeline() {
        let t = pipeline();
        let dev = app_stack(&t, "dev", "us-east-1").expect("dev");
        assert_eq!(dev.stack, "orders-api");
        assert_eq!(dev.at.account, "111111111111");
        assert_eq!(dev.at.region, "us-east-1");
        let prod = app_stack(&t, "prod", "us-east-1").expect("prod");
        assert_eq!(
            (prod.at.account.as_str(), prod.at.region.as_str()),
            ("333333333333", "eu-west-1")
        );
        let e = app_stack(&t, "qa", "us-east-1")
            .expect_err("no qa")
            .to_string();
        assert!(
            e.contains("no environment `qa`") && e.contains("`dev`, `prod`"),
            "{e}"
        );
    }
}
