//! `tfaudit archive push`: finished days to cold storage as Parquet
//! (`tfaudit_cold`), with a line per day written and a summary.

use std::io::Write;

use tfaudit_backend::Mode;

use crate::args::{Cli, PullArgs, PushArgs};
use crate::failure::Failure;
use crate::{output, settings};

pub async fn push(cli: &Cli, args: &PushArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    // The location first: a mistake there is found before the archive is opened.
    let (location, s3) = settings::cold_location(args.to.as_deref(), config.as_ref())?;
    let keep_local = settings::keep_local(config.as_ref())?;
    // Removing days writes: the archive is opened for writing only then.
    let mode = if keep_local.is_some() { Mode::MustExist } else { Mode::ReadOnly };
    let archive = settings::open_archive(cli, config.as_ref(), mode)?;
    let target = location.open(&s3)?;
    let options = tfaudit_cold::PushOptions { organization: args.org.clone(), now: jiff::Timestamp::now() };
    let mut out = output::Stdout::new();
    let mut lines = DayLines::new(&mut out, !cli.quiet && !args.json);
    let mut each = |day: &tfaudit_cold::DayPushed| {
        let what = match day.previous_events {
            Some(before) => format!(
                "rewrote {} {}: {} events (was {})",
                org(day),
                day.date,
                output::count(day.events),
                output::count(before)
            ),
            None => format!("pushed  {} {}: {} events", org(day), day.date, output::count(day.events)),
        };
        lines.say(format_args!("{what}, {} → {}", size(day.bytes), output::terminal_safe(&day.path)));
    };
    let report = tfaudit_cold::push(&archive, &target, &options, &mut each).await?;
    lines.done()?;
    if !args.json && !cli.quiet {
        let kept = if report.kept > 0 {
            format!("; kept {} whose pushed object holds more events than the archive", report.kept)
        } else {
            String::new()
        };
        writeln!(
            out,
            "pushed {} days ({} rewritten), {} events, skipped {} already pushed{kept} to {}",
            output::count(report.pushed.len() as u64),
            output::count(report.rewritten),
            output::count(report.events),
            output::count(report.skipped),
            output::terminal_safe(&report.location),
        )?;
    }
    let Some(keep_local) = keep_local else {
        if args.json {
            out.json(&report)?;
        }
        return Ok(());
    };
    let options = tfaudit_cold::PruneOptions { keep_local, now: options.now, organization: args.org.clone() };
    let mut lines = DayLines::new(&mut out, !cli.quiet && !args.json);
    let mut each = |day: &tfaudit_cold::DayPruned| {
        lines.say(format_args!(
            "removed {} {}: {} events from the local archive (kept in cold storage)",
            output::terminal_safe(&day.organization),
            day.date,
            output::count(day.events)
        ));
    };
    let pruned = tfaudit_cold::prune(&archive, &target, &options, &mut each).await?;
    lines.done()?;
    if args.json {
        // One object: the push's report, with what retention removed under `retention`.
        let mut json = serde_json::to_value(&report).map_err(|e| Failure::Internal(e.to_string()))?;
        json["retention"] = serde_json::to_value(&pruned).map_err(|e| Failure::Internal(e.to_string()))?;
        out.json(&json)?;
    } else if !cli.quiet {
        writeln!(
            out,
            "removed {} days, {} events older than [retention] keep_local from the local archive; {} held",
            output::count(pruned.pruned.len() as u64),
            output::count(pruned.events),
            output::count(pruned.held.len() as u64),
        )?;
        for held in &pruned.held {
            writeln!(
                out,
                "  held {} {}: {}",
                output::terminal_safe(&held.organization),
                held.date,
                output::terminal_safe(&held.reason)
            )?;
        }
    }
    Ok(())
}

pub async fn pull(cli: &Cli, args: &PullArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    if let Some(until) = args.until
        && until < args.since
    {
        return Err(Failure::Usage(format!("--until {until} is before --since {}; swap them", args.since)));
    }
    let archive = settings::open_archive(cli, config.as_ref(), Mode::MustExist)?;
    let configured = args.from.is_some() || config.as_ref().is_some_and(|(_, f)| f.archive.location.is_some());
    let (location, s3) = if configured {
        settings::cold_location(args.from.as_deref(), config.as_ref())?
    } else {
        // Where the days were pushed, as recorded when they were removed.
        let days = tfaudit_store::blocking_on(&archive, |a| a.pruned_days()).await?;
        let Some(recorded) = days.first().map(|d| d.location.clone()) else {
            return Err(Failure::Usage(
                "this archive has no days removed by [retention] keep_local; nothing to pull".into(),
            ));
        };
        settings::cold_location(Some(&recorded), config.as_ref())?
    };
    let target = location.open(&s3)?;
    let options = tfaudit_cold::PullOptions { since: args.since, until: args.until, organization: args.org.clone() };
    let mut out = output::Stdout::new();
    let mut lines = DayLines::new(&mut out, !cli.quiet && !args.json);
    let mut each = |day: &tfaudit_cold::DayPulled| {
        lines.say(format_args!(
            "pulled {} {}: {} events",
            output::terminal_safe(&day.organization),
            day.date,
            output::count(day.events)
        ));
    };
    let report = tfaudit_cold::pull(&archive, &target, &options, &mut each).await?;
    lines.done()?;
    if args.json {
        out.json(&report)?;
    } else if !cli.quiet {
        writeln!(
            out,
            "pulled {} days, {} events back into the local archive from {}{}",
            output::count(report.pulled.len() as u64),
            output::count(report.events),
            output::terminal_safe(&report.location),
            if report.already_local > 0 {
                format!("; {} already local", output::count(report.already_local))
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// A line for each day as the work reaches it (when `on`). The work's callbacks cannot
/// fail, so the first write error is kept and returned by [`DayLines::done`], after the
/// work, and nothing more is written.
struct DayLines<'a> {
    out: &'a mut output::Stdout,
    on: bool,
    failed: Option<std::io::Error>,
}

impl<'a> DayLines<'a> {
    fn new(out: &'a mut output::Stdout, on: bool) -> Self {
        Self { out, on, failed: None }
    }

    fn say(&mut self, line: std::fmt::Arguments<'_>) {
        if self.on
            && self.failed.is_none()
            && let Err(e) = writeln!(self.out, "{line}")
        {
            self.failed = Some(e);
        }
    }

    fn done(self) -> std::io::Result<()> {
        self.failed.map_or(Ok(()), Err)
    }
}

fn org(day: &tfaudit_cold::DayPushed) -> std::borrow::Cow<'_, str> {
    output::terminal_safe(&day.organization)
}

/// A size as people read it: `812 B`, `14.2 KiB`, `3.1 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size(812), "812 B");
        assert_eq!(super::size(14_541), "14.2 KiB");
        assert_eq!(super::size(3 << 20), "3.0 MiB");
    }
}
