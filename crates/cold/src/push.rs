//! `tfaudit archive push`: every finished day not yet pushed (or grown since) goes to
//! the target as Parquet, and the manifest records it.

use std::sync::Arc;

use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tfaudit_store::{EventFilter, Order, Pattern, Store, StoredEvent, blocking_on};

use crate::layout::{MANIFEST, day_key, day_path};
use crate::{ColdError, DayObject, Decision, Manifest, Target, days};

/// The manifest is written after this many days, besides at the end, so that a push
/// of years of history that is stopped part way does not start over.
const MANIFEST_EVERY: usize = 32;

/// What to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Only this organization (its exact name in the archive).
    pub organization: Option<String>,
    /// The time that decides which days are finished.
    pub now: Timestamp,
}

/// One day written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayPushed {
    pub organization: String,
    pub date: String,
    pub events: u64,
    pub bytes: u64,
    /// Relative to the location.
    pub path: String,
    /// For a day written again: how many events its earlier object held.
    pub previous_events: Option<u64>,
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub location: String,
    pub pushed: Vec<DayPushed>,
    /// Days written again because they hold events that came late.
    pub rewritten: u64,
    /// Events in the days written.
    pub events: u64,
    /// Finished days already pushed with the same events.
    pub skipped: u64,
    /// Finished days whose pushed object holds more events than the archive has now
    /// (events removed locally after the push): left as they are.
    pub kept: u64,
}

/// Pushes every finished day of every organization (or `options.organization`) that
/// the manifest at `target` does not hold with the same events. `each` is told of
/// each day as soon as it is written.
///
/// Order of writes, per day: the day's object, then (every few days and at the end)
/// the manifest. A day's object whose manifest write was lost (a crash, a failed
/// request) is written again by the next push, which finds the manifest without it.
/// When a day fails, the manifest is still written for the days before it.
///
/// # Errors
/// The archive's error, the target's ([`ColdError::Denied`], [`ColdError::Storage`]),
/// an unreadable manifest, or an unknown `options.organization`.
pub async fn push(
    archive: &Arc<dyn Store>,
    target: &Target,
    options: &PushOptions,
    each: &mut (dyn FnMut(&DayPushed) + Send),
) -> Result<PushReport, ColdError> {
    let mut manifest = read_manifest(target).await?.unwrap_or_default();
    let mut sources = blocking_on(archive, |a| a.status()).await?;
    if let Some(name) = &options.organization {
        if !sources.iter().any(|s| &s.name == name) {
            let known = sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>();
            return Err(ColdError::UnknownOrganization {
                name: name.clone(),
                known: if known.is_empty() { "none (run `tfaudit sync` first)".into() } else { known.join(", ") },
            });
        }
        sources.retain(|s| &s.name == name);
    }
    let covered = covering_checkpoint(archive).await?;
    let mut report = PushReport { location: target.shown().to_owned(), ..PushReport::default() };
    let mut unsaved = 0;
    for source in &sources {
        for day in days::finished_days(source.oldest, source.cursor, options.now) {
            let result =
                push_day(archive, target, &mut manifest, &source.name, day, covered.as_ref(), &mut report, each).await;
            match result {
                Ok(true) => unsaved += 1,
                Ok(false) => {}
                Err(e) => {
                    // Keep what was written before the failure; the failure is the news.
                    if unsaved > 0 {
                        let _ = save(target, &mut manifest).await;
                    }
                    return Err(e);
                }
            }
            if unsaved >= MANIFEST_EVERY {
                save(target, &mut manifest).await?;
                unsaved = 0;
            }
        }
    }
    if unsaved > 0 {
        save(target, &mut manifest).await?;
    }
    Ok(report)
}

/// The archive's newest checkpoint and the `seq` of the last event it covers: a day
/// whose events are all at or before it is vouched for by it.
async fn covering_checkpoint(archive: &Arc<dyn Store>) -> Result<Option<(String, i64)>, ColdError> {
    Ok(blocking_on(archive, |s| {
        let Some(c) = s.latest_checkpoint()? else { return Ok(None) };
        let last = c.size.checked_sub(1).map(|i| s.leaves(i, 1)).transpose()?.and_then(|l| l.first().map(|l| l.seq));
        Ok::<_, tfaudit_store::StoreError>(last.map(|seq| (c.note, seq)))
    })
    .await?)
}

/// Pushes one day if it is new or changed; whether it wrote anything.
#[allow(clippy::too_many_arguments)]
async fn push_day(
    archive: &Arc<dyn Store>,
    target: &Target,
    manifest: &mut Manifest,
    organization: &str,
    day: jiff::civil::Date,
    covered: Option<&(String, i64)>,
    report: &mut PushReport,
    each: &mut (dyn FnMut(&DayPushed) + Send),
) -> Result<bool, ColdError> {
    let mut events = day_events(archive, organization, day).await?;
    let Some((min_seq, max_seq)) = seq_range(&events) else { return Ok(false) };
    let count = events.len() as u64;
    let key = day_key(day);
    let previous_events = match manifest.decide(organization, &key, count, min_seq, max_seq) {
        Decision::Unchanged => {
            report.skipped += 1;
            return Ok(false);
        }
        Decision::Kept => {
            tracing::warn!(
                organization,
                day = %key,
                "the pushed day holds more events than the archive has now; left as it is"
            );
            report.kept += 1;
            return Ok(false);
        }
        Decision::New => None,
        Decision::Changed { previous_events } => Some(previous_events),
    };
    let name = organization.to_owned();
    let bytes = tokio::task::spawn_blocking(move || crate::encode_day(&name, &mut events))
        .await
        .map_err(|e| ColdError::Encode(e.to_string()))??;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let path = day_path(organization, day);
    target.put(&path, Bytes::from(bytes)).await?;
    manifest.record(
        organization,
        &key,
        DayObject {
            path: path.clone(),
            events: count,
            min_seq,
            max_seq,
            sha256,
            bytes: size,
            pushed_at: Timestamp::now(),
            checkpoint: covered.filter(|(_, seq)| max_seq <= *seq).map(|(note, _)| note.clone()),
        },
    );
    let pushed = DayPushed {
        organization: organization.to_owned(),
        date: key,
        events: count,
        bytes: size,
        path,
        previous_events,
    };
    each(&pushed);
    report.events += count;
    report.rewritten += u64::from(previous_events.is_some());
    report.pushed.push(pushed);
    Ok(true)
}

/// One organization's events of one UTC day, through the archive's filter: the
/// organization filter is a case-insensitive glob over names and organization ids, so
/// only the events of exactly this source are kept.
pub(crate) async fn day_events(
    archive: &Arc<dyn Store>,
    organization: &str,
    day: jiff::civil::Date,
) -> Result<Vec<StoredEvent>, ColdError> {
    let filter = EventFilter {
        since: Some(days::start_of(day)),
        until: Some(days::end_of(day)),
        org: Some(Pattern::new(organization)),
        ..EventFilter::default()
    };
    let name = organization.to_owned();
    blocking_on(archive, move |a| {
        let mut events = Vec::new();
        a.events(&filter, Order::OldestFirst, None, &mut |e| {
            if e.source == name {
                events.push(e);
            }
            Ok(())
        })?;
        Ok::<_, ColdError>(events)
    })
    .await
}

pub(crate) fn seq_range(events: &[StoredEvent]) -> Option<(i64, i64)> {
    let min = events.iter().map(|e| e.seq).min()?;
    let max = events.iter().map(|e| e.seq).max()?;
    Some((min, max))
}

/// The manifest at `target`, if there is one yet.
pub(crate) async fn read_manifest(target: &Target) -> Result<Option<Manifest>, ColdError> {
    match target.get(MANIFEST).await? {
        Some(bytes) => Manifest::parse(&bytes)
            .map(Some)
            .map_err(|cause| ColdError::Manifest { location: target.shown().to_owned(), cause }),
        None => Ok(None),
    }
}

/// Writes the manifest in one put (atomic on every object store): readers see the
/// previous manifest or this one.
async fn save(target: &Target, manifest: &mut Manifest) -> Result<(), ColdError> {
    manifest.updated_at = Some(Timestamp::now());
    target.put(MANIFEST, Bytes::from(manifest.to_bytes())).await
}
