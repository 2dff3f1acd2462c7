//! What a deployed pipeline came from: `pipelines/<name>/deployed.json` in the org source bucket
//! ([`DeployedRecord`], schema [`DEPLOYED_SCHEMA`]), written by every successful deploy (the
//! CLI's, the webhook's and a fleet rollout's), after its stacks.
//!
//! It holds the manifest as deployed (text and path), who deployed it (team, repository,
//! commit, when, by whom), the template set (its label and content hash), the hash of every
//! rendered file and stack, and a summary of the pipeline (gates with their tool versions,
//! environments with accounts and approvals, policy notices). The fleet reads only this
//! object per pipeline: `fleet list` prints it, `fleet plan` re-renders its manifest with a
//! candidate set and compares file hashes, `fleet rollout` deploys that render, `fleet drift`
//! compares its stack hashes with the deployed stacks. Nothing has to be cloned.
//!
//! Next to the record, a deploy writes an empty **listing key**, `pipelines/<name>/set/<set
//! hex>.<record ETag>` ([`listing_key`]): the set's side of the record's input digest
//! ([`super::digest`]) and the ETag S3 gave the record, so `fleet plan` can tell from the
//! bucket's listing alone which pipelines a candidate cannot change ([`crate::fleet::index`]).
//! It is written after the record and the older keys are then removed; a key that does not
//! name the record's current ETag is ignored, so one left behind never describes a newer
//! record. A record with notices (which an unchanged pipeline still reports) or without a set
//! digest gets no key.
//!
//! The bundle itself remembers its input too: `input/manifest.yml` and `input/owner.json` (team,
//! repository, commit) are uploaded with it, before its `plan.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Notice;
use crate::plan::Plan;

/// Schema identifier of `deployed.json`.
pub const DEPLOYED_SCHEMA: &str = "pipeforge/deployed/v1";

/// File name of the record under `pipelines/<name>/`.
pub const DEPLOYED_FILE: &str = "deployed.json";

/// The largest record pipeforge reads from a source bucket: a deploy record, an owner record or
/// the deploy lock. A deploy record holds the manifest (at most [`crate::MAX_MANIFEST_BYTES`],
/// JSON-escaped: at most twice that, as YAML allows no control character but tab) and a few
/// kilobytes besides; the others are smaller. A larger object is reported, not read.
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;

/// The folder of the listing keys under `pipelines/<name>/`.
pub const SET_DIR: &str = "set/";

/// The name of `record`'s listing key under `pipelines/<name>/` when S3 stored it with `etag`:
/// `set/<set hex>.<etag>`. `None` when the listing must not decide the pipeline: no set digest
/// (older record, or placed elsewhere than the policy places it first), notices to report, or
/// an ETag that is not a plain hex value (with a part count).
pub fn listing_key(record: &DeployedRecord, etag: &str) -> Option<String> {
    let set = record.inputs.as_ref()?.set.as_deref()?;
    let hex = set.strip_prefix("sha256:")?;
    let etag = etag.trim_matches('"');
    if !record.notices.is_empty() || !is_hex(hex) || hex.len() != 64 || !is_etag(etag) {
        return None;
    }
    Some(format!("{SET_DIR}{hex}.{etag}"))
}

/// A listing key as read back: the set digest it names and the record ETag it was written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingKey {
    /// `sha256:<hex>` of the set's side.
    pub set: String,
    /// The ETag of the record it describes (no quotes).
    pub etag: String,
}

impl ListingKey {
    /// Parses the part of a key after `pipelines/<name>/`; `None` for anything else.
    pub fn parse(name: &str) -> Option<ListingKey> {
        let (hex, etag) = name.strip_prefix(SET_DIR)?.split_once('.')?;
        (is_hex(hex) && hex.len() == 64 && is_etag(etag)).then(|| ListingKey {
            set: format!("sha256:{hex}"),
            etag: etag.to_owned(),
        })
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An ETag as S3 gives it without quotes: hex, and `-<parts>` after a multipart upload.
fn is_etag(s: &str) -> bool {
    let (hex, parts) = s.split_once('-').unwrap_or((s, "1"));
    is_hex(hex) && hex.len() <= 64 && !parts.is_empty() && parts.bytes().all(|b| b.is_ascii_digit())
}

/// Where a bundle keeps its input: the manifest and who deployed it.
pub const INPUT_MANIFEST: &str = "input/manifest.yml";

/// See [`INPUT_MANIFEST`].
pub const INPUT_OWNER: &str = "input/owner.json";

/// The manifest as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInput {
    /// Its path in the repository (`pipeline.yml`).
    pub path: String,
    /// Its text.
    pub text: String,
}

/// The template set a pipeline was rendered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSetRef {
    /// The set's label: `pipeforge`, or `pipeforge+<override directory name>`.
    pub label: String,
    /// `sha256:<hex>` of the set's templates.
    pub hash: String,
    /// The fleet rollout candidate the pipeline was deployed with, when a rollout deployed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
}

/// One stack as deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStack {
    /// Stack name.
    pub name: String,
    /// `target`, `region` or `pipeline`.
    pub kind: String,
    /// Account.
    pub account: String,
    /// Region.
    pub region: String,
    /// The environment, for target stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The content hash its template carries.
    pub content_hash: String,
}

/// A gate and the tool versions it pins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSummary {
    /// Gate name.
    pub name: String,
    /// Mandatory by org policy.
    pub mandatory: bool,
    /// `tool==version` (or `tool@version`), as its install commands pin them.
    pub tools: Vec<String>,
}

/// An environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSummary {
    /// Name.
    pub name: String,
    /// Account id.
    pub account: String,
    /// The account's name in the org policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// Region.
    pub region: String,
    /// Production (by name or account).
    pub production: bool,
    /// A manual approval precedes its deploys.
    pub approval: bool,
}

/// `pipelines/<name>/deployed.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployedRecord {
    /// [`DEPLOYED_SCHEMA`].
    pub schema: String,
    /// The pipeline (manifest `name`).
    pub pipeline: String,
    /// The team (manifest `team`).
    pub team: String,
    /// The repository deployed from (`owner/name`).
    pub repository: String,
    /// The host of the repository (`github.com`), when known: with the repository, the webhook
    /// queue's message group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The commit deployed.
    pub commit: String,
    /// When (RFC 3339, UTC).
    pub deployed_at: String,
    /// Who (the deploy lock's holder).
    pub by: String,
    /// The bundle's content hash.
    pub content_hash: String,
    /// The bundle's key prefix.
    pub bundle: String,
    /// The bundle's rendered files are also in one archive beside it
    /// ([`super::archive::key`]): a reader of several of them makes one request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archive: bool,
    /// The template set.
    pub template_set: TemplateSetRef,
    /// `sha256:<hex>` of the org policy as loaded (its JSON form): a changed policy changes it.
    pub org_hash: String,
    /// The pipeforge version that rendered and deployed it.
    pub pipeforge: String,
    /// The manifest.
    pub manifest: ManifestInput,
    /// `sha256:<hex>` of every rendered file of the bundle, by path.
    pub files: BTreeMap<String, String>,
    /// Every stack, in deploy order.
    pub stacks: Vec<RecordStack>,
    /// Gates, in org order.
    pub gates: Vec<GateSummary>,
    /// Environments, in promotion order.
    pub environments: Vec<EnvironmentSummary>,
    /// Org rules broken without failing (warnings, waivers) at the deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<Notice>,
    /// The fleet rollout that deployed it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The digest of every input of the render ([`super::digest`]): `fleet plan` reports the
    /// pipeline unchanged without rendering when a candidate's is the same. Absent in records
    /// written before it existed: those are rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<super::digest::RenderInputs>,
}

/// What [`DeployedRecord::new`] needs besides the rendered pipeline.
#[derive(Clone, Debug)]
pub struct RecordContext<'a> {
    /// The repository deployed from.
    pub repository: &'a str,
    /// Its host, when known.
    pub host: Option<&'a str>,
    /// The commit.
    pub commit: &'a str,
    /// When (RFC 3339).
    pub at: &'a str,
    /// Who.
    pub by: &'a str,
    /// The manifest as deployed.
    pub manifest: ManifestInput,
    /// The template set.
    pub template_set: TemplateSetRef,
    /// The org policy's hash ([`org_hash`]).
    pub org_hash: String,
    /// The rollout, if any.
    pub rollout: Option<&'a str>,
    /// The bundle's archive was written (or found) beside it.
    pub archive: bool,
}

impl DeployedRecord {
    /// The record of a deploy of `prepared`.
    pub fn new(prepared: &super::Prepared, cx: RecordContext<'_>) -> DeployedRecord {
        let plan = prepared.plan();
        DeployedRecord {
            schema: DEPLOYED_SCHEMA.to_owned(),
            pipeline: plan.pipeline.name.clone(),
            team: plan.pipeline.team.clone(),
            repository: cx.repository.to_owned(),
            host: cx.host.map(str::to_owned),
            commit: cx.commit.to_owned(),
            deployed_at: cx.at.to_owned(),
            by: cx.by.to_owned(),
            content_hash: prepared.content_hash.clone(),
            bundle: format!(
                "{}{}/",
                plan.source.bundle_prefix,
                prepared
                    .content_hash
                    .strip_prefix("sha256:")
                    .unwrap_or(&prepared.content_hash)
            ),
            archive: cx.archive,
            template_set: cx.template_set,
            org_hash: cx.org_hash,
            pipeforge: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: cx.manifest,
            files: prepared
                .bundle
                .outputs
                .iter()
                .map(|(p, b)| (p.to_owned(), crate::outputs::sha256(b)))
                .collect(),
            stacks: prepared
                .templates
                .iter()
                .map(|t| RecordStack {
                    name: t.stack.name.clone(),
                    kind: super::templates::kind_name(t.stack.kind).to_owned(),
                    account: t.stack.account.clone(),
                    region: t.stack.region.clone(),
                    environment: t.stack.environment.clone(),
                    content_hash: t.content_hash.clone(),
                })
                .collect(),
            gates: gate_summaries(plan),
            environments: environment_summaries(plan),
            notices: plan.notices.clone(),
            rollout: cx.rollout.map(str::to_owned),
            inputs: prepared.inputs.clone(),
        }
    }

    /// The record's JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a stored record; only [`DEPLOYED_SCHEMA`] is understood. The schema is read
    /// first (every other field skipped), then the record straight into its type: no JSON tree
    /// is built (a fleet plan parses thousands).
    pub fn parse(bytes: &[u8], url: &str) -> Result<DeployedRecord> {
        /// The schema field alone.
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            schema: serde_json::Value,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| {
            Error::other(
                format!("the deploy record `{url}` is not valid JSON ({e})"),
                "the next deploy of the pipeline writes it again",
            )
        })?;
        let schema = head.schema.as_str().unwrap_or_default();
        if schema != DEPLOYED_SCHEMA {
            return Err(Error::other(
                format!(
                    "the deploy record `{url}` has schema `{schema}`; this pipeforge reads `{DEPLOYED_SCHEMA}`"
                ),
                "use the pipeforge version that wrote it (or a newer one)",
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| {
            Error::other(
                format!("the deploy record `{url}` is incomplete ({e})"),
                "the next deploy of the pipeline writes it again",
            )
        })
    }

    /// The active waivers it was deployed under.
    pub fn waivers(&self) -> impl Iterator<Item = &Notice> {
        self.notices
            .iter()
            .filter(|n| n.kind == crate::model::NoticeKind::Waived)
    }
}

/// `sha256:<hex>` of an org policy as loaded (its JSON form, so formatting and comments do not
/// count).
pub fn org_hash(org: &crate::org::OrgPolicy) -> String {
    crate::outputs::sha256(&serde_json::to_vec(&org.org).unwrap_or_default())
}

/// The bundle's input files: the manifest and who deployed it.
pub fn input_files(
    manifest: &ManifestInput,
    team: &str,
    repository: &str,
    commit: &str,
) -> Vec<(String, Vec<u8>)> {
    let owner = serde_json::json!({
        "team": team,
        "repository": repository,
        "commit": commit,
        "manifest": manifest.path,
    });
    let mut owner = serde_json::to_vec_pretty(&owner).unwrap_or_default();
    owner.push(b'\n');
    vec![
        (
            INPUT_MANIFEST.to_owned(),
            manifest.text.clone().into_bytes(),
        ),
        (INPUT_OWNER.to_owned(), owner),
    ]
}

fn gate_summaries(plan: &Plan) -> Vec<GateSummary> {
    plan.gates
        .iter()
        .map(|g| {
            let commands = g
                .phases
                .iter()
                .flat_map(|p| p.steps.iter())
                .filter(|s| s.enforced)
                .flat_map(|s| s.commands.iter().map(String::as_str));
            GateSummary {
                name: g.name.clone(),
                mandatory: g.mandatory.value,
                tools: tools_of(commands),
            }
        })
        .collect()
}

fn environment_summaries(plan: &Plan) -> Vec<EnvironmentSummary> {
    plan.environments
        .iter()
        .map(|e| EnvironmentSummary {
            name: e.name.clone(),
            account: e.account.clone(),
            account_name: e.account_name.clone(),
            region: e.region.value.clone(),
            production: e.production,
            approval: e.approval.value,
        })
        .collect()
}

/// The tool versions that install commands pin, sorted and without duplicates: `name==1.2.3`
/// (pip), `name@1.2.3` (npm, `go install …/name@v1.2.3`), `name --version 1.2.3` (dotnet
/// tool), `…:artifact:1.2.3` (Maven `-Dartifact=`), and GitHub release downloads
/// (`…/<repo>/releases/download/v1.2.3/…`).
pub fn tools_of<'a>(commands: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for c in commands {
        let words: Vec<&str> = c.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let w = w.trim_matches(|c| c == '"' || c == '\'');
            if let Some((name, version)) = w.split_once("==") {
                if is_name(name) && is_version(version) {
                    out.insert(format!("{name}=={version}"));
                }
            } else if let Some(rest) = w.strip_prefix("-Dartifact=") {
                let parts: Vec<&str> = rest.split(':').collect();
                if parts.len() >= 3 && is_version(parts[2]) {
                    out.insert(format!("{}@{}", parts[1], parts[2]));
                }
            } else if w.contains("/releases/download/") {
                let parts: Vec<&str> = w.split('/').collect();
                if let Some(at) = parts.iter().position(|p| *p == "releases")
                    && at >= 1
                    && let Some(tag) = parts.get(at + 2)
                {
                    let version = tag.trim_start_matches('v');
                    if is_version(version) {
                        out.insert(format!("{}@{version}", parts[at - 1]));
                    }
                }
            } else if let Some((path, version)) = w.rsplit_once('@') {
                let version = version.trim_start_matches('v');
                let name = path.rsplit('/').next().unwrap_or(path);
                if !path.contains("://") && is_name(name) && is_version(version) {
                    out.insert(format!("{name}@{version}"));
                }
            } else if w == "--version"
                && let (Some(v), Some(name)) = (words.get(i + 1), words.get(i.wrapping_sub(1)))
                && is_version(v)
                && is_name(name)
            {
                out.insert(format!("{name}@{v}"));
            }
        }
    }
    out.into_iter().collect()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_version(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

#[cfg(test)]
mod tests {
    use super::tools_of;

    #[test]
    fn tool_versions_come_from_the_install_commands() {
        let commands = [
            "python -m pip install build==1.6.1 twine==7.0.0",
            "npm install --global c8@12.0.0",
            "go install github.com/securego/gosec/v2/cmd/gosec@v2.30.0",
            "dotnet tool install --global dotnet-reportgenerator-globaltool --version 5.6.0",
            "mvn -B -ntp org.apache.maven.plugins:maven-dependency-plugin:3.11.0:copy -Dartifact=com.h3xstream.findsecbugs:findsecbugs-plugin:1.14.0 -DoutputDirectory=/tmp/pf-sast",
            "curl -fsSL --retry 3 -o /tmp/x.tar.gz https://github.com/gitleaks/gitleaks/releases/download/v8.30.1/gitleaks_8.30.1_linux_x64.tar.gz",
            "ruff check --no-fix .",
            "git config user.email ci@example.com",
            "pip install 'ruff==0.17.6'",
        ];
        assert_eq!(
            tools_of(commands.into_iter()),
            [
                "build==1.6.1",
                "c8@12.0.0",
                "dotnet-reportgenerator-globaltool@5.6.0",
                "findsecbugs-plugin@1.14.0",
                "gitleaks@8.30.1",
                "gosec@2.30.0",
                "ruff==0.17.6",
                "twine==7.0.0",
            ]
        );
    }
}
