//! The HTTP side: `POST /webhook` (or `/webhook/{vendor}`) verifies, normalises and enqueues,
//! and answers 202 at once with the job's status URL; `GET /jobs/{id}/{capability}` (that URL)
//! tells what became of the job; `GET /healthz`.
//! [`Handler`] is shared with the Lambda adapter; [`serve`] runs it with the worker in one
//! process (`pipeforge serve`).
//!
//! Status codes: 202 queued, duplicate or ignored (with the reason); 400 malformed (signed but
//! not the expected JSON, or a field too long); 401 missing or wrong signature (no detail); 403
//! repository or clone URL not allowed by the org policy; 408 body not received within the body
//! timeout; 413 body over 1 MiB (refused while it is read); 503 when the queue or the secret
//! store cannot be reached, or too many bodies are being read at once (the vendor may
//! redeliver). Connection-level limits are [`super::http`]'s.

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
use tokio::sync::Semaphore;

use super::event::{self, MAX_BODY_BYTES, Parsed, Rejection, Vendor};
use super::http::Limits;
use super::job::{self, Normalised, is_job_id};
use super::log::Log;
use super::preview::{DeployedBundles, S3Bundles};
use super::queue::{JobQueue, MemoryQueue, SqsQueue};
use super::secret::SecretSource;
use super::status::{
    Capability, JobState, JobStatus, MemoryStatus, S3Status, StatusStore, status_url,
};
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
        let normalised = match event::parse(headers, body, vendor) {
            Ok(Parsed::Merge(m)) => job::normalise(m, &self.policy, super::now_ms()),
            Ok(Parsed::PullRequest(p)) => {
                job::normalise_pull_request(p, &self.policy, super::now_ms())
            }
            Ok(Parsed::Ignored(reason)) => {
                return Reply::new(202, json!({"status": "ignored", "reason": reason}));
            }
            Err(r) => return rejection(&r),
        };
        let mut job = match normalised {
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
        // A redelivery learns what became of its job, but not its status URL: that is given
        // once, to whoever queued the job.
        let again = match &existing {
            Some(s) if s.state != JobState::DeadLettered => {
                return Reply::new(
                    202,
                    json!({"status": "duplicate", "job": job.id, "state": s.state}),
                );
            }
            Some(s) => Some(s.attempts),
            None => None,
        };
        let capability = match Capability::new() {
            Ok(c) => c,
            Err(e) => return self.unavailable(&e),
        };
        job.status_capability = Capability::hash(capability.as_str());
        // A redelivery of a dead-lettered job is how an operator retries it: new dedup id, and
        // a new status URL (the old one stops working).
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
                   "commit": job.commit, "status_url": status_url(&job.id, &capability)}),
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

    /// `GET /jobs/{id}/{capability}`: the job's status, for the capability of its status URL
    /// only. A missing job, a wrong capability and a bare `/jobs/{id}` get the same 404.
    pub async fn job(&self, id: &str, capability: Option<&str>) -> Reply {
        let not_found = || {
            Reply::new(
                404,
                json!({"error": "no such job; use the `status_url` of the webhook's 202 answer"}),
            )
        };
        let Some(capability) = capability.filter(|c| Capability::is_shaped(c)) else {
            return not_found();
        };
        if !is_job_id(id) {
            return not_found();
        }
        match self.status.get(id).await {
            Ok(Some(s)) if s.readable_with(capability) => Reply::new(200, s.public()),
            Ok(_) => not_found(),
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

/// What the routes share: the handler, and the bound on bodies read at once.
#[derive(Clone)]
struct App {
    handler: Arc<Handler>,
    /// One permit per body being read.
    bodies: Arc<Semaphore>,
    /// Time to receive a body, once a permit is held (and longest wait for a permit).
    body_timeout: Duration,
}

/// Reads a request body, refusing it as soon as it passes [`MAX_BODY_BYTES`] (and at once when
/// `Content-Length` says so). A body is read only with one of `app.bodies`' permits (503 when
/// none frees up within the body timeout), and must arrive within the body timeout (408).
async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<Vec<u8>, Reply> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(rejection(&Rejection::TooLarge));
    }
    let secs = app.body_timeout.as_secs_f64();
    let Ok(Ok(_permit)) = tokio::time::timeout(app.body_timeout, app.bodies.acquire()).await else {
        return Err(Reply::new(
            503,
            json!({"error": "too many webhooks are being received at once; redeliver it"}),
        ));
    };
    let capacity = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let read = async {
        let mut body = Limited::new(body, MAX_BODY_BYTES);
        let mut bytes = Vec::with_capacity(capacity);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        Ok::<_, axum::BoxError>(bytes)
    };
    match tokio::time::timeout(app.body_timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(rejection(&Rejection::TooLarge))
        }
        Ok(Err(_)) => Err(Reply::new(
            400,
            json!({"error": "cannot read the request body"}),
        )),
        Err(_) => Err(Reply::new(
            408,
            json!({"error": format!("the request body did not arrive within {secs} s")}),
        )),
    }
}

async fn post_webhook(State(app): State<App>, headers: HeaderMap, body: Body) -> Reply {
    match read_body(&app, &headers, body).await {
        Ok(bytes) => app.handler.accept(&headers, &bytes, None).await,
        Err(r) => r,
    }
}

async fn post_vendor_webhook(
    State(app): State<App>,
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
    match read_body(&app, &headers, body).await {
        Ok(bytes) => app.handler.accept(&headers, &bytes, Some(v)).await,
        Err(r) => r,
    }
}

async fn get_job(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Reply {
    app.handler.job(&id, None).await
}

async fn get_job_status(
    State(app): State<App>,
    UrlPath((id, capability)): UrlPath<(String, String)>,
) -> Reply {
    app.handler.job(&id, Some(&capability)).await
}

async fn healthz() -> Reply {
    Reply::new(200, json!({"status": "ok"}))
}

/// The routes, reading at most `limits.max_bodies` bodies at once, each within
/// `limits.body_timeout`.
pub fn router(handler: Arc<Handler>, limits: &Limits) -> Router {
    let app = App {
        handler,
        bodies: Arc::new(Semaphore::new(limits.max_bodies.max(1))),
        body_timeout: limits.body_timeout,
    };
    Router::new()
        .route("/webhook", post(post_webhook))
        .route("/webhook/{vendor}", post(post_vendor_webhook))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/{capability}", get(get_job_status))
        .route("/healthz", get(healthz))
        .with_state(app)
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
    /// HTTP limits: timeouts, connections, bodies read at once.
    pub limits: Limits,
    /// Also serve the preview page under `/preview/`.
    pub preview_page: bool,
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
    let (deployer, deployed): (Arc<dyn Deployer>, Arc<dyn DeployedBundles>) = match &opts.deploy {
        DeployChoice::Aws(options) => (
            Arc::new(AwsDeployer {
                aws: Arc::clone(&aws),
                options: options.clone(),
            }),
            Arc::new(S3Bundles {
                aws: Arc::clone(&aws),
            }),
        ),
        DeployChoice::RenderOnly => {
            let r = RenderOnly::default();
            let bundles = Arc::clone(&r.bundles);
            (Arc::new(r), bundles)
        }
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
    let inputs = Arc::new(opts.inputs);
    let page_inputs = Arc::clone(&inputs);
    let secrets_client = inputs
        .org
        .org
        .webhook
        .pull_requests
        .enabled
        .then(|| super::aws::secrets_manager(&aws));
    let previewer = super::preview::previewer(
        &inputs,
        deployed,
        secrets_client,
        opts.worker.work_dir.clone(),
    )?;
    let worker = Worker {
        queue,
        status,
        deployer,
        inputs,
        log: log.clone(),
        settings: opts.worker,
        settled: Arc::default(),
        previewer,
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
               "queue": match &opts.queue { QueueChoice::Sqs(u) => u.clone(), QueueChoice::Local { .. } => "local".to_owned() },
               "limits": {"header_timeout_s": opts.limits.header_timeout.as_secs_f64(),
                          "body_timeout_s": opts.limits.body_timeout.as_secs_f64(),
                          "idle_timeout_s": opts.limits.idle_timeout.as_secs_f64(),
                          "max_connections": opts.limits.max_connections,
                          "max_bodies": opts.limits.max_bodies}}),
    );
    let mut routes = router(handler, &opts.limits);
    if opts.preview_page {
        routes = routes
            .route(
                "/preview",
                get(|| async { axum::response::Redirect::permanent("/preview/") }),
            )
            .nest_service("/preview/", super::page::router(Arc::clone(&page_inputs)));
    }
    let http = tokio::spawn(super::http::serve(
        listener,
        routes,
        opts.limits,
        log.clone(),
        stop_rx,
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    let result = http
        .await
        .map_err(|e| Error::other(format!("the HTTP server failed: {e}"), "restart it"));
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
