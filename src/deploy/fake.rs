//! An in-memory CloudFormation for the unit tests of the state machine: stacks, change sets and
//! events, asynchronous operations that finish after a number of polls, and scripted failures.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value as Json;

use super::api::{
    ApiError, ApiErrorKind, ApiResult, ChangeSetInfo, ChangeSetKind, ChangeSetRequest,
    ChangeSetSummary, Location, StackApi, StackInfo, TemplateSource,
};
use crate::publish::progress::{ResourceChange, ResourceEvent};

/// A stack operation in flight: it ends after `polls` more `DescribeStacks`.
#[derive(Clone, Debug)]
struct Pending {
    polls: u32,
    status: String,
    template: Option<Option<String>>,
    /// The parameters the stack has once the operation ends (a successful execution's).
    parameters: Option<BTreeMap<String, String>>,
    events: Vec<(String, String, Option<String>)>,
}

#[derive(Clone, Debug)]
struct FakeStack {
    id: String,
    name: String,
    status: String,
    template: Option<String>,
    parameters: BTreeMap<String, String>,
    pending: Option<Pending>,
}

#[derive(Clone, Debug)]
struct FakeChangeSet {
    stack_id: String,
    name: String,
    kind: ChangeSetKind,
    template: String,
    status: String,
    reason: Option<String>,
    execution: String,
    changes: Vec<ResourceChange>,
    created: i64,
    parameters: BTreeMap<String, String>,
    /// `DescribeChangeSet` calls left before the change set is computed.
    polls: u32,
}

/// What the next execution does.
#[derive(Clone, Debug, Default)]
pub enum Script {
    /// Succeeds.
    #[default]
    Succeed,
    /// Resource `0` fails with reason `1`; the stack rolls back.
    Fail(String, String),
    /// As `Fail`, and the rollback fails too.
    FailRollback(String, String),
    /// Refused once as if another operation had just started (`InvalidState`).
    RaceOnce,
    /// Never finishes.
    Hang,
    /// Change sets fail with this reason (not "no changes").
    RefuseChangeSet(String),
    /// The next `0` change sets are created but cannot be executed (execution status
    /// `UNAVAILABLE`, as while another operation holds the stack).
    Unavailable(u32),
}

#[derive(Debug, Default)]
struct State {
    stacks: Vec<FakeStack>,
    change_sets: Vec<FakeChangeSet>,
    events: BTreeMap<String, Vec<ResourceEvent>>,
    next: u64,
    calls: Vec<String>,
    script: Script,
    polls: u32,
    /// Injected failures: the next call of an operation fails (with `true`: after it took
    /// effect, as a retried request whose first attempt went through).
    faults: Vec<(String, ApiError, bool)>,
    /// `DescribeChangeSet` calls a new change set stays `CREATE_IN_PROGRESS`.
    change_set_polls: u32,
    /// Stack deletes end `DELETE_FAILED`.
    deletes_fail: bool,
    /// Stack outputs, by stack name.
    outputs: BTreeMap<String, BTreeMap<String, String>>,
}

/// The fake.
#[derive(Debug, Default)]
pub struct FakeCfn {
    state: Mutex<State>,
}

fn err(kind: ApiErrorKind, code: &str, message: &str) -> ApiError {
    ApiError {
        kind,
        code: Some(code.to_owned()),
        message: message.to_owned(),
    }
}

fn resources(template: &str) -> BTreeMap<String, Json> {
    serde_json::from_str::<Json>(template)
        .ok()
        .and_then(|v| v.get("Resources").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

fn diff(old: Option<&str>, new: &str) -> Vec<ResourceChange> {
    let old = old.map(resources).unwrap_or_default();
    let new = resources(new);
    let change = |action: &str, id: &str, r: &Json| ResourceChange {
        action: action.to_owned(),
        logical_id: id.to_owned(),
        physical_id: (action != "Add").then(|| format!("phys-{id}")),
        resource_type: r
            .get("Type")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
        replacement: (action == "Modify").then(|| "False".to_owned()),
        scope: if action == "Modify" {
            vec!["Properties".to_owned()]
        } else {
            Vec::new()
        },
        properties: Vec::new(),
    };
    let mut out = Vec::new();
    for (id, r) in &new {
        match old.get(id) {
            None => out.push(change("Add", id, r)),
            Some(o) if o != r => out.push(change("Modify", id, r)),
            _ => {}
        }
    }
    for (id, r) in &old {
        if !new.contains_key(id) {
            out.push(change("Remove", id, r));
        }
    }
    out
}

/// A change set's changes: the resources that differ; when only the parameters differ, every
/// resource (as if each one used them).
fn changes(old: Option<&str>, new: &str, same_parameters: bool) -> Vec<ResourceChange> {
    let by_resource = diff(old, new);
    if !by_resource.is_empty() || same_parameters {
        return by_resource;
    }
    diff(Some(r#"{"Resources": {}}"#), new)
        .into_iter()
        .map(|mut c| {
            c.action = "Modify".to_owned();
            c
        })
        .collect()
}

impl State {
    /// The injected failure of the next call of `op`, if any (consumed).
    fn fault(&mut self, op: &str, after: bool) -> ApiResult<()> {
        match self
            .faults
            .iter()
            .position(|(o, _, a)| o == op && *a == after)
        {
            Some(i) => Err(self.faults.remove(i).1),
            None => Ok(()),
        }
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn event(&mut self, stack_id: &str, logical: &str, status: &str, reason: Option<String>) {
        let n = self.id();
        self.events
            .entry(stack_id.to_owned())
            .or_default()
            .push(ResourceEvent {
                id: format!("ev-{n}"),
                time: format!("2030-01-01T00:00:{:02}Z", n % 60),
                logical_id: logical.to_owned(),
                resource_type: "AWS::Test::Thing".to_owned(),
                status: status.to_owned(),
                reason,
            });
    }

    /// The live stack of a name, or any stack of an id.
    fn find(&mut self, key: &str) -> Option<usize> {
        if key.starts_with("arn:") {
            return self.stacks.iter().position(|s| s.id == key);
        }
        self.stacks
            .iter()
            .position(|s| s.name == key && s.status != "DELETE_COMPLETE")
    }

    fn start(&mut self, i: usize, status: &str, pending: Pending) {
        let id = self.stacks[i].id.clone();
        let name = self.stacks[i].name.clone();
        self.stacks[i].status = status.to_owned();
        self.stacks[i].pending = Some(pending);
        self.event(&id, &name, status, Some("User Initiated".to_owned()));
    }

    fn advance(&mut self, i: usize) {
        let Some(mut p) = self.stacks[i].pending.take() else {
            return;
        };
        if p.polls > 0 {
            p.polls -= 1;
            self.stacks[i].pending = Some(p);
            return;
        }
        let id = self.stacks[i].id.clone();
        for (logical, status, reason) in &p.events {
            self.event(&id, logical, status, reason.clone());
        }
        let name = self.stacks[i].name.clone();
        self.stacks[i].status = p.status.clone();
        if let Some(t) = p.template {
            self.stacks[i].template = t;
        }
        if let Some(params) = p.parameters {
            self.stacks[i].parameters = params;
        }
        self.event(&id, &name, &p.status, None);
    }
}

impl FakeCfn {
    /// An empty fake whose operations finish after `polls` polls.
    pub fn new(polls: u32) -> Self {
        let f = FakeCfn::default();
        f.with(|s| s.polls = polls);
        f
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Adds a stack in `status` with `template`.
    pub fn put_stack(&self, name: &str, status: &str, template: Option<&str>) -> String {
        self.with(|s| {
            let n = s.id();
            let id = format!("arn:aws:cloudformation:us-east-1:111111111111:stack/{name}/{n}");
            s.stacks.push(FakeStack {
                id: id.clone(),
                name: name.to_owned(),
                status: status.to_owned(),
                template: template.map(str::to_owned),
                parameters: BTreeMap::new(),
                pending: None,
            });
            s.event(&id, name, status, None);
            id
        })
    }

    /// Leaves stack `name` in `status` for `polls` polls, then in `then`.
    pub fn busy(&self, name: &str, status: &str, polls: u32, then: &str) {
        self.with(|s| {
            if let Some(i) = s.find(name) {
                s.start(
                    i,
                    status,
                    Pending {
                        polls,
                        status: then.to_owned(),
                        template: None,
                        parameters: None,
                        events: Vec::new(),
                    },
                );
            }
        });
    }

    /// Adds a change set to stack `name`, created `age` seconds ago.
    pub fn put_change_set(&self, name: &str, change_set: &str, age: i64) {
        self.with(|s| {
            if let Some(i) = s.find(name) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let stack_id = s.stacks[i].id.clone();
                s.change_sets.push(FakeChangeSet {
                    stack_id,
                    name: change_set.to_owned(),
                    kind: ChangeSetKind::Update,
                    template: String::new(),
                    status: "CREATE_COMPLETE".to_owned(),
                    reason: None,
                    execution: "AVAILABLE".to_owned(),
                    changes: Vec::new(),
                    created: now - age,
                    parameters: BTreeMap::new(),
                    polls: 0,
                });
            }
        });
    }

    /// What the next execution does.
    pub fn script(&self, script: Script) {
        self.with(|s| s.script = script);
    }

    /// The next call of `op` (`create_change_set`, `describe_change_set`,
    /// `execute_change_set`, `delete_stack`) fails with `error`; with `after`, the call takes
    /// effect first (a retried request whose first attempt went through).
    pub fn fail_next(&self, op: &str, error: ApiError, after: bool) {
        self.with(|s| s.faults.push((op.to_owned(), error, after)));
    }

    /// New change sets stay `CREATE_IN_PROGRESS` (not executable, no changes yet) for `polls`
    /// `DescribeChangeSet` calls.
    pub fn slow_change_sets(&self, polls: u32) {
        self.with(|s| s.change_set_polls = polls);
    }

    /// Stack deletes end `DELETE_FAILED`.
    pub fn deletes_fail(&self) {
        self.with(|s| s.deletes_fail = true);
    }

    /// Sets the outputs of stack `name` (what `DescribeStacks` reports).
    pub fn put_outputs(&self, name: &str, outputs: &[(&str, &str)]) {
        self.with(|s| {
            let map = outputs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            s.outputs.insert(name.to_owned(), map);
        });
    }

    /// Every call so far, one line each (`create_change_set UPDATE name`, ...).
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// The live stack's status.
    pub fn status(&self, name: &str) -> Option<String> {
        self.with(|s| s.find(name).map(|i| s.stacks[i].status.clone()))
    }

    /// The names of a live stack's change sets.
    pub fn change_sets(&self, name: &str) -> Vec<String> {
        self.with(|s| {
            let Some(i) = s.find(name) else {
                return Vec::new();
            };
            let id = s.stacks[i].id.clone();
            s.change_sets
                .iter()
                .filter(|c| c.stack_id == id)
                .map(|c| c.name.clone())
                .collect()
        })
    }
}

impl StackApi for FakeCfn {
    async fn describe_stack(&self, _: &Location, stack: &str) -> ApiResult<Option<StackInfo>> {
        self.with(|s| {
            s.calls.push(format!("describe_stack {stack}"));
            let Some(i) = s.find(stack) else {
                return Ok(None);
            };
            s.advance(i);
            let outputs = s.outputs.get(stack).cloned().unwrap_or_default();
            let st = &s.stacks[i];
            Ok(Some(StackInfo {
                id: st.id.clone(),
                name: st.name.clone(),
                status: st.status.clone(),
                reason: None,
                created: Some("2030-01-01T00:00:00Z".to_owned()),
                updated: None,
                outputs,
                parameters: st.parameters.clone(),
            }))
        })
    }

    async fn get_template(&self, _: &Location, stack: &str) -> ApiResult<Option<String>> {
        self.with(|s| {
            s.calls.push(format!("get_template {stack}"));
            Ok(s.find(stack).and_then(|i| s.stacks[i].template.clone()))
        })
    }

    async fn create_change_set(&self, _: &Location, r: &ChangeSetRequest) -> ApiResult<()> {
        self.with(|s| {
            let drift = if r.revert_drift { " revert-drift" } else { "" };
            s.calls.push(format!(
                "create_change_set {} {}{drift}",
                r.kind.as_str(),
                r.stack
            ));
            s.fault("create_change_set", false)?;
            let body = match &r.template {
                TemplateSource::Body(b) => b.clone(),
                TemplateSource::Url(u) => format!("{{\"url\": \"{u}\"}}"),
            };
            let i = match (r.kind, s.find(&r.stack)) {
                (ChangeSetKind::Create, Some(i)) if s.stacks[i].status != "REVIEW_IN_PROGRESS" => {
                    return Err(err(
                        ApiErrorKind::Other,
                        "ValidationError",
                        "Stack already exists",
                    ));
                }
                (ChangeSetKind::Create, Some(i)) => i,
                (ChangeSetKind::Create, None) => {
                    let n = s.id();
                    let id = format!(
                        "arn:aws:cloudformation:us-east-1:111111111111:stack/{}/{n}",
                        r.stack
                    );
                    s.stacks.push(FakeStack {
                        id: id.clone(),
                        name: r.stack.clone(),
                        status: "REVIEW_IN_PROGRESS".to_owned(),
                        template: None,
                        parameters: BTreeMap::new(),
                        pending: None,
                    });
                    s.event(&id, &r.stack, "REVIEW_IN_PROGRESS", None);
                    s.stacks.len() - 1
                }
                (ChangeSetKind::Update, None) => {
                    return Err(err(
                        ApiErrorKind::StackNotFound,
                        "ValidationError",
                        "Stack does not exist",
                    ));
                }
                (ChangeSetKind::Update, Some(i)) => {
                    if s.stacks[i].status.ends_with("_IN_PROGRESS") {
                        return Err(err(
                            ApiErrorKind::InvalidState,
                            "ValidationError",
                            "Stack is in UPDATE_IN_PROGRESS state and can not be updated.",
                        ));
                    }
                    i
                }
            };
            let stack_id = s.stacks[i].id.clone();
            if s.change_sets
                .iter()
                .any(|c| c.stack_id == stack_id && c.name == r.name)
            {
                return Err(err(
                    ApiErrorKind::AlreadyExists,
                    "AlreadyExistsException",
                    "exists",
                ));
            }
            let old = s.stacks[i].template.clone();
            let parameters: BTreeMap<String, String> = r.parameters.iter().cloned().collect();
            let same_parameters = s.stacks[i].parameters == parameters;
            let same = old.as_deref() == Some(body.as_str()) && same_parameters;
            let refused = match &s.script {
                Script::RefuseChangeSet(reason) => Some(reason.clone()),
                _ => None,
            };
            let unavailable = match s.script {
                Script::Unavailable(n) if n > 0 => {
                    s.script = Script::Unavailable(n - 1);
                    true
                }
                _ => false,
            };
            let failed = same || refused.is_some();
            s.change_sets.push(FakeChangeSet {
                stack_id,
                name: r.name.clone(),
                kind: r.kind,
                template: body.clone(),
                status: if failed { "FAILED" } else { "CREATE_COMPLETE" }.to_owned(),
                reason: refused.or_else(|| same.then(|| {
                    "The submitted information didn't contain changes. Submit different information to create a change set.".to_owned()
                })),
                execution: if failed || unavailable { "UNAVAILABLE" } else { "AVAILABLE" }
                    .to_owned(),
                changes: if failed {
                    Vec::new()
                } else {
                    changes(old.as_deref(), &body, same_parameters)
                },
                created: 0,
                parameters,
                polls: s.change_set_polls,
            });
            s.fault("create_change_set", true)
        })
    }

    async fn describe_change_set(
        &self,
        _: &Location,
        stack: &str,
        name: &str,
    ) -> ApiResult<ChangeSetInfo> {
        self.with(|s| {
            s.calls.push(format!("describe_change_set {stack}"));
            s.fault("describe_change_set", false)?;
            let id = s.find(stack).map(|i| s.stacks[i].id.clone());
            s.change_sets
                .iter_mut()
                .find(|c| Some(&c.stack_id) == id.as_ref() && c.name == name)
                .map(|c| {
                    if c.polls > 0 {
                        c.polls -= 1;
                        return ChangeSetInfo {
                            stack_id: c.stack_id.clone(),
                            status: "CREATE_IN_PROGRESS".to_owned(),
                            reason: None,
                            execution_status: "UNAVAILABLE".to_owned(),
                            changes: Vec::new(),
                        };
                    }
                    ChangeSetInfo {
                        stack_id: c.stack_id.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        execution_status: c.execution.clone(),
                        changes: c.changes.clone(),
                    }
                })
                .ok_or_else(|| err(ApiErrorKind::ChangeSetNotFound, "ChangeSetNotFound", name))
        })
    }

    async fn execute_change_set(&self, _: &Location, stack: &str, name: &str) -> ApiResult<()> {
        self.with(|s| {
            s.calls.push(format!("execute_change_set {stack}"));
            s.fault("execute_change_set", false)?;
            if matches!(s.script, Script::RaceOnce) {
                s.script = Script::Succeed;
                // Someone else's change set ran first and deleted ours.
                s.change_sets.retain(|c| c.name != name);
                return Err(err(
                    ApiErrorKind::ChangeSetNotFound,
                    "ChangeSetNotFound",
                    "ChangeSet does not exist",
                ));
            }
            let i = s
                .find(stack)
                .ok_or_else(|| err(ApiErrorKind::StackNotFound, "ValidationError", stack))?;
            let stack_id = s.stacks[i].id.clone();
            let cs = s
                .change_sets
                .iter()
                .find(|c| c.stack_id == stack_id && c.name == name)
                .cloned()
                .ok_or_else(|| err(ApiErrorKind::ChangeSetNotFound, "ChangeSetNotFound", name))?;
            if cs.execution != "AVAILABLE" {
                return Err(err(
                    ApiErrorKind::Other,
                    "InvalidChangeSetStatus",
                    "ChangeSet cannot be executed in its current execution status",
                ));
            }
            s.change_sets.retain(|c| c.stack_id != stack_id);
            let create = cs.kind == ChangeSetKind::Create;
            let (busy, ok, back, failed_rollback) = if create {
                (
                    "CREATE_IN_PROGRESS",
                    "CREATE_COMPLETE",
                    "ROLLBACK_COMPLETE",
                    "ROLLBACK_FAILED",
                )
            } else {
                (
                    "UPDATE_IN_PROGRESS",
                    "UPDATE_COMPLETE",
                    "UPDATE_ROLLBACK_COMPLETE",
                    "UPDATE_ROLLBACK_FAILED",
                )
            };
            let op = if create { "CREATE" } else { "UPDATE" };
            let polls = s.polls;
            let mut events: Vec<(String, String, Option<String>)> = cs
                .changes
                .iter()
                .map(|c| (c.logical_id.clone(), format!("{op}_COMPLETE"), None))
                .collect();
            let pending = match std::mem::take(&mut s.script) {
                Script::Succeed
                | Script::RaceOnce
                | Script::RefuseChangeSet(_)
                | Script::Unavailable(_) => Pending {
                    polls,
                    status: ok.to_owned(),
                    template: Some(Some(cs.template.clone())),
                    parameters: Some(cs.parameters.clone()),
                    events,
                },
                Script::Fail(logical, reason) => {
                    // As in AWS: the failing resource, and one cancelled because of it.
                    events = vec![
                        (logical, format!("{op}_FAILED"), Some(reason)),
                        (
                            "Bystander".to_owned(),
                            format!("{op}_FAILED"),
                            Some(format!("Resource {} cancelled", op.to_lowercase())),
                        ),
                    ];
                    Pending {
                        polls,
                        status: back.to_owned(),
                        template: None,
                        parameters: None,
                        events,
                    }
                }
                Script::FailRollback(logical, reason) => {
                    events = vec![
                        (logical.clone(), format!("{op}_FAILED"), Some(reason)),
                        (
                            logical,
                            format!("{op}_FAILED"),
                            Some("rollback failed".to_owned()),
                        ),
                    ];
                    Pending {
                        polls,
                        status: failed_rollback.to_owned(),
                        template: None,
                        parameters: None,
                        events,
                    }
                }
                Script::Hang => Pending {
                    polls: u32::MAX,
                    status: ok.to_owned(),
                    template: None,
                    parameters: None,
                    events,
                },
            };
            s.start(i, busy, pending);
            Ok(())
        })
    }

    async fn delete_change_set(&self, _: &Location, stack: &str, name: &str) -> ApiResult<()> {
        self.with(|s| {
            s.calls.push(format!("delete_change_set {stack} {name}"));
            let id = s.find(stack).map(|i| s.stacks[i].id.clone());
            s.change_sets
                .retain(|c| !(Some(&c.stack_id) == id.as_ref() && c.name == name));
            Ok(())
        })
    }

    async fn list_change_sets(
        &self,
        _: &Location,
        stack: &str,
    ) -> ApiResult<Vec<ChangeSetSummary>> {
        self.with(|s| {
            let id = s.find(stack).map(|i| s.stacks[i].id.clone());
            Ok(s.change_sets
                .iter()
                .filter(|c| Some(&c.stack_id) == id.as_ref())
                .map(|c| ChangeSetSummary {
                    name: c.name.clone(),
                    status: c.status.clone(),
                    execution_status: c.execution.clone(),
                    created: Some(c.created),
                })
                .collect())
        })
    }

    async fn physical_id(
        &self,
        _: &Location,
        stack_id: &str,
        logical_id: &str,
    ) -> ApiResult<Option<String>> {
        self.with(|s| {
            s.calls.push(format!("physical_id {stack_id} {logical_id}"));
            let Some(i) = s.find(stack_id) else {
                return Ok(None);
            };
            // A named resource's physical id is its name (`BucketName` here), else generated.
            Ok(s.stacks[i].template.as_deref().and_then(|t| {
                let r = resources(t).get(logical_id).cloned()?;
                Some(
                    r.pointer("/Properties/BucketName")
                        .and_then(Json::as_str)
                        .map_or_else(|| format!("phys-{logical_id}"), str::to_owned),
                )
            }))
        })
    }

    async fn delete_stack(&self, _: &Location, stack_id: &str, _: Option<&str>) -> ApiResult<()> {
        self.with(|s| {
            s.calls.push(format!("delete_stack {stack_id}"));
            s.fault("delete_stack", false)?;
            let Some(i) = s.find(stack_id) else {
                return Ok(());
            };
            let polls = s.polls;
            s.change_sets.retain(|c| c.stack_id != stack_id);
            if s.stacks[i].status == "REVIEW_IN_PROGRESS" {
                s.stacks[i].status = "DELETE_COMPLETE".to_owned();
                return Ok(());
            }
            s.start(
                i,
                "DELETE_IN_PROGRESS",
                Pending {
                    polls,
                    status: if s.deletes_fail {
                        "DELETE_FAILED"
                    } else {
                        "DELETE_COMPLETE"
                    }
                    .to_owned(),
                    template: if s.deletes_fail { None } else { Some(None) },
                    parameters: None,
                    events: Vec::new(),
                },
            );
            Ok(())
        })
    }

    async fn recent_events(
        &self,
        _: &Location,
        stack_id: &str,
        stop_at: Option<&str>,
    ) -> ApiResult<Vec<ResourceEvent>> {
        self.with(|s| {
            let all = s.events.get(stack_id).cloned().unwrap_or_default();
            let mut out = Vec::new();
            for e in all.into_iter().rev() {
                if Some(e.id.as_str()) == stop_at {
                    break;
                }
                out.push(e);
            }
            Ok(out)
        })
    }
}
