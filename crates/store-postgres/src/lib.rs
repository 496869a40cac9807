//! The shared archive: a PostgreSQL database, for a team that runs several tfaudit
//! instances against one archive it already backs up and replicates.
//!
//! The data model is the SQLite archive's (see `tfaudit-store-sqlite`): raw event bytes
//! as received, indexed columns, an ingest sequence `seq`, per-source counters and
//! hourly rollups written in the page's transaction, runs, gaps, rejects, and for the
//! consumers of `seq` a table of named cursors (`consumers`; the alert engine is
//! `alerts`) beside the alert outbox.
//!
//! **Seqs become visible in order.** A PostgreSQL sequence hands out numbers when a
//! row is inserted, not when its transaction commits: two syncs storing pages at once
//! (two organizations, two instances) could commit seq 200 before seq 150, and a
//! consumer reading `events_after` could move its cursor past 150 before it is
//! visible and never see it. So every transaction that inserts events first takes
//! one transaction-scoped advisory lock ([`SEQ_LOCK`]) and holds it until it commits:
//! seqs are then allocated and committed in the same order. (Transaction-scoped, so
//! it also holds under PgBouncer's transaction pooling.)
//!
//! Case-insensitive filters (actor, organization, text) follow the conformance suite's
//! definition (Unicode simple case folding) whatever the database's collation: actor
//! and organization patterns are resolved in Rust against the small `actors`,
//! `organizations` and `sources` tables, and free text is matched in Rust against the
//! raw event. Case-sensitive globs become `LIKE` on `COLLATE "C"` columns.

mod archive;
mod catalogue;
mod connect;
mod consumers;
mod dead_letters;
mod leases;
mod ledger;
mod reports;
mod retention;
mod rollup;
mod schema;
mod transfer;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use tfaudit_store::{
    AlertFilter, AlertRecord, AlertStatus, AlertWrite, Archive, CommitOutcome, ConsumerPosition, Consumers, DeadLetter,
    DeliveryJob, DeliveryOutcome, EventFilter, EventKey, Fence, Gap, Leases, Order, PageOutcome, PageWrite, Reject,
    Result, RunCounts, RunResult, RunTotals, SeenValues, Source, SourceStatus, StoreError, StoredEvent, Summary,
};

pub use connect::TlsMode;
use connect::{Lease, Pool};

/// The advisory lock every transaction that allocates event seqs holds until it
/// commits ("tfaudit" + 1 in ASCII).
pub const SEQ_LOCK: i64 = 0x7466_6175_6469_7401;

/// The advisory lock migrations run under, so that instances starting together
/// migrate once.
const MIGRATION_LOCK: i64 = 0x7466_6175_6469_7402;

/// The PostgreSQL archive.
pub struct PostgresStore {
    pool: Pool,
    read_only: bool,
    /// The database's encoding and schema were checked (and the schema migrated) on
    /// a connection: until then, every connection taken does it first. Set at open,
    /// or later for a store opened with [`PostgresStore::open_when_reachable`] while
    /// the server did not answer.
    ready: AtomicBool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.pool.target().shown)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Opens the archive at a libpq URL (`postgres://` or `postgresql://`; password
    /// from the URL, else `PGPASSWORD`; `sslmode=disable|prefer|require|verify-full`,
    /// `sslrootcert=FILE`). Writable, it creates or migrates the schema; read-only, it
    /// never writes (its sessions are read-only) and needs the schema to be there.
    ///
    /// # Errors
    /// [`StoreError::Unreachable`] when no server answers; [`StoreError::Missing`] when
    /// the database or (read-only) its tfaudit schema does not exist;
    /// [`StoreError::TooNew`] for a schema newer than this tfaudit;
    /// [`StoreError::Open`] otherwise. None of them contains the password.
    pub fn open(url: &str, read_only: bool) -> Result<Self> {
        connect::off_runtime(|| Self::open_here(url, read_only, false))
    }

    /// Opens the archive writable as [`PostgresStore::open`] does, except that a server
    /// that does not answer yet is not an error: the store is returned, every call
    /// fails with [`StoreError::Unreachable`] while the server stays away, and the
    /// first connection that succeeds checks and migrates the schema before anything
    /// else. For the long-running commands (`watch`, `serve`), which retry each sync:
    /// started before the database (a host booting, a failover), they wait for it
    /// instead of exiting.
    ///
    /// # Errors
    /// As [`PostgresStore::open`], except [`StoreError::Unreachable`].
    pub fn open_when_reachable(url: &str) -> Result<Self> {
        connect::off_runtime(|| Self::open_here(url, false, true))
    }

    fn open_here(url: &str, read_only: bool, wait: bool) -> Result<Self> {
        let mut target = connect::parse(url)?;
        if read_only {
            // The server enforces it: not even a bug could write through this store.
            let options = match target.config.get_options() {
                Some(o) => format!("{o} -c default_transaction_read_only=on"),
                None => "-c default_transaction_read_only=on".to_owned(),
            };
            target.config.options(&options);
        }
        let pool = Pool::new(target)?;
        let store = Self { pool, read_only, ready: AtomicBool::new(false) };
        match store.conn() {
            Ok(_) => {}
            Err(StoreError::Unreachable { host, cause }) if wait => {
                tracing::warn!(
                    "the archive's database server at {host} does not answer ({cause}); starting anyway, and each sync waits for it"
                );
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Checks the encoding and the schema (read-only) or brings the schema up to date
    /// (writable): what opening does, on the first connection that reaches the server.
    fn prepare(&self, conn: &mut Lease<'_>) -> Result<()> {
        self.check_encoding(conn)?;
        if self.read_only { self.check_schema(conn) } else { self.migrate(conn) }
    }

    /// The URL, without its password.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.pool.target().shown
    }

    /// Globs count characters, and raw events are kept as UTF-8 text's bytes: a
    /// database in another encoding would match `?` against bytes.
    fn check_encoding(&self, conn: &mut Lease<'_>) -> Result<()> {
        let row = conn.client.query_one("SHOW server_encoding", &[]).map_err(|e| self.db(&e))?;
        let encoding: String = row.get(0);
        if encoding != "UTF8" {
            return Err(StoreError::Open {
                path: self.url().to_owned(),
                cause: format!(
                    "the database's encoding is {encoding}; tfaudit needs UTF8 (CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0)"
                ),
            });
        }
        Ok(())
    }

    fn schema_version(&self, conn: &mut Lease<'_>) -> Result<Option<i64>> {
        let exists: bool = conn
            .client
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
            .map_err(|e| self.db(&e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let version: i64 = conn
            .client
            .query_one("SELECT coalesce(max(version), 0)::bigint FROM schema_migrations", &[])
            .map_err(|e| self.db(&e))?
            .get(0);
        Ok(Some(version))
    }

    fn check_schema(&self, conn: &mut Lease<'_>) -> Result<()> {
        let known = schema::MIGRATIONS.len() as i64;
        match self.schema_version(conn)? {
            None | Some(0) => Err(StoreError::Missing { path: self.url().to_owned() }),
            Some(v) if v > known => Err(StoreError::TooNew { path: self.url().to_owned(), found: v, known }),
            Some(v) if v < known => Err(StoreError::Open {
                path: self.url().to_owned(),
                cause: format!(
                    "its schema (version {v}) needs upgrading, which reading cannot do; run `tfaudit sync --db URL` once with write access"
                ),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Applies the migrations this archive lacks, each in its own transaction, under
    /// an advisory lock so that instances starting at once migrate once.
    fn migrate(&self, conn: &mut Lease<'_>) -> Result<()> {
        let known = schema::MIGRATIONS.len() as i64;
        match self.schema_version(conn)? {
            Some(v) if v > known => {
                return Err(StoreError::TooNew { path: self.url().to_owned(), found: v, known });
            }
            // Up to date, the usual case: no transaction, lock or DDL per migration
            // on every start, only the two queries of `schema_version`.
            Some(v) if v == known => return Ok(()),
            _ => {}
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(|e| self.db(&e))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version    bigint PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .map_err(|e| self.db(&e))?;
            let current: i64 = tx
                .query_one("SELECT coalesce(max(version), 0)::bigint FROM schema_migrations", &[])
                .map_err(|e| self.db(&e))?
                .get(0);
            if current > known {
                return Err(StoreError::TooNew { path: self.url().to_owned(), found: current, known });
            }
            if current >= version {
                continue;
            }
            tx.batch_execute(sql).map_err(|e| self.db(&e))?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version]).map_err(|e| self.db(&e))?;
            tx.commit().map_err(|e| self.db(&e))?;
            tracing::debug!(version, "archive schema migrated");
        }
        Ok(())
    }

    fn conn(&self) -> Result<Lease<'_>> {
        let mut conn = self.pool.get()?;
        if !self.ready.load(Ordering::Acquire) {
            // Several callers may get here at once: migrations take an advisory lock
            // and skip what is done, so preparing twice is harmless.
            self.prepare(&mut conn)?;
            self.ready.store(true, Ordering::Release);
        }
        Ok(conn)
    }

    /// A failed statement as a [`StoreError`]: a lost server is
    /// [`StoreError::Unreachable`] (callers retry), anything else a database error.
    fn db(&self, e: &postgres::Error) -> StoreError {
        let cause = tfaudit_model::redact::redact(&connect::error_text(e)).into_owned();
        if e.as_db_error().is_none() && e.is_closed() {
            return StoreError::Unreachable { host: self.pool.target().host.clone(), cause };
        }
        match e.code() {
            Some(c) if *c == postgres::error::SqlState::LOCK_NOT_AVAILABLE => StoreError::Busy,
            Some(c) if *c == postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION => {
                StoreError::Open { path: self.url().to_owned(), cause: "the archive was opened read-only".into() }
            }
            _ => StoreError::Database(cause),
        }
    }
}

/// Times are kept to the millisecond.
fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ts_opt(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(ts)
}

/// Counts are `bigint`; the trait's are unsigned.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// PostgreSQL's `text` cannot hold a NUL character, which untrusted event fields may
/// carry: indexed columns (and alert texts) keep U+FFFD in its place. The raw event
/// keeps every byte (`bytea`), and an event read back takes its fields from the raw
/// text wherever a column holds U+FFFD, so what comes back is exact; filters map NUL
/// the same way, so that a filter naming a NUL finds the event.
pub(crate) fn nul_free(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') { std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { std::borrow::Cow::Borrowed(s) }
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The archive role: ingest, queries and status (`archive.rs`).
impl Archive for PostgresStore {
    // --- archive: ingest ---

    fn source(&self, name: &str, address: &str) -> Result<Source> {
        self.ingest_source(name, address)
    }

    fn start_run(&self, source_id: i64, started_at: Timestamp) -> Result<i64> {
        self.ingest_start_run(source_id, started_at)
    }

    fn store_page_fenced(&self, page: &PageWrite<'_>, fence: Option<&Fence>) -> Result<PageOutcome> {
        self.ingest_page(page, fence)
    }

    fn finish_walk_fenced(
        &self,
        source_id: i64,
        cursor: Option<Timestamp>,
        gap: Option<&Gap>,
        reconciled: Option<Timestamp>,
        fence: Option<&Fence>,
    ) -> Result<()> {
        self.ingest_finish_walk(source_id, cursor, gap, reconciled, fence)
    }

    fn finish_run(&self, run_id: i64, result: &RunResult, counts: RunCounts) -> Result<()> {
        self.ingest_finish_run(run_id, result, counts)
    }

    // --- archive: queries and status ---

    fn events(
        &self,
        filter: &EventFilter,
        order: Order,
        limit: Option<u64>,
        each: &mut dyn FnMut(StoredEvent) -> io::Result<()>,
    ) -> Result<u64> {
        self.query_events(filter, order, limit, each)
    }

    fn event_keys(
        &self,
        filter: &EventFilter,
        order: Order,
        each: &mut dyn FnMut(EventKey) -> io::Result<()>,
    ) -> Result<u64> {
        self.query_event_keys(filter, order, each)
    }

    fn event(&self, id: &str) -> Result<Option<StoredEvent>> {
        self.query_event(id)
    }

    fn summary(&self, filter: &EventFilter, top: usize) -> Result<Summary> {
        self.query_summary(filter, top)
    }

    fn status(&self) -> Result<Vec<SourceStatus>> {
        let mut status = self.query_status()?;
        SourceStatus::attach_leases(&mut status, &self.leases()?);
        Ok(status)
    }

    fn run_totals(&self, since: Option<Timestamp>, until: Option<Timestamp>, failures: u64) -> Result<Vec<RunTotals>> {
        self.query_run_totals(since, until, failures)
    }

    fn rejects(&self, limit: u64) -> Result<Vec<Reject>> {
        self.query_rejects(limit)
    }

    fn newest_seq(&self) -> Result<i64> {
        self.query_newest_seq()
    }

    fn events_after(&self, after: i64, limit: u64, each: &mut dyn FnMut(StoredEvent) -> io::Result<()>) -> Result<u64> {
        self.query_events_after(after, limit, each)
    }

    fn event_bytes_after(
        &self,
        after: i64,
        limit: u64,
        each: &mut dyn FnMut(i64, &str, &str) -> io::Result<()>,
    ) -> Result<u64> {
        self.query_event_bytes_after(after, limit, each)
    }

    fn count_events_after(&self, after: i64) -> Result<u64> {
        self.query_count_events_after(after)
    }

    fn alert_start_points(&self) -> Result<Vec<(String, Option<i64>)>> {
        self.query_alert_start_points()
    }

    fn seen_values_up_to(&self, seq: i64) -> Result<SeenValues> {
        self.query_seen_values_up_to(seq)
    }

    fn seen_values(&self, before: Option<Timestamp>) -> Result<SeenValues> {
        self.query_seen_values(before)
    }
}

/// The consumers of `seq`: named cursors and the alert outbox (`consumers.rs`), dead
/// letters (`dead_letters.rs`).
impl Consumers for PostgresStore {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerPosition>> {
        self.consumer_cursor(name)
    }

    fn commit_consumer(&self, name: &str, expected: Option<i64>, position: &ConsumerPosition) -> Result<CommitOutcome> {
        self.outbox_commit(name, expected, position, &[])
    }

    fn commit_alerts(
        &self,
        expected: Option<i64>,
        cursor: &ConsumerPosition,
        alerts: &[AlertWrite],
    ) -> Result<CommitOutcome> {
        self.outbox_commit(tfaudit_store::ALERTS_CONSUMER, expected, cursor, alerts)
    }

    fn claim_delivery(
        &self,
        destination: &str,
        now: Timestamp,
        due_by: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Option<DeliveryJob>> {
        self.outbox_claim(destination, now, due_by, lease)
    }

    fn open_delivery_destinations(&self) -> Result<Vec<String>> {
        self.outbox_open_destinations()
    }

    fn finish_delivery(&self, job: &DeliveryJob, outcome: &DeliveryOutcome) -> Result<bool> {
        self.outbox_finish(job.delivery_id, job.claim, outcome)
    }

    fn alerts(&self, filter: &AlertFilter, limit: u64) -> Result<Vec<AlertRecord>> {
        self.outbox_alerts(filter, limit)
    }

    fn alert(&self, id: i64) -> Result<Option<AlertRecord>> {
        self.outbox_alert(id)
    }

    fn alert_status(&self, recent: u64) -> Result<AlertStatus> {
        self.outbox_status(recent)
    }

    fn add_dead_letters(&self, letters: &[DeadLetter]) -> Result<()> {
        self.dead_letters_add(letters)
    }

    fn dead_letters(&self, consumer: &str, after: i64, limit: u64) -> Result<Vec<DeadLetter>> {
        self.dead_letters_list(consumer, after, limit)
    }

    fn remove_dead_letters(&self, consumer: &str, seqs: &[i64]) -> Result<u64> {
        self.dead_letters_remove(consumer, seqs)
    }

    fn dead_letter_counts(&self) -> Result<Vec<(String, u64)>> {
        self.dead_letters_counts()
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod testdb;
#[cfg(test)]
mod tests;
