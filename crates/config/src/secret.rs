//! Secrets in the config (webhook URLs, routing keys, passwords): given inline, from
//! an environment variable, or from a file, and never shown by `Debug` or in errors.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
pub use tfaudit_model::Secret;

/// How the config gives a secret: `"value"`, `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SecretSource {
    Env { env: String },
    File { file: PathBuf },
    Inline(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env { env } => write!(f, "Env({env})"),
            Self::File { file } => write!(f, "File({})", file.display()),
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl SecretSource {
    /// Registers a value written in the config itself as a secret at once, so that
    /// even an error about a later setting cannot show it.
    pub fn register_inline(&self) {
        if let Self::Inline(v) = self {
            tfaudit_model::redact::register(v.trim());
        }
    }

    /// Reads the secret; `what` names it in errors ("destination slack: url").
    ///
    /// # Errors
    /// A message naming the variable or file, never the value.
    pub fn resolve(&self, what: &str) -> Result<Secret, String> {
        let value = match self {
            Self::Inline(v) => v.clone(),
            Self::Env { env } => {
                std::env::var(env).map_err(|_| format!("{what}: the environment variable {env} is not set"))?
            }
            Self::File { file } => std::fs::read_to_string(file)
                .map_err(|e| format!("{what}: cannot read {}: {e}", file.display()))?
                .trim()
                .to_owned(),
        };
        if value.trim().is_empty() {
            return Err(format!("{what} is empty"));
        }
        Ok(Secret::new(value.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = SecretSource::Inline("https://hooks.slack.com/services/T0/B0/SECRETPART".into());
        assert!(!format!("{s:?}").contains("SECRETPART"));
        let v = s.resolve("x").unwrap();
        assert!(!format!("{v:?}").contains("SECRETPART"));
        assert_eq!(v.expose(), "https://hooks.slack.com/services/T0/B0/SECRETPART");
        let e =
            SecretSource::Env { env: "TFAUDIT_TEST_SURELY_UNSET".into() }.resolve("destination d: url").unwrap_err();
        assert!(e.contains("TFAUDIT_TEST_SURELY_UNSET"));
    }
}
