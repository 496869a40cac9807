//! An event's row and what it adds beside it (`tfaudit_store::rollup`: the summary's
//! hourly rollups, the actors with first and last seen), written the same way for a
//! sync's pages and for events copied by `tfaudit migrate`.

use rusqlite::{CachedStatement, OptionalExtension, Transaction, params};
use tfaudit_model::AuditEvent;
use tfaudit_store::rollup::Rollups;

use crate::ms;

/// What [`EventWriter::insert`] does with an event the archive holds already.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duplicate {
    /// A sync's page: the event was archived before, and is skipped.
    Skip,
    /// A copy: an event there already is an error.
    Refuse,
}

/// Inserts events' rows in a transaction, its statements prepared once.
pub(crate) struct EventWriter<'tx> {
    insert: CachedStatement<'tx>,
    probe: CachedStatement<'tx>,
    duplicate: Duplicate,
    /// The string each of an event's key columns last held, with its key. Most events
    /// share their organization, actor and kind with the one before, and comparing
    /// with it costs less than hashing for the names' cache. A key is good for the
    /// transaction it was found in, which outlives the writer.
    recent: [(String, Option<i64>); KEYED_COLUMNS],
    /// The times of the oldest and newest events the archive held when the writer
    /// began (`None`: no event). An event whose second lies outside them can only be a
    /// copy of one this writer stored, which [`EventWriter::written`] holds: it is
    /// looked for there, and the probe is left for the seconds the archive held. A
    /// newest-first backfill stores nearly every event below the span and a sync of
    /// new events above it; the probe was 4.5% of a backfill's CPU.
    span: Option<(i64, i64)>,
    /// The ids (as stored: packed, and whether a UUID's bytes) this writer stored
    /// outside `span`, by second. Bounded by the transaction's events.
    written: foldhash::HashMap<i64, Vec<StoredId>>,
}

/// An id as an event's row stores it: whether it is a UUID's 16 bytes, and its bytes.
type StoredId = (bool, Box<[u8]>);

/// The columns [`EventWriter::insert`] keeps as keys of `names`.
const KEYED_COLUMNS: usize = 8;

impl<'tx> EventWriter<'tx> {
    pub(crate) fn new(tx: &'tx Transaction<'_>, duplicate: Duplicate) -> rusqlite::Result<Self> {
        Ok(Self {
            insert: tx.prepare_cached(EVENT_INSERT)?,
            probe: tx.prepare_cached(EVENT_PROBE)?,
            duplicate,
            recent: Default::default(),
            written: foldhash::HashMap::default(),
            // Each in a subquery of its own, so that both read one end of the index.
            span: tx.query_row("SELECT (SELECT min(ts_ms) FROM events), (SELECT max(ts_ms) FROM events)", [], |r| {
                Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
            })?,
        })
    }

    /// Inserts one event's row, its shared strings as keys from `names`; the keys its
    /// posting lists need when a row was inserted (`None`: a duplicate, skipped).
    pub(crate) fn insert(
        &mut self,
        tx: &Transaction<'_>,
        codec: &crate::compress::Codec,
        names: &mut crate::names::Interner<'_>,
        e: &AuditEvent,
        source: i64,
    ) -> rusqlite::Result<Option<crate::postings::Keys>> {
        let id = crate::names::pack_id(&e.id);
        let ts_ms = ms(e.timestamp);
        // In the same transaction as the insert, by the one writer: no other insert of the
        // same event can come between.
        let second = ts_ms.div_euclid(1000) * 1000;
        let outside = self.span.is_none_or(|(oldest, newest)| second > newest || second + 999 < oldest);
        let uuid = matches!(id, crate::names::PackedId::Uuid(_));
        let stored = if outside {
            self.written.get(&second).is_some_and(|ids| ids.iter().any(|(u, b)| *u == uuid && **b == *id.bytes()))
        } else {
            self.probe.query_row(params![second, id], |r| r.get::<_, bool>(0))?
        };
        if stored {
            return match self.duplicate {
                Duplicate::Skip => Ok(None),
                Duplicate::Refuse => Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
                    Some(format!("event {:?} is in the archive already", e.id)),
                )),
            };
        }
        let values = [
            &e.organization_id,
            &e.auth_type,
            &e.accessor_id,
            &e.auth_description,
            &e.impersonator_id,
            &e.resource_type,
            &e.resource_action,
            &e.resource_id,
        ];
        let mut keys = [None; KEYED_COLUMNS];
        for ((value, key), (last, last_key)) in values.iter().zip(&mut keys).zip(&mut self.recent) {
            let Some(value) = value.as_deref() else { continue };
            if last_key.is_none() || last.as_str() != value {
                *last_key = names.key(tx, Some(value))?;
                last.clear();
                last.push_str(value);
            }
            *key = *last_key;
        }
        let known = crate::compress::Known {
            id: &e.id,
            request_id: e.request_id.as_deref(),
            ts_ms,
            resource_id: e.resource_id.as_deref(),
            description: e.auth_description.as_deref(),
            accessor: e.accessor_id.as_deref(),
        };
        codec.with_stored(&e.raw, known, |raw, dict| {
            self.insert.execute(params![
                id,
                source,
                ts_ms,
                keys[0],
                keys[1],
                keys[2],
                keys[3],
                keys[4],
                keys[5],
                keys[6],
                e.request_id.as_deref().map(crate::names::pack_id),
                keys[7],
                dict,
                raw,
                e.is_destroy_run(),
            ])
        })?;
        if outside {
            self.written.entry(second).or_default().push((uuid, id.bytes().into()));
        }
        Ok(Some(crate::postings::Keys {
            ts_ms,
            accessor: keys[2],
            kind: crate::postings::kind_key(keys[5], keys[6]),
            resource: keys[7],
            print: crate::postings::print(id.bytes()),
        }))
    }
}

/// Records that the event at `seq`, and those after it up to the next recorded seq,
/// were archived at `ms`. `ingest_times` keeps a row for each run of seqs archived in
/// the same millisecond, its first seq: a page's events (consecutive seqs, one
/// transaction) need one call, for the first. An event put back in the middle (`archive
/// pull`) or copied with a time of its own gets a row of its own when its time differs,
/// and the events after it keep theirs.
pub(crate) fn record_ingested(tx: &rusqlite::Connection, seq: i64, ms: i64) -> rusqlite::Result<()> {
    let current: Option<i64> = tx
        .prepare_cached("SELECT ms FROM ingest_times WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1")?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    if current == Some(ms) {
        return Ok(());
    }
    if let Some(before) = current {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO ingest_times (first_seq, ms) SELECT ?1 + 1, ?2 WHERE EXISTS (SELECT 1 FROM events WHERE seq > ?1)",
        )?
        .execute([seq, before])?;
    }
    tx.prepare_cached("INSERT OR REPLACE INTO ingest_times (first_seq, ms) VALUES (?1, ?2)")?.execute([seq, ms])?;
    Ok(())
}

/// Adds `tfaudit_destroy_run(text)`: whether an event's JSON is about a run that
/// destroys, as told when it is stored (migration 14 uses it).
pub fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("tfaudit_destroy_run", 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Text(t) => {
                std::str::from_utf8(t).is_ok_and(tfaudit_model::event::is_destroy_run)
            }
            _ => false,
        })
    })
}

/// The `events` insert, its columns in [`EventWriter::insert`]'s order.
const EVENT_INSERT: &str = "INSERT INTO events (id, source_id, ts_ms, organization_id, auth_type,
        accessor_id, auth_description, impersonator_id, resource_type, resource_action, request_id, resource_id,
        dict, raw, destroy_run)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// Whether the event with this packed id (`?2`), of the second that starts at `?1`, is
/// archived. An event's time never changes (the API's are whole seconds; the second,
/// not the millisecond, in case a copy of it were given with another fraction), so an
/// id is unique within its second. `events_by_time` holds the time and the id's last 4
/// bytes (of a text id, 4 characters): the probe reads the second's entries, a few,
/// and the row of those whose last bytes are the id's (one at most, nearly always) to
/// compare the whole id. The last bytes, not the first: a UUID's are random either
/// way, and ids of another form that count up (`evt-000001`) or share a prefix differ
/// at their end. (An index of the hour and the id, for this alone, cost 17 bytes an
/// event and an insert; the time's index was needed anyway.)
const EVENT_PROBE: &str = "SELECT EXISTS (SELECT 1 FROM events
     WHERE ts_ms >= ?1 AND ts_ms < ?1 + 1000 AND substr(id, -4) = substr(?2, -4) AND id = ?2)";

/// Adds what `rollups` counted to the archive's rollups, in `tx`.
pub(crate) fn write(rollups: &Rollups<'_>, tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let Rollups { kinds, hourly_actors, actors, .. } = rollups;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO hourly_kinds (hour, source_id, resource_type, resource_action, n) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )?;
    for ((hour, source, rtype, action), n) in kinds {
        stmt.execute(params![hour, source, rtype, action, n])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO hourly_actors (hour, source_id, accessor_id, n) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET n = n + excluded.n",
    )?;
    for ((hour, source, accessor), n) in hourly_actors {
        stmt.execute(params![hour, source, accessor, n])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO actors (accessor_id, description, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO UPDATE SET first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                                   last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    )?;
    for ((accessor, description), (first, last)) in actors {
        stmt.execute(params![accessor, description, first, last])?;
    }
    Ok(())
}
