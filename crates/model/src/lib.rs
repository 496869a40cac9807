//! What every part of tfaudit shares, and nothing else: the API client, the archive
//! backends, the alert engine and the server all speak these types, so none of them
//! has to depend on another for them (storage never depends on the HTTP client).
//!
//! - [`event`]: one audit event, parsed leniently, with its original JSON kept byte for byte.
//! - [`StoredEvent`]: an event as the archive holds it (with its ingest sequence).
//! - [`Severity`]: how serious an alert is.
//! - [`Secret`] and [`redact`]: secrets, hidden from every error, log line and stored text.
//! - [`time`]: timestamps as the API writes and reads them.
//! - [`count`]: numbers as every output writes them (`1,234,567`).

pub mod event;
mod explain;
mod figures;
pub mod names;
pub mod redact;
mod secret;
mod severity;
mod stored;
pub mod time;

pub use event::{AuditEvent, RejectedEvent};
pub use explain::{NameOf as ExplainNames, explain, explain_with};
pub use figures::count;
pub use names::{NameKind, Sighting, name_and_id};
pub use secret::Secret;
pub use severity::Severity;
pub use stored::StoredEvent;
