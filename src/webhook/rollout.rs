//! Fleet rollout jobs on the webhook's queue: [`Rollouts`] sends them (the CLI's side of
//! [`crate::fleet::rollout::RolloutQueue`]) and reads their statuses; [`process`] is the
//! worker's side.
//!
//! A rollout job is a message anyone able to send to the queue could forge or resend, so the
//! worker takes nothing from it but three references and checks each against what it reads
//! itself from the source bucket its own org policy names: the rollout's state must exist and
//! name the job's candidate and pipeline; the candidate set is loaded from
//! `fleet/candidates/<hash>.json` (a prefix the source bucket's policy keeps the worker from
//! writing) and must hash to the name the job gives; the job's repository must be the one the
//! pipeline's deploy record names; the rollout must not be superseded (a rollout starting
//! closes every unfinished one before it deploys anything); and the job must be the one the
//! rollout's state waits for (the pipeline pending, this attempt's job id). So a replayed job
//! of an earlier attempt, of a finished rollout or of one a newer rollout followed never puts
//! an older candidate back. A job whose wave has reached the rollout's `--max-failures`
//! (failures recorded in the state, or marked by workers in the status bucket) is skipped.
//! The deploy itself is [`crate::fleet::rollout::deploy_record`], the same as a rollout run
//! in the CLI: `prepare_text` with the candidate (team repositories, accounts, approvals,
//! dated rules and waivers on the worker's day, never the message's), then `deploy_prepared`
//! with the owner check under the pipeline's lock, on the record read before the state.

use std::path::Path;
use std::sync::Arc;

use super::BoxFuture;
use super::event::Vendor;
use super::job::{Job, JobKind, RolloutJob};
use super::queue::JobQueue;
use super::status::{JobState, StatusStore};
use super::worker::RolloutRequest;
use crate::aws::AwsContext;
use crate::deploy::{DeployOptions, DeployReport};
use crate::error::{Error, Result};
use crate::fleet::candidate::{self, CandidateFiles};
use crate::fleet::rollout::{
    self, JobResult, JobSpec, PipelineState, ROLLOUTS_PREFIX, RolloutQueue, Target,
};
use crate::fleet::{Entry, Reader};
use crate::publish::progress::Progress;

/// The queue message of a rollout job: in the message group of the pipeline's repository (as
/// its merges), its id as deduplication id, no status capability (the rollout reads the status
/// from the status bucket itself).
pub fn job_of(spec: &JobSpec, received_ms: u64) -> Job {
    // The rollout names the host (`fleet::rollout::job_host`); without one the job would be in
    // a group of its own, beside the repository's merges rather than behind them.
    let host = spec.host.as_deref().unwrap_or("local");
    Job {
        id: spec.id.clone(),
        vendor: Vendor::Github,
        delivery: spec.id.clone(),
        repository: spec.repository.clone(),
        clone_url: format!("https://{host}/{}.git", spec.repository),
        commit: spec.commit.clone(),
        branch: String::new(),
        pull_request: None,
        received_ms,
        status_capability: String::new(),
        kind: JobKind::Rollout(RolloutJob {
            rollout: spec.rollout.clone(),
            candidate: spec.candidate.clone(),
            pipeline: spec.pipeline.clone(),
        }),
    }
}

/// The webhook's queue and status store, as a rollout's job queue.
pub struct Rollouts {
    /// The FIFO queue the worker reads.
    pub queue: Arc<dyn JobQueue>,
    /// Where the worker records job statuses.
    pub status: Arc<dyn StatusStore>,
}

impl RolloutQueue for Rollouts {
    fn send<'a>(&'a self, spec: &'a JobSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let job = job_of(spec, super::now_ms());
            self.queue.send(&job, &job.id).await
        })
    }

    fn result<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobResult>>> {
        Box::pin(async move {
            let Some(s) = self.status.get(id).await? else {
                return Ok(None);
            };
            let why = |s: super::status::JobStatus| {
                s.error
                    .unwrap_or_else(|| format!("the job ended {}", serde_json::json!(s.state)))
            };
            Ok(match s.state {
                JobState::Succeeded => Some(JobResult::Deployed),
                JobState::Skipped => Some(JobResult::Skipped(why(s))),
                st if st.is_final() => Some(JobResult::Failed(why(s))),
                _ => None,
            })
        })
    }
}

fn refused(message: String, help: &str) -> Error {
    Error::Refused {
        message,
        help: help.to_owned(),
    }
}

/// How a rollout job that passed its checks ended.
#[derive(Debug)]
pub enum RolloutEnd {
    /// Deployed (`None`: this rollout had deployed the pipeline already).
    Deployed(Option<Box<DeployReport>>),
    /// Not deployed: the job's wave had reached the rollout's failure limit.
    Skipped(String),
    /// The deploy failed: it counts against the rollout's failure limit.
    Failed(Error),
}

/// The worker's side of a rollout job: checks it (see the module's documentation), then
/// deploys with `deploy` (a drift-aware redeploy when the rollout's state says so). The
/// request's policy is the worker's own (it names the source bucket); its scratch directory
/// takes the candidate's files. `Err`: the job was refused (or could not be checked).
pub async fn process(
    aws: &AwsContext,
    deploy: &DeployOptions,
    req: &RolloutRequest<'_>,
    progress: &dyn Progress,
) -> Result<RolloutEnd> {
    let (org, job, r, today, scratch) = (
        &req.inputs.org.org,
        req.job,
        req.rollout,
        req.today,
        req.scratch,
    );
    // The home bucket holds the rollout and its candidate; a pipeline's deploy record is in the
    // bucket of the tooling account it is placed in.
    let mut readers = Vec::new();
    for source in crate::fleet::sources(org) {
        readers.push(Reader::of(aws, org, &source).await?);
    }
    let help = "rollout jobs are sent by `pipeforge fleet rollout`; this one was not";
    // The record is read before the rollout's state: if the state still says the rollout is
    // open, no newer rollout had started (a newer one closes it before it deploys anything), so
    // any deploy since changed the record, and the deploy below (which compares the record
    // under the pipeline's lock) refuses.
    let record = crate::fleet::record_anywhere(&readers, &r.pipeline).await;
    let reader = &readers[0];
    // The rollout: started by a platform engineer, with this candidate and this pipeline.
    let key = format!("{ROLLOUTS_PREFIX}{}.json", r.rollout);
    let Some(bytes) = reader
        .object(&key, crate::fleet::rollout::MAX_STATE_BYTES)
        .await?
    else {
        return Err(refused(
            format!("there is no rollout `{}`", r.rollout),
            help,
        ));
    };
    let state = rollout::parse_state(&bytes, &reader.url(&key))?;
    if state.candidate != r.candidate {
        return Err(refused(
            format!(
                "rollout `{}` deploys candidate {}, not {}",
                r.rollout, state.candidate, r.candidate
            ),
            help,
        ));
    }
    let Some((wave, item)) = state.waves.iter().enumerate().find_map(|(w, items)| {
        items
            .iter()
            .find(|i| i.pipeline == r.pipeline)
            .map(|i| (w, i))
    }) else {
        return Err(refused(
            format!(
                "rollout `{}` does not deploy pipeline `{}`",
                r.rollout, r.pipeline
            ),
            help,
        ));
    };
    let record = match record {
        Entry::Record(rec) => rec,
        Entry::Missing { .. } => {
            return Err(refused(
                format!("pipeline `{}` has no deploy record", r.pipeline),
                "deploy it from its repository",
            ));
        }
        Entry::Unreadable { error, .. } => return Err(Error::other(error, "run it again")),
    };
    // The record's repository, never the message's, deploys the pipeline.
    if record.repository != job.repository {
        return Err(refused(
            format!(
                "the job names repository `{}`, but pipeline `{}` is deployed from `{}`",
                job.repository, r.pipeline, record.repository
            ),
            help,
        ));
    }
    // A rollout a newer one has closed deploys nothing: a replay of its job would put its
    // older candidate over the newer rollout's deploys.
    if let Some(by) = &state.superseded_by {
        return Err(refused(
            format!(
                "rollout `{}` was superseded by rollout `{by}`: its jobs deploy nothing",
                r.rollout
            ),
            "a replayed or stale rollout job deploys nothing",
        ));
    }
    let candidate = load_candidate(reader, &r.candidate, scratch).await?;
    // Only the job the rollout waits for deploys: a replayed job (an earlier attempt, or a job of
    // a rollout that has finished or been stopped) would otherwise put an older candidate back,
    // e.g. one without a gate the newer set made mandatory.
    let current = (item.state == PipelineState::Pending && item.attempts > 0)
        .then(|| rollout::job_id(&r.rollout, &r.pipeline, item.attempts));
    if current.as_deref() != Some(job.id.as_str()) {
        return Err(refused(
            format!(
                "rollout `{}` is not waiting for job `{}` of pipeline `{}` (its state: {})",
                r.rollout,
                job.id,
                r.pipeline,
                serde_json::json!(item.state)
            ),
            "a replayed or stale rollout job deploys nothing; resume the rollout to send a new one",
        ));
    }
    if let Some(why) = wave_stopped(&state, wave, &r.pipeline, req.status).await? {
        return Ok(RolloutEnd::Skipped(why));
    }
    let deploy = DeployOptions {
        redeploy: state.redeploy,
        ..deploy.clone()
    };
    let target = Target {
        rollout: &r.rollout,
        today,
        deploy: &deploy,
    };
    Ok(
        match Box::pin(rollout::deploy_record(
            aws, &record, &candidate, &target, progress,
        ))
        .await
        {
            Ok(report) => RolloutEnd::Deployed(report.map(Box::new)),
            Err(e) => RolloutEnd::Failed(e),
        },
    )
}

/// Why the job of `pipeline` in wave `wave` is skipped: the wave's failures (failed in the
/// state, or the current attempt marked failed by a worker) have reached the rollout's limit.
async fn wave_stopped(
    state: &rollout::RolloutState,
    wave: usize,
    pipeline: &str,
    status: &dyn StatusStore,
) -> Result<Option<String>> {
    let Some(limit) = state.max_failures else {
        return Ok(None);
    };
    let marked = status.rollout_failures(&state.id).await?;
    let failed = state.waves[wave]
        .iter()
        .filter(|i| i.pipeline != pipeline)
        .filter(|i| {
            i.state == PipelineState::Failed
                || (i.state == PipelineState::Pending
                    && i.attempts > 0
                    && marked.contains(&rollout::job_id(&state.id, &i.pipeline, i.attempts)))
        })
        .count();
    Ok((failed >= limit.max(1)).then(|| {
        format!(
            "skipped: wave {} of rollout `{}` has {failed} failed deploy(s) (--max-failures {limit}); resume the rollout to send it again",
            wave + 1,
            state.id
        )
    }))
}

/// The candidate stored under `hash`, loaded and checked to hash to it.
async fn load_candidate(reader: &Reader, hash: &str, scratch: &Path) -> Result<crate::Inputs> {
    let key = candidate::key_of(hash)?;
    let Some(bytes) = reader.object(&key, candidate::MAX_CANDIDATE_BYTES).await? else {
        return Err(refused(
            format!("there is no candidate `{}`", reader.url(&key)),
            "a rollout stores its candidate before it sends a job",
        ));
    };
    let files = CandidateFiles::parse(&bytes, &reader.url(&key))?;
    let dir = scratch.join(format!("candidate-{}-{}", &hash[7..19], super::now_ms()));
    let loaded = files.load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let inputs = loaded?;
    let actual = rollout::candidate_hash(&inputs);
    if actual != hash {
        return Err(refused(
            format!(
                "the candidate `{}` hashes to {actual}, not to its name",
                reader.url(&key)
            ),
            "someone changed a stored candidate; start the rollout again from the platform's checkout",
        ));
    }
    Ok(inputs)
}
