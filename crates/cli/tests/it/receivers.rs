//! Local stand-ins for where alerts go, speaking the real wire formats: a Slack
//! incoming webhook, PagerDuty's Events API v2, a webhook that checks the HMAC
//! signature, and an SMTP server with STARTTLS.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

pub const HOOK_SECRET: &str = "hook-shared-secret";

/// One webhook request as received.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    /// Whether it was answered 2xx.
    pub accepted: bool,
}

#[derive(Default)]
pub struct Inbox {
    pub slack: Mutex<Vec<serde_json::Value>>,
    pub pagerduty: Mutex<Vec<serde_json::Value>>,
    pub hook: Mutex<Vec<HookRequest>>,
    /// What the webhook answers (200, or 503 to play a destination that is down).
    pub hook_status: AtomicU16,
    /// How long the webhook takes to answer, in ms.
    pub hook_delay_ms: AtomicU64,
    /// While set, the webhook holds every request (already recorded) unanswered.
    pub hook_hold: AtomicBool,
    /// Requests being held now.
    pub hook_held: AtomicU64,
    /// Whether an error answer echoes the request (its URL and headers) back, as some
    /// receivers do.
    pub hook_echo: AtomicBool,
}

pub struct Receivers {
    pub url: String,
    /// A receiver whose error answers never end.
    pub endless_url: String,
    pub inbox: Arc<Inbox>,
}

fn valid_signature(headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(ts), Some(sig)) = (get("x-tfaudit-timestamp"), get("x-tfaudit-signature")) else { return false };
    let Some(hex_sig) = sig.strip_prefix("sha256=") else { return false };
    let Ok(expected) = hex::decode(hex_sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn slack(State(inbox): State<Arc<Inbox>>, body: Bytes) -> (StatusCode, &'static str) {
    match serde_json::from_slice(&body) {
        Ok(v) => {
            inbox.slack.lock().unwrap().push(v);
            (StatusCode::OK, "ok")
        }
        Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
    }
}

async fn pagerduty(State(inbox): State<Arc<Inbox>>, body: Bytes) -> (StatusCode, String) {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"status":"invalid event","message":"Event object is invalid"}"#.into(),
            );
        }
    };
    let key = v["dedup_key"].as_str().unwrap_or_default().to_owned();
    let ok =
        v["routing_key"].as_str().is_some_and(|k| k.len() == 32) && v["event_action"] == "trigger" && !key.is_empty();
    inbox.pagerduty.lock().unwrap().push(v);
    if ok {
        (StatusCode::ACCEPTED, format!(r#"{{"status":"success","message":"Event processed","dedup_key":"{key}"}}"#))
    } else {
        (StatusCode::BAD_REQUEST, r#"{"status":"invalid event","message":"Event object is invalid"}"#.into())
    }
}

/// Records the request as it arrives (so a request whose sender dies while it is
/// held still counts as received), then answers.
async fn hook(State(inbox): State<Arc<Inbox>>, uri: Uri, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if !valid_signature(&headers, &body) {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let status = StatusCode::from_u16(inbox.hook_status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    let echo = format!("you sent POST {uri} with {headers:?}");
    let json = serde_json::from_slice(&body).unwrap_or_default();
    inbox.hook.lock().unwrap().push(HookRequest { headers, body: json, accepted: status.is_success() });
    let delay = inbox.hook_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if inbox.hook_hold.load(Ordering::SeqCst) {
        inbox.hook_held.fetch_add(1, Ordering::SeqCst);
        while inbox.hook_hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        inbox.hook_held.fetch_sub(1, Ordering::SeqCst);
    }
    let text = if inbox.hook_echo.load(Ordering::SeqCst) && !status.is_success() { echo } else { String::new() };
    (status, text)
}

/// A receiver that answers every request with a 500 whose chunked body never ends;
/// returns its URL.
async fn endless_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/endless", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut request = [0u8; 16 * 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                let head = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n";
                if socket.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    url
}

/// A listener that counts every connection made to it and answers none: where a
/// redirect points, so that a client following it would show up here.
pub async fn counting_listener() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/elsewhere", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, connections)
}

/// A receiver that answers every request with `status` and `Location: to`; returns
/// its URL.
pub async fn redirecting_receiver(status: u16, to: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?token=url-SECRET-0042-path", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let to = to.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 16 * 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
                let answer = format!(
                    "HTTP/1.1 {status} Moved\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

impl Receivers {
    pub async fn start() -> Self {
        let inbox = Arc::new(Inbox { hook_status: AtomicU16::new(200), ..Inbox::default() });
        let app = Router::new()
            .route("/slack", post(slack))
            .route("/v2/enqueue", post(pagerduty))
            .route("/hook", post(hook))
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inbox, endless_url: endless_receiver().await }
    }

    /// The idempotency keys of accepted webhook requests.
    pub fn accepted_hook_keys(&self) -> Vec<String> {
        self.inbox
            .hook
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted)
            .map(|r| r.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned())
            .collect()
    }
}

/// An SMTP server that requires STARTTLS, with a certificate made for 127.0.0.1.
pub struct Smtp {
    pub port: u16,
    /// The CA (here, the self-signed certificate) to trust, as PEM.
    pub ca_pem: String,
    pub messages: Arc<Mutex<Vec<String>>>,
    /// Messages to refuse with a temporary failure (451) before accepting any.
    pub refuse: Arc<AtomicU64>,
    /// Messages refused so far.
    pub refused: Arc<AtomicU64>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Smtp {
    pub async fn start() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca_pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (refuse, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let inbox = MailInbox { accepted: messages.clone(), refuse: refuse.clone(), refused: refused.clone() };
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let (acceptor, inbox) = (acceptor.clone(), inbox.clone());
                tokio::spawn(async move {
                    let _ = session(Box::new(socket), Some(acceptor), inbox).await;
                });
            }
        });
        Self { port, ca_pem, messages, refuse, refused }
    }
}

/// One SMTP session (RFC 5321, with STARTTLS from RFC 3207). Mail is accepted only
/// once the session is secure: after STARTTLS, which `acceptor` offers (the session
/// then goes on, over TLS, without one).
#[derive(Clone)]
struct MailInbox {
    accepted: Arc<Mutex<Vec<String>>>,
    refuse: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

async fn session(
    stream: Box<dyn Stream>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    inbox: MailInbox,
) -> std::io::Result<()> {
    let secure = acceptor.is_none();
    let mut stream = BufReader::new(stream);
    if !secure {
        stream.write_all(b"220 receiver.test ESMTP\r\n").await?;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        if command.starts_with("EHLO") || command.starts_with("HELO") {
            let tls = if secure { "" } else { "250-STARTTLS\r\n" };
            stream.write_all(format!("250-receiver.test\r\n{tls}250 8BITMIME\r\n").as_bytes()).await?;
        } else if command == "STARTTLS" {
            let Some(acceptor) = &acceptor else {
                stream.write_all(b"503 already secure\r\n").await?;
                continue;
            };
            stream.write_all(b"220 go ahead\r\n").await?;
            let tls = acceptor.accept(stream.into_inner()).await?;
            return Box::pin(session(Box::new(tls), None, inbox)).await;
        } else if !secure && (command.starts_with("MAIL") || command.starts_with("RCPT") || command.starts_with("DATA"))
        {
            stream.write_all(b"530 5.7.0 Must issue a STARTTLS command first\r\n").await?;
        } else if command == "DATA" {
            stream.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut message = String::new();
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                message.push_str(line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line));
            }
            if inbox.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                inbox.refused.fetch_add(1, Ordering::SeqCst);
                stream.write_all(b"451 4.3.0 mailbox busy, try again later\r\n").await?;
                continue;
            }
            inbox.accepted.lock().unwrap().push(message);
            stream.write_all(b"250 2.0.0 queued\r\n").await?;
        } else if command == "QUIT" {
            stream.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            stream.write_all(b"250 ok\r\n").await?;
        }
    }
}
