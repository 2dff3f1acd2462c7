//! The render-input digest: what a pipeline's rendered files are a function of, hashed, so
//! that `fleet plan` can tell "this candidate renders the same files" without rendering.
//!
//! Rendering is pure. The files depend on: the manifest's text; the repository it deploys from
//! (waivers by repository, the org's `teams`); the pipeline's name and team (its placement);
//! the org policy (as loaded: formatting and comments do not count); the one catalog language
//! the manifest uses, shared steps merged in; the templates its render uses (each gate's
//! buildspec template, the stack templates of its stack kinds, and every template those include
//! or extend) and the set's label, which the stacks record; the tooling account it is placed
//! in; the code that renders ([`RENDERER`]: the package version and a digest of the sources and
//! of `Cargo.lock`); and the day, only through the dated rules and waivers: where the day falls
//! against every date of the org policy. [`InputDigest::digest`] hashes exactly these. The file
//! names of the manifest, the org policy and the language files are left out: they appear in
//! diagnostics and notices only, never in a rendered file.
//!
//! The digest has two sides. The **set's side** ([`InputDigest::set_digest`]) is what a
//! candidate can change: the renderer, the org policy and the day's position against its dates,
//! the language entry, the templates the render uses and the set's label. The **pipeline's
//! side** is the record's own content, which a plan never changes: the manifest, repository,
//! name, team and tooling account. The full digest hashes the set's digest with the pipeline's
//! side, so two pipelines with the same set digest and a candidate that gives that set digest
//! again both keep their full digests.
//!
//! A deploy records the digest of its render in its deploy record ([`RenderInputs`]); the
//! fleet plan computes the candidate's digest for each record and reports a pipeline unchanged,
//! without rendering, when both are equal. The deploy also names the set digest in a listing
//! key next to the record ([`crate::publish::record::listing_key`]), so that the plan can
//! decide whole groups of pipelines from the bucket's listing, without reading their records
//! ([`crate::fleet::index`]). The set digest is recorded only when the pipeline is placed where
//! the policy places it first ([`crate::capacity::placement::provisional`], which is what a
//! plan renders with): then the pipeline's side is the same for the candidate as for the
//! deploy whenever the set's side is. Who can write the record: the deployers only (the
//! worker, and whoever holds the org's bootstrap role, as the CLI's deploy does; a pipeline's
//! builds may only read their own source snapshot in the bucket). A record whose digest lies
//! can only make the plan report a pipeline as unchanged that a deploy would change (and so
//! leave it out of a rollout's waves). It never causes a deploy: a digest only ever turns a
//! render into "unchanged", every deploy renders again from the manifest, and drift detection
//! compares what is deployed, not the record's digest. The listing key is written with the same
//! rights as the record, and a forged or stale one can do no more than a lying digest: make the
//! plan report a pipeline unchanged. It names the record's ETag, so a key left behind by an
//! earlier deploy no longer matches the record and is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::Inputs;
use crate::date::Date;
use crate::org::ToolingAccount;
use crate::render::buildspec::template_name;
use crate::render::templates::{
    TEMPLATE_PIPELINE_STACK, TEMPLATE_REGION_STACK, TEMPLATE_TARGET_STACK,
};

/// The code that renders: the package version and a digest of the sources and locked
/// dependencies (computed by `build.rs`).
pub const RENDERER: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("PIPEFORGE_RENDERER"));

/// Version of the digest's layout: a new layout never matches an old digest.
const LAYOUT: u32 = 2;

/// What a deploy record says about the inputs of its render.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderInputs {
    /// `sha256:<hex>` of every input of the render ([`InputDigest::digest`]).
    pub digest: String,
    /// `sha256:<hex>` of the set's side alone ([`InputDigest::set_digest`]); absent when the
    /// pipeline is placed elsewhere than the policy places it first (its render depends on the
    /// recorded placement, which a listing cannot show), and in records written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The catalog language the manifest uses.
    pub language: String,
    /// The gates rendered (each a buildspec), in plan order.
    pub gates: Vec<String>,
    /// The stack templates rendered.
    pub stacks: Vec<String>,
}

/// One pipeline's side of the digest: what the render reads besides the candidate set.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// Its team.
    pub team: &'a str,
    /// The repository it deploys from.
    pub repository: &'a str,
    /// The manifest's text.
    pub manifest_text: &'a str,
    /// The language, gates and stacks of its render.
    pub language: &'a str,
    /// See [`RenderInputs::gates`].
    pub gates: &'a [String],
    /// See [`RenderInputs::stacks`].
    pub stacks: &'a [String],
    /// The tooling account it is placed in.
    pub tooling: &'a ToolingAccount,
}

impl Subject<'_> {
    /// Its set's side.
    pub fn set_side(&self) -> SetSide<'_> {
        SetSide {
            language: self.language,
            gates: self.gates,
            stacks: self.stacks,
        }
    }
}

/// What the set's side of a digest depends on besides the set itself: the language, gates and
/// stack templates of a render.
#[derive(Clone, Copy, Debug)]
pub struct SetSide<'a> {
    /// The catalog language.
    pub language: &'a str,
    /// See [`RenderInputs::gates`].
    pub gates: &'a [String],
    /// See [`RenderInputs::stacks`].
    pub stacks: &'a [String],
}

impl<'a> SetSide<'a> {
    /// The set's side recorded in `inputs`.
    pub fn of(inputs: &'a RenderInputs) -> SetSide<'a> {
        SetSide {
            language: &inputs.language,
            gates: &inputs.gates,
            stacks: &inputs.stacks,
        }
    }
}

/// The stack template a stack kind renders with.
pub fn stack_template(kind: crate::plan::StackKind) -> &'static str {
    match kind {
        crate::plan::StackKind::Target => TEMPLATE_TARGET_STACK,
        crate::plan::StackKind::Region => TEMPLATE_REGION_STACK,
        crate::plan::StackKind::Pipeline => TEMPLATE_PIPELINE_STACK,
    }
}

/// Digests of a set of inputs (org policy, catalog, templates) on one day: the parts shared by
/// every pipeline are computed once, the language and template parts once per name, and the
/// set's digest once per set side (language, gates, stacks): once per group of pipelines that
/// share them, whatever the group's size.
#[derive(Debug)]
pub struct InputDigest<I> {
    inputs: I,
    /// Renderer, org policy and the day's position against its dates.
    base: String,
    languages: Mutex<BTreeMap<String, Option<String>>>,
    templates: Mutex<BTreeMap<String, Option<String>>>,
    /// Set digests by set side, at most [`MAX_SETS`].
    sets: Mutex<BTreeMap<SetKey, Option<String>>>,
}

/// A set side as a key: (language, gates, stacks).
type SetKey = (String, Vec<String>, Vec<String>);

/// How many set sides an [`InputDigest`] remembers the digest of (a few per language and gate
/// combination in practice); further ones are computed each time.
pub const MAX_SETS: usize = 4096;

/// The set's side.
#[derive(Serialize)]
struct SetLayout<'a> {
    layout: u32,
    base: &'a str,
    language: &'a str,
    language_entry: String,
    template_set: &'a str,
    /// (gate, template, digest of the template and what it includes).
    gates: Vec<(&'a str, String, String)>,
    /// (template, digest).
    stacks: Vec<(&'a str, String)>,
}

/// The whole digest: the set's digest and the pipeline's side.
#[derive(Serialize)]
struct Layout<'a> {
    layout: u32,
    set: &'a str,
    pipeline: &'a str,
    team: &'a str,
    repository: &'a str,
    manifest: String,
    /// account, region, bucket, key.
    tooling: (&'a str, &'a str, &'a str, &'a str),
}

impl<I: std::ops::Deref<Target = Inputs>> InputDigest<I> {
    /// The digests of `inputs` (`&Inputs`, `Arc<Inputs>`) on `today`.
    pub fn new(inputs: I, today: Option<Date>) -> InputDigest<I> {
        let org = serde_json::to_value(&inputs.org.org).unwrap_or_default();
        let base = serde_json::json!({
            "renderer": RENDERER,
            "org": crate::outputs::sha256(org.to_string().as_bytes()),
            "dates": day_position(&org, today),
        });
        InputDigest {
            inputs,
            base: base.to_string(),
            languages: Mutex::new(BTreeMap::new()),
            templates: Mutex::new(BTreeMap::new()),
            sets: Mutex::new(BTreeMap::new()),
        }
    }

    /// `sha256:<hex>` of every input of `subject`'s render with these inputs; `None` when a
    /// part cannot be digested (a language or template the set does not have): the pipeline
    /// must be rendered.
    pub fn digest(&self, subject: &Subject<'_>) -> Option<String> {
        let set = self.set_digest(&subject.set_side())?;
        full_digest(&set, subject)
    }

    /// `sha256:<hex>` of the set's side of a render of `side` with these inputs (the
    /// renderer, org policy and day, the language entry, the templates and the set's label);
    /// `None` as for [`InputDigest::digest`]. Computed once per side (remembered).
    pub fn set_digest(&self, side: &SetSide<'_>) -> Option<String> {
        let key: SetKey = (
            side.language.to_owned(),
            side.gates.to_vec(),
            side.stacks.to_vec(),
        );
        if let Some(known) = self.lock_sets().get(&key) {
            return known.clone();
        }
        let digest = self.compute_set_digest(side);
        let mut sets = self.lock_sets();
        if sets.len() < MAX_SETS {
            sets.insert(key, digest.clone());
        }
        digest
    }

    fn lock_sets(&self) -> std::sync::MutexGuard<'_, BTreeMap<SetKey, Option<String>>> {
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`InputDigest::set_digest`], computed.
    fn compute_set_digest(&self, side: &SetSide<'_>) -> Option<String> {
        let gates = side
            .gates
            .iter()
            .map(|g| {
                let name = template_name(&self.inputs.templates, g);
                let d = self.template(&name)?;
                Some((g.as_str(), name, d))
            })
            .collect::<Option<Vec<_>>>()?;
        let stacks = side
            .stacks
            .iter()
            .map(|s| Some((s.as_str(), self.template(s)?)))
            .collect::<Option<Vec<_>>>()?;
        let layout = SetLayout {
            layout: LAYOUT,
            base: &self.base,
            language: side.language,
            language_entry: self.language(side.language)?,
            template_set: self.inputs.templates.set_name(),
            gates,
            stacks,
        };
        let bytes = serde_json::to_vec(&layout).ok()?;
        Some(crate::outputs::sha256(&bytes))
    }

    /// The language entry (shared steps merged); `None` when the catalog has no such
    /// language (nothing is kept for a name from a record that the catalog does not know).
    fn language(&self, name: &str) -> Option<String> {
        let entry = self.inputs.catalog.language(name)?;
        let mut cache = self.languages.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(name.to_owned())
            .or_insert_with(|| Some(crate::outputs::sha256(&serde_json::to_vec(entry).ok()?)))
            .clone()
    }

    /// A template's text and the text of every template it includes or extends, by name;
    /// `None` when the set has no such template (not kept, as for languages).
    fn template(&self, name: &str) -> Option<String> {
        if !self.inputs.templates.has(name) {
            return None;
        }
        let mut cache = self.templates.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(name.to_owned())
            .or_insert_with(|| template_closure(&self.inputs.templates, name))
            .clone()
    }
}

/// The whole digest from the set's digest and the pipeline's side of `subject`.
fn full_digest(set: &str, subject: &Subject<'_>) -> Option<String> {
    let layout = Layout {
        layout: LAYOUT,
        set,
        pipeline: subject.pipeline,
        team: subject.team,
        repository: subject.repository,
        manifest: crate::outputs::sha256(subject.manifest_text.as_bytes()),
        tooling: (
            &subject.tooling.account,
            &subject.tooling.region,
            &subject.tooling.bucket,
            &subject.tooling.kms_key,
        ),
    };
    let bytes = serde_json::to_vec(&layout).ok()?;
    Some(crate::outputs::sha256(&bytes))
}

/// Digest of `name` and everything it pulls in. Tera includes and extends name their
/// templates with string literals, which are followed; a component call (`<Name …>`, defined
/// in any template of the set) cannot be traced by name, so a template that may call one
/// digests the whole set instead.
fn template_closure(templates: &crate::render::Templates, name: &str) -> Option<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    let mut all = Vec::new();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        let text = templates.source(&n)?;
        let Some(refs) = references(text) else {
            return Some(format!("set:{}", templates.content_hash()));
        };
        all.extend_from_slice(n.as_bytes());
        all.push(0);
        all.extend_from_slice(text.as_bytes());
        all.push(0);
        todo.extend(refs.into_iter().filter(|r| templates.has(r)));
    }
    Some(crate::outputs::sha256(&all))
}

/// The templates a template's tags name (`include`, `extends`); `None` when a tag or
/// expression may call a component.
fn references(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let close = match after.as_bytes().first() {
            Some(b'%') => "%}",
            Some(b'{') => "}}",
            _ => {
                rest = after;
                continue;
            }
        };
        let body = &after[1..];
        let end = body.find(close).unwrap_or(body.len());
        let tag = &body[..end];
        if calls_component(tag) {
            return None;
        }
        let words = tag.trim_start_matches('-').trim_start();
        if words.starts_with("include") || words.starts_with("extends") {
            out.extend(literals(tag));
        }
        rest = &body[end..];
    }
    Some(out)
}

/// True when `<` is directly followed by a letter (Tera's component call syntax).
fn calls_component(tag: &str) -> bool {
    tag.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && w[1].is_ascii_alphabetic())
}

/// The string literals of a tag.
fn literals(tag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(i) = rest.find(['"', '\'', '`']) {
        let quote = &rest[i..=i];
        let after = &rest[i + 1..];
        let Some(len) = after.find(quote) else { break };
        out.push(after[..len].to_owned());
        rest = &after[len + 1..];
    }
    out
}

/// Where `today` falls against every date of the org policy: dated rules and waivers decide by
/// comparing with the day, so two days in the same position render the same. A rule's
/// `enforce_from` counts from that day on (`today >= date`), a waiver's `expires` is its last
/// day (`today > date`); any other date in the policy gives `<`, `=` or `>`. Without a day
/// every rule is enforced and no waiver applies; with no date in the policy, the day does not
/// matter at all.
fn day_position(org: &serde_json::Value, today: Option<Date>) -> String {
    let mut dates = BTreeSet::new();
    collect_dates(org, "", &mut dates);
    if dates.is_empty() {
        return String::new();
    }
    let Some(today) = today else {
        return "strict".to_owned();
    };
    let mut out = String::new();
    for (d, rule) in &dates {
        let c = match *rule {
            DateRule::From => ['<', '>'][usize::from(today >= *d)],
            DateRule::Until => ['<', '>'][usize::from(today > *d)],
            DateRule::Other => match today.cmp(d) {
                std::cmp::Ordering::Less => '<',
                std::cmp::Ordering::Equal => '=',
                std::cmp::Ordering::Greater => '>',
            },
        };
        out.push(c);
    }
    out
}

/// How the policy's code compares a date with the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DateRule {
    /// `enforce_from`: in force from that day on.
    From,
    /// `expires`: the last day it holds.
    Until,
    /// Anything else: every position counts.
    Other,
}

fn collect_dates(v: &serde_json::Value, key: &str, out: &mut BTreeSet<(Date, DateRule)>) {
    match v {
        serde_json::Value::String(s) => {
            if let Some(d) = Date::parse(s) {
                let rule = match key {
                    "enforce_from" => DateRule::From,
                    "expires" => DateRule::Until,
                    _ => DateRule::Other,
                };
                out.insert((d, rule));
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_dates(x, key, out)),
        serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| collect_dates(x, k, out)),
        _ => {}
    }
}

/// The render inputs of a deploy: `prepared` rendered with `inputs`.
pub fn of_prepared(prepared: &super::Prepared, inputs: &Inputs) -> Option<RenderInputs> {
    let plan = prepared.plan();
    let gates: Vec<String> = plan.gates.iter().map(|g| g.name.clone()).collect();
    let mut stacks: Vec<String> = plan
        .stacks
        .iter()
        .map(|s| stack_template(s.kind).to_owned())
        .collect();
    stacks.sort();
    stacks.dedup();
    let tooling = ToolingAccount {
        account: plan.pipeline.tooling_account.clone(),
        region: plan.pipeline.region.clone(),
        bucket: plan.source.bucket.value.clone(),
        kms_key: plan.source.kms_key.value.clone(),
        capacity: None,
    };
    let subject = Subject {
        pipeline: &plan.pipeline.name,
        team: &plan.pipeline.team,
        repository: prepared.repository.as_str(),
        manifest_text: &prepared.manifest_text,
        language: &plan.pipeline.language,
        gates: &gates,
        stacks: &stacks,
        tooling: &tooling,
    };
    let digests = InputDigest::new(inputs, prepared.today);
    let set = digests.set_digest(&subject.set_side())?;
    let digest = full_digest(&set, &subject)?;
    // A plan renders with the first placement the policy gives; a pipeline placed elsewhere
    // (moved, or placed by capacity) has another pipeline side than the plan computes.
    let first = crate::capacity::placement::provisional(
        &inputs.org,
        &plan.pipeline.name,
        &plan.pipeline.team,
    );
    let provisional = (&first.account, &first.region, &first.bucket, &first.kms_key)
        == (
            &tooling.account,
            &tooling.region,
            &tooling.bucket,
            &tooling.kms_key,
        );
    Some(RenderInputs {
        digest,
        set: provisional.then_some(set),
        language: plan.pipeline.language.clone(),
        gates,
        stacks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_and_extends_are_followed_and_components_are_not_traceable() {
        let text = "{% extends \"base.tera\" %}{% block a %}{{ x }}{%- include 'part.tera' -%}{% endblock %}";
        assert_eq!(
            references(text),
            Some(vec!["base.tera".to_owned(), "part.tera".to_owned()])
        );
        assert_eq!(references("{{ <Card title=x /> }}"), None);
        assert_eq!(references("{% if a < b %}x{% endif %}"), Some(vec![]));
        assert_eq!(references("a { b } {"), Some(vec![]));
    }

    #[test]
    fn the_day_counts_only_against_the_policy_dates() {
        let org = serde_json::json!({
            "rules": [{"enforce_from": "2026-09-01"}],
            "waivers": [{"expires": "2026-11-15"}],
            "other": "2026-10-01",
        });
        let d = |s: &str| Date::parse(s);
        let at = |s: &str| day_position(&org, d(s));
        assert_eq!(at("2026-08-01"), "<<<");
        assert_eq!(at("2026-08-31"), "<<<");
        // Enforced from its day on.
        assert_eq!(at("2026-09-01"), "><<");
        assert_eq!(at("2026-09-30"), "><<");
        assert_eq!(at("2026-10-01"), ">=<");
        assert_eq!(at("2026-10-02"), ">><");
        // A waiver holds on its last day, not after.
        assert_eq!(at("2026-11-15"), ">><");
        assert_eq!(at("2026-11-16"), ">>>");
        assert_eq!(day_position(&org, None), "strict");
        assert_eq!(day_position(&serde_json::json!({"a": "x"}), None), "");
        assert_eq!(
            day_position(&serde_json::json!({"a": "x"}), d("2026-01-01")),
            ""
        );
    }
}
