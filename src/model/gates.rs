//! `gates`: the org's gates with the manifest's settings — only optional gates can be turned
//! off, a mandatory gate the language does not implement is an error, compute and timeout within
//! the org's limits — and team commands only where a gate runs them.

use std::collections::{BTreeMap, BTreeSet};

use super::enforce::Violation;
use super::{Build, Ctx, DisabledGate, Gate, Origin, Sourced, backticks};
use crate::catalog::{Catalog, Language, TeamSlot};
use crate::manifest::{Compute, RawGateSettings, RawManifest};
use crate::schema::{did_you_mean, join_key};

/// The enabled gates in org order, and the disabled ones. `build` gives the default compute
/// and timeout, and the team commands that some gate must run.
pub(super) fn gates(
    cx: &mut Ctx<'_>,
    raw: &RawManifest,
    catalog: &Catalog,
    language: Option<&Language>,
    build: &Build,
) -> (Vec<Gate>, Vec<DisabledGate>) {
    let org = &cx.org.org;
    let settings = raw.gates.clone().unwrap_or_default();
    check_unknown_gates(cx, &settings);
    let mut gates = Vec::new();
    let mut disabled = Vec::new();
    for (i, g) in org.gates.iter().enumerate() {
        let s = settings.get(&g.name).cloned().unwrap_or_default();
        let path = join_key("gates", &g.name);
        if s.enabled == Some(false) {
            let rule = cx.org.cite(&format!("gates[{i}].mandatory"));
            let enabled = format!("{path}.enabled");
            let allowed = !g.mandatory || cx.violation(Violation {
                subject: format!("gate `{}`", g.name),
                path: &enabled,
                message: format!("gate `{}` is mandatory and cannot be turned off", g.name),
                help: format!(
                    "remove `enabled: false`; the organisation requires this gate (org rule {rule})"
                ),
                enforce_from: enforce_from(g),
            });
            if allowed {
                disabled.push(DisabledGate {
                    name: g.name.clone(),
                    reason: if g.mandatory {
                        "turned off by the manifest, before the gate is enforced or under a waiver"
                    } else {
                        "turned off by the manifest"
                    },
                });
                continue;
            }
        }
        if let Some(lang) = language
            && !lang.gates.contains_key(&g.name)
        {
            if !g.mandatory {
                // An optional gate the language cannot run is left out, visibly (plan.json,
                // `explain`); a mandatory one is an error, never a silent no-op.
                disabled.push(DisabledGate {
                    name: g.name.clone(),
                    reason: "not implemented by the language",
                });
                continue;
            }
            let lname = raw.language.clone().unwrap_or_default();
            let src = catalog.sources.get(&lname).cloned().unwrap_or_default();
            if cx.violation(Violation {
                subject: format!("gate `{}`", g.name),
                path: "language",
                message: format!("language `{lname}` does not implement gate `{}`", g.name),
                help: format!("the platform team must add `gates.{}` to {src} before `{lname}` pipelines can run", g.name),
                enforce_from: enforce_from(g),
            }) {
                disabled.push(DisabledGate {
                    name: g.name.clone(),
                    reason: "not implemented by the language, before the gate is enforced or under a waiver",
                });
                continue;
            }
        }
        let gcompute = compute(cx, &path, s.compute, &build.compute);
        let gtimeout = timeout(cx, &path, s.timeout_minutes, &build.timeout_minutes);
        gates.push(Gate {
            name: g.name.clone(),
            stage: g.stage,
            mandatory: g.mandatory,
            description: g.description.clone(),
            compute: gcompute,
            timeout_minutes: gtimeout,
        });
    }
    if let Some(lang) = language {
        check_team_slots(cx, lang, &gates, build);
    }
    (gates, disabled)
}

/// A gate's `enforce_from` (checked when the policy is loaded).
fn enforce_from(g: &crate::org::GateDef) -> Option<crate::date::Date> {
    g.enforce_from.as_deref().and_then(crate::date::Date::parse)
}

/// Settings may only name the org's gates.
fn check_unknown_gates(cx: &mut Ctx<'_>, settings: &BTreeMap<String, RawGateSettings>) {
    let org_gate_names: Vec<&str> = cx.org.org.gates.iter().map(|g| g.name.as_str()).collect();
    for key in settings.keys() {
        if !org_gate_names.contains(&key.as_str()) {
            let help = match did_you_mean(key, org_gate_names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "the organisation's gates are {}",
                    backticks(&org_gate_names)
                ),
            };
            cx.err_key(
                &format!("gates.{key}"),
                format!("unknown gate `{key}`"),
                help,
            );
        }
    }
}

/// A gate's compute size, within the org's allowed sizes, else the build's.
fn compute(
    cx: &mut Ctx<'_>,
    path: &str,
    compute: Option<Compute>,
    default: &Sourced<Compute>,
) -> Sourced<Compute> {
    let org = &cx.org.org;
    match compute {
        Some(c) => {
            if !org.build.allowed_compute.contains(&c) {
                let rule = cx.org.cite("build.allowed_compute");
                cx.err(
                    &format!("{path}.compute"),
                    format!(
                        "compute `{}` is not allowed by the organisation",
                        c.as_str()
                    ),
                    format!("allowed sizes are listed in org rule {rule}"),
                );
            }
            Sourced::new(c, Origin::Team)
        }
        None => default.clone(),
    }
}

/// A gate's timeout, at most the org's maximum, else the build's.
fn timeout(
    cx: &mut Ctx<'_>,
    path: &str,
    timeout: Option<i64>,
    default: &Sourced<i64>,
) -> Sourced<i64> {
    let org = &cx.org.org;
    match timeout {
        Some(t) => {
            if t > org.build.max_timeout_minutes {
                let rule = cx.org.cite("build.max_timeout_minutes");
                cx.err(
                    &format!("{path}.timeout_minutes"),
                    format!("timeout {t} is longer than the organisation allows"),
                    format!(
                        "use at most {} minutes (org rule {rule})",
                        org.build.max_timeout_minutes
                    ),
                );
            }
            Sourced::new(t, Origin::Team)
        }
        None => default.clone(),
    }
}

/// Team commands need an enabled gate of the language that runs them.
fn check_team_slots(cx: &mut Ctx<'_>, lang: &Language, gates: &[Gate], build: &Build) {
    let slots: BTreeSet<TeamSlot> = gates
        .iter()
        .filter_map(|g| lang.gates.get(&g.name))
        .flat_map(|gi| gi.steps.iter().filter_map(|s| s.team))
        .collect();
    if !build.commands.is_empty() && !slots.contains(&TeamSlot::BuildCommands) {
        cx.err("build.commands", "no enabled gate of this language runs team build commands", "remove `build.commands`, or ask the platform team to add a `team: build_commands` step");
    }
    if build.test_commands.is_some() && !slots.contains(&TeamSlot::TestCommands) {
        cx.err("build.test_commands", "no enabled gate of this language runs team test commands", "remove `build.test_commands`, or ask the platform team to add a `team: test_commands` step");
    }
}
