//! What a gate's buildspec makes its CodeBuild role call, read from the buildspec the project
//! runs (the project's inline `Source.BuildSpec`, as rendered): the Parameter Store parameters
//! and Secrets Manager secrets of its `env`, and the package registry it publishes to (which
//! its commands show: `aws codeartifact …`, `docker push`, `aws s3 cp … s3://$PF_ARTIFACT_BUCKET`).
//!
//! Each need is a row of [`RULES`], with the AWS page that documents it. [`secret_reads`] lists
//! the secrets and parameters alone, for the tests that check a gate reads its own and nothing
//! else.

use serde_json::Value as Json;

use super::eval::{Context, Request};
use super::handlers::Requirement;
use super::resolve::Env;
use super::runtime::Rule;

/// The documented needs this module implements.
pub const RULES: &[Rule] = &[
    Rule {
        role: "CodeBuild project service role",
        actions: &["ssm:GetParameters"],
        resource: "every parameter of the buildspec's `env.parameter-store`",
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/build-spec-ref.html#build-spec.env.parameter-store",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &["secretsmanager:GetSecretValue"],
        resource: "every secret of the buildspec's `env.secrets-manager` (a name: any suffix AWS adds)",
        source: "https://docs.aws.amazon.com/codebuild/latest/userguide/build-spec-ref.html#build-spec.env.secrets-manager",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &[
            "codeartifact:GetAuthorizationToken",
            "sts:GetServiceBearerToken",
        ],
        resource: "the domain `PF_CODEARTIFACT_DOMAIN`; the bearer token for codeartifact.amazonaws.com (`sts:AWSServiceName`), when a command runs `aws codeartifact`",
        source: "https://docs.aws.amazon.com/codeartifact/latest/ug/tokens-authentication.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &[
            "codeartifact:GetRepositoryEndpoint",
            "codeartifact:ReadFromRepository",
            "codeartifact:PublishPackageVersion",
        ],
        resource: "the repository `PF_ARTIFACT_REPOSITORY` of that domain and its packages",
        source: "https://docs.aws.amazon.com/codeartifact/latest/ug/auth-and-access-control-permissions-reference.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &[
            "ecr:GetAuthorizationToken",
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:CompleteLayerUpload",
            "ecr:InitiateLayerUpload",
            "ecr:PutImage",
            "ecr:UploadLayerPart",
        ],
        resource: "`*` (the token); the repository `PF_ARTIFACT_REPOSITORY`, when a command runs `docker push`",
        source: "https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-push-iam.html",
    },
    Rule {
        role: "CodeBuild project service role",
        actions: &["s3:PutObject", "kms:GenerateDataKey"],
        resource: "`<artifact bucket>/<pipeline>/*` (SSE-KMS) and the key `PF_KMS_KEY_ARN`, when a command copies to `s3://$PF_ARTIFACT_BUCKET/`",
        source: "https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html",
    },
];

/// A secret or parameter a buildspec reads, as the request that reads it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRead {
    /// `ssm:GetParameters` or `secretsmanager:GetSecretValue`.
    pub action: &'static str,
    /// The parameter's or secret's ARN (a secret named by name gets a sample suffix).
    pub arn: String,
}

/// The ARN of a secret a buildspec names: an ARN as written (without the JSON key, version
/// stage and version id), a name with the six characters AWS appends.
fn secret_arn(reference: &str, env: &Env) -> String {
    if reference.starts_with("arn:") {
        reference
            .splitn(8, ':')
            .take(7)
            .collect::<Vec<_>>()
            .join(":")
    } else {
        let name = reference.split(':').next().unwrap_or_default();
        format!(
            "arn:{}:secretsmanager:{}:{}:secret:{name}-AbCdEf",
            env.partition, env.region, env.account
        )
    }
}

/// The parameter's ARN: names with a leading `/` lose it after `parameter`.
pub fn parameter_arn(name: &str, env: &Env) -> String {
    format!(
        "arn:{}:ssm:{}:{}:parameter/{}",
        env.partition,
        env.region,
        env.account,
        name.strip_prefix('/').unwrap_or(name)
    )
}

/// Parses a buildspec (the fast path, else the general parser).
pub fn parse(text: &str) -> Option<Json> {
    if let Some(doc) = crate::render::fastyaml::parse_untagged(text) {
        return Some(doc.to_json());
    }
    let file = crate::SourceFile::new("buildspec.yml", text);
    let node = crate::yaml::parse(&file, crate::yaml::ParseOptions::default()).ok()?;
    Some(crate::schema::check(&node, &Json::Bool(true), &file).value)
}

/// The secrets and parameters a buildspec reads (its `env.parameter-store` and
/// `env.secrets-manager`), in the account and region the project runs in.
pub fn secret_reads(buildspec: &Json, env: &Env) -> Vec<SecretRead> {
    let mut out = Vec::new();
    let section = |k: &str| {
        buildspec
            .pointer(&format!("/env/{k}"))
            .and_then(Json::as_object)
            .into_iter()
            .flat_map(|m| m.values().filter_map(Json::as_str))
            .collect::<Vec<_>>()
    };
    for name in section("parameter-store") {
        out.push(SecretRead {
            action: "ssm:GetParameters",
            arn: parameter_arn(name, env),
        });
    }
    for reference in section("secrets-manager") {
        out.push(SecretRead {
            action: "secretsmanager:GetSecretValue",
            arn: secret_arn(reference, env),
        });
    }
    out.sort();
    out.dedup();
    out
}

fn commands(buildspec: &Json) -> Vec<&str> {
    buildspec
        .get("phases")
        .and_then(Json::as_object)
        .into_iter()
        .flat_map(|p| p.values())
        .filter_map(|p| p.get("commands").and_then(Json::as_array))
        .flatten()
        .filter_map(Json::as_str)
        .collect()
}

fn variable<'a>(buildspec: &'a Json, name: &str) -> Option<&'a str> {
    buildspec
        .pointer(&format!("/env/variables/{name}"))
        .and_then(Json::as_str)
}

/// Where the build publishes, as the project's environment names it.
pub struct Publish<'a> {
    /// The artifact bucket (`PF_ARTIFACT_BUCKET`, a project variable).
    pub bucket: Option<&'a str>,
    /// The artifact key (`PF_KMS_KEY_ARN`, a project variable).
    pub key: Option<&'a str>,
}

/// Every request a gate's buildspec makes its role send, with `why`.
pub fn needs(buildspec: &Json, env: &Env, publish: &Publish<'_>, why: &str) -> Vec<Requirement> {
    let mut out = Vec::new();
    let mut add = |action: &str, resource: String, context: Context| {
        out.push(Requirement {
            request: Request {
                action: action.to_owned(),
                resource,
                context,
            },
            why: why.to_owned(),
        });
    };
    for r in secret_reads(buildspec, env) {
        add(r.action, r.arn, Context::default());
    }
    let (p, region, account) = (&env.partition, &env.region, &env.account);
    let cmds = commands(buildspec);
    let runs = |needle: &str| cmds.iter().any(|c| c.contains(needle));
    let repository = variable(buildspec, "PF_ARTIFACT_REPOSITORY").unwrap_or_default();
    if runs("aws codeartifact ") {
        let domain = variable(buildspec, "PF_CODEARTIFACT_DOMAIN").unwrap_or_default();
        add(
            "codeartifact:GetAuthorizationToken",
            format!("arn:{p}:codeartifact:{region}:{account}:domain/{domain}"),
            Context::default(),
        );
        add(
            "sts:GetServiceBearerToken",
            "*".to_owned(),
            Context::knowing(&["sts:"]).with("sts:AWSServiceName", "codeartifact.amazonaws.com"),
        );
        let repo =
            format!("arn:{p}:codeartifact:{region}:{account}:repository/{domain}/{repository}");
        for a in [
            "codeartifact:GetRepositoryEndpoint",
            "codeartifact:ReadFromRepository",
        ] {
            add(a, repo.clone(), Context::default());
        }
        add(
            "codeartifact:PublishPackageVersion",
            format!(
                "arn:{p}:codeartifact:{region}:{account}:package/{domain}/{repository}/generic/team/package"
            ),
            Context::default(),
        );
    }
    if runs("docker push ") {
        add(
            "ecr:GetAuthorizationToken",
            "*".to_owned(),
            Context::default(),
        );
        let repo = format!("arn:{p}:ecr:{region}:{account}:repository/{repository}");
        for a in [
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:CompleteLayerUpload",
            "ecr:InitiateLayerUpload",
            "ecr:PutImage",
            "ecr:UploadLayerPart",
        ] {
            add(a, repo.clone(), Context::default());
        }
    }
    if runs("s3://$PF_ARTIFACT_BUCKET/")
        && let Some(bucket) = publish.bucket
    {
        let pipeline = variable(buildspec, "PF_PIPELINE").unwrap_or_default();
        add(
            "s3:PutObject",
            format!("arn:{p}:s3:::{bucket}/{pipeline}/1.0.0/package.tar.gz"),
            Context::knowing(&["s3:"]).with("s3:x-amz-server-side-encryption", "aws:kms"),
        );
        if let Some(key) = publish.key {
            add("kms:GenerateDataKey", key.to_owned(), Context::default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_secrets_and_parameters_of_the_env() {
        let b = parse(concat!(
            "version: 0.2\n",
            "env:\n",
            "  parameter-store:\n",
            "    A: \"/team/db/password\"\n",
            "    B: \"plain\"\n",
            "  secrets-manager:\n",
            "    C: \"team/api:key\"\n",
            "    D: \"arn:aws:secretsmanager:eu-west-1:210987654321:secret:x/y-QwErTy:token::\"\n",
        ))
        .expect("yaml");
        let env = Env::new("123456789012", "us-east-1");
        let got: Vec<String> = secret_reads(&b, &env).into_iter().map(|r| r.arn).collect();
        assert_eq!(
            got,
            [
                "arn:aws:secretsmanager:eu-west-1:210987654321:secret:x/y-QwErTy",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:team/api-AbCdEf",
                "arn:aws:ssm:us-east-1:123456789012:parameter/plain",
                "arn:aws:ssm:us-east-1:123456789012:parameter/team/db/password",
            ]
        );
    }

    #[test]
    fn registry_needs_follow_the_commands() {
        let b = parse(concat!(
            "version: 0.2\n",
            "env:\n",
            "  variables:\n",
            "    PF_ARTIFACT_REPOSITORY: \"payments/gateway\"\n",
            "phases:\n",
            "  post_build:\n",
            "    commands:\n",
            "      - \"docker push \\\"$IMAGE_URI\\\"\"\n",
        ))
        .expect("yaml");
        let env = Env::new("123456789012", "us-east-1");
        let none = Publish {
            bucket: None,
            key: None,
        };
        let n = needs(&b, &env, &none, "x");
        assert!(n.iter().any(|r| r.request.action == "ecr:PutImage"
            && r.request.resource
                == "arn:aws:ecr:us-east-1:123456789012:repository/payments/gateway"));
        assert!(
            !n.iter()
                .any(|r| r.request.action.starts_with("codeartifact:"))
        );
    }
}
