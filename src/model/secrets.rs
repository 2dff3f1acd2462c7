//! `build.secrets`: references to SSM parameters and Secrets Manager secrets, parsed and
//! checked (never values), under names that are neither reserved nor plain variables.

use std::collections::BTreeMap;

use super::{Ctx, Secret};
use crate::manifest::{RESERVED_ENV_PREFIXES, SecretRef};
use crate::schema::join_key;

/// The secrets by variable name. `env` holds the plain variables, which a secret must not
/// repeat.
pub(super) fn secrets(
    cx: &mut Ctx<'_>,
    raw_secrets: Option<BTreeMap<String, SecretRef>>,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, Secret> {
    let mut secrets = BTreeMap::new();
    for (k, v) in raw_secrets.unwrap_or_default() {
        let path = join_key("build.secrets", &k);
        if let Some(p) = RESERVED_ENV_PREFIXES.iter().find(|p| k.starts_with(*p)) {
            cx.err_key(&path, format!("`{k}` uses the reserved prefix `{p}`"), "rename the variable; `CODEBUILD_`, `AWS_` and `PF_` belong to CodeBuild, AWS and pipeforge");
            continue;
        }
        if env.contains_key(&k) {
            cx.err_key(
                &path,
                format!("`{k}` is both a plain variable and a secret"),
                format!("remove `build.env.{k}`; a secret must not also be set in plain text"),
            );
            continue;
        }
        match parse_secret(&v.0) {
            Ok(s) => {
                secrets.insert(k, s);
            }
            Err(help) => cx.err(
                &path,
                format!(
                    "invalid secret reference {}",
                    crate::yaml::quote_short(&v.0)
                ),
                help,
            ),
        }
    }
    secrets
}

fn parse_secret(reference: &str) -> Result<Secret, &'static str> {
    if let Some(name) = reference.strip_prefix("ssm:") {
        let ok = !name.is_empty()
            && name.len() <= 1011
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
            && !name.contains("//")
            && !name.ends_with('/');
        return if ok {
            Ok(Secret::ParameterStore {
                name: name.to_owned(),
            })
        } else {
            Err(
                "an SSM parameter name is letters, digits and `_.-/`, e.g. `ssm:/payments/db/password`",
            )
        };
    }
    if let Some(rest) = reference.strip_prefix("secretsmanager:") {
        let (secret_id, tail) = if rest.starts_with("arn:") {
            // arn:partition:secretsmanager:region:account:secret:name-suffix[:json-key...]
            let parts: Vec<&str> = rest.splitn(8, ':').collect();
            if parts.len() < 7 || parts[2] != "secretsmanager" || parts[5] != "secret" {
                return Err(
                    "a Secrets Manager ARN looks like `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`",
                );
            }
            (parts[..7].join(":"), parts.get(7).copied())
        } else {
            match rest.split_once(':') {
                Some((id, tail)) => (id.to_owned(), Some(tail)),
                None => (rest.to_owned(), None),
            }
        };
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 512
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
        };
        let id_ok = match secret_id.strip_prefix("arn:") {
            // arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX
            Some(arn) => {
                let p: Vec<&str> = arn.split(':').collect();
                p.len() == 6
                    && p[0].starts_with("aws")
                    && p[0].chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && !p[2].is_empty()
                    && p[2]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && p[3].len() == 12
                    && p[3].chars().all(|c| c.is_ascii_digit())
                    && name_ok(p[5])
            }
            None => name_ok(&secret_id),
        };
        let tail_ok =
            tail.is_none_or(|t| t.split(':').count() <= 3 && !t.chars().any(char::is_whitespace));
        return if id_ok && tail_ok {
            Ok(Secret::SecretsManager {
                secret_id,
                reference: rest.to_owned(),
            })
        } else {
            Err(
                "write `secretsmanager:secret-name[:json-key[:version-stage[:version-id]]]`; names are letters, digits and `/_+=.@-`",
            )
        };
    }
    Err("a secret is `ssm:/parameter/name` or `secretsmanager:secret-name[:json-key]`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse() {
        assert_eq!(
            parse_secret("ssm:/a/b"),
            Ok(Secret::ParameterStore {
                name: "/a/b".into()
            })
        );
        assert!(parse_secret("ssm:/a b").is_err());
        assert_eq!(
            parse_secret("secretsmanager:payments/api:key"),
            Ok(Secret::SecretsManager {
                secret_id: "payments/api".into(),
                reference: "payments/api:key".into()
            })
        );
        let arn = "secretsmanager:arn:aws:secretsmanager:us-east-1:111111111111:secret:db-AbCdEf:password";
        assert_eq!(
            parse_secret(arn),
            Ok(Secret::SecretsManager {
                secret_id: "arn:aws:secretsmanager:us-east-1:111111111111:secret:db-AbCdEf".into(),
                reference:
                    "arn:aws:secretsmanager:us-east-1:111111111111:secret:db-AbCdEf:password".into()
            })
        );
        assert!(parse_secret("vault:x").is_err());
        assert!(
            parse_secret("secretsmanager:arn:aws:secretsmanager:us-east-1:111111111111:secret:d b")
                .is_err()
        );
        assert!(
            parse_secret("secretsmanager:arn:aws:secretsmanager:us-east-1:1111:secret:db").is_err()
        );
        assert!(parse_secret("secretsmanager:a b").is_err());
    }
}
