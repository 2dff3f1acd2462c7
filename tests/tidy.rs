//! Architecture invariants that can be checked on the source text (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The core stages (manifest → model → plan → render → outputs) never reach the AWS edges.
#[test]
fn the_core_never_imports_the_edges() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let core = [
        "assets.rs",
        "catalog.rs",
        "coverage.rs",
        "error.rs",
        "explain.rs",
        "golden.rs",
        "input.rs",
        "manifest.rs",
        "model.rs",
        "names.rs",
        "org.rs",
        "outputs.rs",
        "plan.rs",
        "policy.rs",
        "probe.rs",
        "quota.rs",
        "schema.rs",
        "yaml.rs",
    ];
    let mut files: Vec<PathBuf> = core.iter().map(|f| src.join(f)).collect();
    rust_files(&src.join("render"), &mut files);
    rust_files(&src.join("iam"), &mut files);
    let forbidden = [
        "crate::aws",
        "crate::deploy",
        "crate::publish",
        "crate::webhook",
        "crate::status",
        "aws_sdk_",
        "aws_config",
        "tokio",
        "axum",
    ];
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|_| panic!("read {}", f.display()));
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in forbidden {
                if line.contains(word) {
                    problems.push(format!(
                        "{}:{}: `{word}` in a core module",
                        f.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the core must stay free of I/O edges:\n{}",
        problems.join("\n")
    );
}

/// Only `src/aws.rs` builds AWS SDK clients (tests may build their own to inspect results).
#[test]
fn only_aws_rs_builds_sdk_clients() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for f in files
        .iter()
        .filter(|f| !f.ends_with("aws.rs") || f.ends_with("webhook/aws.rs"))
    {
        let text = std::fs::read_to_string(f).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.contains("aws_config::defaults(") || line.contains("aws_config::load_defaults(")
            {
                problems.push(format!("{}:{}", f.display(), n + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "SDK configuration must come from src/aws.rs:\n{}",
        problems.join("\n")
    );
}

/// The library never prints: only the binaries write to stdout or stderr.
#[test]
fn the_library_never_prints() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "main.rs" || rel == "cli.rs" || rel == "cli_aws.rs" || rel.starts_with("bin/") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        let mut in_tests = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if in_tests {
                continue;
            }
            for word in [
                "println!(",
                "eprintln!(",
                "print!(",
                "eprint!(",
                "std::io::stdout()",
                "std::io::stderr()",
            ] {
                if line.contains(word) && !line.trim_start().starts_with("//") {
                    problems.push(format!("{rel}:{}: `{word}`", n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "only the binaries print:\n{}",
        problems.join("\n")
    );
}

/// Every scanner suppression in a golden or bootstrap stack has a comment and is listed, with its
/// resource and check, in the README's table of suppressions.
#[test]
fn every_checkov_skip_is_explained_and_listed_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut files = Vec::new();
    for dir in ["golden", "golden-bootstrap"] {
        let mut stack = Vec::new();
        json_files(&root.join(dir), &mut stack);
        files.extend(stack);
    }
    let mut problems = Vec::new();
    let mut seen = 0;
    for f in files
        .iter()
        .filter(|f| f.to_string_lossy().contains("/expected/"))
    {
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("json");
        let Some(resources) = t.get("Resources").and_then(|r| r.as_object()) else {
            continue;
        };
        for (id, r) in resources {
            for skip in r
                .pointer("/Metadata/checkov/skip")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
            {
                seen += 1;
                let check = skip["id"].as_str().unwrap_or_default();
                let comment = skip["comment"].as_str().unwrap_or_default();
                if comment.trim().is_empty() {
                    problems.push(format!(
                        "{}: `{id}` skips {check} without a comment",
                        f.display()
                    ));
                }
                if !readme.contains(&format!("| `{id}` | {check} | {comment} |")) {
                    problems.push(format!(
                        "{}: `{id}` {check} is not in the README's table",
                        f.display()
                    ));
                }
            }
        }
    }
    assert!(seen > 10, "{seen}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}
