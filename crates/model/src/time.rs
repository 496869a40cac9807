//! Timestamps as the API writes and reads them.

use jiff::Timestamp;

/// Formats a `since` value the way HCP Terraform's own clients send it:
/// UTC with milliseconds, `2020-05-30T17:52:46.000Z`.
#[must_use]
pub fn format_since(t: Timestamp) -> String {
    format!("{}", t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// Parses an event timestamp. The API sends `2020-06-30T17:52:46.000Z`; any RFC 3339
/// form with an offset is accepted.
///
/// # Errors
/// When the text is not an RFC 3339 timestamp with an offset.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, jiff::Error> {
    text.trim().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_has_milliseconds_and_z() {
        let t: Timestamp = "2020-05-30T17:52:46Z".parse().unwrap();
        assert_eq!(format_since(t), "2020-05-30T17:52:46.000Z");
    }

    #[test]
    fn parses_the_documented_forms() {
        for s in ["2020-06-30T17:52:46.000Z", "2020-06-30T17:52:46Z", "2020-06-30T19:52:46+02:00"] {
            assert_eq!(parse_timestamp(s).unwrap().as_second(), 1_593_539_566, "{s}");
        }
        assert!(parse_timestamp("yesterday").is_err());
    }
}
