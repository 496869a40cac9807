//! `type = "syslog"`: each event as an RFC 5424 message to a syslog collector, over TLS
//! (RFC 5425, the default), plain TCP (RFC 6587) or UDP (RFC 5426).
//!
//! A message is `<109>1 TIMESTAMP HOSTNAME tfaudit - audit [tfaudit@32473 id="…"] MSG`:
//! - PRI 109: facility 13, which RFC 5424's table of facilities names "log audit",
//!   severity 5, notice ("normal but significant condition"): an audit event is a
//!   normal event a security team wants kept. `authpriv` (10) is where a host's own
//!   `sshd` and `sudo` write, often to files only root reads; audit keeps them apart.
//! - TIMESTAMP: the event's own time, UTC, to the microsecond (RFC 5424 allows six
//!   digits of fraction; the exact time is in the event).
//! - MSGID `audit`: RFC 5424 caps MSGID at 32 characters and an event id can be
//!   longer, so the id is a structured-data parameter instead, escaped as §6.3.3 says.
//!   The SD-ID carries the enterprise number RFC 5612 reserves for documentation,
//!   32473, as tfaudit has none registered: collectors match on the whole
//!   `tfaudit@32473`, which no one else's messages use.
//! - MSG: the event's line (JSON) as it is, without the byte order mark RFC 5424 asks
//!   for in front of UTF-8: RFC 8259 §8.1 forbids one in front of JSON sent over a
//!   network, and a collector that hands MSG to a JSON parser would choke on it (the
//!   common collectors send and expect none).
//!
//! TCP and TLS frame each message by octet counting (`<length> <message>`, RFC 6587
//! §3.4.1, RFC 5425 §4.3), so a message may hold any byte and be of any length. UDP
//! sends one message per datagram; an event too large for one becomes a dead letter.
//!
//! Syslog has no acknowledgement: a batch counts as delivered once written and
//! flushed to the connection. Before each batch the sink looks whether the collector
//! closed the connection (a collector never sends anything), and connects again if it
//! did; a failed write drops the connection, and the batch is sent again on a new one.
//! A new connection is watched for half a second first: collectors refuse a client
//! (a missing client certificate) by closing the connection once it is made.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tfaudit_config::SinkSection;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use crate::{Batch, Delivered, Event, SendError, Sink, SinkFuture};

/// Facility 13 ("log audit") × 8 + severity 5 (notice).
const PRI: u8 = 13 * 8 + 5;
/// The structured-data element that carries the event's id.
pub const SD_ID: &str = "tfaudit@32473";
const APP_NAME: &str = "tfaudit";
const MSGID: &str = "audit";
/// How long a new connection is watched for the collector closing it at once.
const SETTLE: Duration = Duration::from_millis(500);
/// The largest UDP payload over IPv4 (65,535 less the IP and UDP headers), and so the
/// largest message sent over UDP: RFC 5426 §3.2 leaves the limit to the network.
pub const MAX_DATAGRAM: usize = 65_507;

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    Tcp,
    Udp,
}

impl Transport {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// The syslog sink's own settings.
pub struct SyslogConfig {
    /// `host:port`, as written.
    pub address: String,
    host: String,
    port: u16,
    pub transport: Transport,
    /// The HOSTNAME field.
    pub hostname: String,
    pub timeout: Duration,
    /// For TLS: the client's settings and the name the collector's certificate must hold.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for SyslogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogConfig")
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("hostname", &self.hostname)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SyslogConfig {
    /// Relative file paths are relative to `base` (the config file's folder).
    ///
    /// # Errors
    /// An address that is not `host:port`, an unknown transport, TLS keys with another
    /// transport, a `host` RFC 5424 does not allow, unreadable certificates or key.
    pub fn from_section(section: &SinkSection, base: &Path) -> Result<Self, String> {
        let name = &section.name;
        let address = section.address.as_deref().unwrap_or_default().trim();
        let (host, port) = split_address(address).ok_or_else(|| {
            format!(
                "sink {name:?}: address {address:?} must be host:port (6514 is syslog over TLS's port, 514 TCP's and UDP's)"
            )
        })?;
        let transport = match section.transport.as_deref() {
            None | Some("tls") => Transport::Tls,
            Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            Some(other) => {
                return Err(format!(
                    "sink {name:?}: transport {other:?} is not known; the transports are: tls, tcp, udp"
                ));
            }
        };
        let hostname = match &section.host {
            Some(h) if valid_hostname(h) => h.clone(),
            Some(h) => {
                return Err(format!(
                    "sink {name:?}: host {h:?} must be 1 to 255 printable ASCII characters without spaces (RFC 5424)"
                ));
            }
            None => machine_hostname(),
        };
        let timeout = crate::timeout(section)?;
        let path = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        let ca_file = section.ca_file.as_deref().map(path);
        let client = match (&section.client_cert, &section.client_key) {
            (Some(c), Some(k)) => Some((path(c), path(k))),
            (None, None) => None,
            _ => return Err(format!("sink {name:?}: client_cert and client_key go together")),
        };
        let tls = if transport == Transport::Tls {
            let config =
                tls_client_config(ca_file.as_deref(), client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))
                    .map_err(|e| format!("sink {name:?}: {e}"))?;
            let server = ServerName::try_from(host.clone())
                .map_err(|_| format!("sink {name:?}: {host:?} in address is not a host name or an IP address"))?;
            Some((Arc::new(config), server))
        } else {
            if ca_file.is_some() || client.is_some() {
                return Err(format!(
                    "sink {name:?}: ca_file, client_cert and client_key are for transport = \"tls\" (this sink's is {:?})",
                    transport.as_str()
                ));
            }
            None
        };
        Ok(Self { address: address.to_owned(), host, port, transport, hostname, timeout, tls })
    }
}

/// `host:port` or `[v6]:port`, the port not 0.
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

/// RFC 5424's HOSTNAME: 1 to 255 printable US-ASCII characters (no space).
fn valid_hostname(h: &str) -> bool {
    (1..=255).contains(&h.len()) && h.bytes().all(|b| (33..=126).contains(&b))
}

/// This machine's name, or RFC 5424's nil value when it has none that fits.
fn machine_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| valid_hostname(h))
        .unwrap_or_else(|| "-".to_owned())
}

/// A TLS client trusting the system's certificate authorities and those of `ca_file`,
/// presenting `client` (a certificate chain and its key, PEM files) when given.
///
/// # Errors
/// A file that cannot be read or holds no certificate or key, in one sentence.
pub fn tls_client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let extra_roots = match ca_file {
        Some(file) => certificates(file, "ca_file")?,
        None => Vec::new(),
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
        .map_err(|e| format!("cannot set up certificate checks: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates(cert, "client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("client_key {}: no private key read ({e})", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert and client_key do not make a usable pair: {e}"))
        }
    }
}

fn certificates(file: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{key} {}: {e}", file.display());
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// Appends `value` as an RFC 5424 PARAM-VALUE: `"`, `\` and `]` escaped (§6.3.3).
fn push_param_value(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Appends the event's time as RFC 5424's TIMESTAMP: UTC, six digits of fraction.
fn push_timestamp(out: &mut Vec<u8>, at: jiff::Timestamp) {
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    if !(0..=9999).contains(&t.year()) {
        out.push(b'-');
        return;
    }
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.subsec_nanosecond() / 1000
    )
    .expect("writing to memory");
}

/// Appends the RFC 5424 message for `event`.
pub fn push_message(out: &mut Vec<u8>, hostname: &str, event: &Event) {
    write!(out, "<{PRI}>1 ").expect("writing to memory");
    push_timestamp(out, event.timestamp);
    write!(out, " {hostname} {APP_NAME} - {MSGID} [{SD_ID} id=\"").expect("writing to memory");
    push_param_value(out, &event.id);
    out.extend_from_slice(b"\"] ");
    out.extend_from_slice(event.line.as_bytes());
}

/// Appends `event`'s message framed by octet counting: `<length> <message>`.
pub fn push_frame(out: &mut Vec<u8>, scratch: &mut Vec<u8>, hostname: &str, event: &Event) {
    scratch.clear();
    push_message(scratch, hostname, event);
    write!(out, "{} ", scratch.len()).expect("writing to memory");
    out.extend_from_slice(scratch);
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What came from the collector on a connection it never writes to.
enum Heard {
    Nothing,
    Closed,
    Failed(std::io::Error),
}

impl Connection {
    /// Reads what the collector sent, until it has nothing more: data (what a TLS
    /// server may send after the handshake, session tickets, never shows as data)
    /// is dropped, the end of the connection or an error is what counts.
    fn poll_heard(&mut self, cx: &mut Context<'_>) -> Poll<Heard> {
        let mut buf = [0u8; 1024];
        for _ in 0..64 {
            let mut read = ReadBuf::new(&mut buf);
            let polled = match self {
                Self::Tcp(s) => Pin::new(s).poll_read(cx, &mut read),
                Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, &mut read),
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Heard::Closed),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Heard::Failed(e)),
            }
        }
        // A collector that talks this much is read again on the next poll.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// What the collector did so far, without waiting.
    fn heard_now(&mut self) -> Heard {
        match self.poll_heard(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(heard) => heard,
            Poll::Pending => Heard::Nothing,
        }
    }

    /// What the collector did within `wait`.
    async fn heard_within(&mut self, wait: Duration) -> Heard {
        tokio::time::timeout(wait, std::future::poll_fn(|cx| self.poll_heard(cx))).await.unwrap_or(Heard::Nothing)
    }

    async fn write_and_flush(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Self::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

/// Sends batches as RFC 5424 messages.
pub struct SyslogSink {
    config: SyslogConfig,
    /// The open TCP or TLS connection, kept from batch to batch.
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl SyslogSink {
    #[must_use]
    pub fn new(config: SyslogConfig) -> Self {
        Self { config, connection: tokio::sync::Mutex::new(None) }
    }

    fn retry(&self, what: &str, e: impl std::fmt::Display) -> SendError {
        SendError::Retry { error: format!("{what} the collector at {}: {e}", self.config.address), after: None }
    }

    /// A new TCP or TLS connection, within the timeout.
    async fn connect(&self) -> Result<Connection, SendError> {
        let config = &self.config;
        let connecting = async {
            let tcp = TcpStream::connect((config.host.as_str(), config.port))
                .await
                .map_err(|e| self.retry("cannot connect to", e))?;
            // Each batch is written whole and flushed: nothing is gained by waiting.
            tcp.set_nodelay(true).map_err(|e| self.retry("cannot set up the connection to", e))?;
            let Some((tls, server)) = &config.tls else { return Ok(Connection::Tcp(tcp)) };
            match tokio_rustls::TlsConnector::from(tls.clone()).connect(server.clone(), tcp).await {
                Ok(s) => Ok(Connection::Tls(Box::new(s))),
                Err(e) if is_certificate_error(&e) => Err(SendError::Refused {
                    error: format!(
                        "the TLS handshake with the collector at {} failed: {e} (check ca_file, the authority of its certificate, and client_cert and client_key)",
                        config.address
                    ),
                }),
                Err(e) => Err(self.retry("the TLS handshake failed with", e)),
            }
        };
        let mut connection = tokio::time::timeout(config.timeout, connecting)
            .await
            .unwrap_or_else(|_| Err(self.retry("timed out connecting to", format_args!("{:?}", config.timeout))))?;
        // Collectors refuse a client they do not allow (no client certificate, or
        // one they do not trust; a sender not allowed) by closing the connection
        // once it is made, even after a TLS handshake that succeeded on our side:
        // a batch written at once would be lost without a word.
        match connection.heard_within(SETTLE.min(config.timeout)).await {
            Heard::Nothing => Ok(connection),
            Heard::Failed(e) if is_certificate_error(&e) => Err(self.connection_failed(&e)),
            Heard::Closed | Heard::Failed(_) => Err(self.retry(
                "the connection was closed as soon as it was made by",
                "does it require a client certificate (client_cert, client_key), or not allow this sender?",
            )),
        }
    }

    /// A refusal of our certificate stops the sink; anything else is retried.
    fn connection_failed(&self, e: &std::io::Error) -> SendError {
        if is_certificate_error(e) {
            SendError::Refused {
                error: format!(
                    "the collector at {} refused the connection: {e} (check client_cert and client_key)",
                    self.config.address
                ),
            }
        } else {
            self.retry("the connection failed with", e)
        }
    }

    async fn send_stream(&self, batch: &Batch) -> Result<Delivered, SendError> {
        let mut frames = Vec::with_capacity(batch.events.iter().map(|e| e.line.len() + 160).sum());
        let mut scratch = Vec::new();
        for e in &batch.events {
            push_frame(&mut frames, &mut scratch, &self.config.hostname, e);
        }
        let mut connection = self.connection.lock().await;
        if let Some(open) = connection.as_mut() {
            match open.heard_now() {
                Heard::Nothing => {}
                Heard::Closed => {
                    tracing::info!(address = %self.config.address, "the syslog collector closed the connection; connecting again");
                    *connection = None;
                }
                Heard::Failed(e) => {
                    *connection = None;
                    if is_certificate_error(&e) {
                        return Err(self.connection_failed(&e));
                    }
                    tracing::info!(address = %self.config.address, error = %e, "the connection to the syslog collector failed; connecting again");
                }
            }
        }
        if connection.is_none() {
            *connection = Some(self.connect().await?);
        }
        let open = connection.as_mut().expect("connected just above");
        let written = tokio::time::timeout(self.config.timeout, open.write_and_flush(&frames)).await;
        match written {
            Ok(Ok(())) => Ok(Delivered::all()),
            Ok(Err(e)) => {
                *connection = None;
                Err(self.retry("writing failed to", e))
            }
            Err(_) => {
                *connection = None;
                Err(self.retry("timed out writing to", format_args!("{:?}", self.config.timeout)))
            }
        }
    }

    async fn udp_socket(&self) -> Result<UdpSocket, SendError> {
        let target = tokio::net::lookup_host((self.config.host.as_str(), self.config.port))
            .await
            .map_err(|e| self.retry("cannot resolve", e))?
            .next()
            .ok_or_else(|| self.retry("cannot resolve", "no address"))?;
        let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let socket = UdpSocket::bind(local).await.map_err(|e| self.retry("cannot open a UDP socket for", e))?;
        // Connected, so that an ICMP "port unreachable" shows as an error of a later send.
        socket.connect(target).await.map_err(|e| self.retry("cannot reach", e))?;
        Ok(socket)
    }

    async fn send_udp(&self, batch: &Batch) -> Result<Delivered, SendError> {
        let socket = self.udp_socket().await?;
        let mut delivered = Delivered::all();
        let mut message = Vec::new();
        for e in &batch.events {
            message.clear();
            push_message(&mut message, &self.config.hostname, e);
            if message.len() > MAX_DATAGRAM {
                delivered.rejected.push((
                    e.seq,
                    format!(
                        "the message is {} bytes, more than a UDP datagram carries ({MAX_DATAGRAM}): send it with transport = \"tcp\" or \"tls\"",
                        message.len()
                    ),
                ));
                continue;
            }
            tokio::time::timeout(self.config.timeout, socket.send(&message))
                .await
                .map_err(|_| self.retry("timed out sending to", format_args!("{:?}", self.config.timeout)))?
                .map_err(|e| self.retry("sending failed to", e))?;
        }
        Ok(delivered)
    }

    /// Whether the kept connection was closed by the collector (tests wait for it).
    #[cfg(test)]
    async fn sees_closed(&self) -> bool {
        self.connection.lock().await.as_mut().is_none_or(|c| !matches!(c.heard_now(), Heard::Nothing))
    }
}

/// Whether a handshake failed on the certificates (the collector's not trusted, or
/// ours refused): fixing it takes a change of settings, not a retry.
fn is_certificate_error(e: &std::io::Error) -> bool {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(|e| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate
                        | rustls::AlertDescription::CertificateRequired
                        | rustls::AlertDescription::UnknownCA
                        | rustls::AlertDescription::CertificateExpired
                        | rustls::AlertDescription::CertificateRevoked
                        | rustls::AlertDescription::UnsupportedCertificate
                )
        )
    })
}

impl Sink for SyslogSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            match self.config.transport {
                Transport::Udp => self.send_udp(batch).await,
                Transport::Tcp | Transport::Tls => self.send_stream(batch).await,
            }
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let checked = match self.config.transport {
                // Nothing answers over UDP: resolving the address is all there is to check.
                Transport::Udp => self.udp_socket().await.map(|_| ()),
                Transport::Tcp | Transport::Tls => match self.connect().await {
                    Ok(Connection::Tcp(mut s)) => s.shutdown().await.map_err(|e| self.retry("closing", e)),
                    Ok(Connection::Tls(mut s)) => s.shutdown().await.map_err(|e| self.retry("closing", e)),
                    Err(e) => Err(e),
                },
            };
            checked.map_err(|e| e.message().to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn section(keys: &str) -> SinkSection {
        let text = format!("[[sink]]\nname = \"s\"\ntype = \"syslog\"\n{keys}\n");
        tfaudit_config::ConfigFile::parse(Path::new("t.toml"), &text).unwrap().sinks.remove(0)
    }

    fn config(keys: &str) -> Result<SyslogConfig, String> {
        SyslogConfig::from_section(&section(keys), Path::new("/base"))
    }

    fn event(seq: i64, id: &str, at: &str, line: &str) -> Event {
        Event { seq, id: id.to_owned(), timestamp: at.parse().unwrap(), line: line.to_owned() }
    }

    #[test]
    fn messages_escape_the_id_and_keep_the_event_whole() {
        let e = event(1, r#"ev-"q"\b]x"#, "2026-03-04T10:00:00.123456789Z", r#"{"a":"é \"[x]\" \\"}"#);
        let mut out = Vec::new();
        push_message(&mut out, "box.example", &e);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<109>1 2026-03-04T10:00:00.123456Z box.example tfaudit - audit [tfaudit@32473 id="ev-\"q\"\\b\]x"] {"a":"é \"[x]\" \\"}"#
        );
        let e = event(2, "abc", "1999-12-31T23:59:59Z", "{}");
        let (mut frames, mut scratch) = (b"x".to_vec(), Vec::new());
        push_frame(&mut frames, &mut scratch, "h", &e);
        let message = "<109>1 1999-12-31T23:59:59.000000Z h tfaudit - audit [tfaudit@32473 id=\"abc\"] {}";
        assert_eq!(String::from_utf8(frames).unwrap(), format!("x{} {message}", message.len()));
    }

    #[test]
    fn settings_are_checked() {
        let c = config("address = \"[::1]:6514\"").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.transport), ("::1", 6514, Transport::Tls));
        assert!(valid_hostname(&c.hostname) || c.hostname == "-");
        let c = config("address = \"logs.example:514\"\ntransport = \"udp\"\nhost = \"tfaudit-1\"").unwrap();
        assert_eq!((c.port, c.transport, c.hostname.as_str()), (514, Transport::Udp, "tfaudit-1"));
        for (keys, expected) in [
            ("address = \"logs.example\"", "must be host:port"),
            ("address = \"::1:514\"", "must be host:port"),
            ("address = \"h:0\"", "must be host:port"),
            ("address = \"h:514\"\ntransport = \"relp\"", "tls, tcp, udp"),
            ("address = \"h:514\"\nhost = \"two words\"", "printable ASCII"),
            ("address = \"h:514\"\ntransport = \"tcp\"\nca_file = \"ca.pem\"", "are for transport = \"tls\""),
            ("address = \"h:514\"\nclient_cert = \"c.pem\"", "go together"),
            ("address = \"h:514\"\nca_file = \"missing.pem\"", "ca_file /base/missing.pem"),
            ("address = \"h:514\"\ntimeout = \"1ms\"", "at least 100ms"),
        ] {
            let e = config(keys).unwrap_err();
            assert!(e.contains(expected), "{keys}: {e}");
        }
    }

    /// Reads octet-counted frames until `n` messages arrived, checking that each
    /// length is exactly the message's.
    async fn read_frames(socket: &mut TcpStream, n: usize) -> Vec<String> {
        let mut messages = Vec::new();
        let mut reader = tokio::io::BufReader::new(socket);
        while messages.len() < n {
            let mut length = Vec::new();
            loop {
                let b = reader.read_u8().await.unwrap();
                if b == b' ' {
                    break;
                }
                assert!(b.is_ascii_digit(), "a frame's length holds {b:?}");
                length.push(b);
            }
            assert!(length[0] != b'0', "a frame's length starts with 0");
            let length: usize = std::str::from_utf8(&length).unwrap().parse().unwrap();
            let mut message = vec![0; length];
            reader.read_exact(&mut message).await.unwrap();
            messages.push(String::from_utf8(message).unwrap());
        }
        messages
    }

    fn expected(hostname: &str, events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let mut m = Vec::new();
                push_message(&mut m, hostname, e);
                String::from_utf8(m).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn tcp_frames_by_octet_counting_and_connects_again_after_the_collector_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sink =
            SyslogSink::new(config(&format!("address = \"{address}\"\ntransport = \"tcp\"\nhost = \"h\"")).unwrap());
        sink.health().await.unwrap();
        drop(listener.accept().await.unwrap());

        let first: Vec<Event> = vec![
            event(1, "a", "2026-03-04T10:00:00Z", r#"{"id":"a","note":"multi\nline \"quoted\" [x] \\ ü"}"#),
            event(2, "b]\"", "2026-03-04T10:00:01.5Z", &format!(r#"{{"id":"b","big":"{}"}}"#, "9".repeat(70_000))),
            event(3, "c", "2026-03-04T10:00:02Z", "{}"),
        ];
        let batch = Batch::new("s", first.clone());
        assert_eq!(sink.send(&batch).await.unwrap(), Delivered::all());
        let (mut socket, _) = listener.accept().await.unwrap();
        assert_eq!(read_frames(&mut socket, 3).await, expected("h", &first));

        // The collector goes away: the sink sees it before its next batch and
        // connects again rather than writing into a dead connection.
        drop(socket);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !sink.sees_closed().await {
            assert!(tokio::time::Instant::now() < deadline, "the closed connection was never noticed");
            tokio::task::yield_now().await;
        }
        let second = vec![event(4, "d", "2026-03-04T10:00:03Z", r#"{"id":"d"}"#)];
        let batch = Batch::new("s", second.clone());
        sink.send(&batch).await.unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        assert_eq!(read_frames(&mut socket, 1).await, expected("h", &second));

        // Down: the batch is to be retried; back on the same port: delivered.
        drop(socket);
        drop(listener);
        while !sink.sees_closed().await {
            assert!(tokio::time::Instant::now() < deadline, "the closed connection was never noticed");
            tokio::task::yield_now().await;
        }
        let err = sink.send(&batch).await.unwrap_err();
        assert!(matches!(&err, SendError::Retry { error, .. } if error.contains("cannot connect")), "{err:?}");
        assert!(sink.health().await.unwrap_err().contains(&address.to_string()));
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        sink.send(&batch).await.unwrap();
        let (mut socket, _) = listener.accept().await.unwrap();
        assert_eq!(read_frames(&mut socket, 1).await, expected("h", &second));
    }

    #[tokio::test]
    async fn udp_sends_one_message_per_datagram_and_refuses_what_cannot_fit() {
        let collector = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = collector.local_addr().unwrap();
        let sink =
            SyslogSink::new(config(&format!("address = \"{address}\"\ntransport = \"udp\"\nhost = \"h\"")).unwrap());
        sink.health().await.unwrap();
        let events = vec![
            event(1, "a", "2026-03-04T10:00:00Z", r#"{"id":"a","s":"\"[]\\"}"#),
            event(2, "too-big", "2026-03-04T10:00:00Z", &format!(r#"{{"big":"{}"}}"#, "9".repeat(MAX_DATAGRAM))),
            event(3, "c", "2026-03-04T10:00:00Z", r#"{"id":"c"}"#),
        ];
        let delivered = sink.send(&Batch::new("s", events.clone())).await.unwrap();
        assert_eq!(delivered.rejected.len(), 1);
        assert_eq!(delivered.rejected[0].0, 2);
        assert!(delivered.rejected[0].1.contains("more than a UDP datagram carries"), "{:?}", delivered.rejected);
        let mut buf = vec![0; 70_000];
        let mut got = Vec::new();
        for _ in 0..2 {
            let n = collector.recv(&mut buf).await.unwrap();
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        assert_eq!(got, expected("h", &[events[0].clone(), events[2].clone()]));
    }
}
