//! `pipeforge fleet rollout`: applies a candidate set (templates, languages, org policy) to the
//! pipelines it changes, in waves, each wave deployed before the next, stopping at
//! `max_failures`. Its state lives in the org source bucket (`fleet/rollouts/<id>.json`),
//! written with conditional writes on the version read, so a rollout is resumable (run it again
//! with the same id), idempotent (a pipeline deployed by it is not deployed again) and never run
//! by two processes at once.
//!
//! Each pipeline is re-rendered from its deploy record's manifest with the candidate and
//! deployed through [`crate::deploy::deploy_prepared`], like any deploy: the org's `teams`
//! (repository may deploy the team's pipelines), dated rules and waivers on `today`, the owner
//! record under the pipeline's lock, the accounts and approvals the candidate policy gives. A
//! rollout is never a way around them. A pipeline deployed by a merge while the rollout
//! prepared it is not overwritten: the deploy record is compared under the lock.
//!
//! Without a queue ([`RolloutOptions::jobs`] `None`) the deploys run in this process, one at
//! a time. With one (on AWS: the webhook's SQS FIFO queue) each pipeline of a wave is a job
//! handled by the webhook worker, in its repository's message group, so a rollout never races a
//! merge of the same repository: the candidate set is stored first, content-addressed
//! ([`super::candidate`]), each job names the rollout, the candidate's hash and the pipeline,
//! and the rollout waits for every job of a wave (their statuses) before the next; once the
//! wave's failures reach the limit, the workers skip its remaining jobs
//! ([`PipelineState::Skipped`], sent again on resume). Either way the repository snapshot is
//! left as it is (a rollout starts no pipeline run by itself).
//!
//! Rollouts know each other: a run first supersedes every other unfinished rollout with a
//! pipeline it governs still to deploy ([`RolloutState::superseded_by`]), so a job of an
//! abandoned older rollout, replayed late, never deploys its candidate over a newer one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::candidate::{self, CandidateFiles};
use super::plan::{Outcome, Planner};
use super::{Entry, Reader, Scope};
use crate::Inputs;
use crate::aws::AwsContext;
use crate::date::Date;
use crate::deploy::{DeployOptions, DeployOrigin};
use crate::error::{Error, Result, SourceFile};
use crate::publish::progress::Progress;
use crate::publish::store::SourceStore;

/// Schema identifier of a rollout's state.
pub const ROLLOUT_SCHEMA: &str = "pipeforge/rollout/v1";

/// Where rollout states live in the source bucket.
pub const ROLLOUTS_PREFIX: &str = "fleet/rollouts/";

/// The largest rollout state read back: an item per pipeline (its name, state, attempts and last
/// error), so ~30 MB for a rollout of 100,000 pipelines that all failed. Its writer is
/// pipeforge; a larger object is reported, not read.
pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

/// One wave's size: a number of pipelines, or a cumulative percentage of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveSize {
    /// This many more pipelines.
    Count(usize),
    /// Up to this percentage of every pipeline, counted from the start.
    Percent(u8),
}

/// Parses `1,5%,25%,100%`.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSize>> {
    let bad = |w: &str| {
        Error::other(
            format!("`{w}` is not a wave size"),
            "write waves as counts or percentages, e.g. `--waves 1,5%,25%,100%`",
        )
    };
    text.split(',')
        .map(str::trim)
        .map(|w| match w.strip_suffix('%') {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(WaveSize::Percent)
                .ok_or_else(|| bad(w)),
            None => w
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(WaveSize::Count)
                .ok_or_else(|| bad(w)),
        })
        .collect()
}

/// Splits `pipelines` (in name order) into waves: the canaries first (those that are among the
/// pipelines), then `sizes`; what the sizes leave goes into a last wave.
pub fn waves(pipelines: &[String], canaries: &[String], sizes: &[WaveSize]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let canary: Vec<String> = pipelines
        .iter()
        .filter(|p| canaries.contains(p))
        .cloned()
        .collect();
    let rest: Vec<&String> = pipelines.iter().filter(|p| !canary.contains(p)).collect();
    if !canary.is_empty() {
        out.push(canary);
    }
    let total = pipelines.len();
    let mut done = total - rest.len();
    let mut next = 0;
    for size in sizes {
        let until = match size {
            WaveSize::Count(n) => done + n,
            WaveSize::Percent(p) => (total * usize::from(*p)).div_ceil(100),
        }
        .min(total);
        if until <= done {
            continue;
        }
        let take = until - done;
        out.push(
            rest[next..next + take]
                .iter()
                .map(|s| (*s).clone())
                .collect(),
        );
        next += take;
        done = until;
    }
    if next < rest.len() {
        out.push(rest[next..].iter().map(|s| (*s).clone()).collect());
    }
    out
}

/// A pipeline's state in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    /// Not deployed yet.
    Pending,
    /// Deployed with the candidate.
    Deployed,
    /// Its deploy failed (retried when the rollout is resumed).
    Failed,
    /// Not deployed: its wave had reached `--max-failures` when the worker took its job (sent
    /// again when the rollout is resumed).
    Skipped,
}

/// One pipeline of a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The pipeline.
    pub pipeline: String,
    /// Its state.
    pub state: PipelineState,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Jobs sent for it (queued rollouts): the last one's id is [`job_id`] of this count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

/// `fleet/rollouts/<id>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// [`ROLLOUT_SCHEMA`].
    pub schema: String,
    /// The rollout's id.
    pub id: String,
    /// The candidate's hash ([`candidate_hash`]): a resume with another candidate is refused.
    pub candidate: String,
    /// The waves, in order.
    pub waves: Vec<Vec<Item>>,
    /// Pipelines the candidate makes invalid: never deployed by the rollout.
    #[serde(default)]
    pub invalid: Vec<String>,
    /// The rollout started after this one, while this one was unfinished: this one is closed
    /// (never resumed, its jobs refused), so none of its jobs can put an older candidate back
    /// over the newer rollout's deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// A drift fix: every stack is redeployed through a drift-aware change set
    /// (`DeploymentMode: REVERT_DRIFT`), also by the worker of a queued rollout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redeploy: bool,
    /// The failures after which a wave's remaining jobs are skipped by the worker (the last
    /// run's `--max-failures`; absent in states of older versions: no skipping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<usize>,
}

impl RolloutState {
    /// Pipelines in a state.
    pub fn count(&self, s: PipelineState) -> usize {
        self.waves.iter().flatten().filter(|i| i.state == s).count()
    }

    /// True when every pipeline is deployed.
    pub fn finished(&self) -> bool {
        self.waves
            .iter()
            .flatten()
            .all(|i| i.state == PipelineState::Deployed)
    }
}

/// `sha256:<hex>` of a candidate: its templates, org policy and language catalog.
pub fn candidate_hash(candidate: &Inputs) -> String {
    let catalog = serde_json::to_vec(&candidate.catalog.all()).unwrap_or_default();
    let all = format!(
        "{}\n{}\n{}",
        candidate.templates.content_hash(),
        crate::publish::record::org_hash(&candidate.org),
        crate::outputs::sha256(&catalog)
    );
    crate::outputs::sha256(all.as_bytes())
}

/// What a rollout is asked to do.
#[derive(Clone, Debug)]
pub struct RolloutOptions {
    /// Its id (the state's name): letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// Wave sizes after the canaries.
    pub waves: Vec<WaveSize>,
    /// Pipelines deployed first, as a wave of their own.
    pub canaries: Vec<String>,
    /// Stop once this many deploys failed in this run.
    pub max_failures: usize,
    /// Only compute and show the waves: nothing is written or deployed.
    pub dry_run: bool,
    /// Which pipelines.
    pub scope: Scope,
    /// Deploy exactly these (in this order) instead of the pipelines the candidate changes:
    /// `fleet drift --fix`, with `deploy.redeploy`.
    pub pipelines: Option<Vec<String>>,
    /// The day dated rules and waivers are evaluated on.
    pub today: Date,
    /// Deploy settings (timeouts, polls).
    pub deploy: DeployOptions,
    /// Deploy through a job queue instead of in this process.
    pub jobs: Option<Jobs>,
}

/// A boxed future (the queue is a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one rollout job asks: references the worker checks against what it reads itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// The job's id ([`job_id`]).
    pub id: String,
    /// The rollout.
    pub rollout: String,
    /// The candidate's hash.
    pub candidate: String,
    /// The pipeline.
    pub pipeline: String,
    /// Its repository, from its deploy record (the queue's message group).
    pub repository: String,
    /// The repository's host, from the record.
    pub host: Option<String>,
    /// The deployed commit, from the record.
    pub commit: String,
}

/// How a finished job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobResult {
    /// Deployed (or deployed by this rollout already).
    Deployed,
    /// Failed, with the error.
    Failed(String),
    /// Skipped by the worker: its wave had reached the failure limit.
    Skipped(String),
}

/// A queue of deploy jobs and their statuses (the webhook's queue and status store).
pub trait RolloutQueue: Send + Sync {
    /// Sends a job.
    fn send<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<()>>;
    /// How the job `id` ended, `None` while it is queued or running.
    fn result<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobResult>>>;
}

/// A rollout through a job queue.
#[derive(Clone)]
pub struct Jobs {
    /// The queue.
    pub queue: Arc<dyn RolloutQueue>,
    /// The candidate's files, stored before the first job.
    pub files: CandidateFiles,
    /// How often job statuses are read.
    pub poll: Duration,
    /// How long one wave's jobs may take in all.
    pub timeout: Duration,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("poll", &self.poll)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The id of attempt `attempt` of `pipeline`'s job in rollout `rollout`:
/// `rollout-<32 hex digits>`.
pub fn job_id(rollout: &str, pipeline: &str, attempt: u32) -> String {
    let h = crate::outputs::sha256(format!("{rollout}\n{pipeline}\n{attempt}").as_bytes());
    format!("rollout-{}", &h.trim_start_matches("sha256:")[..32])
}

/// What a run of a rollout did.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutReport {
    /// The state after the run.
    pub state: RolloutState,
    /// True when this run created the rollout.
    pub created: bool,
    /// Deploys this run made.
    pub deployed: usize,
    /// Deploys this run that failed.
    pub failed: usize,
    /// Jobs of this run the worker skipped (their wave had reached the failure limit).
    #[serde(skip_serializing_if = "is_zero_usize")]
    pub skipped: usize,
    /// Why the run stopped before the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// A dry run.
    pub dry_run: bool,
}

/// Progress of a rollout, for a live line.
pub trait RolloutProgress: Sync {
    /// After each pipeline: the wave (0-based) and the state.
    fn step(&self, wave: usize, state: &RolloutState, pipeline: &str, result: &Result<()>);
}

/// The state store: the org source bucket in the tooling account.
async fn state_store(aws: &AwsContext, org: &crate::org::Org) -> Result<SourceStore> {
    let conf = aws
        .account(
            &org.tooling.account,
            &org.tooling.region,
            &org.deploy.bootstrap_role,
            "pipeforge-fleet",
        )
        .await?;
    Ok(SourceStore::new(
        aws.s3(&conf, &org.tooling.region),
        &org.source.bucket,
        &org.tooling.region,
        &org.source.kms_key,
        ROLLOUTS_PREFIX,
        ROLLOUTS_PREFIX,
    ))
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 100
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(Error::other(
            format!("`{id}` is not a rollout id"),
            "use letters, digits, `-`, `_` and `.` (e.g. `templates-2026-06`)",
        ));
    }
    Ok(())
}

/// Runs (or resumes) a rollout of `candidate` over the fleet of `fleet_org`.
pub async fn rollout(
    aws: &AwsContext,
    fleet_org: &crate::org::Org,
    candidate: Arc<Inputs>,
    options: &RolloutOptions,
    progress: &dyn RolloutProgress,
    deploy_progress: &dyn Progress,
) -> Result<RolloutReport> {
    check_id(&options.id)?;
    let store = state_store(aws, fleet_org).await?;
    let key = format!("{ROLLOUTS_PREFIX}{}.json", options.id);
    let hash = candidate_hash(&candidate);
    let (mut etag, mut state, created) = match store
        .read(&key, "the rollout state", MAX_STATE_BYTES)
        .await?
    {
        Some((etag, bytes)) => {
            let state = parse_state(&bytes, &store.url(&key))?;
            if let Some(by) = &state.superseded_by {
                return Err(Error::other(
                    format!(
                        "rollout `{}` was superseded by rollout `{by}`, started after it while it was unfinished",
                        options.id
                    ),
                    "a superseded rollout never deploys again (its jobs could put an older candidate back); start a new rollout with another --id",
                ));
            }
            if state.candidate != hash {
                return Err(Error::other(
                    format!(
                        "rollout `{}` was started with another candidate ({}); this one is {hash}",
                        options.id, state.candidate
                    ),
                    "resume it with the same --templates, --languages and --org, or start a new rollout with another --id",
                ));
            }
            (Some(etag), state, false)
        }
        None => (
            None,
            new_state(aws, fleet_org, &candidate, options, &hash).await?,
            true,
        ),
    };
    let report = RolloutReport {
        state: state.clone(),
        created,
        deployed: 0,
        failed: 0,
        skipped: 0,
        stopped: None,
        dry_run: options.dry_run,
    };
    if options.dry_run {
        return Ok(report);
    }
    state.max_failures = Some(options.max_failures.max(1));
    etag = Some(save(&store, &key, &state, etag.as_deref()).await?);
    // Before anything is deployed: every other unfinished rollout of pipelines this one
    // governs is closed, so no job of theirs (a replay included) deploys over this one's.
    // Boxed: the rollout's future stays small for a caller on a small stack.
    Box::pin(supersede_others(&store, &options.id, &|p| {
        governs(options, p)
    }))
    .await?;
    let mut readers = Vec::new();
    for source in super::sources(fleet_org) {
        readers.push(Reader::of(aws, fleet_org, &source).await?);
    }
    if let Some(jobs) = &options.jobs {
        store_candidate(&store, &jobs.files, &hash).await?;
    }
    let mut run = Run {
        store,
        key,
        etag,
        state,
        report,
        options,
        progress,
    };
    for w in 0..run.state.waves.len() {
        // Boxed: a deploy's future is large, and a rollout's caller may run on a small stack.
        let stopped = match &options.jobs {
            None => {
                Box::pin(in_process_wave(
                    &mut run,
                    w,
                    aws,
                    &readers,
                    &candidate,
                    deploy_progress,
                ))
                .await?
            }
            Some(jobs) => {
                let hosts = &fleet_org.webhook.allowed_hosts;
                Box::pin(queued_wave(&mut run, w, jobs, &readers, &hash, hosts)).await?
            }
        };
        if stopped {
            break;
        }
        // A wave is checked before the next: any failure in it stops the rollout.
        if run.state.waves[w]
            .iter()
            .any(|i| i.state != PipelineState::Deployed)
        {
            run.report.stopped = Some(format!(
                "wave {} did not deploy completely; fix the failures and run the rollout again to resume",
                w + 1
            ));
            break;
        }
    }
    run.report.state = run.state;
    Ok(run.report)
}

/// A rollout being run: its state, the version of it last written, the counts, and the
/// options and progress it runs with.
struct Run<'a> {
    store: SourceStore,
    key: String,
    etag: Option<String>,
    state: RolloutState,
    report: RolloutReport,
    options: &'a RolloutOptions,
    progress: &'a dyn RolloutProgress,
}

impl Run<'_> {
    async fn save(&mut self) -> Result<()> {
        self.etag = Some(save(&self.store, &self.key, &self.state, self.etag.as_deref()).await?);
        Ok(())
    }

    /// Records that the worker skipped pipeline `i` of wave `w` (its wave had reached the
    /// failure limit): sent again on resume.
    async fn skip(&mut self, w: usize, i: usize, why: String) -> Result<()> {
        let item = &mut self.state.waves[w][i];
        item.state = PipelineState::Skipped;
        item.error = Some(why.clone());
        self.report.skipped += 1;
        let name = item.pipeline.clone();
        self.save().await?;
        let result = Err(Error::other(why, "resume the rollout to send it again"));
        self.progress.step(w, &self.state, &name, &result);
        Ok(())
    }

    /// Records how pipeline `i` of wave `w` ended; true when the failure limit is reached.
    async fn finish(&mut self, w: usize, i: usize, result: &Result<()>) -> Result<bool> {
        let item = &mut self.state.waves[w][i];
        match result {
            Ok(()) => {
                item.state = PipelineState::Deployed;
                item.error = None;
                self.report.deployed += 1;
            }
            Err(e) => {
                item.state = PipelineState::Failed;
                item.error = Some(super::first_line(e));
                self.report.failed += 1;
            }
        }
        let name = item.pipeline.clone();
        self.save().await?;
        self.progress.step(w, &self.state, &name, result);
        let limit = self.options.max_failures.max(1);
        if self.report.failed >= limit {
            self.report.stopped = Some(format!(
                "{} deploy{} failed (--max-failures {limit})",
                self.report.failed,
                if self.report.failed == 1 { "" } else { "s" },
            ));
            return Ok(true);
        }
        Ok(false)
    }
}

/// Deploys wave `w` in this process, one pipeline at a time; true when the rollout stops.
async fn in_process_wave(
    run: &mut Run<'_>,
    w: usize,
    aws: &AwsContext,
    readers: &[Reader],
    candidate: &Inputs,
    deploy_progress: &dyn Progress,
) -> Result<bool> {
    let options = run.options;
    for i in 0..run.state.waves[w].len() {
        if run.state.waves[w][i].state == PipelineState::Deployed {
            continue;
        }
        let name = run.state.waves[w][i].pipeline.clone();
        let target = Target {
            rollout: &options.id,
            today: options.today,
            deploy: &options.deploy,
        };
        let result = deploy_recorded(aws, readers, candidate, &target, &name, deploy_progress)
            .await
            .map(|_| ());
        if run.finish(w, i, &result).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Stores the candidate's files under their hash, once; refuses files that do not hash to the
/// candidate the rollout computed (they changed on disk since they were loaded).
async fn store_candidate(store: &SourceStore, files: &CandidateFiles, hash: &str) -> Result<()> {
    let key = candidate::key_of(hash)?;
    if store.exists(&key).await? {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!(
        "pipeforge-candidate-{}-{}",
        std::process::id(),
        &hash[7..19]
    ));
    let loaded = files.load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if candidate_hash(&loaded?) != hash {
        return Err(Error::other(
            "the candidate files changed while the rollout started",
            "run the rollout again once --templates, --languages and --org are stable",
        ));
    }
    store
        .write_if(&key, files.to_bytes()?, None, "the rollout candidate")
        .await?;
    Ok(())
}

/// Sends wave `w`'s jobs (resuming those an earlier run sent) and waits for them; true when
/// the rollout stops. Once the wave's failures reach the limit no more jobs are sent, and the
/// run still waits for those sent: the worker skips them ([`PipelineState::Skipped`]) rather
/// than deploy them, or finishes those it had started.
async fn queued_wave(
    run: &mut Run<'_>,
    w: usize,
    jobs: &Jobs,
    readers: &[Reader],
    hash: &str,
    hosts: &[String],
) -> Result<bool> {
    let options = run.options;
    let mut waiting: Vec<(usize, String)> = Vec::new();
    let mut stopping = false;
    for i in 0..run.state.waves[w].len() {
        if stopping {
            break;
        }
        let item = run.state.waves[w][i].clone();
        if item.state == PipelineState::Deployed {
            continue;
        }
        // A job an earlier run sent may still run, or may have deployed since.
        if item.state == PipelineState::Pending && item.attempts > 0 {
            let id = job_id(&options.id, &item.pipeline, item.attempts);
            match jobs.queue.result(&id).await? {
                None => {
                    waiting.push((i, id));
                    continue;
                }
                Some(JobResult::Deployed) => {
                    stopping = run.finish(w, i, &Ok(())).await?;
                    continue;
                }
                Some(JobResult::Failed(_) | JobResult::Skipped(_)) => {}
            }
        }
        let record = match super::record_anywhere(readers, &item.pipeline).await {
            Entry::Record(r) => r,
            Entry::Missing { .. } => {
                let e = Error::other(
                    format!("pipeline `{}` has no deploy record any more", item.pipeline),
                    "deploy it from its repository",
                );
                stopping = run.finish(w, i, &Err(e)).await?;
                continue;
            }
            Entry::Unreadable { error, .. } => {
                let e = Error::other(error, "run it again");
                stopping = run.finish(w, i, &Err(e)).await?;
                continue;
            }
        };
        let host = match job_host(record.host.as_deref(), hosts, &item.pipeline) {
            Ok(h) => h,
            Err(e) => {
                stopping = run.finish(w, i, &Err(e)).await?;
                continue;
            }
        };
        let attempt = item.attempts + 1;
        let spec = JobSpec {
            id: job_id(&options.id, &item.pipeline, attempt),
            rollout: options.id.clone(),
            candidate: hash.to_owned(),
            pipeline: item.pipeline.clone(),
            repository: record.repository.clone(),
            host: Some(host),
            commit: record.commit.clone(),
        };
        let it = &mut run.state.waves[w][i];
        it.attempts = attempt;
        it.state = PipelineState::Pending;
        it.error = None;
        // Written before the job is sent: a resume looks for this attempt's status.
        run.save().await?;
        jobs.queue.send(&spec).await?;
        waiting.push((i, spec.id));
    }
    let deadline = Instant::now() + jobs.timeout;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for (i, id) in waiting {
            match jobs.queue.result(&id).await? {
                None => still.push((i, id)),
                Some(JobResult::Skipped(why)) => run.skip(w, i, why).await?,
                Some(end) => {
                    let r = match end {
                        JobResult::Failed(e) => {
                            Err(Error::other(e, "see the job's status for its log"))
                        }
                        _ => Ok(()),
                    };
                    stopping |= run.finish(w, i, &r).await?;
                }
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = waiting
                .iter()
                .map(|(i, id)| format!("{} ({id})", run.state.waves[w][*i].pipeline))
                .collect();
            let late = format!(
                "wave {}: {} job(s) did not finish within {} s: {}; run the rollout again to keep waiting for them",
                w + 1,
                names.len(),
                jobs.timeout.as_secs(),
                names.join(", ")
            );
            run.report.stopped = Some(match run.report.stopped.take() {
                Some(why) => format!("{why}; {late}"),
                None => late,
            });
            return Ok(true);
        }
        tokio::time::sleep(jobs.poll).await;
    }
    Ok(stopping)
}

/// True when a rollout run with `options` governs `pipeline`: its pattern matches and, for a
/// drift fix, it is one of the pipelines fixed.
fn governs(options: &RolloutOptions, pipeline: &str) -> bool {
    options
        .scope
        .only
        .as_deref()
        .is_none_or(|p| crate::org::glob_match(p, pipeline))
        && options
            .pipelines
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p == pipeline))
}

/// The repository host a rollout job names, which puts it in the message group of the
/// repository's merges (`<host>/<owner>/<name>`): the deploy record's, else the org's only
/// webhook host. A record without a host (a CLI deploy whose checkout had no `origin` URL)
/// in an org with several hosts is an error: a guessed group would let the job and a merge of
/// the repository run at once.
pub fn job_host(record: Option<&str>, allowed: &[String], pipeline: &str) -> Result<String> {
    match (record, allowed) {
        (Some(h), _) => Ok(h.to_owned()),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(Error::other(
            format!(
                "the deploy record of pipeline `{pipeline}` names no repository host, and the org's webhook allows {} hosts",
                allowed.len()
            ),
            "deploy it once from a checkout whose `origin` names its host (or through the webhook), or roll it out without --queue-url",
        )),
    }
}

/// Closes every other unfinished rollout with a pipeline not yet deployed that `governs`
/// (`superseded_by` this one), each written on the version read.
async fn supersede_others(
    store: &SourceStore,
    id: &str,
    governs: &(dyn Fn(&str) -> bool + Sync),
) -> Result<()> {
    for key in store.keys(ROLLOUTS_PREFIX).await? {
        let Some(other) = key
            .strip_prefix(ROLLOUTS_PREFIX)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        if other != id && !other.contains('/') {
            supersede(store, &key, id, governs).await?;
        }
    }
    Ok(())
}

/// Marks the rollout state at `key` superseded by rollout `by`, unless it is superseded already
/// or has no pipeline left to deploy that `governs`; a state changed meanwhile (its process
/// still runs) is read again.
async fn supersede(
    store: &SourceStore,
    key: &str,
    by: &str,
    governs: &(dyn Fn(&str) -> bool + Sync),
) -> Result<()> {
    for _ in 0..5 {
        let Some((etag, bytes)) = store.read(key, "a rollout state", MAX_STATE_BYTES).await? else {
            return Ok(());
        };
        // A state nobody can parse deploys nothing: the worker refuses its jobs too.
        let Ok(mut state) = parse_state(&bytes, &store.url(key)) else {
            return Ok(());
        };
        let open = state
            .waves
            .iter()
            .flatten()
            .any(|i| i.state != PipelineState::Deployed && governs(&i.pipeline));
        if !open || state.superseded_by.is_some() {
            return Ok(());
        }
        state.superseded_by = Some(by.to_owned());
        let mut body = serde_json::to_vec_pretty(&state).unwrap_or_default();
        body.push(b'\n');
        if store
            .write_if(key, body, Some(&etag), "a rollout state")
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    Err(Error::other(
        format!(
            "cannot close the unfinished rollout `{}`: it keeps changing",
            store.url(key)
        ),
        "a rollout starting closes every unfinished one; wait for the other rollout's run to stop, then run this one again",
    ))
}

/// Parses a rollout state read from `url`.
pub fn parse_state(bytes: &[u8], url: &str) -> Result<RolloutState> {
    let state: RolloutState = serde_json::from_slice(bytes).map_err(|e| {
        Error::other(
            format!("the rollout state `{url}` is not valid ({e})"),
            "start a new rollout with another --id",
        )
    })?;
    if state.schema != ROLLOUT_SCHEMA {
        return Err(Error::other(
            format!(
                "the rollout state `{url}` has schema `{}`; this pipeforge reads `{ROLLOUT_SCHEMA}`",
                state.schema
            ),
            "use the pipeforge version that started it",
        ));
    }
    Ok(state)
}

/// Writes the state if it is still the version read (`None`: if it is new).
async fn save(
    store: &SourceStore,
    key: &str,
    state: &RolloutState,
    etag: Option<&str>,
) -> Result<String> {
    let mut body = serde_json::to_vec_pretty(state).unwrap_or_default();
    body.push(b'\n');
    store
        .write_if(key, body, etag, "the rollout state")
        .await?
        .ok_or_else(|| {
            Error::other(
                format!(
                    "rollout `{}` was changed by another process (`{}`)",
                    state.id,
                    store.url(key)
                ),
                "only one process runs a rollout at a time; wait for the other one, then run it again to resume",
            )
        })
}

/// Plans the fleet with the candidate: the changed pipelines, in waves.
async fn new_state(
    aws: &AwsContext,
    fleet_org: &crate::org::Org,
    candidate: &Arc<Inputs>,
    options: &RolloutOptions,
    hash: &str,
) -> Result<RolloutState> {
    let mut changed = Vec::new();
    let mut invalid = Vec::new();
    if let Some(list) = &options.pipelines {
        changed.clone_from(list);
    } else {
        let planner = Arc::new(Planner::new(Arc::clone(candidate), Some(options.today)));
        super::index::plan_scan(aws, fleet_org, &planner, &options.scope, |i| {
            match i.outcome {
                Outcome::Changed => changed.push(i.pipeline),
                Outcome::Invalid => invalid.push(i.pipeline),
                _ => {}
            }
            Ok(())
        })
        .await?;
    }
    for c in &options.canaries {
        if !changed.contains(c) {
            return Err(Error::other(
                format!("canary `{c}` is not among the pipelines the candidate changes"),
                "run `pipeforge fleet plan` with the same inputs to see which pipelines change",
            ));
        }
    }
    Ok(RolloutState {
        schema: ROLLOUT_SCHEMA.to_owned(),
        id: options.id.clone(),
        candidate: hash.to_owned(),
        waves: waves(&changed, &options.canaries, &options.waves)
            .into_iter()
            .map(|w| {
                w.into_iter()
                    .map(|pipeline| Item {
                        pipeline,
                        state: PipelineState::Pending,
                        error: None,
                        attempts: 0,
                    })
                    .collect()
            })
            .collect(),
        invalid,
        superseded_by: None,
        redeploy: options.deploy.redeploy,
        max_failures: Some(options.max_failures.max(1)),
    })
}

/// Which rollout a deploy belongs to, and how it deploys.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The rollout's id.
    pub rollout: &'a str,
    /// The day dated rules and waivers are evaluated on.
    pub today: Date,
    /// Deploy settings.
    pub deploy: &'a DeployOptions,
}

/// Re-renders `name` from its deploy record with the candidate and deploys it (nothing when
/// the record says this rollout deployed it already): the deploy of a rollout, in this process
/// or in the worker.
pub async fn deploy_recorded(
    aws: &AwsContext,
    readers: &[Reader],
    candidate: &Inputs,
    target: &Target<'_>,
    name: &str,
    progress: &dyn Progress,
) -> Result<Option<crate::deploy::DeployReport>> {
    let record = match super::record_anywhere(readers, name).await {
        Entry::Record(r) => r,
        Entry::Missing { .. } => {
            return Err(Error::other(
                format!("pipeline `{name}` has no deploy record any more"),
                "deploy it from its repository",
            ));
        }
        Entry::Unreadable { error, .. } => return Err(Error::other(error, "run it again")),
    };
    // Boxed: a deploy's future is large.
    Box::pin(deploy_record(aws, &record, candidate, target, progress)).await
}

/// Re-renders the pipeline of `record` with the candidate and deploys it, only if its deploy
/// record under the lock is still `record` (nothing when `record` says this rollout deployed
/// it already).
pub async fn deploy_record(
    aws: &AwsContext,
    record: &crate::publish::record::DeployedRecord,
    candidate: &Inputs,
    target: &Target<'_>,
    progress: &dyn Progress,
) -> Result<Option<crate::deploy::DeployReport>> {
    if record.rollout.as_deref() == Some(target.rollout) {
        return Ok(None);
    }
    let file = SourceFile::new(&record.manifest.path, &record.manifest.text);
    let prepared = crate::publish::prepare_text(
        file,
        &record.repository,
        candidate,
        Some(target.today),
        progress,
    )?;
    let origin = DeployOrigin {
        commit: record.commit.clone(),
        manifest: record.manifest.clone(),
        host: record.host.clone(),
        source: None,
        rollout: Some((target.rollout.to_owned(), candidate_hash(candidate))),
        expect: Some((record.content_hash.clone(), record.commit.clone())),
    };
    let deploy = DeployOptions {
        repository: Some(record.repository.clone()),
        today: Some(target.today),
        holder: Some(format!("fleet-rollout:{}", target.rollout)),
        ..target.deploy.clone()
    };
    // Boxed: a deploy's future is large.
    Box::pin(crate::deploy::deploy_prepared(
        &prepared, &origin, candidate, aws, &deploy, progress,
    ))
    .await
    .map(Some)
}

/// The counts of a rollout, as a progress line.
pub fn progress_line(wave: usize, state: &RolloutState) -> String {
    let w = &state.waves[wave];
    let done = w
        .iter()
        .filter(|i| i.state == PipelineState::Deployed)
        .count();
    let failed = w
        .iter()
        .filter(|i| i.state == PipelineState::Failed)
        .count();
    let skipped = match w
        .iter()
        .filter(|i| i.state == PipelineState::Skipped)
        .count()
    {
        0 => String::new(),
        n => format!(", {n} skipped"),
    };
    format!(
        "wave {}/{}: {done}/{} deployed, {failed} failed{skipped}; total {}/{} deployed",
        wave + 1,
        state.waves.len(),
        w.len(),
        state.count(PipelineState::Deployed),
        state.waves.iter().map(Vec::len).sum::<usize>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i:02}")).collect()
    }

    #[test]
    fn waves_take_canaries_first_then_counts_and_cumulative_percentages() {
        let sizes = parse_waves("1,5%,25%,100%").expect("waves");
        assert_eq!(
            sizes,
            [
                WaveSize::Count(1),
                WaveSize::Percent(5),
                WaveSize::Percent(25),
                WaveSize::Percent(100)
            ]
        );
        let w = waves(&names(40), &["p07".to_owned()], &sizes);
        let lens: Vec<usize> = w.iter().map(Vec::len).collect();
        // The canary, 1 more, 5% (2 of 40: reached already, no empty wave), up to 25% (10),
        // the rest.
        assert_eq!(lens, [1, 1, 8, 30]);
        assert_eq!(w[0], ["p07"]);
        assert_eq!(w.iter().flatten().count(), 40);
        assert!(parse_waves("0").is_err());
        assert!(parse_waves("150%").is_err());
        assert!(parse_waves("five").is_err());
    }

    #[test]
    fn a_job_names_the_records_host_else_the_orgs_only_one_never_a_guess() {
        let hosts = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let two = hosts(&["github.com", "bitbucket.org"]);
        assert_eq!(
            job_host(Some("bitbucket.org"), &two, "p").expect("host"),
            "bitbucket.org"
        );
        assert_eq!(
            job_host(None, &hosts(&["github.com"]), "p").expect("host"),
            "github.com"
        );
        for allowed in [two, Vec::new()] {
            let e = job_host(None, &allowed, "orders").expect_err("ambiguous");
            assert!(
                e.to_string().contains("`orders` names no repository host"),
                "{e}"
            );
        }
    }
}
