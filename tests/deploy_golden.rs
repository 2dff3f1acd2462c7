//! Every golden case, deployed for real to the local AWS server (one pipeline per case, with the
//! case's own org policy), then inspected through the service APIs: the CodeBuild projects run
//! exactly the golden buildspecs with the right roles, the pipeline has the planned stages,
//! actions and role ARNs, the artifact key and bucket policies carry the planned statements, and
//! every target account has its deploy and execution roles.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use pipeforge::aws::AwsContext;
use pipeforge::publish::progress::StackOutcome;
use serde_json::Value as Json;
use support::{Events, Repo, inputs, options, server};

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(support::root().join("golden"))
        .expect("golden")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("pipeline.yml").is_file())
        .collect();
    v.sort();
    v
}

fn sids(policy: &Json) -> Vec<String> {
    policy["Statement"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["Sid"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The principals (`AWS`) of statement `sid`, as strings.
fn principals(policy: &Json, sid: &str) -> Vec<String> {
    let st = policy["Statement"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["Sid"] == sid))
        .cloned()
        .unwrap_or_default();
    match &st["Principal"]["AWS"] {
        Json::String(s) => vec![s.clone()],
        Json::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The parts of a pipeline declaration the test checks.
#[derive(Debug, Default)]
struct PipelineView {
    role_arn: String,
    /// Stage name → actions (name, role ARN, configuration `RoleArn`, region).
    stages: Vec<(String, Vec<ActionView>)>,
}

#[derive(Debug, Default)]
struct ActionView {
    name: String,
    role_arn: Option<String>,
    execution_role: Option<String>,
    region: Option<String>,
}

/// `GetPipeline`. The local server returns the artifact stores of a cross-region pipeline as a
/// list where the API has a map, which the SDK refuses to parse; the response body is then read
/// as JSON (the same fields).
async fn get_pipeline(cp: &aws_sdk_codepipeline::Client, name: &str) -> PipelineView {
    match cp.get_pipeline().name(name).send().await {
        Ok(out) => {
            let p = out.pipeline().expect("declaration");
            PipelineView {
                role_arn: p.role_arn().to_owned(),
                stages: p
                    .stages()
                    .iter()
                    .map(|s| {
                        (
                            s.name().to_owned(),
                            s.actions()
                                .iter()
                                .map(|a| ActionView {
                                    name: a.name().to_owned(),
                                    role_arn: a.role_arn().map(str::to_owned),
                                    execution_role: a
                                        .configuration()
                                        .and_then(|c| c.get("RoleArn"))
                                        .cloned(),
                                    region: a.region().map(str::to_owned),
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            }
        }
        Err(e) => panic!("GetPipeline {name}: {e:?}"),
    }
}

fn golden_resource<'a>(template: &'a Json, kind: &str) -> &'a Json {
    template["Resources"]
        .as_object()
        .and_then(|r| r.values().find(|v| v["Type"] == kind))
        .unwrap_or(&Json::Null)
}

async fn deploy_and_inspect(case: PathBuf, aws: Arc<AwsContext>) {
    let name = case
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let org = case.join("org.yaml");
    let org = org.is_file().then_some(org);
    let mut inp = inputs(org.as_deref(), None);
    let manifest = std::fs::read_to_string(case.join("pipeline.yml")).expect("manifest");
    // Each case deploys from `<team>/<name>`, which its team may deploy from (the policies
    // list only some of the cases' teams).
    let field = |key: &str| {
        manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .expect("top-level key")
            .trim()
            .to_owned()
    };
    let (team, pipeline) = (field("team"), field("name"));
    inp.org
        .org
        .teams
        .get_or_insert_with(Default::default)
        .insert(
            team.clone(),
            pipeforge::org::TeamDef {
                repositories: vec![format!("{team}/*")],
            },
        );
    let repo = Repo::from(&manifest, &format!("{team}/{pipeline}"));
    let first = pipeforge::deploy::deploy(
        repo.path(),
        &repo.manifest(),
        &inp,
        &aws,
        &options(),
        &Events::default(),
    )
    .await;
    let r = first.unwrap_or_else(|e| panic!("{name}: deploy failed: {e}"));
    let expected = |o: StackOutcome| o == StackOutcome::Created;
    assert!(
        r.stacks.iter().all(|s| expected(s.outcome)),
        "{name}: {:?}",
        r.stacks
            .iter()
            .map(|s| (&s.name, s.outcome))
            .collect::<Vec<_>>()
    );
    let bundle = pipeforge::generate(
        &pipeforge::read_manifest(&repo.manifest()).expect("read"),
        &inp,
    )
    .expect("render");
    let plan = &bundle.plan;
    assert_eq!(
        r.stacks.len(),
        plan.stacks.len(),
        "{name}: every planned stack"
    );
    let tooling = plan.pipeline.tooling_account.as_str();
    let region = plan.pipeline.region.as_str();
    let names = &plan.names;
    let arn = |account: &str, role: &str| format!("arn:aws:iam::{account}:role/{role}");
    let conf = aws.base().clone();
    let region_obj = aws_config::Region::new(region.to_owned());

    // CodeBuild: one project per gate, running exactly the golden buildspec.
    let cb = aws_sdk_codebuild::Client::from_conf(
        aws_sdk_codebuild::config::Builder::from(&conf)
            .region(region_obj.clone())
            .build(),
    );
    let projects = cb
        .batch_get_projects()
        .set_names(Some(plan.gates.iter().map(|g| g.project.clone()).collect()))
        .send()
        .await
        .expect("projects");
    assert_eq!(
        projects.projects().len(),
        plan.gates.len(),
        "{name}: projects"
    );
    for g in &plan.gates {
        let p = projects
            .projects()
            .iter()
            .find(|p| p.name() == Some(g.project.as_str()))
            .unwrap_or_else(|| panic!("{name}: project {}", g.project));
        let golden = std::fs::read_to_string(case.join("expected").join(&g.buildspec))
            .expect("golden buildspec");
        assert_eq!(
            p.source().and_then(|s| s.buildspec()),
            Some(golden.as_str()),
            "{name}: buildspec of {}",
            g.project
        );
        let gn = names.gate(&g.name).expect("gate names");
        assert_eq!(
            p.service_role(),
            Some(arn(tooling, gn.role.as_str()).as_str()),
            "{name}: role of {}",
            g.project
        );
        assert_eq!(
            p.environment().map(|e| e.image()),
            Some(g.image.value.as_str())
        );
    }

    // CodePipeline: the planned stages and actions, with the planned roles.
    let cp = aws_sdk_codepipeline::Client::from_conf(
        aws_sdk_codepipeline::config::Builder::from(&conf)
            .region(region_obj.clone())
            .build(),
    );
    let p = get_pipeline(&cp, names.pipeline.as_str()).await;
    assert_eq!(p.role_arn, arn(tooling, names.pipeline_role.as_str()));
    // Artifact stores of other regions name their key by ARN (the region stack's output).
    if !names.regions.is_empty() {
        let decl = cp
            .get_pipeline()
            .name(names.pipeline.as_str())
            .send()
            .await
            .expect("GetPipeline");
        let stores = decl
            .pipeline()
            .and_then(|p| p.artifact_stores())
            .expect("artifact stores");
        for r in &names.regions {
            let id = stores
                .get(&r.region)
                .and_then(|s| s.encryption_key())
                .map(|k| k.id().to_owned())
                .unwrap_or_default();
            assert!(
                id.starts_with(&format!("arn:aws:kms:{}:{tooling}:key/", r.region)),
                "{name}: the artifact key of {} is `{id}`",
                r.region
            );
        }
    }
    let stages: Vec<&str> = p.stages.iter().map(|s| s.0.as_str()).collect();
    let want: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, want, "{name}: stages");
    for (ps, (_, actions)) in plan.stages.iter().zip(&p.stages) {
        let got: Vec<&str> = actions.iter().map(|a| a.name.as_str()).collect();
        let want: Vec<&str> = ps.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(got, want, "{name}: actions of {}", ps.name);
        for (pa, a) in ps.actions.iter().zip(actions) {
            let Some(env) = pa.environment.as_deref() else {
                continue;
            };
            if pa.name == "Approve" {
                continue;
            }
            let e = plan
                .environments
                .iter()
                .find(|x| x.name == env)
                .expect("env");
            let en = names.environment(env).expect("env names");
            assert_eq!(
                a.role_arn.as_deref(),
                Some(arn(&e.account, en.deploy_role.as_str()).as_str()),
                "{name}: role of {}.{}",
                ps.name,
                pa.name
            );
            if pa.name == "CreateChangeSet" {
                assert_eq!(
                    a.execution_role.as_deref(),
                    Some(arn(&e.account, en.execution_role.as_str()).as_str()),
                    "{name}: execution role of {}",
                    ps.name
                );
            }
            if e.region.value != region {
                assert_eq!(
                    a.region.as_deref(),
                    Some(e.region.value.as_str()),
                    "{name}: region"
                );
            }
        }
    }

    // The artifact key and bucket: the planned statements, naming the environments' accounts.
    let golden_pipeline: Json = serde_json::from_str(
        &std::fs::read_to_string(case.join("expected/stacks/pipeline.json")).expect("golden"),
    )
    .expect("json");
    let in_region: Vec<&str> = plan
        .environments
        .iter()
        .filter(|e| e.region.value == region)
        .map(|e| e.account.as_str())
        .collect();
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&conf)
            .region(region_obj.clone())
            .build(),
    );
    let key = kms
        .describe_key()
        .key_id(names.key_alias.as_str())
        .send()
        .await
        .expect("key");
    let key_id = key.key_metadata().map(|k| k.key_id()).expect("key id");
    let policy = kms
        .get_key_policy()
        .key_id(key_id)
        .policy_name("default")
        .send()
        .await
        .expect("key policy");
    let policy: Json = serde_json::from_str(policy.policy().unwrap_or("{}")).expect("json");
    let golden_key = &golden_resource(&golden_pipeline, "AWS::KMS::Key")["Properties"]["KeyPolicy"];
    assert_eq!(sids(&policy), sids(golden_key), "{name}: key policy");
    let readers = principals(&policy, "DeployRolesDecryptArtifacts");
    for a in &in_region {
        assert!(
            readers.contains(&format!("arn:aws:iam::{a}:root")),
            "{name}: key readers {readers:?}"
        );
    }
    let s3 = aws.s3(&conf, region);
    let bp = s3
        .get_bucket_policy()
        .bucket(names.artifact_bucket.as_str())
        .send()
        .await
        .expect("bucket policy");
    let bp: Json = serde_json::from_str(bp.policy().unwrap_or("{}")).expect("json");
    let golden_bp =
        &golden_resource(&golden_pipeline, "AWS::S3::BucketPolicy")["Properties"]["PolicyDocument"];
    assert_eq!(sids(&bp), sids(golden_bp), "{name}: bucket policy");
    assert!(sids(&bp).iter().any(|s| s == "DenyInsecureTransport"));

    // Cross-region artifact stores.
    for rn in &names.regions {
        let s3r = aws.s3(&conf, &rn.region);
        s3r.head_bucket()
            .bucket(rn.bucket.as_str())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: bucket {} in {}: {e:?}", rn.bucket, rn.region));
    }

    // Target accounts: the deploy role trusts the tooling account, the execution role has the
    // org's policies and boundary.
    let role = &inp.org.org.deploy.bootstrap_role;
    for e in &plan.environments {
        let en = names.environment(&e.name).expect("env names");
        let c = support::account(&aws, &e.account, &e.region.value, role).await;
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&c)
                .region(aws_config::Region::new(e.region.value.clone()))
                .build(),
        );
        let deploy_role = iam
            .get_role()
            .role_name(en.deploy_role.as_str())
            .send()
            .await
            .unwrap_or_else(|x| panic!("{name}: {} in {}: {x:?}", en.deploy_role, e.account));
        let trust = deploy_role
            .role()
            .and_then(|r| r.assume_role_policy_document())
            .unwrap_or_default();
        let trust = percent_decode(trust);
        assert!(
            trust.contains(&format!("arn:aws:iam::{tooling}:root")),
            "{name}: trust of {}: {trust}",
            en.deploy_role
        );
        let attached = iam
            .list_attached_role_policies()
            .role_name(en.execution_role.as_str())
            .send()
            .await
            .expect("attached");
        let attached: Vec<&str> = attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_name())
            .collect();
        for p in &inp.org.org.deploy.execution_policy_arns {
            let short = p.rsplit('/').next().unwrap_or(p);
            assert!(
                attached.contains(&short),
                "{name}: {} has {attached:?}",
                en.execution_role
            );
        }
        let exec = iam
            .get_role()
            .role_name(en.execution_role.as_str())
            .send()
            .await
            .expect("execution role");
        if let Some(b) = &inp.org.org.deploy.permissions_boundary {
            let got = exec
                .role()
                .and_then(|r| r.permissions_boundary())
                .and_then(|b| b.permissions_boundary_arn())
                .unwrap_or_default();
            assert!(
                got.ends_with(b.rsplit('/').next().unwrap_or(b)),
                "{name}: boundary {got}"
            );
        }
    }
}

/// Customer managed policies of the org (`execution_policy_arns`, `permissions_boundary`) given
/// IAM returns policy documents URL-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(v) = hex {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_golden_case_deploys_and_is_inspected_through_the_service_apis() {
    let cases = cases();
    assert!(cases.len() >= 10, "{cases:?}");
    let mut set = tokio::task::JoinSet::new();
    for case in cases.clone() {
        let org = case.join("org.yaml");
        let srv = server(org.is_file().then_some(org.as_path()));
        let aws = Arc::new(srv.aws().await);
        let label = case.display().to_string();
        set.spawn(async move {
            deploy_and_inspect(case, aws).await;
            label
        });
    }
    let mut failures = Vec::new();
    let mut done = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(_) => done += 1,
            Err(e) => {
                let msg = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                failures.push(msg);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(done, cases.len());
}
