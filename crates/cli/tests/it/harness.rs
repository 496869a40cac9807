//! Running the `tfaudit` binary against a simulator, and comparing the archive with
//! what the simulator serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use tfaudit_sim::{Sim, SimConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_tfaudit");

/// A private home, config and data folder for one test, so that nothing of the user's
/// (tokens, config, archive) is read and tests do not share state.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/archive.db");
        Self { dir, db }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with a clean environment; `sim` sets TFE_ADDRESS and TFE_TOKEN.
    pub fn command(&self, sim: Option<&Sim>, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_DATA_HOME", self.dir.path().join("share"))
            .env("TFAUDIT_DB", &self.db)
            .kill_on_drop(true);
        if let Some(sim) = sim {
            cmd.env("TFE_ADDRESS", sim.url()).env("TFE_TOKEN", sim.token());
        }
        cmd
    }

    pub async fn run(&self, sim: Option<&Sim>, args: &[&str]) -> Output {
        self.command(sim, args).output().await.unwrap()
    }

    /// Runs and insists on success.
    pub async fn ok(&self, sim: Option<&Sim>, args: &[&str]) -> String {
        let out = self.run(sim, args).await;
        assert!(out.status.success(), "tfaudit {args:?} failed: {}\n{}", out.status, text(&out.stderr));
        text(&out.stdout)
    }

    /// `sync` with fast retries, as the fault tests need.
    pub async fn sync(&self, sim: &Sim, extra: &[&str]) -> Output {
        let mut args = vec!["sync", "--retry-delay", "5ms", "--rate-limit", "0"];
        args.extend_from_slice(extra);
        self.run(Some(sim), &args).await
    }

    /// Every event of the archive, by `export --format jsonl`: id -> original JSON.
    pub async fn exported(&self) -> BTreeMap<String, String> {
        let out = self.ok(None, &["export", "--format", "jsonl"]).await;
        let mut events = BTreeMap::new();
        for line in out.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("export line is not JSON ({e}): {line}"));
            let id = v["id"].as_str().unwrap().to_owned();
            assert!(events.insert(id.clone(), line.to_owned()).is_none(), "event {id} exported twice");
        }
        events
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the simulator serves now: id -> original JSON.
pub fn served(sim: &Sim) -> BTreeMap<String, String> {
    let mut events = BTreeMap::new();
    for e in sim.events() {
        events.insert(e.id.clone().unwrap(), e.json);
    }
    events
}

/// The archive holds exactly the simulator's events, byte for byte, each once.
pub async fn assert_archive_equals(env: &Env, sim: &Sim) {
    let archived = env.exported().await;
    let served = served(sim);
    let missing: Vec<_> = served.keys().filter(|k| !archived.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = archived.keys().filter(|k| !served.contains_key(*k)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?} ({} archived, {} served)",
        archived.len(),
        served.len()
    );
    for (id, json) in &served {
        assert_eq!(&archived[id], json, "event {id} differs from what the server sent");
    }
}

pub async fn start(config: SimConfig) -> Sim {
    Sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// Reads the archive's per-organization status as JSON.
pub async fn status(env: &Env) -> serde_json::Value {
    serde_json::from_str(&env.ok(None, &["status", "--format", "json"]).await).unwrap()
}

pub fn events_in(db: &Path) -> u64 {
    match tfaudit_backend::Location::Sqlite(db.to_owned()).open(tfaudit_backend::Mode::MustExist) {
        Ok(s) => s.status().map(|v| v.iter().map(|s| s.events).sum()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// A small server on 127.0.0.1 that answers the audit trail listing with `answer`,
/// given the page number asked for: for servers no simulator setting imitates.
pub async fn serve_pages(
    answer: impl Fn(u64, &axum::http::HeaderMap) -> axum::response::Response + Clone + Send + Sync + 'static,
) -> String {
    use axum::extract::Query;
    let app = axum::Router::new().route(
        "/api/v2/organization/audit-trail",
        axum::routing::get(move |Query(q): Query<Vec<(String, String)>>, headers: axum::http::HeaderMap| {
            let page = q.iter().find(|(k, _)| k == "page[number]").and_then(|(_, v)| v.parse().ok()).unwrap_or(1);
            let answer = answer.clone();
            async move { answer(page, &headers) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A page of one event, `id`, saying that page 2 follows.
pub fn first_of_two_pages(id: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ts = tfaudit_api::time::format_since(jiff::Timestamp::now());
    let body = format!(
        r#"{{"data":[{{"id":"{id}","timestamp":"{ts}","auth":{{"organization_id":"org-H"}}}}],"pagination":{{"current_page":1,"next_page":2,"total_pages":2,"total_count":2}}}}"#
    );
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}
