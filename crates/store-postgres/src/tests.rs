//! What the conformance suite does not cover: migrations, read-only opening, an
//! unreachable server, TLS modes, and seqs becoming visible in order under
//! concurrent writers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tfaudit_store::{Archive, StoreError};
use tfaudit_store_conformance::ev;

use crate::PostgresStore;
use crate::testdb::{TestDb, admin_url};

fn with_query(url: &str, param: &str) -> String {
    if url.contains('?') { format!("{url}&{param}") } else { format!("{url}?{param}") }
}

#[test]
fn migrations_run_once_and_reopening_keeps_the_archive() {
    let db = TestDb::new();
    let store = PostgresStore::open(db.url(), false).expect("open");
    let source = store.source("acme", "https://app.terraform.io").expect("source");
    drop(store);
    let store = PostgresStore::open(db.url(), false).expect("reopen");
    assert_eq!(store.status().expect("status")[0].name, "acme", "reopening keeps the data");
    assert_eq!(store.source("acme", "https://app.terraform.io").expect("source").id, source.id);
    let mut admin = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    let versions: Vec<i64> = admin
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=crate::schema::MIGRATIONS.len() as i64).collect::<Vec<_>>(), "each migration once");
    // A newer tfaudit migrated it: this one refuses, writable or not.
    admin.execute("INSERT INTO schema_migrations (version) VALUES (999)", &[]).unwrap();
    for read_only in [false, true] {
        match PostgresStore::open(db.url(), read_only) {
            Err(StoreError::TooNew { found: 999, .. }) => {}
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
}

#[test]
fn read_only_opening_never_creates_a_schema_and_never_writes() {
    let db = TestDb::new();
    let err = PostgresStore::open(db.url(), true).expect_err("no schema yet");
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("tfaudit sync"), "the message says what to do: {err}");
    let mut admin = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    let tables: i64 =
        admin.query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).unwrap().get(0);
    assert_eq!(tables, 0, "read-only opening created nothing");

    PostgresStore::open(db.url(), false).expect("create").source("acme", "https://app.terraform.io").unwrap();
    let reader = PostgresStore::open(db.url(), true).expect("read-only");
    assert_eq!(reader.status().unwrap().len(), 1);
    let err = reader.source("other", "https://app.terraform.io").expect_err("a read-only store cannot write");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert_eq!(reader.status().unwrap().len(), 1);
}

#[test]
fn a_database_that_does_not_exist_is_missing() {
    let base = admin_url();
    let root = base.split_once('?').map_or(base.as_str(), |(h, _)| h).rsplit_once('/').unwrap().0.to_owned();
    let err = PostgresStore::open(&format!("{root}/tfaudit_no_such_db_{}", std::process::id()), true)
        .expect_err("no such database");
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
}

#[test]
fn an_unreachable_server_names_its_host_and_never_the_password() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let password = "pg-secret-Xyzzy-42";
    let url = format!("postgres://tfaudit:{password}@127.0.0.1:{port}/archive?sslmode=disable");
    let err = PostgresStore::open(&url, false).expect_err("nothing listens there");
    let StoreError::Unreachable { host, .. } = &err else { panic!("expected Unreachable, got {err:?}") };
    assert_eq!(host, &format!("127.0.0.1:{port}"));
    let shown = err.to_string();
    assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    for text in [shown, format!("{err:?}")] {
        assert!(!text.contains(password), "the password leaked: {text}");
    }
    // The password from PGPASSWORD is hidden as well: it is registered for redaction.
    assert_eq!(tfaudit_model::redact::redact(&format!("x {password} y")), "x <redacted> y");
}

#[test]
fn a_bad_url_is_refused_without_its_password() {
    let err = PostgresStore::open("postgres://u:hunter2-secret@127.0.0.1/db?sslmode=sometimes", false)
        .expect_err("unknown sslmode");
    assert!(err.to_string().contains("sslmode=sometimes"), "{err}");
    assert!(!err.to_string().contains("hunter2-secret"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2-secret"), "{err:?}");
}

/// `require` encrypts or fails; `verify-full` checks the certificate, which the test
/// server's (Debian's snake-oil certificate, or none) cannot pass.
#[test]
fn tls_modes_are_enforced() {
    let db = TestDb::new();
    let mut admin = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    let ssl: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
    PostgresStore::open(&with_query(db.url(), "sslmode=disable"), false).expect("sslmode=disable");
    let require = PostgresStore::open(&with_query(db.url(), "sslmode=require"), false);
    if ssl == "on" {
        let store = require.expect("sslmode=require against a server with TLS");
        let conn = store.pool.get().unwrap();
        drop(conn);
        let mut check = postgres::Client::connect(db.url(), postgres::NoTls).unwrap();
        let encrypted: i64 = check
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE s.ssl AND a.application_name = 'tfaudit' AND a.datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(encrypted >= 1, "the pooled connection is encrypted");
    } else {
        let err = require.expect_err("sslmode=require against a server without TLS");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }
    let err = PostgresStore::open(&with_query(db.url(), "sslmode=verify-full"), false)
        .expect_err("an untrusted certificate (or none) must not pass verify-full");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

/// Two writers store pages at once while a consumer follows `events_after`: without
/// the seq lock, a later seq can commit first and the consumer moves past an earlier
/// one that is not visible yet, losing it.
#[test]
fn a_consumer_following_events_after_never_skips_a_seq() {
    let db = TestDb::new();
    let store = Arc::new(PostgresStore::open(db.url(), false).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    const PAGES: usize = 40;
    const PER_PAGE: usize = 50;
    let writers: Vec<_> = ["acme", "globex"]
        .into_iter()
        .map(|org| {
            let store = store.clone();
            std::thread::spawn(move || {
                let source = store.source(org, "https://app.terraform.io").unwrap();
                let run = store.start_run(source.id, jiff::Timestamp::now()).unwrap();
                for page in 0..PAGES {
                    let events: Vec<_> = (0..PER_PAGE)
                        .map(|i| {
                            ev(&format!("{org}-{page}-{i}"), &format!("2024-01-01T00:{:02}:{:02}Z", page % 60, i % 60))
                                .org(org)
                                .build()
                        })
                        .collect();
                    store_events(&store, source.id, run, &events, page as u64 + 2);
                }
            })
        })
        .collect();
    let follower = {
        let store = store.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut cursor = 0;
            let mut seen = Vec::new();
            loop {
                // Read "done" before reading, so that the last pass sees every commit.
                let finished = done.load(Ordering::SeqCst);
                let n = store
                    .events_after(cursor, 1_000, &mut |e| {
                        seen.push(e.seq);
                        cursor = e.seq;
                        Ok(())
                    })
                    .unwrap();
                if finished && n == 0 {
                    return seen;
                }
            }
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.join().expect("follower");
    let mut all = Vec::new();
    store
        .events_after(0, u64::MAX, &mut |e| {
            all.push(e.seq);
            Ok(())
        })
        .unwrap();
    assert_eq!(all.len(), 2 * PAGES * PER_PAGE);
    assert_eq!(seen, all, "the consumer saw every event, in seq order, none skipped");
}

/// A holder frozen inside a fenced write (its transaction open, the lease row locked)
/// does not block a takeover for longer than the server's idle limit on fenced
/// transactions: the server ends the frozen transaction, the takeover goes through,
/// and the frozen write commits nothing.
#[test]
fn a_holder_frozen_inside_a_fenced_write_does_not_block_a_takeover() {
    use tfaudit_store::Leases;
    let db = TestDb::new();
    let store = PostgresStore::open(db.url(), false).expect("open");
    let old = store.acquire_lease("acme", "one", std::time::Duration::from_millis(100)).unwrap().expect("free");
    let mut conn = store.conn().unwrap();
    let mut tx = conn.client.transaction().unwrap();
    store.check_fence(&mut tx, Some(&old.fence())).expect("the holder's fence holds");
    // The holder now "freezes": its transaction stays open, idle.
    let started = std::time::Instant::now();
    let new = loop {
        if let Some(l) = store.acquire_lease("acme", "two", std::time::Duration::from_secs(60)).unwrap() {
            break l;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "never taken over");
    };
    assert!(new.epoch > old.epoch);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(tx.commit().is_err(), "the frozen transaction was ended by the server");
}

/// An archive from before destroy runs were marked (schema 6) gets the mark on every
/// event it already holds when opened, repeated keys read as the Rust check reads them,
/// and text the server's JSON reader refuses does not stop the migration.
#[test]
fn an_archive_from_before_the_destroy_mark_gets_it_for_every_event() {
    use serde_json::value::RawValue;
    let db = TestDb::new();
    let store = PostgresStore::open(db.url(), false).expect("open");
    let source = store.source("acme", "https://app.terraform.io").unwrap();
    let run = store.start_run(source.id, jiff::Timestamp::now()).unwrap();
    let raw = |id: &str, run_meta: &str| {
        let text = format!(
            r#"{{"id":"{id}","timestamp":"2024-01-01T00:00:00Z","resource":{{"type":"run","action":"apply","meta":{{"run":{run_meta}}}}}}}"#
        );
        tfaudit_model::AuditEvent::parse(&RawValue::from_string(text).unwrap()).unwrap()
    };
    let events = vec![
        ev("plain", "2024-01-01T00:00:00Z").build(),
        ev("yes", "2024-01-01T00:00:01Z").destroy(serde_json::json!(true)).build(),
        ev("no", "2024-01-01T00:00:02Z").destroy(serde_json::json!(false)).build(),
        raw("last-wins-yes", r#"{"is_destroy":false,"is_destroy":true}"#),
        raw("last-wins-no", r#"{"is_destroy":true,"is_destroy":false}"#),
        raw("string", r#"{"is_destroy":"true"}"#),
        raw("nul-key", r#"{"is_destroy":true,"k\u0000":1}"#),
    ];
    store_events(&store, source.id, run, &events, 2);
    let marked = |store: &PostgresStore| {
        let mut ids = Vec::new();
        let filter = tfaudit_store::EventFilter { destroy_run: true, ..Default::default() };
        store
            .events(&filter, tfaudit_store::Order::OldestFirst, None, &mut |e| {
                ids.push(e.event.id);
                Ok(())
            })
            .unwrap();
        ids.sort();
        ids
    };
    assert_eq!(marked(&store), ["last-wins-yes", "nul-key", "yes"], "marked as stored");
    drop(store);
    let mut admin = postgres::Client::connect(db.url(), postgres::NoTls).expect("connect");
    admin
        .batch_execute(
            "DROP INDEX events_by_destroy_run; ALTER TABLE events DROP COLUMN destroy_run;
             DELETE FROM schema_migrations WHERE version = 8;",
        )
        .unwrap();
    let store = PostgresStore::open(db.url(), false).expect("reopen and migrate");
    let migrated = marked(&store);
    assert!(
        migrated == ["last-wins-yes", "nul-key", "yes"] || migrated == ["last-wins-yes", "yes"],
        "as the Rust check, but for what the server cannot read: {migrated:?}"
    );
}

/// Stores one page of `events` as a walk that goes on at page `next_page` would.
fn store_events(store: &PostgresStore, source_id: i64, run: i64, events: &[tfaudit_model::AuditEvent], next_page: u64) {
    let walk = tfaudit_store::Walk {
        since: None,
        next_page,
        page_size: 100,
        newest: None,
        oldest: None,
        gap_from: None,
        started_at: jiff::Timestamp::now(),
    };
    store
        .store_page(&tfaudit_store::PageWrite { source_id, run_id: run, pages: 1, events, rejects: &[], walk: &walk })
        .unwrap();
}
