//! Errors of the play-counts pipeline: the pipelines' shared error type (see
//! [`streampulse_core::error::PipelineError`] for the variants and their exit codes).

pub use streampulse_core::error::PipelineError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;
