//! AWS Lambda function behind API Gateway: receives webhooks, enqueues jobs, answers job
//! status. Glue only; see `pipeforge::webhook::lambda`.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::Arc;

use pipeforge::webhook::lambda::{LambdaError, run_webhook};
use pipeforge::webhook::log::Log;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    // One JSON object per line on stdout: CloudWatch Logs keeps each as one event.
    let log = Log::new(Arc::new(|e: &serde_json::Value| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{e}");
    }));
    run_webhook(log).await
}
