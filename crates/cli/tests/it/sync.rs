//! Sync correctness against the simulator: the archive equals what the server serves.

use std::time::Duration;

use tfaudit_sim::{SimConfig, SinceMode};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backfill_equals_the_servers_events_exactly() {
    let sim = start(SimConfig { events: 4_321, hostile: 0.2, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("4,321 new events"), "{}", text(&out.stdout));
    assert_archive_equals(&env, &sim).await;
    // Exactly ceil(N / page size) requests when nothing fails.
    assert_eq!(sim.stats().requests, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_asks_from_the_cursor_minus_overlap_and_stores_nothing_twice() {
    let sim = start(SimConfig { events: 500, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let cursor = status(&env).await["organizations"][0]["cursor"].as_str().unwrap().to_owned();
    let now = jiff::Timestamp::now().as_second();
    let new_ids: Vec<String> = (0..7).map(|i| sim.add_event(now - i % 2)).collect();
    let out = env.sync(&sim, &["--overlap", "5m"]).await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("7 new events"), "{}", text(&out.stdout));
    let last = sim.stats().recent.last().unwrap().clone();
    let expected_since = cursor.parse::<jiff::Timestamp>().unwrap() - jiff::SignedDuration::from_mins(5);
    assert_eq!(last.since.as_deref(), Some(tfaudit_api::time::format_since(expected_since).as_str()));
    assert_archive_equals(&env, &sim).await;
    let archived = env.exported().await;
    assert!(new_ids.iter().all(|id| archived.contains_key(id)));
}

/// Events exactly at the `since` instant and in the cursor's own second: a server
/// reading `since` exclusively leaves out the first, one reading it inclusively sends
/// them again; neither may cost an event or store one twice.
async fn since_mode_round(mode: SinceMode) {
    let sim =
        start(SimConfig { events: 300, since_mode: mode, newest_age: Duration::ZERO, ..SimConfig::default() }).await;
    let env = Env::new();
    let now = jiff::Timestamp::now().as_second();
    // The cursor will be `now`; with a 2s overlap the next walk asks since `now - 2`.
    let at_since: Vec<String> = (0..3).map(|_| sim.add_event(now - 2)).collect();
    sim.add_event(now);
    assert!(env.sync(&sim, &[]).await.status.success());
    let cursor = status(&env).await["organizations"][0]["cursor"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert_eq!(cursor.as_second(), now);
    // More events in the cursor's very second, after the first sync.
    let same_second: Vec<String> = (0..3).map(|_| sim.add_event(now)).collect();
    let out = env.sync(&sim, &["--overlap", "2s", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let asked = sim.stats().recent.last().unwrap().clone();
    assert_eq!(
        asked.since.as_deref(),
        Some(tfaudit_api::time::format_since(cursor - jiff::SignedDuration::from_secs(2)).as_str())
    );
    // What the server sent for that `since`: the cursor's second always, the events at
    // the `since` instant only when it reads `since` inclusively.
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let at_instant = match mode {
        SinceMode::Exclusive => 0,
        SinceMode::Inclusive => at_since.len() as u64,
    };
    let after_since = sim.events().iter().filter(|e| e.timestamp_secs > now - 2).count() as u64;
    assert_eq!(
        asked.returned,
        after_since + at_instant,
        "the events at the since instant were {}sent",
        if at_instant == 0 { "not " } else { "" }
    );
    assert_eq!(report["new_events"], same_second.len() as u64);
    assert_eq!(report["duplicates"], after_since + at_instant - same_second.len() as u64, "{report}");
    assert_archive_equals(&env, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_since_loses_no_same_second_event() {
    since_mode_round(SinceMode::Exclusive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusive_since_duplicates_nothing() {
    since_mode_round(SinceMode::Inclusive).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_capping_the_page_size_below_what_was_asked() {
    let sim = start(SimConfig { events: 1_000, max_page_size: 70, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env.sync(&sim, &["--page-size", "1000"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_archive_equals(&env, &sim).await;
    assert_eq!(sim.stats().requests, 1_000u64.div_ceil(70), "one request per page the server actually sends");
    assert!(sim.stats().recent.iter().all(|r| r.page_size == 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_arriving_during_the_walk() {
    // Small pages and fast arrivals: pages shift under the walk, some arrivals are late.
    let sim = start(SimConfig {
        events: 3_000,
        max_page_size: 50,
        live_rate: 400.0,
        late_fraction: 0.3,
        max_lateness: Duration::from_secs(30),
        ..SimConfig::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = served(&sim);
    let env = Env::new();
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let archived = env.exported().await;
    let missing: Vec<_> = before.keys().filter(|id| !archived.contains_key(*id)).collect();
    assert!(missing.is_empty(), "events present when the walk began are missing: {missing:?}");
    assert!(sim.stats().live_events > 0);
    // Arrivals keep coming for two more syncs, then stop; one last sync catches up.
    for _ in 0..2 {
        assert!(env.sync(&sim, &[]).await.status.success());
    }
    sim.set_live(false);
    assert!(env.sync(&sim, &[]).await.status.success());
    assert_archive_equals(&env, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_elements_are_set_aside_and_the_rest_is_stored() {
    let sim = start(SimConfig { events: 800, malformed: 8, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("792 new events") && text(&out.stdout).contains("8 rejected"),
        "{}",
        text(&out.stdout)
    );
    assert_archive_equals(&env, &sim).await;
    let s = status(&env).await;
    assert_eq!(s["organizations"][0]["rejects"], 8);
    let listed = env.ok(None, &["status", "--rejects"]).await;
    for reason in ["not a JSON object", "no \"id\"", "not an RFC 3339 time"] {
        assert!(listed.contains(reason), "{reason} missing from\n{listed}");
    }
    // Seen again on the next sync, they are not counted again.
    assert!(env.sync(&sim, &[]).await.status.success());
    assert_eq!(status(&env).await["organizations"][0]["rejects"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_retention_is_reported_as_a_gap() {
    let day = 86_400;
    // An organization whose last sync reached 20 days ago...
    let old = start(SimConfig {
        events: 200,
        newest_age: Duration::from_secs(20 * day),
        span: Duration::from_secs(5 * day),
        retention: Duration::from_secs(60 * day),
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    assert!(env.sync(&old, &["--name", "acme"]).await.status.success());
    old.stop().await;
    // ...synced again now, when the API keeps 14 days.
    let now = start(SimConfig { events: 300, seed: 2, ..SimConfig::default() }).await;
    let out = env.sync(&now, &["--name", "acme"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("possible gap"), "{}", text(&out.stderr));
    let s = status(&env).await;
    let gaps = s["organizations"][0]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1);
    assert!(env.ok(None, &["status"]).await.contains("GAP"));
    // A sync that finds continuity records nothing new.
    assert!(env.sync(&now, &["--name", "acme"]).await.status.success());
    assert_eq!(status(&env).await["organizations"][0]["gaps"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_organization_under_the_same_name_is_refused() {
    let a = start(SimConfig { events: 50, ..SimConfig::default() }).await;
    let b = start(SimConfig { events: 50, organization_id: "org-Other".into(), seed: 9, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&a, &["--name", "acme"]).await.status.success());
    let out = env.sync(&b, &["--name", "acme"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("org-Other") && text(&out.stderr).contains("config"), "{}", text(&out.stderr));
    // Under its own name it syncs.
    assert!(env.sync(&b, &["--name", "other"]).await.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_up_with_arrivals_and_stops_cleanly_on_sigterm() {
    let sim = start(SimConfig { events: 400, live_rate: 40.0, ..SimConfig::default() }).await;
    let env = Env::new();
    let child = env
        .command(Some(&sim), &["watch", "--interval", "1s", "--rate-limit", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Several rounds of arrivals are picked up while it runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while events_in(&env.db) < 400 + 80 {
        assert!(std::time::Instant::now() < deadline, "watch did not keep up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.set_live(false);
    let target = served(&sim).len() as u64;
    while events_in(&env.db) < target {
        assert!(std::time::Instant::now() < deadline, "watch did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reports: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(reports.len() >= 2, "one JSON report per sync");
    assert!(reports.iter().all(|r| r["source"].is_string() && r["new_events"].is_u64()));
    assert_archive_equals(&env, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_command_serves_what_it_lists() {
    use tokio::io::AsyncBufReadExt;
    let env = Env::new();
    let mut sim = env
        .command(
            None,
            &[
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--events",
                "1200",
                "--max-page-size",
                "100",
                "--malformed",
                "3",
                "--token",
                "t0k",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(sim.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let out = env
        .command(None, &["sync", "--rate-limit", "0"])
        .env("TFE_ADDRESS", &url)
        .env("TFE_TOKEN", "t0k")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = reqwest::get(format!("{url}/_sim/events")).await.unwrap().text().await.unwrap();
    let archived = env.exported().await;
    assert_eq!(listed.lines().count(), 1_197);
    for line in listed.lines() {
        let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_str().unwrap().to_owned();
        assert_eq!(archived.get(&id).map(String::as_str), Some(line));
    }
    sim.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occasional_reconcile_walk_catches_events_later_than_the_overlap() {
    let sim = start(SimConfig { events: 300, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    // An event that arrives three hours late: beyond the 10-minute overlap.
    let now = jiff::Timestamp::now().as_second();
    let late = sim.add_event(now - 3 * 3600);
    sim.add_event(now);
    // A reconcile is not due yet (the backfill was one): the overlap does not reach it.
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success());
    assert!(!env.exported().await.contains_key(&late));
    // When one is due, the walk re-reads the last 24 hours and finds it.
    let out = env.sync(&sim, &["--reconcile-every", "1ms"]).await;
    assert!(text(&out.stdout).contains("re-read the reconcile window"), "{}", text(&out.stdout));
    assert_archive_equals(&env, &sim).await;
}
