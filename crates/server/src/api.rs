//! The JSON API. Read-only; every list is bounded; errors are `{"error": "..."}`.

use axum::Router;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tfaudit_store::{AlertFilter, DeliveryState, Order, StoredEvent};

use crate::AppState;
use crate::filter::{Origin, Params, Query, api_time, encode_cursor, number, within_max_length};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/events/{id}", get(event))
        .route("/api/summary", get(summary))
        .route("/api/status", get(status))
        .route("/api/alerts", get(alerts))
        .route("/api/openapi.json", get(openapi))
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// Runs store calls off the async threads (through [`tfaudit_store::blocking`]) and
/// turns an archive error into a 503 that says nothing of its cause.
pub(crate) async fn blocking<T: Send + 'static>(
    store: &std::sync::Arc<dyn tfaudit_store::Store>,
    f: impl FnOnce(&dyn tfaudit_store::Store) -> Result<T, tfaudit_store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    tfaudit_store::blocking(store, f).await.map_err(|e| {
        tracing::error!(error = %e, "archive error while serving a request");
        error(StatusCode::SERVICE_UNAVAILABLE, "the archive could not be read; try again")
    })
}

/// An event in a list: the archive's facts about it, and the original event embedded
/// as stored — not parsed and written again, which would also reorder its keys.
#[derive(serde::Serialize)]
struct Item<'a> {
    seq: i64,
    organization: &'a str,
    ingested_at: jiff::Timestamp,
    event: Box<serde_json::value::RawValue>,
}

fn item(e: &StoredEvent) -> Item<'_> {
    let compact = tfaudit_api::event::compact_json(&e.event.raw).into_owned();
    let event = serde_json::value::RawValue::from_string(compact)
        .unwrap_or_else(|_| serde_json::value::RawValue::from_string("null".into()).expect("null is JSON"));
    Item { seq: e.seq, organization: &e.source, ingested_at: e.ingested_at, event }
}

/// A page of events, newest first, and the cursor of the next page.
pub(crate) async fn page(state: &AppState, q: &Query) -> Result<(Vec<StoredEvent>, Option<String>), Response> {
    let limit = q.limit as usize;
    let q = q.clone();
    // One more than a page, to know whether there is a next one.
    let mut events = blocking(&state.store, move |store| {
        let mut out = Vec::new();
        store.events(&q.filter, Order::NewestFirst, Some(q.limit + 1), &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    })
    .await?;
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| encode_cursor(e.event.timestamp, e.seq))
    } else {
        None
    };
    Ok((events, next))
}

async fn events(State(state): State<AppState>, QueryParams(params): QueryParams<Params>) -> Response {
    let q = match params.parse(Origin::Api, None, 50) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match page(&state, &q).await {
        Ok((events, next)) => {
            #[derive(serde::Serialize)]
            struct Page<'a> {
                events: Vec<Item<'a>>,
                next_cursor: Option<String>,
            }
            axum::Json(Page { events: events.iter().map(item).collect(), next_cursor: next }).into_response()
        }
        Err(r) => r,
    }
}

async fn event(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if id.chars().count() > 200 {
        return error(StatusCode::BAD_REQUEST, "id is longer than 200 characters");
    }
    match blocking(&state.store, move |store| store.event(&id)).await {
        Ok(Some(e)) => ([(header::CONTENT_TYPE, "application/json")], e.event.raw).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such event"),
        Err(r) => r,
    }
}

async fn summary(State(state): State<AppState>, QueryParams(params): QueryParams<Params>) -> Response {
    let (q, top) = match params.parse(Origin::Api, Some("30d"), 50).and_then(|q| Ok((q, params.top()?))) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match blocking(&state.store, move |store| store.summary(&q.filter, top)).await {
        Ok(s) => axum::Json(s).into_response(),
        Err(r) => r,
    }
}

async fn status(State(state): State<AppState>) -> Response {
    match blocking(&state.store, move |store| Ok((store.status()?, store.alert_status(10)?, integrity(store)?))).await {
        Ok((organizations, alerts, integrity)) => {
            axum::Json(json!({"organizations": organizations, "alerts": alerts, "integrity": integrity}))
                .into_response()
        }
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AlertParams {
    limit: Option<String>,
    state: Option<String>,
    rule: Option<String>,
    since: Option<String>,
}

impl AlertParams {
    pub(crate) fn filter(&self, origin: Origin) -> Result<(AlertFilter, u64), String> {
        let value = |v: &Option<String>| match origin {
            Origin::Api => v.clone(),
            Origin::Form => v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned),
        };
        if origin == Origin::Api {
            within_max_length("rule", self.rule.as_deref())?;
        }
        let state = match value(&self.state) {
            None => None,
            Some(s) => Some(DeliveryState::parse(&s).ok_or("state must be pending, delivered, failing or abandoned")?),
        };
        let now = jiff::Timestamp::now();
        let since = match value(&self.since) {
            None => None,
            Some(s) => Some(match origin {
                Origin::Api => api_time(&s, now).map_err(|e| format!("since: {e}"))?,
                Origin::Form => tfaudit_config::parse_when(&s, now).map_err(|e| format!("since: {e}"))?,
            }),
        };
        let limit = match value(&self.limit) {
            None => 50,
            Some(l) => number("limit", &l, 1..=500)?,
        };
        Ok((AlertFilter { since, rule: self.rule.clone().filter(|r| !r.is_empty()), state }, limit))
    }
}

async fn alerts(State(state): State<AppState>, QueryParams(params): QueryParams<AlertParams>) -> Response {
    let (filter, limit) = match params.filter(Origin::Api) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match blocking(&state.store, move |store| store.alerts(&filter, limit)).await {
        Ok(list) => axum::Json(json!({"alerts": list})).into_response(),
        Err(r) => r,
    }
}

/// Every error under `/api/` is `{"error": "..."}`, whoever raised it: axum's own
/// rejections (a query string or path it cannot read, a parameter given twice), the
/// size and time limits, unknown routes and methods answer in plain text otherwise.
pub(crate) async fn errors_as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let json_already =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || !(status.is_client_error() || status.is_server_error()) || json_already {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let message = match text {
        Ok(t) if !t.is_empty() => t,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut answer = error(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The archive's tree size, newest checkpoint and newest verification (what `status`
/// shows under "integrity").
pub(crate) fn integrity(store: &dyn tfaudit_store::Store) -> Result<serde_json::Value, tfaudit_store::StoreError> {
    Ok(json!({
        "tree_size": store.tree_head()?.map_or(0, |h| h.size),
        "latest_checkpoint": store.latest_checkpoint()?,
        "last_verification": store.latest_verification(false)?,
    }))
}
