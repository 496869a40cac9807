//! The reports role (see `tfaudit_store::reports`): scheduled reports made once per
//! period, and their deliveries.

use jiff::Timestamp;
use tfaudit_store::reports::outcome_columns;
use tfaudit_store::{
    DeliveryOutcome, DeliveryRecord, DeliveryState, MadeReport, ReportJob, ReportRecord, ReportTarget, Reports, Result,
};

use crate::{PostgresStore, count, ms, nul_free, ts, ts_opt};

const REPORT_COLUMNS: &str = "id, name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms";

fn read_report(r: &postgres::Row) -> ReportRecord {
    ReportRecord {
        id: r.get(0),
        report: MadeReport {
            name: r.get(1),
            period: r.get(2),
            since: ts(r.get(3)),
            until: ts(r.get(4)),
            file_name: r.get(5),
            content_type: r.get(6),
            content: r.get(7),
            summary: r.get(8),
            made_at: ts(r.get(9)),
        },
        deliveries: Vec::new(),
    }
}

fn read_delivery(r: &postgres::Row) -> DeliveryRecord {
    let state = DeliveryState::parse(r.get(2)).unwrap_or(DeliveryState::Failing);
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

const DELIVERIES: &str = "SELECT id, target, state, attempts, next_attempt_ms, last_error, delivered_ms
     FROM report_deliveries WHERE report_id = $1 ORDER BY target";

impl Reports for PostgresStore {
    fn report_scheduled_since(&self, name: &str, cadence: &str, now: Timestamp) -> Result<Timestamp> {
        let mut conn = self.conn()?;
        let db = |e: postgres::Error| self.db(&e);
        let (name, cadence) = (nul_free(name), nul_free(cadence));
        conn.client
            .execute(
                "INSERT INTO report_schedules (name, cadence, since_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&name, &cadence, &ms(now)],
            )
            .map_err(db)?;
        let row = conn
            .client
            .query_one("SELECT since_ms FROM report_schedules WHERE name = $1 AND cadence = $2", &[&name, &cadence])
            .map_err(db)?;
        Ok(ts(row.get(0)))
    }

    fn report_made(&self, name: &str, period: &str) -> Result<bool> {
        let mut conn = self.conn()?;
        let row = conn
            .client
            .query_opt("SELECT 1 FROM reports WHERE name = $1 AND period = $2", &[&nul_free(name), &nul_free(period)])
            .map_err(|e| self.db(&e))?;
        Ok(row.is_some())
    }

    fn add_report(&self, report: &MadeReport, targets: &[ReportTarget]) -> Result<bool> {
        let mut conn = self.conn()?;
        let db = |e: postgres::Error| self.db(&e);
        let mut tx = conn.client.transaction().map_err(db)?;
        let row = tx
            .query_opt(
                "INSERT INTO reports (name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name, period) DO NOTHING RETURNING id",
                &[
                    &nul_free(&report.name),
                    &nul_free(&report.period),
                    &ms(report.since),
                    &ms(report.until),
                    &nul_free(&report.file_name),
                    &nul_free(&report.content_type),
                    &report.content,
                    &nul_free(&report.summary),
                    &ms(report.made_at),
                ],
            )
            .map_err(db)?;
        let Some(row) = row else { return Ok(false) };
        let id: i64 = row.get(0);
        for target in targets {
            tx.execute(
                "INSERT INTO report_deliveries (report_id, target, state, next_attempt_ms)
                 VALUES ($1, $2, 'pending', $3) ON CONFLICT DO NOTHING",
                &[&id, &nul_free(target), &ms(report.made_at)],
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
        let mut conn = self.conn()?;
        let db = |e: postgres::Error| self.db(&e);
        let now_ms = ms(now);
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut tx = conn.client.transaction().map_err(db)?;
        let Some(row) = tx
            .query_opt(
                "UPDATE report_deliveries SET lease_until_ms = $2
                 WHERE id = (SELECT id FROM report_deliveries
                             WHERE state IN ('pending', 'failing') AND next_attempt_ms <= $1
                               AND (lease_until_ms IS NULL OR lease_until_ms < $1)
                               AND target = ANY($3)
                             ORDER BY next_attempt_ms, id LIMIT 1
                             FOR UPDATE SKIP LOCKED)
                 RETURNING id, report_id, target, attempts",
                &[&now_ms, &until, &targets.iter().map(|t| nul_free(t).into_owned()).collect::<Vec<String>>()],
            )
            .map_err(db)?
        else {
            return Ok(None);
        };
        let (id, report_id, target, attempts): (i64, i64, String, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let mut report = read_report(
            &tx.query_one(&format!("SELECT {REPORT_COLUMNS} FROM reports WHERE id = $1"), &[&report_id]).map_err(db)?,
        );
        report.deliveries = tx.query(DELIVERIES, &[&report_id]).map_err(db)?.iter().map(read_delivery).collect();
        tx.commit().map_err(db)?;
        Ok(Some(ReportJob { delivery_id: id, target, attempts: count(attempts), report, claim: until }))
    }

    fn finish_report_delivery(&self, job: &ReportJob, outcome: &DeliveryOutcome) -> Result<bool> {
        let mut conn = self.conn()?;
        let (state, error, retry_at, delivered) = outcome_columns(outcome, Timestamp::now());
        let error = error.map(nul_free);
        let n = conn
            .client
            .execute(
                "UPDATE report_deliveries SET state = $3, attempts = attempts + 1, last_error = coalesce($4, last_error),
                     next_attempt_ms = coalesce($5, next_attempt_ms), delivered_ms = $6, lease_until_ms = NULL
                 WHERE id = $1 AND lease_until_ms = $2 AND state IN ('pending', 'failing')",
                &[&job.delivery_id, &job.claim, &state.as_str(), &error, &retry_at.map(ms), &delivered.map(ms)],
            )
            .map_err(|e| self.db(&e))?;
        Ok(n == 1)
    }

    fn reports(&self, limit: u64) -> Result<Vec<ReportRecord>> {
        let mut conn = self.conn()?;
        let db = |e: postgres::Error| self.db(&e);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .client
            .query(
                "SELECT id, name, period, since_ms, until_ms, file_name, content_type, ''::bytea, summary, made_ms
                 FROM reports ORDER BY made_ms DESC, id DESC LIMIT $1",
                &[&limit],
            )
            .map_err(db)?;
        let mut out: Vec<ReportRecord> = rows.iter().map(read_report).collect();
        for r in &mut out {
            r.deliveries = conn.client.query(DELIVERIES, &[&r.id]).map_err(db)?.iter().map(read_delivery).collect();
        }
        Ok(out)
    }
}
