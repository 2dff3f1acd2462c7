//! `pipeforge fleet plan`: re-renders every deployed pipeline from its deploy record with a
//! candidate set (templates, languages, org policy) and reports the impact: unchanged, changed
//! (the files, with lines added and removed, and the CloudFormation resources that change,
//! replacements flagged) or now invalid (with the diagnostics); identical changes are grouped.
//!
//! [`compare`] and [`diff_file`] are pure; [`Planner`] is the [`super::Visit`] that reads a
//! record and the old files it needs from the bucket. [`Summary`] keeps counts and groups only,
//! so memory does not grow with the fleet.
//!
//! What cannot have changed is not rendered: a record carries the digest of its render's inputs
//! ([`crate::publish::digest`]); when the candidate's digest for that record is the same, the
//! pipeline is unchanged (its notices are the record's, their day counts brought to today).
//! A pipeline whose digest differs, or whose record has none, is rendered, at most one per core
//! at a time ([`Planner::new`]), while the scan reads further records. Most unchanged pipelines
//! are not even read: the scan of a plan ([`super::index`]) decides them from the bucket's
//! listing, a group of pipelines with the same set digest at a time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::{Entry, Reader};
use crate::Inputs;
use crate::date::{Date, Evaluation};
use crate::error::SourceFile;
use crate::model::{Notice, NoticeKind};
use crate::outputs::{PLAN_FILE, sha256};
use crate::publish::archive;
use crate::publish::digest::{InputDigest, SetSide, Subject};
use crate::publish::record::DeployedRecord;

/// What the candidate does to one pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It renders the same bundle.
    Unchanged,
    /// It renders a different bundle.
    Changed,
    /// Its manifest no longer validates (or renders) with the candidate.
    Invalid,
    /// No deploy record: it cannot be re-rendered from the bucket.
    NoRecord,
    /// The record could not be read.
    Unreadable,
}

/// How a file or resource changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// New.
    Added,
    /// Gone.
    Removed,
    /// Different.
    Modified,
}

/// A file of the bundle that changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Its path in the bundle.
    pub path: String,
    /// How.
    pub change: Change,
    /// Lines added.
    pub added: usize,
    /// Lines removed.
    pub removed: usize,
}

/// A CloudFormation resource that changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    /// The stack file (`stacks/pipeline.json`).
    pub stack: String,
    /// The logical id.
    pub logical_id: String,
    /// How.
    pub change: Change,
    /// CloudFormation replaces it: its type or a name property (`*Name`) changed.
    pub replacement: bool,
}

/// The impact on one pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct Impact {
    /// The pipeline.
    pub pipeline: String,
    /// Its team.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub team: String,
    /// Its repository.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub repository: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Files that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileChange>,
    /// Resources that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceChange>,
    /// The diagnostics (invalid), or why the record is missing or unreadable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diagnostics: String,
    /// Org rules it breaks without failing yet (warnings before `enforce_from`, waivers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// The candidate gives the same render inputs as the deploy recorded: unchanged without
    /// rendering.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub same_inputs: bool,
    /// Decided from the bucket's listing, without reading the deploy record (so without its
    /// team and repository): its listing key names a set digest the candidate gives again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_listing: bool,
}

impl Impact {
    fn bare(pipeline: &str, outcome: Outcome, diagnostics: String) -> Impact {
        Impact {
            pipeline: pipeline.to_owned(),
            team: String::new(),
            repository: String::new(),
            outcome,
            files: Vec::new(),
            resources: Vec::new(),
            diagnostics,
            notices: Vec::new(),
            same_inputs: false,
            from_listing: false,
        }
    }

    /// What identical changes share: every file and resource change, without the pipeline.
    pub fn signature(&self) -> String {
        let files = self.files.iter().map(|f| match f.change {
            Change::Modified => format!("`{}` +{} -{}", f.path, f.added, f.removed),
            c => format!("`{}` {}", f.path, change_word(c)),
        });
        let resources = self.resources.iter().map(|r| {
            let replace = if r.replacement { " (replacement)" } else { "" };
            format!(
                "`{}` {}{replace}",
                r.logical_id.as_str(),
                change_word(r.change)
            )
        });
        files.chain(resources).collect::<Vec<_>>().join(", ")
    }
}

fn change_word(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Modified => "modified",
    }
}

/// A re-render of one record with the candidate, before the old files are read.
#[derive(Debug)]
pub struct Compared {
    /// The impact, files without line counts yet.
    pub impact: Impact,
    /// The new content of every modified or added file.
    pub new_files: BTreeMap<String, Vec<u8>>,
}

/// Re-renders `record`'s manifest with `candidate` on `today` and compares file hashes with
/// what was deployed (`plan.json` aside: it is derived from the rest).
pub fn compare(record: &DeployedRecord, candidate: &Inputs, today: Option<Date>) -> Compared {
    let file = SourceFile::new(&record.manifest.path, &record.manifest.text);
    let eval = Evaluation {
        today,
        repository: Some(record.repository.clone()),
    };
    let mut impact = Impact::bare(&record.pipeline, Outcome::Unchanged, String::new());
    impact.team = record.team.clone();
    impact.repository = record.repository.clone();
    // `plan.json` is not rendered: it is derived from the other files, and the bundle hash
    // leaves it out.
    let bundle = crate::generate_files(
        &file,
        &candidate.org,
        &candidate.catalog,
        &candidate.templates,
        &eval,
    )
    .and_then(|b| {
        candidate
            .org
            .check_repository(&b.plan.pipeline.team, &record.repository)?;
        Ok(b)
    });
    let bundle = match bundle {
        Ok(b) => b,
        Err(e) => {
            impact.outcome = Outcome::Invalid;
            impact.diagnostics = e.to_string();
            return Compared {
                impact,
                new_files: BTreeMap::new(),
            };
        }
    };
    impact.notices = bundle.plan.notices.iter().map(|n| n.to_string()).collect();
    let mut new_files = BTreeMap::new();
    // Every file is hashed once, by the render: the bundle hash and the per-file comparison
    // share the hashes.
    let summary = &bundle.files.hashes;
    if summary.hash != record.content_hash {
        impact.outcome = Outcome::Changed;
        for path in record.files.keys() {
            if path != PLAN_FILE && bundle.files.outputs.get(path).is_none() {
                impact.files.push(FileChange {
                    path: path.clone(),
                    change: Change::Removed,
                    added: 0,
                    removed: 0,
                });
            }
        }
        // The rendered files are moved out of the bundle, not copied.
        for (path, bytes) in bundle.files.outputs.into_files() {
            let change = match (record.files.get(&path), summary.files.get(&path)) {
                (None, _) => Change::Added,
                (Some(old), Some(new)) if old == new => continue,
                (Some(_), _) => Change::Modified,
            };
            impact.files.push(FileChange {
                path: path.clone(),
                change,
                added: 0,
                removed: 0,
            });
            new_files.insert(path, bytes);
        }
        impact.files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Compared { impact, new_files }
}

/// Fills in a changed file's line counts and, for a stack, its resource changes, from the old
/// and new content (`None`: the file is new, or gone).
pub fn diff_file(impact: &mut Impact, path: &str, old: Option<&[u8]>, new: Option<&[u8]>) {
    let old_text = text(old.unwrap_or_default());
    let new_text = text(new.unwrap_or_default());
    let (added, removed) = super::lines::counts(&old_text, &new_text);
    if let Some(f) = impact.files.iter_mut().find(|f| f.path == path) {
        f.added = added;
        f.removed = removed;
    }
    if path.starts_with("stacks/") && path.ends_with(".json") {
        impact
            .resources
            .extend(resource_changes(path, &old_text, &new_text));
    }
}

/// `bytes` as text: borrowed when they are UTF-8 (checked by `from_utf8`, faster than the
/// lossy conversion's chunks), else with replacement characters.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The `Resources` of a stack template, each resource as its JSON text, as a parser reads
/// them (for a template not in pipeforge's layout, [`crate::members`]).
#[derive(serde::Deserialize)]
struct RawResources<'a> {
    #[serde(rename = "Resources", borrow)]
    resources: BTreeMap<String, &'a serde_json::value::RawValue>,
}

/// The resources of two stack templates that differ. Each template is read for its
/// `Resources` alone, every resource kept as its text (from the template's lines,
/// `crate::members`, or else by a parser); a resource whose text is the same in both is
/// unchanged, and only one whose text differs is parsed, so that the same value written
/// another way (an older pipeforge's layout) is no change, and for the replacement check.
pub fn resource_changes(stack: &str, old: &str, new: &str) -> Vec<ResourceChange> {
    fn resources(t: &str) -> BTreeMap<Cow<'_, str>, &str> {
        crate::members::resources(t).unwrap_or_else(|| {
            serde_json::from_str::<RawResources<'_>>(t)
                .map(|r| {
                    r.resources
                        .into_iter()
                        .map(|(id, v)| (Cow::Owned(id), v.get()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
    let value = |raw: &str| serde_json::from_str::<serde_json::Value>(raw).unwrap_or_default();
    let (old, new) = (resources(old), resources(new));
    let mut out = Vec::new();
    for (id, n) in &new {
        let (change, replacement) = match old.get(id) {
            None => (Change::Added, false),
            Some(o) if o == n => continue,
            Some(o) => {
                let (o, n) = (value(o), value(n));
                if o == n {
                    continue;
                }
                (Change::Modified, replaces(&o, &n))
            }
        };
        out.push(ResourceChange {
            stack: stack.to_owned(),
            logical_id: id.clone().into_owned(),
            change,
            replacement,
        });
    }
    for id in old.keys().filter(|id| !new.contains_key(*id)) {
        out.push(ResourceChange {
            stack: stack.to_owned(),
            logical_id: id.clone().into_owned(),
            change: Change::Removed,
            replacement: false,
        });
    }
    out
}

/// A changed type or name property (`Name`, `ProjectName`, `RoleName`…): CloudFormation
/// replaces the resource.
fn replaces(old: &serde_json::Value, new: &serde_json::Value) -> bool {
    if old.get("Type") != new.get("Type") {
        return true;
    }
    fn props(v: &serde_json::Value) -> Option<&serde_json::Map<String, serde_json::Value>> {
        v.get("Properties")?.as_object()
    }
    fn prop<'a>(
        m: Option<&'a serde_json::Map<String, serde_json::Value>>,
        k: &str,
    ) -> Option<&'a serde_json::Value> {
        m?.get(k)
    }
    let (o, n) = (props(old), props(new));
    o.into_iter()
        .chain(n)
        .flat_map(serde_json::Map::keys)
        .filter(|k| k.ends_with("Name"))
        .any(|k| prop(o, k) != prop(n, k))
}

/// Re-renders each pipeline with a candidate ([`super::Visit`] for `fleet plan`), unless its
/// record's input digest shows the candidate cannot change it.
#[derive(Debug)]
pub struct Planner {
    /// The candidate set.
    pub candidate: Arc<Inputs>,
    /// The day dated rules and waivers are evaluated on.
    pub today: Option<Date>,
    digest: InputDigest<Arc<Inputs>>,
    renders: RenderPool,
    reads: AtomicUsize,
    bundle_reads: AtomicUsize,
}

impl super::Visit for Planner {
    type Out = Impact;

    async fn visit(self: Arc<Self>, reader: Reader, pipeline: String) -> Impact {
        self.plan_one(&reader, &pipeline).await
    }
}

/// How many pipelines a plan works on at once (records read, or waiting to render).
pub const PLAN_WINDOW: usize = 64;

/// How many pipelines a plan renders at once: one per core.
pub fn render_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// A job for the render threads.
type RenderJob = Box<dyn FnOnce() + Send>;

/// The plan's render threads, one per core, each rendering one pipeline at a time, in the order
/// they are handed over. Not tokio's blocking pool: it starts a new thread whenever none is idle
/// at the moment of a hand-over, and in a plan (a render finishing wakes the task that hands
/// over the next) it grew to ~13 threads taking renders in turn, each with its own allocator
/// heap gone cold since its last turn (ARCHITECTURE.md, "Per-pipeline costs").
#[derive(Debug)]
struct RenderPool {
    jobs: std::sync::mpsc::Sender<RenderJob>,
    /// Threads started; none (the system refused them all): every render runs on tokio's
    /// blocking pool instead.
    threads: usize,
}

impl RenderPool {
    fn new(threads: usize) -> RenderPool {
        let (jobs, queue) = std::sync::mpsc::channel::<RenderJob>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let started = (0..threads.max(1))
            .filter(|i| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("pipeforge-render-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only while waiting for the next job.
                            let job = match queue.lock() {
                                Ok(q) => q.recv(),
                                Err(_) => return,
                            };
                            // No more jobs: the planner is gone.
                            let Ok(job) = job else { return };
                            job();
                        }
                    })
                    .is_ok()
            })
            .count();
        RenderPool {
            jobs,
            threads: started,
        }
    }

    /// Runs `f` on a render thread; an error when it panicked.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::result::Result<T, String> {
        if self.threads == 0 {
            return tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| e.to_string());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: RenderJob = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // The planner stopped waiting: nothing to tell.
            let _ = reply.send(out);
        });
        if self.jobs.send(job).is_err() {
            return Err("the render threads have stopped".to_owned());
        }
        match answer.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(panic)) => Err(panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}"))),
            Err(_) => Err("the render thread stopped".to_owned()),
        }
    }
}

impl Planner {
    /// A planner of `candidate` on `today`.
    pub fn new(candidate: Arc<Inputs>, today: Option<Date>) -> Planner {
        Planner {
            digest: InputDigest::new(Arc::clone(&candidate), today),
            candidate,
            today,
            renders: RenderPool::new(render_slots()),
            reads: AtomicUsize::new(0),
            bundle_reads: AtomicUsize::new(0),
        }
    }

    /// How many objects of bundles this planner has read (the deployed versions of changed
    /// files: an archive, or a file).
    pub fn bundle_reads(&self) -> usize {
        self.bundle_reads.load(Ordering::Relaxed)
    }

    /// How many deploy records this planner has read.
    pub fn records_read(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    /// The candidate's set digest for the language, gates and stacks `record` was rendered
    /// with ([`InputDigest::set_digest`]); `None` without recorded inputs, or when the candidate
    /// lacks the language or a template.
    pub fn candidate_set(&self, record: &DeployedRecord) -> Option<String> {
        self.digest
            .set_digest(&SetSide::of(record.inputs.as_ref()?))
    }

    /// Reads `pipeline`'s deploy record (and its ETag), counting the read.
    pub async fn read(&self, reader: &Reader, pipeline: &str) -> (Entry, Option<String>) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        reader.record_tagged(pipeline).await
    }

    /// The impact of a pipeline the listing decided: unchanged, its record not read.
    pub fn listed_unchanged(pipeline: &str) -> Impact {
        let mut impact = Impact::bare(pipeline, Outcome::Unchanged, String::new());
        impact.same_inputs = true;
        impact.from_listing = true;
        impact
    }

    /// True when the candidate's render inputs for `record` are the ones it recorded: the
    /// candidate renders the same files. False without a recorded digest.
    pub fn same_inputs(&self, record: &DeployedRecord) -> bool {
        let Some(recorded) = &record.inputs else {
            return false;
        };
        let tooling = crate::capacity::placement::provisional(
            &self.candidate.org,
            &record.pipeline,
            &record.team,
        );
        let subject = Subject {
            pipeline: &record.pipeline,
            team: &record.team,
            repository: &record.repository,
            manifest_text: &record.manifest.text,
            language: &recorded.language,
            gates: &recorded.gates,
            stacks: &recorded.stacks,
            tooling: &tooling,
        };
        self.digest.digest(&subject).as_ref() == Some(&recorded.digest)
    }

    /// The impact on `pipeline`, from its deploy record.
    pub async fn plan_one(self: Arc<Self>, reader: &Reader, pipeline: &str) -> Impact {
        let (entry, _) = self.read(reader, pipeline).await;
        self.plan_entry(reader, entry).await
    }

    /// The impact on the pipeline of `entry`, its deploy record as read.
    pub async fn plan_entry(self: Arc<Self>, reader: &Reader, entry: Entry) -> Impact {
        let record = match entry {
            Entry::Record(r) => r,
            Entry::Missing { pipeline } => return Impact::bare(&pipeline, Outcome::NoRecord, "no deploy record: deployed before deploy records existed; its next deploy writes one".to_owned()),
            Entry::Unreadable { pipeline, error } => {
                return Impact::bare(&pipeline, Outcome::Unreadable, error);
            }
        };
        if self.same_inputs(&record) {
            return unchanged(&record, self.today);
        }
        let me = Arc::clone(&self);
        let record = Arc::new(*record);
        let r = Arc::clone(&record);
        // Rendering is CPU-bound: one per core, on the plan's own threads, while other tasks
        // read.
        let compared = self
            .renders
            .run(move || compare(&r, &me.candidate, me.today))
            .await;
        let compared = match compared {
            Ok(c) => c,
            Err(e) => {
                return Impact::bare(
                    &record.pipeline,
                    Outcome::Invalid,
                    format!("render failed: {e}"),
                );
            }
        };
        let mut impact = compared.impact;
        let mut old = self.old_files(reader, &record, &impact.files).await;
        let changed: Vec<FileChange> = impact.files.clone();
        for f in changed {
            let before = match old.remove(&f.path) {
                Some(Ok(bytes)) => bytes,
                Some(Err(why)) => {
                    impact.diagnostics = why;
                    None
                }
                None => None,
            };
            diff_file(
                &mut impact,
                &f.path,
                before.as_deref(),
                compared.new_files.get(&f.path).map(Vec::as_slice),
            );
        }
        impact
    }

    /// The deployed version of every file of `files` that is modified or removed, from the
    /// record's bundle: with the bundle's archive ([`crate::publish::archive`]) and two or more
    /// such files, one request for all of them; any file the archive does not give, one
    /// request each. Every file is checked against the record's hash for it: other bytes are
    /// an error (the file is then diffed as if new), a file the bundle lacks is `None`.
    async fn old_files(
        &self,
        reader: &Reader,
        record: &DeployedRecord,
        files: &[FileChange],
    ) -> BTreeMap<String, OldFile> {
        let wanted: BTreeMap<String, String> = files
            .iter()
            .filter(|f| f.change != Change::Added)
            .filter_map(|f| Some((f.path.clone(), record.files.get(&f.path)?.clone())))
            .collect();
        let mut out = BTreeMap::new();
        if record.archive && wanted.len() >= 2 {
            self.bundle_reads.fetch_add(1, Ordering::Relaxed);
            if let Ok(Some(zip)) = reader
                .object(&archive::key(&record.bundle), archive::MAX_ARCHIVE)
                .await
            {
                let unpacked = archive::unpack(&zip, &wanted);
                out.extend(unpacked.into_iter().map(|(p, b)| (p, Ok(Some(b)))));
            }
        }
        for (path, hash) in &wanted {
            if out.contains_key(path) {
                continue;
            }
            self.bundle_reads.fetch_add(1, Ordering::Relaxed);
            let key = format!("{}{path}", record.bundle);
            let old = match reader.object(&key, archive::MAX_ENTRY as usize).await {
                Ok(Some(b)) if sha256(&b) == *hash => Ok(Some(b)),
                Ok(Some(_)) => Err(format!(
                    "`{}` is not the file its deploy record names (another hash): its lines are counted as new",
                    reader.url(&key)
                )),
                Ok(None) => Ok(None),
                Err(e) => Err(super::first_line(&e)),
            };
            out.insert(path.clone(), old);
        }
        out
    }
}

/// A deployed file as read from the bundle: its bytes, `None` when the bundle lacks it, or
/// why it could not be read.
type OldFile = std::result::Result<Option<Vec<u8>>, String>;

/// The impact of a pipeline the candidate renders as deployed: unchanged, with the notices of
/// its deploy (the same rules decide on `today`; a warning's day count is today's).
fn unchanged(record: &DeployedRecord, today: Option<Date>) -> Impact {
    let mut impact = Impact::bare(&record.pipeline, Outcome::Unchanged, String::new());
    impact.team = record.team.clone();
    impact.repository = record.repository.clone();
    impact.same_inputs = true;
    impact.notices = record
        .notices
        .iter()
        .map(|n| on_day(n, today).to_string())
        .collect();
    impact
}

/// A recorded notice as it reads on `today`: a warning's "(in N days)" counted from today.
pub fn on_day(notice: &Notice, today: Option<Date>) -> Notice {
    let mut n = notice.clone();
    let Some(today) = today else { return n };
    let from = format!("; this is an error from {} (", n.until);
    if n.kind == NoticeKind::Warning
        && let Some(at) = n.message.rfind(&from)
        && n.message.ends_with(')')
    {
        n.message.truncate(at + from.len());
        match today.days_until(n.until) {
            1 => n.message.push_str("tomorrow)"),
            d => n.message.push_str(&format!("in {d} days)")),
        }
    }
    n
}

/// Counts per outcome and identical changes grouped; a few example pipelines per group.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Pipelines per outcome.
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Changed pipelines per identical change.
    pub groups: BTreeMap<String, Group>,
    /// Unchanged pipelines known from their input digest, not rendered.
    pub same_inputs: usize,
    /// Of those, the pipelines decided from the bucket's listing, their records not read.
    pub from_listing: usize,
    /// Deploy records read (set by the caller from [`Planner::records_read`]).
    pub records_read: usize,
    /// Objects of bundles read to diff changed files (set by the caller from
    /// [`Planner::bundle_reads`]).
    pub bundle_reads: usize,
}

/// Pipelines sharing one change.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Group {
    /// How many.
    pub count: usize,
    /// The first few (in name order).
    pub examples: Vec<String>,
}

/// How many example pipelines a group keeps.
const EXAMPLES: usize = 3;

impl Summary {
    /// Counts one pipeline.
    pub fn add(&mut self, i: &Impact) {
        *self.outcomes.entry(i.outcome).or_default() += 1;
        self.same_inputs += usize::from(i.same_inputs);
        self.from_listing += usize::from(i.from_listing);
        if i.outcome == Outcome::Changed {
            let g = self.groups.entry(i.signature()).or_default();
            g.count += 1;
            if g.examples.len() < EXAMPLES {
                g.examples.push(i.pipeline.clone());
            }
        }
    }

    /// Pipelines with an outcome.
    pub fn count(&self, o: Outcome) -> usize {
        self.outcomes.get(&o).copied().unwrap_or_default()
    }

    /// True when anything would change or break.
    pub fn differs(&self) -> bool {
        self.count(Outcome::Changed) + self.count(Outcome::Invalid) > 0
    }
}

/// One pipeline's impact as text (nothing for an unchanged one).
pub fn impact_text(i: &Impact) -> Option<String> {
    let head = match i.outcome {
        Outcome::Unchanged => return None,
        Outcome::Changed => "changed",
        Outcome::Invalid => "invalid",
        Outcome::NoRecord => "no record",
        Outcome::Unreadable => "unreadable",
    };
    let mut s = format!("{head}: {}", i.pipeline);
    if !i.team.is_empty() {
        s.push_str(&format!(" (team `{}`, {})", i.team, i.repository));
    }
    for f in &i.files {
        s.push_str(&format!(
            "\n  {} {} +{} -{}",
            change_word(f.change),
            f.path,
            f.added,
            f.removed
        ));
    }
    for r in &i.resources {
        let replace = if r.replacement { " REPLACEMENT" } else { "" };
        s.push_str(&format!(
            "\n  {} resource {} ({}){replace}",
            change_word(r.change),
            r.logical_id,
            r.stack
        ));
    }
    for line in i.diagnostics.lines() {
        s.push_str(&format!("\n  | {line}"));
    }
    Some(s)
}

/// The summary as text.
pub fn summary_text(s: &Summary) -> String {
    let same = if s.same_inputs > 0 {
        let listed = if s.from_listing > 0 {
            format!(", {} of them known from the listing alone", s.from_listing)
        } else {
            String::new()
        };
        format!(
            " ({} with the inputs deployed, not rendered{listed})",
            s.same_inputs
        )
    } else {
        String::new()
    };
    let mut out = format!(
        "fleet plan: {} unchanged{same}, {} changed, {} invalid, {} without a record, {} unreadable",
        s.count(Outcome::Unchanged),
        s.count(Outcome::Changed),
        s.count(Outcome::Invalid),
        s.count(Outcome::NoRecord),
        s.count(Outcome::Unreadable),
    );
    let mut groups: Vec<(&String, &Group)> = s.groups.iter().collect();
    groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    for (sig, g) in groups {
        let more = g.count.saturating_sub(g.examples.len());
        let more = if more > 0 {
            format!(", and {more} more")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\n  {} pipeline{}: {sig} (e.g. {}{more})",
            g.count,
            if g.count == 1 { "" } else { "s" },
            g.examples.join(", ")
        ));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    // The line counts by their definition: a line diff, every changed line counted.
    use crate::fleet::lines::tests::by_line_diff as counted_by_line;

    /// Hands `n` jobs to `pool` at once; job `failing` panics. Each job's answer, in order:
    /// its number and the name of the thread it ran on, or the error.
    async fn run_jobs(
        pool: RenderPool,
        n: usize,
        failing: usize,
    ) -> Vec<std::result::Result<(usize, Option<String>), String>> {
        let pool = Arc::new(pool);
        let jobs: Vec<_> = (0..n)
            .map(|i| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    pool.run(move || {
                        assert!(i != failing, "job {i} fails");
                        (i, std::thread::current().name().map(str::to_owned))
                    })
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for job in jobs {
            out.push(job.await.expect("task"));
        }
        out
    }

    /// The render threads answer every job, in any number, with its own result, on the
    /// plan's own threads; a job that panics is an error for its pipeline alone (the thread
    /// goes on with the next).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn render_threads_answer_every_job_and_survive_a_panic() {
        let pool = RenderPool::new(2);
        assert_eq!(pool.threads, 2);
        let mut threads = std::collections::BTreeSet::new();
        for (i, answer) in run_jobs(pool, 64, 7).await.into_iter().enumerate() {
            match answer {
                Ok((n, name)) => {
                    assert_eq!(n, i);
                    threads.insert(name.expect("a named thread"));
                }
                Err(e) => {
                    assert_eq!(i, 7);
                    assert!(e.contains("job 7 fails"), "{e}");
                }
            }
        }
        assert!(
            !threads.is_empty() && threads.iter().all(|t| t.starts_with("pipeforge-render-")),
            "{threads:?}"
        );
    }

    /// When the system starts no render thread, every render runs on tokio's blocking pool
    /// instead: each job still answers, and a job that panics is still an error for its
    /// pipeline alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_render_threads_renders_run_on_the_blocking_pool() {
        let pool = RenderPool {
            jobs: std::sync::mpsc::channel().0,
            threads: 0,
        };
        for (i, answer) in run_jobs(pool, 16, 3).await.into_iter().enumerate() {
            match answer {
                Ok((n, name)) => {
                    assert_eq!(n, i);
                    assert!(
                        !name.unwrap_or_default().starts_with("pipeforge-render-"),
                        "job {i} ran on a render thread"
                    );
                }
                Err(e) => {
                    assert_eq!(i, 3, "{e}");
                    assert!(e.contains("panic"), "{e}");
                }
            }
        }
    }

    #[test]
    fn resource_changes_flag_replacements() {
        let old = r#"{"Resources":{"A":{"Type":"AWS::CodeBuild::Project","Properties":{"Name":"x","TimeoutInMinutes":5}},"B":{"Type":"T"},"C":{"Type":"T"}}}"#;
        let new = r#"{"Resources":{"A":{"Type":"AWS::CodeBuild::Project","Properties":{"Name":"y","TimeoutInMinutes":5}},"B":{"Type":"T","Properties":{"X":1}},"D":{"Type":"T"}}}"#;
        let c = resource_changes("stacks/pipeline.json", old, new);
        let got: Vec<(&str, Change, bool)> = c
            .iter()
            .map(|r| (r.logical_id.as_str(), r.change, r.replacement))
            .collect();
        assert_eq!(
            got,
            [
                ("A", Change::Modified, true),
                ("B", Change::Modified, false),
                ("D", Change::Added, false),
                ("C", Change::Removed, false),
            ]
        );
    }

    /// A new file, a file gone and a deployed version that could not be read are counted
    /// without a diff, as the diff counts them.
    #[test]
    fn one_sided_line_counts_are_the_diffs() {
        for text in ["", "a", "a\n", "a\nb", "a\nb\n", "\n\n", "a\n\nb"] {
            for (old, new) in [
                (None, Some(text)),
                (Some(text), None),
                (Some(""), Some(text)),
            ] {
                assert_eq!(
                    diffed(old, new),
                    counted_by_line(old.unwrap_or_default(), new.unwrap_or_default()),
                    "{old:?} -> {new:?}"
                );
            }
        }
    }

    /// The line counts [`diff_file`] gives a modified file from `old` to `new`.
    fn diffed(old: Option<&str>, new: Option<&str>) -> (usize, usize) {
        let mut impact = Impact::bare("p", Outcome::Changed, String::new());
        impact.files.push(FileChange {
            path: "buildspecs/x.yml".to_owned(),
            change: Change::Modified,
            added: 9,
            removed: 9,
        });
        diff_file(
            &mut impact,
            "buildspecs/x.yml",
            old.map(str::as_bytes),
            new.map(str::as_bytes),
        );
        (impact.files[0].added, impact.files[0].removed)
    }

    /// [`resource_changes`] by its definition: the `Resources` objects copied out, every
    /// `Properties` object copied for the name check.
    fn resource_changes_copied(stack: &str, old: &str, new: &str) -> Vec<ResourceChange> {
        use serde_json::Value;
        let resources = |t: &str| -> BTreeMap<String, Value> {
            serde_json::from_str::<Value>(t)
                .ok()
                .and_then(|v| v.get("Resources")?.as_object().cloned())
                .map(|m| m.into_iter().collect())
                .unwrap_or_default()
        };
        let replaces = |old: &Value, new: &Value| {
            if old.get("Type") != new.get("Type") {
                return true;
            }
            let props = |v: &Value| v.get("Properties").and_then(|p| p.as_object()).cloned();
            let (o, n) = (
                props(old).unwrap_or_default(),
                props(new).unwrap_or_default(),
            );
            o.keys()
                .chain(n.keys())
                .filter(|k| k.ends_with("Name"))
                .any(|k| o.get(k) != n.get(k))
        };
        let (old, new) = (resources(old), resources(new));
        let mut out = Vec::new();
        for (id, n) in &new {
            let (change, replacement) = match old.get(id) {
                None => (Change::Added, false),
                Some(o) if o != n => (Change::Modified, replaces(o, n)),
                Some(_) => continue,
            };
            out.push(ResourceChange {
                stack: stack.to_owned(),
                logical_id: id.clone(),
                change,
                replacement,
            });
        }
        for id in old.keys().filter(|id| !new.contains_key(*id)) {
            out.push(ResourceChange {
                stack: stack.to_owned(),
                logical_id: id.clone(),
                change: Change::Removed,
                replacement: false,
            });
        }
        out
    }

    /// A generated resource: logical id, type, properties as (key, value).
    type GenResource = (u8, u8, Vec<(u8, u8)>);

    /// A stack template of `resources`, written as text: a property's value is one of a few
    /// JSON texts, among them the same value written twice another way (an escape, another
    /// key order) and values that differ only in a number's form (`1`, `1.0`), inside arrays
    /// and objects too.
    fn stack_text(resources: &[GenResource]) -> String {
        const KEYS: [&str; 4] = ["Name", "RoleName", "Timeout", "Tags"];
        const VALUES: [&str; 8] = [
            "1",
            "1.0",
            r#""A""#,
            r#""\u0041""#,
            r#"[1, {"a": "x"}]"#,
            r#"[1, {"a": "\u0078"}]"#,
            r#"{"b": [1], "a": null}"#,
            r#"{"a": null,"b":[1.0]}"#,
        ];
        let resources: Vec<String> = resources
            .iter()
            .map(|(id, ty, props)| {
                let props: Vec<String> = props
                    .iter()
                    .map(|(k, v)| {
                        let key = KEYS[usize::from(*k) % KEYS.len()];
                        format!("\"{key}\": {}", VALUES[usize::from(*v) % VALUES.len()])
                    })
                    .collect();
                let props = if props.is_empty() {
                    String::new()
                } else {
                    format!(", \"Properties\": {{{}}}", props.join(", "))
                };
                format!("\"R{id}\": {{\"Type\": \"T{ty}\"{props}}}")
            })
            .collect();
        format!(
            "{{\"Resources\": {{{}}}, \"Outputs\": {{}}}}",
            resources.join(", ")
        )
    }

    proptest::proptest! {
        #[test]
        fn line_counts_per_operation_are_the_counts_per_line(
            old in proptest::collection::vec(0u8..6, 0..40),
            new in proptest::collection::vec(0u8..6, 0..40),
            trailing_old in proptest::bool::ANY,
            trailing_new in proptest::bool::ANY,
        ) {
            let text = |lines: &[u8], trailing: bool| {
                let mut t = lines.iter().map(|l| format!("line {l}")).collect::<Vec<_>>().join("\n");
                if trailing {
                    t.push('\n');
                }
                t
            };
            let (old, new) = (text(&old, trailing_old), text(&new, trailing_new));
            proptest::prop_assert_eq!(diffed(Some(&old), Some(&new)), counted_by_line(&old, &new));
        }

        #[test]
        fn resource_changes_are_those_of_the_copying_definition(
            old in proptest::collection::vec(
                (0u8..6, 0u8..2, proptest::collection::vec((0u8..4, 0u8..8), 0..4)), 0..6),
            new in proptest::collection::vec(
                (0u8..6, 0u8..2, proptest::collection::vec((0u8..4, 0u8..8), 0..4)), 0..6),
        ) {
            let (old, new) = (stack_text(&old), stack_text(&new));
            proptest::prop_assert_eq!(
                resource_changes("stacks/s.json", &old, &new),
                resource_changes_copied("stacks/s.json", &old, &new)
            );
            // The deployed stack in another layout (pretty, as pipeforge writes stacks): the
            // same values are no change, whatever their text.
            let pretty = serde_json::to_string_pretty(
                &serde_json::from_str::<serde_json::Value>(&old).unwrap_or_default(),
            )
            .unwrap_or_default();
            proptest::prop_assert_eq!(
                resource_changes("stacks/s.json", &pretty, &new),
                resource_changes_copied("stacks/s.json", &old, &new)
            );
            // Not JSON, or no `Resources` object: nothing, in both.
            for bad in ["", "[1]", "{\"Resources\": 3}", "{"] {
                proptest::prop_assert_eq!(
                    resource_changes("stacks/s.json", bad, &new),
                    resource_changes_copied("stacks/s.json", bad, &new)
                );
            }
        }
    }

    #[test]
    fn identical_changes_group_and_keep_few_examples() {
        let mut s = Summary::default();
        for n in 0..5 {
            let mut i = Impact::bare(&format!("p{n}"), Outcome::Changed, String::new());
            i.files.push(FileChange {
                path: "buildspecs/lint.yml".to_owned(),
                change: Change::Modified,
                added: 2,
                removed: 0,
            });
            s.add(&i);
        }
        s.add(&Impact::bare("q", Outcome::Unchanged, String::new()));
        assert_eq!(s.count(Outcome::Changed), 5);
        assert!(s.differs());
        let text = summary_text(&s);
        assert!(
            text.contains("5 pipelines: `buildspecs/lint.yml` +2 -0 (e.g. p0, p1, p2, and 2 more)"),
            "{text}"
        );
    }
}
