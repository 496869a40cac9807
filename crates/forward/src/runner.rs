//! The consumer loop: a sink reads the archive after its cursor, sends a batch, and
//! moves its cursor (compare-and-set) only once the target acknowledged it.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tfaudit_store::{CommitOutcome, ConsumerPosition, Store, StoreError, blocking};
use tokio_util::sync::CancellationToken;

use crate::{Batch, Configured, Event, SendError, Start};

/// The longest wait between two attempts of a failing batch (unless the target asks
/// for longer with `Retry-After`).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// With `--once`, a sink whose batch failed this many times in a row is given up on.
pub const ONCE_ATTEMPTS: u32 = 8;

/// The consumer a sink is in the archive: `sink:<name>`.
#[must_use]
pub fn consumer_name(sink: &str) -> String {
    format!("sink:{sink}")
}

/// What a sink keeps beside its cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    /// Events stamped before this are skipped (`start` as a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Events delivered since the sink was created.
    #[serde(default)]
    pub delivered: u64,
    /// Events skipped because of `start`.
    #[serde(default)]
    pub skipped: u64,
    /// The last failure, until a batch is delivered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<Timestamp>,
}

impl SinkState {
    /// The state saved beside a cursor; unreadable or empty counts as new.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// What a run delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub delivered: u64,
    pub skipped: u64,
}

/// Why a sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("sink {sink}: {error}")]
    Store { sink: String, error: StoreError },
    /// The target refused a batch; the cursor stays before it.
    #[error("sink {sink}: the target refused a batch: {error}; the sink stops here until the cause is fixed")]
    Refused { sink: String, error: String },
    /// `--once`: the target kept failing.
    #[error("sink {sink}: {attempts} attempts failed, the last: {error}")]
    KeptFailing { sink: String, attempts: u32, error: String },
    /// Another process moved this sink's cursor.
    #[error("sink {sink}: another process is forwarding to this sink (its position moved); stopping")]
    Conflict { sink: String },
}

struct Loop {
    store: Arc<dyn Store>,
    configured: Configured,
    consumer: String,
    position: i64,
    state: SinkState,
    hooks: Hooks,
}

/// Counts a sink's events by result: `delivered`, `skipped` or `failed` (each event
/// of a batch, at each failed attempt).
pub type Tally = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// How a sink run inside the service is woken and counted.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Fired after each sync that stored events: a sink waiting for events looks at
    /// once rather than at its next `batch_wait`.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    pub tally: Option<Tally>,
}

impl Hooks {
    fn count(&self, result: &'static str, n: u64) {
        if let (Some(tally), true) = (&self.tally, n > 0) {
            tally(result, n);
        }
    }
}

/// Forwards everything after the sink's cursor: until `cancel` (and then `Ok`), or
/// with `once`, until nothing is pending.
///
/// # Errors
/// [`ForwardError`]: the cursor stays before the first event not delivered.
pub async fn run_sink(
    store: Arc<dyn Store>,
    configured: Configured,
    once: bool,
    cancel: CancellationToken,
) -> Result<Outcome, ForwardError> {
    run_sink_with(store, configured, once, cancel, Hooks::default()).await
}

/// [`run_sink`], woken and counted through `hooks`.
///
/// # Errors
/// As [`run_sink`].
pub async fn run_sink_with(
    store: Arc<dyn Store>,
    configured: Configured,
    once: bool,
    cancel: CancellationToken,
    hooks: Hooks,
) -> Result<Outcome, ForwardError> {
    let consumer = consumer_name(&configured.settings.name);
    let sink = configured.settings.name.clone();
    let store_error = |error| ForwardError::Store { sink: sink.clone(), error };
    let (position, state) = first_position(&store, &consumer, configured.settings.start).await.map_err(store_error)?;
    let mut run = Loop { store, configured, consumer, position, state, hooks };
    run.run(once, &cancel).await
}

/// The sink's position, created on its first run from `start` and committed at once,
/// so that `now` keeps meaning the moment the sink was first run.
async fn first_position(store: &Arc<dyn Store>, consumer: &str, start: Start) -> Result<(i64, SinkState), StoreError> {
    let name = consumer.to_owned();
    blocking(store, move |s| {
        loop {
            if let Some(p) = s.consumer(&name)? {
                return Ok((p.position, SinkState::parse(&p.state)));
            }
            let (position, state) = match start {
                Start::Beginning => (0, SinkState::default()),
                Start::Now => (s.newest_seq()?, SinkState::default()),
                Start::Time(t) => (0, SinkState { start: Some(t), ..SinkState::default() }),
            };
            let text = serde_json::to_string(&state).expect("plain data");
            // On a conflict another process created it first: read theirs.
            if let CommitOutcome::Committed { .. } =
                s.commit_consumer(&name, None, &ConsumerPosition { position, state: text })?
            {
                return Ok((position, state));
            }
        }
    })
    .await
}

/// Waits `d`, or less when cancelled; says whether it was cancelled.
async fn pause(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = cancel.cancelled() => true,
    }
}

/// [`pause`], cut short by `wake` (new events archived).
async fn pause_or_wake(d: Duration, wake: Option<&tokio::sync::Notify>, cancel: &CancellationToken) -> bool {
    match wake {
        None => pause(d, cancel).await,
        Some(w) => tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = w.notified() => false,
            () = cancel.cancelled() => true,
        },
    }
}

impl Loop {
    fn name(&self) -> &str {
        &self.configured.settings.name
    }

    async fn run(&mut self, once: bool, cancel: &CancellationToken) -> Result<Outcome, ForwardError> {
        let mut outcome = Outcome::default();
        let mut waited = false;
        while !cancel.is_cancelled() {
            let (events, last_seq, full) = self.read().await?;
            if events.is_empty() && last_seq == self.position {
                let wake = self.hooks.wake.clone();
                if once || pause_or_wake(self.configured.settings.batch_wait, wake.as_deref(), cancel).await {
                    break;
                }
                continue;
            }
            // A batch that is not full waits once for more, unless everything pending
            // is to go now.
            if !once && !full && !waited {
                waited = true;
                if pause(self.configured.settings.batch_wait, cancel).await {
                    break;
                }
                continue;
            }
            waited = false;
            let start = self.state.start;
            let (send, skip): (Vec<Event>, Vec<Event>) =
                events.into_iter().partition(|e| start.is_none_or(|t| e.timestamp >= t));
            if !send.is_empty() {
                let batch = Batch { sink: self.name().to_owned(), events: send };
                if !self.deliver(&batch, once, cancel).await? {
                    break;
                }
                outcome.delivered += batch.events.len() as u64;
                self.hooks.count("delivered", batch.events.len() as u64);
                self.state.delivered += batch.events.len() as u64;
            }
            outcome.skipped += skip.len() as u64;
            self.hooks.count("skipped", skip.len() as u64);
            self.state.skipped += skip.len() as u64;
            self.state.last_error = None;
            self.state.last_error_at = None;
            self.commit(last_seq).await?;
        }
        Ok(outcome)
    }

    /// The next batch: events after the cursor up to `batch_events` and (beyond the
    /// first) `batch_bytes`; the last `seq` read; whether the batch is full.
    async fn read(&self) -> Result<(Vec<Event>, i64, bool), ForwardError> {
        let (after, limit, max_bytes) =
            (self.position, self.configured.settings.batch_events, self.configured.settings.batch_bytes);
        let result = blocking(&self.store, move |s| {
            let mut events = Vec::new();
            let mut bytes = 0u64;
            let mut full = false;
            s.events_after(after, limit, &mut |e| {
                let size = e.event.raw.len() as u64 + 1;
                if !events.is_empty() && bytes + size > max_bytes {
                    full = true;
                    return Err(std::io::Error::other("batch full"));
                }
                bytes += size;
                events.push(Event { seq: e.seq, timestamp: e.event.timestamp, raw: e.event.raw });
                Ok(())
            })
            .map(|n| full = full || n >= limit)
            .or_else(|e| if full { Ok(()) } else { Err(e) })?;
            let last = events.last().map_or(after, |e: &Event| e.seq);
            Ok::<_, StoreError>((events, last, full))
        })
        .await;
        result.map_err(|error| ForwardError::Store { sink: self.name().to_owned(), error })
    }

    /// Sends until the target acknowledges. `Ok(false)`: cancelled first.
    async fn deliver(&mut self, batch: &Batch, once: bool, cancel: &CancellationToken) -> Result<bool, ForwardError> {
        let mut delay = self.configured.settings.retry_delay;
        let mut attempts = 0u32;
        loop {
            let sent = tokio::select! {
                r = self.configured.sink.send(batch) => r,
                () = cancel.cancelled() => return Ok(false),
            };
            let error = match sent {
                Ok(()) => return Ok(true),
                Err(e) => e,
            };
            attempts += 1;
            self.hooks.count("failed", batch.events.len() as u64);
            self.record_error(error.message()).await?;
            match error {
                SendError::Refused { error } => {
                    return Err(ForwardError::Refused { sink: self.name().to_owned(), error });
                }
                SendError::Retry { error, after } => {
                    if once && attempts >= ONCE_ATTEMPTS {
                        return Err(ForwardError::KeptFailing { sink: self.name().to_owned(), attempts, error });
                    }
                    // Jitter keeps several sinks (or instances) from retrying in step.
                    let jittered = delay.mul_f64(rand::random_range(0.5..=1.0));
                    let wait = after.map_or(jittered, |a| a.max(jittered));
                    tracing::warn!(sink = %self.name(), attempt = attempts, retry_in = ?wait, "{error}");
                    if pause(wait, cancel).await {
                        return Ok(false);
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    async fn record_error(&mut self, error: &str) -> Result<(), ForwardError> {
        self.state.last_error = Some(tfaudit_api::redact::redact(error).into_owned());
        self.state.last_error_at = Some(Timestamp::now());
        self.commit(self.position).await
    }

    async fn commit(&mut self, to: i64) -> Result<(), ForwardError> {
        let (name, from) = (self.consumer.clone(), self.position);
        let state = serde_json::to_string(&self.state).expect("plain data");
        let outcome = blocking(&self.store, move |s| {
            s.commit_consumer(&name, Some(from), &ConsumerPosition { position: to, state })
        })
        .await
        .map_err(|error| ForwardError::Store { sink: self.name().to_owned(), error })?;
        match outcome {
            CommitOutcome::Committed { .. } => {
                self.position = to;
                Ok(())
            }
            CommitOutcome::Conflict => Err(ForwardError::Conflict { sink: self.name().to_owned() }),
        }
    }
}
