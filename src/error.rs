//! The crate's one error type, and `Diagnostic`, a located problem in an input file.
//!
//! Every message follows the same style: lower-case, no trailing period, identifiers in
//! backticks, and a `help:` line that says what to do about it.

use std::fmt;
use std::path::PathBuf;

/// A position in a source file: 1-based line and column (columns count characters).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Deserialize,
    serde::Serialize,
)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// A range in a source file; `end` is exclusive.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Deserialize,
    serde::Serialize,
)]
pub struct Span {
    /// First character.
    pub start: Pos,
    /// One past the last character.
    pub end: Pos,
}

/// A source file kept in memory so diagnostics can quote the offending line.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (the path as the user gave it).
    pub name: String,
    /// The whole text.
    pub text: String,
}

impl SourceFile {
    /// Wraps a text under a display name.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The text of 1-based line `n`, without its line break.
    pub fn line(&self, n: usize) -> Option<&str> {
        if n == 0 {
            return None;
        }
        self.text.lines().nth(n - 1)
    }

    /// A diagnostic located at `span` in this file.
    pub fn diag(
        &self,
        span: Span,
        path: Option<&str>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.name.clone(),
            span: Some(span),
            path: path.filter(|p| !p.is_empty()).map(str::to_owned),
            message: message.into(),
            help: Some(help.into()),
            source_line: self.line(span.start.line).map(clip_line),
        }
    }
}

/// Longest source line a diagnostic quotes, in characters.
pub const MAX_QUOTED_LINE: usize = 200;

/// A source line as a diagnostic quotes it: at most [`MAX_QUOTED_LINE`] characters (then `…`),
/// with control characters other than tabs shown as `?`, so that a diagnostic never carries more
/// than a short piece of one line of the file.
fn clip_line(line: &str) -> String {
    let mut out: String = line
        .chars()
        .take(MAX_QUOTED_LINE)
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    if line.chars().nth(MAX_QUOTED_LINE).is_some() {
        out.push('…');
    }
    out
}

/// One problem in an input file, with where it is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as named by the user.
    pub file: String,
    /// Where in the file, when known.
    pub span: Option<Span>,
    /// The key path inside the document, e.g. `environments[2].account`.
    pub path: Option<String>,
    /// What is wrong (lower-case, no trailing period).
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// The source line the span starts on, quoted under the message.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// A diagnostic about a whole file, with no location inside it.
    pub fn file_level(
        file: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            span: None,
            path: None,
            message: message.into(),
            help: Some(help.into()),
            source_line: None,
        }
    }

    /// `file:line:col`, or just the file.
    pub fn location(&self) -> String {
        match self.span {
            Some(s) => format!("{}:{}:{}", self.file, s.start.line, s.start.col),
            None => self.file.clone(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => writeln!(f, "error: `{path}`: {}", self.message)?,
            None => writeln!(f, "error: {}", self.message)?,
        }
        writeln!(f, "  --> {}", self.location())?;
        if let (Some(span), Some(line)) = (self.span, &self.source_line) {
            let num = span.start.line.to_string();
            let pad = " ".repeat(num.len());
            let line_chars = line.chars().count();
            let start = span.start.col.saturating_sub(1).min(line_chars);
            let end_col = if span.end.line == span.start.line {
                span.end.col.saturating_sub(1)
            } else {
                line_chars
            };
            let width = end_col.saturating_sub(start).max(1);
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {line}")?;
            writeln!(f, "{pad} | {}{}", " ".repeat(start), "^".repeat(width))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  help: {help}")?;
        }
        Ok(())
    }
}

/// A list of diagnostics, printed one after the other with a count at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let mut files: Vec<&str> = self.0.iter().map(|d| d.file.as_str()).collect();
        files.dedup();
        let n = self.0.len();
        write!(
            f,
            "error: {} has {n} problem{}",
            files.join(", "),
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Everything that can go wrong in pipeforge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more input files (manifest, org policy, language catalog) are invalid.
    #[error("{0}")]
    Invalid(Diagnostics),

    /// A file could not be read or written.
    #[error("cannot {action} `{}`: {source}\n  help: {help}", path.display())]
    Io {
        /// What we were doing: "read", "write", "create directory".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
        /// What to do about it.
        help: String,
    },

    /// A template failed to parse or render.
    #[error("template `{name}` failed: {message}\n  help: {help}")]
    Template {
        /// The template name, e.g. `buildspec/gate.yml.tera`.
        name: String,
        /// The engine's message.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// A rendered file failed the checks that run before anything is written.
    #[error(
        "generated `{file}` for pipeline `{pipeline}` failed a check: {message}\n  help: {help}"
    )]
    OutputCheck {
        /// The pipeline (manifest name).
        pipeline: String,
        /// The generated file, relative to the pipeline's bundle.
        file: String,
        /// What is wrong.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// The pipeline would exceed an AWS limit (a quota or a name length); found before anything
    /// is written or deployed.
    #[error("pipeline `{pipeline}` exceeds {limit}: {message}\n  help: {help}")]
    Quota {
        /// The pipeline (manifest name).
        pipeline: String,
        /// The limit, e.g. "the CodePipeline limit of 50 actions per stage".
        limit: String,
        /// What exceeds it, and by how much.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// Two manifests given to one command produce pipelines with the same name.
    #[error(
        "two manifests are both named `{name}`: `{first}` and `{second}`\n  help: pipeline names must be unique within one render; rename one of them"
    )]
    DuplicatePipeline {
        /// The pipeline name.
        name: String,
        /// First manifest.
        first: String,
        /// Second manifest.
        second: String,
    },

    /// An AWS request failed (after the SDK's retries).
    #[error("cannot {action}: {message}\n  help: {help}")]
    Aws {
        /// What pipeforge was doing, e.g. "upload `s3://bucket/key`".
        action: String,
        /// The service's error code, when there is one (`AccessDenied`, `NoSuchBucket`, ...).
        code: Option<String>,
        /// The service's message (or the transport error), with the code.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// Another deploy or publish of the same pipeline holds its lock (after waiting for it); a
    /// caller such as the webhook may retry later.
    #[error("{message}\n  help: {help}")]
    Locked {
        /// Who holds the lock, since when, and how long pipeforge waited.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// The org policy or the pipeline's owner does not allow this: a repository that may not
    /// deploy the team's pipelines, a pipeline owned by another repository or team. Found before
    /// anything is uploaded or changed; retrying does not help.
    #[error("{message}\n  help: {help}")]
    Refused {
        /// What is refused, and who owns it.
        message: String,
        /// What to do about it.
        help: String,
    },

    /// A CloudFormation stack operation failed: the stack, its final status, and the events that
    /// explain it.
    #[error("{0}")]
    Deploy(Box<DeployFailure>),

    /// Anything else, with a message and a hint.
    #[error("{message}\n  help: {help}")]
    Other {
        /// What is wrong.
        message: String,
        /// What to do about it.
        help: String,
    },
}

impl Error {
    /// An `Error::Other`.
    pub fn other(message: impl Into<String>, help: impl Into<String>) -> Self {
        Error::Other {
            message: message.into(),
            help: help.into(),
        }
    }

    /// An `Error::Io` for a failed read, with a standard hint.
    pub fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        let help = if source.kind() == std::io::ErrorKind::NotFound {
            "check the path; relative paths are resolved from the current directory".to_owned()
        } else {
            "check that the file is readable".to_owned()
        };
        Error::Io {
            action: "read",
            path,
            source,
            help,
        }
    }

    /// An `Error::Io` for a failed write.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action: "write",
            path: path.into(),
            source,
            help: "check that the output directory is writable".to_owned(),
        }
    }
}

/// What a failed stack deploy reports: where, how it ended, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployFailure {
    /// The stack.
    pub stack: String,
    /// Its account.
    pub account: String,
    /// Its region.
    pub region: String,
    /// What failed, e.g. "update of stack `x` failed" (lower-case, no trailing period).
    pub message: String,
    /// The stack's status at the end (`UPDATE_ROLLBACK_COMPLETE`, ...), when known.
    pub status: Option<String>,
    /// The events that explain the failure, oldest first, one line each.
    pub events: Vec<String>,
    /// What to do about it.
    pub help: String,
}

impl fmt::Display for DeployFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(status) = &self.status {
            write!(f, " (stack `{}` is now {status}", self.stack)?;
            write!(f, " in account {}, {})", self.account, self.region)?;
        }
        if !self.events.is_empty() {
            write!(f, "\n  events that explain it:")?;
            for e in &self.events {
                write!(f, "\n    {e}")?;
            }
        }
        write!(f, "\n  help: {}", self.help)
    }
}

impl From<Diagnostics> for Error {
    fn from(d: Diagnostics) -> Self {
        Error::Invalid(d)
    }
}

impl From<Vec<Diagnostic>> for Error {
    fn from(d: Vec<Diagnostic>) -> Self {
        Error::Invalid(Diagnostics(d))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnostic_quotes_at_most_a_clipped_line_of_the_file() {
        let long = format!("key: {}\nsecond: line\n", "x".repeat(10_000));
        let file = SourceFile::new("m.yml", long);
        let at = Pos { line: 1, col: 1 };
        let d = file.diag(Span { start: at, end: at }, None, "bad", "fix it");
        let quoted = d.source_line.clone().expect("quoted line");
        assert_eq!(quoted.chars().count(), MAX_QUOTED_LINE + 1, "{quoted}");
        assert!(quoted.ends_with('…'));
        assert!(!d.to_string().contains("second"), "one line only");
        let env = SourceFile::new("e", "A=1\0SECRET=2\x1b[0m");
        let d = env.diag(Span { start: at, end: at }, None, "bad", "fix it");
        assert_eq!(d.source_line.as_deref(), Some("A=1?SECRET=2?[0m"));
    }
}
