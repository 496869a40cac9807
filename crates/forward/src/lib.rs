//! `tfaudit forward`: every archived event delivered to where the security team
//! already looks. Each sink is a *named consumer* of the archive (`sink:<name>`): a
//! durable cursor over the ingest sequence that moves only after the target
//! acknowledged a batch, so a crash or an outage can repeat a batch but never skip one.
//!
//! Each kind of target is a module with its own settings, checked when the sink is
//! built: [`file`] and [`http`].

pub mod file;
pub mod http;
pub mod runner;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tfaudit_config::{SinkKind, SinkSection};

pub use runner::{ForwardError, Hooks, Outcome, SinkState, Tally, consumer_name, run_sink, run_sink_with};

/// One archived event as a sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub timestamp: Timestamp,
    /// The event exactly as HCP Terraform sent it.
    pub raw: String,
}

impl Event {
    /// The event on one line: line breaks can only sit between JSON tokens (a string
    /// holds them escaped), so as spaces they change no value, and a JSON-lines
    /// reader gets one event per line whatever the server's layout.
    #[must_use]
    pub fn one_line(&self) -> std::borrow::Cow<'_, str> {
        if self.raw.contains(['\n', '\r']) {
            std::borrow::Cow::Owned(self.raw.replace(['\n', '\r'], " "))
        } else {
            std::borrow::Cow::Borrowed(&self.raw)
        }
    }
}

/// Events sent together, in `seq` order.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The sink's name.
    pub sink: String,
    pub events: Vec<Event>,
}

impl Batch {
    /// The same for the same sink and the same events, so that a batch sent again
    /// after a crash or a timeout can be recognised by the receiver.
    #[must_use]
    pub fn idempotency_key(&self) -> String {
        let first = self.events.first().map_or(0, |e| e.seq);
        let last = self.events.last().map_or(0, |e| e.seq);
        format!("tfaudit-{}-{first}-{last}", self.sink)
    }
}

/// Why a batch was not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth sending again (a timeout, a reset, 5xx, 429), after `after` when the
    /// target said.
    Retry { error: String, after: Option<Duration> },
    /// The target refused the batch, and would refuse it again.
    Refused { error: String },
}

impl SendError {
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Retry { error, .. } | Self::Refused { error } => error,
        }
    }
}

/// A future a sink returns.
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A target of forwarded events.
pub trait Sink: Send + Sync {
    /// Delivers `batch`; `Ok` only once the target holds it (written and synced, or
    /// acknowledged).
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<(), SendError>>;

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
    pub start: Start,
    pub batch_events: u64,
    pub batch_bytes: u64,
    pub batch_wait: Duration,
    pub retry_delay: Duration,
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

/// Builds a sink from its `[[sink]]` table; relative file paths are relative to
/// `base` (the config file's folder).
///
/// # Errors
/// What is wrong, naming the sink and the key; never a secret's value.
pub fn build(section: &SinkSection, base: &Path) -> Result<Configured, String> {
    let name = &section.name;
    let start = match section.start.as_deref() {
        None | Some("beginning") => Start::Beginning,
        Some("now") => Start::Now,
        Some(t) => Start::Time(t.parse().map_err(|_| format!("sink {name:?}: start {t:?} is not an RFC 3339 time"))?),
    };
    if let Some(format) = &section.format
        && format != "raw"
    {
        return Err(format!("sink {name:?}: format {format:?} is not available; the formats are: raw"));
    }
    let settings = SinkSettings {
        name: name.clone(),
        kind: section.kind,
        start,
        batch_events: section.batch_events.unwrap_or(500).max(1),
        batch_bytes: section.batch_bytes.map_or(1 << 20, |b| b.0),
        batch_wait: section.batch_wait.map_or(Duration::from_secs(1), |d| d.0),
        retry_delay: section.retry_delay.map_or(Duration::from_millis(500), |d| d.0),
    };
    let sink: Arc<dyn Sink> = match section.kind {
        SinkKind::File => Arc::new(file::FileSink::new(file::FileConfig::from_section(section, base)?)),
        SinkKind::Http => Arc::new(http::HttpSink::new(http::HttpConfig::from_section(section)?)?),
    };
    Ok(Configured { settings, sink })
}
