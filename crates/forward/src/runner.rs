//! The consumer loop: a sink reads the archive after its cursor, sends a batch, and
//! moves its cursor (compare-and-set) only once the target acknowledged it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tfaudit_store::{CommitOutcome, ConsumerPosition, DeadLetter, Store, StoreError, blocking};
use tokio_util::sync::CancellationToken;

use crate::{Batch, Configured, Delivered, Event, SendError, Start};

/// The longest wait between two attempts of a failing batch (unless the target asks
/// for longer with `Retry-After`).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// The longest reason a dead letter keeps: targets can quote the event back.
const MAX_REASON_CHARS: usize = 500;

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
    /// Events the target refused as invalid, kept as dead letters.
    pub dead: u64,
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
    /// When the next batch may go under `rate_limit`.
    next_send: Option<tokio::time::Instant>,
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
    let mut run = Loop { store, configured, consumer, position, state, hooks, next_send: None };
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
            let mut skipped = skip.len() as u64;
            if !send.is_empty() {
                let sent = send.len() as u64;
                let ids: HashMap<i64, String> = send.iter().map(|e| (e.seq, e.id.clone())).collect();
                let Some(taken) = self.deliver(send, once, cancel).await? else { break };
                let dead = taken.rejected.len() as u64;
                self.keep_dead(&taken.rejected, &ids).await?;
                skipped += taken.skipped.len() as u64;
                let delivered = sent - dead - taken.skipped.len() as u64;
                outcome.delivered += delivered;
                outcome.dead += dead;
                self.hooks.count("delivered", delivered);
                self.hooks.count("dead", dead);
                self.state.delivered += delivered;
            }
            outcome.skipped += skipped;
            self.hooks.count("skipped", skipped);
            self.state.skipped += skipped;
            self.state.last_error = None;
            self.state.last_error_at = None;
            self.commit(last_seq).await?;
        }
        Ok(outcome)
    }

    /// The next batch: events after the cursor up to `batch_events` and (beyond the
    /// first) `batch_bytes`; the last `seq` read; whether the batch is full.
    async fn read(&self) -> Result<(Vec<Event>, i64, bool), ForwardError> {
        let (after, limit, max_bytes, format) = (
            self.position,
            self.configured.settings.batch_events,
            self.configured.settings.batch_bytes,
            self.configured.settings.format,
        );
        let result = blocking(&self.store, move |s| {
            let mut events = Vec::new();
            let mut bytes = 0u64;
            let mut full = false;
            s.events_after(after, limit, &mut |e| {
                let event = Event::new(&e, format);
                let size = event.line.len() as u64 + 1;
                if !events.is_empty() && bytes + size > max_bytes {
                    full = true;
                    return Err(std::io::Error::other("batch full"));
                }
                bytes += size;
                events.push(event);
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

    /// Sends `events` until the target took them all: a batch refused as a whole as
    /// invalid is split in halves until the offending events stand alone, and those
    /// are returned as rejected. `Ok(None)`: cancelled first.
    async fn deliver(
        &mut self,
        events: Vec<Event>,
        once: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<Delivered>, ForwardError> {
        let mut taken = Delivered::default();
        // Chunks still to send, the next one last.
        let mut pending = vec![events];
        while let Some(chunk) = pending.pop() {
            let batch = Batch::new(self.name(), chunk);
            match self.send(&batch, once, cancel).await? {
                None => return Ok(None),
                Some(Ok(d)) => {
                    taken.rejected.extend(d.rejected);
                    taken.skipped.extend(d.skipped);
                }
                Some(Err(error)) if batch.events.len() == 1 => {
                    taken.rejected.push((batch.events[0].seq, error));
                }
                Some(Err(_)) => {
                    let mut first = batch.events;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                }
            }
        }
        Ok(Some(taken))
    }

    /// Sends one batch until the target answers it: `Some(Ok)` taken (maybe in part),
    /// `Some(Err(reason))` refused as invalid as a whole, `None` cancelled first.
    async fn send(
        &mut self,
        batch: &Batch,
        once: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<Result<Delivered, String>>, ForwardError> {
        let mut delay = self.configured.settings.retry_delay;
        let mut attempts = 0u32;
        loop {
            if self.pace(batch.events.len(), cancel).await {
                return Ok(None);
            }
            let sent = tokio::select! {
                r = self.configured.sink.send(batch) => r,
                () = cancel.cancelled() => return Ok(None),
            };
            let error = match sent {
                Ok(d) => return Ok(Some(Ok(d))),
                Err(SendError::Invalid { error }) => return Ok(Some(Err(error))),
                Err(e) => e,
            };
            attempts += 1;
            self.hooks.count("failed", batch.events.len() as u64);
            self.record_error(error.message()).await?;
            match error {
                SendError::Refused { error } | SendError::Invalid { error } => {
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
                        return Ok(None);
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    /// Holds `rate_limit`: `n` events may go once the previous ones' share of time
    /// has passed. Says whether it was cancelled while waiting.
    async fn pace(&mut self, n: usize, cancel: &CancellationToken) -> bool {
        let Some(rate) = self.configured.settings.rate_limit else { return false };
        let now = tokio::time::Instant::now();
        let at = self.next_send.unwrap_or(now).max(now);
        self.next_send = Some(at + Duration::from_secs_f64(n as f64 / rate as f64));
        if at > now { pause(at - now, cancel).await } else { false }
    }

    /// Stores the events the target refused before the cursor moves past them.
    async fn keep_dead(&mut self, rejected: &[(i64, String)], ids: &HashMap<i64, String>) -> Result<(), ForwardError> {
        if rejected.is_empty() {
            return Ok(());
        }
        let at = Timestamp::now();
        let letters: Vec<DeadLetter> = rejected
            .iter()
            .map(|(seq, reason)| DeadLetter {
                consumer: self.consumer.clone(),
                seq: *seq,
                event_id: ids.get(seq).cloned().unwrap_or_default(),
                reason: tfaudit_api::redact::redact_bounded(reason, MAX_REASON_CHARS),
                at,
                attempts: 1,
            })
            .collect();
        tracing::warn!(sink = %self.name(), events = letters.len(), "the target refused events as invalid; they are kept as dead letters (tfaudit forward --retry-dead {})", self.name());
        blocking(&self.store, move |s| s.add_dead_letters(&letters))
            .await
            .map_err(|error| ForwardError::Store { sink: self.name().to_owned(), error })
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

/// What `tfaudit forward --retry-dead` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Dead letters the target took this time (removed from the dead letters).
    pub delivered: u64,
    /// Refused again: kept, with the new reason.
    pub still_dead: u64,
    /// Not sent because the target cannot take them (Datadog's 18 hours): removed.
    pub skipped: u64,
}

/// Sends a sink's dead letters again, oldest first, in batches: those the target
/// takes leave the dead letters, those it refuses again stay with its new reason.
/// The sink's position does not move.
///
/// # Errors
/// As [`run_sink`]; the dead letters not yet sent stay.
pub async fn retry_dead(
    store: Arc<dyn Store>,
    configured: Configured,
    cancel: CancellationToken,
) -> Result<RetryOutcome, ForwardError> {
    let consumer = consumer_name(&configured.settings.name);
    let sink = configured.settings.name.clone();
    let store_error = |error| ForwardError::Store { sink: sink.clone(), error };
    let (position, state) = first_position(&store, &consumer, configured.settings.start).await.map_err(store_error)?;
    let mut run = Loop { store, configured, consumer, position, state, hooks: Hooks::default(), next_send: None };
    let mut outcome = RetryOutcome::default();
    let mut after = 0;
    while !cancel.is_cancelled() {
        let (consumer, limit, format) =
            (run.consumer.clone(), run.configured.settings.batch_events, run.configured.settings.format);
        let events = blocking(&run.store, move |s| {
            let mut events = Vec::new();
            for letter in s.dead_letters(&consumer, after, limit)? {
                // The letter's own event; one an archive no longer holds stays a letter.
                s.events_after(letter.seq - 1, 1, &mut |e| {
                    if e.seq == letter.seq {
                        events.push(Event::new(&e, format));
                    }
                    Ok(())
                })?;
                after = letter.seq;
            }
            Ok::<_, StoreError>((events, after))
        })
        .await
        .map_err(|error| ForwardError::Store { sink: run.name().to_owned(), error })?;
        let (events, last) = events;
        if last == after && events.is_empty() {
            break;
        }
        after = last;
        if events.is_empty() {
            continue;
        }
        let ids: HashMap<i64, String> = events.iter().map(|e| (e.seq, e.id.clone())).collect();
        let Some(taken) = run.deliver(events, true, &cancel).await? else { break };
        run.keep_dead(&taken.rejected, &ids).await?;
        let refused: std::collections::HashSet<i64> = taken.rejected.iter().map(|(seq, _)| *seq).collect();
        let gone: Vec<i64> = ids.keys().copied().filter(|seq| !refused.contains(seq)).collect();
        outcome.still_dead += refused.len() as u64;
        outcome.skipped += taken.skipped.len() as u64;
        outcome.delivered += (gone.len() - taken.skipped.len()) as u64;
        let consumer = run.consumer.clone();
        blocking(&run.store, move |s| s.remove_dead_letters(&consumer, &gone))
            .await
            .map_err(|error| ForwardError::Store { sink: run.name().to_owned(), error })?;
    }
    Ok(outcome)
}
