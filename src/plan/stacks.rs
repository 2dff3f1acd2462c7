//! The stacks: every generated AWS name, and the CloudFormation stacks in deploy order (one
//! target stack per environment, one artifact store per extra region, the pipeline stack).

use super::{GatePlan, StackKind, StackPlan};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::names::{NameInputs, PipelineNames};
use crate::org::{OrgPolicy, ToolingAccount};

/// The file name of a stack template in the bundle.
pub fn stack_file(kind: StackKind, qualifier: &str) -> String {
    match kind {
        StackKind::Target => format!("stacks/target-{qualifier}.json"),
        StackKind::Region => format!("stacks/region-{qualifier}.json"),
        StackKind::Pipeline => "stacks/pipeline.json".to_owned(),
    }
}

/// Names every resource and lists the stacks in deploy order.
pub(super) fn stacks(
    model: &Model,
    org: &OrgPolicy,
    gates: &[GatePlan],
    tooling: &ToolingAccount,
) -> Result<(PipelineNames, Vec<StackPlan>)> {
    let o = &org.org;
    if o.deploy.execution_policy_arns.is_empty() {
        let why = if o.deploy.permissions_boundary.is_some() {
            "a permissions boundary only limits permissions, it grants none"
        } else {
            "pipeforge never grants AdministratorAccess by default"
        };
        return Err(Error::other(
            format!(
                "the org policy gives the applications' CloudFormation execution roles no permissions ({})",
                org.cite("deploy.execution_policy_arns")
            ),
            format!(
                "list the managed policies the application stacks may use in `deploy.execution_policy_arns`, preferably with a `deploy.permissions_boundary`; {why}"
            ),
        ));
    }
    let tooling_region = tooling.region.as_str();
    let mut regions: Vec<&str> = model
        .environments
        .iter()
        .map(|e| e.region.value.as_str())
        .filter(|r| *r != tooling_region)
        .collect();
    regions.sort_unstable();
    regions.dedup();
    let names = PipelineNames::derive(&NameInputs {
        prefix: &o.naming.prefix,
        name: &model.name,
        account: &tooling.account,
        region: tooling_region,
        gates: gates
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.reports.iter().map(|r| r.name.as_str()).collect(),
                )
            })
            .collect(),
        environments: model
            .environments
            .iter()
            .map(|e| (e.name.as_str(), e.production))
            .collect(),
        regions: regions.clone(),
        deploy_role: &o.deploy.deploy_role,
        execution_role: &o.deploy.execution_role,
    })?;
    let mut stacks = Vec::new();
    let mut push = |kind, name: String, file, account: &str, region: &str, env: Option<&str>| {
        stacks.push(StackPlan {
            order: stacks.len() + 1,
            kind,
            name,
            file,
            account: account.to_owned(),
            region: region.to_owned(),
            environment: env.map(str::to_owned),
            capabilities: vec!["CAPABILITY_NAMED_IAM"],
            template_bytes: None,
        });
    };
    for (e, n) in model.environments.iter().zip(&names.environments) {
        push(
            StackKind::Target,
            n.target_stack.to_string(),
            stack_file(StackKind::Target, &e.name),
            &e.account,
            &e.region.value,
            Some(&e.name),
        );
    }
    for r in &names.regions {
        push(
            StackKind::Region,
            r.stack.to_string(),
            stack_file(StackKind::Region, &r.region),
            &tooling.account,
            &r.region,
            None,
        );
    }
    push(
        StackKind::Pipeline,
        names.pipeline_stack.to_string(),
        stack_file(StackKind::Pipeline, ""),
        &tooling.account,
        tooling_region,
        None,
    );
    Ok((names, stacks))
}
