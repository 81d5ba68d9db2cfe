//! The errors of a sync, grouped by who must act, each with its exit code.

use streampulse_core::ExitCode;
use streampulse_core::error::PipelineError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Catalog database, snapshot I/O, configuration.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),

    /// The API kept failing a request past the retry policy, or answered nonsense.
    #[error("metadata API, {what}: {reason}")]
    Api {
        what: String,
        reason: String,
        /// The API could not be reached at all (exit 69), rather than failing (75).
        unreachable: bool,
    },

    /// The API rejected the token: retrying will not help.
    #[error("metadata API refused our credentials ({status}) on {what}; check --api-token")]
    Unauthorized { status: u16, what: String },

    /// Too many requests failed for one run: the partner is having a bad day.
    #[error(
        "error budget exhausted: {failed} of {requests} requests failed (5xx, timeouts, \
         connection errors), more than the allowed {budget}; committed work is kept"
    )]
    ErrorBudget {
        failed: u64,
        requests: u64,
        budget: u64,
    },
}

impl From<streampulse_core::Error> for Error {
    fn from(e: streampulse_core::Error) -> Self {
        Error::Pipeline(PipelineError::Core(e))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        streampulse_core::Error::from(e).into()
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        streampulse_core::Error::from(e).into()
    }
}

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Pipeline(PipelineError::Config(msg.into()))
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Pipeline(e) => e.exit_code(),
            Error::Api {
                unreachable: true, ..
            } => ExitCode::Unavailable,
            Error::Api { .. } | Error::ErrorBudget { .. } => ExitCode::TempFail,
            Error::Unauthorized { .. } => ExitCode::Usage,
        }
    }
}

impl streampulse_core::runner::ExitStatus for Error {
    fn exit_code(&self) -> ExitCode {
        Error::exit_code(self)
    }
}
