//! Fleet operations over every deployed pipeline of the org: `fleet list` ([`list`]) and
//! `fleet plan` ([`plan`]), read from the deploy records (`pipelines/<name>/deployed.json`, see
//! [`crate::publish::record`]) in the org's source buckets, never from a checkout.
//!
//! Where the fleet lives is one function, [`sources`]: every tooling account of the org and its
//! source bucket (a pipeline's deploy record is in its placement's bucket; the home bucket also
//! holds every owner record, and a scan skips those of pipelines placed elsewhere). Every fleet
//! command walks it with [`scan`], which streams: it lists the bucket a page at a time and keeps
//! at most a window of pipelines in flight, in name order, so memory stays bounded whatever the
//! fleet size. `fleet plan` (and the plan of a rollout) walks it with [`index::plan_scan`],
//! which lists every object under `pipelines/` rather than the names alone, so the listing keys
//! next to the deploy records can decide pipelines without reading their records.

pub mod candidate;
pub mod drift;
pub mod index;
mod lines;
pub mod list;
pub mod plan;
pub mod rollout;
pub mod seed;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use crate::aws::{AwsContext, AwsFailure};
use crate::error::{Error, Result};
use crate::org::Org;
use crate::plan::RECORDS_PREFIX;
use crate::publish::record::{DEPLOYED_FILE, DeployedRecord, MAX_RECORD_BYTES};

/// How many pipelines a scan works on at once.
pub const WINDOW: usize = 16;

/// A place pipelines are deployed from: a tooling account and its source bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSource {
    /// The tooling account.
    pub account: String,
    /// Its region.
    pub region: String,
    /// The source bucket there.
    pub bucket: String,
    /// The home account of an org with several tooling accounts: its bucket holds the owner
    /// records of every pipeline, and a scan skips those placed in another account.
    pub home: bool,
}

/// Every tooling account of the org with its source bucket, the home one first: the fleet is
/// the union of their deploy records (each pipeline's is in the bucket of the account its owner
/// record places it in).
pub fn sources(org: &Org) -> Vec<FleetSource> {
    let mut out = vec![FleetSource {
        account: org.tooling.account.clone(),
        region: org.tooling.region.clone(),
        bucket: org.source.bucket.clone(),
        home: !org.tooling_accounts.is_empty(),
    }];
    out.extend(org.tooling_accounts.iter().map(|t| FleetSource {
        account: t.account.clone(),
        region: t.region.clone(),
        bucket: t.bucket.clone(),
        home: false,
    }));
    out
}

/// The deploy record of `pipeline` in whichever of `readers` holds it (the first record
/// found; else the first unreadable one; else missing).
pub async fn record_anywhere(readers: &[Reader], pipeline: &str) -> Entry {
    let mut first = None;
    for r in readers {
        match r.record(pipeline).await {
            Entry::Record(rec) => return Entry::Record(rec),
            e @ Entry::Unreadable { .. } if first.is_none() => first = Some(e),
            _ => {}
        }
    }
    first.unwrap_or_else(|| Entry::Missing {
        pipeline: pipeline.to_owned(),
    })
}

/// One pipeline found in a source bucket.
#[derive(Clone, Debug)]
pub enum Entry {
    /// Its deploy record.
    Record(Box<DeployedRecord>),
    /// A pipeline with records (owner, lock) but no deploy record: deployed by a pipeforge
    /// older than deploy records, or never deployed successfully.
    Missing {
        /// The pipeline.
        pipeline: String,
    },
    /// A record that could not be read or parsed.
    Unreadable {
        /// The pipeline.
        pipeline: String,
        /// Why.
        error: String,
    },
}

impl Entry {
    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        match self {
            Entry::Record(r) => &r.pipeline,
            Entry::Missing { pipeline } | Entry::Unreadable { pipeline, .. } => pipeline,
        }
    }
}

/// Reads objects of one source bucket.
#[derive(Clone, Debug)]
pub struct Reader {
    s3: aws_sdk_s3::Client,
    bucket: String,
    /// The home account's id, when the org has several tooling accounts.
    home_of_several: Option<String>,
    /// Another tooling account than the home one: its `pipelines/` holds deploy records only.
    other_tooling: bool,
}

impl Reader {
    /// A reader of `bucket` through `s3`.
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str) -> Reader {
        Reader {
            s3,
            bucket: bucket.to_owned(),
            home_of_several: None,
            other_tooling: false,
        }
    }

    /// True when `pipeline` has no deploy record in this bucket because it lives in another
    /// tooling account: in the home bucket of an org with several, its owner record places it
    /// elsewhere; in another tooling account's bucket, there is no deploy record at all (the
    /// owner records are in the home bucket; a pipeline moved away leaves nothing here).
    pub async fn elsewhere(&self, pipeline: &str) -> bool {
        if self.home_of_several.is_none() && !self.other_tooling {
            return false;
        }
        let deployed = format!("{RECORDS_PREFIX}{pipeline}/{DEPLOYED_FILE}");
        if !matches!(self.object(&deployed, MAX_RECORD_BYTES).await, Ok(None)) {
            return false;
        }
        let Some(home) = &self.home_of_several else {
            return true;
        };
        let owner = format!("{RECORDS_PREFIX}{pipeline}/owner.json");
        match self.object(&owner, MAX_RECORD_BYTES).await {
            Ok(Some(bytes)) => crate::owner::OwnerRecord::parse(&bytes, &self.url(&owner))
                .ok()
                .and_then(|r| r.placement)
                .is_some_and(|p| &p.account != home),
            _ => false,
        }
    }

    /// The reader of `source`, through the org's bootstrap role in its account.
    pub async fn of(aws: &AwsContext, org: &Org, source: &FleetSource) -> Result<Reader> {
        let conf = aws
            .account(
                &source.account,
                &source.region,
                &org.deploy.bootstrap_role,
                "pipeforge-fleet",
            )
            .await?;
        let mut r = Reader::new(aws.s3(&conf, &source.region), &source.bucket);
        if source.home {
            r.home_of_several = Some(source.account.clone());
        }
        r.other_tooling = source.account != org.tooling.account;
        Ok(r)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/key`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// An object's bytes, or `None` when there is none. An object over `limit` bytes is an
    /// error, and not read further than that ([`crate::aws::read_body`]).
    pub async fn object(&self, key: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        Ok(self.object_tagged(key, limit).await?.map(|(_, b)| b))
    }

    /// An object's ETag (without quotes) and bytes, or `None` when there is none; over `limit`
    /// bytes is an error.
    pub async fn object_tagged(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(String, Vec<u8>)>> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let etag = o.e_tag().unwrap_or_default().trim_matches('"').to_owned();
                let declared = o.content_length();
                crate::aws::read_body(o.body, declared, limit)
                    .await
                    .map(|b| Some((etag, b)))
                    .map_err(|e| e.error(&self.url(key), ""))
            }
            Err(e) => {
                let f = AwsFailure::of(&e);
                if f.is_not_found() {
                    Ok(None)
                } else {
                    Err(self.failure(&format!("read `{}`", self.url(key)), &f))
                }
            }
        }
    }

    /// The deploy record of `pipeline`.
    pub async fn record(&self, pipeline: &str) -> Entry {
        self.record_tagged(pipeline).await.0
    }

    /// The deploy record of `pipeline` and the ETag it was read with.
    pub async fn record_tagged(&self, pipeline: &str) -> (Entry, Option<String>) {
        let key = format!("{RECORDS_PREFIX}{pipeline}/{DEPLOYED_FILE}");
        let pipeline = pipeline.to_owned();
        match self.object_tagged(&key, MAX_RECORD_BYTES).await {
            Ok(None) => (Entry::Missing { pipeline }, None),
            Ok(Some((etag, bytes))) => match DeployedRecord::parse(&bytes, &self.url(&key)) {
                Ok(r) => (Entry::Record(Box::new(r)), Some(etag)),
                Err(e) => (
                    Entry::Unreadable {
                        pipeline,
                        error: first_line(&e),
                    },
                    Some(etag),
                ),
            },
            Err(e) => (
                Entry::Unreadable {
                    pipeline,
                    error: first_line(&e),
                },
                None,
            ),
        }
    }

    /// One page of the objects under `pipelines/` (narrowed by the literal start of `only`),
    /// each key with its ETag (without quotes), and the next page's token.
    pub async fn objects(
        &self,
        only: Option<&str>,
        token: Option<String>,
    ) -> Result<(Vec<(String, String)>, Option<String>)> {
        let out = self.list(only, token, None).await?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                let etag = o.e_tag().unwrap_or_default().trim_matches('"');
                Some((o.key()?.to_owned(), etag.to_owned()))
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((objects, next))
    }

    /// One listing call under `pipelines/`, narrowed by the literal start of `only` (before its
    /// first `*`), grouped by `delimiter` when given.
    async fn list(
        &self,
        only: Option<&str>,
        token: Option<String>,
        delimiter: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output> {
        let literal = only.map_or("", |p| p.split('*').next().unwrap_or_default());
        self.s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{RECORDS_PREFIX}{literal}"))
            .set_delimiter(delimiter.map(str::to_owned))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| {
                self.failure(
                    &format!("list `{}`", self.url(RECORDS_PREFIX)),
                    &AwsFailure::of(&e),
                )
            })
    }

    /// One page of pipeline names matching `only` (after `token`), and the next page's token.
    async fn page(
        &self,
        only: Option<&str>,
        token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let out = self.list(only, token, Some("/")).await?;
        let names = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .filter_map(|p| p.strip_prefix(RECORDS_PREFIX)?.strip_suffix('/'))
            .filter(|n| !n.is_empty() && only.is_none_or(|p| crate::org::glob_match(p, n)))
            .map(str::to_owned)
            .collect();
        let next = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok((names, next))
    }

    fn failure(&self, what: &str, f: &AwsFailure) -> Error {
        Error::Aws {
            action: what.to_owned(),
            code: f.code.clone(),
            message: f.message.clone(),
            help: format!(
                "the fleet reads the deploy records of bucket `{}` with the org's bootstrap role in the tooling account: check the credentials and `s3:ListBucket`/`s3:GetObject` on it",
                self.bucket
            ),
        }
    }
}

/// The first line of an error, for a per-pipeline report.
pub fn first_line(e: &Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// What a fleet command does with each pipeline: `visit` runs up to [`WINDOW`] at a time.
pub trait Visit: Send + Sync + 'static {
    /// Its result per pipeline.
    type Out: Send + 'static;
    /// Works on `pipeline` of the bucket `reader` reads.
    fn visit(
        self: Arc<Self>,
        reader: Reader,
        pipeline: String,
    ) -> impl Future<Output = Self::Out> + Send + 'static;
}

/// Which pipelines a scan visits and how many at once.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only pipelines whose name matches this pattern (`*` matches any run of characters).
    pub only: Option<String>,
    /// How many pipelines are worked on at once ([`WINDOW`] when 0).
    pub window: usize,
}

/// Walks every pipeline of every source of `org` in `scope`: `visitor` works on a window of
/// pipelines at once and `each` receives the results in name order, as they complete. Returns
/// how many pipelines were visited. Nothing is held but the window and the current listing page.
pub async fn scan<V: Visit>(
    aws: &AwsContext,
    org: &Org,
    visitor: Arc<V>,
    scope: &Scope,
    mut each: impl FnMut(V::Out) -> Result<()>,
) -> Result<usize> {
    let mut count = 0;
    for source in sources(org) {
        let reader = Reader::of(aws, org, &source).await?;
        count += scan_reader(&reader, &visitor, scope, &mut each).await?;
    }
    Ok(count)
}

/// [`scan`] of one bucket.
pub async fn scan_reader<V: Visit>(
    reader: &Reader,
    visitor: &Arc<V>,
    scope: &Scope,
    each: &mut impl FnMut(V::Out) -> Result<()>,
) -> Result<usize> {
    let window = if scope.window == 0 {
        WINDOW
    } else {
        scope.window
    };
    let mut running = VecDeque::new();
    let mut token = None;
    let mut count = 0;
    loop {
        let (names, next) = reader.page(scope.only.as_deref(), token).await?;
        for name in names {
            if running.len() >= window {
                take(&mut running, each).await?;
            }
            let (visitor, reader) = (Arc::clone(visitor), reader.clone());
            running.push_back(tokio::spawn(async move {
                if reader.elsewhere(&name).await {
                    return None;
                }
                Some(visitor.visit(reader, name).await)
            }));
            count += 1;
        }
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    while !running.is_empty() {
        take(&mut running, each).await?;
    }
    Ok(count)
}

async fn take<T: Send + 'static>(
    running: &mut VecDeque<tokio::task::JoinHandle<Option<T>>>,
    each: &mut impl FnMut(T) -> Result<()>,
) -> Result<()> {
    if let Some(h) = running.pop_front()
        && let Some(out) = joined(h.await)?
    {
        each(out)?;
    }
    Ok(())
}

/// A fleet task's result, or the error of a task that failed.
fn joined<T>(r: std::result::Result<T, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| {
        Error::other(
            format!("a fleet task failed: {e}"),
            "run the command again; this is a bug if it persists",
        )
    })
}

/// Reads deploy records only (`fleet list`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Records;

impl Visit for Records {
    type Out = Entry;

    async fn visit(self: Arc<Self>, reader: Reader, pipeline: String) -> Entry {
        reader.record(&pipeline).await
    }
}
