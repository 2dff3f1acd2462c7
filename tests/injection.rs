//! Property test: no manifest value can change the structure of a generated file.
//!
//! Arbitrary strings (biased towards YAML, JSON and shell metacharacters, line separators and
//! non-ASCII) go into every free-text field of a manifest; every output file is parsed back and
//! must have exactly the structure of the same manifest rendered with harmless placeholders,
//! each value sitting, intact, in its own slot.

use pipeforge::catalog::Catalog;
use pipeforge::error::Error;
use pipeforge::probe::{
    SLOTS, compare_outputs, fit_to_slot, injection_probe, placeholder, render_probe, substitutions,
};
use pipeforge::render::Templates;
use proptest::prelude::*;

fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        5 => prop::sample::select(vec![
            '"', '\\', '\'', '\n', ':', '#', '-', '[', ']', '{', '}', '&', '*', '!', '|', '>', '%', '@', '`', '$', ' ', ',', '?', '=',
            '\u{2028}', '\u{2029}', '\u{85}', '\u{feff}', '\t', '\r', '\u{7f}', '\u{0}',
        ]),
        3 => prop::char::range('a', 'z'),
        1 => any::<char>(),
    ]
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 1..40).prop_map(|v| v.into_iter().collect())
}

/// Control characters other than newline and tab are rejected by validation; keep the rest.
fn acceptable(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    if kept.trim().is_empty() {
        "x".to_owned()
    } else {
        kept
    }
}

/// Generated manifests (each tried with every language) that validation must accept: a
/// validator that rejected nearly everything would make the property vacuous.
const CASES: u32 = 48;
const MIN_ACCEPTED: usize = CASES as usize / 4;

#[test]
fn manifest_values_never_change_output_structure() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let org = pipeforge::org::embedded().expect("org");
    let catalog = Catalog::embedded().expect("catalog");
    let templates = Templates::embedded().expect("templates");
    let benign: Vec<String> = (0..SLOTS)
        .map(|i| fit_to_slot(i, &placeholder(i)))
        .collect();
    let accepted = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(nasty_string(), SLOTS), |values| {
            let hostile: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| fit_to_slot(i, &acceptable(v)))
                .collect();
            let mut all_accepted = true;
            for language in catalog.names() {
                let a = render_probe(language, &benign, &org, catalog, templates)
                    .expect("benign render");
                match render_probe(language, &hostile, &org, catalog, templates) {
                    Ok(b) => {
                        let subst = substitutions(&benign, &hostile);
                        compare_outputs(&a, &b, &subst).map_err(|e| {
                            TestCaseError::fail(format!("language {language}: {e}"))
                        })?;
                    }
                    // Rejected by validation (e.g. a value that looks like `|| true`): safe by
                    // definition.
                    Err(Error::Invalid(_)) => all_accepted = false,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "language {language}: unexpected error {e}"
                        )));
                    }
                }
            }
            if all_accepted {
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        accepted.get() >= MIN_ACCEPTED,
        "only {} of {CASES} generated manifests were accepted in every language (floor {MIN_ACCEPTED}): the property proves little",
        accepted.get()
    );
}

#[test]
fn the_fixed_hostile_corpus_is_inert_with_the_embedded_templates() {
    let catalog = Catalog::embedded().expect("catalog");
    let templates = Templates::embedded().expect("templates");
    injection_probe(catalog, templates).expect("probe passes");
}

#[test]
fn the_probe_catches_an_unescaped_template() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates/buildspec/gate.yml.tera"
    ))
    .expect("template");
    std::fs::create_dir_all(dir.path().join("buildspec")).expect("dir");
    std::fs::write(
        dir.path().join("buildspec/gate.yml.tera"),
        embedded.replace("{{ v.value }}", "{{ v.value | safe }}"),
    )
    .expect("write");
    let templates = Templates::load(Some(dir.path())).expect("templates");
    let catalog = Catalog::embedded().expect("catalog");
    let err = injection_probe(catalog, &templates).expect_err("unsafe template must be caught");
    let msg = err.to_string();
    // Caught either by the probe (structure changed) or earlier, by the checks every rendered
    // file goes through (invalid YAML, a variable whose value is not the manifest's).
    assert!(
        msg.contains("changed the structure") || msg.contains("failed a check"),
        "{msg}"
    );
}

#[test]
fn the_safe_slots_reach_the_iam_policies_and_refuse_raw_hostile_names() {
    use pipeforge::probe::{HOSTILE, SAFE_SLOTS, raw_for_slot};
    let org = pipeforge::org::embedded().expect("org");
    let catalog = Catalog::embedded().expect("catalog");
    let templates = Templates::embedded().expect("templates");
    let benign: Vec<String> = (0..SLOTS)
        .map(|i| fit_to_slot(i, &placeholder(i)))
        .collect();
    let out = render_probe("python", &benign, &org, catalog, templates).expect("benign render");
    let stack = out.text("stacks/pipeline.json").expect("pipeline stack");
    // The slots are printed with `| safe` inside `Fn::Sub` ARNs of the gates' policies.
    assert!(stack.contains(":secret:pfprobe11q-??????\""), "{stack}");
    assert!(stack.contains(":parameter/pfprobe12q\""), "{stack}");
    // Today's validation refuses every hostile string as it is in those slots; the probe
    // renders whatever a loosened validation would let through and compares its structure.
    for slot in SAFE_SLOTS {
        for h in HOSTILE {
            let mut values = benign.clone();
            values[slot] = raw_for_slot(slot, h);
            match render_probe("python", &values, &org, catalog, templates) {
                Err(Error::Invalid(_)) => {}
                other => panic!("slot {slot}, {h:?}: {:?}", other.map(|_| "rendered")),
            }
        }
    }
}
