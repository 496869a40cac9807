//! From a libpq URL to connections: the URL's TLS mode, the password (from the URL or
//! `PGPASSWORD`), a small bounded pool, and per-connection prepared statements.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::{Client, NoTls, Statement};
use tfaudit_store::StoreError;

/// The TLS modes of libpq's `sslmode` that tfaudit knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, its certificate not checked (libpq's default).
    Prefer,
    /// TLS or no connection, its certificate not checked (libpq's `require`).
    Require,
    /// TLS or no connection, the certificate checked against the trusted roots and
    /// the host name (`verify-full`; `verify-ca` is held to the same, stricter, check).
    VerifyFull,
}

/// Where and how to connect, parsed from the URL; the password only inside `config`.
#[derive(Clone)]
pub struct Target {
    pub config: postgres::Config,
    pub tls: TlsMode,
    /// `host:port` for messages.
    pub host: String,
    /// The URL without its password, for messages.
    pub shown: String,
    /// `sslrootcert`: a PEM file of roots trusted instead of the system's.
    pub root_cert: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.shown).field("tls", &self.tls).finish_non_exhaustive()
    }
}

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses a `postgres://` / `postgresql://` URL.
///
/// # Errors
/// [`StoreError::Open`] naming what is wrong, never the password.
pub fn parse(url: &str) -> Result<Target, StoreError> {
    let bad = |cause: String| StoreError::Open { path: strip_password(url), cause };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad("not a postgres:// or postgresql:// URL".into()));
    }
    // The query parameters tokio-postgres does not know (`verify-full`, `sslrootcert`)
    // are taken out before it parses the rest.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "sslmode" => {
                tls = match &*value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" | "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(bad(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(value.into_owned()),
            _ => {
                kept.append_pair(&key, &value);
            }
        }
    }
    let kept = kept.finish();
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{kept}") };
    let mut config: postgres::Config =
        rest.parse().map_err(|e: postgres::Error| bad(format!("not a valid PostgreSQL URL ({e})")))?;
    let mut password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
    let url_has_password = password.is_some();
    if password.is_none()
        && let Ok(p) = std::env::var("PGPASSWORD")
        && !p.is_empty()
    {
        config.password(&p);
        password = Some(p);
    }
    if let Some(p) = &password {
        tfaudit_model::redact::register(p);
        // The URL too, where it may hold the password in another spelling
        // (percent-encoded); a URL without one stays readable in messages.
        if url_has_password {
            tfaudit_model::redact::register(url);
        }
    }
    if config.get_user().is_none() {
        // As libpq: the operating system user's name.
        if let Ok(user) = std::env::var("USER") {
            config.user(&user);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
    });
    config.application_name("tfaudit");
    let host = host_of(&config);
    Ok(Target { config, tls, host, shown: strip_password(url), root_cert })
}

/// `host:port` of the first host, for messages.
fn host_of(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// The URL with any password taken out of its user-info part.
#[must_use]
pub fn strip_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return tfaudit_model::redact::redact(url).into_owned() };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let shown = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{hostport}{tail}")
        }
        None => url.to_owned(),
    };
    tfaudit_model::redact::redact(&shown).into_owned()
}

/// A TLS configuration for the mode, or `None` for no TLS.
fn tls_config(target: &Target) -> Result<Option<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match target.tls {
        TlsMode::Disable => return Ok(None),
        TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        TlsMode::VerifyFull => match &target.root_cert {
            Some(file) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(file).map_err(|e| format!("sslrootcert {file}: {e}"))? {
                    roots.add(cert.map_err(|e| format!("sslrootcert {file}: {e}"))?).map_err(|e| e.to_string())?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => {
                let verifier = rustls_platform_verifier::Verifier::new(provider).map_err(|e| e.to_string())?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
            }
        },
    };
    Ok(Some(config))
}

/// libpq's `prefer` and `require`: the channel is encrypted, the server's certificate
/// is not checked (only that it signed the handshake). `verify-full` checks it.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection and the statements prepared on it.
pub struct Conn {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

/// Statements kept per connection at most: filters combine into a bounded set of
/// queries, but a bound keeps a leak from growing.
const STATEMENTS: usize = 256;

impl Conn {
    /// The statement for `sql`, prepared on this connection once.
    ///
    /// # Errors
    /// When the server cannot prepare it.
    pub fn prepare(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(sql)?;
        if self.statements.len() >= STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Connections at most: enough for a sync, the alert runner and a few dashboard
/// requests at once without holding many idle server processes.
pub const CONNECTIONS: usize = 8;

/// How long a caller waits for a free connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(60);

/// Runs `f` where the blocking client may start and stop its own runtime: not on a
/// thread that drives tokio tasks (the CLI opens and drops the archive from async
/// code), where that panics; such work moves to a short-lived thread of its own.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// A bounded pool of connections, reused.
pub struct Pool {
    target: Target,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Default)]
struct PoolState {
    free: Vec<Conn>,
    /// Connections open or being opened.
    taken: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a connection blocks on the client's runtime.
        let free = std::mem::take(&mut self.state.get_mut().unwrap_or_else(PoisonError::into_inner).free);
        off_runtime(move || drop(free));
    }
}

impl Pool {
    /// A pool for `target` (opens nothing yet).
    ///
    /// # Errors
    /// [`StoreError::Open`] when the TLS set-up fails (an unreadable `sslrootcert`).
    pub fn new(target: Target) -> Result<Self, StoreError> {
        let tls = tls_config(&target)
            .map_err(|cause| StoreError::Open { path: target.shown.clone(), cause })?
            .map(tokio_postgres_rustls::MakeRustlsConnect::new);
        Ok(Self { target, tls, state: Mutex::new(PoolState::default()), returned: Condvar::new() })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Opens a new connection (not from the pool).
    ///
    /// # Errors
    /// [`StoreError::Unreachable`] when no server answers, else [`StoreError::Open`].
    pub fn connect(&self) -> Result<Conn, StoreError> {
        let result = match &self.tls {
            None => self.target.config.connect(NoTls),
            Some(tls) => self.target.config.connect(tls.clone()),
        };
        let client = result.map_err(|e| connect_error(&self.target, &e))?;
        Ok(Conn { client, statements: HashMap::new() })
    }

    /// A connection from the pool: a free one, a new one while fewer than
    /// [`CONNECTIONS`] are open, or else the next one returned.
    ///
    /// # Errors
    /// When none can be opened, or none is returned in time.
    pub fn get(&self) -> Result<Lease<'_>, StoreError> {
        let deadline = Instant::now() + POOL_WAIT;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            while let Some(conn) = state.free.pop() {
                if conn.client.is_closed() {
                    state.taken -= 1;
                    continue;
                }
                return Ok(Lease { conn: Some(conn), pool: self });
            }
            if state.taken < CONNECTIONS {
                state.taken += 1;
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Database(format!(
                    "no connection to the archive became free within {}s ({CONNECTIONS} are in use)",
                    POOL_WAIT.as_secs()
                )));
            }
            state = self.returned.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(state);
        match self.connect() {
            Ok(conn) => Ok(Lease { conn: Some(conn), pool: self }),
            Err(e) => {
                self.give_back_slot();
                Err(e)
            }
        }
    }

    fn give_back_slot(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).taken -= 1;
        self.returned.notify_one();
    }
}

/// A connection from the pool, returned when dropped (or closed, when it broke).
pub struct Lease<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // A connection left inside a transaction (a panic mid-way) or broken is not
        // handed to the next caller.
        if conn.client.is_closed() || std::thread::panicking() {
            drop(conn);
            self.pool.give_back_slot();
            return;
        }
        self.pool.state.lock().unwrap_or_else(PoisonError::into_inner).free.push(conn);
        self.pool.returned.notify_one();
    }
}

/// What a failed connection attempt means for the user.
pub fn connect_error(target: &Target, e: &postgres::Error) -> StoreError {
    let cause = tfaudit_model::redact::redact(&error_text(e)).into_owned();
    match e.as_db_error() {
        // The server answered: a missing database, a refused login, a TLS demand.
        Some(db) if db.code() == &postgres::error::SqlState::INVALID_CATALOG_NAME => {
            StoreError::Missing { path: target.shown.clone() }
        }
        Some(_) => StoreError::Open { path: target.shown.clone(), cause },
        None if is_tls_or_protocol(e) => StoreError::Open { path: target.shown.clone(), cause },
        None => StoreError::Unreachable { host: target.host.clone(), cause },
    }
}

/// An error and its causes, in one line.
pub fn error_text(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A connection that reached a server but failed in the TLS handshake or the
/// protocol: the server is up, the set-up is wrong.
fn is_tls_or_protocol(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) {
                return true;
            }
            return false;
        }
        source = s.source();
    }
    let text = e.to_string();
    text.contains("TLS") || text.contains("tls") || text.contains("SSL")
}
