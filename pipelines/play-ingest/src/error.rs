//! play-ingest's errors are the pipelines' common ones: Kafka failures (69 unreachable, 75
//! otherwise), I/O, too many malformed events (65) and configuration (64), classified by the core.

pub use streampulse_core::error::PipelineError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;
