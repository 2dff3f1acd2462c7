//! The normalised job: one merged pull request that passed the org policy (branch, host,
//! repository, clone URL), whatever vendor sent it. It is what the queue carries.

use serde::{Deserialize, Serialize};

use super::event::{MergeEvent, Rejection, Vendor};
use crate::org::glob_match;
use crate::org::{CloneVia, OrgWebhook};

/// A deploy to do: clone `clone_url` at `commit`, then validate, render and deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Stable id, derived from the vendor and the delivery id: a redelivered webhook has the
    /// same id (and so the same SQS deduplication id and status entry).
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
}

impl Job {
    /// The queue's ordering key: one repository, one group (`host/owner/repository`,
    /// lower-case; SQS FIFO runs one message of a group at a time, in order).
    pub fn group(&self) -> String {
        let host = clone_host(&self.clone_url).unwrap_or_else(|| "local".to_owned());
        let raw = format!("{host}/{}", self.repository).to_ascii_lowercase();
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

/// The id of the job of a delivery: `<vendor>-<delivery>` when the delivery id is short and
/// plain, else `<vendor>-<hash of it>`.
pub fn job_id(vendor: Vendor, delivery: &str) -> String {
    let plain = !delivery.is_empty()
        && delivery.len() <= 64
        && delivery
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        format!("{}-{}", vendor.as_str(), delivery.to_ascii_lowercase())
    } else {
        let h = crate::outputs::sha256(delivery.as_bytes());
        format!(
            "{}-{}",
            vendor.as_str(),
            &h.trim_start_matches("sha256:")[..32]
        )
    }
}

/// True when `id` has the shape of a job id (what `GET /jobs/{id}` accepts).
pub fn is_job_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What the policy makes of a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
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
                "branch `{}` is neither the default branch `{d}` nor in `webhook.branches`",
                event.branch
            ),
            None => format!(
                "branch `{}` is not in `webhook.branches` (the event does not name the default branch)",
                event.branch
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
    let url = check_clone_url(url, &event.repository, policy).map_err(Rejection::Forbidden)?;
    Ok(Normalised::Job(Job {
        id: job_id(event.vendor, &event.delivery),
        vendor: event.vendor,
        delivery: event.delivery,
        repository: event.repository,
        clone_url: url.url,
        commit: event.commit,
        branch: event.branch,
        pull_request: event.pull_request,
        received_ms,
    }))
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
            repository.escape_debug()
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
            "repository `{repository}` is not in `webhook.allowed_repositories` of the org policy"
        ))
    }
}

/// A clone URL that passed the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneUrl {
    /// The URL, as given.
    pub url: String,
    /// True for a local path (test setups with `webhook.allow_local_prefix`).
    pub local: bool,
}

/// The host of an `https://`, `ssh://` or `user@host:path` URL (lower-case, without port).
pub fn clone_host(url: &str) -> Option<String> {
    let authority = if let Some((_, rest)) = url.split_once("://") {
        rest.split('/').next()?
    } else if url.starts_with('/') {
        return None;
    } else {
        url.split(':').next()?
    };
    let host_port = authority.rsplit('@').next()?;
    let host = host_port.split(':').next()?;
    Some(host.to_ascii_lowercase())
}

/// Checks a clone URL from an event against the policy. Accepted: `https://host[:port]/path`,
/// `ssh://[user@]host[:port]/path` and `user@host:path`, on a host of `webhook.allowed_hosts`,
/// whose path names `repository`; or, only with `webhook.allow_local_prefix`, an absolute local
/// path under that prefix. Refused: every other scheme (`http`, `git`, `file`, `ext::`, any
/// `transport::address`), credentials in the URL (a password, or any user in `https`), option
/// look-alikes (`-u...`), whitespace and control characters, `..` path segments, queries and
/// fragments.
pub fn check_clone_url(
    url: &str,
    repository: &str,
    policy: &OrgWebhook,
) -> Result<CloneUrl, String> {
    let shown = url.escape_debug().to_string();
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
    let repo_lower = repository.to_ascii_lowercase();
    let names_repo = |path: &str| {
        let p = path.to_ascii_lowercase();
        let p = p.trim_end_matches('/');
        let p = p.strip_suffix(".git").unwrap_or(p);
        p == repo_lower || p.ends_with(&format!("/{repo_lower}"))
    };
    let segments_ok = |path: &str| !path.split('/').any(|s| s == ".." || s == ".");
    if url.starts_with('/') {
        let Some(prefix) = &policy.allow_local_prefix else {
            return refuse("local paths are not allowed (https and ssh only)");
        };
        let prefix = prefix.trim_end_matches('/');
        if !segments_ok(url) || url.contains("//") || !url.starts_with(&format!("{prefix}/")) {
            return refuse("the local path is not under `webhook.allow_local_prefix`");
        }
        if !names_repo(url) {
            return refuse(&format!("its path does not name repository `{repository}`"));
        }
        return Ok(CloneUrl {
            url: url.to_owned(),
            local: true,
        });
    }
    let (authority, path) = if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "ssh" {
            return refuse(&format!(
                "scheme `{scheme}` is not allowed (https and ssh only)"
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
            "host `{host}` is not in `webhook.allowed_hosts` of the org policy"
        ));
    }
    if !segments_ok(&path) || path.contains("//") {
        return refuse("`.` and `..` path segments are not allowed");
    }
    if !names_repo(&path) {
        return refuse(&format!("its path does not name repository `{repository}`"));
    }
    Ok(CloneUrl {
        url: url.to_owned(),
        local: false,
    })
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
        check_clone_url(url, repo, &policy()).is_ok()
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
        assert!(
            check_clone_url("ssh://git@bitbucket.example.com:22/pay/x.git", "PAY/x", &p).is_err()
        );
        assert!(
            check_clone_url(
                "ssh://git@bitbucket.example.com:7999/pay/x.git",
                "PAY/x",
                &p
            )
            .is_ok()
        );
        // The URL must point at the repository the event names.
        let e = check_clone_url(
            "https://github.com/evil/orders-api.git",
            "payments/orders-api",
            &policy(),
        )
        .expect_err("other repository");
        assert!(e.contains("does not name repository"), "{e}");
    }

    #[test]
    fn local_paths_only_under_the_explicit_prefix() {
        let mut p = policy();
        assert!(check_clone_url("/tmp/t/payments/app.git", "payments/app", &p).is_err());
        p.allow_local_prefix = Some("/tmp/t".to_owned());
        let u = check_clone_url("/tmp/t/payments/app.git", "payments/app", &p).expect("local");
        assert!(u.local);
        for bad in [
            "/tmp/t/../etc/payments/app.git",
            "/tmp/tx/payments/app.git",
            "/tmp/t//payments/app.git",
            "/tmp/t/payments/other.git",
        ] {
            assert!(check_clone_url(bad, "payments/app", &p).is_err(), "{bad}");
        }
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
        assert_eq!(j.id, "github-abc-123");
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
    fn job_ids_are_stable_and_plain() {
        assert_eq!(job_id(Vendor::Github, "ABC-1"), "github-abc-1");
        let odd = job_id(Vendor::BitbucketCloud, "{a b}/../x");
        assert!(is_job_id(&odd), "{odd}");
        assert_eq!(odd, job_id(Vendor::BitbucketCloud, "{a b}/../x"));
        assert!(!is_job_id("../etc"));
    }
}
