//! Data-driven golden tests: every `golden/<case>/` is rendered in memory and compared, file by
//! file, with `golden/<case>/expected/`. `UPDATE_GOLDEN=1 cargo test` rewrites the expected
//! files (never when `CI` is set).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pipeforge::catalog::Catalog;
use pipeforge::golden::{self, EXPECTED_DIR, Mode, Outcome};
use pipeforge::outputs::PLAN_FILE;
use pipeforge::render::Templates;
use pretty_assertions::assert_eq;

fn update_requested() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") && std::env::var_os("CI").is_none()
}

fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir)
                        .expect("under dir")
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    out
}

#[test]
fn golden_cases_render_exactly_as_expected() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    let cases = golden::cases(&root).expect("golden dir");
    let catalog = Catalog::load(None).expect("catalog");
    let templates = Templates::load(None).expect("templates");
    // Checked before the loop: an empty or unreadable golden directory must fail, not pass.
    assert!(
        cases.len() >= 12,
        "at least 12 golden cases are expected, found {}",
        cases.len()
    );
    for case in &cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if update_requested() {
            match golden::run_case(case, &catalog, &templates, Mode::Update) {
                Outcome::Updated => continue,
                Outcome::Failed(e) => panic!("case `{name}` failed to render:\n{e}"),
                other => panic!("case `{name}`: unexpected {other:?}"),
            }
        }
        let outputs = golden::render_case(case, &catalog, &templates)
            .unwrap_or_else(|e| panic!("case `{name}` failed to render:\n{e}"));
        let expected_dir = case.join(EXPECTED_DIR);
        let expected = files_under(&expected_dir);
        let actual: BTreeSet<String> = outputs.iter().map(|(p, _)| p.to_owned()).collect();
        assert_eq!(
            expected, actual,
            "case `{name}`: the set of files differs (UPDATE_GOLDEN=1 cargo test rewrites them)"
        );
        for (path, bytes) in outputs.iter() {
            let want = std::fs::read_to_string(expected_dir.join(path)).expect("expected file");
            let got = String::from_utf8(bytes.to_vec()).expect("utf-8");
            assert_eq!(
                want, got,
                "case `{name}`, file `{path}` (UPDATE_GOLDEN=1 cargo test rewrites it)"
            );
        }
    }
}

/// The embedded catalog and templates, and every golden case (at least 12: an empty or
/// unreadable golden directory fails).
fn embedded_inputs_and_cases() -> (Catalog, Templates, Vec<PathBuf>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden");
    let catalog = Catalog::load(None).expect("catalog");
    let templates = Templates::load(None).expect("templates");
    let cases = golden::cases(&root).expect("golden dir");
    assert!(cases.len() >= 12, "found {} golden cases", cases.len());
    (catalog, templates, cases)
}

#[test]
fn rendering_is_deterministic() {
    let (catalog, templates, cases) = embedded_inputs_and_cases();
    for case in cases {
        let a = golden::render_case(&case, &catalog, &templates).expect("render");
        let b = golden::render_case(&case, &catalog, &templates).expect("render");
        assert_eq!(a, b, "case {}", case.display());
    }
}

/// What `fleet plan` compares with a deployed bundle ([`pipeforge::generate_files`]) is every
/// file of the bundle but `plan.json`, byte for byte, with the same hashes.
#[test]
fn the_files_without_plan_json_are_the_bundle_s() {
    let (catalog, templates, cases) = embedded_inputs_and_cases();
    for case in cases {
        let org = golden::case_org(&case).expect("org");
        let manifest = pipeforge::read_source(&case.join("pipeline.yml")).expect("manifest");
        let bundle =
            pipeforge::generate_with(&manifest, &org, &catalog, &templates).expect("bundle");
        let eval = pipeforge::Evaluation::default();
        let files =
            pipeforge::generate_files(&manifest, &org, &catalog, &templates, &eval).expect("files");
        let all: Vec<(&str, &[u8])> = bundle.outputs.iter().collect();
        assert!(
            all.iter().any(|(p, _)| *p == PLAN_FILE) && all.len() > 2,
            "case {}: the bundle has plan.json and other files",
            case.display()
        );
        let without: Vec<(&str, &[u8])> =
            all.into_iter().filter(|(p, _)| *p != PLAN_FILE).collect();
        let got: Vec<(&str, &[u8])> = files.files.outputs.iter().collect();
        assert_eq!(without, got, "case {}", case.display());
        assert_eq!(
            bundle.hashes.hash,
            files.files.hashes.hash,
            "case {}",
            case.display()
        );
        assert_eq!(
            bundle.hashes.files,
            files.files.hashes.files,
            "case {}",
            case.display()
        );
        assert_eq!(bundle.plan.pipeline.name, files.plan.pipeline.name);
    }
}

/// `assets/prebuilt/*.json` (the embedded catalog and org policy as loaded and checked, which
/// the binary reads instead of parsing the YAML) must be what the YAML sources give today.
#[test]
fn prebuilt_inputs_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/prebuilt");
    let expected = [
        ("catalog.json", pipeforge::catalog::prebuilt_json()),
        ("org.json", pipeforge::org::prebuilt_json()),
        (
            "manifest-schema.json",
            Ok(pipeforge::manifest::prebuilt_schema_json()),
        ),
    ];
    for (file, text) in expected {
        let text = text.unwrap_or_else(|e| panic!("{file}: the embedded source fails: {e}"));
        let path = root.join(file);
        if update_requested() {
            std::fs::create_dir_all(&root).expect("create assets/prebuilt");
            std::fs::write(&path, &text).expect("write a prebuilt file");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "assets/prebuilt/{file} is not what the sources give (UPDATE_GOLDEN=1 cargo test --test golden rewrites it)"
        );
    }
}
