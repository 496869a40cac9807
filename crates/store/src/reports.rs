//! The scheduled reports role: each `[[report]]`'s periods made once (the rendered
//! file kept in the archive, so that every delivery sends the same bytes), and each
//! made report's deliveries — its file written to a directory, its email to each
//! destination — claimed, retried and finished like the alert outbox's.

use jiff::Timestamp;
use serde::Serialize;

use crate::{DeliveryOutcome, DeliveryRecord, Result};

/// A report made for one period, to be stored with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MadeReport {
    /// The `[[report]]`'s name.
    pub name: String,
    /// The period's label (`2026-11`, `2026-W48`): with `name`, the report's identity.
    pub period: String,
    pub since: Timestamp,
    pub until: Timestamp,
    /// The attachment's and the file's name (`audit-2026-11.html`).
    pub file_name: String,
    /// The file's media type (`text/html; charset=utf-8`).
    pub content_type: String,
    #[serde(skip)]
    pub content: Vec<u8>,
    /// The email's text: the period and the headline counts.
    pub summary: String,
    pub made_at: Timestamp,
}

/// Where one delivery of a report goes: `dir:<path>` (the file written there) or
/// `email:<destination>`.
pub type ReportTarget = String;

/// A report as stored, with its deliveries (each `destination` is a target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportRecord {
    pub id: i64,
    #[serde(flatten)]
    pub report: MadeReport,
    pub deliveries: Vec<DeliveryRecord>,
}

/// A report delivery that is due, claimed for a while by one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportJob {
    pub delivery_id: i64,
    pub target: ReportTarget,
    pub attempts: u64,
    pub report: ReportRecord,
    /// Which claim this is (ms since the epoch when it runs out), as
    /// [`crate::DeliveryJob::claim`].
    pub claim: i64,
}

/// The reports role. Calls block.
pub trait Reports: Send + Sync {
    /// When the report `name` of `cadence` was first scheduled: recorded as `now` the
    /// first time it is asked, so that no period that ended long before is made.
    ///
    /// # Errors
    /// On a database failure.
    fn report_scheduled_since(&self, name: &str, cadence: &str, now: Timestamp) -> Result<Timestamp>;

    /// Whether the report `name` has been made for `period`.
    ///
    /// # Errors
    /// On a database failure.
    fn report_made(&self, name: &str, period: &str) -> Result<bool>;

    /// In one transaction: stores the report with a pending delivery to each target,
    /// unless a report of that name and period is already stored; then nothing is
    /// written and `false` returned (another instance, or an earlier run, made it).
    ///
    /// # Errors
    /// On a database failure; then nothing was written.
    fn add_report(&self, report: &MadeReport, targets: &[ReportTarget]) -> Result<bool>;

    /// Claims the report delivery to one of `targets` (those this process can deliver
    /// to) that is due first by `now`, until `now + lease`, as
    /// [`crate::Consumers::claim_delivery`] does for alerts.
    ///
    /// # Errors
    /// On a database failure.
    fn claim_report_delivery(
        &self,
        targets: &[ReportTarget],
        now: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Option<ReportJob>>;

    /// Records how the attempt of `job` ended. Nothing is recorded, and `false`
    /// returned, when the delivery was claimed again since.
    /// [`DeliveryOutcome::Misconfigured`] is kept as a failure to retry.
    ///
    /// # Errors
    /// On a database failure.
    fn finish_report_delivery(&self, job: &ReportJob, outcome: &DeliveryOutcome) -> Result<bool>;

    /// Reports made, newest first (their content left out), with their deliveries.
    ///
    /// # Errors
    /// On a database failure.
    fn reports(&self, limit: u64) -> Result<Vec<ReportRecord>>;
}

/// How an outcome is stored: state, error, when to try next, when delivered.
#[must_use]
pub fn outcome_columns(
    outcome: &DeliveryOutcome,
    now: Timestamp,
) -> (crate::DeliveryState, Option<&str>, Option<Timestamp>, Option<Timestamp>) {
    use crate::DeliveryState as S;
    match outcome {
        DeliveryOutcome::Delivered => (S::Delivered, None, None, Some(now)),
        DeliveryOutcome::Failed { error, retry_at } | DeliveryOutcome::Misconfigured { error, retry_at } => {
            (S::Failing, Some(error), Some(*retry_at), None)
        }
        DeliveryOutcome::Abandoned { error } => (S::Abandoned, Some(error), None, None),
    }
}
