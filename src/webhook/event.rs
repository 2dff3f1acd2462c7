//! Webhook requests: the signature check over the raw body, then the vendor payloads of a merged
//! pull request (GitHub `pull_request` closed and merged, Bitbucket Data Center `pr:merged`,
//! Bitbucket Cloud `pullrequest:fulfilled`) read into one [`MergeEvent`], and of an opened or
//! updated one (GitHub `pull_request` opened, synchronize, reopened; Bitbucket Data Center
//! `pr:opened`, `pr:from_ref_updated`; Bitbucket Cloud `pullrequest:created`,
//! `pullrequest:updated`) read into one [`PullRequestEvent`], which never deploys.
//!
//! Order matters and is fixed here: the body is never parsed before its signature is checked
//! ([`verify`]), and a request that fails the check learns nothing about why.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::Sha256;

/// Largest body accepted, in bytes (1 MiB); larger bodies are refused while being read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest text taken from a payload (names, branches, URLs, commit hashes), in bytes; a longer
/// one makes the event malformed (400), so nothing huge is queued, stored or echoed.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Longest delivery id header (vendors send UUIDs), in bytes; longer is 400.
pub const MAX_DELIVERY_BYTES: usize = 128;

/// `s` as it is echoed in answers and logs: at most 64 characters (then `…`), control
/// characters escaped.
pub fn short(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// Where an event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// GitHub (github.com or GitHub Enterprise Server).
    Github,
    /// Bitbucket Data Center / Server.
    BitbucketServer,
    /// Bitbucket Cloud (bitbucket.org).
    BitbucketCloud,
}

impl Vendor {
    /// The name used in job ids, logs and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Github => "github",
            Vendor::BitbucketServer => "bitbucket-server",
            Vendor::BitbucketCloud => "bitbucket-cloud",
        }
    }

    /// The vendor of a path segment (`/webhook/github`).
    pub fn from_path(s: &str) -> Option<Vendor> {
        match s {
            "github" => Some(Vendor::Github),
            "bitbucket-server" | "bitbucket-datacenter" => Some(Vendor::BitbucketServer),
            "bitbucket-cloud" => Some(Vendor::BitbucketCloud),
            _ => None,
        }
    }
}

/// The shared secrets a signature may be made with: the current one and, during a rotation,
/// the previous ones. Never taken from a request.
#[derive(Clone, Default)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// Secrets from their texts; empty texts are dropped.
    pub fn new<I, S>(secrets: I) -> Secrets
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Secrets(
            secrets
                .into_iter()
                .map(|s| s.as_ref().to_vec())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    /// True when there is no secret (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many secrets are accepted.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Why a request is refused. The HTTP layer maps each to a status; `Unauthorized` carries no
/// detail on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Missing or wrong signature (401, no detail).
    Unauthorized,
    /// Body over [`MAX_BODY_BYTES`] (413).
    TooLarge,
    /// Signed, but not JSON or missing a field the event must have (400).
    Malformed(String),
    /// Signed and well formed, but the repository or its URL is not allowed by the org policy
    /// (403).
    Forbidden(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unauthorized => f.write_str("unauthorized"),
            Rejection::TooLarge => write!(f, "the body is larger than {MAX_BODY_BYTES} bytes"),
            Rejection::Malformed(m) => write!(f, "malformed event: {m}"),
            Rejection::Forbidden(m) => write!(f, "not allowed: {m}"),
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `sha256=<hex>` of `body` with `secret` (what vendors send; for tests and load generators).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(body);
    format!(
        "sha256={}",
        crate::outputs::hex(&mac.finalize().into_bytes())
    )
}

/// HMAC accepts keys of any length; this is never reached.
#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 accepts keys of any length")
}

/// Checks the request's signature over the raw `body` with every secret, in constant time for
/// each (and without stopping at the first match). GitHub signs in `X-Hub-Signature-256`,
/// Bitbucket (Data Center and Cloud) in `X-Hub-Signature`; both `sha256=<hex>`. Only SHA-256 is
/// accepted.
pub fn verify(headers: &HeaderMap, body: &[u8], secrets: &Secrets) -> Result<(), Rejection> {
    let sig = header(headers, "x-hub-signature-256").or_else(|| header(headers, "x-hub-signature"));
    let Some(given) = sig
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(|h| unhex(&h.to_ascii_lowercase()))
    else {
        return Err(Rejection::Unauthorized);
    };
    let mut ok = false;
    for secret in &secrets.0 {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
            continue;
        };
        mac.update(body);
        ok |= mac.verify_slice(&given).is_ok();
    }
    if ok {
        Ok(())
    } else {
        Err(Rejection::Unauthorized)
    }
}

/// A merged pull request, as the vendor describes it (nothing checked against policy yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeEvent {
    /// Who sent it.
    pub vendor: Vendor,
    /// The vendor's delivery id (`X-GitHub-Delivery`, `X-Request-Id`, `X-Request-UUID`), or the
    /// body's hash when the request has none.
    pub delivery: String,
    /// `owner/repository` (GitHub owner, Bitbucket Cloud workspace, Data Center project key).
    pub repository: String,
    /// HTTPS clone URL, when the payload gives one.
    pub clone_https: Option<String>,
    /// SSH clone URL, when the payload gives one.
    pub clone_ssh: Option<String>,
    /// The merge commit (full or, for Bitbucket Cloud, abbreviated hash).
    pub commit: String,
    /// The branch merged into.
    pub branch: String,
    /// The repository's default branch, when the payload names it.
    pub default_branch: Option<String>,
    /// The pull request number.
    pub pull_request: Option<u64>,
}

/// An opened or updated pull request, as the vendor describes it: feedback only, never a
/// deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestEvent {
    /// Who sent it.
    pub vendor: Vendor,
    /// The vendor's delivery id, or the body's hash.
    pub delivery: String,
    /// `owner/repository` of the target repository (the one cloned).
    pub repository: String,
    /// HTTPS clone URL of the target repository.
    pub clone_https: Option<String>,
    /// SSH clone URL of the target repository.
    pub clone_ssh: Option<String>,
    /// The pull request's head commit.
    pub head_commit: String,
    /// The ref of the target repository that holds the head (`refs/pull/N/head` on GitHub,
    /// `refs/pull-requests/N/from` on Bitbucket Data Center, the source branch on Bitbucket
    /// Cloud), for servers that do not serve a commit by its hash.
    pub head_ref: String,
    /// The branch the pull request targets.
    pub branch: String,
    /// The repository's default branch, when the payload names it.
    pub default_branch: Option<String>,
    /// The pull request number.
    pub number: u64,
    /// The repository's web address, for links to files.
    pub web_url: Option<String>,
    /// The GitHub App installation that sent it, if any.
    pub installation: Option<u64>,
}

/// What a verified request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A merged pull request.
    Merge(MergeEvent),
    /// An opened or updated pull request (feedback, never a deploy).
    PullRequest(PullRequestEvent),
    /// Anything else, with the reason it is ignored.
    Ignored(String),
}

fn field<'a>(doc: &'a Json, pointer: &str) -> Result<&'a Json, Rejection> {
    doc.pointer(pointer)
        .filter(|v| !v.is_null())
        .ok_or_else(|| Rejection::Malformed(format!("`{}` is missing", dotted(pointer))))
}

fn text(doc: &Json, pointer: &str) -> Result<String, Rejection> {
    match field(doc, pointer)? {
        Json::String(s) if !s.trim().is_empty() => bounded(s.trim(), pointer),
        Json::Number(n) => Ok(n.to_string()),
        _ => Err(Rejection::Malformed(format!(
            "`{}` is not a non-empty string",
            dotted(pointer)
        ))),
    }
}

fn opt_text(doc: &Json, pointer: &str) -> Result<Option<String>, Rejection> {
    doc.pointer(pointer)
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| bounded(s, pointer))
        .transpose()
}

fn bounded(s: &str, pointer: &str) -> Result<String, Rejection> {
    if s.len() > MAX_FIELD_BYTES {
        return Err(Rejection::Malformed(format!(
            "`{}` is longer than {MAX_FIELD_BYTES} bytes",
            dotted(pointer)
        )));
    }
    Ok(s.to_owned())
}

fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn commit_hash(s: String, pointer: &str) -> Result<String, Rejection> {
    let ok = (7..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(Rejection::Malformed(format!(
            "`{}` is not a commit hash",
            dotted(pointer)
        )))
    }
}

fn delivery(headers: &HeaderMap, names: &[&str], body: &[u8]) -> Result<String, Rejection> {
    let Some((name, id)) = names
        .iter()
        .find_map(|n| header(headers, n).map(|v| (*n, v)))
    else {
        return Ok(crate::outputs::sha256(body)
            .trim_start_matches("sha256:")
            .chars()
            .take(32)
            .collect());
    };
    if id.len() > MAX_DELIVERY_BYTES || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Rejection::Malformed(format!(
            "header `{name}` is not a delivery id (at most {MAX_DELIVERY_BYTES} printable characters)"
        )));
    }
    Ok(id.to_owned())
}

/// Reads a request whose signature [`verify`] accepted. `vendor` pins the vendor (from a
/// per-vendor path); otherwise it is told by the event header.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    vendor: Option<Vendor>,
) -> Result<Parsed, Rejection> {
    let github = header(headers, "x-github-event");
    let key = header(headers, "x-event-key");
    let (vendor, event) = match (vendor, github, key) {
        (Some(Vendor::Github) | None, Some(e), _) => (Vendor::Github, e),
        (Some(v @ (Vendor::BitbucketServer | Vendor::BitbucketCloud)), _, Some(k)) => (v, k),
        (None, None, Some(k)) if k.starts_with("pullrequest:") || k.starts_with("repo:push") => {
            (Vendor::BitbucketCloud, k)
        }
        (None, None, Some(k)) => (Vendor::BitbucketServer, k),
        (Some(v), _, _) => {
            return Ok(Parsed::Ignored(format!(
                "no event header for `{}` (`X-GitHub-Event` or `X-Event-Key`)",
                v.as_str()
            )));
        }
        (None, None, None) => {
            return Ok(Parsed::Ignored(
                "no event header (`X-GitHub-Event` or `X-Event-Key`)".to_owned(),
            ));
        }
    };
    let wanted: &[&str] = match vendor {
        Vendor::Github => &["pull_request"],
        Vendor::BitbucketServer => &["pr:merged", "pr:opened", "pr:from_ref_updated"],
        Vendor::BitbucketCloud => &[
            "pullrequest:fulfilled",
            "pullrequest:created",
            "pullrequest:updated",
        ],
    };
    if !wanted.contains(&event) {
        return Ok(Parsed::Ignored(format!(
            "`{}` events are not handled (only {})",
            short(event),
            wanted
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let doc: Json = serde_json::from_slice(body)
        .map_err(|e| Rejection::Malformed(format!("the body is not JSON: {e}")))?;
    if !doc.is_object() {
        return Err(Rejection::Malformed(
            "the body is not a JSON object".to_owned(),
        ));
    }
    match (vendor, event) {
        (Vendor::Github, _) => match text(&doc, "/action")?.as_str() {
            "opened" | "synchronize" | "reopened" => github_pull_request(headers, body, &doc),
            _ => github_merge(headers, body, &doc),
        },
        (Vendor::BitbucketServer, "pr:merged") => server_merge(headers, body, &doc),
        (Vendor::BitbucketServer, _) => server_pull_request(headers, body, &doc),
        (Vendor::BitbucketCloud, "pullrequest:fulfilled") => cloud_merge(headers, body, &doc),
        (Vendor::BitbucketCloud, _) => cloud_pull_request(headers, body, &doc),
    }
}

fn number(doc: &Json, pointer: &str) -> Result<u64, Rejection> {
    field(doc, pointer)?
        .as_u64()
        .ok_or_else(|| Rejection::Malformed(format!("`{}` is not a number", dotted(pointer))))
}

fn github_pull_request(headers: &HeaderMap, body: &[u8], doc: &Json) -> Result<Parsed, Rejection> {
    let number = number(doc, "/pull_request/number")?;
    Ok(Parsed::PullRequest(PullRequestEvent {
        vendor: Vendor::Github,
        delivery: delivery(headers, &["x-github-delivery"], body)?,
        repository: text(doc, "/repository/full_name")?,
        clone_https: opt_text(doc, "/repository/clone_url")?,
        clone_ssh: opt_text(doc, "/repository/ssh_url")?,
        head_commit: commit_hash(
            text(doc, "/pull_request/head/sha")?,
            "/pull_request/head/sha",
        )?,
        head_ref: format!("refs/pull/{number}/head"),
        branch: text(doc, "/pull_request/base/ref")?,
        default_branch: opt_text(doc, "/repository/default_branch")?,
        number,
        web_url: opt_text(doc, "/repository/html_url")?,
        installation: doc.pointer("/installation/id").and_then(Json::as_u64),
    }))
}

fn server_pull_request(headers: &HeaderMap, body: &[u8], doc: &Json) -> Result<Parsed, Rejection> {
    let repo = field(doc, "/pullRequest/toRef/repository")?;
    let project = text(repo, "/project/key")?;
    let slug = text(repo, "/slug")?;
    let (clone_https, clone_ssh) = server_clone_links(repo)?;
    let number = number(doc, "/pullRequest/id")?;
    let branch = match opt_text(doc, "/pullRequest/toRef/displayId")? {
        Some(b) => b,
        None => {
            let id = text(doc, "/pullRequest/toRef/id")?;
            id.strip_prefix("refs/heads/").unwrap_or(&id).to_owned()
        }
    };
    let web_url = repo
        .pointer("/links/self/0/href")
        .and_then(Json::as_str)
        .map(|h| h.trim_end_matches("/browse").to_owned())
        .map(|h| bounded(&h, "/pullRequest/toRef/repository/links/self"))
        .transpose()?;
    Ok(Parsed::PullRequest(PullRequestEvent {
        vendor: Vendor::BitbucketServer,
        delivery: delivery(headers, &["x-request-id"], body)?,
        repository: format!("{project}/{slug}"),
        clone_https,
        clone_ssh,
        head_commit: commit_hash(
            text(doc, "/pullRequest/fromRef/latestCommit")?,
            "/pullRequest/fromRef/latestCommit",
        )?,
        head_ref: format!("refs/pull-requests/{number}/from"),
        branch,
        default_branch: None,
        number,
        web_url,
        installation: None,
    }))
}

fn cloud_pull_request(headers: &HeaderMap, body: &[u8], doc: &Json) -> Result<Parsed, Rejection> {
    let full_name = text(doc, "/repository/full_name")?;
    let source = opt_text(doc, "/pullrequest/source/repository/full_name")?;
    if source
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case(&full_name))
    {
        return Ok(Parsed::Ignored(
            "the pull request comes from a fork; Bitbucket Cloud serves its commits only from the fork, which pipeforge does not clone".to_owned(),
        ));
    }
    let html = opt_text(doc, "/repository/links/html/href")?
        .unwrap_or_else(|| format!("https://bitbucket.org/{full_name}"));
    let host = html
        .strip_prefix("https://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("bitbucket.org")
        .to_owned();
    let source_branch = text(doc, "/pullrequest/source/branch/name")?;
    Ok(Parsed::PullRequest(PullRequestEvent {
        vendor: Vendor::BitbucketCloud,
        delivery: delivery(headers, &["x-request-uuid", "x-hook-uuid"], body)?,
        repository: full_name.clone(),
        clone_https: Some(format!("https://{host}/{full_name}.git")),
        clone_ssh: Some(format!("git@{host}:{full_name}.git")),
        head_commit: commit_hash(
            text(doc, "/pullrequest/source/commit/hash")?,
            "/pullrequest/source/commit/hash",
        )?,
        head_ref: format!("refs/heads/{source_branch}"),
        branch: text(doc, "/pullrequest/destination/branch/name")?,
        default_branch: opt_text(doc, "/repository/mainbranch/name")?,
        number: number(doc, "/pullrequest/id")?,
        web_url: Some(html),
        installation: None,
    }))
}

/// The https and ssh clone links of a Bitbucket Data Center repository.
fn server_clone_links(repo: &Json) -> Result<(Option<String>, Option<String>), Rejection> {
    let mut clone_https = None;
    let mut clone_ssh = None;
    for link in repo
        .pointer("/links/clone")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let href = opt_text(link, "/href")?;
        match link.get("name").and_then(Json::as_str) {
            Some("http" | "https") => clone_https = clone_https.or(href),
            Some("ssh") => clone_ssh = clone_ssh.or(href),
            _ => {}
        }
    }
    Ok((clone_https, clone_ssh))
}

fn github_merge(headers: &HeaderMap, body: &[u8], doc: &Json) -> Result<Parsed, Rejection> {
    let action = text(doc, "/action")?;
    if action != "closed" {
        return Ok(Parsed::Ignored(format!(
            "pull request action `{}` (only merges deploy)",
            short(&action)
        )));
    }
    if field(doc, "/pull_request/merged")?.as_bool() != Some(true) {
        return Ok(Parsed::Ignored(
            "the pull request was closed without merging".to_owned(),
        ));
    }
    Ok(Parsed::Merge(MergeEvent {
        vendor: Vendor::Github,
        delivery: delivery(headers, &["x-github-delivery"], body)?,
        repository: text(doc, "/repository/full_name")?,
        clone_https: opt_text(doc, "/repository/clone_url")?,
        clone_ssh: opt_text(doc, "/repository/ssh_url")?,
        commit: commit_hash(
            text(doc, "/pull_request/merge_commit_sha")?,
            "/pull_request/merge_commit_sha",
        )?,
        branch: text(doc, "/pull_request/base/ref")?,
        default_branch: opt_text(doc, "/repository/default_branch")?,
        pull_request: doc
            .pointer("/pull_request/number")
            .or_else(|| doc.pointer("/number"))
            .and_then(Json::as_u64),
    }))
}

fn server_merge(headers: &HeaderMap, body: &[u8], doc: &Json) -> Result<Parsed, Rejection> {
    let repo = field(doc, "/pullRequest/toRef/repository")?;
    let project = text(repo, "/project/key")?;
    let slug = text(repo, "/slug")?;
    let (clone_https, clone_ssh) = server_clone_links(repo)?;
    let branch = match opt_text(doc, "/pullRequest/toRef/displayId")? {
        Some(b) => b,
        None => {
            let id = text(doc, "/pullRequest/toRef/id")?;
            id.strip_prefix("refs/heads/").unwrap_or(&id).to_owned()
        }
    };
    Ok(Parsed::Merge(MergeEvent {
        vendor: Vendor::BitbucketServer,
        delivery: delivery(headers, &["x-request-id"], body)?,
        repository: format!("{project}/{slug}"),
        clone_https,
        clone_ssh,
        commit: commit_hash(
            text(doc, "/pullRequest/properties/mergeCommit/id")?,
            "/pullRequest/properties/mergeCommit/id",
        )?,
        branch,
        default_branch: None,
        pull_request: doc.pointer("/pullRequest/id").and_then(Json::as_u64),
    }))
}

fn cloud_merge(headers: &HeaderMap, body: &[u8], doc: &Json) -> Result<Parsed, Rejection> {
    let full_name = text(doc, "/repository/full_name")?;
    let html = opt_text(doc, "/repository/links/html/href")?
        .unwrap_or_else(|| format!("https://bitbucket.org/{full_name}"));
    // Webhook payloads carry no clone links: they follow from the web address.
    let host = html
        .strip_prefix("https://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("bitbucket.org")
        .to_owned();
    let state = opt_text(doc, "/pullrequest/state")?.unwrap_or_default();
    if !state.is_empty() && state != "MERGED" {
        return Ok(Parsed::Ignored(format!(
            "the pull request is `{}`, not merged",
            short(&state)
        )));
    }
    Ok(Parsed::Merge(MergeEvent {
        vendor: Vendor::BitbucketCloud,
        delivery: delivery(headers, &["x-request-uuid", "x-hook-uuid"], body)?,
        repository: full_name.clone(),
        clone_https: Some(format!("https://{host}/{full_name}.git")),
        clone_ssh: Some(format!("git@{host}:{full_name}.git")),
        commit: commit_hash(
            text(doc, "/pullrequest/merge_commit/hash")?,
            "/pullrequest/merge_commit/hash",
        )?,
        branch: text(doc, "/pullrequest/destination/branch/name")?,
        default_branch: opt_text(doc, "/repository/mainbranch/name")?,
        pull_request: doc.pointer("/pullrequest/id").and_then(Json::as_u64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/webhook/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).expect("fixture")
    }

    #[test]
    fn a_truncated_or_extended_signature_is_refused() {
        let body = br#"{"a":1}"#;
        let secrets = Secrets::new(["new-secret"]);
        let sig = sign(b"new-secret", body);
        let hex = sig.strip_prefix("sha256=").expect("prefix");
        assert_eq!(hex.len(), 64);
        assert_eq!(
            verify(&headers(&[("x-hub-signature-256", &sig)]), body, &secrets),
            Ok(())
        );
        // A prefix of the right tag (as a MAC compared on the shorter length would accept),
        // down to one byte, and the right tag with bytes added.
        for given in [
            format!("sha256={}", &hex[..62]),
            format!("sha256={}", &hex[..32]),
            format!("sha256={}", &hex[..2]),
            format!("{sig}00"),
            format!("{sig}{hex}"),
        ] {
            assert_eq!(
                verify(&headers(&[("x-hub-signature-256", &given)]), body, &secrets),
                Err(Rejection::Unauthorized),
                "{given}"
            );
        }
    }

    #[test]
    fn signatures_are_checked_with_every_secret() {
        let body = br#"{"a":1}"#;
        let secrets = Secrets::new(["old-secret", "new-secret"]);
        for secret in ["old-secret", "new-secret"] {
            let sig = sign(secret.as_bytes(), body);
            assert_eq!(
                verify(&headers(&[("x-hub-signature-256", &sig)]), body, &secrets),
                Ok(())
            );
            assert_eq!(
                verify(&headers(&[("x-hub-signature", &sig)]), body, &secrets),
                Ok(())
            );
        }
        let wrong = sign(b"other", body);
        let tampered = sign(b"new-secret", br#"{"a":2}"#);
        let upper = sign(b"new-secret", body)
            .to_ascii_uppercase()
            .replace("SHA256=", "sha256=");
        assert_eq!(
            verify(&headers(&[("x-hub-signature", &upper)]), body, &secrets),
            Ok(()),
            "hex digits may be upper case"
        );
        for bad in [
            wrong.as_str(),
            tampered.as_str(),
            "sha256=",
            "sha256=zz",
            "sha1=0123456789abcdef0123456789abcdef01234567",
            "garbage",
        ] {
            assert_eq!(
                verify(&headers(&[("x-hub-signature-256", bad)]), body, &secrets),
                Err(Rejection::Unauthorized),
                "{bad}"
            );
        }
        assert_eq!(
            verify(&headers(&[]), body, &secrets),
            Err(Rejection::Unauthorized)
        );
        let sig = sign(b"new-secret", body);
        assert_eq!(
            verify(
                &headers(&[("x-hub-signature-256", &sig)]),
                body,
                &Secrets::default()
            ),
            Err(Rejection::Unauthorized),
            "no secret configured refuses everything"
        );
    }

    #[test]
    fn github_merged_pull_request() {
        let body = fixture("github-pull-request-merged.json");
        let h = headers(&[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        let Parsed::Merge(e) = parse(&h, &body, None).expect("parses") else {
            panic!("not a merge")
        };
        assert_eq!(e.vendor, Vendor::Github);
        assert_eq!(e.delivery, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(e.repository, "payments/orders-api");
        assert_eq!(
            e.clone_https.as_deref(),
            Some("https://github.com/payments/orders-api.git")
        );
        assert_eq!(e.branch, "main");
        assert_eq!(e.default_branch.as_deref(), Some("main"));
        assert_eq!(e.commit.len(), 40);
        assert_eq!(e.pull_request, Some(42));
    }

    #[test]
    fn github_closed_without_merge_and_other_events_are_ignored() {
        let body = fixture("github-pull-request-merged.json");
        let text = String::from_utf8(body).expect("utf-8");
        let unmerged = text.replace("\"merged\": true", "\"merged\": false");
        assert_ne!(unmerged, text);
        let h = headers(&[("x-github-event", "pull_request")]);
        assert!(matches!(
            parse(&h, unmerged.as_bytes(), None),
            Ok(Parsed::Ignored(r)) if r.contains("without merging")
        ));
        let labeled = text.replace("\"action\": \"closed\"", "\"action\": \"labeled\"");
        assert!(matches!(
            parse(&h, labeled.as_bytes(), None),
            Ok(Parsed::Ignored(r)) if r.contains("`labeled`")
        ));
        let push = headers(&[("x-github-event", "push")]);
        assert!(matches!(
            parse(&push, b"{}", None),
            Ok(Parsed::Ignored(r)) if r.contains("`push` events are not handled")
        ));
        assert!(matches!(
            parse(&headers(&[]), b"{}", None),
            Ok(Parsed::Ignored(_))
        ));
    }

    #[test]
    fn bitbucket_server_merged_pull_request() {
        let body = fixture("bitbucket-server-pr-merged.json");
        let h = headers(&[
            ("x-event-key", "pr:merged"),
            ("x-request-id", "d4c3e5a6-2b8f-4a51-9f0e-2d3c4b5a6978"),
        ]);
        let Parsed::Merge(e) = parse(&h, &body, None).expect("parses") else {
            panic!("not a merge")
        };
        assert_eq!(e.vendor, Vendor::BitbucketServer);
        assert_eq!(e.repository, "PAY/orders-api");
        assert_eq!(e.branch, "master");
        assert_eq!(e.default_branch, None);
        assert_eq!(
            e.clone_https.as_deref(),
            Some("https://bitbucket.example.com/scm/pay/orders-api.git")
        );
        assert_eq!(
            e.clone_ssh.as_deref(),
            Some("ssh://git@bitbucket.example.com:7999/pay/orders-api.git")
        );
        assert_eq!(e.commit, "8d2ad38c918fa6943859fca2176c89ea98b92a21");
        assert_eq!(e.pull_request, Some(9));
        let ping = headers(&[("x-event-key", "diagnostics:ping")]);
        assert!(matches!(parse(&ping, b"{}", None), Ok(Parsed::Ignored(_))));
    }

    #[test]
    fn bitbucket_cloud_fulfilled_pull_request() {
        let body = fixture("bitbucket-cloud-pullrequest-fulfilled.json");
        let h = headers(&[
            ("x-event-key", "pullrequest:fulfilled"),
            ("x-request-uuid", "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"),
        ]);
        let Parsed::Merge(e) = parse(&h, &body, None).expect("parses") else {
            panic!("not a merge")
        };
        assert_eq!(e.vendor, Vendor::BitbucketCloud);
        assert_eq!(e.repository, "payments/orders-api");
        assert_eq!(e.branch, "main");
        assert_eq!(e.commit, "f3a1c9d2b4e6");
        assert_eq!(
            e.clone_https.as_deref(),
            Some("https://bitbucket.org/payments/orders-api.git")
        );
        assert_eq!(e.delivery, "a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d");
    }

    #[test]
    fn malformed_bodies_name_what_is_wrong() {
        let h = headers(&[("x-github-event", "pull_request")]);
        assert!(matches!(
            parse(&h, b"{not json", None),
            Err(Rejection::Malformed(m)) if m.contains("not JSON")
        ));
        assert!(matches!(
            parse(&h, b"[1]", None),
            Err(Rejection::Malformed(m)) if m.contains("not a JSON object")
        ));
        let body = br#"{"action":"closed","pull_request":{"merged":true,"merge_commit_sha":"nothex","base":{"ref":"main"}},"repository":{"full_name":"a/b"}}"#;
        assert!(matches!(
            parse(&h, body, None),
            Err(Rejection::Malformed(m)) if m.contains("pull_request.merge_commit_sha")
        ));
        let body = br#"{"action":"closed","pull_request":{"merged":true}}"#;
        assert!(matches!(
            parse(&h, body, None),
            Err(Rejection::Malformed(m)) if m.contains("is missing")
        ));
    }

    #[test]
    fn a_pinned_vendor_must_match_the_headers() {
        let h = headers(&[("x-event-key", "pr:merged")]);
        assert!(matches!(
            parse(&h, b"{}", Some(Vendor::Github)),
            Ok(Parsed::Ignored(_))
        ));
        let body = fixture("bitbucket-server-pr-merged.json");
        assert!(matches!(
            parse(&h, &body, Some(Vendor::BitbucketCloud)),
            Ok(Parsed::Ignored(r)) if r.contains("`pr:merged` events are not handled")
        ));
    }

    fn fixture_json(name: &str) -> Json {
        serde_json::from_slice(&fixture(name)).expect("fixture JSON")
    }

    fn body(doc: &Json) -> Vec<u8> {
        serde_json::to_vec(doc).expect("JSON")
    }

    fn pull_request(h: &HeaderMap, doc: &Json) -> PullRequestEvent {
        match parse(h, &body(doc), None) {
            Ok(Parsed::PullRequest(e)) => e,
            other => panic!("not a pull request: {other:?}"),
        }
    }

    #[test]
    fn github_opened_and_updated_pull_requests_are_feedback_events() {
        let mut doc = fixture_json("github-pull-request-merged.json");
        doc["installation"] = serde_json::json!({"id": 7});
        for action in ["opened", "synchronize", "reopened"] {
            doc["action"] = action.into();
            let h = headers(&[
                ("x-github-event", "pull_request"),
                ("x-github-delivery", "72d3162e"),
            ]);
            let e = pull_request(&h, &doc);
            assert_eq!(
                e,
                PullRequestEvent {
                    vendor: Vendor::Github,
                    delivery: "72d3162e".to_owned(),
                    repository: "payments/orders-api".to_owned(),
                    clone_https: Some("https://github.com/payments/orders-api.git".to_owned()),
                    clone_ssh: Some("git@github.com:payments/orders-api.git".to_owned()),
                    head_commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".to_owned(),
                    head_ref: "refs/pull/42/head".to_owned(),
                    branch: "main".to_owned(),
                    default_branch: Some("main".to_owned()),
                    number: 42,
                    web_url: Some("https://github.com/payments/orders-api".to_owned()),
                    installation: Some(7),
                },
                "{action}"
            );
        }
        doc["pull_request"]["number"] = "42".into();
        doc["action"] = "opened".into();
        let h = headers(&[("x-github-event", "pull_request")]);
        assert!(matches!(
            parse(&h, &body(&doc), None),
            Err(Rejection::Malformed(m)) if m == "`pull_request.number` is not a number"
        ));
    }

    #[test]
    fn bitbucket_server_opened_pull_requests_are_feedback_events() {
        let mut doc = fixture_json("bitbucket-server-pr-merged.json");
        let h = headers(&[("x-event-key", "pr:opened"), ("x-request-id", "d4c3e5a6")]);
        let e = pull_request(&h, &doc);
        assert_eq!(
            e,
            PullRequestEvent {
                vendor: Vendor::BitbucketServer,
                delivery: "d4c3e5a6".to_owned(),
                repository: "PAY/orders-api".to_owned(),
                clone_https: Some(
                    "https://bitbucket.example.com/scm/pay/orders-api.git".to_owned()
                ),
                clone_ssh: Some(
                    "ssh://git@bitbucket.example.com:7999/pay/orders-api.git".to_owned()
                ),
                head_commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".to_owned(),
                head_ref: "refs/pull-requests/9/from".to_owned(),
                branch: "master".to_owned(),
                default_branch: None,
                number: 9,
                web_url: Some(
                    "https://bitbucket.example.com/projects/PAY/repos/orders-api".to_owned()
                ),
                installation: None,
            }
        );
        // Without `displayId`, the branch comes from the ref; an updated pull request too.
        doc["pullRequest"]["toRef"]
            .as_object_mut()
            .expect("toRef")
            .remove("displayId");
        let h = headers(&[("x-event-key", "pr:from_ref_updated")]);
        assert_eq!(pull_request(&h, &doc).branch, "master");
    }

    #[test]
    fn bitbucket_server_clone_links_take_the_first_of_each_kind() {
        let repo = serde_json::json!({"links": {"clone": [
            {"href": "https://a.example.com/scm/p/r.git", "name": "https"},
            {"href": "ssh://git@a.example.com/p/r.git", "name": "ssh"},
            {"href": "https://b.example.com/scm/p/r.git", "name": "http"},
            {"href": "ssh://git@b.example.com/p/r.git", "name": "ssh"},
            {"href": "ftp://c.example.com/p/r.git", "name": "ftp"}
        ]}});
        assert_eq!(
            server_clone_links(&repo).expect("links"),
            (
                Some("https://a.example.com/scm/p/r.git".to_owned()),
                Some("ssh://git@a.example.com/p/r.git".to_owned())
            )
        );
        assert_eq!(
            server_clone_links(&serde_json::json!({})).expect("none"),
            (None, None)
        );
    }

    #[test]
    fn bitbucket_cloud_pull_requests_are_feedback_events_unless_from_a_fork() {
        let mut doc = fixture_json("bitbucket-cloud-pullrequest-fulfilled.json");
        for key in ["pullrequest:created", "pullrequest:updated"] {
            let h = headers(&[("x-event-key", key), ("x-hook-uuid", "a0b1c2d3")]);
            assert_eq!(
                pull_request(&h, &doc),
                PullRequestEvent {
                    vendor: Vendor::BitbucketCloud,
                    delivery: "a0b1c2d3".to_owned(),
                    repository: "payments/orders-api".to_owned(),
                    clone_https: Some("https://bitbucket.org/payments/orders-api.git".to_owned()),
                    clone_ssh: Some("git@bitbucket.org:payments/orders-api.git".to_owned()),
                    head_commit: "ec26c3e57ca3".to_owned(),
                    head_ref: "refs/heads/coverage-85".to_owned(),
                    branch: "main".to_owned(),
                    default_branch: None,
                    number: 17,
                    web_url: Some("https://bitbucket.org/payments/orders-api".to_owned()),
                    installation: None,
                },
                "{key}"
            );
        }
        // The source repository compares without case.
        doc["pullrequest"]["source"]["repository"]["full_name"] = "Payments/Orders-API".into();
        let h = headers(&[("x-event-key", "pullrequest:created")]);
        assert_eq!(pull_request(&h, &doc).repository, "payments/orders-api");
        doc["pullrequest"]["source"]["repository"]["full_name"] = "mallory/orders-api".into();
        assert!(matches!(
            parse(&h, &body(&doc), None),
            Ok(Parsed::Ignored(r)) if r.contains("comes from a fork")
        ));
    }

    #[test]
    fn bitbucket_cloud_merges_only_when_merged_or_unstated() {
        let mut doc = fixture_json("bitbucket-cloud-pullrequest-fulfilled.json");
        let h = headers(&[("x-event-key", "pullrequest:fulfilled")]);
        doc["repository"]["links"]["html"]["href"] =
            "https://bitbucket.example.org/payments/orders-api".into();
        doc["pullrequest"]["state"] = "DECLINED".into();
        assert!(matches!(
            parse(&h, &body(&doc), None),
            Ok(Parsed::Ignored(r)) if r == "the pull request is `DECLINED`, not merged"
        ));
        doc["pullrequest"]
            .as_object_mut()
            .expect("pullrequest")
            .remove("state");
        let Ok(Parsed::Merge(e)) = parse(&h, &body(&doc), None) else {
            panic!("a fulfilled pull request without a state is a merge")
        };
        assert_eq!(
            e.clone_ssh.as_deref(),
            Some("git@bitbucket.example.org:payments/orders-api.git")
        );
        assert_eq!(e.pull_request, Some(17));
    }

    #[test]
    fn bitbucket_events_without_a_pinned_vendor_are_told_by_their_key() {
        let body = fixture("bitbucket-server-pr-merged.json");
        for (key, only) in [
            ("repo:push", "`pullrequest:fulfilled`"),
            ("pullrequest:comment_created", "`pullrequest:fulfilled`"),
            ("repo:refs_changed", "`pr:merged`"),
        ] {
            let h = headers(&[("x-event-key", key)]);
            assert!(
                matches!(parse(&h, &body, None), Ok(Parsed::Ignored(r)) if r.contains(only)),
                "{key}"
            );
        }
        let h = headers(&[]);
        assert!(matches!(
            parse(&h, &body, Some(Vendor::BitbucketServer)),
            Ok(Parsed::Ignored(r)) if r.contains("for `bitbucket-server`")
        ));
    }

    #[test]
    fn fields_are_trimmed_bounded_and_typed() {
        let doc = serde_json::json!({
            "n": 7, "blank": "  ", "padded": "  main ",
            "max": "x".repeat(MAX_FIELD_BYTES), "over": "x".repeat(MAX_FIELD_BYTES + 1)
        });
        assert_eq!(text(&doc, "/n"), Ok("7".to_owned()));
        assert_eq!(text(&doc, "/padded"), Ok("main".to_owned()));
        assert_eq!(
            text(&doc, "/blank"),
            Err(Rejection::Malformed(
                "`blank` is not a non-empty string".to_owned()
            ))
        );
        assert_eq!(text(&doc, "/max").map(|s| s.len()), Ok(MAX_FIELD_BYTES));
        assert_eq!(
            text(&doc, "/over"),
            Err(Rejection::Malformed(format!(
                "`over` is longer than {MAX_FIELD_BYTES} bytes"
            )))
        );
        assert_eq!(opt_text(&doc, "/blank"), Ok(None));
        assert_eq!(opt_text(&doc, "/padded"), Ok(Some("main".to_owned())));
        assert_eq!(opt_text(&doc, "/absent"), Ok(None));
        assert!(opt_text(&doc, "/over").is_err());
        assert_eq!(
            field(&serde_json::json!({"a": {"b": null}}), "/a/b"),
            Err(Rejection::Malformed("`a.b` is missing".to_owned()))
        );
    }

    #[test]
    fn commit_hashes_are_seven_to_sixty_four_hex_digits() {
        for (given, want) in [
            ("ABCDEF1", Some("abcdef1")),
            ("abcdef", None),
            ("zzzzzzzz", None),
            ("abcdefg", None),
        ] {
            assert_eq!(
                commit_hash(given.to_owned(), "/c").ok().as_deref(),
                want,
                "{given}"
            );
        }
        assert!(commit_hash("a".repeat(64), "/c").is_ok());
        assert!(commit_hash("a".repeat(65), "/c").is_err());
    }

    #[test]
    fn delivery_ids_are_bounded_printable_or_the_bodys_hash() {
        let names = ["x-request-uuid", "x-hook-uuid"];
        let id = "d".repeat(MAX_DELIVERY_BYTES);
        assert_eq!(
            delivery(&headers(&[("x-hook-uuid", &id)]), &names, b"{}"),
            Ok(id.clone())
        );
        assert_eq!(
            delivery(
                &headers(&[("x-hook-uuid", "second"), ("x-request-uuid", "first")]),
                &names,
                b"{}"
            ),
            Ok("first".to_owned())
        );
        for bad in [format!("{id}d"), "two words".to_owned()] {
            assert!(
                matches!(
                    delivery(&headers(&[("x-hook-uuid", &bad)]), &names, b"{}"),
                    Err(Rejection::Malformed(m)) if m.contains("header `x-hook-uuid` is not a delivery id")
                ),
                "{bad}"
            );
        }
        let hashed = delivery(&headers(&[]), &names, b"{}").expect("hash");
        assert_eq!(hashed.len(), 32);
        assert!(crate::outputs::sha256(b"{}").contains(&hashed), "{hashed}");
        assert_ne!(delivery(&headers(&[]), &names, b"[]"), Ok(hashed));
    }

    #[test]
    fn blank_signature_headers_count_as_absent_and_odd_hex_is_refused() {
        let body = br#"{"a":1}"#;
        let secrets = Secrets::new(["s"]);
        let sig = sign(b"s", body);
        let h = headers(&[
            ("x-hub-signature-256", "  "),
            ("x-hub-signature", &format!(" {sig} ")),
        ]);
        assert_eq!(verify(&h, body, &secrets), Ok(()));
        let odd = format!("{sig}0");
        assert_eq!(
            verify(&headers(&[("x-hub-signature-256", &odd)]), body, &secrets),
            Err(Rejection::Unauthorized)
        );
        assert_eq!(unhex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(unhex("0a0"), None);
    }

    #[test]
    fn secrets_drop_empty_texts_and_never_show_in_debug() {
        let secrets = Secrets::new(["", "old-secret", "new-secret"]);
        assert_eq!(secrets.len(), 2);
        assert!(!secrets.is_empty());
        assert_eq!(format!("{secrets:?}"), "Secrets(2 redacted)");
        let none = Secrets::new([""]);
        assert!(none.is_empty());
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn vendors_round_trip_through_their_path_names() {
        for v in [
            Vendor::Github,
            Vendor::BitbucketServer,
            Vendor::BitbucketCloud,
        ] {
            assert_eq!(Vendor::from_path(v.as_str()), Some(v));
        }
        assert_eq!(Vendor::Github.as_str(), "github");
        assert_eq!(Vendor::BitbucketCloud.as_str(), "bitbucket-cloud");
        assert_eq!(
            Vendor::from_path("bitbucket-datacenter"),
            Some(Vendor::BitbucketServer)
        );
        assert_eq!(Vendor::from_path("gitlab"), None);
    }

    #[test]
    fn echoed_values_are_cut_and_escaped_and_rejections_say_why() {
        let exactly = "a".repeat(64);
        assert_eq!(short(&exactly), exactly);
        assert_eq!(short(&format!("{exactly}b")), format!("{exactly}…"));
        assert_eq!(short("a\nb"), "a\\nb");
        for (r, want) in [
            (Rejection::Unauthorized, "unauthorized".to_owned()),
            (
                Rejection::TooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            ),
            (
                Rejection::Malformed("x".to_owned()),
                "malformed event: x".to_owned(),
            ),
            (
                Rejection::Forbidden("y".to_owned()),
                "not allowed: y".to_owned(),
            ),
        ] {
            assert_eq!(r.to_string(), want);
        }
    }

    #[test]
    fn the_documented_limits_are_the_enforced_ones() {
        let readme = include_str!("../../README.md");
        assert_eq!(MAX_BODY_BYTES % (1 << 20), 0);
        for row in [
            format!("body over {} MiB", MAX_BODY_BYTES >> 20),
            format!(
                "a payload field over {},{:03} bytes, a delivery id over {MAX_DELIVERY_BYTES}",
                MAX_FIELD_BYTES / 1000,
                MAX_FIELD_BYTES % 1000
            ),
        ] {
            assert!(readme.contains(&row), "README.md does not say `{row}`");
        }
    }
}
