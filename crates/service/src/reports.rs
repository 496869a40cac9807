//! Scheduled compliance reports (`[[report]]`): after each period closes, the report
//! of the period is made once and delivered — its file written to `write_to`, an email
//! with the file attached to each `send_to` destination.
//!
//! When: a period is reported once every organization the report covers has a
//! successful sync that *started* after the period's end (so the record reaches past
//! it), or, should one keep failing, [`GRACE`] after the end, when the report's
//! coverage section says how far each organization falls short. Which periods: the
//! latest closed one when the schedule is first seen (recorded in the archive, so a
//! restart does not move it) and every one that closes after; never the years before
//! a report was configured.
//!
//! Once: the report is made under the lease [`REPORTS_LEASE`] (one instance at a time
//! gathers) and stored with its deliveries in one transaction keyed by name and period,
//! so a second instance, or a restart, finds it made. Each delivery is then claimed,
//! tried and finished on its own, as the alert outbox's are: retried with backoff until
//! it succeeds, never sent again after, and given up after `max_age`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tfaudit_alerts::destination::{Attachment, Email, Sent, send_email_with_attachment};
use tfaudit_report::{Cadence, Format, Period, Request};
use tfaudit_store::{DeliveryOutcome, MadeReport, Pattern, ReportJob, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster::{self, Cluster};
use crate::retry::{Retry, Shown};

/// The lease reports are made under (`:` keeps it apart from organizations' names).
pub const REPORTS_LEASE: &str = "schedule:reports";

/// How long after a period's end (or, for the first period, after the schedule was
/// first seen) a report is made even if an organization has not synced past it.
pub const GRACE: Duration = Duration::from_secs(24 * 3600);

/// How long a claimed delivery is held before another process may take it over.
const CLAIM: Duration = Duration::from_secs(300);

/// At most this many periods are made in one turn (after a long stop, the newest).
const CATCH_UP: usize = 60;

/// Items listed per section, as `tfaudit report` lists by default.
const LIMIT: usize = 500;

/// One `[[report]]`, resolved.
#[derive(Debug, Clone)]
pub struct ReportSchedule {
    pub name: String,
    pub cadence: Cadence,
    pub format: Format,
    /// Only organizations whose name or id matches (a case-insensitive glob).
    pub org: Option<String>,
    /// Names of email destinations.
    pub send_to: Vec<String>,
    pub write_to: Option<PathBuf>,
}

/// Everything the scheduled reports need.
#[derive(Debug, Clone)]
pub struct ScheduledReports {
    pub reports: Vec<ReportSchedule>,
    /// `[display] timezone`: where weeks and months begin, and how times are shown.
    pub zone: TimeZone,
    /// `[serve] public_url`: items link to their events' pages.
    pub public_url: Option<String>,
    /// The email destinations by name, with each one's timeout.
    pub email: HashMap<String, (Email, Duration)>,
    /// The first pause before a failed delivery is tried again; it doubles up to `retry_cap`.
    pub retry_delay: Duration,
    pub retry_cap: Duration,
    /// A delivery still failing this long after the report was made is given up.
    pub max_age: Duration,
    /// How often the schedule is looked at besides after each sync.
    pub poll: Duration,
}

impl ScheduledReports {
    /// The delivery targets of `r`, as the archive keeps them.
    fn targets(r: &ReportSchedule) -> Vec<String> {
        let mut out: Vec<String> = r.write_to.iter().map(|d| format!("dir:{}", d.display())).collect();
        out.extend(r.send_to.iter().map(|d| format!("email:{d}")));
        out
    }
}

fn extension(format: Format) -> (&'static str, &'static str) {
    match format {
        Format::Html => ("html", "text/html; charset=utf-8"),
        Format::Markdown => ("md", "text/markdown; charset=utf-8"),
        Format::Json => ("json", "application/json"),
    }
}

/// Makes each report's due periods after each sync (`wake`) and at least every poll,
/// and delivers what is made, until `cancel`.
pub(crate) async fn reports_forever(
    store: Arc<dyn Store>,
    settings: Arc<ScheduledReports>,
    organizations: Vec<String>,
    cluster: Cluster,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    for r in &settings.reports {
        tracing::info!(report = %r.name, period = r.cadence.as_str(), "scheduled report");
    }
    let made = Arc::new(Notify::new());
    let mut delivery = tokio::task::JoinSet::new();
    delivery.spawn(deliver_forever(store.clone(), settings.clone(), made.clone(), cancel.clone()));
    let mut retry = Retry::new(settings.poll);
    loop {
        let pause = match make_due(&store, &settings, &organizations, &cluster).await {
            Ok(n) => {
                retry.succeeded();
                if n > 0 {
                    made.notify_one();
                }
                settings.poll
            }
            Err(e) => {
                let pause = retry.failed();
                tracing::error!("scheduled reports: {e}; trying again in {}", Shown(pause));
                pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
            () = cancel.cancelled() => break,
        }
    }
    while delivery.join_next().await.is_some() {}
}

/// The periods of `cadence` to make by `now`: from the latest closed one when the
/// schedule was first seen to the latest closed now, oldest first.
fn due_periods(cadence: Cadence, scheduled_since: Timestamp, now: Timestamp, zone: &TimeZone) -> Vec<Period> {
    let Some(first) = Period::last_closed(cadence, scheduled_since, zone) else { return Vec::new() };
    let mut out = Vec::new();
    let mut p = Period::last_closed(cadence, now, zone);
    while let Some(period) = p {
        if period.since < first.since || out.len() == CATCH_UP {
            break;
        }
        p = period.before(cadence, zone);
        out.push(period);
    }
    out.reverse();
    out
}

/// Whether every organization `schedule` covers has a successful sync that started
/// after `end`; [`GRACE`] after `due` (the later of the period's end and when the
/// schedule was first seen), true whatever.
fn synced_past(
    store: &dyn Store,
    schedule: &ReportSchedule,
    organizations: &[String],
    end: Timestamp,
    due: Timestamp,
    now: Timestamp,
) -> Result<bool, StoreError> {
    if now >= due && now.duration_since(due).unsigned_abs() >= GRACE {
        return Ok(true);
    }
    let pattern = schedule.org.as_deref().map(Pattern::new);
    let statuses = store.status()?;
    let runs = store.run_totals(Some(end), None, 0)?;
    for name in organizations {
        let id = statuses.iter().find(|s| &s.name == name).and_then(|s| s.organization_id.clone());
        let covered =
            pattern.as_ref().is_none_or(|p| p.matches(name, true) || id.as_deref().is_some_and(|i| p.matches(i, true)));
        if covered && !runs.iter().any(|r| &r.source == name && r.ok > 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Makes every due period of every report that is not made yet; says how many were made.
async fn make_due(
    store: &Arc<dyn Store>,
    settings: &Arc<ScheduledReports>,
    organizations: &[String],
    cluster: &Cluster,
) -> Result<usize, StoreError> {
    let now = Timestamp::now();
    let mut due: Vec<(ReportSchedule, Period)> = Vec::new();
    for schedule in &settings.reports {
        let (s, orgs, zone) = (schedule.clone(), organizations.to_vec(), settings.zone.clone());
        let found = tfaudit_store::blocking(store, move |st| {
            let since = st.report_scheduled_since(&s.name, s.cadence.as_str(), now)?;
            let mut out = Vec::new();
            for period in due_periods(s.cadence, since, now, &zone) {
                let due = period.until.max(since);
                if !st.report_made(&s.name, &period.label)? && synced_past(st, &s, &orgs, period.until, due, now)? {
                    out.push((s.clone(), period));
                }
            }
            Ok::<_, StoreError>(out)
        })
        .await?;
        due.extend(found);
    }
    if due.is_empty() {
        return Ok(0);
    }
    // One instance gathers at a time; should two race (the lease ran out mid-way), the
    // archive keeps the first report stored and the other is dropped.
    let Some(lease) = cluster::acquire(store, cluster, REPORTS_LEASE).await else { return Ok(0) };
    let settings = settings.clone();
    let result = tfaudit_store::blocking(store, move |st| {
        let mut made = 0;
        for (schedule, period) in due {
            if st.report_made(&schedule.name, &period.label)? {
                continue;
            }
            let report = make(st, &settings, &schedule, period)?;
            if st.add_report(&report, &ScheduledReports::targets(&schedule))? {
                tracing::info!(report = %schedule.name, period = %report.period, file = %report.file_name, "report made");
                made += 1;
            }
        }
        Ok::<_, StoreError>(made)
    })
    .await;
    cluster::release(store, lease).await;
    result
}

/// Gathers and renders one period's report.
fn make(
    store: &dyn Store,
    settings: &ScheduledReports,
    schedule: &ReportSchedule,
    period: Period,
) -> Result<MadeReport, StoreError> {
    let now = Timestamp::now();
    let request = Request {
        period: period.clone(),
        org: schedule.org.clone(),
        zone: settings.zone.clone(),
        public_url: settings.public_url.clone(),
        now,
        limit: LIMIT,
    };
    let names = store.all_names()?;
    let report = tfaudit_report::gather(store, &request, &names).map_err(|e| match e {
        tfaudit_report::ReportError::Store(s) => s,
        other => StoreError::Database(other.to_string()),
    })?;
    let text = tfaudit_report::render(&report, schedule.format, &settings.zone);
    let (ext, content_type) = extension(schedule.format);
    let file_name = format!("{}-{}.{ext}", schedule.name, period.label);
    let summary = summary(&schedule.name, &report, &settings.zone, &file_name);
    Ok(MadeReport {
        name: schedule.name.clone(),
        period: period.label,
        since: period.since,
        until: period.until,
        file_name,
        content_type: content_type.to_owned(),
        content: text.into_bytes(),
        summary,
        made_at: now,
    })
}

/// The email's text: the period and the headline counts.
fn summary(name: &str, r: &tfaudit_report::Report, zone: &TimeZone, file_name: &str) -> String {
    use std::fmt::Write;
    let shown = |t| tfaudit_report::render::shown(t, zone);
    let mut s = format!(
        "Compliance report {name:?} for {}: {} to {} ({}).\n\n",
        r.period.label,
        shown(r.period.since),
        shown(r.period.until),
        r.zone
    );
    let gaps: usize = r.coverage.iter().map(|c| c.gaps.len()).sum();
    let _ = writeln!(s, "Organizations:              {}", r.coverage.len());
    let _ = writeln!(s, "Events:                     {}", r.activity.total);
    let _ = writeln!(s, "Gaps in the record:         {gaps}");
    let _ = writeln!(s, "Privileged access changes:  {}", r.privileged_access.total);
    let _ = writeln!(s, "Token changes:              {}", r.tokens.changes.total);
    let _ = writeln!(s, "SSO and settings changes:   {}", r.sso_and_settings.total);
    let _ = writeln!(s, "Policy overrides:           {}", r.policy_overrides.total);
    let _ = writeln!(s, "Destruction:                {}", r.destruction.total);
    let _ = writeln!(s, "Impersonations:             {}", r.impersonations.total);
    let _ = writeln!(s, "Alerts:                     {}", r.alerts.total);
    let _ = write!(s, "\nThe whole report is attached ({file_name}).\n");
    s
}

/// Delivers made reports, one delivery at a time, until `cancel`: woken when reports
/// are made and at least every poll for retries that come due.
async fn deliver_forever(
    store: Arc<dyn Store>,
    settings: Arc<ScheduledReports>,
    made: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut retry = Retry::new(settings.poll);
    let poll = settings.poll.min(Duration::from_secs(1));
    // Only what this instance can deliver: another with other settings leaves the rest.
    let mut targets: Vec<String> = settings.reports.iter().flat_map(ScheduledReports::targets).collect();
    targets.retain(|t| t.strip_prefix("email:").is_none_or(|d| settings.email.contains_key(d)));
    targets.sort_unstable();
    targets.dedup();
    let targets = Arc::new(targets);
    loop {
        let mine = targets.clone();
        let claimed =
            tfaudit_store::blocking(&store, move |s| s.claim_report_delivery(&mine, Timestamp::now(), CLAIM)).await;
        let pause = match claimed {
            Ok(Some(job)) => {
                retry.succeeded();
                let outcome = deliver(&settings, &job).await;
                match &outcome {
                    DeliveryOutcome::Delivered => {
                        tracing::info!(report = %job.report.report.name, period = %job.report.report.period, target = %job.target, "report delivered");
                    }
                    DeliveryOutcome::Failed { error, retry_at }
                    | DeliveryOutcome::Misconfigured { error, retry_at } => {
                        tracing::warn!(report = %job.report.report.name, period = %job.report.report.period, target = %job.target, "report delivery failed: {error}; trying again at {retry_at}");
                    }
                    DeliveryOutcome::Abandoned { error } => {
                        tracing::error!(report = %job.report.report.name, period = %job.report.report.period, target = %job.target, "report delivery given up: {error}");
                    }
                }
                let finished = tfaudit_store::blocking(&store, move |s| s.finish_report_delivery(&job, &outcome)).await;
                if let Err(e) = finished {
                    // The claim runs out and the delivery is tried again: a repeat the
                    // email's Message-ID lets receivers drop, and the same file again.
                    tracing::error!("cannot record a report delivery: {e}");
                }
                continue;
            }
            Ok(None) => {
                retry.succeeded();
                poll
            }
            Err(e) => {
                let pause = retry.failed();
                tracing::error!("report delivery: {e}; trying again in {}", Shown(pause));
                pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = made.notified() => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// One attempt of one delivery, and how it ended.
async fn deliver(settings: &ScheduledReports, job: &ReportJob) -> DeliveryOutcome {
    let report = &job.report.report;
    let now = Timestamp::now();
    let pause = settings
        .retry_delay
        .saturating_mul(1u32 << job.attempts.min(16))
        .min(settings.retry_cap.max(settings.retry_delay));
    let retry_at = now.checked_add(pause).unwrap_or(now);
    let too_old = now.duration_since(report.made_at).unsigned_abs() >= settings.max_age && now > report.made_at;
    let failed = |error: String| {
        if too_old {
            DeliveryOutcome::Abandoned { error: format!("{error} (given up: still failing after max_delivery_age)") }
        } else {
            DeliveryOutcome::Failed { error, retry_at }
        }
    };
    if let Some(dir) = job.target.strip_prefix("dir:") {
        let (dir, name, content) = (PathBuf::from(dir), report.file_name.clone(), report.content.clone());
        return match tokio::task::spawn_blocking(move || write_whole(&dir, &name, &content)).await {
            Ok(Ok(())) => DeliveryOutcome::Delivered,
            Ok(Err(e)) => failed(e),
            Err(e) => failed(format!("the write failed on its thread: {e}")),
        };
    }
    let Some(destination) = job.target.strip_prefix("email:") else {
        return DeliveryOutcome::Abandoned { error: format!("unknown target {:?}", job.target) };
    };
    let Some((email, timeout)) = settings.email.get(destination) else {
        return failed(format!(
            "no email destination {destination:?} is configured now; add it back, or the delivery is given up after max_delivery_age"
        ));
    };
    let subject = format!("tfaudit compliance report {}: {}", report.name, report.period);
    let message_id = format!("<report-{}-{}-{}@tfaudit>", job.report.id, report.period, destination);
    let attachment = Attachment {
        file_name: report.file_name.clone(),
        content_type: report.content_type.clone(),
        content: report.content.clone(),
    };
    match send_email_with_attachment(email, *timeout, &subject, &message_id, &report.summary, &attachment).await {
        Sent::Delivered => DeliveryOutcome::Delivered,
        Sent::Retry { error, .. } => failed(error),
        Sent::Misconfigured { error } if !too_old => DeliveryOutcome::Misconfigured { error, retry_at },
        Sent::Misconfigured { error } => failed(error),
        Sent::Permanent { error } => DeliveryOutcome::Abandoned { error },
    }
}

/// Writes `dir/name` whole or not at all: a temporary file beside it (mode 0600),
/// synced, renamed into place. The directory is made if missing.
fn write_whole(dir: &Path, name: &str, content: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let partial = dir.join(format!(".{name}.partial"));
    let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make the directory {}: {e}", dir.display()))?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut f| {
            f.write_all(content)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, &path))
        // The rename is durable once the directory is synced.
        .and_then(|()| std::fs::File::open(dir).and_then(|d| d.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(cannot(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn only_periods_since_the_schedule_was_first_seen_are_due() {
        let utc = TimeZone::UTC;
        // First seen on 3 December: November is due, not the months before.
        let since = at("2026-12-03T06:00:00Z");
        let labels =
            |now| due_periods(Cadence::Monthly, since, now, &utc).into_iter().map(|p| p.label).collect::<Vec<_>>();
        assert_eq!(labels(at("2026-12-03T06:00:00Z")), ["2026-11"]);
        assert_eq!(labels(at("2026-12-31T23:59:59Z")), ["2026-11"]);
        // Down over two month ends: both are made when it is back.
        assert_eq!(labels(at("2027-02-10T00:00:00Z")), ["2026-11", "2026-12", "2027-01"]);
        let weeks = due_periods(Cadence::Weekly, since, at("2026-12-15T00:00:00Z"), &utc);
        assert_eq!(weeks.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["2026-W48", "2026-W49", "2026-W50"]);
    }

    #[test]
    fn a_period_waits_for_a_successful_sync_started_after_its_end_or_a_day() {
        use tfaudit_store::{Archive, RunCounts, RunResult};
        let dir = tempfile::tempdir().unwrap();
        let store = tfaudit_store_sqlite::SqliteStore::open(
            &dir.path().join("archive.db"),
            tfaudit_store_sqlite::OpenMode::CreateIfMissing,
        )
        .unwrap();
        let schedule = ReportSchedule {
            name: "r".into(),
            cadence: Cadence::Monthly,
            format: Format::Markdown,
            org: None,
            send_to: Vec::new(),
            write_to: None,
        };
        let orgs = ["acme".to_owned(), "beta".to_owned()];
        let end = at("2026-12-01T00:00:00Z");
        let now = at("2026-12-01T06:00:00Z");
        let run = |name: &str, started: &str, result: RunResult| {
            let source = store.source(name, "https://app.terraform.io").unwrap();
            let id = store.start_run(source.id, at(started)).unwrap();
            store.finish_run(id, &result, RunCounts::default()).unwrap();
        };
        let ready = |due, now| synced_past(&store, &schedule, &orgs, end, due, now).unwrap();
        // acme synced before the end and after it; beta only failed after it.
        run("acme", "2026-11-30T23:59:00Z", RunResult::Ok);
        run("acme", "2026-12-01T00:01:00Z", RunResult::Ok);
        run("beta", "2026-11-30T23:59:30Z", RunResult::Ok);
        run("beta", "2026-12-01T00:02:00Z", RunResult::Failed("down".into()));
        assert!(!ready(end, now), "beta has not synced past the end");
        // Only the organizations the report covers count.
        let acme_only = ReportSchedule { org: Some("ACME".into()), ..schedule.clone() };
        assert!(synced_past(&store, &acme_only, &orgs, end, end, now).unwrap());
        // A day after it was due it goes ahead; a schedule first seen later waits a day from then.
        assert!(ready(end, at("2026-12-02T00:00:00Z")));
        assert!(!ready(at("2026-12-01T12:00:00Z"), at("2026-12-02T00:00:00Z")));
        run("beta", "2026-12-01T00:03:00Z", RunResult::Ok);
        assert!(ready(end, now));
    }

    #[test]
    fn a_file_is_written_whole_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("new/reports");
        write_whole(&target, "audit-2026-11.html", b"<p>one</p>").unwrap();
        write_whole(&target, "audit-2026-11.html", b"<p>two</p>").unwrap();
        let path = target.join("audit-2026-11.html");
        assert_eq!(std::fs::read(&path).unwrap(), b"<p>two</p>");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1, "no temporary file is left");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert!(write_whole(&file, "x.html", b"").unwrap_err().contains("cannot make the directory"));
    }
}
