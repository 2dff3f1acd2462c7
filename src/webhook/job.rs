//! The normalised job: one merged pull request that passed the org policy (branch, host,
//! repository, clone URL), whatever vendor sent it, or one opened or updated pull request that
//! passed the same policy ([`JobKind::PullRequest`]: feedback only). It is what the queue
//! carries.

use serde::{Deserialize, Serialize};

use std::path::{Component, Path, PathBuf};

use super::event::{MergeEvent, PullRequestEvent, Rejection, Vendor, short};
use crate::org::glob_match;
use crate::org::{CloneVia, OrgWebhook};

/// A deploy to do: clone `clone_url` at `commit`, then validate, render and deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Stable id, derived from the vendor, the repository and the delivery id ([`job_id`]): a
    /// redelivered webhook has the same id (and so the same SQS deduplication id and status
    /// entry); another repository's delivery never has it.
    pub id: String,
    /// Who sent the event.
    pub vendor: Vendor,
    /// The vendor's delivery id.
    pub delivery: String,
    /// `owner/repository`.
    pub repository: String,
    /// Where to clone from (checked against the org policy).
    pub clone_url: String,
    /// The merge commit.
    pub commit: String,
    /// The branch merged into.
    pub branch: String,
    /// The pull request number.
    #[serde(default)]
    pub pull_request: Option<u64>,
    /// When the webhook was accepted (ms since the Unix epoch).
    pub received_ms: u64,
    /// SHA-256 (hex) of the capability in the job's status URL (the capability itself is only
    /// in the 202 answer); empty for a job that has none.
    #[serde(default)]
    pub status_capability: String,
    /// A merge (deploys) or a pull request (feedback only; `commit` is its head and `branch`
    /// its target).
    #[serde(default)]
    pub kind: JobKind,
}

/// What a job is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum JobKind {
    /// A merged pull request: clone, check and deploy.
    #[default]
    Merge,
    /// An opened or updated pull request: clone, check, compare and comment. Never deploys:
    /// the worker hands these to `preview::Previewer`, which holds no deployer.
    PullRequest(PullRequestJob),
    /// One pipeline of a fleet rollout: re-render its recorded manifest with a stored
    /// candidate set and deploy it. `repository` and `commit` are the deploy record's; the
    /// worker checks every field against what it reads itself (`webhook::rollout`).
    Rollout(RolloutJob),
}

/// The parts of a rollout job: references only, never a template, a policy or a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutJob {
    /// The rollout's id (its state is `fleet/rollouts/<id>.json` in the source bucket).
    pub rollout: String,
    /// The candidate's hash (`sha256:<hex>`; stored as `fleet/candidates/<hex>.json`).
    pub candidate: String,
    /// The pipeline to deploy.
    pub pipeline: String,
}

/// The parts of a pull-request job a merge does not have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestJob {
    /// The pull request number.
    pub number: u64,
    /// The ref that holds the head (see [`PullRequestEvent::head_ref`]).
    pub head_ref: String,
    /// The repository's web address (checked: https on an allowed host), for links.
    pub web_url: Option<String>,
    /// The GitHub App installation that sent the event.
    pub installation: Option<u64>,
}

impl Job {
    /// The queue's ordering key: one repository, one group (`host/owner/repository`,
    /// lower-case; SQS FIFO runs one message of a group at a time, in order). A pull request
    /// has a group of its own (`.../pull/N`): its pushes are handled in order, and never hold
    /// up the repository's deploys.
    pub fn group(&self) -> String {
        let host = clone_host(&self.clone_url).unwrap_or_else(|| "local".to_owned());
        let pull = match &self.kind {
            // A rollout's deploy waits behind the repository's merges, and they behind it.
            JobKind::Merge | JobKind::Rollout(_) => String::new(),
            JobKind::PullRequest(p) => format!("/pull/{}", p.number),
        };
        let raw = format!("{host}/{}{pull}", self.repository).to_ascii_lowercase();
        let clean: String = raw
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '-' })
            .collect();
        if clean.len() <= 128 {
            clean
        } else {
            crate::outputs::sha256(raw.as_bytes())
                .trim_start_matches("sha256:")
                .to_owned()
        }
    }
}

/// The id of the job of a delivery: `<vendor>-<32 hex digits>`, a hash of the repository's
/// queue group (host and repository, lower-case) and the delivery id exactly as sent. A
/// redelivery has the same id; the same delivery id sent for another repository, or in another
/// case, does not.
pub fn job_id(vendor: Vendor, group: &str, delivery: &str) -> String {
    let h = crate::outputs::sha256(format!("{group}\n{delivery}").as_bytes());
    format!(
        "{}-{}",
        vendor.as_str(),
        &h.trim_start_matches("sha256:")[..32]
    )
}

/// True when `id` has the shape of a job id (what `GET /jobs/{id}/{capability}` accepts).
pub fn is_job_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What the policy makes of a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per request, moved once into the queue
pub enum Normalised {
    /// A job to enqueue.
    Job(Job),
    /// Not for us (another branch), with the reason.
    Ignored(String),
}

/// Applies the org's webhook policy to a merge: the branch must be the repository's default
/// branch (as the event names it) or one of `webhook.branches`; the repository must match
/// `webhook.allowed_repositories`; the clone URL must pass [`check_clone_url`].
pub fn normalise(
    event: MergeEvent,
    policy: &OrgWebhook,
    received_ms: u64,
) -> Result<Normalised, Rejection> {
    let default_ok = event.default_branch.as_deref() == Some(event.branch.as_str());
    let listed = policy.branches.iter().any(|p| glob_match(p, &event.branch));
    if !default_ok && !listed {
        let why = match &event.default_branch {
            Some(d) => format!(
                "branch `{}` is neither the default branch `{}` nor in `webhook.branches`",
                short(&event.branch),
                short(d)
            ),
            None => format!(
                "branch `{}` is not in `webhook.branches` (the event does not name the default branch)",
                short(&event.branch)
            ),
        };
        return Ok(Normalised::Ignored(why));
    }
    let url = match policy.clone_via {
        CloneVia::Https => event.clone_https.as_ref().or(event.clone_ssh.as_ref()),
        CloneVia::Ssh => event.clone_ssh.as_ref().or(event.clone_https.as_ref()),
    }
    .ok_or_else(|| Rejection::Malformed("the event has no clone URL".to_owned()))?;
    check_repository(&event.repository, policy).map_err(Rejection::Forbidden)?;
    let url = check_clone_url(url, &event.repository, event.vendor, policy)
        .map_err(Rejection::Forbidden)?;
    let mut job = Job {
        id: String::new(),
        vendor: event.vendor,
        delivery: event.delivery,
        repository: event.repository,
        clone_url: url.url,
        commit: event.commit,
        branch: event.branch,
        pull_request: event.pull_request,
        received_ms,
        status_capability: String::new(),
        kind: JobKind::Merge,
    };
    job.id = job_id(job.vendor, &job.group(), &job.delivery);
    Ok(Normalised::Job(job))
}

/// Applies the same policy to an opened or updated pull request: previews must be on
/// (`webhook.pull_requests.enabled`), the target branch must be one whose merges deploy, the
/// repository and clone URL must pass as for a merge, and the head ref must be a plain ref.
pub fn normalise_pull_request(
    event: PullRequestEvent,
    policy: &OrgWebhook,
    received_ms: u64,
) -> Result<Normalised, Rejection> {
    if !policy.pull_requests.enabled {
        return Ok(Normalised::Ignored(
            "pull-request previews are off (`webhook.pull_requests.enabled` in the org policy)"
                .to_owned(),
        ));
    }
    let default_ok = event.default_branch.as_deref() == Some(event.branch.as_str());
    let listed = policy.branches.iter().any(|p| glob_match(p, &event.branch));
    if !default_ok && !listed {
        return Ok(Normalised::Ignored(format!(
            "the pull request targets branch `{}`, whose merges do not deploy",
            short(&event.branch)
        )));
    }
    let ref_ok = event
        .head_ref
        .strip_prefix("refs/")
        .is_some_and(super::git::plain_branch);
    if !ref_ok {
        return Err(Rejection::Malformed(format!(
            "`{}` is not a plain branch name",
            short(&event.head_ref)
        )));
    }
    let url = match policy.clone_via {
        CloneVia::Https => event.clone_https.as_ref().or(event.clone_ssh.as_ref()),
        CloneVia::Ssh => event.clone_ssh.as_ref().or(event.clone_https.as_ref()),
    }
    .ok_or_else(|| Rejection::Malformed("the event has no clone URL".to_owned()))?;
    check_repository(&event.repository, policy).map_err(Rejection::Forbidden)?;
    let url = check_clone_url(url, &event.repository, event.vendor, policy)
        .map_err(Rejection::Forbidden)?;
    let web_url = event.web_url.filter(|w| web_url_ok(w, policy));
    let mut job = Job {
        id: String::new(),
        vendor: event.vendor,
        delivery: event.delivery,
        repository: event.repository,
        clone_url: url.url,
        commit: event.head_commit,
        branch: event.branch,
        pull_request: Some(event.number),
        received_ms,
        status_capability: String::new(),
        kind: JobKind::PullRequest(PullRequestJob {
            number: event.number,
            head_ref: event.head_ref,
            web_url,
            installation: event.installation,
        }),
    };
    job.id = job_id(job.vendor, &job.group(), &job.delivery);
    Ok(Normalised::Job(job))
}

/// True for a web address pipeforge may link to: `https://` on an allowed host, plain
/// characters only.
pub fn web_url_ok(url: &str, policy: &OrgWebhook) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let host = rest
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    url.len() <= 512
        && url
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/:%".contains(c))
        && policy.allowed_hosts.iter().any(|h| {
            h.split(':')
                .next()
                .is_some_and(|h| h.eq_ignore_ascii_case(&host))
        })
}

/// The repository must look like `owner/name` and match `webhook.allowed_repositories`.
pub fn check_repository(repository: &str, policy: &OrgWebhook) -> Result<(), String> {
    let parts: Vec<&str> = repository.split('/').collect();
    let shaped = parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.len() <= 100
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if !shaped {
        return Err(format!(
            "repository `{}` is not of the form `owner/name`",
            short(repository)
        ));
    }
    let lower = repository.to_ascii_lowercase();
    if policy
        .allowed_repositories
        .iter()
        .any(|p| glob_match(&p.to_ascii_lowercase(), &lower))
    {
        Ok(())
    } else {
        Err(format!(
            "repository `{}` is not in `webhook.allowed_repositories` of the org policy",
            short(repository)
        ))
    }
}

/// A clone URL that passed the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneUrl {
    /// The URL, as given (a local path: with every symlink resolved).
    pub url: String,
    /// True for a local path (test setups with `webhook.allow_local_prefix`).
    pub local: bool,
}

/// The host of an `https://`, `ssh://` or `user@host:path` URL (lower-case, without port).
pub fn clone_host(url: &str) -> Option<String> {
    crate::owner::url_host(url)
}

/// Checks a clone URL from an event against the policy. Accepted: `https://host[:port]/path`,
/// `ssh://[user@]host[:port]/path` and `user@host:path`, on a host of `webhook.allowed_hosts`,
/// whose path is exactly the repository's, `/<owner>/<name>` with an optional `.git` (compared
/// without case; Bitbucket Data Center's `/scm/<project>/<slug>` for that vendor); or, only with
/// `webhook.allow_local_prefix`, a local path that, with every symlink resolved, is
/// `<prefix>/<owner>/<name>[.git]` (the URL kept is the resolved path). Refused: every other
/// scheme (`http`, `git`, `file`, `ext::`, any `transport::address`), credentials in the URL (a
/// password, or any user in `https`), option look-alikes (`-u...`), whitespace and control
/// characters, `.` and `..` path segments, queries and fragments, and any other path (a
/// repository whose path merely ends with `/<owner>/<name>` is another repository).
pub fn check_clone_url(
    url: &str,
    repository: &str,
    vendor: Vendor,
    policy: &OrgWebhook,
) -> Result<CloneUrl, String> {
    let shown = short(url);
    let refuse = |why: &str| Err(format!("clone URL `{shown}` is refused: {why}"));
    if url.is_empty() || url.len() > 2048 {
        return refuse("it is empty or too long");
    }
    if url.starts_with('-') {
        return refuse("it looks like a command-line option");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("it contains whitespace or control characters");
    }
    if url.contains("::") {
        return refuse("`<transport>::<address>` URLs are not allowed");
    }
    if url.contains(['?', '#', '\\']) {
        return refuse("queries, fragments and backslashes are not allowed");
    }
    let segments_ok = |path: &str| !path.split('/').any(|s| s == ".." || s == ".");
    if url.starts_with('/') {
        let Some(prefix) = &policy.allow_local_prefix else {
            return refuse("local paths are not allowed (https and ssh only)");
        };
        if !segments_ok(url) || url.contains("//") {
            return refuse("the local path is not under `webhook.allow_local_prefix`");
        }
        return match local_path(url, prefix, repository) {
            Ok(path) => Ok(CloneUrl {
                url: path.display().to_string(),
                local: true,
            }),
            Err(why) => refuse(&why),
        };
    }
    let (authority, path) = if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "ssh" {
            return refuse(&format!(
                "scheme `{}` is not allowed (https and ssh only)",
                short(&scheme)
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((user, _)) = authority.rsplit_once('@') {
            if scheme == "https" {
                return refuse("credentials inside the URL are not allowed");
            }
            if user.contains(':') || !plain_user(user) {
                return refuse("credentials inside the URL are not allowed");
            }
        }
        (authority, format!("/{path}"))
    } else {
        // scp-like `user@host:path`.
        let Some((user_host, path)) = url.split_once(':') else {
            return refuse("it is not an https or ssh URL");
        };
        let Some((user, host)) = user_host.split_once('@') else {
            return refuse("it is not an https or ssh URL");
        };
        if !plain_user(user) || host.contains('@') || path.starts_with('/') && path.len() < 2 {
            return refuse("it is not an https or ssh URL");
        }
        (host, format!("/{}", path.trim_start_matches('/')))
    };
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match host_port.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    let host = host.to_ascii_lowercase();
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok || port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return refuse("its host is not a host name");
    }
    let allowed = policy.allowed_hosts.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match entry.split_once(':') {
            Some((h, p)) => h == host && port == Some(p),
            None => entry == host,
        }
    });
    if !allowed {
        return refuse(&format!(
            "host `{}` is not in `webhook.allowed_hosts` of the org policy",
            short(&host)
        ));
    }
    if !segments_ok(&path) || path.contains("//") {
        return refuse("`.` and `..` path segments are not allowed");
    }
    if !names_repository(&path, repository, vendor) {
        return refuse(&format!(
            "its path is not the path of repository `{}`",
            short(repository)
        ));
    }
    Ok(CloneUrl {
        url: url.to_owned(),
        local: false,
    })
}

/// True when `path` (of an https or ssh URL) is exactly the repository's: `/<owner>/<name>`
/// with an optional `.git`, without case; for Bitbucket Data Center also `/scm/<owner>/<name>`.
fn names_repository(path: &str, repository: &str, vendor: Vendor) -> bool {
    let p = path.to_ascii_lowercase();
    let p = p.strip_suffix(".git").unwrap_or(&p);
    let repo = repository.to_ascii_lowercase();
    p == format!("/{repo}") || (vendor == Vendor::BitbucketServer && p == format!("/scm/{repo}"))
}

/// A local clone path that, every symlink resolved, is `<prefix>/<owner>/<name>[.git]` with
/// the prefix resolved too; the resolved path, or why not.
fn local_path(url: &str, prefix: &str, repository: &str) -> Result<PathBuf, String> {
    let outside = || "the local path is not under `webhook.allow_local_prefix`".to_owned();
    let prefix = std::fs::canonicalize(prefix).map_err(|_| outside())?;
    let path = canonical(Path::new(url)).map_err(|_| outside())?;
    let rel = path.strip_prefix(&prefix).map_err(|_| outside())?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_string_lossy().to_ascii_lowercase(),
            _ => String::new(),
        })
        .collect();
    let repo = repository.to_ascii_lowercase();
    let joined = parts.join("/");
    if joined == repo || joined == format!("{repo}.git") {
        Ok(path)
    } else {
        Err(format!(
            "its path is not `<allow_local_prefix>/{}[.git]`",
            short(repository)
        ))
    }
}

/// `p` with every symlink resolved; a path that does not exist (yet) keeps its missing tail.
fn canonical(p: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(p) {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
                return Err(e);
            };
            Ok(canonical(parent)?.join(name))
        }
        Err(e) => Err(e),
    }
}

fn plain_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OrgWebhook {
        OrgWebhook {
            allowed_hosts: vec![
                "github.com".to_owned(),
                "bitbucket.example.com:7999".to_owned(),
                "bitbucket.example.com".to_owned(),
            ],
            allowed_repositories: vec!["payments/*".to_owned(), "PAY/*".to_owned()],
            branches: vec!["main".to_owned(), "release/*".to_owned()],
            ..OrgWebhook::default()
        }
    }

    fn ok(url: &str, repo: &str) -> bool {
        check(url, repo, &policy()).is_ok()
    }

    /// `check_clone_url` for the vendor whose URLs look like `url`.
    fn check(url: &str, repo: &str, p: &OrgWebhook) -> Result<CloneUrl, String> {
        let vendor = if url.contains("/scm/") {
            Vendor::BitbucketServer
        } else {
            Vendor::Github
        };
        check_clone_url(url, repo, vendor, p)
    }

    #[test]
    fn https_and_ssh_on_allowed_hosts_naming_the_repository() {
        assert!(ok(
            "https://github.com/payments/orders-api.git",
            "payments/orders-api"
        ));
        assert!(ok(
            "https://GitHub.com/Payments/Orders-API",
            "payments/orders-api"
        ));
        assert!(ok(
            "git@github.com:payments/orders-api.git",
            "payments/orders-api"
        ));
        assert!(ok(
            "ssh://git@bitbucket.example.com:7999/pay/orders-api.git",
            "PAY/orders-api"
        ));
        assert!(ok(
            "https://bitbucket.example.com/scm/pay/orders-api.git",
            "PAY/orders-api"
        ));
    }

    #[test]
    fn refuses_other_schemes_credentials_and_option_lookalikes() {
        let repo = "payments/orders-api";
        for url in [
            "http://github.com/payments/orders-api.git",
            "git://github.com/payments/orders-api.git",
            "file:///srv/git/payments/orders-api.git",
            "ext::sh -c touch% /tmp/pwned",
            "ext::ssh -oProxyCommand=evil github.com/payments/orders-api",
            "fd::17/payments/orders-api",
            "-uevil github.com:payments/orders-api",
            "--upload-pack=touch /tmp/x",
            "https://token@github.com/payments/orders-api.git",
            "https://user:pass@github.com/payments/orders-api.git",
            "ssh://git:pass@github.com/payments/orders-api.git",
            "https://github.com/payments/orders-api.git?x=1",
            "https://github.com/payments/../evil/orders-api.git",
            "https://github.com/payments/orders-api.git\n",
            "/srv/git/payments/orders-api.git",
            "github.com:payments/orders-api.git",
            "",
        ] {
            assert!(!ok(url, repo), "accepted {url:?}");
        }
    }

    #[test]
    fn refuses_hosts_and_paths_outside_the_policy() {
        assert!(!ok(
            "https://evil.example/payments/orders-api.git",
            "payments/orders-api"
        ));
        assert!(!ok(
            "https://github.com.evil.example/payments/orders-api.git",
            "payments/orders-api"
        ));
        // The port must match when the policy pins one for that host only.
        let mut p = policy();
        p.allowed_hosts = vec!["bitbucket.example.com:7999".to_owned()];
        assert!(check("ssh://git@bitbucket.example.com:22/pay/x.git", "PAY/x", &p).is_err());
        assert!(
            check(
                "ssh://git@bitbucket.example.com:7999/pay/x.git",
                "PAY/x",
                &p
            )
            .is_ok()
        );
        // The URL must point at the repository the event names.
        let e = check(
            "https://github.com/evil/orders-api.git",
            "payments/orders-api",
            &policy(),
        )
        .expect_err("other repository");
        assert!(e.contains("is not the path of repository"), "{e}");
    }

    #[test]
    fn the_path_must_be_the_repository_exactly_not_end_with_it() {
        let repo = "payments/orders-api";
        for url in [
            "https://github.com/attacker/payments/orders-api.git",
            "https://github.com/attacker/payments/orders-api",
            "git@github.com:attacker/payments/orders-api.git",
            "ssh://git@github.com/x/payments/orders-api.git",
            "https://github.com/payments/orders-api.git/x",
            "https://github.com/payments/orders-api.gitx",
            "https://github.com/payments/orders-api/",
            // `/scm/` is Bitbucket Data Center's, not GitHub's.
            "https://github.com/scm/payments/orders-api.git",
        ] {
            assert!(
                check_clone_url(url, repo, Vendor::Github, &policy()).is_err(),
                "accepted {url:?}"
            );
        }
        assert!(
            check_clone_url(
                "https://bitbucket.example.com/x/scm/pay/orders-api.git",
                "PAY/orders-api",
                Vendor::BitbucketServer,
                &policy()
            )
            .is_err()
        );
    }

    #[test]
    fn local_paths_only_under_the_explicit_prefix() {
        let t = tempfile::tempdir().expect("tempdir");
        let base = t.path().join("t");
        std::fs::create_dir_all(base.join("payments/app.git")).expect("mkdir");
        std::fs::create_dir_all(t.path().join("elsewhere/payments/app.git")).expect("mkdir");
        let at = |rel: &str| format!("{}/{rel}", base.display());
        let mut p = policy();
        assert!(check(&at("payments/app.git"), "payments/app", &p).is_err());
        p.allow_local_prefix = Some(base.display().to_string());
        let u = check(&at("payments/app.git"), "payments/app", &p).expect("local");
        assert!(u.local);
        assert!(
            check(&at("payments/app"), "payments/app", &p).is_ok(),
            "no .git yet"
        );
        // A symlinked directory under the prefix does not lead out of it.
        std::os::unix::fs::symlink(t.path().join("elsewhere"), base.join("jump")).expect("link");
        for bad in [
            at("../elsewhere/payments/app.git"),
            format!("{}x/payments/app.git", base.display()),
            at("/payments/app.git"),
            at("payments/other.git"),
            at("jump/payments/app.git"),
            at("attacker/payments/app.git"),
            "/etc/payments/app.git".to_owned(),
        ] {
            assert!(check(&bad, "payments/app", &p).is_err(), "{bad}");
        }
        // A symlink that stays under the prefix is resolved: the URL kept is the real path.
        std::os::unix::fs::symlink(base.join("payments"), base.join("alias")).expect("link");
        let u = check(&at("alias/app.git"), "payments/app", &p).expect("resolved inside");
        assert_eq!(u.url, at("payments/app.git"));
    }

    #[test]
    fn repositories_must_be_allowed_and_well_formed() {
        let p = policy();
        assert!(check_repository("payments/orders-api", &p).is_ok());
        assert!(
            check_repository("pay/orders-api", &p).is_ok(),
            "case-insensitive"
        );
        assert!(check_repository("other/orders-api", &p).is_err());
        assert!(check_repository("payments/../x", &p).is_err());
        assert!(check_repository("payments", &p).is_err());
        assert!(check_repository("payments/a/b", &p).is_err());
    }

    fn event(branch: &str, default: Option<&str>) -> MergeEvent {
        MergeEvent {
            vendor: Vendor::Github,
            delivery: "abc-123".to_owned(),
            repository: "payments/orders-api".to_owned(),
            clone_https: Some("https://github.com/payments/orders-api.git".to_owned()),
            clone_ssh: Some("git@github.com:payments/orders-api.git".to_owned()),
            commit: "3a0f86fb8db8eea7ccbb9a95f325ddbedfb25e15".to_owned(),
            branch: branch.to_owned(),
            default_branch: default.map(str::to_owned),
            pull_request: Some(1),
        }
    }

    #[test]
    fn branches_are_the_default_one_or_listed_ones() {
        let p = policy();
        let Ok(Normalised::Job(j)) = normalise(event("main", Some("main")), &p, 5) else {
            panic!("main deploys")
        };
        assert_eq!(
            j.id,
            job_id(Vendor::Github, "github.com/payments/orders-api", "abc-123")
        );
        assert_eq!(j.group(), "github.com/payments/orders-api");
        assert_eq!(j.clone_url, "https://github.com/payments/orders-api.git");
        assert!(matches!(
            normalise(event("develop", Some("develop")), &p, 5),
            Ok(Normalised::Job(_))
        ));
        assert!(matches!(
            normalise(event("release/2.x", None), &p, 5),
            Ok(Normalised::Job(_))
        ));
        assert!(matches!(
            normalise(event("feature/x", Some("main")), &p, 5),
            Ok(Normalised::Ignored(r)) if r.contains("neither the default branch `main`")
        ));
        let mut ssh = p.clone();
        ssh.clone_via = CloneVia::Ssh;
        let Ok(Normalised::Job(j)) = normalise(event("main", Some("main")), &ssh, 5) else {
            panic!("main deploys")
        };
        assert_eq!(j.clone_url, "git@github.com:payments/orders-api.git");
        let mut other = event("main", Some("main"));
        other.repository = "intruder/orders-api".to_owned();
        assert!(matches!(
            normalise(other, &p, 5),
            Err(Rejection::Forbidden(_))
        ));
    }

    #[test]
    fn job_ids_are_stable_plain_and_tied_to_the_repository() {
        let a = job_id(Vendor::Github, "github.com/payments/a", "ABC-1");
        assert_eq!(a, job_id(Vendor::Github, "github.com/payments/a", "ABC-1"));
        assert!(
            is_job_id(&a) && a.starts_with("github-") && a.len() == 39,
            "{a}"
        );
        for other in [
            job_id(Vendor::Github, "github.com/payments/b", "ABC-1"),
            job_id(Vendor::Github, "github.com/payments/a", "abc-1"),
            job_id(Vendor::BitbucketCloud, "github.com/payments/a", "ABC-1"),
        ] {
            assert_ne!(a, other);
        }
        let odd = job_id(Vendor::BitbucketCloud, "x/y", "{a b}/../x");
        assert!(is_job_id(&odd), "{odd}");
        assert!(!is_job_id("../etc"));
        // Through `normalise`: one delivery id, two repositories, two jobs.
        let p = policy();
        let mut other = event("main", Some("main"));
        other.repository = "payments/billing".to_owned();
        other.clone_https = Some("https://github.com/payments/billing.git".to_owned());
        let (Ok(Normalised::Job(x)), Ok(Normalised::Job(y))) = (
            normalise(event("main", Some("main")), &p, 1),
            normalise(other, &p, 1),
        ) else {
            panic!("both deploy")
        };
        assert_ne!(x.id, y.id);
    }

    /// A job with the given repository, clone URL and kind (for the queue group).
    fn job(repository: &str, clone_url: &str, kind: JobKind) -> Job {
        Job {
            id: String::new(),
            vendor: Vendor::Github,
            delivery: "d".to_owned(),
            repository: repository.to_owned(),
            clone_url: clone_url.to_owned(),
            commit: "c".to_owned(),
            branch: "main".to_owned(),
            pull_request: None,
            received_ms: 0,
            status_capability: String::new(),
            kind,
        }
    }

    fn pr_kind(number: u64) -> JobKind {
        JobKind::PullRequest(PullRequestJob {
            number,
            head_ref: "refs/pull/7/head".to_owned(),
            web_url: None,
            installation: None,
        })
    }

    #[test]
    fn queue_groups_per_repository_pull_request_and_plain_characters() {
        let url = "https://GitHub.com/Payments/App.git";
        let merge = job("Payments/App", url, JobKind::Merge);
        assert_eq!(merge.group(), "github.com/payments/app");
        let rollout = JobKind::Rollout(RolloutJob {
            rollout: "r".to_owned(),
            candidate: "sha256:00".to_owned(),
            pipeline: "p".to_owned(),
        });
        assert_eq!(job("Payments/App", url, rollout).group(), merge.group());
        assert_eq!(
            job("Payments/App", url, pr_kind(7)).group(),
            "github.com/payments/app/pull/7"
        );
        // A local clone has no host; a character outside printable ASCII becomes `-`.
        assert_eq!(
            job(
                "payments/a b\u{e9}",
                "/srv/git/payments/app",
                JobKind::Merge
            )
            .group(),
            "local/payments/a-b-"
        );
        // Up to 128 characters the group is readable; beyond, it is the hash of the group.
        let at = |n: usize| {
            let repo = format!("p/{}", "a".repeat(n - "github.com/p/".len()));
            job(&repo, "https://github.com/p/x", JobKind::Merge).group()
        };
        assert_eq!(at(128).len(), 128);
        assert!(at(128).starts_with("github.com/p/aaa"));
        let hashed = at(129);
        assert_eq!(hashed.len(), 64, "{hashed}");
        assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()), "{hashed}");
        assert_ne!(hashed, at(130));
    }

    #[test]
    fn job_ids_have_a_bounded_plain_shape() {
        assert!(is_job_id(&"a".repeat(100)));
        assert!(!is_job_id(&"a".repeat(101)));
        assert!(!is_job_id(""));
        assert!(is_job_id("github-0f_A"));
        for bad in ["a/b", "a.b", "a b", "a%2f", "\u{e9}"] {
            assert!(!is_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_merge_becomes_a_job_with_the_events_fields() {
        let p = policy();
        let Ok(Normalised::Job(j)) = normalise(event("main", Some("main")), &p, 42) else {
            panic!("main deploys")
        };
        assert_eq!(
            (
                j.vendor,
                j.delivery.as_str(),
                j.repository.as_str(),
                j.commit.as_str(),
                j.branch.as_str(),
                j.pull_request,
                j.received_ms,
                &j.kind
            ),
            (
                Vendor::Github,
                "abc-123",
                "payments/orders-api",
                "3a0f86fb8db8eea7ccbb9a95f325ddbedfb25e15",
                "main",
                Some(1),
                42,
                &JobKind::Merge
            )
        );
        // Without a default branch in the event, only the listed branches deploy.
        assert!(matches!(
            normalise(event("develop", None), &p, 5),
            Ok(Normalised::Ignored(r)) if r.contains("does not name the default branch")
        ));
        // One clone URL only: that one, whatever the policy prefers.
        let mut only_ssh = event("main", Some("main"));
        only_ssh.clone_https = None;
        let Ok(Normalised::Job(j)) = normalise(only_ssh, &p, 5) else {
            panic!("ssh only")
        };
        assert_eq!(j.clone_url, "git@github.com:payments/orders-api.git");
        let mut ssh = p.clone();
        ssh.clone_via = CloneVia::Ssh;
        let mut only_https = event("main", Some("main"));
        only_https.clone_ssh = None;
        let Ok(Normalised::Job(j)) = normalise(only_https, &ssh, 5) else {
            panic!("https only")
        };
        assert_eq!(j.clone_url, "https://github.com/payments/orders-api.git");
        let mut none = event("main", Some("main"));
        (none.clone_https, none.clone_ssh) = (None, None);
        assert!(matches!(
            normalise(none, &p, 5),
            Err(Rejection::Malformed(_))
        ));
        // A clone URL on another host is refused, not cloned.
        let mut elsewhere = event("main", Some("main"));
        elsewhere.clone_https = Some("https://evil.example/payments/orders-api.git".to_owned());
        assert!(matches!(
            normalise(elsewhere, &p, 5),
            Err(Rejection::Forbidden(r)) if r.contains("allowed_hosts")
        ));
    }

    fn pull_request(branch: &str, default: Option<&str>) -> PullRequestEvent {
        PullRequestEvent {
            vendor: Vendor::Github,
            delivery: "pr-1".to_owned(),
            repository: "payments/orders-api".to_owned(),
            clone_https: Some("https://github.com/payments/orders-api.git".to_owned()),
            clone_ssh: Some("git@github.com:payments/orders-api.git".to_owned()),
            head_commit: "1111111111111111111111111111111111111111".to_owned(),
            head_ref: "refs/pull/7/head".to_owned(),
            branch: branch.to_owned(),
            default_branch: default.map(str::to_owned),
            number: 7,
            web_url: Some("https://github.com/payments/orders-api".to_owned()),
            installation: Some(99),
        }
    }

    fn previews() -> OrgWebhook {
        let mut p = policy();
        p.pull_requests.enabled = true;
        p
    }

    #[test]
    fn a_pull_request_becomes_a_feedback_job_under_the_merge_policy() {
        let p = previews();
        let Ok(Normalised::Job(j)) = normalise_pull_request(pull_request("main", None), &p, 9)
        else {
            panic!("a pull request into a deploying branch is previewed")
        };
        assert_eq!(
            j.kind,
            JobKind::PullRequest(PullRequestJob {
                number: 7,
                head_ref: "refs/pull/7/head".to_owned(),
                web_url: Some("https://github.com/payments/orders-api".to_owned()),
                installation: Some(99),
            })
        );
        assert_eq!(
            (
                j.commit.as_str(),
                j.branch.as_str(),
                j.pull_request,
                j.received_ms,
                j.delivery.as_str(),
                j.clone_url.as_str()
            ),
            (
                "1111111111111111111111111111111111111111",
                "main",
                Some(7),
                9,
                "pr-1",
                "https://github.com/payments/orders-api.git"
            )
        );
        assert_eq!(j.group(), "github.com/payments/orders-api/pull/7");
        assert_eq!(j.id, job_id(Vendor::Github, &j.group(), "pr-1"));
        let mut ssh = p.clone();
        ssh.clone_via = CloneVia::Ssh;
        let Ok(Normalised::Job(j)) = normalise_pull_request(pull_request("main", None), &ssh, 9)
        else {
            panic!("ssh")
        };
        assert_eq!(j.clone_url, "git@github.com:payments/orders-api.git");
        // The repository's default branch deploys, listed or not.
        assert!(matches!(
            normalise_pull_request(pull_request("develop", Some("develop")), &p, 9),
            Ok(Normalised::Job(_))
        ));
    }

    #[test]
    fn pull_requests_are_ignored_or_refused_as_merges_are() {
        let p = previews();
        assert!(matches!(
            normalise_pull_request(pull_request("main", Some("main")), &policy(), 9),
            Ok(Normalised::Ignored(r)) if r.contains("previews are off")
        ));
        assert!(matches!(
            normalise_pull_request(pull_request("feature/x", Some("main")), &p, 9),
            Ok(Normalised::Ignored(r)) if r.contains("whose merges do not deploy")
        ));
        for head in ["refs/heads/../x", "heads/x", "refs/", "refs/a b"] {
            let mut e = pull_request("main", None);
            e.head_ref = head.to_owned();
            assert!(
                matches!(
                    normalise_pull_request(e, &p, 9),
                    Err(Rejection::Malformed(_))
                ),
                "{head}"
            );
        }
        let mut none = pull_request("main", None);
        (none.clone_https, none.clone_ssh) = (None, None);
        assert!(matches!(
            normalise_pull_request(none, &p, 9),
            Err(Rejection::Malformed(_))
        ));
        let mut intruder = pull_request("main", None);
        intruder.repository = "intruder/orders-api".to_owned();
        assert!(matches!(
            normalise_pull_request(intruder, &p, 9),
            Err(Rejection::Forbidden(r)) if r.contains("allowed_repositories")
        ));
        let mut elsewhere = pull_request("main", None);
        elsewhere.clone_https = Some("https://evil.example/payments/orders-api.git".to_owned());
        assert!(matches!(
            normalise_pull_request(elsewhere, &p, 9),
            Err(Rejection::Forbidden(r)) if r.contains("allowed_hosts")
        ));
        // A web address pipeforge would not link to is dropped, not the job.
        let mut link = pull_request("main", None);
        link.web_url = Some("https://evil.example/payments/orders-api".to_owned());
        let Ok(Normalised::Job(j)) = normalise_pull_request(link, &p, 9) else {
            panic!("still previewed")
        };
        assert!(matches!(j.kind, JobKind::PullRequest(r) if r.web_url.is_none()));
    }

    #[test]
    fn web_addresses_are_https_on_an_allowed_host_and_plain() {
        let p = policy();
        for good in [
            "https://github.com/payments/orders-api",
            "https://GitHub.com/payments/orders-api",
            "https://bitbucket.example.com:7999/projects/PAY/repos/x",
            "https://github.com/a_b/c~d/%20",
        ] {
            assert!(web_url_ok(good, &p), "{good}");
        }
        let long = format!("https://github.com/{}", "a".repeat(512 - 19));
        assert_eq!(long.len(), 512);
        assert!(web_url_ok(&long, &p));
        for bad in [
            "http://github.com/payments/orders-api".to_owned(),
            "https://evil.example/payments/orders-api".to_owned(),
            "https://github.com.evil.example/x".to_owned(),
            "https://github.com/a\"onclick".to_owned(),
            "https://github.com/a b".to_owned(),
            "https://github.com/<script>".to_owned(),
            format!("{long}a"),
        ] {
            assert!(!web_url_ok(&bad, &p), "{bad}");
        }
    }

    #[test]
    fn repository_names_are_two_plain_bounded_parts() {
        let mut p = policy();
        p.allowed_repositories = vec!["*".to_owned(), "*/*".to_owned()];
        let a100 = "a".repeat(100);
        assert!(check_repository(&format!("payments/{a100}"), &p).is_ok());
        assert!(check_repository("pay_ments/a.b-c_d", &p).is_ok());
        for bad in [
            format!("payments/{a100}a"),
            format!("{a100}a/x"),
            "payments/".to_owned(),
            "/payments".to_owned(),
            "payments/.".to_owned(),
            "./x".to_owned(),
            "payments/..".to_owned(),
            "payments/a b".to_owned(),
            "payments/a:b".to_owned(),
        ] {
            let e = check_repository(&bad, &p).expect_err(&bad);
            assert!(e.contains("is not of the form"), "{bad}: {e}");
        }
    }

    /// Why `check_clone_url` refuses `url` (for the vendor [`check`] picks).
    fn why(url: &str, repo: &str) -> String {
        check(url, repo, &policy()).expect_err(url)
    }

    #[test]
    fn each_refusal_of_a_clone_url_names_its_reason() {
        let repo = "payments/orders-api";
        for (url, reason) in [
            ("https://github.com/payments/orders api", "whitespace"),
            ("https://github.com/payments/./orders-api", "path segments"),
            ("https://github.com//payments/orders-api", "path segments"),
            ("https://github.com/payments/orders-api/..", "path segments"),
            ("https:///payments/orders-api", "not a host name"),
            ("https://git_hub.com/payments/orders-api", "not a host name"),
            (
                "https://github.com:99999/payments/orders-api",
                "not a host name",
            ),
            (
                "https://github.com:x/payments/orders-api",
                "not a host name",
            ),
            ("git@github.com:/", "not an https or ssh URL"),
            ("git@github.com:/x", "not the path of repository"),
            (
                "git@evil@github.com:payments/orders-api",
                "not an https or ssh URL",
            ),
            (
                "g!t@github.com:payments/orders-api",
                "not an https or ssh URL",
            ),
            ("@github.com:payments/orders-api", "not an https or ssh URL"),
            ("ssh://g!t@github.com/payments/orders-api", "credentials"),
            ("ssh://@github.com/payments/orders-api", "credentials"),
            ("ftp://github.com/payments/orders-api", "scheme `ftp`"),
            ("-github.com:payments/orders-api", "command-line option"),
        ] {
            let e = why(url, repo);
            assert!(e.contains(reason), "{url}: {e}");
        }
        // An scp-like path may start with a slash.
        assert!(ok("git@github.com:/payments/orders-api.git", repo));
        // A user of up to 64 plain characters.
        let user = "u".repeat(64);
        assert!(ok(&format!("{user}@github.com:payments/orders-api"), repo));
        assert!(ok(
            &format!("ssh://{user}@github.com/payments/orders-api"),
            repo
        ));
        let e = why(&format!("u{user}@github.com:payments/orders-api"), repo);
        assert!(e.contains("not an https or ssh URL"), "{e}");
        // A host without a pinned port takes any valid port.
        assert!(ok("https://github.com:8443/payments/orders-api", repo));
    }

    #[test]
    fn a_clone_url_may_be_up_to_2048_characters() {
        let repo = format!(
            "payments/{}",
            "a".repeat(2048 - "https://github.com/payments/".len())
        );
        let url = format!("https://github.com/{repo}");
        assert_eq!(url.len(), 2048);
        assert!(ok(&url, &repo));
        let e = why(&format!("{url}a"), &format!("{repo}a"));
        assert!(e.contains("empty or too long"), "{e}");
        assert!(why("", &repo).contains("empty or too long"));
    }

    #[test]
    fn local_paths_with_dot_or_empty_segments_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let base = t.path().join("t");
        std::fs::create_dir_all(base.join("payments/app.git")).expect("mkdir");
        let mut p = policy();
        p.allow_local_prefix = Some(base.display().to_string());
        let b = base.display();
        assert!(check(&format!("{b}/payments/app.git"), "payments/app", &p).is_ok());
        // Each of these resolves to the same directory, and is refused as written.
        for bad in [
            format!("{b}//payments/app.git"),
            format!("{b}/payments/./app.git"),
            format!("{b}/payments/x/../app.git"),
        ] {
            let e = check(&bad, "payments/app", &p).expect_err(&bad);
            assert!(e.contains("allow_local_prefix"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_local_path_that_cannot_be_resolved_is_refused() {
        // Only a missing tail is kept as written; any other error (here: a file where a
        // directory should be) refuses the path.
        let t = tempfile::tempdir().expect("tempdir");
        let base = t.path().join("t");
        std::fs::create_dir_all(&base).expect("mkdir");
        std::fs::write(base.join("payments"), "a file").expect("write");
        let mut p = policy();
        p.allow_local_prefix = Some(base.display().to_string());
        let url = format!("{}/payments/app.git", base.display());
        let e = check(&url, "payments/app", &p).expect_err("through a file");
        assert!(e.contains("allow_local_prefix"), "{e}");
    }
}
