//! Embeds the default templates, language catalog and org policy into the binary.
//!
//! Generates `$OUT_DIR/embedded.rs` with one `(relative path, contents)` entry per file under
//! `templates/` and `languages/`, plus `examples/org.yaml`, sorted by path so the binary is
//! reproducible.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["templates", "languages"] {
        println!("cargo:rerun-if-changed={dir}");
        collect(&root, &root.join(dir), &mut files);
    }
    println!("cargo:rerun-if-changed=examples/org.yaml");
    files.push(PathBuf::from("examples/org.yaml"));
    // Sorted as strings: `assets::get` binary-searches by path.
    files.sort_by_key(|p| p.to_string_lossy().replace('\\', "/"));

    let mut code = String::from(
        "/// Files embedded at build time: (path relative to the repository, contents).\n",
    );
    code.push_str("pub static EMBEDDED: &[(&str, &str)] = &[\n");
    for rel in &files {
        let rel_str = rel.to_str().expect("utf-8 path").replace('\\', "/");
        let abs = root.join(rel);
        writeln!(
            code,
            "    ({rel_str:?}, include_str!({:?})),",
            abs.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded.rs");
    std::fs::write(out, code).expect("write embedded.rs");
}
