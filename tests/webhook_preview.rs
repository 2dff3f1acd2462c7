//! End-to-end tests of pull-request feedback: the real `pipeforge serve` binary on loopback,
//! signed pull-request events for a real git origin, tokens in the local AWS server's Secrets
//! Manager, and a local HTTP server (axum on loopback) that speaks the documented request and
//! answer shapes of the GitHub, Bitbucket Data Center and Bitbucket Cloud endpoints pipeforge
//! uses, and records what pipeforge sends. No network.

mod webhook_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use webhook_support::*;

const WAIT: Duration = Duration::from_secs(120);

/// One request the fake vendor server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    auth: String,
    body: Json,
}

#[derive(Default)]
struct VendorState {
    seen: Vec<Seen>,
    /// Comment id → (text, version).
    comments: BTreeMap<u64, (String, u64)>,
    /// Comment id → its author, with every vendor's user fields (GitHub `login`, Bitbucket
    /// Data Center `name` and `slug`, Bitbucket Cloud `uuid`, `account_id` and `nickname`).
    authors: BTreeMap<u64, Json>,
    next_id: u64,
    /// Answers to give before the real ones: (path contains, status, Retry-After).
    faults: Vec<(String, u16, Option<u64>)>,
}

#[derive(Clone, Default)]
struct Vendor(Arc<Mutex<VendorState>>);

impl Vendor {
    fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("lock").seen.clone()
    }
    fn comments(&self) -> BTreeMap<u64, (String, u64)> {
        self.0.lock().expect("lock").comments.clone()
    }
    fn fault(&self, path: &str, status: u16, retry_after: Option<u64>) {
        self.0
            .lock()
            .expect("lock")
            .faults
            .push((path.to_owned(), status, retry_after));
    }
    /// A comment someone else wrote; its id.
    fn plant(&self, text: &str, user: Json) -> u64 {
        let mut st = self.0.lock().expect("lock");
        st.next_id += 1;
        let id = st.next_id;
        st.comments.insert(id, (text.to_owned(), 0));
        st.authors.insert(id, user);
        id
    }
    fn requests(&self, method: &str, path_part: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == method && s.path.contains(path_part))
            .collect()
    }
}

/// The Bitbucket Cloud UUID of the account pipeforge's token belongs to.
const BOT_UUID: &str = "{0b0b0b0b-0000-4000-8000-000000000b07}";

/// The account the tokens of the fake vendor belong to (every comment pipeforge creates).
fn bot() -> Json {
    json!({"login": "pipeforge-bot", "name": "pipeforge-bot", "slug": "pipeforge-bot",
           "uuid": BOT_UUID, "account_id": "557058:b07", "nickname": "pipeforge-bot"})
}

/// Another account: the pull request's author, who takes pipeforge's Bitbucket Cloud nickname
/// (nicknames are not unique there).
fn mallory() -> Json {
    json!({"login": "mallory", "name": "mallory", "slug": "mallory",
           "uuid": "{6d6d6d6d-0000-4000-8000-00000000da11}", "account_id": "557058:da11",
           "nickname": "pipeforge-bot"})
}

fn reply(status: u16, body: Json) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The vendor endpoints, by path shape.
async fn vendor_api(
    axum::extract::State(v): axum::extract::State<Vendor>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Bitbucket Cloud's API lives under `/2.0`.
    let path = uri.path().trim_start_matches("/2.0").to_owned();
    let mut st = v.0.lock().expect("lock");
    st.seen.push(Seen {
        method: method.to_string(),
        path: uri.to_string(),
        auth: headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Json::Null),
    });
    if let Some(i) = st
        .faults
        .iter()
        .position(|(p, _, _)| path.contains(p.as_str()))
    {
        let (_, status, after) = st.faults.remove(i);
        let mut r = reply(status, json!({"message": "injected"}));
        if let Some(a) = after {
            r.headers_mut()
                .insert("retry-after", a.to_string().parse().expect("header"));
        }
        return r;
    }
    let input: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = method.as_str();
    match (m, parts.as_slice()) {
        // GitHub
        ("GET", ["repos", _, _, "issues", _, "comments"]) => {
            let list: Vec<Json> = st
                .comments
                .iter()
                .map(|(id, (t, _))| json!({"id": id, "body": t, "user": st.authors[id], "html_url": format!("https://github.com/c/{id}")}))
                .collect();
            reply(200, json!(list))
        }
        ("POST", ["repos", _, _, "issues", _, "comments"]) => {
            st.next_id += 1;
            let id = st.next_id;
            let text = input["body"].as_str().unwrap_or_default().to_owned();
            st.comments.insert(id, (text.clone(), 0));
            st.authors.insert(id, bot());
            reply(
                201,
                json!({"id": id, "body": text, "user": bot(), "html_url": format!("https://github.com/c/{id}")}),
            )
        }
        ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or_default();
            let text = input["body"].as_str().unwrap_or_default().to_owned();
            match st.comments.get_mut(&id) {
                Some(c) => {
                    c.0 = text.clone();
                    reply(
                        200,
                        json!({"id": id, "body": text, "html_url": format!("https://github.com/c/{id}")}),
                    )
                }
                None => reply(404, json!({"message": "Not Found"})),
            }
        }
        ("POST", ["repos", _, _, "statuses", _]) => {
            reply(201, json!({"id": 1, "state": input["state"]}))
        }
        // Bitbucket Data Center
        (
            "GET",
            [
                "rest",
                "api",
                "1.0",
                "projects",
                _,
                "repos",
                _,
                "pull-requests",
                _,
                "activities",
            ],
        ) => {
            let values: Vec<Json> = st
                .comments
                .iter()
                .map(|(id, (t, v))| json!({"id": id * 10, "action": "COMMENTED", "commentAction": "ADDED", "comment": {"id": id, "version": v, "text": t, "author": st.authors[id]}}))
                .collect();
            reply(
                200,
                json!({"values": values, "size": values.len(), "isLastPage": true, "start": 0, "limit": 100}),
            )
        }
        (
            "POST",
            [
                "rest",
                "api",
                "1.0",
                "projects",
                _,
                "repos",
                _,
                "pull-requests",
                _,
                "comments",
            ],
        ) => {
            st.next_id += 1;
            let id = st.next_id;
            let text = input["text"].as_str().unwrap_or_default().to_owned();
            st.comments.insert(id, (text.clone(), 0));
            st.authors.insert(id, bot());
            reply(
                201,
                json!({"id": id, "version": 0, "text": text, "author": bot()}),
            )
        }
        (
            "PUT",
            [
                "rest",
                "api",
                "1.0",
                "projects",
                _,
                "repos",
                _,
                "pull-requests",
                _,
                "comments",
                id,
            ],
        ) => {
            let id: u64 = id.parse().unwrap_or_default();
            let text = input["text"].as_str().unwrap_or_default().to_owned();
            let version = input["version"].as_u64();
            match st.comments.get_mut(&id) {
                Some(c) if Some(c.1) == version => {
                    c.0 = text.clone();
                    c.1 += 1;
                    reply(200, json!({"id": id, "version": c.1, "text": text}))
                }
                Some(_) => reply(
                    409,
                    json!({"errors": [{"message": "the comment was changed"}]}),
                ),
                None => reply(404, json!({"errors": [{"message": "no such comment"}]})),
            }
        }
        ("POST", ["rest", "build-status", "1.0", "commits", _]) => {
            (StatusCode::NO_CONTENT, "").into_response()
        }
        // Bitbucket Cloud
        ("GET", ["repositories", _, _, "pullrequests", _, "comments"]) => {
            let values: Vec<Json> = st
                .comments
                .iter()
                .map(|(id, (t, _))| json!({"id": id, "content": {"raw": t}, "user": st.authors[id], "links": {"html": {"href": format!("https://bitbucket.org/c/{id}")}}}))
                .collect();
            reply(200, json!({"values": values, "pagelen": 100, "page": 1}))
        }
        ("POST", ["repositories", _, _, "pullrequests", _, "comments"]) => {
            st.next_id += 1;
            let id = st.next_id;
            let text = input["content"]["raw"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            st.comments.insert(id, (text.clone(), 0));
            st.authors.insert(id, bot());
            reply(
                201,
                json!({"id": id, "content": {"raw": text}, "user": bot(), "links": {"html": {"href": format!("https://bitbucket.org/c/{id}")}}}),
            )
        }
        ("PUT", ["repositories", _, _, "pullrequests", _, "comments", id]) => {
            let id: u64 = id.parse().unwrap_or_default();
            let text = input["content"]["raw"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match st.comments.get_mut(&id) {
                Some(c) => {
                    c.0 = text.clone();
                    reply(
                        200,
                        json!({"id": id, "content": {"raw": text}, "links": {"html": {"href": format!("https://bitbucket.org/c/{id}")}}}),
                    )
                }
                None => reply(
                    404,
                    json!({"type": "error", "error": {"message": "no such comment"}}),
                ),
            }
        }
        ("POST", ["repositories", _, _, "commit", _, "statuses", "build"]) => {
            reply(201, json!({"key": input["key"], "state": input["state"]}))
        }
        _ => reply(404, json!({"message": format!("no route {m} {path}")})),
    }
}

/// Starts the fake vendor API on loopback: its state and its base URL.
fn start_vendor() -> (Vendor, String) {
    let v = Vendor::default();
    let app = axum::Router::new()
        .fallback(vendor_api)
        .with_state(v.clone());
    let listener = aws_runtime()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    aws_runtime().spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (v, format!("http://{addr}"))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Commits `manifest` on `branch` and pushes it to the origin, also as `extra_ref` (the ref
/// a vendor keeps for the pull request); the head commit.
fn push_head(repo: &Repo, branch: &str, manifest: &str, extra_ref: Option<&str>) -> String {
    let w = &repo.work;
    git(w, &["checkout", "-q", "-B", branch]);
    std::fs::write(w.join("pipeline.yml"), manifest).expect("write");
    std::fs::write(w.join("change.txt"), format!("{branch} {}", manifest.len())).expect("write");
    git(w, &["add", "-A"]);
    git(w, &["commit", "-q", "-m", "feat: change the pipeline"]);
    git(w, &["push", "-q", "-f", "origin", branch]);
    if let Some(r) = extra_ref {
        git(w, &["push", "-q", "-f", "origin", &format!("HEAD:{r}")]);
    }
    let head = git(w, &["rev-parse", "HEAD"]);
    git(w, &["checkout", "-q", "main"]);
    head
}

/// A token in the local Secrets Manager; its name.
fn token_secret(value: &str) -> String {
    let sm = aws_sdk_secretsmanager::Client::new(&aws_config());
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("pf/token-{}-{n}", std::process::id());
    aws_runtime().block_on(async {
        sm.create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .expect("create secret");
    });
    name
}

struct World {
    dir: tempfile::TempDir,
    base: PathBuf,
    org: PathBuf,
}

/// The test org policy with pull-request feedback on, every vendor API at `api`.
fn world(api: &str, secret: &str) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("git");
    std::fs::create_dir_all(&base).expect("mkdir");
    let org = org_file(dir.path(), &base);
    let text = std::fs::read_to_string(&org).expect("org");
    let edited = text.replace(
        "  pull_requests:\n    enabled: false\n",
        &format!(
            "  pull_requests:\n    enabled: true\n    github: {{api_url: \"{api}\", author: pipeforge-bot, token_secret: \"{secret}\"}}\n    bitbucket_server: {{api_url: \"{api}\", author: pipeforge-bot, token_secret: \"{secret}\"}}\n    bitbucket_cloud: {{api_url: \"{api}/2.0\", author: \"{BOT_UUID}\", token_secret: \"{secret}\"}}\n"
        ),
    );
    assert_ne!(edited, text, "examples/org.yaml changed; update the tests");
    std::fs::write(&org, edited).expect("write org");
    World { dir, base, org }
}

impl World {
    fn serve(&self) -> Serve {
        let args = [
            "--org".to_owned(),
            self.org.display().to_string(),
            "--work-dir".to_owned(),
            self.dir.path().join("work").display().to_string(),
            "--local-queue".to_owned(),
            "--render-only".to_owned(),
            "--retry-delay-ms".to_owned(),
            "200".to_owned(),
        ];
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Serve::start(&refs, local_aws())
    }
}

fn github_pr(repo: &Repo, action: &str, number: u64, head: &str) -> Vec<u8> {
    let mut v: Json =
        serde_json::from_slice(&github_payload(repo, head, "main", "main")).expect("json");
    v["action"] = json!(action);
    v["number"] = json!(number);
    v["pull_request"]["number"] = json!(number);
    v["pull_request"]["merged"] = json!(false);
    v["pull_request"]["state"] = json!("open");
    v["pull_request"]["head"]["sha"] = json!(head);
    v["repository"]["html_url"] = json!(format!("https://github.com/{}", repo.repository));
    serde_json::to_vec(&v).expect("encode")
}

fn post(s: &Serve, path: &str, headers: &[(&str, String)], body: &[u8]) -> Answer {
    let mut h: Vec<(&str, String)> = headers.to_vec();
    h.push(("X-Hub-Signature-256", sign(body)));
    h.push(("Content-Type", "application/json".to_owned()));
    request(s.addr, "POST", path, &h, body)
}

fn example() -> String {
    example_manifest()
}

#[test]
fn a_github_pull_request_gets_one_comment_updated_on_every_push_and_a_status() {
    let (vendor, api) = start_vendor();
    let token = "ghp-test-token-do-not-leak-1234567890";
    let w = world(&api, &token_secret(token));
    let repo = Repo::new(&w.base, "payments", "orders-api", &example());
    let s = w.serve();
    // A merge deploys (render-only here) the first pipeline.
    let merged = repo.merge("first", "main", &example());
    let q = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &merged, "main", "main"),
        "m-1",
    ));
    assert_eq!(s.wait_final(&q.url, WAIT)["state"], "succeeded");

    // The pull request changes a variable: one comment, the diff against the deployed bundle.
    let changed = example().replace("LOG_LEVEL: info", "LOG_LEVEL: debug");
    let head1 = push_head(&repo, "feature/debug", &changed, Some("refs/pull/7/head"));
    let a = post(
        &s,
        "/webhook/github",
        &[
            ("X-GitHub-Event", "pull_request".to_owned()),
            ("X-GitHub-Delivery", "pr-1".to_owned()),
        ],
        &github_pr(&repo, "opened", 7, &head1),
    );
    let q1 = queued_job(&a);
    let st = s.wait_final(&q1.url, WAIT);
    assert_eq!(st["state"], "succeeded", "{st:#}");
    assert_eq!(st["preview"]["comment"], "created", "{st:#}");
    assert_eq!(st["preview"]["verdict"], "valid");
    assert_eq!(st["preview"]["baseline"], "deployed");
    let comments = vendor.comments();
    assert_eq!(comments.len(), 1);
    let (body, _) = comments.values().next().expect("comment");
    assert!(
        body.starts_with("<!-- pipeforge:pull-request-preview -->"),
        "{body}"
    );
    assert!(
        body.contains("compared with the deployed pipeline"),
        "{body}"
    );
    assert!(body.contains("+") && body.contains("debug"), "{body}");
    assert!(body.contains("<details>"), "diffs are collapsed: {body}");
    assert!(body.contains("approval"), "approvals are shown: {body}");
    assert!(body.chars().count() <= 65_536);
    let statuses = vendor.requests("POST", "/statuses/");
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].path.ends_with(&head1), "{:?}", statuses[0]);
    assert_eq!(statuses[0].body["state"], "success");
    assert_eq!(statuses[0].body["context"], "pipeforge");
    assert!(
        vendor
            .seen()
            .iter()
            .all(|r| r.auth == format!("Bearer {token}"))
    );

    // The next push makes the manifest invalid: the same comment is updated, the status fails.
    let broken = example().replace("approval: true", "approval: false");
    let line = broken
        .lines()
        .position(|l| l.contains("approval: false"))
        .expect("line")
        + 1;
    let head2 = push_head(&repo, "feature/debug", &broken, Some("refs/pull/7/head"));
    let q2 = queued_job(&post(
        &s,
        "/webhook/github",
        &[
            ("X-GitHub-Event", "pull_request".to_owned()),
            ("X-GitHub-Delivery", "pr-2".to_owned()),
        ],
        &github_pr(&repo, "synchronize", 7, &head2),
    ));
    let st = s.wait_final(&q2.url, WAIT);
    assert_eq!(st["state"], "succeeded", "{st:#}");
    assert_eq!(st["preview"]["comment"], "updated");
    assert_eq!(st["preview"]["verdict"], "invalid");
    let comments = vendor.comments();
    assert_eq!(comments.len(), 1, "one comment, updated");
    let body = &comments.values().next().expect("comment").0;
    assert!(body.contains("❌"), "{body}");
    assert!(
        body.contains(&format!(
            "https://github.com/payments/orders-api/blob/{head2}/pipeline.yml#L{line}"
        )),
        "{body}"
    );
    assert_eq!(vendor.requests("POST", "/issues/7/comments").len(), 1);
    assert_eq!(vendor.requests("PATCH", "/issues/comments/").len(), 1);
    let statuses = vendor.requests("POST", "/statuses/");
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[1].body["state"], "failure");

    // Never a deploy: only the merge job ran the deployer, and the token is nowhere.
    assert_eq!(s.events("job started").len(), 1, "{:#?}", s.logs());
    assert_eq!(s.events("pull request job started").len(), 2);
    let logs = serde_json::to_string(&s.logs()).expect("logs");
    assert!(!logs.contains(token));
    for url in [&q1.url, &q2.url] {
        assert!(!s.status(url).body.to_string().contains(token));
    }
    for (b, _) in vendor.comments().values() {
        assert!(!b.contains(token) && !b.contains(SECRET));
    }
}

fn server_pr(repo: &Repo, key: &str, number: u64, head: &str) -> Vec<u8> {
    let mut v: Json =
        serde_json::from_slice(&bitbucket_server_payload(repo, head, "main")).expect("json");
    v["eventKey"] = json!(key);
    v["pullRequest"]["id"] = json!(number);
    v["pullRequest"]["fromRef"]["latestCommit"] = json!(head);
    v["pullRequest"]["toRef"]["repository"]["links"]["self"] =
        json!([{"href": "https://bitbucket.example.com/projects/PAYMENTS/repos/billing/browse"}]);
    serde_json::to_vec(&v).expect("encode")
}

fn cloud_pr(repo: &Repo, number: u64, head: &str, fork: bool) -> Vec<u8> {
    let v = json!({
        "repository": {"full_name": repo.repository, "links": {"html": {"href": format!("https://bitbucket.org/{}", repo.repository)}}},
        "pullrequest": {
            "id": number,
            "state": "OPEN",
            "source": {"branch": {"name": "feature/x"}, "commit": {"hash": &head[..12]},
                       "repository": {"full_name": if fork { "someone/fork".to_owned() } else { repo.repository.clone() }}},
            "destination": {"branch": {"name": "main"}, "commit": {"hash": "0123456789ab"}},
        },
    });
    serde_json::to_vec(&v).expect("encode")
}

#[test]
fn bitbucket_pull_requests_get_a_comment_and_a_build_status_with_retries() {
    let (vendor, api) = start_vendor();
    let token = "bb-test-token-never-logged-0987654321";
    let w = world(&api, &token_secret(token));
    let s = w.serve();

    // Data Center: nothing deployed, so the target branch is the baseline; a 502 is retried.
    let repo = Repo::new(&w.base, "PAYMENTS", "billing", &example());
    let head = push_head(
        &repo,
        "feature/x",
        &example().replace("LOG_LEVEL: info", "LOG_LEVEL: warn"),
        Some("refs/pull-requests/3/from"),
    );
    vendor.fault("/pull-requests/3/comments", 502, None);
    let headers = |key: &str, id: &str| {
        vec![
            ("X-Event-Key", key.to_owned()),
            ("X-Request-Id", id.to_owned()),
        ]
    };
    let q = queued_job(&post(
        &s,
        "/webhook/bitbucket-server",
        &headers("pr:opened", "dc-1"),
        &server_pr(&repo, "pr:opened", 3, &head),
    ));
    let st = s.wait_final(&q.url, WAIT);
    assert_eq!(st["state"], "succeeded", "{st:#}");
    assert_eq!(st["preview"]["baseline"], "target-branch");
    assert_eq!(
        vendor.requests("POST", "/pull-requests/3/comments").len(),
        2,
        "retried once"
    );
    let c = vendor.comments();
    assert_eq!(c.len(), 1);
    let body = &c.values().next().expect("comment").0;
    assert!(
        body.starts_with("[//]: # (pipeforge:pull-request-preview)"),
        "{body}"
    );
    assert!(body.contains("compared with the target branch"), "{body}");
    assert!(body.chars().count() <= 32_768);
    let builds = vendor.requests("POST", "/rest/build-status/1.0/commits/");
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].body["state"], "SUCCESSFUL");
    assert_eq!(builds[0].body["key"], "pipeforge");
    assert!(builds[0].path.ends_with(&head));
    // An update (new push) puts the comment with the version it read.
    let head2 = push_head(
        &repo,
        "feature/x",
        &example().replace("LOG_LEVEL: info", "LOG_LEVEL: error"),
        Some("refs/pull-requests/3/from"),
    );
    let q = queued_job(&post(
        &s,
        "/webhook/bitbucket-server",
        &headers("pr:from_ref_updated", "dc-2"),
        &server_pr(&repo, "pr:from_ref_updated", 3, &head2),
    ));
    assert_eq!(s.wait_final(&q.url, WAIT)["preview"]["comment"], "updated");
    let puts = vendor.requests("PUT", "/pull-requests/3/comments/");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].body["version"], 0);
    assert_eq!(vendor.comments().len(), 1);

    // Cloud: a pull request from a fork is ignored (its commits are only in the fork).
    // (Cloud payloads carry no clone link: the clone URL follows from bitbucket.org, which a
    // test cannot reach; the client test below covers Cloud's endpoints.)
    let cloud_repo = Repo::new(&w.base, "payments", "cloud-app", &example());
    let head = push_head(&cloud_repo, "feature/x", &example(), None);
    let ch = |id: &str| {
        vec![
            ("X-Event-Key", "pullrequest:created".to_owned()),
            ("X-Request-UUID", id.to_owned()),
        ]
    };
    let fork = post(
        &s,
        "/webhook/bitbucket-cloud",
        &ch("cl-2"),
        &cloud_pr(&cloud_repo, 6, &head, true),
    );
    assert_eq!(fork.status, 202);
    assert_eq!(fork.body["status"], "ignored");
    assert!(
        fork.body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fork")
    );

    let logs = serde_json::to_string(&s.logs()).expect("logs");
    assert!(!logs.contains(token));
}

/// Bitbucket Cloud's endpoints through the real client: created once, then updated; a
/// rate-limited status (429 with `Retry-After`) is waited out; a refused token is a
/// permanent error that does not show the token.
#[test]
fn bitbucket_cloud_feedback_through_the_real_client() {
    use pipeforge::org::{OrgPullRequests, OrgVendorApi};
    use pipeforge::webhook::event::Vendor as V;
    use pipeforge::webhook::vendor::client::{ApiError, Retry};
    use pipeforge::webhook::vendor::{CommitStatus, Feedback, Target, VendorFeedback};
    let (vendor, api) = start_vendor();
    let token = "bbc-token-secret-value-42";
    let secret = token_secret(token);
    let settings = OrgPullRequests {
        enabled: true,
        bitbucket_cloud: Some(OrgVendorApi {
            api_url: format!("{api}/2.0"),
            author: BOT_UUID.to_owned(),
            token_secret: Some(secret),
            app_id: None,
            app_key_secret: None,
            token_key: None,
        }),
        ..OrgPullRequests::default()
    };
    let sm = aws_sdk_secretsmanager::Client::new(&aws_config());
    let fb = VendorFeedback::new(
        &settings,
        Some(sm),
        Retry {
            base: Duration::from_millis(50),
            ..Retry::default()
        },
    )
    .expect("client");
    let target = Target {
        vendor: V::BitbucketCloud,
        repository: "payments/cloud-app".to_owned(),
        number: 9,
        commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        installation: None,
        web_url: Some("https://bitbucket.org/payments/cloud-app".to_owned()),
    };
    let ok = CommitStatus {
        success: true,
        description: "pipeline `x` is valid".to_owned(),
    };
    vendor.fault("/statuses/build", 429, Some(1));
    let first = aws_runtime()
        .block_on(fb.post(
            &target,
            "[//]: # (pipeforge:pull-request-preview)\nfirst",
            &ok,
        ))
        .expect("posted");
    assert!(first.created);
    let second = aws_runtime()
        .block_on(fb.post(
            &target,
            "[//]: # (pipeforge:pull-request-preview)\nsecond",
            &ok,
        ))
        .expect("posted");
    assert!(!second.created);
    assert_eq!(first.comment_id, second.comment_id);
    let c = vendor.comments();
    assert_eq!(c.len(), 1);
    assert!(c.values().next().expect("c").0.ends_with("second"));
    let posts = vendor.requests(
        "POST",
        "/2.0/repositories/payments/cloud-app/pullrequests/9/comments",
    );
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].body["content"]["raw"],
        "[//]: # (pipeforge:pull-request-preview)\nfirst"
    );
    let statuses = vendor.requests(
        "POST",
        "/commit/0123456789abcdef0123456789abcdef01234567/statuses/build",
    );
    assert_eq!(statuses.len(), 3, "429 once, then two statuses");
    assert_eq!(statuses[2].body["state"], "SUCCESSFUL");
    assert_eq!(statuses[2].body["key"], "pipeforge");
    assert!(
        statuses[2].body["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://")
    );
    // A refused token: permanent, and the error does not carry it.
    vendor.fault("/pullrequests/9/comments", 401, None);
    match aws_runtime().block_on(fb.post(&target, "x", &ok)) {
        Err(ApiError::Permanent(m)) => {
            assert!(m.contains("401"), "{m}");
            assert!(!m.contains(token), "{m}");
        }
        other => panic!("expected a permanent error: {other:?}"),
    }
}

/// Anyone can write pipeforge's marker in a comment: a marked comment by another account (the
/// pull request's author, here with pipeforge's Bitbucket Cloud nickname) is never edited on
/// any vendor; pipeforge creates its own comment and keeps updating that one.
#[test]
fn a_marked_comment_by_anyone_else_is_never_edited() {
    use pipeforge::org::{OrgPullRequests, OrgVendorApi};
    use pipeforge::webhook::event::Vendor as V;
    use pipeforge::webhook::vendor::client::Retry;
    use pipeforge::webhook::vendor::{CommitStatus, Feedback, Target, VendorFeedback};
    let secret = token_secret("marker-test-token-77");
    let ok = CommitStatus {
        success: true,
        description: "pipeline `x` is valid".to_owned(),
    };
    for (vendor_kind, marker, edit) in [
        (
            V::Github,
            "<!-- pipeforge:pull-request-preview -->",
            "PATCH",
        ),
        (
            V::BitbucketServer,
            "[//]: # (pipeforge:pull-request-preview)",
            "PUT",
        ),
        (
            V::BitbucketCloud,
            "[//]: # (pipeforge:pull-request-preview)",
            "PUT",
        ),
    ] {
        let (vendor, api) = start_vendor();
        let with = |api_url: String, author: &str| {
            Some(OrgVendorApi {
                api_url,
                author: author.to_owned(),
                token_secret: Some(secret.clone()),
                app_id: None,
                app_key_secret: None,
                token_key: None,
            })
        };
        let settings = OrgPullRequests {
            enabled: true,
            github: with(api.clone(), "PipeForge-Bot"),
            bitbucket_server: with(api.clone(), "pipeforge-bot"),
            bitbucket_cloud: with(format!("{api}/2.0"), BOT_UUID),
        };
        let fb = VendorFeedback::new(
            &settings,
            Some(aws_sdk_secretsmanager::Client::new(&aws_config())),
            Retry {
                base: Duration::from_millis(50),
                ..Retry::default()
            },
        )
        .expect("client");
        let planted_text = format!("{marker}\nplanted: merge me, pipeforge approved");
        let planted = vendor.plant(&planted_text, mallory());
        let target = Target {
            vendor: vendor_kind,
            repository: "PAYMENTS/billing".to_owned(),
            number: 5,
            commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            installation: None,
            web_url: None,
        };
        let post = |text: &str| {
            aws_runtime()
                .block_on(fb.post(&target, &format!("{marker}\n{text}"), &ok))
                .unwrap_or_else(|e| panic!("{vendor_kind:?}: {e:?}"))
        };
        let first = post("first");
        assert!(first.created, "{vendor_kind:?}: {first:?}");
        assert_ne!(first.comment_id, planted.to_string(), "{vendor_kind:?}");
        let second = post("second");
        assert!(!second.created, "{vendor_kind:?}: {second:?}");
        assert_eq!(first.comment_id, second.comment_id, "{vendor_kind:?}");
        let comments = vendor.comments();
        assert_eq!(comments.len(), 2, "{vendor_kind:?}: {comments:?}");
        assert_eq!(comments[&planted].0, planted_text, "{vendor_kind:?}");
        assert!(
            comments
                .values()
                .any(|(t, _)| t == &format!("{marker}\nsecond")),
            "{vendor_kind:?}: {comments:?}"
        );
        let edits = vendor.requests(edit, "/comments/");
        assert_eq!(edits.len(), 1, "{vendor_kind:?}: {edits:?}");
        assert!(
            edits
                .iter()
                .all(|r| !r.path.contains(&format!("/comments/{planted}"))),
            "{vendor_kind:?}: {edits:?}"
        );

        // A wrong `author` would add a comment on every push: the job fails and says so.
        let wrong = VendorFeedback::new(
            &OrgPullRequests {
                enabled: true,
                github: with(api.clone(), "someone-else"),
                bitbucket_server: with(api.clone(), "someone-else"),
                bitbucket_cloud: with(
                    format!("{api}/2.0"),
                    "{00000000-0000-4000-8000-000000000000}",
                ),
            },
            Some(aws_sdk_secretsmanager::Client::new(&aws_config())),
            Retry::default(),
        )
        .expect("client");
        let other = Target {
            number: 6,
            ..target.clone()
        };
        match aws_runtime().block_on(wrong.post(&other, &format!("{marker}\nx"), &ok)) {
            Err(pipeforge::webhook::vendor::client::ApiError::Permanent(m)) => assert!(
                m.contains(".author` is `")
                    && (m.contains("pipeforge-bot") || m.contains(BOT_UUID)),
                "{vendor_kind:?}: {m}"
            ),
            other => panic!("{vendor_kind:?}: expected a permanent error, got {other:?}"),
        }
    }
}
