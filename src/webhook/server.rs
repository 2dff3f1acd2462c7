//! The HTTP side: `POST /webhook` (or `/webhook/{vendor}`) verifies, normalises and enqueues,
//! and answers 202 at once; `GET /jobs/{id}` tells what became of a job; `GET /healthz`.
//! [`Handler`] is shared with the Lambda adapter; [`serve`] runs it with the worker in one
//! process (`pipeforge serve`).
//!
//! Status codes: 202 queued, duplicate or ignored (with the reason); 400 malformed (signed but
//! not the expected JSON); 401 missing or wrong signature (no detail); 403 repository or clone
//! URL not allowed by the org policy; 413 body over 1 MiB (refused while it is read); 503 when
//! the queue or the secret store cannot be reached (the vendor may redeliver).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value as Json, json};

use super::event::{self, MAX_BODY_BYTES, Parsed, Rejection, Vendor};
use super::job::{self, Normalised, is_job_id};
use super::log::Log;
use super::queue::{JobQueue, MemoryQueue, SqsQueue};
use super::secret::SecretSource;
use super::status::{JobState, JobStatus, MemoryStatus, S3Status, StatusStore};
use super::worker::{AwsDeployer, Deployer, RenderOnly, Worker, WorkerSettings};
use crate::Inputs;
use crate::error::{Error, Result};
use crate::org::OrgWebhook;

/// An HTTP answer: status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Json,
}

impl Reply {
    fn new(status: u16, body: Json) -> Reply {
        Reply { status, body }
    }
}

/// Accepts webhooks: verify → parse → policy → enqueue → record `queued`.
pub struct Handler {
    /// The shared secrets.
    pub secrets: Arc<SecretSource>,
    /// Where jobs go.
    pub queue: Arc<dyn JobQueue>,
    /// Job statuses.
    pub status: Arc<dyn StatusStore>,
    /// The org's webhook policy.
    pub policy: OrgWebhook,
    /// Logs.
    pub log: Log,
}

impl Handler {
    /// Handles one webhook body (already read, at most [`MAX_BODY_BYTES`]).
    pub async fn accept(&self, headers: &HeaderMap, body: &[u8], vendor: Option<Vendor>) -> Reply {
        let started = Instant::now();
        let reply = self.decide(headers, body, vendor).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut fields = json!({"status": reply.status, "accept_us": micros, "bytes": body.len()});
        if let (Some(f), Some(b)) = (fields.as_object_mut(), reply.body.as_object()) {
            for k in ["job", "reason", "error", "state"] {
                if let Some(v) = b.get(k) {
                    f.insert(k.to_owned(), v.clone());
                }
            }
        }
        self.log.info("webhook", fields);
        reply
    }

    async fn decide(&self, headers: &HeaderMap, body: &[u8], vendor: Option<Vendor>) -> Reply {
        if body.len() > MAX_BODY_BYTES {
            return rejection(&Rejection::TooLarge);
        }
        let secrets = match self.secrets.current().await {
            Ok(s) => s,
            Err(e) => {
                self.log.error(
                    "webhook secret unavailable",
                    json!({"error": e.to_string()}),
                );
                return Reply::new(503, json!({"error": "temporarily unavailable"}));
            }
        };
        if let Err(r) = event::verify(headers, body, &secrets) {
            return rejection(&r);
        }
        let merge = match event::parse(headers, body, vendor) {
            Ok(Parsed::Merge(m)) => m,
            Ok(Parsed::Ignored(reason)) => {
                return Reply::new(202, json!({"status": "ignored", "reason": reason}));
            }
            Err(r) => return rejection(&r),
        };
        let job = match job::normalise(merge, &self.policy, super::now_ms()) {
            Ok(Normalised::Job(j)) => j,
            Ok(Normalised::Ignored(reason)) => {
                return Reply::new(202, json!({"status": "ignored", "reason": reason}));
            }
            Err(r) => return rejection(&r),
        };
        let existing = match self.status.get(&job.id).await {
            Ok(s) => s,
            Err(e) => return self.unavailable(&e),
        };
        let again = match &existing {
            Some(s) if s.state != JobState::DeadLettered => {
                return Reply::new(
                    202,
                    json!({"status": "duplicate", "job": job.id, "state": s.state,
                           "status_url": format!("/jobs/{}", job.id)}),
                );
            }
            Some(s) => Some(s.attempts),
            None => None,
        };
        // A redelivery of a dead-lettered job is how an operator retries it: new dedup id.
        let dedup = match again {
            Some(n) => format!("{}-again-{n}", job.id),
            None => job.id.clone(),
        };
        if let Err(e) = self.queue.send(&job, &dedup).await {
            return self.unavailable(&e);
        }
        let queued = JobStatus::queued(&job);
        let stored = if again.is_some() {
            self.status.put(&queued).await
        } else {
            self.status.create(&queued).await.map(|_| ())
        };
        if let Err(e) = stored {
            self.log.error(
                "cannot record job status",
                json!({"job": job.id, "error": e.to_string()}),
            );
        }
        Reply::new(
            202,
            json!({"status": "queued", "job": job.id, "repository": job.repository,
                   "commit": job.commit, "status_url": format!("/jobs/{}", job.id)}),
        )
    }

    fn unavailable(&self, e: &Error) -> Reply {
        self.log
            .error("webhook not queued", json!({"error": e.to_string()}));
        Reply::new(
            503,
            json!({"error": "temporarily unavailable; redeliver the webhook"}),
        )
    }

    /// `GET /jobs/{id}`.
    pub async fn job(&self, id: &str) -> Reply {
        if !is_job_id(id) {
            return Reply::new(404, json!({"error": "no such job"}));
        }
        match self.status.get(id).await {
            Ok(Some(s)) => Reply::new(200, serde_json::to_value(&s).unwrap_or(Json::Null)),
            Ok(None) => Reply::new(404, json!({"error": "no such job"})),
            Err(e) => self.unavailable(&e),
        }
    }
}

fn rejection(r: &Rejection) -> Reply {
    match r {
        Rejection::Unauthorized => Reply::new(401, json!({"error": "unauthorized"})),
        Rejection::TooLarge => Reply::new(
            413,
            json!({"error": format!("payload too large (limit {MAX_BODY_BYTES} bytes)")}),
        ),
        Rejection::Malformed(m) => Reply::new(400, json!({"error": m})),
        Rejection::Forbidden(m) => Reply::new(403, json!({"error": m})),
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_vec(&self.body).unwrap_or_default();
        body.push(b'\n');
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Reads a request body, refusing it as soon as it passes [`MAX_BODY_BYTES`] (and at once when
/// `Content-Length` says so).
pub async fn read_body(headers: &HeaderMap, body: Body) -> std::result::Result<Vec<u8>, Reply> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(rejection(&Rejection::TooLarge));
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(rejection(&Rejection::TooLarge))
        }
        Err(_) => Err(Reply::new(
            400,
            json!({"error": "cannot read the request body"}),
        )),
    }
}

async fn post_webhook(State(h): State<Arc<Handler>>, headers: HeaderMap, body: Body) -> Reply {
    match read_body(&headers, body).await {
        Ok(bytes) => h.accept(&headers, &bytes, None).await,
        Err(r) => r,
    }
}

async fn post_vendor_webhook(
    State(h): State<Arc<Handler>>,
    UrlPath(vendor): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let Some(v) = Vendor::from_path(&vendor) else {
        return Reply::new(
            404,
            json!({"error": "unknown vendor; use /webhook/github, /webhook/bitbucket-server or /webhook/bitbucket-cloud"}),
        );
    };
    match read_body(&headers, body).await {
        Ok(bytes) => h.accept(&headers, &bytes, Some(v)).await,
        Err(r) => r,
    }
}

async fn get_job(State(h): State<Arc<Handler>>, UrlPath(id): UrlPath<String>) -> Reply {
    h.job(&id).await
}

async fn healthz() -> Reply {
    Reply::new(200, json!({"status": "ok"}))
}

/// The routes.
pub fn router(handler: Arc<Handler>) -> Router {
    Router::new()
        .route("/webhook", post(post_webhook))
        .route("/webhook/{vendor}", post(post_vendor_webhook))
        .route("/jobs/{id}", get(get_job))
        .route("/healthz", get(healthz))
        .with_state(handler)
}

/// Which queue `serve` uses.
#[derive(Clone, Debug)]
pub enum QueueChoice {
    /// An SQS FIFO queue (its redrive policy names the dead-letter queue).
    Sqs(String),
    /// An in-process queue with the same semantics (lost on exit).
    Local {
        /// Receives before a job is dead-lettered.
        max_receives: u32,
    },
}

/// Everything `pipeforge serve` needs.
pub struct ServeOptions {
    /// Address to listen on (port 0 picks a free one; the bound address is logged).
    pub listen: SocketAddr,
    /// The queue.
    pub queue: QueueChoice,
    /// Keep job statuses in this S3 bucket instead of memory.
    pub status_bucket: Option<String>,
    /// Jobs handled at once (each repository still deploys one job at a time).
    pub workers: usize,
    /// Worker settings.
    pub worker: WorkerSettings,
    /// Policy, catalog and templates.
    pub inputs: Inputs,
    /// How jobs are deployed.
    pub deploy: DeployChoice,
}

/// How `serve` deploys.
#[derive(Clone, Debug)]
pub enum DeployChoice {
    /// For real: [`crate::deploy::deploy`], as `pipeforge deploy` does.
    Aws(crate::deploy::DeployOptions),
    /// Validate and render only (nothing leaves the process; for trying the webhook out).
    RenderOnly,
}

/// Runs the HTTP handler and the workers until `shutdown` resolves; then stops accepting,
/// lets running jobs finish, and returns.
pub async fn serve(
    opts: ServeOptions,
    log: Log,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Loaded lazily: nothing is asked of AWS unless the queue, the status store, the secret
    // or a deploy needs it.
    let aws = Arc::new(super::aws::context().await);
    let secrets = {
        let aws = Arc::clone(&aws);
        SecretSource::from_env(|| async move { super::aws::secrets_manager(&aws) }).await?
    };
    let queue: Arc<dyn JobQueue> = match &opts.queue {
        QueueChoice::Sqs(url) => {
            let q = SqsQueue::open(super::aws::sqs(&aws), url, 5).await?;
            if q.dead_letter_url().is_none() {
                log.warn(
                    "the queue has no redrive policy: failing jobs are retried forever",
                    json!({"queue": url}),
                );
            }
            Arc::new(q)
        }
        QueueChoice::Local { max_receives } => {
            Arc::new(MemoryQueue::new(opts.worker.lease, *max_receives))
        }
    };
    let status: Arc<dyn StatusStore> = match &opts.status_bucket {
        Some(bucket) => Arc::new(S3Status::new(super::aws::s3(&aws), bucket.clone())),
        None => Arc::new(MemoryStatus::default()),
    };
    let deployer: Arc<dyn Deployer> = match &opts.deploy {
        DeployChoice::Aws(options) => Arc::new(AwsDeployer {
            aws: Arc::clone(&aws),
            options: options.clone(),
        }),
        DeployChoice::RenderOnly => Arc::new(RenderOnly),
    };
    let handler = Arc::new(Handler {
        secrets: Arc::new(secrets),
        queue: Arc::clone(&queue),
        status: Arc::clone(&status),
        policy: opts.inputs.org.org.webhook.clone(),
        log: log.clone(),
    });
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            Error::other(
                format!("cannot listen on `{}`: {e}", opts.listen),
                "choose a free address, e.g. `--listen 127.0.0.1:8080` (port 0 picks a free port)",
            )
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::other(format!("cannot read the bound address: {e}"), "retry"))?;
    std::fs::create_dir_all(&opts.worker.work_dir)
        .map_err(|e| Error::write(&opts.worker.work_dir, e))?;
    let worker = Worker {
        queue,
        status,
        deployer,
        inputs: Arc::new(opts.inputs),
        log: log.clone(),
        settings: opts.worker,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..opts.workers.max(1) {
        let w = worker.clone();
        let rx = stop_rx.clone();
        workers.push(tokio::spawn(async move { w.run(rx).await }));
    }
    log.info(
        "listening",
        json!({"address": bound.to_string(), "workers": opts.workers.max(1),
               "queue": match &opts.queue { QueueChoice::Sqs(u) => u.clone(), QueueChoice::Local { .. } => "local".to_owned() }}),
    );
    let result = axum::serve(listener, router(handler))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::other(format!("the HTTP server failed: {e}"), "restart it"));
    let _ = stop_tx.send(true);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(600), w).await;
    }
    log.info("stopped", json!({}));
    result
}

/// The work directory `serve` uses by default.
pub fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pipeforge-serve-{}", std::process::id()))
}
