//! Report periods: a quarter (`2026-Q3`), a month (`2026-11`) or an ISO week
//! (`2026-W48`, Monday to Sunday), whole calendar periods in the zone the report is
//! read in.

use jiff::Timestamp;
use jiff::civil::{Date, ISOWeekDate, Weekday};
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::ReportError;

/// The time a report covers: `[since, until)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// What it is called: `2026-Q3`, `2026-11`, `2026-W48`, or the range.
    pub label: String,
    pub since: Timestamp,
    pub until: Timestamp,
}

impl Period {
    /// A quarter, a month or an ISO week in `zone`, from its first instant to the next
    /// period's.
    ///
    /// # Errors
    /// [`ReportError::Period`] when `text` is none of them, saying how to write one.
    pub fn parse(text: &str, zone: &TimeZone) -> Result<Self, ReportError> {
        let bad = || {
            ReportError::Period(format!(
                "{text:?} is not a period: write a quarter as 2026-Q3, a month as 2026-11 or an ISO week as 2026-W48 (or give --since and --until instead)"
            ))
        };
        let (year, rest) = text.trim().split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i16 = year.parse().map_err(|_| bad())?;
        if let Some(w) = rest.strip_prefix(['W', 'w']) {
            if w.len() != 2 || !w.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let week: i8 = w.parse().map_err(|_| bad())?;
            // jiff refuses week 53 of a year that has 52.
            let monday = ISOWeekDate::new(year, week, Weekday::Monday).map_err(|_| bad())?;
            return Self::week_of(monday.date(), zone).ok_or_else(bad);
        }
        let (first_month, months) = if let Some(q) = rest.strip_prefix(['Q', 'q']) {
            let q: i8 = match q {
                "1" | "2" | "3" | "4" => q.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            ((q - 1) * 3 + 1, 3)
        } else {
            if rest.len() != 2 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let m: i8 = rest.parse().map_err(|_| bad())?;
            if !(1..=12).contains(&m) {
                return Err(bad());
            }
            (m, 1)
        };
        let start = Date::new(year, first_month, 1).map_err(|_| bad())?;
        let end = start.checked_add(jiff::Span::new().months(months)).map_err(|_| bad())?;
        let at = |d: Date| d.to_zoned_datetime(zone.clone()).map(|z| z.timestamp()).map_err(|_| bad());
        let label = if months == 3 {
            format!("{year}-Q{}", (first_month - 1) / 3 + 1)
        } else {
            format!("{year}-{first_month:02}")
        };
        Ok(Self { label, since: at(start)?, until: at(end)? })
    }

    /// The ISO week (Monday to Sunday in `zone`) that holds the day `day`.
    fn week_of(day: Date, zone: &TimeZone) -> Option<Self> {
        let iso = day.iso_week_date();
        let monday = ISOWeekDate::new(iso.year(), iso.week(), Weekday::Monday).ok()?.date();
        let next = monday.checked_add(jiff::Span::new().days(7)).ok()?;
        let at = |d: Date| d.to_zoned_datetime(zone.clone()).ok().map(|z| z.timestamp());
        Some(Self { label: format!("{:04}-W{:02}", iso.year(), iso.week()), since: at(monday)?, until: at(next)? })
    }

    /// The month (in `zone`) that holds the day `day`.
    fn month_of(day: Date, zone: &TimeZone) -> Option<Self> {
        let first = day.first_of_month();
        let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
        let at = |d: Date| d.to_zoned_datetime(zone.clone()).ok().map(|z| z.timestamp());
        Some(Self { label: format!("{:04}-{:02}", first.year(), first.month()), since: at(first)?, until: at(next)? })
    }

    /// The period of `cadence` that holds the instant `at`, in `zone`.
    #[must_use]
    pub fn containing(cadence: Cadence, at: Timestamp, zone: &TimeZone) -> Option<Self> {
        let day = at.to_zoned_datetime(zone.clone()).date();
        match cadence {
            Cadence::Weekly => Self::week_of(day, zone),
            Cadence::Monthly => Self::month_of(day, zone),
        }
    }

    /// The latest period of `cadence` that has ended by `now`.
    #[must_use]
    pub fn last_closed(cadence: Cadence, now: Timestamp, zone: &TimeZone) -> Option<Self> {
        let current = Self::containing(cadence, now, zone)?;
        current.before(cadence, zone)
    }

    /// The period of `cadence` just before this one.
    #[must_use]
    pub fn before(&self, cadence: Cadence, zone: &TimeZone) -> Option<Self> {
        let earlier = self.since.checked_sub(jiff::SignedDuration::from_nanos(1)).ok()?;
        Self::containing(cadence, earlier, zone)
    }

    /// Any range, named by its ends as shown in `zone`.
    #[must_use]
    pub fn range(since: Timestamp, until: Timestamp, zone: &TimeZone) -> Self {
        Self {
            label: format!("{} to {}", crate::render::shown(since, zone), crate::render::shown(until, zone)),
            since,
            until,
        }
    }
}

/// How often a scheduled report is made: every ISO week or every calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cadence {
    Weekly,
    Monthly,
}

impl Cadence {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "weekly" => Some(Self::Weekly),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn quarters_and_months_are_whole_calendar_periods_in_the_zone() {
        let utc = TimeZone::UTC;
        let q = Period::parse("2026-Q3", &utc).unwrap();
        assert_eq!(
            (q.label.as_str(), q.since, q.until),
            ("2026-Q3", at("2026-07-01T00:00:00Z"), at("2026-10-01T00:00:00Z"))
        );
        let q4 = Period::parse("2026-q4", &utc).unwrap();
        assert_eq!((q4.label.as_str(), q4.until), ("2026-Q4", at("2027-01-01T00:00:00Z")));
        let m = Period::parse("2026-11", &utc).unwrap();
        assert_eq!((m.since, m.until), (at("2026-11-01T00:00:00Z"), at("2026-12-01T00:00:00Z")));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let m = Period::parse("2026-11", &berlin).unwrap();
        assert_eq!((m.since, m.until), (at("2026-10-31T23:00:00Z"), at("2026-11-30T23:00:00Z")));
        for bad in [
            "2026",
            "2026-13",
            "2026-Q5",
            "2026-Q0",
            "26-11",
            "2026-1",
            "november",
            "2026-11-01",
            "",
            "2026-W00",
            "2026-W54",
            "2025-W53",
            "2026-W8",
            "2026-Wx1",
        ] {
            let e = Period::parse(bad, &utc).unwrap_err().to_string();
            assert!(e.contains("2026-Q3") && e.contains("2026-11") && e.contains("2026-W48"), "{bad}: {e}");
        }
    }

    #[test]
    fn iso_weeks_run_monday_to_monday_in_the_zone() {
        let utc = TimeZone::UTC;
        let w = Period::parse("2026-W48", &utc).unwrap();
        assert_eq!(
            (w.label.as_str(), w.since, w.until),
            ("2026-W48", at("2026-11-23T00:00:00Z"), at("2026-11-30T00:00:00Z"))
        );
        // Week 1 of 2026 starts in 2025 (the week with the year's first Thursday);
        // 2026 has 53 weeks and the last ends in 2027.
        let w1 = Period::parse("2026-w01", &utc).unwrap();
        assert_eq!((w1.label.as_str(), w1.since), ("2026-W01", at("2025-12-29T00:00:00Z")));
        let w53 = Period::parse("2026-W53", &utc).unwrap();
        assert_eq!(w53.until, at("2027-01-04T00:00:00Z"));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let w = Period::parse("2026-W48", &berlin).unwrap();
        assert_eq!(w.since, at("2026-11-22T23:00:00Z"));
    }

    #[test]
    fn the_last_closed_period_is_the_one_before_now() {
        let utc = TimeZone::UTC;
        let now = at("2026-12-03T06:00:00Z");
        let week = Period::last_closed(Cadence::Weekly, now, &utc).unwrap();
        assert_eq!(week, Period::parse("2026-W48", &utc).unwrap());
        let month = Period::last_closed(Cadence::Monthly, now, &utc).unwrap();
        assert_eq!(month, Period::parse("2026-11", &utc).unwrap());
        assert_eq!(month.before(Cadence::Monthly, &utc).unwrap(), Period::parse("2026-10", &utc).unwrap());
        assert_eq!(Period::last_closed(Cadence::Monthly, at("2027-01-01T00:00:00Z"), &utc).unwrap().label, "2026-12");
        // Across a year's end in a zone ahead of UTC: it is already 2027-W01 in Tokyo.
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let w = Period::last_closed(Cadence::Weekly, at("2027-01-03T16:00:00Z"), &tokyo).unwrap();
        assert_eq!(w.label, "2026-W53");
    }
}
