//! `type = "elasticsearch"` (and OpenSearch): batches written with the `_bulk` API,
//! each event a `create` action whose `_id` is the event's id, so that a batch sent
//! again (after a timeout, a crash, a reset position) never makes a second copy: the
//! cluster answers 409 for an id it holds, which counts as delivered.
//!
//! The answer is read item by item, as Elasticsearch's Bulk API reference describes
//! its response body: `errors`, and `items` in the order the actions were submitted,
//! each with its `status` and, when it failed, an `error` with `type` and `reason`.
//! 201 is created, 409 (`version_conflict_engine_exception`) already there, 429
//! (`es_rejected_execution_exception`) and 5xx are worth sending again, any other
//! status is the document refused (`mapper_parsing_exception`, say): a dead letter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tfaudit_config::SinkSection;
use tfaudit_model::Secret;

use crate::{Batch, Delivered, Event, SendError, Sink, SinkFuture};

/// How many times the events a cluster answered 429 or 5xx for are sent again within
/// one batch before the batch is handed back to the runner's backoff.
const ITEM_ROUNDS: u32 = 4;
/// The first pause before those events are sent again; it doubles each round.
const ITEM_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The most of a bulk answer read: with `filter_path` it is a few dozen bytes per event.
const BULK_ANSWER_CAP: usize = 64 << 20;
/// Only what is needed of each item: the answer of a large batch stays small.
const FILTER_PATH: &str = "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// The Elasticsearch sink's own settings.
#[derive(Debug)]
pub struct ElasticsearchConfig {
    /// The cluster's base address (it can hold credentials: a secret).
    pub url: Secret,
    /// The index, alias or data stream.
    pub index: String,
    pub auth: crate::Credentials,
    pub ca_file: Option<PathBuf>,
    pub gzip: bool,
    pub timeout: Duration,
}

impl ElasticsearchConfig {
    /// # Errors
    /// A missing or unreadable secret, a URL that is not http(s), a missing or
    /// impossible index name, both an API key and a username, half of basic auth.
    pub fn from_section(section: &SinkSection, base: &Path) -> Result<Self, String> {
        let name = &section.name;
        let url = section.url.as_ref().ok_or_else(|| format!("sink {name:?} (elasticsearch) needs url"))?;
        let url = url.resolve(&format!("sink {name}: url"))?;
        match reqwest::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
            _ => {
                return Err(format!(
                    "sink {name:?}: url must be the cluster's http:// or https:// address, such as https://es.example.com:9200"
                ));
            }
        }
        let index = section.index.clone().unwrap_or_default();
        check_index(&index).map_err(|e| format!("sink {name:?}: {e}"))?;
        let auth = crate::credentials(section, "api_key", section.api_key.as_ref())?;
        let timeout = crate::timeout(section)?;
        Ok(Self {
            url,
            index,
            auth,
            ca_file: section.ca_file.as_deref().map(|p| crate::http::relative_to(base, p)),
            gzip: section.gzip.unwrap_or(false),
            timeout,
        })
    }
}

/// Elasticsearch's rules for index names (and data streams'), checked here so that a
/// typo is a config error rather than every event a dead letter.
fn check_index(index: &str) -> Result<(), String> {
    if index.is_empty() {
        return Err("index is needed: the index or data stream the events go to".to_owned());
    }
    let bad = index.chars().any(|c| c.is_uppercase() || c.is_whitespace() || r#"\/*?"<>|,#:"#.contains(c));
    if bad || index.starts_with(['-', '_', '+']) || index == "." || index == ".." || index.len() > 255 {
        return Err(format!(
            "index {index:?} is not a valid index name: lowercase, without spaces or any of \\ / * ? \" < > | , # :, not starting with - _ +"
        ));
    }
    Ok(())
}

/// Writes batches with `_bulk`.
pub struct ElasticsearchSink {
    config: ElasticsearchConfig,
    http: reqwest::Client,
    /// `{"create":{"_index":"<index>","_id":` : each action line but its id.
    action: String,
}

impl ElasticsearchSink {
    /// # Errors
    /// An unreadable `ca_file`, or no TLS roots.
    pub fn new(config: ElasticsearchConfig) -> Result<Self, String> {
        let http = crate::http::client(config.ca_file.as_deref())?;
        let action = format!(r#"{{"create":{{"_index":{},"_id":"#, serde_json::Value::from(config.index.as_str()));
        Ok(Self { config, http, action })
    }

    fn address(&self, path: &str) -> String {
        format!("{}/{path}", self.config.url.expose().trim_end_matches('/'))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.auth {
            crate::Credentials::None => request,
            crate::Credentials::Secret(key) => {
                request.header(reqwest::header::AUTHORIZATION, format!("ApiKey {}", key.expose()))
            }
            crate::Credentials::Basic { username, password } => request.basic_auth(username, Some(password.expose())),
        }
    }

    /// One `_bulk` request of `events`: each item's status and error, in order.
    async fn bulk(&self, events: &[&Event]) -> Result<Vec<Item>, SendError> {
        let body = bulk_body(&self.action, events);
        let request = self
            .http
            .post(self.address(&format!("_bulk?{FILTER_PATH}")))
            .timeout(self.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        let request = self.authorized(request);
        let request = if self.config.gzip {
            request.header(reqwest::header::CONTENT_ENCODING, "gzip").body(crate::http::gzip(&body))
        } else {
            request.body(body)
        };
        let response = request.send().await.map_err(|e| SendError::Retry {
            // The URL can be a secret: errors never show it.
            error: format!("request failed: {}", tfaudit_api::client::error_chain(&e.without_url())),
            after: None,
        })?;
        let status = response.status();
        if !status.is_success() {
            let after = tfaudit_alerts::destination::retry_after(response.headers());
            let error = format!("the cluster answered {status}: {}", crate::http::quote_answer(response).await);
            return Err(match status.as_u16() {
                408 | 429 | 500..=599 => SendError::Retry { error, after },
                // Malformed or too large: the runner splits the batch.
                400 | 413 => SendError::Invalid { error },
                401 => SendError::Refused { error: format!("{error} (check api_key or username and password)") },
                403 => SendError::Refused {
                    error: format!("{error} (the credentials need the create_doc privilege on the index)"),
                },
                300..=399 => SendError::Refused {
                    error: format!("{error} (a redirect, not followed: set the sink's url to where it points)"),
                },
                _ => SendError::Refused { error },
            });
        }
        let text = tfaudit_api::body::read_prefix(response, BULK_ANSWER_CAP).await;
        let answer: BulkAnswer = serde_json::from_slice(&text).map_err(|e| SendError::Retry {
            error: format!("the cluster's bulk answer is not readable ({e}): is url the cluster's address?"),
            after: None,
        })?;
        if !answer.errors && answer.items.is_empty() {
            // A proxy that filters answers further may drop `items`: with `errors`
            // false every item was taken.
            return Ok(events.iter().map(|_| Item { status: 201, error: None }).collect());
        }
        let items: Vec<Item> = answer.items.into_iter().filter_map(|i| i.into_values().next()).collect();
        if items.len() != events.len() {
            return Err(SendError::Retry {
                error: format!("the cluster answered {} results for {} events", items.len(), events.len()),
                after: None,
            });
        }
        Ok(items)
    }
}

/// The `_bulk` body: per event, a `create` action with the event's id, then the event.
#[must_use]
pub fn bulk_body(action: &str, events: &[&Event]) -> Vec<u8> {
    let size = events.iter().map(|e| action.len() + e.id.len() + e.line.len() + 8).sum();
    let mut body = Vec::with_capacity(size);
    for e in events {
        body.extend_from_slice(action.as_bytes());
        // Serializing a string cannot fail; it escapes quotes and control characters.
        body.extend_from_slice(serde_json::to_string(&e.id).unwrap_or_default().as_bytes());
        body.extend_from_slice(b"}}\n");
        body.extend_from_slice(e.line.as_bytes());
        body.push(b'\n');
    }
    body
}

#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    /// Each `{"<action>": {...}}`.
    #[serde(default)]
    items: Vec<std::collections::BTreeMap<String, Item>>,
}

#[derive(Debug, Deserialize)]
struct Item {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
}

impl Item {
    fn reason(&self) -> String {
        match &self.error {
            Some(e) => match &e.reason {
                Some(r) => format!("{} {}: {r}", self.status, e.kind),
                None => format!("{} {}", self.status, e.kind),
            },
            None => format!("status {}", self.status),
        }
    }
}

impl Sink for ElasticsearchSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let mut pending: Vec<&Event> = batch.events.iter().collect();
            let mut rejected = Vec::new();
            let mut delay = ITEM_RETRY_DELAY;
            let mut round = 0;
            loop {
                round += 1;
                let items = self.bulk(&pending).await?;
                let mut again = Vec::new();
                let mut busy = None;
                for (event, item) in pending.iter().zip(&items) {
                    match item.status {
                        // Created, or already there from an earlier send.
                        200..=299 | 409 => {}
                        429 | 500..=599 => {
                            again.push(*event);
                            busy.get_or_insert_with(|| item.reason());
                        }
                        _ => rejected.push((event.seq, item.reason())),
                    }
                }
                let Some(busy) = busy else {
                    return Ok(Delivered { rejected, skipped: Vec::new() });
                };
                if round == ITEM_ROUNDS {
                    // The whole batch goes again later: what was created answers 409.
                    return Err(SendError::Retry {
                        error: format!(
                            "the cluster did not take {} of {} events ({busy})",
                            again.len(),
                            batch.events.len()
                        ),
                        after: None,
                    });
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
                pending = again;
            }
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let request = self.authorized(self.http.get(self.address("")).timeout(self.config.timeout));
            let response = request.send().await.map_err(|e| {
                format!("cannot reach the cluster: {}", tfaudit_api::client::error_chain(&e.without_url()))
            })?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the cluster answered {status}: {}", crate::http::quote_answer(response).await))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::es_receiver::{Cluster, Wanted};

    fn event(seq: i64, id: &str) -> Event {
        Event::from_json(
            seq,
            id,
            jiff::Timestamp::UNIX_EPOCH,
            &format!(r#"{{"id":{},"n":{seq}}}"#, serde_json::json!(id)),
        )
    }

    fn batch(events: Vec<Event>) -> Batch {
        Batch::new("es", events)
    }

    fn section(url: &str, extra: &str) -> SinkSection {
        let text = format!("name = \"es\"\ntype = \"elasticsearch\"\nurl = \"{url}\"\nindex = \"audit\"\n{extra}");
        toml::from_str(&text).unwrap()
    }

    fn sink(url: &str, extra: &str) -> ElasticsearchSink {
        ElasticsearchSink::new(ElasticsearchConfig::from_section(&section(url, extra), Path::new("/")).unwrap())
            .unwrap()
    }

    #[test]
    fn bulk_body_escapes_ids_and_index() {
        let events = [event(1, "ae-1"), event(2, "a\"b\\c\n")];
        let refs: Vec<&Event> = events.iter().collect();
        let action = format!(r#"{{"create":{{"_index":{},"_id":"#, serde_json::Value::from("we\"ird"));
        let body = String::from_utf8(bulk_body(&action, &refs)).unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(body.ends_with('\n'));
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first, serde_json::json!({"create": {"_index": "we\"ird", "_id": "ae-1"}}));
        let second: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(second["create"]["_id"], "a\"b\\c\n");
        assert_eq!(lines[3], events[1].line);
    }

    #[test]
    fn settings_are_checked_and_secrets_stay_hidden() {
        let base = Path::new("/etc/tfaudit");
        let c = ElasticsearchConfig::from_section(
            &section("https://es:9200", "api_key = \"S3CRET-KEY\"\nca_file = \"ca.pem\""),
            base,
        )
        .unwrap();
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/etc/tfaudit/ca.pem")));
        let c2 = ElasticsearchConfig::from_section(
            &section("https://user:URLPASS@es:9200", "username = \"u\"\npassword = \"PASSW0RD\""),
            base,
        )
        .unwrap();
        for debug in [format!("{c:?}"), format!("{c2:?}")] {
            for secret in ["S3CRET-KEY", "PASSW0RD", "URLPASS"] {
                assert!(!debug.contains(secret), "{debug}");
            }
        }
        let err = |url: &str, extra: &str| ElasticsearchConfig::from_section(&section(url, extra), base).unwrap_err();
        assert!(err("https://es", "api_key = \"k\"\nusername = \"u\"").contains("not both"));
        assert!(err("https://es", "username = \"u\"").contains("username needs password"));
        assert!(err("ftp://es", "").contains("http:// or https://"));
        let mut s = section("https://es", "");
        s.index = Some("Audit Events".into());
        assert!(ElasticsearchConfig::from_section(&s, base).unwrap_err().contains("not a valid index name"));
        s.index = None;
        assert!(ElasticsearchConfig::from_section(&s, base).unwrap_err().contains("index is needed"));
    }

    #[tokio::test]
    async fn created_existing_and_refused_items_and_no_duplicates_on_a_resend() {
        let cluster = Arc::new(Cluster::default());
        let url = cluster.clone().serve().await;
        let es = sink(&url, "");
        let events: Vec<Event> = (1..=6).map(|i| event(i, &format!("ae-{i}"))).collect();
        cluster.want("ae-4", Wanted::MapperError);
        let first = es.send(&batch(events[..4].to_vec())).await.unwrap();
        assert_eq!(first.rejected.len(), 1);
        assert_eq!(first.rejected[0].0, 4);
        assert!(first.rejected[0].1.starts_with("400 mapper_parsing_exception: failed to parse"), "{first:?}");
        // The same events again, and more: those there answer 409, nothing is doubled.
        let again = es.send(&batch(events.clone())).await.unwrap();
        assert_eq!(again.rejected.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4]);
        let docs = cluster.documents();
        assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), ["ae-1", "ae-2", "ae-3", "ae-5", "ae-6"]);
        assert_eq!(docs["ae-2"], ("audit".to_owned(), events[1].line.clone()));
        let statuses = cluster.statuses();
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 3);
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5);
    }

    #[tokio::test]
    async fn busy_items_alone_are_sent_again_and_whole_request_answers_map_to_retry_refused_invalid() {
        let cluster = Arc::new(Cluster::default());
        let url = cluster.clone().serve().await;
        let es = sink(&url, "gzip = true");
        let events: Vec<Event> = (1..=5).map(|i| event(i, &format!("ae-{i}"))).collect();
        cluster.want("ae-2", Wanted::Busy(2));
        let d = es.send(&batch(events.clone())).await.unwrap();
        assert_eq!(d, Delivered::all());
        // One request of five, then two of the busy one alone.
        assert_eq!(cluster.request_sizes(), vec![5, 1, 1]);
        assert!(cluster.gzipped().iter().all(|g| *g));
        assert_eq!(cluster.documents().len(), 5);

        // Busy beyond the sink's rounds: the batch is handed back to be retried.
        cluster.want("ae-9", Wanted::Busy(100));
        let err = es.send(&batch(vec![event(9, "ae-9")])).await.unwrap_err();
        assert!(
            matches!(&err, SendError::Retry { error, .. } if error.contains("es_rejected_execution_exception")),
            "{err:?}"
        );

        cluster.answer_next(429);
        assert!(matches!(es.send(&batch(events.clone())).await, Err(SendError::Retry { .. })));
        cluster.answer_next(503);
        assert!(matches!(es.send(&batch(events.clone())).await, Err(SendError::Retry { .. })));
        cluster.answer_next(400);
        assert!(matches!(es.send(&batch(events.clone())).await, Err(SendError::Invalid { .. })));
        cluster.answer_next(413);
        assert!(matches!(es.send(&batch(events.clone())).await, Err(SendError::Invalid { .. })));
        cluster.answer_next(401);
        assert!(matches!(es.send(&batch(events.clone())).await, Err(SendError::Refused { .. })));
        assert_eq!(cluster.documents().len(), 5);
    }

    #[tokio::test]
    async fn credentials_are_sent_as_configured_and_never_shown() {
        let cluster = Arc::new(Cluster::default());
        cluster.require_auth("ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==");
        let url = cluster.clone().serve().await;
        let good = sink(&url, "api_key = \"VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==\"");
        good.send(&batch(vec![event(1, "ae-1")])).await.unwrap();
        good.health().await.unwrap();
        let bad = sink(&url, "api_key = \"WRONG-KEY\"");
        let err = bad.send(&batch(vec![event(2, "ae-2")])).await.unwrap_err();
        assert!(
            matches!(&err, SendError::Refused { error } if error.contains("401") && !error.contains("WRONG-KEY")),
            "{err:?}"
        );
        let health = bad.health().await.unwrap_err();
        assert!(health.contains("401") && !health.contains("WRONG-KEY"), "{health}");

        let basic = Arc::new(Cluster::default());
        // "elastic:PASSW0RD" in base64.
        basic.require_auth("Basic ZWxhc3RpYzpQQVNTVzBSRA==");
        let url = basic.clone().serve().await;
        sink(&url, "username = \"elastic\"\npassword = \"PASSW0RD\"")
            .send(&batch(vec![event(1, "ae-1")]))
            .await
            .unwrap();
        assert_eq!(basic.documents().len(), 1);

        // Nobody listening: a retry, without the address's credentials.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let gone = sink(&format!("http://elastic:URLPASS@{closed}"), "");
        let err = gone.send(&batch(vec![event(1, "ae-1")])).await.unwrap_err();
        assert!(matches!(&err, SendError::Retry { error, .. } if !error.contains("URLPASS")), "{err:?}");
        assert!(!gone.health().await.unwrap_err().contains("URLPASS"));
    }
}
