//! Fleet operations against a real local AWS server (`ci/local-aws`): a real deploy writes the
//! deploy record and the bundle remembers its input; a synthetic fleet (several teams, seeded
//! as deploys leave it) is listed and planned with candidate templates and org policies
//! (a template change touching some pipelines, an org rule invalidating one, warn-then-enforce,
//! a waiver before and after its expiry).
//!
//! Every test uses its own pipeline-name prefix: the server and its bucket are shared.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pipeforge::Inputs;
use pipeforge::date::Date;
use pipeforge::fleet::candidate::CandidateFiles;
use pipeforge::fleet::drift::{Cause, DriftSummary, Drifter, PipelineDrift};
use pipeforge::fleet::plan::{Change, Impact, Outcome, Planner, Summary};
use pipeforge::fleet::rollout::{self, PipelineState, RolloutOptions};
use pipeforge::fleet::seed::{self, SeedPipeline};
use pipeforge::fleet::{self, Entry, Records, Scope};
use pipeforge::publish::record::{DeployedRecord, INPUT_MANIFEST, INPUT_OWNER};
use support::{Events, Quiet, Repo, Server, curl_rule, example, options, root, server};

const BUCKET: &str = "example-pipeforge-source";

/// The example org with three teams.
fn fleet_org_text() -> String {
    let text = std::fs::read_to_string(root().join("examples/org.yaml")).expect("org");
    let anchor = "teams:\n  payments: {repositories: [\"payments/*\"]}\n";
    assert!(text.contains(anchor));
    text.replace(
        anchor,
        &format!("{anchor}  search: {{repositories: [\"search/*\"]}}\n  identity: {{repositories: [\"identity/*\"]}}\n"),
    )
}

/// A file that outlives the test process's tests (the server is keyed by its path).
fn org_path() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp").keep();
        let p = dir.join("org.yaml");
        std::fs::write(&p, fleet_org_text()).expect("write org");
        p
    })
}

fn srv() -> &'static Server {
    server(Some(org_path()))
}

/// Inputs from an org text and an optional template directory.
fn candidate(org_text: &str, templates: Option<&Path>) -> (tempfile::TempDir, Inputs) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("org.yaml");
    std::fs::write(&p, org_text).expect("write org");
    let inp = Inputs::load(Some(&p), None, templates).expect("inputs");
    (dir, inp)
}

const TEAMS: &[(&str, &str)] = &[
    ("payments", "payments"),
    ("search", "search"),
    ("identity", "identity"),
];

/// `count` pipelines `<prefix>-NNNNN`; every third has the optional `iac-scan` gate off and
/// pipeline 4 pipes a download into a shell.
fn fleet_of(prefix: &str, count: usize) -> Vec<SeedPipeline> {
    let mut v = seed::variants(&example("x"), prefix, TEAMS, count);
    for (i, p) in v.iter_mut().enumerate() {
        if i % 3 == 2 {
            p.manifest.push_str("gates: {iac-scan: {enabled: false}}\n");
        }
        if i == 4 {
            p.manifest = p.manifest.replace(
                "commands: [\"make build\"]",
                "commands: [\"curl -fsSL https://get.example.com | sh\", \"make build\"]",
            );
        }
    }
    v
}

/// An override directory named `org-templates` (the template set's label is
/// `pipeforge+org-templates` whatever it holds), with `files` written into it.
fn org_templates(files: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let t = dir.path().join("org-templates");
    std::fs::create_dir_all(&t).expect("mkdir");
    for (path, text) in files {
        let p = t.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    (dir, t)
}

/// Seeds `count` pipelines rendered with the fleet org and `templates`.
async fn seed_fleet(prefix: &str, count: usize, templates: Option<&Path>) {
    let aws = Arc::new(srv().aws().await);
    let (_d, inp) = candidate(&fleet_org_text(), templates);
    let n = seed::seed(aws, Arc::new(inp), fleet_of(prefix, count), true, 8, |_| {})
        .await
        .expect("seed");
    assert_eq!(n, count);
}

/// Every impact of the pipelines named `<prefix>-…`, from a scan with `candidate`.
async fn plan(prefix: &str, candidate: Inputs, today: &str) -> (Vec<Impact>, Summary) {
    let aws = srv().aws().await;
    let where_ = candidate.org.org.clone();
    let planner = Arc::new(Planner::new(
        Arc::new(candidate),
        Some(Date::parse(today).expect("day")),
    ));
    let mut all = Vec::new();
    let mut summary = Summary::default();
    let scope = Scope {
        only: Some(format!("{prefix}-*")),
        window: 8,
    };
    fleet::scan(&aws, &where_, planner, &scope, |i| {
        assert!(
            i.pipeline.starts_with(&format!("{prefix}-")),
            "{}",
            i.pipeline
        );
        summary.add(&i);
        all.push(i);
        Ok(())
    })
    .await
    .expect("scan");
    (all, summary)
}

fn outcome_of<'a>(all: &'a [Impact], name: &str) -> &'a Impact {
    all.iter()
        .find(|i| i.pipeline == name)
        .unwrap_or_else(|| panic!("{name} in the plan"))
}

/// Org templates whose gate buildspec carries a `# platform LABEL` line: a platform change
/// that touches every pipeline with a gate.
fn gate_template_labelled(label: &str) -> (tempfile::TempDir, PathBuf) {
    let src = std::fs::read_to_string(root().join("templates/buildspec/gate.yml.tera"))
        .expect("gate template");
    org_templates(&[(
        "buildspec/gate.yml.tera",
        src.replacen(
            "version: 0.2\n",
            &format!("version: 0.2\n# platform {label}\n"),
            1,
        ),
    )])
}

/// A live rollout `id` in `waves` over the pipelines `only` matches (all without it), on
/// 2026-06-01, with no canaries, stopping at the first failure, deploying in this process.
fn rollout_options(id: &str, waves: &str, only: Option<&str>) -> RolloutOptions {
    RolloutOptions {
        id: id.to_owned(),
        waves: rollout::parse_waves(waves).expect("waves"),
        canaries: Vec::new(),
        max_failures: 1,
        dry_run: false,
        scope: only.map_or_else(Scope::default, |only| Scope {
            only: Some(only.to_owned()),
            window: 4,
        }),
        today: Date::parse("2026-06-01").expect("day"),
        pipelines: None,
        deploy: options(),
        jobs: None,
    }
}

/// Jobs sent through `queue`, read every 100 ms, a wave given `timeout` seconds.
fn jobs_on(
    queue: Arc<dyn rollout::RolloutQueue>,
    files: CandidateFiles,
    timeout: u64,
) -> rollout::Jobs {
    rollout::Jobs {
        queue,
        files,
        poll: std::time::Duration::from_millis(100),
        timeout: std::time::Duration::from_secs(timeout),
    }
}

/// A drift scan of the pipelines `only` matches, with the org of `inp`: each pipeline's drift
/// and the summary.
async fn drift_scan(inp: &Inputs, only: &str) -> (Vec<PipelineDrift>, DriftSummary) {
    let aws = Arc::new(srv().aws().await);
    let drifter = Arc::new(Drifter {
        aws: Arc::clone(&aws),
        role: inp.org.org.deploy.bootstrap_role.clone(),
    });
    let scope = Scope {
        only: Some(only.to_owned()),
        window: 4,
    };
    let mut all = Vec::new();
    let mut summary = DriftSummary::default();
    fleet::scan(&aws, &inp.org.org, drifter, &scope, |d| {
        summary.add(&d);
        all.push(d);
        Ok(())
    })
    .await
    .expect("drift");
    (all, summary)
}

#[tokio::test]
async fn a_deploy_records_its_input_and_the_fleet_lists_it() {
    let srv = srv();
    let aws = srv.aws().await;
    let (_d, inp) = candidate(&fleet_org_text(), None);
    let manifest = example("fl-real");
    let repo = Repo::new(&manifest);
    let s3 = support::s3(&aws, &srv.region);
    let record_key = "pipelines/fl-real/deployed.json";

    // A dry run records nothing.
    let dry = pipeforge::deploy::DeployOptions {
        dry_run: true,
        ..options()
    };
    support::deploy_repo(&repo, &inp, &aws, &dry)
        .await
        .expect("dry run");
    assert!(support::keys(&s3, BUCKET, record_key).await.is_empty());

    let r = support::deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("deploy");
    let body = s3
        .get_object()
        .bucket(BUCKET)
        .key(record_key)
        .send()
        .await
        .expect("record")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let rec = DeployedRecord::parse(&body, record_key).expect("parses");
    assert_eq!(rec.manifest.text, manifest);
    assert_eq!(rec.manifest.path, "pipeline.yml");
    assert_eq!(rec.repository, support::REPOSITORY);
    assert_eq!(rec.host.as_deref(), Some("github.com"));
    assert_eq!(rec.commit, r.commit);
    assert_eq!(rec.team, "payments");
    assert_eq!(rec.content_hash, r.content_hash);
    assert_eq!(rec.pipeforge, env!("CARGO_PKG_VERSION"));
    assert_eq!(rec.template_set.hash, inp.templates.content_hash());
    assert_eq!(rec.org_hash, pipeforge::publish::record::org_hash(&inp.org));
    assert_eq!(
        rec.stacks
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        r.stacks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
    );
    let envs: Vec<(&str, &str, bool)> = rec
        .environments
        .iter()
        .map(|e| (e.name.as_str(), e.account.as_str(), e.approval))
        .collect();
    assert_eq!(
        envs,
        [
            ("dev", "111111111111", false),
            ("test", "222222222222", false),
            ("prod", "333333333333", true)
        ]
    );
    assert!(
        rec.gates
            .iter()
            .any(|g| g.tools.iter().any(|t| t.contains("=="))),
        "{:?}",
        rec.gates
    );

    // The bundle remembers its input: re-rendering needs nothing but the bucket.
    let bundle = r.bundle.as_ref().expect("bundle");
    let get = |key: String| {
        let s3 = s3.clone();
        async move {
            s3.get_object()
                .bucket(BUCKET)
                .key(&key)
                .send()
                .await
                .expect(&key)
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes()
        }
    };
    let stored = get(format!("{}{INPUT_MANIFEST}", bundle.prefix)).await;
    assert_eq!(String::from_utf8_lossy(&stored), manifest);
    let owner: serde_json::Value =
        serde_json::from_slice(&get(format!("{}{INPUT_OWNER}", bundle.prefix)).await)
            .expect("owner json");
    assert_eq!(owner["repository"], support::REPOSITORY);
    assert_eq!(owner["commit"], r.commit.as_str());

    // `fleet list` finds it, with the record's columns.
    let mut rows = Vec::new();
    fleet::scan(
        &aws,
        &inp.org.org,
        Arc::new(Records),
        &Scope::default(),
        |e| {
            if e.pipeline() == "fl-real" {
                rows.push(e);
            }
            Ok(())
        },
    )
    .await
    .expect("scan");
    match rows.as_slice() {
        [Entry::Record(r)] => assert_eq!(r.commit, rec.commit),
        other => panic!("{other:?}"),
    }

    // The same plan with the inputs it was deployed with changes nothing, and knows it from
    // the record's input digest, without rendering.
    assert!(rec.inputs.is_some(), "a deploy records its render's inputs");
    let (all, summary) = plan("fl", inp, "2026-06-01").await;
    let real = outcome_of(&all, "fl-real");
    assert_eq!(real.outcome, Outcome::Unchanged);
    assert!(real.same_inputs, "{real:?}");
    assert!(!summary.differs(), "{summary:?}");
}

#[tokio::test]
async fn a_template_change_touches_only_the_pipelines_that_use_it() {
    let (_t, unchanged) = org_templates(&[]);
    seed_fleet("fp", 30, Some(&unchanged)).await;
    let (_d, same) = candidate(&fleet_org_text(), Some(&unchanged));
    let (all, s) = plan("fp", same, "2026-06-01").await;
    assert_eq!(all.len(), 30);
    assert_eq!(s.count(Outcome::Unchanged), 30, "{s:?}");

    // A buildspec change for the `iac-scan` gate only: the pipelines that turned it off stay.
    let src = std::fs::read_to_string(root().join("templates/buildspec/gate.yml.tera"))
        .expect("gate template");
    let anchor = "version: 0.2\n";
    assert!(src.contains(anchor));
    let patched = src.replacen(
        anchor,
        "version: 0.2\n{% if gate == \"iac-scan\" %}# iac-scan: checkov 3 rules\n# (second line)\n{% endif %}",
        1,
    );
    let (_t, dir) = org_templates(&[("buildspec/gate.yml.tera", patched)]);
    let (_d, changed) = candidate(&fleet_org_text(), Some(&dir));
    let (all, s) = plan("fp", changed, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Changed), 20, "{s:?}");
    assert_eq!(s.count(Outcome::Unchanged), 10, "{s:?}");
    let off = outcome_of(&all, "fp-00002");
    assert_eq!(off.outcome, Outcome::Unchanged);
    let on = outcome_of(&all, "fp-00000");
    assert_eq!(on.outcome, Outcome::Changed);
    let spec = on
        .files
        .iter()
        .find(|f| f.path == "buildspecs/iac-scan.yml")
        .expect("iac-scan buildspec changes");
    assert_eq!(
        (spec.change, spec.added, spec.removed),
        (Change::Modified, 2, 0)
    );
    assert!(
        on.files.iter().all(|f| f.path != "buildspecs/lint.yml"),
        "{:?}",
        on.files
    );
    // Identical changes are one group.
    assert_eq!(s.groups.len(), 1, "{:?}", s.groups.keys());
    let (sig, g) = s.groups.iter().next().expect("a group");
    assert_eq!(g.count, 20);
    assert!(sig.contains("`buildspecs/iac-scan.yml` +2 -0"), "{sig}");
}

#[tokio::test]
async fn an_org_rule_warns_before_its_day_invalidates_after_and_a_waiver_holds_until_it_expires() {
    seed_fleet("fo", 6, None).await;
    let culprit = "fo-00004";

    // Enforced now: the one pipeline that pipes curl into sh is invalid, with the diagnostic.
    let (_d, now) = candidate(&curl_rule(&fleet_org_text(), None, ""), None);
    let (all, s) = plan("fo", now, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Invalid), 1, "{s:?}");
    let bad = outcome_of(&all, culprit);
    assert_eq!(bad.outcome, Outcome::Invalid);
    assert!(
        bad.diagnostics.contains("no-curl-pipe") || bad.diagnostics.contains("piping a download"),
        "{}",
        bad.diagnostics
    );
    assert!(s.differs());

    // Dated: a warning before the day, an error from it.
    let (_d, dated) = candidate(&curl_rule(&fleet_org_text(), Some("2026-09-01"), ""), None);
    let (all, s) = plan("fo", dated, "2026-08-31").await;
    assert_eq!(s.count(Outcome::Invalid), 0, "{all:#?}");
    let warned = outcome_of(&all, culprit);
    assert_eq!(warned.outcome, Outcome::Unchanged);
    assert!(
        warned
            .notices
            .iter()
            .any(|n| n.starts_with("warning") && n.contains("2026-09-01")),
        "{:?}",
        warned.notices
    );
    let (_d, dated) = candidate(&curl_rule(&fleet_org_text(), Some("2026-09-01"), ""), None);
    let (_, s) = plan("fo", dated, "2026-09-01").await;
    assert_eq!(s.count(Outcome::Invalid), 1, "{s:?}");

    // A waiver for its repository: waived until it expires, an error after.
    let waiver = "waivers:\n  - {repository: \"search/svc-00004\", rule: no-curl-pipe, reason: \"installer replaced in Q4\", approver: \"platform-lead@example.com\", expires: \"2026-11-15\"}\n";
    let (_d, waived) = candidate(&curl_rule(&fleet_org_text(), None, waiver), None);
    let (all, s) = plan("fo", waived, "2026-10-01").await;
    assert_eq!(s.count(Outcome::Invalid), 0, "{s:?}");
    assert!(
        outcome_of(&all, culprit)
            .notices
            .iter()
            .any(|n| n.contains("platform-lead@example.com")),
        "{:?}",
        outcome_of(&all, culprit).notices
    );
    let (_d, waived) = candidate(&curl_rule(&fleet_org_text(), None, waiver), None);
    let (all, _) = plan("fo", waived, "2026-11-16").await;
    let expired = outcome_of(&all, culprit);
    assert_eq!(expired.outcome, Outcome::Invalid);
    assert!(
        expired.diagnostics.contains("expired"),
        "{}",
        expired.diagnostics
    );
}

#[tokio::test]
async fn the_cli_lists_and_plans_the_fleet() {
    let srv = srv();
    seed_fleet("fc", 4, None).await;
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pipeforge"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(srv.env()).arg("--color").arg("never").args(args);
        let out = cmd.output().expect("run pipeforge");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let org = org_path().to_string_lossy().into_owned();
    let (code, out, err) = run(&[
        "fleet",
        "list",
        "--org",
        &org,
        "--format",
        "json",
        "--pipeline",
        "fc-*",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("json array");
    let ours: Vec<&serde_json::Value> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["pipeline"].as_str().is_some_and(|p| p.starts_with("fc-")))
        .collect();
    assert_eq!(ours.len(), 4, "{out}");
    let teams: Vec<&str> = ours.iter().filter_map(|r| r["team"].as_str()).collect();
    assert_eq!(teams, ["payments", "search", "identity", "payments"]);
    assert_eq!(ours[1]["repository"], "search/svc-00001");

    let (code, out, err) = run(&["fleet", "list", "--org", &org, "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("pipeline,state,team,repository,commit"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("fc-00002,ok,identity,identity/svc-00002,")),
        "{out}"
    );

    // Same inputs: exit 0. An org rule that breaks one: exit 1, and JSON for tooling.
    let (code, out, err) = run(&[
        "fleet",
        "plan",
        "--org",
        &org,
        "--today",
        "2026-06-01",
        "--pipeline",
        "fc-*",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 changed, 0 invalid"), "{out}");
    let dir = tempfile::tempdir().expect("tmp");
    let strict = dir.path().join("org.yaml");
    std::fs::write(
        &strict,
        fleet_org_text().replace(
            "  payments: {repositories: [\"payments/*\"]}\n",
            "  payments: {repositories: [\"payments/orders-api\"]}\n",
        ),
    )
    .expect("write");
    let strict = strict.to_string_lossy().into_owned();
    let (code, out, err) = run(&[
        "fleet",
        "plan",
        "--org",
        &strict,
        "--today",
        "2026-06-01",
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let invalid: Vec<&str> = v["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .filter(|p| p["outcome"] == "invalid")
        .filter_map(|p| p["pipeline"].as_str())
        .filter(|p| p.starts_with("fc-"))
        .collect();
    assert_eq!(invalid, ["fc-00000", "fc-00003"], "{out}");
}

/// What a bucket holds never decides how much a fleet command reads: a record larger than any
/// pipeforge writes is reported as unreadable, not read (through the fleet's reader and the
/// deploy's store alike), while the largest record a manifest can make is read as before.
#[tokio::test]
async fn an_oversized_record_is_reported_not_read() {
    use pipeforge::publish::record::MAX_RECORD_BYTES;
    seed_fleet("fl-cap", 2, None).await;
    let srv = srv();
    let aws = srv.aws().await;
    let s3 = support::s3(&aws, &srv.region);
    let get = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let o = s3.get_object().bucket(BUCKET).key(key).send().await;
            let body = o.expect("get").body.collect().await.expect("body");
            body.into_bytes().to_vec()
        }
    };
    let put = |key: &'static str, bytes: Vec<u8>| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket(BUCKET)
                .key(key)
                .body(bytes.into())
                .send()
                .await
                .expect("put");
        }
    };

    // The largest manifest, every character one that JSON escapes: still under the limit.
    let largest = "pipelines/fl-cap-00000/deployed.json";
    let mut rec = DeployedRecord::parse(&get(largest).await, largest).expect("record");
    let max = usize::try_from(pipeforge::MAX_MANIFEST_BYTES).expect("size");
    rec.manifest.text = "\"\\".repeat(max / 2);
    let bytes = rec.to_bytes();
    assert!(
        bytes.len() > 2 * max && bytes.len() < MAX_RECORD_BYTES,
        "{}",
        bytes.len()
    );
    put(largest, bytes).await;

    // A valid record padded past the limit (JSON allows any run of white space).
    let padded = "pipelines/fl-cap-00001/deployed.json";
    let mut bytes = get(padded).await;
    assert!(DeployedRecord::parse(&bytes, padded).is_ok());
    bytes.splice(1..1, std::iter::repeat_n(b' ', MAX_RECORD_BYTES));
    assert!(
        DeployedRecord::parse(&bytes, padded).is_ok(),
        "still a valid record"
    );
    let padded_len = bytes.len();
    put(padded, bytes).await;

    let reader = fleet::Reader::new(s3.clone(), BUCKET);
    match reader.record("fl-cap-00000").await {
        Entry::Record(r) => assert_eq!(r.manifest.text.len(), max),
        other => panic!("the largest record is read: {other:?}"),
    }
    match reader.record("fl-cap-00001").await {
        Entry::Unreadable { error, .. } => assert!(
            error.contains(&format!("larger than the {MAX_RECORD_BYTES} bytes"))
                && error.contains(padded),
            "{error}"
        ),
        other => panic!("the padded record is not read: {other:?}"),
    }
    // The store a deploy reads its record with says the same.
    let store = records_store("fl-cap-00001").await;
    let err = store
        .read(padded, "the deploy record", MAX_RECORD_BYTES)
        .await
        .expect_err("too large");
    let text = err.to_string();
    assert!(
        text.contains("cannot read the deploy record") && text.contains("larger than the"),
        "{text}"
    );
    let whole = store.read(padded, "the deploy record", padded_len).await;
    assert!(
        matches!(&whole, Ok(Some((_, b))) if b.len() == padded_len),
        "the limit decides, nothing else: {:?}",
        whole.map(|r| r.map(|(_, b)| b.len()))
    );

    // A fleet plan reports it with its reason, and goes on with the others.
    let (all, _) = plan("fl-cap", candidate(&fleet_org_text(), None).1, "2026-01-01").await;
    assert_eq!(
        outcome_of(&all, "fl-cap-00001").outcome,
        Outcome::Unreadable
    );
}

/// The source bucket's store of `pipelines/<name>/` (to plant or remove an owner record).
async fn records_store(name: &str) -> pipeforge::publish::store::SourceStore {
    let srv = srv();
    let aws = srv.aws().await;
    let (_d, inp) = candidate(&fleet_org_text(), None);
    let o = &inp.org.org;
    let records = format!("pipelines/{name}/");
    pipeforge::publish::store::SourceStore::new(
        support::s3(&aws, &srv.region),
        &o.source.bucket,
        &o.tooling.region,
        &o.source.kms_key,
        &records,
        &records,
    )
}

#[tokio::test]
async fn a_rollout_goes_in_waves_stops_at_a_failure_and_a_resume_finishes_it() {
    let (_t, base) = org_templates(&[]);
    seed_fleet("fr", 5, Some(&base)).await;
    let (_t2, dir) = gate_template_labelled("2026.06");
    let (_d, cand) = candidate(&fleet_org_text(), Some(&dir));
    let cand = Arc::new(cand);
    let aws = srv().aws().await;
    let s3 = support::s3(&aws, &srv().region);
    let org = cand.org.org.clone();
    let mut options = RolloutOptions {
        canaries: vec!["fr-00003".to_owned()],
        dry_run: true,
        ..rollout_options("fr-2026-06", "1,50%,100%", Some("fr-*"))
    };
    let state_key = "fleet/rollouts/fr-2026-06.json";

    // A dry run shows the waves and writes nothing.
    let r = rollout::rollout(
        &aws,
        &org,
        Arc::clone(&cand),
        &options,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect("dry run");
    let waves: Vec<Vec<&str>> = r
        .state
        .waves
        .iter()
        .map(|w| w.iter().map(|i| i.pipeline.as_str()).collect())
        .collect();
    assert_eq!(
        waves,
        [
            vec!["fr-00003"],
            vec!["fr-00000"],
            vec!["fr-00001"],
            vec!["fr-00002", "fr-00004"]
        ]
    );
    assert!(support::keys(&s3, BUCKET, state_key).await.is_empty());

    // Injected failure: fr-00002 now belongs to another team's repository. The rollout deploys
    // from the recorded repository and cannot take it over; it stops there.
    let store = records_store("fr-00002").await;
    let foreign = serde_json::json!({
        "schema": "pipeforge/owner/v1",
        "pipeline": "fr-00002",
        "team": "search",
        "repository": "search/other",
        "claimed": {"at": "2026-01-01T00:00:00Z", "by": "someone"},
    });
    store
        .write_if(
            &store.owner_key(),
            serde_json::to_vec(&foreign).expect("json"),
            None,
            "owner",
        )
        .await
        .expect("plant owner")
        .expect("written");
    options.dry_run = false;
    let r = rollout::rollout(
        &aws,
        &org,
        Arc::clone(&cand),
        &options,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect("rollout runs");
    assert!(r.created);
    assert_eq!((r.deployed, r.failed), (3, 1), "{r:#?}");
    assert!(r.stopped.is_some());
    let last = &r.state.waves[3];
    assert_eq!(last[0].state, PipelineState::Failed);
    assert!(
        last[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("search"),
        "{:?}",
        last[0].error
    );
    assert_eq!(last[1].state, PipelineState::Pending, "stopped before it");
    // The state is in the bucket; the deployed ones carry the rollout in their record.
    assert_eq!(support::keys(&s3, BUCKET, state_key).await.len(), 1);
    let reader = fleet::Reader::new(s3.clone(), BUCKET);
    match reader.record("fr-00003").await {
        Entry::Record(rec) => {
            assert_eq!(rec.rollout.as_deref(), Some("fr-2026-06"));
            assert_eq!(rec.template_set.hash, cand.templates.content_hash());
            assert_eq!(
                rec.commit,
                format!("{:040x}", 4),
                "the recorded commit is kept"
            );
        }
        other => panic!("{other:?}"),
    }
    match reader.record("fr-00004").await {
        Entry::Record(rec) => assert_eq!(rec.rollout, None),
        other => panic!("{other:?}"),
    }

    // Another candidate cannot resume it.
    let (_d3, other) = candidate(&fleet_org_text(), Some(&base));
    let e = rollout::rollout(
        &aws,
        &org,
        Arc::new(other),
        &options,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect_err("another candidate");
    assert!(e.to_string().contains("another candidate"), "{e}");

    // The owner record is put right (the pipeline transferred back); the resume finishes.
    s3.delete_object()
        .bucket(BUCKET)
        .key(store.owner_key())
        .send()
        .await
        .expect("delete owner");
    let r = rollout::rollout(
        &aws,
        &org,
        Arc::clone(&cand),
        &options,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect("resume");
    assert!(!r.created);
    assert_eq!(
        (r.deployed, r.failed, r.stopped.as_deref()),
        (2, 0, None),
        "{r:#?}"
    );
    assert!(r.state.finished());

    // Idempotent: nothing left to do, and the fleet plan with the candidate is clean.
    let r = rollout::rollout(
        &aws,
        &org,
        Arc::clone(&cand),
        &options,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect("again");
    assert_eq!((r.deployed, r.failed), (0, 0));
    let (_d4, again) = candidate(&fleet_org_text(), Some(&dir));
    let (_, s) = plan("fr", again, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Unchanged), 5, "{s:?}");
}

#[tokio::test]
async fn drift_finds_a_stack_edited_behind_pipeforges_back() {
    let srv = srv();
    let aws = srv.aws().await;
    let (_d, inp) = candidate(&fleet_org_text(), None);
    let repo = Repo::new(&example("fd-real"));
    support::deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("deploy");
    let check = || drift_scan(&inp, "fd-*");
    let (_, s) = check().await;
    assert_eq!((s.checked, s.in_sync), (1, 1), "{s:?}");
    assert!(!s.drifted());

    // Someone edits the dev target stack's role in the console (an UpdateStack of their own).
    let stack = "pf-fd-real-dev-target";
    let role = &inp.org.org.deploy.bootstrap_role;
    let conf = support::account(&aws, "111111111111", &srv.region, role).await;
    let cfn = aws.cloudformation(&conf, &srv.region);
    let body = cfn
        .get_template()
        .stack_name(stack)
        .send()
        .await
        .expect("template")
        .template_body()
        .expect("body")
        .to_owned();
    let mut t: serde_json::Value = serde_json::from_str(&body).expect("json");
    t["Resources"]["DeployRole"]["Properties"]["MaxSessionDuration"] = serde_json::json!(7200);
    cfn.update_stack()
        .stack_name(stack)
        .template_body(t.to_string())
        .capabilities(aws_sdk_cloudformation::types::Capability::CapabilityNamedIam)
        .send()
        .await
        .expect("update behind pipeforge's back");
    for _ in 0..100 {
        let st = support::stack_status(&aws, &conf, &srv.region, stack).await;
        if st.as_deref().is_some_and(|s| !s.ends_with("IN_PROGRESS")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (all, s) = check().await;
    assert!(s.drifted());
    let edited = s.causes.get(&Cause::Edited).expect("edited");
    assert_eq!(edited, &["fd-real"]);
    let d = &all[0].stacks;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].stack, stack);
    assert_eq!(d[0].detail, "DeployRole");

    // The fix goes through the rollout path and puts pipeforge's template back.
    assert_eq!(s.fixable(), ["fd-real"]);
    let fix = RolloutOptions {
        pipelines: Some(s.fixable()),
        deploy: pipeforge::deploy::DeployOptions {
            redeploy: true,
            ..options()
        },
        ..rollout_options("fd-fix", "1,100%", None)
    };
    let (_d2, current) = candidate(&fleet_org_text(), None);
    let r = rollout::rollout(
        &aws,
        &inp.org.org,
        Arc::new(current),
        &fix,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect("fix");
    assert_eq!((r.deployed, r.failed), (1, 0), "{r:#?}");
    let (_, s) = check().await;
    assert!(!s.drifted(), "{s:?}");
}

/// A FIFO queue (with its dead-letter queue) and a status bucket on the local server, and a
/// webhook worker reading them with the fleet org as its policy: the worker of the AWS setup.
async fn queue_and_worker(
    name: &str,
    work: &Path,
) -> (
    Arc<pipeforge::webhook::worker::Worker>,
    pipeforge::webhook::rollout::Rollouts,
) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    use pipeforge::webhook::queue::SqsQueue;
    use pipeforge::webhook::status::S3Status;
    use pipeforge::webhook::worker::{AwsDeployer, Worker, WorkerSettings};
    let aws = Arc::new(srv().aws().await);
    let sqs = pipeforge::webhook::aws::sqs(&aws);
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dead.fifo"))
        .attributes(A::FifoQueue, "true")
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(A::QueueArn)
        .send()
        .await
        .expect("arn")
        .attributes
        .and_then(|a| a.get(&A::QueueArn).cloned())
        .expect("arn");
    let url = sqs
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(A::FifoQueue, "true")
        .attributes(A::VisibilityTimeout, "60")
        .attributes(
            A::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": 2}).to_string(),
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let s3 = support::s3(&aws, &srv().region);
    let bucket = format!("{name}-jobs");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let queue = Arc::new(SqsQueue::open(sqs, &url, 2).await.expect("open"));
    let status = Arc::new(S3Status::new(s3, bucket));
    let (_d, inp) = candidate(&fleet_org_text(), None);
    let worker = Arc::new(Worker {
        queue: queue.clone(),
        status: status.clone(),
        deployer: Arc::new(AwsDeployer {
            aws: Arc::clone(&aws),
            options: options(),
        }),
        inputs: Arc::new(inp),
        log: pipeforge::webhook::log::Log::discard(),
        settings: WorkerSettings {
            work_dir: work.to_path_buf(),
            retry_base: std::time::Duration::from_millis(100),
            retry_max: std::time::Duration::from_millis(200),
            lease: std::time::Duration::from_secs(30),
            receive_wait: std::time::Duration::ZERO,
            today: Some(Date::parse("2026-06-01").expect("day")),
        },
        settled: Arc::default(),
        previewer: None,
    });
    (
        worker,
        pipeforge::webhook::rollout::Rollouts { queue, status },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_rollout_is_deployed_by_the_worker_and_forged_jobs_deploy_nothing() {
    use pipeforge::fleet::candidate::key_of;
    use pipeforge::fleet::rollout::{JobResult, JobSpec, RolloutQueue};
    use pipeforge::webhook::rollout::job_of;
    use pipeforge::webhook::worker::{JobError, Outcome as JobOutcome};
    let (_t, base) = org_templates(&[]);
    seed_fleet("fq", 3, Some(&base)).await;
    let (_t2, dir) = gate_template_labelled("2026.07");
    let (cand_dir, cand) = candidate(&fleet_org_text(), Some(&dir));
    let cand = Arc::new(cand);
    let hash = rollout::candidate_hash(&cand);
    let files = CandidateFiles::read(Some(&cand_dir.path().join("org.yaml")), None, Some(&dir))
        .expect("files");
    let work = tempfile::tempdir().expect("work");
    let name = format!("fq-{}", std::process::id());
    let (worker, rollouts) = queue_and_worker(&name, work.path()).await;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let w = Arc::clone(&worker);
        async move { w.run(stop_rx).await }
    });
    let rollouts = Arc::new(rollouts);
    let aws = srv().aws().await;
    let s3 = support::s3(&aws, &srv().region);
    let org = cand.org.org.clone();

    // A rollout job is in its repository's message group, as the repository's merges are.
    let reader = fleet::Reader::new(s3.clone(), BUCKET);
    let Entry::Record(first) = reader.record("fq-00000").await else {
        panic!("record");
    };
    let spec = JobSpec {
        id: rollout::job_id("fq-2026-07", "fq-00000", 1),
        rollout: "fq-2026-07".to_owned(),
        candidate: hash.clone(),
        pipeline: "fq-00000".to_owned(),
        repository: first.repository.clone(),
        host: first.host.clone(),
        commit: first.commit.clone(),
    };
    assert_eq!(job_of(&spec, 0).group(), "github.com/payments/svc-00000");

    // Injected failure: fq-00001 now belongs to another team's repository.
    let store = records_store("fq-00001").await;
    let foreign = serde_json::json!({
        "schema": "pipeforge/owner/v1",
        "pipeline": "fq-00001",
        "team": "search",
        "repository": "search/other",
        "claimed": {"at": "2026-01-01T00:00:00Z", "by": "someone"},
    });
    store
        .write_if(
            &store.owner_key(),
            serde_json::to_vec(&foreign).expect("json"),
            None,
            "owner",
        )
        .await
        .expect("plant owner")
        .expect("written");
    let options = RolloutOptions {
        jobs: Some(jobs_on(rollouts.clone(), files, 120)),
        ..rollout_options("fq-2026-07", "1,100%", Some("fq-*"))
    };
    let events = Events::default();
    let run = || rollout::rollout(&aws, &org, Arc::clone(&cand), &options, &Quiet, &events);
    let r = run().await.expect("rollout runs");
    assert!(r.stopped.is_some(), "{r:#?}");
    assert_eq!(r.state.waves[0][0].state, PipelineState::Deployed, "{r:#?}");
    let failed = &r.state.waves[1][0];
    assert_eq!(
        (failed.pipeline.as_str(), failed.state),
        ("fq-00001", PipelineState::Failed),
        "{r:#?}"
    );
    // `--max-failures 1` inside the wave: the worker skipped the wave's other job rather than
    // deploy it (the failure was marked in the status bucket before the rollout read it).
    let skipped = &r.state.waves[1][1];
    assert_eq!(
        (skipped.pipeline.as_str(), skipped.state, r.skipped),
        ("fq-00002", PipelineState::Skipped, 1),
        "{r:#?}"
    );
    let skipped_id = rollout::job_id("fq-2026-07", "fq-00002", 1);
    match rollouts.result(&skipped_id).await.expect("status") {
        Some(JobResult::Skipped(why)) => assert!(why.contains("--max-failures 1"), "{why}"),
        other => panic!("{other:?}"),
    }
    match reader.record("fq-00002").await {
        Entry::Record(rec) => assert_eq!(rec.rollout, None, "a skipped job deployed"),
        other => panic!("{other:?}"),
    }
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("search"),
        "{failed:?}"
    );
    // The candidate is stored under its hash; the job status is in the status bucket.
    let key = key_of(&hash).expect("key");
    assert_eq!(
        support::keys(&s3, BUCKET, &key).await,
        std::slice::from_ref(&key)
    );
    assert_eq!(
        rollouts.result(&spec.id).await.expect("status"),
        Some(JobResult::Deployed)
    );
    match reader.record("fq-00000").await {
        Entry::Record(rec) => {
            assert_eq!(rec.rollout.as_deref(), Some("fq-2026-07"));
            assert_eq!(rec.template_set.hash, cand.templates.content_hash());
        }
        other => panic!("{other:?}"),
    }

    // The owner is put right; the resume sends a new job for the failed one and finishes.
    s3.delete_object()
        .bucket(BUCKET)
        .key(store.owner_key())
        .send()
        .await
        .expect("delete owner");
    let r = run().await.expect("resume");
    assert!(r.state.finished(), "{r:#?}");
    assert_eq!(r.state.waves[1][0].attempts, 2, "{r:#?}");
    assert_eq!(
        r.state.waves[1][1].attempts, 2,
        "the skipped job is sent again: {r:#?}"
    );
    for p in ["fq-00001", "fq-00002"] {
        match reader.record(p).await {
            Entry::Record(rec) => assert_eq!(rec.rollout.as_deref(), Some("fq-2026-07"), "{p}"),
            other => panic!("{other:?}"),
        }
    }

    // A replayed job (the first attempt of a pipeline the rollout has deployed): were it taken,
    // a finished or older rollout could put its candidate back over a newer one.
    let Entry::Record(first) = reader.record("fq-00001").await else {
        panic!("record");
    };
    let replay = JobSpec {
        id: rollout::job_id("fq-2026-07", "fq-00001", 1),
        pipeline: "fq-00001".to_owned(),
        repository: first.repository.clone(),
        ..spec.clone()
    };
    match worker.process(&job_of(&replay, 0)).await {
        Err(JobError::Permanent { error, .. }) => {
            assert!(error.contains("is not waiting for job"), "{error}");
        }
        other => panic!("a replayed job must be refused: {other:?}"),
    }

    // Forged jobs: each names something the worker checks against what it reads itself.
    let Entry::Record(before) = reader.record("fq-00002").await else {
        panic!("record");
    };
    let forge = |edit: &dyn Fn(&mut JobSpec)| {
        let mut s = JobSpec {
            id: format!("rollout-forged-{}", std::process::id()),
            pipeline: "fq-00002".to_owned(),
            repository: before.repository.clone(),
            ..spec.clone()
        };
        edit(&mut s);
        job_of(&s, 0)
    };
    let refused = |o: Result<JobOutcome, JobError>, what: &str| match o {
        Err(JobError::Permanent { error, .. }) => {
            assert!(error.contains(what), "{what}: {error}");
        }
        other => panic!("{what}: {other:?}"),
    };
    // Another team's repository, to get its group or its ownership.
    refused(
        worker
            .process(&forge(&|s| s.repository = "search/svc-00001".to_owned()))
            .await,
        "is deployed from `identity/svc-00002`",
    );
    refused(
        worker
            .process(&forge(&|s| s.pipeline = "fr-00000".to_owned()))
            .await,
        "does not deploy pipeline `fr-00000`",
    );
    refused(
        worker
            .process(&forge(&|s| s.rollout = "made-up".to_owned()))
            .await,
        "there is no rollout `made-up`",
    );
    refused(
        worker
            .process(&forge(&|s| {
                s.candidate = format!("sha256:{}", "ab".repeat(32))
            }))
            .await,
        "deploys candidate",
    );
    // A stored candidate replaced by other files (with write access to the bucket) no longer
    // hashes to its name: the worker refuses it.
    let other = CandidateFiles::read(Some(&cand_dir.path().join("org.yaml")), None, Some(&base))
        .expect("files");
    s3.put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(other.to_bytes().expect("bytes").into())
        .send()
        .await
        .expect("replace candidate");
    let state = serde_json::json!({
        "schema": rollout::ROLLOUT_SCHEMA, "id": "fq-tamper", "candidate": hash,
        "waves": [[{"pipeline": "fq-00002", "state": "pending"}]],
    });
    s3.put_object()
        .bucket(BUCKET)
        .key("fleet/rollouts/fq-tamper.json")
        .body(serde_json::to_vec(&state).expect("json").into())
        .send()
        .await
        .expect("state");
    refused(
        worker
            .process(&forge(&|s| s.rollout = "fq-tamper".to_owned()))
            .await,
        "not to its name",
    );
    // Through the queue too: the job fails with the reason and deploys nothing.
    let forged = JobSpec {
        id: rollout::job_id("fq-2026-07", "fq-00002", 99),
        repository: "search/svc-00001".to_owned(),
        pipeline: "fq-00002".to_owned(),
        ..spec.clone()
    };
    rollouts.send(&forged).await.expect("send");
    let mut result = None;
    for _ in 0..300 {
        result = rollouts.result(&forged.id).await.expect("status");
        if result.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let Some(JobResult::Failed(err)) = result else {
        panic!("the forged job must fail: {result:?}");
    };
    assert!(err.contains("is deployed from"), "{err}");
    let Entry::Record(after) = reader.record("fq-00002").await else {
        panic!("record");
    };
    assert_eq!(
        (after.content_hash, after.deployed_at),
        (before.content_hash.clone(), before.deployed_at.clone())
    );
    let _ = stop.send(true);
    running.await.expect("worker stops");
}

/// Rollouts know each other: a newer rollout closes an unfinished older one before it deploys
/// anything, so the older one's jobs (delivered late, or resent by whoever can send to the
/// queue, or handed straight to the worker) deploy nothing over the newer candidate, and the
/// older rollout cannot be resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_rollout_closes_an_abandoned_one_and_its_replayed_jobs_deploy_nothing() {
    use pipeforge::fleet::rollout::{JobResult, JobSpec, RolloutQueue};
    use pipeforge::webhook::rollout::job_of;
    use pipeforge::webhook::worker::JobError;
    let (_t, base) = org_templates(&[]);
    seed_fleet("fs", 2, Some(&base)).await;
    let (_ta, dir_a) = gate_template_labelled("2026.08");
    let (_tb, dir_b) = gate_template_labelled("2026.09");
    let (cand_dir_a, cand_a) = candidate(&fleet_org_text(), Some(&dir_a));
    let (cand_dir_b, cand_b) = candidate(&fleet_org_text(), Some(&dir_b));
    let (cand_a, cand_b) = (Arc::new(cand_a), Arc::new(cand_b));
    let b_templates = cand_b.templates.content_hash();
    let files = |d: &tempfile::TempDir, t: &Path| {
        CandidateFiles::read(Some(&d.path().join("org.yaml")), None, Some(t)).expect("files")
    };
    let work = tempfile::tempdir().expect("work");
    let (worker, rollouts) =
        queue_and_worker(&format!("fs-{}", std::process::id()), work.path()).await;
    let rollouts = Arc::new(rollouts);
    let aws = srv().aws().await;
    let s3 = support::s3(&aws, &srv().region);
    let org = cand_a.org.org.clone();
    let opts = |id: &str, files: CandidateFiles, timeout: u64| RolloutOptions {
        jobs: Some(jobs_on(rollouts.clone(), files, timeout)),
        ..rollout_options(id, "100%", Some("fs-*"))
    };

    // Rollout A sends its jobs and nobody takes them yet: abandoned, both pipelines pending.
    let a = opts("fs-a", files(&cand_dir_a, &dir_a), 1);
    let r = rollout::rollout(
        &aws,
        &org,
        Arc::clone(&cand_a),
        &a,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect("rollout A runs");
    assert!(
        r.stopped
            .as_deref()
            .unwrap_or_default()
            .contains("did not finish"),
        "{r:#?}"
    );
    assert!(
        r.state.waves[0]
            .iter()
            .all(|i| i.state == PipelineState::Pending && i.attempts == 1),
        "{r:#?}"
    );

    // Rollout B: it closes A before it sends anything. The worker starts once A is closed, so
    // A's messages (first in their message groups) reach it before B's.
    let b = opts("fs-b", files(&cand_dir_b, &dir_b), 120);
    let run_b = tokio::spawn({
        let (org, cand_b) = (org.clone(), Arc::clone(&cand_b));
        async move {
            let aws = srv().aws().await;
            rollout::rollout(&aws, &org, cand_b, &b, &Quiet, &Events::default()).await
        }
    });
    let reader = fleet::Reader::new(s3.clone(), BUCKET);
    let state_of = |id: &'static str| {
        let reader = reader.clone();
        async move {
            let key = format!("fleet/rollouts/{id}.json");
            let bytes = reader
                .object(&key, rollout::MAX_STATE_BYTES)
                .await
                .expect("read")
                .expect("state");
            rollout::parse_state(&bytes, &key).expect("state")
        }
    };
    for _ in 0..600 {
        if state_of("fs-a").await.superseded_by.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        state_of("fs-a").await.superseded_by.as_deref(),
        Some("fs-b")
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let w = Arc::clone(&worker);
        async move { w.run(stop_rx).await }
    });
    let r = run_b.await.expect("task").expect("rollout B runs");
    assert!(r.state.finished(), "{r:#?}");
    let records = || async {
        let mut out = Vec::new();
        for p in ["fs-00000", "fs-00001"] {
            match reader.record(p).await {
                Entry::Record(rec) => out.push(*rec),
                other => panic!("{other:?}"),
            }
        }
        out
    };
    let deployed = records().await;
    for rec in &deployed {
        assert_eq!(
            (rec.rollout.as_deref(), rec.template_set.hash.as_str()),
            (Some("fs-b"), b_templates.as_str()),
            "{}",
            rec.pipeline
        );
    }
    // A's jobs, delivered after B started: refused.
    let a_job = |p: &str| rollout::job_id("fs-a", p, 1);
    for p in ["fs-00000", "fs-00001"] {
        match rollouts.result(&a_job(p)).await.expect("status") {
            Some(JobResult::Failed(e)) => {
                assert!(e.contains("was superseded by rollout `fs-b`"), "{e}");
            }
            other => panic!("{p}: A's job must be refused: {other:?}"),
        }
    }

    // Whoever can send to the queue resends A's job (another deduplication id, as after SQS's
    // five minutes): refused again.
    let spec = |p: &str, rec: &DeployedRecord| JobSpec {
        id: a_job(p),
        rollout: "fs-a".to_owned(),
        candidate: rollout::candidate_hash(&cand_a),
        pipeline: p.to_owned(),
        repository: rec.repository.clone(),
        host: rec.host.clone(),
        commit: rec.commit.clone(),
    };
    let replay = job_of(&spec("fs-00000", &deployed[0]), 0);
    rollouts
        .queue
        .send(&replay, "fs-a-replayed")
        .await
        .expect("resend");
    let mut status = None;
    for _ in 0..300 {
        status = rollouts.status.get(&replay.id).await.expect("status");
        if status
            .as_ref()
            .is_some_and(|s| s.attempts >= 2 && s.state.is_final())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = status.expect("status");
    assert_eq!(status.attempts, 2, "the replay was not handled: {status:?}");
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("was superseded"),
        "{status:?}"
    );
    // Straight to the worker, too.
    match worker
        .process(&job_of(&spec("fs-00001", &deployed[1]), 0))
        .await
    {
        Err(JobError::Permanent { error, .. }) => {
            assert!(
                error.contains("was superseded by rollout `fs-b`"),
                "{error}"
            );
        }
        other => panic!("a replayed job of a superseded rollout must be refused: {other:?}"),
    }
    let after = records().await;
    for (b, a) in deployed.iter().zip(&after) {
        assert_eq!(
            (&a.content_hash, &a.deployed_at, &a.rollout),
            (&b.content_hash, &b.deployed_at, &b.rollout),
            "{}",
            a.pipeline
        );
    }
    // And A is never resumed.
    let err = rollout::rollout(
        &aws,
        &org,
        Arc::clone(&cand_a),
        &a,
        &Quiet,
        &Events::default(),
    )
    .await
    .expect_err("a superseded rollout is closed");
    assert!(
        err.to_string().contains("was superseded by rollout `fs-b`"),
        "{err}"
    );
    let _ = stop.send(true);
    running.await.expect("worker stops");
}

/// CloudFormation drift detection: a CodeBuild project and a role edited in the console (their
/// stacks' templates untouched, so the content hashes still match) are found as resource drift,
/// and `--fix` (drift-aware change sets through the rollout path) puts them back.
#[tokio::test]
async fn drift_detection_finds_console_edits_and_the_fix_reverts_them() {
    let srv = srv();
    let aws = srv.aws().await;
    let (_d, inp) = candidate(&fleet_org_text(), None);
    let repo = Repo::new(&example("fz-real"));
    support::deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("deploy");
    let check = || Box::pin(drift_scan(&inp, "fz-*"));
    let (all, s) = check().await;
    assert_eq!((s.checked, s.in_sync), (1, 1), "{all:#?}");

    // The console: a gate project's buildspec in the tooling account, and the dev deploy
    // role's session length in the target account.
    let role = &inp.org.org.deploy.bootstrap_role;
    let tooling = &inp.org.org.tooling.account;
    let tconf = support::account(&aws, tooling, &srv.region, role).await;
    let cfn = aws.cloudformation(&tconf, &srv.region);
    let resources = cfn
        .list_stack_resources()
        .stack_name("pf-fz-real-pipeline")
        .send()
        .await
        .expect("resources");
    let (project_id, project) = resources
        .stack_resource_summaries()
        .iter()
        .find(|r| r.resource_type() == Some("AWS::CodeBuild::Project"))
        .map(|r| {
            (
                r.logical_resource_id().unwrap_or_default().to_owned(),
                r.physical_resource_id().unwrap_or_default().to_owned(),
            )
        })
        .expect("a project");
    let codebuild = aws.codebuild(&tconf, &srv.region);
    let buildspec = |p: &str| {
        let codebuild = codebuild.clone();
        let p = p.to_owned();
        async move {
            codebuild
                .batch_get_projects()
                .names(p)
                .send()
                .await
                .expect("project")
                .projects()[0]
                .source()
                .and_then(|s| s.buildspec())
                .unwrap_or_default()
                .to_owned()
        }
    };
    let original = buildspec(&project).await;
    assert!(original.contains("phases"), "{original}");
    codebuild
        .update_project()
        .name(&project)
        .source(
            aws_sdk_codebuild::types::ProjectSource::builder()
                .r#type(aws_sdk_codebuild::types::SourceType::Codepipeline)
                .buildspec("version: 0.2\nphases: {build: {commands: [\"true\"]}}\n")
                .build()
                .expect("source"),
        )
        .send()
        .await
        .expect("console edit of the project");
    let dconf = support::account(&aws, "111111111111", &srv.region, role).await;
    let iam = aws.iam(&dconf, &srv.region);
    let target = aws
        .cloudformation(&dconf, &srv.region)
        .describe_stack_resource()
        .stack_name("pf-fz-real-dev-target")
        .logical_resource_id("DeployRole")
        .send()
        .await
        .expect("role resource");
    let role_name = target
        .stack_resource_detail()
        .and_then(|d| d.physical_resource_id())
        .expect("role name")
        .to_owned();
    // The console sends the description along (the local server clears one left out).
    let description = iam
        .get_role()
        .role_name(&role_name)
        .send()
        .await
        .expect("role")
        .role()
        .and_then(|r| r.description().map(str::to_owned));
    iam.update_role()
        .role_name(&role_name)
        .set_description(description)
        .max_session_duration(7200)
        .send()
        .await
        .expect("console edit of the role");

    let (all, s) = check().await;
    let drifted = s.causes.get(&Cause::ResourceDrift).expect("resource drift");
    assert_eq!(drifted, &["fz-real"], "{s:?}");
    let details: Vec<(&str, &str)> = all[0]
        .stacks
        .iter()
        .map(|d| (d.stack.as_str(), d.detail.as_str()))
        .collect();
    assert!(
        details.contains(&(
            "pf-fz-real-pipeline",
            &format!("{project_id} (/Source/BuildSpec)")
        )),
        "{details:?}"
    );
    assert!(
        details.contains(&("pf-fz-real-dev-target", "DeployRole (/MaxSessionDuration)")),
        "{details:?}"
    );

    // The fix: drift-aware change sets through the rollout path, on AWS through the queue: the
    // worker (whose own deploy settings know nothing of drift) redeploys because the rollout's
    // state says it is a drift fix.
    assert_eq!(s.fixable(), ["fz-real"]);
    let work = tempfile::tempdir().expect("work");
    let (worker, rollouts) =
        queue_and_worker(&format!("fz-{}", std::process::id()), work.path()).await;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let w = Arc::clone(&worker);
        async move { w.run(stop_rx).await }
    });
    let (d2, current) = candidate(&fleet_org_text(), None);
    let files = CandidateFiles::read(Some(&d2.path().join("org.yaml")), None, None).expect("files");
    let fix = RolloutOptions {
        pipelines: Some(s.fixable()),
        deploy: pipeforge::deploy::DeployOptions {
            redeploy: true,
            ..options()
        },
        jobs: Some(jobs_on(Arc::new(rollouts), files, 300)),
        ..rollout_options("fz-fix", "100%", None)
    };
    let r = Box::pin(rollout::rollout(
        &aws,
        &inp.org.org,
        Arc::new(current),
        &fix,
        &Quiet,
        &Events::default(),
    ))
    .await
    .expect("fix");
    let _ = stop.send(true);
    running.await.expect("worker stops");
    assert_eq!((r.deployed, r.failed), (1, 0), "{r:#?}");
    assert!(r.state.redeploy, "{r:#?}");
    let (_, s) = check().await;
    assert!(!s.drifted(), "{s:?}");
    assert_eq!(buildspec(&project).await, original);
    let live = iam
        .get_role()
        .role_name(&role_name)
        .send()
        .await
        .expect("role");
    assert_eq!(
        live.role().and_then(|r| r.max_session_duration()),
        Some(3600)
    );
}
