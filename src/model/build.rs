//! `build`: team commands (no control characters, nothing the org forbids), plain variables
//! (no reserved prefix), secrets, compute size and timeout within the org's limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pattern::Pattern;

use super::enforce::Violation;
use super::{Build, Ctx, Origin, Sourced, backticks, has_control_chars, secrets};
use crate::manifest::{Compute, EnvValue, RESERVED_ENV_PREFIXES, RawManifest};
use crate::schema::join_key;

/// The build settings, with the org's defaults.
pub(super) fn build(cx: &mut Ctx<'_>, raw: &RawManifest) -> Build {
    let rb = raw.build.clone().unwrap_or_default();
    let commands: Vec<String> = rb
        .commands
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.0)
        .collect();
    let test_commands: Option<Vec<String>> = rb
        .test_commands
        .map(|v| v.into_iter().map(|c| c.0).collect());
    let forbidden = forbidden(cx);
    check_commands(cx, "commands", &commands, &forbidden);
    if let Some(tc) = &test_commands {
        check_commands(cx, "test_commands", tc, &forbidden);
    }
    let env = env(cx, rb.env);
    let secrets = secrets::secrets(cx, rb.secrets, &env);
    let compute = compute(cx, rb.compute);
    let timeout_minutes = timeout(cx, rb.timeout_minutes);
    Build {
        commands,
        test_commands,
        env,
        secrets,
        compute,
        timeout_minutes,
    }
}

/// The org's forbidden command patterns, with their index in `commands.forbidden`.
fn forbidden(cx: &Ctx<'_>) -> Vec<(usize, Arc<Pattern>)> {
    cx.org
        .org
        .commands
        .forbidden
        .iter()
        .enumerate()
        .filter_map(|(i, f)| crate::pattern::cached(&f.pattern).ok().map(|r| (i, r)))
        .collect()
}

/// Reports the commands of `build.<field>` that are empty, hold control characters, or match a
/// forbidden pattern.
fn check_commands(
    cx: &mut Ctx<'_>,
    field: &str,
    cmds: &[String],
    forbidden: &[(usize, Arc<Pattern>)],
) {
    for (i, c) in cmds.iter().enumerate() {
        let path = format!("build.{field}[{i}]");
        if has_control_chars(c) {
            cx.err(
                &path,
                "command contains a control character",
                "remove control characters; use `\\n` only to separate lines of a script",
            );
            continue;
        }
        if c.trim().is_empty() {
            cx.err(&path, "command is empty", "remove the empty item");
            continue;
        }
        for (fi, re) in forbidden {
            if crate::org::is_match_remembered(re, c) {
                let rule = cx.org.cite(&format!("commands.forbidden[{fi}]"));
                let f = &cx.org.org.commands.forbidden[*fi];
                let reason = f.reason.clone();
                // A rule without an id cannot be waived; it may still be dated.
                let subject = match &f.id {
                    Some(id) => format!("rule `{id}`"),
                    None => format!("rule `commands.forbidden[{fi}]`"),
                };
                let enforce_from = f.enforce_from.as_deref().and_then(crate::date::Date::parse);
                if cx.violation(Violation {
                    subject,
                    path: &path,
                    message: format!("command would weaken a gate: {reason}"),
                    help: format!("let the command fail on its own; forbidden by org rule {rule}"),
                    enforce_from,
                }) {
                    cx.relaxed_commands.insert(*fi);
                    continue;
                }
                break;
            }
        }
    }
}

/// `build.env`, without reserved prefixes or control characters.
fn env(cx: &mut Ctx<'_>, raw_env: Option<BTreeMap<String, EnvValue>>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (k, v) in raw_env.unwrap_or_default() {
        let path = join_key("build.env", &k);
        if let Some(p) = RESERVED_ENV_PREFIXES.iter().find(|p| k.starts_with(*p)) {
            cx.err_key(&path, format!("`{k}` uses the reserved prefix `{p}`"), "rename the variable; `CODEBUILD_`, `AWS_` and `PF_` belong to CodeBuild, AWS and pipeforge");
            continue;
        }
        if has_control_chars(&v.0) {
            cx.err(
                &path,
                "value contains a control character",
                "remove control characters from the value",
            );
            continue;
        }
        env.insert(k, v.0);
    }
    env
}

/// `build.compute`, within the org's allowed sizes, else the org's default.
fn compute(cx: &mut Ctx<'_>, compute: Option<Compute>) -> Sourced<Compute> {
    let org = &cx.org.org;
    match compute {
        Some(c) => {
            if !org.build.allowed_compute.contains(&c) {
                let rule = cx.org.cite("build.allowed_compute");
                cx.err(
                    "build.compute",
                    format!(
                        "compute `{}` is not allowed by the organisation",
                        c.as_str()
                    ),
                    format!(
                        "allowed sizes are {} (org rule {rule})",
                        backticks(
                            &org.build
                                .allowed_compute
                                .iter()
                                .map(|c| c.as_str())
                                .collect::<Vec<_>>()
                        )
                    ),
                );
            }
            Sourced::new(c, Origin::Team)
        }
        None => Sourced::new(org.build.default_compute, Origin::Org),
    }
}

/// `build.timeout_minutes`, at most the org's maximum, else the org's default.
fn timeout(cx: &mut Ctx<'_>, timeout: Option<i64>) -> Sourced<i64> {
    let org = &cx.org.org;
    match timeout {
        Some(t) => {
            if t > org.build.max_timeout_minutes {
                let rule = cx.org.cite("build.max_timeout_minutes");
                cx.err(
                    "build.timeout_minutes",
                    format!("timeout {t} is longer than the organisation allows"),
                    format!(
                        "use at most {} minutes (org rule {rule})",
                        org.build.max_timeout_minutes
                    ),
                );
            }
            Sourced::new(t, Origin::Team)
        }
        None => Sourced::new(org.build.default_timeout_minutes, Origin::Org),
    }
}
