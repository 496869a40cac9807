//! Several instances on one archive: each organization is synced under its lease
//! (see `tfaudit_store::Leases`), and the leases are spread over the live instances.
//!
//! Spreading: every instance heartbeats into the archive and counts the live ones;
//! its fair share is `ceil(organizations / live instances)`. It takes a free lease
//! only while it holds fewer than its share, and releases one above its share at the
//! next tick, so a new instance finds leases to take and adds capacity, and an
//! instance that dies leaves its leases to expire and be taken by the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tfaudit_store::{Lease, Store, blocking};
use tokio_util::sync::CancellationToken;

/// Who this instance is among the others, and how long its leases last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `--instance`: unique among the instances sharing an archive.
    pub instance: String,
    /// `--lease`: how long a lease lasts unless renewed; it is renewed every third.
    pub lease: Duration,
}

/// The default lease (`--lease`, `TFAUDIT_LEASE`, `[cluster] lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

impl Default for Cluster {
    fn default() -> Self {
        Self { instance: default_instance(), lease: DEFAULT_LEASE }
    }
}

impl Cluster {
    /// How often leases are renewed, free ones tried and heartbeats sent.
    #[must_use]
    pub fn tick(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(10))
    }
}

/// `<host name>-<process id>`: unique per process on a host, and says where it runs.
#[must_use]
pub fn default_instance() -> String {
    let host = hostname::get().ok().and_then(|h| h.into_string().ok()).filter(|h| !h.is_empty());
    format!("{}-{}", host.as_deref().unwrap_or("tfaudit"), std::process::id())
}

/// What this instance holds, shared by its organizations' tasks.
pub(crate) struct Membership {
    pub cluster: Cluster,
    organizations: usize,
    live: AtomicUsize,
    held: AtomicUsize,
}

impl Membership {
    pub fn new(cluster: Cluster, organizations: usize) -> Self {
        Self { cluster, organizations, live: AtomicUsize::new(1), held: AtomicUsize::new(0) }
    }

    fn share(&self) -> usize {
        self.organizations.div_ceil(self.live.load(Ordering::SeqCst).max(1))
    }

    /// A place for one more lease, if this instance is under its share.
    pub fn reserve(&self) -> bool {
        let share = self.share();
        self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| (h < share).then_some(h + 1)).is_ok()
    }

    /// Gives back a place (the lease was not had, or is gone).
    pub fn unreserve(&self) {
        let _ = self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1));
    }

    /// Whether one held lease should go to another instance (this one is above its
    /// share); if so its place is already given back.
    pub fn shed(&self) -> bool {
        let share = self.share();
        self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| (h > share).then(|| h - 1)).is_ok()
    }

    /// Heartbeats and counts the live instances (itself at least).
    pub async fn beat(&self, store: &Arc<dyn Store>) {
        let (instance, ttl) = (self.cluster.instance.clone(), self.cluster.lease);
        match blocking(store, move |s| {
            s.heartbeat(&instance, ttl)?;
            s.live_instances()
        })
        .await
        {
            Ok(live) => {
                let others = live.iter().filter(|i| **i != self.cluster.instance).count();
                self.live.store(others + 1, Ordering::SeqCst);
            }
            Err(e) => tracing::warn!("the instance heartbeat failed: {e}; trying again"),
        }
    }
}

/// Heartbeats every tick until `cancel`.
pub(crate) async fn heartbeat_forever(store: Arc<dyn Store>, members: Arc<Membership>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(members.cluster.tick()) => {}
            () = cancel.cancelled() => return,
        }
        members.beat(&store).await;
    }
}

/// A lease this instance holds, and when it was last renewed (by this process's
/// monotonic clock: past `lease` without a renewal it is taken as lost, whatever the
/// archive says, so that a partitioned instance stops on its own).
pub(crate) struct Held {
    pub lease: Lease,
    renewed: Instant,
}

impl Held {
    pub fn new(lease: Lease) -> Self {
        Self { lease, renewed: Instant::now() }
    }

    pub fn renewal_due(&self, tick: Duration) -> bool {
        self.renewed.elapsed() >= tick
    }

    /// Renews; `false` when the lease is lost (taken over, released, or not renewed
    /// for a whole lease period).
    pub async fn renew(&mut self, store: &Arc<dyn Store>, ttl: Duration) -> bool {
        let lease = self.lease.clone();
        match blocking(store, move |s| s.renew_lease(&lease, ttl)).await {
            Ok(true) => {
                self.renewed = Instant::now();
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(lease = %self.lease.name, "renewing the lease failed: {e}; trying again");
                self.renewed.elapsed() < ttl
            }
        }
    }
}

/// Tries to take `name` for this instance.
pub(crate) async fn acquire(store: &Arc<dyn Store>, cluster: &Cluster, name: &str) -> Option<Lease> {
    let (n, holder, ttl) = (name.to_owned(), cluster.instance.clone(), cluster.lease);
    match blocking(store, move |s| s.acquire_lease(&n, &holder, ttl)).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(lease = %name, "taking the lease failed: {e}; trying again");
            None
        }
    }
}

/// Gives `lease` up so that another instance can take it at once.
pub(crate) async fn release(store: &Arc<dyn Store>, lease: Lease) {
    let name = lease.name.clone();
    if let Err(e) = blocking(store, move |s| s.release_lease(&lease)).await {
        tracing::warn!(lease = %name, "releasing the lease failed: {e}; it expires by itself");
    }
}

/// Keeps `held` renewed every tick while a sync runs under it; when it is lost,
/// cancels `lost` (the sync stops, and the fence refuses anything it still writes).
/// Stop it with `stop`; it returns the lease, or `None` when it was lost.
pub fn keep_renewed(
    store: Arc<dyn Store>,
    lease: Lease,
    cluster: Cluster,
    lost: CancellationToken,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Option<Lease>> {
    tokio::spawn(async move {
        let mut held = Held::new(lease);
        loop {
            tokio::select! {
                () = tokio::time::sleep(cluster.tick()) => {}
                () = stop.cancelled() => return Some(held.lease),
            }
            if !held.renew(&store, cluster.lease).await {
                lost.cancel();
                return None;
            }
        }
    })
}
