//! Pipelines over several tooling accounts, against a real local AWS server (`ci/local-aws`,
//! which bootstraps every account of the org's `tooling_accounts` with its key and bucket):
//! a new pipeline is placed once and its owner record (in the home account's bucket) holds the
//! placement; every later deploy reads it back, so a change of the org's rules or a new tooling
//! account never moves it; a placement naming an account the org no longer lists is refused;
//! a name is unique across the org (no team can shadow another's pipeline in a second
//! account); an account's `capacity` refuses a new pipeline before anything changes; the
//! webhook worker, status and the fleet find the pipeline where it lives; `pipeforge move`
//! moves it, emptying the old artifact bucket (versions and delete markers) so its stack can
//! be deleted, and finishes a retire that stopped; `pipeforge doctor` checks every tooling
//! account and names the one a missing piece is in.
//!
//! One test function: the steps share the server's accounts and build on each other.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipeforge::deploy::relocate::{self, MoveOptions};
use pipeforge::error::Error;
use pipeforge::fleet;
use pipeforge::webhook::worker::{AwsDeployer, DeployRequest, Deployer};
use support::{Events, Repo, example, inputs, keys, options};

const HOME: &str = "123456789012";
const HOME_BUCKET: &str = "example-pipeforge-source";
const SECOND: &str = "555555555555";
const SECOND_REGION: &str = "eu-west-1";
const SECOND_BUCKET: &str = "example-pipeforge-source-555";

/// `pipeforge move p-placed` with `options`.
async fn move_placed(
    inp: &pipeforge::Inputs,
    aws: &pipeforge::aws::AwsContext,
    options: &MoveOptions,
) -> Result<relocate::MoveReport, Error> {
    Box::pin(relocate::relocate(
        "p-placed",
        inp,
        aws,
        options,
        &Events::default(),
    ))
    .await
}

/// examples/org.yaml with a team `intruders`, the second tooling account and `extra`.
fn org_file(dir: &Path, file: &str, second: bool, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(support::root().join("examples/org.yaml")).expect("org");
    let payments = "  payments: {repositories: [\"payments/*\"]}\n";
    assert!(text.contains(payments));
    let text = text.replace(
        payments,
        &format!("{payments}  intruders: {{repositories: [\"intruders/*\"]}}\n"),
    );
    let accounts = if second {
        format!(
            "tooling_accounts:\n  - {{account: \"{SECOND}\", region: {SECOND_REGION}, bucket: {SECOND_BUCKET}, kms_key: alias/pipeforge-source, capacity: 1}}\n"
        )
    } else {
        String::new()
    };
    let path = dir.join(file);
    std::fs::write(&path, format!("{text}{accounts}{extra}")).expect("write org");
    path
}

fn manifest(name: &str, team: &str) -> String {
    let text = example(name);
    text.replace("team: payments\n", &format!("team: {team}\n"))
}

async fn owner_record(s3: &aws_sdk_s3::Client, bucket: &str, name: &str) -> serde_json::Value {
    let body = s3
        .get_object()
        .bucket(bucket)
        .key(format!("pipelines/{name}/owner.json"))
        .send()
        .await
        .expect("owner record")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    serde_json::from_slice(&body).expect("JSON")
}

/// The steps hold several deploys' futures: run them on a thread with room for them in a
/// debug build.
#[test]
fn pipelines_are_placed_once_over_the_tooling_accounts_and_read_back() {
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(steps())
        })
        .expect("thread")
        .join()
        .expect("the steps pass");
}

async fn steps() {
    let dir = tempfile::tempdir().expect("tmp");
    // Payments' new pipelines go to the second account.
    let org_a = org_file(
        dir.path(),
        "org-a.yaml",
        true,
        &format!("placement:\n  teams: {{payments: \"{SECOND}\"}}\n"),
    );
    // The second account is installed by its own bootstrap stack (`pipeforge bootstrap`'s
    // `tooling-555555555555.json`), deployed through the server's CloudFormation: every deploy
    // placed there below runs on what that stack created (and the bootstrap role).
    let inp = inputs(Some(&org_a), None);
    let rendered =
        pipeforge::webhook::bootstrap::render(&inp.org, &inp.templates).expect("bootstrap stacks");
    let bootstrap_dir = dir.path().join("bootstrap");
    pipeforge::outputs::write_bundles(&bootstrap_dir, &[("", &rendered)]).expect("write");
    assert!(
        bootstrap_dir
            .join(format!("tooling-{SECOND}.json"))
            .is_file()
    );
    let srv = support::server_bootstrapped(&org_a, &bootstrap_dir);
    let aws = srv.aws().await;
    let home_s3 = support::s3(&aws, &srv.region);
    let role = inp.org.org.deploy.bootstrap_role.clone();
    let second_conf = support::account(&aws, SECOND, SECOND_REGION, &role).await;
    let second_s3 = aws.s3(&second_conf, SECOND_REGION);

    // 1. A new pipeline is placed by its team's rule, and the claim records it in the home
    //    account's bucket; everything else of it lives in the second account.
    let repo = Repo::new(&example("p-placed"));
    let events = Events::default();
    let report = Box::pin(support::deploy_repo_with(
        &repo,
        &inp,
        &aws,
        &options(),
        &events,
    ))
    .await
    .expect("deploy into the second account");
    assert!(report.claimed);
    let record = owner_record(&home_s3, HOME_BUCKET, "p-placed").await;
    assert_eq!(
        record["placement"],
        serde_json::json!({"account": SECOND, "region": SECOND_REGION, "by": "team"})
    );
    let stack = "pf-p-placed-pipeline";
    assert!(
        support::stack_status(&aws, &second_conf, SECOND_REGION, stack)
            .await
            .is_some(),
        "the pipeline stack is in the second account"
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, stack).await,
        None,
        "and not in the home account"
    );
    let placed_keys = keys(&second_s3, SECOND_BUCKET, "payments/p-placed/").await;
    assert!(
        placed_keys.iter().any(|k| k.ends_with("source.zip")),
        "{placed_keys:?}"
    );
    assert_eq!(
        keys(&home_s3, HOME_BUCKET, "payments/p-placed/").await,
        Vec::<String>::new()
    );
    assert!(
        keys(&second_s3, SECOND_BUCKET, "pipelines/p-placed/")
            .await
            .contains(&"pipelines/p-placed/deployed.json".to_owned())
    );
    // Placed where the policy places it first: its record has a listing key beside it.
    assert_eq!(
        keys(&second_s3, SECOND_BUCKET, "pipelines/p-placed/set/")
            .await
            .len(),
        1
    );

    // 2. The org's rules change and a tooling account is added: the deployed pipeline stays.
    let org_b = org_file(
        dir.path(),
        "org-b.yaml",
        true,
        &format!(
            "  - {{account: \"444444444444\", region: us-east-1, bucket: example-pipeforge-source-444, kms_key: alias/pipeforge-source}}\nplacement:\n  pipelines: {{p-placed: \"444444444444\"}}\n  teams: {{payments: \"{HOME}\"}}\n"
        ),
    );
    let inp_b = inputs(Some(&org_b), None);
    let again = Box::pin(support::deploy_repo(&repo, &inp_b, &aws, &options()))
        .await
        .expect("redeploy where it lives");
    assert!(!again.claimed);
    assert!(
        again
            .stacks
            .iter()
            .filter(|s| s.kind != "target")
            .all(|s| s.account == SECOND && (s.kind != "pipeline" || s.region == SECOND_REGION)),
        "{:?}",
        again.stacks
    );
    assert_eq!(
        owner_record(&home_s3, HOME_BUCKET, "p-placed").await["placement"]["account"],
        SECOND
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, stack).await,
        None
    );

    // 2b. The webhook worker: a merge deploys where the pipeline lives (the org's rules would
    //     send it elsewhere now), and its deployed commit is read from there.
    let merged = example("p-placed").replace("coverage_min: 85", "coverage_min: 90");
    assert_ne!(merged, example("p-placed"));
    repo.commit_manifest(&merged, "feat: coverage 90");
    let commit = support::git(repo.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_owned();
    let worker = AwsDeployer {
        aws: Arc::new(srv.aws().await),
        options: options(),
    };
    let log = |_: serde_json::Value| {};
    let manifest_path = repo.manifest();
    let done = Box::pin(worker.deploy(DeployRequest {
        checkout: repo.path(),
        repository: support::REPOSITORY,
        host: Some("github.com"),
        manifest: &manifest_path,
        commit: &commit,
        inputs: &inp_b,
        today: pipeforge::webhook::today(),
        progress: &log,
    }))
    .await
    .expect("the worker deploys");
    assert_eq!(done.commit, commit);
    assert!(
        done.stacks.iter().any(|s| s.stack == stack),
        "{:?}",
        done.stacks
    );
    // Rendered with the org's rules (account 444444444444), read where the record places it.
    let provisional = pipeforge::generate(
        &pipeforge::SourceFile::new("pipeline.yml", merged.clone()),
        &inp_b,
    )
    .expect("render");
    assert_eq!(provisional.plan.pipeline.tooling_account, "444444444444");
    assert_eq!(
        worker
            .deployed_commit(&provisional.plan, &inp_b)
            .await
            .expect("deployed commit"),
        Some(commit.clone())
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, stack).await,
        None
    );

    // 3. An org that no longer lists the account: a clear refusal, nothing changes.
    let org_c = org_file(dir.path(), "org-c.yaml", false, "");
    let err = Box::pin(support::deploy_repo(
        &repo,
        &inputs(Some(&org_c), None),
        &aws,
        &options(),
    ))
    .await
    .expect_err("the placement's account is gone");
    assert!(
        err.to_string().contains(&format!(
            "pipeline `p-placed` is placed in tooling account {SECOND} ({SECOND_REGION}) by its owner record, but the org policy no longer lists that account"
        )),
        "{err}"
    );
    assert!(matches!(err, Error::Refused { ref help, .. } if help.contains("pipeforge move")));
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, stack).await,
        None
    );

    // 4. Another team cannot shadow the name in another account: the org sends `intruders`
    //    to the home account, where `p-placed` has no stacks; an owner record forged in the
    //    second account's bucket is refused by its policy, and would change nothing anyway.
    second_s3
        .put_object()
        .bucket(SECOND_BUCKET)
        .key("pipelines/p-placed/owner.json")
        .body(
            serde_json::json!({
                "schema": "pipeforge/owner/v1", "pipeline": "p-placed", "team": "intruders",
                "repository": "intruders/p-placed",
                "claimed": {"at": "2026-01-01T00:00:00Z", "by": "intruders"},
                "placement": {"account": SECOND, "region": SECOND_REGION, "by": "team"}
            })
            .to_string()
            .into_bytes()
            .into(),
        )
        .send()
        .await
        .expect_err("the second account's bucket refuses owner records (its bootstrap stack)");
    let org_d = org_file(
        dir.path(),
        "org-d.yaml",
        true,
        &format!("placement:\n  teams: {{payments: \"{SECOND}\", intruders: \"{HOME}\"}}\n"),
    );
    let intruder = Repo::from(&manifest("p-placed", "intruders"), "intruders/p-placed");
    let err = Box::pin(support::deploy_repo(
        &intruder,
        &inputs(Some(&org_d), None),
        &aws,
        &options(),
    ))
    .await
    .expect_err("the name is taken in the other account");
    assert!(
        err.to_string()
            .contains("pipeline p-placed is owned by payments/"),
        "{err}"
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, stack).await,
        None,
        "no second pipeline of that name"
    );
    assert_eq!(
        keys(&home_s3, HOME_BUCKET, "intruders/").await,
        Vec::<String>::new()
    );
    assert_eq!(
        owner_record(&home_s3, HOME_BUCKET, "p-placed").await["team"],
        "payments"
    );

    // 5. The second account's `capacity` (1) is reached: a new pipeline placed there is
    //    refused before anything changes, with the way out.
    let second = Repo::new(&example("p-second"));
    let err = Box::pin(support::deploy_repo(&second, &inp, &aws, &options()))
        .await
        .expect_err("the account is full");
    assert!(
        err.to_string().contains(&format!(
            "tooling account {SECOND} holds 1 pipelines, its capacity in the org policy is 1"
        )),
        "{err}"
    );
    assert!(
        matches!(err, Error::Other { ref help, .. } if help.contains("add a tooling account") && help.contains("pipeforge move")),
        "{err:?}"
    );
    assert_eq!(
        keys(&home_s3, HOME_BUCKET, "pipelines/p-second/").await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys(&second_s3, SECOND_BUCKET, "payments/p-second/").await,
        Vec::<String>::new()
    );

    // 6. Status and the fleet find the pipeline where it lives, once.
    let status = pipeforge::status::status("p-placed", None, &inp.org, &aws)
        .await
        .expect("status");
    let pipeline = status
        .stacks
        .iter()
        .find(|s| s.kind == "pipeline")
        .expect("pipeline stack");
    assert_eq!(
        (pipeline.account.as_str(), pipeline.region.as_str()),
        (SECOND, SECOND_REGION)
    );
    assert!(pipeline.healthy(), "{pipeline:?}");
    let mut seen = Vec::new();
    fleet::scan(
        &aws,
        &inp.org.org,
        Arc::new(fleet::Records),
        &fleet::Scope::default(),
        |e| {
            seen.push(match e {
                fleet::Entry::Record(r) => format!("{} record", r.pipeline),
                other => format!("{} {other:?}", other.pipeline()),
            });
            Ok(())
        },
    )
    .await
    .expect("scan");
    assert_eq!(seen, ["p-placed record"]);

    // 7. A platform engineer moves it home. Refused while its stacks are in the second
    //    account; with `--retire-old` the new stacks are deployed, then the old ones deleted.
    let mut moving = MoveOptions {
        to: HOME.to_owned(),
        retire_old: false,
        by: "platform@example (move)".to_owned(),
        deploy: options(),
    };
    let err = move_placed(&inp, &aws, &moving)
        .await
        .expect_err("old stacks exist");
    assert!(
        err.to_string().contains(&format!(
            "pipeline `p-placed` still has stacks in tooling account {SECOND} ({SECOND_REGION}): `pf-p-placed-pipeline`"
        )),
        "{err}"
    );
    assert_eq!(
        owner_record(&home_s3, HOME_BUCKET, "p-placed").await["placement"]["account"],
        SECOND,
        "nothing changed"
    );
    // The old pipeline ran: its versioned artifact bucket holds objects, older versions and a
    // delete marker, which CloudFormation refuses to delete; the move empties it first.
    let artifacts = format!("pf-p-placed-{SECOND}-{SECOND_REGION}");
    for (key, body) in [("a/1", "one"), ("a/1", "two"), ("b/2", "three")] {
        second_s3
            .put_object()
            .bucket(&artifacts)
            .key(key)
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .expect("an artifact in the old account");
    }
    second_s3
        .delete_object()
        .bucket(&artifacts)
        .key("b/2")
        .send()
        .await
        .expect("a delete marker");
    // A retire that stopped before emptying it (or someone who deleted the stack by hand) left
    // the old stack DELETE_FAILED on the non-empty bucket: the move finishes it.
    let second_cfn = aws.cloudformation(&second_conf, SECOND_REGION);
    second_cfn
        .delete_stack()
        .stack_name(stack)
        .role_arn(format!("arn:aws:iam::{SECOND}:role/pf-pipeforge-cfn-exec"))
        .send()
        .await
        .expect("delete the old stack");
    let mut status = None;
    for _ in 0..200 {
        status = support::stack_status(&aws, &second_conf, SECOND_REGION, stack).await;
        if status.as_deref() != Some("DELETE_IN_PROGRESS") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        status.as_deref(),
        Some("DELETE_FAILED"),
        "the bucket is not empty"
    );
    moving.retire_old = true;
    // A `source.zip` over the snapshot limit (pipeforge never writes one: someone else did) is
    // refused unread, before the record changes: the copy goes through memory.
    let mut small = moving.clone();
    small.deploy.max_source_bytes = 64;
    let err = move_placed(&inp, &aws, &small)
        .await
        .expect_err("the snapshot is over the limit");
    assert!(
        err.to_string().contains("the source snapshot")
            && err.to_string().contains("payments/p-placed/source.zip"),
        "{err}"
    );
    assert_eq!(
        owner_record(&home_s3, HOME_BUCKET, "p-placed").await["placement"]["account"],
        SECOND,
        "nothing changed"
    );
    let moved = move_placed(&inp, &aws, &moving).await.expect("move");
    assert!(moved.changed);
    assert!(
        moved.retired.contains(&stack.to_owned()),
        "{:?}",
        moved.retired
    );
    assert_eq!(
        owner_record(&home_s3, HOME_BUCKET, "p-placed").await["placement"],
        serde_json::json!({"account": HOME, "region": srv.region, "by": "move"})
    );
    assert!(
        support::stack_status(&aws, aws.base(), &srv.region, stack)
            .await
            .is_some(),
        "the pipeline stack is home now"
    );
    assert_eq!(
        support::stack_status(&aws, &second_conf, SECOND_REGION, stack).await,
        None,
        "and gone from the second account"
    );
    assert!(
        second_s3
            .head_bucket()
            .bucket(&artifacts)
            .send()
            .await
            .is_err(),
        "its artifact bucket was emptied, then deleted with its stack"
    );
    assert!(
        keys(&second_s3, SECOND_BUCKET, "payments/p-placed/source.zip")
            .await
            .contains(&"payments/p-placed/source.zip".to_owned()),
        "the old source bucket is never emptied"
    );
    assert!(
        keys(&home_s3, HOME_BUCKET, "payments/p-placed/")
            .await
            .contains(&"payments/p-placed/source.zip".to_owned()),
        "the snapshot came along"
    );
    // The old record went with its listing key; the new one has a key only when the policy
    // would place the pipeline here first (a plan renders with that placement).
    assert_eq!(
        keys(&second_s3, SECOND_BUCKET, "pipelines/p-placed/").await,
        Vec::<String>::new()
    );
    let first = pipeforge::capacity::placement::provisional(&inp.org, "p-placed", "payments");
    assert_eq!(
        keys(&home_s3, HOME_BUCKET, "pipelines/p-placed/set/")
            .await
            .len(),
        usize::from(first.account == HOME),
        "placed by the move, first choice {}",
        first.account
    );
    let mut seen = Vec::new();
    fleet::scan(
        &aws,
        &inp.org.org,
        Arc::new(fleet::Records),
        &fleet::Scope::default(),
        |e| {
            seen.push(e.pipeline().to_owned());
            Ok(())
        },
    )
    .await
    .expect("scan");
    assert_eq!(seen, ["p-placed"], "once, from its new account");
    // Moving it where it is changes nothing more.
    let again = move_placed(&inp, &aws, &moving)
        .await
        .expect("finished move");
    assert!(!again.changed && again.retired.is_empty(), "{again:?}");

    // 8. `pipeforge doctor` checks every tooling account, each finding under its account: the
    //    second one's bucket, key, roles and deploy policy, and its capacity headroom.
    let report = pipeforge::doctor::doctor(&aws, &inp.org, &[])
        .await
        .expect("doctor");
    let missing = |r: &pipeforge::doctor::DoctorReport| -> Vec<(String, String)> {
        r.checks
            .iter()
            .filter(|c| c.verdict == pipeforge::doctor::Verdict::Missing)
            .map(|c| (c.account.clone(), c.item.clone()))
            .collect()
    };
    assert!(report.healthy(), "{:#?}", missing(&report));
    for item in [
        "bootstrap role `pipeforge-bootstrap`".to_owned(),
        format!("source bucket `{SECOND_BUCKET}`"),
        "source key `alias/pipeforge-source`".to_owned(),
        "role `pf-pipeforge-cfn-exec`".to_owned(),
        format!("policy `arn:aws:iam::{SECOND}:policy/pf-pipeforge-roles-boundary`"),
        format!("policy `arn:aws:iam::{SECOND}:policy/pf-pipeforge-tooling-deployer`"),
        "quota `iam-roles`".to_owned(),
        "quota `codepipeline-pipelines`".to_owned(),
        "capacity in the org policy".to_owned(),
    ] {
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.account == SECOND && c.item == item),
            "{item}: {:#?}",
            report.checks
        );
    }
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.account == HOME && c.item == "quota `iam-roles`"),
        "the home account's headroom too"
    );
    // A piece of the second account's bootstrap goes missing: doctor names it, and only it.
    let iam = aws_sdk_iam::Client::new(&second_conf);
    iam.delete_role_policy()
        .role_name("pf-pipeforge-cfn-exec")
        .policy_name("pipeline-stacks")
        .send()
        .await
        .expect("delete policy");
    iam.delete_role()
        .role_name("pf-pipeforge-cfn-exec")
        .send()
        .await
        .expect("delete role");
    let report = pipeforge::doctor::doctor(&aws, &inp.org, &[])
        .await
        .expect("doctor");
    assert!(!report.healthy());
    assert_eq!(
        missing(&report),
        [(SECOND.to_owned(), "role `pf-pipeforge-cfn-exec`".to_owned())]
    );
}
