//! The API client, status code by status code, against wiremock speaking the API's
//! wire format.

use std::time::{Duration, Instant};

use tfaudit_api::{ApiError, Client, ClientOptions, PageRequest, RetryPolicy, Token};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PAGE: &str = r#"{"data":[{"id":"ae66e491-db59-457c-8445-9c908ee726ae","version":"0","type":"Resource","timestamp":"2020-06-30T17:52:46.000Z","auth":{"accessor_id":"user-MaPuLxAXvtq2PWTH","description":"pveverka","type":"Client","impersonator_id":null,"organization_id":"org-AGLwRmx1snv34Yts"},"request":{"id":"4df584d4-7e2a-01e6-6cc0-4adbefa020e6"},"resource":{"id":"at-sjt83qTw3GZatuPm","type":"authentication_token","action":"create","meta":null}}],"pagination":{"current_page":1,"prev_page":null,"next_page":null,"total_pages":1,"total_count":1}}"#;

fn client(server: &MockServer, retries: u32) -> Client {
    let mut options = ClientOptions::new(server.uri(), Token::new("secret-token").unwrap());
    options.rate_limit = None;
    options.retry = RetryPolicy {
        max_retries: retries,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    Client::new(options).unwrap()
}

fn request() -> PageRequest {
    PageRequest { since: Some("2020-05-30T17:52:46Z".parse().unwrap()), page: 1, page_size: 1000 }
}

fn ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(PAGE, "application/json")
}

fn json_api_error(status: u16, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        format!(r#"{{"errors":[{{"status":"{status}","title":"t","detail":"{detail}"}}]}}"#),
        "application/vnd.api+json",
    )
}

/// Mounts `first` for the first request only, then a good page.
async fn then_ok(server: &MockServer, first: ResponseTemplate, times: u64) {
    Mock::given(method("GET")).respond_with(first).up_to_n_times(times).mount(server).await;
    Mock::given(method("GET")).respond_with(ok()).mount(server).await;
}

#[tokio::test]
async fn a_page_request_carries_what_the_api_expects() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/organization/audit-trail"))
        .and(query_param("page[number]", "1"))
        .and(query_param("page[size]", "1000"))
        .and(query_param("since", "2020-05-30T17:52:46.000Z"))
        .and(header("authorization", "Bearer secret-token"))
        .and(header("accept", "application/json"))
        .and(header("user-agent", concat!("tfaudit/", env!("CARGO_PKG_VERSION"))))
        .respond_with(ok())
        .expect(1)
        .mount(&server)
        .await;
    let page = client(&server, 0).fetch_page(&request()).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page.next_page(), None);
    let received = server.received_requests().await.unwrap();
    let query = received[0].url.query().unwrap();
    assert!(
        query.contains("page%5Bnumber%5D=1") && query.contains("page%5Bsize%5D=1000"),
        "brackets percent-encoded: {query}"
    );
}

#[tokio::test]
async fn status_401_is_not_retried_and_says_how_to_get_a_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(json_api_error(401, "unauthorized")).expect(1).mount(&server).await;
    let e = client(&server, 5).fetch_page(&request()).await.unwrap_err();
    assert!(matches!(e, ApiError::Unauthorized { .. }));
    assert!(e.to_string().contains("TFE_TOKEN"));
}

#[tokio::test]
async fn status_404_is_not_retried_and_names_the_entitlement() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(json_api_error(404, "not found")).expect(1).mount(&server).await;
    let e = client(&server, 5).fetch_page(&request()).await.unwrap_err();
    assert!(matches!(e, ApiError::NotEntitled { .. }));
    assert!(e.to_string().contains("not Terraform Enterprise"));
}

#[tokio::test]
async fn other_client_errors_are_not_retried_and_show_the_servers_detail_safely() {
    for status in [400u16, 403, 422] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(json_api_error(status, "bad\\u001b[31m since"))
            .expect(1)
            .mount(&server)
            .await;
        let e = client(&server, 5).fetch_page(&request()).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&status.to_string()) && text.contains("bad") && !text.contains('\u{1b}'), "{text}");
    }
}

#[tokio::test]
async fn server_errors_and_408_are_retried() {
    for status in [500u16, 502, 503, 504, 408] {
        let server = MockServer::start().await;
        then_ok(&server, ResponseTemplate::new(status), 2).await;
        let c = client(&server, 5);
        c.fetch_page(&request()).await.unwrap();
        assert_eq!(c.stats().retries(), 2, "status {status}");
    }
}

#[tokio::test]
async fn status_429_waits_the_rate_limit_reset_seconds() {
    let server = MockServer::start().await;
    let throttled =
        json_api_error(429, "You have exceeded the API's rate limit.").insert_header("x-ratelimit-reset", "0.3");
    then_ok(&server, throttled, 1).await;
    let started = Instant::now();
    client(&server, 5).fetch_page(&request()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn status_429_honours_retry_after_when_present() {
    let server = MockServer::start().await;
    then_ok(&server, ResponseTemplate::new(429).insert_header("retry-after", "1"), 1).await;
    let started = Instant::now();
    client(&server, 5).fetch_page(&request()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_200_that_is_not_a_page_is_retried() {
    for body in ["<html>proxy error</html>", r#"{"data":[{"id":"a"},"#, r#"{"errors":[]}"#] {
        let server = MockServer::start().await;
        then_ok(&server, ResponseTemplate::new(200).set_body_raw(body, "application/json"), 1).await;
        let c = client(&server, 5);
        c.fetch_page(&request()).await.unwrap();
        assert_eq!(c.stats().retries(), 1, "{body}");
    }
}

#[tokio::test]
async fn a_spent_retry_budget_is_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(503)).expect(4).mount(&server).await;
    let e = client(&server, 3).fetch_page(&request()).await.unwrap_err();
    assert!(matches!(e, ApiError::RetriesExhausted { retries: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("503"));
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let server = MockServer::start().await;
    then_ok(&server, ok().set_delay(Duration::from_secs(3)), 1).await;
    let mut options = ClientOptions::new(server.uri(), Token::new("t").unwrap());
    options.timeout = Duration::from_millis(300);
    options.retry.min_delay = Duration::from_millis(5);
    let c = Client::new(options).unwrap();
    c.fetch_page(&request()).await.unwrap();
    assert_eq!(c.stats().retries(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_token_stays_home() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "http://127.0.0.2:9/steal"))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server, 3).fetch_page(&request()).await.unwrap_err();
    assert!(matches!(e, ApiError::Refused { status: 302, .. }), "{e:?}");
}

#[tokio::test]
async fn the_client_side_limit_spaces_requests() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ok()).mount(&server).await;
    let mut options = ClientOptions::new(server.uri(), Token::new("t").unwrap());
    options.rate_limit = std::num::NonZeroU32::new(5);
    let c = Client::new(options).unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        c.fetch_page(&request()).await.unwrap();
    }
    // A burst of 5, then 5 more at 5/s: at least about a second.
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}
