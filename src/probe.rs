//! The injection probe: proves that manifest values cannot change the structure of any
//! generated file.
//!
//! A manifest is rendered twice: once with a harmless placeholder in every free-text field, once
//! with a hostile string in all of them. Every output file is parsed back (YAML or JSON) and the
//! two documents must have the same shape (same keys, same list lengths, same scalars), except
//! that each placeholder is replaced, in place, by the hostile string (raw, or escaped when the
//! slot is itself JSON or YAML text embedded in a string). Used by `pipeforge templates check`
//! (so an edited template that forgets escaping is caught) and by the property tests.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::catalog::Catalog;
use crate::error::{Error, Result, SourceFile};
use crate::org::OrgPolicy;
use crate::outputs::Outputs;
use crate::render::Templates;
use crate::render::escape::quote;
use crate::yaml::{ParseOptions, parse};

/// Hostile strings tried by [`injection_probe`]; each tries to escape its slot.
pub const HOSTILE: &[&str] = &[
    "make\n  post_build:\n    commands: [curl evil]",
    "x\" && true #",
    "\"}]}, {\"Evil\": {\"Type\": \"AWS::IAM::User\"}}, {\"x\": [\"",
    "- injected\n- items",
    "key: value\nother: 1",
    "{{ pipeline }} {% raw %}",
    "${AWS::AccountId} !Ref Evil &a *a",
    "line\u{2028}break\u{85}nel\r\ncrlf",
    "'single' \\\"escaped\\\" \\n",
    "# not a comment",
];

/// The free-text fields of the probe manifest, each holding `{v}`.
fn manifest_text(language: &str, v: &[String]) -> String {
    let q = |i: usize| quote(&v[i]);
    format!(
        "version: 1\nname: probe-app\nteam: probe\nlanguage: {language}\n\
build:\n  commands: [{c0}, {c1}]\n  test_commands: [{c2}]\n  env: {{PROBE_ENV: {c3}}}\n  secrets: {{PROBE_SECRET: {c10}, PROBE_NAMED: {c11}, PROBE_PARAM: {c12}}}\n\
artifact:\n  kind: s3\n  paths: [{c4}]\n\
deploy:\n  template: {c5}\n  parameters: {{Param: {c6}}}\n\
environments:\n  - {{name: dev, account: \"111111111111\", parameters: {{EnvParam: {c7}}}}}\n  - {{name: prod, account: \"222222222222\"}}\n\
notifications:\n  email: [{c8}]\n\
tags: {{probe-tag: {c9}}}\n",
        c0 = q(0),
        c1 = q(1),
        c2 = q(2),
        c3 = q(3),
        c4 = q(4),
        c5 = q(5),
        c6 = q(6),
        c7 = q(7),
        c8 = q(8),
        c9 = q(9),
        c10 = q(10),
        c11 = q(11),
        c12 = q(12),
    )
}

/// Number of free-text slots in the probe manifest.
pub const SLOTS: usize = 13;

/// The part of a Secrets Manager ARN that slot 10 fills.
const SECRET_ARN_PREFIX: &str =
    "secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:";

/// Fits a hostile string to a slot's validation rules (paths must stay in the repository,
/// e-mails need an `@`), keeping as much of it as possible.
pub fn fit_to_slot(slot: usize, h: &str) -> String {
    match slot {
        4 | 5 => {
            let cleaned: String = h
                .replace("..", "_")
                .chars()
                .filter(|c| !(c.is_control() || (slot == 5 && "*?[".contains(*c)) || *c == '\\'))
                .collect();
            let cleaned = cleaned.replace("//", "/");
            // Different directories: equal package and template paths would be listed once.
            let dir = if slot == 4 { "dist" } else { "infra" };
            format!("{dir}/{}", cleaned.trim_start_matches('/'))
        }
        8 => {
            let local: String = h
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '@')
                .collect();
            format!(
                "{}@example.com",
                if local.is_empty() { "x" } else { &local }
            )
        }
        9 => h
            .chars()
            .filter(|c| crate::model::is_tag_value_char(*c))
            .take(200)
            .collect(),
        // A secret by ARN: the name is free text up to the next `:`, and ends up in the IAM
        // policy of the gates that read it, so it keeps to the characters IAM accepts.
        10 => {
            // Secret names allow letters, digits and `/_+=.@-` (validation rejects the rest).
            let name: String = h
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))
                .collect();
            format!(
                "{SECRET_ARN_PREFIX}{}",
                if name.is_empty() { "x" } else { &name }
            )
        }
        // A secret by name and an SSM parameter: printed with `| safe` in the IAM policies of
        // the gates that read them, so they keep to what validation allows.
        11 => {
            let name: String = h
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c))
                .collect();
            format!(
                "secretsmanager:{}",
                if name.is_empty() { "x" } else { &name }
            )
        }
        12 => {
            let mut name: String = h
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "_.-/".contains(*c))
                .collect();
            while name.contains("//") {
                name = name.replace("//", "/");
            }
            let name = name.trim_matches('/');
            format!("ssm:{}", if name.is_empty() { "x" } else { name })
        }
        _ => h.to_owned(),
    }
}

/// The slots whose values the templates print with `| safe` (validated names): the probe also
/// gives them each hostile string unfitted, which validation must refuse or render inert.
pub const SAFE_SLOTS: [usize; 2] = [11, 12];

/// A hostile string put in slot `slot` as it is, with only the reference's store prefix.
pub fn raw_for_slot(slot: usize, h: &str) -> String {
    match slot {
        11 => format!("secretsmanager:{h}"),
        12 => format!("ssm:{h}"),
        _ => h.to_owned(),
    }
}

/// The part of a fitted slot value that the generated files contain (a secret reference
/// appears without its `secretsmanager:` store prefix).
fn output_fragment(slot: usize, fitted: &str) -> &str {
    match slot {
        10 | 11 => fitted.strip_prefix("secretsmanager:").unwrap_or(fitted),
        12 => fitted.strip_prefix("ssm:").unwrap_or(fitted),
        _ => fitted,
    }
}

/// What each benign slot value becomes in the hostile render: the part of each fitted value
/// that the generated files contain, benign → hostile.
pub fn substitutions(benign: &[String], hostile: &[String]) -> Vec<(String, String)> {
    benign
        .iter()
        .zip(hostile)
        .enumerate()
        .map(|(i, (b, h))| {
            (
                output_fragment(i, b).to_owned(),
                output_fragment(i, h).to_owned(),
            )
        })
        .collect()
}

/// The placeholder of slot `i`: letters and digits only, so no escaping changes it.
pub fn placeholder(i: usize) -> String {
    format!("pfprobe{i}q")
}

/// Parses an output file into JSON (YAML files through the spanned loader, without tags).
pub fn parse_output(path: &str, bytes: &[u8]) -> Result<Json> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::other(
            format!("`{path}` is not UTF-8"),
            "generated files must be UTF-8",
        )
    })?;
    if path.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| {
            Error::other(
                format!("`{path}` is not valid JSON: {e}"),
                "fix the template",
            )
        })
    } else {
        let file = SourceFile::new(path, text);
        let node = parse(&file, ParseOptions::default()).map_err(|d| {
            Error::other(
                format!("`{path}` is not valid YAML: {}", d.message),
                "fix the template",
            )
        })?;
        Ok(crate::schema::check(&node, &Json::Bool(true), &file).value)
    }
}

fn is_hash(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// JSON-escaped content of `s` without the surrounding quotes.
fn escaped_inner(s: &str) -> String {
    let q = quote(s);
    q[1..q.len() - 1].to_owned()
}

/// Compares a benign and a hostile document: same shape; strings equal after replacing the
/// placeholders with their hostile values (raw or escaped). Returns the first difference.
pub fn compare(
    benign: &Json,
    hostile: &Json,
    subst: &[(String, String)],
    path: &str,
) -> Option<String> {
    match (benign, hostile) {
        (Json::Object(a), Json::Object(b)) => {
            if a.keys().ne(b.keys()) {
                let ka: Vec<&String> = a.keys().collect();
                let kb: Vec<&String> = b.keys().collect();
                return Some(format!("`{path}`: keys {ka:?} became {kb:?}"));
            }
            a.iter()
                .find_map(|(k, v)| compare(v, &b[k], subst, &format!("{path}.{k}")))
        }
        (Json::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("`{path}`: {} items became {}", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| compare(x, y, subst, &format!("{path}[{i}]")))
        }
        (Json::String(a), Json::String(b)) => {
            if a == b || (is_hash(a) && is_hash(b)) {
                return None;
            }
            // In a `Fn::Sub` string a value holding `${…}` is a new reference, not text.
            if path.contains(".Fn::Sub") && a.matches("${").count() != b.matches("${").count() {
                return Some(format!(
                    "`{path}`: {a:?} became {b:?}, which adds a `${{…}}` substitution"
                ));
            }
            let raw = subst
                .iter()
                .fold(a.clone(), |acc, (p, h)| acc.replace(p, h));
            if &raw == b {
                return None;
            }
            let esc = subst
                .iter()
                .fold(a.clone(), |acc, (p, h)| acc.replace(p, &escaped_inner(h)));
            if &esc == b {
                return None;
            }
            // A hash of content that contains the value changes with it.
            if !subst.iter().any(|(p, _)| a.contains(p.as_str())) {
                return Some(format!(
                    "`{path}`: {a:?} became {b:?} although it holds no manifest value"
                ));
            }
            Some(format!(
                "`{path}`: {a:?} became {b:?}, not the value in its own slot"
            ))
        }
        (a, b) if a == b => None,
        // Sizes of generated files change with the length of the values in them.
        (Json::Number(_), Json::Number(_)) if path.ends_with(".template_bytes") => None,
        (a, b) => Some(format!("`{path}`: {a} became {b}")),
    }
}

/// Compares two renders file by file.
pub fn compare_outputs(
    benign: &Outputs,
    hostile: &Outputs,
    subst: &[(String, String)],
) -> Result<()> {
    let names_a: Vec<&str> = benign.iter().map(|(p, _)| p).collect();
    let names_b: Vec<&str> = hostile.iter().map(|(p, _)| p).collect();
    if names_a != names_b {
        return Err(Error::other(
            format!("the set of generated files changed: {names_a:?} became {names_b:?}"),
            "manifest values must never add or remove files",
        ));
    }
    for (path, bytes) in benign.iter() {
        let a = parse_output(path, bytes)?;
        let b = parse_output(path, hostile.get(path).unwrap_or_default())?;
        if let Some(diff) = compare(&a, &b, subst, path) {
            return Err(Error::other(
                format!("a manifest value changed the structure of `{path}`: {diff}"),
                "every `{{ value }}` in the templates must be escaped; `| safe` is only for validated names and numbers",
            ));
        }
    }
    Ok(())
}

/// Renders the probe manifest for `language` with the given slot values.
pub fn render_probe(
    language: &str,
    values: &[String],
    org: &OrgPolicy,
    catalog: &Catalog,
    templates: &Templates,
) -> Result<Outputs> {
    let text = manifest_text(language, values);
    let file = SourceFile::new("<probe pipeline.yml>", text);
    Ok(crate::generate_with(&file, org, catalog, templates)?.outputs)
}

/// Runs the probe for every language and every [`HOSTILE`] string. Strings that validation
/// rejects are safe by definition and skipped; at least half must be accepted for the probe to
/// mean anything.
pub fn injection_probe(catalog: &Catalog, templates: &Templates) -> Result<()> {
    let org = crate::org::embedded()?;
    let benign_values: Vec<String> = (0..SLOTS)
        .map(|i| fit_to_slot(i, &placeholder(i)))
        .collect();
    let mut accepted = 0usize;
    let mut tried = 0usize;
    let mut first_rejection: BTreeMap<String, String> = BTreeMap::new();
    for language in catalog.names() {
        let benign = render_probe(language, &benign_values, &org, catalog, templates)?;
        for h in HOSTILE {
            tried += 1;
            let hostile_values: Vec<String> = (0..SLOTS).map(|i| fit_to_slot(i, h)).collect();
            let outputs = match render_probe(language, &hostile_values, &org, catalog, templates) {
                Ok(o) => o,
                Err(Error::Invalid(d)) => {
                    first_rejection.entry((*h).to_owned()).or_insert_with(|| {
                        d.0.first().map(|x| x.message.clone()).unwrap_or_default()
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            accepted += 1;
            let subst = substitutions(&benign_values, &hostile_values);
            compare_outputs(&benign, &outputs, &subst).map_err(|e| {
                Error::other(
                    format!("language `{language}`, hostile value {:?}: {e}", h),
                    "see the message above",
                )
            })?;
        }
    }
    safe_slots_probe(catalog, templates, &org, &benign_values)?;
    if accepted * 2 < tried {
        return Err(Error::other(
            format!(
                "only {accepted} of {tried} hostile manifests were accepted, so the probe proves little: {first_rejection:?}"
            ),
            "the org policy rejects most probe values; run the probe with the embedded policy",
        ));
    }
    Ok(())
}

/// The `| safe` slots get every hostile string as it is, one slot at a time (the others
/// benign): validation must refuse it, or the outputs must keep their structure. This is what
/// catches a loosened name validation, which the fitted values of [`injection_probe`] cannot.
fn safe_slots_probe(
    catalog: &Catalog,
    templates: &Templates,
    org: &OrgPolicy,
    benign_values: &[String],
) -> Result<()> {
    let Some(language) = catalog.names().next() else {
        return Ok(());
    };
    let benign = render_probe(language, benign_values, org, catalog, templates)?;
    for slot in SAFE_SLOTS {
        for h in HOSTILE {
            let mut values = benign_values.to_vec();
            values[slot] = raw_for_slot(slot, h);
            let outputs = match render_probe(language, &values, org, catalog, templates) {
                Ok(o) => o,
                Err(Error::Invalid(_)) => continue,
                Err(e) => return Err(e),
            };
            compare_outputs(&benign, &outputs, &substitutions(benign_values, &values)).map_err(
                |e| {
                    Error::other(
                        format!("slot {slot} (printed with `| safe`), hostile value {h:?}: {e}"),
                        "validate the names printed with `| safe` to the characters AWS allows",
                    )
                },
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_file_keeps_its_structure_under_hostile_values() {
        let catalog = Catalog::load(None).expect("catalog");
        let templates = Templates::load(None).expect("templates");
        injection_probe(&catalog, &templates)
            .expect("no manifest value changes any file's structure");
    }

    #[test]
    fn the_probe_catches_an_unescaped_value() {
        // A stack template that prints an e-mail address unescaped lets it add properties.
        let dir = tempfile::tempdir().expect("tempdir");
        let stacks = dir.path().join("stacks");
        std::fs::create_dir_all(&stacks).expect("mkdir");
        let src = crate::assets::get("templates/stacks/pipeline.yml.tera").expect("embedded");
        let broken = src.replace("Endpoint: {{ e }}", "Endpoint: {{ e | safe }}");
        assert_ne!(broken, src, "the template changed shape; update this test");
        std::fs::write(stacks.join("pipeline.yml.tera"), broken).expect("write");
        let catalog = Catalog::load(None).expect("catalog");
        let templates = Templates::load(Some(dir.path())).expect("templates");
        assert!(injection_probe(&catalog, &templates).is_err());
    }
}
