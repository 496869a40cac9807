//! `type = "nats"`: each event published to a JetStream `subject` with the header
//! `Nats-Msg-Id` = the event's id, so that the stream drops a re-sent event within its
//! duplicate window. A batch counts as delivered once the stream acknowledged every
//! event (stored, or recognised as a duplicate): the events are published one after
//! the other without waiting, then their acknowledgements are awaited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tfaudit_config::SinkSection;
use tfaudit_model::Secret;

use crate::{Batch, Delivered, SendError, Sink, SinkFuture};

/// Where the sink connects unless `url` says.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Publishes waiting for their acknowledgement at most: below the client's own cap
/// (5,000), which would otherwise wait for acknowledgements this sink has not read yet.
const ACK_WINDOW: usize = 1_000;

/// The NATS sink's own settings.
#[derive(Debug)]
pub struct NatsConfig {
    /// The server (it can hold credentials: a secret).
    pub url: Secret,
    pub subject: String,
    pub auth: crate::Credentials,
    /// Certificate authorities to trust (PEM); TLS is then required.
    pub ca_file: Option<PathBuf>,
    /// For connecting and for each acknowledgement.
    pub timeout: Duration,
}

impl NatsConfig {
    /// # Errors
    /// A missing or unreadable secret, an address that is not a NATS server's, a
    /// subject with wildcards or spaces, both a token and a username, half of a login.
    pub fn from_section(section: &SinkSection, base: &Path) -> Result<Self, String> {
        let name = &section.name;
        let url = match &section.url {
            Some(u) => u.resolve(&format!("sink {name}: url"))?,
            None => Secret::new(DEFAULT_URL.to_owned()),
        };
        if url.expose().parse::<async_nats::ServerAddr>().is_err() {
            return Err(format!("sink {name:?}: url must be a NATS server's address, such as {DEFAULT_URL}"));
        }
        let subject = section.subject.clone().unwrap_or_default();
        let valid = !subject.is_empty()
            && subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">")
            && !subject.chars().any(char::is_whitespace);
        if !valid {
            return Err(format!(
                "sink {name:?}: subject {subject:?} must be a subject to publish to, such as \"tfaudit.events\" (no wildcards or spaces)"
            ));
        }
        let auth = crate::credentials(section, "token", section.token.as_ref())?;
        let timeout = crate::timeout(section)?;
        let ca_file = section.ca_file.as_deref().map(|p| crate::http::relative_to(base, p));
        if let Some(path) = &ca_file {
            std::fs::metadata(path)
                .map_err(|e| format!("sink {name:?}: cannot read ca_file {}: {e}", path.display()))?;
        }
        Ok(Self { url, subject, auth, ca_file, timeout })
    }
}

/// Publishes batches to JetStream over one connection, made on first use (the client
/// reconnects by itself after that).
pub struct NatsSink {
    config: NatsConfig,
    jetstream: tokio::sync::Mutex<Option<async_nats::jetstream::Context>>,
}

impl NatsSink {
    #[must_use]
    pub fn new(config: NatsConfig) -> Self {
        Self { config, jetstream: tokio::sync::Mutex::new(None) }
    }

    async fn connect(&self) -> Result<async_nats::jetstream::Context, SendError> {
        let mut held = self.jetstream.lock().await;
        if let Some(js) = &*held {
            return Ok(js.clone());
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("tfaudit")
            .connection_timeout(self.config.timeout)
            .request_timeout(Some(self.config.timeout));
        options = match &self.config.auth {
            crate::Credentials::None => options,
            crate::Credentials::Secret(t) => options.token(t.expose().to_owned()),
            crate::Credentials::Basic { username, password } => {
                options.user_and_password(username.clone(), password.expose().to_owned())
            }
        };
        if let Some(ca) = &self.config.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = options.connect(self.config.url.expose()).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            // The error's text never holds the address: it can hold credentials.
            let error = format!("cannot connect to the NATS server: {}", e.kind());
            match e.kind() {
                K::AuthorizationViolation | K::Authentication => {
                    SendError::Refused { error: format!("{error} (check token or username and password)") }
                }
                K::Tls => SendError::Refused { error: format!("{error} (check ca_file and the server's certificate)") },
                _ => SendError::Retry { error, after: None },
            }
        })?;
        let js = async_nats::jetstream::context::ContextBuilder::new().timeout(self.config.timeout).build(client);
        *held = Some(js.clone());
        Ok(js)
    }

    fn no_stream(&self) -> String {
        format!(
            "no JetStream stream takes subject {:?}: create one covering it, e.g. `nats stream add TFAUDIT --subjects {:?} --dupe-window 2h`",
            self.config.subject, self.config.subject
        )
    }
}

impl Sink for NatsSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> SinkFuture<'a, Result<Delivered, SendError>> {
        Box::pin(async move {
            let js = self.connect().await?;
            let mut rejected = Vec::new();
            let mut waiting = std::collections::VecDeque::with_capacity(ACK_WINDOW.min(batch.events.len()));
            let failed = |e: &async_nats::jetstream::context::PublishError| match e.kind() {
                PublishErrorKind::StreamNotFound => SendError::Refused { error: self.no_stream() },
                _ => SendError::Retry { error: format!("the stream did not acknowledge an event: {e}"), after: None },
            };
            for event in &batch.events {
                // A header value cannot hold a line break: such an id cannot be sent.
                if event.id.is_empty() || event.id.chars().any(char::is_control) {
                    rejected.push((
                        event.seq,
                        "its id cannot be a Nats-Msg-Id header (empty or a control character)".into(),
                    ));
                    continue;
                }
                if waiting.len() >= ACK_WINDOW {
                    let ack: async_nats::jetstream::context::PublishAckFuture =
                        waiting.pop_front().expect("the window is full");
                    ack.await.map_err(|e| failed(&e))?;
                }
                let message = PublishMessage::build()
                    .message_id(event.id.as_str())
                    .payload(bytes::Bytes::copy_from_slice(event.line.as_bytes()));
                match js.send_publish(self.config.subject.clone(), message).await {
                    Ok(ack) => waiting.push_back(ack),
                    // Larger than the server's max_payload: it can never go.
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        rejected.push((event.seq, format!("{e}")));
                    }
                    Err(e) => return Err(failed(&e)),
                }
            }
            // Stored or recognised as a duplicate: either way the stream holds it.
            for ack in waiting {
                ack.await.map_err(|e| failed(&e))?;
            }
            Ok(Delivered { rejected, skipped: Vec::new() })
        })
    }

    fn health(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let js = self.connect().await.map_err(|e| e.message().to_owned())?;
            match js.stream_by_subject(self.config.subject.as_str()).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound => {
                    Err(self.no_stream())
                }
                Err(e) => Err(format!("cannot ask the server for the subject's stream: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::nats_server::NatsServer;

    fn section(url: &str, extra: &str) -> SinkSection {
        let text = format!("name = \"bus\"\ntype = \"nats\"\nurl = \"{url}\"\nsubject = \"tfaudit.audit\"\n{extra}");
        toml::from_str(&text).unwrap()
    }

    fn events(n: i64) -> Vec<Event> {
        (1..=n)
            .map(|i| {
                Event::from_json(i, &format!("ae-{i}"), jiff::Timestamp::UNIX_EPOCH, &format!(r#"{{"id":"ae-{i}"}}"#))
            })
            .collect()
    }

    #[test]
    fn settings_are_checked_and_secrets_stay_hidden() {
        let base = Path::new("/");
        let c = NatsConfig::from_section(&section("nats://127.0.0.1:4222", "token = \"T0KEN\""), base).unwrap();
        let c2 = NatsConfig::from_section(
            &section("nats://u:URLPASS@127.0.0.1:4222", "username = \"u\"\npassword = \"PASSW0RD\""),
            base,
        )
        .unwrap();
        for debug in [format!("{c:?}"), format!("{c2:?}")] {
            for secret in ["T0KEN", "PASSW0RD", "URLPASS"] {
                assert!(!debug.contains(secret), "{debug}");
            }
        }
        let mut s = section("nats://127.0.0.1:4222", "");
        s.url = None;
        assert_eq!(NatsConfig::from_section(&s, base).unwrap().url.expose(), DEFAULT_URL);
        for subject in ["tfaudit.*", "a.>", "", "a b", "a..b"] {
            s.subject = Some(subject.into());
            assert!(NatsConfig::from_section(&s, base).unwrap_err().contains("subject"), "{subject}");
        }
        let err = NatsConfig::from_section(&section("nats://h", "token = \"t\"\nusername = \"u\""), base).unwrap_err();
        assert!(err.contains("not both"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_sent_twice_is_in_the_stream_once_and_acknowledged_before_send_returns() {
        let server = NatsServer::start().await;
        let js = server.jetstream().await;
        let stream = server.stream(&js, "AUDIT", "tfaudit.audit").await;
        let sink = NatsSink::new(NatsConfig::from_section(&section(&server.url, ""), Path::new("/")).unwrap());
        sink.health().await.unwrap();
        let batch = Batch::new("bus", events(1_500));
        assert_eq!(sink.send(&batch).await.unwrap(), Delivered::all());
        // Acknowledged means stored: the stream holds them as soon as send returns.
        assert_eq!(NatsServer::messages(&stream).await, 1_500);
        assert_eq!(sink.send(&batch).await.unwrap(), Delivered::all());
        let more = Batch::new("bus", events(1_600)[1_400..].to_vec());
        sink.send(&more).await.unwrap();
        assert_eq!(NatsServer::messages(&stream).await, 1_600);
        let ids = NatsServer::message_ids(&stream, 1_600).await;
        let expected: Vec<String> = (1..=1_600).map(|i| format!("ae-{i}")).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_stream_for_the_subject_is_refused_with_how_to_create_one_and_a_wrong_token_is_refused() {
        let server = NatsServer::start().await;
        let sink = NatsSink::new(NatsConfig::from_section(&section(&server.url, ""), Path::new("/")).unwrap());
        let batch = Batch::new("bus", events(3));
        let err = sink.send(&batch).await.unwrap_err();
        assert!(matches!(&err, SendError::Refused { error } if error.contains("create one covering it")), "{err:?}");
        assert!(sink.health().await.unwrap_err().contains("no JetStream stream takes subject"));

        let guarded = NatsServer::start_with_token("S3CRET-TOKEN").await;
        let wrong = NatsSink::new(
            NatsConfig::from_section(&section(&guarded.url, "token = \"WRONG-TOKEN\""), Path::new("/")).unwrap(),
        );
        let err = wrong.send(&batch).await.unwrap_err();
        assert!(matches!(&err, SendError::Refused { error } if !error.contains("WRONG")), "{err:?}");
        let right = NatsSink::new(
            NatsConfig::from_section(&section(&guarded.url, "token = \"S3CRET-TOKEN\""), Path::new("/")).unwrap(),
        );
        let js = guarded.jetstream().await;
        let stream = guarded.stream(&js, "AUDIT", "tfaudit.audit").await;
        right.send(&batch).await.unwrap();
        assert_eq!(NatsServer::messages(&stream).await, 3);

        // Nobody listening: worth retrying, and the address (which can hold a
        // password) is not in the error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let gone = NatsSink::new(
            NatsConfig::from_section(&section(&format!("nats://u:URLPASS@{closed}"), ""), Path::new("/")).unwrap(),
        );
        let err = gone.send(&batch).await.unwrap_err();
        assert!(matches!(&err, SendError::Retry { error, .. } if !error.contains("URLPASS")), "{err:?}");
    }
}
