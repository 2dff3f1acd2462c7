//! `pipeforge move PIPELINE --to ACCOUNT`: a platform engineer moves a deployed pipeline to
//! another tooling account of the org. Nothing else ever changes a placement.
//!
//! The steps, each safe to run again after a failure:
//!
//! 1. read the owner record (home account) and the deploy record (the old account's bucket:
//!    the manifest, repository and commit deployed), and render the pipeline for both
//!    accounts; the old account's stacks (pipeline and region stacks) that still exist are
//!    refused unless `--retire-old` is given, before anything changes;
//! 2. under the pipeline's lock, rewrite the owner record's placement (`by: move`) with a
//!    conditional write on the version read, and copy `source.zip` to the new bucket;
//! 3. deploy the pipeline in the new account, as a deploy from its deploy record does (the
//!    target stacks are updated in place to trust the new account, the region and pipeline
//!    stacks are created there; a deploy reads the new placement, so a failure here is
//!    finished by running `move` again, or by the next deploy);
//! 4. under the lock again: with `--retire-old`, empty the old pipeline stack's artifact bucket
//!    (every version and delete marker: CloudFormation deletes only an empty bucket; the
//!    bucket is the stack's own `ArtifactBucket`, checked against pipeforge's name for it,
//!    [`super::artifacts`]) and delete the stack, then the same for the old region stacks;
//!    delete the old deploy record and its listing keys (so the fleet sees the pipeline
//!    once); and clear the record's `moved_from` (the account a move that stopped is finished
//!    from).

use std::time::Instant;

use serde::Serialize;

use crate::Inputs;
use crate::aws::AwsContext;
use crate::capacity::PlacedBy;
use crate::error::{Error, Result};
use crate::names::InstallNames;
use crate::org::{OrgPolicy, ToolingAccount};
use crate::owner::{self, Placement};
use crate::plan::StackKind;
use crate::publish::progress::{Event, Progress};
use crate::publish::record::DeployedRecord;
use crate::publish::store::SourceStore;

use super::api::{ApiErrorKind, Location, StackApi};
use super::sdk::SdkStackApi;
use super::{DeployOptions, DeployOrigin, DeployReport, placement};

/// Options of [`relocate`].
#[derive(Clone, Debug)]
pub struct MoveOptions {
    /// The tooling account to move to.
    pub to: String,
    /// Delete the old account's stacks once the new ones are deployed.
    pub retire_old: bool,
    /// Who moves it (the lock holder, recorded).
    pub by: String,
    /// How the new stacks are deployed (timeouts, polls, the day).
    pub deploy: DeployOptions,
}

/// What [`relocate`] did.
#[derive(Clone, Debug, Serialize)]
pub struct MoveReport {
    /// The pipeline.
    pub pipeline: String,
    /// Where it was.
    pub from: Placement,
    /// Where it is now.
    pub to: Placement,
    /// False when it was there already (nothing done).
    pub changed: bool,
    /// The deploy into the new account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployReport>,
    /// The old account's stacks deleted (`--retire-old`).
    pub retired: Vec<String>,
}

fn placement_of(t: &ToolingAccount, by: PlacedBy) -> Placement {
    Placement {
        account: t.account.clone(),
        region: t.region.clone(),
        by,
        moved_from: None,
    }
}

/// The store of pipeline `name` of `team` in tooling account `t`.
async fn store_in(
    aws: &AwsContext,
    t: &ToolingAccount,
    role: &str,
    team: &str,
    name: &str,
) -> Result<SourceStore> {
    let conf = aws
        .account(&t.account, &t.region, role, &format!("pipeforge-{name}"))
        .await?;
    Ok(SourceStore::new(
        aws.s3(&conf, &t.region),
        &t.bucket,
        &t.region,
        &t.kms_key,
        &format!("{team}/{name}/"),
        &format!("{}{name}/", crate::plan::RECORDS_PREFIX),
    ))
}

/// Moves pipeline `name` to the tooling account `options.to` (see the module docs).
pub async fn relocate(
    name: &str,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &MoveOptions,
    progress: &dyn Progress,
) -> Result<MoveReport> {
    let org = &inputs.org;
    let to = destination(org, name, &options.to)?;
    let role = &org.org.deploy.bootstrap_role;
    let records = placement::records_store(aws, org, name, role).await?;
    records.check().await?;
    let (etag, record) = record_to_move(&records, name).await?;
    let ((from, by), resumed) = source_account(org, name, &record, &to)?;
    let from_placement = placement_of(&from, by);
    if from.account == to.account {
        return Ok(MoveReport::unchanged(name, from_placement));
    }
    // 1. What is deployed, rendered for both accounts; the old stacks that exist.
    let old_store = store_in(aws, &from, role, &record.team, name).await?;
    let new_store = store_in(aws, &to, role, &record.team, name).await?;
    let deployed = deployed_record(name, &old_store, &new_store, resumed).await?;
    let file = crate::SourceFile::new(&deployed.manifest.path, &deployed.manifest.text);
    let today = options.deploy.today;
    let first = crate::publish::prepare_text(file, &deployed.repository, inputs, today, progress)?;
    let new = first.placed_in(inputs, &to, progress)?;
    let old = first.placed_in(inputs, &from, progress)?;
    let api = SdkStackApi::new(aws, role, &crate::publish::session_name(new.plan()));
    let old_stacks = existing_tooling_stacks(&api, &old).await?;
    if !old_stacks.is_empty() && !options.retire_old {
        return Err(still_there(name, &from, &to, &old_stacks));
    }
    new_store.check().await?;
    // 2. The new placement, under the lock, on the record as read.
    let lock_options = crate::publish::PublishOptions {
        holder: Some(options.by.clone()),
        ..options.deploy.publish()
    };
    if !resumed {
        let read = RecordAsRead {
            store: &records,
            etag: &etag,
            record: &record,
        };
        let old_side = Side {
            account: &from,
            store: &old_store,
        };
        let new_side = Side {
            account: &to,
            store: &new_store,
        };
        flip(&read, &old_side, &new_side, &lock_options, progress).await?;
    }
    progress.event(&Event::Placed {
        account: to.account.clone(),
        region: to.region.clone(),
        by: PlacedBy::Move.as_str().to_owned(),
        new: false,
    });
    // 3. The stacks in the new account: a deploy of the deployed manifest.
    let report = deploy_moved(&new, &deployed, inputs, aws, options, progress).await?;
    // 4. The old account's stacks (`--retire-old`) and deploy record; the move is done.
    let install = InstallNames::new(&org.org.naming.prefix, role);
    let old_stacks = if options.retire_old {
        existing_tooling_stacks(&api, &old).await?
    } else {
        Vec::new()
    };
    let emptier = Emptier {
        aws,
        role,
        prefix: &org.org.naming.prefix,
        pipeline: name,
    };
    let retired = retire(
        &api,
        &records,
        (&install, &emptier),
        &old_stacks,
        &old_store,
        &lock_options,
        progress,
    )
    .await?;
    Ok(MoveReport {
        pipeline: name.to_owned(),
        from: from_placement,
        to: placement_of(&to, PlacedBy::Move),
        changed: true,
        deploy: Some(report),
        retired,
    })
}

impl MoveReport {
    /// The report of a pipeline that is where the move would put it already.
    fn unchanged(name: &str, at: Placement) -> MoveReport {
        MoveReport {
            pipeline: name.to_owned(),
            from: at.clone(),
            to: at,
            changed: false,
            deploy: None,
            retired: Vec::new(),
        }
    }
}

/// The owner record of pipeline `name` and its ETag; an error when it has none (a pipeline
/// that was never deployed has no placement to move).
async fn record_to_move(records: &SourceStore, name: &str) -> Result<(String, owner::OwnerRecord)> {
    owner::read_record(records).await?.ok_or_else(|| {
        Error::other(
            format!("pipeline `{name}` has no owner record: there is nothing to move"),
            "check the name and `--org`; a pipeline that was never deployed is placed by its first deploy",
        )
    })
}

/// The tooling account `to` names, for a valid pipeline name.
fn destination(org: &OrgPolicy, name: &str, to: &str) -> Result<ToolingAccount> {
    owner::check_pipeline_name(name)?;
    org.tooling_account(to).ok_or_else(|| {
        Error::other(
            format!("`{to}` is not one of the org's tooling accounts"),
            format!(
                "name `tooling.account` or one of `tooling_accounts`: {}",
                org.tooling_accounts()
                    .iter()
                    .map(|t| format!("`{}`", t.account))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// The account the pipeline moves from, with why it was there, and whether this finishes a
/// move that stopped after writing the new placement (it is then finished from the account it
/// was moved from).
fn source_account(
    org: &OrgPolicy,
    name: &str,
    record: &owner::OwnerRecord,
    to: &ToolingAccount,
) -> Result<((ToolingAccount, PlacedBy), bool)> {
    let (current, by) = placement::recorded(org, record)?;
    let resumed = record
        .placement
        .as_ref()
        .and_then(|p| p.moved_from.clone())
        .filter(|_| current.account == to.account);
    let Some(old) = resumed else {
        return Ok(((current, by), false));
    };
    let from = org.tooling_account(&old).ok_or_else(|| Error::Refused {
        message: format!(
            "pipeline `{name}` was moved from tooling account {old}, which the org policy no longer lists"
        ),
        help: "list the account again in `tooling_accounts` until the move is finished".to_owned(),
    })?;
    Ok(((from, PlacedBy::Move), true))
}

/// The deploy record in the old account (a resumed move may have retired it already: then the
/// new account's).
async fn deployed_record(
    name: &str,
    old_store: &SourceStore,
    new_store: &SourceStore,
    resumed: bool,
) -> Result<DeployedRecord> {
    let deployed = match old_store.read_deployed().await? {
        Some(d) => Some(d),
        // A resumed move may have retired the old record already.
        None if resumed => new_store.read_deployed().await?,
        None => None,
    };
    let Some((_, deployed)) = deployed else {
        return Err(Error::other(
            format!(
                "pipeline `{name}` has no deploy record in `{}`: a move renders what was deployed",
                old_store.url(&old_store.deployed_key())
            ),
            "deploy it once from its repository (`pipeforge deploy`), then move it",
        ));
    };
    Ok(deployed)
}

/// The refusal of a move without `--retire-old` while the old account has stacks.
fn still_there(
    name: &str,
    from: &ToolingAccount,
    to: &ToolingAccount,
    old_stacks: &[(&crate::plan::StackPlan, String)],
) -> Error {
    Error::Refused {
        message: format!(
            "pipeline `{name}` still has stacks in tooling account {} ({}): {}; nothing was changed",
            from.account,
            from.region,
            old_stacks
                .iter()
                .map(|(s, _)| format!("`{}`", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        help: format!(
            "pass `--retire-old` to delete them once the pipeline is deployed in {}, or delete them first (the pipeline stops until the move deploys it again)",
            to.account
        ),
    }
}

/// Deploys the pipeline rendered for the new account, as a deploy from its deploy record does.
async fn deploy_moved(
    new: &crate::publish::Prepared,
    deployed: &DeployedRecord,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &MoveOptions,
    progress: &dyn Progress,
) -> Result<DeployReport> {
    let origin = DeployOrigin {
        commit: deployed.commit.clone(),
        manifest: deployed.manifest.clone(),
        host: deployed.host.clone(),
        source: None,
        rollout: None,
        expect: None,
    };
    let deploy_options = DeployOptions {
        repository: Some(deployed.repository.clone()),
        holder: Some(options.by.clone()),
        ..options.deploy.clone()
    };
    // Boxed: a deploy's future is large.
    Box::pin(super::deploy_prepared(
        new,
        &origin,
        inputs,
        aws,
        &deploy_options,
        progress,
    ))
    .await
}

/// The tooling-account stacks of `prepared` (pipeline stack first, then region stacks) that
/// exist, with their stack ids.
async fn existing_tooling_stacks<'a, A: StackApi>(
    api: &A,
    prepared: &'a crate::publish::Prepared,
) -> Result<Vec<(&'a crate::plan::StackPlan, String)>> {
    let mut stacks: Vec<_> = prepared
        .plan()
        .stacks
        .iter()
        .filter(|s| s.kind != StackKind::Target)
        .collect();
    stacks.sort_by_key(|s| s.kind != StackKind::Pipeline);
    let mut out = Vec::new();
    for s in stacks {
        let at = Location {
            account: s.account.clone(),
            region: s.region.clone(),
        };
        let info = api.describe_stack(&at, &s.name).await.map_err(|e| Error::Aws {
            action: format!("describe stack `{}` (account {}, {})", s.name, at.account, at.region),
            code: e.code.clone(),
            message: e.text(),
            help: "the org's bootstrap role in the old tooling account needs cloudformation:DescribeStacks".to_owned(),
        })?;
        if let Some(i) = info.filter(|i| i.status != "DELETE_COMPLETE") {
            out.push((s, i.id));
        }
    }
    Ok(out)
}

/// Empties the artifact bucket of an old stack before it is deleted ([`super::artifacts`]).
struct Emptier<'a> {
    aws: &'a AwsContext,
    role: &'a str,
    prefix: &'a str,
    pipeline: &'a str,
}

impl Emptier<'_> {
    /// Empties the stack's own artifact bucket (named by the stack, checked), if it has one.
    async fn empty<A: StackApi>(
        &self,
        api: &A,
        s: &crate::plan::StackPlan,
        id: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let at = Location {
            account: s.account.clone(),
            region: s.region.clone(),
        };
        let Some(bucket) =
            super::artifacts::retired_bucket(api, &at, &s.name, id, self.prefix, self.pipeline)
                .await?
        else {
            return Ok(());
        };
        let session = format!("pipeforge-{}", self.pipeline);
        let conf = self
            .aws
            .account(&at.account, &at.region, self.role, &session)
            .await?;
        let s3 = self.aws.s3(&conf, &at.region);
        let n = super::artifacts::empty_bucket(&s3, &bucket).await?;
        progress.event(&Event::Warning {
            message: format!(
                "emptied artifact bucket `{bucket}` of stack `{}` ({n} object versions and delete markers)",
                s.name
            ),
        });
        Ok(())
    }
}

/// Empties and deletes the old stacks (in order, each waited for) and deletes the old deploy
/// record, then clears the record's `moved_from`, under the lock.
async fn retire<A: StackApi>(
    api: &A,
    records: &SourceStore,
    (install, emptier): (&InstallNames, &Emptier<'_>),
    stacks: &[(&crate::plan::StackPlan, String)],
    old_store: &SourceStore,
    lock_options: &crate::publish::PublishOptions,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    let (lock, _) = crate::publish::take_lock(records, lock_options, progress).await?;
    let work = async {
        let mut done = Vec::new();
        for (s, id) in stacks {
            lock.check()?;
            emptier.empty(api, s, id, progress).await?;
            lock.check()?;
            let role = super::execution_role_arn(install, s);
            delete_and_wait(api, s, id, &role, lock_options, progress).await?;
            done.push(s.name.clone());
        }
        old_store.delete_deployed().await?;
        // Done: the record forgets the old account (a later `move` to here changes nothing).
        lock.check()?;
        if let Some((etag, mut record)) = owner::read_record(records).await?
            && let Some(p) = record.placement.as_mut()
            && p.moved_from.take().is_some()
        {
            // Under the lock no other writer may change the record: a lost conditional write
            // means the lock was lost, and the retire stops like a move's flip does (a `move`
            // again finishes it: the old stacks are gone, the clear is all that is left).
            if !owner::write_owner_record(records, &record, Some(&etag)).await? {
                return Err(Error::Locked {
                    message: format!(
                        "the owner record of pipeline `{}` changed while its old stacks were retired",
                        record.pipeline
                    ),
                    help: "run `pipeforge move --retire-old` again: it reads the record again and finishes the retire".to_owned(),
                });
            }
        }
        Ok::<_, Error>(done)
    }
    .await;
    let released = lock.release().await;
    let done = work?;
    released?;
    Ok(done)
}

async fn delete_and_wait<A: StackApi>(
    api: &A,
    s: &crate::plan::StackPlan,
    id: &str,
    role_arn: &str,
    options: &crate::publish::PublishOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let at = Location {
        account: s.account.clone(),
        region: s.region.clone(),
    };
    let fail = |what: &str, e: super::api::ApiError| {
        Error::Aws {
        action: format!("{what} stack `{}` (account {}, {})", s.name, at.account, at.region),
        code: e.code.clone(),
        message: e.text(),
        help: "the org's bootstrap role in the old tooling account needs cloudformation:DeleteStack and iam:PassRole on the execution role; run `pipeforge move` again, or delete the stack by hand".to_owned(),
    }
    };
    progress.event(&Event::Warning {
        message: format!(
            "deleting stack `{}` in the old tooling account {} ({})",
            s.name, at.account, at.region
        ),
    });
    match api.delete_stack(&at, id, Some(role_arn)).await {
        Ok(()) => {}
        Err(e) if e.kind == ApiErrorKind::StackNotFound => return Ok(()),
        Err(e) => return Err(fail("delete", e)),
    }
    let deadline = Instant::now() + options.timeout;
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        let now = api
            .describe_stack(&at, id)
            .await
            .map_err(|e| fail("describe", e))?;
        match now.as_ref().map(|i| i.status.as_str()) {
            None | Some("DELETE_COMPLETE") => return Ok(()),
            Some("DELETE_IN_PROGRESS") => {}
            Some(other) => {
                return Err(Error::other(
                    format!("deleting stack `{}` ended {other}", s.name),
                    format!(
                        "look at its events in account {} ({}); run `pipeforge move` again once it is fixed",
                        at.account, at.region
                    ),
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::other(
                format!("gave up waiting for stack `{}` to be deleted", s.name),
                "CloudFormation keeps going on its own; run `pipeforge move` again later",
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 3 / 2).min(std::time::Duration::from_secs(5));
    }
}

/// The owner record as [`relocate`] read it: the store it lives in, its version (the move
/// writes on that version only) and its contents.
struct RecordAsRead<'a> {
    store: &'a SourceStore,
    etag: &'a str,
    record: &'a owner::OwnerRecord,
}

/// One side of a move: a tooling account and the pipeline's source store in it.
struct Side<'a> {
    account: &'a ToolingAccount,
    store: &'a SourceStore,
}

/// Copies `source.zip` from the old side's bucket to the new one's, then writes the new
/// placement (with the account it leaves) on the record as read, under the pipeline's lock.
async fn flip(
    read: &RecordAsRead<'_>,
    from: &Side<'_>,
    to: &Side<'_>,
    lock_options: &crate::publish::PublishOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let (records, record) = (read.store, read.record);
    let name = &record.pipeline;
    let (lock, _) = crate::publish::take_lock(records, lock_options, progress).await?;
    let flipped = async {
        let mut moved = record.clone();
        moved.placement = Some(Placement {
            moved_from: Some(from.account.account.clone()),
            ..placement_of(to.account, PlacedBy::Move)
        });
        // The snapshot first: a move that stops here has changed nothing (a copy in the new
        // bucket starts no pipeline before its stacks are deployed), where a record flipped
        // first would make the next run resume past a copy that never happened.
        lock.check()?;
        from.store
            .copy_source_to(to.store, lock_options.max_source_bytes)
            .await?;
        lock.check()?;
        if !owner::write_owner_record(records, &moved, Some(read.etag)).await? {
            return Err(Error::Locked {
                message: format!(
                    "the owner record of pipeline `{name}` changed while it was being moved"
                ),
                help: "run `pipeforge move` again: it reads the record again".to_owned(),
            });
        }
        Ok::<_, Error>(())
    }
    .await;
    let released = lock.release().await;
    flipped?;
    released
}
