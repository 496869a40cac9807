//! Test databases: each test creates its own, uniquely named, on the server named by
//! `TFAUDIT_TEST_POSTGRES`, and drops it when done. No server is a failure, not a skip.

use std::sync::atomic::{AtomicU64, Ordering};

/// The admin URL of the test server.
pub fn admin_url() -> String {
    std::env::var("TFAUDIT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists until dropped.
pub struct TestDb {
    name: String,
    url: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn admin() -> postgres::Client {
    let url = admin_url();
    postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "the PostgreSQL tests need a server: none answered at {} ({e}); start one, or set TFAUDIT_TEST_POSTGRES \
             to an admin URL (scripts/test starts one)",
            crate::connect::strip_password(&url)
        )
    })
}

impl TestDb {
    /// A new, empty database (UTF8, so that the test does not depend on the server's
    /// default template).
    pub fn new() -> Self {
        let name = format!(
            "tfaudit_t_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        admin()
            .batch_execute(&format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
            .expect("create a test database");
        let base = admin_url();
        let (head, query) = base.split_once('?').map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
        let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
        let url = match query {
            Some(q) => format!("{root}/{name}?{q}"),
            None => format!("{root}/{name}"),
        };
        Self { name, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // WITH (FORCE): the store's pooled connections may still be closing.
        if let Err(e) = admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}
