//! Leases and instance heartbeats (see `tfaudit_store::Leases`). Expiry is by the
//! database's clock (`clock_timestamp()`), so the instances' clocks may disagree.
//! A takeover updates the lease row; a fenced write locks that row `FOR SHARE` in its
//! own transaction first, so the two serialize: a takeover waits for a fenced write in
//! flight, and a fenced write after a takeover sees the new epoch and writes nothing.

use std::time::Duration;

use tfaudit_store::{Fence, Lease, Leases, Result, StoreError, ttl_ms};

use crate::{PostgresStore, ts};

/// How long a fenced write's transaction may sit idle before the server ends it.
const FENCED_IDLE_LIMIT: &str = "SET LOCAL idle_in_transaction_session_timeout = '2s'";

/// The database's clock, in milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";

impl PostgresStore {
    /// Fails with [`StoreError::LeaseLost`] unless `fence` still holds, locking the
    /// lease row until the transaction ends; called first in a guarded write's
    /// transaction.
    pub(crate) fn check_fence(&self, tx: &mut postgres::Transaction<'_>, fence: Option<&Fence>) -> Result<()> {
        let Some(f) = fence else { return Ok(()) };
        // A holder frozen (SIGSTOP) inside this transaction would keep the lease row
        // (and the seq lock) locked for as long as it is frozen, and the instance
        // taking over would wait on it: the server ends such a transaction once it
        // sits idle this long. Its statements are sent back to back, so a live writer
        // never comes near it.
        tx.batch_execute(FENCED_IDLE_LIMIT).map_err(|e| self.db(&e))?;
        let held = tx
            .query_opt(
                "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 FOR SHARE",
                &[&f.name, &f.holder, &f.epoch],
            )
            .map_err(|e| self.db(&e))?;
        match held {
            Some(_) => Ok(()),
            None => Err(StoreError::LeaseLost { name: f.name.clone() }),
        }
    }
}

fn read_lease(r: &postgres::Row) -> Lease {
    Lease { name: r.get(0), holder: r.get(1), epoch: r.get(2), since: ts(r.get(3)), expires: ts(r.get(4)) }
}

impl Leases for PostgresStore {
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let mut conn = self.conn()?;
        // One statement: insert a free lease, or take it over when it is released,
        // expired or already ours; the row lock of the upsert serializes racers.
        let sql = format!(
            "INSERT INTO leases AS l (name, holder, epoch, since_ms, expires_ms)
             VALUES ($1, $2, 1, {NOW_MS}, {NOW_MS} + $3)
             ON CONFLICT (name) DO UPDATE SET
                 holder = excluded.holder,
                 epoch = CASE WHEN l.holder = excluded.holder AND l.expires_ms > {NOW_MS} THEN l.epoch ELSE l.epoch + 1 END,
                 since_ms = CASE WHEN l.holder = excluded.holder AND l.expires_ms > {NOW_MS} THEN l.since_ms ELSE excluded.since_ms END,
                 expires_ms = excluded.expires_ms
             WHERE l.holder IS NULL OR l.holder = excluded.holder OR l.expires_ms <= {NOW_MS}
             RETURNING name, holder, epoch, since_ms, expires_ms"
        );
        let row = conn.client.query_opt(&sql, &[&name, &holder, &ttl_ms(ttl)]).map_err(|e| self.db(&e))?;
        Ok(row.as_ref().map(read_lease))
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn()?;
        let sql =
            format!("UPDATE leases SET expires_ms = {NOW_MS} + $4 WHERE name = $1 AND holder = $2 AND epoch = $3");
        let n = conn
            .client
            .execute(&sql, &[&lease.name, &lease.holder, &lease.epoch, &ttl_ms(ttl)])
            .map_err(|e| self.db(&e))?;
        Ok(n == 1)
    }

    fn renew_leases(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let names: Vec<&str> = leases.iter().map(|l| l.name.as_str()).collect();
        let holders: Vec<&str> = leases.iter().map(|l| l.holder.as_str()).collect();
        let epochs: Vec<i64> = leases.iter().map(|l| l.epoch).collect();
        let sql = format!(
            "UPDATE leases AS l SET expires_ms = {NOW_MS} + $4
             FROM unnest($1::text[], $2::text[], $3::int8[]) AS r(name, holder, epoch)
             WHERE l.name = r.name AND l.holder = r.holder AND l.epoch = r.epoch
             RETURNING l.name, l.holder, l.epoch"
        );
        let rows = conn.client.query(&sql, &[&names, &holders, &epochs, &ttl_ms(ttl)]).map_err(|e| self.db(&e))?;
        let renewed: std::collections::HashSet<(String, String, i64)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        Ok(leases.iter().map(|l| renewed.contains(&(l.name.clone(), l.holder.clone(), l.epoch))).collect())
    }

    fn release_lease(&self, lease: &Lease) -> Result<()> {
        let mut conn = self.conn()?;
        let sql = format!(
            "UPDATE leases SET holder = NULL, expires_ms = {NOW_MS} WHERE name = $1 AND holder = $2 AND epoch = $3"
        );
        conn.client.execute(&sql, &[&lease.name, &lease.holder, &lease.epoch]).map_err(|e| self.db(&e))?;
        Ok(())
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let mut conn = self.conn()?;
        let sql = format!(
            "SELECT name, holder, epoch, since_ms, expires_ms FROM leases
             WHERE holder IS NOT NULL AND expires_ms > {NOW_MS} ORDER BY name"
        );
        let rows = conn.client.query(&sql, &[]).map_err(|e| self.db(&e))?;
        Ok(rows.iter().map(read_lease).collect())
    }

    fn heartbeat(&self, instance: &str, ttl: Duration) -> Result<()> {
        let mut conn = self.conn()?;
        let upsert = format!(
            "INSERT INTO instances (name, expires_ms) VALUES ($1, {NOW_MS} + $2)
             ON CONFLICT (name) DO UPDATE SET expires_ms = excluded.expires_ms"
        );
        conn.client.execute(&upsert, &[&instance, &ttl_ms(ttl)]).map_err(|e| self.db(&e))?;
        // Long-dead instances would otherwise stay in the table forever.
        let prune = format!("DELETE FROM instances WHERE expires_ms < {NOW_MS} - 86400000");
        conn.client.execute(&prune, &[]).map_err(|e| self.db(&e))?;
        Ok(())
    }

    fn live_instances(&self) -> Result<Vec<String>> {
        let mut conn = self.conn()?;
        let sql = format!("SELECT name FROM instances WHERE expires_ms > {NOW_MS} ORDER BY name");
        let rows = conn.client.query(&sql, &[]).map_err(|e| self.db(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
