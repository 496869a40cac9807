//! Checked settings, built once from flags, environment and config file; the rest of
//! the program never sees a raw flag. Precedence: flag, environment, the
//! organization's config section, the config's `[sync]`, the default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tfaudit_api::{Client, ClientOptions, RetryPolicy};
use tfaudit_backend::{Location, Mode};
use tfaudit_config::credentials::Explicit;
use tfaudit_config::{ConfigFile, ProcessEnv, SyncSection, SyncSettings, find_token};
use tfaudit_store::Store;
use tfaudit_sync::WalkOptions;

use crate::args::{Cli, SyncArgs};
use crate::failure::Failure;

/// One organization to sync, ready to go.
#[derive(Debug)]
pub struct Organization {
    pub name: String,
    pub client: Client,
    pub sync: SyncSettings,
    /// Names from its listings, when it has an `enrich_token`.
    pub enrich: Option<tfaudit_sync::Enrichment>,
}

impl Organization {
    pub fn walk_options(&self) -> WalkOptions {
        WalkOptions {
            overlap: self.sync.overlap,
            page_size: self.sync.page_size,
            retention: self.sync.retention,
            reconcile_every: self.sync.reconcile_every,
            reconcile_window: self.sync.reconcile_window,
            max_pages: self.sync.max_pages,
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

/// The archive's location: --db / TFAUDIT_DB, then the config's `db`, then the
/// default file.
///
/// # Errors
/// A location that cannot be read (exit 2).
pub fn db_location(cli: &Cli, config: Option<&(PathBuf, ConfigFile)>) -> Result<Location, Failure> {
    if let Some(db) = &cli.db {
        return Ok(db.clone());
    }
    if let Some((path, file)) = config
        && let Some(db) = &file.db
    {
        // A relative file is relative to the config file, as a config author would expect.
        return Ok(Location::from_os(db.0.as_os_str())?.relative_to(path.parent().unwrap_or(Path::new("."))));
    }
    Ok(Location::Sqlite(tfaudit_config::default_db_path()))
}

/// Opens the archive wherever the flags and config say it is; the one way a command
/// gets its store.
///
/// # Errors
/// A location that cannot be read (exit 2), or the archive's error (exit 5).
pub fn open_archive(cli: &Cli, config: Option<&(PathBuf, ConfigFile)>, mode: Mode) -> Result<Arc<dyn Store>, Failure> {
    let mut location = db_location(cli, config)?;
    if let Location::Postgres(url) = &location
        && !url.has_password()
        && let Some((path, file)) = config
        && let Some(secret) = &file.db_password
    {
        let password = secret.resolve(&format!("{}: db_password", path.display())).map_err(Failure::Usage)?;
        location = Location::Postgres(url.or_password(password.expose()));
    }
    Ok(location.open(mode)?)
}

/// Where `archive push` writes: `--to` / `TFAUDIT_ARCHIVE_TO`, else `[archive]
/// location` (a relative directory there is relative to the config file), with the
/// S3 settings of `[archive]` and their secrets read.
///
/// # Errors
/// No location, or one that cannot be read (exit 2).
pub fn cold_location(
    to: Option<&str>,
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<(tfaudit_cold::Location, tfaudit_cold::S3Settings), Failure> {
    let section = config.map(|(_, f)| f.archive.clone()).unwrap_or_default();
    let location = match (to, &section.location, config) {
        (Some(to), _, _) => tfaudit_cold::Location::parse(to)?,
        (None, Some(text), Some((path, _))) => {
            tfaudit_cold::Location::parse(text)?.relative_to(path.parent().unwrap_or(Path::new(".")))
        }
        _ => {
            return Err(Failure::Usage(
                "no archive location: give --to LOCATION, set TFAUDIT_ARCHIVE_TO, or add [archive] location to the config (a directory, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)".into(),
            ));
        }
    };
    let what = |key: &str| match config {
        Some((path, _)) => format!("{}: [archive] {key}", path.display()),
        None => format!("[archive] {key}"),
    };
    let secret = |s: &Option<tfaudit_config::SecretSource>, key: &str| {
        s.as_ref().map(|s| s.resolve(&what(key))).transpose().map_err(Failure::Usage)
    };
    // The standard variables' secrets are hidden from every log line and error too.
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(v) = std::env::var(name)
            && !v.trim().is_empty()
        {
            tfaudit_api::redact::register(v.trim());
        }
    }
    let s3 = tfaudit_cold::S3Settings {
        endpoint: section.endpoint.clone(),
        region: section.region.clone(),
        allow_http: section.allow_http,
        access_key_id: secret(&section.access_key_id, "access_key_id")?,
        secret_access_key: secret(&section.secret_access_key, "secret_access_key")?,
        session_token: secret(&section.session_token, "session_token")?,
    };
    Ok((location, s3))
}

/// `watch` and `serve`'s scheduled push: `[archive] push_every` with its location,
/// checked but not connected (`config check` runs this too).
///
/// # Errors
/// A `push_every` under a second or without a location, or a location that cannot be
/// read (exit 2).
pub fn push_schedule(
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<Option<(tfaudit_cold::Location, tfaudit_cold::S3Settings, std::time::Duration)>, Failure> {
    let Some(every) = config.and_then(|(_, f)| f.archive.push_every) else { return Ok(None) };
    if every.0 < std::time::Duration::from_secs(1) {
        return Err(Failure::Usage("[archive] push_every must be at least 1s (such as \"1h\")".into()));
    }
    if config.is_some_and(|(_, f)| f.archive.location.is_none()) {
        return Err(Failure::Usage(
            "[archive] push_every needs [archive] location: a directory, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix".into(),
        ));
    }
    let (location, s3) = cold_location(None, config)?;
    Ok(Some((location, s3, every.0)))
}

/// `--tz` / `TFAUDIT_TZ`, when it names something: an empty variable (`TFAUDIT_TZ=` in
/// an environment file) is no setting, as for the project's other variables.
#[must_use]
pub fn tz_flag(cli: &Cli) -> Option<&str> {
    cli.tz.as_deref().map(str::trim).filter(|z| !z.is_empty())
}

/// The zone times are shown in: `--tz` / `TFAUDIT_TZ`, else `[display] timezone`, else
/// UTC. `local` is the system's zone.
///
/// # Errors
/// A name that is not a time zone (exit 2).
pub fn display_zone(cli: &Cli, config: Option<&(PathBuf, ConfigFile)>) -> Result<jiff::tz::TimeZone, Failure> {
    let (name, from) = match (tz_flag(cli), config.and_then(|(p, f)| f.display.timezone.as_ref().map(|z| (z, p)))) {
        (Some(z), _) => (z.to_owned(), "--tz".to_owned()),
        (None, Some((z, path))) => (z.trim().to_owned(), format!("{}: [display] timezone", path.display())),
        (None, None) => return Ok(jiff::tz::TimeZone::UTC),
    };
    if name.eq_ignore_ascii_case("local") {
        return jiff::tz::TimeZone::try_system().map_err(|_| {
            Failure::Usage(format!("{from}: the system's time zone cannot be found; name one, such as Europe/Berlin"))
        });
    }
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    jiff::tz::TimeZone::get(&name).map_err(|_| {
        let shown: String = name.chars().take(60).collect();
        Failure::Usage(format!(
            "{from}: {shown:?} is not a time zone; write an IANA name such as Europe/Berlin or America/New_York, UTC, or local"
        ))
    })
}

/// `[retention] keep_local`: checked (at least a day, and a location to confirm days
/// are pushed) but not applied.
///
/// # Errors
/// A `keep_local` under a day, or without `[archive] location` (exit 2).
pub fn keep_local(config: Option<&(PathBuf, ConfigFile)>) -> Result<Option<std::time::Duration>, Failure> {
    let Some((_, file)) = config else { return Ok(None) };
    let Some(keep) = file.retention.keep_local else { return Ok(None) };
    if keep.0 < std::time::Duration::from_secs(24 * 3600) {
        return Err(Failure::Usage(
            "[retention] keep_local must be at least 1d (such as \"400d\"): only whole finished days are removed"
                .into(),
        ));
    }
    if file.archive.location.is_none() {
        return Err(Failure::Usage(
            "[retention] keep_local needs [archive] location, where the days removed locally are kept: a directory, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix".into(),
        ));
    }
    Ok(Some(keep.0))
}

/// [`push_schedule`], connected: what the service runs.
///
/// # Errors
/// As [`push_schedule`], or a directory that cannot be made (exit 2).
pub fn scheduled_push(
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<Option<tfaudit_service::ScheduledPush>, Failure> {
    let Some((location, s3, every)) = push_schedule(config)? else { return Ok(None) };
    let keep_local = keep_local(config)?;
    Ok(Some(tfaudit_service::ScheduledPush { target: Arc::new(location.open(&s3)?), every, keep_local }))
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
        reconcile_every: args.reconcile_every,
        reconcile_window: args.reconcile_window,
        max_page_bytes: args.max_page_bytes,
        max_pages: args.max_pages,
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
    let with_scheme = if address.contains("://") { address.to_owned() } else { format!("https://{address}") };
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
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => (h, p.parse().ok()),
        _ => (authority, None),
    };
    let default_port = if text.starts_with("https://") { 443 } else { 80 };
    Some((host.to_ascii_lowercase(), port.filter(|&p| p != default_port)))
}

fn client(address: &str, token: tfaudit_api::Token, s: &SyncSettings) -> Result<Client, Failure> {
    let mut options = ClientOptions::new(address, token);
    options.rate_limit = s.rate_limit;
    options.timeout = s.timeout;
    options.max_page_bytes = s.max_page_bytes;
    options.retry = RetryPolicy { max_retries: s.max_retries, min_delay: s.retry_delay, ..RetryPolicy::default() };
    Client::new(options).map_err(Failure::from)
}

/// The organizations to sync: the config's, or the one the flags and environment name.
pub fn organizations(
    args: &SyncArgs,
    interval: Option<tfaudit_config::Duration>,
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<Vec<Organization>, Failure> {
    let flags = flag_layer(args, interval);
    let configured = config.map(|(_, f)| f.organizations.as_slice()).unwrap_or_default();
    let global = config.map(|(_, f)| f.sync.clone()).unwrap_or_default();
    if configured.is_empty() {
        if args.org.is_some() {
            return Err(Failure::Usage("--org picks one of the config's [[organization]] entries, and there are none; drop --org or add a config".into()));
        }
        let address = address(args);
        let host = host_of(&address);
        let sync =
            SyncSection::merge(&[&flags, &global]).resolve("settings").map_err(|e| Failure::Usage(e.to_string()))?;
        let explicit = args.token_file.as_deref().map_or(Explicit::None, Explicit::File);
        let host_only = host.split(':').next().unwrap_or(&host).to_owned();
        let found = find_token(&host_only, explicit, &ProcessEnv).map_err(Failure::from)?;
        tracing::debug!(source = %found.source, "token found");
        let name = args.name.clone().unwrap_or(host);
        check_name(&name)?;
        return Ok(vec![Organization { name, client: client(&address, found.token, &sync)?, sync, enrich: None }]);
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
        let address = org.address.clone().unwrap_or_else(|| tfaudit_api::DEFAULT_ADDRESS.to_owned());
        let host = host_of(&address);
        let host_only = host.split(':').next().unwrap_or(&host).to_owned();
        let explicit = match (&org.token_file, &org.token_env) {
            (Some(f), _) => Explicit::File(f),
            (None, Some(v)) => Explicit::Env(v),
            (None, None) => Explicit::None,
        };
        let found = find_token(&host_only, explicit, &ProcessEnv)
            .map_err(|e| Failure::Credentials(format!("organization {:?}: {e}", org.name)))?;
        let enrich = match &org.enrich_token {
            None => None,
            Some(secret) => {
                let what = format!("organization {:?}: enrich_token", org.name);
                let token = secret.resolve(&what).map_err(Failure::Credentials)?;
                let token = tfaudit_api::Token::new(token.expose())
                    .map_err(|e| Failure::Credentials(format!("{what}: {e}")))?;
                Some(tfaudit_sync::Enrichment {
                    client: client(&address, token, &sync)?,
                    organization: org.enrich_organization.clone().unwrap_or_else(|| org.name.clone()),
                    every: org.enrich_every.map_or(std::time::Duration::from_secs(3600), |d| d.0),
                })
            }
        };
        out.push(Organization { name: org.name.clone(), client: client(&address, found.token, &sync)?, sync, enrich });
    }
    if out.is_empty() {
        return Err(Failure::Usage(format!(
            "no organization named {:?} in the config; it lists {}",
            args.org.as_deref().unwrap_or_default(),
            configured.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

/// `serve`'s listeners, access token and connection limits, from flags, environment
/// and `[serve]`, judged by [`tfaudit_server::Options::check`]: `config check` runs
/// this very function, so it refuses what `serve` would.
pub fn serve(
    listen: Option<&str>,
    metrics_listen: Option<&str>,
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<tfaudit_server::Options, Failure> {
    let section = config.map(|(_, f)| f.serve.clone()).unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let address = |what: &str, text: &str| -> Result<std::net::SocketAddr, Failure> {
        text.trim().parse().map_err(|_| {
            Failure::Usage(format!("{what} {text:?} is not an address; write host:port, such as 127.0.0.1:8080"))
        })
    };
    let (listen_from, listen) = match (listen, env("TFAUDIT_LISTEN"), section.listen) {
        (Some(l), _, _) => ("--listen", l.to_owned()),
        (None, Some(l), _) => ("TFAUDIT_LISTEN", l),
        (None, None, Some(l)) => ("[serve] listen", l),
        (None, None, None) => ("--listen", "127.0.0.1:8080".to_owned()),
    };
    let (metrics_from, metrics) = match (metrics_listen, env("TFAUDIT_METRICS_LISTEN"), section.metrics_listen) {
        (Some(l), _, _) => ("--metrics-listen", l.to_owned()),
        (None, Some(l), _) => ("TFAUDIT_METRICS_LISTEN", l),
        (None, None, Some(l)) => ("[serve] metrics_listen", l),
        (None, None, None) => ("--metrics-listen", "127.0.0.1:9464".to_owned()),
    };
    let access_token = match env("TFAUDIT_ACCESS_TOKEN") {
        Some(t) => Some(tfaudit_config::Secret::new(t)),
        None => section.access_token.map(|s| s.resolve("[serve] access_token")).transpose().map_err(Failure::Usage)?,
    };
    let defaults = tfaudit_server::Limits::default();
    let options = tfaudit_server::Options {
        listen: address(listen_from, &listen)?,
        metrics_listen: if metrics.trim() == "off" { None } else { Some(address(metrics_from, &metrics)?) },
        access_token,
        limits: tfaudit_server::Limits {
            header_timeout: section.header_timeout.map_or(defaults.header_timeout, |d| d.0),
            idle_timeout: section.idle_timeout.map_or(defaults.idle_timeout, |d| d.0),
            max_connections: section.max_connections.unwrap_or(defaults.max_connections),
        },
        zone: crate::output::zone(),
    };
    options.check().map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(options)
}

/// This instance's name and lease period, from `--instance`/`--lease`,
/// `TFAUDIT_LEASE` and `[cluster]`.
pub fn cluster(
    lease: Option<std::time::Duration>,
    instance: Option<&str>,
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<tfaudit_service::Cluster, Failure> {
    let section = config.map(|(_, f)| f.cluster.clone()).unwrap_or_default();
    let env = std::env::var("TFAUDIT_LEASE").ok().filter(|v| !v.trim().is_empty());
    let (from, lease) = match (lease, env, section.lease) {
        (Some(l), _, _) => ("--lease", l),
        (None, Some(text), _) => {
            let l = tfaudit_config::parse_duration(text.trim()).map_err(|e| {
                Failure::Usage(format!("TFAUDIT_LEASE {text:?} is not a duration ({e}); write e.g. TFAUDIT_LEASE=15s"))
            })?;
            ("TFAUDIT_LEASE", l)
        }
        (None, None, Some(l)) => ("[cluster] lease", l.0),
        (None, None, None) => ("--lease", tfaudit_service::DEFAULT_LEASE),
    };
    if lease < std::time::Duration::from_secs(1) {
        return Err(Failure::Usage(format!(
            "{from} {} is too short: a lease must last at least 1s (the default is 15s)",
            tfaudit_config::Duration(lease)
        )));
    }
    let (from, instance) = match (instance, section.instance) {
        (Some(i), _) => ("--instance", i.to_owned()),
        (None, Some(i)) => ("[cluster] instance", i),
        (None, None) => ("--instance", tfaudit_service::default_instance()),
    };
    if instance.trim().is_empty() || instance.len() > 200 || instance.chars().any(char::is_control) {
        return Err(Failure::Usage(format!(
            "{from} {instance:?}: name this instance with 1 to 200 printable characters, unique among the instances sharing the archive"
        )));
    }
    Ok(tfaudit_service::Cluster { instance, lease })
}

fn check_name(name: &str) -> Result<(), Failure> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')) {
        return Err(Failure::Usage(format!("--name {name:?}: use letters, digits, '.', '_', '-' or ':'")));
    }
    Ok(())
}

/// The alert engine's settings: the built-in rules and the rules file, destinations
/// with their secrets read, default destinations, and link bases.
pub fn alerts(
    config: Option<&(PathBuf, ConfigFile)>,
    rules_file: Option<&Path>,
) -> Result<tfaudit_alerts::runner::Settings, Failure> {
    use tfaudit_alerts::destination::{Destination, Kind};
    use tfaudit_alerts::rules::{RuleSet, Severity};

    let file = config.map(|(_, f)| f.clone()).unwrap_or_default();
    let base = config.and_then(|(p, _)| p.parent()).unwrap_or(Path::new("."));
    let section = &file.alerts;
    let timezone = match &section.timezone {
        Some(name) => jiff::tz::TimeZone::get(name)
            .map_err(|_| Failure::Usage(format!("[alerts] timezone {name:?} is unknown")))?,
        None => jiff::tz::TimeZone::UTC,
    };
    let mut rules = if section.builtin.unwrap_or(true) {
        tfaudit_alerts::pack::builtin(&timezone).map_err(|e| Failure::Internal(e.to_string()))?
    } else {
        RuleSet::default()
    };
    let path = rules_file
        .map(Path::to_owned)
        .or_else(|| section.rules.as_ref().map(|r| if r.is_relative() { base.join(r) } else { r.clone() }));
    if let Some(path) = path {
        rules.overlay(RuleSet::load(&path, &timezone).map_err(|e| Failure::Usage(e.to_string()))?);
    }
    let unknown = rules.disable(&section.disable);
    if !unknown.is_empty() {
        return Err(Failure::Usage(format!(
            "[alerts] disable names {}, which no rule is called; `tfaudit rules list` lists them",
            unknown.join(", ")
        )));
    }

    let mut destinations = destinations(&file)?;
    let configured: Vec<String> = file.destinations.iter().map(|d| d.name.clone()).collect();
    destinations.entry("log".to_owned()).or_insert_with(|| Destination {
        name: "log".into(),
        kind: Kind::Log,
        min_severity: Severity::Info,
        timeout: std::time::Duration::from_secs(5),
    });
    let default_destinations = match &section.destinations {
        Some(list) => list.clone(),
        None if configured.is_empty() => vec!["log".to_owned()],
        None => configured,
    };
    for rule in rules.enabled() {
        for d in rule.destinations.iter().flatten() {
            if !destinations.contains_key(d) {
                return Err(Failure::Usage(format!(
                    "rule {:?} sends to {d:?}, which no [[destination]] defines",
                    rule.name
                )));
            }
        }
    }
    for (name, template) in [("title", &section.title), ("text", &section.text)] {
        if let Some(t) = template {
            tfaudit_alerts::render::check_template(t).map_err(|e| Failure::Usage(format!("[alerts] {name}: {e}")))?;
        }
    }
    let mut links = tfaudit_alerts::engine::Presentation {
        title: section.title.clone(),
        text: section.text.clone(),
        ..tfaudit_alerts::engine::Presentation::default()
    };
    for org in &file.organizations {
        let address = org.address.clone().unwrap_or_else(|| tfaudit_api::DEFAULT_ADDRESS.to_owned());
        links.bases.insert(org.name.clone(), format!("{}/app/{}", address.trim_end_matches('/'), org.name));
    }
    Ok(tfaudit_alerts::runner::Settings {
        rules,
        presentation: links,
        destinations,
        default_destinations,
        max_delivery_age: section.max_delivery_age.map_or(std::time::Duration::from_secs(7 * 86_400), |d| d.0),
        retry_delay: section.retry_delay.map_or(std::time::Duration::from_secs(5), |d| d.0),
        retry_cap: std::time::Duration::from_secs(600),
    })
}

/// Every `[[destination]]`, its secrets read and its settings checked.
///
/// # Errors
/// A secret that cannot be read, an address that is not one (exit 2).
pub fn destinations(
    file: &ConfigFile,
) -> Result<std::collections::HashMap<String, tfaudit_alerts::destination::Destination>, Failure> {
    use std::collections::HashMap;
    use tfaudit_alerts::destination::{Destination, Email, EmailTls, Kind, PAGERDUTY_URL};
    use tfaudit_alerts::rules::Severity;
    use tfaudit_config::DestinationKind;

    let mut destinations = HashMap::new();
    for d in &file.destinations {
        let what = |field: &str| format!("destination {:?}: {field}", d.name);
        let secret =
            |s: &Option<tfaudit_config::SecretSource>, field: &str| -> Result<tfaudit_config::Secret, Failure> {
                s.as_ref()
                    .ok_or_else(|| Failure::Usage(format!("{} is missing", what(field))))?
                    .resolve(&what(field))
                    .map_err(Failure::Usage)
            };
        // A URL is often a secret itself (Slack's is): the error names the field, not the text.
        let url = |s: tfaudit_config::Secret| -> Result<tfaudit_config::Secret, Failure> {
            match reqwest::Url::parse(s.expose()) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(s),
                Ok(_) => Err(Failure::Usage(format!("{} is not an http(s) URL with a host", what("url")))),
                Err(e) => {
                    Err(Failure::Usage(format!("{} is not a URL ({e}); write it as https://host/path", what("url"))))
                }
            }
        };
        let kind = match d.kind {
            DestinationKind::Slack => Kind::Slack { url: url(secret(&d.url, "url")?)? },
            DestinationKind::Pagerduty => Kind::PagerDuty {
                url: match &d.url {
                    Some(u) => url(u.resolve(&what("url")).map_err(Failure::Usage)?)?.expose().to_owned(),
                    None => PAGERDUTY_URL.to_owned(),
                },
                routing_key: secret(&d.routing_key, "routing_key")?,
            },
            DestinationKind::Webhook => Kind::Webhook {
                url: url(secret(&d.url, "url")?)?,
                secret: d.secret.as_ref().map(|s| s.resolve(&what("secret"))).transpose().map_err(Failure::Usage)?,
                headers: d
                    .headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.resolve(&what(&format!("headers.{k}")))?)))
                    .collect::<Result<_, String>>()
                    .map_err(Failure::Usage)?,
            },
            DestinationKind::Email => {
                let server = d.server.clone().unwrap_or_default();
                let tls = match d.tls.as_deref() {
                    Some("tls") => EmailTls::Tls,
                    Some("none") => EmailTls::None,
                    _ => EmailTls::StartTls,
                };
                let (host, port) = match server.rsplit_once(':') {
                    Some((h, p)) => (
                        h.to_owned(),
                        p.parse()
                            .map_err(|_| Failure::Usage(format!("{}: {server:?} is not host:port", what("server"))))?,
                    ),
                    None => (server.clone(), if tls == EmailTls::Tls { 465 } else { 587 }),
                };
                let ca_pem = match &d.ca_file {
                    Some(p) => Some(std::fs::read(p).map_err(|e| {
                        Failure::Usage(format!("{}: cannot read {}: {e}", what("ca_file"), p.display()))
                    })?),
                    None => None,
                };
                Kind::Email(Email {
                    host,
                    port,
                    tls,
                    username: d.username.clone(),
                    password: d
                        .password
                        .as_ref()
                        .map(|s| s.resolve(&what("password")))
                        .transpose()
                        .map_err(Failure::Usage)?,
                    from: d.from.clone().unwrap_or_default(),
                    to: d.to.clone(),
                    ca_pem,
                })
            }
            DestinationKind::Log => Kind::Log,
            DestinationKind::Stdout => Kind::Stdout,
        };
        let min_severity = d.min_severity.as_deref().unwrap_or("info").parse::<Severity>().map_err(Failure::Usage)?;
        let timeout = d.timeout.map_or(std::time::Duration::from_secs(30), |t| t.0);
        destinations.insert(d.name.clone(), Destination { name: d.name.clone(), kind, min_severity, timeout });
    }
    Ok(destinations)
}

/// `[[report]]`, resolved for the service: the display zone (`--tz`, `[display]
/// timezone`) for weeks and months, the email destinations it sends to, `write_to`
/// relative to the config file, and the alert outbox's retry settings. `None`: no
/// reports configured.
///
/// # Errors
/// A destination or zone that cannot be used (exit 2).
pub fn scheduled_reports(
    cli: &Cli,
    config: Option<&(PathBuf, ConfigFile)>,
) -> Result<Option<Arc<tfaudit_service::ScheduledReports>>, Failure> {
    use tfaudit_alerts::destination::Kind;
    let Some((path, file)) = config else { return Ok(None) };
    if file.reports.is_empty() {
        return Ok(None);
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let zone = display_zone(cli, config)?;
    let mut email = std::collections::HashMap::new();
    for (name, d) in destinations(file)? {
        if let Kind::Email(e) = d.kind {
            email.insert(name, (e, d.timeout));
        }
    }
    let mut reports = Vec::new();
    for r in &file.reports {
        let cadence = tfaudit_report::Cadence::parse(&r.period)
            .ok_or_else(|| Failure::Usage(format!("report {:?}: period must be \"weekly\" or \"monthly\"", r.name)))?;
        let format = match r.format.as_deref() {
            None | Some("html") => tfaudit_report::Format::Html,
            Some("md") => tfaudit_report::Format::Markdown,
            Some("json") => tfaudit_report::Format::Json,
            Some(other) => {
                return Err(Failure::Usage(format!("report {:?}: format {other:?} is not html, md or json", r.name)));
            }
        };
        let write_to = r.write_to.as_ref().map(|d| if d.is_relative() { base.join(d) } else { d.clone() });
        reports.push(tfaudit_service::ReportSchedule {
            name: r.name.clone(),
            cadence,
            format,
            org: r.org.clone(),
            send_to: r.send_to.clone(),
            write_to,
        });
    }
    let alerts = &file.alerts;
    Ok(Some(Arc::new(tfaudit_service::ScheduledReports {
        reports,
        zone,
        public_url: file.serve.public_url.clone(),
        email,
        retry_delay: alerts.retry_delay.map_or(std::time::Duration::from_secs(5), |d| d.0),
        retry_cap: std::time::Duration::from_secs(600),
        max_age: alerts.max_delivery_age.map_or(std::time::Duration::from_secs(7 * 86_400), |d| d.0),
        poll: std::time::Duration::from_secs(60),
    })))
}

/// How checkpoints are made: the signing key (`TFAUDIT_SIGNING_KEY`, else `[integrity]
/// signing_key`), the origin for a new tree, how often at least, and the copy's
/// directory (relative to the config file).
///
/// # Errors
/// A key that cannot be read or is not a signing key (exit 2).
pub fn checkpointer(config: Option<&(PathBuf, ConfigFile)>) -> Result<tfaudit_integrity::Checkpointer, Failure> {
    let section = config.map(|(_, f)| f.integrity.clone()).unwrap_or_default();
    let base = config.and_then(|(p, _)| p.parent()).unwrap_or(Path::new("."));
    let key = match std::env::var("TFAUDIT_SIGNING_KEY") {
        Ok(v) if !v.trim().is_empty() => {
            tfaudit_api::redact::register(v.trim());
            Some((tfaudit_config::Secret::new(v.trim()), "TFAUDIT_SIGNING_KEY"))
        }
        _ => section
            .signing_key
            .as_ref()
            .map(|s| {
                s.register_inline();
                // A key file is relative to the config file, as the archive's path is.
                let s = match s {
                    tfaudit_config::SecretSource::File { file } => {
                        tfaudit_config::SecretSource::File { file: base.join(file) }
                    }
                    other => other.clone(),
                };
                s.resolve("[integrity] signing_key").map(|k| (k, "[integrity] signing_key"))
            })
            .transpose()
            .map_err(Failure::Usage)?,
    };
    let signer = key
        .map(|(k, from)| {
            tfaudit_integrity::NoteSigner::parse(k.expose()).map_err(|e| Failure::Usage(format!("{from}: {e}")))
        })
        .transpose()?;
    let mut c = tfaudit_integrity::Checkpointer { signer, origin: section.origin, ..Default::default() };
    if let Some(every) = section.checkpoint_every {
        if every.0.is_zero() {
            return Err(Failure::Usage("[integrity] checkpoint_every must be longer than 0s".into()));
        }
        c.every = every.0;
    }
    c.dir = section.checkpoint_dir.map(|d| base.join(d));
    if let Some(url) = &section.checkpoint_webhook {
        url.register_inline();
        let url = url.resolve("[integrity] checkpoint_webhook").map_err(Failure::Usage)?;
        let parsed = reqwest::Url::parse(url.expose()).map_err(|_| {
            Failure::Usage("[integrity] checkpoint_webhook is not a URL: give an http:// or https:// address".into())
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::Usage("[integrity] checkpoint_webhook must be an http:// or https:// address".into()));
        }
        tfaudit_api::redact::register(url.expose());
        c.webhook = Some(url);
    }
    Ok(c)
}

/// The sink `[integrity] checkpoint_sink` names (the config file checked that one
/// does): taken from `built` when there, so that `watch` and `serve` send checkpoints
/// through the sink they forward with, else built from its `[[sink]]` table.
///
/// # Errors
/// What is wrong with the sink's table (exit 2).
pub fn checkpoint_sink(
    config: Option<&(PathBuf, ConfigFile)>,
    built: &[tfaudit_forward::Configured],
) -> Result<Option<tfaudit_forward::Configured>, Failure> {
    let Some((path, file)) = config else { return Ok(None) };
    let Some(name) = &file.integrity.checkpoint_sink else { return Ok(None) };
    if let Some(sink) = built.iter().find(|s| &s.settings.name == name) {
        return Ok(Some(sink.clone()));
    }
    let section = file.sinks.iter().find(|s| &s.name == name).ok_or_else(|| {
        Failure::Usage(format!("[integrity] checkpoint_sink names {name:?}, which no [[sink]] defines"))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    tfaudit_forward::build(section, base).map(Some).map_err(Failure::Usage)
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
