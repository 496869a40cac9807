//! Events' original bytes kept compressed: zstd with a dictionary trained on the
//! archive's own events (audit events share most of their text: keys, types, ids'
//! prefixes), kept in the archive and versioned.
//!
//! A row's `raw` is the event's JSON as text while its `dict` is NULL (events written
//! before the first dictionary, or by an older tfaudit), or a zstd frame made with
//! dictionary `dict` (a BLOB). Every read goes through the SQL function `tfaudit_raw(raw,
//! dict)`, which gives the original text back byte for byte, so queries, filters and
//! exports never see the difference. `tfaudit compact` compresses the rows still in
//! text, in batches, resumably. The integrity tree hashes the original bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A first dictionary is trained once the archive holds this many events.
pub const TRAIN_AT: u64 = 2_000;
/// A new dictionary is trained when the archive has grown this many times over since
/// the last one was (2,000, 32,000, 512,000, 8,192,000 events): new kinds of events
/// are learnt, and dictionaries stay few.
const RETRAIN_FACTOR: u64 = 16;
/// Events a dictionary is trained on: the newest. Measured on the simulator's events,
/// a dictionary from 2,000 compresses them as well as one from 8,000 (113.6 bytes an
/// event either way) and costs a quarter of the CPU to train (0.08 s against 0.33 s);
/// one from 1,000 as well again (a 200,000-event archive 0.1% smaller), for half the
/// CPU of 2,000: training was 5% of that backfill's CPU.
const SAMPLES: u32 = 1_000;
const DICT_BYTES: usize = 32 * 1024;
const LEVEL: i32 = 1;

/// The archive's dictionaries, shared by its connections.
#[derive(Default)]
pub struct Codec {
    /// Dictionary bytes by id, read from the archive as first needed.
    dicts: RwLock<HashMap<i64, Arc<Vec<u8>>>>,
    /// The writer's compressor with the newest dictionary, and the archive size it
    /// was trained at.
    writer: Mutex<Option<Writer>>,
    /// Decompressors per dictionary, reused across rows and connections.
    readers: Mutex<HashMap<i64, Vec<zstd::bulk::Decompressor<'static>>>>,
}

struct Writer {
    dict: i64,
    trained_at: u64,
    compressor: zstd::bulk::Compressor<'static>,
    /// The last frame made, its buffer reused.
    frame: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Codec")
    }
}

fn dictionary(conn: &Connection, id: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT bytes FROM dictionaries WHERE id = ?1", [id], |r| r.get(0)).optional()
}

impl Codec {
    fn dict(&self, conn: &Connection, id: i64) -> Result<Arc<Vec<u8>>, BoxError> {
        if let Some(d) = self.dicts.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id) {
            return Ok(d.clone());
        }
        let bytes = dictionary(conn, id)?.ok_or_else(|| format!("dictionary {id} is missing from the archive"))?;
        let d = Arc::new(bytes);
        self.dicts.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, d.clone());
        Ok(d)
    }

    /// The original text of a row's `raw` compressed with dictionary `dict`.
    fn decompress(&self, conn: &Connection, dict: i64, frame: &[u8]) -> Result<String, BoxError> {
        let taken =
            self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(&dict).and_then(Vec::pop);
        let mut d = match taken {
            Some(d) => d,
            None => zstd::bulk::Decompressor::with_dictionary(&self.dict(conn, dict)?)?,
        };
        let size = zstd::zstd_safe::get_frame_content_size(frame)
            .map_err(|_| "a compressed event is damaged")?
            .ok_or("a compressed event does not say its size")?;
        let bytes = d.decompress(frame, usize::try_from(size)?)?;
        self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(dict).or_default().push(d);
        Ok(String::from_utf8(bytes)?)
    }

    /// Loads the newest dictionary for writing, if there is one and it is not loaded.
    fn load_writer(&self, conn: &Connection, slot: &mut Option<Writer>) -> rusqlite::Result<()> {
        let newest: Option<(i64, u64)> = conn
            .query_row("SELECT id, trained_at FROM dictionaries ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })
            .optional()?;
        if let Some((id, trained_at)) = newest
            && slot.as_ref().is_none_or(|w| w.dict != id)
        {
            let bytes = dictionary(conn, id)?.unwrap_or_default();
            let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, &bytes).map_err(io_err)?;
            // A frame need not name its dictionary (4 bytes an event): the row's `dict`
            // does. Frames that do name it, written before, read the same.
            compressor.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false)).map_err(io_err)?;
            *slot = Some(Writer { dict: id, trained_at, compressor, frame: Vec::new() });
        }
        Ok(())
    }

    /// Before a page is written (inside its transaction, `events` the archive's size):
    /// trains the first dictionary, or a new one, when it is time.
    pub fn prepare_writes(&self, conn: &Connection, events: u64) -> rusqlite::Result<()> {
        let mut slot = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.load_writer(conn, &mut slot)?;
        let due = match &*slot {
            None => events >= TRAIN_AT,
            Some(w) => events >= w.trained_at.saturating_mul(RETRAIN_FACTOR),
        };
        if !due {
            return Ok(());
        }
        let mut samples = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT tfaudit_raw(raw, dict) FROM events ORDER BY seq DESC LIMIT ?1")?;
            let mut rows = stmt.query([SAMPLES])?;
            while let Some(r) = rows.next()? {
                samples.push(r.get::<_, String>(0)?.into_bytes());
            }
        }
        // Training can fail on samples too alike or too few; the archive then goes on
        // with the dictionary it has (or none) and tries again at the next size.
        match zstd::dict::from_samples(&samples, DICT_BYTES) {
            Ok(bytes) => {
                conn.execute(
                    "INSERT INTO dictionaries (trained_ms, trained_at, samples, bytes) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        jiff::Timestamp::now().as_millisecond(),
                        i64::try_from(events).unwrap_or(i64::MAX),
                        samples.len() as i64,
                        bytes
                    ],
                )?;
                tracing::debug!(events, bytes = bytes.len(), "trained a compression dictionary");
                self.load_writer(conn, &mut slot)?;
            }
            Err(e) => {
                tracing::debug!("no compression dictionary from {} events: {e}", samples.len());
                if let Some(w) = slot.as_mut() {
                    w.trained_at = events;
                }
            }
        }
        Ok(())
    }

    /// Calls `write` with an event's text as stored: compressed with the newest
    /// dictionary (`Some(id)`), or as it is while the archive has no dictionary yet.
    /// The frame is made in the writer's one buffer, and lent: an event costs the
    /// ingest no allocation for it.
    pub fn with_stored<T>(
        &self,
        raw: &str,
        write: impl FnOnce(ToSqlOutput<'_>, Option<i64>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut slot = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_mut() {
            Some(w) => {
                w.frame.clear();
                w.frame.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                w.compressor.compress_to_buffer(raw.as_bytes(), &mut w.frame).map_err(io_err)?;
                write(ToSqlOutput::Borrowed(ValueRef::Blob(&w.frame)), Some(w.dict))
            }
            None => write(ToSqlOutput::Borrowed(ValueRef::Text(raw.as_bytes())), None),
        }
    }
}

/// Compresses up to `batch` rows still kept as text with `seq` after `after`, oldest
/// first (in `conn`'s transaction): how many, and the last `seq` reached. Nothing to do
/// while the archive is too small for a dictionary.
pub fn compact(conn: &Connection, codec: &Codec, events: u64, after: i64, batch: u64) -> rusqlite::Result<(u64, i64)> {
    codec.prepare_writes(conn, events)?;
    if codec.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_none() {
        return Ok((0, after));
    }
    let rows: Vec<(i64, String)> = conn
        .prepare_cached("SELECT seq, raw FROM events WHERE seq > ?1 AND dict IS NULL ORDER BY seq LIMIT ?2")?
        .query_map(params![after, i64::try_from(batch).unwrap_or(i64::MAX)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut update = conn.prepare_cached("UPDATE events SET raw = ?1, dict = ?2 WHERE seq = ?3")?;
        for (seq, raw) in &rows {
            codec.with_stored(raw, |value, dict| update.execute(params![value, dict, seq]))?;
        }
    }
    Ok((rows.len() as u64, rows.last().map_or(after, |(seq, _)| *seq)))
}

fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Adds `tfaudit_raw(raw, dict)` to a connection.
pub fn register(conn: &Connection, codec: Arc<Codec>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("tfaudit_raw", 2, flags, move |ctx| {
        let dict = match ctx.get_raw(1) {
            ValueRef::Null => None,
            ValueRef::Integer(d) => Some(d),
            _ => return Err(rusqlite::Error::UserFunctionError("a row's dictionary is not a number".into())),
        };
        match (ctx.get_raw(0), dict) {
            (ValueRef::Text(t), None) => Ok(String::from_utf8_lossy(t).into_owned()),
            (ValueRef::Blob(b), Some(d)) => {
                // SAFETY: only reads the dictionaries table, on the connection running
                // this function; rusqlite allows that from inside a function.
                let conn = unsafe { ctx.get_connection()? };
                codec.decompress(&conn, d, b).map_err(rusqlite::Error::UserFunctionError)
            }
            _ => Err(rusqlite::Error::UserFunctionError("an event's stored form is damaged".into())),
        }
    })
}
