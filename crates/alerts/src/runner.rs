//! The alert engine as a consumer of the archive.
//!
//! Evaluation reads events after the engine's cursor (in `seq` order), and in one
//! transaction stores the alerts they raise (each once, by key, with a pending
//! delivery per destination), the engine's state and the new cursor. So a crash
//! loses no alert and raises none twice. Each organization's events up to its alert
//! start point (where its first backfill ended) are history: they feed first-seen
//! values but raise nothing.
//!
//! Delivery of one destination is [`drain`]: it claims one delivery just before
//! sending it, for as long as the send can take, so a crash can only repeat the one
//! delivery that was on the wire. Passes only live here; the long-running loops (an
//! evaluation task beside one delivery task per destination, so that a slow or
//! failing receiver delays neither evaluation nor any other destination) are the
//! service's (`tfaudit-service`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tfaudit_store::{
    ALERTS_CONSUMER, Alert, AlertWrite, Archive, CommitOutcome, ConsumerPosition, DeliveryJob, DeliveryOutcome,
    EventFilter, Order, Store, StoreError, StoredEvent, blocking, blocking_on,
};
use tokio_util::sync::CancellationToken;

use crate::destination::{Destination, Sender, Sent};

use crate::engine::{Engine, EngineState, NewAlert, Presentation};
use crate::rules::RuleSet;

/// Everything the runner needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: RuleSet,
    pub presentation: Presentation,
    /// By name.
    pub destinations: HashMap<String, Destination>,
    /// Destinations of rules that name none.
    pub default_destinations: Vec<String>,
    /// Retries stop, and the delivery is abandoned, this long after the alert.
    pub max_delivery_age: Duration,
    /// The first retry delay; it doubles up to `retry_cap`.
    pub retry_delay: Duration,
    pub retry_cap: Duration,
}

/// Why the runner could not go on.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot set up the HTTP client for alert destinations: {0}")]
    Setup(String),
}

/// What an evaluation pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Evaluated {
    pub events: u64,
    pub alerts: u64,
}

/// What a delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivered {
    pub delivered: u64,
    pub failed: u64,
    pub abandoned: u64,
}

/// Events evaluated per transaction.
const BATCH: u64 = 5_000;

/// The archive's alert consumer.
pub struct Runner {
    store: Arc<dyn Store>,
    settings: Arc<Settings>,
    courier: Courier,
    /// The engine and the cursor it is at, once loaded.
    loaded: Option<(Engine, i64)>,
}

fn seed(state: &mut EngineState, seen: &tfaudit_store::SeenValues) {
    for a in &seen.accessors {
        state.seen.add_accessor(a);
    }
    for i in &seen.impersonators {
        state.seen.add_impersonator(i);
    }
    for (t, a) in &seen.kinds {
        state.seen.add_kind(t, a);
    }
}

impl Runner {
    /// # Errors
    /// [`AlertError::Setup`] when the destinations' HTTP client cannot be built.
    pub fn new(store: Arc<dyn Store>, settings: Arc<Settings>) -> Result<Self, AlertError> {
        Ok(Self { courier: Courier::new(settings.clone())?, store, settings, loaded: None })
    }

    /// The archive this runner consumes.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What sends this runner's deliveries.
    #[must_use]
    pub fn courier(&self) -> &Courier {
        &self.courier
    }

    /// Loads the engine at its cursor. On first use it starts at the earliest alert
    /// start point, with every value of the events up to there counted as seen.
    async fn load(&mut self) -> Result<(), AlertError> {
        if self.loaded.is_some() {
            return Ok(());
        }
        let cursor = blocking(&self.store, move |store| store.consumer(ALERTS_CONSUMER)).await?;
        let (state, seq) = match cursor {
            Some(c) => {
                let state: EngineState = serde_json::from_str(&c.state).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the alert engine's saved state is unreadable; windows and first-seen values start over");
                    EngineState::default()
                });
                (state, c.position)
            }
            None => {
                let (seq, seen) = blocking(&self.store, move |store| {
                    let newest = store.newest_seq()?;
                    // Organizations still in their first backfill have no start point:
                    // everything of theirs stored so far is history.
                    let seq = store.alert_start_points()?.into_iter().filter_map(|(_, s)| s).min().unwrap_or(newest);
                    let seq = seq.min(newest);
                    Ok::<_, StoreError>((seq, store.seen_values_up_to(seq)?))
                })
                .await?;
                let mut state = EngineState::default();
                seed(&mut state, &seen);
                let text = serde_json::to_string(&state).map_err(|e| AlertError::Internal(e.to_string()))?;
                let outcome = blocking(&self.store, move |store| {
                    store.commit_alerts(None, &ConsumerPosition { position: seq, state: text }, &[])
                })
                .await?;
                if outcome == CommitOutcome::Conflict {
                    // Another process started the engine first: use its cursor.
                    return Box::pin(self.load()).await;
                }
                tracing::info!(
                    seq,
                    "the alert engine starts where each organization's first backfill ended; `tfaudit alerts test` backtests history"
                );
                (state, seq)
            }
        };
        self.loaded = Some((Engine::new(&self.settings.rules, state, self.settings.presentation.clone()), seq));
        Ok(())
    }

    fn write(&self, a: NewAlert) -> AlertWrite {
        let names = a.destinations.clone().unwrap_or_else(|| self.settings.default_destinations.clone());
        let destinations = names
            .into_iter()
            .filter(|n| self.settings.destinations.get(n).is_some_and(|d| a.severity >= d.min_severity))
            .collect();
        AlertWrite {
            alert: Alert {
                key: a.key,
                rule: a.rule,
                severity: a.severity.to_string(),
                group: a.group,
                title: a.title,
                text: a.text,
                source: a.source,
                event_seq: a.event_seq,
                event_id: a.event_id,
                event_time: a.event_time,
                count: a.count,
                window_start: a.window_start,
                window_end: a.window_end,
                link: a.link,
                event: a.event.to_string(),
            },
            destinations,
        }
    }

    /// Evaluates every event stored since the last pass.
    ///
    /// # Errors
    /// On an archive failure; what was committed stays committed.
    pub async fn evaluate(&mut self) -> Result<Evaluated, AlertError> {
        let mut report = Evaluated::default();
        loop {
            self.load().await?;
            let cursor = self.loaded.as_ref().map_or(0, |(_, c)| *c);
            let (batch, starts, names) = blocking(&self.store, move |store| {
                let mut events: Vec<StoredEvent> = Vec::new();
                store.events_after(cursor, BATCH, &mut |e| {
                    events.push(e);
                    Ok(())
                })?;
                // Read after the events: an organization without a start point now
                // had none when any of them was stored, so they are its history.
                let starts: HashMap<String, Option<i64>> = store.alert_start_points()?.into_iter().collect();
                let names: HashMap<String, String> = store
                    .current_names(&Engine::ids_to_name(&events))?
                    .into_iter()
                    .map(|(id, r)| (id, r.name))
                    .collect();
                Ok::<_, StoreError>((events, starts, names))
            })
            .await?;
            let Some(last) = batch.last().map(|e| e.seq) else { return Ok(report) };
            let (engine, _) = self.loaded.as_mut().ok_or_else(|| AlertError::Internal("engine not loaded".into()))?;
            engine.set_names(names);
            let mut raised = Vec::new();
            let mut evaluated = 0;
            for e in &batch {
                let history = match starts.get(&e.source) {
                    Some(Some(start)) => e.seq <= *start,
                    Some(None) => true,
                    None => false,
                };
                if history {
                    engine.state.seen.record(e);
                } else {
                    evaluated += 1;
                    raised.extend(engine.evaluate(e));
                }
            }
            engine.compact();
            let state = serde_json::to_string(&engine.state).map_err(|e| AlertError::Internal(e.to_string()))?;
            let writes: Vec<AlertWrite> = raised.into_iter().map(|a| self.write(a)).collect();
            let cursor_after = ConsumerPosition { position: last, state };
            match blocking(&self.store, move |store| store.commit_alerts(Some(cursor), &cursor_after, &writes)).await? {
                CommitOutcome::Committed { new_alerts } => {
                    report.events += evaluated;
                    report.alerts += new_alerts;
                    if let Some((_, c)) = self.loaded.as_mut() {
                        *c = last;
                    }
                    if new_alerts > 0 {
                        tracing::info!(new_alerts, "alerts raised");
                    }
                }
                CommitOutcome::Conflict => {
                    // Another process evaluated these events: reload its state and go on.
                    self.loaded = None;
                }
            }
        }
    }

    /// Sends every delivery that is due, each destination's one at a time, the
    /// destinations side by side.
    ///
    /// # Errors
    /// On an archive failure.
    pub async fn deliver(&self, cancel: &CancellationToken) -> Result<Delivered, AlertError> {
        let misconfigured = self.misconfigured().await?;
        let mut set = tokio::task::JoinSet::new();
        for name in self.destination_names().await? {
            let probe = misconfigured.contains(&name);
            let (store, courier, cancel) = (self.store.clone(), self.courier.clone(), cancel.clone());
            set.spawn(async move { drain(&store, &courier, &name, probe, &cancel).await });
        }
        let mut report = Delivered::default();
        while let Some(done) = set.join_next().await {
            let (r, _) = done.map_err(|e| AlertError::Internal(e.to_string()))??;
            report.delivered += r.delivered;
            report.failed += r.failed;
            report.abandoned += r.abandoned;
        }
        Ok(report)
    }

    /// The configured destinations, and any that still have deliveries from an
    /// earlier config (they are retried until too old, then abandoned).
    ///
    /// # Errors
    /// On an archive failure.
    pub async fn destination_names(&self) -> Result<Vec<String>, AlertError> {
        let open = blocking(&self.store, move |store| store.open_delivery_destinations()).await?;
        let mut names: Vec<String> = self.settings.destinations.keys().cloned().collect();
        names.extend(open);
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Destinations marked misconfigured: each is tried at once when delivery starts,
    /// as the user may have fixed it since.
    ///
    /// # Errors
    /// On an archive failure.
    pub async fn misconfigured(&self) -> Result<Vec<String>, AlertError> {
        Ok(blocking(&self.store, move |store| store.alert_status(0))
            .await?
            .misconfigured
            .into_iter()
            .map(|d| d.name)
            .collect())
    }
}

/// Sends one destination's due deliveries, one at a time, until none is due, the
/// destination turns out misconfigured (then `true`: the rest wait for a fix), or
/// `cancel`. With `probe`, the first one is tried even if its retry is not due yet.
///
/// # Errors
/// On an archive failure.
pub async fn drain(
    store: &Arc<dyn Store>,
    courier: &Courier,
    destination: &str,
    mut probe: bool,
    cancel: &CancellationToken,
) -> Result<(Delivered, bool), AlertError> {
    let mut report = Delivered::default();
    // As long as the send can take: the destination's timeout, and a margin for
    // recording the outcome.
    let lease = courier.settings.destinations.get(destination).map_or(Duration::from_secs(5), |d| d.timeout)
        + Duration::from_secs(2);
    loop {
        if cancel.is_cancelled() {
            return Ok((report, false));
        }
        let name = destination.to_owned();
        let now = Timestamp::now();
        let due_by = if probe { Timestamp::MAX } else { now };
        probe = false;
        let claimed = blocking(store, move |store| {
            let Some(job) = store.claim_delivery(&name, now, due_by, lease)? else { return Ok(None) };
            let names = crate::destination::names_for(store, &job.alert)?;
            Ok::<_, StoreError>(Some((job, names)))
        })
        .await?;
        let Some((job, names)) = claimed else {
            return Ok((report, false));
        };
        let outcome = courier.attempt(&job, &names).await;
        let alert = job.alert.id;
        let misconfigured = matches!(outcome, DeliveryOutcome::Misconfigured { .. });
        match &outcome {
            DeliveryOutcome::Delivered => {
                report.delivered += 1;
                tracing::info!(alert, destination, "alert delivered");
            }
            DeliveryOutcome::Failed { error, retry_at } => {
                report.failed += 1;
                tracing::warn!(alert, destination, retry_at = %retry_at, "delivery failed: {error}");
            }
            DeliveryOutcome::Misconfigured { error, .. } => {
                report.failed += 1;
                tracing::error!(
                    alert,
                    destination,
                    "the destination is misconfigured: {error}; its alerts are kept until it is fixed"
                );
            }
            DeliveryOutcome::Abandoned { error } => {
                report.abandoned += 1;
                tracing::error!(alert, destination, "delivery abandoned: {error}");
            }
        }
        let recorded = blocking(store, move |store| store.finish_delivery(&job, &outcome)).await?;
        if !recorded {
            // The claim ran out mid-attempt (this process was frozen, say) and another
            // took the delivery over: its outcome counts, not this late one.
            tracing::warn!(
                alert,
                destination,
                "the delivery was taken over while this attempt ran; its outcome is left to the other attempt"
            );
        }
        if misconfigured {
            return Ok((report, true));
        }
    }
}

/// Sends deliveries and decides what happens after a failure.
#[derive(Debug, Clone)]
pub struct Courier {
    settings: Arc<Settings>,
    sender: Sender,
}

/// Stored and logged error texts are at most this long.
const ERROR_CAP: usize = 500;

impl Courier {
    /// # Errors
    /// [`AlertError::Setup`] when the destinations' HTTP client cannot be built.
    pub fn new(settings: Arc<Settings>) -> Result<Self, AlertError> {
        Ok(Self { settings, sender: Sender::new()? })
    }

    /// The pause before try number `attempts + 1`: doubling from the first retry
    /// delay up to the cap, with jitter.
    #[must_use]
    pub fn backoff(&self, attempts: u64) -> Duration {
        let exp = self.settings.retry_delay.saturating_mul(1u32 << attempts.min(20) as u32);
        let capped = exp.min(self.settings.retry_cap);
        // ±20% so that many failed deliveries do not retry in lockstep.
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        capped.mul_f64(jitter)
    }

    fn retry_at(&self, attempts: u64, after: Option<Duration>) -> Timestamp {
        let wait = after.unwrap_or_else(|| self.backoff(attempts)).max(Duration::from_millis(10));
        Timestamp::now() + jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::from_secs(60))
    }

    /// Attempts one delivery. Every error text is redacted of every known secret and
    /// bounded: a receiver may echo the request (its URL, its headers) back.
    pub async fn attempt(&self, job: &DeliveryJob, names: &crate::destination::Names) -> DeliveryOutcome {
        let safe = |e: String| tfaudit_api::redact::redact_bounded(&e, ERROR_CAP);
        let age = Timestamp::now().duration_since(job.alert.raised_at);
        let too_old =
            age > jiff::SignedDuration::try_from(self.settings.max_delivery_age).unwrap_or(jiff::SignedDuration::MAX);
        let Some(destination) = self.settings.destinations.get(&job.destination) else {
            let error = format!("destination {:?} is not configured", job.destination);
            return if too_old {
                DeliveryOutcome::Abandoned { error }
            } else {
                DeliveryOutcome::Failed { error, retry_at: self.retry_at(job.attempts, None) }
            };
        };
        match self.sender.send(destination, &job.alert, names).await {
            Sent::Delivered => DeliveryOutcome::Delivered,
            Sent::Permanent { error } => DeliveryOutcome::Abandoned { error: safe(error) },
            // Kept whatever its age: the alerts are the user's once the destination is fixed.
            Sent::Misconfigured { error } => {
                DeliveryOutcome::Misconfigured { error: safe(error), retry_at: self.retry_at(job.attempts, None) }
            }
            Sent::Retry { error, .. } if too_old => DeliveryOutcome::Abandoned {
                error: safe(format!("gave up after {} attempts: {error}", job.attempts + 1)),
            },
            Sent::Retry { error, after } => {
                DeliveryOutcome::Failed { error: safe(error), retry_at: self.retry_at(job.attempts, after) }
            }
        }
    }
}

/// What rules would have raised over archived events matching `filter` (a time range,
/// usually), without sending anything: first-seen values are those of the events
/// before the range.
///
/// # Errors
/// On an archive failure.
pub async fn backtest(
    store: Arc<dyn Archive>,
    rules: &RuleSet,
    presentation: Presentation,
    filter: EventFilter,
) -> Result<Vec<NewAlert>, AlertError> {
    let rules = rules.clone();
    blocking_on(&store, move |store| {
        let mut state = EngineState::default();
        seed(&mut state, &store.seen_values(filter.since)?);
        let mut engine = Engine::new(&rules, state, presentation);
        let mut alerts = Vec::new();
        store.events(&filter, Order::OldestFirst, None, &mut |e| {
            alerts.extend(engine.evaluate(&e));
            Ok(())
        })?;
        Ok(alerts)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::Kind;
    use tfaudit_store::{Alert, Guarded};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runner_calls_the_store_only_on_blocking_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            tfaudit_store_sqlite::SqliteStore::open(
                &dir.path().join("archive.db"),
                tfaudit_store_sqlite::OpenMode::CreateIfMissing,
            )
            .unwrap(),
        );
        let log = Destination {
            name: "log".into(),
            kind: Kind::Log,
            min_severity: crate::rules::Severity::Info,
            timeout: Duration::from_secs(5),
        };
        let settings = Arc::new(Settings {
            rules: crate::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap(),
            presentation: Presentation::default(),
            destinations: HashMap::from([("log".to_owned(), log)]),
            default_destinations: vec!["log".into()],
            max_delivery_age: Duration::from_secs(3600),
            retry_delay: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
        });
        // Every call the runner makes goes through the guard, which panics on an
        // async thread: evaluation (load, read, commit) and delivery (claim, finish).
        let mut runner = Runner::new(Guarded::wrap(store.clone()), settings).unwrap();
        assert_eq!(runner.evaluate().await.unwrap(), Evaluated::default());
        let cursor = store.consumer(ALERTS_CONSUMER).unwrap().expect("evaluation saved its cursor");
        let alert = Alert {
            key: "test:1".into(),
            rule: "test".into(),
            severity: "high".into(),
            group: None,
            title: "a test alert".into(),
            text: "a test alert".into(),
            source: "acme".into(),
            event_seq: 0,
            event_id: "e1".into(),
            event_time: Timestamp::now(),
            count: 1,
            window_start: None,
            window_end: None,
            link: None,
            event: "{}".into(),
        };
        let write = AlertWrite { alert, destinations: vec!["log".into()] };
        store.commit_alerts(Some(cursor.position), &cursor, &[write]).unwrap();
        // A panic in a destination's task would leave the delivery undone.
        let delivered = runner.deliver(&CancellationToken::new()).await.unwrap();
        assert_eq!(delivered, Delivered { delivered: 1, failed: 0, abandoned: 0 });
    }
}
