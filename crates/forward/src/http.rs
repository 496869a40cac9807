//! `type = "http"`: batches POSTed as NDJSON to any collector (Sumo Logic, Panther,
//! Cribl, Vector, Logstash, home-grown ones), optionally gzipped and signed as
//! tfaudit's webhooks are, each with an `Idempotency-Key`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tfaudit_config::SinkSection;
use tfaudit_model::Secret;

use crate::{Batch, Delivered, SendError, Sink, SinkFuture};

/// How long a connection may take, whatever the sink's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer is read (to quote it).
const ANSWER_CAP: usize = 4096;

/// The HTTP sink's own settings.
#[derive(Debug)]
pub struct HttpConfig {
    pub url: Secret,
    pub headers: BTreeMap<String, Secret>,
    pub gzip: bool,
    pub secret: Option<Secret>,
    pub timeout: Duration,
    /// Certificate authorities to trust besides the system's (PEM).
    pub ca_file: Option<PathBuf>,
}

impl HttpConfig {
    /// # Errors
    /// A missing or unreadable secret, a URL that is not http(s), a bad header name.
    pub fn from_section(section: &SinkSection, base: &Path) -> Result<Self, String> {
        let name = &section.name;
        let url = section.url.as_ref().ok_or_else(|| format!("sink {name:?} (http) needs url"))?;
        let url = url.resolve(&format!("sink {name}: url"))?;
        match reqwest::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => return Err(format!("sink {name:?}: url must be an http:// or https:// address")),
        }
        let mut headers = BTreeMap::new();
        for (k, v) in &section.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(format!("sink {name:?}: {k:?} is not a header name"));
            }
            headers.insert(k.clone(), v.resolve(&format!("sink {name}: header {k}"))?);
        }
        let secret = section.secret.as_ref().map(|s| s.resolve(&format!("sink {name}: secret"))).transpose()?;
        let timeout = crate::timeout(section)?;
        let ca_file = section.ca_file.as_deref().map(|p| relative_to(base, p));
        Ok(Self { url, headers, gzip: section.gzip.unwrap_or(false), secret, timeout, ca_file })
    }
}

/// POSTs batches.
pub struct HttpSink {
    config: HttpConfig,
    http: reqwest::Client,
}

impl HttpSink {
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots, say).
    pub fn new(config: HttpConfig) -> Result<Self, String> {
        let http = client(config.ca_file.as_deref())?;
        Ok(Self { config, http })
    }
}

/// The HTTP client of every HTTP sink: redirects refused (one would carry the events,
/// and any credentials, wherever a receiver points), and the certificate authorities
/// of `ca_file` (PEM) trusted besides the system's.
///
/// # Errors
/// An unreadable `ca_file` or one without a certificate, or no TLS roots at all.
pub(crate) fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(tfaudit_api::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {} is not PEM: {}", path.display(), tfaudit_api::client::error_chain(&e)))?;
        if certificates.is_empty() {
            return Err(format!("ca_file {} holds no certificate", path.display()));
        }
        builder = builder.tls_certs_merge(certificates);
    }
    builder.build().map_err(|e| tfaudit_api::client::error_chain(&e.without_url()))
}

/// A file a sink names, relative to `base` (the config file's folder) unless absolute.
pub(crate) fn relative_to(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// What a target answered besides success, quoted on one line (redacted, at most 200
/// characters): it can echo events or credentials.
pub(crate) async fn quote_answer(response: reqwest::Response) -> String {
    quote(&read_answer(response).await)
}

/// The NDJSON body: each event on its own line.
#[must_use]
pub fn ndjson(batch: &Batch) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.events.iter().map(|e| e.line.len() + 1).sum());
    for e in &batch.events {
        body.extend_from_slice(e.line.as_bytes());
        body.push(b'\n');
    }
    body
}

/// `body` gzipped, for targets that take `Content-Encoding: gzip`.
pub(crate) fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    encoder.write_all(body).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

impl Sink for HttpSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let body = ndjson(batch);
            let timestamp = jiff::Timestamp::now().as_second();
            let mut request = self
                .http
                .post(self.config.url.expose())
                .timeout(self.config.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .header("Idempotency-Key", batch.idempotency_key())
                .header("X-Tfaudit-Timestamp", timestamp.to_string());
            if let Some(secret) = &self.config.secret {
                // Over the NDJSON as the receiver reads it after any decompression.
                let signature = tfaudit_alerts::destination::webhook_signature(secret.expose(), timestamp, &body);
                request = request.header("X-Tfaudit-Signature", signature);
            }
            for (k, v) in &self.config.headers {
                request = request.header(k.as_str(), v.expose());
            }
            request = if self.config.gzip {
                request.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gzip(&body))
            } else {
                request.body(body)
            };
            let response = match request.send().await {
                Ok(r) => r,
                // The URL can be a secret: errors never show it.
                Err(e) => {
                    return Err(SendError::Retry {
                        error: format!("request failed: {}", tfaudit_api::client::error_chain(&e.without_url())),
                        after: None,
                    });
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(Delivered::all());
            }
            let after = tfaudit_alerts::destination::retry_after(response.headers());
            let error = format!("the receiver answered {status}: {}", quote(&read_answer(response).await));
            if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
                Err(SendError::Retry { error, after })
            } else if status.is_redirection() {
                Err(SendError::Refused {
                    error: format!("{error} (a redirect, not followed: set the sink's url to where it points)"),
                })
            } else if matches!(status.as_u16(), 400 | 413 | 415 | 422) {
                // The content, not the address or the credentials: split to find the
                // events it refuses.
                Err(SendError::Invalid { error })
            } else {
                Err(SendError::Refused { error })
            }
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // Any answer at all means the collector is there; a POST would be data.
            self.http.head(self.config.url.expose()).timeout(self.config.timeout).send().await.map(|_| ()).map_err(
                |e| format!("cannot reach the receiver: {}", tfaudit_api::client::error_chain(&e.without_url())),
            )
        })
    }
}

/// The start of an answer's body, as text.
pub(crate) async fn read_answer(response: reqwest::Response) -> String {
    let text = tfaudit_api::body::read_prefix(response, ANSWER_CAP).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// A receiver's words made safe to show: secrets redacted (before the cut, which could
/// leave part of one unrecognisable), control characters blanked, 200 characters at most.
pub(crate) fn quote(answer: &str) -> String {
    let redacted = tfaudit_api::redact::redact(answer);
    let clean: String = redacted.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    clean.trim().to_owned()
}

/// A request that got no answer, in one line that never holds the URL (it can be a
/// secret): worth sending again.
pub(crate) fn unanswered(e: reqwest::Error) -> crate::SendError {
    crate::SendError::Retry {
        error: format!("request failed: {}", tfaudit_api::client::error_chain(&e.without_url())),
        after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    #[test]
    fn keys_bodies_and_compression() {
        let batch = Batch::new(
            "siem",
            vec![
                Event::from_json(7, "a", jiff::Timestamp::UNIX_EPOCH, r#"{"id":"a"}"#),
                Event::from_json(9, "b", jiff::Timestamp::UNIX_EPOCH, r#"{"id":"b"}"#),
            ],
        );
        assert_eq!(batch.idempotency_key(), "tfaudit-siem-7-9");
        let body = ndjson(&batch);
        assert_eq!(body, b"{\"id\":\"a\"}\n{\"id\":\"b\"}\n");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip(&body)[..]), &mut back).unwrap();
        assert_eq!(back, body);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(tfaudit_alerts::destination::retry_after(&h), Some(Duration::from_secs(7)));
    }
}
