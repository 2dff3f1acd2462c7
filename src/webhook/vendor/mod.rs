//! Pull-request feedback through the vendors' REST APIs: one comment per pull request, found
//! again by its marker **and** its author (the org policy's `author`: anyone can write the
//! marker) and updated on every push, and a commit status named `pipeforge`
//! (success or failure) that branch protection can require.
//!
//! - GitHub: issue comments (`GET`/`POST /repos/{owner}/{repo}/issues/{n}/comments`,
//!   `PATCH /repos/{owner}/{repo}/issues/comments/{id}`) and commit statuses
//!   (`POST /repos/{owner}/{repo}/statuses/{sha}`).
//! - Bitbucket Data Center: pull-request comments (found through
//!   `GET .../pull-requests/{n}/activities`; `POST .../comments`, `PUT .../comments/{id}` with
//!   the comment's version) and build statuses (`POST /rest/build-status/1.0/commits/{sha}`).
//! - Bitbucket Cloud: pull-request comments (`GET`/`POST`/`PUT
//!   /repositories/{workspace}/{slug}/pullrequests/{n}/comments[/{id}]`) and commit statuses
//!   (`POST /repositories/{workspace}/{slug}/commit/{sha}/statuses/build`).
//!
//! The HTTP side (TLS, retries, rate limits) is [`client`]'s; tokens are [`token`]'s.

pub mod bitbucket_cloud;
pub mod bitbucket_server;
pub mod client;
pub mod github;
pub mod token;

use super::BoxFuture;
use super::event::Vendor;
use crate::org::OrgPullRequests;
use client::{ApiClient, ApiError, Retry, Token};
use token::TokenSource;

/// The context of every commit status pipeforge sets.
pub const STATUS_CONTEXT: &str = "pipeforge";

/// The pull request the feedback is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The vendor.
    pub vendor: Vendor,
    /// `owner/name` (Bitbucket Data Center: `PROJECT/slug`).
    pub repository: String,
    /// The pull request number.
    pub number: u64,
    /// The head commit (full hash).
    pub commit: String,
    /// The GitHub App installation of the event.
    pub installation: Option<u64>,
    /// The repository's web address.
    pub web_url: Option<String>,
}

impl Target {
    /// `(owner, name)`.
    pub fn parts(&self) -> (&str, &str) {
        self.repository
            .split_once('/')
            .unwrap_or((self.repository.as_str(), ""))
    }
}

/// The commit status to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// Success (a valid manifest) or failure.
    pub success: bool,
    /// One line (vendors cut it: GitHub at 140 characters).
    pub description: String,
}

/// What was posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// The comment's id.
    pub comment_id: String,
    /// The comment's web address, when the vendor gives one.
    pub comment_url: Option<String>,
    /// True when the comment was created, false when an earlier one was updated.
    pub created: bool,
}

/// Posts feedback on a pull request.
pub trait Feedback: Send + Sync {
    /// Creates or updates the comment `body` and sets the commit status.
    fn post<'a>(
        &'a self,
        target: &'a Target,
        body: &'a str,
        status: &'a CommitStatus,
    ) -> BoxFuture<'a, Result<Posted, ApiError>>;
}

/// The vendor APIs of the org policy.
pub struct VendorFeedback {
    http: ApiClient,
    /// (vendor, API base, comment author, tokens).
    apis: Vec<(Vendor, String, String, TokenSource)>,
}

impl std::fmt::Debug for VendorFeedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VendorFeedback")
    }
}

impl VendorFeedback {
    /// The feedback of `settings`, reading tokens from Secrets Manager through `secrets`.
    pub fn new(
        settings: &OrgPullRequests,
        secrets: Option<aws_sdk_secretsmanager::Client>,
        retry: Retry,
    ) -> Result<VendorFeedback, ApiError> {
        let mut apis = Vec::new();
        for (vendor, api) in [
            (Vendor::Github, &settings.github),
            (Vendor::BitbucketServer, &settings.bitbucket_server),
            (Vendor::BitbucketCloud, &settings.bitbucket_cloud),
        ] {
            if let Some(api) = api {
                let base = api.api_url.trim_end_matches('/').to_owned();
                apis.push((
                    vendor,
                    base,
                    api.author.clone(),
                    TokenSource::new(api.clone(), secrets.clone()),
                ));
            }
        }
        Ok(VendorFeedback {
            http: ApiClient::new(retry)?,
            apis,
        })
    }

    async fn run(
        &self,
        target: &Target,
        body: &str,
        status: &CommitStatus,
    ) -> Result<Posted, ApiError> {
        let Some((_, base, author, tokens)) = self.apis.iter().find(|(v, ..)| *v == target.vendor)
        else {
            return Err(ApiError::Permanent(format!(
                "no `webhook.pull_requests.{}` API in the org policy",
                target.vendor.as_str().replace('-', "_")
            )));
        };
        let token: Token = tokens.token(&self.http, target.installation).await?;
        let (http, who) = (&self.http, (&token, author.as_str()));
        match target.vendor {
            Vendor::Github => github::post(http, base, who, target, body, status).await,
            Vendor::BitbucketServer => {
                bitbucket_server::post(http, base, who, target, body, status).await
            }
            Vendor::BitbucketCloud => {
                bitbucket_cloud::post(http, base, who, target, body, status).await
            }
        }
    }
}

impl Feedback for VendorFeedback {
    fn post<'a>(
        &'a self,
        target: &'a Target,
        body: &'a str,
        status: &'a CommitStatus,
    ) -> BoxFuture<'a, Result<Posted, ApiError>> {
        Box::pin(self.run(target, body, status))
    }
}

/// True when one of a comment's author fields is `author` (ASCII case-insensitively: logins,
/// user names and UUIDs are). A comment without author fields is nobody's.
pub fn is_author(fields: &[Option<&str>], author: &str) -> bool {
    !author.is_empty()
        && fields
            .iter()
            .flatten()
            .any(|f| f.eq_ignore_ascii_case(author))
}

/// Checks that a comment pipeforge just created is `author`'s (by the answer's author `fields`,
/// when it names any): otherwise pipeforge would never find it again and would add one on every
/// push. `setting` names the vendor's settings (`github`, `bitbucket_server`…).
pub fn created_by(fields: &[Option<&str>], author: &str, setting: &str) -> Result<(), ApiError> {
    let Some(who) = fields.iter().flatten().next() else {
        return Ok(());
    };
    if is_author(fields, author) {
        return Ok(());
    }
    Err(ApiError::Permanent(format!(
        "the comment was posted as `{who}`, but `webhook.pull_requests.{setting}.author` is `{author}`; set `author` to the account the token comments as, or every push adds a comment"
    )))
}

/// `s` cut to `max` characters (with `…`).
pub fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        return line.to_owned();
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `segment` for a URL path: only plain characters pass, anything else is percent-encoded.
pub fn seg(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
