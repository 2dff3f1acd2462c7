//! Tests of the buildspec checks: every way an edited template (or a rendered file) could
//! weaken a gate is refused: a gate command dropped, reordered or moved, a phase that does not
//! abort, a forbidden command, a gate command in `finally`, variables and secrets that are not
//! the manifest's, reports and artifacts missing.

use super::*;
use crate::catalog::Catalog;
use crate::render::Templates;

const EXAMPLE: &str = include_str!("../../../examples/pipeline.yml");

fn bundle_with(templates: &Templates) -> Result<crate::Bundle> {
    manifest_bundle_with(EXAMPLE, templates)
}

fn manifest_bundle_with(manifest: &str, templates: &Templates) -> Result<crate::Bundle> {
    crate::generate_with(
        &SourceFile::new("pipeline.yml", manifest),
        &crate::org::embedded().expect("org"),
        Catalog::embedded().expect("catalog"),
        templates,
    )
}

fn example() -> crate::Bundle {
    bundle_with(Templates::embedded().expect("templates")).expect("the example renders")
}

fn embedded_source() -> &'static str {
    crate::assets::get("templates/buildspec/gate.yml.tera").expect("embedded template")
}

/// Checks gate `gate`'s rendered buildspec after `edit`, against the embedded template.
fn check_edited(gate: &str, edit: impl FnOnce(&str) -> String) -> Result<()> {
    check_edited_with(gate, embedded_source(), edit)
}

fn check_edited_with(gate: &str, source: &str, edit: impl FnOnce(&str) -> String) -> Result<()> {
    check_edited_in(EXAMPLE, gate, source, edit)
}

fn check_edited_in(
    manifest: &str,
    gate: &str,
    source: &str,
    edit: impl FnOnce(&str) -> String,
) -> Result<()> {
    let b = manifest_bundle_with(manifest, Templates::embedded().expect("templates"))
        .expect("the manifest renders");
    let g = b.plan.gate(gate).expect("gate");
    let text = b.outputs.text(&g.buildspec).expect("buildspec");
    let edited = edit(text);
    assert_ne!(edited, text, "the edit did not apply; update the test");
    let org = crate::org::embedded().expect("org");
    check(&b.plan, g, &edited, source, &org)
}

/// The check's message for an edit that must be refused.
fn refused(gate: &str, edit: impl FnOnce(&str) -> String) -> String {
    match check_edited(gate, edit) {
        Err(Error::OutputCheck { message, file, .. }) => {
            assert_eq!(file, format!("buildspecs/{gate}.yml"));
            message
        }
        other => panic!("the edit must fail the check, got {other:?}"),
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in\n{text}");
    text.replacen(from, to, 1)
}

#[test]
fn every_rendered_buildspec_of_the_example_passes_unedited() {
    let b = example();
    let org = crate::org::embedded().expect("org");
    for g in &b.plan.gates {
        let text = b.outputs.text(&g.buildspec).expect("buildspec");
        check(&b.plan, g, text, embedded_source(), &org).expect("unedited passes");
    }
    assert!(b.plan.gates.len() >= 6);
}

#[test]
fn a_dropped_mandatory_or_team_command_is_refused() {
    let m = refused("test", |t| {
        replace_once(t, "      - \"mkdir -p reports\"\n", "")
    });
    assert!(m.starts_with("mandatory command"), "{m}");
    assert!(m.contains("step `reports-dir`"), "{m}");
    assert!(m.contains("phases.pre_build.commands"), "{m}");
    let m = refused("test", |t| {
        t.lines()
            .filter(|l| !l.contains("pytest -q"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    assert!(m.starts_with("team command"), "{m}");
    assert!(m.contains("step `unit-tests`"), "{m}");
}

#[test]
fn reordered_gate_commands_are_refused() {
    let m = refused("build", |t| {
        let a = "      - \"python -m build --outdir dist\"\n";
        let b = "      - \"twine check dist/*\"\n";
        replace_once(t, &format!("{a}{b}"), &format!("{b}{a}"))
    });
    assert!(m.contains("(or out of order)"), "{m}");
    assert!(m.contains("twine check"), "{m}");
}

#[test]
fn a_gate_command_moved_to_another_phase_is_refused() {
    let m = refused("test", |t| {
        let t = replace_once(t, "      - \"mkdir -p reports\"\n", "");
        replace_once(
            &t,
            "      # unit-tests (team)\n",
            "      # unit-tests (team)\n      - \"mkdir -p reports\"\n",
        )
    });
    assert!(m.contains("phases.pre_build.commands"), "{m}");
}

#[test]
fn a_gate_phase_without_abort_is_refused() {
    let m = refused("test", |t| {
        replace_once(t, "  pre_build:\n    on-failure: ABORT\n", "  pre_build:\n")
    });
    assert_eq!(
        m,
        "phase `pre_build` runs gate commands but does not set `on-failure: ABORT`"
    );
    let m = refused("test", |t| {
        replace_once(
            t,
            "  build:\n    on-failure: ABORT\n",
            "  build:\n    on-failure: CONTINUE\n",
        )
    });
    assert!(m.contains("`on-failure: CONTINUE`"), "{m}");
}

#[test]
fn a_forbidden_command_is_refused_unless_the_template_placed_it() {
    let at = "  post_build:\n    on-failure: ABORT\n";
    for (key, command, insert) in [
        (
            "commands",
            "pytest -q || true",
            "    commands:\n      - \"pytest -q || true\"\n",
        ),
        ("finally", "exit 0", "    finally:\n      - \"exit 0\"\n"),
    ] {
        let edit = |t: &str| {
            let to = format!("{at}{insert}");
            let t = replace_once(t, at, &to);
            if key == "commands" {
                // One `commands` key per phase.
                t.replacen(&format!("{to}    commands:\n"), &to, 1)
            } else {
                t
            }
        };
        let m = refused("test", edit);
        assert!(m.contains("would weaken the gate"), "{key}: {m}");
        assert!(
            m.contains(&format!("phases.post_build.{key}")),
            "{key}: {m}"
        );
        // The same command written by the template itself is the org's decision.
        let source = format!("{}\n# {command}\n", embedded_source());
        check_edited_with("test", &source, edit).expect("template-placed command passes");
    }
}

#[test]
fn a_gate_command_in_finally_is_refused() {
    let m = refused("test", |t| {
        replace_once(
            t,
            "  pre_build:\n    on-failure: ABORT\n",
            "  pre_build:\n    on-failure: ABORT\n    finally:\n      - \"mkdir -p reports\"\n",
        )
    });
    assert!(
        m.starts_with("gate command \"mkdir -p reports\" runs in `finally`"),
        "{m}"
    );
    // A template that writes the command in `finally` itself may (cleanup steps).
    let source = format!("{}\n# mkdir -p reports\n", embedded_source());
    check_edited_with("test", &source, |t| {
        replace_once(
            t,
            "  pre_build:\n    on-failure: ABORT\n",
            "  pre_build:\n    on-failure: ABORT\n    finally:\n      - \"mkdir -p reports\"\n",
        )
    })
    .expect("template-placed finally passes");
}

#[test]
fn variables_and_secrets_must_be_the_manifests() {
    let m = refused("test", |t| {
        replace_once(t, "LOG_LEVEL: \"info\"", "LOG_LEVEL: \"debug\"")
    });
    assert!(
        m.contains("`env.variables.LOG_LEVEL` must be \"info\""),
        "{m}"
    );
    let m = refused("test", |t| {
        replace_once(
            t,
            "    LOG_LEVEL: \"info\"\n",
            "    LOG_LEVEL: \"info\"\n    DB_PASSWORD: \"hunter2\"\n",
        )
    });
    assert_eq!(m, "secret `DB_PASSWORD` is also a plain variable");
    let m = refused("test", |t| {
        replace_once(
            t,
            "\"/payments/db/password\"",
            "\"/other-team/db/password\"",
        )
    });
    assert_eq!(
        m,
        "`env.parameter-store` does not match the manifest's secrets"
    );
    let m = refused("test", |t| {
        replace_once(
            t,
            "    API_KEY: \"payments/api:key\"\n",
            "    API_KEY: \"payments/api:key\"\n    EXTRA: \"other/secret\"\n",
        )
    });
    assert_eq!(
        m,
        "`env.secrets-manager` does not match the manifest's secrets"
    );
    let m = refused("test", |t| {
        replace_once(
            t,
            "  secrets-manager:\n    API_KEY: \"payments/api:key\"\n",
            "",
        )
    });
    assert_eq!(
        m,
        "`env.secrets-manager` does not match the manifest's secrets"
    );
    let m = refused("build", |t| {
        replace_once(t, "  exported-variables:\n    - VERSION\n", "")
    });
    assert_eq!(
        m,
        "`env.exported-variables` does not match the gate's exports"
    );
}

#[test]
fn runtime_reports_and_artifacts_must_be_the_plans() {
    let m = refused("test", |t| {
        replace_once(t, "python: \"3.12\"", "python: \"3.11\"")
    });
    assert!(m.contains("runtime-versions.python` must be `3.12`"), "{m}");
    let m = refused("test", |t| {
        replace_once(t, "file-format: JUNITXML", "file-format: NUNITXML")
    });
    assert!(m.starts_with("report `junit`"), "{m}");
    let m = refused("test", |t| {
        replace_once(t, "      - \"junit.xml\"\n", "      - \"other.xml\"\n")
    });
    assert!(m.starts_with("report `junit`"), "{m}");
    let m = refused("build", |t| replace_once(t, "    - \"sbom/**/*\"\n", ""));
    assert!(m.starts_with("artifact file \"sbom/**/*\""), "{m}");
}

#[test]
fn the_file_shape_is_checked() {
    let cases: [(&str, &str, &str); 5] = [
        ("# generated by", "# made by", "pipeforge header"),
        ("version: 0.2\n", "version: 0.3\n", "`version` must be 0.2"),
        (
            "\nphases:\n",
            "\nstages:\n",
            "unknown top-level key `stages`",
        ),
        (
            "  pre_build:\n",
            "  prebuild:\n",
            "unknown phase `prebuild`",
        ),
        (
            "  pre_build:\n    on-failure: ABORT\n",
            "  pre_build:\n    on-failure: ABORT\n    timeout: 5\n",
            "unknown key `timeout` in phase `pre_build`",
        ),
    ];
    for (from, to, want) in cases {
        let m = refused("test", |t| replace_once(t, from, to));
        assert!(m.contains(want), "{from:?}: {m}");
    }
}

/// A template set whose buildspec template is the embedded one edited.
fn with_template(edit: impl FnOnce(&str) -> String) -> Result<crate::Bundle> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = embedded_source();
    let edited = edit(src);
    assert_ne!(edited, src, "the edit did not apply; update the test");
    std::fs::create_dir_all(dir.path().join("buildspec")).expect("mkdir");
    std::fs::write(dir.path().join("buildspec/gate.yml.tera"), edited).expect("write");
    bundle_with(&Templates::load(Some(dir.path())).expect("templates"))
}

fn template_refused(edit: impl FnOnce(&str) -> String) -> String {
    match with_template(edit) {
        Err(Error::OutputCheck { message, .. }) => message,
        other => panic!(
            "the template must be refused, got {:?}",
            other.map(|_| "a rendered bundle")
        ),
    }
}

const COMMAND_LOOP: &str = "{%- for c in step.commands %}\n      - {{ c }}\n{%- endfor %}";

#[test]
fn override_templates_that_drop_reorder_or_move_gate_commands_are_refused() {
    // Drops the last command of every org and language step.
    let m = template_refused(|s| {
        s.replace(
            COMMAND_LOOP,
            "{%- for c in step.commands %}{%- if not loop.last or step.origin == \"team\" %}\n      - {{ c }}{% endif %}\n{%- endfor %}",
        )
    });
    assert!(m.starts_with("mandatory command"), "{m}");
    // Runs every step's commands backwards.
    let m = template_refused(|s| {
        s.replace(
            COMMAND_LOOP,
            "{%- for c in step.commands | reverse %}\n      - {{ c }}\n{%- endfor %}",
        )
    });
    assert!(m.contains("(or out of order)"), "{m}");
    // Moves the gate's commands into `finally`, where a failure does not fail the phase.
    let m = template_refused(|s| {
        s.replace("    commands:\n{%- for step", "    finally:\n{%- for step")
    });
    assert!(m.contains("is missing from `phases."), "{m}");
    // Keeps them, and runs them again in `finally`.
    let m = template_refused(|s| {
        s.replace(
            "{%- endfor %}\n{%- endif %}\n{%- endfor %}\n{%- if reports %}",
            "{%- endfor %}\n    finally:\n{%- for step in phase.steps %}{%- for c in step.commands %}\n      - {{ c }}\n{%- endfor %}{%- endfor %}\n{%- endif %}\n{%- endfor %}\n{%- if reports %}",
        )
    });
    assert!(m.contains("runs in `finally`"), "{m}");
    // Drops `on-failure: ABORT`.
    let m = template_refused(|s| s.replace("    on-failure: ABORT\n", ""));
    assert!(m.contains("does not set `on-failure: ABORT`"), "{m}");
}

#[test]
fn override_templates_that_change_variables_or_secrets_are_refused() {
    let m = template_refused(|s| {
        s.replace(
            "{{ s.name | safe }}: {{ s.value }}",
            "{{ s.name | safe }}: \"/other/team\"",
        )
    });
    assert!(m.contains("does not match the manifest's secrets"), "{m}");
    let m = template_refused(|s| {
        s.replace(
            "  variables:\n",
            "  variables:\n{%- for s in parameter_store %}\n    {{ s.name | safe }}: \"inline\"\n{%- endfor %}\n",
        )
    });
    assert!(m.contains("is also a plain variable"), "{m}");
    let m = template_refused(|s| {
        s.replace(
            "    {{ v.name | safe }}: {{ v.value }}\n",
            "    {{ v.name | safe }}: \"x\"\n",
        )
    });
    assert!(m.contains("`env.variables."), "{m}");
}

#[test]
fn a_repeated_command_must_be_there_as_often_as_the_gate_runs_it() {
    let twice = EXAMPLE.replace(
        "commands: [\"make build\"]",
        "commands: [\"make build\", \"make build\"]",
    );
    assert_ne!(twice, EXAMPLE);
    let r = check_edited_in(&twice, "build", embedded_source(), |t| {
        t.replacen("      - \"make build\"\n", "", 1)
    });
    match r {
        Err(Error::OutputCheck { message, .. }) => {
            assert!(
                message.starts_with("team command \"make build\""),
                "{message}"
            );
        }
        other => panic!("one of the two runs dropped must be refused, got {other:?}"),
    }
}

#[test]
fn what_the_checks_allow_is_pinned_too() {
    // CodeBuild aborts by default; `on-failure: ABORT` is required where gate commands run, and
    // a phase of team commands only may leave it out.
    check_edited("test", |t| {
        replace_once(t, "  build:\n    on-failure: ABORT\n", "  build:\n")
    })
    .expect("a team-only phase without on-failure");
    // A cleanup command in `finally` that is neither a gate command nor forbidden.
    check_edited("test", |t| {
        replace_once(
            t,
            "  post_build:\n    on-failure: ABORT\n",
            "  post_build:\n    on-failure: ABORT\n    finally:\n      - \"rm -rf /tmp/scratch\"\n",
        )
    })
    .expect("a harmless finally command");
}
