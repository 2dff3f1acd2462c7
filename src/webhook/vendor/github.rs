//! GitHub: the pull request's issue comments and the head commit's status.

use serde_json::{Value as Json, json};

use super::client::{ApiClient, ApiError, Token};
use super::{CommitStatus, Posted, STATUS_CONTEXT, Target, created_by, is_author, one_line, seg};
use crate::review::markdown::is_pipeforge_comment;

/// Pages of comments read when looking for pipeforge's (100 each).
const MAX_PAGES: u32 = 10;

/// Finds pipeforge's comment on the pull request (its marker, written by `author`): (id, web
/// address).
async fn find(
    http: &ApiClient,
    repo: &str,
    target: &Target,
    token: &Token,
    author: &str,
) -> Result<Option<(u64, Option<String>)>, ApiError> {
    for page in 1..=MAX_PAGES {
        let url = format!(
            "{repo}/issues/{}/comments?per_page=100&page={page}",
            target.number
        );
        let a = http.call("GET", &url, token, None).await?;
        let list = a.json.as_array().cloned().unwrap_or_default();
        for c in &list {
            let body = c.get("body").and_then(Json::as_str).unwrap_or_default();
            let login = c.pointer("/user/login").and_then(Json::as_str);
            if is_pipeforge_comment(body)
                && is_author(&[login], author)
                && let Some(id) = c.get("id").and_then(Json::as_u64)
            {
                let url = c.get("html_url").and_then(Json::as_str).map(str::to_owned);
                return Ok(Some((id, url)));
            }
        }
        let more = a
            .link
            .as_deref()
            .is_some_and(|l| l.contains("rel=\"next\""));
        if list.len() < 100 && !more {
            break;
        }
    }
    Ok(None)
}

/// Creates or updates the comment, then sets the `pipeforge` status of the head commit.
pub async fn post(
    http: &ApiClient,
    base: &str,
    (token, author): (&Token, &str),
    target: &Target,
    body: &str,
    status: &CommitStatus,
) -> Result<Posted, ApiError> {
    let (owner, name) = target.parts();
    let repo = format!("{base}/repos/{}/{}", seg(owner), seg(name));
    let posted = match find(http, &repo, target, token, author).await? {
        Some((id, _)) => {
            let a = http
                .call(
                    "PATCH",
                    &format!("{repo}/issues/comments/{id}"),
                    token,
                    Some(&json!({"body": body})),
                )
                .await?;
            Posted {
                comment_id: id.to_string(),
                comment_url: a
                    .json
                    .get("html_url")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
                created: false,
            }
        }
        None => {
            let a = http
                .call(
                    "POST",
                    &format!("{repo}/issues/{}/comments", target.number),
                    token,
                    Some(&json!({"body": body})),
                )
                .await?;
            let login = a.json.pointer("/user/login").and_then(Json::as_str);
            created_by(&[login], author, "github")?;
            Posted {
                comment_id: a.json.get("id").map(|v| v.to_string()).unwrap_or_default(),
                comment_url: a
                    .json
                    .get("html_url")
                    .and_then(Json::as_str)
                    .map(str::to_owned),
                created: true,
            }
        }
    };
    let mut s = json!({
        "state": if status.success { "success" } else { "failure" },
        "context": STATUS_CONTEXT,
        "description": one_line(&status.description, 140),
    });
    if let Some(u) = &posted.comment_url {
        s["target_url"] = json!(u);
    }
    http.call(
        "POST",
        &format!("{repo}/statuses/{}", seg(&target.commit)),
        token,
        Some(&s),
    )
    .await?;
    Ok(posted)
}
