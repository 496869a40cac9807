//! Names for ids from an organization's listings (`enrich_token`), refreshed when due.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tfaudit_api::{ApiError, Client};
use tfaudit_store::{Catalogue, Listing, ListingOutcome, StoreError, blocking_on};

/// How one organization's names are read: a client with its organization token.
#[derive(Debug, Clone)]
pub struct Enrichment {
    pub client: Client,
    /// The organization's name in HCP Terraform.
    pub organization: String,
    /// How often the listings are read again.
    pub every: Duration,
}

/// What one refresh did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Refreshed {
    /// How many names the listings held.
    pub listed: u64,
    #[serde(flatten)]
    pub changes: ListingOutcome,
    /// Listings the token could not read, each with why.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("reading the names of {source_name:?}: {}", match error {
        ApiError::Unauthorized { address } => format!(
            "{address} rejected the enrich_token (401 Unauthorized); give an organization token \
             (Organization settings > API tokens): audit trail tokens read only the audit trail"
        ),
        other => other.to_string(),
    })]
    Api { source_name: String, error: ApiError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the listings of `source` and records them, when the last read is older than
/// `every` (or `force`). `None`: not due.
///
/// # Errors
/// [`EnrichError`]: the listings could not be read or recorded; what the catalogue held
/// stays.
pub async fn refresh_names<S: Catalogue + ?Sized + 'static>(
    store: Arc<S>,
    source: &str,
    enrichment: &Enrichment,
    force: bool,
) -> Result<Option<Refreshed>, EnrichError> {
    let name = source.to_owned();
    let last = blocking_on(&store, move |s| s.listed_at(&name)).await?;
    let due = last.is_none_or(|at| {
        let age = Timestamp::now().duration_since(at);
        Duration::try_from(age).is_ok_and(|age| age >= enrichment.every)
    });
    if !force && !due {
        return Ok(None);
    }
    let fetched = enrichment
        .client
        .fetch_catalogue(&enrichment.organization)
        .await
        .map_err(|error| EnrichError::Api { source_name: source.to_owned(), error })?;
    let listed = fetched.names.len() as u64;
    let name = source.to_owned();
    let names = fetched.names;
    let complete = fetched.complete;
    let changes = blocking_on(&store, move |s| {
        s.record_listing(&Listing { source: &name, at: Timestamp::now(), names: &names, complete: &complete })
    })
    .await?;
    Ok(Some(Refreshed { listed, changes, skipped: fetched.skipped }))
}
