//! Every organization synced on its own schedule, in its own task, so that a slow or
//! failing organization never delays another.

use std::sync::Arc;
use std::time::Duration;

use tfaudit_api::Client;
use tfaudit_store::Store;
use tfaudit_sync::{NoProgress, SyncError, SyncReport, WalkOptions, sync};
use tokio_util::sync::CancellationToken;

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

/// Syncs every organization, then again every `interval`, until `cancel` fires; an
/// interrupted sync commits its current page first. A failed sync is reported and
/// tried again at the next interval.
pub(crate) async fn sync_all(
    store: Arc<dyn Store>,
    organizations: Vec<Organization>,
    cancel: CancellationToken,
    on_sync: OnSync,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for org in organizations {
        let (store, cancel, on_sync) = (store.clone(), cancel.clone(), on_sync.clone());
        tasks.spawn(async move { keep_in_sync(store, org, cancel, on_sync).await });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "an organization's sync task stopped unexpectedly");
        }
    }
}

/// One organization's whole life in the service: a sync, then one every interval,
/// until `cancel`. Everything an instance does for one organization happens here, so
/// that running several instances (issue 8, part 3) can wrap exactly this in the
/// organization's lease: acquire it before the first sync, renew it between syncs,
/// and stop (the page in hand committed or fenced off) when it is lost.
async fn keep_in_sync(store: Arc<dyn Store>, org: Organization, cancel: CancellationToken, on_sync: OnSync) {
    loop {
        let started = std::time::Instant::now();
        let result = sync(store.clone(), &org.client, &org.name, org.walk, &NoProgress, &cancel).await;
        on_sync(&org.name, &result, started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(org.interval) => {}
            () = cancel.cancelled() => break,
        }
    }
}
