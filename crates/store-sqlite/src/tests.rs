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

/// The plans that keep queries fast on a large archive: each filter uses its index,
/// and hour-led indexes are probed hour by hour rather than scanned.
#[test]
fn queries_use_their_indexes() {
    let (_d, s) = open();
    let src = s.source("acme", "x").unwrap();
    let run = s.start_run(src.id, Timestamp::now()).unwrap();
    store(&s, &src, run, &[event("a", "2024-01-01T00:00:00Z", "user-1", "ann", "run", "apply")]);
    let conn = s.lock();
    let plan = |filter: &EventFilter| -> String {
        let h = hours(&conn, filter.since.map(ms), filter.until.map(ms)).unwrap();
        let w = where_clause(filter, filter.since.map(ms), filter.until.map(ms), h);
        let sql = format!("EXPLAIN QUERY PLAN SELECT e.seq FROM events e WHERE {} ORDER BY e.ts_ms DESC", w.sql);
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt.query_map(&*w.refs(), |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let since = Some("2023-12-25T00:00:00Z".parse().unwrap());
    let p = plan(&EventFilter { resource_id: Some(Pattern::new("ws-a")), ..EventFilter::default() });
    assert!(p.contains("events_by_hour_resource"), "{p}");
    let p = plan(&EventFilter { actor: Some(Pattern::new("ann")), since, ..EventFilter::default() });
    assert!(p.contains("events_by_actor"), "{p}");
    let p = plan(&EventFilter {
        resource_type: Some(Pattern::new("run")),
        action: Some(Pattern::new("apply")),
        ..EventFilter::default()
    });
    assert!(p.contains("events_by_kind"), "{p}");
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
fn an_archive_from_before_dead_letters_counts_its_lag_on_the_seq_index() {
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
    let plan: String = s
        .read()
        .unwrap()
        .query_row("EXPLAIN QUERY PLAN SELECT count(*) FROM events INDEXED BY events_by_seq WHERE seq > 1", [], |r| {
            r.get(3)
        })
        .unwrap();
    assert!(plan.contains("COVERING INDEX events_by_seq"), "{plan}");
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

/// Past 2,000 events a dictionary is trained and later pages are stored compressed; a
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
    assert_eq!((plain, dicts), (2_000, 1), "the first two pages as text, the rest compressed");
    let compressed: i64 =
        conn.query_row("SELECT sum(length(raw)) FROM events WHERE dict IS NOT NULL", [], |r| r.get(0)).unwrap();
    let original: usize = all[2000..].iter().map(|e| e.raw.len()).sum();
    assert!((compressed as usize) * 3 < original, "compressed {compressed} bytes of {original}");
    drop(s);
    // Reopened: a new process's connections load the dictionary from the archive.
    let s = SqliteStore::open(&dir.path().join("sub/archive.db"), OpenMode::MustExist).unwrap();
    let mut read = Vec::new();
    s.events(&EventFilter::default(), Order::OldestFirst, None, &mut |e| {
        read.push(e.event.raw);
        Ok(())
    })
    .unwrap();
    assert_eq!(read, all.iter().map(|e| e.raw.clone()).collect::<Vec<_>>());
    assert_eq!(s.event("e04321").unwrap().unwrap().event.raw, all[4321].raw);
    let filter = EventFilter { text: Some("zoË ✓".into()), ..EventFilter::default() };
    assert_eq!(all_ids(&s, &filter).len(), 1_000, "text search reads the compressed rows too");
}
