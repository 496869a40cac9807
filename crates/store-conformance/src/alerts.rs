//! Named consumers' cursors, the alert consumer's start points, the outbox and its
//! deliveries.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tfaudit_store::{
    ALERTS_CONSUMER, Alert, AlertFilter, AlertWrite, CommitOutcome, ConsumerPosition, DeliveryOutcome, DeliveryState,
    Store,
};

use crate::{Fresh, at, ev, source};

/// An alert with `key` about event seq 1, to `destinations`.
fn alert(key: &str, destinations: &[&str]) -> AlertWrite {
    AlertWrite {
        alert: Alert {
            key: key.into(),
            rule: "rule-1".into(),
            severity: "high".into(),
            group: None,
            title: format!("title {key}"),
            text: "text".into(),
            source: "acme".into(),
            event_seq: 1,
            event_id: "e1".into(),
            event_time: at("2024-01-01T00:00:00.5Z"),
            count: 1,
            window_start: None,
            window_end: None,
            link: None,
            event: "{\"id\":\"e1\"}".into(),
        },
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}

fn cursor(seq: i64) -> ConsumerPosition {
    ConsumerPosition { position: seq, state: format!("{{\"at\":{seq}}}") }
}

/// Commits alerts from no cursor to `seq`; asserts they were all new.
fn commit(store: &dyn Store, alerts: &[AlertWrite]) {
    let n = alerts.len() as u64;
    assert_eq!(store.commit_alerts(None, &cursor(1), alerts).unwrap(), CommitOutcome::Committed { new_alerts: n });
}

/// Each source's start point is `None` until its first walk completes, then the newest
/// seq in the archive at that moment, and it never moves after.
pub fn alert_start_point_is_fixed_by_the_first_complete_walk(fresh: Fresh<'_>) {
    let a = fresh();
    let acme = source(&*a, "acme");
    let other = source(&*a, "other");
    acme.page(&[ev("1", "2024-01-01T00:00:00Z"), ev("2", "2024-01-01T00:00:01Z")]);
    assert_eq!(a.alert_start_points().unwrap(), [("acme".to_owned(), None), ("other".to_owned(), None)]);
    let fixed = a.newest_seq().unwrap();
    a.finish_walk(acme.source.id, Some(at("2024-01-01T00:00:01Z")), None, None).unwrap();
    other.page(&[ev("3", "2024-01-01T00:00:02Z")]);
    acme.page(&[ev("4", "2024-01-01T00:00:03Z")]);
    a.finish_walk(acme.source.id, Some(at("2024-01-01T00:00:03Z")), None, None).unwrap();
    assert_eq!(a.alert_start_points().unwrap(), [("acme".to_owned(), Some(fixed)), ("other".to_owned(), None)]);
    a.finish_walk(other.source.id, None, None, None).unwrap();
    let newest = a.newest_seq().unwrap();
    assert_eq!(a.alert_start_points().unwrap(), [("acme".to_owned(), Some(fixed)), ("other".to_owned(), Some(newest))]);
}

/// `commit_alerts` moves the consumer's cursor from `expected` only: a commit from a
/// stale `expected` writes nothing (no alert, no delivery, no cursor, no state).
pub fn alert_commit_is_compare_and_set(fresh: Fresh<'_>) {
    let a = fresh();
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), None, "before the engine first ran");
    assert_eq!(a.commit_alerts(Some(0), &cursor(5), &[]).unwrap(), CommitOutcome::Conflict, "no cursor is not 0");
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), None);
    let first = a.commit_alerts(None, &cursor(5), &[alert("k1", &["hook"])]).unwrap();
    assert_eq!(first, CommitOutcome::Committed { new_alerts: 1 });
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), Some(cursor(5)));
    // Another process read the cursor as None too and commits late.
    let stale = a.commit_alerts(None, &cursor(9), &[alert("k2", &["hook"])]).unwrap();
    assert_eq!(stale, CommitOutcome::Conflict);
    let stale = a.commit_alerts(Some(4), &cursor(9), &[alert("k3", &["hook"])]).unwrap();
    assert_eq!(stale, CommitOutcome::Conflict);
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), Some(cursor(5)), "cursor and state as the first commit left them");
    let keys: Vec<String> = a.alerts(&AlertFilter::default(), 10).unwrap().into_iter().map(|r| r.alert.key).collect();
    assert_eq!(keys, ["k1"]);
    assert_eq!(a.alert_status(0).unwrap().pending, 1, "no delivery from a conflict");
    let next = a.commit_alerts(Some(5), &cursor(9), &[alert("k2", &["hook"])]).unwrap();
    assert_eq!(next, CommitOutcome::Committed { new_alerts: 1 });
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), Some(cursor(9)));
}

/// Each consumer name has its own cursor and state: a new name starts empty, a
/// commit is compare-and-set on that name only, and names are arbitrary strings
/// (non-ASCII, spaces, punctuation, names that differ only by case or by a prefix).
pub fn named_consumers_keep_independent_cursors(fresh: Fresh<'_>) {
    let a = fresh();
    let names = ["forwarder", "Forwarder", "forwarder-2", "siem: splunk/prod", "Überwachung ✓", "归档", ""];
    for name in names {
        assert_eq!(a.consumer(name).unwrap(), None, "{name:?} starts empty");
    }
    for (i, name) in names.iter().enumerate() {
        let at = i as i64 + 1;
        let mine = ConsumerPosition { position: at, state: format!("{{\"name\":{name:?}}}") };
        assert_eq!(a.commit_consumer(name, None, &mine).unwrap(), CommitOutcome::Committed { new_alerts: 0 });
    }
    for (i, name) in names.iter().enumerate() {
        let at = i as i64 + 1;
        let mine = ConsumerPosition { position: at, state: format!("{{\"name\":{name:?}}}") };
        assert_eq!(a.consumer(name).unwrap(), Some(mine), "{name:?} kept its own position and state");
    }
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), None, "the alert engine's cursor is untouched");
    assert_eq!(a.alert_status(0).unwrap().cursor, None);

    // Compare-and-set per name: a stale expectation writes nothing, for that name
    // only; another name's position is not what this one's commit compares with.
    let moved = ConsumerPosition { position: 40, state: "{\"moved\":true}".into() };
    assert_eq!(a.commit_consumer("forwarder", None, &moved).unwrap(), CommitOutcome::Conflict, "it has a position");
    assert_eq!(a.commit_consumer("forwarder", Some(2), &moved).unwrap(), CommitOutcome::Conflict, "2 is Forwarder's");
    assert_eq!(a.consumer("forwarder").unwrap().map(|p| p.position), Some(1));
    assert_eq!(a.commit_consumer("forwarder", Some(1), &moved).unwrap(), CommitOutcome::Committed { new_alerts: 0 });
    assert_eq!(a.consumer("forwarder").unwrap(), Some(moved.clone()));
    assert_eq!(a.consumer("Forwarder").unwrap().map(|p| p.position), Some(2), "names are case-sensitive");
    assert_eq!(a.consumer("forwarder-2").unwrap().map(|p| p.position), Some(3));

    // The alert engine is one more name: its commits and the others' do not meet.
    let out = a.commit_alerts(None, &cursor(7), &[alert("k1", &["hook"])]).unwrap();
    assert_eq!(out, CommitOutcome::Committed { new_alerts: 1 });
    assert_eq!(a.consumer(ALERTS_CONSUMER).unwrap(), Some(cursor(7)));
    assert_eq!(a.consumer("forwarder").unwrap(), Some(moved));
    assert_eq!(
        a.commit_consumer(ALERTS_CONSUMER, Some(7), &cursor(8)).unwrap(),
        CommitOutcome::Committed { new_alerts: 0 }
    );
    assert_eq!(
        a.commit_alerts(Some(7), &cursor(9), &[alert("k2", &["hook"])]).unwrap(),
        CommitOutcome::Conflict,
        "commit_alerts compares with the alerts consumer's position, however it was moved"
    );
    assert_eq!(a.alert_status(0).unwrap().cursor, Some(8));
}

/// An alert is stored once by key, with one pending delivery per destination; a key
/// committed again adds no alert and no delivery. Alerts list newest first.
pub fn an_alert_is_stored_once_by_key(fresh: Fresh<'_>) {
    let a = fresh();
    let out = a.commit_alerts(None, &cursor(1), &[alert("k1", &["mail", "hook"]), alert("k1", &["pager"])]).unwrap();
    assert_eq!(out, CommitOutcome::Committed { new_alerts: 1 }, "twice in one commit");
    let out = a.commit_alerts(Some(1), &cursor(2), &[alert("k1", &["pager"]), alert("k2", &["hook"])]).unwrap();
    assert_eq!(out, CommitOutcome::Committed { new_alerts: 1 }, "again in a later commit");
    let listed = a.alerts(&AlertFilter::default(), 10).unwrap();
    type Shape = (String, Vec<(String, DeliveryState, u64)>);
    let shape: Vec<Shape> = listed
        .iter()
        .map(|r| {
            (r.alert.key.clone(), r.deliveries.iter().map(|d| (d.destination.clone(), d.state, d.attempts)).collect())
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("k2".to_owned(), vec![("hook".to_owned(), DeliveryState::Pending, 0)]),
            (
                "k1".to_owned(),
                vec![("hook".to_owned(), DeliveryState::Pending, 0), ("mail".to_owned(), DeliveryState::Pending, 0)]
            ),
        ],
        "newest first, deliveries by destination"
    );
    assert_eq!(listed[1].alert, alert("k1", &[]).alert, "the alert as written");
    assert_eq!(a.alert(listed[1].id).unwrap().as_ref(), Some(&listed[1]));
    assert_eq!(a.alert(listed[0].id + listed[1].id + 100).unwrap(), None);
    assert_eq!(a.alerts(&AlertFilter::default(), 1).unwrap().len(), 1, "limit");
    let by_rule = AlertFilter { rule: Some("other".into()), ..AlertFilter::default() };
    assert_eq!(a.alerts(&by_rule, 10).unwrap(), vec![]);
    assert_eq!(a.open_delivery_destinations().unwrap(), ["hook", "mail"]);
}

/// `claim_delivery` hands out one due delivery of that destination per call, oldest
/// due first; a claimed one is not handed out again while its lease lasts (even by a
/// claim that looks far ahead), and is again once the lease has passed without a finish.
pub fn a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(fresh: Fresh<'_>) {
    let a = fresh();
    commit(&*a, &[alert("k1", &["hook", "mail"]), alert("k2", &["hook"])]);
    let now = Timestamp::now();
    let lease = Duration::from_secs(30);
    let first = a.claim_delivery("hook", now, now, lease).unwrap().expect("due");
    assert_eq!((first.destination.as_str(), first.attempts, first.alert.alert.key.as_str()), ("hook", 0, "k1"));
    let second = a.claim_delivery("hook", now, now, lease).unwrap().expect("the other one");
    assert_eq!(second.alert.alert.key, "k2");
    assert_eq!(a.claim_delivery("hook", now, Timestamp::MAX, lease).unwrap(), None, "both are claimed");
    let mail = a.claim_delivery("mail", now, now, lease).unwrap().expect("per destination");
    assert_eq!(mail.alert.alert.key, "k1");
    assert_ne!(mail.delivery_id, first.delivery_id);
    let almost = now + SignedDuration::from_millis(29_999);
    assert_eq!(a.claim_delivery("hook", almost, almost, lease).unwrap(), None, "the lease still lasts");
    a.finish_delivery(&second, &DeliveryOutcome::Delivered).unwrap();
    let after = now + SignedDuration::from_millis(30_001);
    let again = a.claim_delivery("hook", after, after, lease).unwrap().expect("the lease has passed");
    assert_eq!((again.delivery_id, again.attempts), (first.delivery_id, 0), "an unfinished claim counts no attempt");
    assert_eq!(a.claim_delivery("hook", after, after, lease).unwrap(), None, "a delivered one is never claimed again");
    assert_eq!(a.claim_delivery("nowhere", after, Timestamp::MAX, lease).unwrap(), None);
}

/// An attempt whose claim ran out (its process frozen past the lease) and was taken
/// over records nothing when it ends late, whatever its outcome: a late failure must
/// not reopen a delivery the newer attempt delivered, which would send it once more.
pub fn an_outcome_after_the_claim_was_taken_over_is_not_recorded(fresh: Fresh<'_>) {
    let a = fresh();
    commit(&*a, &[alert("k1", &["hook", "mail"])]);
    let now = Timestamp::now();
    let lease = Duration::from_secs(30);
    // Ran out too, but not taken over: its outcome still counts.
    let slow = a.claim_delivery("mail", now, now, lease).unwrap().expect("due");
    let frozen = a.claim_delivery("hook", now, now, lease).unwrap().expect("due");
    let after = now + SignedDuration::from_secs(31);
    let took_over = a.claim_delivery("hook", after, after, lease).unwrap().expect("the lease has passed");
    assert_eq!(took_over.delivery_id, frozen.delivery_id);
    assert_ne!(took_over.claim, frozen.claim);
    let failed = DeliveryOutcome::Failed { error: "timed out".into(), retry_at: now };
    assert!(!a.finish_delivery(&frozen, &failed).unwrap(), "the newer claim is in force");
    assert_eq!(a.claim_delivery("hook", after, Timestamp::MAX, lease).unwrap(), None, "still claimed");
    assert!(a.finish_delivery(&took_over, &DeliveryOutcome::Delivered).unwrap());
    assert!(!a.finish_delivery(&frozen, &failed).unwrap(), "after the newer one ended too");
    assert!(
        !a.finish_delivery(&frozen, &DeliveryOutcome::Misconfigured { error: "401".into(), retry_at: now }).unwrap()
    );
    assert!(!a.finish_delivery(&frozen, &DeliveryOutcome::Abandoned { error: "gone".into() }).unwrap());
    let status = a.alert_status(1).unwrap();
    assert_eq!((status.delivered, status.failing, status.pending, status.abandoned), (1, 0, 1, 0));
    assert_eq!(status.misconfigured, vec![], "a late refusal marks nothing");
    let hook = status.recent[0].deliveries.iter().find(|d| d.destination == "hook").unwrap();
    assert_eq!(hook.attempts, 1, "only the recorded attempt counts");
    let later = after + SignedDuration::from_secs(3600);
    assert_eq!(a.claim_delivery("hook", later, Timestamp::MAX, lease).unwrap(), None, "never sent again");
    assert!(a.finish_delivery(&slow, &DeliveryOutcome::Delivered).unwrap(), "a claim run out, not taken over");
    assert_eq!(a.alert_status(0).unwrap().delivered, 2);
}

/// A delivery is due when its next attempt is at or before `due_by`: a new one at
/// once, a failed one at its `retry_at`.
pub fn only_due_deliveries_are_claimed(fresh: Fresh<'_>) {
    let a = fresh();
    let before_commit = Timestamp::now() - SignedDuration::from_secs(3600);
    commit(&*a, &[alert("k1", &["hook"])]);
    let now = Timestamp::now();
    let lease = Duration::from_secs(30);
    assert_eq!(a.claim_delivery("hook", now, before_commit, lease).unwrap(), None, "not due before it was raised");
    let job = a.claim_delivery("hook", now, now, lease).unwrap().expect("due at once");
    let retry_at = now + SignedDuration::from_secs(600);
    let failed = DeliveryOutcome::Failed { error: "503".into(), retry_at };
    a.finish_delivery(&job, &failed).unwrap();
    let early = retry_at - SignedDuration::from_millis(1);
    assert_eq!(a.claim_delivery("hook", now, early, lease).unwrap(), None, "not before its retry");
    let retried = a.claim_delivery("hook", now, retry_at, lease).unwrap().expect("due at retry_at");
    assert_eq!((retried.delivery_id, retried.attempts), (job.delivery_id, 1));
}

/// What each outcome does to a delivery, to `open_delivery_destinations` and to the
/// counts `alert_status` reports.
pub fn delivery_outcomes_and_alert_status(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[ev("1", "2024-01-01T00:00:00Z"), ev("2", "2024-01-01T00:00:01Z")]);
    commit(&*a, &[alert("k1", &["ok", "flaky", "gone", "idle"])]);
    let now = Timestamp::now();
    let lease = Duration::from_secs(30);
    let claim = |d: &str| a.claim_delivery(d, now, now, lease).unwrap().expect("due");
    let retry_at = at("2100-01-01T00:00:00Z");
    a.finish_delivery(&claim("ok"), &DeliveryOutcome::Delivered).unwrap();
    a.finish_delivery(&claim("flaky"), &DeliveryOutcome::Failed { error: "timeout".into(), retry_at }).unwrap();
    a.finish_delivery(&claim("gone"), &DeliveryOutcome::Abandoned { error: "too old".into() }).unwrap();
    let record = a.alerts(&AlertFilter::default(), 1).unwrap().pop().expect("the alert");
    let got: Vec<_> = record
        .deliveries
        .iter()
        .map(|d| {
            (
                d.destination.as_str(),
                d.state,
                d.attempts,
                d.next_attempt,
                d.last_error.as_deref(),
                d.delivered_at.is_some(),
            )
        })
        .collect();
    let idle = record.deliveries.iter().find(|d| d.destination == "idle").unwrap().next_attempt;
    assert!(idle.is_some_and(|t| t <= now), "a pending delivery is due from when it was raised: {idle:?}");
    assert_eq!(
        got,
        [
            ("flaky", DeliveryState::Failing, 1, Some(retry_at), Some("timeout"), false),
            ("gone", DeliveryState::Abandoned, 1, None, Some("too old"), false),
            ("idle", DeliveryState::Pending, 0, idle, None, false),
            ("ok", DeliveryState::Delivered, 1, None, None, true),
        ]
    );
    assert_eq!(a.open_delivery_destinations().unwrap(), ["flaky", "idle"], "neither delivered nor abandoned");
    for d in ["ok", "gone"] {
        assert_eq!(a.claim_delivery(d, retry_at, Timestamp::MAX, lease).unwrap(), None, "{d} is done");
    }
    let by_state = |state| {
        let filter = AlertFilter { state: Some(state), ..AlertFilter::default() };
        a.alerts(&filter, 10).unwrap().len()
    };
    assert_eq!(
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failing, DeliveryState::Abandoned]
            .map(by_state),
        [1, 1, 1, 1]
    );
    let status = a.alert_status(5).unwrap();
    let counts = (status.alerts, status.pending, status.delivered, status.failing, status.abandoned);
    assert_eq!(counts, (1, 1, 1, 1, 1));
    assert_eq!((status.cursor, status.newest_seq), (Some(1), a.newest_seq().unwrap()));
    assert_eq!(status.recent, vec![record]);
    assert_eq!(status.misconfigured, vec![]);
}

/// A misconfigured outcome keeps the delivery failing and marks its destination
/// (first refusal's time, last refusal's reason) until a delivery to it succeeds.
pub fn a_misconfigured_destination_is_marked_until_a_delivery_succeeds(fresh: Fresh<'_>) {
    let a = fresh();
    commit(&*a, &[alert("k1", &["hook", "mail"]), alert("k2", &["hook"])]);
    let now = Timestamp::now();
    let lease = Duration::from_secs(30);
    let retry_at = now + SignedDuration::from_secs(60);
    let before = Timestamp::now();
    let job = a.claim_delivery("hook", now, now, lease).unwrap().expect("due");
    a.finish_delivery(&job, &DeliveryOutcome::Misconfigured { error: "401".into(), retry_at }).unwrap();
    let job2 = a.claim_delivery("hook", now, now, lease).unwrap().expect("the other one");
    a.finish_delivery(&job2, &DeliveryOutcome::Misconfigured { error: "403".into(), retry_at }).unwrap();
    let after = Timestamp::now();
    let status = a.alert_status(0).unwrap();
    assert_eq!(status.misconfigured.len(), 1, "{:?}", status.misconfigured);
    let marked = &status.misconfigured[0];
    assert_eq!((marked.name.as_str(), marked.misconfigured.as_str()), ("hook", "403"), "the last reason");
    assert!(
        before - SignedDuration::from_millis(1) <= marked.since && marked.since <= after,
        "since the first refusal"
    );
    assert_eq!((status.failing, status.pending), (2, 1), "kept, failing");
    assert_eq!(a.open_delivery_destinations().unwrap(), ["hook", "mail"]);
    let retry = a.claim_delivery("hook", now, retry_at, lease).unwrap().expect("kept and retried");
    a.finish_delivery(&retry, &DeliveryOutcome::Delivered).unwrap();
    assert_eq!(a.alert_status(0).unwrap().misconfigured, vec![], "a delivery clears the mark");
}

/// What first-seen rules count as already seen: the accessors, impersonators and
/// (type, action) pairs of the events before a time (exclusive), or stored up to a seq
/// (inclusive) — whatever order the events' times and seqs are in.
pub fn values_seen_before_a_time_and_up_to_a_seq(fresh: Fresh<'_>) {
    let a = fresh();
    let s = source(&*a, "acme");
    s.page(&[ev("1", "2024-01-01T10:00:00Z").actor("user-1", "ann")]);
    let first = a.newest_seq().unwrap();
    s.page(&[ev("2", "2024-01-01T10:30:00Z").actor("user-2", "bob").impersonator("admin-1").kind("var", "update")]);
    let second = a.newest_seq().unwrap();
    // Stored last, but the oldest in time.
    s.page(&[
        ev("3", "2024-01-01T12:00:00Z").actor("user-3", "cy"),
        ev("0", "2024-01-01T09:00:00Z").actor("user-4", "dee").kind("workspace", "lock"),
    ]);
    let sorted = |v: tfaudit_store::SeenValues| {
        let (mut acc, mut imp, mut kinds) = (v.accessors, v.impersonators, v.kinds);
        acc.sort();
        imp.sort();
        kinds.sort();
        (acc, imp, kinds)
    };
    let kind = |t: &str, a: &str| (t.to_owned(), a.to_owned());
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        sorted(a.seen_values(Some(at("2024-01-01T10:30:00Z"))).unwrap()),
        (strings(&["user-1", "user-4"]), vec![], vec![kind("run", "apply"), kind("workspace", "lock")]),
        "before is exclusive"
    );
    assert_eq!(
        sorted(a.seen_values(None).unwrap()),
        (
            strings(&["user-1", "user-2", "user-3", "user-4"]),
            strings(&["admin-1"]),
            vec![kind("run", "apply"), kind("var", "update"), kind("workspace", "lock")]
        )
    );
    assert_eq!(
        sorted(a.seen_values_up_to(second).unwrap()),
        (strings(&["user-1", "user-2"]), strings(&["admin-1"]), vec![kind("run", "apply"), kind("var", "update")]),
        "up to is inclusive"
    );
    assert_eq!(sorted(a.seen_values_up_to(first).unwrap()), (strings(&["user-1"]), vec![], vec![kind("run", "apply")]));
    assert_eq!(sorted(a.seen_values_up_to(0).unwrap()), (vec![], vec![], vec![]));
}
