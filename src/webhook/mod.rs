//! The webhook edge: from a merged pull request to an updated pipeline, with no human involved.
//!
//! ```text
//! POST /webhook ──verify──▶ Event ──normalise──▶ Job ──enqueue──▶ JobQueue (SQS FIFO: one group per
//!  (raw body)   event.rs    (vendor JSON)  job.rs   (repository,  queue.rs   repository, dedup by
//!                                                    merge commit)             delivery id)
//!                                                                                │
//!            JobStatus ◀── worker.rs: clone at the merge commit ─▶ validate/render ─▶ Deployer
//!            (status.rs)              (shallow, bounded)           (pipeforge::generate)
//! ```
//!
//! [`server`] runs the HTTP handler and a worker in one process (`pipeforge serve`, served
//! within the limits of [`http`]); `lambda`
//! (feature `lambda`) adapts the same calls to API Gateway and SQS events, and is the only
//! module that knows Lambda event types. Nothing here prints: events go to a [`log::Log`] sink
//! that the binaries write as JSON lines.

pub mod aws;
pub mod bootstrap;
pub mod event;

pub mod git;
pub mod http;
pub mod job;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod log;
pub mod page;
pub mod preview;
pub mod queue;
pub mod rollout;
pub mod secret;
pub mod server;
pub mod settled;
pub mod status;
pub mod vendor;
pub mod worker;

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the queue, status and deploy traits return (object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Milliseconds since the Unix epoch.
/// Today (UTC) by the system clock: the day a job's manifest is validated on (dated org rules,
/// waivers), unless the worker's settings fix one.
pub fn today() -> crate::date::Date {
    crate::date::Date::from_unix_seconds(i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
