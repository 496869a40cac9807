//! The alert runner as a long-running part of the service: evaluation after each
//! sync that stored events (and at least every poll), and beside it one delivery task
//! per destination, so that a slow or failing receiver delays neither evaluation nor
//! any other destination. One pass of each is `tfaudit_alerts::runner`'s.

use std::sync::Arc;
use std::time::Duration;

use tfaudit_alerts::runner::{Courier, Runner, drain};
use tfaudit_store::{ALERTS_LEASE, Store};
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Cluster, Held};
use crate::retry::{Retry, Shown};

/// Evaluates after each `wake` (a sync that stored events) and at least every
/// `poll`, and delivers beside it, one task per destination, until `cancel`.
///
/// With a `cluster`, evaluation runs only while this instance holds the lease
/// [`ALERTS_LEASE`], so that one instance evaluates at a time (the consumer's
/// compare-and-set commit would refuse a second one's alerts anyway, after the
/// wasted work). Deliveries need no lease: each is claimed on its own, so every
/// instance delivers.
pub async fn run_alerts(
    mut runner: Runner,
    cancel: CancellationToken,
    wake: Arc<tokio::sync::Notify>,
    poll: Duration,
    cluster: Option<Cluster>,
) {
    let mut retry = Retry::new(poll);
    let names = loop {
        let pause = match runner.destination_names().await {
            Ok(n) => break n,
            Err(e) => {
                let pause = retry.failed();
                tracing::error!("alert delivery cannot start: {e}; trying again in {}", Shown(pause));
                pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
            () = cancel.cancelled() => return,
        }
    };
    let misconfigured = runner.misconfigured().await.unwrap_or_default();
    let mut workers = tokio::task::JoinSet::new();
    let mut new_alerts = Vec::new();
    for name in names {
        let nudge = Arc::new(tokio::sync::Notify::new());
        new_alerts.push(nudge.clone());
        let probe = misconfigured.contains(&name);
        let (store, courier, cancel) = (runner.store().clone(), runner.courier().clone(), cancel.clone());
        workers.spawn(async move { deliver_forever(store, courier, name, probe, nudge, poll, cancel).await });
    }
    let store = runner.store().clone();
    let mut held: Option<Held> = None;
    let wait = cluster.as_ref().map_or(poll, |c| poll.min(c.tick()));
    loop {
        let evaluates = match &cluster {
            None => true,
            Some(c) => {
                match held.as_mut() {
                    None => {
                        if let Some(lease) = cluster::acquire(&store, c, ALERTS_LEASE).await {
                            tracing::info!(instance = %c.instance, "this instance evaluates the alert rules now");
                            held = Some(Held::new(lease));
                        }
                    }
                    Some(h) => {
                        if h.renewal_due(c.tick()) && !h.renew(&store, c.lease).await {
                            tracing::warn!("another instance evaluates the alert rules now");
                            held = None;
                        }
                    }
                }
                held.is_some()
            }
        };
        let mut pause = wait;
        if evaluates {
            match runner.evaluate().await {
                Ok(e) => {
                    retry.succeeded();
                    if e.alerts > 0 {
                        new_alerts.iter().for_each(|n| n.notify_one());
                    }
                }
                Err(e) => {
                    pause = retry.failed().max(wait);
                    tracing::error!("alert evaluation failed: {e}; trying again in {}", Shown(pause));
                }
            }
        }
        // A sync that stored events (the archive answers again) cuts a pause short.
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => break,
        }
    }
    if let Some(h) = held {
        cluster::release(&store, h.lease).await;
    }
    while workers.join_next().await.is_some() {}
}

/// One destination's deliveries, one at a time, until `cancel`: woken by `nudge`
/// when alerts are raised and at least every `poll` for retries that come due.
async fn deliver_forever(
    store: Arc<dyn Store>,
    courier: Courier,
    name: String,
    mut probe: bool,
    nudge: Arc<tokio::sync::Notify>,
    poll: Duration,
    cancel: CancellationToken,
) {
    // Consecutive refusals while the destination is misconfigured: the pause before
    // the next try doubles with them.
    let mut refusals = 0;
    let mut retry = Retry::new(poll);
    loop {
        let pause = match drain(&store, &courier, &name, probe, &cancel).await {
            Ok((_, false)) => {
                refusals = 0;
                probe = false;
                retry.succeeded();
                None
            }
            Ok((_, true)) => {
                refusals += 1;
                probe = true;
                retry.succeeded();
                Some(courier.backoff(refusals))
            }
            // The archive failing (its database away): tried again with backoff.
            Err(e) => {
                let pause = retry.failed();
                tracing::error!(destination = %name, "alert delivery failed: {e}; trying again in {}", Shown(pause));
                Some(pause)
            }
        };
        match pause {
            // Misconfigured: new alerts wait with the rest until the next try.
            Some(p) => tokio::select! {
                () = tokio::time::sleep(p) => {}
                () = cancel.cancelled() => return,
            },
            None => tokio::select! {
                () = nudge.notified() => {}
                () = tokio::time::sleep(poll) => {}
                () = cancel.cancelled() => return,
            },
        }
    }
}
