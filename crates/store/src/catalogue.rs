//! The catalogue role: names for ids, with history (`tfaudit names`).
//!
//! Each row is one id seen with one name, from when to when: a workspace renamed
//! keeps both names with their times, and its current name is the one seen last.
//! Names come from events (written with the page that carried them, at the event's
//! time) and from an organization's listings fetched with its `enrich_token`
//! (at the fetch's time). An id a complete listing no longer holds is marked gone
//! (deleted in HCP Terraform), never forgotten: old events still name it.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::Serialize;
use tfaudit_model::{AuditEvent, NameKind, Sighting};

use crate::Result;

/// One id with one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameRecord {
    pub id: String,
    pub kind: NameKind,
    pub name: String,
    pub email: Option<String>,
    /// When this name was first and last seen for the id: event times for names read
    /// from events, fetch times for listings.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When a complete listing first no longer held the id (deleted).
    pub gone: Option<Timestamp>,
    /// Whether a listing (rather than only events) gave this name.
    pub listed: bool,
}

/// An organization's listings, fetched at one time.
#[derive(Debug, Clone)]
pub struct Listing<'a> {
    /// The source (organization) the listings belong to.
    pub source: &'a str,
    pub at: Timestamp,
    pub names: &'a [Sighting],
    /// The kinds listed completely: their ids missing from `names` are gone.
    pub complete: &'a [NameKind],
}

/// What recording a listing changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ListingOutcome {
    /// Ids never named before.
    pub new: u64,
    /// Ids whose name changed.
    pub renamed: u64,
    /// Ids no longer listed.
    pub gone: u64,
}

/// The catalogue role. Calls block.
pub trait Catalogue: Send + Sync {
    /// Records one fetch of an organization's listings in one transaction, and when it
    /// happened (see [`Catalogue::listed_at`]).
    ///
    /// # Errors
    /// On a database failure; then nothing was recorded.
    fn record_listing(&self, listing: &Listing<'_>) -> Result<ListingOutcome>;

    /// When the source's listings were last recorded.
    ///
    /// # Errors
    /// On a database failure.
    fn listed_at(&self, source: &str) -> Result<Option<Timestamp>>;

    /// The current name (the one seen last) of each of `ids` that has one.
    ///
    /// # Errors
    /// On a database failure.
    fn current_names(&self, ids: &[&str]) -> Result<HashMap<String, NameRecord>>;

    /// Every name `id` has had, oldest first.
    ///
    /// # Errors
    /// On a database failure.
    fn name_history(&self, id: &str) -> Result<Vec<NameRecord>>;

    /// The ids that have (or had) `name`, compared case-insensitively (ASCII), newest
    /// sighting first.
    ///
    /// # Errors
    /// On a database failure.
    fn ids_named(&self, name: &str) -> Result<Vec<NameRecord>>;

    /// The current name of every id that has one: what a command that shows many
    /// events loads once (an organization has thousands of names, not millions).
    ///
    /// # Errors
    /// On a database failure.
    fn all_names(&self) -> Result<NameBook>;
}

/// Current names by id, for showing events: `name (id)` where a name is known.
#[derive(Debug, Clone, Default)]
pub struct NameBook {
    names: HashMap<String, String>,
}

impl NameBook {
    #[must_use]
    pub fn new(names: HashMap<String, String>) -> Self {
        Self { names }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The current name of `id`.
    #[must_use]
    pub fn name(&self, id: &str) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// `name (id)`, or the id alone when no name is known.
    #[must_use]
    pub fn show(&self, id: &str) -> String {
        tfaudit_model::name_and_id(self.name(id), id)
    }

    /// The names of the ids an event refers to (its accessor, impersonator and
    /// resource, and the objects its `meta` names), sorted by id.
    #[must_use]
    pub fn of_event(&self, e: &AuditEvent) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = [&e.accessor_id, &e.impersonator_id, &e.resource_id]
            .into_iter()
            .flatten()
            .filter_map(|id| self.names.get_key_value(id.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// One id-name pair a page's events gave, with the first and last event time of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageName<'a> {
    pub sighting: &'a Sighting,
    pub first: Timestamp,
    pub last: Timestamp,
}

/// The distinct names a page's events give, each with its time span: a page repeats
/// the same few names, so the catalogue is written once per name, not per event.
#[must_use]
pub fn page_names(events: &[AuditEvent]) -> Vec<PageName<'_>> {
    // foldhash: each event's sightings are hashed here, on the ingest's hot path.
    let mut seen: foldhash::HashMap<&Sighting, usize> = foldhash::HashMap::default();
    let mut out: Vec<PageName<'_>> = Vec::new();
    for e in events {
        for s in e.named.iter() {
            match seen.get(s) {
                Some(&i) => {
                    let n = &mut out[i];
                    n.first = n.first.min(e.timestamp);
                    n.last = n.last.max(e.timestamp);
                }
                None => {
                    seen.insert(s, out.len());
                    out.push(PageName { sighting: s, first: e.timestamp, last: e.timestamp });
                }
            }
        }
    }
    out
}
