//! The AWS Lambda adapters (feature `lambda`): the only module that knows Lambda event types.
//!
//! - [`run_webhook`]: API Gateway HTTP API (payload 2.0) → [`Handler`]: `POST /webhook`,
//!   `POST /webhook/{vendor}`, `GET /jobs/{id}/{capability}`, `GET /healthz`.
//! - [`run_worker`]: SQS event source mapping (FIFO queue, batch size 1) → [`Worker::handle`].
//!   A job to retry is reported as a batch item failure, so Lambda leaves the message for the
//!   delay the worker set; everything else is deleted by the worker itself.
//!
//! Configuration, from the environment: `PIPEFORGE_QUEUE_URL` (the FIFO queue),
//! `PIPEFORGE_STATUS_BUCKET` (job statuses, `jobs/<id>.json`), `PIPEFORGE_WEBHOOK_SECRET_ARN`
//! (or `PIPEFORGE_WEBHOOK_SECRET`), and optionally `PIPEFORGE_ORG` (an `org.yaml` packaged
//! with the function; default: the embedded policy).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_http::{Body, Request, Response};
use lambda_runtime::LambdaEvent;
use serde_json::json;

use super::event::{MAX_BODY_BYTES, Vendor};
use super::job::Job;
use super::log::Log;
use super::queue::{JobQueue, Received, SqsQueue};
use super::secret::SecretSource;
use super::server::{Handler, Reply};
use super::status::{S3Status, StatusStore};
use super::worker::{AwsDeployer, Handled, Worker, WorkerSettings};
use crate::Inputs;
use crate::error::{Error, Result};

/// The error type the Lambda runtime wants.
pub type LambdaError = lambda_runtime::Error;

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            Error::other(
                format!("`{name}` is not set"),
                "set it in the function's environment (the bootstrap stack does)",
            )
        })
}

fn inputs() -> Result<Inputs> {
    let org = std::env::var("PIPEFORGE_ORG")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|p| {
            let p = PathBuf::from(p);
            match std::env::var("LAMBDA_TASK_ROOT") {
                Ok(root) if p.is_relative() => PathBuf::from(root).join(p),
                _ => p,
            }
        });
    Inputs::load(org.as_deref(), None, None)
}

struct Shared {
    aws: Arc<crate::aws::AwsContext>,
    queue: Arc<dyn JobQueue>,
    status: Arc<dyn StatusStore>,
    inputs: Inputs,
}

async fn shared() -> Result<Shared> {
    let aws = Arc::new(super::aws::context().await);
    let queue = SqsQueue::open(super::aws::sqs(&aws), &env("PIPEFORGE_QUEUE_URL")?, 5).await?;
    let status = S3Status::new(super::aws::s3(&aws), env("PIPEFORGE_STATUS_BUCKET")?);
    Ok(Shared {
        aws,
        queue: Arc::new(queue),
        status: Arc::new(status),
        inputs: inputs()?,
    })
}

fn response(reply: Reply) -> Response<Body> {
    let mut body = serde_json::to_string(&reply.body).unwrap_or_default();
    body.push('\n');
    Response::builder()
        .status(reply.status)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

async fn route(handler: &Handler, req: Request) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().as_str().to_owned();
    match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => Reply {
            status: 200,
            body: json!({"status": "ok"}),
        },
        ("GET", p) if p.starts_with("/jobs/") => {
            let rest = &p["/jobs/".len()..];
            match rest.split_once('/') {
                Some((id, capability)) => handler.job(id, Some(capability)).await,
                None => handler.job(rest, None).await,
            }
        }
        ("POST", p) if p == "/webhook" || p.starts_with("/webhook/") => {
            let vendor = match p.strip_prefix("/webhook/") {
                None => None,
                Some(v) => match Vendor::from_path(v) {
                    Some(v) => Some(v),
                    None => {
                        return Reply {
                            status: 404,
                            body: json!({"error": "unknown vendor"}),
                        };
                    }
                },
            };
            let body: &[u8] = match req.body() {
                Body::Empty => &[],
                Body::Text(t) => t.as_bytes(),
                Body::Binary(b) => b,
                _ => &[],
            };
            if body.len() > MAX_BODY_BYTES {
                return Reply {
                    status: 413,
                    body: json!({"error": format!("payload too large (limit {MAX_BODY_BYTES} bytes)")}),
                };
            }
            handler.accept(req.headers(), body, vendor).await
        }
        _ => Reply {
            status: 404,
            body: json!({"error": "not found"}),
        },
    }
}

/// Runs the webhook handler function (API Gateway HTTP API).
pub async fn run_webhook(log: Log) -> std::result::Result<(), LambdaError> {
    let s = shared().await?;
    let aws = Arc::clone(&s.aws);
    let secrets =
        SecretSource::from_env(|| async move { super::aws::secrets_manager(&aws) }).await?;
    let handler = Arc::new(Handler {
        secrets: Arc::new(secrets),
        queue: s.queue,
        status: s.status,
        policy: s.inputs.org.org.webhook.clone(),
        log,
    });
    lambda_http::run(lambda_http::service_fn(move |req: Request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, LambdaError>(response(route(&handler, req).await)) }
    }))
    .await
}

/// Runs the worker function (SQS event source, batch size 1): deploys as `pipeforge deploy`
/// does, with the function's role.
pub async fn run_worker(log: Log) -> std::result::Result<(), LambdaError> {
    let s = shared().await?;
    let deployer = Arc::new(AwsDeployer {
        aws: Arc::clone(&s.aws),
        // Every wait ends well within the function's 15 minutes; a job that runs out of time
        // is retried from the queue.
        options: crate::deploy::DeployOptions {
            timeout: Duration::from_secs(600),
            ..crate::deploy::DeployOptions::default()
        },
    });
    let inputs = Arc::new(s.inputs);
    let work_dir = std::env::temp_dir().join("pipeforge-worker");
    let previewer = super::preview::previewer(
        &inputs,
        Arc::new(super::preview::S3Bundles {
            aws: Arc::clone(&s.aws),
        }),
        Some(super::aws::secrets_manager(&s.aws)),
        work_dir.clone(),
    )
    .map_err(|e| LambdaError::from(e.to_string()))?;
    let worker = Arc::new(Worker {
        queue: s.queue,
        status: s.status,
        deployer,
        inputs,
        log: log.clone(),
        settings: WorkerSettings {
            work_dir,
            lease: Duration::from_secs(300),
            ..WorkerSettings::default()
        },
        settled: Arc::default(),
        previewer,
    });
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| {
            let worker = Arc::clone(&worker);
            let log = log.clone();
            async move {
                let mut failures = Vec::new();
                for record in event.payload.records {
                    let id = record.message_id.clone().unwrap_or_default();
                    let job: Job =
                        match serde_json::from_str(record.body.as_deref().unwrap_or_default()) {
                            Ok(j) => j,
                            Err(e) => {
                                // Never succeeds: let the message go rather than block its repository.
                                log.error(
                                    "not a job; dropped",
                                    json!({"message": id, "error": e.to_string()}),
                                );
                                continue;
                            }
                        };
                    let receive_count = record
                        .attributes
                        .get("ApproximateReceiveCount")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    let msg = Received {
                        job,
                        receipt: record.receipt_handle.clone().unwrap_or_default(),
                        receive_count,
                    };
                    if worker.handle(msg).await == Handled::Retrying {
                        let mut f = BatchItemFailure::default();
                        f.item_identifier = id;
                        failures.push(f);
                    }
                }
                let mut response = SqsBatchResponse::default();
                response.batch_item_failures = failures;
                Ok::<_, LambdaError>(response)
            }
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::event::{Secrets, sign};
    use crate::webhook::queue::MemoryQueue;
    use crate::webhook::status::MemoryStatus;

    fn handler() -> Handler {
        Handler {
            secrets: Arc::new(SecretSource::Static(Secrets::new(["s3cret"]))),
            queue: Arc::new(MemoryQueue::new(Duration::from_secs(60), 3)),
            status: Arc::new(MemoryStatus::default()),
            policy: crate::org::embedded().expect("org").org.webhook,
            log: Log::discard(),
        }
    }

    fn req(method: &str, path: &str, headers: &[(&str, String)], body: Body) -> Request {
        let mut b = lambda_http::http::Request::builder()
            .method(method)
            .uri(path);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(body).expect("request")
    }

    #[tokio::test]
    async fn api_gateway_requests_reach_the_same_handler() {
        let h = handler();
        assert_eq!(
            route(&h, req("GET", "/healthz", &[], Body::Empty))
                .await
                .status,
            200
        );
        assert_eq!(
            route(&h, req("GET", "/jobs/nope", &[], Body::Empty))
                .await
                .status,
            404
        );
        assert_eq!(
            route(&h, req("GET", "/other", &[], Body::Empty))
                .await
                .status,
            404
        );
        let unsigned = req(
            "POST",
            "/webhook",
            &[("x-github-event", "push".to_owned())],
            Body::Text("{}".to_owned()),
        );
        let r = route(&h, unsigned).await;
        assert_eq!((r.status, r.body), (401, json!({"error": "unauthorized"})));
        let signed = req(
            "POST",
            "/webhook/github",
            &[
                ("x-github-event", "push".to_owned()),
                ("x-hub-signature-256", sign(b"s3cret", b"{}")),
            ],
            Body::Binary(b"{}".to_vec()),
        );
        let r = route(&h, signed).await;
        assert_eq!(
            (r.status, r.body["status"].as_str()),
            (202, Some("ignored"))
        );
        let big = req(
            "POST",
            "/webhook",
            &[],
            Body::Binary(vec![b' '; MAX_BODY_BYTES + 1]),
        );
        assert_eq!(route(&h, big).await.status, 413);
        let r = route(&h, req("POST", "/webhook/gitea", &[], Body::Empty)).await;
        assert_eq!(r.status, 404);
    }

    fn merged(repository: &str, branch: &str) -> Vec<u8> {
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhook/github-pull-request-merged.json"
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture).expect("fixture")).expect("json");
        v["repository"]["full_name"] = json!(repository);
        v["repository"]["clone_url"] = json!(format!("https://github.com/{repository}.git"));
        v["pull_request"]["base"]["ref"] = json!(branch);
        serde_json::to_vec(&v).expect("encode")
    }

    async fn post(h: &Handler, body: Vec<u8>, delivery: &str) -> Reply {
        let headers = [
            ("x-github-event", "pull_request".to_owned()),
            ("x-github-delivery", delivery.to_owned()),
            ("x-hub-signature-256", sign(b"s3cret", &body)),
        ];
        route(h, req("POST", "/webhook", &headers, Body::Binary(body))).await
    }

    #[tokio::test]
    async fn a_status_is_readable_only_through_the_capability_url_of_its_202_answer() {
        let h = handler();
        let r = post(&h, merged("payments/orders-api", "main"), "d-1").await;
        assert_eq!((r.status, r.body["status"].as_str()), (202, Some("queued")));
        let url = r.body["status_url"]
            .as_str()
            .expect("status_url")
            .to_owned();
        let id = r.body["job"].as_str().expect("job").to_owned();
        let ok = route(&h, req("GET", &url, &[], Body::Empty)).await;
        assert_eq!(ok.status, 200, "{:?}", ok.body);
        assert_eq!(ok.body["state"], "queued");
        assert!(ok.body.get("capability").is_none(), "{:?}", ok.body);
        let capability = url.rsplit('/').next().expect("capability");
        assert_eq!(capability.len(), 64, "256 bits");
        for bad in [
            format!("/jobs/{id}"),
            format!("/jobs/{id}/{}", "a".repeat(64)),
            format!("/jobs/{id}/{capability}x"),
        ] {
            let r = route(&h, req("GET", &bad, &[], Body::Empty)).await;
            assert_eq!(r.status, 404, "{bad}");
        }
        // A redelivery is a duplicate, without the status URL.
        let again = post(&h, merged("payments/orders-api", "main"), "d-1").await;
        assert_eq!(again.body["status"], "duplicate");
        assert!(again.body.get("status_url").is_none(), "{:?}", again.body);
    }

    #[tokio::test]
    async fn one_delivery_id_for_two_repositories_is_two_jobs() {
        let h = handler();
        let a = post(&h, merged("payments/orders-api", "main"), "same").await;
        let b = post(&h, merged("payments/billing", "main"), "same").await;
        assert_eq!(
            (a.body["status"].as_str(), b.body["status"].as_str()),
            (Some("queued"), Some("queued"))
        );
        assert_ne!(a.body["job"], b.body["job"]);
    }

    #[tokio::test]
    async fn oversized_fields_are_refused_and_not_echoed() {
        let h = handler();
        let r = post(
            &h,
            merged("payments/orders-api", &"b".repeat(500_000)),
            "big",
        )
        .await;
        assert_eq!(r.status, 400, "{:?}", r.body);
        assert!(r.body.to_string().len() < 1024);
        let r = post(&h, merged("payments/orders-api", "main"), &"d".repeat(1000)).await;
        assert_eq!(r.status, 400, "{:?}", r.body);
    }
}
