//! The dashboard in a real headless Chromium, driven through chromedriver: load it
//! against an archive synced from the simulator (hostile names included), apply a
//! filter, open an event, and check what is shown. Screenshots are kept in
//! `test-artifacts/`. `scripts/test` installs Debian's chromium and chromium-driver.

use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use tfaudit_sim::SimConfig;

use crate::harness::*;
use crate::serve::{Server, config, wait_for};

fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn find_program(name: &str) -> String {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    found.map(|p| p.display().to_string()).unwrap_or_else(|| {
        panic!("{name} is not installed: run the tests with scripts/test, which installs Debian's chromium and chromium-driver")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_filters_opens_an_event_and_shows_hostile_names_as_text() {
    let chromium = find_program("chromium");
    let chromedriver = find_program("chromedriver");
    let sim = start(SimConfig { events: 2_000, hostile: 0.3, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut driver = tokio::process::Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let profile = env.path("chromium-profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1200",
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
    builder.capabilities(caps.as_object().unwrap().clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let browser = loop {
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    // The overview: a timeline, top actors and actions, a table of events.
    browser.goto(&format!("{}/?since=30d", server.url)).await.unwrap();
    let rows = browser.find_all(Locator::Css("#events tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 50, "a page of 50 events");
    assert!(!browser.find_all(Locator::Css("#timeline rect.bar")).await.unwrap().is_empty());
    // Hostile names are text: not one script element exists, and the markup shows.
    assert!(
        browser.find_all(Locator::Css("script")).await.unwrap().is_empty(),
        "no script element made it into the page"
    );
    assert!(browser.find_all(Locator::Css("img")).await.unwrap().is_empty(), "no <img onerror> made it into the page");
    std::fs::write(artifacts().join("dashboard.png"), browser.screenshot().await.unwrap()).unwrap();
    // Events that carry markup: found by text, shown as text, on the list and the event page.
    browser.goto(&format!("{}/?since=30d&text=%3Cscript%3E", server.url)).await.unwrap();
    assert!(!browser.find_all(Locator::Css("#events tbody tr")).await.unwrap().is_empty());
    assert!(browser.find_all(Locator::Css("script")).await.unwrap().is_empty());
    browser.find(Locator::Css("a.event-link")).await.unwrap().click().await.unwrap();
    let raw = browser.wait().for_element(Locator::Id("raw")).await.unwrap().text().await.unwrap();
    assert!(raw.contains("<script>alert('tfaudit')</script>"), "{raw}");
    assert!(browser.find_all(Locator::Css("script")).await.unwrap().is_empty());
    browser.goto(&format!("{}/?since=30d", server.url)).await.unwrap();

    // Apply a filter through the form.
    browser.find(Locator::Id("type")).await.unwrap().send_keys("authentication_token").await.unwrap();
    browser.find(Locator::Id("apply")).await.unwrap().click().await.unwrap();
    browser
        .wait()
        .for_url(
            &format!("{}/?since=30d&actor=&type=authentication_token&action=&org=&text=", server.url).parse().unwrap(),
        )
        .await
        .ok();
    let url = browser.current_url().await.unwrap();
    assert!(url.as_str().contains("type=authentication_token"), "{url}");
    let rows = browser.find_all(Locator::Css("#events tbody tr")).await.unwrap();
    assert!(!rows.is_empty());
    for row in &rows {
        let cells = row.find_all(Locator::Css("td")).await.unwrap();
        assert_eq!(cells[2].text().await.unwrap(), "authentication_token");
    }
    let heading = browser.find(Locator::Css(".timeline h2")).await.unwrap().text().await.unwrap();
    let expected = served(&sim)
        .values()
        .filter(|j| serde_json::from_str::<serde_json::Value>(j).unwrap()["resource"]["type"] == "authentication_token")
        .count();
    assert!(heading.starts_with(&format!("{expected} events")), "{heading} (expected {expected})");
    std::fs::write(artifacts().join("dashboard-filtered.png"), browser.screenshot().await.unwrap()).unwrap();

    // Open the first event.
    let link = browser.find(Locator::Css("a.event-link")).await.unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    link.click().await.unwrap();
    let id_cell = browser.wait().for_element(Locator::Id("event-id")).await.unwrap();
    let id = id_cell.text().await.unwrap();
    assert!(href.ends_with(&id), "{href} / {id}");
    let raw = browser.find(Locator::Id("raw")).await.unwrap().text().await.unwrap();
    let original: serde_json::Value = serde_json::from_str(&served(&sim)[&id]).unwrap();
    // The page shows invisible and bidi characters as `\u{…}`: put them back to compare.
    let raw = unescape_invisible(&raw);
    let shown: serde_json::Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("the event page's JSON does not parse ({e}): {raw}"));
    assert_eq!(shown, original, "the event page shows the original event");
    std::fs::write(artifacts().join("event.png"), browser.screenshot().await.unwrap()).unwrap();

    // Alerts and status pages render.
    browser.goto(&format!("{}/status", server.url)).await.unwrap();
    let status = browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(status.contains("acme") && status.contains("current") && status.contains("Synced by"), "{status}");
    browser.goto(&format!("{}/alerts", server.url)).await.unwrap();
    assert!(browser.find(Locator::Css("h1")).await.unwrap().text().await.unwrap().contains("Alerts"));

    browser.close().await.unwrap();
    let _ = driver.kill().await;
    server.stop().await;
}

/// An event of `sim`'s organization with this id and `meta`, stamped now.
/// The text with each `\u{hex}` the page wrote for an invisible character (one not
/// itself escaped by a backslash) turned back into the character.
fn unescape_invisible(shown: &str) -> String {
    let mut out = String::with_capacity(shown.len());
    let mut rest = shown;
    while let Some(at) = rest.find("\\u{") {
        let backslashes = rest[..at].chars().rev().take_while(|c| *c == '\\').count();
        let end = rest[at..].find('}').map(|e| at + e);
        let decoded = end.and_then(|end| u32::from_str_radix(&rest[at + 3..end], 16).ok()).and_then(char::from_u32);
        match (backslashes % 2, decoded, end) {
            (0, Some(c), Some(end)) => {
                out.push_str(&rest[..at]);
                out.push(c);
                rest = &rest[end + 1..];
            }
            _ => {
                out.push_str(&rest[..at + 3]);
                rest = &rest[at + 3..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn event_text(id: &str, meta: &str) -> (i64, String) {
    let now = jiff::Timestamp::now();
    let head = serde_json::json!({
        "id": id, "version": "0", "type": "Resource",
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
        "auth": {"accessor_id": "user-Deep", "description": "deep", "type": "Client", "impersonator_id": null,
                 "organization_id": SimConfig::default().organization_id},
        "request": {"id": "req-deep"},
    });
    let head = head.to_string();
    let text = format!(
        r#"{},"resource":{{"id":"res-1","type":"workspace","action":"update","meta":{meta}}}}}"#,
        head.trim_end_matches('}')
    );
    (now.as_second(), text)
}

async fn event_page(server: &Server, id: &str) -> (u16, String) {
    let encoded: String = form_urlencoded_path(id);
    let r = server.get(&format!("/events/{encoded}")).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

fn form_urlencoded_path(id: &str) -> String {
    id.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_event_renders_bounded() {
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "[alerts]\nenabled = false\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;
    let depth = 10_000;
    let meta = format!("{}\"<b>bottom</b>\"{}", "[".repeat(depth), "]".repeat(depth));
    let (ts, raw) = event_text("deep-event-1", &meta);
    assert!(raw.len() < 21_000, "a 20 KB event");
    sim.add_event_text(ts, "deep-event-1", raw.clone());
    wait_for("the deep event", async || server.get("/api/events/deep-event-1").await.status() == 200).await;
    for _ in 0..4 {
        let (status, page) = event_page(&server, "deep-event-1").await;
        assert_eq!(status, 200);
        // Quadratic indentation would be 10,000² spaces; bounded, it is the event and a little.
        assert!(page.len() < raw.len() + 20_000, "{} bytes for a {} byte event", page.len(), raw.len());
        assert!(
            page.contains("&lt;b&gt;bottom&lt;&#x2f;b&gt;") || page.contains("&lt;b&gt;bottom&lt;/b&gt;"),
            "the deep rest is shown, escaped"
        );
        assert!(!page.contains("<b>bottom"));
    }
    // The API gives it back exactly.
    assert_eq!(server.get("/api/events/deep-event-1").await.text().await.unwrap(), raw);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_id_is_escaped_on_the_event_page() {
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "[alerts]\nenabled = false\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;
    let id = "evil-\u{1b}[31m-\u{202e}txt.exe-<i>";
    let (ts, raw) = event_text(id, "null");
    sim.add_event_text(ts, id, raw);
    wait_for("the hostile id", async || {
        server.get("/api/events?text=evil-&since=1h").await.json::<serde_json::Value>().await.unwrap()["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
    .await;
    let (status, page) = event_page(&server, id).await;
    assert_eq!(status, 200, "{page}");
    let explanation = page.split("id=\"explanation\">").nth(1).unwrap().split("</p>").next().unwrap();
    assert!(!explanation.is_empty(), "the event in plain words");
    for raw_char in ['\u{1b}', '\u{202e}'] {
        assert!(!page.contains(raw_char), "{raw_char:?} shown raw on the event page");
    }
    assert!(!page.contains("<i>"), "markup in the id is escaped");
    let title = page.split("<title>").nth(1).unwrap().split("</title>").next().unwrap();
    assert!(title.contains(r"evil-\u{1b}[31m-\u{202e}txt.exe-&lt;i&gt;"), "{title}");
    let cell = page.split("id=\"event-id\">").nth(1).unwrap().split("</td>").next().unwrap();
    assert_eq!(cell, r"evil-\u{1b}[31m-\u{202e}txt.exe-&lt;i&gt;");
    // The link to the original JSON still names the event itself.
    assert!(page.contains("/api/events/evil-%1B%5B31m-%E2%80%AEtxt.exe-%3Ci%3E"), "{page}");
    // The list links to it the same way, and shows no raw control either.
    let list = server.get("/?since=1h&text=evil-").await.text().await.unwrap();
    assert!(list.contains("/events/evil-%1B%5B31m-%E2%80%AEtxt.exe-%3Ci%3E"), "{list}");
    assert!(!list.contains('\u{1b}') && !list.contains('\u{202e}'));
    server.stop().await;
}
