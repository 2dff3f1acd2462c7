//! Emptying the artifact buckets of a retired pipeline (`pipeforge move --retire-old`), the AWS
//! edge of it: CloudFormation deletes a bucket only when it holds no object version and no
//! delete marker, and the artifact buckets are versioned.
//!
//! Which bucket is never input: [`retired_bucket`] reads the physical id of the stack's own
//! `ArtifactBucket` resource (by stack id) and refuses one that is not the name pipeforge gives
//! that pipeline's bucket in that account and region. Emptying is a loop of "list the first
//! page of versions, delete them", so a run that stopped half-way is finished by running it
//! again.

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use crate::aws::sdk_error;
use crate::error::{Error, Result};

use super::api::{Location, StackApi};

/// The logical id of the artifact bucket in the pipeline and region stacks.
pub const ARTIFACT_BUCKET_ID: &str = "ArtifactBucket";

/// The most versions one `DeleteObjects` call removes (S3's limit).
const PAGE: i32 = 1000;

/// The artifact bucket of the stack `stack_id` (pipeline `pipeline`, prefix `prefix`) at `at`:
/// the physical id of its `ArtifactBucket`, checked against the name pipeforge gives it;
/// `None` when the stack has no such resource (any more).
pub async fn retired_bucket<A: StackApi>(
    api: &A,
    at: &Location,
    stack: &str,
    stack_id: &str,
    prefix: &str,
    pipeline: &str,
) -> Result<Option<String>> {
    let found = api
        .physical_id(at, stack_id, ARTIFACT_BUCKET_ID)
        .await
        .map_err(|e| Error::Aws {
            action: format!(
                "find the artifact bucket of stack `{stack}` (account {}, {})",
                at.account, at.region
            ),
            code: e.code.clone(),
            message: e.text(),
            help: "the org's bootstrap role in the old tooling account needs cloudformation:DescribeStackResource on pipeforge's stacks (its `tooling-<account>.json` grants it); run `pipeforge move` again".to_owned(),
        })?;
    let Some(bucket) = found else {
        return Ok(None);
    };
    let expected = crate::names::artifact_bucket_name(prefix, pipeline, &at.account, &at.region);
    if bucket != expected {
        return Err(Error::Refused {
            message: format!(
                "the artifact bucket of stack `{stack}` (account {}, {}) is `{bucket}`, not `{expected}`; nothing was emptied or deleted",
                at.account, at.region
            ),
            help: "the stack is not as pipeforge deployed it: look at it in that account, empty the bucket by hand if it is the pipeline's, and run `pipeforge move` again".to_owned(),
        });
    }
    Ok(Some(bucket))
}

/// Deletes every object version and delete marker of `bucket`; how many it deleted.
pub async fn empty_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<u64> {
    let mut deleted = 0u64;
    loop {
        let page = s3
            .list_object_versions()
            .bucket(bucket)
            .max_keys(PAGE)
            .send()
            .await
            .map_err(|e| sdk_error(format!("list the object versions of `{bucket}`"), e))?;
        let mut ids = Vec::new();
        for (key, version) in page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                page.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            )
        {
            let Some(key) = key else { continue };
            let id = ObjectIdentifier::builder()
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .build()
                .map_err(|e| Error::other(format!("object `{key}`: {e}"), "report this bug"))?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(deleted);
        }
        let count = ids.len() as u64;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| Error::other(format!("a delete of `{bucket}`: {e}"), "report this bug"))?;
        let out = s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| sdk_error(format!("delete object versions of `{bucket}`"), e))?;
        if let Some(e) = out.errors().first() {
            return Err(Error::Aws {
                action: format!("delete object versions of `{bucket}`"),
                code: e.code().map(str::to_owned),
                message: format!(
                    "{} ({} of {count} refused)",
                    e.message().unwrap_or_default(),
                    out.errors().len()
                ),
                help: "the org's bootstrap role in the old tooling account needs s3:ListBucketVersions and s3:DeleteObjectVersion on the pipeline's artifact buckets (its `tooling-<account>.json` grants them); run `pipeforge move` again".to_owned(),
            });
        }
        deleted += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::fake::FakeCfn;

    #[tokio::test]
    async fn the_bucket_is_the_stacks_own_and_named_as_pipeforge_names_it() {
        let api = FakeCfn::default();
        let at = Location {
            account: "555555555555".to_owned(),
            region: "eu-west-1".to_owned(),
        };
        // No stack: nothing to empty.
        let none = retired_bucket(&api, &at, "pf-x-pipeline", "id-1", "pf", "x")
            .await
            .expect("no stack");
        assert_eq!(none, None);
        assert!(
            api.calls()
                .iter()
                .any(|c| c.contains("physical_id id-1 ArtifactBucket"))
        );
        let template = |bucket: &str| {
            serde_json::json!({"Resources": {"ArtifactBucket": {
                "Type": "AWS::S3::Bucket", "Properties": {"BucketName": bucket}}}})
            .to_string()
        };
        let ours = "pf-x-555555555555-eu-west-1";
        let id = api.put_stack("pf-x-pipeline", "UPDATE_COMPLETE", Some(&template(ours)));
        let found = retired_bucket(&api, &at, "pf-x-pipeline", &id, "pf", "x")
            .await
            .expect("ours");
        assert_eq!(found.as_deref(), Some(ours));
        // A stack whose artifact bucket is another bucket (the source bucket, say): refused.
        let id = api.put_stack(
            "pf-y-pipeline",
            "UPDATE_COMPLETE",
            Some(&template("example-pipeforge-source")),
        );
        let err = retired_bucket(&api, &at, "pf-y-pipeline", &id, "pf", "y")
            .await
            .expect_err("not ours");
        assert!(
            err.to_string()
                .contains("is `example-pipeforge-source`, not `pf-y-555555555555-eu-west-1`"),
            "{err}"
        );
        // No artifact bucket in the stack (any more).
        let id = api.put_stack(
            "pf-z-pipeline",
            "UPDATE_COMPLETE",
            Some("{\"Resources\": {}}"),
        );
        assert_eq!(
            retired_bucket(&api, &at, "pf-z-pipeline", &id, "pf", "z")
                .await
                .expect("none"),
            None
        );
    }
}
