//! Forwarding throughput: `cargo bench -p tfaudit --bench forward` (add `-- --help`).
//!
//! The real `tfaudit forward --once` process sends an archive of N events (built once
//! through the store's write path, kept under target/) to an NDJSON receiver in this
//! process over loopback HTTP, once per format: events/s (median of the runs, range
//! beside it) and the forwarding process's peak RSS. Each run is a new sink, so it
//! starts at the beginning of the archive.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tfaudit");

#[path = "common.rs"]
mod common;

struct Args {
    events: u64,
    runs: usize,
    formats: Vec<String>,
    batch_events: u64,
}

fn args() -> Args {
    let mut a = Args {
        events: 1_000_000,
        runs: 3,
        formats: vec!["raw".into(), "ocsf".into(), "ecs".into()],
        batch_events: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => a.events = it.next().and_then(|v| v.parse().ok()).expect("--events N"),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).filter(|&r| r > 0).expect("--runs N (N >= 1)"),
            "--formats" => {
                a.formats = it.next().expect("--formats raw,ocsf,ecs").split(',').map(str::to_owned).collect()
            }
            "--batch-events" => a.batch_events = it.next().and_then(|v| v.parse().ok()).expect("--batch-events N"),
            "--bench" => {}
            "--help" => {
                println!(
                    "cargo bench -p tfaudit --bench forward -- [--events N] [--runs N] [--formats raw,ocsf,ecs] [--batch-events N]"
                );
                std::process::exit(0);
            }
            _ => {}
        }
    }
    a
}

/// Counts the events (lines) it is sent and answers 200.
async fn receiver(received: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/ingest",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let lines = body.iter().filter(|&&b| b == b'\n').count() as u64;
                received.fetch_add(lines, Ordering::Relaxed);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Runs `command` to its end: wall time, and its own peak RSS in MiB.
fn run(mut command: Command) -> (Duration, f64, bool) {
    let started = Instant::now();
    // Reaped by wait4 below, which also gives the child's own peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = command.stdout(std::process::Stdio::null()).spawn().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = i32::try_from(child.id()).unwrap();
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    (started.elapsed(), usage.ru_maxrss as f64 / 1024.0, libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}

fn row(what: &str, value: String, target: &str) {
    println!("{what:<58} {value:>16}   {target}");
}

fn main() {
    let a = args();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tfaudit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    println!("tfaudit forwarding benchmark ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let db = common::archive(a.events, &dir);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let url = rt.block_on(receiver(received.clone()));
    let stamp = jiff::Timestamp::now().as_second();
    println!();
    for format in &a.formats {
        let mut rates = Vec::new();
        let mut peak = 0f64;
        for i in 0..a.runs {
            let name = format!("bench-{format}-{stamp}-{i}");
            let cfg = dir.join(format!("forward-{format}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[[sink]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"{url}\"\nformat = \"{format}\"\nbatch_events = {}\nbatch_bytes = \"4MiB\"\n",
                    a.batch_events
                ),
            )
            .unwrap();
            received.store(0, Ordering::Relaxed);
            let mut command = Command::new(BIN);
            command.arg("--db").arg(&db).arg("--config").arg(&cfg).args(["forward", "--once"]).env("HOME", &dir);
            let (took, rss, ok) = run(command);
            assert!(ok, "tfaudit forward failed");
            assert_eq!(received.load(Ordering::Relaxed), a.events, "the receiver got every event");
            rates.push(a.events as f64 / took.as_secs_f64());
            peak = peak.max(rss);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        let target = if format == "raw" { "target >= 100,000" } else { "target >= 50,000" };
        row(
            &format!("forward {} events, format {format} (median of {})", a.events, a.runs),
            format!("{median:.0} ev/s"),
            &format!("{target} (range {:.0} - {:.0})", rates[0], rates[rates.len() - 1]),
        );
        row(
            &format!("  peak RSS of the forward process, format {format}"),
            format!("{peak:.0} MiB"),
            "target <= 100 MiB",
        );
    }
}
