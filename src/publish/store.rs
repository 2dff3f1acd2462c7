//! The org source bucket: the only place pipeforge writes to in S3.
//!
//! Layout under `<team>/<name>/` (what the team's pipeline runs):
//! - `bundle/<content-hash>/...` — the rendered files, then `deploy/<stack>.json` (the templates
//!   exactly as deployed), and `plan.json` last: its presence marks a complete bundle, which is
//!   never uploaded again (content-addressed, immutable);
//! - `source.zip` — the repository snapshot; uploading it starts the pipeline, so it is one
//!   atomic object, written last, and only when its content changed; its `pipeforge-commit`
//!   metadata is the pipeline's deployed commit (the webhook's replay rule reads it).
//!
//! Under `pipelines/<name>/` (what belongs to the pipeline whatever team claims it; the name
//! also names its stacks, so every deploy of one pipeline meets the same records):
//! - `deploy.lock` — held while a deploy, publish or transfer of the pipeline runs;
//! - `owner.json` — the pipeline's owner (see [`crate::owner`]), created with a conditional
//!   write and replaced only by a transfer, with a conditional write on the version it read;
//! - `deployed.json` — the deploy record, and `set/<set hex>.<record ETag>`, its listing key
//!   (see [`super::record`]), both written by every deploy, the key after the record.
//!
//! Every object is written with SSE-KMS under the org key (`source.kms_key`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde::{Deserialize, Serialize};

use super::progress::{Event, Progress};
use super::record::MAX_RECORD_BYTES;
use super::source::SourceZip;
use crate::aws::{AwsFailure, failure_error, s3_domain};
use crate::error::{Error, Result};
use crate::outputs::{Outputs, PLAN_FILE};

/// Object metadata key holding the SHA-256 of `source.zip`.
const SHA_METADATA: &str = "pipeforge-sha256";

/// Object metadata key holding the commit `source.zip` was taken at: the pipeline's deployed
/// commit, which the webhook compares merges with (an older merge never deploys).
const COMMIT_METADATA: &str = "pipeforge-commit";

/// The org source bucket, seen from one pipeline's prefix.
#[derive(Clone, Debug)]
pub struct SourceStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
    region: String,
    kms_key: String,
    prefix: String,
    records: String,
}

/// What an upload of a bundle did.
#[derive(Clone, Debug, Serialize)]
pub struct BundleUpload {
    /// `s3://bucket/<team>/<name>/bundle/<hash>/`.
    pub url: String,
    /// Key prefix of the bundle.
    pub prefix: String,
    /// Objects written (0 when the bundle was complete already).
    pub uploaded: usize,
    /// Bytes written.
    pub bytes: u64,
    /// The bundle's archive ([`super::archive`]) is beside it: written now, or found there.
    pub archive: bool,
}

/// What an upload of `source.zip` did.
#[derive(Clone, Debug, Serialize)]
pub struct SourceUpload {
    /// `s3://bucket/<team>/<name>/source.zip`.
    pub url: String,
    /// False when the object already had this content (the pipeline was not started).
    pub uploaded: bool,
    /// The object version (versioned buckets), which names the pipeline execution's source.
    pub version_id: Option<String>,
    /// The pipeline execution pipeforge started after the upload (none when nothing was
    /// uploaded, or when creating the pipeline started it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
}

/// The body of `deploy.lock`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LockBody {
    holder: String,
    token: String,
    started: u64,
    lease_seconds: u64,
}

/// A held `deploy.lock`; [`DeployLock::release`] gives it back. While held, it is renewed in
/// the background; a lock nobody renews for its lease is taken over by the next deploy.
#[derive(Debug)]
pub struct DeployLock {
    store: SourceStore,
    key: String,
    holder: String,
    token: String,
    lost: Arc<AtomicBool>,
    renew: Option<tokio::task::JoinHandle<()>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A token unique enough to tell two lock holders (or two change sets) apart: `bytes` bytes of
/// a hash of the process id, the time and a stack address, in hex.
pub(crate) fn unique_token(bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(std::process::id().to_be_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_be_bytes(),
    );
    let local = 0u8;
    h.update(format!("{:p}", &local).as_bytes());
    crate::outputs::hex(&h.finalize()[..bytes.min(32)])
}

impl SourceStore {
    /// The store of one pipeline: `bucket` in `region`, its bundle and snapshot under `prefix`
    /// (`<team>/<name>/`), its lock and owner record under `records` (`pipelines/<name>/`).
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: &str,
        region: &str,
        kms_key: &str,
        prefix: &str,
        records: &str,
    ) -> SourceStore {
        SourceStore {
            s3,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            kms_key: kms_key.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned() + "/",
            records: records.trim_end_matches('/').to_owned() + "/",
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/key`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The `https://BUCKET.s3.REGION.amazonaws.com/KEY` URL CloudFormation reads a template from.
    pub fn https_url(&self, key: &str) -> String {
        format!(
            "https://{}.s3.{}.{}/{key}",
            self.bucket,
            self.region,
            s3_domain(&self.region)
        )
    }

    /// Key of the repository snapshot.
    pub fn source_key(&self) -> String {
        format!("{}source.zip", self.prefix)
    }

    /// Key prefix of a bundle (`content_hash` is `sha256:<hex>`).
    pub fn bundle_prefix(&self, content_hash: &str) -> String {
        let hex = content_hash.strip_prefix("sha256:").unwrap_or(content_hash);
        format!("{}bundle/{hex}/", self.prefix)
    }

    fn denied_help(&self, what: &str) -> String {
        format!(
            "the caller needs {what} on `arn:aws:s3:::{b}/{}*` and `arn:aws:s3:::{b}/{}*`, and kms:GenerateDataKey/kms:Decrypt on the org key `{}` (org.yaml `source`)",
            self.prefix,
            self.records,
            self.kms_key,
            b = self.bucket
        )
    }

    /// The error of an S3 call that tried to `verb` the object (or prefix) `key`, `what` being
    /// the IAM action it needs.
    fn s3_error<E, R>(&self, verb: &str, key: &str, err: &SdkError<E, R>, what: &str) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
        SdkError<E, R>: std::error::Error + 'static,
    {
        self.error(
            format!("{verb} `{}`", self.url(key)),
            &AwsFailure::of(err),
            what,
        )
    }

    fn error(&self, action: String, f: &AwsFailure, what: &str) -> Error {
        let mut e = failure_error(action, f, &self.denied_help(what));
        if let Error::Aws { help, code, .. } = &mut e {
            match code.as_deref() {
                Some("NoSuchBucket") => {
                    *help = format!(
                        "the org source bucket `{}` does not exist in this account; create it with the org bootstrap, or fix `source.bucket` in org.yaml",
                        self.bucket
                    )
                }
                Some(c) if c.starts_with("KMS.") || c.contains("KMS") => {
                    *help = format!(
                        "the org key `{}` cannot be used for uploads: check that it exists in {} and that the caller may use it (org.yaml `source.kms_key`)",
                        self.kms_key, self.region
                    )
                }
                _ => {}
            }
        }
        e
    }

    /// Checks that the bucket exists and the caller may use it, before anything is uploaded.
    pub async fn check(&self) -> Result<()> {
        match self.s3.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = AwsFailure::of(&e);
                let action = format!("use the org source bucket `{}`", self.bucket);
                if f.is_not_found() {
                    Err(Error::Aws {
                        action,
                        code: Some("NoSuchBucket".to_owned()),
                        message: format!("bucket `{}` does not exist", self.bucket),
                        help: format!(
                            "create it with the org bootstrap (for a local server, `ci/local-aws start --org FILE`), or fix `source.bucket` in org.yaml (now `{}`)",
                            self.bucket
                        ),
                    })
                } else {
                    Err(self.error(action, &f, "s3:ListBucket"))
                }
            }
        }
    }

    /// True when `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = AwsFailure::of(&e);
                if f.is_not_found() {
                    Ok(false)
                } else {
                    Err(self.error(format!("read `{}`", self.url(key)), &f, "s3:GetObject"))
                }
            }
        }
    }

    fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(&self.kms_key)
            .body(ByteStream::from(bytes))
    }

    /// Uploads one object (SSE-KMS).
    pub async fn upload(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> Result<()> {
        self.put(key, bytes, content_type)
            .send()
            .await
            .map_err(|e| self.s3_error("upload", key, &e, "s3:PutObject"))?;
        Ok(())
    }

    /// Uploads a bundle under `bundle/<hash>/` unless it is complete already: every rendered file
    /// and every `extra` file (bundle-relative paths), then `plan.json` last.
    pub async fn upload_bundle(
        &self,
        outputs: &Outputs,
        content_hash: &str,
        extra: &[(String, Vec<u8>)],
        progress: &dyn Progress,
    ) -> Result<BundleUpload> {
        let prefix = self.bundle_prefix(content_hash);
        let marker = format!("{prefix}{PLAN_FILE}");
        let url = self.url(&prefix);
        let archive_key = super::archive::key(&prefix);
        if self.exists(&marker).await? {
            progress.event(&Event::UploadSkipped {
                url: url.clone(),
                reason: "bundle already complete".to_owned(),
            });
            // A bundle completed before archives existed gets its archive now.
            let (uploaded, bytes) = if self.exists(&archive_key).await? {
                (0, 0)
            } else {
                (
                    1,
                    self.upload_archive(&archive_key, outputs, progress).await?,
                )
            };
            return Ok(BundleUpload {
                url,
                prefix,
                uploaded,
                bytes,
                archive: true,
            });
        }
        let mut files: Vec<(String, Vec<u8>)> = outputs
            .iter()
            .filter(|(p, _)| *p != PLAN_FILE)
            .map(|(p, b)| (p.to_owned(), b.to_vec()))
            .collect();
        files.extend(extra.iter().cloned());
        let mut set = tokio::task::JoinSet::new();
        let mut uploaded = 0;
        let mut bytes = 0u64;
        let mut pending = files.into_iter();
        let mut first_error: Option<Error> = None;
        loop {
            while set.len() < 8 {
                let Some((path, data)) = pending.next() else {
                    break;
                };
                let store = self.clone();
                let key = format!("{prefix}{path}");
                set.spawn(async move {
                    let n = data.len() as u64;
                    let ct = content_type(&path);
                    store.upload(&key, data, ct).await.map(|()| (key, n))
                });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            match done {
                Ok(Ok((key, n))) => {
                    uploaded += 1;
                    bytes += n;
                    progress.event(&Event::Uploaded {
                        url: self.url(&key),
                        bytes: n,
                    });
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                    pending = Vec::new().into_iter();
                }
                Err(join) => {
                    first_error.get_or_insert(Error::other(
                        format!("an upload task failed: {join}"),
                        "this is a pipeforge bug; please report it",
                    ));
                    pending = Vec::new().into_iter();
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        bytes += self.upload_archive(&archive_key, outputs, progress).await?;
        uploaded += 1;
        let plan = outputs.get(PLAN_FILE).unwrap_or_default().to_vec();
        let n = plan.len() as u64;
        self.upload(&marker, plan, "application/json").await?;
        progress.event(&Event::Uploaded {
            url: self.url(&marker),
            bytes: n,
        });
        Ok(BundleUpload {
            url,
            prefix,
            uploaded: uploaded + 1,
            bytes: bytes + n,
            archive: true,
        })
    }

    /// Uploads the bundle's archive (before its `plan.json`, so a complete bundle has one);
    /// returns its size.
    async fn upload_archive(
        &self,
        key: &str,
        outputs: &Outputs,
        progress: &dyn Progress,
    ) -> Result<u64> {
        let zip = super::archive::pack(outputs)?;
        let n = zip.len() as u64;
        self.upload(key, zip, "application/zip").await?;
        progress.event(&Event::Uploaded {
            url: self.url(key),
            bytes: n,
        });
        Ok(n)
    }

    /// The SHA-256 recorded on the current `source.zip`, if any.
    async fn source_sha(&self) -> Result<Option<String>> {
        self.source_metadata(SHA_METADATA).await
    }

    /// The commit of the last `source.zip` uploaded (its `pipeforge-commit` metadata): the
    /// commit the pipeline was last published or deployed from. `None` when there is none.
    pub async fn source_commit(&self) -> Result<Option<String>> {
        self.source_metadata(COMMIT_METADATA).await
    }

    /// The bundle the pipeline was last deployed with (the `pipeforge-bundle` of
    /// `source.zip`): its commit and its rendered files (`bundle/<hash>/`, without the
    /// `deploy/` copies and the `input/` the bundle remembers), each read up to 2 MiB, at most
    /// 64 files. `None` when nothing is
    /// deployed or the bundle is gone.
    pub async fn deployed_bundle(
        &self,
    ) -> Result<Option<(Option<String>, std::collections::BTreeMap<String, Vec<u8>>)>> {
        let Some(hash) = self.source_metadata("pipeforge-bundle").await? else {
            return Ok(None);
        };
        let commit = self.source_commit().await?;
        let prefix = self.bundle_prefix(&hash);
        // `deploy/` copies sort before `plan.json` and `stacks/`: read past them.
        let listed = self.list_keys(&prefix, 20).await?;
        let mut files = std::collections::BTreeMap::new();
        for (key, size) in &listed {
            let (key, size) = (key.as_str(), *size);
            let Some(rel) = key.strip_prefix(&prefix) else {
                continue;
            };
            let rendered = !(rel.starts_with("deploy/") || rel.starts_with("input/"));
            // A stack template is at most 1 MB: a larger object is not a rendered file.
            const LIMIT: usize = 2 * 1024 * 1024;
            if !rendered || size > LIMIT as i64 || files.len() >= 64 {
                continue;
            }
            let got = self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.s3_error("read", key, &e, "s3:GetObject"))?;
            let declared = got.content_length();
            let bytes = crate::aws::read_body(got.body, declared, LIMIT)
                .await
                .map_err(|e| e.error(&self.url(key), ""))?;
            files.insert(rel.to_owned(), bytes);
        }
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some((commit, files)))
    }

    /// The keys under `prefix` with their sizes, following the listing's pages (at most
    /// `max_pages` of 100 keys).
    async fn list_keys(&self, prefix: &str, max_pages: usize) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..max_pages {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .max_keys(100)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.s3_error("list", prefix, &e, "s3:ListBucket"))?;
            out.extend(page.contents().iter().filter_map(|o| {
                o.key()
                    .map(|k| (k.to_owned(), o.size().unwrap_or_default()))
            }));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn source_metadata(&self, name: &str) -> Result<Option<String>> {
        let key = self.source_key();
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(h) => Ok(h.metadata().and_then(|m| m.get(name)).cloned()),
            Err(e) => {
                let f = AwsFailure::of(&e);
                if f.is_not_found() {
                    Ok(None)
                } else {
                    Err(self.error(format!("read `{}`", self.url(&key)), &f, "s3:GetObject"))
                }
            }
        }
    }

    /// Uploads `source.zip` (after which the pipeline is started: [`crate::publish::start_pipeline`])
    /// unless the object already has this content and `force` is false.
    pub async fn upload_source(
        &self,
        zip: &SourceZip,
        bundle_hash: &str,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<SourceUpload> {
        let key = self.source_key();
        let url = self.url(&key);
        if !force && self.source_sha().await?.as_deref() == Some(zip.sha256.as_str()) {
            progress.event(&Event::UploadSkipped {
                url: url.clone(),
                reason: "same snapshot as the last upload; the pipeline was not started again"
                    .to_owned(),
            });
            return Ok(SourceUpload {
                url,
                uploaded: false,
                version_id: None,
                execution: None,
            });
        }
        let out = self
            .put(&key, zip.bytes.clone(), "application/zip")
            .metadata(SHA_METADATA, &zip.sha256)
            .metadata(COMMIT_METADATA, &zip.commit)
            .metadata("pipeforge-bundle", bundle_hash)
            .send()
            .await
            .map_err(|e| self.s3_error("upload", &key, &e, "s3:PutObject"))?;
        progress.event(&Event::Uploaded {
            url: url.clone(),
            bytes: zip.bytes.len() as u64,
        });
        Ok(SourceUpload {
            url,
            uploaded: true,
            version_id: out.version_id().map(str::to_owned),
            execution: None,
        })
    }

    /// Key of the pipeline's lock.
    pub fn lock_key(&self) -> String {
        format!("{}deploy.lock", self.records)
    }

    /// Key of the pipeline's owner record.
    pub fn owner_key(&self) -> String {
        format!("{}owner.json", self.records)
    }

    /// Key of the pipeline's deploy record ([`super::record::DeployedRecord`]).
    pub fn deployed_key(&self) -> String {
        format!("{}{}", self.records, super::record::DEPLOYED_FILE)
    }

    /// The keys under `prefix`, every page of the listing.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.s3_error("list", prefix, &e, "s3:ListBucket"))?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_owned),
            );
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes an object (a delete marker in the versioned bucket); none is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.s3_error("delete", key, &e, "s3:DeleteObject"))?;
        Ok(())
    }

    /// Copies the pipeline's `source.zip` (with its metadata: commit, bundle) into `to`, the
    /// same pipeline's store in another bucket; false when there is none to copy. The copy
    /// passes through memory, so an object over `limit` (the snapshot limit: pipeforge never
    /// writes a larger one) is refused unread.
    pub async fn copy_source_to(&self, to: &SourceStore, limit: u64) -> Result<bool> {
        let key = self.source_key();
        let got = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let f = AwsFailure::of(&e);
                if f.is_not_found() {
                    return Ok(false);
                }
                return Err(self.error(format!("read `{}`", self.url(&key)), &f, "s3:GetObject"));
            }
        };
        let metadata = got.metadata().cloned();
        let declared = got.content_length();
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let bytes = crate::aws::read_body(got.body, declared, limit)
            .await
            .map_err(|e| e.error(&self.url(&key), "the source snapshot"))?;
        let to_key = to.source_key();
        to.put(&to_key, bytes, "application/zip")
            .set_metadata(metadata)
            .send()
            .await
            .map_err(|e| to.s3_error("upload", &to_key, &e, "s3:PutObject"))?;
        Ok(true)
    }

    /// Reads the pipeline's deploy record: its ETag and content, or `None`.
    pub async fn read_deployed(&self) -> Result<Option<(String, super::record::DeployedRecord)>> {
        let key = self.deployed_key();
        match self
            .read(&key, "the deploy record", MAX_RECORD_BYTES)
            .await?
        {
            Some((etag, bytes)) => Ok(Some((
                etag,
                super::record::DeployedRecord::parse(&bytes, &self.url(&key))?,
            ))),
            None => Ok(None),
        }
    }

    /// The folder of the pipeline's listing keys ([`super::record::listing_key`]).
    pub fn listing_prefix(&self) -> String {
        format!("{}{}", self.records, super::record::SET_DIR)
    }

    /// Writes the pipeline's deploy record (after a successful deploy, under its lock), then
    /// its listing key (for the ETag S3 gave the record), then removes the older keys.
    pub async fn write_deployed(&self, record: &super::record::DeployedRecord) -> Result<()> {
        let old = self.keys(&self.listing_prefix()).await?;
        let key = self.deployed_key();
        let out = self
            .put(&key, record.to_bytes(), "application/json")
            .send()
            .await
            .map_err(|e| self.s3_error("upload", &key, &e, "s3:PutObject"))?;
        let listing = out
            .e_tag()
            .and_then(|etag| super::record::listing_key(record, etag))
            .map(|name| format!("{}{name}", self.records));
        if let Some(k) = &listing {
            self.upload(k, Vec::new(), "application/octet-stream")
                .await?;
        }
        for k in old.iter().filter(|k| Some(*k) != listing.as_ref()) {
            self.delete(k).await?;
        }
        Ok(())
    }

    /// Deletes the pipeline's deploy record and its listing keys (the keys first).
    pub async fn delete_deployed(&self) -> Result<()> {
        for k in self.keys(&self.listing_prefix()).await? {
            self.delete(&k).await?;
        }
        self.delete(&self.deployed_key()).await
    }

    /// Reads an object: its ETag and bytes, or `None` when there is none. `what` names it in
    /// errors ("the deploy lock"); an object over `limit` bytes is an error, and not read further
    /// than that ([`crate::aws::read_body`]).
    pub async fn read(
        &self,
        key: &str,
        what: &str,
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
                let etag = o.e_tag().unwrap_or_default().to_owned();
                let declared = o.content_length();
                let body = crate::aws::read_body(o.body, declared, limit)
                    .await
                    .map_err(|e| e.error(&self.url(key), what))?;
                Ok(Some((etag, body)))
            }
            Err(e) => {
                let f = AwsFailure::of(&e);
                if f.is_not_found() {
                    Ok(None)
                } else {
                    Err(self.error(
                        format!("read {what} `{}`", self.url(key)),
                        &f,
                        "s3:GetObject",
                    ))
                }
            }
        }
    }

    /// Writes a JSON object only if it is new (`expected: None`, `If-None-Match: *`) or still
    /// the version read (`expected: Some(etag)`, `If-Match`): its new ETag, or `None` when
    /// someone else wrote it first.
    pub async fn write_if(
        &self,
        key: &str,
        body: Vec<u8>,
        expected: Option<&str>,
        what: &str,
    ) -> Result<Option<String>> {
        let put = self.put(key, body, "application/json");
        let put = match expected {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_owned())),
            Err(e) => {
                let f = AwsFailure::of(&e);
                if is_conflict(&f) {
                    Ok(None)
                } else {
                    Err(self.error(
                        format!("write {what} `{}`", self.url(key)),
                        &f,
                        "s3:PutObject",
                    ))
                }
            }
        }
    }

    /// Reads the lock: its ETag and body, or `None` when there is none.
    async fn read_lock(&self, key: &str) -> Result<Option<(String, Option<LockBody>)>> {
        Ok(self
            .read(key, "the deploy lock", MAX_RECORD_BYTES)
            .await?
            .map(|(etag, body)| (etag, serde_json::from_slice(&body).ok())))
    }

    /// Takes the pipeline's lock, waiting up to `timeout` for another holder to finish; a lock
    /// that nobody renewed for its lease is taken over.
    pub async fn lock(
        &self,
        holder: &str,
        lease: Duration,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<DeployLock> {
        let key = self.lock_key();
        let token = unique_token(12);
        let body = |started| {
            serde_json::to_vec(&LockBody {
                holder: holder.to_owned(),
                token: token.clone(),
                started,
                lease_seconds: lease.as_secs(),
            })
            .unwrap_or_default()
        };
        let started = std::time::Instant::now();
        let mut observed: Option<(String, std::time::Instant)> = None;
        let mut announced = false;
        let mut delay = Duration::from_millis(200);
        loop {
            let res = self
                .put(&key, body(now_secs()), "application/json")
                .if_none_match("*")
                .send()
                .await;
            let etag = match res {
                Ok(out) => Some(out.e_tag().unwrap_or_default().to_owned()),
                Err(e) => {
                    let f = AwsFailure::of(&e);
                    if !is_conflict(&f) {
                        return Err(self.error(
                            format!("take the deploy lock `{}`", self.url(&key)),
                            &f,
                            "s3:PutObject",
                        ));
                    }
                    None
                }
            };
            if let Some(etag) = etag {
                return Ok(self.held(holder, key, token, etag, lease));
            }
            // Someone holds it: wait, or take over a lock nobody renews.
            let Some((etag, current)) = self.read_lock(&key).await? else {
                continue; // released meanwhile
            };
            let lease_of = current
                .as_ref()
                .map_or(lease, |c| Duration::from_secs(c.lease_seconds.max(1)));
            let who = current.as_ref().map_or_else(
                || "an unknown holder".to_owned(),
                |c| format!("{} (started at unix time {})", c.holder, c.started),
            );
            match &observed {
                Some((seen, since)) if *seen == etag => {
                    if since.elapsed() >= lease_of {
                        let took = self
                            .put(&key, body(now_secs()), "application/json")
                            .if_match(&etag)
                            .send()
                            .await;
                        if let Ok(out) = took {
                            progress.event(&Event::Warning {
                                message: format!(
                                    "took over the deploy lock of {who}: it was not renewed for {} s",
                                    lease_of.as_secs()
                                ),
                            });
                            let etag = out.e_tag().unwrap_or_default().to_owned();
                            return Ok(self.held(holder, key, token, etag, lease));
                        }
                    }
                }
                _ => observed = Some((etag, std::time::Instant::now())),
            }
            if !announced {
                progress.event(&Event::Waiting {
                    what: format!("another deploy of this pipeline holds the lock: {who}"),
                });
                announced = true;
            }
            if started.elapsed() >= timeout {
                return Err(Error::Locked {
                    message: format!(
                        "another deploy of this pipeline is running: {who}; waited {} s",
                        timeout.as_secs()
                    ),
                    help: format!(
                        "run again when it is done (a larger `--timeout` waits longer); if that deploy died, its lock `{}` expires {} s after its last renewal",
                        self.url(&key),
                        lease_of.as_secs()
                    ),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(5));
        }
    }

    fn held(
        &self,
        holder: &str,
        key: String,
        token: String,
        etag: String,
        lease: Duration,
    ) -> DeployLock {
        let lost = Arc::new(AtomicBool::new(false));
        let store = self.clone();
        let (k, flag) = (key.clone(), lost.clone());
        let every = (lease / 4).max(Duration::from_secs(1));
        let tok = token.clone();
        let held_by = holder.to_owned();
        let holder = holder.to_owned();
        let since = now_secs();
        let renew = tokio::spawn(async move {
            let mut etag = etag;
            loop {
                tokio::time::sleep(every).await;
                let data = serde_json::to_vec(&LockBody {
                    holder: holder.clone(),
                    token: tok.clone(),
                    started: since,
                    lease_seconds: lease.as_secs(),
                })
                .unwrap_or_default();
                match store
                    .put(&k, data, "application/json")
                    .if_match(&etag)
                    .send()
                    .await
                {
                    Ok(out) => etag = out.e_tag().unwrap_or_default().to_owned(),
                    Err(e) => {
                        let f = AwsFailure::of(&e);
                        if f.code.as_deref() == Some("PreconditionFailed") || f.status == Some(412)
                        {
                            flag.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        });
        DeployLock {
            store: self.clone(),
            key,
            holder: held_by,
            token,
            lost,
            renew: Some(renew),
        }
    }
}

impl Drop for DeployLock {
    fn drop(&mut self) {
        // An interrupted deploy stops renewing; the lock then expires after its lease.
        if let Some(r) = &self.renew {
            r.abort();
        }
    }
}

impl DeployLock {
    /// Who holds it, as other deploys see it.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Fails when another deploy took the lock over (it was not renewed in time).
    pub fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::other(
                format!(
                    "another deploy took over the lock `{}` while this one was running",
                    self.store.url(&self.key)
                ),
                "run the deploy again once the other one is done; it converges",
            ));
        }
        Ok(())
    }

    /// Gives the lock back (deletes it if it is still ours).
    pub async fn release(mut self) -> Result<()> {
        // Stop renewing (and wait until no renewal can still be written) before deleting.
        if let Some(r) = self.renew.take() {
            r.abort();
            let _ = r.await;
        }
        if let Some((_, Some(body))) = self.store.read_lock(&self.key).await?
            && body.token == self.token
        {
            self.store
                .s3
                .delete_object()
                .bucket(&self.store.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| {
                    self.store
                        .s3_error("release the deploy lock", &self.key, &e, "s3:DeleteObject")
                })?;
        }
        Ok(())
    }
}

/// True when a conditional write lost: someone else wrote (or deleted) the object first.
fn is_conflict(f: &AwsFailure) -> bool {
    matches!(
        f.code.as_deref(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    ) || matches!(f.status, Some(412 | 409))
}

fn content_type(path: &str) -> &'static str {
    if path.ends_with(".json") {
        "application/json"
    } else if path.ends_with(".yml") || path.ends_with(".yaml") {
        "application/yaml"
    } else {
        "application/octet-stream"
    }
}
