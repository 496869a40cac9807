//! Points in time as a query takes them: RFC 3339, a date, or "that long ago".

use jiff::{Timestamp, civil::Date, tz::TimeZone};

/// Why a time could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "{text:?} is not a time; write an RFC 3339 time (2026-11-01T09:00:00Z), a date (2026-11-01) or a local time (2026-11-01T09:00), both in --tz (UTC unless set), or an age (90m, 24h, 7d)"
)]
pub struct WhenError {
    text: String,
}

/// Parses `2026-11-01T09:00:00Z`, `2026-11-01` (midnight UTC) or an age such as `7d`
/// (that long before `now`).
///
/// # Errors
/// [`WhenError`] naming the accepted forms.
pub fn parse_when(text: &str, now: Timestamp) -> Result<Timestamp, WhenError> {
    parse_when_in(text, now, &TimeZone::UTC)
}

/// [`parse_when`] with times written without an offset taken in `zone` (`--tz`): a
/// date is its midnight there, and `2026-11-01T09:00` its 09:00 there. A time with an
/// offset or `Z` means just that, whatever the zone.
///
/// # Errors
/// [`WhenError`] naming the accepted forms.
pub fn parse_when_in(text: &str, now: Timestamp, zone: &TimeZone) -> Result<Timestamp, WhenError> {
    let err = || WhenError { text: text.to_owned() };
    let s = text.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    // A time of day first: a date's parser would take `2026-11-01T09:00` as its date.
    if s.contains(['T', 't', ' '])
        && let Ok(civil) = s.parse::<jiff::civil::DateTime>()
    {
        return civil.to_zoned_datetime(zone.clone()).map(|z| z.timestamp()).map_err(|_| err());
    }
    if let Ok(d) = s.parse::<Date>() {
        return d.to_zoned_datetime(zone.clone()).map(|z| z.timestamp()).map_err(|_| err());
    }
    let age = crate::duration::parse_duration(s).map_err(|_| err())?;
    let age = jiff::SignedDuration::try_from(age).map_err(|_| err())?;
    now.checked_sub(age).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        assert_eq!(parse_when("90m", now).unwrap().to_string(), "2026-11-25T10:30:00Z");
        assert_eq!(parse_when("7d", now).unwrap().to_string(), "2026-11-18T12:00:00Z");
        assert_eq!(parse_when("2026-11-01", now).unwrap().to_string(), "2026-11-01T00:00:00Z");
        assert_eq!(parse_when("2026-11-01T09:00:00+01:00", now).unwrap().to_string(), "2026-11-01T08:00:00Z");
        assert!(parse_when("last week", now).is_err());
        assert_eq!(parse_when("2026-11-01T09:00", now).unwrap().to_string(), "2026-11-01T09:00:00Z");
    }

    #[test]
    fn a_zone_places_dates_and_times_without_an_offset() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(parse_when_in("2026-11-01", now, &berlin).unwrap().to_string(), "2026-10-31T23:00:00Z");
        assert_eq!(parse_when_in("2026-07-01T09:30", now, &berlin).unwrap().to_string(), "2026-07-01T07:30:00Z");
        assert_eq!(parse_when_in("2026-11-01T09:00:00Z", now, &berlin).unwrap().to_string(), "2026-11-01T09:00:00Z");
        assert_eq!(parse_when_in("7d", now, &berlin).unwrap().to_string(), "2026-11-18T12:00:00Z");
    }
}
