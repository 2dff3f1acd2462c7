//! Shared by the tests that deploy to a real local AWS server (`ci/local-aws`): one server per
//! organisation policy and test binary, started on first use with `--owner-pid` (it exits with
//! the test process), git repositories in temporary directories, and clients to inspect what a
//! deploy created.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pipeforge::Inputs;
use pipeforge::aws::{AwsContext, AwsSettings, StaticCredentials};
use pipeforge::deploy::{DeployOptions, DeployReport};
use pipeforge::publish::progress::{Event, Progress};
use tempfile::TempDir;

/// Every account the tests' manifests deploy to; each server bootstraps the org's role in all.
pub const ACCOUNTS: &str = "111111111111,222222222222,333333333333,444444444444,555555555555";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running local AWS server.
#[derive(Debug)]
pub struct Server {
    pub endpoint: String,
    pub region: String,
    pub org: PathBuf,
}

fn servers() -> &'static Mutex<BTreeMap<PathBuf, &'static Server>> {
    static S: OnceLock<Mutex<BTreeMap<PathBuf, &'static Server>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Removes the state directories of test servers whose test process is gone.
fn clean_stale_state(target: &Path) {
    let Ok(rd) = std::fs::read_dir(target) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("local-aws-test-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The server for `org` (an org policy file; `None`: examples/org.yaml), started on first use.
pub fn server(org: Option<&Path>) -> &'static Server {
    server_with(org, None)
}

/// [`server`] whose other tooling accounts (`tooling_accounts`) get their stacks from
/// `bootstrap` (the `--out` directory of `pipeforge bootstrap` for that org), deployed through
/// the server's CloudFormation, instead of the launcher's stand-ins.
pub fn server_bootstrapped(org: &Path, bootstrap: &Path) -> &'static Server {
    server_with(Some(org), Some(bootstrap))
}

fn server_with(org: Option<&Path>, bootstrap: Option<&Path>) -> &'static Server {
    let org = org
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("examples/org.yaml"));
    let org = std::fs::canonicalize(&org).expect("org file");
    let mut map = servers().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = map.get(&org) {
        return s;
    }
    let target = root().join("target");
    if map.is_empty() {
        clean_stale_state(&target);
    }
    let state = target.join(format!(
        "local-aws-test-{}-{}",
        std::process::id(),
        map.len()
    ));
    let mut launcher = Command::new(root().join("ci/local-aws"));
    if let Some(dir) = bootstrap {
        launcher.arg("start").arg("--bootstrap").arg(dir);
    } else {
        launcher.arg("start");
    }
    let out = launcher
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .arg("--state-dir")
        .arg(&state)
        .arg("--accounts")
        .arg(ACCOUNTS)
        .arg("--org")
        .arg(&org)
        .output()
        .expect("run ci/local-aws");
    assert!(
        out.status.success(),
        "ci/local-aws start failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let s: &'static Server = Box::leak(Box::new(Server {
        endpoint: env["AWS_ENDPOINT_URL"].clone(),
        region: env["AWS_REGION"].clone(),
        org: org.clone(),
    }));
    map.insert(org, s);
    s
}

impl Server {
    /// An AWS context pointed at this server, with its test credentials.
    pub async fn aws(&self) -> AwsContext {
        AwsContext::load(&AwsSettings {
            endpoint_url: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            credentials: Some(StaticCredentials {
                access_key_id: "testing".to_owned(),
                secret_access_key: "testing".to_owned(),
                session_token: None,
            }),
            max_attempts: 3,
            ..AwsSettings::default()
        })
        .await
    }

    /// The environment a `pipeforge` process needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ]
    }
}

/// Runs git in `dir` with a clean, fixed configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("GIT_") {
            cmd.env_remove(&k);
        }
    }
    let out = cmd
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Author")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Cy Committer")
        .env("GIT_COMMITTER_EMAIL", "cy@example.com")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A git repository in a temporary directory holding a pipeline manifest.
pub struct Repo {
    pub dir: TempDir,
}

/// The repository the tests' checkouts come from (team `payments` deploys from `payments/*`).
pub const REPOSITORY: &str = "payments/orders-api";

impl Repo {
    /// A repository whose `pipeline.yml` is `manifest`, committed, cloned from
    /// [`REPOSITORY`] (its `origin` remote).
    pub fn new(manifest: &str) -> Repo {
        Repo::from(manifest, REPOSITORY)
    }

    /// A repository whose `pipeline.yml` is `manifest`, committed, whose `origin` remote is
    /// `https://github.com/<repository>.git`.
    pub fn from(manifest: &str, repository: &str) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"]);
        git(
            d,
            &[
                "remote",
                "add",
                "origin",
                &format!("https://github.com/{repository}.git"),
            ],
        );
        std::fs::write(d.join("pipeline.yml"), manifest).expect("manifest");
        std::fs::create_dir_all(d.join("infra")).expect("mkdir");
        std::fs::write(d.join("infra/app.yml"), "Resources: {}\n").expect("template");
        std::fs::write(d.join("README.md"), "service\n").expect("readme");
        git(d, &["add", "-A"]);
        git(d, &["commit", "-qm", "feat: first"]);
        Repo { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifest(&self) -> PathBuf {
        self.path().join("pipeline.yml")
    }

    /// Replaces the manifest and commits.
    pub fn commit_manifest(&self, manifest: &str, message: &str) {
        std::fs::write(self.manifest(), manifest).expect("manifest");
        git(self.path(), &["commit", "-qam", message]);
    }
}

/// examples/pipeline.yml, renamed to `name`.
pub fn example(name: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples/pipeline.yml")).expect("example");
    assert!(text.contains("name: orders-api\n"));
    text.replace("name: orders-api\n", &format!("name: {name}\n"))
}

/// Inputs with the embedded org (or `org`) and `templates` overrides.
pub fn inputs(org: Option<&Path>, templates: Option<&Path>) -> Inputs {
    Inputs::load(org, None, templates).expect("inputs")
}

/// Deploy options for tests: short polls.
pub fn options() -> DeployOptions {
    DeployOptions {
        poll: Duration::from_millis(50),
        max_poll: Duration::from_millis(300),
        timeout: Duration::from_secs(120),
        ..DeployOptions::default()
    }
}

/// Deploys `repo`'s manifest with `options`; progress events are kept nowhere.
pub async fn deploy_repo(
    repo: &Repo,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &DeployOptions,
) -> pipeforge::Result<DeployReport> {
    deploy_repo_with(repo, inputs, aws, options, &Events::default()).await
}

/// Deploys `repo`'s manifest with `options`, its progress events kept in `events`.
pub async fn deploy_repo_with(
    repo: &Repo,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &DeployOptions,
    events: &Events,
) -> pipeforge::Result<DeployReport> {
    pipeforge::deploy::deploy(repo.path(), &repo.manifest(), inputs, aws, options, events).await
}

/// Progress events collected in memory.
#[derive(Default)]
pub struct Events(Mutex<Vec<Event>>);

impl Events {
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The resource events of `stack`, as `LogicalId STATUS`.
    pub fn resource_events(&self, stack: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Event::StackEvent { stack: s, event } if s == stack => {
                    Some(format!("{} {}", event.logical_id, event.status))
                }
                _ => None,
            })
            .collect()
    }
}

impl Progress for Events {
    fn event(&self, e: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e.clone());
        }
    }
}

/// A rollout progress that prints nothing.
pub struct Quiet;

impl pipeforge::fleet::rollout::RolloutProgress for Quiet {
    fn step(
        &self,
        _: usize,
        _: &pipeforge::fleet::rollout::RolloutState,
        _: &str,
        _: &pipeforge::Result<()>,
    ) {
    }
}

/// `org_text` (an org policy) with a rule against piping downloads into a shell, enforced
/// from `from` when given, and `extra` appended.
pub fn curl_rule(org_text: &str, from: Option<&str>, extra: &str) -> String {
    let dated = from
        .map(|d| format!("      enforce_from: \"{d}\"\n"))
        .unwrap_or_default();
    let text = org_text.replace(
        "  forbidden:\n",
        &format!("  forbidden:\n    - pattern: 'curl[^|]*\\|\\s*(ba)?sh'\n      reason: piping a download into a shell runs unreviewed code\n      id: no-curl-pipe\n{dated}"),
    );
    assert!(text.contains("id: no-curl-pipe"));
    format!("{text}\n{extra}")
}

/// The S3 client of the tooling account.
pub fn s3(aws: &AwsContext, region: &str) -> aws_sdk_s3::Client {
    aws.s3(aws.base(), region)
}

/// Keys under `prefix` in `bucket`.
pub async fn keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list objects");
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// The configuration of `account` (the org's bootstrap role there).
pub async fn account(
    aws: &AwsContext,
    account: &str,
    region: &str,
    role: &str,
) -> aws_config::SdkConfig {
    aws.account(account, region, role, "pipeforge-tests")
        .await
        .expect("account credentials")
}

/// A stack's status, or `None` when the stack does not exist. Any other failure of the call
/// fails the test: "nothing deployed" must not pass because the API call failed.
pub async fn stack_status(
    aws: &AwsContext,
    conf: &aws_config::SdkConfig,
    region: &str,
    stack: &str,
) -> Option<String> {
    let cfn = aws.cloudformation(conf, region);
    match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(o) => o
            .stacks()
            .first()
            .and_then(|s| s.stack_status())
            .map(|s| s.as_str().to_owned()),
        Err(e)
            if e.as_service_error()
                .and_then(|x| x.meta().message())
                .is_some_and(|m| m.contains("does not exist")) =>
        {
            None
        }
        Err(e) => panic!("DescribeStacks `{stack}`: {e:?}"),
    }
}

/// A language directory with `python.yaml` changed (a tool version bumped).
pub fn python_bumped() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let src = std::fs::read_to_string(root().join("languages/python.yaml")).expect("python");
    let from = "python -m pip install ruff==0.17.6";
    assert!(src.contains(from), "the anchor is in python.yaml");
    let langs = dir.path().join("languages");
    std::fs::create_dir_all(&langs).expect("mkdir");
    std::fs::write(
        langs.join("python.yaml"),
        src.replace(from, "python -m pip install ruff==0.17.7"),
    )
    .expect("write");
    (dir, langs)
}
