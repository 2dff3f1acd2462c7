//! Architecture invariants that can be checked on the source text (see ARCHITECTURE.md).

use std::collections::{BTreeMap, BTreeSet};
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
const CORE: [&str; 21] = [
    "assets", "capacity", "catalog", "coverage", "error", "explain", "golden", "iam", "input",
    "manifest", "model", "names", "org", "outputs", "plan", "policy", "probe", "quota", "render",
    "schema", "yaml",
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
        if rel == "main.rs"
            || rel == "cli.rs"
            || rel == "cli_aws.rs"
            || rel == "cli_fleet.rs"
            || rel == "cli_local.rs"
            || rel.starts_with("bin/")
        {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read");
        for (n, line) in non_test_lines(&text) {
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

/// The lines of a file outside `#[cfg(test)]` items, numbered from 0: a one-line item
/// (`mod tests;`) is skipped, an item with a body is skipped to its closing brace, and the
/// code after it is checked again.
fn non_test_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if !line.trim_start().starts_with("#[cfg(test)]") {
            out.push((n, line));
            continue;
        }
        let mut depth = 0i64;
        for (_, item) in lines.by_ref() {
            depth += item.matches('{').count() as i64 - item.matches('}').count() as i64;
            if depth <= 0 && (item.trim_end().ends_with(';') || item.trim_end().ends_with('}')) {
                break;
            }
        }
    }
    out
}

#[test]
fn test_items_are_skipped_and_the_code_after_them_is_checked() {
    let text = "fn a() {}\n#[cfg(test)]\nmod enforcement;\nfn b() {\n    println!(\"b\");\n}\n\
                #[cfg(test)]\nmod tests {\n    fn t() {\n        println!(\"t\");\n    }\n}\n\
                fn c() { eprintln!(\"c\") }\n";
    let kept: Vec<usize> = non_test_lines(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(kept, [0, 3, 4, 5, 12]);
}

/// The core modules import each other without cycles: each stage depends only on the stages
/// before it and on shared leaves (`error`, `names`, `render::escape`, ...). A cycle is found
/// over every `crate::` path in non-test code (`use` lines, grouped or not, and inline paths),
/// between modules as files declare them (`a.rs` and `a/mod.rs` are `a`, `a/b.rs` is `a::b`);
/// a module depends on its submodules, and a submodule's references to its own ancestors do
/// not count.
#[test]
fn core_modules_have_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = Vec::new();
    for f in core_files(&src) {
        let rel = f
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).expect("read");
        sources.push((format!("src/{rel}"), text));
    }
    let cycles = import_cycles(&sources);
    assert!(
        cycles.is_empty(),
        "import cycles among the core modules (move the shared item to the module that owns it):\n{}",
        cycles.join("\n")
    );
}

/// The cycle finder itself: grouped, multi-line and inline paths count; comments, test modules
/// and references to an ancestor do not.
#[test]
fn the_cycle_finder_finds_cycles_and_only_cycles() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let sources = [
        file("src/a.rs", "use crate::b::{self, X as Y};\n"),
        file("src/b/mod.rs", "mod c;\n#[cfg(test)]\nmod tests;\n"),
        file(
            "src/b/c.rs",
            "//! see crate::e\nuse crate::{\n    a::Thing,\n    b::Parent,\n    d,\n};\n",
        ),
        file("src/b/tests.rs", "use crate::e;\n"),
        file("src/d.rs", "fn f() {\n    crate::e::g(); // crate::b\n}\n"),
        file(
            "src/e.rs",
            "// use crate::d;\n#[cfg(test)]\nmod tests {\n    use crate::d;\n}\n",
        ),
    ];
    let cycles = import_cycles(&sources);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].starts_with("a → b → b::c → a\n"), "{}", cycles[0]);
    assert!(
        cycles[0].contains("b::c → a: src/b/c.rs:2"),
        "{}",
        cycles[0]
    );
    // Without the grouped import there is no cycle.
    let mut acyclic = sources.clone();
    acyclic[2].1 = "use crate::d;\n".to_owned();
    assert!(import_cycles(&acyclic).is_empty());
}

/// Every import cycle among the modules of `sources` (`src/…` path, text), each as
/// `a → b → a` followed by where each reference is written.
fn import_cycles(sources: &[(String, String)]) -> Vec<String> {
    let code: Vec<(String, String, Code)> = sources
        .iter()
        .map(|(path, text)| (module_of(path), path.clone(), Code::of(text)))
        .collect();
    // Modules declared only for tests (`#[cfg(test)] mod tests;`) are not part of the graph.
    let test_only: Vec<String> = code
        .iter()
        .flat_map(|(m, _, c)| c.test_mods.iter().map(move |t| join(m, t)))
        .collect();
    let is_test = |m: &str| {
        test_only
            .iter()
            .any(|t| m == t || m.starts_with(&format!("{t}::")))
    };
    let modules: BTreeSet<&str> = code
        .iter()
        .map(|(m, _, _)| m.as_str())
        .filter(|m| !is_test(m))
        .collect();
    let mut graph: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for m in &modules {
        if let Some((parent, _)) = m.rsplit_once("::")
            && let Some(p) = modules.get(parent)
        {
            graph
                .entry(p)
                .or_default()
                .insert(m, format!("`{parent}` declares `{m}`"));
        }
    }
    for (m, path, c) in code.iter().filter(|(m, _, _)| !is_test(m)) {
        for (line, segments) in c.crate_paths() {
            let Some(to) = (1..=segments.len())
                .rev()
                .map(|k| segments[..k].join("::"))
                .find_map(|p| modules.get(p.as_str()).copied())
            else {
                continue;
            };
            let ancestor_or_self = m == to || m.starts_with(&format!("{to}::"));
            if !ancestor_or_self {
                graph
                    .entry(m.as_str())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| format!("{path}:{line}"));
            }
        }
    }
    cycles(&graph)
}

/// `a/b/mod.rs`, `a/b.rs` → `a::b` (relative to `src/`).
fn module_of(path: &str) -> String {
    let rel = path.strip_prefix("src/").unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    rel.replace('/', "::")
}

fn join(module: &str, child: &str) -> String {
    format!("{module}::{child}")
}

/// The code of a file: without comment lines and test items, with the line number of each
/// line kept.
struct Code {
    text: String,
    starts: Vec<usize>,
    lines: Vec<usize>,
    test_mods: Vec<String>,
}

impl Code {
    fn of(text: &str) -> Code {
        let mut code = Code {
            text: String::new(),
            starts: Vec::new(),
            lines: Vec::new(),
            test_mods: Vec::new(),
        };
        let mut lines = text.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            let t = line.trim_start();
            if t.starts_with("#[cfg(test)]") {
                // A one-line item (`mod tests;`, a `use`) is skipped; a test module with a body
                // ends the code, as tests come last.
                match lines.next() {
                    Some((_, next)) if next.trim_end().ends_with(';') => {
                        if let Some(name) = next.trim().strip_prefix("mod ") {
                            code.test_mods
                                .push(name.trim_end_matches(';').trim().to_owned());
                        }
                        continue;
                    }
                    _ => break,
                }
            }
            if t.starts_with("//") {
                continue;
            }
            let line = line.split(" // ").next().unwrap_or(line);
            code.starts.push(code.text.len());
            code.lines.push(n + 1);
            code.text.push_str(line);
            code.text.push('\n');
        }
        code
    }

    /// Every `crate::` path (groups expanded) with its line.
    fn crate_paths(&self) -> Vec<(usize, Vec<String>)> {
        let s = self.text.as_bytes();
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(i) = self.text[from..].find("crate::").map(|i| i + from) {
            from = i + "crate::".len();
            let prev = i.checked_sub(1).map(|p| s[p]);
            if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$') {
                continue;
            }
            let line = self.lines[self.starts.partition_point(|&st| st <= i) - 1];
            let mut paths = Vec::new();
            path_tree(s, from, Vec::new(), &mut paths);
            out.extend(paths.into_iter().map(|p| (line, p)));
        }
        out
    }
}

/// Reads a path (or a `{…}` group of paths) starting at `i` after `prefix`; returns where it ends.
fn path_tree(s: &[u8], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i < s.len() && s[i] == b'{' {
            i += 1;
            loop {
                skip_ws(&mut i);
                if i >= s.len() || s[i] == b'}' {
                    return i + 1;
                }
                i = path_tree(s, i, prefix.clone(), out);
                // Skip an `as alias` up to the next item.
                while i < s.len() && s[i] != b',' && s[i] != b'}' {
                    i += 1;
                }
                if i < s.len() && s[i] == b',' {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
            i += 1;
        }
        if i > start {
            prefix.push(String::from_utf8_lossy(&s[start..i]).into_owned());
        }
        if i > start && s[i..].starts_with(b"::") {
            i += 2;
            continue;
        }
        if !prefix.is_empty() {
            out.push(prefix);
        }
        return i;
    }
}

/// Every distinct cycle of `graph` (one per back edge of a depth-first search), each with the
/// place of each of its references.
fn cycles(graph: &BTreeMap<&str, BTreeMap<&str, String>>) -> Vec<String> {
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, BTreeMap<&'a str, String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        stack.push(n);
        for (&to, _) in graph.get(n).into_iter().flatten() {
            if let Some(at) = stack.iter().position(|&s| s == to) {
                let mut cycle: Vec<&str> = stack[at..].to_vec();
                cycle.push(to);
                let mut text = cycle.join(" → ");
                for w in cycle.windows(2) {
                    text.push_str(&format!("\n  {} → {}: {}", w[0], w[1], graph[w[0]][w[1]]));
                }
                out.push(text);
            } else if !done.contains(to) {
                visit(to, graph, stack, done, out);
            }
        }
        stack.pop();
        done.insert(n);
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    for &n in graph.keys() {
        if !done.contains(n) {
            visit(n, graph, &mut Vec::new(), &mut done, &mut out);
        }
    }
    out
}

/// Only `pipeforge transfer` changes who owns a pipeline, and only `pipeforge move` where it
/// is placed: no webhook code (the HTTP handler, the worker, the Lambda functions) reaches
/// either, and the command line is their only caller.
#[test]
fn only_the_transfer_command_changes_an_owner() {
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
        let text = std::fs::read_to_string(f).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let webhook = rel.starts_with("webhook/") || rel.starts_with("bin/");
            if webhook && line.contains("transfer") {
                problems.push(format!("{rel}:{}: the webhook mentions `transfer`", n + 1));
            }
            if line.contains("transfer_pipeline(") && rel != "cli_aws.rs" && rel != "owner.rs" {
                problems.push(format!("{rel}:{}: calls `transfer_pipeline`", n + 1));
            }
            if line.contains("owner::transfer(") && rel != "owner.rs" {
                problems.push(format!("{rel}:{}: calls `owner::transfer`", n + 1));
            }
            // The owner record's one writer: a deploy's claim, `transfer` and `move`.
            if line.contains("write_owner_record(")
                && rel != "owner.rs"
                && rel != "deploy/relocate.rs"
            {
                problems.push(format!("{rel}:{}: writes the owner record", n + 1));
            }
            // The placement too: only `pipeforge move` rewrites it, never a webhook path.
            if webhook && line.contains("relocate") {
                problems.push(format!("{rel}:{}: the webhook mentions `relocate`", n + 1));
            }
            if line.contains("relocate(") && rel != "cli_aws.rs" && rel != "deploy/relocate.rs" {
                problems.push(format!("{rel}:{}: calls `relocate`", n + 1));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "only `pipeforge transfer` may change an owner, only `pipeforge move` a placement:\n{}",
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
