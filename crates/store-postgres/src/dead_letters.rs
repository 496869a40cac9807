//! Dead letters (events a sink's target refused as invalid, kept per consumer and
//! `seq`) and counting a consumer's lag.

use tfaudit_store::{DeadLetter, Result};

use crate::{PostgresStore, big, count, ms, nul_free, ts};

pub(crate) const COLUMNS: &str = "consumer, seq, event_id, reason, at_ms, attempts";

pub(crate) fn read(r: &postgres::Row) -> DeadLetter {
    DeadLetter {
        consumer: r.get(0),
        seq: r.get(1),
        event_id: r.get(2),
        reason: r.get(3),
        at: ts(r.get(4)),
        attempts: count(r.get(5)),
    }
}

impl PostgresStore {
    /// An index-only range scan of the primary key: the heap is not read once vacuum
    /// has marked its pages all-visible, which autovacuum does for a table only
    /// appended to.
    pub(crate) fn query_count_events_after(&self, after: i64) -> Result<u64> {
        let mut conn = self.conn()?;
        let stmt = conn.prepare("SELECT count(*) FROM events WHERE seq > $1").map_err(|e| self.db(&e))?;
        Ok(count(conn.client.query_one(&stmt, &[&after]).map_err(|e| self.db(&e))?.get(0)))
    }

    pub(crate) fn dead_letters_add(&self, letters: &[DeadLetter]) -> Result<()> {
        let mut conn = self.conn()?;
        let insert = conn
            .prepare(
                "INSERT INTO dead_letters (consumer, seq, event_id, reason, at_ms, attempts) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (consumer, seq) DO UPDATE SET event_id = excluded.event_id, reason = excluded.reason,
                     at_ms = excluded.at_ms, attempts = dead_letters.attempts + excluded.attempts",
            )
            .map_err(|e| self.db(&e))?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        for d in letters {
            tx.execute(
                &insert,
                &[
                    &nul_free(&d.consumer),
                    &d.seq,
                    &nul_free(&d.event_id),
                    &nul_free(&d.reason),
                    &ms(d.at),
                    &big(d.attempts),
                ],
            )
            .map_err(|e| self.db(&e))?;
        }
        tx.commit().map_err(|e| self.db(&e))
    }

    pub(crate) fn dead_letters_list(&self, consumer: &str, after: i64, limit: u64) -> Result<Vec<DeadLetter>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE consumer = $1 AND seq > $2 ORDER BY seq LIMIT $3"
            ))
            .map_err(|e| self.db(&e))?;
        Ok(conn
            .client
            .query(&stmt, &[&nul_free(consumer), &after, &big(limit)])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(read)
            .collect())
    }

    pub(crate) fn dead_letters_remove(&self, consumer: &str, seqs: &[i64]) -> Result<u64> {
        let mut conn = self.conn()?;
        let stmt =
            conn.prepare("DELETE FROM dead_letters WHERE consumer = $1 AND seq = ANY($2)").map_err(|e| self.db(&e))?;
        conn.client.execute(&stmt, &[&nul_free(consumer), &seqs]).map_err(|e| self.db(&e))
    }

    pub(crate) fn dead_letters_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare("SELECT consumer, count(*) FROM dead_letters GROUP BY consumer ORDER BY consumer")
            .map_err(|e| self.db(&e))?;
        Ok(conn
            .client
            .query(&stmt, &[])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| (r.get(0), count(r.get(1))))
            .collect())
    }
}
