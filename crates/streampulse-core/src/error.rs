//! The core error type. Variants are grouped by who must act: the data's owner (bad input), the
//! operator (configuration), the platform (a service), or us (an internal bug). Each group maps to
//! one documented exit code, so Airflow can tell "retry" from "fix the file".

use std::path::PathBuf;

use crate::exit::ExitCode;

/// Result alias used across the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- bad input: the data's owner must act --------------------------------------------------
    /// A malformed input that cannot be read at all (missing header, missing column, ...).
    #[error("{file}:{line}: column {column}: {reason}")]
    Input {
        file: String,
        line: u64,
        column: String,
        reason: String,
    },

    /// More rows were rejected than `--max-reject-share` allows.
    #[error(
        "{rejected} of {rows} input rows rejected ({share:.4}%), more than the allowed {max:.4}%; \
         see {rejects_path}",
        share = 100.0 * *rejected as f64 / (*rows).max(1) as f64,
        max = 100.0 * max_share
    )]
    TooManyRejects {
        rejected: u64,
        rows: u64,
        max_share: f64,
        rejects_path: String,
    },

    /// An expected input dataset or file does not exist.
    #[error("input not found: {0}")]
    InputMissing(String),

    // --- configuration: the operator must act -------------------------------------------------
    #[error("invalid configuration: {0}")]
    Config(String),

    // --- external services and the platform ------------------------------------------------------
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// The catalog database or the PostgreSQL engine.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The Kafka broker, with what we were doing when it failed.
    #[error("kafka, {context}: {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },

    // --- libraries: usually a bug or a resource problem ---------------------------------------------
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on: a bare "No such file" helps nobody.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit code this error should end the run with (see [`ExitCode`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Input { .. } | Error::TooManyRejects { .. } | Error::InputMissing(_) => {
                ExitCode::DataErr
            }
            Error::Config(_) => ExitCode::Usage,
            Error::Io { source, .. } => io_exit_code(source),
            Error::ObjectStore(_) => ExitCode::TempFail,
            Error::Database(e) => database_exit_code(e),
            Error::Migrate(sqlx::migrate::MigrateError::Execute(e)) => database_exit_code(e),
            Error::Migrate(_) => ExitCode::Internal,
            Error::Kafka { source, .. } => crate::kafka::exit_code(source),
            Error::DataFusion(e) => match e.find_root() {
                datafusion::error::DataFusionError::ResourcesExhausted(_) => ExitCode::TempFail,
                datafusion::error::DataFusionError::IoError(io) => io_exit_code(io),
                datafusion::error::DataFusionError::External(inner) => inner
                    .downcast_ref::<Error>()
                    .map_or(ExitCode::Internal, Error::exit_code),
                _ => ExitCode::Internal,
            },
            Error::Arrow(_) | Error::Parquet(_) | Error::Json(_) | Error::Internal(_) => {
                ExitCode::Internal
            }
        }
    }
}

/// A database we cannot reach is "unavailable" (69); a conflict or a dropped connection in the
/// middle of work is worth a retry (75); a failing statement is our bug (70).
fn database_exit_code(e: &sqlx::Error) -> ExitCode {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            ExitCode::Unavailable
        }
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => ExitCode::TempFail,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // serialization_failure, deadlock_detected, too_many_connections,
            // admin_shutdown, cannot_connect_now; SQLITE_BUSY, SQLITE_LOCKED
            Some("40001" | "40P01" | "53300" | "57P01" | "57P03" | "5" | "6") => ExitCode::TempFail,
            _ => ExitCode::Internal,
        },
        _ => ExitCode::Internal,
    }
}

fn io_exit_code(e: &std::io::Error) -> ExitCode {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => ExitCode::DataErr,
        // A full disk or a flaky mount is worth a retry; a permission error is not.
        PermissionDenied => ExitCode::Internal,
        _ => ExitCode::TempFail,
    }
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(inner) => inner,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}

/// The error of a pipeline run: the core's errors, plus what a pipeline can find wrong with its
/// input as a whole or its own state, each with the exit code it ends the run with. Every
/// pipeline crate re-exports it as its `Error`.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Bad input, I/O, engine and object-store failures, classified by the core.
    #[error(transparent)]
    Core(#[from] Error),

    /// The input contradicts the data contract as a whole (not one bad row).
    #[error("inconsistent input: {0}")]
    Inconsistent(String),

    #[error("invalid configuration: {0}")]
    Config(String),

    /// An input is not in the order a streaming merge needs. Pipelines handle it by sorting and
    /// retrying; it only reaches the caller as a bug.
    #[error("{input} is not sorted by {key} at row {line}")]
    NotSorted {
        input: String,
        key: &'static str,
        line: u64,
    },

    #[error("internal error: {0}")]
    Internal(String),
}

impl From<datafusion::error::DataFusionError> for PipelineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        PipelineError::Core(e.into())
    }
}

impl From<arrow::error::ArrowError> for PipelineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        PipelineError::Core(e.into())
    }
}

impl PipelineError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            PipelineError::Core(e) => e.exit_code(),
            PipelineError::Inconsistent(_) => ExitCode::DataErr,
            PipelineError::Config(_) => ExitCode::Usage,
            PipelineError::Internal(_) | PipelineError::NotSorted { .. } => ExitCode::Internal,
        }
    }
}
