//! pipeforge turns a team's pipeline manifest into governed AWS CI/CD pipelines.
//!
//! The core is a chain of pure stages, each with its own type:
//!
//! ```text
//! pipeline.yml ──load──▶ RawManifest ──validate──▶ Model ──plan──▶ Plan ──render──▶ Outputs
//!   (text)        manifest.rs            model/           plan/          render/       outputs.rs
//!                     ▲                    ▲   ▲            ▲               ▲
//!              schema.rs (all        org.yaml  languages/   names.rs        quota.rs, policy.rs
//!              errors at once)       (org.rs)  (catalog.rs) (AWS names)     (the plan and every
//!                                                                           rendered stack
//!                                                                           checked as data)
//! ```
//!
//! Only the edges do I/O: reading inputs ([`Inputs::load`], [`read_manifest`]) and writing or
//! comparing outputs ([`outputs::write_bundles`], [`outputs::diff_bundles`]). [`generate`] runs
//! the whole chain for one manifest, in memory.
//!
//! After the core, the AWS edges (every SDK client is built in [`aws`]):
//!
//! ```text
//! Outputs ──publish──▶ S3: bundle/<hash>/…, source.zip      publish/ (snapshot, store, lock)
//!         ──deploy───▶ CloudFormation change sets, in order  deploy/  (StackApi: SDK or fake)
//!                       then source.zip (starts the pipeline)
//! deployed stacks ──status──▶ StatusReport                    status.rs
//! who may deploy ───────────▶ pipelines/<name>/owner.json     owner.rs (checked under the lock)
//! ```

pub mod assets;
pub mod aws;
pub mod batch;
pub mod capacity;
pub mod catalog;
pub mod coverage;
pub mod date;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod explain;
pub mod fleet;
pub mod git;
pub mod golden;
pub mod iam;
pub mod input;
pub mod manifest;
mod members;
pub mod model;
pub mod names;
pub mod org;
pub mod outputs;
pub mod owner;
pub mod package_version;
pub mod pattern;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod publish;
pub mod quota;
pub mod recover;
pub mod render;
pub mod review;
pub mod run;
pub mod schema;
pub mod status;
pub mod version;
pub mod webhook;
pub mod yaml;

use std::path::Path;

pub use error::{Diagnostic, Error, Result, SourceFile};

use catalog::Catalog;
pub use date::{Date, Evaluation};
use model::Model;
use org::OrgPolicy;
use outputs::{Outputs, OutputsSummary};
use plan::Plan;
use render::Templates;

/// Everything besides the manifest that a render needs: policy, catalog, templates.
#[derive(Debug)]
pub struct Inputs {
    /// The organisation's policy.
    pub org: OrgPolicy,
    /// The language catalog.
    pub catalog: Catalog,
    /// The template set.
    pub templates: Templates,
}

impl Inputs {
    /// Loads the policy (`org`, or the embedded default), the catalog (embedded, plus
    /// `languages`) and the templates (embedded, plus `templates`).
    pub fn load(
        org: Option<&Path>,
        languages: Option<&Path>,
        templates: Option<&Path>,
    ) -> Result<Inputs> {
        let org = match org {
            Some(p) => org::load(&read_source(p)?)?,
            None => org::embedded()?,
        };
        Ok(Inputs {
            org,
            catalog: Catalog::load(languages)?,
            templates: Templates::load(templates)?,
        })
    }
}

/// A manifest's result: the validated model, its plan and the rendered files.
#[derive(Debug)]
pub struct Bundle {
    /// The validated manifest.
    pub model: Model,
    /// The effective pipeline.
    pub plan: Plan,
    /// The rendered files.
    pub outputs: Outputs,
    /// Their hashes as `plan.json` records them ([`Outputs::summary`] of `outputs`, computed
    /// once by the render).
    pub hashes: OutputsSummary,
}

/// Reads a file into a [`SourceFile`] named as the path was given.
pub fn read_source(path: &Path) -> Result<SourceFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Largest manifest pipeforge reads, in bytes (256 KiB; the example is under 2 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// Reads a manifest file, refusing one over [`MAX_MANIFEST_BYTES`] before reading it. (A
/// repository's manifest is read by `publish::checkout::read_manifest`, which also refuses
/// symlinks and paths outside the repository.)
pub fn read_manifest(path: &Path) -> Result<SourceFile> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| Error::read(path, e))?;
    // The size of the file opened (not of whatever the path names a moment later).
    let len = file.metadata().map_err(|e| Error::read(path, e))?.len();
    if len > MAX_MANIFEST_BYTES {
        return Err(Error::other(
            format!(
                "manifest `{}` is {len} bytes, over the limit of {MAX_MANIFEST_BYTES} bytes",
                path.display()
            ),
            "a manifest is a few kilobytes; check that this is the right file",
        ));
    }
    // Sized from the length read above, plus one byte so that the end of the file is seen
    // without another read; never more than the limit, even if the file grows meanwhile.
    let mut bytes = Vec::with_capacity(len as usize + 1);
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::read(path, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::other(
            format!(
                "manifest `{}` grew over the limit of {MAX_MANIFEST_BYTES} bytes while it was read",
                path.display()
            ),
            "a manifest is a few kilobytes; check that this is the right file",
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        );
        Error::read(path, e)
    })?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

/// Validates a manifest: the model, or every problem at once. No day is known, so every dated
/// rule is enforced and no waiver applies ([`validate_in`] takes the day and repository).
pub fn validate(manifest: &SourceFile, org: &OrgPolicy, catalog: &Catalog) -> Result<Model> {
    validate_in(manifest, org, catalog, &Evaluation::default())
}

/// Validates a manifest on the day and for the repository of `eval` (dated rules, waivers).
pub fn validate_in(
    manifest: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
    eval: &Evaluation,
) -> Result<Model> {
    let loaded = manifest::load(manifest);
    model::validate(&loaded, manifest, org, catalog, eval).map_err(Error::from)
}

/// Validates, plans and renders one manifest, in memory (strictly: see [`validate`]).
pub fn generate(manifest: &SourceFile, inputs: &Inputs) -> Result<Bundle> {
    generate_in(manifest, inputs, &Evaluation::default())
}

/// Validates, plans and renders one manifest, in memory, on the day and for the repository of
/// `eval`.
pub fn generate_in(manifest: &SourceFile, inputs: &Inputs, eval: &Evaluation) -> Result<Bundle> {
    generate_at(
        manifest,
        &inputs.org,
        &inputs.catalog,
        &inputs.templates,
        eval,
    )
}

/// [`generate`] with borrowed parts. The pipeline goes to the first tooling account of its
/// placement candidates ([`capacity::placement::provisional`]); a deploy renders again with the
/// placement its owner record holds ([`generate_placed`]).
pub fn generate_with(
    manifest: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
    templates: &Templates,
) -> Result<Bundle> {
    generate_at(manifest, org, catalog, templates, &Evaluation::default())
}

/// [`generate_in`] with borrowed parts.
pub fn generate_at(
    manifest: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
    templates: &Templates,
    eval: &Evaluation,
) -> Result<Bundle> {
    generate_placed(manifest, org, catalog, templates, eval, None)
}

/// [`generate_at`] for a pipeline placed in the tooling account `tooling` (`None`: the first
/// candidate of the org's placement rules).
pub fn generate_placed(
    manifest: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
    templates: &Templates,
    eval: &Evaluation,
    tooling: Option<&org::ToolingAccount>,
) -> Result<Bundle> {
    let (model, plan) = planned(manifest, org, catalog, eval, tooling)?;
    let (outputs, hashes) = render::render_hashed(&plan, templates, org)?;
    Ok(Bundle {
        model,
        plan,
        outputs,
        hashes,
    })
}

/// A manifest's rendered files without `plan.json`, for comparing with a deployed bundle
/// ([`generate_files`]): without `plan.json` it is not a bundle to publish.
#[derive(Debug)]
pub struct BundleFiles {
    /// The effective pipeline.
    pub plan: Plan,
    /// Every file of the bundle but `plan.json`, with their hashes and the bundle hash.
    pub files: render::Files,
}

/// [`generate_at`] without `plan.json` ([`render::render_files`]): the same checks and the
/// same files and hashes otherwise. `fleet plan` compares a deployed bundle with this: the
/// bundle hash leaves `plan.json` out, and `plan.json` is derived from the rest.
pub fn generate_files(
    manifest: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
    templates: &Templates,
    eval: &Evaluation,
) -> Result<BundleFiles> {
    let (_, plan) = planned(manifest, org, catalog, eval, None)?;
    let files = render::render_files(&plan, templates, org)?;
    Ok(BundleFiles { plan, files })
}

/// Validates and plans one manifest: its model and its plan, in the tooling account `tooling`
/// (`None`: the first candidate of the org's placement rules).
fn planned(
    manifest: &SourceFile,
    org: &OrgPolicy,
    catalog: &Catalog,
    eval: &Evaluation,
    tooling: Option<&org::ToolingAccount>,
) -> Result<(Model, Plan)> {
    let model = validate_in(manifest, org, catalog, eval)?;
    let tooling = match tooling {
        Some(t) => t.clone(),
        None => capacity::placement::provisional(org, &model.name, &model.team),
    };
    let plan = plan::plan(&model, org, catalog, &tooling)?;
    Ok((model, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_manifest_reads_whole_files_and_refuses_large_or_non_utf8_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ok = tmp.path().join("ok.yml");
        let text = "name: x\n".repeat(5000);
        std::fs::write(&ok, &text).expect("write");
        let read = read_manifest(&ok).expect("reads");
        assert_eq!(read.text, text);
        assert_eq!(read.name, ok.display().to_string());
        let exact = tmp.path().join("exact.yml");
        std::fs::write(&exact, "x".repeat(MAX_MANIFEST_BYTES as usize)).expect("write");
        assert_eq!(
            read_manifest(&exact).expect("at the limit").text.len() as u64,
            MAX_MANIFEST_BYTES
        );
        let big = tmp.path().join("big.yml");
        std::fs::write(&big, "x".repeat(MAX_MANIFEST_BYTES as usize + 1)).expect("write");
        let e = read_manifest(&big).expect_err("too large").to_string();
        assert!(e.contains("over the limit of 262144 bytes"), "{e}");
        let bad = tmp.path().join("bad.yml");
        std::fs::write(&bad, b"name: \xff\n").expect("write");
        let e = read_manifest(&bad).expect_err("not utf-8").to_string();
        assert!(e.contains("valid UTF-8"), "{e}");
        let e = read_manifest(&tmp.path().join("none.yml")).expect_err("missing");
        assert!(matches!(e, Error::Io { action: "read", .. }), "{e}");
    }

    #[test]
    fn a_bundle_carries_the_hashes_of_its_files_as_its_plan_records_them() {
        let manifest = include_str!("../examples/pipeline.yml");
        let bundle = generate_with(
            &SourceFile::new("pipeline.yml", manifest),
            &org::embedded().expect("org"),
            Catalog::embedded().expect("catalog"),
            Templates::embedded().expect("templates"),
        )
        .expect("the example renders");
        let again = bundle.outputs.summary();
        assert_eq!(bundle.hashes.hash, again.hash);
        assert_eq!(bundle.hashes.files, again.files);
        assert_eq!(bundle.hashes.files.len() + 1, bundle.outputs.len());
        let plan: serde_json::Value =
            serde_json::from_slice(bundle.outputs.get(outputs::PLAN_FILE).expect("plan"))
                .expect("plan.json");
        assert_eq!(
            plan["outputs"],
            serde_json::to_value(&bundle.hashes).expect("json")
        );
    }
}
