//! `fleet plan` skips what cannot have changed, against a real local AWS server: a deploy
//! records the digest of its render's inputs, and a plan whose candidate gives the same digest
//! reports the pipeline unchanged without rendering it. Each test seeds its own pipelines (its
//! own name prefix) as deploys leave them and counts what the plan rendered.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pipeforge::Inputs;
use pipeforge::date::Date;
use pipeforge::fleet::plan::{self, Change, Impact, Outcome, Planner, Summary};
use pipeforge::fleet::rollout::{self, RolloutOptions};
use pipeforge::fleet::seed::{self, SeedPipeline};
use pipeforge::fleet::{self, Scope};
use pipeforge::publish::record::DeployedRecord;
use support::{Quiet, Server, curl_rule, example, python_bumped, root, server};

const BUCKET: &str = "example-pipeforge-source";

/// A file that outlives the test process's tests (the server is keyed by its path).
fn org_path() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp").keep();
        let p = dir.join("org.yaml");
        std::fs::copy(root().join("examples/org.yaml"), &p).expect("copy org");
        p
    })
}

fn srv() -> &'static Server {
    server(Some(org_path()))
}

fn org_text() -> String {
    std::fs::read_to_string(root().join("examples/org.yaml")).expect("org")
}

/// Inputs from an org text and optional language and template directories.
fn candidate(
    org_text: &str,
    languages: Option<&Path>,
    templates: Option<&Path>,
) -> (tempfile::TempDir, Inputs) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("org.yaml");
    std::fs::write(&p, org_text).expect("write org");
    let inp = Inputs::load(Some(&p), languages, templates).expect("inputs");
    (dir, inp)
}

fn day(s: &str) -> Option<Date> {
    Some(Date::parse(s).expect("day"))
}

/// `count` pipelines `<prefix>-NNNNN` of team payments; pipeline 1 pipes a download into a
/// shell.
fn fleet_of(prefix: &str, count: usize, deployed_on: &str) -> Vec<SeedPipeline> {
    let mut v = seed::variants(&example("x"), prefix, &[("payments", "payments")], count);
    for (i, p) in v.iter_mut().enumerate() {
        p.today = day(deployed_on);
        if i == 1 {
            p.manifest = p.manifest.replace(
                "commands: [\"make build\"]",
                "commands: [\"curl -fsSL https://get.example.com | sh\", \"make build\"]",
            );
        }
    }
    v
}

async fn seed_all(pipelines: Vec<SeedPipeline>, inputs: Inputs) {
    let aws = Arc::new(srv().aws().await);
    let n = pipelines.len();
    let seeded = seed::seed(aws, Arc::new(inputs), pipelines, false, 8, |_| {})
        .await
        .expect("seed");
    assert_eq!(seeded, n);
}

/// Every impact of the pipelines named `<prefix>-…`, from a scan with `candidate` on `today`.
async fn plan(prefix: &str, candidate: Inputs, today: &str) -> (Vec<Impact>, Summary) {
    let aws = srv().aws().await;
    let where_ = candidate.org.org.clone();
    let planner = Arc::new(Planner::new(Arc::new(candidate), day(today)));
    let mut all = Vec::new();
    let mut summary = Summary::default();
    let scope = Scope {
        only: Some(format!("{prefix}-*")),
        window: 8,
    };
    fleet::scan(&aws, &where_, planner, &scope, |i| {
        summary.add(&i);
        all.push(i);
        Ok(())
    })
    .await
    .expect("scan");
    all.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    (all, summary)
}

fn impact<'a>(all: &'a [Impact], name: &str) -> &'a Impact {
    all.iter()
        .find(|i| i.pipeline == name)
        .unwrap_or_else(|| panic!("{name} in the plan"))
}

async fn s3() -> aws_sdk_s3::Client {
    let srv = srv();
    support::s3(&srv.aws().await, &srv.region)
}

fn record_key(pipeline: &str) -> String {
    format!("pipelines/{pipeline}/deployed.json")
}

async fn read_record(pipeline: &str) -> DeployedRecord {
    let body = s3()
        .await
        .get_object()
        .bucket(BUCKET)
        .key(record_key(pipeline))
        .send()
        .await
        .expect("get record")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    DeployedRecord::parse(&body, "record").expect("parse")
}

async fn write_record(record: &DeployedRecord) {
    s3().await
        .put_object()
        .bucket(BUCKET)
        .key(record_key(&record.pipeline))
        .body(record.to_bytes().into())
        .send()
        .await
        .expect("put record");
}

#[tokio::test]
async fn unchanged_inputs_are_not_rendered_and_a_language_change_renders_only_its_pipelines() {
    let pipelines = seed::with_languages(fleet_of("dl", 8, "2026-01-01"), &["python", "node"]);
    let (_d, inputs) = candidate(&org_text(), None, None);
    seed_all(pipelines, inputs).await;
    let rec = read_record("dl-00000").await;
    let recorded = rec.inputs.as_ref().expect("a deploy records its inputs");
    assert_eq!(recorded.language, "python");
    assert!(recorded.digest.starts_with("sha256:"), "{recorded:?}");
    assert_eq!(
        read_record("dl-00001")
            .await
            .inputs
            .expect("digest")
            .language,
        "node"
    );

    // The same inputs, on another day (the policy has no dated rule): nothing is rendered.
    let (_d, same) = candidate(&org_text(), None, None);
    let (all, s) = plan("dl", same, "2026-06-01").await;
    assert_eq!(all.len(), 8);
    assert_eq!(s.count(Outcome::Unchanged), 8, "{s:?}");
    assert_eq!(s.same_inputs, 8, "{all:#?}");
    assert!(plan::summary_text(&s).contains("8 unchanged (8 with the inputs deployed"));

    // Python's catalog entry changes: only the Python pipelines are rendered, and they change.
    let (_l, langs) = python_bumped();
    let (_d, bumped) = candidate(&org_text(), Some(&langs), None);
    let (all, s) = plan("dl", bumped, "2026-06-01").await;
    assert_eq!(s.same_inputs, 4, "{all:#?}");
    assert_eq!(s.count(Outcome::Changed), 4, "{s:?}");
    for (i, p) in all.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(p.outcome, Outcome::Changed, "{p:?}");
            assert!(!p.same_inputs);
            let lint = p
                .files
                .iter()
                .find(|f| f.path == "buildspecs/lint.yml")
                .unwrap_or_else(|| panic!("the lint buildspec of {} changes", p.pipeline));
            assert_eq!(lint.change, Change::Modified);
        } else {
            assert_eq!(p.outcome, Outcome::Unchanged, "{p:?}");
            assert!(p.same_inputs, "{p:?}");
        }
    }

    // A gate's own template, added by the candidate: every pipeline with that gate renders
    // (both languages have it), and a change to a template no render uses renders nothing.
    let t = tempfile::tempdir().expect("tmp");
    let set = t.path().join("org-templates");
    std::fs::create_dir_all(set.join("bootstrap")).expect("mkdir");
    let boot = std::fs::read_to_string(root().join("templates/bootstrap/target.yml.tera"))
        .expect("bootstrap template");
    std::fs::write(
        set.join("bootstrap/target.yml.tera"),
        format!("{boot}\n# edited\n"),
    )
    .expect("write");
    let (_d, base) = candidate(&org_text(), None, Some(&set));
    // The set's label is in every stack: the fleet deployed with this set first.
    let (_d, seeded) = candidate(&org_text(), None, Some(&set));
    seed_all(
        seed::with_languages(fleet_of("dt", 4, "2026-01-01"), &["python", "node"]),
        seeded,
    )
    .await;
    let (_, s) = plan("dt", base, "2026-06-01").await;
    assert_eq!(s.same_inputs, 4, "{s:?}");
    std::fs::write(
        set.join("bootstrap/target.yml.tera"),
        format!("{boot}\n# edited again\n"),
    )
    .expect("write");
    let (_d, unused) = candidate(&org_text(), None, Some(&set));
    let (_, s) = plan("dt", unused, "2026-06-01").await;
    assert_eq!(
        s.same_inputs, 4,
        "a template no render uses changes nothing: {s:?}"
    );
    let gate = std::fs::read_to_string(root().join("templates/buildspec/gate.yml.tera"))
        .expect("gate template");
    std::fs::create_dir_all(set.join("buildspec")).expect("mkdir");
    std::fs::write(set.join("buildspec/lint.yml.tera"), &gate).expect("write");
    let (_d, own) = candidate(&org_text(), None, Some(&set));
    let (all, s) = plan("dt", own, "2026-06-01").await;
    assert_eq!(s.same_inputs, 0, "{all:#?}");
    // The same text under the gate's own name renders the same files.
    assert_eq!(s.count(Outcome::Unchanged), 4, "{s:?}");
}

#[tokio::test]
async fn a_record_without_a_digest_or_with_another_is_rendered() {
    let (_d, inputs) = candidate(&org_text(), None, None);
    seed_all(fleet_of("dn", 3, "2026-01-01"), inputs).await;
    // An older record: no digest.
    let mut old = read_record("dn-00000").await;
    old.inputs = None;
    write_record(&old).await;
    // A manifest edited in the record, its digest kept: the digest no longer matches.
    let mut edited = read_record("dn-00002").await;
    edited.manifest.text = edited.manifest.text.replace("make build", "make build-all");
    write_record(&edited).await;

    let (_d, same) = candidate(&org_text(), None, None);
    let (all, s) = plan("dn", same, "2026-06-01").await;
    assert_eq!(s.same_inputs, 1, "{all:#?}");
    let old = impact(&all, "dn-00000");
    assert_eq!((old.outcome, old.same_inputs), (Outcome::Unchanged, false));
    assert!(impact(&all, "dn-00001").same_inputs);
    let edited = impact(&all, "dn-00002");
    assert_eq!(
        (edited.outcome, edited.same_inputs),
        (Outcome::Changed, false)
    );
}

#[tokio::test]
async fn a_forged_digest_hides_a_change_from_the_plan_and_deploys_nothing() {
    let (_d, inputs) = candidate(&org_text(), None, None);
    seed_all(fleet_of("dx", 2, "2026-01-01"), inputs).await;
    // Whoever can write deploy records claims the inputs of a Python bump for a pipeline
    // deployed before it: the digest the candidate computes for this record.
    let (_l, langs) = python_bumped();
    let (_d, bumped) = candidate(&org_text(), Some(&langs), None);
    let bumped = Arc::new(bumped);
    let mut forged = read_record("dx-00000").await;
    let planner = Planner::new(Arc::clone(&bumped), day("2026-06-01"));
    assert!(!planner.same_inputs(&forged));
    let pipeline = forged.pipeline.clone();
    let mut claimed = forged.inputs.clone().expect("digest");
    claimed.digest = forged_digest(&bumped, &forged, day("2026-06-01"));
    forged.inputs = Some(claimed);
    assert!(planner.same_inputs(&forged), "the forged digest matches");
    write_record(&forged).await;

    let (_d, c) = candidate(&org_text(), Some(&langs), None);
    let (all, s) = plan("dx", c, "2026-06-01").await;
    // The plan is fooled for that pipeline (it reports what the record claims)...
    let hidden = impact(&all, &pipeline);
    assert_eq!(
        (hidden.outcome, hidden.same_inputs),
        (Outcome::Unchanged, true)
    );
    assert_eq!(impact(&all, "dx-00001").outcome, Outcome::Changed);
    assert_eq!(s.count(Outcome::Changed), 1);
    // ...and a rollout of the candidate leaves it out: a digest only ever turns a render into
    // "unchanged", never into a deploy.
    let r = rollout::rollout(
        &srv().aws().await,
        &bumped.org.org.clone(),
        Arc::clone(&bumped),
        &RolloutOptions {
            id: "dx-forged".to_owned(),
            waves: rollout::parse_waves("100%").expect("waves"),
            canaries: Vec::new(),
            max_failures: 1,
            dry_run: true,
            scope: Scope {
                only: Some("dx-*".to_owned()),
                window: 4,
            },
            today: Date::parse("2026-06-01").expect("day"),
            pipelines: None,
            deploy: support::options(),
            jobs: None,
        },
        &Quiet,
        &support::Events::default(),
    )
    .await
    .expect("dry run");
    let waves: Vec<Vec<&str>> = r
        .state
        .waves
        .iter()
        .map(|w| w.iter().map(|i| i.pipeline.as_str()).collect())
        .collect();
    assert_eq!(waves, [vec!["dx-00001"]]);
}

/// The digest `candidate` computes for `record` (what a forger with write access could store).
fn forged_digest(candidate: &Inputs, record: &DeployedRecord, today: Option<Date>) -> String {
    let inputs = record.inputs.as_ref().expect("digest");
    let tooling =
        pipeforge::capacity::placement::provisional(&candidate.org, &record.pipeline, &record.team);
    pipeforge::publish::digest::InputDigest::new(candidate, today)
        .digest(&pipeforge::publish::digest::Subject {
            pipeline: &record.pipeline,
            team: &record.team,
            repository: &record.repository,
            manifest_text: &record.manifest.text,
            language: &inputs.language,
            gates: &inputs.gates,
            stacks: &inputs.stacks,
            tooling: &tooling,
        })
        .expect("a digest")
}

#[tokio::test]
async fn a_day_crossing_an_enforce_from_or_a_waiver_expiry_is_rendered() {
    // Deployed on 2026-08-01 under a rule enforced from 2026-09-01: pipeline 1 warned.
    let dated = curl_rule(&org_text(), Some("2026-09-01"), "");
    let (_d, inputs) = candidate(&dated, None, None);
    seed_all(fleet_of("dd", 3, "2026-08-01"), inputs).await;
    let culprit = "dd-00001";

    // Before the day: nothing rendered; the warning counts its days from today, as a render's.
    let (_d, c) = candidate(&dated, None, None);
    let (all, s) = plan("dd", c, "2026-08-15").await;
    assert_eq!(s.same_inputs, 3, "{all:#?}");
    let warned = impact(&all, culprit);
    assert!(
        warned.notices.iter().any(|n| n.contains("in 17 days")),
        "{:?}",
        warned.notices
    );
    let (_d, c) = candidate(&dated, None, None);
    let rendered = plan::compare(&read_record(culprit).await, &c, day("2026-08-15"));
    // The same message as a render's (the rest cites the org file, which differs by path).
    let first_lines = |notices: &[String]| -> Vec<String> {
        notices
            .iter()
            .map(|n| n.lines().next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        first_lines(&warned.notices),
        first_lines(&rendered.impact.notices)
    );

    // From the day: every pipeline is rendered, and the culprit is invalid.
    let (_d, c) = candidate(&dated, None, None);
    let (all, s) = plan("dd", c, "2026-09-01").await;
    assert_eq!(s.same_inputs, 0, "{all:#?}");
    assert_eq!(impact(&all, culprit).outcome, Outcome::Invalid);
    assert_eq!(s.count(Outcome::Unchanged), 2, "{s:?}");

    // Deployed under a waiver that expires on 2026-11-15.
    let waiver = "waivers:\n  - {repository: \"payments/svc-00001\", rule: no-curl-pipe, reason: \"installer replaced in Q4\", approver: \"platform-lead@example.com\", expires: \"2026-11-15\"}\n";
    let waived = curl_rule(&org_text(), None, waiver);
    let (_d, inputs) = candidate(&waived, None, None);
    seed_all(fleet_of("dw", 3, "2026-10-01"), inputs).await;
    let (_d, c) = candidate(&waived, None, None);
    let (all, s) = plan("dw", c, "2026-11-15").await;
    assert_eq!(s.same_inputs, 3, "{all:#?}");
    assert!(
        impact(&all, "dw-00001")
            .notices
            .iter()
            .any(|n| n.contains("platform-lead@example.com")),
        "{all:#?}"
    );
    let (_d, c) = candidate(&waived, None, None);
    let (all, s) = plan("dw", c, "2026-11-16").await;
    assert_eq!(s.same_inputs, 0, "{all:#?}");
    let expired = impact(&all, "dw-00001");
    assert_eq!(expired.outcome, Outcome::Invalid);
    assert!(
        expired.diagnostics.contains("expired"),
        "{}",
        expired.diagnostics
    );
}
