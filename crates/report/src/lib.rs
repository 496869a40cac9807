//! The compliance report (`tfaudit report`): what an auditor asks for over a period —
//! whether the record is complete, whether it is intact, and the changes that matter
//! (privileged access, tokens, single sign-on and settings, policy overrides,
//! destruction, impersonation, alerts), with the period's activity.
//!
//! [`gather`] reads the archive through the store's roles only, so both backends serve
//! it alike, and never decodes every event of the period: counts come from the
//! summary's hourly rollups (the kinds present in the period decide which indexed
//! queries run at all), items from queries filtered by resource type and action (or
//! by impersonator) and bounded by [`Request::limit`]. [`render`] writes the result as
//! one self-contained HTML page, Markdown or JSON; every string that came from an event
//! is escaped for the format it is written in.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use tfaudit_store::{AlertFilter, EventFilter, Order, Pattern, Store, StoreError, StoredEvent};

mod period;
pub mod render;

pub use period::{Cadence, Period};
pub use render::{Format, render};

/// Errors of the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A period that cannot be read; the message says how to write one.
    #[error("{0}")]
    Period(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name of an id (a workspace's, a team's, a user's), where one is known. The
/// report shows `name (id)` then; an event's own `auth.description` names its actor
/// without asking.
pub trait NameOf {
    fn name_of(&self, id: &str) -> Option<String>;
}

/// Knows no names: every id is shown as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNames;

impl NameOf for NoNames {
    fn name_of(&self, _id: &str) -> Option<String> {
        None
    }
}

/// The catalogue's current names.
impl NameOf for tfaudit_store::NameBook {
    fn name_of(&self, id: &str) -> Option<String> {
        self.name(id).map(str::to_owned)
    }
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct Request {
    pub period: Period,
    /// Only organizations whose name or id matches (a case-insensitive glob).
    pub org: Option<String>,
    /// The zone times are shown in (and days counted in).
    pub zone: TimeZone,
    /// The dashboard's address as its readers reach it (`[serve] public_url`): each
    /// item links to its event page there. None: no links.
    pub public_url: Option<String>,
    /// When the report is made: a period that has not ended yet is reported up to now.
    pub now: Timestamp,
    /// At most this many items listed per section (all are counted).
    pub limit: usize,
}

impl Request {
    /// The period's end, or now when it has not ended yet.
    #[must_use]
    pub fn effective_until(&self) -> Timestamp {
        self.period.until.min(self.now).max(self.period.since)
    }
}

/// The whole report; JSON readers get it as it is (times in UTC).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    pub period: Period,
    /// The zone times are shown in, in the HTML and Markdown.
    pub zone: String,
    /// The organization filter, if one was given.
    pub organization: Option<String>,
    pub generated_at: Timestamp,
    pub generator: String,
    pub coverage: Vec<Coverage>,
    pub integrity: Integrity,
    pub privileged_access: Section,
    pub tokens: Tokens,
    pub sso_and_settings: Section,
    pub policy_overrides: Section,
    pub destruction: Section,
    pub impersonations: Section,
    pub alerts: Alerts,
    pub activity: Activity,
}

/// One organization's collection over the period.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub organization: String,
    pub organization_id: Option<String>,
    /// Events of the period in the archive.
    pub events: u64,
    /// Syncs started in the period, by how they ended.
    pub syncs: u64,
    pub syncs_ok: u64,
    pub syncs_failed: u64,
    pub syncs_interrupted: u64,
    /// The newest failed syncs of the period.
    pub failures: Vec<SyncFailure>,
    /// The latest successful sync (after the period too: it vouches for the period).
    pub last_successful_sync: Option<Timestamp>,
    /// How far the record stops short of the period's end (or now), in seconds.
    pub behind_seconds: Option<i64>,
    /// Gaps (times whose events may be lost) that overlap the period.
    pub gaps: Vec<GapItem>,
    /// The stretch of the period the record covers, gaps aside.
    pub complete_from: Option<Timestamp>,
    pub complete_to: Option<Timestamp>,
    /// The record's completeness in one sentence (times in UTC; the HTML and Markdown
    /// word it in the report's zone).
    pub statement: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncFailure {
    pub started_at: Timestamp,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GapItem {
    pub from: Timestamp,
    pub to: Timestamp,
    pub detected_at: Timestamp,
}

/// The archive's tamper evidence as it stands.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// Events in the Merkle tree.
    pub tree_size: u64,
    pub checkpoint: Option<CheckpointItem>,
    pub verification: Option<VerificationItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointItem {
    pub size: u64,
    pub root: String,
    /// The key that signed it; None: unsigned.
    pub signed_by: Option<String>,
    pub made_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerificationItem {
    pub at: Timestamp,
    pub size: u64,
    pub ok: bool,
    pub finding: Option<String>,
}

/// A list of events of one kind of change: all counted, the first `limit` listed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Section {
    pub total: u64,
    /// Oldest first.
    pub items: Vec<Item>,
    /// Counts by type and action, most first.
    pub by_kind: Vec<(String, u64)>,
}

/// One event in a section.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub time: Timestamp,
    pub organization: String,
    pub event_id: String,
    /// `resource.type resource.action`.
    pub kind: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub impersonator_id: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    /// The event in plain words.
    pub explanation: String,
    /// Why it stands out: `owners team`, `destroy run`.
    pub note: Option<String>,
    /// Its page on the dashboard.
    pub link: Option<String>,
}

/// Tokens created and deleted in the period, and those alive at its end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tokens {
    #[serde(flatten)]
    pub changes: Section,
    /// Tokens whose creation the archive holds, created before the period's end, with no
    /// deletion seen before it.
    pub alive_total: u64,
    pub alive: Vec<Item>,
}

/// Alerts raised about the period's events, with their delivery.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Alerts {
    pub total: u64,
    /// Deliveries by state (`delivered`, `pending`, `failing`, `abandoned`).
    pub deliveries: BTreeMap<String, u64>,
    pub by_rule: Vec<(String, u64)>,
    pub items: Vec<AlertItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertItem {
    pub id: i64,
    pub rule: String,
    pub severity: String,
    pub title: String,
    pub organization: String,
    pub event_id: String,
    pub event_time: Timestamp,
    pub raised_at: Timestamp,
    pub deliveries: Vec<DeliveryItem>,
    pub link: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryItem {
    pub destination: String,
    pub state: String,
    pub attempts: u64,
    pub last_error: Option<String>,
}

/// The period's activity, from the hourly rollups.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Activity {
    pub total: u64,
    pub top_actors: Vec<ActorItem>,
    pub top_kinds: Vec<(String, u64)>,
    /// Every day of the period in the report's zone, oldest first, with none too.
    pub per_day: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorItem {
    pub accessor_id: String,
    pub name: Option<String>,
    pub events: u64,
}

/// Top actors and kinds listed in the activity section.
const TOP: usize = 10;

/// At most this many failed syncs listed per organization.
const FAILURES: u64 = 10;

fn is_read(action: &str) -> bool {
    matches!(action, "index" | "show" | "read" | "list")
}

/// The kinds of change each section lists, as a test on (resource type, action).
fn privileged(t: &str, a: &str) -> bool {
    !is_read(a)
        && (matches!(t, "team" | "organization_user" | "organization_membership" | "team_member")
            || (t == "workspace" && matches!(a, "add_team" | "remove_team" | "update_team_permissions")))
}

fn token_change(t: &str, a: &str) -> bool {
    t.contains("token") && matches!(a, "create" | "destroy" | "delete")
}

fn settings(t: &str, a: &str) -> bool {
    !is_read(a) && matches!(t, "saml_configuration" | "organization" | "data_retention_policy")
}

fn policy_override(_t: &str, a: &str) -> bool {
    a == "override"
}

fn deletion(t: &str, a: &str) -> bool {
    t == "workspace" && matches!(a, "destroy" | "delete")
}

/// Reads the report from the archive.
///
/// # Errors
/// On a database failure.
pub fn gather(store: &dyn Store, request: &Request, names: &dyn NameOf) -> Result<Report, ReportError> {
    let since = request.period.since;
    let until = request.period.until;
    let org = request.org.as_deref().map(Pattern::new);
    let base = EventFilter { since: Some(since), until: Some(until), org: org.clone(), ..EventFilter::default() };
    let summary = store.summary(&base, usize::MAX)?;
    let kinds: Vec<(String, String, u64)> =
        summary.by_kind.iter().map(|k| (k.resource_type.clone(), k.action.clone(), k.count)).collect();
    let reader = Reader { store, request, names, base: &base };

    let privileged_access = reader.section(&kinds, privileged, |e| owners(e).then(|| "owners team".to_owned()))?;
    let tokens = reader.tokens(&kinds)?;
    let sso_and_settings = reader.section(&kinds, settings, |_| None)?;
    let policy_overrides = reader.section(&kinds, policy_override, |_| None)?;
    let destruction = reader.destruction(&kinds)?;
    let impersonations = reader.impersonations()?;
    let alerts = reader.alerts()?;
    let activity = activity(&summary, request, names);
    let coverage = coverage(store, request, org.as_ref())?;
    let integrity = Integrity {
        tree_size: store.tree_head()?.map_or(0, |h| h.size),
        checkpoint: store.latest_checkpoint()?.map(|c| CheckpointItem {
            size: c.size,
            root: hex::encode(c.root),
            signed_by: c.signed_by,
            made_at: c.made_at,
        }),
        verification: store.latest_verification(false)?.map(|v| VerificationItem {
            at: v.at,
            size: v.size,
            ok: v.ok(),
            finding: v.finding,
        }),
    };
    Ok(Report {
        title: format!("Compliance report: {}", request.period.label),
        period: request.period.clone(),
        zone: request.zone.iana_name().unwrap_or("UTC").to_owned(),
        organization: request.org.clone(),
        generated_at: request.now,
        generator: format!("tfaudit {}", env!("CARGO_PKG_VERSION")),
        coverage,
        integrity,
        privileged_access,
        tokens,
        sso_and_settings,
        policy_overrides,
        destruction,
        impersonations,
        alerts,
        activity,
    })
}

/// A membership change of the team named `owners` (HCP Terraform's all-powerful team).
fn owners(e: &StoredEvent) -> bool {
    e.event.resource_type.as_deref() == Some("team") && meta_str(e, "/resource/meta/team/name") == Some("owners".into())
}

fn meta_str(e: &StoredEvent, pointer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&e.event.raw).ok()?;
    v.pointer(pointer).and_then(serde_json::Value::as_str).map(str::to_owned)
}

struct Reader<'a> {
    store: &'a dyn Store,
    request: &'a Request,
    names: &'a dyn NameOf,
    base: &'a EventFilter,
}

impl Reader<'_> {
    fn item(&self, e: &StoredEvent, note: Option<String>) -> Item {
        let ev = &e.event;
        let actor_name =
            ev.auth_description.clone().or_else(|| ev.accessor_id.as_deref().and_then(|id| self.names.name_of(id)));
        Item {
            time: ev.timestamp,
            organization: e.source.clone(),
            event_id: ev.id.clone(),
            kind: format!(
                "{} {}",
                ev.resource_type.as_deref().unwrap_or("?"),
                ev.resource_action.as_deref().unwrap_or("?")
            ),
            actor_id: ev.accessor_id.clone(),
            actor_name,
            impersonator_id: ev.impersonator_id.clone(),
            resource_id: ev.resource_id.clone(),
            resource_name: ev.resource_id.as_deref().and_then(|id| self.names.name_of(id)),
            explanation: tfaudit_model::explain_with(ev, &|id| self.names.name_of(id)),
            note,
            link: self.link(&ev.id),
        }
    }

    fn link(&self, id: &str) -> Option<String> {
        self.request
            .public_url
            .as_deref()
            .map(|base| format!("{}/events/{}", base.trim_end_matches('/'), path_segment(id)))
    }

    /// The events matching `filter`, oldest first, at most the report's limit.
    ///
    /// Read without a limit and stopped once enough arrived: with a limit the SQLite
    /// backend may walk the time index of the whole period for a rare kind, where the
    /// kind's own index holds its events in time order.
    fn read(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, ReportError> {
        let mut out = Vec::new();
        let limit = self.request.limit;
        if limit == 0 {
            return Ok(out);
        }
        let read = self.store.events(filter, Order::OldestFirst, None, &mut |e| {
            out.push(e);
            if out.len() >= limit { Err(std::io::Error::other(Enough)) } else { Ok(()) }
        });
        match read {
            Err(StoreError::Output(e)) if e.get_ref().is_some_and(|inner| inner.is::<Enough>()) => {}
            other => {
                other?;
            }
        }
        Ok(out)
    }

    fn kind_filter(&self, t: &str, a: &str) -> EventFilter {
        EventFilter { resource_type: Some(Pattern::new(t)), action: Some(Pattern::new(a)), ..self.base.clone() }
    }

    /// A section of every kind present in the period that `test` takes.
    fn section(
        &self,
        kinds: &[(String, String, u64)],
        test: fn(&str, &str) -> bool,
        note: impl Fn(&StoredEvent) -> Option<String>,
    ) -> Result<Section, ReportError> {
        let mut section = Section::default();
        let mut events = Vec::new();
        for (t, a, n) in kinds.iter().filter(|(t, a, _)| test(t, a)) {
            section.total += n;
            section.by_kind.push((format!("{t} {a}"), *n));
            events.extend(self.read(&self.kind_filter(t, a))?);
        }
        section.items = self.listed(events, note);
        Ok(section)
    }

    fn listed(&self, mut events: Vec<StoredEvent>, note: impl Fn(&StoredEvent) -> Option<String>) -> Vec<Item> {
        events.sort_by_key(|e| (e.event.timestamp, e.seq));
        events.truncate(self.request.limit);
        events.iter().map(|e| self.item(e, note(e))).collect()
    }

    fn tokens(&self, kinds: &[(String, String, u64)]) -> Result<Tokens, ReportError> {
        let changes = self.section(kinds, token_change, |_| None)?;
        // Alive at the period's end: every creation the archive holds before the end,
        // less the tokens deleted before it. Counted from the events' keys (no event
        // is read whole for it); only the listed creations are read whole, at the end.
        let token_types: Vec<String> = {
            // Token kinds ever seen are few; the period's and the built-in one suffice
            // to find creations that may predate the period.
            let mut t: Vec<String> =
                kinds.iter().filter(|(t, _, _)| t.contains("token")).map(|(t, _, _)| t.clone()).collect();
            t.push("authentication_token".into());
            t.sort();
            t.dedup();
            t
        };
        let before_end = |t: &str, action: &str| EventFilter { since: None, ..self.kind_filter(t, action) };
        let mut deleted: HashSet<String> = HashSet::new();
        for t in &token_types {
            for action in ["destroy", "delete"] {
                self.store.event_keys(&before_end(t, action), Order::OldestFirst, &mut |k| {
                    if let Some(id) = k.resource_id {
                        deleted.insert(id);
                    }
                    Ok(())
                })?;
            }
        }
        let mut alive: Vec<(Timestamp, i64)> = Vec::new();
        for t in &token_types {
            self.store.event_keys(&before_end(t, "create"), Order::OldestFirst, &mut |k| {
                if k.resource_id.as_ref().is_some_and(|id| !deleted.contains(id)) {
                    alive.push((k.timestamp, k.seq));
                }
                Ok(())
            })?;
        }
        let alive_total = alive.len() as u64;
        alive.sort_unstable();
        alive.truncate(self.request.limit);
        let created = self.creations(&alive)?;
        Ok(Tokens { changes, alive_total, alive: self.listed(created, |_| None) })
    }

    /// The events `keys` names (time, seq), read whole one by one by their seq: a
    /// listing's worth of row lookups, where a read by type and time would read every
    /// creation in between, the deleted ones too.
    fn creations(&self, keys: &[(Timestamp, i64)]) -> Result<Vec<StoredEvent>, ReportError> {
        let mut out = Vec::with_capacity(keys.len());
        for &(_, seq) in keys {
            self.store.events_after(seq - 1, 1, &mut |e| {
                if e.seq == seq {
                    out.push(e);
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// Workspaces deleted (counted from the rollups) and runs applied that destroy
    /// (counted and found through the archive's index of destroy runs).
    fn destruction(&self, kinds: &[(String, String, u64)]) -> Result<Section, ReportError> {
        let mut section = self.section(kinds, deletion, |_| Some("workspace deleted".into()))?;
        if kinds.iter().any(|(t, a, _)| t == "run" && a == "apply") {
            let f = EventFilter { destroy_run: true, ..self.kind_filter("run", "apply") };
            let count = self.store.event_keys(&f, Order::OldestFirst, &mut |_| Ok(()))?;
            if count > 0 {
                let runs = self.read(&f)?;
                section.total += count;
                section.by_kind.push(("run apply (destroy)".into(), count));
                section.by_kind.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                section.items.extend(self.listed(runs, |_| Some("destroy run".into())));
                section.items.sort_by_key(|i| i.time);
                section.items.truncate(self.request.limit);
            }
        }
        Ok(section)
    }

    fn impersonations(&self) -> Result<Section, ReportError> {
        let f = EventFilter { impersonated: true, ..self.base.clone() };
        // Counted from the impersonator index's rows, not the events' bodies.
        let summary = self.store.summary(&f, usize::MAX)?;
        let events = self.read(&f)?;
        Ok(Section {
            total: summary.total,
            items: self.listed(events, |e| e.event.impersonator_id.as_ref().map(|i| format!("by {i}"))),
            by_kind: summary.by_kind.iter().map(|k| (format!("{} {}", k.resource_type, k.action), k.count)).collect(),
        })
    }

    fn alerts(&self) -> Result<Alerts, ReportError> {
        let (since, until) = (self.request.period.since, self.request.period.until);
        let org = self.request.org.as_deref().map(Pattern::new);
        // An alert is raised after its event: those raised since the period began hold
        // every alert about the period's events.
        let records = self.store.alerts(&AlertFilter { since: Some(since), ..AlertFilter::default() }, u64::MAX)?;
        let mut out = Alerts::default();
        let mut rules: BTreeMap<String, u64> = BTreeMap::new();
        let mut records: Vec<_> = records
            .into_iter()
            .filter(|a| a.event_time >= since && a.event_time < until)
            .filter(|a| org.as_ref().is_none_or(|o| o.matches(&a.source, true)))
            .collect();
        records.sort_by_key(|a| (a.event_time, a.id));
        for a in &records {
            out.total += 1;
            *rules.entry(a.rule.clone()).or_default() += 1;
            for d in &a.deliveries {
                *out.deliveries.entry(d.state.as_str().to_owned()).or_default() += 1;
            }
        }
        out.by_rule = rules.into_iter().collect();
        out.by_rule.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.items = records
            .into_iter()
            .take(self.request.limit)
            .map(|a| AlertItem {
                id: a.id,
                rule: a.rule.clone(),
                severity: a.severity.clone(),
                title: a.title.clone(),
                organization: a.source.clone(),
                event_id: a.event_id.clone(),
                event_time: a.event_time,
                raised_at: a.raised_at,
                link: self.link(&a.event_id),
                deliveries: a
                    .deliveries
                    .iter()
                    .map(|d| DeliveryItem {
                        destination: d.destination.clone(),
                        state: d.state.as_str().to_owned(),
                        attempts: d.attempts,
                        last_error: d.last_error.clone(),
                    })
                    .collect(),
            })
            .collect();
        Ok(out)
    }
}

/// Stops a read once a listing is full.
#[derive(Debug)]
struct Enough;

impl std::fmt::Display for Enough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the listing is full")
    }
}

impl std::error::Error for Enough {}

/// An id as one URL path segment: everything but unreserved characters percent-encoded,
/// so that an event id from the API cannot leave the link's path.
#[must_use]
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn activity(summary: &tfaudit_store::Summary, request: &Request, names: &dyn NameOf) -> Activity {
    let zone = &request.zone;
    let mut days: BTreeMap<jiff::civil::Date, u64> = BTreeMap::new();
    // Every day of the period, so that quiet days show as such.
    let first = request.period.since.to_zoned_datetime(zone.clone()).date();
    let last_instant =
        request.period.until.checked_sub(jiff::SignedDuration::from_millis(1)).unwrap_or(request.period.until);
    let last = last_instant.to_zoned_datetime(zone.clone()).date();
    let mut d = first;
    while d <= last && days.len() < 3700 {
        days.insert(d, 0);
        match d.tomorrow() {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    for h in &summary.per_hour {
        // `YYYY-MM-DDTHH:00Z`: the hour's start, counted on its day in the zone.
        if let Ok(t) = format!("{}:00Z", h.day.trim_end_matches('Z')).parse::<Timestamp>() {
            *days.entry(t.to_zoned_datetime(zone.clone()).date()).or_default() += h.count;
        }
    }
    Activity {
        total: summary.total,
        top_actors: summary
            .top_actors
            .iter()
            .take(TOP)
            .map(|a| ActorItem {
                accessor_id: a.accessor_id.clone(),
                name: a.description.clone().or_else(|| names.name_of(&a.accessor_id)),
                events: a.count,
            })
            .collect(),
        top_kinds: summary
            .by_kind
            .iter()
            .take(TOP)
            .map(|k| (format!("{} {}", k.resource_type, k.action), k.count))
            .collect(),
        per_day: days.into_iter().map(|(d, n)| (d.to_string(), n)).collect(),
    }
}

fn coverage(store: &dyn Store, request: &Request, org: Option<&Pattern>) -> Result<Vec<Coverage>, ReportError> {
    let since = request.period.since;
    let end = request.effective_until();
    let runs = store.run_totals(Some(since), Some(request.period.until), FAILURES)?;
    let mut out = Vec::new();
    for s in store.status()? {
        let matches = org.is_none_or(|o| {
            o.matches(&s.name, true) || s.organization_id.as_deref().is_some_and(|id| o.matches(id, true))
        });
        if !matches {
            continue;
        }
        let totals = runs.iter().find(|r| r.source == s.name).cloned().unwrap_or_default();
        let events = store
            .summary(
                &EventFilter {
                    since: Some(since),
                    until: Some(request.period.until),
                    org: Some(Pattern::new(s.name.as_str())),
                    ..EventFilter::default()
                },
                0,
            )?
            .total;
        // Complete from the oldest event collected (the first backfill reached back that
        // far at least) to where the last successful sync left the record.
        // A sync that succeeded after the period still vouches for all of it.
        let reached = match (s.last_success, s.cursor) {
            (Some(ok), Some(c)) => Some(ok.max(c)),
            (ok, c) => ok.or(c),
        };
        let from = s.oldest.map(|o| o.max(since));
        let to = reached.map(|r| r.min(end));
        let (complete_from, complete_to) = match (from, to) {
            (Some(f), Some(t)) if f < t => (Some(f), Some(t)),
            _ => (None, None),
        };
        let gaps: Vec<GapItem> = s
            .gaps
            .iter()
            .filter(|g| g.from < end && g.to > since)
            .map(|g| GapItem { from: g.from, to: g.to, detected_at: g.detected_at })
            .collect();
        let behind_seconds = complete_to
            .map(|t| (end.as_second() - t.as_second()).max(0))
            .or_else(|| (end > since).then(|| end.as_second() - since.as_second()));
        let statement = statement(complete_from, complete_to, &gaps, since, end, &TimeZone::UTC);
        out.push(Coverage {
            organization: s.name.clone(),
            organization_id: s.organization_id.clone(),
            events,
            syncs: totals.runs,
            syncs_ok: totals.ok,
            syncs_failed: totals.failed,
            syncs_interrupted: totals.interrupted,
            failures: totals
                .failures
                .iter()
                .map(|r| SyncFailure {
                    started_at: r.started_at,
                    error: match &r.result {
                        Some(tfaudit_store::RunResult::Failed(e)) => e.clone(),
                        _ => String::new(),
                    },
                })
                .collect(),
            last_successful_sync: s.last_success,
            behind_seconds,
            gaps,
            complete_from,
            complete_to,
            statement,
        });
    }
    Ok(out)
}

/// The completeness sentence, with times shown in `zone`.
#[must_use]
pub fn statement(
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    gaps: &[GapItem],
    since: Timestamp,
    end: Timestamp,
    zone: &TimeZone,
) -> String {
    let t = |x: Timestamp| render::shown(x, zone);
    let (Some(from), Some(to)) = (from, to) else {
        return format!("Nothing was collected for {} to {}: the record of this period is empty.", t(since), t(end));
    };
    let mut s = format!("The record is complete from {} to {}", t(from), t(to));
    let inside: Vec<&GapItem> = gaps.iter().filter(|g| g.from < to && g.to > from).collect();
    if inside.is_empty() {
        s.push('.');
    } else {
        let list: Vec<String> = inside.iter().map(|g| format!("{} to {}", t(g.from), t(g.to))).collect();
        s.push_str(&format!(
            " except for {} gap{} whose events may be lost: {}.",
            inside.len(),
            if inside.len() == 1 { "" } else { "s" },
            list.join("; ")
        ));
    }
    if from > since {
        s.push_str(&format!(" Nothing was collected before {}.", t(from)));
    }
    if to < end {
        s.push_str(&format!(" Nothing was collected after {} (the last successful sync).", t(to)));
    }
    s
}
