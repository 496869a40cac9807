//! The PostgreSQL archive's server away: `tfaudit serve` started before its database
//! answers waits for it (not ready meanwhile) instead of exiting, and one that loses
//! its database while running reports not-ready, keeps retrying, and catches up when
//! the database is back, with nothing lost and nothing stored twice.
//!
//! The outage is a TCP forwarder between tfaudit and the test's PostgreSQL server that
//! can be cut: cut, it closes every forwarded connection and every new one at once, as
//! a database server that restarts or a network that drops does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tfaudit_sim::SimConfig;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cluster::{TestDb, admin_url};
use crate::harness::{assert_archive_equals, served, start};
use crate::serve::{Server, config, wait_for};

/// A forwarder from a port of its own to `upstream` that can be cut and restored.
struct Forwarder {
    port: u16,
    up: Arc<AtomicBool>,
    /// Cancelled on a cut: every connection forwarded until then ends.
    connections: Arc<Mutex<CancellationToken>>,
}

impl Forwarder {
    /// Starts cut.
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(CancellationToken::new()));
        let (is_up, current) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_up.load(Ordering::SeqCst) {
                    // Closed at once: the client sees the connection end during its
                    // start-up, as with a server that is not there.
                    drop(client);
                    continue;
                }
                let cut = current.lock().await.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self { port, up, connections }
    }

    async fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut current = self.connections.lock().await;
        current.cancel();
        *current = CancellationToken::new();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// `host:port` of a libpq URL (as the tests' admin URL is written).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') { host.to_owned() } else { format!("{host}:5432") }
}

/// `url` with its `host:port` replaced.
fn through(url: &str, host_port_now: &str, port: u16) -> String {
    url.replacen(host_port_now, &format!("127.0.0.1:{port}"), 1)
}

async fn readiness(server: &Server) -> (u16, serde_json::Value) {
    let r = server.get("/readyz").await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_its_database_and_catches_up_after_an_outage() {
    let db = tokio::task::spawn_blocking(TestDb::new).await.unwrap();
    let upstream = host_port(&admin_url());
    let forwarder = Forwarder::start(upstream.clone()).await;
    let proxied = through(&db.url, &upstream, forwarder.port);

    let sim = start(SimConfig { events: 400, live_rate: 20.0, hostile: 0.05, ..SimConfig::default() }).await;
    let mut env = crate::harness::Env::new();
    env.db = proxied.clone().into();
    let cfg = config(&env, &[("acme", &sim)], "");
    let token = sim.token().to_owned();

    // Started while its database does not answer: it listens, says not ready and
    // why, and keeps running.
    let mut server = Server::start(&env, &cfg, &[("TOKEN_ACME", &token)]).await;
    let (status, body) = readiness(&server).await;
    assert_eq!(status, 503, "not ready without its database: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("127.0.0.1:{}", forwarder.port)), "readiness names the server: {body}");
    assert!(!proxied.contains('@') || !detail.contains(&proxied), "no URL with credentials in {detail}");
    assert!(server.child.try_wait().unwrap().is_none(), "serve waits for its database instead of exiting");

    // The database comes: the schema is made, the organization synced, ready.
    forwarder.restore();
    wait_for("ready once the database answers", async || readiness(&server).await.0 == 200).await;

    // Lost while running: not ready, the process stays; back: it catches up.
    forwarder.cut().await;
    wait_for("not ready while the database is away", async || readiness(&server).await.0 == 503).await;
    let during = served(&sim).len();
    wait_for("live events arriving during the outage", async || served(&sim).len() > during + 20).await;
    assert!(server.child.try_wait().unwrap().is_none(), "serve keeps running through the outage");
    forwarder.restore();
    wait_for("ready again after the outage", async || readiness(&server).await.0 == 200).await;

    sim.set_live(false);
    let target = served(&sim).len() as u64;
    wait_for("every served event archived", async || {
        server
            .get("/api/status")
            .await
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|s| s["organizations"][0]["events"].as_u64())
            == Some(target)
    })
    .await;
    let stopped = server.stop().await;
    assert!(stopped.success(), "serve stops cleanly: {stopped}");

    // Read directly: exactly what was served, each event once.
    env.db = db.url.clone().into();
    assert_archive_equals(&env, &sim).await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}
