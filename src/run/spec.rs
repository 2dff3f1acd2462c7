//! A rendered buildspec read back as the runner needs it: variables, secrets, phases with
//! their commands, `finally` and `on-failure`, reports and artifacts.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::catalog::Phase;
use crate::error::{Error, Result, SourceFile};
use crate::yaml::{ParseOptions, parse};

/// What a phase does when one of its commands fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Stop the build: later phases are skipped.
    Abort,
    /// Go on with the next phase (the build still fails).
    Continue,
}

/// One phase.
#[derive(Clone, Debug)]
pub struct SpecPhase {
    /// Which phase.
    pub phase: Phase,
    /// `runtime-versions` (install only).
    pub runtime_versions: BTreeMap<String, String>,
    /// What a failure does.
    pub on_failure: OnFailure,
    /// Commands, in order.
    pub commands: Vec<String>,
    /// Commands that run after `commands`, whatever happened.
    pub finally: Vec<String>,
}

/// A report group.
#[derive(Clone, Debug)]
pub struct SpecReport {
    /// Group name.
    pub name: String,
    /// File globs.
    pub files: Vec<String>,
    /// Base directory (relative to the source root).
    pub base_directory: Option<String>,
    /// `JUNITXML`, `COBERTURAXML`, ...
    pub format: String,
}

/// The buildspec.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// `env.variables`.
    pub variables: BTreeMap<String, String>,
    /// `env.parameter-store` and `env.secrets-manager` variable names, with their reference.
    pub secrets: BTreeMap<String, String>,
    /// `env.exported-variables`.
    pub exported: Vec<String>,
    /// Phases present, in order.
    pub phases: Vec<SpecPhase>,
    /// Report groups.
    pub reports: Vec<SpecReport>,
    /// `artifacts.files`.
    pub artifacts: Vec<String>,
}

fn text(v: &Json) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn list(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

fn map(v: Option<&Json>) -> BTreeMap<String, String> {
    v.and_then(Json::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

/// Reads a rendered buildspec.
pub fn read(name: &str, source: &str) -> Result<Spec> {
    let doc = match crate::render::fastyaml::parse_untagged(source) {
        Some(d) => d.to_json(),
        None => {
            let file = SourceFile::new(name, source);
            let node = parse(&file, ParseOptions::default()).map_err(|d| {
                Error::other(
                    format!("`{name}` is not valid YAML: {}", d.message),
                    "render the pipeline again; the buildspec comes from `pipeforge render`",
                )
            })?;
            crate::schema::check(&node, &Json::Bool(true), &file).value
        }
    };
    let env = doc.get("env");
    let mut secrets = map(env.and_then(|e| e.get("parameter-store")));
    secrets.extend(map(env.and_then(|e| e.get("secrets-manager"))));
    let mut phases = Vec::new();
    for phase in Phase::ALL {
        let Some(p) = doc.get("phases").and_then(|p| p.get(phase.as_str())) else {
            continue;
        };
        let on_failure = match p.get("on-failure").and_then(Json::as_str) {
            Some("CONTINUE") => OnFailure::Continue,
            Some("ABORT") => OnFailure::Abort,
            // CodeBuild's default: a failed build phase still runs post_build.
            None if phase == Phase::Build => OnFailure::Continue,
            None => OnFailure::Abort,
            Some(other) => {
                return Err(Error::other(
                    format!(
                        "`phases.{}.on-failure: {other}` is not supported by `pipeforge run`",
                        phase.as_str()
                    ),
                    "use `ABORT` or `CONTINUE`",
                ));
            }
        };
        phases.push(SpecPhase {
            phase,
            runtime_versions: map(p.get("runtime-versions")),
            on_failure,
            commands: list(p.get("commands")),
            finally: list(p.get("finally")),
        });
    }
    let reports = doc
        .get("reports")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(name, r)| SpecReport {
                    name: name.clone(),
                    files: list(r.get("files")),
                    base_directory: r.get("base-directory").map(text),
                    format: r
                        .get("file-format")
                        .map_or_else(|| "JUNITXML".to_owned(), text),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Spec {
        variables: map(env.and_then(|e| e.get("variables"))),
        secrets,
        exported: list(env.and_then(|e| e.get("exported-variables"))),
        phases,
        reports,
        artifacts: list(doc.get("artifacts").and_then(|a| a.get("files"))),
    })
}
