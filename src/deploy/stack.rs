//! One stack through a change set: the state machine of a deploy (and of a dry run or `diff`,
//! which stop before executing).
//!
//! ```text
//!                 ┌─ *_IN_PROGRESS ──▶ wait (bounded), look again
//!  DescribeStacks ┼─ ROLLBACK_COMPLETE ──▶ delete (wait), then as missing
//!                 ├─ *_FAILED (rollback/delete/update) ──▶ error with the fix
//!                 ├─ missing / REVIEW_IN_PROGRESS ──▶ CREATE change set
//!                 └─ otherwise ──▶ same content hash? ─yes─▶ unchanged
//!                                       └─no─▶ UPDATE change set
//!  change set: FAILED for no changes ──▶ delete it, unchanged
//!              changes ──▶ (dry run: report, delete) execute ──▶ wait, streaming events
//!                          ──▶ *_COMPLETE: created/updated; rolled back: error with the events
//! ```
//!
//! A call refused because someone else changed the stack meanwhile (another operation started,
//! our change set was deleted by another execution) sends the stack back to the start, a few
//! times at most; CloudFormation itself never lets two operations run on one stack.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::api::{
    ApiError, ApiErrorKind, ChangeSetInfo, ChangeSetKind, ChangeSetRequest, ChangeSetSummary,
    Location, StackApi, StackInfo, TemplateSource,
};
use crate::error::{DeployFailure, Error, Result};
use crate::outputs::unified_diff;
use crate::publish::millis;
use crate::publish::progress::{Event, Progress, ResourceChange, ResourceEvent, StackOutcome};
use crate::publish::templates::{DeployTemplate, comparable, deployed_hash, kind_name};

/// Prefix of the change sets a deploy creates (stale ones are deleted by the next deploy).
pub const DEPLOY_CHANGE_SET: &str = "pipeforge-deploy-";
/// Prefix of the change sets a dry run or `diff` creates (and deletes).
pub const PREVIEW_CHANGE_SET: &str = "pipeforge-preview-";
/// A preview change set older than this is someone's leftover.
const STALE_PREVIEW: Duration = Duration::from_secs(3600);
/// How often a stack may be sent back to the start because it changed under us.
const MAX_ROUNDS: usize = 6;

/// How long and how often to wait.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// Longest single wait (a stack operation, a change set, another operation).
    pub timeout: Duration,
    /// First poll interval.
    pub poll: Duration,
    /// Largest poll interval (intervals grow by half each time).
    pub max_poll: Duration,
}

impl Waits {
    /// The poll interval after `delay`: half as long again, at most `max_poll`.
    pub fn next_poll(&self, delay: Duration) -> Duration {
        (delay * 3 / 2).min(self.max_poll)
    }
}

/// Deploy, or only look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Create and execute change sets.
    Deploy,
    /// Create change sets, report them, delete them (dry run, `diff`).
    Preview,
}

/// One stack's job.
#[derive(Clone, Debug)]
pub struct StackJob<'a> {
    /// Where.
    pub at: Location,
    /// What.
    pub template: &'a DeployTemplate,
    /// The template's S3 URL, when it is too large for `TemplateBody`.
    pub template_url: Option<String>,
    /// Deploy or preview.
    pub mode: Mode,
    /// Unique per run: names the change sets.
    pub nonce: &'a str,
    /// Also compute the unified diff of the deployed template against the new one.
    pub template_diff: bool,
    /// Create a change set even when the deployed template carries the same content hash (a
    /// template edited outside pipeforge keeps it): `fleet drift --fix`.
    pub redeploy: bool,
    /// The CloudFormation execution role every change set and delete of the stack names.
    pub role_arn: Option<String>,
}

/// What happened to one stack.
#[derive(Clone, Debug)]
pub struct StackResult {
    /// How it ended.
    pub outcome: StackOutcome,
    /// Why, for unchanged stacks; what else happened (a failed first create deleted).
    pub detail: Option<String>,
    /// The change set's changes (empty when skipped by hash).
    pub changes: Vec<ResourceChange>,
    /// The unified diff of the deployed template against the new one (when asked).
    pub template_diff: Option<String>,
    /// Time spent.
    pub elapsed: Duration,
}

const STABLE_GOOD: [&str; 3] = ["CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"];

fn in_progress(status: &str) -> bool {
    status.ends_with("_IN_PROGRESS")
}

fn no_changes(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| {
        r.contains("didn't contain changes")
            || r.contains("No updates are to be performed")
            || r.contains("does not contain changes")
    })
}

/// Collects a stack's new events and reports them as they arrive.
struct EventStream {
    stop_at: Option<String>,
    seen: BTreeSet<String>,
    collected: Vec<ResourceEvent>,
}

impl EventStream {
    /// Starts after the newest event the stack has now.
    async fn start<A: StackApi>(api: &A, at: &Location, stack_id: &str) -> EventStream {
        let newest = api
            .recent_events(at, stack_id, None)
            .await
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|e| e.id);
        EventStream {
            stop_at: newest,
            seen: BTreeSet::new(),
            collected: Vec::new(),
        }
    }

    async fn poll<A: StackApi>(
        &mut self,
        api: &A,
        at: &Location,
        stack_id: &str,
        stack: &str,
        progress: &dyn Progress,
    ) {
        // Events are a courtesy: a failed read is retried on the next poll.
        let Ok(events) = api
            .recent_events(at, stack_id, self.stop_at.as_deref())
            .await
        else {
            return;
        };
        for e in events.into_iter().rev() {
            if self.seen.insert(e.id.clone()) {
                progress.event(&Event::StackEvent {
                    stack: stack.to_owned(),
                    event: e.clone(),
                });
                self.collected.push(e);
            }
        }
    }

    /// The events that explain a failure: the failed ones, with their reasons.
    fn explanation(&self) -> Vec<String> {
        let cancelled = |e: &&ResourceEvent| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.contains("cancelled") || r.contains("canceled"))
        };
        let with_reason: Vec<&ResourceEvent> = self
            .collected
            .iter()
            .filter(|e| e.failed() && e.reason.as_deref().is_some_and(|r| !r.is_empty()))
            .collect();
        // Resources CloudFormation cancelled because another one failed explain nothing.
        let causes: Vec<&ResourceEvent> = with_reason
            .iter()
            .filter(|e| !cancelled(e))
            .copied()
            .collect();
        let failed: Vec<String> = if causes.is_empty() {
            with_reason
        } else {
            causes
        }
        .into_iter()
        .map(ResourceEvent::line)
        .collect();
        if failed.is_empty() {
            self.collected
                .iter()
                .rev()
                .take(5)
                .rev()
                .map(ResourceEvent::line)
                .collect()
        } else {
            failed
        }
    }
}

/// The pieces of an error about one stack.
struct Ctx<'a> {
    at: &'a Location,
    stack: &'a str,
}

impl Ctx<'_> {
    fn api(&self, action: &str, e: &ApiError) -> Error {
        let help = match e.kind {
            ApiErrorKind::Denied => format!(
                "the credentials used in account {} lack a CloudFormation or IAM permission; deploys in target accounts run as the org's bootstrap role (org.yaml `deploy.bootstrap_role`)",
                self.at.account
            ),
            _ if e.code.as_deref() == Some("InsufficientCapabilitiesException") => {
                "the stack needs a capability pipeforge did not acknowledge; this is a pipeforge bug, please report it".to_owned()
            }
            _ if e.message.contains("Template format error")
                || e.message.contains("Template error") =>
            {
                "the rendered template was refused; check template overrides (`--templates`) with `pipeforge templates check`".to_owned()
            }
            _ => "see the message above; a rerun of the same deploy continues where this one stopped".to_owned(),
        };
        Error::Aws {
            action: format!(
                "{action} stack `{}` (account {}, {})",
                self.stack, self.at.account, self.at.region
            ),
            code: e.code.clone(),
            message: e.text(),
            help,
        }
    }

    fn failure(
        &self,
        message: String,
        status: Option<&str>,
        events: Vec<String>,
        help: String,
    ) -> Error {
        Error::Deploy(Box::new(DeployFailure {
            stack: self.stack.to_owned(),
            account: self.at.account.clone(),
            region: self.at.region.clone(),
            message,
            status: status.map(str::to_owned),
            events,
            help,
        }))
    }

    fn timeout(&self, what: &str, status: &str, waits: &Waits) -> Error {
        self.failure(
            format!(
                "gave up waiting for {what} after {} s",
                waits.timeout.as_secs()
            ),
            Some(status),
            Vec::new(),
            "CloudFormation keeps going on its own; run the deploy again later (it waits for the running operation), raise `--timeout`, or watch it with `pipeforge status`".to_owned(),
        )
    }

    /// The error for a stack stuck in a state that needs a person.
    fn stuck(&self, info: &StackInfo) -> Error {
        let region = &self.at.region;
        let stack = self.stack;
        let (what, fix) = match info.status.as_str() {
            "UPDATE_ROLLBACK_FAILED" => (
                "an update failed and so did its rollback",
                format!(
                    "fix the cause in the events (often a resource changed or deleted outside CloudFormation), then `aws cloudformation continue-update-rollback --stack-name {stack} --region {region}` in account {} (add `--resources-to-skip ID` for a resource that cannot be rolled back); deploy again once the stack is UPDATE_ROLLBACK_COMPLETE",
                    self.at.account
                ),
            ),
            "DELETE_FAILED" => (
                "a delete failed",
                format!(
                    "remove what blocks the delete (e.g. empty the bucket named in the events), then `aws cloudformation delete-stack --stack-name {stack} --region {region}` in account {} (with `--retain-resources ID` for a resource to keep); deploy again once it is gone",
                    self.at.account
                ),
            ),
            "ROLLBACK_FAILED" => (
                "the first create failed and so did its rollback",
                format!(
                    "remove the resources named in the events by hand, then `aws cloudformation delete-stack --stack-name {stack} --region {region}` in account {}; deploy again once it is gone",
                    self.at.account
                ),
            ),
            "UPDATE_FAILED" | "IMPORT_ROLLBACK_FAILED" => (
                "an operation failed without rolling back",
                format!(
                    "roll it back with `aws cloudformation rollback-stack --stack-name {stack} --region {region}` in account {}, then deploy again",
                    self.at.account
                ),
            ),
            _ => (
                "it is in a state pipeforge cannot deploy from",
                format!(
                    "look at the stack in the CloudFormation console (account {}, {region})",
                    self.at.account
                ),
            ),
        };
        let reason = info
            .reason
            .as_deref()
            .map(|r| vec![format!("stack status reason: {r}")])
            .unwrap_or_default();
        self.failure(
            format!("cannot deploy stack `{stack}`: {what}"),
            Some(&info.status),
            reason,
            fix,
        )
    }
}

/// Polls a stack (by id) until it leaves `*_IN_PROGRESS`, streaming its events when asked.
/// `None` when the stack is gone (deleted).
async fn wait_stable<A: StackApi>(
    api: &A,
    ctx: &Ctx<'_>,
    stack_id: &str,
    waits: &Waits,
    mut stream: Option<&mut EventStream>,
    progress: &dyn Progress,
) -> Result<Option<StackInfo>> {
    let deadline = Instant::now() + waits.timeout;
    let mut delay = waits.poll;
    loop {
        if let Some(s) = stream.as_deref_mut() {
            s.poll(api, ctx.at, stack_id, ctx.stack, progress).await;
        }
        let info = api
            .describe_stack(ctx.at, stack_id)
            .await
            .map_err(|e| ctx.api("describe", &e))?;
        let Some(info) = info else {
            return Ok(None);
        };
        if !in_progress(&info.status) || info.status == "REVIEW_IN_PROGRESS" {
            if let Some(s) = stream.as_deref_mut() {
                s.poll(api, ctx.at, stack_id, ctx.stack, progress).await;
            }
            return Ok(Some(info));
        }
        if Instant::now() >= deadline {
            return Err(ctx.timeout(
                &format!("stack `{}` ({})", ctx.stack, info.status),
                &info.status,
                waits,
            ));
        }
        tokio::time::sleep(delay).await;
        delay = waits.next_poll(delay);
    }
}

/// Deletes old pipeforge change sets of a stack: every deploy change set (a deploy holds the
/// pipeline's lock, so they are leftovers of an interrupted deploy) and preview change sets
/// older than an hour.
async fn clean_change_sets<A: StackApi>(api: &A, ctx: &Ctx<'_>, progress: &dyn Progress) {
    let Ok(list) = api.list_change_sets(ctx.at, ctx.stack).await else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for cs in list {
        if leftover(&cs, now)
            && api
                .delete_change_set(ctx.at, ctx.stack, &cs.name)
                .await
                .is_ok()
        {
            progress.event(&Event::Warning {
                message: format!(
                    "deleted change set `{}` of stack `{}`, left over by an interrupted run",
                    cs.name, ctx.stack
                ),
            });
        }
    }
}

/// Whether `clean_change_sets` deletes change set `cs` at `now` (seconds since the epoch): a
/// deploy change set, or a preview change set created more than an hour before `now`, that was
/// not executed.
pub(super) fn leftover(cs: &ChangeSetSummary, now: i64) -> bool {
    let stale = cs.name.starts_with(DEPLOY_CHANGE_SET)
        || (cs.name.starts_with(PREVIEW_CHANGE_SET)
            && cs
                .created
                .is_some_and(|t| now - t > STALE_PREVIEW.as_secs() as i64));
    // Executed change sets are history (AWS removes them; some emulators list them).
    let executed = cs.execution_status.starts_with("EXECUTE_");
    stale && !executed
}

/// The resources of a template, as `Add` changes (what creating the stack would do).
fn all_added(body: &str) -> Vec<ResourceChange> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v.get("Resources")
        .and_then(|r| r.as_object())
        .map(|r| {
            r.iter()
                .map(|(id, res)| ResourceChange {
                    action: "Add".to_owned(),
                    logical_id: id.clone(),
                    physical_id: None,
                    resource_type: res
                        .get("Type")
                        .and_then(|t| t.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    replacement: None,
                    scope: Vec::new(),
                    properties: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The values of a stack's parameters, read from the outputs of the stacks they come from. A
/// preview of a stack whose source stack does not exist yet uses a placeholder of the right form.
async fn parameters<A: StackApi>(
    api: &A,
    job: &StackJob<'_>,
    ctx: &Ctx<'_>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in &job.template.parameters {
        let at = Location {
            account: p.account.clone(),
            region: p.region.clone(),
        };
        let info = api
            .describe_stack(&at, &p.stack)
            .await
            .map_err(|e| ctx.api("read the outputs for", &e))?;
        let value = info
            .as_ref()
            .and_then(|i| i.outputs.get(&p.output))
            .cloned();
        let value = match (value, job.mode) {
            (Some(v), _) => v,
            (None, Mode::Preview) => format!(
                "arn:{}:kms:{}:{}:key/00000000-0000-0000-0000-000000000000",
                crate::aws::partition(&p.region),
                p.region,
                p.account
            ),
            (None, Mode::Deploy) => {
                return Err(ctx.failure(
                    format!(
                        "stack `{}` has no output `{}` for the parameter `{}`",
                        p.stack, p.output, p.key
                    ),
                    None,
                    Vec::new(),
                    "deploy the whole pipeline (the region stacks come before the pipeline stack)"
                        .to_owned(),
                ));
            }
        };
        out.push((p.key.clone(), value));
    }
    Ok(out)
}

/// Deploys (or previews) one stack.
pub async fn run_stack<A: StackApi>(
    api: &A,
    job: &StackJob<'_>,
    waits: &Waits,
    progress: &dyn Progress,
) -> Result<StackResult> {
    let mut run = Run {
        api,
        job,
        waits,
        progress,
        ctx: Ctx {
            at: &job.at,
            stack: job.template.stack.name.as_str(),
        },
        started: Instant::now(),
        recreated: false,
        announced_wait: false,
    };
    for round in 0..MAX_ROUNDS {
        if let Round::Done(result) = run.round(round).await? {
            return Ok(result);
        }
    }
    Err(run.ctx.failure(
        format!(
            "stack `{}` kept changing while pipeforge tried to deploy it",
            run.ctx.stack
        ),
        None,
        Vec::new(),
        "another tool or person is operating on the stack; wait for them to finish and deploy again"
            .to_owned(),
    ))
}

/// Where one round of [`run_stack`] leads.
enum Round {
    /// The stack changed under us, or was just settled: describe it again.
    Again,
    /// Finished.
    Done(StackResult),
}

/// A change set this run created, once CloudFormation has finished creating it.
struct OurChangeSet {
    /// Its name.
    name: String,
    /// What `DescribeChangeSet` said.
    info: ChangeSetInfo,
    /// Create or update.
    kind: ChangeSetKind,
    /// The stack did not exist: CloudFormation made it (REVIEW_IN_PROGRESS) only for this
    /// change set, and it is removed again when the change set is not executed.
    made_stack: bool,
}

/// One stack's run: its job, and what its rounds so far did.
struct Run<'a, A> {
    api: &'a A,
    job: &'a StackJob<'a>,
    waits: &'a Waits,
    progress: &'a dyn Progress,
    ctx: Ctx<'a>,
    started: Instant,
    /// A failed first create was deleted: the create that follows is a recreate.
    recreated: bool,
    /// The wait for another operation was reported (once per stack).
    announced_wait: bool,
}

impl<A: StackApi> Run<'_, A> {
    fn deploying(&self) -> bool {
        self.job.mode == Mode::Deploy
    }

    /// One pass of the state machine: describe, settle, compare, change set, execute.
    async fn round(&mut self, round: usize) -> Result<Round> {
        let info = self
            .api
            .describe_stack(&self.job.at, self.ctx.stack)
            .await
            .map_err(|e| self.ctx.api("describe", &e))?;
        if let Some(i) = &info
            && let Some(next) = self.settle(i).await?
        {
            return Ok(next);
        }
        let review = info
            .as_ref()
            .is_some_and(|i| i.status == "REVIEW_IN_PROGRESS");
        let kind = if info.is_none() || review {
            ChangeSetKind::Create
        } else {
            ChangeSetKind::Update
        };
        let deployed = self.deployed_template(kind).await?;
        let deployed_json: Option<serde_json::Value> = deployed
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok());
        if kind == ChangeSetKind::Update {
            self.check_owner(deployed_json.as_ref())?;
        }
        let parameters = parameters(self.api, self.job, &self.ctx).await?;
        if self.same_as_deployed(info.as_ref(), deployed_json.as_ref(), &parameters) {
            let detail = Some("same content hash".to_owned());
            return self.done(StackOutcome::Unchanged, detail, Vec::new(), None);
        }
        let template_diff = self.template_diff(deployed.as_deref());
        if self.deploying() && info.is_some() {
            clean_change_sets(self.api, &self.ctx, self.progress).await;
        }
        self.announce(kind);
        let name = self.change_set_name(round);
        if !self.create_change_set(&name, kind, parameters).await? {
            return Ok(Round::Again);
        }
        let Some(cs) = self.wait_change_set(&name).await? else {
            return Ok(Round::Again); // deleted by someone else: start over
        };
        let made_stack = info.is_none();
        let cs = OurChangeSet {
            name,
            info: cs,
            kind,
            made_stack,
        };
        if cs.info.status == "FAILED" {
            return self.refused(&cs, template_diff).await;
        }
        // A change set CloudFormation accepted is executed even with no resource changes: the
        // template's outputs or metadata (its content hash) changed, and discarding it would
        // leave them stale, so every later deploy would make and discard one again. Only a
        // change set CloudFormation itself failed for "no changes" is nothing to do.
        if !self.deploying() {
            return self.previewed(cs, template_diff).await;
        }
        if cs.info.execution_status != "AVAILABLE" {
            return Ok(Round::Again);
        }
        self.execute(cs, template_diff).await
    }

    /// Reports the end of the stack and gives its result.
    fn done(
        &self,
        outcome: StackOutcome,
        detail: Option<String>,
        changes: Vec<ResourceChange>,
        template_diff: Option<String>,
    ) -> Result<Round> {
        let elapsed = self.started.elapsed();
        self.progress.event(&Event::StackDone {
            stack: self.ctx.stack.to_owned(),
            outcome,
            detail: detail.clone(),
            millis: millis(elapsed),
        });
        Ok(Round::Done(StackResult {
            outcome,
            detail,
            changes,
            template_diff,
            elapsed,
        }))
    }

    /// Settles a stack that exists: waits for someone else's operation, clears a failed first
    /// create (a preview reports what a deploy would do instead), refuses a stack stuck in a
    /// failed state. `None` when the stack can take a change set now.
    async fn settle(&mut self, i: &StackInfo) -> Result<Option<Round>> {
        if in_progress(&i.status) && i.status != "REVIEW_IN_PROGRESS" {
            self.wait_for_other(i).await?;
            return Ok(Some(Round::Again));
        }
        match i.status.as_str() {
            "ROLLBACK_COMPLETE" | "CREATE_FAILED" if self.deploying() => {
                self.delete_failed_create(i).await.map(Some)
            }
            "ROLLBACK_COMPLETE" | "CREATE_FAILED" => self.would_recreate(i).map(Some),
            "UPDATE_ROLLBACK_FAILED"
            | "DELETE_FAILED"
            | "ROLLBACK_FAILED"
            | "UPDATE_FAILED"
            | "IMPORT_ROLLBACK_FAILED" => Err(self.ctx.stuck(i)),
            _ => Ok(None),
        }
    }

    /// Waits for another operation on the stack to finish (saying so the first time).
    async fn wait_for_other(&mut self, i: &StackInfo) -> Result<()> {
        if !self.announced_wait {
            self.progress.event(&Event::Waiting {
                what: format!(
                    "stack `{}` is {} (another operation); waiting for it to finish",
                    self.ctx.stack, i.status
                ),
            });
            self.announced_wait = true;
        }
        wait_stable(self.api, &self.ctx, &i.id, self.waits, None, self.progress).await?;
        Ok(())
    }

    /// Deletes a stack whose first create failed, so that the next round creates it again.
    async fn delete_failed_create(&mut self, i: &StackInfo) -> Result<Round> {
        let (job, name) = (self.job, self.ctx.stack);
        self.progress.event(&Event::StackStarted {
            stack: name.to_owned(),
            account: job.at.account.clone(),
            region: job.at.region.clone(),
            action: "recreate".to_owned(),
        });
        self.progress.event(&Event::Warning {
            message: format!(
                "stack `{name}` is {} (its first create failed): deleting it before creating it again",
                i.status
            ),
        });
        let mut stream = EventStream::start(self.api, &job.at, &i.id).await;
        if let Err(e) = self
            .api
            .delete_stack(&job.at, &i.id, job.role_arn.as_deref())
            .await
            && e.kind != ApiErrorKind::InvalidState
        {
            return Err(self.ctx.api("delete", &e));
        }
        let end = wait_stable(
            self.api,
            &self.ctx,
            &i.id,
            self.waits,
            Some(&mut stream),
            self.progress,
        )
        .await?;
        if let Some(end) = end.filter(|e| e.status != "DELETE_COMPLETE") {
            if end.status == "DELETE_FAILED" {
                return Err(self.ctx.stuck(&end));
            }
            return Ok(Round::Again);
        }
        self.recreated = true;
        Ok(Round::Again)
    }

    /// A preview of a stack whose first create failed: a deploy would create all of it again.
    fn would_recreate(&self, i: &StackInfo) -> Result<Round> {
        let (t, name) = (self.job.template, self.ctx.stack);
        let changes = all_added(&t.body);
        self.progress.event(&Event::ChangeSet {
            stack: name.to_owned(),
            changes: changes.clone(),
        });
        let diff = self
            .job
            .template_diff
            .then(|| unified_diff(name, "", &comparable(&t.body).unwrap_or_default()));
        self.done(
            StackOutcome::WouldCreate,
            Some(format!(
                "the stack is {} (its first create failed): a deploy deletes it and creates it again",
                i.status
            )),
            changes,
            diff,
        )
    }

    /// The deployed template, read when the change set is an update.
    async fn deployed_template(&self, kind: ChangeSetKind) -> Result<Option<String>> {
        if kind != ChangeSetKind::Update {
            return Ok(None);
        }
        self.api
            .get_template(&self.job.at, self.ctx.stack)
            .await
            .map_err(|e| self.ctx.api("read the template of", &e))
    }

    /// The owner check ran before anything changed; this catches a stack that another
    /// pipeline created meanwhile under the same name (it holds another pipeline's lock).
    fn check_owner(&self, deployed: Option<&serde_json::Value>) -> Result<()> {
        let pipeline_of = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.get("Metadata")?.get("pipeforge")?.get("pipeline"))
                .and_then(|p| p.as_str())
                .map(str::to_owned)
        };
        let ours = pipeline_of(serde_json::from_str(&self.job.template.body).ok().as_ref());
        let theirs = pipeline_of(deployed);
        if theirs == ours {
            return Ok(());
        }
        Err(Error::Refused {
            message: format!(
                "stack `{}` (account {}, {}) belongs to {}, not to pipeline `{}`",
                self.ctx.stack,
                self.job.at.account,
                self.job.at.region,
                theirs.map_or_else(
                    || "no pipeforge pipeline".to_owned(),
                    |p| format!("pipeline `{p}`")
                ),
                ours.unwrap_or_default()
            ),
            help: "the pipeline's name and an environment's name combine into the name of another pipeline's stack; rename the pipeline or the environment".to_owned(),
        })
    }

    /// Whether the stack is stable with the same content hash and parameters (and no redeploy
    /// was asked): nothing to do, no change set.
    fn same_as_deployed(
        &self,
        info: Option<&StackInfo>,
        deployed: Option<&serde_json::Value>,
        parameters: &[(String, String)],
    ) -> bool {
        let stable_good = info.is_some_and(|i| STABLE_GOOD.contains(&i.status.as_str()));
        let same_parameters = info.is_some_and(|i| {
            i.parameters
                == parameters
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()
        });
        stable_good
            && !self.job.redeploy
            && same_parameters
            && deployed.and_then(deployed_hash).as_deref()
                == Some(self.job.template.content_hash.as_str())
    }

    /// The unified diff of the deployed template against the new one, when asked and different.
    fn template_diff(&self, deployed: Option<&str>) -> Option<String> {
        if !self.job.template_diff {
            return None;
        }
        let t = self.job.template;
        let old = deployed
            .map(|d| comparable(d).unwrap_or_else(|| d.to_owned()))
            .unwrap_or_default();
        let new = comparable(&t.body).unwrap_or_else(|| t.body.clone());
        (old != new).then(|| unified_diff(self.ctx.stack, &old, &new))
    }

    /// Reports the start of the stack's check, create or update.
    fn announce(&self, kind: ChangeSetKind) {
        self.progress.event(&Event::StackStarted {
            stack: self.ctx.stack.to_owned(),
            account: self.job.at.account.clone(),
            region: self.job.at.region.clone(),
            action: match (self.job.mode, kind) {
                (Mode::Preview, _) => "check",
                (Mode::Deploy, ChangeSetKind::Create) if self.recreated => "recreate",
                (Mode::Deploy, ChangeSetKind::Create) => "create",
                (Mode::Deploy, ChangeSetKind::Update) => "update",
            }
            .to_owned(),
        });
    }

    /// The name of this round's change set.
    fn change_set_name(&self, round: usize) -> String {
        format!(
            "{}{}-{round}",
            if self.deploying() {
                DEPLOY_CHANGE_SET
            } else {
                PREVIEW_CHANGE_SET
            },
            self.job.nonce
        )
    }

    /// Asks for the change set `cs_name`; `false` when the stack changed state meanwhile.
    async fn create_change_set(
        &self,
        cs_name: &str,
        kind: ChangeSetKind,
        parameters: Vec<(String, String)>,
    ) -> Result<bool> {
        let (job, t) = (self.job, self.job.template);
        let request = ChangeSetRequest {
            stack: self.ctx.stack.to_owned(),
            name: cs_name.to_owned(),
            kind,
            template: match &job.template_url {
                Some(u) => TemplateSource::Url(u.clone()),
                None => TemplateSource::Body(t.body.clone()),
            },
            capabilities: t.capabilities.clone(),
            tags: t.tags.clone(),
            description: format!("pipeforge {} {}", kind_name(t.stack.kind), t.content_hash),
            role_arn: job.role_arn.clone(),
            parameters,
            revert_drift: job.redeploy && kind == ChangeSetKind::Update,
        };
        match self.api.create_change_set(&job.at, &request).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == ApiErrorKind::AlreadyExists => Ok(true), // our own retried request
            Err(e) if e.kind == ApiErrorKind::InvalidState => Ok(false),
            Err(e) => Err(self.ctx.api("create a change set for", &e)),
        }
    }

    /// Waits until CloudFormation has made the change set; `None` when it is gone.
    async fn wait_change_set(&self, cs_name: &str) -> Result<Option<ChangeSetInfo>> {
        let deadline = Instant::now() + self.waits.timeout;
        let mut delay = self.waits.poll;
        loop {
            let cs = match self
                .api
                .describe_change_set(&self.job.at, self.ctx.stack, cs_name)
                .await
            {
                Ok(cs) => cs,
                Err(e) if e.kind == ApiErrorKind::ChangeSetNotFound => return Ok(None),
                Err(e) => return Err(self.ctx.api("describe the change set of", &e)),
            };
            match cs.status.as_str() {
                "CREATE_PENDING" | "CREATE_IN_PROGRESS" => {}
                _ => return Ok(Some(cs)),
            }
            if Instant::now() >= deadline {
                let what = format!("change set `{cs_name}`");
                return Err(self.ctx.timeout(&what, &cs.status, self.waits));
            }
            tokio::time::sleep(delay).await;
            delay = self.waits.next_poll(delay);
        }
    }

    /// Deletes a change set that is not executed (and the stack made only for it).
    async fn discard(&self, cs: &OurChangeSet) {
        let at = &self.job.at;
        let _ = self
            .api
            .delete_change_set(at, self.ctx.stack, &cs.name)
            .await;
        if cs.made_stack && !cs.info.stack_id.is_empty() {
            let role = self.job.role_arn.as_deref();
            let _ = self.api.delete_stack(at, &cs.info.stack_id, role).await;
        }
    }

    /// A change set CloudFormation failed: unchanged when for "no changes", else an error.
    async fn refused(&self, cs: &OurChangeSet, template_diff: Option<String>) -> Result<Round> {
        self.discard(cs).await;
        if no_changes(cs.info.reason.as_deref()) {
            let detail = Some("no changes".to_owned());
            return self.done(StackOutcome::Unchanged, detail, Vec::new(), template_diff);
        }
        Err(self.ctx.failure(
            format!("CloudFormation refused the change set for stack `{}`", self.ctx.stack),
            None,
            cs.info.reason.iter().map(|r| format!("change set: {r}")).collect(),
            "the template was refused as a whole; check template overrides (`--templates`) with `pipeforge templates check`, and that every policy and role the template names exists in the account".to_owned(),
        ))
    }

    /// A preview's change set: reported, then deleted.
    async fn previewed(&self, cs: OurChangeSet, template_diff: Option<String>) -> Result<Round> {
        self.progress.event(&Event::ChangeSet {
            stack: self.ctx.stack.to_owned(),
            changes: cs.info.changes.clone(),
        });
        self.discard(&cs).await;
        let outcome = if cs.kind == ChangeSetKind::Create {
            StackOutcome::WouldCreate
        } else {
            StackOutcome::WouldUpdate
        };
        self.done(outcome, None, cs.info.changes, template_diff)
    }

    /// Executes the change set and follows the stack, streaming its events, to its end.
    async fn execute(&self, cs: OurChangeSet, template_diff: Option<String>) -> Result<Round> {
        let (at, name) = (&self.job.at, self.ctx.stack);
        let stack_id = &cs.info.stack_id;
        let mut stream = EventStream::start(self.api, at, stack_id).await;
        match self.api.execute_change_set(at, name, &cs.name).await {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind,
                    ApiErrorKind::ChangeSetNotFound | ApiErrorKind::InvalidState
                ) =>
            {
                return Ok(Round::Again);
            }
            Err(e) => return Err(self.ctx.api("execute the change set of", &e)),
        }
        let end = wait_stable(
            self.api,
            &self.ctx,
            stack_id,
            self.waits,
            Some(&mut stream),
            self.progress,
        )
        .await?
        .ok_or_else(|| {
            self.ctx.failure(
                format!("stack `{name}` disappeared while it was being deployed"),
                None,
                stream.explanation(),
                "someone deleted it; deploy again".to_owned(),
            )
        })?;
        let detail = self
            .recreated
            .then(|| "its failed first create was deleted first".to_owned());
        let changes = cs.info.changes;
        match end.status.as_str() {
            "CREATE_COMPLETE" => self.done(StackOutcome::Created, detail, changes, template_diff),
            "UPDATE_COMPLETE" => self.done(StackOutcome::Updated, detail, changes, template_diff),
            _ => Err(self.rolled_back(&end, &stream)),
        }
    }

    /// The error for a stack whose operation ended anywhere but `*_COMPLETE`.
    fn rolled_back(&self, end: &StackInfo, stream: &EventStream) -> Error {
        let status = end.status.as_str();
        let (what, help) = match status {
            "ROLLBACK_COMPLETE" => (
                "creating",
                "nothing was kept; fix the cause above and deploy again: the failed stack is deleted and created again".to_owned(),
            ),
            "UPDATE_ROLLBACK_COMPLETE" => (
                "updating",
                "the stack is back on its previous template; fix the cause above and deploy again".to_owned(),
            ),
            "UPDATE_ROLLBACK_FAILED" | "ROLLBACK_FAILED" => {
                let help = match self.ctx.stuck(end) {
                    Error::Deploy(f) => f.help,
                    other => other.to_string(),
                };
                ("deploying", help)
            }
            _ => (
                "deploying",
                "fix the cause above and deploy again".to_owned(),
            ),
        };
        self.ctx.failure(
            format!("{what} stack `{}` failed", self.ctx.stack),
            Some(status),
            stream.explanation(),
            help,
        )
    }
}
