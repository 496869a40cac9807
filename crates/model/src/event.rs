//! One audit event.
//!
//! The API's event shape is an open set: new resource types, actions, `meta` payloads
//! and fields appear over time, and documented fields arrive with other types than the
//! docs say (`"version":"0"`). So the few fields tfaudit indexes are read leniently,
//! and the event's original JSON text is kept byte for byte in [`AuditEvent::raw`].
//! Only two things make an event unusable: it is not a JSON object, or it has no `id`
//! or no readable `timestamp`. Those become [`RejectedEvent`]s, kept with their text.

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::names::{NameKind, Sighting};

/// A parsed audit event: the indexed fields, and the original JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub id: String,
    pub timestamp: Timestamp,
    pub organization_id: Option<String>,
    pub auth_type: Option<String>,
    pub accessor_id: Option<String>,
    pub auth_description: Option<String>,
    pub impersonator_id: Option<String>,
    pub request_id: Option<String>,
    pub resource_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_action: Option<String>,
    /// The event exactly as the server sent it.
    pub raw: String,
    /// Names the event gives ids (its accessor's, and those inside `resource.meta`), as
    /// parsed from the server's page; not kept as such, so empty for an event read back
    /// from the archive (its raw bytes say the same).
    #[serde(skip)]
    pub named: Sightings,
}

/// The names an event gives, as parsed from its page. Its raw text says the same, so
/// they never decide whether two events are equal (an event read back from the
/// archive has none parsed).
#[derive(Debug, Clone, Default)]
pub struct Sightings(pub Vec<Sighting>);

impl PartialEq for Sightings {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Sightings {}

impl std::ops::Deref for Sightings {
    type Target = [Sighting];
    fn deref(&self) -> &[Sighting] {
        &self.0
    }
}

/// An element of a page's `data` array that cannot be stored as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEvent {
    /// The element's original JSON text.
    pub raw: String,
    /// Why it was rejected, in one line.
    pub reason: String,
}

/// The longest reason kept: a reason can quote the element, which the server wrote.
const MAX_REASON_CHARS: usize = 300;

impl RejectedEvent {
    /// A rejected element; its reason is stored, so it is redacted and bounded.
    #[must_use]
    pub fn new(raw: String, reason: &str) -> Self {
        Self { raw, reason: crate::redact::redact_bounded(reason, MAX_REASON_CHARS) }
    }
}

impl AuditEvent {
    /// Whether the event is about a run that destroys (see [`is_destroy_run`]).
    #[must_use]
    pub fn is_destroy_run(&self) -> bool {
        is_destroy_run(&self.raw)
    }

    /// Parses one element of a page's `data` array.
    ///
    /// # Errors
    /// A [`RejectedEvent`] carrying the original text when the element is not an
    /// object, has no usable `id`, or has no RFC 3339 `timestamp`.
    pub fn parse(raw: &RawValue) -> Result<Self, RejectedEvent> {
        let mut event = Self::parse_fields(raw.get())?;
        event.raw = raw.get().to_owned();
        Ok(event)
    }

    /// As [`AuditEvent::parse`], for an element's text not yet read as JSON (a page's
    /// element), kept as the event's own: a sync's events then cost no copy of their
    /// bytes, and their text is read once.
    ///
    /// # Errors
    /// As [`AuditEvent::parse`], and when the text is not JSON.
    pub fn parse_owned(raw: String) -> Result<Self, RejectedEvent> {
        let mut event = Self::parse_fields(&raw)?;
        event.raw = raw;
        Ok(event)
    }

    /// An event read from the start of `text`, a page's element whose end is not yet
    /// known: the event and the length of its text, when that text is an object that
    /// reads as an event. `None` for anything else; the element's end is then found on
    /// its structure and its text read with [`AuditEvent::parse_owned`], which gives the
    /// reason. Read this way, a page's events are read once, rather than first scanned
    /// for their ends and then read.
    #[must_use]
    pub fn parse_prefix(text: &str) -> Option<(Self, usize)> {
        if !text.starts_with('{') {
            return None;
        }
        // A stream of values, which says where the first one ends.
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<Read<'_>>();
        let Read(mut fields) = values.next()?.ok()?;
        let mut event = Self::from_fields(&mut fields).ok()?;
        let len = values.byte_offset();
        event.raw = text.get(..len)?.to_owned();
        Some((event, len))
    }

    /// Every field but `raw`, which is left empty.
    fn parse_fields(text: &str) -> Result<Self, RejectedEvent> {
        let reject = |reason: String| RejectedEvent::new(text.to_owned(), &reason);
        if !text.trim_start().starts_with('{') {
            return Err(reject("not a JSON object".into()));
        }
        let Read(mut fields) =
            serde_json::from_str(text).map_err(|e| reject(format!("unreadable event object: {e}")))?;
        Self::from_fields(&mut fields).map_err(reject)
    }

    /// The event the fields read make, but for `raw`; why there is none.
    fn from_fields(fields: &mut Fields<'_>) -> Result<Self, String> {
        let [id, timestamp] = std::mem::take(&mut fields.event);
        let id = match id.0 {
            Some(id) if !id.trim().is_empty() => id.into_owned(),
            _ => return Err("no \"id\"".into()),
        };
        let timestamp = match timestamp.0 {
            None => return Err("no \"timestamp\"".into()),
            Some(ts) => crate::time::parse_timestamp(&ts)
                .map_err(|_| format!("\"timestamp\" {ts:?} is not an RFC 3339 time"))?,
        };
        let named = Sightings(sightings(fields));
        let [accessor_id, description, auth_type, impersonator_id, organization_id] = std::mem::take(&mut fields.auth);
        let [request_id] = std::mem::take(&mut fields.request);
        let [resource_id, resource_type, resource_action] = std::mem::take(&mut fields.resource);
        Ok(Self {
            id,
            timestamp,
            organization_id: organization_id.owned(),
            auth_type: auth_type.owned(),
            accessor_id: accessor_id.owned(),
            auth_description: description.owned(),
            impersonator_id: impersonator_id.owned(),
            request_id: request_id.owned(),
            resource_id: resource_id.owned(),
            resource_type: resource_type.owned(),
            resource_action: resource_action.owned(),
            raw: String::new(),
            named,
        })
    }
}

/// Whether an event (its JSON text) is about a run that destroys: its
/// `resource.meta.run.is_destroy` is the JSON `true`. Where a key repeats, the last one
/// counts, as for a reader that keeps one value per key. Only text that holds the key
/// `"is_destroy"` as written, followed by the value `true`, is read at all: a run's
/// events all hold the key, most with `false`, and reading each of them cost a sync 2%
/// of its CPU. An event whose text is no JSON object says no.
#[must_use]
pub fn is_destroy_run(raw: &str) -> bool {
    const PATH: [&str; 4] = ["resource", "meta", "run", "is_destroy"];
    const KEY: &str = "\"is_destroy\"";
    const SPACE: [char; 4] = [' ', '\t', '\n', '\r'];
    // One searcher for every event: building one for each cost as much as the search.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let maybe = FINDER.find_iter(raw.as_bytes()).any(|at| {
        raw[at + KEY.len()..]
            .trim_start_matches(SPACE)
            .strip_prefix(':')
            .is_some_and(|value| value.trim_start_matches(SPACE).starts_with("true"))
    });
    if !maybe {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    de::DeserializeSeed::deserialize(Pointer(&PATH), &mut de).is_ok_and(|found| found) && de.end().is_ok()
}

/// Follows object keys down a path and says whether the value there is `true`;
/// everything else in the text is skipped, not built.
struct Pointer<'p>(&'p [&'p str]);

impl<'de> de::DeserializeSeed<'de> for Pointer<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pointer<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v && self.0.is_empty())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match self.0.split_first() {
                Some((first, rest)) if key.0.as_deref() == Some(*first) => {
                    found = map.next_value_seed(Pointer(rest))?
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// What an event says about names: who its accessor is (a user's or team's
/// `auth.description`), and the named objects inside `resource.meta`.
fn sightings(fields: &Fields<'_>) -> Vec<Sighting> {
    let mut out = Vec::new();
    let [accessor, description, ..] = &fields.auth;
    if let (Some(id), Some(name)) = (accessor.0.as_deref(), description.0.as_deref())
        && let Some(kind @ (NameKind::User | NameKind::Team)) = NameKind::of_id(id)
        && let Some(s) = Sighting::new(id, kind, name, None)
    {
        out.push(s);
    }
    for ([id, name, username, email], kind) in fields.named.iter().zip(NAMED_KINDS) {
        let Some(id) = id.0.as_deref() else { continue };
        // A user is named by its username; everything else by its name.
        if let Some(name) = username.0.as_deref().or(name.0.as_deref())
            && let Some(s) = Sighting::new(id, kind, name, email.0.as_deref())
        {
            out.push(s);
        }
    }
    out
}

/// The fields of an event that are read, filled in place as its keys are met: each
/// level's keys are [`Level::keys`], and each array here is in that order. Read into
/// one value rather than into a struct for each object (serde's derive, whose nested
/// structs were moved about as each was built): ×0.96 a sync's CPU.
#[derive(Default)]
struct Fields<'a> {
    /// `id`, `timestamp`.
    event: [Text<'a>; 2],
    /// `auth`'s `accessor_id`, `description`, `type`, `impersonator_id`, `organization_id`.
    auth: [Text<'a>; 5],
    /// `request`'s `id`.
    request: [Text<'a>; 1],
    /// `resource`'s `id`, `type`, `action`.
    resource: [Text<'a>; 3],
    /// For each object `resource.meta` may name ([`NAMED_KINDS`]): its `id`, `name`,
    /// `username`, `email`.
    named: [[Text<'a>; 4]; 8],
}

/// The objects in `resource.meta` that name something, in [`Level::Meta`]'s key order.
const NAMED_KINDS: [NameKind; 8] = [
    NameKind::Workspace,
    NameKind::Project,
    NameKind::Team,
    NameKind::User,
    NameKind::Stack,
    NameKind::PolicySet,
    NameKind::AgentPool,
    NameKind::VariableSet,
];

/// Where in an event an object is; the levels below are read only when the value
/// there is an object (any other JSON type reads as absent).
#[derive(Clone, Copy)]
enum Level {
    Event,
    Auth,
    Request,
    Resource,
    Meta,
    /// One of `resource.meta`'s objects, by its place in [`NAMED_KINDS`].
    Named(usize),
}

impl Level {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Event => &["id", "timestamp", "auth", "request", "resource"],
            Self::Auth => &["accessor_id", "description", "type", "impersonator_id", "organization_id"],
            Self::Request => &["id"],
            Self::Resource => &["id", "type", "action", "meta"],
            Self::Meta => &["workspace", "project", "team", "user", "stack", "policy_set", "agent_pool", "varset"],
            Self::Named(_) => &["id", "name", "username", "email"],
        }
    }

    /// Where the value of key `k` goes: a level below (read when it is an object), or
    /// a field's text.
    fn place<'f, 'a>(self, fields: &'f mut Fields<'a>, k: usize) -> Place<'f, 'a> {
        let text = match (self, k) {
            (Self::Event, 2) => return Place::Below(Self::Auth),
            (Self::Event, 3) => return Place::Below(Self::Request),
            (Self::Event, 4) => return Place::Below(Self::Resource),
            (Self::Resource, 3) => return Place::Below(Self::Meta),
            (Self::Meta, k) => return Place::Below(Self::Named(k)),
            (Self::Event, k) => &mut fields.event[k],
            (Self::Auth, k) => &mut fields.auth[k],
            (Self::Request, k) => &mut fields.request[k],
            (Self::Resource, k) => &mut fields.resource[k],
            (Self::Named(i), k) => &mut fields.named[i][k],
        };
        Place::Text(text)
    }
}

/// See [`Level::place`].
enum Place<'f, 'a> {
    Below(Level),
    Text(&'f mut Text<'a>),
}

/// An event's [`Fields`], read as a JSON value of its own.
struct Read<'a>(Fields<'a>);

impl<'de> Deserialize<'de> for Read<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut fields = Fields::default();
        de::DeserializeSeed::deserialize(ReadInto { level: Level::Event, fields: &mut fields }, d)?;
        Ok(Self(fields))
    }
}

/// Reads one object's keys of a [`Level`] into [`Fields`]; everything else is skipped,
/// and a key read twice is an error (as a struct's field is to serde).
struct ReadInto<'f, 'a> {
    level: Level,
    fields: &'f mut Fields<'a>,
}

impl<'de> de::DeserializeSeed<'de> for ReadInto<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ReadInto<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let keys = self.level.keys();
        let mut seen = 0u32;
        while let Some(key) = map.next_key_seed(Key(keys))? {
            let Some(k) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if seen & (1 << k) != 0 {
                return Err(de::Error::duplicate_field(keys[k]));
            }
            seen |= 1 << k;
            match self.level.place(self.fields, k) {
                Place::Below(level) => map.next_value_seed(ReadInto { level, fields: &mut *self.fields })?,
                Place::Text(text) => *text = map.next_value()?,
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// An object key: its place among the keys read, or `None` for one skipped.
struct Key(&'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

/// A field read as text whatever its JSON type: strings as they are, numbers and
/// booleans as written, null/objects/arrays as absent. A field of a surprising type
/// must never cost the whole event.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl Text<'_> {
    fn owned(self) -> Option<String> {
        self.0.map(Cow::into_owned)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Removes the whitespace between JSON tokens, leaving strings and numbers exactly as
/// written, so that an event a server pretty-printed fits on one JSON Lines line.
#[must_use]
pub fn compact_json(text: &str) -> Cow<'_, str> {
    if !text.contains(['\n', '\r', '\t', ' ']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Levels of nesting [`pretty_json`] indents; deeper values stay on one line, as sent.
pub const PRETTY_DEPTH: usize = 16;
/// Bytes of line breaks and indentation [`pretty_json`] adds at most; past them the
/// rest is the compact text as sent.
pub const PRETTY_BUDGET: usize = 256 * 1024;

/// Indents JSON for reading without re-serialising it: keys keep their order and
/// numbers and strings their exact text. Bounded, because an event is untrusted:
/// indenting every level of 10,000-deep JSON costs the square of its size; here the
/// output is at most the compact text plus [`PRETTY_BUDGET`].
#[must_use]
pub fn pretty_json(text: &str) -> String {
    let compact = compact_json(text);
    let mut out = String::with_capacity(compact.len() + compact.len().min(PRETTY_BUDGET));
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    // Bytes of line breaks and indentation so far, against the budget.
    let mut added = 0usize;
    let mut newline = |out: &mut String, depth: usize| {
        if depth <= PRETTY_DEPTH {
            out.push('\n');
            out.extend(std::iter::repeat_n("  ", depth));
            added += 1 + 2 * depth;
        }
        added > PRETTY_BUDGET
    };
    let mut spent = false;
    let mut chars = compact.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if spent {
            out.push_str(&compact[at..]);
            break;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if matches!(chars.peek(), Some((_, '}' | ']'))) {
                    out.push(chars.next().map_or(']', |(_, c)| c));
                } else {
                    depth += 1;
                    spent = newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                spent = newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                spent = newline(&mut out, depth);
            }
            ':' if depth <= PRETTY_DEPTH => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}

/// Makes invisible and text-reordering characters visible: C0/C1 controls (terminal
/// escape sequences, bell, carriage return, newline), DEL, and the Unicode bidi and
/// zero-width controls become `\u{..}` (newline `\n`, tab `\t`, CR `\r`), so that an
/// event string cannot disguise itself where it is shown. With `keep_newlines`,
/// newlines stay (for text laid out in lines, such as pretty-printed JSON).
#[must_use]
pub fn escape_invisible(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    fn risky(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
    }
    if !s.chars().any(|c| risky(c) && !(keep_newlines && c == '\n')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if risky(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_printing_keeps_order_and_text() {
        let raw = r#"{"z":1.50,"a":{"b":[1,{}],"c":"x, y: {z}"},"e":[]}"#;
        let pretty = pretty_json(raw);
        assert_eq!(
            pretty,
            "{\n  \"z\": 1.50,\n  \"a\": {\n    \"b\": [\n      1,\n      {}\n    ],\n    \"c\": \"x, y: {z}\"\n  },\n  \"e\": []\n}"
        );
        assert_eq!(compact_json(&pretty), raw);
    }

    #[test]
    fn deeply_nested_json_is_pretty_printed_within_bounds() {
        let depth = 10_000;
        let raw = format!(r#"{{"id":"x","meta":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
        let pretty = pretty_json(&raw);
        assert!(pretty.len() < raw.len() + 4 * PRETTY_DEPTH * PRETTY_DEPTH, "{} bytes", pretty.len());
        assert_eq!(compact_json(&pretty), raw, "the same JSON, deep levels on one line");
        // Wide as well as deep: the indentation budget bounds the rest.
        let wide = format!(
            "[{}]",
            vec![format!("{}1{}", "[".repeat(PRETTY_DEPTH), "]".repeat(PRETTY_DEPTH)); 5_000].join(",")
        );
        let pretty = pretty_json(&wide);
        assert!(pretty.len() <= wide.len() + PRETTY_BUDGET + 2 * PRETTY_DEPTH + 2, "{} bytes", pretty.len());
        assert_eq!(compact_json(&pretty), wide);
    }

    #[test]
    fn invisible_characters_are_shown() {
        assert_eq!(escape_invisible("plain ünïcödé 日本", false), "plain ünïcödé 日本");
        assert_eq!(escape_invisible("\u{1b}[31mred\u{7}", false), "\\u{1b}[31mred\\u{7}");
        assert_eq!(escape_invisible("a\nb\r", false), "a\\nb\\r");
        assert_eq!(escape_invisible("a\nb", true), "a\nb");
        assert_eq!(escape_invisible("\u{202e}gnp.exe", true), "\\u{202e}gnp.exe");
    }

    /// The sample event from HashiCorp's API documentation, verbatim.
    const DOCUMENTED_SAMPLE: &str = r#"{
  "id": "ae66e491-db59-457c-8445-9c908ee726ae",
  "version": "0",
  "type": "Resource",
  "timestamp": "2020-06-30T17:52:46.000Z",
  "auth": {
    "accessor_id": "user-MaPuLxAXvtq2PWTH",
    "description": "pveverka",
    "type": "Client",
    "impersonator_id": null,
    "organization_id": "org-AGLwRmx1snv34Yts"
  },
  "request": {
    "id": "4df584d4-7e2a-01e6-6cc0-4adbefa020e6"
  },
  "resource": {
    "id": "at-sjt83qTw3GZatuPm",
    "type": "authentication_token",
    "action": "create",
    "meta": null
  }
}"#;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn parses_the_documented_sample_verbatim() {
        let e = AuditEvent::parse(&raw(DOCUMENTED_SAMPLE)).unwrap();
        assert_eq!(e.id, "ae66e491-db59-457c-8445-9c908ee726ae");
        assert_eq!(e.timestamp.to_string(), "2020-06-30T17:52:46Z");
        assert_eq!(e.organization_id.as_deref(), Some("org-AGLwRmx1snv34Yts"));
        assert_eq!(e.auth_type.as_deref(), Some("Client"));
        assert_eq!(e.accessor_id.as_deref(), Some("user-MaPuLxAXvtq2PWTH"));
        assert_eq!(e.auth_description.as_deref(), Some("pveverka"));
        assert_eq!(e.impersonator_id, None);
        assert_eq!(e.request_id.as_deref(), Some("4df584d4-7e2a-01e6-6cc0-4adbefa020e6"));
        assert_eq!(e.resource_id.as_deref(), Some("at-sjt83qTw3GZatuPm"));
        assert_eq!(e.resource_type.as_deref(), Some("authentication_token"));
        assert_eq!(e.resource_action.as_deref(), Some("create"));
        assert_eq!(e.raw, DOCUMENTED_SAMPLE, "the original text is kept byte for byte");
        let user = Sighting::new("user-MaPuLxAXvtq2PWTH", NameKind::User, "pveverka", None).unwrap();
        assert_eq!(e.named.0, vec![user], "the accessor's description names it");
    }

    #[test]
    fn names_inside_meta_are_sightings_and_odd_ones_are_skipped() {
        let text = r#"{"id":"x1","timestamp":"2024-01-01T00:00:00Z",
            "auth":{"accessor_id":"at-1","description":"a token"},
            "resource":{"id":"ws-1","type":"workspace","action":"add_team","meta":{
                "workspace":{"id":"ws-1","name":"prod-network"},
                "team":{"id":"team-1","name":"<b>owners</b>"},
                "user":{"id":"user-1","username":"alice","email":"alice@example.com"},
                "project":{"id":"prj-1","name":""},
                "stack":{"id":42,"name":"core"},
                "policy_set":"not an object",
                "permissions":{"runs":"apply"}}}}"#;
        let e = AuditEvent::parse(&raw(text)).unwrap();
        let names: Vec<_> =
            e.named.iter().map(|s| (s.id.as_str(), s.kind, s.name.as_str(), s.email.as_deref())).collect();
        assert_eq!(
            names,
            [
                ("ws-1", NameKind::Workspace, "prod-network", None),
                ("team-1", NameKind::Team, "<b>owners</b>", None),
                ("user-1", NameKind::User, "alice", Some("alice@example.com")),
                ("42", NameKind::Stack, "core", None),
            ],
            "a token accessor is not named by its description; an empty name is no name"
        );
    }

    #[test]
    fn surprising_field_types_do_not_cost_the_event() {
        let text = r#"{"id":"x1","timestamp":"2024-01-01T00:00:00Z","version":0,
            "auth":"not-an-object","request":[1,2],"resource":{"id":42,"type":{"a":1},"action":true,"meta":{"deep":[{"x":null}]}},
            "new_field":{"unknown":["kept"]}}"#;
        let e = AuditEvent::parse(&raw(text)).unwrap();
        assert_eq!(e.accessor_id, None);
        assert_eq!(e.request_id, None);
        assert_eq!(e.resource_id.as_deref(), Some("42"));
        assert_eq!(e.resource_type, None);
        assert_eq!(e.resource_action.as_deref(), Some("true"));
        assert_eq!(e.raw, text);
    }

    #[test]
    fn escaped_and_unicode_strings_are_decoded_for_indexing() {
        let text = r#"{"id":"e\u0031","timestamp":"2024-01-01T00:00:00.000Z","auth":{"description":"J\u00fcrgen <script>\u001b[31m 日本"}}"#;
        let e = AuditEvent::parse(&raw(text)).unwrap();
        assert_eq!(e.id, "e1");
        assert_eq!(e.auth_description.as_deref(), Some("Jürgen <script>\u{1b}[31m 日本"));
    }

    #[test]
    fn rejects_what_cannot_be_an_event_with_a_reason() {
        for (text, why) in [
            ("\"a string\"", "not a JSON object"),
            ("null", "not a JSON object"),
            ("[1]", "not a JSON object"),
            (r#"{"timestamp":"2024-01-01T00:00:00Z"}"#, "no \"id\""),
            (r#"{"id":"","timestamp":"2024-01-01T00:00:00Z"}"#, "no \"id\""),
            (r#"{"id":"a"}"#, "no \"timestamp\""),
            (r#"{"id":"a","timestamp":"last tuesday"}"#, "is not an RFC 3339 time"),
            (r#"{"id":"a","id":"b","timestamp":"2024-01-01T00:00:00Z"}"#, "duplicate field"),
        ] {
            let r = AuditEvent::parse(&raw(text)).unwrap_err();
            assert!(r.reason.contains(why), "{text}: {}", r.reason);
            assert_eq!(r.raw, text);
        }
    }

    /// A page's elements reach `parse_owned` as text not yet read as JSON: what is not
    /// JSON is set aside there, with its text, and what is becomes the same event as
    /// `parse` makes.
    #[test]
    fn text_not_yet_read_as_json_is_read_once_and_kept() {
        let good = r#"{"id":"a","timestamp":"2024-01-01T00:00:00Z","request":{"id":"r"}}"#;
        assert_eq!(AuditEvent::parse_owned(good.to_owned()).unwrap(), AuditEvent::parse(&raw(good)).unwrap());
        for (text, why) in [
            (r#"{"id":"c","timestamp":"2024-01-01T00:00:00Z","x":"bad \q escape"}"#, "unreadable event object"),
            (r#"{"id":"c","timestamp":"2024-01-01T00:00:00Z","x":tru}"#, "unreadable event object"),
            (r#"{"id":"c","timestamp":"2024-01-01T00:00:00Z"} x"#, "unreadable event object"),
            ("{\"id\":\"c\",\"x\":\"a\u{1}b\"}", "unreadable event object"),
            ("tru", "not a JSON object"),
        ] {
            let r = AuditEvent::parse_owned(text.to_owned()).unwrap_err();
            assert!(r.reason.contains(why), "{text}: {}", r.reason);
            assert_eq!(r.raw, text);
        }
    }

    /// A field's value of any JSON type but a float (whose text a reader may write
    /// otherwise), strings with escapes and any character.
    fn any_value() -> proptest::strategy::BoxedStrategy<serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            4 => "\\PC{0,12}".prop_map(Value::from),
            1 => "[ a-z\"\\\\/\u{0}-\u{1f}\u{7f}-\u{3000}]{0,8}".prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => any::<u64>().prop_map(Value::from),
            1 => any::<bool>().prop_map(Value::from),
            1 => Just(Value::Null),
        ];
        leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
    }

    /// An object holding some of `keys`, each with a value of its strategy or of any
    /// type, and keys of its own.
    fn any_object(
        keys: Vec<(&'static str, proptest::strategy::BoxedStrategy<serde_json::Value>)>,
    ) -> proptest::strategy::BoxedStrategy<serde_json::Value> {
        use proptest::prelude::*;
        let names: Vec<_> = keys.iter().map(|(k, _)| *k).collect();
        let values: Vec<_> = keys
            .into_iter()
            .map(|(_, v)| proptest::option::weighted(0.75, prop_oneof![6 => v, 1 => any_value()]))
            .collect();
        (values, proptest::collection::btree_map("[a-z_]{1,12}", any_value(), 0..3))
            .prop_map(move |(values, extra)| {
                let mut map: serde_json::Map<_, _> = extra.into_iter().collect();
                for (k, v) in names.iter().zip(values) {
                    if let Some(v) = v {
                        map.insert((*k).to_owned(), v);
                    }
                }
                serde_json::Value::Object(map)
            })
            .boxed()
    }

    /// An event whose objects hold some of the fields read, of any type.
    fn any_event() -> proptest::strategy::BoxedStrategy<serde_json::Value> {
        let flat = |keys: &[&'static str]| any_object(keys.iter().map(|k| (*k, any_value())).collect());
        let named = flat(Level::Named(0).keys());
        let meta = any_object(Level::Meta.keys().iter().map(|k| (*k, named.clone())).collect());
        let resource =
            any_object(vec![("id", any_value()), ("type", any_value()), ("action", any_value()), ("meta", meta)]);
        any_object(vec![
            ("auth", flat(Level::Auth.keys())),
            ("request", flat(Level::Request.keys())),
            ("resource", resource),
        ])
    }

    /// What a reader of the whole event as JSON finds at `path`, as [`Text`] reads it.
    fn text_at(event: &serde_json::Value, path: &[&str]) -> Option<String> {
        let v = path.iter().try_fold(event, |v, key| v.as_object()?.get(*key))?;
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Some(v.to_string()),
            _ => None,
        }
    }

    proptest::proptest! {
        /// The fields and names read in one pass into [`Fields`] are those a reader of
        /// the whole event as a JSON value finds, whatever the types and nesting.
        #[test]
        fn fields_are_what_a_json_reader_finds(
            event in any_event(),
            id in "[a-z0-9-]{1,20}",
            pretty in proptest::prelude::any::<bool>(),
        ) {
            let mut event = event;
            event["id"] = id.into();
            event["timestamp"] = "2024-01-01T00:00:00Z".into();
            let text = if pretty { serde_json::to_string_pretty(&event) } else { serde_json::to_string(&event) }.unwrap();
            let e = AuditEvent::parse_owned(text.clone()).unwrap();
            let at = |path: &[&str]| text_at(&event, path);
            proptest::prop_assert_eq!(Some(e.id.clone()), at(&["id"]));
            proptest::prop_assert_eq!(&e.organization_id, &at(&["auth", "organization_id"]));
            proptest::prop_assert_eq!(&e.auth_type, &at(&["auth", "type"]));
            proptest::prop_assert_eq!(&e.accessor_id, &at(&["auth", "accessor_id"]));
            proptest::prop_assert_eq!(&e.auth_description, &at(&["auth", "description"]));
            proptest::prop_assert_eq!(&e.impersonator_id, &at(&["auth", "impersonator_id"]));
            proptest::prop_assert_eq!(&e.request_id, &at(&["request", "id"]));
            proptest::prop_assert_eq!(&e.resource_id, &at(&["resource", "id"]));
            proptest::prop_assert_eq!(&e.resource_type, &at(&["resource", "type"]));
            proptest::prop_assert_eq!(&e.resource_action, &at(&["resource", "action"]));
            let mut names = Vec::new();
            if let (Some(id), Some(name)) = (at(&["auth", "accessor_id"]), at(&["auth", "description"]))
                && let Some(kind @ (NameKind::User | NameKind::Team)) = NameKind::of_id(&id)
            {
                names.extend(Sighting::new(&id, kind, &name, None));
            }
            for (key, kind) in Level::Meta.keys().iter().zip(NAMED_KINDS) {
                let field = |f: &str| at(&["resource", "meta", key, f]);
                if let (Some(id), Some(name)) = (field("id"), field("username").or_else(|| field("name"))) {
                    names.extend(Sighting::new(&id, kind, &name, field("email").as_deref()));
                }
            }
            proptest::prop_assert_eq!(&e.named.0, &names);
            proptest::prop_assert_eq!(e.raw, text);
        }
    }

    #[test]
    fn a_key_read_twice_at_any_level_is_refused_and_one_skipped_is_not() {
        let at = |inner: &str| format!(r#"{{"id":"a","timestamp":"2024-01-01T00:00:00Z",{inner}}}"#);
        for (inner, why) in [
            (r#""auth":{"type":"a","type":"b"}"#, "duplicate field `type`"),
            (r#""auth":1,"auth":{}"#, "duplicate field `auth`"),
            (r#""resource":{"meta":{"team":{"id":"t","id":"u"}}}"#, "duplicate field `id`"),
            (r#""resource":{"meta":{"user":null,"user":{}}}"#, "duplicate field `user`"),
            (r#""request":{"id":"r","\u0069d":"s"}"#, "duplicate field `id`"),
        ] {
            let r = AuditEvent::parse_owned(at(inner)).unwrap_err();
            assert!(r.reason.contains(why), "{inner}: {}", r.reason);
        }
        let e = AuditEvent::parse_owned(at(r#""version":0,"version":1,"resource":{"meta":{"x":1,"x":2}}"#)).unwrap();
        assert_eq!(e.resource_id, None, "keys not read may repeat");
    }

    #[test]
    fn compaction_keeps_strings_and_numbers_exactly() {
        let text = "{\n  \"a\": \"x  y\\\" \\n z\",\n  \"n\": 1.50e3,\n  \"b\": [ 1, {\"c\" : null} ]\n}";
        let c = compact_json(text);
        assert_eq!(c, r#"{"a":"x  y\" \n z","n":1.50e3,"b":[1,{"c":null}]}"#);
        let a: serde_json::Value = serde_json::from_str(text).unwrap();
        let b: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(a, b);
        assert!(matches!(compact_json(r#"{"a":1}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn destroy_runs_are_told_as_a_json_reader_tells_them() {
        let cases = [
            (r#"{"resource":{"meta":{"run":{"is_destroy":true}}}}"#, true),
            (r#"{"resource":{"meta":{"run":{"is_destroy":false}}}}"#, false),
            (r#"{"resource":{"meta":{"run":{"is_destroy":"true"}}}}"#, false),
            (r#"{"resource":{"meta":{"run":{"is_destroy":1}}}}"#, false),
            (r#"{"resource":{"meta":{"run":{"id":"run-1","is_destroy" : true,"x":[{"is_destroy":false}]}}}}"#, true),
            (r#"{"resource":{"meta":{"run":{"is_destroy":true,"is_destroy":false}}}}"#, false),
            (r#"{"resource":{"meta":{"run":{"is_destroy":false,"is_destroy":true}}}}"#, true),
            (r#"{"resource":{"meta":{"run":{"is_destroy":true}},"meta":null}}"#, false),
            (r#"{"resource":{"meta":{"workspace":{"is_destroy":true}}}}"#, false),
            (r#"{"resource":{"meta":{"run":[{"is_destroy":true}]}}}"#, false),
            (r#"{"is_destroy":true,"resource":{"meta":{"run":null}}}"#, false),
            (r#"{"resource":{"meta":{"run":{"is_destroy":true}}}} trailing"#, false),
            (r#"{"resource":{"meta":{"run":{"is_destroy":true}}"#, false),
            (r#"{"resource":{"meta":{"run":{"message":"\"is_destroy\"","is_destroy":true}}}}"#, true),
            (r#"{"resource":{"meta":{"run":{"message":"\"is_destroy\": true"}}}}"#, false),
            (r#"{"resource":{"id":"run-1","meta":{"run":{"is_destroy":true}}}}"#, true),
            ("{\"resource\":{\"meta\":{\"run\":{\"is_destroy\"\n:\r\ttrue}}}}", true),
            (r#"{"resource":{"meta":{"run":{"is_destroy":false}}},"x":{"is_destroy":true}}"#, false),
            (r#"{"resource":{"meta":{"run":{"is_destroy":truthy}}}}"#, false),
        ];
        for (raw, expected) in cases {
            let reader = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v.pointer("/resource/meta/run/is_destroy").and_then(serde_json::Value::as_bool))
                == Some(true);
            assert_eq!(reader, expected, "the reference for {raw}");
            assert_eq!(is_destroy_run(raw), expected, "{raw}");
        }
        let deep = format!(r#"{{"is_destroy":true,"x":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(!is_destroy_run(&deep), "too deep to read: no");
    }
}
