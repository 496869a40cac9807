//! Alert figures: `cargo bench -p tfaudit --bench alerts`.
//!
//! 1. Rule evaluation with the built-in pack, on one core, over simulated events.
//! 2. Latency from an event becoming visible in the API to its alert being delivered,
//!    through the real `tfaudit watch --interval 1s` process and a local webhook.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tfaudit_alerts::engine::{Engine, EngineState, Presentation};
use tfaudit_api::AuditEvent;
use tfaudit_sim::{Listing, Sim, SimConfig, SinceMode};
use tfaudit_store::StoredEvent;

const BIN: &str = env!("CARGO_BIN_EXE_tfaudit");

fn row(what: &str, value: String, target: &str) {
    println!("{what:<58} {value:>16}   {target}");
}

fn evaluation(n: u64, passes: u32) {
    let config = SimConfig { events: n, hostile: 0.02, ..SimConfig::default() };
    let listing = Listing::new(&config, jiff::Timestamp::now().as_second());
    let (page, _) = listing.page(None, SinceMode::Inclusive, i64::MIN, 0, n);
    let mut events: Vec<StoredEvent> = page
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let event = AuditEvent::parse(&RawValue::from_string(e.json.clone()).ok()?).ok()?;
            Some(StoredEvent { seq: i as i64, source: "bench".into(), ingested_at: event.timestamp, event })
        })
        .collect();
    // The archive's order: oldest first.
    events.reverse();
    let rules = tfaudit_alerts::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap();
    let mut engine = Engine::new(&rules, EngineState::default(), Presentation::default());
    let mut alerts = 0usize;
    let started = Instant::now();
    for _ in 0..passes {
        for e in &events {
            alerts += engine.evaluate(e).len();
        }
    }
    let elapsed = started.elapsed();
    let total = events.len() as u64 * u64::from(passes);
    println!(
        "\nrule evaluation: the built-in pack ({} rules) over {} simulated events x {passes} passes, one thread",
        engine.rules().len(),
        events.len()
    );
    row("  throughput", format!("{:.0} events/s", total as f64 / elapsed.as_secs_f64()), "target >= 500,000 events/s");
    row("  alerts raised", format!("{alerts}"), "");
}

/// A hostile glob over a hostile field: `*` + 2,000 × `A` + `B` against a 5 MB string
/// of `A`s, the input that took a backtracking matcher 8 s for one event.
fn hostile_glob() {
    let rules = tfaudit_alerts::rules::RuleSet::parse(
        "bench.toml",
        &format!(
            "[[rule]]\nname = \"g\"\nseverity = \"low\"\ndescription = \"d\"\nmatch = {{ \"meta.note\" = \"*{}B\" }}\n",
            "A".repeat(2_000)
        ),
        &tfaudit_alerts::rules::Origin::Builtin,
        &jiff::tz::TimeZone::UTC,
    )
    .unwrap();
    let raw = serde_json::json!({
        "id": "big", "version": "0", "type": "Resource", "timestamp": "2026-11-25T00:00:00Z",
        "auth": {"accessor_id": "user-Bench", "type": "Client"},
        "resource": {"id": "x", "type": "var", "action": "update", "meta": {"note": "A".repeat(5_000_000)}}
    })
    .to_string();
    let event = AuditEvent::parse(&RawValue::from_string(raw).unwrap()).unwrap();
    let stored = StoredEvent { seq: 1, source: "bench".into(), ingested_at: event.timestamp, event };
    let mut engine = Engine::new(&rules, EngineState::default(), Presentation::default());
    let started = Instant::now();
    let alerts = engine.evaluate(&stored).len();
    let elapsed = started.elapsed();
    assert_eq!(alerts, 0);
    println!("\nhostile glob: `*` + 2,000 x `A` + `B` over a 5 MB field, one event");
    row("  time", format!("{:.1} ms", elapsed.as_secs_f64() * 1000.0), "target < 100 ms (linear in the field)");
}

async fn latency(dir: &Path, samples: usize) {
    use axum::{Router, body::Bytes, routing::post};
    let sim =
        Sim::start(SimConfig { events: 500, hostile: 0.0, ..SimConfig::default() }, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let received: Arc<Mutex<Vec<(Instant, serde_json::Value)>>> = Arc::default();
    let inbox = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let inbox = inbox.clone();
            async move {
                if let Ok(v) = serde_json::from_slice(&body) {
                    inbox.lock().unwrap().push((Instant::now(), v));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let db = dir.join("latency.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let config = dir.join("latency.toml");
    std::fs::write(
        &config,
        format!(
            "db = \"{}\"\n[sync]\ninterval = \"1s\"\n[[organization]]\nname = \"acme\"\naddress = \"{}\"\ntoken_env = \"SIM_TOKEN\"\n\
             [[destination]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook}\"\n",
            db.display(),
            sim.url()
        ),
    )
    .unwrap();
    let mut watch = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("watch")
        .env("SIM_TOKEN", sim.token())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for the engine to start after the first sync.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = tfaudit_backend::Location::Sqlite(db.clone())
            .open(tfaudit_backend::Mode::MustExist)
            .ok()
            .and_then(|s| s.consumer(tfaudit_store::ALERTS_CONSUMER).ok().flatten())
            .is_some();
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "the alert engine did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::new();
    for i in 0..samples {
        // Spread the arrivals over the poll cycle.
        tokio::time::sleep(Duration::from_millis(1300 + 170 * i as u64)).await;
        let now = jiff::Timestamp::now().as_second();
        let id = format!("latency-{i}");
        let event = serde_json::json!({
            "id": id, "version": "0", "type": "Resource",
            "timestamp": jiff::Timestamp::from_second(now).unwrap().strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string(),
            "auth": {"accessor_id": "user-Bench", "description": "bench", "type": "Client", "impersonator_id": null, "organization_id": "org-SimuLat0r000001"},
            "request": {"id": null},
            "resource": {"id": format!("at-{i}"), "type": "authentication_token", "action": "create", "meta": null}
        });
        let visible = Instant::now();
        sim.add_event_json(now, &event);
        let deadline = visible + Duration::from_secs(30);
        let arrived = loop {
            if let Some((at, _)) = received.lock().unwrap().iter().find(|(_, v)| v["event"]["id"] == id) {
                break *at;
            }
            assert!(Instant::now() < deadline, "alert {i} never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        latencies.push(arrived - visible);
    }
    let _ = watch.kill().await;
    latencies.sort();
    println!(
        "\nalert latency: event visible in the API -> delivered to a webhook, `tfaudit watch --interval 1s` ({samples} samples)"
    );
    row("  median", format!("{:.2} s", latencies[latencies.len() / 2].as_secs_f64()), "");
    row(
        "  worst",
        format!("{:.2} s", latencies[latencies.len() - 1].as_secs_f64()),
        "target <= poll interval + 2 s = 3 s",
    );
    sim.stop().await;
}

fn main() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tfaudit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    println!("tfaudit alert benchmarks ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    evaluation(200_000, 5);
    hostile_glob();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(latency(&dir, 8));
}
