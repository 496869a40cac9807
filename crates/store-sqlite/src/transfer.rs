//! The transfer role (`tfaudit migrate`): the archive's non-event state read and
//! loaded whole, and events copied from another archive appended in order.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use tfaudit_store::{
    AlertState, ArchiveState, ConsumerState, DeliveryCopy, DeliveryState, DestinationState, GapState, NameState,
    RejectState, ReportState, Result, RunState, RunTally, SourceState, StoreError, StoredEvent, Transfer, Walk,
};

use crate::alerts::{ALERT_COLUMNS, read_alert};
use crate::{SqliteStore, dead_letters, ms, rollup, ts, ts_opt};

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn source_ids(conn: &Connection) -> rusqlite::Result<HashMap<String, i64>> {
    let mut stmt = conn.prepare("SELECT name, id FROM sources")?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

fn unknown(name: &str) -> StoreError {
    StoreError::Database(format!("no source named {name:?} in the archive; create it before copying its events"))
}

/// The deliveries of an outbox table (an alert's, or a scheduled report's), by the id
/// of what they deliver, oldest first.
fn read_deliveries(
    conn: &Connection,
    table: &str,
    owner: &str,
    target: &str,
) -> rusqlite::Result<HashMap<i64, Vec<DeliveryCopy>>> {
    let mut deliveries: HashMap<i64, Vec<DeliveryCopy>> = HashMap::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT {owner}, id, {target}, state, attempts, next_attempt_ms, lease_until_ms, last_error, delivered_ms
         FROM {table} ORDER BY id"
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let state: String = r.get(3)?;
        deliveries.entry(r.get(0)?).or_default().push(DeliveryCopy {
            id: r.get(1)?,
            destination: r.get(2)?,
            state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
            attempts: count(r.get(4)?),
            next_attempt: ts(r.get(5)?),
            lease_until: ts_opt(r.get(6)?),
            last_error: r.get(7)?,
            delivered_at: ts_opt(r.get(8)?),
        });
    }
    Ok(deliveries)
}

/// Writes `deliveries` of the row `owner_id` into an outbox table, ids kept.
fn insert_deliveries(
    tx: &Connection,
    table: &str,
    owner: &str,
    target: &str,
    owner_id: i64,
    deliveries: &[DeliveryCopy],
) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT INTO {table} (id, {owner}, {target}, state, attempts, next_attempt_ms, lease_until_ms,
            last_error, delivered_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    );
    for d in deliveries {
        tx.execute(
            &sql,
            params![
                d.id,
                owner_id,
                d.destination,
                d.state.as_str(),
                big(d.attempts),
                ms(d.next_attempt),
                d.lease_until.map(ms),
                d.last_error,
                d.delivered_at.map(ms),
            ],
        )?;
    }
    Ok(())
}

fn read_state(conn: &Connection) -> rusqlite::Result<ArchiveState> {
    let names: HashMap<i64, String> = conn
        .prepare("SELECT id, name FROM sources")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
    let sources = conn
        .prepare(
            "SELECT name, address, organization_id, cursor_ms, reconciled_ms, walk_started_ms, walk_since_ms,
                    walk_next_page, walk_page_size, walk_newest_ms, walk_oldest_ms, walk_gap_from_ms,
                    alert_start_seq, reject_count, created_ms
             FROM sources ORDER BY id",
        )?
        .query_map([], |r| {
            let walk = match r.get::<_, Option<i64>>(5)? {
                None => None,
                Some(started) => Some(Walk {
                    since: ts_opt(r.get(6)?),
                    next_page: count(r.get::<_, Option<i64>>(7)?.unwrap_or(0)),
                    page_size: u32::try_from(r.get::<_, Option<i64>>(8)?.unwrap_or(0)).unwrap_or(0),
                    newest: ts_opt(r.get(9)?),
                    oldest: ts_opt(r.get(10)?),
                    gap_from: ts_opt(r.get(11)?),
                    started_at: ts(started),
                }),
            };
            Ok(SourceState {
                name: r.get(0)?,
                address: r.get(1)?,
                organization_id: r.get(2)?,
                cursor: ts_opt(r.get(3)?),
                reconciled: ts_opt(r.get(4)?),
                walk,
                alert_start_seq: r.get(12)?,
                reject_count: count(r.get(13)?),
                created_at: ts(r.get(14)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let runs = conn
        .prepare(
            "SELECT id, source_id, started_ms, finished_ms, result, error, pages, requests, retries, new_events,
                    duplicates, rejects FROM runs ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(RunState {
                id: r.get(0)?,
                source: name(r.get(1)?),
                started_at: ts(r.get(2)?),
                finished_at: ts_opt(r.get(3)?),
                result: r.get(4)?,
                error: r.get(5)?,
                tally: RunTally {
                    pages: count(r.get(6)?),
                    requests: count(r.get(7)?),
                    retries: count(r.get(8)?),
                    new_events: count(r.get(9)?),
                    duplicates: count(r.get(10)?),
                    rejects: count(r.get(11)?),
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let gaps = conn
        .prepare("SELECT id, source_id, from_ms, to_ms, detected_ms FROM gaps ORDER BY id")?
        .query_map([], |r| {
            Ok(GapState {
                id: r.get(0)?,
                source: name(r.get(1)?),
                from: ts(r.get(2)?),
                to: ts(r.get(3)?),
                detected_at: ts(r.get(4)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let rejects = conn
        .prepare(
            "SELECT id, source_id, run_id, reason, raw, first_seen_ms, last_seen_ms, times_seen FROM rejects ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(RejectState {
                id: r.get(0)?,
                source: name(r.get(1)?),
                run_id: r.get(2)?,
                reason: r.get(3)?,
                raw: r.get(4)?,
                first_seen: ts(r.get(5)?),
                last_seen: ts(r.get(6)?),
                times_seen: count(r.get(7)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let consumers = conn
        .prepare("SELECT name, position, state, updated_ms FROM consumers ORDER BY name")?
        .query_map([], |r| {
            Ok(ConsumerState { name: r.get(0)?, position: r.get(1)?, state: r.get(2)?, updated_at: ts(r.get(3)?) })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut deliveries = read_deliveries(conn, "deliveries", "alert_id", "destination")?;
    let alerts = conn
        .prepare(&format!("SELECT {ALERT_COLUMNS} FROM alerts a ORDER BY a.id"))?
        .query_map([], read_alert)?
        .map(|record| {
            record.map(|record| AlertState {
                id: record.id,
                deliveries: deliveries.remove(&record.id).unwrap_or_default(),
                alert: record.alert,
                raised_at: record.raised_at,
            })
        })
        .collect::<rusqlite::Result<_>>()?;
    let destinations = conn
        .prepare("SELECT name, misconfigured, misconfigured_ms FROM destinations ORDER BY name")?
        .query_map([], |r| {
            Ok(DestinationState { name: r.get(0)?, misconfigured: r.get(1)?, misconfigured_at: ts_opt(r.get(2)?) })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let dead_letters = conn
        .prepare(&format!("SELECT {} FROM dead_letters ORDER BY consumer, seq", dead_letters::COLUMNS))?
        .query_map([], dead_letters::read)?
        .collect::<rusqlite::Result<_>>()?;
    let names = conn
        .prepare(
            "SELECT c.id, c.name, c.kind, c.email, s.name, c.first_seen_ms, c.last_seen_ms, c.gone_ms, c.listed
             FROM catalogue c JOIN sources s ON s.id = c.source_id ORDER BY c.id, c.name",
        )?
        .query_map([], |r| {
            let kind: String = r.get(2)?;
            Ok(NameState {
                source: r.get(4)?,
                record: tfaudit_store::NameRecord {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: kind.parse().unwrap_or(tfaudit_model::NameKind::User),
                    email: r.get(3)?,
                    first_seen: ts(r.get(5)?),
                    last_seen: ts(r.get(6)?),
                    gone: ts_opt(r.get(7)?),
                    listed: r.get(8)?,
                },
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let listings = conn
        .prepare(
            "SELECT s.name, l.listed_ms FROM catalogue_listings l JOIN sources s ON s.id = l.source_id ORDER BY s.name",
        )?
        .query_map([], |r| Ok((r.get(0)?, ts(r.get(1)?))))?
        .collect::<rusqlite::Result<_>>()?;
    let report_schedules = conn
        .prepare("SELECT name, cadence, since_ms FROM report_schedules ORDER BY name, cadence")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, ts(r.get(2)?))))?
        .collect::<rusqlite::Result<_>>()?;
    let mut report_deliveries = read_deliveries(conn, "report_deliveries", "report_id", "target")?;
    let reports = conn
        .prepare(
            "SELECT id, name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms
             FROM reports ORDER BY id",
        )?
        .query_map([], |r| {
            let id: i64 = r.get(0)?;
            Ok(ReportState {
                id,
                report: tfaudit_store::MadeReport {
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
        })?
        .collect::<rusqlite::Result<Vec<ReportState>>>()?
        .into_iter()
        .map(|mut report| {
            report.deliveries = report_deliveries.remove(&report.id).unwrap_or_default();
            report
        })
        .collect();
    Ok(ArchiveState {
        sources,
        runs,
        gaps,
        rejects,
        consumers,
        alerts,
        destinations,
        dead_letters,
        names,
        listings,
        report_schedules,
        reports,
    })
}

impl Transfer for SqliteStore {
    fn archive_state(&self) -> Result<ArchiveState> {
        let conn = self.read()?;
        // One read transaction: one snapshot of every table.
        let tx = conn.unchecked_transaction().map_err(|e| self.db(e))?;
        let state = read_state(&tx).map_err(|e| self.db(e))?;
        tx.finish().map_err(|e| self.db(e))?;
        Ok(state)
    }

    fn append_copied(&self, events: &[StoredEvent]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let ids = source_ids(&tx).map_err(|e| self.db(e))?;
        let mut rollups = tfaudit_store::rollup::Rollups::default();
        // Per source: count, oldest, newest, first organization.
        let mut counters: HashMap<i64, (i64, i64, i64, Option<&str>)> = HashMap::new();
        self.codec.prepare_writes(&tx, crate::archived(&tx).map_err(|e| self.db(e))?).map_err(|e| self.db(e))?;
        let mut names = crate::names::Interner::new(&self.names);
        let mut postings = crate::postings::Batch::default();
        {
            let mut writer = rollup::EventWriter::new(&tx, rollup::Duplicate::Refuse).map_err(|e| self.db(e))?;
            for stored in events {
                let source = *ids.get(&stored.source).ok_or_else(|| unknown(&stored.source))?;
                let e = &stored.event;
                let t = ms(e.timestamp);
                if let Some(keys) = writer.insert(&tx, &self.codec, &mut names, e, source).map_err(|e| self.db(e))? {
                    postings.add(tx.last_insert_rowid(), &keys);
                }
                rollup::record_ingested(&tx, tx.last_insert_rowid(), ms(stored.ingested_at)).map_err(|e| self.db(e))?;
                let c = counters.entry(source).or_insert((0, t, t, None));
                c.0 += 1;
                c.1 = c.1.min(t);
                c.2 = c.2.max(t);
                if c.3.is_none() {
                    c.3 = e.organization_id.as_deref();
                }
                rollups.add(source, e);
            }
        }
        rollup::write(&rollups, &tx).map_err(|e| self.db(e))?;
        postings.write(&tx).map_err(|e| self.db(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE sources SET event_count = event_count + ?2,
                        oldest_ms = min(coalesce(oldest_ms, ?3), ?3), newest_ms = max(coalesce(newest_ms, ?4), ?4),
                        organization_id = coalesce(organization_id, ?5)
                     WHERE id = ?1",
                )
                .map_err(|e| self.db(e))?;
            for (source, (n, oldest, newest, org)) in &counters {
                stmt.execute(params![source, n, oldest, newest, org]).map_err(|e| self.db(e))?;
            }
        }
        tx.commit().map_err(|e| self.db(e))?;
        names.committed();
        Ok(())
    }

    fn load_state(&self, state: &ArchiveState) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        for s in &state.sources {
            let w = s.walk.as_ref();
            tx.execute(
                "INSERT INTO sources (name, address, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![s.name, s.address, ms(s.created_at)],
            )
            .map_err(db)?;
            tx.execute(
                "UPDATE sources SET address = ?2, organization_id = ?3, cursor_ms = ?4, reconciled_ms = ?5,
                    walk_started_ms = ?6, walk_since_ms = ?7, walk_next_page = ?8, walk_page_size = ?9,
                    walk_newest_ms = ?10, walk_oldest_ms = ?11, walk_gap_from_ms = ?12,
                    alert_start_seq = ?13, reject_count = ?14, created_ms = ?15
                 WHERE name = ?1",
                params![
                    s.name,
                    s.address,
                    s.organization_id,
                    s.cursor.map(ms),
                    s.reconciled.map(ms),
                    w.map(|w| ms(w.started_at)),
                    w.and_then(|w| w.since.map(ms)),
                    w.map(|w| big(w.next_page)),
                    w.map(|w| i64::from(w.page_size)),
                    w.and_then(|w| w.newest.map(ms)),
                    w.and_then(|w| w.oldest.map(ms)),
                    w.and_then(|w| w.gap_from.map(ms)),
                    s.alert_start_seq,
                    big(s.reject_count),
                    ms(s.created_at),
                ],
            )
            .map_err(db)?;
        }
        let ids = source_ids(&tx).map_err(db)?;
        let id = |name: &str| ids.get(name).copied().ok_or_else(|| unknown(name));
        tx.execute_batch(
            "DELETE FROM runs; DELETE FROM gaps; DELETE FROM rejects; DELETE FROM consumers;
             DELETE FROM deliveries; DELETE FROM alerts; DELETE FROM destinations; DELETE FROM dead_letters;
             DELETE FROM catalogue; DELETE FROM catalogue_listings;
             DELETE FROM report_deliveries; DELETE FROM reports; DELETE FROM report_schedules;",
        )
        .map_err(db)?;
        for r in &state.runs {
            tx.execute(
                "INSERT INTO runs (id, source_id, started_ms, finished_ms, result, error, pages, requests, retries,
                    new_events, duplicates, rejects) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.id,
                    id(&r.source)?,
                    ms(r.started_at),
                    r.finished_at.map(ms),
                    r.result,
                    r.error,
                    big(r.tally.pages),
                    big(r.tally.requests),
                    big(r.tally.retries),
                    big(r.tally.new_events),
                    big(r.tally.duplicates),
                    big(r.tally.rejects),
                ],
            )
            .map_err(db)?;
        }
        for g in &state.gaps {
            tx.execute(
                "INSERT INTO gaps (id, source_id, from_ms, to_ms, detected_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![g.id, id(&g.source)?, ms(g.from), ms(g.to), ms(g.detected_at)],
            )
            .map_err(db)?;
        }
        for r in &state.rejects {
            tx.execute(
                "INSERT INTO rejects (id, source_id, run_id, reason, raw, first_seen_ms, last_seen_ms, times_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.id,
                    id(&r.source)?,
                    r.run_id,
                    r.reason,
                    r.raw,
                    ms(r.first_seen),
                    ms(r.last_seen),
                    big(r.times_seen)
                ],
            )
            .map_err(db)?;
        }
        for c in &state.consumers {
            tx.execute(
                "INSERT INTO consumers (name, position, state, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                params![c.name, c.position, c.state, ms(c.updated_at)],
            )
            .map_err(db)?;
        }
        for a in &state.alerts {
            let x = &a.alert;
            tx.execute(
                "INSERT INTO alerts (id, key, rule, severity, group_key, title, text, source, event_seq, event_id,
                    event_ms, count, window_start_ms, window_end_ms, link, event, raised_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    a.id,
                    x.key,
                    x.rule,
                    x.severity,
                    x.group,
                    x.title,
                    x.text,
                    x.source,
                    x.event_seq,
                    x.event_id,
                    ms(x.event_time),
                    big(x.count),
                    x.window_start.map(ms),
                    x.window_end.map(ms),
                    x.link,
                    x.event,
                    ms(a.raised_at),
                ],
            )
            .map_err(db)?;
            insert_deliveries(&tx, "deliveries", "alert_id", "destination", a.id, &a.deliveries).map_err(db)?;
        }
        for d in &state.destinations {
            tx.execute(
                "INSERT INTO destinations (name, misconfigured, misconfigured_ms) VALUES (?1, ?2, ?3)",
                params![d.name, d.misconfigured, d.misconfigured_at.map(ms)],
            )
            .map_err(db)?;
        }
        for d in &state.dead_letters {
            tx.execute(
                "INSERT INTO dead_letters (consumer, seq, event_id, reason, at_ms, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![d.consumer, d.seq, d.event_id, d.reason, ms(d.at), big(d.attempts)],
            )
            .map_err(db)?;
        }
        for n in &state.names {
            let r = &n.record;
            tx.execute(
                "INSERT INTO catalogue (id, name, kind, email, source_id, first_seen_ms, last_seen_ms, gone_ms, listed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    r.id,
                    r.name,
                    r.kind.as_str(),
                    r.email,
                    id(&n.source)?,
                    ms(r.first_seen),
                    ms(r.last_seen),
                    r.gone.map(ms),
                    r.listed
                ],
            )
            .map_err(db)?;
        }
        for (source, at) in &state.listings {
            tx.execute(
                "INSERT INTO catalogue_listings (source_id, listed_ms) VALUES (?1, ?2)",
                params![id(source)?, ms(*at)],
            )
            .map_err(db)?;
        }
        for (name, cadence, since) in &state.report_schedules {
            tx.execute(
                "INSERT INTO report_schedules (name, cadence, since_ms) VALUES (?1, ?2, ?3)",
                params![name, cadence, ms(*since)],
            )
            .map_err(db)?;
        }
        for r in &state.reports {
            let m = &r.report;
            tx.execute(
                "INSERT INTO reports (id, name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    r.id,
                    m.name,
                    m.period,
                    ms(m.since),
                    ms(m.until),
                    m.file_name,
                    m.content_type,
                    m.content,
                    m.summary,
                    ms(m.made_at)
                ],
            )
            .map_err(db)?;
            insert_deliveries(&tx, "report_deliveries", "report_id", "target", r.id, &r.deliveries).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        // The state comes last in a copy: its events were appended in seq order, which
        // for a backfilled archive is newest first, so the indexes are packed now as
        // at the end of a walk. The copy is whole either way.
        if let Err(e) = crate::upkeep::after_walk(&mut conn) {
            tracing::warn!(error = %e, "could not rebuild the copy's indexes; the next walk's end tries again");
        }
        Ok(())
    }
}
