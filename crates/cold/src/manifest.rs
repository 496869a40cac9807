//! `manifest.json`: what was pushed, per organization and day, with the earlier
//! versions of a day that was written again.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The manifest's `format`; a reader refuses a newer one.
pub const MANIFEST_FORMAT: u32 = 1;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// When a push last wrote it.
    pub updated_at: Option<Timestamp>,
    /// Source name → `YYYY-MM-DD` → the day.
    pub organizations: BTreeMap<String, BTreeMap<String, DayEntry>>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self { format: MANIFEST_FORMAT, updated_at: None, organizations: BTreeMap::new() }
    }
}

/// One day of one organization: the object there now, and what was there before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayEntry {
    #[serde(flatten)]
    pub current: DayObject,
    /// The earlier entries of this day, oldest first, each replaced when a late event
    /// made the day hold more events.
    #[serde(default)]
    pub versions: Vec<DayObject>,
}

/// One day's object as pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayObject {
    /// Relative to the prefix, as `layout::day_path` makes it.
    pub path: String,
    pub events: u64,
    /// The least and greatest ingest sequence numbers (`seq`) of its events.
    pub min_seq: i64,
    pub max_seq: i64,
    /// SHA-256 of the object's bytes, lower-case hex.
    pub sha256: String,
    pub bytes: u64,
    pub pushed_at: Timestamp,
    /// The archive's newest checkpoint when the day was pushed, when it covers all of
    /// the day's events (the day's events are in its tree): `tfaudit verify --from` and
    /// `tfaudit prove` take it.
    pub checkpoint: Option<String>,
}

/// What a push does with a day, given what the archive holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Never pushed: write it.
    New,
    /// Pushed with the same events (count and `seq` range): nothing to do.
    Unchanged,
    /// Pushed with fewer events (a late event arrived) or another `seq` range (the
    /// archive was copied with `tfaudit migrate`): write it again.
    Changed { previous_events: u64 },
    /// The pushed object holds more events than the archive has for the day now
    /// (events were removed locally after the push): keep the pushed object.
    Kept,
}

impl Manifest {
    /// Reads a manifest.
    ///
    /// # Errors
    /// Why it is not a manifest this version reads.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if manifest.format > MANIFEST_FORMAT {
            return Err(format!(
                "its format {} is newer than this tfaudit writes ({MANIFEST_FORMAT}); upgrade tfaudit",
                manifest.format
            ));
        }
        Ok(manifest)
    }

    /// The manifest as written: pretty JSON, keys in order.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    #[must_use]
    pub fn day(&self, organization: &str, day: &str) -> Option<&DayEntry> {
        self.organizations.get(organization)?.get(day)
    }

    /// What to do with a day that holds `events` events with `seq` from `min_seq` to
    /// `max_seq` in the archive.
    #[must_use]
    pub fn decide(&self, organization: &str, day: &str, events: u64, min_seq: i64, max_seq: i64) -> Decision {
        let Some(entry) = self.day(organization, day) else { return Decision::New };
        let pushed = &entry.current;
        if pushed.events == events && pushed.min_seq == min_seq && pushed.max_seq == max_seq {
            Decision::Unchanged
        } else if events < pushed.events {
            Decision::Kept
        } else {
            Decision::Changed { previous_events: pushed.events }
        }
    }

    /// Records a day's new object; the entry it replaces joins the day's `versions`.
    pub fn record(&mut self, organization: &str, day: &str, object: DayObject) {
        let days = self.organizations.entry(organization.to_owned()).or_default();
        match days.get_mut(day) {
            Some(entry) => {
                let previous = std::mem::replace(&mut entry.current, object);
                entry.versions.push(previous);
            }
            None => {
                days.insert(day.to_owned(), DayEntry { current: object, versions: Vec::new() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(events: u64, min_seq: i64, max_seq: i64, sha: &str) -> DayObject {
        DayObject {
            path: "organization=acme/date=2026-11-05/events.parquet".into(),
            events,
            min_seq,
            max_seq,
            sha256: sha.into(),
            bytes: 1000 + events,
            pushed_at: "2026-12-02T10:00:00Z".parse().unwrap(),
            checkpoint: None,
        }
    }

    #[test]
    fn a_rewritten_day_keeps_its_earlier_entries_as_versions() {
        let mut m = Manifest::default();
        assert_eq!(m.decide("acme", "2026-11-05", 10, 1, 10), Decision::New);
        m.record("acme", "2026-11-05", object(10, 1, 10, "aa"));
        assert_eq!(m.decide("acme", "2026-11-05", 10, 1, 10), Decision::Unchanged);
        assert_eq!(m.decide("acme", "2026-11-06", 10, 1, 10), Decision::New, "another day");
        assert_eq!(m.decide("beta", "2026-11-05", 10, 1, 10), Decision::New, "another organization");
        // A late event: one more, with a later seq.
        assert_eq!(m.decide("acme", "2026-11-05", 11, 1, 57), Decision::Changed { previous_events: 10 });
        m.record("acme", "2026-11-05", object(11, 1, 57, "bb"));
        m.record("acme", "2026-11-05", object(12, 1, 60, "cc"));
        let entry = m.day("acme", "2026-11-05").unwrap();
        assert_eq!(entry.current.sha256, "cc");
        assert_eq!(entry.versions.iter().map(|v| v.sha256.as_str()).collect::<Vec<_>>(), ["aa", "bb"]);
        // Same count, other seqs: the archive was copied (`migrate`) and renumbered.
        assert_eq!(m.decide("acme", "2026-11-05", 12, 5, 64), Decision::Changed { previous_events: 12 });
        // Fewer events than pushed: removed locally; the pushed object stays.
        assert_eq!(m.decide("acme", "2026-11-05", 3, 1, 3), Decision::Kept);
    }

    #[test]
    fn the_manifest_reads_back_what_it_wrote_and_refuses_a_newer_format() {
        let mut m = Manifest::default();
        m.record("127.0.0.1:8700", "2026-11-05", object(10, 1, 10, "aa"));
        m.record("127.0.0.1:8700", "2026-11-05", object(11, 1, 12, "bb"));
        let bytes = m.to_bytes();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let day = &v["organizations"]["127.0.0.1:8700"]["2026-11-05"];
        assert_eq!(day["events"], 11);
        assert_eq!(day["checkpoint"], serde_json::Value::Null);
        assert_eq!(day["versions"][0]["sha256"], "aa");
        assert!(day["versions"][0].get("versions").is_none());
        let e = Manifest::parse(br#"{"format":2,"updated_at":null,"organizations":{}}"#).unwrap_err();
        assert!(e.contains("upgrade tfaudit"), "{e}");
        assert!(Manifest::parse(b"<html>").is_err());
    }
}
