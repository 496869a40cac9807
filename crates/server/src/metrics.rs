//! Prometheus metrics, on a listener of their own (127.0.0.1:9464 by default) so that
//! they are not exposed with the dashboard by accident.
//!
//! Counted as things happen: events ingested, syncs and their duration, HTTP requests
//! by route. Read at scrape time: API requests by status and retries (from each
//! organization's client), and from the archive: seconds since the last successful
//! sync, cursor lag, events stored, rejects, gaps, alerts and deliveries, and each
//! sink's lag behind the archive. Each sink's events are counted as it forwards them.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tfaudit_api::ClientStats;
use tfaudit_store::{AlertStatus, SourceStatus};

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Org {
    organization: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncResult {
    organization: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseChange {
    organization: String,
    change: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkResult {
    sink: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Http {
    route: String,
    status: String,
}

/// What the archive says, read at scrape time.
#[derive(Debug, Default)]
struct Snapshot {
    sources: Vec<SourceStatus>,
    alerts: AlertStatus,
    /// Each started sink's lag: events archived after its cursor, and seconds since
    /// the oldest of them was archived.
    sinks: Vec<(String, u64, f64)>,
}

#[derive(Debug, Default)]
struct Live {
    clients: Mutex<Vec<(String, Arc<ClientStats>)>>,
    sinks: Mutex<Vec<String>>,
    snapshot: Mutex<Snapshot>,
}

fn family<S: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (S, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = jiff::Timestamp::now();
        let org = |name: &str| Org { organization: name.to_owned() };
        {
            let clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut by_status = Vec::new();
            for (name, stats) in clients.iter() {
                for (status, n) in stats.by_status() {
                    by_status.push((
                        SyncResult { organization: name.clone(), result: status.to_string() },
                        ConstCounter::new(n),
                    ));
                }
            }
            // `result` here is the HTTP status; a label name of its own reads better.
            let by_status: Vec<_> = by_status
                .into_iter()
                .map(|(l, c)| ([("organization", l.organization), ("status", l.result)], c))
                .collect();
            family(
                &mut encoder,
                "tfaudit_api_requests",
                "Audit trail API responses, by HTTP status",
                None,
                MetricType::Counter,
                by_status,
            )?;
            family(
                &mut encoder,
                "tfaudit_api_retries",
                "Audit trail API requests retried",
                None,
                MetricType::Counter,
                clients.iter().map(|(n, s)| (org(n), ConstCounter::new(s.retries()))),
            )?;
            family(
                &mut encoder,
                "tfaudit_api_transport_errors",
                "Audit trail API requests that failed below HTTP (resets, timeouts, truncated bodies)",
                None,
                MetricType::Counter,
                clients.iter().map(|(n, s)| (org(n), ConstCounter::new(s.transport_errors()))),
            )?;
        }
        let snapshot = self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let secs = Unit::Seconds;
        family(
            &mut encoder,
            "tfaudit_seconds_since_last_successful_sync",
            "Seconds since the organization's last successful sync",
            None,
            MetricType::Gauge,
            snapshot.sources.iter().filter_map(|s| {
                s.last_success.map(|t| (org(&s.name), ConstGauge::new(now.duration_since(t).as_secs_f64().max(0.0))))
            }),
        )?;
        family(
            &mut encoder,
            "tfaudit_cursor_lag",
            "How far the sync cursor (newest event of a complete walk) is behind now",
            Some(&secs),
            MetricType::Gauge,
            snapshot.sources.iter().filter_map(|s| {
                s.cursor.map(|c| (org(&s.name), ConstGauge::new(now.duration_since(c).as_secs_f64().max(0.0))))
            }),
        )?;
        family(
            &mut encoder,
            "tfaudit_events_stored",
            "Events in the archive",
            None,
            MetricType::Gauge,
            snapshot.sources.iter().map(|s| (org(&s.name), ConstGauge::new(s.events))),
        )?;
        family(
            &mut encoder,
            "tfaudit_rejects",
            "Page elements set aside because they were not events",
            None,
            MetricType::Counter,
            snapshot.sources.iter().map(|s| (org(&s.name), ConstCounter::new(s.rejects))),
        )?;
        family(
            &mut encoder,
            "tfaudit_gaps",
            "Stretches of time whose events may be lost (the cursor fell out of retention)",
            None,
            MetricType::Counter,
            snapshot.sources.iter().map(|s| (org(&s.name), ConstCounter::new(s.gaps.len() as u64))),
        )?;
        family(
            &mut encoder,
            "tfaudit_alerts_raised",
            "Alerts raised",
            None,
            MetricType::Counter,
            [(Vec::<(String, String)>::new(), ConstCounter::new(snapshot.alerts.alerts))],
        )?;
        let a = &snapshot.alerts;
        family(
            &mut encoder,
            "tfaudit_alert_deliveries",
            "Alert deliveries, by state",
            None,
            MetricType::Gauge,
            [("pending", a.pending), ("delivered", a.delivered), ("failing", a.failing), ("abandoned", a.abandoned)]
                .into_iter()
                .map(|(state, n)| ([("state", state)], ConstGauge::new(n))),
        )?;
        family(
            &mut encoder,
            "tfaudit_destination_misconfigured",
            "1 for a destination whose receiver refused its secret or address; its alerts wait for a fix",
            None,
            MetricType::Gauge,
            a.misconfigured.iter().map(|d| ([("destination", d.name.clone())], ConstGauge::new(1u64))),
        )?;
        family(
            &mut encoder,
            "tfaudit_sink_lag_events",
            "Events archived that the sink has not delivered yet",
            None,
            MetricType::Gauge,
            snapshot.sinks.iter().map(|(sink, n, _)| ([("sink", sink.clone())], ConstGauge::new(*n))),
        )?;
        family(
            &mut encoder,
            "tfaudit_sink_lag_seconds",
            "Seconds since the oldest event the sink has not delivered yet was archived (0 when none is pending)",
            None,
            MetricType::Gauge,
            snapshot.sinks.iter().map(|(sink, _, s)| ([("sink", sink.clone())], ConstGauge::new(*s))),
        )?;
        Ok(())
    }
}

/// A sink's lag behind the archive after `position`: events, and seconds since the
/// oldest of them was archived.
fn sink_lag(
    store: &dyn tfaudit_store::Store,
    position: i64,
    now: jiff::Timestamp,
) -> tfaudit_store::Result<(u64, f64)> {
    let (lag, oldest) = tfaudit_store::consumer_lag(store, position)?;
    let seconds = oldest.map_or(0.0, |t: jiff::Timestamp| now.duration_since(t).as_secs_f64().max(0.0));
    Ok((lag, seconds))
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_ingested: Family<Org, Counter>,
    syncs: Family<SyncResult, Counter>,
    sync_duration: Family<Org, Histogram, fn() -> Histogram>,
    http: Family<Http, Counter>,
    lease_held: Family<Org, Gauge>,
    lease_changes: Family<LeaseChange, Counter>,
    sink_events: Family<SinkResult, Counter>,
    live: Arc<Live>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let events_ingested = Family::<Org, Counter>::default();
        registry.register(
            "tfaudit_events_ingested",
            "Events new to the archive, by organization",
            events_ingested.clone(),
        );
        let syncs = Family::<SyncResult, Counter>::default();
        registry.register(
            "tfaudit_syncs",
            "Syncs, by organization and result (ok, interrupted, failed)",
            syncs.clone(),
        );
        let sync_duration =
            Family::<Org, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "tfaudit_sync_duration",
            "How long a sync took",
            Unit::Seconds,
            sync_duration.clone(),
        );
        let http = Family::<Http, Counter>::default();
        registry.register(
            "tfaudit_http_requests",
            "Requests to the API and dashboard, by route and status",
            http.clone(),
        );
        let lease_held = Family::<Org, Gauge>::default();
        registry.register(
            "tfaudit_lease_held",
            "1 while this instance holds the organization's lease (syncs it), else 0",
            lease_held.clone(),
        );
        let lease_changes = Family::<LeaseChange, Counter>::default();
        registry.register(
            "tfaudit_lease_changes",
            "Changes of this instance's hold on an organization's lease (acquired, lost, released)",
            lease_changes.clone(),
        );
        let sink_events = Family::<SinkResult, Counter>::default();
        registry.register(
            "tfaudit_sink_events",
            "Events forwarded by this instance, by sink and result (delivered, skipped, failed: each event of a batch at each failed attempt)",
            sink_events.clone(),
        );
        let live = Arc::new(Live::default());
        registry.register_collector(Box::new(live.clone()));
        Self { registry, events_ingested, syncs, sync_duration, http, lease_held, lease_changes, sink_events, live }
    }

    /// A configured sink: its counts show 0 until it forwards, and its lag is read
    /// from the archive at each scrape.
    pub fn add_sink(&self, sink: &str) {
        for result in ["delivered", "skipped", "failed"] {
            let _ = self.sink_events.get_or_create(&SinkResult { sink: sink.to_owned(), result: result.to_owned() });
        }
        self.live.sinks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sink.to_owned());
    }

    /// Counts `n` events of a sink by result: `delivered`, `skipped` or `failed`.
    pub fn sink_events(&self, sink: &str, result: &str, n: u64) {
        self.sink_events.get_or_create(&SinkResult { sink: sink.to_owned(), result: result.to_owned() }).inc_by(n);
    }

    fn sink_names(&self) -> Vec<String> {
        self.live.sinks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Counts a change of this instance's hold on an organization's lease:
    /// `acquired`, `lost` or `released`.
    pub fn lease(&self, organization: &str, change: &str) {
        let org = Org { organization: organization.to_owned() };
        self.lease_held.get_or_create(&org).set(i64::from(change == "acquired"));
        self.lease_changes
            .get_or_create(&LeaseChange { organization: organization.to_owned(), change: change.to_owned() })
            .inc();
    }

    /// Watches an organization's client for the API request counts.
    pub fn add_client(&self, organization: &str, stats: Arc<ClientStats>) {
        // Every organization this instance may sync shows 0 until it holds the lease.
        let _ = self.lease_held.get_or_create(&Org { organization: organization.to_owned() });
        self.live
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((organization.to_owned(), stats));
    }

    /// Counts a sync.
    pub fn sync(&self, organization: &str, result: &str, new_events: u64, seconds: f64) {
        let org = Org { organization: organization.to_owned() };
        self.events_ingested.get_or_create(&org).inc_by(new_events);
        self.sync_duration.get_or_create(&org).observe(seconds);
        self.syncs
            .get_or_create(&SyncResult { organization: organization.to_owned(), result: result.to_owned() })
            .inc();
    }

    pub(crate) fn http_request(&self, route: &str, status: u16) {
        self.http.get_or_create(&Http { route: route.to_owned(), status: status.to_string() }).inc();
    }

    fn encode(&self, snapshot: Snapshot) -> Result<String, std::fmt::Error> {
        *self.live.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

pub async fn scrape(State(state): State<AppState>) -> Response {
    let metrics = state.metrics.clone();
    let encoded = tfaudit_store::blocking(&state.store, move |store| {
        let sources = store.status().unwrap_or_default();
        let alerts = store.alert_status(0).unwrap_or_default();
        let now = jiff::Timestamp::now();
        // A sink not started yet has no cursor, and no lag to show.
        let sinks = metrics
            .sink_names()
            .into_iter()
            .filter_map(|sink| {
                let position = store.consumer(&format!("sink:{sink}")).ok().flatten()?.position;
                let (events, seconds) = sink_lag(store, position, now).ok()?;
                Some((sink, events, seconds))
            })
            .collect();
        Ok::<_, tfaudit_store::StoreError>(metrics.encode(Snapshot { sources, alerts, sinks }))
    })
    .await;
    match encoded {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "metrics could not be encoded").into_response(),
    }
}
