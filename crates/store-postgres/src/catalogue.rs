//! The catalogue role (see `tfaudit_store::catalogue`): names for ids, with history.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use postgres::Transaction;
use tfaudit_model::{AuditEvent, NameKind};
use tfaudit_store::catalogue::{Catalogue, Listing, ListingOutcome, NameBook, NameRecord, page_names};
use tfaudit_store::{Result, StoreError};

use crate::{PostgresStore, ms, nul_free, ts};

/// One statement for a whole page's names: arrays, unnested.
const UPSERT_MANY: &str =
    "INSERT INTO catalogue AS c (id, name, kind, email, source_id, first_seen_ms, last_seen_ms, listed)
     SELECT u.id, u.name, u.kind, u.email, $1, u.first, u.last, $2
       FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[])
            AS u(id, name, kind, email, first, last)
     ON CONFLICT (id, name) DO UPDATE SET
        first_seen_ms = least(c.first_seen_ms, excluded.first_seen_ms),
        last_seen_ms = greatest(c.last_seen_ms, excluded.last_seen_ms),
        email = coalesce(excluded.email, c.email),
        listed = c.listed OR excluded.listed";

const COLUMNS: &str = "id, kind, name, email, first_seen_ms, last_seen_ms, gone_ms, listed";

fn record(r: &postgres::Row) -> NameRecord {
    let kind: String = r.get(1);
    NameRecord {
        id: r.get(0),
        kind: kind.parse().unwrap_or(NameKind::User),
        name: r.get(2),
        email: r.get(3),
        first_seen: ts(r.get(4)),
        last_seen: ts(r.get(5)),
        gone: r.get::<_, Option<i64>>(6).map(ts),
        listed: r.get(7),
    }
}

struct Rows {
    ids: Vec<String>,
    names: Vec<String>,
    kinds: Vec<&'static str>,
    emails: Vec<Option<String>>,
    first: Vec<i64>,
    last: Vec<i64>,
}

impl Rows {
    fn new() -> Self {
        Self { ids: vec![], names: vec![], kinds: vec![], emails: vec![], first: vec![], last: vec![] }
    }
    fn push(&mut self, s: &tfaudit_model::Sighting, first: Timestamp, last: Timestamp) {
        // PostgreSQL text cannot hold NUL.
        self.ids.push(nul_free(&s.id).into_owned());
        self.names.push(nul_free(&s.name).into_owned());
        self.kinds.push(s.kind.as_str());
        self.emails.push(s.email.as_deref().map(|e| nul_free(e).into_owned()));
        self.first.push(ms(first));
        self.last.push(ms(last));
    }
    fn write(&self, tx: &mut Transaction<'_>, source: i64, listed: bool) -> std::result::Result<u64, postgres::Error> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        tx.execute(
            UPSERT_MANY,
            &[&source, &listed, &self.ids, &self.names, &self.kinds, &self.emails, &self.first, &self.last],
        )
    }
}

/// Writes the names a page's events give, inside the page's transaction.
pub(crate) fn write_page_names(
    tx: &mut Transaction<'_>,
    source_id: i64,
    events: &[AuditEvent],
) -> std::result::Result<(), postgres::Error> {
    let mut rows = Rows::new();
    for n in page_names(events) {
        rows.push(n.sighting, n.first, n.last);
    }
    rows.write(tx, source_id, false)?;
    Ok(())
}

impl Catalogue for PostgresStore {
    fn record_listing(&self, listing: &Listing<'_>) -> Result<ListingOutcome> {
        let mut conn = self.conn()?;
        let mut tx = conn.client.transaction().map_err(|e| self.db(&e))?;
        let db = |e: postgres::Error| self.db(&e);
        let source: i64 = tx
            .query_opt("SELECT id FROM sources WHERE name = $1", &[&listing.source])
            .map_err(db)?
            .map(|r| r.get(0))
            .ok_or_else(|| {
                StoreError::Database(format!("no organization named {:?} in the archive", listing.source))
            })?;
        let mut outcome = ListingOutcome::default();
        let mut listed: HashSet<String> = HashSet::new();
        let mut rows = Rows::new();
        for s in listing.names {
            if listed.insert(nul_free(&s.id).into_owned()) {
                rows.push(s, listing.at, listing.at);
            }
        }
        let ids: Vec<&str> = rows.ids.iter().map(String::as_str).collect();
        let before: HashMap<String, String> = tx
            .query(
                "SELECT DISTINCT ON (id) id, name FROM catalogue WHERE id = ANY($1) ORDER BY id, last_seen_ms DESC",
                &[&ids],
            )
            .map_err(db)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (id, name) in rows.ids.iter().zip(&rows.names) {
            match before.get(id) {
                None => outcome.new += 1,
                Some(was) if was != name => outcome.renamed += 1,
                Some(_) => {}
            }
        }
        rows.write(&mut tx, source, true).map_err(db)?;
        tx.execute("UPDATE catalogue SET gone_ms = NULL WHERE id = ANY($1) AND gone_ms IS NOT NULL", &[&ids])
            .map_err(db)?;
        let at = ms(listing.at);
        for kind in listing.complete {
            let gone = tx
                .query(
                    "UPDATE catalogue SET gone_ms = $4
                      WHERE source_id = $1 AND kind = $2 AND gone_ms IS NULL AND NOT (id = ANY($3))
                     RETURNING id",
                    &[&source, &kind.as_str(), &ids, &at],
                )
                .map_err(db)?;
            let distinct: HashSet<String> = gone.iter().map(|r| r.get(0)).collect();
            outcome.gone += distinct.len() as u64;
        }
        tx.execute(
            "INSERT INTO catalogue_listings (source_id, listed_ms) VALUES ($1, $2)
             ON CONFLICT (source_id) DO UPDATE SET listed_ms = excluded.listed_ms",
            &[&source, &at],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(outcome)
    }

    fn listed_at(&self, source: &str) -> Result<Option<Timestamp>> {
        let mut conn = self.conn()?;
        let row = conn
            .client
            .query_opt(
                "SELECT l.listed_ms FROM catalogue_listings l JOIN sources s ON s.id = l.source_id WHERE s.name = $1",
                &[&source],
            )
            .map_err(|e| self.db(&e))?;
        Ok(row.map(|r| ts(r.get(0))))
    }

    fn current_names(&self, ids: &[&str]) -> Result<HashMap<String, NameRecord>> {
        let mut conn = self.conn()?;
        let ids: Vec<String> = ids.iter().map(|id| nul_free(id).into_owned()).collect();
        let rows = conn
            .client
            .query(
                &format!(
                    "SELECT DISTINCT ON (id) {COLUMNS} FROM catalogue WHERE id = ANY($1)
                      ORDER BY id, last_seen_ms DESC, listed DESC"
                ),
                &[&ids],
            )
            .map_err(|e| self.db(&e))?;
        Ok(rows.iter().map(|r| (r.get(0), record(r))).collect())
    }

    fn name_history(&self, id: &str) -> Result<Vec<NameRecord>> {
        let mut conn = self.conn()?;
        let rows = conn
            .client
            .query(
                &format!("SELECT {COLUMNS} FROM catalogue WHERE id = $1 ORDER BY first_seen_ms, last_seen_ms"),
                &[&nul_free(id).as_ref()],
            )
            .map_err(|e| self.db(&e))?;
        Ok(rows.iter().map(record).collect())
    }

    fn ids_named(&self, name: &str) -> Result<Vec<NameRecord>> {
        let mut conn = self.conn()?;
        let rows = conn
            .client
            .query(
                &format!("SELECT {COLUMNS} FROM catalogue WHERE lower(name) = lower($1) ORDER BY last_seen_ms DESC"),
                &[&nul_free(name).as_ref()],
            )
            .map_err(|e| self.db(&e))?;
        Ok(rows.iter().map(record).collect())
    }

    fn all_names(&self) -> Result<NameBook> {
        let mut conn = self.conn()?;
        let rows = conn
            .client
            .query("SELECT DISTINCT ON (id) id, name FROM catalogue ORDER BY id, last_seen_ms DESC, listed DESC", &[])
            .map_err(|e| self.db(&e))?;
        Ok(NameBook::new(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }
}
