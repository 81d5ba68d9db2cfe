//! `metadata-api`: our stand-in for the partner's song metadata API, a real HTTP server (axum)
//! that behaves like a rate-limited partner: it answers slowly, limits request rates with `429`
//! and `Retry-After`, fails a share of requests with 500/503, lets some hang past any sane
//! client timeout, and wants a bearer token. Development, tests, benchmarks and the compose stack
//! run `metadata-sync` against it.
//!
//! It serves the catalog `datagen` writes (the `songs` dataset of docs/data.md):
//!
//! * `GET /songs?updated_since=RFC3339&cursor=C&limit=N`: the change feed, songs with
//!   `updated_at >= updated_since` ordered by `(updated_at, song_id)`, as summaries
//!   `{"song_id", "updated_at"}`, paged by an opaque `next_cursor` (`null` on the last page);
//! * `GET /songs/{id}`: one song in full, with a strong `ETag`; `If-None-Match` with that tag
//!   gives `304 Not Modified`;
//! * `GET /health` (no token, no limit) for readiness probes, `GET /stats` the counters.
//!
//! ```no_run
//! # async fn demo(songs: Vec<streampulse_core::songs::SongRecord>) -> std::io::Result<()> {
//! use metadata_api::{Behaviour, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = serve(listener, songs, Behaviour::default(), std::future::pending())?;
//! println!("listening on {}", server.url);
//! server.task.await??;
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use streampulse_core::config::{LogFormat, Secret};
use streampulse_core::songs::SongRecord;

pub use crate::catalog::Catalog;
pub use crate::routes::{Stats, router};

pub const PROGRAM: &str = "metadata-api";

/// How `Retry-After` is written on a 429: both forms are legal HTTP and partners use both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RetryAfterFormat {
    /// Whole seconds (`Retry-After: 0` when less than a second is left).
    Seconds,
    /// An IMF-fixdate (`Retry-After: Fri, 27 Nov 2026 10:00:01 GMT`).
    HttpDate,
}

/// How the server misbehaves, like a real partner API.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Added to every answered request.
    pub latency: Duration,
    /// Requests a second before `429`; `0` = no limit.
    pub rate: f64,
    /// Requests that may arrive at once after a quiet spell.
    pub burst: f64,
    pub retry_after: RetryAfterFormat,
    /// Share of requests answered with 500 or 503 (after the latency).
    pub fault_rate: f64,
    /// Share of requests that hang for `hang` before an answer nobody waits for.
    pub timeout_rate: f64,
    pub hang: Duration,
    /// The bearer token every `/songs` request must carry; `None` = open.
    pub token: Option<Secret<String>>,
    /// Largest page of the change feed.
    pub max_page: usize,
    /// Seeds the fault draws, so a run's share of faults is reproducible.
    pub seed: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            latency: Duration::from_millis(300),
            rate: 50.0,
            burst: 50.0,
            retry_after: RetryAfterFormat::Seconds,
            fault_rate: 0.0,
            timeout_rate: 0.0,
            hang: Duration::from_secs(60),
            token: None,
            max_page: 1000,
            seed: 42,
        }
    }
}

/// The server's exit codes (`--help`): it is no pipeline run, but speaks the same codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   stopped by SIGTERM or ctrl-c after serving
  64  usage: invalid flags or configuration
  65  the catalog cannot be read (a missing or malformed songs file)
  69  the listen address cannot be bound (in use, or not ours)
  70  internal error (a bug)";

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = PROGRAM,
    version,
    about = "A local HTTP server that behaves like the rate-limited partner song metadata API",
    after_help = EXIT_CODES_HELP
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (see --port-file).
    #[arg(long, env = "SP_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Write the bound `host:port` to this file once listening (for scripts that start the
    /// server on port 0).
    #[arg(long, env = "SP_API_PORT_FILE")]
    pub port_file: Option<PathBuf>,

    /// The catalog to serve: a `songs` Parquet file or partition directory. Default: the
    /// `songs/date=<date>` partition under --data-root.
    #[arg(long, env = "SP_API_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// The data root holding `songs/date=D/` (with --date).
    #[arg(long, env = "SP_DATA_ROOT", default_value = "./data")]
    pub data_root: PathBuf,

    /// The date of the `songs` partition to serve (with --data-root).
    #[arg(long, env = "SP_DATE", value_parser = streampulse_core::config::parse_date)]
    pub date: Option<NaiveDate>,

    /// Latency added to every answer, in milliseconds.
    #[arg(long, env = "SP_API_LATENCY_MS", default_value_t = 300)]
    pub latency_ms: u64,

    /// Requests a second before answering 429 (0: unlimited).
    #[arg(long, env = "SP_API_RATE", default_value_t = 50.0)]
    pub rate: f64,

    /// Requests allowed at once after a quiet spell (default: one second's worth).
    #[arg(long, env = "SP_API_BURST")]
    pub burst: Option<f64>,

    /// How 429 answers write Retry-After.
    #[arg(long, env = "SP_API_RETRY_AFTER", value_enum, default_value_t = RetryAfterFormat::Seconds)]
    pub retry_after: RetryAfterFormat,

    /// Share of requests that fail with 500 or 503.
    #[arg(long, env = "SP_API_FAULT_RATE", default_value_t = 0.0)]
    pub fault_rate: f64,

    /// Share of requests that hang (a client must time out).
    #[arg(long, env = "SP_API_TIMEOUT_RATE", default_value_t = 0.0)]
    pub timeout_rate: f64,

    /// How long a hanging request hangs, in seconds.
    #[arg(long, env = "SP_API_HANG_S", default_value_t = 60)]
    pub hang_s: u64,

    /// The bearer token clients must send (default: none required).
    #[arg(long, env = "SP_API_TOKEN", hide_env_values = true)]
    pub token: Option<Secret<String>>,

    /// Largest page of the change feed.
    #[arg(long, env = "SP_API_MAX_PAGE", default_value_t = 1000)]
    pub max_page: usize,

    /// Seed of the fault draws.
    #[arg(long, env = "SP_API_SEED", default_value_t = 42)]
    pub seed: u64,

    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Args {
    /// The catalog path and the behaviour, checked.
    pub fn validate(&self) -> Result<(PathBuf, Behaviour), String> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("{name} must be within [0, 1], got {v}"))
            }
        };
        let fault_rate = share("--fault-rate", self.fault_rate)?;
        let timeout_rate = share("--timeout-rate", self.timeout_rate)?;
        if fault_rate + timeout_rate > 1.0 {
            return Err("--fault-rate + --timeout-rate must not exceed 1".into());
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(format!(
                "--rate must be a finite number ≥ 0, got {}",
                self.rate
            ));
        }
        if self.max_page == 0 {
            return Err("--max-page must be at least 1".into());
        }
        let catalog = match (&self.catalog, self.date) {
            (Some(path), _) => path.clone(),
            (None, Some(date)) => self
                .data_root
                .join("songs")
                .join(format!("date={}", date.format("%Y-%m-%d"))),
            (None, None) => {
                return Err("give --catalog PATH, or --date D (with --data-root)".into());
            }
        };
        Ok((
            catalog,
            Behaviour {
                latency: Duration::from_millis(self.latency_ms),
                rate: self.rate,
                burst: self.burst.unwrap_or(self.rate).max(1.0),
                retry_after: self.retry_after,
                fault_rate,
                timeout_rate,
                hang: Duration::from_secs(self.hang_s),
                token: self.token.clone(),
                max_page: self.max_page,
                seed: self.seed,
            },
        ))
    }
}

/// A running server.
pub struct Server {
    /// `http://host:port`
    pub url: String,
    pub addr: SocketAddr,
    pub stats: std::sync::Arc<Stats>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves `songs` on `listener` until `shutdown` resolves (in-flight requests finish first).
pub fn serve(
    listener: tokio::net::TcpListener,
    songs: Vec<SongRecord>,
    behaviour: Behaviour,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let (app, stats) = router(Catalog::new(songs), behaviour);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(Server {
        url: format!("http://{addr}"),
        addr,
        stats,
        task,
    })
}
