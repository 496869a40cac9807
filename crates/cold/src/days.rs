//! Which days are finished, and so ready for cold storage.
//!
//! A UTC day is finished when it is before today (UTC) and the organization's cursor
//! (the newest event time a complete sync committed) is at or past the day's end: every
//! sync since then asks the server only from `cursor − overlap`, so the day's events
//! that the server had sent by then are all archived. HCP Terraform can still deliver
//! an event up to about a day late, and a sync's reconcile pass picks it up: the day
//! then holds one more event than was pushed, and the next push writes the day again
//! (the manifest keeps the earlier entry under `versions`).

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan, tz::TimeZone};

/// The UTC day a time falls on.
#[must_use]
pub fn day_of(t: Timestamp) -> Date {
    t.to_zoned_datetime(TimeZone::UTC).date()
}

/// The first instant of a UTC day.
#[must_use]
pub fn start_of(day: Date) -> Timestamp {
    day.to_zoned_datetime(TimeZone::UTC).map_or(Timestamp::MAX, |z| z.timestamp())
}

/// The first instant after a UTC day.
#[must_use]
pub fn end_of(day: Date) -> Timestamp {
    day.checked_add(1.day()).map_or(Timestamp::MAX, start_of)
}

/// Whether `day` is finished for an organization whose cursor is `cursor`, at `now`.
#[must_use]
pub fn is_finished(day: Date, cursor: Option<Timestamp>, now: Timestamp) -> bool {
    let end = end_of(day);
    cursor.is_some_and(|c| c >= end) && end <= start_of(day_of(now))
}

/// The finished days from the day of the organization's oldest event on, oldest first;
/// none before its first event or its first complete sync.
#[must_use]
pub fn finished_days(oldest: Option<Timestamp>, cursor: Option<Timestamp>, now: Timestamp) -> Vec<Date> {
    let Some(oldest) = oldest else { return Vec::new() };
    let mut days = Vec::new();
    let mut day = day_of(oldest);
    while is_finished(day, cursor, now) {
        days.push(day);
        match day.checked_add(1.day()) {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    days
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_day_is_finished_before_today_and_once_the_cursor_passed_its_end() {
        let day = jiff::civil::date(2026, 11, 30);
        let now = t("2026-12-02T10:00:00Z");
        assert!(is_finished(day, Some(t("2026-12-01T00:00:00Z")), now), "cursor exactly at the day's end");
        assert!(is_finished(day, Some(t("2026-12-02T09:59:00Z")), now));
        assert!(!is_finished(day, Some(t("2026-11-30T23:59:59.999Z")), now), "cursor inside the day");
        assert!(!is_finished(day, None, now), "never synced to the end");
        // Today is never finished, whatever the cursor says (a clock ahead on the server).
        let today = jiff::civil::date(2026, 12, 2);
        assert!(!is_finished(today, Some(t("2026-12-05T00:00:00Z")), now));
        // Yesterday is finished at midnight.
        assert!(is_finished(jiff::civil::date(2026, 12, 1), Some(now), t("2026-12-02T00:00:00Z")));
        assert!(!is_finished(jiff::civil::date(2026, 12, 1), Some(now), t("2026-12-01T23:59:59Z")));
    }

    #[test]
    fn finished_days_run_from_the_oldest_event_to_the_cursor_or_yesterday() {
        let now = t("2026-12-02T10:00:00Z");
        let days = finished_days(Some(t("2026-11-28T17:00:00Z")), Some(t("2026-12-02T09:00:00Z")), now);
        let keys: Vec<String> = days.iter().map(|d| crate::layout::day_key(*d)).collect();
        assert_eq!(keys, ["2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01"]);
        // A cursor behind (the last sync was two days ago) holds back the days after it.
        let days = finished_days(Some(t("2026-11-28T17:00:00Z")), Some(t("2026-11-30T12:00:00Z")), now);
        assert_eq!(days.len(), 2);
        assert!(finished_days(None, Some(now), now).is_empty());
        assert!(finished_days(Some(t("2026-12-02T01:00:00Z")), Some(now), now).is_empty(), "only today");
    }
}
