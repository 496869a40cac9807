//! Command-line arguments, as parsed. [`crate::settings`] turns them into checked
//! settings; nothing else reads them raw.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tfaudit_backend::Location;
use tfaudit_config::Duration;

/// A lossless, searchable archive of HCP Terraform audit trails.
///
/// Keeps every audit trail event of your organizations long past the API's 14 days,
/// exactly once, and answers "who changed what, when".
#[derive(Debug, Parser)]
#[command(name = "tfaudit", version, max_term_width = 100)]
pub struct Cli {
    /// The archive: a SQLite file (a path, or sqlite://PATH) or a PostgreSQL database
    /// (postgres://USER@HOST/DB) [default: ~/.local/share/tfaudit/archive.db]
    #[arg(long, global = true, env = "TFAUDIT_DB", hide_env_values = true, value_name = "PATH|URL", value_parser = LocationParser)]
    pub db: Option<Location>,

    /// A config file listing organizations and settings [default: ~/.config/tfaudit/tfaudit.toml if present]
    #[arg(long, global = true, env = "TFAUDIT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print only errors: no progress bar, no reports
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Log each request and page (never the token)
    #[arg(long, global = true)]
    pub debug: bool,

    /// Log lines as text (on a terminal) or as JSON objects (for a log pipeline)
    #[arg(long, global = true, value_enum, env = "TFAUDIT_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// The time zone times are shown in, and dates in --since/--until are read in: an IANA
    /// name (Europe/Berlin), UTC or local [default: [display] timezone, else UTC]
    #[arg(long, global = true, env = "TFAUDIT_TZ", value_name = "ZONE")]
    pub tz: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sync every organization once: fetch new events into the archive
    Sync(SyncArgs),
    /// Sync every organization now and then every --interval, until stopped
    Watch(WatchArgs),
    /// Run as a service: watch every organization, raise alerts, serve the dashboard, API and metrics
    Serve(ServeArgs),
    /// Write a commented example config file
    Init(InitArgs),
    /// Check a config file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Search the archive
    Query(QueryArgs),
    /// Write every matching event, oldest first
    Export(ExportArgs),
    /// Counts by type and action, top actors, events per day
    Summary(SummaryArgs),
    /// The life of one resource: every event about it or mentioning it, oldest first
    ///
    /// A workspace's history holds its own events and those of its runs, variables and
    /// team access that name it; a team's, its membership changes and the workspaces it
    /// was given. Matches the id exactly, anywhere in the event (it reads every event in
    /// the time range: narrow it with --since/--until on a large archive).
    History(HistoryArgs),
    /// Everything one accessor (a user, team or token id) did, and what the tokens it created did after
    ///
    /// First and last seen, its events counted by type and action, the events in which it
    /// impersonated someone, and each token it created (resource type *token*, action
    /// create) with what that token then did as an accessor, followed from token to token,
    /// and the alerts all those events raised.
    /// Reads every event in the time range: narrow it with --since/--until.
    Who(WhoArgs),
    /// Names for ids: what an id is called (and was), or read the organizations' listings now
    ///
    /// Names come from events (a user's or team's description, names inside meta) and,
    /// for organizations with an enrich_token, from their listings of workspaces,
    /// projects, teams, members, agent pools, policy sets and variable sets, read every
    /// enrich_every (default 1h) by sync, watch and serve.
    #[command(subcommand)]
    Names(NamesCommand),
    /// The compliance report of a period: coverage, integrity and the changes an auditor asks for
    ///
    /// Coverage (each organization's syncs, gaps and whether the record is complete),
    /// integrity (the latest checkpoint and verification), privileged access changes,
    /// token lifecycle, SSO and organization settings changes, policy overrides, destroy
    /// runs and workspace deletions, impersonations, alerts and their delivery, and
    /// activity by actor and by day. Every event listed with its time, actor, resource,
    /// a plain-words line and, when [serve] public_url is set, a link to its dashboard
    /// page. HTML is one self-contained page (no script, no external resource) that
    /// prints to PDF; Markdown is plain tables; JSON has the same sections.
    Report(ReportArgs),
    /// Per organization: events stored, cursor, last sync, gaps, rejects
    Status(StatusArgs),
    /// Check and list alert rules
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Evaluate rules, deliver alerts, backtest, list what was raised
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Deliver every archived event to the configured sinks ([[sink]]), until stopped (or once)
    ///
    /// Each sink is a named consumer of the archive with its own durable position: it
    /// moves only after the target acknowledged a batch, so a crash or an outage can
    /// repeat the batch in flight (with the same Idempotency-Key) but never skip an
    /// event. Exit codes with --once: 0 when everything pending was delivered, 4 when a
    /// sink kept failing or its target refused a batch, 2 for a bad config, 5 when the
    /// archive cannot be read or written.
    Forward(ForwardArgs),
    /// The configured sinks: position, lag and last error
    #[command(subcommand)]
    Sinks(SinksCommand),
    /// Copy a whole archive into another (SQLite to PostgreSQL and back), resumable, verified at the end
    ///
    /// Copies every event in ingest order, the sources with their cursors and walks,
    /// runs, gaps, rejects, consumers (the alert engine's position), alerts and their
    /// deliveries. The target must be empty, or hold a copy this command stopped part
    /// way (killed, a lost connection): the same command again goes on after the last
    /// batch the target committed. At the end both archives are read again in ingest
    /// order and compared by counts and a SHA-256 over every event's id and raw bytes;
    /// the exit code is 0 only when they are equal, 1 when they differ (2: bad
    /// arguments, or a target holding another archive; 5: an archive cannot be read or
    /// written). Stop anything that writes to the source (sync, watch, serve) first.
    Migrate(MigrateArgs),
    /// Compress the events an archive still keeps uncompressed (from before its first
    /// dictionary, or from an older tfaudit) or compressed the older way, in batches;
    /// resumable
    ///
    /// SQLite archives keep each event's bytes compressed with a dictionary trained on
    /// their own events, less the id, request id and time the event's row keeps; events
    /// an older tfaudit compressed with all of their text are compressed again this way,
    /// and the tamper-evident tree's entries an older tfaudit wrote with whole hashes
    /// keep only the prefix an event still in the archive needs.
    /// Stopped part way, the same command goes on; `--vacuum` then gives the space freed
    /// back to the file system (it rewrites the file, and needs as much free space as
    /// the archive). PostgreSQL archives have nothing to compact.
    Compact(CompactArgs),
    /// Write an Ed25519 key pair for signing checkpoints ([integrity] signing_key)
    ///
    /// Writes the private key (mode 0600) to --out and the public key to --out.pub, both
    /// in the signed-note key encoding that Go's sumdb/note and other transparency-log
    /// tools read. Give the public key to whoever verifies the archive.
    Keygen(KeygenArgs),
    /// Extend the archive's Merkle tree and make a checkpoint now (watch and serve make one after each sync)
    Checkpoint(CheckpointArgs),
    /// Recompute the archive's Merkle tree and check every checkpoint
    ///
    /// Reports the first event that was changed, deleted, inserted or reordered since it
    /// was archived, and any checkpoint altered, unsigned by --key, or covering events
    /// that are gone. Exit codes: 0 verified, 1 a finding, 2 bad arguments, 5 the
    /// archive cannot be read.
    Verify(VerifyArgs),
    /// Print the inclusion proof of one event (JSON): what an auditor checks with verify-proof
    Prove(ProveArgs),
    /// Check an inclusion proof (from prove) or an export's proof (from export --with-proof) offline
    ///
    /// Needs no archive: only the proof, the public key and, for an export, the exported
    /// file. Exit codes: 0 the proof holds, 1 it does not, 2 bad arguments.
    VerifyProof(VerifyProofArgs),
    /// Cold storage: push finished days to a directory or object storage as Parquet, pull removed days back
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Print a shell's completion script for tfaudit
    ///
    /// bash: `tfaudit completions bash > ~/.local/share/bash-completion/completions/tfaudit`;
    /// zsh: `tfaudit completions zsh > "${fpath[1]}/_tfaudit"`;
    /// fish: `tfaudit completions fish > ~/.config/fish/completions/tfaudit.fish`.
    Completions(CompletionsArgs),
    /// Write the manual pages (roff), generated from this very command line
    ///
    /// Without --out-dir, prints tfaudit(1) to standard output (`tfaudit man | man -l -`);
    /// with it, writes tfaudit.1 and a page per command (tfaudit-sync.1, …) there.
    Man(ManArgs),
    /// Serve a local imitation of the audit trail API
    Sim(SimArgs),
    /// Try tfaudit with no token and no network: simulator, sync, queries
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args, Clone)]
pub struct ManArgs {
    /// Write tfaudit.1 and one page per command into this directory
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Where and how to sync.
#[derive(Debug, Args, Clone, Default)]
pub struct SyncArgs {
    /// HCP Terraform address [env: TFE_ADDRESS, or https://$TFE_HOSTNAME] [default: https://app.terraform.io]
    #[arg(long, value_name = "URL")]
    pub address: Option<String>,

    /// Read the token from this file (otherwise TFE_TOKEN, TF_TOKEN_<host>, ~/.terraform.d/credentials.tfrc.json)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// The name this organization has in the archive [default: the address's host]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Only the configured organization with this name
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,

    /// How far before the cursor each sync re-reads, to catch same-second and late events [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub overlap: Option<Duration>,

    /// Events per page to ask for; the server may send fewer [default: 1000]
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,

    /// Requests per second at most, per organization; 0 for no limit [default: 10]
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,

    /// Retries of one failing request before the sync fails [default: 20]
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,

    /// First retry delay, doubled each retry [default: 500ms]
    #[arg(long, value_name = "DURATION")]
    pub retry_delay: Option<Duration>,

    /// Time allowed for one request [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// How long the API keeps events; an older cursor means a gap [default: 14d]
    #[arg(long, value_name = "DURATION")]
    pub retention: Option<Duration>,

    /// How often a sync re-reads the whole --reconcile-window for late events; 0 for never [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub reconcile_every: Option<Duration>,

    /// How far back that sync re-reads [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub reconcile_window: Option<Duration>,

    /// The largest page body read, such as 64MiB; a larger one fails the sync [default: 64MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_page_bytes: Option<tfaudit_config::ByteSize>,

    /// The most pages one sync reads before it stops with an error [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_pages: Option<u64>,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Time between syncs [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Do not evaluate rules or deliver alerts
    #[arg(long)]
    pub no_alerts: bool,

    /// A rules file, added to the built-in rules [default: the config's [alerts] rules]
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    /// How long an organization's lease lasts unless renewed; instances sharing an archive take over a dead one's organizations within 3 of these [env: TFAUDIT_LEASE] [default: [cluster] lease, else 15s]
    #[arg(long, value_name = "DURATION")]
    pub lease: Option<Duration>,

    /// This instance's name among those sharing the archive [default: [cluster] instance, else HOSTNAME-PID]
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub watch: WatchArgs,

    /// The dashboard and API [env: TFAUDIT_LISTEN] [default: [serve] listen, else 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Prometheus metrics, or "off" [env: TFAUDIT_METRICS_LISTEN] [default: [serve] metrics_listen, else 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// Where to write it
    #[arg(long, short, default_value = "tfaudit.toml", value_name = "PATH")]
    pub output: PathBuf,

    /// Replace a file that exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config (--config, TFAUDIT_CONFIG, or the default place): keys, values,
    /// tokens, secrets and rules; mistakes are reported with their line
    Check,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check a rules file; mistakes are reported with their line
    Check {
        /// The rules file
        file: PathBuf,
    },
    /// List the rules in force: built-in, from the rules file, and which are off
    List {
        /// A rules file [default: the config's [alerts] rules]
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Evaluate new events and deliver alerts, until stopped (or once)
    Run {
        /// Evaluate what is new, attempt the deliveries that are due, and exit
        #[arg(long)]
        once: bool,
        /// A rules file [default: the config's [alerts] rules]
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
    },
    /// Backtest: which alerts the rules would have raised over archived events; sends nothing
    Test {
        #[command(flatten)]
        filter: FilterArgs,
        /// A rules file [default: the config's [alerts] rules]
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Alerts raised, newest first, with their delivery state
    List {
        /// At most this many alerts, newest first; 0 for all
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: u64,
        /// Only alerts with a delivery in this state
        #[arg(long, value_enum)]
        state: Option<DeliveryStateArg>,
        /// Only alerts of this rule
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// Only alerts raised at or after: RFC 3339, a date, or an age such as 24h
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// One alert: its text, event and deliveries
    Show {
        /// The alert's number (from `tfaudit alerts list`)
        id: i64,
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
}

#[derive(Debug, Args, Clone)]
pub struct ForwardArgs {
    /// Deliver everything pending and exit (a failing batch is tried 8 times first)
    #[arg(long, conflicts_with = "retry_dead")]
    pub once: bool,
    /// Send SINK's dead letters (events its target refused as invalid) again and exit:
    /// those taken leave the dead letters; 0 when none is left, 4 otherwise
    #[arg(long, value_name = "SINK")]
    pub retry_dead: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// Each sink: type, position (the last event seq delivered), lag in events and seconds, last error
    List {
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
    },
    /// Runs each sink's health check (a file sink's folder writable, an HTTP collector
    /// answering) and prints one line per sink; exit 0 when every sink passes, 4 when one fails
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Write each finished UTC day of each organization as one Parquet file, with a manifest
    ///
    /// Layout: LOCATION/organization=NAME/date=YYYY-MM-DD/events.parquet and
    /// LOCATION/manifest.json. A day is finished when it is before today (UTC) and the
    /// organization's cursor is at or past its end. A day already pushed with the same
    /// events is skipped; a day that gained a late event is written again and the
    /// manifest keeps its earlier entry under `versions`. Reads the archive only
    /// (SQLite or PostgreSQL). S3 credentials come from the AWS_* environment variables
    /// or [archive] in the config. Exit codes: 0 pushed (or nothing to push), 2 a bad
    /// location or setting, 3 the object store refused the credentials, 4 it could not
    /// be reached or failed, 5 the archive could not be read.
    ///
    /// With [retention] keep_local in the config, days that ended longer ago than that are
    /// then removed from the local archive, each only once the manifest holds it with
    /// exactly the archive's events and its object reads back with the recorded SHA-256.
    /// The Merkle tree keeps their leaves, so `tfaudit verify` still checks the whole
    /// history (reading their Parquet copies); `tfaudit archive pull` brings them back.
    Push(PushArgs),
    /// Bring days removed by [retention] keep_local back into the local archive, from cold storage
    ///
    /// Each day's Parquet file is checked against the SHA-256 recorded when the day was
    /// removed, and its events go back with their own seqs and ingest times, so exports,
    /// proofs and `tfaudit verify` see the archive as it was. A day pulled back stays
    /// local for 7 days, then retention removes it again (it is already pushed). Exit
    /// codes as for push; 1 when a copy is missing or was altered.
    Pull(PullArgs),
}

#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    /// The first day to bring back (UTC), YYYY-MM-DD
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    pub since: jiff::civil::Date,

    /// The last day to bring back (UTC), YYYY-MM-DD [default: every day since]
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    pub until: Option<jiff::civil::Date>,

    /// Where the copies are: a directory, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix [default: [archive] location, else where each day was pushed]
    #[arg(long, env = "TFAUDIT_ARCHIVE_TO", value_name = "LOCATION")]
    pub from: Option<String>,

    /// Only the organization with this name in the archive
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,

    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

fn parse_day(text: &str) -> Result<jiff::civil::Date, String> {
    text.trim().parse().map_err(|_| format!("{text:?} is not a date; write it as YYYY-MM-DD, such as 2025-11-05"))
}

#[derive(Debug, Args, Clone)]
pub struct PushArgs {
    /// Where to: a directory, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix [default: [archive] location]
    #[arg(long, env = "TFAUDIT_ARCHIVE_TO", value_name = "LOCATION")]
    pub to: Option<String>,

    /// Only the organization with this name in the archive
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,

    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// What every `--limit N` means: at most N, and 0 for no limit.
#[must_use]
pub fn no_limit_if_zero(limit: u64) -> Option<u64> {
    (limit > 0).then_some(limit)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeliveryStateArg {
    Pending,
    Delivered,
    Failing,
    Abandoned,
}

/// Which events.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Events at or after: RFC 3339, a date (UTC), or an age such as 90m, 24h, 7d
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Events before: same forms as --since
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,

    /// Accessor id or name (auth.accessor_id / auth.description); glob, case-insensitive
    #[arg(long, value_name = "GLOB")]
    pub actor: Option<String>,

    /// Resource type (resource.type), such as authentication_token; glob
    #[arg(long = "type", value_name = "GLOB")]
    pub resource_type: Option<String>,

    /// Resource action (resource.action), such as destroy; glob
    #[arg(long, value_name = "GLOB")]
    pub action: Option<String>,

    /// Resource id (resource.id), such as ws-abc123, or a name the catalogue knows, such as prod-network; glob
    #[arg(long, visible_alias = "resource", value_name = "GLOB")]
    pub resource_id: Option<String>,

    /// Organization: its name in the archive or its id (org-...); glob
    #[arg(long, value_name = "GLOB")]
    pub org: Option<String>,

    /// Text anywhere in the event (names, messages, meta), case-insensitive
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    Table,
    Json,
    Jsonl,
    Csv,
    /// `query --explain`: a line of plain words per event.
    #[value(skip)]
    Explain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// `tfaudit report`.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// The period: a quarter (2026-Q3), a month (2026-11) or an ISO week (2026-W48, Monday
    /// to Sunday), whole calendar periods in the display zone (--tz, [display] timezone;
    /// UTC by default)
    #[arg(long, value_name = "PERIOD")]
    pub period: Option<String>,

    /// Instead of --period: from this time (RFC 3339, a date, or an age such as 30d)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// With --since: up to this time, excluded [default: now]
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,

    /// Only organizations whose name in tfaudit or org-… id matches (glob, case-insensitive)
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,

    /// html, md or json [default: the -o file's extension, else md]
    #[arg(long, value_enum)]
    pub format: Option<ReportFileFormat>,

    /// Write the report to this file (whole or not at all, mode 0600) instead of standard output
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// At most this many events listed per section, oldest first (all are counted); 0 for all
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFileFormat {
    Html,
    Md,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// At most this many events, newest first; 0 for all
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u64,

    /// Output format [default: table on a terminal, jsonl otherwise]
    #[arg(long, value_enum)]
    pub format: Option<QueryFormat>,

    /// One line per event in plain words ("alice created a team API token at-…"), with its
    /// time and organization
    #[arg(long, conflicts_with = "format")]
    pub explain: bool,

    /// What the same actor did in the same organization around this event (its id),
    /// oldest first, within --window before and after it
    #[arg(long, value_name = "EVENT_ID", conflicts_with_all = ["since", "until", "actor", "org"])]
    pub around: Option<String>,

    /// How far before and after the --around event to look
    #[arg(long, value_name = "DURATION", default_value = "10m", requires = "around")]
    pub window: Duration,
}

#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// jsonl: one original event per line; csv: one row per event
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,

    /// Write to this file instead of standard output
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also write FILE.checkpoint (the archive's newest checkpoint) and FILE.proof.json
    /// (every line's inclusion proof) so that the export can be verified on its own
    /// with `tfaudit verify-proof FILE.proof.json` (jsonl with --output only)
    #[arg(long, requires = "output")]
    pub with_proof: bool,
}

/// `tfaudit compact`.
#[derive(Debug, Args, Clone)]
pub struct CompactArgs {
    /// Events per transaction
    #[arg(long, default_value_t = 5_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Rewrite the file afterwards so that the space freed is returned (SQLite VACUUM),
    /// and from then on returned as it is freed (incremental auto-vacuum, as new archives have)
    #[arg(long)]
    pub vacuum: bool,
}

/// `tfaudit keygen`.
#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// The key's name, shown on every signature line (no spaces or '+')
    #[arg(long, default_value = "tfaudit")]
    pub name: String,
    /// Where to write the private key; the public key goes to this path plus .pub
    #[arg(long, short, value_name = "FILE", default_value = "tfaudit-signing.key")]
    pub out: PathBuf,
}

/// `tfaudit checkpoint`.
#[derive(Debug, Args, Clone)]
pub struct CheckpointArgs {
    /// Print the checkpoint as JSON
    #[arg(long)]
    pub json: bool,
}

/// `tfaudit verify`.
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// The public key checkpoints must be signed with: the key itself or a file holding
    /// it (keygen's .pub) [env: TFAUDIT_VERIFY_KEY]
    #[arg(long, env = "TFAUDIT_VERIFY_KEY", value_name = "PUBKEY|FILE")]
    pub key: Option<String>,
    /// A checkpoint kept elsewhere (a file, or a directory of *.checkpoint files) that the
    /// archive must still agree with; repeatable
    #[arg(long = "from", value_name = "CHECKPOINT")]
    pub from: Vec<PathBuf>,
    /// Check only what was added since the last verification that found nothing
    #[arg(long)]
    pub quick: bool,
    /// Where the copies of days removed by [retention] keep_local are: a directory or s3://, gs://, az:// location [default: [archive] location, else where each day was pushed]
    #[arg(long, value_name = "LOCATION", conflicts_with = "no_cold")]
    pub cold: Option<String>,
    /// Do not read the copies of days removed by retention: their events are then vouched
    /// for by their archived leaves and the checkpoints over them only
    #[arg(long)]
    pub no_cold: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// `tfaudit prove`.
#[derive(Debug, Args, Clone)]
pub struct ProveArgs {
    /// The event's id
    pub event_id: String,
    /// Write the proof to this file instead of standard output
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `tfaudit verify-proof`.
#[derive(Debug, Args, Clone)]
pub struct VerifyProofArgs {
    /// The proof: prove's JSON, or an export's FILE.proof.json
    pub proof: PathBuf,
    /// The archive's public key: the key itself or a file holding it [env: TFAUDIT_VERIFY_KEY]
    #[arg(long, env = "TFAUDIT_VERIFY_KEY", value_name = "PUBKEY|FILE")]
    pub key: Option<String>,
    /// The exported file an export proof covers [default: the proof's path without .proof.json]
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
}

/// A time range alone, for the commands that take no other filter.
#[derive(Debug, Args, Clone, Default)]
pub struct RangeArgs {
    /// Events at or after: RFC 3339, a date, or an age such as 90m, 24h, 7d
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Events before: RFC 3339, a date, or an age
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

impl RangeArgs {
    /// As the other commands' filters take it.
    #[must_use]
    pub fn filter(&self) -> FilterArgs {
        FilterArgs { since: self.since.clone(), until: self.until.clone(), ..FilterArgs::default() }
    }
}

#[derive(Debug, Subcommand, Clone)]
pub enum NamesCommand {
    /// Every name an id has had, with when it was seen (an id, or a name to look up)
    Show(NamesShowArgs),
    /// Read the listings of every organization with an enrich_token now
    Refresh(NamesRefreshArgs),
}

#[derive(Debug, Args, Clone)]
pub struct NamesShowArgs {
    /// An id (ws-…, team-…, user-…) or a name
    pub id: String,

    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Args, Clone)]
pub struct NamesRefreshArgs {
    /// Only the configured organization with this name
    #[arg(long, value_name = "NAME")]
    pub org: Option<String>,

    /// Print one JSON object per organization
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone)]
pub struct WhoArgs {
    /// The accessor's id (user-…, team-…, at-…) or name
    pub id: String,

    #[command(flatten)]
    pub range: RangeArgs,

    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Args, Clone)]
pub struct HistoryArgs {
    /// The resource's id (ws-…, team-…, at-…, run-…, or any other) or name
    pub id: String,

    #[command(flatten)]
    pub range: RangeArgs,

    /// At most this many events, oldest first; 0 for all
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: u64,

    /// Output format [default: table on a terminal, jsonl otherwise]
    #[arg(long, value_enum)]
    pub format: Option<QueryFormat>,
}

#[derive(Debug, Args, Clone)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// How many actors and type/action pairs to list
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,

    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,

    /// Also list the most recent rejected elements, with their text
    #[arg(long)]
    pub rejects: bool,
}

/// `tfaudit migrate`.
#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    /// The archive to copy: a SQLite file (a path, or sqlite://PATH) or postgres://USER@HOST/DB
    #[arg(long, value_name = "PATH|URL", value_parser = LocationParser)]
    pub from: Location,

    /// Where to copy it: an empty (or missing) SQLite file, or an empty PostgreSQL database
    #[arg(long, value_name = "PATH|URL", value_parser = LocationParser)]
    pub to: Location,

    /// Events per transaction in the target
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinceModeArg {
    Exclusive,
    Inclusive,
}

#[derive(Debug, Args, Clone)]
pub struct SimArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8700", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,

    /// The token that works (fake; any other gets 401)
    #[arg(long, default_value = "sim-token", value_name = "TOKEN")]
    pub token: String,

    /// A token answered with 404, as a valid token without audit logging would be
    #[arg(long, value_name = "TOKEN")]
    pub forbidden_token: Option<String>,

    /// The organization token that reads the workspace, team and member listings
    /// (default: the working token reads them too)
    #[arg(long, value_name = "TOKEN")]
    pub enrich_token: Option<String>,

    /// Events of history to serve
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub events: u64,

    /// How far back history reaches from its newest event
    #[arg(long, default_value = "13d", value_name = "DURATION")]
    pub span: Duration,

    /// Age of the newest history event at start
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub newest_age: Duration,

    /// Events older than this are not served
    #[arg(long, default_value = "14d", value_name = "DURATION")]
    pub retention: Duration,

    /// The most events one page holds, whatever is asked
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_page_size: u32,

    /// Whether `since` keeps events at exactly that second
    #[arg(long, value_enum, default_value_t = SinceModeArg::Exclusive)]
    pub since_mode: SinceModeArg,

    /// Live events arriving per second
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    pub live_rate: f64,

    /// Share of live events with timestamps in the past
    #[arg(long, default_value_t = 0.2, value_name = "P")]
    pub late_fraction: f64,

    /// How far in the past a late event may be
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub max_lateness: Duration,

    /// Share of strings that are hostile (markup, formulas, escapes)
    #[arg(long, default_value_t = 0.05, value_name = "P")]
    pub hostile: f64,

    /// Elements of history that are not events
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub malformed: u64,

    /// Share of requests answered 500/502/503
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub error_rate: f64,

    /// Share of requests answered 429
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub throttle_rate: f64,

    /// Share of connections closed without an answer
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub drop_rate: f64,

    /// Share of bodies cut short
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub truncate_rate: f64,

    /// Share of 200 answers that are not JSON
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub garbage_rate: f64,

    /// Share of requests delayed by --slow-delay
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub slow_rate: f64,

    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub slow_delay: Duration,

    /// Requests per second over which the answer is 429
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,

    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Events the demo's simulator serves (fewer for a quicker run; every step still runs)
    #[arg(long, default_value_t = 3000, value_name = "N")]
    pub events: u64,

    /// Keep the demo's archive (in a temporary folder) to explore afterwards; without
    /// it the folder is removed when the demo ends
    #[arg(long)]
    pub keep: bool,
}

/// Reads `--db` / `TFAUDIT_DB` as a [`Location`] at once, so that the parsed arguments
/// (and their `Debug`) hold the location with its password masked, never the raw URL.
#[derive(Debug, Clone, Copy)]
pub struct LocationParser;

impl clap::builder::TypedValueParser for LocationParser {
    type Value = Location;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Location, clap::Error> {
        // --db, or migrate's --from and --to.
        let flag = arg.and_then(clap::Arg::get_long).unwrap_or("db");
        Location::from_os(value).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("--{flag}: {e}\n")).with_cmd(cmd)
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn parsed_arguments_never_show_a_database_password() {
        let cli = super::Cli::try_parse_from(["tfaudit", "--db", "postgres://u:pw-zzsecret@h/db", "status"]).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("pw-zzsecret") && shown.contains("postgres://u:***@h/db"), "{shown}");
    }
}
