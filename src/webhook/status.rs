//! Job status: what the job's status URL answers — state, attempts, the error (with the
//! manifest's diagnostics when it is invalid) and the stacks a deploy changed.
//!
//! A status is readable only with its capability: 256 random bits from the OS
//! ([`Capability::new`]), given once, in the status URL of the 202 answer that queued the job
//! (`/jobs/<id>/<capability>`); the store keeps only its SHA-256. A status holds no secret, no
//! environment and no file content beyond the manifest's diagnostics, and is size-capped
//! ([`JobStatus::bounded`], at most [`MAX_STATUS_BYTES`] as JSON).
//!
//! Two stores: in memory (`pipeforge serve`, one process; bounded in count, bytes and age) and
//! S3 (the Lambda functions, which share nothing else: one JSON object per job under `jobs/`, in
//! the bucket `pipeforge bootstrap` creates, whose lifecycle rule deletes them after 90 days;
//! older or oversized objects are not read). Both keep the first status of a delivery and never
//! move a finished job back to `queued`, which is what makes a redelivered webhook harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

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
    /// Not deployed: its commit is an ancestor of the pipeline's last deployed commit (an old
    /// merge replayed, or a dead-lettered job sent back after a newer merge deployed), and
    /// deploying it would roll the pipeline back.
    Superseded,
    /// Not deployed: its commit is the one deployed already (the same merge delivered again).
    Duplicate,
    /// Not deployed: a fleet rollout job whose wave had reached the rollout's `--max-failures`
    /// when the worker took it; the rollout sends it again when it is resumed.
    Skipped,
}

impl JobState {
    /// True when nothing more will happen to the job unless it is delivered again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::DeadLettered
                | JobState::Superseded
                | JobState::Duplicate
                | JobState::Skipped
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
    /// For a superseded or duplicate job: the commit deployed instead (or already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// SHA-256 (hex) of the capability that reads this status; never served.
    #[serde(default)]
    pub capability: String,
    /// Org rules the manifest breaks without failing yet (an error from a later day) or under a
    /// waiver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// For a pull-request job: what was posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewStatus>,
}

/// What a pull-request job posted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewStatus {
    /// The head commit reviewed (full hash).
    pub commit: String,
    /// `valid` (status success) or `invalid` (failure).
    pub verdict: crate::review::Verdict,
    /// What it was compared with.
    pub baseline: crate::review::BaselineKind,
    /// `created` or `updated`.
    pub comment: String,
    /// The comment's web address.
    pub comment_url: Option<String>,
    /// Characters of the comment.
    pub comment_chars: usize,
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
            capability: job.status_capability.clone(),
            warnings: Vec::new(),
            preview: None,
        }
    }

    /// The status with every free-text part cut to size (the error to 4 KiB, at most 16
    /// diagnostics of at most 1 KiB each, at most 32 stacks, names to 256 bytes) and control
    /// characters replaced, so that its JSON stays under [`MAX_STATUS_BYTES`] whatever a
    /// manifest or an error contains.
    pub fn bounded(mut self) -> JobStatus {
        if let Some(e) = &mut self.error {
            clip(e, 4096);
        }
        if self.diagnostics.len() > MAX_DIAGNOSTICS {
            let more = self.diagnostics.len() - (MAX_DIAGNOSTICS - 1);
            self.diagnostics.truncate(MAX_DIAGNOSTICS - 1);
            self.diagnostics.push(format!(
                "... and {more} more problems (run `pipeforge validate`)"
            ));
        }
        for d in &mut self.diagnostics {
            clip(d, 1024);
        }
        self.warnings.truncate(MAX_DIAGNOSTICS);
        for w in &mut self.warnings {
            clip(w, 1024);
        }
        self.stacks.truncate(32);
        for s in &mut self.stacks {
            clip(&mut s.stack, 128);
            clip(&mut s.action, 32);
        }
        for t in [
            &mut self.delivery,
            &mut self.repository,
            &mut self.branch,
            &mut self.commit,
        ] {
            clip(t, 256);
        }
        if let Some(p) = &mut self.preview {
            clip(&mut p.commit, 128);
            clip(&mut p.comment, 16);
            if let Some(u) = &mut p.comment_url {
                clip(u, 512);
            }
        }
        for t in [
            &mut self.pipeline,
            &mut self.content_hash,
            &mut self.superseded_by,
        ]
        .into_iter()
        .flatten()
        {
            clip(t, 256);
        }
        self
    }

    /// About how many bytes the status takes as JSON: its text, plus a fixed amount for names
    /// and numbers (cheaper than encoding it on every change).
    fn weight(&self) -> usize {
        let texts = [
            &self.id,
            &self.delivery,
            &self.repository,
            &self.commit,
            &self.branch,
            &self.capability,
        ]
        .iter()
        .map(|t| t.len())
        .sum::<usize>();
        let optional = [
            &self.error,
            &self.pipeline,
            &self.content_hash,
            &self.superseded_by,
        ]
        .iter()
        .filter_map(|t| t.as_ref().map(String::len))
        .sum::<usize>();
        let lists = self.diagnostics.iter().map(|d| d.len() + 4).sum::<usize>()
            + self
                .stacks
                .iter()
                .map(|s| s.stack.len() + s.action.len() + 32)
                .sum::<usize>();
        512 + texts + optional + lists
    }

    /// What the status URL answers: the status without its capability hash.
    pub fn public(&self) -> Json {
        let mut v = serde_json::to_value(self).unwrap_or(Json::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("capability");
        }
        v
    }

    /// True when `capability` (from a status URL) is this status's.
    pub fn readable_with(&self, capability: &str) -> bool {
        !self.capability.is_empty()
            && constant_time_eq(&Capability::hash(capability), &self.capability)
    }
}

/// Most diagnostics a status keeps (the last one says how many more there were).
const MAX_DIAGNOSTICS: usize = 16;

/// Largest status, as JSON, in bytes: what [`JobStatus::bounded`] guarantees and the S3 store
/// reads at most.
pub const MAX_STATUS_BYTES: usize = 64 * 1024;

/// Cuts `s` to at most `max` bytes (on a character boundary, marking the cut) and replaces
/// control characters other than line breaks and tabs with `?` (each would take six bytes of
/// JSON).
fn clip(s: &mut String, max: usize) {
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        *s = s
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '?'
                } else {
                    c
                }
            })
            .collect();
    }
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The capability of a job's status URL: 256 bits from the operating system's random number
/// generator, in hex. The store keeps only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct Capability(String);

impl std::fmt::Debug for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Capability(redacted)")
    }
}

impl Capability {
    /// A new capability.
    pub fn new() -> Result<Capability> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::other(
                format!("the operating system's random number generator failed: {e}"),
                "retry; check the host's entropy source",
            )
        })?;
        Ok(Capability(crate::outputs::hex(&bytes)))
    }

    /// The capability, as it goes in the status URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keeps: the SHA-256 of `capability`, in hex.
    pub fn hash(capability: &str) -> String {
        crate::outputs::sha256(capability.as_bytes())
            .trim_start_matches("sha256:")
            .to_owned()
    }

    /// True when `s` has the shape of a capability (64 hex digits).
    pub fn is_shaped(s: &str) -> bool {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }
}

/// The status URL of `job` with `capability`: `/jobs/<id>/<capability>`.
pub fn status_url(job_id: &str, capability: &Capability) -> String {
    format!("/jobs/{job_id}/{}", capability.as_str())
}

/// Keeps job statuses.
pub trait StatusStore: Send + Sync {
    /// The status of job `id`.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobStatus>>>;
    /// Stores a status (replacing the job's previous one).
    fn put<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<()>>;
    /// Stores `status` unless the job already has one; returns the existing one if so.
    fn create<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<Option<JobStatus>>>;
    /// Marks rollout job `job` of rollout `rollout` as failed after its checks passed (its
    /// deploy failed): the worker counts a wave's marks against the rollout's `--max-failures`.
    fn mark_rollout_failure<'a>(
        &'a self,
        rollout: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// The ids of the jobs of `rollout` marked failed.
    fn rollout_failures<'a>(&'a self, rollout: &'a str) -> BoxFuture<'a, Result<BTreeSet<String>>>;
}

/// Where the failure marks of a rollout's jobs live in a status bucket: under `jobs/`, so the
/// worker's rights and the bucket's expiry rule cover them, and never a status key (no
/// `.json`).
pub fn rollout_failures_prefix(rollout: &str) -> String {
    format!("jobs/rollout-failures/{rollout}/")
}

/// How long statuses are kept: after this, a status reads as missing (the S3 bucket's
/// lifecycle rule deletes `jobs/` objects after 90 days too).
pub const STATUS_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Bounds of the in-memory store.
#[derive(Clone, Copy, Debug)]
pub struct MemoryLimits {
    /// Most statuses kept.
    pub max_jobs: usize,
    /// Most bytes kept (statuses as JSON).
    pub max_bytes: usize,
    /// How long a status is kept after its last change.
    pub ttl: Duration,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_jobs: 10_000,
            max_bytes: 32 * 1024 * 1024,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Default)]
struct Kept {
    jobs: BTreeMap<String, (JobStatus, usize)>,
    /// (last change, id): the oldest first.
    by_age: BTreeSet<(u64, String)>,
    bytes: usize,
}

impl Kept {
    fn remove(&mut self, id: &str) {
        if let Some((s, n)) = self.jobs.remove(id) {
            self.by_age.remove(&(s.updated_ms, s.id));
            self.bytes -= n;
        }
    }

    fn insert(&mut self, status: JobStatus) {
        self.remove(&status.id);
        let n = status.weight();
        self.by_age.insert((status.updated_ms, status.id.clone()));
        self.bytes += n;
        self.jobs.insert(status.id.clone(), (status, n));
    }

    /// Drops expired statuses, then the oldest ones until the store is within its bounds.
    fn trim(&mut self, limits: &MemoryLimits, now_ms: u64) {
        let ttl = u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX);
        while let Some((at, id)) = self.by_age.first().cloned() {
            let expired = at.saturating_add(ttl) <= now_ms;
            if !expired && self.jobs.len() <= limits.max_jobs && self.bytes <= limits.max_bytes {
                break;
            }
            self.remove(&id);
        }
    }
}

/// Statuses in memory, for `pipeforge serve` (lost on restart; the queue is not). Bounded in
/// count, bytes and age ([`MemoryLimits`]): the oldest statuses go first.
#[derive(Debug, Default)]
pub struct MemoryStatus {
    kept: Mutex<Kept>,
    limits: MemoryLimits,
    /// Rollout failure marks: rollout → job ids (a few per rollout: a wave stops at them).
    failures: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl MemoryStatus {
    /// A store with these bounds.
    pub fn new(limits: MemoryLimits) -> MemoryStatus {
        MemoryStatus {
            kept: Mutex::new(Kept::default()),
            limits,
            failures: Mutex::default(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Kept>> {
        self.kept.lock().map_err(|_| {
            Error::other(
                "the job status store is unusable after a panic",
                "restart `pipeforge serve`",
            )
        })
    }

    /// Statuses kept, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.lock()
            .map(|k| (k.jobs.len(), k.bytes))
            .unwrap_or_default()
    }
}

impl StatusStore for MemoryStatus {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobStatus>>> {
        Box::pin(async move {
            let mut kept = self.lock()?;
            kept.trim(&self.limits, super::now_ms());
            Ok(kept.jobs.get(id).map(|(s, _)| s.clone()))
        })
    }

    fn put<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut kept = self.lock()?;
            kept.insert(status.clone().bounded());
            kept.trim(&self.limits, super::now_ms());
            Ok(())
        })
    }

    fn create<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<Option<JobStatus>>> {
        Box::pin(async move {
            let mut kept = self.lock()?;
            kept.trim(&self.limits, super::now_ms());
            if let Some((existing, _)) = kept.jobs.get(&status.id) {
                return Ok(Some(existing.clone()));
            }
            kept.insert(status.clone().bounded());
            kept.trim(&self.limits, super::now_ms());
            Ok(None)
        })
    }

    fn mark_rollout_failure<'a>(
        &'a self,
        rollout: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.failures
                .lock()
                .map_err(|_| poisoned())?
                .entry(rollout.to_owned())
                .or_default()
                .insert(job.to_owned());
            Ok(())
        })
    }

    fn rollout_failures<'a>(&'a self, rollout: &'a str) -> BoxFuture<'a, Result<BTreeSet<String>>> {
        Box::pin(async move {
            Ok(self
                .failures
                .lock()
                .map_err(|_| poisoned())?
                .get(rollout)
                .cloned()
                .unwrap_or_default())
        })
    }
}

fn poisoned() -> Error {
    Error::other(
        "the job status store is unusable after a panic",
        "restart `pipeforge serve`",
    )
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
            let declared = out.content_length();
            let bytes = crate::aws::read_body(out.body, declared, MAX_STATUS_BYTES * 2)
                .await
                .map_err(|e| match e {
                    crate::aws::BodyError::TooLarge { .. } => {
                        self.failed("read", "the object is larger than a status can be")
                    }
                    crate::aws::BodyError::Broken(e) => self.failed("read", e),
                })?;
            let status: JobStatus =
                serde_json::from_slice(&bytes).map_err(|e| self.failed("parse", e))?;
            let ttl = u64::try_from(STATUS_TTL.as_millis()).unwrap_or(u64::MAX);
            if status.updated_ms.saturating_add(ttl) <= super::now_ms() {
                return Ok(None);
            }
            Ok(Some(status))
        })
    }

    fn put<'a>(&'a self, status: &'a JobStatus) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let body = serde_json::to_vec_pretty(&status.clone().bounded())
                .map_err(|e| self.failed("encode", e))?;
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

    fn mark_rollout_failure<'a>(
        &'a self,
        rollout: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(format!("{}{job}", rollout_failures_prefix(rollout)))
                .body(ByteStream::from_static(b""))
                .send()
                .await
                .map_err(|e| {
                    self.failed(
                        "mark a rollout failure in",
                        aws_sdk_s3::error::DisplayErrorContext(e),
                    )
                })?;
            Ok(())
        })
    }

    fn rollout_failures<'a>(&'a self, rollout: &'a str) -> BoxFuture<'a, Result<BTreeSet<String>>> {
        Box::pin(async move {
            let prefix = rollout_failures_prefix(rollout);
            let mut out = BTreeSet::new();
            let mut token = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| {
                        self.failed(
                            "list rollout failures in",
                            aws_sdk_s3::error::DisplayErrorContext(e),
                        )
                    })?;
                out.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key()?.strip_prefix(&prefix))
                        .map(str::to_owned),
                );
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                    _ => return Ok(out),
                }
            }
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
            status_capability: String::new(),
            kind: Default::default(),
        }
    }

    #[tokio::test]
    async fn memory_store_keeps_the_first_status_and_evicts_the_oldest() {
        let store = MemoryStatus::new(MemoryLimits {
            max_jobs: 2,
            ..MemoryLimits::default()
        });
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

    #[tokio::test]
    async fn memory_store_is_bounded_in_bytes_and_age() {
        let store = MemoryStatus::new(MemoryLimits {
            max_jobs: 1_000,
            max_bytes: 100 * 1024,
            ttl: Duration::from_secs(3600),
        });
        let now = crate::webhook::now_ms();
        for i in 0..200u64 {
            let mut s = JobStatus::queued(&job(&format!("j{i}")));
            s.error = Some("e".repeat(2_000));
            s.updated_ms = now + i;
            store.put(&s).await.expect("put");
        }
        let (count, bytes) = store.usage();
        assert!(bytes <= 100 * 1024, "{bytes} bytes kept");
        assert!(count < 200 && count > 10, "{count}");
        assert!(
            store.get("j199").await.expect("get").is_some(),
            "newest kept"
        );
        assert!(store.get("j0").await.expect("get").is_none(), "oldest gone");
        let mut old = JobStatus::queued(&job("old"));
        old.updated_ms = now - 2 * 3600 * 1000;
        store.put(&old).await.expect("put");
        assert!(store.get("old").await.expect("get").is_none(), "expired");
    }

    #[test]
    fn a_status_is_cut_to_size_and_never_serves_its_capability() {
        let mut s = JobStatus::queued(&job("big"));
        // Quotes and control characters: the worst case for JSON size.
        s.error = Some("\"".repeat(10 * 1024 * 1024));
        s.diagnostics = vec!["\u{1}\"".repeat(100_000); 5_000];
        s.branch = "\\".repeat(100_000);
        s.stacks = vec![
            StackChange {
                stack: "s".repeat(10_000),
                action: "a".repeat(10_000),
            };
            1_000
        ];
        let b = s.bounded();
        let json = serde_json::to_vec_pretty(&b).expect("json");
        assert!(json.len() <= MAX_STATUS_BYTES, "{} bytes", json.len());
        assert_eq!(b.diagnostics.len(), MAX_DIAGNOSTICS);
        assert!(b.diagnostics[MAX_DIAGNOSTICS - 1].contains("4985 more"));
        let cap = Capability::new().expect("rng");
        assert!(Capability::is_shaped(cap.as_str()));
        assert_ne!(cap, Capability::new().expect("rng"), "random");
        let mut s = JobStatus::queued(&job("c"));
        s.capability = Capability::hash(cap.as_str());
        assert!(s.readable_with(cap.as_str()));
        assert!(!s.readable_with(&Capability::hash(cap.as_str())));
        assert!(!s.readable_with(""));
        let public = s.public().to_string();
        assert!(!public.contains(&s.capability) && !public.contains(cap.as_str()));
        assert!(!JobStatus::queued(&job("none")).readable_with(""));
    }
}
