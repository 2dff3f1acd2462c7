//! The HTTP client of the vendor APIs: JSON requests with a bearer token, bounded in time and
//! size, retried with backoff, and respectful of rate limits.
//!
//! - TLS (rustls, the system's roots) for every URL, except plain `http://` to a loopback
//!   address (tests); anything else is refused before a connection is made.
//! - Retried, up to [`Retry::attempts`] times with a doubling delay: connection errors,
//!   timeouts, 429, 500, 502, 503, 504. A `Retry-After` header (seconds) sets the delay; so does
//!   GitHub's `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (an epoch second). A wait
//!   longer than [`Retry::max_wait`] is not waited out: the call fails as transient and the job
//!   is retried later by the queue.
//! - Other 4xx answers are permanent (a wrong token, a missing repository).
//! - The token goes in the `Authorization` header only: never in a URL, an error or a log.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value as Json;

/// Largest answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// A secret token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// Will fail again (4xx other than 429, a refused URL): recorded, not retried.
    Permanent(String),
    /// May pass later (network, 5xx, rate limit): the job is retried.
    Transient(String),
}

impl ApiError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Permanent(m) | ApiError::Transient(m) => m,
        }
    }
}

/// How calls are retried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Tries of one call.
    pub attempts: u32,
    /// First delay; doubled each time.
    pub base: Duration,
    /// Longest wait for a rate limit or a `Retry-After` within one call.
    pub max_wait: Duration,
    /// Time for one request and its answer.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
        }
    }
}

/// An answer: status, a few headers, the JSON body (or `Null`).
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The `Link` header (GitHub pagination).
    pub link: Option<String>,
    /// The body as JSON (`Null` when empty or not JSON).
    pub json: Json,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client (cheap to clone).
#[derive(Clone)]
pub struct ApiClient {
    client: Client<Https, Full<Bytes>>,
    retry: Retry,
    user_agent: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClient")
    }
}

/// True when `url` may be called: `https://`, or `http://` to a loopback address.
pub fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ApiClient {
    /// A client with the system's root certificates.
    pub fn new(retry: Retry) -> Result<ApiClient, ApiError> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| {
                ApiError::Permanent(format!("cannot load the system's root certificates: {e}"))
            })?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ApiClient {
            client: Client::builder(TokioExecutor::new()).build(https),
            retry,
            user_agent: format!("pipeforge/{}", env!("CARGO_PKG_VERSION")),
        })
    }

    /// Calls `method url` with `body` (JSON) and the bearer `token`; retried as the module
    /// says. Any status in 200..300 is an answer; others are errors.
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        token: &Token,
        body: Option<&Json>,
    ) -> Result<Answer, ApiError> {
        if !url_allowed(url) {
            return Err(ApiError::Permanent(format!(
                "`{}` is not an https URL (plain http only to a loopback address)",
                super::super::event::short(url)
            )));
        }
        let shown = format!("{method} {}", shown_url(url));
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut delay = self.retry.base;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts.max(1) {
            let outcome = self.once(method, url, token, bytes.as_deref()).await;
            let wait = match outcome {
                Ok((answer, _)) if (200..300).contains(&answer.status) => return Ok(answer),
                Ok((answer, wait)) => {
                    let why = format!(
                        "{shown} answered {}{}",
                        answer.status,
                        vendor_message(&answer.json)
                    );
                    let retryable =
                        matches!(answer.status, 429 | 500 | 502 | 503 | 504) || wait.is_some();
                    if !retryable {
                        return Err(ApiError::Permanent(why));
                    }
                    last = why;
                    wait
                }
                Err(e) => {
                    last = format!("{shown} failed: {e}");
                    None
                }
            };
            if attempt == self.retry.attempts.max(1) {
                break;
            }
            let pause = wait.unwrap_or(delay);
            if pause > self.retry.max_wait {
                return Err(ApiError::Transient(format!(
                    "{last}; rate limited for {} s, longer than pipeforge waits within one job",
                    pause.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            delay = delay.saturating_mul(2).min(Duration::from_secs(8));
        }
        Err(ApiError::Transient(format!(
            "{last} (after {} attempts)",
            self.retry.attempts.max(1)
        )))
    }

    /// One request: the answer and how long the server asks to wait before another.
    async fn once(
        &self,
        method: &str,
        url: &str,
        token: &Token,
        body: Option<&[u8]>,
    ) -> Result<(Answer, Option<Duration>), String> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", format!("Bearer {}", token.0))
            .header("accept", "application/json")
            .header("user-agent", &self.user_agent);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_vec())))
            .map_err(|e| format!("bad request: {e}"))?;
        let run = async {
            let res = self.client.request(req).await.map_err(|e| format!("{e}"))?;
            let status = res.status().as_u16();
            let h = res.headers();
            let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let wait = rate_limit_wait(
                status,
                text("retry-after").as_deref(),
                text("x-ratelimit-remaining").as_deref(),
                text("x-ratelimit-reset").as_deref(),
            );
            let link = text("link");
            let body = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?
                .to_bytes();
            let json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            Ok::<_, String>((Answer { status, link, json }, wait))
        };
        tokio::time::timeout(self.retry.timeout, run)
            .await
            .map_err(|_| format!("no answer within {} s", self.retry.timeout.as_secs()))?
    }
}

/// `url` without its query (pagination only, but never shown).
fn shown_url(url: &str) -> String {
    super::super::event::short(url.split('?').next().unwrap_or(url))
}

/// The vendor's own error message, short.
fn vendor_message(j: &Json) -> String {
    let m = j
        .get("message")
        .or_else(|| j.pointer("/error/message"))
        .or_else(|| j.pointer("/errors/0/message"))
        .and_then(Json::as_str);
    m.map(|m| format!(": {}", super::super::event::short(m)))
        .unwrap_or_default()
}

/// How long a server asks to wait: `Retry-After` (seconds) on any answer, or for a GitHub
/// answer that says the rate limit is used up, until its reset time.
pub fn rate_limit_wait(
    status: u16,
    retry_after: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
) -> Option<Duration> {
    if let Some(s) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(s));
    }
    if matches!(status, 403 | 429) && remaining.map(str::trim) == Some("0") {
        let reset = reset.and_then(|v| v.trim().parse::<u64>().ok())?;
        let now = super::super::now_ms() / 1000;
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(url_allowed("https://api.github.com/repos"));
        assert!(url_allowed("http://127.0.0.1:8080/x"));
        assert!(url_allowed("http://localhost/x"));
        assert!(url_allowed("http://[::1]:9/x"));
        for bad in [
            "http://api.github.com/repos",
            "http://10.0.0.1/x",
            "http://127.0.0.1.evil.example/x",
            "ftp://x",
            "file:///etc/passwd",
        ] {
            assert!(!url_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn rate_limits_are_read_from_the_headers() {
        assert_eq!(
            rate_limit_wait(429, Some("3"), None, None),
            Some(Duration::from_secs(3))
        );
        let soon = (super::super::super::now_ms() / 1000 + 5).to_string();
        let w = rate_limit_wait(403, None, Some("0"), Some(&soon)).expect("wait");
        assert!(
            w <= Duration::from_secs(5) && w >= Duration::from_secs(3),
            "{w:?}"
        );
        assert_eq!(rate_limit_wait(403, None, Some("10"), Some(&soon)), None);
        assert_eq!(rate_limit_wait(500, None, None, None), None);
        assert_eq!(format!("{:?}", Token("s3cr3t".into())), "Token(redacted)");
    }
}
