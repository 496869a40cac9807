//! tfaudit's HTTP side, read-only: a JSON API (`/api/...`, described at
//! `/api/openapi.json`), a server-rendered dashboard that needs no CDN and no
//! script, health checks (`/healthz`, `/readyz`), and Prometheus metrics on a
//! listener of their own.
//!
//! Every event string is untrusted: HTML is escaped by the template engine, the
//! pages carry a strict Content-Security-Policy, and filter values reach SQL only as
//! bound parameters (in the store).

mod api;
mod auth;
mod dashboard;
mod filter;
pub mod health;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tfaudit_config::Secret;
use tfaudit_store::Store;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use health::Health;
pub use metrics::Metrics;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// Required of every request but the health checks, when set.
    pub access_token: Option<Secret>,
    templates: Arc<minijinja::Environment<'static>>,
}

impl AppState {
    #[must_use]
    pub fn new(
        store: Arc<dyn Store>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        access_token: Option<Secret>,
    ) -> Self {
        Self { store, health, metrics, access_token, templates: Arc::new(dashboard::templates()) }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "listening on {0} would expose the archive beyond this machine without an access token; set [serve] access_token \
         (or TFAUDIT_ACCESS_TOKEN), or listen on 127.0.0.1"
    )]
    Exposed(SocketAddr),
    #[error("cannot listen on {addr}: {cause}; pick another address (--listen / --metrics-listen)")]
    Bind { addr: SocketAddr, cause: String },
}

/// The longest request target accepted; filters are short.
const MAX_URI: usize = 4096;

/// The main listener's routes.
pub fn router(state: AppState) -> Router {
    let api = api::routes();
    let pages = dashboard::routes();
    Router::new()
        .merge(api)
        .merge(pages)
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(middleware::from_fn(guard))
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)))
        .with_state(state)
}

/// The metrics listener's routes.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", axum::routing::get(metrics::scrape)).with_state(state)
}

/// Rejects what no read-only API needs, and sets the headers every answer carries.
async fn guard(request: Request, next: Next) -> Response {
    if request.uri().to_string().len() > MAX_URI {
        return (StatusCode::URI_TOO_LONG, "request target too long").into_response();
    }
    if !matches!(request.method().as_str(), "GET" | "HEAD") {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")], "tfaudit serve is read-only")
            .into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // No script at all, styles only from this server, no framing, forms only here.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.http_request(&route, response.status().as_u16());
    response
}

/// Whether an address can be reached only from this machine.
#[must_use]
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Binds both listeners and serves until `cancel`; in-flight requests finish first.
///
/// # Errors
/// [`ServeError`] when an address is taken, or would expose the archive without a
/// token.
pub async fn serve(
    state: AppState,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    cancel: CancellationToken,
) -> Result<(SocketAddr, Option<SocketAddr>, tokio::task::JoinHandle<()>), ServeError> {
    if !is_loopback(&listen) && state.access_token.is_none() {
        return Err(ServeError::Exposed(listen));
    }
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Bind { addr, cause: e.to_string() })
    };
    let main = bind(listen).await?;
    let main_addr = main.local_addr().map_err(|e| ServeError::Bind { addr: listen, cause: e.to_string() })?;
    let metrics = match metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let app = router(state.clone());
    let metrics_app = metrics_router(state);
    let task = tokio::spawn(async move {
        let stop = cancel.clone();
        let main_server = axum::serve(main, app).with_graceful_shutdown(async move { stop.cancelled().await });
        let metrics_server = async move {
            if let Some(listener) = metrics {
                let _ = axum::serve(listener, metrics_app)
                    .with_graceful_shutdown(async move { cancel.cancelled().await })
                    .await;
            }
        };
        let (main_result, ()) = tokio::join!(main_server, metrics_server);
        if let Err(e) = main_result {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    Ok((main_addr, metrics_addr, task))
}
