//! `pipeforge explain`: the plan in human form.

use std::fmt::Write as _;

use crate::capacity::scale::{Quotas, limits, per_account};
use crate::capacity::{Counts, Footprint, PlacedBy, Resource, candidates};
use crate::model::{NoticeKind, Origin, ProductionBy, Sourced};
use crate::org::OrgPolicy;
use crate::plan::{ActionKind, GatePlan, Plan, StackKind};

fn src<T>(s: &Sourced<T>) -> &'static str {
    match s.from {
        Origin::Org => "org",
        Origin::Language => "language",
        Origin::Team => "team",
        Origin::Default => "default",
    }
}

/// `  production [org: name and account]`, or nothing.
fn production(by: &[ProductionBy]) -> String {
    let why: Vec<&str> = by
        .iter()
        .map(|b| match b {
            ProductionBy::Name => "name",
            ProductionBy::Account => "account",
        })
        .collect();
    if why.is_empty() {
        String::new()
    } else {
        format!("  production [org: {}]", why.join(" and "))
    }
}

/// The org rules the pipeline breaks without failing: warnings (errors from a day on) and
/// waivers (until they expire), each with its reason and approver.
fn notices(o: &mut String, plan: &Plan) {
    if plan.notices.is_empty() {
        return;
    }
    let _ = writeln!(o, "policy notices");
    for n in &plan.notices {
        let what = match (n.kind, &n.waiver) {
            (NoticeKind::Waived, Some(w)) => format!(
                "waived until {} (org `waivers[{}]`, approved by {}: {})",
                w.expires, w.index, w.approver, w.reason
            ),
            (NoticeKind::Waived, None) => format!("waived until {}", n.until),
            (NoticeKind::Warning, Some(w)) => format!(
                "warning: org `waivers[{}]` expired on {}; remove it",
                w.index, w.expires
            ),
            (NoticeKind::Warning, None) => format!("warning: an error from {}", n.until),
        };
        let at = n
            .path
            .as_deref()
            .map(|p| format!(" at `{p}`"))
            .unwrap_or_default();
        let _ = writeln!(o, "  {}{at}: {what}", n.subject);
    }
    let _ = writeln!(o);
}

/// `iam-roles 7, stacks 1, ...`, in the quota table's order.
fn counts(c: &Counts) -> String {
    Resource::ALL
        .iter()
        .filter_map(|r| c.get(r).map(|n| format!("{} {n}", r.key())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the pipeline lives, and what it consumes in each account.
fn placement_and_footprint(o: &mut String, plan: &Plan, footprint: &Footprint, org: &OrgPolicy) {
    let p = &plan.pipeline;
    let c = candidates(org, &p.name, &p.team);
    let _ = writeln!(o, "placement");
    let why = match c.by {
        PlacedBy::Home => "the org's only tooling account".to_owned(),
        PlacedBy::Pipeline => format!("[org: `placement.pipelines.{}`]", p.name),
        PlacedBy::Team => format!("[org: `placement.teams.{}`]", p.team),
        _ => format!(
            "first of the stable hash order {}; a first deploy takes the first account with room",
            c.accounts
                .iter()
                .map(|t| t.account.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        ),
    };
    let _ = writeln!(
        o,
        "  tooling account {} ({}), source bucket {} — {why}",
        p.tooling_account, p.region, plan.source.bucket.value
    );
    let _ = writeln!(
        o,
        "  its first deploy records this placement in the pipeline's owner record"
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "footprint (what this pipeline puts in each account)");
    for place in &footprint.places {
        let role = if place.environments.is_empty() {
            place.role.to_owned()
        } else {
            format!("{} ({})", place.role, place.environments.join(", "))
        };
        let _ = writeln!(
            o,
            "  {} {:<14} {:<22} {}",
            place.account,
            place.region,
            role,
            counts(&place.resources)
        );
    }
    let tooling = footprint.in_account(&p.tooling_account);
    let (n, q) = per_account(&tooling, &Counts::new(), &limits(Quotas::Default));
    let (m, _) = per_account(&tooling, &Counts::new(), &limits(Quotas::Raised));
    if let Some(q) = q {
        let _ = writeln!(
            o,
            "  a tooling account holds at most {n} pipelines like this one at AWS's default quotas, {m} at the highest ({q} binds first); deploys check the live quotas"
        );
    }
    let _ = writeln!(o);
}

/// Describes a plan for people: stages, gates (mandatory or not), where each value came
/// from, where the pipeline lives and what it consumes in each account (`footprint`, from the
/// rendered stacks).
pub fn explain(plan: &Plan, footprint: &Footprint, org: &OrgPolicy) -> String {
    let mut o = String::new();
    summary(&mut o, plan);
    placement_and_footprint(&mut o, plan, footprint, org);
    stages(&mut o, plan);
    gates(&mut o, plan);
    notices(&mut o, plan);
    environments(&mut o, plan);
    resources(&mut o, plan);
    values(&mut o, plan);
    deploy_order(&mut o, plan, org);
    let p = &plan.pipeline;
    let _ = writeln!(
        o,
        "renaming: a new `name` creates a new pipeline; the pipeline `{}` keeps running until removed (delete stack `{}`, then its target and region stacks in their accounts, as `pipeforge status {}` lists them, and its owner record)",
        p.name, plan.names.pipeline_stack, p.name
    );
    o
}

/// The pipeline: its name and team, account, language, source and tags.
fn summary(o: &mut String, plan: &Plan) {
    let p = &plan.pipeline;
    let _ = writeln!(o, "pipeline `{}` of team `{}`", p.name, p.team);
    let _ = writeln!(
        o,
        "  CodePipeline `{}` in account {} ({}), org `{}`",
        p.pipeline_name, p.tooling_account, p.region, p.org
    );
    let _ = writeln!(
        o,
        "  language {} {} [runtime from {}]",
        p.language,
        p.runtime.value,
        src(&p.runtime)
    );
    let _ = writeln!(
        o,
        "  source   s3://{}/{} [from {}]",
        plan.source.bucket.value,
        plan.source.key,
        src(&plan.source.bucket)
    );
    let tags: Vec<String> = p.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(o, "  tags     {}", tags.join(", "));
    let _ = writeln!(o);
}

/// The stages and their actions, in order.
fn stages(o: &mut String, plan: &Plan) {
    let _ = writeln!(o, "stages");
    for (i, s) in plan.stages.iter().enumerate() {
        let desc: Vec<String> = s
            .actions
            .iter()
            .map(|a| match a.kind {
                ActionKind::Source => format!(
                    "S3 source s3://{}/{}",
                    plan.source.bucket.value, plan.source.key
                ),
                ActionKind::Gate => format!("{}#{}", a.name, a.run_order),
                ActionKind::Approval => "manual approval".to_owned(),
                ActionKind::CreateChangeSet => {
                    format!("create change set of `{}`", plan.deploy.stack_name.value)
                }
                ActionKind::ExecuteChangeSet => "execute change set".to_owned(),
            })
            .collect();
        let _ = writeln!(o, "  {}. {:<16} {}", i + 1, s.name, desc.join(" → "));
    }
    let _ = writeln!(o);
}

/// Every gate, then the gates that do not run, and why.
fn gates(o: &mut String, plan: &Plan) {
    let _ = writeln!(o, "gates");
    for g in &plan.gates {
        gate(o, g);
    }
    for d in &plan.disabled_gates {
        let _ = writeln!(o, "  {} — does not run: {}", d.name, d.reason);
    }
    let _ = writeln!(o);
}

/// A gate: its project, image, compute, timeout, steps (enforced or the team's), reports and
/// secrets.
fn gate(o: &mut String, g: &GatePlan) {
    let _ = writeln!(
        o,
        "  {} ({} stage, {}) — {}",
        g.name,
        g.stage.as_str(),
        if g.mandatory.value {
            "mandatory [org]"
        } else {
            "optional [org]"
        },
        g.description
    );
    let _ = writeln!(
        o,
        "    project {}  image {} [{}]  compute {} [{}]  timeout {} min [{}]",
        g.project,
        g.image.value,
        src(&g.image),
        g.compute.value.as_str(),
        src(&g.compute),
        g.timeout_minutes.value,
        src(&g.timeout_minutes)
    );
    for ph in &g.phases {
        for st in &ph.steps {
            let lock = if st.enforced { "enforced" } else { "team slot" };
            let _ = writeln!(
                o,
                "    {:<10} {} [{}, {}]",
                ph.phase.as_str(),
                st.name,
                st.from.as_str(),
                lock
            );
            for c in &st.commands {
                let _ = writeln!(
                    o,
                    "               $ {}",
                    c.replace('\n', "\n                 ")
                );
            }
        }
    }
    for r in &g.reports {
        let _ = writeln!(o, "    report     {} ({}, {})", r.name, r.kind, r.format);
    }
    if !g.secrets.is_empty() {
        let names: Vec<&str> = g.secrets.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(o, "    secrets    {}", names.join(", "));
    }
}

/// Every environment: its account, region, approval and parameters.
fn environments(o: &mut String, plan: &Plan) {
    let _ = writeln!(o, "environments");
    for e in &plan.environments {
        let approval = if e.approval.value {
            format!("approval required [{}]", src(&e.approval))
        } else {
            "no approval".to_owned()
        };
        let account = match &e.account_name {
            Some(n) => format!("{} ({n})", e.account),
            None => e.account.clone(),
        };
        let _ = writeln!(
            o,
            "  {:<12} account {account} region {} [{}]{}  {}",
            e.name,
            e.region.value,
            src(&e.region),
            production(&e.production_by),
            approval
        );
        for (k, v) in &e.parameters {
            let _ = writeln!(o, "               parameter {k}={v}");
        }
    }
    let _ = writeln!(o);
}

/// The names of the pipeline's shared resources.
fn resources(o: &mut String, plan: &Plan) {
    let p = &plan.pipeline;
    let _ = writeln!(o, "resources");
    let n = &plan.names;
    let _ = writeln!(
        o,
        "  artifact bucket {}, key alias {}, topic {}",
        n.artifact_bucket, n.key_alias, n.topic
    );
    let _ = writeln!(
        o,
        "  team access policy {} (approve, retry and view where tag `team` = `{}`)",
        n.team_policy, p.team
    );
    let _ = writeln!(o);
}

/// The values of the plan, each with where it came from.
fn values(o: &mut String, plan: &Plan) {
    let _ = writeln!(o, "values");
    let _ = writeln!(
        o,
        "  coverage_min      {}% [{}]",
        plan.coverage_min.value,
        src(&plan.coverage_min)
    );
    let _ = writeln!(
        o,
        "  artifact          {} [{}]{}",
        plan.artifact.kind.value.as_str(),
        src(&plan.artifact.kind),
        plan.artifact
            .repository
            .as_ref()
            .map(|r| format!(" repository {} [{}]", r.value, src(r)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "  artifact paths    {} [{}]",
        plan.artifact.paths.value.join(", "),
        src(&plan.artifact.paths)
    );
    let _ = writeln!(
        o,
        "  deploy template   {} → stack `{}` [{}]",
        plan.deploy.template,
        plan.deploy.stack_name.value,
        src(&plan.deploy.stack_name)
    );
    let _ = writeln!(
        o,
        "  versioning        initial {} [{}], pre-release `{}` [{}]",
        plan.versioning.initial.value,
        src(&plan.versioning.initial),
        plan.versioning.prerelease.value,
        src(&plan.versioning.prerelease)
    );
    let events: Vec<&str> = plan
        .notifications
        .events
        .value
        .iter()
        .map(|e| e.as_str())
        .collect();
    let _ = writeln!(
        o,
        "  notifications     {} [{}] to {}",
        events.join(", "),
        src(&plan.notifications.events),
        if plan.notifications.email.is_empty() {
            "nobody".to_owned()
        } else {
            plan.notifications.email.join(", ")
        }
    );
    let _ = writeln!(o);
}

/// What `pipeforge deploy` does, in order, and where.
fn deploy_order(o: &mut String, plan: &Plan, org: &OrgPolicy) {
    let _ = writeln!(o, "deploy (in this order)");
    let width = plan.stacks.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &plan.stacks {
        let what = match s.kind {
            StackKind::Target => format!(
                "deploy and execution roles of `{}`, through the org's bootstrap role",
                s.environment.as_deref().unwrap_or_default()
            ),
            StackKind::Region => "artifact bucket and key of this region".to_owned(),
            StackKind::Pipeline => {
                "the pipeline, its builds, key, bucket and notifications".to_owned()
            }
        };
        let _ = writeln!(
            o,
            "  {}. stack {:<width$}  account {} {:<14} {}  ({what})",
            s.order, s.name, s.account, s.region, s.file
        );
    }
    let bucket = &plan.source.bucket.value;
    let _ = writeln!(
        o,
        "  bundle   s3://{bucket}/{}<content hash>/  (rendered files, uploaded first, never changed)",
        plan.source.bundle_prefix
    );
    let _ = writeln!(
        o,
        "  source   s3://{bucket}/{}  (uploaded last, SSE-KMS with {}; then pipeforge starts the pipeline)",
        plan.source.key, plan.source.kms_key.value
    );
    let home = &org.org.source.bucket;
    let _ = writeln!(
        o,
        "  lock     s3://{home}/{}  (held while a deploy runs)",
        plan.source.lock_key
    );
    let _ = writeln!(
        o,
        "  owner    s3://{home}/{}  (the repository and team that own the pipeline, and its tooling account: written by its first deploy; a deploy from another repository or team is refused)",
        plan.source.owner_key
    );
    let _ = writeln!(o);
}
