//! Events' original bytes kept compressed: zstd with a dictionary trained on the
//! archive's own events (audit events share most of their text: keys, types, ids'
//! prefixes), kept in the archive and versioned.
//!
//! A row's `raw` is the event's JSON as text while its `dict` is NULL (events written
//! before the first dictionary, or by an older tfaudit), or a zstd frame made with
//! dictionary `dict` (a BLOB). Every read goes through the SQL function `tfaudit_raw(raw,
//! dict, id, request_id, ts_ms)`, which gives the original text back byte for byte, so
//! queries, filters and exports never see the difference. `tfaudit compact` compresses
//! the rows still in text, and frames from before marks (below) again, in batches,
//! resumably. The integrity tree hashes the original bytes.
//!
//! A frame holds the event's text less what the row keeps already (see [`Known`]):
//! the event's id, its request's id and its time, the three strings in an event that
//! are new with each event and that no dictionary can learn. Each is found in the text
//! and its span replaced by a one-byte mark; reading puts the row's value back in. On
//! the simulator's events that halves a frame (110 bytes an event to 51).

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
    /// Whether the dictionary was trained on marked text (see [`Known`]), or training
    /// one was tried at `trained_at`: a dictionary from before is replaced once.
    marked: bool,
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
}

/// A frame's text starts with this byte when it has marks, or with [`VERBATIM`] when
/// the event's text holds a byte that is a mark (JSON text never does, but the frame
/// must not depend on it). Frames written before start with `{`: JSON text cannot
/// start with a control character, so all three read.
const MARKED: u8 = 0;
const VERBATIM: u8 = 4;
/// The marks, in [`Known`]'s order: bytes JSON text never holds unescaped.
const MARKS: [u8; 3] = [1, 2, 3];

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

/// Where `needle` first is in `hay`. The values marked are short (ids, a time), and
/// building a searcher for each (`memchr::memmem`'s) cost more than the search: a short
/// needle is found by its first byte and compared; a long one (an id that is not a
/// UUID, which could be hostile text) by `memmem`, whose time is linear.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if needle.len() > 64 {
        return memchr::memmem::find(hay, needle);
    }
    let mut from = 0;
    while let Some(at) = memchr::memchr(first, &hay[from..]).map(|at| at + from) {
        if hay[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl Known<'_> {
    /// Into `out`, the text a frame holds for `raw`: `raw` with the first span holding
    /// each known value replaced by its mark.
    fn mark(&self, raw: &str, out: &mut String) {
        out.clear();
        if memchr::memchr3(MARKS[0], MARKS[1], MARKS[2], raw.as_bytes()).is_some() {
            out.push(char::from(VERBATIM));
            out.push_str(raw);
            return;
        }
        let mut time = [0u8; 24];
        let values = [Some(self.id), self.request_id, api_time(self.ts_ms, &mut time)];
        // Each value's first span that overlaps no earlier value's (the same id can be
        // both the event's and its request's), in the text's order.
        let mut spans: [Option<(usize, usize, u8)>; 3] = [None; 3];
        for (i, value) in values.iter().enumerate() {
            let Some(v) = value.filter(|v| !v.is_empty()) else { continue };
            let mut from = 0;
            while let Some(at) = find(&raw.as_bytes()[from..], v.as_bytes()).map(|at| at + from) {
                let end = at + v.len();
                match spans.iter().flatten().find(|&&(a, e, _)| at < e && a < end) {
                    Some(&(_, e, _)) => from = e,
                    None => {
                        spans[i] = Some((at, end, MARKS[i]));
                        break;
                    }
                }
            }
        }
        spans.sort_unstable_by_key(|s| s.map_or(usize::MAX, |(at, ..)| at));
        out.push(char::from(MARKED));
        let mut done = 0;
        for (at, end, mark) in spans.into_iter().flatten() {
            // Both are valid UTF-8, so a match starts and ends on a character's bounds.
            out.push_str(&raw[done..at]);
            out.push(char::from(mark));
            done = end;
        }
        out.push_str(&raw[done..]);
    }

    /// The original text of a frame's `text`, which [`Known::mark`] made with these
    /// values (or an older tfaudit left as it was).
    fn unmark(&self, mut text: Vec<u8>) -> Result<String, BoxError> {
        let body = match text.first() {
            Some(&MARKED) => &text[1..],
            Some(&VERBATIM) => {
                text.remove(0);
                return Ok(String::from_utf8(text)?);
            }
            _ => return Ok(String::from_utf8(text)?),
        };
        let mut time = [0u8; 24];
        let values = [Some(self.id), self.request_id, api_time(self.ts_ms, &mut time)];
        let mut out = Vec::with_capacity(body.len() + 100);
        let mut rest = body;
        while let Some(at) = memchr::memchr3(MARKS[0], MARKS[1], MARKS[2], rest) {
            out.extend_from_slice(&rest[..at]);
            let value = values[usize::from(rest[at] - MARKS[0])]
                .filter(|v| !v.is_empty())
                .ok_or("a compressed event's id, request id or time is missing from its row")?;
            out.extend_from_slice(value.as_bytes());
            rest = &rest[at + 1..];
        }
        out.extend_from_slice(rest);
        Ok(String::from_utf8(out)?)
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
        Ok(bytes)
    }

    /// Loads the newest dictionary for writing, if there is one and it is not loaded.
    fn load_writer(&self, conn: &Connection, slot: &mut Option<Writer>) -> rusqlite::Result<()> {
        let newest: Option<(i64, u64, bool)> = conn
            .query_row("SELECT id, trained_at, marked FROM dictionaries ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0), r.get(2)?))
            })
            .optional()?;
        if let Some((id, trained_at, marked)) = newest
            && slot.as_ref().is_none_or(|w| w.dict != id)
        {
            let bytes = dictionary(conn, id)?.unwrap_or_default();
            let mut compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, &bytes).map_err(io_err)?;
            // A frame need not name its dictionary (4 bytes an event): the row's `dict`
            // does. Frames that do name it, written before, read the same.
            compressor.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false)).map_err(io_err)?;
            *slot = Some(Writer { dict: id, trained_at, marked, compressor, frame: Vec::new(), text: String::new() });
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
            Some(w) => events >= w.trained_at.saturating_mul(RETRAIN_FACTOR) || !w.marked,
        };
        if !due {
            return Ok(());
        }
        // Trained on the text as frames hold it: with its known values marked.
        let mut samples = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT tfaudit_raw(raw, dict, id, request_id, ts_ms), id, request_id, ts_ms
                 FROM events ORDER BY seq DESC LIMIT ?1",
            )?;
            let mut rows = stmt.query([SAMPLES])?;
            while let Some(r) = rows.next()? {
                let raw = r.get_ref(0)?.as_str()?;
                let id = crate::names::id_at(r, 1)?.unwrap_or_default();
                let request_id = crate::names::id_at(r, 2)?;
                let known = Known { id: &id, request_id: request_id.as_deref(), ts_ms: r.get(3)? };
                let mut text = String::new();
                known.mark(raw, &mut text);
                samples.push(text.into_bytes());
            }
        }
        // Training can fail on samples too alike or too few; the archive then goes on
        // with the dictionary it has (or none) and tries again at the next size.
        match zstd::dict::from_samples(&samples, DICT_BYTES) {
            Ok(bytes) => {
                conn.execute(
                    "INSERT INTO dictionaries (trained_ms, trained_at, samples, bytes, marked) VALUES (?1, ?2, ?3, ?4, 1)",
                    params![
                        jiff::Timestamp::now().as_millisecond(),
                        i64::try_from(events).unwrap_or(i64::MAX),
                        samples.len() as i64,
                        bytes
                    ],
                )?;
                tracing::debug!(events, bytes = bytes.len(), "trained a compression dictionary");
                if slot.as_ref().is_some_and(|w| !w.marked) {
                    tracing::info!(
                        "events are now compressed without the id, request id and time their row keeps; \
                         `tfaudit compact` compresses the events stored before this way too (about half their size)"
                    );
                }
                self.load_writer(conn, &mut slot)?;
            }
            Err(e) => {
                tracing::debug!("no compression dictionary from {} events: {e}", samples.len());
                if let Some(w) = slot.as_mut() {
                    w.trained_at = events;
                    w.marked = true;
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

/// Compresses up to `batch` rows with `seq` after `after` that are kept as text, or as
/// frames from before marks (their dictionary trained on unmarked text), oldest first
/// (in `conn`'s transaction): how many, and the last `seq` reached. Nothing to do while
/// the archive is too small for a dictionary.
pub fn compact(conn: &Connection, codec: &Codec, events: u64, after: i64, batch: u64) -> rusqlite::Result<(u64, i64)> {
    codec.prepare_writes(conn, events)?;
    let Some(writing) = codec.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|w| w.dict)
    else {
        return Ok((0, after));
    };
    type Row = (i64, String, Option<String>, Option<String>, i64);
    // Frames made with the dictionary being written with are left (were training one
    // on marked text to fail, it would be that one).
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT seq, tfaudit_raw(raw, dict, id, request_id, ts_ms), id, request_id, ts_ms FROM events
             WHERE seq > ?1 AND (dict IS NULL OR (dict <> ?3 AND dict IN (SELECT id FROM dictionaries WHERE NOT marked)))
             ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after, i64::try_from(batch).unwrap_or(i64::MAX), writing], |r| {
            Ok((r.get(0)?, r.get(1)?, crate::names::id_at(r, 2)?, crate::names::id_at(r, 3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut update = conn.prepare_cached("UPDATE events SET raw = ?1, dict = ?2 WHERE seq = ?3")?;
        for (seq, raw, id, request_id, ts_ms) in &rows {
            let known =
                Known { id: id.as_deref().unwrap_or_default(), request_id: request_id.as_deref(), ts_ms: *ts_ms };
            codec.with_stored(raw, known, |value, dict| update.execute(params![value, dict, seq]))?;
        }
    }
    Ok((rows.len() as u64, rows.last().map_or(after, |(seq, ..)| *seq)))
}

fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Adds `tfaudit_raw(raw, dict, id, request_id, ts_ms)` to a connection: a row's
/// original text.
pub fn register(conn: &Connection, codec: Arc<Codec>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("tfaudit_raw", 5, flags, move |ctx| {
        let damaged = || rusqlite::Error::UserFunctionError("an event's stored form is damaged".into());
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
                let text = codec.decompress(&conn, d, b).map_err(rusqlite::Error::UserFunctionError)?;
                let (mut id, mut request_id) = ([0; 36], [0; 36]);
                let known = Known {
                    id: crate::names::id_text(ctx.get_raw(2), &mut id).map_err(|_| damaged())?.unwrap_or_default(),
                    request_id: crate::names::id_text(ctx.get_raw(3), &mut request_id).map_err(|_| damaged())?,
                    ts_ms: ctx.get(4)?,
                };
                known.unmark(text).map_err(rusqlite::Error::UserFunctionError)
            }
            _ => Err(damaged()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "ae66e491-db59-457c-8445-9c908ee726ae";
    const REQUEST: &str = "4df584d4-7e2a-01e6-6cc0-4adbefa020e6";
    /// 2020-06-30T17:52:46.000Z
    const TS: i64 = 1_593_539_566_000;

    fn known(request_id: Option<&str>) -> Known<'_> {
        Known { id: ID, request_id, ts_ms: TS }
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
            r#"{{"id":"{ID}","timestamp":"2020-06-30T17:52:46.000Z","request":{{"id":"{REQUEST}"}},"meta":{{"of":"{ID}"}}}}"#
        );
        let text = round_trip(known(Some(REQUEST)), &raw);
        assert_eq!(
            text,
            "\0{\"id\":\"\u{1}\",\"timestamp\":\"\u{3}\",\"request\":{\"id\":\"\u{2}\"},\"meta\":{\"of\":\"ae66e491-db59-457c-8445-9c908ee726ae\"}}",
            "the first span of each is marked, a second left"
        );
        // Read with other values, the text is another: the row's values are bound.
        let other = Known { id: REQUEST, ..known(Some(REQUEST)) };
        assert_ne!(other.unmark(text.into_bytes()).unwrap(), raw);
    }

    #[test]
    fn values_not_found_as_they_are_stay_in_the_text() {
        // A time in another form, an id escaped, a request id null, the same id twice.
        for (k, raw) in [
            (known(None), r#"{"id":"\u0061e66e491-db59-457c-8445-9c908ee726ae","timestamp":"2020-06-30T17:52:46Z"}"#),
            (known(None), r#"{"request":{"id":null},"timestamp":"2020-06-30T17:52:46.000000Z"}"#),
            (
                Known { id: ID, request_id: Some(ID), ts_ms: TS },
                &format!(r#"{{"id":"{ID}","request":{{"id":"{ID}"}}}}"#),
            ),
            (Known { id: "", request_id: Some(""), ts_ms: i64::MIN }, r#"{"id":""}"#),
        ] {
            round_trip(k, raw);
        }
    }

    #[test]
    fn text_holding_a_mark_is_kept_as_it_is() {
        for raw in ["{\"a\":\"\u{1}\"}", "{\u{3}}"] {
            assert_eq!(round_trip(known(Some(REQUEST)), raw), format!("\u{4}{raw}"), "{raw:?}");
        }
        // Text starting as a frame's text does is marked as any other.
        for raw in ["\0{}", "\u{4}{}"] {
            assert_eq!(round_trip(known(Some(REQUEST)), raw), format!("\0{raw}"), "{raw:?}");
        }
        // And text as written before marks reads as it is.
        assert_eq!(known(None).unmark(br#"{"id":"x"}"#.to_vec()).unwrap(), r#"{"id":"x"}"#);
    }

    #[test]
    fn a_mark_without_its_value_is_an_error() {
        let text = round_trip(known(Some(REQUEST)), &format!(r#"{{"request":"{REQUEST}"}}"#));
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
                    "[\\x00-\\x05a-f0-9\"{}:,-]{0,12}",
                    ".{0,8}",
                ],
                0..8,
            ),
            id in prop_oneof![Just(ID.to_owned()), "[a-f0-9-]{0,6}"],
            request_id in proptest::option::of(prop_oneof![Just(REQUEST.to_owned()), Just(ID.to_owned()), "[a-f0-9-]{0,4}"]),
            ts_ms in prop_oneof![Just(TS), any::<i64>()],
        ) {
            let raw = parts.concat();
            round_trip(Known { id: &id, request_id: request_id.as_deref(), ts_ms }, &raw);
        }
    }

    proptest! {
        /// Short needles and long ones (past 64 bytes) are found where they first are.
        #[test]
        fn find_finds_the_first(hay in "[ab]{0,200}", needle in prop_oneof!["[ab]{1,4}", "[ab]{60,70}"]) {
            let expected = hay.as_bytes().windows(needle.len()).position(|w| w == needle.as_bytes());
            prop_assert_eq!(find(hay.as_bytes(), needle.as_bytes()), expected);
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
