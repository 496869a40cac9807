//! The consumers' role: named cursors over `seq` (the alert engine is [`ALERTS`]), and
//! the alert outbox with leased deliveries.

use jiff::Timestamp;
use tfaudit_store::{
    Alert, AlertFilter, AlertRecord, AlertStatus, AlertWrite, CommitOutcome, ConsumerPosition, DeliveryJob,
    DeliveryOutcome, DeliveryRecord, DeliveryState, DestinationHealth, Result,
};

use crate::{Lease, PostgresStore, big, count, ms, nul_free, ts, ts_opt};

/// The alert engine's row in `consumers`.
use tfaudit_store::ALERTS_CONSUMER as ALERTS;

pub(crate) const ALERT_COLUMNS: &str = "a.id, a.key, a.rule, a.severity, a.group_key, a.title, a.text, a.source, a.event_seq, a.event_id, \
     a.event_ms, a.count, a.window_start_ms, a.window_end_ms, a.link, a.event, a.raised_ms";

pub(crate) fn read_alert(r: &postgres::Row) -> AlertRecord {
    AlertRecord {
        id: r.get(0),
        alert: Alert {
            key: r.get(1),
            rule: r.get(2),
            severity: r.get(3),
            group: r.get(4),
            title: r.get(5),
            text: r.get(6),
            source: r.get(7),
            event_seq: r.get(8),
            event_id: r.get(9),
            event_time: ts(r.get(10)),
            count: count(r.get(11)),
            window_start: ts_opt(r.get(12)),
            window_end: ts_opt(r.get(13)),
            link: r.get(14),
            event: r.get(15),
        },
        raised_at: ts(r.get(16)),
        deliveries: Vec::new(),
    }
}

fn read_delivery(r: &postgres::Row) -> DeliveryRecord {
    let state: String = r.get(2);
    let state = DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending);
    DeliveryRecord {
        id: r.get(0),
        destination: r.get(1),
        state,
        attempts: count(r.get(3)),
        next_attempt: if matches!(state, DeliveryState::Pending | DeliveryState::Failing) {
            ts_opt(r.get(4))
        } else {
            None
        },
        last_error: r.get(5),
        delivered_at: ts_opt(r.get(6)),
    }
}

impl PostgresStore {
    /// Fills in each alert's deliveries.
    fn with_deliveries(&self, conn: &mut Lease<'_>, mut alerts: Vec<AlertRecord>) -> Result<Vec<AlertRecord>> {
        let stmt = conn
            .prepare(
                "SELECT id, destination, state, attempts, next_attempt_ms, last_error, delivered_ms FROM deliveries
                 WHERE alert_id = $1 ORDER BY destination",
            )
            .map_err(|e| self.db(&e))?;
        for a in &mut alerts {
            a.deliveries =
                conn.client.query(&stmt, &[&a.id]).map_err(|e| self.db(&e))?.iter().map(read_delivery).collect();
        }
        Ok(alerts)
    }

    /// A named consumer's position and state; `None` before it first committed.
    pub(crate) fn consumer_cursor(&self, name: &str) -> Result<Option<ConsumerPosition>> {
        let mut conn = self.conn()?;
        self.cursor_on(&mut conn, name)
    }

    fn cursor_on(&self, conn: &mut Lease<'_>, name: &str) -> Result<Option<ConsumerPosition>> {
        let stmt = conn.prepare("SELECT position, state FROM consumers WHERE name = $1").map_err(|e| self.db(&e))?;
        Ok(conn
            .client
            .query_opt(&stmt, &[&name])
            .map_err(|e| self.db(&e))?
            .map(|r| ConsumerPosition { position: r.get(0), state: r.get(1) }))
    }

    /// Moves consumer `name` from `expected` to `cursor` (compare and set, first, so
    /// that a loser writes nothing) and stores the new alerts with their deliveries,
    /// in one transaction.
    pub(crate) fn outbox_commit(
        &self,
        name: &str,
        expected: Option<i64>,
        cursor: &ConsumerPosition,
        alerts: &[AlertWrite],
    ) -> Result<CommitOutcome> {
        let mut conn = self.conn()?;
        let insert_cursor = conn
            .prepare("INSERT INTO consumers (name, position, state) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .map_err(|e| self.db(&e))?;
        let move_cursor = conn
            .prepare(
                "UPDATE consumers SET position = $2, state = $3, updated_at = now() WHERE name = $1 AND position = $4",
            )
            .map_err(|e| self.db(&e))?;
        let insert_alert = conn
            .prepare(
                "INSERT INTO alerts (key, rule, severity, group_key, title, text, source, event_seq, event_id, event_ms, count,
                                     window_start_ms, window_end_ms, link, event, raised_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (key) DO NOTHING RETURNING id",
            )
            .map_err(|e| self.db(&e))?;
        let insert_delivery = conn
            .prepare(
                "INSERT INTO deliveries (alert_id, destination, state, next_attempt_ms) VALUES ($1, $2, 'pending', $3)
                 ON CONFLICT DO NOTHING",
            )
            .map_err(|e| self.db(&e))?;
        let now = ms(Timestamp::now());
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let moved = match expected {
            None => tx.execute(&insert_cursor, &[&name, &cursor.position, &cursor.state]),
            Some(e) => tx.execute(&move_cursor, &[&name, &cursor.position, &cursor.state, &e]),
        }
        .map_err(|e| self.db(&e))?;
        if moved != 1 {
            // Dropping the transaction rolls it back.
            return Ok(CommitOutcome::Conflict);
        }
        let mut new_alerts = 0;
        for write in alerts {
            let a = &write.alert;
            let row = tx
                .query_opt(
                    &insert_alert,
                    &[
                        &nul_free(&a.key),
                        &nul_free(&a.rule),
                        &a.severity,
                        &a.group.as_deref().map(nul_free),
                        &nul_free(&a.title),
                        &nul_free(&a.text),
                        &nul_free(&a.source),
                        &a.event_seq,
                        &nul_free(&a.event_id),
                        &ms(a.event_time),
                        &big(a.count),
                        &a.window_start.map(ms),
                        &a.window_end.map(ms),
                        &a.link.as_deref().map(nul_free),
                        &nul_free(&a.event),
                        &now,
                    ],
                )
                .map_err(|e| self.db(&e))?;
            let Some(row) = row else { continue };
            new_alerts += 1;
            let id: i64 = row.get(0);
            for d in &write.destinations {
                tx.execute(&insert_delivery, &[&id, d, &now]).map_err(|e| self.db(&e))?;
            }
        }
        tx.commit().map_err(|e| self.db(&e))?;
        Ok(CommitOutcome::Committed { new_alerts })
    }

    /// Claims the due delivery first in line; `SKIP LOCKED` lets instances claiming at
    /// once each take a different one instead of waiting for each other.
    pub(crate) fn outbox_claim(
        &self,
        destination: &str,
        now: Timestamp,
        due_by: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Option<DeliveryJob>> {
        let mut conn = self.conn()?;
        let claim = conn
            .prepare(
                "UPDATE deliveries SET lease_until_ms = $4
                 WHERE id = (SELECT id FROM deliveries
                             WHERE destination = $1 AND state IN ('pending', 'failing') AND next_attempt_ms <= $2
                               AND (lease_until_ms IS NULL OR lease_until_ms < $3)
                             ORDER BY next_attempt_ms, id LIMIT 1
                             FOR UPDATE SKIP LOCKED)
                 RETURNING id, alert_id, attempts",
            )
            .map_err(|e| self.db(&e))?;
        let alert =
            conn.prepare(&format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = $1")).map_err(|e| self.db(&e))?;
        let now_ms = ms(now);
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let Some(row) = tx.query_opt(&claim, &[&destination, &ms(due_by), &now_ms, &until]).map_err(|e| self.db(&e))?
        else {
            return Ok(None);
        };
        let (id, alert_id, attempts): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let alert = read_alert(&tx.query_one(&alert, &[&alert_id]).map_err(|e| self.db(&e))?);
        tx.commit().map_err(|e| self.db(&e))?;
        Ok(Some(DeliveryJob {
            delivery_id: id,
            destination: destination.to_owned(),
            attempts: count(attempts),
            alert,
            claim: until,
        }))
    }

    pub(crate) fn outbox_open_destinations(&self) -> Result<Vec<String>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare("SELECT DISTINCT destination FROM deliveries WHERE state IN ('pending', 'failing') ORDER BY destination")
            .map_err(|e| self.db(&e))?;
        Ok(conn.client.query(&stmt, &[]).map_err(|e| self.db(&e))?.iter().map(|r| r.get(0)).collect())
    }

    /// Records an attempt's outcome if the claim `claim` is still the delivery's last
    /// (see `Consumers::finish_delivery`); every statement here is keyed by it.
    pub(crate) fn outbox_finish(&self, id: i64, claim: i64, outcome: &DeliveryOutcome) -> Result<bool> {
        let now = ms(Timestamp::now());
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let recorded = match outcome {
            DeliveryOutcome::Delivered => {
                let n = tx
                    .execute(
                        "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_ms = $3, lease_until_ms = NULL
                         WHERE id = $1 AND lease_until_ms = $2",
                        &[&id, &claim, &now],
                    )
                    .map_err(|e| self.db(&e))?;
                if n == 1 {
                    tx.execute(
                        "UPDATE destinations SET misconfigured = NULL, misconfigured_ms = NULL
                         WHERE name = (SELECT destination FROM deliveries WHERE id = $1)",
                        &[&id],
                    )
                    .map_err(|e| self.db(&e))?;
                }
                n
            }
            DeliveryOutcome::Failed { error, retry_at } | DeliveryOutcome::Misconfigured { error, retry_at } => {
                let error = &nul_free(error);
                let n = tx
                    .execute(
                        "UPDATE deliveries SET state = 'failing', attempts = attempts + 1, last_error = $3, next_attempt_ms = $4,
                             lease_until_ms = NULL
                         WHERE id = $1 AND lease_until_ms = $2",
                        &[&id, &claim, error, &ms(*retry_at)],
                    )
                    .map_err(|e| self.db(&e))?;
                if n == 1 && matches!(outcome, DeliveryOutcome::Misconfigured { .. }) {
                    tx.execute(
                        "INSERT INTO destinations (name, misconfigured, misconfigured_ms)
                         SELECT destination, $2, $3 FROM deliveries WHERE id = $1
                         ON CONFLICT (name) DO UPDATE SET misconfigured = excluded.misconfigured,
                             misconfigured_ms = coalesce(destinations.misconfigured_ms, excluded.misconfigured_ms)",
                        &[&id, error, &now],
                    )
                    .map_err(|e| self.db(&e))?;
                }
                n
            }
            DeliveryOutcome::Abandoned { error } => {
                let error = &nul_free(error);
                tx.execute(
                    "UPDATE deliveries SET state = 'abandoned', attempts = attempts + 1, last_error = $3, lease_until_ms = NULL
                     WHERE id = $1 AND lease_until_ms = $2",
                    &[&id, &claim, error],
                )
                .map_err(|e| self.db(&e))?
            }
        };
        tx.commit().map_err(|e| self.db(&e))?;
        Ok(recorded == 1)
    }

    pub(crate) fn outbox_alerts(&self, filter: &AlertFilter, limit: u64) -> Result<Vec<AlertRecord>> {
        let mut conn = self.conn()?;
        self.alerts_on(&mut conn, filter, limit)
    }

    fn alerts_on(&self, conn: &mut Lease<'_>, filter: &AlertFilter, limit: u64) -> Result<Vec<AlertRecord>> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE true");
        let mut args: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::new();
        if let Some(since) = filter.since {
            args.push(Box::new(ms(since)));
            sql.push_str(&format!(" AND a.raised_ms >= ${}", args.len()));
        }
        if let Some(rule) = &filter.rule {
            args.push(Box::new(rule.clone()));
            sql.push_str(&format!(" AND a.rule = ${}", args.len()));
        }
        if let Some(state) = filter.state {
            args.push(Box::new(state.as_str()));
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state = ${})",
                args.len()
            ));
        }
        args.push(Box::new(big(limit)));
        sql.push_str(&format!(" ORDER BY a.id DESC LIMIT ${}", args.len()));
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let stmt = conn.prepare(&sql).map_err(|e| self.db(&e))?;
        let list = conn.client.query(&stmt, &refs).map_err(|e| self.db(&e))?.iter().map(read_alert).collect();
        self.with_deliveries(conn, list)
    }

    pub(crate) fn outbox_alert(&self, id: i64) -> Result<Option<AlertRecord>> {
        let mut conn = self.conn()?;
        let stmt =
            conn.prepare(&format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = $1")).map_err(|e| self.db(&e))?;
        let Some(row) = conn.client.query_opt(&stmt, &[&id]).map_err(|e| self.db(&e))? else {
            return Ok(None);
        };
        Ok(self.with_deliveries(&mut conn, vec![read_alert(&row)])?.pop())
    }

    pub(crate) fn outbox_status(&self, recent: u64) -> Result<AlertStatus> {
        let mut conn = self.conn()?;
        let total: i64 = conn.client.query_one("SELECT count(*) FROM alerts", &[]).map_err(|e| self.db(&e))?.get(0);
        let misconfigured = conn
            .client
            .query(
                "SELECT name, misconfigured, misconfigured_ms FROM destinations WHERE misconfigured IS NOT NULL ORDER BY name",
                &[],
            )
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| DestinationHealth { name: r.get(0), misconfigured: r.get(1), since: ts(r.get(2)) })
            .collect();
        let mut status = AlertStatus {
            alerts: count(total),
            cursor: self.cursor_on(&mut conn, ALERTS)?.map(|c| c.position),
            newest_seq: crate::archive::newest_seq(self, &mut conn)?,
            misconfigured,
            ..AlertStatus::default()
        };
        for r in
            conn.client.query("SELECT state, count(*) FROM deliveries GROUP BY state", &[]).map_err(|e| self.db(&e))?
        {
            let state: String = r.get(0);
            let n = count(r.get(1));
            match DeliveryState::parse(&state) {
                Some(DeliveryState::Pending) => status.pending = n,
                Some(DeliveryState::Delivered) => status.delivered = n,
                Some(DeliveryState::Failing) => status.failing = n,
                Some(DeliveryState::Abandoned) => status.abandoned = n,
                None => {}
            }
        }
        status.recent = self.alerts_on(&mut conn, &AlertFilter::default(), recent)?;
        Ok(status)
    }
}
