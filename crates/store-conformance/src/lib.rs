//! What every archive backend must do: one suite of checks written only against
//! [`tfaudit_store::Store`] (both its roles, `Archive` and `Consumers`), so that the trait's meaning is defined here and not by
//! whichever backend came first.
//!
//! A backend runs the whole suite from a `#[cfg(test)]` module with one line, giving a
//! closure that opens a fresh, empty archive for each check:
//!
//! ```ignore
//! tfaudit_store_conformance::suite!(|| Archive::new(open_an_empty_store()).keeping(its_temp_dir));
//! ```
//!
//! Each check becomes its own `#[test]`, reported by name.
//!
//! Semantics the suite defines (where the trait's comments leave a choice):
//! - Timestamps are kept to the millisecond: events' times and a walk's times come
//!   back as stored when they are whole milliseconds.
//! - An event is identified by its `id` across all sources: a second copy (in the
//!   same page, a later page, a later walk, another source) is counted as a duplicate
//!   and changes nothing; the first copy's source keeps it. (An id arriving again with
//!   a *different* timestamp is not defined here: the API never does that.)
//! - Filters: `since` is inclusive, `until` exclusive. `actor` (accessor id or
//!   description), `org` (source name or organization id) and `text` (anywhere in the
//!   event's JSON as received) ignore case by Unicode *simple* case folding: `ÄLICE`
//!   finds `älice` and `STRAẞE` finds `straße`, but `STRASSE` does not find `straße`
//!   (that would take full folding). `resource_type`, `action` and `resource_id` are
//!   case-sensitive. Patterns know only `*` (any run, also empty) and `?` (exactly one
//!   character); everything else, `[` `%` `_` included, is literal.
//!   `text` is matched against the event's JSON text; whether a character the server
//!   sent escaped (`\u0026`) is found by itself is not defined here (SQLite finds only
//!   the escape).
//! - Order: by event time, ties by `seq` (the order events were stored), both reversed
//!   for newest first; `before` is a keyset position strictly before `(time, seq)`.
//! - Summaries: `by_kind` most first, ties by (type, action); `top_actors` most first,
//!   ties by accessor id; `per_day`/`per_hour` in UTC, oldest first, empty ones left out.
//! - A page, or a walk's completion, for a source id `source()` never returned is an
//!   error and stores nothing.
//! - Rejects are kept once per source by their text and listed newest first by when
//!   they were first seen.
//! - A source's alert start point is the newest `seq` in the whole archive when its
//!   first walk completes.
//! - Consumers are named by any string, compared exactly (case and all); the alert
//!   engine is the one named `alerts`. `commit_consumer` answers
//!   `Committed { new_alerts: 0 }`.
//! - A copy (`tfaudit_store::migrate`) keeps ids of runs, gaps, rejects, alerts and
//!   deliveries, ingest times, leases in force and consumer states; seqs are the
//!   target's own, in the same order, and every seq the state names is translated to
//!   the same event's seq in the target (a consumer position to the newest event at
//!   or before it).
//! - A delivery claimed until `now + lease` is not handed out again before that instant
//!   and is handed out again after it; the instant itself is left to the backend. A
//!   claim is not an attempt: `attempts` counts finished ones. A delivery is due when
//!   its next attempt is at or before `due_by`.
//! - Dead letters are kept one per consumer and seq; listed by seq; the counts per
//!   consumer, by name, leave out consumers with none. NUL in their text comes back
//!   as NUL or as U+FFFD, as in other text the archive keeps.
//! - Leases: a lease is live until its expiry; taking it from another holder, or
//!   after a release or an expiry, raises its epoch; its own holder taking it again
//!   while live keeps epoch and `since`. A fenced write whose fence no longer matches
//!   fails with `StoreError::LeaseLost` and writes nothing.

use std::any::Any;
use std::ops::Deref;

use jiff::Timestamp;
use tfaudit_model::AuditEvent;
use tfaudit_store::Store;

mod alerts;
mod catalogue;
mod dead_letters;
mod events;
mod leases;
mod ledger;
mod reports;
mod sync;
mod transfer;

pub use alerts::*;
pub use catalogue::*;
pub use dead_letters::*;
pub use events::*;
pub use leases::*;
pub use ledger::*;
pub use reports::*;
pub use sync::*;
pub use transfer::*;

/// A fresh archive under test, with whatever must live as long as it (a temporary
/// folder). The store is dropped before what it keeps.
pub struct Archive {
    store: Box<dyn Store>,
    _keep: Option<Box<dyn Any>>,
}

impl Archive {
    pub fn new(store: impl Store + 'static) -> Self {
        Self { store: Box::new(store), _keep: None }
    }

    /// Keeps `guard` (a temporary folder, a database to drop) until the archive is dropped.
    #[must_use]
    pub fn keeping(mut self, guard: impl Any) -> Self {
        self._keep = Some(Box::new(guard));
        self
    }
}

impl Deref for Archive {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        &*self.store
    }
}

/// What every check takes: a way to open a fresh, empty archive.
pub type Fresh<'a> = &'a dyn Fn() -> Archive;

/// Expands to one `#[test]` per check, each opening archives with `$fresh`
/// (an expression of type `Fn() -> Archive`).
#[macro_export]
macro_rules! suite {
    ($fresh:expr) => {
        $crate::suite!(@checks $fresh;
            globs_know_star_and_question_mark_and_nothing_else,
            actor_and_text_ignore_case_by_simple_unicode_folding,
            type_action_resource_and_org_filters_are_exact,
            since_is_inclusive_and_until_exclusive,
            filters_combine_and_all_must_hold,
            an_event_is_stored_once_by_id,
            events_come_back_as_stored,
            nul_and_control_characters_in_fields_are_kept_and_found,
            newest_and_oldest_first_with_limit_and_ties_by_seq,
            keyset_pages_read_every_event_once,
            events_after_read_in_seq_order,
            summary_equals_counting_the_events,
            a_page_and_the_walk_progress_are_stored_together,
            a_write_for_an_unknown_source_fails_and_stores_nothing,
            finishing_a_walk_never_moves_the_cursor_backwards,
            gaps_are_recorded_and_listed,
            runs_are_counted_per_source_over_a_range,
            impersonated_events_are_found_by_their_impersonator,
            destroy_runs_are_found_as_their_json_says,
            event_keys_are_those_of_the_events_read,
            rejects_are_kept_once_by_text_and_listed_newest_first,
            alert_start_point_is_fixed_by_the_first_complete_walk,
            values_seen_before_a_time_and_up_to_a_seq,
            alert_commit_is_compare_and_set,
            named_consumers_keep_independent_cursors,
            an_alert_is_stored_once_by_key,
            a_claimed_delivery_is_not_claimed_again_until_its_lease_ends,
            an_outcome_after_the_claim_was_taken_over_is_not_recorded,
            only_due_deliveries_are_claimed,
            delivery_outcomes_and_alert_status,
            a_misconfigured_destination_is_marked_until_a_delivery_succeeds,
            dead_letters_are_kept_per_consumer_and_seq,
            removing_dead_letters_says_how_many_and_counts_leave_out_none,
            hostile_text_in_dead_letters_is_kept_or_made_safe,
            events_after_a_seq_are_counted_exactly,
            a_whole_archive_is_copied_with_its_state_and_verified,
            a_stopped_copy_resumes_and_another_archive_is_refused,
            a_lease_has_one_holder_at_a_time,
            an_expired_lease_is_taken_over_with_a_higher_epoch,
            a_write_fenced_by_a_former_holder_stores_nothing,
            a_released_lease_is_free_at_once,
            status_shows_each_organizations_lease_holder,
            instances_are_live_until_their_heartbeat_expires,
            the_tree_grows_by_compare_and_set,
            checkpoints_and_verifications_are_kept,
            the_archive_tree_verifies_and_proves_every_event,
            names_have_history_renames_and_gone_ids,
            a_scheduled_report_is_made_once_and_each_delivery_succeeds_once,
        );
    };
    (@checks $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::$check(&$fresh);
            }
        )*
    };
}

/// A test event: every field the archive indexes, settable; the rest fixed.
#[derive(Debug, Clone)]
pub struct Ev {
    id: String,
    time: String,
    accessor: String,
    description: String,
    org: String,
    rtype: String,
    action: String,
    resource_id: String,
    impersonator: Option<String>,
    note: String,
    destroy: Option<serde_json::Value>,
}

/// An event `id` at `time` (RFC 3339, whole milliseconds), by `user-1` ("ann") in
/// `org-1`, a `run` `apply` on `ws-<id>`.
#[must_use]
pub fn ev(id: &str, time: &str) -> Ev {
    Ev {
        id: id.into(),
        time: time.into(),
        accessor: "user-1".into(),
        description: "ann".into(),
        org: "org-1".into(),
        rtype: "run".into(),
        action: "apply".into(),
        resource_id: format!("ws-{id}"),
        impersonator: None,
        note: String::new(),
        destroy: None,
    }
}

impl Ev {
    #[must_use]
    pub fn actor(mut self, accessor: &str, description: &str) -> Self {
        self.accessor = accessor.into();
        self.description = description.into();
        self
    }
    #[must_use]
    pub fn kind(mut self, rtype: &str, action: &str) -> Self {
        self.rtype = rtype.into();
        self.action = action.into();
        self
    }
    #[must_use]
    pub fn resource(mut self, id: &str) -> Self {
        self.resource_id = id.into();
        self
    }
    #[must_use]
    pub fn org(mut self, org: &str) -> Self {
        self.org = org.into();
        self
    }
    #[must_use]
    pub fn impersonator(mut self, id: &str) -> Self {
        self.impersonator = Some(id.into());
        self
    }
    /// Free text elsewhere in the event (`resource.meta.note`), for text search.
    #[must_use]
    pub fn note(mut self, note: &str) -> Self {
        self.note = note.into();
        self
    }
    /// The run it is about says whether it destroys (`resource.meta.run.is_destroy`):
    /// `true`, `false`, or a value of another type.
    #[must_use]
    pub fn destroy(mut self, is_destroy: serde_json::Value) -> Self {
        self.destroy = Some(is_destroy);
        self
    }
    /// The event as the API would send it, parsed as a sync parses it.
    ///
    /// # Panics
    /// When the event does not parse (a mistake in the test).
    #[must_use]
    pub fn build(&self) -> AuditEvent {
        let mut json = serde_json::json!({
            "id": self.id,
            "version": "0",
            "type": "Resource",
            "timestamp": self.time,
            "auth": {
                "accessor_id": self.accessor,
                "description": self.description,
                "type": "Client",
                "impersonator_id": self.impersonator,
                "organization_id": self.org,
            },
            "request": { "id": null },
            "resource": {
                "id": self.resource_id,
                "type": self.rtype,
                "action": self.action,
                "meta": { "note": self.note },
            },
        });
        if let Some(d) = &self.destroy {
            json["resource"]["meta"]["run"] = serde_json::json!({ "id": "run-1", "is_destroy": d });
        }
        let raw = serde_json::value::RawValue::from_string(json.to_string()).expect("JSON");
        AuditEvent::parse(&raw).expect("a valid event")
    }
}

/// An RFC 3339 time.
///
/// # Panics
/// When `text` is not one (a mistake in the test).
#[must_use]
pub fn at(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 time")
}

/// One source of an archive under test, with a run to store its pages under.
pub(crate) struct Src<'a> {
    pub store: &'a dyn Store,
    pub source: tfaudit_store::Source,
    pub run: i64,
}

pub(crate) fn source<'a>(store: &'a dyn Store, name: &str) -> Src<'a> {
    let source = store.source(name, "https://app.terraform.io").expect("source");
    let run = store.start_run(source.id, at("2024-06-01T00:00:00Z")).expect("run");
    Src { store, source, run }
}

/// A walk's progress at `next_page`, every time in whole milliseconds.
pub(crate) fn walk(next_page: u64) -> tfaudit_store::Walk {
    tfaudit_store::Walk {
        since: Some(at("2024-01-01T00:00:00Z")),
        next_page,
        page_size: 100,
        newest: Some(at("2024-01-02T00:00:00.123Z")),
        oldest: Some(at("2024-01-01T00:00:00.456Z")),
        gap_from: None,
        started_at: at("2024-06-01T00:00:00.789Z"),
    }
}

impl Src<'_> {
    /// Stores `events` as one page of a walk at page 2.
    pub fn page(&self, events: &[Ev]) -> tfaudit_store::PageOutcome {
        let events: Vec<AuditEvent> = events.iter().map(Ev::build).collect();
        self.page_with(&events, &[], &walk(2))
    }

    pub fn page_with(
        &self,
        events: &[AuditEvent],
        rejects: &[tfaudit_model::RejectedEvent],
        walk: &tfaudit_store::Walk,
    ) -> tfaudit_store::PageOutcome {
        self.store
            .store_page(&tfaudit_store::PageWrite {
                source_id: self.source.id,
                run_id: self.run,
                pages: 1,
                events,
                rejects,
                walk,
            })
            .expect("store_page")
    }
}

/// The events matching `filter`, in `order`, at most `limit`.
pub(crate) fn read(
    store: &dyn Store,
    filter: &tfaudit_store::EventFilter,
    order: tfaudit_store::Order,
    limit: Option<u64>,
) -> Vec<tfaudit_store::StoredEvent> {
    let mut out = Vec::new();
    let n = store
        .events(filter, order, limit, &mut |e| {
            out.push(e);
            Ok(())
        })
        .expect("events");
    assert_eq!(n, out.len() as u64, "events() returns how many it read");
    out
}

/// The ids of the events matching `filter`, oldest first.
pub(crate) fn ids(store: &dyn Store, filter: &tfaudit_store::EventFilter) -> Vec<String> {
    read(store, filter, tfaudit_store::Order::OldestFirst, None).into_iter().map(|e| e.event.id).collect()
}
