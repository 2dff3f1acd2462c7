//! The account-quota check of a deploy, before anything changes: what the deploy adds to each
//! account quota ([`crate::capacity::fit::needs`]: the rendered stacks less the deployed ones),
//! judged against the usage and value read from each account — IAM `GetAccountSummary`,
//! Service Quotas `GetServiceQuota` where the service is there, counts (`ListPipelines`,
//! `ListProjects`, `ListStacks`, `ListBuckets`) where it is not; the quotas and where each is
//! read are [`crate::capacity::quotas::QUOTAS`]. Each quota is read once per deploy.
//!
//! A deploy that would exceed a quota is refused with one sentence per quota; one that leaves a
//! quota at or above the org's `capacity.warn_at_percent` warns.

use std::collections::BTreeMap;

use aws_config::SdkConfig;

use crate::aws::{AwsContext, AwsFailure, failure_error};
use crate::capacity::fit::{self, Need, Reading, Verdict};
use crate::capacity::footprint::Footprint;
use crate::capacity::quotas::{AccountQuota, Limit, Scope, Usage};
use crate::error::{Error, Result};
use crate::org::OrgPolicy;
use crate::publish::Prepared;
use crate::publish::progress::{Event, Progress};

use super::api::{Location, StackApi};

/// What the bootstrap role needs for the reads (the `help:` of a refused read).
const READ_HELP: &str = "the org's bootstrap role needs iam:GetAccountSummary, servicequotas:GetServiceQuota, cloudformation:ListStacks, codepipeline:ListPipelines, codebuild:ListProjects and s3:ListAllMyBuckets in every account (run `pipeforge bootstrap` again to update its stacks)";

/// The readings of one deploy: each quota once per account (and region, for regional quotas).
pub struct QuotaReader<'a> {
    aws: &'a AwsContext,
    role: &'a str,
    session: &'a str,
    org: &'a OrgPolicy,
    summaries: BTreeMap<String, BTreeMap<String, i64>>,
    readings: BTreeMap<(String, String, &'static str), Reading>,
}

impl<'a> QuotaReader<'a> {
    /// A reader acting through the org's bootstrap role `role` as `session`.
    pub fn new(aws: &'a AwsContext, role: &'a str, session: &'a str, org: &'a OrgPolicy) -> Self {
        Self {
            aws,
            role,
            session,
            org,
            summaries: BTreeMap::new(),
            readings: BTreeMap::new(),
        }
    }

    /// The usage and value of `need`'s quota in its account (and region).
    pub async fn reading(&mut self, need: &Need) -> Result<Reading> {
        let region = match need.quota.scope {
            Scope::Account => String::new(),
            Scope::Region => need.region.clone(),
        };
        let key = (need.account.clone(), region, need.quota.id);
        if let Some(r) = self.readings.get(&key) {
            return Ok(r.clone());
        }
        let conf = self
            .aws
            .account(&need.account, &need.region, self.role, self.session)
            .await?;
        let used = self.usage(&conf, need).await?;
        let (limit, limit_from) = self.limit(&conf, need).await?;
        let r = Reading {
            used,
            limit,
            limit_from,
        };
        self.readings.insert(key, r.clone());
        Ok(r)
    }

    async fn summary(&mut self, conf: &SdkConfig, need: &Need, key: &str) -> Result<u64> {
        if !self.summaries.contains_key(&need.account) {
            let out = self
                .aws
                .iam(conf, &need.region)
                .get_account_summary()
                .send()
                .await
                .map_err(|e| {
                    read_error(
                        format!("read the IAM account summary of account {}", need.account),
                        &AwsFailure::of(&e),
                    )
                })?;
            let map = out
                .summary_map()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), i64::from(*v)))
                })
                .into_iter()
                .flatten()
                .collect();
            self.summaries.insert(need.account.clone(), map);
        }
        let v = self.summaries[&need.account].get(key).copied();
        v.and_then(|v| u64::try_from(v).ok()).ok_or_else(|| {
            Error::other(
                format!(
                    "the IAM account summary of account {} has no `{key}`",
                    need.account
                ),
                "check that the account's IAM endpoint is AWS's",
            )
        })
    }

    async fn usage(&mut self, conf: &SdkConfig, need: &Need) -> Result<u64> {
        match need.quota.usage {
            Usage::IamSummary(key) => self.summary(conf, need, key).await,
            Usage::Count(action) => {
                count(self.aws, conf, &need.account, &need.region, action).await
            }
            Usage::NotRead(_) => Ok(0),
        }
    }

    async fn limit(&mut self, conf: &SdkConfig, need: &Need) -> Result<(u64, String)> {
        let q = need.quota;
        match q.limit {
            Limit::IamSummary(key) => Ok((
                self.summary(conf, need, key).await?,
                "IAM GetAccountSummary".to_owned(),
            )),
            Limit::ServiceQuota(service, code) => {
                service_quota(self.aws, conf, need, service, code, self.documented(q)).await
            }
            Limit::Documented => Ok(self.documented(q)),
        }
    }

    /// The org's `capacity.quotas` value, else AWS's default.
    fn documented(&self, q: &AccountQuota) -> (u64, String) {
        match self.org.org.capacity.quotas.get(q.id) {
            Some(v) => (
                u64::try_from(*v).unwrap_or(0),
                "org capacity.quotas".to_owned(),
            ),
            None => (q.default, "AWS default".to_owned()),
        }
    }
}

fn read_error(action: String, f: &AwsFailure) -> Error {
    failure_error(action, f, READ_HELP)
}

/// Service Quotas' value of `service`/`code`; `fallback` when the service has no such quota
/// in the region (`NoSuchResourceException`).
async fn service_quota(
    aws: &AwsContext,
    conf: &SdkConfig,
    need: &Need,
    service: &str,
    code: &str,
    fallback: (u64, String),
) -> Result<(u64, String)> {
    let out = aws
        .servicequotas(conf, &need.region)
        .get_service_quota()
        .service_code(service)
        .quota_code(code)
        .send()
        .await;
    match out {
        Ok(o) => match o.quota().and_then(|q| q.value()) {
            // Quota values are whole numbers of resources; Service Quotas sends a float.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(v) if v >= 0.0 => Ok((v as u64, "Service Quotas".to_owned())),
            _ => Ok(fallback),
        },
        Err(e) => {
            let f = AwsFailure::of(&e);
            if f.code.as_deref() == Some("NoSuchResourceException") {
                return Ok(fallback);
            }
            Err(read_error(
                format!(
                    "read quota {service}/{code} of account {} ({})",
                    need.account, need.region
                ),
                &f,
            ))
        }
    }
}

/// Counts the resources of `action` (a list call, every page) in the need's account and region.
async fn count(
    aws: &AwsContext,
    conf: &SdkConfig,
    account: &str,
    region: &str,
    action: &str,
) -> Result<u64> {
    let fail = |f: AwsFailure| {
        read_error(
            format!("count with {action} in account {account} ({region})"),
            &f,
        )
    };
    let mut n = 0u64;
    let mut token: Option<String> = None;
    loop {
        let next = match action {
            "codepipeline:ListPipelines" => {
                let o = aws
                    .codepipeline(conf, region)
                    .list_pipelines()
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| fail(AwsFailure::of(&e)))?;
                n += o.pipelines().len() as u64;
                o.next_token().map(str::to_owned)
            }
            "codebuild:ListProjects" => {
                let o = aws
                    .codebuild(conf, region)
                    .list_projects()
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| fail(AwsFailure::of(&e)))?;
                n += o.projects().len() as u64;
                o.next_token().map(str::to_owned)
            }
            "cloudformation:ListStacks" => {
                let o = aws
                    .cloudformation(conf, region)
                    .list_stacks()
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| fail(AwsFailure::of(&e)))?;
                // Deleted stacks stay listed for 90 days; they do not count.
                n += o
                    .stack_summaries()
                    .iter()
                    .filter(|s| s.stack_status().map(|st| st.as_str()) != Some("DELETE_COMPLETE"))
                    .count() as u64;
                o.next_token().map(str::to_owned)
            }
            "s3:ListAllMyBuckets" => {
                let o = aws
                    .s3(conf, region)
                    .list_buckets()
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| fail(AwsFailure::of(&e)))?;
                n += o.buckets().len() as u64;
                o.continuation_token().map(str::to_owned)
            }
            other => {
                return Err(Error::other(
                    format!("no counter for `{other}`"),
                    "this is a pipeforge bug; please report it",
                ));
            }
        };
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(n),
        }
    }
}

/// The footprint of the pipeline's stacks as deployed (none for a stack that does not exist).
async fn deployed<A: StackApi>(api: &A, prepared: &Prepared) -> Result<Footprint> {
    let mut parsed = Vec::new();
    for t in &prepared.templates {
        let at = Location {
            account: t.stack.account.clone(),
            region: t.stack.region.clone(),
        };
        let body = api.get_template(&at, &t.stack.name).await.map_err(|e| {
            Error::other(
                format!(
                    "cannot read the template of stack `{}`: {}",
                    t.stack.name,
                    e.text()
                ),
                "check the credentials of the account",
            )
        })?;
        if let Some(body) = body {
            // A template pipeforge did not write (not JSON) counts as the new one: no more.
            let json = serde_json::from_str(&body)
                .or_else(|_| serde_json::from_str(&t.body))
                .unwrap_or_default();
            parsed.push((&t.stack, json));
        }
    }
    Ok(Footprint::of_json(&parsed))
}

/// The footprint of the stacks a deploy renders.
pub fn rendered(prepared: &Prepared) -> Footprint {
    let parsed: Vec<_> = prepared
        .templates
        .iter()
        .map(|t| (&t.stack, serde_json::from_str(&t.body).unwrap_or_default()))
        .collect();
    Footprint::of_json(&parsed)
}

/// Reads every quota the deploy adds to and judges it; warnings are reported as progress
/// events, refusals are one error naming every quota that does not fit.
pub async fn check<A: StackApi>(
    api: &A,
    reader: &mut QuotaReader<'_>,
    prepared: &Prepared,
    progress: &dyn Progress,
) -> Result<Verdict> {
    let org = reader.org;
    let tooling: Vec<String> = org
        .tooling_accounts()
        .into_iter()
        .map(|t| t.account)
        .collect();
    let tooling: Vec<&str> = tooling.iter().map(String::as_str).collect();
    let new = rendered(prepared);
    let before = deployed(api, prepared).await?;
    let mut verdict = Verdict::default();
    let mut tooling_refused = false;
    for need in fit::needs(&new, &before, &tooling) {
        let reading = reader.reading(&need).await?;
        let refused = verdict.refusals.len();
        fit::judge(
            &need,
            &reading,
            org.org.capacity.warn_at_percent,
            &mut verdict,
        );
        tooling_refused |= need.tooling && verdict.refusals.len() > refused;
    }
    let full = judge_account_capacity(reader, prepared, &new, &before, &mut verdict).await?;
    for w in &verdict.warnings {
        progress.event(&Event::Warning { message: w.clone() });
    }
    if !verdict.fits() {
        let help = if full {
            CAPACITY_HELP.to_owned()
        } else {
            fit::refusal_help(tooling_refused)
        };
        return Err(Error::other(
            format!(
                "the deploy does not fit its accounts' quotas, nothing was changed: {}",
                verdict.refusals.join("; ")
            ),
            help,
        ));
    }
    Ok(verdict)
}

/// The `help:` of a deploy refused by a tooling account's `capacity`.
pub const CAPACITY_HELP: &str = "add a tooling account to the org's `tooling_accounts` (new pipelines are placed there), raise this account's `capacity`, or move pipelines out of it with `pipeforge move PIPELINE --to ACCOUNT`";

/// A new pipeline (its tooling account holds no pipeline of it yet) in a tooling account with
/// a `capacity`: the pipelines there are counted, and one more than `capacity` is refused.
/// True when it refused.
async fn judge_account_capacity(
    reader: &QuotaReader<'_>,
    prepared: &Prepared,
    new: &Footprint,
    before: &Footprint,
    verdict: &mut Verdict,
) -> Result<bool> {
    let plan = prepared.plan();
    let account = &plan.pipeline.tooling_account;
    let Some(capacity) = reader.org.tooling_account(account).and_then(|t| t.capacity) else {
        return Ok(false);
    };
    let pipelines = |f: &Footprint| {
        f.in_account(account)
            .get(&crate::capacity::Resource::Pipeline)
            .copied()
            .unwrap_or(0)
    };
    if pipelines(new) == 0 || pipelines(before) > 0 {
        return Ok(false);
    }
    let held = pipelines_in(
        reader.aws,
        reader.role,
        reader.session,
        account,
        &plan.pipeline.region,
    )
    .await?;
    let refused = verdict.refusals.len();
    fit::judge_capacity(account, capacity, held, verdict);
    Ok(verdict.refusals.len() > refused)
}

/// How many pipelines the tooling account `account` holds in `region` (`ListPipelines`).
pub async fn pipelines_in(
    aws: &AwsContext,
    role: &str,
    session: &str,
    account: &str,
    region: &str,
) -> Result<u64> {
    let conf = aws.account(account, region, role, session).await?;
    count(aws, &conf, account, region, "codepipeline:ListPipelines").await
}
