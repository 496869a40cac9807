//! The consumers' tables: `consumers` (a named cursor each), and the alert engine's
//! outbox: `alerts`, `deliveries`, `destinations`.

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};
use tfaudit_store::{
    ALERTS_CONSUMER, Alert, AlertFilter, AlertRecord, AlertStatus, AlertWrite, CommitOutcome, ConsumerPosition,
    DeliveryJob, DeliveryOutcome, DeliveryRecord, DeliveryState, DestinationHealth, SeenValues,
};

use crate::{ms, ts, ts_opt};

pub(crate) const ALERT_COLUMNS: &str = "a.id, a.key, a.rule, a.severity, a.group_key, a.title, a.text, a.source, a.event_seq, a.event_id, \
     a.event_ms, a.count, a.window_start_ms, a.window_end_ms, a.link, a.event, a.raised_ms";

pub(crate) fn read_alert(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRecord> {
    Ok(AlertRecord {
        id: r.get(0)?,
        alert: Alert {
            key: r.get(1)?,
            rule: r.get(2)?,
            severity: r.get(3)?,
            group: r.get(4)?,
            title: r.get(5)?,
            text: r.get(6)?,
            source: r.get(7)?,
            event_seq: r.get(8)?,
            event_id: r.get(9)?,
            event_time: ts(r.get(10)?),
            count: r.get::<_, i64>(11)? as u64,
            window_start: ts_opt(r.get(12)?),
            window_end: ts_opt(r.get(13)?),
            link: r.get(14)?,
            event: r.get(15)?,
        },
        raised_at: ts(r.get(16)?),
        deliveries: Vec::new(),
    })
}

fn read_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let state: String = r.get(2)?;
    let state = DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending);
    Ok(DeliveryRecord {
        id: r.get(0)?,
        destination: r.get(1)?,
        state,
        attempts: r.get::<_, i64>(3)? as u64,
        next_attempt: if matches!(state, DeliveryState::Pending | DeliveryState::Failing) {
            ts_opt(r.get(4)?)
        } else {
            None
        },
        last_error: r.get(5)?,
        delivered_at: ts_opt(r.get(6)?),
    })
}

/// Fills in each alert's deliveries.
fn with_deliveries(conn: &Connection, mut alerts: Vec<AlertRecord>) -> rusqlite::Result<Vec<AlertRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, destination, state, attempts, next_attempt_ms, last_error, delivered_ms FROM deliveries WHERE alert_id = ?1 ORDER BY destination",
    )?;
    for a in &mut alerts {
        a.deliveries = stmt.query_map([a.id], read_delivery)?.collect::<rusqlite::Result<_>>()?;
    }
    Ok(alerts)
}

pub fn newest_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))
}

pub fn consumer(conn: &Connection, name: &str) -> rusqlite::Result<Option<ConsumerPosition>> {
    conn.prepare_cached("SELECT position, state FROM consumers WHERE name = ?1")?
        .query_row([name], |r| Ok(ConsumerPosition { position: r.get(0)?, state: r.get(1)? }))
        .optional()
}

/// Inside a write transaction: whether the named consumer is at `expected`, and if so
/// moves it to `position`. Callers commit or drop the transaction.
fn move_consumer(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    expected: Option<i64>,
    position: &ConsumerPosition,
    now: i64,
) -> rusqlite::Result<bool> {
    let current: Option<i64> = tx
        .prepare_cached("SELECT position FROM consumers WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if current != expected {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO consumers (name, position, state, updated_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, state = excluded.state,
             updated_ms = excluded.updated_ms",
    )?
    .execute(params![name, position.position, position.state, now])?;
    Ok(true)
}

pub fn commit_consumer(
    conn: &mut Connection,
    name: &str,
    expected: Option<i64>,
    position: &ConsumerPosition,
) -> rusqlite::Result<CommitOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if !move_consumer(&tx, name, expected, position, ms(Timestamp::now()))? {
        return Ok(CommitOutcome::Conflict);
    }
    tx.commit()?;
    Ok(CommitOutcome::Committed { new_alerts: 0 })
}

pub fn seen_values(conn: &Connection, before: Option<Timestamp>) -> rusqlite::Result<SeenValues> {
    let before = before.map_or(i64::MAX, ms);
    let hour = before.div_euclid(crate::HOUR_MS);
    let strings = |sql: &str, arg: i64| -> rusqlite::Result<Vec<String>> {
        conn.prepare(sql)?.query_map([arg], |r| r.get(0))?.collect()
    };
    let accessors =
        strings("SELECT DISTINCT accessor_id FROM actors WHERE accessor_id != '' AND first_seen_ms < ?1", before)?;
    let impersonators = strings(
        "SELECT value FROM names WHERE id IN
           (SELECT DISTINCT impersonator_id FROM events WHERE impersonator_id IS NOT NULL AND ts_ms < ?1)",
        before,
    )?;
    // Whole hours from the hourly counts; the hour `before` falls in, from the events.
    let mut kinds: Vec<(String, String)> = conn
        .prepare(
            "SELECT DISTINCT resource_type, resource_action FROM hourly_kinds WHERE hour < ?1 AND resource_type != ''",
        )?
        .query_map([hour], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let partial: Vec<(String, String)> = conn
        .prepare(
            "SELECT t.value, coalesce(a.value, '')
             FROM (SELECT DISTINCT resource_type, resource_action FROM events
                   WHERE ts_ms >= ?1 AND ts_ms < ?2 AND resource_type IS NOT NULL) k
             JOIN names t ON t.id = k.resource_type LEFT JOIN names a ON a.id = k.resource_action",
        )?
        .query_map([hour.saturating_mul(crate::HOUR_MS), before], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    kinds.extend(partial);
    kinds.sort();
    kinds.dedup();
    Ok(SeenValues { accessors, impersonators, kinds })
}

pub fn commit_alerts(
    conn: &mut Connection,
    expected: Option<i64>,
    position: &ConsumerPosition,
    alerts: &[AlertWrite],
) -> rusqlite::Result<CommitOutcome> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = ms(Timestamp::now());
    // The consumer moves first: on a conflict nothing below runs and the dropped
    // transaction writes nothing.
    if !move_consumer(&tx, ALERTS_CONSUMER, expected, position, now)? {
        return Ok(CommitOutcome::Conflict);
    }
    let mut new_alerts = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO alerts (key, rule, severity, group_key, title, text, source, event_seq, event_id, event_ms, count,
                                 window_start_ms, window_end_ms, link, event, raised_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (key) DO NOTHING",
        )?;
        let mut delivery = tx.prepare_cached(
            "INSERT INTO deliveries (alert_id, destination, state, next_attempt_ms) VALUES (?1, ?2, 'pending', ?3)
             ON CONFLICT DO NOTHING",
        )?;
        for write in alerts {
            let a = &write.alert;
            let changed = insert.execute(params![
                a.key,
                a.rule,
                a.severity,
                a.group,
                a.title,
                a.text,
                a.source,
                a.event_seq,
                a.event_id,
                ms(a.event_time),
                a.count as i64,
                a.window_start.map(ms),
                a.window_end.map(ms),
                a.link,
                a.event,
                now
            ])?;
            if changed == 0 {
                continue;
            }
            new_alerts += 1;
            let id = tx.last_insert_rowid();
            for d in &write.destinations {
                delivery.execute(params![id, d, now])?;
            }
        }
    }
    tx.commit()?;
    Ok(CommitOutcome::Committed { new_alerts })
}

pub fn claim_delivery(
    conn: &mut Connection,
    destination: &str,
    now: Timestamp,
    due_by: Timestamp,
    lease: std::time::Duration,
) -> rusqlite::Result<Option<DeliveryJob>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now_ms = ms(now);
    let due: Option<(i64, i64, i64)> = tx
        .prepare_cached(
            "SELECT id, alert_id, attempts FROM deliveries
             WHERE destination = ?1 AND state IN ('pending', 'failing') AND next_attempt_ms <= ?2
               AND (lease_until_ms IS NULL OR lease_until_ms < ?3)
             ORDER BY next_attempt_ms, id LIMIT 1",
        )?
        .query_row(params![destination, ms(due_by), now_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((id, alert_id, attempts)) = due else { return Ok(None) };
    let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    tx.execute("UPDATE deliveries SET lease_until_ms = ?2 WHERE id = ?1", params![id, until])?;
    let alert =
        tx.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ?1"), [alert_id], read_alert)?;
    tx.commit()?;
    Ok(Some(DeliveryJob {
        delivery_id: id,
        destination: destination.to_owned(),
        attempts: attempts as u64,
        alert,
        claim: until,
    }))
}

pub fn open_delivery_destinations(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare(
        "SELECT DISTINCT destination FROM deliveries WHERE state IN ('pending', 'failing') ORDER BY destination",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

pub fn alert_start_points(conn: &Connection) -> rusqlite::Result<Vec<(String, Option<i64>)>> {
    conn.prepare("SELECT name, alert_start_seq FROM sources ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Every value seen in the archive, less those only seen after `seq`: the events
/// after `seq` are few next to the archive, so they are the ones read.
pub fn seen_values_up_to(conn: &Connection, seq: i64) -> rusqlite::Result<SeenValues> {
    let mut all = seen_values(conn, None)?;
    let later = |column: &str| -> rusqlite::Result<Vec<String>> {
        conn.prepare(&format!(
            "SELECT value FROM names WHERE id IN (SELECT {column} FROM events WHERE seq > ?1 AND {column} IS NOT NULL)"
        ))?
        .query_map([seq], |r| r.get(0))?
        .collect()
    };
    let seen_before = |column: &str, value: &str| -> rusqlite::Result<bool> {
        conn.prepare_cached(&format!(
            "SELECT 1 FROM events WHERE {column} = (SELECT id FROM names WHERE value = ?1) AND seq <= ?2 LIMIT 1"
        ))?
        .exists(params![value, seq])
    };
    // An actor's and a kind's posting lists (postings.rs) begin with their oldest seq;
    // until a first backfill has built them, the events are read.
    let listed = !crate::upkeep::deferred(conn)?;
    let mut actor_before = conn.prepare_cached(
        "SELECT 1 FROM postings WHERE list = 1 AND key = (SELECT id FROM names WHERE value = ?1)
         AND tfaudit_first_seq(seqs) <= ?2 LIMIT 1",
    )?;
    for a in later("accessor_id")? {
        let seen = if listed { actor_before.exists(params![a, seq])? } else { seen_before("accessor_id", &a)? };
        if !seen {
            all.accessors.retain(|x| *x != a);
        }
    }
    for i in later("impersonator_id")? {
        if !seen_before("impersonator_id", &i)? {
            all.impersonators.retain(|x| *x != i);
        }
    }
    let later_kinds: Vec<(String, String)> = conn
        .prepare(
            "SELECT t.value, coalesce(a.value, '')
             FROM (SELECT DISTINCT resource_type, resource_action FROM events WHERE seq > ?1 AND resource_type IS NOT NULL) k
             JOIN names t ON t.id = k.resource_type LEFT JOIN names a ON a.id = k.resource_action",
        )?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut kind_before = conn.prepare(if listed {
        "SELECT 1 FROM postings p WHERE p.list = 2 AND p.key IN
           (SELECT k.key FROM kinds k LEFT JOIN names a ON a.id = k.key & 4294967295
            WHERE k.key >> 32 = (SELECT id FROM names WHERE value = ?1) AND coalesce(a.value, '') = ?2)
         AND tfaudit_first_seq(p.seqs) <= ?3 LIMIT 1"
    } else {
        "SELECT 1 FROM events e LEFT JOIN names a ON a.id = e.resource_action
         WHERE e.resource_type = (SELECT id FROM names WHERE value = ?1) AND coalesce(a.value, '') = ?2 AND e.seq <= ?3
         LIMIT 1"
    })?;
    for (t, a) in later_kinds {
        if !kind_before.exists(params![t, a, seq])? {
            all.kinds.retain(|k| !(k.0 == t && k.1 == a));
        }
    }
    Ok(all)
}

/// Records an attempt's outcome if the claim `claim` is still the delivery's last
/// (see `Consumers::finish_delivery`); every statement here is keyed by it.
pub fn finish_delivery(
    conn: &mut Connection,
    id: i64,
    claim: i64,
    outcome: &DeliveryOutcome,
) -> rusqlite::Result<bool> {
    let now = ms(Timestamp::now());
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let recorded = match outcome {
        DeliveryOutcome::Delivered => {
            let n = tx.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_ms = ?3, lease_until_ms = NULL
                 WHERE id = ?1 AND lease_until_ms = ?2",
                params![id, claim, now],
            )?;
            if n == 1 {
                tx.execute(
                    "UPDATE destinations SET misconfigured = NULL, misconfigured_ms = NULL
                     WHERE name = (SELECT destination FROM deliveries WHERE id = ?1)",
                    [id],
                )?;
            }
            n
        }
        DeliveryOutcome::Failed { error, retry_at } | DeliveryOutcome::Misconfigured { error, retry_at } => {
            let n = tx.execute(
                "UPDATE deliveries SET state = 'failing', attempts = attempts + 1, last_error = ?3, next_attempt_ms = ?4, lease_until_ms = NULL
                 WHERE id = ?1 AND lease_until_ms = ?2",
                params![id, claim, error, ms(*retry_at)],
            )?;
            if n == 1 && matches!(outcome, DeliveryOutcome::Misconfigured { .. }) {
                tx.execute(
                    "INSERT INTO destinations (name, misconfigured, misconfigured_ms)
                     SELECT destination, ?2, ?3 FROM deliveries WHERE id = ?1
                     ON CONFLICT (name) DO UPDATE SET misconfigured = excluded.misconfigured,
                         misconfigured_ms = coalesce(destinations.misconfigured_ms, excluded.misconfigured_ms)",
                    params![id, error, now],
                )?;
            }
            n
        }
        DeliveryOutcome::Abandoned { error } => tx.execute(
            "UPDATE deliveries SET state = 'abandoned', attempts = attempts + 1, last_error = ?3, lease_until_ms = NULL
             WHERE id = ?1 AND lease_until_ms = ?2",
            params![id, claim, error],
        )?,
    };
    tx.commit()?;
    Ok(recorded == 1)
}

pub fn misconfigured(conn: &Connection) -> rusqlite::Result<Vec<DestinationHealth>> {
    conn.prepare(
        "SELECT name, misconfigured, misconfigured_ms FROM destinations WHERE misconfigured IS NOT NULL ORDER BY name",
    )?
    .query_map([], |r| Ok(DestinationHealth { name: r.get(0)?, misconfigured: r.get(1)?, since: ts(r.get(2)?) }))?
    .collect()
}

pub fn alerts(conn: &Connection, filter: &AlertFilter, limit: u64) -> rusqlite::Result<Vec<AlertRecord>> {
    let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    if let Some(since) = filter.since {
        sql.push_str(" AND a.raised_ms >= ?");
        args.push(Box::new(ms(since)));
    }
    if let Some(rule) = &filter.rule {
        sql.push_str(" AND a.rule = ?");
        args.push(Box::new(rule.clone()));
    }
    if let Some(state) = filter.state {
        sql.push_str(" AND EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state = ?)");
        args.push(Box::new(state.as_str()));
    }
    sql.push_str(" ORDER BY a.id DESC LIMIT ?");
    args.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
    let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref() as &dyn rusqlite::ToSql).collect();
    let list = conn.prepare(&sql)?.query_map(&*refs, read_alert)?.collect::<rusqlite::Result<Vec<_>>>()?;
    with_deliveries(conn, list)
}

pub fn alert(conn: &Connection, id: i64) -> rusqlite::Result<Option<AlertRecord>> {
    let a = conn
        .query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ?1"), [id], read_alert)
        .optional()?;
    Ok(match a {
        Some(a) => with_deliveries(conn, vec![a])?.pop(),
        None => None,
    })
}

pub fn alert_status(conn: &Connection, recent: u64) -> rusqlite::Result<AlertStatus> {
    let mut status = AlertStatus {
        alerts: conn.query_row("SELECT count(*) FROM alerts", [], |r| r.get::<_, i64>(0))? as u64,
        cursor: consumer(conn, ALERTS_CONSUMER)?.map(|c| c.position),
        newest_seq: newest_seq(conn)?,
        misconfigured: misconfigured(conn)?,
        ..AlertStatus::default()
    };
    let mut stmt = conn.prepare("SELECT state, count(*) FROM deliveries GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    for row in rows {
        let (state, n) = row?;
        match DeliveryState::parse(&state) {
            Some(DeliveryState::Pending) => status.pending = n,
            Some(DeliveryState::Delivered) => status.delivered = n,
            Some(DeliveryState::Failing) => status.failing = n,
            Some(DeliveryState::Abandoned) => status.abandoned = n,
            None => {}
        }
    }
    status.recent = alerts(conn, &AlertFilter::default(), recent)?;
    Ok(status)
}
