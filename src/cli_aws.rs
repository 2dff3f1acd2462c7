//! The commands that talk to AWS (`publish`, `deploy`, `diff`, `status`): a tokio runtime around
//! the library calls, progress on stderr (a live line on a terminal, plain lines otherwise), the
//! report on stdout.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipeforge::aws::{AwsContext, AwsSettings};
use pipeforge::deploy::{self, DeployOptions, DeployReport, DiffReport, StackReport};
use pipeforge::error::{Error, Result};
use pipeforge::publish::progress::{Event, Progress, StackOutcome};
use pipeforge::publish::{self, PublishOptions, PublishReport, Timings};
use pipeforge::status::{self, StatusReport};
use pipeforge::{Inputs, outputs, owner};

use crate::cli::{
    Command, DeployArgs, DiffArgs, Format, InputArgs, MoveArgs, PublishArgs, RecoverArgs,
    TransferArgs,
};

/// Writes progress to stderr: on a terminal, in-progress resource events replace each other on
/// one live line and everything else scrolls above it; otherwise every event is one line.
struct Reporter {
    live: bool,
    state: Mutex<Option<String>>,
    started: Instant,
}

const CLEAR: &str = "\r\x1b[2K";

impl Reporter {
    fn new() -> Self {
        let live = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            || std::env::var_os("PIPEFORGE_LIVE").is_some_and(|v| v == "1");
        Reporter {
            live,
            state: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// Prints `lines` above the live line; `live_line` replaces it (`Some("")` clears it).
    fn emit(&self, lines: &[String], live_line: Option<String>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut err = std::io::stderr().lock();
        if self.live && state.is_some() {
            let _ = write!(err, "{CLEAR}");
        }
        for l in lines {
            let _ = writeln!(err, "{l}");
        }
        if self.live {
            match live_line {
                Some(l) if l.is_empty() => *state = None,
                Some(l) => *state = Some(l),
                None => {}
            }
            if let Some(l) = state.as_deref() {
                let secs = self.started.elapsed().as_secs();
                let text: String = format!("[{secs:>4}s] {l}").chars().take(100).collect();
                let _ = write!(err, "{text}");
            }
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if let Ok(mut state) = self.state.lock()
            && state.take().is_some()
            && self.live
        {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{CLEAR}");
            let _ = err.flush();
        }
    }
}

fn short(hash: &str) -> &str {
    let h = hash.strip_prefix("sha256:").unwrap_or(hash);
    &h[..h.len().min(12)]
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn kib(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

impl Progress for Reporter {
    fn event(&self, e: &Event) {
        match e {
            Event::Rendered {
                pipeline,
                files,
                content_hash,
            } => self.emit(
                &[format!(
                    "rendered pipeline `{pipeline}`: {}, bundle {}",
                    plural(*files, "file"),
                    short(content_hash)
                )],
                None,
            ),
            Event::SourceZipped {
                commit,
                files,
                bytes,
                ..
            } => self.emit(
                &[format!(
                    "snapshot of commit {}: {}, {}",
                    &commit[..commit.len().min(12)],
                    plural(*files, "file"),
                    kib(*bytes)
                )],
                None,
            ),
            Event::Warning { message } => self.emit(&[format!("warning: {message}")], None),
            Event::Waiting { what } => {
                if self.live {
                    self.emit(&[], Some(format!("waiting: {what}")));
                } else {
                    self.emit(&[format!("waiting: {what}")], None);
                }
            }
            Event::Uploaded { url, bytes } => {
                // Bundle files go by on the live line; the bundle's completion marker and the
                // snapshot (which starts the pipeline) are worth a line of their own.
                let line = format!("uploaded {url} ({})", kib(*bytes));
                if url.ends_with("/source.zip") || url.ends_with("/plan.json") {
                    self.emit(&[line], None);
                } else if self.live {
                    self.emit(&[], Some(line));
                }
            }
            Event::PipelineStarted {
                pipeline,
                account,
                region,
                execution,
            } => self.emit(
                &[format!(
                    "started pipeline `{pipeline}` (account {account}, {region}): execution {execution}"
                )],
                None,
            ),
            Event::Placed {
                account,
                region,
                by,
                new,
            } => self.emit(
                &[if *new {
                    format!("placed in tooling account {account} ({region}) [{by}]")
                } else {
                    format!("tooling account {account} ({region}) [{by}]")
                }],
                None,
            ),
            Event::UploadSkipped { url, reason } => {
                self.emit(&[format!("not uploaded {url}: {reason}")], None)
            }
            Event::StackStarted {
                stack,
                account,
                region,
                action,
            } => self.emit(
                &[format!(
                    "==> stack `{stack}` (account {account}, {region}): {action}"
                )],
                Some(String::new()),
            ),
            Event::StackEvent { stack, event } => {
                // On a terminal, resource progress stays on the live line; failures scroll.
                if self.live && !event.failed() {
                    self.emit(
                        &[],
                        Some(format!(
                            "{stack}: {} {} {}",
                            event.logical_id, event.resource_type, event.status
                        )),
                    );
                } else {
                    self.emit(&[format!("    {stack}  {}", event.line())], None);
                }
            }
            Event::ChangeSet { stack: _, changes } => {
                let mut lines: Vec<String> = changes
                    .iter()
                    .map(|c| format!("    {}", c.line()))
                    .collect();
                if lines.is_empty() {
                    lines.push("    (no resource changes)".to_owned());
                }
                self.emit(&lines, None);
            }
            Event::StackDone {
                stack,
                outcome,
                detail,
                millis,
            } => {
                let why = detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                self.emit(
                    &[format!(
                        "    stack `{stack}` {}{why} in {:.1} s",
                        outcome.as_str(),
                        *millis as f64 / 1000.0
                    )],
                    Some(String::new()),
                );
            }
        }
    }
}

fn inputs(a: &InputArgs) -> Result<Inputs> {
    Inputs::load(
        a.org.as_deref(),
        a.languages.as_deref(),
        a.templates.as_deref(),
    )
}

fn io(e: std::io::Error) -> Error {
    Error::other(
        format!("cannot write output: {e}"),
        "check that stdout is writable",
    )
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn timings_line(t: &Timings) -> String {
    let mut s = format!(
        "pipeforge itself {} (render {}, snapshot {}, upload {})",
        secs(t.own_ms()),
        secs(t.render_ms),
        secs(t.zip_ms),
        secs(t.upload_ms)
    );
    if t.lock_wait_ms >= 500 {
        s.push_str(&format!(
            ", waited {} for another deploy",
            secs(t.lock_wait_ms)
        ));
    }
    s
}

fn stack_table(out: &mut dyn Write, stacks: &[StackReport]) -> Result<()> {
    let w = stacks.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in stacks {
        let mut line = format!(
            "  {:<w$}  {:<8}  {}  {:<14}  {}",
            s.name,
            s.kind,
            s.account,
            s.region,
            s.outcome.as_str()
        );
        if let Some(d) = &s.detail {
            line.push_str(&format!(" ({d})"));
        }
        if s.template_url.is_some() {
            line.push_str(" [template from S3]");
        }
        writeln!(out, "{}", line.trim_end()).map_err(io)?;
    }
    Ok(())
}

fn print_deploy(out: &mut dyn Write, r: &DeployReport) -> Result<()> {
    let commit = &r.commit[..r.commit.len().min(12)];
    if r.dry_run {
        writeln!(
            out,
            "dry run of pipeline `{}` (commit {commit}, bundle {}):",
            r.pipeline,
            short(&r.content_hash)
        )
        .map_err(io)?;
    } else {
        writeln!(
            out,
            "deployed pipeline `{}` (commit {commit}, bundle {}):",
            r.pipeline,
            short(&r.content_hash)
        )
        .map_err(io)?;
    }
    stack_table(out, &r.stacks)?;
    let owned_by = format!("{} (team {})", r.owner.repository, r.owner.team);
    if r.claimed {
        writeln!(
            out,
            "pipeline `{}` {} by {owned_by}. If it replaces a renamed pipeline, the old one keeps running: `pipeforge status OLD-NAME` lists its stacks; delete them (the pipeline stack first) and its owner record `pipelines/OLD-NAME/owner.json`",
            r.pipeline,
            if r.dry_run {
                "is new: this deploy would claim it"
            } else {
                "is new: it is now owned"
            }
        )
        .map_err(io)?;
    } else {
        writeln!(out, "pipeline `{}` is owned by {owned_by}", r.pipeline).map_err(io)?;
    }
    if r.dry_run {
        for s in r.stacks.iter().filter(|s| !s.changes.is_empty()) {
            writeln!(out, "changes of `{}`:", s.name).map_err(io)?;
            for c in &s.changes {
                writeln!(out, "    {}", c.line()).map_err(io)?;
            }
        }
        writeln!(
            out,
            "{} would be created, {} would be updated, {} unchanged; nothing was executed and the pipeline was not started",
            r.count(StackOutcome::WouldCreate),
            r.count(StackOutcome::WouldUpdate),
            r.count(StackOutcome::Unchanged)
        )
        .map_err(io)?;
    } else {
        writeln!(
            out,
            "{} created, {} updated, {} unchanged in {}; {}",
            r.count(StackOutcome::Created),
            r.count(StackOutcome::Updated),
            r.count(StackOutcome::Unchanged),
            secs(r.timings.total_ms),
            timings_line(&r.timings)
        )
        .map_err(io)?;
        if let Some(s) = &r.source {
            if s.uploaded {
                let v = s
                    .version_id
                    .as_deref()
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "uploaded {}{v}: the pipeline starts with this commit",
                    s.url
                )
                .map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{} already holds this snapshot: the pipeline was not started again (`--force-source` starts it)",
                    s.url
                )
                .map_err(io)?;
            }
        }
    }
    Ok(())
}

fn print_publish(out: &mut dyn Write, r: &PublishReport) -> Result<()> {
    writeln!(
        out,
        "published pipeline `{}` (commit {}, bundle {}) in {}; {}",
        r.pipeline,
        &r.commit[..r.commit.len().min(12)],
        short(&r.content_hash),
        secs(r.timings.total_ms),
        timings_line(&r.timings)
    )
    .map_err(io)?;
    writeln!(
        out,
        "  owner   {} (team {}){}",
        r.owner.repository,
        r.owner.team,
        if r.claimed {
            ": claimed by this publish"
        } else {
            ""
        }
    )
    .map_err(io)?;
    writeln!(
        out,
        "  bundle  {} ({} objects uploaded)",
        r.bundle.url, r.bundle.uploaded
    )
    .map_err(io)?;
    if r.source.uploaded {
        writeln!(
            out,
            "  source  {}: uploaded, the pipeline starts",
            r.source.url
        )
        .map_err(io)?;
    } else {
        writeln!(
            out,
            "  source  {}: unchanged, the pipeline was not started again (`--force` starts it)",
            r.source.url
        )
        .map_err(io)?;
    }
    Ok(())
}

fn print_diff(out: &mut dyn Write, r: &DiffReport) -> Result<()> {
    for s in &r.stacks {
        writeln!(
            out,
            "=== stack `{}` (account {}, {}): {}",
            s.name,
            s.account,
            s.region,
            s.outcome.as_str()
        )
        .map_err(io)?;
        if let Some(d) = &s.template_diff {
            out.write_all(d.as_bytes()).map_err(io)?;
        }
        if !s.changes.is_empty() {
            writeln!(out, "resource changes:").map_err(io)?;
            for c in &s.changes {
                writeln!(out, "    {}", c.line()).map_err(io)?;
            }
        }
    }
    let n = r
        .stacks
        .iter()
        .filter(|s| s.outcome != StackOutcome::Unchanged || s.template_diff.is_some())
        .count();
    writeln!(
        out,
        "{n} of {} stacks of `{}` would change",
        r.stacks.len(),
        r.pipeline
    )
    .map_err(io)?;
    Ok(())
}

fn print_status(out: &mut dyn Write, r: &StatusReport) -> Result<()> {
    let team = r
        .team
        .as_deref()
        .map(|t| format!(" of team `{t}`"))
        .unwrap_or_default();
    writeln!(out, "pipeline `{}`{team}:", r.pipeline).map_err(io)?;
    match (&r.owner, &r.owner_error) {
        (Some(o), _) => {
            let how = if o.claimed.adopted {
                "adopted"
            } else {
                "claimed"
            };
            writeln!(
                out,
                "  owner {} (team {}), {how} {} by {}",
                o.repository, o.team, o.claimed.at, o.claimed.by
            )
            .map_err(io)?;
            for t in &o.transfers {
                let why = t
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  transferred {} by {} from {} to {}{why}",
                    t.at,
                    t.by,
                    t.from.describe(),
                    t.to.describe()
                )
                .map_err(io)?;
            }
        }
        (None, Some(e)) => writeln!(out, "  owner unknown: {e}").map_err(io)?,
        (None, None) => writeln!(
            out,
            "  owner not recorded (deployed before owner records): the next deploy of team `{}` records it",
            r.team.as_deref().unwrap_or("?")
        )
        .map_err(io)?,
    }
    let w = r.stacks.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &r.stacks {
        let status = match (&s.status, &s.error) {
            (Some(st), _) => st.clone(),
            (None, Some(e)) => format!("unknown: {e}"),
            (None, None) => "NOT DEPLOYED".to_owned(),
        };
        let when = s.last_updated.as_deref().unwrap_or("-");
        let mut line = format!(
            "  {:<w$}  {:<8}  {}  {:<14}  {:<24}  {when}",
            s.name, s.kind, s.account, s.region, status
        );
        if let Some(reason) = s.reason.as_deref().filter(|_| !s.healthy()) {
            line.push_str(&format!("  ({reason})"));
        }
        writeln!(out, "{line}").map_err(io)?;
    }
    Ok(())
}

fn print_recover(out: &mut dyn Write, r: &pipeforge::recover::RecoverReport) -> Result<()> {
    use pipeforge::recover::Outcome;
    let place = format!("account {}, {}", r.account, r.region);
    match r.outcome {
        Outcome::Deleted => writeln!(
            out,
            "deleted stack `{}` ({place}), which was {}: the next run of pipeline `{}` creates it again (retry its `Deploy-{}` stage or start the pipeline)",
            r.stack,
            r.status.as_deref().unwrap_or_default(),
            r.pipeline,
            r.environment
        ),
        Outcome::NothingToRecover => writeln!(
            out,
            "nothing to recover: there is no stack `{}` ({place}); the next run of pipeline `{}` creates it",
            r.stack, r.pipeline
        ),
    }
    .map_err(io)
}

fn print_doctor(out: &mut dyn Write, r: &pipeforge::doctor::DoctorReport) -> Result<()> {
    use pipeforge::doctor::Verdict;
    writeln!(out, "checked as {}", r.caller).map_err(io)?;
    let mut account = "";
    for c in &r.checks {
        if c.account != account {
            account = &c.account;
            writeln!(out, "account {account}:").map_err(io)?;
        }
        let v = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Missing => "missing",
            Verdict::Note => "note",
        };
        writeln!(out, "  {v:<8} {}: {}", c.item, c.detail).map_err(io)?;
        if !c.help.is_empty() {
            writeln!(out, "           help: {}", c.help).map_err(io)?;
        }
    }
    let missing = r
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Missing)
        .count();
    writeln!(
        out,
        "{}",
        if missing == 0 {
            "the bootstrap is in place".to_owned()
        } else {
            format!("{missing} item(s) missing")
        }
    )
    .map_err(io)
}

/// A command's report on `out`: as text by `text`, or as JSON.
fn report<T: serde::Serialize>(
    out: &mut dyn Write,
    format: Format,
    r: &T,
    text: fn(&mut dyn Write, &T) -> Result<()>,
) -> Result<()> {
    match format {
        Format::Text => text(out, r),
        Format::Json => json(out, r),
    }
}

fn json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<()> {
    out.write_all(outputs::canonical_json(value)?.as_bytes())
        .map_err(io)
}

/// Runs one of the AWS commands; `Ok(true)` means "differences found" (exit status 1).
pub fn run(command: Command, out: &mut dyn Write) -> Result<bool> {
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
    let reporter = Reporter::new();
    let result = runtime.block_on(async {
        tokio::select! {
            r = run_async(command, out, &reporter) => r,
            _ = tokio::signal::ctrl_c() => Err(Error::other(
                "interrupted",
                "CloudFormation finishes a stack operation that was running; run the same command again to continue (a deploy's lock expires 5 minutes after it was last renewed)",
            )),
        }
    });
    reporter.finish();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run_async(command: Command, out: &mut dyn Write, progress: &Reporter) -> Result<bool> {
    let aws = AwsContext::load(&AwsSettings::default()).await;
    match command {
        Command::Publish(a) => publish(a, &aws, out, progress).await,
        Command::Deploy(a) => deploy(a, &aws, out, progress).await,
        Command::Diff(a) => diff(a, &aws, out, progress).await,
        Command::Status {
            name,
            team,
            org,
            format,
        } => {
            let policy = load_policy(org.as_deref())?;
            let r = status::status(&name, team.as_deref(), &policy, &aws).await?;
            report(out, format, &r, print_status)?;
            Ok(!r.healthy())
        }
        Command::Recover(a) => recover(a, &aws, out, progress).await,
        Command::Transfer(a) => transfer(a, &aws, out, progress).await,
        Command::Move(a) => relocate(a, &aws, out, progress).await,
        Command::Doctor {
            accounts,
            org,
            format,
        } => {
            let policy = load_policy(org.as_deref())?;
            let r = pipeforge::doctor::doctor(&aws, &policy, &accounts).await?;
            report(out, format, &r, print_doctor)?;
            Ok(!r.healthy())
        }
        _ => Err(Error::other(
            "not an AWS command",
            "this is a pipeforge bug; please report it",
        )),
    }
}

/// The org policy of `--org`, else the embedded one.
fn load_policy(org: Option<&Path>) -> Result<pipeforge::org::OrgPolicy> {
    match org {
        Some(p) => pipeforge::org::load(&pipeforge::read_source(p)?),
        None => pipeforge::org::embedded(),
    }
}

/// `publish`: the bundle and the repository snapshot to the source bucket.
async fn publish(
    a: PublishArgs,
    aws: &AwsContext,
    out: &mut dyn Write,
    progress: &Reporter,
) -> Result<bool> {
    let inp = inputs(&a.inputs)?;
    let options = PublishOptions {
        repository: a.target.repository.clone(),
        allow_dirty: a.allow_dirty,
        force_source: a.force,
        timeout: Duration::from_secs(a.timeout),
        today: Some(a.inputs.today()),
        ..PublishOptions::default()
    };
    let r = publish::publish(
        &a.target.repo,
        &a.target.manifest(),
        &inp,
        aws,
        &options,
        progress,
    )
    .await?;
    progress.finish();
    report(out, a.format, &r, print_publish)?;
    Ok(false)
}

/// `deploy`: the pipeline's stacks, then its source.
async fn deploy(
    a: DeployArgs,
    aws: &AwsContext,
    out: &mut dyn Write,
    progress: &Reporter,
) -> Result<bool> {
    let inp = inputs(&a.inputs)?;
    let options = DeployOptions {
        repository: a.target.repository.clone(),
        dry_run: a.dry_run,
        allow_dirty: a.allow_dirty,
        force_source: a.force_source,
        concurrency: usize::from(a.concurrency),
        timeout: Duration::from_secs(a.timeout),
        today: Some(a.inputs.today()),
        ..DeployOptions::default()
    };
    let r = deploy::deploy(
        &a.target.repo,
        &a.target.manifest(),
        &inp,
        aws,
        &options,
        progress,
    )
    .await?;
    progress.finish();
    report(out, a.format, &r, print_deploy)?;
    Ok(false)
}

/// `diff`: what a deploy would change; `true` when something would.
async fn diff(
    a: DiffArgs,
    aws: &AwsContext,
    out: &mut dyn Write,
    progress: &Reporter,
) -> Result<bool> {
    let inp = inputs(&a.inputs)?;
    let options = DeployOptions {
        repository: a.target.repository.clone(),
        timeout: Duration::from_secs(a.timeout),
        today: Some(a.inputs.today()),
        ..DeployOptions::default()
    };
    let r = deploy::diff(
        &a.target.repo,
        &a.target.manifest(),
        &inp,
        aws,
        &options,
        progress,
    )
    .await?;
    progress.finish();
    report(out, a.format, &r, print_diff)?;
    Ok(r.changed())
}

/// `recover`: deletes an application stack whose first create failed.
async fn recover(
    a: RecoverArgs,
    aws: &AwsContext,
    out: &mut dyn Write,
    progress: &Reporter,
) -> Result<bool> {
    let policy = load_policy(a.org.as_deref())?;
    let options = pipeforge::recover::RecoverOptions {
        timeout: Duration::from_secs(a.timeout),
        ..Default::default()
    };
    let r = pipeforge::recover::recover(&a.name, &a.env, &policy, aws, &options, progress).await;
    progress.finish();
    let r = r?;
    report(out, a.format, &r, print_recover)?;
    Ok(false)
}

/// `transfer`: gives a pipeline to another team and repository; logged on stderr too.
async fn transfer(
    a: TransferArgs,
    aws: &AwsContext,
    out: &mut dyn Write,
    progress: &Reporter,
) -> Result<bool> {
    let policy = load_policy(a.org.as_deref())?;
    let to = owner::Owner::new(&a.team, &owner::Repository::parse(&a.repository)?);
    let request = owner::TransferRequest {
        name: a.name,
        to,
        reason: a.reason,
        by: publish::default_holder(),
        timeout: Duration::from_secs(a.timeout),
    };
    let r = owner::transfer_pipeline(aws, &policy, &request, progress).await?;
    progress.finish();
    // The transfer is logged on stderr too, whatever the format of the report.
    let line = if r.changed {
        format!(
            "transferred pipeline `{}` from {} to {} (recorded in {})",
            r.pipeline,
            r.from.describe(),
            r.to.describe(),
            r.record_url
        )
    } else {
        format!(
            "pipeline `{}` already belongs to {}; nothing changed",
            r.pipeline,
            r.to.describe()
        )
    };
    match a.format {
        Format::Text => {
            writeln!(out, "{line}").map_err(io)?;
            if r.changed {
                writeln!(
                    out,
                    "the new owner's next `pipeforge deploy` updates the pipeline's stacks (its `team` tag decides who may approve)"
                )
                .map_err(io)?;
            }
        }
        Format::Json => {
            progress.emit(&[line], None);
            json(out, &r)?
        }
    }
    Ok(false)
}

/// `move`: the pipeline to another tooling account.
async fn relocate(
    a: MoveArgs,
    aws: &AwsContext,
    out: &mut dyn Write,
    progress: &Reporter,
) -> Result<bool> {
    let inp = inputs(&a.inputs)?;
    let options = pipeforge::deploy::relocate::MoveOptions {
        to: a.to,
        retire_old: a.retire_old,
        by: publish::default_holder(),
        deploy: pipeforge::deploy::DeployOptions {
            timeout: Duration::from_secs(a.timeout),
            today: Some(a.inputs.today()),
            ..Default::default()
        },
    };
    let r = pipeforge::deploy::relocate::relocate(&a.name, &inp, aws, &options, progress).await;
    progress.finish();
    let r = r?;
    report(out, a.format, &r, print_move)?;
    Ok(false)
}

/// The text report of `move`.
fn print_move(out: &mut dyn Write, r: &pipeforge::deploy::relocate::MoveReport) -> Result<()> {
    if r.changed {
        writeln!(
            out,
            "moved pipeline `{}` from tooling account {} ({}) to {} ({})",
            r.pipeline, r.from.account, r.from.region, r.to.account, r.to.region
        )
        .map_err(io)?;
        for s in &r.retired {
            writeln!(out, "  deleted old stack {s}").map_err(io)?;
        }
    } else {
        writeln!(
            out,
            "pipeline `{}` is in tooling account {} already; nothing changed",
            r.pipeline, r.to.account
        )
        .map_err(io)?;
    }
    Ok(())
}
