//! Shared parts of the webhook tests: a real git origin with merges, the real `pipeforge serve`
//! binary on loopback, signed payloads over plain HTTP/1.1, and the local AWS server.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

pub const SECRET: &str = "test-webhook-secret";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// git

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env_remove("GIT_DIR")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare origin `<base>/<owner>/<name>.git` and a working clone with `main`.
pub struct Repo {
    pub origin: PathBuf,
    pub work: PathBuf,
    pub repository: String,
}

impl Repo {
    pub fn new(base: &Path, owner: &str, name: &str, manifest: &str) -> Repo {
        let origin = base.join(owner).join(format!("{name}.git"));
        std::fs::create_dir_all(&origin).expect("mkdir origin");
        git(&origin, &["init", "-q", "--bare", "-b", "main"]);
        let work = base.join("work").join(owner).join(name);
        std::fs::create_dir_all(&work).expect("mkdir work");
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", origin.to_str().expect("utf-8")],
        );
        std::fs::write(work.join("pipeline.yml"), manifest).expect("write manifest");
        std::fs::write(work.join("README.md"), "app\n").expect("write readme");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "feat: first"]);
        git(&work, &["push", "-q", "origin", "main"]);
        Repo {
            origin,
            work,
            repository: format!("{owner}/{name}"),
        }
    }

    /// Commits `manifest` on a branch and merges it into `into` with a merge commit (as a pull
    /// request does); returns the merge commit.
    pub fn merge(&self, branch: &str, into: &str, manifest: &str) -> String {
        self.merge_change(branch, into, |w| {
            std::fs::write(w.join("pipeline.yml"), manifest).expect("write manifest");
        })
    }

    /// Like [`Repo::merge`], with `change` making the branch's change in the working tree
    /// (a symlink instead of the manifest, say).
    pub fn merge_change(&self, branch: &str, into: &str, change: impl FnOnce(&Path)) -> String {
        let w = &self.work;
        git(w, &["checkout", "-q", into]);
        git(w, &["checkout", "-q", "-B", branch]);
        change(w);
        std::fs::write(w.join(format!("{}.txt", branch.replace('/', "-"))), branch).expect("write");
        git(w, &["add", "-A"]);
        git(w, &["commit", "-q", "-m", &format!("feat: {branch}")]);
        git(w, &["checkout", "-q", into]);
        git(
            w,
            &[
                "merge",
                "-q",
                "--no-ff",
                "-m",
                &format!("Merge pull request from {branch}"),
                branch,
            ],
        );
        git(w, &["push", "-q", "origin", into]);
        git(w, &["rev-parse", "HEAD"])
    }

    /// Creates branch `name` from `main` on the origin.
    pub fn branch(&self, name: &str) {
        git(&self.work, &["checkout", "-q", "main"]);
        git(&self.work, &["checkout", "-q", "-B", name]);
        git(&self.work, &["push", "-q", "origin", name]);
        git(&self.work, &["checkout", "-q", "main"]);
    }
}

pub fn example_manifest() -> String {
    std::fs::read_to_string(root().join("examples/pipeline.yml")).expect("example manifest")
}

/// The org policy for the tests: the example's, with the temp dir as the only allowed local
/// prefix and `payments/*` allowed.
pub fn org_file(dir: &Path, local_prefix: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/org.yaml")).expect("org");
    let edited = text.replace(
        "  # allow_local_prefix: /tmp/pipeforge-tests",
        &format!("  allow_local_prefix: \"{}\"", local_prefix.display()),
    );
    assert_ne!(edited, text, "examples/org.yaml changed; update the tests");
    let path = dir.join("org.yaml");
    std::fs::write(&path, edited).expect("write org");
    path
}

// ---------------------------------------------------------------------------------------------
// payloads

/// A Bitbucket Data Center `pr:merged` payload for a local origin (project/slug from the
/// repository's `owner/name`).
pub fn bitbucket_server_payload(repo: &Repo, commit: &str, branch: &str) -> Vec<u8> {
    let mut v: Json = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/webhook/bitbucket-server-pr-merged.json"))
            .expect("fixture"),
    )
    .expect("json");
    let (owner, name) = repo.repository.split_once('/').expect("owner/name");
    let r = &mut v["pullRequest"]["toRef"]["repository"];
    r["project"]["key"] = json!(owner);
    r["slug"] = json!(name);
    r["links"]["clone"] = json!([{"name": "http", "href": repo.origin.display().to_string()}]);
    v["pullRequest"]["toRef"]["displayId"] = json!(branch);
    v["pullRequest"]["toRef"]["id"] = json!(format!("refs/heads/{branch}"));
    v["pullRequest"]["properties"]["mergeCommit"]["id"] = json!(commit);
    serde_json::to_vec(&v).expect("encode")
}

pub fn post_bitbucket_server(addr: SocketAddr, body: &[u8], delivery: &str) -> Answer {
    request(
        addr,
        "POST",
        "/webhook/bitbucket-server",
        &[
            ("Content-Type", "application/json".to_owned()),
            ("X-Event-Key", "pr:merged".to_owned()),
            ("X-Request-Id", delivery.to_owned()),
            ("X-Hub-Signature", sign(body)),
        ],
        body,
    )
}

/// A GitHub `pull_request` closed+merged payload for a local origin.
pub fn github_payload(repo: &Repo, commit: &str, branch: &str, default_branch: &str) -> Vec<u8> {
    let mut v: Json = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/webhook/github-pull-request-merged.json"))
            .expect("fixture"),
    )
    .expect("json");
    let (owner, name) = repo.repository.split_once('/').expect("owner/name");
    v["repository"]["full_name"] = json!(repo.repository);
    v["repository"]["name"] = json!(name);
    v["repository"]["owner"]["login"] = json!(owner);
    v["repository"]["clone_url"] = json!(repo.origin.display().to_string());
    v["repository"]["ssh_url"] = json!(repo.origin.display().to_string());
    v["repository"]["default_branch"] = json!(default_branch);
    v["pull_request"]["merge_commit_sha"] = json!(commit);
    v["pull_request"]["base"]["ref"] = json!(branch);
    serde_json::to_vec(&v).expect("encode")
}

pub fn sign(body: &[u8]) -> String {
    pipeforge::webhook::event::sign(SECRET.as_bytes(), body)
}

// ---------------------------------------------------------------------------------------------
// HTTP (plain HTTP/1.1 over a TCP socket, one request per connection)

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Json,
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    // The server may refuse before reading it all (413): ignore a broken pipe.
    let _ = s.write_all(body);
    read_answer(s)
}

pub fn read_answer(mut s: TcpStream) -> Answer {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer {
        status,
        body: serde_json::from_str(body.trim()).unwrap_or(Json::String(body)),
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn post_github(addr: SocketAddr, body: &[u8], delivery: &str) -> Answer {
    request(
        addr,
        "POST",
        "/webhook",
        &[
            ("Content-Type", "application/json".to_owned()),
            ("X-GitHub-Event", "pull_request".to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-Hub-Signature-256", sign(body)),
        ],
        body,
    )
}

// ---------------------------------------------------------------------------------------------
// the local AWS server (one per test binary; it exits with the test process)

pub fn local_aws() -> &'static Vec<(String, String)> {
    static ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ENV.get_or_init(|| {
        let state =
            std::env::temp_dir().join(format!("pipeforge-webhook-aws-{}", std::process::id()));
        let out = Command::new(root().join("ci/local-aws"))
            .args([
                "start",
                "--owner-pid",
                &std::process::id().to_string(),
                "--state-dir",
            ])
            .arg(&state)
            .stderr(Stdio::inherit())
            .output()
            .expect("run ci/local-aws");
        assert!(out.status.success(), "ci/local-aws start failed");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let env: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_owned(),
                    v.trim_matches('\'').trim_matches('"').to_owned(),
                )
            })
            .collect();
        assert_eq!(env.len(), 5, "{text}");
        env
    })
}

pub fn aws_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The SDK configuration for the local AWS server (loaded once; call it outside `block_on`).
pub fn aws_config() -> aws_config::SdkConfig {
    static CONFIG: OnceLock<aws_config::SdkConfig> = OnceLock::new();
    CONFIG.get_or_init(load_aws_config).clone()
}

fn load_aws_config() -> aws_config::SdkConfig {
    let env = local_aws();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .expect(k)
    };
    let creds = aws_sdk_s3::config::Credentials::new(
        get("AWS_ACCESS_KEY_ID"),
        get("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "tests",
    );
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_runtime().block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(get("AWS_REGION")))
            .credentials_provider(creds)
            .endpoint_url(get("AWS_ENDPOINT_URL"))
            .load(),
    )
}

/// Creates a FIFO queue and its FIFO dead-letter queue (redrive after `max` receives);
/// returns (queue URL, dead-letter URL).
pub fn fifo_queue_pair(name: &str, max: u32) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let sqs = aws_sdk_sqs::Client::new(&aws_config());
    aws_runtime().block_on(async {
        let dlq = sqs
            .create_queue()
            .queue_name(format!("{name}-dead.fifo"))
            .attributes(A::FifoQueue, "true")
            .send()
            .await
            .expect("create dlq")
            .queue_url
            .expect("dlq url");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .expect("dlq arn")
            .attributes
            .and_then(|a| a.get(&A::QueueArn).cloned())
            .expect("arn");
        let q = sqs
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .attributes(A::FifoQueue, "true")
            .attributes(A::VisibilityTimeout, "60")
            .attributes(
                A::RedrivePolicy,
                json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string(),
            )
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        (q, dlq)
    })
}

pub fn create_bucket(name: &str) {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws_config())
            .force_path_style(true)
            .build(),
    );
    aws_runtime().block_on(async {
        s3.create_bucket()
            .bucket(name)
            .send()
            .await
            .expect("create bucket");
    });
}

// ---------------------------------------------------------------------------------------------
// `pipeforge serve`

/// A job the server queued: its id and its status URL.
#[derive(Clone, Debug)]
pub struct Queued {
    pub id: String,
    pub url: String,
}

/// The job of a `queued` 202 answer.
pub fn queued_job(a: &Answer) -> Queued {
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["status"], "queued", "{:?}", a.body);
    let id = a.body["job"].as_str().expect("job id").to_owned();
    let url = a.body["status_url"]
        .as_str()
        .expect("status_url")
        .to_owned();
    assert!(url.starts_with(&format!("/jobs/{id}/")), "{url}");
    Queued { id, url }
}

pub struct Serve {
    child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<Json>>>,
}

impl Serve {
    /// Starts `pipeforge serve --listen 127.0.0.1:0 ARGS...` and waits for its `listening` line.
    pub fn start(args: &[&str], env: &[(String, String)]) -> Serve {
        // `PIPEFORGE_TEST_BIN` runs the tests (the load test, say) against another build.
        let bin = std::env::var_os("PIPEFORGE_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_pipeforge").into());
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("PIPEFORGE_WEBHOOK_SECRET", SECRET)
            .env_remove("PIPEFORGE_WEBHOOK_SECRET_ARN")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start pipeforge serve");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Json>(&line) else {
                    continue;
                };
                if v["msg"] == "listening" {
                    let _ = tx.send(v["address"].as_str().unwrap_or_default().to_owned());
                }
                keep.lock().expect("logs").push(v);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("address"),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pipeforge serve did not start listening: {e}");
            }
        };
        Serve { child, addr, logs }
    }

    /// `GET` of a job's status URL (`/jobs/<id>/<capability>`, from the 202 answer).
    pub fn status(&self, url: &str) -> Answer {
        request(self.addr, "GET", url, &[], b"")
    }

    /// Polls a job's status URL until the job is in a final state.
    pub fn wait_final(&self, url: &str, timeout: Duration) -> Json {
        let start = Instant::now();
        loop {
            let a = self.status(url);
            if a.status == 200
                && matches!(
                    a.body["state"].as_str(),
                    Some("succeeded" | "failed" | "dead-lettered" | "superseded" | "duplicate")
                )
            {
                return a.body;
            }
            assert!(
                start.elapsed() < timeout,
                "job {url} not finished: {:?}\nlogs: {:#?}",
                a.body,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now and at its peak, in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/<pid>/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// True while the server process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn logs(&self) -> Vec<Json> {
        self.logs.lock().expect("logs").clone()
    }

    /// Log events with message `msg`.
    pub fn events(&self, msg: &str) -> Vec<Json> {
        self.logs()
            .into_iter()
            .filter(|e| e["msg"] == msg)
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
