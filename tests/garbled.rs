//! Property test: garbled inputs get an error, never a panic.
//!
//! Each case takes a real input (the example manifest or one of `tests/invalid/`, the example
//! org policy, an embedded language file, an embedded template) and garbles it the way edits
//! and attacks do: tokens of YAML, JSON, Tera and the shell inserted anywhere, byte ranges
//! deleted or copied elsewhere, lines re-indented, values replaced. Then the whole path runs:
//! the input is read from a file, checked, and (when it is accepted) the example or garbled
//! manifest is validated, planned, rendered and explained.
//!
//! The properties: nothing panics (proptest reports a panic with the smallest input that
//! causes it); an error has a message; an accepted input renders the same bytes twice and
//! explains. `tests/injection.rs` checks what accepted values can do to the outputs.

use std::cell::Cell;
use std::path::Path;

use pipeforge::capacity::Footprint;
use pipeforge::catalog::Catalog;
use pipeforge::error::SourceFile;
use pipeforge::render::Templates;
use pipeforge::{Inputs, org};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// What is inserted: fragments of every syntax that meets the inputs on their way.
const TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "${",
    "$(",
    "\"",
    "'",
    "\\",
    "\n",
    "\r",
    "\t",
    "\u{0}",
    "\u{202e}",
    "\u{2028}",
    "\u{feff}",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!Ref ",
    "!Sub ",
    "!!python/object ",
    "- ",
    ": ",
    "#",
    "\n---\n",
    "\n...\n",
    "[",
    "]",
    "{",
    "}",
    "|",
    ">",
    "-1",
    "99999999999999999999",
    "1e999",
    ".nan",
    "null",
    "~",
    "yes",
    "0x1F",
    "../",
    "*",
    "**",
    "prod",
    "production",
    "123456789012",
    "`",
    "|-\n",
    "? ",
    "%TAG ! x\n",
    "&b [*a, *a, *a, *a, *a, *a, *a, *a]",
    "\u{1F600}",
    "{% endif %}",
    "{% for x in y %}",
    "{{ x | safe }}",
    "{% include \"x\" %}",
    "{% raw %}",
    "{{ __tera_context }}",
];

/// One edit: what it does, where (a fraction of the text), with which token or length.
#[derive(Clone, Debug)]
enum Edit {
    Insert(f64, usize),
    Delete(f64, usize),
    Copy(f64, usize, f64),
    Indent(f64, usize),
    Byte(f64, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0.0..1.0f64;
    prop_oneof![
        4 => (at.clone(), 0..TOKENS.len()).prop_map(|(a, t)| Edit::Insert(a, t)),
        2 => (at.clone(), 1..120usize).prop_map(|(a, n)| Edit::Delete(a, n)),
        2 => (at.clone(), 1..300usize, 0.0..1.0f64).prop_map(|(a, n, to)| Edit::Copy(a, n, to)),
        2 => (at.clone(), 0..7usize).prop_map(|(a, n)| Edit::Indent(a, n)),
        1 => (at, any::<u8>()).prop_map(|(a, b)| Edit::Byte(a, b)),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..6)
}

/// A seed manifest: the example (the one that renders) half of the time.
fn seed(n: usize) -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0), 1 => 0..n]
}

/// The character boundary at or before `at` of `text`.
fn boundary(text: &str, at: f64) -> usize {
    let mut i = ((text.len() as f64) * at) as usize;
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `text` with `edits` applied, in order (a byte that is not UTF-8 becomes U+FFFD, as
/// no input is read as anything but UTF-8).
fn garble(text: &str, edits: &[Edit]) -> String {
    let mut t = text.to_owned();
    for e in edits {
        match *e {
            Edit::Insert(at, tok) => {
                let i = boundary(&t, at);
                t.insert_str(i, TOKENS[tok]);
            }
            Edit::Delete(at, n) => {
                let i = boundary(&t, at);
                let j = boundary(&t, ((i + n) as f64 / t.len().max(1) as f64).min(1.0));
                t.replace_range(i..j.max(i), "");
            }
            Edit::Copy(at, n, to) => {
                let i = boundary(&t, at);
                let j = boundary(&t, ((i + n) as f64 / t.len().max(1) as f64).min(1.0));
                let piece = t[i..j.max(i)].to_owned();
                let k = boundary(&t, to);
                t.insert_str(k, &piece);
            }
            Edit::Indent(at, n) => {
                let i = boundary(&t, at);
                let start = t[..i].rfind('\n').map_or(0, |p| p + 1);
                t.insert_str(start, &"  ".repeat(n + 1));
            }
            Edit::Byte(at, b) => {
                let i = boundary(&t, at);
                let mut bytes = t.into_bytes();
                if i < bytes.len() {
                    bytes[i] = b;
                }
                t = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    t
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The example manifest and every manifest of `tests/invalid/`.
fn manifests() -> Vec<String> {
    let mut paths: Vec<_> = std::fs::read_dir(root().join("tests/invalid"))
        .expect("tests/invalid")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".yaml") && !name.ends_with(".org.yaml")
        })
        .collect();
    paths.sort();
    let mut texts = vec![read("examples/pipeline.yml")];
    texts.extend(
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("manifest")),
    );
    texts
}

/// What one run of the whole path ended in.
#[derive(Debug, PartialEq)]
enum Outcome {
    Rendered,
    Refused,
}

/// Reads `manifest` from a file, renders it twice with `inputs` and explains it; an error
/// must have a message, a render must repeat byte for byte.
fn run(dir: &Path, manifest: &str, inputs: &Inputs) -> Result<Outcome, TestCaseError> {
    let path = dir.join("pipeline.yml");
    std::fs::write(&path, manifest).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let source = match pipeforge::read_manifest(&path) {
        Ok(s) => s,
        Err(e) => {
            prop_assert!(!e.to_string().trim().is_empty());
            return Ok(Outcome::Refused);
        }
    };
    match pipeforge::generate(&source, inputs) {
        Ok(first) => {
            let again = pipeforge::generate(&source, inputs)
                .map_err(|e| TestCaseError::fail(format!("the second render failed: {e}")))?;
            let a: Vec<_> = first.outputs.iter().collect();
            let b: Vec<_> = again.outputs.iter().collect();
            prop_assert_eq!(a, b, "two renders of one manifest differ");
            let footprint = Footprint::of_outputs(&first.plan, &first.outputs)
                .map_err(|e| TestCaseError::fail(format!("a rendered bundle's footprint: {e}")))?;
            let text = pipeforge::explain::explain(&first.plan, &footprint, &inputs.org);
            prop_assert!(text.contains(&first.plan.pipeline.name), "{}", text);
            Ok(Outcome::Rendered)
        }
        Err(e) => {
            prop_assert!(
                !e.to_string().trim().is_empty(),
                "an error without a message"
            );
            Ok(Outcome::Refused)
        }
    }
}

/// Counts the cases that rendered: a property over refusals alone would be vacuous.
fn count(rendered: &Cell<usize>, outcome: Outcome) {
    if outcome == Outcome::Rendered {
        rendered.set(rendered.get() + 1);
    }
}

/// A garbled platform input as it was loaded: refused with a message, or used to render
/// `manifest` (with the other inputs `inputs` gives).
fn refused_or_used<T>(
    loaded: pipeforge::error::Result<T>,
    inputs: impl FnOnce(T) -> Inputs,
    dir: &Path,
    manifest: &str,
    rendered: &Cell<usize>,
) -> Result<(), TestCaseError> {
    match loaded {
        Ok(input) => count(rendered, run(dir, manifest, &inputs(input))?),
        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
    }
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn embedded_inputs() -> Inputs {
    Inputs::load(None, None, None).expect("embedded inputs")
}

#[test]
fn garbled_manifests_are_refused_or_rendered_never_a_panic() {
    let seeds = manifests();
    let inputs = embedded_inputs();
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = Cell::new(0);
    runner(160)
        .run(&(seed(seeds.len()), edits()), |(seed, edits)| {
            count(
                &rendered,
                run(dir.path(), &garble(&seeds[seed], &edits), &inputs)?,
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Some garbling leaves a manifest that still renders (a comment, a changed description):
    // the render and explain paths were exercised, not only the parser's refusals.
    assert!(rendered.get() > 0, "no garbled manifest rendered");
}

#[test]
fn a_garbled_org_policy_is_refused_or_used_never_a_panic() {
    let policy = read("examples/org.yaml");
    let manifest = read("examples/pipeline.yml");
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = embedded_inputs();
    let rendered = Cell::new(0);
    runner(48)
        .run(&edits(), |edits| {
            let text = garble(&policy, &edits);
            refused_or_used(
                org::load(&SourceFile::new("org.yaml", text)),
                |org| Inputs {
                    org,
                    catalog: embedded.catalog.clone(),
                    templates: Templates::load(None).expect("templates"),
                },
                dir.path(),
                &manifest,
                &rendered,
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rendered.get() > 0, "no garbled input was used");
}

#[test]
fn a_garbled_language_file_is_refused_or_used_never_a_panic() {
    let names = ["python", "node", "java", "go", "dotnet"];
    let texts: Vec<String> = names
        .iter()
        .map(|n| read(&format!("languages/{n}.yaml")))
        .collect();
    let manifest = read("examples/pipeline.yml");
    let dir = tempfile::tempdir().expect("tempdir");
    let langs = dir.path().join("languages");
    std::fs::create_dir(&langs).expect("languages dir");
    let org = org::embedded().expect("org");
    let rendered = Cell::new(0);
    runner(48)
        .run(&(0..names.len(), edits()), |(which, edits)| {
            let name = names[which];
            for old in std::fs::read_dir(&langs).expect("read").flatten() {
                std::fs::remove_file(old.path()).expect("remove");
            }
            std::fs::write(
                langs.join(format!("{name}.yaml")),
                garble(&texts[which], &edits),
            )
            .expect("write");
            // The language's default runtime: the example's is Python's.
            let manifest = manifest
                .replace("language: python", &format!("language: {name}"))
                .replace("runtime: \"3.12\"\n", "");
            refused_or_used(
                Catalog::load(Some(&langs)),
                |catalog| Inputs {
                    org: org.clone(),
                    catalog,
                    templates: Templates::load(None).expect("templates"),
                },
                dir.path(),
                &manifest,
                &rendered,
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rendered.get() > 0, "no garbled input was used");
}

#[test]
fn a_garbled_template_is_refused_or_used_never_a_panic() {
    let names = [
        "buildspec/gate.yml.tera",
        "stacks/pipeline.yml.tera",
        "stacks/target.yml.tera",
        "stacks/region.yml.tera",
    ];
    let texts: Vec<String> = names
        .iter()
        .map(|n| read(&format!("templates/{n}")))
        .collect();
    let manifest = read("examples/pipeline.yml");
    let dir = tempfile::tempdir().expect("tempdir");
    let org = org::embedded().expect("org");
    let catalog = Catalog::embedded().expect("catalog");
    let rendered = Cell::new(0);
    runner(48)
        .run(&(0..names.len(), edits()), |(which, edits)| {
            let templates = dir.path().join("templates");
            let _ = std::fs::remove_dir_all(&templates);
            let file = templates.join(names[which]);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("dir");
            std::fs::write(&file, garble(&texts[which], &edits)).expect("write");
            refused_or_used(
                Templates::load(Some(&templates)),
                |templates| Inputs {
                    org: org.clone(),
                    catalog: catalog.clone(),
                    templates,
                },
                dir.path(),
                &manifest,
                &rendered,
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rendered.get() > 0, "no garbled template was used");
}

/// The garbling itself: every edit keeps the text UTF-8 and does what it says.
#[test]
fn garbling_edits_the_text() {
    let t = "a: 1\nb: 2\n";
    assert_eq!(garble(t, &[Edit::Insert(0.0, 0)]), "{{a: 1\nb: 2\n");
    assert_eq!(garble(t, &[Edit::Delete(0.0, 3)]), "1\nb: 2\n");
    assert_eq!(garble(t, &[Edit::Indent(0.6, 0)]), "a: 1\n  b: 2\n");
    assert_eq!(garble(t, &[Edit::Copy(0.0, 5, 1.0)]), "a: 1\nb: 2\na: 1\n");
    assert_eq!(garble(t, &[Edit::Byte(0.0, b'z')]), "z: 1\nb: 2\n");
    assert_eq!(garble("é", &[Edit::Byte(0.0, 0xff)]), "\u{fffd}\u{fffd}");
    assert!(manifests().len() > 10);
}
