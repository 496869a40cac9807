//! Alerts end to end: events from the simulator, synced, evaluated, and delivered over
//! real HTTP and SMTP to local receivers — once each, through outages and kill -9.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tfaudit_sim::{Sim, SimConfig};

use crate::harness::*;
use crate::receivers::{HOOK_SECRET, Receivers, Smtp};

/// An audit event as HCP Terraform sends it.
fn audit_event(id: &str, ts: i64, actor: &str, resource_type: &str, action: &str, meta: Value) -> Value {
    json!({
        "id": id, "version": "0", "type": "Resource",
        "timestamp": jiff::Timestamp::from_second(ts).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
        "auth": {"accessor_id": actor, "description": format!("name of {actor}"), "type": "Client", "impersonator_id": null, "organization_id": "org-SimuLat0r000001"},
        "request": {"id": format!("req-{id}")},
        "resource": {"id": format!("res-{id}"), "type": resource_type, "action": action, "meta": meta}
    })
}

/// Injects the events the tests expect alerts for: a token created (high), an owner
/// added (critical), and 25 variable deletions by one actor in a minute (a burst).
fn inject_critical_events(sim: &Sim) {
    let now = jiff::Timestamp::now().as_second();
    sim.add_event_json(
        now,
        &audit_event("evt-token", now, "user-Mallory", "authentication_token", "create", Value::Null),
    );
    let owners = json!({"team": {"id": "team-own", "name": "owners"}, "user": {"id": "user-x", "username": "<!channel> x"},
                        "workspace": {"id": "ws-1", "name": "prod-net"}});
    sim.add_event_json(now, &audit_event("evt-owner", now, "user-Mallory", "team", "add_member", owners));
    for i in 0..25 {
        let ts = now - 60 + i * 2;
        sim.add_event_json(
            ts,
            &audit_event(&format!("evt-del-{i}"), ts, "user-Mallory", "var", "destroy", Value::Null),
        );
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn engine_started(env: &Env) -> bool {
    use tfaudit_store::Store;
    tfaudit_store_sqlite::SqliteStore::open(&env.db, tfaudit_store_sqlite::OpenMode::MustExist)
        .ok()
        .and_then(|s| s.alert_cursor().ok().flatten())
        .is_some()
}

/// The config of these tests: one organization on the simulator, the noisy built-in
/// rules off, and the given destinations.
fn config(env: &Env, sim: &Sim, destinations: &str) -> std::path::PathBuf {
    std::fs::write(env.path("hook.secret"), HOOK_SECRET).unwrap();
    let text = format!(
        r#"
[sync]
rate_limit = 0
retry_delay = "5ms"
interval = "1s"

[[organization]]
name = "acme"
address = "{}"
token_env = "SIM_TOKEN"

[alerts]
retry_delay = "100ms"
disable = ["night-activity", "new-accessor", "new-event-kind", "new-impersonator"]

{destinations}
"#,
        sim.url()
    );
    let path = env.path("tfaudit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn hook_destination(r: &Receivers, env: &Env) -> String {
    format!(
        r#"[[destination]]
name = "hook"
type = "webhook"
url = "{}/hook"
secret = {{ file = "{}" }}
headers = {{ "X-Team" = "platform" }}
timeout = "2s"
"#,
        r.url,
        env.path("hook.secret").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_slack_pagerduty_a_webhook_and_email_once_each() {
    let sim = start(SimConfig { events: 300, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let smtp = Smtp::start().await;
    let env = Env::new();
    std::fs::write(env.path("ca.pem"), &smtp.ca_pem).unwrap();
    let destinations = format!(
        r#"
[[destination]]
name = "slack"
type = "slack"
url = {{ env = "SLACK_WEBHOOK_URL" }}

[[destination]]
name = "pagerduty"
type = "pagerduty"
url = "{recv}/v2/enqueue"
routing_key = {{ env = "PD_ROUTING_KEY" }}
min_severity = "critical"

{hook}
[[destination]]
name = "mail"
type = "email"
server = "127.0.0.1:{port}"
tls = "starttls"
ca_file = "{ca}"
from = "tfaudit <tfaudit@example.com>"
to = ["security@example.com"]
"#,
        recv = receivers.url,
        hook = hook_destination(&receivers, &env),
        port = smtp.port,
        ca = env.path("ca.pem").display()
    );
    let cfg = config(&env, &sim, &destinations);
    let cfg = cfg.to_str().unwrap();
    let mut watch = env
        .command(None, &["--config", cfg, "watch"])
        .env("SIM_TOKEN", sim.token())
        .env("SLACK_WEBHOOK_URL", format!("{}/slack", receivers.url))
        .env("PD_ROUTING_KEY", "0123456789abcdef0123456789abcdef")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // History (the backfill) raises nothing; the engine starts after the first sync.
    wait_until("the alert engine to start", Duration::from_secs(30), || engine_started(&env)).await;
    inject_critical_events(&sim);
    let inbox = receivers.inbox.clone();
    let messages = smtp.messages.clone();
    wait_until("every delivery", Duration::from_secs(30), || {
        inbox.slack.lock().unwrap().len() >= 3
            && !inbox.pagerduty.lock().unwrap().is_empty()
            && inbox.hook.lock().unwrap().len() >= 3
            && messages.lock().unwrap().len() >= 3
    })
    .await;
    // Give a duplicate, if there were to be one, time to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = watch.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(watch.wait().await.unwrap().code(), Some(0));

    // Slack: three Block Kit messages, markup escaped, a link for the owner alert.
    let slack = inbox.slack.lock().unwrap().clone();
    assert_eq!(slack.len(), 3, "{slack:#?}");
    let titles: Vec<&str> = slack.iter().map(|m| m["text"].as_str().unwrap()).collect();
    for expected in ["An API token was created", "Someone was added to the owners team", "Many deletions by one actor"]
    {
        assert!(titles.iter().any(|t| t.contains(expected)), "{expected} not in {titles:?}");
    }
    assert!(slack.iter().all(|m| m["blocks"][0]["type"] == "header"));
    let owner = slack.iter().find(|m| m["text"].as_str().unwrap().contains("owners")).unwrap();
    assert_eq!(
        owner["blocks"][3]["elements"][0]["url"],
        "https://127.0.0.1/app/acme/workspaces/prod-net".replace("https://127.0.0.1", &sim.url())
    );

    // PagerDuty: only the critical one, with a dedup key.
    let pd = inbox.pagerduty.lock().unwrap().clone();
    assert_eq!(pd.len(), 1);
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    assert_eq!(pd[0]["payload"]["class"], "owner-added");
    assert!(pd[0]["dedup_key"].as_str().unwrap().starts_with("tfaudit-"));

    // Webhook: signed (the receiver refuses a bad signature), custom header, one
    // idempotency key per alert.
    let hooks = inbox.hook.lock().unwrap().clone();
    assert_eq!(hooks.len(), 3);
    assert!(hooks.iter().all(|h| h.headers.get("x-team").unwrap() == "platform"));
    let mut keys = receivers.accepted_hook_keys();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
    let burst = hooks.iter().find(|h| h.body["rule"] == "delete-burst").unwrap();
    assert_eq!(burst.body["count"], 20);
    assert_eq!(burst.body["group"], "user-Mallory");
    assert_eq!(burst.body["event"]["auth"]["accessor_id"], "user-Mallory");

    // Email, over STARTTLS: subject and body.
    let mail = messages.lock().unwrap().clone();
    assert_eq!(mail.len(), 3);
    assert!(mail.iter().any(|m| m.contains("Subject: [CRITICAL] Someone was added to the owners team")), "{mail:#?}");
    assert!(mail.iter().all(|m| m.contains("Message-ID: <tfaudit-")));

    // The archive agrees: three alerts, ten deliveries, all delivered.
    let s = status(&env).await;
    assert_eq!(s["alerts"]["alerts"], 3);
    assert_eq!(s["alerts"]["delivered"], 10);
    assert_eq!(s["alerts"]["failing"], 0);
    // Running again sends nothing more.
    let out = env
        .command(None, &["--config", cfg, "alerts", "run", "--once"])
        .env("SLACK_WEBHOOK_URL", format!("{}/slack", receivers.url))
        .env("PD_ROUTING_KEY", "0123456789abcdef0123456789abcdef")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 alerts raised; 0 delivered"), "{}", text(&out.stdout));
    assert_eq!(inbox.slack.lock().unwrap().len(), 3);
    let listed = env.ok(None, &["--config", cfg, "alerts", "list"]).await;
    assert!(listed.contains("slack: delivered") && listed.contains("pagerduty: delivered"), "{listed}");
}

/// `tfaudit alerts run`, until killed.
fn alerts_run(env: &Env, cfg: &str) -> tokio::process::Child {
    env.command(None, &["--config", cfg, "alerts", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap()
}

/// Syncs history, starts the alert engine at its end, then lets the critical events
/// arrive and syncs them: their alerts are raised by the runner this returns.
async fn critical_alerts_pending(env: &Env, sim: &Sim, cfg: &str) -> tokio::process::Child {
    let sync = || env.command(None, &["--config", cfg, "sync"]).env("SIM_TOKEN", sim.token()).output();
    assert!(sync().await.unwrap().status.success());
    assert!(env.run(None, &["--config", cfg, "alerts", "run", "--once"]).await.status.success());
    inject_critical_events(sim);
    assert!(sync().await.unwrap().status.success());
    alerts_run(env, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_then_up_gets_each_alert_once() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    receivers.inbox.hook_status.store(503, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    let mut runner = critical_alerts_pending(&env, &sim, cfg).await;
    let inbox = receivers.inbox.clone();
    wait_until("a few failed attempts", Duration::from_secs(20), || inbox.hook.lock().unwrap().len() >= 6).await;
    let shown = env.ok(None, &["--config", cfg, "status"]).await;
    assert!(shown.contains("failing") && shown.contains("503"), "{shown}");
    // A restart while the destination is down loses nothing.
    runner.kill().await.unwrap();
    let mut runner = alerts_run(&env, cfg);
    receivers.inbox.hook_status.store(200, Ordering::SeqCst);
    wait_until("every alert delivered", Duration::from_secs(30), || receivers.accepted_hook_keys().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    runner.kill().await.unwrap();
    let mut keys = receivers.accepted_hook_keys();
    assert_eq!(keys.len(), 3, "each alert accepted exactly once");
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
    let s = status(&env).await;
    assert_eq!((s["alerts"]["delivered"].as_u64(), s["alerts"]["failing"].as_u64()), (Some(3), Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_nothing() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    // Slow enough to be killed mid-request, within the 2s timeout.
    receivers.inbox.hook_delay_ms.store(1500, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    let mut runner = critical_alerts_pending(&env, &sim, cfg).await;
    // Requests are in flight (the receiver is sleeping on them): kill -9.
    tokio::time::sleep(Duration::from_millis(700)).await;
    runner.start_kill().unwrap();
    runner.wait().await.unwrap();
    let before = receivers.inbox.hook.lock().unwrap().len();
    receivers.inbox.hook_delay_ms.store(0, Ordering::SeqCst);
    // The restarted runner takes the dead one's deliveries back when their lease ends.
    let mut runner = alerts_run(&env, cfg);
    let mut distinct = Vec::new();
    wait_until("every alert delivered after the restart", Duration::from_secs(30), || {
        distinct = receivers.accepted_hook_keys();
        distinct.sort();
        distinct.dedup();
        distinct.len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    runner.kill().await.unwrap();
    // Only a request that was in flight when the process died can arrive twice, and it
    // carries the same idempotency key.
    let total = receivers.accepted_hook_keys().len();
    assert!(total <= 3 + before, "{total} accepted, {before} were in flight");
    let s = status(&env).await;
    assert_eq!(s["alerts"]["delivered"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_lists_what_would_fire_and_sends_nothing() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    inject_critical_events(&sim);
    assert!(
        env.command(None, &["--config", cfg, "sync"])
            .env("SIM_TOKEN", sim.token())
            .output()
            .await
            .unwrap()
            .status
            .success()
    );
    let out = env.ok(None, &["--config", cfg, "alerts", "test", "--since", "30d", "--format", "json"]).await;
    let alerts: Vec<Value> = serde_json::from_str(&out).unwrap();
    for rule in ["token-created", "owner-added", "delete-burst"] {
        assert!(alerts.iter().any(|a| a["rule"] == rule && a["source"] == "acme"), "{rule} missing");
    }
    let text = env.ok(None, &["--config", cfg, "alerts", "test", "--since", "30d"]).await;
    assert!(text.contains("alerts would have been raised"), "{text}");
    assert!(receivers.inbox.hook.lock().unwrap().is_empty(), "a backtest sends nothing");
    assert!(env.ok(None, &["--config", cfg, "alerts", "list"]).await.contains("no alerts"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_files_are_checked_listed_and_override_the_built_ins() {
    let env = Env::new();
    std::fs::write(
        env.path("good.toml"),
        "[[rule]]\nname = \"token-created\"\nseverity = \"critical\"\ndescription = \"Tokens, always critical\"\nmatch = { \"resource.type\" = \"authentication_token\" }\n",
    )
    .unwrap();
    std::fs::write(env.path("bad.toml"), "[[rule]]\nname = \"x\"\nseverity = \"low\"\ndescription = \"d\"\nwhen = { field = \"auth.colour\", equals = \"red\" }\n").unwrap();
    let good = env.path("good.toml");
    let out = env.ok(None, &["rules", "check", good.to_str().unwrap()]).await;
    assert!(out.contains("1 rules, all valid"), "{out}");
    let out = env.run(None, &["rules", "check", env.path("bad.toml").to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.toml:5:") && text(&out.stderr).contains("unknown field"),
        "{}",
        text(&out.stderr)
    );
    let listed = env.ok(None, &["rules", "list", "--rules", good.to_str().unwrap()]).await;
    let line = listed.lines().find(|l| l.trim_start().starts_with("token-created")).unwrap();
    assert!(line.contains("critical") && line.contains("good.toml"), "{line}");
    assert!(listed.contains("delete-burst"));
}

/// History synced, the engine started, the critical events synced and evaluated, and
/// one delivery attempt each to a webhook answering 503: three alerts, failing.
async fn three_failing_alerts() -> (Env, Sim, Receivers, String) {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    receivers.inbox.hook_status.store(503, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env)).to_str().unwrap().to_owned();
    let sync = || env.command(None, &["--config", &cfg, "sync"]).env("SIM_TOKEN", sim.token()).output();
    assert!(sync().await.unwrap().status.success());
    env.ok(None, &["--config", &cfg, "alerts", "run", "--once"]).await;
    inject_critical_events(&sim);
    assert!(sync().await.unwrap().status.success());
    let out = env.ok(None, &["--config", &cfg, "alerts", "run", "--once"]).await;
    assert!(out.contains("3 alerts raised; 0 delivered, 3 failed"), "{out}");
    (env, sim, receivers, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_show_gives_the_text_the_deliveries_and_the_event() {
    let (env, _sim, _receivers, cfg) = three_failing_alerts().await;
    let list: Vec<Value> =
        serde_json::from_str(&env.ok(None, &["--config", &cfg, "alerts", "list", "--format", "json"]).await).unwrap();
    let owner = list.iter().find(|a| a["rule"] == "owner-added").expect("the owner-added alert");
    let id = owner["id"].as_i64().unwrap().to_string();

    let shown = env.ok(None, &["--config", &cfg, "alerts", "show", &id]).await;
    let first = shown.lines().next().unwrap();
    assert!(first.starts_with(&format!("alert {id}  ")), "{shown}");
    assert!(first.contains("rule owner-added") && first.contains("severity critical"), "{shown}");
    assert!(shown.contains("[CRITICAL] Someone was added to the owners team"), "{shown}");
    let delivery = shown.lines().find(|l| l.trim_start().starts_with("hook")).expect("the hook's delivery");
    assert!(delivery.contains("failing") && delivery.contains("1 attempts"), "{delivery}");
    assert!(
        delivery.contains("next attempt") && delivery.contains("last error") && delivery.contains("503"),
        "{delivery}"
    );
    assert!(shown.contains("\"id\": \"evt-owner\""), "the original event: {shown}");

    let json: Value =
        serde_json::from_str(&env.ok(None, &["--config", &cfg, "alerts", "show", &id, "--format", "json"]).await)
            .unwrap();
    assert_eq!(json["id"].as_i64().unwrap().to_string(), id);
    assert_eq!(json["rule"], "owner-added");
    assert_eq!(json["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(json["deliveries"][0]["destination"], "hook");
    assert_eq!(json["deliveries"][0]["state"], "failing");
    assert_eq!(json["deliveries"][0]["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_show_of_an_unknown_id_says_so_and_exits_2() {
    let (env, _sim, _receivers, cfg) = three_failing_alerts().await;
    let out = env.run(None, &["--config", &cfg, "alerts", "show", "999999"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr), "error: there is no alert 999999; `tfaudit alerts list` lists them\n");
    let out = env.run(None, &["--config", &cfg, "alerts", "show", "not-a-number"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'not-a-number'"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_list_limit_zero_lists_every_alert() {
    let (env, _sim, _receivers, cfg) = three_failing_alerts().await;
    let count = |limit: &'static str| {
        let (env, cfg) = (&env, &cfg);
        async move {
            let out = env.ok(None, &["--config", cfg, "alerts", "list", "--format", "json", "--limit", limit]).await;
            serde_json::from_str::<Vec<Value>>(&out).unwrap().len()
        }
    };
    assert_eq!(count("1").await, 1);
    assert_eq!(count("0").await, 3, "0 means no limit, as for query");
    assert_eq!(count("20").await, 3);
}
