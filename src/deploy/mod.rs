//! Stage 6: deploy — every stack of the plan through CloudFormation change sets, in
//! `plan.stacks` order (the target and region stacks, which do not depend on each other, a few
//! at a time; the pipeline stack after all of them), then the repository snapshot that starts
//! the pipeline.
//!
//! [`deploy`] renders the manifest (refusing a repository its team does not list), zips the
//! repository, reads where the pipeline lives ([`placement::place`]: its owner record's
//! placement, in the home account's bucket; a new pipeline's from the org's rules) and renders
//! again for that account when needed, checks that account's source bucket and the credentials
//! of every account (the org's bootstrap role in target accounts), reads and judges every
//! account quota the deploy adds to ([`capacity::check`]: refused before anything changes),
//! takes the pipeline's lock (two deploys of one pipeline never interleave: the second waits,
//! or fails cleanly once `timeout` is up), checks who owns
//! the pipeline ([`crate::owner::check`]: another repository or team is refused, a new
//! pipeline is claimed), uploads the bundle (content-addressed; the deployed templates
//! under `deploy/`, which large templates are read from by `TemplateURL`), deploys the target
//! stacks in their accounts, the region stacks and the pipeline stack in the tooling account,
//! and uploads `source.zip` last, then starts the pipeline (it has no trigger of its own), so
//! the run uses the new pipeline definition (new gates, new buildspecs), and a failed stack
//! deploy starts nothing.
//!
//! The per-stack state machine is [`stack::run_stack`], over the [`api::StackApi`] trait:
//! [`sdk::SdkStackApi`] in production, an in-memory fake in the unit tests.

pub mod api;
pub mod artifacts;
pub mod capacity;
#[cfg(test)]
pub(crate) mod fake;
pub mod placement;
pub mod relocate;
pub mod sdk;
pub mod stack;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Inputs;
use crate::aws::AwsContext;
use crate::capacity::PlacedBy;
use crate::error::{Error, Result};
use crate::names::InstallNames;
use crate::owner::{self, ClaimInfo, OwnerRecord};
use crate::plan::StackKind;
use crate::publish::progress::{Event, Progress, ResourceChange, StackOutcome};
use crate::publish::record::{
    DeployedRecord, ManifestInput, RecordContext, TemplateSetRef, input_files,
};
use crate::publish::store::{BundleUpload, DeployLock, SourceStore, SourceUpload};
use crate::publish::templates::{DeployTemplate, kind_name};
use crate::publish::{
    Prepared, PublishOptions, Timings, millis, prepare, session_name, snapshot, source_store,
    take_lock,
};
use api::{Location, StackApi};
use sdk::SdkStackApi;
use stack::{Mode, StackJob, Waits, run_stack};

/// Options of [`deploy`] and [`diff`].
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// The repository (`owner/name`) the checkout is; `None`: the one its `origin` remote names
    /// (the webhook passes the repository of the signed event).
    pub repository: Option<String>,
    /// Create change sets and report them; execute nothing, upload nothing that starts anything.
    pub dry_run: bool,
    /// Deploy a working tree with uncommitted changes.
    pub allow_dirty: bool,
    /// Upload `source.zip` even when the bucket has the same snapshot (starts the pipeline).
    pub force_source: bool,
    /// Longest single wait: another deploy's lock, a stack operation, a change set.
    pub timeout: Duration,
    /// First poll interval of a wait (intervals grow by half, up to `max_poll`).
    pub poll: Duration,
    /// Largest poll interval.
    pub max_poll: Duration,
    /// Who holds the lock, as other deploys see it (default: `user@host (pid N)`).
    pub holder: Option<String>,
    /// How long the lock stays valid without renewal (it is renewed every quarter of it).
    pub lock_lease: Duration,
    /// Largest repository snapshot, in bytes read.
    pub max_source_bytes: u64,
    /// How many independent stacks (target and region stacks) deploy at the same time; 1
    /// deploys every stack one after the other, in plan order.
    pub concurrency: usize,
    /// The day dated org rules and waivers are evaluated on (the caller reads the clock);
    /// `None`: every dated rule is enforced and no waiver applies.
    pub today: Option<crate::date::Date>,
    /// The repository's host (`github.com`), recorded for the fleet; `None`: the checkout's
    /// `origin` remote's, when it has one.
    pub host: Option<String>,
    /// Create change sets for every stack, even those whose deployed content hash is the
    /// rendered one (`fleet drift --fix`: a template edited outside pipeforge keeps its hash).
    pub redeploy: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        let p = PublishOptions::default();
        DeployOptions {
            repository: None,
            dry_run: false,
            allow_dirty: p.allow_dirty,
            force_source: p.force_source,
            timeout: p.timeout,
            poll: Duration::from_millis(250),
            max_poll: Duration::from_secs(5),
            holder: None,
            lock_lease: p.lock_lease,
            max_source_bytes: p.max_source_bytes,
            concurrency: 4,
            today: None,
            host: None,
            redeploy: false,
        }
    }
}

impl DeployOptions {
    fn publish(&self) -> PublishOptions {
        PublishOptions {
            repository: self.repository.clone(),
            allow_dirty: self.allow_dirty,
            force_source: self.force_source,
            timeout: self.timeout,
            holder: self.holder.clone(),
            lock_lease: self.lock_lease,
            max_source_bytes: self.max_source_bytes,
            today: self.today,
        }
    }

    fn waits(&self) -> Waits {
        Waits {
            timeout: self.timeout,
            poll: self.poll,
            max_poll: self.max_poll.max(self.poll),
        }
    }
}

/// What happened to one stack.
#[derive(Clone, Debug, Serialize)]
pub struct StackReport {
    /// Stack name.
    pub name: String,
    /// `target`, `region` or `pipeline`.
    pub kind: &'static str,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// How it ended.
    pub outcome: StackOutcome,
    /// Why it is unchanged, or what else happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The change set's changes.
    pub changes: Vec<ResourceChange>,
    /// The template's S3 URL, when it went by `TemplateURL` (over 51,200 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_url: Option<String>,
    /// Unified diff of the deployed template against the new one (`diff` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_diff: Option<String>,
    /// The stack's content hash.
    pub content_hash: String,
    /// Time spent on the stack.
    pub millis: u64,
}

/// What [`deploy`] did.
#[derive(Clone, Debug, Serialize)]
pub struct DeployReport {
    /// Pipeline (manifest name).
    pub pipeline: String,
    /// Team.
    pub team: String,
    /// The pipeline's owner record (in a dry run, as the deploy would leave it).
    pub owner: OwnerRecord,
    /// True when this deploy claimed the pipeline: it did not exist (or had no owner record),
    /// so a renamed pipeline's old stacks keep running beside it.
    pub claimed: bool,
    /// The bundle's content hash.
    pub content_hash: String,
    /// The commit deployed.
    pub commit: String,
    /// True for a dry run.
    pub dry_run: bool,
    /// Every stack, in deploy order.
    pub stacks: Vec<StackReport>,
    /// The bundle upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleUpload>,
    /// The `source.zip` upload (none in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceUpload>,
    /// Timings.
    pub timings: Timings,
}

impl DeployReport {
    /// Number of stacks with this outcome.
    pub fn count(&self, outcome: StackOutcome) -> usize {
        self.stacks.iter().filter(|s| s.outcome == outcome).count()
    }
}

/// What [`diff`] found.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// Pipeline (manifest name).
    pub pipeline: String,
    /// The bundle's content hash.
    pub content_hash: String,
    /// Every stack, in deploy order, with its template diff and resource changes.
    pub stacks: Vec<StackReport>,
}

impl DiffReport {
    /// True when a deploy would change something.
    pub fn changed(&self) -> bool {
        self.stacks
            .iter()
            .any(|s| s.outcome != StackOutcome::Unchanged || s.template_diff.is_some())
    }
}

/// The CloudFormation execution role a stack is deployed with (`pipeforge bootstrap` creates
/// it): the target accounts' for target stacks, the tooling account's for the others.
pub fn execution_role_arn(install: &InstallNames, stack: &crate::plan::StackPlan) -> String {
    let target = stack.kind == crate::plan::StackKind::Target;
    format!(
        "arn:{}:iam::{}:role/{}",
        crate::aws::partition(&stack.region),
        stack.account,
        install.execution_role(target)
    )
}

fn location(t: &crate::plan::StackPlan) -> Location {
    Location {
        account: t.account.clone(),
        region: t.region.clone(),
    }
}

/// Under the lock, the owner record must still place the pipeline where the plan does (a
/// platform engineer may have moved it since the placement was read).
pub(crate) fn still_placed(
    org: &crate::org::OrgPolicy,
    record: &OwnerRecord,
    plan: &crate::plan::Plan,
) -> Result<()> {
    let (account, _) = placement::recorded(org, record)?;
    if account.account == plan.pipeline.tooling_account && account.region == plan.pipeline.region {
        return Ok(());
    }
    Err(Error::Locked {
        message: format!(
            "pipeline `{}` was placed in tooling account {} ({}) while this deploy was being prepared for {} ({})",
            plan.pipeline.name,
            account.account,
            account.region,
            plan.pipeline.tooling_account,
            plan.pipeline.region
        ),
        help: "run it again: it reads the pipeline's placement again".to_owned(),
    })
}

/// True when the pipeline stack does not exist yet (or only as a failed first create, which the
/// deploy deletes and creates again): creating it starts a pipeline run.
async fn pipeline_is_new<A: StackApi>(api: &A, prepared: &Prepared) -> Result<bool> {
    let Some(t) = prepared
        .templates
        .iter()
        .find(|t| t.stack.kind == StackKind::Pipeline)
    else {
        return Ok(false);
    };
    let info = api
        .describe_stack(&location(&t.stack), &t.stack.name)
        .await
        .map_err(|e| {
            Error::other(
                format!("cannot describe stack `{}`: {}", t.stack.name, e.text()),
                "check the credentials of the tooling account",
            )
        })?;
    Ok(info.is_none_or(|i| {
        matches!(
            i.status.as_str(),
            "ROLLBACK_COMPLETE" | "CREATE_FAILED" | "REVIEW_IN_PROGRESS" | "DELETE_COMPLETE"
        )
    }))
}

/// Checks the credentials of every account the stacks live in, before anything changes.
async fn connect_all(api: &SdkStackApi<'_>, prepared: &Prepared) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for t in &prepared.templates {
        let at = location(&t.stack);
        if seen.insert(at.clone()) {
            api.connect(&at).await?;
        }
    }
    Ok(())
}

/// Waits for every future (polled together on this task), results in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The prepared pipeline and where its bundle is published: what every stack's template is
/// read from (inline, or from the source bucket when it is over the inline limit).
struct Published<'a> {
    prepared: &'a Prepared,
    /// The source bucket of the pipeline's account.
    store: &'a SourceStore,
    /// The bundle's prefix in that bucket.
    bundle_prefix: &'a str,
}

/// What a run does with each stack.
#[derive(Clone, Copy)]
struct Pass {
    /// Deploy, or only preview.
    mode: Mode,
    /// Also compute each stack's template diff (`diff`).
    template_diff: bool,
    /// Make a change set even when the deployed template carries the same content hash.
    redeploy: bool,
}

/// Runs every stack `only` keeps. The stacks before the pipeline stack (target and region
/// stacks, which do not depend on each other) run up to `steps`' concurrency at a time; the
/// pipeline stack starts once they are all done. When a stack fails, the others of its step
/// still finish (a CloudFormation operation cannot be abandoned halfway), then the first
/// failure in plan order is returned.
async fn run_stacks<A: StackApi>(
    api: &A,
    published: &Published<'_>,
    pass: Pass,
    only: fn(crate::plan::StackKind) -> bool,
    install: &InstallNames,
    steps: &Steps<'_>,
) -> Result<Vec<StackReport>> {
    let nonce = crate::publish::store::unique_token(6);
    // Every template's source first: a template nobody could read fails before anything runs.
    let mut jobs = Vec::new();
    for t in published
        .prepared
        .templates
        .iter()
        .filter(|t| only(t.stack.kind))
    {
        jobs.push(StackJob {
            at: location(&t.stack),
            template: t,
            template_url: template_url(published, t)?,
            mode: pass.mode,
            nonce: &nonce,
            template_diff: pass.template_diff,
            redeploy: pass.redeploy,
            role_arn: Some(execution_role_arn(install, &t.stack)),
        });
    }
    let mut out = Vec::new();
    for step in steps_of(&jobs) {
        out.extend(steps.run(api, &step).await?);
    }
    Ok(out)
}

/// The S3 URL of a template over the inline limit (`None` for the others); only the tooling
/// account's stacks can read one from the org source bucket.
fn template_url(published: &Published<'_>, t: &DeployTemplate) -> Result<Option<String>> {
    if !t.needs_url() {
        return Ok(None);
    }
    let plan = published.prepared.plan();
    if t.stack.account != plan.pipeline.tooling_account || t.stack.region != plan.pipeline.region {
        return Err(Error::other(
            format!(
                "the template of stack `{}` is {} bytes, over CloudFormation's 51,200-byte limit for a template sent inline, and account {} ({}) cannot read it from the org source bucket",
                t.stack.name,
                t.body.len(),
                t.stack.account,
                t.stack.region
            ),
            "only the tooling account's stacks may exceed the limit; reduce what the template override adds to this stack",
        ));
    }
    let key = format!("{}{}", published.bundle_prefix, t.bundle_path);
    Ok(Some(published.store.https_url(&key)))
}

/// The steps of a run: runs of independent stacks, each pipeline stack on its own.
fn steps_of<'j, 'a>(jobs: &'j [StackJob<'a>]) -> Vec<Vec<&'j StackJob<'a>>> {
    let mut steps: Vec<Vec<&StackJob<'_>>> = Vec::new();
    for job in jobs {
        let alone = job.template.stack.kind == crate::plan::StackKind::Pipeline;
        match steps.last_mut() {
            Some(step)
                if !alone
                    && step.last().is_some_and(|j| {
                        j.template.stack.kind != crate::plan::StackKind::Pipeline
                    }) =>
            {
                step.push(job)
            }
            _ => steps.push(vec![job]),
        }
    }
    steps
}

/// What the steps of [`run_stacks`] share: the concurrency limit and whether a stack failed.
struct Steps<'a> {
    permits: tokio::sync::Semaphore,
    failed: std::sync::atomic::AtomicBool,
    waits: &'a Waits,
    lock: Option<&'a DeployLock>,
    progress: &'a dyn Progress,
}

impl<'a> Steps<'a> {
    /// Steps that run up to `concurrency` stacks at a time (at least one).
    fn new(
        concurrency: usize,
        waits: &'a Waits,
        lock: Option<&'a DeployLock>,
        progress: &'a dyn Progress,
    ) -> Steps<'a> {
        Steps {
            permits: tokio::sync::Semaphore::new(concurrency.max(1)),
            failed: std::sync::atomic::AtomicBool::new(false),
            waits,
            lock,
            progress,
        }
    }

    /// Runs the stacks of one step together; every one finishes before the first failure (in
    /// plan order) is returned.
    async fn run<A: StackApi>(&self, api: &A, step: &[&StackJob<'_>]) -> Result<Vec<StackReport>> {
        let runs = step.iter().map(|job| self.run_one(api, job)).collect();
        let mut out = Vec::new();
        let mut first_error: Option<Error> = None;
        let mut also_failed = Vec::new();
        let mut skipped = Vec::new();
        for (job, r) in step.iter().zip(join_all(runs).await) {
            match r {
                Ok(Some(r)) => out.push(stack_report(job, r)),
                Ok(None) => skipped.push(format!("`{}`", job.template.stack.name)),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(_) => also_failed.push(format!("`{}`", job.template.stack.name)),
            }
        }
        match first_error {
            Some(e) => Err(with_others(e, &also_failed, &skipped)),
            None => Ok(out),
        }
    }

    /// One stack of a step, once a permit is free; `None` when another stack failed first.
    async fn run_one<A: StackApi>(
        &self,
        api: &A,
        job: &StackJob<'_>,
    ) -> Result<Option<stack::StackResult>> {
        let _permit = self.permits.acquire().await;
        // After a failure, stacks that have not started yet are left alone.
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(l) = self.lock {
            l.check()?;
        }
        let r = run_stack(api, job, self.waits, self.progress).await;
        if r.is_err() {
            self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r.map(Some)
    }
}

/// The report of a stack that ran.
fn stack_report(job: &StackJob<'_>, r: stack::StackResult) -> StackReport {
    let t = job.template;
    StackReport {
        name: t.stack.name.clone(),
        kind: kind_name(t.stack.kind),
        account: t.stack.account.clone(),
        region: t.stack.region.clone(),
        outcome: r.outcome,
        detail: r.detail,
        changes: r.changes,
        template_url: job.template_url.clone(),
        template_diff: r.template_diff,
        content_hash: t.content_hash.clone(),
        millis: millis(r.elapsed),
    }
}

/// A step's first failure, naming the stacks of the step that failed too or never started.
fn with_others(mut e: Error, also_failed: &[String], skipped: &[String]) -> Error {
    if let Error::Deploy(f) = &mut e {
        match also_failed.len() {
            0 => {}
            1 => f.events.push(format!(
                "(stack {} failed too; its events are above)",
                also_failed[0]
            )),
            _ => f.events.push(format!(
                "(stacks {} failed too; their events are above)",
                also_failed.join(", ")
            )),
        }
        if !skipped.is_empty() {
            f.events
                .push(format!("(not attempted: {})", skipped.join(", ")));
        }
    }
    e
}

/// Deploys a repository's pipeline: renders `manifest`, uploads the bundle, deploys every stack
/// through change sets (target stacks in their accounts through the org's bootstrap role, then
/// the region and pipeline stacks in the tooling account), then uploads the repository snapshot,
/// which starts the pipeline, and writes the deploy record (`pipelines/<name>/deployed.json`).
/// With `options.dry_run`, change sets are created, reported and deleted, and nothing that
/// starts anything is uploaded.
///
/// Progress goes to `progress` as it happens; a failed stack is an [`Error::Deploy`] with the
/// events that explain it (the snapshot is then not uploaded, so the pipeline does not start).
pub async fn deploy(
    repo: &Path,
    manifest: &Path,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &DeployOptions,
    progress: &dyn Progress,
) -> Result<DeployReport> {
    let t0 = Instant::now();
    let prepared = prepare(
        repo,
        manifest,
        inputs,
        options.repository.as_deref(),
        options.today,
        progress,
    )?;
    let (zip, zip_time) = snapshot(
        repo,
        options.allow_dirty,
        options.max_source_bytes,
        progress,
    )?;
    let text = prepared.manifest_text.clone();
    let path = manifest
        .strip_prefix(repo)
        .ok()
        .and_then(|p| p.to_str())
        .map(|p| p.trim_start_matches("./").to_owned())
        .unwrap_or_else(|| "pipeline.yml".to_owned());
    let host = options
        .host
        .clone()
        .or_else(|| crate::owner::origin_host(repo));
    let origin = DeployOrigin {
        commit: zip.commit.clone(),
        manifest: ManifestInput { path, text },
        host,
        source: Some(&zip),
        rollout: None,
        expect: None,
    };
    let mut report = deploy_prepared(&prepared, &origin, inputs, aws, options, progress).await?;
    report.timings.zip_ms = millis(zip_time);
    report.timings.total_ms = millis(t0.elapsed());
    Ok(report)
}

/// Where a deploy comes from, besides its rendered pipeline: a checkout (the CLI, the
/// webhook) or a deploy record (a fleet rollout, which has no checkout and starts nothing).
#[derive(Clone, Debug)]
pub struct DeployOrigin<'a> {
    /// The commit deployed.
    pub commit: String,
    /// The manifest, as deployed.
    pub manifest: ManifestInput,
    /// The repository's host, when known.
    pub host: Option<String>,
    /// The repository snapshot to upload after the stacks (starts the pipeline); `None`: the
    /// source stays as it is.
    pub source: Option<&'a crate::publish::source::SourceZip>,
    /// The fleet rollout (its id and candidate) deploying it.
    pub rollout: Option<(String, String)>,
    /// The deploy record the render came from (content hash and commit): under the lock, a
    /// record that changed since means someone deployed meanwhile, and nothing is deployed.
    pub expect: Option<(String, String)>,
}

/// Deploys an already rendered pipeline (see [`deploy`]): under the pipeline's lock, the owner
/// check, the bundle (with its input), the stacks, the snapshot (when `origin` has one), then the
/// deploy record.
pub async fn deploy_prepared(
    prepared: &Prepared,
    origin: &DeployOrigin<'_>,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &DeployOptions,
    progress: &dyn Progress,
) -> Result<DeployReport> {
    let t0 = Instant::now();
    let role = &inputs.org.org.deploy.bootstrap_role;
    let name = &prepared.plan().pipeline.name;
    let api = SdkStackApi::new(aws, role, &session_name(prepared.plan()));
    // Where the pipeline lives: its owner record's placement (records in the home account).
    let records = placement::records_store(aws, &inputs.org, name, role).await?;
    let placed = Box::pin(placement::place(
        prepared, inputs, aws, &records, &api, progress,
    ))
    .await?;
    let prepared = placed.prepared(prepared);
    let plan = prepared.plan();
    let store = source_store(aws, plan, role).await?;
    store.check().await?;
    connect_all(&api, prepared).await?;
    // Every account quota the deploy adds to is read and judged before anything changes.
    let session = session_name(plan);
    let mut quotas = capacity::QuotaReader::new(aws, role, &session, &inputs.org);
    capacity::check(&api, &mut quotas, prepared, progress).await?;
    let install = InstallNames::new(&inputs.org.org.naming.prefix, role);
    let (lock, waited) = if options.dry_run {
        (None, Duration::ZERO)
    } else {
        let (l, w) = take_lock(&records, &options.publish(), progress).await?;
        (Some(l), w)
    };
    let holder = lock.as_ref().map_or_else(
        || {
            options
                .holder
                .clone()
                .unwrap_or_else(crate::publish::default_holder)
        },
        |l| l.holder().to_owned(),
    );
    let deploying = Deploying {
        prepared,
        origin,
        inputs,
        aws,
        options,
        progress,
        api: &api,
        records: &records,
        store: &store,
        install: &install,
        lock: lock.as_ref(),
        holder: &holder,
        role,
    };
    let work = deploying.under_lock(placed.by).await;
    let released = match lock {
        Some(l) => l.release().await,
        None => Ok(()),
    };
    let done = work?;
    released?;
    Ok(done.report(prepared, origin, options.dry_run, waited, t0))
}

/// What the steps of [`deploy_prepared`] share once the pipeline is placed, its accounts
/// checked and its lock taken.
struct Deploying<'a> {
    prepared: &'a Prepared,
    origin: &'a DeployOrigin<'a>,
    inputs: &'a Inputs,
    aws: &'a AwsContext,
    options: &'a DeployOptions,
    progress: &'a dyn Progress,
    api: &'a SdkStackApi<'a>,
    /// Where the owner record and the lock live.
    records: &'a SourceStore,
    /// The source bucket of the pipeline's account.
    store: &'a SourceStore,
    install: &'a InstallNames,
    /// `None` for a dry run.
    lock: Option<&'a DeployLock>,
    /// Who deploys: the lock's holder.
    holder: &'a str,
    /// The org's bootstrap role.
    role: &'a str,
}

/// What the work under the lock did.
struct Deployed {
    checked: owner::Checked,
    bundle: Option<BundleUpload>,
    stacks: Vec<StackReport>,
    source: Option<SourceUpload>,
    upload_time: Duration,
    stacks_time: Duration,
}

impl Deployed {
    /// The deploy's report.
    fn report(
        self,
        prepared: &Prepared,
        origin: &DeployOrigin<'_>,
        dry_run: bool,
        waited: Duration,
        t0: Instant,
    ) -> DeployReport {
        let plan = prepared.plan();
        DeployReport {
            pipeline: plan.pipeline.name.clone(),
            team: plan.pipeline.team.clone(),
            owner: self.checked.record,
            claimed: self.checked.claimed,
            content_hash: prepared.content_hash.clone(),
            commit: origin.commit.clone(),
            dry_run,
            stacks: self.stacks,
            bundle: self.bundle,
            source: self.source,
            timings: Timings {
                render_ms: millis(prepared.render),
                zip_ms: 0,
                upload_ms: millis(self.upload_time),
                stacks_ms: millis(self.stacks_time),
                lock_wait_ms: millis(waited),
                total_ms: millis(t0.elapsed()),
            },
        }
    }
}

impl Deploying<'_> {
    /// Under the lock: the owner check, the bundle, the stacks and the snapshot, the record.
    async fn under_lock(&self, placed_by: PlacedBy) -> Result<Deployed> {
        // Who owns the pipeline decides, under the lock, before anything is uploaded.
        let checked = self.check_owner(placed_by).await?;
        self.check_expected().await?;
        self.check_lock()?;
        let t = Instant::now();
        let bundle = self.upload_bundle().await?;
        let mut upload_time = t.elapsed();
        let t = Instant::now();
        let (stacks, source, source_time) = self.stacks_and_source().await?;
        upload_time += source_time;
        let stacks_time = t.elapsed().saturating_sub(source_time);
        if !self.options.dry_run {
            self.write_record(bundle.as_ref().is_some_and(|b| b.archive))
                .await?;
        }
        Ok(Deployed {
            checked,
            bundle,
            stacks,
            source,
            upload_time,
            stacks_time,
        })
    }

    fn check_lock(&self) -> Result<()> {
        if let Some(l) = self.lock {
            l.check()?;
        }
        Ok(())
    }

    /// Who owns the pipeline (a new one is claimed, unless this is a dry run), and whether it
    /// still lives where the org's rules put it.
    async fn check_owner(&self, placed_by: PlacedBy) -> Result<owner::Checked> {
        let plan = self.prepared.plan();
        let claim = ClaimInfo {
            by: self.holder.to_owned(),
            commit: Some(self.origin.commit.clone()),
            placed_by,
            write: !self.options.dry_run,
        };
        let deployer = &self.prepared.deployer;
        let checked = owner::check(self.records, self.api, plan, deployer, &claim).await?;
        still_placed(&self.inputs.org, &checked.record, plan)?;
        if let Some(p) = &checked.record.placement {
            self.progress.event(&Event::Placed {
                account: p.account.clone(),
                region: p.region.clone(),
                by: p.by.as_str().to_owned(),
                new: checked.claimed,
            });
        }
        Ok(checked)
    }

    /// A deploy rendered from a deploy record goes ahead only while that record is current.
    async fn check_expected(&self) -> Result<()> {
        let Some((hash, commit)) = &self.origin.expect else {
            return Ok(());
        };
        let now = self.store.read_deployed().await?.map(|(_, r)| r);
        if now
            .as_ref()
            .is_none_or(|r| &r.content_hash != hash || &r.commit != commit)
        {
            return Err(Error::Locked {
                message: format!(
                    "pipeline `{}` was deployed while this deploy was being prepared",
                    self.prepared.plan().pipeline.name
                ),
                help: "run it again: it renders the pipeline as it is deployed now".to_owned(),
            });
        }
        Ok(())
    }

    /// The bundle, with the deploy's input; a dry run uploads it only for a template over the
    /// inline limit.
    async fn upload_bundle(&self) -> Result<Option<BundleUpload>> {
        let prepared = self.prepared;
        let needs_bundle =
            !self.options.dry_run || prepared.templates.iter().any(|t| t.needs_url());
        if !needs_bundle {
            return Ok(None);
        }
        let mut extra = prepared.extra_files();
        extra.extend(input_files(
            &self.origin.manifest,
            &prepared.plan().pipeline.team,
            prepared.deployer.repository.as_deref().unwrap_or_default(),
            &self.origin.commit,
        ));
        let upload = self
            .store
            .upload_bundle(
                &prepared.bundle.outputs,
                &prepared.content_hash,
                &extra,
                self.progress,
            )
            .await?;
        Ok(Some(upload))
    }

    /// The stacks and the snapshot, with the time the snapshot took. A new pipeline starts a
    /// run as CloudFormation creates it: its snapshot must be there first (its EventBridge rule
    /// does not exist yet, so the upload starts nothing). An existing pipeline gets the
    /// snapshot last, so the new definition runs it.
    async fn stacks_and_source(
        &self,
    ) -> Result<(Vec<StackReport>, Option<SourceUpload>, Duration)> {
        let new_pipeline = !self.options.dry_run
            && self.origin.source.is_some()
            && pipeline_is_new(self.api, self.prepared).await?;
        if new_pipeline {
            let mut stacks = self.run(|k| k != StackKind::Pipeline).await?;
            let t = Instant::now();
            let source = self.upload_source(false).await?;
            let source_time = t.elapsed();
            stacks.extend(self.run(|k| k == StackKind::Pipeline).await?);
            return Ok((stacks, source, source_time));
        }
        let stacks = self.run(|_| true).await?;
        if self.options.dry_run {
            return Ok((stacks, None, Duration::ZERO));
        }
        let t = Instant::now();
        let source = self.upload_source(true).await?;
        Ok((stacks, source, t.elapsed()))
    }

    /// Runs the stacks `only` keeps.
    async fn run(&self, only: fn(StackKind) -> bool) -> Result<Vec<StackReport>> {
        let options = self.options;
        let prefix = self.store.bundle_prefix(&self.prepared.content_hash);
        let mode = if options.dry_run {
            Mode::Preview
        } else {
            Mode::Deploy
        };
        let published = Published {
            prepared: self.prepared,
            store: self.store,
            bundle_prefix: &prefix,
        };
        let pass = Pass {
            mode,
            template_diff: false,
            redeploy: options.redeploy,
        };
        let waits = options.waits();
        let steps = Steps::new(options.concurrency, &waits, self.lock, self.progress);
        run_stacks(self.api, &published, pass, only, self.install, &steps).await
    }

    /// Uploads the snapshot (when the origin has one), then starts the pipeline when `start`
    /// (it has no trigger of its own) — not when CloudFormation is about to create it, which
    /// starts a run by itself.
    async fn upload_source(&self, start: bool) -> Result<Option<SourceUpload>> {
        self.check_lock()?;
        let Some(zip) = self.origin.source else {
            return Ok(None);
        };
        let (prepared, progress) = (self.prepared, self.progress);
        let mut s = self
            .store
            .upload_source(
                zip,
                &prepared.content_hash,
                self.options.force_source,
                progress,
            )
            .await?;
        if start && s.uploaded {
            s.execution =
                crate::publish::start_pipeline(self.aws, prepared.plan(), self.role, progress)
                    .await?;
        }
        Ok(Some(s))
    }

    /// The deploy record (`pipelines/<name>/deployed.json`); `archive`: the bundle's archive
    /// is beside it.
    async fn write_record(&self, archive: bool) -> Result<()> {
        self.check_lock()?;
        let (prepared, origin, inputs) = (self.prepared, self.origin, self.inputs);
        let record = DeployedRecord::new(
            prepared,
            RecordContext {
                repository: prepared.deployer.repository.as_deref().unwrap_or_default(),
                host: origin.host.as_deref(),
                commit: &origin.commit,
                at: &owner::now_rfc3339(),
                by: self.holder,
                manifest: origin.manifest.clone(),
                template_set: TemplateSetRef {
                    label: inputs.templates.set_name().to_owned(),
                    hash: inputs.templates.content_hash(),
                    candidate: origin.rollout.as_ref().map(|(_, c)| c.clone()),
                },
                org_hash: crate::publish::record::org_hash(&inputs.org),
                rollout: origin.rollout.as_ref().map(|(id, _)| id.as_str()),
                archive,
            },
        );
        self.store.write_deployed(&record).await
    }
}

/// What a deploy of `manifest` (in the checkout `repo`) would change, per stack: the unified
/// diff of the deployed template against the new one, and the resource changes of a change set
/// (created, read and deleted; nothing is executed). Only templates over the inline limit are
/// uploaded (to the content-addressed bundle), and nothing that starts a pipeline. A pipeline
/// owned by another repository or team is refused first, as a deploy would be.
pub async fn diff(
    repo: &Path,
    manifest: &Path,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &DeployOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    let prepared = prepare(
        repo,
        manifest,
        inputs,
        options.repository.as_deref(),
        options.today,
        progress,
    )?;
    let role = &inputs.org.org.deploy.bootstrap_role;
    let api = SdkStackApi::new(aws, role, &session_name(prepared.plan()));
    let name = &prepared.plan().pipeline.name;
    let records = placement::records_store(aws, &inputs.org, name, role).await?;
    let placed = Box::pin(placement::place(
        &prepared, inputs, aws, &records, &api, progress,
    ))
    .await?;
    let prepared = placed.prepared(&prepared);
    let plan = prepared.plan();
    let store = source_store(aws, plan, role).await?;
    connect_all(&api, prepared).await?;
    let look = ClaimInfo {
        by: options
            .holder
            .clone()
            .unwrap_or_else(crate::publish::default_holder),
        commit: None,
        placed_by: placed.by,
        write: false,
    };
    owner::check(&records, &api, plan, &prepared.deployer, &look).await?;
    if prepared.templates.iter().any(|t| t.needs_url()) {
        store.check().await?;
        store
            .upload_bundle(
                &prepared.bundle.outputs,
                &prepared.content_hash,
                &prepared.extra_files(),
                progress,
            )
            .await?;
    }
    let prefix = store.bundle_prefix(&prepared.content_hash);
    let published = Published {
        prepared,
        store: &store,
        bundle_prefix: &prefix,
    };
    let pass = Pass {
        mode: Mode::Preview,
        template_diff: true,
        redeploy: false,
    };
    let install = InstallNames::new(&inputs.org.org.naming.prefix, role);
    let waits = options.waits();
    let steps = Steps::new(options.concurrency, &waits, None, progress);
    let stacks = run_stacks(&api, &published, pass, |_| true, &install, &steps).await?;
    Ok(DiffReport {
        pipeline: plan.pipeline.name.clone(),
        content_hash: prepared.content_hash.clone(),
        stacks,
    })
}
