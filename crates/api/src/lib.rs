//! The HCP Terraform Audit Trails API, as a client.
//!
//! - [`event`]: one audit event (from `tfaudit-model`), parsed leniently, with its original JSON kept byte for byte.
//! - [`page`]: one page of the listing and the pagination object the server sent.
//! - [`client`]: HTTP with retries, backoff, the server's rate-limit headers and a
//!   client-side limiter.
//! - [`token`]: the bearer token, kept out of every `Debug`, log line and error.
//! - [`redact`]: every secret tfaudit knows, hidden from errors, logs and stored text (from `tfaudit-model`).
//! - [`catalogue`]: an organization's listings (workspaces, teams, members…), for names.
//! - [`body`]: response bodies read with a cap, whatever size the server claims.

pub mod body;
pub mod catalogue;
pub mod client;
pub mod page;
pub mod token;

// The event, redaction and time formats live in the model crate, which storage shares
// without depending on this client; re-exported here so that the client's users
// keep their paths.
pub use tfaudit_model::{event, redact, time};

pub use client::{ApiError, Client, ClientOptions, ClientStats, PageRequest, RetryPolicy};
pub use event::{AuditEvent, RejectedEvent};
pub use page::{Page, Pagination};
pub use token::Token;

/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!("tfaudit/", env!("CARGO_PKG_VERSION"));

/// The default address of HCP Terraform.
pub const DEFAULT_ADDRESS: &str = "https://app.terraform.io";

/// The most pages one sync reads by default: 100 million events at 1,000 per page,
/// far more than 14 days of any organization, yet a sync against a server that never
/// ends its listing still stops.
pub const DEFAULT_MAX_PAGES: u64 = 100_000;

/// The path of the audit trail listing, below the address.
pub const AUDIT_TRAIL_PATH: &str = "/api/v2/organization/audit-trail";
