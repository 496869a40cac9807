//! The reports role (see `tfaudit_store::reports`): scheduled reports made once per
//! period, and their deliveries.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tfaudit_store::reports::outcome_columns;
use tfaudit_store::{
    DeliveryOutcome, DeliveryRecord, DeliveryState, MadeReport, ReportJob, ReportRecord, ReportTarget, Reports, Result,
};

use crate::{SqliteStore, ms, ts, ts_opt};

const REPORT_COLUMNS: &str = "id, name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms";

fn read_report(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRecord> {
    Ok(ReportRecord {
        id: r.get(0)?,
        report: MadeReport {
            name: r.get(1)?,
            period: r.get(2)?,
            since: ts(r.get(3)?),
            until: ts(r.get(4)?),
            file_name: r.get(5)?,
            content_type: r.get(6)?,
            content: r.get(7)?,
            summary: r.get(8)?,
            made_at: ts(r.get(9)?),
        },
        deliveries: Vec::new(),
    })
}

fn read_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let state_text: String = r.get(2)?;
    let state = DeliveryState::parse(&state_text).unwrap_or(DeliveryState::Failing);
    Ok(DeliveryRecord {
        id: r.get(0)?,
        destination: r.get(1)?,
        state,
        attempts: r.get::<_, i64>(3)?.max(0) as u64,
        next_attempt: if matches!(state, DeliveryState::Pending | DeliveryState::Failing) {
            ts_opt(r.get(4)?)
        } else {
            None
        },
        last_error: r.get(5)?,
        delivered_at: ts_opt(r.get(6)?),
    })
}

fn with_deliveries(conn: &Connection, report: &mut ReportRecord) -> rusqlite::Result<()> {
    report.deliveries = conn
        .prepare_cached(
            "SELECT id, target, state, attempts, next_attempt_ms, last_error, delivered_ms
             FROM report_deliveries WHERE report_id = ?1 ORDER BY target",
        )?
        .query_map([report.id], read_delivery)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(())
}

impl Reports for SqliteStore {
    fn report_scheduled_since(&self, name: &str, cadence: &str, now: Timestamp) -> Result<Timestamp> {
        let conn = self.lock();
        let db = |e| self.db(e);
        conn.execute(
            "INSERT INTO report_schedules (name, cadence, since_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![name, cadence, ms(now)],
        )
        .map_err(db)?;
        let since: i64 = conn
            .query_row(
                "SELECT since_ms FROM report_schedules WHERE name = ?1 AND cadence = ?2",
                params![name, cadence],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(ts(since))
    }

    fn report_made(&self, name: &str, period: &str) -> Result<bool> {
        let conn = self.lock();
        let found: Option<i64> = conn
            .query_row("SELECT 1 FROM reports WHERE name = ?1 AND period = ?2", params![name, period], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))?;
        Ok(found.is_some())
    }

    fn add_report(&self, report: &MadeReport, targets: &[ReportTarget]) -> Result<bool> {
        let mut conn = self.lock();
        let db = |e| self.db(e);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let inserted = tx
            .execute(
                "INSERT INTO reports (name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (name, period) DO NOTHING",
                params![
                    report.name,
                    report.period,
                    ms(report.since),
                    ms(report.until),
                    report.file_name,
                    report.content_type,
                    report.content,
                    report.summary,
                    ms(report.made_at)
                ],
            )
            .map_err(db)?;
        if inserted == 0 {
            return Ok(false);
        }
        let id = tx.last_insert_rowid();
        for target in targets {
            tx.execute(
                "INSERT INTO report_deliveries (report_id, target, state, next_attempt_ms)
                 VALUES (?1, ?2, 'pending', ?3) ON CONFLICT DO NOTHING",
                params![id, target, ms(report.made_at)],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn claim_report_delivery(
        &self,
        targets: &[ReportTarget],
        now: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Option<ReportJob>> {
        let mut conn = self.lock();
        let db = |e| self.db(e);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let now_ms = ms(now);
        if targets.is_empty() {
            return Ok(None);
        }
        let listed = vec!["?"; targets.len()].join(", ");
        let sql = format!(
            "SELECT id, report_id, target, attempts FROM report_deliveries
             WHERE state IN ('pending', 'failing') AND next_attempt_ms <= ?
               AND (lease_until_ms IS NULL OR lease_until_ms < ?)
               AND target IN ({listed})
             ORDER BY next_attempt_ms, id LIMIT 1"
        );
        let args: Vec<rusqlite::types::Value> = [now_ms, now_ms]
            .into_iter()
            .map(rusqlite::types::Value::Integer)
            .chain(targets.iter().map(|t| rusqlite::types::Value::Text(t.clone())))
            .collect();
        let due: Option<(i64, i64, String, i64)> = tx
            .query_row(&sql, rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()
            .map_err(db)?;
        let Some((id, report_id, target, attempts)) = due else { return Ok(None) };
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        tx.execute("UPDATE report_deliveries SET lease_until_ms = ?2 WHERE id = ?1", params![id, until]).map_err(db)?;
        let mut report = tx
            .query_row(&format!("SELECT {REPORT_COLUMNS} FROM reports WHERE id = ?1"), [report_id], read_report)
            .map_err(db)?;
        with_deliveries(&tx, &mut report).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Some(ReportJob { delivery_id: id, target, attempts: attempts.max(0) as u64, report, claim: until }))
    }

    fn finish_report_delivery(&self, job: &ReportJob, outcome: &DeliveryOutcome) -> Result<bool> {
        let conn = self.lock();
        let now = Timestamp::now();
        let (state, error, retry_at, delivered) = outcome_columns(outcome, now);
        let n = conn
            .execute(
                "UPDATE report_deliveries SET state = ?3, attempts = attempts + 1, last_error = coalesce(?4, last_error),
                     next_attempt_ms = coalesce(?5, next_attempt_ms), delivered_ms = ?6, lease_until_ms = NULL
                 WHERE id = ?1 AND lease_until_ms = ?2 AND state IN ('pending', 'failing')",
                params![
                    job.delivery_id,
                    job.claim,
                    state.as_str(),
                    error,
                    retry_at.map(ms),
                    delivered.map(ms)
                ],
            )
            .map_err(|e| self.db(e))?;
        Ok(n == 1)
    }

    fn reports(&self, limit: u64) -> Result<Vec<ReportRecord>> {
        let conn = self.lock();
        let db = |e| self.db(e);
        let mut out: Vec<ReportRecord> = conn
            .prepare(
                "SELECT id, name, period, since_ms, until_ms, file_name, content_type, X'', summary, made_ms
                 FROM reports ORDER BY made_ms DESC, id DESC LIMIT ?1",
            )
            .and_then(|mut s| {
                s.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], read_report)?.collect::<rusqlite::Result<_>>()
            })
            .map_err(db)?;
        for r in &mut out {
            with_deliveries(&conn, r).map_err(db)?;
        }
        Ok(out)
    }
}
