//! The CloudFormation operations a deploy needs, as a trait: the SDK implementation talks to AWS
//! (or a local server), an in-memory fake drives the unit tests of the state machine.

use std::collections::BTreeMap;
use std::future::Future;

use crate::publish::progress::{ResourceChange, ResourceEvent};

/// An account and region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
}

/// A stack as `DescribeStacks` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackInfo {
    /// Stack id (ARN).
    pub id: String,
    /// Name.
    pub name: String,
    /// Status (`CREATE_COMPLETE`, ...).
    pub status: String,
    /// Status reason.
    pub reason: Option<String>,
    /// Creation time (RFC 3339).
    pub created: Option<String>,
    /// Last update time (RFC 3339).
    pub updated: Option<String>,
    /// Outputs, by key.
    pub outputs: BTreeMap<String, String>,
    /// Parameters, by key.
    pub parameters: BTreeMap<String, String>,
}

/// How a change set is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSetKind {
    /// A new stack (or one in `REVIEW_IN_PROGRESS`).
    Create,
    /// An existing stack.
    Update,
}

impl ChangeSetKind {
    /// `CREATE` or `UPDATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeSetKind::Create => "CREATE",
            ChangeSetKind::Update => "UPDATE",
        }
    }
}

/// Where the template comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// `TemplateBody`.
    Body(String),
    /// `TemplateURL` (an S3 HTTPS URL).
    Url(String),
}

/// A `CreateChangeSet` request.
#[derive(Clone, Debug)]
pub struct ChangeSetRequest {
    /// Stack name.
    pub stack: String,
    /// Change set name.
    pub name: String,
    /// Create or update.
    pub kind: ChangeSetKind,
    /// The template.
    pub template: TemplateSource,
    /// Capabilities to acknowledge.
    pub capabilities: Vec<String>,
    /// Stack tags.
    pub tags: Vec<(String, String)>,
    /// Description.
    pub description: String,
    /// The CloudFormation execution (service) role the stack is deployed with.
    pub role_arn: Option<String>,
    /// Parameter values.
    pub parameters: Vec<(String, String)>,
    /// A drift-aware change set (`DeploymentMode: REVERT_DRIFT`, update only): resources edited
    /// outside CloudFormation are put back to the template's values even where the template
    /// does not change (`fleet drift --fix`).
    pub revert_drift: bool,
}

/// A resource CloudFormation drift detection found changed outside the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDrift {
    /// Its logical id.
    pub logical_id: String,
    /// Its type.
    pub resource_type: String,
    /// `MODIFIED` or `DELETED`.
    pub status: String,
    /// The property paths that differ (`/Source/BuildSpec`).
    pub properties: Vec<String>,
}

/// A change set as `DescribeChangeSet` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSetInfo {
    /// The stack's id.
    pub stack_id: String,
    /// `CREATE_PENDING`, `CREATE_IN_PROGRESS`, `CREATE_COMPLETE`, `FAILED`, ...
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// `AVAILABLE`, `UNAVAILABLE`, `EXECUTE_IN_PROGRESS`, ...
    pub execution_status: String,
    /// The resource changes.
    pub changes: Vec<ResourceChange>,
}

/// A change set as `ListChangeSets` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeSetSummary {
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Execution status.
    pub execution_status: String,
    /// Creation time, seconds since the epoch.
    pub created: Option<i64>,
}

/// What kind of failure a CloudFormation call had, as far as the state machine cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// The stack does not exist.
    StackNotFound,
    /// The change set does not exist (deleted by someone, or executed by another change set).
    ChangeSetNotFound,
    /// A change set of that name exists already.
    AlreadyExists,
    /// The stack or change set is in a state that does not allow the call (another operation
    /// is running, the change set is obsolete).
    InvalidState,
    /// Access denied.
    Denied,
    /// Anything else.
    Other,
}

/// A failed CloudFormation call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Kind.
    pub kind: ApiErrorKind,
    /// The service's code.
    pub code: Option<String>,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// Classifies a service error by its code and message.
    pub fn classify(code: Option<&str>, message: &str, status: Option<u16>) -> ApiError {
        let m = message.to_ascii_lowercase();
        let kind = match code.unwrap_or("") {
            "ChangeSetNotFound" | "ChangeSetNotFoundException" => ApiErrorKind::ChangeSetNotFound,
            "AlreadyExistsException" | "AlreadyExists" => ApiErrorKind::AlreadyExists,
            "InvalidChangeSetStatus" | "InvalidChangeSetStatusException" => {
                ApiErrorKind::InvalidState
            }
            "AccessDenied" | "AccessDeniedException" => ApiErrorKind::Denied,
            "ValidationError" if m.contains("does not exist") && m.contains("stack") => {
                ApiErrorKind::StackNotFound
            }
            "ValidationError"
                if m.contains("_in_progress state")
                    || m.contains("in_progress state")
                    || m.contains("can not be updated")
                    || m.contains("cannot be updated")
                    || m.contains("is in review_in_progress")
                    || m.contains("cannot be executed") =>
            {
                ApiErrorKind::InvalidState
            }
            _ if status == Some(403) => ApiErrorKind::Denied,
            _ => ApiErrorKind::Other,
        };
        ApiError {
            kind,
            code: code.map(str::to_owned),
            message: message.to_owned(),
        }
    }

    /// `Code: message`.
    pub fn text(&self) -> String {
        match &self.code {
            Some(c) if !self.message.contains(c.as_str()) => format!("{c}: {}", self.message),
            _ => self.message.clone(),
        }
    }
}

/// The result of a CloudFormation call.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// The CloudFormation calls of a deploy. Every method acts in the account and region `at`.
pub trait StackApi: Sync {
    /// `DescribeStacks` by name or id; `None` when there is no such stack.
    fn describe_stack(
        &self,
        at: &Location,
        stack: &str,
    ) -> impl Future<Output = ApiResult<Option<StackInfo>>> + Send;

    /// `GetTemplate` (original stage); `None` when the stack does not exist.
    fn get_template(
        &self,
        at: &Location,
        stack: &str,
    ) -> impl Future<Output = ApiResult<Option<String>>> + Send;

    /// `CreateChangeSet`.
    fn create_change_set(
        &self,
        at: &Location,
        request: &ChangeSetRequest,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// `DescribeChangeSet`, every page.
    fn describe_change_set(
        &self,
        at: &Location,
        stack: &str,
        name: &str,
    ) -> impl Future<Output = ApiResult<ChangeSetInfo>> + Send;

    /// `ExecuteChangeSet`.
    fn execute_change_set(
        &self,
        at: &Location,
        stack: &str,
        name: &str,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// `DeleteChangeSet`.
    fn delete_change_set(
        &self,
        at: &Location,
        stack: &str,
        name: &str,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// `ListChangeSets` of a stack.
    fn list_change_sets(
        &self,
        at: &Location,
        stack: &str,
    ) -> impl Future<Output = ApiResult<Vec<ChangeSetSummary>>> + Send;

    /// `DeleteStack`, through the execution role `role_arn` when given.
    fn delete_stack(
        &self,
        at: &Location,
        stack_id: &str,
        role_arn: Option<&str>,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// `DescribeStackResource`: the physical id of the resource `logical_id` of a stack (by
    /// id); `None` when the stack or the resource does not exist.
    fn physical_id(
        &self,
        at: &Location,
        stack_id: &str,
        logical_id: &str,
    ) -> impl Future<Output = ApiResult<Option<String>>> + Send;

    /// `DescribeStackEvents`, newest first, up to (not including) the event `stop_at`.
    fn recent_events(
        &self,
        at: &Location,
        stack_id: &str,
        stop_at: Option<&str>,
    ) -> impl Future<Output = ApiResult<Vec<ResourceEvent>>> + Send;
}
