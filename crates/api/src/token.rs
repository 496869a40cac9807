//! The bearer token. It can be read only through [`Token::expose`], and nothing that
//! formats a `Token` (Debug, errors, logs, panics) ever shows its characters.

use std::fmt;
use std::sync::Arc;

/// An HCP Terraform organization or audit trail token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

/// Why a string cannot be used as a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token contains whitespace or control characters, which cannot be sent in a header")]
    BadCharacters,
}

impl Token {
    /// Checks and wraps a token. Surrounding whitespace (a trailing newline in a token
    /// file) is removed.
    ///
    /// # Errors
    /// [`TokenError`] when the token is empty or could not be sent in an HTTP header.
    pub fn new(value: &str) -> Result<Self, TokenError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(TokenError::Empty);
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
            return Err(TokenError::BadCharacters);
        }
        crate::redact::register(value);
        Ok(Self(Arc::from(value)))
    }

    /// The token's characters, for the `Authorization` header only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token::new("abc.atlasv1.secretsecret\n").unwrap();
        assert_eq!(t.expose(), "abc.atlasv1.secretsecret");
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!format!("{:?}", Some(t.clone())).contains("secret"));
    }

    #[test]
    fn rejects_what_a_header_cannot_carry() {
        assert_eq!(Token::new("  \n"), Err(TokenError::Empty));
        assert_eq!(Token::new("ab cd"), Err(TokenError::BadCharacters));
        assert_eq!(Token::new("ab\u{7}cd"), Err(TokenError::BadCharacters));
    }
}
