//! Every secret tfaudit knows (tokens, destination URLs and keys, header values),
//! so that no error, log line or stored error text ever shows one.
//!
//! Secrets register themselves when they are read (the API client's `Token`, the
//! config's `Secret`); everything that turns text from outside into something
//! shown or stored passes it through [`redact`]. A process-wide list, because a
//! secret must be hidden wherever it turns up, including in a server's echo of
//! the request that carried it.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Shorter values are not hidden: replacing every "abc" would garble messages
/// while hiding nothing a guess would not find.
const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remembers a secret, and the forms in which a server may echo it: JSON-escaped,
/// percent-encoded, and (for a URL) its path and query and its password.
pub fn register(secret: &str) {
    let mut forms = vec![secret.to_owned()];
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_owned());
    }
    forms.push(percent_encode(secret));
    if let Ok(url) = url::Url::parse(secret)
        && url.has_host()
    {
        let mut tail = url.path().to_owned();
        if let Some(q) = url.query() {
            tail.push('?');
            tail.push_str(q);
        }
        // "/" alone or a short path like "/hook" is not the secret part of a URL.
        if tail.len() >= 12 {
            forms.push(tail.replace('/', "\\/"));
            forms.push(tail);
        }
        if let Some(password) = url.password() {
            forms.push(password.to_owned());
        }
    }
    let mut secrets = SECRETS.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    for form in forms {
        if form.len() >= MIN_LEN && !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a URL is hidden whole before its path is looked for.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The text with every registered secret replaced by `<redacted>`.
#[must_use]
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

/// Redacts, then bounds the text to `max` characters (stored error texts: a receiver
/// that echoes a megabyte must not put it into the archive).
#[must_use]
pub fn redact_bounded(text: &str, max: usize) -> String {
    let clean = redact(text);
    if clean.chars().count() <= max {
        return clean.into_owned();
    }
    let mut cut: String = clean.chars().take(max).collect();
    cut.push('…');
    cut
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_a_secret_and_its_echoed_forms() {
        register("https://hooks.example.test/services/T0/B0/REDACTTESTPART?x=1");
        register("tok-REDACTTEST.atlasv1.xyz");
        let text = "POST /services/T0/B0/REDACTTESTPART?x=1 with Authorization: Bearer tok-REDACTTEST.atlasv1.xyz \
                    url=https%3A%2F%2Fhooks.example.test%2Fservices%2FT0%2FB0%2FREDACTTESTPART%3Fx%3D1 \
                    json=\"https:\\/\\/hooks.example.test\\/services\\/T0\\/B0\\/REDACTTESTPART?x=1\"";
        let out = redact(text);
        assert!(!out.contains("REDACTTEST"), "{out}");
        assert!(out.contains("Authorization: Bearer <redacted>"), "{out}");
    }

    #[test]
    fn leaves_other_text_alone_and_bounds_length() {
        register("abc");
        assert_eq!(redact("abc def"), "abc def");
        assert_eq!(redact_bounded(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
    }
}
