//! What every stored event adds beside its own row, written in the transaction that
//! stores it: the summary's hourly and daily rollups, the hourly totals, the actors
//! (with first and last seen) and the organizations. One writer for a sync's pages
//! and for events copied by `tfaudit migrate`, so that an archive filled either way
//! summarises the same.

use std::collections::BTreeMap;

use postgres::{Statement, Transaction};
use tfaudit_model::AuditEvent;
use tfaudit_store::Result;

use crate::PostgresStore;
use crate::connect::Conn;

const HOUR_MS: i64 = 3_600_000;

const STATEMENTS: [&str; 7] = [
    "INSERT INTO hourly_kinds (hour, source_id, resource_type, resource_action, n)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[])
     ON CONFLICT (hour, source_id, resource_type, resource_action) DO UPDATE SET n = hourly_kinds.n + excluded.n",
    "INSERT INTO hourly_actors (hour, source_id, accessor_id, n)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[])
     ON CONFLICT (hour, source_id, accessor_id) DO UPDATE SET n = hourly_actors.n + excluded.n",
    "INSERT INTO daily_kinds (day, source_id, resource_type, resource_action, n)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[])
     ON CONFLICT (day, source_id, resource_type, resource_action) DO UPDATE SET n = daily_kinds.n + excluded.n",
    "INSERT INTO daily_actors (day, source_id, accessor_id, n)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[])
     ON CONFLICT (day, source_id, accessor_id) DO UPDATE SET n = daily_actors.n + excluded.n",
    "INSERT INTO hourly_totals (hour, source_id, n)
     SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[])
     ON CONFLICT (hour, source_id) DO UPDATE SET n = hourly_totals.n + excluded.n",
    "INSERT INTO actors (accessor_id, description, first_seen_ms, last_seen_ms)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
     ON CONFLICT (accessor_id, description) DO UPDATE SET
         first_seen_ms = least(actors.first_seen_ms, excluded.first_seen_ms),
         last_seen_ms = greatest(actors.last_seen_ms, excluded.last_seen_ms)",
    "INSERT INTO organizations (organization_id) SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING",
];

/// The writer's statements, prepared on one connection (before its transaction
/// begins, which borrows the connection).
pub(crate) struct Prepared([Statement; STATEMENTS.len()]);

impl Prepared {
    pub fn on(store: &PostgresStore, conn: &mut Conn) -> Result<Self> {
        let mut prepared = Vec::with_capacity(STATEMENTS.len());
        for sql in STATEMENTS {
            prepared.push(conn.prepare(sql).map_err(|e| store.db(&e))?);
        }
        Ok(Self(prepared.try_into().unwrap_or_else(|_| unreachable!("one statement each"))))
    }
}

/// What a batch of stored events adds, by (hour, source) and by actor; the strings
/// are the events' column values (already free of NUL characters).
#[derive(Default)]
pub(crate) struct Rollups<'a> {
    kinds: BTreeMap<(i64, i64, &'a str, &'a str), i64>,
    hourly_actors: BTreeMap<(i64, i64, &'a str), i64>,
    actors: BTreeMap<(&'a str, &'a str), (i64, i64)>,
    organizations: Vec<&'a str>,
}

impl<'a> Rollups<'a> {
    /// Counts `e`, stored for `source` (its fields already free of NUL characters).
    pub fn add(&mut self, source: i64, e: &'a AuditEvent) {
        let t = e.timestamp.as_millisecond();
        let hour = t.div_euclid(HOUR_MS);
        let kind = (hour, source, e.resource_type.as_deref().unwrap_or(""), e.resource_action.as_deref().unwrap_or(""));
        *self.kinds.entry(kind).or_default() += 1;
        let accessor = e.accessor_id.as_deref().unwrap_or("");
        *self.hourly_actors.entry((hour, source, accessor)).or_default() += 1;
        let seen = self.actors.entry((accessor, e.auth_description.as_deref().unwrap_or(""))).or_insert((t, t));
        seen.0 = seen.0.min(t);
        seen.1 = seen.1.max(t);
        if let Some(org) = e.organization_id.as_deref() {
            self.organizations.push(org);
        }
    }

    /// Adds what was counted to the archive's rollups, in `tx`.
    pub fn write(mut self, store: &PostgresStore, tx: &mut Transaction<'_>, prepared: &Prepared) -> Result<()> {
        let db = |e: postgres::Error| store.db(&e);
        let [hourly_kinds, hourly_actors, daily_kinds, daily_actors, hourly_totals, actors, organizations] =
            &prepared.0;
        if !self.kinds.is_empty() {
            let mut days: BTreeMap<(i64, i64, &str, &str), i64> = BTreeMap::new();
            let mut totals: BTreeMap<(i64, i64), i64> = BTreeMap::new();
            for (&(hour, source, t, a), &n) in &self.kinds {
                *days.entry((hour.div_euclid(24), source, t, a)).or_default() += n;
                *totals.entry((hour, source)).or_default() += n;
            }
            write_kinds(tx, hourly_kinds, &self.kinds).map_err(db)?;
            write_kinds(tx, daily_kinds, &days).map_err(db)?;
            let mut days: BTreeMap<(i64, i64, &str), i64> = BTreeMap::new();
            for (&(hour, source, acc), &n) in &self.hourly_actors {
                *days.entry((hour.div_euclid(24), source, acc)).or_default() += n;
            }
            write_actors(tx, hourly_actors, &self.hourly_actors).map_err(db)?;
            write_actors(tx, daily_actors, &days).map_err(db)?;
            tx.execute(
                hourly_totals,
                &[
                    &totals.keys().map(|k| k.0).collect::<Vec<i64>>(),
                    &totals.keys().map(|k| k.1).collect::<Vec<i64>>(),
                    &totals.values().copied().collect::<Vec<i64>>(),
                ],
            )
            .map_err(db)?;
            tx.execute(
                actors,
                &[
                    &self.actors.keys().map(|k| k.0).collect::<Vec<&str>>(),
                    &self.actors.keys().map(|k| k.1).collect::<Vec<&str>>(),
                    &self.actors.values().map(|v| v.0).collect::<Vec<i64>>(),
                    &self.actors.values().map(|v| v.1).collect::<Vec<i64>>(),
                ],
            )
            .map_err(db)?;
        }
        if !self.organizations.is_empty() {
            // Sorted, so that two transactions lock the same rows in the same order.
            self.organizations.sort_unstable();
            self.organizations.dedup();
            tx.execute(organizations, &[&self.organizations]).map_err(db)?;
        }
        Ok(())
    }
}

/// Counts by (hour or day, source, resource type, action).
fn write_kinds(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    counts: &BTreeMap<(i64, i64, &str, &str), i64>,
) -> std::result::Result<u64, postgres::Error> {
    tx.execute(
        statement,
        &[
            &counts.keys().map(|k| k.0).collect::<Vec<i64>>(),
            &counts.keys().map(|k| k.1).collect::<Vec<i64>>(),
            &counts.keys().map(|k| k.2).collect::<Vec<&str>>(),
            &counts.keys().map(|k| k.3).collect::<Vec<&str>>(),
            &counts.values().copied().collect::<Vec<i64>>(),
        ],
    )
}

/// Counts by (hour or day, source, accessor).
fn write_actors(
    tx: &mut Transaction<'_>,
    statement: &Statement,
    counts: &BTreeMap<(i64, i64, &str), i64>,
) -> std::result::Result<u64, postgres::Error> {
    tx.execute(
        statement,
        &[
            &counts.keys().map(|k| k.0).collect::<Vec<i64>>(),
            &counts.keys().map(|k| k.1).collect::<Vec<i64>>(),
            &counts.keys().map(|k| k.2).collect::<Vec<&str>>(),
            &counts.values().copied().collect::<Vec<i64>>(),
        ],
    )
}
