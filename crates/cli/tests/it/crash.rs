//! Killed at any instant, the next run neither loses nor duplicates an event.

use std::time::Duration;

use tfaudit_sim::{Faults, Sim, SimConfig};

use crate::harness::*;

fn slow_sim_config(live_rate: f64) -> SimConfig {
    SimConfig {
        events: 3_000,
        max_page_size: 50,
        live_rate,
        faults: Faults { slow_rate: 1.0, slow_delay: Duration::from_millis(25), ..Faults::default() },
        ..SimConfig::default()
    }
}

/// Starts a sync, waits until the archive holds at least `after` events, and kills it
/// with `signal`. Returns the exit status.
async fn interrupt(env: &Env, sim: &Sim, after: u64, signal: &str) -> std::process::ExitStatus {
    let mut child = env
        .command(Some(sim), &["sync", "--rate-limit", "0", "--retry-delay", "5ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while events_in(&env.db) < after {
        assert!(std::time::Instant::now() < deadline, "the sync never stored {after} events");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the sync ended before it could be interrupted: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    child.wait().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_several_moments_then_resume() {
    for (round, after) in [1u64, 700, 2_400].into_iter().enumerate() {
        // The last round also has events arriving throughout.
        let sim = start(slow_sim_config(if round == 2 { 50.0 } else { 0.0 })).await;
        let env = Env::new();
        let status = interrupt(&env, &sim, after, "-KILL").await;
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        let stored = events_in(&env.db);
        let requests_before = sim.stats().requests;
        let out = env.sync(&sim, &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("resumed at page"), "{}", text(&out.stdout));
        // Resumed, not restarted: the second run fetched only what was left (plus what
        // arrived meanwhile).
        let pages_left = (3_000 + sim.stats().live_events - stored).div_ceil(50) + 3;
        assert!(sim.stats().requests - requests_before <= pages_left, "round {round}: the walk started over");
        sim.set_live(false);
        assert!(env.sync(&sim, &[]).await.status.success());
        assert_archive_equals(&env, &sim).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_current_page_and_exits_130() {
    let sim = start(slow_sim_config(0.0)).await;
    let env = Env::new();
    let status = interrupt(&env, &sim, 300, "-TERM").await;
    assert_eq!(status.code(), Some(130));
    let s = crate::harness::status(&env).await;
    let org = &s["organizations"][0];
    assert_eq!(org["last_run"]["result"]["result"], "interrupted");
    assert!(org["walk_in_progress"]["next_page"].as_u64().unwrap() > 1);
    assert!(org["cursor"].is_null(), "the cursor moves only when a walk completes");
    assert!(env.sync(&sim, &[]).await.status.success());
    assert_archive_equals(&env, &sim).await;
}
