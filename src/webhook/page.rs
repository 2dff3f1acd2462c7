//! The preview page (`pipeforge preview --web`, and `serve --preview-page` under `/preview/`):
//! a self-contained page (HTML, CSS and JavaScript embedded in the binary, no CDN) where a
//! manifest is pasted, uploaded or picked from the examples, and shown with its problems at
//! their lines, its pipeline as a diagram, every buildspec and stack, and its bundle as a zip.
//!
//! Untrusted input, like a webhook body: the manifest is the only input (at most
//! [`MAX_MANIFEST_BYTES`]; larger is 413), it is rendered with the server's policy, catalog and
//! templates (no file is read, no template comes from the request), on a blocking thread, at
//! most [`RENDERS_AT_ONCE`] at a time, within [`RENDER_TIMEOUT`] (503 beyond). Nothing is stored.
//! The page is served by [`super::http`] with the same limits as `serve`. Secret values never
//! reach it: manifests hold references only, and the review shows exactly those.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use tokio::sync::Semaphore;

use super::http::Limits;
use super::log::Log;
use crate::error::{Error, Result};
use crate::{Inputs, MAX_MANIFEST_BYTES, SourceFile};

/// Renders at once; more wait (within the timeout).
pub const RENDERS_AT_ONCE: usize = 2;

/// Longest a render may take, waiting for a slot included.
pub const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX: &str = include_str!("../../assets/preview/index.html");
const APP_JS: &str = include_str!("../../assets/preview/app.js");
const APP_CSS: &str = include_str!("../../assets/preview/app.css");

/// The examples offered on the page: (name, manifest).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "orders-api (python, three environments)",
        include_str!("../../examples/pipeline.yml"),
    ),
    (
        "multi-region",
        include_str!("../../golden/multi-region/pipeline.yml"),
    ),
    (
        "node-minimal",
        include_str!("../../golden/node-minimal/pipeline.yml"),
    ),
];

#[derive(Clone)]
struct Page {
    inputs: Arc<Inputs>,
    renders: Arc<Semaphore>,
}

fn json_reply(status: u16, body: &Json) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        ],
        text,
    )
        .into_response()
}

/// The manifest of a request, or the answer that refuses it.
fn manifest(body: &Bytes) -> std::result::Result<String, Response> {
    if body.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(json_reply(
            413,
            &json!({"error": format!("the manifest is over {MAX_MANIFEST_BYTES} bytes")}),
        ));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| json_reply(400, &json!({"error": "the manifest is not UTF-8 text"})))
}

/// Renders `text` on a blocking thread within the page's limits.
async fn render(page: &Page, text: String) -> std::result::Result<Result<crate::Bundle>, Response> {
    let busy = || {
        json_reply(
            503,
            &json!({"error": "the preview is busy or the manifest took too long; try again"}),
        )
    };
    let work = async {
        let _slot = page.renders.acquire().await.map_err(|_| busy())?;
        let inputs = Arc::clone(&page.inputs);
        tokio::task::spawn_blocking(move || {
            crate::generate(&SourceFile::new("pipeline.yml", text), &inputs)
        })
        .await
        .map_err(|_| busy())
    };
    tokio::time::timeout(RENDER_TIMEOUT, work)
        .await
        .map_err(|_| busy())?
}

async fn preview(State(page): State<Page>, body: Bytes) -> Response {
    let text = match manifest(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let result = match render(&page, text).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let review = crate::review::review_result("pipeline.yml", &result, None);
    let files: Vec<Json> = result
        .as_ref()
        .map(|b| {
            b.outputs
                .iter()
                .map(|(p, bytes)| json!({"path": p, "text": String::from_utf8_lossy(bytes)}))
                .collect()
        })
        .unwrap_or_default();
    json_reply(200, &json!({"review": review, "files": files}))
}

/// The rendered bundle as a zip (deterministic: sorted entries, fixed dates).
pub fn bundle_zip(outputs: &crate::outputs::Outputs) -> Result<Vec<u8>> {
    crate::publish::archive::zip_of(outputs.iter(), "the zip")
}

async fn bundle(State(page): State<Page>, body: Bytes) -> Response {
    let text = match manifest(&body) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match render(&page, text).await {
        Ok(Ok(b)) => match bundle_zip(&b.outputs) {
            Ok(zip) => (
                [
                    (header::CONTENT_TYPE, "application/zip".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}.zip\"", b.plan.pipeline.name),
                    ),
                    (
                        header::HeaderName::from_static("x-pipeline"),
                        b.plan.pipeline.name.clone(),
                    ),
                ],
                Body::from(zip),
            )
                .into_response(),
            Err(e) => json_reply(500, &json!({"error": e.to_string()})),
        },
        Ok(Err(_)) => json_reply(
            400,
            &json!({"error": "the manifest has problems; preview it to see them"}),
        ),
        Err(r) => r,
    }
}

async fn examples() -> Response {
    let list: Vec<Json> = EXAMPLES
        .iter()
        .map(|(name, text)| json!({"name": name, "text": text}))
        .collect();
    json_reply(200, &json!(list))
}

/// The page's routes (mount them at `/`, or nest them under a prefix ending in `/`).
pub fn router(inputs: Arc<Inputs>) -> Router {
    let page = Page {
        inputs,
        renders: Arc::new(Semaphore::new(RENDERS_AT_ONCE)),
    };
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/examples", get(examples))
        .route("/api/preview", post(preview))
        .route("/api/bundle.zip", post(bundle))
        // Bodies over the manifest limit are refused while being read.
        .layer(axum::extract::DefaultBodyLimit::max(
            usize::try_from(MAX_MANIFEST_BYTES).unwrap_or(usize::MAX) + 1,
        ))
        .with_state(page)
}

/// Serves the page alone on `listen` (`pipeforge preview --web`) until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    inputs: Inputs,
    limits: Limits,
    log: Log,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::other(
            format!("cannot listen on `{listen}`: {e}"),
            "choose a free address, e.g. `--listen 127.0.0.1:8081` (port 0 picks a free port)",
        )
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::other(format!("cannot read the bound address: {e}"), "retry"))?;
    log.info(
        "listening",
        json!({"address": bound.to_string(), "url": format!("http://{bound}/")}),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn(super::http::serve(
        listener,
        router(Arc::new(inputs)),
        limits,
        log.clone(),
        stop_rx,
    ));
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = http.await;
    log.info("stopped", json!({}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zip_holds_every_rendered_file() {
        let inputs = Inputs::load(None, None, None).expect("inputs");
        let b = crate::generate(&SourceFile::new("p.yml", EXAMPLES[0].1.to_owned()), &inputs)
            .expect("renders");
        let zip = bundle_zip(&b.outputs).expect("zip");
        assert_eq!(zip, bundle_zip(&b.outputs).expect("zip"), "deterministic");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("archive");
        assert_eq!(archive.len(), b.outputs.len());
        let mut plan = String::new();
        std::io::Read::read_to_string(
            &mut archive.by_name(crate::outputs::PLAN_FILE).expect("plan"),
            &mut plan,
        )
        .expect("read");
        assert_eq!(
            plan.as_bytes(),
            b.outputs.get(crate::outputs::PLAN_FILE).expect("plan")
        );
    }

    #[test]
    fn every_example_renders_with_the_embedded_policy() {
        let inputs = Inputs::load(None, None, None).expect("inputs");
        for (name, text) in EXAMPLES {
            crate::generate(&SourceFile::new(*name, (*text).to_owned()), &inputs)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
