//! `tfaudit who ID`: everything one accessor (a user, a team, a token) did, and what
//! the tokens it created did after, followed from token to token.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;

use jiff::Timestamp;
use serde::Serialize;
use tfaudit_store::{EventFilter, Order, Store};

use crate::args::{Cli, ReportFormat, WhoArgs};
use crate::failure::Failure;
use crate::output;

/// How many tokens deep `who` follows: a chain longer than this is cut, and said so.
const MAX_TOKENS: usize = 1_000;

/// What one accessor did.
#[derive(Debug, Default, Serialize)]
struct Trail {
    id: String,
    /// The names (`auth.description`) its events carried.
    names: BTreeSet<String>,
    first_seen: Option<Timestamp>,
    last_seen: Option<Timestamp>,
    /// Events it made.
    events: u64,
    /// (type, action) → count, most first.
    actions: Vec<ActionCount>,
    /// Events in which it acted as someone else (it was the impersonator).
    impersonations: Vec<Impersonation>,
    /// The ids of its events, to find the alerts they raised.
    #[serde(skip)]
    event_ids: BTreeSet<String>,
}

#[derive(Debug, Serialize)]
struct ActionCount {
    resource_type: String,
    action: String,
    events: u64,
}

#[derive(Debug, Serialize)]
struct Impersonation {
    event_id: String,
    at: Timestamp,
    as_accessor: Option<String>,
}

/// A token created by the accessor (or by one of its tokens), and what it did.
#[derive(Debug, Serialize)]
struct Token {
    id: String,
    created_at: Timestamp,
    created_by: String,
    event_id: String,
    trail: Trail,
}

/// An alert raised by one of its events or its tokens' events.
#[derive(Debug, Serialize)]
struct RaisedAlert {
    id: i64,
    rule: String,
    severity: String,
    title: String,
    event_id: String,
    raised_at: Timestamp,
    /// Who made the event: the accessor or one of its tokens.
    by: String,
}

#[derive(Debug, Serialize)]
struct Who {
    #[serde(flatten)]
    trail: Trail,
    /// Tokens it created and the tokens those created, in the order found.
    tokens: Vec<Token>,
    /// Alerts raised by its events and its tokens' events, oldest first.
    alerts: Vec<RaisedAlert>,
    /// Whether the chain of tokens was cut at [`MAX_TOKENS`].
    truncated: bool,
}

/// A token's creation: its id, when, and the creating event's id.
type Created = (String, Timestamp, String);

/// Reads one accessor's events in the range: what it did, its impersonations, and the
/// tokens it created (id, when, creating event).
fn trail(store: &dyn Store, id: &str, range: &EventFilter) -> Result<(Trail, Vec<Created>), Failure> {
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

pub fn who(cli: &Cli, args: &WhoArgs) -> Result<(), Failure> {
    let id = args.id.trim();
    if id.is_empty() {
        return Err(Failure::Usage("who needs an accessor id, such as user-…, team-… or at-…".into()));
    }
    let range = super::read::filter(&args.range.filter(), Timestamp::now())?;
    let store = super::read::open_for_reading(cli)?;
    let id = &super::read::resolve_id(&*store, id)?;
    let (trail, created) = trail(&*store, id, &range)?;
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
        let (trail, created) = self::trail(&*store, &token, &range)?;
        queue.extend(created.into_iter().map(|(t, at, ev)| (t, at, ev, token.clone())));
        tokens.push(Token { id: token, created_at, created_by, event_id, trail });
    }
    let alerts = raised_alerts(&*store, &range, &trail, &tokens)?;
    let who = Who { trail, tokens, alerts, truncated };
    let mut out = output::Stdout::new();
    match args.format {
        ReportFormat::Json => out.json(&who)?,
        ReportFormat::Text => text(&who, &mut out)?,
    }
    Ok(())
}

/// The alerts whose event is one of the accessor's or its tokens'.
fn raised_alerts(
    store: &dyn Store,
    range: &EventFilter,
    trail: &Trail,
    tokens: &[Token],
) -> Result<Vec<RaisedAlert>, Failure> {
    let filter = tfaudit_store::AlertFilter { since: range.since, ..tfaudit_store::AlertFilter::default() };
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

fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    output::terminal_safe(s)
}

fn trail_text(t: &Trail, indent: &str, out: &mut dyn Write) -> std::io::Result<()> {
    match (t.first_seen, t.last_seen) {
        (Some(first), Some(last)) => writeln!(
            out,
            "{indent}{} events, first {}, last {}",
            output::count(t.events),
            output::time(first),
            output::time(last)
        )?,
        _ => writeln!(out, "{indent}no events of its own")?,
    }
    for a in &t.actions {
        writeln!(out, "{indent}  {:>6}  {} {}", output::count(a.events), safe(&a.resource_type), safe(&a.action))?;
    }
    for i in &t.impersonations {
        writeln!(
            out,
            "{indent}impersonated {} at {} (event {})",
            safe(i.as_accessor.as_deref().unwrap_or("(unknown)")),
            output::time(i.at),
            safe(&i.event_id)
        )?;
    }
    Ok(())
}

fn text(who: &Who, out: &mut dyn Write) -> std::io::Result<()> {
    let names: Vec<String> = who.trail.names.iter().map(|n| safe(n).into_owned()).collect();
    let named = if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) };
    writeln!(out, "{}{named}", safe(&who.trail.id))?;
    trail_text(&who.trail, "  ", out)?;
    if who.tokens.is_empty() {
        writeln!(out, "  tokens created: none")?;
    } else {
        writeln!(out, "  tokens created ({}), and what each did after:", who.tokens.len())?;
    }
    for t in &who.tokens {
        writeln!(
            out,
            "  token {} created {} by {} (event {})",
            safe(&t.id),
            output::time(t.created_at),
            safe(&t.created_by),
            safe(&t.event_id)
        )?;
        trail_text(&t.trail, "    ", out)?;
    }
    if who.alerts.is_empty() {
        writeln!(out, "  alerts raised: none")?;
    } else {
        writeln!(out, "  alerts raised ({}):", who.alerts.len())?;
    }
    for a in &who.alerts {
        writeln!(
            out,
            "    #{} {} [{}] {} — event {} by {}",
            a.id,
            output::time(a.raised_at),
            safe(&a.severity),
            safe(&a.title),
            safe(&a.event_id),
            safe(&a.by)
        )?;
    }
    if who.truncated {
        writeln!(out, "  (more tokens: only the first {MAX_TOKENS} were followed)")?;
    }
    Ok(())
}
