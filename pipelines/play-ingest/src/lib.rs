//! `play-ingest`: consumes the Kafka topic `plays` (one JSON play event per message, keyed by
//! user_id) in a consumer group and writes the Parquet partitions `plays/date=D/` that
//! play-counts and revenue read.
//!
//! Delivery is at least once, written exactly once:
//! - offsets are committed only after the Parquet files holding the records are in place;
//! - each file holds the records of one Kafka partition for one date and is named after that
//!   partition and the last offset it covers, `part-<topic>-p<P>-<first>-<upto>.parquet`: all of
//!   the partition's records of that date up to `upto` are in that file or an earlier one. After a
//!   crash the records between the last commit and `upto` come again and are skipped;
//! - a play_id already written for a date (by a producer that sent it twice) is skipped too:
//!   all plays of one user share a partition, so that check is per partition.
//!
//! Scale-out is more instances in the same group: Kafka splits the partitions between them.
//! See [`ingest`] for the loop and README.md for operations.

pub mod error;
pub mod event;
pub mod ingest;

use std::time::Duration;

use chrono::NaiveDate;
use streampulse_core::config::{CommonArgs, CommonConfig, RejectArgs};
use streampulse_core::exit::EXIT_CODES_HELP;

pub use error::{Error, Result};
pub use ingest::{IngestSummary, run};

pub const PIPELINE: &str = "play-ingest";

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Consume the plays topic into Parquet partitions plays/date=D/", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, env = "SP_KAFKA_BROKERS")]
    pub kafka_brokers: String,

    /// The topic of play events.
    #[arg(long, env = "SP_INGEST_TOPIC", default_value = "plays")]
    pub topic: String,

    /// The consumer group: instances with the same group split the topic's partitions.
    #[arg(long, env = "SP_INGEST_GROUP", default_value = "play-ingest")]
    pub group: String,

    /// Batch mode (Airflow): consume to the end of every assigned partition as of start, write
    /// what is held, commit, and exit 0. Without it the consumer runs until SIGTERM.
    #[arg(long, env = "SP_INGEST_UNTIL_CAUGHT_UP")]
    pub until_caught_up: bool,

    /// The logical date of the run record (default: today, UTC). Plays go to the partition of
    /// their own `played_at` date whatever this is.
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: Option<NaiveDate>,

    /// Records held in memory before they are written and their offsets committed.
    #[arg(long, env = "SP_INGEST_FLUSH_ROWS", default_value_t = 1_000_000)]
    pub flush_rows: usize,

    /// Seconds between writes when records trickle in (bounds the data at risk and the files'
    /// age; one file per partition and date each time).
    #[arg(long, env = "SP_INGEST_FLUSH_INTERVAL_S", default_value_t = 300.0)]
    pub flush_interval_s: f64,

    /// The consumer's session timeout in milliseconds. A group join takes about half of it, so
    /// it stays short (a dead instance's partitions move after this long).
    #[arg(long, env = "SP_INGEST_SESSION_TIMEOUT_MS", default_value_t = 6000)]
    pub session_timeout_ms: u32,

    /// Seconds to wait for the broker at start before failing with exit 69; in batch mode also
    /// the longest the broker may fail with nothing from it (no record, end of partition or
    /// assignment).
    #[arg(long, env = "SP_KAFKA_TIMEOUT_S", default_value_t = 30.0)]
    pub kafka_timeout_s: f64,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub rejects: RejectArgs,
}

/// The validated configuration of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub until_caught_up: bool,
    pub date: NaiveDate,
    pub flush_rows: usize,
    pub flush_interval: Duration,
    pub session_timeout_ms: u32,
    pub kafka_timeout: Duration,
    /// `--max-reject-share`.
    pub max_reject_share: f64,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        let common = self.common.validate()?;
        let positive = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{name} must be a positive number of seconds, got {v}"
                    ))
                })
        };
        if self.kafka_brokers.trim().is_empty() {
            return Err(Error::Config("--kafka-brokers is empty".into()));
        }
        if self.topic.is_empty() || self.group.is_empty() {
            return Err(Error::Config(
                "--topic and --group must not be empty".into(),
            ));
        }
        if self.flush_rows == 0 {
            return Err(Error::Config("--flush-rows must be at least 1".into()));
        }
        if !(1000..=300_000).contains(&self.session_timeout_ms) {
            return Err(Error::Config(format!(
                "--session-timeout-ms must be within 1000..=300000, got {}",
                self.session_timeout_ms
            )));
        }
        Ok(Config {
            max_reject_share: self.rejects.validate()?,
            brokers: self.kafka_brokers.trim().to_string(),
            topic: self.topic.clone(),
            group: self.group.clone(),
            until_caught_up: self.until_caught_up,
            date: self.date.unwrap_or_else(|| chrono::Utc::now().date_naive()),
            flush_rows: self.flush_rows,
            flush_interval: positive("--flush-interval-s", self.flush_interval_s)?,
            session_timeout_ms: self.session_timeout_ms,
            kafka_timeout: positive("--kafka-timeout-s", self.kafka_timeout_s)?,
            common,
        })
    }
}

// SIGTERM is handled by the loop: the consumer writes what it holds and commits, then exits 0
// (continuous) or 75 (a batch run that had not caught up).
streampulse_core::pipeline!(
    output = IngestSummary,
    logical_date = |cfg| cfg.date.format("%Y-%m-%d").to_string(),
    graceful
);
