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
//! [`server`] runs the HTTP handler and a worker in one process (`pipeforge serve`); `lambda`
//! (feature `lambda`) adapts the same calls to API Gateway and SQS events, and is the only
//! module that knows Lambda event types. Nothing here prints: events go to a [`log::Log`] sink
//! that the binaries write as JSON lines.

pub mod aws;
pub mod bootstrap;
pub mod event;
pub mod git;
pub mod job;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod log;
pub mod queue;
pub mod secret;
pub mod server;
pub mod status;
pub mod worker;

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the queue, status and deploy traits return (object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Matches `name` against `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_any_run_of_characters() {
        assert!(glob_match("payments/*", "payments/orders-api"));
        assert!(glob_match("*", "anything/at-all"));
        assert!(glob_match("release/*-lts", "release/2-lts"));
        assert!(!glob_match("payments/*", "paymentsx/orders"));
        assert!(!glob_match("main", "main2"));
        assert!(!glob_match("a*b*c", "acb"));
    }
}
