//! Reading a response body from a server that may lie about its size or never end:
//! the body is read in chunks and given up once it passes a cap, so memory stays
//! bounded whatever the server sends.

use bytes::{Bytes, BytesMut};

/// The default cap on an audit trail page: a page of 1,000 events is a few MB; 64 MiB
/// leaves room for events with large `meta` without letting a server exhaust memory.
pub const DEFAULT_PAGE_CAP: u64 = 64 * 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response body is larger than the limit of {cap} bytes{}", declared_note(.declared))]
    TooLarge { cap: u64, declared: Option<u64> },
    #[error("the response body was cut short: {0}")]
    Transport(String),
}

fn declared_note(declared: &Option<u64>) -> String {
    declared.map(|d| format!(" (the server declared {d} bytes)")).unwrap_or_default()
}

/// Reads the whole body, failing as soon as it passes `cap` bytes (or declares more).
///
/// # Errors
/// [`BodyError::TooLarge`] past the cap; [`BodyError::Transport`] when the connection fails.
pub async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Bytes, BodyError> {
    let declared = response.content_length();
    if let Some(d) = declared
        && d > cap
    {
        return Err(BodyError::TooLarge { cap, declared });
    }
    let mut body = BytesMut::with_capacity(declared.map_or(8 * 1024, |d| d.min(cap) as usize));
    while let Some(chunk) = response.chunk().await.map_err(|e| BodyError::Transport(crate::client::error_chain(&e)))? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(BodyError::TooLarge { cap, declared });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads at most `max` bytes of the body and drops the rest: for error bodies, which
/// are only ever shown in part.
pub async fn read_prefix(mut response: reqwest::Response, max: usize) -> Bytes {
    let mut body = BytesMut::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(max - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    body.freeze()
}
