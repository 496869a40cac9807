//! Showing events to people and programs. Event strings are untrusted: on a terminal
//! control and bidi characters are shown escaped whatever the format, in CSV a leading
//! formula character is neutralised, in JSON they are JSON-escaped by construction.
//!
//! Every command writes to standard output through [`Stdout`]: a write error surfaces
//! as an `io::Error`, and [`Failure`] turns a reader that went away
//! (`tfaudit … | head`) into a quiet exit 0, whatever the command.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

use comfy_table::{ContentArrangement, Table, presets};
use tfaudit_api::AuditEvent;
use tfaudit_store::{NameBook, SourceStatus, StoredEvent, Summary};

use crate::failure::Failure;

/// Standard output, and whether a person is reading it on a terminal. Not locked
/// between writes: the `stdout` alert destination writes to it too.
pub struct Stdout {
    out: io::Stdout,
    pub terminal: bool,
}

impl Stdout {
    #[must_use]
    pub fn new() -> Self {
        let out = io::stdout();
        Self { terminal: out.is_terminal(), out }
    }

    /// Writes `value` as pretty JSON and a newline; on a terminal, with what the terminal
    /// would obey escaped (JSON escapes control characters below U+0020 only).
    pub fn json(&mut self, value: &impl serde::Serialize) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Internal(e.to_string()))?;
        writeln!(self.out, "{}", on_screen(&text, self.terminal, true))?;
        Ok(())
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Text as it may be shown: on a terminal with control and bidi characters escaped
/// (`keep_newlines` for text whose lines are its structure), elsewhere exactly as is.
/// The one escaping step of every format that can reach a terminal.
#[must_use]
pub fn on_screen(s: &str, terminal: bool, keep_newlines: bool) -> Cow<'_, str> {
    if terminal { tfaudit_api::event::escape_invisible(s, keep_newlines) } else { Cow::Borrowed(s) }
}

/// Escapes what a terminal would interpret or what could disguise text (escape
/// sequences, carriage returns, bidi overrides): see
/// [`tfaudit_api::event::escape_invisible`].
#[must_use]
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    on_screen(s, true, false)
}

/// Neutralises spreadsheet formulas: a cell starting with `=`, `+`, `-`, `@`, a tab or
/// a carriage return gets a leading `'`, as OWASP recommends.
#[must_use]
pub fn csv_safe(s: &str) -> Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '\u{FF1D}' | '\u{FF0B}' | '\u{FF0D}' | '\u{FF20}') => {
            Cow::Owned(format!("'{s}"))
        }
        _ => Cow::Borrowed(s),
    }
}

/// `1234567` as `1,234,567`, as every output writes counts.
pub use tfaudit_model::count;

pub fn time(t: jiff::Timestamp) -> String {
    match ZONE.get() {
        Some(zone) if zone.iana_name() != Some("UTC") => {
            t.to_zoned_datetime(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        }
        _ => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}

/// The zone people read times in (`--tz`, `[display] timezone`); UTC until set.
static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();

/// Sets the zone times are shown in, once, before any output.
pub fn set_zone(zone: jiff::tz::TimeZone) {
    let _ = ZONE.set(zone);
}

/// The zone times are shown in, and dates without an offset are read in.
#[must_use]
pub fn zone() -> jiff::tz::TimeZone {
    ZONE.get().cloned().unwrap_or(jiff::tz::TimeZone::UTC)
}

fn time_opt(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// Who did it, for a table: `name (id)` (the event's description, else the
/// catalogue's name), else what is known; impersonation shown.
fn actor(e: &AuditEvent, book: &NameBook) -> String {
    let who = match e.accessor_id.as_deref() {
        // The event's own description is what the actor was called then; the
        // catalogue's name serves when the event has none.
        Some(id) => tfaudit_model::name_and_id(e.auth_description.as_deref().or(book.name(id)), id),
        None => e
            .auth_description
            .as_deref()
            .unwrap_or(match e.auth_type.as_deref() {
                Some("System") => "(system)",
                _ => "(unknown)",
            })
            .to_owned(),
    };
    match &e.impersonator_id {
        Some(by) => format!("{who} (impersonated by {})", book.show(by)),
        None => who,
    }
}

/// The event's original JSON, compacted, with the names of the ids it refers to
/// after its own fields as `"names":{id:name}`: the event's fields stay exactly as
/// the server sent them.
fn with_names(compact: &str, names: &[(&str, &str)]) -> String {
    let body = compact.trim_end();
    let Some(open) = body.strip_suffix('}') else { return compact.to_owned() };
    let map: serde_json::Map<String, serde_json::Value> =
        names.iter().map(|(id, name)| ((*id).to_owned(), serde_json::Value::String((*name).to_owned()))).collect();
    let comma = if open.trim_end().ends_with('{') { "" } else { "," };
    format!("{open}{comma}\"names\":{}}}", serde_json::Value::Object(map))
}

/// Writes events in one of the query/export formats. On a terminal every format shows
/// untrusted strings escaped; to a pipe or a file, json, jsonl and csv are exact.
pub enum EventWriter<W: Write> {
    Table {
        out: W,
        table: Table,
        rows: u64,
        book: NameBook,
    },
    /// A JSON array of the original events, each with the names of the ids it refers
    /// to under `names` (when any are known).
    Json {
        out: W,
        first: bool,
        terminal: bool,
        book: NameBook,
    },
    Jsonl {
        out: W,
        terminal: bool,
    },
    Csv {
        out: csv::Writer<W>,
        terminal: bool,
    },
    /// A line of plain words per event: time, explanation, organization; always
    /// escaped (it is text for people).
    Explain {
        out: W,
        rows: u64,
        book: NameBook,
    },
}

const CSV_HEADER: [&str; 13] = [
    "timestamp",
    "id",
    "organization",
    "organization_id",
    "auth_type",
    "accessor_id",
    "auth_description",
    "impersonator_id",
    "request_id",
    "resource_type",
    "resource_action",
    "resource_id",
    "meta",
];

impl<W: Write> EventWriter<W> {
    pub fn table(out: W, book: NameBook) -> Self {
        let mut table = Table::new();
        table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Dynamic);
        let zone = zone();
        table.set_header([
            format!("TIME ({})", zone.iana_name().unwrap_or("local")),
            "ACTOR".into(),
            "TYPE".into(),
            "ACTION".into(),
            "RESOURCE".into(),
            "ORG".into(),
        ]);
        Self::Table { out, table, rows: 0, book }
    }

    pub fn explain(out: W, book: NameBook) -> Self {
        Self::Explain { out, rows: 0, book }
    }

    pub fn json(out: W, terminal: bool, book: NameBook) -> Self {
        Self::Json { out, first: true, terminal, book }
    }

    pub fn jsonl(out: W, terminal: bool) -> Self {
        Self::Jsonl { out, terminal }
    }

    pub fn csv(out: W, terminal: bool) -> io::Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(CSV_HEADER).map_err(csv_io)?;
        Ok(Self::Csv { out, terminal })
    }

    pub fn write(&mut self, stored: &StoredEvent) -> io::Result<()> {
        let e = &stored.event;
        match self {
            Self::Table { table, rows, book, .. } => {
                let safe = |s: Option<&str>| terminal_safe(s.unwrap_or("-")).into_owned();
                table.add_row([
                    time(e.timestamp),
                    terminal_safe(&actor(e, book)).into_owned(),
                    safe(e.resource_type.as_deref()),
                    safe(e.resource_action.as_deref()),
                    safe(e.resource_id.as_deref().map(|id| book.show(id)).as_deref()),
                    terminal_safe(&stored.source).into_owned(),
                ]);
                *rows += 1;
                Ok(())
            }
            Self::Explain { out, rows, book } => {
                *rows += 1;
                let names = |id: &str| book.name(id).map(str::to_owned);
                writeln!(
                    out,
                    "{}  {}  [{}]",
                    time(e.timestamp),
                    terminal_safe(&tfaudit_model::explain_with(e, &names)),
                    terminal_safe(&stored.source)
                )
            }
            Self::Json { out, first, terminal, book } => {
                out.write_all(if *first { b"[\n" } else { b",\n" })?;
                *first = false;
                let compact = tfaudit_api::event::compact_json(&e.raw);
                let names = book.of_event(e);
                let text = if names.is_empty() { compact } else { Cow::Owned(with_names(&compact, &names)) };
                out.write_all(on_screen(&text, *terminal, false).as_bytes())
            }
            Self::Jsonl { out, terminal } => {
                out.write_all(on_screen(&tfaudit_api::event::compact_json(&e.raw), *terminal, false).as_bytes())?;
                out.write_all(b"\n")
            }
            Self::Csv { out, terminal } => {
                let meta = serde_json::from_str::<serde_json::Value>(&e.raw)
                    .ok()
                    .and_then(|v| {
                        v.get("resource").and_then(|r| r.get("meta")).filter(|m| !m.is_null()).map(ToString::to_string)
                    })
                    .unwrap_or_default();
                let ts = time(e.timestamp);
                let cells = [
                    Some(ts.as_str()),
                    Some(e.id.as_str()),
                    Some(stored.source.as_str()),
                    e.organization_id.as_deref(),
                    e.auth_type.as_deref(),
                    e.accessor_id.as_deref(),
                    e.auth_description.as_deref(),
                    e.impersonator_id.as_deref(),
                    e.request_id.as_deref(),
                    e.resource_type.as_deref(),
                    e.resource_action.as_deref(),
                    e.resource_id.as_deref(),
                    Some(meta.as_str()),
                ];
                out.write_record(
                    cells.iter().map(|c| csv_safe(&on_screen(c.unwrap_or(""), *terminal, false)).into_owned()),
                )
                .map_err(csv_io)
            }
        }
    }

    pub fn finish(self) -> io::Result<()> {
        match self {
            Self::Table { mut out, table, rows, .. } => {
                if rows == 0 {
                    writeln!(out, "no matching events")
                } else {
                    writeln!(out, "{table}")
                }
            }
            Self::Json { mut out, first, .. } => {
                out.write_all(if first { b"[]\n" } else { b"\n]\n" })?;
                out.flush()
            }
            Self::Jsonl { mut out, .. } => out.flush(),
            Self::Csv { mut out, .. } => out.flush(),
            Self::Explain { mut out, rows, .. } => {
                if rows == 0 {
                    writeln!(out, "no matching events")?;
                }
                out.flush()
            }
        }
    }
}

/// The write error under a CSV error, so that a closed pipe is still seen as one.
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// The summary as text; `chart` draws bars (on a terminal).
pub fn summary_text(
    s: &Summary,
    names: &std::collections::BTreeMap<String, String>,
    chart: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let range = match (s.since, s.until) {
        (Some(a), Some(b)) => format!("{} to {}", time(a), time(b)),
        (Some(a), None) => format!("since {}", time(a)),
        (None, Some(b)) => format!("before {}", time(b)),
        (None, None) => "all time".to_owned(),
    };
    writeln!(out, "{} events, {range}", count(s.total))?;
    if s.total == 0 {
        return Ok(());
    }
    writeln!(out, "\nBy type and action")?;
    let width = s.by_kind.iter().map(|k| k.resource_type.len() + k.action.len() + 1).max().unwrap_or(0).min(50);
    for k in &s.by_kind {
        let name = terminal_safe(&format!("{}.{}", k.resource_type, k.action)).into_owned();
        writeln!(out, "  {name:<width$}  {:>10}", count(k.count))?;
    }
    writeln!(out, "\nTop actors")?;
    for a in &s.top_actors {
        let name = match a.accessor_id.as_str() {
            "" => "(system)".to_owned(),
            id => tfaudit_model::name_and_id(a.description.as_deref().or(names.get(id).map(String::as_str)), id),
        };
        writeln!(out, "  {:<48}  {:>10}", terminal_safe(&name), count(a.count))?;
    }
    writeln!(out, "\nPer day (UTC)")?;
    let max = s.per_day.iter().map(|d| d.count).max().unwrap_or(1).max(1);
    for d in &s.per_day {
        if chart {
            let bar = "█".repeat(((d.count * 40).div_ceil(max)) as usize);
            writeln!(out, "  {}  {:>8}  {bar}", d.day, count(d.count))?;
        } else {
            writeln!(out, "  {}  {:>8}", d.day, count(d.count))?;
        }
    }
    Ok(())
}

/// `tfaudit status` as text.
/// `listed`: when each organization's listings were last read (`enrich_token`).
pub fn status_text(
    sources: &[SourceStatus],
    listed: &std::collections::BTreeMap<String, jiff::Timestamp>,
    out: &mut dyn Write,
) -> io::Result<()> {
    if sources.is_empty() {
        return writeln!(out, "the archive is empty; run `tfaudit sync`");
    }
    for (i, s) in sources.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let org = s.organization_id.as_deref().map(|o| format!(" ({})", terminal_safe(o))).unwrap_or_default();
        writeln!(out, "{}{org}  {}", terminal_safe(&s.name), terminal_safe(&s.address))?;
        writeln!(
            out,
            "  events      {}  (oldest {}, newest {})",
            count(s.events),
            time_opt(s.oldest),
            time_opt(s.newest)
        )?;
        writeln!(out, "  cursor      {}", s.cursor.map_or_else(|| "none yet (no complete sync)".to_owned(), time))?;
        match &s.last_run {
            None => writeln!(out, "  last sync   never")?,
            Some(r) => {
                let result = match &r.result {
                    None => "did not finish (running, or the process died; the next run resumes)".to_owned(),
                    Some(tfaudit_store::RunResult::Failed(e)) => {
                        format!("failed: {}", terminal_safe(e))
                    }
                    Some(other) => other.label().to_owned(),
                };
                writeln!(
                    out,
                    "  last sync   {} {result}; {} pages, {} requests ({} retries), {} new events, {} already stored",
                    time(r.started_at),
                    count(r.tally.pages),
                    count(r.tally.requests),
                    count(r.tally.retries),
                    count(r.tally.new_events),
                    count(r.tally.duplicates)
                )?;
            }
        }
        writeln!(out, "  last ok     {}", s.last_success.map_or_else(|| "never".to_owned(), time))?;
        match &s.lease {
            Some(l) => writeln!(out, "  synced by   {} since {}", terminal_safe(&l.holder), time(l.since))?,
            None => writeln!(out, "  synced by   no instance now")?,
        }
        if let Some(w) = &s.walk_in_progress {
            writeln!(
                out,
                "  unfinished  a page walk started {} stopped before page {}; the next sync resumes it",
                time(w.started_at),
                w.next_page
            )?;
        }
        if s.gaps.is_empty() {
            writeln!(out, "  gaps        none")?;
        } else {
            for g in &s.gaps {
                writeln!(
                    out,
                    "  GAP         events between {} and {} may be lost (found {})",
                    time(g.from),
                    time(g.to),
                    time(g.detected_at)
                )?;
            }
        }
        match listed.get(&s.name) {
            Some(t) => writeln!(out, "  names       listings read {} (enrich_token)", time(*t))?,
            None => writeln!(out, "  names       from events only (no listing read; see enrich_token)")?,
        }
        if s.rejects > 0 {
            writeln!(
                out,
                "  rejects     {} elements that were not events (see `tfaudit status --rejects`)",
                count(s.rejects)
            )?;
        } else {
            writeln!(out, "  rejects     none")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_what_a_terminal_would_obey() {
        assert_eq!(terminal_safe("plain ünïcödé 日本"), "plain ünïcödé 日本");
        assert_eq!(terminal_safe("\u{1b}[31mred\u{7}"), "\\u{1b}[31mred\\u{7}");
        assert_eq!(terminal_safe("a\nb\r"), "a\\nb\\r");
        assert_eq!(terminal_safe("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(terminal_safe("\u{9b}31m"), "\\u{9b}31m");
    }

    #[test]
    fn csv_neutralises_formulas() {
        for f in ["=1+1", "+cmd", "-2+3", "@SUM(1)", "\t=x", "\r=x"] {
            assert!(csv_safe(f).starts_with('\''), "{f}");
        }
        assert_eq!(csv_safe("alice"), "alice");
        assert_eq!(csv_safe("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z");
    }
}
