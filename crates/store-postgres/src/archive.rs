//! The archive's role: ingest (sources, runs, pages, walks), queries and status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use jiff::Timestamp;
use postgres::types::ToSql;
use sha2::Digest;
use tfaudit_model::AuditEvent;
use tfaudit_store::{
    ActorCount, DayCount, EventFilter, EventKey, Gap, KindCount, Order, PageOutcome, PageWrite, Pattern, Reject,
    Result, Run, RunCounts, RunResult, RunTally, RunTotals, SeenValues, Source, SourceStatus, StoreError, StoredEvent,
    Summary, Walk,
};

use crate::rollup;
use crate::{PostgresStore, SEQ_LOCK, big, count, ms, ts, ts_opt};
use tfaudit_store::rollup::Rollups;

use tfaudit_store::rollup::HOUR_MS;

/// A range of hours or days, `[from, to)`, open where `None`.
type Span = (Option<i64>, Option<i64>);

const WALK_COLUMNS: &str =
    "walk_started_ms, walk_since_ms, walk_next_page, walk_page_size, walk_newest_ms, walk_oldest_ms, walk_gap_from_ms";

const EVENT_COLUMNS: &str = "e.seq, e.id, e.source_id, e.ts_ms, e.organization_id, e.auth_type, e.accessor_id, \
     e.auth_description, e.impersonator_id, e.request_id, e.resource_id, e.resource_type, e.resource_action, e.raw, e.ingested_ms";

fn read_walk(r: &postgres::Row, at: usize) -> Option<Walk> {
    let started: Option<i64> = r.get(at);
    Some(Walk {
        started_at: ts(started?),
        since: ts_opt(r.get(at + 1)),
        next_page: r.get::<_, Option<i64>>(at + 2).unwrap_or(1).max(1) as u64,
        page_size: u32::try_from(r.get::<_, Option<i64>>(at + 3).unwrap_or(0)).unwrap_or(0),
        newest: ts_opt(r.get(at + 4)),
        oldest: ts_opt(r.get(at + 5)),
        gap_from: ts_opt(r.get(at + 6)),
    })
}

fn read_event(r: &postgres::Row, names: &HashMap<i64, String>) -> Result<StoredEvent> {
    let raw: Vec<u8> = r.get(13);
    let raw = String::from_utf8(raw)
        .map_err(|_| StoreError::Database("an event's stored text is not UTF-8 (the archive was altered)".into()))?;
    let stored = StoredEvent {
        seq: r.get(0),
        source: names.get(&r.get::<_, i64>(2)).cloned().unwrap_or_default(),
        ingested_at: ts(r.get(14)),
        event: AuditEvent {
            id: r.get(1),
            timestamp: ts(r.get(3)),
            organization_id: r.get(4),
            auth_type: r.get(5),
            accessor_id: r.get(6),
            auth_description: r.get(7),
            impersonator_id: r.get(8),
            request_id: r.get(9),
            resource_id: r.get(10),
            resource_type: r.get(11),
            resource_action: r.get(12),
            raw,
            named: Default::default(),
        },
    };
    if indexed_fields(&stored.event).any(|c| c.contains('\u{FFFD}')) {
        // A column may stand for a NUL (see `nul_free`): the raw text has the truth.
        return exact_fields(stored);
    }
    Ok(stored)
}

/// `stored` with its fields read again from its raw text.
fn exact_fields(mut stored: StoredEvent) -> Result<StoredEvent> {
    let raw = serde_json::value::RawValue::from_string(std::mem::take(&mut stored.event.raw))
        .map_err(|_| StoreError::Database("an event's stored text is not JSON (the archive was altered)".into()))?;
    let event = AuditEvent::parse(&raw)
        .map_err(|_| StoreError::Database("an event's stored text is not an event (the archive was altered)".into()))?;
    stored.event = event;
    Ok(stored)
}

/// Whether an indexed field of `e` holds a NUL (see `nul_free`).
fn has_nul(e: &AuditEvent) -> bool {
    indexed_fields(e).any(|f| f.contains('\0'))
}

fn indexed_fields(e: &AuditEvent) -> impl Iterator<Item = &String> {
    [
        Some(&e.id),
        e.organization_id.as_ref(),
        e.auth_type.as_ref(),
        e.accessor_id.as_ref(),
        e.auth_description.as_ref(),
        e.impersonator_id.as_ref(),
        e.request_id.as_ref(),
        e.resource_id.as_ref(),
        e.resource_type.as_ref(),
        e.resource_action.as_ref(),
    ]
    .into_iter()
    .flatten()
}

/// `e` as its indexed columns hold it; the raw text is kept as it is.
fn without_nul(e: &AuditEvent) -> AuditEvent {
    let clean = |f: &Option<String>| f.as_deref().map(|v| crate::nul_free(v).into_owned());
    AuditEvent {
        id: crate::nul_free(&e.id).into_owned(),
        timestamp: e.timestamp,
        organization_id: clean(&e.organization_id),
        auth_type: clean(&e.auth_type),
        accessor_id: clean(&e.accessor_id),
        auth_description: clean(&e.auth_description),
        impersonator_id: clean(&e.impersonator_id),
        request_id: clean(&e.request_id),
        resource_id: clean(&e.resource_id),
        resource_type: clean(&e.resource_type),
        resource_action: clean(&e.resource_action),
        raw: e.raw.clone(),
        named: Default::default(),
    }
}

/// A glob as a `LIKE` pattern: `*` → `%`, `?` → `_`, and `%`, `_` and the escape
/// character `\` taken literally.
fn like(p: &Pattern) -> String {
    let mut out = String::with_capacity(p.as_str().len() + 4);
    for c in p.as_str().chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

type Param = Box<dyn ToSql + Sync + Send>;

/// A WHERE clause and its parameters. Filter values only ever reach SQL as parameters.
struct Where {
    sql: String,
    params: Vec<Param>,
}

impl Where {
    fn new() -> Self {
        Self { sql: String::from("true"), params: Vec::new() }
    }
    /// A placeholder for `value`.
    fn arg(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }
    fn and(&mut self, clause: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
    }
    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
    /// `column` matches `p` with case: `=` without wildcards, else `LIKE`.
    fn glob(&mut self, column: &str, p: &Pattern) {
        let p = &Pattern::new(crate::nul_free(p.as_str()).into_owned());
        if p.is_glob() {
            let a = self.arg(like(p));
            self.and(&format!("{column} LIKE {a}"));
        } else {
            let a = self.arg(p.as_str().to_owned());
            self.and(&format!("{column} = {a}"));
        }
    }
}

/// Free text in an event's JSON, case-insensitive by simple folding (the regex
/// crate's `(?i)`), matched in Rust so that the database's collation cannot change it.
fn text_matcher(text: &str) -> Result<regex::Regex> {
    regex::RegexBuilder::new(&regex::escape(text))
        .case_insensitive(true)
        .build()
        .map_err(|e| StoreError::Database(format!("the search text cannot be matched: {e}")))
}

#[derive(Default)]
struct Tally {
    kinds: HashMap<(String, String), u64>,
    actors: HashMap<String, u64>,
    days: BTreeMap<i64, u64>,
    hours: BTreeMap<i64, u64>,
    total: u64,
}

impl Tally {
    fn add(&mut self, hour: i64, kind: (String, String), actor: String, n: u64) {
        *self.kinds.entry(kind).or_default() += n;
        *self.actors.entry(actor).or_default() += n;
        *self.days.entry(hour.div_euclid(24)).or_default() += n;
        *self.hours.entry(hour).or_default() += n;
        self.total += n;
    }
}

/// A filter's case-insensitive parts, resolved in Rust to the values they match.
struct Resolved {
    /// Accessor ids whose id or description matches the actor pattern.
    accessors: Option<Vec<String>>,
    /// Sources whose name or organization id matches the org pattern, and
    /// organization ids (of events) that match it.
    org: Option<(Vec<i64>, Vec<String>)>,
}

impl PostgresStore {
    // ----- ingest -----

    pub(crate) fn ingest_source(&self, name: &str, address: &str) -> Result<Source> {
        let mut conn = self.conn()?;
        let sql = format!(
            "INSERT INTO sources (name, address, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET address = excluded.address
             RETURNING id, name, address, organization_id, cursor_ms, reconciled_ms, {WALK_COLUMNS}"
        );
        let stmt = conn.prepare(&sql).map_err(|e| self.db(&e))?;
        let r = conn.client.query_one(&stmt, &[&name, &address, &ms(Timestamp::now())]).map_err(|e| self.db(&e))?;
        Ok(Source {
            id: r.get(0),
            name: r.get(1),
            address: r.get(2),
            organization_id: r.get(3),
            cursor: ts_opt(r.get(4)),
            reconciled: ts_opt(r.get(5)),
            walk: read_walk(&r, 6),
        })
    }

    pub(crate) fn ingest_start_run(&self, source_id: i64, started_at: Timestamp) -> Result<i64> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare("INSERT INTO runs (source_id, started_ms) VALUES ($1, $2) RETURNING id")
            .map_err(|e| self.db(&e))?;
        Ok(conn.client.query_one(&stmt, &[&source_id, &ms(started_at)]).map_err(|e| self.db(&e))?.get(0))
    }

    /// One page (or several) in one transaction: the events in one statement, then the
    /// rollups, actors, organizations, rejects, the source's counters and walk, and
    /// the run's tally.
    pub(crate) fn ingest_page(
        &self,
        page: &PageWrite<'_>,
        fence: Option<&tfaudit_store::Fence>,
    ) -> Result<PageOutcome> {
        let mut conn = self.conn()?;
        let now = ms(Timestamp::now());
        let statements = [
            // 0: see lib.rs: seqs must become visible in the order they are handed out.
            "SELECT pg_advisory_xact_lock($1)",
            // 1
            "INSERT INTO events (id, source_id, organization_id, ts_ms, auth_type, accessor_id, auth_description,
                                 impersonator_id, request_id, resource_id, resource_type, resource_action, raw, ingested_ms,
                                 destroy_run)
             SELECT u.id, $1, u.org, u.ts, u.auth, u.acc, u.descr, u.imp, u.req, u.rid, u.rtype, u.ract, u.raw, $2, u.destroy
             FROM unnest($3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::bytea[], $15::bool[])
                  WITH ORDINALITY AS u(id, org, ts, auth, acc, descr, imp, req, rid, rtype, ract, raw, destroy, ord)
             ORDER BY u.ord
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
            // 2
            "INSERT INTO rejects (source_id, run_id, reason, raw, raw_sha256, first_seen_ms, last_seen_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (source_id, raw_sha256) DO UPDATE SET times_seen = rejects.times_seen + 1, last_seen_ms = excluded.last_seen_ms
             RETURNING (xmax = 0)",
            // 3
            "UPDATE sources SET
                event_count = event_count + $2,
                oldest_ms = CASE WHEN $3::int8 IS NULL THEN oldest_ms ELSE least(coalesce(oldest_ms, $3), $3) END,
                newest_ms = CASE WHEN $4::int8 IS NULL THEN newest_ms ELSE greatest(coalesce(newest_ms, $4), $4) END,
                reject_count = reject_count + $5,
                organization_id = coalesce(organization_id, $6),
                walk_started_ms = $7, walk_since_ms = $8, walk_next_page = $9, walk_page_size = $10,
                walk_newest_ms = $11, walk_oldest_ms = $12, walk_gap_from_ms = $13
             WHERE id = $1",
            // 4
            "UPDATE runs SET pages = pages + $5, new_events = new_events + $2, duplicates = duplicates + $3,
                 rejects = rejects + $4 WHERE id = $1",
            // 5
            "SELECT 1 FROM sources WHERE id = $1",
        ];
        let mut prepared = Vec::with_capacity(statements.len());
        for sql in statements {
            prepared.push(conn.prepare(sql).map_err(|e| self.db(&e))?);
        }
        let rollup_statements = rollup::Prepared::on(self, &mut conn)?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        self.check_fence(&mut tx, fence)?;
        // A page for a source that does not exist is refused before anything is
        // written (no foreign keys: they would cost every event a lookup).
        if tx.query_opt(&prepared[5], &[&page.source_id]).map_err(|e| self.db(&e))?.is_none() {
            return Err(unknown_source(page.source_id));
        }
        let mut outcome = PageOutcome::default();
        let (mut oldest, mut newest): (Option<i64>, Option<i64>) = (None, None);
        let sanitized: Vec<AuditEvent>;
        let mut organization: Option<&str> = None;
        if !page.events.is_empty() {
            tx.execute(&prepared[0], &[&SEQ_LOCK]).map_err(|e| self.db(&e))?;
            let ev = if page.events.iter().any(has_nul) {
                sanitized = page.events.iter().map(without_nul).collect();
                &sanitized[..]
            } else {
                page.events
            };
            let ids: Vec<&str> = ev.iter().map(|e| e.id.as_str()).collect();
            let orgs: Vec<Option<&str>> = ev.iter().map(|e| e.organization_id.as_deref()).collect();
            let times: Vec<i64> = ev.iter().map(|e| ms(e.timestamp)).collect();
            let auth: Vec<Option<&str>> = ev.iter().map(|e| e.auth_type.as_deref()).collect();
            let acc: Vec<Option<&str>> = ev.iter().map(|e| e.accessor_id.as_deref()).collect();
            let descr: Vec<Option<&str>> = ev.iter().map(|e| e.auth_description.as_deref()).collect();
            let imp: Vec<Option<&str>> = ev.iter().map(|e| e.impersonator_id.as_deref()).collect();
            let req: Vec<Option<&str>> = ev.iter().map(|e| e.request_id.as_deref()).collect();
            let rid: Vec<Option<&str>> = ev.iter().map(|e| e.resource_id.as_deref()).collect();
            let rtype: Vec<Option<&str>> = ev.iter().map(|e| e.resource_type.as_deref()).collect();
            let ract: Vec<Option<&str>> = ev.iter().map(|e| e.resource_action.as_deref()).collect();
            let raw: Vec<&[u8]> = ev.iter().map(|e| e.raw.as_bytes()).collect();
            let destroy: Vec<bool> = ev.iter().map(AuditEvent::is_destroy_run).collect();
            let rows = tx
                .query(
                    &prepared[1],
                    &[
                        &page.source_id,
                        &now,
                        &ids,
                        &orgs,
                        &times,
                        &auth,
                        &acc,
                        &descr,
                        &imp,
                        &req,
                        &rid,
                        &rtype,
                        &ract,
                        &raw,
                        &destroy,
                    ],
                )
                .map_err(|e| self.db(&e))?;
            let mut inserted: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
            let mut rollups = Rollups::default();
            for e in ev {
                // The first copy of an id in the page is the one inserted.
                if !inserted.remove(&e.id) {
                    outcome.duplicates += 1;
                    continue;
                }
                outcome.inserted += 1;
                let t = ms(e.timestamp);
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
                newest = Some(newest.map_or(t, |n| n.max(t)));
                if let Some(org) = e.organization_id.as_deref() {
                    organization.get_or_insert(org);
                }
                rollups.add(page.source_id, e);
            }
            rollup::write(rollups, self, &mut tx, &rollup_statements)?;
            crate::catalogue::write_page_names(&mut tx, page.source_id, page.events).map_err(|e| self.db(&e))?;
        }
        for reject in page.rejects {
            let hash = sha2::Sha256::digest(reject.raw.as_bytes()).to_vec();
            let new: bool = tx
                .query_one(
                    &prepared[2],
                    &[
                        &page.source_id,
                        &page.run_id,
                        &crate::nul_free(&reject.reason),
                        &reject.raw.as_bytes(),
                        &hash,
                        &now,
                    ],
                )
                .map_err(|e| self.db(&e))?
                .get(0);
            if new {
                outcome.rejected += 1;
            }
        }
        let w = page.walk;
        tx.execute(
            &prepared[3],
            &[
                &page.source_id,
                &big(outcome.inserted),
                &oldest,
                &newest,
                &big(outcome.rejected),
                &organization,
                &ms(w.started_at),
                &w.since.map(ms),
                &big(w.next_page),
                &i64::from(w.page_size),
                &w.newest.map(ms),
                &w.oldest.map(ms),
                &w.gap_from.map(ms),
            ],
        )
        .map_err(|e| self.db(&e))?;
        tx.execute(
            &prepared[4],
            &[&page.run_id, &big(outcome.inserted), &big(outcome.duplicates), &big(outcome.rejected), &big(page.pages)],
        )
        .map_err(|e| self.db(&e))?;
        tx.commit().map_err(|e| self.db(&e))?;
        Ok(outcome)
    }

    pub(crate) fn ingest_finish_walk(
        &self,
        source_id: i64,
        cursor: Option<Timestamp>,
        gap: Option<&Gap>,
        reconciled: Option<Timestamp>,
        fence: Option<&tfaudit_store::Fence>,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let lock = conn.prepare("SELECT pg_advisory_xact_lock($1)").map_err(|e| self.db(&e))?;
        let update = conn
            .prepare(
                "UPDATE sources SET
                    cursor_ms = CASE WHEN $2::int8 IS NULL THEN cursor_ms ELSE greatest(coalesce(cursor_ms, $2), $2) END,
                    reconciled_ms = coalesce($3, reconciled_ms),
                    walk_started_ms = NULL, walk_since_ms = NULL, walk_next_page = NULL, walk_page_size = NULL,
                    walk_newest_ms = NULL, walk_oldest_ms = NULL, walk_gap_from_ms = NULL,
                    alert_start_seq = coalesce(alert_start_seq, (SELECT coalesce(max(seq), 0) FROM events))
                 WHERE id = $1",
            )
            .map_err(|e| self.db(&e))?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        self.check_fence(&mut tx, fence)?;
        // The start point is the newest seq committed: holding the seq lock, no page
        // with lower seqs can still be on its way.
        tx.execute(&lock, &[&SEQ_LOCK]).map_err(|e| self.db(&e))?;
        let updated =
            tx.execute(&update, &[&source_id, &cursor.map(ms), &reconciled.map(ms)]).map_err(|e| self.db(&e))?;
        if updated != 1 {
            return Err(unknown_source(source_id));
        }
        if let Some(g) = gap {
            tx.execute(
                "INSERT INTO gaps (source_id, from_ms, to_ms, detected_ms) VALUES ($1, $2, $3, $4)",
                &[&source_id, &ms(g.from), &ms(g.to), &ms(g.detected_at)],
            )
            .map_err(|e| self.db(&e))?;
        }
        tx.commit().map_err(|e| self.db(&e))
    }

    pub(crate) fn ingest_finish_run(&self, run_id: i64, result: &RunResult, counts: RunCounts) -> Result<()> {
        let error = match result {
            RunResult::Failed(e) => Some(e.as_str()),
            _ => None,
        };
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare(
                "UPDATE runs SET finished_ms = $2, result = $3, error = $4, requests = $5, retries = $6 WHERE id = $1",
            )
            .map_err(|e| self.db(&e))?;
        conn.client
            .execute(
                &stmt,
                &[&run_id, &ms(Timestamp::now()), &result.label(), &error, &big(counts.requests), &big(counts.retries)],
            )
            .map_err(|e| self.db(&e))?;
        Ok(())
    }

    // ----- queries -----

    fn source_names(&self, conn: &mut crate::Lease<'_>) -> Result<HashMap<i64, String>> {
        let stmt = conn.prepare("SELECT id, name FROM sources").map_err(|e| self.db(&e))?;
        Ok(conn.client.query(&stmt, &[]).map_err(|e| self.db(&e))?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Resolves the actor and organization patterns against the small tables that
    /// list every accessor and organization seen.
    fn resolve(&self, conn: &mut crate::Lease<'_>, filter: &EventFilter) -> Result<Resolved> {
        let mut resolved = Resolved { accessors: None, org: None };
        if let Some(actor) = &filter.actor {
            actor.check().map_err(StoreError::Database)?;
            let actor = &Pattern::new(crate::nul_free(actor.as_str()).into_owned());
            let stmt = conn.prepare("SELECT accessor_id, description FROM actors").map_err(|e| self.db(&e))?;
            let mut ids: Vec<String> = Vec::new();
            for r in conn.client.query(&stmt, &[]).map_err(|e| self.db(&e))? {
                let id: String = r.get(0);
                let description: String = r.get(1);
                if (actor.matches(&id, true) || actor.matches(&description, true)) && !ids.contains(&id) {
                    ids.push(id);
                }
            }
            resolved.accessors = Some(ids);
        }
        if let Some(org) = &filter.org {
            org.check().map_err(StoreError::Database)?;
            let org = &Pattern::new(crate::nul_free(org.as_str()).into_owned());
            let stmt = conn.prepare("SELECT id, name, organization_id FROM sources").map_err(|e| self.db(&e))?;
            let mut sources = Vec::new();
            for r in conn.client.query(&stmt, &[]).map_err(|e| self.db(&e))? {
                let name: String = r.get(1);
                let organization: Option<String> = r.get(2);
                if org.matches(&name, true) || organization.is_some_and(|o| org.matches(&o, true)) {
                    sources.push(r.get::<_, i64>(0));
                }
            }
            let stmt = conn.prepare("SELECT organization_id FROM organizations").map_err(|e| self.db(&e))?;
            let organizations = conn
                .client
                .query(&stmt, &[])
                .map_err(|e| self.db(&e))?
                .into_iter()
                .map(|r| r.get::<_, String>(0))
                .filter(|o| org.matches(o, true))
                .collect();
            resolved.org = Some((sources, organizations));
        }
        Ok(resolved)
    }

    /// The WHERE clause over `events e` for a filter, with an explicit time range
    /// (which may be narrower than the filter's, for summaries). Free text is left to
    /// the caller.
    fn where_clause(
        filter: &EventFilter,
        resolved: &Resolved,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<Where> {
        let mut w = Where::new();
        if let Some(s) = since {
            let a = w.arg(s);
            w.and(&format!("e.ts_ms >= {a}"));
        }
        if let Some(u) = until {
            let a = w.arg(u);
            w.and(&format!("e.ts_ms < {a}"));
        }
        if let Some(ids) = &resolved.accessors {
            let a = w.arg(ids.clone());
            w.and(&format!("e.accessor_id = ANY({a})"));
        }
        for (column, pattern) in [
            ("e.resource_id", &filter.resource_id),
            ("e.resource_type", &filter.resource_type),
            ("e.resource_action", &filter.action),
        ] {
            if let Some(p) = pattern {
                p.check().map_err(StoreError::Database)?;
                w.glob(column, p);
            }
        }
        if filter.impersonated {
            w.and("e.impersonator_id IS NOT NULL");
        }
        if filter.destroy_run {
            // As the partial index states it, so that the index can answer.
            w.and("e.destroy_run");
        }
        if let Some((t, seq)) = filter.before {
            let (a, b) = (w.arg(ms(t)), w.arg(seq));
            w.and(&format!("(e.ts_ms, e.seq) < ({a}, {b})"));
        }
        if let Some((sources, organizations)) = &resolved.org {
            let (a, b) = (w.arg(sources.clone()), w.arg(organizations.clone()));
            w.and(&format!("(e.source_id = ANY({a}) OR e.organization_id = ANY({b}))"));
        }
        Ok(w)
    }

    pub(crate) fn query_events(
        &self,
        filter: &EventFilter,
        order: Order,
        limit: Option<u64>,
        each: &mut dyn FnMut(StoredEvent) -> io::Result<()>,
    ) -> Result<u64> {
        let mut conn = self.conn()?;
        let names = self.source_names(&mut conn)?;
        let resolved = self.resolve(&mut conn, filter)?;
        let w = Self::where_clause(filter, &resolved, filter.since.map(ms), filter.until.map(ms))?;
        let text = filter.text.as_deref().map(text_matcher).transpose()?;
        let direction = match order {
            Order::OldestFirst => "ASC",
            Order::NewestFirst => "DESC",
        };
        // With free text the limit counts matches, which only Rust sees.
        let limit_sql = match (limit, &text) {
            (Some(l), None) => format!(" LIMIT {}", big(l)),
            _ => String::new(),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE {} ORDER BY e.ts_ms {direction}, e.seq {direction}{limit_sql}",
            w.sql
        );
        let stmt = conn.prepare(&sql).map_err(|e| self.db(&e))?;
        let mut rows = conn.client.query_raw(&stmt, w.refs()).map_err(|e| self.db(&e))?;
        let mut n = 0;
        let limit = limit.unwrap_or(u64::MAX);
        while n < limit {
            let Some(row) = postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(|e| self.db(&e))?
            else {
                break;
            };
            let event = read_event(&row, &names)?;
            if let Some(re) = &text
                && !re.is_match(&event.event.raw)
            {
                continue;
            }
            each(event)?;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn query_event_keys(
        &self,
        filter: &EventFilter,
        order: Order,
        each: &mut dyn FnMut(EventKey) -> io::Result<()>,
    ) -> Result<u64> {
        let mut conn = self.conn()?;
        let resolved = self.resolve(&mut conn, filter)?;
        let w = Self::where_clause(filter, &resolved, filter.since.map(ms), filter.until.map(ms))?;
        let text = filter.text.as_deref().map(text_matcher).transpose()?;
        let direction = match order {
            Order::OldestFirst => "ASC",
            Order::NewestFirst => "DESC",
        };
        // The body only for free text, which only Rust matches, and where the resource
        // id column may stand for a NUL (see `nul_free`): the raw text has the truth.
        let raw =
            if text.is_some() { "e.raw" } else { "CASE WHEN strpos(e.resource_id, chr(65533)) > 0 THEN e.raw END" };
        let sql = format!(
            "SELECT e.seq, e.ts_ms, e.resource_id, {raw} FROM events e WHERE {}
             ORDER BY e.ts_ms {direction}, e.seq {direction}",
            w.sql
        );
        let stmt = conn.prepare(&sql).map_err(|e| self.db(&e))?;
        let mut rows = conn.client.query_raw(&stmt, w.refs()).map_err(|e| self.db(&e))?;
        let mut n = 0;
        while let Some(r) = postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(|e| self.db(&e))? {
            if let Some(re) = &text {
                let raw: &[u8] = r.get(3);
                if !re.is_match(&String::from_utf8_lossy(raw)) {
                    continue;
                }
            }
            let mut resource_id: Option<String> = r.get(2);
            if resource_id.as_deref().is_some_and(|id| id.contains('\u{FFFD}'))
                && let Some(raw) = r.get::<_, Option<&[u8]>>(3)
            {
                let raw = serde_json::value::RawValue::from_string(String::from_utf8_lossy(raw).into_owned());
                if let Some(event) = raw.ok().and_then(|raw| AuditEvent::parse(&raw).ok()) {
                    resource_id = event.resource_id;
                }
            }
            each(EventKey { seq: r.get(0), timestamp: ts(r.get(1)), resource_id })?;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn query_event(&self, id: &str) -> Result<Option<StoredEvent>> {
        let mut conn = self.conn()?;
        let names = self.source_names(&mut conn)?;
        let stmt =
            conn.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = $1")).map_err(|e| self.db(&e))?;
        let row = conn.client.query_opt(&stmt, &[&crate::nul_free(id)]).map_err(|e| self.db(&e))?;
        Ok(row.map(|r| read_event(&r, &names)).transpose()?.filter(|e| e.event.id == id))
    }

    pub(crate) fn query_summary(&self, filter: &EventFilter, top: usize) -> Result<Summary> {
        let mut conn = self.conn()?;
        let resolved = self.resolve(&mut conn, filter)?;
        let text = filter.text.as_deref().map(text_matcher).transpose()?;
        let since = filter.since.map(ms);
        let until = filter.until.map(ms);
        let mut tally = Tally::default();
        let scan = |conn: &mut crate::Lease<'_>, from: Option<i64>, to: Option<i64>, tally: &mut Tally| -> Result<()> {
            let w = Self::where_clause(filter, &resolved, from, to)?;
            let raw = if text.is_some() { "e.raw" } else { "NULL::bytea" };
            let sql = format!(
                "SELECT e.ts_ms, coalesce(e.resource_type, ''), coalesce(e.resource_action, ''), coalesce(e.accessor_id, ''), {raw}
                 FROM events e WHERE {}",
                w.sql
            );
            let stmt = conn.prepare(&sql).map_err(|e| self.db(&e))?;
            let mut rows = conn.client.query_raw(&stmt, w.refs()).map_err(|e| self.db(&e))?;
            while let Some(r) =
                postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(|e| self.db(&e))?
            {
                if let Some(re) = &text {
                    let raw: &[u8] = r.get(4);
                    if !re.is_match(&String::from_utf8_lossy(raw)) {
                        continue;
                    }
                }
                let t: i64 = r.get(0);
                tally.add(t.div_euclid(HOUR_MS), (r.get(1), r.get(2)), r.get(3), 1);
            }
            Ok(())
        };
        if filter.is_time_and_org_only() {
            // Whole hours come from the rollups (see `whole_hours`); the partial hours
            // at either end are counted from the events themselves (through
            // `events_by_time`), so the answer is exact.
            let first_hour = since.map(|s| s.div_euclid(HOUR_MS) + i64::from(s.rem_euclid(HOUR_MS) != 0));
            let end_hour = until.map(|u| u.div_euclid(HOUR_MS));
            if let (Some(a), Some(b)) = (first_hour, end_hour)
                && a >= b
            {
                scan(&mut conn, since, until, &mut tally)?;
            } else {
                if let (Some(s), Some(a)) = (since, first_hour)
                    && s < a * HOUR_MS
                {
                    scan(&mut conn, Some(s), Some(a * HOUR_MS), &mut tally)?;
                }
                if let (Some(u), Some(b)) = (until, end_hour)
                    && b * HOUR_MS < u
                {
                    scan(&mut conn, Some(b * HOUR_MS), Some(u), &mut tally)?;
                }
                let sources = resolved.org.as_ref().map(|(sources, _)| sources.as_slice());
                self.whole_hours(&mut conn, sources, first_hour, end_hour, &mut tally)?;
            }
        } else {
            scan(&mut conn, since, until, &mut tally)?;
        }
        let mut by_kind: Vec<KindCount> = tally
            .kinds
            .into_iter()
            .map(|((resource_type, action), count)| KindCount { resource_type, action, count })
            .collect();
        by_kind.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| (&a.resource_type, &a.action).cmp(&(&b.resource_type, &b.action)))
        });
        by_kind.truncate(top);
        let mut actors: Vec<(String, u64)> = tally.actors.into_iter().collect();
        actors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        actors.truncate(top);
        // The descriptions of all top actors in one statement: the newest non-empty
        // description each accessor was seen with.
        let describe = conn
            .prepare(
                "SELECT DISTINCT ON (accessor_id) accessor_id, description FROM actors
                 WHERE accessor_id = ANY($1) AND description <> ''
                 ORDER BY accessor_id, last_seen_ms DESC",
            )
            .map_err(|e| self.db(&e))?;
        let ids: Vec<&str> = actors.iter().map(|(id, _)| id.as_str()).collect();
        let mut descriptions: HashMap<String, String> = conn
            .client
            .query(&describe, &[&ids])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let top_actors = actors
            .into_iter()
            .map(|(accessor_id, count)| {
                let description = descriptions.remove(&accessor_id);
                ActorCount { accessor_id, description, count }
            })
            .collect();
        let per_day = tally
            .days
            .into_iter()
            .map(|(day, count)| DayCount { day: ts(day * 24 * HOUR_MS).strftime("%Y-%m-%d").to_string(), count })
            .collect();
        let per_hour = tally
            .hours
            .into_iter()
            .map(|(hour, count)| DayCount { day: ts(hour * HOUR_MS).strftime("%Y-%m-%dT%H:00Z").to_string(), count })
            .collect();
        Ok(Summary {
            since: filter.since,
            until: filter.until,
            total: tally.total,
            by_kind,
            top_actors,
            per_day,
            per_hour,
        })
    }

    /// Adds the counts of the whole hours `[first_hour, end_hour)` (open where `None`)
    /// from the rollups: totals per hour from `hourly_totals`, kinds and actors from
    /// the daily tables for whole days and from the hourly ones for the hours of the
    /// partial days at either end. Each table is one statement that returns one row
    /// per group, summed by the server, so a month is a few thousand rows read and a
    /// few hundred sent, however many events it holds.
    fn whole_hours(
        &self,
        conn: &mut crate::Lease<'_>,
        sources: Option<&[i64]>,
        first_hour: Option<i64>,
        end_hour: Option<i64>,
        tally: &mut Tally,
    ) -> Result<()> {
        // Whole days [first_day, end_day) inside the hours; None is open.
        let first_day = first_hour.map(|h| h.div_euclid(24) + i64::from(h.rem_euclid(24) != 0));
        let end_day = end_hour.map(|h| h.div_euclid(24));
        let (days, hours): (Vec<Span>, Vec<Span>) = match (first_day, end_day) {
            (Some(a), Some(b)) if a >= b => (Vec::new(), vec![(first_hour, end_hour)]),
            _ => {
                let mut hours = Vec::new();
                if let (Some(h), Some(d)) = (first_hour, first_day)
                    && h < d * 24
                {
                    hours.push((Some(h), Some(d * 24)));
                }
                if let (Some(h), Some(d)) = (end_hour, end_day)
                    && d * 24 < h
                {
                    hours.push((Some(d * 24), Some(h)));
                }
                (vec![(first_day, end_day)], hours)
            }
        };
        let parts: [(&str, &str, &str, &[Span]); 5] = [
            ("hourly_totals", "hour", "hour", &[(first_hour, end_hour)]),
            ("daily_kinds", "day", "resource_type, resource_action", &days),
            ("hourly_kinds", "hour", "resource_type, resource_action", &hours),
            ("daily_actors", "day", "accessor_id", &days),
            ("hourly_actors", "hour", "accessor_id", &hours),
        ];
        for (table, unit, columns, spans) in parts {
            if spans.is_empty() {
                continue;
            }
            let mut w = Where::new();
            if let Some(sources) = sources {
                let a = w.arg(sources.to_vec());
                w.and(&format!("source_id = ANY({a})"));
            }
            let mut any = Vec::with_capacity(spans.len());
            for &(lo, hi) in spans {
                let mut clause = String::from("true");
                if let Some(lo) = lo {
                    clause.push_str(&format!(" AND {unit} >= {}", w.arg(lo)));
                }
                if let Some(hi) = hi {
                    clause.push_str(&format!(" AND {unit} < {}", w.arg(hi)));
                }
                any.push(format!("({clause})"));
            }
            w.and(&format!("({})", any.join(" OR ")));
            let sql = format!("SELECT {columns}, sum(n)::bigint FROM {table} WHERE {} GROUP BY {columns}", w.sql);
            let stmt = conn.prepare(&sql).map_err(|e| self.db(&e))?;
            for r in conn.client.query(&stmt, &w.refs()).map_err(|e| self.db(&e))? {
                match table {
                    "hourly_totals" => {
                        let (hour, n): (i64, i64) = (r.get(0), r.get(1));
                        let n = count(n);
                        *tally.days.entry(hour.div_euclid(24)).or_default() += n;
                        *tally.hours.entry(hour).or_default() += n;
                        tally.total += n;
                    }
                    "daily_kinds" | "hourly_kinds" => {
                        *tally.kinds.entry((r.get(0), r.get(1))).or_default() += count(r.get(2));
                    }
                    _ => *tally.actors.entry(r.get(0)).or_default() += count(r.get(1)),
                }
            }
        }
        Ok(())
    }

    pub(crate) fn query_status(&self) -> Result<Vec<SourceStatus>> {
        let mut conn = self.conn()?;
        // One statement for every source, so that status stays one round trip with a
        // thousand organizations.
        let stmt = conn
            .prepare(&format!(
                "SELECT s.id, s.name, s.address, s.organization_id, s.event_count, s.oldest_ms, s.newest_ms, s.cursor_ms,
                        s.reject_count, {WALK_COLUMNS},
                        r.id, r.started_ms, r.finished_ms, r.result, r.error, r.pages, r.requests, r.retries,
                        r.new_events, r.duplicates, r.rejects, ok.finished_ms
                 FROM sources s
                 LEFT JOIN LATERAL (SELECT * FROM runs WHERE source_id = s.id ORDER BY id DESC LIMIT 1) r ON true
                 LEFT JOIN LATERAL (SELECT finished_ms FROM runs WHERE source_id = s.id AND result = 'ok'
                                    ORDER BY id DESC LIMIT 1) ok ON true
                 ORDER BY s.name"
            ))
            .map_err(|e| self.db(&e))?;
        let rows = conn.client.query(&stmt, &[]).map_err(|e| self.db(&e))?;
        let gaps_stmt = conn
            .prepare("SELECT source_id, from_ms, to_ms, detected_ms FROM gaps ORDER BY source_id, from_ms, id")
            .map_err(|e| self.db(&e))?;
        let mut gaps: HashMap<i64, Vec<(i64, i64, i64)>> = HashMap::new();
        for r in conn.client.query(&gaps_stmt, &[]).map_err(|e| self.db(&e))? {
            gaps.entry(r.get(0)).or_default().push((r.get(1), r.get(2), r.get(3)));
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let name: String = r.get(1);
            let run_id: Option<i64> = r.get(16);
            let last_run = run_id.map(|run_id| {
                let result: Option<String> = r.get(19);
                let error: Option<String> = r.get(20);
                Run {
                    id: run_id,
                    started_at: ts(r.get(17)),
                    finished_at: ts_opt(r.get(18)),
                    result: result.map(|label| match label.as_str() {
                        "ok" => RunResult::Ok,
                        "interrupted" => RunResult::Interrupted,
                        _ => RunResult::Failed(error.unwrap_or_default()),
                    }),
                    tally: RunTally {
                        pages: count(r.get(21)),
                        requests: count(r.get(22)),
                        retries: count(r.get(23)),
                        new_events: count(r.get(24)),
                        duplicates: count(r.get(25)),
                        rejects: count(r.get(26)),
                    },
                }
            });
            let gaps = gaps
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(|(from, to, detected)| Gap {
                    source: name.clone(),
                    from: ts(from),
                    to: ts(to),
                    detected_at: ts(detected),
                })
                .collect();
            out.push(SourceStatus {
                address: r.get(2),
                organization_id: r.get(3),
                events: count(r.get(4)),
                oldest: ts_opt(r.get(5)),
                newest: ts_opt(r.get(6)),
                cursor: ts_opt(r.get(7)),
                rejects: count(r.get(8)),
                walk_in_progress: read_walk(&r, 9),
                last_run,
                last_success: ts_opt(r.get(27)),
                gaps,
                name,
                lease: None,
            });
        }
        Ok(out)
    }

    pub(crate) fn query_run_totals(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        failures: u64,
    ) -> Result<Vec<RunTotals>> {
        let mut conn = self.conn()?;
        let (from, to) = (since.map_or(i64::MIN, ms), until.map_or(i64::MAX, ms));
        let totals = conn
            .prepare(
                "SELECT s.name,
                        (SELECT count(*) FROM runs r WHERE r.source_id = s.id AND r.started_ms >= $1 AND r.started_ms < $2),
                        (SELECT count(*) FROM runs r WHERE r.source_id = s.id AND r.started_ms >= $1 AND r.started_ms < $2 AND r.result = 'ok'),
                        (SELECT count(*) FROM runs r WHERE r.source_id = s.id AND r.started_ms >= $1 AND r.started_ms < $2 AND r.result = 'failed'),
                        (SELECT count(*) FROM runs r WHERE r.source_id = s.id AND r.started_ms >= $1 AND r.started_ms < $2 AND r.result = 'interrupted'),
                        (SELECT count(*) FROM runs r WHERE r.source_id = s.id AND r.started_ms >= $1 AND r.started_ms < $2 AND r.result IS NULL),
                        (SELECT max(r.finished_ms) FROM runs r WHERE r.source_id = s.id AND r.result = 'ok' AND r.finished_ms < $2),
                        s.id
                 FROM sources s ORDER BY s.name",
            )
            .map_err(|e| self.db(&e))?;
        let rows = conn.client.query(&totals, &[&from, &to]).map_err(|e| self.db(&e))?;
        let failed = conn
            .prepare(
                "SELECT id, started_ms, finished_ms, result, error, pages, requests, retries, new_events, duplicates, rejects
                 FROM runs WHERE source_id = $1 AND result = 'failed' AND started_ms >= $2 AND started_ms < $3
                 ORDER BY id DESC LIMIT $4",
            )
            .map_err(|e| self.db(&e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(7);
            let failures = conn
                .client
                .query(&failed, &[&id, &from, &to, &big(failures)])
                .map_err(|e| self.db(&e))?
                .iter()
                .map(|f| {
                    let error: Option<String> = f.get(4);
                    Run {
                        id: f.get(0),
                        started_at: ts(f.get(1)),
                        finished_at: ts_opt(f.get(2)),
                        result: Some(RunResult::Failed(error.unwrap_or_default())),
                        tally: RunTally {
                            pages: count(f.get(5)),
                            requests: count(f.get(6)),
                            retries: count(f.get(7)),
                            new_events: count(f.get(8)),
                            duplicates: count(f.get(9)),
                            rejects: count(f.get(10)),
                        },
                    }
                })
                .collect();
            out.push(RunTotals {
                source: r.get(0),
                runs: count(r.get(1)),
                ok: count(r.get(2)),
                failed: count(r.get(3)),
                interrupted: count(r.get(4)),
                unfinished: count(r.get(5)),
                last_ok: ts_opt(r.get(6)),
                failures,
            });
        }
        Ok(out)
    }

    pub(crate) fn query_rejects(&self, limit: u64) -> Result<Vec<Reject>> {
        let mut conn = self.conn()?;
        let stmt = conn
            .prepare(
                "SELECT s.name, r.reason, r.raw, r.first_seen_ms, r.times_seen FROM rejects r JOIN sources s ON s.id = r.source_id
                 ORDER BY r.id DESC LIMIT $1",
            )
            .map_err(|e| self.db(&e))?;
        Ok(conn
            .client
            .query(&stmt, &[&big(limit)])
            .map_err(|e| self.db(&e))?
            .iter()
            .map(|r| Reject {
                source: r.get(0),
                reason: r.get(1),
                raw: String::from_utf8_lossy(r.get::<_, &[u8]>(2)).into_owned(),
                first_seen: ts(r.get(3)),
                times_seen: count(r.get(4)),
            })
            .collect())
    }

    pub(crate) fn query_newest_seq(&self) -> Result<i64> {
        let mut conn = self.conn()?;
        newest_seq(self, &mut conn)
    }

    pub(crate) fn query_events_after(
        &self,
        after: i64,
        limit: u64,
        each: &mut dyn FnMut(StoredEvent) -> io::Result<()>,
    ) -> Result<u64> {
        let mut conn = self.conn()?;
        let names = self.source_names(&mut conn)?;
        let stmt = conn
            .prepare(&format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2"))
            .map_err(|e| self.db(&e))?;
        let rows = conn.client.query(&stmt, &[&after, &big(limit)]).map_err(|e| self.db(&e))?;
        let mut n = 0;
        for row in &rows {
            each(read_event(row, &names)?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Each event's seq, source name and bytes after `after`: three columns, for the
    /// integrity tree.
    pub(crate) fn query_event_bytes_after(
        &self,
        after: i64,
        limit: u64,
        each: &mut dyn FnMut(i64, &str, &str) -> io::Result<()>,
    ) -> Result<u64> {
        let mut conn = self.conn()?;
        let names = self.source_names(&mut conn)?;
        let stmt = conn
            .prepare("SELECT seq, source_id, raw FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .map_err(|e| self.db(&e))?;
        let rows = conn.client.query(&stmt, &[&after, &big(limit)]).map_err(|e| self.db(&e))?;
        let mut n = 0;
        for row in &rows {
            let raw = std::str::from_utf8(row.get::<_, &[u8]>(2)).map_err(|_| {
                StoreError::Database("an event's stored text is not UTF-8 (the archive was altered)".into())
            })?;
            let name = names.get(&row.get::<_, i64>(1)).map_or("", String::as_str);
            each(row.get(0), name, raw)?;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn query_alert_start_points(&self) -> Result<Vec<(String, Option<i64>)>> {
        let mut conn = self.conn()?;
        let stmt = conn.prepare("SELECT name, alert_start_seq FROM sources ORDER BY name").map_err(|e| self.db(&e))?;
        Ok(conn.client.query(&stmt, &[]).map_err(|e| self.db(&e))?.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub(crate) fn query_seen_values(&self, before: Option<Timestamp>) -> Result<SeenValues> {
        let mut conn = self.conn()?;
        self.seen_values_on(&mut conn, before)
    }

    fn seen_values_on(&self, conn: &mut crate::Lease<'_>, before: Option<Timestamp>) -> Result<SeenValues> {
        let before = before.map_or(i64::MAX, ms);
        let hour = before.div_euclid(HOUR_MS);
        let mut strings = |sql: &str, arg: i64| -> Result<Vec<String>> {
            let stmt = conn.prepare(sql).map_err(|e| self.db(&e))?;
            Ok(conn.client.query(&stmt, &[&arg]).map_err(|e| self.db(&e))?.iter().map(|r| r.get(0)).collect())
        };
        let accessors =
            strings("SELECT DISTINCT accessor_id FROM actors WHERE accessor_id <> '' AND first_seen_ms < $1", before)?;
        let impersonators = strings(
            "SELECT DISTINCT impersonator_id FROM events WHERE impersonator_id IS NOT NULL AND ts_ms < $1",
            before,
        )?;
        // Whole hours from the hourly counts; the hour `before` falls in, from the events.
        let stmt = conn
            .prepare("SELECT DISTINCT resource_type, resource_action FROM hourly_kinds WHERE hour < $1 AND resource_type <> ''")
            .map_err(|e| self.db(&e))?;
        let mut kinds: Vec<(String, String)> =
            conn.client.query(&stmt, &[&hour]).map_err(|e| self.db(&e))?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let stmt = conn
            .prepare(
                "SELECT DISTINCT resource_type, coalesce(resource_action, '') FROM events
                 WHERE ts_ms >= $1 AND ts_ms < $2 AND resource_type IS NOT NULL",
            )
            .map_err(|e| self.db(&e))?;
        kinds.extend(
            conn.client
                .query(&stmt, &[&hour.saturating_mul(HOUR_MS), &before])
                .map_err(|e| self.db(&e))?
                .iter()
                .map(|r| (r.get(0), r.get(1))),
        );
        kinds.sort();
        kinds.dedup();
        Ok(SeenValues { accessors, impersonators, kinds })
    }

    /// Every value seen in the archive, less those only seen after `seq`: the events
    /// after `seq` are few next to the archive, so they are the ones read.
    pub(crate) fn query_seen_values_up_to(&self, seq: i64) -> Result<SeenValues> {
        let mut conn = self.conn()?;
        let mut all = self.seen_values_on(&mut conn, None)?;
        for (column, list) in [("accessor_id", &mut all.accessors), ("impersonator_id", &mut all.impersonators)] {
            let later = conn
                .prepare(&format!("SELECT DISTINCT {column} FROM events WHERE seq > $1 AND {column} IS NOT NULL"))
                .map_err(|e| self.db(&e))?;
            let before = conn
                .prepare(&format!("SELECT 1 FROM events WHERE {column} = $1 AND seq <= $2 LIMIT 1"))
                .map_err(|e| self.db(&e))?;
            for r in conn.client.query(&later, &[&seq]).map_err(|e| self.db(&e))? {
                let value: String = r.get(0);
                if conn.client.query_opt(&before, &[&value, &seq]).map_err(|e| self.db(&e))?.is_none() {
                    list.retain(|x| *x != value);
                }
            }
        }
        let later = conn
            .prepare(
                "SELECT DISTINCT resource_type, coalesce(resource_action, '') FROM events
                 WHERE seq > $1 AND resource_type IS NOT NULL",
            )
            .map_err(|e| self.db(&e))?;
        let before = conn
            .prepare(
                "SELECT 1 FROM events WHERE resource_type = $1 AND coalesce(resource_action, '') = $2 AND seq <= $3 LIMIT 1",
            )
            .map_err(|e| self.db(&e))?;
        for r in conn.client.query(&later, &[&seq]).map_err(|e| self.db(&e))? {
            let (t, a): (String, String) = (r.get(0), r.get(1));
            if conn.client.query_opt(&before, &[&t, &a, &seq]).map_err(|e| self.db(&e))?.is_none() {
                all.kinds.retain(|k| !(k.0 == t && k.1 == a));
            }
        }
        Ok(all)
    }
}

pub(crate) fn newest_seq(store: &PostgresStore, conn: &mut crate::Lease<'_>) -> Result<i64> {
    let stmt = conn.prepare("SELECT coalesce(max(seq), 0)::bigint FROM events").map_err(|e| store.db(&e))?;
    Ok(conn.client.query_one(&stmt, &[]).map_err(|e| store.db(&e))?.get(0))
}

/// A write named a source id that `source()` never returned.
fn unknown_source(id: i64) -> StoreError {
    StoreError::Database(format!("no source with id {id} in the archive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_like_patterns_with_sql_wildcards_escaped() {
        assert_eq!(like(&Pattern::new("ws-*")), "ws-%");
        assert_eq!(like(&Pattern::new("a?c")), "a_c");
        assert_eq!(like(&Pattern::new("50%_off\\*")), "50\\%\\_off\\\\%");
        assert_eq!(like(&Pattern::new("[a]")), "[a]");
    }
}
