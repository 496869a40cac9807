//! `tfaudit forward`: every archived event reaches each sink, in `seq` order, byte for
//! byte, through a target's outage and a `kill -9`, and is not sent again afterwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tfaudit_sim::{Faults, SimConfig};

use crate::harness::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    key: String,
    body: String,
    gzipped: bool,
    answered: u16,
}

#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<Received>>,
    /// Answer 503 to this many requests first.
    fail_first: usize,
    /// How long each request is held before it is answered.
    delay: Duration,
    /// A batch holding this text is refused as invalid (400).
    invalid: Mutex<Option<String>>,
    /// While set, every request is answered 503: the collector is down.
    down: std::sync::atomic::AtomicBool,
}

impl Receiver {
    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

/// An NDJSON collector on 127.0.0.1 that decompresses, checks the signature when
/// `secret` is given, and records each request.
async fn receiver(receiver: Arc<Receiver>, secret: Option<&'static str>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = receiver.clone();
            async move {
                let header =
                    |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let gzipped = header("content-encoding") == "gzip";
                let bytes = if gzipped {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
                    out
                } else {
                    body.to_vec()
                };
                if let Some(secret) = secret {
                    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                    mac.update(format!("{}.", header("x-tfaudit-timestamp")).as_bytes());
                    mac.update(&bytes);
                    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                    assert_eq!(header("x-tfaudit-signature"), expected, "a batch with a wrong signature");
                }
                let answered = {
                    let mut requests = r.requests.lock().unwrap();
                    let invalid =
                        r.invalid.lock().unwrap().as_ref().is_some_and(|t| String::from_utf8_lossy(&bytes).contains(t));
                    let answered = if requests.len() < r.fail_first || r.down.load(std::sync::atomic::Ordering::SeqCst)
                    {
                        503
                    } else if invalid {
                        400
                    } else {
                        200
                    };
                    requests.push(Received {
                        key: header("idempotency-key"),
                        body: String::from_utf8(bytes).unwrap(),
                        gzipped,
                        answered,
                    });
                    answered
                };
                tokio::time::sleep(r.delay).await;
                StatusCode::from_u16(answered).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The archive in `seq` order: (seq, id, the event as one line).
fn archived(env: &Env) -> Vec<(i64, String, String)> {
    archived_in(&env.db)
}

/// [`archived`] from a SQLite file or a PostgreSQL URL, off the async threads (the
/// PostgreSQL client runs a runtime of its own); `None` before the archive exists.
async fn archived_now(env: &Env) -> Option<Vec<(i64, String, String)>> {
    let db = env.db.clone();
    tokio::task::spawn_blocking(move || {
        let location = tfaudit_backend::Location::from_os(db.as_os_str()).unwrap();
        location.open(tfaudit_backend::Mode::MustExist).ok()?;
        Some(archived_in(&db))
    })
    .await
    .unwrap()
}

fn archived_in(db: &std::path::Path) -> Vec<(i64, String, String)> {
    let location = tfaudit_backend::Location::from_os(db.as_os_str()).unwrap();
    let store = location.open(tfaudit_backend::Mode::MustExist).unwrap();
    let mut events = Vec::new();
    store
        .events_after(0, u64::MAX, &mut |e| {
            // Line breaks can only sit between JSON tokens; a JSON-lines sink writes them as spaces.
            events.push((e.seq, e.event.id.clone(), e.event.raw.replace(['\n', '\r'], " ")));
            Ok(())
        })
        .unwrap();
    events
}

fn write_config(env: &Env, sinks: &str) -> String {
    let path = env.path("tfaudit.toml");
    std::fs::write(&path, sinks).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn synced(events: u64) -> (tfaudit_sim::Sim, Env) {
    let sim = start(SimConfig { events, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    (sim, env)
}

async fn sinks_list(env: &Env, cfg: &str) -> BTreeMap<String, serde_json::Value> {
    let out = env.ok(None, &["--config", cfg, "sinks", "list", "--format", "json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter().map(|r| (r["name"].as_str().unwrap().to_owned(), r)).collect()
}

/// The file sink's files, by name (one per UTC day), each as its lines.
fn file_lines(dir: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let content = std::fs::read_to_string(entry.path()).unwrap();
        assert!(content.ends_with('\n'));
        files.insert(entry.file_name().to_string_lossy().into_owned(), content.lines().map(str::to_owned).collect());
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_once_delivers_every_event_once_in_order_to_a_file_and_http_through_an_outage() {
    let (_sim, env) = synced(1_200).await;
    let events = archived(&env);
    assert_eq!(events.len(), 1_200);
    let r = Arc::new(Receiver { fail_first: 3, ..Receiver::default() });
    let url = receiver(r.clone(), Some("s3cret")).await;
    let out_dir = env.path("out");
    let cfg = write_config(
        &env,
        &format!(
            r#"
[[sink]]
name = "files"
type = "file"
path = "{}/%Y-%m-%d.jsonl"
batch_events = 200

[[sink]]
name = "collector"
type = "http"
url = "{url}"
gzip = true
secret = {{ env = "SINK_SECRET" }}
headers = {{ "X-Team" = "security" }}
batch_events = 250
retry_delay = "10ms"
"#,
            out_dir.display()
        ),
    );
    let before = sinks_list(&env, &cfg).await;
    assert!(before["collector"]["position"].is_null());
    assert_eq!(before["collector"]["lag_events"], 1_200);
    assert!(before["files"]["lag_seconds"].as_u64().unwrap() < 600);

    let out = env
        .command(None, &["--config", &cfg, "forward", "--once"])
        .env("SINK_SECRET", "s3cret")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sink files: 1200 events delivered"), "{stdout}");
    assert!(stdout.contains("sink collector: 1200 events delivered"), "{stdout}");

    // HTTP: three 503s, each sent again with the same key until accepted; then every
    // event exactly once, in seq order, byte for byte.
    let requests = r.requests();
    assert_eq!(requests.iter().filter(|q| q.answered == 503).count(), 3);
    assert!(requests.iter().all(|q| q.gzipped));
    assert!(requests[..4].iter().all(|q| q.key == requests[0].key && q.body == requests[0].body));
    let accepted: Vec<&Received> = requests.iter().filter(|q| q.answered == 200).collect();
    assert_eq!(accepted.len(), 1_200 / 250 + 1);
    let delivered: Vec<&str> = accepted.iter().flat_map(|q| q.body.lines()).collect();
    let expected: Vec<&str> = events.iter().map(|(_, _, raw)| raw.as_str()).collect();
    assert_eq!(delivered, expected);
    let first = events[0].0;
    assert_eq!(accepted[0].key, format!("tfaudit-collector-{first}-{}", events[249].0));

    // File: one file per UTC day, every event once, each file in seq order.
    let files = file_lines(&out_dir);
    assert!(files.len() > 5, "{:?}", files.keys());
    let seq_of: BTreeMap<&str, i64> = events.iter().map(|(seq, _, raw)| (raw.as_str(), *seq)).collect();
    let mut seen = 0;
    for (name, lines) in &files {
        let seqs: Vec<i64> = lines.iter().map(|l| seq_of[l.as_str()]).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{name} is not in seq order");
        for l in lines {
            let id = serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_owned();
            let ts = serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamp"].as_str().unwrap().to_owned();
            assert!(name.starts_with(&ts[..10]), "event {id} of {ts} in {name}");
        }
        seen += lines.len();
    }
    assert_eq!(seen, 1_200);

    // Nothing pending: a second run sends nothing.
    let out = env
        .command(None, &["--config", &cfg, "forward", "--once"])
        .env("SINK_SECRET", "s3cret")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sink collector: 0 events delivered"), "{}", text(&out.stdout));
    assert_eq!(r.requests().len(), requests.len());
    assert_eq!(file_lines(&out_dir), files);

    let after = sinks_list(&env, &cfg).await;
    let newest = events.last().unwrap().0;
    for sink in ["files", "collector"] {
        assert_eq!(after[sink]["position"], newest, "{sink}");
        assert_eq!(after[sink]["lag_events"], 0, "{sink}");
        assert_eq!(after[sink]["lag_seconds"], 0, "{sink}");
        assert_eq!(after[sink]["delivered"], 1_200, "{sink}");
        assert!(after[sink]["last_error"].is_null(), "{sink}");
    }
    let table = env.ok(None, &["--config", &cfg, "sinks", "list"]).await;
    assert!(table.contains("collector") && table.contains("http") && table.contains(&newest.to_string()), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batch_stops_the_sink_before_it_and_a_bad_key_names_its_line() {
    let (_sim, env) = synced(100).await;
    let cfg = write_config(&env, "[[sink]]\nname = \"f\"\ntype = \"file\"\npath = \"out.jsonl\"\nbatch_event = 5\n");
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("tfaudit.toml:5:") && stderr.contains("batch_event"), "{stderr}");

    // A refusal that is not about the events (403: the credentials) stops the sink:
    // exit 4, the cursor stays, the error shows.
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(|| async { (axum::http::StatusCode::FORBIDDEN, "token lacks write permission") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = write_config(&env, &format!("[[sink]]\nname = \"h\"\ntype = \"http\"\nurl = \"{url}\"\n"));
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("token lacks write permission"), "{}", text(&out.stderr));
    let list = sinks_list(&env, &cfg).await;
    assert_eq!(list["h"]["position"], 0);
    assert_eq!(list["h"]["lag_events"], 100);
    assert!(list["h"]["last_error"].as_str().unwrap().contains("403"), "{}", list["h"]);
}

/// A batch the target refuses as invalid (400) is split until the one event it
/// refuses stands alone; that event becomes a dead letter (shown by `sinks list` and
/// `status`), every other is delivered once, and `--retry-dead` sends it again once
/// the target takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_target_refuses_becomes_a_dead_letter_and_the_rest_is_delivered_once() {
    let (_sim, env) = synced(400).await;
    let events = archived(&env);
    let (_, bad_id, _) = events[137].clone();
    let r = Arc::new(Receiver::default());
    *r.invalid.lock().unwrap() = Some(format!("\"id\":\"{bad_id}\""));
    let url = receiver(r.clone(), None).await;
    let cfg = write_config(
        &env,
        &format!("[[sink]]\nname = \"h\"\ntype = \"http\"\nurl = \"{url}\"\nbatch_events = 64\nrate_limit = 100000\n"),
    );
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("sink h: 399 events delivered, 1 refused by the target and kept as dead letters"),
        "{stdout}"
    );
    let delivered: Vec<String> = accepted_lines(&r).into_iter().map(|(_, l)| l).collect();
    let expected: Vec<String> =
        events.iter().filter(|(_, id, _)| *id != bad_id).map(|(_, _, raw)| raw.clone()).collect();
    assert_eq!(delivered, expected, "every other event once, in seq order");
    // Halving a batch of 64 down to the one event: 6 refused requests beside the first.
    let refused = r.requests().iter().filter(|q| q.answered == 400).count();
    assert_eq!(refused, 7, "the refused batch was split in halves");
    let list = sinks_list(&env, &cfg).await;
    assert_eq!(list["h"]["dead_letters"], 1, "{}", list["h"]);
    assert_eq!(list["h"]["lag_events"], 0, "{}", list["h"]);
    let st = env.ok(None, &["--config", &cfg, "status"]).await;
    assert!(st.contains("sink h: 1 (send them again: tfaudit forward --retry-dead h)"), "{st}");
    let st = status(&env).await;
    assert_eq!(st["dead_letters"]["h"], 1, "{st}");

    // Still refused: it stays, exit 4.
    let out = env.run(None, &["--config", &cfg, "forward", "--retry-dead", "h"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 dead letters delivered, 1 refused again"), "{}", text(&out.stdout));
    // Taken now: delivered, the dead letters are empty.
    *r.invalid.lock().unwrap() = None;
    let out = env.run(None, &["--config", &cfg, "forward", "--retry-dead", "h"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 dead letters delivered, 0 refused again"), "{}", text(&out.stdout));
    assert_eq!(sinks_list(&env, &cfg).await["h"]["dead_letters"], 0);
    let last = accepted_lines(&r).pop().unwrap().1;
    assert_eq!(last, events[137].2);
    let out = env.run(None, &["--config", &cfg, "forward", "--retry-dead", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_forwarding_loses_nothing_and_repeats_only_with_the_same_key() {
    let (_sim, env) = synced(1_200).await;
    let events = archived(&env);
    let r = Arc::new(Receiver { delay: Duration::from_millis(150), ..Receiver::default() });
    let url = receiver(r.clone(), None).await;
    let cfg = write_config(
        &env,
        &format!(
            "[[sink]]\nname = \"c\"\ntype = \"http\"\nurl = \"{url}\"\nbatch_events = 50\nbatch_wait = \"10ms\"\n"
        ),
    );
    let mut child = env.command(None, &["--config", &cfg, "forward"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Killed while the receiver holds the fifth batch: sent, not yet acknowledged.
    while r.requests().len() < 5 {
        assert!(std::time::Instant::now() < deadline, "forwarding never reached the fifth batch");
        assert!(child.try_wait().unwrap().is_none(), "forward ended by itself");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let before_rerun = r.requests().len();

    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = r.requests();
    assert!(requests.iter().all(|q| !q.gzipped));
    // The same key always carries the same events.
    let mut by_key: BTreeMap<&str, &str> = BTreeMap::new();
    for q in &requests {
        let body = by_key.entry(&q.key).or_insert(&q.body);
        assert_eq!(*body, q.body, "key {} sent with other events", q.key);
    }
    let repeats = requests.len() - by_key.len();
    assert!(repeats >= 1, "the batch on the wire at the kill was not sent again");
    assert!(repeats <= 1, "more than the one batch in flight was repeated ({repeats})");
    assert!(requests[before_rerun..].iter().any(|q| requests[..before_rerun].iter().any(|p| p.key == q.key)));
    // Every event once across the distinct batches, in seq order.
    let mut batches: Vec<&str> = by_key.values().copied().collect();
    batches.sort_by_key(|b| {
        let first = b.lines().next().unwrap();
        events.iter().position(|(_, _, raw)| raw == first).unwrap()
    });
    let delivered: Vec<&str> = batches.iter().flat_map(|b| b.lines()).collect();
    let expected: Vec<&str> = events.iter().map(|(_, _, raw)| raw.as_str()).collect();
    assert_eq!(delivered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_now_sends_nothing_archived_before_and_a_start_time_skips_older_events() {
    let (_sim, env) = synced(300).await;
    let events = archived(&env);
    let mut stamps: Vec<String> = events
        .iter()
        .map(|(_, _, raw)| {
            let v: serde_json::Value = serde_json::from_str(raw).unwrap();
            v["timestamp"].as_str().unwrap().to_owned()
        })
        .collect();
    stamps.sort_by_key(|t| t.parse::<jiff::Timestamp>().unwrap());
    let start = &stamps[200];
    let newer = stamps.iter().filter(|t| t.parse::<jiff::Timestamp>().unwrap() >= start.parse().unwrap()).count();
    let cfg = write_config(
        &env,
        &format!(
            "[[sink]]\nname = \"later\"\ntype = \"file\"\npath = \"later.jsonl\"\nstart = \"now\"\n\n[[sink]]\nname = \"recent\"\ntype = \"file\"\npath = \"recent.jsonl\"\nstart = \"{start}\"\n"
        ),
    );
    let out = env.ok(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.contains("sink later: 0 events delivered"), "{out}");
    assert!(out.contains(&format!("sink recent: {newer} events delivered, {} skipped", 300 - newer)), "{out}");
    let recent = std::fs::read_to_string(env.path("recent.jsonl")).unwrap();
    assert_eq!(recent.lines().count(), newer);
    assert!(!env.path("later.jsonl").exists());
    let list = sinks_list(&env, &cfg).await;
    assert_eq!(list["later"]["position"], events.last().unwrap().0);
    assert_eq!(list["recent"]["skipped"], 300 - newer as u64);
}

/// Every event accepted by the receiver, in the order received, as (idempotency
/// key, event line).
fn accepted_lines(r: &Receiver) -> Vec<(String, String)> {
    r.requests()
        .into_iter()
        .filter(|q| q.answered == 200)
        .flat_map(|q| q.body.lines().map(|l| (q.key.clone(), l.to_owned())).collect::<Vec<_>>())
        .collect()
}

/// Polls `sinks list` until every sink named has delivered the whole archive.
async fn wait_until_forwarded(env: &Env, cfg: &str, sinks: &[&str], events: usize) {
    crate::serve::wait_for("the sinks to deliver the archive", async || {
        // The instances may not have created the archive yet.
        let Some(archived) = archived_now(env).await else {
            return false;
        };
        let rows = sinks_list(env, cfg).await;
        archived.len() == events && sinks.iter().all(|s| rows[*s]["lag_events"] == 0 && rows[*s]["position"].is_i64())
    })
    .await;
}

fn sinks_config(out_dir: &std::path::Path, url: &str) -> String {
    format!(
        r#"
[[sink]]
name = "files"
type = "file"
path = "{}/%Y-%m-%d.jsonl"
batch_events = 100
batch_wait = "100ms"

[[sink]]
name = "collector"
type = "http"
url = "{url}"
batch_events = 120
batch_wait = "100ms"
retry_delay = "10ms"
"#,
        out_dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_forwards_live_events_to_every_sink_once_in_order_and_counts_them_in_metrics() {
    let sim = start(SimConfig { events: 300, ..SimConfig::default() }).await;
    let env = Env::new();
    let r = Arc::new(Receiver::default());
    let url = receiver(r.clone(), None).await;
    let out_dir = env.path("out");
    let cfg = crate::serve::config(&env, &[("acme", &sim)], &sinks_config(&out_dir, &url));
    let cfg_text = cfg.to_str().unwrap().to_owned();
    let server = crate::serve::Server::start(&env, &cfg, &[("TOKEN_ACME", sim.token())]).await;
    wait_until_forwarded(&env, &cfg_text, &["files", "collector"], 300).await;
    // Live events, archived by the next syncs and forwarded after them.
    let now = jiff::Timestamp::now().as_second();
    for i in 0..40 {
        sim.add_event(now - 40 + i);
    }
    wait_until_forwarded(&env, &cfg_text, &["files", "collector"], 340).await;

    let events = archived(&env);
    let expected: Vec<&str> = events.iter().map(|(_, _, raw)| raw.as_str()).collect();
    let delivered = accepted_lines(&r);
    let delivered: Vec<&str> = delivered.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(delivered, expected, "the collector got every event once, in seq order");
    let seq_of: BTreeMap<&str, i64> = events.iter().map(|(seq, _, raw)| (raw.as_str(), *seq)).collect();
    let files = file_lines(&out_dir);
    let mut in_files: Vec<i64> = Vec::new();
    for (name, lines) in &files {
        let seqs: Vec<i64> = lines.iter().map(|l| seq_of[l.as_str()]).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{name} is not in seq order");
        in_files.extend(seqs);
    }
    in_files.sort_unstable();
    assert_eq!(in_files, events.iter().map(|(seq, _, _)| *seq).collect::<Vec<_>>(), "each event once in the files");

    let metrics = server.metrics.clone().unwrap();
    let scraped = reqwest::get(format!("{metrics}/metrics")).await.unwrap().text().await.unwrap();
    let samples = crate::serve::parse_metrics(&scraped);
    let value = |family: &str, series: &str| {
        samples
            .get(family)
            .and_then(|s| s.iter().find(|(k, _)| k == series))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} missing from\n{scraped}"))
    };
    for sink in ["files", "collector"] {
        let events_total = |result: &str| {
            value("tfaudit_sink_events", &format!("tfaudit_sink_events_total{{sink=\"{sink}\",result=\"{result}\"}}"))
        };
        assert_eq!(events_total("delivered"), 340.0, "{sink}");
        assert_eq!(events_total("skipped"), 0.0, "{sink}");
        assert_eq!(events_total("failed"), 0.0, "{sink}");
        assert_eq!(value("tfaudit_sink_lag_events", &format!("tfaudit_sink_lag_events{{sink=\"{sink}\"}}")), 0.0);
        assert_eq!(value("tfaudit_sink_lag_seconds", &format!("tfaudit_sink_lag_seconds{{sink=\"{sink}\"}}")), 0.0);
    }
    // While `serve` forwards to the sinks, `forward` is refused (no batch sent by
    // both); once it stops, `forward` takes the sinks (nothing is left to send).
    let out = env.run(None, &["--config", &cfg_text, "forward", "--once"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is being forwarded by instance"), "{}", text(&out.stderr));
    assert!(server.stop().await.success());
    let out = env.ok(None, &["--config", &cfg_text, "forward", "--once"]).await;
    assert!(
        out.contains("sink files: 0 events delivered") && out.contains("sink collector: 0 events delivered"),
        "{out}"
    );
    assert_eq!(accepted_lines(&r).len(), 340, "nothing sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watch_instances_on_sqlite_forward_each_event_once_and_the_second_takes_over_the_sink() {
    two_instances_forward_each_event_once(Env::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watch_instances_on_postgres_forward_each_event_once_and_the_second_takes_over_the_sink() {
    let db = tokio::task::spawn_blocking(crate::cluster::TestDb::new).await.unwrap();
    let mut env = Env::new();
    env.db = db.url.clone().into();
    two_instances_forward_each_event_once(env).await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// Two `watch` instances on one archive, the first stopped midway: each sink runs on
/// one of them at a time, so no batch is sent by both and every event arrives once.
async fn two_instances_forward_each_event_once(env: Env) {
    let sim = start(SimConfig { events: 200, ..SimConfig::default() }).await;
    let r = Arc::new(Receiver::default());
    let url = receiver(r.clone(), None).await;
    let out_dir = env.path("out");
    let cfg = crate::serve::config(&env, &[("acme", &sim)], &sinks_config(&out_dir, &url));
    let cfg_text = cfg.to_str().unwrap().to_owned();
    let watch = |name: &str| {
        let log = std::fs::File::create(env.path(&format!("{name}.log"))).unwrap();
        env.command(None, &["--config", &cfg_text, "watch", "--lease", "2s", "--instance", name])
            .env("TOKEN_ACME", sim.token())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut w1 = watch("w1");
    let mut w2 = watch("w2");
    wait_until_forwarded(&env, &cfg_text, &["files", "collector"], 200).await;
    // The first instance stops: the other holds the organization and both sinks next.
    let term = |child: &tokio::process::Child| {
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    };
    term(&w1);
    assert_eq!(w1.wait().await.unwrap().code(), Some(0));
    let now = jiff::Timestamp::now().as_second();
    for i in 0..30 {
        sim.add_event(now - 30 + i);
    }
    wait_until_forwarded(&env, &cfg_text, &["files", "collector"], 230).await;
    let w1_log = std::fs::read_to_string(env.path("w1.log")).unwrap();
    let w2_log = std::fs::read_to_string(env.path("w2.log")).unwrap();
    assert!(w2_log.contains("forwards to the sink now"), "w2 took the sinks over:\n{w2_log}");
    assert!(
        format!("{w1_log}{w2_log}").contains("another instance forwards to this sink"),
        "one instance waited while the other held a sink:\nw1:\n{w1_log}\nw2:\n{w2_log}"
    );

    let events = archived_now(&env).await.unwrap();
    let expected: Vec<&str> = events.iter().map(|(_, _, raw)| raw.as_str()).collect();
    let delivered = accepted_lines(&r);
    let requests = r.requests();
    let keys: Vec<&str> = requests.iter().map(|q| q.key.as_str()).collect();
    let unique: std::collections::HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique.len(), keys.len(), "no batch sent by both instances:\nw1:\n{w1_log}\nw2:\n{w2_log}");
    let delivered: Vec<&str> = delivered.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(delivered, expected, "the collector got every event once, in seq order");
    let files = file_lines(&out_dir);
    assert_eq!(files.values().map(Vec::len).sum::<usize>(), 230, "each event once in the files");

    // `sinks list` and `status` read the same archive as before.
    let rows = sinks_list(&env, &cfg_text).await;
    let newest = events.last().unwrap().0;
    for sink in ["files", "collector"] {
        assert_eq!(rows[sink]["position"], newest, "{sink}");
        assert_eq!(rows[sink]["delivered"], 230, "{sink}");
    }
    let status = status(&env).await;
    assert_eq!(
        status["organizations"].as_array().unwrap().len(),
        1,
        "the sinks' leases are no organizations: {status}"
    );
    assert_eq!(status["organizations"][0]["events"], 230, "{status}");
    term(&w2);
    assert_eq!(w2.wait().await.unwrap().code(), Some(0), "{}", std::fs::read_to_string(env.path("w2.log")).unwrap());
}

/// `sinks check` runs each sink's health check without an archive: a file sink whose
/// folder can be made and an HTTP collector that answers pass; a collector nobody
/// listens for fails, named, with exit 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_check_passes_reachable_targets_and_names_the_one_that_fails() {
    let env = Env::new();
    let url = receiver(Arc::new(Receiver::default()), None).await;
    // A port that was free a moment ago: nothing answers there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let healthy = format!(
        "[[sink]]\nname = \"f\"\ntype = \"file\"\npath = \"out/%Y-%m-%d.jsonl\"\n\n[[sink]]\nname = \"h\"\ntype = \"http\"\nurl = \"{url}\"\n"
    );
    let cfg = write_config(&env, &healthy);
    let out = env.ok(None, &["--config", &cfg, "sinks", "check"]).await;
    assert_eq!(out, "f (file): ok\nh (http): ok\n");
    let cfg = write_config(
        &env,
        &format!("{healthy}\n[[sink]]\nname = \"gone\"\ntype = \"http\"\nurl = \"http://{closed}/\"\n"),
    );
    let out = env.run(None, &["--config", &cfg, "sinks", "check"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("gone (http): FAILED: cannot reach the receiver"), "{stdout}");
    assert!(stdout.starts_with("f (file): ok\nh (http): ok\n"), "{stdout}");
    assert!(text(&out.stderr).contains("the health check failed for gone"), "{}", text(&out.stderr));
}

/// `rate_limit` holds a sink to that many events per second: 300 events in batches of
/// 100 at 200 a second go at 0 s, 0.5 s and 1 s. (A lower bound only: a slow machine
/// can take longer, never shorter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_paces_batches() {
    let (_sim, env) = synced(300).await;
    let r = Arc::new(Receiver::default());
    let url = receiver(r.clone(), None).await;
    let cfg = write_config(
        &env,
        &format!("[[sink]]\nname = \"h\"\ntype = \"http\"\nurl = \"{url}\"\nbatch_events = 100\nrate_limit = 200\n"),
    );
    let started = std::time::Instant::now();
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
    assert_eq!(accepted_lines(&r).len(), 300);
    assert_eq!(r.requests().len(), 3);
}

/// The issue's end-to-end check: `watch` with several sinks, the simulator with live
/// and late events and faults, the collector down for a while and back, and the
/// forwarding instance killed (`kill -9`) again and again, a new one started each
/// time. Every archived event reaches every sink; only what was in flight at a kill
/// is sent again: at most a batch per kill and sink (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_killed_again_and_again_with_a_target_down_delivers_every_event_to_every_sink() {
    use std::sync::atomic::Ordering::SeqCst;
    const KILLS: usize = 4;
    let sim = start(SimConfig {
        events: 1_000,
        max_page_size: 100,
        live_rate: 20.0,
        late_fraction: 0.3,
        max_lateness: Duration::from_secs(60),
        faults: Faults {
            error_rate: 0.05,
            throttle_rate: 0.05,
            drop_rate: 0.03,
            truncate_rate: 0.03,
            garbage_rate: 0.03,
            slow_rate: 0.0,
            slow_delay: Duration::ZERO,
            rate_limit: None,
        },
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    // Each answer takes a while, so that a kill can come while a batch is on the wire.
    let r = Arc::new(Receiver { delay: Duration::from_millis(40), ..Receiver::default() });
    let url = receiver(r.clone(), None).await;
    let out_dir = env.path("out");
    // Elasticsearch (the in-test `_bulk` stand-in) and NATS (a real JetStream server):
    // the targets that drop what they already hold.
    let cluster = Arc::new(crate::es_receiver::Cluster::default());
    let es_url = cluster.clone().serve().await;
    let nats = crate::nats_server::NatsServer::start().await;
    let js = nats.jetstream().await;
    let stream = nats.stream(&js, "TFAUDIT", "tfaudit.audit").await;
    let sinks = format!(
        "{}\n[[sink]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{es_url}\"\nindex = \"audit\"\nbatch_events = 90\nbatch_wait = \"100ms\"\nretry_delay = \"10ms\"\n\n[[sink]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"tfaudit.audit\"\nbatch_events = 80\nbatch_wait = \"100ms\"\nretry_delay = \"10ms\"\n",
        sinks_config(&out_dir, &url),
        nats.url
    );
    let cfg = crate::serve::config(&env, &[("acme", &sim)], &sinks);
    let cfg_text = cfg.to_str().unwrap().to_owned();
    let mut instances = crate::cluster::Instances::new(&env, |name| {
        let mut cmd = env.command(None, &["--config", &cfg_text, "watch", "--lease", "2s", "--instance", name]);
        cmd.env("TOKEN_ACME", sim.token());
        cmd
    });
    let answered = |code: u16| r.requests().iter().filter(|q| q.answered == code).count();
    let wait_for_answers = async |what: &str, code: u16, more: usize| {
        let from = answered(code);
        crate::serve::wait_for(what, async || answered(code) >= from + more).await;
    };
    for k in 1..=KILLS {
        let name = format!("w{k}");
        instances.start(&name);
        if k == 2 {
            // The collector goes down while this instance forwards, and comes back.
            r.down.store(true, SeqCst);
            wait_for_answers("the collector to refuse while down", 503, 3).await;
            r.down.store(false, SeqCst);
        }
        wait_for_answers("the collector to take more batches", 200, 2).await;
        instances.kill(&name).await;
    }
    instances.start("last");
    sim.set_live(false);
    let served = served(&sim).len();
    wait_until_forwarded(&env, &cfg_text, &["files", "collector", "es", "bus"], served).await;
    assert_archive_equals(&env, &sim).await;
    let stats = sim.stats();
    assert!(stats.faults > 0 && stats.live_events > 0, "faults and live events were served: {stats:?}");

    let events = archived(&env);
    let mut expected: Vec<&str> = events.iter().map(|(_, _, raw)| raw.as_str()).collect();
    expected.sort_unstable();
    let counted = |lines: Vec<String>, sink: &str, batch: usize| {
        let mut unique = lines.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique, expected, "{sink}: every archived event arrived\n{}", instances.logs());
        let repeated = lines.len() - unique.len();
        assert!(repeated <= KILLS * batch, "{sink}: {repeated} events sent again, more than a batch per kill");
        repeated
    };
    let collector = counted(accepted_lines(&r).into_iter().map(|(_, l)| l).collect(), "collector", 120);
    let files = counted(file_lines(&out_dir).into_values().flatten().collect(), "files", 100);
    assert!(answered(503) >= 3, "the collector was down for a while");
    // None twice where the target can tell.
    let docs = cluster.documents();
    assert_eq!(docs.len(), events.len(), "es: every event");
    for (_, id, raw) in &events {
        assert_eq!(docs[id].1, *raw, "es: event {id}");
    }
    let created = cluster.statuses().iter().filter(|s| **s == 201).count();
    assert_eq!(created, events.len(), "es: each event created once");
    let ids: Vec<String> = events.iter().map(|(_, id, _)| id.clone()).collect();
    let in_stream = crate::nats_server::NatsServer::message_ids(&stream, ids.len() as u64).await;
    assert_eq!(in_stream, ids, "nats: each event once, in seq order");
    assert_eq!(crate::nats_server::NatsServer::messages(&stream).await, ids.len() as u64);
    eprintln!(
        "{KILLS} kills: events sent again: collector {collector}, files {files}; {} requests",
        r.requests().len()
    );
    instances.stop().await;
}

/// Moves a sink's position back to the start of the archive, as if it were reset.
fn reset_position(env: &Env, sink: &str) {
    let location = tfaudit_backend::Location::from_os(env.db.as_os_str()).unwrap();
    let store = location.open(tfaudit_backend::Mode::MustExist).unwrap();
    let consumer = tfaudit_forward::consumer_name(sink);
    let now = store.consumer(&consumer).unwrap().unwrap();
    let reset = tfaudit_store::ConsumerPosition { position: 0, state: now.state };
    let outcome = store.commit_consumer(&consumer, Some(now.position), &reset).unwrap();
    assert!(matches!(outcome, tfaudit_store::CommitOutcome::Committed { .. }));
}

/// Elasticsearch (an in-test stand-in following the `_bulk` reference: no cluster
/// runs here): every event created once by its `_id`, through whole requests
/// answered 429 and events answered 429 alone; the archive forwarded again after a
/// reset position makes no second copy (each answered 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_once_to_elasticsearch_creates_each_event_once_by_id_through_429s_and_a_reset_position() {
    use crate::es_receiver::{Cluster, Wanted};
    let (_sim, env) = synced(600).await;
    let events = archived(&env);
    let cluster = Arc::new(Cluster::default());
    cluster.require_auth("ApiKey ZXMta2V5LWlkOmVzLWtleS1zZWNyZXQ=");
    for _ in 0..3 {
        cluster.answer_next(429);
    }
    for (_, id, _) in events.iter().step_by(97) {
        cluster.want(id, Wanted::Busy(2));
    }
    let url = cluster.clone().serve().await;
    let cfg = write_config(
        &env,
        &format!(
            "[[sink]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"tfaudit-audit\"\napi_key = {{ env = \"ES_API_KEY\" }}\ngzip = true\nbatch_events = 100\nretry_delay = \"10ms\"\n"
        ),
    );
    let forward = async || {
        env.command(None, &["--config", &cfg, "forward", "--once"])
            .env("ES_API_KEY", "ZXMta2V5LWlkOmVzLWtleS1zZWNyZXQ=")
            .output()
            .await
            .unwrap()
    };
    let out = forward().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sink es: 600 events delivered"), "{}", text(&out.stdout));
    let check = |cluster: &Cluster| {
        let docs = cluster.documents();
        assert_eq!(docs.len(), 600);
        for (_, id, raw) in &events {
            assert_eq!(docs[id], ("tfaudit-audit".to_owned(), raw.clone()), "event {id}");
        }
    };
    check(&cluster);
    let statuses = cluster.statuses();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 600);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2 * events.iter().step_by(97).count());

    reset_position(&env, "es");
    assert_eq!(sinks_list(&env, &cfg).await["es"]["lag_events"], 600);
    let out = forward().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sink es: 600 events delivered"), "{}", text(&out.stdout));
    check(&cluster);
    assert_eq!(cluster.statuses().iter().filter(|s| **s == 409).count(), 600, "each event again, refused as there");
    assert_eq!(cluster.statuses().iter().filter(|s| **s == 201).count(), 600);
}

/// An event Elasticsearch refuses (`mapper_parsing_exception`) becomes a dead letter
/// with the cluster's reason; the others are created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_elasticsearch_refuses_becomes_a_dead_letter_and_the_rest_are_created() {
    use crate::es_receiver::{Cluster, Wanted};
    let (_sim, env) = synced(200).await;
    let events = archived(&env);
    let cluster = Arc::new(Cluster::default());
    let refused = events[57].1.clone();
    cluster.want(&refused, Wanted::MapperError);
    let url = cluster.clone().serve().await;
    let cfg = write_config(
        &env,
        &format!("[[sink]]\nname = \"es\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"audit\"\n"),
    );
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs = cluster.documents();
    assert_eq!(docs.len(), 199);
    assert!(!docs.contains_key(&refused));
    let list = sinks_list(&env, &cfg).await;
    assert_eq!(list["es"]["lag_events"], 0, "{}", list["es"]);
    assert!(list["es"].to_string().contains("mapper_parsing_exception"), "{}", list["es"]);
}

/// NATS JetStream (a real nats-server, started by the test): every event in the
/// stream once, in `seq` order, with its id as `Nats-Msg-Id`; forwarded again after
/// a reset position, the stream drops each as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_once_to_nats_puts_each_event_in_the_stream_once_even_when_sent_again() {
    let (_sim, env) = synced(700).await;
    let events = archived(&env);
    let server = crate::nats_server::NatsServer::start().await;
    let js = server.jetstream().await;
    let stream = server.stream(&js, "TFAUDIT", "tfaudit.audit").await;
    let cfg = write_config(
        &env,
        &format!(
            "[[sink]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\nsubject = \"tfaudit.audit\"\nbatch_events = 250\n",
            server.url
        ),
    );
    assert_eq!(env.ok(None, &["--config", &cfg, "sinks", "check"]).await, "bus (nats): ok\n");
    let out = env.ok(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.contains("sink bus: 700 events delivered"), "{out}");
    let expected: Vec<String> = events.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(crate::nats_server::NatsServer::message_ids(&stream, 700).await, expected);
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(String::from_utf8(first.payload.to_vec()).unwrap(), events[0].2);

    reset_position(&env, "bus");
    let out = env.ok(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.contains("sink bus: 700 events delivered"), "{out}");
    assert_eq!(crate::nats_server::NatsServer::messages(&stream).await, 700);
}

/// A private rsyslogd (Debian's `rsyslog` and `rsyslog-gnutls`) receiving RFC 5424
/// over TLS with octet counting on a port of its own choosing, requiring a client
/// certificate signed by the test's authority, writing what it parsed of each
/// message as one JSON object a line. Never the machine's rsyslog: its own config,
/// pid file, work folder and port, all in `dir`. Stopped when dropped.
struct Rsyslog {
    port: u16,
    dir: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl Rsyslog {
    async fn start(dir: &std::path::Path) -> Self {
        // Where scripts/test installs it; the test fails without it.
        let binary = std::env::var("TFAUDIT_RSYSLOGD").unwrap_or_else(|_| "/usr/sbin/rsyslogd".to_owned());
        assert!(
            std::path::Path::new(&binary).is_file(),
            "no rsyslogd at {binary}: install Debian's rsyslog and rsyslog-gnutls (scripts/test does) or set TFAUDIT_RSYSLOGD"
        );
        std::fs::create_dir_all(dir.join("work")).unwrap();
        write_certificates(dir);
        let p = |name: &str| dir.join(name).display().to_string();
        let conf = format!(
            r#"global(
  workDirectory="{work}"
  maxMessageSize="4m"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
template(name="parsed" type="list") {{
  constant(value="{{")
  property(name="rawmsg" format="jsonf") constant(value=",")
  property(name="msg" format="jsonf") constant(value=",")
  property(name="structured-data" format="jsonf") constant(value=",")
  property(name="msgid" format="jsonf") constant(value=",")
  property(name="hostname" format="jsonf") constant(value=",")
  property(name="app-name" format="jsonf") constant(value=",")
  property(name="procid" format="jsonf") constant(value=",")
  property(name="syslogfacility" format="jsonf") constant(value=",")
  property(name="syslogseverity" format="jsonf") constant(value=",")
  property(name="protocol-version" format="jsonf")
  constant(value="}}\n")
}}
ruleset(name="events") {{ action(type="omfile" file="{events}" template="parsed") }}
input(type="imtcp" port="0" listenPortFileName="{port}" ruleset="events")
*.* action(type="omfile" file="{internal}")
"#,
            work = p("work"),
            ca = p("ca.pem"),
            cert = p("server.pem"),
            key = p("server.key"),
            events = p("events.jsonl"),
            port = p("port"),
            internal = p("rsyslogd.log"),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut child = tokio::process::Command::new(&binary)
            .args(["-n", "-f", &p("rsyslog.conf"), "-i", &p("rsyslogd.pid")])
            .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(dir.join("port")).ok().and_then(|s| s.trim().parse().ok()) {
                break port;
            }
            let exited = child.try_wait().unwrap();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "rsyslogd did not start ({exited:?}): {}{}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default(),
                std::fs::read_to_string(dir.join("rsyslogd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self { port, dir: dir.to_owned(), _child: child }
    }

    /// What rsyslog wrote, once it holds `n` messages (each parsed by rsyslog).
    async fn messages(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(self.dir.join("events.jsonl")).unwrap_or_default();
            if text.lines().count() >= n && text.ends_with('\n') {
                // rsyslog's JSON leaves a tab as it is; every tab it writes is inside a string.
                return text.lines().map(|l| serde_json::from_str(&l.replace('\t', "\\t")).unwrap()).collect();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslog wrote {} of {n} messages: {}",
                text.lines().count(),
                std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A certificate authority, rsyslog's certificate for 127.0.0.1 and a client
/// certificate, all signed by it, as PEM files in `dir`.
fn write_certificates(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "tfaudit test authority");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, san, usage) in [
        ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", "tfaudit.test", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, san);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// RFC 5424's SD-PARAM escaping (§6.3.3), written again here to check the sink's.
fn sd_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]")
}

/// `forward --once` over TLS to a real rsyslog: every archived event arrives once, and
/// rsyslog parses each message as RFC 5424 with the event, hostile strings and all,
/// exactly as archived in MSG and its id in the structured data. A sink without the
/// client certificate rsyslog requires is turned away before any event counts as
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_to_a_real_rsyslog_delivers_every_event_whole_and_parsed() {
    // The simulator's events depend on when it starts; at its default share of hostile
    // strings, 1,000 events sometimes hold none with one of the needles checked below.
    // At 0.3, each needle is in dozens of events.
    let sim = start(SimConfig { events: 1_000, hostile: 0.3, ..SimConfig::default() }).await;
    let env = Env::new();
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = archived(&env);
    let rsyslog = Rsyslog::start(&env.path("rsyslog")).await;
    let port = rsyslog.port;
    // Relative paths are relative to the config file's folder.
    let siem = format!(
        "[[sink]]\nname = \"siem\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nca_file = \"rsyslog/ca.pem\"\nclient_cert = \"rsyslog/client.pem\"\nclient_key = \"rsyslog/client.key\"\nhost = \"tfaudit-test\"\nbatch_events = 150\n"
    );
    let cfg = write_config(&env, &siem);
    assert_eq!(env.ok(None, &["--config", &cfg, "sinks", "check"]).await, "siem (syslog): ok\n");
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sink siem: 1000 events delivered"), "{}", text(&out.stdout));

    let received = rsyslog.messages(events.len()).await;
    assert_eq!(received.len(), events.len());
    let by_escaped_id: BTreeMap<String, (&str, &str)> =
        events.iter().map(|(_, id, raw)| (sd_escape(id), (id.as_str(), raw.as_str()))).collect();
    let mut seen = BTreeMap::new();
    for m in &received {
        let field = |name: &str| m[name].as_str().unwrap_or_else(|| panic!("no {name} in {m}"));
        let sd = field("structured-data");
        let escaped_id = sd.strip_prefix("[tfaudit@32473 id=\"").and_then(|s| s.strip_suffix("\"]")).unwrap();
        let (id, raw) = by_escaped_id[escaped_id];
        *seen.entry(id).or_insert(0) += 1;
        assert_eq!(field("msg"), raw, "event {id}: MSG differs from the archived event");
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        let at: jiff::Timestamp = v["timestamp"].as_str().unwrap().parse().unwrap();
        let timestamp = format!("{}.{:06}Z", at.strftime("%Y-%m-%dT%H:%M:%S"), at.subsec_microsecond());
        assert_eq!(
            field("rawmsg"),
            format!("<109>1 {timestamp} tfaudit-test tfaudit - audit [tfaudit@32473 id=\"{escaped_id}\"] {raw}")
        );
        let parsed = [
            field("msgid"),
            field("hostname"),
            field("app-name"),
            field("procid"),
            field("syslogfacility"),
            field("syslogseverity"),
            field("protocol-version"),
        ];
        assert_eq!(parsed, ["audit", "tfaudit-test", "tfaudit", "-", "13", "5", "1"], "{m}");
    }
    assert_eq!(seen.len(), events.len(), "some events never arrived");
    assert!(seen.values().all(|&n| n == 1), "an event arrived twice");
    // The simulator's hostile strings went through: quotes, brackets, backslashes
    // (escaped line breaks, tabs, escape codes), and UTF-8 beyond ASCII.
    for needle in ["\\\"", "]0;owned", "\\n", "\\t", "\\u001b", "日本語"] {
        assert!(received.iter().any(|m| m["msg"].as_str().unwrap().contains(needle)), "no event held {needle:?}");
    }

    // Without the client certificate rsyslog requires, the connection is closed as
    // soon as it is made: nothing counts as delivered, the position stays.
    let cfg = write_config(
        &env,
        &format!(
            "{siem}\n[[sink]]\nname = \"uncertified\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\nca_file = \"rsyslog/ca.pem\"\nretry_delay = \"10ms\"\n"
        ),
    );
    let out = env.run(None, &["--config", &cfg, "forward", "--once"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("client certificate"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sink siem: 0 events delivered"), "{}", text(&out.stdout));
    let list = sinks_list(&env, &cfg).await;
    assert_eq!(list["uncertified"]["position"], 0, "{}", list["uncertified"]);
    assert_eq!(list["siem"]["lag_events"], 0);
    let lines = std::fs::read_to_string(rsyslog.dir.join("events.jsonl")).unwrap().lines().count();
    assert_eq!(lines, events.len(), "a refused sink's events reached rsyslog");
}

/// What the in-test HTTP Event Collector took, and how it was asked.
#[derive(Default)]
struct Hec {
    /// The id of every event it accepted, in the order received (repeats kept).
    accepted: Mutex<Vec<String>>,
    /// Requests refused with code 6.
    refused: Mutex<usize>,
    /// Acknowledgement polls answered.
    polls: Mutex<usize>,
    channels: Mutex<std::collections::BTreeSet<String>>,
}

/// A Splunk HTTP Event Collector on 127.0.0.1 with indexer acknowledgement, answering as
/// Splunk documents: `Authorization: Splunk <token>` checked (403 code 4 otherwise), a
/// request holding the event `bad` refused whole with 400 code 6 and its
/// `invalid-event-number`, every other request answered with an `ackId` on its
/// `X-Splunk-Request-Channel` (400 code 10 without one), and acknowledgement polls
/// answered `false` once, then `true`.
async fn hec(state: Arc<Hec>, token: &'static str, bad: String) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let events = {
        let state = state.clone();
        move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            let bad = bad.clone();
            async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                if header("authorization") != format!("Splunk {token}") {
                    return (StatusCode::FORBIDDEN, r#"{"text":"Invalid token","code":4}"#.to_owned());
                }
                let channel = header("x-splunk-request-channel");
                if channel.is_empty() {
                    return (StatusCode::BAD_REQUEST, r#"{"text":"Data channel is missing","code":10}"#.to_owned());
                }
                let mut ids = Vec::new();
                for (n, envelope) in
                    serde_json::Deserializer::from_slice(&body).into_iter::<serde_json::Value>().enumerate()
                {
                    let envelope = envelope.unwrap();
                    assert_eq!(envelope["sourcetype"], "hashicorp:terraform:audit");
                    assert!(envelope["time"].is_f64() || envelope["time"].is_u64(), "{envelope}");
                    let id = envelope["event"]["id"].as_str().unwrap().to_owned();
                    if id == bad {
                        *state.refused.lock().unwrap() += 1;
                        return (
                            StatusCode::BAD_REQUEST,
                            format!(r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{n}}}"#),
                        );
                    }
                    ids.push(id);
                }
                state.channels.lock().unwrap().insert(channel);
                let mut accepted = state.accepted.lock().unwrap();
                accepted.extend(ids);
                (StatusCode::OK, format!(r#"{{"text":"Success","code":0,"ackId":{}}}"#, accepted.len()))
            }
        }
    };
    let acks = {
        let state = state.clone();
        move |body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let asked: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut polls = state.polls.lock().unwrap();
                *polls += 1;
                // Not indexed at the first poll of each id (odd polls), indexed at the next.
                let done = (*polls).is_multiple_of(2);
                let acks: serde_json::Map<String, serde_json::Value> = asked["acks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| (id.to_string(), serde_json::Value::Bool(done)))
                    .collect();
                serde_json::json!({ "acks": acks }).to_string()
            }
        }
    };
    let app = axum::Router::new()
        .route("/services/collector/event", axum::routing::post(events))
        .route("/services/collector/ack", axum::routing::post(acks))
        .route("/services/collector/health", axum::routing::get(|| async { r#"{"text":"HEC is healthy","code":17}"# }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Splunk HEC with indexer acknowledgement, one event refused as invalid: that event
/// alone becomes a dead letter (its batch split around it), every other event is indexed
/// exactly once, and `sinks list` and `status` show the dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_with_acknowledgement_delivers_every_event_once_and_keeps_the_refused_one_as_a_dead_letter() {
    let (_sim, env) = synced(300).await;
    let events = archived(&env);
    let bad = events[123].1.clone();
    let state = Arc::new(Hec::default());
    let url = hec(state.clone(), "hec-e2e-token", bad.clone()).await;
    let cfg = write_config(
        &env,
        &format!(
            "[[sink]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"{url}\"\ntoken = {{ env = \"HEC_TOKEN\" }}\nindex = \"terraform\"\nack = true\nbatch_events = 50\nretry_delay = \"10ms\"\n"
        ),
    );
    let check = env.command(None, &["--config", &cfg, "sinks", "check"]).env("HEC_TOKEN", "hec-e2e-token").output();
    let check = check.await.unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert_eq!(text(&check.stdout), "splunk (splunk_hec): ok\n");

    let out = env
        .command(None, &["--config", &cfg, "forward", "--once"])
        .env("HEC_TOKEN", "hec-e2e-token")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sink splunk: 299 events delivered") && stdout.contains("1 refused"), "{stdout}");
    assert!(!text(&out.stderr).contains("hec-e2e-token"), "{}", text(&out.stderr));

    // Every other event exactly once (counting repeats), in seq order.
    let accepted = state.accepted.lock().unwrap().clone();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &accepted {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let repeated: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "events indexed more than once: {repeated:?}");
    let expected: Vec<&str> = events.iter().map(|(_, id, _)| id.as_str()).filter(|id| *id != bad).collect();
    assert_eq!(accepted.iter().map(String::as_str).collect::<Vec<_>>(), expected);
    // The refusing batch was split down to the event: refused at each halving.
    assert!(*state.refused.lock().unwrap() >= 2);
    assert!(*state.polls.lock().unwrap() >= 2 * accepted.len().div_ceil(50));
    assert_eq!(state.channels.lock().unwrap().len(), 1, "one channel per sink");

    let list = sinks_list(&env, &cfg).await;
    assert_eq!(list["splunk"]["dead_letters"], 1, "{}", list["splunk"]);
    assert_eq!(list["splunk"]["delivered"], 299, "{}", list["splunk"]);
    assert_eq!(list["splunk"]["lag_events"], 0, "{}", list["splunk"]);
    let status = status(&env).await;
    assert_eq!(status["dead_letters"]["splunk"], 1, "{status}");
}

/// The checkpoint the archive holds now, as `tfaudit checkpoint --json` shows it.
async fn current_checkpoint(env: &Env, cfg: &str) -> serde_json::Value {
    serde_json::from_str(&env.ok(None, &["--config", cfg, "checkpoint", "--json"]).await).unwrap()
}

/// `[integrity] checkpoint_sink`: each sync that stores events sends its new checkpoint
/// to the named sink as one record, in the sink's own format (a JSON line in the file
/// sink's day file, an NDJSON request with the checkpoint's key to the http sink), its
/// `message` the signed note byte for byte as the archive holds it; the copy verifies
/// the archive. A sink that fails is reported with the setting and without its URL,
/// and the checkpoint is kept; the next one covers the same events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_go_to_the_checkpoint_sink_as_the_signed_note() {
    let sim = start(SimConfig { events: 300, ..SimConfig::default() }).await;
    let env = Env::new();
    env.ok(None, &["keygen", "--name", "auditor", "--out", env.path("k.key").to_str().unwrap()]).await;
    let integrity = "[integrity]\nsigning_key = { file = \"k.key\" }\norigin = \"tfaudit.test/archive\"\n";
    let cfg = write_config(
        &env,
        &format!(
            "{integrity}checkpoint_sink = \"copies\"\n\n[[sink]]\nname = \"copies\"\ntype = \"file\"\npath = \"copies/%Y-%m-%d.jsonl\"\n"
        ),
    );
    let out = env.sync(&sim, &["--config", &cfg]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = current_checkpoint(&env, &cfg).await;
    let note = held["note"].as_str().unwrap();
    assert!(note.starts_with("tfaudit.test/archive\n300\n") && note.contains("\n\n\u{2014} auditor "), "{note}");
    let files = file_lines(&env.path("copies"));
    let lines: Vec<&String> = files.values().flatten().collect();
    assert_eq!(lines.len(), 1, "one record, and only the checkpoint (nothing is forwarded): {files:?}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(record["type"], "tfaudit.checkpoint");
    assert_eq!(record["message"].as_str().unwrap(), note, "the signed note, byte for byte");
    assert_eq!((record["size"].as_u64(), &record["signed_by"]), (Some(300), &held["signed_by"]));
    assert_eq!((&record["root"], &record["made_at"]), (&held["root"], &held["made_at"]));
    // The copy is a checkpoint the archive must still agree with.
    std::fs::write(env.path("300.checkpoint"), record["message"].as_str().unwrap()).unwrap();
    let key = env.path("k.key.pub");
    let from = env.path("300.checkpoint");
    let out = env.ok(None, &["verify", "--key", key.to_str().unwrap(), "--from", from.to_str().unwrap()]).await;
    assert!(out.contains("verified"), "{out}");

    // The http sink: the new checkpoint after more events, with the checkpoint's key.
    let r = Arc::new(Receiver::default());
    let url = receiver(r.clone(), Some("s3cret")).await;
    let http_sink = format!("[[sink]]\nname = \"h\"\ntype = \"http\"\nurl = \"{url}\"\nsecret = \"s3cret\"\n");
    let cfg = write_config(&env, &format!("{integrity}checkpoint_sink = \"h\"\n\n{http_sink}"));
    let now = jiff::Timestamp::now().as_second();
    for i in 0..25 {
        sim.add_event(now - 60 + i);
    }
    let out = env.sync(&sim, &["--config", &cfg]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = current_checkpoint(&env, &cfg).await;
    let requests = r.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let record: serde_json::Value = serde_json::from_str(requests[0].body.strip_suffix('\n').unwrap()).unwrap();
    assert_eq!(record["message"], held["note"]);
    assert!(record["message"].as_str().unwrap().starts_with("tfaudit.test/archive\n325\n"), "{record}");
    assert!(requests[0].key.starts_with("tfaudit-checkpoint-325-"), "{}", requests[0].key);
    // Asked again, the checkpoint is current: not sent again.
    current_checkpoint(&env, &cfg).await;
    assert_eq!(r.requests().len(), 1);

    // The receiver down: the sync says so, naming the setting, never the URL; the
    // checkpoint is made all the same.
    r.down.store(true, std::sync::atomic::Ordering::SeqCst);
    sim.add_event(now - 5);
    let out = env.sync(&sim, &["--config", &cfg]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("not sent to [integrity] checkpoint_sink \"h\"") && err.contains("503"), "{err}");
    assert!(!err.contains(&url) && !err.contains("127.0.0.1"), "{err}");
    assert_eq!(current_checkpoint(&env, &cfg).await["size"], 326);
    assert_eq!(r.requests().len(), 2);
}

/// A checkpoint_sink that names no `[[sink]]`: one line naming the setting and the fix,
/// exit 2, before anything is synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_sink_that_is_not_a_sink_is_a_config_error() {
    let sim = start(SimConfig { events: 10, ..SimConfig::default() }).await;
    let env = Env::new();
    let cfg = write_config(
        &env,
        "[integrity]\ncheckpoint_sink = \"siem\"\n\n[[sink]]\nname = \"archive-copy\"\ntype = \"file\"\npath = \"out.jsonl\"\n",
    );
    for args in [vec!["--config", cfg.as_str(), "config", "check"], vec!["--config", cfg.as_str(), "sync"]] {
        let out = env.run(Some(&sim), &args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(
                ":2: [integrity] checkpoint_sink names \"siem\", which no [[sink]] defines; name one of: archive-copy"
            ),
            "{err}"
        );
    }
    assert!(!env.db.exists(), "nothing was synced");
}
