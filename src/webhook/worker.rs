//! The worker: takes a job from the queue, clones the repository at the merge commit, checks the
//! manifest (validate + render, in memory) and hands the checkout to a [`Deployer`]; records
//! the job's status at each step.
//!
//! Messages are deleted only on success or on a permanent error (an invalid manifest, a commit
//! that does not exist): retrying those would fail the same way. Anything else is retried with
//! a growing delay (the message's visibility), which also holds back the repository's later
//! merges, so they are never applied out of order; after the queue's last receive the job moves
//! to the dead-letter queue with its error. A message already `succeeded` (a duplicate
//! delivery) is deleted without deploying again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::BoxFuture;
use super::git::{self, CloneError, CloneLimits, Relation, clone_at};
use super::job::{Job, JobKind, PullRequestJob, check_clone_url, check_repository};
use super::log::Log;
use super::preview::{DeployedBundle, MemoryBundles, Previewer};
use super::queue::{JobQueue, Received};
use super::settled::Settled;
use super::status::{JobState, JobStatus, PreviewStatus, StackChange, StatusStore};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::publish::checkout;
use crate::{Inputs, MAX_MANIFEST_BYTES};

/// What the worker hands to a deployer.
pub struct DeployRequest<'a> {
    /// The checkout, at the merge commit.
    pub checkout: &'a Path,
    /// The repository of the signed event (`owner/name`): who deploys, for the owner check.
    pub repository: &'a str,
    /// The repository's host (from the clone URL), recorded for the fleet.
    pub host: Option<&'a str>,
    /// The manifest, inside the checkout.
    pub manifest: &'a Path,
    /// The commit checked out (full hash).
    pub commit: &'a str,
    /// Policy, catalog and templates.
    pub inputs: &'a Inputs,
    /// The day dated org rules and waivers are evaluated on.
    pub today: crate::date::Date,
    /// Progress events (uploads, stack events), logged with the job.
    pub progress: &'a (dyn Fn(serde_json::Value) + Send + Sync),
}

/// What a deploy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployReport {
    /// The commit deployed (full hash).
    pub commit: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Every stack and what happened to it, in deploy order.
    pub stacks: Vec<StackChange>,
    /// The bundle's content hash.
    pub content_hash: String,
    /// How long it took.
    pub duration: Duration,
    /// Org rules the manifest breaks without failing yet (or under a waiver).
    pub warnings: Vec<String>,
}

impl DeployReport {
    /// The worker's view of a library deploy that started at `started`.
    fn of(r: crate::deploy::DeployReport, started: Instant) -> DeployReport {
        DeployReport {
            commit: r.commit,
            pipeline: r.pipeline,
            stacks: r
                .stacks
                .iter()
                .map(|s| StackChange {
                    stack: s.name.clone(),
                    action: s.outcome.as_str().to_owned(),
                })
                .collect(),
            content_hash: r.content_hash,
            duration: started.elapsed(),
            warnings: Vec::new(),
        }
    }
}

/// Deploys a checkout (the same library call as `pipeforge deploy`).
pub trait Deployer: Send + Sync {
    /// Publishes and deploys the pipeline of `req.manifest`.
    fn deploy<'a>(&'a self, req: DeployRequest<'a>) -> BoxFuture<'a, Result<DeployReport>>;

    /// The commit the pipeline of `plan` was last deployed from, as the deploy recorded it
    /// (`None` when it never was).
    fn deployed_commit<'a>(
        &'a self,
        plan: &'a Plan,
        inputs: &'a Inputs,
    ) -> BoxFuture<'a, Result<Option<String>>>;

    /// Deploys one pipeline of a fleet rollout ([`super::rollout::process`]). Only a deployer
    /// with AWS access can: the default refuses.
    fn deploy_rollout<'a>(&'a self, req: RolloutRequest<'a>) -> BoxFuture<'a, Result<RolloutDone>> {
        Box::pin(async move {
            Err(Error::Refused {
                message: format!(
                    "rollout job `{}`: this worker does not deploy to AWS",
                    req.job.id
                ),
                help: "run fleet rollouts against the AWS worker, or without a queue".to_owned(),
            })
        })
    }
}

/// What the worker hands to a deployer for a rollout job.
pub struct RolloutRequest<'a> {
    /// The job, as received (checked by the deployer).
    pub job: &'a Job,
    /// Its rollout part.
    pub rollout: &'a super::job::RolloutJob,
    /// The worker's policy (it names the source bucket).
    pub inputs: &'a Inputs,
    /// The worker's day.
    pub today: crate::date::Date,
    /// A directory for the candidate's files.
    pub scratch: &'a Path,
    /// Progress events.
    pub progress: &'a (dyn Fn(serde_json::Value) + Send + Sync),
    /// The job status store (it holds the failure marks of rollout jobs).
    pub status: &'a dyn StatusStore,
}

/// How a rollout job that passed the deployer's checks ended.
#[derive(Debug)]
pub enum RolloutDone {
    /// Deployed (or deployed by this rollout already).
    Deployed(DeployReport),
    /// Not deployed: its wave had reached the rollout's failure limit.
    Skipped(String),
    /// The deploy failed.
    Failed(Error),
}

/// A deployer that only renders (validate, plan, render: everything but AWS), reporting each
/// stack as `rendered`, and remembers each pipeline's "deployed" commit in memory. For
/// `pipeforge serve --render-only` and for tests of the worker.
#[derive(Debug, Default)]
pub struct RenderOnly {
    /// Source key (`<team>/<name>/source.zip`) → commit.
    deployed: Mutex<BTreeMap<String, String>>,
    /// The bundles "deployed", which pull-request previews compare with (reads only).
    pub bundles: Arc<MemoryBundles>,
}

impl Deployer for RenderOnly {
    fn deploy<'a>(&'a self, req: DeployRequest<'a>) -> BoxFuture<'a, Result<DeployReport>> {
        Box::pin(async move {
            let started = Instant::now();
            let manifest = checkout::read_manifest(req.checkout, req.manifest)?;
            let eval = crate::date::Evaluation::on(req.today).for_repository(Some(req.repository));
            let bundle = crate::generate_in(&manifest, req.inputs, &eval)?;
            if let Ok(mut d) = self.deployed.lock() {
                d.insert(bundle.plan.source.key.clone(), req.commit.to_owned());
            }
            if let Ok(mut b) = self.bundles.bundles.lock() {
                b.insert(
                    bundle.plan.source.key.clone(),
                    DeployedBundle {
                        commit: Some(req.commit.to_owned()),
                        files: bundle
                            .outputs
                            .iter()
                            .map(|(p, b)| (p.to_owned(), b.to_vec()))
                            .collect(),
                    },
                );
            }
            Ok(DeployReport {
                commit: req.commit.to_owned(),
                pipeline: bundle.plan.pipeline.name.clone(),
                stacks: bundle
                    .plan
                    .stacks
                    .iter()
                    .map(|s| StackChange {
                        stack: s.name.to_string(),
                        action: "rendered".to_owned(),
                    })
                    .collect(),
                content_hash: bundle.hashes.hash.clone(),
                duration: started.elapsed(),
                warnings: Vec::new(),
            })
        })
    }

    fn deployed_commit<'a>(
        &'a self,
        plan: &'a Plan,
        _inputs: &'a Inputs,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(self
                .deployed
                .lock()
                .ok()
                .and_then(|d| d.get(&plan.source.key).cloned()))
        })
    }
}

/// The deployer of `pipeforge deploy`: [`crate::deploy::deploy`] with the worker's AWS
/// context (the org's bootstrap role in target accounts, the tooling account's credentials for
/// the rest).
pub struct AwsDeployer {
    /// The AWS context, shared by every job.
    pub aws: Arc<crate::aws::AwsContext>,
    /// Deploy options (timeouts, concurrency).
    pub options: crate::deploy::DeployOptions,
}

impl Deployer for AwsDeployer {
    fn deploy<'a>(&'a self, req: DeployRequest<'a>) -> BoxFuture<'a, Result<DeployReport>> {
        Box::pin(async move {
            let started = Instant::now();
            let progress = |e: &crate::publish::progress::Event| {
                (req.progress)(serde_json::to_value(e).unwrap_or_default());
            };
            let options = crate::deploy::DeployOptions {
                repository: Some(req.repository.to_owned()),
                today: Some(req.today),
                host: req.host.map(str::to_owned),
                ..self.options.clone()
            };
            let r = crate::deploy::deploy(
                req.checkout,
                req.manifest,
                req.inputs,
                &self.aws,
                &options,
                &progress,
            )
            .await?;
            Ok(DeployReport::of(r, started))
        })
    }

    fn deploy_rollout<'a>(&'a self, req: RolloutRequest<'a>) -> BoxFuture<'a, Result<RolloutDone>> {
        Box::pin(async move {
            use super::rollout::RolloutEnd;
            let started = Instant::now();
            let progress = |e: &crate::publish::progress::Event| {
                (req.progress)(serde_json::to_value(e).unwrap_or_default());
            };
            let r = super::rollout::process(&self.aws, &self.options, &req, &progress).await?;
            Ok(match r {
                RolloutEnd::Skipped(why) => RolloutDone::Skipped(why),
                RolloutEnd::Failed(e) => RolloutDone::Failed(e),
                RolloutEnd::Deployed(Some(r)) => {
                    RolloutDone::Deployed(DeployReport::of(*r, started))
                }
                // Deployed by this rollout already (an earlier attempt).
                RolloutEnd::Deployed(None) => RolloutDone::Deployed(DeployReport {
                    commit: req.job.commit.clone(),
                    pipeline: req.rollout.pipeline.clone(),
                    stacks: Vec::new(),
                    content_hash: String::new(),
                    duration: started.elapsed(),
                    warnings: Vec::new(),
                }),
            })
        })
    }

    /// The `pipeforge-commit` of the pipeline's `source.zip` in the org source bucket: what
    /// every deploy (the webhook's and `pipeforge deploy`'s) uploads last.
    fn deployed_commit<'a>(
        &'a self,
        plan: &'a Plan,
        inputs: &'a Inputs,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let role = &inputs.org.org.deploy.bootstrap_role;
            let store = crate::publish::deployed_store(&self.aws, &inputs.org, plan, role).await?;
            store.source_commit().await
        })
    }
}

/// What a job came to, when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Deployed.
    Deployed(DeployReport),
    /// Not deployed: the merge is the pipeline's deployed commit ([`JobState::Duplicate`]) or
    /// an ancestor of it ([`JobState::Superseded`]).
    NotDeployed {
        /// `duplicate` or `superseded`.
        state: JobState,
        /// The merge commit (full hash).
        commit: String,
        /// The deployed commit.
        deployed: String,
    },
    /// Not deployed: a rollout job whose wave had reached the rollout's failure limit.
    Skipped(String),
}

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// Will fail again: record it and drop the message.
    Permanent {
        /// The error.
        error: String,
        /// The manifest's problems, when it is invalid.
        diagnostics: Vec<String>,
    },
    /// May pass later: retry.
    Transient(String),
}

impl JobError {
    fn permanent(error: impl Into<String>) -> JobError {
        JobError::Permanent {
            error: error.into(),
            diagnostics: Vec::new(),
        }
    }

    /// The error message.
    pub fn message(&self) -> &str {
        match self {
            JobError::Permanent { error, .. } | JobError::Transient(error) => error,
        }
    }
}

/// Errors in the inputs or the rendered output are permanent; the rest (AWS, I/O) may pass.
pub fn classify(e: &Error) -> JobError {
    match e {
        Error::Invalid(d) => JobError::Permanent {
            error: format!(
                "the manifest is invalid ({} problem{}); nothing was deployed and the previous pipeline keeps running",
                d.0.len(),
                if d.0.len() == 1 { "" } else { "s" }
            ),
            diagnostics: d
                .0
                .iter()
                .map(|x| x.to_string().trim_end().to_owned())
                .collect(),
        },
        Error::Template { .. }
        | Error::OutputCheck { .. }
        | Error::Quota { .. }
        | Error::DuplicatePipeline { .. }
        | Error::Refused { .. } => JobError::permanent(format!(
            "{e}\n(nothing was deployed; the previous pipeline keeps running)"
        )),
        // AWS errors, another deploy holding the pipeline's lock, a failed stack operation
        // (rolled back; a later deploy recovers): retried, then dead-lettered with the error.
        other => JobError::Transient(other.to_string()),
    }
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Where checkouts go (one directory per job, removed afterwards).
    pub work_dir: PathBuf,
    /// First retry delay; doubled on each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a received message stays invisible; renewed while the job runs.
    pub lease: Duration,
    /// How long one receive waits for a message (zero: poll every 250 ms).
    pub receive_wait: Duration,
    /// The day manifests are validated on (dated org rules, waivers); `None`: the system
    /// clock's, read for each job.
    pub today: Option<crate::date::Date>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            work_dir: std::env::temp_dir().join("pipeforge-worker"),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(900),
            lease: Duration::from_secs(120),
            receive_wait: Duration::from_secs(20),
            today: None,
        }
    }
}

/// What happened to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Deployed; message deleted.
    Succeeded,
    /// Already deployed by an earlier delivery; message deleted.
    Duplicate,
    /// Permanent failure recorded; message deleted.
    Failed,
    /// Transient failure; the message comes back after a delay.
    Retrying,
    /// Last attempt failed; moved to the dead-letter queue.
    DeadLettered,
    /// A newer merge of the repository has deployed since; not deployed, message deleted.
    Superseded,
    /// A rollout job whose wave reached the rollout's failure limit; message deleted.
    Skipped,
}

/// Takes jobs from a queue and deploys them.
#[derive(Clone)]
pub struct Worker {
    /// The queue.
    pub queue: Arc<dyn JobQueue>,
    /// Where statuses go.
    pub status: Arc<dyn StatusStore>,
    /// What deploys.
    pub deployer: Arc<dyn Deployer>,
    /// Policy, catalog and templates.
    pub inputs: Arc<Inputs>,
    /// Logs.
    pub log: Log,
    /// Settings.
    pub settings: WorkerSettings,
    /// Merges known not to deploy again (a replay of one is settled without a clone).
    pub settled: Arc<Settled>,
    /// Handles pull-request jobs (`None`: they fail, saying previews are not set up). It holds
    /// no deployer.
    pub previewer: Option<Arc<Previewer>>,
}

impl Worker {
    /// Receives and handles jobs until `stop` turns true.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        while !*stop.borrow() {
            let received = tokio::select! {
                r = self.queue.receive(self.settings.receive_wait) => r,
                _ = stop.changed() => break,
            };
            match received {
                Ok(Some(msg)) => {
                    self.handle(msg).await;
                }
                // Short polling: pause between empty receives.
                Ok(None) if self.settings.receive_wait.is_zero() => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Ok(None) => {}
                Err(e) => {
                    self.log
                        .error("queue receive failed", json!({"error": e.to_string()}));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.settings
            .retry_base
            .saturating_mul(factor)
            .min(self.settings.retry_max)
    }

    async fn save(&self, status: &JobStatus) {
        if let Err(e) = self.status.put(status).await {
            self.log.error(
                "cannot record job status",
                json!({"job": status.id, "error": e.to_string()}),
            );
        }
    }

    /// Handles one message: deploy, then delete it, retry it later or dead-letter it.
    pub async fn handle(&self, msg: Received) -> Handled {
        let job = &msg.job;
        let existing = self.status.get(&job.id).await.ok().flatten();
        if let Some(done) = existing.as_ref().filter(|s| {
            matches!(
                s.state,
                JobState::Succeeded | JobState::Superseded | JobState::Duplicate
            )
        }) {
            self.log.info(
                "duplicate delivery: the job is done",
                json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                       "state": done.state}),
            );
            self.ack(&msg).await;
            return Handled::Duplicate;
        }
        let mut status = existing.unwrap_or_else(|| JobStatus::queued(job));
        if let JobKind::PullRequest(pr) = &job.kind {
            return self.handle_pull_request(&msg, status, pr).await;
        }
        // A rollout job redeploys the recorded commit: the merge replay rule is not for it.
        if let Some((state, deployed)) = matches!(job.kind, JobKind::Merge)
            .then(|| self.settled.lookup(&job.group(), &job.commit))
            .flatten()
        {
            status.updated_ms = super::now_ms();
            return self.not_deployed(&msg, status, state, &deployed).await;
        }
        status.state = JobState::Running;
        status.attempts = msg.receive_count.max(status.attempts + 1);
        status.updated_ms = super::now_ms();
        self.save(&status).await;
        self.log.info(
            "job started",
            json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                   "branch": job.branch, "attempt": status.attempts}),
        );

        // Keep the message invisible while the job runs (a deploy can outlast any lease).
        let lease = self.settings.lease;
        let keeper = {
            let queue = Arc::clone(&self.queue);
            let msg = msg.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 2).await;
                    let _ = queue.set_visibility(&msg, lease).await;
                }
            })
        };
        let started = Instant::now();
        let result = self.process(job).await;
        keeper.abort();
        status.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        status.updated_ms = super::now_ms();
        match result {
            Ok(Outcome::Deployed(report)) => {
                self.settled.deployed(&job.group(), &report.commit);
                self.succeeded(&msg, status, &report).await
            }
            Ok(Outcome::NotDeployed {
                state,
                commit,
                deployed,
            }) => {
                if state == JobState::Superseded {
                    self.settled.superseded(&job.group(), &commit, &deployed);
                } else {
                    self.settled.deployed(&job.group(), &deployed);
                }
                self.not_deployed(&msg, status, state, &deployed).await
            }
            Ok(Outcome::Skipped(why)) => self.skipped(&msg, status, why).await,
            Err(JobError::Permanent { error, diagnostics }) => {
                self.failed_for_good(&msg, status, error, diagnostics, "job failed")
                    .await
            }
            Err(JobError::Transient(error)) => self.failed_for_now(&msg, status, error).await,
        }
    }

    /// A pull-request job: review and comment through the previewer, which cannot deploy.
    async fn handle_pull_request(
        &self,
        msg: &Received,
        mut status: JobStatus,
        pr: &PullRequestJob,
    ) -> Handled {
        let job = &msg.job;
        status.state = JobState::Running;
        status.attempts = msg.receive_count.max(status.attempts + 1);
        status.updated_ms = super::now_ms();
        self.save(&status).await;
        self.log.info(
            "pull request job started",
            json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                   "pull_request": pr.number, "attempt": status.attempts}),
        );
        let started = Instant::now();
        let result = match &self.previewer {
            Some(p) => p.run(job, pr).await,
            None => Err(JobError::permanent(
                "pull-request previews are not set up in this worker",
            )),
        };
        status.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        status.updated_ms = super::now_ms();
        match result {
            Ok(r) => {
                status.state = JobState::Succeeded;
                status.error = None;
                status.diagnostics.clear();
                status.pipeline = r.pipeline.clone();
                status.preview = Some(PreviewStatus {
                    commit: r.commit.clone(),
                    verdict: r.verdict,
                    baseline: r.baseline,
                    comment: if r.posted.created {
                        "created"
                    } else {
                        "updated"
                    }
                    .to_owned(),
                    comment_url: r.posted.comment_url.clone(),
                    comment_chars: r.comment_chars,
                });
                let status = status.bounded();
                self.save(&status).await;
                self.log.info(
                    "pull request job succeeded",
                    json!({"job": job.id, "repository": job.repository, "commit": r.commit,
                           "pull_request": pr.number, "verdict": r.verdict,
                           "comment": status.preview.as_ref().map(|p| p.comment.clone()),
                           "duration_ms": status.duration_ms}),
                );
                self.ack(msg).await;
                Handled::Succeeded
            }
            Err(JobError::Permanent { error, diagnostics }) => {
                self.failed_for_good(msg, status, error, diagnostics, "pull request job failed")
                    .await
            }
            Err(JobError::Transient(error)) => self.failed_for_now(msg, status, error).await,
        }
    }

    async fn succeeded(&self, msg: &Received, mut status: JobStatus, r: &DeployReport) -> Handled {
        let job = &msg.job;
        status.state = JobState::Succeeded;
        status.error = None;
        status.diagnostics.clear();
        status.pipeline = Some(r.pipeline.clone());
        status.stacks = r.stacks.clone();
        status.content_hash = Some(r.content_hash.clone());
        status.warnings = r.warnings.clone();
        let status = status.bounded();
        self.save(&status).await;
        self.log.info(
            "job succeeded",
            json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                   "pipeline": r.pipeline, "stacks": r.stacks,
                   "duration_ms": status.duration_ms}),
        );
        self.ack(msg).await;
        Handled::Succeeded
    }

    /// The merge is the deployed commit, or older: recorded, never deployed.
    async fn not_deployed(
        &self,
        msg: &Received,
        mut status: JobStatus,
        state: JobState,
        deployed: &str,
    ) -> Handled {
        let job = &msg.job;
        status.state = state;
        status.error = None;
        status.superseded_by = Some(format!("commit {deployed}"));
        self.save(&status).await;
        let why = if state == JobState::Duplicate {
            "job not deployed: its commit is the pipeline's deployed commit"
        } else {
            "job superseded: its commit is older than the pipeline's deployed commit"
        };
        self.log.warn(
            why,
            json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                   "deployed_commit": deployed}),
        );
        self.ack(msg).await;
        if state == JobState::Duplicate {
            Handled::Duplicate
        } else {
            Handled::Superseded
        }
    }

    /// A rollout job skipped (its wave reached the failure limit): recorded, never deployed.
    async fn skipped(&self, msg: &Received, mut status: JobStatus, why: String) -> Handled {
        let job = &msg.job;
        status.state = JobState::Skipped;
        status.error = Some(why);
        let status = status.bounded();
        self.save(&status).await;
        self.log.warn(
            "rollout job skipped",
            json!({"job": job.id, "repository": job.repository, "error": status.error}),
        );
        self.ack(msg).await;
        Handled::Skipped
    }

    /// A permanent failure: the job is failed with its diagnostics, logged and acknowledged
    /// (never retried).
    async fn failed_for_good(
        &self,
        msg: &Received,
        mut status: JobStatus,
        error: String,
        diagnostics: Vec<String>,
        event: &str,
    ) -> Handled {
        let job = &msg.job;
        status.state = JobState::Failed;
        status.error = Some(error);
        status.diagnostics = diagnostics;
        let status = status.bounded();
        self.save(&status).await;
        self.log.error(
            event,
            json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                   "error": status.error, "diagnostics": status.diagnostics}),
        );
        self.ack(msg).await;
        Handled::Failed
    }

    /// A transient failure: retried later, or dead-lettered after the last receive.
    async fn failed_for_now(
        &self,
        msg: &Received,
        mut status: JobStatus,
        error: String,
    ) -> Handled {
        let job = &msg.job;
        status.error = Some(error);
        let status = status.bounded();
        let error = status.error.clone().unwrap_or_default();
        if msg.receive_count >= self.queue.max_receives() {
            let mut status = status;
            status.state = JobState::DeadLettered;
            self.save(&status).await;
            self.log.error(
                "job dead-lettered",
                json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                       "attempts": msg.receive_count, "error": error}),
            );
            self.mark_rollout_failure(job).await;
            if let Err(e) = self.queue.dead_letter(msg, &error).await {
                self.log.error(
                    "cannot move the job to the dead-letter queue",
                    json!({"job": job.id, "error": e.to_string()}),
                );
            }
            return Handled::DeadLettered;
        }
        let mut status = status;
        status.state = JobState::Retrying;
        self.save(&status).await;
        let delay = self.retry_delay(msg.receive_count);
        self.log.warn(
            "job will be retried",
            json!({"job": job.id, "repository": job.repository, "commit": job.commit,
                   "attempt": msg.receive_count, "retry_in_s": delay.as_secs_f64(),
                   "error": error}),
        );
        if let Err(e) = self.queue.set_visibility(msg, delay).await {
            self.log.error(
                "cannot delay the retry",
                json!({"job": job.id, "error": e.to_string()}),
            );
        }
        Handled::Retrying
    }

    async fn ack(&self, msg: &Received) {
        if let Err(e) = self.queue.delete(msg).await {
            self.log.error(
                "cannot delete the message",
                json!({"job": msg.job.id, "error": e.to_string()}),
            );
        }
    }

    /// Clone, check, deploy. The checkout is removed afterwards, whatever happened.
    pub async fn process(&self, job: &Job) -> std::result::Result<Outcome, JobError> {
        if let JobKind::Rollout(r) = &job.kind {
            return self.process_rollout(job, r).await;
        }
        let policy = &self.inputs.org.org.webhook;
        // The queue is a trust boundary too: check the job again.
        check_repository(&job.repository, policy).map_err(JobError::permanent)?;
        let url = check_clone_url(&job.clone_url, &job.repository, job.vendor, policy)
            .map_err(JobError::permanent)?;
        let dir = self
            .settings
            .work_dir
            .join(format!("{}-{}", job.id, super::now_ms()));
        let limits = CloneLimits {
            max_bytes: u64::try_from(policy.max_clone_mib).unwrap_or(512) * 1024 * 1024,
            timeout: Duration::from_secs(
                u64::try_from(policy.clone_timeout_seconds).unwrap_or(120),
            ),
            allow_file: url.local,
        };
        let result = async {
            clone_at(&url.url, &job.commit, &job.branch, &dir, &limits)
                .await
                .map_err(clone_error)?;
            let commit = git::head(&dir, &limits).await.map_err(clone_error)?;
            let manifest = dir.join(&policy.manifest);
            let today = self.settings.today.unwrap_or_else(super::today);
            let bundle = self
                .check_manifest(&dir, &job.commit, &job.repository, today)
                .await?;
            // The manifest's team must deploy from this repository (org `teams`).
            self.inputs
                .org
                .check_repository(&bundle.plan.pipeline.team, &job.repository)
                .map_err(|e| classify(&e))?;
            // A merge is its repository and commit: the deployed commit again, or an older one
            // (a replayed webhook, a dead letter sent back late), never deploys.
            if let Some(deployed) = self
                .deployer
                .deployed_commit(&bundle.plan, &self.inputs)
                .await
                .map_err(|e| classify(&e))?
            {
                match git::relation(&dir, &commit, &deployed, &limits)
                    .await
                    .map_err(clone_error)?
                {
                    Relation::Same => {
                        return Ok(Outcome::NotDeployed {
                            state: JobState::Duplicate,
                            commit,
                            deployed,
                        });
                    }
                    Relation::Ancestor => {
                        return Ok(Outcome::NotDeployed {
                            state: JobState::Superseded,
                            commit,
                            deployed,
                        });
                    }
                    Relation::Other => {}
                }
            }
            let log = self.log.clone();
            let id = job.id.clone();
            let progress = move |event: serde_json::Value| {
                log.info("deploy progress", json!({"job": id, "event": event}));
            };
            self.deployer
                .deploy(DeployRequest {
                    checkout: &dir,
                    repository: &job.repository,
                    host: super::job::clone_host(&job.clone_url).as_deref(),
                    manifest: &manifest,
                    commit: &commit,
                    inputs: &self.inputs,
                    today,
                    progress: &progress,
                })
                .await
                .map(|mut r| {
                    r.warnings = bundle
                        .plan
                        .notices
                        .iter()
                        .map(|n| n.to_string().trim_end().to_owned())
                        .collect();
                    Outcome::Deployed(r)
                })
                .map_err(|e| classify(&e))
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    /// A fleet rollout's job: no clone; the deployer checks it and deploys from the record.
    async fn process_rollout(
        &self,
        job: &Job,
        r: &super::job::RolloutJob,
    ) -> std::result::Result<Outcome, JobError> {
        let today = self.settings.today.unwrap_or_else(super::today);
        let log = self.log.clone();
        let id = job.id.clone();
        let progress = move |event: serde_json::Value| {
            log.info("deploy progress", json!({"job": id, "event": event}));
        };
        let done = self
            .deployer
            .deploy_rollout(RolloutRequest {
                job,
                rollout: r,
                inputs: &self.inputs,
                today,
                scratch: &self.settings.work_dir,
                progress: &progress,
                status: self.status.as_ref(),
            })
            .await
            .map_err(|e| classify(&e))?;
        match done {
            RolloutDone::Deployed(report) => Ok(Outcome::Deployed(report)),
            RolloutDone::Skipped(why) => Ok(Outcome::Skipped(why)),
            RolloutDone::Failed(e) => {
                let e = classify(&e);
                // A failure for good counts against the wave's limit at once; a transient one
                // when it is dead-lettered.
                if matches!(e, JobError::Permanent { .. }) {
                    self.mark_rollout_failure(job).await;
                }
                Err(e)
            }
        }
    }

    /// Marks a rollout job's deploy as failed, for the other jobs of its wave (see
    /// [`super::rollout::process`]); a mark that cannot be written is logged (the rollout still
    /// counts the failure when it reads the job's status).
    async fn mark_rollout_failure(&self, job: &Job) {
        let JobKind::Rollout(r) = &job.kind else {
            return;
        };
        if let Err(e) = self.status.mark_rollout_failure(&r.rollout, &job.id).await {
            self.log.error(
                "cannot mark the rollout job failed",
                json!({"job": job.id, "error": e.to_string()}),
            );
        }
    }

    /// Reads the checkout's manifest (a regular file inside it, never through a symlink, at
    /// most 256 KiB: whatever is read may be quoted in the job's diagnostics), then validates
    /// and renders it, before anything is uploaded: an invalid manifest stops here. Rendering
    /// is CPU work: it runs on a blocking thread, never on the threads that answer webhooks.
    async fn check_manifest(
        &self,
        dir: &Path,
        commit: &str,
        repository: &str,
        today: crate::date::Date,
    ) -> std::result::Result<crate::Bundle, JobError> {
        let inputs = Arc::clone(&self.inputs);
        let dir = dir.to_path_buf();
        let commit = commit.to_owned();
        let eval = crate::date::Evaluation::on(today).for_repository(Some(repository));
        tokio::task::spawn_blocking(move || {
            let name = &inputs.org.org.webhook.manifest;
            let text = checkout::read_text(&dir, Path::new(name), MAX_MANIFEST_BYTES).map_err(
                |e| match e {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        JobError::permanent(format!(
                            "the repository has no `{name}` at {commit} (`webhook.manifest` in the org policy)"
                        ))
                    }
                    other => JobError::permanent(other.to_string()),
                },
            )?;
            let shown = crate::SourceFile::new(name.clone(), text);
            crate::generate_in(&shown, &inputs, &eval).map_err(|e| classify(&e))
        })
        .await
        .map_err(|e| JobError::Transient(format!("the manifest check stopped: {e}")))?
    }
}

fn clone_error(e: CloneError) -> JobError {
    match e {
        CloneError::Permanent(m) => JobError::permanent(m),
        CloneError::Transient(m) => JobError::Transient(m),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::webhook::event::Vendor;
    use crate::webhook::queue::MemoryQueue;
    use crate::webhook::status::MemoryStatus;

    /// A deployer that fails with a transient error a given number of times, then succeeds.
    #[derive(Default)]
    struct Flaky {
        failures_left: Mutex<u32>,
        inner: RenderOnly,
    }

    fn flaky(failures: u32) -> Arc<Flaky> {
        Arc::new(Flaky {
            failures_left: Mutex::new(failures),
            ..Flaky::default()
        })
    }

    impl Deployer for Flaky {
        fn deploy<'a>(&'a self, req: DeployRequest<'a>) -> BoxFuture<'a, Result<DeployReport>> {
            Box::pin(async move {
                {
                    let mut left = self.failures_left.lock().expect("lock");
                    if *left > 0 {
                        *left -= 1;
                        return Err(Error::other("the local AWS endpoint timed out", "retry"));
                    }
                }
                self.inner.deploy(req).await
            })
        }

        fn deployed_commit<'a>(
            &'a self,
            plan: &'a Plan,
            inputs: &'a Inputs,
        ) -> BoxFuture<'a, Result<Option<String>>> {
            self.inner.deployed_commit(plan, inputs)
        }
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A bare origin `<tmp>/payments/app.git` with `pipeline.yml` on `main`; (tempdir, url, commit).
    fn origin() -> (tempfile::TempDir, String, String) {
        origin_of("payments")
    }

    /// A bare origin `<tmp>/<owner>/app.git` with the example `pipeline.yml` (team `payments`)
    /// on `main`; (tempdir, url, commit).
    fn origin_of(owner: &str) -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let bare = dir.path().join(format!("{owner}/app.git"));
        std::fs::create_dir_all(&bare).expect("mkdir");
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        git(&work, &["init", "-q", "-b", "main"]);
        let manifest = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/pipeline.yml"
        ))
        .expect("example manifest");
        std::fs::write(work.join("pipeline.yml"), manifest).expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(
            &work,
            &["push", "-q", bare.to_str().expect("utf-8"), "main"],
        );
        let commit = git(&work, &["rev-parse", "HEAD"]);
        (dir, bare.display().to_string(), commit)
    }

    /// Pushes `n` more commits to the origin of [`origin`]; their hashes, oldest first.
    fn more_commits(dir: &Path, n: usize) -> Vec<String> {
        let work = dir.join("work");
        let bare = dir.join("payments/app.git");
        (0..n)
            .map(|i| {
                std::fs::write(work.join(format!("f{i}.txt")), "x").expect("write");
                git(&work, &["add", "-A"]);
                git(&work, &["commit", "-q", "-m", &format!("change {i}")]);
                git(
                    &work,
                    &["push", "-q", bare.to_str().expect("utf-8"), "main"],
                );
                git(&work, &["rev-parse", "HEAD"])
            })
            .collect()
    }

    fn worker(
        dir: &Path,
        deployer: Arc<dyn Deployer>,
        max_receives: u32,
    ) -> (Worker, Arc<MemoryQueue>) {
        let mut inputs = Inputs::load(None, None, None).expect("inputs");
        inputs.org.org.webhook.allow_local_prefix = Some(dir.display().to_string());
        let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), max_receives));
        let w = Worker {
            queue: queue.clone(),
            status: Arc::new(MemoryStatus::default()),
            deployer,
            inputs: Arc::new(inputs),
            log: Log::discard(),
            settings: WorkerSettings {
                work_dir: dir.join("checkouts"),
                retry_base: Duration::from_millis(10),
                retry_max: Duration::from_millis(40),
                lease: Duration::from_secs(60),
                receive_wait: Duration::from_secs(5),
                today: None,
            },
            settled: Arc::default(),
            previewer: None,
        };
        (w, queue)
    }

    fn job(url: &str, commit: &str) -> Job {
        Job {
            id: "github-t1".to_owned(),
            vendor: Vendor::Github,
            delivery: "t1".to_owned(),
            repository: "payments/app".to_owned(),
            clone_url: url.to_owned(),
            commit: commit.to_owned(),
            branch: "main".to_owned(),
            pull_request: None,
            received_ms: 0,
            status_capability: String::new(),
            kind: Default::default(),
        }
    }

    /// The status the worker recorded for job `id`.
    async fn status_of(w: &Worker, id: &str) -> JobStatus {
        w.status.get(id).await.expect("get").expect("status")
    }

    /// Sends `job` (deduplicated by `dedup`) and handles the next message.
    async fn deliver(w: &Worker, queue: &MemoryQueue, job: &Job, dedup: &str) -> Handled {
        queue.send(job, dedup).await.expect("send");
        next(w).await
    }

    async fn next(w: &Worker) -> Handled {
        let msg = w
            .queue
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("a message");
        w.handle(msg).await
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_succeed() {
        let (dir, url, commit) = origin();
        let flaky = flaky(1);
        let (w, queue) = worker(dir.path(), flaky, 3);
        assert_eq!(
            deliver(&w, &queue, &job(&url, &commit), "t1").await,
            Handled::Retrying
        );
        let s = status_of(&w, "github-t1").await;
        assert_eq!(s.state, JobState::Retrying);
        assert!(s.error.as_deref().unwrap_or_default().contains("timed out"));
        assert_eq!(next(&w).await, Handled::Succeeded);
        let s = status_of(&w, "github-t1").await;
        assert_eq!(
            (s.state, s.attempts, s.error),
            (JobState::Succeeded, 2, None)
        );
        assert!(queue.is_empty());
        assert!(
            std::fs::read_dir(dir.path().join("checkouts"))
                .expect("work dir")
                .next()
                .is_none(),
            "checkouts are removed"
        );
    }

    #[tokio::test]
    async fn a_job_failing_every_attempt_is_dead_lettered_with_its_error() {
        let (dir, url, commit) = origin();
        let flaky = flaky(10);
        let (w, queue) = worker(dir.path(), flaky, 2);
        assert_eq!(
            deliver(&w, &queue, &job(&url, &commit), "t1").await,
            Handled::Retrying
        );
        assert_eq!(next(&w).await, Handled::DeadLettered);
        let dead = queue.dead_letters();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].1.contains("timed out"), "{}", dead[0].1);
        let s = status_of(&w, "github-t1").await;
        assert_eq!(s.state, JobState::DeadLettered);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_succeeded_job_delivered_again_is_not_deployed_again() {
        let (dir, url, commit) = origin();
        let flaky = flaky(0);
        let (w, queue) = worker(dir.path(), flaky, 2);
        assert_eq!(
            deliver(&w, &queue, &job(&url, &commit), "t1").await,
            Handled::Succeeded
        );
        // Past the deduplication window (another dedup id), the status still catches it.
        assert_eq!(
            deliver(&w, &queue, &job(&url, &commit), "t1-later").await,
            Handled::Duplicate
        );
    }

    /// A deployer that records the commits it deploys.
    #[derive(Default)]
    struct Counting(Mutex<Vec<String>>, RenderOnly);

    impl Deployer for Counting {
        fn deploy<'a>(&'a self, req: DeployRequest<'a>) -> BoxFuture<'a, Result<DeployReport>> {
            Box::pin(async move {
                self.0.lock().expect("lock").push(req.commit.to_owned());
                self.1.deploy(req).await
            })
        }

        fn deployed_commit<'a>(
            &'a self,
            plan: &'a Plan,
            inputs: &'a Inputs,
        ) -> BoxFuture<'a, Result<Option<String>>> {
            self.1.deployed_commit(plan, inputs)
        }
    }

    #[tokio::test]
    async fn an_older_merge_never_deploys_after_a_newer_one_and_the_same_one_is_a_duplicate() {
        let (dir, url, c1) = origin();
        let later = more_commits(dir.path(), 2);
        let (c2, c3) = (later[0].clone(), later[1].clone());
        let counting = Arc::new(Counting::default());
        let (w, queue) = worker(dir.path(), counting.clone(), 2);
        let at = |id: &str, commit: &str| {
            let mut j = job(&url, commit);
            j.id = format!("github-{id}");
            j.delivery = id.to_owned();
            j
        };
        assert_eq!(
            deliver(&w, &queue, &at("newer", &c2), "newer").await,
            Handled::Succeeded
        );
        // The older merge, replayed (or failed earlier and sent back from the dead-letter
        // queue), is received after the newer one deployed.
        assert_eq!(
            deliver(&w, &queue, &at("older", &c1), "older").await,
            Handled::Superseded
        );
        let s = status_of(&w, "github-older").await;
        assert_eq!(s.state, JobState::Superseded);
        assert!(
            s.superseded_by.as_deref().unwrap_or_default().contains(&c2),
            "{s:?}"
        );
        // The newer merge itself, under another delivery id: already deployed.
        assert_eq!(
            deliver(&w, &queue, &at("again", &c2), "again").await,
            Handled::Duplicate
        );
        let s = status_of(&w, "github-again").await;
        assert_eq!(s.state, JobState::Duplicate);
        assert_eq!(
            *counting.0.lock().expect("lock"),
            std::slice::from_ref(&c2),
            "deployed once"
        );
        // Replays of settled merges need no clone: with the origin gone, they still settle.
        let bare = dir.path().join("payments/app.git");
        let away = dir.path().join("away.git");
        std::fs::rename(&bare, &away).expect("move the origin away");
        assert_eq!(
            deliver(&w, &queue, &at("flood-1", &c1), "flood-1").await,
            Handled::Superseded
        );
        assert_eq!(
            deliver(&w, &queue, &at("flood-2", &c2), "flood-2").await,
            Handled::Duplicate
        );
        std::fs::rename(&away, &bare).expect("bring the origin back");
        assert!(queue.is_empty());
        // A later merge still deploys.
        assert_eq!(
            deliver(&w, &queue, &at("latest", &c3), "latest").await,
            Handled::Succeeded
        );
        assert_eq!(*counting.0.lock().expect("lock"), [c2, c3]);
    }

    #[tokio::test]
    async fn a_repository_the_team_does_not_list_fails_its_job_and_deploys_nothing() {
        // `example/*` may send webhooks, but team `payments` deploys from `payments/*` only.
        let (dir, url, commit) = origin_of("example");
        let counting = Arc::new(Counting::default());
        let (w, queue) = worker(dir.path(), counting.clone(), 2);
        let mut j = job(&url, &commit);
        j.repository = "example/app".to_owned();
        assert_eq!(deliver(&w, &queue, &j, "t1").await, Handled::Failed);
        assert!(
            counting.0.lock().expect("lock").is_empty(),
            "nothing deployed"
        );
        let s = status_of(&w, "github-t1").await;
        let error = s.error.unwrap_or_default();
        assert!(
            error.contains("repository `example/app` may not deploy pipelines of team `payments`"),
            "{error}"
        );
        assert!(error.contains("nothing was deployed"), "{error}");
        assert_eq!(s.attempts, 1, "not retried");
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_job_whose_url_leaves_the_policy_fails_without_cloning() {
        let (dir, _url, commit) = origin();
        let flaky = flaky(0);
        let (w, queue) = worker(dir.path(), flaky, 2);
        assert_eq!(
            deliver(
                &w,
                &queue,
                &job("file:///etc/payments/app.git", &commit),
                "t1"
            )
            .await,
            Handled::Failed
        );
        let s = status_of(&w, "github-t1").await;
        assert!(
            s.error
                .as_deref()
                .unwrap_or_default()
                .contains("scheme `file`"),
            "{:?}",
            s.error
        );
    }
}
