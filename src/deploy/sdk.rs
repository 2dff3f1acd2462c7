//! [`StackApi`] on the AWS SDK: one CloudFormation client per account and region, with the
//! tooling account's own credentials or the org's bootstrap role in target accounts.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::primitives::{DateTime, DateTimeFormat};
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetType, DeploymentMode, StackDriftDetectionStatus, StackResourceDriftStatus,
    Tag, TemplateStage,
};

use super::api::{
    ApiError, ApiErrorKind, ApiResult, ChangeSetInfo, ChangeSetKind, ChangeSetRequest,
    ChangeSetSummary, Location, ResourceDrift, StackApi, StackInfo, TemplateSource,
};
use crate::aws::{AwsContext, AwsFailure};
use crate::error::Result;
use crate::publish::progress::{ResourceChange, ResourceEvent};

/// CloudFormation through the SDK.
#[derive(Debug)]
pub struct SdkStackApi<'a> {
    aws: &'a AwsContext,
    role: String,
    session: String,
    clients: tokio::sync::Mutex<BTreeMap<Location, Client>>,
}

fn time(t: Option<&DateTime>) -> Option<String> {
    t.and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
}

fn api_error<E, R>(err: aws_sdk_cloudformation::error::SdkError<E, R>) -> ApiError
where
    E: aws_sdk_cloudformation::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
    aws_sdk_cloudformation::error::SdkError<E, R>: std::error::Error + 'static,
{
    let f = AwsFailure::of(&err);
    ApiError::classify(f.code.as_deref(), &f.message, f.status)
}

impl<'a> SdkStackApi<'a> {
    /// CloudFormation in any account: directly where the caller is, else through the role
    /// `role` (the org's bootstrap role), assumed as `session`.
    pub fn new(aws: &'a AwsContext, role: &str, session: &str) -> Self {
        SdkStackApi {
            aws,
            role: role.to_owned(),
            session: session.to_owned(),
            clients: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Credentials for `at`, checked now (a missing or untrusting bootstrap role fails here,
    /// with a clear message, rather than in the middle of a stack).
    pub async fn connect(&self, at: &Location) -> Result<()> {
        self.client_checked(at).await.map(|_| ())
    }

    async fn client_checked(&self, at: &Location) -> Result<Client> {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(at) {
            return Ok(c.clone());
        }
        let conf = self
            .aws
            .account(&at.account, &at.region, &self.role, &self.session)
            .await?;
        let c = self.aws.cloudformation(&conf, &at.region);
        clients.insert(at.clone(), c.clone());
        Ok(c)
    }

    /// CloudFormation drift detection of `stack`: started, waited for (every `poll`, at most
    /// `attempts` times), then the resources it found modified or deleted.
    pub async fn resource_drifts(
        &self,
        at: &Location,
        stack: &str,
        poll: std::time::Duration,
        attempts: u32,
    ) -> ApiResult<Vec<ResourceDrift>> {
        let c = self.client(at).await?;
        let id = c
            .detect_stack_drift()
            .stack_name(stack)
            .send()
            .await
            .map_err(api_error)?
            .stack_drift_detection_id
            .unwrap_or_default();
        for _ in 0..attempts.max(1) {
            let s = c
                .describe_stack_drift_detection_status()
                .stack_drift_detection_id(&id)
                .send()
                .await
                .map_err(api_error)?;
            match s.detection_status {
                Some(StackDriftDetectionStatus::DetectionInProgress) => {
                    tokio::time::sleep(poll).await;
                }
                Some(StackDriftDetectionStatus::DetectionComplete) => {
                    return self.drifted_resources(&c, stack).await;
                }
                // Some resources could not be checked (their type, or the caller's rights): what
                // was found is the answer; nothing found is no proof of "in sync".
                Some(StackDriftDetectionStatus::DetectionFailed) => {
                    let found = self.drifted_resources(&c, stack).await?;
                    if !found.is_empty() {
                        return Ok(found);
                    }
                    return Err(ApiError {
                        kind: ApiErrorKind::Other,
                        code: None,
                        message: format!(
                            "drift detection of `{stack}` could not check every resource: {}",
                            s.detection_status_reason.unwrap_or_default()
                        ),
                    });
                }
                other => {
                    return Err(ApiError {
                        kind: ApiErrorKind::Other,
                        code: None,
                        message: format!(
                            "drift detection of `{stack}` ended {}: {}",
                            other.as_ref().map_or("unknown", |o| o.as_str()),
                            s.detection_status_reason.unwrap_or_default()
                        ),
                    });
                }
            }
        }
        Err(ApiError {
            kind: ApiErrorKind::Other,
            code: None,
            message: format!("drift detection of `{stack}` did not finish"),
        })
    }

    async fn drifted_resources(&self, c: &Client, stack: &str) -> ApiResult<Vec<ResourceDrift>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = c
                .describe_stack_resource_drifts()
                .stack_name(stack)
                .stack_resource_drift_status_filters(StackResourceDriftStatus::Modified)
                .stack_resource_drift_status_filters(StackResourceDriftStatus::Deleted)
                .set_next_token(token)
                .send()
                .await
                .map_err(api_error)?;
            for d in page.stack_resource_drifts() {
                out.push(ResourceDrift {
                    logical_id: d.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: d.resource_type().unwrap_or_default().to_owned(),
                    status: d
                        .stack_resource_drift_status()
                        .map_or("", |s| s.as_str())
                        .to_owned(),
                    properties: d
                        .property_differences()
                        .iter()
                        .filter_map(|p| p.property_path())
                        .map(str::to_owned)
                        .collect(),
                });
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.logical_id.cmp(&b.logical_id));
        Ok(out)
    }

    async fn client(&self, at: &Location) -> ApiResult<Client> {
        self.client_checked(at).await.map_err(|e| ApiError {
            kind: ApiErrorKind::Denied,
            code: None,
            message: e.to_string(),
        })
    }
}

impl StackApi for SdkStackApi<'_> {
    async fn describe_stack(&self, at: &Location, stack: &str) -> ApiResult<Option<StackInfo>> {
        let c = self.client(at).await?;
        match c.describe_stacks().stack_name(stack).send().await {
            Ok(out) => Ok(out.stacks().first().map(|s| StackInfo {
                id: s.stack_id().unwrap_or_default().to_owned(),
                name: s.stack_name().unwrap_or_default().to_owned(),
                status: s
                    .stack_status()
                    .map(|x| x.as_str().to_owned())
                    .unwrap_or_default(),
                reason: s.stack_status_reason().map(str::to_owned),
                created: time(s.creation_time()),
                updated: time(s.last_updated_time()),
                outputs: s
                    .outputs()
                    .iter()
                    .filter_map(|o| {
                        Some((o.output_key()?.to_owned(), o.output_value()?.to_owned()))
                    })
                    .collect(),
                parameters: s
                    .parameters()
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.parameter_key()?.to_owned(),
                            p.parameter_value()?.to_owned(),
                        ))
                    })
                    .collect(),
            })),
            Err(e) => {
                let e = api_error(e);
                if e.kind == ApiErrorKind::StackNotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn get_template(&self, at: &Location, stack: &str) -> ApiResult<Option<String>> {
        let c = self.client(at).await?;
        match c
            .get_template()
            .stack_name(stack)
            .template_stage(TemplateStage::Original)
            .send()
            .await
        {
            Ok(out) => Ok(out.template_body().map(str::to_owned)),
            Err(e) => {
                let e = api_error(e);
                if e.kind == ApiErrorKind::StackNotFound {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn create_change_set(&self, at: &Location, r: &ChangeSetRequest) -> ApiResult<()> {
        let c = self.client(at).await?;
        let mut req = c
            .create_change_set()
            .stack_name(&r.stack)
            .change_set_name(&r.name)
            .change_set_type(match r.kind {
                ChangeSetKind::Create => ChangeSetType::Create,
                ChangeSetKind::Update => ChangeSetType::Update,
            })
            .description(&r.description)
            .set_role_arn(r.role_arn.clone())
            .set_deployment_mode(r.revert_drift.then_some(DeploymentMode::RevertDrift))
            .client_token(&r.name);
        req = match &r.template {
            TemplateSource::Body(b) => req.template_body(b),
            TemplateSource::Url(u) => req.template_url(u),
        };
        for cap in &r.capabilities {
            req = req.capabilities(Capability::from(cap.as_str()));
        }
        for (k, v) in &r.parameters {
            req = req.parameters(
                aws_sdk_cloudformation::types::Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build(),
            );
        }
        for (k, v) in &r.tags {
            req = req.tags(Tag::builder().key(k).value(v).build());
        }
        req.send().await.map(|_| ()).map_err(api_error)
    }

    async fn describe_change_set(
        &self,
        at: &Location,
        stack: &str,
        name: &str,
    ) -> ApiResult<ChangeSetInfo> {
        let c = self.client(at).await?;
        let mut token: Option<String> = None;
        let mut info: Option<ChangeSetInfo> = None;
        for _ in 0..50 {
            let out = c
                .describe_change_set()
                .stack_name(stack)
                .change_set_name(name)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(api_error)?;
            let i = info.get_or_insert_with(|| ChangeSetInfo {
                stack_id: out.stack_id().unwrap_or_default().to_owned(),
                status: out
                    .status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                reason: out.status_reason().map(str::to_owned),
                execution_status: out
                    .execution_status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                changes: Vec::new(),
            });
            for ch in out.changes() {
                let Some(rc) = ch.resource_change() else {
                    continue;
                };
                let mut properties: Vec<String> = rc
                    .details()
                    .iter()
                    .filter_map(|d| d.target().and_then(|t| t.name()).map(str::to_owned))
                    .collect();
                properties.sort();
                properties.dedup();
                i.changes.push(ResourceChange {
                    action: rc
                        .action()
                        .map(|a| a.as_str().to_owned())
                        .unwrap_or_default(),
                    logical_id: rc.logical_resource_id().unwrap_or_default().to_owned(),
                    physical_id: rc.physical_resource_id().map(str::to_owned),
                    resource_type: rc.resource_type().unwrap_or_default().to_owned(),
                    replacement: rc.replacement().map(|r| r.as_str().to_owned()),
                    scope: rc.scope().iter().map(|s| s.as_str().to_owned()).collect(),
                    properties,
                });
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        info.ok_or_else(|| ApiError {
            kind: ApiErrorKind::Other,
            code: None,
            message: "DescribeChangeSet returned nothing".to_owned(),
        })
    }

    async fn execute_change_set(&self, at: &Location, stack: &str, name: &str) -> ApiResult<()> {
        let c = self.client(at).await?;
        c.execute_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .client_request_token(name)
            .send()
            .await
            .map(|_| ())
            .map_err(api_error)
    }

    async fn delete_change_set(&self, at: &Location, stack: &str, name: &str) -> ApiResult<()> {
        let c = self.client(at).await?;
        c.delete_change_set()
            .stack_name(stack)
            .change_set_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(api_error)
    }

    async fn list_change_sets(
        &self,
        at: &Location,
        stack: &str,
    ) -> ApiResult<Vec<ChangeSetSummary>> {
        let c = self.client(at).await?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..20 {
            let page = c
                .list_change_sets()
                .stack_name(stack)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(api_error)?;
            for s in page.summaries() {
                out.push(ChangeSetSummary {
                    name: s.change_set_name().unwrap_or_default().to_owned(),
                    status: s
                        .status()
                        .map(|x| x.as_str().to_owned())
                        .unwrap_or_default(),
                    execution_status: s
                        .execution_status()
                        .map(|x| x.as_str().to_owned())
                        .unwrap_or_default(),
                    created: s.creation_time().map(|t| t.secs()),
                });
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn delete_stack(
        &self,
        at: &Location,
        stack_id: &str,
        role_arn: Option<&str>,
    ) -> ApiResult<()> {
        let c = self.client(at).await?;
        c.delete_stack()
            .stack_name(stack_id)
            .set_role_arn(role_arn.map(str::to_owned))
            .send()
            .await
            .map(|_| ())
            .map_err(api_error)
    }

    async fn physical_id(
        &self,
        at: &Location,
        stack_id: &str,
        logical_id: &str,
    ) -> ApiResult<Option<String>> {
        let c = self.client(at).await?;
        match c
            .describe_stack_resource()
            .stack_name(stack_id)
            .logical_resource_id(logical_id)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .stack_resource_detail()
                .and_then(|d| d.physical_resource_id())
                .filter(|p| !p.is_empty())
                .map(str::to_owned)),
            Err(e) => {
                let e = api_error(e);
                if e.kind == ApiErrorKind::StackNotFound || e.message.contains("does not exist") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn recent_events(
        &self,
        at: &Location,
        stack_id: &str,
        stop_at: Option<&str>,
    ) -> ApiResult<Vec<ResourceEvent>> {
        let c = self.client(at).await?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Newest first; a deploy only needs the events since `stop_at`, and a first look at a
        // stack only the latest page.
        for _ in 0..10 {
            let page = c
                .describe_stack_events()
                .stack_name(stack_id)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(api_error)?;
            for e in page.stack_events() {
                let id = e.event_id().unwrap_or_default();
                if Some(id) == stop_at {
                    return Ok(out);
                }
                out.push(ResourceEvent {
                    id: id.to_owned(),
                    time: time(e.timestamp()).unwrap_or_default(),
                    logical_id: e.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: e.resource_type().unwrap_or_default().to_owned(),
                    status: e
                        .resource_status()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    reason: e.resource_status_reason().map(str::to_owned),
                });
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() || stop_at.is_none() {
                break;
            }
        }
        Ok(out)
    }
}
