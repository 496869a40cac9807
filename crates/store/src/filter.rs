//! Which events a query, export or summary reads.

use jiff::Timestamp;

/// A text match: exact, or a glob with `*` (any run of characters) and `?` (one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern has wildcards.
    #[must_use]
    pub fn is_glob(&self) -> bool {
        self.0.contains(['*', '?'])
    }

    /// The pattern as an SQL `LIKE` pattern with `\` as the escape character.
    #[must_use]
    pub fn to_like(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 4);
        for c in self.0.chars() {
            match c {
                '*' => out.push('%'),
                '?' => out.push('_'),
                '%' | '_' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out
    }

    /// Matches `text` against the pattern; `case_insensitive` folds ASCII case.
    #[must_use]
    pub fn matches(&self, text: &str, case_insensitive: bool) -> bool {
        fn go(p: &[char], t: &[char], ci: bool) -> bool {
            // Iterative glob match with single-star backtracking: linear in practice.
            let (mut pi, mut ti) = (0, 0);
            let (mut star, mut mark) = (None, 0);
            let eq = |a: char, b: char| {
                if ci { a.eq_ignore_ascii_case(&b) } else { a == b }
            };
            while ti < t.len() {
                if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
                    pi += 1;
                    ti += 1;
                } else if pi < p.len() && p[pi] == '*' {
                    star = Some(pi);
                    mark = ti;
                    pi += 1;
                } else if let Some(s) = star {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                } else {
                    return false;
                }
            }
            p[pi..].iter().all(|&c| c == '*')
        }
        let p: Vec<char> = self.0.chars().collect();
        let t: Vec<char> = text.chars().collect();
        go(&p, &t, case_insensitive)
    }
}

/// Conditions on events; all that are set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// Accessor id or accessor description (user name), case-insensitive glob.
    pub actor: Option<Pattern>,
    /// `resource.type`, glob.
    pub resource_type: Option<Pattern>,
    /// `resource.action`, glob.
    pub action: Option<Pattern>,
    /// `resource.id`, glob.
    pub resource_id: Option<Pattern>,
    /// Source name or organization id, glob.
    pub org: Option<Pattern>,
    /// Text anywhere in the event's JSON, case-insensitive (ASCII).
    pub text: Option<String>,
    /// Keyset paging, newest first: only events strictly before this (timestamp,
    /// ingest sequence) position. Stable while events are added.
    pub before: Option<(jiff::Timestamp, i64)>,
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escapes_sql_wildcards() {
        assert_eq!(Pattern::new("user-*_x%\\?").to_like(), "user-%\\_x\\%\\\\_");
    }

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
    }
}
