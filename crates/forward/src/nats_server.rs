//! A real nats-server with JetStream for tests, private to each test: its own free
//! port on 127.0.0.1 and its own storage folder, stopped when dropped. The binary is
//! `TFAUDIT_NATS_SERVER` (scripts/test installs Debian's `nats-server` package when
//! missing), else `nats-server` on the PATH or in /usr/sbin; a test fails without it.
//! It is shared by the forward crate's unit tests and the CLI's end-to-end tests
//! (included there by path).

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct NatsServer {
    pub url: String,
    token: Option<String>,
    _child: tokio::process::Child,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TFAUDIT_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "nats-server not found: run scripts/test (it installs Debian's nats-server package), or set TFAUDIT_NATS_SERVER to its path"
        )
    })
}

#[allow(dead_code, reason = "each test binary uses its own part")]
impl NatsServer {
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// A server that asks clients for `token`.
    pub async fn start_with_token(token: &str) -> Self {
        Self::launch(Some(token.to_owned())).await
    }

    async fn launch(token: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = tokio::process::Command::new(binary());
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .kill_on_drop(true);
        if let Some(t) = &token {
            command.args(["--auth", t]);
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        let server = Self { url: format!("nats://127.0.0.1:{port}"), token, _child: child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        // Ready once it takes connections (JetStream is up before it listens).
        loop {
            if server.options().connect(&server.url).await.is_ok() {
                return server;
            }
            let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "nats-server did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn options(&self) -> async_nats::ConnectOptions {
        match &self.token {
            Some(t) => async_nats::ConnectOptions::with_token(t.clone()),
            None => async_nats::ConnectOptions::new(),
        }
    }

    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.options().connect(&self.url).await.unwrap())
    }

    /// A stream named `name` taking `subject`, dropping repeats of a `Nats-Msg-Id`
    /// within 10 minutes.
    pub async fn stream(
        &self,
        js: &async_nats::jetstream::Context,
        name: &str,
        subject: &str,
    ) -> async_nats::jetstream::stream::Stream {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .unwrap();
        js.get_stream(name).await.unwrap()
    }

    pub async fn messages(stream: &async_nats::jetstream::stream::Stream) -> u64 {
        stream.get_info().await.unwrap().state.messages
    }

    /// The `Nats-Msg-Id` of the stream's first `n` messages, in order.
    pub async fn message_ids(stream: &async_nats::jetstream::stream::Stream, n: u64) -> Vec<String> {
        let mut ids = Vec::new();
        for seq in 1..=n {
            let m = stream.get_raw_message(seq).await.unwrap();
            ids.push(m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default());
        }
        ids
    }
}
