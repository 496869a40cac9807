//! Several `tfaudit watch` processes on one archive (SQLite file, PostgreSQL
//! database): one syncs the organization at a time under its lease; killed
//! (`kill -9`) or frozen (SIGSTOP) it is replaced within 3 lease periods, a frozen
//! one thawed is fenced off, and the archive ends up holding exactly what the
//! simulator served, each event once, with the alert rules evaluated to the end and
//! no alert raised twice.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tfaudit_sim::{Faults, Sim, SimConfig};
use tokio::process::{Child, Command};

use crate::harness::{Env, assert_archive_equals, served, start, text};
use crate::receivers::Receivers;

/// Short, so the test is quick; long enough that a loaded 2-core machine's
/// scheduling delays are small beside it.
const LEASE: Duration = Duration::from_secs(2);

/// Time on top of 3 lease periods for the processes to be scheduled and `status` to
/// run.
const SLACK: Duration = Duration::from_secs(1);

/// How long an instance claims a webhook delivery for: the destination's timeout in
/// the alert tests' config (2s) and the 2s the runner adds.
const DELIVERY_CLAIM: Duration = Duration::from_secs(4);

/// How often an instance looks for deliveries that came due (the service's default).
const DELIVERY_POLL: Duration = Duration::from_secs(1);

/// A PostgreSQL database of its own for one test, dropped after it, on the server
/// named by `TFAUDIT_TEST_POSTGRES` (as the store's own tests use).
pub(crate) struct TestDb {
    name: String,
    pub url: String,
}

pub(crate) fn admin_url() -> String {
    std::env::var("TFAUDIT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap_or_else(|e| {
        panic!("the PostgreSQL tests need a server at TFAUDIT_TEST_POSTGRES or 127.0.0.1:5432: {e}")
    })
}

impl TestDb {
    /// Creates it on a thread of its own: the blocking client may not run on a thread
    /// that drives the test's async tasks, so async tests may call this directly.
    pub fn new() -> Self {
        let name = format!("tfaudit_it_{}_{:08x}", std::process::id(), rand_suffix());
        let create = format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0");
        std::thread::scope(|s| s.spawn(|| admin().batch_execute(&create)).join()).unwrap().unwrap();
        let base = admin_url();
        let (head, query) = base.split_once('?').map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
        let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
        let url = match query {
            Some(q) => format!("{root}/{name}?{q}"),
            None => format!("{root}/{name}"),
        };
        Self { name, url }
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.finish() as u32
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::thread::scope(|s| {
            s.spawn(|| admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))).join()
        });
    }
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success(), "kill {sig} {pid}");
}

/// Running `watch` instances by name, each logging to a file of its own: a pipe
/// nobody reads while the test runs would fill up and block the instance.
pub(crate) struct Instances<'a> {
    env: &'a Env,
    command: Box<dyn Fn(&str) -> Command + 'a>,
    running: BTreeMap<String, Child>,
}

impl<'a> Instances<'a> {
    /// `command` makes the command line of the instance of a given name.
    pub(crate) fn new(env: &'a Env, command: impl Fn(&str) -> Command + 'a) -> Self {
        Self { env, command: Box::new(command), running: BTreeMap::new() }
    }

    pub(crate) fn start(&mut self, name: &str) {
        let log = std::fs::File::create(self.env.path(&format!("{name}.log"))).unwrap();
        let child = (self.command)(name).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.running.insert(name.to_owned(), child);
    }

    /// The instances still running.
    fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.env.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Every instance's log (those killed too), for a failure's message.
    pub(crate) fn logs(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.env.dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".log").map(str::to_owned))
            .collect();
        names.sort();
        names.iter().map(|n| format!("--- {n}\n{}\n", self.log(n))).collect()
    }

    fn signal(&self, name: &str, sig: &str) {
        signal(&self.running[name], sig);
    }

    /// `kill -9`, and waits for the process to be gone.
    pub(crate) async fn kill(&mut self, name: &str) {
        let mut child = self.running.remove(name).expect("running");
        signal(&child, "-KILL");
        child.wait().await.unwrap();
    }

    /// Stops every instance with SIGTERM; each must exit cleanly.
    pub(crate) async fn stop(&mut self) {
        for (name, mut child) in std::mem::take(&mut self.running) {
            signal(&child, "-TERM");
            let status = child.wait().await.unwrap();
            assert_eq!(status.code(), Some(0), "{name}: {}", self.log(&name));
        }
    }
}

/// The organization's lease holder and event count, by `status --format json`.
async fn holder_and_events(env: &Env) -> (Option<String>, u64) {
    let out = env.run(None, &["status", "--format", "json"]).await;
    if !out.status.success() {
        return (None, 0);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let org = &v["organizations"][0];
    (org["lease"]["holder"].as_str().map(str::to_owned), org["events"].as_u64().unwrap_or(0))
}

/// Polls until the lease is held by one of `among`, at most `within`.
async fn try_wait_for_holder(env: &Env, among: &[&str], within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        if let (Some(h), _) = holder_and_events(env).await
            && among.contains(&h.as_str())
        {
            return Some(h);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the lease is held by one of `among`, and returns it.
async fn wait_for_holder(env: &Env, among: &[&str], within: Duration) -> String {
    try_wait_for_holder(env, among, within)
        .await
        .unwrap_or_else(|| panic!("no instance among {among:?} took the lease within {within:?}"))
}

/// Turns live arrivals off and polls until the archive holds every event the
/// simulator served (never more); returns the lease holder then.
async fn wait_until_archived(env: &Env, sim: &Sim, instances: &Instances<'_>) -> Option<String> {
    sim.set_live(false);
    let target = served(sim).len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (holder, events) = holder_and_events(env).await;
        assert!(events <= target, "{events} events counted, more than the {target} served");
        if events == target {
            return holder;
        }
        assert!(Instant::now() < deadline, "the archive never caught up: {events} of {target}\n{}", instances.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the alert rules were evaluated up to the newest event (by whichever
/// instance holds `consumer:alerts` by then), and returns every alert, each checked
/// to be raised once.
async fn wait_until_evaluated(env: &Env) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = crate::harness::status(env).await;
        if status["alerts"]["cursor"].as_i64() == status["alerts"]["newest_seq"].as_i64() {
            break;
        }
        assert!(Instant::now() < deadline, "alert evaluation stalled: {}", status["alerts"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(None, &["alerts", "list", "--limit", "0", "--format", "json"]).await).unwrap();
    let mut raised = HashSet::new();
    for a in &alerts {
        let what = (a["rule"].to_string(), a["event_id"].to_string(), a["group"].to_string());
        assert!(raised.insert(what.clone()), "alert raised twice: {what:?}");
    }
    alerts
}

/// `sqlite`: the archive is one SQLite file, where a process frozen inside a write
/// transaction holds the file's write lock, so no other process can write (take the
/// lease) until it thaws; PostgreSQL ends such a transaction instead.
async fn three_instances_take_over_and_store_everything_once(env: Env, hostile: f64, sqlite: bool) {
    let sim = start(SimConfig { events: 600, live_rate: 20.0, hostile, ..SimConfig::default() }).await;
    let names = ["w1", "w2", "w3"];
    let mut instances = Instances::new(&env, |name| {
        env.command(
            Some(&sim),
            &["watch", "--interval", "1s", "--lease", "2s", "--instance", name, "--rate-limit", "0"],
        )
    });
    for name in names {
        instances.start(name);
    }
    let first = wait_for_holder(&env, &names, Duration::from_secs(30)).await;

    // Killed: another instance holds it within 3 lease periods.
    instances.kill(&first).await;
    let killed = Instant::now();
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != first).collect();
    let second = wait_for_holder(&env, &rest, LEASE * 10).await;
    assert!(killed.elapsed() <= LEASE * 3 + SLACK, "takeover took {:?}", killed.elapsed());

    // Frozen: the last one takes over; thawed, the frozen one's writes are fenced off.
    instances.signal(&second, "-STOP");
    let last: Vec<&str> = rest.iter().copied().filter(|n| *n != second).collect();
    let taken = try_wait_for_holder(&env, &last, LEASE * 3 + SLACK).await;
    instances.signal(&second, "-CONT");
    let (third, fenced_off) = match taken {
        Some(h) => (h, true),
        // Frozen inside a write (rare): the takeover waited for the thaw, if it
        // happened at all.
        None if sqlite => (wait_for_holder(&env, &rest, LEASE * 10).await, false),
        None => panic!("no instance among {last:?} took the lease from the frozen one within 3 lease periods"),
    };
    // Events every alert rule set raises on, after the takeovers.
    crate::alerts::inject_critical_events(&sim);

    // Everything served is archived once, by whoever holds the lease. Under load a
    // renewal can come late and the lease move again between the live instances;
    // what matters is that a live one holds it.
    let holder = wait_until_archived(&env, &sim, &instances).await;
    assert!(
        holder.as_deref().is_some_and(|h| h != first),
        "a live instance holds the lease (it passed from {first} to {second}, then {third}): {holder:?}"
    );
    // The alert rules were evaluated up to the newest event, whichever instance held
    // `consumer:alerts` after the others were killed or frozen, and no alert twice.
    let alerts = wait_until_evaluated(&env).await;
    // Other rules may fire on the same event too (a first-seen kind, night hours):
    // the token rule's alert is the one counted.
    let token_alerts = alerts.iter().filter(|a| a["event_id"] == "evt-token" && a["rule"] == "token-created").count();
    assert_eq!(token_alerts, 1, "the token created after the takeovers raised one token alert: {alerts:#?}");
    instances.stop().await;
    if fenced_off {
        let log = instances.log(&second);
        assert!(log.contains("lost the organization's lease"), "the thawed instance knew it lost the lease:\n{log}");
    }
    assert_archive_equals(&env, &sim).await;
    let (holder, _) = holder_and_events(&env).await;
    assert_eq!(holder, None, "instances stopping cleanly release their leases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_watch_instances_on_one_sqlite_archive_take_over_and_store_everything_once() {
    three_instances_take_over_and_store_everything_once(Env::new(), SimConfig::default().hostile, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_watch_instances_on_one_postgres_archive_take_over_and_store_everything_once() {
    let db = tokio::task::spawn_blocking(TestDb::new).await.unwrap();
    let mut env = Env::new();
    env.db = db.url.clone().into();
    three_instances_take_over_and_store_everything_once(env, SimConfig::default().hostile, false).await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// The first backfill is done (the organization has a cursor): events that arrive
/// after it are no longer history, so they raise alerts.
async fn wait_for_backfill(env: &Env, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let out = env.run(None, &["status", "--format", "json"]).await;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if !v["organizations"][0]["cursor"].is_null() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the first backfill did not end within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until every alert's delivery is delivered and none is left to send (one
/// destination: one delivery per alert); after that nothing more is sent.
async fn wait_until_delivered(env: &Env, alerts: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = crate::harness::status(env).await;
        let a = &s["alerts"];
        if a["delivered"].as_u64() == Some(alerts as u64) && a["pending"] == 0 && a["failing"] == 0 {
            assert_eq!(a["abandoned"], 0, "{a:#}");
            return;
        }
        assert!(Instant::now() < deadline, "the {alerts} alerts were not all delivered: {a:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The issue's end-to-end check: three instances on PostgreSQL with an alert
/// destination, the simulator with live and late arrivals and faults, and several
/// cycles of the lease holder killed (`kill -9`, replaced by a new instance) and then
/// frozen (SIGSTOP, thawed once taken over), with new alerts raised between. At the
/// end the archive holds exactly what was served, each alert was raised once, and
/// the receiver got every alert under one key, a key twice only for a send that can
/// have been in flight at a death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_killed_and_frozen_in_cycles_lose_nothing_and_deliver_each_alert_once() {
    const CYCLES: usize = 3;
    let db = tokio::task::spawn_blocking(TestDb::new).await.unwrap();
    let mut env = Env::new();
    env.db = db.url.clone().into();
    let sim = start(SimConfig {
        events: 600,
        max_page_size: 100,
        live_rate: 10.0,
        late_fraction: 0.3,
        max_lateness: Duration::from_secs(90),
        faults: Faults {
            error_rate: 0.05,
            throttle_rate: 0.05,
            drop_rate: 0.03,
            truncate_rate: 0.03,
            garbage_rate: 0.03,
            slow_rate: 0.03,
            slow_delay: Duration::from_millis(500),
            rate_limit: None,
        },
        ..SimConfig::default()
    })
    .await;
    let receivers = Receivers::start().await;
    // Each send takes a while, so that a death can come while one is on the wire.
    receivers.inbox.hook_delay_ms.store(300, std::sync::atomic::Ordering::SeqCst);
    // Each request says which instance sent it.
    let plain = crate::alerts::hook_destination(&receivers, &env);
    let hook = plain.replace(
        r#"headers = { "X-Team" = "platform" }"#,
        r#"headers = { "X-Team" = "platform", "X-Instance" = { env = "INSTANCE_NAME" } }"#,
    );
    assert_ne!(hook, plain);
    let cfg = crate::alerts::config(&env, &sim, &hook);
    let cfg = cfg.to_str().unwrap();
    let mut instances = Instances::new(&env, |name| {
        let mut cmd = env.command(None, &["--config", cfg, "watch", "--lease", "2s", "--instance", name]);
        cmd.env("SIM_TOKEN", sim.token()).env("INSTANCE_NAME", name);
        cmd
    });
    for n in 1..=3 {
        instances.start(&format!("w{n}"));
    }
    let mut started = 3;
    // Events archived by the first backfill are history and raise nothing.
    wait_for_backfill(&env, Duration::from_secs(30)).await;

    let mut frozen = Vec::new();
    let mut killed = Vec::new();
    let mut tags = Vec::new();
    for cycle in 1..=CYCLES {
        let alive = instances.names();
        let alive: Vec<&str> = alive.iter().map(String::as_str).collect();
        let holder = wait_for_holder(&env, &alive, LEASE * 10).await;
        instances.kill(&holder).await;
        let killed_at = Instant::now();
        killed.push(holder.clone());
        started += 1;
        instances.start(&format!("w{started}"));
        let rest = instances.names();
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        wait_for_holder(&env, &rest, LEASE * 10).await;
        assert!(
            killed_at.elapsed() <= LEASE * 3 + SLACK,
            "cycle {cycle}: the takeover from the killed {holder} took {:?}",
            killed_at.elapsed()
        );
        let tag = format!("-c{cycle}-killed");
        crate::alerts::inject_critical_events_tagged(&sim, &tag);
        tags.push(tag);

        // Frozen: it may hold the alert engine's lease or a delivery's claim too. It
        // stays frozen past a delivery's claim and the others' next delivery pass, so
        // that a send it has in flight is taken over, and its own outcome, late, must
        // not count.
        let holder = wait_for_holder(&env, &rest, LEASE * 10).await;
        instances.signal(&holder, "-STOP");
        let stopped = Instant::now();
        let others: Vec<&str> = rest.iter().copied().filter(|n| *n != holder).collect();
        let taken = try_wait_for_holder(&env, &others, LEASE * 3 + SLACK).await;
        tokio::time::sleep((DELIVERY_CLAIM + DELIVERY_POLL * 2).saturating_sub(stopped.elapsed())).await;
        instances.signal(&holder, "-CONT");
        assert!(taken.is_some(), "cycle {cycle}: no instance among {others:?} took the lease from the frozen {holder}");
        frozen.push(holder);
        let tag = format!("-c{cycle}-frozen");
        crate::alerts::inject_critical_events_tagged(&sim, &tag);
        tags.push(tag);
    }

    let holder = wait_until_archived(&env, &sim, &instances).await;
    assert!(holder.is_some_and(|h| instances.running.contains_key(&h)), "a live instance holds the lease");
    let stats = sim.stats();
    assert!(stats.faults > 0 && stats.live_events > 0, "faults and live events were served: {stats:?}");
    let alerts = wait_until_evaluated(&env).await;
    for tag in &tags {
        let raised = |rule: &str, what: &str, value: String| {
            alerts.iter().filter(|a| a["rule"] == rule && a[what] == value.as_str()).count()
        };
        assert_eq!(raised("token-created", "event_id", format!("evt-token{tag}")), 1, "{tag}: {alerts:#?}");
        assert_eq!(raised("owner-added", "event_id", format!("evt-owner{tag}")), 1, "{tag}: {alerts:#?}");
        assert_eq!(raised("delete-burst", "group", format!("user-Mallory{tag}")), 1, "{tag}: {alerts:#?}");
    }
    wait_until_delivered(&env, alerts.len()).await;

    // What the receiver got: one key per alert, every alert, and a key more than once
    // only with the same body and for a send in flight at a death: at most one send
    // of a key by instances that never died, and at most one repeat per death (an
    // instance has at most one send of the destination in flight).
    let requests = receivers.inbox.hook.lock().unwrap().clone();
    let mut sends: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    let mut keys_of: BTreeMap<i64, HashSet<String>> = BTreeMap::new();
    for r in &requests {
        assert!(r.accepted);
        let header = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_owned();
        let key = header("idempotency-key");
        assert_eq!(r.body["idempotency_key"], key.as_str());
        keys_of.entry(r.body["id"].as_i64().unwrap()).or_default().insert(key.clone());
        sends.entry(key).or_default().push((header("x-instance"), r.body.clone()));
    }
    let ids: Vec<i64> = alerts.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    let missing: Vec<&i64> = ids.iter().filter(|id| !keys_of.contains_key(id)).collect();
    assert!(missing.is_empty(), "alerts never delivered: {missing:?}");
    assert_eq!(keys_of.len(), ids.len(), "deliveries of alerts that were not raised: {keys_of:?}");
    for (id, keys) in &keys_of {
        assert_eq!(keys.len(), 1, "alert {id} was sent under several keys: {keys:?}");
    }
    let died = |name: &str| killed.iter().chain(&frozen).any(|d| d == name);
    let mut repeats = 0;
    for (key, sent) in &sends {
        assert!(sent.iter().all(|(_, b)| *b == sent[0].1), "key {key} was sent with different bodies: {sent:#?}");
        let by_survivors = sent.iter().filter(|(by, _)| !died(by)).count();
        if by_survivors > 1 {
            let about = format!("alert={}", sent[0].1["id"]);
            let logs = instances.logs();
            let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&about) || l.starts_with("---")).collect();
            let by: Vec<&String> = sent.iter().map(|(by, _)| by).collect();
            panic!("key {key} was sent more than once by instances that never died: {by:?}\n{}", lines.join("\n"));
        }
        repeats += sent.len() - 1;
    }
    let deaths = killed.len() + frozen.len();
    assert!(repeats <= deaths, "{repeats} repeated sends for {deaths} instances killed or frozen: {sends:#?}");

    instances.stop().await;
    for name in &frozen {
        let log = instances.log(name);
        assert!(log.contains("lost the organization's lease"), "the thawed {name} knew it lost the lease:\n{log}");
    }
    assert_archive_equals(&env, &sim).await;
    let (holder, _) = holder_and_events(&env).await;
    assert_eq!(holder, None, "instances stopping cleanly release their leases");
    eprintln!(
        "{} alerts, {} requests, {repeats} repeated; {} live events, {} faults",
        alerts.len(),
        requests.len(),
        stats.live_events,
        stats.faults
    );
    drop(instances);
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// A one-shot `sync` while a `watch` instance holds the organization's lease is
/// refused with exit 5, naming the instance; once the instance stops (releasing its
/// lease), `sync` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_sync_defers_to_a_running_instance() {
    let sim = start(SimConfig { events: 200, ..SimConfig::default() }).await;
    let env = Env::new();
    let watch = env
        .command(Some(&sim), &["watch", "--interval", "1h", "--instance", "node-a", "--rate-limit", "0", "--no-alerts"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_holder(&env, &["node-a"], Duration::from_secs(30)).await;
    let out = env.sync(&sim, &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("is being synced by instance node-a"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    signal(&watch, "-TERM");
    let stopped = watch.wait_with_output().await.unwrap();
    assert_eq!(stopped.status.code(), Some(0), "{}", text(&stopped.stderr));
    let out = env.sync(&sim, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_archive_equals(&env, &sim).await;
}
