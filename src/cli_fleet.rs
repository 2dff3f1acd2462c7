//! `pipeforge fleet …`: a tokio runtime around [`pipeforge::fleet`], results streamed to
//! stdout as they come, a progress count on stderr.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use pipeforge::aws::{AwsContext, AwsSettings};
use pipeforge::deploy::DeployOptions;
use pipeforge::error::{Error, Result};
use pipeforge::fleet::candidate::CandidateFiles;
use pipeforge::fleet::drift::{DriftSummary, Drifter};
use pipeforge::fleet::list::{ListFormat, Lister, Row};
use pipeforge::fleet::plan::{Planner, Summary, impact_text, summary_text};
use pipeforge::fleet::rollout::{
    self, PipelineState, RolloutOptions, RolloutProgress, RolloutReport, RolloutState,
};
use pipeforge::fleet::{self, Records, Scope, WINDOW};
use pipeforge::publish::progress::Silent;
use pipeforge::webhook::queue::SqsQueue;
use pipeforge::webhook::rollout::Rollouts;
use pipeforge::webhook::status::S3Status;
use pipeforge::{Inputs, org};

use crate::cli::{DriftArgs, FleetCommand, Format, InputArgs, ListFormatArg, RolloutArgs};

/// Runs a fleet command; `Ok(true)` means "differences found" (exit status 1).
pub fn run(command: FleetCommand, out: &mut dyn Write) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            Error::other(
                format!("cannot start the async runtime: {e}"),
                "check the process limits (threads)",
            )
        })?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = run_async(command, out) => r,
            _ = tokio::signal::ctrl_c() => Err(Error::other(
                "interrupted",
                "run the same command again",
            )),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The candidate set (`--org`, `--languages`, `--templates`) and the org policy that names where
/// the fleet is (`--fleet-org`, else the candidate's).
fn candidate_and_fleet(
    inputs: &crate::cli::InputArgs,
    fleet_org: Option<&std::path::Path>,
) -> Result<(Inputs, org::Org)> {
    let candidate = Inputs::load(
        inputs.org.as_deref(),
        inputs.languages.as_deref(),
        inputs.templates.as_deref(),
    )?;
    let fleet = match fleet_org {
        Some(p) => load_org(Some(p))?.org,
        None => candidate.org.org.clone(),
    };
    Ok((candidate, fleet))
}

fn load_org(path: Option<&std::path::Path>) -> Result<org::OrgPolicy> {
    match path {
        Some(p) => org::load(&pipeforge::read_source(p)?),
        None => org::embedded(),
    }
}

async fn run_async(command: FleetCommand, out: &mut dyn Write) -> Result<bool> {
    let aws = AwsContext::load(&AwsSettings::default()).await;
    match command {
        FleetCommand::List {
            org,
            format,
            pipeline,
        } => list(org.as_deref(), format, pipeline, &aws, out).await,
        FleetCommand::Plan {
            inputs,
            fleet_org,
            format,
            pipeline,
        } => plan(&inputs, fleet_org.as_deref(), format, pipeline, &aws, out).await,
        FleetCommand::Drift(a) => drift(a, aws, out).await,
        FleetCommand::Rollout(a) => roll_out(a, &aws, out).await,
    }
}

/// `fleet list`: every deployed pipeline, a row each as it is read.
async fn list(
    org: Option<&std::path::Path>,
    format: ListFormatArg,
    pipeline: Option<String>,
    aws: &AwsContext,
    out: &mut dyn Write,
) -> Result<bool> {
    let policy = load_org(org)?;
    let format = match format {
        ListFormatArg::Table => ListFormat::Table,
        ListFormatArg::Json => ListFormat::Json,
        ListFormatArg::Csv => ListFormat::Csv,
    };
    let mut lister = Lister::begin(out, format)?;
    let scope = Scope {
        only: pipeline,
        window: WINDOW,
    };
    let n = fleet::scan(aws, &policy.org, Arc::new(Records), &scope, |e| {
        lister.row(&Row::of(&e))
    })
    .await?;
    lister.end()?;
    eprintln!("{n} pipelines");
    Ok(false)
}

/// `fleet plan`: what a candidate set changes in each pipeline, then a summary; `true` when
/// something changes.
async fn plan(
    inputs: &InputArgs,
    fleet_org: Option<&std::path::Path>,
    format: Format,
    pipeline: Option<String>,
    aws: &AwsContext,
    out: &mut dyn Write,
) -> Result<bool> {
    let (candidate, where_) = candidate_and_fleet(inputs, fleet_org)?;
    let planner = Arc::new(Planner::new(Arc::new(candidate), Some(inputs.today())));
    let mut summary = Summary::default();
    let mut first = true;
    if format == Format::Json {
        writeln!(out, "{{\"pipelines\": [").map_err(io)?;
    }
    let scope = Scope {
        only: pipeline,
        window: fleet::plan::PLAN_WINDOW,
    };
    fleet::index::plan_scan(aws, &where_, &planner, &scope, |i| {
        summary.add(&i);
        match format {
            Format::Json => {
                let sep = if first { "" } else { "," };
                first = false;
                let j = serde_json::to_string(&i).map_err(json_err)?;
                writeln!(out, "{sep}{j}").map_err(io)
            }
            Format::Text => match impact_text(&i) {
                Some(t) => writeln!(out, "{t}").map_err(io),
                None => Ok(()),
            },
        }
    })
    .await?;
    summary.records_read = planner.records_read();
    summary.bundle_reads = planner.bundle_reads();
    match format {
        Format::Json => {
            let j = serde_json::to_string(&summary).map_err(json_err)?;
            writeln!(out, "], \"summary\": {j}}}").map_err(io)?;
        }
        Format::Text => write!(out, "{}", summary_text(&summary)).map_err(io)?,
    }
    Ok(summary.differs())
}

/// `fleet drift`: every pipeline's deployed stacks against what pipeforge deployed; with
/// `--fix`, redeploys the drifted ones. `true` when something drifted (and is not fixed).
async fn drift(a: DriftArgs, aws: AwsContext, out: &mut dyn Write) -> Result<bool> {
    let current = Inputs::load(
        a.inputs.org.as_deref(),
        a.inputs.languages.as_deref(),
        a.inputs.templates.as_deref(),
    )?;
    let org = current.org.org.clone();
    let aws = Arc::new(aws);
    let drifter = Arc::new(Drifter {
        aws: Arc::clone(&aws),
        role: org.deploy.bootstrap_role.clone(),
    });
    let scope = Scope {
        only: a.pipeline.clone(),
        window: WINDOW,
    };
    let summary = drift_scan(&aws, &org, drifter, &scope, a.format, out).await?;
    let (Some(id), true) = (a.id.clone(), a.fix) else {
        return Ok(summary.drifted());
    };
    let fixable = summary.fixable();
    if fixable.is_empty() {
        writeln!(out, "nothing to fix").map_err(io)?;
        return Ok(false);
    }
    let jobs = rollout_jobs(&aws, &a.inputs, a.queue_url, a.status_bucket, a.timeout).await?;
    let options = RolloutOptions {
        id,
        waves: rollout::parse_waves("1,100%")?,
        canaries: Vec::new(),
        max_failures: 1,
        dry_run: false,
        scope,
        today: a.inputs.today(),
        pipelines: Some(fixable),
        deploy: DeployOptions {
            redeploy: true,
            timeout: Duration::from_secs(a.timeout),
            ..DeployOptions::default()
        },
        jobs,
    };
    let r = rollout::rollout(&aws, &org, Arc::new(current), &options, &LiveLine, &Silent).await?;
    write!(out, "{}", rollout_text(&r)).map_err(io)?;
    match &r.stopped {
        Some(why) => Err(Error::other(
            format!("drift fix `{}` stopped: {why}", r.state.id),
            "fix the failures shown above, then run the same command again: it resumes where it stopped",
        )),
        None => Ok(false),
    }
}

/// Checks every pipeline of the scope for drift, printing each as it comes, then the summary.
async fn drift_scan(
    aws: &AwsContext,
    org: &org::Org,
    drifter: Arc<Drifter>,
    scope: &Scope,
    format: Format,
    out: &mut dyn Write,
) -> Result<DriftSummary> {
    let mut summary = DriftSummary::default();
    let mut first = true;
    if format == Format::Json {
        writeln!(out, "{{\"pipelines\": [").map_err(io)?;
    }
    fleet::scan(aws, org, drifter, scope, |d| {
        summary.add(&d);
        match format {
            Format::Json => {
                let sep = if first { "" } else { "," };
                first = false;
                let j = serde_json::to_string(&d).map_err(json_err)?;
                writeln!(out, "{sep}{j}").map_err(io)
            }
            Format::Text => drift_text(out, &d),
        }
    })
    .await?;
    match format {
        Format::Json => {
            let j = serde_json::to_string(&summary).map_err(json_err)?;
            writeln!(out, "], \"summary\": {j}}}").map_err(io)?;
        }
        Format::Text => drift_summary_text(out, &summary)?,
    }
    Ok(summary)
}

/// `fleet rollout`: a candidate set to the pipelines it changes, in waves.
async fn roll_out(a: RolloutArgs, aws: &AwsContext, out: &mut dyn Write) -> Result<bool> {
    let (candidate, where_) = candidate_and_fleet(&a.inputs, a.fleet_org.as_deref())?;
    let jobs = rollout_jobs(aws, &a.inputs, a.queue_url, a.status_bucket, a.timeout).await?;
    let options = RolloutOptions {
        id: a.id,
        waves: rollout::parse_waves(&a.waves)?,
        canaries: a.canaries,
        max_failures: a.max_failures,
        dry_run: a.dry_run,
        scope: Scope {
            only: a.pipeline,
            window: WINDOW,
        },
        today: a.inputs.today(),
        pipelines: None,
        deploy: DeployOptions {
            timeout: Duration::from_secs(a.timeout),
            ..DeployOptions::default()
        },
        jobs,
    };
    let r = rollout::rollout(
        aws,
        &where_,
        Arc::new(candidate),
        &options,
        &LiveLine,
        &Silent,
    )
    .await?;
    match a.format {
        Format::Json => {
            let j = serde_json::to_string_pretty(&r).map_err(json_err)?;
            writeln!(out, "{j}").map_err(io)?;
        }
        Format::Text => write!(out, "{}", rollout_text(&r)).map_err(io)?,
    }
    match &r.stopped {
        Some(why) => Err(Error::other(
            format!("rollout `{}` stopped: {why}", r.state.id),
            "fix the failures shown above, then run the same command again: it resumes where it stopped",
        )),
        None => Ok(false),
    }
}

/// The webhook's queue for a rollout's jobs, when `--queue-url` and `--status-bucket` name it.
async fn rollout_jobs(
    aws: &AwsContext,
    inputs: &InputArgs,
    queue_url: Option<String>,
    status_bucket: Option<String>,
    timeout: u64,
) -> Result<Option<rollout::Jobs>> {
    Ok(match (queue_url, status_bucket) {
        (Some(url), Some(bucket)) => Some(queued(aws, inputs, &url, bucket, timeout).await?),
        _ => None,
    })
}

/// A rollout through the webhook's queue: the candidate's files, the queue, the status bucket.
async fn queued(
    aws: &AwsContext,
    inputs: &crate::cli::InputArgs,
    url: &str,
    bucket: String,
    timeout: u64,
) -> Result<rollout::Jobs> {
    let files = CandidateFiles::read(
        inputs.org.as_deref(),
        inputs.languages.as_deref(),
        inputs.templates.as_deref(),
    )?;
    let queue = SqsQueue::open(pipeforge::webhook::aws::sqs(aws), url, 5).await?;
    let status = S3Status::new(pipeforge::webhook::aws::s3(aws), bucket);
    Ok(rollout::Jobs {
        queue: Arc::new(Rollouts {
            queue: Arc::new(queue),
            status: Arc::new(status),
        }),
        files,
        poll: Duration::from_secs(2),
        timeout: Duration::from_secs(timeout),
    })
}

/// Progress of a rollout on stderr, one line per pipeline.
struct LiveLine;

impl RolloutProgress for LiveLine {
    fn step(&self, wave: usize, state: &RolloutState, pipeline: &str, result: &Result<()>) {
        let skipped = state.waves[wave]
            .iter()
            .any(|i| i.pipeline == pipeline && i.state == PipelineState::Skipped);
        let what = match result {
            Ok(()) => "deployed".to_owned(),
            Err(e) if skipped => fleet::first_line(e),
            Err(e) => format!("FAILED: {}", fleet::first_line(e)),
        };
        eprintln!(
            "{pipeline}: {what}\n  {}",
            rollout::progress_line(wave, state)
        );
    }
}

fn rollout_text(r: &RolloutReport) -> String {
    let mut s = String::new();
    let verb = if r.dry_run {
        "would deploy"
    } else if r.created {
        "started"
    } else {
        "resumed"
    };
    s.push_str(&format!(
        "rollout `{}` {verb}: {} wave(s), {} pipeline(s)\n",
        r.state.id,
        r.state.waves.len(),
        r.state.waves.iter().map(Vec::len).sum::<usize>()
    ));
    for (n, w) in r.state.waves.iter().enumerate() {
        let names: Vec<String> = w
            .iter()
            .map(|i| match (&i.state, &i.error) {
                (PipelineState::Deployed, _) => format!("{} (deployed)", i.pipeline),
                (PipelineState::Failed, Some(e)) => format!("{} (failed: {e})", i.pipeline),
                (PipelineState::Skipped, _) => format!("{} (skipped)", i.pipeline),
                _ => i.pipeline.clone(),
            })
            .collect();
        s.push_str(&format!("  wave {}: {}\n", n + 1, names.join(", ")));
    }
    if !r.state.invalid.is_empty() {
        s.push_str(&format!(
            "  not deployed, invalid with the candidate: {}\n",
            r.state.invalid.join(", ")
        ));
    }
    if !r.dry_run {
        s.push_str(&format!(
            "this run: {} deployed, {} failed{}; in total {} of {} deployed\n",
            r.deployed,
            r.failed,
            match r.skipped {
                0 => String::new(),
                n => format!(", {n} skipped"),
            },
            r.state.count(PipelineState::Deployed),
            r.state.waves.iter().map(Vec::len).sum::<usize>()
        ));
    }
    s
}

fn io(e: std::io::Error) -> Error {
    Error::other(
        format!("cannot write output: {e}"),
        "check that stdout is writable",
    )
}

fn json_err(e: serde_json::Error) -> Error {
    Error::other(format!("cannot write JSON: {e}"), "this is a bug")
}

fn drift_text(out: &mut dyn Write, d: &fleet::drift::PipelineDrift) -> Result<()> {
    for s in &d.stacks {
        writeln!(
            out,
            "drifted: {} stack {} ({}): {:?}: {}",
            d.pipeline, s.stack, s.account, s.cause, s.detail
        )
        .map_err(io)?;
    }
    if let Some(why) = &d.unchecked {
        writeln!(out, "unchecked: {}: {why}", d.pipeline).map_err(io)?;
    }
    Ok(())
}

fn drift_summary_text(out: &mut dyn Write, s: &DriftSummary) -> Result<()> {
    writeln!(
        out,
        "fleet drift: {} checked, {} in sync, {} unchecked",
        s.checked, s.in_sync, s.unchecked
    )
    .map_err(io)?;
    for (cause, names) in &s.causes {
        writeln!(out, "  {cause:?}: {} ({})", names.len(), names.join(", ")).map_err(io)?;
    }
    Ok(())
}
