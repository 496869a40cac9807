//! Query parameters to filters, for the API and the dashboard alike: the same names
//! as `tfaudit query`'s flags.

use jiff::Timestamp;
use serde::Deserialize;
use tfaudit_store::{EventFilter, Pattern};

/// Event filters and paging, as query parameters. Empty values (from a form) are
/// ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Params {
    pub since: Option<String>,
    pub until: Option<String>,
    pub actor: Option<String>,
    #[serde(rename = "type")]
    pub resource_type: Option<String>,
    pub action: Option<String>,
    pub resource_id: Option<String>,
    pub org: Option<String>,
    pub text: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub top: Option<String>,
}

/// Checked parameters.
#[derive(Debug, Clone)]
pub struct Query {
    pub filter: EventFilter,
    pub limit: u64,
}

/// The most events one page holds.
pub const MAX_LIMIT: u64 = 500;

/// Where parameters come from, which decides how strictly they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The JSON API: each parameter exactly as `openapi.json` describes it, so that a
    /// program learns of a mistake instead of getting a different answer.
    Api,
    /// The dashboard's form, which sends every field, empty or not: empty means
    /// absent, spaces around a value are dropped.
    Form,
}

/// An age, as the API takes it: one number and one unit, bounded so that every age
/// it matches is a time jiff can hold. `openapi.json` carries the same pattern (a
/// test compares them).
pub const AGE_PATTERN: &str = "^[0-9]{1,5}(ms|s|m|h|d|w)$";
const DATE_PATTERN: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$";
/// RFC 3339, what `format: date-time` means in OpenAPI.
const DATE_TIME_PATTERN: &str =
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";
/// `next_cursor`: the position of the last event of a page, `<ms>.<seq>`.
pub const CURSOR_PATTERN: &str = "^[0-9]{1,16}\\.[0-9]{1,19}$";

fn matches(pattern: &'static str, text: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    static COMPILED: LazyLock<Mutex<HashMap<&'static str, regex::Regex>>> = LazyLock::new(Mutex::default);
    let mut compiled = COMPILED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    compiled.entry(pattern).or_insert_with(|| regex::Regex::new(pattern).expect("the patterns compile")).is_match(text)
}

/// A time as the API takes it: an RFC 3339 date-time, a date (UTC midnight) or an
/// age. A well-formed date-time or date beyond the range jiff holds (the end of
/// year 9999) is clamped to it rather than refused: the document promises it works.
///
/// # Errors
/// A message naming the forms.
pub fn api_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let refused = || format!("{text:?} is not an RFC 3339 time, a date (YYYY-MM-DD) or an age such as 90m, 24h or 7d");
    let well_formed = matches(AGE_PATTERN, text) || matches(DATE_PATTERN, text) || matches(DATE_TIME_PATTERN, text);
    if !well_formed {
        return Err(refused());
    }
    match tfaudit_config::parse_when(text, now) {
        Ok(t) => Ok(t),
        Err(_) if !matches(AGE_PATTERN, text) && text[..10].parse::<jiff::civil::Date>().is_ok() => {
            Ok(if text.starts_with("9999-") { Timestamp::MAX } else { Timestamp::MIN })
        }
        Err(_) => Err(refused()),
    }
}

/// The API takes a value as given; the form's empty fields mean "not set".
fn given(origin: Origin, v: &Option<String>) -> Option<&str> {
    match origin {
        Origin::Api => v.as_deref(),
        Origin::Form => present(v),
    }
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// An opaque position for keyset paging.
#[must_use]
pub fn encode_cursor(timestamp: Timestamp, seq: i64) -> String {
    format!("{}.{seq}", timestamp.as_millisecond().max(0))
}

/// Any text of the documented form is a position; one past every event is clamped to
/// the last there can be.
fn decode_cursor(text: &str) -> Option<(Timestamp, i64)> {
    if !matches(CURSOR_PATTERN, text) {
        return None;
    }
    let (ms, seq) = text.split_once('.')?;
    let ms = ms.parse::<i64>().ok()?.min(Timestamp::MAX.as_second() * 1000);
    let seq = seq.parse::<u64>().ok()?.min(i64::MAX as u64);
    Some((Timestamp::from_millisecond(ms).ok()?, i64::try_from(seq).ok()?))
}

/// The longest filter value the API takes (`maxLength` in `openapi.json`).
pub const MAX_FILTER: usize = 100;

/// # Errors
/// When `value` is longer than [`MAX_FILTER`] characters.
pub(crate) fn within_max_length(name: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.chars().count() > MAX_FILTER => Err(format!("{name} is longer than {MAX_FILTER} characters")),
        _ => Ok(()),
    }
}

/// A whole number within `range`, digits only.
pub(crate) fn number(name: &str, text: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    let ok = !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("{name} must be a whole number from {} to {}", range.start(), range.end()))
}

impl Params {
    /// Checks the parameters; `default_since` applies when `since` is absent.
    ///
    /// # Errors
    /// A one-line message naming the parameter.
    pub fn parse(&self, origin: Origin, default_since: Option<&str>, default_limit: u64) -> Result<Query, String> {
        let now = Timestamp::now();
        let value = |v| given(origin, v);
        let when = |name: &str, v: Option<&str>| -> Result<Option<Timestamp>, String> {
            v.map(|t| match origin {
                Origin::Api => api_time(t, now).map_err(|e| format!("{name}: {e}")),
                Origin::Form => tfaudit_config::parse_when(t, now).map_err(|e| format!("{name}: {e}")),
            })
            .transpose()
        };
        if origin == Origin::Api {
            for (name, v) in [
                ("actor", &self.actor),
                ("type", &self.resource_type),
                ("action", &self.action),
                ("resource_id", &self.resource_id),
                ("org", &self.org),
                ("text", &self.text),
            ] {
                within_max_length(name, v.as_deref())?;
            }
        }
        let since = when("since", value(&self.since).or(default_since))?;
        let until = when("until", value(&self.until))?;
        // A program asking for an empty range gets an empty answer; a person is told.
        if origin == Origin::Form
            && let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err("since must be before until".into());
        }
        let limit = match value(&self.limit) {
            None => default_limit,
            Some(l) => number("limit", l, 1..=MAX_LIMIT)?,
        };
        let before = match value(&self.cursor) {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or("cursor is not one this server gave (next_cursor)")?),
        };
        let pattern = |v: &Option<String>| present(v).map(Pattern::new);
        Ok(Query {
            filter: EventFilter {
                since,
                until,
                actor: pattern(&self.actor),
                resource_type: pattern(&self.resource_type),
                action: pattern(&self.action),
                resource_id: pattern(&self.resource_id),
                org: pattern(&self.org),
                text: present(&self.text).map(str::to_owned),
                before,
                impersonated: false,
                destroy_run: false,
            },
            limit,
        })
    }

    /// How many actors and actions a summary lists (default 10).
    ///
    /// # Errors
    /// A one-line message naming the parameter.
    pub fn top(&self) -> Result<usize, String> {
        self.top.as_deref().map_or(Ok(10), |t| number("top", t, 1..=100).map(|n| n as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let t: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(decode_cursor(&encode_cursor(t, 42)), Some((t, 42)));
        assert_eq!(decode_cursor("not-a-cursor"), None);
        assert_eq!(decode_cursor("9999999999999999.99999999999999999999"), None, "20 digits of seq");
        assert_eq!(
            decode_cursor("9999999999999999.9999999999999999999"),
            Some((Timestamp::from_second(Timestamp::MAX.as_second()).unwrap(), i64::MAX)),
            "clamped to the last position"
        );
    }

    #[test]
    fn the_api_takes_parameters_exactly_as_documented() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        for good in ["7d", "90m", "99999w", "2026-11-01", "2026-11-01T09:00:00+01:00", "0000-01-01T00:00:00z"] {
            assert!(api_time(good, now).is_ok(), "{good}");
        }
        assert_eq!(api_time("9999-12-31T23:59:59-23:59", now), Ok(Timestamp::MAX));
        for bad in ["", " 7d", "7d ", "0", "1h30m", "100000m", "2026-02-30", "2026-11-01 09:00:00Z", "soon"] {
            assert!(api_time(bad, now).is_err(), "{bad:?}");
        }
        let p = Params { limit: Some(String::new()), ..Params::default() };
        assert!(p.parse(Origin::Api, None, 50).unwrap_err().starts_with("limit"), "empty is not absent in the API");
        assert!(p.parse(Origin::Form, None, 50).is_ok(), "but is in a form");
        let p = Params { limit: Some("+5".into()), ..Params::default() };
        assert!(p.parse(Origin::Api, None, 50).is_err());
        let p = Params { top: Some("101".into()), ..Params::default() };
        assert!(p.top().unwrap_err().starts_with("top"));
        let p = Params { since: Some("1d".into()), until: Some("2d".into()), ..Params::default() };
        assert!(p.parse(Origin::Api, None, 50).is_ok(), "an empty range is an empty answer");
        assert!(p.parse(Origin::Form, None, 50).is_err());
    }

    #[test]
    fn the_openapi_document_carries_the_patterns_the_api_checks() {
        let doc: serde_json::Value = serde_json::from_str(crate::api::OPENAPI).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["When"]["anyOf"][2]["pattern"], AGE_PATTERN);
        assert_eq!(schemas["Cursor"]["pattern"], CURSOR_PATTERN);
    }

    #[test]
    fn parameters_are_checked() {
        let p = Params { since: Some("".into()), limit: Some("600".into()), ..Params::default() };
        assert!(p.parse(Origin::Form, None, 50).unwrap_err().contains("limit"));
        let p = Params { since: Some("tuesday".into()), ..Params::default() };
        assert!(p.parse(Origin::Form, None, 50).unwrap_err().starts_with("since:"));
        let p = Params { actor: Some(" alice ".into()), text: Some("".into()), ..Params::default() };
        let q = p.parse(Origin::Form, Some("7d"), 50).unwrap();
        assert_eq!(q.filter.actor, Some(Pattern::new("alice")));
        assert_eq!(q.filter.text, None);
        assert!(q.filter.since.is_some());
    }
}
