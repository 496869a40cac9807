//! `tfaudit migrate`: a whole archive copied into another, through the storage roles
//! (`tfaudit_store::migrate`), with a progress bar and the verification printed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tfaudit_backend::{Location, Mode};
use tfaudit_store::migrate::{MigrateError, MigrateProgress, migrate as copy};

use crate::args::{Cli, MigrateArgs};
use crate::failure::Failure;
use crate::output;

pub fn migrate(cli: &Cli, args: &MigrateArgs) -> Result<(), Failure> {
    if same_archive(&args.from, &args.to) {
        return Err(Failure::Usage(format!(
            "--from and --to are the same archive ({}); give another file or database as --to",
            args.from
        )));
    }
    let from = args.from.open(Mode::ReadOnly)?;
    let to = args.to.open(Mode::CreateIfMissing)?;
    let mut bar = Bar::new(!cli.quiet && std::io::stderr().is_terminal());
    let report = copy(from.as_ref(), to.as_ref(), args.batch, &mut bar).map_err(|e| match e {
        MigrateError::Store(s) => Failure::from(s),
        e @ MigrateError::DifferentArchive(_) => Failure::Usage(format!("{}: {e}", args.to)),
    })?;
    bar.end();
    let mut out = output::Stdout::new();
    if !cli.quiet {
        writeln!(out, "{:<32} {:>12} {:>12}", "", "source", "target")?;
        for c in &report.counts {
            let mark = if c.source == c.target { "" } else { "  ≠" };
            writeln!(
                out,
                "{:<32} {:>12} {:>12}{mark}",
                output::terminal_safe(&c.what),
                output::count(c.source),
                output::count(c.target)
            )?;
        }
        writeln!(out, "{:<32} {}", "events checksum (source)", report.source_checksum)?;
        writeln!(out, "{:<32} {}", "events checksum (target)", report.target_checksum)?;
    }
    let took = report.copying.as_secs_f64();
    let rate = if took > 0.0 { report.copied as f64 / took } else { 0.0 };
    let resumed = if report.resumed_after > 0 {
        format!(", resumed after {} already copied", output::count(report.resumed_after))
    } else {
        String::new()
    };
    if !report.verified() {
        return Err(Failure::Mismatch(format!(
            "the copy in {} differs from {}: {}",
            args.to,
            args.from,
            report.differences().join("; ")
        )));
    }
    if !cli.quiet {
        writeln!(
            out,
            "migrated {} to {}: {} events copied in {took:.1}s ({:.0} events/s){resumed}; checked in {:.1}s: counts and checksum equal",
            output::terminal_safe(&args.from.to_string()),
            output::terminal_safe(&args.to.to_string()),
            output::count(report.copied),
            rate,
            report.verifying.as_secs_f64(),
        )?;
    }
    Ok(())
}

/// Whether two locations name one archive: the same file (however the path is
/// written), or the same database URL (without its password).
fn same_archive(a: &Location, b: &Location) -> bool {
    match (a.sqlite_path(), b.sqlite_path()) {
        (Some(x), Some(y)) => canonical(x) == canonical(y),
        (None, None) => a.to_string() == b.to_string(),
        _ => false,
    }
}

/// A path made absolute with links resolved, also for a file not created yet.
fn canonical(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (std::fs::canonicalize(parent), p.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => p.to_path_buf(),
    }
}

/// The progress bar, on a terminal only, as sync's.
struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(show: bool) -> Self {
        Self { bar: show.then(|| ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())) }
    }

    fn start(&self, what: &str, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(total);
            bar.set_position(done);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{what} [{{bar:30}}] {{human_pos}}/{{human_len}} events, {{elapsed}} ({{eta}} left)"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
    }

    fn end(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl MigrateProgress for Bar {
    fn begin(&mut self, done: u64, total: u64) {
        self.start("copying", done, total);
    }

    fn copied(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn verifying(&mut self, total: u64) {
        self.start("verifying", 0, total);
    }

    fn verified(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}

/// `tfaudit compact`: every event still kept uncompressed, compressed in batches.
pub fn compact(cli: &Cli, args: &crate::args::CompactArgs) -> Result<(), Failure> {
    let config = crate::settings::config(cli)?;
    let store = crate::settings::open_archive(cli, config.as_ref(), Mode::MustExist)?;
    // Each batch is its own transaction: stopped by a signal, the batch in flight is
    // rolled back and the next run goes on from there.
    let (mut total, mut after) = (0, 0);
    loop {
        let (done, reached) = store.compact(after, args.batch)?;
        if done == 0 {
            break;
        }
        total += done;
        after = reached;
        if !cli.quiet && std::io::stderr().is_terminal() {
            let _ = write!(std::io::stderr(), "\rcompressed {total} events ");
        }
    }
    let mut out = output::Stdout::new();
    if !cli.quiet {
        writeln!(out, "compressed {total} events")?;
    }
    if args.vacuum {
        store.reclaim_space()?;
        if !cli.quiet {
            writeln!(out, "space given back to the file system")?;
        }
    }
    Ok(())
}
