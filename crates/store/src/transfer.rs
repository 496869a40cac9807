//! Copying a whole archive into another (`tfaudit migrate`), through the storage
//! interface only, so that any backend copies to any other.
//!
//! A backend provides the [`Transfer`] role: everything it holds besides the events,
//! read in one consistent snapshot ([`ArchiveState`]); events copied from another
//! archive appended in the order given, keeping when they were ingested; and the
//! non-event state loaded in one transaction. [`crate::migrate`] drives a copy.
//!
//! Seqs are the target's own: a copied event gets the target's next number, so only
//! the *order* of the ingest sequence is kept. Everything that names a seq (alert start
//! points, consumer positions, an alert's event, a dead letter's event) is translated by
//! the copy before the state is loaded.

use jiff::Timestamp;

use crate::{Alert, DeadLetter, DeliveryState, Result, RunTally, StoredEvent, Walk};

/// Everything an archive holds besides its events (and what is derived from them:
/// per-source event counts and time range, hourly rollups, the actors seen).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveState {
    pub sources: Vec<SourceState>,
    pub runs: Vec<RunState>,
    pub gaps: Vec<GapState>,
    pub rejects: Vec<RejectState>,
    pub consumers: Vec<ConsumerState>,
    /// Oldest first, each with its deliveries.
    pub alerts: Vec<AlertState>,
    pub destinations: Vec<DestinationState>,
    /// By consumer, then seq; each `seq` is a seq of the archive it was read from.
    pub dead_letters: Vec<DeadLetter>,
    /// Names for ids (the catalogue), with their history: by id, then name.
    pub names: Vec<NameState>,
    /// When each source's listings were last read (`enrich_token`), by source.
    pub listings: Vec<(String, Timestamp)>,
    /// When each scheduled report (name, cadence) was first seen, by name.
    pub report_schedules: Vec<(String, String, Timestamp)>,
    /// Scheduled reports made, oldest first, each with its file and deliveries.
    pub reports: Vec<ReportState>,
}

/// A scheduled report as made, its id kept, with its deliveries (each
/// `destination` is the delivery's target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportState {
    pub id: i64,
    pub report: crate::MadeReport,
    pub deliveries: Vec<DeliveryCopy>,
}

/// One name an id has had, and the source that saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameState {
    pub source: String,
    pub record: crate::NameRecord,
}

/// A source's own state; its event counters follow from the events copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    pub name: String,
    pub address: String,
    pub organization_id: Option<String>,
    pub cursor: Option<Timestamp>,
    pub reconciled: Option<Timestamp>,
    pub walk: Option<Walk>,
    /// A seq of the archive it was read from (see [`crate::Archive::alert_start_points`]).
    pub alert_start_seq: Option<i64>,
    pub reject_count: u64,
    pub created_at: Timestamp,
}

/// A run as recorded. Ids are kept, so that a reject still names its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    pub id: i64,
    pub source: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// As stored: `ok`, `interrupted`, `failed`, or none while running.
    pub result: Option<String>,
    pub error: Option<String>,
    pub tally: RunTally,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapState {
    pub id: i64,
    pub source: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub detected_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectState {
    pub id: i64,
    pub source: String,
    pub run_id: Option<i64>,
    pub reason: String,
    pub raw: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub times_seen: u64,
}

/// A named consumer; `position` is a seq of the archive it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerState {
    pub name: String,
    pub position: i64,
    pub state: String,
    pub updated_at: Timestamp,
}

/// An alert with its id (kept, so `tfaudit alerts show ID` finds the same alert) and
/// its deliveries; `alert.event_seq` is a seq of the archive it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertState {
    pub id: i64,
    pub alert: Alert,
    pub raised_at: Timestamp,
    pub deliveries: Vec<DeliveryCopy>,
}

/// One delivery, everything kept (a lease in force stays in force).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCopy {
    pub id: i64,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: u64,
    pub next_attempt: Timestamp,
    pub lease_until: Option<Timestamp>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationState {
    pub name: String,
    pub misconfigured: Option<String>,
    pub misconfigured_at: Option<Timestamp>,
}

impl ArchiveState {
    /// How many deliveries all alerts have.
    #[must_use]
    pub fn deliveries(&self) -> usize {
        self.alerts.iter().map(|a| a.deliveries.len()).sum()
    }

    /// Every seq this state names, each once, in order.
    #[must_use]
    pub fn seqs(&self) -> Vec<i64> {
        let mut seqs: Vec<i64> = self
            .sources
            .iter()
            .filter_map(|s| s.alert_start_seq)
            .chain(self.consumers.iter().map(|c| c.position))
            .chain(self.alerts.iter().map(|a| a.alert.event_seq))
            .chain(self.dead_letters.iter().map(|d| d.seq))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// The same state with every seq passed through `map`.
    #[must_use]
    pub fn translated(mut self, map: impl Fn(i64) -> i64) -> Self {
        for s in &mut self.sources {
            s.alert_start_seq = s.alert_start_seq.map(&map);
        }
        for c in &mut self.consumers {
            c.position = map(c.position);
        }
        for a in &mut self.alerts {
            a.alert.event_seq = map(a.alert.event_seq);
        }
        for d in &mut self.dead_letters {
            d.seq = map(d.seq);
        }
        self
    }
}

/// The transfer role: what copying a whole archive needs of a backend, beside
/// [`crate::Archive::events_after`] to read the events and [`crate::Archive::source`]
/// to create the sources first. Calls block.
pub trait Transfer: Send + Sync {
    /// Everything besides the events, read in one consistent snapshot.
    ///
    /// # Errors
    /// On a database failure.
    fn archive_state(&self) -> Result<ArchiveState>;

    /// Appends events read from another archive, in one transaction and in the order
    /// given: each gets this archive's next seq, keeps `ingested_at`, and counts in
    /// its source's counters and the hourly rollups as a synced event would. The
    /// sources (by name, `StoredEvent::source`) must exist; `seq` is ignored.
    ///
    /// # Errors
    /// On a database failure, an unknown source, or an event id already stored; then
    /// nothing was written.
    fn append_copied(&self, events: &[StoredEvent]) -> Result<()>;

    /// Replaces the non-event state with `state`, in one transaction: each source's
    /// cursor, walk, reconcile time, organization, alert start point, reject count
    /// (sources created as needed); and all runs, gaps, rejects, consumers, alerts
    /// with their deliveries, destinations, and dead letters, ids kept. Seqs are taken
    /// as they are: translate them first.
    ///
    /// # Errors
    /// On a database failure; then nothing was written.
    fn load_state(&self, state: &ArchiveState) -> Result<()>;
}
