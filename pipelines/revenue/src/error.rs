//! Errors of the revenue pipeline.

use streampulse_core::exit::ExitCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, I/O, engine and object-store failures, classified by the core.
    #[error(transparent)]
    Core(#[from] streampulse_core::Error),

    /// The input contradicts the data contract as a whole (not one bad row).
    #[error("inconsistent input: {0}")]
    Inconsistent(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::Core(e.into())
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Core(e.into())
    }
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Core(e) => e.exit_code(),
            Error::Inconsistent(_) => ExitCode::DataErr,
            Error::Config(_) => ExitCode::Usage,
            Error::Internal(_) => ExitCode::Internal,
        }
    }
}

impl streampulse_core::runner::ExitStatus for Error {
    fn exit_code(&self) -> ExitCode {
        Error::exit_code(self)
    }
}
