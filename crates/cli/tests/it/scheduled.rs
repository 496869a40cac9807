//! Scheduled reports (`[[report]]`): `watch` makes the last closed week's report once
//! its organization has synced past the week's end, writes it to a directory and
//! emails it with the file attached — once, through a mail server that refuses at
//! first, and not again after a restart.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use tfaudit_sim::SimConfig;

use crate::cluster::TestDb;
use crate::harness::*;
use crate::receivers::Smtp;

fn config(env: &Env, sim: &tfaudit_sim::Sim, smtp: &Smtp, reports: &str) -> std::path::PathBuf {
    std::fs::write(env.path("ca.pem"), &smtp.ca_pem).unwrap();
    let text = format!(
        r#"
[sync]
rate_limit = 0
retry_delay = "5ms"
interval = "1s"

[[organization]]
name = "acme"
address = "{url}"
token_env = "SIM_TOKEN"

[alerts]
enabled = false
retry_delay = "100ms"

[[destination]]
name = "mail"
type = "email"
server = "127.0.0.1:{port}"
tls = "starttls"
ca_file = "{ca}"
from = "tfaudit <tfaudit@example.com>"
to = ["auditors@example.com"]

{reports}
"#,
        url = sim.url(),
        port = smtp.port,
        ca = env.path("ca.pem").display()
    );
    let path = env.path("tfaudit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The reports the archive holds, with their deliveries.
fn stored_reports(env: &Env) -> Vec<tfaudit_store::ReportRecord> {
    reports_at(&env.db.display().to_string())
}

/// The reports of the archive at `location`, read on a thread of its own: the
/// PostgreSQL client blocks, and may not run on a thread that drives async tasks.
fn reports_at(location: &str) -> Vec<tfaudit_store::ReportRecord> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tfaudit_backend::open(location, tfaudit_backend::Mode::MustExist)
                .ok()
                .and_then(|s| s.reports(10).ok())
                .unwrap_or_default()
        })
        .join()
        .unwrap()
    })
}

fn delivered(reports: &[tfaudit_store::ReportRecord]) -> bool {
    !reports.is_empty()
        && reports.iter().all(|r| r.deliveries.iter().all(|d| d.state == tfaudit_store::DeliveryState::Delivered))
}

fn all_delivered(env: &Env) -> bool {
    delivered(&stored_reports(env))
}

/// Successful syncs recorded so far.
fn syncs(env: &Env) -> u64 {
    tfaudit_backend::Location::Sqlite(env.db.clone())
        .open(tfaudit_backend::Mode::MustExist)
        .ok()
        .and_then(|s| s.run_totals(None, None, 0).ok())
        .map_or(0, |t| t.iter().map(|r| r.ok).sum())
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(child: tokio::process::Child) -> String {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stderr)
}

/// The attachment of a MIME message: its file name, media type and decoded bytes.
fn attachment(message: &str) -> (String, String, Vec<u8>) {
    let unfolded = message.replace("\r\n", "\n");
    let at = unfolded.find("Content-Disposition: attachment").expect("an attachment");
    let head_start = unfolded[..at].rfind("\n\n").map_or(0, |i| i + 2);
    let rest = &unfolded[head_start..];
    let (head, body) = rest.split_once("\n\n").expect("the attachment's body");
    let name = regex::Regex::new(r#"filename="([^"]+)""#).unwrap().captures(head).expect("a file name")[1].to_owned();
    let kind = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).expect("a type").trim().to_owned();
    assert!(head.contains("Content-Transfer-Encoding: base64"), "{head}");
    let encoded: String = body.lines().take_while(|l| !l.starts_with("--")).collect::<Vec<_>>().concat();
    (name, kind, base64::engine::general_purpose::STANDARD.decode(encoded.trim()).expect("base64"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_week_is_reported_once_to_a_directory_and_by_email_across_restarts() {
    // The generated history covers the last 13 days: the last closed week has events.
    let sim = start(SimConfig { events: 400, hostile: 0.0, ..SimConfig::default() }).await;
    let smtp = Smtp::start().await;
    // The mail server refuses the first two tries: the delivery is retried, once sent.
    smtp.refuse.store(2, Ordering::SeqCst);
    let env = Env::new();
    let cfg = config(
        &env,
        &sim,
        &smtp,
        "[[report]]\nname = \"weekly\"\nperiod = \"weekly\"\nsend_to = [\"mail\"]\nwrite_to = \"reports\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    let week = tfaudit_report::Period::last_closed(
        tfaudit_report::Cadence::Weekly,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::UTC,
    )
    .unwrap();
    let file = env.path(&format!("reports/weekly-{}.html", week.label));

    let watch = env
        .command(None, &["--config", cfg, "watch"])
        .env("SIM_TOKEN", sim.token())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the report's deliveries", Duration::from_secs(60), || all_delivered(&env)).await;
    let log = stop(watch).await;
    assert!(log.contains("report made") && log.contains("report delivered"), "{log}");

    let reports = stored_reports(&env);
    assert_eq!(reports.len(), 1, "one report: {reports:#?}");
    let made = &reports[0];
    assert_eq!((made.report.name.as_str(), made.report.period.as_str()), ("weekly", week.label.as_str()));
    assert_eq!((made.report.since, made.report.until), (week.since, week.until));
    let mut deliveries: Vec<(&str, u64)> =
        made.deliveries.iter().map(|d| (d.destination.as_str(), d.attempts)).collect();
    deliveries.sort_unstable();
    let dir = format!("dir:{}", env.path("reports").display());
    assert_eq!(deliveries, [(dir.as_str(), 1), ("email:mail", 3)], "two refusals, then sent");
    assert_eq!(smtp.refused.load(Ordering::SeqCst), 2);

    // The file: whole, private, the week's report.
    use std::os::unix::fs::PermissionsExt;
    let written = std::fs::read(&file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let html = String::from_utf8(written.clone()).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains(&week.label), "{}", &html[..200.min(html.len())]);
    assert_eq!(std::fs::read_dir(env.path("reports")).unwrap().count(), 1, "no temporary file is left");

    // The email: one, with the period and counts in its text and the same file attached.
    let messages = smtp.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "one email");
    let message = &messages[0];
    assert!(message.contains(&format!("Subject: tfaudit compliance report weekly: {}", week.label)), "{message}");
    assert!(message.contains("Events:") && message.contains("Privileged access changes:"), "{message}");
    let (name, kind, bytes) = attachment(message);
    assert_eq!(name, format!("weekly-{}.html", week.label));
    assert!(kind.starts_with("text/html"), "{kind}");
    assert_eq!(bytes, written, "the attachment is the file, byte for byte");

    // By hand, the same week gives the same counts.
    let by_hand = env.ok(None, &["--config", cfg, "report", "--period", &week.label, "--format", "json"]).await;
    let by_hand: serde_json::Value = serde_json::from_str(&by_hand).unwrap();
    assert_eq!(by_hand["period"]["label"], week.label.as_str());
    let total = by_hand["activity"]["total"].as_u64().unwrap();
    assert!(total > 0, "the week has events");
    // The scheduled report was made once the sync had stored them.
    let counted = regex::Regex::new(r"Events: +(\d+)").unwrap().captures(message).map(|c| c[1].to_owned());
    assert_eq!(counted, Some(total.to_string()), "{message}");

    // A restart: the report is not made or sent again, however many syncs pass.
    let before = syncs(&env);
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let watch = env
        .command(None, &["--config", cfg, "watch"])
        .env("SIM_TOKEN", sim.token())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("three more syncs", Duration::from_secs(30), || syncs(&env) >= before + 3).await;
    let log = stop(watch).await;
    assert!(!log.contains("report made"), "{log}");
    assert_eq!(stored_reports(&env).len(), 1);
    assert_eq!(smtp.messages.lock().unwrap().len(), 1, "no second email");
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), modified, "the file is not written again");

    // `migrate` takes the reports along, each with its deliveries, so that the copy
    // does not make and send them again.
    let copy = env.path("copy.db").display().to_string();
    let out = env.ok(None, &["migrate", "--from", &env.db.display().to_string(), "--to", &copy]).await;
    assert!(out.contains("scheduled reports") && out.contains("counts and checksum equal"), "{out}");
    let original = stored_reports(&env);
    assert_eq!(reports_at(&copy), original, "the same reports, ids and delivery states");
    let pg = TestDb::new();
    env.ok(None, &["migrate", "--from", &copy, "--to", &pg.url]).await;
    assert_eq!(reports_at(&pg.url), original, "PostgreSQL holds the same");
    let back = env.path("back.db").display().to_string();
    env.ok(None, &["migrate", "--from", &pg.url, "--to", &back]).await;
    assert_eq!(reports_at(&back), original, "and SQLite again");
}

/// Bad `[[report]]` tables: one line naming the fix, exit 2, for `config check` and `watch` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_tables_are_one_line_errors() {
    let sim = start(SimConfig { events: 0, ..SimConfig::default() }).await;
    let smtp = Smtp::start().await;
    let env = Env::new();
    for (table, says) in [
        ("[[report]]\nname = \"r\"\nperiod = \"yearly\"\nwrite_to = \"out\"\n", "period must be \"weekly\""),
        ("[[report]]\nname = \"r\"\nperiod = \"weekly\"\n", "add send_to"),
        ("[[report]]\nname = \"r\"\nperiod = \"weekly\"\nsend_to = [\"pager\"]\n", "which no [[destination]] defines"),
        ("[[report]]\nname = \"r\"\nperiod = \"monthly\"\nformat = \"pdf\"\nwrite_to = \"out\"\n", "format must be"),
        ("[[report]]\nname = \"r/../x\"\nperiod = \"monthly\"\nwrite_to = \"out\"\n", "report name"),
        (
            "[[report]]\nname = \"r\"\nperiod = \"monthly\"\nwrite_to = \"out\"\nemail = \"x\"\n",
            "unknown field `email`",
        ),
    ] {
        let cfg = config(&env, &sim, &smtp, table);
        let cfg = cfg.to_str().unwrap();
        for args in [vec!["--config", cfg, "config", "check"], vec!["--config", cfg, "watch"]] {
            let out = env.command(None, &args).env("SIM_TOKEN", sim.token()).output().await.unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{table}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{table}: one line: {err}");
            assert!(err.contains(says), "{table}: {err}");
        }
    }
    // A good one passes the check and is counted.
    let cfg = config(&env, &sim, &smtp, "[[report]]\nname = \"r\"\nperiod = \"monthly\"\nsend_to = [\"mail\"]\n");
    let out = env
        .command(None, &["--config", cfg.to_str().unwrap(), "config", "check"])
        .env("SIM_TOKEN", sim.token())
        .output()
        .await
        .unwrap();
    let ok = text(&out.stdout);
    assert!(out.status.success() && ok.contains("1 reports"), "{ok}{}", text(&out.stderr));
}

/// Two instances on one PostgreSQL archive, both with the report: one report, one
/// file, one email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_make_and_send_the_report_once() {
    let db = tokio::task::spawn_blocking(crate::cluster::TestDb::new).await.unwrap();
    let sim = start(SimConfig { events: 300, hostile: 0.0, ..SimConfig::default() }).await;
    let smtp = Smtp::start().await;
    let env = Env::new();
    let cfg = config(
        &env,
        &sim,
        &smtp,
        "[[report]]\nname = \"monthly\"\nperiod = \"monthly\"\nformat = \"md\"\nsend_to = [\"mail\"]\nwrite_to = \"reports\"\n",
    );
    let cfg = cfg.to_str().unwrap().to_owned();
    let mut instances = crate::cluster::Instances::new(&env, |name| {
        let mut cmd = env.command(None, &["--config", &cfg, "watch", "--instance", name, "--lease", "3s"]);
        cmd.env("SIM_TOKEN", sim.token()).env("TFAUDIT_DB", &db.url);
        cmd
    });
    instances.start("a");
    instances.start("b");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !delivered(&reports_at(&db.url)) {
        assert!(Instant::now() < deadline, "timed out waiting for the report: {}", instances.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both keep syncing a while longer: neither makes or sends it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    instances.stop().await;
    let reports = reports_at(&db.url);
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert!(reports[0].deliveries.iter().all(|d| d.attempts == 1), "{reports:#?}");
    assert_eq!(smtp.messages.lock().unwrap().len(), 1, "one email");
    let files: Vec<_> = std::fs::read_dir(env.path("reports")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, [std::ffi::OsString::from(format!("monthly-{}.md", reports[0].report.period))]);
    let logs = instances.logs();
    assert_eq!(logs.matches("report made").count(), 1, "{logs}");
}
