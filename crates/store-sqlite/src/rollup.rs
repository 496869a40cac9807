//! What every stored event adds beside its own row, written in the transaction that
//! stores it: the summary's hourly rollups and the actors (with first and last seen).
//! One writer for a sync's pages and for events copied by `tfaudit migrate`, so that
//! an archive filled either way summarises the same.

use std::collections::HashMap;

use rusqlite::{CachedStatement, Transaction, params};
use tfaudit_model::AuditEvent;

use crate::{HOUR_MS, ms};

/// Inserts one event's row with `insert` (the `events` insert, with or without its
/// conflict clause); the number of rows inserted.
pub(crate) fn insert_event(
    insert: &mut CachedStatement<'_>,
    e: &AuditEvent,
    source: i64,
    ingested_ms: i64,
) -> rusqlite::Result<usize> {
    insert.execute(params![
        e.id,
        source,
        e.organization_id,
        ms(e.timestamp),
        e.auth_type,
        e.accessor_id,
        e.auth_description,
        e.impersonator_id,
        e.request_id,
        e.resource_id,
        e.resource_type,
        e.resource_action,
        e.raw,
        ingested_ms
    ])
}

/// The columns of the `events` insert, in [`insert_event`]'s order.
pub(crate) const EVENT_INSERT: &str =
    "INSERT INTO events (id, source_id, organization_id, ts_ms, auth_type, accessor_id, auth_description,
    impersonator_id, request_id, resource_id, resource_type, resource_action, raw, ingested_ms)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// What a batch of stored events adds, by (hour, source) and by actor.
#[derive(Default)]
pub(crate) struct Rollups<'a> {
    kinds: HashMap<(i64, i64, &'a str, &'a str), i64>,
    hourly_actors: HashMap<(i64, i64, &'a str), i64>,
    actors: HashMap<(&'a str, &'a str), (i64, i64)>,
}

impl<'a> Rollups<'a> {
    /// Counts `e`, stored for `source`.
    pub fn add(&mut self, source: i64, e: &'a AuditEvent) {
        let t = ms(e.timestamp);
        let hour = t.div_euclid(HOUR_MS);
        let kind = (hour, source, e.resource_type.as_deref().unwrap_or(""), e.resource_action.as_deref().unwrap_or(""));
        *self.kinds.entry(kind).or_default() += 1;
        let accessor = e.accessor_id.as_deref().unwrap_or("");
        *self.hourly_actors.entry((hour, source, accessor)).or_default() += 1;
        let seen = self.actors.entry((accessor, e.auth_description.as_deref().unwrap_or(""))).or_insert((t, t));
        seen.0 = seen.0.min(t);
        seen.1 = seen.1.max(t);
    }

    /// Adds what was counted to the archive's rollups, in `tx`.
    pub fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO hourly_kinds (hour, source_id, resource_type, resource_action, n) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO UPDATE SET n = n + excluded.n",
        )?;
        for ((hour, source, rtype, action), n) in &self.kinds {
            stmt.execute(params![hour, source, rtype, action, n])?;
        }
        let mut stmt = tx.prepare_cached(
            "INSERT INTO hourly_actors (hour, source_id, accessor_id, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET n = n + excluded.n",
        )?;
        for ((hour, source, accessor), n) in &self.hourly_actors {
            stmt.execute(params![hour, source, accessor, n])?;
        }
        let mut stmt = tx.prepare_cached(
            "INSERT INTO actors (accessor_id, description, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                                       last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
        )?;
        for ((accessor, description), (first, last)) in &self.actors {
            stmt.execute(params![accessor, description, first, last])?;
        }
        Ok(())
    }
}
