//! Bitbucket Cloud (API 2.0): the pull request's comments and the head commit's build status.

use serde_json::{Value as Json, json};

use super::client::{ApiClient, ApiError, Token};
use super::{CommitStatus, Posted, STATUS_CONTEXT, Target, created_by, is_author, one_line, seg};
use crate::review::markdown::is_pipeforge_comment;

/// Pages of comments read when looking for pipeforge's (100 each).
const MAX_PAGES: u32 = 10;

/// Finds pipeforge's comment (its marker, written by `author`: an account UUID or id, never a
/// nickname): (id, web address).
async fn find(
    http: &ApiClient,
    pr: &str,
    token: &Token,
    author: &str,
) -> Result<Option<(u64, Option<String>)>, ApiError> {
    let mut url = format!("{pr}/comments?pagelen=100");
    for _ in 0..MAX_PAGES {
        let a = http.call("GET", &url, token, None).await?;
        for c in a
            .json
            .get("values")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let raw = c
                .pointer("/content/raw")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let by = |k: &str| c.pointer(&format!("/user/{k}")).and_then(Json::as_str);
            if is_pipeforge_comment(raw)
                && is_author(&[by("uuid"), by("account_id")], author)
                && let Some(id) = c.get("id").and_then(Json::as_u64)
            {
                let web = c
                    .pointer("/links/html/href")
                    .and_then(Json::as_str)
                    .map(str::to_owned);
                return Ok(Some((id, web)));
            }
        }
        // Only follow a `next` page on the same API.
        match a.json.get("next").and_then(Json::as_str) {
            Some(n) if n.starts_with(pr) => url = n.to_owned(),
            _ => break,
        }
    }
    Ok(None)
}

/// Creates or updates the comment, then sets the build status of the head commit.
pub async fn post(
    http: &ApiClient,
    base: &str,
    (token, author): (&Token, &str),
    target: &Target,
    body: &str,
    status: &CommitStatus,
) -> Result<Posted, ApiError> {
    let (workspace, slug) = target.parts();
    let repo = format!("{base}/repositories/{}/{}", seg(workspace), seg(slug));
    let pr = format!("{repo}/pullrequests/{}", target.number);
    let content = json!({"content": {"raw": body}});
    let (answer, created) = match find(http, &pr, token, author).await? {
        Some((id, _)) => (
            http.call("PUT", &format!("{pr}/comments/{id}"), token, Some(&content))
                .await?,
            false,
        ),
        None => (
            http.call("POST", &format!("{pr}/comments"), token, Some(&content))
                .await?,
            true,
        ),
    };
    if created {
        let by = |k: &str| {
            answer
                .json
                .pointer(&format!("/user/{k}"))
                .and_then(Json::as_str)
        };
        created_by(&[by("uuid"), by("account_id")], author, "bitbucket_cloud")?;
    }
    let id = answer
        .json
        .get("id")
        .map(|v| v.to_string())
        .unwrap_or_default();
    let web = answer
        .json
        .pointer("/links/html/href")
        .and_then(Json::as_str)
        .map(str::to_owned);
    let url = web.clone().unwrap_or_else(|| {
        format!(
            "{}/pull-requests/{}",
            target.web_url.as_deref().unwrap_or(&repo),
            target.number
        )
    });
    http.call(
        "POST",
        &format!("{repo}/commit/{}/statuses/build", seg(&target.commit)),
        token,
        Some(&json!({
            "key": STATUS_CONTEXT,
            "state": if status.success { "SUCCESSFUL" } else { "FAILED" },
            "name": STATUS_CONTEXT,
            "url": url,
            "description": one_line(&status.description, 255),
        })),
    )
    .await?;
    Ok(Posted {
        comment_id: id,
        comment_url: web,
        created,
    })
}
