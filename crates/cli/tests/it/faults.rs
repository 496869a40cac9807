//! Each kind of failure the API can throw at a sync: retried, and nothing lost or
//! duplicated.

use std::time::Duration;

use tfaudit_sim::{Faults, SimConfig};

use crate::harness::*;

async fn survives(faults: Faults, extra: &[&str]) -> tfaudit_sim::SimStats {
    let sim = start(SimConfig { events: 2_000, max_page_size: 100, faults, seed: 3, ..SimConfig::default() }).await;
    let env = Env::new();
    let mut args = vec!["--max-retries", "40"];
    args.extend_from_slice(extra);
    let out = env.sync(&sim, &args).await;
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert_archive_equals(&env, &sim).await;
    let stats = sim.stats();
    assert!(stats.faults > 0, "the fault was never injected");
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors() {
    survives(Faults { error_rate: 0.3, ..Faults::default() }, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_are_waited_out() {
    let stats = survives(Faults { throttle_rate: 0.3, ..Faults::default() }, &[]).await;
    assert!(stats.throttled > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_rate_limit_is_waited_out_by_its_reset_header() {
    // 25 requests/s on the server, no client-side limit: the server's X-RateLimit-Reset
    // is what keeps the sync going.
    let stats = survives(Faults { rate_limit: Some(8), ..Faults::default() }, &[]).await;
    assert!(stats.throttled > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections() {
    survives(Faults { drop_rate: 0.3, ..Faults::default() }, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_bodies() {
    survives(Faults { truncate_rate: 0.3, ..Faults::default() }, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_bodies() {
    survives(Faults { garbage_rate: 0.3, ..Faults::default() }, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_past_the_timeout() {
    survives(
        Faults { slow_rate: 0.2, slow_delay: Duration::from_millis(1500), ..Faults::default() },
        &["--timeout", "1s"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_at_once() {
    survives(
        Faults {
            error_rate: 0.1,
            throttle_rate: 0.1,
            drop_rate: 0.1,
            truncate_rate: 0.1,
            garbage_rate: 0.05,
            slow_rate: 0.05,
            slow_delay: Duration::from_millis(50),
            rate_limit: None,
        },
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_spent_fails_clearly_and_keeps_what_was_stored() {
    let sim = start(SimConfig { events: 500, max_page_size: 100, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    sim.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let out = env.sync(&sim, &["--max-retries", "2"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("after 2 retries") && err.contains("--max-retries"), "{err}");
    assert_eq!(env.exported().await.len(), 500);
    let s = status(&env).await;
    assert_eq!(s["organizations"][0]["last_run"]["result"]["result"], "failed");
    // The server recovers; the next run is complete.
    sim.set_faults(Faults::default());
    sim.add_event(jiff::Timestamp::now().as_second());
    assert!(env.sync(&sim, &[]).await.status.success());
    assert_archive_equals(&env, &sim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_address_fails_fast_with_the_fix() {
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = env
        .command(None, &["sync", "--address", &format!("http://127.0.0.1:{port}")])
        .env("TFE_TOKEN", "t")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("could not connect") && text(&out.stderr).contains("TFE_ADDRESS"),
        "{}",
        text(&out.stderr)
    );
}
