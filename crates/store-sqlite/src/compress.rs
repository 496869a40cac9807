//! Events' original bytes kept compressed: zstd with a dictionary trained on the
//! archive's own events (audit events share most of their text: keys, types, ids'
//! prefixes), kept in the archive and versioned.
//!
//! A row's `raw` is the event's JSON as text while its `dict` is NULL (events written
//! before the first dictionary, or by an older tfaudit), or a zstd frame made with
//! dictionary `dict` (a BLOB). Every read goes through the SQL function `tfaudit_raw(raw,
//! dict, id, request_id, ts_ms, resource_id, auth_description, accessor_id)`, which gives
//! the original text back byte for byte, so queries, filters and exports never see the
//! difference. `tfaudit compact` compresses
//! the rows still in text, and frames from before marks (below) again, in batches,
//! resumably. The integrity tree hashes the original bytes.
//!
//! A frame holds the event's text less what the row keeps already (see [`Known`]):
//! the event's id, its request's id and its time, the three strings in an event that
//! are new with each event and that no dictionary can learn; and its resource's id, its
//! actor's description and its actor's id, which the row keeps as keys of `names` (an
//! organization names thousands of resources, too many for a dictionary). The first
//! JSON string in the text that is each of them is replaced by a one-byte mark, and so
//! is every later string that is one of the last three (a run's events name the run
//! again in `meta`); reading puts the row's value back in. On the simulator's events the first
//! three halved a frame (110 bytes an event to 51).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A first dictionary is trained once the archive holds this many events: the events
/// before it stay text (until `tfaudit compact`). With the segment lengths tried
/// ([`SEGMENTS`]), 500 of the simulator's marked events make a dictionary as good as
/// 2,000 do (frames of 29 to 30 bytes), and 1,500 fewer events of about 500 bytes are
/// left as text (200,000 events: 0.7 MB less).
pub const TRAIN_AT: u64 = 500;
/// A new dictionary is trained when the archive has grown this many times over since
/// the last one was (500, 8,000, 128,000, 2,048,000 events): new kinds of events are
/// learnt, and dictionaries stay few.
const RETRAIN_FACTOR: u64 = 16;
/// Events a dictionary is trained on: the newest. Measured on the simulator's events,
/// a dictionary from 2,000 compresses them as well as one from 8,000 (113.6 bytes an
/// event either way) and costs a quarter of the CPU to train (0.08 s against 0.33 s).
/// One from 1,000 did as well while frames held the resource's id and the actor's
/// description; with those marked, 1,000 events' text is too little for a whole
/// dictionary (about 20 KB of the 32 KB came out), and frames were half as large
/// again as with one from 2,000 (200,000 events: 56.8 bytes against 38.9).
const SAMPLES: u32 = 2_000;
const DICT_BYTES: usize = 32 * 1024;
/// What a zstd frame starts with, unless it is written without (magicless). A
/// magicless frame starts with its header's first byte, whose reserved bit, set in
/// 0x28, is clear: the two cannot be taken for each other.
const MAGIC: [u8; 4] = 0xFD2F_B528_u32.to_le_bytes();
/// The most a zstd frame's header takes after its magic number.
const MAX_HEADER: usize = 14;
/// zstd's level. On the simulator's marked events, with a trained dictionary, 3 made
/// frames 1.3 bytes smaller than 1 (200,000 events: 22.7 - 24.2 bytes against 23.9 -
/// 25.5), at about the same speed; 5 made them 2 bytes smaller again, but took twice
/// as long.
const LEVEL: i32 = 3;

/// The archive's dictionaries, shared by its connections.
#[derive(Default)]
pub struct Codec {
    /// Dictionary bytes by id, read from the archive as first needed.
    dicts: RwLock<HashMap<i64, Arc<Vec<u8>>>>,
    /// The writer's compressor with the newest dictionary, and the archive size it
    /// was trained at.
    writer: Mutex<Option<Writer>>,
    /// Decompressors per dictionary and frame format (magicless or not), reused
    /// across rows and connections.
    readers: Mutex<HashMap<(i64, bool), Vec<zstd::bulk::Decompressor<'static>>>>,
}

/// The strings of the `names` keys that frames' marks stand for, as one connection
/// looked them up. A reader's are kept: a key is never reused once committed, and a
/// reader sees only committed rows. The writer's are forgotten after each row, as it
/// could see a key that its transaction then rolls back. Per connection, so that a
/// row's lookups take no lock.
struct Names {
    kept: bool,
    resolver: crate::names::Resolver,
}

/// Past this many, a reader's names start again empty.
const NAMES_MAX: usize = 50_000;
/// A reader looks names up this many keys at a time, those around the one it needs:
/// keys are given in the order strings were first archived, so the rows read together
/// name keys close together, and one range read costs little more than one lookup.
const NAMES_BLOCK: i64 = 512;

impl Names {
    /// Before a row: the writer forgets what it looked up, a reader past its bound
    /// starts again (never during a row, whose two names must both be known).
    fn start_row(&mut self) {
        if !self.kept || self.resolver.len() >= NAMES_MAX {
            self.resolver.clear();
        }
    }

    /// Looks `key` up unless it is known (a reader: with the keys of its block).
    fn learn(&mut self, conn: &Connection, key: i64) -> Result<(), BoxError> {
        let block = if self.kept { NAMES_BLOCK } else { 1 };
        if self.resolver.look_up(conn, key, block)?.is_none() {
            return Err(format!("name {key}, which a compressed event refers to, is missing from the archive").into());
        }
        Ok(())
    }
}

struct Writer {
    dict: i64,
    trained_at: u64,
    /// Which marks the dictionary was trained with (see [`MARKS_NOW`]), or
    /// [`MARKS_NOW`] when training one was tried at `trained_at`: a dictionary from
    /// before is replaced once.
    marks: i64,
    compressor: zstd::bulk::Compressor<'static>,
    /// The last frame made, its buffer reused.
    frame: Vec<u8>,
    /// The last frame's text with its known values marked, its buffer reused.
    text: String,
}

/// What a row keeps beside its frame: values an event's text holds that the frame
/// need not repeat. Each is read back from the row exactly as it was found in the
/// text (an id unpacks to the text it was packed from; a time is written in the one
/// form the API sends), or, when it is not found as is, left in the text.
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    pub id: &'a str,
    pub request_id: Option<&'a str>,
    pub ts_ms: i64,
    /// The string of the row's `resource_id` key.
    pub resource_id: Option<&'a str>,
    /// The string of the row's `auth_description` key.
    pub description: Option<&'a str>,
    /// The string of the row's `accessor_id` key.
    pub accessor: Option<&'a str>,
}

/// A frame's text starts with this byte when it has the first three marks (an older
/// tfaudit's), with [`KEYED`] when it has five (the first of each value only, an older
/// tfaudit's), with [`ALL_MARKS`] when it has all six, or with [`VERBATIM`] when the
/// event's text holds a byte that is a mark (JSON text never does, but the frame must
/// not depend on it). Frames written before marks start with `{`: JSON text cannot
/// start with a control character, so all read.
const MARKED: u8 = 0;
const VERBATIM: u8 = 4;
const KEYED: u8 = 5;
const ALL_MARKS: u8 = 11;
/// The marks, in [`Known`]'s order: bytes JSON text never holds unescaped.
const MARKS: [u8; 6] = [1, 2, 3, 6, 7, 8];
/// What `dictionaries.marked` says of a dictionary: trained on text without marks
/// (0), with the first three (1, migration 18), with five (2, migration 22), or with
/// all six (3, migration 23).
pub const MARKS_NOW: i64 = 3;

/// Whether `raw` holds a byte that is a mark.
fn holds_a_mark(raw: &[u8]) -> bool {
    memchr::memchr3(MARKS[0], MARKS[1], MARKS[2], raw).is_some()
        || memchr::memchr3(MARKS[3], MARKS[4], MARKS[5], raw).is_some()
}

/// `time` as the API writes it (`2020-06-30T17:52:46.000Z`), or None outside years
/// 0000-9999.
fn api_time(ms: i64, out: &mut [u8; 24]) -> Option<&str> {
    let t = jiff::tz::Offset::UTC.to_datetime(jiff::Timestamp::from_millisecond(ms).ok()?);
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    // Written digit by digit: a frame's read formats one, and `write!` cost verify 3%.
    *out = *b"0000-00-00T00:00:00.000Z";
    for (at, width, mut v) in [
        (0, 4, year),
        (5, 2, u32::try_from(t.month()).ok()?),
        (8, 2, u32::try_from(t.day()).ok()?),
        (11, 2, u32::try_from(t.hour()).ok()?),
        (14, 2, u32::try_from(t.minute()).ok()?),
        (17, 2, u32::try_from(t.second()).ok()?),
        (20, 3, u32::try_from(t.millisecond()).ok()?),
    ] {
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + u8::try_from(v % 10).ok()?;
            v /= 10;
        }
    }
    std::str::from_utf8(out).ok()
}

/// Whether the byte at `at` (a quote) is escaped: an odd number of backslashes
/// stands before it.
fn escaped(bytes: &[u8], at: usize) -> bool {
    bytes[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

impl Known<'_> {
    /// Into `out`, the text a frame holds for `raw`: `raw` with the first JSON string
    /// that is each of the first three values (the ids and the time), and every JSON
    /// string that is one of the last three (the names, which a run's events repeat in
    /// `meta`), replaced by the value's mark. The text's strings are found in one pass
    /// over its quotes, each compared with the values of its length: searching the text
    /// for each value cost the ingest 7% of its CPU. A value that is no whole string
    /// (escaped, or in another form) stays in the text; any choice of spans reads back
    /// the same, as a mark stands for exactly the bytes it replaced.
    fn mark(&self, raw: &str, out: &mut String) {
        out.clear();
        if holds_a_mark(raw.as_bytes()) {
            out.push(char::from(VERBATIM));
            out.push_str(raw);
            return;
        }
        let mut time = [0u8; 24];
        let values = self.values(&mut time);
        let bytes = raw.as_bytes();
        out.reserve(raw.len() + 1);
        out.push(char::from(ALL_MARKS));
        let mut found = [false; 3];
        let mut done = 0;
        let mut open = None;
        for at in memchr::memchr_iter(b'"', bytes) {
            if escaped(bytes, at) {
                continue;
            }
            let Some(start) = open.take() else {
                open = Some(at + 1);
                continue;
            };
            let string = &bytes[start..at];
            let which = values.iter().enumerate().position(|(n, value)| {
                value.is_some_and(|v| v.len() == string.len() && !v.is_empty() && v.as_bytes() == string)
                    && found.get(n).is_none_or(|f| !f)
            });
            if let Some(n) = which {
                if let Some(f) = found.get_mut(n) {
                    *f = true;
                }
                // Both ends are quotes, so on a character's bounds.
                out.push_str(&raw[done..start]);
                out.push(char::from(MARKS[n]));
                done = at;
            }
        }
        out.push_str(&raw[done..]);
    }

    /// The original text of a frame's `text`, which [`Known::mark`] made with these
    /// values (or an older tfaudit made, or left as it was).
    fn unmark(&self, mut text: Vec<u8>) -> Result<String, BoxError> {
        let (body, marks) = match text.first() {
            Some(&MARKED) => (&text[1..], 3),
            Some(&KEYED) => (&text[1..], 5),
            Some(&ALL_MARKS) => (&text[1..], 6),
            Some(&VERBATIM) => {
                text.remove(0);
                return Ok(String::from_utf8(text)?);
            }
            _ => return Ok(String::from_utf8(text)?),
        };
        let mut time = [0u8; 24];
        let values = self.values(&mut time);
        let mut out = Vec::with_capacity(body.len() + values.iter().flatten().map(|v| v.len()).sum::<usize>());
        // Where the next of the first three marks is, and of the later ones (those the
        // frame has): each is searched for again only once it is passed. A byte that is
        // a mark the frame's form does not have is text.
        let later = |from: usize| match marks {
            5 => memchr::memchr2(MARKS[3], MARKS[4], &body[from..]),
            6 => memchr::memchr3(MARKS[3], MARKS[4], MARKS[5], &body[from..]),
            _ => None,
        };
        let (mut first, mut last) = (memchr::memchr3(MARKS[0], MARKS[1], MARKS[2], body), later(0));
        let mut done = 0;
        while let Some(at) = match (first, last) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        } {
            out.extend_from_slice(&body[done..at]);
            let which = MARKS.iter().position(|&m| m == body[at]).unwrap_or_default();
            let value = values[which].filter(|v| !v.is_empty()).ok_or(
                "a compressed event's id, request id, time, resource, description or actor is missing from its row",
            )?;
            out.extend_from_slice(value.as_bytes());
            done = at + 1;
            if which < 3 {
                first = memchr::memchr3(MARKS[0], MARKS[1], MARKS[2], &body[done..]).map(|n| n + done);
            } else {
                last = later(done).map(|n| n + done);
            }
        }
        out.extend_from_slice(&body[done..]);
        Ok(String::from_utf8(out)?)
    }

    /// The values marks stand for, in [`MARKS`]' order (`time` holds the time's text).
    fn values<'s>(&'s self, time: &'s mut [u8; 24]) -> [Option<&'s str>; 6] {
        [Some(self.id), self.request_id, api_time(self.ts_ms, time), self.resource_id, self.description, self.accessor]
    }

    /// Whether a frame's `text` has the marks of the row's keyed values, which must be
    /// looked up before [`Known::unmark`].
    fn names_keys(text: &[u8]) -> bool {
        match text.first() {
            Some(&KEYED) => memchr::memchr2(MARKS[3], MARKS[4], text).is_some(),
            Some(&ALL_MARKS) => memchr::memchr3(MARKS[3], MARKS[4], MARKS[5], text).is_some(),
            _ => false,
        }
    }
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

    /// The text of a row's `raw` compressed with dictionary `dict`, marks and all.
    fn decompress(&self, conn: &Connection, dict: i64, frame: &[u8]) -> Result<Vec<u8>, BoxError> {
        let magicless = !frame.starts_with(&MAGIC);
        let key = (dict, magicless);
        let taken =
            self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(&key).and_then(Vec::pop);
        let mut d = match taken {
            Some(d) => d,
            None => {
                let mut d = zstd::bulk::Decompressor::with_dictionary(&self.dict(conn, dict)?)?;
                if magicless {
                    d.set_parameter(zstd::zstd_safe::DParameter::Format(zstd::zstd_safe::FrameFormat::Magicless))?;
                }
                d
            }
        };
        // The size is in the frame's header, which zstd reads after a magic number.
        let mut header = [0u8; MAGIC.len() + MAX_HEADER];
        let head = if magicless {
            let n = frame.len().min(MAX_HEADER);
            header[..MAGIC.len()].copy_from_slice(&MAGIC);
            header[MAGIC.len()..MAGIC.len() + n].copy_from_slice(&frame[..n]);
            &header[..MAGIC.len() + n]
        } else {
            frame
        };
        let size = zstd::zstd_safe::get_frame_content_size(head)
            .map_err(|_| "a compressed event is damaged")?
            .ok_or("a compressed event does not say its size")?;
        let bytes = d.decompress(frame, usize::try_from(size)?)?;
        self.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_default().push(d);
        Ok(bytes)
    }

    /// Loads the newest dictionary for writing, if there is one and it is not loaded.
    fn load_writer(&self, conn: &Connection, slot: &mut Option<Writer>) -> rusqlite::Result<()> {
        let newest: Option<(i64, u64, i64)> = conn
            .query_row("SELECT id, trained_at, marked FROM dictionaries ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0), r.get(2)?))
            })
            .optional()?;
        if let Some((id, trained_at, marks)) = newest
            && slot.as_ref().is_none_or(|w| w.dict != id)
        {
            let bytes = dictionary(conn, id)?.unwrap_or_default();
            let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, &bytes).map_err(io_err)?;
            // A frame need not name its dictionary (4 bytes an event): the row's `dict`
            // does. Frames that do name it, written before, read the same.
            compressor.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false)).map_err(io_err)?;
            // Nor start with zstd's magic number (4 bytes more), with a dictionary of
            // today's marks: frames written before, which do, read the same.
            if marks >= MARKS_NOW {
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::Format(zstd::zstd_safe::FrameFormat::Magicless))
                    .map_err(io_err)?;
            }
            *slot = Some(Writer { dict: id, trained_at, marks, compressor, frame: Vec::new(), text: String::new() });
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
            Some(w) => events >= w.trained_at.saturating_mul(RETRAIN_FACTOR) || w.marks < MARKS_NOW,
        };
        if !due {
            return Ok(());
        }
        // Trained on the text as frames hold it: with its known values marked.
        let mut samples = Vec::new();
        {
            let mut stmt = conn.prepare(&format!("{ROWS_MARKED} ORDER BY seq DESC LIMIT ?1"))?;
            let mut rows = stmt.query([SAMPLES])?;
            while let Some(r) = rows.next()? {
                let row = MarkedRow::read(r)?;
                let mut text = String::new();
                row.known().mark(&row.raw, &mut text);
                samples.push(text.into_bytes());
            }
        }
        // Training can fail on samples too alike or too few; the archive then goes on
        // with the dictionary it has (or none) and tries again at the next size.
        match train(&samples) {
            Ok(bytes) => {
                conn.execute(
                    "INSERT INTO dictionaries (trained_ms, trained_at, samples, bytes, marked) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        jiff::Timestamp::now().as_millisecond(),
                        i64::try_from(events).unwrap_or(i64::MAX),
                        samples.len() as i64,
                        bytes,
                        MARKS_NOW
                    ],
                )?;
                tracing::debug!(events, bytes = bytes.len(), "trained a compression dictionary");
                if slot.as_ref().is_some_and(|w| w.marks < MARKS_NOW) {
                    tracing::info!(
                        "events are now compressed without the id, request id, time, resource id, description and \
                         actor their row keeps; `tfaudit compact` compresses the events stored before this way too"
                    );
                }
                self.load_writer(conn, &mut slot)?;
            }
            Err(e) => {
                tracing::debug!("no compression dictionary from {} events: {e}", samples.len());
                if let Some(w) = slot.as_mut() {
                    w.trained_at = events;
                    w.marks = MARKS_NOW;
                }
            }
        }
        Ok(())
    }

    /// Calls `write` with an event's text as stored: compressed with the newest
    /// dictionary (`Some(id)`), less the values its row keeps (`known`), or as it is
    /// while the archive has no dictionary yet. The frame is made in the writer's
    /// buffers, and lent: an event costs the ingest no allocation for it.
    pub fn with_stored<T>(
        &self,
        raw: &str,
        known: Known<'_>,
        write: impl FnOnce(ToSqlOutput<'_>, Option<i64>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut slot = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_mut() {
            Some(w) => {
                known.mark(raw, &mut w.text);
                w.frame.clear();
                w.frame.reserve(zstd::zstd_safe::compress_bound(w.text.len()));
                w.compressor.compress_to_buffer(w.text.as_bytes(), &mut w.frame).map_err(io_err)?;
                write(ToSqlOutput::Borrowed(ValueRef::Blob(&w.frame)), Some(w.dict))
            }
            None => write(ToSqlOutput::Borrowed(ValueRef::Text(raw.as_bytes())), None),
        }
    }
}

/// An event's row as [`ROWS_MARKED`] selects it: its text and what marking it needs.
struct MarkedRow {
    seq: i64,
    raw: String,
    id: Option<String>,
    request_id: Option<String>,
    ts_ms: i64,
    resource_id: Option<String>,
    description: Option<String>,
    accessor: Option<String>,
}

/// Selects rows of `events` as [`MarkedRow::read`] reads them.
const ROWS_MARKED: &str = "SELECT seq, tfaudit_raw(raw, dict, id, request_id, ts_ms, resource_id, auth_description, accessor_id), \
     id, request_id, ts_ms, (SELECT value FROM names WHERE id = resource_id), \
     (SELECT value FROM names WHERE id = auth_description), (SELECT value FROM names WHERE id = accessor_id) FROM events";

impl MarkedRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: r.get(0)?,
            raw: r.get(1)?,
            id: crate::names::id_at(r, 2)?,
            request_id: crate::names::id_at(r, 3)?,
            ts_ms: r.get(4)?,
            resource_id: r.get(5)?,
            description: r.get(6)?,
            accessor: r.get(7)?,
        })
    }

    fn known(&self) -> Known<'_> {
        Known {
            id: self.id.as_deref().unwrap_or_default(),
            request_id: self.request_id.as_deref(),
            ts_ms: self.ts_ms,
            resource_id: self.resource_id.as_deref(),
            description: self.description.as_deref(),
            accessor: self.accessor.as_deref(),
        }
    }
}

/// Compresses up to `batch` rows with `seq` after `after` that are kept as text, or as
/// frames from before today's marks (their dictionary trained with fewer), oldest first
/// (in `conn`'s transaction): how many, and the last `seq` reached. Nothing to do while
/// the archive is too small for a dictionary.
pub fn compact(conn: &Connection, codec: &Codec, events: u64, after: i64, batch: u64) -> rusqlite::Result<(u64, i64)> {
    codec.prepare_writes(conn, events)?;
    let Some(writing) = codec.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|w| w.dict)
    else {
        return Ok((0, after));
    };
    // Frames made with the dictionary being written with are left (were training one
    // with today's marks to fail, it would be that one).
    let rows: Vec<MarkedRow> = conn
        .prepare_cached(&format!(
            "{ROWS_MARKED} WHERE seq > ?1 AND (dict IS NULL OR (dict <> ?3 AND dict IN (SELECT id FROM dictionaries WHERE marked < ?4)))
             ORDER BY seq LIMIT ?2"
        ))?
        .query_map(params![after, i64::try_from(batch).unwrap_or(i64::MAX), writing, MARKS_NOW], MarkedRow::read)?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut update = conn.prepare_cached("UPDATE events SET raw = ?1, dict = ?2 WHERE seq = ?3")?;
        for row in &rows {
            codec.with_stored(&row.raw, row.known(), |value, dict| update.execute(params![value, dict, row.seq]))?;
        }
    }
    Ok((rows.len() as u64, rows.last().map_or(after, |row| row.seq)))
}

/// The lengths of the segments a dictionary is made of that are tried, and the span
/// of text (`d`) by which the trainer counts how often a segment is seen. zstd's own
/// choice of a segment length (`ZDICT_trainFromBuffer`, which tries lengths from 50 to
/// 2,000 on a part of the samples and counts a dictionary's size against it) picks
/// short ones for marked events, whose text is much alike: 2,000 of the simulator's
/// events so marked gave a dictionary of 3.6 KB and frames of 57 bytes, where segments
/// of 1,024 bytes (about three events) fill the 32 KB and give frames of 29. Which
/// length does best changes with the samples (frames of 29 to 35 bytes, in turn, over
/// six sets of 2,000 events), so three are tried, at about 10 ms each.
const SEGMENTS: [u32; 3] = [512, 1024, 2048];
const SPAN: u32 = 8;

/// The dictionary of at most [`DICT_BYTES`] trained on `samples` with zstd's fastCover
/// trainer that compresses a quarter of them (every fourth) smallest, of those with
/// segments of each of [`SEGMENTS`]' lengths.
fn train(samples: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let flat = samples.concat();
    let sizes: Vec<usize> = samples.iter().map(Vec::len).collect();
    let mut best: Option<(usize, Vec<u8>)> = None;
    let mut failed = None;
    for segment in SEGMENTS {
        let dict = match train_with(&flat, &sizes, segment) {
            Ok(dict) => dict,
            Err(e) => {
                failed = Some(e);
                continue;
            }
        };
        let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, &dict).map_err(|e| e.to_string())?;
        let mut size = 0;
        for sample in samples.iter().step_by(4) {
            size += compressor.compress(sample).map_err(|e| e.to_string())?.len();
        }
        if best.as_ref().is_none_or(|(smallest, _)| size < *smallest) {
            best = Some((size, dict));
        }
    }
    best.map(|(_, dict)| dict).ok_or_else(|| failed.unwrap_or_default())
}

/// A dictionary of at most [`DICT_BYTES`] trained with zstd's fastCover trainer, with
/// segments of `segment` bytes, on the samples `flat` holds end to end, of `sizes`.
fn train_with(flat: &[u8], sizes: &[usize], segment: u32) -> Result<Vec<u8>, String> {
    let count = u32::try_from(sizes.len()).map_err(|_| "too many samples".to_owned())?;
    let params = zstd_sys::ZDICT_fastCover_params_t {
        k: segment,
        d: SPAN,
        // Zero: zstd's defaults (f 20, accel 1, one thread); a split point of 1 trains
        // on every sample, as there is no choice of parameters to test.
        f: 0,
        steps: 0,
        nbThreads: 0,
        splitPoint: 1.0,
        accel: 0,
        shrinkDict: 0,
        shrinkDictMaxRegression: 0,
        zParams: zstd_sys::ZDICT_params_t { compressionLevel: LEVEL, notificationLevel: 0, dictID: 0 },
    };
    let mut dict = vec![0u8; DICT_BYTES];
    // SAFETY: the buffers are live for the call and their lengths are theirs: `dict`
    // holds `dict.len()` bytes, `flat` holds the sum of `sizes`, which has `count`
    // entries. zstd writes only into `dict`, at most `dict.len()` bytes.
    let written = unsafe {
        zstd_sys::ZDICT_trainFromBuffer_fastCover(
            dict.as_mut_ptr().cast(),
            dict.len(),
            flat.as_ptr().cast(),
            sizes.as_ptr(),
            count,
            params,
        )
    };
    // SAFETY: both take a code zstd returned and read only static data.
    if unsafe { zstd_sys::ZDICT_isError(written) } != 0 {
        let name = unsafe { std::ffi::CStr::from_ptr(zstd_sys::ZDICT_getErrorName(written)) };
        return Err(name.to_string_lossy().into_owned());
    }
    dict.truncate(written);
    Ok(dict)
}

fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Adds `tfaudit_raw(raw, dict, id, request_id, ts_ms, resource_id, auth_description,
/// accessor_id)` to a connection: a row's original text. `reader`: the connection
/// never writes, so the names it looks up can be kept for all (see [`Codec`]).
pub fn register(conn: &Connection, codec: Arc<Codec>, reader: bool) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let names = std::cell::RefCell::new(Names { kept: reader, resolver: crate::names::Resolver::default() });
    // A row's lookups never call the function again, so the names are never borrowed twice.
    conn.create_scalar_function("tfaudit_raw", 8, flags, move |ctx| raw(ctx, &codec, &mut names.borrow_mut()))
}

/// `tfaudit_raw`'s work (see [`register`]).
fn raw(ctx: &rusqlite::functions::Context<'_>, codec: &Codec, names: &mut Names) -> rusqlite::Result<String> {
    let damaged = || rusqlite::Error::UserFunctionError("an event's stored form is damaged".into());
    let dict = match ctx.get_raw(1) {
        ValueRef::Null => None,
        ValueRef::Integer(d) => Some(d),
        _ => return Err(rusqlite::Error::UserFunctionError("a row's dictionary is not a number".into())),
    };
    match (ctx.get_raw(0), dict) {
        (ValueRef::Text(t), None) => Ok(String::from_utf8_lossy(t).into_owned()),
        (ValueRef::Blob(b), Some(d)) => {
            // SAFETY: only reads the dictionaries and names tables, on the connection
            // running this function; rusqlite allows that from inside a function.
            let conn = unsafe { ctx.get_connection()? };
            let text = codec.decompress(&conn, d, b).map_err(rusqlite::Error::UserFunctionError)?;
            let (mut id, mut request_id) = ([0; 36], [0; 36]);
            names.start_row();
            let mut keys = [None, None, None];
            if Known::names_keys(&text) {
                for (key, at) in keys.iter_mut().zip([5, 6, 7]) {
                    *key = ctx.get::<Option<i64>>(at)?;
                    if let Some(k) = *key {
                        names.learn(&conn, k).map_err(rusqlite::Error::UserFunctionError)?;
                    }
                }
            }
            let [resource_id, description, accessor] = keys.map(|k| k.and_then(|k| names.resolver.get(k)));
            let known = Known {
                id: crate::names::id_text(ctx.get_raw(2), &mut id).map_err(|_| damaged())?.unwrap_or_default(),
                request_id: crate::names::id_text(ctx.get_raw(3), &mut request_id).map_err(|_| damaged())?,
                ts_ms: ctx.get(4)?,
                resource_id,
                description,
                accessor,
            };
            known.unmark(text).map_err(rusqlite::Error::UserFunctionError)
        }
        _ => Err(damaged()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "ae66e491-db59-457c-8445-9c908ee726ae";
    const REQUEST: &str = "4df584d4-7e2a-01e6-6cc0-4adbefa020e6";
    /// 2020-06-30T17:52:46.000Z
    const TS: i64 = 1_593_539_566_000;

    const RESOURCE: &str = "run-CZcmD7eagjhyX0vN";

    fn known(request_id: Option<&str>) -> Known<'_> {
        Known { id: ID, request_id, ts_ms: TS, resource_id: None, description: None, accessor: None }
    }

    fn keyed<'a>(resource_id: Option<&'a str>, description: Option<&'a str>) -> Known<'a> {
        Known { resource_id, description, ..known(Some(REQUEST)) }
    }

    /// The text a frame holds for `raw`, after checking that it reads back as `raw`.
    fn round_trip(k: Known<'_>, raw: &str) -> String {
        let mut text = String::new();
        k.mark(raw, &mut text);
        assert_eq!(k.unmark(text.clone().into_bytes()).unwrap(), raw);
        text
    }

    #[test]
    fn the_rows_values_are_marked_and_put_back() {
        let raw = format!(
            r#"{{"id":"{ID}","timestamp":"2020-06-30T17:52:46.000Z","auth":{{"accessor_id":"user-a","description":"alice"}},"request":{{"id":"{REQUEST}"}},"resource":{{"id":"{RESOURCE}","meta":{{"run":{{"id":"{RESOURCE}"}},"of":"{ID}","by":"alice","note":"alice's user-a"}}}}}}"#
        );
        let k = Known { accessor: Some("user-a"), ..keyed(Some(RESOURCE), Some("alice")) };
        let text = round_trip(k, &raw);
        assert_eq!(
            text,
            "\u{b}{\"id\":\"\u{1}\",\"timestamp\":\"\u{3}\",\"auth\":{\"accessor_id\":\"\u{8}\",\"description\":\"\u{7}\"},\"request\":{\"id\":\"\u{2}\"},\"resource\":{\"id\":\"\u{6}\",\"meta\":{\"run\":{\"id\":\"\u{6}\"},\"of\":\"ae66e491-db59-457c-8445-9c908ee726ae\",\"by\":\"\u{7}\",\"note\":\"alice's user-a\"}}}",
            "the first span of each is marked, and every later whole string of a name"
        );
        // Read with other values, the text is another: the row's values are bound.
        for other in [
            Known { id: REQUEST, ..k },
            Known { resource_id: Some("run-other"), ..k },
            Known { accessor: Some("user-b"), ..k },
        ] {
            assert_ne!(other.unmark(text.clone().into_bytes()).unwrap(), raw);
        }
    }

    #[test]
    fn frames_from_before_the_keyed_marks_read_as_they_did() {
        // An older tfaudit's frame: its first three marks are put back, and the bytes
        // that are marks today are text (it never wrote them: JSON does not hold them).
        let older = b"\0{\"id\":\"\x01\",\"x\":\"\x06\x07\x08\"}".to_vec();
        let k = Known { accessor: Some("user-a"), ..keyed(Some(RESOURCE), Some("alice")) };
        assert_eq!(k.unmark(older).unwrap(), format!("{{\"id\":\"{ID}\",\"x\":\"\u{6}\u{7}\u{8}\"}}"));
        // A frame with five marks: the actor's is text.
        let keyed = b"\x05{\"id\":\"\x01\",\"x\":\"\x06\x07\x08\"}".to_vec();
        assert_eq!(k.unmark(keyed).unwrap(), format!("{{\"id\":\"{ID}\",\"x\":\"{RESOURCE}alice\u{8}\"}}"));
    }

    #[test]
    fn values_not_found_as_they_are_stay_in_the_text() {
        // A time in another form, an id escaped, a request id null, the same id twice.
        for (k, raw) in [
            (known(None), r#"{"id":"\u0061e66e491-db59-457c-8445-9c908ee726ae","timestamp":"2020-06-30T17:52:46Z"}"#),
            (known(None), r#"{"request":{"id":null},"timestamp":"2020-06-30T17:52:46.000000Z"}"#),
            (Known { request_id: Some(ID), ..known(None) }, &format!(r#"{{"id":"{ID}","request":{{"id":"{ID}"}}}}"#)),
            (
                Known {
                    id: "",
                    request_id: Some(""),
                    ts_ms: i64::MIN,
                    resource_id: Some(""),
                    description: Some(""),
                    accessor: Some(""),
                },
                r#"{"id":""}"#,
            ),
            // A description escaped in the text (its string has a real tab), and one
            // that is also the resource's id: each span is marked once.
            (keyed(None, Some("tab\there")), r#"{"description":"tab\there"}"#),
            (keyed(Some(RESOURCE), Some(RESOURCE)), &format!(r#"{{"a":"{RESOURCE}","b":"{RESOURCE}"}}"#)),
        ] {
            round_trip(k, raw);
        }
    }

    #[test]
    fn text_holding_a_mark_is_kept_as_it_is() {
        for raw in ["{\"a\":\"\u{1}\"}", "{\u{3}}", "{\u{6}}", "{\"\u{7}\"}", "{\"\u{8}\"}"] {
            assert_eq!(round_trip(keyed(Some(RESOURCE), None), raw), format!("\u{4}{raw}"), "{raw:?}");
        }
        // Text starting as a frame's text does is marked as any other.
        for raw in ["\0{}", "\u{4}{}", "\u{5}{}", "\u{b}{}"] {
            assert_eq!(round_trip(known(Some(REQUEST)), raw), format!("\u{b}{raw}"), "{raw:?}");
        }
        // And text as written before marks reads as it is.
        assert_eq!(known(None).unmark(br#"{"id":"x"}"#.to_vec()).unwrap(), r#"{"id":"x"}"#);
    }

    #[test]
    fn names_are_read_by_block_kept_by_readers_and_both_of_a_row_stay_known() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE names (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE)").unwrap();
        for (id, value) in [(1, "run-a"), (2, "alice"), (600, "run-b"), (1100, "bob")] {
            conn.execute("INSERT INTO names (id, value) VALUES (?1, ?2)", params![id, value]).unwrap();
        }
        let mut reader = Names { kept: true, resolver: crate::names::Resolver::default() };
        reader.learn(&conn, 1).unwrap();
        assert_eq!(reader.resolver.len(), 2, "its block's keys (1 and 2), not the next block's (600)");
        // One short of full: a row's first name fills it, and its second must not
        // empty it again. Full, it is emptied before the next row.
        let filler = 1 << 20;
        conn.execute(
            "WITH RECURSIVE k(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM k WHERE x < ?2)
             INSERT INTO names (id, value) SELECT x, 'x' || x FROM k",
            params![filler, filler + NAMES_MAX as i64 - 4],
        )
        .unwrap();
        for key in (filler..filler + NAMES_MAX as i64 - 3).step_by(NAMES_BLOCK as usize) {
            reader.learn(&conn, key).unwrap();
        }
        assert_eq!(reader.resolver.len(), NAMES_MAX - 1);
        reader.start_row();
        reader.learn(&conn, 600).unwrap();
        reader.learn(&conn, 1100).unwrap();
        assert!([1, 2, 600, 1100].iter().all(|&k| reader.resolver.get(k).is_some()));
        reader.start_row();
        assert_eq!(reader.resolver.len(), 0);
        // The writer looks up only the key asked, and forgets it before the next row.
        let mut writer = Names { kept: false, resolver: crate::names::Resolver::default() };
        writer.learn(&conn, 1).unwrap();
        assert_eq!(writer.resolver.len(), 1);
        writer.start_row();
        assert_eq!(writer.resolver.len(), 0);
        let err = writer.learn(&conn, 7).unwrap_err();
        assert!(err.to_string().contains("name 7, which a compressed event refers to, is missing"), "{err}");
    }

    #[test]
    fn a_mark_without_its_value_is_an_error() {
        let text = round_trip(known(Some(REQUEST)), &format!(r#"{{"request":"{REQUEST}"}}"#));
        let err = known(None).unmark(text.into_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing from its row"), "{err}");
        let text = round_trip(keyed(Some(RESOURCE), None), &format!(r#"{{"resource":"{RESOURCE}"}}"#));
        let err = known(Some(REQUEST)).unmark(text.into_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing from its row"), "{err}");
        let actor = Known { accessor: Some("user-a"), ..known(None) };
        let text = round_trip(actor, r#"{"accessor_id":"user-a"}"#);
        let err = known(None).unmark(text.into_bytes()).unwrap_err();
        assert!(err.to_string().contains("missing from its row"), "{err}");
    }

    proptest! {
        /// Any text, the values anywhere in it (or not), any values: read back exactly.
        #[test]
        fn any_text_reads_back_exactly(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(ID.to_owned()),
                    Just(REQUEST.to_owned()),
                    Just("2020-06-30T17:52:46.000Z".to_owned()),
                    Just(RESOURCE.to_owned()),
                    Just("alice".to_owned()),
                    Just("\"alice\"".to_owned()),
                    Just(format!("\"{RESOURCE}\"")),
                    Just("\"user-a\"".to_owned()),
                    "[\\x00-\\x0ba-f0-9\"{}:,-]{0,12}",
                    ".{0,8}",
                ],
                0..8,
            ),
            id in prop_oneof![Just(ID.to_owned()), "[a-f0-9-]{0,6}"],
            request_id in proptest::option::of(prop_oneof![Just(REQUEST.to_owned()), Just(ID.to_owned()), "[a-f0-9-]{0,4}"]),
            ts_ms in prop_oneof![Just(TS), any::<i64>()],
            resource_id in proptest::option::of(prop_oneof![Just(RESOURCE.to_owned()), Just(ID.to_owned()), "[a-f0-9-]{0,4}"]),
            description in proptest::option::of(prop_oneof![Just("alice".to_owned()), Just(RESOURCE.to_owned()), ".{0,3}"]),
            accessor in proptest::option::of(prop_oneof![Just("user-a".to_owned()), Just("alice".to_owned()), ".{0,3}"]),
        ) {
            let raw = parts.concat();
            let k = Known {
                id: &id,
                request_id: request_id.as_deref(),
                ts_ms,
                resource_id: resource_id.as_deref(),
                description: description.as_deref(),
                accessor: accessor.as_deref(),
            };
            round_trip(k, &raw);
        }
    }

    proptest! {
        /// Digit by digit, as `format!` would write it, over the years 0000 - 9999.
        #[test]
        fn times_are_written_digit_by_digit(ms in -62_167_219_200_000_i64..253_402_300_800_000) {
            let t = jiff::tz::Offset::UTC.to_datetime(jiff::Timestamp::from_millisecond(ms).unwrap());
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second(), t.millisecond()
            );
            let mut buf = [0; 24];
            prop_assert_eq!(api_time(ms, &mut buf), Some(expected.as_str()));
        }
    }

    #[test]
    fn times_are_written_as_the_api_writes_them() {
        let mut buf = [0; 24];
        assert_eq!(api_time(TS, &mut buf), Some("2020-06-30T17:52:46.000Z"));
        assert_eq!(api_time(TS + 7, &mut buf), Some("2020-06-30T17:52:46.007Z"));
        assert_eq!(api_time(-1, &mut buf), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(api_time(i64::MIN, &mut buf), None);
        assert_eq!(api_time(253_402_300_800_000, &mut buf), None, "year 10000");
    }
}
