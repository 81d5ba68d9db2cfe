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

    /// A column of an input file has a type the contract's cannot hold exactly (or is missing):
    /// see [`crate::conform`].
    #[error("{file}: column {column}: found {found}, expected {expected}: {detail}")]
    InputType {
        file: String,
        column: String,
        found: String,
        expected: String,
        detail: String,
    },

    /// An expected input dataset or file does not exist (yet): exit 66, which a scheduler
    /// retries later, unlike bad data (65).
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
    #[cfg(feature = "sql")]
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    #[cfg(feature = "sql")]
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// The Kafka broker, with what we were doing when it failed.
    #[cfg(feature = "kafka")]
    #[error("kafka, {context}: {source}")]
    Kafka {
        context: String,
        source: rdkafka::error::KafkaError,
    },

    /// A remote query engine (a Spark Connect server), with what went wrong as a
    /// [`RemoteFailure`]. The message never carries the connection's parameters (a token).
    #[error("{engine} at {endpoint}: {message}")]
    Remote {
        engine: String,
        endpoint: String,
        failure: RemoteFailure,
        message: String,
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

    /// A Delta table (its log, or a commit to it). Boxed: delta-rs's error is large, and every
    /// `Result` of the core carries this type.
    #[cfg(feature = "delta")]
    #[error("delta: {0}")]
    Delta(Box<deltalake::DeltaTableError>),

    #[error("internal error: {0}")]
    Internal(String),
}

#[cfg(feature = "delta")]
impl From<deltalake::DeltaTableError> for Error {
    fn from(e: deltalake::DeltaTableError) -> Self {
        Error::Delta(Box::new(e))
    }
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
            Error::Input { .. } | Error::TooManyRejects { .. } | Error::InputType { .. } => {
                ExitCode::DataErr
            }
            Error::InputMissing(_) => ExitCode::NoInput,
            Error::Config(_) => ExitCode::Usage,
            Error::Io { source, .. } => io_exit_code(source),
            Error::ObjectStore(e) => object_store_exit_code(e),
            #[cfg(feature = "sql")]
            Error::Database(e) => database_exit_code(e),
            #[cfg(feature = "sql")]
            Error::Migrate(sqlx::migrate::MigrateError::Execute(e)) => database_exit_code(e),
            #[cfg(feature = "sql")]
            Error::Migrate(_) => ExitCode::Internal,
            #[cfg(feature = "kafka")]
            Error::Kafka { source, .. } => kafka_exit_code(source),
            // A library error is our bug unless something it wraps says otherwise: a full disk
            // under the Parquet writer is a temporary failure, not an internal error.
            Error::DataFusion(e) => cause_exit_code(e),
            Error::Arrow(e) => cause_exit_code(e),
            Error::Parquet(e) => cause_exit_code(e),
            Error::Json(e) => cause_exit_code(e),
            #[cfg(feature = "delta")]
            Error::Delta(e) => delta_exit_code(e),
            Error::Internal(_) => ExitCode::Internal,
            Error::Remote { failure, .. } => match failure {
                RemoteFailure::Unavailable => ExitCode::Unavailable,
                RemoteFailure::Lost => ExitCode::TempFail,
                RemoteFailure::BadInput => ExitCode::DataErr,
                RemoteFailure::Config => ExitCode::Usage,
                RemoteFailure::Internal => ExitCode::Internal,
            },
        }
    }
}

/// What went wrong with a remote engine, as the caller must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteFailure {
    /// Not reachable, or it refused our credentials: 69.
    Unavailable,
    /// The session or the connection was lost in the middle of a job: 75, worth a retry.
    Lost,
    /// The engine rejected a value of the input (out of range for its type): 65.
    BadInput,
    /// The connection settings are wrong (a token over plain text, say): 64.
    Config,
    /// A query of ours it rejected, or an answer we could not read: 70.
    Internal,
}

/// The exit code of a Kafka failure: unreachable brokers are 69; records no retry can decode
/// (a codec this build lacks, a corrupt batch) are bad input, 65; a refused authorization or a
/// setting the broker rejects is the operator's to fix, 64; the rest 75.
#[cfg(feature = "kafka")]
pub fn kafka_exit_code(e: &rdkafka::error::KafkaError) -> ExitCode {
    use rdkafka::error::KafkaError;
    use rdkafka::error::RDKafkaErrorCode::*;
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(
            AllBrokersDown
            | BrokerTransportFailure
            | Resolve
            | MessageTimedOut
            | OperationTimedOut
            | UnknownTopicOrPartition
            | UnknownTopic
            | UnknownPartition,
        ) => ExitCode::Unavailable,
        Some(
            NotImplemented
            | BadCompression
            | BadMessage
            | InvalidMessage
            | InvalidRecord
            | UnsupportedCompressionType,
        ) => ExitCode::DataErr,
        Some(
            InvalidArgument
            | InvalidConfig
            | UnsupportedFeature
            | UnsupportedVersion
            | Authentication
            | SaslAuthenticationFailed
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed,
        ) => ExitCode::Usage,
        _ => ExitCode::TempFail,
    }
}

/// A database we cannot reach is "unavailable" (69); a conflict or a dropped connection in the
/// middle of work is worth a retry (75); a failing statement is our bug (70).
#[cfg(feature = "sql")]
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

/// Walks a library error's chain of causes for the first one that decides the exit code: an I/O
/// error, one of ours carried through an engine, or the engine's memory budget running out.
fn cause_exit_code(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // An I/O error may itself carry one of ours (a stream adapter's error).
            return match io.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
                Some(ours) => ours.exit_code(),
                None => io_exit_code(io),
            };
        }
        if let Some(ours) = err.downcast_ref::<Error>() {
            return ours.exit_code();
        }
        if let Some(e) = err.downcast_ref::<object_store::Error>() {
            return object_store_exit_code(e);
        }
        if let Some(datafusion::error::DataFusionError::ResourcesExhausted(_)) =
            err.downcast_ref::<datafusion::error::DataFusionError>()
        {
            return ExitCode::TempFail;
        }
        if let Some(e) = err.downcast_ref::<datafusion::error::DataFusionError>()
            && let datafusion::error::DataFusionError::Shared(inner) = e
        {
            cause = Some(inner.as_ref());
            continue;
        }
        cause = err.source();
    }
    ExitCode::Internal
}

/// A commit that lost to other writers every time, or a table read while it was being vacuumed,
/// is worth a retry (75); the store's own errors are the store's; a table we cannot read (an
/// unsupported protocol, a corrupt log) is 70 unless its cause says otherwise.
#[cfg(feature = "delta")]
fn delta_exit_code(e: &deltalake::DeltaTableError) -> ExitCode {
    use deltalake::DeltaTableError as D;
    use deltalake::kernel::transaction::TransactionError as T;
    match e {
        D::ObjectStore { source } => object_store_exit_code(source),
        D::Transaction { source } => match source {
            T::ObjectStore { source } => object_store_exit_code(source),
            T::VersionAlreadyExists(_) | T::CommitConflict(_) | T::MaxCommitAttempts(_) => {
                ExitCode::TempFail
            }
            _ => ExitCode::Internal,
        },
        D::VersionAlreadyExists(_) => ExitCode::TempFail,
        D::Io { source } => io_exit_code(source),
        _ => cause_exit_code(e),
    }
}

/// Refused credentials are a service we cannot use (69: the operator must act, a retry will not
/// help); a missing object is missing input (66); anything else on the wire is worth a retry.
fn object_store_exit_code(e: &object_store::Error) -> ExitCode {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ExitCode::Unavailable,
        object_store::Error::NotFound { .. } => ExitCode::NoInput,
        // S3 answers a list request with a bad key by a 403 that the store reports as a
        // generic error (its retry error type is private): the status is only in the text.
        object_store::Error::Generic { .. } => {
            let text = e.to_string();
            if text.contains("403 Forbidden") || text.contains("401 Unauthorized") {
                ExitCode::Unavailable
            } else {
                ExitCode::TempFail
            }
        }
        _ => ExitCode::TempFail,
    }
}

fn io_exit_code(e: &std::io::Error) -> ExitCode {
    use std::io::ErrorKind::*;
    // A store's error carried through a reader (a streamed object).
    if let Some(inner) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<object_store::Error>())
    {
        return object_store_exit_code(inner);
    }
    match e.kind() {
        NotFound => ExitCode::DataErr,
        // A corrupt or truncated file (a gzip export cut short) is bad input: a retry reads the
        // same bytes.
        InvalidData | UnexpectedEof => ExitCode::DataErr,
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

    /// A run asked to stop (SIGTERM) before its work was done, that kept what it finished: 75,
    /// so the scheduler runs it again. Runs that publish nothing on a signal never get here
    /// (the runner drops them, also with 75).
    #[error("interrupted: {0}")]
    Interrupted(String),

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
            PipelineError::Interrupted(_) => ExitCode::TempFail,
            PipelineError::Internal(_) | PipelineError::NotSorted { .. } => ExitCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn full_disk() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    #[test]
    fn a_full_disk_is_temporary_wherever_it_surfaces() {
        assert_eq!(full_disk().kind(), ErrorKind::StorageFull);
        let cases = [
            Error::io("/data/x", full_disk()),
            Error::Parquet(parquet::errors::ParquetError::External(Box::new(
                full_disk(),
            ))),
            Error::Arrow(arrow::error::ArrowError::IoError(
                "write".into(),
                full_disk(),
            )),
            Error::DataFusion(datafusion::error::DataFusionError::ParquetError(Box::new(
                parquet::errors::ParquetError::External(Box::new(full_disk())),
            ))),
            Error::DataFusion(datafusion::error::DataFusionError::Context(
                "writing".into(),
                Box::new(datafusion::error::DataFusionError::IoError(full_disk())),
            )),
        ];
        for e in cases {
            assert_eq!(e.exit_code(), ExitCode::TempFail, "{e}");
        }
    }

    #[test]
    fn our_errors_keep_their_code_through_the_engine() {
        let bad = Error::InputType {
            file: "f.parquet".into(),
            column: "c".into(),
            found: "Utf8".into(),
            expected: "Int64".into(),
            detail: "no exact conversion exists".into(),
        };
        let through: datafusion::error::DataFusionError = bad.into();
        let wrapped = Error::DataFusion(datafusion::error::DataFusionError::Context(
            "scan".into(),
            Box::new(through),
        ));
        assert_eq!(wrapped.exit_code(), ExitCode::DataErr);
        let missing = Error::InputMissing("plays/date=2026-11-26".into());
        assert_eq!(missing.exit_code(), ExitCode::NoInput);
        let budget = Error::DataFusion(datafusion::error::DataFusionError::ResourcesExhausted(
            "pool".into(),
        ));
        assert_eq!(budget.exit_code(), ExitCode::TempFail);
    }

    #[test]
    fn refused_credentials_are_unavailable_and_a_missing_object_is_missing() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let cases = [
            (
                generic("Error performing GET http://h/bucket: 403 Forbidden"),
                ExitCode::Unavailable,
            ),
            (
                generic("Error performing GET http://h/bucket: 503 Service Unavailable"),
                ExitCode::TempFail,
            ),
            (
                object_store::Error::NotFound {
                    path: "b/k".into(),
                    source: "404".into(),
                },
                ExitCode::NoInput,
            ),
            (
                object_store::Error::PermissionDenied {
                    path: "b/k".into(),
                    source: "403".into(),
                },
                ExitCode::Unavailable,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            assert_eq!(Error::ObjectStore(e).exit_code(), code, "{text}");
        }
    }

    #[test]
    fn a_remote_engine_failure_has_the_code_of_who_must_act() {
        let remote = |failure| Error::Remote {
            engine: "spark".into(),
            endpoint: "sc://h:15002".into(),
            failure,
            message: "m".into(),
        };
        assert_eq!(
            remote(RemoteFailure::Unavailable).exit_code(),
            ExitCode::Unavailable
        );
        assert_eq!(remote(RemoteFailure::Lost).exit_code(), ExitCode::TempFail);
        assert_eq!(
            remote(RemoteFailure::BadInput).exit_code(),
            ExitCode::DataErr
        );
        assert_eq!(remote(RemoteFailure::Config).exit_code(), ExitCode::Usage);
        assert_eq!(
            remote(RemoteFailure::Internal).exit_code(),
            ExitCode::Internal
        );
    }

    #[test]
    fn bugs_and_configuration_are_not_retried() {
        assert_eq!(Error::Internal("x".into()).exit_code(), ExitCode::Internal);
        assert_eq!(Error::Config("x".into()).exit_code(), ExitCode::Usage);
        assert_eq!(
            Error::io("/x", std::io::Error::from(ErrorKind::PermissionDenied)).exit_code(),
            ExitCode::Internal
        );
        let plan = Error::DataFusion(datafusion::error::DataFusionError::Plan("no".into()));
        assert_eq!(plan.exit_code(), ExitCode::Internal);
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_failures_map_to_who_must_act() {
        use rdkafka::error::KafkaError;
        use rdkafka::error::RDKafkaErrorCode::*;
        let consume = |c| kafka_exit_code(&KafkaError::MessageConsumption(c));
        // Records no retry decodes: the data's owner must act.
        for c in [
            NotImplemented,
            BadCompression,
            InvalidMessage,
            InvalidRecord,
        ] {
            assert_eq!(consume(c), ExitCode::DataErr, "{c:?}");
        }
        // Refused by the broker: the operator's to fix.
        for c in [
            TopicAuthorizationFailed,
            GroupAuthorizationFailed,
            SaslAuthenticationFailed,
        ] {
            assert_eq!(consume(c), ExitCode::Usage, "{c:?}");
        }
        assert_eq!(
            kafka_exit_code(&KafkaError::Global(AllBrokersDown)),
            ExitCode::Unavailable
        );
        assert_eq!(
            kafka_exit_code(&KafkaError::Global(OperationTimedOut)),
            ExitCode::Unavailable
        );
        assert_eq!(consume(NotCoordinator), ExitCode::TempFail);
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn unreachable_brokers_are_unavailable_and_the_rest_worth_a_retry() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(kafka_exit_code(&timed_out), ExitCode::Unavailable);
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert_eq!(kafka_exit_code(&full), ExitCode::TempFail);
    }
}
