//! `publish`, `deploy`, `diff` and `status` against a real local AWS server (`ci/local-aws`),
//! with real git repositories: what a deploy creates is inspected through the service APIs.
//!
//! One server per org policy and test binary; tests are isolated by pipeline name.

mod support;

use std::path::Path;
use std::time::Duration;

use pipeforge::deploy::{self, DeployReport};
use pipeforge::error::Error;
use pipeforge::publish::progress::{Event, StackOutcome};
use pipeforge::publish::{self, PublishOptions};
use support::{
    Events, Repo, deploy_repo, deploy_repo_with, example, inputs, keys, options, server,
};

const BUCKET: &str = "example-pipeforge-source";
const TOOLING: &str = "123456789012";

fn outcomes(r: &DeployReport) -> Vec<(String, StackOutcome)> {
    r.stacks
        .iter()
        .map(|s| (s.name.clone(), s.outcome))
        .collect()
}

/// The content hash pipeforge recorded on a published snapshot; `None` only when there is no
/// snapshot (any other failure of the call fails the test, so that two failed reads never
/// compare equal).
async fn source_sha(s3: &aws_sdk_s3::Client, key: &str) -> Option<String> {
    match s3.head_object().bucket(BUCKET).key(key).send().await {
        Ok(h) => Some(
            h.metadata()
                .and_then(|m| m.get("pipeforge-sha256"))
                .cloned()
                .unwrap_or_else(|| panic!("`{key}` has no pipeforge-sha256 metadata")),
        ),
        Err(e) if e.as_service_error().is_some_and(|x| x.is_not_found()) => None,
        Err(e) => panic!("HeadObject `{key}`: {e:?}"),
    }
}

#[tokio::test]
async fn first_deploy_creates_every_stack_and_a_redeploy_changes_nothing() {
    let srv = server(None);
    let aws = srv.aws().await;
    let repo = Repo::new(&example("t-first"));
    let inp = inputs(None, None);
    let events = Events::default();
    let r = deploy_repo_with(&repo, &inp, &aws, &options(), &events)
        .await
        .expect("deploy");
    let names: Vec<&str> = r.stacks.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pf-t-first-dev-target",
            "pf-t-first-test-target",
            "pf-t-first-prod-target",
            "pf-t-first-pipeline"
        ]
    );
    assert!(r.stacks.iter().all(|s| s.outcome == StackOutcome::Created));
    // Target stacks in their accounts, the pipeline stack in the tooling account.
    let accounts: Vec<&str> = r.stacks.iter().map(|s| s.account.as_str()).collect();
    assert_eq!(
        accounts,
        ["111111111111", "222222222222", "333333333333", TOOLING]
    );
    // The pipeline stack is over 51,200 bytes: it went by TemplateURL, the others inline.
    let pipeline = &r.stacks[3];
    let url = pipeline.template_url.as_deref().expect("template url");
    assert!(
        url.starts_with(&format!(
            "https://{BUCKET}.s3.us-east-1.amazonaws.com/payments/t-first/bundle/"
        )),
        "{url}"
    );
    assert!(r.stacks[..3].iter().all(|s| s.template_url.is_none()));
    // Events streamed as they happened, resource by resource.
    let ev = events.resource_events("pf-t-first-dev-target");
    assert!(
        ev.contains(&"DeployRole CREATE_COMPLETE".to_owned()),
        "{ev:?}"
    );
    assert_eq!(
        ev.last().map(String::as_str),
        Some("pf-t-first-dev-target CREATE_COMPLETE")
    );

    // The bucket: the bundle (plan.json last, the deployed templates) and the snapshot.
    let s3 = support::s3(&aws, &srv.region);
    let bundle = r.bundle.as_ref().expect("bundle");
    let objects = keys(&s3, BUCKET, &bundle.prefix).await;
    for want in [
        "plan.json",
        "stacks/pipeline.json",
        "buildspecs/test.yml",
        "deploy/pf-t-first-pipeline.json",
    ] {
        assert!(
            objects.contains(&format!("{}{want}", bundle.prefix)),
            "{want} in {objects:?}"
        );
    }
    let head = s3
        .head_object()
        .bucket(BUCKET)
        .key("payments/t-first/source.zip")
        .send()
        .await
        .expect("source.zip");
    assert_eq!(
        head.server_side_encryption().map(|e| e.as_str()),
        Some("aws:kms"),
        "uploads are SSE-KMS"
    );
    assert!(r.source.as_ref().is_some_and(|s| s.uploaded));
    assert!(
        keys(&s3, BUCKET, "pipelines/t-first/deploy.lock")
            .await
            .is_empty(),
        "the lock is released"
    );

    // Again, with nothing changed: no change set, no upload that would start the pipeline.
    let r2 = deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("redeploy");
    assert!(
        r2.stacks
            .iter()
            .all(|s| s.outcome == StackOutcome::Unchanged
                && s.detail.as_deref() == Some("same content hash")),
        "{:?}",
        outcomes(&r2)
    );
    assert!(r2.source.as_ref().is_some_and(|s| !s.uploaded));
    assert!(r2.bundle.as_ref().is_some_and(|b| b.uploaded == 0));
    let cfn = aws.cloudformation(aws.base(), &srv.region);
    let stack = cfn
        .describe_stacks()
        .stack_name("pf-t-first-pipeline")
        .send()
        .await
        .expect("describe");
    let s = &stack.stacks()[0];
    assert_eq!(
        s.stack_status().map(|x| x.as_str()),
        Some("CREATE_COMPLETE"),
        "never updated"
    );
    let sets = cfn
        .list_change_sets()
        .stack_name("pf-t-first-pipeline")
        .send()
        .await
        .expect("change sets");
    assert!(
        sets.summaries().iter().all(|c| c
            .execution_status()
            .is_some_and(|x| x.as_str() == "EXECUTE_COMPLETE")),
        "no change set waiting: {:?}",
        sets.summaries()
    );
}

#[tokio::test]
async fn a_manifest_change_updates_exactly_the_affected_resources() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("t-change");
    let repo = Repo::new(&manifest);
    let inp = inputs(None, None);
    deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("deploy");
    let s3 = support::s3(&aws, &srv.region);
    let first_sha = source_sha(&s3, "payments/t-change/source.zip")
        .await
        .expect("published");

    // A team variable reaches the gates that run team commands (test and build) only.
    repo.commit_manifest(
        &manifest.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"),
        "chore: debug logs",
    );
    let events = Events::default();
    let r = deploy_repo_with(&repo, &inp, &aws, &options(), &events)
        .await
        .expect("update");
    assert_eq!(
        outcomes(&r),
        [
            ("pf-t-change-dev-target".to_owned(), StackOutcome::Unchanged),
            (
                "pf-t-change-test-target".to_owned(),
                StackOutcome::Unchanged
            ),
            (
                "pf-t-change-prod-target".to_owned(),
                StackOutcome::Unchanged
            ),
            ("pf-t-change-pipeline".to_owned(), StackOutcome::Updated),
        ]
    );
    let changed: Vec<(String, String)> = r.stacks[3]
        .changes
        .iter()
        .map(|c| (c.action.clone(), c.logical_id.clone()))
        .collect();
    assert_eq!(
        changed,
        [
            ("Modify".to_owned(), "GateBuildProject".to_owned()),
            ("Modify".to_owned(), "GateTestProject".to_owned())
        ]
    );
    let ev = events.resource_events("pf-t-change-pipeline");
    assert!(
        ev.contains(&"GateTestProject UPDATE_COMPLETE".to_owned()),
        "{ev:?}"
    );
    // The new commit's snapshot went up after the stacks.
    let second_sha = source_sha(&s3, "payments/t-change/source.zip")
        .await
        .expect("published");
    assert_ne!(first_sha, second_sha);

    // The CodeBuild project now runs the new buildspec.
    let cb = aws_sdk_codebuild::Client::from_conf(
        aws_sdk_codebuild::config::Builder::from(aws.base())
            .region(aws_sdk_codebuild::config::Region::new(srv.region.clone()))
            .build(),
    );
    let p = cb
        .batch_get_projects()
        .names("pf-t-change-test")
        .send()
        .await
        .expect("projects");
    let spec = p.projects()[0]
        .source()
        .and_then(|s| s.buildspec())
        .unwrap_or_default();
    assert!(spec.contains("LOG_LEVEL: \"debug\""), "{spec}");
}

/// A template set whose target stack fails on purpose (the local server's `LocalAws` hook).
fn failing_templates(dir: &Path, hook: &str) {
    let src = std::fs::read_to_string(support::root().join("templates/stacks/target.yml.tera"))
        .expect("target template");
    let anchor = "  DeployPolicy:\n    Type: AWS::IAM::Policy\n";
    assert!(src.contains(anchor));
    let patched = src.replace(
        anchor,
        &format!("{anchor}    Metadata:\n      LocalAws:\n        {hook}\n"),
    );
    std::fs::create_dir_all(dir.join("stacks")).expect("mkdir");
    std::fs::write(dir.join("stacks/target.yml.tera"), patched).expect("write");
}

fn deploy_failure(e: Error) -> pipeforge::error::DeployFailure {
    match e {
        Error::Deploy(f) => *f,
        other => panic!("expected a stack failure, got: {other}"),
    }
}

#[tokio::test]
async fn a_failing_update_rolls_back_explains_why_and_the_next_deploy_recovers() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("t-fail");
    let repo = Repo::new(&manifest);
    let good = inputs(None, None);
    deploy_repo(&repo, &good, &aws, &options())
        .await
        .expect("deploy");
    let s3 = support::s3(&aws, &srv.region);
    let sha = source_sha(&s3, "payments/t-fail/source.zip")
        .await
        .expect("published");

    let overrides = tempfile::tempdir().expect("tempdir");
    let dir = overrides.path().join("failing");
    failing_templates(
        &dir,
        "Fail: \"Policy arn:aws:iam::aws:policy/Missing does not exist\"",
    );
    let bad = inputs(None, Some(&dir));
    repo.commit_manifest(
        &manifest.replace("cost-center: \"4711\"", "cost-center: \"4712\""),
        "chore: cost center",
    );
    let e = deploy_repo(&repo, &bad, &aws, &options())
        .await
        .expect_err("the update fails");
    let text = e.to_string();
    let f = deploy_failure(e);
    assert_eq!(f.stack, "pf-t-fail-dev-target");
    assert_eq!(f.status.as_deref(), Some("UPDATE_ROLLBACK_COMPLETE"));
    assert!(
        f.events
            .iter()
            .any(|l| l.contains("DeployPolicy") && l.contains("Missing does not exist")),
        "{:?}",
        f.events
    );
    assert!(
        text.contains("help: the stack is back on its previous template"),
        "{text}"
    );
    // The other target stacks (deployed at the same time) failed the same way and say so; the
    // pipeline stack was not touched and nothing started the pipeline.
    assert_eq!(
        f.events.last().map(String::as_str),
        Some(
            "(stacks `pf-t-fail-test-target`, `pf-t-fail-prod-target` failed too; their events are above)"
        )
    );
    assert_eq!(
        source_sha(&s3, "payments/t-fail/source.zip")
            .await
            .as_deref(),
        Some(sha.as_str())
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, "pf-t-fail-pipeline")
            .await
            .as_deref(),
        Some("CREATE_COMPLETE")
    );
    let conf = support::account(&aws, "222222222222", &srv.region, "pipeforge-bootstrap").await;
    assert_eq!(
        support::stack_status(&aws, &conf, &srv.region, "pf-t-fail-test-target")
            .await
            .as_deref(),
        Some("UPDATE_ROLLBACK_COMPLETE")
    );

    // The next good deploy goes through.
    let r = deploy_repo(&repo, &good, &aws, &options())
        .await
        .expect("recovers");
    assert!(
        r.stacks
            .iter()
            .all(|s| matches!(s.outcome, StackOutcome::Updated | StackOutcome::Unchanged)),
        "{:?}",
        outcomes(&r)
    );
    assert!(r.source.as_ref().is_some_and(|s| s.uploaded));
    let dev = support::account(&aws, "111111111111", &srv.region, "pipeforge-bootstrap").await;
    assert_eq!(
        support::stack_status(&aws, &dev, &srv.region, "pf-t-fail-dev-target")
            .await
            .as_deref(),
        Some("UPDATE_COMPLETE")
    );
}

#[tokio::test]
async fn a_failed_first_create_is_replaced_by_the_next_deploy() {
    let srv = server(None);
    let aws = srv.aws().await;
    let repo = Repo::new(&example("t-firstfail"));
    let overrides = tempfile::tempdir().expect("tempdir");
    let dir = overrides.path().join("failing");
    failing_templates(&dir, "Fail: \"boom\"");
    let e = deploy_repo(&repo, &inputs(None, Some(&dir)), &aws, &options())
        .await
        .expect_err("create fails");
    let f = deploy_failure(e);
    assert_eq!(f.status.as_deref(), Some("ROLLBACK_COMPLETE"));
    assert!(f.help.contains("deleted and created again"), "{}", f.help);
    let events = Events::default();
    let r = deploy_repo_with(&repo, &inputs(None, None), &aws, &options(), &events)
        .await
        .expect("recreate");
    assert_eq!(r.stacks[0].outcome, StackOutcome::Created);
    assert!(
        r.stacks[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("failed first create")),
        "{:?}",
        r.stacks[0].detail
    );
    assert!(events.all().iter().any(|e| matches!(
        e,
        Event::StackStarted { action, stack, .. } if action == "recreate" && stack == "pf-t-firstfail-dev-target"
    )));
}

/// A new pipeline runs as soon as CloudFormation creates it: its snapshot must already be there.
/// Even when the pipeline stack then fails, the snapshot was uploaded before it; and every stack
/// was deployed through its account's CloudFormation execution role.
#[tokio::test]
async fn a_new_pipeline_finds_its_snapshot_and_stacks_use_the_execution_roles() {
    let srv = server(None);
    let aws = srv.aws().await;
    let repo = Repo::new(&example("t-newpipe"));
    let overrides = tempfile::tempdir().expect("tempdir");
    let dir = overrides.path().join("failing");
    let src = std::fs::read_to_string(support::root().join("templates/stacks/pipeline.yml.tera"))
        .expect("pipeline template");
    let anchor = "  NotificationTopic:\n    Type: AWS::SNS::Topic\n";
    assert!(src.contains(anchor));
    std::fs::create_dir_all(dir.join("stacks")).expect("mkdir");
    std::fs::write(
        dir.join("stacks/pipeline.yml.tera"),
        src.replace(
            anchor,
            &format!("{anchor}    Metadata:\n      LocalAws:\n        Fail: \"boom\"\n"),
        ),
    )
    .expect("write");
    let e = deploy_repo(&repo, &inputs(None, Some(&dir)), &aws, &options())
        .await
        .expect_err("the pipeline stack fails");
    assert_eq!(deploy_failure(e).stack, "pf-t-newpipe-pipeline");
    let s3 = support::s3(&aws, &srv.region);
    assert!(
        source_sha(&s3, "payments/t-newpipe/source.zip")
            .await
            .is_some(),
        "the snapshot of a new pipeline is uploaded before its stack"
    );
    let role_of = |conf: aws_config::SdkConfig, stack: &'static str| {
        let cfn = aws.cloudformation(&conf, &srv.region);
        async move {
            cfn.describe_stacks()
                .stack_name(stack)
                .send()
                .await
                .expect("describe")
                .stacks()
                .first()
                .and_then(|s| s.role_arn())
                .map(str::to_owned)
        }
    };
    let dev = support::account(&aws, "111111111111", &srv.region, "pipeforge-bootstrap").await;
    assert_eq!(
        role_of(dev, "pf-t-newpipe-dev-target").await.as_deref(),
        Some("arn:aws:iam::111111111111:role/pipeforge-bootstrap-cfn-exec")
    );
    assert_eq!(
        role_of(aws.base().clone(), "pf-t-newpipe-pipeline")
            .await
            .as_deref(),
        Some("arn:aws:iam::123456789012:role/pf-pipeforge-cfn-exec")
    );
}

#[tokio::test]
async fn a_failed_rollback_names_the_fix_and_deploys_resume_after_it() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("t-rbfail");
    let repo = Repo::new(&manifest);
    deploy_repo(&repo, &inputs(None, None), &aws, &options())
        .await
        .expect("deploy");
    let overrides = tempfile::tempdir().expect("tempdir");
    let dir = overrides.path().join("failing");
    failing_templates(
        &dir,
        "Fail: \"throttled\"\n        FailRollback: \"role is in use\"",
    );
    // One stack at a time: the first target stack fails, the others are not attempted.
    let sequential = deploy::DeployOptions {
        concurrency: 1,
        ..options()
    };
    let e = deploy_repo(&repo, &inputs(None, Some(&dir)), &aws, &sequential)
        .await
        .expect_err("rollback fails");
    let f = deploy_failure(e);
    assert_eq!(f.status.as_deref(), Some("UPDATE_ROLLBACK_FAILED"));
    assert_eq!(
        f.events.last().map(String::as_str),
        Some("(not attempted: `pf-t-rbfail-test-target`, `pf-t-rbfail-prod-target`)")
    );
    assert!(
        f.help.contains(
            "aws cloudformation continue-update-rollback --stack-name pf-t-rbfail-dev-target --region us-east-1"
        ),
        "{}",
        f.help
    );
    // A deploy refuses to touch the stack until someone fixes it, and says how.
    let e = deploy_repo(&repo, &inputs(None, None), &aws, &options())
        .await
        .expect_err("stuck");
    assert!(e.to_string().contains("continue-update-rollback"), "{e}");
    // The fix, then a deploy converges.
    let dev = support::account(&aws, "111111111111", &srv.region, "pipeforge-bootstrap").await;
    aws.cloudformation(&dev, &srv.region)
        .continue_update_rollback()
        .stack_name("pf-t-rbfail-dev-target")
        .send()
        .await
        .expect("continue-update-rollback");
    for _ in 0..100 {
        let s = support::stack_status(&aws, &dev, &srv.region, "pf-t-rbfail-dev-target").await;
        if s.as_deref() == Some("UPDATE_ROLLBACK_COMPLETE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deploy_repo(&repo, &inputs(None, None), &aws, &options())
        .await
        .expect("deploys again");
}

#[tokio::test]
async fn a_dry_run_executes_nothing_and_starts_nothing() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("t-dry");
    let repo = Repo::new(&manifest);
    let inp = inputs(None, None);
    let dry = deploy::DeployOptions {
        dry_run: true,
        ..options()
    };
    let r = deploy_repo(&repo, &inp, &aws, &dry).await.expect("dry run");
    assert!(r.dry_run);
    assert!(
        r.stacks
            .iter()
            .all(|s| s.outcome == StackOutcome::WouldCreate && !s.changes.is_empty()),
        "{:?}",
        outcomes(&r)
    );
    assert!(r.source.is_none());
    let s3 = support::s3(&aws, &srv.region);
    assert!(
        keys(&s3, BUCKET, "payments/t-dry/source.zip")
            .await
            .is_empty(),
        "nothing that starts the pipeline"
    );
    let cfn = aws.cloudformation(aws.base(), &srv.region);
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, "pf-t-dry-pipeline").await,
        None,
        "the stacks made for the change sets are gone again"
    );
    drop(cfn);

    deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("deploy");
    let sha = source_sha(&s3, "payments/t-dry/source.zip")
        .await
        .expect("published");
    repo.commit_manifest(
        &manifest.replace("LOG_LEVEL: info", "LOG_LEVEL: warn"),
        "chore: quieter",
    );
    let r = deploy_repo(&repo, &inp, &aws, &dry).await.expect("dry run");
    assert_eq!(r.stacks[3].outcome, StackOutcome::WouldUpdate);
    assert_eq!(r.stacks[3].changes.len(), 2);
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, "pf-t-dry-pipeline")
            .await
            .as_deref(),
        Some("CREATE_COMPLETE"),
        "not executed"
    );
    assert_eq!(
        source_sha(&s3, "payments/t-dry/source.zip")
            .await
            .as_deref(),
        Some(sha.as_str())
    );
}

#[tokio::test]
async fn concurrent_deploys_of_one_pipeline_take_turns_and_converge() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("t-race");
    let a = Repo::new(&manifest);
    let b = Repo::new(&manifest.replace("LOG_LEVEL: info", "LOG_LEVEL: trace"));
    let inp = inputs(None, None);
    let (oa, ob) = (
        deploy::DeployOptions {
            holder: Some("deploy-a".to_owned()),
            ..options()
        },
        deploy::DeployOptions {
            holder: Some("deploy-b".to_owned()),
            ..options()
        },
    );
    let (ea, eb) = (Events::default(), Events::default());
    let (ma, mb) = (a.manifest(), b.manifest());
    let (ra, rb) = tokio::join!(
        deploy::deploy(a.path(), &ma, &inp, &aws, &oa, &ea),
        deploy::deploy(b.path(), &mb, &inp, &aws, &ob, &eb),
    );
    let (ra, rb) = (ra.expect("deploy a"), rb.expect("deploy b"));
    // One waited for the other's lock, then deployed its own content on top.
    let waited_a = ea.all().iter().any(|e| matches!(e, Event::Waiting { .. }));
    let waited_b = eb.all().iter().any(|e| matches!(e, Event::Waiting { .. }));
    assert!(
        waited_a ^ waited_b,
        "exactly one waits: a {waited_a}, b {waited_b}"
    );
    let (first, last) = if waited_b { (&ra, &rb) } else { (&rb, &ra) };
    assert!(
        first
            .stacks
            .iter()
            .all(|s| s.outcome == StackOutcome::Created)
    );
    assert_eq!(last.stacks[3].outcome, StackOutcome::Updated);
    // The pipeline stack holds the content of the deploy that finished last.
    let status = pipeforge::status::status("t-race", Some("payments"), &inp.org, &aws)
        .await
        .expect("status");
    assert!(status.healthy());
    assert_eq!(
        status.stacks[3].content_hash.as_deref(),
        Some(last.stacks[3].content_hash.as_str())
    );
    // And a rerun of the last one converges: nothing left to do.
    let last_repo = if waited_b { &b } else { &a };
    let r = deploy_repo(last_repo, &inp, &aws, &options())
        .await
        .expect("rerun");
    assert!(
        r.stacks
            .iter()
            .all(|s| s.outcome == StackOutcome::Unchanged)
    );
}

#[tokio::test]
async fn a_held_lock_fails_a_deploy_cleanly_and_an_abandoned_one_is_taken_over() {
    let srv = server(None);
    let aws = srv.aws().await;
    let repo = Repo::new(&example("t-lock"));
    let inp = inputs(None, None);
    let s3 = support::s3(&aws, &srv.region);
    let lock = |lease: u64| {
        s3.put_object()
            .bucket(BUCKET)
            .key("pipelines/t-lock/deploy.lock")
            .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .ssekms_key_id("alias/pipeforge-source")
            .body(
                format!(
                    r#"{{"holder": "ci@elsewhere (pid 7)", "token": "t", "started": 1, "lease_seconds": {lease}}}"#
                )
                .into_bytes()
                .into(),
            )
            .send()
    };
    lock(3600).await.expect("lock");
    let short = deploy::DeployOptions {
        timeout: Duration::from_secs(1),
        ..options()
    };
    let e = deploy_repo(&repo, &inp, &aws, &short)
        .await
        .expect_err("locked");
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("another deploy of this pipeline is running: ci@elsewhere (pid 7)"),
        "{text}"
    );
    assert!(text.contains("help: run again when it is done"), "{text}");
    assert!(
        keys(&s3, BUCKET, "payments/t-lock/bundle/")
            .await
            .is_empty(),
        "nothing uploaded"
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, "pf-t-lock-pipeline").await,
        None
    );

    // A lock nobody renews for its lease is taken over.
    lock(1).await.expect("lock");
    let events = Events::default();
    deploy_repo_with(&repo, &inp, &aws, &options(), &events)
        .await
        .expect("takes over");
    assert!(events.all().iter().any(|e| matches!(
        e,
        Event::Warning { message } if message.contains("took over the deploy lock of ci@elsewhere")
    )));
}

#[tokio::test]
async fn a_missing_or_forbidden_bucket_fails_before_anything_is_uploaded() {
    let srv = server(None);
    let aws = srv.aws().await;
    let repo = Repo::new(&example("t-bucket"));
    let org_text = std::fs::read_to_string(support::root().join("examples/org.yaml")).expect("org");
    let dir = tempfile::tempdir().expect("tempdir");

    // A bucket that does not exist.
    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        org_text.replace(BUCKET, "pf-tests-no-such-bucket"),
    )
    .expect("org");
    let e = deploy_repo(&repo, &inputs(Some(&missing), None), &aws, &options())
        .await
        .expect_err("missing bucket");
    let text = e.to_string();
    assert!(
        text.contains("bucket `pf-tests-no-such-bucket` does not exist") && text.contains("help:"),
        "{text}"
    );

    // A bucket whose policy refuses our uploads.
    let s3 = support::s3(&aws, &srv.region);
    let denied = "pf-tests-denied-source";
    s3.create_bucket()
        .bucket(denied)
        .send()
        .await
        .expect("bucket");
    s3.put_bucket_policy()
        .bucket(denied)
        .policy(format!(
            r#"{{"Version": "2012-10-17", "Statement": [{{"Sid": "NoUploads", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::{denied}/*"}}]}}"#
        ))
        .send()
        .await
        .expect("policy");
    let forbidden = dir.path().join("forbidden.yaml");
    std::fs::write(&forbidden, org_text.replace(BUCKET, denied)).expect("org");
    let e = deploy_repo(&repo, &inputs(Some(&forbidden), None), &aws, &options())
        .await
        .expect_err("access denied");
    let text = e.to_string();
    assert!(text.contains("AccessDenied"), "{text}");
    assert!(text.contains("s3:PutObject"), "{text}");
    assert!(
        keys(&s3, denied, "").await.is_empty(),
        "nothing uploaded halfway"
    );
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, "pf-t-bucket-pipeline").await,
        None,
        "no stack deployed"
    );
}

#[tokio::test]
async fn publish_uploads_the_bundle_once_and_the_snapshot_when_it_changes() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("t-publish");
    let repo = Repo::new(&manifest);
    let inp = inputs(None, None);
    let events = Events::default();
    let r = publish::publish(
        repo.path(),
        &repo.manifest(),
        &inp,
        &aws,
        &PublishOptions::default(),
        &events,
    )
    .await
    .expect("publish");
    assert!(
        events.all().iter().any(|e| matches!(
            e,
            Event::Warning { message } if message.contains("`pf-t-publish-pipeline` is not deployed")
        )),
        "publishing without the stacks says so"
    );
    assert!(r.bundle.uploaded > 5, "{}", r.bundle.uploaded);
    assert!(r.source.uploaded);
    let again = publish::publish(
        repo.path(),
        &repo.manifest(),
        &inp,
        &aws,
        &PublishOptions::default(),
        &Events::default(),
    )
    .await
    .expect("again");
    assert_eq!(again.bundle.uploaded, 0);
    assert!(!again.source.uploaded);
    let forced = publish::publish(
        repo.path(),
        &repo.manifest(),
        &inp,
        &aws,
        &PublishOptions {
            force_source: true,
            ..PublishOptions::default()
        },
        &Events::default(),
    )
    .await
    .expect("forced");
    assert!(forced.source.uploaded);

    // The uploaded snapshot is the repository at its commit, with its git data.
    let s3 = support::s3(&aws, &srv.region);
    let body = s3
        .get_object()
        .bucket(BUCKET)
        .key("payments/t-publish/source.zip")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body.to_vec())).expect("zip");
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.expect("utf-8 name").into_owned())
        .collect();
    for want in ["pipeline.yml", "infra/app.yml", ".git/HEAD", ".git/config"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let mut manifest_entry = zip.by_name("pipeline.yml").expect("manifest");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut manifest_entry, &mut text).expect("read");
    assert_eq!(text, manifest);
}

/// The real binary, end to end: deploy, status, diff (exit 1 with changes, 0 without).
#[tokio::test]
async fn the_cli_deploys_reports_status_and_diffs() {
    let srv = server(None);
    let manifest = example("t-cli");
    let repo = Repo::new(&manifest);
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
    let repo_dir = repo.path().to_string_lossy().into_owned();
    let (code, out, err) = run(&["deploy", "--repo", &repo_dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 created, 0 updated, 0 unchanged"), "{out}");
    // A new pipeline: claimed for the checkout's repository; a renamed one's old stacks stay.
    assert!(
        out.contains(
            "pipeline `t-cli` is new: it is now owned by payments/orders-api (team payments)"
        ),
        "{out}"
    );
    assert!(
        out.contains("If it replaces a renamed pipeline, the old one keeps running"),
        "{out}"
    );
    assert!(err.contains("==> stack `pf-t-cli-pipeline`"), "{err}");
    assert!(
        err.contains("DeployRole  AWS::IAM::Role  CREATE_COMPLETE"),
        "{err}"
    );

    let (code, out, err) = run(&["status", "t-cli", "--team", "payments"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("  owner payments/orders-api (team payments), claimed "),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("CREATE_COMPLETE"))
            .count(),
        4,
        "{out}"
    );
    let (code, _, err) = run(&["status", "t-cli", "--team", "billing"]);
    assert_eq!(code, 2);
    assert!(err.contains("belongs to team `payments`"), "{err}");

    let (code, out, err) = run(&["diff", "--repo", &repo_dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 of 4 stacks of `t-cli` would change"),
        "{out}"
    );
    let (code, out, err) = run(&["deploy", "--repo", &repo_dir]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pipeline `t-cli` is owned by payments/orders-api (team payments)"),
        "{out}"
    );
    // `diff` from another repository is refused like a deploy.
    let (code, _, err) = run(&[
        "diff",
        "--repo",
        &repo_dir,
        "--repository",
        "payments/other",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pipeline t-cli is owned by payments/orders-api (team payments)"),
        "{err}"
    );

    repo.commit_manifest(
        &manifest.replace("LOG_LEVEL: info", "LOG_LEVEL: error"),
        "chore: errors only",
    );
    let (code, out, err) = run(&["diff", "--repo", &repo_dir]);
    assert_eq!(code, 1, "{out}{err}");
    let has = |sign: char, text: &str| {
        out.lines()
            .any(|l| l.starts_with(sign) && l[1..].trim() == text)
    };
    assert!(has('-', "LOG_LEVEL: \"info\""), "{out}");
    assert!(has('+', "LOG_LEVEL: \"error\""), "{out}");
    assert!(
        out.contains("~ GateTestProject (AWS::CodeBuild::Project)"),
        "{out}"
    );
    assert!(
        out.contains("1 of 4 stacks of `t-cli` would change"),
        "{out}"
    );

    let (code, out, err) = run(&[
        "deploy",
        "--repo",
        &repo_dir,
        "--dry-run",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["stacks"][3]["outcome"], "would-update");

    // A dirty tree is refused with a hint.
    std::fs::write(repo.path().join("README.md"), "changed\n").expect("write");
    let (code, _, err) = run(&["deploy", "--repo", &repo_dir]);
    assert_eq!(code, 2);
    assert!(
        err.contains("uncommitted changes") && err.contains("--allow-dirty"),
        "{err}"
    );
}

/// `pipeforge doctor` finds the local bootstrap in place, then names what was removed.
#[tokio::test]
async fn doctor_checks_the_bootstrap_and_names_what_is_missing() {
    // A server of its own: this test deletes part of the bootstrap.
    let dir = tempfile::tempdir().expect("tempdir");
    let org_file = dir.path().join("org.yaml");
    std::fs::copy(support::root().join("examples/org.yaml"), &org_file).expect("copy");
    let srv = server(Some(&org_file));
    let aws = srv.aws().await;
    let org = pipeforge::org::embedded().expect("org");
    let accounts = vec!["111111111111".to_owned(), "222222222222".to_owned()];
    let r = pipeforge::doctor::doctor(&aws, &org, &accounts)
        .await
        .expect("doctor");
    let missing: Vec<String> = r
        .checks
        .iter()
        .filter(|c| c.verdict == pipeforge::doctor::Verdict::Missing)
        .map(|c| format!("{} {}: {}", c.account, c.item, c.detail))
        .collect();
    assert!(r.healthy(), "{missing:#?}");
    for item in [
        "role `pf-pipeforge-cfn-exec`",
        "policy `arn:aws:iam::123456789012:policy/pf-pipeforge-roles-boundary`",
        "source bucket `example-pipeforge-source`",
        "source key `alias/pipeforge-source`",
    ] {
        assert!(
            r.checks
                .iter()
                .any(|c| c.item == item && c.account == "123456789012"),
            "{item}"
        );
    }
    for a in &accounts {
        assert!(
            r.checks.iter().any(|c| &c.account == a
                && c.item == "role `pipeforge-bootstrap-cfn-exec`"
                && c.verdict == pipeforge::doctor::Verdict::Ok),
            "{a}"
        );
    }
    // Remove the execution role of one target account: doctor names it, and only it.
    let conf = support::account(&aws, "222222222222", &srv.region, "pipeforge-bootstrap").await;
    let iam = aws_sdk_iam::Client::new(&conf);
    iam.delete_role_policy()
        .role_name("pipeforge-bootstrap-cfn-exec")
        .policy_name("stand-in")
        .send()
        .await
        .expect("delete policy");
    iam.delete_role()
        .role_name("pipeforge-bootstrap-cfn-exec")
        .send()
        .await
        .expect("delete role");
    let r = pipeforge::doctor::doctor(&aws, &org, &accounts)
        .await
        .expect("doctor");
    assert!(!r.healthy());
    let missing: Vec<(&str, &str)> = r
        .checks
        .iter()
        .filter(|c| c.verdict == pipeforge::doctor::Verdict::Missing)
        .map(|c| (c.account.as_str(), c.item.as_str()))
        .collect();
    assert_eq!(
        missing,
        [("222222222222", "role `pipeforge-bootstrap-cfn-exec`")]
    );
}

/// Waits until a stack leaves `*_IN_PROGRESS`; its status, or `None` when it is gone.
async fn settled(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> Option<String> {
    for _ in 0..200 {
        let status = cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .ok()
            .and_then(|o| o.stacks().first().and_then(|s| s.stack_status().cloned()))
            .map(|s| s.as_str().to_owned());
        match status {
            Some(s) if s.ends_with("_IN_PROGRESS") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => return other,
        }
    }
    panic!("stack {stack} never settled")
}

/// Creates stack `name` from `resources` and waits for it to settle.
async fn create_app_stack(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
    resources: &str,
) -> String {
    cfn.create_stack()
        .stack_name(name)
        .template_body(format!(r#"{{"Resources": {resources}}}"#))
        .send()
        .await
        .expect("create stack");
    settled(cfn, name).await.expect("stack exists")
}

/// A failed first create of an application stack (ROLLBACK_COMPLETE) is deleted by `recover`,
/// under the pipeline's deploy lock; a healthy stack, one whose update rolled back, and a stack of
/// another environment are never touched, whatever is asked.
#[tokio::test]
async fn recover_deletes_only_a_failed_first_create_of_the_application_stack() {
    use pipeforge::recover::{self, Outcome, RecoverOptions};
    let srv = server(None);
    let aws = srv.aws().await;
    let name = "t-recover";
    let repo = Repo::new(&example(name));
    let inp = inputs(None, None);
    deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("deploy");
    let region = srv.region.as_str();
    let cfn_of = |account: &'static str| {
        let aws = &aws;
        async move {
            let conf = support::account(aws, account, region, "pipeforge-bootstrap").await;
            aws.cloudformation(&conf, region)
        }
    };
    // dev (111…): the first create failed; test (222…): an update failed and rolled back;
    // prod (333…): healthy. The application stack is named after the pipeline.
    let failing =
        r#"{"Topic": {"Type": "AWS::SNS::Topic", "Metadata": {"LocalAws": {"Fail": "boom"}}}}"#;
    let healthy = r#"{"Topic": {"Type": "AWS::SNS::Topic"}}"#;
    let dev = cfn_of("111111111111").await;
    let test = cfn_of("222222222222").await;
    let prod = cfn_of("333333333333").await;
    assert_eq!(
        create_app_stack(&dev, name, failing).await,
        "ROLLBACK_COMPLETE"
    );
    assert_eq!(
        create_app_stack(&prod, name, healthy).await,
        "CREATE_COMPLETE"
    );
    assert_eq!(
        create_app_stack(&test, name, healthy).await,
        "CREATE_COMPLETE"
    );
    test.update_stack()
        .stack_name(name)
        .template_body(
            r#"{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}, "More": {"Type": "AWS::SNS::Topic", "Metadata": {"LocalAws": {"Fail": "boom"}}}}}"#,
        )
        .send()
        .await
        .expect("update");
    assert_eq!(
        settled(&test, name).await.as_deref(),
        Some("UPDATE_ROLLBACK_COMPLETE")
    );
    let org = pipeforge::org::embedded().expect("org");
    let opts = RecoverOptions {
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(50),
        max_poll: Duration::from_millis(200),
        ..RecoverOptions::default()
    };
    let run = |env: &'static str, opts: RecoverOptions| {
        let (aws, org) = (&aws, &org);
        async move { recover::recover(name, env, org, aws, &opts, &Events::default()).await }
    };

    // Healthy and rolled-back stacks are refused, and stay.
    for (env, cfn, status) in [
        ("prod", &prod, "CREATE_COMPLETE"),
        ("test", &test, "UPDATE_ROLLBACK_COMPLETE"),
    ] {
        let e = run(env, opts).await.expect_err("refused").to_string();
        assert!(
            e.contains(&format!("is {status}; `pipeforge recover` deletes only a stack whose first create failed (ROLLBACK_COMPLETE)"))
                && e.contains("help: it is healthy"),
            "{env}: {e}"
        );
        assert_eq!(settled(cfn, name).await.as_deref(), Some(status), "{env}");
    }
    let e = run("qa", opts)
        .await
        .expect_err("no such environment")
        .to_string();
    assert!(e.contains("no environment `qa`"), "{e}");

    // The deploy lock is held by someone else: nothing happens.
    let s3 = support::s3(&aws, region);
    s3.put_object()
        .bucket(BUCKET)
        .key(format!("pipelines/{name}/deploy.lock"))
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id("alias/pipeforge-source")
        .body(
            br#"{"holder": "ci@elsewhere (pid 7)", "token": "t", "started": 1, "lease_seconds": 3600}"#
                .to_vec()
                .into(),
        )
        .send()
        .await
        .expect("lock");
    let short = RecoverOptions {
        timeout: Duration::from_secs(1),
        ..opts
    };
    let e = run("dev", short).await.expect_err("locked");
    assert!(matches!(e, Error::Locked { .. }), "{e:?}");
    assert_eq!(
        settled(&dev, name).await.as_deref(),
        Some("ROLLBACK_COMPLETE")
    );
    s3.delete_object()
        .bucket(BUCKET)
        .key(format!("pipelines/{name}/deploy.lock"))
        .send()
        .await
        .expect("unlock");

    // The failed first create goes, by id, and the lock is released.
    let r = run("dev", opts).await.expect("recovered");
    assert_eq!(r.outcome, Outcome::Deleted);
    assert_eq!(r.status.as_deref(), Some("ROLLBACK_COMPLETE"));
    assert_eq!(
        (r.account.as_str(), r.stack.as_str()),
        ("111111111111", name)
    );
    assert_eq!(settled(&dev, name).await, None, "deleted");
    assert!(
        keys(&s3, BUCKET, &format!("pipelines/{name}/deploy.lock"))
            .await
            .is_empty(),
        "lock released"
    );
    let r = run("dev", opts).await.expect("nothing left");
    assert_eq!(r.outcome, Outcome::NothingToRecover);
    // The other environments' stacks are as they were.
    assert_eq!(
        settled(&prod, name).await.as_deref(),
        Some("CREATE_COMPLETE")
    );

    // The binary: exit 2 and the reason for a healthy stack, exit 0 when there is nothing.
    let cli = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pipeforge"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .envs(srv.env())
            .arg("--color")
            .arg("never")
            .args(args)
            .output()
            .expect("run pipeforge");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = cli(&["recover", name, "--env", "prod"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is CREATE_COMPLETE"), "{err}");
    let (code, out, err) = cli(&["recover", name, "--env", "dev"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("nothing to recover: there is no stack `t-recover`"),
        "{out}"
    );
}

/// What a pull-request preview compares with, read back from the local S3 server through the
/// preview's own reader (`S3Bundles`): nothing before a publish; after it, the commit and every
/// rendered file byte for byte, without the `deploy/` copies, also when the bundle holds more
/// objects than one listing page; nothing once the bundle is gone.
#[tokio::test]
async fn the_preview_reads_the_deployed_bundle_back_from_s3() {
    use pipeforge::webhook::preview::{DeployedBundles, S3Bundles};
    let srv = server(None);
    let aws = std::sync::Arc::new(srv.aws().await);
    let repo = Repo::new(&example("t-baseline"));
    let inp = inputs(None, None);
    let prepared = publish::prepare(
        repo.path(),
        &repo.manifest(),
        &inp,
        None,
        None,
        &Events::default(),
    )
    .expect("prepare");
    let plan = prepared.plan();
    let bundles = S3Bundles { aws: aws.clone() };
    assert!(
        bundles.deployed(plan, &inp).await.expect("read").is_none(),
        "nothing is deployed yet"
    );
    let r = publish::publish(
        repo.path(),
        &repo.manifest(),
        &inp,
        &aws,
        &PublishOptions::default(),
        &Events::default(),
    )
    .await
    .expect("publish");
    let want: std::collections::BTreeMap<String, Vec<u8>> = prepared
        .bundle
        .outputs
        .iter()
        .map(|(p, b)| (p.to_owned(), b.to_vec()))
        .collect();
    assert!(want.len() > 5 && want.contains_key("plan.json"));
    let got = bundles
        .deployed(plan, &inp)
        .await
        .expect("read")
        .expect("the published bundle");
    assert_eq!(got.commit.as_deref(), Some(r.commit.as_str()));
    assert_eq!(
        got.files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got.files == want, "the files are read byte for byte");

    // Deploy copies (`deploy/`) sort before `plan.json` and `stacks/`: with more of them than
    // one listing page holds, every rendered file is still read, and no copy is.
    let store = publish::source_store(&aws, plan, &inp.org.org.deploy.bootstrap_role)
        .await
        .expect("store");
    for i in 0..120 {
        store
            .upload(
                &format!("{}deploy/copy-{i:03}.json", r.bundle.prefix),
                b"{}".to_vec(),
                "application/json",
            )
            .await
            .expect("upload a copy");
    }
    let got = bundles
        .deployed(plan, &inp)
        .await
        .expect("read")
        .expect("bundle");
    assert_eq!(
        got.files.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "past the first page"
    );

    // The bundle is gone (expired, deleted): nothing to compare with, not an error.
    let s3 = support::s3(&aws, &srv.region);
    loop {
        let listed = keys(&s3, BUCKET, &r.bundle.prefix).await;
        if listed.is_empty() {
            break;
        }
        for k in listed {
            s3.delete_object()
                .bucket(BUCKET)
                .key(&k)
                .send()
                .await
                .expect("delete");
        }
    }
    assert!(
        bundles.deployed(plan, &inp).await.expect("read").is_none(),
        "a bundle that is gone is no baseline"
    );
}
