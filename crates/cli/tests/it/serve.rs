//! `tfaudit serve` end to end: organizations on their own schedules, readiness, the
//! JSON API against its OpenAPI document, access control, metrics, shutdown.

use std::time::{Duration, Instant};

use serde_json::Value;
use tfaudit_sim::{Faults, Sim, SimConfig};
use tokio::io::AsyncBufReadExt;

use crate::harness::*;

/// A running `tfaudit serve` and the addresses it reported.
pub struct Server {
    pub child: tokio::process::Child,
    pub url: String,
    pub metrics: Option<String>,
}

impl Server {
    /// Starts `tfaudit --config <config> serve` on free ports and waits until it listens.
    pub async fn start(env: &Env, config: &std::path::Path, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = env.command(
            None,
            &[
                "--config",
                config.to_str().unwrap(),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
        );
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut url, mut metrics) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while url.is_none() || metrics.is_none() {
            assert!(Instant::now() < deadline, "serve never said where it listens");
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .unwrap()
                .unwrap()
                .expect("serve exited early");
            let addr =
                line.split_whitespace().find(|w| w.starts_with("http://")).map(|w| w.trim_end_matches('/').to_owned());
            if line.contains("dashboard and API at") {
                url = addr;
            } else if line.contains("metrics at") {
                metrics = addr.map(|a| a.trim_end_matches("/metrics").to_owned());
            }
        }
        // Keep reading stderr so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, url: url.unwrap(), metrics }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.url)).await.unwrap()
    }

    pub async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap()
    }
}

pub fn config(env: &Env, orgs: &[(&str, &Sim)], extra: &str) -> std::path::PathBuf {
    let mut text =
        String::from("[sync]\ninterval = \"1s\"\nrate_limit = 0\nretry_delay = \"5ms\"\nmax_retries = 1\n\n");
    for (name, sim) in orgs {
        text.push_str(&format!(
            "[[organization]]\nname = \"{name}\"\naddress = \"{}\"\ntoken_env = \"TOKEN_{}\"\n\n",
            sim.url(),
            name.to_uppercase()
        ));
    }
    text.push_str(extra);
    let path = env.path("tfaudit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_organization_never_holds_up_another_and_readiness_says_which() {
    let alpha = start(SimConfig { events: 300, live_rate: 20.0, ..SimConfig::default() }).await;
    let bravo =
        start(SimConfig { events: 200, seed: 4, organization_id: "org-Bravo".into(), ..SimConfig::default() }).await;
    bravo.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let env = Env::new();
    let cfg = config(&env, &[("alpha", &alpha), ("bravo", &bravo)], "[alerts]\nenabled = false\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ALPHA", alpha.token()), ("TOKEN_BRAVO", bravo.token())]).await;
    // Alpha keeps syncing while bravo fails.
    let mut seen = 0;
    wait_for("alpha to sync several times", async || {
        let s = server.json("/api/status").await;
        let alpha = s["organizations"].as_array().unwrap().iter().find(|o| o["name"] == "alpha").cloned();
        let events = alpha.map_or(0, |a| a["events"].as_u64().unwrap());
        if events > 300 && seen == 0 {
            seen = events;
        }
        seen > 0 && events > seen + 20
    })
    .await;
    let r = server.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let orgs = body["organizations"].as_array().unwrap();
    let alpha_ready = orgs.iter().find(|o| o["name"] == "alpha").unwrap();
    let bravo_ready = orgs.iter().find(|o| o["name"] == "bravo").unwrap();
    assert_eq!(alpha_ready["ready"], true);
    assert_eq!(bravo_ready["ready"], false);
    let reason = bravo_ready["reason"].as_str().unwrap();
    assert!(reason.contains("no successful sync yet") && reason.contains("kept failing"), "{reason}");
    // Bravo recovers.
    bravo.set_faults(Faults::default());
    wait_for("readiness", async || server.get("/readyz").await.status() == 200).await;
    let status = server.stop().await;
    assert_eq!(status.code(), Some(0), "SIGTERM stops serve cleanly");
    assert_archive_equals_for(&env, &bravo, "bravo").await;
}

/// The archive holds every event `sim` serves, under organization `name`.
async fn assert_archive_equals_for(env: &Env, sim: &Sim, name: &str) {
    let out = env.ok(None, &["export", "--org", name]).await;
    let ids: std::collections::BTreeSet<String> =
        out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned()).collect();
    let served: std::collections::BTreeSet<String> = served(sim).into_keys().collect();
    assert_eq!(ids, served);
}

/// Whether `text` matches `pattern`, one of the document's simple anchored patterns.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}")).is_match(text)
}

/// Checks `value` against an OpenAPI schema: required properties present, types,
/// enums and patterns.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut s = doc;
            for part in r.trim_start_matches("#/").split('/') {
                s = &s[part];
            }
            s
        }
        None => schema,
    };
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !ok {
            return Err(format!("{at}: {actual}, documented as {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value}, not one of {allowed:?}"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && let Some(text) = value.as_str()
    {
        assert!(matches_pattern(pattern, text), "{at}: {text:?} does not match the documented pattern {pattern}");
    }
    if let (Some(required), Value::Object(map)) = (schema.get("required").and_then(Value::as_array), value) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                return Err(format!("{at}: missing required {key:?}"));
            }
        }
    }
    if let (Some(props), Value::Object(map)) = (schema.get("properties").and_then(Value::as_object), value) {
        for (key, sub) in props {
            if let Some(v) = map.get(key) {
                conforms(doc, sub, v, &format!("{at}.{key}"))?;
            }
        }
    }
    if let (Some(items), Value::Array(list)) = (schema.get("items"), value) {
        for (i, v) in list.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_pages_filters_and_matches_its_openapi_document() {
    let sim = start(SimConfig { events: 1_000, hostile: 0.1, malformed: 2, ..SimConfig::default() }).await;
    // The simulator draws its hostile names anew with each start second: one actor is
    // named with the SQL injection checked below whatever it drew (about one start in
    // a hundred draws none).
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
    sim.add_event_json(
        then.as_second(),
        &serde_json::json!({
            "id": "named-with-an-injection", "version": "0", "type": "Resource",
            "timestamp": then.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "auth": {"accessor_id": "user-Injection", "description": "'; DROP TABLE events; --", "type": "Client",
                     "impersonator_id": null, "organization_id": SimConfig::default().organization_id},
            "request": {"id": "req-injection"},
            "resource": {"id": "ws-Injection", "type": "workspace", "action": "update", "meta": null}
        }),
    );
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;
    let doc: Value = server.json("/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let schema = |path: &str, status: &str| {
        doc["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"].clone()
    };
    let check = |path: &str, doc_path: &str, status: &str, value: &Value| {
        conforms(&doc, &schema(doc_path, status), value, path).unwrap_or_else(|e| panic!("{e}"));
    };

    // Keyset paging over everything: each event once, newest first, stable while new
    // events arrive between pages: after the third page ten events arrive, and the
    // walk goes on only once the archive holds them.
    let stored = async || server.json("/api/status").await["organizations"][0]["events"].as_u64().unwrap();
    let old: std::collections::BTreeSet<String> = sim.events().into_iter().filter_map(|e| e.id).collect();
    let at_first_page = stored().await;
    assert_eq!(at_first_page, 999, "1,000 generated, 2 of them malformed, and the injection");
    let mut ids = Vec::new();
    let mut arrived = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/api/events?limit=97&since=30d".to_owned(),
            Some(c) => format!("/api/events?limit=97&since=30d&cursor={c}"),
        };
        let page = server.json(&path).await;
        check(&path, "/api/events", "200", &page);
        ids.extend(page["events"].as_array().unwrap().iter().map(|e| e["event"]["id"].as_str().unwrap().to_owned()));
        if pages == 2 {
            for _ in 0..10 {
                arrived.push(sim.add_event(jiff::Timestamp::now().as_second()));
            }
            wait_for("the new events to be stored mid-walk", async || stored().await == at_first_page + 10).await;
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(pages > 3, "the arrivals came between the first and the last page ({pages} pages)");
    assert_eq!(stored().await, at_first_page + 10, "ten events were stored during the walk");
    let unique: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice across pages");
    assert_eq!(unique, old, "every event there when the walk began, once; none that arrived after its first page");
    assert!(arrived.iter().all(|id| !unique.contains(id)));

    // Filters, one event, summary, status, alerts.
    let tokens = server.json("/api/events?type=authentication_token&action=create&since=30d&limit=500").await;
    assert!(
        tokens["events"].as_array().unwrap().iter().all(|e| e["event"]["resource"]["type"] == "authentication_token")
    );
    let first = &tokens["events"][0]["event"];
    let one = server.json(&format!("/api/events/{}", first["id"].as_str().unwrap())).await;
    assert_eq!(&one, first);
    check("/api/events/{id}", "/api/events/{id}", "200", &one);
    let summary = server.json("/api/summary?since=30d&top=5").await;
    check("/api/summary", "/api/summary", "200", &summary);
    assert!(summary["total"].as_u64().unwrap() >= 998);
    let status = server.json("/api/status").await;
    check("/api/status", "/api/status", "200", &status);
    assert_eq!(status["organizations"][0]["rejects"], 2);
    // An alert to check against the document: a token created after the first sync.
    let now = jiff::Timestamp::now();
    sim.add_event_json(
        now.as_second(),
        &serde_json::json!({
            "id": "token-created-for-the-document", "version": "0", "type": "Resource",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "auth": {"accessor_id": "user-Doc", "description": "doc", "type": "Client", "impersonator_id": null,
                     "organization_id": SimConfig::default().organization_id},
            "request": {"id": "req-doc"},
            "resource": {"id": "at-Doc", "type": "authentication_token", "action": "create", "meta": null}
        }),
    );
    let mut alerts = Value::Null;
    wait_for("an alert with its delivery", async || {
        alerts = server.json("/api/alerts?limit=5&rule=token-created").await;
        alerts["alerts"].as_array().is_some_and(|a| a.iter().any(|a| !a["deliveries"].as_array().unwrap().is_empty()))
    })
    .await;
    check("/api/alerts", "/api/alerts", "200", &alerts);
    assert!(alerts["alerts"].as_array().unwrap().iter().any(|a| a["rule"] == "token-created"), "{alerts}");
    let status = server.json("/api/status").await;
    check("/api/status", "/api/status", "200", &status);
    let ready = server.json("/readyz").await;
    check("/readyz", "/readyz", "200", &ready);

    // Errors are JSON and name the parameter; nothing reaches SQL but as a value.
    for (path, status) in [
        ("/api/events?since=soon", 400),
        ("/api/events?limit=100000", 400),
        ("/api/events?cursor=forged", 400),
        ("/api/events/no-such-event", 404),
        ("/api/alerts?state=lost", 400),
        ("/api/summary?top=101", 400),
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    // One of the simulator's hostile names is an SQL injection: it matches literally,
    // as a name and as text, and the archive is intact.
    let injection = "'; DROP TABLE events; --";
    // An actor is found by id or by any name it had: the events of every accessor
    // that was once called that.
    let events: Vec<Value> =
        sim.events().into_iter().filter(|e| e.id.is_some()).map(|e| serde_json::from_str(&e.json).unwrap()).collect();
    let named: Vec<&Value> =
        events.iter().filter(|j| j["auth"]["description"] == injection).map(|j| &j["auth"]["accessor_id"]).collect();
    assert!(!named.is_empty(), "the simulator named someone {injection:?}");
    let expected: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|j| named.contains(&&j["auth"]["accessor_id"]))
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    let before = stored().await;
    // Every page of a filter's matches, by the API's own cursor: a common name can
    // match more events than one page holds.
    let all_ids = |query: &'static str| {
        let server = &server;
        async move {
            let mut ids = std::collections::BTreeSet::new();
            let mut path = format!("/api/events?{query}&since=30d&limit=500");
            loop {
                let page = server.json(&path).await;
                for e in page["events"].as_array().unwrap() {
                    assert!(ids.insert(e["event"]["id"].as_str().unwrap().to_owned()), "an event twice: {e}");
                }
                match page["next_cursor"].as_str() {
                    Some(c) => path = format!("/api/events?{query}&since=30d&limit=500&cursor={c}"),
                    None => return ids,
                }
            }
        }
    };
    let found = all_ids("actor=%27%3B%20DROP%20TABLE%20events%3B%20--").await;
    assert_eq!(found, expected, "exactly the events of the actor with that name");
    let found_by_text = all_ids("text=%27%3B%20DROP%20TABLE%20events%3B%20--").await;
    let with_text: std::collections::BTreeSet<String> =
        sim.events().into_iter().filter(|e| e.json.contains(injection)).filter_map(|e| e.id).collect();
    assert!(!with_text.is_empty());
    assert_eq!(found_by_text, with_text, "exactly the events that carry that text");
    assert_eq!(stored().await, before, "the archive is intact");
    assert_eq!(server.json("/api/events?since=30d&limit=5").await["events"].as_array().unwrap().len(), 5);

    // Read-only, bounded, and the same headers everywhere.
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/api/events", server.url)).body("x").send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = server.get(&format!("/api/events?text={}", "a".repeat(17_000))).await;
    assert_eq!(r.status(), 414);
    let r = server.get("/").await;
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(r.headers().get("access-control-allow-origin").is_none(), "no CORS");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_guards_everything_but_health() {
    let sim = start(SimConfig { events: 50, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "[serve]\naccess_token = { env = \"SERVE_TOKEN\" }\n");
    let token = "0123456789abcdef-serve-token";
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token()), ("SERVE_TOKEN", token)]).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    assert_eq!(client.get(url("/api/status")).send().await.unwrap().status(), 401);
    assert_eq!(
        client.get(url("/api/status")).bearer_auth("wrong-token-wrong-token").send().await.unwrap().status(),
        401
    );
    assert_eq!(client.get(url("/api/status")).bearer_auth(token).send().await.unwrap().status(), 200);
    let page = client.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert!(page.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(client.get(url("/")).basic_auth("anyone", Some(token)).send().await.unwrap().status(), 200);
    assert_eq!(client.get(url("/healthz")).send().await.unwrap().status(), 200);
    server.stop().await;

    // Beyond loopback without a token: refused, with the fix.
    let cfg = config(&env, &[("acme", &sim)], "");
    let out = env
        .command(None, &["--config", cfg.to_str().unwrap(), "serve", "--listen", "0.0.0.0:0"])
        .env("TOKEN_ACME", sim.token())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("access_token"), "{}", text(&out.stderr));
}

/// Parses Prometheus/OpenMetrics text: every sample belongs to a declared family, and
/// every line is well formed.
pub fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, Vec<(String, f64)>> {
    let mut families: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut samples: std::collections::BTreeMap<String, Vec<(String, f64)>> = std::collections::BTreeMap::new();
    let name_ok = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "{line}");
            assert!(["counter", "gauge", "histogram", "summary", "info", "unknown"].contains(&kind), "{line}");
            families.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        let family = families
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample of no declared family: {line}"));
        samples.entry(family.clone()).or_default().push((series.to_owned(), value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_on_their_own_listener() {
    let sim = start(SimConfig { events: 400, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;
    server.get("/api/events?limit=1").await;
    let metrics = server.metrics.clone().unwrap();
    assert_ne!(metrics, server.url);
    let text = reqwest::get(format!("{metrics}/metrics")).await.unwrap().text().await.unwrap();
    let samples = parse_metrics(&text);
    for family in [
        "tfaudit_events_ingested",
        "tfaudit_api_requests",
        "tfaudit_api_retries",
        "tfaudit_sync_duration_seconds",
        "tfaudit_seconds_since_last_successful_sync",
        "tfaudit_cursor_lag_seconds",
        "tfaudit_rejects",
        "tfaudit_gaps",
        "tfaudit_alerts_raised",
        "tfaudit_alert_deliveries",
        "tfaudit_http_requests",
    ] {
        assert!(samples.contains_key(family), "{family} missing from\n{text}");
    }
    let ingested: f64 = samples["tfaudit_events_ingested"].iter().map(|(_, v)| v).sum();
    assert_eq!(ingested, 400.0);
    assert!(samples["tfaudit_http_requests"].iter().any(|(s, _)| s.contains("route=\"/api/events\"")));
    assert_eq!(
        reqwest::get(format!("{}/metrics", server.url)).await.unwrap().status(),
        404,
        "not on the main listener"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_config_that_config_check_accepts() {
    let env = Env::new();
    let path = env.path("tfaudit.toml");
    env.ok(None, &["init", "--output", path.to_str().unwrap()]).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let again = env.run(None, &["init", "--output", path.to_str().unwrap()]).await;
    assert_eq!(again.status.code(), Some(2), "does not overwrite");
    let out = env
        .command(None, &["--config", path.to_str().unwrap(), "config", "check"])
        .env("ACME_TFE_TOKEN", "t")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok — 1 organizations (acme)"), "{}", text(&out.stdout));
    // Without the token the check says which is missing.
    let out = env.run(None, &["--config", path.to_str().unwrap(), "config", "check"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("ACME_TFE_TOKEN"), "{}", text(&out.stderr));
    std::fs::write(&path, "[serve]\nlisten = \"127.0.0.1:80\"\nlisen = \"x\"\n").unwrap();
    let out = env.run(None, &["--config", path.to_str().unwrap(), "config", "check"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(":3:") && text(&out.stderr).contains("lisen"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_requires_the_access_token() {
    let sim = start(SimConfig { events: 20, ..SimConfig::default() }).await;
    let env = Env::new();
    let token = "0123456789abcdef-metrics-token";
    let cfg = config(&env, &[("acme", &sim)], "[serve]\naccess_token = { env = \"SERVE_TOKEN\" }\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token()), ("SERVE_TOKEN", token)]).await;
    let metrics = format!("{}/metrics", server.metrics.clone().unwrap());
    let client = reqwest::Client::new();
    let r = client.get(&metrics).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token, no metrics");
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(client.get(&metrics).bearer_auth("wrong-token-wrong-token").send().await.unwrap().status(), 401);
    let r = client.get(&metrics).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("# TYPE tfaudit_") && body.ends_with("# EOF\n"), "{body}");
    server.stop().await;

    // Beyond loopback without a token: refused like the main listener, with the fix.
    let cfg = config(&env, &[("acme", &sim)], "");
    let out = env
        .command(
            None,
            &["--config", cfg.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"],
        )
        .env("TOKEN_ACME", sim.token())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("metrics listener") && err.contains("access_token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_without_token_hides_details() {
    let sim = start(SimConfig { events: 20, ..SimConfig::default() }).await;
    sim.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let env = Env::new();
    let token = "0123456789abcdef-readyz-token";
    let cfg = config(&env, &[("acme", &sim)], "[serve]\naccess_token = { env = \"SERVE_TOKEN\" }\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token()), ("SERVE_TOKEN", token)]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/readyz", server.url);
    let mut detailed = Value::Null;
    wait_for("a failed sync to be reported", async || {
        detailed = client.get(&url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        detailed["organizations"][0]["reason"].as_str().is_some_and(|r| r.contains("last error"))
    })
    .await;
    assert!(detailed["organizations"][0]["reason"].as_str().unwrap().contains(&sim.url()), "{detailed}");

    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    let brief: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        brief,
        serde_json::json!({"ready": false, "organizations": [{"name": "acme", "ready": false}], "misconfigured_destinations": []})
    );
    let address = sim.url();
    let host = address.trim_start_matches("http://");
    assert!(!body.contains(host), "the upstream address is not told without the token: {body}");
    let r = client.get(&url).bearer_auth("wrong-token-wrong-token").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), brief, "a wrong token is no token");
    server.stop().await;
}

/// A raw connection to `addr` (`http://host:port`).
async fn connect(addr: &str) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the peer closes the connection (or resets it); how long that took.
async fn until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
}

/// Sends one request for `/healthz` on a kept-alive connection and reads its answer.
async fn healthz_on(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// One request on a new connection that the server closes after answering; the
/// answer, or what came before the connection failed.
async fn get_closing(addr: &str, path: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut answer = Vec::new();
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr.trim_start_matches("http://")).await {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(request.as_bytes()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_drip_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "[serve]\nheader_timeout = \"1s\"\nidle_timeout = \"30s\"\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    for listener in [server.url.clone(), server.metrics.clone().unwrap()] {
        let mut stream = connect(&listener).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        let started = Instant::now();
        // A header line a byte at a time, never finished: the idle timeout never fires.
        let drip = async {
            let mut written = 0;
            while started.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                written += 1;
            }
            written
        };
        let written = tokio::time::timeout(Duration::from_secs(10), drip).await;
        let took = started.elapsed();
        // Either the writes fail once it is closed, or reading shows it closed.
        if written.is_err() {
            panic!("a header drip was still accepted after {took:?}");
        }
        let closed_after = took.max(until_closed(&mut stream, Duration::from_secs(5)).await);
        assert!(closed_after >= Duration::from_millis(900), "{listener}: closed too early, after {closed_after:?}");
        assert!(closed_after < Duration::from_secs(6), "{listener}: closed only after {closed_after:?}");
    }
    // A request sent whole is answered.
    let mut stream = connect(&server.url).await;
    assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "[serve]\nheader_timeout = \"30s\"\nidle_timeout = \"1s\"\n");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    for listener in [server.url.clone(), server.metrics.clone().unwrap()] {
        // Silent from the start.
        let mut silent = connect(&listener).await;
        let took = until_closed(&mut silent, Duration::from_secs(10)).await;
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{listener}: closed after {took:?}"
        );
    }
    // Silent after a request, kept alive.
    let mut kept = connect(&server.url).await;
    assert!(healthz_on(&mut kept).await.starts_with("HTTP/1.1 200"));
    let took = until_closed(&mut kept, Duration::from_secs(10)).await;
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "closed after {took:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_and_the_service_recovers() {
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(
        &env,
        &[("acme", &sim)],
        "[serve]\nheader_timeout = \"60s\"\nidle_timeout = \"60s\"\nmax_connections = 3\n",
    );
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&server.url).await;
        assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    // One more: accepted and closed at once, without an answer.
    let mut extra = connect(&server.url).await;
    let took = until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The metrics listener has slots of its own.
    assert!(get_closing(&server.metrics.clone().unwrap(), "/metrics").await.starts_with(b"HTTP/1.1 200"));
    // Those within the cap keep working.
    for stream in &mut held {
        assert!(healthz_on(stream).await.starts_with("HTTP/1.1 200"));
    }
    // Once they go, the service answers again.
    drop(held);
    wait_for("a free slot", async || get_closing(&server.url, "/healthz").await.starts_with(b"HTTP/1.1 200")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_error_is_json() {
    let sim = start(SimConfig { events: 20, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = config(&env, &[("acme", &sim)], "");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", server.url);
    let requests = [
        (client.get(url("/api/alerts?limit=-1")), 400, "limit"),
        (client.get(url("/api/alerts?limit=")), 400, "limit"),
        (client.get(url("/api/events?since=1d&since=2d")), 400, "since"),
        (client.get(url("/api/events?limit=0")), 400, "limit"),
        (client.get(url("/api/events?since=")), 400, "since"),
        (client.get(url("/api/summary?top=101")), 400, "top"),
        (client.get(url("/api/events/%FF%FE")), 400, ""),
        (client.get(url(&format!("/api/events/{}", "x".repeat(201)))), 400, "id"),
        (client.get(url("/api/no-such-route")), 404, ""),
        (client.post(url("/api/events")), 405, ""),
        (client.get(url("/api/events")).header("content-length", "20000").body(vec![b'x'; 20_000]), 413, ""),
        (client.get(url(&format!("/api/events?text={}", "a".repeat(17_000)))), 414, ""),
    ];
    for (request, status, names) in requests {
        let r = request.send().await.unwrap();
        let what = format!("{} {}", r.url(), r.status());
        assert_eq!(r.status().as_u16(), status, "{what}");
        assert_eq!(r.headers()["content-type"], "application/json", "{what}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        let message = body["error"].as_str().unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(!message.is_empty() && message.contains(names), "{what}: {message}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
    }
    // The dashboard says so too, in its page, rather than dropping the filter silently.
    let r = client.get(url("/alerts?state=lost")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("state must be pending, delivered, failing or abandoned"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_refuses_what_serve_refuses() {
    let env = Env::new();
    let org = "[[organization]]\nname = \"acme\"\naddress = \"http://127.0.0.1:9\"\ntoken_env = \"TOKEN_ACME\"\n\n";
    for (section, needle) in [
        ("[serve]\naccess_token = \"too-short\"\n", "too short"),
        ("[serve]\nmetrics_listen = \"0.0.0.0:0\"\n", "metrics listener"),
        ("[serve]\nlisten = \"0.0.0.0:0\"\n", "access_token"),
        ("[serve]\nlisten = \"localhost\"\n", "not an address"),
        ("[serve]\nmax_connections = 0\n", "max_connections"),
        ("[serve]\nheader_timeout = \"0s\"\n", "header_timeout"),
        ("[serve]\nidle_timeout = \"0s\"\n", "idle_timeout"),
        (
            "[[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"not a url\"\n",
            "destination \"hook\": url is not a URL",
        ),
        (
            "[[destination]]\nname = \"chat\"\ntype = \"slack\"\nurl = \"ftp://hooks.example/T0/secret-path\"\n",
            "not an http(s) URL",
        ),
    ] {
        let path = env.path("tfaudit.toml");
        std::fs::write(&path, format!("{org}{section}")).unwrap();
        let cfg = path.to_str().unwrap();
        let check =
            env.command(None, &["--config", cfg, "config", "check"]).env("TOKEN_ACME", "t").output().await.unwrap();
        // No listen flags: they would override what the config says.
        let serve = env.command(None, &["--config", cfg, "serve"]).env("TOKEN_ACME", "t").output().await.unwrap();
        let (check_err, serve_err) = (text(&check.stderr), text(&serve.stderr));
        assert_eq!(check.status.code(), Some(2), "config check accepted {section:?}: {}", text(&check.stdout));
        assert_eq!(serve.status.code(), Some(2), "serve accepted {section:?}: {serve_err}");
        assert!(check_err.contains(needle) && check_err.lines().count() == 1, "{section:?}: {check_err}");
        let serve_line = serve_err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
        assert_eq!(check_err.trim(), serve_line.trim(), "{section:?}: the same refusal");
        assert!(!check_err.contains("secret-path"), "a URL may be a secret: {check_err}");
    }
}

/// Schemathesis's `st`: `TFAUDIT_SCHEMATHESIS` (set by scripts/test), else where
/// scripts/test installs it.
fn schemathesis() -> std::path::PathBuf {
    let default = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py/bin/st");
    let st = std::env::var_os("TFAUDIT_SCHEMATHESIS").map_or(default, std::path::PathBuf::from);
    assert!(
        st.is_file(),
        "schemathesis is not installed at {}: run the tests with scripts/test, which installs it (or set TFAUDIT_SCHEMATHESIS to its `st`)",
        st.display()
    );
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_schemathesis_finds_nothing() {
    let st = schemathesis();
    let sim = start(SimConfig { events: 300, hostile: 0.1, malformed: 2, ..SimConfig::default() }).await;
    let env = Env::new();
    // Syncs stay current through the run, so that /readyz answers 200 throughout.
    let cfg = config(&env, &[("acme", &sim)], "");
    let server = Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_for("the first sync", async || server.get("/readyz").await.status() == 200).await;
    let now = jiff::Timestamp::now();
    sim.add_event_json(
        now.as_second(),
        &serde_json::json!({
            "id": "token-created-for-schemathesis", "version": "0", "type": "Resource",
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "auth": {"accessor_id": "user-St", "description": "st", "type": "Client", "impersonator_id": null,
                     "organization_id": SimConfig::default().organization_id},
            "request": {"id": "req-st"},
            "resource": {"id": "at-St", "type": "authentication_token", "action": "create", "meta": null}
        }),
    );
    wait_for("an alert", async || server.json("/api/alerts").await["alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .await;
    let reports = env.path("schemathesis");
    let out = tokio::process::Command::new(&st)
        .args(["run", &format!("{}/api/openapi.json", server.url), "--checks", "all", "--max-examples", "100"])
        .args(["--seed", "7", "--workers", "2", "--no-color", "--generation-database", "none"])
        .arg("--report-dir")
        .arg(&reports)
        .env("SCHEMATHESIS_HOOKS", "")
        // It keeps a cache in its working folder: the test's own, not the repository.
        .current_dir(env.dir.path())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let report = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("No issues found"), "{report}");
    assert!(report.contains("Selected: 7/7"), "every operation was tested: {report}");
    server.stop().await;
}
