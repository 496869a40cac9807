//! The config file (TOML). Unknown keys are errors, reported with their line.
//!
//! ```toml
//! db = "/var/lib/tfaudit/archive.db"
//!
//! [sync]
//! interval = "60s"
//!
//! [[organization]]
//! name = "acme"
//! address = "https://app.terraform.io"
//! token_file = "/etc/tfaudit/acme.token"
//!
//! [organization.sync]      # this organization's own settings
//! interval = "5m"
//! ```

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// The config's `db`, as written: a path, or a URL (read by `tfaudit-backend`). A
/// PostgreSQL URL may carry a password, so `Debug` shows it without one.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct ArchiveLocation(pub PathBuf);

impl std::fmt::Debug for ArchiveLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.to_str() {
            // Not a URL at all: a path, shown as one.
            Some(text) => match tfaudit_model::redact::url_without_password(text) {
                Ok(shown) => write!(f, "ArchiveLocation({shown:?})"),
                Err(_) => write!(f, "ArchiveLocation({text:?})"),
            },
            None => write!(f, "ArchiveLocation({:?})", self.0),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The archive: a path, or a URL as `--db` takes.
    pub db: Option<ArchiveLocation>,
    /// The PostgreSQL archive's password, when its URL has none (before `PGPASSWORD`).
    pub db_password: Option<crate::SecretSource>,
    /// Sync settings for every organization.
    #[serde(default)]
    pub sync: SyncSection,
    /// The organizations to sync; none means "the one TFE_ADDRESS/TFE_TOKEN name".
    #[serde(default, rename = "organization")]
    pub organizations: Vec<OrganizationSection>,
    /// Alert rules and where alerts go by default.
    #[serde(default)]
    pub alerts: AlertsSection,
    /// Where alerts can be delivered.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationSection>,
    /// `tfaudit serve`'s listeners and access token.
    #[serde(default)]
    pub serve: ServeSection,
    /// Several instances on one archive: this instance's name and the lease period.
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Where `tfaudit forward` sends every archived event.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkSection>,
    /// Checkpoints of the archive's Merkle tree: the signing key, and copies elsewhere.
    #[serde(default)]
    pub integrity: IntegritySection,
    /// Cold storage: where `tfaudit archive push` writes finished days as Parquet.
    #[serde(default)]
    pub archive: ArchiveSection,
    /// How long events stay in the local archive once cold storage holds them.
    #[serde(default)]
    pub retention: RetentionSection,
    /// How the command line shows things.
    #[serde(default)]
    pub display: DisplaySection,
    /// Compliance reports that `serve` and `watch` make after each period closes.
    #[serde(default, rename = "report")]
    pub reports: Vec<ReportSection>,
}

/// `[[report]]`: the compliance report of every closed period (ISO weeks or calendar
/// months in `[display] timezone`), made once by `serve`/`watch`, written to
/// `write_to` and emailed to the `send_to` destinations.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// Names the schedule and its files (`<name>-<period>.<ext>`).
    pub name: String,
    /// `"weekly"` or `"monthly"`.
    pub period: String,
    /// `"html"` (default), `"md"` or `"json"`.
    pub format: Option<String>,
    /// Only organizations whose name or id matches (a case-insensitive glob).
    pub org: Option<String>,
    /// Email destinations (`[[destination]]` of type email) the report is sent to.
    #[serde(default)]
    pub send_to: Vec<String>,
    /// A directory the report file is written to.
    pub write_to: Option<PathBuf>,
}

/// `[display]`: how the command line shows things to people (machine outputs —
/// `--format json`, `export` — keep the events' own UTC times).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisplaySection {
    /// The time zone times are shown in and `--since`/`--until` dates are read in: an
    /// IANA name such as "Europe/Berlin", "UTC" (the default) or "local" (the system's).
    pub timezone: Option<String>,
}

/// `[retention]`: events of days that ended more than `keep_local` ago are removed from
/// the local archive, once `[archive] location` holds those days (checked, not
/// assumed); `tfaudit archive pull` brings them back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Such as "400d" (none: everything stays).
    pub keep_local: Option<Duration>,
}

/// `[integrity]`: how checkpoints are signed and where copies of them go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntegritySection {
    /// The key that signs checkpoints, as `tfaudit keygen` writes it: `{ file = "..." }`,
    /// `{ env = "NAME" }` or the key itself (`TFAUDIT_SIGNING_KEY` comes first).
    pub signing_key: Option<crate::SecretSource>,
    /// The archive's name on the first line of its checkpoints, fixed when the tree
    /// begins [default: tfaudit.archive/<random>].
    pub origin: Option<String>,
    /// A checkpoint at least this often, even when nothing new was stored [default: 1h].
    pub checkpoint_every: Option<crate::Duration>,
    /// A directory every checkpoint is also written to, outside the archive's reach.
    pub checkpoint_dir: Option<PathBuf>,
    /// A URL every new checkpoint is also POSTed to (text/plain), outside the archive's
    /// reach: `"https://…"`, `{ env = "NAME" }` or `{ file = "path" }`.
    pub checkpoint_webhook: Option<crate::SecretSource>,
    /// The name of a `[[sink]]` every new checkpoint is also sent to, as one record in
    /// the sink's own wire format, outside the archive's reach.
    pub checkpoint_sink: Option<String>,
}

/// `[archive]`: cold storage for `tfaudit archive push`. The S3 keys add to (and
/// override) the standard `AWS_*` environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSection {
    /// A directory (relative to this file), `file:///path`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix`.
    pub location: Option<String>,
    /// S3: an S3-compatible server's address (else `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// S3: the bucket's region (else `AWS_REGION`, else us-east-1).
    pub region: Option<String>,
    /// S3: allow a plain `http://` endpoint (a local S3-compatible server).
    pub allow_http: Option<bool>,
    /// S3: credentials (else `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), as secrets: inline, `{ env = "NAME" }` or `{ file = "path" }`.
    pub access_key_id: Option<crate::SecretSource>,
    pub secret_access_key: Option<crate::SecretSource>,
    pub session_token: Option<crate::SecretSource>,
    /// `watch` and `serve` push every this long (none: only `tfaudit archive push`).
    pub push_every: Option<Duration>,
}

/// What kind of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// JSON lines appended to a file per UTC day (`path`).
    File,
    /// NDJSON POSTed to any HTTP endpoint (`url`, `headers`, `gzip`, `secret`).
    Http,
    /// Splunk's HTTP Event Collector (`url`, `token`, `index`, `ack`, ...).
    SplunkHec,
    /// Elasticsearch or OpenSearch `_bulk` (`url`, `index`, `api_key` or
    /// `username`/`password`).
    Elasticsearch,
    /// Datadog's Logs API v2 (`site` or `url`, `api_key`, `service`, `tags`).
    Datadog,
    /// RFC 5424 syslog over TLS, TCP or UDP (`address`, `transport`).
    Syslog,
    /// NATS JetStream (`url`, `subject`).
    Nats,
}

impl SinkKind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [Self; 7] =
        [Self::SplunkHec, Self::Elasticsearch, Self::Datadog, Self::Syslog, Self::Http, Self::Nats, Self::File];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Http => "http",
            Self::SplunkHec => "splunk_hec",
            Self::Elasticsearch => "elasticsearch",
            Self::Datadog => "datadog",
            Self::Syslog => "syslog",
            Self::Nats => "nats",
        }
    }

    /// The keys this kind takes besides the common ones.
    #[must_use]
    pub fn own_keys(self) -> &'static [&'static str] {
        match self {
            Self::File => &["path"],
            Self::Http => &["url", "headers", "gzip", "secret", "timeout", "ca_file"],
            Self::SplunkHec => {
                &["url", "token", "index", "source", "sourcetype", "host", "ack", "gzip", "timeout", "ca_file"]
            }
            Self::Elasticsearch => &["url", "index", "api_key", "username", "password", "gzip", "timeout", "ca_file"],
            Self::Datadog => &["site", "url", "api_key", "service", "source", "host", "tags", "gzip", "timeout"],
            Self::Syslog => &["address", "transport", "host", "ca_file", "client_cert", "client_key", "timeout"],
            Self::Nats => &["url", "subject", "token", "username", "password", "ca_file", "timeout"],
        }
    }

    /// The keys this kind cannot do without.
    #[must_use]
    pub fn needed_keys(self) -> &'static [&'static str] {
        match self {
            Self::File => &["path"],
            Self::Http | Self::Elasticsearch => &["url"],
            Self::SplunkHec => &["url", "token"],
            Self::Datadog => &["api_key"],
            Self::Syslog => &["address"],
            Self::Nats => &["subject"],
        }
    }
}

/// How a sink writes each event (`format`).
pub const SINK_FORMATS: [&str; 3] = ["raw", "ocsf", "ecs"];

/// `[[sink]]`: one target `tfaudit forward` delivers every archived event to. The
/// common keys first, then each kind's own (checked against `type`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// How events are written: `raw` (the event as HCP Terraform sent it; default).
    pub format: Option<String>,
    /// Where a new sink starts: `beginning` (default), `now`, or an RFC 3339 time.
    pub start: Option<String>,
    /// Events per batch at most (default 500).
    pub batch_events: Option<u64>,
    /// Bytes per batch at most (default 1MiB); a larger single event is sent alone.
    pub batch_bytes: Option<crate::ByteSize>,
    /// How long `forward` waits for a batch to fill before sending it (default 1s).
    pub batch_wait: Option<Duration>,
    /// The first delay before a failed batch is sent again; it doubles up to 1m
    /// (default 500ms).
    pub retry_delay: Option<Duration>,
    /// At most this many events per second to the target (default: no limit).
    pub rate_limit: Option<u64>,
    /// `file`: the file, with `%Y`, `%m`, `%d` of the event's UTC day.
    pub path: Option<String>,
    /// `http`: where batches are POSTed; `splunk_hec`, `elasticsearch`: the base
    /// address; `datadog`: the intake's base (instead of `site`, for a proxy);
    /// `nats`: the server (default `nats://127.0.0.1:4222`).
    pub url: Option<crate::SecretSource>,
    /// `http`: extra request headers; their values are secrets.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::SecretSource>,
    /// Compress request bodies (`Content-Encoding: gzip`).
    pub gzip: Option<bool>,
    /// `http`: a shared secret for an HMAC-SHA256 signature, as webhooks are signed.
    pub secret: Option<crate::SecretSource>,
    /// Time allowed for one request or write (default 30s).
    pub timeout: Option<Duration>,
    /// `splunk_hec`: the HEC token; `nats`: an authentication token.
    pub token: Option<crate::SecretSource>,
    /// `splunk_hec`: the index; `elasticsearch`: the index or data stream.
    pub index: Option<String>,
    /// `splunk_hec`: the events' source; `datadog`: `ddsource`.
    pub source: Option<String>,
    /// `splunk_hec`: the sourcetype (default `hashicorp:terraform:audit`).
    pub sourcetype: Option<String>,
    /// `splunk_hec`, `datadog`, `syslog`: the host the events are said to come from.
    pub host: Option<String>,
    /// `splunk_hec`: wait for indexer acknowledgement before the cursor moves.
    pub ack: Option<bool>,
    /// `elasticsearch`, `datadog`: the API key.
    pub api_key: Option<crate::SecretSource>,
    /// `elasticsearch`, `nats`: basic authentication.
    pub username: Option<String>,
    pub password: Option<crate::SecretSource>,
    /// A PEM file of the certificate authorities to trust (besides the system's).
    pub ca_file: Option<String>,
    /// `datadog`: the site (default `datadoghq.com`).
    pub site: Option<String>,
    /// `datadog`: the `service` attribute.
    pub service: Option<String>,
    /// `datadog`: tags such as `env:prod`.
    pub tags: Option<Vec<String>>,
    /// `syslog`: `host:port` of the collector.
    pub address: Option<String>,
    /// `syslog`: `tls` (default), `tcp` or `udp`.
    pub transport: Option<String>,
    /// `syslog`: a client certificate and its key (PEM files), when the collector asks.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// `nats`: the JetStream subject.
    pub subject: Option<String>,
}

impl SinkSection {
    /// The kind-specific keys this table sets.
    fn own_keys_set(&self) -> Vec<&'static str> {
        [
            ("path", self.path.is_some()),
            ("url", self.url.is_some()),
            ("headers", !self.headers.is_empty()),
            ("gzip", self.gzip.is_some()),
            ("secret", self.secret.is_some()),
            ("timeout", self.timeout.is_some()),
            ("token", self.token.is_some()),
            ("index", self.index.is_some()),
            ("source", self.source.is_some()),
            ("sourcetype", self.sourcetype.is_some()),
            ("host", self.host.is_some()),
            ("ack", self.ack.is_some()),
            ("api_key", self.api_key.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("site", self.site.is_some()),
            ("service", self.service.is_some()),
            ("tags", self.tags.is_some()),
            ("address", self.address.is_some()),
            ("transport", self.transport.is_some()),
            ("client_cert", self.client_cert.is_some()),
            ("client_key", self.client_key.is_some()),
            ("subject", self.subject.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// How long an organization's lease lasts unless renewed (default 15s): an
    /// instance that dies is replaced within about three of these.
    pub lease: Option<Duration>,
    /// This instance's name, unique among those sharing the archive (default: host
    /// name and process id).
    pub instance: Option<String>,
}

/// `[serve]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// The dashboard and API (default 127.0.0.1:8080).
    pub listen: Option<String>,
    /// Prometheus metrics (default 127.0.0.1:9464; "off" for none).
    pub metrics_listen: Option<String>,
    /// Required of every request when set; required to listen beyond loopback.
    pub access_token: Option<crate::SecretSource>,
    /// How long a request's headers may take to arrive (default 10s).
    pub header_timeout: Option<Duration>,
    /// How long a connection may stay silent before it is closed (default 60s).
    pub idle_timeout: Option<Duration>,
    /// Connections open at once, per listener (default 128).
    pub max_connections: Option<usize>,
    /// The dashboard's address as its readers reach it (`https://tfaudit.example.com`,
    /// behind a proxy perhaps): reports link each event to its page there.
    pub public_url: Option<String>,
}

/// `[alerts]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Whether `watch` evaluates rules and delivers alerts (default true).
    pub enabled: Option<bool>,
    /// A rules file, added to (or replacing by name) the built-in rules.
    pub rules: Option<PathBuf>,
    /// Whether the built-in rules are on (default true).
    pub builtin: Option<bool>,
    /// Rules to turn off, by name.
    #[serde(default)]
    pub disable: Vec<String>,
    /// The time zone of rules' hours when they name none (default UTC).
    pub timezone: Option<String>,
    /// Destinations of rules that name none (default: every destination).
    pub destinations: Option<Vec<String>>,
    /// How long delivery is retried before an alert is given up on (default 7d).
    pub max_delivery_age: Option<Duration>,
    /// The first delay before a failed delivery is retried; it doubles up to 10m
    /// (default 5s).
    pub retry_delay: Option<Duration>,
    /// The alert title template for rules without their own.
    pub title: Option<String>,
    /// The alert text template for rules without their own.
    pub text: Option<String>,
}

/// What kind of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// A Slack incoming webhook (`url`).
    Slack,
    /// PagerDuty Events API v2 (`routing_key`; `url` to override the endpoint).
    Pagerduty,
    /// Any HTTP endpoint (`url`, optional `secret` for an HMAC-SHA256 signature, `headers`).
    Webhook,
    /// SMTP (`server`, `from`, `to`, optional `username`/`password`, `tls`).
    Email,
    /// A line in tfaudit's log.
    Log,
    /// A JSON line on standard output.
    Stdout,
}

/// `[[destination]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DestinationKind,
    pub url: Option<crate::SecretSource>,
    pub routing_key: Option<crate::SecretSource>,
    pub secret: Option<crate::SecretSource>,
    /// Extra request headers; their values are secrets (an API key is often one).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, crate::SecretSource>,
    /// Only alerts at least this severe (default info: all).
    pub min_severity: Option<String>,
    /// SMTP server, `host` or `host:port` (default port 587).
    pub server: Option<String>,
    /// `starttls` (default), `tls` (implicit TLS, port 465), or `none` (a local relay).
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<crate::SecretSource>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// A PEM file of extra CA certificates to trust (a private SMTP or webhook CA).
    pub ca_file: Option<PathBuf>,
    /// Time allowed for one delivery (default 30s).
    pub timeout: Option<Duration>,
}

/// Sync settings; every field is optional so that layers (defaults, file,
/// organization, command line) can be merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Time between syncs in `watch` (default 60s).
    pub interval: Option<Duration>,
    /// How far before the cursor each sync asks from (default 10m).
    pub overlap: Option<Duration>,
    /// Events per page to ask for (default 1000; the server may send fewer).
    pub page_size: Option<u32>,
    /// Requests per second at most, per organization (default 10; 0 for no limit).
    pub rate_limit: Option<u32>,
    /// Retries of one request before a sync fails (default 20).
    pub max_retries: Option<u32>,
    /// How long the API keeps events (default 14d): older cursors mean a gap.
    pub retention: Option<Duration>,
    /// Time allowed for one request (default 60s).
    pub timeout: Option<Duration>,
    /// The first retry delay, doubled each retry (default 500ms).
    pub retry_delay: Option<Duration>,
    /// How often a sync re-reads the whole reconcile window for late events
    /// (default 1h; "0" never).
    pub reconcile_every: Option<Duration>,
    /// How far back that sync reads (default 24h).
    pub reconcile_window: Option<Duration>,
    /// The largest page body read (default 64MiB); a larger one fails the sync.
    pub max_page_bytes: Option<crate::ByteSize>,
    /// The most pages one sync reads (default 100000).
    pub max_pages: Option<u64>,
}

/// One organization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSection {
    /// The name tfaudit knows it by (in status, `--org`); letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Default `https://app.terraform.io`.
    pub address: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub token_env: Option<String>,
    /// Overrides of `[sync]` for this organization.
    pub sync: Option<SyncSection>,
    /// An organization token (audit trail tokens read only the audit trail) that reads
    /// the organization's workspaces, teams, members… for names: `"value"`,
    /// `{ env = "NAME" }` or `{ file = "path" }`. None: names come only from events.
    pub enrich_token: Option<crate::SecretSource>,
    /// How often the listings are read again (default 1h, at least 1m).
    pub enrich_every: Option<Duration>,
    /// The organization's name in HCP Terraform, when `name` is not it.
    pub enrich_organization: Option<String>,
}

/// Sync settings after merging and checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    pub interval: std::time::Duration,
    pub overlap: std::time::Duration,
    pub page_size: u32,
    pub rate_limit: Option<NonZeroU32>,
    pub max_retries: u32,
    pub retention: std::time::Duration,
    pub timeout: std::time::Duration,
    pub retry_delay: std::time::Duration,
    pub reconcile_every: std::time::Duration,
    pub reconcile_window: std::time::Duration,
    pub max_page_bytes: u64,
    pub max_pages: u64,
}

/// A page of one small event is a few hundred bytes; below this no real page fits.
const MIN_PAGE_BYTES: u64 = 1024;

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config {path}: {cause}; check --config / TFAUDIT_CONFIG")]
    Unreadable { path: PathBuf, cause: String },
    #[error("{path}:{line}: {message}")]
    Invalid { path: PathBuf, line: usize, message: String },
    #[error("{context}: {message}")]
    Setting { context: String, message: String },
}

impl SyncSection {
    /// The first value set, in `layers` order (most specific first), for each field.
    #[must_use]
    pub fn merge(layers: &[&SyncSection]) -> SyncSection {
        macro_rules! first {
            ($f:ident) => {
                layers.iter().find_map(|l| l.$f)
            };
        }
        SyncSection {
            interval: first!(interval),
            overlap: first!(overlap),
            page_size: first!(page_size),
            rate_limit: first!(rate_limit),
            max_retries: first!(max_retries),
            retention: first!(retention),
            timeout: first!(timeout),
            retry_delay: first!(retry_delay),
            reconcile_every: first!(reconcile_every),
            reconcile_window: first!(reconcile_window),
            max_page_bytes: first!(max_page_bytes),
            max_pages: first!(max_pages),
        }
    }

    /// Fills in defaults and checks values; `context` names where they came from.
    ///
    /// # Errors
    /// [`ConfigError::Setting`] naming the setting and the accepted range.
    pub fn resolve(&self, context: &str) -> Result<SyncSettings, ConfigError> {
        let bad = |message: String| ConfigError::Setting { context: context.to_owned(), message };
        let secs = std::time::Duration::from_secs;
        let s = SyncSettings {
            interval: self.interval.map_or(secs(60), |d| d.0),
            overlap: self.overlap.map_or(secs(600), |d| d.0),
            page_size: self.page_size.unwrap_or(1000),
            rate_limit: NonZeroU32::new(self.rate_limit.unwrap_or(10)),
            max_retries: self.max_retries.unwrap_or(20),
            retention: self.retention.map_or(secs(14 * 86_400), |d| d.0),
            timeout: self.timeout.map_or(secs(60), |d| d.0),
            retry_delay: self.retry_delay.map_or(std::time::Duration::from_millis(500), |d| d.0),
            reconcile_every: self.reconcile_every.map_or(secs(3600), |d| d.0),
            reconcile_window: self.reconcile_window.map_or(secs(86_400), |d| d.0),
            max_page_bytes: self.max_page_bytes.map_or(tfaudit_api::body::DEFAULT_PAGE_CAP, |b| b.0),
            max_pages: self.max_pages.unwrap_or(tfaudit_api::DEFAULT_MAX_PAGES),
        };
        if s.interval < secs(1) {
            return Err(bad("interval must be at least 1s".into()));
        }
        if s.overlap < secs(1) {
            return Err(bad(
                "overlap must be at least 1s: timestamps have whole-second precision, so a sync must re-read the cursor's second"
                    .into(),
            ));
        }
        if !(1..=10_000).contains(&s.page_size) {
            return Err(bad(format!("page_size must be between 1 and 10000 (got {})", s.page_size)));
        }
        if s.retention < secs(3600) {
            return Err(bad("retention must be at least 1h (HCP Terraform keeps 14d)".into()));
        }
        if s.timeout < secs(1) {
            return Err(bad("timeout must be at least 1s".into()));
        }
        if !s.reconcile_every.is_zero() && s.reconcile_window < s.overlap {
            return Err(bad("reconcile_window must be at least the overlap".into()));
        }
        if s.retry_delay.is_zero() {
            return Err(bad("retry_delay must be more than 0".into()));
        }
        if s.max_page_bytes < MIN_PAGE_BYTES {
            return Err(bad(format!(
                "max_page_bytes must be at least {} (got {})",
                crate::ByteSize(MIN_PAGE_BYTES),
                crate::ByteSize(s.max_page_bytes)
            )));
        }
        if s.max_pages == 0 {
            return Err(bad("max_pages must be at least 1".into()));
        }
        Ok(s)
    }
}

/// serde's "invalid type: string \"…\", expected a map" quotes the value it did not
/// expect, and a value in the wrong place may be a secret (a header value, a URL): the
/// line and the expected type are enough to fix it.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(at) = rest.rfind(", expected ")
        {
            let (unexpected, expected) = rest.split_at(at);
            let kind = unexpected.split([' ']).take_while(|w| !w.starts_with(['"', '`', '\''])).collect::<Vec<_>>();
            return format!("{prefix}{}{expected}", kind.join(" "));
        }
    }
    message.to_owned()
}

impl ConfigFile {
    /// Registers every secret written inline in the file, so that no error or log line
    /// shows one.
    fn register_secrets(&self) {
        for d in &self.destinations {
            for s in [&d.url, &d.routing_key, &d.secret, &d.password].into_iter().flatten() {
                s.register_inline();
            }
            d.headers.values().for_each(crate::SecretSource::register_inline);
        }
        let archive = &self.archive;
        for s in [&self.serve.access_token, &self.db_password, &archive.access_key_id, &archive.secret_access_key]
            .into_iter()
            .chain([&archive.session_token])
            .flatten()
        {
            s.register_inline();
        }
        for o in &self.organizations {
            if let Some(s) = &o.enrich_token {
                s.register_inline();
            }
        }
        for k in &self.sinks {
            for s in [&k.url, &k.secret].into_iter().flatten() {
                s.register_inline();
            }
            k.headers.values().for_each(crate::SecretSource::register_inline);
        }
    }

    /// Reads and checks a config file.
    ///
    /// # Errors
    /// [`ConfigError`] with the file, the line and what is wrong.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Unreadable { path: path.to_owned(), cause: e.to_string() })?;
        Self::parse(path, &text)
    }

    /// Parses and checks config text; `path` is only for messages.
    ///
    /// # Errors
    /// [`ConfigError`] with the file, the line and what is wrong.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: Self = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = without_values(e.message().trim()).replace('\n', " ");
            ConfigError::Invalid { path: path.to_owned(), line, message }
        })?;
        file.register_secrets();
        let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map_or(1, |i| i + 1);
        let invalid = |needle: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(needle),
            message,
        };
        let mut seen = std::collections::BTreeSet::new();
        for org in &file.organizations {
            let name = &org.name;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                return Err(invalid(
                    &format!("{name:?}"),
                    format!("organization name {name:?} must be letters, digits, '.', '_' or '-'"),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(invalid(
                    &format!("{name:?}"),
                    format!("organization {name:?} appears twice; names must be unique"),
                ));
            }
            if org.token_file.is_some() && org.token_env.is_some() {
                return Err(invalid(
                    "token_env",
                    format!("organization {name:?} sets both token_file and token_env; keep one"),
                ));
            }
            if org.enrich_every.is_some_and(|d| d.0 < std::time::Duration::from_secs(60)) {
                return Err(invalid(
                    "enrich_every",
                    format!("organization {name:?}: enrich_every must be at least 1m (such as \"1h\")"),
                ));
            }
            if (org.enrich_every.is_some() || org.enrich_organization.is_some()) && org.enrich_token.is_none() {
                return Err(invalid(
                    "enrich_",
                    format!(
                        "organization {name:?} sets enrich_every or enrich_organization without enrich_token; add the organization token that reads its listings"
                    ),
                ));
            }
            let context = format!("{}: organization {name:?}", path.display());
            SyncSection::merge(&[org.sync.as_ref().unwrap_or(&SyncSection::default()), &file.sync])
                .resolve(&context)?;
        }
        file.sync.resolve(&format!("{}: [sync]", path.display()))?;
        let mut names = std::collections::BTreeSet::new();
        for d in &file.destinations {
            let name = &d.name;
            let at = format!("{name:?}");
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                return Err(invalid(
                    &at,
                    format!("destination name {name:?} must be letters, digits, '.', '_' or '-'"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(&at, format!("destination {name:?} appears twice; names must be unique")));
            }
            let need = |field: &str, present: bool| {
                if present {
                    Ok(())
                } else {
                    Err(invalid(&at, format!("destination {name:?} ({:?}) needs {field}", d.kind)))
                }
            };
            match d.kind {
                DestinationKind::Slack | DestinationKind::Webhook => need("url", d.url.is_some())?,
                DestinationKind::Pagerduty => need("routing_key", d.routing_key.is_some())?,
                DestinationKind::Email => {
                    need("server", d.server.is_some())?;
                    need("from", d.from.is_some())?;
                    need("to (a list of addresses)", !d.to.is_empty())?;
                    if let Some(tls) = &d.tls
                        && !matches!(tls.as_str(), "starttls" | "tls" | "none")
                    {
                        return Err(invalid("tls", format!("destination {name:?}: tls must be starttls, tls or none")));
                    }
                }
                DestinationKind::Log | DestinationKind::Stdout => {}
            }
            if let Some(sev) = &d.min_severity
                && !matches!(sev.as_str(), "info" | "low" | "medium" | "high" | "critical")
            {
                return Err(invalid(
                    "min_severity",
                    format!("destination {name:?}: min_severity must be info, low, medium, high or critical"),
                ));
            }
        }
        check_reports(&file, &invalid)?;
        if let Some(defaults) = &file.alerts.destinations {
            for d in defaults {
                if !names.contains(d) && d != "log" {
                    return Err(invalid(
                        "destinations",
                        format!("[alerts] destinations names {d:?}, which no [[destination]] defines"),
                    ));
                }
            }
        }
        if let Some(tz) = &file.alerts.timezone
            && jiff::tz::TimeZone::get(tz).is_err()
        {
            return Err(invalid(
                "timezone",
                format!("unknown time zone {tz:?}; use an IANA name such as Europe/Berlin or UTC"),
            ));
        }
        if let Some(url) = &file.serve.public_url {
            let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| {
                r.is_empty()
                    || r.contains(|c: char| {
                        c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>' | '?' | '#')
                    })
            }) {
                return Err(invalid(
                    "public_url",
                    "[serve] public_url must be the dashboard's http:// or https:// address, such as https://tfaudit.example.com (no query or fragment)".to_owned(),
                ));
            }
        }
        check_sinks(&file.sinks, path, text)?;
        if let Some(name) = &file.integrity.checkpoint_sink
            && !file.sinks.iter().any(|k| &k.name == name)
        {
            let fix = if file.sinks.is_empty() {
                format!("add a [[sink]] named {name:?}")
            } else {
                let names = file.sinks.iter().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ");
                format!("name one of: {names}")
            };
            return Err(invalid(
                "checkpoint_sink",
                format!("[integrity] checkpoint_sink names {name:?}, which no [[sink]] defines; {fix}"),
            ));
        }
        Ok(file)
    }
}

/// `[[report]]` tables: names usable in file names and unique, known periods and
/// formats, somewhere to go, and `send_to` naming email destinations.
fn check_reports(file: &ConfigFile, invalid: &dyn Fn(&str, String) -> ConfigError) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for r in &file.reports {
        let name = &r.name;
        let at = format!("{name:?}");
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || name.starts_with('.')
        {
            return Err(invalid(
                &at,
                format!(
                    "report name {name:?} must be letters, digits, '.', '_' or '-' (it names the report's files), not starting with '.'"
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(&at, format!("report {name:?} appears twice; names must be unique")));
        }
        if !matches!(r.period.as_str(), "weekly" | "monthly") {
            return Err(invalid(
                &format!("{:?}", r.period),
                format!("report {name:?}: period must be \"weekly\" (ISO weeks, Monday to Sunday) or \"monthly\""),
            ));
        }
        if let Some(f) = &r.format
            && !matches!(f.as_str(), "html" | "md" | "json")
        {
            return Err(invalid(
                &format!("{f:?}"),
                format!("report {name:?}: format must be \"html\", \"md\" or \"json\""),
            ));
        }
        if r.send_to.is_empty() && r.write_to.is_none() {
            return Err(invalid(
                &at,
                format!(
                    "report {name:?} goes nowhere: add send_to = [\"<email destination>\"] or write_to = \"/a/directory\""
                ),
            ));
        }
        if r.write_to.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err(invalid("write_to", format!("report {name:?}: write_to must name a directory")));
        }
        if r.org.as_ref().is_some_and(|o| o.trim().is_empty()) {
            return Err(invalid(
                "org",
                format!("report {name:?}: org must be a name or glob (or leave it out for all)"),
            ));
        }
        for to in &r.send_to {
            match file.destinations.iter().find(|d| &d.name == to) {
                None => {
                    return Err(invalid(
                        "send_to",
                        format!("report {name:?}: send_to names {to:?}, which no [[destination]] defines"),
                    ));
                }
                Some(d) if d.kind != DestinationKind::Email => {
                    return Err(invalid(
                        "send_to",
                        format!(
                            "report {name:?}: send_to names {to:?}, a {} destination; reports go to destinations of type \"email\"",
                            serde_json::to_value(d.kind)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Names, kinds' own keys and common values of `[[sink]]` tables; each kind's own
/// values are checked again by its module in `tfaudit-forward`.
fn check_sinks(sinks: &[SinkSection], path: &Path, text: &str) -> Result<(), ConfigError> {
    let invalid = |line: usize, message: String| ConfigError::Invalid { path: path.to_owned(), line, message };
    let mut names = std::collections::BTreeSet::new();
    // The line of a key inside the n-th `[[sink]]` table: a table's keys follow its header.
    let table_starts: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| l.trim_start().starts_with("[[sink]]")).map(|(i, _)| i).collect();
    let key_in = |index: usize, key: &str| -> usize {
        let from = table_starts.get(index).copied().unwrap_or(0);
        text.lines()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
            .map_or(from + 1, |(i, _)| i + 1)
    };
    for (index, k) in sinks.iter().enumerate() {
        let name = &k.name;
        let at = |key: &str| key_in(index, key);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(invalid(at("name"), format!("sink name {name:?} must be letters, digits, '.', '_' or '-'")));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(at("name"), format!("sink {name:?} appears twice; names must be unique")));
        }
        let kind = k.kind.as_str();
        for key in k.own_keys_set() {
            if !k.kind.own_keys().contains(&key) {
                return Err(invalid(
                    at(key),
                    format!(
                        "sink {name:?} ({kind}) has no key {key}; its own keys are: {}",
                        k.kind.own_keys().join(", ")
                    ),
                ));
            }
        }
        if let Some(format) = &k.format
            && !SINK_FORMATS.contains(&format.as_str())
        {
            return Err(invalid(
                at("format"),
                format!("sink {name:?}: format {format:?} is not known; the formats are: {}", SINK_FORMATS.join(", ")),
            ));
        }
        if k.rate_limit == Some(0) {
            return Err(invalid(
                at("rate_limit"),
                format!("sink {name:?}: rate_limit (events per second) must be at least 1"),
            ));
        }
        if let Some(start) = &k.start
            && !matches!(start.as_str(), "beginning" | "now")
            && start.parse::<jiff::Timestamp>().is_err()
        {
            return Err(invalid(
                at("start"),
                format!(
                    "sink {name:?}: start must be \"beginning\", \"now\" or an RFC 3339 time such as 2026-01-01T00:00:00Z"
                ),
            ));
        }
        if k.batch_events == Some(0) {
            return Err(invalid(at("batch_events"), format!("sink {name:?}: batch_events must be at least 1")));
        }
        if k.batch_bytes.is_some_and(|b| b.0 < 1024) {
            return Err(invalid(at("batch_bytes"), format!("sink {name:?}: batch_bytes must be at least 1KiB")));
        }
        if k.retry_delay.is_some_and(|d| d.0.is_zero()) {
            return Err(invalid(at("retry_delay"), format!("sink {name:?}: retry_delay must be more than 0")));
        }
        let set = k.own_keys_set();
        if let Some(key) = k.kind.needed_keys().iter().find(|key| !set.contains(key)) {
            return Err(invalid(at("type"), format!("sink {name:?} ({kind}) needs {key}")));
        }
        if k.kind == SinkKind::File && k.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(invalid(at("path"), format!("sink {name:?} (file) needs a path")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn a_database_password_in_db_is_never_shown() {
        let f = parse("db = \"postgres://audit:CFGDBPW-1@db.example.test/audit\"\n").unwrap();
        let shown = format!("{f:?}");
        assert!(!shown.contains("CFGDBPW") && shown.contains("postgres://audit:***@db.example.test/audit"), "{shown}");
        let f = parse("db = \"data/archive.db\"\n").unwrap();
        assert!(format!("{f:?}").contains("ArchiveLocation(\"data/archive.db\")"));
    }

    #[test]
    fn a_full_file() {
        let f = parse(
            r#"
db = "/tmp/a.db"
[sync]
interval = "2m"
rate_limit = 5

[[organization]]
name = "acme"
token_file = "/etc/acme.token"

[[organization]]
name = "beta-corp"
address = "https://app.eu.terraform.io"
token_env = "BETA_TOKEN"
[organization.sync]
interval = "5m"
"#,
        )
        .unwrap();
        assert_eq!(f.organizations.len(), 2);
        let beta = &f.organizations[1];
        let s = SyncSection::merge(&[beta.sync.as_ref().unwrap(), &f.sync]).resolve("x").unwrap();
        assert_eq!(s.interval.as_secs(), 300);
        assert_eq!(s.rate_limit.unwrap().get(), 5);
        assert_eq!(s.overlap.as_secs(), 600);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let e = parse("[sync]\ninterval = \"1m\"\nintervall = \"2m\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:3:") && e.contains("intervall"), "{e}");
        let e = parse("[[organization]]\nname = \"a\"\ntoken = \"x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:3:") && e.contains("token"), "{e}");
    }

    #[test]
    fn reports_are_checked_with_their_line() {
        let mail = "[[destination]]\nname = \"mail\"\ntype = \"email\"\nserver = \"smtp:587\"\nfrom = \"a@x\"\nto = [\"b@x\"]\n[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"https://x\"\n";
        let ok = parse(&format!(
            "{mail}[[report]]\nname = \"audit\"\nperiod = \"monthly\"\nsend_to = [\"mail\"]\nwrite_to = \"/srv/reports\"\n[[report]]\nname = \"weekly-acme\"\nperiod = \"weekly\"\nformat = \"md\"\norg = \"acme*\"\nwrite_to = \"/srv\"\n"
        ))
        .unwrap();
        assert_eq!(ok.reports.len(), 2);
        assert_eq!(ok.reports[1].format.as_deref(), Some("md"));
        for (text, line, words) in [
            ("[[report]]\nname = \"a\"\nperiod = \"yearly\"\nwrite_to = \"/r\"\n", 13, "period must be"),
            (
                "[[report]]\nname = \"a\"\nperiod = \"weekly\"\nformat = \"pdf\"\nwrite_to = \"/r\"\n",
                14,
                "format must be",
            ),
            ("[[report]]\nname = \"a\"\nperiod = \"weekly\"\n", 12, "goes nowhere"),
            (
                "[[report]]\nname = \"a\"\nperiod = \"weekly\"\nsend_to = [\"nope\"]\n",
                14,
                "which no [[destination]] defines",
            ),
            (
                "[[report]]\nname = \"a\"\nperiod = \"weekly\"\nsend_to = [\"hook\"]\n",
                14,
                "destinations of type \"email\"",
            ),
            ("[[report]]\nname = \"../x\"\nperiod = \"weekly\"\nwrite_to = \"/r\"\n", 12, "report name"),
            (
                "[[report]]\nname = \"a\"\nperiod = \"weekly\"\nwrite_to = \"/r\"\n[[report]]\nname = \"a\"\nperiod = \"weekly\"\nwrite_to = \"/r\"\n",
                12,
                "appears twice",
            ),
            (
                "[[report]]\nname = \"a\"\nperiod = \"weekly\"\nwrite_to = \"/r\"\nsend = [\"mail\"]\n",
                15,
                "unknown field `send`",
            ),
        ] {
            let e = parse(&format!("{mail}{text}")).unwrap_err().to_string();
            assert!(e.contains(words) && e.contains(&format!("t.toml:{line}:")) && !e.contains('\n'), "{text}: {e}");
        }
    }

    #[test]
    fn destinations_are_checked_with_their_line() {
        let ok = parse(
            "[alerts]\ndestinations = [\"slack\"]\n[[destination]]\nname = \"slack\"\ntype = \"slack\"\nurl = { env = \"SLACK_URL\" }\n\n[[destination]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = { file = \"/k\" }\nmin_severity = \"critical\"\n",
        )
        .unwrap();
        assert_eq!(ok.destinations.len(), 2);
        let e = parse("[[destination]]\nname = \"mail\"\ntype = \"email\"\nserver = \"smtp:587\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:2:") && e.contains("needs from"), "{e}");
        let e = parse("[[destination]]\nname = \"x\"\ntype = \"fax\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:3:") && e.contains("fax"), "{e}");
        let e = parse("[alerts]\ndestinations = [\"nowhere\"]\n").unwrap_err().to_string();
        assert!(e.contains("nowhere") && e.starts_with("t.toml:2:"), "{e}");
        let e = parse("[serve]\npublic_url = \"ftp://x\"\n").unwrap_err().to_string();
        assert!(e.contains("public_url must be") && e.starts_with("t.toml:2:"), "{e}");
        assert!(parse("[serve]\npublic_url = \"https://tfaudit.example.com/base/\"\n").is_ok());
        let e = parse("[alerts]\ntimezone = \"Mars/Base\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown time zone"), "{e}");
        let e = parse(
            "[[destination]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://x\"\nmin_severity = \"urgent\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("min_severity"), "{e}");
    }

    #[test]
    fn type_errors_in_the_config_never_quote_the_value() {
        for (text, line) in [
            (
                "[[destination]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://x\"\nheaders = \"X-Key HDRLEAK-1\"\n",
                5,
            ),
            (
                "[[destination]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://x\"\nheaders = { \"X-Key\" = [\"HDRLEAK-2\"] }\n",
                5,
            ),
            ("[serve]\naccess_token = [\"HDRLEAK-3\"]\n", 2),
            ("[[destination]]\nname = \"w\"\ntype = \"slack\"\nurl = 5\nusername = [\"HDRLEAK-4\"]\n", 4),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(&format!("t.toml:{line}:")) && !e.contains("HDRLEAK"), "{text}: {e}");
        }
        assert_eq!(
            without_values("invalid type: string \"a, b\", expected a map"),
            "invalid type: string, expected a map"
        );
        assert_eq!(without_values("invalid value: integer `-3`, expected u32"), "invalid value: integer, expected u32");
    }

    #[test]
    fn inline_secrets_and_header_values_are_registered() {
        parse(
            "[[destination]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://x.test/hook/REGISTERED-URL-1\"\nheaders = { \"X-Key\" = \"REGISTERED-HDR-1\", \"X-Env\" = { env = \"SOME_VAR\" } }\n",
        )
        .unwrap();
        let shown = tfaudit_api::redact::redact("a REGISTERED-HDR-1 b https://x.test/hook/REGISTERED-URL-1");
        assert_eq!(shown, "a <redacted> b <redacted>");
    }

    #[test]
    fn sinks_are_checked_with_their_line() {
        let ok = parse(
            "[[sink]]\nname = \"archive\"\ntype = \"file\"\npath = \"/var/log/tfaudit/%Y-%m-%d.jsonl\"\n\n[[sink]]\nname = \"siem\"\ntype = \"http\"\nurl = { env = \"SIEM_URL\" }\ngzip = true\nstart = \"2026-01-01T00:00:00Z\"\nbatch_bytes = \"2MiB\"\n",
        )
        .unwrap();
        assert_eq!(ok.sinks.len(), 2);
        assert_eq!(ok.sinks[1].batch_bytes.unwrap().0, 2 << 20);
        for (text, line, what) in [
            ("[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\nbatch_event = 5\n", 5, "batch_event"),
            ("[[sink]]\nname = \"a\"\ntype = \"splunk\"\n", 3, "splunk"),
            (
                "[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\nformat = \"cef\"\n",
                5,
                "the formats are: raw, ocsf, ecs",
            ),
            ("[[sink]]\nname = \"a\"\ntype = \"syslog\"\naddress = \"h:6514\"\nindex = \"x\"\n", 5, "has no key index"),
            ("[[sink]]\nname = \"a\"\ntype = \"splunk_hec\"\nurl = \"https://h:8088\"\n", 3, "needs token"),
            ("[[sink]]\nname = \"a\"\ntype = \"nats\"\nsubject = \"x\"\nrate_limit = 0\n", 5, "rate_limit"),
            ("[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\ngzip = true\n", 5, "has no key gzip"),
            ("[[sink]]\nname = \"a\"\ntype = \"http\"\n", 3, "needs url"),
            ("[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\nstart = \"yesterday\"\n", 5, "start must be"),
            (
                "[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/x\"\n[[sink]]\nname = \"a\"\ntype = \"file\"\npath = \"/y\"\n",
                6,
                "appears twice",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(&format!("t.toml:{line}:")) && e.contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn the_checkpoint_sink_is_a_configured_sink() {
        let sink = "[[sink]]\nname = \"siem\"\ntype = \"file\"\npath = \"/x\"\n";
        let ok = parse(&format!("[integrity]\ncheckpoint_sink = \"siem\"\n{sink}")).unwrap();
        assert_eq!(ok.integrity.checkpoint_sink.as_deref(), Some("siem"));
        let e = parse(&format!("[integrity]\ncheckpoint_sink = \"seim\"\n{sink}")).unwrap_err().to_string();
        assert_eq!(
            e,
            "t.toml:2: [integrity] checkpoint_sink names \"seim\", which no [[sink]] defines; name one of: siem"
        );
        let e = parse("[integrity]\ncheckpoint_sink = \"siem\"\n").unwrap_err().to_string();
        assert!(e.ends_with("add a [[sink]] named \"siem\""), "{e}");
    }

    #[test]
    fn the_archive_section_takes_s3_settings_and_secrets() {
        let f = parse(
            "[archive]\nlocation = \"s3://audit/tfaudit\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nregion = \"eu-west-1\"\naccess_key_id = { env = \"KEY_ID\" }\nsecret_access_key = \"ARCHIVE-INLINE-SECRET-1\"\n",
        )
        .unwrap();
        assert_eq!(f.archive.location.as_deref(), Some("s3://audit/tfaudit"));
        assert_eq!(f.archive.allow_http, Some(true));
        assert!(!format!("{f:?}").contains("ARCHIVE-INLINE-SECRET-1"));
        assert_eq!(tfaudit_api::redact::redact("x ARCHIVE-INLINE-SECRET-1"), "x <redacted>");
        let e = parse("[archive]\nlocation = \"/x\"\nbucket = \"b\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:3:") && e.contains("bucket"), "{e}");
    }

    #[test]
    fn page_bounds_are_settings() {
        let s = parse("[sync]\nmax_page_bytes = \"8MiB\"\nmax_pages = 50\n").unwrap().sync.resolve("x").unwrap();
        assert_eq!((s.max_page_bytes, s.max_pages), (8 << 20, 50));
        let s = SyncSection::default().resolve("x").unwrap();
        assert_eq!((s.max_page_bytes, s.max_pages), (64 << 20, 100_000));
        let e = parse("[sync]\nmax_page_bytes = 10\n").unwrap_err().to_string();
        assert!(e.contains("max_page_bytes must be at least 1KiB"), "{e}");
        let e = parse("[sync]\nmax_pages = 0\n").unwrap_err().to_string();
        assert!(e.contains("max_pages must be at least 1"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("[sync]\ninterval = \"soon\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2:") && e.contains("not a duration"), "{e}");
        let e = parse("[sync]\noverlap = \"0s\"\n").unwrap_err().to_string();
        assert!(e.contains("overlap must be at least 1s"), "{e}");
        let e = parse("[[organization]]\nname = \"a\"\n[[organization]]\nname = \"a\"\n").unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        let e = parse("[[organization]]\nname = \"a b\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2:"), "{e}");
        let e = parse("[[organization]]\nname = \"a\"\n[organization.sync]\npage_size = 0\n").unwrap_err().to_string();
        assert!(e.contains("page_size"), "{e}");
    }
}
