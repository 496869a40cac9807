//! Forwarding as a long-running part of the service: each sink in its own task beside
//! the syncs and the alert runner, so that a dead target delays none of them nor any
//! other sink. One pass is `tfaudit_forward::runner`'s.

use std::sync::Arc;
use std::time::Duration;

use tfaudit_forward::{Configured, Hooks, consumer_name, run_sink_with};
use tfaudit_server::Metrics;
use tfaudit_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Cluster};
use crate::retry::Retry;

/// The longest pause after a sink stopped on an error (a refused batch, the archive
/// unreachable) before it is started again.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// Runs one sink until `cancel`, woken by `wake` after each sync that stored events.
///
/// The sink runs only while this instance holds the lease `sink:<name>`, so that one
/// instance at a time sends its batches (the cursor's compare-and-set commit would
/// refuse a second one's move anyway, but only after the target got the batch twice).
pub(crate) async fn forward_forever(
    store: Arc<dyn Store>,
    configured: Configured,
    cluster: Cluster,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let name = configured.settings.name.clone();
    let lease_name = consumer_name(&name);
    let tally_metrics = metrics.clone();
    let tally_name = name.clone();
    let hooks = Hooks {
        wake: Some(wake),
        tally: Some(Arc::new(move |result, n| tally_metrics.sink_events(&tally_name, result, n))),
    };
    let mut told_waiting = false;
    // A sink stopped by an error starts again after twice its retry delay, doubling.
    let mut restarts = Retry::capped(configured.settings.retry_delay * 2, MAX_RESTART_DELAY);
    while !cancel.is_cancelled() {
        let Some(lease) = cluster::acquire(&store, &cluster, &lease_name).await else {
            if !told_waiting {
                tracing::info!(sink = %name, "another instance forwards to this sink; waiting for its lease");
                told_waiting = true;
            }
            tokio::select! {
                () = tokio::time::sleep(cluster.tick()) => {}
                () = cancel.cancelled() => break,
            }
            continue;
        };
        told_waiting = false;
        tracing::info!(sink = %name, instance = %cluster.instance, "this instance forwards to the sink now");
        let lost = cancel.child_token();
        let stop = CancellationToken::new();
        let renewer = cluster::keep_renewed(store.clone(), lease, cluster.clone(), lost.clone(), stop.clone());
        let result = run_sink_with(store.clone(), configured.clone(), false, lost.clone(), hooks.clone()).await;
        stop.cancel();
        let lease = renewer.await.ok().flatten();
        let pause = match result {
            Ok(_) if lease.is_none() && !cancel.is_cancelled() => {
                tracing::warn!(sink = %name, "this instance lost the sink's lease; another forwards to it now");
                None
            }
            Ok(_) => None,
            Err(e) => {
                tracing::error!("{e}; starting the sink again");
                Some(restarts.failed())
            }
        };
        // Given up while pausing, so that another instance can try it meanwhile.
        if let Some(lease) = lease {
            cluster::release(&store, lease).await;
        }
        if let Some(p) = pause {
            tokio::select! {
                () = tokio::time::sleep(p) => {}
                () = cancel.cancelled() => break,
            }
        } else {
            restarts.succeeded();
        }
    }
}
