//! Semantic versions from git history: `pipeforge version next` and `pipeforge version tag`.
//!
//! Every pipeline's build gate runs `pipeforge version next` before building, exports the
//! result as `VERSION`, and runs `pipeforge version tag --push` once the artifact is packaged
//! and published. This module is the library side of both commands. It is not part of the
//! manifest → outputs chain: it reads a git checkout inside CodeBuild, never a manifest.
//!
//! # How the next version is chosen
//!
//! 1. **Base.** The base is the highest `vMAJOR.MINOR.PATCH` tag reachable from HEAD (tags on
//!    branches that HEAD does not contain are not seen). Ordering is semver's, through the
//!    `semver` crate. Tags that look like versions but are not `v` + a plain semantic version
//!    (`v1.2`, `vfoo`, `release-1.0`, `v01.2.3`, `v1.2.3+build`) are ignored, and a warning names
//!    them. Pre-release tags (`v1.3.0-rc.2`) are valid but never a base: releases are counted
//!    from releases.
//! 2. **Already released.** When HEAD itself carries a release tag, that is the version, with no
//!    bump, on any branch (rebuilding a released commit gives the same version).
//! 3. **No tag.** Without a base, the version is the manifest's `versioning.initial` (default
//!    `0.1.0`), unbumped: it is the first release.
//! 4. **Bump.** Otherwise every commit in `git log BASE..HEAD` counts, following all parents, so
//!    the commits of merged branches count as well as merge commits. Each commit is read as a
//!    [Conventional Commit](https://www.conventionalcommits.org/en/v1.0.0/) and the largest bump
//!    wins ([`bump_for`]):
//!
//!    | commit                                                    | from ≥ 1.0.0 | from 0.y.z |
//!    |-----------------------------------------------------------|--------------|------------|
//!    | breaking: `type!:` or a `BREAKING CHANGE:` footer         | major        | minor      |
//!    | `feat:`                                                   | minor        | patch      |
//!    | `fix:`, any other type, or not a Conventional Commit      | patch        | patch      |
//!
//!    Every commit bumps at least the patch number, so each new commit of a release branch gets
//!    a new version. Before 1.0.0 the rules shift down one place, as Cargo and npm read `0.y.z` (a
//!    caret requirement `^0.2.3` accepts `0.2.9` but not `0.3.0`): the minor number is the one
//!    that signals incompatibility, and features are compatible additions, so they go into the
//!    patch number like fixes. A project leaves 0.x on purpose, by tagging `v1.0.0` by hand (or
//!    by setting `versioning.initial: 1.0.0` before the first tag); a breaking change never
//!    does it by itself.
//! 5. **Pre-releases.** Builds of branches other than the release branches (org policy
//!    `versioning.release_branches`, default `main` and `master`; `*` matches any characters,
//!    as in `release/*`) get `X.Y.Z-<id>.<n>`, where `X.Y.Z` is the version the branch would
//!    release, `<id>` the pre-release identifier (`versioning.prerelease`, default `rc`) and
//!    `<n>` the number of commits since the base tag (since the first commit when there is no
//!    tag), so successive builds of one branch order correctly and `X.Y.Z-rc.n < X.Y.Z`. With
//!    `build_metadata`, `+<7-hex-digit commit>` is appended; it is off by default because
//!    Docker tags reject `+`, PyPI rejects local versions and npm ignores build metadata, so
//!    an artifact name carrying it may be refused or collide anyway. Pre-release versions are
//!    never tagged.
//! 6. **Branch.** The branch is `Settings::branch` (`--branch`, else `PF_BRANCH`), else the
//!    branch git has checked out. A detached HEAD with no branch given counts as a release
//!    build: a pipeline's build checks out the commit it builds, often detached, from the
//!    release branch it watches; a pipeline that builds another branch must say so through
//!    `PF_BRANCH`.
//! 7. **Shallow clones** are refused, since the tags and commits that decide the version may be
//!    missing (a shallow clone would silently restart at the initial version), unless
//!    [`Settings::fetch`] names a remote: then the missing history and every tag are fetched
//!    from it first (`git fetch --unshallow --tags REMOTE`). Fetching tags also helps a full
//!    clone made without them, and lets a run see the tag a previous run just pushed.
//!
//! # Tagging
//!
//! [`tag`] computes the same version and creates the annotated tag `vX.Y.Z` on HEAD. It is
//! idempotent: when HEAD already has that tag, nothing is done. A tag of that name on another
//! commit is an error and is never moved. With a push remote, only that tag is pushed
//! (`git push REMOTE refs/tags/vX.Y.Z`, never forced); when the remote already has the tag on
//! another commit (two runs raced), the push is refused by the remote, the local tag made by
//! this run is deleted again, and the error says so. When the remote has it on the same commit,
//! the push counts as done. Pre-release builds are not tagged. Two guards keep the tag true to
//! what was published: [`TagRequest::expect`] refuses a tag that differs from the version the
//! build used, and [`TagRequest::build_failing`] refuses to tag a failing CodeBuild build
//! (CodeBuild runs `post_build` even after a failed `build` phase).

use std::path::Path;

use semver::{BuildMetadata, Prerelease, Version};
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::git::{Git, git_message};

/// The version used while no release tag is reachable from HEAD, unless the manifest says.
pub const DEFAULT_INITIAL: &str = "0.1.0";
/// The pre-release identifier used unless the manifest or org policy says.
pub const DEFAULT_PRERELEASE: &str = "rc";
/// The release branches used unless the org policy says.
pub const DEFAULT_RELEASE_BRANCHES: [&str; 2] = ["main", "master"];
/// The identity that signs tags when neither the caller nor git's configuration gives one.
pub const DEFAULT_USER_NAME: &str = "pipeforge";
/// See [`DEFAULT_USER_NAME`].
pub const DEFAULT_USER_EMAIL: &str = "pipeforge@localhost";
/// How many ignored tag names a warning lists before it says "and N more".
const LISTED_TAGS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// What decides the version besides the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The version used while no release tag is reachable from HEAD.
    pub initial: Version,
    /// The pre-release identifier for builds of other branches (`rc` in `1.4.0-rc.3`).
    pub prerelease: String,
    /// Branches (or `*` patterns) whose builds are releases.
    pub release_branches: Vec<String>,
    /// The branch being built, when the caller knows it; else git is asked.
    pub branch: Option<String>,
    /// Append `+<short commit>` to pre-release versions.
    pub build_metadata: bool,
    /// Fetch tags (and the rest of a shallow history) from this remote before deciding.
    pub fetch: Option<String>,
}

impl Settings {
    /// Settings with the given initial version and pre-release identifier, checked, and the
    /// defaults for everything else.
    pub fn new(initial: &str, prerelease: &str) -> Result<Settings> {
        Ok(Settings {
            initial: parse_initial(initial)?,
            prerelease: check_prerelease_id(prerelease)?,
            release_branches: DEFAULT_RELEASE_BRANCHES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            branch: None,
            build_metadata: false,
            fetch: None,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            initial: Version::new(0, 1, 0),
            prerelease: DEFAULT_PRERELEASE.to_owned(),
            release_branches: DEFAULT_RELEASE_BRANCHES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            branch: None,
            build_metadata: false,
            fetch: None,
        }
    }
}

/// Parses an initial version: a plain `MAJOR.MINOR.PATCH`, no pre-release or build metadata.
pub fn parse_initial(text: &str) -> Result<Version> {
    match Version::parse(text.trim()) {
        Ok(v) if v.pre.is_empty() && v.build.is_empty() => Ok(v),
        _ => Err(Error::other(
            format!("initial version `{text}` is not a plain `MAJOR.MINOR.PATCH`"),
            "set `versioning.initial` in pipeline.yml (or `--initial`, `PF_VERSION_INITIAL`) to a version such as `0.1.0`",
        )),
    }
}

/// Checks a pre-release identifier: a letter, then up to 19 letters, digits or `-` (the
/// manifest's and org policy's rule).
pub fn check_prerelease_id(text: &str) -> Result<String> {
    let ok = text.len() <= 20
        && text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(Error::other(
            format!("pre-release identifier `{text}` is not a short word"),
            "set `versioning.prerelease` (or `--prerelease`, `PF_VERSION_PRERELEASE`) to a letter followed by up to 19 letters, digits or `-`, such as `rc` or `beta`",
        ))
    }
}

/// True when builds of `branch` are releases: a detached HEAD (`None`) or a branch that one of
/// `patterns` matches (`*` matches any run of characters, `/` included).
pub fn is_release_branch(branch: Option<&str>, patterns: &[String]) -> bool {
    match branch {
        None => true,
        Some(b) => patterns.iter().any(|p| crate::org::glob_match(p, b)),
    }
}

// ---------------------------------------------------------------------------------------------
// Conventional Commits
// ---------------------------------------------------------------------------------------------

/// How a commit says it breaks compatibility.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Breaking {
    /// `type!:` or `type(scope)!:` in the header.
    Bang,
    /// A `BREAKING CHANGE:` or `BREAKING-CHANGE:` line.
    Footer,
}

/// A commit message read as a Conventional Commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCommit {
    /// The type, lower-cased (`feat`, `fix`, …); `None` when the header is not
    /// `type(scope)!: description`.
    pub kind: Option<String>,
    /// The scope, when given.
    pub scope: Option<String>,
    /// Whether, and how, the commit is marked breaking.
    pub breaking: Option<Breaking>,
    /// The first line of the message.
    pub subject: String,
}

/// Reads a commit message as a Conventional Commit.
///
/// The header is `type(scope)!: description`: the type is a letter followed by letters,
/// digits, `-` or `_` and is compared case-insensitively; the scope and `!` are optional; the
/// colon must be followed by a space and a description. A line starting with the upper-case
/// token `BREAKING CHANGE:` or `BREAKING-CHANGE:` marks the commit breaking wherever it is, in
/// a footer as the specification says, or as the only line of a commit that is not
/// conventional otherwise: a breaking change announced anywhere is never counted as a patch.
pub fn parse_commit(message: &str) -> ParsedCommit {
    let subject = message.lines().next().unwrap_or("").trim_end().to_owned();
    let header = parse_header(&subject);
    let footer = message.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("BREAKING CHANGE:") || l.starts_with("BREAKING-CHANGE:")
    });
    let (kind, scope, bang) = match header {
        Some((k, s, b)) => (Some(k), s, b),
        None => (None, None, false),
    };
    let breaking = if bang {
        Some(Breaking::Bang)
    } else if footer {
        Some(Breaking::Footer)
    } else {
        None
    };
    ParsedCommit {
        kind,
        scope,
        breaking,
        subject,
    }
}

/// `type(scope)!: description` → (type lower-cased, scope, bang).
fn parse_header(header: &str) -> Option<(String, Option<String>, bool)> {
    let end = header
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(header.len());
    let kind = &header[..end];
    if !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut rest = &header[end..];
    let mut scope = None;
    if let Some(after) = rest.strip_prefix('(') {
        let close = after.find(')')?;
        let s = &after[..close];
        if s.contains('(') {
            return None;
        }
        scope = Some(s.to_owned());
        rest = &after[close + 1..];
    }
    let bang = rest.starts_with('!');
    if bang {
        rest = &rest[1..];
    }
    let description = rest.strip_prefix(": ")?;
    if description.trim().is_empty() {
        return None;
    }
    Some((kind.to_ascii_lowercase(), scope, bang))
}

/// What a commit changes, by its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// `fix`, any other type, or a commit that is not conventional.
    Fix,
    /// `feat`.
    Feature,
    /// Marked breaking (`!` or a `BREAKING CHANGE:` footer), whatever its type.
    Breaking,
}

impl ParsedCommit {
    /// What the commit changes.
    pub fn change(&self) -> Change {
        if self.breaking.is_some() {
            Change::Breaking
        } else if self.kind.as_deref() == Some("feat") {
            Change::Feature
        } else {
            Change::Fix
        }
    }
}

/// Which part of the version goes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bump {
    /// Nothing: the version is a tag's or the initial one.
    None,
    /// `x.y.Z`.
    Patch,
    /// `x.Y.0`.
    Minor,
    /// `X.0.0`.
    Major,
}

impl std::fmt::Display for Bump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bump::None => "none",
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        })
    }
}

/// The bump a change calls for, from `base`. From 1.0.0: breaking → major, feature → minor,
/// anything else → patch. Before 1.0.0 (`0.y.z`), one place lower: breaking → minor, feature
/// and anything else → patch (see the module documentation for why).
pub fn bump_for(change: Change, base: &Version) -> Bump {
    match (base.major, change) {
        (0, Change::Breaking) => Bump::Minor,
        (0, _) => Bump::Patch,
        (_, Change::Breaking) => Bump::Major,
        (_, Change::Feature) => Bump::Minor,
        (_, Change::Fix) => Bump::Patch,
    }
}

/// `base` bumped; the pre-release and build metadata of `base` are dropped.
pub fn apply(base: &Version, bump: Bump) -> Result<Version> {
    let overflow = || {
        Error::other(
            format!("version `{base}` cannot be bumped: a number is too large"),
            "tag HEAD by hand with a smaller version",
        )
    };
    let inc = |n: u64| n.checked_add(1).ok_or_else(overflow);
    let (major, minor, patch) = (base.major, base.minor, base.patch);
    Ok(match bump {
        Bump::None => Version::new(major, minor, patch),
        Bump::Patch => Version::new(major, minor, inc(patch)?),
        Bump::Minor => Version::new(major, inc(minor)?, 0),
        Bump::Major => Version::new(inc(major)?, 0, 0),
    })
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// A tag and the commit it points at (peeled, for annotated tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRef {
    /// The name without `refs/tags/`.
    pub name: String,
    /// The full commit id.
    pub commit: String,
}

/// What a tag name means for versioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagKind {
    /// `vMAJOR.MINOR.PATCH`: a release, and a possible base.
    Release(Version),
    /// `vMAJOR.MINOR.PATCH-pre`: valid, but never a base.
    PreRelease(Version),
    /// Looks like an attempt at a version (starts with `v`, `V` or a digit, or contains
    /// `digit.digit`) but is not one: ignored with a warning.
    Malformed,
    /// Any other tag (`latest`, `deploy/prod`): ignored silently.
    Unrelated,
}

/// Classifies a tag name.
pub fn classify_tag(name: &str) -> TagKind {
    if let Some(rest) = name.strip_prefix('v')
        && let Ok(v) = Version::parse(rest)
        && v.build.is_empty()
    {
        return if v.pre.is_empty() {
            TagKind::Release(v)
        } else {
            TagKind::PreRelease(v)
        };
    }
    let bytes = name.as_bytes();
    let versionish = name.starts_with(|c: char| c == 'v' || c == 'V' || c.is_ascii_digit())
        || bytes
            .windows(3)
            .any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2].is_ascii_digit());
    if versionish {
        TagKind::Malformed
    } else {
        TagKind::Unrelated
    }
}

/// The release tags that decide the version, from the tags reachable from HEAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The highest release tag on HEAD itself, if any.
    pub at_head: Option<(Version, TagRef)>,
    /// The highest release tag reachable from HEAD, if any.
    pub latest: Option<(Version, TagRef)>,
    /// Reachable tags that look like versions but are not (sorted, deduplicated).
    pub malformed: Vec<String>,
}

/// Picks the base among `tags` (all reachable from `head`, a full commit id).
pub fn choose_base(tags: &[TagRef], head: &str) -> Base {
    let mut at_head: Option<(Version, TagRef)> = None;
    let mut latest: Option<(Version, TagRef)> = None;
    let mut malformed = Vec::new();
    for t in tags {
        match classify_tag(&t.name) {
            TagKind::Release(v) => {
                if t.commit == head && at_head.as_ref().is_none_or(|(h, _)| v > *h) {
                    at_head = Some((v.clone(), t.clone()));
                }
                if latest.as_ref().is_none_or(|(l, _)| v > *l) {
                    latest = Some((v, t.clone()));
                }
            }
            TagKind::Malformed => malformed.push(t.name.clone()),
            TagKind::PreRelease(_) | TagKind::Unrelated => {}
        }
    }
    malformed.sort();
    malformed.dedup();
    Base {
        at_head,
        latest,
        malformed,
    }
}

/// The warning for ignored tags, or `None` when there are none.
pub fn malformed_warning(names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let listed: Vec<String> = names
        .iter()
        .take(LISTED_TAGS)
        .map(|n| format!("`{n}`"))
        .collect();
    let more = names.len().saturating_sub(LISTED_TAGS);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Some(format!(
        "ignored {} tag{} reachable from HEAD that {} not `vMAJOR.MINOR.PATCH`: {}{tail}\n  help: release tags are `v` followed by a semantic version without leading zeros, such as `v1.2.3`",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.len() == 1 { "is" } else { "are" },
        listed.join(", "),
    ))
}

// ---------------------------------------------------------------------------------------------
// The decision
// ---------------------------------------------------------------------------------------------

/// A commit as read from `git log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCommit {
    /// Full commit id.
    pub sha: String,
    /// The whole message.
    pub message: String,
}

/// A commit counted towards the version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountedCommit {
    /// Full commit id.
    pub sha: String,
    /// The first line of the message.
    pub subject: String,
    /// The bump this commit calls for on its own.
    pub bump: Bump,
    /// Whether, and how, it is marked breaking.
    pub breaking: Option<Breaking>,
}

/// What the repository says, as read by [`next`]: the input of [`decide`].
#[derive(Clone, Debug)]
pub struct History {
    /// HEAD's full commit id.
    pub head: String,
    /// The branch being built; `None` for a detached HEAD with no branch given.
    pub branch: Option<String>,
    /// The release tags that matter.
    pub base: Base,
    /// The commits in `BASE..HEAD`, newest first (empty without a base, or when HEAD is
    /// tagged).
    pub commits: Vec<RawCommit>,
    /// How many commits since the base (since the first commit when there is no base).
    pub count: usize,
}

/// The version a build gets, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextVersion {
    /// The version.
    #[serde(serialize_with = "display")]
    pub version: Version,
    /// The base release it is computed from, if any.
    #[serde(serialize_with = "display_opt")]
    pub previous: Option<Version>,
    /// The base tag's name, if any.
    pub base_tag: Option<String>,
    /// The tag a release gets (`vX.Y.Z`); `None` for a pre-release.
    pub tag: Option<String>,
    /// Which part went up.
    pub bump: Bump,
    /// Why, in one sentence.
    pub reason: String,
    /// The branch being built (`None`: detached HEAD, counted as a release build).
    pub branch: Option<String>,
    /// True for a pre-release version (a build of another branch than the release ones).
    pub prerelease: bool,
    /// True when HEAD already carries the release tag.
    pub tagged: bool,
    /// HEAD's full commit id.
    pub head: String,
    /// How many commits since the base (since the first commit when there is no base).
    pub commit_count: usize,
    /// The commits since the base tag, newest first; empty when there is no base tag (the
    /// initial version is not bumped) or when HEAD is tagged.
    pub commits: Vec<CountedCommit>,
    /// Things the caller should show the user (ignored tags).
    pub warnings: Vec<String>,
}

fn display<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_opt<S: Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Decides the version from what the repository says. Pure: [`next`] does the reading.
pub fn decide(settings: &Settings, history: &History) -> Result<NextVersion> {
    let warnings: Vec<String> = malformed_warning(&history.base.malformed)
        .into_iter()
        .collect();
    if let Some((v, t)) = &history.base.at_head {
        return Ok(already_tagged(v, t, history, warnings));
    }

    let (release, previous, base_tag, bump, mut reason, commits) = match &history.base.latest {
        None => (
            settings.initial.clone(),
            None,
            None,
            Bump::None,
            format!(
                "no `vMAJOR.MINOR.PATCH` tag is reachable from HEAD, so this is the initial version `{}`",
                settings.initial
            ),
            Vec::new(),
        ),
        Some((base, t)) => {
            let (bump, reason, counted) = since_tag(base, t, history);
            (
                apply(base, bump)?,
                Some(base.clone()),
                Some(t.name.clone()),
                bump,
                reason,
                counted,
            )
        }
    };

    let release_build = is_release_branch(history.branch.as_deref(), &settings.release_branches);
    let version = if release_build {
        release
    } else {
        prerelease_of(
            settings,
            history,
            &release,
            base_tag.as_deref(),
            &mut reason,
        )?
    };
    Ok(NextVersion {
        tag: release_build.then(|| format!("v{version}")),
        version,
        previous,
        base_tag,
        bump,
        reason,
        branch: history.branch.clone(),
        prerelease: !release_build,
        tagged: false,
        head: history.head.clone(),
        commit_count: history.count,
        commits,
        warnings,
    })
}

/// HEAD carries the release tag `t` of version `v` already: nothing to bump.
fn already_tagged(
    v: &Version,
    t: &TagRef,
    history: &History,
    warnings: Vec<String>,
) -> NextVersion {
    NextVersion {
        version: v.clone(),
        previous: Some(v.clone()),
        base_tag: Some(t.name.clone()),
        tag: Some(t.name.clone()),
        bump: Bump::None,
        reason: format!("HEAD is already tagged `{}`", t.name),
        branch: history.branch.clone(),
        prerelease: false,
        tagged: true,
        head: history.head.clone(),
        commit_count: 0,
        commits: Vec::new(),
        warnings,
    }
}

/// The bump the commits since tag `t` (of version `base`) call for, why, and each commit
/// counted.
fn since_tag(base: &Version, t: &TagRef, history: &History) -> (Bump, String, Vec<CountedCommit>) {
    let mut counted = Vec::with_capacity(history.commits.len());
    // The commit that decides the bump: the first (newest) with the largest change.
    let mut decisive: Option<(Change, ParsedCommit, &str)> = None;
    for c in &history.commits {
        let parsed = parse_commit(&c.message);
        let change = parsed.change();
        counted.push(CountedCommit {
            sha: c.sha.clone(),
            subject: parsed.subject.clone(),
            bump: bump_for(change, base),
            breaking: parsed.breaking,
        });
        if decisive.as_ref().is_none_or(|(d, _, _)| change > *d) {
            decisive = Some((change, parsed, &c.sha));
        }
    }
    let bump = counted.iter().map(|c| c.bump).max().unwrap_or(Bump::None);
    let since = format!(
        "{} since `{}`",
        plural(history.count.max(counted.len()), "commit"),
        t.name
    );
    let reason = match (bump, &decisive) {
        (Bump::None, _) | (_, None) => {
            format!("no commits since `{}`, so its version is kept", t.name)
        }
        (_, Some((Change::Fix, _, _))) => {
            format!("patch bump ({since}): no feature and no breaking change")
        }
        (_, Some((change, parsed, sha))) => {
            let why = match (change, parsed.breaking) {
                (Change::Breaking, Some(Breaking::Bang)) => "is a breaking change (`!`)".to_owned(),
                (Change::Breaking, _) => {
                    "is a breaking change (`BREAKING CHANGE:` footer)".to_owned()
                }
                _ => "is a feature (`feat`)".to_owned(),
            };
            let pre_major = if base.major == 0 {
                format!(", which bumps the {bump} version before 1.0.0")
            } else {
                String::new()
            };
            format!(
                "{bump} bump ({since}): {} \"{}\" {why}{pre_major}",
                short(sha),
                parsed.subject
            )
        }
    };
    (bump, reason, counted)
}

/// The pre-release of `release` a build off the release branches gets (`<release>-rc.N`, with
/// the commit as build metadata when asked); says so in `reason`.
fn prerelease_of(
    settings: &Settings,
    history: &History,
    release: &Version,
    base_tag: Option<&str>,
    reason: &mut String,
) -> Result<Version> {
    let mut version = release.clone();
    let n = history.count.max(1);
    version.pre = Prerelease::new(&format!("{}.{n}", settings.prerelease)).map_err(|e| {
        Error::other(
            format!(
                "pre-release `{}.{n}` is not valid: {e}",
                settings.prerelease
            ),
            "set `versioning.prerelease` to a short word such as `rc`",
        )
    })?;
    if settings.build_metadata {
        version.build = BuildMetadata::new(short(&history.head)).map_err(|e| {
            Error::other(
                format!(
                    "build metadata `{}` is not valid: {e}",
                    short(&history.head)
                ),
                "this is a pipeforge bug; build without `--build-metadata`",
            )
        })?;
    }
    let branch = history.branch.as_deref().unwrap_or_default();
    reason.push_str(&format!(
        "; branch `{branch}` is not a release branch ({}), so this is pre-release `{}` of `{release}` ({})",
        crate::model::backticks(&settings.release_branches),
        version.pre,
        match base_tag {
            Some(t) => format!("{} since `{t}`", plural(n, "commit")),
            None => plural(n, "commit"),
        }
    ));
    Ok(version)
}

// ---------------------------------------------------------------------------------------------
// Reading the repository
// ---------------------------------------------------------------------------------------------

/// Checks that `remote` cannot be taken for an option.
fn check_remote(remote: &str) -> Result<()> {
    if remote.is_empty() || remote.starts_with('-') {
        return Err(Error::other(
            format!("`{remote}` is not a git remote"),
            "pass `--remote NAME` with a remote of the checkout, such as `origin`",
        ));
    }
    Ok(())
}

fn is_shallow(git: &Git) -> Result<bool> {
    Ok(git.run(&["rev-parse", "--is-shallow-repository"])?.trim() == "true")
}

/// Fetches every tag from `remote`, and the whole history when the clone is shallow.
pub fn fetch_tags(repo: &Path, remote: &str) -> Result<()> {
    check_remote(remote)?;
    let git = Git::new(repo);
    let mut args = vec!["fetch", "--quiet", "--tags", "--no-recurse-submodules"];
    if is_shallow(&git)? {
        args.push("--unshallow");
    }
    args.push(remote);
    git.run(&args)?;
    Ok(())
}

/// Reads HEAD, the branch, the tags reachable from HEAD and the commits since the base.
pub fn read_history(repo: &Path, settings: &Settings) -> Result<History> {
    let git = Git::new(repo);
    if let Some(remote) = &settings.fetch {
        fetch_tags(repo, remote)?;
    }
    if is_shallow(&git)? {
        return Err(Error::other(
            format!(
                "`{}` is a shallow clone, so the tags and commits that decide the version may be missing",
                repo.display()
            ),
            "pass `--fetch` to fetch the history and tags from the remote first, or run `git fetch --unshallow --tags`; in CodePipeline, use the full-clone source output (`CODEBUILD_CLONE_REF`)",
        ));
    }
    let head = git.output(&["rev-parse", "--verify", "-q", "HEAD^{commit}"])?;
    if !head.success {
        return Err(Error::other(
            format!("the repository in `{}` has no commits", repo.display()),
            "commit something first; a version is computed for HEAD",
        ));
    }
    let head = head.stdout.trim().to_owned();

    let branch = match settings.branch.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => Some(b.to_owned()),
        None => {
            let out = git.output(&["symbolic-ref", "--short", "-q", "HEAD"])?;
            let name = out.stdout.trim();
            (out.success && !name.is_empty()).then(|| name.to_owned())
        }
    };

    let merged = format!("--merged={head}");
    let listing = git.run(&[
        "for-each-ref",
        merged.as_str(),
        "--format=%(objectname) %(*objectname) %(refname)",
        "refs/tags/",
    ])?;
    let tags: Vec<TagRef> = listing
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let object = parts.next()?;
            let peeled = parts.next()?;
            let name = parts.next()?.strip_prefix("refs/tags/")?;
            Some(TagRef {
                name: name.to_owned(),
                commit: if peeled.is_empty() { object } else { peeled }.to_owned(),
            })
        })
        .collect();
    let base = choose_base(&tags, &head);

    let (commits, count) = if base.at_head.is_some() {
        (Vec::new(), 0)
    } else if let Some((_, t)) = &base.latest {
        let range = format!("{}..{head}", t.commit);
        let log = git.run_with(
            &[("log.showSignature", "false")],
            &[
                "log",
                "--no-color",
                "--encoding=UTF-8",
                "-z",
                "--format=%H%n%B",
                range.as_str(),
                "--",
            ],
        )?;
        let commits: Vec<RawCommit> = log
            .split('\0')
            .filter_map(|rec| {
                let rec = rec.trim_start_matches('\n');
                let (sha, message) = rec.split_once('\n').unwrap_or((rec, ""));
                (!sha.is_empty()).then(|| RawCommit {
                    sha: sha.to_owned(),
                    message: message.to_owned(),
                })
            })
            .collect();
        let count = commits.len();
        (commits, count)
    } else {
        let n = git.run(&["rev-list", "--count", head.as_str(), "--"])?;
        let count = n.trim().parse::<usize>().map_err(|e| {
            Error::other(
                format!("`git rev-list --count` printed `{}`: {e}", n.trim()),
                "check the git installation",
            )
        })?;
        (Vec::new(), count)
    };
    Ok(History {
        head,
        branch,
        base,
        commits,
        count,
    })
}

/// The next version of the checkout at `repo`.
pub fn next(repo: &Path, settings: &Settings) -> Result<NextVersion> {
    decide(settings, &read_history(repo, settings)?)
}

// ---------------------------------------------------------------------------------------------
// Tagging
// ---------------------------------------------------------------------------------------------

/// What `tag` should do besides computing the version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagRequest {
    /// The version the build used (`$VERSION`); the tag is refused if it differs from the one
    /// computed now, so that the tag always names the published artifact's version.
    pub expect: Option<Version>,
    /// Push the tag to this remote.
    pub push: Option<String>,
    /// Tagger name; else git's `user.name`, else [`DEFAULT_USER_NAME`].
    pub user_name: Option<String>,
    /// Tagger e-mail; else git's `user.email`, else [`DEFAULT_USER_EMAIL`].
    pub user_email: Option<String>,
    /// The pipeline, named in the tag message.
    pub pipeline: Option<String>,
    /// The pipeline execution id, named in the tag message.
    pub execution_id: Option<String>,
    /// The CodeBuild build id, named in the tag message.
    pub build_id: Option<String>,
    /// The build is failing (CodeBuild's `CODEBUILD_BUILD_SUCCEEDING=0`: CodeBuild runs
    /// `post_build` even after a failed `build` phase). A failing build is never tagged.
    pub build_failing: bool,
}

/// What happened to the tag locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TagAction {
    /// The tag was created on HEAD.
    Created,
    /// HEAD already had the tag; nothing was done.
    Existing,
    /// A pre-release build: no tag.
    Skipped,
}

/// What happened on the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    /// The remote did not have the tag and now has it.
    Pushed,
    /// The remote already had the tag on HEAD's commit.
    UpToDate,
}

/// The result of [`tag`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagOutcome {
    /// The version, as [`next`] computes it.
    #[serde(flatten)]
    pub next: NextVersion,
    /// What happened locally.
    pub action: TagAction,
    /// The remote pushed to, if any.
    pub remote: Option<String>,
    /// What happened there, when pushed.
    pub pushed: Option<PushStatus>,
}

/// The tag message: the version, what it was computed from and where it was built.
pub fn tag_message(next: &NextVersion, req: &TagRequest) -> String {
    let mut m = format!("release {}\n\nversion: {}\n", next.version, next.version);
    if let Some(p) = &next.base_tag {
        m.push_str(&format!("previous: {p}\n"));
    }
    m.push_str(&format!("bump: {}\ncommit: {}\n", next.bump, next.head));
    if let Some(p) = &req.pipeline {
        m.push_str(&format!("pipeline: {p}\n"));
    }
    if let Some(e) = &req.execution_id {
        m.push_str(&format!("execution: {e}\n"));
    }
    if let Some(b) = &req.build_id {
        m.push_str(&format!("build: {b}\n"));
    }
    m.push_str(&format!("reason: {}\n", next.reason));
    m
}

/// Computes the version of HEAD and tags HEAD with it (see the module documentation).
pub fn tag(repo: &Path, settings: &Settings, req: &TagRequest) -> Result<TagOutcome> {
    if req.build_failing {
        return Err(Error::other(
            "the build is failing (`CODEBUILD_BUILD_SUCCEEDING=0`), so HEAD is not tagged",
            "fix the command that failed above; the tag is created once every step of the build passes",
        ));
    }
    if let Some(r) = &req.push {
        check_remote(r)?;
    }
    let next = next(repo, settings)?;
    if let Some(expected) = &req.expect
        && *expected != next.version
    {
        return Err(Error::other(
            format!(
                "the version computed now is `{}`, not `{expected}` as given",
                next.version
            ),
            "the repository changed between `pipeforge version next` and `pipeforge version tag` (new tags or commits); run the build again so that the artifact and the tag agree",
        ));
    }
    let Some(name) = next.tag.clone() else {
        return Ok(TagOutcome {
            next,
            action: TagAction::Skipped,
            remote: None,
            pushed: None,
        });
    };
    let git = Git::new(repo);
    let action = if next.tagged {
        TagAction::Existing
    } else {
        let refname = format!("refs/tags/{name}^{{commit}}");
        let existing = git.output(&["rev-parse", "-q", "--verify", refname.as_str()])?;
        let existing = existing.stdout.trim();
        if !existing.is_empty() && existing == next.head {
            TagAction::Existing
        } else if !existing.is_empty() {
            return Err(Error::other(
                format!(
                    "tag `{name}` already exists on commit `{}`, not on HEAD (`{}`)",
                    short(existing),
                    short(&next.head)
                ),
                format!(
                    "tags are never moved; `{name}` is on a commit that HEAD does not contain (another branch?), so merge it, or tag HEAD by hand with a higher version"
                ),
            ));
        } else {
            create_tag(&git, &name, &next, req)?;
            TagAction::Created
        }
    };
    let mut outcome = TagOutcome {
        next,
        action,
        remote: req.push.clone(),
        pushed: None,
    };
    if let Some(remote) = &req.push {
        match push_tag(&git, remote, &name, &outcome.next.head) {
            Ok(status) => outcome.pushed = Some(status),
            Err(e) => {
                if action == TagAction::Created {
                    // Leave nothing behind: a retry must start from the same state.
                    let _ = git.output(&["tag", "-d", name.as_str()]);
                }
                return Err(e);
            }
        }
    }
    Ok(outcome)
}

fn create_tag(git: &Git, name: &str, next: &NextVersion, req: &TagRequest) -> Result<()> {
    let configured = |key: &str| -> Result<bool> {
        let out = git.output(&["config", "--get", key])?;
        Ok(out.success && !out.stdout.trim().is_empty())
    };
    let name_value = match &req.user_name {
        Some(n) => Some(n.clone()),
        None if !configured("user.name")? => Some(DEFAULT_USER_NAME.to_owned()),
        None => None,
    };
    let email_value = match &req.user_email {
        Some(e) => Some(e.clone()),
        None if !configured("user.email")? => Some(DEFAULT_USER_EMAIL.to_owned()),
        None => None,
    };
    let mut config: Vec<(&str, &str)> = Vec::new();
    if let Some(n) = &name_value {
        config.push(("user.name", n));
    }
    if let Some(e) = &email_value {
        config.push(("user.email", e));
    }
    let message = tag_message(next, req);
    git.run_with(
        &config,
        &[
            "tag",
            "--annotate",
            "--message",
            message.as_str(),
            "--",
            name,
            next.head.as_str(),
        ],
    )?;
    Ok(())
}

/// Pushes `refs/tags/NAME` (never forced) and reads the result.
fn push_tag(git: &Git, remote: &str, name: &str, head: &str) -> Result<PushStatus> {
    let refspec = format!("refs/tags/{name}:refs/tags/{name}");
    let out = git.output(&["push", "--porcelain", remote, refspec.as_str()])?;
    // `--porcelain` prints `FLAG \t FROM:TO \t SUMMARY` per ref: `*` new, `=` up to date,
    // `!` rejected.
    let status_line = out.stdout.lines().find_map(|l| {
        let mut parts = l.split('\t');
        let flag = parts.next()?;
        let refs = parts.next()?;
        let summary = parts.next().unwrap_or("");
        (refs == refspec).then(|| (flag.to_owned(), summary.to_owned()))
    });
    match status_line {
        Some((flag, _)) if out.success && flag == "=" => Ok(PushStatus::UpToDate),
        Some(_) if out.success => Ok(PushStatus::Pushed),
        Some((flag, summary)) if flag == "!" => {
            // Refused: find out where the remote's tag points.
            match remote_tag_commit(git, remote, name)? {
                Some(c) if c == head => Ok(PushStatus::UpToDate),
                Some(c) => Err(Error::other(
                    format!(
                        "remote `{remote}` already has tag `{name}` on commit `{}`, not on HEAD (`{}`): another run released this version first",
                        short(&c),
                        short(head)
                    ),
                    format!(
                        "nothing was overwritten and the local tag was removed; run the pipeline again: with the remote's tags fetched (`--fetch`), a commit that contains `{name}` gets the version after it"
                    ),
                )),
                None => Err(Error::other(
                    format!("remote `{remote}` refused tag `{name}`: {}", summary.trim()),
                    "the remote may protect tags; allow this pipeline's identity to create `v*` tags",
                )),
            }
        }
        _ if out.success => Ok(PushStatus::Pushed),
        _ => Err(Error::other(
            format!(
                "cannot push tag `{name}` to remote `{remote}`: {}",
                git_message(&out.stderr)
            ),
            if out.stderr.contains("terminal prompts disabled")
                || out.stderr.contains("could not read Username")
                || out.stderr.contains("Permission denied")
                || out.stderr.contains("Authentication failed")
            {
                "the build has no credentials for the remote; configure a git credential helper or an SSH key for it (see the README on tag pushing)"
            } else {
                "check the remote's name and that the build may push tags to it"
            },
        )),
    }
}

/// The commit that the remote's tag points at (peeled), if the remote has it.
fn remote_tag_commit(git: &Git, remote: &str, name: &str) -> Result<Option<String>> {
    let refname = format!("refs/tags/{name}");
    // The peeled line (`…^{}`) of an annotated tag only shows when asked for by name.
    let peeled = format!("{refname}^{{}}");
    let out = git.run(&[
        "ls-remote",
        "--tags",
        remote,
        refname.as_str(),
        peeled.as_str(),
    ])?;
    let mut plain = None;
    for line in out.lines() {
        let Some((sha, r)) = line.split_once('\t') else {
            continue;
        };
        if r == peeled {
            return Ok(Some(sha.to_owned()));
        }
        if r == refname {
            plain = Some(sha.to_owned());
        }
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn headers_are_read_as_the_specification_says() {
        let p = parse_commit("feat(api)!: drop v1\n\nbody");
        assert_eq!(p.kind.as_deref(), Some("feat"));
        assert_eq!(p.scope.as_deref(), Some("api"));
        assert_eq!(p.breaking, Some(Breaking::Bang));
        assert_eq!(p.subject, "feat(api)!: drop v1");

        let p = parse_commit("Fix: crash on empty input");
        assert_eq!(p.kind.as_deref(), Some("fix"));
        assert_eq!(p.change(), Change::Fix);

        assert_eq!(parse_commit("FEAT: shout").change(), Change::Feature);
        assert_eq!(parse_commit("feat!: x").change(), Change::Breaking);
        assert_eq!(parse_commit("docs(readme): typo").change(), Change::Fix);

        for not_conventional in [
            "feat:no space",
            "feat: ",
            "Merge branch 'x' into main",
            "(scope): missing type",
            "feat(a(b)): nested",
            "1fix: digit first",
            "",
        ] {
            let p = parse_commit(not_conventional);
            assert_eq!(p.kind, None, "{not_conventional:?}");
            assert_eq!(p.change(), Change::Fix, "{not_conventional:?}");
        }
    }

    #[test]
    fn breaking_footers_count_in_any_commit() {
        let p = parse_commit("feat: new config\n\nBREAKING CHANGE: `old` is gone\n");
        assert_eq!(p.breaking, Some(Breaking::Footer));
        assert_eq!(p.change(), Change::Breaking);
        assert_eq!(
            parse_commit("fix: x\n\nRefs: #1\nBREAKING-CHANGE: y").change(),
            Change::Breaking
        );
        assert_eq!(
            parse_commit("update deps\n\nBREAKING CHANGE: node 18").change(),
            Change::Breaking
        );
        // The token is upper-case only, and must start a line.
        assert_eq!(
            parse_commit("fix: x\n\nbreaking change: y").change(),
            Change::Fix
        );
        assert_eq!(
            parse_commit("fix: x\n\nno BREAKING CHANGE: here").change(),
            Change::Fix
        );
        // `!` wins when both are present.
        assert_eq!(
            parse_commit("refactor!: x\n\nBREAKING CHANGE: y").breaking,
            Some(Breaking::Bang)
        );
    }

    #[test]
    fn bumps_follow_the_table() {
        let one = v("1.4.2");
        let zero = v("0.4.2");
        assert_eq!(bump_for(Change::Breaking, &one), Bump::Major);
        assert_eq!(bump_for(Change::Feature, &one), Bump::Minor);
        assert_eq!(bump_for(Change::Fix, &one), Bump::Patch);
        assert_eq!(bump_for(Change::Breaking, &zero), Bump::Minor);
        assert_eq!(bump_for(Change::Feature, &zero), Bump::Patch);
        assert_eq!(bump_for(Change::Fix, &zero), Bump::Patch);

        assert_eq!(apply(&one, Bump::Major).expect("bump"), v("2.0.0"));
        assert_eq!(apply(&one, Bump::Minor).expect("bump"), v("1.5.0"));
        assert_eq!(apply(&one, Bump::Patch).expect("bump"), v("1.4.3"));
        assert_eq!(apply(&one, Bump::None).expect("bump"), one);
        assert_eq!(apply(&zero, Bump::Minor).expect("bump"), v("0.5.0"));
        let max = Version::new(1, 2, u64::MAX);
        assert!(apply(&max, Bump::Patch).is_err());
    }

    #[test]
    fn tags_are_classified() {
        assert_eq!(classify_tag("v1.2.3"), TagKind::Release(v("1.2.3")));
        assert_eq!(
            classify_tag("v1.3.0-rc.2"),
            TagKind::PreRelease(v("1.3.0-rc.2"))
        );
        for bad in [
            "v1.2",
            "vfoo",
            "release-1.0",
            "v01.2.3",
            "V1.2.3",
            "1.2.3",
            "v1.2.3+build.5",
        ] {
            assert_eq!(classify_tag(bad), TagKind::Malformed, "{bad}");
        }
        for other in ["latest", "deploy/prod", "stable-2024"] {
            assert_eq!(classify_tag(other), TagKind::Unrelated, "{other}");
        }
    }

    fn t(name: &str, commit: &str) -> TagRef {
        TagRef {
            name: name.to_owned(),
            commit: commit.to_owned(),
        }
    }

    #[test]
    fn the_base_is_the_highest_release() {
        let tags = [
            t("v1.9.0", "a"),
            t("v1.10.0", "b"),
            t("v2.0.0-rc.1", "c"),
            t("v1.2", "d"),
            t("latest", "e"),
            t("vfoo", "e"),
        ];
        let base = choose_base(&tags, "head");
        assert_eq!(base.latest, Some((v("1.10.0"), t("v1.10.0", "b"))));
        assert_eq!(base.at_head, None);
        assert_eq!(base.malformed, strings(&["v1.2", "vfoo"]));

        let base = choose_base(&[t("v1.0.0", "h"), t("v1.0.1", "h"), t("v0.9.0", "x")], "h");
        assert_eq!(base.at_head, Some((v("1.0.1"), t("v1.0.1", "h"))));
    }

    #[test]
    fn the_warning_lists_a_few_names() {
        assert_eq!(malformed_warning(&[]), None);
        let one = malformed_warning(&strings(&["v1.2"])).expect("warning");
        assert!(
            one.starts_with("ignored 1 tag reachable from HEAD that is not"),
            "{one}"
        );
        let many: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
        let w = malformed_warning(&many).expect("warning");
        assert!(w.contains("`v4` and 3 more"), "{w}");
        assert!(!w.contains("`v5`"), "{w}");
    }

    #[test]
    fn release_branches_match_names_and_patterns() {
        let p = strings(&["main", "release/*", "hotfix-*-lts"]);
        assert!(is_release_branch(None, &p));
        assert!(is_release_branch(Some("main"), &p));
        assert!(is_release_branch(Some("release/1.x"), &p));
        assert!(is_release_branch(Some("hotfix-2-lts"), &p));
        assert!(!is_release_branch(Some("mainline"), &p));
        assert!(!is_release_branch(Some("release"), &p));
        assert!(!is_release_branch(Some("hotfix-lts"), &p));
        assert!(!is_release_branch(Some("feature/x"), &p));
        assert!(crate::org::glob_match("*", "anything"));
    }

    #[test]
    fn settings_are_checked() {
        assert!(Settings::new("1.0.0", "beta").is_ok());
        for bad in ["1.0", "v1.0.0", "1.0.0-rc.1", "01.0.0"] {
            let e = Settings::new(bad, "rc").expect_err(bad).to_string();
            assert!(e.contains("help:"), "{e}");
        }
        for bad in ["", "1rc", "r.c", "rc_1", "abcdefghijklmnopqrstu"] {
            assert!(Settings::new("0.1.0", bad).is_err(), "{bad}");
        }
    }

    fn history(branch: Option<&str>, base: Base, commits: &[&str], count: usize) -> History {
        History {
            head: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            branch: branch.map(str::to_owned),
            base,
            commits: commits
                .iter()
                .enumerate()
                .map(|(i, m)| RawCommit {
                    sha: format!("{i:040}"),
                    message: (*m).to_owned(),
                })
                .collect(),
            count,
        }
    }

    fn based(version: &str) -> Base {
        Base {
            at_head: None,
            latest: Some((v(version), t(&format!("v{version}"), "base"))),
            malformed: Vec::new(),
        }
    }

    #[test]
    fn decide_takes_the_largest_bump() {
        let s = Settings::default();
        let h = history(
            Some("main"),
            based("1.2.3"),
            &["fix: a", "feat: b", "chore: c"],
            3,
        );
        let n = decide(&s, &h).expect("decide");
        assert_eq!(n.version, v("1.3.0"));
        assert_eq!(n.previous, Some(v("1.2.3")));
        assert_eq!(n.bump, Bump::Minor);
        assert_eq!(n.tag.as_deref(), Some("v1.3.0"));
        assert!(
            n.reason.contains("minor bump (3 commits since `v1.2.3`)"),
            "{}",
            n.reason
        );
        assert!(
            n.reason.contains("\"feat: b\" is a feature"),
            "{}",
            n.reason
        );
        let bumps: Vec<Bump> = n.commits.iter().map(|c| c.bump).collect();
        assert_eq!(bumps, [Bump::Patch, Bump::Minor, Bump::Patch]);

        let h = history(None, based("0.4.0"), &["feat: a", "fix!: b"], 2);
        let n = decide(&s, &h).expect("decide");
        assert_eq!(n.version, v("0.5.0"));
        assert!(
            n.reason.contains("bumps the minor version before 1.0.0"),
            "{}",
            n.reason
        );
    }

    #[test]
    fn decide_without_a_tag_uses_the_initial_version() {
        let s = Settings::new("1.0.0", "rc").expect("settings");
        let base = Base {
            at_head: None,
            latest: None,
            malformed: strings(&["v1"]),
        };
        let n = decide(&s, &history(Some("main"), base, &[], 12)).expect("decide");
        assert_eq!(n.version, v("1.0.0"));
        assert_eq!(n.bump, Bump::None);
        assert_eq!(n.previous, None);
        assert!(n.reason.contains("initial version `1.0.0`"), "{}", n.reason);
        assert_eq!(n.warnings.len(), 1);
    }

    #[test]
    fn other_branches_get_numbered_prereleases() {
        let mut s = Settings::default();
        let h = history(Some("feature/x"), based("1.2.3"), &["feat: a", "fix: b"], 2);
        let n = decide(&s, &h).expect("decide");
        assert_eq!(n.version, v("1.3.0-rc.2"));
        assert!(n.prerelease);
        assert_eq!(n.tag, None);
        assert!(n.version < v("1.3.0") && n.version > v("1.2.3"));
        s.prerelease = "beta".to_owned();
        s.build_metadata = true;
        let n = decide(&s, &h).expect("decide");
        assert_eq!(n.version.to_string(), "1.3.0-beta.2+0123456");

        // A tagged HEAD is a release on any branch.
        let base = Base {
            at_head: Some((v("2.0.0"), t("v2.0.0", "h"))),
            latest: Some((v("2.0.0"), t("v2.0.0", "h"))),
            malformed: Vec::new(),
        };
        let n = decide(&s, &history(Some("feature/x"), base, &[], 0)).expect("decide");
        assert_eq!(n.version, v("2.0.0"));
        assert!(n.tagged && !n.prerelease);
    }

    proptest::proptest! {
        #[test]
        fn a_bump_always_moves_forward(
            major in 0u64..1000, minor in 0u64..1000, patch in 0u64..1000,
            kinds in proptest::collection::vec(0u8..3, 1..6),
        ) {
            let base = Version::new(major, minor, patch);
            let messages: Vec<&str> = kinds
                .iter()
                .map(|k| match k { 0 => "fix: a", 1 => "feat: b", _ => "feat!: c" })
                .collect();
            let n = decide(&Settings::default(), &history(Some("main"), based(&base.to_string()), &messages, messages.len()))
                .expect("decide");
            proptest::prop_assert!(n.version > base);
            // Only one number moves up; those after it restart at zero.
            let same_major = n.version.major == base.major;
            proptest::prop_assert!(same_major || (n.version.minor == 0 && n.version.patch == 0));
        }
    }
}
