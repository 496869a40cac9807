//! A local imitation of the HCP Terraform Audit Trails API.
//!
//! It behaves as the public documentation and public clients describe
//! (`GET /api/v2/organization/audit-trail`, bearer tokens, `since`, `page[number]`,
//! `page[size]`, newest first, whole-second timestamps, plain-JSON pages with a
//! `pagination` object, JSON:API errors, 401/404/429) and takes the open questions the
//! hard way when asked: `since` exclusive or inclusive, a maximum page size below what
//! clients ask for, pages that shift while events arrive, live events with timestamps
//! in the past, and faults (rate limits, 5xx, dropped connections, bodies cut short or
//! unreadable, slowness).
//!
//! The history is generated: event `i` (0 = newest) is a pure function of the seed and
//! `i`, with timestamps that never increase with `i`, so a million events cost no
//! memory. Live events are kept in memory.

mod generate;
mod listing;
mod server;

pub use generate::Style;
pub use generate::{CatalogueEntry, HOSTILE, default_catalogue, uuid};
pub use listing::{ListedEvent, Listing};
pub use server::{RequestRecord, Sim, SimStats};

use std::time::Duration;

/// Whether `since` keeps events at exactly that instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinceMode {
    /// "created after": strictly later.
    #[default]
    Exclusive,
    /// At or after.
    Inclusive,
}

/// Failures to inject, each a probability per request (0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// 500/502/503 answers.
    pub error_rate: f64,
    /// 429 answers with `X-RateLimit-Reset`.
    pub throttle_rate: f64,
    /// Connections closed without an answer.
    pub drop_rate: f64,
    /// Bodies cut short (mid-stream, or with a Content-Length that matches the cut).
    pub truncate_rate: f64,
    /// 200 answers whose body is not JSON.
    pub garbage_rate: f64,
    /// Requests delayed by `slow_delay`.
    pub slow_rate: f64,
    pub slow_delay: Duration,
    /// A real limit in requests per second; over it, 429 (as the API's 30/s per user).
    pub rate_limit: Option<u32>,
}

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Events of generated history.
    pub events: u64,
    /// How far back the history reaches from its newest event.
    pub span: Duration,
    /// How old the newest history event is when the simulator starts.
    pub newest_age: Duration,
    /// Events older than this are no longer served.
    pub retention: Duration,
    /// The most events a page holds, whatever the client asks.
    pub max_page_size: u32,
    /// The page size when the client asks none.
    pub default_page_size: u32,
    pub since_mode: SinceMode,
    /// The token that works.
    pub token: String,
    /// A token that is valid but not entitled (answered 404).
    pub forbidden_token: Option<String>,
    /// The organization token that reads the catalogue listings (workspaces, teams…);
    /// `None`: `token` reads them too.
    pub enrich_token: Option<String>,
    pub organization_id: String,
    /// Live events per second (0 for none).
    pub live_rate: f64,
    /// Share of live events whose timestamp is in the past.
    pub late_fraction: f64,
    /// How far in the past a late event's timestamp may be.
    pub max_lateness: Duration,
    /// Share of strings that are hostile.
    pub hostile: f64,
    /// Elements of history that are not events (no id, not an object, bad timestamp).
    pub malformed: u64,
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            events: 5_000,
            span: Duration::from_secs(13 * 86_400),
            newest_age: Duration::from_secs(60),
            retention: Duration::from_secs(14 * 86_400),
            max_page_size: 1000,
            default_page_size: 1000,
            since_mode: SinceMode::Exclusive,
            token: "sim-token".into(),
            forbidden_token: None,
            enrich_token: None,
            organization_id: "org-SimuLat0r000001".into(),
            live_rate: 0.0,
            late_fraction: 0.2,
            max_lateness: Duration::from_secs(120),
            hostile: 0.05,
            malformed: 0,
            faults: Faults::default(),
        }
    }
}
