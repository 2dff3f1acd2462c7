//! The `pipeforge` command: parses arguments, calls the library, prints, and maps results to
//! exit codes (0 ok, 1 differences found, 2 error). The only place that prints.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod cli_aws;
mod cli_check;
mod cli_fleet;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use cli::{
    Cli, ColorChoice, Command, CoverageCommand, Format, InputArgs, SchemaKind, TemplatesCommand,
    VersionArgs, VersionCommand,
};
use pipeforge::error::{Error, Result};
use pipeforge::golden::{self, Mode, Outcome};
use pipeforge::model::NoticeKind;
use pipeforge::render::Templates;
use pipeforge::schema::did_you_mean;
use pipeforge::{
    Evaluation, Inputs, batch, catalog::Catalog, generate_in, outputs, read_manifest, version,
};

/// mimalloc: rendering allocates many small strings and JSON values (see benches/render.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What a successful command reports.
enum Status {
    /// Everything as expected.
    Ok,
    /// Differences found (`--check`, `templates check`).
    Differs,
}

fn inputs(a: &InputArgs) -> Result<Inputs> {
    Inputs::load(
        a.org.as_deref(),
        a.languages.as_deref(),
        a.templates.as_deref(),
    )
}

/// The library's settings from `version` arguments (flags, else environment, else defaults).
/// An empty environment variable counts as unset, as a pipeline may render one empty.
fn version_settings(a: &VersionArgs) -> Result<version::Settings> {
    let or = |v: &str, default: &str| {
        if v.trim().is_empty() {
            default.to_owned()
        } else {
            v.trim().to_owned()
        }
    };
    let mut s = version::Settings::new(
        &or(&a.initial, version::DEFAULT_INITIAL),
        &or(&a.prerelease, version::DEFAULT_PRERELEASE),
    )?;
    let branches: Vec<String> = a
        .release_branches
        .iter()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    if !branches.is_empty() {
        s.release_branches = branches;
    }
    s.branch = a.branch.clone().filter(|b| !b.trim().is_empty());
    s.build_metadata = a.build_metadata;
    s.fetch = a.fetch.then(|| a.remote.clone());
    Ok(s)
}

fn run_version(command: VersionCommand, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::other(
            format!("cannot write output: {e}"),
            "check that stdout is writable",
        )
    };
    match command {
        VersionCommand::Stamp { args, repo } => {
            use pipeforge::package_version::{Ecosystem, Stamp, stamp_pyproject};
            if Ecosystem::parse(&args.ecosystem)? != Ecosystem::Python {
                return Err(Error::other(
                    format!(
                        "`version stamp` has nothing to write for `{}`",
                        args.ecosystem
                    ),
                    "npm, Maven and .NET builds set the version with their own tools (`npm version`, `versions:set`, `-p:Version`)",
                ));
            }
            let path = repo.join("pyproject.toml");
            if !path.is_file() {
                return Err(Error::other(
                    format!("`{}` does not exist", path.display()),
                    "the Python build gate packages projects with a `pyproject.toml`",
                ));
            }
            let text = std::fs::read_to_string(&path).map_err(|e| Error::read(&path, e))?;
            match stamp_pyproject(&text, &args.version)? {
                Stamp::Dynamic => writeln!(
                    err,
                    "the version is dynamic (from git); the build gets {} from the environment",
                    args.version
                )
                .map_err(io)?,
                Stamp::Replaced { previous, text } => {
                    std::fs::write(&path, text).map_err(|e| {
                        Error::other(
                            format!("cannot write `{}`: {e}", path.display()),
                            "check that the checkout is writable",
                        )
                    })?;
                    writeln!(
                        err,
                        "version {previous} in {} replaced with {}",
                        path.display(),
                        pipeforge::package_version::pep440(&args.version)?
                    )
                    .map_err(io)?;
                }
            }
        }
        VersionCommand::Verify { args, files } => {
            let eco = pipeforge::package_version::Ecosystem::parse(&args.ecosystem)?;
            let names: Vec<String> = files
                .iter()
                .filter(|f| f.is_file())
                .map(|f| {
                    f.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect();
            pipeforge::package_version::verify(eco, &args.version, &names)?;
            writeln!(
                out,
                "{} package(s) carry version {}",
                names.len(),
                args.version
            )
            .map_err(io)?;
        }
        VersionCommand::Next { args } => {
            let settings = version_settings(&args)?;
            let next = version::next(&args.repo, &settings)?;
            for w in &next.warnings {
                writeln!(err, "warning: {w}").map_err(io)?;
            }
            match args.format {
                Format::Text => {
                    writeln!(err, "version {}: {}", next.version, next.reason).map_err(io)?;
                    writeln!(out, "{}", next.version).map_err(io)?;
                }
                Format::Json => out
                    .write_all(outputs::canonical_json(&next)?.as_bytes())
                    .map_err(io)?,
            }
        }
        VersionCommand::Tag {
            args,
            push,
            expect,
            user_name,
            user_email,
            pipeline,
            execution_id,
            build_id,
            build_succeeding,
        } => {
            let settings = version_settings(&args)?;
            let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
            let expect = match nonempty(expect) {
                Some(e) => Some(semver::Version::parse(e.trim()).map_err(|x| {
                    Error::other(
                        format!("`--expect {e}` is not a semantic version: {x}"),
                        "pass the version `pipeforge version next` printed, such as `1.4.0`",
                    )
                })?),
                None => None,
            };
            let req = version::TagRequest {
                expect,
                push: push.then(|| args.remote.clone()),
                user_name: nonempty(user_name),
                user_email: nonempty(user_email),
                pipeline: nonempty(pipeline),
                execution_id: nonempty(execution_id),
                build_id: nonempty(build_id),
                build_failing: build_succeeding.is_some_and(|v| v.trim() == "0"),
            };
            let outcome = version::tag(&args.repo, &settings, &req)?;
            for w in &outcome.next.warnings {
                writeln!(err, "warning: {w}").map_err(io)?;
            }
            let name = outcome.next.tag.as_deref().unwrap_or_default();
            let short = &outcome.next.head[..outcome.next.head.len().min(7)];
            let local = match outcome.action {
                version::TagAction::Created => format!("tagged `{name}` on {short}"),
                version::TagAction::Existing => {
                    format!("`{name}` already tags {short}; nothing to do")
                }
                version::TagAction::Skipped => format!(
                    "`{}` is a pre-release (branch `{}`); pre-releases are not tagged",
                    outcome.next.version,
                    outcome.next.branch.as_deref().unwrap_or_default()
                ),
            };
            writeln!(err, "{local}").map_err(io)?;
            if let (Some(remote), Some(status)) = (&outcome.remote, outcome.pushed) {
                let line = match status {
                    version::PushStatus::Pushed => format!("pushed `{name}` to `{remote}`"),
                    version::PushStatus::UpToDate => {
                        format!("`{remote}` already has `{name}` on {short}")
                    }
                };
                writeln!(err, "{line}").map_err(io)?;
            }
            match args.format {
                Format::Text => writeln!(out, "{}", outcome.next.version).map_err(io)?,
                Format::Json => out
                    .write_all(outputs::canonical_json(&outcome)?.as_bytes())
                    .map_err(io)?,
            }
        }
    }
    Ok(())
}

fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status> {
    let io = |e: std::io::Error| {
        Error::other(
            format!("cannot write output: {e}"),
            "check that stdout is writable",
        )
    };
    match cli.command {
        command @ (Command::Publish { .. }
        | Command::Deploy { .. }
        | Command::Diff { .. }
        | Command::Status { .. }
        | Command::Recover { .. }
        | Command::Transfer { .. }
        | Command::Move { .. }
        | Command::Doctor { .. }) => {
            let _ = err.flush();
            Ok(if cli_aws::run(command, out)? {
                Status::Differs
            } else {
                Status::Ok
            })
        }
        Command::Fleet { command } => {
            let _ = err.flush();
            Ok(if cli_fleet::run(command, out)? {
                Status::Differs
            } else {
                Status::Ok
            })
        }
        Command::Validate {
            manifests,
            repository,
            inputs: args,
        } => {
            let inp = inputs(&args)?;
            warn_policy(&inp, err)?;
            let mut failures = Vec::new();
            let mut models = Vec::new();
            for m in &manifests {
                let file = read_manifest(m)?;
                let eval = evaluation(&inp, &args, m, repository.as_deref());
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
        Command::Preview {
            web: true,
            listen,
            inputs: args,
            ..
        } => {
            let inp = inputs(&args)?;
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
        Command::Preview {
            manifest,
            gate,
            inputs: args,
            ..
        } => {
            let inp = inputs(&args)?;
            let Some(manifest) = manifest else {
                return Err(Error::other(
                    "no manifest given",
                    "pass a manifest file, or `--web` for the preview page",
                ));
            };
            let eval = evaluation(&inp, &args, &manifest, None);
            let bundle = generate_in(&read_manifest(&manifest)?, &inp, &eval)?;
            let gates: Vec<&str> = bundle.plan.gates.iter().map(|g| g.name.as_str()).collect();
            if let Some(g) = &gate {
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
        Command::Explain {
            manifest,
            format,
            repository,
            inputs: args,
        } => {
            let inp = inputs(&args)?;
            warn_policy(&inp, err)?;
            let eval = evaluation(&inp, &args, &manifest, repository.as_deref());
            let bundle = generate_in(&read_manifest(&manifest)?, &inp, &eval)?;
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
        Command::Render {
            manifests,
            out: dir,
            check,
            inputs: args,
        } => {
            let inp = inputs(&args)?;
            let mode = if check {
                batch::Mode::Check
            } else {
                batch::Mode::Write
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let eval = Evaluation::on(args.today());
            let report = batch::render_all(&manifests, &inp, &eval, &dir, mode, threads)?;
            if check {
                return match report.diff {
                    None => {
                        writeln!(err, "ok: {} is up to date", dir.display()).map_err(io)?;
                        Ok(Status::Ok)
                    }
                    Some(diff) => {
                        out.write_all(diff.as_bytes()).map_err(io)?;
                        writeln!(err, "error: {} differs from what would be rendered\n  help: run the same command without `--check` to update it", dir.display()).map_err(io)?;
                        Ok(Status::Differs)
                    }
                };
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
        Command::Version { command } => {
            run_version(*command, out, err)?;
            Ok(Status::Ok)
        }
        Command::Run {
            gate,
            repo,
            manifest,
            keep,
            work_dir,
            cache_dir,
            tools,
            env,
            pass_env,
            allow_dirty,
            ignore_runtime,
            inputs: args,
        } => {
            let inp = inputs(&args)?;
            let manifest = manifest.unwrap_or_else(|| repo.join("pipeline.yml"));
            let eval = evaluation(&inp, &args, &manifest, None);
            let bundle = generate_in(&read_manifest(&manifest)?, &inp, &eval)?;
            let pair = |what: &str, s: &str| -> Result<(String, String)> {
                s.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| {
                        Error::other(
                            format!("`{s}` is not `NAME=VALUE`"),
                            format!("write `--{what} NAME=VALUE`"),
                        )
                    })
            };
            let mut tool_map = BTreeMap::new();
            for t in &tools {
                let (k, v) = pair("tool", t)?;
                let path = std::fs::canonicalize(&v)
                    .map_err(|e| Error::read(std::path::Path::new(&v), e))?;
                tool_map.insert(k, path);
            }
            let env = env
                .iter()
                .map(|e| pair("env", e))
                .collect::<Result<Vec<_>>>()?;
            if let Some((k, _)) = env.iter().find(|(k, _)| k.starts_with("CODEBUILD_")) {
                return Err(Error::other(
                    format!("`{k}` is CodeBuild's own variable"),
                    "`CODEBUILD_` variables cannot be overridden",
                ));
            }
            let cache_dir = cache_dir.unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(std::path::PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache"))
                    })
                    .unwrap_or_else(std::env::temp_dir)
                    .join("pipeforge/run")
            });
            let opts = pipeforge::run::RunOptions {
                repo: repo.clone(),
                work_dir: work_dir.unwrap_or_else(std::env::temp_dir),
                cache_dir,
                keep,
                allow_dirty,
                ignore_runtime,
                tools: tool_map,
                env,
                pass_env,
                pipeforge: std::env::current_exe().map_err(|e| {
                    Error::other(
                        format!("cannot find this program's path: {e}"),
                        "run pipeforge by its path",
                    )
                })?,
            };
            let plan = &bundle.plan;
            let chosen: Vec<&pipeforge::plan::GatePlan> = if gate == "all" {
                plan.gates
                    .iter()
                    .filter(|g| g.stage == pipeforge::org::Stage::Ci)
                    .collect()
            } else {
                match plan.gate(&gate) {
                    Some(g) => vec![g],
                    None => {
                        let gates: Vec<&str> = plan.gates.iter().map(|g| g.name.as_str()).collect();
                        let help = match did_you_mean(&gate, gates.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!(
                                "this pipeline's gates are {} (or `all`)",
                                pipeforge::model::backticks(&gates)
                            ),
                        };
                        return Err(Error::other(
                            format!("no gate `{gate}` in this pipeline"),
                            help,
                        ));
                    }
                }
            };
            let mut results = Vec::new();
            for g in chosen {
                let text =
                    String::from_utf8_lossy(bundle.outputs.get(&g.buildspec).unwrap_or_default())
                        .into_owned();
                let r = pipeforge::run::run_gate(plan, g, &text, &inp.catalog, &opts, out)?;
                out.write_all(pipeforge::run::summary(&r).as_bytes())
                    .map_err(io)?;
                results.push(r);
            }
            if results.len() > 1 {
                writeln!(
                    out,
                    "
-- all gates"
                )
                .map_err(io)?;
                for r in &results {
                    writeln!(
                        out,
                        "   {:<16} {:<7} {:>7.1} s",
                        r.gate,
                        if r.succeeded { "passed" } else { "FAILED" },
                        r.duration.as_secs_f64()
                    )
                    .map_err(io)?;
                }
            }
            Ok(if results.iter().all(|r| r.succeeded) {
                Status::Ok
            } else {
                Status::Differs
            })
        }
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Manifest => pipeforge::manifest::json_schema(),
                SchemaKind::Org => pipeforge::org::json_schema(),
            };
            out.write_all(outputs::canonical_json(schema)?.as_bytes())
                .map_err(io)?;
            Ok(Status::Ok)
        }
        Command::Coverage {
            command: CoverageCommand::Check { report, min },
        } => {
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
        Command::Serve {
            listen,
            queue_url,
            local_queue: _,
            status_bucket,
            workers,
            work_dir,
            retry_delay_ms,
            max_attempts,
            receive_wait_secs,
            render_only,
            preview_page,
            deploy_timeout,
            header_timeout_secs,
            body_timeout_secs,
            idle_timeout_secs,
            max_connections,
            max_bodies,
            inputs: args,
        } => {
            use pipeforge::webhook::{http, server, worker};
            use std::time::Duration;
            let inp = inputs(&args)?;
            let queue = match queue_url {
                Some(url) => server::QueueChoice::Sqs(url),
                None => server::QueueChoice::Local {
                    max_receives: max_attempts,
                },
            };
            let opts = server::ServeOptions {
                listen,
                queue,
                status_bucket,
                workers,
                worker: worker::WorkerSettings {
                    work_dir: work_dir.unwrap_or_else(server::default_work_dir),
                    retry_base: std::time::Duration::from_millis(retry_delay_ms),
                    receive_wait: std::time::Duration::from_secs(receive_wait_secs.min(20)),
                    today: args.today,
                    ..worker::WorkerSettings::default()
                },
                inputs: inp,
                preview_page,
                deploy: if render_only {
                    server::DeployChoice::RenderOnly
                } else {
                    server::DeployChoice::Aws(pipeforge::deploy::DeployOptions {
                        timeout: std::time::Duration::from_secs(deploy_timeout),
                        ..pipeforge::deploy::DeployOptions::default()
                    })
                },
                limits: http::Limits {
                    header_timeout: Duration::from_secs(header_timeout_secs),
                    body_timeout: Duration::from_secs(body_timeout_secs),
                    idle_timeout: Duration::from_secs(idle_timeout_secs),
                    max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
                    max_bodies: usize::try_from(max_bodies).unwrap_or(usize::MAX),
                },
            };
            let runtime = runtime()?;
            runtime.block_on(server::serve(opts, json_lines_log(), shutdown_signal()))?;
            Ok(Status::Ok)
        }
        Command::Bootstrap {
            out: dir,
            check,
            inputs: args,
        } => {
            let inp = inputs(&args)?;
            let rendered = pipeforge::webhook::bootstrap::render(&inp.org, &inp.templates)?;
            let refs = [("", &rendered)];
            if check {
                return match outputs::diff_bundles(&dir, &refs)? {
                    None => {
                        writeln!(err, "ok: {} is up to date", dir.display()).map_err(io)?;
                        Ok(Status::Ok)
                    }
                    Some(diff) => {
                        out.write_all(diff.as_bytes()).map_err(io)?;
                        writeln!(err, "error: {} differs from what would be rendered\n  help: run the same command without `--check` to update it", dir.display()).map_err(io)?;
                        Ok(Status::Differs)
                    }
                };
            }
            outputs::write_bundles(&dir, &refs)?;
            writeln!(
                err,
                "rendered {} into {}: deploy tooling.json in the tooling account, target.json in every target account and every other tooling account, then each tooling-ACCOUNT.json in its account (see README, \"Installing pipeforge\" and \"Running at scale\")",
                rendered.iter().map(|(p, _)| p).collect::<Vec<_>>().join(" and "),
                dir.display()
            )
            .map_err(io)?;
            Ok(Status::Ok)
        }
        Command::Templates {
            command:
                TemplatesCommand::Check {
                    templates,
                    languages,
                    golden: dir,
                    checkov,
                    fail_on_findings,
                },
        } => {
            let templates = Templates::load(templates.as_deref())?;
            let catalog = Catalog::load(languages.as_deref())?;
            let cases = golden::cases(&dir)?;
            if cases.is_empty() {
                return Err(Error::other(
                    format!("no golden cases in `{}`", dir.display()),
                    "pass `--golden DIR` with directories that contain a `pipeline.yml`",
                ));
            }
            let (mut same, mut differ, mut failed) = (0, 0, 0);
            for case in &cases {
                let name = case
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match golden::run_case(case, &catalog, &templates, Mode::Compare) {
                    Outcome::Same | Outcome::Updated => same += 1,
                    Outcome::Differs(d) => {
                        differ += 1;
                        writeln!(err, "changed: {name}").map_err(io)?;
                        out.write_all(d.as_bytes()).map_err(io)?;
                    }
                    Outcome::Failed(e) => {
                        failed += 1;
                        writeln!(err, "failed: {name}\n{e}").map_err(io)?;
                    }
                }
            }
            // The IAM checks: what the execution roles and the created roles lack.
            for case in &cases {
                // Cases that fail to render are already counted above.
                let Ok(r) = cli_check::render(case, &catalog, &templates) else {
                    continue;
                };
                let report = cli_check::iam_report(&r)?;
                if !report.is_empty() {
                    failed += 1;
                    writeln!(err, "failed: IAM check of {}\n{report}", r.name).map_err(io)?;
                }
            }
            // Scanner findings the templates add (a list; a failure only when asked).
            let mut findings = 0;
            match cli_check::find_checkov(checkov.as_deref()) {
                Some(path) => {
                    for f in cli_check::new_findings(&path, &cases, &catalog, &templates)? {
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
            let injection = pipeforge::probe::injection_probe(&catalog, &templates);
            if let Err(e) = &injection {
                failed += 1;
                writeln!(err, "failed: injection probe\n{e}").map_err(io)?;
            }
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
    }
}

/// The day (`--today`, else the clock) and the repository a manifest is validated for: the one
/// given, else (only when a waiver names repositories) its checkout's `origin` remote.
fn evaluation(
    inp: &Inputs,
    args: &InputArgs,
    manifest: &std::path::Path,
    repository: Option<&str>,
) -> Evaluation {
    let repository = repository.map(str::to_owned).or_else(|| {
        let needed = inp.org.org.waivers.iter().any(|w| w.repository.is_some());
        let dir = manifest.parent().filter(|d| !d.as_os_str().is_empty());
        needed
            .then(|| {
                pipeforge::owner::repository_of(dir.unwrap_or(std::path::Path::new(".")), None).ok()
            })
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

/// Colours `error:`, `help:` and `-->` lines when asked to.
fn paint(text: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    text.lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("error:") {
                format!("\x1b[1;31merror:\x1b[0m\x1b[1m{rest}\x1b[0m")
            } else if let Some(idx) = l.find("help:").filter(|i| l[..*i].trim().is_empty()) {
                format!("{}\x1b[1;36mhelp:\x1b[0m{}", &l[..idx], &l[idx + 5..])
            } else if let Some(idx) = l.find("-->").filter(|i| l[..*i].trim().is_empty()) {
                format!("{}\x1b[1;34m-->\x1b[0m{}", &l[..idx], &l[idx + 3..])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    // Not locked for the whole run: `serve` logs from worker threads.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = run(cli, &mut out, &mut err);
    let _ = out.flush();
    match result {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Differs) => ExitCode::from(1),
        Err(e) => {
            let mut text = e.to_string();
            if !text.starts_with("error") {
                text = format!("error: {text}");
            }
            let _ = writeln!(err, "{}", paint(&text, color));
            ExitCode::from(2)
        }
    }
}
