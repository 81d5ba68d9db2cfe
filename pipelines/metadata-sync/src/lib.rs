//! Pipeline C, `metadata-sync`: keeps the song catalog database equal to the partner's metadata
//! API, incrementally and politely, and writes the day's `songs` snapshot that A, B and D read.
//!
//! A run walks the partner's change feed from the cursor stored in the database (`--full`: from
//! the start), fetches each changed song with a bounded number of requests in flight, paced at
//! the partner's rate ([`client`]), and upserts the songs in batched transactions that also move
//! the cursor ([`sync`], [`db`]). A run killed at any point loses at most the uncommitted batch,
//! which the next run fetches again; unchanged songs cost a `304` and no write.
//!
//! Then the whole catalog is written, by song id, to `songs/date=<D>/` (Parquet, docs/data.md).
//!
//! The database is a SQLite file by default (`<data-root>/catalog/catalog.sqlite`: `make run`
//! needs no server) or PostgreSQL (`--database-url postgres://...`); migrations under
//! `shared/migrations/catalog/` are compiled in and run on start.

pub mod client;
pub mod db;
pub mod error;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use streampulse_core::config::{CommonArgs, CommonConfig, Secret, TableFormatArgs};
use streampulse_core::error::PipelineError;
use streampulse_core::exit::EXIT_CODES_HELP;
use streampulse_core::kafka::{Destination, PublishArgs, Publisher};
use streampulse_core::location::Partition;
use streampulse_core::output::write_partition;
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::SONGS;

pub use error::{Error, Result};

use crate::client::{ApiClient, ClientConfig};
use crate::db::CatalogDb;
use crate::sync::{SyncOptions, SyncStats};

pub const PIPELINE: &str = "metadata-sync";

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Sync song metadata from the partner API into the catalog database, and snapshot it", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The logical date: the snapshot is written to `songs/date=<D>/`.
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: NaiveDate,

    /// Base URL of the metadata API.
    #[arg(long, env = "SP_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: url::Url,

    /// Bearer token for the API.
    #[arg(long, env = "SP_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret<String>>,

    /// The catalog database: `sqlite:PATH` or `postgres://user@host/db`. Default: the SQLite file
    /// `<data-root>/catalog/catalog.sqlite`.
    #[arg(long, env = "SP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret<String>>,

    /// Name of the partner in the cursor table.
    #[arg(long, env = "SP_SYNC_SOURCE", default_value = "partner")]
    pub source: String,

    /// Ignore the stored cursor: walk the whole feed (unchanged songs cost a 304, no write).
    #[arg(long, env = "SP_SYNC_FULL")]
    pub full: bool,

    /// Requests in flight at most (second copies of slow requests aside: see --no-hedge).
    #[arg(long, env = "SP_SYNC_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// Requests a second: the partner's published rate limit.
    #[arg(long, env = "SP_SYNC_RATE", default_value_t = 50.0)]
    pub rate: f64,

    /// Requests sent at once after a quiet spell (kept small to stay clear of the partner's
    /// own bucket).
    #[arg(long, env = "SP_SYNC_BURST", default_value_t = 5.0)]
    pub burst: f64,

    /// Timeout of one request, in seconds.
    #[arg(long, env = "SP_SYNC_TIMEOUT_S", default_value_t = 10.0)]
    pub timeout_s: f64,

    /// Attempts per request for 5xx, timeouts and connection errors.
    #[arg(long, env = "SP_SYNC_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,

    /// First backoff step in milliseconds (doubles per attempt, full jitter, capped at 30 s).
    #[arg(long, env = "SP_SYNC_BACKOFF_MS", default_value_t = 200)]
    pub backoff_ms: u64,

    /// Share of the run's requests that may fail (5xx, timeouts) before it stops with exit 75.
    #[arg(long, env = "SP_SYNC_ERROR_BUDGET", default_value_t = 0.25)]
    pub error_budget: f64,

    /// Never send a second copy of a slow request. By default a request unanswered after twice
    /// the partner's recent 95th-percentile latency is sent once more (within the rate; at most
    /// a quarter of --concurrency copies at once), and the first answer wins: a hung request
    /// costs that, not the timeout.
    #[arg(long, env = "SP_SYNC_NO_HEDGE")]
    pub no_hedge: bool,

    /// Change-feed entries per page.
    #[arg(long, env = "SP_SYNC_PAGE_SIZE", default_value_t = 500)]
    pub page_size: usize,

    /// Feed entries committed per transaction (with the cursor).
    #[arg(long, env = "SP_SYNC_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// How we introduce ourselves to the partner.
    #[arg(long, env = "SP_SYNC_USER_AGENT", default_value = concat!("streampulse-metadata-sync/", env!("CARGO_PKG_VERSION"), " (+https://example.invalid/streampulse; data-platform@streampulse.example)"))]
    pub user_agent: String,

    /// With --kafka-brokers, each song this run inserted or changed also goes to this topic,
    /// keyed by song_id.
    #[arg(long, env = "SP_SONGS_CHANGED_TOPIC", default_value = "songs.changed")]
    pub songs_changed_topic: String,

    #[command(flatten)]
    pub kafka: PublishArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub output: TableFormatArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub date: NaiveDate,
    pub client: ClientConfig,
    pub database_url: Secret<String>,
    pub sync: SyncOptions,
    /// Where changed songs are also published, with --kafka-brokers.
    pub kafka: Option<Destination>,
    pub common: CommonConfig,
}

impl Args {
    pub fn validate(&self) -> Result<Config> {
        let common = self.common.validate()?.writing(&self.output)?;
        let positive = |name: &str, v: usize| {
            if v == 0 {
                Err(Error::config(format!("{name} must be at least 1")))
            } else {
                Ok(v)
            }
        };
        let concurrency = positive("--concurrency", self.concurrency)?;
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(Error::config(format!(
                "--rate must be > 0, got {}",
                self.rate
            )));
        }
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            return Err(Error::config("--timeout-s must be > 0"));
        }
        if !(0.0..=1.0).contains(&self.error_budget) {
            return Err(Error::config("--error-budget is a share within [0, 1]"));
        }
        if self.max_attempts == 0 {
            return Err(Error::config("--max-attempts must be at least 1"));
        }
        let database_url = match &self.database_url {
            Some(url) => url.clone(),
            None => {
                let path = common
                    .data_root
                    .local_path("catalog/catalog.sqlite")
                    .ok_or_else(|| {
                        Error::config(
                            "--database-url is required when --data-root is not a local path",
                        )
                    })?;
                Secret::new(format!("sqlite:{}", path.display()))
            }
        };
        let mut base_url = self.api_url.clone();
        if !base_url.path().ends_with('/') {
            // Url::join replaces the last path segment unless the base ends with a slash.
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        Ok(Config {
            date: self.date,
            client: ClientConfig {
                base_url,
                token: self.api_token.clone(),
                user_agent: self.user_agent.clone(),
                concurrency,
                rate: self.rate,
                burst: self.burst.max(1.0),
                timeout: Duration::from_secs_f64(self.timeout_s),
                max_attempts: self.max_attempts,
                backoff_base: Duration::from_millis(self.backoff_ms.max(1)),
                backoff_max: Duration::from_secs(30),
                max_throttled: 50,
                error_budget: self.error_budget,
                error_budget_min: 20,
                hedge: !self.no_hedge,
            },
            database_url,
            sync: SyncOptions {
                source: self.source.clone(),
                full: self.full,
                page_size: positive("--page-size", self.page_size)?,
                batch_size: positive("--batch-size", self.batch_size)?,
                window: reorder_window(concurrency, self.rate, self.timeout_s, self.backoff_ms),
            },
            kafka: self.kafka.destination(&self.songs_changed_topic)?,
            common,
        })
    }
}

/// Detail requests started ahead of the oldest unfinished one: two timeouts' worth of requests
/// at the rate (at least four per slot), so a request that hangs until its timeout and is retried
/// holds back the commit, not the requests behind it. A finished detail waiting for its turn is
/// one song (about a kilobyte), so even a large window is small.
fn reorder_window(concurrency: usize, rate: f64, timeout_s: f64, backoff_ms: u64) -> usize {
    let stall_s = timeout_s + 2.0 * backoff_ms as f64 / 1000.0;
    let by_rate = (2.0 * rate * stall_s).ceil().min(100_000.0) as usize;
    by_rate.max(concurrency * 4)
}

/// What a successful run produced (the XCom summary).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub snapshot: String,
    pub catalog_songs: u64,
    pub backend: &'static str,
    #[serde(flatten)]
    pub sync: SyncStats,
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let db = CatalogDb::connect(cfg.database_url.expose()).await?;
    meter.engine = format!("http+{}", db.backend());
    let client = Arc::new(ApiClient::new(cfg.client.clone())?);
    let synced = sync::run(&db, client.clone(), &cfg.sync).await;
    meter.set("api", client.stats.to_json());
    meter.bytes_in = client
        .stats
        .body_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let stats = synced?;
    meter.rows_in = stats.listed;
    tracing::info!(
        listed = stats.listed,
        fetched = stats.fetched,
        not_modified = stats.not_modified,
        changed = stats.changed,
        gone = stats.gone,
        "synced"
    );

    let root = &cfg.common.data_root;
    let staged = write_partition(
        root,
        &cfg.common.spill_dir,
        "songs",
        &Partition::date(cfg.date),
        &SONGS,
        db.snapshot(64 * 1024),
    )
    .await?;
    let catalog_songs = staged.rows;
    meter.rows_out = staged.rows;
    meter.bytes_out = staged.bytes;
    // The snapshot is in place before Kafka hears of the changes (a consumer can always read
    // it); a Kafka failure then fails the run, with the snapshot published.
    let published =
        streampulse_core::commit::publish(root, cfg.common.table_format, vec![staged]).await?;
    let Some(snapshot) = published.first() else {
        return Err(Error::Pipeline(PipelineError::Internal(
            "the snapshot was not published".into(),
        )));
    };
    let sent = match &cfg.kafka {
        Some(dest) => Some(publish_changed(dest, &snapshot.dir, &stats.changed_ids).await),
        None => None,
    };
    let snapshot = snapshot.url.clone();
    if let Some(result) = sent {
        let (messages, bytes) = result?;
        meter.set("kafka_messages", messages);
        meter.set("kafka_bytes", bytes);
    }
    meter.set("changed", stats.changed);
    meter.set("not_modified", stats.not_modified);
    meter.set("transactions", stats.transactions);
    Ok(Outcome {
        snapshot,
        catalog_songs,
        backend: db.backend(),
        sync: stats,
    })
}

/// Sends each song of `changed` (as in the snapshot just written) to the destination topic,
/// keyed by song_id, as a JSON object of the songs dataset's columns.
///
/// A run killed after committing some batches does not publish those batches' songs (the rerun
/// finds them unchanged); the day's snapshot has them either way.
async fn publish_changed(
    dest: &Destination,
    snapshot_dir: &std::path::Path,
    changed: &[i64],
) -> Result<(u64, u64)> {
    let mut publisher =
        Publisher::connect(&dest.brokers, &dest.topic, PIPELINE, dest.timeout).await?;
    if !changed.is_empty() {
        let wanted: std::collections::HashSet<i64> = changed.iter().copied().collect();
        let dir = snapshot_dir.to_path_buf();
        let songs =
            tokio::task::spawn_blocking(move || streampulse_core::songs::read_parquet(&dir))
                .await
                .map_err(|e| {
                    Error::Pipeline(PipelineError::Internal(format!(
                        "reading the snapshot: {e}"
                    )))
                })??;
        for song in songs.iter().filter(|s| wanted.contains(&s.song_id)) {
            let payload = serde_json::to_vec(song).map_err(streampulse_core::Error::from)?;
            publisher
                .send(song.song_id.to_string().as_bytes(), &payload)
                .await?;
        }
    }
    let (messages, bytes) = publisher.finish().await?;
    tracing::info!(topic = %dest.topic, messages, "changed songs published to Kafka");
    Ok((messages, bytes))
}

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.date.format("%Y-%m-%d").to_string()
);
