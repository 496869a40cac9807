//! `[retention] keep_local`: days removed from the local archive once cold storage
//! holds them, and `tfaudit archive pull`, which puts them back.
//!
//! A day is removed only when the manifest at the location records it with exactly
//! the events the archive holds for it (count and seq range), and the object it names
//! is there with the recorded SHA-256: read back, not assumed. The archive then removes
//! the day's events in one transaction that checks again that they are the same ones,
//! and keeps a record of their seqs and of the copy (see `tfaudit_store::retention`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tfaudit_store::{PruneOutcome, PruneRequest, PrunedDay, Store, StoredEvent, blocking_on};

use crate::layout::day_key;
use crate::push::{day_events, read_manifest, seq_range};
use crate::{ColdError, Decision, Manifest, Target, days};

/// A day put back by `archive pull` stays local this long before retention may remove
/// it again (it is already in cold storage, so nothing is pushed).
pub const PULLED_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// What to remove.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Days that ended more than this long ago go (`[retention] keep_local`).
    pub keep_local: Duration,
    pub now: Timestamp,
    /// Only this organization (its exact name in the archive).
    pub organization: Option<String>,
}

/// One day removed, or held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayPruned {
    pub organization: String,
    pub date: String,
    pub events: u64,
}

/// A day old enough to go that stayed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayHeld {
    pub organization: String,
    pub date: String,
    pub reason: String,
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub location: String,
    pub pruned: Vec<DayPruned>,
    /// Events removed from the local archive.
    pub events: u64,
    /// Days old enough that stayed: not (or not exactly) in cold storage, or still
    /// needed locally.
    pub held: Vec<DayHeld>,
}

fn cutoff(now: Timestamp, keep: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(keep).ok().and_then(|d| now.checked_sub(d).ok()).unwrap_or(Timestamp::MIN)
}

/// Removes from the archive every finished day that ended more than
/// `options.keep_local` ago and that the manifest at `target` holds, exactly.
/// `each` is told of each day removed.
///
/// # Errors
/// The archive's error, the target's, or an unreadable manifest. Days removed before
/// the error stay removed (each is whole, and recorded).
pub async fn prune(
    archive: &Arc<dyn Store>,
    target: &Target,
    options: &PruneOptions,
    each: &mut (dyn FnMut(&DayPruned) + Send),
) -> Result<PruneReport, ColdError> {
    let mut report = PruneReport { location: target.shown().to_owned(), ..PruneReport::default() };
    let Some(manifest) = read_manifest(target).await? else { return Ok(report) };
    let cutoff = cutoff(options.now, options.keep_local);
    let sources = blocking_on(archive, |a| a.status()).await?;
    let pulled: Vec<PrunedDay> = blocking_on(archive, |a| a.pruned_days()).await?;
    for source in sources.iter().filter(|s| options.organization.as_ref().is_none_or(|o| o == &s.name)) {
        for day in days::finished_days(source.oldest, source.cursor, options.now) {
            if days::end_of(day) > cutoff {
                break;
            }
            let key = day_key(day);
            let held = |reason: String| DayHeld { organization: source.name.clone(), date: key.clone(), reason };
            if let Some(p) = pulled.iter().find(|p| p.source == source.name && p.day == key)
                && let Some(at) = p.restored_at
                && cutoff_of_pull(at) > options.now
            {
                report.held.push(held(format!("pulled back on {at}; kept for 7 days")));
                continue;
            }
            match prune_day(archive, target, &manifest, &source.name, day).await? {
                Pruned::Done(events) => {
                    let day = DayPruned { organization: source.name.clone(), date: key, events };
                    each(&day);
                    report.events += events;
                    report.pruned.push(day);
                }
                Pruned::Empty => {}
                Pruned::Held(reason) => {
                    tracing::warn!(organization = %source.name, day = %key, "not removed from the local archive: {reason}");
                    report.held.push(held(reason));
                }
            }
        }
    }
    Ok(report)
}

fn cutoff_of_pull(at: Timestamp) -> Timestamp {
    jiff::SignedDuration::try_from(PULLED_KEEP).ok().and_then(|d| at.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

enum Pruned {
    Done(u64),
    Empty,
    Held(String),
}

async fn prune_day(
    archive: &Arc<dyn Store>,
    target: &Target,
    manifest: &Manifest,
    organization: &str,
    day: Date,
) -> Result<Pruned, ColdError> {
    let events = day_events(archive, organization, day).await?;
    let Some((min_seq, max_seq)) = seq_range(&events) else { return Ok(Pruned::Empty) };
    let count = events.len() as u64;
    drop(events);
    let key = day_key(day);
    if manifest.decide(organization, &key, count, min_seq, max_seq) != Decision::Unchanged {
        return Ok(Pruned::Held("cold storage does not hold this day as the archive has it; push it first".into()));
    }
    let Some(pushed) = manifest.day(organization, &key).map(|d| d.current.clone()) else {
        return Ok(Pruned::Held("not pushed".into()));
    };
    // Read back, not assumed: the object must be there, whole.
    match target.get(&pushed.path).await? {
        Some(bytes) if hex::encode(Sha256::digest(&bytes)) == pushed.sha256 => {}
        Some(_) => {
            return Ok(Pruned::Held(format!(
                "its object {} differs from what the manifest recorded; push again",
                pushed.path
            )));
        }
        None => return Ok(Pruned::Held(format!("its object {} is missing; push again", pushed.path))),
    }
    let location = target.shown().to_owned();
    let organization = organization.to_owned();
    let outcome = blocking_on(archive, move |a| {
        a.prune_day(&PruneRequest {
            source: &organization,
            day: &key,
            from: days::start_of(day),
            until: days::end_of(day),
            events: count,
            min_seq,
            max_seq,
            location: &location,
            path: &pushed.path,
            sha256: &pushed.sha256,
        })
    })
    .await?;
    Ok(match outcome {
        PruneOutcome::Pruned(n) => Pruned::Done(n),
        PruneOutcome::Changed => {
            Pruned::Held("an event arrived since the push; the next push writes the day again".into())
        }
        PruneOutcome::Held(why) => Pruned::Held(why),
    })
}

/// Which pruned days to bring back.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub since: Date,
    pub until: Option<Date>,
    pub organization: Option<String>,
}

/// One day put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayPulled {
    pub organization: String,
    pub date: String,
    pub events: u64,
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PullReport {
    pub location: String,
    pub pulled: Vec<DayPulled>,
    pub events: u64,
    /// Days in the range already local (pulled before).
    pub already_local: u64,
}

/// Puts back every pruned day from `options.since` (to `options.until`) from its copy
/// at `target`: each checked against the SHA-256 recorded when it was pruned, and
/// against the seqs removed, before one transaction writes it back.
///
/// # Errors
/// The archive's error, the target's, or [`ColdError::Copy`] when a copy is missing or
/// altered. Days put back before the error stay.
pub async fn pull(
    archive: &Arc<dyn Store>,
    target: &Target,
    options: &PullOptions,
    each: &mut (dyn FnMut(&DayPulled) + Send),
) -> Result<PullReport, ColdError> {
    let mut report = PullReport { location: target.shown().to_owned(), ..PullReport::default() };
    let since = day_key(options.since);
    let until = options.until.map(day_key);
    let days: Vec<PrunedDay> = blocking_on(archive, |a| a.pruned_days()).await?;
    for day in days.into_iter().filter(|d| {
        d.day >= since
            && until.as_ref().is_none_or(|u| &d.day <= u)
            && options.organization.as_ref().is_none_or(|o| o == &d.source)
    }) {
        if day.restored_at.is_some() {
            report.already_local += 1;
            continue;
        }
        let events = read_copy(target, &day).await?;
        if let Err(why) = tfaudit_store::retention::check_restore(&day.source, &day.seqs, &events) {
            return Err(ColdError::Copy(format!(
                "the copy of {} {} at {}/{} is not the day that was pruned: {why}",
                day.source,
                day.day,
                target.shown(),
                day.path
            )));
        }
        let (source, date) = (day.source.clone(), day.day.clone());
        let n = blocking_on(archive, move |a| a.restore_day(&source, &date, &events)).await?;
        let pulled = DayPulled { organization: day.source, date: day.day, events: n };
        each(&pulled);
        report.events += n;
        report.pulled.push(pulled);
    }
    Ok(report)
}

/// A pruned day's copy, read and checked against the SHA-256 recorded when it was
/// pruned.
///
/// # Errors
/// [`ColdError::Copy`] when it is missing, altered or unreadable; the target's errors.
pub async fn read_copy(target: &Target, day: &PrunedDay) -> Result<Vec<StoredEvent>, ColdError> {
    let at = format!("{}/{}", target.shown(), day.path);
    let bytes: Bytes = target.get(&day.path).await?.ok_or_else(|| {
        ColdError::Copy(format!(
            "the copy of {} {} is missing at {at}; the day cannot be read back",
            day.source, day.day
        ))
    })?;
    if hex::encode(Sha256::digest(&bytes)) != day.sha256 {
        return Err(ColdError::Copy(format!(
            "the copy of {} {} at {at} was altered after the day was pruned (its SHA-256 is not the one recorded)",
            day.source, day.day
        )));
    }
    crate::decode_day(bytes)
        .map_err(|e| ColdError::Copy(format!("the copy of {} {} at {at}: {e}", day.source, day.day)))
}
