//! The compact forms of an event's columns (migration 11): shared strings kept once in
//! `names` and referred to by key, and ids that are UUIDs kept as their 16 bytes.
//!
//! Keys are never reused nor removed, so a key once read means the same string for as
//! long as the archive exists: both the writer's and the readers' caches below can
//! keep what they learnt without ever checking again.

use std::sync::{Mutex, MutexGuard};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row};

/// Adds `tfaudit_pack_id(text)`: what an id is stored as (migration 11 uses it).
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("tfaudit_pack_id", 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => match std::str::from_utf8(t).ok().and_then(uuid_bytes) {
                Some(b) => Value::Blob(b.to_vec()),
                None => Value::Text(String::from_utf8_lossy(t).into_owned()),
            },
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    })
}

/// The 16 bytes of `id` when it is a UUID written the one way this module writes it
/// back (8-4-4-4-12 lowercase hex digits), so that unpacking gives the same text.
fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = lower_hex(b[i])?;
        let lo = lower_hex(b[i + 1])?;
        out[n] = (hi << 4) | lo;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn lower_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// What an id (an event's, a request's) is stored as: 16 bytes for a UUID in canonical
/// form, else the text itself. A text and a blob never compare equal, and one string
/// always packs the same way, so uniqueness and lookups by id are as they were.
/// The packing is kept on the stack and bound borrowed: an event's two ids then cost
/// the ingest no allocation.
pub fn pack_id(id: &str) -> PackedId<'_> {
    match uuid_bytes(id) {
        Some(b) => PackedId::Uuid(b),
        None => PackedId::Text(id),
    }
}

/// An id as [`pack_id`] stores it.
pub enum PackedId<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl PackedId<'_> {
    /// The bytes stored.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Uuid(b) => b,
            Self::Text(t) => t.as_bytes(),
        }
    }

    fn value(&self) -> ValueRef<'_> {
        match self {
            Self::Uuid(b) => ValueRef::Blob(b),
            Self::Text(t) => ValueRef::Text(t.as_bytes()),
        }
    }
}

impl rusqlite::ToSql for PackedId<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.value()))
    }
}

/// An id column read back as the text it was stored from.
pub fn unpack_id(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Option<String>> {
    if let ValueRef::Integer(i) = v {
        return Ok(Some(i.to_string()));
    }
    Ok(id_text(v, &mut [0; 36])?.map(str::to_owned))
}

/// [`unpack_id`] without allocating: a packed UUID is written into `buf`, text is
/// borrowed. (An integer, which no tfaudit stores, is an error here.)
pub fn id_text<'a>(v: ValueRef<'a>, buf: &'a mut [u8; 36]) -> rusqlite::types::FromSqlResult<Option<&'a str>> {
    use rusqlite::types::FromSqlError;
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => Ok(Some(std::str::from_utf8(t).map_err(|e| FromSqlError::Other(Box::new(e)))?)),
        ValueRef::Blob(b) if b.len() == 16 => {
            let mut at = 0;
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    buf[at] = b'-';
                    at += 1;
                }
                buf[at] = HEX[usize::from(byte >> 4)];
                buf[at + 1] = HEX[usize::from(byte & 0xf)];
                at += 2;
            }
            Ok(Some(std::str::from_utf8(buf).map_err(|e| FromSqlError::Other(Box::new(e)))?))
        }
        _ => Err(FromSqlError::InvalidType),
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Reads the id column `at` of `row`.
pub fn id_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<String>> {
    let v = row.get_ref(at)?;
    unpack_id(v).map_err(|e| rusqlite::Error::FromSqlConversionFailure(at, v.data_type(), Box::new(e)))
}

/// Past this many, the writer's cache starts again empty: hostile input naming a new
/// accessor per event must not grow the process without bound.
const CACHE_MAX: usize = 100_000;

/// The writer's cache of keys committed to the archive, by string.
#[derive(Default)]
pub struct Cache {
    keys: Mutex<foldhash::HashMap<String, i64>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("names::Cache")
    }
}

/// Keys for one transaction's strings: from the cache, else from `names`, else new.
/// What it learns joins the cache only through [`Interner::committed`], so that a key
/// allocated by a transaction rolled back is never used again.
///
/// It holds the cache's lock for the transaction: only the writer, whose transactions
/// run one at a time, interns, and an event's seven strings then cost no lock each.
pub struct Interner<'a> {
    cache: MutexGuard<'a, foldhash::HashMap<String, i64>>,
    learnt: foldhash::HashMap<String, i64>,
}

impl<'a> Interner<'a> {
    pub fn new(cache: &'a Cache) -> Self {
        Self {
            cache: cache.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            learnt: foldhash::HashMap::default(),
        }
    }

    /// The key of `value` (`None` for `None`), adding it to `names` when new.
    pub fn key(&mut self, conn: &Connection, value: Option<&str>) -> rusqlite::Result<Option<i64>> {
        let Some(value) = value else { return Ok(None) };
        if let Some(&k) = self.cache.get(value) {
            return Ok(Some(k));
        }
        if let Some(&k) = self.learnt.get(value) {
            return Ok(Some(k));
        }
        let found: Option<i64> = conn
            .prepare_cached("SELECT id FROM names WHERE value = ?1")?
            .query_row([value], |r| r.get(0))
            .optional()?;
        let k = match found {
            Some(k) => k,
            None => {
                conn.prepare_cached("INSERT INTO names (value) VALUES (?1)")?.execute([value])?;
                conn.last_insert_rowid()
            }
        };
        self.learnt.insert(value.to_owned(), k);
        Ok(Some(k))
    }

    /// After the transaction committed: what it learnt is now true for good.
    pub fn committed(self) {
        let mut keys = self.cache;
        if keys.len() + self.learnt.len() > CACHE_MAX {
            keys.clear();
        }
        keys.extend(self.learnt);
    }
}

/// The strings of keys, for one read (or, in `compress`, one reader connection): each
/// key is looked up once.
#[derive(Default)]
pub struct Resolver {
    values: foldhash::HashMap<i64, String>,
}

impl Resolver {
    /// The string of key column `at` of `row` (`None` for NULL).
    pub fn at(&mut self, conn: &Connection, row: &Row<'_>, at: usize) -> rusqlite::Result<Option<String>> {
        let Some(k) = row.get::<_, Option<i64>>(at)? else { return Ok(None) };
        self.value(conn, k).map(Some)
    }

    /// The string of key `k`.
    pub fn value(&mut self, conn: &Connection, k: i64) -> rusqlite::Result<String> {
        self.look_up(conn, k, 1)?.map(str::to_owned).ok_or(rusqlite::Error::QueryReturnedNoRows)
    }

    /// The string of key `k` (`None`: no such key), unless known looked up together
    /// with the other keys of its block of `block` keys (a power of two; 1: only it).
    pub fn look_up(&mut self, conn: &Connection, k: i64, block: i64) -> rusqlite::Result<Option<&str>> {
        if !self.values.contains_key(&k) {
            let from = k & !(block - 1);
            let mut stmt = conn.prepare_cached("SELECT id, value FROM names WHERE id >= ?1 AND id < ?2")?;
            let mut rows = stmt.query([from, from + block])?;
            while let Some(r) = rows.next()? {
                self.values.insert(r.get(0)?, r.get(1)?);
            }
        }
        Ok(self.get(k))
    }

    /// The string of key `k` if it was looked up.
    pub fn get(&self, k: i64) -> Option<&str> {
        self.values.get(&k).map(String::as_str)
    }

    /// How many keys' strings are known.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Forgets every string looked up.
    pub fn clear(&mut self) {
        self.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuids_are_packed_and_every_id_comes_back() {
        for id in [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "0F8FAD5B-D9CB-469F-A165-70867728950E",
            "0f8fad5bd9cb469fa16570867728950e",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "0f8fad5b-d9cb-469f-a165_70867728950e",
            "e1",
            "",
            "ü-ünïcödé-id-0000000000000000000000",
            "'; DROP TABLE events; --",
        ] {
            let packed = pack_id(id);
            let is_blob = matches!(packed.value(), ValueRef::Blob(b) if b.len() == 16);
            assert_eq!(is_blob, id == "0f8fad5b-d9cb-469f-a165-70867728950e", "{id}");
            let back = unpack_id(packed.value());
            assert_eq!(back.unwrap().as_deref(), Some(id));
        }
    }
}
