//! The gates: each enabled gate the language implements becomes one CodeBuild project with its
//! steps in buildspec phases, its variables and secrets, report groups and artifacts.

use super::{EnvVar, GatePlan, PhasePlan, ReportPlan, SecretVar, StepPlan};
use crate::catalog::{GateImpl, Language, Phase, TeamSlot};
use crate::manifest::ArtifactKind;
use crate::model::{Gate, Model, Origin, Sourced};
use crate::org::{OrgPolicy, Stage};

/// One plan per enabled gate that the language implements, in org order.
pub(super) fn gates(
    model: &Model,
    org: &OrgPolicy,
    lang: &Language,
    pipeline_name: &str,
    tooling_account: &str,
) -> Vec<GatePlan> {
    let mut gates = Vec::new();
    for g in &model.gates {
        let Some(imp) = lang.gates.get(&g.name) else {
            continue;
        };
        let (phases, has_team_slot, privileged) = phases(model, lang, imp);
        let (env, secrets) = variables(model, org, lang, &g.name, has_team_slot, tooling_account);
        gates.push(GatePlan {
            name: g.name.clone(),
            stage: g.stage,
            mandatory: Sourced::new(g.mandatory, Origin::Org),
            description: g.description.clone(),
            project: format!("{pipeline_name}-{}", g.name),
            buildspec: format!("buildspecs/{}.yml", g.name),
            image: Sourced::new(lang.image.clone(), Origin::Language),
            compute: g.compute.clone(),
            timeout_minutes: g.timeout_minutes.clone(),
            runtime_key: lang.runtime.name.clone(),
            runtime_version: model.runtime.value.clone(),
            env,
            secrets,
            phases,
            reports: reports(imp),
            cache: lang.cache.clone(),
            artifacts: artifacts(model, g, imp),
            exports: imp.exports.clone(),
            privileged,
        });
    }
    gates
}

/// The steps of a gate by phase (`install` always present), whether one of them is a team
/// slot, and whether one needs a Docker daemon.
fn phases(model: &Model, lang: &Language, imp: &GateImpl) -> (Vec<PhasePlan>, bool, bool) {
    let mut phases: Vec<PhasePlan> = Vec::new();
    let mut has_team_slot = false;
    let mut privileged = false;
    if !lang.install.is_empty() {
        phases.push(PhasePlan {
            phase: Phase::Install,
            steps: vec![StepPlan {
                name: "setup".to_owned(),
                from: Origin::Language,
                enforced: true,
                commands: lang.install.clone(),
            }],
        });
    }
    for s in &imp.steps {
        if !s.artifact.is_empty() && !s.artifact.contains(&model.artifact.kind.value) {
            continue;
        }
        let catalog_origin = if s.shared {
            Origin::Org
        } else {
            Origin::Language
        };
        let (commands, from, enforced) = match s.team {
            None => (s.commands.clone(), catalog_origin, true),
            Some(TeamSlot::TestCommands) => {
                has_team_slot = true;
                match &model.build.test_commands {
                    Some(tc) => (tc.clone(), Origin::Team, false),
                    None => (s.commands.clone(), catalog_origin, false),
                }
            }
            Some(TeamSlot::BuildCommands) => {
                has_team_slot = true;
                let mut c = s.commands.clone();
                c.extend(model.build.commands.iter().cloned());
                let from = if model.build.commands.is_empty() {
                    catalog_origin
                } else {
                    Origin::Team
                };
                (c, from, false)
            }
        };
        if commands.is_empty() {
            continue;
        }
        privileged |= s.privileged;
        let step = StepPlan {
            name: s.name.clone(),
            from,
            enforced,
            commands,
        };
        match phases.iter_mut().find(|p| p.phase == s.phase) {
            Some(p) => p.steps.push(step),
            None => phases.push(PhasePlan {
                phase: s.phase,
                steps: vec![step],
            }),
        }
    }
    if !phases.iter().any(|p| p.phase == Phase::Install) {
        phases.push(PhasePlan {
            phase: Phase::Install,
            steps: Vec::new(),
        });
    }
    phases.sort_by_key(|p| p.phase);
    (phases, has_team_slot, privileged)
}

/// The variables every gate gets from pipeforge, sorted by name.
fn common_env(model: &Model, org: &OrgPolicy, gate: &str, tooling_account: &str) -> Vec<EnvVar> {
    let d = |name: &str, value: String, from| EnvVar {
        name: name.to_owned(),
        value,
        from,
    };
    let mut v = vec![
        d("PF_PIPELINE", model.name.clone(), Origin::Team),
        d("PF_TEAM", model.team.clone(), Origin::Team),
        d("PF_GATE", gate.to_owned(), Origin::Org),
        d("PF_LANGUAGE", model.language.clone(), Origin::Team),
        d(
            "PF_RUNTIME",
            model.runtime.value.clone(),
            model.runtime.from,
        ),
        d(
            "PF_COVERAGE_MIN",
            model.coverage_min.value.to_string(),
            model.coverage_min.from,
        ),
        d(
            "PF_ARTIFACT_KIND",
            model.artifact.kind.value.as_str().to_owned(),
            model.artifact.kind.from,
        ),
        d(
            "PF_DEPLOY_TEMPLATE",
            model.deploy.template.clone(),
            Origin::Team,
        ),
        d(
            "PF_VERSION_INITIAL",
            model.versioning.initial.value.clone(),
            model.versioning.initial.from,
        ),
        d(
            "PF_VERSION_PRERELEASE",
            model.versioning.prerelease.value.clone(),
            model.versioning.prerelease.from,
        ),
        d(
            "PF_PIPEFORGE_URI",
            org.org.tools.pipeforge.clone(),
            Origin::Org,
        ),
        d(
            "PF_TOOLING_ACCOUNT",
            tooling_account.to_owned(),
            Origin::Org,
        ),
        d(
            "PF_RELEASE_BRANCHES",
            org.org.versioning.release_branches.join(","),
            Origin::Org,
        ),
        d(
            "PF_CODEARTIFACT_DOMAIN",
            org.org.artifacts.codeartifact_domain.clone(),
            Origin::Org,
        ),
    ];
    if let Some(r) = &model.artifact.repository {
        v.push(d("PF_ARTIFACT_REPOSITORY", r.value.clone(), r.from));
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A gate's plain variables and secrets.
fn variables(
    model: &Model,
    org: &OrgPolicy,
    lang: &Language,
    gate: &str,
    has_team_slot: bool,
    tooling_account: &str,
) -> (Vec<EnvVar>, Vec<SecretVar>) {
    // Variables: pipeforge's, then the language's, then the team's (only in gates that run
    // team commands, where a team variable or secret replaces a language variable of the
    // same name).
    let mut env = common_env(model, org, gate, tooling_account);
    for (k, v) in &lang.env {
        let team_sets = model.build.env.contains_key(k) || model.build.secrets.contains_key(k);
        if has_team_slot && team_sets {
            continue;
        }
        env.push(EnvVar {
            name: k.clone(),
            value: v.clone(),
            from: Origin::Language,
        });
    }
    let mut secrets = Vec::new();
    if has_team_slot {
        for (k, v) in &model.build.env {
            env.push(EnvVar {
                name: k.clone(),
                value: v.clone(),
                from: Origin::Team,
            });
        }
        for (k, s) in &model.build.secrets {
            secrets.push(SecretVar {
                name: k.clone(),
                secret: s.clone(),
            });
        }
    }
    env.sort_by(|a, b| a.name.cmp(&b.name));
    (env, secrets)
}

/// A gate's report groups.
fn reports(imp: &GateImpl) -> Vec<ReportPlan> {
    imp.reports
        .iter()
        .map(|(name, r)| ReportPlan {
            name: name.clone(),
            files: r.files.clone(),
            base_directory: r.base_directory.clone(),
            format: r.format.as_str().to_owned(),
            kind: if r.format.is_coverage() {
                "coverage"
            } else {
                "test"
            },
        })
        .collect()
}

/// The files a build-stage gate passes on: the package, the application's template, the
/// language's outputs (each once).
fn artifacts(model: &Model, g: &Gate, imp: &GateImpl) -> Vec<String> {
    if g.stage == Stage::Build {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| {
            if !a.iter().any(|x| x == s) {
                a.push(s.to_owned());
            }
        };
        if model.artifact.kind.value != ArtifactKind::None {
            model.artifact.paths.value.iter().for_each(|p| push(p));
        }
        push(&model.deploy.template);
        imp.outputs.iter().for_each(|p| push(p));
        a
    } else {
        Vec::new()
    }
}
