//! `tfaudit who ID`: everything one accessor (a user, a team, a token) did, and what
//! the tokens it created did after, followed from token to token.

use std::io::Write;

use jiff::Timestamp;
use tfaudit_investigate::{MAX_TOKENS, Trail, Who};

use crate::args::{Cli, ReportFormat, WhoArgs};
use crate::failure::Failure;
use crate::output;

pub fn who(cli: &Cli, args: &WhoArgs) -> Result<(), Failure> {
    let id = args.id.trim();
    if id.is_empty() {
        return Err(Failure::Usage("who needs an accessor id, such as user-…, team-… or at-…".into()));
    }
    let range = super::read::filter(&args.range.filter(), Timestamp::now())?;
    let store = super::read::open_for_reading(cli)?;
    let id = &super::read::resolve_id(&*store, id)?;
    let who = tfaudit_investigate::who(&*store, id, &range)?;
    let mut out = output::Stdout::new();
    match args.format {
        ReportFormat::Json => out.json(&who)?,
        ReportFormat::Text => text(&who, &mut out)?,
    }
    Ok(())
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
