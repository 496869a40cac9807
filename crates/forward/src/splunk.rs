//! `type = "splunk_hec"`: Splunk's HTTP Event Collector. Batches are POSTed to
//! `<url>/services/collector/event` as concatenated JSON objects, one per event, each
//! with `time` (the event's own time) and the event under `event`. With `ack = true`
//! the sink waits for the indexer's acknowledgement of the request before the batch
//! counts as delivered.
//!
//! The answers follow Splunk's documentation: "Format events for HTTP Event Collector"
//! (the event envelope, `Authorization: Splunk <token>`), the HEC status codes ("Troubleshoot
//! HTTP Event Collector": 0 success, 1 token disabled, 2 token required, 3 invalid
//! authorization, 4 invalid token, 5 no data, 6 invalid data format with
//! `invalid-event-number`, 7 incorrect index, 8 internal server error, 9 server busy,
//! 10 data channel missing, 11 invalid data channel, 12 event field required, 13 event
//! field blank, 14 ACK disabled, 17 healthy, 18-20 unhealthy) and "About HTTP Event
//! Collector Indexer Acknowledgment" (`X-Splunk-Request-Channel`, `ackId`, polling
//! `/services/collector/ack` with `{"acks":[..]}` answered `{"acks":{"<id>":true}}`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tfaudit_config::SinkSection;
use tfaudit_model::Secret;

use crate::http::{client, gzip, quote, read_answer, unanswered};
use crate::{Batch, Delivered, SendError, Sink, SinkFuture};

/// The sourcetype events carry unless the sink says otherwise.
pub const DEFAULT_SOURCETYPE: &str = "hashicorp:terraform:audit";

/// The first pause between two polls of an acknowledgement; it doubles up to
/// [`ACK_POLL_MAX`].
const ACK_POLL_FIRST: Duration = Duration::from_millis(20);
const ACK_POLL_MAX: Duration = Duration::from_secs(1);

/// The Splunk HEC sink's own settings.
#[derive(Debug)]
pub struct SplunkConfig {
    /// The collector's base address (`https://splunk.example.com:8088`), a secret as
    /// every URL is.
    pub url: Secret,
    pub token: Secret,
    pub index: Option<String>,
    pub source: Option<String>,
    pub sourcetype: String,
    pub host: Option<String>,
    /// Wait for indexer acknowledgement.
    pub ack: bool,
    pub gzip: bool,
    /// Time allowed for one request, and for an acknowledgement to come.
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

impl SplunkConfig {
    /// # Errors
    /// A missing or unreadable secret, a URL that is not http(s), an empty name.
    pub fn from_section(section: &SinkSection, base: &Path) -> Result<Self, String> {
        let name = &section.name;
        let url = section.url.as_ref().ok_or_else(|| format!("sink {name:?} (splunk_hec) needs url"))?;
        let url = url.resolve(&format!("sink {name}: url"))?;
        match reqwest::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(format!(
                    "sink {name:?}: url must be the collector's http:// or https:// address (such as https://splunk.example.com:8088)"
                ));
            }
        }
        let url = Secret::new(url.expose().trim_end_matches('/'));
        let token = section.token.as_ref().ok_or_else(|| format!("sink {name:?} (splunk_hec) needs token"))?;
        let token = token.resolve(&format!("sink {name}: token"))?;
        if token.expose().trim().is_empty() {
            return Err(format!("sink {name:?}: token is empty"));
        }
        let named = |key: &str, value: &Option<String>| match value.as_deref().map(str::trim) {
            Some("") => Err(format!("sink {name:?}: {key} is empty (leave it out for the token's default)")),
            v => Ok(v.map(str::to_owned)),
        };
        let sourcetype = named("sourcetype", &section.sourcetype)?.unwrap_or_else(|| DEFAULT_SOURCETYPE.to_owned());
        let timeout = crate::timeout(section)?;
        Ok(Self {
            url,
            token,
            index: named("index", &section.index)?,
            source: named("source", &section.source)?,
            sourcetype,
            host: named("host", &section.host)?,
            ack: section.ack.unwrap_or(false),
            gzip: section.gzip.unwrap_or(false),
            timeout,
            ca_file: section.ca_file.as_deref().map(|f| base.join(f)),
        })
    }
}

/// Sends batches to a HEC.
pub struct SplunkSink {
    config: SplunkConfig,
    http: reqwest::Client,
    /// `,"host":..,"sourcetype":..,"event":`: the same after every event's time.
    envelope: String,
    /// The channel acknowledgements are asked on: one per sink instance, as Splunk
    /// wants a channel per client.
    channel: String,
}

impl std::fmt::Debug for SplunkSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplunkSink").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A HEC answer: `{"text":"Success","code":0}`, with `ackId` under acknowledgement and
/// `invalid-event-number` on code 6.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    text: String,
    code: Option<i64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<u64>,
}

/// The answer to an acknowledgement poll: `{"acks":{"7":true}}`.
#[derive(Debug, Deserialize)]
struct Acks {
    acks: std::collections::HashMap<String, bool>,
}

impl SplunkSink {
    /// # Errors
    /// A `ca_file` that cannot be used, a client that cannot be built.
    pub fn new(config: SplunkConfig) -> Result<Self, String> {
        let http = client(config.ca_file.as_deref())?;
        let mut envelope = String::new();
        for (key, value) in [
            ("host", config.host.as_deref()),
            ("source", config.source.as_deref()),
            ("sourcetype", Some(config.sourcetype.as_str())),
            ("index", config.index.as_deref()),
        ] {
            if let Some(v) = value {
                write!(envelope, ",\"{key}\":{}", serde_json::to_string(v).expect("a string")).expect("to memory");
            }
        }
        envelope.push_str(",\"event\":");
        Ok(Self { config, http, envelope, channel: channel_id() })
    }

    /// The request body: one `{"time":..,...,"event":<line>}` per event, the event's
    /// line embedded as it is (it is JSON already).
    #[must_use]
    pub fn body(&self, batch: &Batch) -> Vec<u8> {
        let size: usize = batch.events.iter().map(|e| e.line.len() + self.envelope.len() + 30).sum();
        let mut body = String::with_capacity(size);
        for e in &batch.events {
            // Epoch seconds with milliseconds, as HEC's `time` takes them.
            let ms = e.timestamp.as_millisecond();
            write!(body, "{{\"time\":{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000)).expect("to memory");
            body.push_str(&self.envelope);
            body.push_str(&e.line);
            body.push_str("}\n");
        }
        body.into_bytes()
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(format!("{}{path}", self.config.url.expose()))
            .timeout(self.config.timeout)
            .header(reqwest::header::AUTHORIZATION, format!("Splunk {}", self.config.token.expose()))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if self.config.ack {
            request = request.header("X-Splunk-Request-Channel", &self.channel);
        }
        request
    }

    /// Waits until the indexers acknowledge `id`, polling with a growing pause, for at
    /// most the sink's `timeout`.
    async fn acknowledged(&self, id: u64) -> Result<(), SendError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut pause = ACK_POLL_FIRST;
        loop {
            let polled = self.post("/services/collector/ack").body(format!("{{\"acks\":[{id}]}}")).send().await;
            let last = match polled {
                Ok(response) if response.status().is_success() => {
                    let text = read_answer(response).await;
                    match serde_json::from_str::<Acks>(&text) {
                        Ok(acks) if acks.acks.get(&id.to_string()) == Some(&true) => return Ok(()),
                        Ok(_) => String::from("not yet indexed"),
                        Err(_) => format!("an acknowledgement answer that is not HEC's: {}", quote(&text)),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let after = tfaudit_alerts::destination::retry_after(response.headers());
                    let answer = serde_json::from_str::<Answer>(&read_answer(response).await).unwrap_or_default();
                    match judge(status, &answer, after) {
                        // Busy or failing for now: the acknowledgement may still come.
                        SendError::Retry { error, .. } => error,
                        refused => return Err(refused),
                    }
                }
                Err(e) => unanswered(e).message().to_owned(),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                // HEC's acknowledgement is at least once by design: a request not
                // acknowledged in time may still be indexed, and it is sent again, so
                // Splunk can hold these events twice.
                return Err(SendError::Retry {
                    error: format!(
                        "the indexers did not acknowledge the batch (ackId {id}) within {:?} ({last}); it is sent again",
                        self.config.timeout
                    ),
                    after: None,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(ACK_POLL_MAX);
        }
    }
}

/// A random (version 4) UUID, the form Splunk asks channels to have.
fn channel_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// What a HEC answer other than success means for the batch.
fn judge(status: reqwest::StatusCode, answer: &Answer, after: Option<Duration>) -> SendError {
    let code = answer.code.map_or(String::new(), |c| format!(" (HEC code {c})"));
    let said = if answer.text.is_empty() { String::new() } else { format!(": {}", quote(&answer.text)) };
    let error = format!("the collector answered {status}{code}{said}");
    match answer.code {
        // Invalid content: the runner splits the batch to find the events refused.
        Some(5 | 6 | 12 | 13) => {
            let at = answer.invalid_event.map_or(String::new(), |n| format!(" (event {n} of the request)"));
            SendError::Invalid { error: format!("{error}{at}") }
        }
        Some(8 | 9 | 18..=20) => SendError::Retry { error, after },
        Some(1..=4) => SendError::Refused { error: format!("{error}; check the sink's token and that it is enabled") },
        Some(7) => SendError::Refused { error: format!("{error}; the token may not write to this index") },
        Some(10 | 11) => SendError::Refused {
            error: format!("{error}; the token has indexer acknowledgement turned on: set ack = true on the sink"),
        },
        Some(14) => SendError::Refused {
            error: format!(
                "{error}; indexer acknowledgement is off for this token: turn it on in Splunk or set ack = false"
            ),
        },
        _ if status.is_server_error() || matches!(status.as_u16(), 408 | 429) => SendError::Retry { error, after },
        _ if status.is_redirection() => SendError::Refused {
            error: format!("{error} (a redirect, not followed: set the sink's url to where it points)"),
        },
        _ if matches!(status.as_u16(), 401 | 403) => {
            SendError::Refused { error: format!("{error}; check the sink's token and that it is enabled") }
        }
        _ => SendError::Refused { error },
    }
}

impl Sink for SplunkSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let body = self.body(batch);
            let request = self.post("/services/collector/event");
            let request = if self.config.gzip {
                request.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gzip(&body))
            } else {
                request.body(body)
            };
            let response = request.send().await.map_err(unanswered)?;
            let status = response.status();
            let after = tfaudit_alerts::destination::retry_after(response.headers());
            let text = read_answer(response).await;
            let answer = serde_json::from_str::<Answer>(&text);
            if !status.is_success() {
                let answer = answer.unwrap_or_else(|_| Answer { text, ..Answer::default() });
                return Err(judge(status, &answer, after));
            }
            let answer = match answer {
                Ok(a) if a.code.is_none_or(|c| c == 0) => a,
                Ok(a) => return Err(judge(status, &a, after)),
                Err(_) => {
                    return Err(SendError::Refused {
                        error: format!(
                            "the collector answered {status} with something that is not HEC's answer: {}; is url the HEC's base address?",
                            quote(&text)
                        ),
                    });
                }
            };
            if !self.config.ack {
                return Ok(Delivered::all());
            }
            let Some(id) = answer.ack_id else {
                return Err(SendError::Refused {
                    error: String::from(
                        "the collector took the batch without an ackId: indexer acknowledgement is off for this token; turn it on in Splunk or set ack = false",
                    ),
                });
            };
            self.acknowledged(id).await?;
            Ok(Delivered::all())
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let response = self
                .http
                .get(format!("{}/services/collector/health", self.config.url.expose()))
                .timeout(self.config.timeout)
                .send()
                .await
                .map_err(|e| {
                    format!("cannot reach the collector: {}", tfaudit_api::client::error_chain(&e.without_url()))
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            Err(format!("the collector is not healthy: it answered {status}: {}", quote(&read_answer(response).await)))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use jiff::Timestamp;

    use super::*;
    use crate::Event;

    const TOKEN: &str = "hec-token-6f1d2c";

    /// What the in-test collector does with each request to `/services/collector/event`.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Mode {
        Accept,
        /// Code 9 with 503 for this many requests, then accept.
        Busy(usize),
        /// Code 6 when a request holds an event whose id is `"bad"`.
        RefuseBad,
    }

    #[derive(Default)]
    struct Hec {
        /// Each event request: its parsed envelopes.
        requests: Mutex<Vec<Vec<serde_json::Value>>>,
        channels: Mutex<Vec<String>>,
        /// How many polls answer `false` before `true`.
        polls_before_ack: usize,
        polls: Mutex<usize>,
        never_ack: bool,
    }

    /// A collector on 127.0.0.1 answering as Splunk documents: the token checked
    /// (401 code 2 without, 403 code 4 when wrong), envelopes parsed (400 code 6 with
    /// `invalid-event-number` on a bad one), busy (503 code 9), and with acknowledgement
    /// `ackId`s per channel answered on `/services/collector/ack`.
    async fn collector(hec: Arc<Hec>, mode: Mode, ack: bool) -> String {
        use axum::routing::{get, post};
        let events = {
            let hec = hec.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let hec = hec.clone();
                async move {
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    match header("authorization").strip_prefix("Splunk ") {
                        None => return (StatusCode::UNAUTHORIZED, r#"{"text":"Token is required","code":2}"#.into()),
                        Some(t) if t != TOKEN => {
                            return (StatusCode::FORBIDDEN, r#"{"text":"Invalid token","code":4}"#.into());
                        }
                        Some(_) => {}
                    }
                    let bytes = if header("content-encoding") == "gzip" {
                        let mut out = Vec::new();
                        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
                        out
                    } else {
                        body.to_vec()
                    };
                    let mut envelopes = Vec::new();
                    for (n, v) in
                        serde_json::Deserializer::from_slice(&bytes).into_iter::<serde_json::Value>().enumerate()
                    {
                        let Ok(v) = v else {
                            return (
                                StatusCode::BAD_REQUEST,
                                format!(r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{n}}}"#),
                            );
                        };
                        if mode == Mode::RefuseBad && v["event"]["id"] == "bad" {
                            return (
                                StatusCode::BAD_REQUEST,
                                format!(r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{n}}}"#),
                            );
                        }
                        envelopes.push(v);
                    }
                    let mut requests = hec.requests.lock().unwrap();
                    requests.push(envelopes);
                    if let Mode::Busy(n) = mode
                        && requests.len() <= n
                    {
                        return (StatusCode::SERVICE_UNAVAILABLE, r#"{"text":"Server is busy","code":9}"#.into());
                    }
                    if !ack {
                        return (StatusCode::OK, r#"{"text":"Success","code":0}"#.into());
                    }
                    let channel = header("x-splunk-request-channel");
                    if channel.is_empty() {
                        return (StatusCode::BAD_REQUEST, r#"{"text":"Data channel is missing","code":10}"#.into());
                    }
                    hec.channels.lock().unwrap().push(channel);
                    let id = requests.len() - 1;
                    (StatusCode::OK, format!(r#"{{"text":"Success","code":0,"ackId":{id}}}"#))
                }
            }
        };
        let acks = {
            let hec = hec.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let hec = hec.clone();
                async move {
                    assert!(headers.contains_key("x-splunk-request-channel"));
                    let asked: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let mut polls = hec.polls.lock().unwrap();
                    *polls += 1;
                    let done = !hec.never_ack && *polls > hec.polls_before_ack;
                    let acks: serde_json::Map<String, serde_json::Value> = asked["acks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|id| (id.to_string(), serde_json::Value::Bool(done)))
                        .collect();
                    serde_json::json!({ "acks": acks }).to_string()
                }
            }
        };
        let app = axum::Router::new()
            .route("/services/collector/event", post(events))
            .route("/services/collector/ack", post(acks))
            .route("/services/collector/health", get(|| async { r#"{"text":"HEC is healthy","code":17}"# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn config(url: &str, ack: bool) -> SplunkConfig {
        SplunkConfig {
            url: Secret::new(url),
            token: Secret::new(TOKEN),
            index: Some("audit".into()),
            source: None,
            sourcetype: DEFAULT_SOURCETYPE.into(),
            host: Some("tfaudit-1".into()),
            ack,
            gzip: true,
            timeout: Duration::from_secs(5),
            ca_file: None,
        }
    }

    fn batch(ids: &[&str]) -> Batch {
        let at: Timestamp = "2026-11-30T10:00:00.25Z".parse().unwrap();
        let events = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Event::from_json(i as i64 + 1, id, at, &format!(r#"{{"id":"{id}","type":"run"}}"#)))
            .collect();
        Batch::new("splunk", events)
    }

    #[test]
    fn body_is_concatenated_envelopes_with_the_event_embedded_and_unset_keys_left_out() {
        let sink = SplunkSink::new(config("http://127.0.0.1:1", false)).unwrap();
        let body = String::from_utf8(sink.body(&batch(&["a", "b"]))).unwrap();
        assert_eq!(
            body,
            "{\"time\":1796032800.250,\"host\":\"tfaudit-1\",\"sourcetype\":\"hashicorp:terraform:audit\",\"index\":\"audit\",\"event\":{\"id\":\"a\",\"type\":\"run\"}}\n\
             {\"time\":1796032800.250,\"host\":\"tfaudit-1\",\"sourcetype\":\"hashicorp:terraform:audit\",\"index\":\"audit\",\"event\":{\"id\":\"b\",\"type\":\"run\"}}\n"
        );
        let mut quoted = config("http://127.0.0.1:1", false);
        quoted.source = Some("a \"quoted\" source".into());
        let body = String::from_utf8(SplunkSink::new(quoted).unwrap().body(&batch(&["a"]))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["source"], "a \"quoted\" source");
        assert_eq!(v["event"]["id"], "a");
    }

    #[tokio::test]
    async fn acknowledged_only_once_the_indexers_say_so() {
        let hec = Arc::new(Hec { polls_before_ack: 2, ..Hec::default() });
        let url = collector(hec.clone(), Mode::Accept, true).await;
        let sink = SplunkSink::new(config(&url, true)).unwrap();
        assert_eq!(sink.send(&batch(&["a", "b", "c"])).await, Ok(Delivered::all()));
        assert_eq!(*hec.polls.lock().unwrap(), 3, "polled until the ack was true");
        let requests = hec.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].iter().map(|v| v["event"]["id"].as_str().unwrap()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(requests[0][0]["time"].as_f64(), Some(1_796_032_800.25));
        // One channel per sink, a UUID.
        sink.send(&batch(&["d"])).await.unwrap();
        let channels = hec.channels.lock().unwrap().clone();
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[0], channels[1]);
        assert_eq!(channels[0].len(), 36);
        assert_eq!(channels[0].as_bytes()[14], b'4');
        assert!(sink.health().await.is_ok());
    }

    #[tokio::test]
    async fn not_acknowledged_in_time_is_sent_again() {
        let hec = Arc::new(Hec { never_ack: true, ..Hec::default() });
        let url = collector(hec.clone(), Mode::Accept, true).await;
        let mut config = config(&url, true);
        config.timeout = Duration::from_millis(300);
        let sink = SplunkSink::new(config).unwrap();
        match sink.send(&batch(&["a"])).await {
            Err(SendError::Retry { error, .. }) => assert!(error.contains("did not acknowledge"), "{error}"),
            other => panic!("{other:?}"),
        }
        // Polled with pauses, not in a busy loop.
        let polls = *hec.polls.lock().unwrap();
        assert!((2..=10).contains(&polls), "{polls} polls");
    }

    #[tokio::test]
    async fn a_token_without_acknowledgement_is_refused_when_ack_is_asked() {
        let hec = Arc::new(Hec::default());
        let url = collector(hec, Mode::Accept, false).await;
        match SplunkSink::new(config(&url, true)).unwrap().send(&batch(&["a"])).await {
            Err(SendError::Refused { error }) => assert!(error.contains("set ack = false"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn busy_is_retried_invalid_is_split_and_a_wrong_token_refused_without_showing_it() {
        let hec = Arc::new(Hec::default());
        let url = collector(hec.clone(), Mode::Busy(1), false).await;
        let sink = SplunkSink::new(config(&url, false)).unwrap();
        match sink.send(&batch(&["a"])).await {
            Err(SendError::Retry { error, .. }) => assert!(error.contains("HEC code 9"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sink.send(&batch(&["a"])).await, Ok(Delivered::all()));

        let url = collector(Arc::new(Hec::default()), Mode::RefuseBad, false).await;
        let sink = SplunkSink::new(config(&url, false)).unwrap();
        match sink.send(&batch(&["a", "bad", "c"])).await {
            Err(SendError::Invalid { error }) => {
                assert!(error.contains("HEC code 6") && error.contains("event 1 of the request"), "{error}");
            }
            other => panic!("{other:?}"),
        }

        let mut wrong = config(&url, false);
        wrong.token = Secret::new("not-the-token-93ab");
        let sink = SplunkSink::new(wrong).unwrap();
        let error = sink.send(&batch(&["a"])).await.unwrap_err();
        assert!(matches!(error, SendError::Refused { .. }), "{error:?}");
        assert!(error.message().contains("HEC code 4"), "{error:?}");
        let shown = format!("{error:?} {sink:?}");
        for secret in ["not-the-token-93ab", url.as_str()] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[tokio::test]
    async fn nobody_listening_is_retried_and_named_without_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = format!("http://{closed}");
        let sink = SplunkSink::new(config(&url, false)).unwrap();
        let error = sink.send(&batch(&["a"])).await.unwrap_err();
        assert!(matches!(error, SendError::Retry { .. }), "{error:?}");
        assert!(!error.message().contains(&closed.to_string()), "{error:?}");
        let health = sink.health().await.unwrap_err();
        assert!(health.contains("cannot reach the collector") && !health.contains(&closed.to_string()), "{health}");
    }
}
