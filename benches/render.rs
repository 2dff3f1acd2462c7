//! Benchmark: validate, plan, render and check 1,000 distinct pipelines.
//!
//! `cargo bench --bench render` (release profile). Prints the best of several rounds, the time
//! per pipeline, single-threaded and on every core, and the peak resident memory. Target: 1,000
//! pipelines in under one second on two cores.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use pipeforge::catalog::Catalog;
use pipeforge::render::Templates;
use pipeforge::{SourceFile, generate_with};

/// The same allocator as the `pipeforge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PIPELINES: usize = 1_000;
const ROUNDS: usize = 5;

/// A distinct, valid manifest: every field that varies between teams varies here.
fn manifest(i: usize, languages: &[&str]) -> SourceFile {
    let language = languages[i % languages.len()];
    let envs = 1 + i % 4;
    let mut text = format!(
        "version: 1\nname: svc-{i:04}\nteam: team-{t}\nlanguage: {language}\n\
build:\n  commands: [\"make build-{i}\", \"echo {i}\"]\n  env: {{LOG_LEVEL: info, SHARD: \"{i}\"}}\n  secrets: {{DB_PASSWORD: \"ssm:/team-{t}/svc-{i}/db\"}}\n  timeout_minutes: {timeout}\n\
quality:\n  coverage_min: {cov}\n\
deploy:\n  template: infra/app-{i}.yml\n  parameters: {{Shard: \"{i}\"}}\n\
notifications:\n  email: [team-{t}@example.com]\n\
tags: {{cost-center: \"{cc}\"}}\n\
environments:\n",
        t = i % 37,
        timeout = 10 + i % 50,
        cov = 80 + i % 20,
        cc = 4000 + i,
    );
    // The embedded org policy's shared accounts (any team may deploy to them); staging shares
    // the test account, in another region.
    for e in 0..envs {
        let (name, account, region) = [
            ("dev", "111111111111", ""),
            ("test", "222222222222", ""),
            ("staging", "222222222222", ", region: eu-west-1"),
            ("prod", "333333333333", ""),
        ][e];
        text.push_str(&format!(
            "  - {{name: {name}, account: \"{account}\"{region}}}\n"
        ));
    }
    SourceFile::new(format!("svc-{i}/pipeline.yml"), text)
}

fn run(
    manifests: &[SourceFile],
    threads: usize,
    org: &pipeforge::org::OrgPolicy,
    catalog: &Catalog,
    templates: &Templates,
) -> (Duration, usize) {
    let start = Instant::now();
    let bytes = std::thread::scope(|s| {
        let chunk = manifests.len().div_ceil(threads);
        let handles: Vec<_> = manifests
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut bytes = 0usize;
                    for m in part {
                        let b = generate_with(m, org, catalog, templates)
                            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
                        bytes += b.outputs.iter().map(|(_, v)| v.len()).sum::<usize>();
                    }
                    bytes
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).sum()
    });
    (start.elapsed(), bytes)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let org = pipeforge::org::embedded().expect("org");
    let catalog = Catalog::load(None).expect("catalog");
    let templates = Templates::load(None).expect("templates");
    let languages: Vec<&str> = catalog.names().collect();
    let manifests: Vec<SourceFile> = (0..PIPELINES).map(|i| manifest(i, &languages)).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    for (label, threads) in [("1 thread", 1), ("all cores", cores)] {
        let mut best = Duration::MAX;
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let (d, b) = run(&manifests, threads, &org, &catalog, &templates);
            best = best.min(d);
            bytes = b;
        }
        println!(
            "render+check {PIPELINES} pipelines ({label}, {threads} thread(s), {} languages): best of {ROUNDS} = {:.3} s, {:.0} µs/pipeline, {:.1} MiB of output",
            languages.len(),
            best.as_secs_f64(),
            best.as_secs_f64() * 1e6 / PIPELINES as f64,
            bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(kib) = peak_rss_kib() {
        println!("peak resident memory: {:.1} MiB", kib as f64 / 1024.0);
    }
}
