//! The one place that turns an archive's location into a backend.
//!
//! A location comes from `--db`, `TFAUDIT_DB` or the config's `db =`:
//! - a plain path, `sqlite://PATH` or `sqlite:PATH` is a SQLite archive (a path that
//!   worked before still opens the same file);
//! - `postgres://…` or `postgresql://…` (a libpq URL) is a PostgreSQL archive.
//!
//! Commands ask for a [`Mode`] and get an `Arc<dyn Store>`; none of them names a
//! backend type. A location prints (`Display`, `Debug`) without its password.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tfaudit_store::{Store, StoreError};
use tfaudit_store_sqlite::{OpenMode, SqliteStore};

/// What a command needs of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create the archive when there is none: `sync`, `watch`, `serve`, `alerts run`.
    CreateIfMissing,
    /// Write to an archive that must exist: the `alerts` commands that read and write.
    MustExist,
    /// Only read, never write, and fail when there is no archive: `query`, `export`,
    /// `summary`, `status`.
    ReadOnly,
    /// As [`Mode::CreateIfMissing`], for the commands that run until stopped and retry
    /// (`watch`, `serve`): a database server that does not answer yet is waited for
    /// (the archive opens, and calls fail as unreachable until the server answers)
    /// instead of being an error. A SQLite file is opened as with `CreateIfMissing`.
    CreateWhenReachable,
}

/// Where an archive is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL. Its password (in the URL's user part, or as a
/// `password=` parameter) is registered as a secret and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    /// The URL as shown: the password replaced by `***`.
    shown: String,
}

impl PostgresUrl {
    /// The whole URL, password included, for the one call that connects.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// Whether the URL carries a password (in its user part or as `password=`).
    #[must_use]
    pub fn has_password(&self) -> bool {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = before_query.split('/').next().unwrap_or("");
        let in_user = authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':'));
        in_user || form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "password")
    }

    /// The URL with `password` as its `password=` parameter, unless it has one of its
    /// own (the URL's wins). The password joins the redaction list.
    #[must_use]
    pub fn or_password(&self, password: &str) -> Self {
        if self.has_password() {
            return self.clone();
        }
        tfaudit_model::redact::register(password);
        let encoded: String =
            form_urlencoded::Serializer::new(String::new()).append_pair("password", password).finish();
        let separator = if self.url.contains('?') { '&' } else { '?' };
        Self { url: format!("{}{separator}{encoded}", self.url), shown: self.shown.clone() }
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&url.shown).finish(),
        }
    }
}

impl Location {
    /// Reads a location as the user wrote it.
    ///
    /// # Errors
    /// [`StoreError::InvalidLocation`] for an empty location, a `sqlite:` URL without
    /// a path, a PostgreSQL URL that does not parse, or another `scheme://`.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let invalid = |shown: &str, reason: &str| StoreError::InvalidLocation {
            location: if shown.is_empty() { "\"\"".into() } else { shown.to_owned() },
            reason: reason.to_owned(),
        };
        if text.trim().is_empty() {
            return Err(invalid(text, "it is empty; give a file path or a postgres:// URL"));
        }
        let scheme = scheme(text);
        match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some("postgres" | "postgresql") => Ok(Self::Postgres(postgres_url(text)?)),
            Some("sqlite") => {
                let rest = &text[scheme.map_or(0, str::len) + 1..];
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(invalid(text, "a sqlite: location needs a path: sqlite:///var/lib/tfaudit/archive.db"));
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            Some(other) if text[other.len()..].starts_with("://") => {
                // Shown up to the scheme only: the rest may hold credentials.
                Err(invalid(
                    &format!("{other}://…"),
                    "tfaudit keeps archives in SQLite (a path, or sqlite://PATH) or PostgreSQL (postgres://…)",
                ))
            }
            // `name:thing` without `//` is a file name with a colon in it.
            _ => Ok(Self::Sqlite(PathBuf::from(text))),
        }
    }

    /// Reads a location given as a command-line argument or a config value, which may
    /// be a path that is not UTF-8 (then it can only be a file).
    ///
    /// # Errors
    /// As [`Location::parse`].
    pub fn from_os(text: &OsStr) -> Result<Self, StoreError> {
        match text.to_str() {
            Some(t) => Self::parse(t),
            None => Ok(Self::Sqlite(PathBuf::from(text))),
        }
    }

    /// The file of a SQLite archive.
    #[must_use]
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }

    /// A SQLite path relative to `base` (a config file's folder) when it is relative;
    /// anything else as it is.
    #[must_use]
    pub fn relative_to(self, base: &Path) -> Self {
        match self {
            Self::Sqlite(p) if p.is_relative() => Self::Sqlite(base.join(p)),
            other => other,
        }
    }

    /// Opens the archive here.
    ///
    /// # Errors
    /// The backend's [`StoreError`], each with the fix in its message.
    pub fn open(&self, mode: Mode) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            Self::Sqlite(path) => {
                let mode = match mode {
                    Mode::CreateIfMissing | Mode::CreateWhenReachable => OpenMode::CreateIfMissing,
                    Mode::MustExist => OpenMode::MustExist,
                    Mode::ReadOnly => OpenMode::ReadOnly,
                };
                Ok(Arc::new(SqliteStore::open(path, mode)?))
            }
            Self::Postgres(url) => open_postgres(url, mode),
        }
    }
}

/// Opens a PostgreSQL archive. Read-only opening never creates or migrates the schema.
fn open_postgres(url: &PostgresUrl, mode: Mode) -> Result<Arc<dyn Store>, StoreError> {
    use tfaudit_store_postgres::PostgresStore;
    Ok(Arc::new(match mode {
        Mode::CreateWhenReachable => PostgresStore::open_when_reachable(url.expose())?,
        _ => PostgresStore::open(url.expose(), mode == Mode::ReadOnly)?,
    }))
}

/// Opens the archive at `location` (a path, `sqlite://PATH`, or `postgres://…`).
///
/// # Errors
/// [`StoreError::InvalidLocation`] for a location that cannot be read, else the
/// backend's error.
pub fn open(location: &str, mode: Mode) -> Result<Arc<dyn Store>, StoreError> {
    Location::parse(location)?.open(mode)
}

/// The URL scheme `text` starts with (`scheme:`), if any: a letter, then letters,
/// digits, `+`, `-` or `.`, then a colon.
fn scheme(text: &str) -> Option<&str> {
    let end = text.find(':')?;
    let s = &text[..end];
    let mut chars = s.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .then_some(s)
}

fn postgres_url(text: &str) -> Result<PostgresUrl, StoreError> {
    let scheme = scheme(text).unwrap_or("postgres");
    let shown = tfaudit_model::redact::url_without_password(text).map_err(|e| StoreError::InvalidLocation {
        // Nothing of an unreadable URL is shown: where its password is cannot be told.
        location: format!("{scheme}://…"),
        reason: format!("not a PostgreSQL URL ({e}); write postgres://USER@HOST:PORT/DATABASE"),
    })?;
    Ok(PostgresUrl { url: text.to_owned(), shown: shown.into_owned() })
}

#[cfg(test)]
mod tests;
