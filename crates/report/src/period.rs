//! Report periods: a quarter (`2026-Q3`) or a month (`2026-11`), whole calendar
//! periods in the zone the report is read in.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::ReportError;

/// The time a report covers: `[since, until)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    /// What it is called: `2026-Q3`, `2026-11`, or the range.
    pub label: String,
    pub since: Timestamp,
    pub until: Timestamp,
}

impl Period {
    /// A quarter or a month in `zone`, from its first instant to the next period's.
    ///
    /// # Errors
    /// [`ReportError::Period`] when `text` is neither, saying how to write one.
    pub fn parse(text: &str, zone: &TimeZone) -> Result<Self, ReportError> {
        let bad = || {
            ReportError::Period(format!(
                "{text:?} is not a period: write a quarter as 2026-Q3 or a month as 2026-11 (or give --since and --until instead)"
            ))
        };
        let (year, rest) = text.trim().split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year: i16 = year.parse().map_err(|_| bad())?;
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
        for bad in ["2026", "2026-13", "2026-Q5", "2026-Q0", "26-11", "2026-1", "november", "2026-11-01", ""] {
            let e = Period::parse(bad, &utc).unwrap_err().to_string();
            assert!(e.contains("2026-Q3") && e.contains("2026-11"), "{bad}: {e}");
        }
    }
}
