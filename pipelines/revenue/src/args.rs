//! The command line and the run's configuration.

use std::path::PathBuf;

use chrono::NaiveDate;
use streampulse_core::config::{BudgetArgs, CommonArgs, CommonConfig, Secret, TableFormatArgs};
use streampulse_core::exit::EXIT_CODES_HELP;
use streampulse_spark::{SparkArgs, SparkConfig};

use crate::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// Per market, the pool is split by each song's share of the market's streams.
    ProRata,
    /// Each subscription's revenue is split over the songs its user streamed.
    UserCentric,
}

/// Where the joins and aggregations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// Embedded DataFusion, memory-bounded with spilling (no server).
    #[value(alias = "embedded")]
    Datafusion,
    /// PostgreSQL at --database-url: inputs loaded with COPY, the SQL pushed down.
    Postgres,
    /// A Spark cluster through Spark Connect (--spark-remote): the cluster reads the month's
    /// inputs where they are and runs the same SQL; only the aggregates come back.
    Spark,
}

pub(crate) fn parse_month(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d")
        .map_err(|_| format!("expected YYYY-MM, got {s:?}"))
}

#[derive(Debug, Clone, clap::Parser)]
#[command(name = PIPELINE, version, about = "Monthly revenue attributed to songs, artists and labels, to the cent", after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// The month to attribute, YYYY-MM.
    #[arg(long, env = "SP_MONTH", value_parser = parse_month)]
    pub month: NaiveDate,

    /// Attribution model.
    #[arg(long, env = "SP_MODEL", value_enum, default_value = "pro-rata")]
    pub model: Model,

    /// Explicit `subscriptions` (Parquet). Default: the latest partition dated on or after the
    /// month's last day, else the latest before it.
    #[arg(long, env = "SP_SUBSCRIPTIONS")]
    pub subscriptions: Option<PathBuf>,

    /// Explicit `songs` catalog (Parquet). Default: chosen like the subscriptions.
    #[arg(long, env = "SP_SONGS")]
    pub songs: Option<PathBuf>,

    /// Artist-centric weighting (Deezer-style) on top of the model: streams of an artist with at
    /// least --artist-min-streams paid streams in the month from at least
    /// --artist-min-listeners listeners weigh 2x, and a user's streams beyond
    /// --user-monthly-cap in the month count proportionally less.
    #[arg(long, env = "SP_ARTIST_CENTRIC")]
    pub artist_centric: bool,

    /// With --artist-centric: the paid streams in the month an artist needs (with
    /// --artist-min-listeners) for its streams to weigh 2x.
    #[arg(
        long,
        env = "SP_ARTIST_MIN_STREAMS",
        default_value_t = 1000,
        requires = "artist_centric"
    )]
    pub artist_min_streams: u64,

    /// With --artist-centric: the distinct listeners in the month an artist needs (with
    /// --artist-min-streams) for its streams to weigh 2x.
    #[arg(
        long,
        env = "SP_ARTIST_MIN_LISTENERS",
        default_value_t = 500,
        requires = "artist_centric"
    )]
    pub artist_min_listeners: u64,

    /// With --artist-centric: the streams a user counts fully in the month (at least 1); past
    /// it each of the user's streams weighs cap / total.
    #[arg(
        long,
        env = "SP_USER_MONTHLY_CAP",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..),
        requires = "artist_centric"
    )]
    pub user_monthly_cap: u64,

    /// Engine of the joins and aggregations. Both give the same outputs.
    #[arg(long, env = "SP_ENGINE", value_enum, default_value = "datafusion")]
    pub engine: EngineKind,

    /// PostgreSQL for `--engine postgres` (postgres://user@host/db); the run works in a
    /// schema of its own and drops it at the end.
    #[arg(long, env = "SP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret<String>>,

    #[command(flatten)]
    pub spark: SparkArgs,

    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub output: TableFormatArgs,

    #[command(flatten)]
    pub budget: BudgetArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub month: NaiveDate,
    pub model: Model,
    pub subscriptions: Option<PathBuf>,
    pub songs: Option<PathBuf>,
    pub engine: EngineKind,
    pub database_url: Option<Secret<String>>,
    /// With `--engine spark`: the cluster.
    pub spark: Option<SparkConfig>,
    pub weighting: Option<ArtistCentric>,
    pub common: CommonConfig,
}

/// Artist-centric weighting thresholds (see [`Args::artist_centric`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtistCentric {
    pub min_streams: u64,
    pub min_listeners: u64,
    pub user_cap: u64,
}

/// A stream's weight is counted in millionths: a user's streams past the monthly cap weigh
/// `cap / total` each, which integer millionths hold to within one per (subscription, song).
pub const WEIGHT_UNIT: i64 = 1_000_000;

impl Args {
    pub fn validate(&self) -> Result<Config> {
        if self.engine == EngineKind::Postgres && self.database_url.is_none() {
            return Err(Error::Config(
                "--engine postgres needs --database-url (or SP_DATABASE_URL)".into(),
            ));
        }
        Ok(Config {
            month: self.month,
            model: self.model,
            subscriptions: self.subscriptions.clone(),
            songs: self.songs.clone(),
            engine: self.engine,
            database_url: self.database_url.clone(),
            spark: self
                .spark
                .validate(self.engine == EngineKind::Spark)
                .map_err(Error::Config)?,
            weighting: self.artist_centric.then_some(ArtistCentric {
                min_streams: self.artist_min_streams,
                min_listeners: self.artist_min_listeners,
                user_cap: self.user_monthly_cap,
            }),
            common: self
                .common
                .validate_with(&self.budget)?
                .writing(&self.output)?,
        })
    }
}
