//! What every stored event adds to an archive beside its own row: counts by hour,
//! source, kind and actor for the summary, each actor's first and last sighting, and
//! the organizations seen. Counted here once for every backend; each backend writes
//! the counts in the transaction that stores the events (a sync's page, or a batch
//! copied by `tfaudit migrate`), so that an archive filled either way summarises the
//! same.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use foldhash::HashMap;

use tfaudit_model::AuditEvent;

/// An hour as the rollups count it: milliseconds since the epoch / 3,600,000.
pub const HOUR_MS: i64 = 3_600_000;

/// The counts of a batch of stored events. Hashed while counting (the ingest's hot
/// path); a backend whose concurrent transactions must upsert rows in one order (so
/// that they never deadlock) sorts them when it writes ([`sorted`]).
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    /// (hour, source, resource type, resource action) → events.
    pub kinds: HashMap<(i64, i64, &'a str, &'a str), i64>,
    /// (hour, source, accessor id) → events.
    pub hourly_actors: HashMap<(i64, i64, &'a str), i64>,
    /// (accessor id, description) → (first, last) seen, in milliseconds.
    pub actors: HashMap<(&'a str, &'a str), (i64, i64)>,
    /// Organization ids, sorted and each once once [`Rollups::organizations`] is read.
    organizations: Vec<&'a str>,
}

impl<'a> Rollups<'a> {
    /// Counts `e`, stored for `source`. A missing field counts as the empty string.
    pub fn add(&mut self, source: i64, e: &'a AuditEvent) {
        let t = e.timestamp.as_millisecond();
        let hour = t.div_euclid(HOUR_MS);
        let kind = (hour, source, e.resource_type.as_deref().unwrap_or(""), e.resource_action.as_deref().unwrap_or(""));
        *self.kinds.entry(kind).or_default() += 1;
        let accessor = e.accessor_id.as_deref().unwrap_or("");
        *self.hourly_actors.entry((hour, source, accessor)).or_default() += 1;
        let seen = self.actors.entry((accessor, e.auth_description.as_deref().unwrap_or(""))).or_insert((t, t));
        seen.0 = seen.0.min(t);
        seen.1 = seen.1.max(t);
        if let Some(org) = e.organization_id.as_deref() {
            self.organizations.push(org);
        }
    }

    /// The organization ids of the events counted, sorted, each once.
    pub fn organizations(&mut self) -> &[&'a str] {
        self.organizations.sort_unstable();
        self.organizations.dedup();
        &self.organizations
    }

    /// The kinds by (day, source, type, action): days = hours / 24.
    #[must_use]
    pub fn daily_kinds(&self) -> BTreeMap<(i64, i64, &'a str, &'a str), i64> {
        let mut days = BTreeMap::new();
        for (&(hour, source, t, a), &n) in &self.kinds {
            *days.entry((hour.div_euclid(24), source, t, a)).or_default() += n;
        }
        days
    }

    /// The actors by (day, source, accessor id).
    #[must_use]
    pub fn daily_actors(&self) -> BTreeMap<(i64, i64, &'a str), i64> {
        let mut days = BTreeMap::new();
        for (&(hour, source, acc), &n) in &self.hourly_actors {
            *days.entry((hour.div_euclid(24), source, acc)).or_default() += n;
        }
        days
    }

    /// Events by (hour, source).
    #[must_use]
    pub fn hourly_totals(&self) -> BTreeMap<(i64, i64), i64> {
        let mut totals = BTreeMap::new();
        for (&(hour, source, _, _), &n) in &self.kinds {
            *totals.entry((hour, source)).or_default() += n;
        }
        totals
    }
}

/// `counts` in key order.
#[must_use]
pub fn sorted<K: Ord + Copy, V: Copy, S: BuildHasher>(counts: &std::collections::HashMap<K, V, S>) -> BTreeMap<K, V> {
    counts.iter().map(|(k, v)| (*k, *v)).collect()
}
