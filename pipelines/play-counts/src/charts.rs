//! The charts with their history: today's top songs per scope joined with each song's latest
//! earlier chart appearance (movement, peak, days on chart).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use chrono::{Duration, NaiveDate};
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SessionContext, lit};
use datafusion::scalar::ScalarValue;
use streampulse_core::location::Partition;
use streampulse_core::output::{StagedPartition, write_partition};
use streampulse_core::schema::CHARTS;
use streampulse_core::{engine, time};

use crate::{Config, Result, topk};

/// What the history join needs of an earlier chart.
const HISTORY_COLUMNS: [&str; 5] = ["scope", "song_id", "rank", "peak_rank", "days_on_chart"];

/// Ranks today's top songs per scope and joins each with its latest earlier chart appearance:
/// that row carries the song's peak and days on chart so far, so only it is needed.
pub(crate) async fn charts_with_history(
    cfg: &Config,
    ctx: &SessionContext,
    global_top: RecordBatch,
    country_top: RecordBatch,
) -> Result<StagedPartition> {
    let common = &cfg.common;
    ctx.register_table(
        "today_top",
        Arc::new(MemTable::try_new(
            topk::schema(),
            vec![vec![global_top, country_top]],
        )?),
    )?;

    // The files hold no `date` (it is the partition's name): each earlier partition is read
    // with its date added, so history written before or after that rule reads the same.
    let first = cfg.date - Duration::days(cfg.chart_lookback_days as i64);
    let mut history: Option<DataFrame> = None;
    for d in common.data_root.list_partitions("charts", "date").await? {
        let Ok(day) = NaiveDate::parse_from_str(&d, "%Y-%m-%d") else {
            continue;
        };
        if day >= cfg.date || day < first {
            continue;
        }
        let url = common
            .data_root
            .partition_url("charts", &Partition::date(day));
        let df = engine::read_parquet(ctx, vec![url], &CHARTS, &HISTORY_COLUMNS)
            .await?
            .with_column("date", lit(ScalarValue::Date32(Some(time::date32(day)))))?;
        history = Some(match history {
            None => df,
            Some(h) => h.union(df)?,
        });
    }
    match history {
        Some(h) => ctx.register_table("chart_history", h.into_view())?,
        None => {
            let mut fields: Vec<Field> = HISTORY_COLUMNS
                .iter()
                .map(|c| CHARTS.field_with_name(c).cloned())
                .collect::<std::result::Result<_, _>>()?;
            fields.push(Field::new("date", DataType::Date32, false));
            let empty = MemTable::try_new(Arc::new(Schema::new(fields)), vec![vec![]])?;
            ctx.register_table("chart_history", Arc::new(empty))?
        }
    };
    let yesterday = (cfg.date - Duration::days(1)).format("%Y-%m-%d");
    let sql = format!(
        "WITH ranked AS ( \
           SELECT scope, song_id, artist_id, streams, \
             CAST(row_number() OVER (PARTITION BY scope ORDER BY streams DESC, listeners DESC, song_id, artist_id) AS INT) AS rank \
           FROM today_top), \
         last_seen AS ( \
           SELECT scope, song_id, date, rank, peak_rank, days_on_chart FROM ( \
             SELECT scope, song_id, date, rank, peak_rank, days_on_chart, \
               row_number() OVER (PARTITION BY scope, song_id ORDER BY date DESC) AS recency \
             FROM chart_history) WHERE recency = 1) \
         SELECT r.scope, r.rank, r.song_id, r.artist_id, r.streams, \
           CASE WHEN l.date = CAST('{yesterday}' AS DATE) THEN l.rank END AS prev_rank, \
           CASE WHEN l.date = CAST('{yesterday}' AS DATE) THEN l.rank - r.rank END AS movement, \
           CASE WHEN l.peak_rank IS NOT NULL AND l.peak_rank < r.rank THEN l.peak_rank ELSE r.rank END AS peak_rank, \
           CAST(coalesce(l.days_on_chart, 0) + 1 AS INT) AS days_on_chart, \
           l.date IS NULL AS is_new, \
           coalesce(l.date < CAST('{yesterday}' AS DATE), false) AS is_reentry \
         FROM ranked r LEFT JOIN last_seen l ON r.scope = l.scope AND r.song_id = l.song_id \
         ORDER BY CASE WHEN r.scope = 'global' THEN 0 ELSE 1 END, r.scope, r.rank"
    );
    let stream = ctx.sql(&sql).await?.execute_stream().await?;
    Ok(write_partition(
        &common.data_root,
        &common.spill_dir,
        "charts",
        &Partition::date(cfg.date),
        &CHARTS,
        stream,
    )
    .await?)
}
