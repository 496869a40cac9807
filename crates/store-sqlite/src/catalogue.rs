//! The catalogue role (see `tfaudit_store::catalogue`): names for ids, with history.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use tfaudit_model::{AuditEvent, NameKind};
use tfaudit_store::catalogue::{Catalogue, Listing, ListingOutcome, NameBook, NameRecord, page_names};
use tfaudit_store::{Result, StoreError};

use crate::{SqliteStore, ms, ts};

const UPSERT: &str = "INSERT INTO catalogue (id, name, kind, email, source_id, first_seen_ms, last_seen_ms, listed)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (id, name) DO UPDATE SET
        first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
        last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
        email = coalesce(excluded.email, email),
        listed = max(listed, excluded.listed)";

const COLUMNS: &str = "id, kind, name, email, first_seen_ms, last_seen_ms, gone_ms, listed";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<NameRecord> {
    let kind: String = r.get(1)?;
    Ok(NameRecord {
        id: r.get(0)?,
        // A kind this version does not know (written by a newer one) reads as a user's
        // name would: the name is what matters.
        kind: kind.parse().unwrap_or(NameKind::User),
        name: r.get(2)?,
        email: r.get(3)?,
        first_seen: ts(r.get(4)?),
        last_seen: ts(r.get(5)?),
        gone: r.get::<_, Option<i64>>(6)?.map(ts),
        listed: r.get::<_, i64>(7)? != 0,
    })
}

/// Writes the names a page's events give, inside the page's transaction.
pub(crate) fn write_page_names(tx: &Transaction<'_>, source_id: i64, events: &[AuditEvent]) -> rusqlite::Result<()> {
    let names = page_names(events);
    if names.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(UPSERT)?;
    for n in names {
        let s = n.sighting;
        upsert.execute(params![s.id, s.name, s.kind.as_str(), s.email, source_id, ms(n.first), ms(n.last), 0])?;
    }
    Ok(())
}

fn current(tx: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<String>> {
    tx.query_row("SELECT name FROM catalogue WHERE id = ?1 ORDER BY last_seen_ms DESC LIMIT 1", [id], |r| r.get(0))
        .optional()
}

impl Catalogue for SqliteStore {
    fn record_listing(&self, listing: &Listing<'_>) -> Result<ListingOutcome> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        let source: i64 = tx
            .query_row("SELECT id FROM sources WHERE name = ?1", [listing.source], |r| r.get(0))
            .optional()
            .map_err(db)?
            .ok_or_else(|| {
                StoreError::Database(format!("no organization named {:?} in the archive", listing.source))
            })?;
        let at = ms(listing.at);
        let mut outcome = ListingOutcome::default();
        let mut listed: HashSet<&str> = HashSet::new();
        {
            let mut upsert = tx.prepare_cached(UPSERT).map_err(db)?;
            for s in listing.names {
                if !listed.insert(s.id.as_str()) {
                    continue;
                }
                match current(&tx, &s.id).map_err(db)? {
                    None => outcome.new += 1,
                    Some(name) if name != s.name => outcome.renamed += 1,
                    Some(_) => {}
                }
                upsert.execute(params![s.id, s.name, s.kind.as_str(), s.email, source, at, at, 1]).map_err(db)?;
                tx.execute("UPDATE catalogue SET gone_ms = NULL WHERE id = ?1 AND gone_ms IS NOT NULL", [&s.id])
                    .map_err(db)?;
            }
        }
        for kind in listing.complete {
            let ids: Vec<String> = tx
                .prepare("SELECT DISTINCT id FROM catalogue WHERE source_id = ?1 AND kind = ?2 AND gone_ms IS NULL")
                .and_then(|mut stmt| stmt.query_map(params![source, kind.as_str()], |r| r.get(0))?.collect())
                .map_err(db)?;
            for id in ids.iter().filter(|id| !listed.contains(id.as_str())) {
                tx.execute("UPDATE catalogue SET gone_ms = ?2 WHERE id = ?1", params![id, at]).map_err(db)?;
                outcome.gone += 1;
            }
        }
        tx.execute(
            "INSERT INTO catalogue_listings (source_id, listed_ms) VALUES (?1, ?2)
             ON CONFLICT (source_id) DO UPDATE SET listed_ms = excluded.listed_ms",
            params![source, at],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(outcome)
    }

    fn listed_at(&self, source: &str) -> Result<Option<Timestamp>> {
        let conn = self.lock();
        let at: Option<i64> = conn
            .query_row(
                "SELECT l.listed_ms FROM catalogue_listings l JOIN sources s ON s.id = l.source_id WHERE s.name = ?1",
                [source],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db(e))?;
        Ok(at.map(ts))
    }

    fn current_names(&self, ids: &[&str]) -> Result<HashMap<String, NameRecord>> {
        let conn = self.lock();
        let mut out = HashMap::new();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM catalogue WHERE id = ?1 ORDER BY last_seen_ms DESC, listed DESC LIMIT 1"
            ))
            .map_err(|e| self.db(e))?;
        for id in ids {
            if out.contains_key(*id) {
                continue;
            }
            if let Some(r) = stmt.query_row([id], record).optional().map_err(|e| self.db(e))? {
                out.insert((*id).to_owned(), r);
            }
        }
        Ok(out)
    }

    fn name_history(&self, id: &str) -> Result<Vec<NameRecord>> {
        let conn = self.lock();
        conn.prepare(&format!("SELECT {COLUMNS} FROM catalogue WHERE id = ?1 ORDER BY first_seen_ms, last_seen_ms"))
            .and_then(|mut stmt| stmt.query_map([id], record)?.collect())
            .map_err(|e| self.db(e))
    }

    fn ids_named(&self, name: &str) -> Result<Vec<NameRecord>> {
        let conn = self.lock();
        conn.prepare(&format!(
            "SELECT {COLUMNS} FROM catalogue WHERE name = ?1 COLLATE NOCASE ORDER BY last_seen_ms DESC"
        ))
        .and_then(|mut stmt| stmt.query_map([name], record)?.collect())
        .map_err(|e| self.db(e))
    }

    fn all_names(&self) -> Result<NameBook> {
        let conn = self.lock();
        // The newest sighting of each id wins: rows sorted oldest first overwrite.
        let mut names = HashMap::new();
        let mut stmt =
            conn.prepare("SELECT id, name FROM catalogue ORDER BY last_seen_ms, listed").map_err(|e| self.db(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(|e| self.db(e))?;
        for row in rows {
            let (id, name) = row.map_err(|e| self.db(e))?;
            names.insert(id, name);
        }
        Ok(NameBook::new(names))
    }
}
