//! Sizes as people write them: `64MiB`, `500KB`, `1048576`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes that prints the way it parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a size; write a number of bytes, optionally with a unit, such as 64MiB, 500KB or 1048576")]
pub struct ByteSizeError {
    text: String,
}

const UNITS: [(&str, u64); 7] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = ByteSizeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ByteSizeError { text: text.to_owned() };
        let s = text.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = s[..digits].parse().map_err(|_| err())?;
        let unit = s[digits..].trim();
        let size = if unit.is_empty() { 1 } else { UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(err)?.1 };
        n.checked_mul(size).map(Self).ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = UNITS.iter().find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size));
        match unit {
            Some((u, size)) if *size > 1 => write!(f, "{}{u}", self.0 / size),
            _ => write!(f, "{}", self.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Number(n) => Ok(Self(n)),
            Written::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        for (text, bytes) in
            [("64MiB", 64 << 20), ("500KB", 500_000), ("1048576", 1 << 20), ("2 GiB", 2 << 30), ("7B", 7)]
        {
            assert_eq!(text.parse::<ByteSize>().unwrap().0, bytes, "{text}");
        }
        for bad in ["", "MiB", "1.5MiB", "-1", "10 furlongs", "99999999999GiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1234).to_string(), "1234");
    }
}
