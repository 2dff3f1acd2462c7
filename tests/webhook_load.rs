//! Load test of the webhook handler (ignored by default; loopback only, bounded in count and
//! time): 1,000 signed GitHub webhooks to the real `pipeforge serve --local-queue`, from 4
//! client threads, one connection per request. Prints accepted per second and the p50/p99
//! accept latency as the client sees it (connect to full answer) and as the server logs it.
//!
//!     cargo test --test webhook_load -- --ignored --nocapture

mod webhook_support;

use std::time::{Duration, Instant};

use webhook_support::*;

const REQUESTS: usize = 1000;
const CLIENTS: usize = 4;
const BUDGET: Duration = Duration::from_secs(120);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
#[ignore = "load test: run with --ignored --nocapture"]
fn one_thousand_signed_webhooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("git");
    std::fs::create_dir_all(&base).expect("mkdir");
    let org = org_file(dir.path(), &base);
    let repo = Repo::new(&base, "payments", "load-app", &example_manifest());
    let commit = repo.merge(
        "load",
        "main",
        &example_manifest().replace("coverage_min: 85", "coverage_min: 90"),
    );
    let work = dir.path().join("work");
    let s = Serve::start(
        &[
            "--local-queue",
            "--render-only",
            "--workers",
            "1",
            "--org",
            org.to_str().expect("utf-8"),
            "--work-dir",
            work.to_str().expect("utf-8"),
        ],
        &[],
    );
    let body = github_payload(&repo, &commit, "main", "main");
    let signature = sign(&body);
    let started = Instant::now();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let body = body.clone();
            let signature = signature.clone();
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in (c..REQUESTS).step_by(CLIENTS) {
                    if started.elapsed() > BUDGET {
                        break;
                    }
                    let t = Instant::now();
                    let a = request(
                        addr,
                        "POST",
                        "/webhook",
                        &[
                            ("X-GitHub-Event", "pull_request".to_owned()),
                            ("X-GitHub-Delivery", format!("load-{i}")),
                            ("X-Hub-Signature-256", signature.clone()),
                        ],
                        &body,
                    );
                    out.push((
                        a.status,
                        a.body["status"].as_str() == Some("queued"),
                        t.elapsed(),
                    ));
                }
                out
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client"))
        .collect();
    let elapsed = started.elapsed();
    let accepted = results.iter().filter(|(st, q, _)| *st == 202 && *q).count();
    let mut ms: Vec<f64> = results
        .iter()
        .map(|(_, _, d)| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let mut server_ms: Vec<f64> = s
        .events("webhook")
        .iter()
        .filter_map(|e| e["accept_us"].as_f64())
        .map(|us| us / 1000.0)
        .collect();
    server_ms.sort_by(f64::total_cmp);
    let rate = accepted as f64 / elapsed.as_secs_f64();
    let report = format!(
        "webhook load: {accepted}/{REQUESTS} accepted in {:.2} s = {rate:.0} accepted/s ({CLIENTS} clients); \
         client latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server accept p50 {:.3} ms, p99 {:.3} ms",
        elapsed.as_secs_f64(),
        percentile(&ms, 0.50),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or_default(),
        percentile(&server_ms, 0.50),
        percentile(&server_ms, 0.99),
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{report}");
    }
    assert_eq!(accepted, REQUESTS, "{report}");
    assert!(elapsed < BUDGET, "{report}");
    assert!(percentile(&ms, 0.99) < 1000.0, "{report}");
}
