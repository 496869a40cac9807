//! The supervisor behind `tfaudit watch` and `tfaudit serve`: every organization's
//! sync task on its interval, the alert runner (evaluation, and one delivery task per
//! destination) and each forwarding sink (one task each, under its lease) woken by
//! each sync that stored events, the scheduled compliance reports, and when serving the
//! dashboard and API and the metrics listener; readiness and metrics follow every
//! sync. It runs until its cancellation token fires (the CLI ties it to SIGINT and
//! SIGTERM) or a [`Report`] hook asks it to stop; then every task finishes what it
//! holds (a sync commits its current page, the server its requests in flight).
//!
//! The caller resolves everything first (settings are checked, the archive is open)
//! and passes it in a [`ServiceConfig`]; what the service has to say back comes
//! through [`Report`], so that the CLI words its own lines.

mod alerts;
pub mod checkpoints;
pub mod cluster;
mod cold;
mod organizations;
mod reports;
mod retry;
mod sinks;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tfaudit_server::{Health, Metrics};
use tfaudit_store::Store;
use tfaudit_sync::{SyncError, SyncReport};
use tokio_util::sync::CancellationToken;

pub use alerts::run_alerts;
pub use cluster::{Cluster, DEFAULT_LEASE, default_instance};
pub use cold::{PUSH_LEASE, ScheduledPush};
pub use organizations::Organization;
pub use reports::{GRACE, REPORTS_LEASE, ReportSchedule, ScheduledReports};

/// Everything the service runs, resolved and checked by the caller.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Each synced in its own task, on its own interval.
    pub organizations: Vec<Organization>,
    /// None: alerts off.
    pub alerts: Option<Arc<tfaudit_alerts::runner::Settings>>,
    /// None: no dashboard, API or metrics listener (`watch`).
    pub serve: Option<tfaudit_server::Options>,
    /// The alert engine evaluates at least this often, besides after each sync that
    /// stored events (deliveries due for a retry are tried as often).
    pub alert_poll: Duration,
    /// This instance's name and lease period: each organization is synced only while
    /// this instance holds its lease, so that several instances share one archive.
    pub cluster: Cluster,
    /// Each forwarded in its own task, while this instance holds its lease.
    pub sinks: Vec<tfaudit_forward::Configured>,
    /// Checkpoints of the archive's tree, after each sync that stored events and at
    /// least every `every`; `None`: none made.
    pub checkpoints: Option<tfaudit_integrity::Checkpointer>,
    /// The sink each new checkpoint is also sent to (`[integrity] checkpoint_sink`).
    pub checkpoint_sink: Option<tfaudit_forward::Configured>,
    /// Finished days pushed to cold storage every so often (`[archive] push_every`),
    /// while this instance holds the lease `archive-push`.
    pub archive_push: Option<ScheduledPush>,
    /// Compliance reports made after each period closes (`[[report]]`); `None`: none.
    pub reports: Option<Arc<ScheduledReports>>,
}

impl ServiceConfig {
    /// `organizations` synced, with alerts off and nothing served.
    #[must_use]
    pub fn new(organizations: Vec<Organization>) -> Self {
        Self {
            organizations,
            alerts: None,
            serve: None,
            alert_poll: Duration::from_secs(1),
            cluster: Cluster::default(),
            sinks: Vec::new(),
            checkpoints: None,
            checkpoint_sink: None,
            archive_push: None,
            reports: None,
        }
    }
}

/// Whether the service goes on after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop as for a cancellation (e.g. nobody reads the reports any more).
    Stop,
}

/// What the service tells its caller as it runs. Every method has a default that
/// says nothing.
pub trait Report: Send + Sync {
    /// The listeners are bound (only when serving): the dashboard and API, and the
    /// metrics listener if any. Called before any sync starts.
    fn listening(&self, _api: SocketAddr, _metrics: Option<SocketAddr>) {}

    /// After every sync of every organization, once readiness and metrics have
    /// recorded it.
    fn synced(&self, _organization: &str, _result: &Result<SyncReport, SyncError>) -> Flow {
        Flow::Continue
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Report for Silent {}

/// How a run ended (both are a clean stop: everything held was finished first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The caller's cancellation token fired.
    Cancelled,
    /// A [`Report`] hook returned [`Flow::Stop`].
    StoppedByReport,
}

/// Why the service could not start. Once running it does not fail: a failed sync,
/// evaluation or delivery is logged, shown by readiness and tried again.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A listener could not be bound, or its options were refused.
    #[error(transparent)]
    Serve(#[from] tfaudit_server::ServeError),
    /// The alert runner could not be set up.
    #[error(transparent)]
    Alerts(#[from] tfaudit_alerts::runner::AlertError),
}

/// The supervisor, ready to run.
pub struct Service {
    config: ServiceConfig,
    report: Arc<dyn Report>,
}

impl Service {
    #[must_use]
    pub fn new(config: ServiceConfig) -> Self {
        Self { config, report: Arc::new(Silent) }
    }

    /// Where the service's reports go (by default nowhere).
    #[must_use]
    pub fn report_to(mut self, report: Arc<dyn Report>) -> Self {
        self.report = report;
        self
    }

    /// Runs until `cancel` fires or a report asks to stop, then waits for every task
    /// to finish what it holds.
    ///
    /// # Errors
    /// [`ServiceError`] when the listeners or the alert runner cannot start; nothing
    /// has been synced then.
    pub async fn run(self, store: Arc<dyn Store>, cancel: CancellationToken) -> Result<Outcome, ServiceError> {
        let Self { config, report } = self;
        // A child: a report's stop ends this run like a signal, and tells them apart.
        let cancel = cancel.child_token();
        let orgs = config.organizations;
        for o in &orgs {
            tracing::info!(organization = %o.name, address = o.client.address(), interval = %tfaudit_config::Duration(o.interval), "watching");
        }
        let members = Arc::new(cluster::Membership::new(config.cluster.clone(), orgs.len()));
        tracing::info!(instance = %config.cluster.instance, lease = %tfaudit_config::Duration(config.cluster.lease), "syncing each organization while this instance holds its lease");
        let health = Arc::new(Health::new(orgs.iter().map(|o| (o.name.clone(), o.interval)).collect()));
        let metrics = Arc::new(Metrics::new());
        for o in &orgs {
            metrics.add_client(&o.name, o.client.stats().clone());
        }
        for sink in &config.sinks {
            metrics.add_sink(&sink.settings.name);
        }
        let server_task = match config.serve {
            None => None,
            Some(options) => {
                let state = tfaudit_server::AppState::new(
                    store.clone(),
                    health.clone(),
                    metrics.clone(),
                    options.access_token.clone(),
                )
                .with_zone(options.zone.clone());
                let (addr, metrics_addr, task) = tfaudit_server::serve(state, &options, cancel.clone()).await?;
                tracing::info!("dashboard and API at http://{addr}/");
                if let Some(m) = metrics_addr {
                    tracing::info!("metrics at http://{m}/metrics");
                }
                report.listening(addr, metrics_addr);
                Some(task)
            }
        };
        // The alert engine runs beside the syncs, woken by each one that stores events.
        let wake = Arc::new(tokio::sync::Notify::new());
        // Each organization's backfill is history, not alerted on: the archive records
        // where its first backfill ended, and the engine starts there.
        let alert_task = if let Some(alert_settings) = config.alerts {
            tracing::info!(rules = alert_settings.rules.enabled().count(), "alerts on");
            let runner = match tfaudit_alerts::runner::Runner::new(store.clone(), alert_settings) {
                Ok(r) => r,
                Err(e) => {
                    // The server may be listening already: it stops before this returns.
                    cancel.cancel();
                    if let Some(task) = server_task {
                        let _ = task.await;
                    }
                    return Err(e.into());
                }
            };
            Some(tokio::spawn(run_alerts(
                runner,
                cancel.clone(),
                wake.clone(),
                config.alert_poll,
                Some(config.cluster.clone()),
            )))
        } else {
            None
        };
        // Each sink beside the syncs and alerts, woken by each sync that stores events.
        let mut sink_tasks = tokio::task::JoinSet::new();
        let mut sink_wakes = Vec::new();
        for sink in config.sinks {
            tracing::info!(sink = %sink.settings.name, kind = sink.settings.kind.as_str(), "forwarding");
            let wake = Arc::new(tokio::sync::Notify::new());
            sink_wakes.push(wake.clone());
            sink_tasks.spawn(sinks::forward_forever(
                store.clone(),
                sink,
                config.cluster.clone(),
                wake,
                metrics.clone(),
                cancel.clone(),
            ));
        }
        let checkpoint_wake = Arc::new(tokio::sync::Notify::new());
        let checkpoint_sink = config.checkpoint_sink;
        let checkpoint_task = config.checkpoints.map(|c| {
            tokio::spawn(checkpoints::checkpoint_forever(
                store.clone(),
                c,
                checkpoint_sink,
                checkpoint_wake.clone(),
                cancel.clone(),
            ))
        });
        let push_task = config.archive_push.map(|push| {
            tracing::info!(location = %push.target.shown(), every = %tfaudit_config::Duration(push.every), "pushing finished days to cold storage");
            tokio::spawn(cold::push_forever(store.clone(), push, config.cluster.clone(), cancel.clone()))
        });
        // Woken by every sync, whatever it stored: a sync that finishes may be the one
        // that makes a closed period's record complete.
        let report_wake = Arc::new(tokio::sync::Notify::new());
        let report_task = config.reports.map(|r| {
            let names = orgs.iter().map(|o| o.name.clone()).collect();
            tokio::spawn(reports::reports_forever(
                store.clone(),
                r,
                names,
                config.cluster.clone(),
                report_wake.clone(),
                cancel.clone(),
            ))
        });
        let lease_metrics = metrics.clone();
        let stopped_by_report = Arc::new(AtomicBool::new(false));
        let on_sync: organizations::OnSync = {
            let (stop, stopped_by_report) = (cancel.clone(), stopped_by_report.clone());
            Arc::new(move |name: &str, result: &Result<SyncReport, SyncError>, took: Duration| {
                health.record(
                    name,
                    result.as_ref().err().map(|e| tfaudit_api::redact::redact(&e.to_string()).into_owned()),
                );
                let (label, new) = match result {
                    Ok(r) if r.complete => ("ok", r.tally.new_events),
                    Ok(r) => ("interrupted", r.tally.new_events),
                    Err(_) => ("failed", 0),
                };
                metrics.sync(name, label, new, took.as_secs_f64());
                report_wake.notify_one();
                if report.synced(name, result) == Flow::Stop {
                    stopped_by_report.store(true, Ordering::SeqCst);
                    stop.cancel();
                }
                if new > 0 {
                    wake.notify_one();
                    sink_wakes.iter().for_each(|w| w.notify_one());
                    checkpoint_wake.notify_one();
                }
            })
        };
        let on_lease: organizations::OnLease =
            { Arc::new(move |name: &str, change: &'static str| lease_metrics.lease(name, change)) };
        // Counted once before any lease is taken, so that an instance joining others
        // does not first reach for more than its share.
        members.beat(&store).await;
        // In a set so that it ends with this future even when that is dropped.
        let mut heartbeat = tokio::task::JoinSet::new();
        heartbeat.spawn(cluster::heartbeat_forever(store.clone(), members.clone(), cancel.clone()));
        organizations::sync_all(store.clone(), orgs, members, cancel, on_sync, on_lease).await;
        while heartbeat.join_next().await.is_some() {}
        // Its leases are released: a last heartbeat that ends now lets the others
        // count one instance fewer at once, and take all of them.
        let instance = config.cluster.instance.clone();
        if let Err(e) = tfaudit_store::blocking(&store, move |s| s.heartbeat(&instance, Duration::ZERO)).await {
            tracing::debug!("the last heartbeat failed: {e}; this instance's heartbeat expires by itself");
        }
        if let Some(task) = alert_task {
            let _ = task.await;
        }
        while sink_tasks.join_next().await.is_some() {}
        if let Some(task) = checkpoint_task {
            let _ = task.await;
        }
        if let Some(task) = push_task {
            let _ = task.await;
        }
        if let Some(task) = report_task {
            let _ = task.await;
        }
        if let Some(task) = server_task {
            let _ = task.await;
        }
        Ok(if stopped_by_report.load(Ordering::SeqCst) { Outcome::StoppedByReport } else { Outcome::Cancelled })
    }
}
