//! Walks against a real SQLite archive in a temp dir, over real HTTP on 127.0.0.1: a
//! scripted API (wiremock) for exact pages and faults, the simulator for live arrivals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tfaudit_api::{Client, ClientOptions, RetryPolicy, Token};
use tfaudit_store::Store;
use tfaudit_store_sqlite::{OpenMode, SqliteStore};
use tokio_util::sync::CancellationToken;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::{NoProgress, SyncError, SyncReport, WalkOptions, sync};

const SOURCE: &str = "acme";

/// How the scripted API paginates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paging {
    /// As documented: `next_page` null on the last page, totals given.
    Honest,
    /// Always a next page, with the honest totals, and past the end a new event on
    /// each page (so that the walk never sees an empty or a repeated one).
    EndlessNext,
    /// The same first page whatever page is asked for, and no pagination object.
    IgnoresPageNumber,
    /// A new page of new events for every page asked for, and no pagination object.
    Bottomless,
}

/// A scripted audit trail API: `events` newest first, `size` per page.
struct Api {
    events: Vec<String>,
    size: usize,
    paging: Paging,
    /// A page number answered 500 while set (0: none).
    fail_page: AtomicU64,
}

impl Api {
    fn new(events: Vec<String>, size: usize, paging: Paging) -> Arc<Self> {
        Arc::new(Self { events, size, paging, fail_page: AtomicU64::new(0) })
    }

    fn body(&self, page: u64) -> Vec<u8> {
        let pages = self.events.len().div_ceil(self.size) as u64;
        let slice = |p: u64| {
            let start = ((p - 1) as usize * self.size).min(self.events.len());
            self.events[start..(start + self.size).min(self.events.len())].join(",")
        };
        let data = match self.paging {
            Paging::Honest => slice(page),
            Paging::EndlessNext if page <= pages => slice(page),
            Paging::EndlessNext => event(&format!("past-{page}"), Timestamp::now().as_second() - page as i64),
            Paging::IgnoresPageNumber => slice(1),
            Paging::Bottomless => event(&format!("bottomless-{page}"), Timestamp::now().as_second() - page as i64),
        };
        let pagination = match self.paging {
            Paging::Honest | Paging::EndlessNext => {
                let next =
                    if self.paging == Paging::Honest && page >= pages { "null".into() } else { (page + 1).to_string() };
                format!(
                    r#","pagination":{{"current_page":{page},"next_page":{next},"total_pages":{pages},"total_count":{}}}"#,
                    self.events.len()
                )
            }
            Paging::IgnoresPageNumber | Paging::Bottomless => String::new(),
        };
        format!(r#"{{"data":[{data}]{pagination}}}"#).into_bytes()
    }
}

struct Responder(Arc<Api>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let page =
            request.url.query_pairs().find(|(k, _)| k == "page[number]").and_then(|(_, v)| v.parse().ok()).unwrap_or(1);
        if self.0.fail_page.load(Ordering::SeqCst) == page {
            return ResponseTemplate::new(500);
        }
        ResponseTemplate::new(200).set_body_raw(self.0.body(page), "application/json")
    }
}

fn event(id: &str, ts: i64) -> String {
    let ts = Timestamp::from_second(ts).unwrap();
    format!(
        r#"{{"id":"{id}","timestamp":"{}","auth":{{"organization_id":"org-T"}}}}"#,
        tfaudit_api::time::format_since(ts)
    )
}

/// `n` events a second apart, the newest `age` seconds old.
fn events(n: usize, age: i64) -> Vec<String> {
    let now = Timestamp::now().as_second();
    (0..n).map(|i| event(&format!("e{i}"), now - age - i as i64)).collect()
}

async fn serve(api: &Arc<Api>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("GET")).respond_with(Responder(api.clone())).mount(&server).await;
    server
}

fn archive() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("archive.db"), OpenMode::CreateIfMissing).unwrap();
    (dir, Arc::new(store))
}

fn client(uri: &str) -> Client {
    let mut options = ClientOptions::new(uri, Token::new("sync-test-token").unwrap());
    options.rate_limit = None;
    options.retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    Client::new(options).unwrap()
}

fn options(page_size: u32) -> WalkOptions {
    WalkOptions { page_size, reconcile_every: Duration::ZERO, ..WalkOptions::default() }
}

/// A sync through [`tfaudit_store::Guarded`]: every walk in these tests fails if it
/// calls the archive on an async thread instead of through `tfaudit_store::blocking`.
async fn run(store: &Arc<dyn Store>, client: &Client, options: WalkOptions) -> Result<SyncReport, SyncError> {
    let guarded = tfaudit_store::Guarded::wrap(store.clone());
    sync(guarded, client, SOURCE, options, &NoProgress, &CancellationToken::new()).await
}

fn source(store: &Arc<dyn Store>, client: &Client) -> tfaudit_store::Source {
    store.source(SOURCE, client.address()).unwrap()
}

fn stored(store: &Arc<dyn Store>) -> u64 {
    store.status().unwrap().iter().map(|s| s.events).sum()
}

/// (page, since) of each request the server received, in order.
async fn requests(server: &MockServer) -> Vec<(u64, Option<String>)> {
    let received = server.received_requests().await.unwrap();
    received
        .iter()
        .map(|r| {
            let q = |k: &str| r.url.query_pairs().find(|(key, _)| key == k).map(|(_, v)| v.into_owned());
            (q("page[number]").and_then(|p| p.parse().ok()).unwrap_or(0), q("since"))
        })
        .collect()
}

#[tokio::test]
async fn cursor_moves_only_after_a_complete_walk_and_a_failed_walk_resumes_at_the_next_page() {
    let api = Api::new(events(35, 5), 10, Paging::Honest);
    let server = serve(&api).await;
    let (_dir, store) = archive();
    let c = client(&server.uri());
    api.fail_page.store(3, Ordering::SeqCst);
    let e = run(&store, &c, options(10)).await.unwrap_err();
    assert!(matches!(e, SyncError::Api(tfaudit_api::ApiError::RetriesExhausted { .. })), "{e}");
    let s = source(&store, &c);
    assert_eq!(s.cursor, None, "the cursor must not move on an unfinished walk");
    assert_eq!(s.walk.as_ref().map(|w| w.next_page), Some(3));
    assert_eq!(stored(&store), 20, "the two pages read before the failure are kept");

    api.fail_page.store(0, Ordering::SeqCst);
    server.reset().await;
    Mock::given(wiremock::matchers::method("GET")).respond_with(Responder(api.clone())).mount(&server).await;
    let report = run(&store, &c, options(10)).await.unwrap();
    assert!(report.complete);
    assert_eq!(report.resumed_at_page, Some(3));
    assert_eq!(requests(&server).await, [(3, None), (4, None)], "resumed with the same since, not from page 1");
    assert_eq!(stored(&store), 35);
    let newest = Timestamp::from_second(Timestamp::now().as_second() - 5).unwrap();
    let cursor = source(&store, &c).cursor.unwrap();
    assert!((cursor.as_second() - newest.as_second()).abs() <= 1, "{cursor} vs {newest}");
    assert_eq!(source(&store, &c).walk, None);
}

#[tokio::test]
async fn the_next_walk_asks_from_the_cursor_minus_the_overlap() {
    let api = Api::new(events(15, 60), 10, Paging::Honest);
    let server = serve(&api).await;
    let (_dir, store) = archive();
    let c = client(&server.uri());
    run(&store, &c, options(10)).await.unwrap();
    let cursor = source(&store, &c).cursor.unwrap();
    server.reset().await;
    Mock::given(wiremock::matchers::method("GET")).respond_with(Responder(api.clone())).mount(&server).await;
    let report = run(&store, &c, WalkOptions { overlap: Duration::from_secs(30), ..options(10) }).await.unwrap();
    let since = tfaudit_api::time::format_since(cursor - SignedDuration::from_secs(30));
    assert_eq!(requests(&server).await, [(1, Some(since.clone())), (2, Some(since))]);
    assert_eq!((report.tally.new_events, report.tally.duplicates), (0, 15), "nothing stored twice");
}

#[tokio::test]
async fn a_cursor_older_than_the_retention_records_a_gap() {
    let day = 86_400;
    let old = Api::new(events(5, 20 * day), 10, Paging::Honest);
    let old_server = serve(&old).await;
    let (_dir, store) = archive();
    // The same source (same address) served first 20-day-old events, then recent ones.
    let recent = Api::new(events(5, 60), 10, Paging::Honest);
    let c = client(&old_server.uri());
    run(&store, &c, options(10)).await.unwrap();
    let old_cursor = source(&store, &c).cursor.unwrap();
    old_server.reset().await;
    Mock::given(wiremock::matchers::method("GET")).respond_with(Responder(recent.clone())).mount(&old_server).await;
    let report = run(&store, &c, options(10)).await.unwrap();
    let gap = report.gap.expect("a gap");
    assert_eq!(gap.from, old_cursor);
    let oldest_recent = Timestamp::now().as_second() - 60 - 4;
    assert!((gap.to.as_second() - oldest_recent).abs() <= 1, "the gap ends at the oldest event the API still holds");
    assert_eq!(store.status().unwrap()[0].gaps.len(), 1);
    // Continuity afterwards: no second gap.
    assert_eq!(run(&store, &c, options(10)).await.unwrap().gap, None);
}

#[tokio::test]
async fn endless_next_page_is_bounded_by_the_servers_own_count() {
    let api = Api::new(events(30, 5), 10, Paging::EndlessNext);
    let server = serve(&api).await;
    let (_dir, store) = archive();
    let c = client(&server.uri());
    let e = run(&store, &c, options(10)).await.unwrap_err();
    assert!(matches!(e, SyncError::Unending(_)), "{e}");
    let text = e.to_string();
    // 3 pages said, plus the slack for arrivals (3 / 10 + 5).
    assert!(text.contains("after page 8, though it said the listing holds 3 pages"), "{text}");
    assert!(text.contains("the next sync resumes at page 9"), "{text}");
    assert_eq!(requests(&server).await.len(), 8);
    assert_eq!(stored(&store), 35, "what was read is kept");
    let s = source(&store, &c);
    assert_eq!(s.cursor, None);
    assert_eq!(s.walk.map(|w| w.next_page), Some(9));
    let status = store.status().unwrap();
    assert!(
        matches!(&status[0].last_run.as_ref().unwrap().result, Some(tfaudit_store::RunResult::Failed(t)) if t.contains("after page 8"))
    );
}

#[tokio::test]
async fn repeated_identical_pages_are_bounded() {
    let api = Api::new(events(10, 5), 10, Paging::IgnoresPageNumber);
    let server = serve(&api).await;
    let (_dir, store) = archive();
    let c = client(&server.uri());
    let e = run(&store, &c, options(10)).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("sent the same 10 elements on 4 pages in a row up to page 4"), "{text}");
    assert_eq!(requests(&server).await.len(), 4);
    assert_eq!(stored(&store), 10);
    assert_eq!(source(&store, &c).cursor, None);
}

#[tokio::test]
async fn a_walk_without_totals_is_bounded_by_max_pages() {
    let api = Api::new(Vec::new(), 10, Paging::Bottomless);
    let server = serve(&api).await;
    let (_dir, store) = archive();
    let c = client(&server.uri());
    let e = run(&store, &c, WalkOptions { max_pages: 12, ..options(10) }).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("after 12 pages in this sync") && text.contains("--max-pages"), "{text}");
    assert_eq!(requests(&server).await.len(), 12);
    assert_eq!(stored(&store), 12);
    // The next sync goes on from page 13, and reads at most 12 more.
    server.reset().await;
    Mock::given(wiremock::matchers::method("GET")).respond_with(Responder(api.clone())).mount(&server).await;
    run(&store, &c, WalkOptions { max_pages: 12, ..options(10) }).await.unwrap_err();
    let asked: Vec<u64> = requests(&server).await.iter().map(|r| r.0).collect();
    assert_eq!(asked, (13..=24).collect::<Vec<_>>());
}

#[tokio::test]
async fn invalid_utf8_element_is_rejected_and_its_page_stored() {
    let server = MockServer::start().await;
    let now = Timestamp::now().as_second();
    let mut body =
        format!(r#"{{"data":[{},{{"id":"bad","timestamp":"2026-01-01T00:00:00Z","x":""#, event("good-1", now))
            .into_bytes();
    body.extend_from_slice(b"\xc3\x28");
    body.extend_from_slice(
        format!(r#""}},{}],"pagination":{{"next_page":null}}}}"#, event("good-2", now - 1)).as_bytes(),
    );
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let (_dir, store) = archive();
    let c = client(&server.uri());
    let report = run(&store, &c, options(10)).await.unwrap();
    assert!(report.complete, "the walk passes the bad element");
    assert_eq!((report.tally.new_events, report.tally.rejects), (2, 1));
    let rejects = store.rejects(10).unwrap();
    assert_eq!(rejects.len(), 1);
    assert!(rejects[0].reason.starts_with("invalid UTF-8 at byte"), "{}", rejects[0].reason);
    assert!(rejects[0].raw.contains(r#""id":"bad""#) && rejects[0].raw.contains(r"\xC3("), "{}", rejects[0].raw);
    assert!(source(&store, &c).cursor.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_arrivals_stay_within_the_walk_bounds() {
    use tfaudit_sim::{Sim, SimConfig};
    // Small pages and fast arrivals: pages shift under the walk and the server's totals
    // grow while it walks; none of that may look like an endless listing.
    let sim = Sim::start(
        SimConfig { events: 600, max_page_size: 10, live_rate: 300.0, late_fraction: 0.0, ..SimConfig::default() },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let before: Vec<String> = sim.events().into_iter().filter_map(|e| e.id).collect();
    let (_dir, store) = archive();
    let mut options = ClientOptions::new(sim.url(), Token::new(sim.token()).unwrap());
    options.rate_limit = None;
    let c = Client::new(options).unwrap();
    let report = run(&store, &c, WalkOptions { page_size: 10, ..WalkOptions::default() }).await.unwrap();
    assert!(report.complete);
    for id in &before {
        assert!(store.event(id).unwrap().is_some(), "{id} missing");
    }
    sim.stop().await;
}

/// Answers each page with the body a function of its number gives.
struct Script(Box<dyn Fn(u64) -> String + Send + Sync>);

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let page =
            request.url.query_pairs().find(|(k, _)| k == "page[number]").and_then(|(_, v)| v.parse().ok()).unwrap_or(1);
        ResponseTemplate::new(200).set_body_raw((self.0)(page), "application/json")
    }
}

/// A way of saying where a listing ends: its name, and the pagination of each page.
type Reading = (&'static str, fn(u64) -> String);

#[tokio::test]
async fn every_reading_of_pagination_walks_to_the_end_within_the_bounds() {
    // Three pages of events each; how page 3 (or an empty page 4) says the end.
    let readings: [Reading; 6] = [
        ("next_page null", |p| {
            format!(
                r#""pagination":{{"current_page":{p},"next_page":{},"total_pages":3}}"#,
                if p < 3 { (p + 1).to_string() } else { "null".into() }
            )
        }),
        ("next_page 0", |p| {
            format!(
                r#""pagination":{{"current_page":{p},"next_page":{},"total_pages":3}}"#,
                if p < 3 { p + 1 } else { 0 }
            )
        }),
        ("no next_page, totals as strings", |p| {
            format!(r#""pagination":{{"current_page":"{p}","total_pages":"3","total_count":"30"}}"#)
        }),
        ("meta.pagination, kebab keys", |p| {
            format!(
                r#""meta":{{"pagination":{{"current-page":{p},"next-page":{},"total-pages":3,"total-count":30}}}}"#,
                if p < 3 { (p + 1).to_string() } else { "null".into() }
            )
        }),
        ("no pagination: an empty page ends", |_| r#""other":1"#.to_owned()),
        ("data null ends", |p| format!(r#""pagination":{{"next_page":{}}}"#, p + 1)),
    ];
    for (name, pagination) in readings {
        let server = MockServer::start().await;
        let now = Timestamp::now().as_second();
        let respond = Script(Box::new(move |page| {
            let data = if page > 3 {
                if name == "data null ends" { "null".to_owned() } else { "[]".to_owned() }
            } else if name == "data null ends" && page == 3 {
                "null".to_owned()
            } else {
                let ids = (0..10).map(|i| event(&format!("p{page}-{i}"), now - (page * 10 + i) as i64));
                format!("[{}]", ids.collect::<Vec<_>>().join(","))
            };
            format!(r#"{{"data":{data},{}}}"#, pagination(page))
        }));
        Mock::given(wiremock::matchers::method("GET")).respond_with(respond).mount(&server).await;
        let (_dir, store) = archive();
        let c = client(&server.uri());
        let report = run(&store, &c, WalkOptions { max_pages: 5, ..options(10) })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.complete, "{name}");
        let expected = if name == "data null ends" { 20 } else { 30 };
        assert_eq!(stored(&store), expected, "{name}");
        assert!(source(&store, &c).cursor.is_some(), "{name}");
    }
}

#[tokio::test]
#[should_panic(expected = "called on an async thread")]
async fn guarded_store_panics_when_called_on_an_async_thread() {
    // The guard the other tests rely on: a direct call from async code fails.
    let (_dir, store) = archive();
    let _ = tfaudit_store::Guarded::wrap(store).status();
}
