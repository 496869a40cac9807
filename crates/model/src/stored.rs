//! An event as the archive holds it.

use jiff::Timestamp;
use serde::Serialize;

use crate::AuditEvent;

/// An event as the archive holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    /// The ingest sequence number: increases with every event stored.
    pub seq: i64,
    /// The source (organization) it was synced from.
    pub source: String,
    pub ingested_at: Timestamp,
    #[serde(flatten)]
    pub event: AuditEvent,
}
