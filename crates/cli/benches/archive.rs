//! tfaudit's performance figures: `cargo bench -p tfaudit` (add `-- --help` for sizes).
//!
//! 1. backfill: the real `tfaudit sync` process against a simulator in this process,
//!    over loopback HTTP: events/s, peak RSS of the sync process, API requests.
//! 2. incremental: new events after a backfill: requests against ceil(N / page size).
//! 3. archive of many events (built once, kept under target/): an actor + 7-day query,
//!    a 30-day summary, status — through the store, and as whole `tfaudit` commands.
//!
//! By default into SQLite archives under target/; with `--postgres ADMIN_URL` (a
//! server where that user may create databases) the same figures for PostgreSQL
//! archives, in databases `tfaudit_bench_*` that it creates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tfaudit_backend::Mode;
use tfaudit_sim::{Sim, SimConfig};
use tfaudit_store::{EventFilter, Order, Pattern, Store};

const BIN: &str = env!("CARGO_BIN_EXE_tfaudit");

#[path = "common.rs"]
mod common;
use common::archive;

struct Sizes {
    backfill: u64,
    stored: u64,
    /// Backfills timed; the figure is their median, with the range beside it.
    runs: usize,
    only: Option<String>,
    /// An admin URL of a PostgreSQL server: measure PostgreSQL archives instead.
    postgres: Option<String>,
}

fn sizes() -> Sizes {
    let mut s = Sizes { backfill: 1_000_000, stored: 10_000_000, runs: 5, only: None, postgres: None };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backfill" => s.backfill = args.next().and_then(|v| v.parse().ok()).expect("--backfill N"),
            "--stored" => s.stored = args.next().and_then(|v| v.parse().ok()).expect("--stored N"),
            "--runs" => {
                s.runs = args.next().and_then(|v| v.parse().ok()).filter(|&r| r > 0).expect("--runs N (N >= 1)")
            }
            "--only" => s.only = args.next(),
            "--postgres" => s.postgres = Some(args.next().expect("--postgres ADMIN_URL")),
            "--bench" => {}
            "--help" => {
                println!(
                    "cargo bench -p tfaudit --bench archive -- [--backfill N] [--runs N] [--stored N] [--only backfill|incremental|archive|integrity|report] [--postgres ADMIN_URL]"
                );
                std::process::exit(0);
            }
            _ => {}
        }
    }
    s
}

/// Peak RSS of the largest child waited for so far, in MiB.
fn children_peak_rss_mib() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

/// CPU (user + system) of the children waited for so far.
fn children_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The baseline the backfill's CPU is held against: a plain poller that walks every
/// page (1,000 events each) and appends each page's events to a JSONL file, nothing
/// more. Run as a child process of this benchmark (`--poller URL TOKEN FILE`), so that
/// its CPU is counted as tfaudit's is.
fn poller(url: &str, token: &str, file: &str) {
    use std::io::Write;
    #[derive(serde::Deserialize)]
    struct Pagination {
        next_page: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        data: Vec<Box<serde_json::value::RawValue>>,
        pagination: Pagination,
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    let mut page = Some(1u64);
    while let Some(n) = page {
        let body = rt
            .block_on(async {
                client
                    .get(format!("{url}/api/v2/organization/audit-trail?page[number]={n}&page[size]=1000"))
                    .bearer_auth(token)
                    .send()
                    .await?
                    .bytes()
                    .await
            })
            .unwrap();
        let parsed: Page = serde_json::from_slice(&body).unwrap();
        for e in &parsed.data {
            out.write_all(e.get().as_bytes()).unwrap();
            out.write_all(b"\n").unwrap();
        }
        page = parsed.pagination.next_page;
    }
    out.flush().unwrap();
}

/// The second baseline: the polling script people write, in Python with only its
/// standard library: each page fetched with urllib, parsed with `json`, and each event
/// written back out as a JSON line.
const POLLING_SCRIPT: &str = r#"
import json, sys, urllib.request
url, token, out = sys.argv[1:4]
page = 1
with open(out, "w") as f:
    while page:
        req = urllib.request.Request(
            url + "/api/v2/organization/audit-trail?page[number]=%d&page[size]=1000" % page,
            headers={"Authorization": "Bearer " + token},
        )
        with urllib.request.urlopen(req) as r:
            body = json.load(r)
        for event in body["data"]:
            f.write(json.dumps(event) + "\n")
        page = body["pagination"]["next_page"]
"#;

fn row(what: &str, value: String, target: &str) {
    println!("{what:<58} {value:>16}   {target}");
}

fn tfaudit(db: &str, home: &Path, sim: &Sim, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TFE_ADDRESS", sim.url())
        .env("TFE_TOKEN", sim.token())
        .env("HOME", home)
        .output()
        .unwrap()
}

fn backfill_and_incremental(
    rt: &tokio::runtime::Runtime,
    n: u64,
    runs: usize,
    dir: &Path,
    only: &Option<String>,
    postgres: Option<&str>,
) {
    let sim = rt
        .block_on(Sim::start(
            SimConfig { events: n, hostile: 0.02, ..SimConfig::default() },
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let file = dir.join("backfill.db");
    let mut db = file.display().to_string();
    // Each run backfills a new archive; the last one is kept for the incremental step.
    let runs = if only.as_deref() == Some("incremental") { 1 } else { runs };
    let mut rates = Vec::with_capacity(runs);
    let (mut cpus, mut poller_cpus, mut script_cpus) =
        (Vec::with_capacity(runs), Vec::with_capacity(runs), Vec::with_capacity(runs));
    let script = dir.join("poller.py");
    std::fs::write(&script, POLLING_SCRIPT).unwrap();
    let python = Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    let mut requests = 0;
    for _ in 0..runs {
        match postgres {
            Some(admin) => db = common::fresh_database(admin, "tfaudit_bench_backfill"),
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                }
            }
        }
        let before = sim.stats().requests;
        let cpu_before = children_cpu();
        let started = Instant::now();
        let out = tfaudit(&db, dir, &sim, &["sync", "--rate-limit", "0"]);
        let elapsed = started.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        cpus.push(children_cpu() - cpu_before);
        requests = sim.stats().requests - before;
        rates.push(n as f64 / elapsed.as_secs_f64());
        // The plain poller over the same server, in turn with each tfaudit run.
        if postgres.is_none() {
            let jsonl = dir.join("poller.jsonl");
            let cpu_before = children_cpu();
            let status = Command::new(std::env::current_exe().unwrap())
                .args(["--poller", &sim.url(), sim.token(), jsonl.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success());
            poller_cpus.push(children_cpu() - cpu_before);
            let _ = std::fs::remove_file(&jsonl);
            if python {
                let cpu_before = children_cpu();
                let status = Command::new("python3")
                    .arg(&script)
                    .args([&sim.url(), sim.token(), jsonl.to_str().unwrap()])
                    .status()
                    .unwrap();
                assert!(status.success());
                script_cpus.push(children_cpu() - cpu_before);
                let _ = std::fs::remove_file(&jsonl);
            }
        }
    }
    if only.as_deref().is_none_or(|o| o == "backfill") {
        rates.sort_by(f64::total_cmp);
        println!(
            "\nbackfill: `tfaudit sync` of {n} events from a local simulator over loopback HTTP into a new {} archive ({runs} runs)",
            backend(postgres)
        );
        row(
            "  throughput, median (min - max)",
            format!("{:.0} events/s ({:.0} - {:.0})", rates[rates.len() / 2], rates[0], rates[rates.len() - 1]),
            // SQLite's target is the tool's own; PostgreSQL's is the API's ceiling (30
            // requests/s of 1,000 events), which collection can never exceed anyway.
            if postgres.is_some() { "target >= 30,000 events/s" } else { "target >= 100,000 events/s" },
        );
        row(
            "  peak RSS of the sync process (largest run)",
            format!("{:.1} MiB", children_peak_rss_mib()),
            "target <= 100 MB for 1,000,000 events",
        );
        row("  API requests per backfill", format!("{requests}"), &format!("ceil(N / 1000) = {}", n.div_ceil(1000)));
        if postgres.is_none() {
            let (ours, theirs) = (median(cpus.clone()), median(poller_cpus.clone()));
            row(
                "  CPU (user + system) of the sync process, median; the plain poller's",
                format!(
                    "{:.2} s; {:.2} s: {:.2}x",
                    ours.as_secs_f64(),
                    theirs.as_secs_f64(),
                    ours.as_secs_f64() / theirs.as_secs_f64()
                ),
                // Receiving and splitting the pages, which tfaudit pays too: a floor,
                // not the target's poller (README, "Which poller").
                "floor: reads no event's fields",
            );
            if !script_cpus.is_empty() {
                let script = median(script_cpus.clone());
                row(
                    "  CPU of the sync process; a Python polling script's",
                    format!(
                        "{:.2} s; {:.2} s: {:.2}x",
                        ours.as_secs_f64(),
                        script.as_secs_f64(),
                        ours.as_secs_f64() / script.as_secs_f64()
                    ),
                    "target <= 0.75x (urllib + json, stdlib only)",
                );
            } else {
                println!("  (no python3: the polling script's baseline was not run)");
            }
            // The archive beside the events as JSON lines, one original event a line.
            let jsonl = dir.join("backfill.jsonl");
            let out = tfaudit(&db, dir, &sim, &["export", "-o", jsonl.to_str().unwrap()]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let raw = std::fs::metadata(&jsonl).unwrap().len();
            let size: u64 = ["", "-wal"]
                .iter()
                .filter_map(|s| std::fs::metadata(format!("{}{s}", file.display())).ok())
                .map(|m| m.len())
                .sum();
            row(
                "  archive size (file and WAL, with every index and the tree)",
                format!(
                    "{:.1} MB = {:.2}x the {:.1} MB of raw JSONL",
                    size as f64 / 1e6,
                    size as f64 / raw as f64,
                    raw as f64 / 1e6
                ),
                "target <= 0.3x",
            );
            let _ = std::fs::remove_file(&jsonl);
        }
    }
    if only.as_deref().is_none_or(|o| o == "incremental") {
        let cursor_before = sim_cursor_ms(&db);
        let now = jiff::Timestamp::now().as_second();
        let m = 25_000u64;
        for i in 0..m {
            sim.add_event(now - (i % 5) as i64);
        }
        let before = sim.stats().requests;
        let started = Instant::now();
        let out = tfaudit(&db, dir, &sim, &["sync", "--rate-limit", "0"]);
        let elapsed = started.elapsed();
        assert!(out.status.success());
        let requests = sim.stats().requests - before;
        // The overlap re-reads the events of the 10 minutes before the old cursor too.
        let since_ms = cursor_before - 600_000;
        let overlap_events = sim.events().iter().filter(|e| e.timestamp_secs * 1000 > since_ms).count() as u64;
        println!("\nincremental: {m} new events after the backfill (default 10m overlap)");
        row(
            "  API requests",
            format!("{requests}"),
            &format!("ceil({overlap_events} new or in the overlap / 1000) = {}", overlap_events.div_ceil(1000)),
        );
        row("  wall time", format!("{:.2} s", elapsed.as_secs_f64()), "");
    }
    rt.block_on(sim.stop());
}

fn backend(postgres: Option<&str>) -> &'static str {
    if postgres.is_some() { "PostgreSQL" } else { "SQLite" }
}

fn sim_cursor_ms(db: &str) -> i64 {
    let s = tfaudit_backend::open(db, Mode::MustExist).unwrap();
    s.status().unwrap()[0].cursor.map_or(0, |c| c.as_millisecond())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_it(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn queries(n: u64, dir: &Path, postgres: Option<&str>) {
    let db = match postgres {
        Some(admin) => common::postgres_archive(admin, n),
        None => archive(n, dir).display().to_string(),
    };
    let store: Arc<dyn Store> = tfaudit_backend::open(&db, Mode::MustExist).unwrap();
    // Ages are taken back from the archive's newest event, not from today: the archive
    // is built once and kept, and "the last 7 days" of today would match ever fewer
    // of its events.
    let newest = store.status().unwrap().iter().filter_map(|s| s.newest).max().unwrap();
    let week = tfaudit_config::parse_when("7d", newest).unwrap();
    let month = tfaudit_config::parse_when("30d", newest).unwrap();
    let (week_arg, month_arg) = (week.to_string(), month.to_string());
    let actor = EventFilter { actor: Some(Pattern::new("alice")), since: Some(week), ..EventFilter::default() };
    let mut matched = 0;
    store
        .events(&actor, Order::NewestFirst, None, &mut |_| {
            matched += 1;
            Ok(())
        })
        .unwrap();
    println!(
        "\n{} archive of {n} events over 90 days, newest {newest}; 7 and 30 days back from it (median of 9 runs)",
        backend(postgres)
    );
    let t = time_it(9, || {
        store.events(&actor, Order::NewestFirst, Some(100), &mut |_| Ok(())).unwrap();
    });
    row("  actor + 7 days, newest 100 (store)", format!("{:.2} ms", t.as_secs_f64() * 1e3), "target < 50 ms");
    let t = time_it(5, || {
        store.events(&actor, Order::NewestFirst, None, &mut |_| Ok(())).unwrap();
    });
    row(&format!("  actor + 7 days, all {matched} matches (store)"), format!("{:.2} ms", t.as_secs_f64() * 1e3), "");
    let t = time_it(9, || {
        store.summary(&EventFilter { since: Some(month), ..EventFilter::default() }, 10).unwrap();
    });
    row("  30-day summary (store)", format!("{:.2} ms", t.as_secs_f64() * 1e3), "target < 1 s");
    let t = time_it(9, || {
        store.status().unwrap();
    });
    row("  status (store)", format!("{:.2} ms", t.as_secs_f64() * 1e3), "target < 100 ms");
    drop(store);
    let cli = |args: &[&str]| {
        let db = db.clone();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        move || {
            let out = Command::new(BIN).arg("--db").arg(&db).args(&args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let t =
        time_it(9, cli(&["query", "--actor", "alice", "--since", &week_arg, "--limit", "100", "--format", "jsonl"]));
    row(
        "  `tfaudit query --actor alice --since <7d> --limit 100` (whole process)",
        format!("{:.2} ms", t.as_secs_f64() * 1e3),
        "",
    );
    let t = time_it(9, cli(&["summary", "--since", &month_arg]));
    row("  `tfaudit summary --since <30d>` (whole process)", format!("{:.2} ms", t.as_secs_f64() * 1e3), "");
    let t = time_it(9, cli(&["status"]));
    row("  `tfaudit status` (whole process)", format!("{:.2} ms", t.as_secs_f64() * 1e3), "");
}

/// 4. integrity over an archive of `n` events: a checkpoint (the tree grew with each
///    page stored), then `tfaudit verify` recomputing the tree from every event — whole
///    processes, on a copy of the kept archive so that the kept one stays unchanged.
fn integrity(n: u64, dir: &Path) {
    let kept = archive(n, dir);
    let db = dir.join(format!("integrity-{n}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&kept, &db).unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let out =
            Command::new(BIN).args(args).env_clear().env("HOME", home.path()).env("TFAUDIT_DB", &db).output().unwrap();
        assert!(out.status.success(), "tfaudit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        started.elapsed()
    };
    println!("\nintegrity over {n} events (SQLite)");
    let t = run(&["checkpoint", "--quiet"]);
    row(
        "  `tfaudit checkpoint` (whole process; the tree grew with each page)",
        format!("{:.2} ms", t.as_secs_f64() * 1e3),
        "",
    );
    let times: Vec<Duration> = (0..3).map(|_| run(&["verify", "--quiet"])).collect();
    let t = median(times.clone());
    let (lo, hi) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    row(
        "  `tfaudit verify` (whole process), median of 3",
        format!(
            "{:.0} events/s ({:.0}–{:.0})",
            n as f64 / t.as_secs_f64(),
            n as f64 / hi.as_secs_f64(),
            n as f64 / lo.as_secs_f64()
        ),
        ">= 500,000 events/s",
    );
    let t = run(&["verify", "--quick", "--quiet"]);
    row("  `tfaudit verify --quick`, nothing new (whole process)", format!("{:.2} ms", t.as_secs_f64() * 1e3), "");
}

/// 5. `tfaudit report` over the whole kept archive (every one of its `n` events, 90
///    days): the whole process, HTML, against the issue's 2 s.
fn report(n: u64, dir: &Path) {
    let db = archive(n, dir);
    let store: Arc<dyn Store> = tfaudit_backend::open(&db.display().to_string(), Mode::MustExist).unwrap();
    let status = store.status().unwrap();
    let oldest = status.iter().filter_map(|s| s.oldest).min().unwrap();
    let newest = status.iter().filter_map(|s| s.newest).max().unwrap();
    drop(store);
    let (since, until) = (oldest.to_string(), (newest + jiff::SignedDuration::from_secs(1)).to_string());
    let out = dir.join("report.html");
    let home = tempfile::tempdir().unwrap();
    let run = || {
        let started = Instant::now();
        let o = Command::new(BIN)
            .args(["report", "--since", &since, "--until", &until, "-o", out.to_str().unwrap()])
            .env_clear()
            .env("HOME", home.path())
            .env("TFAUDIT_DB", &db)
            .output()
            .unwrap();
        assert!(o.status.success(), "tfaudit report: {}", String::from_utf8_lossy(&o.stderr));
        started.elapsed()
    };
    println!("\nreport over {n} events, {since} to {until} (SQLite)");
    let times: Vec<Duration> = (0..5).map(|_| run()).collect();
    let t = median(times.clone());
    let (lo, hi) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    row(
        "  `tfaudit report --since … --until … -o report.html` (whole process), median of 5",
        format!("{:.0} ms ({:.0}–{:.0})", t.as_secs_f64() * 1e3, lo.as_secs_f64() * 1e3, hi.as_secs_f64() * 1e3),
        "<= 2 s",
    );
    row("  its size", format!("{} bytes", std::fs::metadata(&out).map_or(0, |m| m.len())), "");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--poller") {
        poller(&args[i + 1], &args[i + 2], &args[i + 3]);
        return;
    }
    let sizes = sizes();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tfaudit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    println!("tfaudit benchmarks ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    if sizes.only.as_deref().is_none_or(|o| o == "backfill" || o == "incremental") {
        backfill_and_incremental(&rt, sizes.backfill, sizes.runs, &dir, &sizes.only, sizes.postgres.as_deref());
    }
    if sizes.only.as_deref().is_none_or(|o| o == "archive") {
        queries(sizes.stored, &dir, sizes.postgres.as_deref());
    }
    if sizes.only.as_deref().is_none_or(|o| o == "integrity") && sizes.postgres.is_none() {
        integrity(sizes.stored, &dir);
    }
    if sizes.only.as_deref().is_none_or(|o| o == "report") && sizes.postgres.is_none() {
        report(sizes.stored, &dir);
    }
}
