//! The SQL both embedded engines run (DataFusion, PostgreSQL): the pools and the streams per
//! (subscription or market, song).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Int64Type, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use streampulse_core::schema::STREAM_MIN_MS;
use streampulse_spark::Session;

use crate::*;

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
    pub(crate) async fn stream(
        &self,
        query: &str,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream> {
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
    pub(crate) fn divide(&self, num: &str, den: &str) -> String {
        match self {
            Sql::Spark(_) => format!("(({num}) DIV ({den}))"),
            _ => format!("({num}) / ({den})"),
        }
    }
}

/// The subscription columns the queries read.
pub(crate) const SUBSCRIPTION_INPUT: [&str; 7] = [
    "subscription_id",
    "user_id",
    "country",
    "currency",
    "monthly_price",
    "started_at",
    "ended_at",
];

/// The subscription columns the queries return, in the order they select them.
pub(crate) static SUBSCRIPTION_COLUMNS: [(&str, DataType); 6] = [
    ("subscription_id", DataType::Int64),
    ("country", DataType::Utf8),
    ("currency", DataType::Utf8),
    ("monthly_price", streampulse_core::schema::MONEY),
    ("started_at", DataType::Date32),
    ("ended_at", DataType::Date32),
];

pub(crate) fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Per market, the pool: Σ revenue of the paid subscriptions active in the month. Also checks
/// the contract that a user has at most one active subscription at a time.
pub(crate) async fn pools(sql: &Sql<'_>, month: &Month) -> Result<BTreeMap<Market, i128>> {
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
pub(crate) trait Strings {
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

/// The streams of the month joined with the subscription active on their day, summed per
/// `group` (subscription columns) and song, with each row's weight for the split: its streams,
/// or with artist-centric weighting, per (subscription, song) `streams x boost x WEIGHT_UNIT x
/// min(total, cap) / total` in integers (truncated), `total` being the user's streams of the month
/// and `boost` 2 for an artist over both thresholds. The same text runs on DataFusion and
/// PostgreSQL: every intermediate is cast to BIGINT so PostgreSQL divides integers too.
pub(crate) fn streams_sql(
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
