//! The language catalog: `languages/<name>.yaml`, plus `languages/_shared.yaml`.
//!
//! A language file says how each gate is implemented for that language: the build image and
//! runtime versions, and per gate the steps (commands, in a buildspec phase), the test reports
//! and the files the gate passes on. `_shared.yaml` holds steps every language runs the same way
//! (secret scanning, SBOM, versioning); a language overrides a shared step by defining a step
//! with the same name in the same gate.
//!
//! Files are embedded in the binary; `--languages DIR` adds languages or replaces embedded ones
//! file by file (see [`Catalog::load`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::assets;
use crate::error::{Diagnostic, Error, Result, SourceFile};
use crate::input::load_document;
use crate::manifest::{ArtifactKind, ENV_KEY_PATTERN, RESERVED_ENV_PREFIXES};

/// Name of the file with steps shared by every language.
pub const SHARED_FILE: &str = "_shared.yaml";

/// One language, as written in `languages/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pipeforge language")]
pub struct Language {
    /// One line about the language and its toolchain.
    pub description: String,
    /// The CodeBuild image every gate runs in.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Runtime versions.
    pub runtime: Runtime,
    /// Environment variables every gate gets (tool settings such as `DOTNET_NOLOGO`). Names
    /// must not use the reserved prefixes `PF_`, `AWS_` and `CODEBUILD_`; in the gates that run
    /// team commands, a team's `build.env` entry of the same name replaces the language's.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": ENV_KEY_PATTERN, "x-hint": "environment variable names are upper-case letters, digits and `_`, e.g. `DOTNET_NOLOGO`" }))]
    pub env: BTreeMap<String, String>,
    /// Commands every gate runs in its install phase, after the runtime is selected.
    #[serde(default)]
    pub install: Vec<String>,
    /// Paths CodeBuild caches between builds.
    #[serde(default)]
    pub cache: Vec<String>,
    /// The default artifact.
    pub artifact: LanguageArtifact,
    /// How each gate is implemented.
    pub gates: BTreeMap<String, GateImpl>,
}

/// Runtime versions of a language.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// The key under the buildspec's `runtime-versions` (e.g. `python`, `nodejs`, `java`).
    #[schemars(regex(pattern = "^[a-z][a-z0-9]*$"))]
    pub name: String,
    /// The versions teams may choose; each is also the `runtime-versions` value.
    #[schemars(length(min = 1))]
    pub versions: Vec<String>,
    /// The version used when the manifest names none.
    pub default: String,
}

/// A language's default artifact.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageArtifact {
    /// Default artifact kind.
    pub kind: ArtifactKind,
    /// Default package paths (globs relative to the repository root).
    #[schemars(length(min = 1))]
    pub paths: Vec<String>,
}

/// How one gate is implemented.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateImpl {
    /// The steps, in order; the buildspec groups them by phase.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// CodeBuild report groups: name → files and format.
    #[serde(default)]
    pub reports: BTreeMap<String, Report>,
    /// Files the gate passes on to later stages (besides the package and the deploy template).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Variables the gate exports to later pipeline actions (CodeBuild `exported-variables`).
    #[serde(default)]
    pub exports: Vec<String>,
    /// Whose rules the gate applies: the organisation's configuration, the repository files and
    /// comments it ignores, and what stays the team's.
    #[serde(default)]
    pub governance: Option<Governance>,
}

/// Whose rules a gate applies. Security and correctness rules come from the organisation (the
/// catalog), never from the repository; a team's *style* settings may stay the team's.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Governance {
    /// The organisation's configuration the gate applies, in one sentence.
    #[schemars(length(min = 1))]
    pub org_config: String,
    /// Repository files and inline comments the gate ignores (they cannot switch rules off).
    #[serde(default)]
    pub ignored: Vec<String>,
    /// Repository files that stay the team's (style, formatting, the team's own extra rules).
    #[serde(default)]
    pub team: Vec<String>,
    /// Command-line options that keep the organisation's rules in force. Each must appear in a
    /// command of an enforced step of the gate; every rendered buildspec is checked for them.
    #[serde(default)]
    pub flags: Vec<String>,
}

impl Governance {
    /// Adds another governance (shared steps) to this one.
    fn absorb(&mut self, other: &Governance) {
        if self.org_config.is_empty() {
            self.org_config = other.org_config.clone();
        } else if !self.org_config.contains(&other.org_config) {
            self.org_config = format!("{}; {}", self.org_config, other.org_config);
        }
        for (mine, theirs) in [
            (&mut self.ignored, &other.ignored),
            (&mut self.team, &other.team),
            (&mut self.flags, &other.flags),
        ] {
            for x in theirs {
                if !mine.contains(x) {
                    mine.push(x.clone());
                }
            }
        }
    }
}

/// What `pipeforge run` does with a step on a developer's machine instead of running its
/// commands as they are (CodeBuild always runs the commands).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalRun {
    /// Not run locally, for this reason (publishing, pushing: things a local run must not do).
    #[serde(default)]
    pub skip: Option<String>,
    /// Run these commands instead.
    #[serde(default)]
    pub commands: Option<Vec<String>>,
    /// Tools the step installs; `pipeforge run --tool NAME=PATH` uses local binaries instead
    /// (then the step is not run).
    #[serde(default)]
    pub provides: Vec<String>,
}

/// A buildspec phase.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Tool installation, after the runtime is selected.
    Install,
    /// Preparation.
    PreBuild,
    /// The main work.
    Build,
    /// Checks on what the build produced.
    PostBuild,
}

impl Phase {
    /// All phases, in buildspec order.
    pub const ALL: [Phase; 4] = [
        Phase::Install,
        Phase::PreBuild,
        Phase::Build,
        Phase::PostBuild,
    ];

    /// The buildspec key.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Install => "install",
            Phase::PreBuild => "pre_build",
            Phase::Build => "build",
            Phase::PostBuild => "post_build",
        }
    }
}

/// A manifest field whose commands a step carries instead of its own.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TeamSlot {
    /// `build.commands`: replace the step's commands (which are the default when the manifest
    /// has none, e.g. `npm run build --if-present`).
    BuildCommands,
    /// `build.test_commands`: replace the step's commands.
    TestCommands,
}

/// One step of a gate.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Step name, unique within the gate (a language step overrides a shared one by name).
    #[schemars(regex(pattern = "^[a-z][a-z0-9-]{0,39}$"))]
    pub name: String,
    /// The buildspec phase.
    pub phase: Phase,
    /// The commands (shell, run in order; the first failure fails the gate).
    #[serde(default)]
    pub commands: Vec<String>,
    /// Where a team's commands go: `test_commands` and `build_commands` replace this step's
    /// commands. Steps without a slot are enforced verbatim.
    #[serde(default)]
    pub team: Option<TeamSlot>,
    /// Only run for these artifact kinds (default: always).
    #[serde(default)]
    pub artifact: Vec<ArtifactKind>,
    /// The step needs a Docker daemon (`docker build`, `docker push`): a gate that includes it
    /// must run in a privileged CodeBuild project.
    #[serde(default)]
    pub privileged: bool,
    /// How `pipeforge run` treats the step locally (default: runs its commands).
    #[serde(default)]
    pub local: Option<LocalRun>,
    /// Set when the step comes from `_shared.yaml` (not written in files).
    #[serde(skip)]
    #[schemars(skip)]
    pub shared: bool,
}

/// A CodeBuild report group.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Report files (globs, relative to `base_directory`).
    #[schemars(length(min = 1))]
    pub files: Vec<String>,
    /// Directory the files are in.
    #[serde(default)]
    pub base_directory: Option<String>,
    /// CodeBuild file format.
    pub format: ReportFormat,
}

/// CodeBuild report file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum ReportFormat {
    JUNITXML,
    CUCUMBERJSON,
    NUNITXML,
    NUNIT3XML,
    TESTNGXML,
    VISUALSTUDIOTRX,
    CLOVERXML,
    COBERTURAXML,
    JACOCOXML,
    SIMPLECOV,
}

impl ReportFormat {
    /// True for code-coverage formats (the others are test results).
    pub fn is_coverage(self) -> bool {
        matches!(
            self,
            ReportFormat::CLOVERXML
                | ReportFormat::COBERTURAXML
                | ReportFormat::JACOCOXML
                | ReportFormat::SIMPLECOV
        )
    }

    /// The buildspec value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::JUNITXML => "JUNITXML",
            ReportFormat::CUCUMBERJSON => "CUCUMBERJSON",
            ReportFormat::NUNITXML => "NUNITXML",
            ReportFormat::NUNIT3XML => "NUNIT3XML",
            ReportFormat::TESTNGXML => "TESTNGXML",
            ReportFormat::VISUALSTUDIOTRX => "VISUALSTUDIOTRX",
            ReportFormat::CLOVERXML => "CLOVERXML",
            ReportFormat::COBERTURAXML => "COBERTURAXML",
            ReportFormat::JACOCOXML => "JACOCOXML",
            ReportFormat::SIMPLECOV => "SIMPLECOV",
        }
    }
}

/// `_shared.yaml`: steps every language runs.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "pipeforge shared steps")]
pub struct Shared {
    /// Per gate, steps added to every language's implementation of that gate.
    #[serde(default)]
    pub gates: BTreeMap<String, GateImpl>,
}

/// The whole catalog, shared steps merged into every language.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Languages by name.
    languages: BTreeMap<String, Entry>,
    /// Where each language came from (file name as shown in messages).
    pub sources: BTreeMap<String, String>,
}

/// A language of the catalog.
#[derive(Clone, Debug)]
enum Entry {
    /// Read and checked from its file.
    Loaded(Language),
    /// An embedded language kept as the prebuilt catalog's text (checked when it was made) and
    /// read the first time it is used: a run uses one language of the five.
    Prebuilt {
        name: String,
        text: &'static str,
        shared: Arc<Shared>,
        language: OnceLock<Option<Language>>,
    },
}

impl Entry {
    fn get(&self) -> Option<&Language> {
        match self {
            Entry::Loaded(l) => Some(l),
            Entry::Prebuilt {
                name,
                text,
                shared,
                language,
            } => language
                .get_or_init(|| match serde_json::from_str::<Language>(text) {
                    Ok(mut l) => {
                        merge_shared(&mut l, shared);
                        Some(l)
                    }
                    // Not what the prebuilt file promised: the language from its YAML, as
                    // when the whole prebuilt file is unusable.
                    Err(_) => Catalog::from_files(&embedded_files())
                        .ok()
                        .and_then(|mut c| c.languages.remove(name))
                        .and_then(|e| match e {
                            Entry::Loaded(l) => Some(l),
                            Entry::Prebuilt { .. } => None,
                        }),
                })
                .as_ref(),
        }
    }
}

impl Catalog {
    /// The language `name`, shared steps merged.
    pub fn language(&self, name: &str) -> Option<&Language> {
        self.languages.get(name).and_then(Entry::get)
    }

    /// The names of the catalog's languages, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.languages.keys().map(String::as_str)
    }

    /// Every language of the catalog by name, in order.
    pub fn all(&self) -> BTreeMap<&str, &Language> {
        self.languages
            .iter()
            .filter_map(|(name, e)| Some((name.as_str(), e.get()?)))
            .collect()
    }
}

fn language_schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA
        .get_or_init(|| serde_json::to_value(schemars::schema_for!(Language)).unwrap_or(Json::Null))
}

fn shared_schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::to_value(schemars::schema_for!(Shared)).unwrap_or(Json::Null))
}

/// Merges shared steps into a language: a language step with the same name wins; shared steps
/// keep their relative order and go after the language's steps of the same phase.
fn merge_shared(lang: &mut Language, shared: &Shared) {
    for (gate, simpl) in &shared.gates {
        let limpl = lang.gates.entry(gate.clone()).or_default();
        for step in &simpl.steps {
            if !limpl.steps.iter().any(|s| s.name == step.name) {
                let mut step = step.clone();
                step.shared = true;
                limpl.steps.push(step);
            }
        }
        for (name, report) in &simpl.reports {
            limpl
                .reports
                .entry(name.clone())
                .or_insert_with(|| report.clone());
        }
        for o in &simpl.outputs {
            if !limpl.outputs.contains(o) {
                limpl.outputs.push(o.clone());
            }
        }
        for e in &simpl.exports {
            if !limpl.exports.contains(e) {
                limpl.exports.push(e.clone());
            }
        }
        if let Some(sg) = &simpl.governance {
            match &mut limpl.governance {
                Some(lg) => lg.absorb(sg),
                None => limpl.governance = Some(sg.clone()),
            }
        }
        // Stable sort: phase order, then the order written.
        limpl.steps.sort_by_key(|s| s.phase);
    }
    for limpl in lang.gates.values_mut() {
        limpl.steps.sort_by_key(|s| s.phase);
    }
}

fn check_language(
    name: &str,
    lang: &Language,
    file: &SourceFile,
    spans: &crate::schema::SpanIndex,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !lang.runtime.versions.contains(&lang.runtime.default) {
        let path = "runtime.default";
        out.push(file.diag(
            spans.value(path),
            Some(path),
            format!(
                "default runtime `{}` is not in `runtime.versions`",
                lang.runtime.default
            ),
            "add it to `runtime.versions` or pick one of them",
        ));
    }
    for key in lang.env.keys() {
        if let Some(p) = RESERVED_ENV_PREFIXES.iter().find(|p| key.starts_with(*p)) {
            let path = format!("env.{key}");
            out.push(file.diag(
                spans.key(&path),
                Some(&path),
                format!("`{key}` uses the reserved prefix `{p}`"),
                "rename the variable; `CODEBUILD_`, `AWS_` and `PF_` belong to CodeBuild, AWS and pipeforge",
            ));
        }
    }
    if !crate::pattern::cached("^[a-z][a-z0-9-]{0,30}$").is_ok_and(|r| r.is_match(name)) {
        out.push(Diagnostic::file_level(
            file.name.clone(),
            format!("`{name}` is not a valid language name"),
            "language files are named `<name>.yaml` with a lower-case name, e.g. `python.yaml`",
        ));
    }
    for (gate, g) in &lang.gates {
        let mut seen = BTreeMap::new();
        for (i, s) in g.steps.iter().enumerate() {
            if let Some(first) = seen.insert(s.name.as_str(), i) {
                let path = format!("gates.{gate}.steps[{i}].name");
                out.push(file.diag(
                    spans.value(&path),
                    Some(&path),
                    format!("step `{}` appears twice in gate `{gate}`", s.name),
                    format!("rename or remove one of steps {first} and {i}"),
                ));
            }
        }
    }
    out
}

/// Every governance flag of a gate must be passed by one of its enforced commands (a team slot
/// can be replaced, so it does not count): a language file cannot claim an org rule it does not
/// apply.
fn check_governance(lang: &Language, file: &SourceFile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (gate, g) in &lang.gates {
        let Some(gov) = &g.governance else { continue };
        for flag in &gov.flags {
            let applied = g
                .steps
                .iter()
                .filter(|s| s.team.is_none())
                .flat_map(|s| &s.commands)
                .any(|c| c.contains(flag.as_str()));
            if !applied {
                out.push(Diagnostic::file_level(
                    file.name.clone(),
                    format!("gate `{gate}` declares the governance flag `{flag}`, but none of its enforced commands passes it"),
                    "add the option to the command that runs the tool, or remove it from `governance.flags`",
                ));
            }
        }
    }
    out
}

/// The embedded language files, by file name (`python.yaml`, `_shared.yaml`).
fn embedded_files() -> BTreeMap<String, SourceFile> {
    let mut files = BTreeMap::new();
    for (path, text) in assets::list("languages/") {
        let name = path.trim_start_matches("languages/").to_owned();
        if name.ends_with(".yaml") {
            files.insert(name, SourceFile::new(format!("<embedded {path}>"), text));
        }
    }
    files
}

/// The embedded catalog as `assets/prebuilt/catalog.json` holds it: every file as loaded and
/// checked, before the shared steps are merged, and the digest of the files it came from.
#[derive(Serialize)]
struct Prebuilt<'a> {
    digest: &'a str,
    shared: Shared,
    languages: BTreeMap<String, Language>,
}

/// The embedded catalog from its prebuilt form, when that was made from these very files.
fn from_prebuilt() -> Option<Catalog> {
    parse_prebuilt(assets::PREBUILT_CATALOG?, assets::INPUTS_DIGEST)
}

/// A prebuilt catalog `text`, if it is in the layout its writer gives (`crate::members`),
/// deserializes and was made from sources of `digest`. Its languages are not read here.
fn parse_prebuilt(text: &'static str, digest: &str) -> Option<Catalog> {
    let top = crate::members::document(text)?;
    if serde_json::from_str::<&str>(top.get("digest")?).ok()? != digest {
        return None;
    }
    let shared = Arc::new(serde_json::from_str(top.get("shared")?).ok()?);
    let mut cat = Catalog::default();
    for (name, text) in crate::members::object(top.get("languages")?, 4)? {
        let name = name.into_owned();
        cat.sources
            .insert(name.clone(), format!("<embedded languages/{name}.yaml>"));
        let entry = Entry::Prebuilt {
            name: name.clone(),
            text,
            shared: Arc::clone(&shared),
            language: OnceLock::new(),
        };
        cat.languages.insert(name, entry);
    }
    Some(cat)
}

/// The text of `assets/prebuilt/catalog.json` for the embedded files: the catalog checked as
/// [`Catalog::from_files`] checks it (an error if it fails), each file as loaded.
pub fn prebuilt_json() -> Result<String> {
    let files = embedded_files();
    Catalog::from_files(&files)?;
    let mut shared = Shared::default();
    let mut languages = BTreeMap::new();
    for (fname, file) in &files {
        if fname == SHARED_FILE {
            shared = load_document::<Shared>(file, shared_schema()).into_clean()?;
        } else if !fname.starts_with('_') {
            let lang = load_document::<Language>(file, language_schema()).into_clean()?;
            languages.insert(fname.trim_end_matches(".yaml").to_owned(), lang);
        }
    }
    let p = Prebuilt {
        digest: assets::INPUTS_DIGEST,
        shared,
        languages,
    };
    let mut text = serde_json::to_string_pretty(&p).map_err(|e| {
        Error::other(
            format!("cannot serialize the catalog: {e}"),
            "this is a pipeforge bug; please report it",
        )
    })?;
    text.push('\n');
    Ok(text)
}

impl Catalog {
    /// Loads the embedded catalog, then files from `dir` (if given) on top of it: a file there
    /// replaces the embedded file of the same name. The embedded catalog alone comes from its
    /// prebuilt form (checked when it was made) unless the sources changed since.
    pub fn load(dir: Option<&Path>) -> Result<Catalog> {
        if dir.is_none()
            && let Some(cat) = from_prebuilt()
        {
            return Ok(cat);
        }
        let mut files = embedded_files();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::read(dir, e))?;
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let Some(fname) = p.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !fname.ends_with(".yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).map_err(|e| Error::read(&p, e))?;
                files.insert(
                    fname.to_owned(),
                    SourceFile::new(p.display().to_string(), text),
                );
            }
        }
        Self::from_files(&files)
    }

    /// Builds a catalog from `file name → source` (names like `python.yaml`, `_shared.yaml`).
    pub fn from_files(files: &BTreeMap<String, SourceFile>) -> Result<Catalog> {
        let mut problems = Vec::new();
        let shared = match files.get(SHARED_FILE) {
            Some(f) => match load_document::<Shared>(f, shared_schema()).into_clean() {
                Ok(s) => s,
                Err(d) => {
                    problems.extend(d);
                    Shared::default()
                }
            },
            None => Shared::default(),
        };
        let mut cat = Catalog::default();
        for (fname, file) in files {
            if fname.starts_with('_') {
                continue;
            }
            let name = fname.trim_end_matches(".yaml");
            let loaded = load_document::<Language>(file, language_schema());
            let spans = loaded.checked.spans.clone();
            match loaded.into_clean() {
                Ok(mut lang) => {
                    let mut d = check_language(name, &lang, file, &spans);
                    merge_shared(&mut lang, &shared);
                    d.extend(check_governance(&lang, file));
                    if d.is_empty() {
                        cat.languages.insert(name.to_owned(), Entry::Loaded(lang));
                        cat.sources.insert(name.to_owned(), file.name.clone());
                    } else {
                        problems.extend(d);
                    }
                }
                Err(d) => problems.extend(d),
            }
        }
        if problems.is_empty() {
            Ok(cat)
        } else {
            Err(Error::from(problems))
        }
    }

    /// The embedded catalog (cached).
    pub fn embedded() -> Result<&'static Catalog> {
        static CAT: OnceLock<std::result::Result<Catalog, String>> = OnceLock::new();
        CAT.get_or_init(|| Catalog::load(None).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| {
                Error::other(
                    format!("the embedded language catalog is invalid: {e}"),
                    "this is a pipeforge build problem",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &str) -> Result<Catalog> {
        let text = format!(
            "description: t\nimage: i\nruntime: {{name: python, versions: [\"3\"], default: \"3\"}}\n\
             env: {env}\nartifact: {{kind: none, paths: [x]}}\ngates: {{}}\n"
        );
        let mut files = BTreeMap::new();
        files.insert("t.yaml".to_owned(), SourceFile::new("t.yaml", text));
        Catalog::from_files(&files)
    }

    /// The prebuilt catalog is current and is exactly the catalog the YAML files load into.
    #[test]
    fn prebuilt_catalog_is_the_yaml_catalog() {
        let prebuilt = from_prebuilt().expect(
            "assets/prebuilt/catalog.json is stale: run `UPDATE_GOLDEN=1 cargo test --test golden`",
        );
        let loaded = Catalog::from_files(&embedded_files()).expect("embedded catalog");
        assert_eq!(prebuilt.all(), loaded.all());
        assert_eq!(prebuilt.all().len(), loaded.languages.len());
        assert_eq!(prebuilt.sources, loaded.sources);
        assert!(
            loaded
                .all()
                .values()
                .any(|l| l.gates.values().any(|g| g.steps.iter().any(|s| s.shared)))
        );
    }

    /// A prebuilt catalog made from other sources, or that no longer deserializes, is not used
    /// (the YAML is loaded and checked instead).
    #[test]
    fn a_stale_or_broken_prebuilt_catalog_is_not_used() {
        let text = assets::PREBUILT_CATALOG.expect("committed");
        assert!(parse_prebuilt(text, assets::INPUTS_DIGEST).is_some());
        assert!(parse_prebuilt(text, "fnv1a64:0000000000000000").is_none());
        let renamed = text.replacen("\"languages\"", "\"langs\"", 1);
        assert!(parse_prebuilt(leak(renamed), assets::INPUTS_DIGEST).is_none());
        let compact = serde_json::from_str::<Json>(text)
            .expect("json")
            .to_string();
        assert!(parse_prebuilt(leak(compact), assets::INPUTS_DIGEST).is_none());
    }

    fn leak(text: String) -> &'static str {
        Box::leak(text.into_boxed_str())
    }

    /// A prebuilt language is read when it is first used, and only that one; a language text
    /// that no longer reads as a language is taken from its YAML file instead.
    #[test]
    fn prebuilt_languages_are_read_when_used() {
        let loaded = Catalog::from_files(&embedded_files()).expect("embedded catalog");
        let text = assets::PREBUILT_CATALOG.expect("committed");
        let cat = parse_prebuilt(text, assets::INPUTS_DIGEST).expect("current");
        let read = |cat: &Catalog| -> Vec<String> {
            cat.languages
                .iter()
                .filter(|(_, e)| matches!(e, Entry::Prebuilt { language, .. } if language.get().is_some()))
                .map(|(n, _)| n.clone())
                .collect()
        };
        assert!(read(&cat).is_empty());
        assert_eq!(cat.language("java"), loaded.language("java"));
        assert_eq!(read(&cat), ["java"]);
        assert!(cat.language("cobol").is_none());
        assert_eq!(cat.names().count(), loaded.languages.len());

        let p: Json = serde_json::from_str(text).expect("json");
        let mut broken = p.clone();
        broken["languages"]["go"] = serde_json::json!({"image": 5});
        let broken = serde_json::to_string_pretty(&broken).expect("json");
        let cat = parse_prebuilt(leak(broken), assets::INPUTS_DIGEST).expect("reads");
        assert_eq!(cat.language("go"), loaded.language("go"));
        assert!(cat.language("go").is_some());
    }

    #[test]
    fn language_variables_are_loaded() {
        let cat = load("{DOTNET_NOLOGO: \"1\"}").expect("valid language");
        let env = &cat.language("t").expect("t").env;
        assert_eq!(env.get("DOTNET_NOLOGO").map(String::as_str), Some("1"));
    }

    #[test]
    fn language_variables_with_reserved_prefixes_are_rejected() {
        for key in ["AWS_REGION", "PF_GATE", "CODEBUILD_SRC_DIR"] {
            let err = load(&format!("{{{key}: x}}")).expect_err(key).to_string();
            assert!(err.contains("reserved prefix"), "{key}: {err}");
            assert!(err.contains(&format!("env.{key}")), "{key}: {err}");
        }
    }

    /// Every step of every embedded language, with its language and gate.
    fn embedded_steps() -> Vec<(String, String, Step)> {
        let cat = Catalog::embedded().expect("embedded catalog");
        let mut out = Vec::new();
        for (lang, l) in cat.all() {
            for (gate, g) in &l.gates {
                for s in &g.steps {
                    out.push((lang.to_owned(), gate.clone(), s.clone()));
                }
            }
        }
        out
    }

    /// The snapshot a build gets carries git data without an index: a `git grep` that names
    /// no tree searches nothing and a refusal built on it never fires.
    #[test]
    fn git_grep_in_embedded_steps_searches_the_commit() {
        for (lang, gate, step) in embedded_steps() {
            for c in step.commands.iter().filter(|c| c.contains("git grep")) {
                assert!(
                    c.contains(" HEAD -- "),
                    "{lang}/{gate}/{}: `git grep` without `HEAD`: {c}",
                    step.name
                );
            }
        }
    }

    #[test]
    fn embedded_languages_implement_every_default_gate() {
        let cat = Catalog::embedded().expect("embedded catalog");
        let org = crate::org::embedded().expect("embedded policy");
        for lang in &org.org.languages.allowed {
            let l = cat
                .language(lang)
                .unwrap_or_else(|| panic!("`{lang}` is allowed but has no catalog file"));
            for g in &org.org.gates {
                let imp = l
                    .gates
                    .get(&g.name)
                    .unwrap_or_else(|| panic!("`{lang}` does not implement gate `{}`", g.name));
                // Mandatory gates need the language's own tools; optional, language-independent
                // gates (`iac-scan`) may be entirely shared.
                assert!(
                    !g.mandatory || imp.steps.iter().any(|s| !s.shared),
                    "`{lang}` implements mandatory gate `{}` with shared steps only",
                    g.name
                );
            }
            let test = &l.gates["test"];
            assert!(
                test.steps
                    .iter()
                    .any(|s| s.team == Some(TeamSlot::TestCommands)),
                "`{lang}`: the test gate has no step for team test commands"
            );
            assert!(
                test.steps.iter().any(|s| s.team.is_none()
                    && s.phase == Phase::PostBuild
                    && s.commands
                        .iter()
                        .any(|c| c.contains("pipeforge coverage check"))),
                "`{lang}`: the coverage threshold must be an enforced post_build step"
            );
            assert!(
                test.reports.values().any(|r| r.format.is_coverage())
                    && test.reports.values().any(|r| !r.format.is_coverage()),
                "`{lang}`: the test gate needs a test report and a coverage report"
            );
        }
    }

    #[test]
    fn release_downloads_are_checked_against_their_checksums() {
        for (lang, gate, step) in embedded_steps() {
            let downloads = step
                .commands
                .iter()
                .filter(|c| c.contains("/releases/download/"))
                .count();
            if downloads == 0 {
                continue;
            }
            assert!(
                step.commands
                    .iter()
                    .any(|c| c.contains("sha256sum --check --strict")),
                "{lang}/{gate}/{}: a release download without a checksum check",
                step.name
            );
        }
    }

    #[test]
    fn installed_tools_are_pinned() {
        let unpinned = |cmd: &str| -> Option<String> {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let after = |w: &str| words.iter().position(|x| *x == w).map(|i| &words[i + 1..]);
            if let Some(rest) = after("install") {
                let pkgs: Vec<&&str> = rest
                    .iter()
                    .take_while(|w| !w.starts_with('>'))
                    .filter(|w| !w.starts_with('-') && !w.starts_with('/'))
                    .collect();
                if cmd.contains("pip install") && !cmd.contains("--requirement") {
                    return pkgs
                        .iter()
                        .find(|p| !p.contains("=="))
                        .map(|p| p.to_string());
                }
                if cmd.starts_with("npm install") {
                    return pkgs
                        .iter()
                        .find(|p| {
                            !p.rsplit('@')
                                .next()
                                .is_some_and(|v| v.starts_with(char::is_numeric))
                        })
                        .map(|p| p.to_string());
                }
                if cmd.starts_with("go install") {
                    return pkgs
                        .iter()
                        .find(|p| !p.contains("@v"))
                        .map(|p| p.to_string());
                }
                if cmd.starts_with("dotnet tool install") && !cmd.contains("--version") {
                    return Some(cmd.to_owned());
                }
            }
            None
        };
        for (lang, gate, step) in embedded_steps() {
            if step.phase != Phase::Install {
                continue;
            }
            for c in &step.commands {
                if c.contains("--editable") {
                    continue;
                }
                assert_eq!(
                    unpinned(c),
                    None,
                    "{lang}/{gate}/{}: `{c}` installs a tool without a pinned version",
                    step.name
                );
            }
        }
    }

    #[test]
    fn language_variable_names_must_be_upper_case() {
        let err = load("{lower: x}").expect_err("lower-case name").to_string();
        assert!(
            err.contains("`env.lower`") && err.contains("must match"),
            "{err}"
        );
    }
}
