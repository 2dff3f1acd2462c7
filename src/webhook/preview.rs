//! Pull-request jobs: clone the pull request's head, validate and render it, compare it with the
//! deployed bundle (or the target branch's render when nothing is deployed), and post one
//! comment and a commit status. Never a deploy.
//!
//! That is structural: a [`Previewer`] holds no deployer. It reads through [`DeployedBundles`]
//! (reads only) and writes only to the vendor API ([`Feedback`]); the worker hands it
//! pull-request jobs and nothing else. The clone, its limits, the file-reading rules (a regular
//! file inside the checkout, no symlink, 256 KiB) and the policy checks are the merge jobs'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::BoxFuture;
use super::git::{self, CloneLimits};
use super::job::{Job, PullRequestJob, check_clone_url, check_repository};
use super::vendor::client::ApiError;
use super::vendor::{CommitStatus, Feedback, Posted, Target};
use super::worker::JobError;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::publish::checkout;
use crate::review::markdown::{self, Flavor};
use crate::review::{Baseline, BaselineKind, Review, Verdict};
use crate::{Inputs, MAX_MANIFEST_BYTES};

/// A deployed bundle: its files and the commit it was deployed from.
#[derive(Clone, Debug, Default)]
pub struct DeployedBundle {
    /// The commit of the deploy, when recorded.
    pub commit: Option<String>,
    /// Bundle path → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Reads what is deployed for a pipeline (reads only).
pub trait DeployedBundles: Send + Sync {
    /// The bundle deployed for the pipeline of `plan`, or `None` when nothing is.
    fn deployed<'a>(
        &'a self,
        plan: &'a Plan,
        inputs: &'a Inputs,
    ) -> BoxFuture<'a, Result<Option<DeployedBundle>>>;
}

/// The deployed bundle in the org source bucket: the `pipeforge-bundle` of `source.zip`, read
/// from `bundle/<hash>/` (see `publish::store`).
pub struct S3Bundles {
    /// The AWS context.
    pub aws: Arc<crate::aws::AwsContext>,
}

impl DeployedBundles for S3Bundles {
    fn deployed<'a>(
        &'a self,
        plan: &'a Plan,
        inputs: &'a Inputs,
    ) -> BoxFuture<'a, Result<Option<DeployedBundle>>> {
        Box::pin(async move {
            let role = &inputs.org.org.deploy.bootstrap_role;
            let store = crate::publish::deployed_store(&self.aws, &inputs.org, plan, role).await?;
            Ok(store
                .deployed_bundle()
                .await?
                .map(|(commit, files)| DeployedBundle { commit, files }))
        })
    }
}

/// Bundles "deployed" in memory (`serve --render-only`, tests).
#[derive(Debug, Default)]
pub struct MemoryBundles {
    /// Source key → bundle.
    pub bundles: Mutex<BTreeMap<String, DeployedBundle>>,
}

impl DeployedBundles for MemoryBundles {
    fn deployed<'a>(
        &'a self,
        plan: &'a Plan,
        _inputs: &'a Inputs,
    ) -> BoxFuture<'a, Result<Option<DeployedBundle>>> {
        Box::pin(async move {
            Ok(self
                .bundles
                .lock()
                .ok()
                .and_then(|b| b.get(&plan.source.key).cloned()))
        })
    }
}

/// What a pull-request job did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewReport {
    /// The head commit (full hash).
    pub commit: String,
    /// The verdict posted.
    pub verdict: Verdict,
    /// The pipeline, when it rendered.
    pub pipeline: Option<String>,
    /// What it was compared with.
    pub baseline: BaselineKind,
    /// The comment.
    pub posted: Posted,
    /// Characters of the comment.
    pub comment_chars: usize,
}

/// Handles pull-request jobs. Holds no deployer: nothing it does can deploy.
pub struct Previewer {
    /// Policy, catalog and templates.
    pub inputs: Arc<Inputs>,
    /// What is deployed (reads only).
    pub deployed: Arc<dyn DeployedBundles>,
    /// The vendor APIs.
    pub feedback: Arc<dyn Feedback>,
    /// Where checkouts go.
    pub work_dir: PathBuf,
}

/// The previewer of a worker, when `webhook.pull_requests.enabled`: vendor APIs from the org
/// policy, tokens from Secrets Manager through `secrets`, deployed bundles from `deployed`.
pub fn previewer(
    inputs: &Arc<Inputs>,
    deployed: Arc<dyn DeployedBundles>,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    work_dir: PathBuf,
) -> Result<Option<Arc<Previewer>>> {
    let settings = &inputs.org.org.webhook.pull_requests;
    if !settings.enabled {
        return Ok(None);
    }
    let feedback = super::vendor::VendorFeedback::new(
        settings,
        secrets,
        super::vendor::client::Retry::default(),
    )
    .map_err(|e| {
        Error::other(
            e.message().to_owned(),
            "check the machine's TLS root certificates",
        )
    })?;
    Ok(Some(Arc::new(Previewer {
        inputs: Arc::clone(inputs),
        deployed,
        feedback: Arc::new(feedback),
        work_dir,
    })))
}

fn api_error(e: ApiError) -> JobError {
    match e {
        ApiError::Permanent(m) => JobError::Permanent {
            error: m,
            diagnostics: Vec::new(),
        },
        ApiError::Transient(m) => JobError::Transient(m),
    }
}

fn clone_error(e: git::CloneError) -> JobError {
    match e {
        git::CloneError::Permanent(m) => JobError::Permanent {
            error: m,
            diagnostics: Vec::new(),
        },
        git::CloneError::Transient(m) => JobError::Transient(m),
    }
}

/// The flavour of comment for a job's vendor.
fn flavor(job: &Job, pr: &PullRequestJob) -> Flavor {
    let web = pr.web_url.clone().unwrap_or_default();
    match job.vendor {
        super::event::Vendor::Github => Flavor::Github { web },
        super::event::Vendor::BitbucketServer => Flavor::BitbucketServer { web },
        super::event::Vendor::BitbucketCloud => Flavor::BitbucketCloud { web },
    }
}

impl Previewer {
    /// Clone, review, comment. The checkout is removed afterwards, whatever happened.
    pub async fn run(
        &self,
        job: &Job,
        pr: &PullRequestJob,
    ) -> std::result::Result<PreviewReport, JobError> {
        let policy = &self.inputs.org.org.webhook;
        let permanent = |m: String| JobError::Permanent {
            error: m,
            diagnostics: Vec::new(),
        };
        check_repository(&job.repository, policy).map_err(permanent)?;
        let url = check_clone_url(&job.clone_url, &job.repository, job.vendor, policy)
            .map_err(permanent)?;
        let dir = self
            .work_dir
            .join(format!("{}-{}", job.id, super::now_ms()));
        let limits = CloneLimits {
            max_bytes: u64::try_from(policy.max_clone_mib).unwrap_or(512) * 1024 * 1024,
            timeout: Duration::from_secs(
                u64::try_from(policy.clone_timeout_seconds).unwrap_or(120),
            ),
            allow_file: url.local,
        };
        let result = async {
            git::clone_ref(&url.url, &job.commit, &pr.head_ref, &dir, &limits)
                .await
                .map_err(clone_error)?;
            let commit = git::head(&dir, &limits).await.map_err(clone_error)?;
            let review = self.review(&dir, job, &limits).await?;
            let flavor = flavor(job, pr);
            let body = markdown::comment(
                &review,
                &markdown::Context {
                    flavor: &flavor,
                    commit: &commit,
                    manifest_path: &policy.manifest,
                },
            );
            let status = CommitStatus {
                success: review.verdict == Verdict::Valid,
                description: match (&review.verdict, &review.pipeline) {
                    (Verdict::Valid, Some(p)) if review.unchanged() => {
                        format!("pipeline `{}` is valid; nothing changes", p.name)
                    }
                    (Verdict::Valid, Some(p)) => format!("pipeline `{}` is valid", p.name),
                    _ => format!(
                        "{} has {} problem(s)",
                        policy.manifest,
                        review.problems.len().max(1)
                    ),
                },
            };
            let target = Target {
                vendor: job.vendor,
                repository: job.repository.clone(),
                number: pr.number,
                commit: commit.clone(),
                installation: pr.installation,
                web_url: pr.web_url.clone(),
            };
            let posted = self
                .feedback
                .post(&target, &body, &status)
                .await
                .map_err(api_error)?;
            Ok(PreviewReport {
                commit,
                verdict: review.verdict,
                pipeline: review.pipeline.as_ref().map(|p| p.name.clone()),
                baseline: review.baseline,
                posted,
                comment_chars: body.chars().count(),
            })
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result
    }

    /// Reviews the head's manifest against the deployed bundle, else the target branch.
    async fn review(
        &self,
        dir: &Path,
        job: &Job,
        limits: &CloneLimits,
    ) -> std::result::Result<Review, JobError> {
        let name = self.inputs.org.org.webhook.manifest.clone();
        let head = render(&self.inputs, dir, &name).await?;
        let Ok(bundle) = &head.1 else {
            return Ok(crate::review::review_result(&name, &head.1, None));
        };
        let baseline = match self
            .deployed
            .deployed(&bundle.plan, &self.inputs)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?
        {
            Some(d) => Baseline {
                kind: Some(BaselineKind::Deployed),
                commit: d.commit,
                files: d.files,
            },
            None => {
                // The target branch, checked out in the same clone (same rules).
                let target = git::checkout_branch_tip(dir, &job.branch, limits)
                    .await
                    .map_err(clone_error)?;
                let (_, old) = render(&self.inputs, dir, &name).await?;
                match old {
                    Ok(b) => {
                        Baseline::from_outputs(BaselineKind::TargetBranch, Some(target), &b.outputs)
                    }
                    // No manifest there yet, or an invalid one: everything is new.
                    Err(_) => Baseline {
                        kind: Some(BaselineKind::TargetBranch),
                        commit: Some(target),
                        files: BTreeMap::new(),
                    },
                }
            }
        };
        Ok(crate::review::review_result(
            &name,
            &head.1,
            Some(&baseline),
        ))
    }
}

/// Reads the checkout's manifest as merges read it and renders it on a blocking thread: the
/// file's name and the render's result (a missing or unreadable manifest is a job error).
async fn render(
    inputs: &Arc<Inputs>,
    dir: &Path,
    name: &str,
) -> std::result::Result<(String, crate::Result<crate::Bundle>), JobError> {
    let inputs = Arc::clone(inputs);
    let dir = dir.to_path_buf();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let text = match checkout::read_text(&dir, Path::new(&name), MAX_MANIFEST_BYTES) {
            Ok(t) => t,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let e = Error::from(vec![crate::Diagnostic::file_level(
                    name.clone(),
                    format!("the repository has no `{name}`"),
                    "add the manifest (`webhook.manifest` in the org policy names its path)",
                )]);
                return Ok((name, Err(e)));
            }
            Err(other) => {
                let e = Error::from(vec![crate::Diagnostic::file_level(
                    name.clone(),
                    other
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    "the manifest must be a regular file of at most 256 KiB, not a symlink",
                )]);
                return Ok((name, Err(e)));
            }
        };
        let file = crate::SourceFile::new(name.clone(), text);
        let result = crate::generate(&file, &inputs);
        Ok((name, result))
    })
    .await
    .map_err(|e| JobError::Transient(format!("the manifest check stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    /// The structural guarantee, checked on the source: this module names no deployer and no
    /// deploy call, so a pull-request job has no path to a deploy.
    #[test]
    fn the_previewer_has_no_path_to_a_deploy() {
        let src = include_str!("preview.rs");
        let code = src.split("#[cfg(test)]").next().unwrap_or_default();
        for banned in [
            "Deployer",
            "deploy::",
            "AwsDeployer",
            "RenderOnly",
            "upload_source",
        ] {
            assert!(!code.contains(banned), "preview.rs mentions `{banned}`");
        }
    }
}
