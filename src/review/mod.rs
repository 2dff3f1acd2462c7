//! What a manifest change means, before it is merged: the verdict, every problem at its line,
//! the pipeline as a picture (stages → actions, approvals, accounts, regions; gates; secret
//! references), and what changes against a baseline (the deployed bundle, or the target
//! branch's render) per stack (resources added, removed, modified; replacements flagged) and per
//! file (a unified diff).
//!
//! ```text
//! manifest text ──generate──▶ Bundle ─┐
//!                                     ├──review──▶ Review ──▶ markdown::comment (pull requests)
//! baseline files (deployed / target) ─┘                   └─▶ JSON (the preview page)
//! ```
//!
//! Pure: no I/O. The pull-request worker and the preview page are its only callers; neither
//! ever passes a secret value in (manifests hold secret references only, and the review shows
//! exactly those references).

pub mod markdown;
pub mod stacks;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Diagnostic, Error};
use crate::model::Secret;
use crate::outputs::{Outputs, PLAN_FILE, unified_diff};
use crate::plan::{ActionKind, Plan, StackKind};
use crate::{Bundle, Inputs, SourceFile};
pub use stacks::{ModifiedResource, ResourceRef, StackDiff};

/// Is the manifest good to merge?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// It validates and renders: its pipeline is shown below.
    Valid,
    /// It does not: the problems say why, nothing would deploy.
    Invalid,
}

/// One problem of the manifest, at its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line in the manifest, when the problem has a place in it.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// Key path, e.g. `environments[1].approval`.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

/// One action of a stage, as drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionView {
    /// Action name.
    pub name: String,
    /// `source`, `gate`, `approval`, `create-change-set` or `execute-change-set`.
    pub kind: &'static str,
    /// Run order in the stage (equal: in parallel).
    pub run_order: u32,
    /// The environment of approvals and deploy actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Its account, for deploy actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Its region, for deploy actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One stage, as drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageView {
    /// Stage name.
    pub name: String,
    /// Actions in order.
    pub actions: Vec<ActionView>,
}

/// One environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvironmentView {
    /// Name.
    pub name: String,
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
    /// A manual approval precedes its deploy.
    pub approval: bool,
    /// A production environment of the org.
    pub production: bool,
}

/// One gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GateView {
    /// Gate name.
    pub name: String,
    /// `ci` or `build`.
    pub stage: &'static str,
    /// Mandatory by org policy.
    pub mandatory: bool,
    /// What it checks.
    pub description: String,
}

/// A secret the builds read: its variable and its reference, never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretView {
    /// Environment variable.
    pub variable: String,
    /// `ssm:<name>` or `secretsmanager:<reference>`.
    pub reference: String,
}

/// One stack of the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StackView {
    /// Stack name.
    pub name: String,
    /// `target`, `region` or `pipeline`.
    pub kind: &'static str,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// File in the bundle.
    pub file: String,
}

/// The effective pipeline, as a picture's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PipelineView {
    /// Pipeline (manifest name).
    pub name: String,
    /// Team.
    pub team: String,
    /// Language and runtime.
    pub language: String,
    /// Tooling account and region.
    pub tooling: String,
    /// Stages in order.
    pub stages: Vec<StageView>,
    /// Environments in promotion order.
    pub environments: Vec<EnvironmentView>,
    /// Enabled gates.
    pub gates: Vec<GateView>,
    /// Gates the manifest turned off.
    pub disabled_gates: Vec<String>,
    /// Secret references.
    pub secrets: Vec<SecretView>,
    /// Stacks in deploy order.
    pub stacks: Vec<StackView>,
}

/// What the review compares with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    /// The bundle deployed for the pipeline.
    Deployed,
    /// The render of the target branch's manifest (nothing deployed yet).
    TargetBranch,
    /// Nothing to compare with.
    None,
}

/// The files of a baseline bundle.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    /// Where they come from.
    pub kind: Option<BaselineKind>,
    /// The commit they were rendered from, when known.
    pub commit: Option<String>,
    /// Bundle path → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Baseline {
    /// A baseline of `kind` from rendered outputs.
    pub fn from_outputs(kind: BaselineKind, commit: Option<String>, outputs: &Outputs) -> Baseline {
        Baseline {
            kind: Some(kind),
            commit,
            files: outputs
                .iter()
                .map(|(p, b)| (p.to_owned(), b.to_vec()))
                .collect(),
        }
    }
}

/// A file of the bundle that differs from the baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileDiff {
    /// Bundle path.
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub status: &'static str,
    /// Unified diff.
    pub diff: String,
}

/// Everything the pull-request comment and the preview page show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Review {
    /// The manifest's name.
    pub manifest: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Every problem (empty when valid).
    pub problems: Vec<Problem>,
    /// An error that is not about a place in the manifest (a template or output check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The pipeline, when the manifest renders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineView>,
    /// What it is compared with.
    pub baseline: BaselineKind,
    /// The baseline's commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_commit: Option<String>,
    /// Per stack: resources added, removed, modified.
    pub stacks: Vec<StackDiff>,
    /// Buildspecs and other files that differ (stacks have their own entry; `plan.json` is left
    /// out, as it changes with any of them).
    pub files: Vec<FileDiff>,
}

impl Review {
    /// True when nothing differs from the baseline.
    pub fn unchanged(&self) -> bool {
        self.files.is_empty() && self.stacks.iter().all(|s| s.status == "unchanged")
    }
}

/// Reviews `manifest` against `baseline` (none: the pipeline is shown without changes).
pub fn review(manifest: &SourceFile, inputs: &Inputs, baseline: Option<&Baseline>) -> Review {
    let result = crate::generate(manifest, inputs);
    review_result(&manifest.name, &result, baseline)
}

/// [`review`] of a render that has already run.
pub fn review_result(
    name: &str,
    result: &crate::Result<Bundle>,
    baseline: Option<&Baseline>,
) -> Review {
    let kind = baseline.and_then(|b| b.kind).unwrap_or(BaselineKind::None);
    let mut r = Review {
        manifest: name.to_owned(),
        verdict: Verdict::Valid,
        problems: Vec::new(),
        error: None,
        pipeline: None,
        baseline: kind,
        baseline_commit: baseline.and_then(|b| b.commit.clone()),
        stacks: Vec::new(),
        files: Vec::new(),
    };
    match result {
        Ok(bundle) => {
            r.pipeline = Some(pipeline_view(&bundle.plan));
            if let Some(b) = baseline.filter(|b| b.kind.is_some()) {
                let (stacks, files) = changes(&bundle.plan, &bundle.outputs, &b.files);
                r.stacks = stacks;
                r.files = files;
            }
        }
        Err(Error::Invalid(d)) => {
            r.verdict = Verdict::Invalid;
            r.problems = d.0.iter().map(|x| problem(name, x)).collect();
        }
        Err(other) => {
            r.verdict = Verdict::Invalid;
            r.error = Some(other.to_string());
        }
    }
    r
}

fn problem(manifest: &str, d: &Diagnostic) -> Problem {
    let here = d.file == manifest;
    let span = d.span.filter(|_| here);
    Problem {
        line: span.map(|s| s.start.line),
        column: span.map(|s| s.start.col),
        path: d.path.clone(),
        message: if here {
            d.message.clone()
        } else {
            format!("{} ({})", d.message, d.file)
        },
        help: d.help.clone(),
    }
}

fn kind_name(k: ActionKind) -> &'static str {
    match k {
        ActionKind::Source => "source",
        ActionKind::Gate => "gate",
        ActionKind::Approval => "approval",
        ActionKind::CreateChangeSet => "create-change-set",
        ActionKind::ExecuteChangeSet => "execute-change-set",
    }
}

fn stack_kind(k: StackKind) -> &'static str {
    match k {
        StackKind::Target => "target",
        StackKind::Region => "region",
        StackKind::Pipeline => "pipeline",
    }
}

/// `ssm:<name>` or `secretsmanager:<reference>`: the reference, as the manifest wrote it.
pub fn secret_reference(s: &Secret) -> String {
    match s {
        Secret::ParameterStore { name } => format!("ssm:{name}"),
        Secret::SecretsManager { reference, .. } => format!("secretsmanager:{reference}"),
    }
}

/// The plan as a picture's data.
pub fn pipeline_view(plan: &Plan) -> PipelineView {
    let env = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| plan.environments.iter().find(|e| &e.name == n))
    };
    let stages = plan
        .stages
        .iter()
        .map(|s| StageView {
            name: s.name.clone(),
            actions: s
                .actions
                .iter()
                .map(|a| {
                    let deploys = matches!(
                        a.kind,
                        ActionKind::CreateChangeSet | ActionKind::ExecuteChangeSet
                    );
                    let e = env(&a.environment).filter(|_| deploys);
                    ActionView {
                        name: a.name.clone(),
                        kind: kind_name(a.kind),
                        run_order: a.run_order,
                        environment: a.environment.clone(),
                        account: e.map(|e| e.account.clone()),
                        region: e.map(|e| e.region.value.clone()),
                    }
                })
                .collect(),
        })
        .collect();
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    for g in &plan.gates {
        for s in &g.secrets {
            secrets.insert(s.name.clone(), secret_reference(&s.secret));
        }
    }
    PipelineView {
        name: plan.pipeline.name.clone(),
        team: plan.pipeline.team.clone(),
        language: format!("{} {}", plan.pipeline.language, plan.pipeline.runtime.value),
        tooling: format!(
            "{} ({})",
            plan.pipeline.tooling_account, plan.pipeline.region
        ),
        stages,
        environments: plan
            .environments
            .iter()
            .map(|e| EnvironmentView {
                name: e.name.clone(),
                account: e.account.clone(),
                region: e.region.value.clone(),
                approval: e.approval.value,
                production: e.production,
            })
            .collect(),
        gates: plan
            .gates
            .iter()
            .map(|g| GateView {
                name: g.name.clone(),
                stage: g.stage.as_str(),
                mandatory: g.mandatory.value,
                description: g.description.clone(),
            })
            .collect(),
        disabled_gates: plan.disabled_gates.iter().map(|d| d.name.clone()).collect(),
        secrets: secrets
            .into_iter()
            .map(|(variable, reference)| SecretView {
                variable,
                reference,
            })
            .collect(),
        stacks: plan
            .stacks
            .iter()
            .map(|s| StackView {
                name: s.name.clone(),
                kind: stack_kind(s.kind),
                account: s.account.clone(),
                region: s.region.clone(),
                file: s.file.clone(),
            })
            .collect(),
    }
}

/// Per stack and per other file, what differs between `outputs` and the baseline `old`.
fn changes(
    plan: &Plan,
    outputs: &Outputs,
    old: &BTreeMap<String, Vec<u8>>,
) -> (Vec<StackDiff>, Vec<FileDiff>) {
    let stack_files: Vec<&str> = plan.stacks.iter().map(|s| s.file.as_str()).collect();
    let mut stacks = Vec::new();
    for s in &plan.stacks {
        let new = outputs.get(&s.file).unwrap_or_default();
        stacks.push(stacks::diff(
            &s.name,
            &s.file,
            old.get(&s.file).map(Vec::as_slice),
            Some(new),
        ));
    }
    // Stacks the baseline has and the new bundle does not (an environment removed).
    for (path, bytes) in old {
        if path.starts_with("stacks/") && !stack_files.contains(&path.as_str()) {
            let name = path
                .trim_start_matches("stacks/")
                .trim_end_matches(".json")
                .to_owned();
            stacks.push(stacks::diff(&name, path, Some(bytes), None));
        }
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut files = Vec::new();
    let other = |p: &str| p != PLAN_FILE && !p.starts_with("stacks/") && !p.starts_with("deploy/");
    for (path, bytes) in outputs.iter().filter(|(p, _)| other(p)) {
        match old.get(path) {
            Some(o) if o.as_slice() == bytes => {}
            Some(o) => files.push(FileDiff {
                path: path.to_owned(),
                status: "changed",
                diff: unified_diff(path, &text(o), &text(bytes)),
            }),
            None => files.push(FileDiff {
                path: path.to_owned(),
                status: "added",
                diff: unified_diff(path, "", &text(bytes)),
            }),
        }
    }
    for (path, o) in old.iter().filter(|(p, _)| other(p)) {
        if outputs.get(path).is_none() {
            files.push(FileDiff {
                path: path.clone(),
                status: "removed",
                diff: unified_diff(path, &text(o), ""),
            });
        }
    }
    (stacks, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> SourceFile {
        SourceFile::new(
            "pipeline.yml",
            include_str!("../../examples/pipeline.yml").to_owned(),
        )
    }

    fn inputs() -> Inputs {
        Inputs::load(None, None, None).expect("inputs")
    }

    #[test]
    fn a_valid_manifest_shows_its_stages_approvals_and_secret_references() {
        let r = review(&example(), &inputs(), None);
        assert_eq!(r.verdict, Verdict::Valid, "{:?}", r.problems);
        let p = r.pipeline.expect("pipeline");
        let names: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"Source"));
        let approvals: Vec<&ActionView> = p
            .stages
            .iter()
            .flat_map(|s| &s.actions)
            .filter(|a| a.kind == "approval")
            .collect();
        assert!(
            approvals
                .iter()
                .any(|a| a.environment.as_deref() == Some("prod")),
            "{approvals:?}"
        );
        let deploy = p
            .stages
            .iter()
            .flat_map(|s| &s.actions)
            .find(|a| a.kind == "create-change-set")
            .expect("a deploy action");
        assert!(deploy.account.is_some() && deploy.region.is_some());
        assert!(
            p.secrets
                .iter()
                .any(|s| s.reference == "ssm:/payments/db/password"),
            "{:?}",
            p.secrets
        );
        assert_eq!(r.baseline, BaselineKind::None);
        assert!(r.stacks.is_empty() && r.files.is_empty());
    }

    #[test]
    fn an_invalid_manifest_has_every_problem_at_its_line() {
        let text = include_str!("../../examples/pipeline.yml")
            .replace("approval: true", "approval: false");
        let line = text
            .lines()
            .position(|l| l.contains("approval: false"))
            .expect("line")
            + 1;
        let r = review(&SourceFile::new("pipeline.yml", text), &inputs(), None);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.pipeline.is_none());
        assert!(
            r.problems
                .iter()
                .any(|p| p.line == Some(line) && p.message.contains("approval")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn changes_against_a_baseline_per_stack_and_per_buildspec() {
        let inputs = inputs();
        let old = crate::generate(&example(), &inputs).expect("renders");
        let text = include_str!("../../examples/pipeline.yml")
            .replace("LOG_LEVEL: info", "LOG_LEVEL: debug");
        assert_ne!(text, include_str!("../../examples/pipeline.yml"));
        let base = Baseline::from_outputs(BaselineKind::Deployed, Some("abc".into()), &old.outputs);
        let r = review(&SourceFile::new("pipeline.yml", text), &inputs, Some(&base));
        assert_eq!(r.baseline, BaselineKind::Deployed);
        assert!(!r.unchanged());
        let pipeline = r
            .stacks
            .iter()
            .find(|s| s.file == "stacks/pipeline.json")
            .expect("pipeline stack");
        assert_eq!(pipeline.status, "changed");
        assert!(!pipeline.modified.is_empty(), "{pipeline:?}");
        assert!(
            r.files.iter().any(|f| f.path.starts_with("buildspecs/")
                && f.diff.contains("+")
                && f.diff.contains("debug")),
            "{:?}",
            r.files.iter().map(|f| &f.path).collect::<Vec<_>>()
        );
        // The same manifest: nothing changes.
        let same = review(&example(), &inputs, Some(&base));
        assert!(same.unchanged(), "{:?}", same.files);
    }
}
