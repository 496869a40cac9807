//! Investigations: the questions an engineer asks during an incident, answered from
//! the archive through the store's roles only, so the CLI (`who`, `history`,
//! `query --around`) and the dashboard's actor, resource and "around" pages give the
//! same answers from one piece of code.
//!
//! - [`who`]: one accessor (a user, a team, a token): what it did, the tokens it
//!   created and what those did after, followed from token to token, and the alerts
//!   all of that raised.
//! - [`history`]: every event about one resource or naming it as a whole id.
//! - [`around`]: what the same actor did in the same organization around one event.
//! - [`resolve_id`]: the id a name stands for, from the catalogue.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tfaudit_store::{AlertFilter, EventFilter, Order, Store, StoreError, StoredEvent};

/// How many tokens deep [`who`] follows: a chain longer than this is cut, and said so.
pub const MAX_TOKENS: usize = 1_000;

/// Errors of an investigation.
#[derive(Debug, thiserror::Error)]
pub enum InvestigateError {
    /// Several ids have (or had) the name given; the caller lists them to pick one.
    #[error("{} ids are named {name:?}: {}; give the id", ids.len(), ids.iter().take(10).cloned().collect::<Vec<_>>().join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    /// `around` was given an event id the archive does not hold.
    #[error("no event {0:?} in the archive")]
    NoEvent(String),
    /// A window too long for the times it is added to.
    #[error("the window is too long; use days, such as 7d")]
    Window,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = InvestigateError> = std::result::Result<T, E>;

/// The id `text` stands for: itself when the catalogue knows it as an id or knows no
/// such name; else the one id named so (any time, case-insensitively), preferring
/// the one the organization lists now.
///
/// # Errors
/// [`InvestigateError::Ambiguous`] when several ids have (or had) that name.
pub fn resolve_id(store: &dyn Store, text: &str) -> Result<String> {
    if !store.name_history(text)?.is_empty() {
        return Ok(text.to_owned());
    }
    let named = store.ids_named(text)?;
    // The organization's own listing is the authority: when it holds one id of that
    // name now, that is the one meant.
    let mut listed: Vec<&str> = named.iter().filter(|r| r.listed && r.gone.is_none()).map(|r| r.id.as_str()).collect();
    listed.sort_unstable();
    listed.dedup();
    if let [one] = listed[..] {
        return Ok(one.to_owned());
    }
    let mut ids: Vec<String> = named.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    match ids.len() {
        0 => Ok(text.to_owned()),
        1 => Ok(ids.remove(0)),
        _ => Err(InvestigateError::Ambiguous { name: text.to_owned(), ids }),
    }
}

/// The accessor id an actor filter written as a name stands for, when the catalogue
/// names one: `alice` finds alice's events by her id, also those from before a
/// rename. None (match the text as it is, against ids and the events' descriptions)
/// for a glob, an id, a name the catalogue does not know, or one several ids had.
///
/// # Errors
/// The store's.
pub fn resolve_actor(store: &dyn Store, text: &str) -> Result<Option<String>> {
    if text.contains(['*', '?']) {
        return Ok(None);
    }
    match resolve_id(store, text) {
        Ok(id) if id != text => Ok(Some(id)),
        Ok(_) | Err(InvestigateError::Ambiguous { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `raw` holds `id` as a whole id: not as a part of a longer one
/// (`ws-abc` is not named by `ws-abcd`).
#[must_use]
pub fn names_id(raw: &str, id: &str) -> bool {
    let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    !id.is_empty()
        && raw
            .match_indices(id)
            .any(|(at, _)| !part(raw[..at].chars().next_back()) && !part(raw[at + id.len()..].chars().next()))
}

/// Every event in `range` about the resource `id` or naming it as a whole id, oldest
/// first, each given to `each` until it returns false. How many were given.
///
/// # Errors
/// The store's.
pub fn history(
    store: &dyn Store,
    id: &str,
    range: &EventFilter,
    each: &mut dyn FnMut(StoredEvent) -> std::io::Result<bool>,
) -> Result<u64> {
    // The store's text match finds every event naming the id (case-insensitively);
    // only those naming it exactly are kept.
    let filter = EventFilter { text: Some(id.to_owned()), ..range.clone() };
    let mut given = 0u64;
    let mut open = true;
    store.events(&filter, Order::OldestFirst, None, &mut |e| {
        if open && names_id(&e.event.raw, id) {
            given += 1;
            open = each(e)?;
        }
        Ok(())
    })?;
    Ok(given)
}

/// `range` narrowed to `window` before and after the event `id`, and the event. The
/// events to keep of it are those [`same_actor`] accepts.
///
/// # Errors
/// [`InvestigateError::NoEvent`], [`InvestigateError::Window`], the store's.
pub fn around(
    store: &dyn Store,
    id: &str,
    window: std::time::Duration,
    mut range: EventFilter,
) -> Result<(EventFilter, StoredEvent)> {
    let Some(anchor) = store.event(id)? else {
        return Err(InvestigateError::NoEvent(id.chars().take(80).collect()));
    };
    let window = SignedDuration::try_from(window).map_err(|_| InvestigateError::Window)?;
    let at = anchor.event.timestamp;
    range.since = Some(at.checked_sub(window).unwrap_or(Timestamp::MIN));
    // `until` is exclusive: one millisecond on keeps an event exactly `window` after.
    range.until = Some(
        at.checked_add(window).and_then(|t| t.checked_add(SignedDuration::from_millis(1))).unwrap_or(Timestamp::MAX),
    );
    Ok((range, anchor))
}

/// Whether `e` was made by the same actor as `anchor`, in the same organization: the
/// same accessor id exactly (or, for events without one, the same description).
#[must_use]
pub fn same_actor(anchor: &StoredEvent, e: &StoredEvent) -> bool {
    e.source == anchor.source
        && e.event.accessor_id == anchor.event.accessor_id
        && (anchor.event.accessor_id.is_some() || e.event.auth_description == anchor.event.auth_description)
}

/// What one accessor did.
#[derive(Debug, Default, Serialize)]
pub struct Trail {
    pub id: String,
    /// The names (`auth.description`) its events carried.
    pub names: BTreeSet<String>,
    pub first_seen: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// Events it made.
    pub events: u64,
    /// (type, action) → count, most first.
    pub actions: Vec<ActionCount>,
    /// Events in which it acted as someone else (it was the impersonator).
    pub impersonations: Vec<Impersonation>,
    /// The ids of its events, to find the alerts they raised.
    #[serde(skip)]
    pub event_ids: BTreeSet<String>,
}

#[derive(Debug, Serialize)]
pub struct ActionCount {
    pub resource_type: String,
    pub action: String,
    pub events: u64,
}

#[derive(Debug, Serialize)]
pub struct Impersonation {
    pub event_id: String,
    pub at: Timestamp,
    pub as_accessor: Option<String>,
}

/// A token created by the accessor (or by one of its tokens), and what it did.
#[derive(Debug, Serialize)]
pub struct Token {
    pub id: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub event_id: String,
    pub trail: Trail,
}

/// An alert raised by one of its events or its tokens' events.
#[derive(Debug, Serialize)]
pub struct RaisedAlert {
    pub id: i64,
    pub rule: String,
    pub severity: String,
    pub title: String,
    pub event_id: String,
    pub raised_at: Timestamp,
    /// Who made the event: the accessor or one of its tokens.
    pub by: String,
}

/// Everything about one accessor.
#[derive(Debug, Serialize)]
pub struct Who {
    #[serde(flatten)]
    pub trail: Trail,
    /// Tokens it created and the tokens those created, in the order found.
    pub tokens: Vec<Token>,
    /// Alerts raised by its events and its tokens' events, oldest first.
    pub alerts: Vec<RaisedAlert>,
    /// Whether the chain of tokens was cut at [`MAX_TOKENS`].
    pub truncated: bool,
}

/// A token's creation: its id, when, and the creating event's id.
type Created = (String, Timestamp, String);

/// Reads one accessor's events in the range: what it did, its impersonations, and the
/// tokens it created.
fn trail(store: &dyn Store, id: &str, range: &EventFilter) -> Result<(Trail, Vec<Created>)> {
    let filter = EventFilter { text: Some(id.to_owned()), ..range.clone() };
    let mut trail = Trail { id: id.to_owned(), ..Trail::default() };
    let mut actions: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut created = Vec::new();
    store.events(&filter, Order::OldestFirst, None, &mut |e| {
        let ev = &e.event;
        if ev.impersonator_id.as_deref() == Some(id) {
            trail.impersonations.push(Impersonation {
                event_id: ev.id.clone(),
                at: ev.timestamp,
                as_accessor: ev.accessor_id.clone(),
            });
        }
        if ev.accessor_id.as_deref() != Some(id) {
            return Ok(());
        }
        trail.events += 1;
        trail.event_ids.insert(ev.id.clone());
        trail.first_seen.get_or_insert(ev.timestamp);
        trail.last_seen = Some(ev.timestamp);
        if let Some(name) = &ev.auth_description {
            trail.names.insert(name.clone());
        }
        let rtype = ev.resource_type.clone().unwrap_or_default();
        let action = ev.resource_action.clone().unwrap_or_default();
        if rtype.contains("token")
            && action == "create"
            && let Some(token) = &ev.resource_id
        {
            created.push((token.clone(), ev.timestamp, ev.id.clone()));
        }
        *actions.entry((rtype, action)).or_default() += 1;
        Ok(())
    })?;
    let mut actions: Vec<ActionCount> = actions
        .into_iter()
        .map(|((resource_type, action), events)| ActionCount { resource_type, action, events })
        .collect();
    actions.sort_by(|a, b| {
        b.events.cmp(&a.events).then_with(|| (&a.resource_type, &a.action).cmp(&(&b.resource_type, &b.action)))
    });
    trail.actions = actions;
    Ok((trail, created))
}

/// Everything about the accessor `id` in `range`: its own trail, the tokens it
/// created followed from token to token (at most [`MAX_TOKENS`]), and the alerts
/// all their events raised.
///
/// # Errors
/// The store's.
pub fn who(store: &dyn Store, id: &str, range: &EventFilter) -> Result<Who> {
    let (trail, created) = self::trail(store, id, range)?;
    let mut tokens = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::from([id.to_owned()]);
    let mut queue: VecDeque<(String, Timestamp, String, String)> =
        created.into_iter().map(|(t, at, ev)| (t, at, ev, id.to_owned())).collect();
    let mut truncated = false;
    while let Some((token, created_at, event_id, created_by)) = queue.pop_front() {
        if !seen.insert(token.clone()) {
            continue;
        }
        if tokens.len() >= MAX_TOKENS {
            truncated = true;
            break;
        }
        let (trail, created) = self::trail(store, &token, range)?;
        queue.extend(created.into_iter().map(|(t, at, ev)| (t, at, ev, token.clone())));
        tokens.push(Token { id: token, created_at, created_by, event_id, trail });
    }
    let alerts = raised_alerts(store, range, &trail, &tokens)?;
    Ok(Who { trail, tokens, alerts, truncated })
}

/// The alerts whose event is one of the accessor's or its tokens'.
fn raised_alerts(store: &dyn Store, range: &EventFilter, trail: &Trail, tokens: &[Token]) -> Result<Vec<RaisedAlert>> {
    let filter = AlertFilter { since: range.since, ..AlertFilter::default() };
    let mut found = Vec::new();
    for record in store.alerts(&filter, u64::MAX)? {
        let by = std::iter::once(trail)
            .chain(tokens.iter().map(|t| &t.trail))
            .find(|t| t.event_ids.contains(&record.event_id))
            .map(|t| t.id.clone());
        if let Some(by) = by {
            found.push(RaisedAlert {
                id: record.id,
                rule: record.rule.clone(),
                severity: record.severity.clone(),
                title: record.title.clone(),
                event_id: record.event_id.clone(),
                raised_at: record.raised_at,
                by,
            });
        }
    }
    found.sort_by_key(|a| (a.raised_at, a.id));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::names_id;

    #[test]
    fn a_whole_id_is_named_and_a_longer_one_is_not() {
        assert!(names_id(r#"{"id":"ws-abc"}"#, "ws-abc"));
        assert!(!names_id(r#"{"id":"ws-abcd"}"#, "ws-abc"));
        assert!(!names_id(r#"{"id":"xws-abc"}"#, "ws-abc"));
        assert!(names_id("ws-abc", "ws-abc"));
        assert!(!names_id("anything", ""));
        assert!(names_id(r#"{"meta":{"workspace":{"id":"ws-abc","name":"x"}}}"#, "ws-abc"));
        assert!(names_id(r#"{"a":"ws-abcd","b":"ws-abc"}"#, "ws-abc"), "a later whole match counts");
    }
}
