//! AWS clients for the webhook edge, all from one [`AwsContext`] (the crate's AWS
//! configuration: standard chain, rustls + ring, retries and timeouts; `AWS_ENDPOINT_URL`
//! redirects every client, which is how the tests point them at the local AWS server).

use crate::aws::{AwsContext, AwsSettings};

/// Loads the AWS context from the standard chain.
pub async fn context() -> AwsContext {
    AwsContext::load(&AwsSettings::default()).await
}

fn region(aws: &AwsContext) -> String {
    aws.base()
        .region()
        .map_or_else(|| "us-east-1".to_owned(), |r| r.as_ref().to_owned())
}

/// An S3 client in the default region (path-style addressing when an endpoint is set).
pub fn s3(aws: &AwsContext) -> aws_sdk_s3::Client {
    aws.s3(aws.base(), &region(aws))
}

/// An SQS client.
pub fn sqs(aws: &AwsContext) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(aws.base())
}

/// A Secrets Manager client.
pub fn secrets_manager(aws: &AwsContext) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(aws.base())
}
