//! The access token. Off on loopback (the default); required beyond it: as a bearer
//! token for the API, or as the password of HTTP basic authentication for the
//! dashboard (any user name), which every browser can send.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::AppState;

/// Compares without leaking how much matched through timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented(request: &Request) -> Option<Vec<u8>> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.trim().as_bytes().to_vec());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Whether the request presented the access token (or none is configured): the
/// health checks answer everyone, but tell details only to those who did.
#[derive(Debug, Clone, Copy)]
pub struct Authorized(pub bool);

pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let authorized = match &state.access_token {
        None => true,
        Some(token) => presented(&request).is_some_and(|given| same(&given, token.expose().as_bytes())),
    };
    let path = request.uri().path();
    if authorized || path == "/healthz" || path == "/readyz" {
        request.extensions_mut().insert(Authorized(authorized));
        return next.run(request).await;
    }
    // Programs (the API, Prometheus) get a bearer challenge; browsers a password prompt.
    let program = path.starts_with("/api/") || path == "/metrics";
    let challenge = if program { "Bearer realm=\"tfaudit\"" } else { "Basic realm=\"tfaudit\", charset=\"UTF-8\"" };
    let mut response = if program {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "an access token is required (Authorization: Bearer ...)"})),
        )
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "an access token is required: give it as the password").into_response()
    };
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
