//! What every stored event adds beside its own row (`tfaudit_store::rollup`): the
//! summary's hourly and daily rollups, the hourly totals, the actors (with first and
//! last seen) and the organizations, written the same way for a sync's pages and for
//! events copied by `tfaudit migrate`.

use std::collections::BTreeMap;

use postgres::{Statement, Transaction};
use tfaudit_store::Result;
use tfaudit_store::rollup::{Rollups, sorted};

use crate::PostgresStore;
use crate::connect::Conn;

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

/// Adds what `rollups` counted to the archive's rollups, in `tx`.
pub(crate) fn write(
    mut rollups: Rollups<'_>,
    store: &PostgresStore,
    tx: &mut Transaction<'_>,
    prepared: &Prepared,
) -> Result<()> {
    let db = |e: postgres::Error| store.db(&e);
    let [hourly_kinds, hourly_actors, daily_kinds, daily_actors, hourly_totals, actors, organizations] = &prepared.0;
    if !rollups.kinds.is_empty() {
        write_kinds(tx, hourly_kinds, &sorted(&rollups.kinds)).map_err(db)?;
        write_kinds(tx, daily_kinds, &rollups.daily_kinds()).map_err(db)?;
        write_actors(tx, hourly_actors, &sorted(&rollups.hourly_actors)).map_err(db)?;
        write_actors(tx, daily_actors, &rollups.daily_actors()).map_err(db)?;
        let totals = rollups.hourly_totals();
        tx.execute(
            hourly_totals,
            &[
                &totals.keys().map(|k| k.0).collect::<Vec<i64>>(),
                &totals.keys().map(|k| k.1).collect::<Vec<i64>>(),
                &totals.values().copied().collect::<Vec<i64>>(),
            ],
        )
        .map_err(db)?;
        let seen = sorted(&rollups.actors);
        tx.execute(
            actors,
            &[
                &seen.keys().map(|k| k.0).collect::<Vec<&str>>(),
                &seen.keys().map(|k| k.1).collect::<Vec<&str>>(),
                &seen.values().map(|v| v.0).collect::<Vec<i64>>(),
                &seen.values().map(|v| v.1).collect::<Vec<i64>>(),
            ],
        )
        .map_err(db)?;
    }
    let orgs = rollups.organizations();
    if !orgs.is_empty() {
        tx.execute(organizations, &[&orgs]).map_err(db)?;
    }
    Ok(())
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
