//! Durations as people write them: `500ms`, `90s`, `10m`, `1h30m`, `7d`, `2w`.

use std::fmt;
use std::str::FromStr;

/// A non-negative duration that prints the way it parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a duration; write a number and a unit, such as 90s, 10m, 1h30m, 7d")]
pub struct DurationError {
    text: String,
}

/// Parses `1h30m`-style durations. Units: ms, s, m, h, d (24 h), w (7 d).
///
/// # Errors
/// [`DurationError`] naming the accepted forms.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, DurationError> {
    let err = || DurationError { text: text.to_owned() };
    let s = text.trim();
    if s.is_empty() {
        return Err(err());
    }
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms: u128 = match rest[..unit_len].trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms).ok_or_else(err)?).ok_or_else(err)?;
    }
    let ms = u64::try_from(total_ms).map_err(|_| err())?;
    Ok(std::time::Duration::from_millis(ms))
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn forms() {
        assert_eq!(parse_duration("90m").unwrap(), D::from_secs(5400));
        assert_eq!(parse_duration("1h30m").unwrap(), D::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), D::from_secs(7 * 86400));
        assert_eq!(parse_duration("2w").unwrap(), D::from_secs(14 * 86400));
        assert_eq!(parse_duration("250ms").unwrap(), D::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), D::ZERO);
        for bad in ["", "60", "m", "5 minutes", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["10m", "1h30m", "14d", "1d1h1m1s1ms", "0s"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
    }
}
