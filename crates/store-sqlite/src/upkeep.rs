//! Keeping the archive's file small, and its first backfill cheap.
//!
//! The API pages newest first, so a backfill stores events in falling time order. Each
//! insert into an index led by time (or by hour) then lands at the far left of its
//! B-tree, where SQLite splits a full page in two and leaves both halves half empty:
//! measured on a 50,000-event backfill, `events_by_hour_id`, `events_by_hour_resource`
//! and `events_by_time` were 49% empty. New events arriving later are appended at the
//! right, where pages fill. So:
//!
//! - A first backfill (into an archive that never held an event) leaves out the indexes
//!   it does not need ([`DEFERRED`]) and the posting lists, and builds them once at the end
//!   of its walk: one sort instead of an insert per event, and pages packed full. Until
//!   then, queries that would use them read the table instead, and give the same
//!   answers. A backfill killed half way builds them at the end of the walk that
//!   resumes it (or when the archive is next opened with no walk under way).
//! - After a walk that added at least a quarter of the archive, the indexes and hourly
//!   rollups it filled out of order are rebuilt ([`REBUILT`]), and the freed pages given
//!   back to the file system. A rebuild sorts the whole B-tree, so the quarter keeps its
//!   cost per event bounded however the archive grows.

use rusqlite::{Connection, OptionalExtension};

/// Indexes a first backfill builds at its end, with their definitions (as in
/// schema.rs). None is needed to store a page; a query that names one (`INDEXED BY`)
/// does so through [`if_built`]. Built at the end, an index is packed, where one
/// filled by a newest-first walk's inserts is left about 40% empty.
const DEFERRED: [(&str, &str); 2] = [
    (
        "events_by_destroy_run",
        "CREATE INDEX IF NOT EXISTS events_by_destroy_run ON events (ts_ms) WHERE destroy_run = 1",
    ),
    (
        "events_by_impersonator",
        "CREATE INDEX IF NOT EXISTS events_by_impersonator ON events (impersonator_id) WHERE impersonator_id IS NOT NULL",
    ),
];

/// The B-trees a newest-first backfill leaves half empty, rebuilt after a large walk:
/// the index by time, and the hourly rollups, WITHOUT ROWID tables led by the hour, which
/// `REINDEX` rebuilds as it does an index (measured on 200,000 of the simulator's
/// events: `hourly_kinds` 835 KB, 48% of it empty, to 459 KB). And the posting lists
/// (since migration 21; a WITHOUT ROWID table too), built whole at a first backfill's
/// end but then grown a row at a time by the pages after it: 200,000 events' lists
/// were 1.56 MB, 10% empty, and are 1.43 MB rebuilt. And the ids' prints (since
/// migration 24), grown with the lists.
const REBUILT: [&str; 5] = ["events_by_time", "hourly_kinds", "hourly_actors", "postings", "id_prints"];

/// `hint` (`INDEXED BY <index>`) for a query, or nothing while a first backfill has
/// left that index out: the planner then reads the table or another index, with the
/// same answers.
pub(crate) fn if_built(conn: &Connection, hint: &'static str) -> rusqlite::Result<&'static str> {
    let name = hint.trim_start_matches("INDEXED BY").trim();
    let exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = ?1)")?
        .query_row([name], |r| r.get(0))?;
    Ok(if exists { hint } else { "" })
}

/// At least this many new events before a rebuild is worth its cost.
const MIN_NEW: u64 = 10_000;

/// Before the first page an archive ever stores (in the page's transaction): leaves
/// the [`DEFERRED`] indexes out until the walk ends.
pub(crate) fn before_first_page(tx: &Connection) -> rusqlite::Result<()> {
    for (name, _) in DEFERRED {
        tx.execute_batch(&format!("DROP INDEX IF EXISTS {name}"))?;
    }
    tx.execute("INSERT INTO upkeep (id, deferred) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET deferred = 1", [])?;
    Ok(())
}

/// Whether a first backfill has left indexes (and the posting lists) out.
pub(crate) fn deferred(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(conn.query_row("SELECT deferred FROM upkeep WHERE id = 1", [], |r| r.get(0)).optional()?.unwrap_or(false))
}

/// Builds the indexes a first backfill left out, if it did; whether it built them.
fn build_deferred(tx: &Connection) -> rusqlite::Result<bool> {
    if !deferred(tx)? {
        return Ok(false);
    }
    for (_, create) in DEFERRED {
        tx.execute_batch(create)?;
    }
    crate::postings::build(tx)?;
    tx.execute("UPDATE upkeep SET deferred = 0 WHERE id = 1", [])?;
    Ok(true)
}

/// When an archive is opened for writing: builds the indexes a first backfill left
/// out if no walk is under way to build them at its end (its sync was killed, and
/// the organization is no longer synced).
pub(crate) fn on_open(conn: &mut Connection) -> rusqlite::Result<()> {
    // Read first, without the write lock, as nearly every open finds nothing to do.
    if !deferred(conn)? {
        return Ok(());
    }
    sorting_on_disk(conn, build_if_no_walk)
}

fn build_if_no_walk(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let walking: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM sources WHERE walk_started_ms IS NOT NULL)", [], |r| r.get(0))?;
    if !walking && build_deferred(&tx)? {
        tx.commit()?;
    }
    Ok(())
}

/// After a walk: builds the indexes a first backfill left out; rebuilds the others it
/// filled out of order when the events stored since their last rebuild are at least a
/// quarter of the archive (and [`MIN_NEW`]), then returns free pages to the file
/// system. Whether it built or rebuilt any.
pub(crate) fn after_walk(conn: &mut Connection) -> rusqlite::Result<bool> {
    sorting_on_disk(conn, build_and_rebuild)
}

/// Runs `f` with SQLite's temporary files on disk. An index built or rebuilt is sorted
/// in them (and VACUUM writes its copy of the archive there); with the writer's `temp_store = MEMORY` the whole sort would be held in
/// memory (measured: a 1,000,000-event backfill then peaked at 149 MiB, where it
/// otherwise stays under 100). On disk, the sort keeps about the page cache's size in
/// memory and spills the rest.
pub(crate) fn sorting_on_disk<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.execute_batch("PRAGMA temp_store = FILE")?;
    let result = f(conn);
    let restored = conn.execute_batch("PRAGMA temp_store = MEMORY");
    let value = result?;
    restored?;
    Ok(value)
}

fn build_and_rebuild(conn: &mut Connection) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let built = build_deferred(&tx)?;
    let since: i64 =
        tx.query_row("SELECT reindexed_seq FROM upkeep WHERE id = 1", [], |r| r.get(0)).optional()?.unwrap_or(0);
    let new = crate::dead_letters::count_events_after(&tx, since)?;
    let total = crate::archived(&tx)?;
    if new < MIN_NEW || new.saturating_mul(4) < total {
        if built {
            tx.commit()?;
        }
        return Ok(built);
    }
    // None of them is deferred, so none was just built packed, but for the posting
    // lists and the prints, which a first backfill's end builds just before.
    for btree in REBUILT {
        if built && ["postings", "id_prints"].contains(&btree) {
            continue;
        }
        tx.execute_batch(&format!("REINDEX {btree}"))?;
    }
    let newest: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
    tx.execute(
        "INSERT INTO upkeep (id, reindexed_seq) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET reindexed_seq = excluded.reindexed_seq",
        [newest],
    )?;
    tx.commit()?;
    give_back_free_pages(conn)?;
    Ok(true)
}

/// Truncates the file by its free pages, in an archive made with incremental
/// auto-vacuum (new ones are; `tfaudit compact --vacuum` converts an older one). In
/// any other archive it does nothing.
pub(crate) fn give_back_free_pages(conn: &Connection) -> rusqlite::Result<()> {
    // The pragma answers with a row per step; they are read to the end so that it runs whole.
    let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}
