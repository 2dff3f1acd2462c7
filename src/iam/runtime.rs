//! What the roles pipeforge's stacks create need when they run, from AWS documentation, and the
//! same for the roles of the bootstrap stacks. Each rule below is a row of [`RULES`]: the role,
//! the actions, the resource, and the page that says so; the functions build the requests from
//! the rendered template (which role a project uses, which bucket is the artifact store…).
//!
//! What a gate's buildspec makes its role call (secrets, parameters, registries) is in
//! [`super::gates`]; what resource policies must allow, in [`super::resource`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::eval::{Context, Request, RolePolicies};
use super::handlers::Requirement;
use super::resolve::Template;

/// A documented need: role kind, actions, what they act on, source.
pub struct Rule {
    /// Which role.
    pub role: &'static str,
    /// Actions.
    pub actions: &'static [&'static str],
    /// On what.
    pub resource: &'static str,
    /// Where AWS documents it.
    pub source: &'static str,
}

/// The documented needs the checks below implement.
pub const RULES: &[Rule] = &[
    Rule {
        role: "CodeBuild project service role",
        actions: &["logs:CreateLogStream", "logs:PutLogEvents"],
        resource: "the project's log group (`LogsConfig.CloudWatchLogs.GroupName`), `:*`",
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/setting-up-service-role.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &[
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:GetBucketAcl",
            "s3:GetBucketLocation",
        ],
        resource: "the pipeline's artifact bucket (objects, bucket)",
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/setting-up-service-role.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &["s3:PutObject"],
        resource: "the artifact bucket, when the project's action has output artifacts",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodeBuild.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &["kms:Decrypt", "kms:GenerateDataKey"],
        resource: "the project's `EncryptionKey`",
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/setting-up-kms.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &[
            "codebuild:CreateReport",
            "codebuild:UpdateReport",
            "codebuild:BatchPutTestCases",
            "codebuild:BatchPutCodeCoverages",
        ],
        resource: "the project's report groups (`<project>-<report>`)",
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/test-permissions.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
        resource: "every project its CodeBuild actions name",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CodeBuild.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &[
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:GetBucketVersioning",
        ],
        resource: "the S3 source object and its bucket",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-S3.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &["s3:GetObject", "s3:PutObject", "s3:GetBucketVersioning"],
        resource: "the artifact store of its region",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/security-iam.html#how-to-custom-role",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &["kms:Decrypt", "kms:GenerateDataKey"],
        resource: "the artifact store's key (same region)",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/S3-artifact-encryption.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &[
            "s3:GetObject",
            "s3:PutObject",
            "s3:GetBucketVersioning",
            "kms:Decrypt",
            "kms:GenerateDataKey",
        ],
        resource: "the artifact store (bucket and key) of every region a cross-region action runs in",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/actions-create-cross-region.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &["kms:Decrypt"],
        resource: "the key of the source bucket (the snapshot is SSE-KMS)",
        source: "https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &["sts:AssumeRole"],
        resource: "every action `RoleArn` (the deploy roles)",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-create-cross-account.html",
    },
    Rule {
        role: "CodePipeline service role",
        actions: &["sns:Publish"],
        resource: "every approval action's `NotificationArn`",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/approvals-service-role-permissions.html",
    },
    Rule {
        role: "deploy role (CloudFormation actions of the pipeline)",
        actions: &[
            "cloudformation:CreateChangeSet",
            "cloudformation:DescribeChangeSet",
            "cloudformation:DeleteChangeSet",
            "cloudformation:ExecuteChangeSet",
            "cloudformation:DescribeStacks",
        ],
        resource: "the application stack of the action",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CloudFormation.html",
    },
    Rule {
        role: "deploy role (CloudFormation actions of the pipeline)",
        actions: &["iam:PassRole"],
        resource: "the action's CloudFormation `RoleArn` (passed to cloudformation.amazonaws.com)",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/action-reference-CloudFormation.html",
    },
    Rule {
        role: "deploy role (CloudFormation actions of the pipeline)",
        actions: &["s3:GetObject", "kms:Decrypt"],
        resource: "the artifact bucket and key of the action's region",
        source: "https://docs.aws.amazon.com/codepipeline/latest/userguide/pipelines-create-cross-account.html",
    },
];

fn props<'a>(tpl: &Template<'a>, id: &str) -> Json {
    tpl.json
        .pointer(&format!("/Resources/{id}/Properties"))
        .and_then(|p| tpl.resolve(p))
        .unwrap_or(Json::Null)
}

/// The logical id of the role a property refers to.
fn role_id(tpl: &Template<'_>, v: Option<&Json>) -> Option<String> {
    let mut refs = BTreeSet::new();
    tpl.references(v?, &mut refs);
    refs.into_iter()
        .find(|r| tpl.type_of(r) == Some("AWS::IAM::Role"))
}

fn id_with_arn(tpl: &Template<'_>, arn: &str) -> Option<String> {
    tpl.resources()
        .into_iter()
        .map(|(id, _)| id)
        .find(|id| tpl.arn_of(id).as_deref() == Some(arn))
        .map(str::to_owned)
}

fn add(
    needs: &mut BTreeMap<String, Vec<Requirement>>,
    role: &str,
    actions: &[&str],
    resource: &str,
    ctx: &Context,
    why: &str,
) {
    let list = needs.entry(role.to_owned()).or_default();
    for a in actions {
        list.push(Requirement {
            request: Request {
                action: (*a).to_owned(),
                resource: resource.to_owned(),
                context: ctx.clone(),
            },
            why: why.to_owned(),
        });
    }
}

fn stages(pipeline: &Json) -> Vec<&Json> {
    pipeline["Stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Actions"].as_array().into_iter().flatten())
        .collect()
}

/// Requirements by role logical id (or ARN, for the deploy roles).
type Needs = BTreeMap<String, Vec<Requirement>>;

/// The resources of a template and their types, by logical id.
fn typed_resources(tpl: &Template<'_>) -> Vec<(String, String)> {
    tpl.resources()
        .into_iter()
        .map(|(id, r)| {
            (
                id.to_owned(),
                r["Type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn bucket_arn(tpl: &Template<'_>, name: &str) -> String {
    format!("arn:{}:s3:::{name}", tpl.env.partition)
}

/// What an artifact write carries: SSE-KMS, as the artifact buckets require.
fn sse() -> Context {
    Context::knowing(&["s3:"]).with("s3:x-amz-server-side-encryption", "aws:kms")
}

/// A pipeline's service role, and what the rules of its actions and projects need to know.
struct PipelineRole<'s> {
    /// The pipeline stack's name.
    stack: &'s str,
    /// The role's logical id.
    role: String,
    /// Why the role needs it (the stack and the pipeline).
    why: String,
    /// The artifact buckets of the tooling region.
    artifact_buckets: Vec<String>,
}

/// Requirements of the roles a pipeline stack creates, by role logical id. `source_key` is the
/// key of the org's source bucket (the snapshot is SSE-KMS with it), when known.
fn pipeline_needs(tpl: &Template<'_>, stack: &str, source_key: Option<&str>) -> Needs {
    let mut needs = BTreeMap::new();
    let resources = typed_resources(tpl);
    for (id, t) in &resources {
        if t != "AWS::CodePipeline::Pipeline" {
            continue;
        }
        let pl = props(tpl, id);
        let why = format!("{stack}: pipeline `{id}`");
        let Some(role) = role_id(
            tpl,
            tpl.json
                .pointer(&format!("/Resources/{id}/Properties/RoleArn")),
        ) else {
            continue;
        };
        let artifact_buckets = artifact_store_needs(&mut needs, tpl, &pl, &role, &why);
        let pipeline = PipelineRole {
            stack,
            role,
            why,
            artifact_buckets,
        };
        for a in stages(&pl) {
            action_needs(&mut needs, tpl, a, &pipeline, source_key);
        }
        // Every project: logs, artifacts, key, reports.
        for (pid, pt) in &resources {
            if pt == "AWS::CodeBuild::Project" {
                project_needs(&mut needs, tpl, &resources, pid, &pipeline);
            }
        }
    }
    needs
}

/// The pipeline role's needs on every artifact store: the tooling region's, and those of the
/// regions that cross-region actions run in (CodePipeline copies the artifacts there with its
/// own role). Returns the tooling region's buckets.
fn artifact_store_needs(
    needs: &mut Needs,
    tpl: &Template<'_>,
    pl: &Json,
    role: &str,
    why: &str,
) -> Vec<String> {
    let none = Context::default();
    let stores: Vec<(bool, &Json)> = match pl.get("ArtifactStores").and_then(Json::as_array) {
        Some(a) => a
            .iter()
            .map(|s| {
                (
                    s["Region"].as_str() == Some(tpl.env.region.as_str()),
                    &s["ArtifactStore"],
                )
            })
            .collect(),
        None => pl
            .get("ArtifactStore")
            .into_iter()
            .map(|s| (true, s))
            .collect(),
    };
    let mut artifact_buckets = Vec::new();
    for (home, store) in stores {
        let b = store["Location"].as_str().unwrap_or_default();
        if home {
            artifact_buckets.push(b.to_owned());
        }
        let objects = format!("{}/*", bucket_arn(tpl, b));
        add(needs, role, &["s3:GetObject"], &objects, &none, why);
        add(needs, role, &["s3:PutObject"], &objects, &sse(), why);
        add(
            needs,
            role,
            &["s3:GetBucketVersioning"],
            &bucket_arn(tpl, b),
            &none,
            why,
        );
        if let Some(k) = store["EncryptionKey"]["Id"].as_str() {
            add(
                needs,
                role,
                &["kms:Decrypt", "kms:GenerateDataKey"],
                k,
                &none,
                why,
            );
        }
    }
    artifact_buckets
}

/// The pipeline role's needs for one action, by its provider, and the role it assumes.
fn action_needs(
    needs: &mut Needs,
    tpl: &Template<'_>,
    a: &Json,
    pipeline: &PipelineRole<'_>,
    source_key: Option<&str>,
) {
    let (role, why, none) = (&pipeline.role, &pipeline.why, Context::default());
    let c = &a["Configuration"];
    match a["ActionTypeId"]["Provider"].as_str().unwrap_or_default() {
        "S3" => s3_source_needs(needs, tpl, c, pipeline, source_key),
        "CodeBuild" => codebuild_action_needs(needs, tpl, a, pipeline),
        "Manual" => {
            if let Some(t) = c["NotificationArn"].as_str() {
                add(needs, role, &["sns:Publish"], t, &none, why);
            }
        }
        _ => {}
    }
    if let Some(r) = a["RoleArn"].as_str() {
        add(needs, role, &["sts:AssumeRole"], r, &none, why);
    }
}

/// The S3 source action: the snapshot object, its bucket, and its key when known.
fn s3_source_needs(
    needs: &mut Needs,
    tpl: &Template<'_>,
    c: &Json,
    pipeline: &PipelineRole<'_>,
    source_key: Option<&str>,
) {
    let (role, why, none) = (&pipeline.role, &pipeline.why, Context::default());
    let (b, k) = (
        c["S3Bucket"].as_str().unwrap_or_default(),
        c["S3ObjectKey"].as_str().unwrap_or_default(),
    );
    add(
        needs,
        role,
        &["s3:GetObject", "s3:GetObjectVersion"],
        &format!("{}/{k}", bucket_arn(tpl, b)),
        &none,
        why,
    );
    add(
        needs,
        role,
        &["s3:GetBucketVersioning"],
        &bucket_arn(tpl, b),
        &none,
        why,
    );
    if let Some(k) = source_key {
        add(needs, role, &["kms:Decrypt"], k, &none, why);
    }
}

/// A CodeBuild action: the pipeline role starts the project; a project whose action has output
/// artifacts writes them to the artifact buckets.
fn codebuild_action_needs(
    needs: &mut Needs,
    tpl: &Template<'_>,
    a: &Json,
    pipeline: &PipelineRole<'_>,
) {
    let project = a["Configuration"]["ProjectName"]
        .as_str()
        .unwrap_or_default();
    let arn = format!(
        "arn:{}:codebuild:{}:{}:project/{project}",
        tpl.env.partition, tpl.env.region, tpl.env.account
    );
    add(
        needs,
        &pipeline.role,
        &["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
        &arn,
        &Context::default(),
        &pipeline.why,
    );
    let writes = a
        .get("OutputArtifacts")
        .and_then(Json::as_array)
        .is_some_and(|o| !o.is_empty());
    if writes
        && let Some(pid) = id_with_arn(tpl, &arn)
        && let Some(r) = role_id(
            tpl,
            tpl.json
                .pointer(&format!("/Resources/{pid}/Properties/ServiceRole")),
        )
    {
        for b in &pipeline.artifact_buckets {
            add(
                needs,
                &r,
                &["s3:PutObject"],
                &format!("{}/*", bucket_arn(tpl, b)),
                &sse(),
                &format!("{}: project `{pid}` (output artifacts)", pipeline.stack),
            );
        }
    }
}

/// A project's service role: its log group, the artifact buckets, its key, what its buildspec
/// calls and its report groups.
fn project_needs(
    needs: &mut Needs,
    tpl: &Template<'_>,
    resources: &[(String, String)],
    pid: &str,
    pipeline: &PipelineRole<'_>,
) {
    let pp = props(tpl, pid);
    let why = format!("{}: project `{pid}`", pipeline.stack);
    let Some(r) = role_id(
        tpl,
        tpl.json
            .pointer(&format!("/Resources/{pid}/Properties/ServiceRole")),
    ) else {
        return;
    };
    let none = Context::default();
    if let Some(g) = pp["LogsConfig"]["CloudWatchLogs"]["GroupName"].as_str() {
        let arn = format!(
            "arn:{}:logs:{}:{}:log-group:{g}:*",
            tpl.env.partition, tpl.env.region, tpl.env.account
        );
        add(
            needs,
            &r,
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            &arn,
            &none,
            &why,
        );
    }
    for b in &pipeline.artifact_buckets {
        add(
            needs,
            &r,
            &["s3:GetObject", "s3:GetObjectVersion"],
            &format!("{}/*", bucket_arn(tpl, b)),
            &none,
            &why,
        );
        add(
            needs,
            &r,
            &["s3:GetBucketAcl", "s3:GetBucketLocation"],
            &bucket_arn(tpl, b),
            &none,
            &why,
        );
    }
    if let Some(k) = pp["EncryptionKey"].as_str() {
        add(
            needs,
            &r,
            &["kms:Decrypt", "kms:GenerateDataKey"],
            k,
            &none,
            &why,
        );
    }
    buildspec_needs(needs, tpl, &pp, &r, &why);
    report_group_needs(needs, tpl, resources, &pp, &r, &why);
}

/// What a project's buildspec makes its role call (see [`super::gates`]).
fn buildspec_needs(needs: &mut Needs, tpl: &Template<'_>, pp: &Json, role: &str, why: &str) {
    let Some(spec) = pp["Source"]["BuildSpec"]
        .as_str()
        .and_then(super::gates::parse)
    else {
        return;
    };
    let var = |n: &str| {
        pp["Environment"]["EnvironmentVariables"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["Name"] == n)
            .and_then(|v| v["Value"].as_str())
    };
    let publish = super::gates::Publish {
        bucket: var("PF_ARTIFACT_BUCKET"),
        key: var("PF_KMS_KEY_ARN"),
    };
    needs
        .entry(role.to_owned())
        .or_default()
        .extend(super::gates::needs(
            &spec,
            &tpl.env,
            &publish,
            &format!("{why} (its buildspec)"),
        ));
}

/// A project's report groups (`<project>-<report>`): its role creates and fills their reports.
fn report_group_needs(
    needs: &mut Needs,
    tpl: &Template<'_>,
    resources: &[(String, String)],
    pp: &Json,
    role: &str,
    why: &str,
) {
    let name = pp["Name"].as_str().unwrap_or_default();
    for (gid, gt) in resources {
        let gname = props(tpl, gid)["Name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if gt == "AWS::CodeBuild::ReportGroup" && gname.starts_with(&format!("{name}-")) {
            let arn = tpl.arn_of(gid).unwrap_or_default();
            add(
                needs,
                role,
                &[
                    "codebuild:CreateReport",
                    "codebuild:UpdateReport",
                    "codebuild:BatchPutTestCases",
                    "codebuild:BatchPutCodeCoverages",
                ],
                &arn,
                &Context::default(),
                why,
            );
        }
    }
}

/// What the deploy roles the pipeline assumes need, by role ARN (they live in target stacks).
pub fn deploy_role_needs(tpl: &Template<'_>, stack: &str) -> BTreeMap<String, Vec<Requirement>> {
    let mut needs = BTreeMap::new();
    let p = tpl.env.partition.clone();
    for (id, r) in tpl.resources() {
        if r["Type"] != "AWS::CodePipeline::Pipeline" {
            continue;
        }
        let pl = props(tpl, id);
        let stores: BTreeMap<String, (String, String)> =
            match pl.get("ArtifactStores").and_then(Json::as_array) {
                Some(a) => a
                    .iter()
                    .map(|s| {
                        let st = &s["ArtifactStore"];
                        (
                            s["Region"].as_str().unwrap_or_default().to_owned(),
                            (
                                st["Location"].as_str().unwrap_or_default().to_owned(),
                                st["EncryptionKey"]["Id"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned(),
                            ),
                        )
                    })
                    .collect(),
                None => std::iter::once((
                    tpl.env.region.clone(),
                    (
                        pl["ArtifactStore"]["Location"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        pl["ArtifactStore"]["EncryptionKey"]["Id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                ))
                .collect(),
            };
        for a in stages(&pl) {
            let (Some(role), Some("CloudFormation")) = (
                a["RoleArn"].as_str(),
                a["ActionTypeId"]["Provider"].as_str(),
            ) else {
                continue;
            };
            let account = role.split(':').nth(4).unwrap_or_default();
            let region = a["Region"].as_str().unwrap_or(&tpl.env.region);
            let c = &a["Configuration"];
            let app = format!(
                "arn:{p}:cloudformation:{region}:{account}:stack/{}/*",
                c["StackName"].as_str().unwrap_or_default()
            )
            .replace("/*", "/00000000-0000-4000-8000-000000000000");
            let why = format!(
                "{stack}: action `{}`",
                a["Name"].as_str().unwrap_or_default()
            );
            let cs = Context::default();
            let (actions, pass): (&[&str], bool) = match c["ActionMode"].as_str() {
                Some("CHANGE_SET_REPLACE") => (
                    &[
                        "cloudformation:CreateChangeSet",
                        "cloudformation:DescribeChangeSet",
                        "cloudformation:DeleteChangeSet",
                        "cloudformation:DescribeStacks",
                    ],
                    true,
                ),
                _ => (
                    &[
                        "cloudformation:ExecuteChangeSet",
                        "cloudformation:DescribeChangeSet",
                        "cloudformation:DescribeStacks",
                    ],
                    false,
                ),
            };
            add(&mut needs, role, actions, &app, &cs, &why);
            if pass && let Some(exec) = c["RoleArn"].as_str() {
                let ctx = Context::knowing(&["iam:"])
                    .with("iam:PassedToService", "cloudformation.amazonaws.com");
                add(&mut needs, role, &["iam:PassRole"], exec, &ctx, &why);
            }
            if let Some((bucket, key)) = stores.get(region) {
                add(
                    &mut needs,
                    role,
                    &["s3:GetObject"],
                    &format!("arn:{p}:s3:::{bucket}/*"),
                    &cs,
                    &why,
                );
                if key.starts_with("arn:") && !key.contains(":alias/") {
                    add(&mut needs, role, &["kms:Decrypt"], key, &cs, &why);
                }
            }
        }
    }
    needs
}

/// Managed policies of other templates, by ARN (see [`Template::role_policies_with`]).
pub type External = BTreeMap<String, (String, Json)>;

/// A role, its ARN, and what it needs at run time.
#[derive(Clone, Debug)]
pub struct RoleNeeds {
    /// Its policies and boundary.
    pub policies: RolePolicies,
    /// Its ARN (the principal that resource policies see).
    pub arn: String,
    /// What it needs.
    pub needs: Vec<Requirement>,
}

fn role_needs(
    tpl: &Template<'_>,
    id: &str,
    external: &External,
    needs: Vec<Requirement>,
) -> Result<RoleNeeds, String> {
    Ok(RoleNeeds {
        policies: tpl.role_policies_with(id, external)?,
        arn: tpl
            .arn_of(id)
            .ok_or_else(|| format!("`{id}` is not a role of the template"))?,
        needs,
    })
}

/// Every role of a pipeline stack with what it needs at run time; `source_key` is the key of
/// the org's source bucket, when known.
pub fn stack_roles(
    tpl: &Template<'_>,
    stack: &str,
    external: &External,
    source_key: Option<&str>,
) -> Result<Vec<RoleNeeds>, String> {
    let mut out = Vec::new();
    for (role, reqs) in pipeline_needs(tpl, stack, source_key) {
        out.push(role_needs(tpl, &role, external, reqs)?);
    }
    Ok(out)
}

/// The roles of target stacks that the deploy actions of `pipeline` use, with their needs.
pub fn target_roles(
    pipeline: &Template<'_>,
    pipeline_stack: &str,
    targets: &[Template<'_>],
    external: &dyn Fn(&Template<'_>) -> External,
) -> Result<Vec<RoleNeeds>, String> {
    let needs = deploy_role_needs(pipeline, pipeline_stack);
    let mut out = Vec::new();
    for (arn, reqs) in needs {
        let found = targets
            .iter()
            .find_map(|t| id_with_arn(t, &arn).map(|id| (t, id)));
        let (t, id) =
            found.ok_or_else(|| format!("no target stack creates the deploy role `{arn}`"))?;
        out.push(role_needs(t, &id, &external(t), reqs)?);
    }
    Ok(out)
}

/// The documented needs of the installation's roles (`tooling.json`, `target.json`): what the
/// webhook, the worker and the bootstrap role call, from pipeforge's own code and the service
/// documentation pages cited.
pub const INSTALL_RULES: &[Rule] = &[
    Rule {
        role: "webhook and worker functions",
        actions: &["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
        resource: "`jobs/*` in the status bucket; ListBucket on the bucket without conditions, else a missing status is 403 rather than 404",
        source: "https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html#API_GetObject_RequestSyntax",
    },
    Rule {
        role: "webhook and worker functions",
        actions: &["kms:Decrypt", "kms:GenerateDataKey"],
        resource: "the key of the queues, the secret and the environment variables",
        source: "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html",
    },
    Rule {
        role: "recovery role (`pipeforge recover`)",
        actions: &[
            "cloudformation:DescribeStacks",
            "cloudformation:DeleteStack",
            "iam:PassRole",
        ],
        resource: "an application stack, deleted through the recovery execution role (`cloudformation:RoleArn`), which is passed to cloudformation.amazonaws.com",
        source: "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html",
    },
    Rule {
        role: "worker function",
        actions: &["secretsmanager:GetSecretValue"],
        resource: "the vendor API credentials of `webhook.pull_requests` (`token_secret`, `app_key_secret`), when previews are on",
        source: "https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_iam-permissions.html",
    },
    Rule {
        role: "worker function",
        actions: &["kms:Decrypt"],
        resource: "their `token_key`, through Secrets Manager (`kms:ViaService`) with the secret's ARN as encryption context",
        source: "https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html",
    },
    Rule {
        role: "worker function",
        actions: &["codepipeline:StartPipelineExecution"],
        resource: "the org's pipelines (`<prefix>-*`): pipelines have no trigger, a deploy starts them after the source upload",
        source: "https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_StartPipelineExecution.html",
    },
    Rule {
        role: "worker function and bootstrap role",
        actions: &[
            "cloudformation:ListStacks",
            "iam:GetAccountSummary",
            "servicequotas:GetServiceQuota",
        ],
        resource: "`*` (these reads take no resource): a deploy reads each account's usage and quotas before it changes anything",
        source: "https://docs.aws.amazon.com/service-authorization/latest/reference/list_servicequotas.html",
    },
    Rule {
        role: "worker function",
        actions: &[
            "cloudformation:CreateChangeSet",
            "cloudformation:DeleteStack",
            "iam:PassRole",
        ],
        resource: "pipeforge's stacks, naming the execution role (`cloudformation:RoleArn`), which is passed to cloudformation.amazonaws.com",
        source: "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html",
    },
];

/// The CloudFormation reads and tagging of a role that deploys pipeforge's stacks.
const DEPLOYER_OPS: [&str; 6] = [
    "cloudformation:DescribeChangeSet",
    "cloudformation:DescribeStackEvents",
    "cloudformation:DescribeStacks",
    "cloudformation:GetTemplate",
    "cloudformation:ListChangeSets",
    "cloudformation:TagResource",
];

/// What reads the account's usage and quotas, and why.
const QUOTA_READS_WHY: &str = "read the account's usage and quotas before a deploy (src/capacity/quotas.rs): these actions take no resource";

/// The ARN of a resource of the template, or nothing.
fn arn_or_empty(tpl: &Template<'_>, id: &str) -> String {
    tpl.arn_of(id).unwrap_or_default()
}

/// The ARN of the key a property of a resource refers to.
fn key_of(tpl: &Template<'_>, id: &str, prop: &str) -> Option<String> {
    let mut refs = BTreeSet::new();
    tpl.references(
        tpl.json
            .pointer(&format!("/Resources/{id}/Properties/{prop}"))?,
        &mut refs,
    );
    refs.into_iter().find_map(|k| tpl.arn_of(&k))
}

/// What a role that deploys `stack` through the execution role `exec` needs: the reads, the
/// change sets it creates and executes (pipeforge's own names), and passing `exec`.
fn deployer_needs(needs: &mut Needs, role: &str, stack: &str, exec: &str, why: &str) {
    add(needs, role, &DEPLOYER_OPS, stack, &Context::default(), why);
    let with_role =
        Context::knowing(&["cloudformation:RoleArn"]).with("cloudformation:RoleArn", exec);
    add(
        needs,
        role,
        &[
            "cloudformation:CreateChangeSet",
            "cloudformation:DeleteStack",
        ],
        stack,
        &with_role,
        why,
    );
    let own = Context::knowing(&["cloudformation:ChangeSetName"])
        .with("cloudformation:ChangeSetName", "pipeforge-deploy-abc123-0");
    add(
        needs,
        role,
        &[
            "cloudformation:ExecuteChangeSet",
            "cloudformation:DeleteChangeSet",
        ],
        stack,
        &own,
        why,
    );
    let pass =
        Context::knowing(&["iam:"]).with("iam:PassedToService", "cloudformation.amazonaws.com");
    add(needs, role, &["iam:PassRole"], exec, &pass, why);
}

/// The needs of the installation's roles: `tooling.json`'s functions (when the template has
/// the worker) and `target.json`'s bootstrap and recovery roles (when it has the bootstrap role).
fn install_needs(tpl: &Template<'_>, target_account: &str) -> Needs {
    let mut needs = BTreeMap::new();
    let ids: BTreeSet<&str> = tpl.resources().into_iter().map(|(id, _)| id).collect();
    if ids.contains("WorkerRole") {
        let why = "tooling.json: pipeforge's own calls";
        queue_and_status_needs(&mut needs, tpl, why);
        worker_source_needs(&mut needs, tpl, why);
        for (role, reqs) in vendor_credential_needs(tpl) {
            needs.entry(role).or_default().extend(reqs);
        }
        worker_account_needs(&mut needs, tpl, target_account, why);
    }
    if ids.contains("BootstrapRole") {
        bootstrap_needs(&mut needs, tpl);
        if ids.contains("RecoveryRole") {
            recovery_needs(&mut needs, tpl);
        }
        doctor_needs(&mut needs, tpl);
    }
    needs
}

/// The webhook and the worker: job statuses, the job queue, the dead-letter queue and the
/// webhook secret.
fn queue_and_status_needs(needs: &mut Needs, tpl: &Template<'_>, why: &str) {
    let none = Context::default();
    let arn = |id: &str| arn_or_empty(tpl, id);
    for role in ["WebhookRole", "WorkerRole"] {
        add(
            needs,
            role,
            &["s3:GetObject", "s3:PutObject"],
            &format!("{}/jobs/job-1.json", arn("StatusBucket")),
            &none,
            why,
        );
        add(
            needs,
            role,
            &["s3:ListBucket"],
            &arn("StatusBucket"),
            &Context::knowing(&["s3:"]),
            why,
        );
        if let Some(k) = key_of(tpl, "JobQueue", "KmsMasterKeyId") {
            add(
                needs,
                role,
                &["kms:Decrypt", "kms:GenerateDataKey"],
                &k,
                &none,
                why,
            );
        }
    }
    add(
        needs,
        "WebhookRole",
        &["sqs:SendMessage", "sqs:GetQueueAttributes"],
        &arn("JobQueue"),
        &none,
        why,
    );
    add(
        needs,
        "WebhookRole",
        &["secretsmanager:GetSecretValue"],
        &arn("WebhookSecret"),
        &none,
        why,
    );
    add(
        needs,
        "WorkerRole",
        &[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
        ],
        &arn("JobQueue"),
        &none,
        why,
    );
    add(
        needs,
        "WorkerRole",
        &["sqs:SendMessage", "sqs:GetQueueUrl"],
        &arn("DeadLetterQueue"),
        &none,
        why,
    );
}

/// A listing key's name under `set/` (`<set digest hex>.<record ETag>`), for the requests.
pub const LISTING_KEY_EXAMPLE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.d41d8cd98f00b204e9800998ecf8427e";

/// The worker in the source bucket: snapshots, deploy locks, owner records, deploy records and
/// their listing keys, fleet rollouts, and the bucket's key.
fn worker_source_needs(needs: &mut Needs, tpl: &Template<'_>, why: &str) {
    let none = Context::default();
    let source = arn_or_empty(tpl, "SourceBucket");
    let mut worker = |actions: &[&str], resource: &str, ctx: &Context| {
        add(needs, "WorkerRole", actions, resource, ctx, why);
    };
    worker(
        &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        &format!("{source}/team/pipeline/source.zip"),
        &none,
    );
    // The pipeline's lock, and its owner record (created by a first deploy; the source
    // bucket's policy keeps the worker from replacing or deleting one).
    worker(
        &["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        &format!("{source}/pipelines/pipeline/deploy.lock"),
        &none,
    );
    worker(
        &["s3:GetObject"],
        &format!("{source}/pipelines/pipeline/owner.json"),
        &none,
    );
    // Created only, with `If-None-Match: *` (the source bucket's policy denies the rest).
    worker(
        &["s3:PutObject"],
        &format!("{source}/pipelines/pipeline/owner.json"),
        &Context::knowing(&["s3:"]).with("s3:if-none-match", "*"),
    );
    // The deploy record a deploy writes, its listing key (written after it; the older keys,
    // listed first, deleted), read back by the fleet and by a rollout job.
    worker(
        &["s3:GetObject", "s3:PutObject"],
        &format!("{source}/pipelines/pipeline/deployed.json"),
        &none,
    );
    worker(
        &["s3:PutObject", "s3:DeleteObject"],
        &format!("{source}/pipelines/pipeline/set/{LISTING_KEY_EXAMPLE}"),
        &none,
    );
    // Fleet rollout jobs: the rollout's state and its candidate set, read only (the source
    // bucket's policy denies the worker any write under `fleet/`).
    worker(
        &["s3:GetObject"],
        &format!("{source}/fleet/rollouts/rollout.json"),
        &none,
    );
    worker(
        &["s3:GetObject"],
        &format!("{source}/fleet/candidates/candidate.json"),
        &none,
    );
    worker(&["s3:ListBucket"], &source, &Context::knowing(&["s3:"]));
    if let Some(k) = key_of(tpl, "SourceBucket", "BucketEncryption") {
        worker(&["kms:Decrypt", "kms:GenerateDataKey"], &k, &none);
    }
}

/// The worker role's name (`<prefix>-pipeforge-worker-…`), when the template names it.
fn worker_role_name(tpl: &Template<'_>) -> Option<String> {
    tpl.json
        .pointer("/Resources/WorkerRole/Properties/RoleName")
        .and_then(|n| tpl.resolve(n))
        .and_then(|n| n.as_str().map(str::to_owned))
}

/// The worker in the accounts it deploys to: the bootstrap role it assumes in
/// `target_account`, the pipelines it starts, the usage and quotas it reads, and the stacks it
/// deploys in its own account.
fn worker_account_needs(needs: &mut Needs, tpl: &Template<'_>, target_account: &str, why: &str) {
    let (p, r, a) = (&tpl.env.partition, &tpl.env.region, &tpl.env.account);
    let none = Context::default();
    if let Some(role) = tpl
        .json
        .pointer("/Resources/WorkerRole/Properties/Policies/0/PolicyDocument/Statement")
        .and_then(Json::as_array)
        .and_then(|s| s.iter().find(|st| st["Sid"] == "AssumeBootstrapRoles"))
        .and_then(|st| tpl.resolve(&st["Resource"]))
        .and_then(|r| r.as_str().map(str::to_owned))
    {
        add(
            needs,
            "WorkerRole",
            &["sts:AssumeRole"],
            &role.replace(":iam::*:", &format!(":iam::{target_account}:")),
            &none,
            why,
        );
    }
    // A deploy starts the pipeline after its source upload (no EventBridge trigger), and
    // reads the account's usage and quotas before it changes anything.
    let worker_prefix = worker_role_name(tpl)
        .and_then(|n| n.split("-pipeforge-").next().map(str::to_owned))
        .unwrap_or_else(|| "pf".to_owned());
    add(
        needs,
        "WorkerRole",
        &["codepipeline:StartPipelineExecution"],
        &format!("arn:{p}:codepipeline:{r}:{a}:{worker_prefix}-x"),
        &none,
        "start the pipeline after its source upload: https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_StartPipelineExecution.html",
    );
    add(
        needs,
        "WorkerRole",
        &[
            "cloudformation:ListStacks",
            "codebuild:ListProjects",
            "codepipeline:ListPipelines",
            "iam:GetAccountSummary",
            "s3:ListAllMyBuckets",
            "servicequotas:GetServiceQuota",
        ],
        "*",
        &none,
        QUOTA_READS_WHY,
    );
    let exec = arn_or_empty(tpl, super::EXECUTION_ROLE_ID);
    for stack in ["pf-x-pipeline", "pf-x-artifacts-eu-west-1"] {
        let prefix = worker_role_name(tpl).unwrap_or_default();
        let prefix = prefix
            .split("-pipeforge-")
            .next()
            .unwrap_or("pf")
            .to_owned();
        let stack = stack.replacen("pf", &prefix, 1);
        deployer_needs(
            needs,
            "WorkerRole",
            &format!(
                "arn:{p}:cloudformation:{r}:{a}:stack/{stack}/00000000-0000-4000-8000-000000000000"
            ),
            &exec,
            why,
        );
    }
}

/// The bootstrap role of `target.json`: it deploys the target stacks and reads the account's
/// usage and quotas.
fn bootstrap_needs(needs: &mut Needs, tpl: &Template<'_>) {
    let (p, r, a) = (&tpl.env.partition, &tpl.env.region, &tpl.env.account);
    let why = "target.json: pipeforge's own calls";
    let exec = arn_or_empty(tpl, super::EXECUTION_ROLE_ID);
    let stack = format!(
        "arn:{p}:cloudformation:{r}:{a}:stack/PREFIX-x-dev-target/00000000-0000-4000-8000-000000000000"
    );
    let prefix = tpl
        .json
        .pointer(
            "/Resources/BootstrapRole/Properties/Policies/0/PolicyDocument/Statement/0/Resource",
        )
        .and_then(|v| tpl.resolve(v))
        .and_then(|v| v.as_str().map(str::to_owned))
        .and_then(|s| {
            s.split(":stack/")
                .nth(1)
                .map(|x| x.split('-').next().unwrap_or("pf").to_owned())
        })
        .unwrap_or_else(|| "pf".to_owned());
    deployer_needs(
        needs,
        "BootstrapRole",
        &stack.replace("PREFIX", &prefix),
        &exec,
        why,
    );
    add(
        needs,
        "BootstrapRole",
        &[
            "cloudformation:ListStacks",
            "iam:GetAccountSummary",
            "servicequotas:GetServiceQuota",
        ],
        "*",
        &Context::default(),
        QUOTA_READS_WHY,
    );
}

/// The recovery role of `target.json` (`pipeforge recover`): it reads an application stack and
/// deletes it through the recovery execution role.
fn recovery_needs(needs: &mut Needs, tpl: &Template<'_>) {
    let (p, r, a) = (&tpl.env.partition, &tpl.env.region, &tpl.env.account);
    let why = "target.json: `pipeforge recover`";
    let app = format!(
        "arn:{p}:cloudformation:{r}:{a}:stack/orders-api/00000000-0000-4000-8000-000000000000"
    );
    let exec = arn_or_empty(tpl, "RecoveryExecutionRole");
    add(
        needs,
        "RecoveryRole",
        &["cloudformation:DescribeStacks"],
        &app,
        &Context::default(),
        why,
    );
    let with_role =
        Context::knowing(&["cloudformation:RoleArn"]).with("cloudformation:RoleArn", &exec);
    add(
        needs,
        "RecoveryRole",
        &["cloudformation:DeleteStack"],
        &app,
        &with_role,
        why,
    );
    let pass =
        Context::knowing(&["iam:"]).with("iam:PassedToService", "cloudformation.amazonaws.com");
    add(needs, "RecoveryRole", &["iam:PassRole"], &exec, &pass, why);
}

/// The bootstrap role for `pipeforge doctor`: it reads the roles and the boundary of
/// `target.json`.
fn doctor_needs(needs: &mut Needs, tpl: &Template<'_>) {
    let doctor = "target.json: `pipeforge doctor`";
    let none = Context::default();
    let exec = arn_or_empty(tpl, super::EXECUTION_ROLE_ID);
    add(
        needs,
        "BootstrapRole",
        &["iam:GetRole"],
        &exec,
        &none,
        doctor,
    );
    if let Some(r) = tpl.arn_of("RecoveryExecutionRole") {
        add(needs, "BootstrapRole", &["iam:GetRole"], &r, &none, doctor);
    }
    if let Some(b) = tpl.arn_of("RolesBoundary") {
        add(
            needs,
            "BootstrapRole",
            &["iam:GetPolicy"],
            &b,
            &none,
            doctor,
        );
    }
}

/// The secret a Secrets Manager reference of the org policy reads: an ARN as written, or the
/// ARN of a secret named so in the template's account and region (with its random suffix).
fn secret_arns(tpl: &Template<'_>, secret: &str) -> Vec<String> {
    if secret.starts_with("arn:") {
        // A complete ARN, or one without the suffix (then the secret's ARN has one).
        vec![secret.to_owned(), format!("{secret}-AbCdEf")]
    } else {
        let (p, r, a) = (&tpl.env.partition, &tpl.env.region, &tpl.env.account);
        vec![format!(
            "arn:{p}:secretsmanager:{r}:{a}:secret:{secret}-AbCdEf"
        )]
    }
}

/// What pull-request previews make the worker call: `GetSecretValue` on each vendor credential
/// secret the template's `Metadata.pipeforge.vendor_credentials` lists (the org policy's
/// `webhook.pull_requests`), and `kms:Decrypt` on their customer managed keys, as Secrets
/// Manager asks it (through the service, with the secret's ARN as encryption context).
fn vendor_credential_needs(tpl: &Template<'_>) -> BTreeMap<String, Vec<Requirement>> {
    let mut needs = BTreeMap::new();
    let listed = |k: &str| -> Vec<String> {
        tpl.json
            .pointer(&format!("/Metadata/pipeforge/vendor_credentials/{k}"))
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let why = "tooling.json: pull-request feedback (`webhook.pull_requests`)";
    let none = Context::default();
    for secret in listed("secrets") {
        for arn in secret_arns(tpl, &secret) {
            add(
                &mut needs,
                "WorkerRole",
                &["secretsmanager:GetSecretValue"],
                &arn,
                &none,
                why,
            );
            let region = arn.split(':').nth(3).unwrap_or_default().to_owned();
            for key in listed("keys") {
                let ctx = Context::knowing(&["kms:"])
                    .with(
                        "kms:ViaService",
                        format!("secretsmanager.{region}.amazonaws.com"),
                    )
                    .with("kms:EncryptionContext:SecretARN", arn.as_str());
                add(&mut needs, "WorkerRole", &["kms:Decrypt"], &key, &ctx, why);
            }
        }
    }
    needs
}

/// The installation's roles (webhook, worker, bootstrap role) with what they need, in a
/// bootstrap template seen from its account; `target_account` is where the worker deploys.
pub fn install_roles(tpl: &Template<'_>, target_account: &str) -> Result<Vec<RoleNeeds>, String> {
    let mut needs = install_needs(tpl, target_account);
    for (role, reqs) in lambda_needs(tpl) {
        needs.entry(role).or_default().extend(reqs);
    }
    let mut out = Vec::new();
    for (role, reqs) in needs {
        out.push(role_needs(tpl, &role, &External::new(), reqs)?);
    }
    Ok(out)
}

/// What Lambda needs from each function's execution role ([`LAMBDA_RULES`]): its log group,
/// the key of its environment, its VPC's network interfaces, its event sources.
fn lambda_needs(tpl: &Template<'_>) -> BTreeMap<String, Vec<Requirement>> {
    let mut needs = BTreeMap::new();
    let none = Context::default();
    let (p, r, a) = (&tpl.env.partition, &tpl.env.region, &tpl.env.account);
    let functions: Vec<(String, String)> = tpl
        .resources()
        .into_iter()
        .filter(|(_, res)| res["Type"] == "AWS::Lambda::Function")
        .filter_map(|(id, _)| {
            let role = role_id(
                tpl,
                tpl.json
                    .pointer(&format!("/Resources/{id}/Properties/Role")),
            )?;
            Some((id.to_owned(), role))
        })
        .collect();
    for (id, role) in &functions {
        let fp = props(tpl, id);
        let name = fp["FunctionName"].as_str().unwrap_or(id);
        let why = format!("Lambda function `{id}`");
        add(
            &mut needs,
            role,
            &["logs:CreateLogStream", "logs:PutLogEvents"],
            &format!("arn:{p}:logs:{r}:{a}:log-group:/aws/lambda/{name}:log-stream:x"),
            &none,
            &why,
        );
        if let Some(k) = fp["KmsKeyArn"].as_str() {
            add(&mut needs, role, &["kms:Decrypt"], k, &none, &why);
        }
        if fp.get("VpcConfig").is_some_and(|v| !v.is_null()) {
            add(
                &mut needs,
                role,
                &[
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:CreateNetworkInterface",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                "*",
                &none,
                &why,
            );
        }
    }
    for (id, res) in tpl.resources() {
        if res["Type"] != "AWS::Lambda::EventSourceMapping" {
            continue;
        }
        let mp = props(tpl, id);
        let mut refs = BTreeSet::new();
        tpl.references(&res["Properties"]["FunctionName"], &mut refs);
        let Some((_, role)) = functions.iter().find(|(f, _)| refs.contains(f)) else {
            continue;
        };
        if let Some(q) = mp["EventSourceArn"].as_str()
            && q.contains(":sqs:")
        {
            add(
                &mut needs,
                role,
                &[
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:ReceiveMessage",
                ],
                q,
                &none,
                &format!("Lambda event source mapping `{id}`"),
            );
        }
    }
    needs
}

/// The documented needs of Lambda functions' execution roles.
pub const LAMBDA_RULES: &[Rule] = &[
    Rule {
        role: "Lambda function execution role",
        actions: &["logs:CreateLogStream", "logs:PutLogEvents"],
        resource: "the function's log group `/aws/lambda/<function>` (created by the stack)",
        source: "https://docs.aws.amazon.com/lambda/latest/dg/lambda-intro-execution-role.html",
    },
    Rule {
        role: "Lambda function execution role",
        actions: &["kms:Decrypt"],
        resource: "the function's `KmsKeyArn` (its environment variables)",
        source: "https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars-encryption.html",
    },
    Rule {
        role: "Lambda function execution role",
        actions: &[
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        ],
        resource: "`*`, when the function has a `VpcConfig`",
        source: "https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions",
    },
    Rule {
        role: "Lambda function execution role",
        actions: &[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
        ],
        resource: "the queue of each SQS event source mapping of the function",
        source: "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html#events-sqs-permissions",
    },
];
