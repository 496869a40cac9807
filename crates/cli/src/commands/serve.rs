//! `tfaudit serve`, `tfaudit init` and `tfaudit config check`.

use crate::args::{Cli, InitArgs, ServeArgs};
use crate::failure::Failure;
use crate::settings;

/// The commented example config that `tfaudit init` writes (a test loads it, so it
/// cannot go stale).
pub const EXAMPLE_CONFIG: &str = include_str!("../../tfaudit.example.toml");

pub async fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let options = settings::serve(args.listen.as_deref(), args.metrics_listen.as_deref(), config.as_ref())?;
    super::sync::watch(cli, &args.watch, Some(options)).await
}

pub fn init(args: &InitArgs) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&args.output).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::Usage(format!(
                "{} exists; pass --force to replace it, or --output another path",
                args.output.display()
            ))
        } else {
            Failure::Output(format!("cannot write {}: {e}", args.output.display()))
        }
    })?;
    file.write_all(EXAMPLE_CONFIG.as_bytes())?;
    writeln!(
        crate::output::Stdout::new(),
        "wrote {}: edit it, then `tfaudit --config {} config check` and `tfaudit --config {} serve`",
        args.output.display(),
        args.output.display(),
        args.output.display()
    )?;
    Ok(())
}

/// Checks everything `serve` would need from the config, without starting anything.
pub fn check(cli: &Cli) -> Result<(), Failure> {
    let Some((path, file)) = settings::config(cli)? else {
        return Err(Failure::Usage(
            "no config file: pass --config PATH (or set TFAUDIT_CONFIG), or write one with `tfaudit init`".into(),
        ));
    };
    let organizations =
        settings::organizations(&crate::args::SyncArgs::default(), None, Some(&(path.clone(), file.clone())))?;
    let alerts = settings::alerts(Some(&(path.clone(), file.clone())), None)?;
    settings::serve(None, None, Some(&(path.clone(), file.clone())))?;
    settings::cluster(None, None, Some(&(path.clone(), file.clone())))?;
    let checkpoints = settings::checkpointer(Some(&(path.clone(), file.clone())))?;
    // Building a sink checks its own keys and reads its secrets.
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    for sink in &file.sinks {
        tfaudit_forward::build(sink, base).map_err(Failure::Usage)?;
    }
    // The cold storage location and its secrets, without connecting.
    if file.archive.location.is_some() {
        settings::cold_location(None, Some(&(path.clone(), file.clone())))?;
    }
    settings::push_schedule(Some(&(path.clone(), file.clone())))?;
    settings::keep_local(Some(&(path.clone(), file.clone())))?;
    settings::scheduled_reports(cli, Some(&(path.clone(), file.clone())))?;
    let on = alerts.rules.enabled().count();
    use std::io::Write;
    writeln!(
        crate::output::Stdout::new(),
        "{}: ok — {} organizations ({}), {} destinations, {} rules ({} off), {} sinks, {} reports, checkpoints {}",
        path.display(),
        organizations.len(),
        organizations.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", "),
        alerts.destinations.len(),
        alerts.rules.rules.len(),
        alerts.rules.rules.len() - on,
        file.sinks.len(),
        file.reports.len(),
        checkpoints.signer.as_ref().map_or_else(|| "unsigned".to_owned(), |s| format!("signed by {}", s.name()))
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_config_is_valid() {
        tfaudit_config::ConfigFile::parse(std::path::Path::new("tfaudit.example.toml"), super::EXAMPLE_CONFIG).unwrap();
    }
}
