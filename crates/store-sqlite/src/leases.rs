//! Leases and instance heartbeats (see `tfaudit_store::Leases`). Expiry is by this
//! process's clock: every process that shares one SQLite file runs on one host.
//! Every write here and every fenced write is an immediate (exclusive) transaction,
//! so a fence check and the write it guards cannot interleave with a takeover.

use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use tfaudit_store::{Fence, Lease, Leases, Result, StoreError, ttl_ms};

use crate::{SqliteStore, ms, ts};

/// Fails with [`StoreError::LeaseLost`] unless `fence` still holds; called inside the
/// guarded write's transaction.
pub(crate) fn check_fence(conn: &Connection, fence: Option<&Fence>) -> rusqlite::Result<Option<StoreError>> {
    let Some(f) = fence else { return Ok(None) };
    let held: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
            params![f.name, f.holder, f.epoch],
            |r| r.get(0),
        )
        .optional()?;
    Ok(held.is_none().then(|| StoreError::LeaseLost { name: f.name.clone() }))
}

fn read_lease(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease { name: r.get(0)?, holder: r.get(1)?, epoch: r.get(2)?, since: ts(r.get(3)?), expires: ts(r.get(4)?) })
}

impl Leases for SqliteStore {
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let now = ms(Timestamp::now());
        let expires = now.saturating_add(ttl_ms(ttl));
        let current: Option<(Option<String>, i64, i64, i64)> = tx
            .query_row("SELECT holder, epoch, since_ms, expires_ms FROM leases WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .map_err(|e| self.db(e))?;
        let (epoch, since) = match current {
            None => {
                tx.execute(
                    "INSERT INTO leases (name, holder, epoch, since_ms, expires_ms) VALUES (?1, ?2, 1, ?3, ?4)",
                    params![name, holder, now, expires],
                )
                .map_err(|e| self.db(e))?;
                (1, now)
            }
            Some((Some(h), epoch, since, until)) if h == holder && until > now => {
                tx.execute("UPDATE leases SET expires_ms = ?2 WHERE name = ?1", params![name, expires])
                    .map_err(|e| self.db(e))?;
                (epoch, since)
            }
            Some((Some(_), _, _, until)) if until > now => return Ok(None),
            Some((_, epoch, _, _)) => {
                tx.execute(
                    "UPDATE leases SET holder = ?2, epoch = ?3, since_ms = ?4, expires_ms = ?5 WHERE name = ?1",
                    params![name, holder, epoch + 1, now, expires],
                )
                .map_err(|e| self.db(e))?;
                (epoch + 1, now)
            }
        };
        tx.commit().map_err(|e| self.db(e))?;
        Ok(Some(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch,
            since: ts(since),
            expires: ts(expires),
        }))
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let expires = ms(Timestamp::now()).saturating_add(ttl_ms(ttl));
        let n = self
            .lock()
            .execute(
                "UPDATE leases SET expires_ms = ?4 WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
                params![lease.name, lease.holder, lease.epoch, expires],
            )
            .map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE leases SET holder = NULL, expires_ms = ?4 WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
                params![lease.name, lease.holder, lease.epoch, ms(Timestamp::now())],
            )
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let conn = self.read()?;
        let mut stmt = conn
            .prepare(
                "SELECT name, holder, epoch, since_ms, expires_ms FROM leases
                 WHERE holder IS NOT NULL AND expires_ms > ?1 ORDER BY name",
            )
            .map_err(|e| self.db(e))?;
        stmt.query_map([ms(Timestamp::now())], read_lease)
            .map_err(|e| self.db(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.db(e))
    }

    fn heartbeat(&self, instance: &str, ttl: Duration) -> Result<()> {
        let now = ms(Timestamp::now());
        let conn = self.lock();
        conn.execute(
            "INSERT INTO instances (name, expires_ms) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET expires_ms = excluded.expires_ms",
            params![instance, now.saturating_add(ttl_ms(ttl))],
        )
        .map_err(|e| self.db(e))?;
        // Long-dead instances would otherwise stay in the table forever.
        conn.execute("DELETE FROM instances WHERE expires_ms < ?1", [now.saturating_sub(86_400_000)])
            .map_err(|e| self.db(e))?;
        Ok(())
    }

    fn live_instances(&self) -> Result<Vec<String>> {
        let conn = self.read()?;
        let mut stmt =
            conn.prepare("SELECT name FROM instances WHERE expires_ms > ?1 ORDER BY name").map_err(|e| self.db(e))?;
        stmt.query_map([ms(Timestamp::now())], |r| r.get(0))
            .map_err(|e| self.db(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.db(e))
    }
}
