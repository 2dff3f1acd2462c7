//! A synthetic fleet for tests and benchmarks: renders `count` variants of a manifest (distinct
//! names, spread over teams) and writes what a deploy leaves in the source bucket — the bundle
//! (with its input) and the deploy record — without deploying any stack. `fleet list` and
//! `fleet plan` then see a fleet of that size. Never pointed at a real org: the benchmark
//! (`cargo bench --bench fleet`) and the tests run it against the local AWS server only.

use std::sync::Arc;

use crate::Inputs;
use crate::aws::AwsContext;
use crate::date::Date;
use crate::error::{Result, SourceFile};
use crate::publish::progress::Silent;
use crate::publish::record::{self, DeployedRecord, ManifestInput, RecordContext, TemplateSetRef};

/// One pipeline to seed: its manifest text and the repository it deploys from.
#[derive(Clone, Debug)]
pub struct SeedPipeline {
    /// The manifest.
    pub manifest: String,
    /// `owner/name`.
    pub repository: String,
    /// The commit recorded.
    pub commit: String,
    /// The day dated rules and waivers are evaluated on (the deploy's day).
    pub today: Option<Date>,
}

/// The day of every seeded deploy ([`SEED_DAY`] as a date).
pub fn seed_day() -> Option<Date> {
    Date::parse(&SEED_DAY[..10])
}

/// When every seeded pipeline is recorded as deployed.
pub const SEED_DAY: &str = "2026-01-01T00:00:00Z";

/// `count` variants of `base` (a manifest with `name: <x>` and `team: <y>` lines): pipeline
/// `<prefix>-<i>` of team `teams[i % teams.len()].0`, from repository `<teams[..].1>/svc-<i>`.
pub fn variants(
    base: &str,
    prefix: &str,
    teams: &[(&str, &str)],
    count: usize,
) -> Vec<SeedPipeline> {
    (0..count)
        .map(|i| {
            let (team, owner) = teams[i % teams.len().max(1)];
            let manifest = base
                .lines()
                .map(|l| {
                    if l.starts_with("name:") {
                        format!("name: {prefix}-{i:05}")
                    } else if l.starts_with("team:") {
                        format!("team: {team}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
            SeedPipeline {
                manifest,
                repository: format!("{owner}/svc-{i:05}"),
                commit: format!("{:040x}", i + 1),
                today: seed_day(),
            }
        })
        .collect()
}

/// `pipelines` spread over `languages` (pipeline `i` gets `languages[i % len]`): the
/// `language:` line replaced and the `runtime:` line dropped (each language's default
/// runtime), for a fleet whose pipelines do not all use the same catalog entry.
pub fn with_languages(mut pipelines: Vec<SeedPipeline>, languages: &[&str]) -> Vec<SeedPipeline> {
    for (i, p) in pipelines.iter_mut().enumerate() {
        let Some(lang) = languages.get(i % languages.len().max(1)) else {
            break;
        };
        p.manifest = p
            .manifest
            .lines()
            .filter(|l| !l.starts_with("runtime:"))
            .map(|l| {
                if l.starts_with("language:") {
                    format!("language: {lang}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
    }
    pipelines
}

/// Renders `pipeline` with `inputs` and writes its bundle (unless `!bundle`: the record alone
/// is what `fleet list` and a plan without changes read) and deploy record to the source
/// bucket; returns the pipeline's name.
pub async fn seed_one(
    aws: &AwsContext,
    inputs: &Inputs,
    pipeline: &SeedPipeline,
    bundle: bool,
) -> Result<String> {
    let file = SourceFile::new("pipeline.yml", &pipeline.manifest);
    let prepared =
        crate::publish::prepare_text(file, &pipeline.repository, inputs, pipeline.today, &Silent)?;
    let plan = prepared.plan();
    let store =
        crate::publish::source_store(aws, plan, &inputs.org.org.deploy.bootstrap_role).await?;
    let manifest = ManifestInput {
        path: "pipeline.yml".to_owned(),
        text: pipeline.manifest.clone(),
    };
    let mut extra = prepared.extra_files();
    extra.extend(record::input_files(
        &manifest,
        &plan.pipeline.team,
        &pipeline.repository,
        &pipeline.commit,
    ));
    if bundle {
        store
            .upload_bundle(
                &prepared.bundle.outputs,
                &prepared.content_hash,
                &extra,
                &Silent,
            )
            .await?;
    }
    let record = DeployedRecord::new(
        &prepared,
        RecordContext {
            repository: &pipeline.repository,
            host: Some("github.com"),
            commit: &pipeline.commit,
            at: SEED_DAY,
            by: "seed",
            manifest,
            template_set: TemplateSetRef {
                label: inputs.templates.set_name().to_owned(),
                hash: inputs.templates.content_hash(),
                candidate: None,
            },
            org_hash: record::org_hash(&inputs.org),
            rollout: None,
            archive: bundle,
        },
    );
    store.write_deployed(&record).await?;
    Ok(record.pipeline)
}

/// Seeds every pipeline, `window` at a time; `each` is told of every one seeded.
pub async fn seed(
    aws: Arc<AwsContext>,
    inputs: Arc<Inputs>,
    pipelines: Vec<SeedPipeline>,
    bundle: bool,
    window: usize,
    mut each: impl FnMut(&str),
) -> Result<usize> {
    let mut running = std::collections::VecDeque::new();
    let mut n = 0;
    for p in pipelines {
        if running.len() >= window.max(1) {
            n += finish(&mut running, &mut each).await?;
        }
        let (aws, inputs) = (Arc::clone(&aws), Arc::clone(&inputs));
        running.push_back(tokio::spawn(async move {
            seed_one(&aws, &inputs, &p, bundle).await
        }));
    }
    while !running.is_empty() {
        n += finish(&mut running, &mut each).await?;
    }
    Ok(n)
}

async fn finish(
    running: &mut std::collections::VecDeque<tokio::task::JoinHandle<Result<String>>>,
    each: &mut impl FnMut(&str),
) -> Result<usize> {
    let Some(h) = running.pop_front() else {
        return Ok(0);
    };
    let name = h.await.map_err(|e| {
        crate::error::Error::other(format!("a seeding task failed: {e}"), "this is a bug")
    })??;
    each(&name);
    Ok(1)
}
