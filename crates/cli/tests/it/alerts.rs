//! Alerts end to end: events from the simulator, synced, evaluated, and delivered over
//! real HTTP and SMTP to local receivers — once each, through outages and kill -9.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tfaudit_sim::{Sim, SimConfig};

use crate::harness::*;
use crate::receivers::{HOOK_SECRET, Receivers, Smtp, counting_listener, redirecting_receiver};

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
pub(crate) fn inject_critical_events(sim: &Sim) {
    inject_critical_events_tagged(sim, "");
}

/// The same three alerts' events, with `tag` appended to every event id and to the
/// actor: each tag raises three new alerts (a burst by an actor already alerted on
/// would fall in the window it alerted for).
pub(crate) fn inject_critical_events_tagged(sim: &Sim, tag: &str) {
    let now = jiff::Timestamp::now().as_second();
    let actor = format!("user-Mallory{tag}");
    sim.add_event_json(
        now,
        &audit_event(&format!("evt-token{tag}"), now, &actor, "authentication_token", "create", Value::Null),
    );
    let owners = json!({"team": {"id": "team-own", "name": "owners"}, "user": {"id": "user-x", "username": "<!channel> x"},
                        "workspace": {"id": "ws-1", "name": "prod-net"}});
    sim.add_event_json(now, &audit_event(&format!("evt-owner{tag}"), now, &actor, "team", "add_member", owners));
    for i in 0..25 {
        let ts = now - 60 + i * 2;
        sim.add_event_json(ts, &audit_event(&format!("evt-del{tag}-{i}"), ts, &actor, "var", "destroy", Value::Null));
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the organization's first backfill has completed (its events are history).
fn backfilled(env: &Env) -> bool {
    tfaudit_backend::Location::Sqlite(env.db.clone())
        .open(tfaudit_backend::Mode::MustExist)
        .ok()
        .and_then(|s| s.status().ok())
        .is_some_and(|s| s.iter().all(|o| o.cursor.is_some()) && !s.is_empty())
}

/// Waits until the archive says every delivery is delivered and none is left to
/// send: after that nothing more can be sent, so counts taken then are final.
async fn all_delivered(env: &Env, deliveries: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(env).await;
        let a = &s["alerts"];
        if a["delivered"] == deliveries && a["pending"] == 0 && a["failing"] == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {deliveries} deliveries: {a:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The config of these tests: one organization on the simulator, the noisy built-in
/// rules off, and the given destinations.
pub(crate) fn config(env: &Env, sim: &Sim, destinations: &str) -> std::path::PathBuf {
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

pub(crate) fn hook_destination(r: &Receivers, env: &Env) -> String {
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
    // History (the backfill) raises nothing; alerting starts where it ended.
    wait_until("the first backfill", Duration::from_secs(30), || backfilled(&env)).await;
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
    all_delivered(&env, 10).await;
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

/// Syncs history, starts the alert engine, then lets the critical events arrive and
/// syncs them: the next evaluation raises their alerts.
pub(crate) async fn critical_events_synced(env: &Env, sim: &Sim, cfg: &str) {
    let sync = || env.command(None, &["--config", cfg, "sync"]).env("SIM_TOKEN", sim.token()).output();
    assert!(sync().await.unwrap().status.success());
    assert!(env.run(None, &["--config", cfg, "alerts", "run", "--once"]).await.status.success());
    inject_critical_events(sim);
    assert!(sync().await.unwrap().status.success());
}

/// The critical events synced, and a runner that raises and delivers their alerts.
async fn critical_alerts_pending(env: &Env, sim: &Sim, cfg: &str) -> tokio::process::Child {
    critical_events_synced(env, sim, cfg).await;
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
    all_delivered(&env, 3).await;
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
async fn kill_9_repeats_only_the_delivery_on_the_wire() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let inbox = receivers.inbox.clone();
    inbox.hook_hold.store(true, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    let mut runner = critical_alerts_pending(&env, &sim, cfg).await;
    // Three alerts are pending; kill -9 exactly while the receiver holds a request.
    wait_until("a request on the wire", Duration::from_secs(20), || inbox.hook_held.load(Ordering::SeqCst) > 0).await;
    runner.start_kill().unwrap();
    runner.wait().await.unwrap();
    let on_the_wire: Vec<String> = inbox
        .hook
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_the_wire.len(), 1, "only the delivery being sent was claimed: {on_the_wire:?}");
    inbox.hook_hold.store(false, Ordering::SeqCst);
    // The restarted runner takes the dead one's delivery back when its short lease ends.
    let mut runner = alerts_run(&env, cfg);
    all_delivered(&env, 3).await;
    runner.kill().await.unwrap();
    let mut keys = receivers.accepted_hook_keys();
    keys.sort();
    let mut repeated: Vec<String> = keys.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0].clone()).collect();
    repeated.dedup();
    assert_eq!(repeated, on_the_wire, "only the request on the wire at the kill arrives twice, with its key");
    keys.dedup();
    assert_eq!(keys.len(), 3, "every alert delivered");
    assert_eq!(receivers.accepted_hook_keys().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_for_events_between_first_sync_and_first_watch() {
    let sim = start(SimConfig { events: 200, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    let sync = || env.command(None, &["--config", cfg, "sync"]).env("SIM_TOKEN", sim.token()).output();
    // The README's order: sync, then (later) the alert engine; events arrive between.
    assert!(sync().await.unwrap().status.success());
    inject_critical_events(&sim);
    assert!(sync().await.unwrap().status.success());
    let out = env.ok(None, &["--config", cfg, "alerts", "run", "--once"]).await;
    assert!(out.contains("27 events evaluated, 3 alerts raised; 3 delivered"), "{out}");
    let listed: Vec<Value> =
        serde_json::from_str(&env.ok(None, &["--config", cfg, "alerts", "list", "--format", "json"]).await).unwrap();
    let mut rules: Vec<&str> = listed.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    rules.sort_unstable();
    assert_eq!(rules, ["delete-burst", "owner-added", "token-created"]);
    // The backfill was history: nothing of it raised an alert.
    assert!(listed.iter().all(|a| a["event_id"].as_str().unwrap().starts_with("evt-")), "{listed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_destination_delays_neither_sync_nor_other_destinations() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let inbox = receivers.inbox.clone();
    let env = Env::new();
    // The webhook holds every request (within a long timeout); Slack answers at once.
    inbox.hook_hold.store(true, Ordering::SeqCst);
    let destinations = format!(
        "{}timeout = \"60s\"\n\n[[destination]]\nname = \"slack\"\ntype = \"slack\"\nurl = \"{}/slack\"\n",
        hook_destination(&receivers, &env).replace("timeout = \"2s\"\n", ""),
        receivers.url
    );
    let cfg = config(&env, &sim, &destinations);
    let cfg = cfg.to_str().unwrap();
    let mut watch = env
        .command(None, &["--config", cfg, "watch"])
        .env("SIM_TOKEN", sim.token())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first backfill", Duration::from_secs(30), || backfilled(&env)).await;
    inject_critical_events(&sim);
    wait_until("the webhook holding a request", Duration::from_secs(30), || inbox.hook_held.load(Ordering::SeqCst) > 0)
        .await;
    wait_until("the first alerts in Slack", Duration::from_secs(10), || inbox.slack.lock().unwrap().len() == 3).await;
    // With the webhook still holding its request, a new event is synced, evaluated
    // and sent to Slack on the next 1s interval.
    let synced_before = status(&env).await["organizations"][0]["last_run"]["started_at"].clone();
    let now = jiff::Timestamp::now().as_second();
    sim.add_event_json(
        now,
        &audit_event("evt-token-2", now, "user-Eve", "authentication_token", "create", Value::Null),
    );
    let started = Instant::now();
    wait_until("the new alert in Slack", Duration::from_secs(5), || inbox.slack.lock().unwrap().len() == 4).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(inbox.hook_held.load(Ordering::SeqCst), 1, "the webhook still holds its first request");
    assert_ne!(status(&env).await["organizations"][0]["last_run"]["started_at"], synced_before, "syncs go on");
    inbox.hook_hold.store(false, Ordering::SeqCst);
    all_delivered(&env, 8).await;
    watch.kill().await.unwrap();
    assert_eq!(inbox.slack.lock().unwrap().len(), 4);
}

/// A webhook destination at `url` with a secret header, and `tfaudit alerts run --once`
/// after the critical alerts were raised.
async fn once_against(env: &Env, sim: &Sim, url: &str) -> (String, std::process::Output) {
    let destination = format!(
        r#"[[destination]]
name = "hook"
type = "webhook"
url = "{url}"
secret = {{ file = "{}" }}
headers = {{ "Authorization" = "Bearer hdr-SECRET-0042-value" }}
timeout = "30s"
"#,
        env.path("hook.secret").display()
    );
    let cfg = config(env, sim, &destination).to_str().unwrap().to_owned();
    critical_events_synced(env, sim, &cfg).await;
    let out = env.command(None, &["--config", &cfg, "alerts", "run", "--once"]).output().await.unwrap();
    (cfg, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_echo_never_stores_destination_secrets() {
    for status_code in [503, 401] {
        let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
        let receivers = Receivers::start().await;
        receivers.inbox.hook_echo.store(true, Ordering::SeqCst);
        let env = Env::new();
        receivers.inbox.hook_status.store(status_code, Ordering::SeqCst);
        let url = format!("{}/hook?token=url-SECRET-0042-path", receivers.url);
        let (cfg, out) = once_against(&env, &sim, &url).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let echoed = receivers.inbox.hook.lock().unwrap().len();
        assert!(echoed >= 1, "the receiver was asked");
        let shown = [
            text(&out.stderr),
            env.ok(None, &["--config", &cfg, "status"]).await,
            env.ok(None, &["--config", &cfg, "status", "--format", "json"]).await,
            env.ok(None, &["--config", &cfg, "alerts", "list", "--format", "json"]).await,
        ]
        .join("\n");
        assert!(shown.contains(&format!("answered {status_code}")), "{shown}");
        assert!(shown.contains("you sent POST"), "the echo is kept, redacted: {shown}");
        assert!(!shown.contains("SECRET-0042"), "{shown}");
        let mut archive = std::fs::read(&env.db).unwrap();
        if let Ok(wal) = std::fs::read(env.db.with_extension("db-wal")) {
            archive.extend(wal);
        }
        assert!(!String::from_utf8_lossy(&archive).contains("SECRET-0042"), "a secret reached the archive");
    }
}

/// A redirect is never followed: it would carry the webhook's secret URL path,
/// its headers and its signature to whatever host the receiver names. The README's
/// table makes a 3xx a misconfigured destination, its alerts kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_redirect_is_not_followed_and_marks_it_misconfigured() {
    for code in [302, 307] {
        let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
        let (elsewhere, connections) = counting_listener().await;
        let url = redirecting_receiver(code, elsewhere).await;
        let env = Env::new();
        let (cfg, out) = once_against(&env, &sim, &url).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let s = status(&env).await;
        let marked = &s["alerts"]["misconfigured"][0];
        assert_eq!(marked["name"], "hook", "{s:#}");
        let why = marked["misconfigured"].as_str().unwrap();
        assert!(why.contains(&format!("answered {code}")) && why.contains("a redirect, not followed"), "{why}");
        assert_eq!((s["alerts"]["abandoned"].as_u64(), s["alerts"]["delivered"].as_u64()), (Some(0), Some(0)));
        let shown = [text(&out.stderr), env.ok(None, &["--config", &cfg, "status"]).await].join("\n");
        assert!(!shown.contains("SECRET-0042"), "{shown}");
        // `--once` has finished: every attempt it made is over, so nothing can still
        // be on its way to the other listener.
        assert_eq!(connections.load(Ordering::SeqCst), 0, "a redirect was followed to another host");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_error_body_is_read_only_in_part() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let env = Env::new();
    let started = Instant::now();
    let (_, out) = once_against(&env, &sim, &receivers.endless_url).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The destination's timeout is 30s: only reading a bounded prefix ends sooner.
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let s = status(&env).await;
    assert_eq!(s["alerts"]["failing"], 3);
    let error = s["alerts"]["recent"][0]["deliveries"][0]["last_error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("the receiver answered 500 Internal Server Error: xxxx"), "{error}");
    assert!(error.chars().count() <= 501, "{}", error.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_destination_is_misconfigured_and_keeps_its_alerts() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    let inbox = receivers.inbox.clone();
    inbox.hook_status.store(401, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    let mut runner = critical_alerts_pending(&env, &sim, cfg).await;
    let mut shown = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while shown["alerts"]["misconfigured"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "never marked misconfigured: {shown:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = status(&env).await;
    }
    runner.kill().await.unwrap();
    let marked = &shown["alerts"]["misconfigured"][0];
    assert_eq!(marked["name"], "hook");
    assert!(marked["misconfigured"].as_str().unwrap().contains("401"), "{marked}");
    assert!(marked["misconfigured"].as_str().unwrap().contains("check the destination's secret"), "{marked}");
    let table = env.ok(None, &["--config", cfg, "status"]).await;
    assert!(table.contains("MISCONFIGURED hook since"), "{table}");
    // Kept, not abandoned.
    let s = status(&env).await;
    assert_eq!((s["alerts"]["abandoned"].as_u64(), s["alerts"]["delivered"].as_u64()), (Some(0), Some(0)));
    // The user fixes the secret: everything kept goes out, and the mark is cleared.
    inbox.hook_status.store(200, Ordering::SeqCst);
    let mut runner = alerts_run(&env, cfg);
    let s = all_delivered(&env, 3).await;
    runner.kill().await.unwrap();
    assert_eq!(s["alerts"]["misconfigured"], json!([]));
    let mut keys = receivers.accepted_hook_keys();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_payload_is_abandoned_with_its_reason_and_never_retried() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    receivers.inbox.hook_status.store(422, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let cfg = cfg.to_str().unwrap();
    critical_events_synced(&env, &sim, cfg).await;
    let out = env.ok(None, &["--config", cfg, "alerts", "run", "--once"]).await;
    assert!(out.contains("0 delivered, 0 failed (will retry), 3 abandoned"), "{out}");
    let s = status(&env).await;
    assert_eq!((s["alerts"]["abandoned"].as_u64(), s["alerts"]["pending"].as_u64()), (Some(3), Some(0)));
    let table = env.ok(None, &["--config", cfg, "status"]).await;
    assert!(table.contains("hook last error: the receiver answered 422 Unprocessable Entity"), "{table}");
    let id = s["alerts"]["recent"][0]["id"].to_string();
    let shown = env.ok(None, &["--config", cfg, "alerts", "show", &id]).await;
    assert!(shown.contains("abandoned") && shown.contains("last error: the receiver answered 422"), "{shown}");
    // Never retried, by this process or the next.
    let out = env.ok(None, &["--config", cfg, "alerts", "run", "--once"]).await;
    assert!(out.contains("0 delivered, 0 failed (will retry), 0 abandoned"), "{out}");
    assert_eq!(receivers.inbox.hook.lock().unwrap().len(), 3);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_destination_shows_in_readyz_and_metrics() {
    let sim = start(SimConfig { events: 100, hostile: 0.0, ..SimConfig::default() }).await;
    let receivers = Receivers::start().await;
    receivers.inbox.hook_status.store(403, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(&env, &sim, &hook_destination(&receivers, &env));
    let server = crate::serve::Server::start(&env, &cfg, &[("SIM_TOKEN", sim.token())]).await;
    wait_until("the first backfill", Duration::from_secs(30), || backfilled(&env)).await;
    inject_critical_events(&sim);
    let mut ready = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready["misconfigured_destinations"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "readyz never showed it: {ready:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = server.get("/readyz").await.json().await.unwrap();
    }
    assert_eq!(ready["ready"], true, "a misconfigured destination does not make the service unready");
    assert_eq!(ready["misconfigured_destinations"][0]["name"], "hook");
    assert!(ready["misconfigured_destinations"][0]["misconfigured"].as_str().unwrap().contains("403"), "{ready:#}");
    let metrics = server.metrics.clone().unwrap();
    let text = reqwest::get(format!("{metrics}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("tfaudit_destination_misconfigured{destination=\"hook\"} 1"), "{text}");
    server.stop().await;
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
