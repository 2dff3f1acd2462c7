//! The context of `stacks/target.yml.tera`: the deploy and execution roles of one environment,
//! in its account.

use serde::Serialize;

use super::{StackHeader, Tag, env_names, header, tags};
use crate::error::Result;
use crate::names::{BucketName, PolicyName, RoleName};
use crate::org::OrgPolicy;
use crate::plan::Plan;
use crate::render::templates::Templates;

/// A managed policy reference: an ARN, or a name in the target account.
#[derive(Debug, Serialize)]
pub struct PolicyRef<'a> {
    /// The ARN; validated (org schema pattern).
    pub arn: Option<&'a str>,
    /// The name (with optional path); validated (org schema pattern).
    pub name: Option<&'a str>,
}

impl<'a> PolicyRef<'a> {
    /// An ARN or a name, told apart by the `arn:` prefix.
    pub fn new(r: &'a str) -> Self {
        if r.starts_with("arn:") {
            PolicyRef {
                arn: Some(r),
                name: None,
            }
        } else {
            PolicyRef {
                arn: None,
                name: Some(r),
            }
        }
    }
}

/// Everything `stacks/target.yml.tera` sees.
#[derive(Debug, Serialize)]
pub struct TargetStackContext<'a> {
    /// Description and metadata.
    pub header: StackHeader<'a>,
    /// Tags.
    pub tags: Vec<Tag<'a>>,
    /// The CodePipeline name; validated.
    pub pipeline: &'a str,
    /// Environment name; validated.
    pub environment: &'a str,
    /// Tooling account; validated.
    pub tooling_account: &'a str,
    /// The pipeline's service role, the only principal that may assume the deploy role;
    /// validated.
    pub pipeline_role: &'a RoleName,
    /// Deploy role name; validated.
    pub deploy_role: &'a RoleName,
    /// Execution role name; validated.
    pub execution_role: &'a RoleName,
    /// The production guard policy's name (production environments only); validated.
    pub guard_policy: Option<&'a PolicyName>,
    /// The artifact bucket of the environment's region; validated.
    pub artifact_bucket: &'a BucketName,
    /// The region of that bucket and its key; validated.
    pub artifact_region: &'a str,
    /// The application's stack; validated.
    pub app_stack: &'a str,
    /// Managed policies of the execution role (org policy).
    pub execution_policies: Vec<PolicyRef<'a>>,
    /// Permissions boundary of the execution role (org policy).
    pub permissions_boundary: Option<PolicyRef<'a>>,
    /// The permissions boundary of the deploy role (the target accounts', from
    /// `pipeforge bootstrap`); validated.
    pub roles_boundary: String,
}

/// The context of `stacks/target.yml.tera` for one environment.
pub fn target_context<'a>(
    plan: &'a Plan,
    org: &'a OrgPolicy,
    templates: &'a Templates,
    env: &'a crate::model::Environment,
) -> Result<TargetStackContext<'a>> {
    let n = env_names(plan, &env.name)?;
    let d = &org.org.deploy;
    Ok(TargetStackContext {
        header: header(
            plan,
            templates,
            format!(
                "target stack of `{}` (team `{}`) for environment `{}`",
                plan.pipeline.name, plan.pipeline.team, env.name
            ),
        ),
        tags: tags(plan),
        pipeline: plan.names.pipeline.as_str(),
        environment: &env.name,
        tooling_account: &plan.pipeline.tooling_account,
        pipeline_role: &plan.names.pipeline_role,
        deploy_role: &n.deploy_role,
        execution_role: &n.execution_role,
        guard_policy: n.guard_policy.as_ref(),
        artifact_bucket: plan.names.bucket_for(&env.region.value),
        artifact_region: &env.region.value,
        app_stack: &plan.deploy.stack_name.value,
        execution_policies: d
            .execution_policy_arns
            .iter()
            .map(|p| PolicyRef::new(p))
            .collect(),
        permissions_boundary: d.permissions_boundary.as_deref().map(PolicyRef::new),
        roles_boundary: crate::names::InstallNames::new(&org.org.naming.prefix, &d.bootstrap_role)
            .target_roles_boundary,
    })
}
