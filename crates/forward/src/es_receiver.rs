//! An Elasticsearch stand-in for tests (no cluster runs here): `POST /_bulk` and
//! `GET /` answer as Elasticsearch's Bulk API reference describes. The body is NDJSON
//! (`Content-Type: application/x-ndjson`, ended by a newline), an action line then a
//! source line per document; the answer is `{"took", "errors", "items"}` with one
//! item per action in the order submitted, each `{"create": {"_index", "_id",
//! "status", ...}}`: 201 `created`, 409 `version_conflict_engine_exception` for an id
//! already there, and on demand 429 `es_rejected_execution_exception` or 400
//! `mapper_parsing_exception` for a chosen id, or a whole request refused (401 with a
//! `security_exception`, 429, 5xx). It is shared by the forward crate's unit tests
//! and the CLI's end-to-end tests (included there by path).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// What the cluster does with one document id.
#[derive(Debug, Clone, Copy)]
pub enum Wanted {
    /// 429 this many times, then as usual.
    Busy(u32),
    /// 400 `mapper_parsing_exception`, always.
    MapperError,
}

#[derive(Default)]
pub struct Cluster {
    /// `_id` → (index, source line).
    docs: Mutex<BTreeMap<String, (String, String)>>,
    wanted: Mutex<HashMap<String, Wanted>>,
    /// Statuses for the next requests as a whole.
    next: Mutex<VecDeque<u16>>,
    auth: Mutex<Option<String>>,
    /// Per bulk request: (documents, gzipped).
    requests: Mutex<Vec<(usize, bool)>>,
    /// Every item status answered.
    statuses: Mutex<Vec<u16>>,
}

#[allow(dead_code, reason = "each test binary uses its own part")]
impl Cluster {
    /// Serves on 127.0.0.1; the cluster's base address.
    pub async fn serve(self: Arc<Self>) -> String {
        let (bulk, root) = (self.clone(), self);
        let app = axum::Router::new()
            .route(
                "/_bulk",
                axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                    let c = bulk.clone();
                    async move { c.bulk(&headers, &body) }
                }),
            )
            .route(
                "/",
                axum::routing::get(move |headers: HeaderMap| {
                    let c = root.clone();
                    async move {
                        if let Some(refused) = c.refuse(&headers) {
                            return refused;
                        }
                        json(
                            StatusCode::OK,
                            &serde_json::json!({"cluster_name": "test", "version": {"number": "8.15.0"}}),
                        )
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    pub fn want(&self, id: &str, wanted: Wanted) {
        self.wanted.lock().unwrap().insert(id.to_owned(), wanted);
    }

    /// The next request is answered `status` as a whole.
    pub fn answer_next(&self, status: u16) {
        self.next.lock().unwrap().push_back(status);
    }

    /// The `Authorization` header every request must carry.
    pub fn require_auth(&self, value: &str) {
        *self.auth.lock().unwrap() = Some(value.to_owned());
    }

    pub fn documents(&self) -> BTreeMap<String, (String, String)> {
        self.docs.lock().unwrap().clone()
    }

    pub fn request_sizes(&self) -> Vec<usize> {
        self.requests.lock().unwrap().iter().map(|r| r.0).collect()
    }

    pub fn gzipped(&self) -> Vec<bool> {
        self.requests.lock().unwrap().iter().map(|r| r.1).collect()
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.statuses.lock().unwrap().clone()
    }

    fn refuse(&self, headers: &HeaderMap) -> Option<Response> {
        let wanted = self.auth.lock().unwrap().clone()?;
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        (given != Some(wanted.as_str())).then(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "security_exception",
                "unable to authenticate user for REST request [/_bulk]",
            )
        })
    }

    fn bulk(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        if let Some(refused) = self.refuse(headers) {
            return refused;
        }
        if let Some(status) = self.next.lock().unwrap().pop_front() {
            let kind = if status == 429 { "es_rejected_execution_exception" } else { "exception" };
            return error(StatusCode::from_u16(status).unwrap(), kind, "answered as the test asked");
        }
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !content_type.starts_with("application/x-ndjson") && !content_type.starts_with("application/json") {
            return error(
                StatusCode::NOT_ACCEPTABLE,
                "media_type_header_exception",
                "Content-Type header is not supported",
            );
        }
        let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
        let body = if gzipped {
            let mut out = Vec::new();
            if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).is_err() {
                return error(StatusCode::BAD_REQUEST, "parse_exception", "not gzip");
            }
            out
        } else {
            body.to_vec()
        };
        let Ok(text) = String::from_utf8(body) else {
            return error(StatusCode::BAD_REQUEST, "parse_exception", "not UTF-8");
        };
        if !text.ends_with('\n') {
            return error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            );
        }
        let lines: Vec<&str> = text.lines().collect();
        if !lines.len().is_multiple_of(2) {
            return error(StatusCode::BAD_REQUEST, "illegal_argument_exception", "an action without its source");
        }
        let mut items = Vec::new();
        let mut errors = false;
        for pair in lines.chunks(2) {
            let Ok(action) = serde_json::from_str::<serde_json::Value>(pair[0]) else {
                return error(StatusCode::BAD_REQUEST, "x_content_parse_exception", "malformed action");
            };
            let (Some(index), Some(id)) = (action["create"]["_index"].as_str(), action["create"]["_id"].as_str())
            else {
                return error(StatusCode::BAD_REQUEST, "action_request_validation_exception", "not a create with _id");
            };
            let (status, failure) = self.item(index, id, pair[1]);
            errors |= failure.is_some();
            self.statuses.lock().unwrap().push(status);
            let mut item = serde_json::json!({"_index": index, "_id": id, "status": status});
            match failure {
                Some((kind, reason)) => {
                    item["error"] = serde_json::json!({"type": kind, "reason": reason, "index": index})
                }
                None => {
                    item["result"] = "created".into();
                    item["_version"] = 1.into();
                }
            }
            items.push(serde_json::json!({ "create": item }));
        }
        self.requests.lock().unwrap().push((items.len(), gzipped));
        json(StatusCode::OK, &serde_json::json!({"took": 1, "errors": errors, "items": items}))
    }

    fn item(&self, index: &str, id: &str, source: &str) -> (u16, Option<(&'static str, String)>) {
        let mut wanted = self.wanted.lock().unwrap();
        match wanted.get_mut(id) {
            Some(Wanted::MapperError) => {
                return (
                    400,
                    Some((
                        "mapper_parsing_exception",
                        format!("failed to parse field [meta] of document with id '{id}'"),
                    )),
                );
            }
            Some(Wanted::Busy(n)) if *n > 0 => {
                *n -= 1;
                return (
                    429,
                    Some((
                        "es_rejected_execution_exception",
                        "rejected execution of coordinating operation".to_owned(),
                    )),
                );
            }
            _ => {}
        }
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(source).is_err() {
            return (400, Some(("document_parsing_exception", "failed to parse: not a JSON object".to_owned())));
        }
        let mut docs = self.docs.lock().unwrap();
        if docs.contains_key(id) {
            return (
                409,
                Some((
                    "version_conflict_engine_exception",
                    format!("[{id}]: version conflict, document already exists (current version [1])"),
                )),
            );
        }
        docs.insert(id.to_owned(), (index.to_owned(), source.to_owned()));
        (201, None)
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [("content-type", "application/json")], value.to_string()).into_response()
}

fn error(status: StatusCode, kind: &str, reason: &str) -> Response {
    json(
        status,
        &serde_json::json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status.as_u16()}),
    )
}
