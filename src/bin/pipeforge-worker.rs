//! AWS Lambda function fed by the FIFO job queue: clones, validates, renders and deploys. Glue
//! only; see `pipeforge::webhook::lambda`.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::Arc;

use pipeforge::webhook::lambda::{LambdaError, run_worker};
use pipeforge::webhook::log::Log;

#[tokio::main]
async fn main() -> Result<(), LambdaError> {
    let log = Log::new(Arc::new(|e: &serde_json::Value| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{e}");
    }));
    run_worker(log).await
}
