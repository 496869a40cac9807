//! Keeping the archive's file small after bulk writes.
//!
//! The API pages newest first, so a backfill stores events in falling time order. Each
//! insert into an index led by time (or by hour) then lands at the far left of its
//! B-tree, where SQLite splits a full page in two and leaves both halves half empty:
//! measured on a 50,000-event backfill, `events_by_hour_id`, `events_by_hour_resource`
//! and `events_by_time` were 49% empty. New events arriving later are appended at the
//! right, where pages fill. So once a walk has added a large share of the archive, those
//! indexes are rebuilt (sorted, pages packed full) and the pages they freed are given
//! back to the file system.
//!
//! The rebuild costs a sort of the whole index, so it runs only when the events stored
//! since the last one are at least a quarter of the archive: its cost per event stays
//! bounded however the archive grows.

use rusqlite::{Connection, OptionalExtension};

/// The indexes a newest-first backfill leaves half empty (the others, led by an actor
/// or a kind, are in time order within each key and fill better).
const REBUILT: [&str; 3] = ["events_by_hour_id", "events_by_hour_resource", "events_by_time"];

/// At least this many new events before a rebuild is worth its cost.
const MIN_NEW: u64 = 10_000;

/// After a walk: rebuilds the indexes when the events stored since their last rebuild
/// are at least a quarter of the archive (and [`MIN_NEW`]), then returns free pages to
/// the file system. Whether it rebuilt.
pub(crate) fn after_walk(conn: &mut Connection) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let since: i64 =
        tx.query_row("SELECT reindexed_seq FROM upkeep WHERE id = 1", [], |r| r.get(0)).optional()?.unwrap_or(0);
    let newest: i64 = tx.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
    let new = crate::dead_letters::count_events_after(&tx, since)?;
    let total = crate::archived(&tx)?;
    if new < MIN_NEW || new.saturating_mul(4) < total {
        return Ok(false);
    }
    for index in REBUILT {
        tx.execute_batch(&format!("REINDEX {index}"))?;
    }
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
