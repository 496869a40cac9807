use super::*;
use serde_json::value::RawValue;
use tfaudit_model::AuditEvent;
use tfaudit_store::{ALERTS_CONSUMER, Pattern};

fn event(id: &str, t: &str, actor: &str, name: &str, rtype: &str, action: &str) -> AuditEvent {
    let text = format!(
        r#"{{"id":"{id}","version":"0","type":"Resource","timestamp":"{t}","auth":{{"accessor_id":"{actor}","description":"{name}","type":"Client","impersonator_id":null,"organization_id":"org-1"}},"request":{{"id":null}},"resource":{{"id":"ws-{id}","type":"{rtype}","action":"{action}","meta":null}}}}"#
    );
    AuditEvent::parse(&RawValue::from_string(text).unwrap()).unwrap()
}

fn walk(next_page: u64) -> Walk {
    Walk {
        since: None,
        next_page,
        page_size: 1000,
        newest: None,
        oldest: None,
        gap_from: None,
        started_at: Timestamp::now(),
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("sub/archive.db"), OpenMode::CreateIfMissing).unwrap();
    (dir, store)
}

fn store(s: &SqliteStore, source: &Source, run: i64, events: &[AuditEvent]) -> PageOutcome {
    s.store_page(&PageWrite { source_id: source.id, run_id: run, pages: 1, events, rejects: &[], walk: &walk(2) })
        .unwrap()
}

/// Every event's text, oldest first.
fn all_raw(s: &SqliteStore) -> Vec<String> {
    let mut raw = Vec::new();
    s.events(&EventFilter::default(), Order::OldestFirst, None, &mut |e| {
        raw.push(e.event.raw);
        Ok(())
    })
    .unwrap();
    raw
}

fn all_ids(s: &SqliteStore, filter: &EventFilter) -> Vec<String> {
    let mut ids = Vec::new();
    s.events(filter, Order::OldestFirst, None, &mut |e| {
        ids.push(e.event.id);
        Ok(())
    })
    .unwrap();
    ids
}

#[test]
fn file_and_folder_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _s) = open();
    let mode = std::fs::metadata(dir.path().join("sub/archive.db")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(dir.path().join("sub")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let wal = std::fs::metadata(dir.path().join("sub/archive.db-wal")).unwrap().permissions().mode();
    assert_eq!(wal & 0o777, 0o600, "SQLite gives the WAL the database's mode");
}

#[test]
fn reading_a_missing_archive_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = SqliteStore::open(&dir.path().join("none.db"), OpenMode::MustExist).unwrap_err();
    assert!(e.to_string().contains("run `tfaudit sync` first"), "{e}");
    assert!(!dir.path().join("none.db").exists());
}

#[test]
fn a_file_that_is_not_an_archive_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let e = SqliteStore::open(&path, OpenMode::MustExist).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
}

#[test]
fn reopening_keeps_everything_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let s = SqliteStore::open(&path, OpenMode::CreateIfMissing).unwrap();
        let src = s.source("acme", "https://app.terraform.io").unwrap();
        let run = s.start_run(src.id, Timestamp::now()).unwrap();
        store(&s, &src, run, &[event("a", "2024-01-01T00:00:00Z", "user-1", "ann", "run", "apply")]);
    }
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    assert_eq!(all_ids(&s, &EventFilter::default()), ["a"]);
}

#[test]
fn each_event_is_stored_once_by_id() {
    let (_d, s) = open();
    let src = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let a = event("a", "2024-01-01T00:00:00Z", "user-1", "ann", "run", "apply");
    let b = event("b", "2024-01-01T00:00:00Z", "user-1", "ann", "run", "apply");
    assert_eq!(store(&s, &src, run, &[a.clone(), b.clone()]), PageOutcome { inserted: 2, duplicates: 0, rejected: 0 });
    assert_eq!(store(&s, &src, run, &[b, a.clone(), a]), PageOutcome { inserted: 0, duplicates: 3, rejected: 0 });
    assert_eq!(all_ids(&s, &EventFilter::default()), ["a", "b"]);
    let st = &s.status().unwrap()[0];
    assert_eq!(st.events, 2);
    assert_eq!(st.organization_id.as_deref(), Some("org-1"));
    let run = st.last_run.as_ref().unwrap();
    assert_eq!((run.tally.pages, run.tally.new_events, run.tally.duplicates), (2, 2, 3));
}

/// The index by time holds an id's last 4 bytes: ids that share them within a second
/// are told apart by the whole id, both when stored and when looked up; and a copy of
/// an event the archive holds is refused.
#[test]
fn ids_that_share_their_last_bytes_are_told_apart_and_a_copy_of_one_there_is_refused() {
    use tfaudit_store::Transfer;
    let (_d, s) = open();
    let src = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let ids = [
        "ae66e491-db59-457c-8445-9c908ee726ae",
        "ae66e491-db59-457c-8445-1c908ee726ae",
        "be66e491-db59-457c-8445-9c908ee726ae",
        "1-abcd",
        "2-abcd",
        "abcd",
    ];
    let hour = |id: &str| event(id, "2024-01-01T00:10:00Z", "user-1", "ann", "run", "apply");
    let events: Vec<AuditEvent> = ids.iter().map(|id| hour(id)).collect();
    assert_eq!(store(&s, &src, run, &events).inserted, 6);
    // The same id in another second is another event (its time never changes); in the
    // same second with another fraction, the same.
    let later = event(ids[0], "2024-01-01T00:10:01Z", "user-1", "ann", "run", "apply");
    assert_eq!(store(&s, &src, run, std::slice::from_ref(&later)).inserted, 1);
    let fraction = event(ids[0], "2024-01-01T00:10:00.250Z", "user-1", "ann", "run", "apply");
    assert_eq!(store(&s, &src, run, std::slice::from_ref(&fraction)).duplicates, 1);
    let again: Vec<AuditEvent> = events.iter().rev().cloned().collect();
    assert_eq!(store(&s, &src, run, &again), PageOutcome { inserted: 0, duplicates: 6, rejected: 0 });
    for (n, id) in ids.iter().enumerate().skip(1) {
        assert_eq!(s.event(id).unwrap().unwrap().event.raw, events[n].raw, "{id}");
    }
    assert_eq!(s.event("ae66e491-db59-457c-8445-2c908ee726ae").unwrap(), None);
    assert_eq!(s.event("bcd").unwrap(), None);
    let there = s.event("2-abcd").unwrap().unwrap();
    let err = s.append_copied(&[there]).unwrap_err();
    assert!(err.to_string().contains(r#"event "2-abcd" is in the archive already"#), "{err}");
    assert_eq!(s.status().unwrap()[0].events, 7, "nothing of the refused copy is kept");
}

/// A duplicate is the same id within the same second: at the ends of what the archive
/// holds, the second counts, not the millisecond, and an event a write stored counts
/// from the event after it in the same write.
#[test]
fn duplicates_are_found_at_the_ends_of_the_archives_span_and_within_one_write() {
    let (_d, s) = open();
    let src = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let at = |t: &str| event("e-1", t, "user-1", "ann", "run", "apply");
    let twice = [at("2024-01-01T00:10:00.250Z"), at("2024-01-01T00:10:00.250Z")];
    assert_eq!(store(&s, &src, run, &twice), PageOutcome { inserted: 1, duplicates: 1, rejected: 0 });
    for (t, inserted) in [
        ("2024-01-01T00:10:00.000Z", 0),
        ("2024-01-01T00:10:00.999Z", 0),
        ("2024-01-01T00:09:59.999Z", 1),
        ("2024-01-01T00:10:01.000Z", 1),
    ] {
        assert_eq!(store(&s, &src, run, &[at(t)]).inserted, inserted, "{t}");
    }
    let other = event("e-2", "2024-01-01T00:10:00.500Z", "user-1", "ann", "run", "apply");
    assert_eq!(store(&s, &src, run, std::slice::from_ref(&other)).inserted, 1);
    assert_eq!(s.status().unwrap()[0].events, 4);
    // Above the archive's span, within one write: another id in the same second is
    // another event, and a copy of one the write stored is a duplicate, however far
    // apart in the write.
    let later = |id: &str, t: &str| event(id, t, "user-1", "ann", "run", "apply");
    let write = [
        later("e-3", "2024-01-02T00:00:00.100Z"),
        later("e-4", "2024-01-02T00:00:00.900Z"),
        later("e-5", "2024-01-02T00:00:01.000Z"),
        later("e-3", "2024-01-02T00:00:00.100Z"),
        later("e-4", "2024-01-02T00:00:00.000Z"),
    ];
    assert_eq!(store(&s, &src, run, &write), PageOutcome { inserted: 3, duplicates: 2, rejected: 0 });
    assert_eq!(s.status().unwrap()[0].events, 7);
}

#[test]
fn the_raw_text_comes_back_byte_for_byte() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let text = "{\"id\":\"u\",\"timestamp\":\"2024-01-01T00:00:00.000Z\",\"version\":\"0\",\"x\":1.50e3,\"s\":\"日本 \\u001b[31m \\u0000\"}";
    let e = AuditEvent::parse(&RawValue::from_string(text.into()).unwrap()).unwrap();
    store(&s, &src, run, &[e]);
    assert_eq!(s.event("u").unwrap().unwrap().event.raw, text);
}

#[test]
fn the_cursor_never_moves_backwards_and_the_walk_is_cleared() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    store(&s, &src, run, &[]);
    assert_eq!(s.source("acme", "x").unwrap().walk.unwrap().next_page, 2);
    let late: Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
    let early: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
    s.finish_walk(src.id, Some(late), None, Some(late)).unwrap();
    s.finish_walk(src.id, Some(early), None, None).unwrap();
    s.finish_walk(src.id, None, None, None).unwrap();
    let src = s.source("acme", "x").unwrap();
    assert_eq!(src.cursor, Some(late));
    assert_eq!(src.reconciled, Some(late), "kept when a walk was not a reconcile");
    assert_eq!(src.walk, None);
}

#[test]
fn rejects_are_kept_once_with_their_reason() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let r = tfaudit_model::RejectedEvent { raw: "\"junk\"".into(), reason: "not a JSON object".into() };
    for _ in 0..3 {
        s.store_page(&PageWrite {
            source_id: src.id,
            run_id: run,
            pages: 1,
            events: &[],
            rejects: std::slice::from_ref(&r),
            walk: &walk(2),
        })
        .unwrap();
    }
    let rejects = s.rejects(10).unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].times_seen, 3);
    assert_eq!(rejects[0].reason, "not a JSON object");
    assert_eq!(s.status().unwrap()[0].rejects, 1);
}

#[test]
fn filters() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    store(
        &s,
        &src,
        run,
        &[
            event("1", "2024-01-01T00:00:00Z", "user-A", "Ann", "run", "apply"),
            event("2", "2024-01-02T00:00:00Z", "user-B", "bob%_", "authentication_token", "create"),
            event("3", "2024-01-03T00:00:00Z", "team-C", "ci", "run", "cancel"),
        ],
    );
    let f = |edit: &dyn Fn(&mut EventFilter)| {
        let mut filter = EventFilter::default();
        edit(&mut filter);
        all_ids(&s, &filter)
    };
    assert_eq!(f(&|x| x.actor = Some(Pattern::new("ann"))), ["1"], "names match case-insensitively");
    assert_eq!(f(&|x| x.actor = Some(Pattern::new("user-*"))), ["1", "2"]);
    assert_eq!(f(&|x| x.actor = Some(Pattern::new("bob%_"))), ["2"], "SQL wildcards in a name are literal");
    assert_eq!(f(&|x| x.actor = Some(Pattern::new("bob"))), Vec::<String>::new());
    assert_eq!(f(&|x| x.resource_type = Some(Pattern::new("run"))), ["1", "3"]);
    assert_eq!(f(&|x| x.action = Some(Pattern::new("c*"))), ["2", "3"]);
    assert_eq!(f(&|x| x.resource_id = Some(Pattern::new("ws-2"))), ["2"]);
    assert_eq!(f(&|x| x.org = Some(Pattern::new("org-1"))), ["1", "2", "3"]);
    assert_eq!(f(&|x| x.org = Some(Pattern::new("acme"))), ["1", "2", "3"]);
    assert_eq!(f(&|x| x.org = Some(Pattern::new("other"))), Vec::<String>::new());
    assert_eq!(
        f(&|x| {
            x.since = Some("2024-01-02T00:00:00Z".parse().unwrap());
            x.until = Some("2024-01-03T00:00:00Z".parse().unwrap());
        }),
        ["2"],
        "since is inclusive, until exclusive"
    );
    assert_eq!(f(&|x| x.actor = Some(Pattern::new("'; DROP TABLE events; --"))), Vec::<String>::new());
    assert_eq!(f(&|x| x.text = Some("BOB%_".into())), ["2"], "free text, case-insensitive, wildcards literal");
    assert_eq!(f(&|x| x.text = Some("ws-3".into())), ["3"]);
    assert_eq!(f(&|x| x.text = Some("%".into())), ["2"]);
    let second: Timestamp = "2024-01-02T00:00:00Z".parse().unwrap();
    let seq_of_2 = s.event("2").unwrap().unwrap().seq;
    assert_eq!(f(&|x| x.before = Some((second, seq_of_2))), ["1"], "keyset: strictly before (time, seq)");
    assert_eq!(f(&|x| x.before = Some((second, seq_of_2 + 1))), ["1", "2"]);
    assert_eq!(all_ids(&s, &EventFilter::default()).len(), 3);
    let mut newest = Vec::new();
    s.events(&EventFilter::default(), Order::NewestFirst, Some(2), &mut |e| {
        newest.push(e.event.id);
        Ok(())
    })
    .unwrap();
    assert_eq!(newest, ["3", "2"]);
}

#[test]
fn summaries_from_hourly_counts_equal_counting_every_event() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let mut events = Vec::new();
    let start: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
    for i in 0..2000i64 {
        let t = start + jiff::SignedDuration::from_secs(i * 397);
        let kinds = [("run", "apply"), ("var", "update"), ("authentication_token", "create")];
        let (rtype, action) = kinds[(i % 3) as usize];
        events.push(event(
            &format!("e{i}"),
            &t.to_string(),
            &format!("user-{}", i % 7),
            &format!("u{}", i % 7),
            rtype,
            action,
        ));
    }
    for chunk in events.chunks(300) {
        store(&s, &src, run, chunk);
    }
    for (since, until) in [
        (None, None),
        (Some("2024-01-02T03:17:11Z"), Some("2024-01-05T19:01:00Z")),
        (Some("2024-01-02T03:00:00Z"), Some("2024-01-02T05:00:00Z")),
        (Some("2024-01-02T03:10:00Z"), Some("2024-01-02T03:50:00Z")),
        (Some("2024-01-03T00:00:00Z"), None),
    ] {
        let mut filter = EventFilter {
            since: since.map(|t| t.parse().unwrap()),
            until: until.map(|t| t.parse().unwrap()),
            ..EventFilter::default()
        };
        let fast = s.summary(&filter, 100).unwrap();
        // A filter that matches every event forces the path that counts events one by one.
        filter.actor = Some(Pattern::new("*"));
        let slow = s.summary(&filter, 100).unwrap();
        assert_eq!(fast.total, slow.total, "{since:?}..{until:?}");
        assert_eq!(fast.by_kind, slow.by_kind);
        assert_eq!(fast.top_actors, slow.top_actors);
        assert_eq!(fast.per_day, slow.per_day);
        assert_eq!(fast.per_hour, slow.per_hour);
        assert_eq!(fast.per_hour.iter().map(|h| h.count).sum::<u64>(), fast.total);
        assert_eq!(fast.total, all_ids(&s, &EventFilter { actor: None, ..filter }).len() as u64);
    }
    let all = s.summary(&EventFilter::default(), 3).unwrap();
    assert_eq!(all.total, 2000);
    assert_eq!(all.top_actors.len(), 3);
    assert_eq!(all.top_actors[0].description.as_deref(), Some("u0"));
}

/// The plans that keep queries fast on a large archive: a filter on an actor, a kind
/// or a resource reads its posting list, newest bucket first, sorting one bucket at a
/// time (so that a limit stops it early); a filter on time alone walks the time index.
#[test]
fn queries_use_their_indexes() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    store(&s, &src, run, &[event("a", "2024-01-01T00:00:00Z", "user-1", "ann", "run", "apply")]);
    // A first backfill builds some indexes when its walk ends.
    s.finish_walk(src.id, None, None, None).unwrap();
    let conn = s.lock();
    let plan = |filter: &EventFilter| -> String {
        let h = hours(&conn, filter.since.map(ms), filter.until.map(ms)).unwrap();
        let mut w = where_clause(filter, filter.since.map(ms), filter.until.map(ms));
        let access = access(&conn, filter, Some(100), h, tfaudit_store::Order::NewestFirst, &mut w).unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT e.seq FROM {} WHERE {} ORDER BY {}e.ts_ms DESC, e.seq DESC LIMIT 100",
            access.from, w.sql, access.order
        );
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt.query_map(&*bound(&w, access.buckets.first(), &[]), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let since = Some("2023-12-25T00:00:00Z".parse().unwrap());
    let by_list = |p: &str| {
        assert!(p.contains("SEARCH p USING PRIMARY KEY (list=? AND key=? AND bucket>? AND bucket<?)"), "{p}");
        assert!(p.contains("SEARCH e USING INTEGER PRIMARY KEY (rowid=?)"), "{p}");
        assert!(p.contains("USE TEMP B-TREE FOR LAST 2 TERMS OF ORDER BY"), "one bucket sorted at a time: {p}");
    };
    by_list(&plan(&EventFilter { resource_id: Some(Pattern::new("ws-a")), ..EventFilter::default() }));
    by_list(&plan(&EventFilter { actor: Some(Pattern::new("ann")), since, ..EventFilter::default() }));
    by_list(&plan(&EventFilter {
        resource_type: Some(Pattern::new("run")),
        action: Some(Pattern::new("apply")),
        ..EventFilter::default()
    }));
    let p = plan(&EventFilter { since, ..EventFilter::default() });
    assert!(p.contains("events_by_time"), "{p}");
    drop(conn);
    assert_eq!(s.event("a").unwrap().unwrap().event.id, "a");
    assert_eq!(s.event("zz").unwrap(), None);
}

#[test]
fn alert_start_point_is_fixed_when_the_first_walk_completes() {
    let (_d, s) = open();
    let a = s.source("a", "https://a").unwrap();
    let b = s.source("b", "https://b").unwrap();
    let run = s.start_run(a.id, Timestamp::now()).unwrap();
    store(&s, &a, run, &[event("1", "2026-11-01T10:00:00Z", "u", "n", "run", "apply")]);
    let starts = |s: &SqliteStore| s.alert_start_points().unwrap();
    assert_eq!(starts(&s), [("a".to_owned(), None), ("b".to_owned(), None)], "a backfill in progress is history");
    s.finish_walk(a.id, Some(Timestamp::now()), None, None).unwrap();
    assert_eq!(starts(&s)[0], ("a".to_owned(), Some(1)));
    // Later walks never move it.
    store(&s, &a, run, &[event("2", "2026-11-01T10:00:01Z", "u", "n", "run", "apply")]);
    s.finish_walk(a.id, Some(Timestamp::now()), None, None).unwrap();
    assert_eq!(starts(&s)[0], ("a".to_owned(), Some(1)));
    // An organization added later starts at its own backfill's end.
    let run_b = s.start_run(b.id, Timestamp::now()).unwrap();
    store(&s, &b, run_b, &[event("3", "2026-11-01T09:00:00Z", "v", "n", "run", "apply")]);
    s.finish_walk(b.id, None, None, None).unwrap();
    assert_eq!(starts(&s)[1], ("b".to_owned(), Some(3)));
}

#[test]
fn seen_values_up_to_leave_out_values_first_stored_later() {
    let (_d, s) = open();
    let a = s.source("a", "https://a").unwrap();
    let run = s.start_run(a.id, Timestamp::now()).unwrap();
    store(&s, &a, run, &[event("1", "2026-11-01T10:00:00Z", "user-old", "n", "run", "apply")]);
    store(&s, &a, run, &[event("2", "2026-11-01T09:00:00Z", "user-new", "n", "team", "create")]);
    store(&s, &a, run, &[event("3", "2026-11-01T10:00:02Z", "user-old", "n", "run", "apply")]);
    let seen = s.seen_values_up_to(1).unwrap();
    assert_eq!(seen.accessors, ["user-old"]);
    assert_eq!(seen.kinds, [("run".to_owned(), "apply".to_owned())]);
}

#[test]
fn a_misconfigured_destination_is_marked_until_a_delivery_succeeds() {
    let (_d, s) = open();
    let a = s.source("a", "https://a").unwrap();
    let run = s.start_run(a.id, Timestamp::now()).unwrap();
    store(&s, &a, run, &[event("1", "2026-11-01T10:00:00Z", "u", "n", "run", "apply")]);
    let alert = |key: &str| AlertWrite {
        alert: tfaudit_store::Alert {
            key: key.into(),
            rule: "r".into(),
            severity: "high".into(),
            group: None,
            title: "t".into(),
            text: "x".into(),
            source: "a".into(),
            event_seq: 1,
            event_id: "1".into(),
            event_time: Timestamp::now(),
            count: 1,
            window_start: None,
            window_end: None,
            link: None,
            event: "{}".into(),
        },
        destinations: vec!["hook".into(), "slack".into()],
    };
    s.commit_alerts(None, &ConsumerPosition { position: 1, state: "{}".into() }, &[alert("k1"), alert("k2")]).unwrap();
    let now = Timestamp::now();
    let lease = std::time::Duration::from_secs(5);
    let job = s.claim_delivery("hook", now, now, lease).unwrap().unwrap();
    // One at a time: the claimed one is not handed out again while its lease lasts.
    let other = s.claim_delivery("hook", now, now, lease).unwrap().unwrap();
    assert_ne!(job.delivery_id, other.delivery_id);
    assert!(s.claim_delivery("hook", now, now, lease).unwrap().is_none());
    let later = now + jiff::SignedDuration::from_secs(3600);
    s.finish_delivery(&job, &DeliveryOutcome::Misconfigured { error: "401".into(), retry_at: later }).unwrap();
    let status = s.alert_status(0).unwrap();
    assert_eq!(status.misconfigured.len(), 1);
    assert_eq!((status.misconfigured[0].name.as_str(), status.failing), ("hook", 1));
    // A probe claims it before its retry is due.
    let after_lease = now + jiff::SignedDuration::from_secs(10);
    assert!(s.claim_delivery("hook", after_lease, after_lease, lease).unwrap().is_some(), "the other one");
    let probe = s.claim_delivery("hook", after_lease, Timestamp::MAX, lease).unwrap().unwrap();
    assert_eq!(probe.delivery_id, job.delivery_id);
    s.finish_delivery(&probe, &DeliveryOutcome::Delivered).unwrap();
    assert!(s.alert_status(0).unwrap().misconfigured.is_empty());
}

/// An archive made before alert start points existed (schema 3).
fn archive_before_start_points(path: &std::path::Path, engine_at: Option<i64>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in &crate::schema::MIGRATIONS[..3] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 3).unwrap();
    conn.execute_batch(
        "INSERT INTO sources (id, name, address, cursor_ms, created_ms) VALUES (1, 'done', 'https://a', 1, 0), (2, 'backfilling', 'https://b', NULL, 0);
         INSERT INTO events (seq, id, source_id, ts_ms, raw, ingested_ms) VALUES (1, 'e1', 1, 1, '{}', 0), (2, 'e2', 1, 1, '{}', 0), (3, 'e3', 2, 1, '{}', 0);",
    )
    .unwrap();
    if let Some(seq) = engine_at {
        conn.execute("INSERT INTO alert_consumer (id, seq, state, updated_ms) VALUES (1, ?1, '{}', 0)", [seq]).unwrap();
    }
}

#[test]
fn an_older_archive_keeps_where_its_engine_was_and_history_stays_unalerted() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.db");
    archive_before_start_points(&ran, Some(1));
    let s = SqliteStore::open(&ran, OpenMode::MustExist).unwrap();
    assert_eq!(
        s.alert_start_points().unwrap(),
        [("backfilling".to_owned(), None), ("done".to_owned(), Some(1))],
        "the engine's cursor: nothing it had not evaluated is skipped"
    );
    let never = dir.path().join("never.db");
    archive_before_start_points(&never, None);
    let s = SqliteStore::open(&never, OpenMode::MustExist).unwrap();
    assert_eq!(
        s.alert_start_points().unwrap(),
        [("backfilling".to_owned(), None), ("done".to_owned(), Some(3))],
        "the newest event: history is not alerted on"
    );
}

/// An archive at schema 4, the last with the single-row `alert_consumer` table, with
/// the engine at `engine_at` holding `state`.
fn archive_at_schema_4(path: &std::path::Path, engine_at: Option<(i64, &str)>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in &crate::schema::MIGRATIONS[..4] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 4).unwrap();
    conn.execute_batch(
        "INSERT INTO sources (id, name, address, cursor_ms, created_ms, alert_start_seq) VALUES (1, 'a', 'https://a', 1, 0, 1);
         INSERT INTO events (seq, id, source_id, ts_ms, raw, ingested_ms) VALUES (1, 'e1', 1, 1, '{}', 0), (2, 'e2', 1, 1, '{}', 0);",
    )
    .unwrap();
    if let Some((seq, state)) = engine_at {
        conn.execute(
            "INSERT INTO alert_consumer (id, seq, state, updated_ms) VALUES (1, ?1, ?2, 0)",
            rusqlite::params![seq, state],
        )
        .unwrap();
    }
}

#[test]
fn an_archive_from_before_named_consumers_keeps_its_alert_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.db");
    archive_at_schema_4(&ran, Some((2, r#"{"windows":[1]}"#)));
    let s = SqliteStore::open(&ran, OpenMode::MustExist).unwrap();
    let kept = ConsumerPosition { position: 2, state: r#"{"windows":[1]}"#.into() };
    assert_eq!(s.consumer(ALERTS_CONSUMER).unwrap(), Some(kept.clone()));
    assert_eq!(s.alert_status(0).unwrap().cursor, Some(2));
    assert_eq!(s.consumer("forwarder").unwrap(), None, "only the alert engine had a cursor");
    // The engine goes on from where it was: a commit expecting the old position works,
    // one expecting a fresh start does not.
    let next = ConsumerPosition { position: 2, state: "{}".into() };
    assert_eq!(s.commit_alerts(None, &next, &[]).unwrap(), CommitOutcome::Conflict);
    assert_eq!(s.commit_alerts(Some(2), &next, &[]).unwrap(), CommitOutcome::Committed { new_alerts: 0 });
    drop(s);
    let conn = rusqlite::Connection::open(&ran).unwrap();
    let old: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'alert_consumer'", [], |r| r.get(0)).unwrap();
    assert_eq!(old, 0, "the single-row table is gone");

    let never = dir.path().join("never.db");
    archive_at_schema_4(&never, None);
    let s = SqliteStore::open(&never, OpenMode::MustExist).unwrap();
    assert_eq!(s.consumer(ALERTS_CONSUMER).unwrap(), None, "an engine that never ran starts empty");
    assert_eq!(s.alert_status(0).unwrap().cursor, None);
}

#[test]
fn archive_filters_match_a_hostile_glob_over_a_large_field_exactly() {
    // `*` + 2,000 × `A` + `B` against 5 MB fields of `A`s: SQLite's own GLOB and LIKE
    // backtrack over such input for seconds; every filter pattern is matched linearly.
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let big = "A".repeat(5_000_000);
    let events: Vec<AuditEvent> = [("1", big.clone()), ("2", format!("{big}B"))]
        .into_iter()
        .map(|(id, value)| {
            let text = format!(
                r#"{{"id":"{id}","version":"0","type":"Resource","timestamp":"2024-01-0{id}T00:00:00Z","auth":{{"accessor_id":"user-{value}","description":"{value}","type":"Client","organization_id":"org-{value}"}},"request":{{"id":null}},"resource":{{"id":"{value}","type":"{value}","action":"{value}","meta":null}}}}"#
            );
            AuditEvent::parse(&RawValue::from_string(text).unwrap()).unwrap()
        })
        .collect();
    store(&s, &src, run, &events);
    let hostile = Pattern::new(format!("*{}B", "A".repeat(2_000)));
    let f = |edit: &dyn Fn(&mut EventFilter)| {
        let mut filter = EventFilter::default();
        edit(&mut filter);
        all_ids(&s, &filter)
    };
    assert_eq!(f(&|x| x.actor = Some(hostile.clone())), ["2"]);
    assert_eq!(f(&|x| x.resource_type = Some(hostile.clone())), ["2"]);
    assert_eq!(f(&|x| x.action = Some(hostile.clone())), ["2"]);
    assert_eq!(f(&|x| x.resource_id = Some(hostile.clone())), ["2"]);
    assert_eq!(f(&|x| x.org = Some(Pattern::new(format!("org-*{}B", "a".repeat(2_000))))), ["2"]);
    assert_eq!(f(&|x| x.text = Some(format!("{}B", "a".repeat(2_000)))), ["2"]);
    // A literal prefix narrows by index and the rest is still the glob's.
    assert_eq!(f(&|x| x.resource_type = Some(Pattern::new(format!("AAA*{}B", "A".repeat(2_000))))), ["2"]);
    assert_eq!(f(&|x| x.resource_type = Some(Pattern::new("AAA?"))), Vec::<String>::new());
}

/// Runs `f` on its own thread and fails the test if it has not finished within
/// `limit`, so that a pool which blocks forever fails instead of hanging the run.
fn within<T: Send + 'static>(limit: std::time::Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the call did not finish in time: it hangs")
}

#[test]
fn reader_pool_gives_back_the_slot_of_a_failed_open() {
    let (dir, store) = open();
    let store = std::sync::Arc::new(store);
    let source = store.source("acme", "x").unwrap();
    let run = store.start_run(source.id, Timestamp::now()).unwrap();
    self::store(&store, &source, run, &[event("e1", "2026-01-01T00:00:00Z", "user-1", "alice", "workspace", "create")]);
    // More failed opens than the pool has slots: each one that kept its slot would
    // leave the next reader waiting for a connection that is never returned.
    store.fail_reader_opens.store(READERS * 2, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..READERS * 2 {
        let s = store.clone();
        let failed = within(std::time::Duration::from_secs(10), move || s.event("e1").map(|_| ()));
        assert!(failed.is_err(), "the open was made to fail");
    }
    // Every slot free again: as many readers as the pool holds, all at once, and
    // then a query through them.
    let s = store.clone();
    within(std::time::Duration::from_secs(10), move || {
        let held: Vec<_> = (0..READERS).map(|_| s.read().unwrap()).collect();
        drop(held);
        assert!(s.event("e1").unwrap().is_some());
    });
    drop(dir);
}

#[test]
fn reader_pool_waits_for_a_free_connection_at_most_its_bound() {
    let (_dir, mut store) = open();
    store.reader_wait = std::time::Duration::from_millis(200);
    let store = std::sync::Arc::new(store);
    let s = store.clone();
    within(std::time::Duration::from_secs(10), move || {
        let held: Vec<_> = (0..READERS).map(|_| s.read().unwrap()).collect();
        let err = s.read().err().expect("a full pool past its bound is an error");
        assert!(err.to_string().contains("no read connection"), "{err}");
        drop(held);
        assert!(s.read().is_ok(), "a returned reader serves the next caller");
    });
}

/// An archive at schema 6, before dead letters: opening it adds them and the seq index
/// that lag is counted on, and the count is exact over seqs with holes.
#[test]
fn an_archive_from_before_dead_letters_counts_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("six.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &crate::schema::MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute_batch(
            "INSERT INTO sources (id, name, address, created_ms) VALUES (1, 'a', 'https://a', 0);
             INSERT INTO events (seq, id, source_id, ts_ms, raw, ingested_ms) VALUES (1, 'e1', 1, 1, '{}', 0), (2, 'e2', 1, 1, '{}', 0), (5, 'e5', 1, 1, '{}', 0);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    assert_eq!([0, 1, 2, 4, 5].map(|after| s.count_events_after(after).unwrap()), [3, 2, 1, 1, 0]);
    let letter = DeadLetter {
        consumer: "sink:siem".into(),
        seq: 5,
        event_id: "e5".into(),
        reason: "too long".into(),
        at: Timestamp::from_millisecond(1).unwrap(),
        attempts: 1,
    };
    s.add_dead_letters(std::slice::from_ref(&letter)).unwrap();
    assert_eq!(s.dead_letters("sink:siem", 0, 10).unwrap(), [letter]);
}

/// A consumer's lag is counted on the tree's leaves: exactly the events after a seq,
/// across blocks of leaves, with events the tree does not hold yet, after retention
/// removed a day whose seqs are spread among the others, and after it is put back.
#[test]
fn lag_is_counted_on_the_tree_less_what_retention_removed() {
    use tfaudit_store::{PruneOutcome, PruneRequest, Retention};
    let (_d, s) = open();
    let src = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let at = |day: u32, i: u32| format!("2024-01-0{day}T{:02}:{:02}:{:02}Z", i / 3600 % 24, i / 60 % 60, i % 60);
    let mut made = 0u32;
    let mut page = |day: Option<u32>, n: u32| -> Vec<AuditEvent> {
        made += n;
        (made - n..made)
            .map(|i| event(&format!("e{i}"), &at(day.unwrap_or(1 + i % 3), i), "user-1", "ann", "run", "apply"))
            .collect()
    };
    // Pages of three days' events in turn, so that each day's seqs are spread over the
    // tree's blocks (480 leaves each) and over every page.
    for i in 0..12 {
        store(&s, &src, run, &page(None, 100));
        // Each page archived at a time of its own, as pages a second apart would be.
        s.lock().execute("UPDATE ingest_times SET ms = ms + 1000 WHERE first_seq > ?1", [i * 100]).unwrap();
    }
    fn check(s: &SqliteStore, when: &str) {
        let c = s.read().unwrap();
        let seqs: Vec<i64> = c
            .prepare("SELECT seq FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        drop(c);
        let newest = *seqs.last().unwrap();
        for after in -1..=newest + 1 {
            let expected = (seqs.len() - seqs.partition_point(|s| *s <= after)) as u64;
            assert_eq!(s.count_events_after(after).unwrap(), expected, "{when}: after {after}");
        }
        for after in [0, 479, 480, 481, newest - 1] {
            assert_eq!(s.count_events_after(after).unwrap(), s.events_after(after, 10_000, &mut |_| Ok(())).unwrap());
        }
    }
    check(&s, "all in the tree");
    // Events the tree does not hold yet: one stored behind its back, so that later
    // pages do not grow the tree either, until a checkpoint catches up.
    s.lock()
        .execute("INSERT INTO events (id, source_id, ts_ms, raw) VALUES ('behind', ?1, 1704240000000, '{}')", [src.id])
        .unwrap();
    store(&s, &src, run, &page(Some(3), 50));
    let tree_last: i64 = s.read().unwrap().query_row("SELECT last_seq FROM tree_head", [], |r| r.get(0)).unwrap();
    assert_eq!(tree_last, 1200, "the tree stopped at the event stored behind its back");
    check(&s, "the tree behind");

    let mut day_one = Vec::new();
    let filter = EventFilter {
        since: Some("2024-01-01T00:00:00Z".parse().unwrap()),
        until: Some("2024-01-02T00:00:00Z".parse().unwrap()),
        ..EventFilter::default()
    };
    s.events(&filter, Order::OldestFirst, None, &mut |e| {
        day_one.push(e);
        Ok(())
    })
    .unwrap();
    day_one.sort_by_key(|e| e.seq);
    assert_eq!(day_one.len(), 400);
    let outcome = s
        .prune_day(&PruneRequest {
            source: "acme",
            day: "2024-01-01",
            from: filter.since.unwrap(),
            until: filter.until.unwrap(),
            events: 400,
            min_seq: day_one[0].seq,
            max_seq: day_one[399].seq,
            location: "/cold",
            path: "acme/2024-01-01",
            sha256: "0",
        })
        .unwrap();
    assert_eq!(outcome, PruneOutcome::Pruned(400));
    check(&s, "a day removed");
    // The same archive as schema 19 kept it, migrated again: the removed day's span is
    // read from its record.
    drop(s);
    let path = _d.path().join("sub/archive.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    a_row_each_has_its_ingest_time(&c);
    c.execute_batch("PRAGMA user_version = 19").unwrap();
    drop(c);
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    check(&s, "a day removed, migrated");
    // The events left are told they were archived 7 ms later than they were: the day
    // put back keeps each event's own time, and the events after each its own.
    fn times(s: &SqliteStore) -> Vec<(i64, String, Timestamp)> {
        let mut all = Vec::new();
        s.events_after(0, 10_000, &mut |e| {
            all.push((e.seq, e.event.id, e.ingested_at));
            Ok(())
        })
        .unwrap();
        all
    }
    let mut expected = times(&s);
    for (_, _, at) in &mut expected {
        *at = at.checked_add(jiff::SignedDuration::from_millis(7)).unwrap();
    }
    s.lock().execute("UPDATE ingest_times SET ms = ms + 7", []).unwrap();
    assert_eq!(times(&s), expected);
    assert_eq!(s.restore_day("acme", "2024-01-01", &day_one).unwrap(), 400);
    check(&s, "the day put back");
    expected.extend(day_one.iter().map(|e| (e.seq, e.event.id.clone(), e.ingested_at)));
    expected.sort();
    assert_eq!(times(&s), expected);
}

/// Past 500 events a dictionary is trained and later pages are stored compressed; a
/// second archive reads its own dictionaries, and every event — hostile text
/// included — comes back byte for byte, found by text search and by id.
#[test]
fn compressed_events_come_back_byte_for_byte_and_are_found() {
    let (dir, s) = open();
    let source = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(source.id, Timestamp::now()).unwrap();
    let names = ["ann", "bob \\u001b[31m", "zoë ✓", "nul\\u0000x", "'; DROP TABLE events; --"];
    let mut all = Vec::new();
    for page in 0..5 {
        let events: Vec<AuditEvent> = (0..1000)
            .map(|i| {
                let n = page * 1000 + i;
                event(
                    &format!("e{n:05}"),
                    &format!("2024-05-01T{:02}:{:02}:{:02}.000Z", n / 3600, (n / 60) % 60, n % 60),
                    &format!("user-{}", n % 7),
                    names[n % names.len()],
                    "run",
                    "apply",
                )
            })
            .collect();
        store(&s, &source, run, &events);
        all.extend(events);
    }
    let conn = rusqlite::Connection::open(dir.path().join("sub/archive.db")).unwrap();
    let (plain, dicts): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM events WHERE dict IS NULL), (SELECT count(*) FROM dictionaries)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((plain, dicts), (500, 1), "the first 500 as text, the rest compressed (trained within the page)");
    let compressed: i64 =
        conn.query_row("SELECT sum(length(raw)) FROM events WHERE dict IS NOT NULL", [], |r| r.get(0)).unwrap();
    let original: usize = all[500..].iter().map(|e| e.raw.len()).sum();
    assert!((compressed as usize) * 3 < original, "compressed {compressed} bytes of {original}");
    // A frame does not name its dictionary (the row does); one that does, as written
    // before, reads the same.
    let (frame, dict): (Vec<u8>, Vec<u8>) = conn
        .query_row(
            "SELECT e.raw, d.bytes FROM events e JOIN dictionaries d ON d.id = e.dict WHERE e.id = 'e04321'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Nor start with zstd's magic number.
    assert!(!frame.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]));
    let mut d = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap();
    d.set_parameter(zstd::zstd_safe::DParameter::Format(zstd::zstd_safe::FrameFormat::Magicless)).unwrap();
    let mut with_magic = vec![0x28, 0xB5, 0x2F, 0xFD];
    with_magic.extend_from_slice(&frame);
    assert_eq!(zstd::zstd_safe::get_dict_id_from_frame(&with_magic), None);
    // Nor does it repeat what the row keeps: the event's id, time and resource id are
    // marks.
    let text = d.decompress(&frame, 4096).unwrap();
    let (id, time, resource) = (&b"\"e04321\""[..], &b"\"2024-05-01T01:12:01.000Z\""[..], &b"\"ws-e04321\""[..]);
    for value in [id, time, resource] {
        assert!(all[4321].raw.as_bytes().windows(value.len()).any(|w| w == value));
        assert!(!text.windows(value.len()).any(|w| w == value), "{}", String::from_utf8_lossy(value));
    }
    assert_eq!(text[0], 11, "a frame with every mark");
    let older = zstd::bulk::Compressor::with_dictionary(1, &dict).unwrap().compress(all[4321].raw.as_bytes()).unwrap();
    assert!(zstd::zstd_safe::get_dict_id_from_frame(&older).is_some());
    conn.execute("UPDATE events SET raw = ?1 WHERE id = 'e04321'", [&older]).unwrap();
    drop(s);
    // Reopened: a new process's connections load the dictionary from the archive.
    let s = SqliteStore::open(&dir.path().join("sub/archive.db"), OpenMode::MustExist).unwrap();
    assert_eq!(all_raw(&s), all.iter().map(|e| e.raw.clone()).collect::<Vec<_>>());
    assert_eq!(s.event("e04321").unwrap().unwrap().event.raw, all[4321].raw);
    let filter = EventFilter { text: Some("zoË ✓".into()), ..EventFilter::default() };
    assert_eq!(all_ids(&s, &filter).len(), 1_000, "text search reads the compressed rows too");

    // An archive whose dictionary was trained with fewer marks (the first three, as
    // migrations 18 to 21 made them) gets one trained with all of them at its next
    // page, once; its older frames read as before.
    conn.execute("UPDATE dictionaries SET marked = 1", []).unwrap();
    drop(s);
    let s = SqliteStore::open(&dir.path().join("sub/archive.db"), OpenMode::MustExist).unwrap();
    for n in [5000, 5001] {
        let later = event(&format!("e{n}"), "2024-05-02T00:00:00.000Z", "user-1", "ann", "run", "apply");
        store(&s, &source, run, std::slice::from_ref(&later));
        all.push(later);
    }
    let marked: Vec<i64> = conn
        .prepare("SELECT marked FROM dictionaries ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(marked, [1, 3]);
    // `compact` makes the older frames again, with the new dictionary and marks.
    let mut after = 0;
    let mut total = 0;
    loop {
        let (done, reached) = s.compact(after, 700).unwrap();
        if done == 0 {
            break;
        }
        (total, after) = (total + done, reached);
    }
    assert_eq!(total, 5000, "500 kept as text and 4,500 frames with fewer marks");
    let by_dict: Vec<(i64, i64)> = conn
        .prepare("SELECT dict, count(*) FROM events GROUP BY dict")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(by_dict, [(2, 5002)]);
    assert_eq!(s.compact(0, 700).unwrap().0, 0, "nothing left");
    assert_eq!(all_raw(&s), all.iter().map(|e| e.raw.clone()).collect::<Vec<_>>());
}

/// Events whose strings and ids take every form the archive must keep exactly:
/// canonical UUIDs (stored packed), UUIDs in other spellings and ids that are not
/// UUIDs at all (stored as text, distinct from the packed one), hostile text in every
/// shared field, absent fields.
fn varied_events() -> Vec<AuditEvent> {
    let hostile = [
        "ann",
        "bob \u{1b}[31m",
        "zoë ✓",
        "nul\u{0}x",
        "'; DROP TABLE events; --",
        "glob*?[x]",
        "%_",
        "",
        "UPPER case",
    ];
    let ids = [
        "0f8fad5b-d9cb-469f-a165-70867728950e".to_owned(),
        "0F8FAD5B-D9CB-469F-A165-70867728950E".to_owned(),
        "0f8fad5bd9cb469fa16570867728950e".to_owned(),
        "{0f8fad5b-d9cb-469f-a165-70867728950e}".to_owned(),
        "e1".to_owned(),
        "'; DROP TABLE names; --".to_owned(),
        "42".to_owned(),
    ];
    let mut out = Vec::new();
    for i in 0..120usize {
        let id = if i < ids.len() { ids[i].clone() } else { format!("{:08x}-0000-4000-8000-{:012x}", i, i * 7) };
        let actor = hostile[i % hostile.len()];
        let description = hostile[(i / 3) % hostile.len()];
        let system = i % 11 == 5;
        let auth = if system {
            serde_json::json!({"accessor_id": null, "description": null, "type": "System", "organization_id": "org-1"})
        } else {
            serde_json::json!({
                "accessor_id": format!("user-{actor}"),
                "description": description,
                "type": if i % 4 == 0 { "Impersonated" } else { "Client" },
                "impersonator_id": if i % 4 == 0 { serde_json::json!(format!("admin-{}", hostile[i % 3])) } else { serde_json::Value::Null },
                "organization_id": if i % 9 == 0 { "org-2" } else { "org-1" },
            })
        };
        let request = match i % 5 {
            0 => serde_json::Value::Null,
            1 => serde_json::json!("not-a-uuid"),
            _ => serde_json::json!(format!("{:08x}-1111-4000-8000-{:012x}", i, i)),
        };
        let kinds = [("run", "apply"), ("var", "update"), ("run", "cancel"), ("workspace", "")];
        let (rtype, action) = kinds[i % kinds.len()];
        let resource = if action.is_empty() {
            serde_json::json!({"id": format!("ws-{}", hostile[i % hostile.len()]), "type": rtype, "action": null})
        } else {
            serde_json::json!({"id": format!("res-{i}"), "type": rtype, "action": action})
        };
        let t = Timestamp::from_second(1_704_067_200 + (i as i64) * 1_811).unwrap();
        let text = serde_json::json!({
            "id": id, "version": "0", "type": "Resource", "timestamp": t.to_string(),
            "auth": auth, "request": {"id": request}, "resource": resource,
        })
        .to_string();
        out.push(AuditEvent::parse(&RawValue::from_string(text).unwrap()).unwrap());
    }
    out
}

/// The filters whose answers must not depend on the layout.
fn varied_filters() -> Vec<EventFilter> {
    let p = |s: &str| Some(Pattern::new(s));
    let since = Some(Timestamp::from_second(1_704_067_200 + 30 * 1_811).unwrap());
    let until = Some(Timestamp::from_second(1_704_067_200 + 90 * 1_811 + 7).unwrap());
    let mut filters = vec![EventFilter::default(), EventFilter { since, until, ..EventFilter::default() }];
    for actor in ["user-ann", "USER-ANN", "user-*", "*ë*", "zoë ✓", "*\u{1b}*", "glob[*]*", "*[?]*", "%_", "nobody"]
    {
        filters.push(EventFilter { actor: p(actor), ..EventFilter::default() });
        filters.push(EventFilter { actor: p(actor), since, until, ..EventFilter::default() });
    }
    for (t, a) in [("run", "*"), ("run", "apply"), ("r*", "c*"), ("workspace", "*"), ("var", "update"), ("x*", "*")] {
        filters.push(EventFilter { resource_type: p(t), action: p(a), ..EventFilter::default() });
    }
    filters.push(EventFilter { resource_type: p("run"), ..EventFilter::default() });
    filters.push(EventFilter { action: p("c*"), since, ..EventFilter::default() });
    for r in ["res-17", "ws-zoë ✓", "ws-*", "res-1*", "ws-glob[*]?[[]x]"] {
        filters.push(EventFilter { resource_id: p(r), ..EventFilter::default() });
    }
    for o in ["org-2", "ORG-*", "acme", "other"] {
        filters.push(EventFilter { org: p(o), ..EventFilter::default() });
    }
    for t in ["zoË", "nul\\u0000", "DROP TABLE", "0f8fad5b"] {
        filters.push(EventFilter { text: Some(t.to_owned()), ..EventFilter::default() });
    }
    filters
}

/// Everything a store answers about `events`, as text: every filter's events (both
/// orders, and the newest few), each event by id, summaries, seen values, lag.
fn answers(s: &SqliteStore, events: &[AuditEvent]) -> Vec<String> {
    let mut out = Vec::new();
    for filter in varied_filters() {
        for (order, limit) in [(Order::OldestFirst, None), (Order::NewestFirst, Some(3))] {
            let mut got = Vec::new();
            s.events(&filter, order, limit, &mut |e| {
                got.push(format!("{} {:?} {}", e.seq, e.event, e.source));
                Ok(())
            })
            .unwrap();
            out.push(format!("{filter:?} {order:?} {limit:?}: {got:?}"));
        }
        out.push(format!("summary {filter:?}: {:?}", s.summary(&filter, 100).unwrap()));
    }
    for e in events {
        let found = s.event(&e.id).unwrap().map(|x| (x.seq, x.event));
        assert_eq!(found.as_ref().map(|f| &f.1), Some(e), "by id {:?}", e.id);
        out.push(format!("event {:?}: {found:?}", e.id));
    }
    out.push(format!("seen {:?}", s.seen_values(None).unwrap()));
    out.push(format!("seen before {:?}", s.seen_values(Some(events[60].timestamp)).unwrap()));
    for seq in [0, 1, 50, 119, 120] {
        out.push(format!("seen up to {seq} {:?}", s.seen_values_up_to(seq).unwrap()));
        out.push(format!("after {seq}: {}", s.count_events_after(seq).unwrap()));
    }
    let mut after = Vec::new();
    s.events_after(10, 1000, &mut |e| {
        after.push(format!("{} {:?}", e.seq, e.event));
        Ok(())
    })
    .unwrap();
    out.push(format!("events after 10: {after:?}"));
    out
}

/// Hostile strings and ids of every form go in and come back exactly, and every
/// filter finds them as their text says.
#[test]
fn hostile_strings_and_ids_of_any_form_come_back_and_filter_alike() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let events = varied_events();
    let outcome = store(&s, &src, run, &events);
    assert_eq!(outcome.inserted, 120, "ids that differ only in spelling are different events");
    assert_eq!(store(&s, &src, run, &events[..7]).duplicates, 7, "and each is found again as itself");
    let answers = answers(&s, &events);
    let ids = |filter: EventFilter| all_ids(&s, &filter).len();
    let p = |x: &str| Some(Pattern::new(x));
    // An actor pattern matches an accessor by its id, or by any description it was seen with.
    let by_description = |d: &str| {
        let accessors: Vec<_> =
            events.iter().filter(|e| e.auth_description.as_deref() == Some(d)).map(|e| e.accessor_id.clone()).collect();
        events.iter().filter(|e| e.accessor_id.is_some() && accessors.contains(&e.accessor_id)).count()
    };
    let by_accessor = |a: &str| events.iter().filter(|e| e.accessor_id.as_deref() == Some(a)).count();
    assert_eq!(ids(EventFilter { actor: p("user-zoë ✓"), ..EventFilter::default() }), by_accessor("user-zoë ✓"));
    assert_eq!(ids(EventFilter { actor: p("ZOË ✓"), ..EventFilter::default() }), by_description("zoë ✓"));
    assert!(by_description("zoë ✓") > 0);
    assert_eq!(ids(EventFilter { actor: p("user-glob*"), ..EventFilter::default() }), by_accessor("user-glob*?[x]"));
    assert!(by_accessor("user-glob*?[x]") > 0);
    assert_eq!(ids(EventFilter { actor: p("user-%_"), ..EventFilter::default() }), by_accessor("user-%_"));
    // The source took the first event's organization (org-2): org-1 is found by the
    // events' own column.
    assert_eq!(ids(EventFilter { org: p("org-2"), ..EventFilter::default() }), 120);
    assert_eq!(
        ids(EventFilter { org: p("ORG-1"), ..EventFilter::default() }),
        events.iter().filter(|e| e.organization_id.as_deref() == Some("org-1")).count()
    );
    assert_eq!(ids(EventFilter { resource_type: p("workspace"), ..EventFilter::default() }), 30);
    assert_eq!(
        ids(EventFilter { resource_type: p("workspace"), action: p("*"), ..EventFilter::default() }),
        0,
        "no action"
    );
    assert!(s.event("0F8FAD5B-D9CB-469F-A165-70867728950E").unwrap().is_some());
    assert!(s.event("0f8fad5b-d9cb-469f-a165-70867728950f").unwrap().is_none());
    assert!(answers.iter().any(|a| a.contains("\\u{1b}[31m")));
    let seen = s.seen_values(None).unwrap();
    assert_eq!(seen.impersonators.len(), 3);
    assert!(seen.kinds.contains(&("workspace".to_owned(), String::new())));
}

/// An archive of schema 10 (the layout before `names`) holding `events` as that
/// layout's write path stored them, with their rollups; the last seq taken by an event
/// since deleted, so that AUTOINCREMENT's memory is part of what must survive.
fn archive_at_schema_10(path: &std::path::Path, events: &[AuditEvent]) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    for sql in &crate::schema::MIGRATIONS[..10] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 10).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute("INSERT INTO sources (id, name, address, created_ms) VALUES (1, 'acme', 'x', 0)", []).unwrap();
    let mut rollups = tfaudit_store::rollup::Rollups::default();
    for e in events {
        tx.execute(
            "INSERT INTO events (id, source_id, organization_id, ts_ms, auth_type, accessor_id, auth_description,
                impersonator_id, request_id, resource_id, resource_type, resource_action, raw, ingested_ms, dict)
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 7, NULL)",
            rusqlite::params![
                e.id,
                e.organization_id,
                ms(e.timestamp),
                e.auth_type,
                e.accessor_id,
                e.auth_description,
                e.impersonator_id,
                e.request_id,
                e.resource_id,
                e.resource_type,
                e.resource_action,
                e.raw
            ],
        )
        .unwrap();
        rollups.add(1, e);
    }
    crate::rollup::write(&rollups, &tx).unwrap();
    let (oldest, newest) = (events.iter().map(|e| ms(e.timestamp)).min(), events.iter().map(|e| ms(e.timestamp)).max());
    tx.execute(
        "UPDATE sources SET event_count = ?1, oldest_ms = ?2, newest_ms = ?3, organization_id = ?4 WHERE id = 1",
        rusqlite::params![events.len() as i64, oldest, newest, events.first().and_then(|e| e.organization_id.clone())],
    )
    .unwrap();
    tx.execute_batch(
        "INSERT INTO events (seq, id, source_id, ts_ms, raw, ingested_ms) VALUES (500, 'gone', 1, 0, '{}', 0);
         DELETE FROM events WHERE seq = 500;",
    )
    .unwrap();
    tx.commit().unwrap();
}

/// Opening an archive of the old layout moves it to the compact one in place: every
/// answer is the one a new archive holding the same events gives, ids of every form
/// included, and no seq is ever reused.
#[test]
fn an_archive_in_the_old_layout_migrates_with_every_answer_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let events = varied_events();
    let old = dir.path().join("nine.db");
    archive_at_schema_10(&old, &events);
    let migrated = SqliteStore::open(&old, OpenMode::MustExist).unwrap();
    let (_d, fresh) = open();
    let src = fresh.source("acme", "x").unwrap();
    let run = fresh.start_run(src.id, Timestamp::now()).unwrap();
    store(&fresh, &src, run, &events);
    let (a, b) = (answers(&migrated, &events), answers(&fresh, &events));
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        if a != b {
            let at = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
            let around = |s: &str| s.chars().skip(at.saturating_sub(300)).take(600).collect::<String>();
            panic!("answers differ at {at}:\n{}\n---\n{}", around(a), around(b));
        }
    }
    let conn = migrated.read().unwrap();
    let (packed, text): (i64, i64) = conn
        .query_row("SELECT sum(typeof(id) = 'blob'), sum(typeof(id) = 'text') FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((packed, text), (114, 6), "canonical UUIDs packed, every other id kept as text");
    let (keys, named, resources): (i64, i64, i64) = conn
        .query_row(
            "SELECT sum(typeof(resource_id) = 'integer'), count(*), (SELECT count(DISTINCT value) FROM names
                WHERE id IN (SELECT resource_id FROM events)) FROM events WHERE resource_id IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(keys, named, "every resource id kept as a key of names");
    let distinct = events.iter().filter_map(|e| e.resource_id.as_deref()).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(resources as usize, distinct.len());
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        indexes,
        ["events_by_destroy_run", "events_by_impersonator", "events_by_time"],
        "actors, kinds and resources in posting lists"
    );
    drop(conn);
    let run = migrated.start_run(1, Timestamp::now()).unwrap();
    let later = event("later", "2024-03-01T00:00:00Z", "user-ann", "ann", "run", "apply");
    let source = migrated.source("acme", "x").unwrap();
    assert_eq!(store(&migrated, &source, run, std::slice::from_ref(&later)).inserted, 1);
    assert_eq!(migrated.event("later").unwrap().unwrap().seq, 501, "seq 500 was taken before the migration");
    assert_eq!(store(&migrated, &source, run, &events[..3]).duplicates, 3, "migrated ids are found as duplicates");
}

/// An old-layout archive whose every event is gone still never hands out a seq it
/// gave before.
#[test]
fn migrating_an_archive_emptied_of_events_keeps_its_seqs_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emptied.db");
    archive_at_schema_10(&path, &[]);
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    let source = s.source("acme", "x").unwrap();
    let run = s.start_run(source.id, Timestamp::now()).unwrap();
    store(&s, &source, run, &[event("first", "2024-03-01T00:00:00Z", "user-ann", "ann", "run", "apply")]);
    assert_eq!(s.event("first").unwrap().unwrap().seq, 501);
}

/// An archive from before destroy runs were marked (schema 12) gets the mark on every
/// event it already holds when opened, compressed ones too, as if each had been stored
/// with it; events stored after are marked as they are stored.
#[test]
fn an_archive_from_before_the_destroy_mark_gets_it_for_every_event() {
    let (dir, s) = open();
    let source = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(source.id, Timestamp::now()).unwrap();
    let destroys = |n: usize| n % 7 == 3;
    let run_event = |n: usize, is_destroy: &str| {
        let text = format!(
            r#"{{"id":"e{n:05}","timestamp":"2024-05-01T{:02}:{:02}:{:02}.000Z","auth":{{"accessor_id":"user-1"}},"resource":{{"id":"run-{n}","type":"run","action":"apply","meta":{{"run":{{"id":"run-{n}","is_destroy":{is_destroy}}}}}}}}}"#,
            n / 3600,
            (n / 60) % 60,
            n % 60
        );
        AuditEvent::parse(&RawValue::from_string(text).unwrap()).unwrap()
    };
    for page in 0..3 {
        let events: Vec<AuditEvent> = (page * 1000..(page + 1) * 1000)
            .map(|n| {
                run_event(
                    n,
                    if destroys(n) {
                        "true"
                    } else if n % 2 == 0 {
                        "false"
                    } else {
                        "\"true\""
                    },
                )
            })
            .collect();
        store(&s, &source, run, &events);
    }
    let expected: Vec<String> = (0..3000).filter(|&n| destroys(n)).map(|n| format!("e{n:05}")).collect();
    let destroy_runs = EventFilter { destroy_run: true, ..EventFilter::default() };
    assert_eq!(all_ids(&s, &destroy_runs), expected, "marked as stored");
    let path = dir.path().join("sub/archive.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let archived_at = ingest_times_of(&s);
    leaves_a_row_each(&s, &conn);
    a_row_each_has_its_ingest_time(&conn);
    drop(s);
    let compressed: i64 =
        conn.query_row("SELECT count(*) FROM events WHERE dict IS NOT NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(compressed, 2500, "those after the first 500 are compressed");
    conn.execute_batch(
        "DROP INDEX IF EXISTS events_by_destroy_run; ALTER TABLE events DROP COLUMN destroy_run;
         ALTER TABLE dictionaries DROP COLUMN marked; PRAGMA user_version = 13;",
    )
    .unwrap();
    drop(conn);
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    assert_eq!(all_ids(&s, &destroy_runs), expected, "marked by the migration");
    assert_eq!(ingest_times_of(&s), archived_at, "each event's ingest time, back from its row");
    let later = run_event(5000, "true");
    assert_eq!(store(&s, &source, run, std::slice::from_ref(&later)).inserted, 1);
    assert_eq!(all_ids(&s, &destroy_runs).last().map(String::as_str), Some("e05000"));
}

/// Stores `n` events a backfill would, newest first in pages of 1,000, 37 s apart from
/// the returned start; actors `user-0` to `user-39` in turn; ids unique, in no order.
fn newest_first_backfill(s: &SqliteStore, n: u32) -> (Source, Timestamp) {
    let source = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(source.id, Timestamp::now()).unwrap();
    let start: Timestamp = "2024-05-01T00:00:00Z".parse().unwrap();
    let ids: Vec<u32> = (0..n).rev().collect();
    for page in ids.chunks(1000) {
        let events: Vec<AuditEvent> = page
            .iter()
            .map(|&i| {
                let at = (start + jiff::SignedDuration::from_secs(i64::from(i) * 37)).to_string();
                let id = format!("{:08x}-{i}", i.wrapping_mul(2_654_435_761));
                event(&id, &at, &format!("user-{}", i % 40), "ann", "run", "apply")
            })
            .collect();
        store(s, &source, run, &events);
    }
    (source, start)
}

/// The share of an index's pages left empty.
fn empty_share(c: &rusqlite::Connection, index: &str) -> f64 {
    c.query_row("SELECT 1.0 * sum(unused) / sum(pgsize) FROM dbstat WHERE name = ?1", [index], |r| r.get(0)).unwrap()
}

/// A first backfill stores the newest events first; some indexes wait for its walk to
/// end (every answer the same meanwhile), and at its end every index is built or
/// rebuilt packed full, with the file giving back what they freed. A walk that adds
/// little to a large archive rebuilds nothing.
#[test]
fn a_backfill_walk_ends_with_its_indexes_packed_and_the_file_smaller() {
    let (dir, s) = open();
    let n = 12_000u32;
    let (source, start) = newest_first_backfill(&s, n);
    let path = dir.path().join("sub/archive.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    let index_names = |c: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = c
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let empty = empty_share;
    for index in ["events_by_destroy_run", "events_by_impersonator"] {
        assert!(!index_names(&c).contains(&index.to_owned()), "{index} left for the walk's end");
    }
    assert!(
        empty(&c, "events_by_time") > 0.3,
        "half empty after newest-first inserts: {}",
        empty(&c, "events_by_time")
    );
    assert!(empty(&c, "hourly_actors") > 0.3, "rollups too: {}", empty(&c, "hourly_actors"));
    let everything = EventFilter::default();
    let by_actor = EventFilter { actor: Some(Pattern::new("user-7")), ..EventFilter::default() };
    let by_resource = EventFilter { resource_id: Some(Pattern::new("ws-*-77")), ..EventFilter::default() };
    let by_kind = EventFilter {
        resource_type: Some(Pattern::new("run")),
        action: Some(Pattern::new("apply")),
        since: Some(start + jiff::SignedDuration::from_hours(1)),
        ..EventFilter::default()
    };
    let destroys = EventFilter { destroy_run: true, ..EventFilter::default() };
    let answers = |s: &SqliteStore| {
        let mut keys = Vec::new();
        s.event_keys(&by_kind, tfaudit_store::Order::NewestFirst, &mut |k| {
            keys.push(k.seq);
            Ok(())
        })
        .unwrap();
        let summary = s.summary(&by_kind, 5).unwrap();
        // By id: through every entry of the time index while the prints wait for the
        // walk's end, then through the hours they name.
        let by_id: Vec<Option<i64>> = (0..n)
            .step_by(97)
            .map(|i| format!("{:08x}-{i}", i.wrapping_mul(2_654_435_761)))
            .chain(["00000000-0".to_owned() + "0", "nowhere".to_owned()])
            .map(|id| s.event(&id).unwrap().map(|e| e.seq))
            .collect();
        (
            (all_ids(s, &everything), all_ids(s, &by_actor), all_ids(s, &by_resource), by_id),
            (all_ids(s, &by_kind), all_ids(s, &destroys), keys, format!("{summary:?}")),
        )
    };
    let during = answers(&s);
    assert_eq!(during.0.0.len(), n as usize);
    assert_eq!(during.0.1.len(), (n / 40) as usize);
    assert_eq!(during.0.2.len(), 1);
    assert_eq!(during.0.3.iter().filter(|seq| seq.is_some()).count(), (n as usize).div_ceil(97), "every id found");
    assert_eq!(during.1.0.len(), n as usize - 98, "all but the first hour's 98 events");
    assert_eq!(during.1.2.len(), during.1.0.len());
    assert!(during.1.1.is_empty());

    s.finish_walk(source.id, Some(start), None, None).unwrap();
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    assert_eq!(free, 0, "the freed pages were given back");
    for index in ["events_by_destroy_run", "events_by_impersonator"] {
        assert!(index_names(&c).contains(&index.to_owned()), "{index} built");
    }
    for index in ["events_by_time", "hourly_actors"] {
        // Small indexes here: the last page of each is partly empty whatever is done.
        assert!(empty(&c, index) < 0.2, "{index} packed: {}", empty(&c, index));
    }
    assert_eq!(answers(&s), during);

    // A small walk after it: nothing to rebuild.
    let run = s.start_run(source.id, Timestamp::now()).unwrap();
    store(&s, &source, run, &[event("late", "2024-06-01T00:00:00Z", "user-1", "ann", "run", "apply")]);
    let rebuilt_at = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT reindexed_seq FROM upkeep", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(rebuilt_at(&c), i64::from(n));
    s.finish_walk(source.id, Some(start), None, None).unwrap();
    assert_eq!(rebuilt_at(&c), i64::from(n), "one new event rebuilds nothing");
}

/// A first backfill killed before its walk ended: the next walk's end builds the
/// indexes it left out, or, with no walk under way, opening the archive does.
#[test]
fn indexes_a_killed_first_backfill_left_out_are_built_later() {
    // A first page stored, then the process gone before its walk ended.
    let killed_backfill = || -> (tempfile::TempDir, std::path::PathBuf, Source) {
        let (dir, s) = open();
        let source = s.source("acme", "x").unwrap();
        let run = s.start_run(source.id, Timestamp::now()).unwrap();
        store(&s, &source, run, &[event("a", "2024-01-01T00:00:00Z", "user-1", "ann", "run", "apply")]);
        let path = dir.path().join("sub/archive.db");
        (dir, path, source)
    };
    let has_deferred_index = |path: &std::path::Path| -> bool {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'events_by_destroy_run')", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    // Reopened with the walk still under way: left for its end.
    let (_dir, path, source) = killed_backfill();
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    assert!(!has_deferred_index(&path));
    s.finish_walk(source.id, None, None, None).unwrap();
    assert!(has_deferred_index(&path), "built at the walk's end");

    // With no walk left under way (the organization dropped from the config): the
    // next open builds them.
    let (_dir, path, _) = killed_backfill();
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE sources SET walk_started_ms = NULL", []).unwrap();
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    assert!(has_deferred_index(&path), "built on open");
    assert_eq!(all_ids(&s, &EventFilter { actor: Some(Pattern::new("user-1")), ..EventFilter::default() }), ["a"]);
}

/// A copy (`tfaudit migrate`) appends a backfilled archive's events in seq order,
/// newest first; once its state is loaded, the indexes are packed as after a walk.
#[test]
fn a_copy_ends_with_its_indexes_packed() {
    use tfaudit_store::Transfer;
    let (_d, from) = open();
    let (source, start) = newest_first_backfill(&from, 12_000);
    from.finish_walk(source.id, Some(start), None, None).unwrap();
    let mut copied = Vec::new();
    from.events_after(0, 100_000, &mut |e| {
        copied.push(e);
        Ok(())
    })
    .unwrap();
    let (dir, to) = open();
    to.source("acme", "https://app.terraform.io").unwrap();
    for batch in copied.chunks(5000) {
        to.append_copied(batch).unwrap();
    }
    let c = rusqlite::Connection::open(dir.path().join("sub/archive.db")).unwrap();
    let empty = |index: &str| empty_share(&c, index);
    assert!(empty("events_by_time") > 0.3, "appended newest first: {}", empty("events_by_time"));
    to.load_state(&from.archive_state().unwrap()).unwrap();
    assert!(empty("events_by_time") < 0.2, "packed: {}", empty("events_by_time"));
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    assert_eq!(free, 0);
    assert_eq!(all_ids(&to, &EventFilter::default()), all_ids(&from, &EventFilter::default()));
}

/// The tree's leaves, 480 to a row: pages that end inside a block continue it, every
/// leaf reads back by index (from any point, to any limit), and an archive with a row
/// a leaf (before migration 16) is converted with every leaf the same.
#[test]
fn leaves_kept_in_blocks_read_back_the_same_and_older_archives_convert() {
    use tfaudit_store::Ledger;
    let (dir, s) = open();
    let source = s.source("acme", "x").unwrap();
    let run = s.start_run(source.id, Timestamp::now()).unwrap();
    let page = |from: u32, n: u32| -> Vec<AuditEvent> {
        (from..from + n)
            .map(|i| {
                event(
                    &format!("e{i:05}"),
                    &format!("2024-05-01T{:02}:{:02}:00Z", i / 60 % 24, i % 60),
                    "user-1",
                    "ann",
                    "run",
                    "apply",
                )
            })
            .collect()
    };
    // 300 leaves, then 700 (ending inside the third block), then one.
    store(&s, &source, run, &page(0, 300));
    store(&s, &source, run, &page(300, 700));
    store(&s, &source, run, &page(1000, 1));
    let all = s.leaves(0, u64::MAX).unwrap();
    assert_eq!(all.len(), 1001);
    for (i, leaf) in all.iter().enumerate() {
        assert_eq!(leaf.index, i as u64);
        assert_eq!(leaf.seq, i as i64 + 1);
    }
    assert_eq!(s.tree_head().unwrap().unwrap().size, 1001);
    assert_eq!(s.leaves(479, 3).unwrap(), all[479..482]);
    assert_eq!(s.leaves(960, 1000).unwrap(), all[960..]);
    assert!(s.leaves(1001, 10).unwrap().is_empty());
    let path = dir.path().join("sub/archive.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = c.query_row("SELECT count(*) FROM tree_leaf_blocks", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 3);
    drop(s);

    // Back to a row a leaf, as schema 15 kept them, then opened: converted.
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    leaves_a_row_each(&s, &c);
    a_row_each_has_its_ingest_time(&c);
    drop(s);
    c.execute_batch("ALTER TABLE dictionaries DROP COLUMN marked; PRAGMA user_version = 15").unwrap();
    let s = SqliteStore::open(&path, OpenMode::MustExist).unwrap();
    // Whole hashes now, as the blocks migration 16 makes keep them.
    let prefixes = |l: &[tfaudit_store::Leaf]| {
        l.iter().map(|l| (l.index, l.seq, l.hash.as_bytes()[..8].to_vec())).collect::<Vec<_>>()
    };
    let converted = s.leaves(0, u64::MAX).unwrap();
    assert!(converted.iter().all(|l| l.hash.whole().is_some()));
    assert_eq!(prefixes(&converted), prefixes(&all));
    let old_table: bool = c
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'tree_leaves')", [], |r| r.get(0))
        .unwrap();
    assert!(!old_table);
    // And it grows on from there.
    store(&s, &source, run, &page(1001, 10));
    let grown = s.leaves(0, u64::MAX).unwrap();
    assert_eq!(grown.len(), 1011);
    assert_eq!(prefixes(&grown[..1001]), prefixes(&all));
    assert_eq!(grown[1010].seq, 1011);
    // The blocks from before keep their form until `compact` rewrites them with
    // prefixes; the block the growth rewrote keeps its older leaves whole.
    let whole_blocks =
        || -> i64 { c.query_row("SELECT count(*) FROM tree_leaf_blocks WHERE form = 0", [], |r| r.get(0)).unwrap() };
    assert_eq!(whole_blocks(), 2);
    s.compact(0, 1000).unwrap();
    assert_eq!(whole_blocks(), 0);
    let compacted = s.leaves(0, u64::MAX).unwrap();
    assert_eq!(prefixes(&compacted), prefixes(&grown));
    let whole: Vec<u64> = compacted.iter().filter(|l| l.hash.whole().is_some()).map(|l| l.index).collect();
    assert_eq!(whole, (960..1001).collect::<Vec<_>>());
    let size: i64 = c.query_row("SELECT sum(length(hashes)) FROM tree_leaf_blocks", [], |r| r.get(0)).unwrap();
    assert_eq!(size, 1011 * 8 + 41 * 24 + 60 + 60 + 7, "prefixes, the whole hashes and a bit a leaf");
    // Their seqs as runs (schema 23): one run a block, a few bytes.
    let (runs, seq_bytes): (i64, i64) = c
        .query_row("SELECT sum(form = 2), sum(length(seqs)) FROM tree_leaf_blocks", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(runs, 3);
    assert!(seq_bytes <= 12, "{seq_bytes}");
    // A block with its seqs a varint each, as schema 19 to 22 wrote them, reads the
    // same, and `compact` rewrites it as runs.
    let older = tfaudit_store::retention::encode_seqs(&(1..=480).collect::<Vec<i64>>());
    c.execute("UPDATE tree_leaf_blocks SET seqs = ?1, form = 1 WHERE block = 0", [&older]).unwrap();
    assert_eq!(prefixes(&s.leaves(0, u64::MAX).unwrap()), prefixes(&compacted));
    s.compact(0, 1000).unwrap();
    assert_eq!(
        c.query_row("SELECT form FROM tree_leaf_blocks WHERE block = 0", [], |r| r.get::<_, i64>(0)).unwrap(),
        2
    );
    assert_eq!(prefixes(&s.leaves(0, u64::MAX).unwrap()), prefixes(&compacted));
}

/// Each event's seq and when it was archived.
fn ingest_times_of(s: &SqliteStore) -> Vec<(i64, Timestamp)> {
    let mut all = Vec::new();
    s.events_after(0, u64::MAX >> 1, &mut |e| {
        all.push((e.seq, e.ingested_at));
        Ok(())
    })
    .unwrap();
    all
}

/// Puts an archive back in the layout before migration 20: the ingest time in each
/// event's row, the index of seqs, and no spans of the days retention removed.
fn a_row_each_has_its_ingest_time(c: &rusqlite::Connection) {
    indexes_in_place_of_postings(c);
    c.execute_batch(
        "ALTER TABLE events ADD COLUMN ingested_ms INTEGER NOT NULL DEFAULT 0;
         UPDATE events SET ingested_ms =
             (SELECT i.ms FROM ingest_times i WHERE i.first_seq <= events.seq ORDER BY i.first_seq DESC LIMIT 1);
         DROP TABLE ingest_times;
         DROP TABLE pruned_spans;
         CREATE INDEX events_by_seq ON events (seq);",
    )
    .unwrap();
}

/// Undoes migration 21: the indexes on actor, kind and hour and resource in place of
/// the posting lists.
fn indexes_in_place_of_postings(c: &rusqlite::Connection) {
    c.execute_batch(
        "DROP TABLE postings;
         DROP TABLE kinds;
         CREATE INDEX events_by_actor ON events (accessor_id, ts_ms);
         CREATE INDEX events_by_kind ON events (resource_type, resource_action, ts_ms);
         CREATE INDEX events_by_hour_resource ON events (ts_ms / 3600000, resource_id);",
    )
    .unwrap();
}

/// Puts an archive's tree leaves back in the layout before migration 16, a row a leaf,
/// for tests that make an older archive of a current one.
fn leaves_a_row_each(s: &SqliteStore, c: &rusqlite::Connection) {
    use tfaudit_store::Ledger;
    // Whole hashes, as that layout kept them: computed again from the events.
    let mut whole = std::collections::HashMap::new();
    s.event_bytes_after(0, u64::MAX, &mut |seq, source, raw| {
        whole.insert(seq, tfaudit_store::merkle::event_leaf_hash(seq, source, raw.as_bytes()));
        Ok(())
    })
    .unwrap();
    let leaves = s.leaves(0, u64::MAX).unwrap();
    c.execute_batch(
        "CREATE TABLE tree_leaves (idx INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
         DROP TABLE tree_leaf_blocks;",
    )
    .unwrap();
    for leaf in &leaves {
        c.execute(
            "INSERT INTO tree_leaves (idx, seq, hash) VALUES (?1, ?2, ?3)",
            rusqlite::params![leaf.index as i64, leaf.seq, &leaf.hash.whole().unwrap_or(whole[&leaf.seq])[..]],
        )
        .unwrap();
    }
}

/// Queries read through the posting lists (postings.rs) answer as the events say:
/// filters on an actor, a kind and a resource, one key or a glob of many, with a
/// range, with limits that stop early and none, in both orders; after lists built at
/// a first backfill's end and appended to by later pages, after a day is removed, and
/// after it is put back.
#[test]
fn posting_lists_answer_as_the_events_do() {
    use tfaudit_store::{PruneOutcome, PruneRequest, Retention};
    let (_d, s) = open();
    let src = s.source("acme", "https://app.terraform.io").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    let kinds = [("run", "apply"), ("run", "create"), ("var", "index"), ("workspace", "update"), ("team", "destroy")];
    // Spread over ten days in no order, so that later pages add to old buckets.
    let make = |i: u32| {
        let hour = (i * 7919) % 240;
        let (t, _) = kinds[(i % 5) as usize];
        let (_, a) = kinds[(i as usize * 3 / 7) % 5];
        let e = event(
            &format!("e{i:05}"),
            &format!("2024-03-{:02}T{:02}:{:02}:{:02}Z", 1 + hour / 24, hour % 24, i % 60, (i / 60) % 60),
            &format!("user-{}", i % 13),
            &format!("name{}", i % 13),
            t,
            a,
        );
        // Resources shared by events of many days: their week's list keeps events of
        // other days when a day is removed.
        let text = e.raw.replace(&format!("\"ws-e{i:05}\""), &format!("\"ws-r{}\"", i % 17));
        AuditEvent::parse(&RawValue::from_string(text).unwrap()).unwrap()
    };
    let mut all: Vec<AuditEvent> = Vec::new();
    for page in 0..6u32 {
        let events: Vec<AuditEvent> = (page * 500..page * 500 + 500).map(make).collect();
        store(&s, &src, run, &events);
        all.extend(events);
        if page == 0 {
            // The first backfill's walk ends: the lists are built from its events.
            s.finish_walk(src.id, None, None, None).unwrap();
        }
    }
    let p = |s: &str| Some(Pattern::new(s));
    let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
    type Matches = Box<dyn Fn(&AuditEvent) -> bool>;
    let filters: Vec<(EventFilter, Matches)> = vec![
        (
            EventFilter { actor: p("user-3"), ..EventFilter::default() },
            Box::new(|e| e.accessor_id.as_deref() == Some("user-3")),
        ),
        (
            EventFilter { actor: p("USER-1*"), ..EventFilter::default() },
            Box::new(|e| e.accessor_id.as_deref().is_some_and(|a| a.starts_with("user-1"))),
        ),
        (
            EventFilter { actor: p("name5"), ..EventFilter::default() },
            Box::new(|e| e.accessor_id.as_deref() == Some("user-5")),
        ),
        (
            EventFilter { resource_type: p("run"), ..EventFilter::default() },
            Box::new(|e| e.resource_type.as_deref() == Some("run")),
        ),
        (
            EventFilter { resource_type: p("var"), action: p("index"), ..EventFilter::default() },
            Box::new(|e| e.resource_type.as_deref() == Some("var") && e.resource_action.as_deref() == Some("index")),
        ),
        (
            EventFilter { action: p("destroy"), ..EventFilter::default() },
            Box::new(|e| e.resource_action.as_deref() == Some("destroy")),
        ),
        (
            EventFilter { actor: p("user-2"), resource_type: p("r*"), ..EventFilter::default() },
            Box::new(|e| e.accessor_id.as_deref() == Some("user-2") && e.resource_type.as_deref() == Some("run")),
        ),
        (
            EventFilter { resource_id: p("ws-r5"), ..EventFilter::default() },
            Box::new(|e| e.resource_id.as_deref() == Some("ws-r5")),
        ),
        (
            EventFilter { resource_id: p("ws-r1*"), ..EventFilter::default() },
            Box::new(|e| e.resource_id.as_deref().is_some_and(|r| r.starts_with("ws-r1"))),
        ),
        (
            EventFilter {
                actor: p("user-4"),
                since: t("2024-03-03T00:00:00Z"),
                until: t("2024-03-07T12:30:00Z"),
                ..EventFilter::default()
            },
            Box::new(|e| {
                e.accessor_id.as_deref() == Some("user-4")
                    && e.timestamp >= "2024-03-03T00:00:00Z".parse::<Timestamp>().unwrap()
                    && e.timestamp < "2024-03-07T12:30:00Z".parse::<Timestamp>().unwrap()
            }),
        ),
    ];
    let check = |s: &SqliteStore, all: &[AuditEvent], present: &dyn Fn(&AuditEvent) -> bool, when: &str| {
        // By id, through the hours whose prints name it.
        for e in all.iter().step_by(7) {
            assert_eq!(s.event(&e.id).unwrap().is_some(), present(e), "{when}: by id {}", e.id);
        }
        let (prints, events): (i64, i64) = s
            .read()
            .unwrap()
            .query_row(
                "SELECT (SELECT coalesce(sum(length(prints)), 0) / 2 FROM id_prints), (SELECT count(*) FROM events)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(prints, events, "{when}: a print for each event");
        for (filter, matches) in &filters {
            // Seqs are the order events were first stored in.
            let mut expected: Vec<(Timestamp, usize, &str)> = all
                .iter()
                .enumerate()
                .filter(|(_, e)| present(e) && matches(e))
                .map(|(i, e)| (e.timestamp, i, e.id.as_str()))
                .collect();
            expected.sort();
            assert!(!expected.is_empty(), "{when}: {filter:?} matches something");
            for order in [Order::OldestFirst, Order::NewestFirst] {
                let mut ids: Vec<&str> = expected.iter().map(|e| e.2).collect();
                if order == Order::NewestFirst {
                    ids.reverse();
                }
                for limit in [Some(1), Some(7), Some(100), None] {
                    let mut got = Vec::new();
                    s.events(filter, order, limit, &mut |e| {
                        got.push(e.event.id);
                        Ok(())
                    })
                    .unwrap();
                    let want = &ids[..limit.map_or(ids.len(), |l| (l as usize).min(ids.len()))];
                    assert_eq!(got, want, "{when}: {filter:?} {order:?} {limit:?}");
                }
                if order == Order::NewestFirst {
                    // Page by page, each after the last one's (time, seq), as the API
                    // and the dashboard page.
                    let mut paged = Vec::new();
                    let mut page = filter.clone();
                    loop {
                        let mut got = Vec::new();
                        s.events(&page, order, Some(7), &mut |e| {
                            got.push(e);
                            Ok(())
                        })
                        .unwrap();
                        let Some(last) = got.last() else { break };
                        page.before = Some((last.event.timestamp, last.seq));
                        paged.extend(got.into_iter().map(|e| e.event.id));
                    }
                    assert_eq!(paged, ids, "{when}: {filter:?} paged");
                }
                let mut keys = Vec::new();
                s.event_keys(filter, order, &mut |k| {
                    keys.push(k.seq);
                    Ok(())
                })
                .unwrap();
                assert_eq!(keys.len(), ids.len(), "{when}: {filter:?} keys");
            }
            assert_eq!(s.summary(filter, 5).unwrap().total, expected.len() as u64, "{when}: {filter:?} summary");
        }
    };
    check(&s, &all, &|_| true, "stored");

    let day =
        EventFilter { since: t("2024-03-04T00:00:00Z"), until: t("2024-03-05T00:00:00Z"), ..EventFilter::default() };
    let mut removed = Vec::new();
    s.events(&day, Order::OldestFirst, None, &mut |e| {
        removed.push(e);
        Ok(())
    })
    .unwrap();
    removed.sort_by_key(|e| e.seq);
    let outcome = s
        .prune_day(&PruneRequest {
            source: "acme",
            day: "2024-03-04",
            from: day.since.unwrap(),
            until: day.until.unwrap(),
            events: removed.len() as u64,
            min_seq: removed[0].seq,
            max_seq: removed[removed.len() - 1].seq,
            location: "/cold",
            path: "acme/2024-03-04",
            sha256: "0",
        })
        .unwrap();
    assert_eq!(outcome, PruneOutcome::Pruned(removed.len() as u64));
    let gone: std::collections::HashSet<String> = removed.iter().map(|e| e.event.id.clone()).collect();
    check(&s, &all, &|e| !gone.contains(&e.id), "a day removed");
    // Its seqs left the lists with it.
    let listed: i64 = s
        .read()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM postings p, tfaudit_seqs(p.seqs) q WHERE q.value = ?1",
            [removed[0].seq],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(listed, 0);

    assert_eq!(s.restore_day("acme", "2024-03-04", &removed).unwrap(), removed.len() as u64);
    check(&s, &all, &|_| true, "the day put back");
    // Later pages add to the lists the day went back into.
    let events: Vec<AuditEvent> = (3000..3500).map(make).collect();
    store(&s, &src, run, &events);
    all.extend(events);
    check(&s, &all, &|_| true, "a page after the day put back");
    // Each list ascending, its last seq where its row says (the oldest first, which
    // `tfaudit_first_seq` reads).
    let c = s.read().unwrap();
    let mut rows = c.prepare("SELECT last, seqs FROM postings").unwrap();
    let rows = rows.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))).unwrap();
    for row in rows {
        let (last, blob) = row.unwrap();
        let seqs = tfaudit_store::retention::decode_seqs(&blob).unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(seqs.last(), Some(&last));
    }
    let listed: i64 = s
        .read()
        .unwrap()
        .query_row("SELECT count(*) FROM postings p, tfaudit_seqs(p.seqs) q", [], |r| r.get(0))
        .unwrap();
    assert_eq!(listed, 3 * all.len() as i64, "each event in three lists, once");
}
