//! Where each day goes: Hive-style partitions that Athena, Trino, Spark and DuckDB
//! read as the columns `organization` and `date`.

use jiff::civil::Date;

/// The manifest's name under the prefix.
pub const MANIFEST: &str = "manifest.json";

/// The day file's name inside its partition.
pub const DAY_FILE: &str = "events.parquet";

/// A source name as a partition value: ASCII letters, digits, `.`, `_` and `-` as they
/// are, every other byte of its UTF-8 as `%XX` (upper-case hex), as Hive escapes
/// partition values. So `/`, `=`, `:` and spaces can never split or fake a partition,
/// and the encoding is reversible ([`decode_segment`]).
#[must_use]
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name [`encode_segment`] encoded; `None` for text it cannot have written.
#[must_use]
pub fn decode_segment(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// A day's object, relative to the prefix:
/// `organization=<encoded name>/date=<YYYY-MM-DD>/events.parquet`.
#[must_use]
pub fn day_path(organization: &str, day: Date) -> String {
    format!("organization={}/date={}/{DAY_FILE}", encode_segment(organization), day_key(day))
}

/// A day as the manifest and the partitions write it: `YYYY-MM-DD`.
#[must_use]
pub fn day_key(day: Date) -> String {
    day.strftime("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_hive_partitions() {
        let day = jiff::civil::date(2026, 11, 5);
        assert_eq!(day_path("acme", day), "organization=acme/date=2026-11-05/events.parquet");
        assert_eq!(day_path("acme-eu.prod_1", day), "organization=acme-eu.prod_1/date=2026-11-05/events.parquet");
        // The default name of an organization is its address's host, with a port.
        assert_eq!(day_path("127.0.0.1:8700", day), "organization=127.0.0.1%3A8700/date=2026-11-05/events.parquet");
    }

    #[test]
    fn unsafe_characters_are_percent_encoded_and_come_back() {
        for (name, encoded) in [
            ("a/b", "a%2Fb"),
            ("x=y", "x%3Dy"),
            ("a b", "a%20b"),
            ("50%", "50%25"),
            ("..", ".."),
            ("ÄB", "%C3%84B"),
            ("a*?#\\", "a%2A%3F%23%5C"),
        ] {
            assert_eq!(encode_segment(name), encoded);
            assert_eq!(decode_segment(encoded).as_deref(), Some(name));
        }
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("%ZZ"), None);
        // Whatever the name, the day's path has exactly three segments.
        assert_eq!(day_path("../../etc", jiff::civil::date(2026, 1, 1)).split('/').count(), 3);
    }
}
