//! Service figures: `cargo bench -p tfaudit --bench serve` (needs `wrk`;
//! `scripts/bench` installs it).
//!
//! 1. Load: filtered event queries against `/api/events` over an archive of 1,000,000
//!    events, with wrk on loopback: requests per second and latency percentiles.
//! 2. Idle memory: `tfaudit serve` with three organizations, once synced and idle.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tfaudit_sim::{Sim, SimConfig};

#[path = "common.rs"]
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_tfaudit");

fn row(what: &str, value: String, target: &str) {
    println!("{what:<58} {value:>16}   {target}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_serve(config: &Path, envs: &[(String, String)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config").arg(config).arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "serve never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn org_config(name: &str, sim: &Sim) -> String {
    format!(
        "[[organization]]\nname = \"{name}\"\naddress = \"{}\"\ntoken_env = \"TOKEN_{}\"\n",
        sim.url(),
        name.to_uppercase()
    )
}

async fn load(dir: &Path, events: u64, seconds: u32) {
    let wrk = which("wrk").expect("wrk is not installed: run scripts/bench, which installs it");
    let built = common::archive(events, dir);
    // A copy, so that the kept archive is not changed by the service's own sync.
    let db = dir.join("serve-load.db");
    std::fs::copy(&built, &db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let sim =
        Sim::start(SimConfig { events: 100, ..SimConfig::default() }, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = free_port();
    let config = dir.join("serve-load.toml");
    std::fs::write(
        &config,
        format!(
            "db = \"{}\"\n[serve]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"off\"\n[alerts]\nenabled = false\n{}",
            db.display(),
            org_config("acme", &sim)
        ),
    )
    .unwrap();
    let mut serve = start_serve(&config, &[("TOKEN_ACME".into(), sim.token().into())]).await;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    let paths = [
        "/api/events?actor=alice&since=7d&limit=50",
        "/api/events?type=run&action=apply&since=24h&limit=50",
        "/api/events?org=bench&since=30d&limit=50",
        "/api/events?actor=user-*&type=var&since=7d&limit=20",
        "/api/events?action=destroy&since=30d&limit=50",
        "/api/events?type=authentication_token&since=90d&limit=50",
    ];
    for p in paths {
        let r = reqwest::get(format!("{url}{p}")).await.unwrap();
        assert!(r.status().is_success(), "{p}");
    }
    let script = dir.join("queries.lua");
    let list = paths.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &script,
        format!(
            "local paths = {{{list}}}\nlocal n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"GET\", paths[(n % #paths) + 1])\nend\n"
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(&wrk)
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(&url)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    let errors = text.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")).unwrap_or("none");
    println!(
        "\nload: filtered /api/events queries (6 kinds, rotating) over an archive of {events} events; `wrk -t1 -c16 -d{seconds}s` on loopback"
    );
    row("  throughput", format!("{} req/s", value("Requests/sec:")), "target >= 2,000 req/s");
    row("  latency p50", value("50%"), "");
    row("  latency p99", value("99%"), "target < 50 ms");
    row("  errors", errors.trim().to_owned(), "");
    let _ = serve.kill().await;
    sim.stop().await;
    let _ = std::fs::remove_file(&db);
}

async fn idle(dir: &Path) {
    let mut sims = Vec::new();
    let mut text = String::new();
    let db = dir.join("serve-idle.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let port = free_port();
    text.push_str(&format!(
        "db = \"{}\"\n[serve]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{}\"\n",
        db.display(),
        free_port()
    ));
    let mut envs = Vec::new();
    for (i, name) in ["alpha", "bravo", "charlie"].iter().enumerate() {
        let sim = Sim::start(
            SimConfig { events: 5_000, seed: i as u64 + 1, ..SimConfig::default() },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        text.push_str(&org_config(name, &sim));
        envs.push((format!("TOKEN_{}", name.to_uppercase()), sim.token().to_owned()));
        sims.push(sim);
    }
    let config = dir.join("serve-idle.toml");
    std::fs::write(&config, text).unwrap();
    let mut serve = start_serve(&config, &envs).await;
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    // Idle: synced, polling every 60s, no requests.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.id().unwrap())).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("0")
            .parse::<f64>()
            .unwrap_or(0.0)
    };
    println!("\nidle memory: `tfaudit serve` with 3 organizations (5,000 events each), synced, alerts on, 10 s idle");
    row("  resident set (VmRSS)", format!("{:.1} MiB", kb("VmRSS:") / 1024.0), "target <= 50 MB");
    row("  peak resident set (VmHWM)", format!("{:.1} MiB", kb("VmHWM:") / 1024.0), "");
    let _ = serve.kill().await;
    for s in sims {
        s.stop().await;
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tfaudit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    println!("tfaudit service benchmarks ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(idle(&dir));
    rt.block_on(load(&dir, 1_000_000, 20));
}
