//! Benchmark: place 10,000 synthetic pipelines over an org's tooling accounts and print what
//! each account then holds against its quotas.
//!
//! `cargo bench --bench capacity`. The footprint of one pipeline is the example manifest's
//! (`examples/pipeline.yml`, six gates, rendered with the example org); what every tooling
//! account holds before any pipeline is counted from the bootstrap stack
//! (`golden-bootstrap/default/expected/tooling.json`). Prints how many pipelines one tooling
//! account holds at AWS's default quotas and at the highest documented ones, how many tooling
//! accounts 1,000 and 10,000 pipelines need, the per-account table of a 10,000-pipeline
//! placement at default quotas, and the time the placement took.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Instant;

use pipeforge::capacity::footprint::{Counts, count};
use pipeforge::capacity::scale::{self, Quotas, Simulation, Synthetic};
use pipeforge::capacity::{Footprint, Resource};
use pipeforge::catalog::Catalog;
use pipeforge::render::Templates;
use pipeforge::{SourceFile, generate_with};

const PIPELINES: usize = 10_000;

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What one example pipeline puts in its tooling account.
fn per_pipeline() -> Counts {
    let org = pipeforge::org::embedded().expect("org");
    let catalog = Catalog::load(None).expect("catalog");
    let templates = Templates::load(None).expect("templates");
    let text = std::fs::read_to_string(root().join("examples/pipeline.yml")).expect("example");
    let bundle = generate_with(
        &SourceFile::new("pipeline.yml", text),
        &org,
        &catalog,
        &templates,
    )
    .expect("render");
    let f = Footprint::of_outputs(&bundle.plan, &bundle.outputs).expect("footprint");
    f.in_account(&bundle.plan.pipeline.tooling_account)
}

/// What the installation's own stack holds in every tooling account.
fn base() -> Counts {
    let text =
        std::fs::read_to_string(root().join("golden-bootstrap/default/expected/tooling.json"))
            .expect("bootstrap template");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    count(&pipeforge::render::tree::Node::from(&json))
}

/// The example org with `n` tooling accounts (the home one and `n - 1` more).
fn org_with(n: usize) -> pipeforge::org::OrgPolicy {
    let text = pipeforge::assets::get("examples/org.yaml").expect("embedded org");
    let mut extra = String::from("tooling_accounts:\n");
    for i in 1..n {
        extra.push_str(&format!(
            "  - {{account: \"9{i:011}\", region: us-east-1, bucket: pf-source-{i}, kms_key: alias/pf-source}}\n"
        ));
    }
    let text = if n > 1 {
        format!("{text}{extra}")
    } else {
        text.to_owned()
    };
    pipeforge::org::load(&SourceFile::new("org.yaml", text)).expect("org")
}

fn table(s: &Simulation, limits: &BTreeMap<Resource, u64>) {
    let cols = [
        Resource::IamRole,
        Resource::IamPolicy,
        Resource::Pipeline,
        Resource::BuildProject,
        Resource::Stack,
        Resource::Bucket,
    ];
    print!("{:<14} {:>9}", "account", "pipelines");
    for r in cols {
        print!(" {:>17}", r.key());
    }
    println!("  binding");
    for l in &s.accounts {
        print!("{:<14} {:>9}", l.account, l.pipelines);
        for r in cols {
            let used = l.used.get(&r).copied().unwrap_or(0);
            print!(
                " {:>17}",
                format!("{used}/{}", limits.get(&r).copied().unwrap_or(0))
            );
        }
        match l.binding {
            Some((id, u, lim)) => println!("  {id} {}%", u * 100 / lim.max(1)),
            None => println!(),
        }
    }
    println!("unplaced: {}", s.unplaced);
}

fn main() {
    let per = per_pipeline();
    let base = base();
    let mut before = per.clone();
    *before.entry(Resource::IamRole).or_default() += 1;
    *before.entry(Resource::EventRule).or_default() += 1;
    let show = |c: &Counts| {
        c.iter()
            .map(|(r, n)| format!("{} {n}", r.key()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("one pipeline in its tooling account: {}", show(&per));
    println!("  (with an EventBridge trigger, before: {})", show(&before));
    println!("the installation in every tooling account: {}", show(&base));
    let mut needed = BTreeMap::new();
    for q in [Quotas::Default, Quotas::Raised] {
        let limits = scale::limits(q);
        let (n, binding) = scale::per_account(&per, &base, &limits);
        let mut rule_limits = limits.clone();
        rule_limits.insert(Resource::EventRule, 300);
        let (old, old_binding) = scale::per_account(&before, &base, &rule_limits);
        let accounts = |p: usize| p.div_ceil(usize::try_from(n.max(1)).unwrap_or(usize::MAX));
        println!(
            "{q:?} quotas: {n} pipelines per tooling account (bound by {}; with the trigger: {old}, bound by {}); 1,000 pipelines need {} tooling accounts, 10,000 need {}",
            binding.unwrap_or("-"),
            old_binding.unwrap_or("-"),
            accounts(1_000),
            accounts(PIPELINES)
        );
        needed.insert(format!("{q:?}"), accounts(PIPELINES));
    }
    let pipelines: Vec<Synthetic> = (0..PIPELINES)
        .map(|i| Synthetic {
            name: format!("svc-{i:05}"),
            team: format!("team-{}", i % 97),
            tooling: per.clone(),
        })
        .collect();
    for q in [Quotas::Default, Quotas::Raised] {
        let n = needed[&format!("{q:?}")];
        let org = org_with(n);
        let limits = scale::limits(q);
        let t = Instant::now();
        let s = scale::simulate(&org, &pipelines, &limits, &base);
        let took = t.elapsed();
        println!();
        println!(
            "{PIPELINES} pipelines over {n} tooling accounts at {q:?} quotas, placed in {:.1} ms:",
            took.as_secs_f64() * 1e3
        );
        table(&s, &limits);
    }
}
