//! The embedded archive: one SQLite file in WAL mode, created with mode 0600.
//!
//! Durability: `synchronous=NORMAL` with WAL keeps every committed transaction across
//! a process crash (kill -9). A power loss may roll back the last few commits, but
//! only whole transactions and in order — so the cursor can never get ahead of the
//! events it stands for.

mod alerts;
mod catalogue;
mod compress;
mod dead_letters;
mod glob;
mod leases;
mod ledger;
mod names;
mod plan;
mod postings;
mod reports;
mod retention;
mod rollup;
mod schema;
mod transfer;
mod upkeep;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use rusqlite::{Connection, ErrorCode, OptionalExtension, ToSql, params};
use tfaudit_model::AuditEvent;
use tfaudit_store::{
    ActorCount, AlertFilter, AlertRecord, AlertStatus, AlertWrite, Archive, CommitOutcome, ConsumerPosition, Consumers,
    DayCount, DeadLetter, DeliveryJob, DeliveryOutcome, EventFilter, EventKey, Fence, Gap, KindCount, Leases, Order,
    PageOutcome, PageWrite, Reject, Result, Run, RunCounts, RunResult, RunTally, RunTotals, SeenValues, Source,
    SourceStatus, StoreError, StoredEvent, Summary, Walk,
};

use plan::Plan;
use tfaudit_store::rollup::HOUR_MS;

/// The SQLite archive.
pub struct SqliteStore {
    /// The one connection that writes.
    conn: Mutex<Connection>,
    /// Connections that only read, so that queries (a dashboard, an API) neither wait
    /// for a page being stored nor hold it up: WAL lets readers and a writer proceed
    /// together.
    readers: Mutex<ReaderPool>,
    /// Signalled when a reader is returned or a slot given back, for callers waiting
    /// on a full pool.
    reader_returned: std::sync::Condvar,
    /// How long a caller waits for a read connection before giving up with an error:
    /// a leak or a stuck query must show as an error, never as a hang.
    reader_wait: std::time::Duration,
    /// Tests only: how many of the next reader openings fail after opening, as a
    /// failing setup would (the slot must come back either way).
    #[cfg(test)]
    fail_reader_opens: std::sync::atomic::AtomicUsize,
    path: PathBuf,
    /// What read connections open: the path, or for a read-only archive the URI
    /// that opened it.
    reader_target: (String, rusqlite::OpenFlags),
    checkpointer: Option<Checkpointer>,
    /// The compression dictionaries, shared by every connection's `tfaudit_raw`.
    codec: std::sync::Arc<compress::Codec>,
    /// The keys of `names` the writer has learnt.
    names: names::Cache,
}

/// Read connections at most: each keeps its page cache warm, and with two cores more
/// would only wait for the CPU.
const READERS: usize = 8;

/// How long [`SqliteStore::read`] waits for a free read connection.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The free read connections and how many slots are taken (open connections, in the
/// pool or in use, and openings under way). One mutex guards both so that a waiter
/// cannot miss a slot given back between its check and its wait.
#[derive(Default)]
struct ReaderPool {
    free: Vec<Connection>,
    taken: usize,
}

/// A slot taken for a reader being opened: given back on drop unless the opening
/// succeeded, so that no failure (of the open or of any setup after it) loses one.
struct ReaderSlot<'a> {
    pool: &'a Mutex<ReaderPool>,
    returned: &'a std::sync::Condvar,
    armed: bool,
}

impl Drop for ReaderSlot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).taken -= 1;
            self.returned.notify_one();
        }
    }
}

/// A read connection, returned to the pool when dropped.
struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Mutex<ReaderPool>,
    returned: &'a std::sync::Condvar,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).free.push(conn);
            self.returned.notify_one();
        }
    }
}

/// Copies the WAL into the database file on its own thread and connection, so that the
/// thread storing pages only appends to the WAL: on a 2-core machine this is the
/// difference between one core and two working on a backfill.
struct Checkpointer {
    stop: std::sync::Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Option<Self> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        conn.execute_batch("PRAGMA cache_size = -2000;").ok()?;
        let stop = std::sync::Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tfaudit-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, std::time::Duration::from_millis(200))
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::debug!(error = %e, "background checkpoint skipped");
                    }
                }
            })
            .ok()?;
        Some(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Whether [`SqliteStore::open`] may create a new archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file (mode 0600, its folder 0700) when missing: for sync.
    CreateIfMissing,
    /// Fail with [`StoreError::Missing`] when there is no archive.
    MustExist,
    /// Only read, never write, and never create a file beside the archive: for the
    /// commands that read (an auditor's copy on read-only media works). Fails with
    /// [`StoreError::Missing`] when there is no archive.
    ReadOnly,
}

impl SqliteStore {
    /// Opens (or creates) the archive at `path` and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Missing`], [`StoreError::Open`], [`StoreError::TooNew`] or
    /// [`StoreError::Corrupt`], each with the fix in its message.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Self> {
        let shown = path.display().to_string();
        let open_err = |cause: String| StoreError::Open { path: shown.clone(), cause };
        if !path.exists() {
            if mode != OpenMode::CreateIfMissing {
                return Err(StoreError::Missing { path: shown });
            }
            create_private_file(path).map_err(|e| open_err(e.to_string()))?;
        }
        if mode == OpenMode::ReadOnly {
            return Self::open_read_only(path);
        }
        let conn = Connection::open(path).map_err(|e| classify(&shown, e))?;
        let reader_target = (
            path.to_string_lossy().into_owned(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        );
        let mut store = Self {
            conn: Mutex::new(conn),
            readers: Mutex::new(ReaderPool::default()),
            reader_returned: std::sync::Condvar::new(),
            reader_wait: READER_WAIT,
            #[cfg(test)]
            fail_reader_opens: std::sync::atomic::AtomicUsize::new(0),
            path: path.to_owned(),
            reader_target,
            checkpointer: None,
            codec: std::sync::Arc::default(),
            names: names::Cache::default(),
        };
        // Processes starting together on a new archive (several `watch` instances) race
        // to set it up; SQLite answers some of those races (switching to WAL, upgrading
        // a read lock) with "busy" at once, without waiting: setting up is idempotent,
        // so it is tried again, for as long as the busy timeout would have waited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match store.prepare() {
                Err(StoreError::Busy) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => {
                    result.map_err(|e| match e {
                        StoreError::Database(cause) => open_err(cause),
                        other => other,
                    })?;
                    break;
                }
            }
        }
        if let Err(e) = upkeep::on_open(&mut store.lock()) {
            tracing::warn!(error = %e, "could not build the indexes a killed first backfill left out; the next walk's end tries again");
        }
        if mode == OpenMode::CreateIfMissing {
            store.checkpointer = Checkpointer::start(path);
        }
        Ok(store)
    }

    /// Opens an archive that is only read. A WAL archive needs its `-shm` file, which
    /// SQLite creates beside it; where the folder is not writable (read-only media, a
    /// copy in a 0500 folder) and there is none, the archive is opened as immutable:
    /// then no other process can be writing to it either.
    fn open_read_only(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let file = uri_path(path);
        let attempt = |uri: &str| -> rusqlite::Result<(Connection, i64)> {
            let conn = Connection::open_with_flags(uri, flags)?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            Ok((conn, version))
        };
        let shared = format!("file:{file}?mode=ro");
        let (conn, version, uri) = match attempt(&shared) {
            Ok((c, v)) => (c, v, shared),
            Err(first) if matches!(first.sqlite_error_code(), Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)) => {
                // Where the archive can be written, a read-only connection fails only
                // when the write-ahead log needs recovering (its writer died), which
                // takes a writer: open it as every other command does.
                if std::fs::OpenOptions::new().append(true).open(path).is_ok() {
                    return Self::open(path, OpenMode::MustExist);
                }
                // Immutable opening ignores the write-ahead log: refuse rather than
                // show an archive without its latest transactions.
                let wal = PathBuf::from(format!("{}-wal", path.display()));
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(StoreError::Open {
                        path: shown,
                        cause: format!(
                            "its write-ahead log {} holds transactions that cannot be read without creating {}-shm beside it; \
                             make the folder writable, or copy the archive with `sqlite3 ARCHIVE \".backup COPY\"`",
                            wal.display(),
                            path.display()
                        ),
                    });
                }
                let immutable = format!("file:{file}?mode=ro&immutable=1");
                match attempt(&immutable) {
                    Ok((c, v)) => (c, v, immutable),
                    Err(_) => return Err(classify(&shown, first)),
                }
            }
            Err(e) => return Err(classify(&shown, e)),
        };
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { path: shown, found: version, known });
        }
        if version < known {
            return Err(StoreError::Open {
                path: shown,
                cause: format!(
                    "its schema (version {version}) needs upgrading, which reading cannot do; run `tfaudit sync` on it once where it is writable"
                ),
            });
        }
        Ok(Self {
            conn: Mutex::new(conn),
            readers: Mutex::new(ReaderPool::default()),
            reader_returned: std::sync::Condvar::new(),
            reader_wait: READER_WAIT,
            #[cfg(test)]
            fail_reader_opens: std::sync::atomic::AtomicUsize::new(0),
            path: path.to_owned(),
            reader_target: (uri, flags),
            checkpointer: None,
            codec: std::sync::Arc::default(),
            names: names::Cache::default(),
        })
    }

    /// The archive's file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn prepare(&self) -> Result<()> {
        let mut conn = self.lock();
        let shown = self.path.display().to_string();
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| classify(&shown, e))?;
        glob::register(&conn).map_err(|e| classify(&shown, e))?;
        compress::register(&conn, self.codec.clone(), false).map_err(|e| classify(&shown, e))?;
        names::register(&conn).map_err(|e| classify(&shown, e))?;
        rollup::register(&conn).map_err(|e| classify(&shown, e))?;
        ledger::register(&conn).map_err(|e| classify(&shown, e))?;
        postings::register(&conn).map_err(|e| classify(&shown, e))?;
        // Before the first table exists, so that it applies: larger pages mean fewer
        // B-tree splits and WAL frames per event.
        // Incremental auto-vacuum likewise: pages freed (indexes rebuilt after a backfill,
        // days removed by retention) can then be given back to the file system.
        conn.execute_batch("PRAGMA page_size = 16384; PRAGMA auto_vacuum = INCREMENTAL;")
            .map_err(|e| classify(&shown, e))?;
        // journal_mode answers with a row; the others answer nothing.
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(|e| classify(&shown, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "the archive could not switch to WAL; writes will be slower");
        }
        // journal_size_limit: a write-ahead log that grew during a backfill is cut back
        // when next reset, rather than keeping its largest size on disk for good.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8000; PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = 8000; \
             PRAGMA journal_size_limit = 33554432;",
        )
        .map_err(|e| classify(&shown, e))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| classify(&shown, e))?;
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew { path: shown, found: version, known });
        }
        let mut migrated = false;
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| classify(&shown, e))?;
            // Another process may have migrated while this one waited for the lock.
            let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| classify(&shown, e))?;
            if now > i as i64 {
                continue;
            }
            tx.execute_batch(sql).map_err(|e| classify(&shown, e))?;
            schema::after(i + 1, &tx).map_err(|e| classify(&shown, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(|e| classify(&shown, e))?;
            tx.commit().map_err(|e| classify(&shown, e))?;
            tracing::debug!(version = i + 1, "archive schema migrated");
            migrated = true;
        }
        // A migration that rewrote a table (as 17 and 20 do) leaves the old copy's pages
        // free: back to the file system, in an archive with incremental auto-vacuum.
        if migrated && let Err(e) = upkeep::give_back_free_pages(&conn) {
            tracing::warn!(error = %e, "could not give the space a migration freed back to the file system");
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind
        // (rusqlite rolls back on drop), so the connection stays usable.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A read-only connection from the pool: a free one, a new one while fewer than
    /// [`READERS`] slots are taken, or else the next one returned — waiting at most
    /// `reader_wait`.
    fn read(&self) -> Result<Reader<'_>> {
        let deadline = std::time::Instant::now() + self.reader_wait;
        let mut pool = self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = loop {
            if let Some(conn) = pool.free.pop() {
                return Ok(Reader { conn: Some(conn), pool: &self.readers, returned: &self.reader_returned });
            }
            if pool.taken < READERS {
                pool.taken += 1;
                break ReaderSlot { pool: &self.readers, returned: &self.reader_returned, armed: true };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Database(format!(
                    "no read connection to the archive became free within {}s ({READERS} are in use)",
                    self.reader_wait.as_secs()
                )));
            }
            pool = self.reader_returned.wait_timeout(pool, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        };
        drop(pool);
        let conn = self.open_reader()?;
        let mut slot = slot;
        // The slot now belongs to the connection: returning the reader gives it back.
        slot.armed = false;
        Ok(Reader { conn: Some(conn), pool: &self.readers, returned: &self.reader_returned })
    }

    /// Opens and sets up one read connection.
    fn open_reader(&self) -> Result<Connection> {
        let c = Connection::open_with_flags(&self.reader_target.0, self.reader_target.1).map_err(|e| self.db(e))?;
        #[cfg(test)]
        if self
            .fail_reader_opens
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            })
            .is_ok()
        {
            return Err(StoreError::Database("reader opening failed (test)".into()));
        }
        c.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| self.db(e))?;
        glob::register(&c).map_err(|e| self.db(e))?;
        compress::register(&c, self.codec.clone(), true).map_err(|e| self.db(e))?;
        postings::register(&c).map_err(|e| self.db(e))?;
        // Small caches: eight readers must fit the service's memory budget.
        c.execute_batch("PRAGMA cache_size = -4000; PRAGMA temp_store = MEMORY;").map_err(|e| self.db(e))?;
        Ok(c)
    }

    fn db(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path.display().to_string(), e)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        drop(self.checkpointer.take());
        // Keeps the query planner's statistics fresh; cheap when nothing changed.
        let _ = self.lock().execute_batch("PRAGMA optimize;");
        // The read connections close before the writer, so that the writer is the
        // archive's last connection: only then does SQLite copy the write-ahead log
        // into the file and delete it. Closed last, a read-only connection cannot,
        // and the log (up to `wal_autocheckpoint` pages) stayed beside the archive.
        self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).free.clear();
    }
}

/// A path as the file part of an SQLite URI: what would end or change the path
/// (`?`, `#`, `%`) and anything not plain ASCII is percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn create_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn classify(path: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt { path: path.to_owned(), cause: e.to_string() }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            StoreError::Open { path: path.to_owned(), cause: e.to_string() }
        }
        _ => StoreError::Database(e.to_string()),
    }
}

/// Whether the archive never held an event: no seq was ever handed out.
fn never_stored(conn: &Connection) -> rusqlite::Result<bool> {
    let used: Option<i64> =
        conn.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'events'", [], |r| r.get(0)).optional()?;
    Ok(used.unwrap_or(0) == 0)
}

/// A write named a source id that [`Store::source`] never returned.
/// How many events the archive holds, from the sources' counters (no count of rows).
pub(crate) fn archived(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT coalesce(sum(event_count), 0) FROM sources", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn unknown_source(id: i64) -> StoreError {
    StoreError::Database(format!("no source with id {id} in the archive"))
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ts_opt(ms: Option<i64>) -> Option<Timestamp> {
    ms.map(ts)
}

fn read_walk(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<Walk>> {
    let Some(started) = r.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    Ok(Some(Walk {
        started_at: ts(started),
        since: ts_opt(r.get(at + 1)?),
        next_page: r.get::<_, Option<i64>>(at + 2)?.unwrap_or(1).max(1) as u64,
        page_size: r.get::<_, Option<i64>>(at + 3)?.unwrap_or(0) as u32,
        newest: ts_opt(r.get(at + 4)?),
        oldest: ts_opt(r.get(at + 5)?),
        gap_from: ts_opt(r.get(at + 6)?),
    }))
}

const WALK_COLUMNS: &str =
    "walk_started_ms, walk_since_ms, walk_next_page, walk_page_size, walk_newest_ms, walk_oldest_ms, walk_gap_from_ms";

const EVENT_COLUMNS: &str = "e.seq, e.id, s.name, e.ts_ms, e.organization_id, e.auth_type, e.accessor_id, \
     e.auth_description, e.impersonator_id, e.request_id, e.resource_id, e.resource_type, e.resource_action, tfaudit_raw(e.raw, e.dict, e.id, e.request_id, e.ts_ms, e.resource_id, e.auth_description, e.accessor_id), \
     (SELECT i.ms FROM ingest_times i WHERE i.first_seq <= e.seq ORDER BY i.first_seq DESC LIMIT 1)";

/// An event's row (selected as [`EVENT_COLUMNS`]), its keys resolved with `names`
/// on `conn`.
fn read_event(conn: &Connection, names: &mut names::Resolver, r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.get(0)?,
        source: r.get(2)?,
        ingested_at: ts(r.get(14)?),
        event: AuditEvent {
            id: names::id_at(r, 1)?.unwrap_or_default(),
            timestamp: ts(r.get(3)?),
            organization_id: names.at(conn, r, 4)?,
            auth_type: names.at(conn, r, 5)?,
            accessor_id: names.at(conn, r, 6)?,
            auth_description: names.at(conn, r, 7)?,
            impersonator_id: names.at(conn, r, 8)?,
            request_id: names::id_at(r, 9)?,
            resource_id: names.at(conn, r, 10)?,
            resource_type: names.at(conn, r, 11)?,
            resource_action: names.at(conn, r, 12)?,
            raw: r.get(13)?,
            named: Default::default(),
        },
    })
}

/// A WHERE clause and its bound parameters. Filter values only ever reach SQL as
/// parameters.
struct Where {
    sql: String,
    params: Vec<Box<dyn ToSql>>,
}

impl Where {
    fn new() -> Self {
        Self { sql: String::from("1 = 1"), params: Vec::new() }
    }
    fn and(&mut self, clause: &str, values: Vec<Box<dyn ToSql>>) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self.params.extend(values);
    }
    fn refs(&self) -> Vec<&dyn ToSql> {
        self.params.iter().map(|p| p.as_ref() as &dyn ToSql).collect()
    }
}

/// The hours (`ts_ms / 3600000`) an hour-led index must be probed over: the filter's
/// range within what the archive holds. `None` when nothing can match.
fn hours(conn: &Connection, since_ms: Option<i64>, until_ms: Option<i64>) -> rusqlite::Result<Option<(i64, i64)>> {
    let (oldest, newest): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT min(oldest_ms), max(newest_ms) FROM sources", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(None);
    };
    let from = since_ms.map_or(oldest, |s| s.max(oldest)).div_euclid(HOUR_MS);
    let to = until_ms.map_or(newest, |u| (u - 1).min(newest)).div_euclid(HOUR_MS);
    Ok((from <= to).then_some((from, to)))
}

/// A `runs` row, from its columns `id, started_ms, finished_ms, result, error, pages,
/// requests, retries, new_events, duplicates, rejects`.
fn read_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let result: Option<String> = r.get(3)?;
    let error: Option<String> = r.get(4)?;
    let n = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
    Ok(Run {
        id: r.get(0)?,
        started_at: ts(r.get(1)?),
        finished_at: ts_opt(r.get(2)?),
        result: result.map(|label| match label.as_str() {
            "ok" => RunResult::Ok,
            "interrupted" => RunResult::Interrupted,
            _ => RunResult::Failed(error.unwrap_or_default()),
        }),
        tally: RunTally {
            pages: n(5)?,
            requests: n(6)?,
            retries: n(7)?,
            new_events: n(8)?,
            duplicates: n(9)?,
            rejects: n(10)?,
        },
    })
}

/// A subquery of the `names` keys of the accessors `actor` matches, by id or by name
/// (case-insensitive), and its values.
fn actor_keys(actor: &tfaudit_store::Pattern) -> (String, Vec<Box<dyn ToSql>>) {
    let (id, mut values) = glob::clause("accessor_id", actor, true);
    let (name, more) = glob::clause("description", actor, true);
    values.extend(more);
    (format!("SELECT n.id FROM names n WHERE n.value IN (SELECT accessor_id FROM actors WHERE {id} OR {name})"), values)
}

/// A subquery of the `names` keys of the values `p` matches, and its values.
fn name_keys(p: &tfaudit_store::Pattern) -> (String, Vec<Box<dyn ToSql>>) {
    let (clause, values) = glob::clause("n.value", p, false);
    (format!("SELECT n.id FROM names n WHERE {clause}"), values)
}

/// Builds the WHERE clause over `events e` for a filter, with an explicit time range
/// (which may be narrower than the filter's, for summaries).
fn where_clause(filter: &EventFilter, since_ms: Option<i64>, until_ms: Option<i64>) -> Where {
    let mut w = Where::new();
    if let Some(s) = since_ms {
        w.and("e.ts_ms >= ?", vec![Box::new(s)]);
    }
    if let Some(u) = until_ms {
        w.and("e.ts_ms < ?", vec![Box::new(u)]);
    }
    if let Some(actor) = &filter.actor {
        let (keys, values) = actor_keys(actor);
        w.and(&format!("e.accessor_id IN ({keys})"), values);
    }
    for (column, pattern) in [
        ("e.resource_id", &filter.resource_id),
        ("e.resource_type", &filter.resource_type),
        ("e.resource_action", &filter.action),
    ] {
        if let Some(p) = pattern {
            let (keys, values) = name_keys(p);
            w.and(&format!("{column} IN ({keys})"), values);
        }
    }
    if filter.impersonated {
        w.and("e.impersonator_id IS NOT NULL", vec![]);
    }
    if filter.destroy_run {
        // As the partial index states it, so that the index can answer.
        w.and("e.destroy_run = 1", vec![]);
    }
    if let Some(text) = &filter.text {
        w.and(
            "tfaudit_contains(?, tfaudit_raw(e.raw, e.dict, e.id, e.request_id, e.ts_ms, e.resource_id, e.auth_description, e.accessor_id))",
            vec![Box::new(text.clone())],
        );
    }
    if let Some((t, seq)) = filter.before {
        // `ts_ms <= ?` first, so that the time index bounds the scan.
        w.and("e.ts_ms <= ? AND (e.ts_ms < ? OR e.seq < ?)", vec![Box::new(ms(t)), Box::new(ms(t)), Box::new(seq)]);
    }
    if let Some(org) = &filter.org {
        let (sources, mut values) = org_sources(org);
        let (id, more) = glob::clause("n.value", org, true);
        values.extend(more);
        w.and(
            &format!("(e.source_id IN ({sources}) OR e.organization_id IN (SELECT n.id FROM names n WHERE {id}))"),
            values,
        );
    }
    w
}

/// The ids of the sources whose name or organization id matches `org`.
fn org_sources(org: &tfaudit_store::Pattern) -> (String, Vec<Box<dyn ToSql>>) {
    let (name, mut values) = glob::clause("name", org, true);
    let (id, more) = glob::clause("organization_id", org, true);
    values.extend(more);
    (format!("SELECT id FROM sources WHERE {name} OR {id}"), values)
}

/// The index to read a filter's events through where the planner would not pick it:
/// destroy runs are few, and their partial index holds only them.
fn index_hint(conn: &rusqlite::Connection, filter: &EventFilter) -> rusqlite::Result<&'static str> {
    Ok(if filter.destroy_run { upkeep::if_built(conn, "INDEXED BY events_by_destroy_run")? } else { "" })
}

/// How a query reads `events e`: the text after its FROM, what its ORDER BY starts
/// with, and for a posting list the ranges of buckets to read in turn (each query then
/// binds a range's first and last bucket after the filter's values).
struct Access {
    from: String,
    order: String,
    buckets: Vec<(i64, i64)>,
}

/// How a query reads `events e` for `filter` (plan.rs), the newest (or oldest) `limit`
/// of its matches when there is a limit. A list's conditions are added to `w`, the
/// bucket range last.
fn access(
    conn: &Connection,
    filter: &EventFilter,
    limit: Option<u64>,
    hours: Option<(i64, i64)>,
    order: Order,
    w: &mut Where,
) -> rusqlite::Result<Access> {
    // Until a first backfill has built the lists, its queries read the table.
    let plan = if filter.destroy_run || upkeep::deferred(conn)? {
        Plan::Planner
    } else {
        plan::choose(conn, filter, limit, hours)?
    };
    let unordered = |from: String| Access { from, order: String::new(), buckets: Vec::new() };
    Ok(match plan {
        Plan::Planner => unordered(format!("events e {}", index_hint(conn, filter)?)),
        Plan::TimeIndex => unordered("events e INDEXED BY events_by_time".to_owned()),
        Plan::Postings(list) => {
            let keys = postings::keys(conn, list, filter)?;
            w.and("p.list = ?", vec![Box::new(list as i64)]);
            if let [key] = keys[..] {
                w.and("p.key = ?", vec![Box::new(key)]);
            } else {
                let keys: Vec<String> = keys.iter().map(i64::to_string).collect();
                w.and("p.key IN (SELECT value FROM json_each(?))", vec![Box::new(format!("[{}]", keys.join(",")))]);
            }
            w.and("p.bucket BETWEEN ? AND ?", Vec::new());
            // Buckets after a page's cursor hold nothing the page needs.
            let hours =
                hours.map(|(from, to)| (from, filter.before.map_or(to, |(t, _)| to.min(ms(t).div_euclid(HOUR_MS)))));
            let (first, last) = hours.map_or((1, 0), |h| list.buckets(h));
            // One key's buckets come in order from its rows, and SQLite sorts one bucket
            // at a time, stopping at the limit. Several keys' rows do not, and SQLite
            // sorts every match: so the newest matches are looked for in ranges of
            // buckets, each twice the one before, until the limit is met.
            let buckets = if keys.len() > 1 && limit.is_some() && first <= last {
                postings::ranges(first, last, list, order == Order::NewestFirst)
            } else {
                vec![(first, last)]
            };
            let direction = direction(order);
            Access {
                from: "postings p CROSS JOIN tfaudit_seqs(p.seqs) q CROSS JOIN events e ON e.seq = q.value".to_owned(),
                order: format!("p.bucket {direction}, "),
                buckets,
            }
        }
    })
}

fn direction(order: Order) -> &'static str {
    match order {
        Order::OldestFirst => "ASC",
        Order::NewestFirst => "DESC",
    }
}

/// The values a query over `events e` binds: the filter's, then (for a posting list)
/// the range of buckets, then `more`.
fn bound<'a>(w: &'a Where, buckets: Option<&'a (i64, i64)>, more: &'a [i64]) -> Vec<&'a dyn ToSql> {
    let mut values = w.refs();
    if let Some((first, last)) = buckets {
        values.push(first);
        values.push(last);
    }
    values.extend(more.iter().map(|v| v as &dyn ToSql));
    values
}

/// Sources matching an organization pattern, for the precomputed counts.
fn org_where(filter: &EventFilter, alias: &str) -> Where {
    let mut w = Where::new();
    if let Some(org) = &filter.org {
        let (sources, values) = org_sources(org);
        w.and(&format!("{alias}.source_id IN ({sources})"), values);
    }
    w
}

#[derive(Default)]
struct Tally {
    kinds: HashMap<(String, String), u64>,
    actors: HashMap<String, u64>,
    days: std::collections::BTreeMap<i64, u64>,
    hours: std::collections::BTreeMap<i64, u64>,
    total: u64,
}

impl Tally {
    fn add(&mut self, hour: i64, kind: (String, String), actor: String, n: u64) {
        *self.kinds.entry(kind).or_default() += n;
        *self.actors.entry(actor).or_default() += n;
        *self.days.entry(hour.div_euclid(24)).or_default() += n;
        *self.hours.entry(hour).or_default() += n;
        self.total += n;
    }
}

impl Archive for SqliteStore {
    fn source(&self, name: &str, address: &str) -> Result<Source> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO sources (name, address, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET address = excluded.address",
            params![name, address, ms(Timestamp::now())],
        )
        .map_err(|e| self.db(e))?;
        conn.query_row(
            &format!(
                "SELECT id, name, address, organization_id, cursor_ms, reconciled_ms, {WALK_COLUMNS} FROM sources WHERE name = ?1"
            ),
            [name],
            |r| {
                Ok(Source {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    address: r.get(2)?,
                    organization_id: r.get(3)?,
                    cursor: ts_opt(r.get(4)?),
                    reconciled: ts_opt(r.get(5)?),
                    walk: read_walk(r, 6)?,
                })
            },
        )
        .map_err(|e| self.db(e))
    }

    fn start_run(&self, source_id: i64, started_at: Timestamp) -> Result<i64> {
        let conn = self.lock();
        conn.execute("INSERT INTO runs (source_id, started_ms) VALUES (?1, ?2)", params![source_id, ms(started_at)])
            .map_err(|e| self.db(e))?;
        Ok(conn.last_insert_rowid())
    }

    fn store_page_fenced(&self, page: &PageWrite<'_>, fence: Option<&Fence>) -> Result<PageOutcome> {
        let mut conn = self.lock();
        let now = ms(Timestamp::now());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        if let Some(lost) = leases::check_fence(&tx, fence).map_err(|e| self.db(e))? {
            return Err(lost);
        }
        let mut outcome = PageOutcome::default();
        let mut rollups = tfaudit_store::rollup::Rollups::default();
        let (mut oldest, mut newest): (Option<i64>, Option<i64>) = (None, None);
        let mut organization: Option<&str> = None;
        let archived_before = archived(&tx).map_err(|e| self.db(e))?;
        self.codec.prepare_writes(&tx, archived_before).map_err(|e| self.db(e))?;
        let stored_before: i64 =
            tx.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0)).map_err(|e| self.db(e))?;
        // A first backfill: some indexes are built once at its end (upkeep.rs). The
        // sequence, unlike max(seq), says whether the archive ever held an event.
        if stored_before == 0 && !page.events.is_empty() && never_stored(&tx).map_err(|e| self.db(e))? {
            upkeep::before_first_page(&tx).map_err(|e| self.db(e))?;
        }
        let mut inserted: Vec<(i64, &str)> = Vec::with_capacity(page.events.len());
        let mut names = names::Interner::new(&self.names);
        let mut postings = postings::Batch::default();
        // A first backfill builds the lists at its end.
        let listed = !upkeep::deferred(&tx).map_err(|e| self.db(e))?;
        {
            let mut writer = rollup::EventWriter::new(&tx, rollup::Duplicate::Skip).map_err(|e| self.db(e))?;
            for e in page.events {
                // A first dictionary as soon as the archive holds enough events, within
                // the write: a sync's first write can hold many pages, all left as text
                // were it trained only before the next.
                if archived_before + outcome.inserted == compress::TRAIN_AT {
                    self.codec.prepare_writes(&tx, compress::TRAIN_AT).map_err(|e| self.db(e))?;
                }
                let t = ms(e.timestamp);
                let Some(keys) =
                    writer.insert(&tx, &self.codec, &mut names, e, page.source_id).map_err(|e| self.db(e))?
                else {
                    outcome.duplicates += 1;
                    continue;
                };
                if listed {
                    postings.add(tx.last_insert_rowid(), &keys);
                }
                if inserted.is_empty() {
                    // The page's first new event: the rest follow it in seq.
                    rollup::record_ingested(&tx, tx.last_insert_rowid(), now).map_err(|e| self.db(e))?;
                }
                inserted.push((tx.last_insert_rowid(), e.raw.as_str()));
                outcome.inserted += 1;
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
                newest = Some(newest.map_or(t, |n| n.max(t)));
                if organization.is_none() {
                    organization = e.organization_id.as_deref();
                }
                rollups.add(page.source_id, e);
            }
        }
        rollup::write(&rollups, &tx).map_err(|e| self.db(e))?;
        postings.write(&tx).map_err(|e| self.db(e))?;
        catalogue::write_page_names(&tx, page.source_id, page.events).map_err(|e| self.db(e))?;
        ledger::grow(&tx, page.source_id, stored_before, &inserted).map_err(|e| self.db(e))?;
        for reject in page.rejects {
            let seen: Option<i64> = tx
                .query_row(
                    "SELECT id FROM rejects WHERE source_id = ?1 AND raw = ?2",
                    params![page.source_id, reject.raw],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.db(e))?;
            if let Some(id) = seen {
                tx.execute(
                    "UPDATE rejects SET times_seen = times_seen + 1, last_seen_ms = ?2 WHERE id = ?1",
                    params![id, now],
                )
                .map_err(|e| self.db(e))?;
            } else {
                tx.execute(
                    "INSERT INTO rejects (source_id, run_id, reason, raw, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![page.source_id, page.run_id, reject.reason, reject.raw, now],
                )
                .map_err(|e| self.db(e))?;
                outcome.rejected += 1;
            }
        }
        let w = page.walk;
        let updated = tx
            .execute(
                "UPDATE sources SET
                event_count = event_count + ?2,
                oldest_ms = CASE WHEN ?3 IS NULL THEN oldest_ms ELSE min(coalesce(oldest_ms, ?3), ?3) END,
                newest_ms = CASE WHEN ?4 IS NULL THEN newest_ms ELSE max(coalesce(newest_ms, ?4), ?4) END,
                reject_count = reject_count + ?5,
                organization_id = coalesce(organization_id, ?6),
                walk_started_ms = ?7, walk_since_ms = ?8, walk_next_page = ?9, walk_page_size = ?10,
                walk_newest_ms = ?11, walk_oldest_ms = ?12, walk_gap_from_ms = ?13
             WHERE id = ?1",
                params![
                    page.source_id,
                    outcome.inserted as i64,
                    oldest,
                    newest,
                    outcome.rejected as i64,
                    organization,
                    ms(w.started_at),
                    w.since.map(ms),
                    w.next_page as i64,
                    i64::from(w.page_size),
                    w.newest.map(ms),
                    w.oldest.map(ms),
                    w.gap_from.map(ms),
                ],
            )
            .map_err(|e| self.db(e))?;
        // Foreign keys are off (they would cost every insert a lookup): without this,
        // a page for a source that does not exist would store events no query shows
        // (they join their source) yet every later copy would be dropped as a duplicate.
        // Returning before the commit rolls the whole page back.
        if updated != 1 {
            return Err(unknown_source(page.source_id));
        }
        tx.execute(
            "UPDATE runs SET pages = pages + ?5, new_events = new_events + ?2, duplicates = duplicates + ?3, rejects = rejects + ?4
             WHERE id = ?1",
            params![page.run_id, outcome.inserted as i64, outcome.duplicates as i64, outcome.rejected as i64, page.pages as i64],
        )
        .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        names.committed();
        Ok(outcome)
    }

    fn finish_walk_fenced(
        &self,
        source_id: i64,
        cursor: Option<Timestamp>,
        gap: Option<&Gap>,
        reconciled: Option<Timestamp>,
        fence: Option<&Fence>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        if let Some(lost) = leases::check_fence(&tx, fence).map_err(|e| self.db(e))? {
            return Err(lost);
        }
        let updated = tx
            .execute(
                "UPDATE sources SET
                cursor_ms = CASE WHEN ?2 IS NULL THEN cursor_ms ELSE max(coalesce(cursor_ms, ?2), ?2) END,
                reconciled_ms = coalesce(?3, reconciled_ms),
                walk_started_ms = NULL, walk_since_ms = NULL, walk_next_page = NULL, walk_page_size = NULL,
                walk_newest_ms = NULL, walk_oldest_ms = NULL, walk_gap_from_ms = NULL,
                alert_start_seq = coalesce(alert_start_seq, (SELECT coalesce(max(seq), 0) FROM events))
             WHERE id = ?1",
                params![source_id, cursor.map(ms), reconciled.map(ms)],
            )
            .map_err(|e| self.db(e))?;
        if updated != 1 {
            return Err(unknown_source(source_id));
        }
        if let Some(g) = gap {
            tx.execute(
                "INSERT INTO gaps (source_id, from_ms, to_ms, detected_ms) VALUES (?1, ?2, ?3, ?4)",
                params![source_id, ms(g.from), ms(g.to), ms(g.detected_at)],
            )
            .map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))?;
        // The walk is recorded whatever happens here: a failed rebuild only leaves the
        // file larger, and the next walk's end tries again.
        if let Err(e) = upkeep::after_walk(&mut conn) {
            tracing::warn!(error = %e, "could not rebuild the archive's indexes after a walk; the next walk tries again");
        }
        Ok(())
    }

    fn finish_run(&self, run_id: i64, result: &RunResult, counts: RunCounts) -> Result<()> {
        let error = match result {
            RunResult::Failed(e) => Some(e.as_str()),
            _ => None,
        };
        self.lock()
            .execute(
                "UPDATE runs SET finished_ms = ?2, result = ?3, error = ?4, requests = ?5, retries = ?6 WHERE id = ?1",
                params![
                    run_id,
                    ms(Timestamp::now()),
                    result.label(),
                    error,
                    counts.requests as i64,
                    counts.retries as i64
                ],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    fn events(
        &self,
        filter: &EventFilter,
        order: Order,
        limit: Option<u64>,
        each: &mut dyn FnMut(StoredEvent) -> io::Result<()>,
    ) -> Result<u64> {
        let conn = self.read()?;
        let hours = hours(&conn, filter.since.map(ms), filter.until.map(ms)).map_err(|e| self.db(e))?;
        let mut w = where_clause(filter, filter.since.map(ms), filter.until.map(ms));
        let access = access(&conn, filter, limit, hours, order, &mut w).map_err(|e| self.db(e))?;
        let direction = direction(order);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {} JOIN sources s ON s.id = e.source_id
             WHERE {} ORDER BY {}e.ts_ms {direction}, e.seq {direction} LIMIT ?",
            access.from, w.sql, access.order
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.db(e))?;
        let ranges: Vec<Option<&(i64, i64)>> =
            if access.buckets.is_empty() { vec![None] } else { access.buckets.iter().map(Some).collect() };
        let mut names = names::Resolver::default();
        let mut n = 0;
        for range in ranges {
            let left = limit.map_or(-1, |l| i64::try_from(l.saturating_sub(n)).unwrap_or(i64::MAX));
            if left == 0 {
                break;
            }
            let mut rows = stmt.query(&*bound(&w, range, &[left])).map_err(|e| self.db(e))?;
            while let Some(row) = rows.next().map_err(|e| self.db(e))? {
                each(read_event(&conn, &mut names, row).map_err(|e| self.db(e))?)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn event_keys(
        &self,
        filter: &EventFilter,
        order: Order,
        each: &mut dyn FnMut(EventKey) -> io::Result<()>,
    ) -> Result<u64> {
        let conn = self.read()?;
        let hours = hours(&conn, filter.since.map(ms), filter.until.map(ms)).map_err(|e| self.db(e))?;
        let mut w = where_clause(filter, filter.since.map(ms), filter.until.map(ms));
        // Every match is read, so a list (then sorting the keys, which are small) beats
        // walking the time index over the whole range, which the planner prefers for
        // the order.
        let access = access(&conn, filter, None, hours, order, &mut w).map_err(|e| self.db(e))?;
        let direction = direction(order);
        let sql = format!(
            "SELECT e.seq, e.ts_ms, e.resource_id FROM {} WHERE {} ORDER BY {}e.ts_ms {direction}, e.seq {direction}",
            access.from, w.sql, access.order
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.db(e))?;
        let mut rows = stmt.query(&*bound(&w, access.buckets.first(), &[])).map_err(|e| self.db(e))?;
        let mut names = names::Resolver::default();
        let mut n = 0;
        while let Some(r) = rows.next().map_err(|e| self.db(e))? {
            let key = EventKey {
                seq: r.get(0).map_err(|e| self.db(e))?,
                timestamp: ts(r.get(1).map_err(|e| self.db(e))?),
                resource_id: names.at(&conn, r, 2).map_err(|e| self.db(e))?,
            };
            each(key)?;
            n += 1;
        }
        Ok(n)
    }

    fn event(&self, id: &str) -> Result<Option<StoredEvent>> {
        let conn = self.read()?;
        let packed = names::pack_id(id);
        let by_id = "substr(e.id, -4) = substr(?1, -4) AND e.id = ?1";
        // Until a first backfill has built the prints, every entry of the time index.
        if upkeep::deferred(&conn).map_err(|e| self.db(e))? {
            return conn
                .query_row(
                    &format!("SELECT {EVENT_COLUMNS} FROM events e INDEXED BY events_by_time JOIN sources s ON s.id = e.source_id WHERE {by_id} LIMIT 1"),
                    params![packed],
                    |r| read_event(&conn, &mut names::Resolver::default(), r),
                )
                .optional()
                .map_err(|e| self.db(e));
        }
        let hours = postings::hours_of(&conn, postings::print(packed.bytes())).map_err(|e| self.db(e))?;
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e JOIN sources s ON s.id = e.source_id
                 WHERE e.ts_ms >= ?2 AND e.ts_ms < ?2 + 3600000 AND {by_id} LIMIT 1"
            ))
            .map_err(|e| self.db(e))?;
        for hour in hours {
            let found = stmt
                .query_row(params![packed, hour * HOUR_MS], |r| read_event(&conn, &mut names::Resolver::default(), r))
                .optional()
                .map_err(|e| self.db(e))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn summary(&self, filter: &EventFilter, top: usize) -> Result<Summary> {
        let conn = self.read()?;
        let since = filter.since.map(ms);
        let until = filter.until.map(ms);
        let mut tally = Tally::default();
        let mut names = names::Resolver::default();
        let mut scan = |from: Option<i64>, to: Option<i64>, tally: &mut Tally| -> Result<()> {
            let hours = hours(&conn, from, to).map_err(|e| self.db(e))?;
            let mut w = where_clause(filter, from, to);
            let access = access(&conn, filter, None, hours, Order::OldestFirst, &mut w).map_err(|e| self.db(e))?;
            let sql = format!(
                "SELECT e.ts_ms, e.resource_type, e.resource_action, e.accessor_id FROM {} WHERE {}",
                access.from, w.sql
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.db(e))?;
            let mut rows = stmt.query(&*bound(&w, access.buckets.first(), &[])).map_err(|e| self.db(e))?;
            while let Some(r) = rows.next().map_err(|e| self.db(e))? {
                let t: i64 = r.get(0).map_err(|e| self.db(e))?;
                let mut text = |at| names.at(&conn, r, at).map(Option::unwrap_or_default).map_err(|e| self.db(e));
                let kind = (text(1)?, text(2)?);
                tally.add(t.div_euclid(HOUR_MS), kind, text(3)?, 1);
            }
            Ok(())
        };
        if filter.is_time_and_org_only() {
            // Whole hours come from the hourly counts; the partial hours at either end
            // are counted from the events themselves, so the answer is exact.
            let first_hour = since.map(|s| s.div_euclid(HOUR_MS) + i64::from(s.rem_euclid(HOUR_MS) != 0));
            let end_hour = until.map(|u| u.div_euclid(HOUR_MS));
            if let (Some(a), Some(b)) = (first_hour, end_hour)
                && a >= b
            {
                scan(since, until, &mut tally)?;
            } else {
                if let (Some(s), Some(a)) = (since, first_hour)
                    && s < a * HOUR_MS
                {
                    scan(Some(s), Some(a * HOUR_MS), &mut tally)?;
                }
                if let (Some(u), Some(b)) = (until, end_hour)
                    && b * HOUR_MS < u
                {
                    scan(Some(b * HOUR_MS), Some(u), &mut tally)?;
                }
                for (table, columns) in
                    [("hourly_kinds", "h.resource_type, h.resource_action"), ("hourly_actors", "h.accessor_id")]
                {
                    let mut w = org_where(filter, "h");
                    if let Some(a) = first_hour {
                        w.and("h.hour >= ?", vec![Box::new(a)]);
                    }
                    if let Some(b) = end_hour {
                        w.and("h.hour < ?", vec![Box::new(b)]);
                    }
                    let sql = format!(
                        "SELECT h.hour, {columns}, sum(h.n) FROM {table} h WHERE {} GROUP BY h.hour, {columns}",
                        w.sql
                    );
                    let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.db(e))?;
                    let mut rows = stmt.query(&*w.refs()).map_err(|e| self.db(e))?;
                    while let Some(r) = rows.next().map_err(|e| self.db(e))? {
                        let hour: i64 = r.get(0).map_err(|e| self.db(e))?;
                        if table == "hourly_kinds" {
                            let n: i64 = r.get(3).map_err(|e| self.db(e))?;
                            let kind = (r.get(1).map_err(|e| self.db(e))?, r.get(2).map_err(|e| self.db(e))?);
                            *tally.kinds.entry(kind).or_default() += n as u64;
                            *tally.days.entry(hour.div_euclid(24)).or_default() += n as u64;
                            *tally.hours.entry(hour).or_default() += n as u64;
                            tally.total += n as u64;
                        } else {
                            let n: i64 = r.get(2).map_err(|e| self.db(e))?;
                            *tally.actors.entry(r.get(1).map_err(|e| self.db(e))?).or_default() += n as u64;
                        }
                    }
                }
            }
        } else {
            scan(since, until, &mut tally)?;
        }
        let mut by_kind: Vec<KindCount> = tally
            .kinds
            .into_iter()
            .map(|((resource_type, action), count)| KindCount { resource_type, action, count })
            .collect();
        by_kind.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| (&a.resource_type, &a.action).cmp(&(&b.resource_type, &b.action)))
        });
        by_kind.truncate(top);
        let mut actors: Vec<(String, u64)> = tally.actors.into_iter().collect();
        actors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        actors.truncate(top);
        let mut describe = conn
            .prepare_cached(
                "SELECT description FROM actors WHERE accessor_id = ?1 AND description != '' ORDER BY last_seen_ms DESC LIMIT 1",
            )
            .map_err(|e| self.db(e))?;
        let mut top_actors = Vec::with_capacity(actors.len());
        for (accessor_id, count) in actors {
            let description = describe.query_row([&accessor_id], |r| r.get(0)).optional().map_err(|e| self.db(e))?;
            top_actors.push(ActorCount { accessor_id, description, count });
        }
        let per_day = tally
            .days
            .into_iter()
            .map(|(day, count)| DayCount { day: ts(day * 24 * HOUR_MS).strftime("%Y-%m-%d").to_string(), count })
            .collect();
        let per_hour = tally
            .hours
            .into_iter()
            .map(|(hour, count)| DayCount { day: ts(hour * HOUR_MS).strftime("%Y-%m-%dT%H:00Z").to_string(), count })
            .collect();
        Ok(Summary {
            since: filter.since,
            until: filter.until,
            total: tally.total,
            by_kind,
            top_actors,
            per_day,
            per_hour,
        })
    }

    fn status(&self) -> Result<Vec<SourceStatus>> {
        let conn = self.read()?;
        let mut sources = conn
            .prepare(&format!(
                "SELECT id, name, address, organization_id, event_count, oldest_ms, newest_ms, cursor_ms, reject_count, {WALK_COLUMNS}
                 FROM sources ORDER BY name"
            ))
            .map_err(|e| self.db(e))?;
        let rows = sources
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    SourceStatus {
                        name: r.get(1)?,
                        address: r.get(2)?,
                        organization_id: r.get(3)?,
                        events: r.get::<_, i64>(4)? as u64,
                        oldest: ts_opt(r.get(5)?),
                        newest: ts_opt(r.get(6)?),
                        cursor: ts_opt(r.get(7)?),
                        rejects: r.get::<_, i64>(8)? as u64,
                        walk_in_progress: read_walk(r, 9)?,
                        last_run: None,
                        last_success: None,
                        gaps: Vec::new(),
                        lease: None,
                    },
                ))
            })
            .map_err(|e| self.db(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.db(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, mut status) in rows {
            status.last_run = conn
                .query_row(
                    "SELECT id, started_ms, finished_ms, result, error, pages, requests, retries, new_events, duplicates, rejects
                     FROM runs WHERE source_id = ?1 ORDER BY id DESC LIMIT 1",
                    [id],
                    read_run,
                )
                .optional()
                .map_err(|e| self.db(e))?;
            status.last_success = conn
                .query_row(
                    "SELECT finished_ms FROM runs WHERE source_id = ?1 AND result = 'ok' ORDER BY id DESC LIMIT 1",
                    [id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(|e| self.db(e))?
                .map(ts);
            let mut gaps = conn
                .prepare_cached("SELECT from_ms, to_ms, detected_ms FROM gaps WHERE source_id = ?1 ORDER BY from_ms")
                .map_err(|e| self.db(e))?;
            status.gaps = gaps
                .query_map([id], |r| {
                    Ok(Gap {
                        source: status.name.clone(),
                        from: ts(r.get(0)?),
                        to: ts(r.get(1)?),
                        detected_at: ts(r.get(2)?),
                    })
                })
                .map_err(|e| self.db(e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| self.db(e))?;
            out.push(status);
        }
        SourceStatus::attach_leases(&mut out, &self.leases()?);
        Ok(out)
    }

    fn run_totals(&self, since: Option<Timestamp>, until: Option<Timestamp>, failures: u64) -> Result<Vec<RunTotals>> {
        let conn = self.read()?;
        let (from, to) = (since.map_or(i64::MIN, ms), until.map_or(i64::MAX, ms));
        let sources = conn
            .prepare("SELECT id, name FROM sources ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?.collect())
            .map_err(|e| self.db(e))?;
        let sources: Vec<(i64, String)> = sources;
        let mut out = Vec::with_capacity(sources.len());
        for (id, source) in sources {
            let mut totals = conn
                .query_row(
                    "SELECT count(*), coalesce(sum(result = 'ok'), 0), coalesce(sum(result = 'failed'), 0),
                            coalesce(sum(result = 'interrupted'), 0), coalesce(sum(result IS NULL), 0)
                     FROM runs WHERE source_id = ?1 AND started_ms >= ?2 AND started_ms < ?3",
                    params![id, from, to],
                    |r| {
                        let n = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
                        Ok(RunTotals {
                            source: source.clone(),
                            runs: n(0)?,
                            ok: n(1)?,
                            failed: n(2)?,
                            interrupted: n(3)?,
                            unfinished: n(4)?,
                            last_ok: None,
                            failures: Vec::new(),
                        })
                    },
                )
                .map_err(|e| self.db(e))?;
            totals.last_ok = conn
                .query_row(
                    "SELECT max(finished_ms) FROM runs WHERE source_id = ?1 AND result = 'ok' AND finished_ms < ?2",
                    params![id, to],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map_err(|e| self.db(e))?
                .map(ts);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, started_ms, finished_ms, result, error, pages, requests, retries, new_events, duplicates, rejects
                     FROM runs WHERE source_id = ?1 AND result = 'failed' AND started_ms >= ?2 AND started_ms < ?3
                     ORDER BY id DESC LIMIT ?4",
                )
                .map_err(|e| self.db(e))?;
            totals.failures = stmt
                .query_map(params![id, from, to, i64::try_from(failures).unwrap_or(i64::MAX)], read_run)
                .map_err(|e| self.db(e))?
                .collect::<rusqlite::Result<_>>()
                .map_err(|e| self.db(e))?;
            out.push(totals);
        }
        Ok(out)
    }

    fn rejects(&self, limit: u64) -> Result<Vec<Reject>> {
        let conn = self.read()?;
        let mut stmt = conn
            .prepare(
                "SELECT s.name, r.reason, r.raw, r.first_seen_ms, r.times_seen FROM rejects r JOIN sources s ON s.id = r.source_id
                 ORDER BY r.id DESC LIMIT ?1",
            )
            .map_err(|e| self.db(e))?;
        stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(Reject {
                source: r.get(0)?,
                reason: r.get(1)?,
                raw: r.get(2)?,
                first_seen: ts(r.get(3)?),
                times_seen: r.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(|e| self.db(e))?
        .collect::<rusqlite::Result<_>>()
        .map_err(|e| self.db(e))
    }

    fn newest_seq(&self) -> Result<i64> {
        alerts::newest_seq(&*self.read()?).map_err(|e| self.db(e))
    }

    fn events_after(&self, after: i64, limit: u64, each: &mut dyn FnMut(StoredEvent) -> io::Result<()>) -> Result<u64> {
        let conn = self.read()?;
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e JOIN sources s ON s.id = e.source_id WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2"
            ))
            .map_err(|e| self.db(e))?;
        let mut rows = stmt.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)]).map_err(|e| self.db(e))?;
        let mut names = names::Resolver::default();
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| self.db(e))? {
            each(read_event(&conn, &mut names, row).map_err(|e| self.db(e))?)?;
            n += 1;
        }
        Ok(n)
    }

    fn event_bytes_after(
        &self,
        after: i64,
        limit: u64,
        each: &mut dyn FnMut(i64, &str, &str) -> io::Result<()>,
    ) -> Result<u64> {
        let conn = self.read()?;
        let names: HashMap<i64, String> = conn
            .prepare_cached("SELECT id, name FROM sources")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.db(e))?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, source_id, tfaudit_raw(raw, dict, id, request_id, ts_ms, resource_id, auth_description, accessor_id) FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.db(e))?;
        let mut rows = stmt.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)]).map_err(|e| self.db(e))?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| self.db(e))? {
            let seq: i64 = row.get(0).map_err(|e| self.db(e))?;
            let source: i64 = row.get(1).map_err(|e| self.db(e))?;
            let raw = row.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(|e| self.db(e))?;
            let name = names.get(&source).ok_or_else(|| unknown_source(source))?;
            each(seq, name, raw)?;
            n += 1;
        }
        Ok(n)
    }

    fn count_events_after(&self, after: i64) -> Result<u64> {
        dead_letters::count_events_after(&*self.read()?, after).map_err(|e| self.db(e))
    }

    fn seen_values(&self, before: Option<Timestamp>) -> Result<SeenValues> {
        alerts::seen_values(&*self.read()?, before).map_err(|e| self.db(e))
    }

    fn alert_start_points(&self) -> Result<Vec<(String, Option<i64>)>> {
        alerts::alert_start_points(&*self.read()?).map_err(|e| self.db(e))
    }

    fn seen_values_up_to(&self, seq: i64) -> Result<SeenValues> {
        alerts::seen_values_up_to(&*self.read()?, seq).map_err(|e| self.db(e))
    }

    fn compact(&self, after: i64, batch: u64) -> Result<(u64, i64)> {
        let mut conn = self.lock();
        // First (a call from the start), the tree's blocks an older tfaudit wrote, each
        // batch in a transaction of its own; they are not counted as events compressed.
        let mut block = Some(-1).filter(|_| after == 0);
        while let Some(from) = block {
            let tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
            block = ledger::rewrite_older_blocks(&tx, from, 64).map_err(|e| self.db(e))?;
            tx.commit().map_err(|e| self.db(e))?;
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let done = compress::compact(&tx, &self.codec, archived(&tx).map_err(|e| self.db(e))?, after, batch)
            .map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(done)
    }

    fn reclaim_space(&self) -> Result<()> {
        // VACUUM also turns an archive made before incremental auto-vacuum into one.
        upkeep::sorting_on_disk(&mut self.lock(), |conn| conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM"))
            .map_err(|e| self.db(e))
    }
}

impl Consumers for SqliteStore {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerPosition>> {
        alerts::consumer(&*self.read()?, name).map_err(|e| self.db(e))
    }

    fn commit_consumer(&self, name: &str, expected: Option<i64>, position: &ConsumerPosition) -> Result<CommitOutcome> {
        alerts::commit_consumer(&mut self.lock(), name, expected, position).map_err(|e| self.db(e))
    }

    fn commit_alerts(
        &self,
        expected: Option<i64>,
        position: &ConsumerPosition,
        new: &[AlertWrite],
    ) -> Result<CommitOutcome> {
        alerts::commit_alerts(&mut self.lock(), expected, position, new).map_err(|e| self.db(e))
    }

    fn claim_delivery(
        &self,
        destination: &str,
        now: Timestamp,
        due_by: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Option<DeliveryJob>> {
        alerts::claim_delivery(&mut self.lock(), destination, now, due_by, lease).map_err(|e| self.db(e))
    }

    fn open_delivery_destinations(&self) -> Result<Vec<String>> {
        alerts::open_delivery_destinations(&*self.read()?).map_err(|e| self.db(e))
    }

    fn finish_delivery(&self, job: &DeliveryJob, outcome: &DeliveryOutcome) -> Result<bool> {
        alerts::finish_delivery(&mut self.lock(), job.delivery_id, job.claim, outcome).map_err(|e| self.db(e))
    }

    fn alerts(&self, filter: &AlertFilter, limit: u64) -> Result<Vec<AlertRecord>> {
        alerts::alerts(&*self.read()?, filter, limit).map_err(|e| self.db(e))
    }

    fn alert(&self, id: i64) -> Result<Option<AlertRecord>> {
        alerts::alert(&*self.read()?, id).map_err(|e| self.db(e))
    }

    fn alert_status(&self, recent: u64) -> Result<AlertStatus> {
        alerts::alert_status(&*self.read()?, recent).map_err(|e| self.db(e))
    }

    fn add_dead_letters(&self, letters: &[DeadLetter]) -> Result<()> {
        dead_letters::add(&mut self.lock(), letters).map_err(|e| self.db(e))
    }

    fn dead_letters(&self, consumer: &str, after: i64, limit: u64) -> Result<Vec<DeadLetter>> {
        dead_letters::list(&*self.read()?, consumer, after, limit).map_err(|e| self.db(e))
    }

    fn remove_dead_letters(&self, consumer: &str, seqs: &[i64]) -> Result<u64> {
        dead_letters::remove(&mut self.lock(), consumer, seqs).map_err(|e| self.db(e))
    }

    fn dead_letter_counts(&self) -> Result<Vec<(String, u64)>> {
        dead_letters::counts(&*self.read()?).map_err(|e| self.db(e))
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod tests;
