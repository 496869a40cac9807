//! The whole service against the simulator on 127.0.0.1, over a real SQLite archive
//! seen through `tfaudit_store::Guarded`: a store call made on an async thread
//! anywhere in the service (a sync, the alert runner, a handler) panics its task, and
//! shows here as a sync never reported or a request that fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tfaudit_alerts::destination::{Destination, Kind};
use tfaudit_alerts::runner::Settings;
use tfaudit_api::{Client, ClientOptions, Token};
use tfaudit_sim::{Sim, SimConfig};
use tfaudit_store::Store;
use tfaudit_store_sqlite::{OpenMode, SqliteStore};
use tfaudit_sync::{SyncError, SyncReport, WalkOptions};
use tokio_util::sync::CancellationToken;

use crate::{Flow, Organization, Outcome, Report, Service, ServiceConfig, ServiceError};

const EVENTS: u64 = 300;

/// `seed`: event ids are unique across the archive, so two organizations need two.
async fn sim(seed: u64) -> Sim {
    let config = SimConfig { seed, events: EVENTS, live_rate: 0.0, ..SimConfig::default() };
    Sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn archive() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("archive.db"), OpenMode::CreateIfMissing).unwrap();
    (dir, Arc::new(store))
}

fn organization(sim: &Sim, name: &str) -> Organization {
    let mut options = ClientOptions::new(sim.url(), Token::new(sim.token()).unwrap());
    options.rate_limit = None;
    Organization {
        name: name.into(),
        client: Client::new(options).unwrap(),
        walk: WalkOptions::default(),
        interval: Duration::from_secs(3600),
        enrich: None,
    }
}

fn alerts() -> Arc<Settings> {
    let log = Destination {
        name: "log".into(),
        kind: Kind::Log,
        min_severity: tfaudit_alerts::Severity::Info,
        timeout: Duration::from_secs(5),
    };
    Arc::new(Settings {
        rules: tfaudit_alerts::pack::builtin(&jiff::tz::TimeZone::UTC).unwrap(),
        presentation: tfaudit_alerts::engine::Presentation::default(),
        destinations: HashMap::from([("log".to_owned(), log)]),
        default_destinations: vec!["log".into()],
        max_delivery_age: Duration::from_secs(3600),
        retry_delay: Duration::from_secs(1),
        retry_cap: Duration::from_secs(60),
    })
}

fn serve_on_any_port() -> tfaudit_server::Options {
    tfaudit_server::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        access_token: None,
        limits: tfaudit_server::Limits::default(),
        zone: jiff::tz::TimeZone::UTC,
    }
}

/// Records what the service reports; stops it after `stop_after` syncs, if set.
#[derive(Default)]
struct Recorder {
    listening: Mutex<Option<(SocketAddr, Option<SocketAddr>)>>,
    syncs: Mutex<Vec<(String, Result<u64, String>)>>,
    stop_after: Option<usize>,
}

impl Report for Recorder {
    fn listening(&self, api: SocketAddr, metrics: Option<SocketAddr>) {
        *self.listening.lock().unwrap() = Some((api, metrics));
    }

    fn synced(&self, organization: &str, result: &Result<SyncReport, SyncError>) -> Flow {
        let mut syncs = self.syncs.lock().unwrap();
        syncs.push((organization.to_owned(), result.as_ref().map(|r| r.tally.new_events).map_err(ToString::to_string)));
        if self.stop_after.is_some_and(|n| syncs.len() >= n) { Flow::Stop } else { Flow::Continue }
    }
}

fn stored(store: &Arc<dyn Store>) -> u64 {
    store.status().unwrap().iter().map(|s| s.events).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_asks_to_stop_ends_the_run_after_every_organization_synced_once() {
    let (sim_a, sim_b) = (sim(1).await, sim(2).await);
    let (_dir, store) = archive();
    let mut config = ServiceConfig::new(vec![organization(&sim_a, "a"), organization(&sim_b, "b")]);
    config.alerts = Some(alerts());
    let recorder = Arc::new(Recorder { stop_after: Some(2), ..Recorder::default() });
    let service = Service::new(config).report_to(recorder.clone());
    let cancel = CancellationToken::new();
    // Bounded: a panicked task would never report, and the run would never end.
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        service.run(tfaudit_store::Guarded::wrap(store.clone()), cancel.clone()),
    )
    .await
    .expect("the run ended after the reports asked it to")
    .unwrap();
    assert_eq!(outcome, Outcome::StoppedByReport);
    // The report's stop is the service's own: the caller's token is untouched.
    assert!(!cancel.is_cancelled());
    let mut syncs = recorder.syncs.lock().unwrap().clone();
    syncs.sort();
    assert_eq!(syncs, [("a".to_owned(), Ok(EVENTS)), ("b".to_owned(), Ok(EVENTS))]);
    assert_eq!(stored(&store), 2 * EVENTS);
    assert!(recorder.listening.lock().unwrap().is_none(), "nothing is served without serve options");
    // The alert runner ran beside the syncs: it saved its cursor.
    assert!(store.consumer(tfaudit_store::ALERTS_CONSUMER).unwrap().is_some());
    sim_a.stop().await;
    sim_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_reports_the_listeners_turns_ready_after_the_first_sync_and_stops_on_cancel() {
    let sim = sim(1).await;
    let (_dir, store) = archive();
    let mut config = ServiceConfig::new(vec![organization(&sim, "acme")]);
    config.alerts = Some(alerts());
    config.serve = Some(serve_on_any_port());
    let recorder = Arc::new(Recorder::default());
    let service = Service::new(config).report_to(recorder.clone());
    let cancel = CancellationToken::new();
    let run = tokio::spawn(service.run(tfaudit_store::Guarded::wrap(store.clone()), cancel.clone()));
    let http = reqwest::Client::new();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let listening = *recorder.listening.lock().unwrap();
            if let Some((api, _)) = listening
                && let Ok(r) = http.get(format!("http://{api}/readyz")).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                return listening.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("ready after the first sync");
    let (_, metrics) = ready;
    let text = http.get(format!("http://{}/metrics", metrics.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(&format!("tfaudit_events_ingested_total{{organization=\"acme\"}} {EVENTS}")), "{text}");
    assert!(text.contains("tfaudit_lease_held{organization=\"acme\"} 1"), "{text}");
    assert!(text.contains("tfaudit_lease_changes_total{organization=\"acme\",change=\"acquired\"} 1"), "{text}");
    cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run).await.expect("stopped on cancel").unwrap();
    assert_eq!(outcome.unwrap(), Outcome::Cancelled);
    assert_eq!(*recorder.syncs.lock().unwrap(), [("acme".to_owned(), Ok(EVENTS))]);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_is_refused_before_anything_is_synced() {
    let sim = sim(1).await;
    let (_dir, store) = archive();
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = ServiceConfig::new(vec![organization(&sim, "acme")]);
    config.serve = Some(tfaudit_server::Options { listen: taken.local_addr().unwrap(), ..serve_on_any_port() });
    let recorder = Arc::new(Recorder::default());
    let result = Service::new(config).report_to(recorder.clone()).run(store.clone(), CancellationToken::new()).await;
    assert!(matches!(result, Err(ServiceError::Serve(tfaudit_server::ServeError::Bind { .. }))), "{result:?}");
    assert!(recorder.syncs.lock().unwrap().is_empty());
    assert_eq!(stored(&store), 0);
    sim.stop().await;
}

/// Two instances on one archive with two organizations: each ends up holding one
/// lease (whichever started first gives one up to the other), both organizations are
/// synced, each event stored once, and each instance's `/readyz` is ready for both
/// (judged by the archive's last successful sync, wherever it ran); stopping releases
/// the leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_spread_the_organizations_and_release_them_on_stop() {
    let (sim_a, sim_b) = (sim(1).await, sim(2).await);
    let (_dir, store) = archive();
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    let mut recorders = Vec::new();
    for instance in ["one", "two"] {
        let mut config = ServiceConfig::new(vec![organization(&sim_a, "a"), organization(&sim_b, "b")]);
        config.cluster = crate::Cluster { instance: instance.into(), lease: Duration::from_secs(1) };
        config.serve = Some(serve_on_any_port());
        let recorder = Arc::new(Recorder::default());
        recorders.push(recorder.clone());
        let service = Service::new(config).report_to(recorder);
        runs.push(tokio::spawn(service.run(tfaudit_store::Guarded::wrap(store.clone()), cancel.clone())));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let leases = store.leases().unwrap();
            let mut holders: Vec<&str> = leases.iter().map(|l| l.holder.as_str()).collect();
            holders.sort_unstable();
            if holders == ["one", "two"] && stored(&store) == 2 * EVENTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("each instance holds one organization, and both are synced");
    let http = reqwest::Client::new();
    for recorder in &recorders {
        let (api, _) = recorder.listening.lock().unwrap().expect("listening");
        let r = http.get(format!("http://{api}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{}", r.text().await.unwrap());
    }
    let synced_here: Vec<usize> = recorders.iter().map(|r| r.syncs.lock().unwrap().len()).collect();
    assert!(synced_here.iter().all(|n| *n >= 1), "each instance synced its own organization: {synced_here:?}");
    cancel.cancel();
    for run in runs {
        let outcome = tokio::time::timeout(Duration::from_secs(30), run).await.expect("stopped on cancel").unwrap();
        assert_eq!(outcome.unwrap(), Outcome::Cancelled);
    }
    assert_eq!(store.leases().unwrap(), [], "stopping releases every lease");
    assert_eq!(store.live_instances().unwrap(), Vec::<String>::new(), "and ends the instance's heartbeat");
    assert_eq!(stored(&store), 2 * EVENTS);
    sim_a.stop().await;
    sim_b.stop().await;
}

/// Six organizations over three instances: each holds a third; when one dies (its
/// task aborted: no release, no last heartbeat), its organizations move to the other
/// two within 3 lease periods, half each. (3 s on top for scheduling: the machine's
/// 2 cores run this beside the crate's other tests, each with its simulators.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizations_spread_over_three_instances_and_move_when_one_dies() {
    const ORGS: u64 = 6;
    let lease = Duration::from_secs(2);
    let mut sims = Vec::new();
    for seed in 1..=ORGS {
        sims.push(sim(seed).await);
    }
    let (_dir, store) = archive();
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    for instance in ["one", "two", "three"] {
        let orgs = sims.iter().enumerate().map(|(i, s)| organization(s, &format!("org-{i:02}"))).collect();
        let mut config = ServiceConfig::new(orgs);
        config.cluster = crate::Cluster { instance: instance.into(), lease };
        runs.push(tokio::spawn(Service::new(config).run(store.clone(), cancel.clone())));
    }
    let held_by = |store: &Arc<dyn Store>| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for l in store.leases().unwrap() {
            *counts.entry(l.holder).or_default() += 1;
        }
        counts
    };
    let spread = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let counts = held_by(&store);
            if counts.len() == 3 && counts.values().all(|n| *n == 2) && stored(&store) == ORGS * EVENTS {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a third each, and every organization synced");
    assert_eq!(spread.values().sum::<usize>(), 6);
    // "three" dies.
    runs.pop().unwrap().abort();
    let died = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let counts = held_by(&store);
            if counts.get("one") == Some(&3) && counts.get("two") == Some(&3) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the dead instance's organizations move to the others");
    assert!(died.elapsed() < lease * 3 + Duration::from_secs(3), "took {:?}", died.elapsed());
    cancel.cancel();
    for run in runs {
        let _ = tokio::time::timeout(Duration::from_secs(30), run).await.expect("stopped on cancel");
    }
    assert_eq!(stored(&store), ORGS * EVENTS, "each event once");
    for s in sims {
        s.stop().await;
    }
}
