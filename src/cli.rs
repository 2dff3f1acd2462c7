//! The command line, as clap types. `main.rs` turns these into library calls.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeforge::Date;

/// Turn a team's pipeline manifest into governed AWS CodePipeline/CodeBuild pipelines.
#[derive(Debug, Parser)]
#[command(
    name = "pipeforge",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// When to colour messages on stderr.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Colour choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

// Inputs besides the manifest.
#[derive(Debug, Args, Clone, Default)]
pub struct InputArgs {
    /// Organisation policy [default: the embedded examples/org.yaml].
    #[arg(long, value_name = "FILE")]
    pub org: Option<PathBuf>,
    /// Directory of templates that override the embedded ones, file by file.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Directory of language files that add to or replace the embedded catalog.
    #[arg(long, value_name = "DIR")]
    pub languages: Option<PathBuf>,
    /// Evaluate the org policy's dated rules (`enforce_from`) and waivers as of this day
    /// (YYYY-MM-DD, UTC) [default: today]; e.g. the day a rule comes into force, to see what it
    /// will break.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub today: Option<Date>,
}

impl InputArgs {
    /// `--today`, else the system clock's day (UTC).
    pub fn today(&self) -> Date {
        self.today.unwrap_or_else(clock_today)
    }
}

/// The system clock's day (UTC). The library never reads the clock; the binary does, here.
pub fn clock_today() -> Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Date::from_unix_seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Parses `--today`.
fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text)
        .ok_or_else(|| format!("`{text}` is not a day: write YYYY-MM-DD, e.g. 2026-09-01"))
}

// The repository and its manifest (`publish`, `deploy`, `diff`).
#[derive(Debug, Args, Clone)]
pub struct RepoArgs {
    /// The repository checkout.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The repository deployed from, as the org policy's `teams.<team>.repositories` name it
    /// [default: the `owner/name` of the checkout's `origin` remote URL].
    #[arg(long, value_name = "OWNER/NAME")]
    pub repository: Option<String>,
    /// Manifest file [default: DIR/pipeline.yml].
    #[arg(value_name = "MANIFEST")]
    pub manifest: Option<PathBuf>,
}

impl RepoArgs {
    /// The manifest: as given, else `pipeline.yml` in the repository.
    pub fn manifest(&self) -> PathBuf {
        self.manifest
            .clone()
            .unwrap_or_else(|| self.repo.join("pipeline.yml"))
    }
}

/// Output format of `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// JSON, for programs.
    Json,
}

/// Which schema to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The team manifest (`pipeline.yml`).
    Manifest,
    /// The organisation policy (`org.yaml`).
    Org,
}

/// What a successful command reports (`main` maps it to the exit status).
pub enum Status {
    /// Everything as expected.
    Ok,
    /// Differences found (`--check`, `diff`, `templates check`, a failed gate).
    Differs,
}

impl Status {
    /// `Differs` when `differs`, else `Ok`.
    pub fn differs_if(differs: bool) -> Self {
        if differs { Status::Differs } else { Status::Ok }
    }
}

/// Subcommands.
///
/// Each subcommand's arguments are built only when it is the one run (`defer`): building all
/// of them was ~0.45 M instructions of every start, ~28 % of a `--version`'s. A deferred
/// subcommand gets its arguments after its own help text, so a doc comment on a type that
/// clap flattens into it or nests under it (`InputArgs`, `PublishArgs`, `FleetCommand`, ...)
/// would replace that text: those types carry `//` comments (the tests below check both).
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Check manifests against the schema, the org policy and the language catalog.
    ///
    /// Exit status 0 when every manifest is valid, 2 with every problem on stderr otherwise.
    Validate {
        /// Manifest files (`pipeline.yml`).
        #[arg(required = true, value_name = "MANIFEST")]
        manifests: Vec<PathBuf>,
        /// The repository the manifests come from, for waivers that name repositories
        /// [default: the `origin` remote of each manifest's checkout, when there is one].
        #[arg(long, value_name = "OWNER/NAME")]
        repository: Option<String>,
        #[command(flatten)]
        inputs: InputArgs,
    },

    /// Print the buildspecs a manifest's pipeline will run, without writing anything.
    ///
    /// With --web, serve the preview page instead: paste, upload or pick a manifest and see its
    /// problems at their lines, its pipeline as a diagram, every buildspec and stack, and
    /// download its bundle as a zip. Nothing is stored; logs are JSON lines on stdout.
    Preview {
        /// Manifest file.
        #[arg(value_name = "MANIFEST", required_unless_present = "web")]
        manifest: Option<PathBuf>,
        /// Print only this gate's buildspec.
        #[arg(long, value_name = "NAME", conflicts_with = "web")]
        gate: Option<String>,
        /// Serve the preview page.
        #[arg(long)]
        web: bool,
        /// Address the page listens on (with --web; port 0 picks a free port, the `listening`
        /// log line has it).
        #[arg(
            long,
            value_name = "ADDR",
            default_value = "127.0.0.1:8081",
            requires = "web"
        )]
        listen: SocketAddr,
        #[command(flatten)]
        inputs: InputArgs,
    },

    /// Describe the effective pipeline: stages, gates, and where every value came from.
    Explain {
        /// Manifest file.
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The repository the manifest comes from, for waivers that name repositories
        /// [default: the `origin` remote of the manifest's checkout, when there is one].
        #[arg(long, value_name = "OWNER/NAME")]
        repository: Option<String>,
        #[command(flatten)]
        inputs: InputArgs,
    },

    /// Render each manifest's bundle into OUT/<name>/ (buildspecs, stacks, plan.json).
    ///
    /// Manifests render on every core, one bundle in memory per core, each staged inside OUT;
    /// nothing in OUT changes unless every manifest renders, then each OUT/<name>/ is replaced
    /// whole. With --check, nothing is written and the exit status is 1 when OUT differs from
    /// what would be rendered (a unified diff is printed).
    Render {
        /// Manifest files.
        #[arg(required = true, value_name = "MANIFEST")]
        manifests: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Compare instead of writing; exit 1 on differences.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        inputs: InputArgs,
    },

    /// Upload the rendered bundle and the repository snapshot to the org source bucket.
    ///
    /// Renders MANIFEST, zips the repository at its commit (tracked files and the git data the
    /// version gate needs), and uploads, SSE-KMS with the org key,
    /// `<team>/<name>/bundle/<content-hash>/...` and then `<team>/<name>/source.zip`, whose
    /// upload starts the pipeline (skipped when the bucket has the same snapshot). Deploy the
    /// stacks first (`pipeforge deploy`) when the pipeline's definition changed. A pipeline
    /// owned by another repository or team is refused before anything is uploaded.
    Publish(PublishArgs),

    /// Deploy a pipeline: its stacks through CloudFormation change sets, then the source.
    ///
    /// Renders MANIFEST, uploads the bundle, deploys every stack in order (target stacks in their
    /// accounts through the org's bootstrap role, then the region and pipeline stacks in the
    /// tooling account), streaming their events, and then uploads the repository snapshot, which
    /// starts the pipeline with its new definition. Stacks whose content did not change are
    /// skipped. A pipeline belongs to the repository and team that first deployed it: a deploy
    /// from another one is refused before anything is uploaded or changed. Exit status 0 when
    /// every stack is deployed, 2 on errors (a failed stack shows the events that explain it;
    /// the pipeline is then not started).
    Deploy(DeployArgs),

    /// Show what a deploy would change, per stack, without changing anything.
    ///
    /// For every stack: a unified diff of the deployed template against the new one, and the
    /// resource changes of a change set (add, modify, remove, replacement), which is deleted
    /// again. Exit status 0 when nothing would change, 1 when something would, 2 on errors.
    Diff(DiffArgs),

    /// Show a deployed pipeline's owner, its stacks, their status and last update.
    ///
    /// Exit status 0 when every stack is deployed and settled, 1 when one is missing, failed or
    /// still in progress, 2 on errors.
    Status {
        /// The pipeline (the manifest's `name`).
        #[arg(value_name = "NAME")]
        name: String,
        /// Check that the pipeline belongs to this team.
        #[arg(long, value_name = "TEAM")]
        team: Option<String>,
        /// Organisation policy [default: the embedded examples/org.yaml].
        #[arg(long, value_name = "FILE")]
        org: Option<PathBuf>,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },

    /// Run a gate's buildspec on this machine, as CodeBuild would, before you merge.
    ///
    /// Renders the manifest, copies the repository as the pipeline gets it (the committed
    /// tree, its git data and the remote's release tags) into a scratch directory with its own
    /// HOME, TMPDIR and tool directories, checks `runtime-versions` against the local
    /// toolchain, and runs the phases in order with the buildspec's variables (`on-failure`,
    /// `finally`, the gate's timeout). Secrets come from the local environment or a placeholder
    /// and are never printed. Nothing is installed outside the scratch directory and the tool
    /// caches; publishing and pushing steps are skipped. GATE `all` runs every CI gate. Exit
    /// status 0 when the gates pass, 1 when one fails, 2 on errors.
    Run(RunArgs),

    /// Delete an application stack whose first create failed (ROLLBACK_COMPLETE), so that the
    /// pipeline's next run can create it.
    ///
    /// The environment's account, region and stack come from the deployed pipeline. Under the
    /// pipeline's deploy lock, the stack is read through the org's recovery role
    /// (`<bootstrap_role>-recovery`, trusted by the bootstrap's `AdditionalTrustedRoleArn`) and
    /// deleted by id through a role without permissions, and only when it is ROLLBACK_COMPLETE:
    /// every other status is refused with what to do instead. Exit status 0 when the stack is
    /// deleted or does not exist, 2 otherwise.
    Recover(RecoverArgs),

    /// Transfer a deployed pipeline to another repository or team (platform engineers only).
    ///
    /// A pipeline belongs to the repository and team that first deployed it; a deploy from any
    /// other repository or team is refused. This rewrites the owner record
    /// (`pipelines/NAME/owner.json` in the org source bucket) under the pipeline's lock, and
    /// logs the transfer in it (who, when, from, to, why; `pipeforge status` shows it). The new
    /// owner's next deploy updates the pipeline's stacks. The webhook never transfers.
    Transfer(TransferArgs),

    /// Move a deployed pipeline to another tooling account of the org (platform engineers only).
    ///
    /// A pipeline stays in the tooling account its first deploy placed it in (its owner record,
    /// `pipelines/NAME/owner.json` in the home account's bucket, holds the placement). This
    /// rewrites the placement under the pipeline's lock, copies `source.zip` to the new
    /// account's bucket, and deploys the pipeline there from its deploy record. The old
    /// account's pipeline and region stacks are refused unless `--retire-old` deletes them
    /// once the new ones are deployed. Run it again to finish a move that stopped.
    Move(MoveArgs),

    /// Check the org's bootstrap with the current credentials (read-only): the tooling account's
    /// bucket, key, execution role, boundary and function roles, and in each target account
    /// given the bootstrap role (assumed), its execution role, boundary and the org policies.
    ///
    /// Exit status 0 when everything is in place, 1 when something is missing, 2 on errors.
    Doctor {
        /// Target accounts to check (repeat, or separate with commas).
        #[arg(long = "account", value_name = "ACCOUNT", value_delimiter = ',')]
        accounts: Vec<String>,
        /// Organisation policy [default: the embedded examples/org.yaml].
        #[arg(long, value_name = "FILE")]
        org: Option<PathBuf>,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },

    /// Print a JSON Schema, for editors to complete and check `pipeline.yml`.
    Schema {
        /// Which schema.
        #[arg(long, value_enum, default_value_t = SchemaKind::Manifest)]
        kind: SchemaKind,
    },

    /// Work on every deployed pipeline of the org at once, from the deploy records in the org's
    /// source bucket (no repository is cloned): list them, plan a template or policy change.
    Fleet {
        /// What to do.
        #[command(subcommand)]
        command: FleetCommand,
    },

    /// Check a test coverage report against a threshold (the test gate runs this).
    Coverage {
        /// What to do.
        #[command(subcommand)]
        command: CoverageCommand,
    },

    /// Semantic versions from git history, for the build gate of every pipeline.
    ///
    /// The version comes from the highest `vMAJOR.MINOR.PATCH` tag reachable from HEAD and the
    /// Conventional Commits since it: a breaking change (`type!:` or a `BREAKING CHANGE:`
    /// footer) bumps the major number, `feat` the minor one, anything else the patch one; before
    /// 1.0.0, breaking changes bump the minor number and features the patch one. Without a tag,
    /// the initial version is used. Builds of other branches than the release branches get
    /// `X.Y.Z-<prerelease>.<commits since the tag>`.
    Version {
        /// What to do (boxed: `tag` has many options).
        #[command(subcommand)]
        command: Box<VersionCommand>,
    },

    /// Receive webhooks of merged pull requests and deploy their pipelines.
    ///
    /// Runs the HTTP handler (`POST /webhook`, `POST /webhook/{vendor}`,
    /// `GET /jobs/{id}/{capability}`, `GET /healthz`) and the worker in one process. The handler
    /// verifies the signature, applies the org policy's `webhook` section, enqueues the job and
    /// answers 202 with the job's status URL; the worker clones the repository at the merge
    /// commit, validates and renders the manifest, and deploys it unless the pipeline's deployed
    /// commit is the same or newer. The secret comes from `PIPEFORGE_WEBHOOK_SECRET` (and
    /// `PIPEFORGE_WEBHOOK_SECRET_PREVIOUS` during a rotation) or from Secrets Manager through
    /// `PIPEFORGE_WEBHOOK_SECRET_ARN`. Logs are JSON lines on stdout.
    Serve(ServeArgs),

    /// Render the stacks that install pipeforge: OUT/tooling.json, OUT/target.json and one
    /// OUT/tooling-ACCOUNT.json per other tooling account.
    ///
    /// `tooling.json` goes in the (home) tooling account: source bucket and KMS key, webhook
    /// API, the webhook and worker Lambda functions, the FIFO job queue and its dead-letter
    /// queue, the job status bucket and the webhook secret. `target.json` goes in every target
    /// account and every other tooling account: the bootstrap role and the org's execution
    /// policy and permissions boundary. `tooling-ACCOUNT.json` goes in that tooling account of
    /// `tooling_accounts`, after `target.json`: its source bucket and key, the execution role of
    /// the pipeline stacks and the bootstrap role's rights to deploy them. With --check, nothing
    /// is written and the exit status is 1 when OUT differs.
    Bootstrap {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Compare instead of writing; exit 1 on differences.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        inputs: InputArgs,
    },

    /// Tools for platform engineers who edit templates and languages.
    Templates {
        /// What to do.
        #[command(subcommand)]
        command: TemplatesCommand,
    },
}

// `templates` subcommands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum TemplatesCommand {
    /// Render every golden case with the given templates and languages; report template errors,
    /// injection-check failures and every golden file that would change.
    ///
    /// Exit status 0 when all cases match, 1 when some output differs, 2 on errors.
    Check {
        /// Directory of templates that override the embedded ones.
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
        /// Directory of language files that add to or replace the embedded catalog.
        #[arg(long, value_name = "DIR")]
        languages: Option<PathBuf>,
        /// Directory of golden cases.
        #[arg(long, value_name = "DIR", default_value = "golden")]
        golden: PathBuf,
        /// Checkov executable used to list the scanner findings the templates add (default:
        /// `checkov` on PATH; without one, the scan is left out and said so).
        #[arg(long, value_name = "PATH")]
        checkov: Option<PathBuf>,
        /// Fail (exit 2) when the templates add Checkov findings, instead of only listing them.
        #[arg(long)]
        fail_on_findings: bool,
    },
}

// `coverage` subcommands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CoverageCommand {
    /// Exit 0 when the report's line coverage is at least MIN percent, 1 when below, 2 when the
    /// report cannot be read. Reads Cobertura and JaCoCo XML.
    Check {
        /// The coverage report (Cobertura or JaCoCo XML).
        #[arg(value_name = "REPORT")]
        report: PathBuf,
        /// Required line coverage, in percent.
        #[arg(long, value_name = "PERCENT")]
        min: f64,
    },
}

// `version` subcommands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum VersionCommand {
    /// Print the version of HEAD: the only line on stdout, so a build can capture it.
    ///
    /// Warnings (ignored tags) and the reason for the version go to stderr.
    Next {
        #[command(flatten)]
        args: VersionArgs,
    },

    /// Create the annotated tag `vX.Y.Z` for HEAD's version, and optionally push it.
    ///
    /// Does nothing when HEAD already has the tag, and nothing for a pre-release build. A tag
    /// of that name on another commit is an error: tags are never moved, nor pushed with force.
    /// Prints the version on stdout.
    Tag(TagArgs),

    /// Write VERSION into the project's version file (Python: a static `[project] version` in
    /// `pyproject.toml`, in its PEP 440 spelling; a `dynamic` version is left to the build).
    ///
    /// Fails, saying why, when the project declares its version in a way pipeforge cannot set.
    Stamp {
        #[command(flatten)]
        args: PackageVersionArgs,
        /// The project directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        repo: PathBuf,
    },

    /// Check that every built package FILE carries exactly VERSION (exit 2 naming the ones that
    /// do not, or when there is none).
    Verify {
        #[command(flatten)]
        args: PackageVersionArgs,
        /// The built packages.
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

// `version stamp` and `version verify`.
#[derive(Debug, Args, Clone)]
pub struct PackageVersionArgs {
    /// The package ecosystem: `python` (PEP 440 spelling), `npm`, `maven` or `nuget`.
    #[arg(long, value_name = "NAME")]
    pub ecosystem: String,
    /// The version (`$VERSION`, from `version next`).
    #[arg(id = "package_version", value_name = "VERSION")]
    pub version: String,
}

// What decides a version, shared by `version next` and `version tag`.
#[derive(Debug, Args, Clone)]
pub struct VersionArgs {
    /// The git checkout.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The version used while no `vMAJOR.MINOR.PATCH` tag is reachable from HEAD.
    #[arg(
        long,
        value_name = "VERSION",
        env = "PF_VERSION_INITIAL",
        default_value = "0.1.0"
    )]
    pub initial: String,
    /// Pre-release identifier for builds of other branches than the release branches.
    #[arg(
        long,
        value_name = "ID",
        env = "PF_VERSION_PRERELEASE",
        default_value = "rc"
    )]
    pub prerelease: String,
    /// The branch being built [default: the branch checked out; a detached HEAD is a release
    /// build].
    #[arg(long, value_name = "NAME", env = "PF_BRANCH")]
    pub branch: Option<String>,
    /// Branches whose builds are releases (repeat, or separate with commas; `*` matches any
    /// characters).
    #[arg(
        long = "release-branch",
        value_name = "NAME",
        env = "PF_RELEASE_BRANCHES",
        value_delimiter = ',',
        default_value = "main,master"
    )]
    pub release_branches: Vec<String>,
    /// Append `+<short commit>` to pre-release versions.
    #[arg(long)]
    pub build_metadata: bool,
    /// Fetch every tag (and the rest of a shallow history) from the remote first.
    #[arg(long)]
    pub fetch: bool,
    /// The remote that `--fetch` (and `tag --push`) use.
    #[arg(long, value_name = "NAME", default_value = "origin")]
    pub remote: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Output format of `fleet list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormatArg {
    /// Aligned columns.
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header line.
    Csv,
}

// `pipeforge fleet` subcommands.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum FleetCommand {
    /// Every deployed pipeline: team, repository, last deployed commit and time, template set,
    /// gates with their tool versions, environments with accounts and approvals, active waivers.
    ///
    /// Rows are written as the records are read. Exit status 0, 2 on errors.
    List {
        /// Organisation policy [default: the embedded examples/org.yaml].
        #[arg(long, value_name = "FILE")]
        org: Option<PathBuf>,
        /// Output format on stdout.
        #[arg(long, value_enum, default_value_t = ListFormatArg::Table)]
        format: ListFormatArg,
        /// Only pipelines whose name matches this pattern (`*` matches any run of characters).
        #[arg(long, value_name = "PATTERN")]
        pipeline: Option<String>,
    },

    /// Re-render every deployed pipeline with a candidate set (`--templates`, `--languages`,
    /// `--org`) and report the impact: unchanged, changed (files with lines added and removed,
    /// CloudFormation resources, replacements flagged), now invalid (with the diagnostics);
    /// identical changes are grouped.
    ///
    /// Pipelines are read from the bucket named by the candidate org policy (or `--fleet-org`).
    /// Exit status 0 when nothing changes, 1 when anything changes or breaks, 2 on errors.
    Plan {
        #[command(flatten)]
        inputs: InputArgs,
        /// The org policy that names where the fleet is (tooling account, source bucket)
        /// [default: the candidate `--org`].
        #[arg(long, value_name = "FILE")]
        fleet_org: Option<PathBuf>,
        /// Output format on stdout (`json`: `{"pipelines": [...], "summary": {...}}`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Only pipelines whose name matches this pattern (`*` matches any run of characters).
        #[arg(long, value_name = "PATTERN")]
        pipeline: Option<String>,
    },

    /// Check that each pipeline's deployed stacks still hold what pipeforge deployed: stacks
    /// gone or failed, deployed by something else (content hash), or edited outside pipeforge
    /// (resources differ from the bundle's deployed template); grouped by cause.
    ///
    /// Exit status 0 when everything is in sync, 1 when anything drifted, 2 on errors.
    ///
    /// `--fix --id NAME` then redeploys the pipelines whose stacks are missing, replaced or
    /// edited, through the rollout path (waves `1,100%`, stop at the first failure, resumable
    /// with the same id), rendered with the given inputs, every stack through a drift-aware
    /// change set; with `--queue-url` as jobs for the webhook's worker, like a rollout.
    Drift(DriftArgs),

    /// Deploy a candidate set to the pipelines it changes, in waves, each deployed before the
    /// next; stop at `--max-failures`. Resumable: run it again with the same `--id` (its state
    /// is `fleet/rollouts/<id>.json` in the source bucket, written with conditional writes).
    ///
    /// Every pipeline is re-rendered from its deploy record and deployed like any deploy: team
    /// repositories, owner records, accounts, approvals, dated rules and waivers all apply.
    /// Exit status 0 when every wave is deployed (or with `--dry-run`), 2 when the rollout
    /// stopped or on errors.
    Rollout(RolloutArgs),
}

// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The gate (`lint`, `test`, ...), or `all` for every CI gate.
    #[arg(value_name = "GATE")]
    pub gate: String,
    /// The repository checkout.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// Manifest file [default: DIR/pipeline.yml].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Leave the scratch directory for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Where scratch directories go [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Tool caches (pip, npm, Go, Maven) [default: ~/.cache/pipeforge/run].
    #[arg(long, value_name = "DIR", env = "PIPEFORGE_RUN_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Use a local binary for a tool the build downloads from a release page (e.g.
    /// `gitleaks=/usr/bin/gitleaks`); the download step is not run. Repeat for more.
    #[arg(long = "tool", value_name = "NAME=PATH")]
    pub tools: Vec<String>,
    /// Override a variable, as a start-build override would. Repeat for more.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Keep this variable of your environment (PATH, locale, proxies, certificates and
    /// package mirror settings are kept already). Repeat for more.
    #[arg(long, value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Run on the files as they are on disk, uncommitted changes included.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Run even when the local runtime differs from the buildspec's `runtime-versions`.
    #[arg(long)]
    pub ignore_runtime: bool,
    #[command(flatten)]
    pub inputs: InputArgs,
}

// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the `listening` log line has it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The SQS FIFO job queue (its redrive policy names the dead-letter queue).
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "local_queue",
        conflicts_with = "local_queue"
    )]
    pub queue_url: Option<String>,
    /// Use an in-process queue with the same semantics instead (lost on exit).
    #[arg(long)]
    pub local_queue: bool,
    /// Keep job statuses in this S3 bucket (`jobs/<id>.json`) instead of memory.
    #[arg(long, value_name = "BUCKET")]
    pub status_bucket: Option<String>,
    /// Jobs handled at once (a repository still deploys one job at a time).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
    /// Where checkouts go [default: a directory under the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// First retry delay after a transient failure, in milliseconds (doubled each time).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub retry_delay_ms: u64,
    /// Long-poll time of each receive from SQS, in seconds (at most 20); 0 polls every
    /// 250 ms instead (the local AWS server serves one request at a time, so a long poll
    /// would hold it).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub receive_wait_secs: u64,
    /// Validate and render only; deploy nothing (to try the webhook out without AWS).
    #[arg(long)]
    pub render_only: bool,
    /// Also serve the preview page (`pipeforge preview --web`) under `/preview/`.
    #[arg(long)]
    pub preview_page: bool,
    /// Longest single wait of a deploy (another deploy's lock, a stack operation), in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub deploy_timeout: u64,
    /// Receives of a job before the local queue dead-letters it (an SQS queue's redrive
    /// policy decides for SQS).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_attempts: u32,
    /// Seconds a client has to send a complete request head, from the connection's opening
    /// or its previous answer; then the connection is closed without an answer.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request body once the server reads it; then 408.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub body_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait, idle, for its next request; then it is
    /// closed.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub idle_timeout_secs: u64,
    /// Connections at once (lowered to fit the open-file limit); more are closed at once.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// Request bodies read at once, each up to 1 MiB (the memory they may hold); a request
    /// that finds none free within the body timeout gets 503.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_bodies: u64,
    #[command(flatten)]
    pub inputs: InputArgs,
}

// `version tag` arguments.
#[derive(Debug, Args)]
pub struct TagArgs {
    #[command(flatten)]
    pub args: VersionArgs,
    /// Push the tag (only that tag) to the remote.
    #[arg(long)]
    pub push: bool,
    /// The version the build used; refuse to tag when the version computed now differs.
    #[arg(long = "expect", value_name = "VERSION")]
    pub expect: Option<String>,
    /// Tagger name [default: git's `user.name`, else `pipeforge`].
    #[arg(long, value_name = "NAME", env = "PF_GIT_USER_NAME")]
    pub user_name: Option<String>,
    /// Tagger e-mail [default: git's `user.email`, else `pipeforge@localhost`].
    #[arg(long, value_name = "EMAIL", env = "PF_GIT_USER_EMAIL")]
    pub user_email: Option<String>,
    /// The pipeline, named in the tag message.
    #[arg(long, value_name = "NAME", env = "PF_PIPELINE")]
    pub pipeline: Option<String>,
    /// The pipeline execution, named in the tag message.
    #[arg(long, value_name = "ID", env = "PF_EXECUTION_ID")]
    pub execution_id: Option<String>,
    /// The build, named in the tag message.
    #[arg(long, value_name = "ID", env = "CODEBUILD_BUILD_ID")]
    pub build_id: Option<String>,
    /// CodeBuild's `0` (failing) or `1`: CodeBuild runs `post_build` even after a failed
    /// `build` phase, and a failing build is never tagged.
    #[arg(long, hide = true, env = "CODEBUILD_BUILD_SUCCEEDING")]
    pub build_succeeding: Option<String>,
}

// `publish` arguments.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub target: RepoArgs,
    /// Publish a working tree with uncommitted changes, as it is on disk.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Upload `source.zip` even when the bucket has the same snapshot (starts the pipeline).
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for another deploy or publish of the same pipeline.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timeout: u64,
    /// Output format of the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub inputs: InputArgs,
}

// `deploy` arguments.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub target: RepoArgs,
    /// Create change sets and print what would change; execute nothing, start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds any single wait may take (another deploy, a stack operation, a change set).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timeout: u64,
    /// Deploy a working tree with uncommitted changes, as it is on disk.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Upload `source.zip` even when the bucket has the same snapshot (starts the pipeline).
    #[arg(long)]
    pub force_source: bool,
    /// How many target and region stacks deploy at the same time (1: one after the other).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub concurrency: u16,
    /// Output format of the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub inputs: InputArgs,
}

// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub target: RepoArgs,
    /// Seconds any single wait may take.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timeout: u64,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub inputs: InputArgs,
}

// `recover` arguments.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The pipeline (the manifest's `name`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The environment whose application stack to recover.
    #[arg(long, value_name = "ENV")]
    pub env: String,
    /// Organisation policy [default: the embedded examples/org.yaml].
    #[arg(long, value_name = "FILE")]
    pub org: Option<PathBuf>,
    /// Seconds to wait for the deploy lock, and for the delete.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timeout: u64,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

// `transfer` arguments.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The pipeline (the manifest's `name`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The team that owns it from now on.
    #[arg(long, value_name = "TEAM")]
    pub team: String,
    /// The repository it is deployed from from now on.
    #[arg(long, value_name = "OWNER/NAME")]
    pub repository: String,
    /// Why (kept in the record).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Seconds to wait for a deploy of the pipeline that holds its lock.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timeout: u64,
    /// Organisation policy [default: the embedded examples/org.yaml].
    #[arg(long, value_name = "FILE")]
    pub org: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

// `move` arguments.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The pipeline (the manifest's `name`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The tooling account to move it to (`tooling.account` or one of `tooling_accounts`).
    #[arg(long, value_name = "ACCOUNT")]
    pub to: String,
    /// Delete the old account's pipeline and region stacks once the new ones are deployed.
    #[arg(long)]
    pub retire_old: bool,
    /// Seconds to wait for the lock, and for each stack operation.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timeout: u64,
    /// The org policy, templates and languages the pipeline is rendered with.
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

// `fleet drift` arguments.
#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Redeploy the drifted pipelines (see above).
    #[arg(long, requires = "id")]
    pub fix: bool,
    /// The rollout id of `--fix`.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Only pipelines whose name matches this pattern (`*` matches any run of characters).
    #[arg(long, value_name = "PATTERN")]
    pub pipeline: Option<String>,
    /// Seconds each stack operation of `--fix` may take (with `--queue-url`: each wave's
    /// jobs).
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub timeout: u64,
    /// `--fix` through the webhook's SQS FIFO queue: each pipeline is a job for the worker,
    /// in its repository's message group. Without it the deploys run in this process.
    #[arg(long, value_name = "URL", requires_all = ["status_bucket", "fix"])]
    pub queue_url: Option<String>,
    /// The bucket the worker records job statuses in (with `--queue-url`).
    #[arg(long, value_name = "BUCKET", requires = "queue_url")]
    pub status_bucket: Option<String>,
    /// Output format on stdout (`json`: `{"pipelines": [...], "summary": {...}}`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

// `fleet rollout` arguments.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    pub inputs: InputArgs,
    /// The rollout's name: run it again with the same id to resume it.
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Wave sizes after the canaries: counts or cumulative percentages.
    #[arg(long, value_name = "SIZES", default_value = "1,5%,25%,100%")]
    pub waves: String,
    /// Pipelines deployed first, in a wave of their own (repeat, or separate with commas).
    #[arg(long = "canary", value_name = "NAME", value_delimiter = ',')]
    pub canaries: Vec<String>,
    /// Stop once this many deploys failed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub max_failures: usize,
    /// Compute and print the waves; write and deploy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The org policy that names where the fleet is [default: the candidate `--org`].
    #[arg(long, value_name = "FILE")]
    pub fleet_org: Option<PathBuf>,
    /// Only pipelines whose name matches this pattern (`*` matches any run of characters).
    #[arg(long, value_name = "PATTERN")]
    pub pipeline: Option<String>,
    /// Seconds each stack operation may take (with `--queue-url`: each wave's jobs).
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub timeout: u64,
    /// Deploy through the webhook's SQS FIFO queue: each pipeline is a job for the worker,
    /// in its repository's message group. Without it the deploys run in this process.
    #[arg(long, value_name = "URL", requires = "status_bucket")]
    pub queue_url: Option<String>,
    /// The bucket the worker records job statuses in (with `--queue-url`).
    #[arg(long, value_name = "BUCKET", requires = "queue_url")]
    pub status_bucket: Option<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl Command {
    /// Whether this is a short run: one manifest on the main thread alone. Only these run
    /// without transparent huge pages (`main`). The one program they may start, `git remote
    /// get-url` when a waiver names repositories, inherits that, and is short too.
    pub fn is_short(&self) -> bool {
        match self {
            Command::Render { manifests, .. } | Command::Validate { manifests, .. } => {
                manifests.len() == 1
            }
            Command::Explain { .. } | Command::Schema { .. } => true,
            Command::Preview { web, .. } => !web,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    fn short(args: &[&str]) -> bool {
        let cli =
            super::Cli::try_parse_from(std::iter::once("pipeforge").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.command.is_short()
    }

    /// A short run keeps transparent huge pages off; a batch, a server and every command that
    /// starts the team's programs (`run`: they inherit the setting) get them back.
    #[test]
    fn only_one_manifest_commands_are_short_runs() {
        assert!(short(&["render", "p.yml", "--out", "o"]));
        assert!(short(&["validate", "p.yml"]));
        assert!(short(&["explain", "p.yml"]));
        assert!(short(&["preview", "p.yml"]));
        assert!(!short(&["render", "a.yml", "b.yml", "--out", "o"]));
        assert!(!short(&["validate", "a.yml", "b.yml"]));
        assert!(!short(&["preview", "--web"]));
        assert!(!short(&["run", "lint"]));
        assert!(!short(&["serve", "--queue-url", "https://sqs.example/q"]));
        assert!(!short(&["fleet", "plan"]));
        assert!(!short(&["templates", "check"]));
    }

    /// clap's own consistency checks (unique argument ids, valid defaults): it panics at run time
    /// on the first use of a broken subcommand otherwise.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every subcommand, at every depth, with its path.
    fn every_subcommand(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        // clap's own `help` subcommand repeats the others' texts.
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut sub = sub.clone();
            // A deferred subcommand's arguments and nested subcommands come with `build`.
            sub.build();
            let path = format!("{path} {}", sub.get_name());
            every_subcommand(&sub, &path, out);
            out.push((path, sub));
        }
    }

    /// Each subcommand's help starts with its own text: a type flattened into several of them
    /// (`InputArgs`) with a doc comment of its own would give them all its text.
    #[test]
    fn every_subcommand_has_its_own_help_text() {
        let mut all = Vec::new();
        every_subcommand(&super::Cli::command(), "pipeforge", &mut all);
        assert!(all.len() > 25, "{}", all.len());
        let mut seen = std::collections::BTreeMap::new();
        for (path, cmd) in &all {
            let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(!about.trim().is_empty(), "{path} has no help text");
            if let Some(other) = seen.insert(about.clone(), path.clone()) {
                panic!("{path} and {other} share the help text {about:?}");
            }
        }
        // `render` keeps its variant's text and gets its arguments (deferred) on `build`.
        let render = all
            .iter()
            .find(|(p, _)| p == "pipeforge render")
            .map(|(_, c)| c);
        let render = render.expect("render");
        assert!(
            render
                .get_about()
                .is_some_and(|a| a.to_string().starts_with("Render")),
            "{:?}",
            render.get_about()
        );
        assert!(render.get_arguments().any(|a| a.get_id() == "templates"));
    }

    /// The types clap flattens into a deferred subcommand or nests under one carry no doc
    /// comment of their own (see [`super::Command`]).
    #[test]
    fn flattened_and_nested_types_have_no_doc_comment() {
        let text = include_str!("cli.rs");
        let lines: Vec<&str> = text.lines().collect();
        let mut checked = 0;
        for (i, line) in lines.iter().enumerate() {
            let derives = line.starts_with("#[derive(")
                && (line.contains(" Args") || line.contains("Subcommand)"));
            let Some(item) = lines[i + 1..].iter().find(|l| l.starts_with("pub ")) else {
                continue;
            };
            if !derives || item.starts_with("pub enum Command ") {
                continue;
            }
            checked += 1;
            assert!(
                !lines[..i].last().is_some_and(|l| l.starts_with("///")),
                "`{item}` has a doc comment: make it a `//` comment (see `Command`)"
            );
        }
        assert!(checked > 15, "{checked}");
    }
}
