//! The commands that work on this machine (`validate`, `preview`, `explain`, `render`, `run`,
//! `schema`, `coverage`, `serve`, `bootstrap`, `templates check`): one function per command,
//! each from its arguments to the library call and what it prints. `main` only dispatches.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pipeforge::error::{Error, Result};
use pipeforge::golden::{self, Mode, Outcome};
use pipeforge::model::NoticeKind;
use pipeforge::plan::{GatePlan, Plan};
use pipeforge::render::Templates;
use pipeforge::schema::did_you_mean;
use pipeforge::{Evaluation, Inputs, batch, catalog::Catalog, generate_in, outputs, read_manifest};

use crate::cli::{
    CoverageCommand, Format, InputArgs, RunArgs, SchemaKind, ServeArgs, Status, TemplatesCommand,
};
use crate::cli_check;

/// The library's inputs (org policy, catalog, templates) from the command line.
pub fn inputs(a: &InputArgs) -> Result<Inputs> {
    Inputs::load(
        a.org.as_deref(),
        a.languages.as_deref(),
        a.templates.as_deref(),
    )
}

/// A failed write to stdout or stderr.
pub fn io(e: std::io::Error) -> Error {
    Error::other(
        format!("cannot write output: {e}"),
        "check that stdout is writable",
    )
}

/// `validate`: every manifest, then the stack names they share; every problem at once.
pub fn validate(
    manifests: &[PathBuf],
    repository: Option<&str>,
    args: &InputArgs,
    err: &mut dyn Write,
) -> Result<Status> {
    let inp = inputs(args)?;
    warn_policy(&inp, err)?;
    let mut failures = Vec::new();
    let mut models = Vec::new();
    for m in manifests {
        let file = read_manifest(m)?;
        let eval = evaluation(&inp, args, m, repository);
        match pipeforge::validate_in(&file, &inp.org, &inp.catalog, &eval) {
            Ok(model) => {
                for n in &model.notices {
                    writeln!(err, "{n}").map_err(io)?;
                }
                models.push((m, model))
            }
            Err(e) => failures.push(e),
        }
    }
    let all: Vec<&pipeforge::model::Model> = models.iter().map(|(_, m)| m).collect();
    let clashes = pipeforge::model::stack_names::collisions(&all, &inp.org);
    for (m, model) in &models {
        if !clashes.iter().any(|d| d.file == model.file) {
            writeln!(err, "ok: {} (pipeline `{}`)", m.display(), model.name).map_err(io)?;
        }
    }
    if !clashes.is_empty() {
        failures.push(Error::from(clashes));
    }
    merge_failures(failures)
}

/// One error from the failures of `validate`: the diagnostics of all of them together.
fn merge_failures(mut failures: Vec<Error>) -> Result<Status> {
    match failures.len() {
        0 => Ok(Status::Ok),
        1 => Err(failures.remove(0)),
        _ => {
            let mut all = Vec::new();
            for f in failures {
                match f {
                    Error::Invalid(d) => all.extend(d.0),
                    other => return Err(other),
                }
            }
            Err(Error::from(all))
        }
    }
}

/// `preview --web`: serves the preview page until Ctrl-C or SIGTERM.
pub fn preview_web(listen: SocketAddr, args: &InputArgs) -> Result<Status> {
    let inp = inputs(args)?;
    let runtime = runtime()?;
    runtime.block_on(pipeforge::webhook::page::serve(
        listen,
        inp,
        pipeforge::webhook::http::Limits::default(),
        json_lines_log(),
        shutdown_signal(),
    ))?;
    Ok(Status::Ok)
}

/// `preview`: the buildspec of one gate, or of every gate one after the other.
pub fn preview(
    manifest: Option<PathBuf>,
    gate: Option<&str>,
    args: &InputArgs,
    out: &mut dyn Write,
) -> Result<Status> {
    let inp = inputs(args)?;
    let Some(manifest) = manifest else {
        return Err(Error::other(
            "no manifest given",
            "pass a manifest file, or `--web` for the preview page",
        ));
    };
    let eval = evaluation(&inp, args, &manifest, None);
    let bundle = generate_in(&read_manifest(&manifest)?, &inp, &eval)?;
    if let Some(g) = gate {
        let gates: Vec<&str> = bundle.plan.gates.iter().map(|g| g.name.as_str()).collect();
        let Some(plan_gate) = bundle.plan.gate(g) else {
            let help = match did_you_mean(g, gates.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "this pipeline's gates are {}",
                    pipeforge::model::backticks(&gates)
                ),
            };
            return Err(Error::other(
                format!("no gate `{g}` in this pipeline"),
                help,
            ));
        };
        out.write_all(bundle.outputs.get(&plan_gate.buildspec).unwrap_or_default())
            .map_err(io)?;
    } else {
        for (i, g) in bundle.plan.gates.iter().enumerate() {
            if i > 0 {
                writeln!(out, "---").map_err(io)?;
            }
            writeln!(out, "# file: {}", g.buildspec).map_err(io)?;
            out.write_all(bundle.outputs.get(&g.buildspec).unwrap_or_default())
                .map_err(io)?;
        }
    }
    Ok(Status::Ok)
}

/// `explain`: the plan in words (with its footprint), or `plan.json`.
pub fn explain(
    manifest: &Path,
    format: Format,
    repository: Option<&str>,
    args: &InputArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status> {
    let inp = inputs(args)?;
    warn_policy(&inp, err)?;
    let eval = evaluation(&inp, args, manifest, repository);
    let bundle = generate_in(&read_manifest(manifest)?, &inp, &eval)?;
    for n in bundle
        .plan
        .notices
        .iter()
        .filter(|n| n.kind == NoticeKind::Warning)
    {
        writeln!(err, "{n}").map_err(io)?;
    }
    match format {
        Format::Text => {
            let footprint =
                pipeforge::capacity::Footprint::of_outputs(&bundle.plan, &bundle.outputs)?;
            out.write_all(
                pipeforge::explain::explain(&bundle.plan, &footprint, &inp.org).as_bytes(),
            )
            .map_err(io)?
        }
        Format::Json => out
            .write_all(bundle.outputs.get(outputs::PLAN_FILE).unwrap_or_default())
            .map_err(io)?,
    }
    Ok(Status::Ok)
}

/// `render`: every manifest's bundle into `dir`, or (`--check`) the diff against it.
pub fn render(
    manifests: &[PathBuf],
    dir: &Path,
    check: bool,
    args: &InputArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status> {
    let inp = inputs(args)?;
    let mode = if check {
        batch::Mode::Check
    } else {
        batch::Mode::Write
    };
    // One manifest renders on this thread: asking how many cores there are reads the
    // process's cgroup files, which costs a short run more than anything it could decide.
    let threads = if manifests.len() > 1 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    let eval = Evaluation::on(args.today());
    let report = batch::render_all(manifests, &inp, &eval, dir, mode, threads)?;
    if check {
        return report_check(report.diff, dir, out, err);
    }
    // One write for the whole report (stderr is unbuffered: a `writeln!` per line
    // would be a system call per piece of each line).
    let mut lines = String::new();
    for p in &report.pipelines {
        lines.push_str(&format!(
            "rendered {} files into {}\n",
            p.files,
            dir.join(&p.name).display()
        ));
    }
    err.write_all(lines.as_bytes()).map_err(io)?;
    Ok(Status::Ok)
}

/// What `--check` of `render` and `bootstrap` reports: up to date, or the diff (exit 1).
fn report_check(
    diff: Option<String>,
    dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status> {
    match diff {
        None => {
            writeln!(err, "ok: {} is up to date", dir.display()).map_err(io)?;
            Ok(Status::Ok)
        }
        Some(diff) => {
            out.write_all(diff.as_bytes()).map_err(io)?;
            writeln!(err, "error: {} differs from what would be rendered\n  help: run the same command without `--check` to update it", dir.display()).map_err(io)?;
            Ok(Status::Differs)
        }
    }
}

/// `run`: the chosen gates' buildspecs on this machine, then a summary of all of them.
pub fn run_gates(a: &RunArgs, out: &mut dyn Write) -> Result<Status> {
    let inp = inputs(&a.inputs)?;
    let manifest = a
        .manifest
        .clone()
        .unwrap_or_else(|| a.repo.join("pipeline.yml"));
    let eval = evaluation(&inp, &a.inputs, &manifest, None);
    let bundle = generate_in(&read_manifest(&manifest)?, &inp, &eval)?;
    let opts = run_options(a)?;
    let plan = &bundle.plan;
    let mut results = Vec::new();
    for g in chosen_gates(plan, &a.gate)? {
        let text = String::from_utf8_lossy(bundle.outputs.get(&g.buildspec).unwrap_or_default())
            .into_owned();
        let r = pipeforge::run::run_gate(plan, g, &text, &inp.catalog, &opts, out)?;
        out.write_all(pipeforge::run::summary(&r).as_bytes())
            .map_err(io)?;
        results.push(r);
    }
    if results.len() > 1 {
        all_gates_summary(&results, out)?;
    }
    Ok(if results.iter().all(|r| r.succeeded) {
        Status::Ok
    } else {
        Status::Differs
    })
}

/// `NAME=VALUE` of `--tool` and `--env`.
fn pair(what: &str, s: &str) -> Result<(String, String)> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| {
            Error::other(
                format!("`{s}` is not `NAME=VALUE`"),
                format!("write `--{what} NAME=VALUE`"),
            )
        })
}

/// The library's options of `run`: the local tools, the variables, the directories.
fn run_options(a: &RunArgs) -> Result<pipeforge::run::RunOptions> {
    let mut tool_map = BTreeMap::new();
    for t in &a.tools {
        let (k, v) = pair("tool", t)?;
        let path = std::fs::canonicalize(&v).map_err(|e| Error::read(Path::new(&v), e))?;
        tool_map.insert(k, path);
    }
    let env = a
        .env
        .iter()
        .map(|e| pair("env", e))
        .collect::<Result<Vec<_>>>()?;
    if let Some((k, _)) = env.iter().find(|(k, _)| k.starts_with("CODEBUILD_")) {
        return Err(Error::other(
            format!("`{k}` is CodeBuild's own variable"),
            "`CODEBUILD_` variables cannot be overridden",
        ));
    }
    let cache_dir = a.cache_dir.clone().unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("pipeforge/run")
    });
    Ok(pipeforge::run::RunOptions {
        repo: a.repo.clone(),
        work_dir: a.work_dir.clone().unwrap_or_else(std::env::temp_dir),
        cache_dir,
        keep: a.keep,
        allow_dirty: a.allow_dirty,
        ignore_runtime: a.ignore_runtime,
        tools: tool_map,
        env,
        pass_env: a.pass_env.clone(),
        pipeforge: std::env::current_exe().map_err(|e| {
            Error::other(
                format!("cannot find this program's path: {e}"),
                "run pipeforge by its path",
            )
        })?,
    })
}

/// The gates `run` runs: the one named, or (`all`) every CI gate.
fn chosen_gates<'p>(plan: &'p Plan, gate: &str) -> Result<Vec<&'p GatePlan>> {
    if gate == "all" {
        return Ok(plan
            .gates
            .iter()
            .filter(|g| g.stage == pipeforge::org::Stage::Ci)
            .collect());
    }
    match plan.gate(gate) {
        Some(g) => Ok(vec![g]),
        None => {
            let gates: Vec<&str> = plan.gates.iter().map(|g| g.name.as_str()).collect();
            let help = match did_you_mean(gate, gates.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "this pipeline's gates are {} (or `all`)",
                    pipeforge::model::backticks(&gates)
                ),
            };
            Err(Error::other(
                format!("no gate `{gate}` in this pipeline"),
                help,
            ))
        }
    }
}

/// The table after several gates ran: each gate, passed or failed, and its time.
fn all_gates_summary(results: &[pipeforge::run::GateResult], out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "
-- all gates"
    )
    .map_err(io)?;
    for r in results {
        writeln!(
            out,
            "   {:<16} {:<7} {:>7.1} s",
            r.gate,
            if r.succeeded { "passed" } else { "FAILED" },
            r.duration.as_secs_f64()
        )
        .map_err(io)?;
    }
    Ok(())
}

/// `schema`: the JSON schema of the manifest or of the org policy.
pub fn schema(kind: SchemaKind, out: &mut dyn Write) -> Result<Status> {
    let schema = match kind {
        SchemaKind::Manifest => pipeforge::manifest::json_schema(),
        SchemaKind::Org => pipeforge::org::json_schema(),
    };
    out.write_all(outputs::canonical_json(schema)?.as_bytes())
        .map_err(io)?;
    Ok(Status::Ok)
}

/// `coverage check`: exit 1 when a report's line coverage is below `--min`.
pub fn coverage(
    command: CoverageCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status> {
    let CoverageCommand::Check { report, min } = command;
    if !(0.0..=100.0).contains(&min) {
        return Err(Error::other(
            format!("`--min {min}` is not a percentage"),
            "pass a number from 0 to 100",
        ));
    }
    let xml = std::fs::read_to_string(&report).map_err(|e| Error::read(&report, e))?;
    let c = pipeforge::coverage::read(&xml).map_err(|e| match e {
        Error::Other { message, help } => {
            Error::other(format!("{}: {message}", report.display()), help)
        }
        other => other,
    })?;
    let lines = match (c.covered, c.total) {
        (Some(a), Some(b)) => format!(" ({a} of {b} lines)"),
        _ => String::new(),
    };
    if pipeforge::coverage::meets(&c, min) {
        writeln!(
            out,
            "line coverage {:.2}%{lines} meets the required {min}%",
            c.percent
        )
        .map_err(io)?;
        Ok(Status::Ok)
    } else {
        writeln!(err, "error: line coverage {:.2}%{lines} is below the required {min}%\n  help: add tests for the uncovered code; the threshold comes from `quality.coverage_min` or the org's floor", c.percent).map_err(io)?;
        Ok(Status::Differs)
    }
}

/// `serve`: the webhook server, until Ctrl-C or SIGTERM.
pub fn serve(a: ServeArgs) -> Result<Status> {
    use pipeforge::webhook::server;
    let inp = inputs(&a.inputs)?;
    let queue = match a.queue_url.clone() {
        Some(url) => server::QueueChoice::Sqs(url),
        None => server::QueueChoice::Local {
            max_receives: a.max_attempts,
        },
    };
    let opts = server::ServeOptions {
        listen: a.listen,
        queue,
        status_bucket: a.status_bucket.clone(),
        workers: a.workers,
        worker: worker_settings(&a),
        inputs: inp,
        preview_page: a.preview_page,
        deploy: if a.render_only {
            server::DeployChoice::RenderOnly
        } else {
            server::DeployChoice::Aws(pipeforge::deploy::DeployOptions {
                timeout: std::time::Duration::from_secs(a.deploy_timeout),
                ..pipeforge::deploy::DeployOptions::default()
            })
        },
        limits: http_limits(&a),
    };
    let runtime = runtime()?;
    runtime.block_on(server::serve(opts, json_lines_log(), shutdown_signal()))?;
    Ok(Status::Ok)
}

/// The settings of `serve`'s workers.
fn worker_settings(a: &ServeArgs) -> pipeforge::webhook::worker::WorkerSettings {
    use pipeforge::webhook::{server, worker};
    worker::WorkerSettings {
        work_dir: a.work_dir.clone().unwrap_or_else(server::default_work_dir),
        retry_base: std::time::Duration::from_millis(a.retry_delay_ms),
        receive_wait: std::time::Duration::from_secs(a.receive_wait_secs.min(20)),
        today: a.inputs.today,
        ..worker::WorkerSettings::default()
    }
}

/// The limits of `serve`'s HTTP server (timeouts, connections, bodies).
fn http_limits(a: &ServeArgs) -> pipeforge::webhook::http::Limits {
    use std::time::Duration;
    pipeforge::webhook::http::Limits {
        header_timeout: Duration::from_secs(a.header_timeout_secs),
        body_timeout: Duration::from_secs(a.body_timeout_secs),
        idle_timeout: Duration::from_secs(a.idle_timeout_secs),
        max_connections: usize::try_from(a.max_connections).unwrap_or(usize::MAX),
        max_bodies: usize::try_from(a.max_bodies).unwrap_or(usize::MAX),
    }
}

/// `bootstrap`: the installation's stacks into `dir`, or (`--check`) the diff against it.
pub fn bootstrap(
    dir: &Path,
    check: bool,
    args: &InputArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status> {
    let inp = inputs(args)?;
    let rendered = pipeforge::webhook::bootstrap::render(&inp.org, &inp.templates)?;
    let refs = [("", &rendered)];
    if check {
        return report_check(outputs::diff_bundles(dir, &refs)?, dir, out, err);
    }
    outputs::write_bundles(dir, &refs)?;
    writeln!(
        err,
        "rendered {} into {}: deploy tooling.json in the tooling account, target.json in every target account and every other tooling account, then each tooling-ACCOUNT.json in its account (see README, \"Installing pipeforge\" and \"Running at scale\")",
        rendered.iter().map(|(p, _)| p).collect::<Vec<_>>().join(" and "),
        dir.display()
    )
    .map_err(io)?;
    Ok(Status::Ok)
}

/// How many golden cases `templates check` found unchanged, changed and failed.
#[derive(Default)]
struct Tally {
    same: usize,
    differ: usize,
    failed: usize,
}

/// `templates check`: the golden cases, their IAM checks, the scanner's new findings and the
/// injection probe, with the given templates and languages.
pub fn templates(
    command: TemplatesCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status> {
    let TemplatesCommand::Check {
        templates,
        languages,
        golden: dir,
        checkov,
        fail_on_findings,
    } = command;
    let templates = Templates::load(templates.as_deref())?;
    let catalog = Catalog::load(languages.as_deref())?;
    let cases = golden::cases(&dir)?;
    if cases.is_empty() {
        return Err(Error::other(
            format!("no golden cases in `{}`", dir.display()),
            "pass `--golden DIR` with directories that contain a `pipeline.yml`",
        ));
    }
    let mut tally = compare_cases(&cases, &catalog, &templates, out, err)?;
    tally.failed += iam_checks(&cases, &catalog, &templates, err)?;
    let findings = checkov_findings(checkov.as_deref(), &cases, &catalog, &templates, err)?;
    let injection = pipeforge::probe::injection_probe(&catalog, &templates);
    if let Err(e) = &injection {
        tally.failed += 1;
        writeln!(err, "failed: injection probe\n{e}").map_err(io)?;
    }
    let Tally {
        same,
        differ,
        failed,
    } = tally;
    writeln!(
        err,
        "{} cases: {same} unchanged, {differ} changed, {failed} failed; injection probe {}",
        cases.len(),
        if injection.is_ok() {
            "passed"
        } else {
            "FAILED"
        }
    )
    .map_err(io)?;
    if failed > 0 {
        Err(Error::other(
            format!("{failed} golden case(s) or checks failed"),
            "fix the templates or languages until every case renders",
        ))
    } else if fail_on_findings && findings > 0 {
        Err(Error::other(
            format!("the templates add {findings} Checkov finding(s)"),
            "fix them, or suppress one in the template (`Metadata.checkov.skip[]` with a `comment`)",
        ))
    } else if differ > 0 {
        Ok(Status::Differs)
    } else {
        Ok(Status::Ok)
    }
}

/// Renders every golden case and compares it with its expected files; prints each diff.
fn compare_cases(
    cases: &[PathBuf],
    catalog: &Catalog,
    templates: &Templates,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Tally> {
    let mut tally = Tally::default();
    for case in cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match golden::run_case(case, catalog, templates, Mode::Compare) {
            Outcome::Same | Outcome::Updated => tally.same += 1,
            Outcome::Differs(d) => {
                tally.differ += 1;
                writeln!(err, "changed: {name}").map_err(io)?;
                out.write_all(d.as_bytes()).map_err(io)?;
            }
            Outcome::Failed(e) => {
                tally.failed += 1;
                writeln!(err, "failed: {name}\n{e}").map_err(io)?;
            }
        }
    }
    Ok(tally)
}

/// The IAM checks: what the execution roles and the created roles lack. Returns the cases that
/// fail them.
fn iam_checks(
    cases: &[PathBuf],
    catalog: &Catalog,
    templates: &Templates,
    err: &mut dyn Write,
) -> Result<usize> {
    let mut failed = 0;
    for case in cases {
        // Cases that fail to render are already counted by `compare_cases`.
        let Ok(r) = cli_check::render(case, catalog, templates) else {
            continue;
        };
        let report = cli_check::iam_report(&r)?;
        if !report.is_empty() {
            failed += 1;
            writeln!(err, "failed: IAM check of {}\n{report}", r.name).map_err(io)?;
        }
    }
    Ok(failed)
}

/// Scanner findings the templates add (a list; a failure only when asked). Returns how many.
fn checkov_findings(
    checkov: Option<&Path>,
    cases: &[PathBuf],
    catalog: &Catalog,
    templates: &Templates,
    err: &mut dyn Write,
) -> Result<usize> {
    let mut findings = 0;
    match cli_check::find_checkov(checkov) {
        Some(path) => {
            for f in cli_check::new_findings(&path, cases, catalog, templates)? {
                findings += 1;
                writeln!(err, "new Checkov finding: {f}").map_err(io)?;
            }
        }
        None => writeln!(
            err,
            "note: Checkov not found; pass `--checkov PATH` to list the findings the templates add"
        )
        .map_err(io)?,
    }
    Ok(findings)
}

/// The day (`--today`, else the clock) and the repository a manifest is validated for: the one
/// given, else (only when a waiver names repositories) its checkout's `origin` remote.
fn evaluation(
    inp: &Inputs,
    args: &InputArgs,
    manifest: &Path,
    repository: Option<&str>,
) -> Evaluation {
    let repository = repository.map(str::to_owned).or_else(|| {
        let needed = inp.org.org.waivers.iter().any(|w| w.repository.is_some());
        let dir = manifest.parent().filter(|d| !d.as_os_str().is_empty());
        needed
            .then(|| pipeforge::owner::repository_of(dir.unwrap_or(Path::new(".")), None).ok())
            .flatten()
            .map(|r| r.as_str().to_owned())
    });
    Evaluation {
        today: Some(args.today()),
        repository,
    }
}

/// The multi-threaded runtime of `serve` and `preview --web`.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Error::other(
                format!("cannot start the async runtime: {e}"),
                "check the process limits (threads, file descriptors)",
            )
        })
}

/// Warns on stderr about what an older org policy leaves open (no `accounts`, no `teams`).
fn warn_policy(inp: &Inputs, err: &mut dyn Write) -> Result<()> {
    for (message, help) in inp.org.warnings() {
        writeln!(err, "warning: {message}\n  help: {help}\n").map_err(|e| {
            Error::other(
                format!("cannot write output: {e}"),
                "check that stderr is writable",
            )
        })?;
    }
    Ok(())
}

/// Logs of `serve`: one JSON object per line on stdout.
fn json_lines_log() -> pipeforge::webhook::log::Log {
    pipeforge::webhook::log::Log::new(std::sync::Arc::new(|e: &serde_json::Value| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{e}");
        let _ = out.flush();
    }))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
