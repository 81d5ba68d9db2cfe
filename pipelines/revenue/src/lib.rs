//! Pipeline D, `revenue`: one month's subscription revenue attributed to songs, artists and
//! labels, to the minor unit, by the rules of docs/data.md.
//!
//! * Subscription revenue of the month: `monthly_price x active_days / days_in_month`, rounded
//!   half to even to the currency's minor unit ([`streampulse_core::money`]).
//! * A stream (a play of 30 s or more, on a UTC date of the month) belongs to the market
//!   (country, currency) of the user's paid subscription active that day; other plays do not
//!   count.
//! * `pro-rata`: per market, the pool (Σ revenue) is split over songs by their streams;
//!   `user-centric`: each subscription's revenue is split over the songs its user streamed while
//!   it was active; both by the largest-remainder method with ties to the smaller song id, so
//!   every split adds up exactly.
//!
//! The engine (DataFusion, memory-bounded, spilling) does the heavy part: streams per (user,
//! song, day), joined with the subscriptions active that day, aggregated per (subscription, song)
//! or (market, song). The splits then stream through in Rust, in integers. Memory holds the
//! catalog's song → artist, label map and one amount per (market, song).

pub mod error;
pub mod postgres;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Int64Type, Schema, SchemaRef};
use chrono::{Datelike, NaiveDate};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use streampulse_core::config::{BudgetArgs, CommonArgs, CommonConfig, Secret};
use streampulse_core::location::Partition;
use streampulse_core::money::{
    MONEY_SCALE, allocate, div_round_half_even, minor_to_decimal, minor_unit_digits,
};
use streampulse_core::output::{StagedPartition, write_partition};
use streampulse_core::progress::Progress;
use streampulse_core::run_record::RunMeter;
use streampulse_core::schema::{
    PLAYS, REVENUE_BY_ARTIST, REVENUE_BY_LABEL, REVENUE_BY_SONG, REVENUE_RECONCILIATION, SONGS,
    STREAM_MIN_MS, SUBSCRIPTIONS,
};
use streampulse_core::{engine, exit::EXIT_CODES_HELP};
use streampulse_spark::{Session, SparkArgs, SparkConfig};

pub use error::{Error, Result};

pub const PIPELINE: &str = "revenue";

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

fn parse_month(s: &str) -> std::result::Result<NaiveDate, String> {
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

    #[arg(long, env = "SP_ARTIST_MIN_STREAMS", default_value_t = 1000)]
    pub artist_min_streams: u64,

    #[arg(long, env = "SP_ARTIST_MIN_LISTENERS", default_value_t = 500)]
    pub artist_min_listeners: u64,

    #[arg(long, env = "SP_USER_MONTHLY_CAP", default_value_t = 1000)]
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
                user_cap: self.user_monthly_cap.max(1),
            }),
            common: self.common.validate_with(&self.budget)?,
        })
    }
}

/// The month's calendar.
#[derive(Debug, Clone, Copy)]
pub struct Month {
    pub first: NaiveDate,
    pub next: NaiveDate,
}

impl Month {
    pub fn new(first: NaiveDate) -> Self {
        let next = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        }
        .unwrap_or(first);
        Month { first, next }
    }
    pub fn days(&self) -> i64 {
        (self.next - self.first).num_days()
    }
    pub fn label(&self) -> String {
        self.first.format("%Y-%m").to_string()
    }
    /// Days of the month within `[start, end)` (end `None`: still active).
    pub fn active_days(&self, start: i32, end: Option<i32>) -> i64 {
        let lo = start.max(streampulse_core::time::date32(self.first));
        let hi = end
            .unwrap_or(i32::MAX)
            .min(streampulse_core::time::date32(self.next));
        (hi - lo).max(0) as i64
    }
}

/// A subscription's revenue in the month, in minor units: price (Decimal128 at scale 6, major
/// units) x active days / days in month, rounded half to even.
pub fn subscription_revenue(
    price_raw: i128,
    currency: &str,
    active_days: i64,
    month_days: i64,
) -> Result<i128> {
    let unit = 10i128.pow(MONEY_SCALE - digits(currency)?);
    Ok(div_round_half_even(
        price_raw * active_days as i128,
        unit * month_days as i128,
    ))
}

/// The minor-unit digits of a subscription's currency; an unknown code is bad input (65).
fn digits(currency: &str) -> Result<u32> {
    minor_unit_digits(currency).ok_or_else(|| {
        Error::Core(streampulse_core::Error::InputType {
            file: "subscriptions".into(),
            column: "currency".into(),
            found: format!("{currency:?}"),
            expected: "an ISO 4217 currency code with a minor unit".into(),
            detail: "revenue cannot be split to the minor unit of an unknown currency".into(),
        })
    })
}

/// A market's amount as the `Decimal128(18, 6)` raw value.
fn decimal(minor: i128, currency: &str) -> Result<i128> {
    Ok(minor_to_decimal(minor, digits(currency)?))
}

/// A market: (country, currency).
type Market = (String, String);

/// What a successful run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub outputs: Vec<String>,
    pub markets: usize,
    pub songs: usize,
    /// Σ over markets of the pool and of what was attributed, in minor units (mixed currencies:
    /// a checksum, not an amount).
    pub pool_minor_units: i128,
    pub attributed_minor_units: i128,
}

/// The latest partition of `dataset` dated on or after `on_or_after`, else the latest before.
async fn snapshot(
    cfg: &Config,
    explicit: &Option<PathBuf>,
    dataset: &str,
    on_or_after: NaiveDate,
) -> Result<String> {
    if let Some(p) = explicit {
        return Ok(p.display().to_string());
    }
    let root = &cfg.common.data_root;
    let dates = root.list_partitions(dataset, "date").await?;
    let wanted = on_or_after.format("%Y-%m-%d").to_string();
    let pick = dates
        .iter()
        .filter(|d| **d >= wanted)
        .min()
        .or_else(|| dates.iter().max())
        .ok_or_else(|| {
            Error::Core(streampulse_core::Error::InputMissing(format!(
                "no {dataset} partition under {} (pass --{dataset})",
                root.display()
            )))
        })?;
    if *pick < wanted {
        tracing::warn!(dataset, partition = %pick, "no snapshot after the month's end: using an earlier one");
    }
    Ok(root.partition_url(
        dataset,
        &Partition {
            key: "date",
            value: pick.clone(),
        },
    ))
}

/// The plays partitions that can hold the month's streams: its days and the next day (late
/// arrivals of the last evening land in the next day's export).
async fn plays_partitions(cfg: &Config, month: &Month) -> Result<Vec<String>> {
    let root = &cfg.common.data_root;
    let present = root.list_partitions("plays", "date").await?;
    let mut urls = Vec::new();
    let mut missing = Vec::new();
    let mut d = month.first;
    while d <= month.next {
        let p = Partition::date(d);
        if present.contains(&p.value) {
            urls.push(root.partition_url("plays", &p));
        } else if d < month.next {
            missing.push(p.value);
        }
        d = d.succ_opt().unwrap_or(d);
    }
    if urls.is_empty() {
        return Err(Error::Core(streampulse_core::Error::InputMissing(format!(
            "no plays partition for {} under {}",
            month.label(),
            root.display()
        ))));
    }
    if !missing.is_empty() {
        tracing::warn!(days = missing.len(), first = %missing[0], "days of the month have no plays partition");
    }
    Ok(urls)
}

fn date_literal(d: NaiveDate) -> String {
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

/// The engine the month's SQL runs on. The SQL text is the same for all three, but for
/// integer division ([`Sql::divide`]).
pub enum Sql<'a> {
    DataFusion(&'a SessionContext),
    Postgres(&'a postgres::PgEngine),
    Spark(&'a Session),
}

impl Sql<'_> {
    /// Runs `query`; its rows arrive as batches of `schema` (which the DataFusion plan has by
    /// construction, PostgreSQL's text rows are parsed into, and Spark's Arrow batches are
    /// converted to by name, exactly).
    async fn stream(&self, query: &str, schema: SchemaRef) -> Result<SendableRecordBatchStream> {
        match self {
            Sql::DataFusion(ctx) => Ok(ctx.sql(query).await?.execute_stream().await?),
            Sql::Postgres(pg) => Ok(pg.query(query, schema)),
            Sql::Spark(session) => {
                let target = schema.clone();
                let batches = session.query(query).await?.into_stream().map(move |b| {
                    let b = b.map_err(|e| {
                        DataFusionError::External(Box::new(streampulse_core::Error::from(e)))
                    })?;
                    streampulse_core::conform::batch(&b, &target, "the Spark result")
                        .map_err(|e| DataFusionError::External(Box::new(e)))
                });
                Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
            }
        }
    }

    /// `num / den` in integers, truncated: `/` of two BIGINTs is a DOUBLE in Spark SQL, whose
    /// integer division is `div`.
    fn divide(&self, num: &str, den: &str) -> String {
        match self {
            Sql::Spark(_) => format!("(({num}) DIV ({den}))"),
            _ => format!("({num}) / ({den})"),
        }
    }
}

/// The subscription columns the queries read.
const SUBSCRIPTION_INPUT: [&str; 7] = [
    "subscription_id",
    "user_id",
    "country",
    "currency",
    "monthly_price",
    "started_at",
    "ended_at",
];

/// The subscription columns the queries return, in the order they select them.
static SUBSCRIPTION_COLUMNS: [(&str, DataType); 6] = [
    ("subscription_id", DataType::Int64),
    ("country", DataType::Utf8),
    ("currency", DataType::Utf8),
    ("monthly_price", streampulse_core::schema::MONEY),
    ("started_at", DataType::Date32),
    ("ended_at", DataType::Date32),
];

fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Per market, the pool: Σ revenue of the paid subscriptions active in the month. Also checks
/// the contract that a user has at most one active subscription at a time.
async fn pools(sql: &Sql<'_>, month: &Month) -> Result<BTreeMap<Market, i128>> {
    let overlaps: Vec<RecordBatch> = sql
        .stream(
            &format!(
                "SELECT user_id, subscription_id FROM (
                   SELECT user_id, subscription_id, started_at,
                          LAG(ended_at) OVER (PARTITION BY user_id ORDER BY started_at, subscription_id) AS prev_end,
                          LAG(subscription_id) OVER (PARTITION BY user_id ORDER BY started_at, subscription_id) AS prev_id
                   FROM subs WHERE started_at < {next} AND (ended_at IS NULL OR ended_at > {first})) AS active
                 WHERE prev_id IS NOT NULL AND (prev_end IS NULL OR prev_end > started_at)
                 ORDER BY user_id LIMIT 5",
                first = date_literal(month.first),
                next = date_literal(month.next)
            ),
            schema(&[("user_id", DataType::Int64), ("subscription_id", DataType::Int64)]),
        )
        .await?
        .try_collect()
        .await?;
    let found: Vec<String> = overlaps
        .iter()
        .flat_map(|b| {
            let (u, s) = (
                b.column(0).as_primitive::<Int64Type>(),
                b.column(1).as_primitive::<Int64Type>(),
            );
            (0..b.num_rows())
                .map(|i| format!("user {} (subscription {})", u.value(i), s.value(i)))
                .collect::<Vec<_>>()
        })
        .collect();
    if !found.is_empty() {
        return Err(Error::Inconsistent(format!(
            "overlapping subscriptions in {}: {}",
            month.label(),
            found.join(", ")
        )));
    }
    let mut stream = sql
        .stream(
            &format!(
                "SELECT country, currency, monthly_price, started_at, ended_at FROM subs
                 WHERE monthly_price > 0 AND started_at < {next} AND (ended_at IS NULL OR ended_at > {first})",
                first = date_literal(month.first),
                next = date_literal(month.next)
            ),
            schema(&SUBSCRIPTION_COLUMNS[1..]),
        )
        .await?;
    let mut pools: BTreeMap<Market, i128> = BTreeMap::new();
    while let Some(b) = stream.next().await.transpose()? {
        let country = b.column(0).as_string_view_or_utf8()?;
        let currency = b.column(1).as_string_view_or_utf8()?;
        let price = b.column(2).as_primitive::<Decimal128Type>();
        let start = b.column(3).as_primitive::<Date32Type>();
        let end = b.column(4).as_primitive::<Date32Type>();
        for i in 0..b.num_rows() {
            let days = month.active_days(start.value(i), end.is_valid(i).then(|| end.value(i)));
            let cur = &currency[i];
            let revenue = subscription_revenue(price.value(i), cur, days, month.days())?;
            *pools.entry((country[i].clone(), cur.clone())).or_default() += revenue;
        }
    }
    Ok(pools)
}

/// Reads a string column (any layout) into owned strings; small batches of a handful of
/// distinct values, so the copy does not matter.
trait Strings {
    fn as_string_view_or_utf8(&self) -> Result<Vec<String>>;
}

impl Strings for arrow::array::ArrayRef {
    fn as_string_view_or_utf8(&self) -> Result<Vec<String>> {
        let utf8 = arrow::compute::cast(self, &DataType::Utf8)?;
        Ok(utf8
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect())
    }
}

/// Attributed amounts and streams per (market, song).
type SongTotals = BTreeMap<(Market, i64), (i64, i128)>;

/// Per market, the revenue that streams claimed: the whole pool of a market with streams
/// (pro-rata), or the revenue of the subscriptions whose users streamed (user-centric). What the
/// splits hand out must add up to it; the rest of the pool is unattributed.
type Claimed = BTreeMap<Market, i128>;

/// The streams of the month joined with the subscription active on their day, summed per
/// `group` (subscription columns) and song, with each row's weight for the split: its streams,
/// or with artist-centric weighting, per (subscription, song) `streams x boost x WEIGHT_UNIT x
/// min(total, cap) / total` in integers (truncated), `total` being the user's streams of the month
/// and `boost` 2 for an artist over both thresholds. The same text runs on DataFusion and
/// PostgreSQL: every intermediate is cast to BIGINT so PostgreSQL divides integers too.
fn streams_sql(
    sql: &Sql<'_>,
    month: &Month,
    group: &[&str],
    weighting: Option<ArtistCentric>,
) -> String {
    let in_s = |prefix: &str| {
        group
            .iter()
            .map(|c| format!("{prefix}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let head = format!(
        "WITH p AS (
           SELECT user_id, song_id, CAST(played_at AS DATE) AS d, COUNT(*) AS streams
           FROM plays
           WHERE ms_played >= {min_ms} AND CAST(played_at AS DATE) >= {first} AND CAST(played_at AS DATE) < {next}
           GROUP BY user_id, song_id, CAST(played_at AS DATE)),
         s AS (
           SELECT subscription_id, user_id, country, currency, monthly_price, started_at, ended_at FROM subs
           WHERE monthly_price > 0 AND started_at < {next} AND (ended_at IS NULL OR ended_at > {first}))",
        min_ms = STREAM_MIN_MS,
        first = date_literal(month.first),
        next = date_literal(month.next),
    );
    let join = "FROM p JOIN s ON p.user_id = s.user_id AND p.d >= s.started_at \
                AND (s.ended_at IS NULL OR p.d < s.ended_at)";
    let Some(w) = weighting else {
        let g = in_s("s");
        return format!(
            "{head}
             SELECT {g}, p.song_id, SUM(p.streams) AS streams, SUM(p.streams) AS weight
             {join}
             GROUP BY {g}, p.song_id
             ORDER BY {g}, p.song_id"
        );
    };
    // ps: one row per (subscription, song), the grain at which weights are rounded.
    let mut ps_cols: Vec<&str> = vec!["subscription_id", "user_id"];
    ps_cols.extend(
        group
            .iter()
            .filter(|c| !["subscription_id", "user_id"].contains(c)),
    );
    let (ps_s, g) = (
        ps_cols
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        in_s("ps"),
    );
    format!(
        "{head},
         ps AS (
           SELECT {ps_s}, p.song_id, CAST(SUM(p.streams) AS BIGINT) AS streams
           {join}
           GROUP BY {ps_s}, p.song_id),
         ut AS (SELECT user_id, CAST(SUM(streams) AS BIGINT) AS total FROM ps GROUP BY user_id),
         boosted AS (
           SELECT c.artist_id FROM ps JOIN songs c ON c.song_id = ps.song_id
           GROUP BY c.artist_id
           HAVING SUM(ps.streams) >= {min_streams} AND COUNT(DISTINCT ps.user_id) >= {min_listeners})
         SELECT {g}, ps.song_id, SUM(ps.streams) AS streams,
                SUM({weight}) AS weight
         FROM ps JOIN ut ON ut.user_id = ps.user_id
           LEFT JOIN songs c ON c.song_id = ps.song_id
           LEFT JOIN boosted b ON b.artist_id = c.artist_id
         GROUP BY {g}, ps.song_id
         ORDER BY {g}, ps.song_id",
        min_streams = w.min_streams,
        min_listeners = w.min_listeners,
        weight = sql.divide(
            &format!(
                "ps.streams * (CASE WHEN b.artist_id IS NULL THEN {unit} ELSE {double} END) \
                 * (CASE WHEN ut.total > {cap} THEN {cap} ELSE ut.total END)",
                cap = w.user_cap,
                unit = WEIGHT_UNIT,
                double = 2 * WEIGHT_UNIT,
            ),
            "ut.total"
        ),
    )
}

/// Pro-rata: per market, the pool over the market's songs by streams.
async fn pro_rata(
    sql: &Sql<'_>,
    month: &Month,
    pools: &BTreeMap<Market, i128>,
    weighting: Option<ArtistCentric>,
) -> Result<(SongTotals, Claimed)> {
    let columns = [
        SUBSCRIPTION_COLUMNS[1].clone(),
        SUBSCRIPTION_COLUMNS[2].clone(),
        ("song_id", DataType::Int64),
        ("streams", DataType::Int64),
        ("weight", DataType::Int64),
    ];
    let mut stream = sql
        .stream(
            &streams_sql(sql, month, &["country", "currency"], weighting),
            schema(&columns),
        )
        .await?;
    let mut totals = SongTotals::new();
    let mut market: Option<Market> = None;
    // (song, weight) for the split, and the song's streams beside it.
    let mut songs: Vec<(i64, u64)> = Vec::new();
    let mut streams_of: Vec<i64> = Vec::new();
    let mut claimed = Claimed::new();
    let mut flush = |market: &Option<Market>,
                     songs: &mut Vec<(i64, u64)>,
                     streams_of: &mut Vec<i64>,
                     totals: &mut SongTotals| {
        if let Some(m) = market {
            let pool = pools.get(m).copied().unwrap_or(0);
            claimed.insert(m.clone(), pool);
            for ((&(song, _), &streams), amount) in songs
                .iter()
                .zip(streams_of.iter())
                .zip(allocate(pool, songs))
            {
                totals.insert((m.clone(), song), (streams, amount));
            }
        }
        songs.clear();
        streams_of.clear();
    };
    let watch = Progress::start("market-song rows", None);
    while let Some(b) = stream.next().await.transpose()? {
        watch.add(b.num_rows() as u64, 0);
        let (country, currency) = (
            b.column(0).as_string_view_or_utf8()?,
            b.column(1).as_string_view_or_utf8()?,
        );
        let song = b.column(2).as_primitive::<Int64Type>();
        let streams = b.column(3).as_primitive::<Int64Type>();
        let weight = b.column(4).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let m = (country[i].clone(), currency[i].clone());
            if market.as_ref() != Some(&m) {
                flush(&market, &mut songs, &mut streams_of, &mut totals);
                market = Some(m);
            }
            songs.push((song.value(i), weight.value(i) as u64));
            streams_of.push(streams.value(i));
        }
    }
    flush(&market, &mut songs, &mut streams_of, &mut totals);
    Ok((totals, claimed))
}

/// User-centric: each subscription's revenue over its user's songs by streams.
async fn user_centric(
    sql: &Sql<'_>,
    month: &Month,
    weighting: Option<ArtistCentric>,
) -> Result<(SongTotals, Claimed)> {
    let group: Vec<&str> = SUBSCRIPTION_COLUMNS.iter().map(|c| c.0).collect();
    let mut columns = SUBSCRIPTION_COLUMNS.to_vec();
    columns.extend([
        ("song_id", DataType::Int64),
        ("streams", DataType::Int64),
        ("weight", DataType::Int64),
    ]);
    let mut stream = sql
        .stream(
            &streams_sql(sql, month, &group, weighting),
            schema(&columns),
        )
        .await?;
    let mut totals = SongTotals::new();
    // The subscription being split: (id, market, revenue), its songs' weights and streams.
    let mut current: Option<(i64, Market, i128)> = None;
    let mut songs: Vec<(i64, u64)> = Vec::new();
    let mut streams_of: Vec<i64> = Vec::new();
    let mut claimed = Claimed::new();
    let mut flush = |current: &Option<(i64, Market, i128)>,
                     songs: &mut Vec<(i64, u64)>,
                     streams_of: &mut Vec<i64>,
                     totals: &mut SongTotals| {
        if let Some((_, m, revenue)) = current {
            *claimed.entry(m.clone()).or_default() += *revenue;
            for ((&(song, _), &streams), amount) in songs
                .iter()
                .zip(streams_of.iter())
                .zip(allocate(*revenue, songs))
            {
                let e = totals.entry((m.clone(), song)).or_default();
                e.0 += streams;
                e.1 += amount;
            }
        }
        songs.clear();
        streams_of.clear();
    };
    let watch = Progress::start("subscription-song rows", None);
    while let Some(b) = stream.next().await.transpose()? {
        watch.add(b.num_rows() as u64, 0);
        let id = b.column(0).as_primitive::<Int64Type>();
        let (country, currency) = (
            b.column(1).as_string_view_or_utf8()?,
            b.column(2).as_string_view_or_utf8()?,
        );
        let price = b.column(3).as_primitive::<Decimal128Type>();
        let start = b.column(4).as_primitive::<Date32Type>();
        let end = b.column(5).as_primitive::<Date32Type>();
        let song = b.column(6).as_primitive::<Int64Type>();
        let streams = b.column(7).as_primitive::<Int64Type>();
        let weight = b.column(8).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if current.as_ref().map(|c| c.0) != Some(id.value(i)) {
                flush(&current, &mut songs, &mut streams_of, &mut totals);
                let days = month.active_days(start.value(i), end.is_valid(i).then(|| end.value(i)));
                let revenue =
                    subscription_revenue(price.value(i), &currency[i], days, month.days())?;
                current = Some((
                    id.value(i),
                    (country[i].clone(), currency[i].clone()),
                    revenue,
                ));
            }
            songs.push((song.value(i), weight.value(i) as u64));
            streams_of.push(streams.value(i));
        }
    }
    flush(&current, &mut songs, &mut streams_of, &mut totals);
    Ok((totals, claimed))
}

/// song → (artist, label) from the catalog.
async fn catalog(sql: &Sql<'_>) -> Result<HashMap<i64, (i64, i64)>> {
    let mut out = HashMap::new();
    let columns = [
        ("song_id", DataType::Int64),
        ("artist_id", DataType::Int64),
        ("label_id", DataType::Int64),
    ];
    let mut stream = sql
        .stream(
            "SELECT song_id, artist_id, label_id FROM songs",
            schema(&columns),
        )
        .await?;
    while let Some(b) = stream.next().await.transpose()? {
        let (s, a, l) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            out.insert(s.value(i), (a.value(i), l.value(i)));
        }
    }
    Ok(out)
}

fn money_array(values: Vec<i128>) -> Result<Decimal128Array> {
    Ok(Decimal128Array::from(values).with_precision_and_scale(18, MONEY_SCALE as i8)?)
}

/// Rows of a `revenue_by_*` dataset from per-(market, key) totals, sorted by market then key.
fn by_key(
    schema: &SchemaRef,
    totals: &BTreeMap<(Market, i64), (i64, i128)>,
) -> Result<RecordBatch> {
    let n = totals.len();
    let (mut country, mut currency, mut key, mut streams, mut amount) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (((c, cur), k), (s, a)) in totals {
        country.push(c.as_str());
        currency.push(cur.as_str());
        key.push(*k);
        streams.push(*s);
        amount.push(decimal(*a, cur)?);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(country)),
            Arc::new(StringArray::from(currency)),
            Arc::new(Int64Array::from(key)),
            Arc::new(Int64Array::from(streams)),
            Arc::new(money_array(amount)?),
        ],
    )?)
}

/// Pools, song amounts and the catalog, from whichever engine.
async fn attribute(
    sql: &Sql<'_>,
    model: Model,
    weighting: Option<ArtistCentric>,
    month: &Month,
) -> Result<Attribution> {
    let pools = pools(sql, month).await?;
    let (by_song, claimed) = match model {
        Model::ProRata => pro_rata(sql, month, &pools, weighting).await?,
        Model::UserCentric => user_centric(sql, month, weighting).await?,
    };
    let catalog = catalog(sql).await?;
    Ok(Attribution {
        pools,
        claimed,
        by_song,
        catalog,
    })
}

/// What the engine's part of a run found: pools, what streams claimed, the song amounts and the
/// catalog.
struct Attribution {
    pools: BTreeMap<Market, i128>,
    claimed: Claimed,
    by_song: SongTotals,
    catalog: HashMap<i64, (i64, i64)>,
}

/// One market's reconciliation, in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub market: (String, String),
    pub pool: i128,
    pub attributed: i128,
    pub unattributed: i128,
    pub difference: i128,
}

/// Reconciles each market: `unattributed` is what no stream claimed (the pool of a market with
/// no streams, the revenue of subscribers who streamed nothing), found from the pools and the
/// claims alone; `attributed` is the sum of the songs' amounts. Their difference,
/// `pool - attributed - unattributed`, is then 0 only when the splits handed out exactly what the
/// streams claimed, so a split that loses or invents a minor unit fails the run (exit 70) before
/// anything is published.
pub fn reconcile(
    pools: &BTreeMap<Market, i128>,
    claimed: &Claimed,
    attributed: &BTreeMap<Market, i128>,
) -> Result<Vec<Reconciled>> {
    let mut markets: Vec<&Market> = pools
        .keys()
        .chain(claimed.keys())
        .chain(attributed.keys())
        .collect();
    markets.sort();
    markets.dedup();
    let mut rows = Vec::with_capacity(markets.len());
    let mut broken = Vec::new();
    for m in markets {
        let pool = pools.get(m).copied().unwrap_or(0);
        let claim = claimed.get(m).copied().unwrap_or(0);
        let attr = attributed.get(m).copied().unwrap_or(0);
        let unattributed = pool - claim;
        let difference = pool - attr - unattributed;
        if difference != 0 || unattributed < 0 {
            broken.push(format!(
                "{}/{}: pool {pool}, attributed {attr}, unattributed {unattributed}, difference {difference}",
                m.0, m.1
            ));
        }
        rows.push(Reconciled {
            market: m.clone(),
            pool,
            attributed: attr,
            unattributed,
            difference,
        });
    }
    if !broken.is_empty() {
        return Err(Error::Internal(format!(
            "the month does not reconcile (minor units): {}",
            broken.join("; ")
        )));
    }
    Ok(rows)
}

async fn stage(
    cfg: &Config,
    dataset: &str,
    partition: &Partition,
    schema: &SchemaRef,
    batch: RecordBatch,
) -> Result<StagedPartition> {
    let stream = streampulse_core::stream::batch_stream(batch);
    Ok(write_partition(
        &cfg.common.data_root,
        &cfg.common.spill_dir,
        dataset,
        partition,
        schema,
        stream,
    )
    .await?)
}

/// A Spark session whose views `subs`, `songs` and `plays` are the month's inputs, read by the
/// cluster where they are, each file with the contract's types (checked here first, by the
/// embedded reader's rules).
async fn spark_session(
    spark_cfg: &SparkConfig,
    ctx: &SessionContext,
    subs: &str,
    songs: &str,
    plays: &[String],
) -> Result<Session> {
    let session = Box::pin(Session::connect(spark_cfg)).await?;
    for (view, urls, contract, columns) in [
        (
            "subs",
            vec![subs.to_string()],
            &*SUBSCRIPTIONS,
            &SUBSCRIPTION_INPUT[..],
        ),
        (
            "songs",
            vec![songs.to_string()],
            &*SONGS,
            &["song_id", "artist_id", "label_id"][..],
        ),
        (
            "plays",
            plays.to_vec(),
            &*PLAYS,
            &["user_id", "song_id", "played_at", "ms_played"][..],
        ),
    ] {
        Box::pin(session.contract_view(spark_cfg, ctx, view, &urls, contract, columns)).await?;
    }
    Ok(session)
}

pub async fn run(cfg: &Config, meter: &mut RunMeter) -> Result<Outcome> {
    let common = &cfg.common;
    let month = Month::new(cfg.month);
    let label = month.label();
    let pool_bytes = engine::pool_bytes(common.budget(), 128 << 20);
    let ctx = engine::session(common, pool_bytes)?;
    meter.engine = "datafusion".into();

    let last_day = month.next.pred_opt().unwrap_or(month.first);
    let plays = plays_partitions(cfg, &month).await?;
    let subs = snapshot(cfg, &cfg.subscriptions, "subscriptions", last_day).await?;
    let songs = snapshot(cfg, &cfg.songs, "songs", last_day).await?;
    tracing::info!(month = %label, plays = plays.len(), %subs, %songs, "inputs");
    meter.bytes_in = engine::parquet_bytes(&ctx, &[subs.clone(), songs.clone()]).await?
        + engine::parquet_bytes(&ctx, &plays).await?;
    // Each input in the contract's types whoever wrote it: a `decimal(18,2)` price read as our
    // scale-6 raw integer would make every pool 10,000x too small.
    let subs_df = engine::read_parquet(
        &ctx,
        vec![subs.clone()],
        &SUBSCRIPTIONS,
        &SUBSCRIPTION_INPUT,
    )
    .await?;
    ctx.register_table("subs", subs_df.into_view())?;
    let songs_df = engine::read_parquet(
        &ctx,
        vec![songs.clone()],
        &SONGS,
        &["song_id", "artist_id", "label_id"],
    )
    .await?;
    ctx.register_table("songs", songs_df.into_view())?;
    let plays_df = engine::read_parquet(
        &ctx,
        plays.clone(),
        &PLAYS,
        &["user_id", "song_id", "played_at", "ms_played"],
    )
    .await?;
    ctx.register_table("plays", plays_df.into_view())?;

    // Rows in = the plays read (from the Parquet footers: no scan).
    let counted = ctx
        .sql("SELECT COUNT(*) FROM plays")
        .await?
        .collect()
        .await?;
    meter.rows_in = counted
        .first()
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0) as u64)
        .unwrap_or(0);
    let spark = match (&cfg.engine, &cfg.spark) {
        (EngineKind::Spark, Some(spark_cfg)) => {
            let session = Box::pin(spark_session(spark_cfg, &ctx, &subs, &songs, &plays)).await?;
            meter.engine = "spark".into();
            Box::pin(session.describe()).await.record(meter);
            Some(session)
        }
        (EngineKind::Spark, None) => {
            return Err(Error::Config("--engine spark needs --spark-remote".into()));
        }
        _ => None,
    };
    let pg = match cfg.engine {
        EngineKind::Datafusion | EngineKind::Spark => None,
        EngineKind::Postgres => {
            let url = cfg
                .database_url
                .as_ref()
                .map(Secret::expose)
                .ok_or_else(|| Error::Config("--engine postgres needs --database-url".into()))?;
            let pg = Box::pin(postgres::PgEngine::connect(url, common.threads as u32 + 2)).await?;
            meter.engine = "postgres".into();
            let load = std::time::Instant::now();
            // Boxed: the load's state machine would otherwise sit inside every caller's future.
            let loaded = Box::pin(pg.load(
                &ctx,
                &month.first.format("%Y-%m-%d").to_string(),
                &month.next.format("%Y-%m-%d").to_string(),
            ))
            .await;
            let loaded = match loaded {
                Ok(n) => n,
                Err(e) => {
                    pg.close().await;
                    return Err(e);
                }
            };
            meter.set("postgres_rows_loaded", loaded);
            meter.set("postgres_load_seconds", load.elapsed().as_secs_f64());
            Some(pg)
        }
    };
    let sql = match (&pg, &spark) {
        (Some(pg), _) => Sql::Postgres(pg),
        (None, Some(session)) => Sql::Spark(session),
        (None, None) => Sql::DataFusion(&ctx),
    };
    let attributed = Box::pin(attribute(&sql, cfg.model, cfg.weighting, &month)).await;
    if let Some(pg) = pg {
        pg.close().await;
    }
    let Attribution {
        pools,
        claimed,
        by_song,
        catalog,
    } = attributed?;

    // Artists and labels: sums of their songs. A song missing from the catalog fails the run:
    // its money would have no owner.
    let mut by_artist = BTreeMap::new();
    let mut by_label = BTreeMap::new();
    let mut attributed: BTreeMap<Market, i128> = BTreeMap::new();
    for ((market, song), (streams, amount)) in &by_song {
        let (artist, label_id) = catalog.get(song).copied().ok_or_else(|| {
            Error::Inconsistent(format!(
                "song {song} has streams but is not in the catalog {songs}"
            ))
        })?;
        for (map, key) in [(&mut by_artist, artist), (&mut by_label, label_id)] {
            let e: &mut (i64, i128) = map.entry((market.clone(), key)).or_default();
            e.0 += streams;
            e.1 += amount;
        }
        *attributed.entry(market.clone()).or_default() += amount;
    }
    let reconciled = reconcile(&pools, &claimed, &attributed)?;
    let markets = reconciled.len();
    let (mut r_country, mut r_currency, mut r_pool, mut r_attr, mut r_un, mut r_diff) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in &reconciled {
        let cur = &r.market.1;
        r_country.push(r.market.0.as_str());
        r_currency.push(cur.as_str());
        r_pool.push(decimal(r.pool, cur)?);
        r_attr.push(decimal(r.attributed, cur)?);
        r_un.push(decimal(r.unattributed, cur)?);
        r_diff.push(decimal(r.difference, cur)?);
    }
    let reconciliation = RecordBatch::try_new(
        REVENUE_RECONCILIATION.clone(),
        vec![
            Arc::new(StringArray::from(r_country)),
            Arc::new(StringArray::from(r_currency)),
            Arc::new(money_array(r_pool)?),
            Arc::new(money_array(r_attr)?),
            Arc::new(money_array(r_un)?),
            Arc::new(money_array(r_diff)?),
        ],
    )?;

    let partition = Partition {
        key: "month",
        value: label.clone(),
    };
    let staged = vec![
        stage(
            cfg,
            "revenue_by_song",
            &partition,
            &REVENUE_BY_SONG,
            by_key(&REVENUE_BY_SONG, &by_song)?,
        )
        .await?,
        stage(
            cfg,
            "revenue_by_artist",
            &partition,
            &REVENUE_BY_ARTIST,
            by_key(&REVENUE_BY_ARTIST, &by_artist)?,
        )
        .await?,
        stage(
            cfg,
            "revenue_by_label",
            &partition,
            &REVENUE_BY_LABEL,
            by_key(&REVENUE_BY_LABEL, &by_label)?,
        )
        .await?,
        stage(
            cfg,
            "revenue_reconciliation",
            &partition,
            &REVENUE_RECONCILIATION,
            reconciliation,
        )
        .await?,
    ];
    for s in &staged {
        meter.rows_out += s.rows;
        meter.bytes_out += s.bytes;
    }
    // The four datasets appear together: a reader never sees new songs with an old
    // reconciliation.
    let outputs = streampulse_core::commit::publish(&common.data_root, staged)
        .await?
        .into_iter()
        .map(|p| p.url.clone())
        .collect();
    let pool_total: i128 = pools.values().sum();
    let attributed_total: i128 = attributed.values().sum();
    meter.set("markets", markets);
    meter.set("model", format!("{:?}", cfg.model));
    meter.set("artist_centric", cfg.weighting.is_some());
    tracing::info!(markets, songs = by_song.len(), "attributed");
    Ok(Outcome {
        outputs,
        markets,
        songs: by_song.len(),
        pool_minor_units: pool_total,
        attributed_minor_units: attributed_total,
    })
}

streampulse_core::pipeline!(
    output = Outcome,
    logical_date = |cfg| cfg.month.format("%Y-%m").to_string()
);
