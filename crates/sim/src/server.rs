//! The simulator's HTTP side.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::generate::{CatalogueEntry, default_catalogue};
use crate::listing::{ListedEvent, Listing};
use crate::{Faults, SimConfig};

/// One request as the simulator saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestRecord {
    pub since: Option<String>,
    pub page: u64,
    pub page_size: u64,
    pub status: u16,
    pub fault: Option<&'static str>,
    pub returned: u64,
}

/// Counts of what the simulator served.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {
    pub requests: u64,
    pub ok: u64,
    pub faults: u64,
    pub unauthorized: u64,
    pub not_found: u64,
    pub throttled: u64,
    pub live_events: u64,
    #[serde(skip)]
    pub recent: Vec<RequestRecord>,
}

struct Shared {
    config: SimConfig,
    listing: Mutex<Listing>,
    faults: Mutex<Faults>,
    rng: Mutex<SmallRng>,
    stats: Mutex<(SimStats, VecDeque<RequestRecord>)>,
    live_on: AtomicBool,
    window: Mutex<(i64, u32)>,
    /// The organization's listings (workspaces, teams, memberships…).
    catalogue: Mutex<Vec<CatalogueEntry>>,
    /// Catalogue requests still to be answered 429.
    catalogue_throttle: AtomicU32,
    catalogue_requests: AtomicU64,
}

/// A running simulator.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Sim {
    /// Starts serving on `listen` (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            listing: Mutex::new(Listing::new(&config, now_secs())),
            faults: Mutex::new(config.faults),
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed ^ 0xfa17)),
            stats: Mutex::new((SimStats::default(), VecDeque::new())),
            live_on: AtomicBool::new(config.live_rate > 0.0),
            window: Mutex::new((0, 0)),
            catalogue: Mutex::new(default_catalogue()),
            catalogue_throttle: AtomicU32::new(0),
            catalogue_requests: AtomicU64::new(0),
            config,
        });
        let cancel = CancellationToken::new();
        let app = Router::new()
            .route("/api/v2/organization/audit-trail", get(audit_trail))
            .route("/api/v2/ping", get(|| async { ([("x-ratelimit-limit", "30")], StatusCode::NO_CONTENT) }))
            .route("/api/v2/organizations/{organization}/{listing}", get(catalogue))
            .route("/_sim/events", get(sim_events))
            .route("/_sim/stats", get(sim_stats))
            .with_state(shared.clone());
        let mut tasks = Vec::new();
        let stop = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator stopped");
            }
        }));
        if shared.config.live_rate > 0.0 {
            tasks.push(tokio::spawn(live_arrivals(shared.clone(), cancel.clone())));
        }
        Ok(Self { shared, addr, cancel, tasks })
    }

    /// The address to give tfaudit (`http://127.0.0.1:PORT`).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token that works.
    #[must_use]
    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    /// Every event the API would serve now (malformed elements left out), newest
    /// first.
    #[must_use]
    pub fn events(&self) -> Vec<ListedEvent> {
        let oldest = now_secs() - self.shared.config.retention.as_secs() as i64;
        let listing = self.shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        listing.all(oldest).into_iter().filter(|e| e.id.is_some()).collect()
    }

    /// Adds one event with this timestamp (seconds since the epoch); returns its id.
    pub fn add_event(&self, timestamp_secs: i64) -> String {
        let id = self.shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add_live(timestamp_secs);
        self.shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.live_events += 1;
        id
    }

    /// Adds an event with this exact JSON; it must carry an `id` and a `timestamp`
    /// of `timestamp_secs`. Returns the id.
    ///
    /// # Panics
    /// When the JSON has no string `id`: a test's mistake.
    pub fn add_event_json(&self, timestamp_secs: i64, json: &serde_json::Value) -> String {
        let id = json["id"].as_str().expect("the event needs an id").to_owned();
        self.shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add_live_json(
            timestamp_secs,
            id.clone(),
            json.to_string(),
        );
        self.shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.live_events += 1;
        id
    }

    /// Adds an event of exactly this text, for events no `serde_json::Value` can hold
    /// (nested deeper than its parser allows); it must carry this `id` and a
    /// `timestamp` of `timestamp_secs`.
    pub fn add_event_text(&self, timestamp_secs: i64, id: &str, json: String) {
        self.shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add_live_json(
            timestamp_secs,
            id.to_owned(),
            json,
        );
        self.shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.live_events += 1;
    }

    /// Sets the name (and email) of the listed object `id`, adding it to `listing`
    /// (`workspaces`, `teams`, `organization-memberships`, `projects`, `agent-pools`,
    /// `policy-sets`, `varsets`) when new: a rename, or a new object.
    pub fn set_listed(&self, listing: &'static str, id: &str, name: &str, email: Option<&str>) {
        let mut all = self.shared.catalogue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry =
            CatalogueEntry { listing, id: id.to_owned(), name: name.to_owned(), email: email.map(str::to_owned) };
        match all.iter_mut().find(|e| e.id == id) {
            Some(e) => *e = entry,
            None => all.push(entry),
        }
    }

    /// Removes the listed object `id` (deleted in the organization).
    pub fn remove_listed(&self, id: &str) {
        self.shared.catalogue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|e| e.id != id);
    }

    /// Answers the next `n` catalogue requests with 429.
    pub fn throttle_catalogue(&self, n: u32) {
        self.shared.catalogue_throttle.store(n, Ordering::SeqCst);
    }

    /// How many catalogue requests were answered (any status).
    #[must_use]
    pub fn catalogue_requests(&self) -> u64 {
        self.shared.catalogue_requests.load(Ordering::SeqCst)
    }

    /// Starts or stops live arrivals.
    pub fn set_live(&self, on: bool) {
        self.shared.live_on.store(on, Ordering::SeqCst);
    }

    /// Replaces the faults injected from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = faults;
    }

    #[must_use]
    pub fn stats(&self) -> SimStats {
        let guard = self.shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stats = guard.0.clone();
        stats.recent = guard.1.iter().cloned().collect();
        stats
    }

    /// Stops serving and waits for in-flight requests.
    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Serves until `cancel` fires.
    pub async fn run_until(self, cancel: CancellationToken) {
        cancel.cancelled().await;
        self.stop().await;
    }
}

async fn live_arrivals(shared: Arc<Shared>, cancel: CancellationToken) {
    let tick = Duration::from_millis(50);
    let mut owed = 0.0f64;
    let mut rng = SmallRng::seed_from_u64(shared.config.seed ^ 0x11fe);
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = cancel.cancelled() => return,
        }
        if !shared.live_on.load(Ordering::SeqCst) {
            continue;
        }
        owed += shared.config.live_rate * tick.as_secs_f64();
        let n = owed.floor() as u64;
        owed -= n as f64;
        if n == 0 {
            continue;
        }
        let now = now_secs();
        let max_late = shared.config.max_lateness.as_secs().max(1) as i64;
        let mut listing = shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..n {
            let late = rng.random_bool(shared.config.late_fraction.clamp(0.0, 1.0));
            let ts = if late { now - rng.random_range(1..=max_late) } else { now };
            listing.add_live(ts);
        }
        drop(listing);
        shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.live_events += n;
    }
}

fn json_api_error(status: StatusCode, title: &str, detail: &str) -> Response {
    let body =
        serde_json::json!({"errors": [{"status": status.as_u16(), "title": title, "detail": detail}]}).to_string();
    (status, [(header::CONTENT_TYPE, "application/vnd.api+json")], body).into_response()
}

fn parse_since(text: &str) -> Option<i64> {
    text.trim().parse::<jiff::Timestamp>().ok().map(jiff::Timestamp::as_millisecond)
}

async fn audit_trail(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let since_text = get("since");
    let page: u64 = get("page[number]").and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(1);
    let asked: u64 = get("page[size]")
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(u64::from(shared.config.default_page_size));
    let size = asked.min(u64::from(shared.config.max_page_size.max(1)));
    let mut record =
        RequestRecord { since: since_text.clone(), page, page_size: asked, status: 200, fault: None, returned: 0 };
    let response = answer(&shared, &headers, since_text.as_deref(), page, size, &mut record).await;
    record.status = response.status().as_u16();
    let mut stats = shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    stats.0.requests += 1;
    match record.status {
        200 if record.fault.is_none() => stats.0.ok += 1,
        401 => stats.0.unauthorized += 1,
        404 => stats.0.not_found += 1,
        429 => stats.0.throttled += 1,
        _ => {}
    }
    if record.fault.is_some() {
        stats.0.faults += 1;
    }
    stats.1.push_back(record);
    if stats.1.len() > 100_000 {
        stats.1.pop_front();
    }
    response
}

async fn answer(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    since_text: Option<&str>,
    page: u64,
    size: u64,
    record: &mut RequestRecord,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if shared.config.forbidden_token.as_deref().is_some_and(|f| f == token) {
        return json_api_error(StatusCode::NOT_FOUND, "not found", "");
    }
    if token != shared.config.token {
        return json_api_error(StatusCode::UNAUTHORIZED, "unauthorized", "");
    }
    let faults = *shared.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(limit) = faults.rate_limit {
        let now = jiff::Timestamp::now();
        let mut window = shared.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0 != now.as_second() {
            *window = (now.as_second(), 0);
        }
        window.1 += 1;
        if window.1 > limit {
            let reset = 1.0 - f64::from(now.subsec_nanosecond()) / 1e9;
            record.fault = Some("rate-limit");
            return throttled(reset);
        }
    }
    let (slow, throttle, error, drop, truncate, garbage, error_kind, half_mode) = {
        let mut rng = shared.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            rng.random_bool(faults.slow_rate.clamp(0.0, 1.0)),
            rng.random_bool(faults.throttle_rate.clamp(0.0, 1.0)),
            rng.random_bool(faults.error_rate.clamp(0.0, 1.0)),
            rng.random_bool(faults.drop_rate.clamp(0.0, 1.0)),
            rng.random_bool(faults.truncate_rate.clamp(0.0, 1.0)),
            rng.random_bool(faults.garbage_rate.clamp(0.0, 1.0)),
            rng.random_range(0..3u8),
            rng.random_bool(0.5),
        )
    };
    if slow {
        // Counted now: a client that times out drops this request before it ends.
        shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.faults += 1;
        tokio::time::sleep(faults.slow_delay).await;
    }
    if throttle {
        record.fault = Some("throttle");
        return throttled(0.05);
    }
    if error {
        record.fault = Some("error");
        let status = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]
            [error_kind as usize];
        return json_api_error(status, "server error", "simulated failure");
    }
    if drop {
        record.fault = Some("drop");
        // A body that fails before its first byte: the connection is closed with no
        // response at all.
        let stream =
            futures_util::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("dropped")) });
        return Response::new(Body::from_stream(stream));
    }
    if let Some(since) = since_text
        && parse_since(since).is_none()
    {
        return json_api_error(StatusCode::BAD_REQUEST, "invalid since", "since must be an ISO 8601 timestamp");
    }
    let since_ms = since_text.and_then(parse_since);
    let oldest = now_secs() - shared.config.retention.as_secs() as i64;
    let offset = (page - 1).saturating_mul(size);
    let (events, total) = {
        let listing = shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        listing.page(since_ms, shared.config.since_mode, oldest, offset, size)
    };
    record.returned = events.len() as u64;
    let total_pages = total.div_ceil(size);
    let mut body = String::with_capacity(events.iter().map(|e| e.json.len() + 1).sum::<usize>() + 200);
    body.push_str("{\"data\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&e.json);
    }
    let num = |n: Option<u64>| n.map_or_else(|| "null".to_owned(), |n| n.to_string());
    body.push_str(&format!(
        "],\"pagination\":{{\"current_page\":{page},\"page_size\":{size},\"prev_page\":{},\"next_page\":{},\"total_pages\":{total_pages},\"total_count\":{total}}}}}",
        num((page > 1).then(|| page - 1)),
        num((offset + size < total).then(|| page + 1)),
    ));
    if garbage {
        record.fault = Some("garbage");
        return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "<html><body>upstream timed out</body></html>")
            .into_response();
    }
    if truncate {
        record.fault = Some("truncate");
        let cut = body.len() / 2;
        let head = Bytes::from(body.into_bytes()).slice(..cut);
        if half_mode {
            // The promised length is the whole body; the connection dies halfway.
            let full = cut * 2 + 1;
            let stream = futures_util::stream::iter(vec![Ok(head), Err(std::io::Error::other("cut"))]);
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(full));
            return r;
        }
        // A complete response of an incomplete document.
        return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], head).into_response();
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn throttled(reset_secs: f64) -> Response {
    let mut r =
        json_api_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests", "You have exceeded the API's rate limit.");
    r.headers_mut().insert("x-ratelimit-limit", HeaderValue::from_static("30"));
    if let Ok(v) = HeaderValue::from_str(&format!("{reset_secs:.3}")) {
        r.headers_mut().insert("x-ratelimit-reset", v);
    }
    r
}

/// An organization's listing, JSON:API style, paged by `page[number]`/`page[size]`
/// (20 by default, 100 at most) with `meta.pagination`; memberships include their users.
async fn catalogue(
    State(shared): State<Arc<Shared>>,
    Path((_organization, listing)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    shared.catalogue_requests.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // An audit trail token reads only the audit trail; an organization token is needed.
    let wanted = shared.config.enrich_token.as_deref().unwrap_or(&shared.config.token);
    if token != wanted {
        return json_api_error(StatusCode::UNAUTHORIZED, "unauthorized", "");
    }
    if shared.catalogue_throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return throttled(0.05);
    }
    let kind = match listing.as_str() {
        "workspaces"
        | "teams"
        | "projects"
        | "agent-pools"
        | "policy-sets"
        | "varsets"
        | "organization-memberships" => listing.as_str(),
        _ => return json_api_error(StatusCode::NOT_FOUND, "not found", ""),
    };
    let get = |k: &str| query.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.parse::<u64>().ok());
    let size = get("page[size]").filter(|&n| n > 0).unwrap_or(20).min(100);
    let page = get("page[number]").filter(|&n| n > 0).unwrap_or(1);
    let all: Vec<CatalogueEntry> = shared
        .catalogue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|e| e.listing == kind)
        .cloned()
        .collect();
    let total = all.len() as u64;
    let items: Vec<&CatalogueEntry> =
        all.iter().skip(((page - 1) * size).try_into().unwrap_or(usize::MAX)).take(size as usize).collect();
    let mut data = Vec::new();
    let mut included = Vec::new();
    for (i, e) in items.iter().enumerate() {
        if kind == "organization-memberships" {
            data.push(serde_json::json!({
                "id": format!("ou-Sim{page}x{i}"), "type": "organization-memberships",
                "attributes": {"status": "active", "email": e.email},
                "relationships": {"user": {"data": {"id": e.id, "type": "users"}}}
            }));
            included.push(serde_json::json!({"id": e.id, "type": "users", "attributes": {"username": e.name}}));
        } else {
            data.push(serde_json::json!({"id": e.id, "type": kind, "attributes": {"name": e.name}}));
        }
    }
    let total_pages = total.div_ceil(size).max(1);
    let mut body = serde_json::json!({
        "data": data,
        "meta": {"pagination": {
            "current-page": page, "page-size": size, "total-pages": total_pages, "total-count": total,
            "prev-page": (page > 1).then(|| page - 1), "next-page": (page < total_pages).then(|| page + 1)
        }}
    });
    if kind == "organization-memberships" {
        body["included"] = serde_json::Value::Array(included);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/vnd.api+json")], body.to_string()).into_response()
}

async fn sim_events(State(shared): State<Arc<Shared>>) -> Response {
    let oldest = now_secs() - shared.config.retention.as_secs() as i64;
    let all = shared.listing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).all(oldest);
    let mut body = String::new();
    for e in all.iter().filter(|e| e.id.is_some()) {
        body.push_str(&e.json);
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn sim_stats(State(shared): State<Arc<Shared>>) -> Response {
    let stats = shared.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone();
    axum::Json(stats).into_response()
}
