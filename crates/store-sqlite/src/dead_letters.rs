//! Dead letters (events a sink's target refused as invalid, kept per consumer and
//! `seq`) and counting a consumer's lag.

use rusqlite::{Connection, OptionalExtension, params};
use tfaudit_store::DeadLetter;

use crate::{ms, ts};

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The events after `after`, counted without reading them: the tree's leaves after
/// it (it has a leaf for each event it holds, in seq order), less the events retention
/// removed after it, plus the events the tree does not hold yet (counted on the table:
/// a range of `seq`, the rowid, steps through each row, but the tree is rarely more
/// than a page behind). A count on the table alone steps through every event after
/// `after`, 130 MB a million; an index of the seqs alone cost 13 bytes an event.
pub fn count_events_after(conn: &Connection, after: i64) -> rusqlite::Result<u64> {
    let on_table = |after: i64| -> rusqlite::Result<u64> {
        let n: i64 =
            conn.prepare_cached("SELECT count(*) FROM events WHERE seq > ?1")?.query_row([after], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let tree: Option<(i64, i64)> = conn
        .query_row("SELECT size, last_seq FROM tree_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((size, last_seq)) = tree.filter(|(_, last_seq)| after < *last_seq) else {
        return on_table(after);
    };
    let leaves = u64::try_from(size).unwrap_or(0).saturating_sub(crate::ledger::leaves_through(conn, after)?);
    let removed = crate::retention::removed_after(conn, after)?;
    Ok(leaves.saturating_sub(removed) + on_table(last_seq)?)
}

pub fn add(conn: &mut Connection, letters: &[DeadLetter]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO dead_letters (consumer, seq, event_id, reason, at_ms, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (consumer, seq) DO UPDATE SET event_id = excluded.event_id, reason = excluded.reason,
                 at_ms = excluded.at_ms, attempts = attempts + excluded.attempts",
        )?;
        for d in letters {
            insert.execute(params![d.consumer, d.seq, d.event_id, d.reason, ms(d.at), big(d.attempts)])?;
        }
    }
    tx.commit()
}

pub(crate) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        consumer: r.get(0)?,
        seq: r.get(1)?,
        event_id: r.get(2)?,
        reason: r.get(3)?,
        at: ts(r.get(4)?),
        attempts: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
    })
}

pub(crate) const COLUMNS: &str = "consumer, seq, event_id, reason, at_ms, attempts";

pub fn list(conn: &Connection, consumer: &str, after: i64, limit: u64) -> rusqlite::Result<Vec<DeadLetter>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE consumer = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))?
    .query_map(params![consumer, after, big(limit)], read)?
    .collect()
}

pub fn remove(conn: &mut Connection, consumer: &str, seqs: &[i64]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut removed = 0;
    {
        let mut delete = tx.prepare_cached("DELETE FROM dead_letters WHERE consumer = ?1 AND seq = ?2")?;
        for seq in seqs {
            removed += delete.execute(params![consumer, seq])? as u64;
        }
    }
    tx.commit()?;
    Ok(removed)
}

pub fn counts(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare_cached("SELECT consumer, count(*) FROM dead_letters GROUP BY consumer ORDER BY consumer")?
        .query_map([], |r| Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0))))?
        .collect()
}
