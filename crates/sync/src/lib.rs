//! Sync: get every event the API holds into the archive exactly once.
//!
//! A sync is one **page walk**: ask `since = cursor − overlap`, fetch page 1, 2, … until
//! the server says there is no next page or a page is empty, store each page in its
//! own transaction (events are unique by `id`, so re-reading is harmless), and only
//! when the walk is complete move the cursor to the newest timestamp it saw.
//!
//! Why this loses nothing and stores nothing twice:
//! - Results are newest first and paged by offset, so events arriving mid-walk push
//!   older ones onto later pages: the walk sees some twice (deduplicated by `id`),
//!   never none. The arrivals themselves are newer than the walk's newest event, and
//!   the next walk starts `overlap` before that.
//! - `since` may be exclusive or inclusive: the overlap makes both re-read the
//!   cursor's second, where more same-second events may have arrived.
//! - Late events (timestamps in the past) are caught if they are less than `overlap`
//!   late.
//! - Killed at any instant, the archive holds whole pages plus the walk's progress;
//!   the next run resumes at the next page with the same `since` (pages only shift
//!   later, so nothing before the resume point can have been skipped) and the
//!   cursor has not moved.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tfaudit_api::{ApiError, AuditEvent, Client, PageRequest, RejectedEvent};
use tfaudit_store::{
    Archive, Fence, Gap, PageOutcome, PageWrite, RunCounts, RunResult, RunTally, StoreError, Walk, blocking_on,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod enrich;
pub use enrich::{EnrichError, Enrichment, Refreshed, refresh_names};
#[cfg(test)]
mod tests;

/// Pages already fetched are stored together up to about this many events.
const GROUP_COMMIT_EVENTS: usize = 8_000;

/// The longest error text a run keeps: errors can quote what a server sent.
const STORED_ERROR_CHARS: usize = 1_000;

/// What a walk needs to know besides the client and the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// How far before the cursor each walk asks from.
    pub overlap: Duration,
    /// Events per page to ask for.
    pub page_size: u32,
    /// How long the API keeps events; a cursor older than this means a gap.
    pub retention: Duration,
    /// How often a walk re-reads the whole `reconcile_window` instead of only the
    /// overlap, to catch events that arrive later than the overlap (zero: never).
    pub reconcile_every: Duration,
    /// How far back a reconcile walk reads.
    pub reconcile_window: Duration,
    /// The most pages one sync reads: the last bound on a server that never says a
    /// walk is over.
    pub max_pages: u64,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            overlap: Duration::from_secs(600),
            page_size: 1000,
            retention: Duration::from_secs(14 * 86_400),
            reconcile_every: Duration::from_secs(3600),
            reconcile_window: Duration::from_secs(86_400),
            max_pages: tfaudit_api::DEFAULT_MAX_PAGES,
        }
    }
}

/// Receives progress, for a progress bar.
pub trait Progress: Send + Sync {
    /// A walk begins at `first_page`; `total` is the server's count when it gave one.
    fn begin(&self, first_page: u64, total: Option<u64>);
    /// A page of `events` elements was stored.
    fn page(&self, events: u64);
    /// The walk ended (completely or not).
    fn end(&self);
}

/// No progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: u64, _: Option<u64>) {}
    fn page(&self, _: u64) {}
    fn end(&self) {}
}

/// How a sync went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub source: String,
    /// Whether the walk reached its end (false when interrupted).
    pub complete: bool,
    /// The page a crashed or interrupted walk was resumed at.
    pub resumed_at_page: Option<u64>,
    #[serde(flatten)]
    pub tally: RunTally,
    /// The cursor after the sync.
    pub cursor: Option<Timestamp>,
    /// A gap found by this sync.
    pub gap: Option<Gap>,
    /// Whether this sync re-read the whole reconcile window (or backfilled).
    pub reconciled: bool,
}

/// Why a sync failed. Whatever was stored before the failure stays stored.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the token for {source_name:?} returns events of organization {found}, but the archive's {source_name:?} holds {known}; \
         give each organization its own entry (name) in a config file"
    )]
    OrganizationChanged { source_name: String, known: String, found: String },
    /// The server kept reporting more pages past a bound: what was read is stored, the
    /// cursor has not moved, and the next sync resumes the walk.
    #[error("{0}")]
    Unending(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SyncError {
    #[must_use]
    pub fn is_credentials(&self) -> bool {
        matches!(self, Self::Api(e) if e.is_credentials())
    }
}

/// A fetched page on its way to the archive.
struct Fetched {
    number: u64,
    next: Option<u64>,
    events: Vec<AuditEvent>,
    rejects: Vec<RejectedEvent>,
    elements: u64,
}

/// Syncs one source: one complete (or resumed) page walk.
///
/// Returns when the walk completes, fails, or `cancel` fires; on cancel the page being
/// stored is committed and the walk is left to resume.
///
/// # Errors
/// [`SyncError`]; the run is recorded as failed and everything stored stays.
pub async fn sync(
    store: Arc<dyn Archive>,
    client: &Client,
    source_name: &str,
    options: WalkOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<SyncReport, SyncError> {
    sync_fenced(store, client, source_name, options, progress, cancel, None).await
}

/// [`sync`] under a lease: every page and the walk's completion are written only
/// while `fence` still holds (checked inside each write's transaction), so an
/// instance that lost the organization's lease while paused stores nothing more.
/// A lost lease ends the sync with [`StoreError::LeaseLost`].
///
/// # Errors
/// [`SyncError`]; the run is recorded as failed and everything stored stays.
pub async fn sync_fenced(
    store: Arc<dyn Archive>,
    client: &Client,
    source_name: &str,
    options: WalkOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    fence: Option<Fence>,
) -> Result<SyncReport, SyncError> {
    let started_at = Timestamp::now();
    let (source, run_id) = {
        let (name, address) = (source_name.to_owned(), client.address().to_owned());
        blocking_on(&store, move |store| {
            let source = store.source(&name, &address)?;
            let run = store.start_run(source.id, started_at)?;
            Ok::<_, StoreError>((source, run))
        })
        .await?
    };
    let requests_before = client.stats().requests();
    let retries_before = client.stats().retries();
    let result = walk(store.clone(), client, &source, run_id, options, progress, cancel, fence).await;
    progress.end();
    let counts = RunCounts {
        requests: client.stats().requests() - requests_before,
        retries: client.stats().retries() - retries_before,
    };
    let run_result = match &result {
        Ok(r) if r.complete => RunResult::Ok,
        Ok(_) => RunResult::Interrupted,
        Err(e) => RunResult::Failed(tfaudit_api::redact::redact_bounded(&e.to_string(), STORED_ERROR_CHARS)),
    };
    blocking_on(&store, move |store| store.finish_run(run_id, &run_result, counts)).await?;
    result.map(|mut r| {
        r.tally.requests = counts.requests;
        r.tally.retries = counts.retries;
        r
    })
}

#[allow(clippy::too_many_arguments)]
async fn walk(
    store: Arc<dyn Archive>,
    client: &Client,
    source: &tfaudit_store::Source,
    run_id: i64,
    options: WalkOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    fence: Option<Fence>,
) -> Result<SyncReport, SyncError> {
    let now = Timestamp::now();
    let retention = SignedDuration::try_from(options.retention).unwrap_or(SignedDuration::MAX);
    let overlap = SignedDuration::try_from(options.overlap).unwrap_or(SignedDuration::ZERO);
    let (walk, resumed) = match &source.walk {
        Some(w) if w.page_size == options.page_size => {
            tracing::info!(source = %source.name, page = w.next_page, "resuming the page walk an earlier run did not finish");
            (w.clone(), Some(w.next_page))
        }
        _ => {
            let gap_from = source.cursor.filter(|c| now.checked_sub(retention).is_ok_and(|edge| *c < edge));
            let mut since = source.cursor.map(|c| c.checked_sub(overlap).unwrap_or(c));
            // Late events older than the overlap are caught by an occasional walk over
            // the reconcile window: duplicates are harmless, and it is one request per
            // page of that window's events.
            let every = SignedDuration::try_from(options.reconcile_every).unwrap_or(SignedDuration::ZERO);
            let due = !every.is_zero() && source.reconciled.is_none_or(|r| now.duration_since(r) >= every);
            if due
                && let (Some(s), Ok(window)) = (since, SignedDuration::try_from(options.reconcile_window))
                && let Ok(deep) = now.checked_sub(window)
                && deep < s
            {
                tracing::info!(source = %source.name, since = %deep, "reconciling: this walk re-reads the reconcile window for late events");
                since = Some(deep);
            }
            (
                Walk {
                    since,
                    next_page: 1,
                    page_size: options.page_size,
                    newest: None,
                    oldest: None,
                    gap_from,
                    started_at: now,
                },
                None,
            )
        }
    };
    if let Some(from) = walk.gap_from {
        tracing::warn!(
            source = %source.name,
            cursor = %from,
            "POSSIBLE GAP: the last complete sync reached {from}, longer ago than the API's retention ({}); \
             events between then and the oldest event the API still holds may be lost",
            jiff::SignedDuration::try_from(options.retention).map(|d| format!("{d:#}")).unwrap_or_default()
        );
    }

    // Up to 8 fetched pages wait for the writer, which stores what is waiting in one
    // transaction: fewer, larger commits (measured: 1,000,000 events in 7.3 s instead of
    // 8.5 s with two pages). With 16 waiting and up to 20,000 events a commit, the
    // same backfill took the same CPU and time (4 pairs in turn) but peaked at 101
    // MiB instead of 72.
    let (tx, mut rx) = mpsc::channel::<Fetched>(8);
    // The writer stores pages in order on a blocking thread while the next page is
    // fetched: one transaction per page, each carrying the walk's progress.
    let writer = {
        let source_id = source.id;
        let source_name = source.name.clone();
        let mut known_org = source.organization_id.clone();
        let mut walk = walk.clone();
        let fence = fence.clone();
        blocking_on(&store, move |store| -> Result<(Walk, PageOutcome, u64, bool), SyncError> {
            let mut total = PageOutcome::default();
            let mut pages = 0;
            let mut reached_end = false;
            while let Some(first) = rx.blocking_recv() {
                // Pages that are already waiting go into the same transaction: fewer
                // commits when the archive is the bottleneck (a backfill), and no
                // waiting when it is not.
                let mut batch = vec![first];
                let mut queued = batch[0].events.len();
                while queued < GROUP_COMMIT_EVENTS {
                    match rx.try_recv() {
                        Ok(more) => {
                            queued += more.events.len();
                            batch.push(more);
                        }
                        Err(_) => break,
                    }
                }
                let (mut events, mut rejects) = (Vec::with_capacity(queued), Vec::new());
                let mut elements = 0;
                for page in batch.iter_mut() {
                    check_organization(&source_name, &mut known_org, &page.events)?;
                    for e in &page.events {
                        walk.newest = Some(walk.newest.map_or(e.timestamp, |n| n.max(e.timestamp)));
                        walk.oldest = Some(walk.oldest.map_or(e.timestamp, |o| o.min(e.timestamp)));
                    }
                    walk.next_page = page.number + 1;
                    elements += page.elements;
                    if page.next.is_none() {
                        reached_end = true;
                    }
                    events.append(&mut page.events);
                    rejects.append(&mut page.rejects);
                }
                let outcome = store.store_page_fenced(
                    &PageWrite {
                        source_id,
                        run_id,
                        pages: batch.len() as u64,
                        events: &events,
                        rejects: &rejects,
                        walk: &walk,
                    },
                    fence.as_ref(),
                )?;
                total.inserted += outcome.inserted;
                total.duplicates += outcome.duplicates;
                total.rejected += outcome.rejected;
                pages += batch.len() as u64;
                if outcome.rejected > 0 {
                    tracing::warn!(source = %source_name, rejected = outcome.rejected, "elements that are not events were set aside (see `tfaudit status --rejects`)");
                }
                tracing::debug!(
                    pages = batch.len(),
                    next_page = walk.next_page,
                    elements,
                    new = outcome.inserted,
                    "pages stored"
                );
            }
            Ok((walk, total, pages, reached_end))
        })
    };

    let fetch_result = fetch_pages(client, &walk, options.max_pages, progress, cancel, tx).await;
    let (walk, total, pages, reached_end) = writer.await?;
    fetch_result?;

    let complete = reached_end;
    let mut gap = None;
    let mut reconciled_at = None;
    let cursor = if complete {
        if let Some(from) = walk.gap_from {
            // Events at or before the old cursor prove the server still held them: no gap.
            let continuous = walk.oldest.is_some_and(|o| o <= from);
            if !continuous {
                gap = Some(Gap {
                    source: source.name.clone(),
                    from,
                    to: walk.oldest.unwrap_or(now),
                    detected_at: Timestamp::now(),
                });
            }
        }
        // A backfill, or a walk from at least the reconcile window back, reconciles.
        let window = SignedDuration::try_from(options.reconcile_window).unwrap_or(SignedDuration::MAX);
        let reconciled = match walk.since {
            None => Some(walk.started_at),
            Some(s) => walk.started_at.checked_sub(window).ok().filter(|edge| s <= *edge).map(|_| walk.started_at),
        };
        reconciled_at = reconciled;
        let (id, newest, g) = (source.id, walk.newest, gap.clone());
        blocking_on(&store, move |store| store.finish_walk_fenced(id, newest, g.as_ref(), reconciled, fence.as_ref()))
            .await?;
        match (source.cursor, walk.newest) {
            (Some(c), Some(n)) => Some(c.max(n)),
            (c, n) => c.or(n),
        }
    } else {
        source.cursor
    };
    if let Some(g) = &gap {
        tracing::warn!(source = %source.name, from = %g.from, to = %g.to, "GAP RECORDED: events between {} and {} may be lost", g.from, g.to);
    }
    Ok(SyncReport {
        source: source.name.clone(),
        complete,
        resumed_at_page: resumed,
        tally: RunTally {
            pages,
            requests: 0,
            retries: 0,
            new_events: total.inserted,
            duplicates: total.duplicates,
            rejects: total.rejected,
        },
        cursor,
        gap,
        reconciled: complete && reconciled_at.is_some(),
    })
}

/// Fetches pages in order and hands them to the writer, until the last page, an
/// error, a cancel, the writer stopping, or a [`Bounds`] the server's pagination
/// oversteps.
async fn fetch_pages(
    client: &Client,
    walk: &Walk,
    max_pages: u64,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    tx: mpsc::Sender<Fetched>,
) -> Result<(), SyncError> {
    let mut number = walk.next_page;
    let mut bounds = Bounds::new(max_pages);
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let request = PageRequest { since: walk.since, page: number, page_size: walk.page_size };
        let page = tokio::select! {
            page = client.fetch_page(&request) => page?,
            () = cancel.cancelled() => return Ok(()),
        };
        if number == walk.next_page {
            progress.begin(number, page.total_count());
        }
        let next = page.next_page();
        let elements = page.len() as u64;
        let stop = bounds.check(&page, next).map(|why| {
            SyncError::Unending(format!(
                "{} {why}; stopped there: the pages read are stored, the cursor has not moved, \
                 and the next sync resumes at page {}",
                client.address(),
                number + 1
            ))
        });
        let (events, rejects) = (page.events, page.rejects);
        progress.page(elements);
        if tx.send(Fetched { number, next, events, rejects, elements }).await.is_err() {
            // The writer stopped; its error is the one to report.
            return Ok(());
        }
        if let Some(e) = stop {
            return Err(e);
        }
        match next {
            Some(n) => number = n,
            None => return Ok(()),
        }
    }
}

/// Pages a walk may read past what the server said it holds: events that arrive while
/// it walks push older ones onto later pages.
fn slack(pages: u64) -> u64 {
    pages / 10 + 5
}

/// How many times in a row a page may repeat the one before it: only a burst of
/// arrivals of exactly one page's size between two requests does that honestly.
const REPEATS_ALLOWED: u32 = 2;

/// The bounds of one sync's walk over a server that always reports a next page: what
/// the server said it holds, pages that repeat the one before, and a number of pages.
struct Bounds {
    max_pages: u64,
    read: u64,
    /// The most pages the server has said the walk holds (total_pages, or total_count
    /// over the largest page it sent).
    said: Option<u64>,
    largest_page: u64,
    previous: Option<u64>,
    repeats: u32,
    /// Fingerprints the pages, to see one sent again.
    hasher: foldhash::fast::RandomState,
}

impl Bounds {
    fn new(max_pages: u64) -> Self {
        Self { max_pages, read: 0, said: None, largest_page: 0, previous: None, repeats: 0, hasher: Default::default() }
    }

    /// After a page is read: why the walk must not go on to `next`, if it must not.
    fn check(&mut self, page: &tfaudit_api::Page, next: Option<u64>) -> Option<String> {
        self.read += 1;
        self.largest_page = self.largest_page.max(page.len() as u64);
        if let Some(p) = &page.pagination {
            let by_count = p.total_count.filter(|_| self.largest_page > 0).map(|c| c.div_ceil(self.largest_page));
            for said in [p.total_pages, by_count].into_iter().flatten() {
                self.said = Some(self.said.map_or(said, |s| s.max(said)));
            }
        }
        let fingerprint = {
            use std::hash::{BuildHasher, Hash, Hasher};
            // Every byte of the page is hashed: SipHash cost a sync 1% of its CPU.
            let mut h = self.hasher.build_hasher();
            page.events.iter().for_each(|e| e.raw.hash(&mut h));
            page.rejects.iter().for_each(|r| r.raw.hash(&mut h));
            h.finish()
        };
        self.repeats = if self.previous == Some(fingerprint) { self.repeats + 1 } else { 0 };
        self.previous = Some(fingerprint);
        let next = next?;
        if self.repeats > REPEATS_ALLOWED {
            return Some(format!(
                "sent the same {} elements on {} pages in a row up to page {} and still reports a next page \
                 (it seems to ignore page[number])",
                page.len(),
                self.repeats + 1,
                page.number
            ));
        }
        if let Some(said) = self.said
            && next > said + slack(said)
        {
            return Some(format!(
                "still reports a next page after page {}, though it said the listing holds {said} pages",
                page.number
            ));
        }
        if self.read >= self.max_pages {
            return Some(format!(
                "still reports a next page after {} pages in this sync, the most one sync reads; \
                 if the organization really holds more, raise --max-pages (max_pages in [sync])",
                self.read
            ));
        }
        None
    }
}

/// Refuses a page whose events all belong to another organization than the one this
/// source has archived: that is a token swapped under the same name, and continuing
/// would give the new organization the old one's cursor and skip its history.
fn check_organization(source: &str, known: &mut Option<String>, events: &[AuditEvent]) -> Result<(), SyncError> {
    let mut orgs = events.iter().filter_map(|e| e.organization_id.as_deref());
    let Some(first) = orgs.next() else {
        return Ok(());
    };
    match known {
        None => {
            *known = Some(first.to_owned());
            Ok(())
        }
        Some(k) => {
            let all_foreign = events.iter().filter_map(|e| e.organization_id.as_deref()).all(|o| o != k);
            if all_foreign {
                Err(SyncError::OrganizationChanged {
                    source_name: source.to_owned(),
                    known: k.clone(),
                    found: first.to_owned(),
                })
            } else {
                Ok(())
            }
        }
    }
}
