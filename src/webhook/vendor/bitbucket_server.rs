//! Bitbucket Data Center: the pull request's comments (found through its activities; updated
//! with the version they were read at) and the head commit's build status.

use serde_json::{Value as Json, json};

use super::client::{ApiClient, ApiError, Token};
use super::{CommitStatus, Posted, STATUS_CONTEXT, Target, created_by, is_author, one_line, seg};
use crate::review::markdown::is_pipeforge_comment;

/// Pages of activities read when looking for pipeforge's comment (100 each).
const MAX_PAGES: u32 = 10;

/// Finds pipeforge's comment (its marker, written by `author`): (id, version).
async fn find(
    http: &ApiClient,
    pr: &str,
    token: &Token,
    author: &str,
) -> Result<Option<(u64, u64)>, ApiError> {
    let mut start = 0u64;
    for _ in 0..MAX_PAGES {
        let a = http
            .call(
                "GET",
                &format!("{pr}/activities?start={start}&limit=100"),
                token,
                None,
            )
            .await?;
        for v in a
            .json
            .get("values")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(c) = v.get("comment") else { continue };
            let text = c.get("text").and_then(Json::as_str).unwrap_or_default();
            let by = |k: &str| c.pointer(&format!("/author/{k}")).and_then(Json::as_str);
            if v.get("action").and_then(Json::as_str) == Some("COMMENTED")
                && is_pipeforge_comment(text)
                && is_author(&[by("name"), by("slug")], author)
                && let (Some(id), Some(version)) = (
                    c.get("id").and_then(Json::as_u64),
                    c.get("version").and_then(Json::as_u64),
                )
            {
                return Ok(Some((id, version)));
            }
        }
        if a.json.get("isLastPage").and_then(Json::as_bool) != Some(false) {
            break;
        }
        match a.json.get("nextPageStart").and_then(Json::as_u64) {
            Some(n) if n > start => start = n,
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
    let (project, slug) = target.parts();
    let pr = format!(
        "{base}/rest/api/1.0/projects/{}/repos/{}/pull-requests/{}",
        seg(project),
        seg(slug),
        target.number
    );
    let (id, created) = match find(http, &pr, token, author).await? {
        Some((id, version)) => {
            http.call(
                "PUT",
                &format!("{pr}/comments/{id}"),
                token,
                Some(&json!({"text": body, "version": version})),
            )
            .await?;
            (id, false)
        }
        None => {
            let a = http
                .call(
                    "POST",
                    &format!("{pr}/comments"),
                    token,
                    Some(&json!({"text": body})),
                )
                .await?;
            let by = |k: &str| {
                a.json
                    .pointer(&format!("/author/{k}"))
                    .and_then(Json::as_str)
            };
            created_by(&[by("name"), by("slug")], author, "bitbucket_server")?;
            (
                a.json.get("id").and_then(Json::as_u64).unwrap_or_default(),
                true,
            )
        }
    };
    let web = target
        .web_url
        .clone()
        .unwrap_or_else(|| format!("{base}/projects/{project}/repos/{slug}"));
    let url = format!(
        "{web}/pull-requests/{}/overview?commentId={id}",
        target.number
    );
    http.call(
        "POST",
        &format!(
            "{base}/rest/build-status/1.0/commits/{}",
            seg(&target.commit)
        ),
        token,
        Some(&json!({
            "state": if status.success { "SUCCESSFUL" } else { "FAILED" },
            "key": STATUS_CONTEXT,
            "name": STATUS_CONTEXT,
            "url": url,
            "description": one_line(&status.description, 255),
        })),
    )
    .await?;
    Ok(Posted {
        comment_id: id.to_string(),
        comment_url: Some(url),
        created,
    })
}
