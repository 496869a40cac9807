//! The retention role (see `tfaudit_store::retention`): pruned days and their return.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use tfaudit_store::retention::{check_record, decode_seqs, encode_seqs};
use tfaudit_store::{PruneOutcome, PruneRequest, PrunedDay, Result, Retention, StoreError, StoredEvent};

use crate::{SqliteStore, ms, rollup, ts};

fn source_id(tx: &Transaction<'_>, name: &str) -> Result<Option<i64>, rusqlite::Error> {
    tx.query_row("SELECT id FROM sources WHERE name = ?1", [name], |r| r.get(0)).optional()
}

/// What still needs events with these seqs locally, if anything: the Merkle tree, when
/// it does not hold them all yet (a removed event must keep its leaf); a consumer that
/// has not read up to the last of them; or a dead letter among them.
fn holder(tx: &Transaction<'_>, seqs: &[i64]) -> rusqlite::Result<Option<String>> {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else { return Ok(None) };
    let tree: Option<i64> = tx.query_row("SELECT last_seq FROM tree_head WHERE id = 1", [], |r| r.get(0)).optional()?;
    if tree.is_none_or(|t| t < last) {
        return Ok(Some(
            "its events are not all in the tamper-evident tree yet (the next checkpoint adds them)".into(),
        ));
    }
    let behind: Option<(String, i64)> = tx
        .query_row("SELECT name, position FROM consumers WHERE position < ?1 ORDER BY position LIMIT 1", [last], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((name, position)) = behind {
        return Ok(Some(format!("the consumer {name} has read only up to seq {position}")));
    }
    let mut stmt = tx.prepare("SELECT consumer, seq FROM dead_letters WHERE seq BETWEEN ?1 AND ?2")?;
    let letters = stmt.query_map([first, last], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for letter in letters {
        let (consumer, seq) = letter?;
        if seqs.binary_search(&seq).is_ok() {
            return Ok(Some(format!("the event at seq {seq} is a dead letter of {consumer}")));
        }
    }
    Ok(None)
}

/// How many events retention removed (and `archive pull` has not put back) have a seq
/// after `after`.
pub(crate) fn removed_after(conn: &rusqlite::Connection, after: i64) -> rusqlite::Result<u64> {
    let whole: i64 = conn
        .prepare_cached("SELECT coalesce(sum(events), 0) FROM pruned_spans WHERE first_seq > ?1")?
        .query_row([after], |r| r.get(0))?;
    let mut n = u64::try_from(whole).unwrap_or(0);
    // Only a day whose seqs lie on both sides of `after` is read.
    let mut stmt = conn.prepare_cached(
        "SELECT p.day, p.seqs FROM pruned_spans s JOIN pruned_days p ON p.source_id = s.source_id AND p.day = s.day
         WHERE s.first_seq <= ?1 AND s.last_seq > ?1",
    )?;
    let mut rows = stmt.query([after])?;
    while let Some(row) = rows.next()? {
        let seqs = decode_seqs(&row.get::<_, Vec<u8>>(1)?).ok_or_else(|| {
            let day: String = row.get(0).unwrap_or_default();
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Blob,
                format!("the record of the pruned day {day} is damaged").into(),
            )
        })?;
        n += (seqs.len() - seqs.partition_point(|s| *s <= after)) as u64;
    }
    Ok(n)
}

/// The source's oldest and newest remaining events, after some were removed.
fn recount_range(tx: &Transaction<'_>, source: i64) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE sources SET
            oldest_ms = (SELECT min(ts_ms) FROM events WHERE source_id = ?1),
            newest_ms = coalesce((SELECT max(ts_ms) FROM events WHERE source_id = ?1), newest_ms)
         WHERE id = ?1",
        [source],
    )?;
    Ok(())
}

impl Retention for SqliteStore {
    fn prune_day(&self, request: &PruneRequest<'_>) -> Result<PruneOutcome> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        let source = source_id(&tx, request.source).map_err(db)?.ok_or_else(|| {
            StoreError::Database(format!("no organization named {:?} in the archive", request.source))
        })?;
        let seqs: Vec<i64> = tx
            .prepare(
                "SELECT seq FROM events INDEXED BY events_by_time
                 WHERE ts_ms >= ?1 AND ts_ms < ?2 AND source_id = ?3 ORDER BY seq",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ms(request.from), ms(request.until), source], |r| r.get(0))?.collect()
            })
            .map_err(db)?;
        if seqs.len() as u64 != request.events
            || seqs.first() != Some(&request.min_seq)
            || seqs.last() != Some(&request.max_seq)
        {
            return Ok(PruneOutcome::Changed);
        }
        if let Some(why) = holder(&tx, &seqs).map_err(db)? {
            return Ok(PruneOutcome::Held(why));
        }
        // Their leaves keep only a prefix of each hash while the events are here; the
        // whole hash stands in for an event once it is gone.
        let hashes: Vec<(i64, tfaudit_store::Hash)> = {
            let mut read = tx
                .prepare_cached("SELECT tfaudit_raw(raw, dict, id, request_id, ts_ms, resource_id, auth_description, accessor_id) FROM events WHERE seq = ?1")
                .map_err(db)?;
            seqs.iter()
                .map(|&seq| {
                    read.query_row([seq], |r| {
                        let raw = r.get_ref(0)?.as_str()?;
                        Ok((seq, tfaudit_store::merkle::event_leaf_hash(seq, request.source, raw.as_bytes())))
                    })
                })
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?
        };
        if let Some(why) = crate::ledger::keep_whole(&tx, &hashes).map_err(db)? {
            return Ok(PruneOutcome::Held(why));
        }
        crate::postings::remove(&tx, &seqs).map_err(db)?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM events WHERE seq = ?1").map_err(db)?;
            for seq in &seqs {
                delete.execute([seq]).map_err(db)?;
            }
        }
        let removed = seqs.len() as i64;
        tx.execute("UPDATE sources SET event_count = max(event_count - ?2, 0) WHERE id = ?1", params![source, removed])
            .map_err(db)?;
        recount_range(&tx, source).map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO pruned_days
                (source_id, day, events, seqs, location, path, sha256, pruned_ms, restored_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
            params![
                source,
                request.day,
                removed,
                encode_seqs(&seqs),
                request.location,
                request.path,
                request.sha256,
                ms(Timestamp::now())
            ],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO pruned_spans (source_id, day, first_seq, last_seq, events) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![source, request.day, seqs.first(), seqs.last(), removed],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        // The day's pages back to the file system (in an archive with incremental
        // auto-vacuum); left in the file, they would only be reused by later events.
        if let Err(e) = crate::upkeep::give_back_free_pages(&conn) {
            tracing::warn!(error = %e, "could not give the space of a removed day back to the file system");
        }
        Ok(PruneOutcome::Pruned(removed as u64))
    }

    fn pruned_days(&self) -> Result<Vec<PrunedDay>> {
        let conn = self.read()?;
        let mut stmt = conn
            .prepare(
                "SELECT s.name, p.day, p.events, p.seqs, p.location, p.path, p.sha256, p.pruned_ms, p.restored_ms
                 FROM pruned_days p JOIN sources s ON s.id = p.source_id ORDER BY s.name, p.day",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(|e| self.db(e))?;
        let mut days = Vec::new();
        for row in rows {
            let (source, day, events, seqs, location, path, sha256, pruned, restored) = row.map_err(|e| self.db(e))?;
            let seqs = decode_seqs(&seqs).ok_or_else(|| StoreError::Corrupt {
                path: self.path.display().to_string(),
                cause: format!("the record of the pruned day {day} of {source} is damaged"),
            })?;
            days.push(PrunedDay {
                source,
                day,
                seqs,
                events: u64::try_from(events).unwrap_or(0),
                location,
                path,
                sha256,
                pruned_at: ts(pruned),
                restored_at: restored.map(ts),
            });
        }
        Ok(days)
    }

    fn restore_day(&self, source: &str, day: &str, events: &[StoredEvent]) -> Result<u64> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        let unknown = || StoreError::Database(format!("the archive has no pruned day {day} of {source:?} to put back"));
        let id = source_id(&tx, source).map_err(db)?.ok_or_else(unknown)?;
        let (seqs, restored): (Vec<u8>, Option<i64>) = tx
            .query_row(
                "SELECT seqs, restored_ms FROM pruned_days WHERE source_id = ?1 AND day = ?2",
                params![id, day],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?
            .ok_or_else(unknown)?;
        check_record(source, day, &seqs, restored.is_some(), events)?;
        self.codec.prepare_writes(&tx, crate::archived(&tx).map_err(db)?).map_err(db)?;
        let mut names = crate::names::Interner::new(&self.names);
        let mut postings = crate::postings::Batch::default();
        {
            let mut writer = rollup::EventWriter::new(&tx, rollup::Duplicate::Refuse).map_err(db)?;
            // Inserted with the next free number, then moved to its own: the write path
            // stays the one every insert takes. The number used in between is never
            // handed out again (AUTOINCREMENT).
            let mut renumber = tx.prepare_cached("UPDATE events SET seq = ?1 WHERE seq = ?2").map_err(db)?;
            for stored in events {
                let keys = writer.insert(&tx, &self.codec, &mut names, &stored.event, id).map_err(db)?;
                renumber.execute(params![stored.seq, tx.last_insert_rowid()]).map_err(db)?;
                if let Some(keys) = keys {
                    postings.add(stored.seq, &keys);
                }
                rollup::record_ingested(&tx, stored.seq, ms(stored.ingested_at)).map_err(db)?;
            }
        }
        postings.write(&tx).map_err(db)?;
        let n = events.len() as i64;
        tx.execute("UPDATE sources SET event_count = event_count + ?2 WHERE id = ?1", params![id, n]).map_err(db)?;
        recount_range(&tx, id).map_err(db)?;
        tx.execute(
            "UPDATE pruned_days SET restored_ms = ?3 WHERE source_id = ?1 AND day = ?2",
            params![id, day, ms(Timestamp::now())],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM pruned_spans WHERE source_id = ?1 AND day = ?2", params![id, day]).map_err(db)?;
        tx.commit().map_err(db)?;
        names.committed();
        Ok(n as u64)
    }
}
