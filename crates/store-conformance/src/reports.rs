//! Scheduled reports: made once per name and period, each delivery claimed by one
//! process at a time, retried until it succeeds, and never sent again after.

use std::time::Duration;

use tfaudit_store::{DeliveryOutcome, DeliveryState, MadeReport};

use crate::{Fresh, at};

fn made(name: &str, period: &str) -> MadeReport {
    MadeReport {
        name: name.into(),
        period: period.into(),
        since: at("2026-11-01T00:00:00Z"),
        until: at("2026-12-01T00:00:00Z"),
        file_name: format!("{name}-{period}.html"),
        content_type: "text/html; charset=utf-8".into(),
        content: b"<p>\0report\xff</p>".to_vec(),
        summary: "Events: 3".into(),
        made_at: at("2026-12-01T01:00:00Z"),
    }
}

/// The first time a schedule is asked for is kept; a report is stored once by name
/// and period with one delivery per target; a claimed delivery is not claimed again
/// until its lease ends; a failure is retried when due; a delivered one is never
/// claimed again, and a stale claim's outcome is not recorded.
pub fn a_scheduled_report_is_made_once_and_each_delivery_succeeds_once(fresh: Fresh<'_>) {
    let a = fresh();
    let first = at("2026-11-15T00:00:00Z");
    assert_eq!(a.report_scheduled_since("audit", "monthly", first).unwrap(), first);
    assert_eq!(a.report_scheduled_since("audit", "monthly", at("2026-12-15T00:00:00Z")).unwrap(), first);
    let other = at("2026-12-15T00:00:00Z");
    assert_eq!(a.report_scheduled_since("audit", "weekly", other).unwrap(), other);

    assert!(!a.report_made("audit", "2026-11").unwrap());
    let targets = vec!["dir:/reports".to_owned(), "email:mail".to_owned()];
    assert!(a.add_report(&made("audit", "2026-11"), &targets).unwrap());
    assert!(a.report_made("audit", "2026-11").unwrap());
    assert!(!a.report_made("audit", "2026-10").unwrap());
    // Made again (another instance, a restart): nothing changes.
    let mut again = made("audit", "2026-11");
    again.content = b"other".to_vec();
    assert!(!a.add_report(&again, &targets).unwrap());
    let listed = a.reports(10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].deliveries.len(), 2);
    assert!(listed[0].deliveries.iter().all(|d| d.state == DeliveryState::Pending));

    let now = at("2026-12-01T02:00:00Z");
    let lease = Duration::from_secs(60);
    // A process that delivers to neither target claims nothing.
    let elsewhere = ["email:other".to_owned()];
    assert!(a.claim_report_delivery(&elsewhere, now, lease).unwrap().is_none());
    assert!(a.claim_report_delivery(&[], now, lease).unwrap().is_none());
    let j1 = a.claim_report_delivery(&targets, now, lease).unwrap().expect("a due delivery");
    assert_eq!(j1.report.report.content, made("audit", "2026-11").content, "the first report's bytes, exactly");
    let j2 = a.claim_report_delivery(&targets, now, lease).unwrap().expect("the other delivery");
    assert_ne!(j1.target, j2.target);
    assert!(a.claim_report_delivery(&targets, now, lease).unwrap().is_none(), "both are claimed");

    // j1 fails and is due again later; j2 is delivered.
    let retry_at = at("2026-12-01T03:00:00Z");
    assert!(a.finish_report_delivery(&j1, &DeliveryOutcome::Failed { error: "down".into(), retry_at }).unwrap());
    assert!(a.finish_report_delivery(&j2, &DeliveryOutcome::Delivered).unwrap());
    assert!(!a.finish_report_delivery(&j2, &DeliveryOutcome::Delivered).unwrap(), "finished once");
    assert!(a.claim_report_delivery(&targets, now, lease).unwrap().is_none(), "the failure is not due yet");
    let later = at("2026-12-01T03:00:01Z");
    let j3 = a.claim_report_delivery(&targets, later, lease).unwrap().expect("the failed one, due again");
    assert_eq!((j3.target.as_str(), j3.attempts), (j1.target.as_str(), 1));
    // Its claim runs out and another process takes it over: the first claim's outcome
    // does not count.
    let taken = a.claim_report_delivery(&targets, at("2026-12-01T03:02:00Z"), lease).unwrap().expect("taken over");
    assert!(!a.finish_report_delivery(&j3, &DeliveryOutcome::Delivered).unwrap());
    assert!(a.finish_report_delivery(&taken, &DeliveryOutcome::Delivered).unwrap());
    assert!(a.claim_report_delivery(&targets, at("2027-01-01T00:00:00Z"), lease).unwrap().is_none(), "all delivered");

    let listed = a.reports(10).unwrap();
    let states: Vec<(String, DeliveryState, u64)> =
        listed[0].deliveries.iter().map(|d| (d.destination.clone(), d.state, d.attempts)).collect();
    let expected: Vec<(String, DeliveryState, u64)> =
        targets.iter().map(|t| (t.clone(), DeliveryState::Delivered, if *t == j1.target { 2 } else { 1 })).collect();
    assert_eq!(states, expected);
    assert!(listed[0].deliveries.iter().all(|d| d.delivered_at.is_some()));
    assert_eq!(
        listed[0].deliveries.iter().find(|d| d.destination == j1.target).unwrap().last_error.as_deref(),
        Some("down")
    );
}
