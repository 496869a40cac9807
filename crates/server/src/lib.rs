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
mod listener;
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
    /// The zone the dashboard shows times in (`[display] timezone`); UTC by default.
    pub zone: jiff::tz::TimeZone,
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
        Self {
            store,
            health,
            metrics,
            access_token,
            zone: jiff::tz::TimeZone::UTC,
            templates: Arc::new(dashboard::templates()),
        }
    }

    /// Times on the dashboard shown in `zone`.
    #[must_use]
    pub fn with_zone(self, zone: jiff::tz::TimeZone) -> Self {
        Self { zone, ..self }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{which} on {addr} would expose the archive beyond this machine without an access token; set [serve] access_token \
         (or TFAUDIT_ACCESS_TOKEN), or listen on 127.0.0.1"
    )]
    Exposed { which: &'static str, addr: SocketAddr },
    #[error("the access token is too short: use at least {MIN_TOKEN} characters, such as `openssl rand -hex 24`")]
    ShortToken,
    #[error("[serve] {0} must be more than 0")]
    Zero(&'static str),
    #[error("[serve] max_connections must be at most {MAX_CONNECTIONS}")]
    TooManyConnections,
    #[error("cannot listen on {addr}: {cause}; pick another address (--listen / --metrics-listen)")]
    Bind { addr: SocketAddr, cause: String },
}

/// The most `max_connections` may be: far beyond any file descriptor limit.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// The shortest access token accepted: anything shorter is guessable.
pub const MIN_TOKEN: usize = 16;

/// What keeps one client from holding the service: every connection costs a file
/// descriptor, and the archive and the health checks need theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must arrive within this, counted from when the
    /// connection starts waiting for them (so it also ends a kept-alive connection
    /// that sends no next request).
    pub header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed (a
    /// request in flight first gets as long again to finish).
    pub idle_timeout: Duration,
    /// Connections open at once, per listener; more are closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60), max_connections: 128 }
    }
}

/// Where and how `serve` listens. [`Options::check`] is the one judge of these
/// settings, for `serve` and `config check` alike.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// None: no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
    pub access_token: Option<Secret>,
    pub limits: Limits,
    /// The zone the dashboard shows times in (`[display] timezone`, `--tz`).
    pub zone: jiff::tz::TimeZone,
}

impl Options {
    /// Refuses what would expose the archive or cannot work.
    ///
    /// # Errors
    /// [`ServeError`], naming the fix.
    pub fn check(&self) -> Result<(), ServeError> {
        if self.access_token.as_ref().is_some_and(|t| t.expose().chars().count() < MIN_TOKEN) {
            return Err(ServeError::ShortToken);
        }
        exposure("the dashboard and API (listen)", self.listen, self.access_token.as_ref())?;
        if let Some(addr) = self.metrics_listen {
            exposure("the metrics listener (metrics_listen)", addr, self.access_token.as_ref())?;
        }
        if self.limits.header_timeout.is_zero() {
            return Err(ServeError::Zero("header_timeout"));
        }
        if self.limits.idle_timeout.is_zero() {
            return Err(ServeError::Zero("idle_timeout"));
        }
        if self.limits.max_connections == 0 {
            return Err(ServeError::Zero("max_connections"));
        }
        if self.limits.max_connections > MAX_CONNECTIONS {
            return Err(ServeError::TooManyConnections);
        }
        Ok(())
    }
}

/// The one access rule of every listener: beyond loopback only with a token.
fn exposure(which: &'static str, addr: SocketAddr, token: Option<&Secret>) -> Result<(), ServeError> {
    if !is_loopback(&addr) && token.is_none() {
        return Err(ServeError::Exposed { which, addr });
    }
    Ok(())
}

/// The longest request target accepted: room for every filter at its longest
/// (`MAX_FILTER` characters), percent-encoded.
const MAX_URI: usize = 16 * 1024;

/// The main listener's routes.
pub fn router(state: AppState) -> Router {
    let api = api::routes();
    let pages = dashboard::routes();
    Router::new()
        .merge(api)
        .merge(pages)
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(middleware::from_fn(guard))
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)))
        .layer(middleware::from_fn(api::errors_as_json))
        .with_state(state)
}

/// The metrics listener's routes, under the same access rule and guard as the main
/// listener's.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics::scrape))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn(guard))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(30)))
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such page").into_response()
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
/// [`ServeError`] when an address is taken, or the options are refused by
/// [`Options::check`].
pub async fn serve(
    state: AppState,
    options: &Options,
    cancel: CancellationToken,
) -> Result<(SocketAddr, Option<SocketAddr>, tokio::task::JoinHandle<()>), ServeError> {
    options.check()?;
    let bind = |addr: SocketAddr| async move {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Bind { addr, cause: e.to_string() })?;
        let local = listener.local_addr().map_err(|e| ServeError::Bind { addr, cause: e.to_string() })?;
        Ok::<_, ServeError>((listener, local))
    };
    let (main, main_addr) = bind(options.listen).await?;
    let metrics = match options.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|(_, a)| *a);
    let app = router(state.clone());
    let metrics_app = metrics_router(state);
    let limits = options.limits;
    let task = tokio::spawn(async move {
        let main_server = listener::run(main, app, limits, cancel.clone());
        let metrics_server = async move {
            if let Some((listener, _)) = metrics {
                listener::run(listener, metrics_app, limits, cancel).await;
            }
        };
        tokio::join!(main_server, metrics_server);
    });
    Ok((main_addr, metrics_addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_call_the_store_only_on_blocking_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            tfaudit_store_sqlite::SqliteStore::open(
                &dir.path().join("archive.db"),
                tfaudit_store_sqlite::OpenMode::CreateIfMissing,
            )
            .unwrap(),
        );
        // The guard panics in a handler that calls the archive on an async thread,
        // and the panic reaches this test through `oneshot`.
        let state = AppState::new(
            tfaudit_store::Guarded::wrap(store),
            Arc::new(Health::new(Vec::new())),
            Arc::new(Metrics::new()),
            None,
        );
        let (app, metrics) = (router(state.clone()), metrics_router(state));
        for (router, path, expected) in [
            (&app, "/api/events", StatusCode::OK),
            (&app, "/api/events/e1", StatusCode::NOT_FOUND),
            (&app, "/api/summary", StatusCode::OK),
            (&app, "/api/status", StatusCode::OK),
            (&app, "/api/alerts", StatusCode::OK),
            (&app, "/", StatusCode::OK),
            (&app, "/events/e1", StatusCode::NOT_FOUND),
            (&app, "/events/e1/around", StatusCode::NOT_FOUND),
            (&app, "/actors/user-1", StatusCode::OK),
            (&app, "/resources/ws-1", StatusCode::OK),
            (&app, "/?actor=alice&resource_id=prod", StatusCode::OK),
            (&app, "/alerts", StatusCode::OK),
            (&app, "/status", StatusCode::OK),
            (&app, "/readyz", StatusCode::OK),
            (&metrics, "/metrics", StatusCode::OK),
        ] {
            let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), expected, "{path}");
        }
    }
}
