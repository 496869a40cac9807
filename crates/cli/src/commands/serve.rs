//! `tfaudit serve`, `tfaudit init` and `tfaudit config check`.

use std::net::SocketAddr;

use crate::args::{Cli, InitArgs, ServeArgs};
use crate::failure::Failure;
use crate::settings;

/// The commented example config that `tfaudit init` writes (a test loads it, so it
/// cannot go stale).
pub const EXAMPLE_CONFIG: &str = include_str!("../../tfaudit.example.toml");

fn address(what: &str, text: &str) -> Result<SocketAddr, Failure> {
    text.parse().map_err(|_| {
        Failure::Usage(format!("{what} {text:?} is not an address; write host:port, such as 127.0.0.1:8080"))
    })
}

pub async fn serve(cli: &Cli, args: &ServeArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let section = config.as_ref().map(|(_, f)| f.serve.clone()).unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let listen = args
        .listen
        .clone()
        .or_else(|| env("TFAUDIT_LISTEN"))
        .or(section.listen)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let metrics = args
        .metrics_listen
        .clone()
        .or_else(|| env("TFAUDIT_METRICS_LISTEN"))
        .or(section.metrics_listen)
        .unwrap_or_else(|| "127.0.0.1:9464".into());
    let access_token = match env("TFAUDIT_ACCESS_TOKEN") {
        Some(t) => Some(tfaudit_config::Secret::new(t)),
        None => section.access_token.map(|s| s.resolve("[serve] access_token")).transpose().map_err(Failure::Usage)?,
    };
    if access_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        return Err(Failure::Usage(
            "the access token is too short: use at least 16 characters, such as `openssl rand -hex 24`".into(),
        ));
    }
    let options = super::sync::ServerOptions {
        listen: address("--listen", &listen)?,
        metrics_listen: if metrics == "off" { None } else { Some(address("--metrics-listen", &metrics)?) },
        access_token,
    };
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
    if let Some(t) = &file.serve.access_token {
        t.resolve("[serve] access_token").map_err(Failure::Usage)?;
    }
    for (what, text) in [("[serve] listen", &file.serve.listen), ("[serve] metrics_listen", &file.serve.metrics_listen)]
    {
        if let Some(t) = text
            && t != "off"
        {
            address(what, t)?;
        }
    }
    let on = alerts.rules.enabled().count();
    use std::io::Write;
    writeln!(
        crate::output::Stdout::new(),
        "{}: ok — {} organizations ({}), {} destinations, {} rules ({} off)",
        path.display(),
        organizations.len(),
        organizations.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", "),
        alerts.destinations.len(),
        alerts.rules.rules.len(),
        alerts.rules.rules.len() - on
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
