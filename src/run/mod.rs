//! `pipeforge run <gate>`: runs a gate's rendered buildspec on this machine, the way CodeBuild
//! runs it, before anything is merged. An edge (it runs processes), never used by the core.
//!
//! What it does, in order:
//! 1. reads the same buildspec `pipeforge render` writes, and checks its `runtime-versions`
//!    against the local toolchain (a clear error when they differ);
//! 2. copies the repository as the pipeline would get it: the snapshot `source.zip` would hold
//!    (tracked files at the commit, git data, the remote's release tags), into a scratch
//!    directory with its own HOME, TMPDIR and tool directories; the build image's
//!    `/usr/local/bin` and `/tmp/` are mapped into it, Python tools go into a virtual
//!    environment, `npm --global` into a local prefix, `go install` into the scratch `bin`,
//!    and the tool caches (pip, npm, Go, Maven) live in `--cache-dir`: nothing is installed
//!    anywhere else;
//! 3. runs the phases in order with `env.variables`, secrets from the local environment or a
//!    placeholder (never printed; values are masked in the output), one shell state carried
//!    from command to command, `on-failure` and `finally` as CodeBuild applies them, and the
//!    gate's timeout;
//! 4. summarises the reports (JUnit counts, coverage), the artifacts, the exported variables
//!    and each phase's time.
//!
//! Steps the catalog marks `local:` are what a developer's machine must not or cannot do:
//! publishing and pushing are skipped, pipeforge itself is this binary, and a tool the build
//! downloads from a release page can be given with `--tool NAME=PATH`.

pub mod reports;
pub mod scratch;
pub mod shell;
pub mod spec;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, LocalRun, Phase};
use crate::error::{Error, Result};
use crate::plan::{GatePlan, Plan};
use crate::publish::source::{SourceOptions, fetch_version_tags, source_zip};
use reports::ReportSummary;
use scratch::Scratch;
use shell::{Exit, Shell};
use spec::{OnFailure, Spec};

/// The value a secret gets when the local environment has none.
pub const SECRET_PLACEHOLDER: &str = "pipeforge-run-placeholder";

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The repository.
    pub repo: PathBuf,
    /// Where scratch directories are made.
    pub work_dir: PathBuf,
    /// Tool caches shared between runs.
    pub cache_dir: PathBuf,
    /// Leave the scratch directory.
    pub keep: bool,
    /// Snapshot uncommitted changes too.
    pub allow_dirty: bool,
    /// Run even when the local runtime differs from `runtime-versions`.
    pub ignore_runtime: bool,
    /// Local binaries for tools the build downloads (`--tool NAME=PATH`).
    pub tools: BTreeMap<String, PathBuf>,
    /// Variables that override the buildspec's, as a start-build override would.
    pub env: Vec<(String, String)>,
    /// More host variables to keep.
    pub pass_env: Vec<String>,
    /// The pipeforge binary the gate's `pipeforge` commands run.
    pub pipeforge: PathBuf,
}

/// How a phase ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhaseStatus {
    /// Every command passed.
    Succeeded,
    /// A command failed: the command and how.
    Failed(String),
    /// Not run: an earlier phase failed with `on-failure: ABORT`.
    Skipped,
}

/// One phase of a run.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    /// Which phase.
    pub phase: Phase,
    /// How it ended.
    pub status: PhaseStatus,
    /// How long it took.
    pub duration: Duration,
}

/// A gate's run.
#[derive(Clone, Debug)]
pub struct GateResult {
    /// The gate.
    pub gate: String,
    /// True when every phase succeeded.
    pub succeeded: bool,
    /// Phases in order.
    pub phases: Vec<PhaseResult>,
    /// Report groups.
    pub reports: Vec<ReportSummary>,
    /// Artifact files found.
    pub artifacts: Vec<String>,
    /// Exported variables and their values.
    pub exported: Vec<(String, String)>,
    /// The scratch directory, when kept.
    pub scratch: Option<PathBuf>,
    /// Total time.
    pub duration: Duration,
}

/// What to do with one buildspec command.
#[derive(Debug)]
enum Action {
    /// Run it: (what the buildspec says, what runs, the step).
    Run(String, String, Option<String>),
    /// Skip a step, for this reason.
    Skip(String, String),
    /// Use local binaries instead of a step that downloads them.
    Tools(String, Vec<(String, PathBuf)>),
}

/// Removes the scratch directory when dropped, unless kept.
struct Cleanup {
    root: PathBuf,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn say(out: &mut dyn Write, text: &str) {
    let _ = writeln!(out, "[pipeforge run] {text}");
}

/// The runner's actions for one phase: which catalog step each command belongs to, and what a
/// local run does with it.
fn actions(
    gate: &GatePlan,
    phase: Phase,
    commands: &[String],
    local: &dyn Fn(&str) -> Option<LocalRun>,
    tools: &BTreeMap<String, PathBuf>,
    scratch: &Scratch,
) -> Vec<Action> {
    let mut owner: Vec<Option<String>> = vec![None; commands.len()];
    if let Some(p) = gate.phases.iter().find(|p| p.phase == phase) {
        let mut pos = 0;
        for step in &p.steps {
            for c in &step.commands {
                if let Some(i) = commands[pos..].iter().position(|x| x == c) {
                    owner[pos + i] = Some(step.name.clone());
                    pos += i + 1;
                }
            }
        }
    }
    // What each step runs in CodeBuild, shown next to the commands that replace it locally.
    let mut in_codebuild: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (c, step) in commands.iter().zip(&owner) {
        if let Some(step) = step {
            in_codebuild.entry(step).or_default().push(c);
        }
    }
    let in_codebuild: BTreeMap<&str, String> = in_codebuild
        .into_iter()
        .map(|(k, v)| (k, v.join("; ")))
        .collect();
    let mut out = Vec::new();
    let mut handled: Vec<String> = Vec::new();
    for (c, step) in commands.iter().zip(owner.iter().cloned()) {
        let rule = step.as_deref().and_then(local);
        let (Some(step), Some(rule)) = (step.clone(), rule) else {
            out.push(Action::Run(c.clone(), scratch.localize(c), step));
            continue;
        };
        let first = !handled.contains(&step);
        handled.push(step.clone());
        if let Some(reason) = &rule.skip {
            if first {
                out.push(Action::Skip(step, reason.clone()));
            }
        } else if let Some(cmds) = &rule.commands {
            if first {
                let replaced = in_codebuild.get(step.as_str()).unwrap_or(c);
                for lc in cmds {
                    out.push(Action::Run(
                        format!("{lc}  (local run; in CodeBuild: {replaced})"),
                        scratch.localize(lc),
                        Some(step.clone()),
                    ));
                }
            }
        } else if !rule.provides.is_empty() && rule.provides.iter().all(|t| tools.contains_key(t)) {
            if first {
                let given = rule
                    .provides
                    .iter()
                    .map(|t| (t.clone(), tools[t].clone()))
                    .collect();
                out.push(Action::Tools(step, given));
            }
        } else {
            out.push(Action::Run(c.clone(), scratch.localize(c), Some(step)));
        }
    }
    out
}

/// Prepares the scratch copy: snapshot, virtual environment. Returns the commit.
fn prepare(
    opts: &RunOptions,
    s: &Scratch,
    python: Option<&Path>,
    out: &mut dyn Write,
) -> Result<String> {
    for w in fetch_version_tags(&opts.repo) {
        say(out, &format!("warning: {w}"));
    }
    let zip = source_zip(
        &opts.repo,
        &SourceOptions {
            allow_dirty: opts.allow_dirty,
            ..SourceOptions::default()
        },
    )?;
    for w in &zip.warnings {
        say(out, &format!("warning: {w}"));
    }
    let files = s.extract(&zip.bytes)?;
    say(
        out,
        &format!(
            "snapshot of {} ({}{files} files) in {}",
            &zip.commit[..zip.commit.len().min(12)],
            if zip.dirty {
                "uncommitted changes included, "
            } else {
                ""
            },
            s.src.display()
        ),
    );
    if let Some(py) = python {
        let status = std::process::Command::new(py)
            .args(["-m", "venv"])
            .arg(&s.venv)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                Error::other(
                    format!("cannot run `{}`: {e}", py.display()),
                    "check the Python installation",
                )
            })?;
        if !status.status.success() {
            return Err(Error::other(
                format!(
                    "cannot create a virtual environment with `{} -m venv`: {}",
                    py.display(),
                    String::from_utf8_lossy(&status.stderr).trim()
                ),
                "install the `venv` module (Debian: `apt-get install python3-venv`)",
            ));
        }
        say(
            out,
            &format!(
                "Python tools go into the virtual environment {}",
                s.venv.display()
            ),
        );
    }
    Ok(zip.commit)
}

/// Runs one gate of a plan: `buildspec` is its rendered text.
pub fn run_gate(
    plan: &Plan,
    gate: &GatePlan,
    buildspec: &str,
    catalog: &Catalog,
    opts: &RunOptions,
    out: &mut dyn Write,
) -> Result<GateResult> {
    let t0 = Instant::now();
    let spec: Spec = spec::read(&gate.buildspec, buildspec)?;
    say(
        out,
        &format!(
            "gate `{}` of pipeline `{}` ({} {}), from {}",
            gate.name,
            plan.pipeline.name,
            plan.pipeline.language,
            gate.runtime_version,
            gate.buildspec
        ),
    );
    let python = check_runtimes(&spec, opts, out)?;
    let s = Scratch::create(&opts.work_dir, &gate.name)?;
    let _cleanup = Cleanup {
        root: s.root.clone(),
        keep: opts.keep,
    };
    let commit = prepare(opts, &s, python.as_deref(), out)?;
    let (env, secret_values) = gate_env(plan, gate, &spec, &s, opts, &commit, out);
    let deadline = t0 + Duration::from_secs(60 * gate.timeout_minutes.value.max(1) as u64);
    let mut sh = Shell::new(env, &s.src, &s.state, secret_values, deadline);

    let lang_gate = catalog
        .language(&plan.pipeline.language)
        .and_then(|l| l.gates.get(&gate.name));
    let local = |step: &str| -> Option<LocalRun> {
        lang_gate?
            .steps
            .iter()
            .find(|s| s.name == step)
            .and_then(|s| s.local.clone())
    };
    let run = PhaseRun {
        gate,
        scratch: &s,
        opts,
        local: &local,
    };
    let (phases, failed) = run_phases(&run, &spec, &mut sh, out)?;

    let reports = spec
        .reports
        .iter()
        .map(|r| reports::summarise(&s.src, r))
        .collect();
    let artifacts = reports::matching(&s.src, &spec.artifacts);
    let exported = spec
        .exported
        .iter()
        .map(|n| (n.clone(), sh.value(n).unwrap_or_default()))
        .collect();
    Ok(GateResult {
        gate: gate.name.clone(),
        succeeded: !failed,
        phases,
        reports,
        artifacts,
        exported,
        scratch: opts.keep.then(|| s.root.clone()),
        duration: t0.elapsed(),
    })
}

/// Checks the install phase's `runtime-versions` against the local toolchain (a mismatch is an
/// error unless `ignore_runtime`); returns the Python interpreter to use, when the gate has one.
fn check_runtimes(spec: &Spec, opts: &RunOptions, out: &mut dyn Write) -> Result<Option<PathBuf>> {
    let host_path = std::env::var("PATH").unwrap_or_default();
    let mut python = None;
    for p in spec.phases.iter().filter(|p| p.phase == Phase::Install) {
        for (key, wanted) in &p.runtime_versions {
            match scratch::check_runtime(key, wanted, &host_path) {
                Ok((v, exe)) => {
                    say(
                        out,
                        &format!("runtime {key} {wanted}: {} {v}", exe.display()),
                    );
                    if key == "python" {
                        python = Some(exe);
                    }
                }
                Err(e) if opts.ignore_runtime => {
                    say(out, &format!("warning (--ignore-runtime): {e}"));
                    if key == "python" {
                        python = scratch::which("python3", &host_path);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(python)
}

/// The environment of the gate's commands: CodeBuild's variables, the buildspec's, secrets
/// (from the local environment, else a placeholder), then overrides. Returns it with the
/// secrets' values, which the shell masks.
fn gate_env(
    plan: &Plan,
    gate: &GatePlan,
    spec: &Spec,
    s: &Scratch,
    opts: &RunOptions,
    commit: &str,
    out: &mut dyn Write,
) -> (BTreeMap<String, String>, Vec<String>) {
    let codebuild = [
        ("CODEBUILD_SRC_DIR", s.src.display().to_string()),
        ("CODEBUILD_BUILD_ID", format!("pipeforge-run:{}", gate.name)),
        ("CODEBUILD_RESOLVED_SOURCE_VERSION", commit.to_owned()),
        ("CODEBUILD_BUILD_SUCCEEDING", "1".to_owned()),
        ("CODEBUILD_INITIATOR", "pipeforge-run".to_owned()),
        ("AWS_REGION", plan.pipeline.region.clone()),
        ("AWS_DEFAULT_REGION", plan.pipeline.region.clone()),
        ("PF_RUN_PIPEFORGE", opts.pipeforge.display().to_string()),
    ];
    let mut env = scratch::base_env(s, &opts.cache_dir, &opts.pass_env, &codebuild);
    for (k, v) in &spec.variables {
        env.insert(k.clone(), v.clone());
    }
    let mut secret_values = Vec::new();
    for (name, reference) in &spec.secrets {
        let (value, from) = match std::env::var(name) {
            Ok(v) => (v, "the local environment"),
            Err(_) => (SECRET_PLACEHOLDER.to_owned(), "a placeholder"),
        };
        say(
            out,
            &format!("secret {name} ({reference}): value from {from}, never printed"),
        );
        secret_values.push(value.clone());
        env.insert(name.clone(), value);
    }
    for (k, v) in &opts.env {
        env.insert(k.clone(), v.clone());
    }
    say(
        out,
        &format!(
            "HOME, TMPDIR and tools under {}; /usr/local/bin -> {}, /tmp/ -> {}/; caches in {}",
            s.root.display(),
            s.bin.display(),
            s.tmp.display(),
            opts.cache_dir.display()
        ),
    );
    (env, secret_values)
}

/// What the phases of a gate run with.
struct PhaseRun<'a> {
    /// The gate.
    gate: &'a GatePlan,
    /// Its scratch directory.
    scratch: &'a Scratch,
    /// How to run.
    opts: &'a RunOptions,
    /// The local command of a step of the language's gate, when it has one.
    local: &'a dyn Fn(&str) -> Option<LocalRun>,
}

/// Runs the phases in order; after a failure, `CODEBUILD_BUILD_SUCCEEDING` is `0`, and the
/// phases after one with `on-failure: ABORT` are skipped. Returns them, and whether one failed.
fn run_phases(
    run: &PhaseRun<'_>,
    spec: &Spec,
    sh: &mut Shell,
    out: &mut dyn Write,
) -> Result<(Vec<PhaseResult>, bool)> {
    let mut phases = Vec::new();
    let mut failed = false;
    let mut aborted = false;
    for p in &spec.phases {
        if aborted {
            phases.push(PhaseResult {
                phase: p.phase,
                status: PhaseStatus::Skipped,
                duration: Duration::ZERO,
            });
            continue;
        }
        let tp = Instant::now();
        let _ = writeln!(out, "\n== phase {}", p.phase.as_str());
        let status = run_phase(run, p, sh, out)?;
        if status != PhaseStatus::Succeeded {
            failed = true;
            sh.set("CODEBUILD_BUILD_SUCCEEDING", "0");
            aborted = p.on_failure == OnFailure::Abort;
        }
        phases.push(PhaseResult {
            phase: p.phase,
            status,
            duration: tp.elapsed(),
        });
    }
    Ok((phases, failed))
}

/// Runs a phase's commands until one fails, then its `finally` commands.
fn run_phase(
    run: &PhaseRun<'_>,
    p: &spec::SpecPhase,
    sh: &mut Shell,
    out: &mut dyn Write,
) -> Result<PhaseStatus> {
    let s = run.scratch;
    let mut status = PhaseStatus::Succeeded;
    let mut last_step: Option<String> = None;
    for a in actions(
        run.gate,
        p.phase,
        &p.commands,
        run.local,
        &run.opts.tools,
        s,
    ) {
        match a {
            Action::Skip(step, reason) => {
                say(out, &format!("step `{step}` not run locally: {reason}"))
            }
            Action::Tools(step, tools) => link_tools(s, &step, tools, out)?,
            Action::Run(shown, cmd, step) => {
                if step.is_some() && step != last_step {
                    let _ = writeln!(out, "# {}", step.as_deref().unwrap_or_default());
                    last_step = step.clone();
                }
                if let Some(failure) = run_command(run.gate, sh, &shown, &cmd, out)? {
                    status = PhaseStatus::Failed(failure);
                    break;
                }
            }
        }
    }
    for c in &p.finally {
        let _ = writeln!(out, "$ {}  (finally)", sh.mask(c));
        let exit = sh.run(&s.localize(c), &mut |l| {
            let _ = writeln!(out, "{l}");
        })?;
        if exit != Exit::Ok && status == PhaseStatus::Succeeded {
            status = PhaseStatus::Failed(format!("{} (finally)", sh.mask(c)));
        }
    }
    Ok(status)
}

/// Links the local binaries of `--tool` into the scratch `bin` directory instead of a step that
/// downloads them.
fn link_tools(
    s: &Scratch,
    step: &str,
    tools: Vec<(String, PathBuf)>,
    out: &mut dyn Write,
) -> Result<()> {
    for (name, path) in tools {
        let dest = s.bin.join(&name);
        let _ = std::fs::remove_file(&dest);
        std::os::unix::fs::symlink(&path, &dest).map_err(|e| {
            Error::other(
                format!("cannot link `{}`: {e}", path.display()),
                "check the `--tool` path",
            )
        })?;
        say(
            out,
            &format!(
                "step `{step}` not run: `{name}` is {} (--tool)",
                path.display()
            ),
        );
    }
    Ok(())
}

/// Runs one command, its output streamed; returns what failed and how, when it failed.
fn run_command(
    gate: &GatePlan,
    sh: &mut Shell,
    shown: &str,
    cmd: &str,
    out: &mut dyn Write,
) -> Result<Option<String>> {
    let _ = writeln!(out, "$ {}", sh.mask(shown));
    let tc = Instant::now();
    let exit = sh.run(cmd, &mut |l| {
        let _ = writeln!(out, "{l}");
    })?;
    if exit == Exit::Ok {
        return Ok(None);
    }
    let how = match exit {
        Exit::Failed(Some(c)) => format!("exit status {c}"),
        Exit::Failed(None) => "killed by a signal".to_owned(),
        Exit::TimedOut => format!(
            "the gate's timeout ({} min) passed",
            gate.timeout_minutes.value
        ),
        Exit::Ok => String::new(),
    };
    say(
        out,
        &format!(
            "command failed ({how}) after {:.1} s",
            tc.elapsed().as_secs_f64()
        ),
    );
    Ok(Some(format!("{} ({how})", sh.mask(shown))))
}

/// The summary printed after a gate.
pub fn summary(r: &GateResult) -> String {
    let mut t = String::new();
    t.push_str(&format!("\n-- gate `{}`\n", r.gate));
    for p in &r.phases {
        let (status, detail) = match &p.status {
            PhaseStatus::Succeeded => ("succeeded", String::new()),
            PhaseStatus::Failed(c) => ("FAILED", format!("  {c}")),
            PhaseStatus::Skipped => ("skipped", String::new()),
        };
        t.push_str(&format!(
            "   {:<11} {:<10} {:>7.1} s{detail}\n",
            p.phase.as_str(),
            status,
            p.duration.as_secs_f64()
        ));
    }
    for rep in &r.reports {
        t.push_str(&format!(
            "   report {} ({}): {}\n",
            rep.name, rep.format, rep.summary
        ));
    }
    if !r.artifacts.is_empty() {
        let shown: Vec<&str> = r.artifacts.iter().take(10).map(String::as_str).collect();
        let more = r.artifacts.len().saturating_sub(10);
        t.push_str(&format!(
            "   artifacts: {}{}\n",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    for (k, v) in &r.exported {
        t.push_str(&format!("   exported {k}={v}\n"));
    }
    if let Some(s) = &r.scratch {
        t.push_str(&format!("   scratch directory kept: {}\n", s.display()));
    }
    t.push_str(&format!(
        "gate `{}` {} in {:.1} s\n",
        r.gate,
        if r.succeeded { "passed" } else { "FAILED" },
        r.duration.as_secs_f64()
    ));
    t
}
