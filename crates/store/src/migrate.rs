//! One copy of a whole archive into another, resumable and verified (`tfaudit
//! migrate`), written against the storage roles only.
//!
//! 1. The target must be empty or hold a prefix of this very archive (a copy that was
//!    stopped): its first event must be the source's first, its newest event must be
//!    in the source. The copy goes on after that event, so a killed copy resumes where
//!    its last committed batch ended; each batch is one transaction of the target.
//! 2. Events are appended in the source's ingest order, in batches.
//! 3. Both archives are read again side by side in ingest order: a SHA-256 over every
//!    event's id and raw bytes on each side, and from the pairs of seqs the
//!    translation of every seq the non-event state names.
//! 4. The non-event state is loaded last, in one transaction, seqs translated, so the
//!    copy is usable at once (until then it holds the events with no cursors: a sync
//!    into it would backfill, and nothing would be lost).
//! 5. Counts are compared on both sides.

use std::collections::BTreeMap;
use std::io;

use sha2::{Digest, Sha256};

use crate::{ArchiveState, Result, Store, StoreError, StoredEvent};

/// Why a copy cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target holds something that is not (a prefix of) this archive.
    #[error("the target already holds a different archive ({0}); give an empty database or file as --to")]
    DifferentArchive(String),
}

/// How far a copy is, for a progress bar.
pub trait MigrateProgress {
    /// Copying starts: `done` events were already in the target, of `total`.
    fn begin(&mut self, done: u64, total: u64);
    /// A batch of `n` events is committed in the target.
    fn copied(&mut self, n: u64);
    /// The copy is checked: both archives are read again.
    fn verifying(&mut self, total: u64);
    /// `n` more events checked on both sides.
    fn verified(&mut self, n: u64);
}

/// One figure on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub what: String,
    pub source: u64,
    pub target: u64,
}

/// What a copy did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Events copied by this run (not those a stopped run had copied).
    pub copied: u64,
    /// Events the target already held when this run began.
    pub resumed_after: u64,
    /// Events, per source, rejects, gaps, runs, consumers, alerts, deliveries, dead
    /// letters.
    pub counts: Vec<Count>,
    /// SHA-256 over every event's id and raw bytes in ingest order, as hex.
    pub source_checksum: String,
    pub target_checksum: String,
    /// Set when the two archives' events differ in ingest order (the first place).
    pub event_mismatch: Option<String>,
    /// How long copying the events took, and checking both sides and loading the state.
    pub copying: std::time::Duration,
    pub verifying: std::time::Duration,
}

impl MigrateReport {
    /// Whether the target equals the source in every count and the checksum.
    #[must_use]
    pub fn verified(&self) -> bool {
        self.event_mismatch.is_none()
            && self.source_checksum == self.target_checksum
            && self.counts.iter().all(|c| c.source == c.target)
    }

    /// What differs, one item each.
    #[must_use]
    pub fn differences(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .counts
            .iter()
            .filter(|c| c.source != c.target)
            .map(|c| format!("{}: {} in the source, {} in the target", c.what, c.source, c.target))
            .collect();
        if let Some(m) = &self.event_mismatch {
            out.push(m.clone());
        }
        if self.source_checksum != self.target_checksum {
            out.push(format!(
                "checksum: {} in the source, {} in the target",
                self.source_checksum, self.target_checksum
            ));
        }
        out
    }
}

/// Copies `from` into `to`, `batch` events per transaction; see the module's text.
///
/// # Errors
/// [`MigrateError::DifferentArchive`] when `to` holds another archive, else the
/// first store error (the copy then resumes from its last committed batch).
pub fn migrate(
    from: &dyn Store,
    to: &dyn Store,
    batch: u64,
    progress: &mut dyn MigrateProgress,
) -> Result<MigrateReport, MigrateError> {
    let batch = batch.max(1);
    let resumed_after = check_target(from, to)?;
    let mut after = resume_point(from, to)?;
    for s in from.status()? {
        to.source(&s.name, &s.address)?;
    }
    let total: u64 = from.status()?.iter().map(|s| s.events).sum();
    progress.begin(resumed_after, total);
    let started = std::time::Instant::now();
    // Reading the next batch overlaps writing this one: a thread reads, the caller's
    // thread writes, at most two batches in between.
    let mut copied = 0;
    std::thread::scope(|scope| -> Result<(), MigrateError> {
        let (send, batches) = std::sync::mpsc::sync_channel::<Result<Vec<StoredEvent>>>(2);
        scope.spawn(move || {
            loop {
                let mut events = Vec::new();
                let read = from.events_after(after, batch, &mut |e| {
                    events.push(e);
                    Ok(())
                });
                let done = match read {
                    Ok(_) => events.last().map(|e| after = e.seq).is_none(),
                    Err(_) => true,
                };
                // The writer stopped (an error): nothing more to read for.
                if send.send(read.map(|_| events)).is_err() || done {
                    return;
                }
            }
        });
        for events in batches {
            let events = events?;
            if events.is_empty() {
                break;
            }
            to.append_copied(&events)?;
            copied += events.len() as u64;
            progress.copied(events.len() as u64);
        }
        Ok(())
    })?;

    let copying = started.elapsed();
    let started = std::time::Instant::now();
    // The state is read after the events so that it names none the copy lacks.
    let state = from.archive_state()?;
    progress.verifying(total);
    let side = compare(from, to, batch, &state.seqs(), progress)?;
    // A target whose events are not the source's gets no cursors: it must not look
    // like a usable copy (the report says what differs).
    if side.mismatch.is_none() && side.source_checksum == side.target_checksum {
        let translation = side.translation;
        to.load_state(&state.clone().translated(|s| translation.get(&s).copied().unwrap_or(0)))?;
    }

    let copy = to.archive_state()?;
    let mut counts = vec![Count { what: "events".into(), source: side.source_events, target: side.target_events }];
    let per_source = |store: &dyn Store| -> Result<BTreeMap<String, u64>> {
        Ok(store.status()?.into_iter().map(|s| (s.name, s.events)).collect())
    };
    let (ours, theirs) = (per_source(from)?, per_source(to)?);
    for (name, n) in &ours {
        counts.push(Count {
            what: format!("events of {name}"),
            source: *n,
            target: theirs.get(name).copied().unwrap_or(0),
        });
    }
    let figures = |s: &ArchiveState| {
        [
            ("sources", s.sources.len()),
            ("runs", s.runs.len()),
            ("gaps", s.gaps.len()),
            ("rejects", s.rejects.len()),
            ("consumers", s.consumers.len()),
            ("alerts", s.alerts.len()),
            ("deliveries", s.deliveries()),
            ("dead letters", s.dead_letters.len()),
            ("names", s.names.len()),
            ("name listings", s.listings.len()),
            ("scheduled reports", s.reports.len()),
            ("report deliveries", s.reports.iter().map(|r| r.deliveries.len()).sum()),
        ]
    };
    for ((what, a), (_, b)) in figures(&state).into_iter().zip(figures(&copy)) {
        counts.push(Count { what: what.into(), source: a as u64, target: b as u64 });
    }
    Ok(MigrateReport {
        copied,
        resumed_after,
        counts,
        source_checksum: side.source_checksum,
        target_checksum: side.target_checksum,
        event_mismatch: side.mismatch,
        copying,
        verifying: started.elapsed(),
    })
}

/// Whether `copy` is `original` as a copy holds it: same id, raw bytes, source and
/// ingest time (the indexed fields are read from the raw text).
fn same_event(original: &StoredEvent, copy: &StoredEvent) -> bool {
    copy.event.id == original.event.id
        && copy.event.raw == original.event.raw
        && copy.source == original.source
        && copy.ingested_at == original.ingested_at
}

/// The target must be empty or hold a copy of this archive that stopped: every source
/// it has is one of ours, its first event is our first, its newest one of ours (each
/// the same bytes, source and ingest time: two archives synced from the same
/// organization share ids, never ingest times). How many events it holds.
fn check_target(from: &dyn Store, to: &dyn Store) -> Result<u64, MigrateError> {
    let theirs = to.status()?;
    let ours = from.status()?;
    if let Some(other) = theirs.iter().find(|t| !ours.iter().any(|o| o.name == t.name)) {
        return Err(MigrateError::DifferentArchive(format!(
            "it has a source {:?} that this archive has not",
            other.name
        )));
    }
    let held: u64 = theirs.iter().map(|s| s.events).sum();
    if held == 0 {
        return Ok(0);
    }
    match (one_after(from, 0)?, one_after(to, 0)?) {
        (Some(a), Some(b)) if same_event(&a, &b) => Ok(held),
        (_, Some(b)) => Err(MigrateError::DifferentArchive(format!(
            "its first event {} is not this archive's first event",
            b.event.id
        ))),
        (_, None) => Ok(0),
    }
}

/// The source seq the target holds a copy up to (0 when it holds nothing).
fn resume_point(from: &dyn Store, to: &dyn Store) -> Result<i64, MigrateError> {
    let newest = to.newest_seq()?;
    if newest == 0 {
        return Ok(0);
    }
    let Some(last) = one_after(to, newest - 1)? else { return Ok(0) };
    match from.event(&last.event.id)? {
        Some(e) if same_event(&e, &last) => Ok(e.seq),
        _ => Err(MigrateError::DifferentArchive(format!("its newest event {} is not this archive's", last.event.id))),
    }
}

fn one_after(store: &dyn Store, after: i64) -> Result<Option<StoredEvent>> {
    let mut found = None;
    store.events_after(after, 1, &mut |e| {
        found = Some(e);
        Ok(())
    })?;
    Ok(found)
}

/// Both archives read side by side.
struct Sides {
    source_events: u64,
    target_events: u64,
    source_checksum: String,
    target_checksum: String,
    mismatch: Option<String>,
    /// Source seq → target seq of the newest event at or before it.
    translation: BTreeMap<i64, i64>,
}

fn digest(hash: &mut Sha256, e: &StoredEvent) {
    // Lengths first, so that no two different lists of events hash alike.
    hash.update((e.event.id.len() as u64).to_le_bytes());
    hash.update(e.event.id.as_bytes());
    hash.update((e.event.raw.len() as u64).to_le_bytes());
    hash.update(e.event.raw.as_bytes());
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn compare(
    from: &dyn Store,
    to: &dyn Store,
    batch: u64,
    wanted: &[i64],
    progress: &mut dyn MigrateProgress,
) -> Result<Sides> {
    let (mut hash_from, mut hash_to) = (Sha256::new(), Sha256::new());
    let (mut after_from, mut after_to) = (0, 0);
    let (mut n_from, mut n_to) = (0u64, 0u64);
    let mut mismatch = None;
    let mut translation = BTreeMap::new();
    let mut wanted = wanted.iter().peekable();
    let mut last_target = 0;
    let read = |store: &dyn Store, after: i64| -> Result<Vec<StoredEvent>> {
        let mut events = Vec::new();
        store.events_after(after, batch, &mut |e| {
            events.push(e);
            Ok::<(), io::Error>(())
        })?;
        Ok(events)
    };
    loop {
        // Both sides at once: two cores, two databases.
        let (ours, theirs) = std::thread::scope(|scope| {
            let theirs = scope.spawn(|| read(to, after_to));
            let ours = read(from, after_from);
            (ours, theirs.join().unwrap_or_else(|_| Err(StoreError::Database("reading the target panicked".into()))))
        });
        let (ours, theirs) = (ours?, theirs?);
        if ours.is_empty() && theirs.is_empty() {
            break;
        }
        for (i, e) in ours.iter().enumerate() {
            digest(&mut hash_from, e);
            let copy = theirs.get(i);
            if mismatch.is_none() {
                match copy {
                    Some(c) if same_event(e, c) => {}
                    Some(c) => {
                        mismatch = Some(format!(
                            "event {} (the {}th in ingest order) differs in the target ({})",
                            e.event.id,
                            n_from + 1,
                            c.event.id
                        ));
                    }
                    None => {
                        mismatch =
                            Some(format!("event {} (the {}th) is missing in the target", e.event.id, n_from + 1));
                    }
                }
            }
            while let Some(&&s) = wanted.peek() {
                if s >= e.seq {
                    break;
                }
                translation.insert(s, last_target);
                wanted.next();
            }
            if let Some(c) = copy {
                last_target = c.seq;
            }
            n_from += 1;
        }
        for c in &theirs {
            digest(&mut hash_to, c);
        }
        if theirs.len() > ours.len() && mismatch.is_none() {
            mismatch = Some(format!("the target holds more events than the source (after the {n_from}th)"));
        }
        n_to += theirs.len() as u64;
        progress.verified(ours.len().max(theirs.len()) as u64);
        after_from = ours.last().map_or(after_from, |e| e.seq);
        after_to = theirs.last().map_or(after_to, |e| e.seq);
        // Once the pairs are out of step the translation means nothing; the counts
        // and checksum will say so.
    }
    for &s in wanted {
        translation.insert(s, last_target);
    }
    Ok(Sides {
        source_events: n_from,
        target_events: n_to,
        source_checksum: hex(&hash_from.finalize()),
        target_checksum: hex(&hash_to.finalize()),
        mismatch,
        translation,
    })
}
