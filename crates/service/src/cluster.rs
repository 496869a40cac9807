//! Several instances on one archive: each organization is synced under its lease
//! (see `tfaudit_store::Leases`), and the leases are spread over the live instances.
//!
//! Spreading: every instance heartbeats into the archive and counts the live ones;
//! its fair share is `ceil(organizations / live instances)`. It takes a free lease
//! only while it holds fewer than its share, and releases one above its share at the
//! next tick, so a new instance finds leases to take and adds capacity, and an
//! instance that dies leaves its leases to expire and be taken by the others.
//!
//! Every tick an instance renews all the organizations' leases it holds in one call
//! (one statement in PostgreSQL): renewed each by its own task, a thousand
//! organizations made hundreds of calls a second, queued for the archive's few
//! connections behind the syncs' writes and, all at once after a start, held
//! hundreds of blocking threads.
//!
//! With each heartbeat an instance also reads which leases the others hold, and only
//! the organizations whose lease is free try to take it, woken by that read: with
//! many organizations, letting any organization's task try would spend the free
//! places of the share on leases that are held (a dead instance's organizations
//! were then found by chance, a few per tick), and would ask the archive in vain
//! every tick.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tfaudit_store::{Lease, Store, StoreError, blocking};
use tokio::sync::{Notify, Semaphore};
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
    /// The leases other instances held at the last heartbeat.
    elsewhere: Mutex<HashSet<String>>,
    /// The organizations' leases this instance holds, renewed together every tick.
    renewing: Mutex<HashMap<String, Renewing>>,
    /// Fired after each heartbeat's read of the leases, and when a place of the
    /// share is given back: the moments a free lease may be there to take.
    changed: Notify,
    /// Turns for taking and giving up leases (see [`LEASE_CALLS_AT_ONCE`]).
    lease_calls: Semaphore,
}

/// Lease takes and releases in flight at once in one instance. After a start every
/// organization's task tries at once, each call holding a blocking thread while it
/// waits for one of the archive's few connections: with 1,000 organizations an
/// instance reached tokio's 512 blocking threads. Each call is one short statement.
const LEASE_CALLS_AT_ONCE: usize = 8;

impl Membership {
    pub fn new(cluster: Cluster, organizations: usize) -> Self {
        Self {
            cluster,
            organizations,
            live: AtomicUsize::new(1),
            held: AtomicUsize::new(0),
            elsewhere: Mutex::new(HashSet::new()),
            renewing: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            lease_calls: Semaphore::new(LEASE_CALLS_AT_ONCE),
        }
    }

    /// [`acquire`], taking its turn.
    pub async fn acquire(&self, store: &Arc<dyn Store>, name: &str) -> Option<Lease> {
        let _turn = self.lease_calls.acquire().await.ok()?;
        acquire(store, &self.cluster, name).await
    }

    /// [`release`], taking its turn.
    pub async fn release(&self, store: &Arc<dyn Store>, lease: Lease) {
        let _turn = self.lease_calls.acquire().await;
        release(store, lease).await;
    }

    /// Keeps `lease` renewed with the others until it is lost or [`Membership::forget`]
    /// is called; `cancel` is the service's.
    pub fn hold(&self, lease: Lease, cancel: &CancellationToken) -> HeldLease {
        let held = HeldLease { lease, lost: cancel.child_token(), gone: Arc::new(AtomicBool::new(false)) };
        let renewing = Renewing { held: held.clone(), renewed: Instant::now() };
        self.renewing.lock().unwrap_or_else(PoisonError::into_inner).insert(held.lease.name.clone(), renewing);
        held
    }

    /// Stops renewing `held` (it is being released, or was lost).
    pub fn forget(&self, held: &HeldLease) {
        self.renewing.lock().unwrap_or_else(PoisonError::into_inner).remove(&held.lease.name);
    }

    /// Renews every lease held here in one call. One that is no longer ours, or that
    /// could not be renewed for a whole lease period (the archive unreachable), is
    /// lost: its sync is stopped through its `lost` token.
    async fn renew_all(&self, store: &Arc<dyn Store>) {
        let leases: Vec<Lease> = self
            .renewing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|r| r.held.lease.clone())
            .collect();
        if leases.is_empty() {
            return;
        }
        let ttl = self.cluster.lease;
        let asked = leases.clone();
        let result = blocking(store, move |s| s.renew_leases(&asked, ttl)).await;
        let now = Instant::now();
        let mut renewing = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = &result {
            tracing::warn!(leases = leases.len(), "renewing the leases failed: {e}; trying again");
        }
        for (i, lease) in leases.iter().enumerate() {
            // Released or lost meanwhile, or taken again since (a new tenure).
            let Some(r) = renewing.get_mut(&lease.name).filter(|r| r.held.lease.epoch == lease.epoch) else {
                continue;
            };
            let kept = match &result {
                Ok(kept) => kept.get(i).copied().unwrap_or(false),
                Err(_) => r.renewed.elapsed() < ttl,
            };
            if result.is_ok() && kept {
                r.renewed = now;
            } else if !kept {
                r.held.gone.store(true, Ordering::SeqCst);
                r.held.lost.cancel();
                renewing.remove(&lease.name);
            }
        }
    }

    /// Whether another instance held `name`'s lease at the last heartbeat.
    pub fn held_elsewhere(&self, name: &str) -> bool {
        self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner).contains(name)
    }

    /// Notes that another instance took `name`'s lease first: until the next
    /// heartbeat reads them all again, it is not tried again (a freed place would
    /// otherwise wake the organizations that just lost, round after round).
    pub fn taken_elsewhere(&self, name: &str) {
        self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned());
    }

    /// Waits until a lease may have become free to take (see `changed`).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn share(&self) -> usize {
        self.organizations.div_ceil(self.live.load(Ordering::SeqCst).max(1))
    }

    /// A place for one more lease, if this instance is under its share.
    pub fn reserve(&self) -> bool {
        let share = self.share();
        self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| (h < share).then_some(h + 1)).is_ok()
    }

    /// Gives back a place (the lease was not had, or is gone); another free lease
    /// may take it at once.
    pub fn unreserve(&self) {
        let _ = self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1));
        self.changed.notify_waiters();
    }

    /// Whether one held lease should go to another instance (this one is above its
    /// share); if so its place is already given back.
    pub fn shed(&self) -> bool {
        let share = self.share();
        self.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| (h > share).then(|| h - 1)).is_ok()
    }

    /// Heartbeats, counts the live instances (itself at least) and reads which
    /// leases the others hold; then wakes the organizations waiting for a free one.
    pub async fn beat(&self, store: &Arc<dyn Store>) {
        let (instance, ttl) = (self.cluster.instance.clone(), self.cluster.lease);
        match blocking(store, move |s| {
            s.heartbeat(&instance, ttl)?;
            Ok::<_, StoreError>((s.live_instances()?, s.leases()?))
        })
        .await
        {
            Ok((live, leases)) => {
                let others = live.iter().filter(|i| **i != self.cluster.instance).count();
                self.live.store(others + 1, Ordering::SeqCst);
                let elsewhere = leases.into_iter().filter(|l| l.holder != self.cluster.instance).map(|l| l.name);
                *self.elsewhere.lock().unwrap_or_else(PoisonError::into_inner) = elsewhere.collect();
                self.changed.notify_waiters();
            }
            Err(e) => tracing::warn!("the instance heartbeat failed: {e}; trying again"),
        }
    }
}

/// Renews this instance's leases and heartbeats every tick until `cancel`.
pub(crate) async fn heartbeat_forever(store: Arc<dyn Store>, members: Arc<Membership>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(members.cluster.tick()) => {}
            () = cancel.cancelled() => return,
        }
        members.renew_all(&store).await;
        members.beat(&store).await;
    }
}

/// An organization's lease as its task holds it, renewed by the instance (see
/// [`Membership::hold`]).
#[derive(Clone)]
pub(crate) struct HeldLease {
    pub lease: Lease,
    /// Cancelled when the lease is lost, or when the service stops.
    pub lost: CancellationToken,
    gone: Arc<AtomicBool>,
}

impl HeldLease {
    /// Whether the lease was lost (not merely the service stopping).
    pub fn is_lost(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

struct Renewing {
    held: HeldLease,
    /// When it was last renewed, by this process's monotonic clock.
    renewed: Instant,
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
