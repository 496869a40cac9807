//! `tfaudit migrate`: SQLite to PostgreSQL and back, killed and resumed, a wrong
//! target refused. PostgreSQL is the server in `TFAUDIT_TEST_POSTGRES` (default
//! postgres://postgres@127.0.0.1:5432/postgres); each test creates and drops its own
//! databases.

use std::time::{Duration, Instant};

use serde_json::Value;
use tfaudit_sim::SimConfig;

use crate::alerts::{config, critical_events_synced};
use crate::cluster::TestDb;
use crate::harness::*;

/// `export --format jsonl` of the archive at `db`, as printed.
async fn export(env: &Env, db: &str) -> String {
    env.ok(None, &["--db", db, "export", "--format", "jsonl"]).await
}

/// `status --format json` without the line naming the archive.
async fn organizations(env: &Env, db: &str) -> Value {
    let mut s: Value = serde_json::from_str(&env.ok(None, &["--db", db, "status", "--format", "json"]).await).unwrap();
    s["organizations"].take()
}

/// `alerts list --format json`; seqs are each archive's own, so left out.
async fn alerts(env: &Env, cfg: &str, db: &str) -> Value {
    let mut list: Value =
        serde_json::from_str(&env.ok(None, &["--config", cfg, "--db", db, "alerts", "list", "--format", "json"]).await)
            .unwrap();
    for a in list.as_array_mut().unwrap() {
        a.as_object_mut().unwrap().remove("event_seq");
    }
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_goes_to_postgresql_and_back_unchanged() {
    let sim = start(SimConfig { events: 20_000, malformed: 4, ..SimConfig::default() }).await;
    let env = Env::new();
    // A destination that refuses connections: its deliveries are kept, failing.
    let hook =
        "[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\"\ntimeout = \"2s\"\n";
    let cfg = config(&env, &sim, hook);
    let cfg = cfg.to_str().unwrap();
    critical_events_synced(&env, &sim, cfg).await;
    assert!(env.run(None, &["--config", cfg, "alerts", "run", "--once"]).await.status.success());
    let sqlite = env.db.to_str().unwrap().to_owned();
    let raised = alerts(&env, cfg, &sqlite).await;
    assert!(raised.as_array().unwrap().len() >= 3, "alerts were raised: {raised:#}");

    let pg = TestDb::new();
    let back = env.path("back.db");
    let back = back.to_str().unwrap();
    let there = env.ok(None, &["migrate", "--from", &sqlite, "--to", &pg.url]).await;
    assert!(there.contains("counts and checksum equal"), "{there}");
    assert!(there.contains("events of acme") && there.contains("events checksum (source)"), "{there}");
    let back_out = env.ok(None, &["migrate", "--from", &pg.url, "--to", back, "--batch", "3000"]).await;
    assert!(back_out.contains("counts and checksum equal"), "{back_out}");

    let original = export(&env, &sqlite).await;
    assert_eq!(original.lines().count() as u64, sim.events().len() as u64);
    assert_eq!(export(&env, &pg.url).await, original, "PostgreSQL exports what SQLite did");
    assert_eq!(export(&env, back).await, original, "and SQLite again");
    let status = organizations(&env, &sqlite).await;
    assert!(status[0]["cursor"].is_string() && status[0]["rejects"] == 4, "{status:#}");
    assert_eq!(organizations(&env, &pg.url).await, status, "same cursors, counts, runs, gaps, rejects");
    assert_eq!(organizations(&env, back).await, status);
    assert_eq!(alerts(&env, cfg, &pg.url).await, raised, "same alerts, ids and deliveries");
    assert_eq!(alerts(&env, cfg, back).await, raised);
    // The catalogue goes along, each name with its history.
    assert!(there.contains("names"), "{there}");
    let names = |db: String| {
        let env = &env;
        async move { env.ok(None, &["--db", &db, "names", "show", "dmitri", "--format", "json"]).await }
    };
    let named = names(sqlite.clone()).await;
    assert!(named.contains("\"name\": \"dmitri\"") || named.contains("\"name\":\"dmitri\""), "{named}");
    // PostgreSQL text holds no NUL: a name with one keeps U+FFFD in its place, as
    // every string column there does.
    let without_nul = named.replace("\\u0000", "\u{fffd}");
    assert_eq!(names(pg.url.clone()).await, without_nul, "PostgreSQL names the same");
    assert_eq!(names(back.to_owned()).await, without_nul, "and SQLite again");

    // The copy carries on where the original stood: the alert engine has nothing new
    // to evaluate, so it raises nothing twice.
    let out = env.ok(None, &["--config", cfg, "--db", &pg.url, "alerts", "run", "--once"]).await;
    assert!(out.contains("0 alerts raised"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_migration_resumes_and_ends_identical() {
    let sim = start(SimConfig { events: 20_000, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let sqlite = env.db.to_str().unwrap().to_owned();
    let pg = TestDb::new();
    let mut copy =
        env.command(None, &["migrate", "--from", &sqlite, "--to", &pg.url, "--batch", "50"]).spawn().unwrap();
    // Killed once the target holds part of the archive.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let out = env.run(None, &["--db", &pg.url, "status", "--format", "json"]).await;
        let held = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|s| s["organizations"][0]["events"].as_u64())
            .unwrap_or(0);
        if held > 0 {
            break held;
        }
        assert!(Instant::now() < deadline, "no progress: {}", text(&out.stderr));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    copy.start_kill().unwrap();
    let status = copy.wait().await.unwrap();
    assert!(!status.success(), "killed, not finished ({held} events were in)");
    let kept = organizations(&env, &pg.url).await[0]["events"].as_u64().unwrap();
    assert!(kept < 20_000, "killed halfway: {kept}");

    let out = env.ok(None, &["migrate", "--from", &sqlite, "--to", &pg.url]).await;
    assert!(out.contains(&format!("resumed after {}", fmt(kept))), "{out}");
    assert!(out.contains("counts and checksum equal"), "{out}");
    assert_eq!(export(&env, &pg.url).await, export(&env, &sqlite).await);
    assert_eq!(organizations(&env, &pg.url).await, organizations(&env, &sqlite).await);
}

/// 12345 as the CLI prints counts: 12,345.
fn fmt(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_another_archive_or_the_source_is_refused() {
    let env = Env::new();
    let one = start(SimConfig { events: 300, ..SimConfig::default() }).await;
    assert!(env.sync(&one, &[]).await.status.success());
    let sqlite = env.db.to_str().unwrap().to_owned();
    let other = env.path("other.db");
    let other = other.to_str().unwrap();
    let two = start(SimConfig { events: 200, ..SimConfig::default() }).await;
    assert!(env.sync(&two, &["--db", other]).await.status.success());
    let before = export(&env, other).await;

    let out = env.run(None, &["migrate", "--from", &sqlite, "--to", other]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already holds a different archive"), "{}", text(&out.stderr));
    assert_eq!(export(&env, other).await, before, "the other archive is untouched");

    // The same file however it is written.
    let same = format!("sqlite://{}/data/../data/archive.db", env.dir.path().display());
    let out = env.run(None, &["migrate", "--from", &sqlite, "--to", &same]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the same archive"), "{}", text(&out.stderr));
}
