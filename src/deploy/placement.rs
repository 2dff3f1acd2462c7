//! Where a pipeline lives, read back before every deploy, publish and `diff`.
//!
//! The owner record and the deploy lock of every pipeline, wherever it is placed, are kept in
//! the home tooling account's source bucket (`pipelines/<name>/owner.json` and `deploy.lock`,
//! [`records_store`]): one key per pipeline name in one bucket, so a name is unique across the
//! org (the record's conditional create decides between two first deploys) and no team can
//! claim a name in a second account that another team owns in the first. Everything else of a
//! pipeline (bundle, `source.zip`, `deployed.json`) lives in its placement's bucket.
//!
//! [`place`] reads the record: a recorded placement is used as it is (a change of the org's
//! rules, or a new tooling account, never moves a deployed pipeline); a placement naming an
//! account the org no longer lists is an error. Without a record, a pipeline whose stacks exist
//! in the home account (deployed before placements were recorded) stays there; a new one goes
//! to the first candidate of the org's rules ([`crate::capacity::candidates`]) with room for it
//! (its `capacity`, counted with `ListPipelines`). The deploy's claim then records it.

use crate::Inputs;
use crate::aws::AwsContext;
use crate::capacity::PlacedBy;
use crate::error::{Error, Result};
use crate::org::{OrgPolicy, ToolingAccount};
use crate::owner::{self, OwnerRecord};
use crate::plan::RECORDS_PREFIX;
use crate::publish::Prepared;
use crate::publish::progress::Progress;
use crate::publish::store::SourceStore;

use super::api::{Location, StackApi};

/// Where [`place`] put the pipeline.
#[derive(Debug)]
pub struct Placed {
    /// The pipeline rendered for its account; `None` when the first render was for it already.
    pub prepared: Option<Prepared>,
    /// The account.
    pub account: ToolingAccount,
    /// Why there (for a new claim).
    pub by: PlacedBy,
}

impl Placed {
    /// The prepared pipeline to deploy: the new render, else `first`.
    pub fn prepared<'a>(&'a self, first: &'a Prepared) -> &'a Prepared {
        self.prepared.as_ref().unwrap_or(first)
    }
}

/// The bucket of every pipeline's owner record and deploy lock: the home tooling account's
/// source bucket, under `pipelines/<name>/`, through the org's bootstrap role there.
pub async fn records_store(
    aws: &AwsContext,
    org: &OrgPolicy,
    name: &str,
    role: &str,
) -> Result<SourceStore> {
    let home = org.home();
    let conf = aws
        .account(
            &home.account,
            &home.region,
            role,
            &format!("pipeforge-{name}"),
        )
        .await?;
    let records = format!("{RECORDS_PREFIX}{name}/");
    Ok(SourceStore::new(
        aws.s3(&conf, &home.region),
        &home.bucket,
        &home.region,
        &home.kms_key,
        &records,
        &records,
    ))
}

/// The tooling account a deployed pipeline lives in: its owner record's placement, else (no
/// record: never deployed, or deployed before owner records) the home account.
pub async fn deployed_account(
    aws: &AwsContext,
    org: &OrgPolicy,
    name: &str,
    role: &str,
) -> Result<ToolingAccount> {
    if org.org.tooling_accounts.is_empty() {
        return Ok(org.home());
    }
    let records = records_store(aws, org, name, role).await?;
    match owner::read_record(&records).await? {
        Some((_, r)) => Ok(recorded(org, &r)?.0),
        None => Ok(org.home()),
    }
}

/// The source bucket of the deployed pipeline of `plan` (rendered with any placement): the
/// one of [`deployed_account`].
pub async fn deployed_store(
    aws: &AwsContext,
    org: &OrgPolicy,
    plan: &crate::plan::Plan,
    role: &str,
) -> Result<SourceStore> {
    let at = deployed_account(aws, org, &plan.pipeline.name, role).await?;
    crate::publish::source_store_in(aws, plan, role, &at).await
}

/// The tooling account a pipeline's owner record places it in (a record without a placement:
/// the home account, where every pipeline lived before placements were recorded). A placement
/// naming an account (or region) the org no longer lists is an error.
pub fn recorded(org: &OrgPolicy, record: &OwnerRecord) -> Result<(ToolingAccount, PlacedBy)> {
    let Some(p) = &record.placement else {
        return Ok((org.home(), PlacedBy::Legacy));
    };
    match org.tooling_account(&p.account) {
        Some(t) if t.region == p.region => Ok((t, p.by)),
        found => Err(Error::Refused {
            message: format!(
                "pipeline `{}` is placed in tooling account {} ({}) by its owner record, but the org policy {}",
                record.pipeline,
                p.account,
                p.region,
                match found {
                    Some(t) => format!("lists that account in region {}", t.region),
                    None => "no longer lists that account".to_owned(),
                }
            ),
            help: format!(
                "list the account again in `tooling_accounts` (as it was) until its pipelines are moved; a platform engineer moves this one with `pipeforge move {} --to ACCOUNT`",
                record.pipeline
            ),
        }),
    }
}

/// Where the pipeline of `first` (rendered with the org's first placement candidate) lives:
/// its recorded placement, else (a new pipeline) the org's rules. Renders again when that is
/// another account. Reads only: the deploy's claim, under the lock, records the placement.
pub async fn place<A: StackApi>(
    first: &Prepared,
    inputs: &Inputs,
    aws: &AwsContext,
    records: &SourceStore,
    api: &A,
    progress: &dyn Progress,
) -> Result<Placed> {
    let org = &inputs.org;
    let plan = first.plan();
    let (account, by) = match owner::read_record(records).await? {
        Some((_, record)) => recorded(org, &record)?,
        None => new_placement(first, inputs, aws, api).await?,
    };
    let same =
        account.account == plan.pipeline.tooling_account && account.region == plan.pipeline.region;
    let prepared = if same {
        None
    } else {
        Some(first.placed_in(inputs, &account, progress)?)
    };
    Ok(Placed {
        prepared,
        account,
        by,
    })
}

/// The account of a pipeline without an owner record.
async fn new_placement<A: StackApi>(
    first: &Prepared,
    inputs: &Inputs,
    aws: &AwsContext,
    api: &A,
) -> Result<(ToolingAccount, PlacedBy)> {
    let org = &inputs.org;
    let plan = first.plan();
    let candidates = crate::capacity::candidates(org, &plan.pipeline.name, &plan.pipeline.team);
    if candidates.by == PlacedBy::Home {
        return Ok((org.home(), PlacedBy::Home));
    }
    // Deployed before placements were recorded: it lives in the home account.
    let home = org.home();
    let at = Location {
        account: home.account.clone(),
        region: home.region.clone(),
    };
    let Some(stack) = plan
        .stacks
        .iter()
        .find(|s| s.kind == crate::plan::StackKind::Pipeline)
        .map(|s| &s.name)
    else {
        return Ok((candidates.accounts[0].clone(), candidates.by));
    };
    let exists = api.describe_stack(&at, stack).await.map_err(|e| Error::Aws {
        action: format!(
            "describe stack `{stack}` (account {}, {})",
            at.account, at.region
        ),
        code: e.code.clone(),
        message: e.text(),
        help: "the org's bootstrap role in the home tooling account needs cloudformation:DescribeStacks".to_owned(),
    })?;
    if exists.is_some_and(|i| i.status != "REVIEW_IN_PROGRESS" && i.status != "DELETE_COMPLETE") {
        return Ok((home, PlacedBy::Legacy));
    }
    if candidates.by != PlacedBy::Hash {
        // A rule of the org names the account; its capacity is judged by the deploy's check.
        return Ok((candidates.accounts[0].clone(), candidates.by));
    }
    let role = &org.org.deploy.bootstrap_role;
    let session = crate::publish::session_name(plan);
    let mut full = Vec::new();
    for t in &candidates.accounts {
        let Some(capacity) = t.capacity else {
            return Ok((t.clone(), PlacedBy::Hash));
        };
        let held =
            super::capacity::pipelines_in(aws, role, &session, &t.account, &t.region).await?;
        if held < u64::from(capacity) {
            return Ok((t.clone(), PlacedBy::Hash));
        }
        full.push(format!(
            "{} holds {held} of {capacity} pipelines",
            t.account
        ));
    }
    Err(Error::other(
        format!(
            "no tooling account has room for the new pipeline `{}`, nothing was changed: {}",
            plan.pipeline.name,
            full.join("; ")
        ),
        super::capacity::CAPACITY_HELP,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::{Claim, OWNER_SCHEMA, Placement};

    fn org() -> OrgPolicy {
        let text = crate::assets::get("examples/org.yaml").expect("embedded");
        crate::org::load(&crate::SourceFile::new(
            "org.yaml",
            format!(
                "{text}tooling_accounts:\n  - {{account: \"555555555555\", region: eu-west-1, bucket: b-555, kms_key: alias/k}}\n"
            ),
        ))
        .expect("org")
    }

    fn record(placement: Option<(&str, &str)>) -> OwnerRecord {
        OwnerRecord {
            schema: OWNER_SCHEMA.to_owned(),
            pipeline: "orders-api".to_owned(),
            team: "payments".to_owned(),
            repository: "payments/orders-api".to_owned(),
            claimed: Claim {
                at: "2026-01-01T00:00:00Z".to_owned(),
                by: "someone".to_owned(),
                commit: None,
                adopted: false,
            },
            transfers: Vec::new(),
            placement: placement.map(|(account, region)| Placement {
                account: account.to_owned(),
                region: region.to_owned(),
                by: PlacedBy::Hash,
                moved_from: None,
            }),
            later: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_recorded_placement_is_used_as_it_is_and_a_vanished_account_is_refused() {
        let org = org();
        let (t, by) = recorded(&org, &record(Some(("555555555555", "eu-west-1")))).expect("listed");
        assert_eq!(
            (t.account.as_str(), t.bucket.as_str(), by),
            ("555555555555", "b-555", PlacedBy::Hash)
        );
        // No placement: deployed before placements were recorded, in the home account.
        let (t, by) = recorded(&org, &record(None)).expect("home");
        assert_eq!((t.account.as_str(), by), ("123456789012", PlacedBy::Legacy));
        for (account, region, why) in [
            ("999999999999", "eu-west-1", "no longer lists that account"),
            (
                "555555555555",
                "us-west-2",
                "lists that account in region eu-west-1",
            ),
        ] {
            let err = recorded(&org, &record(Some((account, region)))).expect_err("refused");
            let text = err.to_string();
            assert!(text.contains(why), "{text}");
            assert!(
                matches!(err, Error::Refused { ref help, .. } if help.contains("pipeforge move orders-api")),
                "{err:?}"
            );
        }
    }
}
