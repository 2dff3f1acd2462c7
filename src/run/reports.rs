//! What a local run collected: the report groups (JUnit, TRX and coverage files, summarised as
//! CodeBuild's report view would) and the artifact files.

use std::path::{Path, PathBuf};

use super::spec::SpecReport;

/// A report group after the run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportSummary {
    /// Group name.
    pub name: String,
    /// Format keyword.
    pub format: String,
    /// Files found.
    pub files: Vec<String>,
    /// One line: test counts or coverage.
    pub summary: String,
}

/// True when `name` (a `/`-separated relative path) matches the glob: `**` any directories,
/// `*` any characters but `/`, `?` one character.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn rec(p: &[&str], n: &[&str]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(&"**"), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some(seg), Some(part)) => segment(seg, part) && rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    fn segment(p: &str, n: &str) -> bool {
        let (pc, nc): (Vec<char>, Vec<char>) = (p.chars().collect(), n.chars().collect());
        fn m(p: &[char], n: &[char]) -> bool {
            match (p.first(), n.first()) {
                (None, None) => true,
                (Some('*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
                (Some('?'), Some(_)) => m(&p[1..], &n[1..]),
                (Some(a), Some(b)) => a == b && m(&p[1..], &n[1..]),
                _ => false,
            }
        }
        m(&pc, &nc)
    }
    let p: Vec<&str> = pattern.trim_start_matches("./").split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    rec(&p, &n)
}

/// Files under `base` (relative, `/`-separated, sorted), without `.git`.
pub fn files_under(base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(base.join(&rel)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.as_os_str().is_empty() && name == ".git" {
                continue;
            }
            let r = rel.join(&name);
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(r),
                Ok(_) => out.push(r.to_string_lossy().replace('\\', "/")),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Files under `base` matching any of `patterns`.
pub fn matching(base: &Path, patterns: &[String]) -> Vec<String> {
    files_under(base)
        .into_iter()
        .filter(|f| patterns.iter().any(|p| glob(p, f)))
        .collect()
}

fn count(xml: &str, needle: &str) -> usize {
    xml.matches(needle).count()
}

/// JUnit XML: test cases, failures, errors and skipped ones.
fn junit(xml: &str) -> (usize, usize, usize, usize) {
    let cases = count(xml, "<testcase");
    let failures = count(xml, "<failure");
    let errors = count(xml, "<error");
    let skipped = count(xml, "<skipped");
    (cases, failures, errors, skipped)
}

/// Summarises one report group.
pub fn summarise(src: &Path, r: &SpecReport) -> ReportSummary {
    let base = match &r.base_directory {
        Some(b) => src.join(b),
        None => src.to_path_buf(),
    };
    let files = matching(&base, &r.files);
    let summary = if files.is_empty() {
        "no report file was written".to_owned()
    } else {
        match r.format.as_str() {
            "JUNITXML" => {
                let (mut c, mut f, mut e, mut s) = (0, 0, 0, 0);
                for file in &files {
                    let text = std::fs::read_to_string(base.join(file)).unwrap_or_default();
                    let (a, b, d, g) = junit(&text);
                    (c, f, e, s) = (c + a, f + b, e + d, s + g);
                }
                format!(
                    "{c} tests: {} passed, {f} failed, {e} errors, {s} skipped",
                    c.saturating_sub(f + e + s)
                )
            }
            "VISUALSTUDIOTRX" => {
                let (mut c, mut f) = (0, 0);
                for file in &files {
                    let text = std::fs::read_to_string(base.join(file)).unwrap_or_default();
                    c += count(&text, "<UnitTestResult");
                    f += count(&text, "outcome=\"Failed\"");
                }
                format!("{c} tests: {} passed, {f} failed", c.saturating_sub(f))
            }
            "COBERTURAXML" | "JACOCOXML" => {
                let mut parts = Vec::new();
                for file in &files {
                    let text = std::fs::read_to_string(base.join(file)).unwrap_or_default();
                    parts.push(match crate::coverage::read(&text) {
                        Ok(c) => match (c.covered, c.total) {
                            (Some(a), Some(b)) => {
                                format!("line coverage {:.2}% ({a} of {b} lines)", c.percent)
                            }
                            _ => format!("line coverage {:.2}%", c.percent),
                        },
                        Err(e) => format!("unreadable: {e}"),
                    });
                }
                parts.join("; ")
            }
            other => format!("{} file(s) ({other})", files.len()),
        }
    };
    ReportSummary {
        name: r.name.clone(),
        format: r.format.clone(),
        files,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_codebuild() {
        assert!(glob("junit.xml", "junit.xml"));
        assert!(glob("dist/**/*", "dist/a/b.whl"));
        assert!(glob("dist/**/*", "dist/b.whl"));
        assert!(glob(
            "**/target/surefire-reports/TEST-*.xml",
            "target/surefire-reports/TEST-a.xml"
        ));
        assert!(glob(
            "**/target/surefire-reports/TEST-*.xml",
            "m/target/surefire-reports/TEST-a.xml"
        ));
        assert!(!glob("dist/*", "dist/a/b"));
        assert!(glob("sbom/**/*", "sbom/sbom.cdx.json"));
    }

    #[test]
    fn junit_counts() {
        let xml = r#"<testsuite><testcase name="a"/><testcase name="b"><failure/></testcase><testcase name="c"><skipped/></testcase></testsuite>"#;
        assert_eq!(junit(xml), (3, 1, 0, 1));
    }
}
