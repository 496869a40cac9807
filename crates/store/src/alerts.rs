//! What the archive keeps for its consumers: each one's named cursor over `seq` with
//! its state, and for the alert engine the alerts it raised (the outbox) and each
//! alert's delivery to each destination.

use jiff::Timestamp;
use serde::Serialize;

/// The name of the alert engine's consumer.
pub const ALERTS_CONSUMER: &str = "alerts";

/// A consumer's durable position over the ingest sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPosition {
    /// The last event `seq` the consumer has finished with.
    pub position: i64,
    /// Whatever the consumer keeps beside it (the alert engine: windows, quiet
    /// periods, first-seen values, as JSON); the archive never reads it.
    pub state: String,
}

/// An alert: what a rule raised, about which event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Unique: an alert with a key already stored is not stored again.
    pub key: String,
    pub rule: String,
    pub severity: String,
    pub group: Option<String>,
    pub title: String,
    pub text: String,
    pub source: String,
    pub event_seq: i64,
    pub event_id: String,
    pub event_time: Timestamp,
    pub count: u64,
    pub window_start: Option<Timestamp>,
    pub window_end: Option<Timestamp>,
    pub link: Option<String>,
    /// The original event, as JSON.
    pub event: String,
}

/// An alert to put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertWrite {
    pub alert: Alert,
    /// Destination names; one delivery each.
    pub destinations: Vec<String>,
}

/// Whether a consumer's position moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed; this many alerts were new.
    Committed { new_alerts: u64 },
    /// Another process moved the position first; nothing was written.
    Conflict,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Tried and failed; tried again at `next_attempt`.
    Failing,
    /// Given up on (a permanent error, or too old).
    Abandoned,
}

impl DeliveryState {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failing => "failing",
            Self::Abandoned => "abandoned",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failing" => Self::Failing,
            "abandoned" => Self::Abandoned,
            _ => return None,
        })
    }
}

/// One alert's delivery to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: u64,
    pub next_attempt: Option<Timestamp>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
}

/// An alert as stored: the alert, its number, when it was raised, its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    #[serde(flatten)]
    pub alert: Alert,
    pub raised_at: Timestamp,
    pub deliveries: Vec<DeliveryRecord>,
}

/// A record reads as the alert it holds (`record.title`).
impl std::ops::Deref for AlertRecord {
    type Target = Alert;
    fn deref(&self) -> &Alert {
        &self.alert
    }
}

/// A delivery that is due, claimed for a while by one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    pub delivery_id: i64,
    pub destination: String,
    pub attempts: u64,
    pub alert: AlertRecord,
    /// Which claim this is: when it runs out (ms since the epoch). Every later claim
    /// of the delivery runs out later, so the value tells this claim from the next.
    pub claim: i64,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    Failed {
        error: String,
        retry_at: Timestamp,
    },
    /// The destination refused us (credentials, address): the delivery is kept
    /// (failing) until the user fixes the destination, and the destination is marked.
    Misconfigured {
        error: String,
        retry_at: Timestamp,
    },
    Abandoned {
        error: String,
    },
}

/// A destination the receiver says is set up wrong (a rejected secret, a wrong or
/// moved address), until a delivery to it succeeds again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationHealth {
    pub name: String,
    /// Why, as the last refused delivery said.
    pub misconfigured: String,
    pub since: Timestamp,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub since: Option<Timestamp>,
    pub rule: Option<String>,
    /// Alerts with at least one delivery in this state.
    pub state: Option<DeliveryState>,
}

/// Counts of deliveries by state, and the latest alerts, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertStatus {
    pub alerts: u64,
    pub pending: u64,
    pub delivered: u64,
    pub failing: u64,
    pub abandoned: u64,
    /// The evaluated position, when the engine has run.
    pub cursor: Option<i64>,
    /// The newest event `seq` in the archive.
    pub newest_seq: i64,
    /// Destinations marked misconfigured; their deliveries wait for a fix.
    pub misconfigured: Vec<DestinationHealth>,
    pub recent: Vec<AlertRecord>,
}

/// Values already seen in the archive, to seed first-seen rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenValues {
    pub accessors: Vec<String>,
    pub impersonators: Vec<String>,
    /// (resource type, action)
    pub kinds: Vec<(String, String)>,
}
