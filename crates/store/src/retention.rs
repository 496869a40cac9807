//! The retention role: days of an organization removed from the local archive once
//! cold storage holds them (`[retention] keep_local`), and put back from there
//! (`tfaudit archive pull`).
//!
//! A pruned day leaves a record: exactly which seqs were removed and where their copy
//! is (location, object, its SHA-256). The Merkle tree's leaves stay, so `verify`
//! goes on recomputing the tree over the whole history: a removed event's leaf is
//! taken as stored (the checkpoints vouch for it) and, when the copy can be read,
//! checked against the copy's bytes. An event missing without such a record is still
//! a deletion. Summaries keep counting pruned events (the hourly rollups are not
//! touched): they describe the whole history, local or not.

use jiff::Timestamp;
use serde::Serialize;

use crate::{Result, StoreError, StoredEvent};

/// One organization's UTC day, removed from the local archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedDay {
    /// The source's name (the organization as tfaudit knows it).
    pub source: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The seqs removed, ascending.
    #[serde(skip)]
    pub seqs: Vec<i64>,
    pub events: u64,
    /// Where the copy is: the location as shown, and the object's path under it.
    pub location: String,
    pub path: String,
    /// SHA-256 of the object, lower-case hex, as the manifest recorded it.
    pub sha256: String,
    pub pruned_at: Timestamp,
    /// When `tfaudit archive pull` put the day back (its events are local again).
    pub restored_at: Option<Timestamp>,
}

/// What to remove: the events of `source` in `[from, until)`, provided they are still
/// exactly the ones pushed (`events` of them, seqs `min_seq..=max_seq`).
#[derive(Debug, Clone)]
pub struct PruneRequest<'a> {
    pub source: &'a str,
    pub day: &'a str,
    pub from: Timestamp,
    pub until: Timestamp,
    pub events: u64,
    pub min_seq: i64,
    pub max_seq: i64,
    pub location: &'a str,
    pub path: &'a str,
    pub sha256: &'a str,
}

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneOutcome {
    /// The day's events were removed (how many).
    Pruned(u64),
    /// The day no longer holds exactly what was pushed (an event came late): nothing
    /// removed; the next push writes the day again.
    Changed,
    /// Something still needs the day's events locally (a consumer that has not read
    /// them, an event held as a dead letter): nothing removed. Says what.
    Held(String),
}

/// The retention role. Calls block.
pub trait Retention: Send + Sync {
    /// In one transaction: checks that the source's events in the request's time range
    /// are exactly those pushed and that no consumer or dead letter still needs them,
    /// removes them, lowers the source's counters, and records the day (replacing an
    /// earlier record of the same day).
    ///
    /// # Errors
    /// On a database failure or an unknown source; then nothing was removed.
    fn prune_day(&self, request: &PruneRequest<'_>) -> Result<PruneOutcome>;

    /// Every pruned day, by source and day.
    ///
    /// # Errors
    /// On a database failure.
    fn pruned_days(&self) -> Result<Vec<PrunedDay>>;

    /// Puts a pruned day's events back, each with its own seq and ingest time (read
    /// from the copy), in one transaction; the day's record says when. Events must be
    /// exactly the day's recorded seqs. The number put back.
    ///
    /// # Errors
    /// On a database failure, an unknown day, or events that are not the day's; then
    /// nothing was written.
    fn restore_day(&self, source: &str, day: &str, events: &[StoredEvent]) -> Result<u64>;
}

/// Ascending seqs as stored: LEB128 varints of the differences (a day's seqs are close
/// together, so most take one or two bytes).
#[must_use]
pub fn encode_seqs(seqs: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seqs.len() * 2);
    append_seqs(&mut out, 0, seqs);
    out
}

/// Appends `seqs` (ascending, after `previous`) to a list [`encode_seqs`] wrote, whose
/// last seq is `previous`: the list grows without being read.
pub fn append_seqs(out: &mut Vec<u8>, mut previous: i64, seqs: &[i64]) {
    for &seq in seqs {
        let mut delta = seq.wrapping_sub(previous) as u64;
        previous = seq;
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
}

/// [`encode_seqs`]'s bytes back into seqs (`None`: damaged).
#[must_use]
pub fn decode_seqs(bytes: &[u8]) -> Option<Vec<i64>> {
    let mut seqs = Vec::with_capacity(bytes.len());
    let (mut previous, mut delta, mut shift) = (0i64, 0u64, 0u32);
    for &byte in bytes {
        if shift > 63 {
            return None;
        }
        delta |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            previous = previous.wrapping_add(delta as i64);
            seqs.push(previous);
            (delta, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    (shift == 0).then_some(seqs)
}

/// Checks that `events` are exactly the seqs `seqs` (ascending) removed from `source`:
/// what a copy must hold to be put back.
///
/// # Errors
/// A message saying what differs.
pub fn check_restore(source: &str, seqs: &[i64], events: &[StoredEvent]) -> std::result::Result<(), String> {
    if let Some(e) = events.iter().find(|e| e.source != source) {
        return Err(format!("event {} is of {:?}, not of {source:?}", e.event.id, e.source));
    }
    let mut found: Vec<i64> = events.iter().map(|e| e.seq).collect();
    found.sort_unstable();
    if found != seqs {
        return Err(format!(
            "the copy holds {} events, the day had {} removed, and their seqs differ",
            found.len(),
            seqs.len()
        ));
    }
    Ok(())
}

/// What every backend's [`Retention::restore_day`] checks of the day's stored record
/// (`seqs` as stored, whether it was put back already) before writing `events`.
///
/// # Errors
/// The day was put back already, its record is damaged, or `events` are not its seqs.
pub fn check_record(source: &str, day: &str, seqs: &[u8], restored: bool, events: &[StoredEvent]) -> Result<()> {
    let refuse = |why: &str| StoreError::Database(format!("cannot put back the day {day} of {source:?}: {why}"));
    if restored {
        return Err(refuse("it was already put back"));
    }
    let seqs = decode_seqs(seqs).ok_or_else(|| refuse("its record in the archive is damaged"))?;
    check_restore(source, &seqs, events).map_err(|why| refuse(&why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_read_back_and_damage_is_told() {
        for seqs in [vec![], vec![1], vec![5, 6, 7, 300, 301, 1_000_000], vec![i64::MAX - 1, i64::MAX]] {
            let bytes = encode_seqs(&seqs);
            assert_eq!(decode_seqs(&bytes).as_deref(), Some(&seqs[..]));
        }
        assert_eq!(encode_seqs(&[5, 6, 7]), [5, 1, 1]);
        assert!(decode_seqs(&[0x80]).is_none(), "an unfinished varint");
        assert!(decode_seqs(&[0xff; 11]).is_none(), "too long");
    }

    #[test]
    fn a_day_is_put_back_only_whole_once_and_from_an_intact_record() {
        let event = |seq: i64, source: &str| StoredEvent {
            seq,
            source: source.into(),
            ingested_at: Timestamp::UNIX_EPOCH,
            event: crate::AuditEvent {
                id: format!("e{seq}"),
                timestamp: Timestamp::UNIX_EPOCH,
                organization_id: None,
                auth_type: None,
                accessor_id: None,
                auth_description: None,
                impersonator_id: None,
                request_id: None,
                resource_id: None,
                resource_type: None,
                resource_action: None,
                raw: "{}".into(),
                named: Default::default(),
            },
        };
        let seqs = encode_seqs(&[3, 7]);
        let day = [event(7, "acme"), event(3, "acme")];
        assert!(check_record("acme", "2026-11-05", &seqs, false, &day).is_ok(), "any order");
        let refused = |r: Result<()>| r.unwrap_err().to_string();
        assert!(refused(check_record("acme", "2026-11-05", &seqs, true, &day)).contains("already put back"));
        assert!(refused(check_record("acme", "2026-11-05", &[0x80], false, &day)).contains("damaged"));
        assert!(refused(check_record("acme", "2026-11-05", &seqs, false, &day[..1])).contains("seqs differ"));
        let other = [event(3, "acme"), event(7, "beta")];
        assert!(refused(check_record("acme", "2026-11-05", &seqs, false, &other)).contains("not of \"acme\""));
    }
}
