//! The checks `pipeforge templates check` adds to the golden comparison (binary only): the IAM
//! sufficiency and escalation checks of `pipeforge::iam` on the stacks rendered with the given
//! templates, and, when Checkov is available, the scanner findings that the templates add to
//! those of the embedded templates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pipeforge::catalog::Catalog;
use pipeforge::error::{Error, Result};
use pipeforge::golden;
use pipeforge::outputs::Outputs;
use pipeforge::render::Templates;

/// A case rendered with one template set: the bundle and its org's bootstrap stacks.
pub struct Rendered {
    /// The case's directory name.
    pub name: String,
    /// The pipeline's bundle.
    pub bundle: Outputs,
    /// `tooling.json` and `target.json` of the case's org.
    pub bootstrap: Outputs,
}

/// Renders a case and its org's bootstrap with `templates`.
pub fn render(case: &Path, catalog: &Catalog, templates: &Templates) -> Result<Rendered> {
    let org = golden::case_org(case)?;
    Ok(Rendered {
        name: case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bundle: golden::render_case(case, catalog, templates)?,
        bootstrap: pipeforge::webhook::bootstrap::render(&org, templates)?,
    })
}

/// What the execution roles and the created roles lack, and what the key, bucket and topic
/// policies refuse, as report text (empty when nothing).
pub fn iam_report(r: &Rendered) -> Result<String> {
    let fail = |e: String| {
        Error::other(
            format!("the IAM check of golden case `{}` failed: {e}", r.name),
            "the templates must keep the resources and roles the IAM check knows (see src/iam)",
        )
    };
    let mut missing = pipeforge::iam::deploy_check(&r.bundle, &r.bootstrap).map_err(fail)?;
    missing.extend(pipeforge::iam::runtime_check(&r.bundle, &r.bootstrap).map_err(fail)?);
    missing.extend(pipeforge::iam::resource_check(&r.bundle, &r.bootstrap).map_err(fail)?);
    Ok(pipeforge::iam::report(&missing))
}

/// Where Checkov is: the given path, else `checkov` on `PATH`, else none.
pub fn find_checkov(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("checkov"))
        .find(|p| p.is_file())
}

/// The stacks of a rendered case, as (relative name, bytes).
fn stacks(r: &Rendered) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = r
        .bundle
        .iter()
        .filter(|(p, _)| {
            (p.starts_with("stacks/") || p.contains("/stacks/")) && p.ends_with(".json")
        })
        .map(|(p, b)| {
            let file = p.rsplit('/').next().unwrap_or(p);
            (format!("{}/{file}", r.name), b.to_vec())
        })
        .collect();
    out.extend(
        r.bootstrap
            .iter()
            .map(|(p, b)| (format!("{}/bootstrap-{p}", r.name), b.to_vec())),
    );
    out
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checkov's failed checks of some templates, as `file: resource: check` lines, with the
/// directory prefix removed so that two runs compare.
fn checkov_failures(checkov: &Path, files: &[(String, Vec<u8>)]) -> Result<BTreeSet<String>> {
    if files.is_empty() {
        return Ok(BTreeSet::new());
    }
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "pipeforge-checkov-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )));
    std::fs::create_dir_all(dir.path()).map_err(|e| Error::write(dir.path(), e))?;
    let mut args = vec![
        "--framework".to_owned(),
        "cloudformation".to_owned(),
        "-o".to_owned(),
        "json".to_owned(),
        "--skip-download".to_owned(),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name.replace('/', "__"));
        std::fs::write(&path, bytes).map_err(|e| Error::write(&path, e))?;
        args.push("-f".to_owned());
        args.push(path.display().to_string());
    }
    let out = std::process::Command::new(checkov)
        .args(&args)
        .output()
        .map_err(|e| {
            Error::other(
                format!("cannot run Checkov `{}`: {e}", checkov.display()),
                "pass `--checkov PATH` to a Checkov executable (e.g. target/venv-checkov/bin/checkov after `ci/checkov-scan`)",
            )
        })?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::other(
            format!("Checkov printed no JSON report ({e})"),
            format!(
                "run `{} --version` to check the installation",
                checkov.display()
            ),
        )
    })?;
    let reports = match json {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    let mut found = BTreeSet::new();
    for r in reports {
        for c in r
            .pointer("/results/failed_checks")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let file = c["file_path"].as_str().unwrap_or_default();
            let file = file.rsplit('/').next().unwrap_or(file).replace("__", "/");
            found.insert(format!(
                "{file}: {}: {} {}",
                c["resource"].as_str().unwrap_or_default(),
                c["check_id"].as_str().unwrap_or_default(),
                c["check_name"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(found)
}

/// The Checkov findings in the stacks rendered with the given templates that the embedded
/// templates do not have.
pub fn new_findings(
    checkov: &Path,
    cases: &[PathBuf],
    catalog: &Catalog,
    templates: &Templates,
) -> Result<Vec<String>> {
    let embedded = Templates::embedded()?;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for case in cases {
        // Cases that fail to render are reported by the golden comparison.
        if let (Ok(b), Ok(a)) = (
            render(case, catalog, embedded),
            render(case, catalog, templates),
        ) {
            before.extend(stacks(&b));
            after.extend(stacks(&a));
        }
    }
    let known = checkov_failures(checkov, &before)?;
    Ok(checkov_failures(checkov, &after)?
        .into_iter()
        .filter(|f| !known.contains(f))
        .collect())
}
