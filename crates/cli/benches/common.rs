//! What the benchmarks share.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tfaudit_api::AuditEvent;
use tfaudit_backend::{Location, Mode};
use tfaudit_sim::{Listing, SimConfig, SinceMode};
use tfaudit_store::{PageWrite, Walk};

/// An archive of `n` events over 90 days, built through the store's own write path
/// (pages of 1000 in one transaction each), and kept for the next run.
pub fn archive(n: u64, dir: &Path) -> PathBuf {
    let db = dir.join(format!("archive-{n}.db"));
    if db.exists()
        && Location::Sqlite(db.clone())
            .open(Mode::MustExist)
            .is_ok_and(|s| s.status().is_ok_and(|st| st.iter().map(|x| x.events).sum::<u64>() == n))
    {
        println!("\n(reusing {})", db.display());
        return db;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    println!("\nbuilding an archive of {n} events at {} (once) ...", db.display());
    let store = Location::Sqlite(db.clone()).open(Mode::CreateIfMissing).unwrap();
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
    db
}
