//! `pipeforge fleet list`: one row per deployed pipeline, from its deploy record: team, owner
//! repository, last deployed commit and time, template set, gates with their tool versions,
//! environments with accounts and approvals, active waivers. Written as it is read ([`Lister`]):
//! a table, JSON (an array, one element per pipeline) or CSV for auditors.

use std::io::Write;

use serde::Serialize;

use super::Entry;
use crate::error::{Error, Result};
use crate::publish::record::DeployedRecord;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    /// Aligned columns for a terminal.
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header line.
    Csv,
}

/// One pipeline of the fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The pipeline.
    pub pipeline: String,
    /// `ok`, `no-record` (deployed before deploy records, or never deployed) or `unreadable`.
    pub state: &'static str,
    /// The team.
    pub team: String,
    /// The repository it deploys from.
    pub repository: String,
    /// The last deployed commit.
    pub commit: String,
    /// When (RFC 3339).
    pub deployed_at: String,
    /// Template set label.
    pub template_set: String,
    /// Template set content hash.
    pub template_hash: String,
    /// The pipeforge version that deployed it.
    pub pipeforge: String,
    /// `gate[tool==1.2,...]`, in org order.
    pub gates: Vec<String>,
    /// `env:account[+approval]`, in promotion order.
    pub environments: Vec<String>,
    /// Active waivers: `rule (approver, until DATE): reason`.
    pub waivers: Vec<String>,
    /// Why the record is missing or unreadable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl Row {
    /// The row of one scanned pipeline.
    pub fn of(entry: &Entry) -> Row {
        match entry {
            Entry::Record(r) => Row::from_record(r),
            Entry::Missing { pipeline } => Row::empty(pipeline, "no-record", String::new()),
            Entry::Unreadable { pipeline, error } => {
                Row::empty(pipeline, "unreadable", error.clone())
            }
        }
    }

    fn empty(pipeline: &str, state: &'static str, error: String) -> Row {
        Row {
            pipeline: pipeline.to_owned(),
            state,
            team: String::new(),
            repository: String::new(),
            commit: String::new(),
            deployed_at: String::new(),
            template_set: String::new(),
            template_hash: String::new(),
            pipeforge: String::new(),
            gates: Vec::new(),
            environments: Vec::new(),
            waivers: Vec::new(),
            error,
        }
    }

    fn from_record(r: &DeployedRecord) -> Row {
        Row {
            pipeline: r.pipeline.clone(),
            state: "ok",
            team: r.team.clone(),
            repository: r.repository.clone(),
            commit: r.commit.clone(),
            deployed_at: r.deployed_at.clone(),
            template_set: r.template_set.label.clone(),
            template_hash: r.template_set.hash.clone(),
            pipeforge: r.pipeforge.clone(),
            gates: r
                .gates
                .iter()
                .map(|g| format!("{}[{}]", g.name, g.tools.join(",")))
                .collect(),
            environments: r
                .environments
                .iter()
                .map(|e| {
                    let approval = if e.approval { "+approval" } else { "" };
                    format!("{}:{}{approval}", e.name, e.account)
                })
                .collect(),
            waivers: r
                .waivers()
                .map(|n| {
                    let by = n
                        .waiver
                        .as_ref()
                        .map(|w| {
                            format!(
                                " (approved by {}, until {}): {}",
                                w.approver, w.expires, w.reason
                            )
                        })
                        .unwrap_or_default();
                    format!("{}{by}", n.subject)
                })
                .collect(),
            error: String::new(),
        }
    }
}

/// Writes rows as they come.
pub struct Lister<'a> {
    out: &'a mut dyn Write,
    format: ListFormat,
    rows: usize,
}

const CSV_HEADER: &str = "pipeline,state,team,repository,commit,deployed_at,template_set,template_hash,pipeforge,gates,environments,waivers,error";

impl<'a> Lister<'a> {
    /// Starts the output (a JSON array's opening, the CSV header, the table's header).
    pub fn begin(out: &'a mut dyn Write, format: ListFormat) -> Result<Lister<'a>> {
        let head = match format {
            ListFormat::Json => "[".to_owned(),
            ListFormat::Csv => CSV_HEADER.to_owned(),
            ListFormat::Table => format!(
                "{:<24} {:<12} {:<28} {:<12} {:<20} {}",
                "PIPELINE", "TEAM", "REPOSITORY", "COMMIT", "DEPLOYED", "TEMPLATES / GATES"
            ),
        };
        writeln!(out, "{head}").map_err(io)?;
        Ok(Lister {
            out,
            format,
            rows: 0,
        })
    }

    /// Writes one row.
    pub fn row(&mut self, row: &Row) -> Result<()> {
        let text = match self.format {
            ListFormat::Json => {
                let sep = if self.rows == 0 { "" } else { "," };
                format!(
                    "{sep}{}",
                    serde_json::to_string(row).map_err(|e| Error::other(
                        format!("cannot write JSON: {e}"),
                        "this is a bug"
                    ))?
                )
            }
            ListFormat::Csv => csv_line(row),
            ListFormat::Table => table_line(row),
        };
        self.rows += 1;
        writeln!(self.out, "{text}").map_err(io)
    }

    /// Ends the output; the number of rows written.
    pub fn end(self) -> Result<usize> {
        if self.format == ListFormat::Json {
            writeln!(self.out, "]").map_err(io)?;
        }
        Ok(self.rows)
    }
}

fn table_line(r: &Row) -> String {
    if r.state != "ok" {
        let why = if r.error.is_empty() {
            "no deploy record: deployed before deploy records existed (the next deploy writes it)"
        } else {
            r.error.as_str()
        };
        return format!("{:<24} {}: {why}", r.pipeline, r.state);
    }
    let commit: String = r.commit.chars().take(12).collect();
    let at: String = r.deployed_at.chars().take(20).collect();
    let hash: String = r
        .template_hash
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    let mut line = format!(
        "{:<24} {:<12} {:<28} {:<12} {:<20} {}@{hash} (pipeforge {})\n{:>24}   gates: {}\n{:>24}   environments: {}",
        r.pipeline,
        r.team,
        r.repository,
        commit,
        at,
        r.template_set,
        r.pipeforge,
        "",
        r.gates.join(" "),
        "",
        r.environments.join(" "),
    );
    for w in &r.waivers {
        line.push_str(&format!("\n{:>24}   waiver: {w}", ""));
    }
    line
}

fn csv_line(r: &Row) -> String {
    [
        r.pipeline.as_str(),
        r.state,
        &r.team,
        &r.repository,
        &r.commit,
        &r.deployed_at,
        &r.template_set,
        &r.template_hash,
        &r.pipeforge,
        &r.gates.join(" "),
        &r.environments.join(" "),
        &r.waivers.join("; "),
        &r.error,
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

/// A CSV field, quoted when it needs to be; a leading `=`, `+`, `-` or `@` is prefixed with `'`
/// so that a spreadsheet never evaluates a value a manifest controls.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn io(e: std::io::Error) -> Error {
    Error::other(
        format!("cannot write the fleet list: {e}"),
        "check the output (a closed pipe or a full disk)",
    )
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
