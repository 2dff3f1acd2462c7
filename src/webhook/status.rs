//! Job status: what `GET /jobs/{id}` answers — state, attempts, the error (with the manifest's
//! diagnostics when it is invalid) and the stacks a deploy changed.
//!
//! Two stores: in memory (`pipeforge serve`, one process) and S3 (the Lambda functions, which
//! share nothing else: one JSON object per job under `jobs/`, in the bucket `pipeforge
//! bootstrap` creates). Both keep the first status of a delivery and never move a finished
//! job back to `queued`, which is what makes a redelivered webhook harmless.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use super::BoxFuture;
use super::event::Vendor;
use super::job::Job;
use crate::error::{Error, Result};

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Accepted and enqueued.
    Queued,
    /// A worker has it.
    Running,
    /// Failed for a reason that may pass (network, AWS throttling); it will be retried.
    Retrying,
    /// Deployed (or nothing to change).
    Succeeded,
    /// Failed for good (invalid manifest, commit not found): not retried.
    Failed,
    /// Failed on every attempt; moved to the dead-letter queue with its error.
    DeadLettered,
    /// Not deployed: a newer merge of the same repository has deployed since (a dead-lettered
    /// job sent back to the queue, for example), and deploying this one would roll it back.
    Superseded,
}

impl JobState {
    /// True when nothing more will happen to the job unless it is delivered again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::DeadLettered | JobState::Superseded
        )
    }
}

/// What a deploy did to one stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackChange {
    /// Stack name.
    pub stack: String,
    /// `created`, `updated`, `unchanged` (or `rendered` when only rendered).
    pub action: String,
}

/// A job's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job id.
    pub id: String,
    /// Where it is.
    pub state: JobState,
    /// Who sent the event.
    pub vendor: Vendor,
    /// The vendor's delivery id.
    pub delivery: String,
    /// `owner/repository`.
    pub repository: String,
    /// The merge commit.
    pub commit: String,
    /// The branch merged into.
    pub branch: String,
    /// The pull request number.
    pub pull_request: Option<u64>,
    /// Attempts so far.
    pub attempts: u32,
    /// The last error, when it failed.
    pub error: Option<String>,
    /// The manifest's problems, one per entry, when it is invalid.
    #[serde(default)]
    pub diagnostics: Vec<String>,
    /// The pipeline deployed.
    pub pipeline: Option<String>,
    /// The stacks and what the deploy did to each.
    #[serde(default)]
    pub stacks: Vec<StackChange>,
    /// The rendered bundle's content hash.
    pub content_hash: Option<String>,
    /// How long the last attempt took, in ms.
    pub duration_ms: Option<u64>,
    /// When the webhook was accepted (ms since the Unix epoch).
    pub received_ms: u64,
    /// Last change (ms since the Unix epoch).
    pub updated_ms: u64,
    /// For a superseded job: the newer job (and commit) that deployed instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

impl JobStatus {
    /// The `queued` status of a new job.
    pub fn queued(job: &Job) -> JobStatus {
        JobStatus {
            id: job.id.clone(),
            state: JobState::Queued,
            vendor: job.vendor,
            delivery: job.delivery.clone(),
            repository: job.repository.clone(),
            commit: job.commit.clone(),
            branch: job.branch.clone(),
            pull_request: job.pull_request,
            attempts: 0,
            error: None,
            diagnostics: Vec::new(),
            pipeline: None,
            stacks: Vec::new(),
            content_hash: None,
            duration_ms: None,
            received_ms: job.received_ms,
            updated_ms: super::now_ms(),
            superseded_by: None,
        }
    }
}

/// Keeps job statuses.
pub trait StatusStore: Send + Sync {
    /// The status of job `id`.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobStatus>>>;
    /// Stores a status (replacing the job's previous one).
    fn put<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<()>>;
    /// Stores `status` unless the job already has one; returns the existing one if so.
    fn create<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<Option<JobStatus>>>;
}

/// Statuses in memory, for `pipeforge serve` (lost on restart; the queue is not). Keeps the
/// newest `capacity` jobs.
#[derive(Debug)]
pub struct MemoryStatus {
    jobs: Mutex<BTreeMap<String, JobStatus>>,
    capacity: usize,
}

impl Default for MemoryStatus {
    fn default() -> Self {
        MemoryStatus {
            jobs: Mutex::new(BTreeMap::new()),
            capacity: 100_000,
        }
    }
}

impl MemoryStatus {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, JobStatus>>> {
        self.jobs.lock().map_err(|_| {
            Error::other(
                "the job status store is unusable after a panic",
                "restart `pipeforge serve`",
            )
        })
    }

    fn evict(&self, jobs: &mut BTreeMap<String, JobStatus>) {
        while jobs.len() > self.capacity {
            let oldest = jobs
                .values()
                .min_by_key(|s| s.updated_ms)
                .map(|s| s.id.clone());
            match oldest {
                Some(id) => jobs.remove(&id),
                None => break,
            };
        }
    }
}

impl StatusStore for MemoryStatus {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobStatus>>> {
        Box::pin(async move { Ok(self.lock()?.get(id).cloned()) })
    }

    fn put<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut jobs = self.lock()?;
            jobs.insert(status.id.clone(), status.clone());
            self.evict(&mut jobs);
            Ok(())
        })
    }

    fn create<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<Option<JobStatus>>> {
        Box::pin(async move {
            let mut jobs = self.lock()?;
            if let Some(existing) = jobs.get(&status.id) {
                return Ok(Some(existing.clone()));
            }
            jobs.insert(status.id.clone(), status.clone());
            self.evict(&mut jobs);
            Ok(None)
        })
    }
}

/// Statuses as JSON objects in S3: `s3://BUCKET/jobs/<id>.json`.
#[derive(Clone, Debug)]
pub struct S3Status {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Status {
    /// A store in `bucket`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> S3Status {
        S3Status {
            client,
            bucket: bucket.into(),
        }
    }

    fn key(id: &str) -> String {
        format!("jobs/{id}.json")
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::other(
            format!("cannot {what} job status in bucket `{}`: {e}", self.bucket),
            "check that the bucket exists and that this role may read and write `jobs/*` in it",
        )
    }
}

impl StatusStore for S3Status {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobStatus>>> {
        Box::pin(async move {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(Self::key(id))
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    let missing = e.as_service_error().is_some_and(
                        aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                    );
                    if missing {
                        return Ok(None);
                    }
                    return Err(self.failed("read", aws_sdk_s3::error::DisplayErrorContext(e)));
                }
            };
            let bytes = out
                .body
                .collect()
                .await
                .map_err(|e| self.failed("read", e))?
                .into_bytes();
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.failed("parse", e))
        })
    }

    fn put<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let body = serde_json::to_vec_pretty(status).map_err(|e| self.failed("encode", e))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(Self::key(&status.id))
                .content_type("application/json")
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| self.failed("write", aws_sdk_s3::error::DisplayErrorContext(e)))?;
            Ok(())
        })
    }

    fn create<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<Option<JobStatus>>> {
        // Read, then write: two racing deliveries of the same id both enqueue, and the queue's
        // deduplication id (the job id) keeps one of them.
        Box::pin(async move {
            if let Some(existing) = self.get(&status.id).await? {
                return Ok(Some(existing));
            }
            self.put(status).await?;
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            id: id.to_owned(),
            vendor: Vendor::Github,
            delivery: "d".to_owned(),
            repository: "a/b".to_owned(),
            clone_url: "https://github.com/a/b.git".to_owned(),
            commit: "abcdef1".to_owned(),
            branch: "main".to_owned(),
            pull_request: None,
            received_ms: 1,
        }
    }

    #[tokio::test]
    async fn memory_store_keeps_the_first_status_and_evicts_the_oldest() {
        let store = MemoryStatus {
            capacity: 2,
            ..MemoryStatus::default()
        };
        let mut s = JobStatus::queued(&job("a"));
        assert_eq!(store.create(&s).await.expect("create"), None);
        s.state = JobState::Succeeded;
        store.put(&s).await.expect("put");
        let again = store
            .create(&JobStatus::queued(&job("a")))
            .await
            .expect("create");
        assert_eq!(again.map(|x| x.state), Some(JobState::Succeeded));
        let mut b = JobStatus::queued(&job("b"));
        b.updated_ms = s.updated_ms + 1;
        store.put(&b).await.expect("put");
        let mut c = JobStatus::queued(&job("c"));
        c.updated_ms = s.updated_ms + 2;
        store.put(&c).await.expect("put");
        assert!(
            store.get("a").await.expect("get").is_none(),
            "oldest evicted"
        );
        assert!(store.get("c").await.expect("get").is_some());
    }
}
