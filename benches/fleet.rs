//! Benchmark helper for `pipeforge fleet`: seeds a synthetic fleet into a running local AWS
//! server and plans it in-process. Against a server started with `ci/local-aws start` (its
//! exports in the environment):
//!
//! ```text
//! env=$(ci/local-aws start --state-dir target/local-aws-bench) && eval "$env"
//! cargo bench --bench fleet -- seed 10000 --languages python,node,java,dotnet
//!                                             # bench-00000 … bench-09999, team payments, the
//!                                             # languages in turn (deploy records only;
//!                                             # `--bundles`: bundles too; `--bundles-of
//!                                             # python`: bundles of those languages' pipelines,
//!                                             # with `--only-bundled` those pipelines alone)
//! cargo bench --bench fleet -- read [--window N]   # the records alone (what S3 costs), N
//!                                             # reads in flight (16): time, and the local
//!                                             # server's CPU time when `--server-pid PID`
//! cargo bench --bench fleet -- plan [--languages DIR] [--templates DIR] [--org FILE] [--window N]
//!                                             # in-process: time, CPU time, peak RSS (and
//!                                             # the server's CPU time with `--server-pid PID`),
//!                                             # then the five largest groups of identical
//!                                             # changes (two builds must print the same)
//! cargo build --release && /usr/bin/time -v target/release/pipeforge fleet plan --pipeline 'bench-*'
//! ci/local-aws stop --state-dir target/local-aws-bench
//! ```
//!
//! Without `seed` or `plan` (a plain `cargo bench`), it prints this usage and exits: it never
//! starts or seeds a server by itself.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use pipeforge::Inputs;
use pipeforge::aws::{AwsContext, AwsSettings};
use pipeforge::fleet::plan::{Outcome, Planner, Summary};
use pipeforge::fleet::{self, Scope};

/// The same allocator as the `pipeforge` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage (against a running `ci/local-aws` server, its exports in the environment):\n  cargo bench --bench fleet -- seed N [--bundles | --bundles-of a,b [--only-bundled]] [--languages a,b]   seed N pipelines bench-NNNNN\n  cargo bench --bench fleet -- read [--window N] [--server-pid PID]   read every bench-* record\n  cargo bench --bench fleet -- plan [--languages DIR] [--templates DIR] [--org FILE] [--window N] [--server-pid PID]\n                                        plan every bench-* pipeline in-process";

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// This process's CPU time (user + system), in seconds.
fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// The CPU time of the local server (`--server-pid`), when given: the local server answers
/// one request at a time, so its CPU time is the floor of a run's wall time.
fn server_cpu(args: &[String]) -> Option<f64> {
    option(args, "--server-pid").map(|pid| cpu_seconds_of(&pid))
}

/// The CPU time (user + system) of process `pid` (`self`: this one), in seconds.
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with `)`.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// The value of `--name` in the arguments.
fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn base_manifest() -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("examples/pipeline.yml")).expect("examples/pipeline.yml")
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("seed") => {
            let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
            runtime.block_on(seed(n, &args));
        }
        Some("plan") => runtime.block_on(plan(&args)),
        Some("read") => runtime.block_on(read(&args)),
        _ => println!("{USAGE}"),
    }
}

async fn aws() -> Arc<AwsContext> {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://127.0.0.1:")),
        "AWS_ENDPOINT_URL must point at a local server on 127.0.0.1\n{USAGE}"
    );
    Arc::new(AwsContext::load(&AwsSettings::default()).await)
}

async fn seed(n: usize, args: &[String]) {
    let aws = aws().await;
    let inputs = Arc::new(Inputs::load(None, None, None).expect("inputs"));
    let mut pipelines =
        fleet::seed::variants(&base_manifest(), "bench", &[("payments", "payments")], n);
    if let Some(l) = option(args, "--languages") {
        let l: Vec<&str> = l.split(',').collect();
        pipelines = fleet::seed::with_languages(pipelines, &l);
    }
    // Records only: what `fleet list` and a plan without changes read (a changed file's old
    // version is read from the bundle; `--bundles` writes every bundle too, `--bundles-of
    // python` those of the Python pipelines).
    let all = args.iter().any(|a| a == "--bundles");
    let of = option(args, "--bundles-of").unwrap_or_default();
    let of: Vec<String> = of.split(',').map(|l| format!("language: {l}\n")).collect();
    let (with, without): (Vec<_>, Vec<_>) = pipelines
        .into_iter()
        .partition(|p| all || of.iter().any(|l| p.manifest.contains(l.as_str())));
    let t = Instant::now();
    let mut done = 0;
    let mut seeded = 0;
    // `--only-bundled`: the bundled part alone (bundles added to a fleet seeded before).
    let without = if args.iter().any(|a| a == "--only-bundled") {
        Vec::new()
    } else {
        without
    };
    for (part, bundles) in [(without, false), (with, true)] {
        seeded += fleet::seed::seed(
            Arc::clone(&aws),
            Arc::clone(&inputs),
            part,
            bundles,
            32,
            |_| {
                done += 1;
                if done % 500 == 0 {
                    println!("seeded {done} in {:.1} s", t.elapsed().as_secs_f64());
                }
            },
        )
        .await
        .expect("seed");
    }
    println!(
        "seeded {seeded} pipelines in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

async fn read(args: &[String]) {
    let aws = aws().await;
    let org = Inputs::load(None, None, None).expect("inputs").org.org;
    let window = option(args, "--window")
        .and_then(|w| w.parse().ok())
        .unwrap_or(fleet::WINDOW);
    let scope = Scope {
        only: Some("bench-*".to_owned()),
        window,
    };
    let server = server_cpu(args);
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut records = 0;
    let n = fleet::scan(&aws, &org, Arc::new(fleet::Records), &scope, |e| {
        records += usize::from(matches!(e, fleet::Entry::Record(_)));
        Ok(())
    })
    .await
    .expect("read");
    let s = t.elapsed().as_secs_f64();
    println!(
        "fleet read: {n} pipelines ({records} records), {window} in flight, in {s:.2} s ({:.2} ms each), CPU {:.2} s{}; peak RSS {:.0} MiB",
        s * 1000.0 / n.max(1) as f64,
        cpu_seconds() - cpu,
        server_text(server, args),
        peak_rss_mib()
    );
}

/// The server's CPU time since `before`, as text.
fn server_text(before: Option<f64>, args: &[String]) -> String {
    match (before, server_cpu(args)) {
        (Some(b), Some(a)) => format!(", local server CPU {:.2} s", a - b),
        _ => String::new(),
    }
}

async fn plan(args: &[String]) {
    let aws = aws().await;
    let path = |name: &str| option(args, name).map(std::path::PathBuf::from);
    let (org, languages, templates) = (path("--org"), path("--languages"), path("--templates"));
    let candidate =
        Inputs::load(org.as_deref(), languages.as_deref(), templates.as_deref()).expect("inputs");
    let where_ = Inputs::load(None, None, None).expect("inputs").org.org;
    let planner = Arc::new(Planner::new(Arc::new(candidate), None));
    let window = option(args, "--window")
        .and_then(|w| w.parse().ok())
        .unwrap_or(fleet::plan::PLAN_WINDOW);
    let scope = Scope {
        only: Some("bench-*".to_owned()),
        window,
    };
    let server = server_cpu(args);
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut summary = Summary::default();
    let n = fleet::index::plan_scan(&aws, &where_, &planner, &scope, |i| {
        summary.add(&i);
        Ok(())
    })
    .await
    .expect("plan");
    let planner_reads = planner.records_read();
    let s = t.elapsed().as_secs_f64();
    println!(
        "fleet plan: {n} pipelines in {s:.2} s ({:.2} ms each), CPU {:.2} s{}, {} unchanged ({} not rendered, {} from the listing), {} changed, {} invalid; {} records and {} bundle objects read; peak RSS {:.0} MiB",
        s * 1000.0 / n.max(1) as f64,
        cpu_seconds() - cpu,
        server_text(server, args),
        summary.count(Outcome::Unchanged),
        summary.same_inputs,
        summary.from_listing,
        summary.count(Outcome::Changed),
        summary.count(Outcome::Invalid),
        planner_reads,
        planner.bundle_reads(),
        peak_rss_mib()
    );
    // The identical changes, largest first: what two builds must report alike.
    let mut groups: Vec<_> = summary.groups.iter().collect();
    groups.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
    for (change, group) in groups.iter().take(5) {
        println!("  {} pipelines: {change}", group.count);
    }
}
