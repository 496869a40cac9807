//! Every organization synced on its own schedule, in its own task, so that a slow or
//! failing organization never delays another (up to [`SYNCS_AT_ONCE`] running at
//! once); each only while this instance holds the organization's lease (see
//! `cluster`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tfaudit_api::Client;
use tfaudit_store::{Store, StoreError};
use tfaudit_sync::{Enrichment, NoProgress, SyncError, SyncReport, WalkOptions, refresh_names, sync_fenced};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cluster::{HeldLease, Membership};

/// One organization to keep in sync.
#[derive(Debug, Clone)]
pub struct Organization {
    pub name: String,
    pub client: Client,
    pub walk: WalkOptions,
    pub interval: Duration,
    /// Names from the organization's listings, when it has an `enrich_token`.
    pub enrich: Option<Enrichment>,
}

/// Syncs running at once in one instance; the others wait their turn, in order, with
/// their leases kept renewed. Each running sync holds a blocking thread for its page
/// writer, and its writes queue for the archive's few connections, where the lease
/// renewals queue too: with 1,000 organizations starting at once, an instance ran
/// hundreds of syncs together, reached tokio's 512 blocking threads, and renewals
/// came so late that leases were lost in the middle of syncs. A quiet organization's
/// sync takes a fraction of a second, so this many still make hundreds a second;
/// only this many slow ones at once (long backfills, an API that hangs until the
/// timeout) hold the others back.
pub(crate) const SYNCS_AT_ONCE: usize = 32;

/// Called after every sync of every organization, with how long it took.
pub(crate) type OnSync = Arc<dyn Fn(&str, &Result<SyncReport, SyncError>, Duration) + Send + Sync>;

/// How an organization's lease changed here: `acquired`, `lost` or `released`.
pub(crate) type OnLease = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// Syncs every organization, then again every `interval`, until `cancel` fires; an
/// interrupted sync commits its current page first. A failed sync is reported and
/// tried again at the next interval.
pub(crate) async fn sync_all(
    store: Arc<dyn Store>,
    organizations: Vec<Organization>,
    members: Arc<Membership>,
    cancel: CancellationToken,
    on_sync: OnSync,
    on_lease: OnLease,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let turns = Arc::new(Semaphore::new(SYNCS_AT_ONCE));
    for org in organizations {
        let (store, members, turns, cancel, on_sync, on_lease) =
            (store.clone(), members.clone(), turns.clone(), cancel.clone(), on_sync.clone(), on_lease.clone());
        tasks.spawn(async move { keep_in_sync(store, org, members, turns, cancel, on_sync, on_lease).await });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "an organization's sync task stopped unexpectedly");
        }
    }
}

/// One organization's whole life in the service, until `cancel`: it takes the
/// organization's lease if free and this instance is under its share (tried after
/// each heartbeat's read of the leases, when a place of the share is given back, and
/// every tick), and while it holds it, every tick (a third of the lease) gives it up
/// if above the share; it syncs every interval, fenced by the lease. The instance
/// renews all its leases together (see `cluster`); a lost lease stops the sync at
/// once (and the fence refuses whatever it still writes).
async fn keep_in_sync(
    store: Arc<dyn Store>,
    org: Organization,
    members: Arc<Membership>,
    turns: Arc<Semaphore>,
    cancel: CancellationToken,
    on_sync: OnSync,
    on_lease: OnLease,
) {
    let cluster = members.cluster.clone();
    let tick = cluster.tick();
    let mut held: Option<HeldLease> = None;
    let mut next_sync = Instant::now();
    while !cancel.is_cancelled() {
        match held.as_ref() {
            None => {
                if !members.held_elsewhere(&org.name) && members.reserve() {
                    match members.acquire(&store, &org.name).await {
                        Some(lease) => {
                            tracing::info!(organization = %org.name, instance = %cluster.instance, epoch = lease.epoch, "took the organization's lease");
                            held = Some(members.hold(lease, &cancel));
                            // Whoever held it before may have synced long ago.
                            next_sync = Instant::now();
                            on_lease(&org.name, "acquired");
                        }
                        None => {
                            members.taken_elsewhere(&org.name);
                            members.unreserve();
                        }
                    }
                }
            }
            Some(h) => {
                if h.is_lost() {
                    held = None;
                    members.unreserve();
                    tracing::warn!(organization = %org.name, "lost the organization's lease; another instance syncs it now");
                    on_lease(&org.name, "lost");
                } else if members.shed() {
                    members.forget(h);
                    let lease = h.lease.clone();
                    held = None;
                    members.release(&store, lease).await;
                    tracing::info!(organization = %org.name, "released the organization's lease for another instance to take (this one holds more than its share)");
                    on_lease(&org.name, "released");
                }
            }
        }
        if let Some(h) = held.take_if(|_| Instant::now() >= next_sync) {
            // No sync when the lease is lost (or the service stops) while waiting, and
            // none when this instance turns out to hold more than its share (as after
            // instances started together, each first counting fewer live ones).
            let turn = loop {
                tokio::select! {
                    turn = turns.acquire() => break turn.ok(),
                    () = h.lost.cancelled() => break None,
                    () = members.changed() => if members.shed() {
                        members.forget(&h);
                        members.release(&store, h.lease.clone()).await;
                        tracing::info!(organization = %org.name, "released the organization's lease for another instance to take (this one holds more than its share)");
                        on_lease(&org.name, "released");
                        break None;
                    },
                }
            };
            if turn.is_none() && !h.lost.is_cancelled() {
                continue;
            }
            let started = Instant::now();
            let result = match turn {
                Some(_turn) => Some(
                    sync_fenced(
                        store.clone(),
                        &org.client,
                        &org.name,
                        org.walk,
                        &NoProgress,
                        &h.lost,
                        Some(h.lease.fence()),
                    )
                    .await,
                ),
                None => None,
            };
            let fenced_off = matches!(&result, Some(Err(SyncError::Store(StoreError::LeaseLost { .. }))));
            if fenced_off || h.is_lost() {
                members.forget(&h);
                members.unreserve();
                tracing::warn!(organization = %org.name, "lost the organization's lease during a sync; another instance syncs it now");
                on_lease(&org.name, "lost");
            } else {
                held = Some(h);
            }
            // A sync cut short by the lease's loss is the new holder's to finish: not
            // this instance's failure to report.
            if let Some(result) = &result
                && held.is_some()
            {
                on_sync(&org.name, result, started.elapsed());
            }
            // Names are read under the lease too (one instance reads them), when due;
            // a failure costs only names, so it is a warning and the next round retries.
            if let (Some(enrich), true, Some(Ok(_))) = (&org.enrich, held.is_some(), &result) {
                match refresh_names(store.clone(), &org.name, enrich, false).await {
                    Ok(Some(r)) => {
                        tracing::info!(
                            organization = %org.name, listed = r.listed, new = r.changes.new,
                            renamed = r.changes.renamed, gone = r.changes.gone, "read the organization's names"
                        );
                        for why in &r.skipped {
                            tracing::warn!(organization = %org.name, "names: {why}");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(organization = %org.name, "{e}; names stay as they were"),
                }
            }
            next_sync = Instant::now() + org.interval;
        }
        if held.is_some() {
            tokio::select! {
                () = tokio::time::sleep(tick.min(next_sync.saturating_duration_since(Instant::now()))) => {}
                () = cancel.cancelled() => break,
            }
        } else {
            tokio::select! {
                () = members.changed() => {}
                () = tokio::time::sleep(tick) => {}
                () = cancel.cancelled() => break,
            }
        }
    }
    if let Some(h) = held {
        members.forget(&h);
        members.release(&store, h.lease).await;
        on_lease(&org.name, "released");
    }
}
