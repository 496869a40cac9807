//! The rules language.
//!
//! ```toml
//! [[rule]]
//! name = "token-created"
//! severity = "high"                     # info, low, medium, high, critical
//! description = "An API token was created"
//! match = { "resource.type" = "authentication_token", "resource.action" = "create" }
//!
//! [[rule]]
//! name = "destroy-burst"
//! severity = "high"
//! description = "Many deletions by one actor"
//! match = { "resource.action" = "destroy" }
//! threshold = { count = 20, within = "10m" }
//! group_by = "actor"
//!
//! [[rule]]
//! name = "night-admin"
//! severity = "medium"
//! description = "Admin changes outside business hours"
//! when = { any = [ { field = "resource.type", one_of = ["organization", "saml_configuration"] },
//!                  { field = "meta.team.name", equals = "owners" } ] }
//! time = { outside = "Mon-Fri 08:00-19:00", timezone = "Europe/Berlin" }
//! quiet = "1h"
//! ```
//!
//! `match` is a shorthand: every field must match its value (a string is equality, or
//! a glob with `*`/`?`; a list is "one of"; `true`/`false` is "exists"). `when` is an
//! expression: `all`, `any`, `not`, or a test of one `field` with `equals`, `one_of`,
//! `glob`, `regex`, `exists` or `null`. Both may be given; both must hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tfaudit_model::Severity;
use tfaudit_store::Pattern;
use toml::Spanned;

/// An event field a rule can test.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// Top-level `type` ("Resource").
    Type,
    ResourceType,
    ResourceAction,
    ResourceId,
    AuthType,
    AccessorId,
    AuthDescription,
    ImpersonatorId,
    OrganizationId,
    /// The organization's name in tfaudit, or its id.
    Organization,
    RequestId,
    /// The accessor id, or else its description: who did it.
    Actor,
    /// A path into `resource.meta`, such as `workspace.name`.
    Meta(Vec<String>),
}

impl Field {
    /// Parses a field name as rules write it.
    ///
    /// # Errors
    /// A message listing the fields there are.
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "type" => Self::Type,
            "resource.type" => Self::ResourceType,
            "resource.action" => Self::ResourceAction,
            "resource.id" => Self::ResourceId,
            "auth.type" => Self::AuthType,
            "auth.accessor_id" => Self::AccessorId,
            "auth.description" => Self::AuthDescription,
            "auth.impersonator_id" => Self::ImpersonatorId,
            "auth.organization_id" => Self::OrganizationId,
            "organization" => Self::Organization,
            "request.id" => Self::RequestId,
            "actor" => Self::Actor,
            other => {
                let path = other.strip_prefix("meta.").or_else(|| other.strip_prefix("resource.meta."));
                match path {
                    Some(p) if !p.is_empty() && p.split('.').all(|s| !s.is_empty()) => {
                        Self::Meta(p.split('.').map(str::to_owned).collect())
                    }
                    _ => {
                        return Err(format!(
                            "unknown field {other:?}; fields are type, resource.type, resource.action, resource.id, auth.type, \
                             auth.accessor_id, auth.description, auth.impersonator_id, auth.organization_id, organization, \
                             request.id, actor, and meta.<path> (such as meta.workspace.name)"
                        ));
                    }
                }
            }
        })
    }

    #[must_use]
    pub fn needs_meta(&self) -> bool {
        matches!(self, Self::Meta(_))
    }
}

/// A test of one field's value.
#[derive(Debug, Clone)]
pub enum Test {
    Equals(String),
    OneOf(Vec<String>),
    Glob(Pattern),
    Regex(regex::Regex),
    /// Present and not null (`true`), or absent or null (`false`).
    Exists(bool),
}

/// A condition over one event.
#[derive(Debug, Clone)]
pub enum Condition {
    Always,
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Test(Field, Test),
}

impl Condition {
    fn needs_meta(&self) -> bool {
        match self {
            Self::Always => false,
            Self::All(c) | Self::Any(c) => c.iter().any(Self::needs_meta),
            Self::Not(c) => c.needs_meta(),
            Self::Test(f, _) => f.needs_meta(),
        }
    }
}

/// Days of the week and hours of the day, in a time zone.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    /// Whether the rule applies inside the hours (`inside`) or outside (`outside`).
    pub inside: bool,
    /// Monday = 0 … Sunday = 6.
    pub days: [bool; 7],
    /// Minutes after midnight, start inclusive, end exclusive; end may be 1440.
    pub start_minute: u16,
    pub end_minute: u16,
    pub timezone: jiff::tz::TimeZone,
    pub text: String,
}

impl TimeWindow {
    /// Whether an instant falls in the window's hours (before applying inside/outside).
    #[must_use]
    pub fn in_hours(&self, t: jiff::Timestamp) -> bool {
        let local = t.to_zoned_datetime(self.timezone.clone());
        let day = local.weekday().to_monday_zero_offset() as usize;
        let minute = u16::from(local.hour() as u8) * 60 + u16::from(local.minute() as u8);
        let in_range = if self.start_minute <= self.end_minute {
            minute >= self.start_minute && minute < self.end_minute
        } else {
            // An overnight range such as 22:00-06:00.
            minute >= self.start_minute || minute < self.end_minute
        };
        self.days[day] && in_range
    }

    /// Whether the rule applies at this instant.
    #[must_use]
    pub fn applies(&self, t: jiff::Timestamp) -> bool {
        self.in_hours(t) == self.inside
    }
}

/// "At least `count` matching events within `within`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub count: u32,
    pub within: Duration,
}

/// Values whose first appearance a rule reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenKind {
    Accessor,
    Impersonator,
    TypeAction,
}

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(String),
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub severity: Severity,
    pub description: String,
    /// Named destinations; `None` means the default ones.
    pub destinations: Option<Vec<String>>,
    pub enabled: bool,
    pub condition: Condition,
    pub time: Option<TimeWindow>,
    pub threshold: Option<Threshold>,
    pub first_seen: Option<SeenKind>,
    pub group_by: Option<Field>,
    pub quiet: Option<Duration>,
    /// Template overrides for the alert's title and text.
    pub title: Option<String>,
    pub text: Option<String>,
    pub origin: Origin,
    /// Whether evaluating needs the event's `meta` parsed.
    pub needs_meta: bool,
}

/// A rules file's mistake, with its line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    severity: Spanned<String>,
    description: String,
    #[serde(default)]
    destinations: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, rename = "match")]
    matches: Option<BTreeMap<String, Spanned<MatchValue>>>,
    #[serde(default)]
    when: Option<Spanned<RawCondition>>,
    #[serde(default)]
    time: Option<Spanned<RawTime>>,
    #[serde(default)]
    threshold: Option<Spanned<RawThreshold>>,
    #[serde(default)]
    first_seen: Option<Spanned<String>>,
    #[serde(default)]
    group_by: Option<Spanned<String>>,
    #[serde(default)]
    quiet: Option<Spanned<String>>,
    #[serde(default)]
    title: Option<Spanned<String>>,
    #[serde(default)]
    text: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MatchValue {
    Text(String),
    List(Vec<String>),
    Flag(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    all: Option<Vec<Spanned<RawCondition>>>,
    any: Option<Vec<Spanned<RawCondition>>>,
    not: Option<Box<Spanned<RawCondition>>>,
    field: Option<String>,
    equals: Option<String>,
    one_of: Option<Vec<String>>,
    glob: Option<String>,
    regex: Option<String>,
    exists: Option<bool>,
    null: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    inside: Option<String>,
    outside: Option<String>,
    timezone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    count: u32,
    within: String,
}

/// Rules, in order, with built-ins first; a rule named like an earlier one replaces it.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// Parses rules text. `file` names the text in messages; `default_timezone`
    /// applies to `time` without one.
    ///
    /// # Errors
    /// The first mistake, with its line.
    pub fn parse(
        file: &str,
        text: &str,
        origin: &Origin,
        default_timezone: &jiff::tz::TimeZone,
    ) -> Result<Self, RuleError> {
        let line_at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let err = |offset: usize, message: String| RuleError { file: file.to_owned(), line: line_at(offset), message };
        let raw: RawFile = toml::from_str(text)
            .map_err(|e| err(e.span().map_or(0, |s| s.start), e.message().trim().replace('\n', " ")))?;
        let mut rules: Vec<Rule> = Vec::new();
        for spanned in raw.rules {
            let start = spanned.span().start;
            let r = spanned.into_inner();
            let name = r.name.get_ref().trim().to_owned();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(err(
                    r.name.span().start,
                    format!("rule name {name:?} must be letters, digits, '-', '_' or '.'"),
                ));
            }
            if rules.iter().any(|x| x.name == name) {
                return Err(err(r.name.span().start, format!("rule {name:?} appears twice in this file")));
            }
            let severity: Severity = r.severity.get_ref().parse().map_err(|m| err(r.severity.span().start, m))?;
            let mut parts = Vec::new();
            if let Some(m) = &r.matches {
                for (field_name, value) in m {
                    let field = Field::parse(field_name).map_err(|m| err(value.span().start, m))?;
                    let test = match value.get_ref() {
                        MatchValue::Text(t) if t.contains(['*', '?']) => {
                            Test::Glob(glob(t).map_err(|m| err(value.span().start, m))?)
                        }
                        MatchValue::Text(t) => Test::Equals(t.clone()),
                        MatchValue::List(l) => Test::OneOf(l.clone()),
                        MatchValue::Flag(b) => Test::Exists(*b),
                    };
                    parts.push(Condition::Test(field, test));
                }
            }
            if let Some(w) = r.when {
                parts.push(condition(w, &err)?);
            }
            // Tests of indexed fields first: a `meta` test parses the event's JSON, and
            // most events are rejected before that is needed.
            parts.sort_by_key(Condition::needs_meta);
            let condition = match parts.len() {
                0 => Condition::Always,
                1 => parts.remove(0),
                _ => Condition::All(parts),
            };
            let time = r.time.map(|t| time_window(t, default_timezone, &err)).transpose()?;
            let threshold = match r.threshold {
                None => None,
                Some(t) => {
                    let at = t.span().start;
                    let t = t.into_inner();
                    if t.count < 1 {
                        return Err(err(at, "threshold count must be at least 1".into()));
                    }
                    let within = parse_duration(&t.within).map_err(|m| err(at, m))?;
                    if within.is_zero() {
                        return Err(err(at, "threshold within must be more than 0".into()));
                    }
                    Some(Threshold { count: t.count, within })
                }
            };
            let first_seen = match r.first_seen {
                None => None,
                Some(s) => Some(match s.get_ref().as_str() {
                    "accessor" => SeenKind::Accessor,
                    "impersonator" => SeenKind::Impersonator,
                    "type_action" => SeenKind::TypeAction,
                    other => {
                        return Err(err(
                            s.span().start,
                            format!("first_seen {other:?}: use accessor, impersonator or type_action"),
                        ));
                    }
                }),
            };
            if first_seen.is_some() && threshold.is_some() {
                return Err(err(start, format!("rule {name:?} has both first_seen and threshold; keep one")));
            }
            let group_by = match r.group_by {
                None => None,
                Some(g) => Some(group_field(g.get_ref()).map_err(|m| err(g.span().start, m))?),
            };
            let quiet = match r.quiet {
                None => None,
                Some(q) => Some(parse_duration(q.get_ref()).map_err(|m| err(q.span().start, m))?),
            };
            for template in [&r.title, &r.text].into_iter().flatten() {
                crate::render::check_template(template.get_ref()).map_err(|m| err(template.span().start, m))?;
            }
            let needs_meta = condition.needs_meta() || group_by.as_ref().is_some_and(Field::needs_meta);
            rules.push(Rule {
                name,
                severity,
                description: r.description,
                destinations: r.destinations,
                enabled: r.enabled.unwrap_or(true),
                condition,
                time,
                threshold,
                first_seen,
                group_by,
                quiet,
                title: r.title.map(Spanned::into_inner),
                text: r.text.map(Spanned::into_inner),
                origin: origin.clone(),
                needs_meta,
            });
        }
        Ok(Self { rules })
    }

    /// Reads a rules file.
    ///
    /// # Errors
    /// A [`RuleError`] with the line, or naming the unreadable file.
    pub fn load(path: &Path, default_timezone: &jiff::tz::TimeZone) -> Result<Self, RuleError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RuleError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the rules file: {e}"),
        })?;
        Self::parse(&file, &text, &Origin::File(file.clone()), default_timezone)
    }

    /// Adds `other`'s rules: a rule with the name of one already here replaces it.
    pub fn overlay(&mut self, other: RuleSet) {
        for rule in other.rules {
            match self.rules.iter_mut().find(|r| r.name == rule.name) {
                Some(existing) => *existing = rule,
                None => self.rules.push(rule),
            }
        }
    }

    /// Turns off the named rules; returns the names that matched no rule.
    pub fn disable(&mut self, names: &[String]) -> Vec<String> {
        let mut unknown = Vec::new();
        for n in names {
            match self.rules.iter_mut().find(|r| &r.name == n) {
                Some(r) => r.enabled = false,
                None => unknown.push(n.clone()),
            }
        }
        unknown
    }

    /// The rules that are on.
    pub fn enabled(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.enabled)
    }
}

/// A checked glob: matched in time linear in the field, however large.
fn glob(text: &str) -> Result<Pattern, String> {
    let p = Pattern::new(text);
    p.check()?;
    Ok(p)
}

fn group_field(name: &str) -> Result<Field, String> {
    match name {
        "workspace" => Ok(Field::Meta(vec!["workspace".into(), "name".into()])),
        "org" => Ok(Field::Organization),
        other => Field::parse(other),
    }
}

fn condition(
    spanned: Spanned<RawCondition>,
    err: &impl Fn(usize, String) -> RuleError,
) -> Result<Condition, RuleError> {
    let at = spanned.span().start;
    let c = spanned.into_inner();
    let tests = [
        c.equals.is_some(),
        c.one_of.is_some(),
        c.glob.is_some(),
        c.regex.is_some(),
        c.exists.is_some(),
        c.null.is_some(),
    ]
    .into_iter()
    .filter(|b| *b)
    .count();
    let combinators = [c.all.is_some(), c.any.is_some(), c.not.is_some()].into_iter().filter(|b| *b).count();
    if combinators + usize::from(c.field.is_some()) != 1 {
        return Err(err(at, "a condition is one of: { all = [...] }, { any = [...] }, { not = {...} }, or { field = \"...\", <test> = ... }".into()));
    }
    if let Some(list) = c.all {
        return list.into_iter().map(|x| condition(x, err)).collect::<Result<_, _>>().map(Condition::All);
    }
    if let Some(list) = c.any {
        return list.into_iter().map(|x| condition(x, err)).collect::<Result<_, _>>().map(Condition::Any);
    }
    if let Some(inner) = c.not {
        return Ok(Condition::Not(Box::new(condition(*inner, err)?)));
    }
    let name = c.field.unwrap_or_default();
    let field = Field::parse(&name).map_err(|m| err(at, m))?;
    if tests != 1 {
        return Err(err(
            at,
            format!("the test of {name:?} needs exactly one of equals, one_of, glob, regex, exists, null"),
        ));
    }
    let test = if let Some(v) = c.equals {
        Test::Equals(v)
    } else if let Some(v) = c.one_of {
        Test::OneOf(v)
    } else if let Some(v) = c.glob {
        Test::Glob(glob(&v).map_err(|m| err(at, m))?)
    } else if let Some(v) = c.regex {
        Test::Regex(
            regex::Regex::new(&v)
                .map_err(|e| err(at, format!("regex {v:?} does not compile: {}", e.to_string().replace('\n', " "))))?,
        )
    } else if let Some(v) = c.exists {
        Test::Exists(v)
    } else {
        Test::Exists(!c.null.unwrap_or(true))
    };
    Ok(Condition::Test(field, test))
}

fn time_window(
    spanned: Spanned<RawTime>,
    default_timezone: &jiff::tz::TimeZone,
    err: &impl Fn(usize, String) -> RuleError,
) -> Result<TimeWindow, RuleError> {
    let at = spanned.span().start;
    let t = spanned.into_inner();
    let (inside, text) = match (t.inside, t.outside) {
        (Some(i), None) => (true, i),
        (None, Some(o)) => (false, o),
        _ => return Err(err(at, "time needs exactly one of inside = \"...\" or outside = \"...\"".into())),
    };
    let timezone = match &t.timezone {
        None => default_timezone.clone(),
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            err(at, format!("unknown time zone {name:?}; use an IANA name such as Europe/Berlin or UTC"))
        })?,
    };
    let (days, start_minute, end_minute) = parse_hours(&text).map_err(|m| err(at, m))?;
    Ok(TimeWindow { inside, days, start_minute, end_minute, timezone, text })
}

/// Parses `Mon-Fri 08:00-19:00`, `Sat,Sun`, `22:00-06:00`.
fn parse_hours(text: &str) -> Result<([bool; 7], u16, u16), String> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let bad = || {
        format!(
            "{text:?} is not a time range; write days and hours such as \"Mon-Fri 08:00-19:00\", \"Sat,Sun\" or \"22:00-06:00\""
        )
    };
    let mut days = [true; 7];
    let (mut start, mut end) = (0u16, 24 * 60u16);
    for part in text.split_whitespace() {
        if part.contains(':') {
            let (a, b) = part.split_once('-').ok_or_else(bad)?;
            let minute = |s: &str| -> Result<u16, String> {
                let (h, m) = s.split_once(':').ok_or_else(bad)?;
                let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
                if h > 24 || m > 59 || (h == 24 && m != 0) {
                    return Err(bad());
                }
                Ok(h * 60 + m)
            };
            start = minute(a)?;
            end = minute(b)?;
        } else {
            days = [false; 7];
            for item in part.split(',') {
                let index =
                    |d: &str| DAYS.iter().position(|x| d.len() >= 3 && x.eq_ignore_ascii_case(&d[..3])).ok_or_else(bad);
                match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (index(a)?, index(b)?);
                        let mut d = a;
                        loop {
                            days[d] = true;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => days[index(item)?] = true,
                }
            }
        }
    }
    if start == end {
        return Err(bad());
    }
    Ok((days, start, end))
}

/// `10m`, `1h30m`, `7d`: the same forms as everywhere in tfaudit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    tfaudit_config::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
