//! Where a vendor API token comes from: a Secrets Manager secret (`token_secret`: the token,
//! or a JSON object with a `token` key), or, for GitHub, an installation token minted for the
//! installation the event names from a GitHub App's private key (`app_id`, `app_key_secret`):
//! a JWT signed RS256 with the key, exchanged at
//! `POST /app/installations/{id}/access_tokens`. Values are cached (secrets for five minutes,
//! installation tokens until ten minutes before they expire); none is ever logged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use super::client::{ApiClient, ApiError, Token};
use crate::org::OrgVendorApi;

/// How long a secret's value is kept.
const SECRET_TTL: Duration = Duration::from_secs(300);

/// Tokens of one vendor API.
pub struct TokenSource {
    api: OrgVendorApi,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    cache: Mutex<BTreeMap<String, (Instant, Token)>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSource({})", self.api.api_url)
    }
}

impl TokenSource {
    /// The tokens of `api`, read from Secrets Manager through `secrets`.
    pub fn new(api: OrgVendorApi, secrets: Option<aws_sdk_secretsmanager::Client>) -> TokenSource {
        TokenSource {
            api,
            secrets,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// A token for a call about an event of `installation` (GitHub Apps only).
    pub async fn token(
        &self,
        http: &ApiClient,
        installation: Option<u64>,
    ) -> Result<Token, ApiError> {
        if let (Some(app), Some(key)) = (self.api.app_id, self.api.app_key_secret.clone()) {
            let Some(id) = installation else {
                return Err(ApiError::Permanent(
                    "the event names no GitHub App installation; configure `token_secret` or install the app on the repository".to_owned(),
                ));
            };
            let cache_key = format!("installation:{id}");
            if let Some(t) = self.cached(&cache_key, Duration::ZERO).await {
                return Ok(t);
            }
            let pem = self.secret(&key).await?;
            let jwt = app_jwt(app, &pem.0, crate::webhook::now_ms() / 1000)?;
            let url = format!(
                "{}/app/installations/{id}/access_tokens",
                self.api.api_url.trim_end_matches('/')
            );
            let answer = http
                .call("POST", &url, &Token(jwt), Some(&json!({})))
                .await?;
            let token = answer
                .json
                .get("token")
                .and_then(Json::as_str)
                .ok_or_else(|| {
                    ApiError::Permanent("the installation token answer has no `token`".to_owned())
                })?;
            // Installation tokens live an hour; keep one for 50 minutes.
            let t = Token(token.to_owned());
            self.cache.lock().await.insert(
                cache_key,
                (Instant::now() + Duration::from_secs(3000), t.clone()),
            );
            return Ok(t);
        }
        let Some(name) = self.api.token_secret.clone() else {
            return Err(ApiError::Permanent(format!(
                "no credential for `{}`: set `token_secret` (or, for GitHub, `app_id` and `app_key_secret`) in `webhook.pull_requests`",
                self.api.api_url
            )));
        };
        let value = self.secret(&name).await?;
        Ok(Token(token_of(&value.0)))
    }

    async fn cached(&self, key: &str, ttl: Duration) -> Option<Token> {
        let c = self.cache.lock().await;
        c.get(key).and_then(|(until, t)| {
            let fresh = if ttl.is_zero() {
                Instant::now() < *until
            } else {
                until.elapsed() < ttl
            };
            fresh.then(|| t.clone())
        })
    }

    /// A secret's text, cached for [`SECRET_TTL`].
    async fn secret(&self, name: &str) -> Result<Token, ApiError> {
        let key = format!("secret:{name}");
        if let Some(t) = self.cached(&key, SECRET_TTL).await {
            return Ok(t);
        }
        let Some(client) = &self.secrets else {
            return Err(ApiError::Permanent(
                "no Secrets Manager client to read the API token with".to_owned(),
            ));
        };
        let out = client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| {
                let text = aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string();
                let msg = format!(
                    "cannot read secret `{name}` from Secrets Manager: {}",
                    super::super::event::short(&text)
                );
                if text.contains("ResourceNotFound") || text.contains("AccessDenied") {
                    ApiError::Permanent(msg)
                } else {
                    ApiError::Transient(msg)
                }
            })?;
        let text = out.secret_string().unwrap_or_default().to_owned();
        if text.trim().is_empty() {
            return Err(ApiError::Permanent(format!("secret `{name}` is empty")));
        }
        let t = Token(text);
        self.cache
            .lock()
            .await
            .insert(key, (Instant::now(), t.clone()));
        Ok(t)
    }
}

/// The token in a secret's text: the text, or its JSON `token` key.
fn token_of(text: &str) -> String {
    serde_json::from_str::<Json>(text)
        .ok()
        .and_then(|v| v.get("token").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PEM text (the first block).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

/// A GitHub App JWT (RS256): issued a minute ago (clock drift), valid nine minutes.
pub fn app_jwt(app_id: i64, pem: &str, now_s: u64) -> Result<String, ApiError> {
    let bad = || {
        ApiError::Permanent(
            "the GitHub App key is not an RSA private key in PEM (PKCS#1 or PKCS#8)".to_owned(),
        )
    };
    let der = pem_der(pem).ok_or_else(bad)?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .or_else(|_| ring::signature::RsaKeyPair::from_der(&der))
        .map_err(|_| bad())?;
    let header = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = b64url(
        json!({"iat": now_s.saturating_sub(60), "exp": now_s + 540, "iss": app_id.to_string()})
            .to_string()
            .as_bytes(),
    );
    let message = format!("{header}.{claims}");
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut sig,
    )
    .map_err(|_| ApiError::Permanent("cannot sign the GitHub App JWT".to_owned()))?;
    Ok(format!("{message}.{}", b64url(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_secrets_may_be_plain_or_json() {
        assert_eq!(token_of("abc\n"), "abc");
        assert_eq!(token_of(r#"{"token":"xyz","user":"u"}"#), "xyz");
    }

    #[test]
    fn the_app_jwt_is_signed_rs256_and_verifies_with_the_public_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
            || std::process::Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        assert!(ok, "openssl genrsa");
        let pem = std::fs::read_to_string(&key).expect("pem");
        let jwt = app_jwt(42, &pem, 1_700_000_000).expect("jwt");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Json = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(claims["iss"], "42");
        assert_eq!(claims["exp"], 1_700_000_540);
        let der = pem_der(&pem).expect("der");
        let pair = ring::signature::RsaKeyPair::from_der(&der)
            .or_else(|_| ring::signature::RsaKeyPair::from_pkcs8(&der))
            .expect("key");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            pair.public().as_ref().to_vec(),
        );
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("b64");
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("the signature verifies");
        assert!(app_jwt(42, "not a key", 0).is_err());
    }
}
