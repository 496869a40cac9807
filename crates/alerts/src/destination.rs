//! Where alerts go. Each payload is built by a pure function (snapshot-tested), and
//! each send reports whether a retry could help.
//!
//! Receivers see an alert once: PagerDuty by its `dedup_key`, webhooks by the
//! `Idempotency-Key` header, email by its `Message-ID`, all derived from the alert's
//! key. (Slack has no such key: the outbox's claim and state keep it to one send in
//! normal operation; only a crash between sending and recording can repeat one.)

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tfaudit_config::Secret;
use tfaudit_store::AlertRecord;

use crate::rules::Severity;
use crate::runner::AlertError;

/// A configured destination, secrets resolved.
#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub kind: Kind,
    /// Only alerts at least this severe go here.
    pub min_severity: Severity,
    pub timeout: Duration,
}

/// What a destination is.
#[derive(Debug, Clone)]
pub enum Kind {
    Slack {
        url: Secret,
    },
    PagerDuty {
        url: String,
        routing_key: Secret,
    },
    /// Header values are secrets: they often carry the receiver's credentials.
    Webhook {
        url: Secret,
        secret: Option<Secret>,
        headers: Vec<(String, Secret)>,
    },
    Email(Email),
    Log,
    Stdout,
}

/// SMTP settings.
#[derive(Debug, Clone)]
pub struct Email {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// PEM certificates to trust besides the system's.
    pub ca_pem: Option<Vec<u8>>,
}

/// How SMTP is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTls {
    /// STARTTLS, required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only for a relay on the same host or network.
    None,
}

/// The PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// How a send went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Delivered,
    /// Worth trying again (down, throttled, timed out); `after` when the receiver said.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Retrying cannot help (the receiver rejected the payload).
    Permanent {
        error: String,
    },
    /// The destination is set up wrong (its secret was refused, its address is
    /// wrong or moved): nothing goes through until the user fixes it.
    Misconfigured {
        error: String,
    },
}

/// How many bytes of a receiver's answer are read: enough for any error message,
/// and a receiver that streams an endless body cannot grow memory.
pub const ANSWER_CAP: usize = 4 * 1024;

/// What an HTTP status from a receiver means (the table in the README's "Delivery"
/// section).
#[must_use]
pub fn judge(status: reqwest::StatusCode, error: String, after: Option<Duration>) -> Sent {
    match status.as_u16() {
        200..=299 => Sent::Delivered,
        // Redirects are not followed, so that secrets and signed payloads stay with
        // the address the user gave.
        300..=399 => Sent::Misconfigured {
            error: format!("{error} (a redirect, not followed: set the destination's address to where it points)"),
        },
        401 | 403 | 407 => Sent::Misconfigured { error: format!("{error} (check the destination's secret)") },
        404 | 405 | 410 => Sent::Misconfigured { error: format!("{error} (check the destination's address)") },
        408 | 425 | 429 | 500..=599 => Sent::Retry { error, after },
        _ => Sent::Permanent { error },
    }
}

/// The key receivers deduplicate by: stable per alert, short, free of the rule's
/// characters.
#[must_use]
pub fn idempotency_key(alert: &AlertRecord) -> String {
    let digest = Sha256::digest(alert.key.as_bytes());
    format!("tfaudit-{}", hex::encode(&digest[..16]))
}

fn event(alert: &AlertRecord) -> Value {
    serde_json::from_str(&alert.event).unwrap_or(Value::Null)
}

/// The catalogue's names of an alert's event's accessor, impersonator and resource
/// ids, read when it is delivered: Slack and PagerDuty show `name (id)`.
pub type Names = std::collections::BTreeMap<String, String>;

/// The names [`Names`] holds for `alert`.
///
/// # Errors
/// The store's.
pub fn names_for(store: &dyn tfaudit_store::Store, alert: &AlertRecord) -> Result<Names, tfaudit_store::StoreError> {
    let e = event(alert);
    let ids: Vec<&str> =
        [e.pointer("/auth/accessor_id"), e.pointer("/auth/impersonator_id"), e.pointer("/resource/id")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|id| !id.is_empty())
            .collect();
    if ids.is_empty() {
        return Ok(Names::new());
    }
    Ok(store.current_names(&ids)?.into_iter().map(|(id, r)| (id, r.name)).collect())
}

fn named(id: &str, names: &Names) -> String {
    tfaudit_model::name_and_id(names.get(id).map(String::as_str), id)
}

fn who(e: &Value, names: &Names) -> String {
    let auth = &e["auth"];
    let name = match (auth["description"].as_str(), auth["accessor_id"].as_str()) {
        (description, Some(id)) => tfaudit_model::name_and_id(description.or(names.get(id).map(String::as_str)), id),
        (Some(description), None) => description.to_owned(),
        (None, None) => "(system)".to_owned(),
    };
    match auth["impersonator_id"].as_str() {
        Some(by) => format!("{name} (impersonated by {})", named(by, names)),
        None => name,
    }
}

fn what(e: &Value, names: &Names) -> String {
    let r = &e["resource"];
    let mut s = format!("{}.{}", r["type"].as_str().unwrap_or("?"), r["action"].as_str().unwrap_or("?"));
    if let Some(id) = r["id"].as_str() {
        s.push(' ');
        s.push_str(&named(id, names));
    }
    s
}

fn when(alert: &AlertRecord) -> String {
    alert.event_time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Slack's mrkdwn control characters; with them escaped, a name like
/// `<!channel>` or `<http://evil|click>` is shown, not obeyed.
#[must_use]
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A Slack Block Kit message.
#[must_use]
pub fn slack_payload(alert: &AlertRecord, names: &Names) -> Value {
    let e = event(alert);
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", cut(&slack_escape(value), 1900))});
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&alert.title, 150), "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&slack_escape(&alert.text), 2900)}}),
        json!({"type": "section", "fields": [
            field("Who", &who(&e, names)),
            field("What", &what(&e, names)),
            field("When", &when(alert)),
            field("Organization", &alert.source),
        ]}),
    ];
    if let Some(link) = &alert.link {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in HCP Terraform"}, "url": link}
        ]}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": slack_escape(&format!("tfaudit · rule {} · severity {} · alert {}", alert.rule, alert.severity, alert.id))}
    ]}));
    json!({"text": cut(&alert.title, 300), "blocks": blocks})
}

fn pagerduty_severity(severity: &str) -> &'static str {
    match severity {
        "critical" => "critical",
        "high" => "error",
        "medium" => "warning",
        _ => "info",
    }
}

/// A PagerDuty Events API v2 trigger.
#[must_use]
pub fn pagerduty_payload(alert: &AlertRecord, routing_key: &str, names: &Names) -> Value {
    let e = event(alert);
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": idempotency_key(alert),
        "payload": {
            "summary": cut(&alert.title, 1024),
            "source": alert.source,
            "severity": pagerduty_severity(&alert.severity),
            "timestamp": when(alert),
            "component": e["resource"]["type"],
            "group": e["auth"]["organization_id"],
            "class": alert.rule,
            "custom_details": {
                "text": alert.text,
                "who": who(&e, names),
                "what": what(&e, names),
                "count": alert.count,
                "event": e,
                "names": names,
            },
        },
        "client": "tfaudit",
    });
    if let Some(link) = &alert.link {
        body["links"] = json!([{"href": link, "text": "Open in HCP Terraform"}]);
    }
    body
}

/// The body a webhook receives.
#[must_use]
pub fn webhook_body(alert: &AlertRecord) -> Value {
    json!({
        "id": alert.id,
        "idempotency_key": idempotency_key(alert),
        "rule": alert.rule,
        "severity": alert.severity,
        "title": alert.title,
        "text": alert.text,
        "group": alert.group,
        "count": alert.count,
        "window": alert.window_start.map(|s| json!({"start": s, "end": alert.window_end})),
        "organization": alert.source,
        "link": alert.link,
        "raised_at": alert.raised_at,
        "event": event(alert),
    })
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`: what a receiver recomputes
/// with the shared secret to trust a webhook (the timestamp bounds replays).
#[must_use]
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The plain-text email body.
#[must_use]
pub fn email_body(alert: &AlertRecord, names: &Names) -> String {
    let e = event(alert);
    let mut body = format!(
        "{}\n\nWho: {}\nWhat: {}\nWhen: {}\nOrganization: {}\n",
        alert.text,
        who(&e, names),
        what(&e, names),
        when(alert),
        alert.source
    );
    if let Some(link) = &alert.link {
        body.push_str(&format!("Link: {link}\n"));
    }
    body.push_str(&format!(
        "\nThe event, as HCP Terraform recorded it:\n{}\n\n-- \ntfaudit alert {} (rule {}, severity {})\n",
        // As sent, in its own key order, and bounded however deep a hostile event nests.
        tfaudit_api::event::pretty_json(&alert.event),
        alert.id,
        alert.rule,
        alert.severity
    ));
    body
}

/// How long a connection to a receiver may take, whatever the destination's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends alerts to destinations.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
}

/// `Retry-After` in seconds or as an HTTP date, at most an hour (a receiver's pause
/// for alert deliveries and for sinks alike).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds = match v.parse::<f64>() {
        Ok(s) => s,
        Err(_) => {
            let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
            at.duration_since(jiff::Timestamp::now()).as_secs_f64().max(0.0)
        }
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// A receiver's answer, in one safe line.
fn answer(status: reqwest::StatusCode, body: &str) -> String {
    // Redacted before it is cut: a cut could leave part of a secret unrecognisable.
    let redacted = tfaudit_api::redact::redact(body);
    let clean: String = redacted.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect();
    format!("the receiver answered {status}: {}", clean.trim())
}

impl Sender {
    /// The one HTTP client every destination is sent through.
    ///
    /// # Errors
    /// [`AlertError::Setup`] when the client cannot be built (no TLS roots, say).
    /// There is deliberately no fallback to a default client: that one follows
    /// redirects, which would carry a webhook URL's path, a routing key or a
    /// signature to whatever host a receiver names.
    pub fn new() -> Result<Self, AlertError> {
        let http = reqwest::Client::builder()
            .user_agent(tfaudit_api::USER_AGENT)
            // A redirect could take a signed payload or a secret URL somewhere else;
            // a 3xx is judged as misconfigured instead (`judge`).
            .redirect(reqwest::redirect::Policy::none())
            // Each request also has its destination's whole timeout (`post_bytes`).
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| AlertError::Setup(tfaudit_api::client::error_chain(&e.without_url())))?;
        Ok(Self { http })
    }

    /// Sends one alert to one destination.
    pub async fn send(&self, destination: &Destination, alert: &AlertRecord, names: &Names) -> Sent {
        match &destination.kind {
            Kind::Log => {
                tracing::warn!(target: "tfaudit::alert", alert = alert.id, rule = %alert.rule, severity = %alert.severity, "{}", alert.title);
                Sent::Delivered
            }
            Kind::Stdout => {
                let line = webhook_body(alert).to_string();
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                match writeln!(out, "{line}").and_then(|()| out.flush()) {
                    Ok(()) => Sent::Delivered,
                    Err(e) => Sent::Retry { error: format!("standard output: {e}"), after: None },
                }
            }
            Kind::Slack { url } => self.post(destination, url.expose(), &slack_payload(alert, names), &[]).await,
            Kind::PagerDuty { url, routing_key } => {
                self.post(destination, url, &pagerduty_payload(alert, routing_key.expose(), names), &[]).await
            }
            Kind::Webhook { url, secret, headers } => {
                let body = webhook_body(alert);
                let bytes = body.to_string().into_bytes();
                let timestamp = jiff::Timestamp::now().as_second();
                let mut extra: Vec<(String, String)> =
                    headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect();
                extra.push(("Idempotency-Key".into(), idempotency_key(alert)));
                extra.push(("X-Tfaudit-Timestamp".into(), timestamp.to_string()));
                if let Some(secret) = secret {
                    extra.push(("X-Tfaudit-Signature".into(), webhook_signature(secret.expose(), timestamp, &bytes)));
                }
                self.post_bytes(destination, url.expose(), bytes, &extra).await
            }
            Kind::Email(email) => send_email(email, destination.timeout, alert, names).await,
        }
    }

    async fn post(&self, d: &Destination, url: &str, body: &Value, headers: &[(String, String)]) -> Sent {
        self.post_bytes(d, url, body.to_string().into_bytes(), headers).await
    }

    async fn post_bytes(&self, d: &Destination, url: &str, body: Vec<u8>, headers: &[(String, String)]) -> Sent {
        let mut request =
            self.http.post(url).timeout(d.timeout).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str());
        }
        match request.send().await {
            // The URL is a secret (Slack's is the credential): errors never show it.
            Err(e) => Sent::Retry {
                error: format!("request failed: {}", tfaudit_api::client::error_chain(&e.without_url())),
                after: None,
            },
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Sent::Delivered;
                }
                let after = retry_after(response.headers());
                let text = tfaudit_api::body::read_prefix(response, ANSWER_CAP).await;
                judge(status, answer(status, &String::from_utf8_lossy(&text)), after)
            }
        }
    }
}

async fn send_email(email: &Email, timeout: Duration, alert: &AlertRecord, names: &Names) -> Sent {
    use lettre::message::header::ContentType;
    let subject: String = alert.title.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let message_id = format!("<{}@tfaudit>", idempotency_key(alert));
    let body = email_body(alert, names);
    send_mail(email, timeout, &subject, &message_id, |b| b.header(ContentType::TEXT_PLAIN).body(body)).await
}

/// A file sent with an email (a scheduled report).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub file_name: String,
    /// Its media type, such as `text/html; charset=utf-8`.
    pub content_type: String,
    pub content: Vec<u8>,
}

/// Sends a plain-text email with a file attached to the destination's addresses. The
/// `message_id` lets receivers drop a repeat (a crash between sending and recording).
pub async fn send_email_with_attachment(
    email: &Email,
    timeout: Duration,
    subject: &str,
    message_id: &str,
    text: &str,
    attachment: &Attachment,
) -> Sent {
    use lettre::message::header::{ContentTransferEncoding, ContentType};
    use lettre::message::{Body, MultiPart, SinglePart};
    let kind = match ContentType::parse(&attachment.content_type) {
        Ok(k) => k,
        Err(e) => return Sent::Permanent { error: format!("attachment type {:?}: {e}", attachment.content_type) },
    };
    let subject: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    // Base64 whatever the content: a report's long lines and non-ASCII names pass every
    // relay unchanged, and the file comes out byte for byte.
    let body =
        Body::new_with_encoding(attachment.content.clone(), ContentTransferEncoding::Base64).unwrap_or_else(Body::new);
    let parts = MultiPart::mixed()
        .singlepart(SinglePart::plain(text.to_owned()))
        .singlepart(lettre::message::Attachment::new(attachment.file_name.clone()).body(body, kind));
    send_mail(email, timeout, &subject, message_id, |b| b.multipart(parts)).await
}

/// Builds the message (`body` adds its content to the headers set here) and sends it
/// over SMTP, judging the server's answer.
async fn send_mail(
    email: &Email,
    timeout: Duration,
    subject: &str,
    message_id: &str,
    body: impl FnOnce(lettre::message::MessageBuilder) -> Result<lettre::Message, lettre::error::Error>,
) -> Sent {
    use lettre::message::Mailbox;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let parse =
        |a: &str| a.parse::<Mailbox>().map_err(|e| Sent::Misconfigured { error: format!("address {a:?}: {e}") });
    let from = match parse(&email.from) {
        Ok(m) => m,
        Err(s) => return s,
    };
    let mut builder = Message::builder().from(from).subject(subject).message_id(Some(message_id.to_owned()));
    for to in &email.to {
        match parse(to) {
            Ok(m) => builder = builder.to(m),
            Err(s) => return s,
        }
    }
    let message = match body(builder) {
        Ok(m) => m,
        Err(e) => return Sent::Permanent { error: format!("cannot build the message: {e}") },
    };
    let tls_parameters = || -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(email.host.clone());
        if let Some(pem) = &email.ca_pem {
            b = b.add_root_certificate(Certificate::from_pem(pem).map_err(|e| format!("ca_file: {e}"))?);
        }
        b.build_rustls().map_err(|e| format!("TLS: {e}"))
    };
    let tls = match email.tls {
        EmailTls::None => Tls::None,
        EmailTls::StartTls => match tls_parameters() {
            Ok(p) => Tls::Required(p),
            Err(e) => return Sent::Misconfigured { error: e },
        },
        EmailTls::Tls => match tls_parameters() {
            Ok(p) => Tls::Wrapper(p),
            Err(e) => return Sent::Misconfigured { error: e },
        },
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(email.host.as_str())
        .port(email.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(password)) = (&email.username, &email.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    match transport.build().send(message).await {
        Ok(_) => Sent::Delivered,
        // 530, 534, 535: authentication required or refused.
        Err(e) if e.status().is_some_and(|c| c.to_string().starts_with("53")) => Sent::Misconfigured {
            error: format!("the mail server refused the login: {e} (check username and password)"),
        },
        Err(e) if e.is_permanent() => Sent::Permanent { error: format!("the mail server refused the message: {e}") },
        Err(e) => Sent::Retry { error: format!("mail: {e}"), after: None },
    }
}

#[cfg(test)]
mod tests;
