//! What `publish` and `deploy` report while they work: a stream of [`Event`]s sent to a
//! [`Progress`] sink. The library never prints; the CLI turns events into a live line on a
//! terminal or plain lines in logs, the webhook into log records.

use serde::Serialize;

/// Receives events as they happen. Implemented for every `Fn(&Event) + Send + Sync`.
pub trait Progress: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Progress for F {
    fn event(&self, event: &Event) {
        self(event)
    }
}

/// A sink that drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: &Event) {}
}

/// One resource event of a stack operation, as CloudFormation reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceEvent {
    /// Event id (unique per stack).
    pub id: String,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// Logical id (the stack's own name for stack-level events).
    pub logical_id: String,
    /// Resource type (`AWS::CloudFormation::Stack` for the stack itself).
    pub resource_type: String,
    /// Status (`CREATE_IN_PROGRESS`, `UPDATE_FAILED`, ...).
    pub status: String,
    /// Why, when CloudFormation says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ResourceEvent {
    /// True for a `*_FAILED` status.
    pub fn failed(&self) -> bool {
        self.status.ends_with("_FAILED")
    }

    /// True for a `*_IN_PROGRESS` status.
    pub fn in_progress(&self) -> bool {
        self.status.ends_with("_IN_PROGRESS")
    }

    /// `time  LogicalId  Type  STATUS  reason` on one line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{}  {}  {}  {}",
            self.time, self.logical_id, self.resource_type, self.status
        );
        if let Some(r) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            s.push_str("  ");
            s.push_str(r);
        }
        s
    }
}

/// One resource change of a change set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceChange {
    /// `Add`, `Modify`, `Remove`, `Import` or `Dynamic`.
    pub action: String,
    /// Logical id.
    pub logical_id: String,
    /// Physical id, for existing resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_id: Option<String>,
    /// Resource type.
    pub resource_type: String,
    /// `True`, `False` or `Conditional` for modifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// What changes (`Properties`, `Tags`, ...).
    pub scope: Vec<String>,
    /// Changed properties, when CloudFormation names them.
    pub properties: Vec<String>,
}

impl ResourceChange {
    /// `+ Id (Type)`, `~ Id (Type) [Properties: A, B]`, `! Id (Type) replacement`, `- Id (Type)`.
    pub fn line(&self) -> String {
        let replaced = self.replacement.as_deref() == Some("True");
        let sign = match self.action.as_str() {
            "Add" => "+",
            "Remove" => "-",
            "Modify" if replaced => "!",
            "Modify" => "~",
            _ => "?",
        };
        let mut s = format!("{sign} {} ({})", self.logical_id, self.resource_type);
        match self.action.as_str() {
            "Modify" => {
                let mut what: Vec<String> = self.scope.clone();
                if !self.properties.is_empty() {
                    what.push(self.properties.join(", "));
                }
                if !what.is_empty() {
                    s.push_str(&format!(" [{}]", what.join(": ")));
                }
                match self.replacement.as_deref() {
                    Some("True") => s.push_str(" — replaced"),
                    Some("Conditional") => s.push_str(" — may be replaced"),
                    _ => {}
                }
            }
            "Add" | "Remove" => {}
            other => s.push_str(&format!(" {other}")),
        }
        s
    }
}

/// How a stack ended (or, in a dry run, would end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackOutcome {
    /// Created.
    Created,
    /// Updated.
    Updated,
    /// Nothing to change (same content hash, or a change set without changes).
    Unchanged,
    /// Dry run: would be created.
    WouldCreate,
    /// Dry run: would be updated.
    WouldUpdate,
}

impl StackOutcome {
    /// Lower-case words.
    pub fn as_str(self) -> &'static str {
        match self {
            StackOutcome::Created => "created",
            StackOutcome::Updated => "updated",
            StackOutcome::Unchanged => "unchanged",
            StackOutcome::WouldCreate => "would be created",
            StackOutcome::WouldUpdate => "would be updated",
        }
    }
}

/// Something `publish` or `deploy` did or is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// The manifest rendered.
    Rendered {
        /// Pipeline name.
        pipeline: String,
        /// Files in the bundle.
        files: usize,
        /// The bundle's content hash.
        content_hash: String,
    },
    /// The repository snapshot is ready.
    SourceZipped {
        /// Commit.
        commit: String,
        /// Entries (repository files, without `.git`).
        files: usize,
        /// Zip size.
        bytes: u64,
        /// The zip's SHA-256.
        sha256: String,
    },
    /// Something worth knowing that is not an error (untracked files, submodules, ...).
    Warning {
        /// The message.
        message: String,
    },
    /// Waiting for something outside pipeforge's control (another deploy, a stack operation).
    Waiting {
        /// What for.
        what: String,
    },
    /// An object was uploaded.
    Uploaded {
        /// `s3://bucket/key`.
        url: String,
        /// Size.
        bytes: u64,
    },
    /// An upload was not needed.
    UploadSkipped {
        /// `s3://bucket/key`.
        url: String,
        /// Why.
        reason: String,
    },
    /// A stack starts (or, in a dry run, its change set is computed).
    StackStarted {
        /// Stack name.
        stack: String,
        /// Account.
        account: String,
        /// Region.
        region: String,
        /// What is done: `create`, `update`, `recreate` (after a failed first create), `check`.
        action: String,
    },
    /// A resource event of a stack operation.
    StackEvent {
        /// Stack name.
        stack: String,
        /// The event.
        event: ResourceEvent,
    },
    /// The changes of a change set (dry runs and `diff`).
    ChangeSet {
        /// Stack name.
        stack: String,
        /// The changes.
        changes: Vec<ResourceChange>,
    },
    /// pipeforge started the pipeline (after uploading a new source snapshot).
    PipelineStarted {
        /// The CodePipeline.
        pipeline: String,
        /// Its account.
        account: String,
        /// Its region.
        region: String,
        /// The execution id.
        execution: String,
    },
    /// Where the pipeline lives: the tooling account its owner record names, or the one a
    /// first deploy chose.
    Placed {
        /// The tooling account.
        account: String,
        /// Its region.
        region: String,
        /// Why there (`home`, `pipeline`, `team`, `hash`, `move`, `legacy`).
        by: String,
        /// True when this deploy chose it (a new pipeline).
        new: bool,
    },
    /// A stack is done.
    StackDone {
        /// Stack name.
        stack: String,
        /// How it ended.
        outcome: StackOutcome,
        /// Why, for unchanged stacks (`same content hash`, `no changes`).
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Time spent on it, in milliseconds.
        millis: u64,
    },
}
