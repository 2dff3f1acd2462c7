//! The job queue between the HTTP handler and the worker.
//!
//! On AWS it is an SQS FIFO queue ([`SqsQueue`]): the message group is the repository (SQS
//! hands out one message of a group at a time, in send order, so a repository has one deploy at
//! a time, in merge order) and the deduplication id is the job id (a redelivered webhook within
//! SQS's five-minute window is dropped; after that, the job status catches it). A redrive
//! policy names the dead-letter queue; the worker moves a job there itself after the last
//! attempt, with its error as a message attribute. The same code runs against the local AWS
//! server. [`MemoryQueue`] has the same semantics inside one process (`pipeforge serve
//! --local-queue`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use tokio::sync::Notify;

use super::BoxFuture;
use super::job::Job;
use crate::error::{Error, Result};

/// SQS's deduplication window.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// A message taken from the queue.
#[derive(Clone, Debug)]
pub struct Received {
    /// The job.
    pub job: Job,
    /// The handle that deletes it or changes its visibility.
    pub receipt: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

/// A FIFO job queue with per-repository ordering, deduplication and a dead-letter queue.
pub trait JobQueue: Send + Sync {
    /// Enqueues `job` in its repository's group; `dedup` is the deduplication id.
    fn send<'a>(&'a self, job: &'a Job, dedup: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Takes the next available message, waiting up to `wait`.
    fn receive(&self, wait: Duration) -> BoxFuture<'_, Result<Option<Received>>>;
    /// Done with a message: removes it.
    fn delete<'a>(&'a self, msg: &'a Received) -> BoxFuture<'a, Result<()>>;
    /// Makes a message (and so its group) available again after `delay`; also used to keep a
    /// long job invisible while it runs.
    fn set_visibility<'a>(
        &'a self,
        msg: &'a Received,
        delay: Duration,
    ) -> BoxFuture<'a, Result<()>>;
    /// Moves a message to the dead-letter queue with `error`, and removes it from this queue.
    fn dead_letter<'a>(&'a self, msg: &'a Received, error: &'a str) -> BoxFuture<'a, Result<()>>;
    /// How many receives a message gets before it is dead-lettered.
    fn max_receives(&self) -> u32;
}

#[derive(Debug)]
struct Message {
    job: Job,
    group: String,
    receipt: Option<String>,
    visible_at: Instant,
    receive_count: u32,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Message>,
    dedup: BTreeMap<String, Instant>,
    dead: Vec<(Job, String)>,
    next_receipt: u64,
}

/// An in-process FIFO queue with SQS FIFO semantics: groups, deduplication window, visibility
/// timeout, receive counts and a dead-letter list.
#[derive(Debug)]
pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
    visibility: Duration,
    max_receives: u32,
}

impl MemoryQueue {
    /// A queue whose messages stay invisible for `visibility` once received and are
    /// dead-lettered after `max_receives` receives.
    pub fn new(visibility: Duration, max_receives: u32) -> MemoryQueue {
        MemoryQueue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            visibility,
            max_receives: max_receives.max(1),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| {
            Error::other(
                "the local queue is unusable after a panic",
                "restart `pipeforge serve`",
            )
        })
    }

    /// The dead-lettered jobs and their errors.
    pub fn dead_letters(&self) -> Vec<(Job, String)> {
        self.lock().map(|s| s.dead.clone()).unwrap_or_default()
    }

    /// Messages waiting or in flight.
    pub fn len(&self) -> usize {
        self.lock().map(|s| s.messages.len()).unwrap_or_default()
    }

    /// True when no message waits or is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next message that may be handed out now, or when the next one becomes visible.
    fn take(&self, now: Instant) -> Result<std::result::Result<Received, Option<Instant>>> {
        let mut st = self.lock()?;
        let mut seen: Vec<&str> = Vec::new();
        let mut pick = None;
        let mut next_visible: Option<Instant> = None;
        for (i, m) in st.messages.iter().enumerate() {
            if seen.contains(&m.group.as_str()) {
                continue; // only the first message of a group may go
            }
            seen.push(&m.group);
            if m.visible_at > now {
                next_visible = Some(next_visible.map_or(m.visible_at, |n| n.min(m.visible_at)));
                continue; // in flight or delayed: the whole group waits
            }
            pick = Some(i);
            break;
        }
        let Some(i) = pick else {
            return Ok(Err(next_visible));
        };
        st.next_receipt += 1;
        let receipt = format!("r{}", st.next_receipt);
        let visibility = self.visibility;
        let m = &mut st.messages[i];
        m.receive_count += 1;
        m.receipt = Some(receipt.clone());
        m.visible_at = now + visibility;
        Ok(Ok(Received {
            job: m.job.clone(),
            receipt,
            receive_count: m.receive_count,
        }))
    }

    fn position(st: &State, msg: &Received) -> Option<usize> {
        st.messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(msg.receipt.as_str()))
    }
}

impl JobQueue for MemoryQueue {
    fn send<'a>(&'a self, job: &'a Job, dedup: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let now = Instant::now();
            {
                let mut st = self.lock()?;
                st.dedup
                    .retain(|_, t| now.duration_since(*t) < DEDUP_WINDOW);
                if st.dedup.contains_key(dedup) {
                    return Ok(());
                }
                st.dedup.insert(dedup.to_owned(), now);
                st.messages.push_back(Message {
                    job: job.clone(),
                    group: job.group(),
                    receipt: None,
                    visible_at: now,
                    receive_count: 0,
                });
            }
            self.notify.notify_waiters();
            Ok(())
        })
    }

    fn receive(&self, wait: Duration) -> BoxFuture<'_, Result<Option<Received>>> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            loop {
                let notified = self.notify.notified();
                let now = Instant::now();
                let next = match self.take(now)? {
                    Ok(r) => return Ok(Some(r)),
                    Err(next) => next,
                };
                if now >= deadline {
                    return Ok(None);
                }
                let until = next.map_or(deadline, |n| n.min(deadline));
                let _ = tokio::time::timeout(until.saturating_duration_since(now), notified).await;
            }
        })
    }

    fn delete<'a>(&'a self, msg: &'a Received) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            {
                let mut st = self.lock()?;
                if let Some(i) = Self::position(&st, msg) {
                    st.messages.remove(i);
                }
            }
            self.notify.notify_waiters();
            Ok(())
        })
    }

    fn set_visibility<'a>(
        &'a self,
        msg: &'a Received,
        delay: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            {
                let mut st = self.lock()?;
                if let Some(i) = Self::position(&st, msg) {
                    st.messages[i].visible_at = Instant::now() + delay;
                }
            }
            self.notify.notify_waiters();
            Ok(())
        })
    }

    fn dead_letter<'a>(&'a self, msg: &'a Received, error: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            {
                let mut st = self.lock()?;
                if let Some(m) = Self::position(&st, msg).and_then(|i| st.messages.remove(i)) {
                    st.dead.push((m.job, error.to_owned()));
                }
            }
            self.notify.notify_waiters();
            Ok(())
        })
    }

    fn max_receives(&self) -> u32 {
        self.max_receives
    }
}

/// An SQS FIFO queue and the dead-letter queue its redrive policy names.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    dead_letter_url: Option<String>,
    max_receives: u32,
}

fn sqs_error(what: &str, url: &str, e: impl std::fmt::Display) -> Error {
    Error::other(
        format!("cannot {what} queue `{url}`: {e}"),
        "check the queue URL, that it is a FIFO queue, and that this role may use it",
    )
}

impl SqsQueue {
    /// Opens the FIFO queue at `url` and, from its redrive policy, its dead-letter queue and
    /// receive limit (without a redrive policy, jobs are retried every `max_receives_default`
    /// receives... forever: a warning the caller should log).
    pub async fn open(
        client: aws_sdk_sqs::Client,
        url: &str,
        max_receives_default: u32,
    ) -> Result<SqsQueue> {
        let attrs = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::FifoQueue)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                sqs_error(
                    "read the attributes of",
                    url,
                    aws_sdk_sqs::error::DisplayErrorContext(e),
                )
            })?;
        let attrs = attrs.attributes.unwrap_or_default();
        if attrs
            .get(&QueueAttributeName::FifoQueue)
            .map(String::as_str)
            != Some("true")
        {
            return Err(Error::other(
                format!("queue `{url}` is not a FIFO queue"),
                "use the FIFO queue `pipeforge bootstrap` creates (its name ends in `.fifo`): it keeps the merges of a repository in order",
            ));
        }
        let mut dead_letter_url = None;
        let mut max_receives = max_receives_default.max(1);
        if let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) {
            let v: serde_json::Value = serde_json::from_str(policy)
                .map_err(|e| sqs_error("read the redrive policy of", url, e))?;
            if let Some(n) = v.get("maxReceiveCount").and_then(|n| {
                n.as_u64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
            }) {
                max_receives = u32::try_from(n).unwrap_or(u32::MAX).max(1);
            }
            if let Some(arn) = v.get("deadLetterTargetArn").and_then(|a| a.as_str()) {
                let parts: Vec<&str> = arn.split(':').collect();
                if let (Some(name), Some(account)) = (parts.get(5), parts.get(4)) {
                    let out = client
                        .get_queue_url()
                        .queue_name(*name)
                        .queue_owner_aws_account_id(*account)
                        .send()
                        .await
                        .map_err(|e| {
                            sqs_error(
                                "find the dead-letter queue of",
                                url,
                                aws_sdk_sqs::error::DisplayErrorContext(e),
                            )
                        })?;
                    dead_letter_url = out.queue_url;
                }
            }
        }
        Ok(SqsQueue {
            client,
            url: url.to_owned(),
            dead_letter_url,
            max_receives,
        })
    }

    /// The dead-letter queue's URL, if the queue has one.
    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter_url.as_deref()
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a job (shared by `send` and `dead_letter`).
    async fn send_to(&self, url: &str, job: &Job, dedup: &str, error: Option<&str>) -> Result<()> {
        let body = serde_json::to_string(job).map_err(|e| sqs_error("encode a job for", url, e))?;
        let mut req = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_group_id(job.group())
            .message_deduplication_id(dedup);
        if let Some(error) = error {
            let text: String = error.chars().take(4000).collect();
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(if text.is_empty() {
                    "unknown error".to_owned()
                } else {
                    text
                })
                .build()
                .map_err(|e| sqs_error("build a message for", url, e))?;
            req = req.message_attributes("error", attr);
        }
        req.send()
            .await
            .map_err(|e| sqs_error("send to", url, aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }
}

impl JobQueue for SqsQueue {
    fn send<'a>(&'a self, job: &'a Job, dedup: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.send_to(&self.url, job, dedup, None))
    }

    fn receive(&self, wait: Duration) -> BoxFuture<'_, Result<Option<Received>>> {
        Box::pin(async move {
            let secs = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(1)
                .wait_time_seconds(secs)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| {
                    sqs_error(
                        "receive from",
                        &self.url,
                        aws_sdk_sqs::error::DisplayErrorContext(e),
                    )
                })?;
            let Some(m) = out.messages.unwrap_or_default().into_iter().next() else {
                return Ok(None);
            };
            let receipt = m.receipt_handle.clone().unwrap_or_default();
            let receive_count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let job: Job = match serde_json::from_str(m.body.as_deref().unwrap_or_default()) {
                Ok(j) => j,
                Err(e) => {
                    // Not ours: it can never succeed. Drop it rather than block its group.
                    let _ = self
                        .client
                        .delete_message()
                        .queue_url(&self.url)
                        .receipt_handle(&receipt)
                        .send()
                        .await;
                    return Err(sqs_error(
                        "read a job from",
                        &self.url,
                        format!("the message is not a job ({e}); it was deleted"),
                    ));
                }
            };
            Ok(Some(Received {
                job,
                receipt,
                receive_count,
            }))
        })
    }

    fn delete<'a>(&'a self, msg: &'a Received) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(&msg.receipt)
                .send()
                .await
                .map_err(|e| {
                    sqs_error(
                        "delete a message from",
                        &self.url,
                        aws_sdk_sqs::error::DisplayErrorContext(e),
                    )
                })?;
            Ok(())
        })
    }

    fn set_visibility<'a>(
        &'a self,
        msg: &'a Received,
        delay: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let secs = i32::try_from(delay.as_secs().min(43_200)).unwrap_or(43_200);
            self.client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(&msg.receipt)
                .visibility_timeout(secs)
                .send()
                .await
                .map_err(|e| {
                    sqs_error(
                        "change a message's visibility in",
                        &self.url,
                        aws_sdk_sqs::error::DisplayErrorContext(e),
                    )
                })?;
            Ok(())
        })
    }

    fn dead_letter<'a>(&'a self, msg: &'a Received, error: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match &self.dead_letter_url {
                Some(dlq) => {
                    let dedup = format!("{}-dead-{}", msg.job.id, msg.receive_count);
                    self.send_to(dlq, &msg.job, &dedup, Some(error)).await?;
                    self.delete(msg).await
                }
                // No dead-letter queue: keep the job, retried after the longest delay.
                None => self.set_visibility(msg, Duration::from_secs(900)).await,
            }
        })
    }

    fn max_receives(&self) -> u32 {
        self.max_receives
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::event::Vendor;

    fn job(id: &str, repo: &str) -> Job {
        Job {
            id: id.to_owned(),
            vendor: Vendor::Github,
            delivery: id.to_owned(),
            repository: repo.to_owned(),
            clone_url: format!("https://github.com/{repo}.git"),
            commit: "abcdef1".to_owned(),
            branch: "main".to_owned(),
            pull_request: None,
            received_ms: 0,
            status_capability: String::new(),
            kind: Default::default(),
        }
    }

    const NOW: Duration = Duration::from_millis(0);

    #[tokio::test]
    async fn one_message_per_group_in_order_and_duplicates_dropped() {
        let q = MemoryQueue::new(Duration::from_secs(60), 3);
        q.send(&job("a1", "t/a"), "a1").await.expect("send");
        q.send(&job("a1", "t/a"), "a1")
            .await
            .expect("send duplicate");
        q.send(&job("a2", "t/a"), "a2").await.expect("send");
        q.send(&job("b1", "t/b"), "b1").await.expect("send");
        assert_eq!(q.len(), 3, "the duplicate was dropped");
        let first = q.receive(NOW).await.expect("receive").expect("a1");
        assert_eq!(first.job.id, "a1");
        // a2 waits behind a1 (same repository); b1 may go.
        let second = q.receive(NOW).await.expect("receive").expect("b1");
        assert_eq!(second.job.id, "b1");
        assert!(
            q.receive(NOW).await.expect("receive").is_none(),
            "group a is busy"
        );
        q.delete(&first).await.expect("delete");
        let third = q.receive(NOW).await.expect("receive").expect("a2");
        assert_eq!(third.job.id, "a2");
    }

    #[tokio::test]
    async fn a_retried_message_blocks_its_group_until_visible_again() {
        let q = MemoryQueue::new(Duration::from_secs(60), 2);
        q.send(&job("a1", "t/a"), "a1").await.expect("send");
        q.send(&job("a2", "t/a"), "a2").await.expect("send");
        let m = q.receive(NOW).await.expect("receive").expect("a1");
        q.set_visibility(&m, Duration::from_millis(50))
            .await
            .expect("retry later");
        assert!(
            q.receive(NOW).await.expect("receive").is_none(),
            "a2 must wait for a1"
        );
        let again = q
            .receive(Duration::from_secs(2))
            .await
            .expect("receive")
            .expect("a1 again");
        assert_eq!((again.job.id.as_str(), again.receive_count), ("a1", 2));
        q.dead_letter(&again, "boom").await.expect("dead letter");
        assert_eq!(q.dead_letters().len(), 1);
        assert_eq!(q.dead_letters()[0].1, "boom");
        let next = q.receive(NOW).await.expect("receive").expect("a2");
        assert_eq!(next.job.id, "a2");
    }

    #[tokio::test]
    async fn receive_wakes_up_when_a_job_arrives() {
        let q = std::sync::Arc::new(MemoryQueue::new(Duration::from_secs(60), 2));
        let q2 = std::sync::Arc::clone(&q);
        let waiter = tokio::spawn(async move { q2.receive(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        q.send(&job("x", "t/x"), "x").await.expect("send");
        let got = waiter.await.expect("join").expect("receive").expect("x");
        assert_eq!(got.job.id, "x");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
