//! What every StreamPulse pipeline shares: command-line conventions, telemetry, run records, the
//! dataset schemas of the data contract, CSV decoding with rejects, atomic Parquet partitions,
//! data locations and the memory-bounded embedded engine.
//!
//! A pipeline's `run` typically looks like:
//!
//! ```no_run
//! # async fn demo(common: streampulse_core::config::CommonArgs) -> streampulse_core::Result<()> {
//! use streampulse_core::{engine, run_record::RunMeter};
//! let cfg = common.validate()?;
//! let meter = RunMeter::start("play-counts", "2026-11-26");
//! let ctx = engine::session(&cfg, engine::pool_bytes(cfg.budget(), 64 << 20))?;
//! // ... register inputs, run SQL, write_partition(...), publish ...
//! meter.finish(0, None).write(&cfg.data_root).await?;
//! # Ok(()) }
//! ```

pub mod commit;
pub mod config;
pub mod conform;
pub mod csv;
pub mod engine;
pub mod error;
pub mod exit;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod location;
pub mod money;
pub mod output;
pub mod progress;
pub mod rate;
pub mod rejects;
pub mod run_record;
pub mod runner;
pub mod schema;
pub mod shutdown;
pub mod songs;
pub mod stream;
pub mod telemetry;
pub mod time;

pub use error::{Error, Result};
pub use exit::ExitCode;
