//! Every way a command can fail, each with its exit code.

use std::process::ExitCode;

use tfaudit_api::ApiError;
use tfaudit_config::CredentialsError;
use tfaudit_store::StoreError;
use tfaudit_sync::SyncError;

/// A failure, already worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A bad flag, value or config: exit 2.
    #[error("{0}")]
    Usage(String),
    /// No token, a rejected token, or no entitlement: exit 3.
    #[error("{0}")]
    Credentials(String),
    /// The API could not be reached or kept failing: exit 4.
    #[error("{0}")]
    Api(String),
    /// The archive could not be read or written: exit 5.
    #[error("{0}")]
    Store(String),
    /// Stopped by a signal before finishing: exit 130.
    #[error("interrupted; the next run resumes where this one stopped")]
    Interrupted,
    /// Output could not be written.
    #[error("{0}")]
    Output(String),
    /// The reader of our output went away (`tfaudit export | head`): not an error.
    #[error("output closed")]
    ClosedPipe,
    /// A bug: exit 1.
    #[error("{0}")]
    Internal(String),
    /// A copy that does not equal its original (`migrate`, a pruned day's copy in cold
    /// storage): exit 1.
    #[error("{0}")]
    Mismatch(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::ClosedPipe => 0,
            Self::Internal(_) | Self::Output(_) | Self::Mismatch(_) => 1,
            Self::Usage(_) => 2,
            Self::Credentials(_) => 3,
            Self::Api(_) => 4,
            Self::Store(_) => 5,
            Self::Interrupted => 130,
        })
    }
}

impl Failure {
    /// The same exit code with nothing more to print (the details were printed already).
    #[must_use]
    pub fn from_code_only(f: Failure) -> Failure {
        let message = "one or more organizations failed (see above)".to_owned();
        match f {
            Self::Usage(_) => Self::Usage(message),
            Self::Credentials(_) => Self::Credentials(message),
            Self::Api(_) => Self::Api(message),
            Self::Store(_) => Self::Store(message),
            other => other,
        }
    }
}

impl Failure {
    /// [`Failure::from_code_only`] for sinks, whose errors were logged already.
    #[must_use]
    pub fn from_code_only_sinks(f: Failure) -> Failure {
        let message = "one or more sinks failed (see above)".to_owned();
        match f {
            Self::Api(_) => Self::Api(message),
            Self::Store(_) => Self::Store(message),
            other => other,
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized { .. } | ApiError::NotEntitled { .. } => Self::Credentials(e.to_string()),
            ApiError::InvalidAddress { .. } => Self::Usage(e.to_string()),
            _ => Self::Api(e.to_string()),
        }
    }
}

impl From<CredentialsError> for Failure {
    fn from(e: CredentialsError) -> Self {
        Self::Credentials(e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidLocation { .. } => Self::Usage(e.to_string()),
            StoreError::Output(io) => io.into(),
            // Exit 5 as every archive failure; named so that it stays so.
            e @ StoreError::Unreachable { .. } => Self::Store(e.to_string()),
            other => Self::Store(other.to_string()),
        }
    }
}

impl From<SyncError> for Failure {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Api(a) => a.into(),
            SyncError::Store(s) => s.into(),
            SyncError::OrganizationChanged { .. } => Self::Usage(e.to_string()),
            SyncError::Unending(m) => Self::Api(m),
            SyncError::Internal(i) => Self::Internal(i),
        }
    }
}

impl From<tfaudit_cold::ColdError> for Failure {
    fn from(e: tfaudit_cold::ColdError) -> Self {
        use tfaudit_cold::ColdError;
        match e {
            ColdError::Location(_) | ColdError::UnknownOrganization { .. } | ColdError::Manifest { .. } => {
                Self::Usage(e.to_string())
            }
            ColdError::Denied { .. } => Self::Credentials(e.to_string()),
            ColdError::Storage { .. } => Self::Api(e.to_string()),
            ColdError::Encode(m) => Self::Internal(m),
            ColdError::Copy(m) => Self::Mismatch(m),
            ColdError::Store(s) => s.into(),
        }
    }
}

impl From<tfaudit_report::ReportError> for Failure {
    fn from(e: tfaudit_report::ReportError) -> Self {
        match e {
            tfaudit_report::ReportError::Period(m) => Self::Usage(format!("--period: {m}")),
            tfaudit_report::ReportError::Store(s) => s.into(),
        }
    }
}

impl From<tfaudit_investigate::InvestigateError> for Failure {
    fn from(e: tfaudit_investigate::InvestigateError) -> Self {
        use crate::output::terminal_safe;
        use tfaudit_investigate::InvestigateError;
        match e {
            InvestigateError::Ambiguous { name, ids } => Self::Usage(format!(
                "{} ids are named {:?}: {}; give the id",
                ids.len(),
                terminal_safe(&name),
                ids.iter().take(10).map(|id| terminal_safe(id).into_owned()).collect::<Vec<_>>().join(", ")
            )),
            InvestigateError::NoEvent(id) => Self::Usage(format!(
                "no event {:?} in the archive; give the id of an archived event (see `tfaudit query`)",
                terminal_safe(&id)
            )),
            InvestigateError::Window => Self::Usage("--window is too long; use days, such as 7d".into()),
            InvestigateError::Store(s) => s.into(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Self::ClosedPipe
        } else {
            Self::Output(format!("writing output failed: {e}"))
        }
    }
}
