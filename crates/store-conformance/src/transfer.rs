//! Copying a whole archive into another through the transfer role
//! (`tfaudit_store::migrate`): events in ingest order, every piece of non-event state,
//! seqs translated to the target's own; a stopped copy resumes; another archive as the
//! target is refused.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tfaudit_model::RejectedEvent;
use tfaudit_store::migrate::{MigrateError, MigrateProgress, migrate};
use tfaudit_store::{
    ALERTS_CONSUMER, Alert, AlertFilter, AlertWrite, ConsumerPosition, DeadLetter, DeliveryOutcome, Gap, Order, Store,
    StoredEvent,
};

use crate::{Fresh, at, ev, read, source, walk};

struct Quiet;

impl MigrateProgress for Quiet {
    fn begin(&mut self, _: u64, _: u64) {}
    fn copied(&mut self, _: u64) {}
    fn verifying(&mut self, _: u64) {}
    fn verified(&mut self, _: u64) {}
}

/// The event at `seq`, by id.
fn id_at(store: &dyn Store, seq: i64) -> String {
    let mut found = None;
    store
        .events_after(seq - 1, 1, &mut |e| {
            found = Some(e);
            Ok(())
        })
        .unwrap();
    let e = found.unwrap_or_else(|| panic!("no event at seq {seq}"));
    assert_eq!(e.seq, seq, "an event at exactly seq {seq}");
    e.event.id
}

/// What must be equal in a copy, in ingest order: ids, raw bytes, source, ingest time.
fn events(store: &dyn Store) -> Vec<(String, String, String, Timestamp)> {
    let mut out = Vec::new();
    store
        .events_after(0, u64::MAX >> 1, &mut |e: StoredEvent| {
            out.push((e.event.id, e.event.raw, e.source, e.ingested_at));
            Ok(())
        })
        .unwrap();
    out
}

fn alert_about(key: &str, e: &StoredEvent, destinations: &[&str]) -> AlertWrite {
    AlertWrite {
        alert: Alert {
            key: key.into(),
            rule: "rule-1".into(),
            severity: "high".into(),
            group: Some("g".into()),
            title: format!("title {key}"),
            text: "text ✓".into(),
            source: e.source.clone(),
            event_seq: e.seq,
            event_id: e.event.id.clone(),
            event_time: e.event.timestamp,
            count: 2,
            window_start: Some(at("2024-01-01T00:00:00Z")),
            window_end: Some(at("2024-01-01T00:10:00Z")),
            link: Some("https://app.terraform.io/x".into()),
            event: e.event.raw.clone(),
        },
        destinations: destinations.iter().map(|d| (*d).to_owned()).collect(),
    }
}

/// An archive with some of everything: two sources, a duplicate (a gap in seqs where a
/// backend spends a number on it), a reject, a gap, a walk in progress, a reconcile,
/// start points, two consumers, alerts with deliveries in several states, a
/// misconfigured destination, dead letters of two consumers.
fn filled(fresh: Fresh<'_>) -> crate::Archive {
    let a = fresh();
    let acme = source(&*a, "acme");
    let other = source(&*a, "other ✓");
    acme.page(&[ev("a1", "2024-01-01T00:00:00Z"), ev("a2", "2024-01-01T00:00:01.5Z").actor("user-2", "Bö")]);
    acme.page(&[ev("a2", "2024-01-01T00:00:01.5Z"), ev("a3", "2024-01-01T01:00:00Z").kind("workspace", "lock")]);
    let gap = Gap {
        source: "acme".into(),
        from: at("2023-12-01T00:00:00Z"),
        to: at("2023-12-20T00:00:00Z"),
        detected_at: at("2024-01-01T02:00:00Z"),
    };
    a.finish_walk(acme.source.id, Some(at("2024-01-01T01:00:00Z")), Some(&gap), Some(at("2024-01-01T00:30:00Z")))
        .unwrap();
    let rejects = [RejectedEvent::new("[1,2]".into(), "not a JSON object")];
    let events: Vec<_> = [ev("o1", "2024-01-01T00:00:02Z").org("org-2"), ev("o2", "2024-01-02T00:00:00Z")]
        .iter()
        .map(crate::Ev::build)
        .collect();
    other.page_with(&events, &rejects, &walk(3));
    a.finish_run(acme.run, &tfaudit_store::RunResult::Ok, tfaudit_store::RunCounts { requests: 3, retries: 1 })
        .unwrap();
    acme.page(&(0..30).map(|i| ev(&format!("b{i:02}"), "2024-01-03T00:00:00Z")).collect::<Vec<_>>());
    let all = read(&*a, &tfaudit_store::EventFilter::default(), Order::OldestFirst, None);
    let about = |id: &str| all.iter().find(|e| e.event.id == id).unwrap().clone();
    let o1 = about("o1");
    assert_eq!(
        a.commit_alerts(
            None,
            &ConsumerPosition { position: o1.seq, state: "{\"w\":1}".into() },
            &[alert_about("k1", &about("a2"), &["hook", "mail"]), alert_about("k2", &o1, &["hook"]),]
        )
        .unwrap(),
        tfaudit_store::CommitOutcome::Committed { new_alerts: 2 }
    );
    a.commit_consumer("forwarder", None, &ConsumerPosition { position: about("a3").seq, state: "s".into() }).unwrap();
    let now = Timestamp::now();
    let job = a.claim_delivery("hook", now, now, Duration::from_secs(30)).unwrap().expect("due");
    a.finish_delivery(&job, &DeliveryOutcome::Delivered).unwrap();
    let job = a.claim_delivery("hook", now, now, Duration::from_secs(30)).unwrap().expect("due");
    let retry_at = now + SignedDuration::from_secs(60);
    a.finish_delivery(&job, &DeliveryOutcome::Misconfigured { error: "401".into(), retry_at }).unwrap();
    // A claim in force stays in force in the copy.
    a.claim_delivery("mail", now, now, Duration::from_secs(600)).unwrap().expect("due");
    let dead = |consumer: &str, e: &StoredEvent, attempts: u64| DeadLetter {
        consumer: consumer.into(),
        seq: e.seq,
        event_id: e.event.id.clone(),
        reason: format!("refused {} ✓", e.event.id),
        at: at("2024-01-05T00:00:00.25Z"),
        attempts,
    };
    a.add_dead_letters(&[
        dead("sink:siem", &about("a3"), 2),
        dead("sink:siem", &o1, 1),
        dead("sink:x", &about("b05"), 1),
    ])
    .unwrap();
    a
}

/// Everything a copy must equal, with seqs replaced by the id of the event they name.
fn picture(store: &dyn Store) -> impl std::fmt::Debug + PartialEq {
    let mut alerts = store.alerts(&AlertFilter::default(), 100).unwrap();
    for a in &mut alerts {
        assert_eq!(id_at(store, a.alert.event_seq), a.alert.event_id, "an alert's event_seq names its event");
        a.alert.event_seq = 0;
    }
    let mut status = store.alert_status(100).unwrap();
    // Seqs of the archive itself: compared below as the events they name.
    assert_eq!(status.cursor, store.consumer(ALERTS_CONSUMER).unwrap().map(|c| c.position));
    assert_eq!(status.newest_seq, store.newest_seq().unwrap());
    (status.cursor, status.newest_seq) = (None, 0);
    status.recent.iter_mut().for_each(|a| a.alert.event_seq = 0);
    let starts: Vec<(String, Option<String>)> = store
        .alert_start_points()
        .unwrap()
        .into_iter()
        .map(|(name, seq)| (name, seq.map(|s| id_at(store, s))))
        .collect();
    let consumers: Vec<Option<(String, String)>> = [ALERTS_CONSUMER, "forwarder", "none"]
        .iter()
        .map(|n| store.consumer(n).unwrap().map(|c| (id_at(store, c.position), c.state)))
        .collect();
    // Dead letters by the event they name; and a consumer's lag the same in a copy.
    let dead: Vec<(String, String, String, Timestamp, u64)> = store
        .dead_letter_counts()
        .unwrap()
        .into_iter()
        .flat_map(|(consumer, n)| {
            let letters = store.dead_letters(&consumer, 0, 100).unwrap();
            assert_eq!(letters.len() as u64, n, "{consumer}: counted as listed");
            letters
        })
        .map(|d| {
            assert_eq!(id_at(store, d.seq), d.event_id, "a dead letter's seq names its event");
            (d.consumer, d.event_id, d.reason, d.at, d.attempts)
        })
        .collect();
    let lag = store.consumer("forwarder").unwrap().map(|c| store.count_events_after(c.position).unwrap());
    let summary = store.summary(&tfaudit_store::EventFilter::default(), 10).unwrap();
    let actor = read(
        store,
        &tfaudit_store::EventFilter { actor: Some(tfaudit_store::Pattern::new("BÖ")), ..Default::default() },
        Order::OldestFirst,
        None,
    )
    .len();
    (
        events(store),
        store.status().unwrap(),
        store.rejects(100).unwrap(),
        alerts,
        status,
        starts,
        consumers,
        dead,
        lag,
        summary,
        actor,
        store.seen_values(None).unwrap(),
    )
}

/// A copy equals its original in every event (ingest order, raw bytes, source, ingest
/// time), in status (cursors, walks, counts, gaps, runs, rejects), queries, summary,
/// alerts, deliveries, consumers and dead letters; seqs are the target's own and name
/// the same events; the report says so. Copying the copy again gives the same.
pub fn a_whole_archive_is_copied_with_its_state_and_verified(fresh: Fresh<'_>) {
    let a = filled(fresh);
    let b = fresh();
    let report = migrate(&*a, &*b, 4, &mut Quiet).unwrap();
    assert!(report.verified(), "{:?}", report.differences());
    assert_eq!((report.copied, report.resumed_after), (35, 0));
    assert_eq!(report.source_checksum, report.target_checksum);
    assert!(
        report.counts.iter().any(|c| c.what == "deliveries" && c.source == 3 && c.target == 3),
        "{:?}",
        report.counts
    );
    assert!(
        report.counts.iter().any(|c| c.what == "dead letters" && c.source == 3 && c.target == 3),
        "{:?}",
        report.counts
    );
    assert_eq!(picture(&*a), picture(&*b));
    let c = fresh();
    assert!(migrate(&*b, &*c, 1000, &mut Quiet).unwrap().verified());
    assert_eq!(picture(&*a), picture(&*c));
    // The copy is a working archive: a new alert gets a new id, a new page new seqs.
    let newest = b.newest_seq().unwrap();
    source(&*b, "acme").page(&[ev("new", "2024-01-04T00:00:00Z")]);
    assert!(b.newest_seq().unwrap() > newest);
    let e = read(&*b, &tfaudit_store::EventFilter::default(), Order::NewestFirst, Some(1)).remove(0);
    let before = b.consumer(ALERTS_CONSUMER).unwrap().unwrap();
    b.commit_alerts(
        Some(before.position),
        &ConsumerPosition { position: e.seq, state: "{}".into() },
        &[alert_about("k3", &e, &["hook"])],
    )
    .unwrap();
    let ids: Vec<i64> = b.alerts(&AlertFilter::default(), 10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] > ids[1] && ids[0] > ids[2], "the new alert's id follows the copied ones: {ids:?}");
}

/// A target holding part of the copy (a copy stopped after some batches) is completed
/// from where it stopped; one missing events in the middle is caught by the check and
/// gets no state; a target holding another archive is refused untouched.
pub fn a_stopped_copy_resumes_and_another_archive_is_refused(fresh: Fresh<'_>) {
    let a = filled(fresh);
    let b = fresh();
    // What a copy killed after its first batches leaves: the sources, some events.
    for s in a.status().unwrap() {
        b.source(&s.name, &s.address).unwrap();
    }
    let mut first = Vec::new();
    a.events_after(0, 10, &mut |e| {
        first.push(e);
        Ok(())
    })
    .unwrap();
    b.append_copied(&first).unwrap();
    let report = migrate(&*a, &*b, 7, &mut Quiet).unwrap();
    assert!(report.verified(), "{:?}", report.differences());
    assert_eq!((report.resumed_after, report.copied), (10, 25));
    assert_eq!(picture(&*a), picture(&*b));
    // Run again on a complete copy: nothing copied, still equal.
    let again = migrate(&*a, &*b, 7, &mut Quiet).unwrap();
    assert!(again.verified() && again.copied == 0);

    // A target that lost events in the middle (first and newest ours, the rest not):
    // the check finds it, says where, and the target gets no cursors.
    let holed = fresh();
    for s in a.status().unwrap() {
        holed.source(&s.name, &s.address).unwrap();
    }
    holed.append_copied(&[first[0].clone(), first[9].clone()]).unwrap();
    let report = migrate(&*a, &*holed, 7, &mut Quiet).unwrap();
    assert!(!report.verified());
    assert_ne!(report.source_checksum, report.target_checksum);
    let differences = report.differences().join("; ");
    assert!(differences.contains("events: 35 in the source, 27 in the target"), "{differences}");
    assert!(differences.contains(&first[1].event.id), "names the first event that differs: {differences}");
    assert_eq!(holed.consumer(ALERTS_CONSUMER).unwrap(), None, "no state loaded");
    assert!(holed.status().unwrap().iter().all(|s| s.cursor.is_none()), "no cursor: nothing looks synced");

    let other = fresh();
    source(&*other, "acme").page(&[ev("z1", "2024-02-01T00:00:00Z")]);
    let before = events(&*other);
    match migrate(&*a, &*other, 7, &mut Quiet) {
        Err(MigrateError::DifferentArchive(_)) => {}
        other => panic!("a target with other events must be refused, got {other:?}"),
    }
    assert_eq!(events(&*other), before, "untouched");
    let named = fresh();
    named.source("elsewhere", "https://tfe.example").unwrap();
    assert!(matches!(migrate(&*a, &*named, 7, &mut Quiet), Err(MigrateError::DifferentArchive(_))));
}
