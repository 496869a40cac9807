//! How a sink writes each event (`format`): `raw`, the event exactly as HCP
//! Terraform sent it; `ocsf`, OCSF API Activity (class 6003); `ecs`, the Elastic
//! Common Schema.

use std::borrow::Cow;

use tfaudit_model::AuditEvent;

/// A sink's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The original event (default).
    #[default]
    Raw,
    /// OCSF API Activity (class 6003).
    Ocsf,
    /// Elastic Common Schema.
    Ecs,
}

impl Format {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Ocsf => "ocsf",
            Self::Ecs => "ecs",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Self::Raw),
            "ocsf" => Ok(Self::Ocsf),
            "ecs" => Ok(Self::Ecs),
            _ => Err(format!("format {s:?} is not known; the formats are: raw, ocsf, ecs")),
        }
    }
}

/// The event as `format` writes it, on one line.
#[must_use]
pub fn render(format: Format, event: &AuditEvent) -> String {
    match format {
        Format::Raw => one_line(&event.raw).into_owned(),
        Format::Ocsf | Format::Ecs => unreachable!("checked when the sink is built"),
    }
}

/// JSON on one line: line breaks can only sit between JSON tokens (a string holds
/// them escaped), so as spaces they change no value, and a JSON-lines reader gets
/// one event per line whatever the server's layout.
#[must_use]
pub fn one_line(json: &str) -> Cow<'_, str> {
    if json.contains(['\n', '\r']) { Cow::Owned(json.replace(['\n', '\r'], " ")) } else { Cow::Borrowed(json) }
}
