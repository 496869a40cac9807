//! Which events a query, export or summary reads.

use jiff::Timestamp;

/// A text match: exact, or a glob with `*` (any run of characters) and `?` (one).
///
/// Matched by a regex automaton, in time linear in the text: untrusted event strings
/// can be megabytes long, and a backtracking glob takes time proportional to the text
/// times the pattern (seconds for `*AAAA…AB` over one large field).
#[derive(Clone)]
pub struct Pattern {
    text: String,
    exact: std::sync::OnceLock<Result<regex::Regex, String>>,
    folded: std::sync::OnceLock<Result<regex::Regex, String>>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Pattern").field(&self.text).finish()
    }
}

impl Pattern {
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), exact: std::sync::OnceLock::new(), folded: std::sync::OnceLock::new() }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has wildcards.
    #[must_use]
    pub fn is_glob(&self) -> bool {
        self.text.contains(['*', '?'])
    }

    /// Checks that the pattern can be matched (only an enormous one cannot).
    ///
    /// # Errors
    /// Why not, in a sentence.
    pub fn check(&self) -> Result<(), String> {
        self.regex(false).map(|_| ())
    }

    fn regex(&self, case_insensitive: bool) -> Result<&regex::Regex, String> {
        let cell = if case_insensitive { &self.folded } else { &self.exact };
        cell.get_or_init(|| {
            let mut re = String::with_capacity(self.text.len() * 2 + 8);
            re.push_str(if case_insensitive { "(?si)^" } else { "(?s)^" });
            for c in self.text.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
                }
            }
            re.push('$');
            regex::Regex::new(&re).map_err(|e| {
                format!("the pattern of {} characters is too large to match; use a shorter one ({e})", self.text.len())
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Matches `text` against the pattern, in time linear in `text`. A pattern that
    /// [`check`](Self::check) rejects matches nothing.
    #[must_use]
    pub fn matches(&self, text: &str, case_insensitive: bool) -> bool {
        self.regex(case_insensitive).is_ok_and(|re| re.is_match(text))
    }
}

/// Conditions on events; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// Accessor id or accessor description (user name), case-insensitive glob
    /// (Unicode simple case folding, as `text`).
    pub actor: Option<Pattern>,
    /// `resource.type`, glob.
    pub resource_type: Option<Pattern>,
    /// `resource.action`, glob.
    pub action: Option<Pattern>,
    /// `resource.id`, glob.
    pub resource_id: Option<Pattern>,
    /// Source name or organization id, case-insensitive glob.
    pub org: Option<Pattern>,
    /// Text anywhere in the event's JSON as received (SQLite does not decode escapes),
    /// case-insensitive by Unicode simple case folding (`É` finds `é`; `SS` is not `ß`).
    pub text: Option<String>,
    /// Keyset paging, newest first: only events strictly before this (timestamp,
    /// ingest sequence) position. Stable while events are added.
    pub before: Option<(jiff::Timestamp, i64)>,
    /// Only events made by someone impersonating the accessor (`auth.impersonator_id`
    /// set), found through the backends' index of impersonators rather than by reading
    /// every event: the compliance report lists them.
    pub impersonated: bool,
    /// Only events about a run that destroys (`resource.meta.run.is_destroy` is true,
    /// see [`tfaudit_model::event::is_destroy_run`]), told at ingest and found through the
    /// backends' index of them rather than by reading every run: the compliance report
    /// lists them.
    pub destroy_run: bool,
}

impl EventFilter {
    /// Whether only the time range and organization are set (so that precomputed
    /// counts can answer a summary).
    #[must_use]
    pub fn is_time_and_org_only(&self) -> bool {
        self.actor.is_none()
            && self.resource_type.is_none()
            && self.action.is_none()
            && self.resource_id.is_none()
            && self.text.is_none()
            && self.before.is_none()
            && !self.impersonated
            && !self.destroy_run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        let p = Pattern::new("user-*");
        assert!(p.matches("user-abc", false));
        assert!(!p.matches("team-abc", false));
        assert!(Pattern::new("*adm?n*").matches("the ADMIN user", true));
        assert!(!Pattern::new("*adm?n*").matches("the ADMIN user", false));
        assert!(Pattern::new("a*b*c").matches("aXXbYYc", false));
        assert!(!Pattern::new("a*b*c").matches("aXXbYY", false));
        assert!(Pattern::new("").matches("", false));
        assert!(Pattern::new("*").matches("", false));
        assert!(Pattern::new("a?c").matches("a\nc", false), "? is any character, a newline too");
        assert!(Pattern::new("x.+(y)[z]$^").matches("x.+(y)[z]$^", false), "regex syntax is literal");
        assert!(!Pattern::new("x.+").matches("xyy", false));
        assert!(Pattern::new("ÄB*").matches("äbc", true));
    }

    #[test]
    fn a_glob_over_a_large_field_is_linear_not_backtracking() {
        // The input that took a backtracking matcher 8 s: `*` + 2,000 × `A` + `B` over a
        // 5 MB field of `A`s. Correctness only; the time is in crates/cli/benches/alerts.rs.
        let pattern = Pattern::new(format!("*{}B", "A".repeat(2_000)));
        let mut field = "A".repeat(5_000_000);
        assert!(!pattern.matches(&field, false));
        assert!(!pattern.matches(&field, true));
        field.push('B');
        assert!(pattern.matches(&field, false));
        assert!(pattern.matches(&field.to_lowercase(), true));
    }
}
