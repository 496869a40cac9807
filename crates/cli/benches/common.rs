//! What the benchmarks share.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tfaudit_api::AuditEvent;
use tfaudit_backend::Mode;
use tfaudit_sim::{Listing, SimConfig, SinceMode};
use tfaudit_store::{PageWrite, Walk};

/// An archive of `n` events over 90 days, built through the store's own write path
/// (pages of 1000 in one transaction each), and kept for the next run.
#[allow(dead_code)] // the archive and serve benchmarks'; another benchmark includes this file too
pub fn archive(n: u64, dir: &Path) -> PathBuf {
    let db = dir.join(format!("archive-{n}.db"));
    if holds(&db.display().to_string(), n) {
        println!("\n(reusing {})", db.display());
        return db;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    build(&db.display().to_string(), n);
    db
}

/// The same archive in a database of the PostgreSQL server at `admin` (a URL whose
/// user may create databases), kept for the next run; returns its location.
#[allow(dead_code)] // the archive benchmark's; another benchmark includes this file too
pub fn postgres_archive(admin: &str, n: u64) -> String {
    let name = format!("tfaudit_bench_archive_{n}");
    let location = database_url(admin, &name);
    if holds(&location, n) {
        println!("\n(reusing {location})");
        return location;
    }
    let location = fresh_database(admin, &name);
    build(&location, n);
    location
}

/// Whether the archive at `location` exists and holds `n` events.
fn holds(location: &str, n: u64) -> bool {
    tfaudit_backend::open(location, Mode::ReadOnly)
        .is_ok_and(|s| s.status().is_ok_and(|st| st.iter().map(|x| x.events).sum::<u64>() == n))
}

/// `admin` with its database replaced by `name`.
#[allow(dead_code)] // the archive benchmark's; another benchmark includes this file too
pub fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = admin.split_once('?').map_or((admin, None), |(b, q)| (b, Some(q)));
    let (server, _) =
        base.rsplit_once('/').filter(|(s, _)| s.contains("://") && !s.ends_with('/')).unwrap_or((base, ""));
    let mut url = format!("{server}/{name}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Drops and creates the database `name` on the server at `admin`; returns its URL.
#[allow(dead_code)] // the archive benchmark's; another benchmark includes this file too
pub fn fresh_database(admin: &str, name: &str) -> String {
    let mut client =
        postgres::Client::connect(admin, postgres::NoTls).expect("the PostgreSQL server given to the benchmark");
    // Two statements: several in one string run as one transaction, which DROP DATABASE refuses.
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    database_url(admin, name)
}

fn build(location: &str, n: u64) {
    let db = location;
    println!("\nbuilding an archive of {n} events at {db} (once) ...");
    let store = tfaudit_backend::open(db, Mode::CreateIfMissing).unwrap();
    let source = store.source("bench", "http://127.0.0.1").unwrap();
    let run = store.start_run(source.id, jiff::Timestamp::now()).unwrap();
    let config = SimConfig {
        events: n,
        span: Duration::from_secs(90 * 86_400),
        newest_age: Duration::ZERO,
        hostile: 0.02,
        ..SimConfig::default()
    };
    let listing = Listing::new(&config, jiff::Timestamp::now().as_second());
    let started = Instant::now();
    let walk = Walk {
        since: None,
        next_page: 1,
        page_size: 1000,
        newest: None,
        oldest: None,
        gap_from: None,
        started_at: jiff::Timestamp::now(),
    };
    let mut offset = 0;
    let mut in_store = Duration::ZERO;
    loop {
        let (page, _) = listing.page(None, SinceMode::Inclusive, i64::MIN, offset, 1000);
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        let events: Vec<AuditEvent> = page
            .iter()
            .filter_map(|e| AuditEvent::parse(&RawValue::from_string(e.json.clone()).unwrap()).ok())
            .collect();
        let t = Instant::now();
        store
            .store_page(&PageWrite {
                source_id: source.id,
                run_id: run,
                pages: 1,
                events: &events,
                rejects: &[],
                walk: &walk,
            })
            .unwrap();
        in_store += t.elapsed();
        if offset % 1_000_000 == 0 {
            println!("  {offset} events, {:.0} events/s", offset as f64 / started.elapsed().as_secs_f64());
        }
    }
    store.finish_walk(source.id, None, None, Some(jiff::Timestamp::now())).unwrap();
    println!(
        "  built in {:.0} s; Store::store_page alone: {:.0} events/s",
        started.elapsed().as_secs_f64(),
        n as f64 / in_store.as_secs_f64()
    );
}
