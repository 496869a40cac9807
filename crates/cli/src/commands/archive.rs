//! `tfaudit archive push`: finished days to cold storage as Parquet
//! (`tfaudit_cold`), with a line per day written and a summary.

use std::io::Write;

use tfaudit_backend::Mode;

use crate::args::{Cli, PushArgs};
use crate::failure::Failure;
use crate::{output, settings};

pub async fn push(cli: &Cli, args: &PushArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    // The location first: a mistake there is found before the archive is opened.
    let (location, s3) = settings::cold_location(args.to.as_deref(), config.as_ref())?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::ReadOnly)?;
    let archive = store;
    let target = location.open(&s3)?;
    let options = tfaudit_cold::PushOptions { organization: args.org.clone(), now: jiff::Timestamp::now() };
    let lines = !cli.quiet && !args.json;
    let mut out = output::Stdout::new();
    let mut failed_output = None;
    let mut each = |day: &tfaudit_cold::DayPushed| {
        if !lines || failed_output.is_some() {
            return;
        }
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
        if let Err(e) = writeln!(out, "{what}, {} → {}", size(day.bytes), output::terminal_safe(&day.path)) {
            failed_output = Some(e);
        }
    };
    let report = tfaudit_cold::push(&archive, &target, &options, &mut each).await?;
    if let Some(e) = failed_output {
        return Err(e.into());
    }
    if args.json {
        out.json(&report)?;
    } else if !cli.quiet {
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
    Ok(())
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
