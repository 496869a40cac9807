//! Settings: durations and times as users write them, the config file, and tokens
//! found where Terraform users already keep them.

pub mod credentials;
pub mod duration;
pub mod file;
pub mod secret;
pub mod size;
pub mod when;

pub use credentials::{CredentialsError, Env, Explicit, FoundToken, ProcessEnv, TokenSource, find_token};
pub use duration::{Duration, parse_duration};
pub use file::{
    AlertsSection, ArchiveLocation, ArchiveSection, ClusterSection, ConfigError, ConfigFile, DestinationKind,
    DestinationSection, IntegritySection, OrganizationSection, ReportSection, SINK_FORMATS, ServeSection, SinkKind,
    SinkSection, SyncSection, SyncSettings,
};
pub use secret::{Secret, SecretSource};
pub use size::ByteSize;
pub use when::{parse_when, parse_when_in};

use std::path::PathBuf;

/// Where the archive lives when neither `--db` nor `TFAUDIT_DB` nor the config says:
/// `$XDG_DATA_HOME/tfaudit/archive.db` (`~/.local/share/tfaudit/archive.db`).
#[must_use]
pub fn default_db_path() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("tfaudit").join("archive.db")
}

/// Where a config file is looked for when `--config` / `TFAUDIT_CONFIG` do not say:
/// `$XDG_CONFIG_HOME/tfaudit/tfaudit.toml`.
#[must_use]
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("tfaudit").join("tfaudit.toml"))
}
