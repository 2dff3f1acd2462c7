//! Who may deploy a pipeline, against the real local AWS server (`ci/local-aws`) with real git
//! repositories: a pipeline belongs to the repository and team that first deployed it; every
//! other repository or team is refused before anything is uploaded or changed (and afterwards
//! the pipeline, its tags, its target stacks and its source are exactly the owner's); a
//! transfer (`pipeforge transfer`, the real binary) hands it over, and `status` shows it.

mod support;

use pipeforge::deploy::{self, DeployReport};
use pipeforge::error::Error;
use pipeforge::org::TeamDef;
use pipeforge::publish::progress::StackOutcome;
use pipeforge::publish::{self, PublishOptions};
use serde_json::Value as Json;
use support::{Events, Repo, Server, example, inputs, keys, options, server};

const BUCKET: &str = "example-pipeforge-source";

/// The embedded policy, with team `billing` deploying from `billing/*` too.
fn with_billing() -> pipeforge::Inputs {
    let mut inp = inputs(None, None);
    inp.org
        .org
        .teams
        .get_or_insert_with(Default::default)
        .insert(
            "billing".to_owned(),
            TeamDef {
                repositories: vec!["billing/*".to_owned()],
            },
        );
    inp
}

/// Deploys `repo` with the default test options.
async fn deploy_repo(
    repo: &Repo,
    inp: &pipeforge::Inputs,
    aws: &pipeforge::aws::AwsContext,
) -> Result<DeployReport, Error> {
    support::deploy_repo(repo, inp, aws, &options()).await
}

fn refused(r: Result<DeployReport, Error>) -> String {
    match r {
        Err(e @ Error::Refused { .. }) => e.to_string(),
        Err(e) => panic!("expected a refusal, got: {e}"),
        Ok(r) => panic!("expected a refusal, but it deployed: {:?}", r.stacks),
    }
}

/// Everything a deploy could change, as seen through the service APIs: every stack of the
/// pipeline (status, last update, tags, deployed content hash), every object of the pipeline
/// in the source bucket (key and ETag).
async fn state(srv: &Server, aws: &pipeforge::aws::AwsContext, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let stacks = [
        ("111111111111", format!("pf-{name}-dev-target")),
        ("222222222222", format!("pf-{name}-test-target")),
        ("333333333333", format!("pf-{name}-prod-target")),
        ("123456789012", format!("pf-{name}-pipeline")),
    ];
    for (account, stack) in stacks {
        let conf = if account == "123456789012" {
            aws.base().clone()
        } else {
            support::account(aws, account, &srv.region, "pipeforge-bootstrap").await
        };
        let cfn = aws.cloudformation(&conf, &srv.region);
        let Ok(d) = cfn.describe_stacks().stack_name(&stack).send().await else {
            out.push(format!("{stack}: missing"));
            continue;
        };
        let s = &d.stacks()[0];
        let mut tags: Vec<String> = s
            .tags()
            .iter()
            .map(|t| format!("{}={}", t.key().unwrap_or(""), t.value().unwrap_or("")))
            .collect();
        tags.sort();
        let template = cfn
            .get_template()
            .stack_name(&stack)
            .send()
            .await
            .expect("template");
        let t: Json = serde_json::from_str(template.template_body().unwrap_or("{}")).expect("json");
        out.push(format!(
            "{stack}: {:?} updated {:?} tags [{}] hash {}",
            s.stack_status(),
            s.last_updated_time().or(s.creation_time()),
            tags.join(", "),
            t["Metadata"]["pipeforge"]["deployment"]["content_hash"]
        ));
    }
    let s3 = support::s3(aws, &srv.region);
    for prefix in [
        format!("payments/{name}/"),
        format!("billing/{name}/"),
        format!("pipelines/{name}/"),
    ] {
        let listed = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(&prefix)
            .send()
            .await
            .expect("list");
        for o in listed.contents() {
            out.push(format!(
                "s3 {} {}",
                o.key().unwrap_or(""),
                o.e_tag().unwrap_or("")
            ));
        }
    }
    out
}

async fn owner_record(srv: &Server, aws: &pipeforge::aws::AwsContext, name: &str) -> Option<Json> {
    let s3 = support::s3(aws, &srv.region);
    let key = format!("pipelines/{name}/owner.json");
    // Only "no such key" means no record: any other failure must fail the test, never pass
    // an assertion that nothing was written.
    let o = match s3.get_object().bucket(BUCKET).key(&key).send().await {
        Ok(o) => o,
        Err(e) if e.as_service_error().is_some_and(|x| x.is_no_such_key()) => return None,
        Err(e) => panic!("GetObject `{key}`: {e:?}"),
    };
    let body = o.body.collect().await.expect("body").into_bytes();
    Some(serde_json::from_slice(&body).expect("owner record is JSON"))
}

/// The real binary against the local server: (exit code, stdout, stderr).
fn cli(srv: &Server, args: &[&str]) -> (i32, String, String) {
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
}

/// Reproduction: a second repository (or another team) whose manifest used an existing
/// pipeline's `name` deployed over it: its pipeline, deploy roles, `team` tag and source.
#[tokio::test]
async fn a_pipeline_belongs_to_its_repository_and_team_until_it_is_transferred() {
    let srv = server(None);
    let aws = srv.aws().await;
    let inp = with_billing();
    let manifest = example("o-takeover");
    let owner = Repo::from(&manifest, "payments/orders-api");
    let first = deploy_repo(&owner, &inp, &aws)
        .await
        .expect("owner deploys");
    assert!(first.claimed, "the first deploy claims the pipeline");
    assert!(
        first
            .stacks
            .iter()
            .all(|s| s.outcome == StackOutcome::Created)
    );
    let record = owner_record(srv, &aws, "o-takeover").await.expect("record");
    assert_eq!(record["schema"], "pipeforge/owner/v1");
    assert_eq!(record["repository"], "payments/orders-api");
    assert_eq!(record["team"], "payments");
    assert_eq!(record["claimed"]["commit"], first.commit.as_str());
    let before = state(srv, &aws, "o-takeover").await;

    // A second repository of the same team, and a repository of another team, each with its
    // own changes (a new log level; the other team's tag and production environment).
    let fork = Repo::from(
        &manifest.replace("LOG_LEVEL: info", "LOG_LEVEL: trace"),
        "payments/orders-fork",
    );
    let text = refused(deploy_repo(&fork, &inp, &aws).await);
    assert!(
        text.contains("pipeline o-takeover is owned by payments/orders-api (team payments)"),
        "{text}"
    );
    assert!(
        text.contains(
            "pipeforge transfer o-takeover --team payments --repository payments/orders-fork"
        ),
        "{text}"
    );
    let other = Repo::from(
        &manifest
            .replace("team: payments", "team: billing")
            .replace("cost-center: \"4711\"", "cost-center: \"9999\""),
        "billing/orders-api",
    );
    let text = refused(deploy_repo(&other, &inp, &aws).await);
    assert!(
        text.contains("pipeline o-takeover is owned by payments/orders-api (team payments); this deploy comes from billing/orders-api (team billing)"),
        "{text}"
    );
    // A dry run and a publish from the other team are refused the same way.
    let dry = deploy::DeployOptions {
        dry_run: true,
        ..options()
    };
    let e = support::deploy_repo(&other, &inp, &aws, &dry)
        .await
        .expect_err("dry run refused");
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    let e = publish::publish(
        fork.path(),
        &fork.manifest(),
        &inp,
        &aws,
        &PublishOptions::default(),
        &Events::default(),
    )
    .await
    .expect_err("publish refused");
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    // Nothing changed: stacks, tags, templates, source and records are the owner's.
    assert_eq!(state(srv, &aws, "o-takeover").await, before);
    assert!(
        before
            .iter()
            .filter(|l| l.starts_with("pf-"))
            .all(|l| l.contains("team=payments")),
        "{before:#?}"
    );

    // The CLI refuses too (exit 2), naming the owner.
    let fork_dir = fork.path().to_string_lossy().into_owned();
    let (code, _, err) = cli(srv, &["deploy", "--repo", &fork_dir]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: pipeline o-takeover is owned by payments/orders-api (team payments)"),
        "{err}"
    );

    // A platform engineer transfers it to the other team's repository; it is logged.
    let (code, out, err) = cli(
        srv,
        &[
            "transfer",
            "o-takeover",
            "--team",
            "billing",
            "--repository",
            "billing/orders-api",
            "--reason",
            "billing runs the order ledger now",
        ],
    );
    // The binary uses the embedded policy, which does not list team `billing`.
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("team `billing` is not one of the organisation's `teams`"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let org = dir.path().join("org.yaml");
    let text = std::fs::read_to_string(support::root().join("examples/org.yaml")).expect("org");
    std::fs::write(
        &org,
        text.replace(
            "  payments: {repositories: [\"payments/*\"]}",
            "  payments: {repositories: [\"payments/*\"]}\n  billing: {repositories: [\"billing/*\"]}",
        ),
    )
    .expect("write org");
    let org = org.to_string_lossy().into_owned();
    let transfer = [
        "transfer",
        "o-takeover",
        "--team",
        "billing",
        "--repository",
        "billing/orders-api",
        "--reason",
        "billing runs the order ledger now",
        "--org",
        &org,
    ];
    let (code, out, err) = cli(srv, &transfer);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("transferred pipeline `o-takeover` from payments/orders-api (team payments) to billing/orders-api (team billing)"),
        "{out}"
    );
    let record = owner_record(srv, &aws, "o-takeover").await.expect("record");
    assert_eq!(record["team"], "billing");
    assert_eq!(record["repository"], "billing/orders-api");
    let t = &record["transfers"][0];
    assert_eq!(t["from"]["repository"], "payments/orders-api");
    assert_eq!(t["to"]["team"], "billing");
    assert_eq!(t["reason"], "billing runs the order ledger now");
    assert!(t["by"].as_str().is_some_and(|b| b.contains("pid")), "{t}");
    // Again: nothing to do.
    let (code, out, _) = cli(srv, &transfer);
    assert_eq!(code, 0);
    assert!(
        out.contains("already belongs to billing/orders-api"),
        "{out}"
    );

    // The new owner deploys: the stacks now carry its tags; the old owner is refused.
    let r = deploy_repo(&other, &inp, &aws)
        .await
        .expect("new owner deploys");
    assert!(!r.claimed);
    assert!(
        r.stacks.iter().all(|s| s.outcome == StackOutcome::Updated),
        "{:?}",
        r.stacks
            .iter()
            .map(|s| (&s.name, s.outcome))
            .collect::<Vec<_>>()
    );
    let after = state(srv, &aws, "o-takeover").await;
    assert!(
        after
            .iter()
            .filter(|l| l.starts_with("pf-"))
            .all(|l| l.contains("team=billing") && l.contains("cost-center=9999")),
        "{after:#?}"
    );
    let text = refused(deploy_repo(&owner, &inp, &aws).await);
    assert!(
        text.contains("pipeline o-takeover is owned by billing/orders-api (team billing)"),
        "{text}"
    );

    // `status` shows the owner and the transfer.
    let (code, out, err) = cli(srv, &["status", "o-takeover", "--org", &org]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pipeline `o-takeover` of team `billing`"),
        "{out}"
    );
    assert!(
        out.contains("  owner billing/orders-api (team billing), claimed "),
        "{out}"
    );
    assert!(
        out.contains("from payments/orders-api (team payments) to billing/orders-api (team billing): billing runs the order ledger now"),
        "{out}"
    );
}

/// A first deploy that fails half-way (target stacks created, pipeline stack rolled back) still
/// leaves the pipeline owned: another repository cannot claim it.
#[tokio::test]
async fn a_half_failed_first_deploy_still_belongs_to_its_repository() {
    let srv = server(None);
    let aws = srv.aws().await;
    let manifest = example("o-half");
    let owner = Repo::from(&manifest, "payments/orders-api");
    let overrides = tempfile::tempdir().expect("tempdir");
    let src = std::fs::read_to_string(support::root().join("templates/stacks/pipeline.yml.tera"))
        .expect("pipeline template");
    let anchor = "  NotificationTopic:\n    Type: AWS::SNS::Topic\n";
    assert!(
        src.contains(anchor),
        "templates/stacks/pipeline.yml.tera changed"
    );
    std::fs::create_dir_all(overrides.path().join("stacks")).expect("mkdir");
    std::fs::write(
        overrides.path().join("stacks/pipeline.yml.tera"),
        src.replace(
            anchor,
            &format!("{anchor}    Metadata:\n      LocalAws:\n        Fail: \"boom\"\n"),
        ),
    )
    .expect("write");
    let failing = inputs(None, Some(overrides.path()));
    let e = deploy_repo(&owner, &failing, &aws)
        .await
        .expect_err("the pipeline stack fails");
    assert!(matches!(e, Error::Deploy(_)), "{e}");
    let dev = support::account(&aws, "111111111111", &srv.region, "pipeforge-bootstrap").await;
    assert_eq!(
        support::stack_status(&aws, &dev, &srv.region, "pf-o-half-dev-target")
            .await
            .as_deref(),
        Some("CREATE_COMPLETE")
    );
    let record = owner_record(srv, &aws, "o-half")
        .await
        .expect("claimed before the stacks");
    assert_eq!(record["repository"], "payments/orders-api");

    let inp = inputs(None, None);
    let fork = Repo::from(&manifest, "payments/orders-fork");
    let before = state(srv, &aws, "o-half").await;
    let text = refused(deploy_repo(&fork, &inp, &aws).await);
    assert!(
        text.contains("pipeline o-half is owned by payments/orders-api (team payments)"),
        "{text}"
    );
    assert_eq!(state(srv, &aws, "o-half").await, before);
    // The owner finishes it.
    let r = deploy_repo(&owner, &inp, &aws)
        .await
        .expect("owner deploys");
    assert_eq!(r.stacks[3].outcome, StackOutcome::Created);
}

/// Without an owner record (removed, or a pipeline deployed before records existed) the stacks
/// decide: the repository the pipeline stack names adopts it again, nobody else.
#[tokio::test]
async fn a_missing_owner_record_is_rebuilt_only_for_the_owner_the_stacks_name() {
    let srv = server(None);
    let aws = srv.aws().await;
    let inp = inputs(None, None);
    let manifest = example("o-lost");
    let owner = Repo::from(&manifest, "payments/orders-api");
    deploy_repo(&owner, &inp, &aws).await.expect("deploy");
    let s3 = support::s3(&aws, &srv.region);
    s3.delete_object()
        .bucket(BUCKET)
        .key("pipelines/o-lost/owner.json")
        .send()
        .await
        .expect("delete the record");
    let fork = Repo::from(&manifest, "payments/orders-fork");
    let text = refused(deploy_repo(&fork, &inp, &aws).await);
    assert!(
        text.contains(
            "owned by payments/orders-api (team payments) (as its pipeline stack records it"
        ),
        "{text}"
    );
    assert!(owner_record(srv, &aws, "o-lost").await.is_none());
    let r = deploy_repo(&owner, &inp, &aws)
        .await
        .expect("owner deploys");
    assert!(r.claimed);
    let record = owner_record(srv, &aws, "o-lost").await.expect("rebuilt");
    assert_eq!(record["repository"], "payments/orders-api");
    assert_eq!(record["claimed"]["adopted"], true);
}

/// A pipeline deployed before owner records (or whose record was removed) is transferred from
/// the owner its pipeline stack records; one that was never deployed has nothing to transfer.
#[tokio::test]
async fn a_pipeline_without_a_record_is_transferred_from_what_its_stack_records() {
    let srv = server(None);
    let aws = srv.aws().await;
    let inp = inputs(None, None);
    let owner = Repo::from(&example("o-legacy"), "payments/orders-api");
    deploy_repo(&owner, &inp, &aws).await.expect("deploy");
    support::s3(&aws, &srv.region)
        .delete_object()
        .bucket(BUCKET)
        .key("pipelines/o-legacy/owner.json")
        .send()
        .await
        .expect("delete the record");
    let dir = tempfile::tempdir().expect("tempdir");
    let org = dir.path().join("org.yaml");
    let text = std::fs::read_to_string(support::root().join("examples/org.yaml")).expect("org");
    std::fs::write(
        &org,
        text.replace(
            "  payments: {repositories: [\"payments/*\"]}",
            "  payments: {repositories: [\"payments/*\"]}\n  billing: {repositories: [\"billing/*\"]}",
        ),
    )
    .expect("write org");
    let org = org.to_string_lossy().into_owned();
    let transfer = |name: &str| {
        cli(
            srv,
            &[
                "transfer",
                name,
                "--team",
                "billing",
                "--repository",
                "billing/orders-api",
                "--org",
                &org,
            ],
        )
    };
    let (code, out, err) = transfer("o-legacy");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("transferred pipeline `o-legacy` from payments/orders-api (team payments) to billing/orders-api (team billing)"),
        "{out}"
    );
    let record = owner_record(srv, &aws, "o-legacy").await.expect("record");
    assert_eq!(record["team"], "billing");
    assert_eq!(record["claimed"]["adopted"], true);
    assert_eq!(
        record["transfers"][0]["from"]["repository"],
        "payments/orders-api"
    );
    let (code, out, err) = transfer("o-never");
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("pipeline `o-never` has no owner record")
            && err.contains("there is nothing to transfer"),
        "{err}"
    );
    assert!(owner_record(srv, &aws, "o-never").await.is_none());
}

/// A repository the team does not list deploys nothing at all: no bundle, no record, no stack.
#[tokio::test]
async fn a_repository_outside_the_team_deploys_nothing() {
    let srv = server(None);
    let aws = srv.aws().await;
    let inp = inputs(None, None);
    let intruder = Repo::from(&example("o-intruder"), "intruders/orders-api");
    let text = refused(deploy_repo(&intruder, &inp, &aws).await);
    assert!(
        text.contains(
            "repository `intruders/orders-api` may not deploy pipelines of team `payments`"
        ),
        "{text}"
    );
    let s3 = support::s3(&aws, &srv.region);
    assert!(keys(&s3, BUCKET, "payments/o-intruder/").await.is_empty());
    assert!(keys(&s3, BUCKET, "pipelines/o-intruder/").await.is_empty());
    assert_eq!(
        support::stack_status(&aws, aws.base(), &srv.region, "pf-o-intruder-pipeline").await,
        None
    );
    // `--repository` names the repository for a checkout whose origin says nothing useful.
    let (code, _, err) = cli(
        srv,
        &[
            "deploy",
            "--repo",
            &intruder.path().to_string_lossy(),
            "--repository",
            "payments/orders-api",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let bare = Repo::from(&example("o-intruder"), "payments/orders-api");
    support::git(bare.path(), &["remote", "remove", "origin"]);
    let (code, _, err) = cli(srv, &["deploy", "--repo", &bare.path().to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("it has no `origin` remote"), "{err}");
    assert!(err.contains("--repository OWNER/NAME"), "{err}");
}

/// Two pipelines whose names and environment names combine into the same stack name: the
/// second never takes over the first one's stack (and its deploy roles).
#[tokio::test]
async fn a_stack_of_another_pipeline_is_never_taken_over() {
    let srv = server(None);
    let aws = srv.aws().await;
    let inp = inputs(None, None);
    let envs = |name: &str, env: &str| {
        let text = example(name);
        let start = text.find("environments:\n").expect("environments");
        let end = text.find("notifications:\n").expect("notifications");
        format!(
            "{}environments:\n  - {{name: {env}, account: \"111111111111\"}}\n{}",
            &text[..start],
            &text[end..]
        )
    };
    // `o-col` + `x-dev` and `o-col-x` + `dev` both name the stack `pf-o-col-x-dev-target`.
    let first = Repo::from(&envs("o-col", "x-dev"), "payments/collider-one");
    deploy_repo(&first, &inp, &aws)
        .await
        .expect("first pipeline");
    let second = Repo::from(&envs("o-col-x", "dev"), "payments/collider-two");
    let text = refused(deploy_repo(&second, &inp, &aws).await);
    assert!(
        text.contains(
            "stack `pf-o-col-x-dev-target` (account 111111111111, us-east-1) belongs to pipeline `o-col` (team `payments`), not to pipeline `o-col-x`"
        ),
        "{text}"
    );
    let s3 = support::s3(&aws, &srv.region);
    assert!(keys(&s3, BUCKET, "pipelines/o-col-x/").await.is_empty());
}
