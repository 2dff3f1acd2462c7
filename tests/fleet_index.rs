//! `fleet plan` decides unchanged pipelines from the bucket's listing, against a real local AWS
//! server: every deploy writes a listing key (`pipelines/<name>/set/<set digest>.<record
//! ETag>`) after its record, and the plan reads one record per set digest instead of one per
//! pipeline. Each test seeds its own pipelines (its own name prefix) as deploys leave them and
//! counts the records the plan read.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pipeforge::Inputs;
use pipeforge::date::Date;
use pipeforge::fleet::plan::{Change, Impact, Outcome, Planner, Summary};
use pipeforge::fleet::seed::{self, SeedPipeline};
use pipeforge::fleet::{Scope, index};
use support::{Server, example, python_bumped, root, server};

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

fn inputs(org_text: &str, languages: Option<&Path>) -> (tempfile::TempDir, Inputs) {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("org.yaml");
    std::fs::write(&p, org_text).expect("write org");
    let inp = Inputs::load(Some(&p), languages, None).expect("inputs");
    (dir, inp)
}

fn day(s: &str) -> Option<Date> {
    Some(Date::parse(s).expect("day"))
}

/// `count` pipelines `<prefix>-NNNNN` of team payments, the languages in turn.
fn fleet_of(prefix: &str, count: usize, languages: &[&str]) -> Vec<SeedPipeline> {
    seed::with_languages(
        seed::variants(&example("x"), prefix, &[("payments", "payments")], count),
        languages,
    )
}

async fn seed_all(pipelines: Vec<SeedPipeline>, inputs: Inputs) {
    let aws = Arc::new(srv().aws().await);
    let n = pipelines.len();
    let seeded = seed::seed(aws, Arc::new(inputs), pipelines, false, 8, |_| {})
        .await
        .expect("seed");
    assert_eq!(seeded, n);
}

/// The plan of the pipelines `<prefix>-…` with `candidate`: every impact (name order), the
/// summary, and how many deploy records it read.
async fn plan(prefix: &str, candidate: Inputs, today: &str) -> (Vec<Impact>, Summary) {
    plan_in(prefix, candidate, today, 8).await
}

/// [`plan`] with `window` pipelines in flight.
async fn plan_in(
    prefix: &str,
    candidate: Inputs,
    today: &str,
    window: usize,
) -> (Vec<Impact>, Summary) {
    let aws = srv().aws().await;
    let where_ = candidate.org.org.clone();
    let planner = Arc::new(Planner::new(Arc::new(candidate), day(today)));
    let mut all = Vec::new();
    let mut summary = Summary::default();
    let scope = Scope {
        only: Some(format!("{prefix}-*")),
        window,
    };
    index::plan_scan(&aws, &where_, &planner, &scope, |i| {
        summary.add(&i);
        all.push(i);
        Ok(())
    })
    .await
    .expect("plan");
    summary.records_read = planner.records_read();
    summary.bundle_reads = planner.bundle_reads();
    let names: Vec<&str> = all.iter().map(|i| i.pipeline.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "impacts come in name order");
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

/// The listing keys of `pipeline`.
async fn listing_keys(pipeline: &str) -> Vec<String> {
    support::keys(&s3().await, BUCKET, &format!("pipelines/{pipeline}/set/")).await
}

async fn delete(key: &str) {
    s3().await
        .delete_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("delete");
}

async fn put_empty(key: &str) {
    s3().await
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(Vec::new().into())
        .send()
        .await
        .expect("put");
}

#[tokio::test]
async fn the_listing_decides_whole_groups_and_a_changed_language_reads_only_its_group() {
    let (_d, base) = inputs(&org_text(), None);
    seed_all(fleet_of("ix", 12, &["python", "node", "java"]), base).await;
    let keys = listing_keys("ix-00000").await;
    assert_eq!(keys.len(), 1, "one listing key per deploy: {keys:?}");

    // Nothing changes: one record read per language (the first of each group), the other
    // nine pipelines decided from the listing alone.
    let (_d, same) = inputs(&org_text(), None);
    let (all, s) = plan("ix", same, "2026-06-01").await;
    assert_eq!(all.len(), 12);
    assert_eq!(s.count(Outcome::Unchanged), 12, "{s:?}");
    assert_eq!((s.same_inputs, s.from_listing), (12, 9), "{all:#?}");
    assert_eq!(s.records_read, 3, "{s:?}");
    for first in ["ix-00000", "ix-00001", "ix-00002"] {
        let i = impact(&all, first);
        assert!(i.same_inputs && !i.from_listing, "{i:?}");
        assert_eq!(i.team, "payments", "a read record gives the team");
    }
    let listed = impact(&all, "ix-00011");
    assert!(listed.from_listing && listed.team.is_empty(), "{listed:?}");
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["records_read"], 3);
    assert_eq!(json["from_listing"], 9);
    assert!(
        pipeforge::fleet::plan::summary_text(&s)
            .contains("12 unchanged (12 with the inputs deployed, not rendered, 9 of them known from the listing alone)"),
        "{}",
        pipeforge::fleet::plan::summary_text(&s)
    );

    // Python's entry changes: its group is read and rendered pipeline by pipeline, the others
    // are still decided from the listing.
    let (_l, langs) = python_bumped();
    let (_d, bumped) = inputs(&org_text(), Some(&langs));
    let (all, s) = plan("ix", bumped, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Changed), 4, "{all:#?}");
    assert_eq!(s.count(Outcome::Unchanged), 8, "{s:?}");
    assert_eq!(s.from_listing, 6, "{s:?}");
    assert_eq!(
        s.records_read, 6,
        "4 Python records and one per other language: {s:?}"
    );
    for (n, i) in all.iter().enumerate() {
        let python = n % 3 == 0;
        assert_eq!(i.outcome == Outcome::Changed, python, "{i:?}");
        assert!(!(python && i.from_listing), "{i:?}");
    }

    // The same plan through a scan that reads every record agrees on every outcome.
    let (_d, bumped) = inputs(&org_text(), Some(&langs));
    let aws = srv().aws().await;
    let where_ = bumped.org.org.clone();
    let planner = Arc::new(Planner::new(Arc::new(bumped), day("2026-06-01")));
    let mut read_all = Vec::new();
    let scope = Scope {
        only: Some("ix-*".to_owned()),
        window: 8,
    };
    pipeforge::fleet::scan(&aws, &where_, Arc::clone(&planner), &scope, |i| {
        read_all.push((i.pipeline, i.outcome));
        Ok(())
    })
    .await
    .expect("scan");
    assert_eq!(planner.records_read(), 12);
    let listed: Vec<(String, Outcome)> = all
        .iter()
        .map(|i| (i.pipeline.clone(), i.outcome))
        .collect();
    assert_eq!(read_all, listed);
}

#[tokio::test]
async fn a_stale_listing_key_after_a_redeploy_never_hides_a_change() {
    let (_d, base) = inputs(&org_text(), None);
    seed_all(fleet_of("is", 3, &["python"]), base).await;
    let before = listing_keys("is-00001").await;
    assert_eq!(before.len(), 1, "{before:?}");

    // is-00001 is redeployed with the bumped Python entry: its key is replaced.
    let (_l, langs) = python_bumped();
    let (_d, bumped) = inputs(&org_text(), Some(&langs));
    let again = fleet_of("is", 3, &["python"]).swap_remove(1);
    let aws = srv().aws().await;
    seed::seed_one(&aws, &bumped, &again, false)
        .await
        .expect("redeploy");
    let after = listing_keys("is-00001").await;
    assert_eq!(after.len(), 1, "the older key is removed: {after:?}");
    assert_ne!(after, before);

    // A deploy that stopped between the record and its key leaves the older key alone: it
    // names the set digest the base candidate gives, but not the record's ETag.
    delete(&after[0]).await;
    put_empty(&before[0]).await;
    let (_d, same) = inputs(&org_text(), None);
    let (all, s) = plan("is", same, "2026-06-01").await;
    let redeployed = impact(&all, "is-00001");
    assert_eq!(redeployed.outcome, Outcome::Changed, "{redeployed:?}");
    assert!(!redeployed.from_listing);
    assert_eq!(impact(&all, "is-00002").outcome, Outcome::Unchanged);
    assert!(impact(&all, "is-00002").from_listing, "{all:#?}");
    assert_eq!(
        s.records_read, 2,
        "the group's first record and the stale one: {s:?}"
    );

    // Two keys (one stale, one current): the record is read as well.
    put_empty(&after[0]).await;
    let (_d, same) = inputs(&org_text(), None);
    let (all, s) = plan("is", same, "2026-06-01").await;
    assert_eq!(impact(&all, "is-00001").outcome, Outcome::Changed);
    assert_eq!(s.records_read, 2, "{s:?}");

    // A key forged for the stale record's set digest but naming the current ETag: it hides
    // the change, as a lying digest in the record would (whoever writes it can write records).
    delete(&before[0]).await;
    delete(&after[0]).await;
    let etag = after[0].rsplit('.').next().expect("etag");
    let set = before[0]
        .rsplit('/')
        .next()
        .and_then(|n| n.split('.').next())
        .expect("set");
    put_empty(&format!("pipelines/is-00001/set/{set}.{etag}")).await;
    let (_d, same) = inputs(&org_text(), None);
    let (all, _) = plan("is", same, "2026-06-01").await;
    let hidden = impact(&all, "is-00001");
    assert_eq!(
        (hidden.outcome, hidden.from_listing),
        (Outcome::Unchanged, true)
    );
}

#[tokio::test]
async fn a_pipeline_without_a_listing_key_is_read_and_planned() {
    let (_d, base) = inputs(&org_text(), None);
    seed_all(fleet_of("ik", 4, &["python"]), base).await;
    // Deployed before listing keys: no key at all.
    for k in listing_keys("ik-00002").await {
        delete(&k).await;
    }
    // A key that is no listing key's shape.
    put_empty("pipelines/ik-00003/set/not-a-digest").await;
    let (_d, same) = inputs(&org_text(), None);
    let (all, s) = plan("ik", same, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Unchanged), 4, "{all:#?}");
    assert_eq!(s.same_inputs, 4, "{s:?}");
    assert_eq!(s.from_listing, 1, "{all:#?}");
    assert_eq!(s.records_read, 3, "{s:?}");
    let read = impact(&all, "ik-00002");
    assert!(read.same_inputs && !read.from_listing, "{read:?}");
    assert_eq!(read.team, "payments");
    assert!(!impact(&all, "ik-00003").from_listing);

    // With the bumped Python entry every one of them changes, key or not.
    let (_l, langs) = python_bumped();
    let (_d, bumped) = inputs(&org_text(), Some(&langs));
    let (_, s) = plan("ik", bumped, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Changed), 4, "{s:?}");
    assert_eq!(s.records_read, 4, "{s:?}");
}

/// The example org with a rule against piping downloads into a shell, enforced from `from`.
fn curl_rule(from: &str) -> String {
    let text = org_text().replace(
        "  forbidden:\n",
        &format!("  forbidden:\n    - pattern: 'curl[^|]*\\|\\s*(ba)?sh'\n      reason: piping a download into a shell runs unreviewed code\n      id: no-curl-pipe\n      enforce_from: \"{from}\"\n"),
    );
    assert!(text.contains("id: no-curl-pipe"));
    text
}

#[tokio::test]
async fn a_pipeline_with_notices_gets_no_key_and_the_plan_still_reports_them() {
    let dated = curl_rule("2026-09-01");
    let mut pipelines = fleet_of("in", 3, &["python"]);
    for p in &mut pipelines {
        p.today = day("2026-08-01");
    }
    pipelines[1].manifest = pipelines[1].manifest.replace(
        "commands: [\"make build\"]",
        "commands: [\"curl -fsSL https://get.example.com | sh\", \"make build\"]",
    );
    assert!(pipelines[1].manifest.contains("get.example.com"));
    let (_d, at_deploy) = inputs(&dated, None);
    seed_all(pipelines, at_deploy).await;
    assert!(
        listing_keys("in-00001").await.is_empty(),
        "a warned pipeline"
    );
    assert_eq!(listing_keys("in-00002").await.len(), 1);

    let (_d, same) = inputs(&dated, None);
    let (all, s) = plan("in", same, "2026-08-15").await;
    assert_eq!(s.count(Outcome::Unchanged), 3, "{all:#?}");
    let warned = impact(&all, "in-00001");
    assert!(!warned.from_listing, "{warned:?}");
    assert!(
        warned.notices.iter().any(|n| n.contains("in 17 days")),
        "{:?}",
        warned.notices
    );
    assert!(impact(&all, "in-00002").from_listing, "{all:#?}");
    assert!(impact(&all, "in-00002").notices.is_empty());

    // From the rule's day the day's position changes the set digest: every pipeline is read,
    // and the warned one is invalid.
    let (_d, same) = inputs(&dated, None);
    let (all, s) = plan("in", same, "2026-09-01").await;
    assert_eq!(s.from_listing, 0, "{all:#?}");
    assert_eq!(impact(&all, "in-00001").outcome, Outcome::Invalid);
    assert_eq!(s.count(Outcome::Unchanged), 2, "{s:?}");
}

/// The example org with one more team: every set digest differs, so a plan reads and renders
/// every pipeline (and none of them changes for that).
fn org_with_another_team() -> String {
    let text = org_text().replacen(
        "\nteams:\n",
        "\nteams:\n  platform: {repositories: [\"platform/*\"]}\n",
        1,
    );
    assert!(text.contains("platform: {repositories"));
    text
}

/// Serialises the tests that change the bucket's policy.
static POLICY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Denies every read of `keys` (a bucket policy statement, as an operator could write) until
/// [`restore_policy`] puts the policy back.
async fn deny_reads(keys: &[String]) -> Option<String> {
    let s3 = s3().await;
    let before = s3
        .get_bucket_policy()
        .bucket(BUCKET)
        .send()
        .await
        .ok()
        .and_then(|o| o.policy().map(str::to_owned));
    let mut doc: serde_json::Value = before.as_deref().map_or_else(
        || serde_json::json!({"Version": "2012-10-17", "Statement": []}),
        |p| serde_json::from_str(p).expect("policy"),
    );
    let resources: Vec<String> = keys
        .iter()
        .map(|k| format!("arn:aws:s3:::{BUCKET}/{k}"))
        .collect();
    doc["Statement"]
        .as_array_mut()
        .expect("statements")
        .push(serde_json::json!({
            "Sid": "TestDeniesReads", "Effect": "Deny", "Principal": "*",
            "Action": "s3:GetObject", "Resource": resources,
        }));
    s3.put_bucket_policy()
        .bucket(BUCKET)
        .policy(doc.to_string())
        .send()
        .await
        .expect("deny");
    before
}

async fn restore_policy(before: Option<String>) {
    let s3 = s3().await;
    match before {
        Some(p) => {
            s3.put_bucket_policy()
                .bucket(BUCKET)
                .policy(p)
                .send()
                .await
                .expect("restore");
        }
        None => {
            s3.delete_bucket_policy()
                .bucket(BUCKET)
                .send()
                .await
                .expect("restore");
        }
    }
}

fn json_of(all: &[Impact]) -> String {
    serde_json::to_string_pretty(all).expect("json")
}

#[tokio::test]
async fn the_plan_is_the_same_with_one_or_many_reads_in_flight_and_a_failed_read_is_reported() {
    let (_d, base) = inputs(&org_text(), None);
    seed_all(fleet_of("iw", 10, &["python", "node"]), base).await;
    let (_l, langs) = python_bumped();
    let candidate = || inputs(&org_with_another_team(), Some(&langs));
    // Every record is read and rendered: the Python ones change, the Node ones do not.
    let (_d, c) = candidate();
    let (one, s1) = plan_in("iw", c, "2026-06-01", 1).await;
    let (_d, c) = candidate();
    let (many, s16) = plan_in("iw", c, "2026-06-01", 16).await;
    assert_eq!(s1.records_read, 10, "{s1:?}");
    assert_eq!(
        (s1.count(Outcome::Changed), s1.count(Outcome::Unchanged)),
        (5, 5),
        "{one:#?}"
    );
    assert_eq!(
        json_of(&one),
        json_of(&many),
        "the same report, in the same order"
    );
    assert_eq!(
        serde_json::to_value(&s1).expect("json"),
        serde_json::to_value(&s16).expect("json")
    );

    // A record that cannot be read (here: denied) is reported as such, never as unchanged,
    // and the others are planned as before.
    let _policy = POLICY.lock().await;
    let before = deny_reads(&["pipelines/iw-00003/deployed.json".to_owned()]).await;
    let (_d, c) = candidate();
    let (denied, s) = plan_in("iw", c, "2026-06-01", 16).await;
    restore_policy(before).await;
    let failed = impact(&denied, "iw-00003");
    assert_eq!(failed.outcome, Outcome::Unreadable, "{failed:?}");
    assert!(failed.diagnostics.contains("Access Denied"), "{failed:?}");
    assert_eq!(s.count(Outcome::Unchanged), 4, "{s:?}");
    let others = |all: &[Impact]| {
        json_of(
            &all.iter()
                .filter(|i| i.pipeline != "iw-00003")
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(others(&denied), others(&many));
}

/// The deploy record of `pipeline` as stored.
async fn stored_record(pipeline: &str) -> serde_json::Value {
    let out = s3()
        .await
        .get_object()
        .bucket(BUCKET)
        .key(format!("pipelines/{pipeline}/deployed.json"))
        .send()
        .await
        .expect("record");
    let bytes = out.body.collect().await.expect("body").into_bytes();
    serde_json::from_slice(&bytes).expect("record json")
}

#[tokio::test]
async fn a_changed_pipeline_reads_its_deployed_files_in_one_request_and_a_forged_archive_is_ignored()
 {
    let (_d, base) = inputs(&org_text(), None);
    let aws = Arc::new(srv().aws().await);
    let seeded = seed::seed(
        aws,
        Arc::new(base),
        fleet_of("ia", 3, &["python"]),
        true,
        8,
        |_| {},
    )
    .await
    .expect("seed");
    assert_eq!(seeded, 3);
    let record = stored_record("ia-00000").await;
    assert_eq!(
        record["archive"], true,
        "a deploy with a bundle names its archive"
    );
    let (_l, langs) = python_bumped();
    let candidate = || inputs(&org_text(), Some(&langs));

    let (_d, c) = candidate();
    let (all, s) = plan("ia", c, "2026-06-01").await;
    assert_eq!(s.count(Outcome::Changed), 3, "{all:#?}");
    assert_eq!(s.bundle_reads, 3, "one archive per changed pipeline: {s:?}");
    for i in &all {
        assert!(i.files.len() >= 2, "{i:?}");
        assert!(i.diagnostics.is_empty(), "{i:?}");
        for f in &i.files {
            assert_eq!(f.change, Change::Modified, "{i:?}");
            assert!(
                f.added > 0 && f.removed > 0,
                "lines counted from the old file: {i:?}"
            );
        }
    }
    let files = all[0].files.len();

    // Without the archive (a bundle written before archives), the files one by one: the same
    // report. A forged archive (another file's content under a changed path) gives nothing,
    // and the file itself is read: the same report again.
    let archive_of = |r: &serde_json::Value| {
        pipeforge::publish::archive::key(r["bundle"].as_str().expect("bundle"))
    };
    delete(&archive_of(&record)).await;
    let forged_at = archive_of(&stored_record("ia-00001").await);
    let mut forged = pipeforge::outputs::Outputs::default();
    for f in &all[1].files {
        forged.insert(f.path.clone(), b"forged: true\n".to_vec());
    }
    s3().await
        .put_object()
        .bucket(BUCKET)
        .key(&forged_at)
        .body(
            pipeforge::publish::archive::pack(&forged)
                .expect("zip")
                .into(),
        )
        .send()
        .await
        .expect("put forged");
    let (_d, c) = candidate();
    let (again, s) = plan("ia", c, "2026-06-01").await;
    assert_eq!(json_of(&again), json_of(&all));
    assert_eq!(s.bundle_reads, 3 + 2 * files, "{s:?}");

    // Old files that cannot be read: the pipeline is still reported changed, with the reason.
    let _policy = POLICY.lock().await;
    let r2 = stored_record("ia-00002").await;
    let bundle = r2["bundle"].as_str().expect("bundle");
    let mut denied: Vec<String> = all[2]
        .files
        .iter()
        .map(|f| format!("{bundle}{}", f.path))
        .collect();
    denied.push(archive_of(&r2));
    let before = deny_reads(&denied).await;
    let (_d, c) = candidate();
    let (broken, _) = plan("ia", c, "2026-06-01").await;
    restore_policy(before).await;
    let i = impact(&broken, "ia-00002");
    assert_eq!(i.outcome, Outcome::Changed, "{i:?}");
    assert!(i.diagnostics.contains("Access Denied"), "{i:?}");
}
