//! Evaluation: a pure function of the rules, the events in the order they are given,
//! and a state that is saved with the consumer's cursor — so a restart, or a
//! backtest over archived history, decides exactly what a live run would.
//!
//! Windows and quiet periods run on event time, not on the clock: late and
//! out-of-order events are counted where they belong.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tfaudit_store::StoredEvent;

use crate::render::{Context, EventContext, Part, RuleContext, Templates, WindowContext};
use crate::rules::{Condition, Field, Rule, RuleSet, SeenKind, Severity, Test};

/// An alert a rule raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewAlert {
    /// Unique per alert: the rule, the group and the event (or the window's start, or
    /// the value first seen). The same events always give the same key.
    pub key: String,
    pub rule: String,
    pub severity: Severity,
    pub group: Option<String>,
    pub title: String,
    pub text: String,
    /// The event that raised it (for a threshold, the one that reached the count).
    pub event_seq: i64,
    pub event_id: String,
    pub source: String,
    pub event_time: Timestamp,
    pub count: u64,
    pub window_start: Option<Timestamp>,
    pub window_end: Option<Timestamp>,
    pub link: Option<String>,
    /// The rule's destinations; `None` for the default ones.
    pub destinations: Option<Vec<String>>,
    /// The original event.
    pub event: serde_json::Value,
}

/// Values seen so far, for first-seen rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    #[serde(default)]
    accessors: HashSet<String>,
    #[serde(default)]
    impersonators: HashSet<String>,
    /// resource type -> actions.
    #[serde(default)]
    kinds: HashMap<String, HashSet<String>>,
}

impl Seen {
    fn contains(&self, kind: SeenKind, e: &StoredEvent) -> Option<bool> {
        let ev = &e.event;
        Some(match kind {
            SeenKind::Accessor => self.accessors.contains(ev.accessor_id.as_deref()?),
            SeenKind::Impersonator => self.impersonators.contains(ev.impersonator_id.as_deref()?),
            SeenKind::TypeAction => {
                let (t, a) = (ev.resource_type.as_deref()?, ev.resource_action.as_deref()?);
                self.kinds.get(t).is_some_and(|actions| actions.contains(a))
            }
        })
    }

    /// Records what `e` shows.
    pub fn record(&mut self, e: &StoredEvent) {
        let ev = &e.event;
        if let Some(a) = ev.accessor_id.as_deref()
            && !self.accessors.contains(a)
        {
            self.accessors.insert(a.to_owned());
        }
        if let Some(i) = ev.impersonator_id.as_deref()
            && !self.impersonators.contains(i)
        {
            self.impersonators.insert(i.to_owned());
        }
        if let (Some(t), Some(a)) = (ev.resource_type.as_deref(), ev.resource_action.as_deref()) {
            self.add_kind(t, a);
        }
    }

    pub fn add_accessor(&mut self, a: &str) {
        self.accessors.insert(a.to_owned());
    }

    pub fn add_impersonator(&mut self, i: &str) {
        self.impersonators.insert(i.to_owned());
    }

    pub fn add_kind(&mut self, resource_type: &str, action: &str) {
        match self.kinds.get_mut(resource_type) {
            Some(actions) => {
                if !actions.contains(action) {
                    actions.insert(action.to_owned());
                }
            }
            None => {
                self.kinds.insert(resource_type.to_owned(), HashSet::from([action.to_owned()]));
            }
        }
    }
}

/// Everything evaluation remembers between events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    /// Matching event times (ms) per rule and group, sorted, for thresholds.
    #[serde(default)]
    windows: BTreeMap<String, Vec<i64>>,
    /// Per rule and group: no alert before this time (ms).
    #[serde(default)]
    quiet_until: BTreeMap<String, i64>,
    /// Per rule and group, the windows a threshold alert was raised for (start and end,
    /// ms, inclusive): their events were counted once, and later arrivals inside one
    /// belong to it. An event outside them, earlier ones too, counts anew.
    #[serde(default)]
    alerted_windows: BTreeMap<String, Vec<(i64, i64)>>,
    #[serde(default)]
    pub seen: Seen,
    /// The newest event time evaluated (ms).
    #[serde(default)]
    latest_ms: i64,
}

/// How alerts read: links into HCP Terraform, and the templates of rules that have
/// none of their own.
#[derive(Debug, Clone, Default)]
pub struct Presentation {
    /// Source name -> `https://app.terraform.io/app/<organization>`.
    pub bases: HashMap<String, String>,
    /// The title template (default [`render::DEFAULT_TITLE`]).
    pub title: Option<String>,
    /// The text template (default [`render::DEFAULT_TEXT`]).
    pub text: Option<String>,
}

/// Rules and their state.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Vec<Rule>,
    pub state: EngineState,
    presentation: Presentation,
    templates: Templates,
    /// The catalogue's names of the ids of the events being evaluated (set per batch
    /// with [`Engine::set_names`]): alert texts show `name (id)`.
    names: HashMap<String, String>,
}

/// An event and, parsed on first use, its `resource.meta`.
struct View<'a> {
    e: &'a StoredEvent,
    meta: OnceLock<serde_json::Value>,
}

impl<'a> View<'a> {
    fn new(e: &'a StoredEvent) -> Self {
        Self { e, meta: OnceLock::new() }
    }

    fn meta(&self) -> &serde_json::Value {
        self.meta.get_or_init(|| {
            serde_json::from_str::<serde_json::Value>(&self.e.event.raw)
                .ok()
                .and_then(|mut v| v.get_mut("resource").and_then(|r| r.get_mut("meta")).map(serde_json::Value::take))
                .unwrap_or(serde_json::Value::Null)
        })
    }

    /// A field's value as text; `None` when absent or null.
    fn get(&self, field: &Field) -> Option<Cow<'_, str>> {
        let ev = &self.e.event;
        let text = |v: &'a Option<String>| v.as_deref().map(Cow::Borrowed);
        match field {
            Field::Type => {
                // Not indexed: read from the original JSON.
                serde_json::from_str::<serde_json::Value>(&ev.raw)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str().map(|s| Cow::Owned(s.to_owned()))))
            }
            Field::ResourceType => text(&ev.resource_type),
            Field::ResourceAction => text(&ev.resource_action),
            Field::ResourceId => text(&ev.resource_id),
            Field::AuthType => text(&ev.auth_type),
            Field::AccessorId => text(&ev.accessor_id),
            Field::AuthDescription => text(&ev.auth_description),
            Field::ImpersonatorId => text(&ev.impersonator_id),
            Field::OrganizationId => text(&ev.organization_id),
            Field::Organization => Some(Cow::Borrowed(self.e.source.as_str())),
            Field::RequestId => text(&ev.request_id),
            Field::Actor => text(&ev.accessor_id).or_else(|| text(&ev.auth_description)),
            Field::Meta(path) => {
                let mut v = self.meta();
                for key in path {
                    v = v.get(key)?;
                }
                match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                    other => Some(Cow::Owned(other.to_string())),
                }
            }
        }
    }

    fn matches(&self, c: &Condition) -> bool {
        match c {
            Condition::Always => true,
            Condition::All(cs) => cs.iter().all(|c| self.matches(c)),
            Condition::Any(cs) => cs.iter().any(|c| self.matches(c)),
            Condition::Not(c) => !self.matches(c),
            Condition::Test(field, test) => {
                let value = self.get(field);
                match (test, value) {
                    (Test::Exists(want), v) => v.is_some() == *want,
                    (_, None) => false,
                    (Test::Equals(x), Some(v)) => v == x.as_str(),
                    (Test::OneOf(xs), Some(v)) => xs.iter().any(|x| v == x.as_str()),
                    (Test::Glob(p), Some(v)) => p.matches(&v, false),
                    (Test::Regex(r), Some(v)) => r.is_match(&v),
                }
            }
        }
    }
}

/// How late an event may arrive (in event time, behind the newest event evaluated) and
/// still be counted toward a threshold. Sync catches events up to its overlap late (10
/// minutes by default); an hour leaves room. A later event is not counted: the events
/// it would share a window with may have been forgotten, and counting it against only
/// some of them would make the outcome depend on when state was compacted.
pub const LATE_MS: i64 = 3_600_000;

fn key(rule: &str, group: &str) -> String {
    format!("{rule}\u{1f}{group}")
}

fn time(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Engine {
    /// An engine with the enabled rules of `rules` and a state (fresh, or loaded).
    #[must_use]
    pub fn new(rules: &RuleSet, state: EngineState, presentation: Presentation) -> Self {
        let rules: Vec<Rule> = rules.enabled().cloned().collect();
        let templates = Templates::new(
            rules.iter().map(|r| (r.name.as_str(), r.title.as_deref(), r.text.as_deref())),
            presentation.title.as_deref(),
            presentation.text.as_deref(),
        );
        let mut engine = Self { rules, state, presentation, templates, names: HashMap::new() };
        engine.forget_removed_rules();
        engine
    }

    /// The catalogue's names of the ids in the events about to be evaluated.
    pub fn set_names(&mut self, names: HashMap<String, String>) {
        self.names = names;
    }

    /// The ids whose names alert texts show: each event's accessor, impersonator and
    /// resource.
    #[must_use]
    pub fn ids_to_name(events: &[StoredEvent]) -> Vec<&str> {
        let mut ids: Vec<&str> = events
            .iter()
            .flat_map(|e| [&e.event.accessor_id, &e.event.impersonator_id, &e.event.resource_id])
            .flatten()
            .map(String::as_str)
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The rules being evaluated.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    fn forget_removed_rules(&mut self) {
        let names: HashSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        let known = |k: &String| k.split('\u{1f}').next().is_some_and(|n| names.contains(n));
        self.state.windows.retain(|k, _| known(k));
        self.state.quiet_until.retain(|k, _| known(k));
        self.state.alerted_windows.retain(|k, _| known(k));
    }

    /// Drops state that can no longer matter (windows and quiet periods that ended
    /// before the newest event), so that the saved state stays small.
    pub fn compact(&mut self) {
        let latest = self.state.latest_ms;
        let longest: HashMap<&str, i64> = self
            .rules
            .iter()
            .map(|r| (r.name.as_str(), r.threshold.map_or(0, |t| t.within.as_millis() as i64)))
            .collect();
        // An event up to LATE_MS behind the newest can still fall in a quiet period.
        self.state.quiet_until.retain(|_, until| *until > latest - LATE_MS);
        self.state.windows.retain(|k, v| {
            let within = k.split('\u{1f}').next().and_then(|n| longest.get(n)).copied().unwrap_or(0);
            v.retain(|t| *t >= latest - within - LATE_MS);
            !v.is_empty()
        });
        // No event that still counts can fall in a window that ended before these.
        self.state.alerted_windows.retain(|_, v| {
            v.retain(|(_, end)| *end >= latest - LATE_MS);
            !v.is_empty()
        });
    }

    /// Evaluates one event; returns the alerts it raises.
    pub fn evaluate(&mut self, e: &StoredEvent) -> Vec<NewAlert> {
        let view = View::new(e);
        let t = e.event.timestamp.as_millisecond();
        let too_late = t < self.state.latest_ms - LATE_MS;
        self.state.latest_ms = self.state.latest_ms.max(t);
        let mut raised = Vec::new();
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if !view.matches(&rule.condition) {
                continue;
            }
            if let Some(window) = &rule.time
                && !window.applies(e.event.timestamp)
            {
                continue;
            }
            let mut first_seen = None;
            if let Some(kind) = rule.first_seen {
                match self.state.seen.contains(kind, e) {
                    Some(false) => {
                        first_seen = Some(match kind {
                            SeenKind::Accessor => e.event.accessor_id.clone().unwrap_or_default(),
                            SeenKind::Impersonator => e.event.impersonator_id.clone().unwrap_or_default(),
                            SeenKind::TypeAction => format!(
                                "{}.{}",
                                e.event.resource_type.as_deref().unwrap_or_default(),
                                e.event.resource_action.as_deref().unwrap_or_default()
                            ),
                        });
                    }
                    _ => continue,
                }
            }
            let group = rule.group_by.as_ref().map(|f| view.get(f).map(Cow::into_owned).unwrap_or_default());
            let state_key = key(&rule.name, group.as_deref().unwrap_or(""));
            if self.state.quiet_until.get(&state_key).is_some_and(|until| t < *until) {
                continue;
            }
            let quiet_ms = rule.quiet.map_or(0, |q| q.as_millis() as i64);
            let (count, window, alert_key) = if let Some(th) = rule.threshold {
                if too_late
                    || self
                        .state
                        .alerted_windows
                        .get(&state_key)
                        .is_some_and(|w| w.iter().any(|(start, end)| (*start..=*end).contains(&t)))
                {
                    continue;
                }
                let within = th.within.as_millis() as i64;
                let times = self.state.windows.entry(state_key.clone()).or_default();
                let at = times.partition_point(|x| *x <= t);
                times.insert(at, t);
                let full = full_window(times, t, within, th.count as usize);
                // Keep only what an event that still counts could share a window with.
                let drop = times.partition_point(|x| *x < self.state.latest_ms - within - LATE_MS);
                times.drain(..drop);
                let Some((start, end)) = full else { continue };
                let count = times.iter().filter(|x| **x >= start && **x <= start + within).count() as u64;
                times.retain(|x| *x < start || *x > start + within);
                self.state.alerted_windows.entry(state_key.clone()).or_default().push((start, start + within));
                if quiet_ms > 0 {
                    self.state.quiet_until.insert(state_key.clone(), t + quiet_ms);
                }
                let k = format!("{}:{}:{}", rule.name, group.as_deref().unwrap_or(""), start);
                (count, Some((start, end)), k)
            } else {
                if quiet_ms > 0 {
                    self.state.quiet_until.insert(state_key.clone(), t + quiet_ms);
                }
                let k = match &first_seen {
                    Some(value) => format!("{}:{value}", rule.name),
                    None => format!("{}:{}", rule.name, e.event.id),
                };
                (1, None, k)
            };
            raised.push(self.alert(i, &view, alert_key, group, count, window, first_seen));
        }
        self.state.seen.record(e);
        raised
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        rule_index: usize,
        view: &View<'_>,
        key: String,
        group: Option<String>,
        count: u64,
        window: Option<(i64, i64)>,
        first_seen: Option<String>,
    ) -> NewAlert {
        let rule = &self.rules[rule_index];
        let e = view.e;
        let ev = &e.event;
        let event: serde_json::Value = serde_json::from_str(&ev.raw).unwrap_or(serde_json::Value::Null);
        let meta = event.get("resource").and_then(|r| r.get("meta")).cloned().unwrap_or(serde_json::Value::Null);
        let workspace = meta
            .get("workspace")
            .and_then(|w| w.get("name").or_else(|| w.get("id")))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let run = meta
            .get("run")
            .and_then(|r| r.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| (ev.resource_type.as_deref() == Some("run")).then(|| ev.resource_id.clone()).flatten());
        let link = self.presentation.bases.get(&e.source).and_then(|base| {
            let ws = meta.get("workspace").and_then(|w| w.get("name")).and_then(|v| v.as_str())?;
            let ws = url_segment(ws);
            Some(match &run {
                Some(r) => format!("{base}/workspaces/{ws}/runs/{}", url_segment(r)),
                None => format!("{base}/workspaces/{ws}"),
            })
        });
        let name_of = |id: &str| self.names.get(id).cloned();
        let named = |id: &str| tfaudit_model::name_and_id(self.names.get(id).map(String::as_str), id);
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for id in [&ev.accessor_id, &ev.impersonator_id, &ev.resource_id].into_iter().flatten() {
            if let Some(name) = self.names.get(id) {
                names.insert(id.clone(), name.clone());
            }
        }
        let context = Context {
            rule: RuleContext {
                name: rule.name.clone(),
                description: rule.description.clone(),
                severity: rule.severity.to_string(),
            },
            severity: rule.severity.to_string(),
            event: EventContext {
                id: ev.id.clone(),
                time: format_time(ev.timestamp),
                resource_type: ev.resource_type.clone().unwrap_or_default(),
                action: ev.resource_action.clone().unwrap_or_default(),
                resource_id: ev.resource_id.clone(),
                actor: ev
                    .auth_description
                    .clone()
                    .or_else(|| ev.accessor_id.as_deref().and_then(name_of))
                    .or_else(|| ev.accessor_id.clone())
                    .unwrap_or_else(|| "(system)".to_owned()),
                who: match ev.accessor_id.as_deref() {
                    Some(id) => tfaudit_model::name_and_id(
                        ev.auth_description.as_deref().or(self.names.get(id).map(String::as_str)),
                        id,
                    ),
                    None => ev.auth_description.clone().unwrap_or_else(|| "(system)".to_owned()),
                },
                resource: ev.resource_id.as_deref().map(named),
                impersonator: ev.impersonator_id.as_deref().map(named),
                names,
                accessor_id: ev.accessor_id.clone(),
                auth_type: ev.auth_type.clone(),
                impersonator_id: ev.impersonator_id.clone(),
                organization: e.source.clone(),
                organization_id: ev.organization_id.clone(),
                request_id: ev.request_id.clone(),
                meta,
                explanation: tfaudit_model::explain_with(ev, &name_of),
            },
            count,
            window: window.map(|(s, end)| WindowContext { start: format_time(time(s)), end: format_time(time(end)) }),
            group: group.clone().filter(|g| !g.is_empty()),
            first_seen,
            workspace,
            run,
            link: link.clone(),
        };
        let title = self.templates.render(Part::Title, &rule.name, &context);
        let text = self.templates.render(Part::Text, &rule.name, &context);
        NewAlert {
            key,
            rule: rule.name.clone(),
            severity: rule.severity,
            group,
            title,
            text,
            event_seq: e.seq,
            event_id: ev.id.clone(),
            source: e.source.clone(),
            event_time: ev.timestamp,
            count,
            window_start: window.map(|(s, _)| time(s)),
            window_end: window.map(|(_, end)| time(end)),
            link,
            destinations: rule.destinations.clone(),
            event,
        }
    }
}

/// Percent-encodes what cannot stand in a URL path segment.
fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first window `[s, s + within]` holding `t` and at least `count` of the sorted
/// `times`; returns its start and its last event's time.
fn full_window(times: &[i64], t: i64, within: i64, count: usize) -> Option<(i64, i64)> {
    let lo = times.partition_point(|x| *x < t - within);
    let hi = times.partition_point(|x| *x <= t);
    for i in lo..hi {
        let start = times[i];
        let end_index = times.partition_point(|x| *x <= start + within);
        if end_index - i >= count && start <= t && t <= start + within {
            return Some((start, times[end_index - 1]));
        }
    }
    None
}

#[cfg(test)]
mod tests;
