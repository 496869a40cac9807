//! `type = "datadog"`: Datadog's Logs API v2 (`POST https://http-intake.logs.<site>/api/v2/logs`,
//! `DD-API-KEY`), a JSON array of logs per request.
//!
//! Followed from Datadog's API reference ("Send logs", "Validate API key", "Rate
//! limits") and its log date remapper page:
//! - at most 1,000 logs and 5 MB (uncompressed) per request, 1 MB per log: a batch is
//!   sent as as many requests as the limits need, all accepted before it counts as
//!   delivered. Datadog truncates a log over 1 MB and still answers 2xx; a truncated
//!   audit event is worse than none, so such an event is not sent and becomes a dead
//!   letter instead, with the reason;
//! - timestamps at most 18 hours in the past: older events are not sent and are counted
//!   as skipped (the sink's default `start` is 18 hours back for the same reason);
//! - answers: 202 accepted; 400 bad payload and 413 too large (the content: the batch
//!   is split); 401/403 the key (the sink stops); 408, 429 and 5xx sent again, after
//!   `Retry-After` or `X-RateLimit-Reset` when given.
//!
//! Each log is `{"message":"<the event line>","ddsource":..,"service":..,"hostname":..,
//! "ddtags":..,"timestamp":<the event's time in epoch milliseconds>}`. `message` holds the
//! event as the sink's format renders it: Datadog parses a message that is JSON into the
//! log's attributes, so every field of the event is searchable as `@field` and the whole
//! event stays readable as sent. `timestamp` is first among the attributes Datadog dates
//! a log by, so each log is dated by its event whatever the format, not by its arrival.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tfaudit_config::SinkSection;
use tfaudit_model::Secret;

use crate::http::{client, gzip, quote, read_answer, unanswered};
use crate::{Batch, Delivered, Event, SendError, Sink, SinkFuture};

/// Logs per request at most.
pub const MAX_LOGS: usize = 1_000;
/// Bytes per request at most, uncompressed (5 MB, counted in decimal to stay under).
pub const MAX_REQUEST_BYTES: usize = 5_000_000;
/// Bytes per log at most (1 MB, counted in decimal to stay under).
pub const MAX_LOG_BYTES: usize = 1_000_000;
/// How old an event Datadog still takes.
pub const MAX_AGE: SignedDuration = SignedDuration::from_hours(18);
/// Events this close to [`MAX_AGE`] would be older than it by the time Datadog reads
/// them: they are skipped too.
const AGE_MARGIN: SignedDuration = SignedDuration::from_mins(1);

/// The Datadog sink's own settings.
#[derive(Debug)]
pub struct DatadogConfig {
    /// The logs intake's base: `https://http-intake.logs.<site>`, or `url` (a proxy).
    pub intake: Secret,
    /// Where the API key is checked: `https://api.<site>`, or `url` when set.
    pub api: Secret,
    /// Whether `url` replaced the site's addresses.
    pub proxied: bool,
    pub api_key: Secret,
    /// `ddsource` (`source`, default `terraform`).
    pub source: String,
    pub service: Option<String>,
    /// `hostname` (`host`).
    pub host: Option<String>,
    /// `ddtags`, joined by commas.
    pub tags: Vec<String>,
    pub gzip: bool,
    pub timeout: Duration,
}

impl DatadogConfig {
    /// # Errors
    /// A missing or unreadable secret, a site or URL that is not one, a tag with a comma.
    pub fn from_section(section: &SinkSection) -> Result<Self, String> {
        let name = &section.name;
        let api_key = section.api_key.as_ref().ok_or_else(|| format!("sink {name:?} (datadog) needs api_key"))?;
        let api_key = api_key.resolve(&format!("sink {name}: api_key"))?;
        if api_key.expose().trim().is_empty() {
            return Err(format!("sink {name:?}: api_key is empty"));
        }
        let (intake, api, proxied) = if let Some(url) = &section.url {
            if section.site.is_some() {
                return Err(format!("sink {name:?}: set site or url, not both (url replaces the site's intake)"));
            }
            let url = url.resolve(&format!("sink {name}: url"))?;
            match reqwest::Url::parse(url.expose()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(format!("sink {name:?}: url must be an http:// or https:// address")),
            }
            let base = Secret::new(url.expose().trim_end_matches('/'));
            (base.clone(), base, true)
        } else {
            let site = section.site.as_deref().unwrap_or("datadoghq.com").trim();
            let valid = !site.is_empty()
                && site.contains('.')
                && site.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !valid {
                return Err(format!(
                    "sink {name:?}: site {site:?} is not a Datadog site such as datadoghq.com or datadoghq.eu"
                ));
            }
            (Secret::new(format!("https://http-intake.logs.{site}")), Secret::new(format!("https://api.{site}")), false)
        };
        let named = |key: &str, value: &Option<String>| match value.as_deref().map(str::trim) {
            Some("") => Err(format!("sink {name:?}: {key} is empty")),
            v => Ok(v.map(str::to_owned)),
        };
        let tags = section.tags.clone().unwrap_or_default();
        if let Some(bad) = tags.iter().find(|t| t.trim().is_empty() || t.contains(',')) {
            return Err(format!(
                "sink {name:?}: tag {bad:?} must be one non-empty tag such as \"env:prod\" (no comma)"
            ));
        }
        let timeout = crate::timeout(section)?;
        Ok(Self {
            intake,
            api,
            proxied,
            api_key,
            source: named("source", &section.source)?.unwrap_or_else(|| "terraform".to_owned()),
            service: named("service", &section.service)?,
            host: named("host", &section.host)?,
            tags,
            gzip: section.gzip.unwrap_or(false),
            timeout,
        })
    }
}

/// Sends batches to Datadog's logs intake.
pub struct DatadogSink {
    config: DatadogConfig,
    http: reqwest::Client,
    /// `,"ddsource":..,"ddtags":..`: the same in every log.
    attributes: String,
}

impl std::fmt::Debug for DatadogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatadogSink").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The logs of one request being filled.
struct Request {
    body: Vec<u8>,
    logs: usize,
}

impl Request {
    fn new() -> Self {
        Self { body: Vec::from(*b"["), logs: 0 }
    }

    /// Whether `log` still fits within the request limits.
    fn fits(&self, log: &[u8]) -> bool {
        // The comma before it and the closing bracket.
        self.logs < MAX_LOGS && self.body.len() + log.len() + 2 <= MAX_REQUEST_BYTES
    }

    fn push(&mut self, log: &[u8]) {
        if self.logs > 0 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(log);
        self.logs += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        self.body.push(b']');
        self.body
    }
}

impl DatadogSink {
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: DatadogConfig) -> Result<Self, String> {
        let http = client(None)?;
        let mut attributes = String::new();
        let tags = config.tags.join(",");
        for (key, value) in [
            ("ddsource", Some(config.source.as_str())),
            ("service", config.service.as_deref()),
            ("hostname", config.host.as_deref()),
            ("ddtags", (!tags.is_empty()).then_some(tags.as_str())),
        ] {
            if let Some(v) = value {
                write!(attributes, ",\"{key}\":{}", serde_json::to_string(v).expect("a string")).expect("to memory");
            }
        }
        Ok(Self { config, http, attributes })
    }

    /// The event as one Datadog log.
    #[must_use]
    pub fn log(&self, event: &Event) -> Vec<u8> {
        let mut log = Vec::with_capacity(event.line.len() + event.line.len() / 8 + self.attributes.len() + 40);
        log.extend_from_slice(b"{\"message\":");
        serde_json::to_writer(&mut log, &event.line).expect("to memory");
        log.extend_from_slice(self.attributes.as_bytes());
        std::io::Write::write_fmt(&mut log, format_args!(",\"timestamp\":{}}}", event.timestamp.as_millisecond()))
            .expect("to memory");
        log
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), SendError> {
        let request = self
            .http
            .post(format!("{}/api/v2/logs", self.config.intake.expose()))
            .timeout(self.config.timeout)
            .header("DD-API-KEY", self.config.api_key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let request = if self.config.gzip {
            request.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gzip(&body))
        } else {
            request.body(body)
        };
        let response = request.send().await.map_err(unanswered)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = tfaudit_alerts::destination::retry_after(response.headers()).or_else(|| {
            let reset = response.headers().get("X-RateLimit-Reset")?.to_str().ok()?.trim().parse::<u64>().ok()?;
            Some(Duration::from_secs(reset.min(3600)))
        });
        let error = format!("Datadog answered {status}: {}", quote(&read_answer(response).await));
        Err(match status.as_u16() {
            400 | 413 => SendError::Invalid { error },
            401 | 403 => SendError::Refused {
                error: format!("{error}; check api_key (a key belongs to one Datadog site: check site too)"),
            },
            408 | 429 => SendError::Retry { error, after },
            _ if status.is_server_error() => SendError::Retry { error, after },
            _ if status.is_redirection() => SendError::Refused {
                error: format!("{error} (a redirect, not followed: set the sink's url or site to where it points)"),
            },
            _ => SendError::Refused { error },
        })
    }
}

impl Sink for DatadogSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let oldest = Timestamp::now() - (MAX_AGE - AGE_MARGIN);
            let mut taken = Delivered::default();
            let mut request = Request::new();
            // Requests go out as they fill, so a batch never sits whole in memory twice.
            for e in &batch.events {
                if e.timestamp < oldest {
                    taken.skipped.push(e.seq);
                    continue;
                }
                let log = self.log(e);
                if log.len() > MAX_LOG_BYTES {
                    taken.rejected.push((
                        e.seq,
                        format!(
                            "the event is {} bytes as a Datadog log, over the Logs API's {MAX_LOG_BYTES} bytes per log (Datadog would truncate it)",
                            log.len()
                        ),
                    ));
                    continue;
                }
                if !request.fits(&log) {
                    self.post(std::mem::replace(&mut request, Request::new()).finish()).await?;
                }
                request.push(&log);
            }
            if request.logs > 0 {
                self.post(request.finish()).await?;
            }
            Ok(taken)
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let response = self
                .http
                .get(format!("{}/api/v1/validate", self.config.api.expose()))
                .timeout(self.config.timeout)
                .header("DD-API-KEY", self.config.api_key.expose())
                .send()
                .await
                .map_err(|e| format!("cannot reach Datadog: {}", tfaudit_api::client::error_chain(&e.without_url())))?;
            let status = response.status();
            let text = read_answer(response).await;
            let valid = serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["valid"] == true);
            match status.as_u16() {
                200..=299 if valid => Ok(()),
                401 | 403 => Err(format!("Datadog refused the API key ({status}): check api_key and site")),
                // A proxy in front of the intake need not pass the key check on: it
                // answered, and the key is checked by the first batch.
                404 | 405 if self.config.proxied => Ok(()),
                _ => Err(format!("Datadog's key check answered {status}: {}", quote(&text))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};

    use super::*;

    const KEY: &str = "dd-api-key-5be1f0";

    #[derive(Default)]
    struct Intake {
        /// Each accepted request's logs.
        requests: Mutex<Vec<Vec<serde_json::Value>>>,
        /// Each request's uncompressed size.
        sizes: Mutex<Vec<usize>>,
        /// Answer this status (with `Retry-After: 7`) to everything.
        fail: Option<u16>,
    }

    /// A logs intake on 127.0.0.1 that holds requests to Datadog's documented limits:
    /// 403 on a wrong `DD-API-KEY`, 413 over 5 MB uncompressed, 400 over 1,000 logs or
    /// on a payload that is not a JSON array of logs with a `message`, 202 otherwise;
    /// and `/api/v1/validate` as Datadog answers it.
    async fn intake(state: Arc<Intake>) -> String {
        use axum::routing::{get, post};
        let logs = {
            let state = state.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    if header("dd-api-key") != KEY {
                        return (StatusCode::FORBIDDEN, HeaderMap::new(), r#"{"errors":["Forbidden"]}"#);
                    }
                    if let Some(code) = state.fail {
                        let mut h = HeaderMap::new();
                        h.insert("retry-after", "7".parse().unwrap());
                        return (StatusCode::from_u16(code).unwrap(), h, r#"{"errors":["Try again"]}"#);
                    }
                    let bytes = if header("content-encoding") == "gzip" {
                        let mut out = Vec::new();
                        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
                        out
                    } else {
                        body.to_vec()
                    };
                    state.sizes.lock().unwrap().push(bytes.len());
                    if bytes.len() > 5_000_000 {
                        return (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            HeaderMap::new(),
                            r#"{"errors":["Payload too large"]}"#,
                        );
                    }
                    let Ok(serde_json::Value::Array(logs)) = serde_json::from_slice(&bytes) else {
                        return (StatusCode::BAD_REQUEST, HeaderMap::new(), r#"{"errors":["Bad request"]}"#);
                    };
                    if logs.len() > 1_000 || logs.iter().any(|l| !l["message"].is_string()) {
                        return (StatusCode::BAD_REQUEST, HeaderMap::new(), r#"{"errors":["Bad request"]}"#);
                    }
                    state.requests.lock().unwrap().push(logs);
                    (StatusCode::ACCEPTED, HeaderMap::new(), "{}")
                }
            }
        };
        let validate = |headers: HeaderMap| async move {
            if headers.get("dd-api-key").and_then(|v| v.to_str().ok()) == Some(KEY) {
                (StatusCode::OK, r#"{"valid":true}"#)
            } else {
                (StatusCode::FORBIDDEN, r#"{"errors":["Forbidden"]}"#)
            }
        };
        let app = axum::Router::new()
            .route("/api/v2/logs", post(logs))
            .route("/api/v1/validate", get(validate))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn config(url: &str) -> DatadogConfig {
        DatadogConfig {
            intake: Secret::new(url),
            api: Secret::new(url),
            proxied: true,
            api_key: Secret::new(KEY),
            source: "terraform".into(),
            service: Some("hcp-terraform".into()),
            host: Some("tfaudit-1".into()),
            tags: vec!["env:prod".into(), "team:sec".into()],
            gzip: true,
            timeout: Duration::from_secs(10),
        }
    }

    fn event(seq: i64, at: Timestamp, padding: usize) -> Event {
        let line = format!(r#"{{"id":"ev-{seq}","type":"run","pad":"{}"}}"#, "x".repeat(padding));
        Event::from_json(seq, &format!("ev-{seq}"), at, &line)
    }

    fn recent() -> Timestamp {
        Timestamp::now() - SignedDuration::from_hours(1)
    }

    fn ids(intake: &Intake) -> Vec<String> {
        let requests = intake.requests.lock().unwrap();
        requests
            .iter()
            .flatten()
            .map(|l| {
                let event: serde_json::Value = serde_json::from_str(l["message"].as_str().unwrap()).unwrap();
                event["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn a_log_carries_the_event_as_its_message_and_is_dated_by_it() {
        let sink = DatadogSink::new(config("http://127.0.0.1:1")).unwrap();
        let at: Timestamp = "2026-11-30T10:00:00.25Z".parse().unwrap();
        let e = Event::from_json(1, "a", at, r#"{"id":"a","note":"say \"hi\"\n"}"#);
        let log: serde_json::Value = serde_json::from_slice(&sink.log(&e)).unwrap();
        assert_eq!(
            log,
            serde_json::json!({
                "message": e.line,
                "ddsource": "terraform",
                "service": "hcp-terraform",
                "hostname": "tfaudit-1",
                "ddtags": "env:prod,team:sec",
                "timestamp": 1_796_032_800_250_i64,
            })
        );
        let mut bare = config("http://127.0.0.1:1");
        (bare.service, bare.host, bare.tags) = (None, None, Vec::new());
        let log: serde_json::Value = serde_json::from_slice(&DatadogSink::new(bare).unwrap().log(&e)).unwrap();
        let mut keys: Vec<&str> = log.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["ddsource", "message", "timestamp"]);
    }

    #[tokio::test]
    async fn a_batch_is_split_within_the_count_limit_and_all_sent() {
        let state = Arc::new(Intake::default());
        let sink = DatadogSink::new(config(&intake(state.clone()).await)).unwrap();
        let events: Vec<Event> = (1..=2_500).map(|seq| event(seq, recent(), 10)).collect();
        let batch = Batch::new("dd", events);
        assert_eq!(sink.send(&batch).await, Ok(Delivered::all()));
        let sizes: Vec<usize> = state.requests.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);
        assert_eq!(ids(&state), (1..=2_500).map(|s| format!("ev-{s}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_batch_is_split_within_the_byte_limit_and_an_oversized_log_is_refused() {
        let state = Arc::new(Intake::default());
        let sink = DatadogSink::new(config(&intake(state.clone()).await)).unwrap();
        // 13 events of about 900 KB (over 11 MB) and one of 1.1 MB.
        let mut events: Vec<Event> = (1..=13).map(|seq| event(seq, recent(), 900_000)).collect();
        events.insert(6, event(99, recent(), 1_100_000));
        let batch = Batch::new("dd", events);
        let taken = sink.send(&batch).await.unwrap();
        assert_eq!(taken.skipped, Vec::<i64>::new());
        assert_eq!(taken.rejected.len(), 1);
        assert_eq!(taken.rejected[0].0, 99);
        assert!(taken.rejected[0].1.contains("bytes per log"), "{}", taken.rejected[0].1);
        let sizes = state.sizes.lock().unwrap().clone();
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert!(sizes.iter().all(|s| *s <= MAX_REQUEST_BYTES), "{sizes:?}");
        assert_eq!(ids(&state), (1..=13).map(|s| format!("ev-{s}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn events_older_than_18_hours_are_skipped_not_sent() {
        let state = Arc::new(Intake::default());
        let sink = DatadogSink::new(config(&intake(state.clone()).await)).unwrap();
        let old = Timestamp::now() - SignedDuration::from_hours(19);
        let batch = Batch::new("dd", vec![event(1, old, 1), event(2, recent(), 1), event(3, old, 1)]);
        let taken = sink.send(&batch).await.unwrap();
        assert_eq!(taken, Delivered { rejected: Vec::new(), skipped: vec![1, 3] });
        assert_eq!(ids(&state), ["ev-2"]);
        // Nothing left to send: no request at all.
        let batch = Batch::new("dd", vec![event(4, old, 1)]);
        assert_eq!(sink.send(&batch).await.unwrap().skipped, [4]);
        assert_eq!(state.sizes.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn answers_map_to_retry_invalid_and_refused_without_showing_the_key() {
        let batch = Batch::new("dd", vec![event(1, recent(), 1)]);
        let retry =
            DatadogSink::new(config(&intake(Arc::new(Intake { fail: Some(503), ..Intake::default() })).await)).unwrap();
        match retry.send(&batch).await {
            Err(SendError::Retry { after, .. }) => assert_eq!(after, Some(Duration::from_secs(7))),
            other => panic!("{other:?}"),
        }
        let invalid =
            DatadogSink::new(config(&intake(Arc::new(Intake { fail: Some(400), ..Intake::default() })).await)).unwrap();
        assert!(matches!(invalid.send(&batch).await, Err(SendError::Invalid { .. })));

        let url = intake(Arc::new(Intake::default())).await;
        let mut wrong = config(&url);
        wrong.api_key = Secret::new("not-the-key-77c2");
        let sink = DatadogSink::new(wrong).unwrap();
        let error = sink.send(&batch).await.unwrap_err();
        assert!(matches!(error, SendError::Refused { .. }), "{error:?}");
        let health = sink.health().await.unwrap_err();
        assert!(health.contains("check api_key"), "{health}");
        let shown = format!("{error:?} {health} {sink:?}");
        for secret in ["not-the-key-77c2", url.as_str()] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(DatadogSink::new(config(&url)).unwrap().health().await.is_ok());
    }

    #[test]
    fn settings_are_checked_and_the_default_start_is_18_hours_back() {
        let section = |extra: serde_json::Value| {
            let mut v = serde_json::json!({ "name": "dd", "type": "datadog", "api_key": "k-1" });
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<SinkSection>(v).unwrap()
        };
        let c = DatadogConfig::from_section(&section(serde_json::json!({ "site": "datadoghq.eu" }))).unwrap();
        assert_eq!(c.intake.expose(), "https://http-intake.logs.datadoghq.eu");
        assert_eq!(c.api.expose(), "https://api.datadoghq.eu");
        assert_eq!(c.source, "terraform");
        let e = DatadogConfig::from_section(&section(serde_json::json!({ "site": "https://x/" }))).unwrap_err();
        assert!(e.contains("not a Datadog site"), "{e}");
        let e = DatadogConfig::from_section(&section(serde_json::json!({ "tags": ["a,b"] }))).unwrap_err();
        assert!(e.contains("no comma"), "{e}");

        let built = crate::build(&section(serde_json::json!({})), std::path::Path::new(".")).unwrap();
        let crate::Start::Time(t) = built.settings.start else { panic!("{:?}", built.settings.start) };
        let back = Timestamp::now().duration_since(t);
        assert!(back >= MAX_AGE && back < MAX_AGE + SignedDuration::from_mins(1), "{back:?}");
        let built =
            crate::build(&section(serde_json::json!({ "start": "beginning" })), std::path::Path::new(".")).unwrap();
        assert_eq!(built.settings.start, crate::Start::Beginning);
    }
}
