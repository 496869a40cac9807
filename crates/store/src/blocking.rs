//! The one way async code calls the archive.
//!
//! [`Store`] is blocking (SQLite is): a call made on a tokio worker thread would stall
//! every task scheduled on that thread — the other organizations' syncs, alert
//! deliveries, HTTP requests — for as long as a query or a commit takes. So async
//! callers run store calls through [`blocking`], on tokio's blocking pool, and tests
//! run the async paths against [`Guarded`], which panics on any call made elsewhere.

use std::cell::Cell;
use std::sync::Arc;

use crate::{Result, Store, StoreError};

thread_local! {
    /// Set while [`blocking`] runs a closure: a blocking-pool thread has a tokio
    /// runtime context just like a worker, so only this tells the two apart.
    static IN_BLOCKING: Cell<bool> = const { Cell::new(false) };
}

/// Clears the flag however the closure ends (a panic included), since the blocking
/// pool reuses its threads for other work.
struct Section;

impl Section {
    fn enter() -> Self {
        IN_BLOCKING.with(|f| f.set(true));
        Section
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        IN_BLOCKING.with(|f| f.set(false));
    }
}

/// Whether this thread is inside [`blocking`].
#[must_use]
pub fn in_blocking_section() -> bool {
    IN_BLOCKING.with(Cell::get)
}

/// Runs `f` with the store on tokio's blocking pool; the returned future waits for it
/// without holding up the async thread. `f` may make several calls (one
/// transaction's worth of work, or a long-lived writer fed by a channel). It starts
/// at once, not when the future is first polled, so a writer can be started and
/// awaited later. A panic in `f` becomes an error of the call, as the async callers
/// already handle archive errors.
///
/// # Errors
/// Whatever `f` returns, or [`StoreError::Database`] when it panicked.
///
/// # Panics
/// Outside a tokio runtime, as [`tokio::task::spawn_blocking`] does.
pub fn blocking<T, E>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, E> + Send + 'static,
) -> impl Future<Output = Result<T, E>> + Send + 'static
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    blocking_on(store, move |store: &(dyn Store + 'static)| f(store))
}

/// [`blocking`] for a store held by one role (`Arc<dyn Archive>`, `Arc<dyn Consumers>`)
/// or by its own type.
///
/// # Errors
/// Whatever `f` returns, or [`StoreError::Database`] when it panicked.
///
/// # Panics
/// Outside a tokio runtime, as [`tokio::task::spawn_blocking`] does.
pub fn blocking_on<S, T, E>(
    store: &Arc<S>,
    f: impl FnOnce(&S) -> Result<T, E> + Send + 'static,
) -> impl Future<Output = Result<T, E>> + Send + 'static
where
    S: ?Sized + Send + Sync + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let store = store.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _section = Section::enter();
        f(&*store)
    });
    async move {
        match task.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Database(format!("an archive call failed on its thread: {e}")).into()),
        }
    }
}

/// A [`Store`] for tests that panics when called on a thread with a tokio runtime
/// outside [`blocking`]: run an async path against it and a direct call fails the
/// test instead of quietly stalling a worker.
pub struct Guarded(pub Arc<dyn Store>);

impl Guarded {
    /// `store`, guarded, ready to hand to async code.
    #[must_use]
    pub fn wrap(store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(Self(store))
    }

    fn check(&self, method: &str) {
        assert!(
            tokio::runtime::Handle::try_current().is_err() || in_blocking_section(),
            "the store's {method} was called on an async thread; run it through tfaudit_store::blocking"
        );
    }
}

macro_rules! guarded {
    ($role:ident { $( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )* }) => {
        impl $role for Guarded {
            $(
                fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.check(stringify!($name));
                    self.0.$name($($arg),*)
                }
            )*
        }
    };
}

use crate::{
    AlertFilter, AlertRecord, AlertStatus, AlertWrite, Archive, CommitOutcome, ConsumerPosition, Consumers, DeadLetter,
    DeliveryJob, DeliveryOutcome, EventFilter, EventKey, Fence, Gap, Lease, Leases, Order, PageOutcome, PageWrite,
    Reject, RunCounts, RunResult, RunTotals, SeenValues, Source, SourceStatus, StoredEvent, Summary, Transfer,
    transfer::ArchiveState,
};
use jiff::Timestamp;

guarded! { Archive {
    fn source(&self, name: &str, address: &str) -> Result<Source>;
    fn start_run(&self, source_id: i64, started_at: Timestamp) -> Result<i64>;
    fn store_page_fenced(&self, page: &PageWrite<'_>, fence: Option<&Fence>) -> Result<PageOutcome>;
    fn finish_walk_fenced(&self, source_id: i64, cursor: Option<Timestamp>, gap: Option<&Gap>, reconciled: Option<Timestamp>, fence: Option<&Fence>) -> Result<()>;
    fn finish_run(&self, run_id: i64, result: &RunResult, counts: RunCounts) -> Result<()>;
    fn events(&self, filter: &EventFilter, order: Order, limit: Option<u64>, each: &mut dyn FnMut(StoredEvent) -> std::io::Result<()>) -> Result<u64>;
    fn event_keys(&self, filter: &EventFilter, order: Order, each: &mut dyn FnMut(EventKey) -> std::io::Result<()>) -> Result<u64>;
    fn event(&self, id: &str) -> Result<Option<StoredEvent>>;
    fn summary(&self, filter: &EventFilter, top: usize) -> Result<Summary>;
    fn status(&self) -> Result<Vec<SourceStatus>>;
    fn run_totals(&self, since: Option<Timestamp>, until: Option<Timestamp>, failures: u64) -> Result<Vec<RunTotals>>;
    fn rejects(&self, limit: u64) -> Result<Vec<Reject>>;
    fn newest_seq(&self) -> Result<i64>;
    fn events_after(&self, after: i64, limit: u64, each: &mut dyn FnMut(StoredEvent) -> std::io::Result<()>) -> Result<u64>;
    fn event_bytes_after(&self, after: i64, limit: u64, each: &mut dyn FnMut(i64, &str, &str) -> std::io::Result<()>) -> Result<u64>;
    fn count_events_after(&self, after: i64) -> Result<u64>;
    fn alert_start_points(&self) -> Result<Vec<(String, Option<i64>)>>;
    fn seen_values_up_to(&self, seq: i64) -> Result<SeenValues>;
    fn seen_values(&self, before: Option<Timestamp>) -> Result<SeenValues>;
    fn compact(&self, after: i64, batch: u64) -> Result<(u64, i64)>;
    fn reclaim_space(&self) -> Result<()>;
} }

guarded! { Consumers {
    fn consumer(&self, name: &str) -> Result<Option<ConsumerPosition>>;
    fn commit_consumer(&self, name: &str, expected: Option<i64>, position: &ConsumerPosition) -> Result<CommitOutcome>;
    fn commit_alerts(&self, expected: Option<i64>, position: &ConsumerPosition, alerts: &[AlertWrite]) -> Result<CommitOutcome>;
    fn claim_delivery(&self, destination: &str, now: Timestamp, due_by: Timestamp, lease: std::time::Duration) -> Result<Option<DeliveryJob>>;
    fn open_delivery_destinations(&self) -> Result<Vec<String>>;
    fn finish_delivery(&self, job: &DeliveryJob, outcome: &DeliveryOutcome) -> Result<bool>;
    fn alerts(&self, filter: &AlertFilter, limit: u64) -> Result<Vec<AlertRecord>>;
    fn alert(&self, id: i64) -> Result<Option<AlertRecord>>;
    fn alert_status(&self, recent: u64) -> Result<AlertStatus>;
    fn add_dead_letters(&self, letters: &[DeadLetter]) -> Result<()>;
    fn dead_letters(&self, consumer: &str, after: i64, limit: u64) -> Result<Vec<DeadLetter>>;
    fn remove_dead_letters(&self, consumer: &str, seqs: &[i64]) -> Result<u64>;
    fn dead_letter_counts(&self) -> Result<Vec<(String, u64)>>;
} }

guarded! { Transfer {
    fn archive_state(&self) -> Result<ArchiveState>;
    fn append_copied(&self, events: &[StoredEvent]) -> Result<()>;
    fn load_state(&self, state: &ArchiveState) -> Result<()>;
} }

guarded! { Leases {
    fn acquire_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<Option<Lease>>;
    fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration) -> Result<bool>;
    fn renew_leases(&self, leases: &[Lease], ttl: std::time::Duration) -> Result<Vec<bool>>;
    fn release_lease(&self, lease: &Lease) -> Result<()>;
    fn leases(&self) -> Result<Vec<Lease>>;
    fn heartbeat(&self, instance: &str, ttl: std::time::Duration) -> Result<()>;
    fn live_instances(&self) -> Result<Vec<String>>;
} }

use crate::{Checkpoint, Hash, Leaf, Ledger, TreeHead, TreeNode, Verification};

guarded! { Ledger {
    fn tree_head(&self) -> Result<Option<TreeHead>>;
    fn append_tree(&self, old_size: Option<u64>, head: &TreeHead, leaves: &[Leaf], nodes: &[TreeNode]) -> Result<CommitOutcome>;
    fn set_tree_origin(&self, origin: &str) -> Result<bool>;
    fn leaves(&self, from: u64, limit: u64) -> Result<Vec<Leaf>>;
    fn tree_nodes(&self, level: u32, from: u64, limit: u64) -> Result<Vec<TreeNode>>;
    fn add_checkpoint(&self, size: u64, root: &Hash, note: &str, signed_by: Option<&str>, made_at: Timestamp) -> Result<Checkpoint>;
    fn checkpoints(&self, after: i64, limit: u64) -> Result<Vec<Checkpoint>>;
    fn latest_checkpoint(&self) -> Result<Option<Checkpoint>>;
    fn record_verification(&self, v: &Verification) -> Result<()>;
    fn latest_verification(&self, clean: bool) -> Result<Option<Verification>>;
} }

use crate::{PruneOutcome, PruneRequest, PrunedDay, Retention};

guarded! { Retention {
    fn prune_day(&self, request: &PruneRequest<'_>) -> Result<PruneOutcome>;
    fn pruned_days(&self) -> Result<Vec<PrunedDay>>;
    fn restore_day(&self, source: &str, day: &str, events: &[StoredEvent]) -> Result<u64>;
} }

use crate::{Catalogue, Listing, ListingOutcome, NameBook, NameRecord};

guarded! { Catalogue {
    fn record_listing(&self, listing: &Listing<'_>) -> Result<ListingOutcome>;
    fn listed_at(&self, source: &str) -> Result<Option<Timestamp>>;
    fn current_names(&self, ids: &[&str]) -> Result<std::collections::HashMap<String, NameRecord>>;
    fn name_history(&self, id: &str) -> Result<Vec<NameRecord>>;
    fn ids_named(&self, name: &str) -> Result<Vec<NameRecord>>;
    fn all_names(&self) -> Result<NameBook>;
} }

use crate::{MadeReport, ReportJob, ReportRecord, ReportTarget, Reports};

guarded! { Reports {
    fn report_scheduled_since(&self, name: &str, cadence: &str, now: Timestamp) -> Result<Timestamp>;
    fn report_made(&self, name: &str, period: &str) -> Result<bool>;
    fn add_report(&self, report: &MadeReport, targets: &[ReportTarget]) -> Result<bool>;
    fn claim_report_delivery(&self, targets: &[ReportTarget], now: Timestamp, lease: std::time::Duration) -> Result<Option<ReportJob>>;
    fn finish_report_delivery(&self, job: &ReportJob, outcome: &DeliveryOutcome) -> Result<bool>;
    fn reports(&self, limit: u64) -> Result<Vec<ReportRecord>>;
} }
