//! Golden cases: `golden/<case>/pipeline.yml` (+ optional `org.yaml`) and the expected bundle
//! in `golden/<case>/expected/`. Used by the test suite and by `pipeforge templates check`, so
//! platform engineers see exactly which outputs a template edit changes.

use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::outputs::{diff_bundles, write_bundles};
use crate::render::Templates;
use crate::{generate_with, org, read_source};

/// The directory holding the expected bundle of a case.
pub const EXPECTED_DIR: &str = "expected";

/// What to do with differences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Report differences.
    Compare,
    /// Rewrite the expected files.
    Update,
}

/// The outcome of one case.
#[derive(Debug)]
pub enum Outcome {
    /// Output matches the expected files.
    Same,
    /// Output differs: a unified diff.
    Differs(String),
    /// The expected files were rewritten.
    Updated,
    /// The case failed to render.
    Failed(Error),
}

/// Every case directory under `dir` (those with a `pipeline.yml`), sorted.
pub fn cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("pipeline.yml").is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Renders one case with `catalog` and `templates` and compares (or updates) its expected files.
pub fn run_case(case: &Path, catalog: &Catalog, templates: &Templates, mode: Mode) -> Outcome {
    match render_case(case, catalog, templates) {
        Err(e) => Outcome::Failed(e),
        Ok(outputs) => match mode {
            Mode::Update => match write_bundles(case, &[(EXPECTED_DIR, &outputs)]) {
                Ok(()) => Outcome::Updated,
                Err(e) => Outcome::Failed(e),
            },
            Mode::Compare => match diff_bundles(case, &[(EXPECTED_DIR, &outputs)]) {
                Ok(None) => Outcome::Same,
                Ok(Some(d)) => Outcome::Differs(d),
                Err(e) => Outcome::Failed(e),
            },
        },
    }
}

/// The org policy of a case: its `org.yaml`, else the embedded one.
pub fn case_org(case: &Path) -> Result<org::OrgPolicy> {
    let org_path = case.join("org.yaml");
    if org_path.is_file() {
        org::load(&read_source(&org_path)?)
    } else {
        org::embedded()
    }
}

/// Renders one case in memory.
pub fn render_case(
    case: &Path,
    catalog: &Catalog,
    templates: &Templates,
) -> Result<crate::outputs::Outputs> {
    let policy = case_org(case)?;
    let manifest = read_source(&case.join("pipeline.yml"))?;
    Ok(generate_with(&manifest, &policy, catalog, templates)?.outputs)
}
