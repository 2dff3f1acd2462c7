//! Where the webhook's shared secrets come from: `PIPEFORGE_WEBHOOK_SECRET` (plus
//! `PIPEFORGE_WEBHOOK_SECRET_PREVIOUS` during a rotation), or AWS Secrets Manager through
//! `PIPEFORGE_WEBHOOK_SECRET_ARN` (one or more ARNs, comma-separated). Never from a request.
//!
//! A Secrets Manager value is either the secret itself or a JSON object (or array) whose string
//! values are all accepted, e.g. `{"current": "...", "previous": "..."}` while hooks move from
//! one secret to the next. Values are cached for [`REFRESH`], so a rotation reaches running
//! handlers within that time.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::event::Secrets;
use crate::error::{Error, Result};

/// The variable holding the secret itself.
pub const ENV_SECRET: &str = "PIPEFORGE_WEBHOOK_SECRET";
/// The variable holding the previous secret, during a rotation.
pub const ENV_SECRET_PREVIOUS: &str = "PIPEFORGE_WEBHOOK_SECRET_PREVIOUS";
/// The variable holding Secrets Manager ARNs.
pub const ENV_SECRET_ARN: &str = "PIPEFORGE_WEBHOOK_SECRET_ARN";
/// How long Secrets Manager values are cached.
pub const REFRESH: Duration = Duration::from_secs(300);

/// The source of the secrets.
pub enum SecretSource {
    /// Fixed secrets (from the environment).
    Static(Secrets),
    /// Secrets Manager, cached.
    SecretsManager {
        /// The client.
        client: aws_sdk_secretsmanager::Client,
        /// Secret ids (ARNs or names).
        ids: Vec<String>,
        /// The last values and when they were read.
        cache: Mutex<Option<(Instant, Secrets)>>,
    },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Static(s) => write!(f, "Static({s:?})"),
            SecretSource::SecretsManager { ids, .. } => write!(f, "SecretsManager({ids:?})"),
        }
    }
}

/// The secrets a Secrets Manager value holds.
pub fn parse_secret_value(text: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Ok(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec![text.to_owned()],
    }
}

impl SecretSource {
    /// The source the environment names: `PIPEFORGE_WEBHOOK_SECRET_ARN` wins over
    /// `PIPEFORGE_WEBHOOK_SECRET`. `aws` is only used (and awaited) for an ARN.
    pub async fn from_env<F, Fut>(aws: F) -> Result<SecretSource>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = aws_sdk_secretsmanager::Client>,
    {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(arns) = var(ENV_SECRET_ARN) {
            let ids: Vec<String> = arns
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            let source = SecretSource::SecretsManager {
                client: aws().await,
                ids,
                cache: Mutex::new(None),
            };
            source.current().await?;
            return Ok(source);
        }
        let secrets: Vec<String> = [ENV_SECRET, ENV_SECRET_PREVIOUS]
            .iter()
            .filter_map(|k| var(k))
            .collect();
        if secrets.is_empty() {
            return Err(Error::other(
                format!("no webhook secret: neither `{ENV_SECRET}` nor `{ENV_SECRET_ARN}` is set"),
                format!(
                    "set `{ENV_SECRET}` to the secret configured in the repository's webhook, or `{ENV_SECRET_ARN}` to a Secrets Manager secret holding it"
                ),
            ));
        }
        Ok(SecretSource::Static(Secrets::new(secrets)))
    }

    /// The secrets to accept now.
    pub async fn current(&self) -> Result<Secrets> {
        match self {
            SecretSource::Static(s) => Ok(s.clone()),
            SecretSource::SecretsManager { client, ids, cache } => {
                let mut cache = cache.lock().await;
                if let Some((at, s)) = cache.as_ref()
                    && at.elapsed() < REFRESH
                {
                    return Ok(s.clone());
                }
                let mut all = Vec::new();
                for id in ids {
                    let out = client
                        .get_secret_value()
                        .secret_id(id)
                        .send()
                        .await
                        .map_err(|e| {
                            Error::other(
                                format!(
                                    "cannot read webhook secret `{id}` from Secrets Manager: {}",
                                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                                ),
                                "check the ARN and that this role may call `secretsmanager:GetSecretValue` on it",
                            )
                        })?;
                    if let Some(text) = out.secret_string() {
                        all.extend(parse_secret_value(text));
                    }
                }
                let secrets = Secrets::new(all);
                if secrets.is_empty() {
                    return Err(Error::other(
                        format!("the webhook secrets {ids:?} are empty"),
                        "store the secret text (or a JSON object of secrets) in the secret",
                    ));
                }
                *cache = Some((Instant::now(), secrets.clone()));
                Ok(secrets)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_may_hold_several_secrets() {
        assert_eq!(parse_secret_value("plain"), ["plain"]);
        let mut v = parse_secret_value(r#"{"current":"a","previous":"b","n":1}"#);
        v.sort();
        assert_eq!(v, ["a", "b"]);
        assert_eq!(parse_secret_value(r#"["x","y"]"#), ["x", "y"]);
    }
}
