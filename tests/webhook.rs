//! End-to-end tests of the webhook: a real git origin with merges in a temp dir, the real
//! `pipeforge serve` binary on loopback, signed payloads over HTTP, and the local AWS server
//! (`ci/local-aws`) for the SQS FIFO queue pair, the S3 status store and Secrets Manager.

mod webhook_support;

use std::path::PathBuf;
use std::time::Duration;

use pipeforge::{Inputs, SourceFile};
use serde_json::Value as Json;
use webhook_support::*;

const WAIT: Duration = Duration::from_secs(120);

struct World {
    dir: tempfile::TempDir,
    base: PathBuf,
    org: PathBuf,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("git");
    std::fs::create_dir_all(&base).expect("mkdir");
    let org = org_file(dir.path(), &base);
    World { dir, base, org }
}

impl World {
    fn common_args(&self) -> Vec<String> {
        vec![
            "--org".to_owned(),
            self.org.display().to_string(),
            "--work-dir".to_owned(),
            self.dir.path().join("work").display().to_string(),
            "--retry-delay-ms".to_owned(),
            "200".to_owned(),
        ]
    }

    /// `serve` on a fresh SQS FIFO queue pair and S3 status bucket of the local AWS server.
    fn serve_sqs(&self, name: &str) -> Serve {
        let (queue, bucket) = sqs_resources(name);
        self.serve_on(&queue, &bucket)
    }

    /// `serve` on the queue and status bucket of [`sqs_resources`].
    fn serve_on(&self, queue: &str, bucket: &str) -> Serve {
        let (queue, bucket) = (queue.to_owned(), bucket.to_owned());
        let mut args = self.common_args();
        args.extend([
            "--queue-url".to_owned(),
            queue,
            "--status-bucket".to_owned(),
            bucket,
            "--receive-wait-secs".to_owned(),
            "0".to_owned(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Serve::start(&refs, local_aws())
    }

    fn serve_local(&self) -> Serve {
        let mut args = self.common_args();
        args.push("--local-queue".to_owned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Serve::start(&refs, &[])
    }

    fn content_hash(&self, manifest: &str) -> String {
        let inputs = Inputs::load(Some(&self.org), None, None).expect("inputs");
        pipeforge::generate(&SourceFile::new("pipeline.yml", manifest), &inputs)
            .expect("renders")
            .outputs
            .content_hash()
    }
}

/// A fresh SQS FIFO queue pair and S3 status bucket on the local AWS server: (queue, bucket).
fn sqs_resources(name: &str) -> (String, String) {
    let name = format!("{name}-{}", std::process::id());
    let (queue, _dlq) = fifo_queue_pair(&name, 3);
    let bucket = format!("pf-jobs-{name}");
    create_bucket(&bucket);
    (queue, bucket)
}

fn with_coverage(min: u32) -> String {
    manifest("orders-api", min)
}

/// The example manifest, renamed (tests run in parallel against one AWS server: each deploys
/// its own pipeline) and with another coverage floor.
fn manifest(name: &str, min: u32) -> String {
    let m = example_manifest();
    let edited = m
        .replace("coverage_min: 85", &format!("coverage_min: {min}"))
        .replace("name: orders-api", &format!("name: {name}"));
    assert!(
        edited.contains(&format!("name: {name}\n")),
        "examples/pipeline.yml changed; update the tests"
    );
    edited
}

fn s3() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws_config())
            .force_path_style(true)
            .build(),
    )
}

/// The file `path` inside the `source.zip` that the deploy uploaded for pipeline `name`.
fn deployed_file(name: &str, path: &str) -> String {
    let client = s3();
    let bytes = aws_runtime().block_on(async {
        client
            .get_object()
            .bucket("example-pipeforge-source")
            .key(format!("payments/{name}/source.zip"))
            .send()
            .await
            .expect("source.zip uploaded")
            .body
            .collect()
            .await
            .expect("read source.zip")
            .into_bytes()
    });
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("zip");
    let mut file = zip.by_name(path).expect("file in source.zip");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).expect("utf-8");
    text
}

/// The status of a stack in the tooling account.
fn stack_status(stack: &str) -> String {
    let cfn = aws_sdk_cloudformation::Client::new(&aws_config());
    aws_runtime().block_on(async {
        cfn.describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .expect("describe stack")
            .stacks()
            .first()
            .and_then(|s| s.stack_status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    })
}

#[test]
fn a_merge_is_validated_rendered_and_deployed_through_the_sqs_queue() {
    let w = world();
    let repo = Repo::new(&w.base, "payments", "orders-api", &manifest("wh-valid", 85));
    let manifest = manifest("wh-valid", 90);
    let commit = repo.merge("coverage-90", "main", &manifest);
    let s = w.serve_sqs("valid");
    let body = github_payload(&repo, &commit, "main", "main");
    let job = queued_job(&post_github(s.addr, &body, "valid-1"));
    assert!(job.id.starts_with("github-"), "{job:?}");
    let id = job.id.clone();
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(status["commit"], commit.as_str());
    assert_eq!(status["pipeline"], "wh-valid");
    assert_eq!(status["attempts"], 1);
    assert_eq!(
        status["content_hash"],
        w.content_hash(&manifest).as_str(),
        "the merge commit's manifest was deployed"
    );
    let stacks: Vec<&str> = status["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .filter_map(|s| s["stack"].as_str())
        .collect();
    assert_eq!(
        stacks,
        [
            "pf-wh-valid-dev-target",
            "pf-wh-valid-test-target",
            "pf-wh-valid-prod-target",
            "pf-wh-valid-pipeline"
        ],
        "{status:#}"
    );
    assert!(
        status["stacks"]
            .as_array()
            .expect("stacks")
            .iter()
            .all(|s| s["action"] == "created"),
        "{status:#}"
    );
    // The stacks exist, and the pipeline's source is the merge commit.
    assert_eq!(stack_status("pf-wh-valid-pipeline"), "CREATE_COMPLETE");
    assert_eq!(deployed_file("wh-valid", "pipeline.yml"), manifest);
    // The status lives in S3, where the Lambda functions read it too.
    let client = s3();
    let stored = aws_runtime().block_on(async {
        client
            .get_object()
            .bucket(format!("pf-jobs-valid-{}", std::process::id()))
            .key(format!("jobs/{id}.json"))
            .send()
            .await
            .expect("status object")
            .body
            .collect()
            .await
            .expect("read")
            .into_bytes()
    });
    let stored: Json = serde_json::from_slice(&stored).expect("json");
    assert_eq!(stored["state"], "succeeded");
    let total =
        status["updated_ms"].as_u64().unwrap_or(0) - status["received_ms"].as_u64().unwrap_or(0);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "merge to deployed pipeline: {total} ms from webhook to succeeded (job {} ms: clone, validate, 4 stacks, upload)",
            status["duration_ms"]
        );
    }
    assert_eq!(s.events("job succeeded").len(), 1);
}

#[test]
fn a_missing_or_wrong_signature_is_401_with_no_detail() {
    let w = world();
    let repo = Repo::new(&w.base, "payments", "sig-app", &example_manifest());
    let commit = repo.merge("x", "main", &with_coverage(88));
    let s = w.serve_local();
    let body = github_payload(&repo, &commit, "main", "main");
    let wrong = pipeforge::webhook::event::sign(b"not-the-secret", &body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    for (sig, payload) in [
        (Some(wrong), body.clone()),
        (Some(sign(&body)), tampered),
        (Some("sha256=".to_owned()), body.clone()),
        (None, body.clone()),
    ] {
        let mut headers = vec![
            ("X-GitHub-Event", "pull_request".to_owned()),
            ("X-GitHub-Delivery", "sig-1".to_owned()),
        ];
        if let Some(sig) = sig {
            headers.push(("X-Hub-Signature-256", sig));
        }
        let a = request(s.addr, "POST", "/webhook", &headers, &payload);
        assert_eq!(a.status, 401);
        assert_eq!(a.body, serde_json::json!({"error": "unauthorized"}));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.events("webhook").iter().all(|e| e.get("job").is_none()),
        "nothing was queued: {:#?}",
        s.logs()
    );
}

#[test]
fn a_replayed_delivery_never_deploys_twice() {
    let w = world();
    let repo = Repo::new(
        &w.base,
        "payments",
        "replay-app",
        &manifest("wh-replay", 85),
    );
    let commit = repo.merge("x", "main", &manifest("wh-replay", 87));
    let s = w.serve_sqs("replay");
    let body = github_payload(&repo, &commit, "main", "main");
    let job = queued_job(&post_github(s.addr, &body, "replay-1"));
    // Redelivered at once (SQS deduplicates) and after the deploy (the status catches it).
    let again = post_github(s.addr, &body, "replay-1");
    assert_eq!(again.status, 202);
    assert_eq!(again.body["status"], "duplicate", "{:?}", again.body);
    assert_eq!(again.body["job"], job.id.as_str());
    assert!(
        again.body.get("status_url").is_none(),
        "the status URL is given once: {:?}",
        again.body
    );
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let late = post_github(s.addr, &body, "replay-1");
    assert_eq!(late.body["status"], "duplicate", "{:?}", late.body);
    assert_eq!(late.body["state"], "succeeded");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.events("job started").len(), 1, "{:#?}", s.logs());
    assert_eq!(s.status(&job.url).body["attempts"], 1);
}

#[test]
fn an_older_merge_replayed_after_a_restart_is_superseded_by_the_deployed_commit() {
    let w = world();
    let repo = Repo::new(
        &w.base,
        "payments",
        "durable-app",
        &manifest("wh-durable", 85),
    );
    let m1 = repo.merge("pr-1", "main", &manifest("wh-durable", 86));
    let m2 = repo.merge("pr-2", "main", &manifest("wh-durable", 92));
    let (queue, bucket) = sqs_resources("durable");
    {
        let s = w.serve_on(&queue, &bucket);
        let job = queued_job(&post_github(
            s.addr,
            &github_payload(&repo, &m2, "main", "main"),
            "durable-2",
        ));
        assert_eq!(s.wait_final(&job.url, WAIT)["state"], "succeeded");
    }
    // A new process: nothing in memory; the deployed commit is the `pipeforge-commit` of the
    // pipeline's source.zip in the org source bucket.
    let s = w.serve_on(&queue, &bucket);
    let replay = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &m1, "main", "main"),
        "durable-replayed",
    ));
    let status = s.wait_final(&replay.url, WAIT);
    assert_eq!(status["state"], "superseded", "{status:#}");
    assert!(
        status["superseded_by"].to_string().contains(&m2),
        "{status:#}"
    );
    assert_eq!(
        deployed_file("wh-durable", "pipeline.yml"),
        manifest("wh-durable", 92),
        "the pipeline still runs the newer merge"
    );
    assert!(
        s.events("deploy progress").is_empty(),
        "nothing was deployed"
    );
}

#[test]
fn two_quick_merges_to_one_repository_apply_in_order_and_the_second_wins() {
    let w = world();
    let repo = Repo::new(&w.base, "payments", "order-app", &manifest("wh-order", 85));
    let first = manifest("wh-order", 86);
    let second = manifest("wh-order", 95);
    let c1 = repo.merge("pr-1", "main", &first);
    let c2 = repo.merge("pr-2", "main", &second);
    let s = w.serve_sqs("order");
    let j1 = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &c1, "main", "main"),
        "order-1",
    ));
    let j2 = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &c2, "main", "main"),
        "order-2",
    ));
    let s1 = s.wait_final(&j1.url, WAIT);
    let s2 = s.wait_final(&j2.url, WAIT);
    assert_eq!(
        (s1["state"].as_str(), s2["state"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    let at = |msg: &str, job: &Queued| -> u64 {
        s.events(msg)
            .iter()
            .find(|e| e["job"] == job.id.as_str())
            .and_then(|e| e["ts_ms"].as_u64())
            .unwrap_or_else(|| panic!("no `{msg}` for {}", job.id))
    };
    assert!(
        at("job started", &j2) >= at("job succeeded", &j1),
        "the second merge started before the first finished"
    );
    assert_eq!(
        s2["content_hash"],
        w.content_hash(&second).as_str(),
        "final state = second merge"
    );
    assert_ne!(s1["content_hash"], s2["content_hash"]);
    assert!(
        s2["stacks"]
            .as_array()
            .expect("stacks")
            .iter()
            .any(|s| s["action"] == "updated"),
        "{s2:#}"
    );
    assert_eq!(
        deployed_file("wh-order", "pipeline.yml"),
        second,
        "the pipeline runs the second merge"
    );
}

#[test]
fn an_invalid_manifest_stops_the_job_before_anything_is_uploaded() {
    let w = world();
    let repo = Repo::new(
        &w.base,
        "payments",
        "broken-app",
        &manifest("wh-invalid", 85),
    );
    let broken = manifest("wh-invalid", 85).replace("language: python", "language: cobol");
    let commit = repo.merge("break-it", "main", &broken);
    let s = w.serve_sqs("invalid");
    let job = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &commit, "main", "main"),
        "invalid-1",
    ));
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["attempts"], 1, "a permanent error is not retried");
    assert!(
        status["error"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was deployed"),
        "{status:#}"
    );
    let diagnostics = status["diagnostics"].as_array().expect("diagnostics");
    assert!(!diagnostics.is_empty());
    assert!(
        diagnostics
            .iter()
            .any(|d| d.as_str().unwrap_or_default().contains("cobol")),
        "{diagnostics:?}"
    );
    assert!(status["stacks"].as_array().is_some_and(Vec::is_empty));
    let failed = s.events("job failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["diagnostics"].to_string().contains("cobol"),
        "the logs carry the diagnostics"
    );
    // Nothing of this pipeline reached the source bucket.
    let client = s3();
    let listed = aws_runtime().block_on(async {
        client
            .list_objects_v2()
            .bucket("example-pipeforge-source")
            .prefix("payments/wh-invalid/")
            .send()
            .await
            .expect("list source bucket")
    });
    assert_eq!(listed.key_count(), Some(0));
}

#[test]
fn a_repository_the_team_does_not_list_fails_its_job_and_deploys_nothing() {
    // The org's webhook accepts `example/*`, but team `payments` deploys from `payments/*` only.
    let w = world();
    let repo = Repo::new(
        &w.base,
        "example",
        "orders-copy",
        &manifest("wh-foreign", 85),
    );
    let commit = repo.merge("take-over", "main", &manifest("wh-foreign", 90));
    let s = w.serve_sqs("foreign");
    let job = queued_job(&post_github(
        s.addr,
        &github_payload(&repo, &commit, "main", "main"),
        "foreign-1",
    ));
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["attempts"], 1, "a refusal is not retried");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "repository `example/orders-copy` may not deploy pipelines of team `payments`"
        ),
        "{status:#}"
    );
    assert!(error.contains("nothing was deployed"), "{status:#}");
    assert!(status["stacks"].as_array().is_some_and(Vec::is_empty));
    // Nothing reached the source bucket, nobody owns the pipeline, no stack exists.
    let client = s3();
    for prefix in ["payments/wh-foreign/", "pipelines/wh-foreign/"] {
        let listed = aws_runtime().block_on(async {
            client
                .list_objects_v2()
                .bucket("example-pipeforge-source")
                .prefix(prefix)
                .send()
                .await
                .expect("list source bucket")
        });
        assert_eq!(listed.key_count(), Some(0), "{prefix}");
    }
    let cfn = aws_sdk_cloudformation::Client::new(&aws_config());
    let exists = aws_runtime().block_on(async {
        cfn.describe_stacks()
            .stack_name("pf-wh-foreign-pipeline")
            .send()
            .await
            .is_ok()
    });
    assert!(!exists, "no pipeline stack");
}

#[test]
fn merges_into_other_branches_are_ignored() {
    let w = world();
    let repo = Repo::new(&w.base, "payments", "branch-app", &example_manifest());
    repo.branch("develop");
    let commit = repo.merge("x", "develop", &with_coverage(89));
    let s = w.serve_local();
    let a = post_github(
        s.addr,
        &github_payload(&repo, &commit, "develop", "main"),
        "branch-1",
    );
    assert_eq!(a.status, 202);
    assert_eq!(a.body["status"], "ignored");
    assert!(
        a.body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("`develop`"),
        "{:?}",
        a.body
    );
    assert!(a.body.get("job").is_none(), "{:?}", a.body);
}

#[test]
fn bodies_over_one_mib_are_413_while_being_read() {
    let w = world();
    let s = w.serve_local();
    let big = vec![b' '; 1024 * 1024 + 1];
    let headers = [
        ("X-GitHub-Event", "pull_request".to_owned()),
        ("X-Hub-Signature-256", sign(&big)),
    ];
    let a = request(s.addr, "POST", "/webhook", &headers, &big);
    assert_eq!(a.status, 413, "{:?}", a.body);
    // Chunked, with no length announced: refused once the limit is passed.
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(s.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(stream, "POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX-GitHub-Event: pull_request\r\nX-Hub-Signature-256: sha256=00\r\n\r\n").expect("head");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..40 {
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let a = read_answer(stream);
    assert_eq!(a.status, 413, "{:?}", a.body);
}

#[test]
fn a_clone_failure_is_recorded_on_the_job() {
    let w = world();
    let repo = Repo::new(&w.base, "payments", "clone-app", &example_manifest());
    let commit = repo.merge("x", "main", &with_coverage(91));
    let s = w.serve_local();
    // The event names a repository that does not exist on the (allowed) origin.
    let mut payload: Json =
        serde_json::from_slice(&github_payload(&repo, &commit, "main", "main")).expect("json");
    let missing = w.base.join("payments/missing-app.git");
    payload["repository"]["full_name"] = "payments/missing-app".into();
    payload["repository"]["clone_url"] = missing.display().to_string().into();
    let body = serde_json::to_vec(&payload).expect("encode");
    let job = queued_job(&post_github(s.addr, &body, "clone-1"));
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "failed", "{status:#}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot fetch the repository"), "{error}");
    // A commit the origin does not have fails too, and says so.
    let mut payload: Json =
        serde_json::from_slice(&github_payload(&repo, &commit, "main", "main")).expect("json");
    payload["pull_request"]["merge_commit_sha"] = "0123456789abcdef0123456789abcdef01234567".into();
    let job = queued_job(&post_github(
        s.addr,
        &serde_json::to_vec(&payload).expect("encode"),
        "clone-2",
    ));
    let status = s.wait_final(&job.url, WAIT);
    assert_eq!(status["state"], "failed", "{status:#}");
    assert!(
        status["error"]
            .as_str()
            .unwrap_or_default()
            .contains("0123456789abcdef"),
        "{status:#}"
    );
}

#[test]
fn other_requests_get_clear_answers() {
    let w = world();
    let repo = Repo::new(&w.base, "payments", "misc-app", &example_manifest());
    let commit = repo.merge("x", "main", &with_coverage(92));
    let s = w.serve_local();
    assert_eq!(request(s.addr, "GET", "/healthz", &[], b"").status, 200);
    // Signed but not JSON: 400 with the reason.
    let a = post_github(s.addr, b"{not json", "misc-1");
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not JSON")
    );
    // Signed, another event: ignored.
    let push = br#"{"ref":"refs/heads/main"}"#;
    let a = request(
        s.addr,
        "POST",
        "/webhook",
        &[
            ("X-GitHub-Event", "push".to_owned()),
            ("X-Hub-Signature-256", sign(push)),
        ],
        push,
    );
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (202, Some("ignored"))
    );
    // A repository outside the policy: 403.
    let mut payload: Json =
        serde_json::from_slice(&github_payload(&repo, &commit, "main", "main")).expect("json");
    payload["repository"]["full_name"] = "intruders/misc-app".into();
    let a = post_github(
        s.addr,
        &serde_json::to_vec(&payload).expect("encode"),
        "misc-2",
    );
    assert_eq!(a.status, 403, "{:?}", a.body);
    // A clone URL with another scheme: 403.
    payload["repository"]["full_name"] = "payments/misc-app".into();
    payload["repository"]["clone_url"] = "ext::sh -c touch% /tmp/pwned".into();
    let a = post_github(
        s.addr,
        &serde_json::to_vec(&payload).expect("encode"),
        "misc-3",
    );
    assert_eq!(a.status, 403, "{:?}", a.body);
    // Bitbucket Data Center, through its own path, with its own headers.
    let a = request(
        s.addr,
        "POST",
        "/webhook/bitbucket-server",
        &[
            ("X-Event-Key", "diagnostics:ping".to_owned()),
            ("X-Hub-Signature", sign(b"{}")),
        ],
        b"{}",
    );
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (202, Some("ignored"))
    );
    assert_eq!(
        request(s.addr, "GET", "/jobs/../../etc/passwd", &[], b"").status,
        404
    );
}

#[test]
fn the_secret_can_come_from_secrets_manager_with_a_previous_one_for_rotation() {
    let w = world();
    let repo = Repo::new(
        &w.base,
        "payments",
        "rotate-app",
        &manifest("wh-rotate", 85),
    );
    let commit = repo.merge("x", "main", &manifest("wh-rotate", 93));
    let sm = aws_sdk_secretsmanager::Client::new(&aws_config());
    let name = format!("pf/webhook-{}", std::process::id());
    let arn = aws_runtime().block_on(async {
        sm.create_secret()
            .name(&name)
            .secret_string(
                serde_json::json!({"current": "brand-new-secret", "previous": SECRET}).to_string(),
            )
            .send()
            .await
            .expect("create secret")
            .arn
            .expect("arn")
    });
    let mut env = local_aws().clone();
    env.push(("PIPEFORGE_WEBHOOK_SECRET_ARN".to_owned(), arn));
    let mut args = w.common_args();
    args.push("--local-queue".to_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Serve::start(&refs, &env);
    let body = github_payload(&repo, &commit, "main", "main");
    // The previous secret still works...
    queued_job(&post_github(s.addr, &body, "rotate-1"));
    // ...and so does the new one; anything else does not.
    for (secret, status) in [("brand-new-secret", 202), ("some-other-secret", 401)] {
        let sig = pipeforge::webhook::event::sign(secret.as_bytes(), &body);
        let a = request(
            s.addr,
            "POST",
            "/webhook",
            &[
                ("X-GitHub-Event", "pull_request".to_owned()),
                ("X-GitHub-Delivery", format!("rotate-{secret}")),
                ("X-Hub-Signature-256", sig),
            ],
            &body,
        );
        assert_eq!(a.status, status, "{secret}: {:?}", a.body);
    }
}

#[test]
fn the_sqs_queue_keeps_a_repository_in_order_and_dead_letters_with_the_error() {
    use aws_sdk_sqs::types::MessageSystemAttributeName as Sys;
    use pipeforge::webhook::event::Vendor;
    use pipeforge::webhook::job::Job;
    use pipeforge::webhook::queue::{JobQueue, SqsQueue};
    let name = format!("lib-{}", std::process::id());
    let (url, dlq) = fifo_queue_pair(&name, 4);
    let sqs = aws_sdk_sqs::Client::new(&aws_config());
    let job = |id: &str, repo: &str| Job {
        id: id.to_owned(),
        vendor: Vendor::Github,
        delivery: id.to_owned(),
        repository: repo.to_owned(),
        clone_url: format!("https://github.com/{repo}.git"),
        commit: "abcdef1".to_owned(),
        branch: "main".to_owned(),
        pull_request: None,
        received_ms: 0,
        status_capability: String::new(),
        kind: Default::default(),
    };
    aws_runtime().block_on(async {
        let q = SqsQueue::open(sqs.clone(), &url, 9).await.expect("open");
        assert_eq!(q.max_receives(), 4, "from the redrive policy");
        assert_eq!(q.dead_letter_url(), Some(dlq.as_str()));
        q.send(&job("a1", "t/a"), "a1").await.expect("send");
        q.send(&job("a1", "t/a"), "a1").await.expect("duplicate");
        q.send(&job("a2", "t/a"), "a2").await.expect("send");
        q.send(&job("b1", "t/b"), "b1").await.expect("send");
        let wait = std::time::Duration::ZERO;
        let first = q.receive(wait).await.expect("receive").expect("a1");
        assert_eq!(first.job.id, "a1");
        let second = q.receive(wait).await.expect("receive").expect("b1");
        assert_eq!(second.job.id, "b1", "a2 waits while a1 is in flight");
        assert!(q.receive(wait).await.expect("receive").is_none());
        q.dead_letter(&first, "clone timed out")
            .await
            .expect("dead letter");
        let third = q.receive(wait).await.expect("receive").expect("a2");
        assert_eq!(third.job.id, "a2", "the duplicate a1 was dropped");
        q.delete(&second).await.expect("delete");
        q.delete(&third).await.expect("delete");
        let dead = sqs
            .receive_message()
            .queue_url(&dlq)
            .message_attribute_names("All")
            .message_system_attribute_names(Sys::MessageGroupId)
            .send()
            .await
            .expect("receive dead letters");
        let messages = dead.messages();
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        let job: Job = serde_json::from_str(m.body().unwrap_or_default()).expect("a job");
        assert_eq!(job.id, "a1");
        let error = m
            .message_attributes()
            .and_then(|a| a.get("error"))
            .and_then(|v| v.string_value())
            .unwrap_or_default();
        assert_eq!(error, "clone timed out");
    });
}

#[test]
fn the_target_account_bootstrap_stack_deploys_on_the_local_server() {
    let template =
        std::fs::read_to_string(root().join("golden-bootstrap/default/expected/target.json"))
            .expect("golden target.json");
    let conf = aws_config();
    let cfn = aws_sdk_cloudformation::Client::new(&conf);
    let iam = aws_sdk_iam::Client::new(&conf);
    aws_runtime().block_on(async {
        cfn.create_stack()
            .stack_name("pipeforge-bootstrap-target")
            .template_body(template)
            .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
            .send()
            .await
            .expect("create stack");
        let mut status = String::new();
        for _ in 0..120 {
            let out = cfn
                .describe_stacks()
                .stack_name("pipeforge-bootstrap-target")
                .send()
                .await
                .expect("describe");
            status = out.stacks()[0]
                .stack_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            if !status.ends_with("IN_PROGRESS") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(status, "CREATE_COMPLETE");
        let role = iam
            .get_role()
            .role_name("pipeforge-bootstrap")
            .send()
            .await
            .expect("bootstrap role");
        let trust = role
            .role()
            .map(|r| {
                r.assume_role_policy_document()
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default();
        let trust = percent_decode(&trust);
        assert!(trust.contains("role/pf-pipeforge-worker"), "{trust}");
        for name in ["pipeforge-app-deploy", "pipeforge-app-boundary"] {
            iam.get_policy()
                .policy_arn(format!("arn:aws:iam::123456789012:policy/{name}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("policy {name}: {e:?}"));
        }
    });
}

/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| u8::from_str_radix(&s[i + 1..i + 3], 16).ok())
            .flatten();
        if let Some(b) = escaped {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
