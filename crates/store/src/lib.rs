//! The archive: what tfaudit keeps, and the one interface every backend implements.
//!
//! The archive is an append-only log of events, each stored once by its `id`, each
//! given a monotonic ingest sequence number (`seq`) that downstream consumers keep
//! their own cursors over. Beside the events it keeps, per source (one organization at
//! one address), the sync cursor, the page walk in progress, the runs, the gaps and
//! the rejected elements.
//!
//! Everything a sync writes for one page — its events, its rejects and the walk's
//! progress — is one transaction ([`Archive::store_page`]); moving the cursor is another
//! ([`Archive::finish_walk`]). A crash between any two leaves a consistent archive that
//! the next run resumes from.

use std::io;

use jiff::Timestamp;
use serde::Serialize;
pub use tfaudit_model::StoredEvent;
use tfaudit_model::{AuditEvent, RejectedEvent};

mod alerts;
pub mod blocking;
pub mod catalogue;
mod filter;
mod leases;
pub mod ledger;
pub mod merkle;
pub mod migrate;
pub mod reports;
pub mod retention;
pub mod rollup;
mod transfer;
pub use alerts::{
    ALERTS_CONSUMER, Alert, AlertFilter, AlertRecord, AlertStatus, AlertWrite, CommitOutcome, ConsumerPosition,
    DeliveryJob, DeliveryOutcome, DeliveryRecord, DeliveryState, DestinationHealth, SeenValues,
};
pub use blocking::{Guarded, blocking, blocking_on};
pub use catalogue::{Catalogue, Listing, ListingOutcome, NameBook, NameRecord};
pub use filter::{EventFilter, Pattern};
pub use leases::{ALERTS_LEASE, Fence, Lease, LeaseHolder, Leases, ttl_ms};
pub use ledger::{Checkpoint, Hash, LEAF_PREFIX, Leaf, LeafHash, Ledger, TreeHead, TreeNode, Verification};
pub use reports::{MadeReport, ReportJob, ReportRecord, ReportTarget, Reports};
pub use retention::{PruneOutcome, PruneRequest, PrunedDay, Retention};
pub use transfer::{
    AlertState, ArchiveState, ConsumerState, DeliveryCopy, DestinationState, GapState, NameState, RejectState,
    ReportState, RunState, SourceState, Transfer,
};

/// Errors of an archive backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no archive at {path}; run `tfaudit sync` first, or point --db / TFAUDIT_DB at an existing archive")]
    Missing { path: String },
    #[error("cannot open the archive {path}: {cause}; check the path (--db or TFAUDIT_DB) and its permissions")]
    Open { path: String, cause: String },
    #[error("the archive {path} has schema version {found}, newer than this tfaudit knows ({known}); upgrade tfaudit")]
    TooNew { path: String, found: i64, known: i64 },
    /// The database server is down, refuses connections or cannot be reached (a
    /// PostgreSQL archive); commands exit with code 5, services retry.
    #[error(
        "cannot reach the archive's PostgreSQL server at {host} ({cause}); check that it is running and reachable, and that --db / TFAUDIT_DB names the right host and port"
    )]
    Unreachable { host: String, cause: String },
    #[error("the archive is locked by another process for too long; try again when the other tfaudit has finished")]
    Busy,
    #[error("the archive {path} is damaged ({cause}); restore it from a backup or sync into a new one")]
    Corrupt { path: String, cause: String },
    #[error("archive error: {0}")]
    Database(String),
    /// The archive's location (`--db`, `TFAUDIT_DB`, config `db`) cannot be read; the
    /// location is shown without its password.
    #[error("the archive location {location} is not usable: {reason}")]
    InvalidLocation { location: String, reason: String },
    /// A fenced write found that the organization's lease has passed to another
    /// instance (or was released): nothing of it was written.
    #[error("the organization {name} is now synced by another instance (its lease passed on); nothing was written")]
    LeaseLost { name: String },
    #[error("writing output failed: {0}")]
    Output(#[from] io::Error),
}

/// Shorthand for results of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A source of events: one organization, at one address, with one cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: i64,
    /// The name it is known by in tfaudit (config `name`, or the address's host).
    pub name: String,
    pub address: String,
    /// The organization id its events carry, once one was seen.
    pub organization_id: Option<String>,
    /// Newest event timestamp that a complete page walk committed.
    pub cursor: Option<Timestamp>,
    /// When a complete walk last re-read a whole reconcile window (or backfilled).
    pub reconciled: Option<Timestamp>,
    /// A page walk that began and has not finished (a crash, a signal, an error).
    pub walk: Option<Walk>,
}

/// A page walk's progress, saved with every page it stores so that a run after a
/// crash can go on from the next page instead of starting over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Walk {
    /// The `since` every page of this walk asks for (`None` on a first backfill).
    pub since: Option<Timestamp>,
    /// The next page to fetch.
    pub next_page: u64,
    /// The page size asked for; a walk resumes only with the same size.
    pub page_size: u32,
    /// Newest event timestamp seen so far: the cursor once the walk completes.
    pub newest: Option<Timestamp>,
    /// Oldest event timestamp seen so far: where a gap ends.
    pub oldest: Option<Timestamp>,
    /// Set when the cursor was older than the retention window as the walk began.
    pub gap_from: Option<Timestamp>,
    pub started_at: Timestamp,
}

/// One or more consecutive pages' worth of writes, stored in one transaction.
#[derive(Debug)]
pub struct PageWrite<'a> {
    pub source_id: i64,
    pub run_id: i64,
    /// How many pages the events came from.
    pub pages: u64,
    pub events: &'a [AuditEvent],
    pub rejects: &'a [RejectedEvent],
    /// The walk's progress after the last of these pages.
    pub walk: &'a Walk,
}

/// What storing a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PageOutcome {
    /// Events new to the archive.
    pub inserted: u64,
    /// Events already in the archive (normal: overlap, shifting pages).
    pub duplicates: u64,
    /// Rejected elements not seen before.
    pub rejected: u64,
}

/// A stretch of time whose events may be lost: the collector's cursor fell out of the
/// API's retention window before it synced again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub source: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub detected_at: Timestamp,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "error")]
pub enum RunResult {
    Ok,
    Interrupted,
    Failed(String),
}

impl RunResult {
    #[must_use]
    pub fn label(&self) -> &str {
        match self {
            Self::Ok => "ok",
            Self::Interrupted => "interrupted",
            Self::Failed(_) => "failed",
        }
    }
}

/// What a run did, as counted by the run and recorded with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunTally {
    pub pages: u64,
    pub requests: u64,
    pub retries: u64,
    /// Events new to the archive.
    pub new_events: u64,
    /// Events the archive already held (normal: overlap, shifting pages).
    pub duplicates: u64,
    /// Elements rejected for the first time.
    pub rejects: u64,
}

/// One sync of one source, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub id: i64,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// `None` while running, or when the process died during the run.
    pub result: Option<RunResult>,
    #[serde(flatten)]
    pub tally: RunTally,
}

/// One source's syncs over a time range, counted: what the compliance report says of
/// how its collection went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunTotals {
    pub source: String,
    /// Runs started in the range.
    pub runs: u64,
    pub ok: u64,
    pub failed: u64,
    pub interrupted: u64,
    /// Runs with no recorded end: still running, or their process died.
    pub unfinished: u64,
    /// When the latest successful run that ended before the range's end ended (it may
    /// be before the range's start).
    pub last_ok: Option<Timestamp>,
    /// The range's failed runs, newest first, at most as many as asked for.
    pub failures: Vec<Run>,
}

/// Request/retry counts a run reports when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub requests: u64,
    pub retries: u64,
}

/// What [`Archive::event_keys`] gives of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    pub seq: i64,
    pub timestamp: Timestamp,
    pub resource_id: Option<String>,
}

/// The order events are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// Counts over a time range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub total: u64,
    /// By resource type and action, most first (the top ones).
    pub by_kind: Vec<KindCount>,
    /// By accessor, most first (the top ones).
    pub top_actors: Vec<ActorCount>,
    /// Per UTC day, oldest first (`YYYY-MM-DD`).
    pub per_day: Vec<DayCount>,
    /// Per UTC hour, oldest first (`YYYY-MM-DDTHH:00Z`); hours without events left out.
    pub per_hour: Vec<DayCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KindCount {
    pub resource_type: String,
    pub action: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorCount {
    pub accessor_id: String,
    pub description: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    pub day: String,
    pub count: u64,
}

/// Everything `tfaudit status` shows for one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub address: String,
    pub organization_id: Option<String>,
    pub events: u64,
    pub oldest: Option<Timestamp>,
    pub newest: Option<Timestamp>,
    pub cursor: Option<Timestamp>,
    pub walk_in_progress: Option<Walk>,
    pub last_run: Option<Run>,
    pub last_success: Option<Timestamp>,
    pub gaps: Vec<Gap>,
    pub rejects: u64,
    /// The instance that syncs it now and since when (`None` when no instance holds
    /// its lease).
    pub lease: Option<LeaseHolder>,
}

impl SourceStatus {
    /// Fills in each source's lease holder from `leases` (those held now).
    pub fn attach_leases(statuses: &mut [SourceStatus], leases: &[Lease]) {
        for s in statuses {
            s.lease = leases
                .iter()
                .find(|l| l.name == s.name)
                .map(|l| LeaseHolder { holder: l.holder.clone(), since: l.since });
        }
    }
}

/// A rejected element, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    pub source: String,
    pub reason: String,
    pub raw: String,
    pub first_seen: Timestamp,
    pub times_seen: u64,
}

/// The archive role: sources, runs, ingest, and everything read from the events.
/// Calls block; async callers run them through [`blocking`].
pub trait Archive: Send + Sync {
    /// The source with this name, created on first use.
    ///
    /// # Errors
    /// On a database failure.
    fn source(&self, name: &str, address: &str) -> Result<Source>;

    /// Records the start of a run and returns its id.
    ///
    /// # Errors
    /// On a database failure.
    fn start_run(&self, source_id: i64, started_at: Timestamp) -> Result<i64>;

    /// Stores one page in one transaction: its events (each once, by `id`), its
    /// rejects, the organization id its events carry, and the walk's progress.
    ///
    /// # Errors
    /// On a database failure; then nothing of the page is stored.
    fn store_page(&self, page: &PageWrite<'_>) -> Result<PageOutcome> {
        self.store_page_fenced(page, None)
    }

    /// [`Archive::store_page`], written only while `fence` (when given) still holds:
    /// checked inside the page's transaction, with the lease row locked.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the fence no longer holds; on a database
    /// failure. Either way nothing of the page is stored.
    fn store_page_fenced(&self, page: &PageWrite<'_>, fence: Option<&Fence>) -> Result<PageOutcome>;

    /// Completes a walk in one transaction: moves the cursor (never backwards), clears
    /// the walk, records the gap if there is one, and when the walk re-read a whole
    /// reconcile window, when it began. The source's first complete walk also fixes
    /// its alert start point (see [`Archive::alert_start_points`]): the newest `seq`
    /// stored when it completes.
    ///
    /// # Errors
    /// On a database failure; then the cursor has not moved.
    fn finish_walk(
        &self,
        source_id: i64,
        cursor: Option<Timestamp>,
        gap: Option<&Gap>,
        reconciled: Option<Timestamp>,
    ) -> Result<()> {
        self.finish_walk_fenced(source_id, cursor, gap, reconciled, None)
    }

    /// [`Archive::finish_walk`], written only while `fence` (when given) still holds.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when the fence no longer holds; on a database
    /// failure. Either way the cursor has not moved.
    fn finish_walk_fenced(
        &self,
        source_id: i64,
        cursor: Option<Timestamp>,
        gap: Option<&Gap>,
        reconciled: Option<Timestamp>,
        fence: Option<&Fence>,
    ) -> Result<()>;

    /// Records how a run ended.
    ///
    /// # Errors
    /// On a database failure.
    fn finish_run(&self, run_id: i64, result: &RunResult, counts: RunCounts) -> Result<()>;

    /// Calls `each` for every event matching `filter`, in `order`, at most `limit`.
    /// Returns how many were read.
    ///
    /// # Errors
    /// On a database failure, or the first error `each` returns.
    fn events(
        &self,
        filter: &EventFilter,
        order: Order,
        limit: Option<u64>,
        each: &mut dyn FnMut(StoredEvent) -> io::Result<()>,
    ) -> Result<u64>;

    /// For every event matching `filter`, in `order`: its seq, time and resource id,
    /// read from its row without reading or decoding its body — for counting and
    /// matching many events of which few are shown (the compliance report's tokens).
    /// Returns how many were read.
    ///
    /// # Errors
    /// On a database failure, or the first error `each` returns.
    fn event_keys(
        &self,
        filter: &EventFilter,
        order: Order,
        each: &mut dyn FnMut(EventKey) -> io::Result<()>,
    ) -> Result<u64>;

    /// One event by id.
    ///
    /// # Errors
    /// On a database failure.
    fn event(&self, id: &str) -> Result<Option<StoredEvent>>;

    /// Counts by type/action, top actors and events per day.
    ///
    /// # Errors
    /// On a database failure.
    fn summary(&self, filter: &EventFilter, top: usize) -> Result<Summary>;

    /// Per-source state.
    ///
    /// # Errors
    /// On a database failure.
    fn status(&self) -> Result<Vec<SourceStatus>>;

    /// Per source, by name: its runs started in `[since, until)` counted by how they
    /// ended, its latest successful run before `until`, and the newest `failures` of the
    /// range's failed runs. Every source is listed, with no runs too.
    ///
    /// # Errors
    /// On a database failure.
    fn run_totals(&self, since: Option<Timestamp>, until: Option<Timestamp>, failures: u64) -> Result<Vec<RunTotals>>;

    /// The most recent rejected elements.
    ///
    /// # Errors
    /// On a database failure.
    fn rejects(&self, limit: u64) -> Result<Vec<Reject>>;

    /// The newest event's `seq` (0 for an empty archive).
    ///
    /// # Errors
    /// On a database failure.
    fn newest_seq(&self) -> Result<i64>;

    /// Calls `each` for events with `seq > after`, in `seq` order, at most `limit`.
    ///
    /// # Errors
    /// On a database failure, or the first error `each` returns.
    fn events_after(&self, after: i64, limit: u64, each: &mut dyn FnMut(StoredEvent) -> io::Result<()>) -> Result<u64>;

    /// For events with `seq > after`, in `seq` order, at most `limit`: calls `each` with
    /// the event's seq, its source's name and its original bytes — what the integrity
    /// tree hashes — without building whole events. Returns how many were read.
    ///
    /// # Errors
    /// On a database failure, or the first error `each` returns.
    fn event_bytes_after(
        &self,
        after: i64,
        limit: u64,
        each: &mut dyn FnMut(i64, &str, &str) -> io::Result<()>,
    ) -> Result<u64> {
        self.events_after(after, limit, &mut |e| each(e.seq, &e.source, &e.event.raw))
    }

    /// How many events have a `seq` after `after`: a consumer's lag.
    ///
    /// # Errors
    /// On a database failure.
    fn count_events_after(&self, after: i64) -> Result<u64>;

    /// Per source (by name), where alerting starts: its events up to this `seq` are
    /// history (backtested, never alerted on), everything stored after it is
    /// evaluated. `None` while the source's first backfill has not completed (all of
    /// its events are history until then).
    ///
    /// # Errors
    /// On a database failure.
    fn alert_start_points(&self) -> Result<Vec<(String, Option<i64>)>>;

    /// Accessors, impersonators and type/action pairs of the events with `seq <= seq`:
    /// what the alert engine counts as already seen when it first starts there.
    ///
    /// # Errors
    /// On a database failure.
    fn seen_values_up_to(&self, seq: i64) -> Result<SeenValues>;

    /// Accessors, impersonators and type/action pairs of events before `before` (all
    /// events when `None`).
    ///
    /// # Errors
    /// On a database failure.
    fn seen_values(&self, before: Option<Timestamp>) -> Result<SeenValues>;

    /// Compresses up to `batch` events still kept uncompressed (written before the
    /// archive had a dictionary, or by an older tfaudit), or compressed in an older
    /// form, with `seq` after `after`, in one transaction; says how many it compressed
    /// and the last `seq` it reached, where the next call goes on (so that no call reads
    /// the archive from its start again). None compressed: nothing is left after
    /// `after`. A backend that does not compress (PostgreSQL, whose large values TOAST
    /// already compresses) has none.
    ///
    /// # Errors
    /// On a database failure; then nothing of the batch was written.
    fn compact(&self, after: i64, batch: u64) -> Result<(u64, i64)> {
        let _ = batch;
        Ok((0, after))
    }

    /// Gives the space freed inside the archive back to the file system (SQLite's
    /// VACUUM; nothing for a server database, which does that itself).
    ///
    /// # Errors
    /// On a database failure (the archive is unchanged).
    fn reclaim_space(&self) -> Result<()> {
        Ok(())
    }
}

/// The consumers role: durable *named* cursors over the ingest sequence (`seq`), each
/// with an opaque state its consumer saves beside it, and the alert outbox. The alert
/// engine is the consumer named [`ALERTS_CONSUMER`]; another reader of the archive (a
/// forwarder to a SIEM) is one more name, with no change to any backend's schema.
/// Calls block; async callers run them through [`blocking`].
pub trait Consumers: Send + Sync {
    /// The named consumer's position and state; `None` before its first commit.
    ///
    /// # Errors
    /// On a database failure.
    fn consumer(&self, name: &str) -> Result<Option<ConsumerPosition>>;

    /// Moves the named consumer from `expected` (`None`: it has never committed) to
    /// `position`, compare-and-set: if its position is not `expected` (another process
    /// moved it first), writes nothing and says [`CommitOutcome::Conflict`]. Other
    /// names are not touched.
    ///
    /// # Errors
    /// On a database failure; then nothing was written.
    fn commit_consumer(&self, name: &str, expected: Option<i64>, position: &ConsumerPosition) -> Result<CommitOutcome>;

    /// In one transaction: stores the new alerts (each once by key) with a pending
    /// delivery per destination, and moves the [`ALERTS_CONSUMER`] from `expected` to
    /// `position`, compare-and-set as [`Consumers::commit_consumer`]: on a conflict
    /// nothing is written.
    ///
    /// # Errors
    /// On a database failure; then nothing was written.
    fn commit_alerts(
        &self,
        expected: Option<i64>,
        position: &ConsumerPosition,
        alerts: &[AlertWrite],
    ) -> Result<CommitOutcome>;

    /// Claims the delivery to `destination` that is due first, if one is due by
    /// `due_by`, until `now + lease`: no other process picks it up until the lease
    /// ends or it is finished. One at a time, just before it is sent, so that a
    /// crash can only repeat what was on the wire.
    ///
    /// # Errors
    /// On a database failure.
    fn claim_delivery(
        &self,
        destination: &str,
        now: Timestamp,
        due_by: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Option<DeliveryJob>>;

    /// Destinations with deliveries not yet delivered or abandoned.
    ///
    /// # Errors
    /// On a database failure.
    fn open_delivery_destinations(&self) -> Result<Vec<String>>;

    /// Records how the attempt of `job` ended; a delivery to a destination marks it
    /// as working again, a misconfiguration marks it misconfigured. Nothing is
    /// recorded, and `false` returned, when the delivery was claimed again since (this
    /// claim ran out while its process was frozen, say): the newer claim's outcome is
    /// the one that counts, and a stale failure must not reopen a delivery done since.
    ///
    /// # Errors
    /// On a database failure.
    fn finish_delivery(&self, job: &DeliveryJob, outcome: &DeliveryOutcome) -> Result<bool>;

    /// Alerts, newest first, with their deliveries.
    ///
    /// # Errors
    /// On a database failure.
    fn alerts(&self, filter: &AlertFilter, limit: u64) -> Result<Vec<AlertRecord>>;

    /// One alert with its deliveries.
    ///
    /// # Errors
    /// On a database failure.
    fn alert(&self, id: i64) -> Result<Option<AlertRecord>>;

    /// Delivery counts and recent alerts.
    ///
    /// # Errors
    /// On a database failure.
    fn alert_status(&self, recent: u64) -> Result<AlertStatus>;

    /// Keeps events a consumer's target refused as invalid, one row per consumer and
    /// `seq`: a letter added again (refused again) replaces its reason and time and
    /// adds its attempts to the row's.
    ///
    /// # Errors
    /// On a database failure; then nothing was written.
    fn add_dead_letters(&self, letters: &[DeadLetter]) -> Result<()>;

    /// A consumer's dead letters with `seq` after `after`, in `seq` order, at most `limit`.
    ///
    /// # Errors
    /// On a database failure.
    fn dead_letters(&self, consumer: &str, after: i64, limit: u64) -> Result<Vec<DeadLetter>>;

    /// Removes a consumer's dead letters with these `seq`s (sent again and taken);
    /// says how many were removed.
    ///
    /// # Errors
    /// On a database failure; then nothing was removed.
    fn remove_dead_letters(&self, consumer: &str, seqs: &[i64]) -> Result<u64>;

    /// How many dead letters each consumer has, by name; consumers with none are left out.
    ///
    /// # Errors
    /// On a database failure.
    fn dead_letter_counts(&self) -> Result<Vec<(String, u64)>>;
}

/// How far a consumer at `position` is behind: the events after it, and when the
/// oldest of them was archived.
///
/// # Errors
/// On a database failure.
pub fn consumer_lag<S: Archive + ?Sized>(store: &S, position: i64) -> Result<(u64, Option<Timestamp>)> {
    let events = store.count_events_after(position)?;
    let mut oldest = None;
    if events > 0 {
        store.events_after(position, 1, &mut |e| {
            oldest = Some(e.ingested_at);
            Ok(())
        })?;
    }
    Ok((events, oldest))
}

/// An event a consumer's target refused as invalid (a sink's dead letter): kept with
/// the target's reason so that it is neither lost nor blocks the events after it, and
/// sent again by `tfaudit forward --retry-dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The consumer (`sink:<name>`).
    pub consumer: String,
    /// The event's `seq` in this archive.
    pub seq: i64,
    pub event_id: String,
    /// The target's reason, redacted and bounded by the caller.
    pub reason: String,
    /// When it was last refused.
    pub at: Timestamp,
    /// How many times it was refused.
    pub attempts: u64,
}

/// A whole backend: every role. Code that holds an `Arc<dyn Store>` calls any;
/// code that needs one role takes that role.
pub trait Store: Archive + Consumers + Transfer + Leases + Ledger + Retention + Catalogue + Reports {}

impl<T: Archive + Consumers + Transfer + Leases + Ledger + Retention + Catalogue + Reports + ?Sized> Store for T {}
