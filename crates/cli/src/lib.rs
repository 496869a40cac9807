//! The `tfaudit` command line: settings, commands and their output. The work itself
//! lives in the library crates (`tfaudit-api`, `tfaudit-sync`, `tfaudit-store*`,
//! `tfaudit-sim`, `tfaudit-alerts`, `tfaudit-server`, and `tfaudit-service` for
//! `watch` and `serve`).

pub mod args;
mod commands;
mod failure;
pub mod output;
mod progress;
mod settings;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use failure::Failure;

use args::{Cli, Command};

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that print to stdout and exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(&cli);
    redact_panics();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !matches!(failure, Failure::ClosedPipe) {
                // eprintln! would panic if stderr is a closed pipe too.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "error: {}", tfaudit_api::redact::redact(&failure.to_string()));
            }
            failure.exit_code()
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    // The zone first: every time shown and every date read depends on it. A config file
    // that cannot be read is the command's to report; with --tz it is not needed here.
    let config = if settings::tz_flag(cli).is_some() { None } else { settings::config(cli).ok().flatten() };
    output::set_zone(settings::display_zone(cli, config.as_ref())?);
    match &cli.command {
        Command::Query(a) => commands::read::query(cli, a),
        Command::Export(a) => commands::read::export(cli, a),
        Command::Summary(a) => commands::read::summary(cli, a),
        Command::History(a) => commands::read::history(cli, a),
        Command::Who(a) => commands::investigate::who(cli, a),
        Command::Names(args::NamesCommand::Show(a)) => commands::names::show(cli, a),
        Command::Names(args::NamesCommand::Refresh(a)) => runtime()?.block_on(commands::names::refresh(cli, a)),
        Command::Report(a) => commands::report::report(cli, a),
        Command::Status(a) => commands::read::status(cli, a),
        Command::Sync(a) => runtime()?.block_on(commands::sync::sync(cli, a)),
        Command::Watch(a) => runtime()?.block_on(commands::sync::watch(cli, a, None)),
        Command::Serve(a) => runtime()?.block_on(commands::serve::serve(cli, a)),
        Command::Init(a) => commands::serve::init(a),
        Command::Config(args::ConfigCommand::Check) => commands::serve::check(cli),
        Command::Rules(c) => commands::alerts::rules(cli, c),
        Command::Alerts(c) => runtime()?.block_on(commands::alerts::alerts(cli, c)),
        Command::Forward(a) => runtime()?.block_on(commands::forward::forward(cli, a)),
        Command::Sinks(c) => runtime()?.block_on(commands::forward::sinks(cli, c)),
        Command::Migrate(a) => commands::migrate::migrate(cli, a),
        Command::Compact(a) => commands::migrate::compact(cli, a),
        Command::Keygen(a) => commands::integrity::keygen(cli, a),
        Command::Checkpoint(a) => commands::integrity::checkpoint(cli, a),
        Command::Verify(a) => commands::integrity::verify(cli, a),
        Command::Prove(a) => commands::integrity::prove(cli, a),
        Command::VerifyProof(a) => commands::integrity::verify_proof(cli, a),
        Command::Archive(args::ArchiveCommand::Push(a)) => runtime()?.block_on(commands::archive::push(cli, a)),
        Command::Archive(args::ArchiveCommand::Pull(a)) => runtime()?.block_on(commands::archive::pull(cli, a)),
        Command::Completions(a) => commands::manual::completions(a),
        Command::Man(a) => commands::manual::man(a),
        Command::Sim(a) => runtime()?.block_on(commands::sim::sim(a)),
        Command::Demo(a) => runtime()?.block_on(commands::demo::demo(a)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Internal(format!("cannot start the async runtime: {e}")))
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let ours = [
        "tfaudit",
        "tfaudit_cli",
        "tfaudit_api",
        "tfaudit_sync",
        "tfaudit_backend",
        "tfaudit_store_sqlite",
        "tfaudit_store_postgres",
        "tfaudit_sim",
        "tfaudit_config",
        "tfaudit_alerts",
        "tfaudit_server",
        "tfaudit_service",
        "tfaudit_forward",
        "tfaudit_integrity",
        "tfaudit_cold",
        "tfaudit_report",
    ];
    let long_running = matches!(
        cli.command,
        Command::Watch(_)
            | Command::Serve(_)
            | Command::Sim(_)
            | Command::Forward(args::ForwardArgs { once: false, retry_dead: None })
            | Command::Alerts(args::AlertsCommand::Run { .. })
    );
    let level = if cli.debug {
        "debug"
    } else if cli.quiet {
        "error"
    } else if long_running {
        "info"
    } else {
        "warn"
    };
    let directives = ours.iter().map(|c| format!("{c}={level}")).collect::<Vec<_>>().join(",");
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() && !cli.debug => EnvFilter::new(v),
        _ => EnvFilter::new(format!("error,{directives}")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(RedactingStderr).with_target(cli.debug);
    let _ = match (cli.log_format, long_running) {
        (args::LogFormat::Json, _) => builder.json().with_current_span(false).try_init(),
        (args::LogFormat::Text, true) => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        (args::LogFormat::Text, false) => builder.with_ansi(std::io::stderr().is_terminal()).without_time().try_init(),
    };
}

/// A panic's message can quote anything (a server's text, a value being handled):
/// it is printed through [`tfaudit_api::redact`] like every other line.
fn redact_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("tfaudit panicked{at}: {}", tfaudit_api::redact::redact(&message));
    }));
}

/// Log lines go to standard error through [`tfaudit_api::redact`]: whatever a log
/// line holds (a server's answer, an error from a library), no known secret is shown.
struct RedactingStderr;

/// One log line, held until it is complete so that a secret split across writes is
/// still found whole.
struct RedactingLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingLine;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingLine(Vec::with_capacity(256))
    }
}

impl std::io::Write for RedactingLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(tfaudit_api::redact::redact(&line).as_bytes());
    }
}

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits at once.
pub(crate) fn stop_on_signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::warn!("stopping after the current page is stored (signal again to stop at once)");
                c.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    cancel
}
