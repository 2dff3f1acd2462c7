//! Stage 5: publish — upload a pipeline's rendered bundle and its repository snapshot to the org
//! source bucket.
//!
//! [`publish`] renders the manifest, zips the repository ([`source`]), checks the bucket, takes
//! the pipeline's lock, checks who owns the pipeline ([`crate::owner`]), uploads the bundle (content-addressed, `plan.json` last) and then
//! `source.zip`, whose upload starts the pipeline. [`crate::deploy`] does the same around its
//! stack deploys, uploading `source.zip` only after the stacks so that the new pipeline
//! definition is the one that runs it.

pub mod archive;
pub mod checkout;
pub mod digest;
pub mod progress;
pub mod record;
pub mod source;
pub mod store;
pub mod templates;

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Inputs;
use crate::aws::AwsContext;
use crate::deploy::api::Location;
use crate::deploy::sdk::SdkStackApi;
use crate::error::Result;
use crate::owner::{self, ClaimInfo, Owner, OwnerRecord};
use crate::plan::{Plan, StackKind};
use progress::{Event, Progress};
use source::{SourceOptions, SourceZip};
use store::{BundleUpload, DeployLock, SourceStore, SourceUpload};
use templates::DeployTemplate;

/// The source bucket of a deployed pipeline: the tooling account its owner record names.
pub use crate::deploy::placement::deployed_store;

/// Options of [`publish`].
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// The repository (`owner/name`) the checkout is; `None`: the one its `origin` remote names.
    pub repository: Option<String>,
    /// Publish a working tree with uncommitted changes.
    pub allow_dirty: bool,
    /// Upload `source.zip` even when the bucket has the same snapshot (starts the pipeline).
    pub force_source: bool,
    /// Longest wait for another deploy or publish of the same pipeline.
    pub timeout: Duration,
    /// Who holds the lock, as other deploys see it (default: `user@host (pid N)`).
    pub holder: Option<String>,
    /// How long a lock stays valid without renewal.
    pub lock_lease: Duration,
    /// Largest snapshot, in bytes read.
    pub max_source_bytes: u64,
    /// The day dated org rules and waivers are evaluated on (the caller reads the clock);
    /// `None`: every dated rule is enforced and no waiver applies.
    pub today: Option<crate::date::Date>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            repository: None,
            allow_dirty: false,
            force_source: false,
            timeout: Duration::from_secs(1800),
            holder: None,
            lock_lease: Duration::from_secs(300),
            max_source_bytes: source::DEFAULT_MAX_BYTES,
            today: None,
        }
    }
}

/// Where the time went, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Timings {
    /// Validate, plan and render.
    pub render_ms: u64,
    /// Build the repository snapshot.
    pub zip_ms: u64,
    /// Uploads (bundle and `source.zip`).
    pub upload_ms: u64,
    /// Stack deploys, waits included.
    pub stacks_ms: u64,
    /// Waiting for another deploy's lock.
    pub lock_wait_ms: u64,
    /// Everything.
    pub total_ms: u64,
}

impl Timings {
    /// Time spent in pipeforge itself: render, zip and upload.
    pub fn own_ms(&self) -> u64 {
        self.render_ms + self.zip_ms + self.upload_ms
    }
}

/// What [`publish`] did.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    /// Pipeline (manifest name).
    pub pipeline: String,
    /// Team.
    pub team: String,
    /// The pipeline's owner record after the publish.
    pub owner: OwnerRecord,
    /// True when this publish claimed the pipeline (nobody owned it before).
    pub claimed: bool,
    /// The bundle's content hash.
    pub content_hash: String,
    /// The commit published.
    pub commit: String,
    /// The bundle upload.
    pub bundle: BundleUpload,
    /// The `source.zip` upload.
    pub source: SourceUpload,
    /// Timings.
    pub timings: Timings,
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The default lock holder: `user@host (pid N)`.
pub fn default_holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".to_owned());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host} (pid {})", std::process::id())
}

/// A rendered manifest, ready to upload and deploy.
#[derive(Debug)]
pub struct Prepared {
    /// The rendered bundle.
    pub bundle: crate::Bundle,
    /// Who deploys: the manifest's team and the repository the checkout is.
    pub deployer: Owner,
    /// Its content hash.
    pub content_hash: String,
    /// The stacks as deployed, in order.
    pub templates: Vec<DeployTemplate>,
    /// Render time.
    pub render: Duration,
    /// The manifest's text, as rendered.
    pub manifest_text: String,
    /// The manifest's name in diagnostics.
    manifest_name: String,
    /// The repository deploying.
    repository: owner::Repository,
    /// The day it was rendered for.
    today: Option<crate::date::Date>,
    /// The digest of every input of the render, for the deploy record.
    pub inputs: Option<digest::RenderInputs>,
}

impl Prepared {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.bundle.plan
    }

    /// The same manifest rendered again for the tooling account `tooling` (the placement its
    /// owner record holds, when the first render used the org's placement rules).
    pub fn placed_in(
        &self,
        inputs: &Inputs,
        tooling: &crate::org::ToolingAccount,
        progress: &dyn Progress,
    ) -> Result<Prepared> {
        let file = crate::error::SourceFile::new(&self.manifest_name, &self.manifest_text);
        prepare_source(
            file,
            &self.repository,
            inputs,
            self.today,
            Some(tooling),
            progress,
            Instant::now(),
        )
    }

    /// The deployed templates as bundle files (`deploy/<stack>.json`).
    pub fn extra_files(&self) -> Vec<(String, Vec<u8>)> {
        self.templates
            .iter()
            .map(|t| (t.bundle_path.clone(), t.body.clone().into_bytes()))
            .collect()
    }
}

/// Renders the manifest `manifest` of the repository checkout `repo` (validate, plan, render),
/// finds which repository the checkout is (`repository`, else its `origin` remote), checks
/// that it may deploy the pipelines of the manifest's team (org `teams`), and prepares the
/// stacks for deployment. Nothing talks to AWS yet. The manifest is read as
/// [`checkout::read_manifest`] reads it: a regular file inside the checkout, no symlink
/// followed, at most 256 KiB.
pub fn prepare(
    repo: &Path,
    manifest: &Path,
    inputs: &Inputs,
    repository: Option<&str>,
    today: Option<crate::date::Date>,
    progress: &dyn Progress,
) -> Result<Prepared> {
    let t = Instant::now();
    for (message, _) in inputs.org.warnings() {
        progress.event(&Event::Warning { message });
    }
    let file = checkout::read_manifest(repo, manifest)?;
    let repository = owner::repository_of(repo, repository)?;
    prepare_source(file, &repository, inputs, today, None, progress, t)
}

/// Renders a manifest already read, as deployed from `repository` ([`prepare`] without a
/// checkout): a fleet rollout re-renders the manifest a deploy record holds, with every check of
/// a deploy (the org's `teams`, dated rules and waivers on `today`).
pub fn prepare_text(
    file: crate::error::SourceFile,
    repository: &str,
    inputs: &Inputs,
    today: Option<crate::date::Date>,
    progress: &dyn Progress,
) -> Result<Prepared> {
    let t = Instant::now();
    let repository = owner::Repository::parse(repository)?;
    prepare_source(file, &repository, inputs, today, None, progress, t)
}

fn prepare_source(
    file: crate::error::SourceFile,
    repository: &owner::Repository,
    inputs: &Inputs,
    today: Option<crate::date::Date>,
    tooling: Option<&crate::org::ToolingAccount>,
    progress: &dyn Progress,
    t: Instant,
) -> Result<Prepared> {
    let eval = crate::date::Evaluation {
        today,
        repository: Some(repository.as_str().to_owned()),
    };
    let bundle = crate::generate_placed(
        &file,
        &inputs.org,
        &inputs.catalog,
        &inputs.templates,
        &eval,
        tooling,
    )?;
    for n in &bundle.plan.notices {
        progress.event(&Event::Warning { message: n.body() });
    }
    inputs
        .org
        .check_repository(&bundle.plan.pipeline.team, repository.as_str())?;
    let deployer = Owner::new(&bundle.plan.pipeline.team, repository);
    let content_hash = bundle.hashes.hash.clone();
    let templates = templates::deploy_templates(&bundle.plan, &bundle.outputs, &deployer)?;
    let render = t.elapsed();
    progress.event(&Event::Rendered {
        pipeline: bundle.plan.pipeline.name.clone(),
        files: bundle.outputs.len(),
        content_hash: content_hash.clone(),
    });
    let mut prepared = Prepared {
        bundle,
        deployer,
        content_hash,
        templates,
        render,
        manifest_text: file.text,
        manifest_name: file.name,
        repository: repository.clone(),
        today,
        inputs: None,
    };
    prepared.inputs = digest::of_prepared(&prepared, inputs);
    Ok(prepared)
}

/// Takes the repository snapshot and reports it.
pub fn snapshot(
    repo: &Path,
    allow_dirty: bool,
    max_bytes: u64,
    progress: &dyn Progress,
) -> Result<(SourceZip, Duration)> {
    let t = Instant::now();
    for w in source::fetch_version_tags(repo) {
        progress.event(&Event::Warning { message: w });
    }
    let zip = source::source_zip(
        repo,
        &SourceOptions {
            allow_dirty,
            max_bytes,
        },
    )?;
    for w in &zip.warnings {
        progress.event(&Event::Warning { message: w.clone() });
    }
    progress.event(&Event::SourceZipped {
        commit: zip.commit.clone(),
        files: zip.files,
        bytes: zip.bytes.len() as u64,
        sha256: zip.sha256.clone(),
    });
    Ok((zip, t.elapsed()))
}

/// The org source bucket of a plan, through the tooling account's credentials.
pub async fn source_store(
    aws: &AwsContext,
    plan: &Plan,
    bootstrap_role: &str,
) -> Result<SourceStore> {
    let at = crate::org::ToolingAccount {
        account: plan.pipeline.tooling_account.clone(),
        region: plan.pipeline.region.clone(),
        bucket: plan.source.bucket.value.clone(),
        kms_key: plan.source.kms_key.value.clone(),
        capacity: None,
    };
    source_store_in(aws, plan, bootstrap_role, &at).await
}

/// The source bucket of the tooling account `at` for the pipeline of `plan` (its keys are the
/// same in every tooling account's bucket).
pub async fn source_store_in(
    aws: &AwsContext,
    plan: &Plan,
    bootstrap_role: &str,
    at: &crate::org::ToolingAccount,
) -> Result<SourceStore> {
    let region = &at.region;
    let conf = aws
        .account(&at.account, region, bootstrap_role, &session_name(plan))
        .await?;
    let prefix = plan
        .source
        .key
        .strip_suffix("source.zip")
        .unwrap_or(&plan.source.key)
        .to_owned();
    let records = plan
        .source
        .owner_key
        .strip_suffix("owner.json")
        .unwrap_or(&plan.source.owner_key)
        .to_owned();
    Ok(SourceStore::new(
        aws.s3(&conf, region),
        &at.bucket,
        region,
        &at.kms_key,
        &prefix,
        &records,
    ))
}

/// The STS session name of a pipeline's deploys: `pipeforge-<pipeline>`.
pub fn session_name(plan: &Plan) -> String {
    format!("pipeforge-{}", plan.pipeline.name)
}

/// Starts the pipeline of `plan` after a new source snapshot was uploaded: CodePipeline runs it
/// on the latest version of `source.zip`. Pipelines have no trigger of their own (an
/// EventBridge rule and role per pipeline would count against the account's quotas), so this is
/// what starts them; it needs `codepipeline:StartPipelineExecution`. `Ok(None)` when the pipeline
/// does not exist (never deployed), with a warning.
pub async fn start_pipeline(
    aws: &AwsContext,
    plan: &Plan,
    bootstrap_role: &str,
    progress: &dyn Progress,
) -> Result<Option<String>> {
    let (account, region) = (&plan.pipeline.tooling_account, &plan.pipeline.region);
    let conf = aws
        .account(account, region, bootstrap_role, &session_name(plan))
        .await?;
    let name = &plan.pipeline.pipeline_name;
    match aws
        .codepipeline(&conf, region)
        .start_pipeline_execution()
        .name(name)
        .send()
        .await
    {
        Ok(out) => {
            let execution = out.pipeline_execution_id().unwrap_or_default().to_owned();
            progress.event(&Event::PipelineStarted {
                pipeline: name.clone(),
                account: account.clone(),
                region: region.clone(),
                execution: execution.clone(),
            });
            Ok(Some(execution))
        }
        Err(e) => {
            let f = crate::aws::AwsFailure::of(&e);
            if f.code.as_deref() == Some("PipelineNotFoundException") {
                progress.event(&Event::Warning {
                    message: format!(
                        "pipeline `{name}` does not exist in account {account} ({region}), so nothing runs this snapshot; run `pipeforge deploy` first"
                    ),
                });
                return Ok(None);
            }
            Err(crate::aws::failure_error(
                format!("start pipeline `{name}` (account {account}, {region})"),
                &f,
                "the caller needs codepipeline:StartPipelineExecution on the org's pipelines (`pipeforge bootstrap` grants it to the worker role; give it to the people and CI that deploy)",
            ))
        }
    }
}

/// Takes the pipeline's lock, reporting the time waited.
pub async fn take_lock(
    store: &SourceStore,
    options: &PublishOptions,
    progress: &dyn Progress,
) -> Result<(DeployLock, Duration)> {
    let t = Instant::now();
    let holder = options.holder.clone().unwrap_or_else(default_holder);
    let lock = store
        .lock(&holder, options.lock_lease, options.timeout, progress)
        .await?;
    Ok((lock, t.elapsed()))
}

/// Warns when the deployed pipeline stack is missing or differs from this manifest's: the
/// snapshot would then run through an old pipeline definition (or none).
async fn warn_if_stale(
    aws: &AwsContext,
    prepared: &Prepared,
    bootstrap_role: &str,
    progress: &dyn Progress,
) {
    let plan = prepared.plan();
    let Some(pipeline) = prepared
        .templates
        .iter()
        .find(|t| t.stack.kind == crate::plan::StackKind::Pipeline)
    else {
        return;
    };
    let Ok(conf) = aws
        .account(
            &pipeline.stack.account,
            &pipeline.stack.region,
            bootstrap_role,
            &session_name(plan),
        )
        .await
    else {
        return;
    };
    let cfn = aws.cloudformation(&conf, &pipeline.stack.region);
    let deployed = cfn
        .get_template()
        .stack_name(&pipeline.stack.name)
        .send()
        .await
        .ok()
        .and_then(|t| t.template_body().map(str::to_owned))
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
    let message = match deployed.as_ref().map(templates::deployed_hash) {
        None => format!(
            "the pipeline stack `{}` is not deployed, so nothing runs this snapshot; run `pipeforge deploy` first",
            pipeline.stack.name
        ),
        Some(h) if h.as_deref() != Some(pipeline.content_hash.as_str()) => format!(
            "the deployed pipeline stack `{}` differs from this manifest's; the snapshot runs through the deployed definition until `pipeforge deploy` updates it",
            pipeline.stack.name
        ),
        Some(_) => return,
    };
    progress.event(&Event::Warning { message });
}

/// Renders the manifest and uploads the bundle and the repository snapshot to the org source
/// bucket, then starts the pipeline (unless the bucket has the same snapshot).
///
/// The bucket is checked before anything is uploaded, and the pipeline's lock is held while
/// uploading; on any failure nothing half-uploaded is referenced (the bundle's `plan.json` is
/// written last, `source.zip` is one object).
pub async fn publish(
    repo: &Path,
    manifest: &Path,
    inputs: &Inputs,
    aws: &AwsContext,
    options: &PublishOptions,
    progress: &dyn Progress,
) -> Result<PublishReport> {
    let t0 = Instant::now();
    let prepared = prepare(
        repo,
        manifest,
        inputs,
        options.repository.as_deref(),
        options.today,
        progress,
    )?;
    let (zip, zip_time) = snapshot(
        repo,
        options.allow_dirty,
        options.max_source_bytes,
        progress,
    )?;
    let role = &inputs.org.org.deploy.bootstrap_role;
    let api = SdkStackApi::new(aws, role, &session_name(prepared.plan()));
    // Where the pipeline lives: its owner record's placement (records in the home account).
    let name = &prepared.plan().pipeline.name;
    let records = crate::deploy::placement::records_store(aws, &inputs.org, name, role).await?;
    let placed = Box::pin(crate::deploy::placement::place(
        &prepared, inputs, aws, &records, &api, progress,
    ))
    .await?;
    let prepared = placed.prepared(&prepared);
    let plan = prepared.plan();
    let store = source_store(aws, plan, role).await?;
    store.check().await?;
    warn_if_stale(aws, prepared, role, progress).await;
    // The owner check reads the pipeline stack (tooling account) only: publishing changes no
    // stack, so the target accounts are not needed.
    api.connect(&Location {
        account: plan.pipeline.tooling_account.clone(),
        region: plan.pipeline.region.clone(),
    })
    .await?;
    let mut tooling_plan = plan.clone();
    tooling_plan
        .stacks
        .retain(|s| s.kind == StackKind::Pipeline);
    let (lock, waited) = take_lock(&records, options, progress).await?;
    let t_up = Instant::now();
    let uploads = async {
        let claim = ClaimInfo {
            by: lock.holder().to_owned(),
            commit: Some(zip.commit.clone()),
            placed_by: placed.by,
            write: true,
        };
        let checked =
            owner::check(&records, &api, &tooling_plan, &prepared.deployer, &claim).await?;
        crate::deploy::still_placed(&inputs.org, &checked.record, plan)?;
        lock.check()?;
        let mut extra = prepared.extra_files();
        let path = manifest
            .strip_prefix(repo)
            .ok()
            .and_then(|p| p.to_str())
            .map(|p| p.trim_start_matches("./").to_owned())
            .unwrap_or_else(|| "pipeline.yml".to_owned());
        extra.extend(record::input_files(
            &record::ManifestInput {
                path,
                text: prepared.manifest_text.clone(),
            },
            &plan.pipeline.team,
            prepared.deployer.repository.as_deref().unwrap_or_default(),
            &zip.commit,
        ));
        let bundle = store
            .upload_bundle(
                &prepared.bundle.outputs,
                &prepared.content_hash,
                &extra,
                progress,
            )
            .await?;
        lock.check()?;
        let mut source = store
            .upload_source(&zip, &prepared.content_hash, options.force_source, progress)
            .await?;
        if source.uploaded {
            source.execution = start_pipeline(aws, plan, role, progress).await?;
        }
        Ok::<_, crate::Error>((checked, bundle, source))
    }
    .await;
    let upload_time = t_up.elapsed();
    let released = lock.release().await;
    let (checked, bundle, source) = uploads?;
    released?;
    Ok(PublishReport {
        pipeline: plan.pipeline.name.clone(),
        team: plan.pipeline.team.clone(),
        owner: checked.record,
        claimed: checked.claimed,
        content_hash: prepared.content_hash.clone(),
        commit: zip.commit.clone(),
        bundle,
        source,
        timings: Timings {
            render_ms: millis(prepared.render),
            zip_ms: millis(zip_time),
            upload_ms: millis(upload_time),
            stacks_ms: 0,
            lock_wait_ms: millis(waited),
            total_ms: millis(t0.elapsed()),
        },
    })
}
