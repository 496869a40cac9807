//! The alert engine as a consumer of the archive.
//!
//! Evaluation reads events after the engine's cursor (in `seq` order), and in one
//! transaction stores the alerts they raise (each once, by key, with a pending
//! delivery per destination), the engine's state and the new cursor. So a crash
//! loses no alert and raises none twice. Delivery then claims due deliveries for a
//! while (a lease, so two processes never send the same one), sends, and records
//! the outcome; a failed delivery is retried with backoff while the destination is
//! down, for up to `max_delivery_age`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tfaudit_store::{
    Alert, AlertCursor, AlertWrite, CommitOutcome, DeliveryJob, DeliveryOutcome, EventFilter, Order, Store, StoreError,
    StoredEvent,
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, AlertError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AlertError::Internal(e.to_string()))?.map_err(AlertError::from)
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
    #[must_use]
    pub fn new(store: Arc<dyn Store>, settings: Arc<Settings>) -> Self {
        Self { courier: Courier::new(settings.clone()), store, settings, loaded: None }
    }

    /// Loads the engine at its cursor; on first use, starts it at the newest event
    /// with every value already in the archive counted as seen (history is
    /// backtested with `tfaudit alerts test`, not alerted on).
    async fn load(&mut self) -> Result<(), AlertError> {
        if self.loaded.is_some() {
            return Ok(());
        }
        let store = self.store.clone();
        let cursor = blocking(move || store.alert_cursor()).await?;
        let (state, seq) = match cursor {
            Some(c) => {
                let state: EngineState = serde_json::from_str(&c.state).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the alert engine's saved state is unreadable; windows and first-seen values start over");
                    EngineState::default()
                });
                (state, c.seq)
            }
            None => {
                let store = self.store.clone();
                let (seq, seen) = blocking(move || Ok((store.newest_seq()?, store.seen_values(None)?))).await?;
                let mut state = EngineState::default();
                seed(&mut state, &seen);
                let text = serde_json::to_string(&state).map_err(|e| AlertError::Internal(e.to_string()))?;
                let store = self.store.clone();
                let outcome =
                    blocking(move || store.commit_alerts(None, &AlertCursor { seq, state: text }, &[])).await?;
                if outcome == CommitOutcome::Conflict {
                    // Another process started the engine first: use its cursor.
                    return Box::pin(self.load()).await;
                }
                tracing::info!(
                    seq,
                    "the alert engine starts after the archive's newest event; `tfaudit alerts test` backtests history"
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
            let store = self.store.clone();
            let batch = blocking(move || {
                let mut events: Vec<StoredEvent> = Vec::new();
                store.events_after(cursor, BATCH, &mut |e| {
                    events.push(e);
                    Ok(())
                })?;
                Ok(events)
            })
            .await?;
            let Some(last) = batch.last().map(|e| e.seq) else { return Ok(report) };
            let (engine, _) = self.loaded.as_mut().ok_or_else(|| AlertError::Internal("engine not loaded".into()))?;
            let mut raised = Vec::new();
            for e in &batch {
                raised.extend(engine.evaluate(e));
            }
            engine.compact();
            let state = serde_json::to_string(&engine.state).map_err(|e| AlertError::Internal(e.to_string()))?;
            let writes: Vec<AlertWrite> = raised.into_iter().map(|a| self.write(a)).collect();
            let store = self.store.clone();
            let cursor_after = AlertCursor { seq: last, state };
            match blocking(move || store.commit_alerts(Some(cursor), &cursor_after, &writes)).await? {
                CommitOutcome::Committed { new_alerts } => {
                    report.events += batch.len() as u64;
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

    /// Sends every delivery that is due.
    ///
    /// # Errors
    /// On an archive failure.
    pub async fn deliver(&self, cancel: &CancellationToken) -> Result<Delivered, AlertError> {
        deliver_due(&self.store, &self.courier, cancel).await
    }

    /// Evaluates and delivers until `cancel`, again whenever `wake` is notified (after
    /// a sync) and at least every `poll` (for retries that come due).
    pub async fn run(mut self, cancel: CancellationToken, wake: Arc<tokio::sync::Notify>, poll: Duration) {
        loop {
            if let Err(e) = self.evaluate().await {
                tracing::error!("alert evaluation failed: {e}; trying again");
            }
            if let Err(e) = self.deliver(&cancel).await {
                tracing::error!("alert delivery failed: {e}; trying again");
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// Sends deliveries and decides what happens after a failure.
#[derive(Debug, Clone)]
pub struct Courier {
    settings: Arc<Settings>,
    sender: Sender,
}

impl Courier {
    #[must_use]
    pub fn new(settings: Arc<Settings>) -> Self {
        Self { settings, sender: Sender::new() }
    }

    fn backoff(&self, attempts: u64) -> Duration {
        let exp = self.settings.retry_delay.saturating_mul(1u32 << attempts.min(20) as u32);
        let capped = exp.min(self.settings.retry_cap);
        // ±20% so that many failed deliveries do not retry in lockstep.
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        capped.mul_f64(jitter)
    }

    fn retry(&self, attempts: u64, error: String, after: Option<Duration>) -> DeliveryOutcome {
        let wait = after.unwrap_or_else(|| self.backoff(attempts)).max(Duration::from_millis(10));
        let retry_at =
            Timestamp::now() + jiff::SignedDuration::try_from(wait).unwrap_or(jiff::SignedDuration::from_secs(60));
        DeliveryOutcome::Failed { error, retry_at }
    }

    /// Attempts one delivery.
    pub async fn attempt(&self, job: &DeliveryJob) -> DeliveryOutcome {
        let age = Timestamp::now().duration_since(job.alert.raised_at);
        let too_old =
            age > jiff::SignedDuration::try_from(self.settings.max_delivery_age).unwrap_or(jiff::SignedDuration::MAX);
        let Some(destination) = self.settings.destinations.get(&job.destination) else {
            let error = format!("destination {:?} is not configured", job.destination);
            return if too_old { DeliveryOutcome::Abandoned { error } } else { self.retry(job.attempts, error, None) };
        };
        match self.sender.send(destination, &job.alert).await {
            Sent::Delivered => DeliveryOutcome::Delivered,
            Sent::Permanent { error } => DeliveryOutcome::Abandoned { error },
            Sent::Retry { error, .. } if too_old => {
                DeliveryOutcome::Abandoned { error: format!("gave up after {} attempts: {error}", job.attempts + 1) }
            }
            Sent::Retry { error, after } => self.retry(job.attempts, error, after),
        }
    }
}

/// Claims and sends due deliveries until none is left (or `cancel`).
///
/// # Errors
/// On an archive failure.
pub async fn deliver_due(
    store: &Arc<dyn Store>,
    courier: &Courier,
    cancel: &CancellationToken,
) -> Result<Delivered, AlertError> {
    let mut report = Delivered::default();
    loop {
        if cancel.is_cancelled() {
            return Ok(report);
        }
        let claim = store.clone();
        // Long enough for the slowest destination to answer; short enough that the
        // claims of a process that died are picked up again soon.
        let lease = courier.settings.destinations.values().map(|d| d.timeout).max().unwrap_or_default()
            + Duration::from_secs(5);
        let jobs = blocking(move || claim.claim_deliveries(Timestamp::now(), lease, 32)).await?;
        if jobs.is_empty() {
            return Ok(report);
        }
        // Destinations are independent: one slow receiver does not hold up the rest.
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let courier = courier.clone();
            set.spawn(async move {
                let outcome = courier.attempt(&job).await;
                (job, outcome)
            });
        }
        while let Some(done) = set.join_next().await {
            let (job, outcome) = done.map_err(|e| AlertError::Internal(e.to_string()))?;
            let (alert, destination) = (job.alert.id, job.destination.as_str());
            match &outcome {
                DeliveryOutcome::Delivered => {
                    report.delivered += 1;
                    tracing::info!(alert, destination, "alert delivered");
                }
                DeliveryOutcome::Failed { error, retry_at } => {
                    report.failed += 1;
                    tracing::warn!(alert, destination, retry_at = %retry_at, "delivery failed: {error}");
                }
                DeliveryOutcome::Abandoned { error } => {
                    report.abandoned += 1;
                    tracing::error!(alert, destination, "delivery abandoned: {error}");
                }
            }
            let finish = store.clone();
            let id = job.delivery_id;
            blocking(move || finish.finish_delivery(id, &outcome)).await?;
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
    store: Arc<dyn Store>,
    rules: &RuleSet,
    presentation: Presentation,
    filter: EventFilter,
) -> Result<Vec<NewAlert>, AlertError> {
    let rules = rules.clone();
    blocking(move || {
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
