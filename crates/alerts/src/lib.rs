//! Alerts: rules evaluated over the archive, and alerts delivered exactly once.
//!
//! - [`rules`]: the rules language (TOML), checked with line-level errors.
//! - [`pack`]: the built-in rules, on by default.
//! - [`engine`]: evaluation — conditions, local-time windows, thresholds over sliding
//!   windows, first-seen values, quiet periods — as a pure function of events and a
//!   state that is saved with the engine's cursor.
//! - [`destination`]: Slack, PagerDuty, webhooks, email, the log.
//! - [`runner`]: the consumer of the archive: evaluates new events, writes alerts to
//!   the outbox in the same transaction as its cursor, delivers with retries.

pub mod destination;
pub mod engine;
pub mod pack;
pub mod render;
pub mod rules;
pub mod runner;

pub use engine::{Engine, EngineState, NewAlert};
pub use rules::{Rule, RuleError, RuleSet, Severity};
