//! The only module that builds AWS SDK clients: configuration from the standard chain, one TLS
//! stack, retries, timeouts, and credentials for the target accounts (the org's bootstrap role).
//!
//! Configuration comes from the standard chain: environment variables, `~/.aws/config` and
//! `~/.aws/credentials` profiles (including IAM Identity Center/SSO and `credential_process`),
//! web identity, and container, instance or Lambda roles. `AWS_ENDPOINT_URL` and the per-service
//! variants (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_CLOUDFORMATION`, ...) redirect the clients,
//! which is how the tests and the README point pipeforge at a local AWS server; with an endpoint
//! override S3 uses path-style addressing (the endpoint is usually an IP address).
//!
//! Requests retry in the SDK's *standard* mode (exponential backoff with jitter on throttling,
//! transient and 5xx errors); every connection and read has a timeout. Target accounts are
//! reached by assuming `arn:aws:iam::<account>:role/<deploy.bootstrap_role>` with the session name
//! `pipeforge-<pipeline>`; each account's credentials are built once and cached (the SDK refreshes
//! them before they expire).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};

use crate::error::{Error, Result};

/// How pipeforge talks to AWS. The defaults suit both AWS and a local server; every field left
/// `None` comes from the standard chain.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    /// Named profile (else `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Default region of clients that are not given one (else `AWS_REGION`, the profile, ...).
    pub region: Option<String>,
    /// Endpoint of every service (else `AWS_ENDPOINT_URL` and the per-service variables).
    pub endpoint_url: Option<String>,
    /// Static credentials (else the standard credential chain). Tests use this.
    pub credentials: Option<StaticCredentials>,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time to wait for data on a connection.
    pub read_timeout: Duration,
    /// Attempts per request, the first included (standard retry mode).
    pub max_attempts: u32,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            profile: None,
            region: None,
            endpoint_url: None,
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_attempts: 6,
        }
    }
}

/// An access key pair.
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Who the base credentials belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Account id.
    pub account: String,
    /// Caller ARN.
    pub arn: String,
}

/// A configured connection to AWS: the base configuration, the caller's identity, and cached
/// credentials for other accounts. Cheap to share (`&AwsContext`) between concurrent deploys.
#[derive(Debug)]
pub struct AwsContext {
    base: SdkConfig,
    path_style: bool,
    caller: tokio::sync::OnceCell<Identity>,
    accounts: tokio::sync::Mutex<BTreeMap<String, SdkConfig>>,
}

/// The HTTP client of every SDK client: hyper with rustls on ring (no C crypto build).
fn http_client() -> aws_sdk_sts::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// True when an environment variable is set to something.
fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

impl AwsContext {
    /// Loads the configuration from the standard chain, with `settings` on top.
    pub async fn load(settings: &AwsSettings) -> AwsContext {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(500)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .read_timeout(settings.read_timeout)
                    .build(),
            );
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(u) = &settings.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some(c) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "pipeforge-settings",
            ));
        }
        let base = loader.load().await;
        let ignore = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let path_style = settings.endpoint_url.is_some()
            || (!ignore && (env_set("AWS_ENDPOINT_URL") || env_set("AWS_ENDPOINT_URL_S3")))
            || base.endpoint_url().is_some();
        AwsContext {
            base,
            path_style,
            caller: tokio::sync::OnceCell::new(),
            accounts: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The base configuration (the caller's own credentials).
    pub fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// True when an endpoint override is in effect (S3 then uses path-style addressing).
    pub fn endpoint_overridden(&self) -> bool {
        self.path_style
    }

    /// The caller's account and ARN (`sts:GetCallerIdentity`, asked once).
    pub async fn caller(&self, region: &str) -> Result<&Identity> {
        self.caller
            .get_or_try_init(|| async {
                let sts = self.sts(&self.base, region);
                let out = sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| sdk_error("find out who the AWS credentials belong to", e))?;
                Ok(Identity {
                    account: out.account().unwrap_or_default().to_owned(),
                    arn: out.arn().unwrap_or_default().to_owned(),
                })
            })
            .await
    }

    /// The configuration to act in `account`: the base one when the caller is in that account,
    /// else credentials of the role `role_name` there (assumed as `session`, checked at once so
    /// that a missing or untrusting role is a clear error, then cached per account).
    pub async fn account(
        &self,
        account: &str,
        region: &str,
        role_name: &str,
        session: &str,
    ) -> Result<SdkConfig> {
        let caller = self.caller(region).await?;
        if caller.account == account {
            return Ok(self.base.clone());
        }
        let mut cache = self.accounts.lock().await;
        let key = format!("{account}/{role_name}/{session}");
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let arn = format!("arn:{}:iam::{account}:role/{role_name}", partition(region));
        let session_name: String = session
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(*c))
            .take(64)
            .collect();
        let sts_conf = self
            .base
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build();
        let provider = AssumeRoleProvider::builder(arn.clone())
            .session_name(session_name)
            .configure(&sts_conf)
            .build()
            .await;
        provider.provide_credentials().await.map_err(|e| {
            let text = DisplayErrorContext(&e).to_string();
            Error::Aws {
                action: format!("assume role `{arn}` (account {account})"),
                code: None,
                message: text,
                help: format!(
                    "the org's bootstrap role `{role_name}` must exist in account {account} and trust the caller `{}` (account {}); create it with the org bootstrap, or check `deploy.bootstrap_role` in org.yaml",
                    caller.arn, caller.account
                ),
            }
        })?;
        let conf = self
            .base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        cache.insert(key, conf.clone());
        Ok(conf)
    }

    /// An S3 client for `region` with `conf`'s credentials.
    pub fn s3(&self, conf: &SdkConfig, region: &str) -> aws_sdk_s3::Client {
        let c = aws_sdk_s3::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .force_path_style(self.path_style)
            .build();
        aws_sdk_s3::Client::from_conf(c)
    }

    /// A CloudFormation client for `region` with `conf`'s credentials.
    pub fn cloudformation(&self, conf: &SdkConfig, region: &str) -> aws_sdk_cloudformation::Client {
        let c = aws_sdk_cloudformation::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_cloudformation::Client::from_conf(c)
    }

    /// An IAM client with `conf`'s credentials (IAM is global; `region` only signs requests).
    pub fn iam(&self, conf: &SdkConfig, region: &str) -> aws_sdk_iam::Client {
        let c = aws_sdk_iam::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_iam::Client::from_conf(c)
    }

    /// A KMS client for `region` with `conf`'s credentials.
    pub fn kms(&self, conf: &SdkConfig, region: &str) -> aws_sdk_kms::Client {
        let c = aws_sdk_kms::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_kms::Client::from_conf(c)
    }

    /// A CodePipeline client for `region` with `conf`'s credentials.
    pub fn codepipeline(&self, conf: &SdkConfig, region: &str) -> aws_sdk_codepipeline::Client {
        let c = aws_sdk_codepipeline::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_codepipeline::Client::from_conf(c)
    }

    /// A CodeBuild client for `region` with `conf`'s credentials.
    pub fn codebuild(&self, conf: &SdkConfig, region: &str) -> aws_sdk_codebuild::Client {
        let c = aws_sdk_codebuild::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_codebuild::Client::from_conf(c)
    }

    /// A Service Quotas client for `region` with `conf`'s credentials.
    pub fn servicequotas(&self, conf: &SdkConfig, region: &str) -> aws_sdk_servicequotas::Client {
        let c = aws_sdk_servicequotas::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_servicequotas::Client::from_conf(c)
    }

    /// An STS client for `region` with `conf`'s credentials.
    pub fn sts(&self, conf: &SdkConfig, region: &str) -> aws_sdk_sts::Client {
        let c = aws_sdk_sts::config::Builder::from(conf)
            .region(Region::new(region.to_owned()))
            .build();
        aws_sdk_sts::Client::from_conf(c)
    }
}

/// The partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The domain of S3 endpoints in a region.
pub fn s3_domain(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// Why an object's body was not read whole: [`read_body`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The object is larger than the reader's limit (its declared length, or the bytes that had
    /// arrived when the limit was passed).
    TooLarge {
        /// The limit.
        limit: usize,
        /// The object's length as far as known (more than `limit`).
        at_least: u64,
    },
    /// The connection broke while reading.
    Broken(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit, at_least } => write!(
                f,
                "it is larger than the {limit} bytes pipeforge reads of such an object ({at_least} bytes or more)"
            ),
            BodyError::Broken(e) => f.write_str(e),
        }
    }
}

impl BodyError {
    /// The error to report for the object at `url`; `what` names it ("the deploy lock"; may be
    /// empty).
    pub fn error(&self, url: &str, what: &str) -> Error {
        let what = if what.is_empty() {
            String::new()
        } else {
            format!("{what} ")
        };
        let help = match self {
            BodyError::TooLarge { .. } => {
                "pipeforge did not write an object this large: look at what is there (another writer, or a damaged object), then restore or remove it"
            }
            BodyError::Broken(_) => "run the command again; the connection broke while reading",
        };
        Error::other(format!("cannot read {what}`{url}`: {self}"), help)
    }
}

/// An object's body, read chunk by chunk up to `limit` bytes: an object whose declared length
/// (`Content-Length`, when the response has one) is over the limit is not read at all, and a
/// body that passes it while arriving is dropped there. So what a bucket holds never decides
/// how much memory a reader takes: every S3 read of pipeforge goes through here with the
/// largest size its kind of object can legitimately have.
pub async fn read_body(
    mut body: aws_sdk_s3::primitives::ByteStream,
    declared: Option<i64>,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    let too_large = |at_least: u64| BodyError::TooLarge { limit, at_least };
    let declared = declared.and_then(|n| u64::try_from(n).ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        return Err(too_large(n));
    }
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| BodyError::Broken(e.to_string()))?
    {
        if out.len() + chunk.len() > limit {
            return Err(too_large((out.len() + chunk.len()) as u64));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An AWS error reduced to what pipeforge reports: the service's code and message, or the
/// transport failure.
#[derive(Clone, Debug)]
pub struct AwsFailure {
    /// Error code (`AccessDenied`, `ValidationError`, ...), when the service sent one.
    pub code: Option<String>,
    /// The message, or the whole error chain when there is no service message.
    pub message: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
}

impl AwsFailure {
    /// Reduces an SDK error.
    pub fn of<E, R>(err: &SdkError<E, R>) -> AwsFailure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
        SdkError<E, R>: std::error::Error + 'static,
    {
        let status = raw_status(err);
        match err {
            SdkError::ServiceError(s) => {
                let e = s.err();
                let code = e.code().map(str::to_owned).or_else(|| match status {
                    Some(404) => Some("NotFound".to_owned()),
                    Some(403) => Some("Forbidden".to_owned()),
                    _ => None,
                });
                let message = e
                    .message()
                    .map(str::to_owned)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| DisplayErrorContext(err).to_string());
                AwsFailure {
                    code,
                    message,
                    status,
                }
            }
            _ => AwsFailure {
                code: None,
                message: DisplayErrorContext(err).to_string(),
                status,
            },
        }
    }

    /// True for a code (or HTTP status) that means "not there".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("NotFound" | "NoSuchKey" | "NoSuchBucket" | "404")
        ) || self.status == Some(404)
    }

    /// True when access was refused.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("AccessDenied" | "AccessDeniedException" | "Forbidden" | "403")
        ) || self.status == Some(403)
    }

    /// The `help:` line for this failure, given one for "access denied".
    pub fn help(&self, access_denied: &str) -> String {
        let code = self.code.as_deref().unwrap_or("");
        let m = self.message.to_ascii_lowercase();
        if self.is_access_denied() {
            access_denied.to_owned()
        } else if matches!(
            code,
            "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
        ) {
            "the AWS credentials are expired or invalid; refresh them (e.g. `aws sso login --profile NAME`) or set `AWS_PROFILE` to a valid profile".to_owned()
        } else if m.contains("credentials") && self.code.is_none() {
            "no usable AWS credentials were found; set `AWS_PROFILE` (and run `aws sso login`), export `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or run where an instance, container or Lambda role is available; for a local server: `eval \"$(ci/local-aws start)\"`".to_owned()
        } else if code.contains("Throttl") || code == "TooManyRequestsException" {
            "AWS throttled the requests even after retries; try again in a minute".to_owned()
        } else if self.code.is_none() {
            "AWS could not be reached; check the network, the region and `AWS_ENDPOINT_URL` (unset it to use AWS itself)".to_owned()
        } else {
            "see the message above; run again with the same arguments once it is fixed".to_owned()
        }
    }

    /// The message with the code in front.
    pub fn text(&self) -> String {
        match &self.code {
            Some(c) if !self.message.contains(c.as_str()) => format!("{c}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

fn raw_status<E, R: std::fmt::Debug + 'static>(err: &SdkError<E, R>) -> Option<u16> {
    // Only the default response type carries a status we can read without knowing `R`.
    let any: &dyn std::any::Any = match err.raw_response() {
        Some(r) => r as &dyn std::any::Any,
        None => return None,
    };
    any.downcast_ref::<aws_sdk_s3::config::http::HttpResponse>()
        .map(|r| r.status().as_u16())
}

/// Converts an SDK error into the crate error, with a hint.
pub fn sdk_error<E, R>(action: impl Into<String>, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
    SdkError<E, R>: std::error::Error + 'static,
{
    let f = AwsFailure::of(&err);
    failure_error(
        action,
        &f,
        "the AWS credentials lack a permission this needs; check the caller's IAM policy and the resource's policy",
    )
}

/// The crate error for a reduced failure.
pub fn failure_error(action: impl Into<String>, f: &AwsFailure, access_denied: &str) -> Error {
    Error::Aws {
        action: action.into(),
        code: f.code.clone(),
        message: f.text(),
        help: f.help(access_denied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body is read up to its limit and no further; a declared length over the limit is
    /// refused before any byte is read.
    #[tokio::test]
    async fn bodies_are_read_up_to_their_limit() {
        use aws_sdk_s3::primitives::ByteStream;
        let body = |n: usize| ByteStream::from(vec![b'x'; n]);
        assert_eq!(read_body(body(10), Some(10), 10).await, Ok(vec![b'x'; 10]));
        assert_eq!(read_body(body(9), None, 10).await, Ok(vec![b'x'; 9]));
        assert_eq!(read_body(body(0), Some(0), 0).await, Ok(vec![]));
        // Over the limit while arriving (no length declared, or a wrong one).
        assert_eq!(
            read_body(body(11), None, 10).await,
            Err(BodyError::TooLarge {
                limit: 10,
                at_least: 11
            })
        );
        assert_eq!(
            read_body(body(11), Some(5), 10).await,
            Err(BodyError::TooLarge {
                limit: 10,
                at_least: 11
            })
        );
        // Declared over the limit: refused whatever the body holds.
        let refused = read_body(body(1), Some(1 << 40), 10).await;
        assert_eq!(
            refused,
            Err(BodyError::TooLarge {
                limit: 10,
                at_least: 1 << 40
            })
        );
        let text = refused.expect_err("too large").to_string();
        assert!(text.contains("larger than the 10 bytes"), "{text}");
        // A negative declared length is no length.
        assert_eq!(read_body(body(3), Some(-1), 10).await, Ok(vec![b'x'; 3]));
    }

    #[test]
    fn partitions_and_domains() {
        assert_eq!(partition("eu-west-1"), "aws");
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("us-gov-west-1"), "aws-us-gov");
        assert_eq!(s3_domain("cn-north-1"), "amazonaws.com.cn");
        assert_eq!(s3_domain("us-east-1"), "amazonaws.com");
    }

    #[test]
    fn hints_follow_the_failure() {
        let f = |code: Option<&str>, message: &str| AwsFailure {
            code: code.map(str::to_owned),
            message: message.to_owned(),
            status: None,
        };
        assert_eq!(f(Some("AccessDenied"), "no").help("denied"), "denied");
        assert!(
            f(Some("ExpiredToken"), "expired")
                .help("x")
                .contains("sso login")
        );
        assert!(
            f(None, "failed to load credentials")
                .help("x")
                .contains("AWS_PROFILE")
        );
        assert!(
            f(None, "connection refused")
                .help("x")
                .contains("AWS_ENDPOINT_URL")
        );
        assert_eq!(
            f(Some("NoSuchBucket"), "gone").text(),
            "NoSuchBucket: gone".to_owned()
        );
        assert!(f(Some("NoSuchKey"), "").is_not_found());
    }
}
