//! Who owns a deployed pipeline: the repository (`owner/name`, as webhook events and the org
//! policy's `teams.<team>.repositories` name it) and the team that first deployed it.
//!
//! The owner record is `pipelines/<name>/owner.json` in the org source bucket ([`OwnerRecord`],
//! schema [`OWNER_SCHEMA`]). Every deploy, publish and `diff` reads it while holding the
//! pipeline's lock (`pipelines/<name>/deploy.lock`, keyed like the record by the pipeline's name,
//! never by the team a manifest claims), before anything is uploaded or changed:
//!
//! - a record naming another repository or team refuses the deploy ([`Error::Refused`]);
//! - no record, and none of the pipeline's stacks exists: the deploy claims the pipeline, by
//!   writing the record with a conditional create (`If-None-Match: *`) before its first upload,
//!   so a first deploy that fails half-way (target stacks created, pipeline stack not) still
//!   leaves the pipeline owned;
//! - no record, but stacks exist (deployed before owner records, or the record was removed):
//!   the stacks decide, through `Metadata.pipeforge` (pipeline, team) and, in the pipeline
//!   stack, `Metadata.pipeforge.deployment.owner`; a deploy of the same team (and repository,
//!   when the stack names one) adopts the pipeline, anyone else is refused;
//! - a stack of the plan that belongs to another pipeline (two pipelines' names and environment
//!   names can combine into the same stack name) refuses the deploy, whatever the record says.
//!
//! Only [`transfer`] (`pipeforge transfer`, a platform engineer's command that no webhook path
//! calls) replaces a record, with a conditional write on the version it read, and appends the
//! change to the record's `transfers`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::capacity::PlacedBy;
use crate::deploy::api::{Location, StackApi};
use crate::error::{Error, Result};
use crate::plan::{Plan, StackPlan};
use crate::publish::store::SourceStore;

/// Schema identifier of `owner.json`. Later fields are added at the top level, optional;
/// readers keep fields they do not know when they rewrite the record. Fields of v1:
/// `schema`, `pipeline`, `team`, `repository`, `claimed` ([`Claim`]), `transfers`
/// ([`Transfer`]), and since placements are recorded `placement` ([`Placement`]: the tooling
/// account the pipeline lives in; absent: the org's home tooling account, where every pipeline
/// lived before).
pub const OWNER_SCHEMA: &str = "pipeforge/owner/v1";

/// Where a pipeline lives: the tooling account (and region) its first deploy placed it in,
/// written once with the claim and never changed by a deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The tooling account's id.
    pub account: String,
    /// Its region (the pipeline's).
    pub region: String,
    /// Why there (`home`, `pipeline`, `team`, `hash`, `move`, `legacy`).
    pub by: PlacedBy,
    /// After `pipeforge move`: the tooling account it was moved from (running the move again
    /// finishes it there: deploy, then `--retire-old`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<String>,
}

/// A repository as `owner/name` (GitHub owner, Bitbucket Cloud workspace or Bitbucket Data
/// Center project key, then the repository), compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Repository(String);

impl Repository {
    /// Parses `owner/name`: two non-empty segments of letters, digits, `-`, `_` and `.`.
    pub fn parse(text: &str) -> Result<Repository> {
        let parts: Vec<&str> = text.split('/').collect();
        let shaped = parts.len() == 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && *p != "."
                    && *p != ".."
                    && p.len() <= 100
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if shaped {
            Ok(Repository(text.to_owned()))
        } else {
            Err(Error::other(
                format!(
                    "`{}` is not a repository of the form `owner/name`",
                    text.escape_debug()
                ),
                "name the repository as the org policy's `teams.<team>.repositories` do, e.g. `payments/orders-api`",
            ))
        }
    }

    /// The repository a clone URL names: its last two path segments, without `.git`. Accepts
    /// `https://[user@]host[:port]/…/owner/name[.git]`, `ssh://[user@]host[:port]/…` and
    /// `[user@]host:owner/name[.git]`, on any host; `None` for anything else (local paths,
    /// `file://`, other schemes).
    pub fn from_url(url: &str) -> Option<Repository> {
        let url = url.trim();
        let path = if let Some((scheme, rest)) = url.split_once("://") {
            if !matches!(scheme.to_ascii_lowercase().as_str(), "https" | "ssh") {
                return None;
            }
            rest.split_once('/')?.1
        } else {
            // scp-like `[user@]host:path` (a host with a dot or a user, so `C:` is no host).
            let (user_host, path) = url.split_once(':')?;
            if user_host.contains('/') || !(user_host.contains('@') || user_host.contains('.')) {
                return None;
            }
            path
        };
        let path = path.split(['?', '#']).next()?.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut segments = path.rsplit('/');
        let name = segments.next()?;
        let owner = segments.next()?;
        Repository::parse(&format!("{owner}/{name}")).ok()
    }

    /// The text, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `other` names the same repository (case-insensitively).
    pub fn same(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The repository of a checkout: `repository` when given (`--repository`), else the one its
/// `origin` remote's URL names.
pub fn repository_of(checkout: &Path, repository: Option<&str>) -> Result<Repository> {
    if let Some(r) = repository {
        return Repository::parse(r);
    }
    let help = "pass `--repository OWNER/NAME`, as the org policy's `teams.<team>.repositories` name it, or clone from the repository so that `origin` names it";
    let out = crate::git::Git::new(checkout).output(&["remote", "get-url", "origin"])?;
    if !out.success {
        return Err(Error::other(
            format!(
                "cannot tell which repository `{}` is: it has no `origin` remote ({})",
                checkout.display(),
                crate::git::git_message(&out.stderr)
            ),
            help,
        ));
    }
    Repository::from_url(&out.stdout).ok_or_else(|| {
        Error::other(
            format!(
                "cannot tell which repository `{}` is: its `origin` remote is not an https or ssh URL ending in `owner/name`",
                checkout.display()
            ),
            help,
        )
    })
}

/// The host (lower-case, without user or port) of a clone URL: `https://host[:port]/…`,
/// `ssh://[user@]host[:port]/…` or `[user@]host:path`; `None` for a local path.
pub fn url_host(url: &str) -> Option<String> {
    let authority = if let Some((_, rest)) = url.split_once("://") {
        rest.split('/').next()?
    } else if url.starts_with('/') {
        return None;
    } else {
        url.split(':').next()?
    };
    let host_port = authority.rsplit('@').next()?;
    let host = host_port.split(':').next()?;
    Some(host.to_ascii_lowercase())
}

/// The host of a checkout's `origin` remote, when it has one.
pub fn origin_host(checkout: &Path) -> Option<String> {
    let out = crate::git::Git::new(checkout)
        .output(&["remote", "get-url", "origin"])
        .ok()?;
    if !out.success {
        return None;
    }
    url_host(out.stdout.trim()).filter(|h| !h.is_empty())
}

/// A team and a repository: who owns a pipeline, or who deploys it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The team (the manifest's `team`).
    pub team: String,
    /// `owner/name`; unknown only for pipelines deployed before owner records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

impl Owner {
    /// A team and a known repository.
    pub fn new(team: &str, repository: &Repository) -> Owner {
        Owner {
            team: team.to_owned(),
            repository: Some(repository.as_str().to_owned()),
        }
    }

    /// True when `other` is the same team and repository (repositories compared
    /// case-insensitively).
    pub fn same(&self, other: &Owner) -> bool {
        self.team == other.team
            && match (&self.repository, &other.repository) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            }
    }

    /// `payments/orders-api (team payments)`, or `team payments (repository unknown)`.
    pub fn describe(&self) -> String {
        match &self.repository {
            Some(r) => format!("{r} (team {})", self.team),
            None => format!("team {} (repository unknown)", self.team),
        }
    }
}

/// When and by whom the record was created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// RFC 3339 time.
    pub at: String,
    /// Who deployed (the lock holder: `user@host (pid N)`, or the webhook's worker).
    pub by: String,
    /// The commit deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// True when the pipeline's stacks existed already (deployed before owner records) and the
    /// deploy of the same team adopted them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// One transfer of the pipeline to another owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// RFC 3339 time.
    pub at: String,
    /// Who ran `pipeforge transfer`.
    pub by: String,
    /// The owner before.
    pub from: Owner,
    /// The owner after.
    pub to: Owner,
    /// Why, as given with `--reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `pipelines/<name>/owner.json`: who owns a pipeline, how it was claimed and every transfer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// [`OWNER_SCHEMA`].
    pub schema: String,
    /// The pipeline (manifest `name`).
    pub pipeline: String,
    /// The owning team.
    pub team: String,
    /// The owning repository, `owner/name`.
    pub repository: String,
    /// The first deploy.
    pub claimed: Claim,
    /// Transfers, oldest first.
    #[serde(default)]
    pub transfers: Vec<Transfer>,
    /// The tooling account the pipeline lives in (`None` in records written before placements
    /// were recorded: the home tooling account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Fields this version does not know (written by a later one), kept as they are.
    #[serde(flatten)]
    pub later: serde_json::Map<String, Json>,
}

impl OwnerRecord {
    /// The owner it names.
    pub fn owner(&self) -> Owner {
        Owner {
            team: self.team.clone(),
            repository: Some(self.repository.clone()),
        }
    }

    /// The record's JSON, pretty-printed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a stored record; only [`OWNER_SCHEMA`] is understood.
    pub fn parse(bytes: &[u8], url: &str) -> Result<OwnerRecord> {
        let help = "a platform engineer restores the record from an earlier version of the object (the bucket is versioned) or writes a new one with `pipeforge transfer`";
        let v: Json = serde_json::from_slice(bytes).map_err(|e| Error::Refused {
            message: format!("the owner record `{url}` is not valid JSON ({e})"),
            help: help.to_owned(),
        })?;
        let schema = v.get("schema").and_then(Json::as_str).unwrap_or_default();
        if schema != OWNER_SCHEMA {
            return Err(Error::Refused {
                message: format!(
                    "the owner record `{url}` has schema `{schema}`; this pipeforge reads `{OWNER_SCHEMA}`"
                ),
                help: "use the pipeforge version that wrote it (or a newer one)".to_owned(),
            });
        }
        serde_json::from_value(v).map_err(|e| Error::Refused {
            message: format!("the owner record `{url}` is incomplete ({e})"),
            help: help.to_owned(),
        })
    }
}

/// The current time, RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    aws_sdk_s3::primitives::DateTime::from_secs(i64::try_from(secs).unwrap_or(0))
        .fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime)
        .unwrap_or_else(|_| secs.to_string())
}

/// One of the plan's stacks, as deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedStack {
    /// Stack name.
    pub name: String,
    /// Where it lives.
    pub at: Location,
    /// `Metadata.pipeforge.pipeline`; `None` for a stack pipeforge did not deploy.
    pub pipeline: Option<String>,
    /// `Metadata.pipeforge.team`.
    pub team: Option<String>,
    /// `Metadata.pipeforge.deployment.owner` (pipeline stacks deployed with owner records).
    pub owner: Option<Owner>,
}

impl DeployedStack {
    /// What a deployed template says about its pipeline and owner.
    pub fn from_template(name: &str, at: &Location, template: &str) -> DeployedStack {
        let v: Json = serde_json::from_str(template).unwrap_or_default();
        let pf = v.get("Metadata").and_then(|m| m.get("pipeforge"));
        let text = |k: &str| {
            pf.and_then(|p| p.get(k))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        DeployedStack {
            name: name.to_owned(),
            at: at.clone(),
            pipeline: text("pipeline"),
            team: text("team"),
            owner: pf
                .and_then(|p| p.get("deployment"))
                .and_then(|d| d.get("owner"))
                .and_then(|o| serde_json::from_value(o.clone()).ok()),
        }
    }
}

/// What the owner check found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The record names the deploying team and repository.
    Owned,
    /// Nobody owns the pipeline yet: the deploy claims it. `adopt` is true when stacks of the
    /// same team exist (deployed before owner records).
    Unclaimed {
        /// Stacks of the same team exist already.
        adopt: bool,
    },
}

fn transfer_help(name: &str, to: &Owner) -> String {
    format!(
        "deploy from the owning repository; or, if the pipeline should change hands, a platform engineer transfers it: `pipeforge transfer {name} --team {} --repository {}`. A new `name` creates a separate pipeline instead",
        to.team,
        to.repository.as_deref().unwrap_or("OWNER/NAME")
    )
}

/// Decides whether `deployer` may deploy pipeline `name`, from its owner record (if any) and
/// those of its stacks that exist. Pure: every refusal names the owner.
pub fn decide(
    name: &str,
    deployer: &Owner,
    record: Option<&OwnerRecord>,
    stacks: &[DeployedStack],
) -> Result<Verdict> {
    for s in stacks {
        if s.pipeline.as_deref() != Some(name) {
            let whose = match (&s.pipeline, &s.team) {
                (Some(p), Some(t)) => format!("belongs to pipeline `{p}` (team `{t}`)"),
                (Some(p), None) => format!("belongs to pipeline `{p}`"),
                _ => "was not deployed by pipeforge".to_owned(),
            };
            return Err(Error::Refused {
                message: format!(
                    "stack `{}` (account {}, {}) {whose}, not to pipeline `{name}`",
                    s.name, s.at.account, s.at.region
                ),
                help: "the pipeline's name and an environment's name combine into the name of a stack that exists already; rename the pipeline or the environment".to_owned(),
            });
        }
    }
    if let Some(r) = record {
        let owner = r.owner();
        return if owner.same(deployer) {
            Ok(Verdict::Owned)
        } else {
            Err(refusal(name, &owner, deployer, ""))
        };
    }
    // No record: the stacks decide (pipelines deployed before owner records).
    let recorded = stacks.iter().find_map(|s| s.owner.clone());
    if let Some(owner) = recorded {
        return if owner.same(deployer) {
            Ok(Verdict::Unclaimed { adopt: true })
        } else {
            Err(refusal(
                name,
                &owner,
                deployer,
                " (as its pipeline stack records it; the owner record is missing)",
            ))
        };
    }
    if let Some(team) = stacks.iter().find_map(|s| s.team.clone()) {
        let owner = Owner {
            team,
            repository: None,
        };
        return if owner.team == deployer.team {
            Ok(Verdict::Unclaimed { adopt: true })
        } else {
            Err(refusal(
                name,
                &owner,
                deployer,
                " (its stacks were deployed before owner records)",
            ))
        };
    }
    Ok(Verdict::Unclaimed { adopt: false })
}

fn refusal(name: &str, owner: &Owner, deployer: &Owner, note: &str) -> Error {
    Error::Refused {
        message: format!(
            "pipeline {name} is owned by {}{note}; this deploy comes from {}",
            owner.describe(),
            deployer.describe()
        ),
        help: transfer_help(name, deployer),
    }
}

/// The stacks of `stacks` that exist, with what their templates say (stacks a change set
/// created but never executed, `REVIEW_IN_PROGRESS`, have nothing in them and are left out).
pub async fn deployed_stacks<A: StackApi>(
    api: &A,
    stacks: &[StackPlan],
) -> Result<Vec<DeployedStack>> {
    let mut out = Vec::new();
    for s in stacks {
        let at = Location {
            account: s.account.clone(),
            region: s.region.clone(),
        };
        let read_error = |e: crate::deploy::api::ApiError| {
            Error::Aws {
            action: format!(
                "read stack `{}` (account {}, {}) to check who owns it",
                s.name, at.account, at.region
            ),
            code: e.code.clone(),
            message: e.text(),
            help: "the credentials need cloudformation:DescribeStacks and cloudformation:GetTemplate there (the org's bootstrap role in target accounts)".to_owned(),
        }
        };
        let Some(info) = api.describe_stack(&at, &s.name).await.map_err(read_error)? else {
            continue;
        };
        if info.status == "REVIEW_IN_PROGRESS" {
            continue;
        }
        let template = api
            .get_template(&at, &s.name)
            .await
            .map_err(read_error)?
            .unwrap_or_default();
        out.push(DeployedStack::from_template(&s.name, &at, &template));
    }
    Ok(out)
}

/// Reads the owner record: its ETag and content, or `None`.
pub async fn read_record(store: &SourceStore) -> Result<Option<(String, OwnerRecord)>> {
    let key = store.owner_key();
    match store
        .read(
            &key,
            "the owner record",
            crate::publish::record::MAX_RECORD_BYTES,
        )
        .await?
    {
        Some((etag, bytes)) => Ok(Some((etag, OwnerRecord::parse(&bytes, &store.url(&key))?))),
        None => Ok(None),
    }
}

/// Writes the owner record on the version read: over the ETag `etag`, or only if there is no
/// record yet (`None`). False when the record changed (or appeared) since it was read. Only a
/// deploy's claim (`None`), `transfer` and `pipeforge move` call it (`tests/tidy.rs`).
pub(crate) async fn write_owner_record(
    store: &SourceStore,
    record: &OwnerRecord,
    etag: Option<&str>,
) -> Result<bool> {
    let key = store.owner_key();
    let written = store
        .write_if(&key, record.to_bytes(), etag, "the owner record")
        .await?;
    Ok(written.is_some())
}

/// What [`check`] found and did.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// The owner record as it is now (or, read-only, as the deploy would write it).
    pub record: OwnerRecord,
    /// True when this deploy claimed the pipeline (a new pipeline, or one deployed before
    /// owner records).
    pub claimed: bool,
}

/// How [`check`] records a claim.
#[derive(Clone, Debug)]
pub struct ClaimInfo {
    /// Who deploys (the lock holder).
    pub by: String,
    /// The commit deployed.
    pub commit: Option<String>,
    /// Why the plan's tooling account was chosen (recorded with a new claim).
    pub placed_by: PlacedBy,
    /// Write the record (a deploy or publish under the lock); false for a dry run or `diff`.
    pub write: bool,
}

/// Checks that `deployer` may deploy `plan`'s pipeline, and claims it when nobody owns it yet
/// (the caller holds the pipeline's lock). Nothing is uploaded or changed when it fails.
pub async fn check<A: StackApi>(
    store: &SourceStore,
    api: &A,
    plan: &Plan,
    deployer: &Owner,
    claim: &ClaimInfo,
) -> Result<Checked> {
    let name = &plan.pipeline.name;
    let stacks = deployed_stacks(api, &plan.stacks).await?;
    for _attempt in 0..2 {
        let record = read_record(store).await?;
        let verdict = decide(name, deployer, record.as_ref().map(|(_, r)| r), &stacks)?;
        let adopt = match (verdict, record) {
            (Verdict::Owned, Some((_, record))) => {
                return Ok(Checked {
                    record,
                    claimed: false,
                });
            }
            (Verdict::Unclaimed { adopt }, _) => adopt,
            (Verdict::Owned, None) => false,
        };
        let record = OwnerRecord {
            schema: OWNER_SCHEMA.to_owned(),
            pipeline: name.clone(),
            team: deployer.team.clone(),
            repository: deployer.repository.clone().unwrap_or_default(),
            claimed: Claim {
                at: now_rfc3339(),
                by: claim.by.clone(),
                commit: claim.commit.clone(),
                adopted: adopt,
            },
            transfers: Vec::new(),
            placement: Some(Placement {
                account: plan.pipeline.tooling_account.clone(),
                region: plan.pipeline.region.clone(),
                by: if adopt {
                    PlacedBy::Legacy
                } else {
                    claim.placed_by
                },
                moved_from: None,
            }),
            later: serde_json::Map::new(),
        };
        if !claim.write {
            return Ok(Checked {
                record,
                claimed: true,
            });
        }
        if write_owner_record(store, &record, None).await? {
            return Ok(Checked {
                record,
                claimed: true,
            });
        }
        // Someone created the record meanwhile (a deploy that does not take this lock): decide
        // again on what they wrote.
    }
    Err(Error::other(
        format!("the owner record of pipeline `{name}` keeps changing while this deploy reads it"),
        "run the deploy again; if it keeps failing, look at who writes the record",
    ))
}

/// What [`transfer`] did.
#[derive(Clone, Debug, Serialize)]
pub struct TransferReport {
    /// The pipeline.
    pub pipeline: String,
    /// `s3://bucket/pipelines/<name>/owner.json`.
    pub record_url: String,
    /// The owner before.
    pub from: Owner,
    /// The owner now.
    pub to: Owner,
    /// False when the pipeline already belonged to `to` (nothing written).
    pub changed: bool,
    /// The record as written.
    pub record: OwnerRecord,
}

/// Transfers pipeline `name` to `to` (the caller holds the pipeline's lock). The current owner
/// comes from the record, else (pipelines deployed before owner records) from the deployed
/// pipeline stack `pipeline_stack` (`None`: it does not exist); a pipeline with neither has
/// nothing to transfer (its first deploy claims it).
pub async fn transfer(
    store: &SourceStore,
    name: &str,
    pipeline_stack: Option<&DeployedStack>,
    to: &Owner,
    by: &str,
    reason: Option<&str>,
) -> Result<TransferReport> {
    let key = store.owner_key();
    let url = store.url(&key);
    let current = read_record(store).await?;
    let (etag, from, mut record) = match current {
        Some((etag, record)) => (Some(etag), record.owner(), record),
        None => {
            let Some(stack) = pipeline_stack.filter(|s| s.pipeline.as_deref() == Some(name)) else {
                return Err(Error::other(
                    format!(
                        "pipeline `{name}` has no owner record (`{url}`) and no pipeline stack: there is nothing to transfer"
                    ),
                    "check the name and `--org`; a pipeline that was never deployed belongs to whoever deploys it first",
                ));
            };
            let from = stack.owner.clone().unwrap_or_else(|| Owner {
                team: stack.team.clone().unwrap_or_default(),
                repository: None,
            });
            let record = OwnerRecord {
                schema: OWNER_SCHEMA.to_owned(),
                pipeline: name.to_owned(),
                team: from.team.clone(),
                repository: from.repository.clone().unwrap_or_default(),
                claimed: Claim {
                    at: now_rfc3339(),
                    by: by.to_owned(),
                    commit: None,
                    adopted: true,
                },
                transfers: Vec::new(),
                placement: None,
                later: serde_json::Map::new(),
            };
            (None, from, record)
        }
    };
    if from.same(to) {
        return Ok(TransferReport {
            pipeline: name.to_owned(),
            record_url: url,
            from,
            to: to.clone(),
            changed: false,
            record,
        });
    }
    record.team = to.team.clone();
    record.repository = to.repository.clone().unwrap_or_default();
    record.transfers.push(Transfer {
        at: now_rfc3339(),
        by: by.to_owned(),
        from: from.clone(),
        to: to.clone(),
        reason: reason.map(str::to_owned),
    });
    if !write_owner_record(store, &record, etag.as_deref()).await? {
        return Err(Error::other(
            format!("the owner record `{url}` changed while the transfer ran"),
            "run the transfer again; it reads the record anew",
        ));
    }
    Ok(TransferReport {
        pipeline: name.to_owned(),
        record_url: url,
        from,
        to: to.clone(),
        changed: true,
        record,
    })
}

/// What `pipeforge transfer` asks for.
#[derive(Clone, Debug)]
pub struct TransferRequest {
    /// The pipeline (manifest `name`).
    pub name: String,
    /// The new owner.
    pub to: Owner,
    /// Why (kept in the record).
    pub reason: Option<String>,
    /// Who runs it (`user@host (pid N)`).
    pub by: String,
    /// Longest wait for a deploy that holds the pipeline's lock.
    pub timeout: std::time::Duration,
}

/// Refuses `name` unless it is a pipeline name as manifests spell it (the platform engineer's
/// commands `transfer` and `move` take it from the command line and use it in S3 keys).
pub(crate) fn check_pipeline_name(name: &str) -> Result<()> {
    let valid =
        crate::pattern::cached(crate::manifest::NAME_PATTERN).is_ok_and(|r| r.is_match(name));
    if !valid {
        return Err(Error::other(
            format!("`{name}` is not a pipeline name"),
            "pass the `name` of the pipeline's manifest (lower-case letters, digits and dashes)",
        ));
    }
    Ok(())
}

/// `pipeforge transfer`: takes the pipeline's lock in the org source bucket (tooling account
/// credentials), checks that the new team may deploy from the new repository (org `teams`),
/// and [`transfer`]s the pipeline.
pub async fn transfer_pipeline(
    aws: &crate::aws::AwsContext,
    org: &crate::org::OrgPolicy,
    request: &TransferRequest,
    progress: &dyn crate::publish::progress::Progress,
) -> Result<TransferReport> {
    let o = &org.org;
    let name = &request.name;
    check_pipeline_name(name)?;
    let to_repository = request.to.repository.as_deref().unwrap_or_default();
    Repository::parse(to_repository)?;
    org.check_repository(&request.to.team, to_repository)?;
    let tooling = Location {
        account: o.tooling.account.clone(),
        region: o.tooling.region.clone(),
    };
    let session = format!("pipeforge-{name}");
    let conf = aws
        .account(
            &tooling.account,
            &tooling.region,
            &o.deploy.bootstrap_role,
            &session,
        )
        .await?;
    let records = format!("{}{name}/", crate::plan::RECORDS_PREFIX);
    let store = SourceStore::new(
        aws.s3(&conf, &tooling.region),
        &o.source.bucket,
        &tooling.region,
        &o.source.kms_key,
        &records,
        &records,
    );
    store.check().await?;
    let api = crate::deploy::sdk::SdkStackApi::new(aws, &o.deploy.bootstrap_role, &session);
    api.connect(&tooling).await?;
    let lock = store
        .lock(
            &request.by,
            std::time::Duration::from_secs(300),
            request.timeout,
            progress,
        )
        .await?;
    let result = async {
        let pipeline_stack = StackPlan {
            order: 1,
            kind: crate::plan::StackKind::Pipeline,
            name: format!("{}-{name}-pipeline", o.naming.prefix),
            file: String::new(),
            account: tooling.account.clone(),
            region: tooling.region.clone(),
            environment: None,
            capabilities: Vec::new(),
            template_bytes: None,
        };
        let deployed = deployed_stacks(&api, std::slice::from_ref(&pipeline_stack)).await?;
        lock.check()?;
        transfer(
            &store,
            name,
            deployed.first(),
            &request.to,
            &request.by,
            request.reason.as_deref(),
        )
        .await
    }
    .await;
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_manifest_pipeline_name_reaches_the_s3_keys_of_transfer_and_move() {
        assert!(check_pipeline_name("orders-api").is_ok());
        for bad in [
            "../other-team",
            "orders-api/../x",
            "orders/api",
            "Orders-api",
            "orders-api-",
            "or",
            "orders api",
            "",
        ] {
            let e = check_pipeline_name(bad).expect_err(bad).to_string();
            assert!(e.contains("is not a pipeline name"), "{bad}: {e}");
        }
    }

    fn repo(s: &str) -> Repository {
        Repository::parse(s).expect("repository")
    }

    #[test]
    fn repositories_come_from_https_and_ssh_urls_on_any_host() {
        for (url, want) in [
            (
                "https://github.com/payments/orders-api.git",
                "payments/orders-api",
            ),
            (
                "https://github.com/payments/orders-api",
                "payments/orders-api",
            ),
            (
                "https://token@github.example.com:8443/Payments/Orders-API.git/",
                "Payments/Orders-API",
            ),
            (
                "ssh://git@bitbucket.example.com:7999/pay/orders-api.git",
                "pay/orders-api",
            ),
            (
                "https://bitbucket.example.com/scm/pay/orders-api.git",
                "pay/orders-api",
            ),
            (
                "git@github.com:payments/orders-api.git\n",
                "payments/orders-api",
            ),
            ("github.com:payments/orders-api", "payments/orders-api"),
        ] {
            assert_eq!(
                Repository::from_url(url).map(|r| r.0),
                Some(want.to_owned()),
                "{url}"
            );
        }
        for url in [
            "/srv/git/payments/orders-api.git",
            "file:///srv/git/payments/orders-api.git",
            "ext::sh -c touch% /tmp/pwned",
            "https://github.com/orders-api",
            "https://github.com/a/../b",
            "git:github.com/x/y",
            "C:/src/payments/orders-api",
        ] {
            assert_eq!(Repository::from_url(url), None, "{url}");
        }
        assert!(Repository::parse("payments/orders api").is_err());
        assert!(repo("Payments/Orders-Api").same("payments/orders-api"));
    }

    fn owner(team: &str, r: &str) -> Owner {
        Owner::new(team, &repo(r))
    }

    fn record(team: &str, r: &str) -> OwnerRecord {
        OwnerRecord {
            schema: OWNER_SCHEMA.to_owned(),
            pipeline: "orders-api".to_owned(),
            team: team.to_owned(),
            repository: r.to_owned(),
            claimed: Claim {
                at: "2026-01-01T00:00:00Z".to_owned(),
                by: "ci".to_owned(),
                commit: None,
                adopted: false,
            },
            transfers: Vec::new(),
            placement: None,
            later: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_record_without_placement_reads_as_the_home_account_and_placement_round_trips() {
        let old =
            br#"{"schema": "pipeforge/owner/v1", "pipeline": "orders-api", "team": "payments",
            "repository": "payments/orders-api", "transfers": [], "fleet": {"x": 1},
            "claimed": {"at": "2026-01-01T00:00:00Z", "by": "ci"}}"#;
        let r = OwnerRecord::parse(old, "s3://b/k").expect("v1 record");
        assert_eq!(r.placement, None);
        assert_eq!(r.later.get("fleet"), Some(&serde_json::json!({"x": 1})));
        let mut placed = record("payments", "payments/orders-api");
        placed.placement = Some(Placement {
            account: "210987654321".to_owned(),
            region: "eu-west-1".to_owned(),
            by: PlacedBy::Hash,
            moved_from: None,
        });
        let text = String::from_utf8(placed.to_bytes()).expect("utf-8");
        assert!(
            text.contains(
                r#""placement": {
    "account": "210987654321",
    "region": "eu-west-1",
    "by": "hash"
  }"#
            ),
            "{text}"
        );
        assert_eq!(
            OwnerRecord::parse(text.as_bytes(), "s3://b/k").expect("parse"),
            placed
        );
    }

    fn stack(name: &str, pipeline: Option<&str>, team: Option<&str>) -> DeployedStack {
        DeployedStack {
            name: name.to_owned(),
            at: Location {
                account: "111111111111".to_owned(),
                region: "us-east-1".to_owned(),
            },
            pipeline: pipeline.map(str::to_owned),
            team: team.map(str::to_owned),
            owner: None,
        }
    }

    #[test]
    fn the_record_decides_and_refusals_name_the_owner_and_the_transfer() {
        let me = owner("payments", "payments/orders-api");
        let rec = record("payments", "Payments/Orders-API");
        assert_eq!(
            decide("orders-api", &me, Some(&rec), &[]).expect("owner"),
            Verdict::Owned
        );
        for intruder in [
            owner("payments", "payments/orders-fork"),
            owner("billing", "payments/orders-api"),
            owner("billing", "billing/orders-api"),
        ] {
            let e = decide("orders-api", &intruder, Some(&rec), &[]).expect_err("refused");
            assert!(matches!(e, Error::Refused { .. }), "{e:?}");
            let text = e.to_string();
            assert!(
                text.contains(
                    "pipeline orders-api is owned by Payments/Orders-API (team payments)"
                ),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "pipeforge transfer orders-api --team {} --repository {}",
                    intruder.team,
                    intruder.repository.as_deref().unwrap_or_default()
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn without_a_record_the_stacks_decide() {
        let me = owner("payments", "payments/orders-api");
        // Nothing deployed: the deploy claims it.
        assert_eq!(
            decide("orders-api", &me, None, &[]).expect("new"),
            Verdict::Unclaimed { adopt: false }
        );
        // A half-failed legacy first deploy (target stacks only): the team decides.
        let legacy = [stack(
            "pf-orders-api-dev-target",
            Some("orders-api"),
            Some("payments"),
        )];
        assert_eq!(
            decide("orders-api", &me, None, &legacy).expect("adopt"),
            Verdict::Unclaimed { adopt: true }
        );
        let other = owner("billing", "billing/orders-api");
        let e = decide("orders-api", &other, None, &legacy).expect_err("other team");
        assert!(
            e.to_string()
                .contains("owned by team payments (repository unknown)"),
            "{e}"
        );
        // The pipeline stack names the repository: another repository of the team is refused.
        let mut recorded = stack(
            "pf-orders-api-pipeline",
            Some("orders-api"),
            Some("payments"),
        );
        recorded.owner = Some(me.clone());
        let fork = owner("payments", "payments/fork");
        let e = decide("orders-api", &fork, None, &[recorded.clone()]).expect_err("fork");
        assert!(e.to_string().contains("owner record is missing"), "{e}");
        assert_eq!(
            decide("orders-api", &me, None, &[recorded]).expect("same"),
            Verdict::Unclaimed { adopt: true }
        );
    }

    #[test]
    fn a_stack_of_another_pipeline_is_never_taken_over() {
        let me = owner("payments", "payments/orders-api");
        let rec = record("payments", "payments/orders-api");
        // `orders` with environment `api-dev` and `orders-api` with `dev` share a stack name.
        let theirs = [stack(
            "pf-orders-api-dev-target",
            Some("orders"),
            Some("risk"),
        )];
        let e = decide("orders-api", &me, Some(&rec), &theirs).expect_err("collision");
        assert!(
            e.to_string().contains(
                "belongs to pipeline `orders` (team `risk`), not to pipeline `orders-api`"
            ),
            "{e}"
        );
        let foreign = [stack("pf-orders-api-pipeline", None, None)];
        let e = decide("orders-api", &me, None, &foreign).expect_err("not ours");
        assert!(
            e.to_string().contains("was not deployed by pipeforge"),
            "{e}"
        );
    }

    #[test]
    fn records_keep_fields_of_later_versions_and_refuse_unknown_schemas() {
        let mut v = serde_json::to_value(record("payments", "payments/orders-api")).expect("json");
        v["fleet"] = serde_json::json!({"tooling_account": "123456789012"});
        let bytes = serde_json::to_vec(&v).expect("bytes");
        let r = OwnerRecord::parse(&bytes, "s3://b/k").expect("parses");
        let again: Json = serde_json::from_slice(&r.to_bytes()).expect("json");
        assert_eq!(again["fleet"]["tooling_account"], "123456789012");
        v["schema"] = "pipeforge/owner/v2".into();
        let e = OwnerRecord::parse(&serde_json::to_vec(&v).expect("bytes"), "s3://b/k")
            .expect_err("newer");
        assert!(e.to_string().contains("pipeforge/owner/v2"), "{e}");
        assert!(OwnerRecord::parse(b"{", "s3://b/k").is_err());
    }

    #[test]
    fn deployed_templates_tell_their_pipeline_team_and_owner() {
        let at = Location {
            account: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
        };
        let t = r#"{"Metadata": {"pipeforge": {"pipeline": "orders-api", "team": "payments",
            "deployment": {"owner": {"team": "payments", "repository": "payments/orders-api"}}}}}"#;
        let s = DeployedStack::from_template("pf-orders-api-pipeline", &at, t);
        assert_eq!(s.pipeline.as_deref(), Some("orders-api"));
        assert_eq!(s.team.as_deref(), Some("payments"));
        assert_eq!(s.owner, Some(owner("payments", "payments/orders-api")));
        let yaml = DeployedStack::from_template("x", &at, "Resources: {}\n");
        assert_eq!((yaml.pipeline, yaml.team, yaml.owner), (None, None, None));
    }

    #[test]
    fn a_repository_is_two_plain_bounded_segments() {
        let long = "a".repeat(100);
        for good in [
            "payments/orders-api".to_owned(),
            "my_org/orders.api-2".to_owned(),
            format!("{long}/{long}"),
        ] {
            assert_eq!(repo(&good).as_str(), good);
            assert_eq!(repo(&good).to_string(), good, "Display shows it as given");
        }
        let longer = "a".repeat(101);
        for bad in [
            "/orders-api".to_owned(),
            "payments/".to_owned(),
            "./orders-api".to_owned(),
            "payments/.".to_owned(),
            "payments/..".to_owned(),
            format!("payments/{longer}"),
            format!("{longer}/orders-api"),
            "payments/orders/api".to_owned(),
            "orders-api".to_owned(),
        ] {
            let e = Repository::parse(&bad).expect_err(&bad);
            assert!(e.to_string().contains("form `owner/name`"), "{bad}: {e}");
        }
        assert!(!repo("payments/orders-api").same("payments/orders-apis"));
        assert!(!repo("payments/orders-api").same("billing/orders-api"));
    }

    #[test]
    fn a_local_path_with_a_colon_names_no_repository() {
        // `host:path` only when the host part has no `/`: these are local paths.
        for url in [
            "/srv/repos.d:payments/orders-api",
            "../git@x:payments/orders-api",
        ] {
            assert_eq!(Repository::from_url(url), None, "{url}");
        }
        assert_eq!(
            Repository::from_url("HTTPS://github.com/payments/orders-api").map(|r| r.0),
            Some("payments/orders-api".to_owned()),
            "the scheme is compared without case"
        );
    }

    #[test]
    fn hosts_come_from_urls_without_user_port_or_case() {
        for (url, want) in [
            (
                "https://GitHub.Example.com:8443/payments/orders-api.git",
                Some("github.example.com"),
            ),
            (
                "ssh://git@bitbucket.example.com:7999/pay/orders-api.git",
                Some("bitbucket.example.com"),
            ),
            ("git@github.com:payments/orders-api.git", Some("github.com")),
            ("/srv/git/payments/orders-api.git", None),
        ] {
            assert_eq!(url_host(url).as_deref(), want, "{url}");
        }
    }

    fn git(dir: &Path, args: &[&str]) {
        crate::git::Git::new(dir).run(args).expect("git");
    }

    #[test]
    fn a_checkouts_repository_and_host_come_from_its_origin_remote() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        git(dir, &["init", "-q"]);
        // No origin: an explicit repository, else an error that says how to name it.
        assert_eq!(
            repository_of(dir, Some("payments/orders-api")).expect("given"),
            repo("payments/orders-api")
        );
        assert!(repository_of(dir, Some("orders-api")).is_err());
        let e = repository_of(dir, None).expect_err("no origin");
        assert!(e.to_string().contains("has no `origin` remote"), "{e}");
        assert_eq!(origin_host(dir), None);
        git(
            dir,
            &[
                "remote",
                "add",
                "origin",
                "https://x@Git.Example.com:8443/payments/orders-api.git",
            ],
        );
        assert_eq!(
            repository_of(dir, None).expect("origin"),
            repo("payments/orders-api")
        );
        assert_eq!(origin_host(dir).as_deref(), Some("git.example.com"));
        git(
            dir,
            &["remote", "set-url", "origin", "/srv/git/orders-api.git"],
        );
        let e = repository_of(dir, None).expect_err("local origin");
        assert!(e.to_string().contains("not an https or ssh URL"), "{e}");
        assert_eq!(origin_host(dir), None);
    }

    #[test]
    fn owners_of_unknown_repositories_are_the_same_only_within_a_team() {
        let unknown = |team: &str| Owner {
            team: team.to_owned(),
            repository: None,
        };
        assert!(unknown("payments").same(&unknown("payments")));
        assert!(!unknown("payments").same(&unknown("billing")));
        let known = owner("payments", "payments/orders-api");
        assert!(!unknown("payments").same(&known));
        assert!(!known.same(&unknown("payments")));
        assert!(known.same(&owner("payments", "PAYMENTS/orders-api")));
    }

    #[test]
    fn claims_are_stamped_with_the_current_utc_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let at = now_rfc3339();
        let parsed = aws_sdk_s3::primitives::DateTime::from_str(
            &at,
            aws_sdk_s3::primitives::DateTimeFormat::DateTime,
        )
        .expect("RFC 3339");
        assert!(at.ends_with('Z'), "{at}");
        let secs = u64::try_from(parsed.secs()).expect("after 1970");
        assert!((before..before + 60).contains(&secs), "{at}");
    }

    #[test]
    fn a_stack_of_another_pipeline_without_a_team_is_named_too() {
        let me = owner("payments", "payments/orders-api");
        let theirs = [stack("pf-orders-api-dev-target", Some("orders"), None)];
        let e = decide("orders-api", &me, None, &theirs).expect_err("collision");
        assert!(
            e.to_string()
                .contains("belongs to pipeline `orders`, not to pipeline `orders-api`"),
            "{e}"
        );
    }

    fn stack_plan(name: &str) -> StackPlan {
        StackPlan {
            order: 1,
            kind: crate::plan::StackKind::Pipeline,
            name: name.to_owned(),
            file: String::new(),
            account: "111111111111".to_owned(),
            region: "us-east-1".to_owned(),
            environment: None,
            capabilities: Vec::new(),
            template_bytes: None,
        }
    }

    #[tokio::test]
    async fn only_stacks_with_a_template_are_deployed_stacks() {
        let api = crate::deploy::fake::FakeCfn::new(0);
        let t = r#"{"Metadata": {"pipeforge": {"pipeline": "orders-api", "team": "payments"}}}"#;
        api.put_stack("pf-orders-api-pipeline", "UPDATE_COMPLETE", Some(t));
        // A stack a change set created but never executed holds nothing yet.
        api.put_stack("pf-orders-api-dev-target", "REVIEW_IN_PROGRESS", None);
        let plans = [
            stack_plan("pf-orders-api-pipeline"),
            stack_plan("pf-orders-api-dev-target"),
            stack_plan("pf-orders-api-prod-target"),
        ];
        let found = deployed_stacks(&api, &plans).await.expect("read");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].name, "pf-orders-api-pipeline");
        assert_eq!(found[0].team.as_deref(), Some("payments"));
        assert_eq!(found[0].at.account, "111111111111");
    }
}
