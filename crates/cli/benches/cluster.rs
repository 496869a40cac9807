//! Several instances sharing many organizations (issue 8, part 3):
//!
//! ```sh
//! cargo bench -p tfaudit --bench cluster -- --postgres postgres://postgres@127.0.0.1:5432/postgres \
//!     [--organizations 1000] [--instances 3] [--interval 30s] [--lease 15s] [--steady 3]
//! ```
//!
//! It creates a database of its own on that server (dropped at the end), serves each
//! organization from its own simulator in this process (its own token, a rate limit
//! of 30 requests/s, 100-300 events of history and a trickle of live ones), writes one
//! config naming them all, and starts the instances as real `tfaudit watch`
//! processes. Then it measures, from the archive's own tables (leases, runs):
//! 1. how long until every organization completed its first sync, and how the
//!    leases are spread over the instances;
//! 2. over `--steady` intervals: the longest time between two successful syncs of
//!    any organization, as a multiple of the interval (target <= 2);
//! 3. `kill -9` of one instance: how long until every organization it held is held
//!    by a live instance (target <= 3 lease periods), and until each has synced again;
//! 4. CPU, peak RSS, threads and log lines of each instance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tfaudit_sim::{Faults, Sim, SimConfig};

#[path = "common.rs"]
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_tfaudit");

/// The database this benchmark creates (and drops) on the server it is given.
const DATABASE: &str = "tfaudit_bench_cluster";

/// The API's own limit per user; every simulated organization has its own.
const RATE_LIMIT: u32 = 30;

struct Args {
    postgres: String,
    organizations: usize,
    instances: usize,
    interval: Duration,
    lease: Duration,
    /// Intervals of steady running measured.
    steady: u32,
}

fn args() -> Args {
    let mut a = Args {
        postgres: String::new(),
        organizations: 1000,
        instances: 3,
        interval: Duration::from_secs(30),
        lease: tfaudit_service::DEFAULT_LEASE,
        steady: 3,
    };
    let duration = |v: Option<String>, flag: &str| -> Duration {
        v.and_then(|v| v.parse::<tfaudit_config::Duration>().ok()).unwrap_or_else(|| panic!("{flag} DURATION")).0
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--postgres" => a.postgres = it.next().expect("--postgres ADMIN_URL"),
            "--organizations" => {
                a.organizations = it.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).expect("--organizations N")
            }
            "--instances" => {
                a.instances = it.next().and_then(|v| v.parse().ok()).filter(|&n| n > 1).expect("--instances N (N >= 2)")
            }
            "--interval" => a.interval = duration(it.next(), "--interval"),
            "--lease" => a.lease = duration(it.next(), "--lease"),
            "--steady" => a.steady = it.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).expect("--steady N"),
            "--bench" => {}
            "--help" => {
                println!(
                    "cargo bench -p tfaudit --bench cluster -- --postgres ADMIN_URL [--organizations N] [--instances N] [--interval 30s] [--lease 15s] [--steady INTERVALS]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (see --help)"),
        }
    }
    assert!(
        !a.postgres.is_empty(),
        "--postgres ADMIN_URL is needed: a PostgreSQL server where this user may create a database"
    );
    a
}

fn row(what: &str, value: String, target: &str) {
    println!("{what:<62} {value:>22}   {target}");
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The organization's name in the config and the archive.
fn org_name(i: usize) -> String {
    format!("org-{i:05}")
}

fn token_env(i: usize) -> String {
    format!("TFAUDIT_BENCH_TOKEN_{i:05}")
}

/// One simulator per organization, each with its own token and rate limit.
async fn start_sims(n: usize) -> Vec<Sim> {
    let mut sims = Vec::with_capacity(n);
    for i in 0..n {
        let config = SimConfig {
            seed: i as u64 + 1,
            events: 100 + (i as u64 * 37) % 201,
            token: format!("bench-token-{i}-{:016x}", mix(i as u64)),
            organization_id: format!("org-Bench{i:08}"),
            newest_age: Duration::from_secs(5),
            faults: Faults { rate_limit: Some(RATE_LIMIT), ..Faults::default() },
            ..SimConfig::default()
        };
        sims.push(Sim::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("a simulator"));
    }
    sims
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Live arrivals spread over all organizations: `per_second` in all, each to an
/// organization picked at random, until `stop`.
async fn live_events(sims: Arc<Vec<Sim>>, per_second: f64, stop: Arc<AtomicBool>) {
    let tick = Duration::from_millis(100);
    let (mut owed, mut state) = (0.0f64, 0x5eed_u64);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(tick).await;
        owed += per_second * tick.as_secs_f64();
        while owed >= 1.0 {
            owed -= 1.0;
            state = mix(state);
            let sim = &sims[(state % sims.len() as u64) as usize];
            sim.add_event(jiff::Timestamp::now().as_second());
        }
    }
}

/// One `tfaudit watch` process, its log and what /proc says about it.
struct Instance {
    name: String,
    child: Child,
    log: PathBuf,
    pid: i32,
    max_threads: u64,
    alive: bool,
}

/// CPU seconds (user + system) and peak RSS in MiB so far, and threads now.
fn proc_figures(pid: i32) -> Option<(f64, f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((ticks / hz, field("VmHWM:").unwrap_or(0.0) / 1024.0, field("Threads:").unwrap_or(0.0) as u64))
}

impl Drop for Instance {
    /// A benchmark that fails half-way leaves no instance running.
    fn drop(&mut self) {
        if self.alive {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds of the PostgreSQL server processes serving `backends` by pid (the
/// instances pool their connections, so these live through a measured period), and
/// of the whole machine: busy and total, from /proc/stat.
fn server_cpu(backends: &[i32]) -> (HashMap<i32, f64>, f64, f64) {
    let mut by_pid = HashMap::new();
    for &pid in backends {
        if let Some((cpu, _, _)) = proc_figures(pid) {
            by_pid.insert(pid, cpu);
        }
    }
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let total: f64 = fields.iter().take(8).sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    (by_pid, (total - idle) / hz, total / hz)
}

fn log_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

/// What the archive says now.
struct Db {
    client: postgres::Client,
    database: String,
}

impl Db {
    /// The database's clock in milliseconds (leases and runs are judged by it).
    fn now_ms(&mut self) -> i64 {
        self.client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8", &[]).unwrap().get(0)
    }

    /// Live organization leases per holder.
    fn leases(&mut self) -> HashMap<String, usize> {
        let rows = self
            .client
            .query(
                "SELECT holder, count(*) FROM leases
                 WHERE holder IS NOT NULL AND name NOT LIKE 'consumer:%'
                   AND expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::int8
                 GROUP BY holder",
                &[],
            )
            .unwrap_or_default();
        rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize)).collect()
    }

    /// The organizations whose live lease `holder` holds.
    fn held_by(&mut self, holder: &str) -> HashSet<String> {
        let rows = self
            .client
            .query(
                "SELECT name FROM leases WHERE holder = $1
                   AND expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::int8
                   AND name NOT LIKE 'consumer:%'",
                &[&holder],
            )
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Holders of live leases, by organization.
    fn holders(&mut self) -> HashMap<String, String> {
        let rows = self
            .client
            .query(
                "SELECT name, holder FROM leases WHERE holder IS NOT NULL
                   AND expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::int8",
                &[],
            )
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// Organizations with at least one successful sync.
    fn synced_once(&mut self) -> usize {
        // The sources table only appears once the first instance opened the archive.
        self.client
            .query_one("SELECT count(DISTINCT source_id) FROM runs WHERE result = 'ok'", &[])
            .map_or(0, |r| r.get::<_, i64>(0) as usize)
    }

    /// Successful syncs' ends by organization, up to `until` (ms), oldest first.
    fn successes(&mut self, until: i64) -> HashMap<String, Vec<i64>> {
        let rows = self
            .client
            .query(
                "SELECT s.name, r.finished_ms FROM runs r JOIN sources s ON s.id = r.source_id
                 WHERE r.result = 'ok' AND r.finished_ms <= $1 ORDER BY r.finished_ms",
                &[&until],
            )
            .unwrap();
        let mut by_org: HashMap<String, Vec<i64>> = HashMap::new();
        for r in rows {
            by_org.entry(r.get(0)).or_default().push(r.get(1));
        }
        by_org
    }

    /// Runs that ended in `from..=until` (ms), by result.
    fn results(&mut self, from: i64, until: i64) -> BTreeMap<String, i64> {
        let rows = self
            .client
            .query(
                "SELECT coalesce(result, 'unfinished'), count(*) FROM runs
                 WHERE finished_ms BETWEEN $1 AND $2 GROUP BY 1",
                &[&from, &until],
            )
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// The server processes of the connections to the benchmark's database.
    fn backends(&mut self) -> Vec<i32> {
        let rows = self.client.query("SELECT pid FROM pg_stat_activity WHERE datname = $1", &[&self.database]).unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Transactions committed in the benchmark's database so far.
    fn commits(&mut self) -> i64 {
        self.client
            .query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", &[&self.database])
            .map_or(0, |r| r.get(0))
    }

    /// Connections to the benchmark's database, this one included.
    fn connections(&mut self) -> i64 {
        self.client
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&self.database])
            .map_or(0, |r| r.get(0))
    }
}

/// The largest time between two successful syncs of any organization that ends
/// inside `from..=until` (the time since the last one counting, at `until`), and the
/// organization; `i64::MAX` when an organization never synced by then.
fn largest_gap(successes: &HashMap<String, Vec<i64>>, names: &[String], from: i64, until: i64) -> (i64, String) {
    let mut worst = (0, String::new());
    for name in names {
        let Some(ends) = successes.get(name) else { return (i64::MAX, name.clone()) };
        let mut gaps: Vec<i64> = ends.windows(2).filter(|w| w[1] >= from).map(|w| w[1] - w[0]).collect();
        gaps.push(until - ends.last().copied().unwrap_or(i64::MIN / 2));
        if let Some(g) = gaps.into_iter().max()
            && g > worst.0
        {
            worst = (g, name.clone());
        }
    }
    worst
}

fn spread(leases: &HashMap<String, usize>, instances: &[Instance]) -> String {
    instances
        .iter()
        .filter(|i| i.alive)
        .map(|i| format!("{} {}", i.name, leases.get(&i.name).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn min_max(leases: &HashMap<String, usize>, instances: &[Instance]) -> (usize, usize) {
    let counts: Vec<usize> =
        instances.iter().filter(|i| i.alive).map(|i| leases.get(&i.name).copied().unwrap_or(0)).collect();
    (counts.iter().copied().min().unwrap_or(0), counts.iter().copied().max().unwrap_or(0))
}

/// Samples every instance's thread count (their peak is not kept by /proc).
fn sample_threads(instances: &mut [Instance]) {
    for i in instances.iter_mut().filter(|i| i.alive) {
        if let Some((_, _, threads)) = proc_figures(i.pid) {
            i.max_threads = i.max_threads.max(threads);
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn fail(instances: &mut [Instance], why: String) -> ! {
    for i in instances.iter_mut() {
        if i.alive {
            let _ = i.child.kill();
            let _ = i.child.wait();
        }
        eprintln!("--- {} (last lines of {})\n{}", i.name, i.log.display(), tail(&i.log, 20));
    }
    panic!("{why}");
}

#[allow(clippy::too_many_lines)]
fn main() {
    let a = args();
    let n = a.organizations;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tfaudit-bench").join("cluster");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "tfaudit cluster benchmark ({} cores): {n} organizations over {} `tfaudit watch` instances, interval {}, lease {}",
        std::thread::available_parallelism().map_or(0, |c| c.get()),
        a.instances,
        tfaudit_config::Duration(a.interval),
        tfaudit_config::Duration(a.lease),
    );
    let url = common::fresh_database(&a.postgres, DATABASE);
    let mut db = Db {
        client: postgres::Client::connect(&url, postgres::NoTls).expect("the benchmark's database"),
        database: DATABASE.to_owned(),
    };

    // The simulators answer on a runtime of their own beside this thread, which
    // watches the processes and the archive.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let sims = Arc::new(rt.block_on(start_sims(n)));
    println!("\n{n} simulators started in {}", secs(started.elapsed()));
    let stop_live = Arc::new(AtomicBool::new(false));
    // About one live event per organization per 50 s.
    rt.spawn(live_events(sims.clone(), n as f64 / 50.0, stop_live.clone()));

    let mut config = String::from("[alerts]\nenabled = false\n");
    let mut envs = Vec::with_capacity(n);
    for (i, sim) in sims.iter().enumerate() {
        config.push_str(&format!(
            "\n[[organization]]\nname = \"{}\"\naddress = \"{}\"\ntoken_env = \"{}\"\n",
            org_name(i),
            sim.url(),
            token_env(i)
        ));
        envs.push((token_env(i), sim.token().to_owned()));
    }
    let config_path = dir.join("tfaudit.toml");
    std::fs::write(&config_path, config).unwrap();
    let names: Vec<String> = (0..n).map(org_name).collect();

    let spawn = |name: &str| -> Instance {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .args(["--db", &url, "watch", "--instance", name])
            .args(["--interval", &tfaudit_config::Duration(a.interval).to_string()])
            .args(["--lease", &tfaudit_config::Duration(a.lease).to_string()])
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("tfaudit watch");
        let pid = child.id() as i32;
        Instance { name: name.to_owned(), child, log, pid, max_threads: 0, alive: true }
    };

    // 1. Start: every instance at once, as after a deploy.
    let share = n.div_ceil(a.instances);
    let t0 = Instant::now();
    let mut instances: Vec<Instance> = (1..=a.instances).map(|k| spawn(&format!("i{k}"))).collect();
    let mut most_held = 0;
    let mut connections = 0;
    let first_sync_limit = a.interval * 5 + Duration::from_secs(60);
    let all_synced = loop {
        let leases = db.leases();
        most_held = most_held.max(leases.values().copied().max().unwrap_or(0));
        connections = connections.max(db.connections());
        sample_threads(&mut instances);
        if db.synced_once() == n {
            break t0.elapsed();
        }
        if t0.elapsed() > first_sync_limit {
            let done = db.synced_once();
            fail(&mut instances, format!("only {done} of {n} organizations synced within {first_sync_limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let at_first_sync = db.leases();
    println!("\nstart: {} instances started together against an empty archive", a.instances);
    row(
        "  every organization synced once",
        secs(all_synced),
        &format!("target <= 2 intervals ({})", secs(a.interval * 2)),
    );
    row("  leases per instance then", spread(&at_first_sync, &instances), "");
    row(
        "  most leases one instance held at any time during start",
        most_held.to_string(),
        &format!("fair share {share}"),
    );
    let threads: Vec<String> = instances.iter().map(|i| format!("{} {}", i.name, i.max_threads)).collect();
    row("  most threads per instance during start", threads.join(", "), "");

    // Settled: every instance at most its share, all organizations held.
    let settle_limit = Instant::now() + a.lease * 6;
    let balanced = loop {
        let leases = db.leases();
        let (_, max) = min_max(&leases, &instances);
        if max <= share && leases.values().sum::<usize>() == n {
            break t0.elapsed();
        }
        if Instant::now() > settle_limit {
            let why = format!("the leases never settled at most {share} each: {}", spread(&leases, &instances));
            fail(&mut instances, why);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    row("  leases settled at most the fair share each, after", secs(balanced), "");
    let given_up: Vec<String> = instances
        .iter()
        .map(|i| {
            let log = std::fs::read_to_string(&i.log).unwrap_or_default();
            format!("{} {}", i.name, log.matches("released the organization's lease").count())
        })
        .collect();
    row("  leases taken, then given up as above the share", given_up.join(", "), "");

    // 2. Steady running, from one lease period after the start settled (idle
    // blocking threads of the start linger 10 s).
    std::thread::sleep(a.lease);
    let window = a.interval * a.steady;
    let cpu_before: Vec<f64> = instances.iter().map(|i| proc_figures(i.pid).map_or(0.0, |f| f.0)).collect();
    let lines_before: Vec<usize> = instances.iter().map(|i| log_lines(&i.log)).collect();
    let server_before = server_cpu(&db.backends());
    let commits_before = db.commits();
    for i in instances.iter_mut() {
        i.max_threads = 0;
    }
    let (w0, w_start) = (db.now_ms(), Instant::now());
    let (mut low, mut high) = (usize::MAX, 0);
    while w_start.elapsed() < window {
        let (lo, hi) = min_max(&db.leases(), &instances);
        (low, high) = (low.min(lo), high.max(hi));
        connections = connections.max(db.connections());
        sample_threads(&mut instances);
        std::thread::sleep(Duration::from_millis(500));
    }
    let w1 = db.now_ms();
    let server_after = server_cpu(&db.backends());
    let commits = db.commits() - commits_before;
    let steady_secs = (w1 - w0) as f64 / 1e3;
    let (gap, worst) = largest_gap(&db.successes(w1), &names, w0, w1);
    let results = db.results(w0, w1);
    let ok = results.get("ok").copied().unwrap_or(0);
    println!(
        "\nsteady: {} of running ({} intervals), from one lease period after the leases settled",
        secs(window),
        a.steady
    );
    row(
        "  leases per instance (min - max over the period)",
        format!("{low} - {high}"),
        &format!("about a third: {share}"),
    );
    row(
        "  longest time between two successful syncs of one organization",
        format!("{:.2} s = {:.2} intervals", gap as f64 / 1e3, gap as f64 / a.interval.as_millis() as f64),
        "target <= 2 intervals",
    );
    row("  (that organization)", worst, "");
    row(
        "  successful syncs",
        format!("{ok} ({:.1}/s)", ok as f64 / steady_secs),
        &format!("{n} per interval expected"),
    );
    let other: Vec<String> = results.iter().filter(|(k, _)| *k != "ok").map(|(k, v)| format!("{k} {v}")).collect();
    row("  other sync results", if other.is_empty() { "none".into() } else { other.join(", ") }, "");
    for (k, i) in instances.iter().enumerate() {
        let (cpu, rss, _) = proc_figures(i.pid).unwrap_or_default();
        let lines = log_lines(&i.log) - lines_before[k];
        row(
            &format!("  {}: CPU, log lines", i.name),
            format!(
                "{:.1}% of a core, {:.0}/min",
                (cpu - cpu_before[k]) * 100.0 / steady_secs,
                lines as f64 * 60.0 / steady_secs
            ),
            "",
        );
        row(
            &format!("  {}: peak RSS (since start), most threads (in this period)", i.name),
            format!("{rss:.1} MiB, {}", i.max_threads),
            "",
        );
    }
    let postgres_cpu: f64 =
        server_after.0.iter().filter_map(|(pid, after)| server_before.0.get(pid).map(|before| after - before)).sum();
    row("  PostgreSQL transactions committed", format!("{:.0}/s", commits as f64 / steady_secs), "");
    row(
        "  PostgreSQL: CPU of the processes serving this database",
        format!("{:.1}% of a core", postgres_cpu * 100.0 / steady_secs),
        "",
    );
    row(
        "  whole machine: busy",
        format!(
            "{:.0}% of {} cores",
            (server_after.1 - server_before.1) * 100.0 / (server_after.2 - server_before.2),
            std::thread::available_parallelism().map_or(0, |c| c.get())
        ),
        "(simulators and this benchmark included)",
    );
    row(
        "  most connections to the archive (the benchmark's 1 included)",
        connections.to_string(),
        "pool: 8 per instance",
    );

    // 3. One instance killed: the one holding the most leases.
    let leases = db.leases();
    let victim = instances
        .iter()
        .position(|i| leases.get(&i.name) == Some(&leases.values().copied().max().unwrap_or(0)))
        .unwrap();
    let victim_name = instances[victim].name.clone();
    let orphaned = db.held_by(&victim_name);
    let before = db.successes(i64::MAX);
    let killed_ms = db.now_ms();
    instances[victim].child.kill().unwrap();
    let killed = Instant::now();
    let _ = instances[victim].child.wait();
    instances[victim].alive = false;
    let limit = killed + a.lease * 3 + a.interval * 2 + Duration::from_secs(30);
    let (mut moved_at, mut first_moved, mut resynced_at) = (None, None, None);
    loop {
        let holders = db.holders();
        let moved = orphaned.iter().filter(|o| holders.get(*o).is_some_and(|h| *h != victim_name)).count();
        if moved > 0 && first_moved.is_none() {
            first_moved = Some(killed.elapsed());
        }
        if moved == orphaned.len() && moved_at.is_none() {
            moved_at = Some(killed.elapsed());
        }
        let after = db.successes(i64::MAX);
        let resynced = orphaned
            .iter()
            .filter(|o| after.get(*o).and_then(|e| e.last()).is_some_and(|&last| last > killed_ms))
            .count();
        if resynced == orphaned.len() && resynced_at.is_none() {
            resynced_at = Some(killed.elapsed());
        }
        sample_threads(&mut instances);
        if moved_at.is_some() && resynced_at.is_some() {
            break;
        }
        if Instant::now() > limit {
            fail(
                &mut instances,
                format!("after kill -9 of {victim_name}: {moved} of {} moved, {resynced} synced again", orphaned.len()),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The longest any orphaned organization went without a successful sync.
    let after = db.successes(i64::MAX);
    let silence = orphaned
        .iter()
        .filter_map(|o| {
            let last_before = before.get(o)?.iter().copied().filter(|&t| t <= killed_ms).max()?;
            let first_after = after.get(o)?.iter().copied().find(|&t| t > killed_ms)?;
            Some(first_after - last_before)
        })
        .max()
        .unwrap_or(0);
    println!("\nkill -9 of {victim_name}, which held {} organizations", orphaned.len());
    row("  first of them held by a live instance after", first_moved.map_or("-".into(), secs), "");
    row(
        "  all of them held by a live instance after",
        moved_at.map_or("-".into(), secs),
        &format!("target <= 3 lease periods ({})", secs(a.lease * 3)),
    );
    row("  all of them synced again after", resynced_at.map_or("-".into(), secs), "");
    row(
        "  longest time without a successful sync, of one of them",
        format!("{:.1} s = {:.2} intervals", silence as f64 / 1e3, silence as f64 / a.interval.as_millis() as f64),
        "",
    );
    row("  leases per survivor when all were held", spread(&db.leases(), &instances), "");
    // The survivors settle at their new share.
    let survivors = instances.iter().filter(|i| i.alive).count();
    let new_share = n.div_ceil(survivors);
    let settle_limit = Instant::now() + a.lease * 6;
    loop {
        let leases = db.leases();
        let (_, max) = min_max(&leases, &instances);
        if (max <= new_share && leases.values().sum::<usize>() == n) || Instant::now() > settle_limit {
            row("  leases per survivor, settled", spread(&leases, &instances), &format!("fair share {new_share}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // 4. Stop: the survivors stop cleanly and release what they hold.
    for i in instances.iter_mut().filter(|i| i.alive) {
        unsafe { libc::kill(i.pid, libc::SIGTERM) };
    }
    let stopping = Instant::now();
    for i in instances.iter_mut().filter(|i| i.alive) {
        let status = i.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}:\n{}", i.name, tail(&i.log, 20));
    }
    row("\n  survivors stopped on SIGTERM after", secs(stopping.elapsed()), "");
    let throttled: u64 = sims.iter().map(|s| s.stats().throttled).sum();
    let requests: u64 = sims.iter().map(|s| s.stats().requests).sum();
    row("  API requests in all, answered 429 (rate limit)", format!("{requests}, {throttled}"), "");
    stop_live.store(true, Ordering::SeqCst);
    drop(db);
    let mut admin = postgres::Client::connect(&a.postgres, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).unwrap();
    drop(sims);
    rt.shutdown_timeout(Duration::from_secs(5));
}
