//! `tfaudit report`: resolves the period, the zone, the dashboard's address and the
//! archive, and hands them to `tfaudit-report`.

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use tfaudit_backend::Mode;
use tfaudit_config::parse_when_in;
use tfaudit_report::{Format, Period, Request};

use crate::args::{Cli, ReportArgs, ReportFileFormat};
use crate::failure::Failure;
use crate::{output, settings};

pub fn report(cli: &Cli, args: &ReportArgs) -> Result<(), Failure> {
    let now = Timestamp::now();
    let zone = output::zone();
    let period = period(args, now, &zone)?;
    let format = format(args)?;
    let config = settings::config(cli)?;
    let public_url = config.as_ref().and_then(|(_, f)| f.serve.public_url.clone());
    let store = settings::open_archive(cli, config.as_ref(), Mode::ReadOnly)?;
    let request = Request {
        period,
        org: args.org.clone(),
        zone: zone.clone(),
        public_url,
        now,
        limit: if args.limit == 0 { usize::MAX } else { args.limit },
    };
    // Names come from the id catalogue once it exists; until then events name their actors.
    let names = store.all_names()?;
    let report = tfaudit_report::gather(&*store, &request, &names)?;
    let text = tfaudit_report::render(&report, format, &zone);
    match &args.output {
        None => {
            let mut out = output::Stdout::new();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        Some(path) => write_whole(path, &text)?,
    }
    Ok(())
}

fn period(args: &ReportArgs, now: Timestamp, zone: &jiff::tz::TimeZone) -> Result<Period, Failure> {
    let when = |flag: &str, v: &str| parse_when_in(v, now, zone).map_err(|e| Failure::Usage(format!("--{flag}: {e}")));
    match (&args.period, &args.since, &args.until) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(Failure::Usage(
            "--period and --since/--until each name the time the report covers: give one of them".into(),
        )),
        (Some(p), None, None) => Ok(Period::parse(p, zone)?),
        (None, Some(s), until) => {
            let since = when("since", s)?;
            let until = until.as_deref().map(|u| when("until", u)).transpose()?.unwrap_or(now);
            if since >= until {
                return Err(Failure::Usage(format!(
                    "--since ({}) must be before --until ({})",
                    output::time(since),
                    output::time(until)
                )));
            }
            Ok(Period::range(since, until, zone))
        }
        (None, None, Some(_)) => {
            Err(Failure::Usage("--until needs --since (or name a whole period: --period 2026-11)".into()))
        }
        (None, None, None) => Err(Failure::Usage(
            "name the time the report covers: --period 2026-Q3 (a quarter), 2026-11 (a month) or 2026-W48 (an ISO week), or --since DATE [--until DATE]"
                .into(),
        )),
    }
}

fn format(args: &ReportArgs) -> Result<Format, Failure> {
    let chosen = match (args.format, &args.output) {
        (Some(f), _) => f,
        (None, Some(path)) => match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("html" | "htm") => ReportFileFormat::Html,
            Some("json") => ReportFileFormat::Json,
            Some("md" | "markdown") | None => ReportFileFormat::Md,
            Some(other) => {
                return Err(Failure::Usage(format!(
                    "-o {}: cannot tell the format from .{other}; add --format html, md or json",
                    path.display()
                )));
            }
        },
        (None, None) => ReportFileFormat::Md,
    };
    Ok(match chosen {
        ReportFileFormat::Html => Format::Html,
        ReportFileFormat::Md => Format::Markdown,
        ReportFileFormat::Json => Format::Json,
    })
}

/// Writes the file whole or not at all: a `.partial` file beside it, renamed into place.
fn write_whole(path: &Path, text: &str) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".partial");
    let partial = path.with_file_name(name);
    let cannot = |e: std::io::Error| Failure::Output(format!("cannot write {}: {e}", path.display()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(cannot(e));
    }
    Ok(())
}
