//! The report as one self-contained HTML page (inline CSS and SVG, no script, no
//! external resource; printable), as Markdown (plain tables), or as JSON.
//!
//! Event strings are untrusted (an organization's users write names, messages and
//! descriptions): in HTML every one is escaped as text; in Markdown every character a
//! renderer could act on is escaped and line breaks are shown, never kept, so that no
//! value leaves its table cell. Control, zero-width and bidirectional characters are
//! shown as escapes in both (`\n`, `\t`, `\r`, else `\u{…}`), as everywhere tfaudit
//! shows an event's strings ([`escape_invisible`]).

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tfaudit_model::count;
use tfaudit_model::event::escape_invisible;

use crate::{AlertItem, Alerts, Coverage, Item, Report, Section};

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Markdown,
    Json,
}

/// The sections, in the order written, with their headings.
pub const HEADINGS: [&str; 10] = [
    "Coverage",
    "Integrity",
    "Privileged access changes",
    "Token lifecycle",
    "SSO and organization settings changes",
    "Policy overrides",
    "Destroy runs and workspace deletions",
    "Impersonations",
    "Alerts",
    "Activity",
];

/// What an empty section says.
pub const NONE: &str = "None in this period.";

/// Writes `report` in `format`.
#[must_use]
pub fn render(report: &Report, format: Format, zone: &TimeZone) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            s.push('\n');
            s
        }
        Format::Markdown => Markdown { zone }.report(report),
        Format::Html => Html { zone }.report(report),
    }
}

/// A time as people read it in `zone`: `2026-11-05T10:00:00Z`, or with the zone's offset.
#[must_use]
pub fn shown(t: Timestamp, zone: &TimeZone) -> String {
    if zone.iana_name() == Some("UTC") || zone.iana_name() == Some("Etc/UTC") {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.to_zoned_datetime(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Text for HTML: escaped as text and as an attribute value alike.
#[must_use]
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in escape_invisible(s, false).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for Markdown, in a table cell or a paragraph (never at a line's start): HTML's
/// three characters as entities, every punctuation mark Markdown acts on within a line
/// behind a backslash (emphasis, code, links and images, tables, strikethrough), line
/// breaks shown as `\n`.
#[must_use]
pub fn markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in escape_invisible(s, false).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '|' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `name (id)`, or the id, or the name, or `-`.
fn named(name: Option<&str>, id: Option<&str>) -> String {
    match (name, id) {
        (Some(n), Some(i)) if n != i => format!("{n} ({i})"),
        (_, Some(i)) => i.to_owned(),
        (Some(n), None) => n.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

fn actor(item: &Item) -> String {
    named(item.actor_name.as_deref(), item.actor_id.as_deref())
}

fn resource(item: &Item) -> String {
    named(item.resource_name.as_deref(), item.resource_id.as_deref())
}

fn section_summary(section: &Section, noun: &str) -> Option<String> {
    if section.total == 0 {
        return None;
    }
    let kinds: Vec<String> = section.by_kind.iter().map(|(k, n)| format!("{k}: {}", count(*n))).collect();
    let noun = if section.total == 1 { noun.strip_suffix('s').unwrap_or(noun) } else { noun };
    let mut s = format!("{} {noun} ({}).", count(section.total), kinds.join(", "));
    if (section.items.len() as u64) < section.total {
        s.push_str(&format!(" The first {} are listed.", section.items.len()));
    }
    Some(s)
}

fn coverage_statement(c: &Coverage, report: &Report, zone: &TimeZone) -> String {
    let end = report.period.until.min(report.generated_at).max(report.period.since);
    crate::statement(c.complete_from, c.complete_to, &c.gaps, report.period.since, end, zone)
}

fn integrity_lines(report: &Report, zone: &TimeZone) -> Vec<String> {
    let i = &report.integrity;
    let mut lines = vec![format!("Events in the archive's Merkle tree: {}.", count(i.tree_size))];
    lines.push(match &i.checkpoint {
        Some(c) => format!(
            "Latest checkpoint: {} events, root {}, made {}, {}.",
            count(c.size),
            c.root,
            shown(c.made_at, zone),
            match &c.signed_by {
                Some(k) => format!("signed by {k}"),
                None => "not signed (set [integrity] signing_key)".to_owned(),
            }
        ),
        None => "No checkpoint yet: `tfaudit checkpoint` makes one.".to_owned(),
    });
    lines.push(match &i.verification {
        Some(v) if v.ok => {
            format!("Latest verification ({}): every one of {} events checked out.", shown(v.at, zone), count(v.size))
        }
        Some(v) => format!(
            "Latest verification ({}) found: {}.",
            shown(v.at, zone),
            v.finding.as_deref().unwrap_or("a problem")
        ),
        None => "Never verified: `tfaudit verify` checks every event against the checkpoints.".to_owned(),
    });
    lines
}

fn alerts_summary(a: &Alerts) -> Option<String> {
    if a.total == 0 {
        return None;
    }
    let rules: Vec<String> = a.by_rule.iter().map(|(r, n)| format!("{r}: {}", count(*n))).collect();
    let states: Vec<String> = a.deliveries.iter().map(|(s, n)| format!("{s}: {}", count(*n))).collect();
    let mut s = format!(
        "{} alert{} about this period's events ({}). Deliveries: {}.",
        count(a.total),
        if a.total == 1 { "" } else { "s" },
        rules.join(", "),
        if states.is_empty() { "none".to_owned() } else { states.join(", ") }
    );
    if (a.items.len() as u64) < a.total {
        s.push_str(&format!(" The first {} are listed.", a.items.len()));
    }
    Some(s)
}

fn deliveries(a: &AlertItem) -> String {
    if a.deliveries.is_empty() {
        return "none".to_owned();
    }
    a.deliveries
        .iter()
        .map(|d| {
            let mut s = format!("{}: {}", d.destination, d.state);
            if d.attempts > 1 {
                s.push_str(&format!(" after {} attempts", d.attempts));
            }
            if let Some(e) = &d.last_error
                && d.state != "delivered"
            {
                s.push_str(&format!(" ({e})"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The sections that list events, with what they call their items and whether they
/// have a note column.
fn event_sections(r: &Report) -> [(&'static str, &Section, &'static str); 6] {
    [
        (HEADINGS[2], &r.privileged_access, "changes"),
        (HEADINGS[3], &r.tokens.changes, "token changes"),
        (HEADINGS[4], &r.sso_and_settings, "changes"),
        (HEADINGS[5], &r.policy_overrides, "overrides"),
        (HEADINGS[6], &r.destruction, "events"),
        (HEADINGS[7], &r.impersonations, "events"),
    ]
}

struct Markdown<'a> {
    zone: &'a TimeZone,
}

impl Markdown<'_> {
    fn report(&self, r: &Report) -> String {
        let z = self.zone;
        let mut o = String::new();
        let _ = writeln!(o, "# {}\n", markdown(&r.title));
        let _ = writeln!(
            o,
            "Period: {} to {} ({}). Organizations: {}. Generated {} by {}. Times in {}.\n",
            shown(r.period.since, z),
            shown(r.period.until, z),
            markdown(&r.period.label),
            r.organization.as_deref().map_or_else(|| "all".to_owned(), markdown),
            shown(r.generated_at, z),
            markdown(&r.generator),
            markdown(&r.zone),
        );
        // Coverage
        let _ = writeln!(o, "## {}\n", HEADINGS[0]);
        if r.coverage.is_empty() {
            let _ = writeln!(o, "{NONE}\n");
        } else {
            o.push_str("| Organization | Events | Syncs | Failed syncs | Last successful sync | Behind | Gaps |\n");
            o.push_str("| --- | ---: | ---: | ---: | --- | --- | ---: |\n");
            for c in &r.coverage {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    markdown(&named(Some(&c.organization), c.organization_id.as_deref())),
                    count(c.events),
                    count(c.syncs),
                    count(c.syncs_failed),
                    c.last_successful_sync.map_or_else(|| "never".to_owned(), |t| shown(t, z)),
                    c.behind_seconds.map_or_else(|| "-".to_owned(), duration),
                    c.gaps.len()
                );
            }
            o.push('\n');
            for c in &r.coverage {
                let _ = writeln!(o, "- **{}**: {}", markdown(&c.organization), markdown(&coverage_statement(c, r, z)));
            }
            o.push('\n');
            let failures: Vec<(&Coverage, &crate::SyncFailure)> =
                r.coverage.iter().flat_map(|c| c.failures.iter().map(move |f| (c, f))).collect();
            if !failures.is_empty() {
                o.push_str("Failed syncs (newest first):\n\n| Organization | Started | Error |\n| --- | --- | --- |\n");
                for (c, f) in failures {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} |",
                        markdown(&c.organization),
                        shown(f.started_at, z),
                        markdown(&f.error)
                    );
                }
                o.push('\n');
            }
        }
        // Integrity
        let _ = writeln!(o, "## {}\n", HEADINGS[1]);
        for line in integrity_lines(r, z) {
            let _ = writeln!(o, "- {}", markdown(&line));
        }
        o.push('\n');
        for (heading, section, noun) in event_sections(r) {
            let _ = writeln!(o, "## {heading}\n");
            match section_summary(section, noun) {
                None => {
                    let _ = writeln!(o, "{NONE}\n");
                }
                Some(summary) => {
                    let _ = writeln!(o, "{}\n", markdown(&summary));
                    self.items(&mut o, &section.items);
                }
            }
            if heading == HEADINGS[3] {
                let _ = writeln!(o, "### Tokens alive at the end of the period\n");
                if r.tokens.alive_total == 0 {
                    let _ = writeln!(o, "{NONE}\n");
                } else {
                    let mut s = format!(
                        "{} token{} created before the period's end with no deletion seen.",
                        count(r.tokens.alive_total),
                        if r.tokens.alive_total == 1 { "" } else { "s" }
                    );
                    if (r.tokens.alive.len() as u64) < r.tokens.alive_total {
                        s.push_str(&format!(" The first {} are listed.", r.tokens.alive.len()));
                    }
                    let _ = writeln!(o, "{}\n", markdown(&s));
                    self.items(&mut o, &r.tokens.alive);
                }
            }
        }
        // Alerts
        let _ = writeln!(o, "## {}\n", HEADINGS[8]);
        match alerts_summary(&r.alerts) {
            None => {
                let _ = writeln!(o, "{NONE}\n");
            }
            Some(summary) => {
                let _ = writeln!(o, "{}\n", markdown(&summary));
                o.push_str("| Event time | Organization | Rule | Severity | Alert | Deliveries | Event |\n");
                o.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
                for a in &r.alerts.items {
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        shown(a.event_time, z),
                        markdown(&a.organization),
                        markdown(&a.rule),
                        markdown(&a.severity),
                        markdown(&a.title),
                        markdown(&deliveries(a)),
                        event_link_md(&a.event_id, a.link.as_deref())
                    );
                }
                o.push('\n');
            }
        }
        // Activity
        let _ = writeln!(o, "## {}\n", HEADINGS[9]);
        if r.activity.total == 0 {
            let _ = writeln!(o, "{NONE}\n");
        } else {
            let _ = writeln!(o, "{} events.\n", count(r.activity.total));
            o.push_str("Top actors:\n\n| Actor | Events |\n| --- | ---: |\n");
            for a in &r.activity.top_actors {
                let _ = writeln!(
                    o,
                    "| {} | {} |",
                    markdown(&named(a.name.as_deref(), Some(&a.accessor_id))),
                    count(a.events)
                );
            }
            o.push_str("\nTop kinds:\n\n| Type and action | Events |\n| --- | ---: |\n");
            for (k, n) in &r.activity.top_kinds {
                let _ = writeln!(o, "| {} | {} |", markdown(k), count(*n));
            }
            o.push_str("\nEvents per day:\n\n| Day | Events |\n| --- | ---: |\n");
            for (d, n) in &r.activity.per_day {
                let _ = writeln!(o, "| {} | {} |", markdown(d), count(*n));
            }
            o.push('\n');
        }
        o
    }

    fn items(&self, o: &mut String, items: &[Item]) {
        o.push_str("| Time | Organization | Actor | Resource | What happened | Note | Event |\n");
        o.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for i in items {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                shown(i.time, self.zone),
                markdown(&i.organization),
                markdown(&actor(i)),
                markdown(&resource(i)),
                markdown(&i.explanation),
                i.note.as_deref().map_or_else(String::new, markdown),
                event_link_md(&i.event_id, i.link.as_deref())
            );
        }
        o.push('\n');
    }
}

/// An event id, linked to its dashboard page when there is one. The link's target is
/// percent-encoded already; `<…>` keeps any character of it from ending the link.
fn event_link_md(id: &str, link: Option<&str>) -> String {
    match link {
        Some(url) => format!("[{}](<{}>)", markdown(id), url.replace(['<', '>', '\n', '\r'], "")),
        None => markdown(id),
    }
}

struct Html<'a> {
    zone: &'a TimeZone,
}

const CSS: &str = r"
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1b1f24; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #d0d7de; padding-bottom: .2rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; }
.meta { color: #57606a; }
.none { color: #57606a; font-style: italic; }
.statement { background: #f6f8fa; border-left: 4px solid #2da44e; padding: .4rem .7rem; }
.statement.broken { border-left-color: #cf222e; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; table-layout: auto; }
th, td { border: 1px solid #d0d7de; padding: .25rem .45rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; word-break: break-word; }
th { background: #f6f8fa; overflow-wrap: normal; word-break: normal; }
td.n, th.n { text-align: right; white-space: nowrap; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
code, .id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; }
.note { color: #cf222e; font-weight: 600; }
svg { max-width: 100%; height: auto; }
svg text { font: 10px system-ui, sans-serif; fill: #57606a; }
@page { size: A4; margin: 14mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  section { break-before: page; }
  section:first-of-type { break-before: auto; }
  h2, h3 { break-after: avoid; }
  thead { display: table-header-group; }
  tr, .statement, svg { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
";

impl Html<'_> {
    fn report(&self, r: &Report) -> String {
        let z = self.zone;
        let mut o = String::new();
        o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        o.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n");
        let _ = writeln!(o, "<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>", html(&r.title));
        let _ = writeln!(o, "<header>\n<h1>{}</h1>", html(&r.title));
        let _ = writeln!(
            o,
            "<p class=\"meta\">Period: {} to {} ({}). Organizations: {}. Generated {} by {}. Times in {}.</p>\n</header>",
            html(&shown(r.period.since, z)),
            html(&shown(r.period.until, z)),
            html(&r.period.label),
            r.organization.as_deref().map_or_else(|| "all".to_owned(), html),
            html(&shown(r.generated_at, z)),
            html(&r.generator),
            html(&r.zone),
        );
        // Coverage
        self.open(&mut o, "coverage", HEADINGS[0]);
        if r.coverage.is_empty() {
            none(&mut o);
        } else {
            o.push_str("<table>\n<thead><tr><th>Organization</th><th class=\"n\">Events</th><th class=\"n\">Syncs</th><th class=\"n\">Failed syncs</th><th>Last successful sync</th><th>Behind</th><th class=\"n\">Gaps</th></tr></thead>\n<tbody>\n");
            for c in &r.coverage {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"t\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                    html(&named(Some(&c.organization), c.organization_id.as_deref())),
                    count(c.events),
                    count(c.syncs),
                    count(c.syncs_failed),
                    html(&c.last_successful_sync.map_or_else(|| "never".to_owned(), |t| shown(t, z))),
                    html(&c.behind_seconds.map_or_else(|| "-".to_owned(), duration)),
                    c.gaps.len()
                );
            }
            o.push_str("</tbody>\n</table>\n");
            for c in &r.coverage {
                let broken = c.complete_from.is_none() || !c.gaps.is_empty();
                let _ = writeln!(
                    o,
                    "<p class=\"statement{}\"><strong>{}</strong>: {}</p>",
                    if broken { " broken" } else { "" },
                    html(&c.organization),
                    html(&coverage_statement(c, r, z))
                );
            }
            let failures: Vec<(&Coverage, &crate::SyncFailure)> =
                r.coverage.iter().flat_map(|c| c.failures.iter().map(move |f| (c, f))).collect();
            if !failures.is_empty() {
                o.push_str("<h3>Failed syncs (newest first)</h3>\n<table>\n<thead><tr><th>Organization</th><th>Started</th><th>Error</th></tr></thead>\n<tbody>\n");
                for (c, f) in failures {
                    let _ = writeln!(
                        o,
                        "<tr><td>{}</td><td class=\"t\">{}</td><td>{}</td></tr>",
                        html(&c.organization),
                        html(&shown(f.started_at, z)),
                        html(&f.error)
                    );
                }
                o.push_str("</tbody>\n</table>\n");
            }
        }
        o.push_str("</section>\n");
        // Integrity
        self.open(&mut o, "integrity", HEADINGS[1]);
        o.push_str("<ul>\n");
        for line in integrity_lines(r, z) {
            let _ = writeln!(o, "<li>{}</li>", html(&line));
        }
        o.push_str("</ul>\n</section>\n");
        let ids =
            ["privileged-access", "tokens", "sso-and-settings", "policy-overrides", "destruction", "impersonations"];
        for ((heading, section, noun), id) in event_sections(r).into_iter().zip(ids) {
            self.open(&mut o, id, heading);
            match section_summary(section, noun) {
                None => none(&mut o),
                Some(summary) => {
                    let _ = writeln!(o, "<p>{}</p>", html(&summary));
                    self.items(&mut o, &section.items);
                }
            }
            if heading == HEADINGS[3] {
                o.push_str("<h3>Tokens alive at the end of the period</h3>\n");
                if r.tokens.alive_total == 0 {
                    none(&mut o);
                } else {
                    let mut s = format!(
                        "{} token{} created before the period's end with no deletion seen.",
                        count(r.tokens.alive_total),
                        if r.tokens.alive_total == 1 { "" } else { "s" }
                    );
                    if (r.tokens.alive.len() as u64) < r.tokens.alive_total {
                        s.push_str(&format!(" The first {} are listed.", r.tokens.alive.len()));
                    }
                    let _ = writeln!(o, "<p>{}</p>", html(&s));
                    self.items(&mut o, &r.tokens.alive);
                }
            }
            o.push_str("</section>\n");
        }
        // Alerts
        self.open(&mut o, "alerts", HEADINGS[8]);
        match alerts_summary(&r.alerts) {
            None => none(&mut o),
            Some(summary) => {
                let _ = writeln!(o, "<p>{}</p>", html(&summary));
                o.push_str("<table>\n<thead><tr><th>Event time</th><th>Organization</th><th>Rule</th><th>Severity</th><th>Alert</th><th>Deliveries</th><th>Event</th></tr></thead>\n<tbody>\n");
                for a in &r.alerts.items {
                    let _ = writeln!(
                        o,
                        "<tr><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        html(&shown(a.event_time, z)),
                        html(&a.organization),
                        html(&a.rule),
                        html(&a.severity),
                        html(&a.title),
                        html(&deliveries(a)),
                        event_link_html(&a.event_id, a.link.as_deref())
                    );
                }
                o.push_str("</tbody>\n</table>\n");
            }
        }
        o.push_str("</section>\n");
        // Activity
        self.open(&mut o, "activity", HEADINGS[9]);
        if r.activity.total == 0 {
            none(&mut o);
        } else {
            let _ = writeln!(o, "<p>{} events.</p>", count(r.activity.total));
            o.push_str("<h3>Events per day</h3>\n");
            o.push_str(&day_chart(&r.activity.per_day));
            o.push_str("<h3>Top actors</h3>\n<table>\n<thead><tr><th>Actor</th><th class=\"n\">Events</th></tr></thead>\n<tbody>\n");
            for a in &r.activity.top_actors {
                let _ = writeln!(
                    o,
                    "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                    html(&named(a.name.as_deref(), Some(&a.accessor_id))),
                    count(a.events)
                );
            }
            o.push_str("</tbody>\n</table>\n<h3>Top kinds</h3>\n<table>\n<thead><tr><th>Type and action</th><th class=\"n\">Events</th></tr></thead>\n<tbody>\n");
            for (k, n) in &r.activity.top_kinds {
                let _ = writeln!(o, "<tr><td>{}</td><td class=\"n\">{}</td></tr>", html(k), count(*n));
            }
            o.push_str("</tbody>\n</table>\n");
        }
        o.push_str("</section>\n</body>\n</html>\n");
        o
    }

    fn open(&self, o: &mut String, id: &str, heading: &str) {
        let _ = writeln!(o, "<section id=\"{id}\">\n<h2>{}</h2>", html(heading));
    }

    fn items(&self, o: &mut String, items: &[Item]) {
        o.push_str("<table>\n<thead><tr><th>Time</th><th>Organization</th><th>Actor</th><th>Resource</th><th>What happened</th><th>Note</th><th>Event</th></tr></thead>\n<tbody>\n");
        for i in items {
            let _ = writeln!(
                o,
                "<tr><td class=\"t\">{}</td><td>{}</td><td>{}</td><td class=\"id\">{}</td><td>{}</td><td class=\"note\">{}</td><td class=\"id\">{}</td></tr>",
                html(&shown(i.time, self.zone)),
                html(&i.organization),
                html(&actor(i)),
                html(&resource(i)),
                html(&i.explanation),
                i.note.as_deref().map_or_else(String::new, html),
                event_link_html(&i.event_id, i.link.as_deref())
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
}

fn none(o: &mut String) {
    let _ = writeln!(o, "<p class=\"none\">{NONE}</p>");
}

fn event_link_html(id: &str, link: Option<&str>) -> String {
    match link {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            format!("<a href=\"{}\">{}</a>", html(url), html(id))
        }
        _ => html(id),
    }
}

/// Events per day as an SVG bar chart: numbers and dates only, no event string.
fn day_chart(days: &[(String, u64)]) -> String {
    let (width, height, top, bottom, left) = (760.0_f64, 200.0_f64, 12.0, 28.0, 48.0);
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(1);
    let n = days.len().max(1) as f64;
    let plot = width - left - 8.0;
    let step = plot / n;
    let bar = (step * 0.8).max(0.5);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Events per day\">"
    );
    let base = height - bottom;
    let _ = writeln!(o, "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#8c959f\"/>", width - 8.0);
    let _ = writeln!(o, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", left - 4.0, top + 8.0, count(max));
    let _ = writeln!(o, "<text x=\"{}\" y=\"{base}\" text-anchor=\"end\">0</text>", left - 4.0);
    for (i, (day, c)) in days.iter().enumerate() {
        let h = (base - top) * (*c as f64) / (max as f64);
        let x = left + step * i as f64 + (step - bar) / 2.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar:.2}\" height=\"{h:.2}\" fill=\"#2f81f7\"><title>{}: {}</title></rect>",
            base - h,
            html(day),
            count(*c)
        );
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = writeln!(o, "<text x=\"{left}\" y=\"{}\">{}</text>", height - 10.0, html(&first.0));
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            width - 8.0,
            height - 10.0,
            html(&last.0)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_are_text_in_html_and_stay_in_their_markdown_cell() {
        let s = "<script>alert(1)</script> | `x` [a](http://e) \n# h\u{202e}";
        let h = html(s);
        assert!(!h.contains('<') && !h.contains('>'), "{h}");
        assert!(h.contains("\\n") && h.contains("\\u{202e}") && !h.contains('\n'), "{h}");
        assert!(html("a\u{200b}b").contains("\\u{200b}"), "zero-width characters are shown too");
        let m = markdown(s);
        assert!(!m.contains('\n') && !m.contains('<'), "{m}");
        assert!(!m.replace("\\|", "").contains('|'), "every pipe escaped: {m}");
        assert!(!m.replace("\\`", "").contains('`'), "{m}");
        assert!(m.contains("\\[a\\]\\(http://e\\)"), "{m}");
    }

    #[test]
    fn markdown_links_cannot_be_broken_out_of() {
        let link = event_link_md("a)b", Some("https://x/events/a%29b"));
        assert_eq!(link, "[a\\)b](<https://x/events/a%29b>)");
        assert_eq!(crate::path_segment("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}
