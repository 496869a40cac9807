//! The transfer role (`tfaudit migrate`): the archive's non-event state read and
//! loaded whole, and events copied from another archive appended in order.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use postgres::{IsolationLevel, Transaction};
use sha2::Digest;
use tfaudit_store::{
    AlertState, ArchiveState, ConsumerState, DeliveryCopy, DeliveryState, DestinationState, GapState, NameState,
    RejectState, ReportState, Result, RunState, RunTally, SourceState, StoreError, StoredEvent, Transfer, Walk,
};

use crate::consumers::{ALERT_COLUMNS, read_alert};
use crate::rollup;
use crate::{PostgresStore, SEQ_LOCK, big, count, ms, ts, ts_opt};
use crate::{dead_letters, nul_free};
use tfaudit_store::rollup::Rollups;

/// The deliveries of an outbox table (an alert's, or a scheduled report's), by the id
/// of what they deliver, oldest first.
fn read_deliveries(
    tx: &mut Transaction<'_>,
    table: &str,
    owner: &str,
    target: &str,
) -> Result<HashMap<i64, Vec<DeliveryCopy>>, postgres::Error> {
    let mut deliveries: HashMap<i64, Vec<DeliveryCopy>> = HashMap::new();
    let sql = format!(
        "SELECT {owner}, id, {target}, state, attempts, next_attempt_ms, lease_until_ms, last_error, delivered_ms
         FROM {table} ORDER BY id"
    );
    for r in tx.query(&sql, &[])? {
        let state: String = r.get(3);
        deliveries.entry(r.get(0)).or_default().push(DeliveryCopy {
            id: r.get(1),
            destination: r.get(2),
            state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
            attempts: count(r.get(4)),
            next_attempt: ts(r.get(5)),
            lease_until: ts_opt(r.get(6)),
            last_error: r.get(7),
            delivered_at: ts_opt(r.get(8)),
        });
    }
    Ok(deliveries)
}

/// Writes `deliveries` of the row `owner_id` into an outbox table, ids kept.
fn insert_deliveries(
    tx: &mut Transaction<'_>,
    table: &str,
    owner: &str,
    target: &str,
    owner_id: i64,
    deliveries: &[DeliveryCopy],
) -> Result<(), postgres::Error> {
    let sql = format!(
        "INSERT INTO {table} (id, {owner}, {target}, state, attempts, next_attempt_ms, lease_until_ms,
            last_error, delivered_ms) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    );
    for d in deliveries {
        tx.execute(
            &sql,
            &[
                &d.id,
                &owner_id,
                &nul_free(&d.destination),
                &d.state.as_str(),
                &big(d.attempts),
                &ms(d.next_attempt),
                &d.lease_until.map(ms),
                &nul_free_opt(&d.last_error),
                &d.delivered_at.map(ms),
            ],
        )?;
    }
    Ok(())
}

/// Tables whose ids `load_state` writes itself: their identity sequences are moved
/// past the ids loaded, so that the next row a sync or an alert adds gets a new one.
const KEPT_IDS: [&str; 7] = ["runs", "gaps", "rejects", "alerts", "deliveries", "reports", "report_deliveries"];

fn nul_free_opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(nul_free)
}

/// A reject's text (`bytea`, so that an element holding a NUL keeps its bytes).
/// Inserts copied events (`sources`: each one's source id) in the order given: each
/// with the next seq, or with `keep_seq` its own (`archive pull` putting back a pruned
/// day). Counters and rollups are the caller's.
pub(crate) fn insert_events(
    tx: &mut Transaction<'_>,
    events: &[StoredEvent],
    sources: &[i64],
    keep_seq: bool,
) -> std::result::Result<u64, postgres::Error> {
    let ev: Vec<&tfaudit_model::AuditEvent> = events.iter().map(|e| &e.event).collect();
    let text = |f: fn(&tfaudit_model::AuditEvent) -> &Option<String>| -> Vec<Option<Cow<'_, str>>> {
        ev.iter().map(|e| nul_free_opt(f(e))).collect()
    };
    let id: Vec<Cow<'_, str>> = ev.iter().map(|e| nul_free(&e.id)).collect();
    let times: Vec<i64> = ev.iter().map(|e| ms(e.timestamp)).collect();
    let ingested: Vec<i64> = events.iter().map(|e| ms(e.ingested_at)).collect();
    let raw: Vec<&[u8]> = ev.iter().map(|e| e.raw.as_bytes()).collect();
    let destroy: Vec<bool> = ev.iter().map(|e| e.is_destroy_run()).collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let (seq_column, overriding, seq_value) =
        if keep_seq { ("seq, ", "OVERRIDING SYSTEM VALUE", "u.seq, ") } else { ("", "", "") };
    tx.execute(
        &format!(
            "INSERT INTO events ({seq_column}id, source_id, organization_id, ts_ms, auth_type, accessor_id, auth_description,
                                 impersonator_id, request_id, resource_id, resource_type, resource_action, raw, ingested_ms,
                                 destroy_run)
             {overriding}
             SELECT {seq_value}u.id, u.src, u.org, u.ts, u.auth, u.acc, u.descr, u.imp, u.req, u.rid, u.rtype, u.ract, u.raw, u.ing,
                    u.destroy
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[], $14::int8[], $15::int8[], $16::bool[])
                  WITH ORDINALITY AS u(id, src, org, ts, auth, acc, descr, imp, req, rid, rtype, ract, raw, ing, seq, destroy, ord)
             ORDER BY u.ord"
        ),
        &[
            &id,
            &sources,
            &text(|e| &e.organization_id),
            &times,
            &text(|e| &e.auth_type),
            &text(|e| &e.accessor_id),
            &text(|e| &e.auth_description),
            &text(|e| &e.impersonator_id),
            &text(|e| &e.request_id),
            &text(|e| &e.resource_id),
            &text(|e| &e.resource_type),
            &text(|e| &e.resource_action),
            &raw,
            &ingested,
            &seqs,
            &destroy,
        ],
    )
}

fn reject_raw(r: &postgres::Row, at: usize) -> String {
    String::from_utf8_lossy(r.get::<_, &[u8]>(at)).into_owned()
}

fn unknown(name: &str) -> StoreError {
    StoreError::Database(format!("no source named {name:?} in the archive; create it before copying its events"))
}

impl PostgresStore {
    fn source_ids(&self, tx: &mut Transaction<'_>) -> Result<HashMap<String, i64>> {
        Ok(tx
            .query("SELECT name, id FROM sources", &[])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn read_state(&self, tx: &mut Transaction<'_>) -> Result<ArchiveState> {
        let db = |e: postgres::Error| self.db(&e);
        let names: HashMap<i64, String> =
            tx.query("SELECT id, name FROM sources", &[]).map_err(db)?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let name = |id: i64| names.get(&id).cloned().unwrap_or_default();
        let sources = tx
            .query(
                "SELECT name, address, organization_id, cursor_ms, reconciled_ms, walk_started_ms, walk_since_ms,
                        walk_next_page, walk_page_size, walk_newest_ms, walk_oldest_ms, walk_gap_from_ms,
                        alert_start_seq, reject_count, created_ms
                 FROM sources ORDER BY id",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| SourceState {
                name: r.get(0),
                address: r.get(1),
                organization_id: r.get(2),
                cursor: ts_opt(r.get(3)),
                reconciled: ts_opt(r.get(4)),
                walk: r.get::<_, Option<i64>>(5).map(|started| Walk {
                    since: ts_opt(r.get(6)),
                    next_page: count(r.get::<_, Option<i64>>(7).unwrap_or(0)),
                    page_size: u32::try_from(r.get::<_, Option<i64>>(8).unwrap_or(0)).unwrap_or(0),
                    newest: ts_opt(r.get(9)),
                    oldest: ts_opt(r.get(10)),
                    gap_from: ts_opt(r.get(11)),
                    started_at: ts(started),
                }),
                alert_start_seq: r.get(12),
                reject_count: count(r.get(13)),
                created_at: ts(r.get(14)),
            })
            .collect();
        let runs = tx
            .query(
                "SELECT id, source_id, started_ms, finished_ms, result, error, pages, requests, retries, new_events,
                        duplicates, rejects FROM runs ORDER BY id",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| RunState {
                id: r.get(0),
                source: name(r.get(1)),
                started_at: ts(r.get(2)),
                finished_at: ts_opt(r.get(3)),
                result: r.get(4),
                error: r.get(5),
                tally: RunTally {
                    pages: count(r.get(6)),
                    requests: count(r.get(7)),
                    retries: count(r.get(8)),
                    new_events: count(r.get(9)),
                    duplicates: count(r.get(10)),
                    rejects: count(r.get(11)),
                },
            })
            .collect();
        let gaps = tx
            .query("SELECT id, source_id, from_ms, to_ms, detected_ms FROM gaps ORDER BY id", &[])
            .map_err(db)?
            .iter()
            .map(|r| GapState {
                id: r.get(0),
                source: name(r.get(1)),
                from: ts(r.get(2)),
                to: ts(r.get(3)),
                detected_at: ts(r.get(4)),
            })
            .collect();
        let rejects = tx
            .query(
                "SELECT id, source_id, run_id, reason, raw, first_seen_ms, last_seen_ms, times_seen FROM rejects ORDER BY id",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| RejectState {
                id: r.get(0),
                source: name(r.get(1)),
                run_id: r.get(2),
                reason: r.get(3),
                raw: reject_raw(r, 4),
                first_seen: ts(r.get(5)),
                last_seen: ts(r.get(6)),
                times_seen: count(r.get(7)),
            })
            .collect();
        let consumers = tx
            .query(
                "SELECT name, position, state, (extract(epoch FROM updated_at) * 1000)::bigint FROM consumers ORDER BY name",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| ConsumerState { name: r.get(0), position: r.get(1), state: r.get(2), updated_at: ts(r.get(3)) })
            .collect();
        let mut deliveries = read_deliveries(tx, "deliveries", "alert_id", "destination").map_err(db)?;
        let alerts = tx
            .query(&format!("SELECT {ALERT_COLUMNS} FROM alerts a ORDER BY a.id"), &[])
            .map_err(db)?
            .iter()
            .map(|r| {
                let record = read_alert(r);
                AlertState {
                    id: record.id,
                    deliveries: deliveries.remove(&record.id).unwrap_or_default(),
                    alert: record.alert,
                    raised_at: record.raised_at,
                }
            })
            .collect();
        let destinations = tx
            .query("SELECT name, misconfigured, misconfigured_ms FROM destinations ORDER BY name", &[])
            .map_err(db)?
            .iter()
            .map(|r| DestinationState { name: r.get(0), misconfigured: r.get(1), misconfigured_at: ts_opt(r.get(2)) })
            .collect();
        let dead_letters = tx
            .query(&format!("SELECT {} FROM dead_letters ORDER BY consumer, seq", dead_letters::COLUMNS), &[])
            .map_err(db)?
            .iter()
            .map(dead_letters::read)
            .collect();
        let names = tx
            .query(
                "SELECT c.id, c.name, c.kind, c.email, s.name, c.first_seen_ms, c.last_seen_ms, c.gone_ms, c.listed
                 FROM catalogue c JOIN sources s ON s.id = c.source_id ORDER BY c.id, c.name",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| NameState {
                source: r.get(4),
                record: tfaudit_store::NameRecord {
                    id: r.get(0),
                    name: r.get(1),
                    kind: r.get::<_, String>(2).parse().unwrap_or(tfaudit_model::NameKind::User),
                    email: r.get(3),
                    first_seen: ts(r.get(5)),
                    last_seen: ts(r.get(6)),
                    gone: ts_opt(r.get(7)),
                    listed: r.get(8),
                },
            })
            .collect();
        let listings = tx
            .query(
                "SELECT s.name, l.listed_ms FROM catalogue_listings l JOIN sources s ON s.id = l.source_id ORDER BY s.name",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| (r.get(0), ts(r.get(1))))
            .collect();
        let report_schedules = tx
            .query("SELECT name, cadence, since_ms FROM report_schedules ORDER BY name, cadence", &[])
            .map_err(db)?
            .iter()
            .map(|r| (r.get(0), r.get(1), ts(r.get(2))))
            .collect();
        let mut report_deliveries = read_deliveries(tx, "report_deliveries", "report_id", "target").map_err(db)?;
        let reports = tx
            .query(
                "SELECT id, name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms
                 FROM reports ORDER BY id",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                ReportState {
                    id,
                    report: tfaudit_store::MadeReport {
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
                    deliveries: report_deliveries.remove(&id).unwrap_or_default(),
                }
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
}

impl Transfer for PostgresStore {
    fn archive_state(&self) -> Result<ArchiveState> {
        let mut conn = self.conn()?;
        // Repeatable read: every table from one snapshot.
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| self.db(&e))?;
        let state = self.read_state(&mut tx)?;
        tx.commit().map_err(|e| self.db(&e))?;
        Ok(state)
    }

    fn append_copied(&self, events: &[StoredEvent]) -> Result<()> {
        let mut conn = self.conn()?;
        let rollup_statements = rollup::Prepared::on(self, &mut conn)?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let db = |e: postgres::Error| self.db(&e);
        let ids = self.source_ids(&mut tx)?;
        let mut sources = Vec::with_capacity(events.len());
        for e in events {
            sources.push(*ids.get(&e.source).ok_or_else(|| unknown(&e.source))?);
        }
        // See lib.rs: seqs must become visible in the order they are handed out.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEQ_LOCK]).map_err(db)?;
        insert_events(&mut tx, events, &sources, false).map_err(db)?;
        let ev: Vec<&tfaudit_model::AuditEvent> = events.iter().map(|e| &e.event).collect();
        let mut rollups = Rollups::default();
        let mut counters: BTreeMap<i64, (i64, i64, i64, Option<&str>)> = BTreeMap::new();
        let clean: Vec<tfaudit_model::AuditEvent> = ev
            .iter()
            .map(|e| tfaudit_model::AuditEvent {
                id: String::new(),
                timestamp: e.timestamp,
                organization_id: nul_free_opt(&e.organization_id).map(Cow::into_owned),
                auth_type: None,
                accessor_id: nul_free_opt(&e.accessor_id).map(Cow::into_owned),
                auth_description: nul_free_opt(&e.auth_description).map(Cow::into_owned),
                impersonator_id: None,
                request_id: None,
                resource_id: None,
                resource_type: nul_free_opt(&e.resource_type).map(Cow::into_owned),
                resource_action: nul_free_opt(&e.resource_action).map(Cow::into_owned),
                raw: String::new(),
                named: Default::default(),
            })
            .collect();
        for (e, &source) in clean.iter().zip(&sources) {
            let t = ms(e.timestamp);
            let c = counters.entry(source).or_insert((0, t, t, None));
            c.0 += 1;
            c.1 = c.1.min(t);
            c.2 = c.2.max(t);
            if let Some(org) = e.organization_id.as_deref() {
                c.3.get_or_insert(org);
            }
            rollups.add(source, e);
        }
        rollup::write(rollups, self, &mut tx, &rollup_statements)?;
        for (source, (n, oldest, newest, org)) in &counters {
            tx.execute(
                "UPDATE sources SET event_count = event_count + $2,
                    oldest_ms = least(coalesce(oldest_ms, $3), $3), newest_ms = greatest(coalesce(newest_ms, $4), $4),
                    organization_id = coalesce(organization_id, $5)
                 WHERE id = $1",
                &[source, n, oldest, newest, org],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn load_state(&self, state: &ArchiveState) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let db = |e: postgres::Error| self.db(&e);
        for s in &state.sources {
            let w = s.walk.as_ref();
            tx.execute(
                "INSERT INTO sources (name, address, created_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                &[&s.name, &s.address, &ms(s.created_at)],
            )
            .map_err(db)?;
            tx.execute(
                "UPDATE sources SET address = $2, organization_id = $3, cursor_ms = $4, reconciled_ms = $5,
                    walk_started_ms = $6, walk_since_ms = $7, walk_next_page = $8, walk_page_size = $9,
                    walk_newest_ms = $10, walk_oldest_ms = $11, walk_gap_from_ms = $12,
                    alert_start_seq = $13, reject_count = $14, created_ms = $15
                 WHERE name = $1",
                &[
                    &s.name,
                    &s.address,
                    &s.organization_id,
                    &s.cursor.map(ms),
                    &s.reconciled.map(ms),
                    &w.map(|w| ms(w.started_at)),
                    &w.and_then(|w| w.since.map(ms)),
                    &w.map(|w| big(w.next_page)),
                    &w.map(|w| i64::from(w.page_size)),
                    &w.and_then(|w| w.newest.map(ms)),
                    &w.and_then(|w| w.oldest.map(ms)),
                    &w.and_then(|w| w.gap_from.map(ms)),
                    &s.alert_start_seq,
                    &big(s.reject_count),
                    &ms(s.created_at),
                ],
            )
            .map_err(db)?;
        }
        let ids = self.source_ids(&mut tx)?;
        let id = |name: &str| ids.get(name).copied().ok_or_else(|| unknown(name));
        tx.batch_execute(
            "DELETE FROM runs; DELETE FROM gaps; DELETE FROM rejects; DELETE FROM consumers;
             DELETE FROM deliveries; DELETE FROM alerts; DELETE FROM destinations; DELETE FROM dead_letters;
             DELETE FROM catalogue; DELETE FROM catalogue_listings;
             DELETE FROM report_deliveries; DELETE FROM reports; DELETE FROM report_schedules;",
        )
        .map_err(db)?;
        for r in &state.runs {
            tx.execute(
                "INSERT INTO runs (id, source_id, started_ms, finished_ms, result, error, pages, requests, retries,
                    new_events, duplicates, rejects) OVERRIDING SYSTEM VALUE
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &r.id,
                    &id(&r.source)?,
                    &ms(r.started_at),
                    &r.finished_at.map(ms),
                    &r.result,
                    &r.error,
                    &big(r.tally.pages),
                    &big(r.tally.requests),
                    &big(r.tally.retries),
                    &big(r.tally.new_events),
                    &big(r.tally.duplicates),
                    &big(r.tally.rejects),
                ],
            )
            .map_err(db)?;
        }
        for g in &state.gaps {
            tx.execute(
                "INSERT INTO gaps (id, source_id, from_ms, to_ms, detected_ms) OVERRIDING SYSTEM VALUE
                 VALUES ($1, $2, $3, $4, $5)",
                &[&g.id, &id(&g.source)?, &ms(g.from), &ms(g.to), &ms(g.detected_at)],
            )
            .map_err(db)?;
        }
        let insert_reject = tx
            .prepare(
                "INSERT INTO rejects (id, source_id, run_id, reason, raw, raw_sha256, first_seen_ms, last_seen_ms, times_seen)
                 OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .map_err(db)?;
        for r in &state.rejects {
            let hash = sha2::Sha256::digest(r.raw.as_bytes()).to_vec();
            let raw = r.raw.as_bytes();
            tx.execute(
                &insert_reject,
                &[
                    &r.id,
                    &id(&r.source)?,
                    &r.run_id,
                    &nul_free(&r.reason),
                    &raw,
                    &hash,
                    &ms(r.first_seen),
                    &ms(r.last_seen),
                    &big(r.times_seen),
                ],
            )
            .map_err(db)?;
        }
        for c in &state.consumers {
            tx.execute(
                "INSERT INTO consumers (name, position, state, updated_at)
                 VALUES ($1, $2, $3, to_timestamp($4::float8 / 1000))",
                &[&c.name, &c.position, &c.state, &(ms(c.updated_at) as f64)],
            )
            .map_err(db)?;
        }
        for a in &state.alerts {
            let x = &a.alert;
            tx.execute(
                "INSERT INTO alerts (id, key, rule, severity, group_key, title, text, source, event_seq, event_id,
                    event_ms, count, window_start_ms, window_end_ms, link, event, raised_ms) OVERRIDING SYSTEM VALUE
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                &[
                    &a.id,
                    &nul_free(&x.key),
                    &nul_free(&x.rule),
                    &x.severity,
                    &nul_free_opt(&x.group),
                    &nul_free(&x.title),
                    &nul_free(&x.text),
                    &nul_free(&x.source),
                    &x.event_seq,
                    &nul_free(&x.event_id),
                    &ms(x.event_time),
                    &big(x.count),
                    &x.window_start.map(ms),
                    &x.window_end.map(ms),
                    &nul_free_opt(&x.link),
                    &nul_free(&x.event),
                    &ms(a.raised_at),
                ],
            )
            .map_err(db)?;
            insert_deliveries(&mut tx, "deliveries", "alert_id", "destination", a.id, &a.deliveries).map_err(db)?;
        }
        for d in &state.destinations {
            tx.execute(
                "INSERT INTO destinations (name, misconfigured, misconfigured_ms) VALUES ($1, $2, $3)",
                &[&d.name, &d.misconfigured, &d.misconfigured_at.map(ms)],
            )
            .map_err(db)?;
        }
        for d in &state.dead_letters {
            tx.execute(
                "INSERT INTO dead_letters (consumer, seq, event_id, reason, at_ms, attempts) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&nul_free(&d.consumer), &d.seq, &nul_free(&d.event_id), &nul_free(&d.reason), &ms(d.at), &big(d.attempts)],
            )
            .map_err(db)?;
        }
        for n in &state.names {
            let r = &n.record;
            tx.execute(
                "INSERT INTO catalogue (id, name, kind, email, source_id, first_seen_ms, last_seen_ms, gone_ms, listed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &nul_free(&r.id),
                    &nul_free(&r.name),
                    &r.kind.as_str(),
                    &nul_free_opt(&r.email),
                    &id(&n.source)?,
                    &ms(r.first_seen),
                    &ms(r.last_seen),
                    &r.gone.map(ms),
                    &r.listed,
                ],
            )
            .map_err(db)?;
        }
        for (source, at) in &state.listings {
            tx.execute(
                "INSERT INTO catalogue_listings (source_id, listed_ms) VALUES ($1, $2)",
                &[&id(source)?, &ms(*at)],
            )
            .map_err(db)?;
        }
        for (name, cadence, since) in &state.report_schedules {
            tx.execute(
                "INSERT INTO report_schedules (name, cadence, since_ms) VALUES ($1, $2, $3)",
                &[&nul_free(name), &nul_free(cadence), &ms(*since)],
            )
            .map_err(db)?;
        }
        for r in &state.reports {
            let m = &r.report;
            tx.execute(
                "INSERT INTO reports (id, name, period, since_ms, until_ms, file_name, content_type, content, summary, made_ms)
                 OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &r.id,
                    &nul_free(&m.name),
                    &nul_free(&m.period),
                    &ms(m.since),
                    &ms(m.until),
                    &nul_free(&m.file_name),
                    &nul_free(&m.content_type),
                    &m.content,
                    &nul_free(&m.summary),
                    &ms(m.made_at),
                ],
            )
            .map_err(db)?;
            insert_deliveries(&mut tx, "report_deliveries", "report_id", "target", r.id, &r.deliveries).map_err(db)?;
        }
        for table in KEPT_IDS {
            tx.batch_execute(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
            ))
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }
}
