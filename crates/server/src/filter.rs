//! Query parameters to filters, for the API and the dashboard alike: the same names
//! as `tfaudit query`'s flags.

use base64::Engine as _;
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

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// An opaque position for keyset paging.
#[must_use]
pub fn encode_cursor(timestamp: Timestamp, seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}.{seq}", timestamp.as_millisecond()))
}

fn decode_cursor(text: &str) -> Option<(Timestamp, i64)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    let (ms, seq) = std::str::from_utf8(&raw).ok()?.split_once('.')?;
    Some((Timestamp::from_millisecond(ms.parse().ok()?).ok()?, seq.parse().ok()?))
}

impl Params {
    /// Checks the parameters; `default_since` applies when `since` is absent.
    ///
    /// # Errors
    /// A one-line message naming the parameter.
    pub fn parse(&self, default_since: Option<&str>, default_limit: u64) -> Result<Query, String> {
        let now = Timestamp::now();
        let when = |name: &str, v: Option<&str>| -> Result<Option<Timestamp>, String> {
            v.map(|t| tfaudit_config::parse_when(t, now).map_err(|e| format!("{name}: {e}"))).transpose()
        };
        let since = when("since", present(&self.since).or(default_since))?;
        let until = when("until", present(&self.until))?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err("since must be before until".into());
        }
        let limit = match present(&self.limit) {
            None => default_limit,
            Some(l) => l
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or(format!("limit must be 1 to {MAX_LIMIT}"))?,
        };
        let before = match present(&self.cursor) {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or("cursor is not one this server gave")?),
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
            },
            limit,
        })
    }

    /// How many actors and actions a summary lists.
    #[must_use]
    pub fn top(&self) -> usize {
        present(&self.top).and_then(|t| t.parse().ok()).filter(|n| (1..=100).contains(n)).unwrap_or(10)
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
    }

    #[test]
    fn parameters_are_checked() {
        let p = Params { since: Some("".into()), limit: Some("600".into()), ..Params::default() };
        assert!(p.parse(None, 50).unwrap_err().contains("limit"));
        let p = Params { since: Some("tuesday".into()), ..Params::default() };
        assert!(p.parse(None, 50).unwrap_err().starts_with("since:"));
        let p = Params { actor: Some(" alice ".into()), text: Some("".into()), ..Params::default() };
        let q = p.parse(Some("7d"), 50).unwrap();
        assert_eq!(q.filter.actor, Some(Pattern::new("alice")));
        assert_eq!(q.filter.text, None);
        assert!(q.filter.since.is_some());
    }
}
