//! HTTP for the audit trail listing: one call, [`Client::fetch_page`], that either
//! returns a page the server really sent or an error that says what to do.
//!
//! Transient failures (5xx, 408, 429, dropped connections, timeouts, bodies cut short
//! or unreadable) are retried with capped exponential backoff and jitter; a 429 waits
//! what the server says (`X-RateLimit-Reset` seconds, or `Retry-After`). A client-side
//! limiter keeps the tool well below the API's 30 requests/s per user, which the user's
//! other tools share. Connection failures (refused, no such host, TLS) are not
//! retried: they almost always mean a wrong address, and `watch` tries again on its
//! next round anyway.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::Timestamp;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, Url};

use crate::page::Page;
use crate::token::Token;

/// How a failing request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of one request before the sync gives up with an error.
    pub max_retries: u32,
    /// The first backoff delay; each retry doubles it, with jitter.
    pub min_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
    /// The longest wait a server's `X-RateLimit-Reset`/`Retry-After` can impose.
    pub max_server_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // 20 retries with delays doubling from 0.5 s to 30 s: a random fault rate of
        // one request in two fails a page once in two million, while a server that is
        // down is given up on after about eight minutes.
        Self {
            max_retries: 20,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_server_delay: Duration::from_secs(300),
        }
    }
}

/// Everything a [`Client`] needs.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The HCP Terraform address, such as `https://app.terraform.io`.
    pub address: String,
    pub token: Token,
    /// Requests per second at most; `None` for no client-side limit.
    pub rate_limit: Option<NonZeroU32>,
    pub retry: RetryPolicy,
    /// Time allowed for one request, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// The largest page body read; a larger one fails the request.
    pub max_page_bytes: u64,
}

impl ClientOptions {
    /// Options with the defaults: 10 requests/s, 20 retries, 60 s per request, pages
    /// of up to 64 MiB.
    #[must_use]
    pub fn new(address: impl Into<String>, token: Token) -> Self {
        Self {
            address: address.into(),
            token,
            rate_limit: NonZeroU32::new(10),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_page_bytes: crate::body::DEFAULT_PAGE_CAP,
        }
    }
}

/// What one page request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub since: Option<Timestamp>,
    pub page: u64,
    pub page_size: u32,
}

/// Why a page could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{address:?} is not a usable address ({reason}); give a URL such as https://app.terraform.io")]
    InvalidAddress { address: String, reason: String },
    #[error(
        "the token was rejected by {address} (401 Unauthorized); create an organization token or an audit trail token \
         in HCP Terraform (Organization settings > API tokens) and pass it with TFE_TOKEN or --token-file"
    )]
    Unauthorized { address: String },
    #[error(
        "{address} answered 404 for the audit trail: this endpoint needs an organization token or audit trail token \
         (user and team tokens do not work) on an organization with audit logging (HCP Terraform Standard/Premium; \
         not Terraform Enterprise)"
    )]
    NotEntitled { address: String },
    #[error("{address} refused the request with {status}: {detail}")]
    Refused { address: String, status: u16, detail: String },
    #[error("could not connect to {address}: {cause}; check the address (--address or TFE_ADDRESS) and the network")]
    Connect { address: String, cause: String },
    #[error(
        "{address} kept failing after {retries} retries (last: {last}); try again later, or allow more with --max-retries"
    )]
    RetriesExhausted { address: String, retries: u32, last: String },
    #[error(
        "{address} sent page {got} when page {asked} was asked for; it does not page the way the audit trail API does"
    )]
    PageMismatch { address: String, asked: u64, got: u64 },
    #[error(
        "{address} sent a page larger than the limit of {cap} bytes{}; if its pages really are that large, \
         raise --max-page-bytes (max_page_bytes in [sync]) or ask for fewer events with --page-size",
        declared.map(|d| format!(" (it declared {d} bytes)")).unwrap_or_default()
    )]
    PageTooLarge { address: String, cap: u64, declared: Option<u64> },
    #[error("could not set up HTTP: {0}")]
    Setup(String),
}

impl ApiError {
    /// Whether the error is about credentials or entitlement, which no retry fixes.
    #[must_use]
    pub fn is_credentials(&self) -> bool {
        matches!(self, Self::Unauthorized { .. } | Self::NotEntitled { .. })
    }
}

/// Counters of what a client did, for `status`, the sync report and metrics.
#[derive(Debug, Default)]
pub struct ClientStats {
    requests: AtomicU64,
    retries: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
    transport_errors: AtomicU64,
}

impl ClientStats {
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    #[must_use]
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    #[must_use]
    pub fn transport_errors(&self) -> u64 {
        self.transport_errors.load(Ordering::Relaxed)
    }
    /// Responses received, by HTTP status.
    #[must_use]
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        self.by_status.lock().map(|m| m.clone()).unwrap_or_default()
    }
    fn status(&self, status: u16) {
        if let Ok(mut m) = self.by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
    }
}

/// A client of one HCP Terraform address with one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    listing: Url,
    address: String,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    retry: RetryPolicy,
    max_page_bytes: u64,
    stats: Arc<ClientStats>,
}

/// One failed attempt, and whether it is worth another.
enum Attempt {
    Retry { why: String, wait: Option<Duration> },
    Fail(ApiError),
}

impl Client {
    /// Builds a client.
    ///
    /// # Errors
    /// [`ApiError::InvalidAddress`] for an address that is not an http(s) URL, and
    /// [`ApiError::Setup`] when TLS cannot be set up.
    pub fn new(options: ClientOptions) -> Result<Self, ApiError> {
        let base = parse_address(&options.address)?;
        let address = base.as_str().trim_end_matches('/').to_owned();
        let listing = Url::parse(&format!("{address}{}", crate::AUDIT_TRAIL_PATH))
            .map_err(|e| ApiError::InvalidAddress { address: options.address.clone(), reason: e.to_string() })?;
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", options.token.expose()))
            .map_err(|_| ApiError::Setup("the token cannot be sent in a header".into()))?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            // A redirect could carry the Authorization header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Setup(error_chain(&e)))?;
        let limiter = options.rate_limit.map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
        Ok(Self {
            http,
            listing,
            address,
            limiter,
            retry: options.retry,
            max_page_bytes: options.max_page_bytes,
            stats: Arc::default(),
        })
    }

    /// The address this client talks to, normalised (no trailing slash).
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// What this client has done so far.
    #[must_use]
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// The URL of one page request. It carries no secret, so it may be logged.
    #[must_use]
    pub fn page_url(&self, request: &PageRequest) -> Url {
        let mut url = self.listing.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = request.since {
                q.append_pair("since", &crate::time::format_since(since));
            }
            q.append_pair("page[number]", &request.page.to_string());
            q.append_pair("page[size]", &request.page_size.to_string());
        }
        url
    }

    /// Fetches one page, retrying what is transient.
    ///
    /// # Errors
    /// See [`ApiError`]; each variant's message says what to do.
    pub async fn fetch_page(&self, request: &PageRequest) -> Result<Page, ApiError> {
        let url = &self.page_url(request);
        let label = format!("page {}", request.page);
        self.retrying(&label, move || async move {
            let body = self.attempt(url).await?;
            let page =
                Page::parse(request.page, &body).map_err(|e| Attempt::Retry { why: e.to_string(), wait: None })?;
            if let Some(got) = page.mismatched_page_number() {
                return Err(Attempt::Fail(ApiError::PageMismatch {
                    address: self.address.clone(),
                    asked: request.page,
                    got,
                }));
            }
            Ok(page)
        })
        .await
    }

    /// GETs `path_and_query` under the address and returns the body, retried like a
    /// page (a 404 is [`ApiError::NotEntitled`]; the caller words it for its request).
    ///
    /// # Errors
    /// See [`ApiError`].
    pub async fn get_body(&self, path_and_query: &str, label: &str) -> Result<bytes::Bytes, ApiError> {
        let url = Url::parse(&format!("{}{path_and_query}", self.address))
            .map_err(|e| ApiError::InvalidAddress { address: self.address.clone(), reason: e.to_string() })?;
        let url = &url;
        self.retrying(label, move || self.attempt(url)).await
    }

    /// Runs `once` until it succeeds, fails for good, or the retries are spent:
    /// exponential backoff with jitter, or what the server asks.
    async fn retrying<T, F: Future<Output = Result<T, Attempt>>>(
        &self,
        label: &str,
        mut once: impl FnMut() -> F,
    ) -> Result<T, ApiError> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let mut retries = 0u32;
        loop {
            match once().await {
                Ok(done) => return Ok(done),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry { why, wait }) => {
                    if retries >= self.retry.max_retries {
                        return Err(ApiError::RetriesExhausted { address: self.address.clone(), retries, last: why });
                    }
                    let wait = wait
                        .map(|w| w.min(self.retry.max_server_delay))
                        .unwrap_or_else(|| backoff.next().unwrap_or(self.retry.max_delay));
                    retries += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "{label}: {why}; retry {retries} of {} in {:.1}s",
                        self.retry.max_retries,
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One GET: its body when the answer is 2xx.
    async fn attempt(&self, url: &Url) -> Result<bytes::Bytes, Attempt> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let response = match self.http.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%url, error = %error_chain(&e), "request failed");
                if e.is_connect() && !e.is_timeout() {
                    return Err(Attempt::Fail(ApiError::Connect {
                        address: self.address.clone(),
                        cause: error_chain(&e),
                    }));
                }
                return Err(Attempt::Retry { why: format!("request failed: {}", error_chain(&e)), wait: None });
            }
        };
        let status = response.status();
        self.stats.status(status.as_u16());
        let server_wait = server_delay(response.headers());
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(%url, status = status.as_u16(), elapsed_ms, "GET");
        if !status.is_success() {
            return Err(self.refusal(status, server_wait, response).await);
        }
        // Streamed against the cap: a server that declares or sends an endless body
        // costs at most the cap in memory, and a retry would only meet it again.
        match crate::body::read_capped(response, self.max_page_bytes).await {
            Ok(b) => Ok(b),
            Err(crate::body::BodyError::TooLarge { cap, declared }) => {
                Err(Attempt::Fail(ApiError::PageTooLarge { address: self.address.clone(), cap, declared }))
            }
            Err(e @ crate::body::BodyError::Transport(_)) => {
                self.stats.transport_errors.fetch_add(1, Ordering::Relaxed);
                Err(Attempt::Retry { why: e.to_string(), wait: None })
            }
        }
    }

    /// What an answer other than 2xx means. Only the start of its body is read: it is
    /// shown in part at most, and a server may send an endless one.
    async fn refusal(&self, status: StatusCode, server_wait: Option<Duration>, response: reqwest::Response) -> Attempt {
        match status {
            StatusCode::UNAUTHORIZED => Attempt::Fail(ApiError::Unauthorized { address: self.address.clone() }),
            StatusCode::NOT_FOUND => Attempt::Fail(ApiError::NotEntitled { address: self.address.clone() }),
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry { why: "rate limited (429)".into(), wait: server_wait },
            s if s == StatusCode::REQUEST_TIMEOUT || s.is_server_error() => {
                Attempt::Retry { why: format!("the server answered {}", s.as_u16()), wait: server_wait }
            }
            s => {
                let body = crate::body::read_prefix(response, ERROR_BODY_PREFIX).await;
                Attempt::Fail(ApiError::Refused {
                    address: self.address.clone(),
                    status: s.as_u16(),
                    detail: error_detail(&body),
                })
            }
        }
    }
}

/// How much of an error body is read: enough for a JSON:API error's detail.
const ERROR_BODY_PREFIX: usize = 16 * 1024;

/// Parses an address; a bare host name means `https://host`.
fn parse_address(address: &str) -> Result<Url, ApiError> {
    let invalid = |reason: &str| ApiError::InvalidAddress { address: address.to_owned(), reason: reason.to_owned() };
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("https://{trimmed}") };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only https:// (or http:// for local use) is supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it may not carry a query, fragment or credentials"));
    }
    Ok(url)
}

/// How long the server asks us to wait: `X-RateLimit-Reset` (float seconds, as
/// HCP Terraform sends it) or `Retry-After` (seconds or an HTTP date).
fn server_delay(headers: &HeaderMap) -> Option<Duration> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let now = Timestamp::now().as_second() as f64;
    let seconds = |v: &str| {
        v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(|s| {
            // Some servers send the reset as a Unix time rather than seconds to wait.
            let wait = if s > 1e9 { (s - now).max(0.0) } else { s };
            Duration::from_secs_f64(wait.min(86_400.0))
        })
    };
    if let Some(wait) = text("x-ratelimit-reset").and_then(seconds) {
        return Some(wait);
    }
    let retry_after = text(RETRY_AFTER.as_str())?;
    if let Some(wait) = seconds(retry_after) {
        return Some(wait);
    }
    let when = jiff::fmt::rfc2822::parse(retry_after).ok()?.timestamp();
    let wait = when.duration_since(Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// A one-line description of a server's error body, safe to print: JSON:API `detail`
/// or `title` when present, every known secret hidden (a server may echo the request),
/// control characters removed, length bounded.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorObject>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorObject {
        detail: Option<String>,
        title: Option<String>,
    }
    let text = serde_json::from_slice::<Errors>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .and_then(|e| e.detail.or(e.title))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    // Redacted before it is cut, so that a secret at the cut is still found whole.
    let text = crate::redact::redact(&text);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    if clean.trim().is_empty() { "no details".into() } else { clean.trim().to_owned() }
}

/// An error and its causes in one line ("error sending request: connection refused").
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("app.terraform.io").unwrap().as_str(), "https://app.terraform.io/");
        assert_eq!(parse_address("http://127.0.0.1:8080/").unwrap().as_str(), "http://127.0.0.1:8080/");
        assert!(parse_address("ftp://x").is_err());
        assert!(parse_address("").is_err());
        assert!(parse_address("https://user:pw@x").is_err());
    }

    #[test]
    fn listing_url_encodes_brackets_and_keeps_a_path_prefix() {
        let c = Client::new(ClientOptions::new("https://tfe.example.com/prefix/", Token::new("t").unwrap())).unwrap();
        let since: Timestamp = "2020-05-30T17:52:46Z".parse().unwrap();
        let url = c.page_url(&PageRequest { since: Some(since), page: 3, page_size: 1000 });
        assert_eq!(
            url.as_str(),
            "https://tfe.example.com/prefix/api/v2/organization/audit-trail?since=2020-05-30T17%3A52%3A46.000Z&page%5Bnumber%5D=3&page%5Bsize%5D=1000"
        );
    }

    #[test]
    fn server_delays() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("0.25"));
        assert_eq!(server_delay(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        let epoch = HeaderValue::from_str(&(Timestamp::now().as_second() + 2).to_string()).unwrap();
        h.insert("x-ratelimit-reset", epoch);
        let wait = server_delay(&h).unwrap();
        assert!(wait <= Duration::from_secs(2) && wait >= Duration::from_secs(1), "{wait:?}");
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(server_delay(&h), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(server_delay(&h), Some(Duration::ZERO));
        assert_eq!(server_delay(&HeaderMap::new()), None);
    }

    #[test]
    fn error_detail_is_one_clean_line() {
        let body = br#"{"errors":[{"status":"400","title":"bad","detail":"line1\nline2\u001b[31m"}]}"#;
        assert_eq!(error_detail(body), "line1 line2 [31m");
        assert_eq!(error_detail(b""), "no details");
    }
}
