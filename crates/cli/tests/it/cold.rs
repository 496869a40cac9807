//! `tfaudit archive push`: every finished day of every organization in Parquet, once,
//! byte for byte, to a directory and to a real S3-compatible server (s3s-fs), read back
//! with the parquet crate and with DuckDB; a second push writes nothing; a late event
//! rewrites its day and the manifest keeps both versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};
use tfaudit_sim::{Sim, SimConfig};

use crate::harness::*;

/// One row of a pushed day.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    seq: i64,
    organization: String,
    id: String,
    timestamp_ms: i64,
    raw: String,
}

/// A day file's rows, and whether it is one zstd row group.
fn read_day(bytes: bytes::Bytes) -> Vec<Row> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let meta = reader.metadata().clone();
    assert_eq!(meta.num_row_groups(), 1, "one row group per day");
    for column in meta.row_group(0).columns() {
        assert!(matches!(column.compression(), parquet::basic::Compression::ZSTD(_)), "{:?}", column.compression());
    }
    let columns: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(columns, tfaudit_cold::COLUMNS);
    let mut rows = Vec::new();
    for batch in reader.build().unwrap() {
        let batch = batch.unwrap();
        let text = |name: &str| batch.column_by_name(name).unwrap().as_string::<i32>().clone();
        let (org, id, raw) = (text("organization"), text("id"), text("raw"));
        let seq = batch.column_by_name("seq").unwrap().as_primitive::<Int64Type>().clone();
        let ts = batch.column_by_name("timestamp").unwrap().as_primitive::<TimestampMillisecondType>().clone();
        assert_eq!(ts.timezone(), Some("UTC"));
        for i in 0..batch.num_rows() {
            rows.push(Row {
                seq: seq.value(i),
                organization: org.value(i).to_owned(),
                id: id.value(i).to_owned(),
                timestamp_ms: ts.value(i),
                raw: raw.value(i).to_owned(),
            });
        }
    }
    rows
}

/// The archive's events, by id: (source, seq, timestamp in ms, raw).
fn archived(db: &Path) -> BTreeMap<String, (String, i64, i64, String)> {
    archived_in(tfaudit_backend::Location::Sqlite(db.to_owned()))
}

fn archived_in(location: tfaudit_backend::Location) -> BTreeMap<String, (String, i64, i64, String)> {
    let store = location.open(tfaudit_backend::Mode::MustExist).unwrap();
    let mut events = BTreeMap::new();
    store
        .events_after(0, u64::MAX, &mut |e| {
            events.insert(e.event.id.clone(), (e.source, e.seq, e.event.timestamp.as_millisecond(), e.event.raw));
            Ok(())
        })
        .unwrap();
    events
}

/// The archived events a push must write now: those of the days before today (every
/// organization's cursor is at most a minute old here).
fn finished(db: &Path) -> BTreeMap<String, (String, i64, i64, String)> {
    let today = tfaudit_cold::days::start_of(tfaudit_cold::days::day_of(jiff::Timestamp::now())).as_millisecond();
    archived(db).into_iter().filter(|(_, (_, _, ts, _))| *ts < today).collect()
}

fn day_of_ms(ms: i64) -> String {
    tfaudit_cold::layout::day_key(tfaudit_cold::days::day_of(jiff::Timestamp::from_millisecond(ms).unwrap()))
}

/// Two organizations synced into one archive: `acme`, and one whose name needs
/// percent-encoding in a path (`beta:eu`), with hostile strings.
async fn two_organizations() -> (Sim, Sim, Env) {
    let acme =
        start(SimConfig { events: 1_200, seed: 31, organization_id: "org-acme".into(), ..SimConfig::default() }).await;
    let beta = start(SimConfig {
        events: 500,
        seed: 32,
        organization_id: "org-beta".into(),
        hostile: 0.3,
        ..SimConfig::default()
    })
    .await;
    let env = Env::new();
    for (sim, name) in [(&acme, "acme"), (&beta, "beta:eu")] {
        let out = env.sync(sim, &["--name", name]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    (acme, beta, env)
}

/// Every `events.parquet` under `dir`, by path relative to it.
fn day_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.file_name().is_some_and(|n| n == "events.parquet") {
                out.insert(path.strip_prefix(root).unwrap().to_str().unwrap().to_owned(), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The pushed days hold exactly the archive's finished events, each once, byte for
/// byte, each in its organization's and day's partition, sorted by (time, seq); the
/// manifest describes each file exactly. `files` maps each path relative to the
/// location to its bytes.
fn assert_pushed_equals_archive(
    files: &BTreeMap<String, bytes::Bytes>,
    manifest: &serde_json::Value,
    expected: &BTreeMap<String, (String, i64, i64, String)>,
) {
    let mut seen = BTreeSet::new();
    let mut manifest_days = 0;
    for days in manifest["organizations"].as_object().unwrap().values() {
        manifest_days += days.as_object().unwrap().len();
    }
    assert_eq!(manifest_days, files.len(), "a manifest entry per file: {manifest}");
    for (path, bytes) in files {
        let rows = read_day(bytes.clone());
        assert!(!rows.is_empty(), "{path} is empty");
        let organization = &rows[0].organization;
        let day = day_of_ms(rows[0].timestamp_ms);
        assert_eq!(
            path,
            &tfaudit_cold::layout::day_path(
                organization,
                tfaudit_cold::days::day_of(jiff::Timestamp::from_millisecond(rows[0].timestamp_ms).unwrap())
            )
        );
        assert!(
            path.starts_with(&format!(
                "organization={}/date={day}/",
                tfaudit_cold::layout::encode_segment(organization)
            ))
        );
        let mut previous = (i64::MIN, i64::MIN);
        for row in &rows {
            assert_eq!(&row.organization, organization, "{path}: one organization per file");
            assert_eq!(day_of_ms(row.timestamp_ms), day, "{path}: one day per file");
            assert!((row.timestamp_ms, row.seq) > previous, "{path}: rows sorted by (timestamp, seq)");
            previous = (row.timestamp_ms, row.seq);
            let (source, seq, ts, raw) =
                expected.get(&row.id).unwrap_or_else(|| panic!("{path}: {} is not a finished archived event", row.id));
            assert_eq!((source, *seq, *ts), (&row.organization, row.seq, row.timestamp_ms), "{}", row.id);
            assert_eq!(raw, &row.raw, "{}: raw differs from the archive's bytes", row.id);
            assert!(seen.insert(row.id.clone()), "{} pushed twice", row.id);
        }
        let entry = &manifest["organizations"][organization][&day];
        assert_eq!(entry["path"], path.as_str());
        assert_eq!(entry["events"], rows.len() as u64);
        assert_eq!(entry["min_seq"], rows.iter().map(|r| r.seq).min().unwrap());
        assert_eq!(entry["max_seq"], rows.iter().map(|r| r.seq).max().unwrap());
        assert_eq!(entry["sha256"], hex::encode(Sha256::digest(bytes)));
        assert_eq!(entry["bytes"], bytes.len() as u64);
        // The archive's newest checkpoint vouches for the day when its tree holds the
        // day's events (a synced archive; a migrated copy has no checkpoint yet).
        if let Some(note) = entry["checkpoint"].as_str() {
            let cp = tfaudit_integrity::ParsedCheckpoint::parse(note).unwrap();
            assert!(cp.origin.starts_with("tfaudit.archive/") && cp.size > 0, "{note}");
        } else {
            assert!(entry["checkpoint"].is_null());
        }
        assert!(entry["pushed_at"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok());
    }
    let missing: Vec<_> = expected.keys().filter(|id| !seen.contains(*id)).take(5).collect();
    assert!(missing.is_empty(), "finished events not pushed: {missing:?} ({} of {})", seen.len(), expected.len());
}

fn read_dir_files(dir: &Path) -> BTreeMap<String, bytes::Bytes> {
    day_files(dir).into_iter().map(|(k, p)| (k, bytes::Bytes::from(std::fs::read(p).unwrap()))).collect()
}

fn mtimes(dir: &Path) -> BTreeMap<String, std::time::SystemTime> {
    day_files(dir).into_iter().map(|(k, p)| (k, std::fs::metadata(p).unwrap().modified().unwrap())).collect()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_directory_writes_each_finished_event_once_skips_the_second_time_and_rewrites_a_late_day() {
    let (acme, _beta, env) = two_organizations().await;
    let cold = env.path("cold");
    let to = cold.to_str().unwrap();
    let report = json(&env.ok(None, &["archive", "push", "--to", to, "--json"]).await);
    let expected = finished(&env.db);
    assert!(expected.len() > 1_000, "the simulators' history spans days: {}", expected.len());
    let files = read_dir_files(&cold);
    let manifest = json(&std::fs::read_to_string(cold.join("manifest.json")).unwrap());
    assert_pushed_equals_archive(&files, &manifest, &expected);
    assert_eq!(report["pushed"].as_array().unwrap().len(), files.len(), "{report}");
    assert_eq!(report["events"], expected.len() as u64);
    assert_eq!((report["skipped"].as_u64(), report["rewritten"].as_u64()), (Some(0), Some(0)));
    let organizations: BTreeSet<&str> =
        manifest["organizations"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(organizations, BTreeSet::from(["acme", "beta:eu"]));
    assert!(files.keys().any(|p| p.starts_with("organization=beta%3Aeu/date=")), "{:?}", files.keys());
    assert!(files.len() >= 20, "two organizations over about two weeks: {}", files.len());
    // The syncs checkpointed the archive, and that checkpoint covers every pushed day.
    let with_checkpoint = manifest["organizations"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|days| days.as_object().unwrap().values())
        .filter(|day| day["checkpoint"].is_string())
        .count();
    assert_eq!(with_checkpoint, files.len(), "every pushed day names the checkpoint covering it");

    // Again: nothing to write, nothing written.
    let before = mtimes(&cold);
    let manifest_bytes = std::fs::read(cold.join("manifest.json")).unwrap();
    let again = json(&env.ok(None, &["archive", "push", "--to", to, "--json"]).await);
    assert_eq!(again["pushed"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["skipped"], files.len() as u64);
    assert_eq!(mtimes(&cold), before, "no day file was rewritten");
    assert_eq!(std::fs::read(cold.join("manifest.json")).unwrap(), manifest_bytes, "the manifest is unchanged");

    // A late event in a pushed day: that day, and only it, is written again.
    let today = tfaudit_cold::days::day_of(jiff::Timestamp::now());
    let late_day = today.checked_sub(jiff::Span::new().days(3)).unwrap();
    let late_at = tfaudit_cold::days::start_of(late_day).as_second() + 12 * 3600 + 7;
    let late_id = acme.add_event(late_at);
    let out = env.sync(&acme, &["--name", "acme", "--overlap", "14d", "--reconcile-window", "14d"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = tfaudit_cold::layout::day_key(late_day);
    let late_path = tfaudit_cold::layout::day_path("acme", late_day);
    let old_entry = manifest["organizations"]["acme"][&key].clone();
    let out = env.ok(None, &["archive", "push", "--to", to]).await;
    let old_events = old_entry["events"].as_u64().unwrap();
    assert!(
        out.contains(&format!("rewrote acme {key}: {} events (was {old_events}), ", old_events + 1))
            && out.contains(&format!("→ {late_path}")),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().starts_with(&format!(
            "pushed 1 days (1 rewritten), {} events, skipped {} already pushed to {to}",
            old_events + 1,
            files.len() - 1
        )),
        "{out}"
    );
    let after = mtimes(&cold);
    let changed: Vec<&String> = after.keys().filter(|k| after[*k] != before[*k]).collect();
    assert_eq!(changed, [&late_path], "only the late event's day is rewritten");
    let files = read_dir_files(&cold);
    let manifest = json(&std::fs::read_to_string(cold.join("manifest.json")).unwrap());
    assert_pushed_equals_archive(&files, &manifest, &finished(&env.db));
    assert!(read_day(files[&late_path].clone()).iter().any(|r| r.id == late_id));
    let entry = &manifest["organizations"]["acme"][&key];
    assert_eq!(entry["events"], old_events + 1);
    let mut previous = old_entry.clone();
    previous.as_object_mut().unwrap().remove("versions");
    assert_eq!(entry["versions"], serde_json::json!([previous]), "the earlier entry is kept");
    assert_ne!(entry["sha256"], old_entry["sha256"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_options_and_mistakes() {
    let (acme, _beta, env) = two_organizations().await;
    let cold = env.path("cold");
    // One organization, the location from the environment.
    let out = env
        .command(None, &["archive", "push", "--org", "beta:eu", "--json"])
        .env("TFAUDIT_ARCHIVE_TO", &cold)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = json(&std::fs::read_to_string(cold.join("manifest.json")).unwrap());
    let organizations: Vec<&String> = manifest["organizations"].as_object().unwrap().keys().collect();
    assert_eq!(organizations, ["beta:eu"]);
    // The location from the config, relative to it; then the rest.
    let config = env.path("conf/tfaudit.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "[archive]\nlocation = \"../cold\"\n").unwrap();
    let report = json(&env.ok(None, &["--config", config.to_str().unwrap(), "archive", "push", "--json"]).await);
    assert!(report["skipped"].as_u64().unwrap() > 5, "{report}");
    assert!(report["pushed"].as_array().unwrap().iter().all(|d| d["organization"] == "acme"), "{report}");

    for (args, code, says) in [
        (vec!["archive", "push"], 2, "no archive location: give --to LOCATION"),
        (vec!["archive", "push", "--to", "ftp://h/x"], 2, "write a directory"),
        (vec!["archive", "push", "--to", cold.to_str().unwrap(), "--org", "nope"], 2, "has: acme, beta:eu"),
    ] {
        let out = env.run(None, &args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // A schedule without a place, refused before watch starts (and by config check).
    std::fs::write(&config, "[archive]\npush_every = \"1h\"\n").unwrap();
    let out = env.run(Some(&acme), &["--config", config.to_str().unwrap(), "watch", "--name", "acme"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("push_every needs [archive] location"), "{}", text(&out.stderr));
    let out = env.run(Some(&acme), &["--config", config.to_str().unwrap(), "config", "check"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("push_every needs [archive] location"), "{}", text(&out.stderr));
    // A manifest tfaudit did not write is left alone.
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("manifest.json"), "{\"something\": \"else\"}").unwrap();
    let out = env.run(None, &["archive", "push", "--to", other.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not a tfaudit manifest"), "{}", text(&out.stderr));
    assert!(day_files(&other).is_empty());
}

/// A private s3s-fs (crates.io), an S3-compatible server over a folder: its own port
/// on 127.0.0.1, its own folder and keys; stopped when dropped. The binary is
/// `TFAUDIT_S3S_FS` (scripts/test installs it); the test fails without it.
struct S3sFs {
    endpoint: String,
    root: tempfile::TempDir,
    _child: tokio::process::Child,
}

const S3_KEY_ID: &str = "AKIDTFAUDITCOLD";
const S3_SECRET: &str = "cold-s3-secret-zq81";

impl S3sFs {
    async fn start(bucket: &str) -> Self {
        let binary = std::env::var_os("TFAUDIT_S3S_FS").unwrap_or_else(|| {
            panic!("TFAUDIT_S3S_FS is not set: run scripts/test (it installs s3s-fs from crates.io), or set it to an s3s-fs binary")
        });
        let root = tempfile::tempdir().unwrap();
        // A bucket of s3s-fs is a folder at its root.
        std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(root.path().join("s3s-fs.log")).unwrap();
        let child = tokio::process::Command::new(&binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                S3_KEY_ID,
                "--secret-key",
                S3_SECRET,
            ])
            .arg(root.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", PathBuf::from(&binary).display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            let log = std::fs::read_to_string(root.path().join("s3s-fs.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "s3s-fs did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), root, _child: child }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_real_s3_compatible_server_and_read_every_object_back() {
    let (_acme, _beta, env) = two_organizations().await;
    let s3 = S3sFs::start("tfaudit-cold").await;
    let location = "s3://tfaudit-cold/audit/prod";
    // Credentials and endpoint from the standard AWS variables.
    let out = env
        .command(None, &["--debug", "archive", "push", "--to", location, "--json"])
        .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        std::fs::read_to_string(s3.root.path().join("s3s-fs.log")).unwrap_or_default()
    );
    assert!(!stdout.contains(S3_SECRET) && !stderr.contains(S3_SECRET), "the secret key was shown");
    let report = json(&stdout);
    assert_eq!(report["location"], location);

    // Read back over S3: the manifest, and every object it names.
    let target = tfaudit_cold::Location::parse(location)
        .unwrap()
        .open(&tfaudit_cold::S3Settings {
            endpoint: Some(s3.endpoint.clone()),
            allow_http: Some(true),
            region: Some("us-east-1".into()),
            access_key_id: Some(tfaudit_config::Secret::new(S3_KEY_ID)),
            secret_access_key: Some(tfaudit_config::Secret::new(S3_SECRET)),
            session_token: None,
        })
        .unwrap();
    let manifest = json(&text(&target.get("manifest.json").await.unwrap().expect("a manifest")));
    let mut files = BTreeMap::new();
    for days in manifest["organizations"].as_object().unwrap().values() {
        for entry in days.as_object().unwrap().values() {
            let path = entry["path"].as_str().unwrap();
            files
                .insert(path.to_owned(), target.get(path).await.unwrap().unwrap_or_else(|| panic!("no object {path}")));
        }
    }
    assert_eq!(report["pushed"].as_array().unwrap().len(), files.len());
    assert_pushed_equals_archive(&files, &manifest, &finished(&env.db));
    // The objects are where the layout says, under the prefix, in the bucket.
    let on_disk = day_files(&s3.root.path().join("tfaudit-cold/audit/prod"));
    assert_eq!(on_disk.keys().collect::<Vec<_>>(), files.keys().collect::<Vec<_>>());

    // Again, with the credentials from the config (a secret in a file): all skipped,
    // after reading the manifest back from the server.
    std::fs::write(env.path("s3.secret"), format!("{S3_SECRET}\n")).unwrap();
    let config = env.path("tfaudit.toml");
    let write_config = |secret: &str| {
        std::fs::write(
            &config,
            format!(
                "[archive]\nlocation = \"{location}\"\nendpoint = \"{}\"\nallow_http = true\nregion = \"us-east-1\"\naccess_key_id = \"{S3_KEY_ID}\"\nsecret_access_key = {secret}\n",
                s3.endpoint
            ),
        )
        .unwrap();
    };
    write_config(&format!("{{ file = \"{}\" }}", env.path("s3.secret").display()));
    let again = json(&env.ok(None, &["--config", config.to_str().unwrap(), "archive", "push", "--json"]).await);
    assert_eq!((again["pushed"].as_array().unwrap().len(), again["skipped"].as_u64()), (0, Some(files.len() as u64)));

    // A wrong secret: exit 3, one line, naming what to check and not the secret.
    write_config("\"wrong-secret-value-77\"");
    let out = env.run(None, &["--config", config.to_str().unwrap(), "archive", "push"]).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("refused the credentials") && err.lines().count() == 1, "{err}");
    assert!(!err.contains("wrong-secret-value-77"), "{err}");
    // Plain HTTP without allow_http: refused before any request, naming the fix.
    let out = env
        .command(None, &["archive", "push", "--to", location])
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("allow_http = true"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_pushed_parquet_as_the_archive_holds_it() {
    let python = std::env::var("TFAUDIT_DUCKDB_PYTHON").unwrap_or_else(|_| {
        panic!("TFAUDIT_DUCKDB_PYTHON is not set: run scripts/test (it installs duckdb from PyPI), or set it to a python that can import duckdb")
    });
    let (_acme, _beta, env) = two_organizations().await;
    let cold = env.path("cold");
    env.ok(None, &["archive", "push", "--to", cold.to_str().unwrap()]).await;
    let expected = finished(&env.db);
    // The README's query, word for word, and the ids and partitions beside it.
    let glob = format!("{}/**/*.parquet", cold.display());
    let script = format!(
        r#"
import duckdb, json
con = duckdb.connect()
files = "read_parquet('{glob}', hive_partitioning=true)"
count, distinct = con.execute("SELECT count(*), count(DISTINCT id) FROM read_parquet('{glob}', hive_partitioning=true)").fetchone()
ids = [r[0] for r in con.execute(f"SELECT id FROM {{files}} ORDER BY id").fetchall()]
days = con.execute(f"SELECT organization, CAST(date AS VARCHAR), count(*) FROM {{files}} GROUP BY ALL ORDER BY ALL").fetchall()
raw = dict(con.execute(f"SELECT id, raw FROM {{files}}").fetchall())
print(json.dumps({{"count": count, "distinct": distinct, "ids": ids, "days": days, "raw": raw}}))
"#
    );
    let out = tokio::process::Command::new(&python).args(["-c", &script]).output().await.unwrap();
    assert!(out.status.success(), "duckdb failed: {}", text(&out.stderr));
    let answer = json(&text(&out.stdout));
    assert_eq!(answer["count"], expected.len() as u64);
    assert_eq!(answer["distinct"], expected.len() as u64);
    let ids: Vec<&str> = answer["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ids, expected.keys().map(String::as_str).collect::<Vec<_>>());
    for (id, (_, _, _, raw)) in &expected {
        assert_eq!(answer["raw"][id], raw.as_str(), "{id}: DuckDB reads other bytes");
    }
    // The partitions are columns: per organization and day, the archive's counts.
    let mut per_day: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (source, _, ts, _) in expected.values() {
        *per_day.entry((source.clone(), day_of_ms(*ts))).or_default() += 1;
    }
    let got: BTreeMap<(String, String), u64> = answer["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ((r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned()), r[2].as_u64().unwrap()))
        .collect();
    assert_eq!(got, per_day);
}

/// The push reads the archive through the storage interface only: a PostgreSQL copy
/// of the archive (`tfaudit migrate`) pushes the same days with the same events, byte
/// for byte (each archive numbers its events itself, so `seq` is compared by order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_archive_pushes_the_same_days_as_its_sqlite_original() {
    let (_acme, _beta, env) = two_organizations().await;
    let pg = crate::cluster::TestDb::new();
    let sqlite = env.db.to_str().unwrap().to_owned();
    env.ok(None, &["migrate", "--from", &sqlite, "--to", &pg.url]).await;
    let (from_sqlite, from_pg) = (env.path("cold-sqlite"), env.path("cold-pg"));
    env.ok(None, &["archive", "push", "--to", from_sqlite.to_str().unwrap()]).await;
    let report =
        json(&env.ok(None, &["--db", &pg.url, "archive", "push", "--to", from_pg.to_str().unwrap(), "--json"]).await);
    let (a, b) = (read_dir_files(&from_sqlite), read_dir_files(&from_pg));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(report["pushed"].as_array().unwrap().len(), a.len());
    let without_seq =
        |rows: Vec<Row>| rows.into_iter().map(|r| (r.organization, r.id, r.timestamp_ms, r.raw)).collect::<Vec<_>>();
    for (path, bytes) in &a {
        assert_eq!(without_seq(read_day(bytes.clone())), without_seq(read_day(b[path].clone())), "{path}");
    }
    let manifest = json(&std::fs::read_to_string(from_pg.join("manifest.json")).unwrap());
    let expected = finished(&env.db);
    let mut pushed = 0;
    for days in manifest["organizations"].as_object().unwrap().values() {
        pushed += days.as_object().unwrap().values().map(|d| d["events"].as_u64().unwrap()).sum::<u64>();
    }
    assert_eq!(pushed, expected.len() as u64);
}

/// `watch` with this config over `sim`, its log kept.
fn watch_with(env: &Env, sim: &Sim, config: &Path) -> tokio::process::Child {
    env.command(Some(sim), &["--config", config.to_str().unwrap(), "watch", "--no-alerts", "--rate-limit", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `watch` with `[archive] push_every` pushes the finished days by itself, beside its
/// syncs, and again on its schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_pushes_finished_days_on_its_schedule() {
    let sim = start(SimConfig { events: 600, seed: 33, ..SimConfig::default() }).await;
    let env = Env::new();
    let cold = env.path("cold");
    let config = env.path("tfaudit.toml");
    std::fs::write(&config, format!("[archive]\nlocation = \"{}\"\npush_every = \"1s\"\n", cold.display())).unwrap();
    let mut watch = watch_with(&env, &sim, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The first push may come before the first sync has moved the cursor: it then
    // finds nothing finished, and a later turn pushes the days.
    let (files, manifest, expected) = loop {
        if let Ok(text) = std::fs::read_to_string(cold.join("manifest.json")) {
            let manifest = json(&text);
            let expected = finished(&env.db);
            let pushed: u64 = manifest["organizations"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|days| days.as_object().unwrap().values().map(|d| d["events"].as_u64().unwrap()))
                .sum();
            if !expected.is_empty() && pushed == expected.len() as u64 {
                break (read_dir_files(&cold), manifest, expected);
            }
        }
        assert!(Instant::now() < deadline, "watch pushed nothing in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_pushed_equals_archive(&files, &manifest, &expected);
    // Nothing new: the next turns skip every day and leave the files alone.
    let before = mtimes(&cold);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(mtimes(&cold), before);
    watch.start_kill().unwrap();
    let out = watch.wait_with_output().await.unwrap();
    let log = text(&out.stderr);
    assert!(log.contains("pushed a day to cold storage") && log.contains("archive push done"), "{log}");
}

/// The events of days that ended `keep` days or more before today, by id.
fn older_than(
    events: &BTreeMap<String, (String, i64, i64, String)>,
    keep_days: i64,
) -> BTreeMap<String, (String, i64, i64, String)> {
    let now = jiff::Timestamp::now();
    let cutoff = now.checked_sub(jiff::SignedDuration::from_hours(24 * keep_days)).unwrap();
    events
        .iter()
        .filter(|(_, (_, _, ts, _))| {
            let day = tfaudit_cold::days::day_of(jiff::Timestamp::from_millisecond(*ts).unwrap());
            tfaudit_cold::days::end_of(day) <= cutoff
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `[retention] keep_local`: after a push, the days it confirms are held go from the
/// local archive (and only those); `verify` still checks the whole history, reading
/// their copies, and finds a copy altered; `archive pull` puts them back exactly, seqs
/// and all; a day pulled back stays for a while.
async fn keep_local_round_trip(
    env: &Env,
    db: Option<&str>,
    archived: &dyn Fn() -> BTreeMap<String, (String, i64, i64, String)>,
) {
    let cold = env.path(if db.is_some() { "cold-pg" } else { "cold" });
    let config = env.path("retention.toml");
    std::fs::write(
        &config,
        format!("[archive]\nlocation = \"{}\"\n[retention]\nkeep_local = \"5d\"\n", cold.display()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = ["--config", config].iter().map(|s| (*s).to_owned()).collect();
        if let Some(db) = db {
            all.extend(["--db".to_owned(), db.to_owned()]);
        }
        all.extend(args.iter().map(|s| (*s).to_owned()));
        all
    };
    let run = |args: &[&str]| {
        let args = with(args);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            env.run(None, &refs).await
        }
    };
    let ok = |args: &[&str]| {
        let args = with(args);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            env.ok(None, &refs).await
        }
    };
    let before = archived();
    let exported_before = ok(&["export", "--format", "jsonl"]).await;
    let expected_gone = older_than(&before, 5);
    assert!(
        expected_gone.len() > 100 && expected_gone.len() < before.len(),
        "{} of {}",
        expected_gone.len(),
        before.len()
    );

    let report = json(&ok(&["archive", "push", "--json"]).await);
    let retention = &report["retention"];
    assert_eq!(retention["events"], expected_gone.len() as u64, "{report}");
    assert_eq!(retention["held"], serde_json::json!([]), "{report}");
    let after = archived();
    let kept: BTreeMap<_, _> =
        before.iter().filter(|(id, _)| !expected_gone.contains_key(*id)).map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(after, kept, "exactly the old days' events went, the rest untouched");
    let status = json(&ok(&["status", "--format", "json"]).await);
    assert_eq!(status["retention"]["events"], expected_gone.len() as u64, "{status}");
    assert_eq!(status["retention"]["days"], retention["pruned"].as_array().unwrap().len() as u64, "{status}");
    assert!(ok(&["status"]).await.contains("kept in cold storage"));

    // The whole history still verifies: the pruned events by their archived leaves and
    // their copies read back.
    let out = ok(&["verify"]).await;
    assert!(
        out.contains(&format!("{} events removed by [retention] keep_local checked", expected_gone.len())),
        "{out}"
    );
    assert!(out.contains("read and matched") && out.contains("verified:"), "{out}");
    let out = ok(&["verify", "--no-cold"]).await;
    assert!(out.contains("were not read"), "{out}");
    if db.is_none() {
        // With days pruned, an event deleted behind tfaudit's back is still a deletion:
        // only the seqs recorded as pruned stand in for missing events.
        let c = rusqlite::Connection::open(&env.db).unwrap();
        let victim: i64 = c
            .query_row("SELECT max(seq) FROM events WHERE seq < (SELECT max(seq) FROM events)", [], |r| r.get(0))
            .unwrap();
        c.execute_batch(&format!(
            "CREATE TABLE saved_row AS SELECT * FROM events WHERE seq = {victim}; DELETE FROM events WHERE seq = {victim};"
        ))
        .unwrap();
        let out = run(&["verify"]).await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains(&format!("deleted: the event at seq {victim} ")), "{err}");
        c.execute_batch("INSERT INTO events SELECT * FROM saved_row; DROP TABLE saved_row;").unwrap();
        ok(&["verify"]).await;
    }

    // A copy altered in cold storage is found and named.
    let first_day =
        expected_gone.values().map(|(source, _, ts, _)| (source.clone(), *ts)).min_by_key(|(_, ts)| *ts).unwrap();
    let day = tfaudit_cold::days::day_of(jiff::Timestamp::from_millisecond(first_day.1).unwrap());
    let copy = cold.join(tfaudit_cold::layout::day_path(&first_day.0, day));
    let original = std::fs::read(&copy).unwrap();
    let mut altered = original.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x20;
    std::fs::write(&copy, &altered).unwrap();
    let out = run(&["verify"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("copy:") && err.contains("was altered"), "{err}");
    // Pulling an altered copy refuses it and writes nothing.
    let out = run(&["archive", "pull", "--since", "2000-01-01"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("was altered"), "{}", text(&out.stderr));
    assert_eq!(archived(), kept);
    std::fs::write(&copy, &original).unwrap();

    // Back: every event with its own seq, and exports as before, byte for byte.
    let out = ok(&["archive", "pull", "--since", "2000-01-01", "--json"]).await;
    let pulled = json(&out);
    assert_eq!(pulled["events"], expected_gone.len() as u64, "{pulled}");
    assert_eq!(archived(), before, "every event back, with its seq");
    assert_eq!(ok(&["export", "--format", "jsonl"]).await, exported_before);
    let out = ok(&["verify"]).await;
    assert!(out.contains("verified:") && !out.contains("removed by"), "{out}");
    let again = json(&ok(&["archive", "pull", "--since", "2000-01-01", "--json"]).await);
    assert_eq!(
        (again["events"].as_u64(), again["already_local"].as_u64()),
        (Some(0), pulled["pulled"].as_array().map(|a| a.len() as u64))
    );

    // A day pulled back is not removed again at once.
    let report = json(&ok(&["archive", "push", "--json"]).await);
    assert_eq!(report["retention"]["events"], 0, "{report}");
    let held = report["retention"]["held"].as_array().unwrap();
    assert!(!held.is_empty() && held.iter().all(|h| h["reason"].as_str().unwrap().contains("pulled back")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_local_removes_only_pushed_days_and_pull_brings_them_back() {
    let (_acme, _beta, env) = two_organizations().await;
    let db = env.db.clone();
    keep_local_round_trip(&env, None, &|| archived(&db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_local_and_pull_on_a_postgresql_archive() {
    let (_acme, _beta, env) = two_organizations().await;
    let pg = crate::cluster::TestDb::new();
    let sqlite = env.db.to_str().unwrap().to_owned();
    env.ok(None, &["migrate", "--from", &sqlite, "--to", &pg.url]).await;
    env.ok(None, &["--db", &pg.url, "checkpoint"]).await;
    let url = pg.url.clone();
    // The PostgreSQL client blocks: off the test's async worker.
    keep_local_round_trip(&env, Some(&pg.url), &|| {
        tokio::task::block_in_place(|| archived_in(tfaudit_backend::Location::parse(&url).unwrap()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_settings_and_pull_mistakes() {
    let sim = start(SimConfig { events: 100, seed: 34, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let config = env.path("tfaudit.toml");
    for (text, says) in [
        ("[retention]\nkeep_local = \"12h\"\n[archive]\nlocation = \"cold\"\n", "must be at least 1d"),
        ("[retention]\nkeep_local = \"400d\"\n", "needs [archive] location"),
        ("[retention]\nkeep_local = \"soon\"\n", "not a duration"),
        ("[retention]\nkeep = \"400d\"\n", "keep"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = env.run(Some(&sim), &["--config", config.to_str().unwrap(), "config", "check"]).await;
        assert_eq!(out.status.code(), Some(2), "{text}: {}", crate::harness::text(&out.stdout));
        let err = crate::harness::text(&out.stderr);
        assert!(err.contains(says) && err.trim().lines().count() == 1, "{text}: {err}");
    }
    let out = env.run(None, &["archive", "pull", "--since", "yesterday"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("write it as YYYY-MM-DD"), "{}", text(&out.stderr));
    let out = env.run(None, &["archive", "pull", "--since", "2026-11-05", "--until", "2026-11-01"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("swap them"), "{}", text(&out.stderr));
    let out = env.run(None, &["archive", "pull", "--since", "2026-11-05"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to pull"), "{}", text(&out.stderr));
}

/// `watch` with `push_every` and `[retention] keep_local` removes the old days it
/// pushed, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_removes_old_days_after_its_scheduled_push() {
    let sim = start(SimConfig { events: 600, seed: 35, ..SimConfig::default() }).await;
    let env = Env::new();
    assert!(env.sync(&sim, &[]).await.status.success());
    let before = archived(&env.db);
    let gone = older_than(&before, 5);
    assert!(!gone.is_empty() && gone.len() < before.len());
    let kept: BTreeMap<_, _> =
        before.iter().filter(|(id, _)| !gone.contains_key(*id)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let cold = env.path("cold");
    let config = env.path("tfaudit.toml");
    std::fs::write(
        &config,
        format!(
            "[archive]\nlocation = \"{}\"\npush_every = \"1s\"\n[retention]\nkeep_local = \"5d\"\n",
            cold.display()
        ),
    )
    .unwrap();
    let mut watch = watch_with(&env, &sim, &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived(&env.db) != kept {
        assert!(Instant::now() < deadline, "watch removed nothing in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.start_kill().unwrap();
    let out = watch.wait_with_output().await.unwrap();
    let log = text(&out.stderr);
    assert!(log.contains("removed a day from the local archive"), "{log}");
}
