//! The account-quota check of a deploy against a real local AWS server (`ci/local-aws`): an
//! account made full (its IAM roles quota set just above its usage through the server's quota
//! hook) refuses the deploy before anything changes — no stack, no upload, no owner record, no
//! lock — and a deploy that leaves a quota above the org's threshold warns.
//!
//! One test function: the server's IAM usage must not move under it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use pipeforge::capacity::{Footprint, Resource};
use pipeforge::error::Error;
use pipeforge::publish::progress::Event;
use support::{Events, Repo, example, inputs, keys, options, server};

const BUCKET: &str = "example-pipeforge-source";
const TOOLING: &str = "123456789012";
/// IAM "Roles per account" in Service Quotas.
const ROLES_CODE: &str = "L-FE177D64";

/// Sends one request to the local server's quota hook (launcher item 23).
fn quota_hook(endpoint: &str, method: &str, body: &str) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).expect("connect to the local server");
    write!(
        s,
        "{method} /_local_aws/quotas HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn set_roles_quota(endpoint: &str, value: u64) {
    quota_hook(
        endpoint,
        "POST",
        &format!(
            r#"{{"account": "{TOOLING}", "service": "iam", "code": "{ROLES_CODE}", "value": {value}}}"#
        ),
    );
}

async fn roles_in_use(aws: &pipeforge::aws::AwsContext, region: &str) -> u64 {
    let summary = aws
        .iam(aws.base(), region)
        .get_account_summary()
        .send()
        .await
        .expect("GetAccountSummary");
    let map = summary.summary_map().expect("summary");
    u64::try_from(map[&aws_sdk_iam::types::SummaryKeyType::Roles]).expect("count")
}

#[tokio::test]
async fn a_full_account_refuses_the_deploy_before_anything_changes_and_a_nearly_full_one_warns() {
    let srv = server(None);
    let aws = srv.aws().await;
    let inp = inputs(None, None);
    let manifest = example("t-full");
    let repo = Repo::new(&manifest);
    let bundle = pipeforge::generate(
        &pipeforge::SourceFile::new("pipeline.yml", manifest.clone()),
        &inp,
    )
    .expect("render");
    let footprint = Footprint::of_outputs(&bundle.plan, &bundle.outputs).expect("footprint");
    let needed = footprint.in_account(TOOLING)[&Resource::IamRole];
    assert!(needed >= 6, "one role per gate at least: {needed}");

    // Full: room for fewer roles than the pipeline needs.
    let used = roles_in_use(&aws, &srv.region).await;
    set_roles_quota(&srv.endpoint, used + needed - 1);
    let events = Events::default();
    let err = support::deploy_repo_with(&repo, &inp, &aws, &options(), &events)
        .await
        .expect_err("refused");
    let text = err.to_string();
    let want = format!(
        "tooling account {TOOLING} holds {used} of {} IAM roles; this pipeline needs {needed}",
        used + needed - 1
    );
    assert!(text.contains(&want), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(
        matches!(err, Error::Other { ref help, .. } if help.contains("add a tooling account")),
        "{err:?}"
    );
    let s3 = support::s3(&aws, &srv.region);
    assert_eq!(
        keys(&s3, BUCKET, "payments/t-full/").await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys(&s3, BUCKET, "pipelines/t-full/").await,
        Vec::<String>::new()
    );
    for stack in ["pf-t-full-pipeline", "pf-t-full-artifacts-eu-west-1"] {
        assert_eq!(
            support::stack_status(&aws, aws.base(), &srv.region, stack).await,
            None,
            "{stack}"
        );
    }
    assert_eq!(
        roles_in_use(&aws, &srv.region).await,
        used,
        "no role created"
    );

    // Exactly enough room: the deploy goes through, and warns at the org's 80%.
    set_roles_quota(&srv.endpoint, used + needed);
    let events = Events::default();
    support::deploy_repo_with(&repo, &inp, &aws, &options(), &events)
        .await
        .expect("fits");
    let warnings: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::Warning { message } => Some(message),
            _ => None,
        })
        .collect();
    let want = format!(
        "tooling account {TOOLING} will hold {n} of {n} IAM roles (100%) after this deploy; warning at 80%",
        n = used + needed
    );
    assert!(warnings.iter().any(|w| w.contains(&want)), "{warnings:?}");
    assert_eq!(roles_in_use(&aws, &srv.region).await, used + needed);
    // The claim records where the pipeline lives, for every later deploy and fleet command.
    let record = s3
        .get_object()
        .bucket(BUCKET)
        .key("pipelines/t-full/owner.json")
        .send()
        .await
        .expect("owner record")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let record: serde_json::Value = serde_json::from_slice(&record).expect("JSON");
    assert_eq!(record["schema"], "pipeforge/owner/v1");
    assert_eq!(
        record["placement"],
        serde_json::json!({"account": TOOLING, "region": srv.region, "by": "home"})
    );

    // The account is now full, but a redeploy adds nothing to it.
    support::deploy_repo(&repo, &inp, &aws, &options())
        .await
        .expect("a redeploy needs no new role");
    quota_hook(&srv.endpoint, "DELETE", "");
}
