//! The day's counts on a Spark cluster (`--engine spark`): the same counts as the [`crate::tally`],
//! written as SQL that Spark (or Sail) runs where the plays are, with only the aggregates, the
//! charts' candidates (the top N of each scope) and the bad rows coming back.
//!
//! The rules are the embedded engine's, one for one:
//! * each file is read with the contract's types (ids as BIGINT, `played_at` as epoch
//!   milliseconds, floored), after our process has checked its footer with the same check
//!   ([`conform::check_columns`]) and so the same error for a column that cannot convert;
//! * a row with a null in a required column or a value that breaks a [`Rule`] is rejected
//!   (our process turns the returned rows into rejects with [`conform::validate`], so reasons
//!   and raw text are the embedded engine's); rows outside the logical date are counted;
//! * a (user, play_id) seen again is one play, the first by (ms_played, song_id, country,
//!   artist_id) kept, as [`crate::tally`] keeps it;
//! * streams are plays of at least [`STREAM_MIN_MS`]; the chart cap applies per user and song
//!   (per user, song and country for the country charts), and to the counts with
//!   `--cap-counts`; listeners are users with a stream.
//!
//! Why SQL text and not a plan built node by node: it reads as the rules do, runs the same on
//! Spark and Sail, and `EXPLAIN` of it on the cluster is what an operator would look at.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::prelude::SessionContext;
use streampulse_core::conform;
use streampulse_core::rejects::RejectSink;
use streampulse_core::schema::{
    DAILY_ARTIST_COUNTS, DAILY_SONG_COUNTS, PLAYS, Rule, STREAM_MIN_MS,
};
use streampulse_core::time;
use streampulse_spark::{Session, SparkConfig};

use crate::input::COLUMNS;
use crate::{Config, Error, Result};

/// What the cluster computed for the day.
pub struct Counted {
    pub records: u64,
    pub bytes: u64,
    pub before: u64,
    pub after: u64,
    pub duplicates: u64,
    pub conflicts: Vec<(i64, i64, i64)>,
    pub songs: RecordBatch,
    pub artists: RecordBatch,
    /// The global chart's candidates (every song, its capped streams) and the top N of each
    /// country's, as (scope, song_id, artist_id, streams, listeners): the input of
    /// [`crate::topk::top_per_scope`].
    pub global_top: Vec<RecordBatch>,
    pub country_top: Vec<RecordBatch>,
    /// The cluster's version and cores (for the run record).
    pub cluster: streampulse_spark::Cluster,
}

/// True where a row breaks the contract: a null anywhere (every column here is required) or a
/// value against its column's [`Rule`].
fn bad_row() -> String {
    let mut why: Vec<String> = COLUMNS.iter().map(|c| format!("{c} IS NULL")).collect();
    for &c in &COLUMNS {
        if let Some(rule) = Rule::of(c) {
            why.push(rule.sql_violation(c));
        }
    }
    format!("({})", why.join(" OR "))
}

/// Counts the day on the cluster. `url` is the plays partition (as our process names it);
/// bad rows go to `rejects`.
pub async fn count(
    cfg: &Config,
    spark: &SparkConfig,
    ctx: &SessionContext,
    url: &str,
    rejects: &mut RejectSink,
) -> Result<Counted> {
    let session = Box::pin(Session::connect(spark)).await?;
    // Each file read with the contract's types, its footer checked here first: a file whose
    // types cannot convert fails as it does on the embedded engine.
    let files = session
        .contract_view(spark, ctx, "sp_input", &[url.to_string()], &PLAYS, &COLUMNS)
        .await?;
    let bytes = streampulse_core::engine::parquet_bytes(ctx, &[url.to_string()]).await?;
    let lo = time::day_start_ms(cfg.date);
    let hi = lo + time::MS_PER_DAY;
    let columns = COLUMNS.join(", ");
    session
        .create_view(
            "sp_checked",
            &format!(
                "SELECT _file, play_id, user_id, song_id, artist_id, \
                   unix_millis(played_at) AS played_at, ms_played, country, {} AS bad \
                 FROM sp_input",
                bad_row()
            ),
        )
        .await?;
    session
        .create_view(
            "sp_day",
            &format!(
                "SELECT {columns} FROM sp_checked \
                 WHERE NOT bad AND played_at >= {lo} AND played_at < {hi}"
            ),
        )
        .await?;
    // A play sent twice is one: the first of its copies by value, whatever their order.
    session
        .create_view(
            "sp_plays",
            "SELECT user_id, song_id, artist_id, ms_played, country FROM ( \
               SELECT *, row_number() OVER (PARTITION BY user_id, play_id \
                 ORDER BY ms_played, song_id, country, artist_id) AS copy FROM sp_day) \
             WHERE copy = 1",
        )
        .await?;
    // Per user and song: what every count is a sum of.
    session
        .create_view(
            "sp_user_songs",
            &format!(
                "SELECT user_id, song_id, min(artist_id) AS artist_min, \
                   max(artist_id) AS artist_max, count(*) AS plays, \
                   count_if(ms_played >= {STREAM_MIN_MS}) AS streams, \
                   sum(CAST(ms_played AS BIGINT)) AS ms \
                 FROM sp_plays GROUP BY user_id, song_id"
            ),
        )
        .await?;

    let stats = session
        .counts(&format!(
            "SELECT count(*) AS records, count_if(bad) AS rejected, \
                   count_if(NOT bad AND played_at < {lo}) AS before, \
                   count_if(NOT bad AND played_at >= {hi}) AS after, \
                   count_if(NOT bad AND played_at >= {lo} AND played_at < {hi}) AS in_day \
                 FROM sp_checked"
        ))
        .await?;
    let [records, rejected, before, after, in_day] = stats[..] else {
        return Err(Error::Internal(
            "the Spark day summary has 5 columns".into(),
        ));
    };

    if rejected > 0 {
        Box::pin(collect_rejects(&session, &files, rejects)).await?;
    }

    let chart = |streams: &str| match cfg.stream_cap {
        Some(cap) => format!("least({streams}, {cap})"),
        None => streams.to_string(),
    };
    let counted = |streams: &str| {
        if cfg.cap_counts {
            chart(streams)
        } else {
            streams.to_string()
        }
    };
    // One query per song gives the counts, the global chart's candidates (capped streams) and
    // the artist check: each extra query would recompute the day's de-duplication.
    let song_rows = session
        .collect(&format!(
            "SELECT song_id, min(artist_min) AS artist_id, max(artist_max) AS artist_max, \
               sum(plays) AS plays, sum({}) AS streams, count_if(streams > 0) AS listeners, \
               sum(ms) AS ms_played, sum({}) AS chart \
             FROM sp_user_songs GROUP BY song_id ORDER BY song_id",
            counted("streams"),
            chart("streams")
        ))
        .await?;
    let mut conflict_rows = Vec::new();
    let mut global = Vec::new();
    let global_schema = crate::topk::schema();
    for b in &song_rows {
        let col = |name: &str| -> Result<arrow::array::Int64Array> {
            let c = b
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("the Spark song counts lack {name}")))?;
            Ok(arrow::compute::cast(c, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .clone())
        };
        let (song, lo, hi) = (col("song_id")?, col("artist_id")?, col("artist_max")?);
        for i in 0..b.num_rows() {
            if lo.value(i) != hi.value(i) && conflict_rows.len() < 5 {
                conflict_rows.push((song.value(i), lo.value(i), hi.value(i)));
            }
        }
        global.push(RecordBatch::try_new(
            global_schema.clone(),
            vec![
                Arc::new(arrow::array::StringArray::from(vec![
                    "global";
                    b.num_rows()
                ])),
                Arc::new(song),
                Arc::new(lo),
                Arc::new(col("chart")?),
                Arc::new(col("listeners")?),
            ],
        )?);
    }
    let songs = song_rows;
    // An artist's listeners are users with a stream of any of its songs; with --cap-counts its
    // streams add up the user's capped songs.
    let artists = session
        .collect(&format!(
            "SELECT artist_id, sum(plays) AS plays, sum(counted) AS streams, \
               count_if(streams > 0) AS listeners, sum(ms) AS ms_played FROM ( \
               SELECT user_id, artist_min AS artist_id, sum(plays) AS plays, \
                 sum({}) AS counted, sum(streams) AS streams, sum(ms) AS ms \
               FROM sp_user_songs GROUP BY user_id, artist_min) \
             GROUP BY artist_id ORDER BY artist_id",
            counted("streams")
        ))
        .await?;
    let n = cfg.chart_size;
    // Country charts: the cap per user, song and country; each (user, song, country) with a
    // stream is one listener; the artist is the smallest among the streams.
    let country_top = session
        .collect(&format!(
            "SELECT scope, song_id, artist_id, streams, listeners FROM ( \
               SELECT scope, song_id, artist_id, streams, listeners, row_number() OVER ( \
                 PARTITION BY scope ORDER BY streams DESC, listeners DESC, song_id, artist_id) AS r \
               FROM ( \
                 SELECT country AS scope, song_id, min(artist_id) AS artist_id, \
                   sum({}) AS streams, count(*) AS listeners \
                 FROM ( \
                   SELECT user_id, song_id, country, min(artist_id) AS artist_id, count(*) AS s \
                   FROM sp_plays WHERE ms_played >= {STREAM_MIN_MS} \
                   GROUP BY user_id, song_id, country) \
                 GROUP BY country, song_id)) \
             WHERE r <= {n}",
            chart("s")
        ))
        .await?;
    let source = format!("{} (spark)", url);
    let songs = one_batch(&songs, &DAILY_SONG_COUNTS, &source)?;
    // The plays counted are the day's once each: the rest of the day's valid rows were copies.
    let plays_column = songs
        .column_by_name("plays")
        .ok_or_else(|| Error::Internal("no plays column".into()))?;
    let kept = arrow::compute::sum(plays_column.as_primitive::<Int64Type>()).unwrap_or(0);
    Ok(Counted {
        records: records as u64,
        bytes,
        before: before as u64,
        after: after as u64,
        duplicates: (in_day - kept) as u64,
        conflicts: conflict_rows,
        songs,
        artists: one_batch(&artists, &DAILY_ARTIST_COUNTS, &source)?,
        global_top: global,
        country_top: conformed(&country_top, &crate::topk::schema(), &source)?,
        cluster: session.describe().await,
    })
}

/// Batches from the cluster in `schema` (names and types, nulls refused).
fn conformed(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    source: &str,
) -> Result<Vec<RecordBatch>> {
    Ok(batches
        .iter()
        .map(|b| conform::batch(b, schema, source))
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// [`conformed`], as one batch.
fn one_batch(batches: &[RecordBatch], schema: &SchemaRef, source: &str) -> Result<RecordBatch> {
    Ok(arrow::compute::concat_batches(
        schema,
        &conformed(batches, schema, source)?,
    )?)
}

/// The bad rows, brought back and turned into rejects by the embedded engine's own rules (so
/// the same reasons and raw text). The cluster gives no row numbers: `line` is 0.
async fn collect_rejects(
    session: &Session,
    files: &[String],
    rejects: &mut RejectSink,
) -> Result<()> {
    let columns = COLUMNS.join(", ");
    let mut bad = session
        .query(&format!(
            "SELECT _file, {columns} FROM sp_checked WHERE bad \
             ORDER BY _file, user_id, play_id, played_at, song_id, ms_played, country"
        ))
        .await?;
    let target = conform::contract_schema(&PLAYS, &COLUMNS)?;
    while let Some(batch) = bad.next().await? {
        // The contract's types (epoch milliseconds back to its timestamp: a reinterpretation).
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(COLUMNS.len());
        for field in target.fields() {
            let c = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::Internal(format!("the rejects query lacks {}", field.name()))
            })?;
            columns.push(arrow::compute::cast(c, field.data_type())?);
        }
        let rows = RecordBatch::try_new(target.clone(), columns)?;
        let src = arrow::compute::cast(batch.column(0), &DataType::Int64)?;
        let src = src.as_primitive::<Int64Type>().values();
        // Ordered by file: each file's rows are validated together, under its name.
        let mut start = 0;
        while start < src.len() {
            let len = src[start..]
                .iter()
                .take_while(|&&f| f == src[start])
                .count();
            let file = usize::try_from(src[start])
                .ok()
                .and_then(|f| files.get(f))
                .ok_or_else(|| Error::Internal("a reject from an unknown file".into()))?;
            let (_, found) = conform::validate(&rows.slice(start, len), &PLAYS, file, 0)?;
            for mut r in found {
                // Row numbers of the slice, not of the file: none is known.
                r.line = 0;
                rejects.push(&r)?;
            }
            start += len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_bad_for_a_null_anywhere_or_a_broken_rule() {
        let rules = bad_row();
        for c in COLUMNS {
            assert!(rules.contains(&format!("{c} IS NULL")), "{rules}");
        }
        assert!(rules.contains("ms_played < 0"), "{rules}");
        assert!(rules.contains("length(country) = 2"), "{rules}");
    }
}
