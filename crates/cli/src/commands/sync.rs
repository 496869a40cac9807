//! `tfaudit sync` and `tfaudit watch`.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tfaudit_backend::Mode;
use tfaudit_service::{Flow, Report, Service, ServiceConfig, ServiceError};
use tfaudit_sync::{SyncError, SyncReport};

use crate::args::{Cli, SyncArgs, WatchArgs};
use crate::failure::Failure;
use crate::output::{count, terminal_safe, time};
use crate::progress::Bar;
use crate::settings;

/// One line saying what a sync did.
pub fn report_line(r: &SyncReport) -> String {
    let mut line = format!(
        "{}: {} new events, {} already stored; {} pages, {} requests, {} retries",
        terminal_safe(&r.source),
        count(r.tally.new_events),
        count(r.tally.duplicates),
        count(r.tally.pages),
        count(r.tally.requests),
        count(r.tally.retries),
    );
    if let Some(p) = r.resumed_at_page {
        line.push_str(&format!("; resumed at page {p}"));
    }
    if r.reconciled && r.cursor.is_some() && r.tally.duplicates > 0 {
        line.push_str("; re-read the reconcile window for late events");
    }
    if r.tally.rejects > 0 {
        line.push_str(&format!("; {} rejected (not events; see `tfaudit status --rejects`)", count(r.tally.rejects)));
    }
    match r.cursor {
        Some(c) if r.complete => line.push_str(&format!("; cursor {}", time(c))),
        _ if !r.complete => line.push_str("; interrupted, the next run resumes"),
        _ => line.push_str("; no events yet"),
    }
    line
}

fn gap_banner(r: &SyncReport) {
    if let Some(g) = &r.gap {
        let _ = writeln!(
            std::io::stderr(),
            "\nWARNING: possible gap in {}: events between {} and {} may be lost.\n\
             The last complete sync was longer ago than the API keeps events. The gap is recorded; `tfaudit status` shows it.\n",
            terminal_safe(&r.source),
            time(g.from),
            time(g.to)
        );
    }
}

pub async fn sync(cli: &Cli, args: &SyncArgs) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let organizations = settings::organizations(args, None, config.as_ref())?;
    let cluster = settings::cluster(None, None, config.as_ref())?;
    // Before anything is stored: a checkpoint setting that cannot be used is refused
    // now, not after new events were stored and left without their checkpoint.
    let checkpointer = settings::checkpointer(config.as_ref())?;
    let sink = settings::checkpoint_sink(config.as_ref(), &[])?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::CreateIfMissing)?;
    let cancel = crate::stop_on_signals();
    let show_bar = !cli.quiet && std::io::stderr().is_terminal();
    let mut failure = None;
    let mut stored = 0;
    let mut out = crate::output::Stdout::new();
    for org in &organizations {
        let bar = Bar::new(show_bar, &org.name);
        let result = sync_under_lease(&store, &cluster, org, &bar, &cancel).await;
        match result {
            Ok(report) => {
                stored += report.tally.new_events;
                gap_banner(&report);
                if args.json {
                    let line = serde_json::to_string(&report).map_err(|e| Failure::Internal(e.to_string()))?;
                    writeln!(out, "{line}")?;
                } else if !cli.quiet {
                    writeln!(out, "{}", report_line(&report))?;
                }
                if !report.complete {
                    failure.get_or_insert(Failure::Interrupted);
                }
            }
            Err(e) => {
                let f = e;
                if organizations.len() > 1 {
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: {}: {}",
                        terminal_safe(&org.name),
                        tfaudit_api::redact::redact(&f.to_string())
                    );
                    failure.get_or_insert(f);
                } else {
                    failure.get_or_insert(f);
                }
            }
        }
        if cancel.is_cancelled() {
            failure.get_or_insert(Failure::Interrupted);
            break;
        }
    }
    // What was stored is checkpointed even when a later organization failed.
    if stored > 0 {
        let c = checkpointer.clone();
        match tfaudit_store::blocking(&store, move |s| c.run(s, jiff::Timestamp::now())).await {
            Ok(made) => {
                let client = tfaudit_service::checkpoints::copy_client();
                if let Err(e) =
                    tfaudit_service::checkpoints::send_new(&client, &checkpointer, sink.as_ref(), &made).await
                {
                    failure.get_or_insert(Failure::Api(e));
                }
            }
            Err(e) => {
                failure.get_or_insert(e.into());
            }
        }
    }
    match failure {
        None => Ok(()),
        // With several organizations each error was printed as it happened.
        Some(f) if organizations.len() > 1 && !matches!(f, Failure::Interrupted) => Err(Failure::from_code_only(f)),
        Some(f) => Err(f),
    }
}

/// One organization's sync, under its lease like a `watch` instance's, so that a
/// one-shot sync and running instances never write the same organization at once.
/// The lease is held by `sync-<instance>` and released at the end. While a live
/// `watch`/`serve` instance holds it, the sync is refused (that instance keeps the
/// organization current); while another one-shot sync holds it (or one killed before
/// it could release it), this one waits for it to end or expire. A one-shot sync's
/// lease is short (at most [`ONE_SHOT_LEASE`]), so one killed holds up the next for
/// seconds only.
async fn sync_under_lease(
    store: &Arc<dyn tfaudit_store::Store>,
    cluster: &tfaudit_service::Cluster,
    org: &settings::Organization,
    bar: &Bar,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<SyncReport, Failure> {
    let cluster = tfaudit_service::Cluster {
        instance: format!("sync-{}", cluster.instance),
        lease: cluster.lease.min(ONE_SHOT_LEASE),
    };
    let lease = take_one_shot_lease(store, &cluster, &org.name, cancel, |holder, since, expires| {
        format!(
            "{} is being synced by instance {holder} (since {since}); it keeps the archive current, so no sync is needed (if that instance has stopped, its lease ends at {expires})",
            terminal_safe(&org.name),
        )
    })
    .await?;
    let lost = cancel.child_token();
    let stop = tokio_util::sync::CancellationToken::new();
    let fence = lease.fence();
    let renewer = tfaudit_service::cluster::keep_renewed(store.clone(), lease, cluster, lost.clone(), stop.clone());
    let result =
        tfaudit_sync::sync_fenced(store.clone(), &org.client, &org.name, org.walk_options(), bar, &lost, Some(fence))
            .await;
    // Names are read under the same lease, when due; a failure costs only names.
    if let (Ok(_), Some(enrich)) = (&result, &org.enrich) {
        names_warnings(&org.name, tfaudit_sync::refresh_names(store.clone(), &org.name, enrich, false).await);
    }
    stop.cancel();
    if let Ok(Some(lease)) = renewer.await {
        let _ = tfaudit_store::blocking(store, move |s| s.release_lease(&lease)).await;
    }
    Ok(result?)
}

/// Says on stderr what a names refresh could not do (names are a convenience: the
/// sync itself succeeded).
pub(crate) fn names_warnings(
    organization: &str,
    result: Result<Option<tfaudit_sync::Refreshed>, tfaudit_sync::EnrichError>,
) {
    let org = terminal_safe(organization);
    match result {
        Ok(Some(r)) => {
            for why in r.skipped {
                let _ = writeln!(std::io::stderr(), "warning: {org}: names: {}", terminal_safe(&why));
            }
        }
        Ok(None) => {}
        Err(e) => {
            let error = e.to_string();
            let text = tfaudit_api::redact::redact(&error);
            let _ = writeln!(
                std::io::stderr(),
                "warning: {}; names stay as they were (check enrich_token: an organization token)",
                terminal_safe(&text)
            );
        }
    }
}

/// The longest lease a one-shot command (`sync`, `forward --once`) takes: it renews it
/// every third, and one killed before releasing it delays the next this long.
pub(crate) const ONE_SHOT_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the lease `name` for a one-shot command held by `cluster.instance`. While a
/// live `watch`/`serve` instance holds it, refuses (exit 5) with `busy(holder, since,
/// expires)`; while another one-shot command holds it (or one killed before it could
/// release it), waits for it to end or expire.
pub(crate) async fn take_one_shot_lease(
    store: &Arc<dyn tfaudit_store::Store>,
    cluster: &tfaudit_service::Cluster,
    name: &str,
    cancel: &tokio_util::sync::CancellationToken,
    busy: impl Fn(String, String, String) -> String,
) -> Result<tfaudit_store::Lease, Failure> {
    let mut told = false;
    loop {
        let (n, holder, ttl) = (name.to_owned(), cluster.instance.clone(), cluster.lease);
        let taken = tfaudit_store::blocking(store, move |s| s.acquire_lease(&n, &holder, ttl)).await?;
        if let Some(lease) = taken {
            return Ok(lease);
        }
        let (held, live) = tfaudit_store::blocking(store, move |s| {
            Ok::<_, tfaudit_store::StoreError>((s.leases()?, s.live_instances()?))
        })
        .await?;
        if let Some(l) = held.into_iter().find(|l| l.name == name) {
            if live.contains(&l.holder) {
                return Err(Failure::Store(busy(
                    terminal_safe(&l.holder).into_owned(),
                    time(l.since),
                    time(l.expires),
                )));
            }
            if !told {
                tracing::info!(lease = %name, holder = %l.holder, "waiting for another one-shot run to end");
                told = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            () = cancel.cancelled() => return Err(Failure::Interrupted),
        }
    }
}

/// `watch`, and with `server` also the dashboard, API and metrics: `serve`. The
/// service (`tfaudit-service`) runs it; this resolves its settings and words its lines.
pub async fn watch(cli: &Cli, args: &WatchArgs, server: Option<tfaudit_server::Options>) -> Result<(), Failure> {
    let config = settings::config(cli)?;
    let organizations = settings::organizations(&args.sync, args.interval, config.as_ref())?;
    let cluster = settings::cluster(args.lease.map(|l| l.0), args.instance.as_deref(), config.as_ref())?;
    let store = settings::open_archive(cli, config.as_ref(), Mode::CreateWhenReachable)?;
    let cancel = crate::stop_on_signals();
    let alerts_on = !args.no_alerts && config.as_ref().is_none_or(|(_, f)| f.alerts.enabled != Some(false));
    // Checked before anything listens, so that a bad destination is refused at once.
    let alert_settings =
        if alerts_on { Some(Arc::new(settings::alerts(config.as_ref(), args.rules.as_deref())?)) } else { None };
    let organizations = organizations
        .into_iter()
        .map(|o| tfaudit_service::Organization {
            walk: o.walk_options(),
            interval: o.sync.interval,
            name: o.name,
            client: o.client,
            enrich: o.enrich,
        })
        .collect::<Vec<_>>();
    let sinks = match &config {
        Some((path, file)) => {
            let base = path.parent().unwrap_or(std::path::Path::new("."));
            file.sinks
                .iter()
                .map(|s| tfaudit_forward::build(s, base).map_err(Failure::Usage))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };
    let archive_push = settings::scheduled_push(config.as_ref())?;
    let mut service = ServiceConfig::new(organizations);
    service.sinks = sinks;
    service.archive_push = archive_push;
    service.cluster = cluster;
    service.alerts = alert_settings;
    service.serve = server;
    service.checkpoints = Some(settings::checkpointer(config.as_ref())?);
    service.checkpoint_sink = settings::checkpoint_sink(config.as_ref(), &service.sinks)?;
    service.reports = settings::scheduled_reports(cli, config.as_ref())?;
    let report = Arc::new(Lines { json: args.sync.json });
    // Stopped by a signal or because nobody reads the reports: both exit 0.
    Service::new(service).report_to(report).run(store, cancel).await.map_err(service_failure)?;
    Ok(())
}

fn service_failure(e: ServiceError) -> Failure {
    match e {
        ServiceError::Serve(e) => Failure::Usage(e.to_string()),
        ServiceError::Alerts(e) => crate::commands::alerts::alert_failure(e),
    }
}

/// The lines `watch` and `serve` print after each sync.
struct Lines {
    json: bool,
}

impl Report for Lines {
    fn synced(&self, name: &str, result: &Result<SyncReport, SyncError>) -> Flow {
        match result {
            Ok(report) => {
                gap_banner(report);
                if self.json {
                    if let Ok(line) = serde_json::to_string(report) {
                        // Nobody reads the reports any more: stop as for a signal, and
                        // exit 0 like every command whose reader goes away.
                        if let Err(Failure::ClosedPipe) =
                            writeln!(crate::output::Stdout::new(), "{line}").map_err(Failure::from)
                        {
                            return Flow::Stop;
                        }
                    }
                } else {
                    tracing::info!("{}", report_line(report));
                }
            }
            Err(e) => {
                tracing::error!(organization = %terminal_safe(name), "sync failed: {e}; trying again at the next interval");
            }
        }
        Flow::Continue
    }
}
