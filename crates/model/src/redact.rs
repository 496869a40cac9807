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

/// What replaces a password in a URL that is shown.
pub const MASKED_PASSWORD: &str = "***";

/// A URL as it may be shown: its password (in the user part, or a `password=`
/// parameter, as libpq URLs allow) replaced by `***`. Each password is registered as
/// a secret, percent-encoded (as the URL holds it) and decoded (as a server or driver
/// may echo it), so that it is hidden wherever else it turns up.
///
/// # Errors
/// When `text` is not a URL (then where a password would be cannot be told).
pub fn url_without_password(text: &str) -> Result<Cow<'_, str>, url::ParseError> {
    let mut url = url::Url::parse(text)?;
    let mut found = false;
    if let Some(password) = url.password().filter(|p| !p.is_empty()) {
        register_url_password(password);
        found = true;
        // Cannot fail: a URL with a password has a host.
        let _ = url.set_password(Some(MASKED_PASSWORD));
    }
    let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if pairs.iter().any(|(k, v)| k == "password" && !v.is_empty()) {
        let masked: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                if k == "password" && !v.is_empty() {
                    register(&v);
                    (k, MASKED_PASSWORD.to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
        found = true;
        url.query_pairs_mut().clear().extend_pairs(masked);
    }
    Ok(if found { Cow::Owned(url.to_string()) } else { Cow::Borrowed(text) })
}

fn register_url_password(encoded: &str) {
    register(encoded);
    if let Ok(decoded) = percent_encoding::percent_decode_str(encoded).decode_utf8() {
        register(&decoded);
    }
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
    fn a_url_is_shown_without_its_password() {
        let shown = url_without_password("postgres://u:URLPW%40one@h:5432/db?sslmode=require").unwrap();
        assert_eq!(shown, "postgres://u:***@h:5432/db?sslmode=require");
        let shown = url_without_password("postgres://u@h/db?password=URLPW-two&sslmode=verify-full").unwrap();
        assert!(!shown.contains("URLPW") && shown.contains("password=***"), "{shown}");
        assert!(!redact("URLPW@one and URLPW%40one and URLPW-two").contains("URLPW"));
        assert_eq!(url_without_password("postgres://u@h/db").unwrap(), "postgres://u@h/db");
        assert!(url_without_password("not a url").is_err());
    }

    #[test]
    fn leaves_other_text_alone_and_bounds_length() {
        register("abc");
        assert_eq!(redact("abc def"), "abc def");
        assert_eq!(redact_bounded(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
    }
}
