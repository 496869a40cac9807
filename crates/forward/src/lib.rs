//! `tfaudit forward`: every archived event delivered to where the security team
//! already looks. Each sink is a *named consumer* of the archive (`sink:<name>`): a
//! durable cursor over the ingest sequence that moves only after the target
//! acknowledged a batch, so a crash or an outage can repeat a batch but never skip one.
//!
//! Each kind of target is a module with its own settings, checked when the sink is
//! built: [`file`], [`http`], [`splunk`] (Splunk's HTTP Event Collector),
//! [`elasticsearch`], [`datadog`] (Datadog's Logs API), [`syslog`] and [`nats`].

pub mod datadog;
pub mod elasticsearch;
#[cfg(test)]
mod es_receiver;
pub mod file;
pub mod format;
pub mod http;
pub mod nats;
#[cfg(test)]
mod nats_server;
pub mod runner;
pub mod splunk;
pub mod syslog;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tfaudit_config::{SinkKind, SinkSection};

pub use format::Format;

pub use runner::{
    ForwardError, Hooks, Outcome, RetryOutcome, SinkState, Tally, consumer_name, retry_dead, run_sink, run_sink_with,
};

/// One archived event as a sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    /// The event's id, as HCP Terraform gave it: targets that drop repeats key on it.
    pub id: String,
    pub timestamp: Timestamp,
    /// The event in the sink's format (the original JSON for `raw`), on one line.
    pub line: String,
}

impl Event {
    /// The event as `format` writes it.
    #[must_use]
    pub fn new(stored: &tfaudit_model::StoredEvent, format: Format) -> Self {
        Self {
            seq: stored.seq,
            id: stored.event.id.clone(),
            timestamp: stored.event.timestamp,
            line: format::render(format, &stored.event),
        }
    }

    /// An event whose line is `json` (made one line), as tests build them.
    #[must_use]
    pub fn from_json(seq: i64, id: &str, timestamp: Timestamp, json: &str) -> Self {
        Self { seq, id: id.to_owned(), timestamp, line: format::one_line(json).into_owned() }
    }
}

/// Events sent together, in `seq` order.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The sink's name.
    pub sink: String,
    pub events: Vec<Event>,
    /// A key of the batch's own, for a record that is not an archived event (a
    /// checkpoint): its `seq` is no event's, so a key made of it could repeat another's.
    pub key: Option<String>,
}

impl Batch {
    /// Archived events for the sink `sink`.
    #[must_use]
    pub fn new(sink: &str, events: Vec<Event>) -> Self {
        Self { sink: sink.to_owned(), events, key: None }
    }

    /// The same for the same sink and the same events, so that a batch sent again
    /// after a crash or a timeout can be recognised by the receiver.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        if let Some(key) = &self.key {
            return key.clone();
        }
        let first = self.events.first().map_or(0, |e| e.seq);
        let last = self.events.last().map_or(0, |e| e.seq);
        format!("tfaudit-{}-{first}-{last}", self.sink)
    }

    /// A checkpoint of the archive as one record for the sink `sink`: a JSON object
    /// whose `message` is the checkpoint's signed-note text, exactly as the archive
    /// keeps it, with what the note says beside it for searching. Its id and key are
    /// `tfaudit-checkpoint-<size>-<hash of the note>`: the same note sent again (a
    /// retry, or the hourly checkpoint of an unchanged tree) is recognised by the
    /// targets that drop repeats, and a different note (another origin or key) is not.
    #[must_use]
    pub fn checkpoint(sink: &str, checkpoint: &tfaudit_store::Checkpoint) -> Self {
        let hash = tfaudit_store::merkle::leaf_hash(checkpoint.note.as_bytes());
        let short: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("tfaudit-checkpoint-{}-{short}", checkpoint.size);
        let record = CheckpointRecord {
            kind: "tfaudit.checkpoint",
            origin: checkpoint.note.lines().next().unwrap_or_default(),
            size: checkpoint.size,
            root: checkpoint.root.iter().map(|b| format!("{b:02x}")).collect(),
            signed_by: checkpoint.signed_by.as_deref(),
            made_at: checkpoint.made_at,
            message: &checkpoint.note,
        };
        let event = Event {
            seq: i64::try_from(checkpoint.size).unwrap_or(i64::MAX),
            id: key.clone(),
            timestamp: checkpoint.made_at,
            line: serde_json::to_string(&record).expect("plain fields serialize"),
        };
        Self { sink: sink.to_owned(), events: vec![event], key: Some(key) }
    }
}

/// A checkpoint as a sink receives it (see [`Batch::checkpoint`]).
#[derive(serde::Serialize)]
struct CheckpointRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    origin: &'a str,
    size: u64,
    /// In hex, as `tfaudit checkpoint --json` shows it.
    root: String,
    signed_by: Option<&'a str>,
    made_at: Timestamp,
    message: &'a str,
}

/// What a target did with a batch it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Events it refused as invalid, by `seq`, with its reason: they become dead
    /// letters and the rest of the batch counts as delivered.
    pub rejected: Vec<(i64, String)>,
    /// Events that were not sent because the target cannot take them (Datadog's
    /// 18 hours), by `seq`: counted as skipped.
    pub skipped: Vec<i64>,
}

impl Delivered {
    /// Every event of the batch taken.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }
}

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth sending again (a timeout, a reset, 5xx, 429), after `after` when the
    /// target said.
    Retry { error: String, after: Option<Duration> },
    /// The target refused the batch as a whole as invalid content (HEC's codes 5,
    /// 6, 12, 13, a 400 or 413): the runner splits it to find the offending events
    /// and sends the rest.
    Invalid { error: String },
    /// The target refused for a reason that is not in the events (credentials, the
    /// address): the sink stops until the cause is fixed, its cursor before the batch.
    Refused { error: String },
}

impl SendError {
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Retry { error, .. } | Self::Invalid { error } | Self::Refused { error } => error,
        }
    }
}

/// A future a sink returns.
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A target of forwarded events.
pub trait Sink: Send + Sync {
    /// Delivers `batch`; `Ok` only once the target holds every event it took
    /// (written and synced, or acknowledged).
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>>;

    /// Whether the target can be reached and written to, in a sentence when not.
    fn health(&self) -> SinkFuture<'_, Result<(), String>>;
}

/// Where a new sink starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The whole archive.
    Beginning,
    /// Only events archived from its first run on.
    Now,
    /// Only events stamped at or after this time.
    Time(Timestamp),
}

/// A sink's settings common to every kind.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub name: String,
    pub kind: SinkKind,
    pub format: Format,
    pub start: Start,
    pub batch_events: u64,
    pub batch_bytes: u64,
    pub batch_wait: Duration,
    pub retry_delay: Duration,
    /// Events per second at most.
    pub rate_limit: Option<u64>,
}

/// A configured sink, checked and ready.
#[derive(Clone)]
pub struct Configured {
    pub settings: SinkSettings,
    pub sink: Arc<dyn Sink>,
}

impl std::fmt::Debug for Configured {
    // The sink itself may hold secrets: only its settings are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configured").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// How a sink proves who it is: a secret of the target's own kind (Elasticsearch's
/// API key, a NATS token), a user name and password, or nothing (a local target).
#[derive(Debug)]
pub enum Credentials {
    None,
    Secret(tfaudit_model::Secret),
    Basic { username: String, password: tfaudit_model::Secret },
}

/// The credentials a `[[sink]]` table sets: `secret` (named `key` in the config) or
/// `username` and `password`, never both.
///
/// # Errors
/// Both kinds set, half a pair, or a secret that cannot be read.
pub(crate) fn credentials(
    section: &SinkSection,
    key: &str,
    secret: Option<&tfaudit_config::SecretSource>,
) -> Result<Credentials, String> {
    let name = &section.name;
    match (secret, &section.username, &section.password) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            Err(format!("sink {name:?}: set {key} or username and password, not both"))
        }
        (Some(s), None, None) => Ok(Credentials::Secret(s.resolve(&format!("sink {name}: {key}"))?)),
        (None, Some(username), Some(password)) => Ok(Credentials::Basic {
            username: username.clone(),
            password: password.resolve(&format!("sink {name}: password"))?,
        }),
        (None, Some(_), None) => Err(format!("sink {name:?}: username needs password")),
        (None, None, Some(_)) => Err(format!("sink {name:?}: password needs username")),
        (None, None, None) => Ok(Credentials::None),
    }
}

/// The time a sink allows one request or write (`timeout`, default 30s).
///
/// # Errors
/// A timeout under 100ms, which no target answers within.
pub(crate) fn timeout(section: &SinkSection) -> Result<Duration, String> {
    let timeout = section.timeout.map_or(Duration::from_secs(30), |d| d.0);
    if timeout < Duration::from_millis(100) {
        return Err(format!("sink {:?}: timeout must be at least 100ms", section.name));
    }
    Ok(timeout)
}

/// Builds a sink from its `[[sink]]` table; relative file paths are relative to
/// `base` (the config file's folder).
///
/// # Errors
/// What is wrong, naming the sink and the key; never a secret's value.
pub fn build(section: &SinkSection, base: &Path) -> Result<Configured, String> {
    let name = &section.name;
    let start = match section.start.as_deref() {
        // Datadog refuses events older than 18 hours: a new Datadog sink starts there
        // rather than counting the whole archive as skipped.
        None if section.kind == SinkKind::Datadog => Start::Time(Timestamp::now() - datadog::MAX_AGE),
        None | Some("beginning") => Start::Beginning,
        Some("now") => Start::Now,
        Some(t) => Start::Time(t.parse().map_err(|_| format!("sink {name:?}: start {t:?} is not an RFC 3339 time"))?),
    };
    let format = match section.format.as_deref() {
        None => Format::Raw,
        Some(f) => f.parse().map_err(|e| format!("sink {name:?}: {e}"))?,
    };
    let settings = SinkSettings {
        name: name.clone(),
        kind: section.kind,
        format,
        start,
        batch_events: section.batch_events.unwrap_or(500).max(1),
        batch_bytes: section.batch_bytes.map_or(1 << 20, |b| b.0),
        batch_wait: section.batch_wait.map_or(Duration::from_secs(1), |d| d.0),
        retry_delay: section.retry_delay.map_or(Duration::from_millis(500), |d| d.0),
        rate_limit: section.rate_limit,
    };
    let sink: Arc<dyn Sink> = match section.kind {
        SinkKind::File => Arc::new(file::FileSink::new(file::FileConfig::from_section(section, base)?)),
        SinkKind::Http => Arc::new(http::HttpSink::new(http::HttpConfig::from_section(section, base)?)?),
        SinkKind::Elasticsearch => Arc::new(
            elasticsearch::ElasticsearchSink::new(elasticsearch::ElasticsearchConfig::from_section(section, base)?)
                .map_err(|e| format!("sink {name:?}: {e}"))?,
        ),
        SinkKind::Nats => Arc::new(nats::NatsSink::new(nats::NatsConfig::from_section(section, base)?)),
        SinkKind::Syslog => Arc::new(syslog::SyslogSink::new(syslog::SyslogConfig::from_section(section, base)?)),
        SinkKind::SplunkHec => Arc::new(
            splunk::SplunkSink::new(splunk::SplunkConfig::from_section(section, base)?)
                .map_err(|e| format!("sink {name:?}: {e}"))?,
        ),
        SinkKind::Datadog => Arc::new(
            datadog::DatadogSink::new(datadog::DatadogConfig::from_section(section)?)
                .map_err(|e| format!("sink {name:?}: {e}"))?,
        ),
    };
    Ok(Configured { settings, sink })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(note: &str, signed_by: Option<&str>) -> tfaudit_store::Checkpoint {
        tfaudit_store::Checkpoint {
            id: 1,
            size: 42,
            root: [0xab; 32],
            note: note.to_owned(),
            signed_by: signed_by.map(str::to_owned),
            made_at: "2026-03-04T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_checkpoint_is_one_record_carrying_its_note() {
        let note = "tfaudit.test/archive\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\n\u{2014} k abc=\n";
        let batch = Batch::checkpoint("siem", &checkpoint(note, Some("k")));
        assert_eq!(batch.events.len(), 1);
        let line = &batch.events[0].line;
        assert!(!line.contains('\n'), "{line}");
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["type"], "tfaudit.checkpoint");
        assert_eq!(record["message"], note);
        assert_eq!(record["origin"], "tfaudit.test/archive");
        assert_eq!(record["size"], 42);
        assert_eq!(record["signed_by"], "k");
        assert_eq!(record["root"], "ab".repeat(32));
        assert_eq!(record["made_at"], "2026-03-04T10:00:00Z");
        let key = batch.idempotency_key();
        assert!(key.starts_with("tfaudit-checkpoint-42-") && key.len() == "tfaudit-checkpoint-42-".len() + 16, "{key}");
        assert_eq!(batch.events[0].id, key);
        // The same note: the same key, whoever sends it; another note: another key.
        assert_eq!(Batch::checkpoint("other", &checkpoint(note, Some("k"))).idempotency_key(), key);
        let unsigned = Batch::checkpoint("siem", &checkpoint("tfaudit.test/archive\n42\nq6s=\n", None));
        assert_ne!(unsigned.idempotency_key(), key);
        assert!(unsigned.events[0].line.contains("\"signed_by\":null"), "{}", unsigned.events[0].line);
        // Events keep their key of sink and seqs.
        assert_eq!(Batch::new("siem", Vec::new()).idempotency_key(), "tfaudit-siem-0-0");
    }
}
