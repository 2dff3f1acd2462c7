//! Embeds the default templates, language catalog and org policy into the binary.
//!
//! Generates `$OUT_DIR/embedded.rs` with one `(relative path, contents)` entry per file under
//! `templates/` and `languages/`, plus `examples/org.yaml`, sorted by path so the binary is
//! reproducible; and the catalog and policy as loaded and checked (`assets/prebuilt/*.json`,
//! written by `UPDATE_GOLDEN=1 cargo test --test golden`) with the digest of the files they
//! must have come from, so a binary built from edited sources loads the sources instead; and
//! likewise the manifest's JSON Schema (`assets/prebuilt/manifest-schema.json`), with the
//! digest of the Rust sources it is generated from.

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
    prebuilt(&root, &files, &mut code);
    manifest_schema(&root, &mut code);
    renderer_digest(&root);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded.rs");
    std::fs::write(out, code).expect("write embedded.rs");
}

/// FNV-1a (64 bits) over a sequence of byte strings, each followed by a 0 byte (so that `ab`,
/// `c` and `a`, `bc` differ). The digests below are this over their files' names and contents;
/// they are compared with digests written by earlier builds, so the byte sequence must not
/// change.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    /// Adds `bytes` and the 0 byte that ends them.
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain([&0u8]) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// `fnv1a64:` and the hash in 16 hex digits.
    fn digest(&self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

/// FNV-1a (64 bits) of the embedded catalog and policy sources, names and contents: tells a
/// prebuilt file from a stale one (whether it is current is also a test; this only keeps a
/// build from edited sources from using data that no longer matches them).
fn inputs_digest(root: &Path, files: &[PathBuf]) -> String {
    let mut h = Fnv1a::new();
    for rel in files {
        let rel_str = rel.to_str().expect("utf-8 path").replace('\\', "/");
        if rel_str.starts_with("languages/") || rel_str == "examples/org.yaml" {
            h.feed(rel_str.as_bytes());
            h.feed(&std::fs::read(root.join(rel)).expect("read an embedded file"));
        }
    }
    h.digest()
}

/// FNV-1a (64 bits) of every Rust source under `src/` and of `Cargo.lock` (names and contents),
/// as `PIPEFORGE_RENDERER`: with the package version, what a deploy record's input digest
/// says about the code that rendered (`src/publish/digest.rs`). Any change to the sources or
/// the locked dependencies changes it, so a build that renders differently never matches a
/// digest an older build recorded, whatever the version number says.
fn renderer_digest(root: &Path) {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut files = Vec::new();
    collect(root, &root.join("src"), &mut files);
    files.sort_by_key(|p| p.to_string_lossy().replace('\\', "/"));
    files.push(PathBuf::from("Cargo.lock"));
    let mut h = Fnv1a::new();
    for rel in &files {
        let name = rel.to_string_lossy().replace('\\', "/");
        h.feed(name.as_bytes());
        h.feed(&std::fs::read(root.join(rel)).unwrap_or_default());
    }
    println!("cargo:rustc-env=PIPEFORGE_RENDERER={}", h.digest());
}

/// The Rust expression embedding the prebuilt file `path`: `Some(include_str!(path))` when it
/// is there, else `None` (not written yet). Whether it is current is judged when it is loaded,
/// against the digest written next to it.
fn optional_include(path: &Path) -> String {
    if path.is_file() {
        format!("Some(include_str!({:?}))", path.display().to_string())
    } else {
        "None".to_owned()
    }
}

/// The digest and the prebuilt files (`None` when one is not there yet).
fn prebuilt(root: &Path, files: &[PathBuf], code: &mut String) {
    println!("cargo:rerun-if-changed=assets/prebuilt");
    writeln!(
        code,
        "/// Digest of the embedded language files and org policy (names and contents).\n\
         pub const INPUTS_DIGEST: &str = {:?};",
        inputs_digest(root, files)
    )
    .expect("write to string");
    for (name, file) in [("CATALOG", "catalog.json"), ("ORG", "org.json")] {
        let value = optional_include(&root.join("assets/prebuilt").join(file));
        writeln!(
            code,
            "/// `assets/prebuilt/{file}`, if present.\npub static PREBUILT_{name}: Option<&str> = {value};"
        )
        .expect("write to string");
    }
}

/// FNV-1a (64 bits) of what the manifest's JSON Schema is generated from: `src/manifest.rs`
/// (the types and their attributes), `src/schema.rs` (`tighten`) and the locked `schemars`
/// versions (its output format). Only tells a prebuilt schema from a stale one: whether the
/// committed file is current is a test.
fn schema_digest(root: &Path) -> String {
    let mut h = Fnv1a::new();
    for rel in ["src/manifest.rs", "src/schema.rs"] {
        h.feed(rel.as_bytes());
        h.feed(&std::fs::read(root.join(rel)).expect("read a schema source"));
    }
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    for entry in lock.split("\n\n") {
        if entry.contains("\nname = \"schemars") {
            h.feed(entry.trim().as_bytes());
        }
    }
    h.digest()
}

/// The manifest schema's digest and its prebuilt file (`None` when it is not there yet).
fn manifest_schema(root: &Path, code: &mut String) {
    for rel in ["src/manifest.rs", "src/schema.rs", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={rel}");
    }
    let value = optional_include(&root.join("assets/prebuilt/manifest-schema.json"));
    writeln!(
        code,
        "/// Digest of the sources the manifest schema is generated from.\n\
         pub const MANIFEST_SCHEMA_DIGEST: &str = {:?};\n\
         /// `assets/prebuilt/manifest-schema.json`, if present.\n\
         pub static PREBUILT_MANIFEST_SCHEMA: Option<&str> = {value};",
        schema_digest(root)
    )
    .expect("write to string");
}
