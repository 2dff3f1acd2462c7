//! Unit tests of the stack state machine against the in-memory CloudFormation.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::api::{ApiError, ApiErrorKind, ChangeSetSummary, Location};
use super::fake::{FakeCfn, Script};
use super::stack::{Mode, StackJob, StackResult, Waits, leftover, run_stack};
use crate::error::{Error, Result};
use crate::outputs::sha256;
use crate::plan::{StackKind, StackPlan};
use crate::publish::progress::{Event, StackOutcome};
use crate::publish::templates::DeployTemplate;

const STACK: &str = "pf-svc-dev-target";

/// A template with the given resources and its content hash in the deployment metadata.
fn template(resources: serde_json::Value) -> DeployTemplate {
    let mut t = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Metadata": {"pipeforge": {"deployment": {"format": "test"}}},
        "Resources": resources,
    });
    let hash = sha256(t.to_string().as_bytes());
    t["Metadata"]["pipeforge"]["deployment"]["content_hash"] = json!(hash);
    DeployTemplate {
        stack: StackPlan {
            order: 1,
            kind: StackKind::Target,
            name: STACK.to_owned(),
            file: "stacks/target-dev.json".to_owned(),
            account: "111111111111".to_owned(),
            region: "us-east-1".to_owned(),
            environment: Some("dev".to_owned()),
            capabilities: vec!["CAPABILITY_NAMED_IAM"],
            template_bytes: None,
        },
        body: serde_json::to_string_pretty(&t).unwrap_or_default(),
        content_hash: hash,
        bundle_path: format!("deploy/{STACK}.json"),
        tags: vec![("team".to_owned(), "core".to_owned())],
        capabilities: vec!["CAPABILITY_NAMED_IAM".to_owned()],
        parameters: Vec::new(),
    }
}

fn v1() -> DeployTemplate {
    template(json!({
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "a"}},
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {}},
    }))
}

fn v2() -> DeployTemplate {
    template(json!({
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "a", "Description": "x"}},
        "Topic": {"Type": "AWS::SNS::Topic", "Properties": {}},
    }))
}

/// Events received, in order.
#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl Events {
    fn all(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl crate::publish::progress::Progress for Events {
    fn event(&self, e: &Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e.clone());
        }
    }
}

fn waits(timeout_ms: u64) -> Waits {
    Waits {
        timeout: Duration::from_millis(timeout_ms),
        poll: Duration::from_millis(1),
        max_poll: Duration::from_millis(2),
    }
}

fn stack_job(t: &DeployTemplate, mode: Mode) -> StackJob<'_> {
    StackJob {
        at: Location {
            account: "111111111111".to_owned(),
            region: "us-east-1".to_owned(),
        },
        template: t,
        template_url: None,
        mode,
        nonce: "n1",
        template_diff: true,
        redeploy: false,
        role_arn: Some("arn:aws:iam::111111111111:role/pipeforge-bootstrap-cfn-exec".to_owned()),
    }
}

async fn run_with(
    api: &FakeCfn,
    t: &DeployTemplate,
    mode: Mode,
    timeout_ms: u64,
) -> (Result<StackResult>, Vec<Event>) {
    let events = Events::default();
    let r = run_stack(api, &stack_job(t, mode), &waits(timeout_ms), &events).await;
    (r, events.all())
}

async fn deploy(api: &FakeCfn, t: &DeployTemplate) -> Result<StackResult> {
    run_with(api, t, Mode::Deploy, 5_000).await.0
}

fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

fn failure(r: Result<StackResult>) -> crate::error::DeployFailure {
    match r {
        Err(Error::Deploy(f)) => *f,
        Err(other) => panic!("expected a deploy failure, got: {other}"),
        Ok(r) => panic!("expected a failure, got {:?}", r.outcome),
    }
}

#[tokio::test]
async fn creates_then_skips_by_content_hash_without_a_change_set() {
    let api = FakeCfn::new(2);
    let r = deploy(&api, &v1()).await.expect("create");
    assert_eq!(r.outcome, StackOutcome::Created);
    let added: Vec<&str> = r.changes.iter().map(|c| c.logical_id.as_str()).collect();
    assert_eq!(added, ["Role", "Topic"]);
    assert_eq!(count(&api.calls(), "create_change_set CREATE"), 1);

    let before = api.calls().len();
    let r = deploy(&api, &v1()).await.expect("redeploy");
    assert_eq!(r.outcome, StackOutcome::Unchanged);
    assert_eq!(r.detail.as_deref(), Some("same content hash"));
    let new_calls = &api.calls()[before..];
    assert_eq!(count(new_calls, "create_change_set"), 0, "{new_calls:?}");
    assert_eq!(count(new_calls, "execute_change_set"), 0, "{new_calls:?}");
}

#[tokio::test]
async fn updates_exactly_the_changed_resources_and_streams_events() {
    let api = FakeCfn::new(1);
    deploy(&api, &v1()).await.expect("create");
    let (r, events) = run_with(&api, &v2(), Mode::Deploy, 5_000).await;
    let r = r.expect("update");
    assert_eq!(r.outcome, StackOutcome::Updated);
    let changed: Vec<(&str, &str)> = r
        .changes
        .iter()
        .map(|c| (c.action.as_str(), c.logical_id.as_str()))
        .collect();
    assert_eq!(changed, [("Modify", "Role")]);
    assert_eq!(count(&api.calls(), "create_change_set UPDATE"), 1);
    let streamed: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::StackEvent { event, .. } => {
                Some(format!("{} {}", event.logical_id, event.status))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        streamed,
        [
            format!("{STACK} UPDATE_IN_PROGRESS"),
            "Role UPDATE_COMPLETE".to_owned(),
            format!("{STACK} UPDATE_COMPLETE"),
        ],
        "only this operation's events, oldest first"
    );
    let diff = r.template_diff.expect("template diff");
    assert!(diff.contains("+") && diff.contains("Description"), "{diff}");
}

#[tokio::test]
async fn a_change_set_without_changes_is_deleted_and_reported_unchanged() {
    let api = FakeCfn::new(0);
    // A rolled-back stack whose template already is the new one: no hash shortcut (the stack is
    // not in a clean state), and CloudFormation finds nothing to change.
    let t = v1();
    api.put_stack(STACK, "UPDATE_ROLLBACK_COMPLETE", Some(&t.body));
    let r = deploy(&api, &t).await.expect("deploy");
    assert_eq!(r.outcome, StackOutcome::Unchanged);
    assert_eq!(r.detail.as_deref(), Some("no changes"));
    assert_eq!(count(&api.calls(), "create_change_set UPDATE"), 1);
    assert_eq!(count(&api.calls(), "execute_change_set"), 0);
    assert!(
        api.change_sets(STACK).is_empty(),
        "{:?}",
        api.change_sets(STACK)
    );
}

#[tokio::test]
async fn a_failed_first_create_is_deleted_and_created_again() {
    let api = FakeCfn::new(1);
    api.put_stack(STACK, "ROLLBACK_COMPLETE", None);
    let (r, events) = run_with(&api, &v1(), Mode::Deploy, 5_000).await;
    let r = r.expect("recreate");
    assert_eq!(r.outcome, StackOutcome::Created);
    assert!(r.detail.is_some_and(|d| d.contains("deleted first")));
    let calls = api.calls();
    let delete = calls.iter().position(|c| c.starts_with("delete_stack"));
    let create = calls
        .iter()
        .position(|c| c.starts_with("create_change_set CREATE"));
    assert!(delete < create && delete.is_some(), "{calls:?}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StackStarted { action, .. } if action == "recreate"
    )));
    assert_eq!(api.status(STACK).as_deref(), Some("CREATE_COMPLETE"));
}

#[tokio::test]
async fn a_stack_in_progress_is_waited_for_then_deployed() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.busy(STACK, "UPDATE_IN_PROGRESS", 5, "UPDATE_COMPLETE");
    let (r, events) = run_with(&api, &v2(), Mode::Deploy, 5_000).await;
    assert_eq!(r.expect("update").outcome, StackOutcome::Updated);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Waiting { what } if what.contains("UPDATE_IN_PROGRESS")))
    );
    // The change set was only created once the other operation had finished.
    let calls = api.calls();
    let created = calls
        .iter()
        .position(|c| c.starts_with("create_change_set UPDATE"))
        .expect("change set");
    let polls_before = calls[..created]
        .iter()
        .filter(|c| c.starts_with("describe_stack"))
        .count();
    assert!(polls_before >= 6, "{calls:?}");
}

#[tokio::test]
async fn waits_are_bounded() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.busy(STACK, "UPDATE_IN_PROGRESS", u32::MAX, "UPDATE_COMPLETE");
    let f = failure(run_with(&api, &v2(), Mode::Deploy, 50).await.0);
    assert!(f.message.contains("gave up waiting"), "{}", f.message);
    assert!(f.help.contains("--timeout"), "{}", f.help);

    let api = FakeCfn::new(0);
    api.script(Script::Hang);
    let f = failure(run_with(&api, &v1(), Mode::Deploy, 50).await.0);
    assert_eq!(f.status.as_deref(), Some("CREATE_IN_PROGRESS"));
}

#[tokio::test]
async fn a_failed_update_rolls_back_explains_itself_and_the_next_deploy_recovers() {
    let api = FakeCfn::new(1);
    deploy(&api, &v1()).await.expect("create");
    api.script(Script::Fail(
        "Role".to_owned(),
        "Policy arn:aws:iam::aws:policy/Nope does not exist".to_owned(),
    ));
    let f = failure(deploy(&api, &v2()).await);
    assert_eq!(f.status.as_deref(), Some("UPDATE_ROLLBACK_COMPLETE"));
    assert!(f.message.contains("updating stack"), "{}", f.message);
    assert_eq!(f.events.len(), 1, "{:?}", f.events);
    assert!(
        f.events[0].contains("Role") && f.events[0].contains("Nope does not exist"),
        "{:?}",
        f.events
    );
    assert!(f.help.contains("previous template"), "{}", f.help);
    let text = Error::Deploy(Box::new(f)).to_string();
    assert!(text.contains("events that explain it"), "{text}");

    // The template stayed v1, so the next deploy of v2 goes through.
    let r = deploy(&api, &v2()).await.expect("recover");
    assert_eq!(r.outcome, StackOutcome::Updated);
    assert_eq!(api.status(STACK).as_deref(), Some("UPDATE_COMPLETE"));
}

#[tokio::test]
async fn stuck_stacks_get_the_command_that_fixes_them() {
    let api = FakeCfn::new(1);
    deploy(&api, &v1()).await.expect("create");
    api.script(Script::FailRollback("Role".to_owned(), "boom".to_owned()));
    let f = failure(deploy(&api, &v2()).await);
    assert_eq!(f.status.as_deref(), Some("UPDATE_ROLLBACK_FAILED"));
    assert!(f.help.contains("continue-update-rollback"), "{}", f.help);

    // The next deploy refuses to touch it, with the same fix.
    let f = failure(deploy(&api, &v2()).await);
    assert!(f.help.contains("aws cloudformation continue-update-rollback --stack-name pf-svc-dev-target --region us-east-1"), "{}", f.help);
    assert_eq!(count(&api.calls(), "create_change_set"), 2);

    let api = FakeCfn::new(0);
    api.put_stack(STACK, "DELETE_FAILED", None);
    let f = failure(deploy(&api, &v1()).await);
    assert!(f.help.contains("delete-stack"), "{}", f.help);
}

#[tokio::test]
async fn a_race_with_another_execution_starts_over_and_converges() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.script(Script::RaceOnce);
    let r = deploy(&api, &v2()).await.expect("converges");
    assert_eq!(r.outcome, StackOutcome::Updated);
    assert_eq!(count(&api.calls(), "execute_change_set"), 3);
}

#[tokio::test]
async fn leftover_deploy_change_sets_are_cleaned_up_recent_previews_are_not() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.put_change_set(STACK, "pipeforge-deploy-dead-0", 10);
    api.put_change_set(STACK, "pipeforge-preview-busy-0", 10);
    api.put_change_set(STACK, "pipeforge-preview-old-0", 7200);
    api.put_change_set(STACK, "someone-elses", 7200);
    let (r, _) = run_with(&api, &v2(), Mode::Preview, 5_000).await;
    assert_eq!(r.expect("preview").outcome, StackOutcome::WouldUpdate);
    assert_eq!(api.change_sets(STACK).len(), 4, "a preview cleans nothing");
    let (r, events) = run_with(&api, &v2(), Mode::Deploy, 5_000).await;
    assert_eq!(r.expect("deploy").outcome, StackOutcome::Updated);
    let deleted: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message } if message.starts_with("deleted change set") => {
                Some(message.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted[0].contains("pipeforge-deploy-dead-0"));
    assert!(deleted[1].contains("pipeforge-preview-old-0"));
}

#[tokio::test]
async fn a_preview_executes_nothing_and_leaves_nothing_behind() {
    let api = FakeCfn::new(0);
    let (r, events) = run_with(&api, &v1(), Mode::Preview, 5_000).await;
    let r = r.expect("preview");
    assert_eq!(r.outcome, StackOutcome::WouldCreate);
    assert_eq!(r.changes.len(), 2);
    assert!(events.iter().any(|e| matches!(e, Event::ChangeSet { .. })));
    assert_eq!(count(&api.calls(), "execute_change_set"), 0);
    assert_eq!(api.status(STACK), None, "the review stack is deleted again");

    deploy(&api, &v1()).await.expect("create");
    let (r, _) = run_with(&api, &v2(), Mode::Preview, 5_000).await;
    assert_eq!(r.expect("preview").outcome, StackOutcome::WouldUpdate);
    assert!(api.change_sets(STACK).is_empty());
    assert_eq!(api.status(STACK).as_deref(), Some("CREATE_COMPLETE"));
}

#[tokio::test]
async fn a_stack_left_in_review_is_created_with_a_create_change_set() {
    let api = FakeCfn::new(0);
    api.put_stack(STACK, "REVIEW_IN_PROGRESS", None);
    let r = deploy(&api, &v1()).await.expect("create");
    assert_eq!(r.outcome, StackOutcome::Created);
    assert_eq!(count(&api.calls(), "create_change_set CREATE"), 1);
}

/// A template of pipeline `pipeline` (its `Metadata.pipeforge.pipeline`).
fn of_pipeline(pipeline: &str, description: &str) -> DeployTemplate {
    let mut t = template(json!({
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "a", "Description": description}},
    }));
    let mut body: serde_json::Value = serde_json::from_str(&t.body).expect("json");
    body["Metadata"]["pipeforge"]["pipeline"] = json!(pipeline);
    t.body = body.to_string();
    t.content_hash = sha256(t.body.as_bytes());
    t
}

#[tokio::test]
async fn a_stack_of_another_pipeline_is_never_updated() {
    // Another pipeline created the stack under the same name after the owner check ran (it
    // holds its own lock): the update is refused before any change set.
    let api = FakeCfn::new(2);
    deploy(&api, &of_pipeline("orders", "theirs"))
        .await
        .expect("their stack");
    let r = deploy(&api, &of_pipeline("orders-api", "ours")).await;
    match r {
        Err(e @ Error::Refused { .. }) => assert!(
            e.to_string()
                .contains("belongs to pipeline `orders`, not to pipeline `orders-api`"),
            "{e}"
        ),
        Err(e) => panic!("expected a refusal, got: {e}"),
        Ok(r) => panic!("expected a refusal, got {:?}", r.outcome),
    }
    // Their own next deploy goes on.
    let r = deploy(&api, &of_pipeline("orders", "theirs, again"))
        .await
        .expect("their update");
    assert_eq!(r.outcome, StackOutcome::Updated);
}

#[tokio::test]
async fn a_parameter_from_a_missing_output_fails_a_deploy_and_is_a_placeholder_in_a_preview() {
    let api = FakeCfn::default();
    let mut t = template(json!({"R": {"Type": "AWS::SNS::Topic"}}));
    t.parameters = vec![crate::publish::templates::ParameterSource {
        key: "ArtifactKeyEuWest1".to_owned(),
        stack: "pf-x-artifacts-eu-west-1".to_owned(),
        account: "123456789012".to_owned(),
        region: "eu-west-1".to_owned(),
        output: "ArtifactKeyArn".to_owned(),
    }];
    let (r, _) = run_with(&api, &t, Mode::Deploy, 2_000).await;
    let e = r.expect_err("no such output");
    assert!(
        e.to_string().contains("has no output `ArtifactKeyArn`"),
        "{e}"
    );
    let (r, _) = run_with(&api, &t, Mode::Preview, 2_000).await;
    assert_eq!(r.expect("preview").outcome, StackOutcome::WouldCreate);
    assert!(
        api.calls()
            .iter()
            .any(|c| c == "describe_stack pf-x-artifacts-eu-west-1"),
        "{:?}",
        api.calls()
    );
}

#[tokio::test]
async fn a_change_set_refused_for_another_reason_fails_the_deploy() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    let before = api.calls().len();
    api.script(Script::RefuseChangeSet(
        "Requires capabilities : [CAPABILITY_NAMED_IAM]".to_owned(),
    ));
    let f = failure(deploy(&api, &v2()).await);
    assert!(
        f.message.contains("refused the change set"),
        "{}",
        f.message
    );
    assert!(
        f.events.iter().any(|e| e.contains("Requires capabilities")),
        "{:?}",
        f.events
    );
    assert_eq!(count(&api.calls()[before..], "execute_change_set"), 0);
    assert!(
        api.change_sets(STACK).is_empty(),
        "the change set is removed"
    );
    assert_eq!(api.status(STACK).as_deref(), Some("CREATE_COMPLETE"));
    // The same refusal of a new stack's first change set removes the review stack too.
    let api = FakeCfn::new(0);
    api.script(Script::RefuseChangeSet("Template format error".to_owned()));
    let f = failure(deploy(&api, &v1()).await);
    assert!(
        f.message.contains("refused the change set"),
        "{}",
        f.message
    );
    assert_eq!(api.status(STACK), None);
}

#[tokio::test]
async fn a_preview_of_a_failed_first_create_deletes_nothing() {
    let api = FakeCfn::new(0);
    api.put_stack(STACK, "ROLLBACK_COMPLETE", None);
    let (r, events) = run_with(&api, &v1(), Mode::Preview, 5_000).await;
    let r = r.expect("preview");
    assert_eq!(r.outcome, StackOutcome::WouldCreate);
    assert!(
        r.detail
            .as_deref()
            .is_some_and(|d| d.contains("a deploy deletes it and creates it again")),
        "{:?}",
        r.detail
    );
    assert_eq!(r.changes.len(), 2, "every resource is added");
    assert!(events.iter().any(|e| matches!(e, Event::ChangeSet { .. })));
    let calls = api.calls();
    assert_eq!(count(&calls, "delete_stack"), 0, "{calls:?}");
    assert_eq!(count(&calls, "create_change_set"), 0, "{calls:?}");
    assert_eq!(api.status(STACK).as_deref(), Some("ROLLBACK_COMPLETE"));
}

#[tokio::test]
async fn a_change_set_that_cannot_be_executed_yet_is_made_again() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    let before = api.calls().len();
    api.script(Script::Unavailable(2));
    let r = deploy(&api, &v2()).await.expect("converges");
    assert_eq!(r.outcome, StackOutcome::Updated);
    let calls = api.calls()[before..].to_vec();
    assert_eq!(count(&calls, "create_change_set UPDATE"), 3, "{calls:?}");
    assert_eq!(count(&calls, "execute_change_set"), 1, "{calls:?}");
}

#[tokio::test]
async fn a_stack_that_never_settles_fails_after_a_bounded_number_of_rounds() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    let before = api.calls().len();
    api.script(Script::Unavailable(u32::MAX));
    let f = failure(deploy(&api, &v2()).await);
    assert!(f.message.contains("kept changing"), "{}", f.message);
    assert!(f.help.contains("another tool or person"), "{}", f.help);
    let calls = api.calls()[before..].to_vec();
    assert_eq!(count(&calls, "create_change_set UPDATE"), 6, "{calls:?}");
    assert_eq!(count(&calls, "execute_change_set"), 0, "{calls:?}");
    assert_eq!(api.status(STACK).as_deref(), Some("CREATE_COMPLETE"));
}

fn api_error(kind: ApiErrorKind, code: &str, message: &str) -> ApiError {
    ApiError {
        kind,
        code: Some(code.to_owned()),
        message: message.to_owned(),
    }
}

/// The action and help of an `Error::Aws`.
fn aws(r: Result<StackResult>) -> (String, String) {
    match r {
        Err(Error::Aws { action, help, .. }) => (action, help),
        Err(other) => panic!("expected an AWS error, got: {other}"),
        Ok(r) => panic!("expected an AWS error, got {:?}", r.outcome),
    }
}

#[tokio::test]
async fn a_refused_call_gets_the_help_that_fits_its_cause() {
    for (error, help) in [
        (
            api_error(ApiErrorKind::Denied, "AccessDenied", "not allowed"),
            "bootstrap role",
        ),
        (
            api_error(
                ApiErrorKind::Other,
                "InsufficientCapabilitiesException",
                "Requires capabilities",
            ),
            "pipeforge bug",
        ),
        (
            api_error(
                ApiErrorKind::Other,
                "ValidationError",
                "Template format error: unsupported structure",
            ),
            "pipeforge templates check",
        ),
        (
            api_error(
                ApiErrorKind::Other,
                "ValidationError",
                "Template error: instance of Fn::GetAtt references undefined resource",
            ),
            "pipeforge templates check",
        ),
        (
            api_error(ApiErrorKind::Other, "Throttling", "Rate exceeded"),
            "a rerun of the same deploy continues",
        ),
    ] {
        let api = FakeCfn::new(0);
        deploy(&api, &v1()).await.expect("create");
        api.fail_next("create_change_set", error.clone(), false);
        let (action, got) = aws(deploy(&api, &v2()).await);
        assert!(
            action.starts_with(&format!("create a change set for stack `{STACK}`")),
            "{action}"
        );
        assert!(got.contains(help), "{error:?}: {got}");
        assert_eq!(
            count(&api.calls(), "execute_change_set"),
            1,
            "only the create"
        );
    }
}

#[tokio::test]
async fn a_change_set_request_that_went_through_before_its_retry_is_used() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    let before = api.calls().len();
    api.fail_next(
        "create_change_set",
        api_error(
            ApiErrorKind::AlreadyExists,
            "AlreadyExistsException",
            "exists",
        ),
        true,
    );
    let r = deploy(&api, &v2()).await.expect("update");
    assert_eq!(r.outcome, StackOutcome::Updated);
    let calls = api.calls()[before..].to_vec();
    assert_eq!(count(&calls, "create_change_set"), 1, "{calls:?}");
}

#[tokio::test]
async fn calls_refused_because_the_stack_or_change_set_moved_on_start_over() {
    for (op, error) in [
        (
            "create_change_set",
            api_error(
                ApiErrorKind::InvalidState,
                "ValidationError",
                "UPDATE_IN_PROGRESS",
            ),
        ),
        (
            "describe_change_set",
            api_error(ApiErrorKind::ChangeSetNotFound, "ChangeSetNotFound", "gone"),
        ),
        (
            "execute_change_set",
            api_error(
                ApiErrorKind::InvalidState,
                "InvalidChangeSetStatus",
                "obsolete",
            ),
        ),
    ] {
        let api = FakeCfn::new(0);
        deploy(&api, &v1()).await.expect("create");
        let before = api.calls().len();
        api.fail_next(op, error, false);
        let r = deploy(&api, &v2()).await.expect("converges");
        assert_eq!(r.outcome, StackOutcome::Updated, "{op}");
        let calls = api.calls()[before..].to_vec();
        assert_eq!(
            count(&calls, "create_change_set UPDATE"),
            2,
            "{op}: {calls:?}"
        );
    }
}

#[tokio::test]
async fn other_refusals_of_a_change_set_call_fail_the_deploy() {
    for (op, action) in [
        ("describe_change_set", "describe the change set of"),
        ("execute_change_set", "execute the change set of"),
    ] {
        let api = FakeCfn::new(0);
        deploy(&api, &v1()).await.expect("create");
        let before = api.calls().len();
        api.fail_next(
            op,
            api_error(ApiErrorKind::Denied, "AccessDenied", "no"),
            false,
        );
        let (got, help) = aws(deploy(&api, &v2()).await);
        assert!(got.starts_with(action), "{got}");
        assert!(help.contains("bootstrap role"), "{help}");
        let calls = api.calls()[before..].to_vec();
        assert_eq!(count(&calls, "create_change_set"), 1, "{calls:?}");
        assert_eq!(api.status(STACK).as_deref(), Some("CREATE_COMPLETE"));
    }
}

#[tokio::test]
async fn a_change_set_still_being_computed_is_waited_for() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    let before = api.calls().len();
    api.slow_change_sets(3);
    let r = deploy(&api, &v2()).await.expect("update");
    assert_eq!(r.outcome, StackOutcome::Updated);
    let changed: Vec<&str> = r.changes.iter().map(|c| c.logical_id.as_str()).collect();
    assert_eq!(changed, ["Role"]);
    let calls = api.calls()[before..].to_vec();
    assert_eq!(count(&calls, "describe_change_set"), 4, "{calls:?}");
    assert_eq!(count(&calls, "create_change_set"), 1, "{calls:?}");

    // One that is never computed: the deploy gives up after the timeout, executing nothing.
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.slow_change_sets(u32::MAX);
    let f = failure(run_with(&api, &v2(), Mode::Deploy, 50).await.0);
    assert!(
        f.message.contains("gave up waiting for change set"),
        "{}",
        f.message
    );
    assert_eq!(f.status.as_deref(), Some("CREATE_IN_PROGRESS"));
    assert_eq!(
        count(&api.calls(), "execute_change_set"),
        1,
        "only the create"
    );
}

/// Runs a deploy of `t` with polls from `poll_ms` up to twice that, for `timeout_ms`.
async fn run_polling(
    api: &FakeCfn,
    t: &DeployTemplate,
    poll_ms: u64,
    timeout_ms: u64,
) -> Result<StackResult> {
    let job = stack_job(t, Mode::Deploy);
    let waits = Waits {
        timeout: Duration::from_millis(timeout_ms),
        poll: Duration::from_millis(poll_ms),
        max_poll: Duration::from_millis(2 * poll_ms),
    };
    run_stack(api, &job, &waits, &Events::default()).await
}

#[tokio::test]
async fn waiting_polls_at_the_given_interval_never_faster() {
    // A stack busy with someone else's operation for longer than the timeout: polls are at
    // least `poll` apart, so at most timeout / poll of them (plus the first and the last).
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.busy(STACK, "UPDATE_IN_PROGRESS", u32::MAX, "UPDATE_COMPLETE");
    let before = api.calls().len();
    let f = failure(run_polling(&api, &v2(), 10, 200).await);
    assert!(f.message.contains("gave up waiting"), "{}", f.message);
    let polls = count(&api.calls()[before..], "describe_stack");
    assert!((2..=22).contains(&polls), "{polls} polls in 200 ms");

    // The same for a change set that is never computed.
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    api.slow_change_sets(u32::MAX);
    let before = api.calls().len();
    let f = failure(run_polling(&api, &v2(), 10, 200).await);
    assert!(f.message.contains("gave up waiting"), "{}", f.message);
    let polls = count(&api.calls()[before..], "describe_change_set");
    assert!((2..=22).contains(&polls), "{polls} polls in 200 ms");
}

#[tokio::test]
async fn a_failed_first_create_says_so_and_how_the_next_deploy_recovers() {
    let api = FakeCfn::new(1);
    api.script(Script::Fail(
        "Role".to_owned(),
        "Role name taken".to_owned(),
    ));
    let f = failure(deploy(&api, &v1()).await);
    assert_eq!(f.status.as_deref(), Some("ROLLBACK_COMPLETE"));
    assert!(f.message.contains("creating stack"), "{}", f.message);
    assert!(f.help.contains("deleted and created again"), "{}", f.help);
    assert!(
        f.events.iter().any(|e| e.contains("Role name taken")),
        "{:?}",
        f.events
    );

    // Its rollback failing too: the fix for a failed first create's rollback.
    let api = FakeCfn::new(1);
    api.script(Script::FailRollback("Role".to_owned(), "boom".to_owned()));
    let f = failure(deploy(&api, &v1()).await);
    assert_eq!(f.status.as_deref(), Some("ROLLBACK_FAILED"));
    assert!(f.help.contains("by hand"), "{}", f.help);
}

#[tokio::test]
async fn each_stuck_state_gets_its_own_fix() {
    for (status, fix) in [
        (
            "ROLLBACK_FAILED",
            "remove the resources named in the events by hand",
        ),
        (
            "UPDATE_FAILED",
            "aws cloudformation rollback-stack --stack-name",
        ),
        (
            "IMPORT_ROLLBACK_FAILED",
            "aws cloudformation rollback-stack --stack-name",
        ),
        ("UPDATE_ROLLBACK_FAILED", "continue-update-rollback"),
        (
            "DELETE_FAILED",
            "aws cloudformation delete-stack --stack-name",
        ),
    ] {
        let api = FakeCfn::new(0);
        api.put_stack(STACK, status, Some(&v1().body));
        let f = failure(deploy(&api, &v2()).await);
        assert_eq!(f.status.as_deref(), Some(status));
        assert!(f.help.contains(fix), "{status}: {}", f.help);
        assert_eq!(count(&api.calls(), "create_change_set"), 0, "{status}");
    }
}

#[tokio::test]
async fn a_failed_first_create_that_cannot_be_deleted_is_not_created_again() {
    // Refused: the error of the delete.
    let api = FakeCfn::new(0);
    api.put_stack(STACK, "ROLLBACK_COMPLETE", None);
    api.fail_next(
        "delete_stack",
        api_error(ApiErrorKind::Denied, "AccessDenied", "no"),
        false,
    );
    let (action, _) = aws(deploy(&api, &v1()).await);
    assert!(action.starts_with("delete stack"), "{action}");
    assert_eq!(count(&api.calls(), "create_change_set"), 0);
    // Already being deleted: waited for, then created.
    let api = FakeCfn::new(0);
    api.put_stack(STACK, "ROLLBACK_COMPLETE", None);
    api.fail_next(
        "delete_stack",
        api_error(
            ApiErrorKind::InvalidState,
            "ValidationError",
            "being deleted",
        ),
        false,
    );
    let r = deploy(&api, &v1()).await.expect("created");
    assert_eq!(r.outcome, StackOutcome::Created);
    // The delete fails: the fix for a failed delete, nothing created.
    let api = FakeCfn::new(0);
    api.put_stack(STACK, "ROLLBACK_COMPLETE", None);
    api.deletes_fail();
    let f = failure(deploy(&api, &v1()).await);
    assert_eq!(f.status.as_deref(), Some("DELETE_FAILED"));
    assert!(f.help.contains("delete-stack"), "{}", f.help);
    assert_eq!(count(&api.calls(), "create_change_set"), 0);
}

/// Runs a deploy of `t`, with `redeploy` (as `fleet drift --fix` does) or without.
async fn run_redeploy(
    api: &FakeCfn,
    t: &DeployTemplate,
    redeploy: bool,
) -> (Result<StackResult>, Vec<Event>) {
    let events = Events::default();
    let mut job = stack_job(t, Mode::Deploy);
    job.redeploy = redeploy;
    let r = run_stack(api, &job, &waits(5_000), &events).await;
    (r, events.all())
}

#[tokio::test]
async fn a_redeploy_makes_a_drift_reverting_change_set_despite_the_same_hash() {
    let api = FakeCfn::new(0);
    let (r, events) = run_redeploy(&api, &v1(), true).await;
    assert_eq!(r.expect("create").outcome, StackOutcome::Created);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::StackStarted { action, .. } if action == "create"
        )),
        "a first create is announced as a create"
    );
    let (r, _) = run_redeploy(&api, &v1(), true).await;
    let r = r.expect("redeploy");
    assert_eq!(r.outcome, StackOutcome::Unchanged);
    assert_eq!(
        r.detail.as_deref(),
        Some("no changes"),
        "a change set was made"
    );
    let (r, _) = run_redeploy(&api, &v2(), false).await;
    assert_eq!(r.expect("update").outcome, StackOutcome::Updated);
    let creates: Vec<String> = api
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("create_change_set"))
        .collect();
    assert_eq!(
        creates,
        [
            format!("create_change_set CREATE {STACK}"),
            format!("create_change_set UPDATE {STACK} revert-drift"),
            format!("create_change_set UPDATE {STACK}"),
        ]
    );
}

/// [`v1`] with a parameter read from output `Key` of stack `pf-x-artifacts`.
fn with_parameter() -> DeployTemplate {
    let mut t = v1();
    t.parameters = vec![crate::publish::templates::ParameterSource {
        key: "ArtifactKey".to_owned(),
        stack: "pf-x-artifacts".to_owned(),
        account: "111111111111".to_owned(),
        region: "us-east-1".to_owned(),
        output: "Key".to_owned(),
    }];
    t
}

#[tokio::test]
async fn a_parameter_whose_source_changed_updates_a_stack_of_the_same_hash() {
    let api = FakeCfn::new(0);
    api.put_stack("pf-x-artifacts", "CREATE_COMPLETE", None);
    api.put_outputs(
        "pf-x-artifacts",
        &[("Key", "arn:aws:kms:us-east-1:111111111111:key/a")],
    );
    let t = with_parameter();
    assert_eq!(
        deploy(&api, &t).await.expect("create").outcome,
        StackOutcome::Created
    );
    let r = deploy(&api, &t).await.expect("same");
    assert_eq!(r.outcome, StackOutcome::Unchanged);
    assert_eq!(r.detail.as_deref(), Some("same content hash"));
    api.put_outputs(
        "pf-x-artifacts",
        &[("Key", "arn:aws:kms:us-east-1:111111111111:key/b")],
    );
    let r = deploy(&api, &t).await.expect("new key");
    assert_eq!(r.outcome, StackOutcome::Updated);
}

#[tokio::test]
async fn an_update_without_resource_changes_still_updates_the_template() {
    let api = FakeCfn::new(0);
    deploy(&api, &v1()).await.expect("create");
    let before = api.calls().len();
    // Another content hash (an output added), the same resources: CloudFormation accepts the
    // change set with no resource changes, and only executing it updates the outputs and the
    // recorded content hash.
    let mut t = v1();
    let mut body: serde_json::Value = serde_json::from_str(&t.body).expect("json");
    body["Outputs"] = json!({"Name": {"Value": "x"}});
    body["Metadata"]["pipeforge"]["deployment"]["content_hash"] = json!("sha256:other");
    t.body = body.to_string();
    t.content_hash = "sha256:other".to_owned();
    let r = deploy(&api, &t).await.expect("deploy");
    assert_eq!(r.outcome, StackOutcome::Updated, "{:?}", r.detail);
    let calls = api.calls()[before..].to_vec();
    assert_eq!(count(&calls, "create_change_set UPDATE"), 1, "{calls:?}");
    assert_eq!(count(&calls, "execute_change_set"), 1, "{calls:?}");
    // The new hash is deployed: the next deploy of the same template makes no change set.
    let before = api.calls().len();
    let again = deploy(&api, &t).await.expect("deploy again");
    assert_eq!(again.outcome, StackOutcome::Unchanged);
    assert_eq!(again.detail.as_deref(), Some("same content hash"));
    let calls = api.calls()[before..].to_vec();
    assert_eq!(count(&calls, "create_change_set"), 0, "{calls:?}");
}

#[test]
fn the_poll_interval_grows_by_half_up_to_the_largest() {
    let waits = Waits {
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(100),
        max_poll: Duration::from_millis(400),
    };
    let mut delay = waits.poll;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(delay.as_micros());
        delay = waits.next_poll(delay);
    }
    assert_eq!(seen, [100_000, 150_000, 225_000, 337_500, 400_000, 400_000]);
}

#[test]
fn only_deploy_change_sets_and_previews_older_than_an_hour_are_leftovers() {
    let now = 1_900_000_000;
    let cs = |name: &str, created: Option<i64>, execution: &str| ChangeSetSummary {
        name: name.to_owned(),
        status: "CREATE_COMPLETE".to_owned(),
        execution_status: execution.to_owned(),
        created,
    };
    let preview = "pipeforge-preview-n1-0";
    assert!(!leftover(&cs(preview, Some(now - 3600), "AVAILABLE"), now));
    assert!(leftover(&cs(preview, Some(now - 3601), "AVAILABLE"), now));
    assert!(!leftover(&cs(preview, Some(now - 10), "AVAILABLE"), now));
    assert!(!leftover(&cs(preview, None, "AVAILABLE"), now));
    assert!(leftover(
        &cs("pipeforge-deploy-n1-0", Some(now), "AVAILABLE"),
        now
    ));
    assert!(!leftover(
        &cs("pipeforge-deploy-n1-0", Some(now), "EXECUTE_COMPLETE"),
        now
    ));
    assert!(!leftover(
        &cs(preview, Some(now - 7200), "EXECUTE_FAILED"),
        now
    ));
    assert!(!leftover(
        &cs("someone-elses", Some(now - 7200), "AVAILABLE"),
        now
    ));
}

#[tokio::test]
async fn each_wording_of_no_changes_leaves_the_stack_unchanged() {
    for reason in [
        "The submitted information didn't contain changes. Submit different information to create a change set.",
        "No updates are to be performed.",
        "The submitted information does not contain changes.",
    ] {
        let api = FakeCfn::new(0);
        deploy(&api, &v1()).await.expect("create");
        let before = api.calls().len();
        api.script(Script::RefuseChangeSet(reason.to_owned()));
        let r = deploy(&api, &v2()).await.expect(reason);
        assert_eq!(r.outcome, StackOutcome::Unchanged, "{reason}");
        assert_eq!(r.detail.as_deref(), Some("no changes"), "{reason}");
        assert_eq!(count(&api.calls()[before..], "execute_change_set"), 0);
    }
}

#[tokio::test]
async fn the_create_after_a_failed_first_create_is_announced_as_a_recreate() {
    let api = FakeCfn::new(0);
    api.put_stack(STACK, "ROLLBACK_COMPLETE", None);
    let (r, events) = run_with(&api, &v1(), Mode::Deploy, 5_000).await;
    assert_eq!(r.expect("recreate").outcome, StackOutcome::Created);
    // Announced when the failed stack is deleted, and again when the new one is created.
    let actions: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::StackStarted { action, .. } => Some(action.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(actions, ["recreate", "recreate"]);
}
