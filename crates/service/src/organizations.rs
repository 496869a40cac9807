//! Every organization synced on its own schedule, in its own task, so that a slow or
//! failing organization never delays another; each only while this instance holds
//! the organization's lease (see `cluster`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tfaudit_api::Client;
use tfaudit_store::{Store, StoreError};
use tfaudit_sync::{NoProgress, SyncError, SyncReport, WalkOptions, sync_fenced};
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Held, Membership};

/// One organization to keep in sync.
#[derive(Debug, Clone)]
pub struct Organization {
    pub name: String,
    pub client: Client,
    pub walk: WalkOptions,
    pub interval: Duration,
}

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
    for org in organizations {
        let (store, members, cancel, on_sync, on_lease) =
            (store.clone(), members.clone(), cancel.clone(), on_sync.clone(), on_lease.clone());
        tasks.spawn(async move { keep_in_sync(store, org, members, cancel, on_sync, on_lease).await });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "an organization's sync task stopped unexpectedly");
        }
    }
}

/// One organization's whole life in the service, until `cancel`: every tick (a third
/// of the lease) it takes the organization's lease if free and this instance is under
/// its share, gives it up if above, or renews it; while it holds the lease it syncs
/// every interval, fenced by the lease, with the lease renewed beside the sync. A
/// lost lease stops the sync at once (and the fence refuses whatever it still writes).
async fn keep_in_sync(
    store: Arc<dyn Store>,
    org: Organization,
    members: Arc<Membership>,
    cancel: CancellationToken,
    on_sync: OnSync,
    on_lease: OnLease,
) {
    let cluster = members.cluster.clone();
    let tick = cluster.tick();
    let mut held: Option<Held> = None;
    let mut next_sync = Instant::now();
    while !cancel.is_cancelled() {
        match held.as_mut() {
            None => {
                if members.reserve() {
                    match cluster::acquire(&store, &cluster, &org.name).await {
                        Some(lease) => {
                            tracing::info!(organization = %org.name, instance = %cluster.instance, epoch = lease.epoch, "took the organization's lease");
                            held = Some(Held::new(lease));
                            // Whoever held it before may have synced long ago.
                            next_sync = Instant::now();
                            on_lease(&org.name, "acquired");
                        }
                        None => members.unreserve(),
                    }
                }
            }
            Some(h) => {
                if members.shed() {
                    let lease = h.lease.clone();
                    held = None;
                    cluster::release(&store, lease).await;
                    tracing::info!(organization = %org.name, "released the organization's lease for another instance to take (this one holds more than its share)");
                    on_lease(&org.name, "released");
                } else if h.renewal_due(tick) && !h.renew(&store, cluster.lease).await {
                    held = None;
                    members.unreserve();
                    tracing::warn!(organization = %org.name, "lost the organization's lease; another instance syncs it now");
                    on_lease(&org.name, "lost");
                }
            }
        }
        if let Some(h) = held.take_if(|_| Instant::now() >= next_sync) {
            let started = Instant::now();
            let lost = cancel.child_token();
            let stop = CancellationToken::new();
            let fence = h.lease.fence();
            let renewer = cluster::keep_renewed(store.clone(), h.lease, cluster.clone(), lost.clone(), stop.clone());
            let result =
                sync_fenced(store.clone(), &org.client, &org.name, org.walk, &NoProgress, &lost, Some(fence)).await;
            stop.cancel();
            let kept = renewer.await.ok().flatten();
            let fenced_off = matches!(&result, Err(SyncError::Store(StoreError::LeaseLost { .. })));
            match kept {
                Some(lease) if !fenced_off => held = Some(Held::new(lease)),
                _ => {
                    members.unreserve();
                    tracing::warn!(organization = %org.name, "lost the organization's lease during a sync; another instance syncs it now");
                    on_lease(&org.name, "lost");
                }
            }
            // A sync cut short by the lease's loss is the new holder's to finish: not
            // this instance's failure to report.
            if !(fenced_off || (held.is_none() && !cancel.is_cancelled())) {
                on_sync(&org.name, &result, started.elapsed());
            }
            next_sync = Instant::now() + org.interval;
        }
        let wait = if held.is_some() { tick.min(next_sync.saturating_duration_since(Instant::now())) } else { tick };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => break,
        }
    }
    if let Some(h) = held {
        cluster::release(&store, h.lease).await;
        on_lease(&org.name, "released");
    }
}
