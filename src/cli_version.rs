//! The `version` commands (`next`, `tag`, `stamp`, `verify`): one function per command, from
//! its arguments to the library call and what it prints.

use std::io::Write;
use std::path::{Path, PathBuf};

use pipeforge::error::{Error, Result};
use pipeforge::package_version::{self, Ecosystem, Stamp};
use pipeforge::{outputs, version};

use crate::cli::{Format, PackageVersionArgs, TagArgs, VersionArgs, VersionCommand};
use crate::cli_local::io;

/// Runs one `version` command.
pub fn run(command: VersionCommand, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    match command {
        VersionCommand::Stamp { args, repo } => stamp(&args, &repo, err),
        VersionCommand::Verify { args, files } => verify(&args, &files, out),
        VersionCommand::Next { args } => next(&args, out, err),
        VersionCommand::Tag(a) => tag(a, out, err),
    }
}

/// The library's settings from `version` arguments (flags, else environment, else defaults).
/// An empty environment variable counts as unset, as a pipeline may render one empty.
fn settings(a: &VersionArgs) -> Result<version::Settings> {
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

/// `version stamp`: the version into `pyproject.toml` (Python only).
fn stamp(args: &PackageVersionArgs, repo: &Path, err: &mut dyn Write) -> Result<()> {
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
    match package_version::stamp_pyproject(&text, &args.version)? {
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
                package_version::pep440(&args.version)?
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

/// `version verify`: every built package carries the version.
fn verify(args: &PackageVersionArgs, files: &[PathBuf], out: &mut dyn Write) -> Result<()> {
    let eco = Ecosystem::parse(&args.ecosystem)?;
    let names: Vec<String> = files
        .iter()
        .filter(|f| f.is_file())
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    package_version::verify(eco, &args.version, &names)?;
    writeln!(
        out,
        "{} package(s) carry version {}",
        names.len(),
        args.version
    )
    .map_err(io)?;
    Ok(())
}

/// `version next`: HEAD's version on stdout, the reason on stderr.
fn next(args: &VersionArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let settings = settings(args)?;
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
    Ok(())
}

/// `version tag`: tags HEAD (and pushes the tag when asked); what was done on stderr.
fn tag(a: TagArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let settings = settings(&a.args)?;
    let req = tag_request(&a)?;
    let outcome = version::tag(&a.args.repo, &settings, &req)?;
    for w in &outcome.next.warnings {
        writeln!(err, "warning: {w}").map_err(io)?;
    }
    for line in tag_lines(&outcome) {
        writeln!(err, "{line}").map_err(io)?;
    }
    match a.args.format {
        Format::Text => writeln!(out, "{}", outcome.next.version).map_err(io)?,
        Format::Json => out
            .write_all(outputs::canonical_json(&outcome)?.as_bytes())
            .map_err(io)?,
    }
    Ok(())
}

/// The library's tag request from `version tag`'s arguments (empty values count as unset).
fn tag_request(a: &TagArgs) -> Result<version::TagRequest> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let expect = match nonempty(&a.expect) {
        Some(e) => Some(semver::Version::parse(e.trim()).map_err(|x| {
            Error::other(
                format!("`--expect {e}` is not a semantic version: {x}"),
                "pass the version `pipeforge version next` printed, such as `1.4.0`",
            )
        })?),
        None => None,
    };
    Ok(version::TagRequest {
        expect,
        push: a.push.then(|| a.args.remote.clone()),
        user_name: nonempty(&a.user_name),
        user_email: nonempty(&a.user_email),
        pipeline: nonempty(&a.pipeline),
        execution_id: nonempty(&a.execution_id),
        build_id: nonempty(&a.build_id),
        build_failing: a.build_succeeding.as_ref().is_some_and(|v| v.trim() == "0"),
    })
}

/// What `version tag` did: the local tag, then the push when there was one.
fn tag_lines(outcome: &version::TagOutcome) -> Vec<String> {
    let name = outcome.next.tag.as_deref().unwrap_or_default();
    let short = &outcome.next.head[..outcome.next.head.len().min(7)];
    let mut lines = vec![match outcome.action {
        version::TagAction::Created => format!("tagged `{name}` on {short}"),
        version::TagAction::Existing => {
            format!("`{name}` already tags {short}; nothing to do")
        }
        version::TagAction::Skipped => format!(
            "`{}` is a pre-release (branch `{}`); pre-releases are not tagged",
            outcome.next.version,
            outcome.next.branch.as_deref().unwrap_or_default()
        ),
    }];
    if let (Some(remote), Some(status)) = (&outcome.remote, outcome.pushed) {
        lines.push(match status {
            version::PushStatus::Pushed => format!("pushed `{name}` to `{remote}`"),
            version::PushStatus::UpToDate => {
                format!("`{remote}` already has `{name}` on {short}")
            }
        });
    }
    lines
}
