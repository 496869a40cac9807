//! Checked settings, built once from flags, environment and config file; the rest of
//! the program never sees a raw flag. Precedence: flag, environment, the
//! organization's config section, the config's `[sync]`, the default.

use std::path::{Path, PathBuf};

use tfaudit_api::{Client, ClientOptions, RetryPolicy};
use tfaudit_config::credentials::Explicit;
use tfaudit_config::{ConfigFile, ProcessEnv, SyncSection, SyncSettings, find_token};
use tfaudit_sync::WalkOptions;

use crate::args::{Cli, SyncArgs};
use crate::failure::Failure;

/// One organization to sync, ready to go.
#[derive(Debug)]
pub struct Organization {
    pub name: String,
    pub client: Client,
    pub sync: SyncSettings,
}

impl Organization {
    pub fn walk_options(&self) -> WalkOptions {
        WalkOptions {
            overlap: self.sync.overlap,
            page_size: self.sync.page_size,
            retention: self.sync.retention,
        }
    }
}

/// The config file, when one is given or present at the default place.
pub fn config(cli: &Cli) -> Result<Option<(PathBuf, ConfigFile)>, Failure> {
    let path = match &cli.config {
        Some(p) => p.clone(),
        None => match tfaudit_config::default_config_path() {
            Some(p) if p.exists() => p,
            _ => return Ok(None),
        },
    };
    let file = ConfigFile::load(&path).map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(Some((path, file)))
}

/// The archive's path: --db / TFAUDIT_DB, then the config's `db`, then the default.
pub fn db_path(cli: &Cli, config: Option<&(PathBuf, ConfigFile)>) -> PathBuf {
    if let Some(db) = &cli.db {
        return db.clone();
    }
    if let Some((path, file)) = config
        && let Some(db) = &file.db
    {
        // Relative to the config file, as a config author would expect.
        return if db.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(db)
        } else {
            db.clone()
        };
    }
    tfaudit_config::default_db_path()
}

fn flag_layer(args: &SyncArgs, interval: Option<tfaudit_config::Duration>) -> SyncSection {
    SyncSection {
        interval,
        overlap: args.overlap,
        page_size: args.page_size,
        rate_limit: args.rate_limit,
        max_retries: args.max_retries,
        retention: args.retention,
        timeout: args.timeout,
        retry_delay: args.retry_delay,
    }
}

/// The address without a config: --address, TFE_ADDRESS, https://$TFE_HOSTNAME, default.
fn address(args: &SyncArgs) -> String {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    args.address
        .clone()
        .or_else(|| env("TFE_ADDRESS"))
        .or_else(|| env("TFE_HOSTNAME").map(|h| format!("https://{}", h.trim())))
        .unwrap_or_else(|| tfaudit_api::DEFAULT_ADDRESS.to_owned())
}

/// The host (and port, when not the scheme's default) of an address.
fn host_of(address: &str) -> String {
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    match reqwest_url(&with_scheme) {
        Some((host, Some(port))) => format!("{host}:{port}"),
        Some((host, None)) => host,
        None => address.to_owned(),
    }
}

fn reqwest_url(text: &str) -> Option<(String, Option<u16>)> {
    let rest = text.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h, p.parse().ok())
        }
        _ => (authority, None),
    };
    let default_port = if text.starts_with("https://") {
        443
    } else {
        80
    };
    Some((
        host.to_ascii_lowercase(),
        port.filter(|&p| p != default_port),
    ))
}

fn client(address: &str, token: tfaudit_api::Token, s: &SyncSettings) -> Result<Client, Failure> {
    let mut options = ClientOptions::new(address, token);
    options.rate_limit = s.rate_limit;
    options.timeout = s.timeout;
    options.retry = RetryPolicy {
        max_retries: s.max_retries,
        min_delay: s.retry_delay,
        ..RetryPolicy::default()
    };
    Client::new(options).map_err(Failure::from)
}

/// The organizations to sync: the config's, or the one the flags and environment name.
pub fn organizations(
    args: &SyncArgs,
    interval: Option<tfaudit_config::Duration>,
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<Vec<Organization>, Failure> {
    let flags = flag_layer(args, interval);
    let configured = config
        .map(|(_, f)| f.organizations.as_slice())
        .unwrap_or_default();
    let global = config.map(|(_, f)| f.sync.clone()).unwrap_or_default();
    if configured.is_empty() {
        if args.org.is_some() {
            return Err(Failure::Usage("--org picks one of the config's [[organization]] entries, and there are none; drop --org or add a config".into()));
        }
        let address = address(args);
        let host = host_of(&address);
        let sync = SyncSection::merge(&[&flags, &global])
            .resolve("settings")
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let explicit = args
            .token_file
            .as_deref()
            .map_or(Explicit::None, Explicit::File);
        let host_only = host.split(':').next().unwrap_or(&host).to_owned();
        let found = find_token(&host_only, explicit, &ProcessEnv).map_err(Failure::from)?;
        tracing::debug!(source = %found.source, "token found");
        let name = args.name.clone().unwrap_or(host);
        check_name(&name)?;
        return Ok(vec![Organization {
            name,
            client: client(&address, found.token, &sync)?,
            sync,
        }]);
    }
    if args.address.is_some() || args.token_file.is_some() || args.name.is_some() {
        return Err(Failure::Usage(
            "--address, --token-file and --name apply only when the config lists no [[organization]]; set address and token_file per organization in the config".into(),
        ));
    }
    let mut out = Vec::new();
    for org in configured {
        if args.org.as_deref().is_some_and(|o| o != org.name) {
            continue;
        }
        let context = format!("organization {:?}", org.name);
        let own = org.sync.clone().unwrap_or_default();
        let sync = SyncSection::merge(&[&flags, &own, &global])
            .resolve(&context)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let address = org
            .address
            .clone()
            .unwrap_or_else(|| tfaudit_api::DEFAULT_ADDRESS.to_owned());
        let host = host_of(&address);
        let host_only = host.split(':').next().unwrap_or(&host).to_owned();
        let explicit = match (&org.token_file, &org.token_env) {
            (Some(f), _) => Explicit::File(f),
            (None, Some(v)) => Explicit::Env(v),
            (None, None) => Explicit::None,
        };
        let found = find_token(&host_only, explicit, &ProcessEnv)
            .map_err(|e| Failure::Credentials(format!("organization {:?}: {e}", org.name)))?;
        out.push(Organization {
            name: org.name.clone(),
            client: client(&address, found.token, &sync)?,
            sync,
        });
    }
    if out.is_empty() {
        return Err(Failure::Usage(format!(
            "no organization named {:?} in the config; it lists {}",
            args.org.as_deref().unwrap_or_default(),
            configured
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), Failure> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    {
        return Err(Failure::Usage(format!(
            "--name {name:?}: use letters, digits, '.', '_', '-' or ':'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("https://app.terraform.io"), "app.terraform.io");
        assert_eq!(host_of("https://app.terraform.io:443/"), "app.terraform.io");
        assert_eq!(host_of("http://127.0.0.1:8700"), "127.0.0.1:8700");
        assert_eq!(host_of("TFE.Example.com"), "tfe.example.com");
    }
}
