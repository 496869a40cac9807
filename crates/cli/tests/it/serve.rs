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

/// Checks `value` against an OpenAPI schema: required properties present, and types.
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
    // events arrive between pages.
    let mut ids = Vec::new();
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
                sim.add_event(jiff::Timestamp::now().as_second());
            }
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice across pages");
    assert_eq!(ids.len(), 998, "every event of the first sync once (998 events, 2 malformed elements)");

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
    let alerts = server.json("/api/alerts?limit=5").await;
    check("/api/alerts", "/api/alerts", "200", &alerts);
    let ready = server.json("/readyz").await;
    check("/readyz", "/readyz", "200", &ready);

    // Errors are JSON and name the parameter; nothing reaches SQL but as a value.
    for (path, status) in [
        ("/api/events?since=soon", 400),
        ("/api/events?limit=100000", 400),
        ("/api/events?cursor=forged", 400),
        ("/api/events/no-such-event", 404),
        ("/api/alerts?state=lost", 400),
    ] {
        let r = server.get(path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    // One of the simulator's hostile names is an SQL injection: it matches as a name.
    let before = server.json("/api/status").await["organizations"][0]["events"].as_u64().unwrap();
    let sneaky = server.json("/api/events?actor=%27%3B%20DROP%20TABLE%20events%3B%20--&since=30d&limit=500").await;
    for e in sneaky["events"].as_array().unwrap() {
        assert!(e["event"]["auth"]["accessor_id"].as_str().unwrap().starts_with("user-"), "{e}");
    }
    let after = server.json("/api/status").await["organizations"][0]["events"].as_u64().unwrap();
    assert!(after >= before, "the archive is intact");

    // Read-only, bounded, and the same headers everywhere.
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/api/events", server.url)).body("x").send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = server.get(&format!("/api/events?text={}", "a".repeat(5000))).await;
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
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, Vec<(String, f64)>> {
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
