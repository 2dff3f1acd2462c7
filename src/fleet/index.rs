//! The scan of `fleet plan`: the bucket's listing decides what a candidate cannot change, so an
//! unchanged pipeline costs no read of its deploy record.
//!
//! Every deploy writes, after its record, an empty listing key
//! `pipelines/<name>/set/<set hex>.<record ETag>` ([`crate::publish::record::listing_key`]):
//! the set's side of the record's input digest ([`crate::publish::digest`]) — renderer, org
//! policy and day, language entry, templates, the set's label — and the ETag S3 gave the
//! record. [`plan_scan`] lists every object under `pipelines/` (one call per 1,000 keys) instead
//! of the pipeline names alone, and sees for each pipeline its record's ETag and its keys. A
//! pipeline with exactly one key, naming the ETag its record has now, belongs to that key's
//! **group**. The first pipeline of a group is read (its record must name the same set digest
//! and come back with the same ETag) and tells the group's language, gates and stack templates,
//! from which the candidate's set digest for the group is computed once. When it is the key's,
//! every pipeline of the group is reported unchanged without a read: the pipeline's side of its
//! digest (manifest, repository, name, team, tooling account) is its record's own content, which
//! a plan never changes, so the candidate gives it its recorded full digest. Every other
//! pipeline — another set digest, no key (deployed before listing keys, placed elsewhere than
//! the policy places it first, or with notices to report), two keys, a key naming another ETag,
//! a group whose first record did not match — takes the path of [`Planner::plan_one`]: its
//! record is read, its full digest compared, and it is rendered when they differ.
//!
//! Who can write a key: the deployers, exactly as the record (the same rights on
//! `pipelines/*`). A forged key can only make the plan report a pipeline unchanged, as a lying
//! digest in the record can; it never causes a deploy. A key left behind (a deploy that stopped
//! between the record and the key, or lost its lock) names an older ETag and is ignored.
//!
//! Memory: the window of pipelines in flight, one listing page, and one entry per set digest
//! (at most [`MAX_GROUPS`]; further groups take the record path).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::plan::{Impact, Planner};
use super::{Entry, Reader, Scope, joined, sources};
use crate::aws::AwsContext;
use crate::error::Result;
use crate::org::Org;
use crate::plan::RECORDS_PREFIX;
use crate::publish::record::{DEPLOYED_FILE, ListingKey, SET_DIR};

/// How many set digests a scan keeps a decision for; pipelines of further groups are read.
pub const MAX_GROUPS: usize = 4096;

/// What the listing shows of one pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// The pipeline.
    pub pipeline: String,
    /// The ETag of its deploy record in this bucket, when it has one.
    pub record: Option<String>,
    /// Its listing keys (`set/…`).
    pub keys: Vec<String>,
}

impl Listed {
    /// Nothing listed yet of `pipeline`.
    pub fn new(pipeline: &str) -> Listed {
        Listed {
            pipeline: pipeline.to_owned(),
            ..Listed::default()
        }
    }

    /// Notes one object of the pipeline: `rest` is its key after `pipelines/<name>/`.
    pub fn add(&mut self, rest: &str, etag: &str) {
        if rest == DEPLOYED_FILE {
            self.record = Some(etag.trim_matches('"').to_owned());
        } else if rest.starts_with(SET_DIR) {
            self.keys.push(rest.to_owned());
        }
    }

    /// The listing key that describes the record as it is now: the only key, naming the
    /// record's ETag. `None` for anything else.
    pub fn key(&self) -> Option<ListingKey> {
        let [only] = self.keys.as_slice() else {
            return None;
        };
        let key = ListingKey::parse(only)?;
        (self.record.as_ref() == Some(&key.etag)).then_some(key)
    }
}

/// What the first record of a group decided for all of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// The candidate gives the group's set digest again: unchanged, not read.
    Unchanged,
    /// Anything else: each pipeline is read.
    Read,
}

/// A pipeline in flight: decided already, or a task.
enum Slot {
    Ready(Impact),
    Task(tokio::task::JoinHandle<Option<Impact>>),
}

/// [`super::scan`] for `fleet plan`: every pipeline of every source of `org` in `scope`, each
/// decided from the listing when its group allows, else planned by `planner` from its record;
/// `each` receives the impacts in name order. Returns how many pipelines were visited.
pub async fn plan_scan(
    aws: &AwsContext,
    org: &Org,
    planner: &Arc<Planner>,
    scope: &Scope,
    mut each: impl FnMut(Impact) -> Result<()>,
) -> Result<usize> {
    let mut count = 0;
    for source in sources(org) {
        let reader = Reader::of(aws, org, &source).await?;
        count += plan_bucket(&reader, planner, scope, &mut each).await?;
    }
    Ok(count)
}

/// [`plan_scan`] of one bucket.
pub async fn plan_bucket(
    reader: &Reader,
    planner: &Arc<Planner>,
    scope: &Scope,
    each: &mut impl FnMut(Impact) -> Result<()>,
) -> Result<usize> {
    let mut scan = Scan {
        reader: reader.clone(),
        planner: Arc::clone(planner),
        window: if scope.window == 0 {
            super::plan::PLAN_WINDOW
        } else {
            scope.window
        },
        running: VecDeque::new(),
        groups: BTreeMap::new(),
        count: 0,
    };
    let only = scope.only.as_deref();
    let mut current: Option<Listed> = None;
    let mut token = None;
    loop {
        let (objects, next) = reader.objects(only, token).await?;
        for (key, etag) in objects {
            let Some((name, rest)) = key
                .strip_prefix(RECORDS_PREFIX)
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            if name.is_empty() || !only.is_none_or(|p| crate::org::glob_match(p, name)) {
                continue;
            }
            if current.as_ref().is_none_or(|c| c.pipeline != name)
                && let Some(done) = current.replace(Listed::new(name))
            {
                scan.push(done, each).await?;
            }
            if let Some(c) = current.as_mut() {
                c.add(rest, &etag);
            }
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if let Some(done) = current {
        scan.push(done, each).await?;
    }
    while !scan.running.is_empty() {
        scan.take(each).await?;
    }
    Ok(scan.count)
}

struct Scan {
    reader: Reader,
    planner: Arc<Planner>,
    window: usize,
    running: VecDeque<Slot>,
    groups: BTreeMap<String, Group>,
    count: usize,
}

impl Scan {
    /// Starts (or decides) one pipeline, after handing on the oldest when the window is full.
    async fn push(
        &mut self,
        listed: Listed,
        each: &mut impl FnMut(Impact) -> Result<()>,
    ) -> Result<()> {
        if self.running.len() >= self.window {
            self.take(each).await?;
        }
        self.count += 1;
        let slot = match listed.key() {
            Some(key) => self.by_group(listed.pipeline, key).await,
            None => self.read(listed.pipeline, listed.record.is_none()),
        };
        self.running.push_back(slot);
        Ok(())
    }

    /// A pipeline whose listing key names its record: its group decides, the first of a group
    /// is read to decide it.
    async fn by_group(&mut self, pipeline: String, key: ListingKey) -> Slot {
        match self.groups.get(&key.set) {
            Some(Group::Unchanged) => return Slot::Ready(Planner::listed_unchanged(&pipeline)),
            Some(Group::Read) => return self.read(pipeline, false),
            None if self.groups.len() >= MAX_GROUPS => return self.read(pipeline, false),
            None => {}
        }
        let (entry, etag) = self.planner.read(&self.reader, &pipeline).await;
        let group = match &entry {
            Entry::Record(r)
                if etag.as_ref() == Some(&key.etag)
                    && r.inputs.as_ref().and_then(|i| i.set.as_ref()) == Some(&key.set)
                    && self.planner.candidate_set(r).as_ref() == Some(&key.set) =>
            {
                Group::Unchanged
            }
            _ => Group::Read,
        };
        self.groups.insert(key.set, group);
        let (planner, reader) = (Arc::clone(&self.planner), self.reader.clone());
        Slot::Task(tokio::spawn(async move {
            Some(planner.plan_entry(&reader, entry).await)
        }))
    }

    /// A pipeline planned from its record (a pipeline without a record here may live in
    /// another tooling account, as in [`super::scan`]).
    fn read(&self, pipeline: String, maybe_elsewhere: bool) -> Slot {
        let (planner, reader) = (Arc::clone(&self.planner), self.reader.clone());
        Slot::Task(tokio::spawn(async move {
            if maybe_elsewhere && reader.elsewhere(&pipeline).await {
                return None;
            }
            Some(planner.plan_one(&reader, &pipeline).await)
        }))
    }

    /// Hands the oldest pipeline's impact to `each` (waiting for it).
    async fn take(&mut self, each: &mut impl FnMut(Impact) -> Result<()>) -> Result<()> {
        match self.running.pop_front() {
            Some(Slot::Ready(i)) => each(i),
            Some(Slot::Task(h)) => match joined(h.await)? {
                Some(i) => each(i),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_one_key_naming_the_records_etag_decides() {
        let mut l = Listed::new("p");
        l.add("owner.json", "\"aa\"");
        assert_eq!(l.key(), None, "no record, no key");
        l.add(&format!("set/{SET}.abc1"), "\"e\"");
        assert_eq!(l.key(), None, "a key without a record");
        l.add("deployed.json", "\"abc1\"");
        assert_eq!(
            l.key(),
            Some(ListingKey {
                set: format!("sha256:{SET}"),
                etag: "abc1".to_owned()
            })
        );
        let mut stale = l.clone();
        stale.record = Some("abc2".to_owned());
        assert_eq!(stale.key(), None, "a key naming an older record");
        let mut two = l.clone();
        two.add(&format!("set/{SET}.abc2"), "\"e\"");
        assert_eq!(two.key(), None, "two keys");
        let mut odd = Listed::new("p");
        odd.add("deployed.json", "\"abc1\"");
        odd.add("set/xyz.abc1", "\"e\"");
        assert_eq!(odd.key(), None, "not a set digest");
    }
}
