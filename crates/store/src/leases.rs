//! Leases: which instance syncs which organization (issue 8, part 3).
//!
//! Several `tfaudit watch` / `serve` processes may share one archive. Each
//! organization (source name) has one lease row in the archive: a holder, an expiry,
//! and an `epoch` that grows by one whenever the lease passes to a new holder (or is
//! taken again after it was released or expired). An instance syncs an organization
//! only while it holds its lease and renews it well before it expires.
//!
//! A lease alone cannot stop a paused process (SIGSTOP, a long GC-like stall, a
//! network partition) from writing after its lease expired and another instance took
//! over. So every write that moves an organization's data or cursor carries a
//! [`Fence`] (name, holder, epoch) that the backend checks *inside* the write's
//! transaction, with the lease row locked (PostgreSQL `FOR SHARE`; SQLite's write
//! transaction is exclusive): when it no longer matches, nothing is written and the
//! write fails with [`crate::StoreError::LeaseLost`]. A takeover updates the row,
//! so it waits for a fenced write in flight, and every later fenced write of the old
//! holder sees the new epoch.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::Result;

/// The lease the alert engine's evaluation runs under: one instance evaluates at a
/// time (deliveries need none: each is claimed on its own).
pub const ALERTS_LEASE: &str = "consumer:alerts";

/// A lease as its holder knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The organization's source name, or a role's name such as [`ALERTS_LEASE`].
    pub name: String,
    /// The instance that holds it (`--instance`).
    pub holder: String,
    /// Grows by one with every change of holder: what fences a former holder off.
    pub epoch: i64,
    /// When this holder took it.
    pub since: Timestamp,
    /// When it ends unless renewed (by the database's clock in PostgreSQL).
    pub expires: Timestamp,
}

impl Lease {
    /// What the holder's writes carry.
    #[must_use]
    pub fn fence(&self) -> Fence {
        Fence { name: self.name.clone(), holder: self.holder.clone(), epoch: self.epoch }
    }
}

/// What a fenced write carries: it is written only while the lease `name` is still
/// held by `holder` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

/// Who holds a lease, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseHolder {
    pub holder: String,
    pub since: Timestamp,
}

/// The leases role. Calls block; async callers run them through [`crate::blocking`].
pub trait Leases: Send + Sync {
    /// Takes the lease `name` for `holder` until `ttl` from now when it is free,
    /// expired, released, or already `holder`'s (then it is extended, epoch unchanged).
    /// Taking it from anyone else, or after a release or expiry, increments its epoch.
    /// `None` while another holder's lease is live.
    ///
    /// # Errors
    /// On a database failure.
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Extends `lease` to `ttl` from now if it is still held by its holder at its
    /// epoch; `false` when it was lost (taken over, or released).
    ///
    /// # Errors
    /// On a database failure.
    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool>;

    /// [`Leases::renew_lease`] for each of `leases`, at once: whether each is still
    /// held, in order. An instance renews all its leases this way every tick, so
    /// that a thousand organizations cost one statement, not a thousand.
    ///
    /// # Errors
    /// On a database failure.
    fn renew_leases(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<bool>> {
        leases.iter().map(|l| self.renew_lease(l, ttl)).collect()
    }

    /// Gives `lease` up at once (if still held at its epoch), so that another
    /// instance can take it without waiting for it to expire.
    ///
    /// # Errors
    /// On a database failure.
    fn release_lease(&self, lease: &Lease) -> Result<()>;

    /// The leases held now (live, not released), by name.
    ///
    /// # Errors
    /// On a database failure.
    fn leases(&self) -> Result<Vec<Lease>>;

    /// Records that `instance` is alive for `ttl` from now: how instances count each
    /// other to spread the organizations.
    ///
    /// # Errors
    /// On a database failure.
    fn heartbeat(&self, instance: &str, ttl: Duration) -> Result<()>;

    /// The instances whose last heartbeat has not expired, by name.
    ///
    /// # Errors
    /// On a database failure.
    fn live_instances(&self) -> Result<Vec<String>>;
}

/// `ttl` in milliseconds (a zero ttl ends a heartbeat or lease at once).
#[must_use]
pub fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}
