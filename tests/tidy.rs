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

/// The core modules (a file `src/<name>.rs` or a directory `src/<name>/`).
const CORE: [&str; 19] = [
    "assets", "catalog", "coverage", "error", "explain", "golden", "input", "manifest", "model",
    "names", "org", "outputs", "plan", "policy", "probe", "quota", "render", "schema", "yaml",
];

/// Every file of the core modules.
fn core_files(src: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for module in CORE {
        let file = src.join(format!("{module}.rs"));
        let dir = src.join(module);
        assert!(
            file.is_file() || dir.is_dir(),
            "core module `{module}` not found"
        );
        if file.is_file() {
            files.push(file);
        }
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
    }
    files
}

/// The core stages (manifest → model → plan → render → outputs) never reach the AWS edges.
#[test]
fn the_core_never_imports_the_edges() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = core_files(&src);
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
