//! The scheduled `archive push` (`[archive] push_every`): finished days to cold
//! storage every so often, beside the syncs. It runs under the lease `archive-push`,
//! so that one instance at a time pushes: two pushes to one location would each
//! replace the other's manifest (the days one of them wrote would then be written again
//! by the next push, which is harmless but wasted). With `[retention] keep_local`, each
//! push is followed, under the same lease, by removing the days it confirms are held.

use std::sync::Arc;
use std::time::Duration;

use tfaudit_cold::{DayPruned, DayPushed, PruneOptions, PushOptions, Target};
use tfaudit_store::Store;
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Cluster};

/// The lease a scheduled push runs under.
pub const PUSH_LEASE: &str = "archive-push";

/// Where and how often.
#[derive(Debug, Clone)]
pub struct ScheduledPush {
    pub target: Arc<Target>,
    /// Time from the end of one push to the start of the next.
    pub every: Duration,
    /// `[retention] keep_local`: after each push, days that ended longer ago than this
    /// and that cold storage holds are removed from the local archive.
    pub keep_local: Option<Duration>,
}

/// Pushes now and then every `push.every` until `cancel`. A failed push is logged and
/// tried again at the next turn; one stopped part way (the lease lost, a signal)
/// leaves whole objects, and the next push writes what the manifest lacks.
pub(crate) async fn push_forever(
    store: Arc<dyn Store>,
    push: ScheduledPush,
    cluster: Cluster,
    cancel: CancellationToken,
) {
    let archive = store.clone();
    let location = push.target.shown().to_owned();
    while !cancel.is_cancelled() {
        let Some(lease) = cluster::acquire(&store, &cluster, PUSH_LEASE).await else {
            tokio::select! {
                () = tokio::time::sleep(cluster.tick()) => {}
                () = cancel.cancelled() => break,
            }
            continue;
        };
        let lost = cancel.child_token();
        let stop = CancellationToken::new();
        let renewer = cluster::keep_renewed(store.clone(), lease, cluster.clone(), lost.clone(), stop.clone());
        let options = PushOptions { organization: None, now: jiff::Timestamp::now() };
        let mut each = |day: &DayPushed| {
            tracing::info!(
                organization = %day.organization,
                date = %day.date,
                events = day.events,
                rewritten = day.previous_events.is_some(),
                "pushed a day to cold storage"
            );
        };
        let work = async {
            let pushed = tfaudit_cold::push(&archive, &push.target, &options, &mut each).await?;
            if let Some(keep_local) = push.keep_local {
                let options = PruneOptions { keep_local, now: options.now, organization: None };
                let mut each = |day: &DayPruned| {
                    tracing::info!(
                        organization = %day.organization,
                        date = %day.date,
                        events = day.events,
                        "removed a day from the local archive (kept in cold storage)"
                    );
                };
                tfaudit_cold::prune(&archive, &push.target, &options, &mut each).await?;
            }
            Ok::<_, tfaudit_cold::ColdError>(pushed)
        };
        let result = tokio::select! {
            r = work => Some(r),
            () = lost.cancelled() => None,
        };
        stop.cancel();
        let lease = renewer.await.ok().flatten();
        match result {
            Some(Ok(r)) => tracing::info!(
                location = %location,
                days = r.pushed.len(),
                events = r.events,
                skipped = r.skipped,
                "archive push done"
            ),
            Some(Err(e)) => {
                tracing::error!(location = %location, "archive push failed: {e}; trying again at the next turn")
            }
            None if cancel.is_cancelled() => {}
            None => tracing::warn!("this instance lost the archive push's lease part way; another pushes now"),
        }
        if let Some(lease) = lease {
            cluster::release(&store, lease).await;
        }
        tokio::select! {
            () = tokio::time::sleep(push.every) => {}
            () = cancel.cancelled() => break,
        }
    }
}
