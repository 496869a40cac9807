//! Posting lists: for each actor, kind and resource, and each bucket of time, the seqs
//! of its events, in one row (migration 21). They stand where B-tree indexes on
//! `(accessor_id, ts_ms)`, `(resource_type, resource_action, ts_ms)` and
//! `(hour, resource_id)` stood: an index keeps an entry of about 17 bytes for each
//! event and takes an insert for each, where a list keeps a byte or two for each
//! event (varints of the differences between seqs, `encode_seqs`) and a page of
//! events rewrites a row for each key it names.
//!
//! A query that filters on one of them reads its rows newest bucket first, the seqs
//! of each through `tfaudit_seqs(p.seqs)` (a table-valued function), and each event by
//! its seq; ordered by bucket, then time, SQLite sorts one bucket at a time and stops
//! at the query's limit. Buckets are an hour of the events' time for actors and kinds,
//! and a week for resources, whose events are few in any hour (a row of one seq would
//! cost more than the index entry).
//!
//! Beside them, for each hour, a 2-byte print of each of its events' ids (`id_prints`,
//! migration 24, [`print`]): what a lookup by id reads to find the hours to search in
//! the index by time. Kept in the same batch as the lists, removed and built with them.
//!
//! A seq is in a list while its event is in the archive: retention takes a removed
//! day's seqs out of them, and putting the day back puts them in again. A first
//! backfill leaves the lists out, as it does some indexes (upkeep.rs), and builds them
//! at its end in one read of the events ([`build`]); until then its queries read the
//! table.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;

use rusqlite::vtab::{Context, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConnection, VTabCursor};
use rusqlite::{Connection, OptionalExtension, ffi, params};
use tfaudit_store::retention::{append_seqs, decode_seqs, encode_seqs};

use crate::HOUR_MS;

/// Events read before their seqs are written out when the lists are built: three
/// seqs an event held meanwhile, a few MB.
const BUILD_CHUNK: u64 = 1 << 16;

/// Fills `postings`, `kinds` and `id_prints` from the events, replacing what they held
/// (migration 24, and the end of a first backfill, which leaves the lists out until
/// then). One read of the events in seq order; each chunk's seqs are appended to their
/// rows, so that memory stays bounded however large the archive. Against a `GROUP BY` a list
/// (every event sorted three times), a 200,000-event first backfill's CPU was ×0.95
/// (median of 8 pairs).
pub(crate) fn build(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch("DELETE FROM postings; DELETE FROM kinds; DELETE FROM id_prints;")?;
    let mut read = tx.prepare(&format!("SELECT seq, {KEY_COLUMNS} FROM events ORDER BY seq"))?;
    let mut rows = read.query([])?;
    let mut batch = Batch::default();
    let mut held = 0u64;
    while let Some(r) = rows.next()? {
        let keys = Keys::read(r, 1)?;
        batch.add(r.get(0)?, &keys);
        held += 1;
        if held == BUILD_CHUNK {
            std::mem::take(&mut batch).write(tx)?;
            held = 0;
        }
    }
    batch.write(tx)
}

/// [`build`] (migrations 21 and 24), unless a first backfill has left the lists out:
/// its end builds them.
pub(crate) fn build_unless_deferred(tx: &Connection) -> rusqlite::Result<()> {
    if crate::upkeep::deferred(tx)? {
        return Ok(());
    }
    build(tx)
}

/// Which list a row of `postings` belongs to (its `list` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum List {
    Actor = 1,
    Kind = 2,
    Resource = 3,
}

const WEEK_HOURS: i64 = 24 * 7;

impl List {
    fn bucket_of_hour(self, hour: i64) -> i64 {
        match self {
            Self::Resource => hour.div_euclid(WEEK_HOURS),
            Self::Actor | Self::Kind => hour,
        }
    }

    /// The bucket an event of time `ts_ms` is listed in.
    pub(crate) fn bucket(self, ts_ms: i64) -> i64 {
        self.bucket_of_hour(ts_ms.div_euclid(HOUR_MS))
    }

    /// The buckets that hold the hours `from..=to`.
    pub(crate) fn buckets(self, (from, to): (i64, i64)) -> (i64, i64) {
        (self.bucket_of_hour(from), self.bucket_of_hour(to))
    }
}

/// A kind's key: its type's and its action's keys in `names` (0 for none), the type
/// in the high half, so that one number names the pair.
pub(crate) fn kind_key(resource_type: Option<i64>, action: Option<i64>) -> Option<i64> {
    if resource_type.is_none() && action.is_none() {
        return None;
    }
    Some((resource_type.unwrap_or(0) << 32) | action.unwrap_or(0))
}

/// The keys of `names` an event is listed under, and its id's print.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Keys {
    pub ts_ms: i64,
    pub accessor: Option<i64>,
    pub kind: Option<i64>,
    pub resource: Option<i64>,
    pub print: u16,
}

/// An id's print: 16 bits of the FNV-1a hash of its bytes as stored (`names::pack_id`).
/// `id_prints` keeps, for each hour, the prints of its events' ids, so that a lookup by
/// id reads only the hours that may hold it (nearly always the one that does) in the
/// index by time, which holds no hour to probe (migration 24). A hash, not the id's own
/// bytes, so that ids of any form spread over all prints. Part of the archive's format:
/// never to change.
pub(crate) fn print(id: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in id {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

/// [`print`] of an id column as read.
pub(crate) fn print_of(id: rusqlite::types::ValueRef<'_>) -> u16 {
    match id {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => print(b),
        _ => print(&[]),
    }
}

/// The hours whose events may hold an id whose print is `print`, newest first.
pub(crate) fn hours_of(conn: &Connection, print: u16) -> rusqlite::Result<Vec<i64>> {
    let want = print.to_le_bytes();
    let mut stmt = conn.prepare_cached("SELECT hour, prints FROM id_prints ORDER BY hour DESC")?;
    let mut rows = stmt.query([])?;
    let mut hours: Vec<i64> = Vec::new();
    while let Some(r) = rows.next()? {
        let hour = r.get(0)?;
        if hours.last() != Some(&hour) && r.get_ref(1)?.as_blob()?.chunks_exact(2).any(|p| p == want) {
            hours.push(hour);
        }
    }
    Ok(hours)
}

/// The columns of `events` an event's [`Keys`] are read from, in [`Keys::read`]'s order.
const KEY_COLUMNS: &str = "ts_ms, accessor_id, resource_type, resource_action, resource_id, id";

impl Keys {
    /// An event's keys from a row holding [`KEY_COLUMNS`] from column `at` on.
    fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            ts_ms: r.get(at)?,
            accessor: r.get(at + 1)?,
            kind: kind_key(r.get(at + 2)?, r.get(at + 3)?),
            resource: r.get(at + 4)?,
            print: print_of(r.get_ref(at + 5)?),
        })
    }

    fn each(&self) -> impl Iterator<Item = (List, i64, i64)> + '_ {
        [(List::Actor, self.accessor), (List::Kind, self.kind), (List::Resource, self.resource)]
            .into_iter()
            .filter_map(|(list, key)| key.map(|k| (list, k, list.bucket(self.ts_ms))))
    }
}

/// The seqs a transaction adds to the lists, and the prints to their hours, written
/// once at its end, in the order of their rows. Gathered in hash maps and sorted once
/// when written: ordered maps, searched for each event's four rows, were a fifth of
/// the lists' build.
#[derive(Default)]
pub(crate) struct Batch {
    rows: foldhash::HashMap<(List, i64, i64), Vec<i64>>,
    prints: foldhash::HashMap<i64, Vec<u8>>,
}

impl Batch {
    pub(crate) fn add(&mut self, seq: i64, keys: &Keys) {
        for row in keys.each() {
            self.rows.entry(row).or_default().push(seq);
        }
        self.prints.entry(keys.ts_ms.div_euclid(HOUR_MS)).or_default().extend(keys.print.to_le_bytes());
    }

    /// Adds the seqs to their rows, in `tx`.
    pub(crate) fn write(self, tx: &Connection) -> rusqlite::Result<()> {
        let mut read =
            tx.prepare_cached("SELECT last, seqs FROM postings WHERE list = ?1 AND key = ?2 AND bucket = ?3")?;
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO postings (list, key, bucket, last, seqs) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut kind = tx.prepare_cached("INSERT OR IGNORE INTO kinds (key) VALUES (?1)")?;
        let mut rows: Vec<_> = self.rows.into_iter().collect();
        rows.sort_unstable_by_key(|(row, _)| *row);
        for ((list, key, bucket), mut seqs) in rows {
            seqs.sort_unstable();
            seqs.dedup();
            let Some(&newest) = seqs.last() else { continue };
            let row: Option<(i64, Vec<u8>)> =
                read.query_row(params![list as i64, key, bucket], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            let (last, blob) = match row {
                None => {
                    if list == List::Kind {
                        kind.execute([key])?;
                    }
                    (newest, encode_seqs(&seqs))
                }
                // A sync's events: after every seq in the list.
                Some((last, mut blob)) if seqs[0] > last => {
                    append_seqs(&mut blob, last, &seqs);
                    (newest, blob)
                }
                // A day put back, with the seqs it had.
                Some((_, blob)) => {
                    let mut all = decode(&blob)?;
                    all.extend(seqs);
                    all.sort_unstable();
                    all.dedup();
                    (*all.last().expect("not empty"), encode_seqs(&all))
                }
            };
            put.execute(params![list as i64, key, bucket, last, blob])?;
        }
        let mut prints: Vec<_> = self.prints.into_iter().collect();
        prints.sort_unstable_by_key(|(hour, _)| *hour);
        for (hour, prints) in prints {
            append_prints(tx, hour, &prints)?;
        }
        Ok(())
    }
}

/// Takes the events `seqs` (ascending) out of the lists and their prints out of their
/// hours, in `tx`, before they are deleted: their keys are read from their rows.
pub(crate) fn remove(tx: &Connection, seqs: &[i64]) -> rusqlite::Result<()> {
    let mut rows: BTreeMap<(List, i64, i64), Vec<i64>> = BTreeMap::new();
    let mut prints: BTreeMap<i64, Vec<u16>> = BTreeMap::new();
    {
        let mut read = tx.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM events WHERE seq = ?1"))?;
        for &seq in seqs {
            let keys = read.query_row([seq], |r| Keys::read(r, 0)).optional()?;
            if let Some(keys) = keys {
                for row in keys.each() {
                    rows.entry(row).or_default().push(seq);
                }
                prints.entry(keys.ts_ms.div_euclid(HOUR_MS)).or_default().push(keys.print);
            }
        }
    }
    remove_prints(tx, prints)?;
    let mut read = tx.prepare_cached("SELECT seqs FROM postings WHERE list = ?1 AND key = ?2 AND bucket = ?3")?;
    let mut put =
        tx.prepare_cached("UPDATE postings SET last = ?4, seqs = ?5 WHERE list = ?1 AND key = ?2 AND bucket = ?3")?;
    let mut delete = tx.prepare_cached("DELETE FROM postings WHERE list = ?1 AND key = ?2 AND bucket = ?3")?;
    for ((list, key, bucket), gone) in rows {
        let Some(blob) = read.query_row(params![list as i64, key, bucket], |r| r.get::<_, Vec<u8>>(0)).optional()?
        else {
            continue;
        };
        let mut kept = decode(&blob)?;
        kept.retain(|s| gone.binary_search(s).is_err());
        match kept.last() {
            Some(&last) => put.execute(params![list as i64, key, bucket, last, encode_seqs(&kept)])?,
            None => delete.execute(params![list as i64, key, bucket])?,
        };
    }
    Ok(())
}

/// Prints a row of `id_prints` holds at most: 2 KB, within what a 16 KB page keeps of
/// a row of a WITHOUT ROWID table (about 4 KB) before the rest spills to an overflow
/// page of its own. An hour of 3,000 events in one row (6 KB) left 65% of the table
/// empty.
const PRINTS_PER_ROW: usize = 1024;

/// Appends `prints` to the hour's rows: to its last row while it has room, then in new
/// rows.
fn append_prints(tx: &Connection, hour: i64, mut prints: &[u8]) -> rusqlite::Result<()> {
    let mut put = tx.prepare_cached("INSERT OR REPLACE INTO id_prints (hour, part, prints) VALUES (?1, ?2, ?3)")?;
    let last: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT part, prints FROM id_prints WHERE hour = ?1 ORDER BY part DESC LIMIT 1")?
        .query_row([hour], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (mut part, mut row) = last.unwrap_or_default();
    while !prints.is_empty() {
        let room = (PRINTS_PER_ROW * 2).saturating_sub(row.len());
        if room == 0 {
            part += 1;
            row.clear();
            continue;
        }
        let (now, rest) = prints.split_at(room.min(prints.len()));
        row.extend_from_slice(now);
        put.execute(params![hour, part, row])?;
        prints = rest;
    }
    Ok(())
}

/// Takes one of each of `prints` out of its hour: another event of the hour may have the
/// same print, and keeps its own.
fn remove_prints(tx: &Connection, prints: BTreeMap<i64, Vec<u16>>) -> rusqlite::Result<()> {
    let mut read = tx.prepare_cached("SELECT prints FROM id_prints WHERE hour = ?1 ORDER BY part")?;
    let mut delete = tx.prepare_cached("DELETE FROM id_prints WHERE hour = ?1")?;
    for (hour, gone) in prints {
        let rows: Vec<Vec<u8>> = read.query_map([hour], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        let mut kept: Vec<[u8; 2]> = rows.concat().chunks_exact(2).map(|p| [p[0], p[1]]).collect();
        for print in gone {
            if let Some(at) = kept.iter().position(|p| *p == print.to_le_bytes()) {
                kept.swap_remove(at);
            }
        }
        delete.execute([hour])?;
        append_prints(tx, hour, &kept.concat())?;
    }
    Ok(())
}

/// The buckets `first..=last` in ranges to read in turn, newest first (or oldest
/// first): a day's (a week's for resources), then each twice the one before, so that
/// a query that stops early reads few buckets past its last match, and one that does
/// not makes a few dozen queries at most.
pub(crate) fn ranges(first: i64, last: i64, list: List, newest_first: bool) -> Vec<(i64, i64)> {
    let mut width = match list {
        List::Resource => 1,
        List::Actor | List::Kind => 24,
    };
    let mut ranges = Vec::new();
    let (mut low, mut high) = (first, last);
    while low <= high {
        let range = if newest_first {
            let r = (high.saturating_sub(width - 1).max(low), high);
            high = r.0 - 1;
            r
        } else {
            let r = (low, low.saturating_add(width - 1).min(high));
            low = r.1 + 1;
            r
        };
        ranges.push(range);
        width = width.saturating_mul(2);
    }
    ranges
}

/// The keys of `list` that match `filter`'s pattern for it.
pub(crate) fn keys(conn: &Connection, list: List, filter: &tfaudit_store::EventFilter) -> rusqlite::Result<Vec<i64>> {
    let (sql, values) = match list {
        List::Actor => {
            let Some(actor) = &filter.actor else { return Ok(Vec::new()) };
            crate::actor_keys(actor)
        }
        List::Kind => {
            let mut sql = String::from(
                "SELECT k.key FROM kinds k LEFT JOIN names t ON t.id = k.key >> 32
                 LEFT JOIN names a ON a.id = k.key & 4294967295 WHERE 1 = 1",
            );
            let mut values = Vec::new();
            for (column, pattern) in [("t.value", &filter.resource_type), ("a.value", &filter.action)] {
                if let Some(p) = pattern {
                    let (clause, more) = crate::glob::clause(column, p, false);
                    sql.push_str(&format!(" AND {clause}"));
                    values.extend(more);
                }
            }
            (sql, values)
        }
        List::Resource => {
            let Some(p) = &filter.resource_id else { return Ok(Vec::new()) };
            crate::name_keys(p)
        }
    };
    let refs: Vec<&dyn rusqlite::ToSql> = values.iter().map(|v| v.as_ref() as &dyn rusqlite::ToSql).collect();
    conn.prepare_cached(&sql)?.query_map(&*refs, |r| r.get(0))?.collect()
}

fn decode(blob: &[u8]) -> rusqlite::Result<Vec<i64>> {
    decode_seqs(blob).ok_or_else(|| rusqlite::Error::UserFunctionError("a posting list's seqs are damaged".into()))
}

/// Adds, on every connection: `tfaudit_seqs(seqs)`, a table of the seqs of a list as
/// `postings` keeps them; and `tfaudit_first_seq(seqs)`, its oldest.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    const MODULE: Module<SeqsTab> = Module::eponymous_only_module();
    conn.create_module(c"tfaudit_seqs", &MODULE, None)?;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("tfaudit_first_seq", 1, flags, |ctx| {
        let blob = ctx.get_raw(0).as_blob()?;
        Ok(decode_seqs(first_varint(blob)).and_then(|s| s.first().copied()))
    })
}

/// The bytes of a list's first varint (its first seq, whole).
fn first_varint(blob: &[u8]) -> &[u8] {
    let end = blob.iter().position(|b| b & 0x80 == 0).map_or(blob.len(), |i| i + 1);
    &blob[..end]
}

/// `tfaudit_seqs(seqs)`: one row (`value`) for each seq of a list, ascending.
#[repr(C)]
struct SeqsTab {
    base: ffi::sqlite3_vtab,
}

const SEQS_COLUMN: c_int = 1;

unsafe impl<'vtab> VTab<'vtab> for SeqsTab {
    type Aux = ();
    type Cursor = SeqsCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        _aux: Option<&()>,
        _module_name: &[u8],
        _database_name: &[u8],
        _table_name: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        db.config(rusqlite::vtab::VTabConfig::Innocuous)?;
        Ok((Cow::Borrowed(c"CREATE TABLE x(value INTEGER, seqs HIDDEN)"), Self { base: ffi::sqlite3_vtab::default() }))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let mut given = None;
        for (i, c) in info.constraints().enumerate() {
            if c.column() == SEQS_COLUMN {
                if !c.is_usable() || c.operator() != IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ {
                    return Ok(false);
                }
                given = Some(i);
            }
        }
        let Some(i) = given else { return Ok(false) };
        let mut usage = info.constraint_usage(i);
        usage.set_argv_index(1);
        usage.set_omit(true);
        info.set_estimated_cost(10.0);
        info.set_estimated_rows(50);
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<SeqsCursor<'vtab>> {
        Ok(SeqsCursor::default())
    }
}

#[derive(Default)]
#[repr(C)]
struct SeqsCursor<'vtab> {
    base: ffi::sqlite3_vtab_cursor,
    seqs: Vec<i64>,
    at: usize,
    phantom: PhantomData<&'vtab SeqsTab>,
}

unsafe impl VTabCursor for SeqsCursor<'_> {
    fn filter(&mut self, _idx_num: c_int, _idx_str: Option<&str>, args: &Filters<'_>) -> rusqlite::Result<()> {
        self.seqs = match args.get::<Option<Vec<u8>>>(0)? {
            Some(blob) => decode(&blob)?,
            None => Vec::new(),
        };
        self.at = 0;
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.at += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.at >= self.seqs.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        if i == SEQS_COLUMN { ctx.set_result(rusqlite::types::Null) } else { ctx.set_result(self.seqs[self.at]) }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.at as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hour's prints fill rows of at most `PRINTS_PER_ROW`, however they come, and
    /// taking some out keeps the rest (and one of two equal prints).
    #[test]
    fn an_hours_prints_fill_rows_of_a_bounded_size() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE id_prints (hour INTEGER NOT NULL, part INTEGER NOT NULL, prints BLOB NOT NULL,
                                     PRIMARY KEY (hour, part)) WITHOUT ROWID;
             CREATE TABLE upkeep (id INTEGER PRIMARY KEY, reindexed_seq INTEGER, deferred INTEGER);",
        )
        .unwrap();
        // Distinct: 7919 is odd, so multiplying by it permutes the u16s.
        let all: Vec<u16> = (0..2500u16).map(|i| i.wrapping_mul(7919)).collect();
        for batch in [&all[..1000], &all[1000..1030], &all[1030..]] {
            let bytes: Vec<u8> = batch.iter().flat_map(|p| p.to_le_bytes()).collect();
            append_prints(&c, 7, &bytes).unwrap();
        }
        append_prints(&c, 9, &all[5].to_le_bytes()).unwrap();
        let rows = |c: &Connection| -> Vec<(i64, i64, i64)> {
            c.prepare("SELECT hour, part, length(prints) FROM id_prints ORDER BY hour, part")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(rows(&c), [(7, 0, 2048), (7, 1, 2048), (7, 2, 904), (9, 0, 2)]);
        assert_eq!(hours_of(&c, all[5]).unwrap(), [9, 7], "newest first, each hour once");
        assert_eq!(hours_of(&c, all[2400]).unwrap(), [7]);

        let mut gone = BTreeMap::new();
        gone.insert(7, all[..1500].to_vec());
        gone.insert(9, vec![all[5]]);
        remove_prints(&c, gone).unwrap();
        assert_eq!(rows(&c), [(7, 0, 2000)]);
        assert_eq!(hours_of(&c, all[5]).unwrap(), Vec::<i64>::new());
        assert_eq!(hours_of(&c, all[2499]).unwrap(), [7]);
    }

    #[test]
    fn ranges_cover_the_buckets_once_each_in_order() {
        for (first, last) in [(0, 0), (5, 4), (0, 23), (0, 24), (100, 1000), (-50, 50)] {
            for newest_first in [true, false] {
                for list in [List::Actor, List::Resource] {
                    let ranges = ranges(first, last, list, newest_first);
                    let mut covered: Vec<i64> = ranges.iter().flat_map(|&(a, b)| a..=b).collect();
                    if newest_first {
                        assert!(ranges.windows(2).all(|w| w[1].1 == w[0].0 - 1), "{ranges:?}");
                    } else {
                        assert!(ranges.windows(2).all(|w| w[1].0 == w[0].1 + 1), "{ranges:?}");
                    }
                    covered.sort_unstable();
                    assert_eq!(covered, (first..=last).collect::<Vec<_>>(), "{ranges:?}");
                    assert!(ranges.len() <= 12, "{ranges:?}");
                }
            }
        }
        assert_eq!(ranges(0, 99, List::Actor, true), [(76, 99), (28, 75), (0, 27)]);
    }
}
