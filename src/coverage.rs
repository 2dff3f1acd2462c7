//! `pipeforge coverage check`: the test gate's coverage threshold, independent of the test
//! runner (teams may replace the test command; the threshold still applies).
//!
//! Reads the line coverage of a Cobertura (`<coverage line-rate=...>`) or JaCoCo (`<report>` with
//! a top-level `<counter type="LINE" .../>`) XML report. The XML reader is deliberately tiny: it
//! only needs the root element and the root's direct children, and never resolves entities or
//! external references (reports are untrusted build output).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A coverage report's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Cobertura XML (coverage.py, coverlet, gocover-cobertura, istanbul).
    Cobertura,
    /// JaCoCo XML.
    Jacoco,
}

/// Line coverage read from a report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineCoverage {
    /// The report format.
    pub format: Format,
    /// Covered lines, when the report says.
    pub covered: Option<u64>,
    /// Total lines, when the report says.
    pub total: Option<u64>,
    /// Line coverage in percent (0–100).
    pub percent: f64,
}

struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    depth: usize,
}

/// Start tags (with attributes) and their nesting depth, up to `max_depth`.
fn elements(xml: &str, max_depth: usize) -> Result<Vec<Element>> {
    let bad = |what: &str| {
        Error::other(
            format!("the coverage report is not well-formed XML: {what}"),
            "check that the test step wrote a complete Cobertura or JaCoCo XML report",
        )
    };
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or_else(|| bad("unterminated comment"))?;
            rest = &r[end + 3..];
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest
                .find('>')
                .ok_or_else(|| bad("unterminated declaration"))?;
            rest = &rest[end + 1..];
            continue;
        }
        let end = find_tag_end(rest).ok_or_else(|| bad("unterminated tag"))?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(_closing) = tag.strip_prefix('/') {
            depth = depth
                .checked_sub(1)
                .ok_or_else(|| bad("unbalanced end tag"))?;
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
        let name = body[..name_end].to_owned();
        if name.is_empty() {
            return Err(bad("empty tag name"));
        }
        if depth <= max_depth {
            out.push(Element {
                name,
                attrs: attributes(&body[name_end..]),
                depth,
            });
        }
        if !self_closing {
            depth += 1;
        }
    }
    Ok(out)
}

/// Index of the `>` closing a tag, skipping quoted attribute values.
fn find_tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn attributes(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim_start();
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let Some(close) = after[1..].find(q) else {
            break;
        };
        out.insert(name, after[1..1 + close].to_owned());
        rest = after[close + 2..].trim_start();
    }
    out
}

fn number<T: std::str::FromStr>(attrs: &BTreeMap<String, String>, key: &str) -> Option<T> {
    attrs.get(key).and_then(|v| v.trim().parse().ok())
}

/// Reads the line coverage of a Cobertura or JaCoCo report.
pub fn read(xml: &str) -> Result<LineCoverage> {
    let els = elements(xml, 1)?;
    let root = els.iter().find(|e| e.depth == 0).ok_or_else(|| {
        Error::other(
            "the coverage report has no root element",
            "check that the test step wrote the report",
        )
    })?;
    match root.name.as_str() {
        "coverage" => {
            let covered = number::<u64>(&root.attrs, "lines-covered");
            let total = number::<u64>(&root.attrs, "lines-valid");
            let percent = match (covered, total, number::<f64>(&root.attrs, "line-rate")) {
                (Some(c), Some(t), _) if t > 0 => c as f64 * 100.0 / t as f64,
                (_, _, Some(rate)) if (0.0..=1.0).contains(&rate) => rate * 100.0,
                _ => {
                    return Err(Error::other(
                        "the Cobertura report has no usable `line-rate` or `lines-covered`/`lines-valid`",
                        "produce the report with line coverage (e.g. `--cov-report=xml`)",
                    ));
                }
            };
            Ok(LineCoverage {
                format: Format::Cobertura,
                covered,
                total,
                percent,
            })
        }
        "report" => {
            let counter = els
                .iter()
                .rfind(|e| {
                    e.depth == 1
                        && e.name == "counter"
                        && e.attrs.get("type").map(String::as_str) == Some("LINE")
                })
                .ok_or_else(|| {
                    Error::other(
                        "the JaCoCo report has no top-level LINE counter",
                        "produce the XML report with `jacoco:report`",
                    )
                })?;
            let missed: u64 = number(&counter.attrs, "missed").ok_or_else(|| {
                Error::other(
                    "the JaCoCo LINE counter has no `missed` count",
                    "regenerate the report",
                )
            })?;
            let covered: u64 = number(&counter.attrs, "covered").ok_or_else(|| {
                Error::other(
                    "the JaCoCo LINE counter has no `covered` count",
                    "regenerate the report",
                )
            })?;
            let total = missed + covered;
            let percent = if total == 0 {
                0.0
            } else {
                covered as f64 * 100.0 / total as f64
            };
            Ok(LineCoverage {
                format: Format::Jacoco,
                covered: Some(covered),
                total: Some(total),
                percent,
            })
        }
        other => Err(Error::other(
            format!("unknown coverage report format (root element `<{other}>`)"),
            "use a Cobertura (`<coverage>`) or JaCoCo (`<report>`) XML report",
        )),
    }
}

/// True when `coverage` meets `min` percent. Compared with two decimals, as reports print them.
pub fn meets(coverage: &LineCoverage, min: f64) -> bool {
    (coverage.percent * 100.0).round() / 100.0 >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cobertura_from_coverage_py() {
        let xml = r#"<?xml version="1.0" ?>
<!-- Generated by coverage.py: https://coverage.readthedocs.io/en/7.6.1 -->
<coverage version="7.6.1" timestamp="1" lines-valid="200" lines-covered="171" line-rate="0.855" branches-covered="0" branches-valid="0" branch-rate="0" complexity="0">
  <sources><source>/src</source></sources>
  <packages><package name="." line-rate="0.1"/></packages>
</coverage>"#;
        let c = read(xml).expect("cobertura");
        assert_eq!(c.format, Format::Cobertura);
        assert!((c.percent - 85.5).abs() < 1e-9);
        assert!(meets(&c, 85.0));
        assert!(!meets(&c, 86.0));
    }

    #[test]
    fn reads_cobertura_with_rate_only() {
        let c = read("<coverage line-rate='0.5'><packages/></coverage>").expect("rate");
        assert!((c.percent - 50.0).abs() < 1e-9);
    }

    #[test]
    fn reads_jacoco_top_level_line_counter_only() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><!DOCTYPE report PUBLIC "-//JACOCO//DTD Report 1.1//EN" "report.dtd"><report name="app"><sessioninfo id="x" start="1" dump="2"/><package name="a"><counter type="LINE" missed="100" covered="0"/></package><counter type="INSTRUCTION" missed="5" covered="95"/><counter type="LINE" missed="10" covered="90"/></report>"#;
        let c = read(xml).expect("jacoco");
        assert_eq!(c.format, Format::Jacoco);
        assert_eq!((c.covered, c.total), (Some(90), Some(100)));
        assert!(meets(&c, 90.0) && !meets(&c, 90.01));
    }

    #[test]
    fn rejects_unknown_and_broken_reports() {
        assert!(read("<testsuite/>").is_err());
        assert!(read("<coverage line-rate=\"0.5\"").is_err());
        assert!(read("<coverage/>").is_err());
        assert!(
            read("<report><counter type=\"BRANCH\" missed=\"1\" covered=\"1\"/></report>").is_err()
        );
        assert!(read("").is_err());
    }
}
