//! The retention role (see `tfaudit_store::retention`): pruned days and their return.

use jiff::Timestamp;
use postgres::Transaction;
use tfaudit_store::retention::{check_record, decode_seqs, encode_seqs};
use tfaudit_store::{PruneOutcome, PruneRequest, PrunedDay, Result, Retention, StoreError, StoredEvent};

use crate::{PostgresStore, count, ms, ts};

fn source_id(tx: &mut Transaction<'_>, name: &str) -> std::result::Result<Option<i64>, postgres::Error> {
    Ok(tx.query_opt("SELECT id FROM sources WHERE name = $1", &[&name])?.map(|r| r.get(0)))
}

/// What still needs events with these seqs locally, if anything (see the SQLite twin).
fn holder(tx: &mut Transaction<'_>, seqs: &[i64]) -> std::result::Result<Option<String>, postgres::Error> {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else { return Ok(None) };
    let tree: Option<i64> = tx.query_opt("SELECT last_seq FROM tree_head WHERE id = 1", &[])?.map(|r| r.get(0));
    if tree.is_none_or(|t| t < last) {
        return Ok(Some(
            "its events are not all in the tamper-evident tree yet (the next checkpoint adds them)".into(),
        ));
    }
    if let Some(r) =
        tx.query_opt("SELECT name, position FROM consumers WHERE position < $1 ORDER BY position LIMIT 1", &[&last])?
    {
        let (name, position): (String, i64) = (r.get(0), r.get(1));
        return Ok(Some(format!("the consumer {name} has read only up to seq {position}")));
    }
    for r in tx.query("SELECT consumer, seq FROM dead_letters WHERE seq BETWEEN $1 AND $2", &[&first, &last])? {
        let (consumer, seq): (String, i64) = (r.get(0), r.get(1));
        if seqs.binary_search(&seq).is_ok() {
            return Ok(Some(format!("the event at seq {seq} is a dead letter of {consumer}")));
        }
    }
    Ok(None)
}

fn recount_range(tx: &mut Transaction<'_>, source: i64) -> std::result::Result<(), postgres::Error> {
    tx.execute(
        "UPDATE sources SET
            oldest_ms = (SELECT min(ts_ms) FROM events WHERE source_id = $1),
            newest_ms = coalesce((SELECT max(ts_ms) FROM events WHERE source_id = $1), newest_ms)
         WHERE id = $1",
        &[&source],
    )?;
    Ok(())
}

impl Retention for PostgresStore {
    fn prune_day(&self, request: &PruneRequest<'_>) -> Result<PruneOutcome> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let db = |e: postgres::Error| self.db(&e);
        let source = source_id(&mut tx, request.source).map_err(db)?.ok_or_else(|| {
            StoreError::Database(format!("no organization named {:?} in the archive", request.source))
        })?;
        // The source's row locked first: a prune and a page of the same organization
        // take turns.
        tx.execute("SELECT 1 FROM sources WHERE id = $1 FOR UPDATE", &[&source]).map_err(db)?;
        let seqs: Vec<i64> = tx
            .query(
                "SELECT seq FROM events WHERE ts_ms >= $1 AND ts_ms < $2 AND source_id = $3 ORDER BY seq",
                &[&ms(request.from), &ms(request.until), &source],
            )
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if seqs.len() as u64 != request.events
            || seqs.first() != Some(&request.min_seq)
            || seqs.last() != Some(&request.max_seq)
        {
            return Ok(PruneOutcome::Changed);
        }
        if let Some(why) = holder(&mut tx, &seqs).map_err(db)? {
            return Ok(PruneOutcome::Held(why));
        }
        let removed = tx.execute("DELETE FROM events WHERE seq = ANY($1)", &[&seqs]).map_err(db)?;
        let removed = i64::try_from(removed).unwrap_or(i64::MAX);
        tx.execute(
            "UPDATE sources SET event_count = greatest(event_count - $2, 0) WHERE id = $1",
            &[&source, &removed],
        )
        .map_err(db)?;
        recount_range(&mut tx, source).map_err(db)?;
        tx.execute(
            "INSERT INTO pruned_days (source_id, day, events, seqs, location, path, sha256, pruned_ms, restored_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)
             ON CONFLICT (source_id, day) DO UPDATE SET events = excluded.events, seqs = excluded.seqs,
                 location = excluded.location, path = excluded.path, sha256 = excluded.sha256,
                 pruned_ms = excluded.pruned_ms, restored_ms = NULL",
            &[
                &source,
                &request.day,
                &removed,
                &encode_seqs(&seqs),
                &request.location,
                &request.path,
                &request.sha256,
                &ms(Timestamp::now()),
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(PruneOutcome::Pruned(count(removed)))
    }

    fn pruned_days(&self) -> Result<Vec<PrunedDay>> {
        let mut conn = self.conn()?;
        let rows = conn
            .client
            .query(
                "SELECT s.name, p.day, p.events, p.seqs, p.location, p.path, p.sha256, p.pruned_ms, p.restored_ms
                 FROM pruned_days p JOIN sources s ON s.id = p.source_id ORDER BY s.name, p.day",
                &[],
            )
            .map_err(|e| self.db(&e))?;
        rows.iter()
            .map(|r| {
                let (source, day): (String, String) = (r.get(0), r.get(1));
                let seqs = decode_seqs(r.get(3)).ok_or_else(|| {
                    StoreError::Database(format!("the record of the pruned day {day} of {source} is damaged"))
                })?;
                Ok(PrunedDay {
                    source,
                    day,
                    seqs,
                    events: count(r.get(2)),
                    location: r.get(4),
                    path: r.get(5),
                    sha256: r.get(6),
                    pruned_at: ts(r.get(7)),
                    restored_at: r.get::<_, Option<i64>>(8).map(ts),
                })
            })
            .collect()
    }

    fn restore_day(&self, source: &str, day: &str, events: &[StoredEvent]) -> Result<u64> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let db = |e: postgres::Error| self.db(&e);
        let unknown = || StoreError::Database(format!("the archive has no pruned day {day} of {source:?} to put back"));
        let id = source_id(&mut tx, source).map_err(db)?.ok_or_else(unknown)?;
        let row = tx
            .query_opt(
                "SELECT seqs, restored_ms FROM pruned_days WHERE source_id = $1 AND day = $2 FOR UPDATE",
                &[&id, &day],
            )
            .map_err(db)?
            .ok_or_else(unknown)?;
        check_record(source, day, row.get(0), row.get::<_, Option<i64>>(1).is_some(), events)?;
        let sources = vec![id; events.len()];
        let n = crate::transfer::insert_events(&mut tx, events, &sources, true).map_err(db)?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        tx.execute("UPDATE sources SET event_count = event_count + $2 WHERE id = $1", &[&id, &n]).map_err(db)?;
        recount_range(&mut tx, id).map_err(db)?;
        tx.execute(
            "UPDATE pruned_days SET restored_ms = $3 WHERE source_id = $1 AND day = $2",
            &[&id, &day, &ms(Timestamp::now())],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(count(n))
    }
}
