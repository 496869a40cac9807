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
    // Each slow answer would take 30 s; with --timeout 1s the client gives up on it
    // and asks again, once per slow answer.
    let slow_delay = Duration::from_secs(30);
    let sim = start(SimConfig {
        events: 2_000,
        max_page_size: 100,
        faults: Faults { slow_rate: 0.2, slow_delay, ..Faults::default() },
        seed: 3,
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    let started = std::time::Instant::now();
    let out = env.sync(&sim, &["--max-retries", "40", "--timeout", "1s", "--json"]).await;
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let slow = sim.stats().faults;
    assert!(slow > 0, "no answer was slow");
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(report["retries"], slow, "one retry per slow answer given up on");
    assert_eq!(report["requests"], 20 + slow, "each page asked again after its slow answer");
    assert!(took < slow_delay / 2, "the sync waited out a slow answer: {took:?}");
    assert_archive_equals(&env, &sim).await;
}

/// Syncs against a server whose page 1 is fine and whose page 2 is `page2`, with a
/// 1 MiB cap: the sync fails promptly with the message, keeping page 1.
async fn second_page_over_the_cap(page2: fn() -> axum::response::Response, expected: &str) {
    let url = serve_pages(move |page, _| if page == 1 { first_of_two_pages("kept-1") } else { page2() }).await;
    let env = Env::new();
    let started = std::time::Instant::now();
    let out = env
        .command(None, &["sync", "--address", &url, "--max-page-bytes", "1MiB", "--retry-delay", "5ms"])
        .env("TFE_TOKEN", "t")
        .output()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("sent a page larger than the limit of 1048576 bytes{expected}"))
            && err.contains("raise --max-page-bytes (max_page_bytes in [sync])"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(env.exported().await.contains_key("kept-1"), "page 1 is kept");
    let s = status(&env).await;
    assert_eq!(s["organizations"][0]["cursor"], serde_json::Value::Null);
    assert_eq!(s["organizations"][0]["walk_in_progress"]["next_page"], 2, "the next run resumes at page 2");
}

fn endless_body() -> axum::body::Body {
    let chunk = bytes_of_spaces();
    axum::body::Body::from_stream(futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone())))
}

fn bytes_of_spaces() -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; 64 * 1024])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_body_over_the_cap_fails_with_a_clear_message() {
    second_page_over_the_cap(
        || {
            let mut r = axum::response::Response::new(endless_body());
            r.headers_mut().insert(axum::http::header::CONTENT_LENGTH, 10_000_000_000u64.into());
            r
        },
        " (it declared 10000000000 bytes)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_chunked_page_body_fails_promptly_with_a_clear_message() {
    second_page_over_the_cap(|| axum::response::Response::new(endless_body()), ";").await;
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
