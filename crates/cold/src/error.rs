//! Why a push failed.

use tfaudit_store::StoreError;

/// Errors of cold storage. No variant carries a credential: the messages name the
/// location and the setting to fix, never a key.
#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    /// The location or its settings cannot be used (a bad flag or config: exit 2).
    #[error("{0}")]
    Location(String),
    /// `--org` names no organization of the archive.
    #[error("the archive has no organization named {name:?}; it has: {known}")]
    UnknownOrganization { name: String, known: String },
    /// The manifest at the location is not one tfaudit wrote.
    #[error(
        "{location}/manifest.json is not a tfaudit manifest ({cause}); point --to (or TFAUDIT_ARCHIVE_TO, [archive] location) at a folder or prefix of its own"
    )]
    Manifest { location: String, cause: String },
    /// The object store refused the credentials (401, 403).
    #[error(
        "{location} refused the credentials ({cause}); check the access key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or [archive] access_key_id / secret_access_key) and the bucket's permissions"
    )]
    Denied { location: String, cause: String },
    /// The object store could not be reached or failed.
    #[error("cannot write to {location}: {cause}; check the location, the endpoint and that the bucket exists")]
    Storage { location: String, cause: String },
    /// A pruned day's copy is missing, altered or unreadable.
    #[error("{0}")]
    Copy(String),
    /// A day could not be written as Parquet (a bug).
    #[error("cannot write a day as Parquet: {0}")]
    Encode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ColdError {
    /// An object store's error at `location`, sorted by what the user can do about it.
    pub(crate) fn storage(location: &str, e: object_store::Error) -> Self {
        match e {
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                Self::Denied { location: location.to_owned(), cause: one_line(&e.to_string()) }
            }
            other => Self::Storage { location: location.to_owned(), cause: one_line(&other.to_string()) },
        }
    }
}

/// An error's text on one line, bounded: an object store's message can quote a whole
/// XML answer.
pub(crate) fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    tfaudit_model::redact::redact_bounded(&line, 500)
}
